/*
 * access.c - the access policy (rules, checks) and the per-connection peer
 * table. See access.h and docs/SECURITY.md.
 */
#include "access.h"

#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"

typedef enum chd_subject {
	CHD_SUBJ_UID,
	CHD_SUBJ_GID,
	CHD_SUBJ_ANY,
} chd_subject;

typedef struct chd_rule {
	chd_subject subj;
	uint32_t    id;       /* uid or gid */
	unsigned    ops;      /* CHD_ACC_* bits */
	char       *prefix;   /* names starting with it ("" : all) */
	bool        is_prefix; /* false: the name must equal prefix */
} chd_rule;

#define CHD_TRUSTED_MAX 4

struct chd_access {
	chd_rule *rules;
	size_t    nrules, cap;
	uint32_t  trusted[CHD_TRUSTED_MAX];
	size_t    ntrusted;
};

static void
chd_acc_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
chd_acc_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0) {
		return;
	}
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

chd_access *
chd_access_new(void)
{
	chd_access *a;

	if ((a = calloc(1, sizeof(*a))) == NULL) {
		return (NULL);
	}
	a->trusted[a->ntrusted++] = 0;
	return (a);
}

void
chd_access_free(chd_access *a)
{
	if (a == NULL) {
		return;
	}
	for (size_t i = 0; i < a->nrules; i++) {
		free(a->rules[i].prefix);
	}
	free(a->rules);
	free(a);
}

void
chd_access_trust_uid(chd_access *a, uint32_t uid)
{
	for (size_t i = 0; i < a->ntrusted; i++) {
		if (a->trusted[i] == uid) {
			return;
		}
	}
	if (a->ntrusted < CHD_TRUSTED_MAX) {
		a->trusted[a->ntrusted++] = uid;
	}
}

bool
chd_access_enabled(const chd_access *a)
{
	return (a != NULL && a->nrules > 0);
}

/* A decimal id (not -1, which means "no id" to the kernel). */
static bool
chd_parse_id(const char *s, size_t len, uint32_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 10) {
		return (false);
	}
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9') {
			return (false);
		}
		v = v * 10 + (uint64_t) (s[i] - '0');
	}
	if (v >= UINT32_MAX) {
		return (false);
	}
	*out = (uint32_t) v;
	return (true);
}

/* uid or gid from a number or a user/group name. */
static int
chd_resolve(bool group, const char *s, size_t len, uint32_t *out, char *err,
    size_t errlen)
{
	char name[256];

	if (chd_parse_id(s, len, out)) {
		return (0);
	}
	if (len == 0 || len >= sizeof(name)) {
		chd_acc_errf(err, errlen, "empty or too long %s in '%.*s'",
		    group ? "group" : "user", (int) len, s);
		return (-1);
	}
	memcpy(name, s, len);
	name[len] = '\0';
	if (group) {
		struct group *g = getgrnam(name);

		if (g == NULL) {
			chd_acc_errf(err, errlen, "unknown group '%s'", name);
			return (-1);
		}
		*out = (uint32_t) g->gr_gid;
	} else {
		struct passwd *pw = getpwnam(name);

		if (pw == NULL) {
			chd_acc_errf(err, errlen, "unknown user '%s'", name);
			return (-1);
		}
		*out = (uint32_t) pw->pw_uid;
	}
	return (0);
}

static int
chd_rule_push(chd_access *a, chd_subject subj, uint32_t id, unsigned ops,
    const char *prefix, size_t plen, bool is_prefix, char *err, size_t errlen)
{
	chd_rule *r;

	if (a->nrules == a->cap) {
		size_t    ncap = a->cap ? a->cap * 2 : 8;
		chd_rule *n = realloc(a->rules, ncap * sizeof(*n));

		if (n == NULL) {
			chd_acc_errf(err, errlen, "out of memory");
			return (-1);
		}
		a->rules = n;
		a->cap = ncap;
	}
	r = &a->rules[a->nrules];
	if ((r->prefix = strndup(prefix, plen)) == NULL) {
		chd_acc_errf(err, errlen, "out of memory");
		return (-1);
	}
	r->subj = subj;
	r->id = id;
	r->ops = ops;
	r->is_prefix = is_prefix;
	a->nrules++;
	return (0);
}

