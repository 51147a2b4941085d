/*
 * channel.c - named MPSC channels of one shard (SPEC "Channels"): the
 * message queue, parked senders and receivers, sender/receiver handles,
 * and the custody of handed-out messages (deliveries) until confirmed.
 *
 * Every state change ends in chan_pump(), the one place that decides who
 * proceeds: admit parked senders while they fit, hand messages to parked
 * receivers, answer receivers CLOSED once closed and drained. Keeping that
 * logic in one loop is what makes FIFO, rendezvous and all-or-nothing
 * batches hold together.
 */
#include "engine_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch_emit.h"
#include "names.h"
#include "wire.h"

/*
 * A queued message: 32 bytes of header, then the payload, in one object
 * from the shard's slabs (engine_int.h). Payloads are at most
 * max_message_size (under 1 GiB), so 32 bits hold the length.
 *
 * A big payload (CHD_BORROW_MIN bytes or more) is not copied: it stays in
 * the request buffer it arrived in (a chd_rxbuf, counted by the messages
 * pointing into it), and the message is a chd_msgref (borrowed set) whose
 * header is all that comes from the slabs. Why: at 1 KiB that copy was 8%
 * of chand's CPU, and walking the queue touched a new cache line per
 * message (the headers of copied payloads are a payload apart); borrowed
 * headers sit side by side.
 */
typedef struct chd_msg {
	struct chd_msg *next;
	uint64_t        seq;
	uint64_t        time_us;
	uint32_t        len;
	uint8_t         cls;     /* its slab class (for the free) */
	bool            redelivered;
	bool            borrowed; /* a chd_msgref */
	unsigned char   data[];
} chd_msg;

_Static_assert(sizeof(chd_msg) == 32, "chd_msg header is 32 bytes");

#define CHD_BORROW_MIN 512u /* smaller payloads are copied: cheap, and dense */

/*
 * A request buffer kept for the payloads borrowed from it. Only the
 * owning shard touches it (under its exec lock), so refs is plain.
 * max-memory counts the whole buffer (charge) while any message needs it,
 * because that is the memory held: one message left of a large batch
 * keeps all of it. Buffers are kept only when big payloads are at least
 * 3/4 of them, so the count is never much above the payloads'.
 */
typedef struct chd_rxbuf {
	size_t refs;   /* messages pointing into it */
	size_t charge; /* bytes it holds of the daemon-wide count */
	void  *input;
	void (*input_free)(void *);
} chd_rxbuf;

typedef struct chd_msgref {
	chd_msg        h;
	const uint8_t *data;
	chd_rxbuf     *buf;
} chd_msgref;

static inline const uint8_t *
msg_data(const chd_msg *m)
{
	return (m->borrowed ? ((const chd_msgref *) m)->data : m->data);
}

/* Messages handed out in one answer, kept until confirmed. */
typedef struct chd_delivery {
	chd_hnode            hn; /* hash = id */
	uint64_t             id;
	uint64_t             client; /* Request.client of the recv, 0: none */
	uint32_t             conn;
	bool                 spent;  /* its custody grace is used up: other
	                              * connections' recvs no longer wait */
	chd_chan            *ch;
	chd_msg             *head;
	size_t               n;
	uint64_t             bytes;
	struct chd_delivery *cprev, *cnext;
	chd_connrec         *crec;   /* conn's record, NULL: not indexed */
	struct chd_delivery *oprev, *onext; /* crec->deliveries */
} chd_delivery;

/*
 * Ack mode: messages leased by one recv (or one delayed release), back in
 * the queue when the lease ends unless acked one by one first. Unlike
 * custody they count against a bounded channel's capacity.
 */
typedef struct chd_lease {
	chd_hnode         hn;    /* sh->leases, by (client, id); first */
	uint64_t          client, id; /* the recv that took it (0: none) */
	struct chd_lease *next, *prev;
	chd_chan         *ch;
	chd_shard        *sh;
	uint32_t          conn;  /* 0: a delayed release, no connection */
	bool              delayed; /* released with a delay: nobody's */
	struct event     *timer;
	chd_msg          *head;  /* by seq */
} chd_lease;

typedef struct chd_sender {
	struct chd_sender *prev, *next; /* the channel's */
	chd_chan          *ch;
	uint64_t           id;
	uint32_t           conn;
	chd_connrec       *crec;  /* conn's record, NULL: not indexed */
	struct chd_sender *oprev, *onext; /* crec->senders */
} chd_sender;

enum chd_chan_kind { CHD_UNBOUNDED, CHD_BOUNDED, CHD_RENDEZVOUS };

struct chd_chan {
	chd_hnode          hn;
	chd_shard         *sh;
	char              *name;
	enum chd_chan_kind kind;
	uint64_t           cap;
	chd_msg           *qhead, *qtail;
	uint64_t           depth, bytes;
	uint64_t           next_seq;
	bool               closed;
	uint32_t           rx_conn;    /* valid while a receiver is attached */
	uint64_t           rx_handle;  /* explicit receiver, 0: none */
	chd_task          *rhead, *rtail;
	uint32_t           nrecv;
	chd_task          *shead, *stail;
	uint32_t           nsend;
	chd_sender        *senders;
	uint32_t           nsenders;
	bool               had_senders;
	chd_delivery      *inflight;
	uint64_t           nin_flight, in_flight_bytes;
	uint64_t           nunspent;   /* deliveries whose grace is not spent */
	struct event      *grace_ev;   /* custody grace timer (lazy) */
	bool               grace_armed;
	uint32_t           grace_conn; /* the receivers' conn it runs for */
	int64_t            grace_end_ms;
	chd_lease         *leases;
	uint64_t           nleased, leased_bytes;
	uint64_t           total_sent, total_received, total_dropped;
	uint64_t           total_redelivered;
	/* Per-connection index (engine_int.h, chd_connrec). */
	chd_connrec       *rx_rec;     /* rx_conn's, while rx_handle != 0 */
	chd_chan          *rx_oprev, *rx_onext;
	chd_connrec       *grace_rec;  /* grace_conn's, while grace_armed */
	chd_chan          *grace_oprev, *grace_onext;
	bool               touched;    /* in a closing connection's pump list */
	chd_chan          *tnext;
};

static void       chan_pump(chd_shard *sh, chd_chan *ch);
static void       queue_give_back(chd_chan *ch, chd_msg *head);
static chd_lease *lease_new(chd_shard *sh, chd_chan *ch, chd_msg *head,
    uint32_t conn, uint64_t ms, const chd_req *r);

/* ---- the per-connection index (chd_connrec) ----------------------------- */

/* Custody of d passes to conn (a new delivery, or a replay's reown). */
static void
delivery_own(chd_shard *sh, chd_delivery *d, uint32_t conn)
{
	if (d->crec != NULL) {
		CHD_DL_REMOVE(d->crec->deliveries, d, oprev, onext);
	}
	d->conn = conn;
	if ((d->crec = chd_shard_conn(sh, conn, true)) != NULL) {
		CHD_DL_PUSH(d->crec->deliveries, d, oprev, onext);
	}
}

static void
delivery_unown(chd_delivery *d)
{
	if (d->crec != NULL) {
		CHD_DL_REMOVE(d->crec->deliveries, d, oprev, onext);
		d->crec = NULL;
	}
}

/* ch's receiver handle (rx_handle, rx_conn just set) belongs to rx_conn. */
static void
rx_own(chd_shard *sh, chd_chan *ch)
{
	if ((ch->rx_rec = chd_shard_conn(sh, ch->rx_conn, true)) != NULL) {
		CHD_DL_PUSH(ch->rx_rec->rx_chans, ch, rx_oprev, rx_onext);
	}
}

static void
rx_unown(chd_chan *ch)
{
	if (ch->rx_rec != NULL) {
		CHD_DL_REMOVE(ch->rx_rec->rx_chans, ch, rx_oprev, rx_onext);
		ch->rx_rec = NULL;
	}
}

static void
grace_unown(chd_chan *ch)
{
	if (ch->grace_rec != NULL) {
		CHD_DL_REMOVE(ch->grace_rec->grace_chans, ch, grace_oprev,
		    grace_onext);
		ch->grace_rec = NULL;
	}
}

/*
 * The grace timer now runs for conn's receivers. A connection already
 * closed gets no record (its close work ran; nothing would free it).
 */
static void
grace_own(chd_chan *ch, uint32_t conn)
{
	chd_shard *sh = ch->sh;

	if (ch->grace_rec != NULL && ch->grace_rec->conn == conn) {
		return;
	}
	grace_unown(ch);
	ch->grace_rec = chd_shard_conn(sh, conn,
	    chd_engine_conn_alive(sh->e, conn));
	if (ch->grace_rec != NULL) {
		CHD_DL_PUSH(ch->grace_rec->grace_chans, ch, grace_oprev,
		    grace_onext);
	}
}

static void
sender_unown(chd_sender *s)
{
	if (s->crec != NULL) {
		CHD_DL_REMOVE(s->crec->senders, s, oprev, onext);
		s->crec = NULL;
	}
}

const char *
chd_chan_name(const chd_chan *ch)
{
	return (ch->name);
}

/* ---- lookup and lifetime ------------------------------------------------ */

static chd_chan *
chan_lookup(chd_shard *sh, const char *name)
{
	uint64_t   h = chd_hash_name('c', name);
	chd_hnode *n = NULL;

	while ((n = chd_htab_find(&sh->chans, h, n)) != NULL) {
		chd_chan *ch = (chd_chan *) n;
		if (strcmp(ch->name, name) == 0) {
			return (ch);
		}
	}
	return (NULL);
}

