/*
 * async.c - chan_aio: calls that return at once and finish later.
 *
 * Each started call runs the synchronous path on a worker thread of its
 * own; the thread marks itself (chan_current_aio) so chan_aio_cancel can
 * close exactly the nng contexts serving that call. Simple and exact
 * rather than cheap: one thread per call in flight.
 */
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__thread chan_aio *chan_current_aio;

typedef enum {
	CHAN_AIO_SEND,
	CHAN_AIO_RECV,
	CHAN_AIO_RECV_ANY,
	CHAN_AIO_COUNTER_WAIT,
	CHAN_AIO_COUNTER_ADD,
} chan_aio_kind;

struct chan_aio {
	pthread_mutex_t mtx;
	pthread_cond_t  cv;
	chan_aio_cb     cb;
	void           *arg;
	bool            busy;    /* a call is in flight */
	int             workers; /* threads still touching a (callbacks included) */
	_Atomic bool    cancelled;
	bool            hold;    /* keep deliveries unconfirmed (consumer.c) */

	/* the call (names and payloads borrowed) */
	chan_aio_kind      kind;
	chan_client       *c;
	const char        *name;
	const chan_buf    *bufs;
	const char *const *names;
	size_t             n;
	int64_t            timeout_ms;
	chan_wait_op       op;
	int64_t            operand;

	/* its result */
	chan_status status;
	char        err[512];
	chan_msg  **msgs;
	size_t      nmsgs;
	uint64_t    first_seq;
	int64_t     value;
	uint64_t    delivery; /* held delivery (hold set), 0: none */
	nng_pipe    dpipe;    /* the connection it came over */
};

void
chan_aio_hold_confirm(chan_aio *a, bool hold)
{
	pthread_mutex_lock(&a->mtx);
	a->hold = hold;
	pthread_mutex_unlock(&a->mtx);
}

bool
chan_aio_keep_delivery(chan_aio *a, uint64_t id, nng_pipe pipe)
{
	bool hold;

	pthread_mutex_lock(&a->mtx);
	hold = a->hold;
	if (hold) {
		a->delivery = id;
		a->dpipe = pipe;
	}
	pthread_mutex_unlock(&a->mtx);
	return (hold);
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

bool
chan_aio_cancelled(const chan_aio *a)
{
	return (atomic_load(&((chan_aio *) a)->cancelled));
}

chan_status
chan_aio_alloc(chan_aio **out, chan_aio_cb cb, void *arg)
{
	chan_aio *a;

	if (out == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "out is NULL"));
	}
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
	}
	pthread_mutex_init(&a->mtx, NULL);
	pthread_cond_init(&a->cv, NULL);
	a->cb = cb;
	a->arg = arg;
	atomic_init(&a->cancelled, false);
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

void
chan_aio_wait(chan_aio *a)
{
	pthread_mutex_lock(&a->mtx);
	while (a->busy) {
		pthread_cond_wait(&a->cv, &a->mtx);
	}
	pthread_mutex_unlock(&a->mtx);
}

void
chan_aio_cancel(chan_aio *a)
{
	chan_client *c;

	pthread_mutex_lock(&a->mtx);
	if (!a->busy) {
		pthread_mutex_unlock(&a->mtx);
		return;
	}
	atomic_store(&a->cancelled, true);
	c = a->c;
	pthread_mutex_unlock(&a->mtx);
	chan_cancel_tag(c, a);
}

void
chan_aio_free(chan_aio *a)
{
	if (a == NULL) {
		return;
	}
	chan_aio_cancel(a);
	pthread_mutex_lock(&a->mtx);
	while (a->busy || a->workers > 0) {
		pthread_cond_wait(&a->cv, &a->mtx);
	}
	pthread_mutex_unlock(&a->mtx);
	chan_aio_drop_msgs(a);
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

/* Runs the call synchronously on this (worker) thread. */
static chan_status
chan_aio_run(chan_aio *a)
{
	size_t n = 0;

	switch (a->kind) {
	case CHAN_AIO_SEND:
		return (chan_send_common(a->c, a->name, 0, a->bufs, a->n, a->timeout_ms, &a->first_seq));
	case CHAN_AIO_RECV:
	case CHAN_AIO_RECV_ANY:
		if ((a->msgs = calloc(a->n == 0 ? 1 : a->n, sizeof(*a->msgs))) == NULL) {
			return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
		}
		if (a->kind == CHAN_AIO_RECV) {
			a->status = chan_recv_common(a->c, a->name, 0, 0, a->n, a->msgs, &n, a->timeout_ms);
		} else {
			a->status = chan_recv_any(a->c, a->names, a->n, a->msgs, a->timeout_ms);
			n = 1;
		}
		a->nmsgs = a->status == CHAN_OK ? n : 0;
		return (a->status);
	case CHAN_AIO_COUNTER_WAIT:
		return (chan_counter_wait(a->c, a->name, a->op, a->operand, a->timeout_ms, &a->value));
	case CHAN_AIO_COUNTER_ADD:
		return (chan_counter_add(a->c, a->name, a->operand, &a->value));
	}
	return (chan_fail(CHAN_INTERNAL, "unknown async call"));
}

/* Marks a done, wakes waiters, runs the callback. */
static void
chan_aio_finish(chan_aio *a, chan_status s)
{
	chan_aio_cb cb = a->cb;
	void       *arg = a->arg;

	a->status = s;
	snprintf(a->err, sizeof(a->err), "%s", s == CHAN_OK ? "" : chan_last_error(a->c));
	pthread_mutex_lock(&a->mtx);
	a->busy = false;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mtx);
	if (cb != NULL) {
		cb(a, arg);
	}
}

