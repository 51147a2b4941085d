/*
 * transport.c - nng REP socket, contexts, listeners, pipe events.
 *
 * Each request lives in one nng context from the moment it is received
 * until its reply is handed to nng: a REP context can only answer the
 * request it received. Requests may park in the engine for a long time
 * (blocked recv, counter wait), so contexts are not a fixed pool: a few
 * stay in nng_ctx_recv at all times, and whenever one receives a request
 * another takes its place (recycled from the idle list, or opened).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_DEFAULT */
#endif
#include "transport.h"

#include <dlfcn.h>
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/transport/ipc/ipc.h>

#include "access.h"
#include "msgpool.h"
#include "notify.h"
#include "sps.h"

#define CHD_MAX_LISTENERS 32
#define CHD_IDLE_MAX 64          /* idle contexts kept open for reuse */
#define CHD_RECEIVERS_MAX 64     /* contexts kept in nng_ctx_recv, at most */
#define CHD_PROBE_TIMEOUT_MS 1000 /* stale-socket probe */
#define CHD_GUARD_PERIOD_MS 500   /* ipc listener health probe period */
#define CHD_ACCEPT_PROBE_MS 300   /* a live listener accepts within this */
#define CHD_ACCEPT_CONFIRM_MS 700 /* second chance before a replacement */
#define CHD_MAX_ZOMBIES 64        /* replaced listeners kept for their pipes */
#define CHD_SELF_PIPES 8          /* guard probe pipes remembered */
#define CHD_REFUSED_LOG_MS 10000  /* --max-connections: a line per burst */

typedef enum {
	CHD_CTX_IDLE, /* open, not in use */
	CHD_CTX_RECV, /* waiting in nng_ctx_recv */
	CHD_CTX_BUSY, /* holds a request (engine or being encoded) */
	CHD_CTX_SEND, /* reply handed to nng_ctx_send */
	CHD_CTX_DEAD, /* socket closed; freed by chd_transport_free */
} chd_ctx_state;

/* One --listen URL. */
typedef struct {
	char        *url;
	const char  *path; /* ipc: inside url; NULL for tcp/tls, and direct */
	nng_listener l;    /* the listener currently serving url */
	bool         direct; /* chand's own (sps.c), not nng's */
} chd_lsn;

/* A replaced listener, kept open while it still has connections. */
typedef struct {
	nng_listener l;
	const char  *path; /* the public path it would unlink on close */
} chd_zombie;

typedef struct chd_tctx chd_tctx;
struct chd_tctx {
	chd_transport *t;
	nng_ctx        ctx;
	nng_aio       *aio;
	chd_ctx_state  state;
	chd_tctx      *prev, *next; /* t->all */
	chd_tctx      *next_idle;   /* t->idle */
};

struct chd_transport {
	nng_socket      sock;
	chd_engine     *engine;
	size_t          decode_cap;
	int             receivers; /* target count in CHD_CTX_RECV */
	int             socket_mode;
	const char     *tls_cert, *tls_key, *tls_ca;
	nng_tls_config *tls;
	int             socket_gid;      /* -1: leave the group */
	int             socket_dir_mode; /* a socket directory we create */

	/* Access (docs/SECURITY.md): admitted pipes and their peers. */
	const chd_access *access;        /* NULL: access control off */
	chd_peers      *peers;           /* every admitted client pipe */
	unsigned        max_conns;       /* 0: no limit */
	unsigned        max_pending;     /* per connection, 0: no limit */
	int64_t         refused_log_ms;  /* last --max-connections line */
	unsigned long   refused_since;   /* refusals since that line */

	pthread_mutex_t mtx; /* everything below, ctx states */
	pthread_cond_t  cv;  /* inflight reached 0 */
	chd_tctx       *all;
	chd_tctx       *idle;
	int             nidle;
	int             nrecv;    /* contexts in CHD_CTX_RECV */
	unsigned long   inflight; /* requests received, reply not yet sent */
	bool            closing;  /* socket closed or closing: never re-arm */
	bool            warned_open;

	/* Serialises pipe events against chd_transport_close. */
	pthread_mutex_t pipe_mtx;
	pthread_cond_t  pipe_cv; /* conns reached 0 */
	bool            engine_live;
	unsigned        conns;
	unsigned long   self_added; /* pipes from our own pid (guard probes) */
	int             self_pipes[CHD_SELF_PIPES]; /* their ids, a ring */
	unsigned        self_next;
	bool            guard_quit; /* cuts a running probe short */
	struct {
		int      id; /* nng listener id, 0: free slot */
		unsigned n;  /* its open pipes */
	} lpipes[CHD_MAX_LISTENERS + CHD_MAX_ZOMBIES];

	/* Listeners: the live one per URL, and replaced ones (see guard). */
	pthread_mutex_t lsn_mtx;
	chd_lsn         lsn[CHD_MAX_LISTENERS];
	int             nlsn;
	chd_zombie      zombies[CHD_MAX_ZOMBIES];
	int             nzombies;
	unsigned        generation;

	/* ipc:// and tcp:// served by chand itself (sps.h); NULL: by nng. */
	chd_sps        *sps;

	/* The ipc listener guard thread (nng #1518). */
	pthread_t       guard;
	bool            guard_running;
	bool            guard_stop;
	pthread_cond_t  guard_cv; /* under lsn_mtx */
};

static void chd_ctx_cb(void *arg);
static int  chd_pipe_pid(nng_pipe p);
static void chd_peer_of(nng_pipe p, chd_peer *peer);

static void
chd_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
chd_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void) vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void
chd_deadline(struct timespec *dl, int timeout_ms)
{
	clock_gettime(CLOCK_REALTIME, dl);
	dl->tv_sec += timeout_ms / 1000;
	dl->tv_nsec += (long) (timeout_ms % 1000) * 1000000L;
	if (dl->tv_nsec >= 1000000000L) {
		dl->tv_sec++;
		dl->tv_nsec -= 1000000000L;
	}
}

/* ---- contexts --------------------------------------------------------- */

/* Opens a new context in state IDLE and links it into t->all. */
static chd_tctx *
chd_ctx_new(chd_transport *t)
{
	chd_tctx *c;
	int       rv;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		return (NULL);
	}
	c->t = t;
	if ((rv = nng_aio_alloc(&c->aio, chd_ctx_cb, c)) != 0) {
		free(c);
		return (NULL);
	}
	if ((rv = nng_ctx_open(&c->ctx, t->sock)) != 0) {
		nng_aio_free(c->aio);
		free(c);
		return (NULL);
	}
	c->state = CHD_CTX_IDLE;
	pthread_mutex_lock(&t->mtx);
	c->next = t->all;
	if (t->all != NULL) {
		t->all->prev = c;
	}
	t->all = c;
	pthread_mutex_unlock(&t->mtx);
	return (c);
}

/*
 * Keeps t->receivers contexts in nng_ctx_recv. Called with t->mtx held
 * (dropped and retaken around opening a context); the contexts to put in
 * nng_ctx_recv go to arm[] (at most CHD_RECEIVERS_MAX): the caller arms
 * them after unlocking, so no nng call runs under our lock.
 */
static int
chd_refill_locked(chd_transport *t, chd_tctx **arm)
{
	int n = 0;

	while (!t->closing && t->nrecv < t->receivers) {
		chd_tctx *c;

		if ((c = t->idle) != NULL) {
			t->idle = c->next_idle;
			t->nidle--;
		} else {
			pthread_mutex_unlock(&t->mtx);
			c = chd_ctx_new(t);
			pthread_mutex_lock(&t->mtx);
			if (c == NULL) {
				/* Out of memory: serve with fewer receivers. */
				if (!t->warned_open) {
					t->warned_open = true;
					chd_log(CHD_LOG_WARN,
					    "cannot open an nng context; "
					    "receiving with %d",
					    t->nrecv);
				}
				break;
			}
			if (t->closing) {
				c->state = CHD_CTX_DEAD;
				break;
			}
		}
		c->state = CHD_CTX_RECV;
		t->nrecv++;
		arm[n++] = c;
	}
	return (n);
}

