/* lane.c - synchronous calls on a connection of the client's own (lane.h says why). */
#include "lane.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "duration.h"
#include "wire.h"

/* Requests this small are packed on the caller's stack. */
#define CHAN_LANE_STACK 2048

/* Every waiting caller looks again: the connection or the client changed. l->mtx held. */
static void
chan_lane_wake_all(chan_lane *l)
{
	pthread_cond_broadcast(&l->cv);
	for (chan_lane_call *k = l->calls; k != NULL; k = k->next) {
		pthread_cond_signal(&k->cv);
	}
}

/* chan_cancel(c): every waiting caller returns, the reader too. c->mtx held. */
static void
chan_lane_cancel_cb(void *arg)
{
	chan_lane *l = arg;

	pthread_mutex_lock(&l->mtx);
	if (!l->cancelled) {
		l->cancelled = true;
		(void) !write(l->wake[1], "x", 1);
	}
	chan_lane_wake_all(l);
	pthread_mutex_unlock(&l->mtx);
}

chan_status
chan_lane_open(chan_lane *l, chan_client *c, size_t recvmax)
{
	chan_status s;

	memset(l, 0, sizeof(*l));
	l->wake[0] = l->wake[1] = -1;
	if ((s = chan_sp_init(&l->sp, c->url, recvmax)) != CHAN_OK) {
		return (s);
	}
	if ((s = chan_sp_wake_open(l->wake)) != CHAN_OK) {
		chan_sp_fini(&l->sp);
		return (s);
	}
	pthread_mutex_init(&l->mtx, NULL);
	chan_cond_init_mono(&l->cv);
	if ((s = chan_sp_dial(&l->sp, CHAN_SP_DIAL_MS, -1)) != CHAN_OK) {
		chan_lane_close(l, NULL);
		return (s);
	}
	l->up = true;
	l->gen = l->sp.gen;
	l->hook.fn = chan_lane_cancel_cb;
	l->hook.arg = l;
	chan_cancel_hook_add(c, &l->hook);
	return (CHAN_OK);
}

void
chan_lane_close(chan_lane *l, chan_client *c)
{
	if (c != NULL) {
		chan_cancel_hook_remove(c, &l->hook);
	}
	chan_sp_fini(&l->sp);
	chan_sp_wake_close(l->wake);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mtx);
}

bool
chan_lane_holds(chan_lane *l, uint64_t gen)
{
	bool up;

	pthread_mutex_lock(&l->mtx);
	up = l->up && l->gen == gen;
	pthread_mutex_unlock(&l->mtx);
	return (up);
}

/* The deadline (chl_now_mono_ms) of a local timeout; -1: none. */
static int64_t
chan_lane_deadline(int64_t timeout_ms)
{
	return (timeout_ms < 0 ? -1 : chl_now_mono_ms() + timeout_ms);
}

static bool
chan_lane_expired(int64_t deadline)
{
	return (deadline >= 0 && chl_now_mono_ms() >= deadline);
}

/* Waits on cv (l->cv, or a call's) until woken or deadline. l->mtx held. */
static void
chan_lane_sleep(chan_lane *l, pthread_cond_t *cv, int64_t deadline)
{
	struct timespec ts;
	int64_t         left;

	if (deadline < 0) {
		pthread_cond_wait(cv, &l->mtx);
		return;
	}
	left = deadline - chl_now_mono_ms();
	if (left <= 0) {
		return;
	}
	ts = chan_deadline_in(left * 1000);
	(void) pthread_cond_timedwait(cv, &l->mtx, &ts);
}

/* One dial's bound: CHAN_SP_DIAL_MS, or less to keep a call's deadline. */
static int64_t
chan_lane_dial_ms(int64_t deadline)
{
	int64_t left = deadline - chl_now_mono_ms();

	if (deadline < 0 || left >= CHAN_SP_DIAL_MS) {
		return (CHAN_SP_DIAL_MS);
	}
	return (left > 1 ? left : 1);
}

static bool
chan_lane_stopped(const chan_lane *l, bool internal)
{
	return (l->cancelled && !internal);
}

/*
 * Makes sure the lane is connected: one caller dials while the others
 * wait; a daemon that is down is tried again every CHAN_RESET_PAUSE_MS
 * until deadline (forever without one, as nng's dialer does). *gen: the
 * connection's. l->mtx held; it is let go while dialling.
 */
