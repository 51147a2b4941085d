/*
 * async.c - chan_aio: calls that return at once and finish later.
 *
 * A call in flight costs no thread. Starting one builds the request with
 * the same builders as the sync call, takes an nng context of the client
 * (client.c: id, client id, piggy-backed confirmations, the cancel list),
 * and starts nng_ctx_send on the chan_aio's own nng_aio. Everything after
 * that happens in that aio's callback, on nng's threads, one step per
 * completion:
 *
 *   SEND done   -> nng_ctx_recv on the same context
 *   RECV done   -> hop (see below), then decode, results, user callback
 *   reset       -> PAUSE (nng_sleep_aio), then SEND the same request again
 *   LOCAL       -> a call refused before it reached nng (bad argument,
 *                  cancelled client) still finishes on an nng thread
 *
 * nng completes a REQ receive synchronously on the thread that read the
 * answer off the connection; decoding and the user's callback run one hop
 * later (nng_aio_begin + nng_aio_finish puts the aio's callback on nng's
 * task queue), so that thread goes back to reading answers at once, and a
 * callback that makes a sync call on the same client does not wait on
 * itself.
 */
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
	CHAN_AIO_SEND,
	CHAN_AIO_RECV,
	CHAN_AIO_RECV_ANY,
	CHAN_AIO_COUNTER_WAIT,
	CHAN_AIO_COUNTER_ADD,
	CHAN_AIO_COUNTER_ADD_N,
} chan_aio_kind;

typedef enum {
	CHAN_PH_SEND,   /* nng_ctx_send in progress */
	CHAN_PH_RECV,   /* nng_ctx_recv in progress */
	CHAN_PH_ANSWER, /* the answer is in hand: decode on the hop */
	CHAN_PH_PAUSE,  /* connection lost: waiting before the resend */
	CHAN_PH_LOCAL,  /* finished before reaching nng (status set) */
} chan_aio_phase;

struct chan_aio {
	pthread_mutex_t mtx;
	pthread_cond_t  cv;
	chan_aio_cb     cb;
	void           *arg;
	nng_aio        *naio;    /* the call's own aio: its callback drives the call */
	bool            busy;    /* a call is in flight (result not yet set) */
	bool            incb;    /* its completion (user callback) is running */
	bool            hold;    /* keep deliveries unconfirmed (consumer.c) */
	bool            cancelled; /* chan_aio_cancel for this call */
	uint64_t        gen;     /* calls started on a, for chan_aio_cancel */

	/* the call in flight (names and payloads borrowed) */
	chan_aio_kind  kind;
	chan_aio_phase phase;
	chan_client   *c;
	size_t         max;      /* recv: room for messages */
	int            want;     /* the Response result case expected on OK */
	int            resets;   /* connection losses under this call */
	bool           linked;   /* link is in c's call list */
	nng_msg       *answer;
	chan_exchange  x;
	chan_call_link link;
	union {
		Chan__V1__Send        send;
		Chan__V1__Recv        recv;
		Chan__V1__RecvAny     recv_any;
		Chan__V1__CounterWait counter_wait;
		Chan__V1__CounterAdd  counter_add;
	} op;
	ProtobufCBinaryData *data; /* send: the payload descriptors */
	const int64_t *deltas;   /* counter add n: borrowed */
	size_t         ndeltas;
	size_t         next;     /* one_by_one: the add in flight */
	bool           one_by_one; /* the daemon lacks CounterAdd.deltas */

	/* its result */
	chan_status status;
	char        err[512];
	chan_msg  **msgs;
	size_t      nmsgs;
	uint64_t    first_seq;
	int64_t     value;
	int64_t    *values;   /* counter add n: one per delta (room: cap) */
	size_t      nvalues;
	size_t      cap;
	uint64_t    delivery; /* held delivery (hold set), 0: none */
	nng_pipe    dpipe;    /* the connection it came over */
};

/* The chan_aio whose completion (user callback) this thread is running. */
static __thread chan_aio *chan_aio_in_cb;

static void chan_aio_cb_nng(void *arg);

