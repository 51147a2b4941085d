/*
 * producer.c - chan_producer: many small sends coalesced into few batch
 * requests. Messages are copied into batches queued locally; one batch is
 * in flight at a time (so the channel receives them in ticket order), and
 * the next one grows meanwhile and goes the moment the one in flight is
 * answered, so a fast caller gets large batches without any tuning
 * (Nagle-style). A lone message waits up to linger_us for company when
 * nothing is in flight.
 *
 * The send's aio callback records the answer and starts the next batch
 * at once (the pipeline never waits for a thread to wake up). Each
 * producer also has one thread of its own, the only place where answers
 * become outcomes, so the callbacks run in ticket order on a known thread.
 * Why a thread rather than callbacks alone: linger_us needs microseconds,
 * and nng's timers (nng_sleep_aio) count milliseconds; on_outcome is the
 * caller's code, which must not stall the nng threads every client of the
 * process shares. A batch is started by whichever thread finds it due
 * first: the caller's (chan_producer_send, chan_producer_flush: no thread
 * hand-off for a lone message), the aio callback's (after an answer) or
 * the producer thread's (at the end of a linger).
 *
 * For ipc:// and tcp:// the producer has a connection of its own instead
 * (direct, producer_sp.c): there a second thread of the producer's
 * alone writes and reads it; a due batch found by another thread is only
 * claimed and that thread woken (once per batch, never while one is in
 * flight), and it starts the next batch itself after an answer.
 */
#include "producer.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t
chan_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
}

void
chan_producer_opts_init(chan_producer_opts *o)
{
	if (o == NULL) {
		return;
	}
	memset(o, 0, sizeof(*o));
	o->timeout_ms = CHAN_WAIT_FOREVER;
}

/* ---- batches --------------------------------------------------------------- */

static void
chan_pbatch_free(chan_pbatch *b)
{
	if (b != NULL) {
		free(b->off);
		free(b->bufs);
		free(b->arena);
		free(b);
	}
}

/* An empty batch (recycled or new); NULL on ENOMEM. mtx held. */
static chan_pbatch *
chan_pbatch_get(chan_producer *p)
{
	chan_pbatch *b = p->spare;

	if (b != NULL) {
		p->spare = b->next;
	} else {
		if ((b = calloc(1, sizeof(*b))) == NULL ||
		    (b->off = calloc(p->max_batch, sizeof(*b->off))) == NULL ||
		    (b->bufs = calloc(p->max_batch, sizeof(*b->bufs))) == NULL) {
			chan_pbatch_free(b);
			return (NULL);
		}
	}
	b->next = NULL;
	b->n = 0;
	b->cost = 0;
	b->bytes = 0;
	return (b);
}

/* Back to the spares, dropping a large arena (one big burst keeps nothing). mtx held. */
static void
chan_pbatch_put(chan_producer *p, chan_pbatch *b)
{
	if (b->arena_cap > CHAN_PROD_ARENA_KEEP) {
		free(b->arena);
		b->arena = NULL;
		b->arena_cap = 0;
	}
	b->next = p->spare;
	p->spare = b;
}

static bool
chan_pbatch_room(chan_pbatch *b, size_t len)
{
	size_t cap = b->arena_cap != 0 ? b->arena_cap : CHAN_PROD_ARENA_MIN;
	char  *n;

	if (b->bytes + len <= b->arena_cap) {
		return (true);
	}
	while (cap < b->bytes + len) {
		cap *= 2;
	}
	if ((n = realloc(b->arena, cap)) == NULL) {
		return (false);
	}
	b->arena = n;
	b->arena_cap = cap;
	return (true);
}

/* ---- sending ---------------------------------------------------------------- */

/* Is the oldest queued batch due now? 0: yes, else microseconds to wait. mtx held. */
static int64_t
chan_producer_due(const chan_producer *p)
{
	const chan_pbatch *b = p->head;
	int64_t            left;

	if (b->next != NULL || b->n >= p->max_batch || b->cost >= p->max_cost ||
	    p->linger_us == 0 || p->quit || p->flush_upto >= b->first ||
	    p->nmsgs >= p->max_buffered || p->nbytes >= p->max_bytes) {
		return (0);
	}
	left = b->born_us + p->linger_us - chan_mono_us();
	return (left > 0 ? left : 0);
}

