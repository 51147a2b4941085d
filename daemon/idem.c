/*
 * idem.c - idempotent requests: per client (Request.client) the answers to
 * its last CHD_IDEM_KEEP request ids, so a repeated (client, id) gets its
 * first answer and the work is never done twice (a client retrying after
 * a lost answer or a reconnect, or nng REQ resending).
 *
 * A cacheable request runs as an engine-owned "inner" chd_req that took
 * the decoded message over from the transport's ("outer") one. Its answer
 * goes to whichever outer is bound at that moment: a repeat arriving
 * while the first is still parked re-binds to the new outer and the old
 * one is answered UNAVAILABLE. Answers that handed out messages are
 * dropped from the cache once those messages are confirmed or given back,
 * so a retry after a lost connection receives them afresh.
 *
 * The table is striped by client, one mutex per stripe; the critical
 * sections are a few lookups.
 */
#include "engine_int.h"

#include <stdlib.h>
#include <string.h>

#define CHD_IDEM_KEEP    128  /* answers remembered per client */
#define CHD_IDEM_STRIPES 16   /* independent locks, by client */
#define CHD_IDEM_CLIENTS 64   /* clients remembered per stripe (LRU) */

typedef struct chd_idem_call chd_idem_call;

/*
 * The cached answers are chd_answers (engine.h), shared by the cache
 * entry and the replies in flight (the first answer and replays): packed
 * once, outside the stripe lock, and handed to the transport as bytes
 * (chd_req.reply_answer).
 */

typedef struct chd_idem_entry {
	uint64_t       id;       /* 0: free */
	chd_answer    *answer;   /* NULL while running */
	uint64_t       delivery; /* the answer's delivery, 0: none */
	chan_status    status;   /* the answer's */
	uint32_t       conn;     /* the connection it was answered on */
	bool           cancelled; /* a tombstone: a Cancel named the id (no
	                          * answer, no call); the request, when it
	                          * comes (again), is answered "cancelled" */
	chd_idem_call *call;     /* while running */
} chd_idem_entry;

typedef struct chd_idem_client {
	chd_hnode               hn; /* hash = client */
	uint64_t                client;
	struct chd_idem_client *prev, *next; /* LRU, head = newest */
	chd_idem_entry          ring[CHD_IDEM_KEEP];
} chd_idem_client;

struct chd_idem_call {
	chd_req     inner; /* first: the engine's replies come with it */
	chd_req    *outer; /* under idem.mtx */
	chd_engine *e;
	uint64_t    client, id;
	atomic_bool cancelled; /* a Cancel named it while it ran */
};

typedef struct chd_idem_stripe {
	pthread_mutex_t  mtx;
	chd_htab         clients;
	chd_idem_client *head, *tail;
	size_t           n;
} chd_idem_stripe;

/* Striped by client so clients never contend on one lock. */
struct chd_idem {
	chd_idem_stripe s[CHD_IDEM_STRIPES];
};

/*
 * The table's bucket of a client: its id mixed, because the stripe is
 * picked from its low bits already (clients of one stripe would share a
 * few buckets: sequential ids put 64 clients in 4 of 64).
 */
static uint64_t
client_hash(uint64_t client)
{
	/* The buckets are the low bits: fold the high bits of the product in. */
	uint64_t x = client * 0x9E3779B97F4A7C15ull;

	return (x ^ (x >> 32));
}

static chd_idem_stripe *
stripe_of(chd_idem *t, uint64_t client)
{
	/* Client ids are random; mix anyway in case one is not. */
	return (&t->s[(client ^ (client >> 29) ^ (client >> 47)) %
	    CHD_IDEM_STRIPES]);
}

/* Set while a shard answers the tasks of a closed connection. */
static _Thread_local bool conn_closing;

void
chd_idem_conn_closing(bool on)
{
	conn_closing = on;
}

chd_idem *
chd_idem_new(void)
{
	chd_idem *t = calloc(1, sizeof(*t));

	if (t == NULL) {
		return (NULL);
	}
	for (int i = 0; i < CHD_IDEM_STRIPES; i++) {
		if (chd_htab_init(&t->s[i].clients) != 0) {
			while (--i >= 0) {
				chd_htab_fini(&t->s[i].clients);
				pthread_mutex_destroy(&t->s[i].mtx);
			}
			free(t);
			return (NULL);
		}
		pthread_mutex_init(&t->s[i].mtx, NULL);
	}
	return (t);
}

static chd_answer *
answer_pack(const Chan__V1__Response *resp, bool batch)
{
	chl_packer  pk;
	size_t      len = chl_packer_init(&pk, resp, batch);
	chd_answer *a = chd_answer_new(len);

	if (a != NULL) {
		(void) chl_packer_write(&pk, a->bytes);
	}
	chl_packer_fini(&pk);
	return (a);
}