static void
chd_arm(chd_tctx **arm, int n)
{
	for (int i = 0; i < n; i++) {
		nng_ctx_recv(arm[i]->ctx, arm[i]->aio);
	}
}

/*
 * A context is done with its request (reply sent or dropped): back to the
 * receivers if they are short, else idle, else closed. t->mtx held.
 */
static void
chd_ctx_recycle_locked(chd_transport *t, chd_tctx *c, bool *reap, bool *rearm)
{
	*reap = false;
	*rearm = false;
	if (t->inflight > 0 && --t->inflight == 0) {
		pthread_cond_broadcast(&t->cv);
	}
	if (t->closing) {
		c->state = CHD_CTX_DEAD;
		return;
	}
	if (t->nrecv < t->receivers) {
		c->state = CHD_CTX_RECV;
		t->nrecv++;
		*rearm = true;
		return;
	}
	if (t->nidle < CHD_IDLE_MAX) {
		c->state = CHD_CTX_IDLE;
		c->next_idle = t->idle;
		t->idle = c;
		t->nidle++;
		return;
	}
	/* Surplus after a burst: unlink; the caller closes and reaps it. */
	if (c->prev != NULL) {
		c->prev->next = c->next;
	} else {
		t->all = c->next;
	}
	if (c->next != NULL) {
		c->next->prev = c->prev;
	}
	*reap = true;
}

static void
chd_ctx_recycle(chd_tctx *c)
{
	chd_transport *t = c->t;
	bool           reap, rearm;

	pthread_mutex_lock(&t->mtx);
	chd_ctx_recycle_locked(t, c, &reap, &rearm);
	pthread_mutex_unlock(&t->mtx);
	if (rearm) {
		nng_ctx_recv(c->ctx, c->aio);
	} else if (reap) {
		/* We may be in c->aio's own callback: reap, never free. */
		(void) nng_ctx_close(c->ctx);
		nng_aio_reap(c->aio);
		free(c);
	}
}

/* Encodes resp and hands it to nng on c's context. Any thread. */
static void
chd_ctx_send(chd_tctx *c, const Chan__V1__Response *resp, bool batch)
{
	chd_transport *t = c->t;
	nng_msg       *m;
	size_t         n;
	chl_packer     pk;

	n = chl_packer_init(&pk, resp, batch);
	if (chl_msgpool_get(&m, n) != 0) {
		Chan__V1__Response small;

		chl_packer_fini(&pk);
		/* Too big to allocate: the client still gets an answer. */
		chd_response_oom(&small, resp);
		n = chan__v1__response__get_packed_size(&small);
		if (nng_msg_alloc(&m, n) != 0) {
			chd_log(CHD_LOG_WARN,
			    "out of memory: dropping an answer (conn gets none)");
			chd_ctx_recycle(c);
			return;
		}
		resp = &small;
		(void) chan__v1__response__pack(resp, nng_msg_body(m));
	} else {
		(void) chl_packer_write(&pk, nng_msg_body(m));
		chl_packer_fini(&pk);
	}
	pthread_mutex_lock(&t->mtx);
	c->state = CHD_CTX_SEND;
	pthread_mutex_unlock(&t->mtx);
	nng_aio_set_msg(c->aio, m);
	nng_ctx_send(c->ctx, c->aio);
}

/* r->reply: the engine's answer, from any engine thread. */
static void
chd_reply(chd_req *r, const Chan__V1__Response *resp)
{
	chd_tctx *c = r->owner;

	/* Before the send: the client may ask again as soon as it reads. */
	chd_peers_pending_done(c->t->peers, r->conn);
	/* resp may point into r->msg (e.g. names): encode before freeing. */
	chd_ctx_send(c, resp, chd_req_wants_batch(r));
	chl_request_free(&r->alloc, r->msg);
	free(r);
}

static void
chd_ctx_answer(chd_tctx *c, Chan__V1__Status st, const char *text)
{
	Chan__V1__Response resp = CHAN__V1__RESPONSE__INIT;

	resp.has_status = 1;
	resp.status = st;
	resp.error = (char *) text;
	chd_ctx_send(c, &resp, false);
}

/* Hands an answer the engine already packed to nng on c's context. */
static void
chd_ctx_send_packed(chd_tctx *c, const uint8_t *bytes, size_t len)
{
	chd_transport *t = c->t;
	nng_msg       *m;

	if (chl_msgpool_get(&m, len) != 0) {
		chd_ctx_answer(c, CHAN__V1__STATUS__RESOURCE_EXHAUSTED,
		    "daemon out of memory encoding the answer");
		return;
	}
	memcpy(nng_msg_body(m), bytes, len);
	pthread_mutex_lock(&t->mtx);
	c->state = CHD_CTX_SEND;
	pthread_mutex_unlock(&t->mtx);
	nng_aio_set_msg(c->aio, m);
	nng_ctx_send(c->ctx, c->aio);
}

/* r->reply_answer: chd_reply for an answer the engine packed. */
static void
chd_reply_answer(chd_req *r, chd_answer *a, chan_status st, uint64_t delivery)
{
	chd_tctx *c = r->owner;

	(void) st;
	(void) delivery;
	chd_peers_pending_done(c->t->peers, r->conn);
	chd_ctx_send_packed(c, a->bytes, a->len);
	chd_answer_unref(a);
	chl_request_free(&r->alloc, r->msg);
	free(r);
}

/* Answers r (with its id) without the engine, and frees it. */
static void
chd_refuse(chd_tctx *c, chd_req *r, Chan__V1__Status st, const char *why)
{
	Chan__V1__Response resp = CHAN__V1__RESPONSE__INIT;

	resp.has_id = r->msg->has_id;
	resp.id = r->msg->id;
	resp.has_status = 1;
	resp.status = st;
	resp.error = (char *) why;
	chd_ctx_send(c, &resp, false);
	chl_request_free(&r->alloc, r->msg);
	free(r);
}

/*
 * Access control (docs/SECURITY.md), before the engine sees r: true when
 * the peer may make it; else r is answered PERMISSION_DENIED (with its id)
 * and freed, and the refusal is logged once per connection.
 */
static bool
chd_request_allowed(chd_tctx *c, nng_pipe p, chd_req *r)
{
	chd_transport     *t = c->t;
	chd_peer           peer;
	char               why[512];

	if (!chd_peers_get(t->peers, r->conn, &peer)) {
		chd_peer_of(p, &peer); /* not recorded (out of memory) */
	}
	if (chd_access_check(t->access, &peer, r->msg, why, sizeof(why)) ==
	    CHAN_OK) {
		return (true);
	}
	if (chd_peers_first_refusal(t->peers, r->conn)) {
		chd_log(CHD_LOG_WARN, "conn %u (pid %d) refused: %s", r->conn,
		    chd_pipe_pid(p), why);
	}
	chd_refuse(c, r, CHAN__V1__STATUS__PERMISSION_DENIED, why);
	return (false);
}

/* A decoded request's message: its buffer serves a later answer. */
static void
chd_nng_msg_free(void *m)
{
	chl_msgpool_put(m);
}

