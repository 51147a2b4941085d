/*
 * chan/chan.h - libchan, the C client of chand.
 *
 * A chan_client is one connection to chand. It is safe to share between
 * threads: every call is one request/answer exchange on its own nng context.
 *
 * Conventions (as in nng):
 * - Every call that can fail returns a chan_status; CHAN_OK is 0. After a
 *   failure, chan_last_error() gives the human message (the daemon's when it
 *   sent one) for the last failure on the calling thread.
 * - timeout_ms: -1 (CHAN_WAIT_FOREVER) waits forever, 0 does not wait, > 0
 *   waits that long. The daemon applies it; the library itself never gives
 *   up on a request whose answer may carry a message.
 * - Output pointers are only written on CHAN_OK.
 * - Ownership is written next to each declaration: "caller frees with X"
 *   means the caller owns the result and releases it with X exactly once.
 * - Names are 1 to 128 bytes of [A-Za-z0-9._:-]; NUL-terminated strings.
 */
#ifndef CHAN_CHAN_H
#define CHAN_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <chan/status.h>

#ifdef __cplusplus
extern "C" {
#endif

/* libchan is built with hidden visibility: only what is declared here is exported. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define CHAN_WAIT_FOREVER ((int64_t) -1)
#define CHAN_NO_WAIT      ((int64_t) 0)

/* Capacities for chan_create: unbounded, rendezvous (sync_channel(0)), or N > 0. */
#define CHAN_UNBOUNDED  ((int64_t) -1)
#define CHAN_RENDEZVOUS ((int64_t) 0)

#define CHAN_NAME_MAX 128

typedef struct chan_client   chan_client;   /* one connection to chand */
typedef struct chan_msg      chan_msg;      /* one received message */
typedef struct chan_sender   chan_sender;   /* registered sender (Rust's Sender) */
typedef struct chan_receiver chan_receiver; /* attached receiver (Rust's Receiver) */

/* ---- connection ------------------------------------------------------- */

/*
 * Connects to chand. url NULL: $CHAN_URL, else the compiled-in default.
 * Fails fast with CHAN_UNAVAILABLE (message names the URL) when no daemon
 * answers, CHAN_PROTOCOL on a protocol version mismatch.
 * *out: caller frees with chan_disconnect.
 */
chan_status chan_connect(const char *url, chan_client **out);

/*
 * Confirms every message this client handed to its caller (one last round
 * trip, bounded by a few seconds), then closes and frees c. c NULL: no-op.
 * No call on c may be in progress or follow.
 */
void chan_disconnect(chan_client *c);

/*
 * From any thread (not a signal handler): every call in progress on c, and
 * every later one, returns CHAN_UNAVAILABLE ("cancelled") at once. Messages
 * a cancelled call would have received stay with the daemon and go back to
 * their channel. The daemon is told (when it knows Request.cancel): the
 * calls are withdrawn there too, a blocked send is not stored, a receive
 * takes nothing more. chan_disconnect still confirms what was received.
 */
void chan_cancel(chan_client *c);

/*
 * The human message of the last failed call on this thread (any client).
 * Never NULL; borrowed, valid until this thread's next libchan call.
 */
const char *chan_last_error(const chan_client *c);

/* The daemon's limits, learnt at connect. */
uint64_t    chan_max_message_size(const chan_client *c);
uint32_t    chan_max_batch(const chan_client *c);
/* The daemon's version string; borrowed, lives as long as c. */
const char *chan_server_version(const chan_client *c);
/* The URL c is connected to; borrowed, lives as long as c. */
const char *chan_url(const chan_client *c);

/* Round trip to the daemon; *rtt_us (may be NULL) gets the time it took. */
chan_status chan_ping(chan_client *c, uint64_t *rtt_us);

/* ---- messages ----------------------------------------------------------- */

const void *chan_msg_data(const chan_msg *m);    /* borrowed, lives as long as m */
size_t      chan_msg_len(const chan_msg *m);
uint64_t    chan_msg_seq(const chan_msg *m);     /* per-channel, increasing */
uint64_t    chan_msg_time_us(const chan_msg *m); /* enqueue time, Unix microseconds */
const char *chan_msg_channel(const chan_msg *m); /* borrowed, lives as long as m */
bool        chan_msg_redelivered(const chan_msg *m); /* handed out before, never confirmed */
/*
 * m NULL: no-op. The messages of one answer (one chan_recv_n, one consumer
 * fetch) share one allocation: its memory goes back when the last of them
 * is freed, so keep single messages of a big batch with care.
 */
void        chan_msg_free(chan_msg *m);

/* ---- channels ----------------------------------------------------------- */

/*
 * Creates a channel: capacity CHAN_UNBOUNDED, CHAN_RENDEZVOUS (0) or N > 0.
 * Idempotent with the same capacity; CHAN_ALREADY_EXISTS with another one.
 */
chan_status chan_create(chan_client *c, const char *name, int64_t capacity);

/* End of stream: receivers drain what is left, then get CHAN_CLOSED. */
chan_status chan_close(chan_client *c, const char *name);

/* Removes the channel and its messages; its waiters get CHAN_NOT_FOUND. */
chan_status chan_delete(chan_client *c, const char *name);

/*
 * One message (copied; data may be NULL when len is 0). timeout_ms 0 is
 * try_send (CHAN_FULL at once). Larger than chan_max_message_size:
 * CHAN_TOO_LARGE, refused locally.
 */
chan_status chan_send(chan_client *c, const char *name, const void *data, size_t len,
    int64_t timeout_ms);

/* One payload of a batch; borrowed for the call. */
typedef struct chan_buf {
	const void *data;
	size_t      len;
} chan_buf;

/*
 * n (1..chan_max_batch) messages, all or nothing, in order. *first_seq (may
 * be NULL) gets the sequence number of bufs[0]; the others follow it.
 */
chan_status chan_send_batch(chan_client *c, const char *name, const chan_buf *bufs, size_t n,
    int64_t timeout_ms, uint64_t *first_seq);

/*
 * The oldest message, attaching as receiver for the length of the call.
 * CHAN_TIMEOUT, CHAN_CLOSED once closed and drained, CHAN_BUSY when another
 * receiver is attached. *out: caller frees with chan_msg_free.
 */
chan_status chan_recv(chan_client *c, const char *name, chan_msg **out, int64_t timeout_ms);

/* chan_recv with timeout 0: CHAN_EMPTY at once, or CHAN_CLOSED. */
chan_status chan_try_recv(chan_client *c, const char *name, chan_msg **out);

/*
 * 1 to max (<= chan_max_batch) messages in one round trip; waits only for
 * the first. msgs must have room for max pointers; *n gets the count.
 * Each msgs[i] (i < *n): caller frees with chan_msg_free.
 */
chan_status chan_recv_n(chan_client *c, const char *name, size_t max, chan_msg **msgs, size_t *n,
    int64_t timeout_ms);

/*
 * The first message from any of names[0..n) (Rust's select!); the channel
 * it came from is chan_msg_channel(*out). *out: caller frees with chan_msg_free.
 */
chan_status chan_recv_any(chan_client *c, const char *const *names, size_t n, chan_msg **out,
    int64_t timeout_ms);

/* What chan_stat and chan_list report about a channel. */
typedef struct chan_stat_info {
	char     name[CHAN_NAME_MAX + 1];
	bool     bounded;           /* false: unbounded (capacity meaningless) */
	uint64_t capacity;          /* when bounded; 0: rendezvous */
	uint64_t depth;             /* messages queued */
	uint64_t bytes;             /* payload bytes queued */
	bool     closed;
	bool     receiver_attached;
	int32_t  receiver_pid;      /* 0: unknown */
	uint32_t senders;           /* registered sender handles */
	uint32_t blocked_senders;
	uint32_t blocked_receivers;
	uint64_t total_sent;
	uint64_t total_received;
	uint64_t total_dropped;
	uint64_t in_flight;         /* handed out, not yet confirmed or acked */
	uint64_t total_redelivered;
} chan_stat_info;

/* Fills *info (caller's storage) about one channel; CHAN_NOT_FOUND if none. */
chan_status chan_stat(chan_client *c, const char *name, chan_stat_info *info);

/* Every channel. *infos: caller frees with chan_list_free; *n: count. */
chan_status chan_list(chan_client *c, chan_stat_info **infos, size_t *n);
void        chan_list_free(chan_stat_info *infos); /* NULL: no-op */

/* Daemon-wide numbers. */
typedef struct chan_stats_info {
	uint64_t uptime_ms;
	uint64_t connections;
	uint64_t channels;
	uint64_t counters;
	uint64_t messages;  /* messages held */
	uint64_t bytes;     /* payload bytes held */
	uint64_t requests;  /* requests served */
	uint32_t workers;
} chan_stats_info;

/* Fills *info (caller's storage). */
chan_status chan_stats(chan_client *c, chan_stats_info *info);

/* ---- sender handles (Rust's Sender) ------------------------------------- */

/*
 * Registers a sender on name. When a channel has had registered senders and
 * the last one is closed (or its connection goes away), the channel closes.
 * *out: caller frees with chan_sender_close.
 */
chan_status chan_sender_open(chan_client *c, const char *name, chan_sender **out);
/* Registers another sender on the same channel (Sender::clone). *out: as above. */
chan_status chan_sender_clone(const chan_sender *s, chan_sender **out);
chan_status chan_sender_send(chan_sender *s, const void *data, size_t len, int64_t timeout_ms);
chan_status chan_sender_send_batch(chan_sender *s, const chan_buf *bufs, size_t n,
    int64_t timeout_ms, uint64_t *first_seq);
/* Drops the sender and frees s, whatever the status (s NULL: CHAN_OK). */
chan_status chan_sender_close(chan_sender *s);

/* ---- receiver handles (Rust's Receiver) --------------------------------- */

/*
 * Attaches as the channel's only receiver (CHAN_BUSY if another is).
 * *out: caller frees with chan_receiver_close or chan_receiver_detach.
 */
chan_status chan_receiver_open(chan_client *c, const char *name, chan_receiver **out);
/* As chan_recv / chan_recv_n, through the attached receiver. */
chan_status chan_receiver_recv(chan_receiver *r, chan_msg **out, int64_t timeout_ms);
chan_status chan_receiver_recv_n(chan_receiver *r, size_t max, chan_msg **msgs, size_t *n,
    int64_t timeout_ms);
/*
 * Drops the receiver: the channel closes the other way (queued messages are
 * discarded, sends get CHAN_CLOSED). Frees r whatever the status.
 */
chan_status chan_receiver_close(chan_receiver *r);
/* Detaches without closing: the channel keeps buffering. Frees r whatever the status. */
chan_status chan_receiver_detach(chan_receiver *r);

/* ---- ack mode ----------------------------------------------------------- */

/*
 * Like chan_recv, but the message stays in flight until chan_ack, or goes
 * back to the channel (redelivered) at chan_release or when lease_ms (> 0)
 * ends. *out: caller frees with chan_msg_free.
 */
chan_status chan_recv_lease(chan_client *c, const char *name, uint64_t lease_ms, chan_msg **out,
    int64_t timeout_ms);
/* Finishes a leased message. */
chan_status chan_ack(chan_client *c, const char *name, uint64_t seq);
/* Gives a leased message back, available again after delay_ms. */
chan_status chan_release(chan_client *c, const char *name, uint64_t seq, uint64_t delay_ms);

/* ---- counters (Arc<Mutex<i64>> + Condvar) -------------------------------- */

typedef enum chan_wait_op {
	CHAN_WAIT_EQ = 0, /* == */
	CHAN_WAIT_NE = 1, /* != */
	CHAN_WAIT_LT = 2, /* <  */
	CHAN_WAIT_LE = 3, /* <= */
	CHAN_WAIT_GT = 4, /* >  */
	CHAN_WAIT_GE = 5, /* >= */
} chan_wait_op;

/* Adds delta (creating the counter at 0); *new_value (may be NULL). i64 overflow: CHAN_OUT_OF_RANGE. */
chan_status chan_counter_add(chan_client *c, const char *name, int64_t delta, int64_t *new_value);
/*
 * n adds (n >= 1) to one counter, in order: values[i] (values may be NULL)
 * gets the value after deltas[i]. Up to chan_max_batch(c) deltas go in one
 * request, applied as a group no other client sees half of; if any add
 * would overflow, none of that request's is (CHAN_OUT_OF_RANGE, the message
 * names the add). More than chan_max_batch(c) are split into requests of
 * that size, sent one after another: on an error the earlier requests stay
 * applied and values holds their results. A daemon without the many-adds
 * form gets one request per add (same values, no grouping).
 */
chan_status chan_counter_add_n(chan_client *c, const char *name, const int64_t *deltas, size_t n,
    int64_t *values);
/* *value gets the value; CHAN_NOT_FOUND when there is no such counter. */
chan_status chan_counter_get(chan_client *c, const char *name, int64_t *value);
/* Sets value; *old_value (may be NULL) gets the previous one. */
chan_status chan_counter_set(chan_client *c, const char *name, int64_t value, int64_t *old_value);
/*
 * Compare and swap. *swapped (may be NULL) tells whether it swapped,
 * *current (may be NULL) gets the value after the attempt.
 */
chan_status chan_counter_cas(chan_client *c, const char *name, int64_t expected, int64_t new_value,
    bool *swapped, int64_t *current);
/* Waits until value OP operand holds; *value (may be NULL) gets the value that satisfied it. */
chan_status chan_counter_wait(chan_client *c, const char *name, chan_wait_op op, int64_t operand,
    int64_t timeout_ms, int64_t *value);
chan_status chan_counter_delete(chan_client *c, const char *name);

typedef struct chan_counter_info {
	char    name[CHAN_NAME_MAX + 1];
	int64_t value;
} chan_counter_info;

/* Every counter. *infos: caller frees with chan_counter_list_free; *n: count. */
chan_status chan_counter_list(chan_client *c, chan_counter_info **infos, size_t *n);
void        chan_counter_list_free(chan_counter_info *infos); /* NULL: no-op */

/* ---- async calls (nng's aio style) -------------------------------------- */

/*
 * A chan_aio carries one call at a time: start it with a chan_*_aio call,
 * which returns at once; when the call is done, the callback (if any) runs
 * on a libchan thread, and chan_aio_wait returns. Then read the result with
 * chan_aio_result and the accessors, and start the next call on the same
 * chan_aio if you like. Calls in flight cost no thread: they ride on nng's
 * own aio callbacks, and any number may be in flight on one client (each
 * on its own nng context). Two sends in flight at once to the same channel
 * may arrive in either order; wait for one (or use a chan_producer) when
 * order matters.
 * Payloads and names given to a start call are borrowed until it is done.
 */
typedef struct chan_aio chan_aio;
typedef void (*chan_aio_cb)(chan_aio *a, void *arg);

/* *out: caller frees with chan_aio_free. cb may be NULL. */
chan_status chan_aio_alloc(chan_aio **out, chan_aio_cb cb, void *arg);
/* Cancels a call in flight, waits for it, frees the messages not taken, frees a. */
void        chan_aio_free(chan_aio *a);
/* Waits until the call in flight (if any) is done. Not from the callback. */
void        chan_aio_wait(chan_aio *a);
/*
 * Makes the call in flight finish at once with CHAN_UNAVAILABLE
 * ("cancelled") unless it is already done; messages it would have received
 * stay with the daemon. Does not wait; the daemon is told in the
 * background (a fire-and-forget Request.cancel), so a parked receive stops
 * taking messages and a blocked send is dropped there too.
 */
void        chan_aio_cancel(chan_aio *a);
/* The finished call's status (CHAN_OK, CHAN_TIMEOUT, ...). */
chan_status chan_aio_result(const chan_aio *a);
/* Its human message when it failed (as chan_last_error); borrowed from a. */
const char *chan_aio_error(const chan_aio *a);
/* Received messages: how many, and taking one (caller frees with chan_msg_free; NULL once taken). */
size_t      chan_aio_count(const chan_aio *a);
chan_msg   *chan_aio_take_msg(chan_aio *a, size_t i);
/* chan_send_aio: sequence number of the first message; chan_counter_wait_aio: the value. */
uint64_t    chan_aio_first_seq(const chan_aio *a);
int64_t     chan_aio_value(const chan_aio *a);
/*
 * chan_counter_add_n_aio: the value after each add, *n (may be NULL) of
 * them; NULL and 0 when the call failed or was another kind. The array
 * belongs to a: valid until a's next call starts or chan_aio_free.
 */
const int64_t *chan_aio_values(const chan_aio *a, size_t *n);

/* Asynchronous chan_send_batch (n >= 1). */
void chan_send_aio(chan_client *c, const char *name, const chan_buf *bufs, size_t n,
    int64_t timeout_ms, chan_aio *a);
/* Asynchronous chan_recv_n (1..max messages). */
void chan_recv_aio(chan_client *c, const char *name, size_t max, int64_t timeout_ms, chan_aio *a);
/* Asynchronous chan_recv_any (one message). */
void chan_recv_any_aio(chan_client *c, const char *const *names, size_t n, int64_t timeout_ms,
    chan_aio *a);
/* Asynchronous chan_counter_wait. */
void chan_counter_wait_aio(chan_client *c, const char *name, chan_wait_op op, int64_t operand,
    int64_t timeout_ms, chan_aio *a);

/* Asynchronous chan_counter_add: chan_aio_value gives the new value. */
void chan_counter_add_aio(chan_client *c, const char *name, int64_t delta, chan_aio *a);
/*
 * Asynchronous chan_counter_add_n, one request: n is 1..chan_max_batch(c)
 * (more: CHAN_INVALID_ARGUMENT, no splitting). deltas is borrowed: keep it
 * unchanged until the call completes. When it succeeded chan_aio_values
 * gives the n values and chan_aio_value the last one.
 */
void chan_counter_add_n_aio(chan_client *c, const char *name, const int64_t *deltas, size_t n,
    chan_aio *a);

/* ---- producer: sends coalesced into batches ------------------------------ */

/*
 * A producer turns many small sends into few batch requests: messages are
 * copied into a local buffer and sent as one batch when it is full
 * (max_batch messages or max_batch_bytes), after linger_us, on
 * chan_producer_flush, or as soon as the batch in flight is answered.
 * One batch is in flight at a time, so the channel receives the messages in
 * the order they were given to chan_producer_send. Safe to share between
 * threads.
 *
 * Outcome per message: every message gets a ticket (1, 2, 3, ... in send
 * order). When its batch is answered, on_outcome (if set) runs once per
 * message, in ticket order, on a libchan thread: st CHAN_OK with the seq the
 * channel gave it, or the batch's failure (CHAN_CLOSED, CHAN_NOT_FOUND, ...)
 * with seq 0. A failure of one batch does not stop the next. The callback
 * must not call chan_producer_* on the same producer.
 */
typedef struct chan_producer chan_producer;
typedef void (*chan_outcome_cb)(void *arg, uint64_t ticket, chan_status st, uint64_t seq);

typedef struct chan_producer_opts {
	uint32_t        max_batch;       /* 0: chan_max_batch(c); capped to a bounded channel's capacity */
	size_t          max_batch_bytes; /* 0: CHAN_SEND_BATCH_BYTES_DEFAULT; SIZE_MAX: what one request may carry */
	uint32_t        linger_us;       /* wait this long for more before sending a lone batch; 0: send at once */
	size_t          max_buffered;    /* messages buffered before chan_producer_send blocks; 0: 4 * max_batch
	                                    (it also blocks while 4 * max_batch_bytes of payload wait) */
	int64_t         timeout_ms;      /* each batch's send timeout (bounded channels); default CHAN_WAIT_FOREVER */
	chan_outcome_cb on_outcome;      /* may be NULL */
	void           *arg;
	/*
	 * false (default): a failed batch does not stop the next. true: after
	 * the first failed batch nothing more is sent (no gap in the stream,
	 * as `chan send` needs): the messages behind it get the same failure
	 * as outcome, and chan_producer_send returns it at once.
	 */
	bool            stop_on_failure;
} chan_producer_opts;

/* Sets the defaults above (timeout_ms CHAN_WAIT_FOREVER). */
void        chan_producer_opts_init(chan_producer_opts *o);
/*
 * opts NULL: defaults. The producer borrows c (c must outlive it).
 * *out: caller frees with chan_producer_close.
 */
chan_status chan_producer_open(chan_client *c, const char *name, const chan_producer_opts *opts,
    chan_producer **out);
/*
 * Copies one message into the buffer (blocks while max_buffered are
 * waiting). *ticket (may be NULL) gets its ticket. CHAN_TOO_LARGE at once
 * for a message over chan_max_message_size.
 */
chan_status chan_producer_send(chan_producer *p, const void *data, size_t len, uint64_t *ticket);
/*
 * Sends what is buffered and waits until every message given so far is
 * answered (timeout_ms as usual; CHAN_TIMEOUT leaves them in flight).
 * Returns CHAN_OK if all of them were accepted, else the first failure
 * since the previous flush.
 */
chan_status chan_producer_flush(chan_producer *p, int64_t timeout_ms);
/* Counts since open: accepted and failed messages (outcomes known so far). */
uint64_t    chan_producer_accepted(const chan_producer *p);
uint64_t    chan_producer_failed(const chan_producer *p);
/* Flushes (waiting forever), then frees p. Returns what that flush returned (p NULL: CHAN_OK). */
chan_status chan_producer_close(chan_producer *p);

/* ---- consumer: receives prefetched into custody ------------------------- */

/*
 * A consumer keeps up to `prefetch` messages of one channel fetched ahead,
 * with one receive in flight while the caller works, so chan_consumer_recv
 * is usually answered from local memory. The prefetched messages stay in
 * the daemon's custody until the caller has taken every message of the
 * answer that brought them: if the process dies first, the daemon gives
 * them back to the channel (marked redelivered), so nothing is lost. It
 * uses a connection of its own, so chan_consumer_close gives untaken
 * messages back at once (marked redelivered). The channel keeps one
 * consumer at a time (MPSC): a second one gets CHAN_BUSY while the first
 * has a receive parked. Not for sharing between threads.
 */
typedef struct chan_consumer chan_consumer;

typedef struct chan_consumer_opts {
	uint32_t prefetch; /* messages fetched per request; 0: chan_max_batch(c) */
	uint32_t low_water; /* fetch again when fewer are buffered; 0: prefetch / 2 */
	uint64_t limit;     /* fetch at most this many in all (chan recv -n N); 0: no limit */
	/*
	 * Payload bytes per fetch at most (the first message always comes):
	 * big messages come in fewer per request, small ones up to prefetch.
	 * 0: CHAN_FETCH_BYTES_DEFAULT; SIZE_MAX: no bound.
	 */
	size_t   prefetch_bytes;
} chan_consumer_opts;

#define CHAN_FETCH_BYTES_DEFAULT ((size_t) 480 * 1024)
/*
 * Why about 512 KiB for both: past a few hundred KiB per request a batch
 * stops paying (the round trip is already amortised) and starts costing
 * (nng zeroes every buffer, glibc maps and unmaps buffers that big): see
 * docs/PERFORMANCE.md. Why a fetch 32 KiB short of a send: chand writes
 * each answer into the buffer of a request it has decoded (its message
 * pool); an answer carries a few bytes more per message than the send
 * that brought the payloads (seq and time), so at equal payload it
 * missed every buffer, and chand zeroed a fresh one (5% of its CPU in a
 * 1 KiB stream; chand 0.77-0.91 against 0.89-0.99 µs per message).
 */
#define CHAN_SEND_BATCH_BYTES_DEFAULT ((size_t) 512 * 1024)

void        chan_consumer_opts_init(chan_consumer_opts *o);
/*
 * Opens a consumer on name, connecting to chan_url(c) (c itself is not
 * used after this returns). *out: caller frees with chan_consumer_close.
 */
chan_status chan_consumer_open(chan_client *c, const char *name, const chan_consumer_opts *opts,
    chan_consumer **out);
/* As chan_recv: CHAN_OK, CHAN_TIMEOUT, CHAN_EMPTY (timeout 0), CHAN_CLOSED once drained. */
chan_status chan_consumer_recv(chan_consumer *k, chan_msg **out, int64_t timeout_ms);
/* As chan_recv_n: 1..max messages, waiting only for the first. */
chan_status chan_consumer_recv_n(chan_consumer *k, size_t max, chan_msg **msgs, size_t *n,
    int64_t timeout_ms);
/* Messages fetched and not taken yet. */
size_t      chan_consumer_buffered(const chan_consumer *k);
/*
 * From any thread (not a signal handler), as chan_cancel for a client: the
 * fetch in flight is cancelled (what it would have received stays with the
 * daemon), a chan_consumer_recv waiting returns at once, and once the
 * buffer is drained every receive returns CHAN_UNAVAILABLE ("cancelled").
 * Only chan_consumer_close remains useful after it.
 */
void        chan_consumer_cancel(chan_consumer *k);
/* Gives untaken messages back (redelivered), closes its connection, frees k. */
void        chan_consumer_close(chan_consumer *k);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif
