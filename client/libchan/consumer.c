/*
 * consumer.c - chan_consumer: one channel's messages fetched ahead into
 * local memory, one receive in flight at a time (so they come in order),
 * over a connection of the consumer's own.
 *
 * Custody: the fetches hold their confirmation (chan_aio_hold_confirm). A
 * message counts as taken when the caller comes back for the next one (or
 * closes the consumer): the caller has finished with it by then, say
 * printed it, so a process that dies while handling a message never
 * confirms it. A delivery (one answer) is confirmed once every message of
 * it is taken; the confirmation rides on the next request of the private
 * connection. Closing that connection gives every unconfirmed delivery
 * back to the channel, marked redelivered: untaken messages are never lost.
 * At close, the delivery the caller took part of is confirmed in part
 * (Request.confirm_part): its taken messages stay taken, the rest go back;
 * a daemon without confirm_part gives all of it back (at-least-once).
 *
 * Fetches: when the buffer is empty and nothing is in flight, a receive
 * asks the daemon with the caller's own timeout (so timeout 0 is a real
 * try_recv, answered by the daemon); when fewer than low_water are
 * buffered after a receive, a fetch is started in the background that
 * waits forever (parked in the daemon, the channel's receiver meanwhile),
 * and a receive finding the buffer empty waits for it up to its timeout.
 *
 * For ipc:// and tcp:// the connection is the consumer's own chan_sp
 * rather than an nng client (direct, consumer_sp.c): the caller's thread
 * writes the fetches and reads their answers itself, with no aio.
 */
#include "consumer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


void
chan_consumer_opts_init(chan_consumer_opts *o)
{
	if (o != NULL) {
		memset(o, 0, sizeof(*o));
	}
}

static void
chan_consumer_aio_cb(chan_aio *a, void *arg)
{
	chan_consumer *k = arg;

	(void) a;
	pthread_mutex_lock(&k->mtx);
	k->done = true;
	pthread_cond_broadcast(&k->cv);
	pthread_mutex_unlock(&k->mtx);
}

/* ---- rings ------------------------------------------------------------------ */

bool
chan_ring_grow(void **ring, size_t elem, size_t *head, size_t n, size_t *cap, size_t want)
{
	size_t ncap = *cap != 0 ? *cap : 64;
	char  *nr;
	size_t i;

	if (n + want <= *cap) {
		return (true);
	}
	while (ncap < n + want) {
		ncap *= 2;
	}
	if ((nr = malloc(ncap * elem)) == NULL) {
		return (false);
	}
	for (i = 0; i < n; i++) {
		memcpy(nr + i * elem, (char *) *ring + ((*head + i) % *cap) * elem, elem);
	}
	free(*ring);
	*ring = nr;
	*head = 0;
	*cap = ncap;
	return (true);
}

static chan_msg *
chan_consumer_pop(chan_consumer *k)
{
	chan_msg *m = k->buf[k->bhead];

	k->bhead = (k->bhead + 1) % k->bcap;
	k->bn--;
	return (m);
}


/* ---- custody ---------------------------------------------------------------- */

/* What the last call handed out is taken now: confirm the deliveries it completes. */
static void
chan_consumer_taken(chan_consumer *k)
{
	while (k->handed > 0 && k->dn > 0) {
		chan_kdelivery *d = &k->dq[k->dhead];
		size_t          t = d->left < k->handed ? d->left : k->handed;

		d->left -= t;
		k->handed -= t;
		if (d->left > 0) {
			break;
		}
		if (d->id != 0 && k->direct) {
			chan_kc_add(k, d->id, CHAN_TAKEN_ALL, d->gen);
			k->unsent = true;
		} else if (d->id != 0) {
			chan_confirm_later(k->c, d->id, (chan_via) { .pipe = d->pipe });
			k->unsent = true;
		}
		k->dhead = (k->dhead + 1) % k->dcap;
		k->dn--;
	}
	k->handed = 0;
}

/*
 * Closing: the oldest delivery, if the caller took some of it, is
 * confirmed that far (the last Ping carries it), so those messages do not
 * come back with the untaken rest.
 */