chan_status
chan_aio_alloc(chan_aio **out, chan_aio_cb cb, void *arg)
{
	chan_aio *a;
	int       rv;

	if (out == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "out is NULL"));
	}
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
	}
	if ((rv = nng_aio_alloc(&a->naio, chan_aio_cb_nng, a)) != 0) {
		free(a);
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "cannot allocate an nng aio: %s",
		    nng_strerror(rv)));
	}
	/* No local timeout: the daemon applies the call's own (as for sync calls). */
	nng_aio_set_timeout(a->naio, NNG_DURATION_INFINITE);
	pthread_mutex_init(&a->mtx, NULL);
	pthread_cond_init(&a->cv, NULL);
	a->cb = cb;
	a->arg = arg;
	*out = a;
	return (CHAN_OK);
}

/* Frees received messages nobody took. */
static void
chan_aio_drop_msgs(chan_aio *a)
{
	size_t i;

	for (i = 0; i < a->nmsgs; i++) {
		chan_msg_free(a->msgs[i]);
	}
	free(a->msgs);
	a->msgs = NULL;
	a->nmsgs = 0;
}

/* Waits until no call is in flight and no completion runs. a->mtx held. */
static void
chan_aio_idle_locked(chan_aio *a)
{
	while (a->busy || a->incb) {
		pthread_cond_wait(&a->cv, &a->mtx);
	}
}

void
chan_aio_wait(chan_aio *a)
{
	if (a == NULL) {
		return;
	}
	pthread_mutex_lock(&a->mtx);
	chan_aio_idle_locked(a);
	pthread_mutex_unlock(&a->mtx);
}

void
chan_aio_cancel(chan_aio *a)
{
	chan_client *c;
	uint64_t     gen;

	if (a == NULL) {
		return;
	}
	pthread_mutex_lock(&a->mtx);
	if (!a->busy) {
		pthread_mutex_unlock(&a->mtx);
		return;
	}
	a->cancelled = true;
	c = a->c;
	gen = a->gen;
	pthread_mutex_unlock(&a->mtx);
	/*
	 * The call (a, gen) stays in c's call list, and c stays alive
	 * (chan_disconnect waits for counted calls), until its completion
	 * runs; a later call on a has another gen and is left alone.
	 */
	if (c != NULL) {
		chan_async_cancel(c, a, gen);
	}
}

void
chan_aio_free(chan_aio *a)
{
	if (a == NULL) {
		return;
	}
	chan_aio_cancel(a);
	chan_aio_wait(a);
	/* Waits for the callback itself to return (it may still be unlocking a->mtx). */
	nng_aio_free(a->naio);
	chan_aio_drop_msgs(a);
	free(a->values);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mtx);
	free(a);
}

chan_status
chan_aio_result(const chan_aio *a)
{
	return (a->status);
}

const char *
chan_aio_error(const chan_aio *a)
{
	return (a->err);
}

size_t
chan_aio_count(const chan_aio *a)
{
	return (a->nmsgs);
}

chan_msg *
chan_aio_take_msg(chan_aio *a, size_t i)
{
	chan_msg *m;

	if (i >= a->nmsgs) {
		return (NULL);
	}
	m = a->msgs[i];
	a->msgs[i] = NULL;
	return (m);
}

uint64_t
chan_aio_first_seq(const chan_aio *a)
{
	return (a->first_seq);
}

int64_t
chan_aio_value(const chan_aio *a)
{
	return (a->value);
}

const int64_t *
chan_aio_values(const chan_aio *a, size_t *n)
{
	if (n != NULL) {
		*n = a->nvalues;
	}
	return (a->nvalues > 0 ? a->values : NULL);
}

void
chan_aio_hold_confirm(chan_aio *a, bool hold)
{
	pthread_mutex_lock(&a->mtx);
	a->hold = hold;
	pthread_mutex_unlock(&a->mtx);
}

bool
chan_aio_delivery(const chan_aio *a, uint64_t *id, nng_pipe *pipe)
{
	if (a->delivery == 0 || a->nmsgs == 0) {
		return (false);
	}
	*id = a->delivery;
	*pipe = a->dpipe;
	return (true);
}