static chd_chan *
chan_new(chd_shard *sh, const char *name, enum chd_chan_kind kind,
    uint64_t cap)
{
	chd_engine *e = sh->e;
	chd_chan   *ch;
	uint64_t    n = atomic_load(&e->nchannels);

	/* A slot under opts.max_channels first (shards create concurrently). */
	do {
		if (e->opts.max_channels != 0 && n >= e->opts.max_channels) {
			return (NULL);
		}
	} while (!atomic_compare_exchange_weak(&e->nchannels, &n, n + 1));
	if ((ch = calloc(1, sizeof(*ch))) == NULL ||
	    (ch->name = strdup(name)) == NULL) {
		free(ch);
		atomic_fetch_sub(&e->nchannels, 1);
		return (NULL);
	}
	ch->sh = sh;
	ch->kind = kind;
	ch->cap = cap;
	ch->next_seq = 1;
	ch->hn.hash = chd_hash_name('c', name);
	chd_htab_insert(&sh->chans, &ch->hn);
	sh->nchans++;
	return (ch);
}

chd_chan *
chd_chan_get(chd_shard *sh, const char *name, bool create)
{
	chd_chan *ch = chan_lookup(sh, name);

	if (ch == NULL && create && sh->e->opts.auto_create) {
		ch = chan_new(sh, name, CHD_UNBOUNDED, 0);
	}
	return (ch);
}

/* A borrowing message lets go of its buffer; returns the bytes released. */
static uint64_t
rxbuf_unref(chd_rxbuf *b)
{
	uint64_t charge = b->charge;

	if (--b->refs > 0) {
		return (0);
	}
	b->input_free(b->input);
	free(b);
	return (charge);
}

/* Every message leaves through here: the daemon-wide byte count drops. */
static void
msgs_free(chd_shard *sh, chd_msg *m)
{
	chd_msg *next;
	uint64_t bytes = 0;

	for (; m != NULL; m = next) {
		next = m->next;
		if (m->borrowed) {
			bytes += rxbuf_unref(((chd_msgref *) m)->buf);
		} else {
			bytes += m->len;
		}
		chd_slab_free(&sh->slabs, m, m->cls);
	}
	atomic_fetch_sub(&sh->e->held_bytes, bytes);
}

static void
delivery_unlink(chd_shard *sh, chd_delivery *d)
{
	chd_chan *ch = d->ch;

	chd_htab_remove(&sh->deliveries, &d->hn);
	delivery_unown(d);
	if (d->cprev != NULL) {
		d->cprev->cnext = d->cnext;
	} else {
		ch->inflight = d->cnext;
	}
	if (d->cnext != NULL) {
		d->cnext->cprev = d->cprev;
	}
	ch->nin_flight -= d->n;
	ch->in_flight_bytes -= d->bytes;
	if (!d->spent) {
		ch->nunspent--;
	}
}

/* Unlinks and frees a lease (its messages already moved or freed). */
static void
lease_free(chd_lease *l)
{
	chd_chan *ch = l->ch;

	if (l->prev != NULL) {
		l->prev->next = l->next;
	} else {
		ch->leases = l->next;
	}
	if (l->next != NULL) {
		l->next->prev = l->prev;
	}
	if (l->client != 0) {
		chd_htab_remove(&l->sh->leases, &l->hn);
	}
	if (l->timer != NULL) {
		chd_shard_timer_free(l->sh, l->timer);
	}
	free(l);
}

/*
 * Drops queued and in-flight messages (receiver drop, delete). Only the
 * queued ones count as dropped: the in-flight ones reached the receiver
 * that is now hanging up; nothing will give them back any more.
 */
static void
chan_discard(chd_shard *sh, chd_chan *ch)
{
	ch->total_dropped += ch->depth;
	msgs_free(sh, ch->qhead);
	ch->qhead = ch->qtail = NULL;
	ch->depth = ch->bytes = 0;
	while (ch->inflight != NULL) {
		chd_delivery *d = ch->inflight;
		delivery_unlink(sh, d);
		msgs_free(sh, d->head);
		free(d);
	}
	while (ch->leases != NULL) {
		chd_lease *l = ch->leases;
		for (chd_msg *m = l->head; m != NULL; m = m->next) {
			ch->nleased--;
			ch->leased_bytes -= m->len;
		}
		msgs_free(sh, l->head);
		l->head = NULL;
		lease_free(l);
	}
}

static void
chan_free(chd_shard *sh, chd_chan *ch)
{
	chd_sender *s, *next;

	chan_discard(sh, ch);
	for (s = ch->senders; s != NULL; s = next) {
		next = s->next;
		sender_unown(s);
		free(s);
	}
	rx_unown(ch);
	grace_unown(ch);
	if (ch->grace_ev != NULL) {
		chd_shard_timer_free(sh, ch->grace_ev);
	}
	chd_htab_remove(&sh->chans, &ch->hn);
	sh->nchans--;
	atomic_fetch_sub(&sh->e->nchannels, 1);
	free(ch->name);
	free(ch);
}

void
chd_chan_each(chd_shard *sh, chd_chan_visit_fn fn, void *arg)
{
	for (size_t i = 0; i < sh->chans.nb; i++) {
		chd_hnode *n, *next;
		for (n = sh->chans.b[i]; n != NULL; n = next) {
			next = n->hnext; /* fn may delete the channel */
			fn(arg, (chd_chan *) n);
		}
	}
}

static void
chan_free_visit(void *arg, chd_chan *ch)
{
	chan_free(arg, ch);
}

void
chd_chan_free_all(chd_shard *sh)
{
	chd_chan_each(sh, chan_free_visit, sh);
}

void
chd_chan_totals(chd_shard *sh, uint64_t *msgs, uint64_t *bytes)
{
	for (size_t i = 0; i < sh->chans.nb; i++) {
		for (chd_hnode *n = sh->chans.b[i]; n != NULL; n = n->hnext) {
			chd_chan *ch = (chd_chan *) n;
			*msgs += ch->depth + ch->nin_flight + ch->nleased;
			*bytes += ch->bytes + ch->in_flight_bytes +
			    ch->leased_bytes;
		}
	}
}

/* ---- receivers and senders queues --------------------------------------- */

static bool
chan_attached(const chd_chan *ch)
{
	return (ch->rx_handle != 0 || ch->rhead != NULL);
}

uint32_t
chd_chan_rx_busy(chd_chan *ch, uint32_t conn)
{
	if (chan_attached(ch) && ch->rx_conn != conn) {
		return (ch->rx_conn);
	}
	return (0);
}

bool
chd_chan_has_msgs(chd_chan *ch)
{
	return (ch->depth > 0);
}

bool
chd_chan_closed_drained(chd_chan *ch)
{
	return (ch->closed && ch->depth == 0);
}

/* ---- custody grace ------------------------------------------------------ */

/*
 * Messages in another connection's custody are older than anything still
 * queued. If that connection dies they go back to the head; a receiver
 * that took newer ones meanwhile would confirm them out of order. So a
 * receiver waits (opts.custody_grace_ms at most) until that custody ends;
 * when the grace runs out the holder's deliveries are marked spent and
 * nobody waits for them again (a live but idle holder delays the next
 * consumer once, not on every call). Deliveries per channel are few (one
 * or two per consumer until its next request confirms them), so a scan is
 * cheap, and skipped when every grace is spent.
 */
bool
chd_chan_custody_gated(const chd_chan *ch, uint32_t conn)
{
	if (ch->nunspent == 0 || ch->sh->e->opts.custody_grace_ms == 0) {
		return (false);
	}
	for (const chd_delivery *d = ch->inflight; d != NULL; d = d->cnext) {
		if (!d->spent && d->conn != conn) {
			return (true);
		}
	}
	return (false);
}

/* The grace of the custody conn's receivers waited for is used up. */
static void
chan_grace_spend(chd_chan *ch, uint32_t conn)
{
	for (chd_delivery *d = ch->inflight; d != NULL; d = d->cnext) {
		if (!d->spent && d->conn != conn) {
			d->spent = true;
			ch->nunspent--;
		}
	}
}

static void
chan_grace_disarm(chd_chan *ch)
{
	if (ch->grace_armed) {
		chd_shard_timer_del(ch->sh, ch->grace_ev);
		ch->grace_armed = false;
		grace_unown(ch);
	}
}

static void
chan_grace_cb(evutil_socket_t fd, short what, void *arg)
{
	chd_chan  *ch = arg;
	chd_shard *sh = ch->sh;

	if (!chd_shard_timer_begin(sh, ch->grace_ev)) {
		return;
	}
	ch->grace_armed = false;
	grace_unown(ch);
	chan_grace_spend(ch, ch->grace_conn);
	chan_pump(sh, ch);
	chd_shard_timer_end(sh);
}

/*
 * conn's receivers wait for other connections' custody: starts the grace
 * timer, or brings it forward for a receiver whose own timeout is shorter
 * (cap_ms; 0: the full grace). A timer that ran for another connection's
 * receivers starts over for these.
 */
static void
chan_grace_arm(chd_chan *ch, uint32_t conn, uint32_t cap_ms)
{
	uint32_t       grace = ch->sh->e->opts.custody_grace_ms;
	uint32_t       ms = cap_ms == 0 || cap_ms > grace ? grace : cap_ms;
	int64_t        end = chl_now_mono_ms() + ms;
	struct timeval tv;

	if (ch->grace_armed && ch->grace_conn == conn &&
	    ch->grace_end_ms <= end) {
		return;
	}
	if (ch->grace_ev == NULL && (ch->grace_ev = evtimer_new(ch->sh->base,
	    chan_grace_cb, ch)) == NULL) {
		/* Cannot time a wait: do not wait (order at risk, never a
		 * message). The caller pumps. */
		chan_grace_spend(ch, conn);
		return;
	}
	ch->grace_armed = true;
	ch->grace_conn = conn;
	grace_own(ch, conn);
	ch->grace_end_ms = end;
	(void) chd_timeval(ms, &tv);
	evtimer_add(ch->grace_ev, &tv);
}