static chan_status
chan_lane_connect(chan_lane *l, int64_t deadline, bool internal, uint64_t *gen)
{
	chan_status s;

	for (;;) {
		if (chan_lane_stopped(l, internal)) {
			return (chan_fail(CHAN_UNAVAILABLE, "cancelled"));
		}
		if (l->up) {
			*gen = l->gen;
			return (CHAN_OK);
		}
		if (chan_lane_expired(deadline)) {
			return (chan_fail(CHAN_UNAVAILABLE, "cannot reach %s in time", l->sp.url));
		}
		if (l->dialing || l->reading) {
			chan_lane_sleep(l, &l->cv, deadline);
			continue;
		}
		l->dialing = true;
		pthread_mutex_unlock(&l->mtx);
		s = chan_sp_dial(&l->sp, chan_lane_dial_ms(deadline), internal ? -1 : l->wake[0]);
		if (s != CHAN_OK) {
			(void) chan_sp_pause(internal ? -1 : l->wake[0], CHAN_RESET_PAUSE_MS);
		}
		pthread_mutex_lock(&l->mtx);
		if (s == CHAN_OK) {
			l->up = true;
			l->gen = l->sp.gen; /* this thread's own dial wrote it */
		}
		l->dialing = false;
		pthread_cond_broadcast(&l->cv);
	}
}

/*
 * A call leaves the lane. With nobody reading, the first call still
 * waiting is woken to read: the role is never left empty while calls
 * wait (each sleeps on its own condition, so an answer wakes only its
 * call, not every thread sharing the client). l->mtx held.
 */
static void
chan_lane_unlink(chan_lane *l, chan_lane_call *call)
{
	for (chan_lane_call **pp = &l->calls; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == call) {
			*pp = call->next;
			break;
		}
	}
	for (chan_lane_call *k = l->calls; k != NULL && !l->reading; k = k->next) {
		if (!k->done) {
			pthread_cond_signal(&k->cv);
			break;
		}
	}
}

/* An answer read: to the call it belongs to; dropped when none waits for it. */
static void
chan_lane_deliver(chan_lane *l, uint32_t rid, void *body, size_t len)
{
	for (chan_lane_call *k = l->calls; k != NULL; k = k->next) {
		if (k->rid == rid && k->gen == l->gen && !k->done) {
			k->done = true;
			k->body = body;
			k->len = len;
			pthread_cond_signal(&k->cv);
			return;
		}
	}
	free(body); /* a call that gave up (its local timeout, chan_cancel) */
}

/*
 * Reads the next answer as the reader. l->mtx held, let go while reading.
 * A failure other than the deadline or a wake-up means the connection is
 * gone (chan_sp_recv closed it): every call on it sees that.
 */
static chan_status
chan_lane_read(chan_lane *l, int64_t deadline, bool internal)
{
	chan_status s;
	uint32_t    rid;
	void       *body;
	size_t      len;
	bool        closed;

	l->reading = true;
	pthread_mutex_unlock(&l->mtx);
	s = chan_sp_recv(&l->sp, &rid, &body, &len, deadline, internal ? -1 : l->wake[0]);
	closed = l->sp.fd < 0; /* only the reader closes it, so no lock for this */
	pthread_mutex_lock(&l->mtx);
	l->reading = false;
	if (closed) {
		l->up = false;
		chan_lane_wake_all(l); /* every call on it is lost; dialers may go */
	}
	if (s == CHAN_OK) {
		chan_lane_deliver(l, rid, body, len);
	}
	return (s);
}

/*
 * Waits for call's answer, reading when nobody else does. CHAN_OK: the
 * answer is in call. *lost: the connection went under the call (the
 * caller may resend); anything else ends the call. l->mtx held.
 */
static chan_status
chan_lane_await(chan_lane *l, chan_lane_call *call, int64_t deadline, bool internal, bool *lost)
{
	chan_status s;

	for (;;) {
		if (call->done) {
			return (CHAN_OK);
		}
		if (chan_lane_stopped(l, internal)) {
			return (chan_fail(CHAN_UNAVAILABLE, "cancelled"));
		}
		if (!l->up || l->gen != call->gen) {
			*lost = true;
			return (chan_fail(CHAN_UNAVAILABLE, "lost the connection to %s", l->sp.url));
		}
		if (chan_lane_expired(deadline)) {
			return (chan_fail(CHAN_UNAVAILABLE, "no answer from %s in time", l->sp.url));
		}
		if (l->reading) {
			chan_lane_sleep(l, &call->cv, deadline);
			continue;
		}
		s = chan_lane_read(l, deadline, internal);
		if (s == CHAN_PROTOCOL || s == CHAN_RESOURCE_EXHAUSTED) {
			return (s); /* the others see their connection gone */
		}
	}
}

/* Packs x->req into buf (or a malloc'd block when it is larger): NULL without memory. */
static uint8_t *
chan_lane_pack(chan_client *c, chan_exchange *x, uint8_t *buf, size_t cap, size_t *len)
{
	chl_batch_layout lay;
	uint8_t         *out = buf;

	*len = chl_request_packed_size(&x->req, c->batch_form, &lay);
	if (*len > cap && (out = malloc(*len)) == NULL) {
		return (NULL);
	}
	(void) chl_request_pack(&x->req, c->batch_form, &lay, out);
	return (out);
}