static void
entry_clear(chd_idem_entry *ent)
{
	chd_answer_unref(ent->answer);
	memset(ent, 0, sizeof(*ent));
}

static void
client_unlink(chd_idem_stripe *t, chd_idem_client *c)
{
	if (c->prev != NULL) {
		c->prev->next = c->next;
	} else {
		t->head = c->next;
	}
	if (c->next != NULL) {
		c->next->prev = c->prev;
	} else {
		t->tail = c->prev;
	}
	c->prev = c->next = NULL;
}

static void
client_free(chd_idem_stripe *t, chd_idem_client *c)
{
	client_unlink(t, c);
	chd_htab_remove(&t->clients, &c->hn);
	t->n--;
	for (int i = 0; i < CHD_IDEM_KEEP; i++) {
		entry_clear(&c->ring[i]); /* running calls just stop caching */
	}
	free(c);
}

void
chd_idem_free(chd_idem *t)
{
	if (t == NULL) {
		return;
	}
	for (int i = 0; i < CHD_IDEM_STRIPES; i++) {
		chd_idem_stripe *st = &t->s[i];
		while (st->head != NULL) {
			client_free(st, st->head);
		}
		chd_htab_fini(&st->clients);
		pthread_mutex_destroy(&st->mtx);
	}
	free(t);
}

static chd_idem_client *
client_find(chd_idem_stripe *t, uint64_t client)
{
	chd_hnode *n = NULL;

	while ((n = chd_htab_find(&t->clients, client_hash(client), n)) != NULL) {
		if (((chd_idem_client *) n)->client == client) {
			return ((chd_idem_client *) n);
		}
	}
	return (NULL);
}

static chd_idem_entry *
entry_find(chd_idem_stripe *t, uint64_t client, uint64_t id)
{
	chd_idem_client *c = client_find(t, client);
	chd_idem_entry  *ent;

	if (c == NULL) {
		return (NULL);
	}
	ent = &c->ring[id % CHD_IDEM_KEEP];
	return (ent->id == id ? ent : NULL);
}

static chd_idem_client *
client_get(chd_idem_stripe *t, uint64_t client)
{
	chd_idem_client *c = client_find(t, client);

	if (c != NULL) {
		client_unlink(t, c);
	} else {
		if (t->n >= CHD_IDEM_CLIENTS) {
			client_free(t, t->tail);
		}
		if ((c = calloc(1, sizeof(*c))) == NULL) {
			return (NULL);
		}
		c->client = client;
		c->hn.hash = client_hash(client);
		chd_htab_insert(&t->clients, &c->hn);
		t->n++;
	}
	c->next = t->head;
	if (t->head != NULL) {
		t->head->prev = c;
	} else {
		t->tail = c;
	}
	t->head = c;
	return (c);
}

static void
reply_unavailable(chd_req *r, uint64_t id, const char *why)
{
	Chan__V1__Response resp = CHAN__V1__RESPONSE__INIT;

	resp.has_id = true;
	resp.id = id;
	resp.has_status = true;
	resp.status = CHAN__V1__STATUS__UNAVAILABLE;
	resp.error = (char *) why;
	r->reply(r, &resp);
}

/*
 * Sends the packed answer a (a reference the caller gives up) to r: as
 * bytes when r takes them, else decoded again for r->reply.
 */
static void
send_answer(chd_engine *e, chd_req *r, chd_answer *a, chan_status st, uint64_t delivery)
{
	Chan__V1__Response *resp;

	if (r->reply_answer != NULL) {
		r->reply_answer(r, a, st, delivery);
		return;
	}
	resp = chan__v1__response__unpack(NULL, a->len, a->bytes);
	chd_answer_unref(a);
	if (resp == NULL) {
		chd_reply_err(e, r, CHAN_INTERNAL, "cached answer is corrupt");
		return;
	}
	r->reply(r, resp);
	chan__v1__response__free_unpacked(resp, NULL);
}

/* The cached answer a (a reference the caller gives up) to r. */
static void
replay(chd_engine *e, chd_req *r, chd_answer *a, chan_status st, uint64_t delivery)
{
	atomic_fetch_add(&e->requests, 1);
	send_answer(e, r, a, st, delivery);
}

static void idem_reply(chd_req *inner, const Chan__V1__Response *resp);
static void idem_reply_answer(chd_req *inner, chd_answer *a, chan_status st,
    uint64_t delivery);