void
chd_chan_add_receiver(chd_chan *ch, chd_task *t)
{
	if (!chan_attached(ch)) {
		ch->rx_conn = t->conn;
	}
	if (chd_chan_custody_gated(ch, t->conn)) {
		chan_grace_arm(ch, t->conn, t->grace_ms);
	}
	t->ch = ch;
	t->qnext = NULL;
	t->qprev = ch->rtail;
	if (ch->rtail != NULL) {
		ch->rtail->qnext = t;
	} else {
		ch->rhead = t;
	}
	ch->rtail = t;
	ch->nrecv++;
}

void
chd_chan_remove_receiver(chd_chan *ch, chd_task *t)
{
	if (t->qprev != NULL) {
		t->qprev->qnext = t->qnext;
	} else {
		ch->rhead = t->qnext;
	}
	if (t->qnext != NULL) {
		t->qnext->qprev = t->qprev;
	} else {
		ch->rtail = t->qprev;
	}
	t->qprev = t->qnext = NULL;
	ch->nrecv--;
	if (!chan_attached(ch)) {
		ch->rx_conn = 0;
	}
}

static void
chan_add_sender_task(chd_chan *ch, chd_task *t)
{
	t->ch = ch;
	t->qnext = NULL;
	t->qprev = ch->stail;
	if (ch->stail != NULL) {
		ch->stail->qnext = t;
	} else {
		ch->shead = t;
	}
	ch->stail = t;
	ch->nsend++;
}

static void
chan_remove_sender_task(chd_chan *ch, chd_task *t)
{
	if (t->qprev != NULL) {
		t->qprev->qnext = t->qnext;
	} else {
		ch->shead = t->qnext;
	}
	if (t->qnext != NULL) {
		t->qnext->qprev = t->qprev;
	} else {
		ch->stail = t->qprev;
	}
	t->qprev = t->qnext = NULL;
	ch->nsend--;
}

/*
 * A task left its queue with an answer: parked ones are freed here, the
 * caller still holding a fresh (unparked) one sees done and frees it.
 */
static void
task_finish(chd_task *t)
{
	t->done = true;
	t->req = NULL;
	if (t->parked) {
		chd_task_unpark(t);
		free(t);
	}
}

/* ---- the queue ---------------------------------------------------------- */

/* Adds want to the daemon-wide count unless that passes max-memory. */
static bool
held_reserve(chd_engine *e, uint64_t want)
{
	/* Reserve first, so concurrent shards cannot overshoot together. */
	uint64_t held = atomic_fetch_add(&e->held_bytes, want) + want;

	if (e->opts.max_memory != 0 && held > e->opts.max_memory) {
		atomic_fetch_sub(&e->held_bytes, want);
		return (false);
	}
	return (true);
}

static bool
borrowable(const chl_capped_alloc *ca, const ProtobufCBinaryData *d)
{
	return (d->len >= CHD_BORROW_MIN && chl_capped_alloc_in_input(ca, d->data, d->len));
}

/*
 * r's request buffer, taken over for its big payloads and counted whole;
 * NULL (nothing taken, nothing counted): copy them all instead, because
 * the buffer would pass max-memory where the payloads alone may not, or
 * there is no memory for its record.
 */
static chd_rxbuf *
rxbuf_take(chd_engine *e, chd_req *r)
{
	chd_rxbuf *b;

	if (!held_reserve(e, r->alloc.input_len)) {
		return (NULL);
	}
	if ((b = calloc(1, sizeof(*b))) == NULL) {
		atomic_fetch_sub(&e->held_bytes, r->alloc.input_len);
		return (NULL);
	}
	b->charge = r->alloc.input_len;
	(void) chl_capped_alloc_take_input(&r->alloc, &b->input, &b->input_free);
	return (b);
}

/* Undoes rxbuf_take (no message points into it): r frees its buffer again. */
static void
rxbuf_untake(chd_engine *e, chd_req *r, chd_rxbuf *b)
{
	chl_capped_alloc_return_input(&r->alloc, b->input, b->input_free);
	atomic_fetch_sub(&e->held_bytes, b->charge);
	free(b);
}

/* One message of a send: its header, and its payload copied or borrowed. */
static inline __attribute__((always_inline)) chd_msg *
msg_new(chd_shard *sh, const ProtobufCBinaryData *d, chd_rxbuf *buf, const chl_capped_alloc *ca)
{
	bool     borrow = buf != NULL && borrowable(ca, d);
	uint8_t  cls;
	chd_msg *m = chd_slab_alloc(&sh->slabs, borrow ? sizeof(chd_msgref) : sizeof(*m) + d->len,
	    &cls);

	if (m == NULL) {
		return (NULL);
	}
	m->cls = cls;
	m->redelivered = false;
	m->borrowed = borrow;
	m->len = (uint32_t) d->len;
	if (borrow) {
		((chd_msgref *) m)->data = d->data;
		((chd_msgref *) m)->buf = buf;
		buf->refs++;
	} else if (d->len > 0) {
		memcpy(m->data, d->data, d->len);
	}
	return (m);
}

/*
 * Appends the messages of r's Send to ch's queue, all or none: every
 * payload fits the daemon-wide max-memory, or none is stored.
 */
static chan_status
chan_enqueue(chd_shard *sh, chd_chan *ch, chd_req *r, uint64_t *first_seq)
{
	const Chan__V1__Send       *s = r->msg->send;
	const ProtobufCBinaryData *data = s->data;
	size_t                     n = s->n_data;
	chd_engine                *e = sh->e;
	chd_msg                   *head = NULL, **tailp = &head, *m, *last = NULL;
	chd_rxbuf                 *buf = NULL;
	uint64_t                   now = chl_now_unix_us();
	uint64_t                   total = 0, big = 0, copied, seq = ch->next_seq;

	for (size_t i = 0; i < n; i++) {
		if (data[i].len > UINT32_MAX) { /* validation forbids it */
			return (CHAN_RESOURCE_EXHAUSTED);
		}
		total += data[i].len;
		big += borrowable(&r->alloc, &data[i]) ? data[i].len : 0;
	}
	/* Only when they are most of it: a few big payloads among many small
	 * ones would keep all those small ones' bytes (counted) for them. */
	if (big > 0 && big >= r->alloc.input_len / 4 * 3) {
		buf = rxbuf_take(e, r);
	}
	copied = buf != NULL ? total - big : total;
	if (!held_reserve(e, copied)) {
		if (buf != NULL) {
			rxbuf_untake(e, r, buf);
		}
		return (CHAN_RESOURCE_EXHAUSTED);
	}
	for (size_t i = 0; i < n; i++) {
		if ((m = msg_new(sh, &data[i], buf, &r->alloc)) == NULL) {
			*tailp = NULL;
			for (m = head; m != NULL; m = last) {
				last = m->next;
				chd_slab_free(&sh->slabs, m, m->cls);
			}
			atomic_fetch_sub(&e->held_bytes, copied);
			if (buf != NULL) {
				rxbuf_untake(e, r, buf);
			}
			return (CHAN_RESOURCE_EXHAUSTED);
		}
		m->seq = seq++;
		m->time_us = now;
		*tailp = m;
		tailp = &m->next;
		last = m;
	}
	*tailp = NULL;
	*first_seq = ch->next_seq;
	ch->next_seq = seq;
	if (ch->qtail != NULL) {
		ch->qtail->next = head;
	} else {
		ch->qhead = head;
	}
	ch->qtail = last;
	ch->depth += n;
	ch->bytes += total;
	ch->total_sent += n;
	return (CHAN_OK);
}

/* Whether a batch of n may enter the queue now (FIFO order is the caller's). */
static bool
chan_fits(const chd_chan *ch, uint64_t n, bool held)
{
	switch (ch->kind) {
	case CHD_UNBOUNDED:
		return (true);
	case CHD_BOUNDED:
		return (ch->depth + ch->nleased + n <= ch->cap);
	case CHD_RENDEZVOUS:
		/* Only straight into a waiting receiver's hands (not one
		 * held back by another connection's custody). */
		return (ch->rhead != NULL && !held &&
		    ch->depth + n <= ch->rhead->max);
	}
	return (false);
}

static void
send_reply_ok(chd_engine *e, chd_req *r, uint32_t n, uint64_t first)
{
	chd_resp              a;
	Chan__V1__SendResult  sr = CHAN__V1__SEND_RESULT__INIT;

	chd_resp_init(&a);
	sr.has_accepted = sr.has_first_seq = true;
	sr.accepted = n;
	sr.first_seq = first;
	a.r.result_case = CHAN__V1__RESPONSE__RESULT_SEND;
	a.r.send = &sr;
	chd_resp_send(e, r, &a, CHAN_OK);
}

/* Head sender enters the queue (or fails for lack of memory). */
static void
chan_admit_sender(chd_shard *sh, chd_chan *ch, chd_task *t)
{
	Chan__V1__Send *s = t->req->msg->send;
	uint64_t        first = 0;
	chan_status     st;

	chan_remove_sender_task(ch, t);
	st = chan_enqueue(sh, ch, t->req, &first);
	if (st == CHAN_OK) {
		send_reply_ok(sh->e, t->req, (uint32_t) s->n_data, first);
	} else {
		chd_reply_err(sh->e, t->req, st, "no memory to store %zu "
		    "messages for channel '%s' (daemon memory limit %llu "
		    "bytes); nothing was sent", s->n_data, ch->name,
		    (unsigned long long) sh->e->opts.max_memory);
	}
	task_finish(t);
}

/*
 * An answer's payloads stop before this many bytes unless the Recv asks
 * for less (max_bytes): max_batch messages of max_message_size would
 * otherwise make one answer of gigabytes, which neither side wants to
 * allocate at once.
 */