/* Takes the results of an OK answer out of a->x (may still fail: PROTOCOL, ENOMEM). */
static chan_status
chan_aio_results(chan_aio *a)
{
	const Chan__V1__Response *r = a->x.resp;
	chan_status               s;
	size_t                    n = 0;
	bool                      hold;

	switch (a->kind) {
	case CHAN_AIO_SEND:
		a->first_seq = r->result_case == CHAN__V1__RESPONSE__RESULT_SEND ? r->send->first_seq : 0;
		return (CHAN_OK);
	case CHAN_AIO_COUNTER_WAIT:
	case CHAN_AIO_COUNTER_ADD:
		a->value = r->value->value;
		return (CHAN_OK);
	case CHAN_AIO_COUNTER_ADD_N:
		if (a->one_by_one) { /* the last add; earlier ones in chan_aio_add_next */
			a->values[a->next] = a->value = r->value->value;
		} else if (r->value->n_values != a->ndeltas) {
			return (chan_fail(CHAN_PROTOCOL, "counter add: %zu deltas answered with "
			    "%zu values", a->ndeltas, r->value->n_values));
		} else {
			memcpy(a->values, r->value->values, a->ndeltas * sizeof(*a->values));
			a->value = a->values[a->ndeltas - 1];
		}
		a->nvalues = a->ndeltas;
		return (CHAN_OK);
	case CHAN_AIO_RECV:
	case CHAN_AIO_RECV_ANY:
		break;
	}
	pthread_mutex_lock(&a->mtx);
	hold = a->hold;
	pthread_mutex_unlock(&a->mtx);
	if ((a->msgs = calloc(a->max, sizeof(*a->msgs))) == NULL) {
		/* Not confirmed: the daemon keeps them and gives them back. */
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory for received messages"));
	}
	if ((s = chan_unpack_msgs(a->c, &a->x, a->max, a->msgs, &n, !hold)) != CHAN_OK) {
		free(a->msgs);
		a->msgs = NULL;
		return (s);
	}
	a->nmsgs = n;
	if (hold) {
		a->delivery = r->delivery;
		a->dpipe = a->x.via.pipe;
	}
	return (CHAN_OK);
}

/*
 * The end of every call: result and message in place, the call marked
 * done, the user's callback run. Runs on an nng thread (the aio's
 * callback). c is released last: chan_disconnect may free it then.
 */
static void
chan_aio_complete(chan_aio *a, chan_status s)
{
	chan_client *c = a->c;
	chan_aio    *outer = chan_aio_in_cb;

	if (s == CHAN_OK && a->phase != CHAN_PH_LOCAL) {
		s = chan_aio_results(a);
	}
	if (a->phase != CHAN_PH_LOCAL) {
		snprintf(a->err, sizeof(a->err), "%s", s == CHAN_OK ? "" : chan_last_error(c));
	}
	chan_exchange_fini(&a->x);
	free(a->data);
	a->data = NULL;

	pthread_mutex_lock(&a->mtx);
	/* A call restarted by the previous callback may finish before that callback returns. */
	while (a->incb) {
		pthread_cond_wait(&a->cv, &a->mtx);
	}
	a->status = s;
	a->busy = false;
	a->incb = true;
	pthread_mutex_unlock(&a->mtx);

	chan_aio_in_cb = a;
	if (a->cb != NULL) {
		a->cb(a, a->arg);
	}
	chan_aio_in_cb = outer;
	if (c != NULL) {
		chan_async_release(c);
	}
	pthread_mutex_lock(&a->mtx);
	a->incb = false;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mtx);
}

/* Ends a call that reached the client's call list (answer or not). */
static void
chan_aio_end(chan_aio *a, chan_status s)
{
	if (a->linked) {
		chan_async_end(a->c, &a->link, &a->x);
		a->linked = false;
	}
	chan_aio_complete(a, s);
}

/* Makes the aio's callback run on nng's task queue, in phase ph. */
static void
chan_aio_hop(chan_aio *a, chan_aio_phase ph)
{
	a->phase = ph;
	if (nng_aio_begin(a->naio)) {
		nng_aio_finish(a->naio, 0);
	}
	/* false only after nng_aio_stop, which libchan never calls on a busy aio */
}

/* A call that fails before reaching nng; the thread's last error says why. */
static void
chan_aio_fail_local(chan_aio *a, chan_status s)
{
	a->status = s;
	snprintf(a->err, sizeof(a->err), "%s", chan_last_error(a->c));
	chan_aio_hop(a, CHAN_PH_LOCAL);
}