/* Can a batch be started now? mtx held. */
static bool
chan_producer_ready(const chan_producer *p)
{
	return (p->inflight == NULL && p->head != NULL && p->stopped == CHAN_OK &&
	    chan_producer_due(p) == 0);
}

/*
 * Claims the oldest batch and sends it. mtx held on entry and exit, but
 * dropped around chan_send_aio: its callback may run before it returns.
 * direct: only claims it, for the I/O thread to write.
 */
static void
chan_producer_start(chan_producer *p)
{
	chan_pbatch *b = p->head;
	uint32_t     i;

	p->head = b->next;
	if (p->tail == b) {
		p->tail = NULL;
	}
	b->next = NULL;
	p->inflight = b;
	for (i = 0; i < b->n; i++) {
		/* A batch of empty messages has no arena. */
		b->bufs[i].data = b->arena != NULL ? b->arena + b->off[i] : NULL;
	}
	if (p->direct) {
		/* The I/O thread writes it (producer_sp.c). */
		p->wire = true;
		pthread_cond_signal(&p->io_wake);
		return;
	}
	pthread_mutex_unlock(&p->mtx);
	chan_send_aio(p->c, p->name, b->bufs, b->n, p->timeout_ms, p->aio);
	pthread_mutex_lock(&p->mtx);
}

/*
 * Starts a due batch from this thread, else lets the producer thread time
 * the linger: always (flush), or only for a batch's first message (send:
 * one wake-up per batch, not per message). mtx held.
 */
void
chan_producer_kick(chan_producer *p, bool always)
{
	if (chan_producer_ready(p)) {
		chan_producer_start(p);
	} else if (always || (p->inflight == NULL && p->head != NULL && p->head->n == 1)) {
		pthread_cond_signal(&p->wake);
	}
}

/* A batch's outcomes, in ticket order, then its messages leave the count. mtx held. */
static void
chan_producer_settle(chan_producer *p, chan_pbatch *b, chan_status s, uint64_t seq)
{
	uint32_t i;

	if (p->cb != NULL) {
		pthread_mutex_unlock(&p->mtx);
		for (i = 0; i < b->n; i++) {
			p->cb(p->arg, b->first + i, s, s == CHAN_OK ? seq + i : 0);
		}
		pthread_mutex_lock(&p->mtx);
	}
	p->done_ticket = b->first + b->n - 1;
	p->nmsgs -= b->n;
	p->nbytes -= b->bytes;
	chan_pbatch_put(p, b);
	pthread_cond_broadcast(&p->room);
	pthread_cond_broadcast(&p->settled);
}

/* Notes a failure of n messages (for flush, and for the stop). mtx held. */
static void
chan_producer_note_failure(chan_producer *p, chan_status s, const char *msg, uint32_t n)
{
	atomic_fetch_add(&p->failed, n);
	if (p->flush_err == CHAN_OK) {
		p->flush_err = s;
		snprintf(p->flush_msg, sizeof(p->flush_msg), "%s", msg);
	}
	if (p->stop_on_failure && p->stopped == CHAN_OK) {
		p->stopped = s;
		if (msg != p->stop_msg) { /* never is here; gcc cannot tell */
			snprintf(p->stop_msg, sizeof(p->stop_msg), "%s", msg);
		}
		pthread_cond_broadcast(&p->room); /* blocked senders fail at once */
	}
}

/* The batch in flight, b, was answered: it joins the done list. mtx held. */
void
chan_producer_answered(chan_producer *p, chan_pbatch *b, chan_status st, uint64_t seq,
    const char *msg)
{
	b->st = st;
	b->seq = st == CHAN_OK ? seq : 0;
	if (st == CHAN_OK) {
		atomic_fetch_add(&p->accepted, b->n);
	} else {
		chan_producer_note_failure(p, st, msg, b->n);
	}
	p->inflight = NULL;
	if (p->done_tail != NULL) {
		p->done_tail->next = b;
	} else {
		p->done = b;
	}
	p->done_tail = b;
}

/*
 * The batch in flight was answered (nng thread): note the answer, send
 * what accumulated meanwhile at once (the aio may be restarted from its
 * own callback), and leave the outcomes to the producer thread.
 */