#define CHD_ANSWER_BYTES_MAX (64u * 1024u * 1024u)

/* How many of ch's queued messages a delivery to r takes: up to max, and
 * within the byte bound (but at least one). */
static size_t
deliver_count(const chd_chan *ch, const chd_req *r, uint32_t max)
{
	const Chan__V1__Recv *rv = r->msg != NULL && r->msg->op_case == CHAN__V1__REQUEST__OP_RECV
	    ? r->msg->recv : NULL;
	size_t                n = ch->depth < max ? (size_t) ch->depth : max;
	uint64_t              cap = CHD_ANSWER_BYTES_MAX, bytes = 0;
	const chd_msg        *m = ch->qhead;

	if (rv != NULL && rv->has_max_bytes && rv->max_bytes > 0 && rv->max_bytes < cap) {
		cap = rv->max_bytes;
	}
	if (n <= 1 || ch->bytes <= cap) {
		return (n); /* all of the queue fits: no walk */
	}
	for (size_t i = 0; i < n; i++, m = m->next) {
		if (i > 0 && bytes + m->len > cap) {
			return (i);
		}
		bytes += m->len;
	}
	return (n);
}

/* ---- recv answers in the batch form, packed from the queue ------------- */

#define CHD_F_RESP_RECV 16 /* Response.recv */

/* The queue's messages one after the other, for batch_emit.h. */
typedef struct qmsg_it {
	const chd_msg *m;
} qmsg_it;

static bool
qmsg_next(void *arg, chl_bitem *b)
{
	qmsg_it       *it = arg;
	const chd_msg *m = it->m;

	it->m = m->next;
	b->data = msg_data(m);
	b->len = m->len;
	b->seq = m->seq;
	b->time_us = m->time_us;
	b->redelivered = m->redelivered;
	return (true);
}

/* The answer's head: what chd_resp_send would set for an OK recv. */
static Chan__V1__Response
packed_head(const chd_req *r, uint64_t delivery)
{
	Chan__V1__Response h = CHAN__V1__RESPONSE__INIT;

	h.has_id = r->msg->has_id;
	h.id = r->msg->id;
	h.has_status = true;
	h.status = CHAN__V1__STATUS__OK;
	h.has_delivery = delivery != 0;
	h.delivery = delivery;
	return (h);
}

/*
 * Room for the answer to a plain batch-form recv of the n messages from
 * head (laid out into *lay), sized for any delivery id; NULL: no memory.
 */
static chd_answer *
packed_alloc(const chd_req *r, const chd_msg *head, size_t n, chl_batch_layout *lay)
{
	Chan__V1__Response h = packed_head(r, UINT64_MAX);
	qmsg_it            it = { head };
	size_t             rl;

	(void) chl_batch_plan(lay, qmsg_next, &it, n);
	rl = chl_len_field_size(lay->body); /* RecvResult { batch = 2 } */
	return (chd_answer_new(chan__v1__response__get_packed_size(&h) +
	    chl_varint_size((uint64_t) CHD_F_RESP_RECV << 3) + chl_varint_size(rl) + rl));
}

/*
 * Writes and sends it: the bytes chl_packer would write for the Response
 * the list path builds (the tests hold the two to the same bytes), but
 * straight from the queue's messages (now cut off at head), with no
 * Message structs in between.
 */
static void
packed_send(chd_shard *sh, chd_req *r, chd_answer *a, const chl_batch_layout *lay,
    const chd_msg *head, size_t n, uint64_t delivery)
{
	Chan__V1__Response h = packed_head(r, delivery);
	qmsg_it            it = { head };
	uint8_t           *p = a->bytes + chan__v1__response__pack(&h, a->bytes);

	p = chl_put_tag(p, CHD_F_RESP_RECV, CHL_WT_LEN);
	p = chl_put_varint(p, chl_len_field_size(lay->body));
	p = chl_put_len_head(p, 2, lay->body);
	p = chl_batch_emit(p, lay, qmsg_next, &it, n);
	a->len = (size_t) (p - a->bytes);
	atomic_fetch_add(&sh->e->requests, 1);
	r->reply_answer(r, a, CHAN_OK, delivery);
}

void
chd_chan_deliver(chd_shard *sh, chd_chan *ch, chd_req *r, uint32_t conn,
    uint32_t max, uint64_t lease_ms)
{
	chd_resp              a;
	Chan__V1__RecvResult  rr = CHAN__V1__RECV_RESULT__INIT;
	Chan__V1__Message     init = CHAN__V1__MESSAGE__INIT;
	Chan__V1__Message    *pms;
	chd_delivery         *d;
	size_t                n = deliver_count(ch, r, max);
	chd_msg              *m, *last = NULL;
	bool                  named;
	chd_answer           *packed = NULL;
	chl_batch_layout      lay;

	chd_resp_init(&a);
	if (n == 0) { /* callers check; never hand out an empty answer */
		chd_resp_send(sh->e, r, &a, CHAN_EMPTY);
		return;
	}
	/* A plain recv named its channel: n copies of the name would be
	 * waste (libchan fills it in); recv_any's caller needs it. */
	named = r->msg == NULL || r->msg->op_case != CHAN__V1__REQUEST__OP_RECV;
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		chd_resp_send(sh->e, r, &a, CHAN_RESOURCE_EXHAUSTED);
		return;
	}
	/* The batch form, when the receiver takes packed answers, straight
	 * from the queue; else (or without the memory) a Response. */
	if (!named && r->reply_answer != NULL && chd_req_wants_batch(r)) {
		packed = packed_alloc(r, ch->qhead, n, &lay);
	}
	/* One arena block for the pointers and the messages, filled in
	 * whole below (not zeroed first: a batch of 1024 is ~100 KB). */
	if (packed == NULL &&
	    (rr.messages = chd_resp_alloc_raw(&a, (sizeof(*rr.messages) +
	    sizeof(*pms)) * n)) == NULL) {
		free(d);
		chd_resp_send(sh->e, r, &a, CHAN_RESOURCE_EXHAUSTED);
		return;
	}
	pms = packed == NULL ? (Chan__V1__Message *) (rr.messages + n) : NULL;
	m = ch->qhead;
	for (size_t i = 0; i < n; i++, m = m->next) {
		Chan__V1__Message *pm;

		d->bytes += m->len;
		last = m;
		if (packed != NULL) {
			continue;
		}
		pm = &pms[i];
		*pm = init;
		pm->channel = named ? ch->name : NULL;
		pm->has_seq = pm->has_time_us = pm->has_data = true;
		pm->seq = m->seq;
		pm->time_us = m->time_us;
		pm->data.len = m->len;
		pm->data.data = (uint8_t *) msg_data(m);
		pm->has_redelivered = m->redelivered;
		pm->redelivered = m->redelivered;
		rr.messages[i] = pm;
	}
	/* Cut the chain after the last one handed out. */
	d->head = ch->qhead;
	ch->qhead = last->next;
	last->next = NULL;
	if (ch->qhead == NULL) {
		ch->qtail = NULL;
	}
	rr.n_messages = n;
	ch->depth -= n;
	ch->bytes -= d->bytes;
	ch->total_received += n;
	if (lease_ms > 0) {
		/* Ack mode: the lease is the custody, no delivery id. */
		chd_msg *head = d->head;
		uint64_t bytes = d->bytes;
		free(d);
		if (lease_new(sh, ch, head, conn, lease_ms, r) == NULL) {
			/* Cannot time it: undo, the answer fails. */
			last->next = ch->qhead;
			ch->qhead = head;
			if (ch->qtail == NULL) {
				ch->qtail = last;
			}
			ch->depth += n;
			ch->bytes += bytes;
			ch->total_received -= n;
			chd_answer_unref(packed);
			chd_resp_send(sh->e, r, &a, CHAN_RESOURCE_EXHAUSTED);
			return;
		}
		if (packed != NULL) {
			packed_send(sh, r, packed, &lay, head, n, 0);
		} else {
			a.r.result_case = CHAN__V1__RESPONSE__RESULT_RECV;
			a.r.recv = &rr;
			chd_resp_send(sh->e, r, &a, CHAN_OK);
		}
		if (!chd_engine_conn_alive(sh->e, conn)) {
			chd_shard_post_conn_close(sh, conn);
		}
		return;
	}
	d->n = n;
	d->ch = ch;
	ch->nunspent++;
	d->client = r->msg != NULL && r->msg->has_client ? r->msg->client : 0;
	d->id = sh->next_delivery++ * (uint64_t) sh->e->n + (uint64_t) sh->idx;
	d->hn.hash = d->id;
	chd_htab_insert(&sh->deliveries, &d->hn);
	delivery_own(sh, d, conn);
	d->cnext = ch->inflight;
	if (ch->inflight != NULL) {
		ch->inflight->cprev = d;
	}
	ch->inflight = d;
	ch->nin_flight += n;
	ch->in_flight_bytes += d->bytes;
	if (packed != NULL) {
		packed_send(sh, r, packed, &lay, d->head, n, d->id);
	} else {
		a.r.has_delivery = true;
		a.r.delivery = d->id;
		a.r.result_case = CHAN__V1__RESPONSE__RESULT_RECV;
		a.r.recv = &rr;
		chd_resp_send(sh->e, r, &a, CHAN_OK);
	}
	/* A late request of a connection already closed: its close work
	 * ran before this custody existed; run it again to give it back. */
	if (!chd_engine_conn_alive(sh->e, conn)) {
		chd_shard_post_conn_close(sh, conn);
	}
}

static void
chan_serve_receiver(chd_shard *sh, chd_chan *ch, chd_task *t)
{
	if (t->kind == CHD_T_ANY) {
		chd_any_serve(t);
		return;
	}
	chd_chan_remove_receiver(ch, t);
	chd_chan_deliver(sh, ch, t->req, t->conn, t->max, t->lease_ms);
	task_finish(t);
}

