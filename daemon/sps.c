/*
 * sps.c - chand's own ipc:// and tcp:// listener (see sps.h for why and
 * for the wire it speaks).
 *
 * Threads: one I/O thread runs a libevent base with the listening sockets
 * and every connection's read event. It reads frames, decodes each
 * request and submits it to the engine. The engine's shard answers from
 * its own thread: the answer is written to the socket right there, under
 * the connection's write lock, when nothing is queued before it; what the
 * socket buffer does not take is queued, and the I/O thread writes it when
 * the socket has room. While a connection has more than CHD_SPS_OUT_HIGH
 * bytes queued (a client that sends and does not read), its requests are
 * not read: the client is slowed down, not the daemon.
 *
 * Lifetime: a connection is held by the I/O thread (until it closes it)
 * and by each of its requests the engine holds (until answered). After
 * the close its answers are dropped: what they handed out stays in
 * custody and goes back to its channel (engine.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, SO_PEERCRED */
#endif
#include "sps.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "msgpool.h"
#include "notify.h"
#include "wire.h"

#define CHD_SPS_REQ 0x30          /* the peer we serve: nng's req0 */
#define CHD_SPS_REP 0x31          /* what we are: rep0 */
#define CHD_SPS_MAX_LISTEN 32
#define CHD_SPS_RBUF (64 * 1024)  /* the I/O thread's read buffer */
#define CHD_SPS_MAX_HOPS 8        /* backtrace words, as nng's maxttl */
#define CHD_SPS_OUT_HIGH (4u * 1024 * 1024) /* stop reading above this */
#define CHD_SPS_OUT_LOW (1u * 1024 * 1024)  /* read again below this */
#define CHD_SPS_SHAKE_MS 10000    /* a peer's handshake, at most */
#define CHD_SPS_ACCEPT_PAUSE_MS 100 /* out of descriptors: retry after */
#define CHD_SPS_STACK_ANSWER 2048 /* answers packed on the stack */
#define CHD_SPS_CONN_BIT 0x80000000u /* our conn ids; nng's are below */

/*
 * Queued answer bytes: copied into bytes[], or (a big answer's body the
 * caller handed over) someone else's, given back with release(owner).
 */
typedef struct chd_spo chd_spo;
struct chd_spo {
	chd_spo       *next;
	const uint8_t *p;
	size_t         len, off;
	void         (*release)(void *);
	void          *owner;
	uint8_t        bytes[];
};

/* The body of an answer and who keeps it alive: a queue takes it over
 * instead of copying it. release NULL: the caller's (copied if queued). */
typedef struct {
	const void *p;
	size_t      len;
	void      (*release)(void *);
	void       *owner;
} chd_spbody;

typedef struct chd_spc chd_spc;
struct chd_spc {
	chd_sps      *s;
	int           fd;
	uint32_t      id;
	bool          tcp;
	int           pid;      /* ipc peer, 0: unknown */
	chd_peer      peer;
	atomic_int    refs;     /* the I/O thread's, and one per request */
	struct event *rev, *wev, *shake_timer;
	chd_spc      *prev, *next; /* s->conns, I/O thread only */

	/* Read side: I/O thread only. */
	bool     shook;         /* the peer's handshake is in */
	bool     admitted;      /* the hooks know it (closed is owed) */
	bool     paused;        /* rev removed: too much queued to write */
	uint8_t  hs[8];
	size_t   hs_got;
	uint8_t  part[9];       /* a frame header cut short by a read */
	size_t   plen;
	nng_msg *big;           /* a frame read straight into its message */
	size_t   big_got;

	/* Write side: any thread, under wmtx. */
	pthread_mutex_t wmtx;
	bool     dead;          /* closed: answers are dropped */
	bool     wev_on;
	chd_spo *outq, *outq_tail;
	size_t   out_bytes;
};

/* A request in the engine: the chd_req and what its answer needs. */
typedef struct {
	chd_req  r;             /* first: the engine's pointer is ours */
	chd_spc *c;
	uint8_t  bt[4 * CHD_SPS_MAX_HOPS]; /* the backtrace, echoed */
	size_t   btlen;
} chd_spr;

typedef struct {
	int           fd;
	char         *path; /* ipc: unlinked on close; NULL for tcp */
	struct event *ev;
	struct event *pause; /* EMFILE: accept again later */
	bool          tcp;
	chd_sps      *s;
} chd_spl;

struct chd_sps {
	chd_sps_opts       o;
	struct event_base *base;
	pthread_t          thr;
	bool               running;
	chd_spl            lsn[CHD_SPS_MAX_LISTEN];
	int                nlsn;
	pthread_mutex_t    mtx;     /* nlsn, next_id */
	uint32_t           next_id;
	chd_spc           *conns;   /* I/O thread only */
	uint8_t            rbuf[CHD_SPS_RBUF]; /* I/O thread's reads */
	int64_t            emfile_log_ms;
};

