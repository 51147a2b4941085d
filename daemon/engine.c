/*
 * engine.c - the engine's front door: lifecycle, connections, and request
 * dispatch. Every request is validated here, on the submitting thread, by
 * a declarative table keyed by the protobuf oneof case (Redis' command
 * table idea): what the op is called, how it routes, how its fields are
 * checked, who runs it. Only a fully checked request reaches a shard.
 */
#include "engine_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/thread.h>

#include "names.h"

#define CHD_CONN_TOMBS 4096 /* closed connections remembered */

enum chd_route {
	CHD_ROUTE_NONE,    /* answered on the submitting thread */
	CHD_ROUTE_CHAN,    /* the shard owning the channel name */
	CHD_ROUTE_COUNTER, /* the shard owning the counter name */
	CHD_ROUTE_ALL,     /* fanned out to every shard and gathered */
	CHD_ROUTE_ANY,     /* recv_any: the shards of its channels */
};

typedef bool (*chd_validate_fn)(chd_engine *e, const Chan__V1__Request *m,
    chan_status *st, char *err, size_t errlen);

typedef struct chd_op_desc {
	const char     *name;
	enum chd_route  route;
	const char   *(*key)(const Chan__V1__Request *m); /* CHAN / COUNTER */
	chd_validate_fn validate;                       /* beyond the key */
	void          (*on_shard)(chd_shard *sh, chd_req *r);
	void          (*on_engine)(chd_engine *e, chd_req *r);
	bool            idem; /* changes state or waits: answer repeats
	                       * from the cache (idem.c) */
} chd_op_desc;

/* ---- field checks ------------------------------------------------------- */

static bool
check_timeout(bool has, int64_t t, chan_status *st, char *err, size_t len)
{
	if (has && t < -1) {
		*st = CHAN_INVALID_ARGUMENT;
		snprintf(err, len, "timeout_ms is %lld; it must be -1 (wait "
		    "forever), 0 (do not wait) or a positive number of "
		    "milliseconds", (long long) t);
		return (false);
	}
	return (true);
}

static bool
check_name(const char *what, const char *name, chan_status *st, char *err,
    size_t len)
{
	char msg[200];

	if (!chl_name_valid(name, name != NULL ? strlen(name) : 0, msg,
	    sizeof(msg))) {
		*st = CHAN_INVALID_ARGUMENT;
		snprintf(err, len, "%s %s", what, msg);
		return (false);
	}
	return (true);
}

static bool
v_send(chd_engine *e, const Chan__V1__Request *m, chan_status *st,
    char *err, size_t len)
{
	const Chan__V1__Send *s = m->send;

	if (s->n_data < 1 || s->n_data > e->opts.max_batch) {
		*st = CHAN_INVALID_ARGUMENT;
		snprintf(err, len, "a send carries 1 to %u messages, not %zu",
		    e->opts.max_batch, s->n_data);
		return (false);
	}
	for (size_t i = 0; i < s->n_data; i++) {
		if (s->data[i].len > e->opts.max_message_size) {
			*st = CHAN_TOO_LARGE;
			snprintf(err, len, "message %zu is %zu bytes; the "
			    "maximum message size is %llu bytes; nothing was "
			    "sent", i + 1, s->data[i].len,
			    (unsigned long long) e->opts.max_message_size);
			return (false);
		}
	}
	return (check_timeout(s->has_timeout_ms, s->timeout_ms, st, err, len));
}

static bool
v_recv(chd_engine *e, const Chan__V1__Request *m, chan_status *st,
    char *err, size_t len)
{
	const Chan__V1__Recv *r = m->recv;

	if (r->has_max && (r->max < 1 || r->max > e->opts.max_batch)) {
		*st = CHAN_INVALID_ARGUMENT;
		snprintf(err, len, "max is %u; a recv takes 1 to %u messages",
		    r->max, e->opts.max_batch);
		return (false);
	}
	return (check_timeout(r->has_timeout_ms, r->timeout_ms, st, err, len));
}

