/*
 * client.h - libchan internals: the client, the one request/answer path,
 * custody confirmations and the thread's last error.
 */
#ifndef CHAN_CLIENT_INT_H
#define CHAN_CLIENT_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <nng/nng.h>

#include <chan/chan.h>

#include "wire.h"

/* A call in progress, so chan_cancel can close its context. */
typedef struct chan_call_link {
	struct chan_call_link *next;
	nng_ctx                ctx;
	nng_aio               *aio;
	const chan_aio        *tag;    /* the async call it serves, or NULL (sync) */
	uint64_t               gen;    /* which call of tag (chan_aio carries one after another) */
	uint64_t               req_id; /* its Request.id (what a Cancel names) */
	bool                   clean;  /* the exchange ended with an answer (under mtx) */
	bool                   closed; /* chan_cancel closed ctx (under mtx) */
	bool                   withdrawn; /* its id went into a Cancel: an answer
	                                   * that still comes is dropped (under mtx) */
} chan_call_link;

/*
 * An idle context with its aio, kept for the next call: opening, setting
 * up and closing both for every call costs more than the call's own work
 * in libchan. Only pairs whose last exchange ended cleanly are kept.
 */
typedef struct chan_slot {
	nng_ctx  ctx;
	nng_aio *aio;
} chan_slot;

#define CHAN_SLOTS 8 /* idle pairs kept per client */

/*
 * Idle contexts kept for async calls (their aio is the chan_aio's own, so
 * only the context is pooled): enough for a typical pipeline depth; a
 * deeper one opens and closes the rest.
 */
#define CHAN_IDLE_CTX 256

/*
 * For a prefetching consumer (consumer.c), which must not let messages
 * leave the daemon's custody before its caller has taken them:
 * chan_aio_hold_confirm(a, true) makes every later chan_recv_aio /
 * chan_recv_any_aio on a keep its delivery unconfirmed (libchan normally
 * queues the confirmation as soon as the answer is decoded). After such a
 * call finished with messages, chan_aio_delivery gives the delivery id and
 * the connection (pipe) it came over (false when there is none: no
 * messages, or a leased receive); the holder calls chan_confirm_later(c,
 * id, pipe) once every message of it is taken. A delivery never confirmed
 * goes back to its channel (redelivered) when the connection closes.
 */
void chan_aio_hold_confirm(chan_aio *a, bool hold);
bool chan_aio_delivery(const chan_aio *a, uint64_t *id, nng_pipe *pipe);

/*
 * The connection a delivery came over: one of nng's (pipe), or the
 * lane's connection number lane_gen (not 0; lane.h).
 */
typedef struct chan_via {
	nng_pipe pipe;
	uint64_t lane_gen;
} chan_via;

/* A delivery the caller holds, and the connection it came over. */
typedef struct chan_pending {
	uint64_t id;
	chan_via via;
	uint32_t taken; /* CHAN_TAKEN_ALL: all of it (Request.confirm), else confirm_part */
} chan_pending;

#define CHAN_TAKEN_ALL UINT32_MAX

struct chan_client {
	/*
	 * nng's socket: every call's without a lane; with one, only async
	 * calls and their Cancels use it, and it is opened (sock_open) by
	 * the first of them (chan_ctx_open).
	 */
	nng_socket       sock;
	bool             sock_open; /* under mtx */
	struct chan_lane *lane;     /* synchronous calls' connection, or NULL (lane.h) */
	char            *url;
	char            *server_version;
	uint64_t         max_message_size;
	uint32_t         max_batch;
	bool             batch_form; /* Send.batch / Recv.batch (HelloResult.batch_form) */
	bool             confirm_part; /* Request.confirm_part (HelloResult.confirm_part) */
	bool             cancel_op;  /* the daemon knows Request.cancel (HelloResult.cancel) */
	bool             add_many;   /* CounterAdd.deltas (HelloResult.counter_add_many) */
	uint64_t         client_id;
	_Atomic uint64_t next_id;