/*
 * Ends a call from the thread that started it (or that runs its steps):
 * unlinks it and finishes on an nng thread, never inline in the caller.
 */
static void
chan_aio_abort(chan_aio *a, chan_status s)
{
	if (a->linked) {
		chan_async_end(a->c, &a->link, &a->x);
		a->linked = false;
	}
	chan_aio_fail_local(a, s);
}

/* Encodes the request (again, after a reset: confirmations may differ) and sends it. */
static void
chan_aio_send_req(chan_aio *a)
{
	nng_msg    *m;
	chan_status s;

	if ((s = chan_encode(a->c, &a->x, &m)) != CHAN_OK) {
		chan_aio_abort(a, s);
		return;
	}
	a->phase = CHAN_PH_SEND;
	nng_aio_set_msg(a->naio, m);
	nng_ctx_send(a->link.ctx, a->naio);
}

/* The exchange ended with nng error rv. */
static void
chan_aio_failed(chan_aio *a, int rv)
{
	bool stopped;

	/*
	 * A connection lost under the call: the same request (same client
	 * and id) goes again once nng has reconnected, as in the sync path.
	 */
	if (rv == NNG_ECONNRESET && ++a->resets <= CHAN_MAX_RESETS) {
		a->phase = CHAN_PH_PAUSE;
		if (chan_async_pause(a->c, &a->link)) {
			return;
		}
	}
	pthread_mutex_lock(&a->mtx);
	stopped = a->cancelled;
	pthread_mutex_unlock(&a->mtx);
	stopped = stopped || chan_async_stopped(a->c, &a->link);
	chan_aio_end(a, chan_transfer_error(a->c, rv, stopped));
}

/*
 * A daemon without CounterAdd.deltas answered one add of a counter add n:
 * keeps its value and sends the next add. false: that was the last one (or
 * it failed), the call ends with status s.
 */
static bool
chan_aio_add_next(chan_aio *a, chan_status s)
{
	bool cancelled;

	if (a->kind != CHAN_AIO_COUNTER_ADD_N || !a->one_by_one || s != CHAN_OK ||
	    a->next + 1 >= a->ndeltas) {
		return (false);
	}
	a->values[a->next++] = a->x.resp->value->value;
	chan_exchange_fini(&a->x);
	chan_exchange_init(&a->x);
	a->op.counter_add.delta = a->deltas[a->next];
	a->x.req.op_case = CHAN__V1__REQUEST__OP_COUNTER_ADD;
	a->x.req.counter_add = &a->op.counter_add;
	a->resets = 0;
	if ((s = chan_async_begin(a->c, &a->x, &a->link, a, a->gen, a->naio)) != CHAN_OK) {
		chan_aio_complete(a, s);
		return (true);
	}
	a->linked = true;
	pthread_mutex_lock(&a->mtx);
	cancelled = a->cancelled;
	pthread_mutex_unlock(&a->mtx);
	if (cancelled) {
		chan_aio_abort(a, chan_fail(CHAN_UNAVAILABLE, "cancelled"));
		return (true);
	}
	chan_aio_send_req(a);
	return (true);
}

/* The call's aio completed a step. */
static void
chan_aio_cb_nng(void *arg)
{
	chan_aio *a = arg;
	int         rv = nng_aio_result(a->naio);
	nng_msg    *m;
	chan_status s;

	switch (a->phase) {
	case CHAN_PH_SEND:
		if (rv != 0) {
			if ((m = nng_aio_get_msg(a->naio)) != NULL) {
				nng_aio_set_msg(a->naio, NULL);
				nng_msg_free(m);
			}
			chan_aio_failed(a, rv);
			return;
		}
		a->phase = CHAN_PH_RECV;
		nng_ctx_recv(a->link.ctx, a->naio);
		return;
	case CHAN_PH_RECV:
		if (rv != 0) {
			chan_aio_failed(a, rv);
			return;
		}
		a->answer = nng_aio_get_msg(a->naio);
		nng_aio_set_msg(a->naio, NULL);
		if (!chan_call_answered(a->c, &a->link)) {
			/* A Cancel named the call before its answer came:
			 * the daemon gives the answer's messages back. */
			nng_msg_free(a->answer);
			a->answer = NULL;
			chan_aio_end(a, chan_fail(CHAN_UNAVAILABLE, "cancelled"));
			return;
		}
		chan_aio_hop(a, CHAN_PH_ANSWER);
		return;
	case CHAN_PH_ANSWER:
		chan_async_end(a->c, &a->link, &a->x);
		a->linked = false;
		m = a->answer;
		a->answer = NULL;
		s = chan_exchange_answer(a->c, &a->x, m, a->want);
		if (!chan_aio_add_next(a, s)) {
			chan_aio_complete(a, s);
		}
		return;
	case CHAN_PH_PAUSE:
		if (chan_async_stopped(a->c, &a->link)) {
			chan_aio_end(a, chan_fail(CHAN_UNAVAILABLE, "cancelled"));
			return;
		}
		chan_confirms_build(a->c, &a->x); /* the broken connection's deliveries are void */
		chan_aio_send_req(a);
		return;
	case CHAN_PH_LOCAL:
		chan_aio_complete(a, a->status);
		return;
	}
}