static int
chd_allow_ids(chd_access *a, bool group, const char *list, char *err,
    size_t errlen)
{
	const char *p = list;

	if (list == NULL || *list == '\0') {
		chd_acc_errf(err, errlen, "empty %s list",
		    group ? "gid" : "uid");
		return (-1);
	}
	for (;;) {
		const char *end = strchr(p, ',');
		size_t      len = end ? (size_t) (end - p) : strlen(p);
		uint32_t    id;

		if (chd_resolve(group, p, len, &id, err, errlen) != 0 ||
		    chd_rule_push(a, group ? CHD_SUBJ_GID : CHD_SUBJ_UID, id,
		        CHD_ACC_ALL, "", 0, true, err, errlen) != 0) {
			return (-1);
		}
		if (end == NULL) {
			return (0);
		}
		p = end + 1;
	}
}

int
chd_access_allow_uids(chd_access *a, const char *list, char *err,
    size_t errlen)
{
	return (chd_allow_ids(a, false, list, err, errlen));
}

int
chd_access_allow_gids(chd_access *a, const char *list, char *err,
    size_t errlen)
{
	return (chd_allow_ids(a, true, list, err, errlen));
}

static const struct {
	const char *name;
	unsigned    bits;
} chd_op_names[] = {
	{ "send", CHD_ACC_SEND },
	{ "recv", CHD_ACC_RECV },
	{ "manage", CHD_ACC_MANAGE },
	{ "info", CHD_ACC_INFO },
	{ "counter", CHD_ACC_COUNTER },
	{ "all", CHD_ACC_ALL },
	{ "*", CHD_ACC_ALL },
};

static int
chd_parse_ops(const char *s, size_t len, unsigned *out, char *err,
    size_t errlen)
{
	const char *p = s, *end = s + len;

	*out = 0;
	while (p <= end) {
		const char *c = memchr(p, ',', (size_t) (end - p));
		size_t      n = c ? (size_t) (c - p) : (size_t) (end - p);
		size_t      i;

		for (i = 0; i < sizeof(chd_op_names) / sizeof(chd_op_names[0]);
		     i++) {
			if (strlen(chd_op_names[i].name) == n &&
			    memcmp(chd_op_names[i].name, p, n) == 0) {
				*out |= chd_op_names[i].bits;
				break;
			}
		}
		if (i == sizeof(chd_op_names) / sizeof(chd_op_names[0])) {
			chd_acc_errf(err, errlen,
			    "unknown operation '%.*s' (send, recv, manage, "
			    "info, counter, all)", (int) n, p);
			return (-1);
		}
		if (c == NULL) {
			break;
		}
		p = c + 1;
	}
	return (0);
}

