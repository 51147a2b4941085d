/*
 * engine_int.h - what the engine's files share and nothing outside sees:
 * shards, their mailboxes, parked tasks, channels, deliveries, answers.
 *
 * Threading rule: everything reachable from a chd_shard (channels,
 * counters, tasks, deliveries) is touched only under that shard's exec
 * lock: by the shard's thread (its libevent loop), or by a request thread
 * that found the shard idle and runs the job itself (chd_shard_post).
 * Other threads reach a shard only through chd_shard_post(). The few
 * things that cross shards (recv_any waiters, fan-out gathers) use atomics.
 */
#ifndef CHD_ENGINE_INT_H
#define CHD_ENGINE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/time.h>

#include <event2/event.h>

#include <chan/status.h>

#include "counter.h"
#include "deadline.h"
#include "engine.h"

/*
 * Custody grace (default of opts.custody_grace_ms): a recv on a channel
 * where another connection still holds unconfirmed (non-lease) deliveries
 * waits up to this long for that custody to end (confirmed, or given back
 * to the head on close) before it takes newer messages; docs/DELIVERY.md.
 */
#ifndef CHD_CUSTODY_GRACE_MS /* -D0 at build time: the old, ungated engine */
#define CHD_CUSTODY_GRACE_MS 100
#endif

typedef struct chd_shard chd_shard;
typedef struct chd_chan  chd_chan;
typedef struct chd_task  chd_task;
typedef struct chd_any   chd_any;
typedef struct chd_idem  chd_idem;

/* ---- small intrusive hash table (hash computed by the caller) ----------- */

typedef struct chd_hnode {
	struct chd_hnode *hnext;
	uint64_t          hash;
} chd_hnode;

typedef struct chd_htab {
	chd_hnode **b;
	size_t      nb; /* power of two */
	size_t      n;
} chd_htab;

int        chd_htab_init(chd_htab *t);
void       chd_htab_fini(chd_htab *t);
/* First node with this hash at or after `from` (NULL: start of bucket). */
chd_hnode *chd_htab_find(chd_htab *t, uint64_t hash, chd_hnode *from);
void       chd_htab_insert(chd_htab *t, chd_hnode *n);
void       chd_htab_remove(chd_htab *t, chd_hnode *n);
uint64_t   chd_hash_name(char domain, const char *s);

/* ---- answers ------------------------------------------------------------ */

/*
 * A Response under construction. Everything it points to is either
 * borrowed (lives until the reply returns) or allocated in its arena,
 * freed in one go after the reply.
 */
typedef struct chd_ablk chd_ablk;
typedef struct chd_resp {
	Chan__V1__Response r;
	chd_ablk          *arena;
} chd_resp;