static void *
chan_aio_worker(void *arg)
{
	chan_aio *a = arg;

	chan_current_aio = a;
	chan_aio_finish(a, chan_aio_run(a));
	chan_current_aio = NULL;
	pthread_mutex_lock(&a->mtx);
	a->workers--;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mtx);
	return (NULL);
}

/* Starts the call described in a (fields already set by the caller). */
static void
chan_aio_start(chan_aio *a)
{
	pthread_attr_t attr;
	pthread_t      th;
	int            rv;

	pthread_mutex_lock(&a->mtx);
	a->busy = true;
	a->workers++;
	pthread_mutex_unlock(&a->mtx);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rv = pthread_create(&th, &attr, chan_aio_worker, a);
	pthread_attr_destroy(&attr);
	if (rv != 0) {
		pthread_mutex_lock(&a->mtx);
		a->workers--;
		pthread_mutex_unlock(&a->mtx);
		chan_aio_finish(a, chan_fail(CHAN_RESOURCE_EXHAUSTED, "cannot start a thread"));
	}
}

/* Waits out the previous call and clears a for the next one. false: refused at once. */
static bool
chan_aio_prepare(chan_aio *a, chan_client *c, chan_aio_kind kind)
{
	if (a == NULL) {
		return (false);
	}
	chan_aio_wait(a);
	chan_aio_drop_msgs(a);
	atomic_store(&a->cancelled, false);
	a->kind = kind;
	a->c = c;
	a->first_seq = 0;
	a->value = 0;
	a->delivery = 0;
	a->dpipe = (nng_pipe) NNG_PIPE_INITIALIZER;
	a->err[0] = '\0';
	if (c == NULL) {
		chan_aio_finish(a, chan_fail(CHAN_INVALID_ARGUMENT, "client is NULL"));
		return (false);
	}
	return (true);
}

void
chan_send_aio(chan_client *c, const char *name, const chan_buf *bufs, size_t n, int64_t timeout_ms,
    chan_aio *a)
{
	if (!chan_aio_prepare(a, c, CHAN_AIO_SEND)) {
		return;
	}
	a->name = name;
	a->bufs = bufs;
	a->n = n;
	a->timeout_ms = timeout_ms;
	chan_aio_start(a);
}

void
chan_recv_aio(chan_client *c, const char *name, size_t max, int64_t timeout_ms, chan_aio *a)
{
	if (!chan_aio_prepare(a, c, CHAN_AIO_RECV)) {
		return;
	}
	a->name = name;
	a->n = max;
	a->timeout_ms = timeout_ms;
	chan_aio_start(a);
}

void
chan_recv_any_aio(chan_client *c, const char *const *names, size_t n, int64_t timeout_ms,
    chan_aio *a)
{
	if (!chan_aio_prepare(a, c, CHAN_AIO_RECV_ANY)) {
		return;
	}
	a->names = names;
	a->n = n;
	a->timeout_ms = timeout_ms;
	chan_aio_start(a);
}

void
chan_counter_wait_aio(chan_client *c, const char *name, chan_wait_op op, int64_t operand,
    int64_t timeout_ms, chan_aio *a)
{
	if (!chan_aio_prepare(a, c, CHAN_AIO_COUNTER_WAIT)) {
		return;
	}
	a->name = name;
	a->op = op;
	a->operand = operand;
	a->timeout_ms = timeout_ms;
	chan_aio_start(a);
}

void
chan_counter_add_aio(chan_client *c, const char *name, int64_t delta, chan_aio *a)
{
	if (!chan_aio_prepare(a, c, CHAN_AIO_COUNTER_ADD)) {
		return;
	}
	a->name = name;
	a->operand = delta;
	chan_aio_start(a);
}
