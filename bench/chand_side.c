/*
 * chand_side.c - the chand side of every workload, through libchan:
 * chan_send / chan_recv one per call, chan_send_batch / chan_recv_n for
 * batches, a chan_producer / chan_consumer for streaming, chan_counter_add
 * one per call, and for "pipelined" counters chan_counter_add_n: the
 * round trip's adds as one request, as Redis pipelines its INCRs.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <chan/chan.h>

#include "bench.h"

struct bench_client {
	chan_client *c;
	chan_msg   **msgs;        /* recv_n scratch */
	size_t       msgcap;
	chan_buf    *bufs;        /* send_batch scratch */
	size_t       bufcap;
	chan_producer *prod;      /* pipe_send */
	chan_consumer *cons;      /* pipe_recv */
	int64_t      *deltas;     /* incr_pipe: n ones, then n values */
	int64_t      *values;
	size_t        ndeltas;
	char         err[256];
};

static int
fail(bench_client *b, const char *what, chan_status st)
{
	snprintf(b->err, sizeof(b->err), "%s: %s: %s", what,
	    chan_status_name(st), chan_last_error(b->c));
	return (-1);
}

static bench_client *
c_connect(const bench_opts *o, char *err, size_t errlen)
{
	bench_client *b = calloc(1, sizeof(*b));
	chan_status st;

	if (b == NULL) {
		snprintf(err, errlen, "out of memory");
		return (NULL);
	}
	if ((st = chan_connect(o->chand_url, &b->c)) != CHAN_OK) {
		snprintf(err, errlen, "chan_connect %.100s: %s: %.100s", o->chand_url,
		    chan_status_name(st), chan_last_error(NULL));
		free(b);
		return (NULL);
	}
	return (b);
}

/* Ends the streaming handles (before a reset, and at disconnect). */
static void
close_streams(bench_client *b)
{
	if (b->prod != NULL)
		(void) chan_producer_close(b->prod);
	b->prod = NULL;
	if (b->cons != NULL)
		chan_consumer_close(b->cons);
	b->cons = NULL;
}

static void
c_disconnect(bench_client *b)
{
	if (b == NULL)
		return;
	close_streams(b);
	free(b->deltas);
	free(b->values);
	chan_disconnect(b->c);
	free(b->msgs);
	free(b->bufs);
	free(b);
}

static int
c_reset(bench_client *b, const char *ch)
{
	chan_status st;

	close_streams(b);
	st = chan_delete(b->c, ch);
	if (st != CHAN_OK && st != CHAN_NOT_FOUND)
		return (fail(b, "chan_delete", st));
	return (0);
}

static int
c_send(bench_client *b, const char *ch, const void *data, size_t len)
{
	chan_status st = chan_send(b->c, ch, data, len, CHAN_WAIT_FOREVER);

	return (st == CHAN_OK ? 0 : fail(b, "chan_send", st));
}

static int
c_send_batch(bench_client *b, const char *ch, const void *const *data,
    const size_t *lens, size_t n)
{
	chan_status st;

	if (n > b->bufcap) {
		chan_buf *nb = realloc(b->bufs, n * sizeof(*nb));

		if (nb == NULL)
			return (fail(b, "chan_send_batch", CHAN_INTERNAL));
		b->bufs = nb;
		b->bufcap = n;
	}
	for (size_t i = 0; i < n; i++) {
		b->bufs[i].data = data[i];
		b->bufs[i].len = lens[i];
	}
	st = chan_send_batch(b->c, ch, b->bufs, n, CHAN_WAIT_FOREVER, NULL);
	return (st == CHAN_OK ? 0 : fail(b, "chan_send_batch", st));
}

static int
c_recv(bench_client *b, const char *ch, void *buf, size_t cap, size_t *len,
    int64_t timeout_ms)
{
	chan_msg *m;
	chan_status st = chan_recv(b->c, ch, &m, timeout_ms);

	if (st != CHAN_OK)
		return (fail(b, "chan_recv", st));
	*len = chan_msg_len(m);
	memcpy(buf, chan_msg_data(m), *len < cap ? *len : cap);
	chan_msg_free(m);
	return (0);
}

static int
c_recv_batch(bench_client *b, const char *ch, size_t max, size_t *got,
    int64_t timeout_ms)
{
	chan_status st;
	size_t n = 0;

	if (max > chan_max_batch(b->c))
		max = chan_max_batch(b->c);
	if (max > b->msgcap) {
		chan_msg **nm = realloc(b->msgs, max * sizeof(*nm));

		if (nm == NULL)
			return (fail(b, "chan_recv_n", CHAN_INTERNAL));
		b->msgs = nm;
		b->msgcap = max;
	}
	st = chan_recv_n(b->c, ch, max, b->msgs, &n, timeout_ms);
	if (st != CHAN_OK)
		return (fail(b, "chan_recv_n", st));
	for (size_t i = 0; i < n; i++)
		chan_msg_free(b->msgs[i]);
	*got = n;
	return (0);
}

static int
c_incr(bench_client *b, const char *key)
{
	chan_status st = chan_counter_add(b->c, key, 1, NULL);

	return (st == CHAN_OK ? 0 : fail(b, "chan_counter_add", st));
}

/* ---- streaming: the producer and the consumer handles ------------------ */

static int
c_pipe_send(bench_client *b, const char *ch, const void *data, size_t len,
    size_t batch)
{
	chan_status st;

	if (b->prod == NULL) {
		chan_producer_opts po;

		chan_producer_opts_init(&po);
		po.max_batch = (uint32_t) batch;
		if ((st = chan_producer_open(b->c, ch, &po, &b->prod)) !=
		    CHAN_OK)
			return (fail(b, "chan_producer_open", st));
	}
	st = chan_producer_send(b->prod, data, len, NULL);
	return (st == CHAN_OK ? 0 : fail(b, "chan_producer_send", st));
}

static int
c_pipe_flush(bench_client *b, const char *ch)
{
	chan_status st;

	(void) ch;
	if (b->prod == NULL)
		return (0);
	st = chan_producer_flush(b->prod, CHAN_WAIT_FOREVER);
	return (st == CHAN_OK ? 0 : fail(b, "chan_producer_flush", st));
}

static int
c_pipe_recv(bench_client *b, const char *ch, void *buf, size_t cap,
    size_t *len, size_t batch, int64_t timeout_ms)
{
	chan_msg *m;
	chan_status st;

	if (b->cons == NULL) {
		chan_consumer_opts co;

		chan_consumer_opts_init(&co);
		co.prefetch = (uint32_t) batch;
		if ((st = chan_consumer_open(b->c, ch, &co, &b->cons)) !=
		    CHAN_OK)
			return (fail(b, "chan_consumer_open", st));
	}
	if ((st = chan_consumer_recv(b->cons, &m, timeout_ms)) != CHAN_OK)
		return (fail(b, "chan_consumer_recv", st));
	*len = chan_msg_len(m);
	memcpy(buf, chan_msg_data(m), *len < cap ? *len : cap);
	chan_msg_free(m);
	return (0);
}

/* ---- counter adds, n in one request: chan_counter_add_n ---------------- */

/*
 * Redis pipelines n INCRs in one write and reads n replies; the same here
 * is one CounterAdd with n deltas and its n values (chan_counter_add_n
 * splits only beyond chan_max_batch, 8192 by default).
 */
static int
c_incr_pipe(bench_client *b, const char *key, size_t n)
{
	chan_status st;

	if (n > b->ndeltas) {
		int64_t *d = realloc(b->deltas, n * sizeof(*d));
		int64_t *v;

		if (d == NULL)
			return (fail(b, "realloc", CHAN_RESOURCE_EXHAUSTED));
		b->deltas = d;
		if ((v = realloc(b->values, n * sizeof(*v))) == NULL)
			return (fail(b, "realloc", CHAN_RESOURCE_EXHAUSTED));
		b->values = v;
		for (; b->ndeltas < n; b->ndeltas++)
			b->deltas[b->ndeltas] = 1;
	}
	st = chan_counter_add_n(b->c, key, b->deltas, n, b->values);
	if (st != CHAN_OK)
		return (fail(b, "chan_counter_add_n", st));
	if (n > 1 && b->values[n - 1] != b->values[0] + (int64_t) n - 1) {
		snprintf(b->err, sizeof(b->err), "chan_counter_add_n: values "
		    "%lld .. %lld for %zu adds of 1", (long long) b->values[0],
		    (long long) b->values[n - 1], n);
		return (-1);
	}
	return (0);
}

static const char *
c_error(bench_client *b)
{
	return (b->err);
}

const bench_ops bench_chand_ops = {
	.name = "chand",
	.connect = c_connect,
	.disconnect = c_disconnect,
	.reset = c_reset,
	.send = c_send,
	.send_batch = c_send_batch,
	.recv = c_recv,
	.recv_batch = c_recv_batch,
	.pipe_send = c_pipe_send,
	.pipe_flush = c_pipe_flush,
	.pipe_recv = c_pipe_recv,
	.incr = c_incr,
	.incr_pipe = c_incr_pipe,
	.error = c_error,
	.batch_note = "chan_send_batch of the batch; chan_recv_n; a "
	    "chan_producer / chan_consumer for streaming; counter adds as "
	    "one chan_counter_add_n of the n deltas (CounterAdd.deltas)",
};