typedef struct chd_reown {
	uint64_t delivery;
	uint32_t conn;
} chd_reown;

static void
reown_job(chd_shard *sh, void *arg)
{
	chd_reown *ro = arg;

	chd_chan_reown(sh, ro->delivery, ro->conn);
	free(ro);
}

/*
 * The replayed messages now sit with the client on its new connection:
 * custody follows, so closing the old one does not give them back. The
 * job goes to the delivery's shard ahead of that close's job when the
 * repeat came first (mailboxes are FIFO).
 */
static void
post_reown(chd_engine *e, uint64_t delivery, uint32_t conn)
{
	chd_reown *ro = malloc(sizeof(*ro));

	if (ro == NULL) {
		return; /* then given back: at-least-once, never lost */
	}
	ro->delivery = delivery;
	ro->conn = conn;
	if (chd_shard_post(e->shards[delivery % (uint64_t) e->n], reown_job,
	    ro) != 0) {
		free(ro);
	}
}

chd_req *
chd_idem_begin(chd_engine *e, chd_req *r)
{
	uint64_t         client = r->msg->client, id = r->msg->id;
	chd_idem_stripe *t = stripe_of(e->idem, client);
	chd_idem_client *c;
	chd_idem_entry  *ent;
	chd_idem_call   *call;
	chd_req         *old;

	if ((call = calloc(1, sizeof(*call))) == NULL) {
		return (r); /* no memory: served without the cache */
	}
	pthread_mutex_lock(&t->mtx);
	if ((c = client_get(t, client)) == NULL) {
		pthread_mutex_unlock(&t->mtx);
		free(call);
		return (r);
	}
	ent = &c->ring[id % CHD_IDEM_KEEP];
	if (ent->id == id && ent->answer != NULL && ent->delivery != 0 &&
	    !chd_engine_conn_alive(e, ent->conn)) {
		/* Its messages are on their way back to their channel (the
		 * connection-close jobs are queued ahead): receive afresh. */
		entry_clear(ent);
	}
	if (ent->id == id && (ent->cancelled || (ent->call != NULL &&
	    atomic_load(&ent->call->cancelled)))) {
		/* Withdrawn by the client: never run it (again), and a repeat
		 * of a cancelled running call does not take its answer. */
		pthread_mutex_unlock(&t->mtx);
		free(call);
		atomic_fetch_add(&e->requests, 1);
		reply_unavailable(r, id, "cancelled");
		return (NULL);
	}
	if (ent->id == id && ent->answer != NULL) {
		chd_answer *a = ent->answer;
		uint64_t    reown = 0, delivery = ent->delivery;
		chan_status st = ent->status;

		atomic_fetch_add(&a->refs, 1);
		if (ent->delivery != 0 && ent->conn != r->conn) {
			reown = ent->delivery;
			ent->conn = r->conn;
		}
		pthread_mutex_unlock(&t->mtx);
		free(call);
		if (reown != 0) {
			post_reown(e, reown, r->conn);
		}
		replay(e, r, a, st, delivery);
		return (NULL);
	}
	if (ent->id == id && ent->call != NULL) {
		old = ent->call->outer;
		ent->call->outer = r;
		pthread_mutex_unlock(&t->mtx);
		free(call);
		reply_unavailable(old, id, "request repeated; the answer goes "
		    "to the repeat");
		return (NULL);
	}
	entry_clear(ent); /* an older id, or a running one: stops caching */
	call->e = e;
	call->client = client;
	call->id = id;
	atomic_init(&call->cancelled, false);
	call->outer = r;
	call->inner = *r;
	/* The allocator's state moves with the message it allocated. */
	call->inner.alloc.base.allocator_data = &call->inner.alloc;
	call->inner.reply = idem_reply;
	call->inner.reply_answer = idem_reply_answer;
	call->inner.owner = call;
	r->msg = NULL;
	ent->id = id;
	ent->call = call;
	pthread_mutex_unlock(&t->mtx);
	return (&call->inner);
}

/* A recv in ack mode: its answer's messages are leased. */
static bool
cancel_leased(const Chan__V1__Request *m)
{
	return (m != NULL && m->op_case == CHAN__V1__REQUEST__OP_RECV &&
	    m->recv != NULL && m->recv->has_lease_ms && m->recv->lease_ms > 0);
}

/* Answers that must not stick: a retry should do the work again. */
static bool
cacheable(chan_status st)
{
	switch (st) {
	case CHAN_UNAVAILABLE:
	case CHAN_SHUTTING_DOWN:
	case CHAN_RESOURCE_EXHAUSTED:
	case CHAN_INTERNAL:
		return (false);
	default:
		return (true);
	}
}