	pthread_mutex_t  mtx;       /* guards everything below */
	pthread_cond_t   cv;        /* nasync reached 0 (chan_disconnect) */
	bool             cancelled;
	bool             closing;   /* chan_disconnect: no new async call */
	bool             stray;     /* a call was stopped: its answer may still come */
	size_t           nasync;    /* async calls started and not finished */
	nng_ctx         *idle;      /* idle contexts for async calls */
	size_t           nidle;
	chan_call_link  *calls;
	struct chan_cancel_hook *hooks; /* chan_cancel_hook_add */
	chan_pending    *pend;      /* deliveries held by the caller, not yet sent */
	size_t           npend;
	size_t           pend_cap;
	chan_slot        slots[CHAN_SLOTS]; /* idle (ctx, aio) pairs */
	size_t           nslots;

	/*
	 * Cancels (cancel.c): ids of stopped calls waiting to be named in a
	 * Cancel request, and the one Cancel exchange in flight at a time
	 * (fire and forget: its own aio and context, driven by callbacks).
	 */
	uint64_t        *cx_ids;
	size_t           cx_n, cx_cap;
	bool             cx_busy;   /* a Cancel is being sent or answered */
	bool             cx_recv;   /* ... and its send is done */
	bool             cx_open;   /* cx_ctx is open */
	nng_aio         *cx_aio;
	nng_ctx          cx_ctx;
};

/* One exchange: the request the caller filled, and the decoded answer. */
typedef struct chan_exchange {
	Chan__V1__Request   req;
	Chan__V1__Response *resp;  /* set on CHAN_OK */
	chl_capped_alloc    alloc; /* what resp was decoded with */
	chan_via            via;   /* the connection resp came over */
	chan_pending       *held;  /* confirmations this request carries */
	size_t              nheld;
} chan_exchange;

void chan_exchange_init(chan_exchange *x);
void chan_exchange_fini(chan_exchange *x);

/*
 * Sends x->req (op already set) and waits for the answer. Fills id, client
 * and pending confirmations. timeout_ms < 0: wait forever (the daemon
 * decides); otherwise a local bound (only for calls whose answer carries no
 * message). internal: ignore chan_cancel (the last confirmations).
 * Returns the answer's status; on anything else than CHAN_OK the thread's
 * last error is set. want_result: the Response result case expected on OK
 * (0: any).
 */
chan_status chan_exchange_run(chan_client *c, chan_exchange *x, int want_result,
    int64_t local_timeout_ms, bool internal);

/*
 * The async exchange, driven by async.c from nng callbacks (no thread of
 * its own): chan_async_begin, then chan_encode + nng_ctx_send +
 * nng_ctx_recv on link->ctx with the call's own aio, chan_exchange_answer
 * on the answer, chan_async_end in every case.
 *
 * chan_async_hold counts a call started on c (chan_disconnect waits until
 * every counted call has run its callback); chan_async_release ends it.
 */
void        chan_async_hold(chan_client *c);
void        chan_async_release(chan_client *c);
/*
 * Fills id, client and confirmations, takes a context and links the call
 * (tag, gen) so chan_cancel / chan_aio_cancel find it. CHAN_UNAVAILABLE
 * "cancelled" when c was cancelled or is disconnecting.
 */
chan_status chan_async_begin(chan_client *c, chan_exchange *x, chan_call_link *link,
    const chan_aio *tag, uint64_t gen, nng_aio *aio);
/* Encodes x->req into a new nng message. */
chan_status chan_encode(chan_client *c, chan_exchange *x, nng_msg **out);
/* Rebuilds Request.confirm from the held deliveries whose connection is up. */
void        chan_confirms_build(chan_client *c, chan_exchange *x);
/* Was the call cancelled (its context closed, c cancelled or going away)? */
bool        chan_async_stopped(chan_client *c, const chan_call_link *link);
/* Starts the reconnect pause on link->aio unless the call was stopped (false). */
bool        chan_async_pause(chan_client *c, chan_call_link *link);
/* Unlinks the call, keeps or closes its context, settles its confirmations. */
void        chan_async_end(chan_client *c, chan_call_link *link, chan_exchange *x);
/* Closes the context of call (tag, gen) if it is still in flight. */
void        chan_async_cancel(chan_client *c, const chan_aio *tag, uint64_t gen);
/*
 * An answer arrived for link: true (now clean) unless a Cancel already
 * named the call (then the caller drops the answer: the daemon gives its
 * messages back, and the call ends "cancelled").
 */