static void
chan_consumer_taken_part(chan_consumer *k)
{
	chan_kdelivery *d;

	if (k->dn == 0) {
		return;
	}
	d = &k->dq[k->dhead];
	if (d->id != 0 && d->left < d->n && k->direct) {
		chan_kc_add(k, d->id, (uint32_t) (d->n - d->left), d->gen);
	} else if (d->id != 0 && d->left < d->n) {
		chan_confirm_part_later(k->c, d->id, (uint32_t) (d->n - d->left),
		    (chan_via) { .pipe = d->pipe });
	}
}

/*
 * A fetch is parked in the daemon and cannot carry the confirmations the
 * caller's progress just made: send them with a Ping, so messages already
 * handled do not come back if this process dies while the channel is idle.
 */
static void
chan_consumer_confirm_now(chan_consumer *k, int64_t deadline_ms)
{
	chan_exchange  x;
	Chan__V1__Ping p = CHAN__V1__PING__INIT;
	int64_t        bound = chl_now_mono_ms() + CHAN_CONFIRM_PING_MS;

	/* Never past the caller's own deadline (< 0: none). */
	if (deadline_ms >= 0 && deadline_ms < bound) {
		bound = deadline_ms;
	}
	k->unsent = false;
	if (k->direct) {
		chan_kd_ping(k, bound);
		return;
	}
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_PING;
	x.req.ping = &p;
	/* A failure puts them back for the next request: nothing to do here. */
	bound -= chl_now_mono_ms();
	(void) chan_exchange_run(k->c, &x, 0, bound > 0 ? bound : 0, false);
	chan_exchange_fini(&x);
}

/* ---- fetching --------------------------------------------------------------- */

static void
chan_consumer_fetch(chan_consumer *k, int64_t timeout_ms, bool background)
{
	size_t want = k->prefetch;

	if (k->limit != 0 && k->limit - k->fetched < want) {
		want = (size_t) (k->limit - k->fetched);
	}
	pthread_mutex_lock(&k->mtx);
	k->done = false;
	pthread_mutex_unlock(&k->mtx);
	k->inflight = true;
	k->background = background;
	k->unsent = false; /* the request carries them */
	if (k->direct) {
		k->fetch_id = atomic_fetch_add(&k->next_id, 1) + 1;
		k->fetch_want = (uint32_t) want;
		k->fetch_timeout = background ? CHAN_WAIT_FOREVER : timeout_ms;
		k->resets = 0;
		(void) chan_kd_send_fetch(k); /* a failure: chan_kd_wait redials */
		return;
	}
	chan_recv_aio_bytes(k->c, k->name, want, k->fetch_bytes,
	    background ? CHAN_WAIT_FOREVER : timeout_ms, k->aio);
}

/* Takes the answered fetch's messages (and delivery) into the buffer. */
static void
chan_consumer_absorb(chan_consumer *k)
{
	chan_status s;
	size_t      n, i;
	uint64_t    id = 0;
	nng_pipe    pipe = NNG_PIPE_INITIALIZER;

	if (k->direct) {
		if (k->inflight && k->ans != NULL) {
			chan_kd_absorb(k);
		}
		return;
	}
	if (!k->inflight || !atomic_load_explicit(&k->done, memory_order_acquire)) {
		return;
	}
	pthread_mutex_lock(&k->mtx);
	k->done = false;
	pthread_mutex_unlock(&k->mtx);
	k->inflight = false;
	if ((s = chan_aio_result(k->aio)) != CHAN_OK) {
		k->pend = s;
		snprintf(k->pend_msg, sizeof(k->pend_msg), "%s", chan_aio_error(k->aio));
		return;
	}
	n = chan_aio_count(k->aio);
	if (!chan_ring_grow((void **) &k->buf, sizeof(*k->buf), &k->bhead, k->bn, &k->bcap, n) ||
	    !chan_ring_grow((void **) &k->dq, sizeof(*k->dq), &k->dhead, k->dn, &k->dcap, 1)) {
		/* Left in the aio, never confirmed: the daemon gives them back later. */
		k->pend = CHAN_RESOURCE_EXHAUSTED;
		snprintf(k->pend_msg, sizeof(k->pend_msg), "out of memory for prefetched messages");
		return;
	}
	if (!chan_aio_delivery(k->aio, &id, &pipe)) {
		id = 0;
	}
	for (i = 0; i < n; i++) {
		k->buf[(k->bhead + k->bn) % k->bcap] = chan_aio_take_msg(k->aio, i);
		k->bn++;
	}
	k->dq[(k->dhead + k->dn) % k->dcap] = (chan_kdelivery) { id, pipe, 0, n, n };
	k->dn++;
	k->fetched += n;
}