/* A request arrived on c (state BUSY): decode and submit. */
static void
chd_ctx_request(chd_tctx *c, nng_msg *m)
{
	chd_transport *t = c->t;
	chd_req       *r;
	nng_pipe       pipe = nng_msg_get_pipe(m);
	int            pipe_id;

	pipe_id = nng_pipe_id(pipe);
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		nng_msg_free(m);
		chd_ctx_answer(c, CHAN__V1__STATUS__RESOURCE_EXHAUSTED,
		    "daemon out of memory");
		return;
	}
	chl_capped_alloc_init(&r->alloc, t->decode_cap);
	/* Payloads stay in m (no copy): the request frees m when it is freed. */
	chl_capped_alloc_borrow(&r->alloc, m, chd_nng_msg_free);
	/* and big ones may stay there while queued (channel.c, chd_rxbuf). */
	chl_capped_alloc_input_bytes(&r->alloc, nng_msg_body(m), nng_msg_len(m));
	r->msg = chl_request_decode(&r->alloc, nng_msg_body(m), nng_msg_len(m));
	if (r->msg == NULL) {
		free(r);
		chd_log(CHD_LOG_DEBUG, "conn %d: request does not decode",
		    pipe_id);
		chd_ctx_answer(c, CHAN__V1__STATUS__PROTOCOL,
		    "request does not decode as chan.v1.Request");
		return;
	}
	r->conn = pipe_id > 0 ? (uint32_t) pipe_id : UINT32_MAX;
	r->reply = chd_reply;
	r->reply_answer = chd_reply_answer;
	r->owner = c;
	if (t->access != NULL && !chd_request_allowed(c, pipe, r)) {
		return;
	}
	if (!chd_peers_pending_add(t->peers, r->conn, t->max_pending)) {
		chd_refuse(c, r, CHAN__V1__STATUS__RESOURCE_EXHAUSTED,
		    "too many requests in flight on this connection (--max-pending "
		    "limit reached); wait for answers first");
		return;
	}
	chd_engine_submit(t->engine, r);
}

/* Completion of c->aio: a receive or a send, told apart by c->state. */
static void
chd_ctx_cb(void *arg)
{
	chd_tctx      *c = arg;
	chd_transport *t = c->t;
	int            rv = nng_aio_result(c->aio);
	nng_msg       *m;
	chd_tctx      *arm[CHD_RECEIVERS_MAX];
	int            n;

	pthread_mutex_lock(&t->mtx);
	if (c->state == CHD_CTX_SEND) {
		pthread_mutex_unlock(&t->mtx);
		if (rv != 0) {
			/* Not sent (socket closing): the message is still ours. */
			nng_msg_free(nng_aio_get_msg(c->aio));
			nng_aio_set_msg(c->aio, NULL);
		}
		chd_ctx_recycle(c);
		return;
	}
	if (c->state != CHD_CTX_RECV) {
		pthread_mutex_unlock(&t->mtx);
		return;
	}
	t->nrecv--;
	if (rv != 0) {
		if (t->closing || rv == NNG_ECLOSED) {
			c->state = CHD_CTX_DEAD;
			pthread_mutex_unlock(&t->mtx);
			return;
		}
		/* Transient (e.g. NNG_ENOMEM): keep this context receiving. */
		chd_log(CHD_LOG_WARN, "receive failed: %s", nng_strerror(rv));
		c->state = CHD_CTX_RECV;
		t->nrecv++;
		pthread_mutex_unlock(&t->mtx);
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	m = nng_aio_get_msg(c->aio);
	nng_aio_set_msg(c->aio, NULL);
	c->state = CHD_CTX_BUSY;
	t->inflight++;
	n = chd_refill_locked(t, arm);
	pthread_mutex_unlock(&t->mtx);
	chd_arm(arm, n);
	chd_ctx_request(c, m);
}

/* ---- pipes ------------------------------------------------------------ */

/* Per-listener pipe counts (the guard closes emptied zombies). pipe_mtx. */
static void
chd_lpipes_add(chd_transport *t, int id, int d)
{
	size_t n = sizeof(t->lpipes) / sizeof(t->lpipes[0]);
	size_t i, freeslot = n;

	if (id <= 0) {
		return;
	}
	for (i = 0; i < n; i++) {
		if (t->lpipes[i].id == id) {
			break;
		}
		if (t->lpipes[i].id == 0 && freeslot == n) {
			freeslot = i;
		}
	}
	if (i == n) {
		if (d < 0 || freeslot == n) {
			return;
		}
		i = freeslot;
		t->lpipes[i].id = id;
		t->lpipes[i].n = 0;
	}
	if (d > 0) {
		t->lpipes[i].n++;
	} else if (t->lpipes[i].n > 0) {
		t->lpipes[i].n--;
	}
}

static unsigned
chd_lpipes_get(chd_transport *t, int id)
{
	unsigned n = 0;

	pthread_mutex_lock(&t->pipe_mtx);
	for (size_t i = 0; i < sizeof(t->lpipes) / sizeof(t->lpipes[0]); i++) {
		if (t->lpipes[i].id == id) {
			n = t->lpipes[i].n;
			break;
		}
	}
	pthread_mutex_unlock(&t->pipe_mtx);
	return (n);
}

static void
chd_lpipes_forget(chd_transport *t, int id)
{
	pthread_mutex_lock(&t->pipe_mtx);
	for (size_t i = 0; i < sizeof(t->lpipes) / sizeof(t->lpipes[0]); i++) {
		if (t->lpipes[i].id == id) {
			t->lpipes[i].id = 0;
		}
	}
	pthread_mutex_unlock(&t->pipe_mtx);
}

/*
 * The guard's probe pipes (our own pid) are no clients: remembered here so
 * that their close, too, is kept from the engine. pipe_mtx held.
 */
static bool
chd_self_pipe_take(chd_transport *t, int id)
{
	for (int i = 0; i < CHD_SELF_PIPES; i++) {
		if (t->self_pipes[i] == id) {
			t->self_pipes[i] = 0;
			return (true);
		}
	}
	return (false);
}

/*
 * The peer's pid: only ipc knows it (tcp answers NNG_ENOTSUP). nng 1.5.2
 * stores it as a uint64: nng_pipe_get_int gets NNG_EBADTYPE.
 */
static int
chd_pipe_pid(nng_pipe p)
{
	uint64_t v;

	if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_PID, &v) == 0 && v > 0 &&
	    v <= INT_MAX) {
		return ((int) v);
	}
	return (0);
}

/* What the kernel (ipc) and TLS (tls+tcp) say about the other end. */
static void
chd_peer_of(nng_pipe p, chd_peer *peer)
{
	uint64_t uid, gid;
	bool     verified;

	memset(peer, 0, sizeof(*peer));
	/* SO_PEERCRED; uint64 in nng 1.5.2 like the pid. */
	if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &uid) == 0 &&
	    nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_GID, &gid) == 0 &&
	    uid <= UINT32_MAX && gid <= UINT32_MAX) {
		peer->cred = true;
		peer->uid = (uint32_t) uid;
		peer->gid = (uint32_t) gid;
	}
	/* Only true when --tls-ca made the listener require a client cert. */
	if (nng_pipe_get_bool(p, NNG_OPT_TLS_VERIFIED, &verified) == 0 &&
	    verified) {
		peer->tls_verified = true;
	}
}

/*
 * ADD_PRE, under pipe_mtx, before the pipe can deliver a request: record
 * the peer (read once per connection), or close the pipe when
 * --max-connections are open already. Guard probes are neither counted
 * nor refused. A refused pipe still gets REM_POST (not ADD_POST); it is
 * told apart by not being in t->peers.
 */
/*
 * Records conn's peer unless --max-connections are open already (or no
 * memory): false then, and the refusal is logged. pipe_mtx held.
 */
static bool
chd_conn_admit_locked(chd_transport *t, uint32_t conn, const chd_peer *peer)
{
	int64_t now;

	if ((t->max_conns == 0 || chd_peers_count(t->peers) < t->max_conns) &&
	    chd_peers_put(t->peers, conn, peer) == 0) {
		return (true);
	}
	/* One line per burst: a dialer retries a refused connection. */
	t->refused_since++;
	now = chl_now_mono_ms();
	if (t->refused_log_ms == 0 ||
	    now - t->refused_log_ms >= CHD_REFUSED_LOG_MS) {
		chd_log(CHD_LOG_WARN,
		    "refused %lu connection(s) over the --max-connections limit "
		    "(%u open); next report in %d s at the earliest",
		    t->refused_since, t->max_conns, CHD_REFUSED_LOG_MS / 1000);
		t->refused_since = 0;
		t->refused_log_ms = now;
	}
	return (false);
}