static void chd_spc_read_cb(evutil_socket_t fd, short what, void *arg);
static void chd_spc_write_cb(evutil_socket_t fd, short what, void *arg);
static void chd_spc_close(chd_spc *c);

bool
chd_sps_speaks(const char *url)
{
	return (strncmp(url, "ipc://", 6) == 0 || strncmp(url, "tcp://", 6) == 0 ||
	    strncmp(url, "tcp4://", 7) == 0 || strncmp(url, "tcp6://", 7) == 0);
}

static void
chd_put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t) v;
		v >>= 8;
	}
}

static uint64_t
chd_get_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++) {
		v = (v << 8) | p[i];
	}
	return (v);
}

/* ---- connections: lifetime -------------------------------------------- */

static void
chd_spo_free(chd_spo *o)
{
	if (o->release != NULL) {
		o->release(o->owner);
	}
	free(o);
}

static void
chd_spc_unref(chd_spc *c)
{
	chd_spo *o, *next;

	if (atomic_fetch_sub(&c->refs, 1) != 1) {
		return;
	}
	for (o = c->outq; o != NULL; o = next) {
		next = o->next;
		chd_spo_free(o);
	}
	if (c->big != NULL) {
		chl_msgpool_put(c->big);
	}
	pthread_mutex_destroy(&c->wmtx);
	free(c);
}

/*
 * I/O thread: the connection is over (EOF, an error, a protocol
 * violation, shutdown). The descriptor is closed under the write lock so
 * that no engine thread writes to a number the kernel gives out again.
 */
static void
chd_spc_close(chd_spc *c)
{
	chd_sps *s = c->s;

	/* Once dead, no engine thread touches the events or the fd. */
	pthread_mutex_lock(&c->wmtx);
	c->dead = true;
	pthread_mutex_unlock(&c->wmtx);
	if (c->rev != NULL) {
		event_free(c->rev);
	}
	if (c->wev != NULL) {
		event_free(c->wev);
	}
	if (c->shake_timer != NULL) {
		event_free(c->shake_timer);
	}
	(void) close(c->fd);
	c->fd = -1;
	if (c->prev != NULL) {
		c->prev->next = c->next;
	} else {
		s->conns = c->next;
	}
	if (c->next != NULL) {
		c->next->prev = c->prev;
	}
	if (c->admitted && s->o.hooks.closed != NULL) {
		s->o.hooks.closed(s->o.hooks.arg, c->id);
	}
	chd_spc_unref(c);
}

/* ---- connections: writing ---------------------------------------------- */

static void
chd_spc_append(chd_spc *c, chd_spo *o)
{
	if (c->outq_tail != NULL) {
		c->outq_tail->next = o;
	} else {
		c->outq = o;
	}
	c->outq_tail = o;
	c->out_bytes += o->len;
}

/*
 * Queues what is left of iov[0..n) after skip bytes were written. The
 * last piece is the body b: taken over (b->release) when the caller can
 * hand it, else copied with the rest. wmtx held. false: no memory (the
 * body is still the caller's). *taken: the queue owns the body now.
 */
static bool
chd_spc_queue(chd_spc *c, const struct iovec *iov, int n, size_t skip,
    const chd_spbody *b, bool *taken)
{
	bool     ref = b->release != NULL && b->len > 0; /* by reference */
	size_t   copied = 0, copy, at = 0; /* bytes of the pieces copied */
	chd_spo *o = NULL, *ob = NULL;

	for (int i = 0; i < (ref ? n - 1 : n); i++) {
		copied += iov[i].iov_len;
	}
	/* What was written comes off the front of the copied pieces first. */
	copy = skip < copied ? copied - skip : 0;
	if ((copy > 0 && (o = malloc(sizeof(*o) + copy)) == NULL) ||
	    (ref && (ob = malloc(sizeof(*ob))) == NULL)) {
		free(o);
		return (false);
	}
	for (int i = 0; i < n; i++) {
		size_t         l = iov[i].iov_len;
		const uint8_t *p = iov[i].iov_base;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		if (i == n - 1 && ref) {
			break; /* skip: how much of the body went out */
		}
		memcpy(o->bytes + at, p + skip, l - skip);
		at += l - skip;
		skip = 0;
	}
	if (o != NULL) {
		o->next = NULL;
		o->p = o->bytes;
		o->len = at;
		o->off = 0;
		o->release = NULL;
		chd_spc_append(c, o);
	}
	*taken = ref;
	if (ref) {
		ob->next = NULL;
		ob->p = (const uint8_t *) b->p + skip;
		ob->len = b->len - skip;
		ob->off = 0;
		ob->release = b->release;
		ob->owner = b->owner;
		chd_spc_append(c, ob);
	}
	return (true);
}

/*
 * A write failed for good: the peer is gone or broken. Shut the socket
 * down (not closed: the I/O thread owns the descriptor), so its read event
 * sees the end and closes the connection. wmtx held.
 */