void  chd_resp_init(chd_resp *a);
void *chd_resp_alloc(chd_resp *a, size_t size); /* zeroed; NULL on ENOMEM */
/* The same, not zeroed: for arrays the caller fills in whole. */
void *chd_resp_alloc_raw(chd_resp *a, size_t size);
/* Sends a (id and status set here), frees the arena; r is gone after. */
void  chd_resp_send(chd_engine *e, chd_req *r, chd_resp *a, chan_status st);
/* An error (or bare) answer with a printf message. */
void  chd_reply_err(chd_engine *e, chd_req *r, chan_status st,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void  chd_reply_empty(chd_engine *e, chd_req *r);

/* ---- shards and their mailboxes ----------------------------------------- */

typedef void (*chd_job_fn)(chd_shard *sh, void *arg);

typedef struct chd_job {
	struct chd_job *next;
	chd_job_fn      fn;
	void           *arg;
} chd_job;

/* Kinds of parked task. */
enum chd_task_kind { CHD_T_RECV, CHD_T_SEND, CHD_T_ANY, CHD_T_CWAIT };

/*
 * A parked request: a blocked receiver or sender, one channel's part of a
 * recv_any, or a counter waiter. Costs this struct; never a thread. A
 * finite timeout is an entry in the shard's deadline heap (dl), or its
 * own timer only when the heap could not grow (out of memory).
 */
struct chd_task {
	enum chd_task_kind kind;
	chd_shard         *sh;
	chd_req           *req;    /* NULL for CHD_T_ANY (the chd_any owns it) */
	uint32_t           conn;
	chd_dl_node        dl;     /* in sh->dl while a finite timeout runs */
	struct event      *timer;  /* own timer: only if sh->dl was full */
	event_callback_fn  timer_fn; /* what its timeout runs (chd_task_park) */
	chd_task          *sprev, *snext; /* shard's parked list */
	struct chd_connrec *crec;  /* its connection's record (NULL: none) */
	chd_task          *oprev, *onext; /* crec->tasks */
	chd_chan          *ch;     /* channel it waits on (not CWAIT) */
	chd_task          *qprev, *qnext; /* channel's recv or send queue */
	bool               done;   /* answered */
	bool               parked; /* in the shard's parked list */
	uint32_t           max;    /* recv: messages wanted; send: batch */
	uint64_t           receiver; /* recv: explicit handle or 0 */
	uint64_t           lease_ms; /* recv: ack mode lease, 0: custody */
	uint32_t           grace_ms; /* recv: custody wait cap, 0: the full
	                              * CHD_CUSTODY_GRACE_MS */
	bool               trying;   /* recv timeout 0 waiting out the grace:
	                              * EMPTY (not TIMEOUT) at its end */
	struct chd_any_part *part; /* CHD_T_ANY */
	chd_task          *anext;  /* CHD_T_ANY: next of the same part */
	chd_counter_waiter cw;     /* CHD_T_CWAIT */
};

/* Cross-shard recv_any waiter: the first shard to claim it answers. */
typedef struct chd_any_part {
	chd_any  *any;
	int       shard;
	int       nnames;
	char    **names;     /* into chd_any.names */
	bool      scanned;   /* shard thread only */
	bool      finished;  /* shard thread only: ref given back */
	chd_task *tasks;     /* shard thread only: registrations */
	struct event *timer; /* home part only */
} chd_any_part;

struct chd_any {
	atomic_int    refs;
	atomic_bool   claimed;
	atomic_int    pending;  /* parts whose first scan has not run */
	atomic_int    nclosed;  /* listed channels found closed and drained */
	atomic_bool   gated;    /* a listed channel waits for another
	                         * connection's custody (timeout 0: EMPTY
	                         * only after the grace) */
	int           nnames;   /* distinct names */
	char        **names;
	chd_req      *req;
	chd_engine   *e;
	uint32_t      conn;
	uint64_t      client, id; /* the request's (Cancel finds it by them;
	                           * req may be answered and gone) */
	int64_t       timeout_ms;
	int           nparts;
	chd_any_part *parts;
};

/* ---- small-object slabs (shard.c) ---------------------------------------- */

/*
 * Queued messages are the one allocation per message on the hot path, so
 * each shard carves small ones out of 64 KiB slabs (aligned, so an
 * object finds its slab by masking its address) in a few size classes.
 * Only the shard's work (under its exec lock) allocates and frees them.
 * Slabs come from the system 16 at a time (one 1 MiB mapping, carved as
 * needed: untouched slabs cost no memory). A slab whose last object is
 * freed becomes a spare of the shard (any class may take it again); the
 * shard keeps as many spares as its recent need (the most slabs in use
 * over the last one to two seconds, capped), at least CHD_SLAB_SPARE,
 * and gives the rest back (munmap) one tick after the need dropped.
 * Objects larger than the largest class are plain malloc (class
 * CHD_SLAB_MALLOC).
 */
#define CHD_SLAB_SIZE    65536u
#define CHD_SLAB_CLASSES 8
#define CHD_SLAB_MALLOC  0xff
/* Slabs mapped at once: 1 MiB in 2-3 system calls instead of 3 a slab. */
#define CHD_SLAB_CHUNK   16
/*
 * Empty slabs a shard keeps whatever the recent need (all classes
 * together, 2 MiB). One spare per class was too few: a recv of 1024
 * 1-KiB messages empties 17 slabs, and mapping them again for the next
 * batch costs 16 page faults each.
 */
#ifndef CHD_SLAB_SPARE
#define CHD_SLAB_SPARE   32
#endif
/* At most this many slabs (64 MiB) are kept for recent need, per shard;
 * the shard lowers it to 1/8 of --max-memory over the shards. */
#define CHD_SLAB_KEEP_MAX 1024
/* The need is looked at (and excess spares given back) this often. */
#define CHD_SLAB_TICK_MS  1000

typedef struct chd_slab chd_slab;
typedef struct chd_slab_class {
	chd_slab *avail;   /* slabs of the class with a free object */
	uint32_t  size;    /* object size */
	uint64_t  nslabs;  /* slabs of the class (none of them empty) */
} chd_slab_class;

typedef struct chd_slabs {
	chd_slab_class c[CHD_SLAB_CLASSES];
	chd_slab      *spare;     /* empty slabs kept, any class (LIFO) */
	uint32_t       nspare;
	uint32_t       inuse;     /* slabs holding objects, all classes */
	uint32_t       peak[2];   /* most in use: this tick, the tick before */
	uint32_t       keep_max;  /* cap on the need kept (slabs) */
	bool           armed;     /* a tick is due (arm was called) */
	/* Called when spares above CHD_SLAB_SPARE wait for a tick and none
	 * is due: the owner calls chd_slabs_tick CHD_SLAB_TICK_MS later
	 * (NULL: only explicit ticks, as in tests). */
	void         (*arm)(void *arg);
	void          *arm_arg;
	unsigned char *fresh;     /* the last chunk's slabs not taken yet */
	unsigned char *fresh_end;
	uint64_t       nmaps;     /* mappings made (chunks; heap blocks
	                           * under ASan) */
	uint64_t       nmapped;   /* slabs taken from the system */
	uint64_t       nunmapped; /* slabs given back */
	uint64_t       nunmaps;   /* in this many calls (runs of neighbours) */
} chd_slabs;

void  chd_slabs_init(chd_slabs *s);
/* A size-byte object; *cls says where it came from (for the free). */
void *chd_slab_alloc(chd_slabs *s, size_t size, uint8_t *cls);
void  chd_slab_free(chd_slabs *s, void *p, uint8_t cls);
/*
 * One tick (CHD_SLAB_TICK_MS) passed: the need of the tick before is
 * forgotten and spares beyond the remaining need are given back. True
 * when another tick is wanted (spares above CHD_SLAB_SPARE remain).
 */
bool  chd_slabs_tick(chd_slabs *s);
/* Frees every slab, live objects or not (shard teardown). */
void  chd_slabs_fini(chd_slabs *s);

struct chd_shard {
	chd_engine        *e;
	int                idx;
	pthread_t          thr;
	struct event_base *base;
	struct event      *mbox_ev;
	pthread_mutex_t    exec;      /* whoever runs the shard's work holds it */
	atomic_bool        direct;    /* request threads may run jobs inline */
	pthread_mutex_t    tmr_mtx;   /* guards tmr_dying */
	struct event      *tmr_dying; /* timer being deleted (its callback
	                               * must not re-arm it) */
	pthread_mutex_t    mtx;
	chd_job           *qhead, *qtail;
	bool               stop;      /* under mtx */
	bool               shutdown;  /* shard thread: answer SHUTTING_DOWN */
	chd_htab           chans;
	size_t             nchans;
	chd_counters      *counters;
	chd_task          *parked;    /* every parked task of this shard */
	chd_htab           deliveries;
	chd_htab           leases;     /* leases by the (client, id) of the
	                                * recv that took them (Cancel) */
	chd_htab           conns_seen; /* chd_connrec by conn */
	bool               seen_lost;  /* a record could not be made:
	                                * every close also walks it all */
	uint64_t           next_delivery;
	uint64_t           next_handle;
	chd_slabs          slabs;     /* queued messages */
	struct event      *slab_tmr;  /* chd_slabs_tick while armed */
	/*
	 * Deadlines of the parked tasks with a finite timeout (exec held,
	 * like all shard state) and the one timer that serves them, armed
	 * lazily: only when a new deadline is earlier than dl_armed_at (or
	 * nothing is armed). Unpark never touches it, so it may fire early
	 * and then just re-arms. Parks made while it runs (dl_firing) leave
	 * the arming to its end.
	 */
	chd_dl_heap        dl;
	struct event      *dl_tmr;
	int64_t            dl_armed_at; /* valid while dl_armed */
	bool               dl_armed;
	bool               dl_firing;
};

struct chd_engine {
	chd_engine_opts   opts;
	int               n;
	chd_shard       **shards;
	atomic_bool       shutting;
	atomic_uint_least64_t requests;
	atomic_uint_least64_t connections;
	atomic_uint_least64_t held_bytes; /* payload queued + in custody */
	atomic_uint_least64_t nchannels;  /* against opts.max_channels */
	atomic_uint_least64_t ncounters;  /* against opts.max_counters */
	int64_t           start_ms;
	pthread_rwlock_t  conn_lock;  /* guards conns (parks read it) */
	chd_htab          conns;      /* conn -> pid, closed tombstones */
	uint32_t         *tombs;      /* ring of recently closed conns */
	size_t            tomb_next, tomb_used;
	chd_idem         *idem;       /* answers of recent (client, id) */
	pthread_mutex_t   sd_mtx;
	pthread_cond_t    sd_cv;
	int               sd_pending;
};

int  chd_shard_start(chd_engine *e, int idx, chd_shard **out);
/*
 * Any thread. Runs fn(sh, arg) under the shard's exec lock, after the jobs
 * posted before it: at once on the calling thread when the shard is idle,
 * else on the shard's thread.
 */
int  chd_shard_post(chd_shard *sh, chd_job_fn fn, void *arg);
/*
 * Timer callbacks of a shard start with chd_shard_timer_begin(sh, ev) and
 * return at once when it is false (the shard is busy: the timer runs again
 * shortly); after their work, chd_shard_timer_end(sh). sh must be saved
 * before the work (it may free what the timer belongs to).
 */
bool chd_shard_timer_begin(chd_shard *sh, struct event *ev);
void chd_shard_timer_end(chd_shard *sh);
/*
 * Delete / free a timer of sh (exec held). Always these, never
 * evtimer_del/event_free directly: they keep a callback that is running
 * right now on the shard's thread from re-arming the timer while it goes.
 */
void chd_shard_timer_del(chd_shard *sh, struct event *ev);
void chd_shard_timer_free(chd_shard *sh, struct event *ev);
void chd_shard_stop(chd_shard *sh);   /* joins the thread */
bool chd_shard_drain(chd_shard *sh);  /* after stop: runs leftover jobs */
void chd_shard_free(chd_shard *sh);

chd_shard *chd_shard_for_chan(chd_engine *e, const char *name);

/* True when no channel may be created (opts.max_channels reached). */
static inline bool
chd_chan_limit_full(chd_engine *e)
{
	return (e->opts.max_channels != 0 &&
	    atomic_load(&e->nchannels) >= e->opts.max_channels);
}
chd_shard *chd_shard_for_counter(chd_engine *e, const char *name);

/*
 * A finite timeout as a timeval; false when it is so long (over ~10 years)
 * that waiting forever is the same and no timer should be armed.
 */
#define CHD_TIMER_MAX_MS ((uint64_t) 10 * 366 * 24 * 3600 * 1000)
static inline bool
chd_timeval(uint64_t ms, struct timeval *tv)
{
	if (ms > CHD_TIMER_MAX_MS) {
		return (false);
	}
	tv->tv_sec = (time_t) (ms / 1000);
	tv->tv_usec = (suseconds_t) (ms % 1000) * 1000;
	return (true);
}

/*
 * Connection bookkeeping of a shard: what each connection holds here, so
 * closing it costs O(what it holds), not O(channels + parked tasks): its
 * parked tasks, the deliveries in its custody, its sender handles, the
 * channels whose receiver handle it owns and those whose custody grace
 * timer runs for its receivers. Every item points back to its record
 * (crec) and leaves the record's list when it goes away for any reason
 * (answered, confirmed, dropped, channel deleted). A connection holding
 * nothing has no record, and its close costs one lookup (a CLI one-shot
 * send costs nothing at close). Leases are not indexed: they outlive
 * their connection. Shard thread only.
 */
typedef struct chd_connrec {
	chd_hnode            hn;        /* hash = conn */
	uint32_t             conn;
	chd_task            *tasks;     /* parked: t->oprev/onext */
	struct chd_delivery *deliveries;
	struct chd_sender   *senders;
	chd_chan            *rx_chans;  /* its receiver handles */
	chd_chan            *grace_chans; /* grace timers for its receivers */
} chd_connrec;

/* Intrusive doubly linked lists (head pointer, item, link field names). */
#define CHD_DL_PUSH(head, x, prev, next) do {                           \
		(x)->prev = NULL;                                        \
		(x)->next = (head);                                      \
		if ((head) != NULL) {                                    \
			(head)->prev = (x);                              \
		}                                                        \
		(head) = (x);                                            \
	} while (0)