int
chd_access_allow_rule(chd_access *a, const char *rule, char *err,
    size_t errlen)
{
	const char *c1, *c2, *pat;
	chd_subject subj;
	uint32_t    id = 0;
	unsigned    ops;
	size_t      plen;
	bool        is_prefix = false;
	char        why[256];

	/* Names may contain ':', so the pattern is all after the 2nd one. */
	if (rule == NULL || (c1 = strchr(rule, ':')) == NULL ||
	    (c2 = strchr(c1 + 1, ':')) == NULL) {
		chd_acc_errf(err, errlen,
		    "rule '%s' is not SUBJECT:OPS:PATTERN", rule ? rule : "");
		return (-1);
	}
	if ((size_t) (c1 - rule) == 3 && strncmp(rule, "any", 3) == 0) {
		subj = CHD_SUBJ_ANY;
	} else if (strncmp(rule, "uid=", 4) == 0 ||
	    strncmp(rule, "gid=", 4) == 0) {
		bool group = rule[0] == 'g';

		subj = group ? CHD_SUBJ_GID : CHD_SUBJ_UID;
		if (c1 - rule <= 4 || chd_resolve(group, rule + 4,
		        (size_t) (c1 - rule - 4), &id, why, sizeof(why)) != 0) {
			chd_acc_errf(err, errlen, "rule '%s': %s", rule,
			    c1 - rule <= 4 ? "bad subject" : why);
			return (-1);
		}
	} else {
		chd_acc_errf(err, errlen, "rule '%s': subject must be uid=UID, "
		    "gid=GID or any", rule);
		return (-1);
	}
	if (chd_parse_ops(c1 + 1, (size_t) (c2 - c1 - 1), &ops, why,
	        sizeof(why)) != 0) {
		chd_acc_errf(err, errlen, "rule '%s': %s", rule, why);
		return (-1);
	}
	pat = c2 + 1;
	plen = strlen(pat);
	if (plen > 0 && pat[plen - 1] == '*') {
		is_prefix = true;
		plen--;
	}
	/* What is left must be (the start of) a valid name. */
	if ((plen == 0 && !is_prefix) ||
	    (plen > 0 && !chl_name_valid(pat, plen, why, sizeof(why)))) {
		chd_acc_errf(err, errlen, "rule '%s': pattern must be NAME, "
		    "PREFIX* or *%s%s", rule, plen > 0 ? ": " : "",
		    plen > 0 ? why : "");
		return (-1);
	}
	return (chd_rule_push(a, subj, id, ops, pat, plen, is_prefix, err,
	    errlen));
}

void
chd_peer_describe(const chd_peer *p, char *buf, size_t len)
{
	if (p->cred) {
		snprintf(buf, len, "uid %u gid %u", (unsigned) p->uid,
		    (unsigned) p->gid);
	} else if (p->tls_verified) {
		snprintf(buf, len, "tls client (verified certificate)");
	} else {
		snprintf(buf, len, "tcp peer (no credentials)");
	}
}

static bool
chd_rule_applies(const chd_rule *r, const chd_peer *p)
{
	switch (r->subj) {
	case CHD_SUBJ_ANY:
		return (true);
	case CHD_SUBJ_UID:
		return (p->cred && p->uid == r->id);
	case CHD_SUBJ_GID:
		return (p->cred && p->gid == r->id);
	}
	return (false);
}

/* Trusted: root, the daemon's user, a verified tls client. */
static bool
chd_full(const chd_access *a, const chd_peer *p)
{
	if (p->tls_verified) {
		return (true);
	}
	if (p->cred) {
		for (size_t i = 0; i < a->ntrusted; i++) {
			if (a->trusted[i] == p->uid) {
				return (true);
			}
		}
	}
	return (false);
}

bool
chd_access_admits(const chd_access *a, const chd_peer *p, char *why,
    size_t whylen)
{
	char who[64];

	if (!chd_access_enabled(a) || chd_full(a, p)) {
		return (true);
	}
	for (size_t i = 0; i < a->nrules; i++) {
		if (chd_rule_applies(&a->rules[i], p)) {
			return (true);
		}
	}
	chd_peer_describe(p, who, sizeof(who));
	if (p->cred) {
		chd_acc_errf(why, whylen, "permission denied: %s is not "
		    "allowed to use this daemon (see --allow-uid, --allow-gid, "
		    "--allow)", who);
	} else {
		chd_acc_errf(why, whylen, "permission denied: %s; access "
		    "control is on, so tcp clients need tls+tcp with a "
		    "client certificate (--tls-ca) or an 'any:...' rule", who);
	}
	return (false);
}