static void
chd_spc_broken(chd_spc *c)
{
	c->dead = true;
	(void) shutdown(c->fd, SHUT_RDWR);
}

/*
 * Writes one frame (header, backtrace, body): now, from the calling
 * thread, when nothing is queued; whatever the socket does not take is
 * queued for the I/O thread. The body's owner is given back (release)
 * once it is written, dropped or queued by copy. Any thread.
 */
static void
chd_spc_write(chd_spc *c, const uint8_t *bt, size_t btlen,
    const chd_spbody *b)
{
	uint8_t       hdr[9];
	size_t        hlen = 0, total, len = b->len;
	struct iovec  iov[3];
	struct msghdr mh;
	ssize_t       n = 0;
	bool          taken = false;

	if (!c->tcp) {
		hdr[hlen++] = 0x01;
	}
	chd_put_be64(hdr + hlen, (uint64_t) (btlen + len));
	hlen += 8;
	iov[0] = (struct iovec) { .iov_base = hdr, .iov_len = hlen };
	iov[1] = (struct iovec) { .iov_base = (void *) bt, .iov_len = btlen };
	iov[2] = (struct iovec) { .iov_base = (void *) b->p, .iov_len = len };
	total = hlen + btlen + len;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = 3;

	pthread_mutex_lock(&c->wmtx);
	if (c->dead) {
		goto out;
	}
	if (c->outq == NULL) {
		do {
			n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		} while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			chd_spc_broken(c);
			goto out;
		}
		if (n < 0) {
			n = 0;
		}
		if ((size_t) n == total) {
			goto out;
		}
	}
	if (!chd_spc_queue(c, iov, 3, (size_t) n, b, &taken)) {
		/* Half an answer cannot be taken back: the frame is cut. */
		chd_log(CHD_LOG_WARN, "conn %u: out of memory queueing an answer; "
		    "dropping the connection", c->id);
		chd_spc_broken(c);
		goto out;
	}
	if (!c->wev_on) {
		c->wev_on = true;
		(void) event_add(c->wev, NULL);
	}
out:
	pthread_mutex_unlock(&c->wmtx);
	if (!taken && b->release != NULL) {
		b->release(b->owner);
	}
}

/* I/O thread: the socket has room for what is queued. */
static void
chd_spc_write_cb(evutil_socket_t fd, short what, void *arg)
{
	chd_spc *c = arg;
	bool     resume = false;

	(void) what;
	pthread_mutex_lock(&c->wmtx);
	while (!c->dead && c->outq != NULL) {
		chd_spo *o = c->outq;
		ssize_t  n = send(fd, o->p + o->off, o->len - o->off,
		     MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			break;
		}
		if (n < 0) {
			chd_spc_broken(c);
			break;
		}
		o->off += (size_t) n;
		c->out_bytes -= (size_t) n;
		if (o->off == o->len) {
			c->outq = o->next;
			if (c->outq == NULL) {
				c->outq_tail = NULL;
			}
			chd_spo_free(o);
		}
	}
	if (c->outq == NULL || c->dead) {
		c->wev_on = false;
		(void) event_del(c->wev);
	}
	/* A broken connection reads again too: its end closes it. */
	resume = c->paused && (c->dead || c->out_bytes < CHD_SPS_OUT_LOW);
	pthread_mutex_unlock(&c->wmtx);
	if (resume) {
		c->paused = false;
		(void) event_add(c->rev, NULL);
	}
}

/* ---- answers ------------------------------------------------------------ */

static void
chd_spr_done(chd_spr *q)
{
	chd_spc *c = q->c;
	chd_sps *s = c->s;

	chl_request_free(&q->r.alloc, q->r.msg);
	free(q);
	if (s->o.hooks.inflight != NULL) {
		s->o.hooks.inflight(s->o.hooks.arg, -1);
	}
	chd_spc_unref(c);
}

/* Packs resp and writes it. Small answers never touch the heap. */
static void
chd_spr_write_resp(chd_spr *q, const Chan__V1__Response *resp, bool batch)
{
	uint8_t    stack[CHD_SPS_STACK_ANSWER], *buf = stack;
	chl_packer pk;
	size_t     n;

	n = chl_packer_init(&pk, resp, batch);
	if (n > sizeof(stack) && (buf = malloc(n)) == NULL) {
		Chan__V1__Response small;

		chl_packer_fini(&pk);
		chd_response_oom(&small, resp);
		n = chan__v1__response__pack(&small, stack);
		chd_spc_write(q->c, q->bt, q->btlen,
		    &(chd_spbody) { .p = stack, .len = n });
		return;
	}
	(void) chl_packer_write(&pk, buf);
	chl_packer_fini(&pk);
	/* A heap answer is handed over: queued, it is not copied again. */
	chd_spc_write(q->c, q->bt, q->btlen, &(chd_spbody) { .p = buf,
	    .len = n, .release = buf != stack ? free : NULL, .owner = buf });
}