/*
 * Waits out the previous call and clears a for the next one. false: a is
 * NULL (nothing can be reported).
 */
static bool
chan_aio_prepare(chan_aio *a, chan_client *c, chan_aio_kind kind)
{
	if (a == NULL) {
		return (false);
	}
	pthread_mutex_lock(&a->mtx);
	if (chan_aio_in_cb != a) {
		chan_aio_idle_locked(a);
	}
	/* From a's own callback: its call is done (busy is false), start the next. */
	a->busy = true;
	a->cancelled = false;
	a->gen++;
	a->c = c;
	pthread_mutex_unlock(&a->mtx);
	chan_aio_drop_msgs(a);
	a->kind = kind;
	a->want = 0;
	a->resets = 0;
	a->linked = false;
	a->answer = NULL;
	a->data = NULL;
	a->first_seq = 0;
	a->value = 0;
	a->nvalues = 0;
	a->deltas = NULL;
	a->ndeltas = 0;
	a->next = 0;
	a->one_by_one = false;
	a->delivery = 0;
	a->dpipe = (nng_pipe) NNG_PIPE_INITIALIZER;
	a->status = CHAN_OK;
	a->err[0] = '\0';
	chan_exchange_init(&a->x);
	if (c != NULL) {
		chan_async_hold(c);
	}
	return (true);
}

/*
 * Starts the call whose request prepare and a builder filled (s: the
 * builder's status).
 */
static void
chan_aio_launch(chan_aio *a, chan_status s)
{
	bool cancelled;

	if (a->c == NULL) {
		chan_aio_fail_local(a, chan_fail(CHAN_INVALID_ARGUMENT, "client is NULL"));
		return;
	}
	if (s != CHAN_OK) {
		chan_aio_fail_local(a, s);
		return;
	}
	/*
	 * A cancel that came before the call was linked found nothing to
	 * close: its flag is seen here, or the cancel sees the link.
	 */
	s = chan_async_begin(a->c, &a->x, &a->link, a, a->gen, a->naio);
	if (s != CHAN_OK) {
		chan_aio_fail_local(a, s);
		return;
	}
	a->linked = true;
	pthread_mutex_lock(&a->mtx);
	cancelled = a->cancelled;
	pthread_mutex_unlock(&a->mtx);
	if (cancelled) {
		chan_aio_abort(a, chan_fail(CHAN_UNAVAILABLE, "cancelled"));
		return;
	}
	chan_aio_send_req(a);
}

void
chan_send_aio(chan_client *c, const char *name, const chan_buf *bufs, size_t n, int64_t timeout_ms,
    chan_aio *a)
{
	chan_status s;

	if (!chan_aio_prepare(a, c, CHAN_AIO_SEND)) {
		return;
	}
	s = c == NULL ? CHAN_OK
	    : chan_send_build(c, name, 0, bufs, n, timeout_ms, &a->op.send, &a->data);
	a->x.req.op_case = CHAN__V1__REQUEST__OP_SEND;
	a->x.req.send = &a->op.send;
	chan_aio_launch(a, s);
}

void
chan_recv_aio(chan_client *c, const char *name, size_t max, int64_t timeout_ms, chan_aio *a)
{
	chan_recv_aio_bytes(c, name, max, 0, timeout_ms, a);
}