void
chd_chan_pump(chd_shard *sh, chd_chan *ch)
{
	chan_pump(sh, ch);
}

static void
chan_pump(chd_shard *sh, chd_chan *ch)
{
	bool progress = true, held = false;

	while (progress) {
		progress = false;
		/* Receivers (all of one connection) wait while another
		 * connection's custody may still come back to the head. */
		held = ch->rhead != NULL &&
		    chd_chan_custody_gated(ch, ch->rx_conn);
		if (held && !(ch->grace_armed && ch->grace_conn == ch->rx_conn)) {
			/* Custody that appeared after they queued (a replay
			 * moved it): they get their grace too. */
			chan_grace_arm(ch, ch->rx_conn, 0);
			held = chd_chan_custody_gated(ch, ch->rx_conn);
		}
		while (ch->shead != NULL && !ch->closed &&
		    chan_fits(ch, ch->shead->max, held)) {
			chan_admit_sender(sh, ch, ch->shead);
			progress = true;
		}
		while (!held && ch->rhead != NULL && ch->depth > 0) {
			chan_serve_receiver(sh, ch, ch->rhead);
			progress = true;
		}
	}
	if (ch->grace_armed &&
	    !chd_chan_custody_gated(ch, ch->grace_conn)) {
		chan_grace_disarm(ch); /* the custody ended in time */
	}
	while (!held && ch->closed && ch->depth == 0 && ch->rhead != NULL) {
		chd_task *t = ch->rhead;
		if (t->kind == CHD_T_ANY) {
			chd_any_chan_closed(t);
			continue;
		}
		chd_chan_remove_receiver(ch, t);
		chd_reply_err(sh->e, t->req, CHAN_CLOSED,
		    "channel '%s' is closed", ch->name);
		task_finish(t);
	}
}

/* End of stream: no more sends; receivers drain, then CLOSED. */
static void
chan_close(chd_shard *sh, chd_chan *ch)
{
	ch->closed = true;
	while (ch->shead != NULL) {
		chd_task *t = ch->shead;
		chan_remove_sender_task(ch, t);
		chd_reply_err(sh->e, t->req, CHAN_CLOSED,
		    "channel '%s' was closed", ch->name);
		task_finish(t);
	}
	chan_pump(sh, ch);
}

/* ---- custody ------------------------------------------------------------ */

void
chd_chan_confirm(chd_shard *sh, uint64_t id, uint32_t taken, uint32_t conn, uint64_t client)
{
	chd_hnode *n = NULL;

	while ((n = chd_htab_find(&sh->deliveries, id, n)) != NULL) {
		chd_delivery *d = (chd_delivery *) n;
		chd_chan     *ch = d->ch;
		chd_msg      *rest = NULL, *m = d->head;
		if (d->id != id) {
			continue;
		}
		/* Only the holder confirms: its connection, or the same
		 * client on a new one. A stale or foreign id (another
		 * client's, one from before a restart) is ignored. */
		if (d->conn != conn && (client == 0 || d->client != client)) {
			return;
		}
		chd_idem_forget_delivery(sh->e, d->client, d->id);
		delivery_unlink(sh, d);
		if (taken < d->n) {
			/* Part of it: the untaken rest goes back now rather
			 * than when the connection closes, and the taken
			 * part is not handed out again. */
			for (uint32_t i = 1; i < taken; i++) {
				m = m->next;
			}
			rest = taken > 0 ? m->next : d->head;
			if (taken > 0) {
				m->next = NULL;
			}
			queue_give_back(ch, rest);
		}
		if (taken > 0) {
			msgs_free(sh, d->head);
		}
		free(d);
		chan_pump(sh, ch); /* receivers may wait for this custody */
		return;
	}
}

/* A replayed answer reached the client on another connection. */
void
chd_chan_reown(chd_shard *sh, uint64_t id, uint32_t conn)
{
	chd_hnode *n = NULL;

	while ((n = chd_htab_find(&sh->deliveries, id, n)) != NULL) {
		chd_delivery *d = (chd_delivery *) n;
		if (d->id == id) {
			delivery_own(sh, d, conn);
			if (!chd_engine_conn_alive(sh->e, conn)) {
				chd_shard_post_conn_close(sh, conn);
			}
			chan_pump(sh, d->ch); /* whom it holds back changed */
			return;
		}
	}
}

/* Puts handed-out messages back, merged into the queue by seq. */
static void
queue_give_back(chd_chan *ch, chd_msg *head)
{
	chd_msg *m, *next, **pp = &ch->qhead;

	for (m = head; m != NULL; m = next) {
		next = m->next;
		m->redelivered = true;
		while (*pp != NULL && (*pp)->seq < m->seq) {
			pp = &(*pp)->next;
		}
		m->next = *pp;
		*pp = m;
		if (m->next == NULL) {
			ch->qtail = m;
		}
		pp = &m->next;
		ch->depth++;
		ch->bytes += m->len;
		ch->total_redelivered++;
	}
}

static void
delivery_give_back(chd_shard *sh, chd_delivery *d)
{
	/* A repeat of the recv must now receive them afresh. */
	chd_idem_forget_delivery(sh->e, d->client, d->id);
	delivery_unlink(sh, d);
	queue_give_back(d->ch, d->head);
	free(d);
}

static void
lease_give_back(chd_lease *l)
{
	chd_chan *ch = l->ch;

	for (chd_msg *m = l->head; m != NULL; m = m->next) {
		ch->nleased--;
		ch->leased_bytes -= m->len;
	}
	queue_give_back(ch, l->head);
	l->head = NULL;
	lease_free(l);
}

static void
lease_expired_cb(evutil_socket_t fd, short what, void *arg)
{
	chd_lease *l = arg;
	chd_chan  *ch = l->ch;
	chd_shard *sh = l->sh;

	if (!chd_shard_timer_begin(sh, l->timer)) {
		return;
	}
	lease_give_back(l);
	chan_pump(sh, ch);
	chd_shard_timer_end(sh);
}

/* The bucket of the leases taken by request (client, id). */
static uint64_t
lease_hash(uint64_t client, uint64_t id)
{
	uint64_t x = (client ^ id) * 0x9E3779B97F4A7C15ull;

	return (x ^ (x >> 32));
}

/*
 * A new lease on msgs (a chain by seq) for ms, taken by request r (NULL:
 * a delayed release); NULL without memory. A lease of a request with a
 * client and id is indexed by them, so a Cancel of that request finds it.
 */
static chd_lease *
lease_new(chd_shard *sh, chd_chan *ch, chd_msg *head, uint32_t conn,
    uint64_t ms, const chd_req *r)
{
	chd_lease     *l;
	struct timeval tv;
	bool           timed = chd_timeval(ms, &tv);

	if ((l = calloc(1, sizeof(*l))) == NULL) {
		return (NULL);
	}
	if (timed && (l->timer = evtimer_new(sh->base, lease_expired_cb, l)) ==
	    NULL) {
		free(l);
		return (NULL);
	}
	l->ch = ch;
	l->sh = sh;
	l->conn = conn;
	l->head = head;
	if (r != NULL && r->msg != NULL && r->msg->has_client &&
	    r->msg->client != 0 && r->msg->has_id) {
		l->client = r->msg->client;
		l->id = r->msg->id;
		l->hn.hash = lease_hash(l->client, l->id);
		chd_htab_insert(&sh->leases, &l->hn);
	}
	for (chd_msg *m = head; m != NULL; m = m->next) {
		ch->nleased++;
		ch->leased_bytes += m->len;
	}
	l->next = ch->leases;
	if (ch->leases != NULL) {
		ch->leases->prev = l;
	}
	ch->leases = l;
	/* Not indexed by connection: a lease outlives it. */
	if (l->timer != NULL) {
		evtimer_add(l->timer, &tv);
	}
	return (l);
}

/* Takes the leased message seq out of its lease; NULL if none. */
static chd_msg *
lease_take(chd_chan *ch, uint64_t seq)
{
	for (chd_lease *l = ch->leases; l != NULL; l = l->next) {
		if (l->delayed) {
			continue;
		}
		for (chd_msg **pp = &l->head; *pp != NULL; pp = &(*pp)->next) {
			chd_msg *m = *pp;
			if (m->seq != seq) {
				continue;
			}
			*pp = m->next;
			m->next = NULL;
			ch->nleased--;
			ch->leased_bytes -= m->len;
			if (l->head == NULL) {
				lease_free(l);
			}
			return (m);
		}
	}
	return (NULL);
}

/* ---- connection gone ---------------------------------------------------- */

static void
sender_drop(chd_shard *sh, chd_sender *s)
{
	chd_chan *ch = s->ch;

	CHD_DL_REMOVE(ch->senders, s, prev, next);
	sender_unown(s);
	free(s);
	ch->nsenders--;
	if (ch->nsenders == 0 && ch->had_senders && !ch->closed) {
		chan_close(sh, ch);
	}
}

/* The receiver handle of ch is gone with its connection. */
static void
rx_detach(chd_chan *ch)
{
	ch->rx_handle = 0;
	rx_unown(ch);
	if (!chan_attached(ch)) {
		ch->rx_conn = 0;
	}
}

/* Channels a closing connection changed, pumped once each at the end. */
static void
touch(chd_chan **list, chd_chan *ch)
{
	if (!ch->touched) {
		ch->touched = true;
		ch->tnext = *list;
		*list = ch;
	}
}

/*
 * Answers conn's parked tasks UNAVAILABLE. Aborting a channel or counter
 * task removes only itself (no pump here), so a saved next stays valid;
 * a recv_any part removes all of its tasks on this shard, so those go in
 * a second pass that always takes the head.
 */