static bool
v_recv_any(chd_engine *e, const Chan__V1__Request *m, chan_status *st,
    char *err, size_t len)
{
	const Chan__V1__RecvAny *r = m->recv_any;

	if (r->n_names < 1 || r->n_names > e->opts.max_batch) {
		*st = CHAN_INVALID_ARGUMENT;
		snprintf(err, len, "recv_any takes 1 to %u channel names, "
		    "not %zu", e->opts.max_batch, r->n_names);
		return (false);
	}
	for (size_t i = 0; i < r->n_names; i++) {
		if (!check_name("channel", r->names[i], st, err, len)) {
			return (false);
		}
	}
	return (check_timeout(r->has_timeout_ms, r->timeout_ms, st, err, len));
}

static bool
v_sender_close(chd_engine *e, const Chan__V1__Request *m, chan_status *st,
    char *err, size_t len)
{
	if (!m->sender_close->has_sender || m->sender_close->sender == 0) {
		*st = CHAN_INVALID_ARGUMENT;
		snprintf(err, len, "sender_close needs the sender handle");
		return (false);
	}
	return (true);
}

static bool
v_receiver_close(chd_engine *e, const Chan__V1__Request *m, chan_status *st,
    char *err, size_t len)
{
	if (!m->receiver_close->has_receiver ||
	    m->receiver_close->receiver == 0) {
		*st = CHAN_INVALID_ARGUMENT;
		snprintf(err, len, "receiver_close needs the receiver handle");
		return (false);
	}
	return (true);
}

static bool
v_seq(chd_engine *e, const Chan__V1__Request *m, chan_status *st,
    char *err, size_t len)
{
	bool has = m->op_case == CHAN__V1__REQUEST__OP_ACK ?
	    m->ack->has_seq : m->release->has_seq;

	if (!has) {
		*st = CHAN_INVALID_ARGUMENT;
		snprintf(err, len, "the seq of the leased message is missing");
		return (false);
	}
	return (true);
}

static bool
v_counter_wait(chd_engine *e, const Chan__V1__Request *m, chan_status *st,
    char *err, size_t len)
{
	const Chan__V1__CounterWait *w = m->counter_wait;

	if (w->has_op && ((int) w->op < CHAN__V1__WAIT_OP__EQ ||
	    (int) w->op > CHAN__V1__WAIT_OP__GE)) {
		*st = CHAN_INVALID_ARGUMENT;
		snprintf(err, len, "wait operator %d is not one of "
		    "== != < <= > >= (0 to 5)", (int) w->op);
		return (false);
	}
	return (check_timeout(w->has_timeout_ms, w->timeout_ms, st, err, len));
}

static bool
v_counter_add(chd_engine *e, const Chan__V1__Request *m, chan_status *st,
    char *err, size_t len)
{
	const Chan__V1__CounterAdd *a = m->counter_add;

	/* No deltas on the wire is the single add (delta, default 1). */
	if (a->n_deltas == 0) {
		return (true);
	}
	*st = CHAN_INVALID_ARGUMENT;
	if (a->has_delta) {
		snprintf(err, len, "counter add carries delta or deltas, not "
		    "both");
		return (false);
	}
	if (a->n_deltas > e->opts.max_batch) {
		snprintf(err, len, "counter add takes 1 to %u deltas, not %zu",
		    e->opts.max_batch, a->n_deltas);
		return (false);
	}
	return (true);
}

static bool
v_cancel(chd_engine *e, const Chan__V1__Request *m, chan_status *st,
    char *err, size_t len)
{
	const Chan__V1__Cancel *c = m->cancel;

	*st = CHAN_INVALID_ARGUMENT;
	if (!m->has_client || m->client == 0) {
		snprintf(err, len, "cancel needs Request.client: a client "
		    "cancels only its own requests");
		return (false);
	}
	if (c->n_ids < 1 || c->n_ids > e->opts.max_batch) {
		snprintf(err, len, "cancel takes 1 to %u request ids, not %zu",
		    e->opts.max_batch, c->n_ids);
		return (false);
	}
	for (size_t i = 0; i < c->n_ids; i++) {
		if (c->ids[i] == 0) {
			snprintf(err, len, "cancel: request id %zu is 0; ids "
			    "of requests start at 1", i + 1);
			return (false);
		}
	}
	return (true);
}

/* ---- the table ---------------------------------------------------------- */

#define KEY_FN(field)                                                      \
	static const char *key_##field(const Chan__V1__Request *m)         \
	{                                                                   \
		return (m->field->name);                                    \
	}