/*
 * The end of a call: its answer (resp, or only packed as a, or both; a is
 * a reference given up here) is cached when it may stick, and goes to the
 * request the client is waiting on (the latest repeat).
 */
static void
idem_finish(chd_req *inner, const Chan__V1__Response *resp, chd_answer *a,
    chan_status st, uint64_t delivery)
{
	chd_idem_call   *call = inner->owner;
	chd_engine      *e = call->e;
	chd_idem_stripe *t = stripe_of(e->idem, call->client);
	chd_idem_entry  *ent;
	chd_req         *outer;
	bool             cancelled;
	bool             withdrawn = false; /* answer "cancelled" instead */

	pthread_mutex_lock(&t->mtx);
	/* Under the lock, as a Cancel sets it: either that Cancel saw the
	 * call running (and we see the mark), or it sees our cached answer
	 * and gives its custody back itself. */
	cancelled = atomic_load(&call->cancelled);
	outer = call->outer;
	ent = entry_find(t, call->client, call->id);
	if (ent != NULL && ent->call != call) {
		ent = NULL;
	}
	if (cancelled) {
		/*
		 * Cancelled while it ran. Answered with messages before the
		 * Cancel reached its shard: they go back (a delivery here, a
		 * lease by the Cancel's own shard job) and the caller, who
		 * stopped waiting, is told "cancelled". Failed: stays failed.
		 * Anything else (a send admitted, a wait satisfied) was done
		 * and is cached as usual: a Cancel cannot undo it.
		 */
		withdrawn = st == CHAN_OK && (delivery != 0 ||
		    cancel_leased(inner->msg));
		if (ent != NULL && (withdrawn || !cacheable(st))) {
			entry_clear(ent);
			ent->id = call->id;
			ent->cancelled = true;
			ent = NULL;
		}
	}
	if (conn_closing && ent != NULL && st == CHAN_UNAVAILABLE &&
	    outer->conn != inner->conn) {
		/* Its connection is gone but the client repeated it on a
		 * new one: run it again there instead of failing it. */
		inner->conn = outer->conn;
		pthread_mutex_unlock(&t->mtx);
		chd_answer_unref(a);
		chd_engine_dispatch(e, inner);
		return;
	}
	if (ent != NULL) {
		if (a != NULL && cacheable(st)) {
			atomic_fetch_add(&a->refs, 1); /* the entry's */
			ent->answer = a;
			ent->delivery = delivery;
			ent->status = st;
			ent->conn = inner->conn;
			ent->call = NULL;
		} else {
			entry_clear(ent);
		}
	}
	pthread_mutex_unlock(&t->mtx);
	if (withdrawn) {
		if (delivery != 0) {
			chd_chan_post_give_back(e, delivery, call->client);
		}
		chd_answer_unref(a);
		reply_unavailable(outer, call->id, "cancelled");
	} else if (a != NULL && (outer->reply_answer != NULL || resp == NULL)) {
		send_answer(e, outer, a, st, delivery);
	} else {
		outer->reply(outer, resp);
		chd_answer_unref(a);
	}
	chl_request_free(&inner->alloc, inner->msg);
	free(call);
}

bool
chd_idem_req_cancelled(const chd_req *r)
{
	return (r->reply == idem_reply &&
	    atomic_load(&((chd_idem_call *) r->owner)->cancelled));
}

static void
idem_reply(chd_req *inner, const Chan__V1__Response *resp)
{
	chan_status st = (chan_status) resp->status;
	chd_answer *a = NULL;

	/* Packed once, outside the lock: the same bytes are cached and sent. */
	if (cacheable(st)) {
		a = answer_pack(resp, chd_req_wants_batch(inner));
	}
	idem_finish(inner, resp, a, st, resp->has_delivery ? resp->delivery : 0);
}

/* An answer the engine packed itself. */
static void
idem_reply_answer(chd_req *inner, chd_answer *a, chan_status st, uint64_t delivery)
{
	idem_finish(inner, NULL, a, st, delivery);
}

void
chd_idem_forget_delivery(chd_engine *e, uint64_t client, uint64_t delivery)
{
	chd_idem_stripe *t;
	chd_idem_client *c;

	if (e->idem == NULL || client == 0) {
		return;
	}
	t = stripe_of(e->idem, client);
	pthread_mutex_lock(&t->mtx);
	if ((c = client_find(t, client)) != NULL) {
		for (int i = 0; i < CHD_IDEM_KEEP; i++) {
			if (c->ring[i].delivery == delivery &&
			    c->ring[i].answer != NULL) {
				entry_clear(&c->ring[i]);
			}
		}
	}
	pthread_mutex_unlock(&t->mtx);
}