static void
conn_abort_tasks(chd_connrec *c, chd_chan **touched)
{
	chd_task *t, *next;

	for (t = c->tasks; t != NULL; t = t->onext) {
		if (t->kind != CHD_T_CWAIT) {
			touch(touched, t->ch);
		}
	}
	for (t = c->tasks; t != NULL; t = next) {
		next = t->onext;
		if (t->kind != CHD_T_ANY) {
			chd_task_abort(t, CHAN_UNAVAILABLE, "connection closed");
		}
	}
	while (c->tasks != NULL) {
		chd_task_abort(c->tasks, CHAN_UNAVAILABLE, "connection closed");
	}
}

/*
 * The close work from the index: only what the connection holds. Every
 * step removes the list's head (or the item stops being conn's), so the
 * loops end whatever the pumps and answers do meanwhile.
 */
static void
conn_closed_indexed(chd_shard *sh, chd_connrec *c)
{
	chd_chan *touched = NULL, *ch;

	conn_abort_tasks(c, &touched);
	while ((ch = c->rx_chans) != NULL) {
		touch(&touched, ch);
		rx_detach(ch);
	}
	while ((ch = c->grace_chans) != NULL) {
		/* Its receivers are gone: the holder's grace is not used up,
		 * the next consumer gets its own. */
		touch(&touched, ch);
		chan_grace_disarm(ch);
	}
	while (c->deliveries != NULL) {
		touch(&touched, c->deliveries->ch);
		delivery_give_back(sh, c->deliveries);
	}
	/* Leases outlive their connection (SQS's visibility timeout, not
	 * beanstalkd's reserve): `chan recv --lease` exits and a later
	 * `chan ack` finishes the job. Only ack, release or expiry end one. */
	while (c->senders != NULL) {
		touch(&touched, c->senders->ch);
		sender_drop(sh, c->senders); /* may close: that pumps */
	}
	while ((ch = touched) != NULL) {
		touched = ch->tnext;
		ch->touched = false;
		ch->tnext = NULL;
		chan_pump(sh, ch);
	}
}

/*
 * The walk over everything, for state a record could not be made for
 * (out of memory once: sh->seen_lost). The same steps as above, found by
 * the conn fields.
 */
static void
chan_conn_closed_visit(void *arg, chd_chan *ch)
{
	chd_shard    *sh = ((void **) arg)[0];
	uint32_t      conn = *(uint32_t *) ((void **) arg)[1];
	chd_sender   *s, *snext;
	chd_delivery *d, *next;

	if (ch->rx_handle != 0 && ch->rx_conn == conn) {
		rx_detach(ch);
	}
	if (ch->grace_armed && ch->grace_conn == conn) {
		chan_grace_disarm(ch);
	}
	for (d = ch->inflight; d != NULL; d = next) {
		next = d->cnext;
		if (d->conn == conn) {
			delivery_give_back(sh, d);
		}
	}
	for (s = ch->senders; s != NULL; s = snext) {
		snext = s->next;
		if (s->conn == conn) {
			/* Closing answers tasks, never drops senders. */
			sender_drop(sh, s);
		}
	}
	chan_pump(sh, ch);
}

static void
conn_closed_walk(chd_shard *sh, uint32_t conn)
{
	chd_task *t, *next;
	void     *arg[2] = { sh, &conn };

	for (t = sh->parked; t != NULL; t = next) {
		next = t->snext;
		if (t->conn == conn && t->kind != CHD_T_ANY) {
			chd_task_abort(t, CHAN_UNAVAILABLE, "connection closed");
		}
	}
	for (;;) {
		for (t = sh->parked; t != NULL; t = t->snext) {
			if (t->conn == conn) {
				break;
			}
		}
		if (t == NULL) {
			break;
		}
		chd_task_abort(t, CHAN_UNAVAILABLE, "connection closed");
	}
	chd_chan_each(sh, chan_conn_closed_visit, arg);
}

void
chd_chan_conn_closed(chd_shard *sh, uint32_t conn)
{
	chd_connrec *c = chd_shard_conn_take(sh, conn);

	if (c == NULL && !sh->seen_lost) {
		return; /* never had anything here */
	}
	chd_idem_conn_closing(true);
	if (c != NULL) {
		conn_closed_indexed(sh, c);
	}
	if (sh->seen_lost) {
		conn_closed_walk(sh, conn);
	}
	chd_idem_conn_closing(false);
	chd_shard_conn_free(c);
}

void
chd_task_abort(chd_task *t, chan_status st, const char *msg)
{
	chd_engine *e = t->sh->e;

	switch (t->kind) {
	case CHD_T_ANY:
		chd_any_fail(t, st, "%s", msg);
		return;
	case CHD_T_RECV:
		chd_chan_remove_receiver(t->ch, t);
		break;
	case CHD_T_SEND:
		chan_remove_sender_task(t->ch, t);
		break;
	case CHD_T_CWAIT:
		chd_counter_waiter_cancel(&t->cw);
		break;
	}
	chd_reply_err(e, t->req, st, "%s", msg);
	task_finish(t);
}

/* ---- cancel (Request.cancel) ------------------------------------------- */

/* Is parked task t (part of) request (client, id)? */
static bool
task_is(const chd_task *t, uint64_t client, uint64_t id)
{
	const Chan__V1__Request *m;

	if (t->kind == CHD_T_ANY) {
		/* Not a->req: another shard may be answering it right now. */
		return (t->part->any->client == client && t->part->any->id == id);
	}
	m = t->req != NULL ? t->req->msg : NULL;
	return (m != NULL && m->has_client && m->client == client &&
	    m->has_id && m->id == id);
}

/* A parked task of (client, id) on sh, found from conn's record. */
static chd_task *
task_find(chd_shard *sh, uint64_t client, uint64_t id, uint32_t conn)
{
	chd_connrec *c = chd_shard_conn(sh, conn, false);
	chd_task    *t;

	for (t = c != NULL ? c->tasks : NULL; t != NULL; t = t->onext) {
		if (task_is(t, client, id)) {
			return (t);
		}
	}
	if (sh->seen_lost) { /* some tasks could not be indexed */
		for (t = sh->parked; t != NULL; t = t->snext) {
			if (t->conn == conn && task_is(t, client, id)) {
				return (t);
			}
		}
	}
	return (NULL);
}

/*
 * Stops the tasks of (client, id) on sh like a connection close does for
 * all of a connection's: out of their queues, timers freed, answered
 * UNAVAILABLE. A recv_any part goes whole (all its tasks here) and
 * answers the request when it is the first to claim it.
 */
static void
cancel_tasks(chd_shard *sh, uint64_t client, uint64_t id, uint32_t conn,
    chd_chan **touched)
{
	chd_task *t;

	while ((t = task_find(sh, client, id, conn)) != NULL) {
		if (t->kind == CHD_T_ANY) {
			for (chd_task *q = t->part->tasks; q != NULL;
			    q = q->anext) {
				touch(touched, q->ch);
			}
		} else if (t->kind != CHD_T_CWAIT) {
			touch(touched, t->ch);
		}
		chd_task_abort(t, CHAN_UNAVAILABLE, "cancelled");
	}
}

/* Delivery id back to its channel, if it is still in client's custody. */
static void
cancel_delivery(chd_shard *sh, uint64_t id, uint64_t client,
    chd_chan **touched)
{
	chd_hnode *n = NULL;

	while ((n = chd_htab_find(&sh->deliveries, id, n)) != NULL) {
		chd_delivery *d = (chd_delivery *) n;
		if (d->id != id) {
			continue;
		}
		if (d->client == client) {
			touch(touched, d->ch);
			delivery_give_back(sh, d);
		}
		return;
	}
}

/* The leases request (client, id) took go back, as Release does. */
static void
cancel_leases(chd_shard *sh, uint64_t client, uint64_t id,
    chd_chan **touched)
{
	chd_hnode *n = NULL;

	while ((n = chd_htab_find(&sh->leases, lease_hash(client, id), n)) !=
	    NULL) {
		chd_lease *l = (chd_lease *) n;
		if (l->client != client || l->id != id) {
			continue;
		}
		touch(touched, l->ch);
		lease_give_back(l); /* unlinks n: look again from the top */
		n = NULL;
	}
}

void
chd_chan_cancel(chd_shard *sh, uint64_t client, const chd_cancel_item *items,
    size_t n)
{
	chd_chan *touched = NULL, *ch;

	for (size_t i = 0; i < n; i++) {
		const chd_cancel_item *it = &items[i];
		if (it->running) {
			cancel_tasks(sh, client, it->id, it->conn, &touched);
		}
		if (it->delivery != 0 &&
		    it->delivery % (uint64_t) sh->e->n == (uint64_t) sh->idx) {
			cancel_delivery(sh, it->delivery, client, &touched);
		}
		cancel_leases(sh, client, it->id, &touched);
	}
	while ((ch = touched) != NULL) {
		touched = ch->tnext;
		ch->touched = false;
		ch->tnext = NULL;
		if (ch->rhead == NULL && ch->grace_armed) {
			/* Its receivers are gone: the holder's grace is kept
			 * for the next consumer (as on a close). */
			chan_grace_disarm(ch);
		}
		chan_pump(sh, ch); /* a sender behind a removed one may fit */
	}
}

typedef struct chd_give_back {
	uint64_t delivery, client;
} chd_give_back;

static void
give_back_job(chd_shard *sh, void *arg)
{
	chd_give_back *g = arg;
	chd_chan      *touched = NULL, *ch;

	cancel_delivery(sh, g->delivery, g->client, &touched);
	free(g);
	while ((ch = touched) != NULL) {
		touched = ch->tnext;
		ch->touched = false;
		ch->tnext = NULL;
		chan_pump(sh, ch);
	}
}