KEY_FN(create)
KEY_FN(send)
KEY_FN(recv)
KEY_FN(close)
KEY_FN(delete_)
KEY_FN(stat)
KEY_FN(sender_open)
KEY_FN(sender_close)
KEY_FN(receiver_open)
KEY_FN(receiver_close)
KEY_FN(ack)
KEY_FN(release)
KEY_FN(counter_add)
KEY_FN(counter_get)
KEY_FN(counter_set)
KEY_FN(counter_cas)
KEY_FN(counter_wait)
KEY_FN(counter_delete)
#undef KEY_FN

#define OP(c) [CHAN__V1__REQUEST__OP_##c]
static const chd_op_desc chd_ops[] = {
	OP(HELLO) = { "hello", CHD_ROUTE_NONE, NULL, NULL, NULL,
	    chd_info_hello, false },
	OP(PING) = { "ping", CHD_ROUTE_NONE, NULL, NULL, NULL,
	    chd_info_ping, false },
	OP(STATS) = { "stats", CHD_ROUTE_ALL, NULL, NULL, NULL,
	    chd_info_stats, false },
	OP(LIST) = { "list", CHD_ROUTE_ALL, NULL, NULL, NULL,
	    chd_info_list, false },
	OP(CREATE) = { "create", CHD_ROUTE_CHAN, key_create, NULL,
	    chd_op_create, NULL, true },
	OP(SEND) = { "send", CHD_ROUTE_CHAN, key_send, v_send,
	    chd_op_send, NULL, true },
	OP(RECV) = { "recv", CHD_ROUTE_CHAN, key_recv, v_recv,
	    chd_op_recv, NULL, true },
	OP(RECV_ANY) = { "recv_any", CHD_ROUTE_ANY, NULL, v_recv_any, NULL,
	    chd_any_submit, true },
	OP(CLOSE) = { "close", CHD_ROUTE_CHAN, key_close, NULL,
	    chd_op_close, NULL, true },
	OP(DELETE) = { "delete", CHD_ROUTE_CHAN, key_delete_, NULL,
	    chd_op_delete, NULL, true },
	OP(STAT) = { "stat", CHD_ROUTE_CHAN, key_stat, NULL,
	    chd_op_stat, NULL, false },
	OP(SENDER_OPEN) = { "sender_open", CHD_ROUTE_CHAN, key_sender_open,
	    NULL, chd_op_sender_open, NULL, true },
	OP(SENDER_CLOSE) = { "sender_close", CHD_ROUTE_CHAN,
	    key_sender_close, v_sender_close, chd_op_sender_close, NULL, true },
	OP(RECEIVER_OPEN) = { "receiver_open", CHD_ROUTE_CHAN,
	    key_receiver_open, NULL, chd_op_receiver_open, NULL, true },
	OP(RECEIVER_CLOSE) = { "receiver_close", CHD_ROUTE_CHAN,
	    key_receiver_close, v_receiver_close, chd_op_receiver_close,
	    NULL, true },
	OP(ACK) = { "ack", CHD_ROUTE_CHAN, key_ack, v_seq, chd_op_ack, NULL,
	    true },
	OP(RELEASE) = { "release", CHD_ROUTE_CHAN, key_release, v_seq,
	    chd_op_release, NULL, true },
	OP(COUNTER_ADD) = { "counter add", CHD_ROUTE_COUNTER, key_counter_add,
	    v_counter_add, chd_op_counter_add, NULL, true },
	OP(COUNTER_GET) = { "counter get", CHD_ROUTE_COUNTER, key_counter_get,
	    NULL, chd_op_counter_get, NULL, false },
	OP(COUNTER_SET) = { "counter set", CHD_ROUTE_COUNTER, key_counter_set,
	    NULL, chd_op_counter_set, NULL, true },
	OP(COUNTER_CAS) = { "counter cas", CHD_ROUTE_COUNTER, key_counter_cas,
	    NULL, chd_op_counter_cas, NULL, true },
	OP(COUNTER_WAIT) = { "counter wait", CHD_ROUTE_COUNTER,
	    key_counter_wait, v_counter_wait, chd_op_counter_wait, NULL, true },
	OP(COUNTER_DELETE) = { "counter delete", CHD_ROUTE_COUNTER,
	    key_counter_delete, NULL, chd_op_counter_delete, NULL, true },
	OP(COUNTER_LIST) = { "counter list", CHD_ROUTE_ALL, NULL, NULL, NULL,
	    chd_info_counter_list, false },
	/* Not cached itself: doing it twice changes nothing. */
	OP(CANCEL) = { "cancel", CHD_ROUTE_NONE, NULL, v_cancel, NULL,
	    chd_idem_cancel, false },
};
#undef OP

static const chd_op_desc *
op_lookup(const Chan__V1__Request *m)
{
	size_t c = (size_t) m->op_case;

	if (c >= sizeof(chd_ops) / sizeof(chd_ops[0]) ||
	    chd_ops[c].name == NULL || m->hello == NULL) {
		return (NULL);
	}
	return (&chd_ops[c]);
}

/* ---- lifecycle ---------------------------------------------------------- */

static pthread_once_t chd_evthread_once = PTHREAD_ONCE_INIT;

static void
chd_evthread_init(void)
{
	evthread_use_pthreads();
}

void
chd_engine_opts_default(chd_engine_opts *opts)
{
	opts->workers = 2;
	opts->max_message_size = 1024 * 1024;
	opts->max_batch = 8192;
	opts->auto_create = true;
	opts->max_memory = (uint64_t) 1 << 30;
	opts->custody_grace_ms = CHD_CUSTODY_GRACE_MS;
	opts->max_channels = CHD_MAX_CHANNELS_DEFAULT;
	opts->max_counters = CHD_MAX_COUNTERS_DEFAULT;
}

int
chd_engine_start(const chd_engine_opts *opts, chd_engine **out)
{
	chd_engine *e;
	int         rv;

	if (opts == NULL || opts->workers < 1 || opts->workers > 1024 ||
	    opts->max_batch < 1) {
		return (EINVAL);
	}
	pthread_once(&chd_evthread_once, chd_evthread_init);
	if ((e = calloc(1, sizeof(*e))) == NULL ||
	    (e->shards = calloc((size_t) opts->workers,
	        sizeof(*e->shards))) == NULL) {
		free(e);
		return (ENOMEM);
	}
	if ((e->tombs = calloc(CHD_CONN_TOMBS, sizeof(*e->tombs))) == NULL ||
	    (rv = chd_htab_init(&e->conns)) != 0) {
		free(e->tombs);
		rv = ENOMEM;
		free(e->shards);
		free(e);
		return (rv);
	}
	if ((e->idem = chd_idem_new()) == NULL) {
		free(e->tombs);
		chd_htab_fini(&e->conns);
		free(e->shards);
		free(e);
		return (ENOMEM);
	}
	e->opts = *opts;
	e->start_ms = chl_now_mono_ms();
	pthread_rwlock_init(&e->conn_lock, NULL);
	pthread_mutex_init(&e->sd_mtx, NULL);
	pthread_cond_init(&e->sd_cv, NULL);
	for (e->n = 0; e->n < opts->workers; e->n++) {
		if ((rv = chd_shard_start(e, e->n, &e->shards[e->n])) != 0) {
			chd_engine_free(e);
			return (rv);
		}
	}
	*out = e;
	return (0);
}

static void
shutdown_job(chd_shard *sh, void *arg)
{
	chd_engine *e = sh->e;

	sh->shutdown = true;
	while (sh->parked != NULL) {
		chd_task_abort(sh->parked, CHAN_SHUTTING_DOWN,
		    "daemon is shutting down");
	}
	pthread_mutex_lock(&e->sd_mtx);
	if (--e->sd_pending == 0) {
		pthread_cond_broadcast(&e->sd_cv);
	}
	pthread_mutex_unlock(&e->sd_mtx);
}