/* r->reply: the engine's answer, from any engine thread. */
static void
chd_spr_reply(chd_req *r, const Chan__V1__Response *resp)
{
	chd_spr *q = (chd_spr *) r;

	/* Before the write: the client may ask again as soon as it reads. */
	chd_peers_pending_done(q->c->s->o.peers, r->conn);
	/* resp may point into r->msg (names): written before the free. */
	chd_spr_write_resp(q, resp, chd_req_wants_batch(r));
	chd_spr_done(q);
}

static void
chd_spc_answer_release(void *a)
{
	chd_answer_unref(a);
}

/* r->reply_answer: already packed; written from the engine's bytes. */
static void
chd_spr_reply_answer(chd_req *r, chd_answer *a, chan_status st,
    uint64_t delivery)
{
	chd_spr *q = (chd_spr *) r;

	(void) st;
	(void) delivery;
	chd_peers_pending_done(q->c->s->o.peers, r->conn);
	chd_spc_write(q->c, q->bt, q->btlen, &(chd_spbody) { .p = a->bytes,
	    .len = a->len, .release = chd_spc_answer_release, .owner = a });
	chd_spr_done(q);
}

/* Answers q without the engine (its id when it decoded) and frees it. */
static void
chd_spr_refuse(chd_spr *q, Chan__V1__Status st, const char *why)
{
	Chan__V1__Response resp = CHAN__V1__RESPONSE__INIT;

	if (q->r.msg != NULL) {
		resp.has_id = q->r.msg->has_id;
		resp.id = q->r.msg->id;
	}
	resp.has_status = 1;
	resp.status = st;
	resp.error = (char *) why;
	chd_spr_write_resp(q, &resp, false);
	chd_spr_done(q);
}

/* ---- requests ----------------------------------------------------------- */

static void
chd_spc_msg_free(void *m)
{
	chl_msgpool_put(m);
}

/*
 * The backtrace: 32-bit words up to the first with its top bit set (the
 * request id). 0 when there is none within CHD_SPS_MAX_HOPS words.
 */
static size_t
chd_backtrace_len(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < CHD_SPS_MAX_HOPS && (i + 1) * 4 <= len; i++) {
		if ((p[i * 4] & 0x80) != 0) {
			return ((i + 1) * 4);
		}
	}
	return (0);
}

/* Access control, as transport.c's for nng. true: may go on. */
static bool
chd_spr_allowed(chd_spr *q)
{
	chd_sps *s = q->c->s;
	chd_peer peer;
	char     why[512];

	if (!chd_peers_get(s->o.peers, q->r.conn, &peer)) {
		peer = q->c->peer;
	}
	if (chd_access_check(s->o.access, &peer, q->r.msg, why, sizeof(why)) ==
	    CHAN_OK) {
		return (true);
	}
	if (chd_peers_first_refusal(s->o.peers, q->r.conn)) {
		chd_log(CHD_LOG_WARN, "conn %u (pid %d) refused: %s", q->r.conn,
		    q->c->pid, why);
	}
	chd_spr_refuse(q, CHAN__V1__STATUS__PERMISSION_DENIED, why);
	return (false);
}

/* A whole frame m (owned) arrived on c: decode and submit. I/O thread. */
static void
chd_spc_request(chd_spc *c, nng_msg *m)
{
	chd_sps *s = c->s;
	uint8_t *body = nng_msg_body(m);
	size_t   len = nng_msg_len(m), btlen;
	chd_spr *q;

	if ((btlen = chd_backtrace_len(body, len)) == 0) {
		/* nng's REP drops these too: there is no id to answer to. */
		chd_log(CHD_LOG_DEBUG, "conn %u: request without a request id",
		    c->id);
		chl_msgpool_put(m);
		return;
	}
	if ((q = calloc(1, sizeof(*q))) == NULL) {
		chl_msgpool_put(m);
		chd_log(CHD_LOG_WARN, "conn %u: out of memory for a request", c->id);
		return;
	}
	q->c = c;
	memcpy(q->bt, body, btlen);
	q->btlen = btlen;
	q->r.conn = c->id;
	q->r.reply = chd_spr_reply;
	q->r.reply_answer = chd_spr_reply_answer;
	q->r.owner = q;
	atomic_fetch_add(&c->refs, 1);
	if (s->o.hooks.inflight != NULL) {
		s->o.hooks.inflight(s->o.hooks.arg, 1);
	}
	chl_capped_alloc_init(&q->r.alloc, s->o.decode_cap);
	/* Payloads stay in m (no copy): freed with the request. */
	chl_capped_alloc_borrow(&q->r.alloc, m, chd_spc_msg_free);
	chl_capped_alloc_input_bytes(&q->r.alloc, body + btlen, len - btlen);
	if ((q->r.msg = chl_request_decode(&q->r.alloc, body + btlen,
	    len - btlen)) == NULL) {
		chd_log(CHD_LOG_DEBUG, "conn %u: request does not decode", c->id);
		chd_spr_refuse(q, CHAN__V1__STATUS__PROTOCOL,
		    "request does not decode as chan.v1.Request");
		return;
	}
	if (s->o.access != NULL && !chd_spr_allowed(q)) {
		return;
	}
	if (!chd_peers_pending_add(s->o.peers, c->id, s->o.max_pending)) {
		chd_spr_refuse(q, CHAN__V1__STATUS__RESOURCE_EXHAUSTED,
		    "too many requests in flight on this connection (--max-pending "
		    "limit reached); wait for answers first");
		return;
	}
	chd_engine_submit(s->o.engine, &q->r);
}