void
chd_chan_post_give_back(chd_engine *e, uint64_t delivery, uint64_t client)
{
	chd_give_back *g = malloc(sizeof(*g));

	if (g == NULL) {
		return; /* stays in custody until the connection closes */
	}
	g->delivery = delivery;
	g->client = client;
	if (chd_shard_post(e->shards[delivery % (uint64_t) e->n], give_back_job,
	    g) != 0) {
		free(g);
	}
}

/* ---- timers ------------------------------------------------------------- */

/*
 * A parked recv's time is up (or, for a try, its custody grace). Held
 * back by another connection's custody, it has waited long enough: that
 * custody's grace is spent and it takes what is queued, if anything.
 */
static void
recv_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	chd_task  *t = arg;
	chd_chan  *ch = t->ch;
	chd_shard *sh = t->sh;

	chd_task_unpark(t); /* ours now: a pump does not free it */
	if (chd_chan_custody_gated(ch, t->conn)) {
		chan_grace_spend(ch, t->conn);
		chan_pump(sh, ch);
		if (t->done) {
			free(t);
			return;
		}
	}
	chd_chan_remove_receiver(ch, t);
	if (t->trying) {
		chd_reply_err(sh->e, t->req, CHAN_EMPTY,
		    "channel '%s' is empty", ch->name);
	} else {
		chd_reply_err(sh->e, t->req, CHAN_TIMEOUT,
		    "no message on channel '%s' within the timeout", ch->name);
	}
	task_finish(t);
	free(t);
}

static void
send_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	chd_task  *t = arg;
	chd_chan  *ch = t->ch;
	chd_shard *sh = t->sh;

	chan_remove_sender_task(ch, t);
	chd_reply_err(sh->e, t->req, CHAN_TIMEOUT,
	    "channel '%s' had no room within the timeout; nothing was sent",
	    ch->name);
	task_finish(t);
	/* A smaller batch behind it may fit now. */
	chan_pump(sh, ch);
}

/* ---- ops ---------------------------------------------------------------- */

static chd_task *
task_new(chd_shard *sh, chd_req *r, enum chd_task_kind kind)
{
	chd_task *t = calloc(1, sizeof(*t));

	if (t != NULL) {
		t->kind = kind;
		t->sh = sh;
		t->req = r;
		t->conn = r->conn;
	}
	return (t);
}

static void
reply_not_found(chd_shard *sh, chd_req *r, const char *name)
{
	chd_reply_err(sh->e, r, CHAN_NOT_FOUND, "no channel named '%s'", name);
}

/*
 * A channel was neither there nor created: NOT_FOUND when it was not to be
 * created (auto-create off), else why creating it failed.
 */
static void
reply_no_chan(chd_shard *sh, chd_req *r, const char *name, bool create)
{
	if (!create) {
		reply_not_found(sh, r, name);
	} else if (chd_chan_limit_full(sh->e)) {
		chd_reply_err(sh->e, r, CHAN_RESOURCE_EXHAUSTED,
		    "no room for channel '%s': the daemon holds its maximum of "
		    "%llu channels (--max-channels)", name,
		    (unsigned long long) sh->e->opts.max_channels);
	} else {
		chd_reply_err(sh->e, r, CHAN_RESOURCE_EXHAUSTED,
		    "out of memory creating channel '%s'", name);
	}
}

void
chd_op_create(chd_shard *sh, chd_req *r)
{
	Chan__V1__Create  *c = r->msg->create;
	enum chd_chan_kind kind = CHD_UNBOUNDED;
	uint64_t           cap = 0;
	chd_chan          *ch;

	if (c->has_capacity) {
		cap = c->capacity;
		kind = cap == 0 ? CHD_RENDEZVOUS : CHD_BOUNDED;
	}
	if ((ch = chan_lookup(sh, c->name)) != NULL) {
		if (ch->kind != kind || ch->cap != cap) {
			chd_reply_err(sh->e, r, CHAN_ALREADY_EXISTS,
			    "channel '%s' already exists with capacity %s",
			    c->name, ch->kind == CHD_UNBOUNDED ? "unbounded" :
			    ch->kind == CHD_RENDEZVOUS ? "0 (rendezvous)" :
			    "of another size");
			return;
		}
	} else if (chan_new(sh, c->name, kind, cap) == NULL) {
		reply_no_chan(sh, r, c->name, true);
		return;
	}
	chd_reply_empty(sh->e, r);
}

static chd_sender *
sender_find(chd_chan *ch, uint64_t id)
{
	chd_sender *s;

	for (s = ch->senders; s != NULL && s->id != id; s = s->next) {
	}
	return (s);
}

void
chd_op_send(chd_shard *sh, chd_req *r)
{
	Chan__V1__Send *s = r->msg->send;
	int64_t         timeout = s->has_timeout_ms ? s->timeout_ms : -1;
	chd_chan       *ch;
	chd_task       *t;

	if ((ch = chd_chan_get(sh, s->name, true)) == NULL) {
		reply_no_chan(sh, r, s->name, sh->e->opts.auto_create);
		return;
	}
	if (s->has_sender && s->sender != 0 &&
	    sender_find(ch, s->sender) == NULL) {
		chd_reply_err(sh->e, r, CHAN_NOT_FOUND,
		    "no sender handle %llu on channel '%s'",
		    (unsigned long long) s->sender, s->name);
		return;
	}
	if (ch->closed) {
		chd_reply_err(sh->e, r, CHAN_CLOSED,
		    "channel '%s' is closed; nothing was sent", s->name);
		return;
	}
	if (ch->kind == CHD_BOUNDED && s->n_data > ch->cap) {
		chd_reply_err(sh->e, r, CHAN_INVALID_ARGUMENT,
		    "batch of %zu messages can never fit channel '%s' of "
		    "capacity %llu", s->n_data, s->name,
		    (unsigned long long) ch->cap);
		return;
	}
	if (ch->kind == CHD_RENDEZVOUS && s->n_data != 1) {
		chd_reply_err(sh->e, r, CHAN_INVALID_ARGUMENT,
		    "rendezvous channel '%s' takes one message per send, "
		    "not %zu", s->name, s->n_data);
		return;
	}
	if ((t = task_new(sh, r, CHD_T_SEND)) == NULL) {
		chd_reply_err(sh->e, r, CHAN_RESOURCE_EXHAUSTED,
		    "out of memory");
		return;
	}
	t->max = (uint32_t) s->n_data;
	chan_add_sender_task(ch, t);
	chan_pump(sh, ch);
	if (t->done) {
		free(t);
		return;
	}
	if (timeout == 0) {
		chan_remove_sender_task(ch, t);
		chd_reply_err(sh->e, r, CHAN_FULL, ch->kind == CHD_RENDEZVOUS ?
		    "no receiver waiting on rendezvous channel '%s'" :
		    "channel '%s' is full", s->name);
		free(t);
		return;
	}
	if (!chd_engine_conn_alive(sh->e, r->conn)) {
		chan_remove_sender_task(ch, t);
		chd_reply_err(sh->e, r, CHAN_UNAVAILABLE, "connection closed");
		free(t);
		return;
	}
	chd_task_park(t, timeout, send_timeout_cb);
}

void
chd_op_recv(chd_shard *sh, chd_req *r)
{
	Chan__V1__Recv *rv = r->msg->recv;
	int64_t         timeout = rv->has_timeout_ms ? rv->timeout_ms : -1;
	uint64_t        handle = rv->has_receiver ? rv->receiver : 0;
	chd_chan       *ch;
	chd_task       *t;
	uint32_t        other;

	if ((ch = chd_chan_get(sh, rv->name, true)) == NULL) {
		reply_no_chan(sh, r, rv->name, sh->e->opts.auto_create);
		return;
	}
	if ((other = chd_chan_rx_busy(ch, r->conn)) != 0) {
		chd_reply_err(sh->e, r, CHAN_BUSY,
		    "channel '%s' has a receiver on another connection",
		    rv->name);
		return;
	}
	if (handle != 0 && ch->rx_handle != handle) {
		chd_reply_err(sh->e, r, CHAN_NOT_FOUND,
		    "no receiver handle %llu on channel '%s'",
		    (unsigned long long) handle, rv->name);
		return;
	}
	if ((t = task_new(sh, r, CHD_T_RECV)) == NULL) {
		chd_reply_err(sh->e, r, CHAN_RESOURCE_EXHAUSTED,
		    "out of memory");
		return;
	}
	t->max = rv->has_max ? rv->max : 1;
	t->receiver = handle;
	t->lease_ms = rv->has_lease_ms ? rv->lease_ms : 0;
	if (timeout > 0 && timeout < sh->e->opts.custody_grace_ms) {
		t->grace_ms = (uint32_t) timeout; /* never past its own */
	}
	chd_chan_add_receiver(ch, t);
	chan_pump(sh, ch);
	if (t->done) {
		free(t);
		return;
	}
	if (timeout == 0 && chd_chan_custody_gated(ch, r->conn) &&
	    chd_engine_conn_alive(sh->e, r->conn)) {
		/* EMPTY now would be a lie while older messages may come
		 * back: a try waits out the grace too. */
		t->trying = true;
		chd_task_park(t, sh->e->opts.custody_grace_ms,
		    recv_timeout_cb);
		return;
	}
	if (timeout == 0) {
		chd_chan_remove_receiver(ch, t);
		chd_reply_err(sh->e, r, CHAN_EMPTY, "channel '%s' is empty",
		    rv->name);
		free(t);
		return;
	}
	if (!chd_engine_conn_alive(sh->e, r->conn)) {
		chd_chan_remove_receiver(ch, t);
		chd_reply_err(sh->e, r, CHAN_UNAVAILABLE, "connection closed");
		free(t);
		return;
	}
	chd_task_park(t, timeout, recv_timeout_cb);
}