/* An admitted connection is open (pipe_mtx held): count it, tell. */
static void
chd_conn_opened_locked(chd_transport *t, uint32_t conn, int pid)
{
	t->conns++;
	if (t->engine_live) {
		chd_engine_conn_open(t->engine, conn, pid);
	}
	chd_log(CHD_LOG_DEBUG, "conn %u opened (pid %d)", conn, pid);
}

/* conn went away (pipe_mtx held). false: it was never admitted. */
static bool
chd_conn_closed_locked(chd_transport *t, uint32_t conn)
{
	if (!chd_peers_del(t->peers, conn)) {
		return (false);
	}
	if (t->conns > 0 && --t->conns == 0) {
		pthread_cond_broadcast(&t->pipe_cv);
	}
	if (t->engine_live) {
		chd_engine_conn_close(t->engine, conn);
	}
	chd_log(CHD_LOG_DEBUG, "conn %u closed", conn);
	return (true);
}

static void
chd_pipe_admit(chd_transport *t, nng_pipe p, uint32_t conn)
{
	chd_peer peer;

	if (chd_pipe_pid(p) == (int) getpid()) {
		return;
	}
	chd_peer_of(p, &peer);
	if (!chd_conn_admit_locked(t, conn, &peer)) {
		(void) nng_pipe_close(p);
	}
}

/* nng's pipe callback: never touches the socket, only the engine. */
static void
chd_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	chd_transport *t = arg;
	int            id = nng_pipe_id(p);
	int            pid = 0;
	uint32_t       conn = id > 0 ? (uint32_t) id : UINT32_MAX;

	pthread_mutex_lock(&t->pipe_mtx);
	if (ev == NNG_PIPE_EV_ADD_PRE) {
		chd_pipe_admit(t, p, conn);
	} else if (ev == NNG_PIPE_EV_ADD_POST) {
		pid = chd_pipe_pid(p);
		if (pid == (int) getpid() && id > 0) {
			/* A guard probe: the listener is alive, nothing else. */
			t->self_pipes[t->self_next++ % CHD_SELF_PIPES] = id;
			t->self_added++;
			pthread_cond_broadcast(&t->pipe_cv);
			pthread_mutex_unlock(&t->pipe_mtx);
			return;
		}
		chd_lpipes_add(t, nng_listener_id(nng_pipe_listener(p)), 1);
		chd_conn_opened_locked(t, conn, pid);
	} else if (ev == NNG_PIPE_EV_REM_POST) {
		/* A guard probe, or refused at ADD_PRE: never opened. */
		if (!chd_self_pipe_take(t, id) && chd_conn_closed_locked(t, conn)) {
			chd_lpipes_add(t, nng_listener_id(nng_pipe_listener(p)),
			    -1);
		}
	}
	pthread_mutex_unlock(&t->pipe_mtx);
}

/* ---- chand's own listener's hooks (sps.h) ------------------------------ */

static bool
chd_sps_admit(void *arg, uint32_t conn, const chd_peer *peer)
{
	chd_transport *t = arg;
	bool           ok;

	pthread_mutex_lock(&t->pipe_mtx);
	ok = chd_conn_admit_locked(t, conn, peer);
	pthread_mutex_unlock(&t->pipe_mtx);
	return (ok);
}

static void
chd_sps_opened(void *arg, uint32_t conn, int pid)
{
	chd_transport *t = arg;

	pthread_mutex_lock(&t->pipe_mtx);
	chd_conn_opened_locked(t, conn, pid);
	pthread_mutex_unlock(&t->pipe_mtx);
}

static void
chd_sps_closed(void *arg, uint32_t conn)
{
	chd_transport *t = arg;

	pthread_mutex_lock(&t->pipe_mtx);
	(void) chd_conn_closed_locked(t, conn);
	pthread_mutex_unlock(&t->pipe_mtx);
}

static void
chd_sps_inflight(void *arg, int delta)
{
	chd_transport *t = arg;

	pthread_mutex_lock(&t->mtx);
	if (delta > 0) {
		t->inflight++;
	} else if (t->inflight > 0 && --t->inflight == 0) {
		pthread_cond_broadcast(&t->cv);
	}
	pthread_mutex_unlock(&t->mtx);
}

static int
chd_sps_open(chd_transport *t, const chd_transport_opts *o, char *err,
    size_t errlen)
{
	chd_sps_opts so;

	memset(&so, 0, sizeof(so));
	so.engine = t->engine;
	so.peers = t->peers;
	so.access = t->access;
	so.recv_max = o->recv_max;
	so.decode_cap = o->decode_cap;
	so.max_pending = o->max_pending;
	so.socket_mode = o->socket_mode;
	so.socket_gid = o->socket_gid;
	so.hooks = (chd_sps_hooks) { .arg = t, .admit = chd_sps_admit,
		.opened = chd_sps_opened, .closed = chd_sps_closed,
		.inflight = chd_sps_inflight };
	return (chd_sps_new(&so, &t->sps, err, errlen));
}

unsigned
chd_transport_connections(chd_transport *t)
{
	unsigned n;

	pthread_mutex_lock(&t->pipe_mtx);
	n = t->conns;
	pthread_mutex_unlock(&t->pipe_mtx);
	return (n);
}

/* ---- socket and listeners --------------------------------------------- */

int
chd_transport_open(chd_engine *e, const chd_transport_opts *o,
    chd_transport **out, char *err, size_t errlen)
{
	chd_transport *t;
	int            rv;

	if ((t = calloc(1, sizeof(*t))) == NULL) {
		chd_errf(err, errlen, "out of memory");
		return (-1);
	}
	t->engine = e;
	t->engine_live = true;
	t->decode_cap = o->decode_cap;
	t->receivers = o->receivers > 0 ? o->receivers : 4;
	if (t->receivers > CHD_RECEIVERS_MAX) {
		t->receivers = CHD_RECEIVERS_MAX;
	}
	t->socket_mode = o->socket_mode;
	t->tls_cert = o->tls_cert;
	t->tls_key = o->tls_key;
	t->tls_ca = o->tls_ca;
	t->socket_gid = o->socket_gid;
	t->socket_dir_mode = o->socket_dir_mode > 0 ? o->socket_dir_mode : 0750;
	t->access = chd_access_enabled(o->access) ? o->access : NULL;
	t->max_conns = o->max_conns;
	t->max_pending = o->max_pending;
	if ((t->peers = chd_peers_new()) == NULL) {
		free(t);
		chd_errf(err, errlen, "out of memory");
		return (-1);
	}
	pthread_mutex_init(&t->mtx, NULL);
	pthread_cond_init(&t->cv, NULL);
	pthread_mutex_init(&t->pipe_mtx, NULL);
	pthread_cond_init(&t->pipe_cv, NULL);
	pthread_mutex_init(&t->lsn_mtx, NULL);
	pthread_cond_init(&t->guard_cv, NULL);

	if ((rv = nng_rep0_open(&t->sock)) != 0) {
		chd_errf(err, errlen, "cannot open an nng REP socket: %s",
		    nng_strerror(rv));
		goto fail;
	}
	/* nng 1.5.2 otherwise allocates whatever length a peer declares. */
	if ((rv = nng_socket_set_size(t->sock, NNG_OPT_RECVMAXSZ, o->recv_max)) !=
	        0 ||
	    (rv = nng_pipe_notify(t->sock, NNG_PIPE_EV_ADD_PRE, chd_pipe_cb,
	         t)) != 0 ||
	    (rv = nng_pipe_notify(t->sock, NNG_PIPE_EV_ADD_POST, chd_pipe_cb,
	         t)) != 0 ||
	    (rv = nng_pipe_notify(t->sock, NNG_PIPE_EV_REM_POST, chd_pipe_cb,
	         t)) != 0) {
		chd_errf(err, errlen, "cannot set up the nng socket: %s",
		    nng_strerror(rv));
		nng_close(t->sock);
		goto fail;
	}
	if (o->sp_direct && chd_sps_open(t, o, err, errlen) != 0) {
		nng_close(t->sock);
		goto fail;
	}
	*out = t;
	return (0);

fail:
	pthread_mutex_destroy(&t->mtx);
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->pipe_mtx);
	pthread_cond_destroy(&t->pipe_cv);
	pthread_mutex_destroy(&t->lsn_mtx);
	pthread_cond_destroy(&t->guard_cv);
	chd_peers_free(t->peers);
	free(t);
	return (-1);
}