/* Fetches ahead when the buffer runs low. */
static void
chan_consumer_prefetch(chan_consumer *k)
{
	if (!k->inflight && k->pend == CHAN_OK && k->bn < k->low_water &&
	    (k->limit == 0 || k->fetched < k->limit) && !chan_consumer_is_cancelled(k)) {
		chan_consumer_fetch(k, CHAN_WAIT_FOREVER, true);
	}
}


/*
 * Waits for the fetch in flight: without a local bound for the caller's
 * own fetch (the daemon applies its timeout), up to the deadline for a
 * background one. false: the deadline passed first.
 */
static bool
chan_consumer_wait(chan_consumer *k, int64_t deadline_ms)
{
	struct timespec ts;
	bool            bounded = k->background && deadline_ms >= 0;

	if (k->direct) {
		return (chan_kd_wait(k, bounded ? deadline_ms : -1));
	}
	if (bounded) {
		int64_t left = deadline_ms - chl_now_mono_ms();

		ts = chan_deadline_in(left > 0 ? left * 1000 : 0);
	}
	pthread_mutex_lock(&k->mtx);
	while (!k->done && !k->cancelled) {
		if (!bounded) {
			pthread_cond_wait(&k->cv, &k->mtx);
		} else if (pthread_cond_timedwait(&k->cv, &k->mtx, &ts) != 0) {
			break;
		}
	}
	bounded = k->done || k->cancelled;
	pthread_mutex_unlock(&k->mtx);
	return (bounded);
}

/* Makes the buffer non-empty, or says why it cannot (as chan_recv would). */
static chan_status
chan_consumer_fill(chan_consumer *k, int64_t timeout_ms)
{
	int64_t deadline;

	/* The common case, a message already here, reads no clock. */
	chan_consumer_absorb(k);
	if (k->bn > 0) {
		return (CHAN_OK);
	}
	deadline = timeout_ms > 0 ? chl_now_mono_ms() + timeout_ms : timeout_ms;
	for (;;) {
		chan_consumer_absorb(k);
		if (k->bn > 0) {
			return (CHAN_OK);
		}
		if (k->pend != CHAN_OK) {
			chan_status s = k->pend;

			k->pend = CHAN_OK;
			return (chan_fail(s, "%s", k->pend_msg));
		}
		if (chan_consumer_is_cancelled(k)) {
			return (chan_fail(CHAN_UNAVAILABLE, "cancelled"));
		}
		if (!k->inflight) {
			int64_t t = timeout_ms;

			if (k->limit != 0 && k->fetched >= k->limit) {
				return (chan_fail(CHAN_OUT_OF_RANGE,
				    "consumer of '%s' reached its limit of %llu messages", k->name,
				    (unsigned long long) k->limit));
			}
			if (timeout_ms > 0 && (t = deadline - chl_now_mono_ms()) < 0) {
				t = 0;
			}
			chan_consumer_fetch(k, t, false);
			continue;
		}
		if (k->background && timeout_ms == 0) {
			return (chan_fail(CHAN_EMPTY, "channel '%s' is empty", k->name));
		}
		if (k->unsent && k->background) {
			/*
			 * A fetch answered soon carries the confirmations anyway
			 * (streaming); one parked for longer (an idle channel)
			 * would keep them: a Ping carries them then.
			 */
			int64_t idle = chl_now_mono_ms() + CHAN_CONFIRM_IDLE_MS;

			if (chan_consumer_wait(k, deadline >= 0 && deadline < idle ? deadline : idle)) {
				continue;
			}
			if (deadline >= 0 && chl_now_mono_ms() >= deadline) {
				return (chan_fail(CHAN_TIMEOUT, "no message on '%s' within %lld ms",
				    k->name, (long long) timeout_ms));
			}
			chan_consumer_confirm_now(k, deadline);
			continue;
		}
		if (!chan_consumer_wait(k, deadline)) {
			return (chan_fail(CHAN_TIMEOUT, "no message on '%s' within %lld ms", k->name,
			    (long long) timeout_ms));
		}
	}
}

/* ---- public ----------------------------------------------------------------- */

