/*
 * consumer.h - chan_consumer's insides, shared by consumer.c (the buffer,
 * custody, nng's client) and consumer_sp.c (the consumer's own
 * connection, sp.h).
 */
#ifndef CHAN_CONSUMER_INT_H
#define CHAN_CONSUMER_INT_H

#include <stdatomic.h>

#include "client.h"
#include "sp.h"

#define CHAN_CONFIRM_PING_MS 1000 /* bound on the round trip that carries confirmations */
#define CHAN_CONFIRM_IDLE_MS 20   /* a fetch parked this long gets the confirmations a Ping */

/* One answer's delivery and how many of its messages the caller has not taken. */
typedef struct chan_kdelivery {
	uint64_t id;
	nng_pipe pipe; /* the connection it came over (nng) */
	uint64_t gen;  /* ... (direct: chan_sp.gen) */
	size_t   n;
	size_t   left;
} chan_kdelivery;

/* direct: a confirmation waiting for the next request (taken: CHAN_TAKEN_ALL or a count). */
typedef struct chan_kconfirm {
	uint64_t id;
	uint32_t taken;
	uint64_t gen;
} chan_kconfirm;

struct chan_consumer {
	chan_client    *c; /* private connection */
	char            name[CHAN_NAME_MAX + 1];
	uint32_t        prefetch;
	uint32_t        low_water;
	uint64_t        limit;   /* 0: none */
	size_t          fetch_bytes; /* Recv.max_bytes of a fetch (0: none) */
	uint64_t        fetched; /* messages received in all */
	chan_aio       *aio;

	pthread_mutex_t mtx;       /* guards done and cancelled */
	pthread_cond_t  cv;
	/* Written under mtx (for cv); atomic so that the caller's thread can
	 * look without the lock on every message. */
	atomic_bool     done;      /* the fetch in flight is answered */
	atomic_bool     cancelled;

	bool            inflight;   /* a fetch started and not absorbed */
	bool            background; /* it waits forever (not the caller's timeout) */
	chan_status     pend;       /* a fetch's failure, told once the buffer is drained */
	char            pend_msg[512];
	bool            unsent;     /* confirmations queued since the last request */

	chan_msg      **buf; /* ring */
	size_t          bhead, bn, bcap;
	chan_kdelivery *dq;  /* ring, in message order */
	size_t          dhead, dn, dcap;
	size_t          handed; /* handed out by the last call, taken at the next */

	/*
	 * direct (sp.h): the consumer's own connection, written and read by
	 * the caller's thread, with no aio and no k->c. A fetch's answer is
	 * read when the buffer runs dry (or while a Ping waits: then kept).
	 */
	bool            direct;
	chan_sp         sp;
	int             wake[2];   /* chan_consumer_cancel writes, a blocked read wakes */
	uint32_t        dmax;
	bool            batch_form, confirm_part, cancel_op;
	uint64_t        client_id;
	_Atomic uint64_t next_id;   /* chan_consumer_cancel takes one too */
	_Atomic uint64_t live_fetch; /* the fetch a Cancel would name (0: none) */
	uint64_t        fetch_id;  /* Request.id of the fetch in flight */
	int64_t         fetch_timeout;
	uint32_t        fetch_want;
	bool            fetch_sent; /* written on the current connection */
	int             resets;    /* connections lost under the fetch in flight */
	void           *ans;       /* its answer, read and not absorbed */
	size_t          ans_len;
	chan_kconfirm  *kc;
	size_t          nkc, kc_cap;
};

static inline bool
chan_consumer_is_cancelled(chan_consumer *k)
{
	return (atomic_load_explicit(&k->cancelled, memory_order_acquire));
}

/* consumer.c: room for want more elements in a ring; false: ENOMEM. */
bool chan_ring_grow(void **ring, size_t elem, size_t *head, size_t n, size_t *cap, size_t want);

/*
 * consumer_sp.c, the direct consumer (k->direct). Open dials at once;
 * close sends the last confirmations, then hangs up (what was not
 * confirmed goes back to the channel). All but chan_kd_cancel run on the
 * caller's thread.
 */
chan_status chan_kd_open(chan_consumer *k, chan_client *c);
void        chan_kd_close(chan_consumer *k);
/* A confirmation for the next request (taken: CHAN_TAKEN_ALL or a count). */
void        chan_kc_add(chan_consumer *k, uint64_t id, uint32_t taken, uint64_t gen);
/* Writes the fetch in flight (k->fetch_*), dialling first when needed. */
chan_status chan_kd_send_fetch(chan_consumer *k);
/* As chan_consumer_wait for the fetch in flight: its answer into k->ans. */
bool        chan_kd_wait(chan_consumer *k, int64_t deadline_ms);
/* k->ans into the buffer (or its failure into k->pend). */
void        chan_kd_absorb(chan_consumer *k);
/* A Ping carrying the queued confirmations; its answer waited for until deadline_ms. */
void        chan_kd_ping(chan_consumer *k, int64_t deadline_ms);
/* Any thread: withdraws the parked fetch and wakes a blocked read. */
void        chan_kd_cancel(chan_consumer *k);

#endif