/*
 * mkdir -p of path's parent directory: 0755 for the parents it creates,
 * 0700 for the socket's own directory (*created: it did), which gets its
 * group and --socket-dir-mode only once the socket is in place.
 */
static int
chd_mkdir_parent(const char *path, bool *created, char *err, size_t errlen)
{
	char  dir[PATH_MAX];
	char *slash;

	if (strlen(path) >= sizeof(dir)) {
		chd_errf(err, errlen, "path too long");
		return (-1);
	}
	strcpy(dir, path);
	if ((slash = strrchr(dir, '/')) == NULL || slash == dir) {
		return (0);
	}
	*slash = '\0';
	for (char *p = dir + 1; *p != '\0'; p++) {
		if (*p != '/') {
			continue;
		}
		*p = '\0';
		if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
			chd_errf(err, errlen, "cannot create directory %s: %s", dir,
			    strerror(errno));
			return (-1);
		}
		*p = '/';
	}
	if (mkdir(dir, 0700) == 0) {
		*created = true;
	} else if (errno != EEXIST) {
		chd_errf(err, errlen, "cannot create directory %s: %s", dir,
		    strerror(errno));
		return (-1);
	}
	return (0);
}

/*
 * Asks whatever listens on url for a Ping, over nng (a raw connect and
 * close would trip nng #1518 in a live 1.5.2 daemon). Returns 0 when a
 * chand answered, NNG_ECONNREFUSED when nothing listens, NNG_ETIMEDOUT
 * when something accepted but gave no chan.v1 answer, else the error.
 */
static int
chd_probe(const char *url)
{
	nng_socket          s;
	Chan__V1__Request   req = CHAN__V1__REQUEST__INIT;
	Chan__V1__Ping      ping = CHAN__V1__PING__INIT;
	Chan__V1__Response *resp;
	chl_capped_alloc    ca;
	uint8_t             buf[32];
	void               *ans = NULL;
	size_t              anslen;
	int                 rv;

	if ((rv = nng_req0_open(&s)) != 0) {
		return (rv);
	}
	(void) nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, CHD_PROBE_TIMEOUT_MS);
	(void) nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, CHD_PROBE_TIMEOUT_MS);
	(void) nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 65536);
	if ((rv = nng_dial(s, url, NULL, 0)) != 0) {
		goto out;
	}
	req.has_id = 1;
	req.id = 1;
	req.op_case = CHAN__V1__REQUEST__OP_PING;
	req.ping = &ping;
	if ((rv = nng_send(s, buf, chan__v1__request__pack(&req, buf), 0)) !=
	        0 ||
	    (rv = nng_recv(s, &ans, &anslen, NNG_FLAG_ALLOC)) != 0) {
		rv = NNG_ETIMEDOUT;
		goto out;
	}
	chl_capped_alloc_init(&ca, 65536);
	resp = chl_response_decode(&ca, ans, anslen);
	rv = resp != NULL ? 0 : NNG_ETIMEDOUT;
	chl_response_free(&ca, resp);
	nng_free(ans, anslen);
out:
	nng_close(s);
	return (rv);
}

/* Existing socket file at path: remove it if stale, refuse if alive. */
static int
chd_ipc_prepare(const char *url, const char *path, bool *created, char *err,
    size_t errlen)
{
	struct stat st;
	int         rv;

	if (chd_mkdir_parent(path, created, err, errlen) != 0) {
		char why[512];

		snprintf(why, sizeof(why), "%s", err);
		chd_errf(err, errlen, "cannot listen on %s: %s", url, why);
		return (-1);
	}
	if (lstat(path, &st) != 0) {
		return (0); /* nothing there (or unreadable: listen will say) */
	}
	if (!S_ISSOCK(st.st_mode)) {
		chd_errf(err, errlen,
		    "cannot listen on %s: %s exists and is not a socket", url,
		    path);
		return (-1);
	}
	switch ((rv = chd_probe(url))) {
	case 0:
		chd_errf(err, errlen, "another chand is listening on %s", url);
		return (-1);
	case NNG_ECONNREFUSED:
	case NNG_ENOENT:
		/* A crashed daemon's leftover: nobody will ever answer. */
		if (unlink(path) != 0 && errno != ENOENT) {
			chd_errf(err, errlen,
			    "cannot listen on %s: cannot remove stale socket: %s",
			    url, strerror(errno));
			return (-1);
		}
		chd_log(CHD_LOG_INFO, "removed stale socket %s (nothing answered)",
		    path);
		return (0);
	case NNG_ETIMEDOUT:
		chd_errf(err, errlen,
		    "cannot listen on %s: a process is listening there and does "
		    "not answer as chand",
		    url);
		return (-1);
	default:
		chd_errf(err, errlen,
		    "cannot listen on %s: socket exists and probing it failed: %s",
		    url, nng_strerror(rv));
		return (-1);
	}
}

/* Reads a whole (small) PEM file into a NUL-terminated string. */
static char *
chd_read_file(const char *path, char *err, size_t errlen)
{
	FILE  *f;
	char  *buf = NULL;
	size_t len = 0, cap = 0, n;

	if ((f = fopen(path, "r")) == NULL) {
		chd_errf(err, errlen, "%s: %s", path, strerror(errno));
		return (NULL);
	}
	do {
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap + 65536);

			if (nb == NULL || cap > (1u << 24)) {
				free(nb != NULL ? nb : buf);
				fclose(f);
				chd_errf(err, errlen, "%s: too large", path);
				return (NULL);
			}
			buf = nb;
			cap += 65536;
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = '\0';
	return (buf);
}

/*
 * --tls-ca: every client must present a certificate that CA signed, or
 * its handshake fails (it never reaches the socket). On failure frees
 * t->tls.
 */
static int
chd_tls_client_auth(chd_transport *t, char *err, size_t errlen)
{
	int rv;

	if (t->tls_ca == NULL) {
		return (0);
	}
	if ((rv = nng_tls_config_ca_file(t->tls, t->tls_ca)) != 0 ||
	    (rv = nng_tls_config_auth_mode(t->tls,
	         NNG_TLS_AUTH_MODE_REQUIRED)) != 0) {
		chd_errf(err, errlen, "TLS CA file %s: %s", t->tls_ca,
		    nng_strerror(rv));
		nng_tls_config_free(t->tls);
		t->tls = NULL;
		return (-1);
	}
	return (0);
}