void
chd_op_close(chd_shard *sh, chd_req *r)
{
	const char *name = r->msg->close->name;
	chd_chan   *ch;

	if ((ch = chan_lookup(sh, name)) == NULL) {
		reply_not_found(sh, r, name);
		return;
	}
	chan_close(sh, ch);
	chd_reply_empty(sh->e, r);
}

void
chd_op_delete(chd_shard *sh, chd_req *r)
{
	const char *name = r->msg->delete_->name;
	chd_chan   *ch;

	if ((ch = chan_lookup(sh, name)) == NULL) {
		reply_not_found(sh, r, name);
		return;
	}
	while (ch->rhead != NULL) {
		chd_task *t = ch->rhead;
		if (t->kind == CHD_T_ANY) {
			chd_any_fail(t, CHAN_NOT_FOUND,
			    "channel '%s' was deleted", name);
			continue;
		}
		chd_chan_remove_receiver(ch, t);
		chd_reply_err(sh->e, t->req, CHAN_NOT_FOUND,
		    "channel '%s' was deleted", name);
		task_finish(t);
	}
	while (ch->shead != NULL) {
		chd_task *t = ch->shead;
		chan_remove_sender_task(ch, t);
		chd_reply_err(sh->e, t->req, CHAN_NOT_FOUND,
		    "channel '%s' was deleted; nothing was sent", name);
		task_finish(t);
	}
	chan_free(sh, ch);
	chd_reply_empty(sh->e, r);
}

void
chd_chan_info(chd_shard *sh, chd_chan *ch, Chan__V1__ChannelInfo *ci)
{
	Chan__V1__ChannelInfo init = CHAN__V1__CHANNEL_INFO__INIT;

	*ci = init;
	ci->name = ch->name;
	ci->has_bounded = ci->has_capacity = ci->has_depth = true;
	ci->bounded = ch->kind != CHD_UNBOUNDED;
	ci->capacity = ch->cap;
	ci->depth = ch->depth;
	ci->has_bytes = ci->has_closed = ci->has_receiver_attached = true;
	ci->bytes = ch->bytes;
	ci->closed = ch->closed;
	ci->receiver_attached = chan_attached(ch);
	ci->has_receiver_pid = true;
	ci->receiver_pid = chan_attached(ch) ?
	    chd_engine_conn_pid(sh->e, ch->rx_conn) : 0;
	ci->has_senders = ci->has_blocked_senders = true;
	ci->senders = ch->nsenders;
	ci->blocked_senders = ch->nsend;
	ci->has_blocked_receivers = ci->has_total_sent = true;
	ci->blocked_receivers = ch->nrecv;
	ci->total_sent = ch->total_sent;
	ci->has_total_received = ci->has_total_dropped = true;
	ci->total_received = ch->total_received;
	ci->total_dropped = ch->total_dropped;
	ci->has_in_flight = ci->has_total_redelivered = true;
	ci->in_flight = ch->nin_flight + ch->nleased;
	ci->total_redelivered = ch->total_redelivered;
}

void
chd_op_stat(chd_shard *sh, chd_req *r)
{
	const char           *name = r->msg->stat->name;
	chd_chan             *ch;
	chd_resp              a;
	Chan__V1__ChannelInfo ci;

	if ((ch = chan_lookup(sh, name)) == NULL) {
		reply_not_found(sh, r, name);
		return;
	}
	chd_chan_info(sh, ch, &ci);
	chd_resp_init(&a);
	a.r.result_case = CHAN__V1__RESPONSE__RESULT_STAT;
	a.r.stat = &ci;
	chd_resp_send(sh->e, r, &a, CHAN_OK);
}

static void
reply_handle(chd_shard *sh, chd_req *r, uint64_t h)
{
	chd_resp               a;
	Chan__V1__HandleResult hr = CHAN__V1__HANDLE_RESULT__INIT;

	chd_resp_init(&a);
	hr.has_handle = true;
	hr.handle = h;
	a.r.result_case = CHAN__V1__RESPONSE__RESULT_HANDLE;
	a.r.handle = &hr;
	chd_resp_send(sh->e, r, &a, CHAN_OK);
}

void
chd_op_sender_open(chd_shard *sh, chd_req *r)
{
	const char *name = r->msg->sender_open->name;
	chd_chan   *ch;
	chd_sender *s;

	if ((ch = chd_chan_get(sh, name, true)) == NULL) {
		reply_no_chan(sh, r, name, sh->e->opts.auto_create);
		return;
	}
	if (ch->closed) {
		chd_reply_err(sh->e, r, CHAN_CLOSED, "channel '%s' is closed",
		    name);
		return;
	}
	if (!chd_engine_conn_alive(sh->e, r->conn)) {
		chd_reply_err(sh->e, r, CHAN_UNAVAILABLE, "connection closed");
		return;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		chd_reply_err(sh->e, r, CHAN_RESOURCE_EXHAUSTED,
		    "out of memory");
		return;
	}
	s->id = sh->next_handle++;
	s->conn = r->conn;
	s->ch = ch;
	CHD_DL_PUSH(ch->senders, s, prev, next);
	if ((s->crec = chd_shard_conn(sh, r->conn, true)) != NULL) {
		CHD_DL_PUSH(s->crec->senders, s, oprev, onext);
	}
	ch->nsenders++;
	ch->had_senders = true;
	reply_handle(sh, r, s->id);
}

void
chd_op_sender_close(chd_shard *sh, chd_req *r)
{
	Chan__V1__SenderClose *sc = r->msg->sender_close;
	chd_chan              *ch;
	chd_sender            *s;

	if ((ch = chan_lookup(sh, sc->name)) == NULL) {
		reply_not_found(sh, r, sc->name);
		return;
	}
	if ((s = sender_find(ch, sc->sender)) != NULL) {
		sender_drop(sh, s);
		chd_reply_empty(sh->e, r);
		return;
	}
	chd_reply_err(sh->e, r, CHAN_NOT_FOUND,
	    "no sender handle %llu on channel '%s'",
	    (unsigned long long) sc->sender, sc->name);
}

void
chd_op_receiver_open(chd_shard *sh, chd_req *r)
{
	const char *name = r->msg->receiver_open->name;
	chd_chan   *ch;

	if ((ch = chd_chan_get(sh, name, true)) == NULL) {
		reply_no_chan(sh, r, name, sh->e->opts.auto_create);
		return;
	}
	if (chd_chan_rx_busy(ch, r->conn) != 0) {
		chd_reply_err(sh->e, r, CHAN_BUSY,
		    "channel '%s' has a receiver on another connection", name);
		return;
	}
	if (!chd_engine_conn_alive(sh->e, r->conn)) {
		chd_reply_err(sh->e, r, CHAN_UNAVAILABLE, "connection closed");
		return;
	}
	/* The same connection asking again gets the same receiver. */
	if (ch->rx_handle == 0) {
		ch->rx_handle = sh->next_handle++;
		ch->rx_conn = r->conn;
		rx_own(sh, ch);
	}
	reply_handle(sh, r, ch->rx_handle);
}

void
chd_op_receiver_close(chd_shard *sh, chd_req *r)
{
	Chan__V1__ReceiverClose *rc = r->msg->receiver_close;
	chd_chan                *ch;

	if ((ch = chan_lookup(sh, rc->name)) == NULL) {
		reply_not_found(sh, r, rc->name);
		return;
	}
	if (ch->rx_handle == 0 || ch->rx_handle != rc->receiver) {
		chd_reply_err(sh->e, r, CHAN_NOT_FOUND,
		    "no receiver handle %llu on channel '%s'",
		    (unsigned long long) rc->receiver, rc->name);
		return;
	}
	ch->rx_handle = 0;
	rx_unown(ch);
	if (!chan_attached(ch)) {
		ch->rx_conn = 0;
	}
	if (!(rc->has_detach_only && rc->detach_only)) {
		/* Rust's Receiver dropped: SendError from now on. */
		chan_discard(sh, ch);
		chan_close(sh, ch);
	}
	chd_reply_empty(sh->e, r);
}

void
chd_op_ack(chd_shard *sh, chd_req *r)
{
	Chan__V1__Ack *ak = r->msg->ack;
	chd_chan      *ch;
	chd_msg       *m;

	if ((ch = chan_lookup(sh, ak->name)) == NULL) {
		reply_not_found(sh, r, ak->name);
		return;
	}
	if ((m = lease_take(ch, ak->seq)) == NULL) {
		chd_reply_err(sh->e, r, CHAN_NOT_FOUND, "no leased message "
		    "with seq %llu on channel '%s' (acked, or its lease "
		    "ended)", (unsigned long long) ak->seq, ak->name);
		return;
	}
	msgs_free(sh, m);
	chd_reply_empty(sh->e, r);
	chan_pump(sh, ch); /* a bounded channel has room now */
}

void
chd_op_release(chd_shard *sh, chd_req *r)
{
	Chan__V1__Release *rl = r->msg->release;
	uint64_t           delay = rl->has_delay_ms ? rl->delay_ms : 0;
	chd_chan          *ch;
	chd_msg           *m;
	chd_lease         *l;

	if ((ch = chan_lookup(sh, rl->name)) == NULL) {
		reply_not_found(sh, r, rl->name);
		return;
	}
	if ((m = lease_take(ch, rl->seq)) == NULL) {
		chd_reply_err(sh->e, r, CHAN_NOT_FOUND, "no leased message "
		    "with seq %llu on channel '%s' (acked, or its lease "
		    "ended)", (unsigned long long) rl->seq, rl->name);
		return;
	}
	/* Delayed: held (and counted) until the delay ends, then back. */
	if (delay == 0 || (l = lease_new(sh, ch, m, 0, delay, NULL)) == NULL) {
		queue_give_back(ch, m);
	} else {
		l->delayed = true;
	}
	chd_reply_empty(sh->e, r);
	chan_pump(sh, ch);
}