/* ---- connections: reading ---------------------------------------------- */

/* The peer's 8 bytes: nng's req0 over SP. Then the hooks hear of it. */
static bool
chd_spc_shake(chd_spc *c)
{
	chd_sps *s = c->s;
	uint16_t proto = (uint16_t) ((c->hs[4] << 8) | c->hs[5]);

	if (c->hs[0] != 0 || c->hs[1] != 'S' || c->hs[2] != 'P' ||
	    c->hs[3] != 0 || c->hs[6] != 0 || c->hs[7] != 0) {
		chd_log(CHD_LOG_DEBUG, "conn %u: not an SP handshake", c->id);
		return (false);
	}
	if (proto != CHD_SPS_REQ) {
		chd_log(CHD_LOG_DEBUG, "conn %u: peer protocol 0x%x is not REQ",
		    c->id, proto);
		return (false);
	}
	c->shook = true;
	event_free(c->shake_timer);
	c->shake_timer = NULL;
	if (s->o.hooks.admit != NULL &&
	    !s->o.hooks.admit(s->o.hooks.arg, c->id, &c->peer)) {
		return (false);
	}
	c->admitted = true;
	if (s->o.hooks.opened != NULL) {
		s->o.hooks.opened(s->o.hooks.arg, c->id, c->pid);
	}
	return (true);
}

/*
 * Takes every whole frame out of buf[0..rlen) (the I/O thread's buffer);
 * a frame cut short gets its own message, which the next reads fill
 * directly, so only a cut header (< 9 bytes) is kept in c->part.
 * false: close c.
 */
static bool
chd_spc_frames(chd_spc *c, const uint8_t *buf, size_t rlen)
{
	size_t hlen = c->tcp ? 8 : 9, off = 0;
	bool   ok = true;

	while (rlen - off >= hlen) {
		const uint8_t *p = buf + off;
		uint64_t       len;
		nng_msg       *m;

		if (!c->tcp && p[0] != 0x01) {
			chd_log(CHD_LOG_DEBUG, "conn %u: ipc frame type %u",
			    c->id, p[0]);
			ok = false;
			break;
		}
		len = chd_get_be64(p + hlen - 8);
		if (len > c->s->o.recv_max + 4 * CHD_SPS_MAX_HOPS) {
			chd_log(CHD_LOG_DEBUG, "conn %u: frame of %llu bytes is "
			    "over the limit", c->id, (unsigned long long) len);
			ok = false;
			break;
		}
		if (chl_msgpool_get(&m, (size_t) len) != 0) {
			chd_log(CHD_LOG_WARN, "conn %u: out of memory for a "
			    "request of %llu bytes; dropping the connection",
			    c->id, (unsigned long long) len);
			ok = false;
			break;
		}
		if (rlen - off - hlen >= len) {
			memcpy(nng_msg_body(m), p + hlen, (size_t) len);
			off += hlen + (size_t) len;
			chd_spc_request(c, m);
			continue;
		}
		/* Part of it is here: the rest is read into m itself. */
		c->big_got = rlen - off - hlen;
		memcpy(nng_msg_body(m), p + hlen, c->big_got);
		c->big = m;
		off = rlen;
		break;
	}
	if (ok) {
		c->plen = rlen - off;
		memcpy(c->part, buf + off, c->plen);
	}
	return (ok);
}

/* Reads into the big frame; true while the connection is fine. */
static bool
chd_spc_read_big(chd_spc *c, bool *more)
{
	size_t  want = nng_msg_len(c->big) - c->big_got;
	ssize_t n = read(c->fd, (uint8_t *) nng_msg_body(c->big) + c->big_got,
	    want);

	*more = false;
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR &&
	    errno != EWOULDBLOCK)) {
		return (false);
	}
	if (n < 0) {
		return (true);
	}
	c->big_got += (size_t) n;
	if (c->big_got == nng_msg_len(c->big)) {
		nng_msg *m = c->big;

		c->big = NULL;
		chd_spc_request(c, m);
		*more = true;
	}
	return (true);
}

/* Reads the peer's handshake; true while the connection is fine. */
static bool
chd_spc_read_shake(chd_spc *c, bool *more)
{
	ssize_t n = read(c->fd, c->hs + c->hs_got, sizeof(c->hs) - c->hs_got);

	*more = false;
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR &&
	    errno != EWOULDBLOCK)) {
		return (false);
	}
	if (n > 0 && (c->hs_got += (size_t) n) == sizeof(c->hs)) {
		if (!chd_spc_shake(c)) {
			return (false);
		}
		*more = true;
	}
	return (true);
}

static bool
chd_spc_read_frames(chd_spc *c)
{
	uint8_t *buf = c->s->rbuf;
	ssize_t  n;

	/* One buffer for every connection: 10,000 idle ones cost no 64 KiB
	 * each. A cut header goes in front of the next read. */
	memcpy(buf, c->part, c->plen);
	n = read(c->fd, buf + c->plen, CHD_SPS_RBUF - c->plen);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR &&
	    errno != EWOULDBLOCK)) {
		return (false);
	}
	if (n < 0) {
		return (true);
	}
	return (chd_spc_frames(c, buf, c->plen + (size_t) n));
}

static void
chd_spc_read_cb(evutil_socket_t fd, short what, void *arg)
{
	chd_spc *c = arg;
	bool     ok, more = false, pause;

	(void) fd;
	(void) what;
	if (!c->shook) {
		ok = chd_spc_read_shake(c, &more);
		if (!ok || !more) {
			goto done;
		}
	}
	if (c->big != NULL) {
		ok = chd_spc_read_big(c, &more);
		if (!ok || !more) {
			goto done;
		}
	}
	ok = chd_spc_read_frames(c);
done:
	if (!ok) {
		chd_spc_close(c);
		return;
	}
	pthread_mutex_lock(&c->wmtx);
	pause = c->out_bytes > CHD_SPS_OUT_HIGH;
	pthread_mutex_unlock(&c->wmtx);
	if (pause && !c->paused) {
		c->paused = true;
		(void) event_del(c->rev);
	}
}

/* The peer said nothing in time: nng gives up after 10 s, so do we. */
static void
chd_spc_shake_timeout(evutil_socket_t fd, short what, void *arg)
{
	chd_spc *c = arg;

	(void) fd;
	(void) what;
	chd_log(CHD_LOG_DEBUG, "conn %u: no handshake within %d s", c->id,
	    CHD_SPS_SHAKE_MS / 1000);
	chd_spc_close(c);
}

/* ---- accepting ---------------------------------------------------------- */

static uint32_t
chd_sps_conn_id(chd_sps *s)
{
	uint32_t id;

	pthread_mutex_lock(&s->mtx);
	do {
		id = CHD_SPS_CONN_BIT | (s->next_id++ & ~CHD_SPS_CONN_BIT);
	} while (id == UINT32_MAX);
	pthread_mutex_unlock(&s->mtx);
	return (id);
}

/* Who is on the other end (ipc: the kernel says). */
static void
chd_spc_peer(chd_spc *c)
{
	struct ucred cr;
	socklen_t    len = sizeof(cr);

	memset(&c->peer, 0, sizeof(c->peer));
	if (!c->tcp &&
	    getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0) {
		c->peer.cred = true;
		c->peer.uid = (uint32_t) cr.uid;
		c->peer.gid = (uint32_t) cr.gid;
		c->pid = (int) cr.pid;
	}
}

static void
chd_sps_adopt(chd_sps *s, int fd, bool tcp)
{
	static const uint8_t hello[8] = { 0, 'S', 'P', 0, 0, CHD_SPS_REP, 0, 0 };
	struct timeval       tv = { CHD_SPS_SHAKE_MS / 1000, 0 };
	chd_spc             *c;
	int                  one = 1;

	if (tcp) {
		(void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	/* A fresh socket takes 8 bytes: a peer that cannot is gone. */
	if (send(fd, hello, sizeof(hello), MSG_NOSIGNAL | MSG_DONTWAIT) !=
	        (ssize_t) sizeof(hello) ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		(void) close(fd);
		return;
	}
	c->s = s;
	c->fd = fd;
	c->tcp = tcp;
	c->id = chd_sps_conn_id(s);
	atomic_init(&c->refs, 1);
	pthread_mutex_init(&c->wmtx, NULL);
	chd_spc_peer(c);
	c->rev = event_new(s->base, fd, EV_READ | EV_PERSIST, chd_spc_read_cb, c);
	c->wev = event_new(s->base, fd, EV_WRITE | EV_PERSIST, chd_spc_write_cb, c);
	c->shake_timer = evtimer_new(s->base, chd_spc_shake_timeout, c);
	c->next = s->conns;
	if (s->conns != NULL) {
		s->conns->prev = c;
	}
	s->conns = c;
	if (c->rev == NULL || c->wev == NULL ||
	    c->shake_timer == NULL || event_add(c->rev, NULL) != 0 ||
	    event_add(c->shake_timer, &tv) != 0) {
		chd_log(CHD_LOG_WARN, "out of memory: dropping a new connection");
		chd_spc_close(c);
	}
}

static void
chd_spl_resume(evutil_socket_t fd, short what, void *arg)
{
	chd_spl *l = arg;

	(void) fd;
	(void) what;
	(void) event_add(l->ev, NULL);
}

static void
chd_spl_accept_cb(evutil_socket_t fd, short what, void *arg)
{
	chd_spl *l = arg;
	chd_sps *s = l->s;

	(void) what;
	for (int i = 0; i < 64; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd >= 0) {
			chd_sps_adopt(s, cfd, l->tcp);
			continue;
		}
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
		    errno == ENOMEM) {
			struct timeval tv = { 0, CHD_SPS_ACCEPT_PAUSE_MS * 1000 };
			int64_t        now = chl_now_mono_ms();

			if (now - s->emfile_log_ms >= 10000) {
				chd_log(CHD_LOG_WARN, "cannot accept a connection: %s; "
				    "trying again every %d ms", strerror(errno),
				    CHD_SPS_ACCEPT_PAUSE_MS);
				s->emfile_log_ms = now;
			}
			(void) event_del(l->ev);
			(void) event_add(l->pause, &tv);
		}
		/* EAGAIN, or a connection that went away before we took it. */
		break;
	}
}