static int
chd_tls_setup(chd_transport *t, char *err, size_t errlen)
{
	char  why[600];
	char *cert = NULL, *key = NULL;
	int   rv;

	if (t->tls != NULL) {
		return (0);
	}
	if (t->tls_cert == NULL) {
		chd_errf(err, errlen, "no --tls-cert given");
		return (-1);
	}
	if ((rv = nng_tls_config_alloc(&t->tls, NNG_TLS_MODE_SERVER)) != 0) {
		chd_errf(err, errlen, "TLS: %s", nng_strerror(rv));
		return (-1);
	}
	if (t->tls_key == NULL) {
		rv = nng_tls_config_cert_key_file(t->tls, t->tls_cert, NULL);
		if (rv != 0) {
			chd_errf(err, errlen, "TLS certificate and key %s: %s",
			    t->tls_cert, nng_strerror(rv));
			goto fail;
		}
		return (chd_tls_client_auth(t, err, errlen));
	}
	if ((cert = chd_read_file(t->tls_cert, why, sizeof(why))) == NULL ||
	    (key = chd_read_file(t->tls_key, why, sizeof(why))) == NULL) {
		chd_errf(err, errlen, "TLS: %s", why);
		goto fail;
	}
	if ((rv = nng_tls_config_own_cert(t->tls, cert, key, NULL)) != 0) {
		chd_errf(err, errlen, "TLS certificate %s with key %s: %s",
		    t->tls_cert, t->tls_key, nng_strerror(rv));
		goto fail;
	}
	free(cert);
	free(key);
	return (chd_tls_client_auth(t, err, errlen));
fail:
	free(cert);
	free(key);
	nng_tls_config_free(t->tls);
	t->tls = NULL;
	return (-1);
}

/*
 * nng_listener_start; for ipc with --socket-mode or --socket-group, the
 * socket file never has looser permissions than asked for: nng binds and
 * listens in one step, so the file is created under umask 0177 (0600),
 * then nng applies NNG_OPT_IPC_PERMISSIONS and we the group (and, with no
 * --socket-mode, the mode the old umask gives). No other thread creates
 * files meanwhile. Returns 0, an nng error, or -errno.
 */
static int
chd_listener_start(chd_transport *t, const char *url, nng_listener l)
{
	const char *path = url + 6;
	mode_t      old;
	int         rv;

	if (strncmp(url, "ipc://", 6) != 0 ||
	    (t->socket_mode < 0 && t->socket_gid < 0)) {
		return (nng_listener_start(l, 0));
	}
	old = umask(0177);
	rv = nng_listener_start(l, 0);
	(void) umask(old);
	if (rv != 0) {
		return (rv);
	}
	if (t->socket_gid >= 0 &&
	    chown(path, (uid_t) -1, (gid_t) t->socket_gid) != 0) {
		return (-errno);
	}
	if (t->socket_mode < 0 && chmod(path, 0777 & ~old) != 0) {
		return (-errno);
	}
	return (0);
}

/* Creates and starts one nng listener on url (ipc, tcp or tls+tcp). */
static int
chd_listener_open(chd_transport *t, const char *url, nng_listener *lp,
    char *err, size_t errlen)
{
	nng_listener l;
	char         why[600];
	int          rv;

	if ((rv = nng_listener_create(&l, t->sock, url)) != 0) {
		chd_errf(err, errlen, "cannot listen on %s: %s%s", url,
		    nng_strerror(rv),
		    rv == NNG_ENOTSUP ? " (URL scheme: use ipc://PATH, "
		                        "tcp://HOST:PORT or tls+tcp://HOST:PORT)"
		                      : "");
		return (-1);
	}
	if (strncmp(url, "ipc://", 6) == 0 && t->socket_mode >= 0 &&
	    (rv = nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS,
	         t->socket_mode)) != 0) {
		chd_errf(err, errlen, "cannot listen on %s: socket mode: %s", url,
		    nng_strerror(rv));
		goto fail;
	}
	if (strncmp(url, "tls+tcp://", 10) == 0) {
		if (chd_tls_setup(t, why, sizeof(why)) != 0) {
			chd_errf(err, errlen, "cannot listen on %s: %s", url, why);
			goto fail;
		}
		if ((rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, t->tls)) !=
		    0) {
			chd_errf(err, errlen, "cannot listen on %s: TLS: %s", url,
			    nng_strerror(rv));
			goto fail;
		}
	}
	if ((rv = chd_listener_start(t, url, l)) != 0) {
		chd_errf(err, errlen, "cannot listen on %s: %s", url,
		    rv > 0 ? nng_strerror(rv) : strerror(-rv));
		goto fail;
	}
	*lp = l;
	return (0);
fail:
	(void) nng_listener_close(l);
	return (-1);
}

/* The socket directory we created: its group, then its mode. */
static int
chd_socket_dir_finish(chd_transport *t, const char *url, char *err,
    size_t errlen)
{
	char  dir[PATH_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", url + 6);
	if ((slash = strrchr(dir, '/')) == NULL || slash == dir) {
		return (0);
	}
	*slash = '\0';
	if ((t->socket_gid >= 0 &&
	        chown(dir, (uid_t) -1, (gid_t) t->socket_gid) != 0) ||
	    chmod(dir, (mode_t) t->socket_dir_mode) != 0) {
		chd_errf(err, errlen, "cannot listen on %s: directory %s: %s",
		    url, dir, strerror(errno));
		return (-1);
	}
	chd_log(CHD_LOG_INFO, "created directory %s (mode %04o)", dir,
	    (unsigned) t->socket_dir_mode);
	return (0);
}

/* chd_transport_listen's path for a URL chand serves itself (sps.h). */
static int
chd_direct_listen(chd_transport *t, const char *url, bool created, char *err,
    size_t errlen)
{
	chd_lsn *ls = &t->lsn[t->nlsn];
	unsigned port;
	char     why[512];

	if (chd_sps_listen(t->sps, url, &port, why, sizeof(why)) != 0) {
		chd_errf(err, errlen, "cannot listen on %s: %s", url, why);
		return (-1);
	}
	if (created && chd_socket_dir_finish(t, url, err, errlen) != 0) {
		return (-1); /* the listener goes with the others at exit */
	}
	memset(ls, 0, sizeof(*ls));
	if ((ls->url = strdup(url)) == NULL) {
		chd_errf(err, errlen, "cannot listen on %s: out of memory", url);
		return (-1);
	}
	ls->direct = true;
	pthread_mutex_lock(&t->lsn_mtx);
	t->nlsn++;
	pthread_mutex_unlock(&t->lsn_mtx);
	if (port != 0) {
		chd_log(CHD_LOG_INFO, "listening on %s (port %u)", url, port);
	} else {
		chd_log(CHD_LOG_INFO, "listening on %s", url);
	}
	return (0);
}

int
chd_transport_listen(chd_transport *t, const char *url, char *err,
    size_t errlen)
{
	nng_listener l;
	nng_sockaddr sa;
	chd_lsn     *ls;
	bool         created = false;

	if (t->nlsn == CHD_MAX_LISTENERS) {
		chd_errf(err, errlen, "cannot listen on %s: too many listeners",
		    url);
		return (-1);
	}
	if (strncmp(url, "ipc://", 6) == 0 &&
	    chd_ipc_prepare(url, url + 6, &created, err, errlen) != 0) {
		return (-1);
	}
	if (t->sps != NULL && chd_sps_speaks(url)) {
		return (chd_direct_listen(t, url, created, err, errlen));
	}
	if (chd_listener_open(t, url, &l, err, errlen) != 0) {
		return (-1);
	}
	if (created && chd_socket_dir_finish(t, url, err, errlen) != 0) {
		(void) nng_listener_close(l);
		return (-1);
	}
	ls = &t->lsn[t->nlsn];
	if ((ls->url = strdup(url)) == NULL) {
		(void) nng_listener_close(l);
		chd_errf(err, errlen, "cannot listen on %s: out of memory", url);
		return (-1);
	}
	ls->path = strncmp(url, "ipc://", 6) == 0 ? ls->url + 6 : NULL;
	ls->l = l;
	pthread_mutex_lock(&t->lsn_mtx);
	t->nlsn++;
	pthread_mutex_unlock(&t->lsn_mtx);

	/* Port 0 asks for any free port: say which one we got. */
	if (nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa) == 0 &&
	    sa.s_family == NNG_AF_INET) {
		chd_log(CHD_LOG_INFO, "listening on %s (port %u)", url,
		    (unsigned) ntohs(sa.s_in.sa_port));
	} else if (nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa) == 0 &&
	    sa.s_family == NNG_AF_INET6) {
		chd_log(CHD_LOG_INFO, "listening on %s (port %u)", url,
		    (unsigned) ntohs(sa.s_in6.sa_port));
	} else {
		chd_log(CHD_LOG_INFO, "listening on %s", url);
	}
	return (0);
}