static void
chan_producer_aio_cb(chan_aio *a, void *arg)
{
	chan_producer *p = arg;
	chan_pbatch   *b;

	pthread_mutex_lock(&p->mtx);
	b = p->inflight;
	chan_producer_answered(p, b, chan_aio_result(a),
	    chan_aio_result(a) == CHAN_OK ? chan_aio_first_seq(a) : 0, chan_aio_error(a));
	if (p->head != NULL && p->stopped == CHAN_OK) {
		chan_producer_start(p);
	}
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->mtx);
}

/* Delivers the outcomes of the oldest answered batch. mtx held. */
static void
chan_producer_deliver(chan_producer *p)
{
	chan_pbatch *b = p->done;

	p->done = b->next;
	if (p->done == NULL) {
		p->done_tail = NULL;
	}
	b->next = NULL;
	chan_producer_settle(p, b, b->st, b->seq);
}

/* stop_on_failure: everything queued behind the failure fails unsent. mtx held. */
static void
chan_producer_fail_queued(chan_producer *p)
{
	chan_pbatch *b;

	while ((b = p->head) != NULL) {
		p->head = b->next;
		if (p->tail == b) {
			p->tail = NULL;
		}
		b->next = NULL;
		chan_producer_note_failure(p, p->stopped, p->stop_msg, b->n);
		chan_producer_settle(p, b, p->stopped, 0);
	}
}

static void *
chan_producer_main(void *arg)
{
	chan_producer *p = arg;
	int64_t        wait_us;

	pthread_mutex_lock(&p->mtx);
	for (;;) {
		if (p->done != NULL) {
			chan_producer_deliver(p);
		} else if (p->stopped != CHAN_OK && p->head != NULL && p->inflight == NULL) {
			chan_producer_fail_queued(p);
		} else if (p->inflight == NULL && p->head != NULL && p->stopped == CHAN_OK) {
			if ((wait_us = chan_producer_due(p)) == 0) {
				chan_producer_start(p);
			} else {
				struct timespec ts = chan_deadline_in(wait_us);

				pthread_cond_timedwait(&p->wake, &p->mtx, &ts);
			}
		} else if (p->quit && p->inflight == NULL && p->head == NULL && p->done == NULL) {
			break;
		} else {
			pthread_cond_wait(&p->wake, &p->mtx);
		}
	}
	pthread_mutex_unlock(&p->mtx);
	return (NULL);
}

/* ---- public ---------------------------------------------------------------- */

/* The channel's capacity caps the batch: more than it holds is refused by the daemon. */
static chan_status
chan_producer_capacity(chan_client *c, const char *name, uint32_t *max_batch)
{
	chan_stat_info info;
	chan_status    s = chan_stat(c, name, &info);

	if (s == CHAN_OK) {
		if (info.bounded && info.capacity == 0) {
			*max_batch = 1; /* rendezvous: one message per send */
		} else if (info.bounded && info.capacity < *max_batch) {
			*max_batch = (uint32_t) info.capacity;
		}
		return (CHAN_OK);
	}
	/* Missing: auto-created unbounded by the first send (or NOT_FOUND outcomes). */
	if (s == CHAN_UNAVAILABLE || s == CHAN_PROTOCOL || s == CHAN_INVALID_ARGUMENT) {
		return (s);
	}
	return (CHAN_OK);
}

/* Limits from the options, the daemon's and the channel's. */
static chan_status
chan_producer_limits(chan_producer *p, const chan_producer_opts *o)
{
	uint64_t per = chan_max_message_size(p->c) + CHAN_PROD_MSG_COST;
	uint32_t dmax = chan_max_batch(p->c);
	uint64_t cost;
	chan_status s;

	p->max_batch = o->max_batch != 0 && o->max_batch < dmax ? o->max_batch : dmax;
	if ((s = chan_producer_capacity(p->c, p->name, &p->max_batch)) != CHAN_OK) {
		return (s);
	}
	cost = per > (CHAN_PROD_REQ_CAP - CHAN_PROD_REQ_SLACK) / dmax
	    ? CHAN_PROD_REQ_CAP - CHAN_PROD_REQ_SLACK : per * dmax;
	if (o->max_batch_bytes == 0 && CHAN_SEND_BATCH_BYTES_DEFAULT < cost) {
		cost = CHAN_SEND_BATCH_BYTES_DEFAULT;
	} else if (o->max_batch_bytes != 0 && o->max_batch_bytes < cost) {
		cost = o->max_batch_bytes;
	}
	p->max_cost = cost > SIZE_MAX ? SIZE_MAX : (size_t) cost;
	p->max_buffered = o->max_buffered != 0 ? o->max_buffered : (size_t) p->max_batch * 4;
	p->max_bytes = p->max_cost > SIZE_MAX / 4 ? SIZE_MAX : p->max_cost * 4;
	p->linger_us = o->linger_us;
	p->timeout_ms = o->timeout_ms < 0 ? CHAN_WAIT_FOREVER : o->timeout_ms;
	p->cb = o->on_outcome;
	p->arg = o->arg;
	p->stop_on_failure = o->stop_on_failure;
	return (CHAN_OK);
}