bool        chan_call_answered(chan_client *c, chan_call_link *link);

/*
 * Cancels (cancel.c). c->mtx held for all three. chan_cancel_note: a
 * call is being stopped; its id is queued for a Cancel when the daemon
 * knows the op and no answer arrived yet (link->withdrawn is set).
 * chan_cancel_kick starts a Cancel of the queued ids unless one is in
 * flight (whose callback sends them next); it never blocks.
 * chan_cancel_settle waits until no Cancel is in flight and frees the
 * Cancel's aio and context (chan_disconnect, before the socket closes).
 */
void        chan_cancel_note(chan_client *c, chan_call_link *link);
void        chan_cancel_kick(chan_client *c);
void        chan_cancel_settle(chan_client *c);

/*
 * A fresh context on c's socket (REQ resend off): 0 or an nng error.
 * c->mtx held: opens the socket first when a lane kept it closed.
 */
int         chan_ctx_open(chan_client *c, nng_ctx *ctx);

/* The status for an exchange that ended with nng error rv. */
chan_status chan_transfer_error(chan_client *c, int rv, bool stopped);
/* Decodes and checks an answer (frees it), as chan_exchange_run does. */
chan_status chan_exchange_answer(chan_client *c, chan_exchange *x, nng_msg *answer,
    int want_result);

/* Connection losses one request survives, and the pause before resending. */
#define CHAN_MAX_RESETS 4
#define CHAN_RESET_PAUSE_MS 100

/*
 * Request builders shared by the sync calls and their async forms: they
 * check the arguments as the sync call does (setting the thread's last
 * error) and fill the caller's op struct, which borrows name and payloads.
 * chan_send_build allocates *data (caller frees).
 */
chan_status chan_send_build(chan_client *c, const char *name, uint64_t sender,
    const chan_buf *bufs, size_t n, int64_t timeout_ms, Chan__V1__Send *a,
    ProtobufCBinaryData **data);
chan_status chan_recv_build(chan_client *c, const char *name, uint64_t receiver,
    uint64_t lease_ms, size_t max, int64_t timeout_ms, Chan__V1__Recv *a);
chan_status chan_recv_any_build(chan_client *c, const char *const *names, size_t n,
    int64_t timeout_ms, Chan__V1__RecvAny *a);
chan_status chan_counter_add_build(chan_client *c, const char *name, int64_t delta,
    Chan__V1__CounterAdd *a);
/*
 * CounterAdd.deltas with n (1..max_batch) deltas, borrowed. false from
 * chan_counter_add_many: the daemon does not read deltas (or
 * CHAN_COUNTER_ADD_MANY=0): send one add per delta instead.
 */
chan_status chan_counter_add_n_build(chan_client *c, const char *name, const int64_t *deltas,
    size_t n, Chan__V1__CounterAdd *a);
bool        chan_counter_add_many(const chan_client *c);
chan_status chan_counter_wait_build(chan_client *c, const char *name, chan_wait_op op,
    int64_t operand, int64_t timeout_ms, Chan__V1__CounterWait *a);

/*
 * Copies a recv answer's messages into msgs (room for max); all or none.
 * confirm: queue the delivery for confirmation (else the caller does, see
 * chan_aio_hold_confirm).
 */
chan_status chan_unpack_msgs(chan_client *c, chan_exchange *x, size_t max, chan_msg **msgs,
    size_t *n, bool confirm);
/*
 * Decodes an answer's bytes into x->resp (x->alloc, which takes owner over
 * and frees it with release, whatever happens) and checks its id against
 * x->req.id. url names the daemon in errors. CHAN_OK or CHAN_PROTOCOL.
 */
chan_status chan_decode_bytes(const char *url, chan_exchange *x, void *owner,
    void (*release)(void *), const void *bytes, size_t len);
/* CHAN_OK, or r's failure, with its text (else the status's) as the thread's last error. */
chan_status chan_answer_status(const Chan__V1__Response *r);