static void
chan_consumer_free(chan_consumer *k)
{
	chan_aio_free(k->aio);
	while (k->bn > 0) {
		chan_msg_free(chan_consumer_pop(k));
	}
	free(k->buf);
	free(k->dq);
	/* Last confirmations, then the connection closes: the rest goes back. */
	if (k->direct) {
		chan_kd_close(k);
	}
	chan_disconnect(k->c);
	pthread_cond_destroy(&k->cv);
	pthread_mutex_destroy(&k->mtx);
	free(k);
}

chan_status
chan_consumer_open(chan_client *c, const char *name, const chan_consumer_opts *opts,
    chan_consumer **out)
{
	chan_consumer     *k;
	chan_status        s;
	uint32_t           dmax;

	if (c == NULL || out == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "consumer: client or out is NULL"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	if ((k = calloc(1, sizeof(*k))) == NULL) {
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
	}
	snprintf(k->name, sizeof(k->name), "%s", name);
	pthread_mutex_init(&k->mtx, NULL);
	chan_cond_init_mono(&k->cv);
	if (chan_sp_wanted(chan_url(c))) {
		if ((s = chan_kd_open(k, c)) != CHAN_OK) {
			goto fail;
		}
		dmax = k->dmax;
	} else {
		if ((s = chan_connect(chan_url(c), &k->c)) != CHAN_OK) {
			goto fail;
		}
		if ((s = chan_aio_alloc(&k->aio, chan_consumer_aio_cb, k)) != CHAN_OK) {
			goto fail;
		}
		chan_aio_hold_confirm(k->aio, true);
		dmax = chan_max_batch(k->c);
	}
	k->prefetch = opts != NULL && opts->prefetch != 0 && opts->prefetch < dmax ? opts->prefetch
	                                                                            : dmax;
	k->low_water = opts != NULL && opts->low_water != 0 ? opts->low_water : k->prefetch / 2;
	if (k->low_water > k->prefetch) {
		k->low_water = k->prefetch;
	}
	if (k->low_water == 0) {
		k->low_water = 1; /* fetch ahead at least when the buffer is empty */
	}
	k->limit = opts != NULL ? opts->limit : 0;
	k->fetch_bytes = opts == NULL || opts->prefetch_bytes == 0 ? CHAN_FETCH_BYTES_DEFAULT
	    : opts->prefetch_bytes == SIZE_MAX ? 0 : opts->prefetch_bytes;
	*out = k;
	return (CHAN_OK);

fail:
	chan_aio_free(k->aio);
	if (k->direct) {
		chan_kd_close(k);
	}
	chan_disconnect(k->c);
	pthread_cond_destroy(&k->cv);
	pthread_mutex_destroy(&k->mtx);
	free(k);
	return (s);
}

chan_status
chan_consumer_recv_n(chan_consumer *k, size_t max, chan_msg **msgs, size_t *n, int64_t timeout_ms)
{
	chan_status s;
	size_t      got = 0;

	if (k == NULL || msgs == NULL || n == NULL || max == 0) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "consumer recv: consumer, output or max missing"));
	}
	chan_consumer_taken(k);
	if ((s = chan_consumer_fill(k, timeout_ms)) != CHAN_OK) {
		return (s);
	}
	while (got < max && k->bn > 0) {
		msgs[got++] = chan_consumer_pop(k);
		if (k->bn == 0) {
			chan_consumer_absorb(k); /* an answer that came meanwhile */
		}
	}
	k->handed = got;
	chan_consumer_prefetch(k);
	*n = got;
	return (CHAN_OK);
}

chan_status
chan_consumer_recv(chan_consumer *k, chan_msg **out, int64_t timeout_ms)
{
	size_t n;

	return (chan_consumer_recv_n(k, 1, out, &n, timeout_ms));
}

size_t
chan_consumer_buffered(const chan_consumer *k)
{
	return (k != NULL ? k->bn : 0);
}

void
chan_consumer_cancel(chan_consumer *k)
{
	if (k == NULL) {
		return;
	}
	pthread_mutex_lock(&k->mtx);
	k->cancelled = true;
	pthread_cond_broadcast(&k->cv);
	pthread_mutex_unlock(&k->mtx);
	if (k->direct) {
		chan_kd_cancel(k);
		return;
	}
	chan_cancel(k->c);
}

void
chan_consumer_close(chan_consumer *k)
{
	if (k == NULL) {
		return;
	}
	/* The caller has what the last call handed out. */
	chan_consumer_taken(k);
	chan_consumer_taken_part(k);
	chan_consumer_free(k);
}