/* Whether some rule for p grants all of bits on name. */
static bool
chd_granted(const chd_access *a, const chd_peer *p, unsigned bits,
    const char *name)
{
	size_t nlen = name ? strlen(name) : 0;

	for (size_t i = 0; i < a->nrules; i++) {
		const chd_rule *r = &a->rules[i];
		size_t          plen = strlen(r->prefix);

		if ((r->ops & bits) != bits || !chd_rule_applies(r, p)) {
			continue;
		}
		if (r->is_prefix ? (nlen >= plen &&
		                       memcmp(name, r->prefix, plen) == 0)
		                 : (nlen == plen && plen > 0 &&
		                       memcmp(name, r->prefix, plen) == 0)) {
			return (true);
		}
	}
	return (false);
}

/* The right a request needs and the name(s) it acts on. */
typedef struct chd_need {
	unsigned     bits;   /* 0: none beyond being admitted */
	const char  *what;   /* for the message */
	const char  *name;   /* NULL with names: several; "": nameless op */
	char *const *names;
	size_t       nnames;
	bool         known;
} chd_need;

#define CHD_NEED(b, w, n) \
	do {                   \
		need->bits = (b);  \
		need->what = (w);  \
		need->name = (n);  \
	} while (0)

static void
chd_need_of(const Chan__V1__Request *q, chd_need *need)
{
	memset(need, 0, sizeof(*need));
	need->known = true;
	need->name = "";
	/* A NULL sub-message decodes only from a malformed oneof: engine's. */
	switch (q->op_case) {
	case CHAN__V1__REQUEST__OP_HELLO:
	case CHAN__V1__REQUEST__OP_PING:
	/* Acts only on the client's own earlier requests, each of which
	 * was checked when it came. */
	case CHAN__V1__REQUEST__OP_CANCEL:
		break;
	case CHAN__V1__REQUEST__OP_STATS:
		CHD_NEED(CHD_ACC_INFO, "read daemon stats", "");
		break;
	case CHAN__V1__REQUEST__OP_LIST:
		CHD_NEED(CHD_ACC_INFO, "list channels", "");
		break;
	case CHAN__V1__REQUEST__OP_CREATE:
		CHD_NEED(CHD_ACC_MANAGE, "create channel",
		    q->create ? q->create->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_SEND:
		CHD_NEED(CHD_ACC_SEND, "send to channel",
		    q->send ? q->send->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_RECV:
		CHD_NEED(CHD_ACC_RECV, "receive from channel",
		    q->recv ? q->recv->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_RECV_ANY:
		CHD_NEED(CHD_ACC_RECV, "receive from channel", NULL);
		if (q->recv_any != NULL) {
			need->names = q->recv_any->names;
			need->nnames = q->recv_any->n_names;
		}
		break;
	case CHAN__V1__REQUEST__OP_CLOSE:
		CHD_NEED(CHD_ACC_MANAGE, "close channel",
		    q->close ? q->close->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_DELETE:
		CHD_NEED(CHD_ACC_MANAGE, "delete channel",
		    q->delete_ ? q->delete_->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_STAT:
		CHD_NEED(CHD_ACC_INFO, "stat channel",
		    q->stat ? q->stat->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_SENDER_OPEN:
		CHD_NEED(CHD_ACC_SEND, "open a sender on channel",
		    q->sender_open ? q->sender_open->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_SENDER_CLOSE:
		CHD_NEED(CHD_ACC_SEND, "close a sender on channel",
		    q->sender_close ? q->sender_close->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_RECEIVER_OPEN:
		CHD_NEED(CHD_ACC_RECV, "open a receiver on channel",
		    q->receiver_open ? q->receiver_open->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_RECEIVER_CLOSE:
		CHD_NEED(CHD_ACC_RECV, "close a receiver on channel",
		    q->receiver_close ? q->receiver_close->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_ACK:
		CHD_NEED(CHD_ACC_RECV, "ack on channel",
		    q->ack ? q->ack->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_RELEASE:
		CHD_NEED(CHD_ACC_RECV, "release on channel",
		    q->release ? q->release->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_ADD:
		CHD_NEED(CHD_ACC_COUNTER, "add to counter",
		    q->counter_add ? q->counter_add->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_GET:
		CHD_NEED(CHD_ACC_COUNTER, "get counter",
		    q->counter_get ? q->counter_get->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_SET:
		CHD_NEED(CHD_ACC_COUNTER, "set counter",
		    q->counter_set ? q->counter_set->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_CAS:
		CHD_NEED(CHD_ACC_COUNTER, "cas counter",
		    q->counter_cas ? q->counter_cas->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_WAIT:
		CHD_NEED(CHD_ACC_COUNTER, "wait on counter",
		    q->counter_wait ? q->counter_wait->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_DELETE:
		CHD_NEED(CHD_ACC_COUNTER, "delete counter",
		    q->counter_delete ? q->counter_delete->name : NULL);
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_LIST:
		CHD_NEED(CHD_ACC_COUNTER, "list counters", "");
		break;
	default:
		need->known = false;
		break;
	}
}

static chan_status
chd_deny(const chd_peer *p, const char *what, const char *name, char *why,
    size_t whylen)
{
	char who[64];

	chd_peer_describe(p, who, sizeof(who));
	if (name == NULL || *name == '\0') {
		chd_acc_errf(why, whylen, "permission denied: %s may not %s "
		    "(needs a rule for '*')", who, what);
	} else {
		chd_acc_errf(why, whylen, "permission denied: %s may not %s "
		    "'%.128s' (no --allow rule grants it)", who, what, name);
	}
	return (CHAN_PERMISSION_DENIED);
}

chan_status
chd_access_check(const chd_access *a, const chd_peer *p,
    const Chan__V1__Request *req, char *why, size_t whylen)
{
	chd_need need;

	if (!chd_access_enabled(a) || chd_full(a, p)) {
		return (CHAN_OK);
	}
	if (!chd_access_admits(a, p, why, whylen)) {
		return (CHAN_PERMISSION_DENIED);
	}
	if (req == NULL) {
		return (chd_deny(p, "make this request", NULL, why, whylen));
	}
	chd_need_of(req, &need);
	if (!need.known) {
		return (chd_deny(p, "make this request", NULL, why, whylen));
	}
	if (need.bits == 0) {
		return (CHAN_OK);
	}
	if (req->op_case == CHAN__V1__REQUEST__OP_RECV_ANY) {
		if (need.nnames == 0) {
			/* Nothing to receive from: the engine rejects it. */
			return (CHAN_OK);
		}
		for (size_t i = 0; i < need.nnames; i++) {
			if (!chd_granted(a, p, need.bits, need.names[i])) {
				return (chd_deny(p, need.what, need.names[i],
				    why, whylen));
			}
		}
		return (CHAN_OK);
	}
	/* A missing name checks as "" (only '*' grants it); the engine
	 * then answers INVALID_ARGUMENT as for anyone. */
	if (!chd_granted(a, p, need.bits, need.name ? need.name : "")) {
		return (chd_deny(p, need.what, need.name, why, whylen));
	}
	return (CHAN_OK);
}

/* ---- per-connection peers ------------------------------------------- */

/*
 * Buckets are locked in stripes, so the per-request calls of different
 * connections (get, pending add/done) rarely meet on one mutex.
 */
#define CHD_PEERS_BUCKETS 1024u
#define CHD_PEERS_STRIPES 16u

typedef struct chd_peer_ent {
	struct chd_peer_ent *next;
	uint32_t             conn;
	chd_peer             peer;
	bool                 refused_logged;
	unsigned             pending; /* requests in flight */
} chd_peer_ent;

struct chd_peers {
	pthread_mutex_t mtx[CHD_PEERS_STRIPES];
	chd_peer_ent   *b[CHD_PEERS_BUCKETS];
	atomic_size_t   n;
};

chd_peers *
chd_peers_new(void)
{
	chd_peers *t;

	if ((t = calloc(1, sizeof(*t))) == NULL) {
		return (NULL);
	}
	for (size_t i = 0; i < CHD_PEERS_STRIPES; i++) {
		pthread_mutex_init(&t->mtx[i], NULL);
	}
	atomic_init(&t->n, 0);
	return (t);
}

void
chd_peers_free(chd_peers *t)
{
	if (t == NULL) {
		return;
	}
	for (size_t i = 0; i < CHD_PEERS_BUCKETS; i++) {
		chd_peer_ent *e = t->b[i], *n;

		for (; e != NULL; e = n) {
			n = e->next;
			free(e);
		}
	}
	for (size_t i = 0; i < CHD_PEERS_STRIPES; i++) {
		pthread_mutex_destroy(&t->mtx[i]);
	}
	free(t);
}

static uint32_t
chd_peers_bucket(uint32_t conn)
{
	return ((conn * 2654435761u) % CHD_PEERS_BUCKETS);
}

/* Locks conn's stripe; returns the slot holding (or to hold) conn. */
static chd_peer_ent **
chd_peers_lock(chd_peers *t, uint32_t conn)
{
	uint32_t       b = chd_peers_bucket(conn);
	chd_peer_ent **pp = &t->b[b];

	pthread_mutex_lock(&t->mtx[b % CHD_PEERS_STRIPES]);
	while (*pp != NULL && (*pp)->conn != conn) {
		pp = &(*pp)->next;
	}
	return (pp);
}

static void
chd_peers_unlock(chd_peers *t, uint32_t conn)
{
	pthread_mutex_unlock(
	    &t->mtx[chd_peers_bucket(conn) % CHD_PEERS_STRIPES]);
}

int
chd_peers_put(chd_peers *t, uint32_t conn, const chd_peer *p)
{
	chd_peer_ent **pp, *e;

	pp = chd_peers_lock(t, conn);
	if ((e = *pp) == NULL) {
		if ((e = calloc(1, sizeof(*e))) == NULL) {
			chd_peers_unlock(t, conn);
			return (-1);
		}
		e->conn = conn;
		*pp = e;
		atomic_fetch_add(&t->n, 1);
	}
	e->peer = *p;
	chd_peers_unlock(t, conn);
	return (0);
}

bool
chd_peers_get(chd_peers *t, uint32_t conn, chd_peer *p)
{
	chd_peer_ent *e;

	if ((e = *chd_peers_lock(t, conn)) != NULL) {
		*p = e->peer;
	}
	chd_peers_unlock(t, conn);
	return (e != NULL);
}

bool
chd_peers_del(chd_peers *t, uint32_t conn)
{
	chd_peer_ent **pp, *e;
	bool           found;

	pp = chd_peers_lock(t, conn);
	if ((e = *pp) != NULL) {
		*pp = e->next;
		atomic_fetch_sub(&t->n, 1);
	}
	chd_peers_unlock(t, conn);
	found = e != NULL;
	free(e);
	return (found);
}

bool
chd_peers_first_refusal(chd_peers *t, uint32_t conn)
{
	chd_peer_ent *e;
	bool          first = true;

	if ((e = *chd_peers_lock(t, conn)) != NULL) {
		first = !e->refused_logged;
		e->refused_logged = true;
	}
	chd_peers_unlock(t, conn);
	return (first);
}

bool
chd_peers_pending_add(chd_peers *t, uint32_t conn, unsigned max)
{
	chd_peer_ent *e;
	bool          ok = true;

	if ((e = *chd_peers_lock(t, conn)) != NULL) {
		if (max > 0 && e->pending >= max) {
			ok = false;
		} else {
			e->pending++;
		}
	}
	chd_peers_unlock(t, conn);
	return (ok);
}

void
chd_peers_pending_done(chd_peers *t, uint32_t conn)
{
	chd_peer_ent *e;

	if ((e = *chd_peers_lock(t, conn)) != NULL && e->pending > 0) {
		e->pending--;
	}
	chd_peers_unlock(t, conn);
}

size_t
chd_peers_count(chd_peers *t)
{
	return (atomic_load(&t->n));
}