#define CHD_DL_REMOVE(head, x, prev, next) do {                         \
		if ((x)->prev != NULL) {                                 \
			(x)->prev->next = (x)->next;                     \
		} else {                                                 \
			(head) = (x)->next;                              \
		}                                                        \
		if ((x)->next != NULL) {                                 \
			(x)->next->prev = (x)->prev;                     \
		}                                                        \
		(x)->prev = (x)->next = NULL;                            \
	} while (0)

/*
 * The record of conn; with create, made when missing (NULL only without
 * memory: sh->seen_lost is then set and every close walks everything).
 */
chd_connrec *chd_shard_conn(chd_shard *sh, uint32_t conn, bool create);
/* Takes conn's record out of the table (NULL: none); the caller empties
 * its lists and frees it with chd_shard_conn_free. */
chd_connrec *chd_shard_conn_take(chd_shard *sh, uint32_t conn);
void         chd_shard_conn_free(chd_connrec *c);
/* Runs the connection-close work for conn on sh again (a late request of
 * a closed connection left state behind). */
void chd_shard_post_conn_close(chd_shard *sh, uint32_t conn);

/*
 * Parked list and timeouts (exec held). A finite timeout_ms > 0 runs
 * cb(-1, EV_TIMEOUT, t) once it has passed (not before; from the shard's
 * deadline timer), unless the task is unparked first; cb unparks it.
 */