/*
 * Its own connection when it can (direct, sp.h), else an aio on c. The
 * first dial is here, so a producer that cannot reach the daemon says so
 * at once.
 */
static chan_status
chan_producer_connect(chan_producer *p)
{
	if (!chan_sp_wanted(chan_url(p->c))) {
		return (chan_aio_alloc(&p->aio, chan_producer_aio_cb, p));
	}
	return (chan_prod_sp_open(p));
}

/* The producer's threads take no signals: they are the application's. */
int
chan_thread_spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int      rv;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rv = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return (rv);
}

static void
chan_producer_destroy(chan_producer *p)
{
	chan_pbatch *b;

	chan_aio_free(p->aio);
	chan_prod_sp_close(p);
	while ((b = p->spare) != NULL) {
		p->spare = b->next;
		chan_pbatch_free(b);
	}
	pthread_cond_destroy(&p->wake);
	pthread_cond_destroy(&p->room);
	pthread_cond_destroy(&p->settled);
	pthread_cond_destroy(&p->io_wake);
	pthread_mutex_destroy(&p->mtx);
	free(p);
}

chan_status
chan_producer_open(chan_client *c, const char *name, const chan_producer_opts *opts,
    chan_producer **out)
{
	chan_producer_opts o;
	chan_producer     *p;
	chan_status        s;

	if (c == NULL || out == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "producer: client or out is NULL"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	if (opts != NULL) {
		o = *opts;
	} else {
		chan_producer_opts_init(&o);
	}
	if ((p = calloc(1, sizeof(*p))) == NULL) {
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
	}
	p->c = c;
	p->wakefd[0] = p->wakefd[1] = -1;
	snprintf(p->name, sizeof(p->name), "%s", name);
	pthread_mutex_init(&p->mtx, NULL);
	chan_cond_init_mono(&p->wake);
	chan_cond_init_mono(&p->room);
	chan_cond_init_mono(&p->settled);
	chan_cond_init_mono(&p->io_wake);
	atomic_init(&p->accepted, 0);
	atomic_init(&p->failed, 0);
	if ((s = chan_producer_limits(p, &o)) != CHAN_OK ||
	    (s = chan_producer_connect(p)) != CHAN_OK) {
		chan_producer_destroy(p);
		return (s);
	}
	if (chan_thread_spawn(&p->thread, chan_producer_main, p) != 0) {
		chan_producer_destroy(p);
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "producer: cannot start its thread"));
	}
	*out = p;
	return (CHAN_OK);
}

/* Appends one message (copied) to the last batch, or to a new one. mtx held. */
static chan_status
chan_producer_append(chan_producer *p, const void *data, size_t len)
{
	chan_pbatch *b = p->tail;
	size_t       cost = len + CHAN_PROD_MSG_COST;
	bool         fresh = false;

	if (b == NULL || b->n >= p->max_batch || (b->n > 0 && b->cost + cost > p->max_cost)) {
		if ((b = chan_pbatch_get(p)) == NULL) {
			return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
		}
		fresh = true;
	}
	if (!chan_pbatch_room(b, len)) {
		if (fresh) {
			chan_pbatch_put(p, b);
		}
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
	}
	if (fresh) {
		b->first = p->last_ticket + 1;
		b->born_us = chan_mono_us();
		if (p->tail != NULL) {
			p->tail->next = b;
		} else {
			p->head = b;
		}
		p->tail = b;
	}
	if (len > 0) {
		memcpy(b->arena + b->bytes, data, len);
	}
	b->off[b->n] = b->bytes;
	b->bufs[b->n].len = len;
	b->n++;
	b->bytes += len;
	b->cost += cost;
	p->nmsgs++;
	p->nbytes += len;
	p->last_ticket++;
	return (CHAN_OK);
}