/*
 * Tells the daemon to drop the parked request id (chan_cancel): the
 * answer, if one still comes, is dropped by whoever reads it.
 */
static void
chan_lane_withdraw(chan_lane *l, chan_client *c, uint64_t id)
{
	if (c->cancel_op) { /* else parked until the lane closes */
		chan_sp_cancel_aside(&l->sp, c->client_id, atomic_fetch_add(&c->next_id, 1), id);
	}
}

/* One attempt: write the request, wait for its answer. l->mtx held. */
static chan_status
chan_lane_try(chan_lane *l, chan_client *c, chan_exchange *x, chan_lane_call *call,
    int64_t deadline, bool internal, bool *lost)
{
	uint8_t            stack[CHAN_LANE_STACK];
	uint8_t           *buf;
	size_t             len;
	chan_status        s;
	chan_sp_put_result put;

	*lost = false;
	if ((s = chan_lane_connect(l, deadline, internal, &call->gen)) != CHAN_OK) {
		return (s);
	}
	call->done = false;
	call->next = l->calls;
	l->calls = call;
	pthread_mutex_unlock(&l->mtx);
	buf = chan_lane_pack(c, x, stack, sizeof(stack), &len);
	if (buf == NULL) {
		pthread_mutex_lock(&l->mtx);
		chan_lane_unlink(l, call);
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "cannot encode a request for %s", c->url));
	}
	/* A write waits for room no longer than the call, nor past chan_cancel. */
	put = chan_sp_put(&l->sp, call->rid, buf, len, deadline, internal ? -1 : l->wake[0]);
	if (buf != stack) {
		free(buf);
	}
	pthread_mutex_lock(&l->mtx);
	if (put == CHAN_SP_UNSENT) {
		chan_lane_unlink(l, call); /* the daemon never saw it */
		return (chan_lane_stopped(l, internal)
		        ? chan_fail(CHAN_UNAVAILABLE, "cancelled")
		        : chan_fail(CHAN_UNAVAILABLE, "%s took no request in time", c->url));
	}
	/*
	 * A broken write (CHAN_SP_BROKEN shut the socket down, CHAN_SP_NOCONN
	 * a reader closed it meanwhile) is found by whoever reads next:
	 * then the call sees its connection gone, and may go again.
	 */
	s = chan_lane_await(l, call, deadline, internal, lost);
	chan_lane_unlink(l, call);
	if (s == CHAN_UNAVAILABLE && !call->done && l->cancelled && !internal) {
		pthread_mutex_unlock(&l->mtx);
		chan_lane_withdraw(l, c, x->req.id);
		pthread_mutex_lock(&l->mtx);
	}
	return (s);
}

chan_status
chan_lane_run(chan_lane *l, chan_client *c, chan_exchange *x, int64_t local_timeout_ms,
    bool internal)
{
	chan_lane_call call = { .rid = (uint32_t) (x->req.id & 0x7fffffffu) };
	int64_t        deadline = chan_lane_deadline(local_timeout_ms);
	chan_status    s;
	int            resets = 0;
	bool           lost;

	chan_cond_init_mono(&call.cv);
	pthread_mutex_lock(&l->mtx);
	while ((s = chan_lane_try(l, c, x, &call, deadline, internal, &lost)) != CHAN_OK && lost) {
		/*
		 * The connection broke under the request. A call with a
		 * local bound gives up; one on the daemon's terms goes again
		 * (same client and id: the daemon answers a repeat with its
		 * first answer, or re-binds a parked one).
		 */
		if (local_timeout_ms >= 0 || ++resets > CHAN_MAX_RESETS) {
			s = chan_fail(CHAN_UNAVAILABLE,
			    "%s closed the connection under this request%s", c->url,
			    resets > CHAN_MAX_RESETS ? " again and again (over its request size limit?)"
			                             : "");
			break;
		}
		pthread_mutex_unlock(&l->mtx);
		(void) chan_sp_pause(internal ? -1 : l->wake[0], CHAN_RESET_PAUSE_MS);
		chan_confirms_build(c, x); /* the broken connection's deliveries are void */
		pthread_mutex_lock(&l->mtx);
	}
	pthread_mutex_unlock(&l->mtx);
	pthread_cond_destroy(&call.cv);
	if (s != CHAN_OK) {
		return (s);
	}
	x->via = (chan_via) { .lane_gen = call.gen };
	return (chan_decode_bytes(c->url, x, call.body, free, call.body, call.len));
}