bool
chd_idem_id_cancelled(chd_engine *e, uint64_t client, uint64_t id)
{
	chd_idem_stripe *t;
	chd_idem_entry  *ent;
	bool             cancelled = false;

	if (e->idem == NULL || client == 0) {
		return (false);
	}
	t = stripe_of(e->idem, client);
	pthread_mutex_lock(&t->mtx);
	if ((ent = entry_find(t, client, id)) != NULL) {
		cancelled = ent->cancelled || (ent->call != NULL &&
		    atomic_load(&ent->call->cancelled));
	}
	pthread_mutex_unlock(&t->mtx);
	return (cancelled);
}

/* ---- Cancel ------------------------------------------------------------- */

/* One Cancel's shard work, shared by every shard's job (counted). */
typedef struct chd_cancel_work {
	atomic_int      refs;
	uint64_t        client;
	size_t          n;
	chd_cancel_item items[];
} chd_cancel_work;

static void
cancel_work_unref(chd_cancel_work *w)
{
	if (atomic_fetch_sub(&w->refs, 1) == 1) {
		free(w);
	}
}

static void
cancel_job(chd_shard *sh, void *arg)
{
	chd_cancel_work *w = arg;

	chd_chan_cancel(sh, w->client, w->items, w->n);
	cancel_work_unref(w);
}

/*
 * What the cache knows of (client, id), for a Cancel (stripe lock held):
 * a running call is marked (its tasks are stopped by the shard jobs; one
 * not parked yet sees the mark when it starts), custody of an answer is
 * given back, an id not seen yet gets a tombstone. True when found
 * running or holding messages.
 */
static bool
cancel_one(chd_idem_client *c, uint64_t id, chd_cancel_item *it)
{
	chd_idem_entry *ent = &c->ring[id % CHD_IDEM_KEEP];

	memset(it, 0, sizeof(*it));
	it->id = id;
	if (ent->id == id) {
		if (ent->call != NULL) {
			atomic_store(&ent->call->cancelled, true);
			it->running = true;
			it->conn = ent->call->inner.conn;
			return (true);
		}
		if (ent->answer != NULL && ent->delivery != 0) {
			it->delivery = ent->delivery;
			entry_clear(ent);
			ent->id = id;
			ent->cancelled = true;
			return (true);
		}
		return (false); /* a tombstone, or a plain answer (kept) */
	}
	if (ent->id == 0 || ent->id < id) {
		/* Not seen yet (or seen and forgotten: no harm). The slot's
		 * older id stops being cached, as a new request would do. */
		entry_clear(ent);
		ent->id = id;
		ent->cancelled = true;
	}
	return (false); /* else too old to know */
}

void
chd_idem_cancel(chd_engine *e, chd_req *r)
{
	const Chan__V1__Cancel  *cm = r->msg->cancel;
	uint64_t                 client = r->msg->client;
	chd_idem_stripe         *t = stripe_of(e->idem, client);
	chd_idem_client         *c;
	chd_cancel_work         *w;
	chd_resp                 a;
	Chan__V1__ValueResult    vr = CHAN__V1__VALUE_RESULT__INIT;
	int64_t                  found = 0;

	if ((w = malloc(sizeof(*w) + cm->n_ids * sizeof(w->items[0]))) ==
	    NULL) {
		chd_reply_err(e, r, CHAN_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	w->client = client;
	w->n = cm->n_ids;
	atomic_init(&w->refs, e->n + 1);
	pthread_mutex_lock(&t->mtx);
	if ((c = client_get(t, client)) == NULL) {
		pthread_mutex_unlock(&t->mtx);
		free(w);
		chd_reply_err(e, r, CHAN_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	for (size_t i = 0; i < cm->n_ids; i++) {
		found += cancel_one(c, cm->ids[i], &w->items[i]);
	}
	pthread_mutex_unlock(&t->mtx);
	/*
	 * Every shard looks: the cache does not know where a call parked
	 * (a recv_any spans shards) nor which shard holds a lease. After
	 * the mark, so a call that parks later than its shard's job ran
	 * has seen the mark first (chd_shard_post keeps order per shard).
	 */
	for (int i = 0; i < e->n; i++) {
		if (chd_shard_post(e->shards[i], cancel_job, w) != 0) {
			cancel_work_unref(w);
		}
	}
	cancel_work_unref(w);
	chd_resp_init(&a);
	vr.has_value = true;
	vr.value = found;
	a.r.result_case = CHAN__V1__RESPONSE__RESULT_VALUE;
	a.r.value = &vr;
	chd_resp_send(e, r, &a, CHAN_OK);
}