/* ---- listening ------------------------------------------------------------ */

/* umask 0177 while binding when mode or group are ours to set (see
 * transport.c, chd_listener_start): nobody else may connect before. */
static int
chd_sps_bind_ipc(chd_sps *s, const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	mode_t             old = 0;
	bool               own = s->o.socket_mode >= 0 || s->o.socket_gid >= 0;
	int                fd, rv;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "socket path longer than %zu bytes",
		    sizeof(sa.sun_path) - 1);
		return (-1);
	}
	strcpy(sa.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return (-1);
	}
	if (own) {
		old = umask(0177);
	}
	rv = bind(fd, (struct sockaddr *) &sa, sizeof(sa));
	if (own) {
		(void) umask(old);
	}
	if (rv != 0) {
		snprintf(err, errlen, "%s", strerror(errno));
		(void) close(fd);
		return (-1);
	}
	if ((s->o.socket_gid >= 0 &&
	        chown(path, (uid_t) -1, (gid_t) s->o.socket_gid) != 0) ||
	    (s->o.socket_mode >= 0 &&
	        chmod(path, (mode_t) s->o.socket_mode) != 0) ||
	    (own && s->o.socket_mode < 0 && chmod(path, 0777 & ~old) != 0)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		(void) unlink(path);
		(void) close(fd);
		return (-1);
	}
	return (fd);
}

/* tcp://HOST:PORT, tcp4://, tcp6://; HOST may be *, empty, or [v6]. */
static int
chd_sps_bind_tcp(const char *url, unsigned *port, char *err, size_t errlen)
{
	struct addrinfo hints, *ai = NULL;
	const char     *hp = strstr(url, "://") + 3, *colon;
	char            host[256], serv[16];
	int             fd = -1, one = 1, rv;
	size_t          hlen;

	if ((colon = strrchr(hp, ':')) == NULL || colon[1] == '\0' ||
	    strlen(colon + 1) >= sizeof(serv)) {
		snprintf(err, errlen, "no port (use tcp://HOST:PORT)");
		return (-1);
	}
	hlen = (size_t) (colon - hp);
	if (hlen >= 2 && hp[0] == '[' && hp[hlen - 1] == ']') {
		hp++;
		hlen -= 2;
	}
	if (hlen >= sizeof(host)) {
		snprintf(err, errlen, "host name too long");
		return (-1);
	}
	memcpy(host, hp, hlen);
	host[hlen] = '\0';
	strcpy(serv, colon + 1);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	hints.ai_family = strncmp(url, "tcp4://", 7) == 0 ? AF_INET
	    : strncmp(url, "tcp6://", 7) == 0             ? AF_INET6
	                                                  : AF_UNSPEC;
	if ((rv = getaddrinfo(hlen == 0 || strcmp(host, "*") == 0 ? NULL : host,
	    serv, &hints, &ai)) != 0) {
		snprintf(err, errlen, "%s", gai_strerror(rv));
		return (-1);
	}
	if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		snprintf(err, errlen, "%s", strerror(errno));
		if (fd >= 0) {
			(void) close(fd);
		}
		freeaddrinfo(ai);
		return (-1);
	}
	freeaddrinfo(ai);
	{
		struct sockaddr_storage ss;
		socklen_t               sl = sizeof(ss);

		*port = 0;
		if (getsockname(fd, (struct sockaddr *) &ss, &sl) == 0) {
			*port = ss.ss_family == AF_INET6
			    ? ntohs(((struct sockaddr_in6 *) &ss)->sin6_port)
			    : ntohs(((struct sockaddr_in *) &ss)->sin_port);
		}
	}
	return (fd);
}