void chd_task_park(chd_task *t, int64_t timeout_ms, event_callback_fn cb);
void chd_task_unpark(chd_task *t);
int  chd_engine_conn_pid(chd_engine *e, uint32_t conn);
/* False once the connection closed: such a request must not park or
 * register anything, nobody would clean it up. Unknown conns are alive. */
bool chd_engine_conn_alive(chd_engine *e, uint32_t conn);

/* ---- channels (channel.c) ----------------------------------------------- */

/* Shard-side handlers: run on the owner shard with a validated request. */
void chd_op_create(chd_shard *sh, chd_req *r);
void chd_op_send(chd_shard *sh, chd_req *r);
void chd_op_recv(chd_shard *sh, chd_req *r);
void chd_op_close(chd_shard *sh, chd_req *r);
void chd_op_delete(chd_shard *sh, chd_req *r);
void chd_op_stat(chd_shard *sh, chd_req *r);
void chd_op_sender_open(chd_shard *sh, chd_req *r);
void chd_op_sender_close(chd_shard *sh, chd_req *r);
void chd_op_receiver_open(chd_shard *sh, chd_req *r);
void chd_op_receiver_close(chd_shard *sh, chd_req *r);
void chd_op_ack(chd_shard *sh, chd_req *r);
void chd_op_release(chd_shard *sh, chd_req *r);