chan_status
chan_producer_send(chan_producer *p, const void *data, size_t len, uint64_t *ticket)
{
	chan_status s;

	if (p == NULL || (len > 0 && data == NULL)) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "producer send: producer or data missing"));
	}
	if (len > chan_max_message_size(p->c)) {
		return (chan_fail(CHAN_TOO_LARGE,
		    "message of %zu bytes is over the daemon's maximum of %llu bytes", len,
		    (unsigned long long) chan_max_message_size(p->c)));
	}
	pthread_mutex_lock(&p->mtx);
	/* Room: under max_buffered messages, and under max_bytes unless empty. */
	while (p->stopped == CHAN_OK &&
	    (p->nmsgs >= p->max_buffered || (p->nmsgs > 0 && p->nbytes + len > p->max_bytes))) {
		pthread_cond_wait(&p->room, &p->mtx);
	}
	if (p->stopped != CHAN_OK) {
		s = chan_fail(p->stopped, "an earlier batch failed, nothing more is sent: %s",
		    p->stop_msg);
		pthread_mutex_unlock(&p->mtx);
		return (s);
	}
	if ((s = chan_producer_append(p, data, len)) == CHAN_OK) {
		if (ticket != NULL) {
			*ticket = p->last_ticket;
		}
		if (p->inflight == NULL) {
			chan_producer_kick(p, false);
		}
	}
	pthread_mutex_unlock(&p->mtx);
	return (s);
}

chan_status
chan_producer_flush(chan_producer *p, int64_t timeout_ms)
{
	struct timespec ts;
	uint64_t        target;
	chan_status     s;
	char            msg[sizeof(p->flush_msg)];

	if (p == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "producer is NULL"));
	}
	if (timeout_ms > 0) {
		ts = chan_deadline_in(timeout_ms * 1000);
	}
	pthread_mutex_lock(&p->mtx);
	target = p->last_ticket;
	if (p->flush_upto < target) {
		p->flush_upto = target;
	}
	chan_producer_kick(p, true);
	while (p->done_ticket < target) {
		if (timeout_ms == 0) {
			break;
		} else if (timeout_ms < 0) {
			pthread_cond_wait(&p->settled, &p->mtx);
		} else if (pthread_cond_timedwait(&p->settled, &p->mtx, &ts) != 0 &&
		    p->done_ticket < target) {
			break;
		}
	}
	if (p->done_ticket < target) {
		s = chan_fail(CHAN_TIMEOUT, "flush: %llu messages not answered within %lld ms",
		    (unsigned long long) (target - p->done_ticket), (long long) timeout_ms);
		pthread_mutex_unlock(&p->mtx);
		return (s);
	}
	s = p->flush_err;
	snprintf(msg, sizeof(msg), "%s", p->flush_msg);
	p->flush_err = CHAN_OK;
	p->flush_msg[0] = '\0';
	pthread_mutex_unlock(&p->mtx);
	return (s == CHAN_OK ? CHAN_OK : chan_fail(s, "%s", msg));
}

uint64_t
chan_producer_accepted(const chan_producer *p)
{
	return (p != NULL ? atomic_load(&((chan_producer *) p)->accepted) : 0);
}

uint64_t
chan_producer_failed(const chan_producer *p)
{
	return (p != NULL ? atomic_load(&((chan_producer *) p)->failed) : 0);
}

chan_status
chan_producer_close(chan_producer *p)
{
	chan_status s;
	char        msg[512];

	if (p == NULL) {
		return (CHAN_OK);
	}
	s = chan_producer_flush(p, CHAN_WAIT_FOREVER);
	snprintf(msg, sizeof(msg), "%s", chan_last_error(NULL));
	pthread_mutex_lock(&p->mtx);
	p->quit = true;
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->mtx);
	pthread_join(p->thread, NULL);
	chan_producer_destroy(p);
	return (s == CHAN_OK ? CHAN_OK : chan_fail(s, "%s", msg));
}