int
chd_sps_listen(chd_sps *s, const char *url, unsigned *port, char *err,
    size_t errlen)
{
	bool     tcp = strncmp(url, "ipc://", 6) != 0;
	chd_spl *l;
	int      fd;

	*port = 0;
	if (!chd_sps_speaks(url)) {
		snprintf(err, errlen, "not an ipc:// or tcp:// URL");
		return (-1);
	}
	pthread_mutex_lock(&s->mtx);
	if (s->nlsn == CHD_SPS_MAX_LISTEN) {
		pthread_mutex_unlock(&s->mtx);
		snprintf(err, errlen, "too many listeners");
		return (-1);
	}
	pthread_mutex_unlock(&s->mtx);
	fd = tcp ? chd_sps_bind_tcp(url, port, err, errlen)
	         : chd_sps_bind_ipc(s, url + 6, err, errlen);
	if (fd < 0) {
		return (-1);
	}
	if (listen(fd, SOMAXCONN) != 0) {
		snprintf(err, errlen, "listen: %s", strerror(errno));
		goto fail;
	}
	pthread_mutex_lock(&s->mtx);
	l = &s->lsn[s->nlsn];
	memset(l, 0, sizeof(*l));
	l->fd = fd;
	l->tcp = tcp;
	l->s = s;
	l->path = tcp ? NULL : strdup(url + 6);
	l->ev = event_new(s->base, fd, EV_READ | EV_PERSIST, chd_spl_accept_cb, l);
	l->pause = evtimer_new(s->base, chd_spl_resume, l);
	if ((!tcp && l->path == NULL) || l->ev == NULL || l->pause == NULL ||
	    event_add(l->ev, NULL) != 0) {
		if (l->ev != NULL) {
			event_free(l->ev);
		}
		if (l->pause != NULL) {
			event_free(l->pause);
		}
		free(l->path);
		pthread_mutex_unlock(&s->mtx);
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	s->nlsn++;
	pthread_mutex_unlock(&s->mtx);
	return (0);
fail:
	if (!tcp) {
		(void) unlink(url + 6);
	}
	(void) close(fd);
	return (-1);
}

void
chd_sps_stop_listening(chd_sps *s)
{
	int n;

	/* Not under s->mtx: an accept callback takes it (conn ids), and
	 * event_free from here waits for a running callback. */
	pthread_mutex_lock(&s->mtx);
	n = s->nlsn;
	s->nlsn = 0;
	pthread_mutex_unlock(&s->mtx);
	for (int i = 0; i < n; i++) {
		chd_spl *l = &s->lsn[i];

		event_free(l->pause); /* first: it would add l->ev again */
		event_free(l->ev);
		if (l->path != NULL) {
			(void) unlink(l->path);
			free(l->path);
		}
		(void) close(l->fd);
	}
}

/* ---- the I/O thread ------------------------------------------------------- */

static void *
chd_sps_main(void *arg)
{
	chd_sps *s = arg;
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	(void) event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return (NULL);
}

int
chd_sps_new(const chd_sps_opts *o, chd_sps **out, char *err, size_t errlen)
{
	chd_sps *s;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return (-1);
	}
	s->o = *o;
	pthread_mutex_init(&s->mtx, NULL);
	/* The engine made libevent thread-safe before any base existed. */
	if ((s->base = event_base_new()) == NULL) {
		snprintf(err, errlen, "cannot create an event base");
		goto fail;
	}
	if (pthread_create(&s->thr, NULL, chd_sps_main, s) != 0) {
		snprintf(err, errlen, "cannot start the I/O thread");
		event_base_free(s->base);
		goto fail;
	}
	s->running = true;
	*out = s;
	return (0);
fail:
	pthread_mutex_destroy(&s->mtx);
	free(s);
	return (-1);
}

/* Run on the I/O thread by chd_sps_close: every connection goes. */
static void
chd_sps_close_all(evutil_socket_t fd, short what, void *arg)
{
	chd_sps *s = arg;

	(void) fd;
	(void) what;
	while (s->conns != NULL) {
		chd_spc_close(s->conns);
	}
	(void) event_base_loopbreak(s->base);
}

void
chd_sps_close(chd_sps *s)
{
	if (s == NULL || !s->running) {
		return;
	}
	chd_sps_stop_listening(s);
	/* The connections belong to the I/O thread: it closes them. */
	if (event_base_once(s->base, -1, EV_TIMEOUT, chd_sps_close_all, s,
	    NULL) != 0) {
		(void) event_base_loopbreak(s->base);
	}
	(void) pthread_join(s->thr, NULL);
	s->running = false;
	/* If the once could not be queued: close them from here. */
	while (s->conns != NULL) {
		chd_spc_close(s->conns);
	}
}

void
chd_sps_free(chd_sps *s)
{
	if (s == NULL) {
		return;
	}
	chd_sps_close(s);
	event_base_free(s->base);
	pthread_mutex_destroy(&s->mtx);
	free(s);
}