/* Ends custody of a delivery, only for its own connection or client
 * (client 0: none); anything else is ignored. taken < the delivery's
 * count (Request.confirm_part): only its first `taken` messages leave
 * custody, the rest go back to the channel at once. CHD_TAKEN_ALL: all. */
#define CHD_TAKEN_ALL UINT32_MAX
void chd_chan_confirm(chd_shard *sh, uint64_t delivery, uint32_t taken, uint32_t conn,
    uint64_t client);
void chd_chan_reown(chd_shard *sh, uint64_t delivery, uint32_t conn);
void chd_chan_conn_closed(chd_shard *sh, uint32_t conn);
void chd_chan_free_all(chd_shard *sh);
/* Looks a channel up; creates it (unbounded) when create and allowed. */
chd_chan *chd_chan_get(chd_shard *sh, const char *name, bool create);
/* Fills one ChannelInfo (strings borrowed from the channel). */
void chd_chan_info(chd_shard *sh, chd_chan *ch, Chan__V1__ChannelInfo *ci);
typedef void (*chd_chan_visit_fn)(void *arg, chd_chan *ch);
void chd_chan_each(chd_shard *sh, chd_chan_visit_fn fn, void *arg);
void chd_chan_totals(chd_shard *sh, uint64_t *msgs, uint64_t *bytes);
const char *chd_chan_name(const chd_chan *ch);

/* For recv_any (recv_any.c uses these; shard thread). */
uint32_t chd_chan_rx_busy(chd_chan *ch, uint32_t conn); /* other conn or 0 */
bool     chd_chan_has_msgs(chd_chan *ch);
bool     chd_chan_closed_drained(chd_chan *ch);
/* Another connection than conn holds custody here whose grace is not
 * spent: conn's recv must wait before taking messages. */
bool     chd_chan_custody_gated(const chd_chan *ch, uint32_t conn);
/* Queues a receiver (t->conn, t->grace_ms set); starts the custody grace
 * timer when another connection's custody holds it back. */