void
chan_recv_aio_bytes(chan_client *c, const char *name, size_t max, uint64_t max_bytes,
    int64_t timeout_ms, chan_aio *a)
{
	chan_status s;

	if (!chan_aio_prepare(a, c, CHAN_AIO_RECV)) {
		return;
	}
	s = c == NULL ? CHAN_OK : chan_recv_build(c, name, 0, 0, max, timeout_ms, &a->op.recv);
	if (s == CHAN_OK && max_bytes > 0) {
		a->op.recv.has_max_bytes = 1;
		a->op.recv.max_bytes = max_bytes;
	}
	a->max = max;
	a->want = CHAN__V1__RESPONSE__RESULT_RECV;
	a->x.req.op_case = CHAN__V1__REQUEST__OP_RECV;
	a->x.req.recv = &a->op.recv;
	chan_aio_launch(a, s);
}

void
chan_recv_any_aio(chan_client *c, const char *const *names, size_t n, int64_t timeout_ms,
    chan_aio *a)
{
	chan_status s;

	if (!chan_aio_prepare(a, c, CHAN_AIO_RECV_ANY)) {
		return;
	}
	s = c == NULL ? CHAN_OK : chan_recv_any_build(c, names, n, timeout_ms, &a->op.recv_any);
	a->max = 1;
	a->want = CHAN__V1__RESPONSE__RESULT_RECV;
	a->x.req.op_case = CHAN__V1__REQUEST__OP_RECV_ANY;
	a->x.req.recv_any = &a->op.recv_any;
	chan_aio_launch(a, s);
}

void
chan_counter_wait_aio(chan_client *c, const char *name, chan_wait_op op, int64_t operand,
    int64_t timeout_ms, chan_aio *a)
{
	chan_status s;

	if (!chan_aio_prepare(a, c, CHAN_AIO_COUNTER_WAIT)) {
		return;
	}
	s = c == NULL ? CHAN_OK
	    : chan_counter_wait_build(c, name, op, operand, timeout_ms, &a->op.counter_wait);
	a->want = CHAN__V1__RESPONSE__RESULT_VALUE;
	a->x.req.op_case = CHAN__V1__REQUEST__OP_COUNTER_WAIT;
	a->x.req.counter_wait = &a->op.counter_wait;
	chan_aio_launch(a, s);
}

void
chan_counter_add_aio(chan_client *c, const char *name, int64_t delta, chan_aio *a)
{
	chan_status s;

	if (!chan_aio_prepare(a, c, CHAN_AIO_COUNTER_ADD)) {
		return;
	}
	s = c == NULL ? CHAN_OK : chan_counter_add_build(c, name, delta, &a->op.counter_add);
	a->want = CHAN__V1__RESPONSE__RESULT_VALUE;
	a->x.req.op_case = CHAN__V1__REQUEST__OP_COUNTER_ADD;
	a->x.req.counter_add = &a->op.counter_add;
	chan_aio_launch(a, s);
}

void
chan_counter_add_n_aio(chan_client *c, const char *name, const int64_t *deltas, size_t n,
    chan_aio *a)
{
	chan_status s;
	int64_t    *v;

	if (!chan_aio_prepare(a, c, CHAN_AIO_COUNTER_ADD_N)) {
		return;
	}
	s = c == NULL ? CHAN_OK : chan_counter_add_n_build(c, name, deltas, n, &a->op.counter_add);
	if (c != NULL && s == CHAN_OK && n > a->cap) {
		if ((v = realloc(a->values, n * sizeof(*v))) == NULL) {
			s = chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory");
		} else {
			a->values = v;
			a->cap = n;
		}
	}
	if (c != NULL && s == CHAN_OK && !chan_counter_add_many(c)) {
		/* An older daemon: one add per request, chained in chan_aio_add_next. */
		a->one_by_one = true;
		a->op.counter_add.n_deltas = 0;
		a->op.counter_add.deltas = NULL;
		a->op.counter_add.has_delta = 1;
		a->op.counter_add.delta = deltas[0];
	}
	a->deltas = deltas;
	a->ndeltas = n;
	a->want = CHAN__V1__RESPONSE__RESULT_VALUE;
	a->x.req.op_case = CHAN__V1__REQUEST__OP_COUNTER_ADD;
	a->x.req.counter_add = &a->op.counter_add;
	chan_aio_launch(a, s);
}