/* The same without a client: url names the daemon in errors; confirms nothing. */
chan_status chan_unpack_msgs_from(const char *url, chan_exchange *x, size_t max, chan_msg **msgs,
    size_t *n);

/*
 * The caller now holds the messages of delivery d, which came over pipe:
 * confirm it with the next request, unless that connection is gone by then
 * (the daemon has already given those messages back, and the id means
 * nothing to a restarted daemon).
 */
void chan_confirm_later(chan_client *c, uint64_t delivery, chan_via via);
/*
 * The same for a delivery the caller took only the first `taken` messages
 * of (a consumer closing mid-answer): the daemon frees those and gives the
 * rest back at once. Without the daemon's support (HelloResult.
 * confirm_part) nothing is queued and the whole delivery comes back when
 * the connection closes, as before (at-least-once).
 */
void chan_confirm_part_later(chan_client *c, uint64_t delivery, uint32_t taken, chan_via via);
/* Frees Request.confirm and confirm_part as chan_confirms_build made them. */
void chan_confirms_clear(chan_exchange *x);

/* Sets the thread's last error (printf-style) and returns s. */
chan_status chan_fail(chan_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * Told when chan_cancel(c) runs: a producer on a connection of its own
 * (producer.c) stops as the calls on c itself do. fn runs under c's lock
 * (it must only note and wake), at once when c is cancelled already.
 */
typedef struct chan_cancel_hook {
	struct chan_cancel_hook *next;
	void                   (*fn)(void *arg);
	void                    *arg;
} chan_cancel_hook;

void chan_cancel_hook_add(chan_client *c, chan_cancel_hook *h);
void chan_cancel_hook_remove(chan_client *c, chan_cancel_hook *h);

/* The longest answer c accepts (nng's NNG_OPT_RECVMAXSZ on its socket). */
size_t      chan_recv_bound(const chan_client *c);
/*
 * Condition variables timed on CLOCK_MONOTONIC (a wall-clock step must
 * not stretch or cut a wait): chan_cond_init_mono makes one, and
 * chan_deadline_in gives the absolute time us from now for
 * pthread_cond_timedwait on it.
 */
void            chan_cond_init_mono(pthread_cond_t *cv);
struct timespec chan_deadline_in(int64_t us);
/* A random non-zero 64-bit id (Request.client of a connection). */
uint64_t    chan_random_id(void);

/* Name check (local, the daemon's rule): CHAN_OK or CHAN_INVALID_ARGUMENT. */
chan_status chan_check_name(const char *name);

/*
 * Builds msgs[0..n) from the messages of an answer (copies), all in one
 * allocation freed with the last of them. asked: the channel the request
 * named, for answers that leave Message.channel empty (plain recv); NULL
 * for recv_any. CHAN_RESOURCE_EXHAUSTED (nothing built) without memory.
 */
chan_status chan_msgs_from_wire(const Chan__V1__RecvResult *r, const char *asked,
    chan_msg **msgs);
/*
 * The same for an answer in the batch form (x->resp->recv->batch, checked
 * by chl_batch_check): the messages point into the answer itself, which
 * they take over from x (x->resp is NULL after CHAN_OK) and free with the
 * last of them. No payload is copied.
 */
/* chan_recv_aio with Recv.max_bytes (0: none): the consumer's fetch. */
void chan_recv_aio_bytes(chan_client *c, const char *name, size_t max, uint64_t max_bytes,
    int64_t timeout_ms, chan_aio *a);

chan_status chan_msgs_from_batch(chan_exchange *x, const char *asked, chan_msg **msgs);

/* Sends one payload batch, with sender handle id (0: one-shot). */
chan_status chan_send_common(chan_client *c, const char *name, uint64_t sender,
    const chan_buf *bufs, size_t n, int64_t timeout_ms, uint64_t *first_seq);

/* Receives up to max messages (receiver handle, lease as in Recv). */
chan_status chan_recv_common(chan_client *c, const char *name, uint64_t receiver, uint64_t lease_ms,
    size_t max, chan_msg **msgs, size_t *n, int64_t timeout_ms);

#endif
