/*
 * producer.h - chan_producer's insides, shared by producer.c (batches,
 * the thread, nng's client) and producer_sp.c (the producer's own
 * connection, sp.h).
 */
#ifndef CHAN_PRODUCER_INT_H
#define CHAN_PRODUCER_INT_H

#include "client.h"
#include "sp.h"

/*
 * What one Send may carry, as the daemon computes its request limit
 * (daemon/config.c chd_config_request_max): max_batch * (max_message_size
 * + 16) + 64 KiB, capped at 256 MiB. Each message is counted with 16
 * bytes of framing (its tag and length take at most 6).
 */
#define CHAN_PROD_MSG_COST 16u
#define CHAN_PROD_REQ_CAP  (256ull * 1024u * 1024u)
#define CHAN_PROD_REQ_SLACK (64u * 1024u)
#define CHAN_PROD_ARENA_MIN 4096u
#define CHAN_PROD_ARENA_KEEP (1u << 20) /* a recycled batch keeps at most this much */
#define CHAN_PROD_ANSWER_MAX (64u * 1024u) /* a Send's answer is a few bytes */

/* A batch: messages copied into one arena, sent as one Send. */
typedef struct chan_pbatch {
	struct chan_pbatch *next;
	uint64_t            first;   /* ticket of its first message */
	uint32_t            n;
	size_t              cost;    /* payload + CHAN_PROD_MSG_COST per message */
	size_t              bytes;   /* payload */
	int64_t             born_us; /* when its first message came (monotonic) */
	chan_status         st;      /* its answer */
	uint64_t            seq;     /* first seq when accepted */
	size_t             *off;     /* payload offsets in arena */
	chan_buf           *bufs;    /* lengths; data set when it is sent */
	char               *arena;
	size_t              arena_cap;
} chan_pbatch;

struct chan_producer {
	chan_client    *c;
	char            name[CHAN_NAME_MAX + 1];
	uint32_t        max_batch;
	size_t          max_cost;      /* per batch */
	int64_t         linger_us;
	size_t          max_buffered;  /* messages given and not yet answered */
	size_t          max_bytes;     /* payload given and not yet answered */
	int64_t         timeout_ms;
	chan_outcome_cb cb;
	void           *arg;
	bool            stop_on_failure;

	pthread_mutex_t mtx;
	pthread_cond_t  wake;    /* the producer thread */
	pthread_cond_t  room;    /* senders blocked on max_buffered */
	pthread_cond_t  settled; /* flushers */
	pthread_t       thread;
	pthread_cond_t  io_wake; /* direct: the I/O thread */
	pthread_t       io_thread;
	bool            io_running;
	bool            quit;

	chan_pbatch    *head;     /* queued, oldest first */
	chan_pbatch    *tail;
	chan_pbatch    *inflight; /* claimed by the thread that starts it */
	chan_pbatch    *done;     /* answered, outcomes not yet delivered (oldest first) */
	chan_pbatch    *done_tail;
	chan_pbatch    *spare;    /* recycled */
	chan_aio       *aio;      /* nng's client (not direct) */

	/*
	 * direct: the producer's own connection, written and read by the
	 * producer thread alone (sp.h says why). The batch in flight is
	 * claimed by whichever thread finds it due (wire: not yet written).
	 */
	bool                 direct;
	bool                 wire;
	chan_sp              sp;
	uint64_t             client_id;
	uint64_t             next_id;
	ProtobufCBinaryData *wdata;  /* max_batch payload descriptors */
	uint8_t             *pk;     /* the packed request (but gathered payloads) */
	size_t               pk_len, pk_cap;
	/*
	 * The payloads, when they lie back to back in the batch's arena
	 * (as chan_producer_send puts them) and the batch form carries
	 * them: written from there (writev), at pk_split in pk, rather
	 * than copied into pk first. gather_len 0: pk holds everything.
	 */
	const uint8_t       *gather;
	size_t               gather_len, pk_split;
	uint64_t             req_id;
	int                  wakefd[2]; /* chan_cancel(c) wakes the producer thread */
	atomic_bool          cancelled;
	chan_cancel_hook     hook;      /* on c (chan_cancel_hook_add) */

	size_t          nmsgs;    /* given, outcome not yet delivered */
	size_t          nbytes;
	uint64_t        last_ticket;
	uint64_t        done_ticket; /* outcomes delivered up to this one */
	uint64_t        flush_upto;  /* send these without lingering */

	_Atomic uint64_t accepted;
	_Atomic uint64_t failed;
	chan_status     flush_err; /* first failure since the last flush */
	char            flush_msg[512];
	chan_status     stopped;   /* stop_on_failure: the failure that stopped it */
	char            stop_msg[512];
};

/* The batch in flight, b, was answered: it joins the done list. mtx held. */
void chan_producer_answered(chan_producer *p, chan_pbatch *b, chan_status st, uint64_t seq,
    const char *msg);

/* pthread_create with every signal blocked in the new thread; 0 or an errno. */
int  chan_thread_spawn(pthread_t *t, void *(*fn)(void *), void *arg);

/*
 * Starts a due batch (or, direct, claims it for the I/O thread), else
 * lets the producer thread time the linger. mtx held.
 */
void chan_producer_kick(chan_producer *p, bool always);

/*
 * producer_sp.c. Open: the producer's own connection, dialled once now
 * (so a producer that cannot reach the daemon says so at once), and its
 * I/O thread (p->direct then). Close: stops and undoes it, after the
 * producer has settled everything (nothing when not direct).
 */
chan_status chan_prod_sp_open(chan_producer *p);
void        chan_prod_sp_close(chan_producer *p);

#endif