void
chd_engine_shutdown(chd_engine *e)
{
	if (atomic_exchange(&e->shutting, true)) {
		return;
	}
	pthread_mutex_lock(&e->sd_mtx);
	e->sd_pending = e->n;
	pthread_mutex_unlock(&e->sd_mtx);
	for (int i = 0; i < e->n; i++) {
		/* Retried: every waiter must get its answer. */
		while (chd_shard_post(e->shards[i], shutdown_job, NULL) != 0) {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	pthread_mutex_lock(&e->sd_mtx);
	while (e->sd_pending > 0) {
		pthread_cond_wait(&e->sd_cv, &e->sd_mtx);
	}
	pthread_mutex_unlock(&e->sd_mtx);
}

void
chd_engine_free(chd_engine *e)
{
	bool ran = true;

	if (e == NULL) {
		return;
	}
	if (e->n > 0) {
		chd_engine_shutdown(e);
	}
	for (int i = 0; i < e->n; i++) {
		chd_shard_stop(e->shards[i]);
	}
	/* Leftover jobs may answer or park; answer anything still parked
	 * (nothing should be after shutdown) until all is quiet. */
	while (ran) {
		ran = false;
		for (int i = 0; i < e->n; i++) {
			chd_shard *sh = e->shards[i];
			ran |= chd_shard_drain(sh);
			while (sh->parked != NULL) {
				chd_task_abort(sh->parked, CHAN_SHUTTING_DOWN,
				    "daemon is shutting down");
				ran = true;
			}
		}
	}
	for (int i = 0; i < e->n; i++) {
		chd_shard_free(e->shards[i]);
	}
	for (size_t i = 0; i < e->conns.nb; i++) {
		chd_hnode *n, *next;
		for (n = e->conns.b[i]; n != NULL; n = next) {
			next = n->hnext;
			free(n);
		}
	}
	chd_htab_fini(&e->conns);
	free(e->tombs);
	chd_idem_free(e->idem);
	pthread_rwlock_destroy(&e->conn_lock);
	pthread_mutex_destroy(&e->sd_mtx);
	pthread_cond_destroy(&e->sd_cv);
	free(e->shards);
	free(e);
}

/* ---- connections -------------------------------------------------------- */

/*
 * Open connections (pid for stat) and tombstones of recently closed ones.
 * A request can reach the engine before the transport's "pipe added"
 * callback ran, so an unknown connection counts as alive; only a closed
 * one (tombstone) may not park. The newest CHD_CONN_TOMBS closes are kept.
 */
typedef struct chd_conn {
	chd_hnode hn; /* hash = conn id */
	uint32_t  id;
	int       pid;
	bool      closed;
} chd_conn;

static chd_conn *
conn_find(chd_engine *e, uint32_t id)
{
	chd_hnode *n = NULL;

	while ((n = chd_htab_find(&e->conns, id, n)) != NULL) {
		if (((chd_conn *) n)->id == id) {
			return ((chd_conn *) n);
		}
	}
	return (NULL);
}

void
chd_engine_conn_open(chd_engine *e, uint32_t conn, int pid)
{
	chd_conn *c;

	pthread_rwlock_wrlock(&e->conn_lock);
	if ((c = conn_find(e, conn)) == NULL &&
	    (c = calloc(1, sizeof(*c))) != NULL) {
		c->id = conn;
		c->hn.hash = conn;
		c->closed = true; /* counted as opened just below */
		chd_htab_insert(&e->conns, &c->hn);
	}
	if (c != NULL) {
		c->pid = pid;
		if (c->closed) {
			c->closed = false;
			atomic_fetch_add(&e->connections, 1);
		}
	}
	pthread_rwlock_unlock(&e->conn_lock);
}

static void
conn_close_job(chd_shard *sh, void *arg)
{
	chd_chan_conn_closed(sh, (uint32_t) (uintptr_t) arg);
}

void
chd_shard_post_conn_close(chd_shard *sh, uint32_t conn)
{
	(void) chd_shard_post(sh, conn_close_job, (void *) (uintptr_t) conn);
}

/* Under conn_lock (write): records the tombstone, evicts the oldest. */
static void
conn_tomb(chd_engine *e, chd_conn *c)
{
	uint32_t  old = e->tombs[e->tomb_next];
	chd_conn *o;

	if (e->tomb_used == CHD_CONN_TOMBS && old != c->id &&
	    (o = conn_find(e, old)) != NULL && o->closed) {
		chd_htab_remove(&e->conns, &o->hn);
		free(o);
	}
	e->tombs[e->tomb_next] = c->id;
	e->tomb_next = (e->tomb_next + 1) % CHD_CONN_TOMBS;
	if (e->tomb_used < CHD_CONN_TOMBS) {
		e->tomb_used++;
	}
}

void
chd_engine_conn_close(chd_engine *e, uint32_t conn)
{
	chd_conn *c;

	/* Tombstone first: a request of this connection still on its way
	 * to a shard then refuses to park (nothing would clean it up). */
	pthread_rwlock_wrlock(&e->conn_lock);
	if ((c = conn_find(e, conn)) == NULL &&
	    (c = calloc(1, sizeof(*c))) != NULL) {
		c->id = conn;
		c->hn.hash = conn;
		c->closed = true;
		chd_htab_insert(&e->conns, &c->hn);
		conn_tomb(e, c);
	} else if (c != NULL && !c->closed) {
		c->closed = true;
		atomic_fetch_sub(&e->connections, 1);
		conn_tomb(e, c);
	}
	pthread_rwlock_unlock(&e->conn_lock);
	for (int i = 0; i < e->n; i++) {
		while (chd_shard_post(e->shards[i], conn_close_job,
		    (void *) (uintptr_t) conn) != 0) {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
		}
	}
}

int
chd_engine_conn_pid(chd_engine *e, uint32_t conn)
{
	chd_conn *c;
	int       pid = 0;

	pthread_rwlock_rdlock(&e->conn_lock);
	if ((c = conn_find(e, conn)) != NULL && !c->closed) {
		pid = c->pid;
	}
	pthread_rwlock_unlock(&e->conn_lock);
	return (pid);
}

bool
chd_engine_conn_alive(chd_engine *e, uint32_t conn)
{
	chd_conn *c;
	bool      alive;

	pthread_rwlock_rdlock(&e->conn_lock);
	alive = (c = conn_find(e, conn)) == NULL || !c->closed;
	pthread_rwlock_unlock(&e->conn_lock);
	return (alive);
}

/* ---- requests ----------------------------------------------------------- */

typedef struct chd_confirm {
	uint64_t id;
	uint32_t taken; /* CHD_TAKEN_ALL: Request.confirm, else confirm_part */
} chd_confirm;

typedef struct chd_confirms {
	uint32_t    conn;   /* the confirming request's */
	uint64_t    client; /* 0: none */
	size_t      n;
	chd_confirm c[];
} chd_confirms;

static void
confirm_job(chd_shard *sh, void *arg)
{
	chd_confirms *c = arg;

	for (size_t i = 0; i < c->n; i++) {
		chd_chan_confirm(sh, c->c[i].id, c->c[i].taken, c->conn, c->client);
	}
	free(c);
}

/* The i-th confirmation of m (Request.confirm, then confirm_part); id 0: none. */
static chd_confirm
confirm_at(const Chan__V1__Request *m, size_t i)
{
	const Chan__V1__PartConfirm *p;

	if (i < m->n_confirm) {
		return ((chd_confirm) { m->confirm[i], CHD_TAKEN_ALL });
	}
	p = m->confirm_part[i - m->n_confirm];
	if (p == NULL || !p->has_delivery) {
		return ((chd_confirm) { 0, 0 });
	}
	/* taken is below CHD_TAKEN_ALL unless the delivery is that big,
	 * which no delivery is (max_batch). */
	return ((chd_confirm) { p->delivery, p->has_taken ? p->taken : 0 });
}

/*
 * Confirms go to the shards owning the deliveries before the op is
 * posted: a shard's mailbox is FIFO, so an op on the same shard (where
 * the channel lives) sees the custody already released.
 */
static void
post_confirms(chd_engine *e, const Chan__V1__Request *m, uint32_t conn)
{
	size_t all = m->n_confirm + m->n_confirm_part;

	for (int s = 0; s < e->n; s++) {
		chd_confirms *c = NULL;
		size_t        k = 0;
		for (size_t i = 0; i < all; i++) {
			chd_confirm f = confirm_at(m, i);
			if (f.id != 0 && f.id % (uint64_t) e->n == (uint64_t) s) {
				k++;
			}
		}
		if (k == 0 || (c = malloc(sizeof(*c) + k * sizeof(c->c[0])))
		    == NULL) {
			continue; /* OOM: stays in custody, as if unconfirmed */
		}
		c->conn = conn;
		c->client = m->has_client ? m->client : 0;
		c->n = 0;
		for (size_t i = 0; i < all; i++) {
			chd_confirm f = confirm_at(m, i);
			if (f.id != 0 && f.id % (uint64_t) e->n == (uint64_t) s) {
				c->c[c->n++] = f;
			}
		}
		if (chd_shard_post(e->shards[s], confirm_job, c) != 0) {
			free(c);
		}
	}
}

static void
op_job(chd_shard *sh, void *arg)
{
	chd_req *r = arg;

	if (sh->shutdown) {
		chd_reply_err(sh->e, r, CHAN_SHUTTING_DOWN,
		    "daemon is shutting down");
		return;
	}
	/* A Cancel that came between its cache entry and now: the Cancel's
	 * job for this shard runs after this one and finds nothing. */
	if (chd_idem_req_cancelled(r)) {
		chd_reply_err(sh->e, r, CHAN_UNAVAILABLE, "cancelled");
		return;
	}
	op_lookup(r->msg)->on_shard(sh, r);
}

chd_answer *
chd_answer_new(size_t len)
{
	chd_answer *a = malloc(sizeof(*a) + (len > 0 ? len : 1));

	if (a != NULL) {
		atomic_init(&a->refs, 1);
		a->len = len;
	}
	return (a);
}

void
chd_response_oom(Chan__V1__Response *small, const Chan__V1__Response *resp)
{
	chan__v1__response__init(small);
	small->has_id = resp->has_id;
	small->id = resp->id;
	small->has_status = 1;
	small->status = CHAN__V1__STATUS__RESOURCE_EXHAUSTED;
	small->error = "daemon out of memory encoding the answer";
}

void
chd_answer_unref(chd_answer *a)
{
	if (a != NULL && atomic_fetch_sub(&a->refs, 1) == 1) {
		free(a);
	}
}

/*
 * A Send in the batch form gets its messages as Send.data (pointing into
 * the request), so nothing after this sees the difference.
 */
static bool
unbatch_send(chd_engine *e, chd_req *r, chan_status *st, char *err, size_t len)
{
	Chan__V1__Send *s = r->msg->send;

	if (s->batch == NULL) {
		return (true);
	}
	*st = CHAN_INVALID_ARGUMENT;
	if (s->batch->n_sizes > e->opts.max_batch) {
		snprintf(err, len, "a send carries 1 to %u messages, not %zu", e->opts.max_batch,
		    s->batch->n_sizes);
		return (false);
	}
	return (chl_send_unbatch(&r->alloc, s, err, len));
}

void
chd_engine_submit(chd_engine *e, chd_req *r)
{
	const Chan__V1__Request *m = r->msg;
	const chd_op_desc       *op;
	chan_status              st = CHAN_INVALID_ARGUMENT;
	char                     err[400];

	if (atomic_load(&e->shutting)) {
		chd_reply_err(e, r, CHAN_SHUTTING_DOWN,
		    "daemon is shutting down");
		return;
	}
	if (m == NULL) {
		chd_reply_err(e, r, CHAN_PROTOCOL, "request did not decode");
		return;
	}
	if (m->n_confirm > 0 || m->n_confirm_part > 0) {
		post_confirms(e, m, r->conn);
	}
	if ((op = op_lookup(m)) == NULL) {
		chd_reply_err(e, r, CHAN_INVALID_ARGUMENT,
		    "unknown request type (op %d)", (int) m->op_case);
		return;
	}
	err[0] = '\0';
	if (op->key != NULL &&
	    !check_name(op->route == CHD_ROUTE_COUNTER ? "counter" : "channel",
	    op->key(m), &st, err, sizeof(err))) {
		chd_reply_err(e, r, st, "%s", err);
		return;
	}
	if (m->op_case == CHAN__V1__REQUEST__OP_SEND && !unbatch_send(e, r, &st, err, sizeof(err))) {
		chd_reply_err(e, r, st, "%s", err);
		return;
	}
	if (op->validate != NULL && !op->validate(e, m, &st, err, sizeof(err))) {
		chd_reply_err(e, r, st, "%s", err);
		return;
	}
	if (op->idem && m->has_client && m->client != 0 && m->has_id &&
	    (r = chd_idem_begin(e, r)) == NULL) {
		return;
	}
	chd_engine_dispatch(e, r);
}

void
chd_engine_dispatch(chd_engine *e, chd_req *r)
{
	const chd_op_desc *op = op_lookup(r->msg);
	chd_shard         *sh;

	switch (op->route) {
	case CHD_ROUTE_CHAN:
		sh = chd_shard_for_chan(e, op->key(r->msg));
		break;
	case CHD_ROUTE_COUNTER:
		sh = chd_shard_for_counter(e, op->key(r->msg));
		break;
	default:
		op->on_engine(e, r);
		return;
	}
	if (chd_shard_post(sh, op_job, r) != 0) {
		chd_reply_err(e, r, CHAN_RESOURCE_EXHAUSTED, "out of memory");
	}
}