/* ---- nng #1518, prevention ---------------------------------------------- */

/*
 * nng 1.5.2 writes its 8-byte SP header as soon as it accepts a
 * connection. When the peer has already hung up (a bare connect+close),
 * sendmsg fails with EPIPE, which nng turns into NNG_ECLOSED; the ipc
 * transport hands that handshake error to the socket's listener, which
 * takes it for its own closing and never asks for a connection again
 * (nanomsg/nng#1518; 1.6 reports it as NNG_ECONNSHUT instead). ECONNRESET
 * says the same thing about the peer, and nng's listener answers it by
 * asking for the next connection at once. chand defines sendmsg so that
 * libnng's calls come here (the executable's definition wins symbol
 * lookup; chd_transport_start checks that it does); nothing else in chand
 * calls sendmsg but sd_notify, which ignores the result.
 */
ssize_t
sendmsg(int fd, const struct msghdr *msg, int flags)
{
	long n = syscall(SYS_sendmsg, fd, msg, flags);

	if (n < 0 && errno == EPIPE) {
		errno = ECONNRESET;
	}
	return ((ssize_t) n);
}

/* ---- the ipc listener guard (nng #1518) -------------------------------- */

/*
 * A backstop for a listener that stops accepting anyway (a path to
 * NNG_ECLOSED other than sendmsg's EPIPE, none seen in testing; or the
 * prevention not in effect, see chd_transport_start). Every
 * CHD_GUARD_PERIOD_MS the guard dials each ipc URL and waits for the
 * connection to reach the socket (an ADD_POST pipe event from our own
 * pid). A dead listener's transport still accepts and handshakes, so the
 * dial succeeds and the pipe never appears. Two such probes in a row (0.3
 * s, then 0.7 s, so one slow accept on a loaded machine is no death): the
 * guard starts a new listener on a temporary path in the same directory
 * and rename()s that socket file over the public path, atomically. The
 * dead listener stays open (closing an nng listener closes the connections
 * it accepted, and would unlink the public path), so its established
 * connections keep working.
 *
 * One probe costs one connection, whatever the number of clients (the
 * first version read nng_stats_get every 200 ms, a snapshot of every pipe:
 * 12-15% CPU with 10,000 idle clients). tcp and tls+tcp are not probed:
 * 1.5.2 only pauses those listeners for 100 ms, and the same sendmsg
 * mapping applies to them.
 */

/* Replaces the dead ipc listener of ls. Called from the guard thread. */
static void
chd_listener_replace(chd_transport *t, chd_lsn *ls)
{
	nng_listener nl;
	char         tmp[PATH_MAX], url[PATH_MAX + 8], err[700];
	const char  *slash;
	int          dirlen;

	if (t->nzombies == CHD_MAX_ZOMBIES) {
		chd_log(CHD_LOG_ERROR,
		    "%s stopped accepting (nng bug #1518) and was already replaced "
		    "%d times; restart chand",
		    ls->url, CHD_MAX_ZOMBIES);
		return;
	}
	slash = strrchr(ls->path, '/');
	dirlen = slash != NULL ? (int) (slash - ls->path) : 0;
	snprintf(tmp, sizeof(tmp), "%.*s/.chand.%d.%u", dirlen, ls->path,
	    (int) getpid(), ++t->generation);
	snprintf(url, sizeof(url), "ipc://%s", tmp);
	(void) unlink(tmp);
	if (chd_listener_open(t, url, &nl, err, sizeof(err)) != 0) {
		chd_log(CHD_LOG_ERROR, "%s stopped accepting (nng bug #1518) "
		                       "and no new listener could be opened: %s",
		    ls->url, err);
		return;
	}
	if (rename(tmp, ls->path) != 0) {
		chd_log(CHD_LOG_ERROR,
		    "%s stopped accepting (nng bug #1518); cannot move the new "
		    "socket %s into place: %s",
		    ls->url, tmp, strerror(errno));
		(void) nng_listener_close(nl);
		return;
	}
	pthread_mutex_lock(&t->lsn_mtx);
	t->zombies[t->nzombies].l = ls->l;
	t->zombies[t->nzombies].path = ls->path;
	t->nzombies++;
	ls->l = nl;
	pthread_mutex_unlock(&t->lsn_mtx);
	chd_log(CHD_LOG_WARN,
	    "%s stopped accepting (nng 1.5.2 bug #1518); a new listener "
	    "took over the path (existing connections keep working)",
	    ls->url);
}

#define CHD_PROBE_NOT_ACCEPTED (-1)

/*
 * Dials url and waits for the listener to hand the connection to the
 * socket (a pipe from our own pid appears). Does not depend on how busy
 * the engine is, and never reaches it. 0 when accepted in time,
 * CHD_PROBE_NOT_ACCEPTED when connected but not accepted, else nng's
 * error from the dial (NNG_EAGAIN: the socket's backlog is full, which a
 * #1518 listener never causes, its transport still accepts).
 */
static int
chd_probe_accept(chd_transport *t, const char *url, int timeout_ms)
{
	nng_socket      s;
	struct timespec dl;
	unsigned long   before;
	bool            ok;
	int             rv;

	pthread_mutex_lock(&t->pipe_mtx);
	before = t->self_added;
	pthread_mutex_unlock(&t->pipe_mtx);
	if ((rv = nng_req0_open(&s)) != 0) {
		return (rv);
	}
	if ((rv = nng_dial(s, url, NULL, 0)) != 0) {
		nng_close(s);
		return (rv);
	}
	chd_deadline(&dl, timeout_ms);
	pthread_mutex_lock(&t->pipe_mtx);
	while (t->self_added == before && !t->guard_quit) {
		if (pthread_cond_timedwait(&t->pipe_cv, &t->pipe_mtx, &dl) ==
		    ETIMEDOUT) {
			break;
		}
	}
	ok = t->self_added != before || t->guard_quit;
	pthread_mutex_unlock(&t->pipe_mtx);
	nng_close(s);
	return (ok ? 0 : CHD_PROBE_NOT_ACCEPTED);
}

static bool
chd_guard_stopping(chd_transport *t)
{
	bool stop;

	pthread_mutex_lock(&t->lsn_mtx);
	stop = t->guard_stop;
	pthread_mutex_unlock(&t->lsn_mtx);
	return (stop);
}

/*
 * True when two probes in a row connected and were not accepted. A single
 * slow accept (a loaded machine) is not enough, and a dial that fails says
 * nothing about #1518 (it is logged at debug level).
 */
static bool
chd_listener_stuck(chd_transport *t, const chd_lsn *ls)
{
	for (int i = 0; i < 2; i++) {
		int rv = chd_probe_accept(t, ls->url,
		    i == 0 ? CHD_ACCEPT_PROBE_MS : CHD_ACCEPT_CONFIRM_MS);

		if (rv != CHD_PROBE_NOT_ACCEPTED) {
			if (rv != 0) {
				chd_log(CHD_LOG_DEBUG, "%s: guard probe: %s", ls->url,
				    nng_strerror(rv));
			}
			return (false);
		}
		if (chd_guard_stopping(t)) {
			return (false);
		}
	}
	return (true);
}

/*
 * Closes replaced listeners whose connections are all gone: that also
 * drops the connections stuck in their handshake queue, which would
 * otherwise wait forever. Closing unlinks the public path, so a hard link
 * to the live socket file is put back over it right after.
 */