void     chd_chan_add_receiver(chd_chan *ch, chd_task *t);
void     chd_chan_remove_receiver(chd_chan *ch, chd_task *t);
/* Lets whoever can proceed on ch proceed (after adding a receiver). */
void     chd_chan_pump(chd_shard *sh, chd_chan *ch);
/* Hands out up to max messages of ch to r in a fresh answer and sends it:
 * in custody (a delivery id), or leased for lease_ms (ack mode). */
void     chd_chan_deliver(chd_shard *sh, chd_chan *ch, chd_req *r,
    uint32_t conn, uint32_t max, uint64_t lease_ms);

/* ---- recv_any (recv_any.c) ---------------------------------------------- */

void chd_any_submit(chd_engine *e, chd_req *r);
/* The channel part of a registration ends: message, closed, deleted. */
void chd_any_serve(chd_task *t);              /* messages ready */
void chd_any_chan_closed(chd_task *t);        /* closed and drained */
void chd_any_fail(chd_task *t, chan_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- counters (counter_ops.c) ------------------------------------------- */

void chd_op_counter_add(chd_shard *sh, chd_req *r);
void chd_op_counter_get(chd_shard *sh, chd_req *r);
void chd_op_counter_set(chd_shard *sh, chd_req *r);
void chd_op_counter_cas(chd_shard *sh, chd_req *r);
void chd_op_counter_wait(chd_shard *sh, chd_req *r);
void chd_op_counter_delete(chd_shard *sh, chd_req *r);
void chd_counter_wake(chd_counter_waiter *w, chan_status st, int64_t value);

/* ---- fan-out (info.c) --------------------------------------------------- */

void chd_info_list(chd_engine *e, chd_req *r);
void chd_info_stats(chd_engine *e, chd_req *r);
void chd_info_counter_list(chd_engine *e, chd_req *r);
void chd_info_hello(chd_engine *e, chd_req *r);
void chd_info_ping(chd_engine *e, chd_req *r);

/* ---- idempotent requests (idem.c) --------------------------------------- */

chd_idem *chd_idem_new(void);
void      chd_idem_free(chd_idem *t);
/*
 * For a request with client and id: answers a repeat from the cache (or
 * re-binds a running one) and returns NULL; else returns the request to
 * run (an engine-owned one that took r->msg over, r->msg is then NULL).
 */
chd_req  *chd_idem_begin(chd_engine *e, chd_req *r);
/* Messages of this delivery were confirmed or given back. */
void      chd_idem_forget_delivery(chd_engine *e, uint64_t client,
    uint64_t delivery);
/* Brackets a shard's work for a closed connection (thread-local flag). */
void      chd_idem_conn_closing(bool on);
/* Routes a validated request to its shard(s) (no cache, no checks). */
void      chd_engine_dispatch(chd_engine *e, chd_req *r);

/* Answers a parked task on shutdown / connection close (channel.c). */
void chd_task_abort(chd_task *t, chan_status st, const char *msg);

/* ---- cancel (idem.c, channel.c) ----------------------------------------- */

/* One id of a Cancel, as the idempotency cache found it. */
typedef struct chd_cancel_item {
	uint64_t id;
	uint32_t conn;     /* running: the connection its tasks park under */
	bool     running;  /* parked or on its way: stop its tasks */
	uint64_t delivery; /* answered, custody to give back (0: none) */
} chd_cancel_item;

/* Request.cancel (engine handler): marks, answers, posts the shard work. */
void chd_idem_cancel(chd_engine *e, chd_req *r);
/* Was r (an engine-owned request of the cache) cancelled? Lock-free. */
bool chd_idem_req_cancelled(const chd_req *r);
/* Was (client, id) cancelled (a running call or a tombstone)? */
bool chd_idem_id_cancelled(chd_engine *e, uint64_t client, uint64_t id);
/*
 * On sh: stops the running items' tasks (UNAVAILABLE "cancelled"), gives
 * back the items' deliveries owned by sh and releases their leases, then
 * pumps the channels touched. Only what belongs to client.
 */
void chd_chan_cancel(chd_shard *sh, uint64_t client,
    const chd_cancel_item *items, size_t n);
/* Gives delivery back (a cancelled call's answer), if client's. Any thread. */
void chd_chan_post_give_back(chd_engine *e, uint64_t delivery,
    uint64_t client);

#endif
