/*
 * engine.h - the boundary between chand's transport (nng) and its engine
 * (channels, counters, parked waiters, executor shards).
 *
 * The transport decodes a request body into a chd_req and submits it; from
 * then on the engine owns the request until it calls r->reply exactly once.
 * The engine never touches nng; the transport never touches a channel.
 * Unit tests create chd_req values with their own reply function, so the
 * whole engine runs in-process without a socket.
 */
#ifndef CHD_ENGINE_H
#define CHD_ENGINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <chan/status.h>

#include "chan.pb-c.h"
#include "wire.h"

typedef struct chd_req chd_req;

/*
 * Called exactly once per request, from any engine thread, with the answer.
 * resp is only borrowed for the call: the callee encodes it (or copies what
 * it needs) before returning, and the engine frees resp afterwards. The
 * callee also frees r (and r->msg with r->alloc). After the connection went
 * away, the engine still calls reply (the transport drops the answer): a
 * message handed out in such an answer stays in custody until confirmed,
 * so nothing is lost.
 */
typedef void (*chd_reply_fn)(chd_req *r, const Chan__V1__Response *resp);

/*
 * A packed answer (a serialized chan.v1.Response), counted: the
 * idempotency cache keeps a reference while the transport sends it.
 * chd_answer_new gives one with refs 1 and len bytes to fill (NULL: no
 * memory); the last chd_answer_unref frees it (NULL: nothing).
 */
typedef struct chd_answer {
	atomic_int refs;
	size_t     len;
	uint8_t    bytes[];
} chd_answer;

chd_answer *chd_answer_new(size_t len);
void        chd_answer_unref(chd_answer *a);

/*
 * What a transport sends instead of resp when it has no memory to encode
 * resp: RESOURCE_EXHAUSTED with resp's id (small is filled; it points to
 * static text only).
 */
void chd_response_oom(Chan__V1__Response *small, const Chan__V1__Response *resp);

/*
 * The same as chd_reply_fn with the answer already packed: a reference to
 * a (the callee takes it over), with the status and delivery id (0: none)
 * it carries. Optional: when the creator sets it, the engine uses it for
 * answers it packs anyway (the idempotency cache keeps the bytes) and for
 * those it packs itself (a recv answer in the batch form is written
 * straight from the queue, with no Response in between).
 */
typedef void (*chd_reply_answer_fn)(chd_req *r, chd_answer *a, chan_status st,
    uint64_t delivery);

struct chd_req {
	Chan__V1__Request *msg;    /* decoded request, owned by the request */
	chl_capped_alloc   alloc;  /* the allocator msg was decoded with */
	uint32_t           conn;   /* connection id (nng pipe id), never 0 */
	chd_reply_fn       reply;  /* set by the creator */
	void              *owner;  /* creator's private data (nng ctx/aio) */
	chd_reply_answer_fn reply_answer; /* NULL: engine always uses reply */
};

/*
 * Whether r's answer goes out in the batch form (Recv.batch): whoever
 * packs the answer (the transport, the idempotency cache) asks this.
 */
static inline bool
chd_req_wants_batch(const chd_req *r)
{
	const Chan__V1__Request *q = r->msg;

	return (q != NULL && q->op_case == CHAN__V1__REQUEST__OP_RECV && q->recv != NULL &&
	    q->recv->has_batch && q->recv->batch);
}

typedef struct chd_engine_opts {
	int      workers;          /* executor shards (threads), >= 1 */
	uint64_t max_message_size; /* bytes; default 1 MiB */
	uint32_t max_batch;        /* messages per send/recv request */
	bool     auto_create;      /* send/recv create missing channels */
	/* Payload bytes held daemon-wide (queued + in custody) before sends
	 * get RESOURCE_EXHAUSTED; 0: no limit. Default 1 GiB. */
	uint64_t max_memory;
	/* A recv waits at most this long for another connection's
	 * unconfirmed deliveries on its channel to be confirmed or given
	 * back before taking newer messages (docs/DELIVERY.md); 0: never
	 * waits. Default CHD_CUSTODY_GRACE_MS (100). */
	uint32_t custody_grace_ms;
	/* Channels and counters daemon-wide; creating one more (explicitly
	 * or by auto-create) gets RESOURCE_EXHAUSTED. 0: no limit. Default
	 * CHD_MAX_CHANNELS_DEFAULT / CHD_MAX_COUNTERS_DEFAULT. */
	uint64_t max_channels;
	uint64_t max_counters;
} chd_engine_opts;

#define CHD_MAX_CHANNELS_DEFAULT 1000000u
#define CHD_MAX_COUNTERS_DEFAULT 1000000u

typedef struct chd_engine chd_engine;

/* Fills opts with the defaults (workers 2, 1 MiB, 1024, auto_create,
 * max_memory 1 GiB, custody grace 100 ms, a million channels and
 * counters). */
void chd_engine_opts_default(chd_engine_opts *opts);

/*
 * Starts the shard threads. Returns 0, or an errno value (nothing started).
 * Calls evthread_use_pthreads() itself (idempotent) before any base exists.
 */
int chd_engine_start(const chd_engine_opts *opts, chd_engine **out);

/* Any thread. Takes ownership of r: r->reply is always called. */
void chd_engine_submit(chd_engine *e, chd_req *r);

/*
 * Any thread. A connection appeared / went away. On close every shard
 * detaches that connection's receivers, drops its registered senders
 * (closing channels whose last sender it was), cancels its parked waiters
 * and gives its unconfirmed deliveries back to their channels.
 * pid is the peer's pid where the transport knows it, else 0.
 */
void chd_engine_conn_open(chd_engine *e, uint32_t conn, int pid);
void chd_engine_conn_close(chd_engine *e, uint32_t conn);

/*
 * Any thread but a shard's. Answers every parked waiter SHUTTING_DOWN,
 * and every later submit too; returns when all shards have done so.
 */
void chd_engine_shutdown(chd_engine *e);

/* Joins the shard threads and frees everything. After shutdown. */
void chd_engine_free(chd_engine *e);

#endif