static void
chd_zombies_reap(chd_transport *t)
{
	for (int i = 0; i < t->nzombies;) {
		chd_zombie *z = &t->zombies[i];
		int         id = nng_listener_id(z->l);
		char        keep[PATH_MAX];

		if (chd_lpipes_get(t, id) > 0) {
			i++;
			continue;
		}
		snprintf(keep, sizeof(keep), "%s.keep.%d", z->path, (int) getpid());
		(void) unlink(keep);
		if (link(z->path, keep) != 0) {
			i++; /* cannot protect the path: keep the zombie */
			continue;
		}
		(void) nng_listener_close(z->l);
		/*
		 * Only the first listener's close unlinks the public path (later
		 * ones were created on a temporary path). When it did not, keep
		 * and path are links to one file, rename does nothing, and the
		 * unlink below drops the extra link.
		 */
		if (rename(keep, z->path) != 0) {
			chd_log(CHD_LOG_ERROR, "cannot restore %s: %s", z->path,
			    strerror(errno));
		}
		(void) unlink(keep);
		chd_lpipes_forget(t, id);
		chd_log(CHD_LOG_DEBUG, "closed replaced listener %d", id);
		pthread_mutex_lock(&t->lsn_mtx);
		t->zombies[i] = t->zombies[--t->nzombies];
		pthread_mutex_unlock(&t->lsn_mtx);
	}
}

static void *
chd_guard_main(void *arg)
{
	chd_transport  *t = arg;
	struct timespec dl;
	sigset_t        all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	pthread_mutex_lock(&t->lsn_mtx);
	while (!t->guard_stop) {
		int n = t->nlsn;

		chd_deadline(&dl, CHD_GUARD_PERIOD_MS);
		(void) pthread_cond_timedwait(&t->guard_cv, &t->lsn_mtx, &dl);
		if (t->guard_stop) {
			break;
		}
		pthread_mutex_unlock(&t->lsn_mtx);
		chd_zombies_reap(t);
		for (int i = 0; i < n && !chd_guard_stopping(t); i++) {
			if (t->lsn[i].path != NULL &&
			    chd_listener_stuck(t, &t->lsn[i]) &&
			    !chd_guard_stopping(t)) {
				chd_listener_replace(t, &t->lsn[i]);
				/* Without connections it can go now, and take
				 * the clients stuck in its queue with it. */
				chd_zombies_reap(t);
			}
		}
		pthread_mutex_lock(&t->lsn_mtx);
	}
	pthread_mutex_unlock(&t->lsn_mtx);
	return (NULL);
}

static void
chd_guard_stop(chd_transport *t)
{
	pthread_mutex_lock(&t->lsn_mtx);
	t->guard_stop = true;
	pthread_cond_broadcast(&t->guard_cv);
	pthread_mutex_unlock(&t->lsn_mtx);
	pthread_mutex_lock(&t->pipe_mtx);
	t->guard_quit = true;
	pthread_cond_broadcast(&t->pipe_cv);
	pthread_mutex_unlock(&t->pipe_mtx);
	if (t->guard_running) {
		(void) pthread_join(t->guard, NULL);
		t->guard_running = false;
	}
}

/* Whether nng serves an ipc:// listener (sps.c's own ones have no path). */
static bool
chd_has_nng_ipc(chd_transport *t)
{
	bool any = false;

	pthread_mutex_lock(&t->lsn_mtx);
	for (int i = 0; i < t->nlsn && !any; i++) {
		any = t->lsn[i].path != NULL;
	}
	pthread_mutex_unlock(&t->lsn_mtx);
	return (any);
}

int
chd_transport_start(chd_transport *t, char *err, size_t errlen)
{
	chd_tctx *arm[CHD_RECEIVERS_MAX];
	int       n;

	pthread_mutex_lock(&t->mtx);
	n = chd_refill_locked(t, arm);
	pthread_mutex_unlock(&t->mtx);
	if (n == 0) {
		chd_errf(err, errlen, "cannot open any nng context");
		return (-1);
	}
	chd_arm(arm, n);
	if (!chd_has_nng_ipc(t)) {
		return (0); /* #1518 is nng's ipc listeners' alone */
	}
	/*
	 * The #1518 prevention needs libnng's sendmsg calls to reach ours; a
	 * static or differently linked build would leave only the guard.
	 */
	if (dlsym(RTLD_DEFAULT, "sendmsg") != (void *) sendmsg) {
		chd_log(CHD_LOG_WARN,
		    "libnng does not use chand's sendmsg: a peer hanging up during "
		    "the handshake can stop an ipc listener (nng 1.5.2 bug #1518) "
		    "until the listener guard replaces it");
	}
	if (pthread_create(&t->guard, NULL, chd_guard_main, t) == 0) {
		t->guard_running = true;
	} else {
		chd_log(CHD_LOG_WARN, "cannot start the listener guard thread");
	}
	return (0);
}

void
chd_transport_stop_listening(chd_transport *t)
{
	chd_guard_stop(t);
	if (t->sps != NULL) {
		chd_sps_stop_listening(t->sps);
	}
	pthread_mutex_lock(&t->lsn_mtx);
	for (int i = 0; i < t->nlsn; i++) {
		if (!t->lsn[i].direct) {
			(void) nng_listener_close(t->lsn[i].l);
		}
		if (t->lsn[i].path != NULL && t->generation > 0) {
			/* A replacement listener only unlinks its temporary path. */
			(void) unlink(t->lsn[i].path);
		}
		free(t->lsn[i].url);
		t->lsn[i].url = NULL;
	}
	t->nlsn = 0;
	for (int i = 0; i < t->nzombies; i++) {
		(void) nng_listener_close(t->zombies[i].l);
	}
	t->nzombies = 0;
	pthread_mutex_unlock(&t->lsn_mtx);
}

bool
chd_transport_drain(chd_transport *t, int timeout_ms)
{
	struct timespec dl;
	bool            done;

	chd_deadline(&dl, timeout_ms);
	pthread_mutex_lock(&t->mtx);
	while (t->inflight > 0) {
		if (pthread_cond_timedwait(&t->cv, &t->mtx, &dl) == ETIMEDOUT) {
			break;
		}
	}
	done = t->inflight == 0;
	pthread_mutex_unlock(&t->mtx);
	return (done);
}

bool
chd_transport_linger(chd_transport *t, int timeout_ms)
{
	struct timespec dl;
	bool            done;

	chd_deadline(&dl, timeout_ms);
	pthread_mutex_lock(&t->pipe_mtx);
	while (t->conns > 0) {
		if (pthread_cond_timedwait(&t->pipe_cv, &t->pipe_mtx, &dl) ==
		    ETIMEDOUT) {
			break;
		}
	}
	done = t->conns == 0;
	pthread_mutex_unlock(&t->pipe_mtx);
	return (done);
}

void
chd_transport_close(chd_transport *t)
{
	pthread_mutex_lock(&t->pipe_mtx);
	t->engine_live = false;
	pthread_mutex_unlock(&t->pipe_mtx);

	pthread_mutex_lock(&t->mtx);
	t->closing = true;
	pthread_mutex_unlock(&t->mtx);
	chd_transport_stop_listening(t);
	chd_sps_close(t->sps);
	(void) nng_close(t->sock);
}

void
chd_transport_free(chd_transport *t)
{
	chd_tctx *c, *next;

	if (t == NULL) {
		return;
	}
	pthread_mutex_lock(&t->mtx);
	c = t->all;
	t->all = NULL;
	pthread_mutex_unlock(&t->mtx);
	for (; c != NULL; c = next) {
		next = c->next;
		nng_aio_stop(c->aio); /* waits for a running callback */
		if (nng_aio_get_msg(c->aio) != NULL) {
			nng_msg_free(nng_aio_get_msg(c->aio));
		}
		nng_aio_free(c->aio);
		free(c);
	}
	chd_sps_free(t->sps);
	if (t->tls != NULL) {
		nng_tls_config_free(t->tls);
	}
	pthread_mutex_destroy(&t->mtx);
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->pipe_mtx);
	pthread_cond_destroy(&t->pipe_cv);
	pthread_mutex_destroy(&t->lsn_mtx);
	pthread_cond_destroy(&t->guard_cv);
	chd_peers_free(t->peers);
	free(t);
}
