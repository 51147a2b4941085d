/*
 * chand_side.c - the chand side of every workload, through libchan:
 * chan_send / chan_recv one per call, chan_send_batch / chan_recv_n for
 * batches, chan_counter_add one per call, and for "pipelined" counters
 * several chan_counter_add calls in flight at once on the one shared
 * client (libchan runs each call on its own nng context; it has no
 * asynchronous or batched counter call to do better with one thread).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <chan/chan.h>

#include "bench.h"

/* Threads keeping counter calls in flight for incr_pipe. */
#define PIPE_THREADS_MAX 32

typedef struct pipe_pool {
	pthread_mutex_t mu;
	pthread_cond_t  work;     /* a job was posted, or stop */
	pthread_cond_t  done;     /* the job's last op finished */
	pthread_t       th[PIPE_THREADS_MAX];
	int             nth;
	const char     *key;
	size_t          left;     /* ops not yet taken */
	size_t          running;  /* ops taken, not finished */
	uint64_t        job;      /* job generation */
	bool            stop;
	chan_status     st;       /* first failure of the job */
	char            err[200];
} pipe_pool;

struct bench_client {
	chan_client *c;
	chan_msg   **msgs;        /* recv_n scratch */
	size_t       msgcap;
	chan_buf    *bufs;        /* send_batch scratch */
	size_t       bufcap;
	pipe_pool   *pool;
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

static void
pool_stop(pipe_pool *p)
{
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nth; i++)
		pthread_join(p->th[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->work);
	pthread_cond_destroy(&p->done);
	free(p);
}

static void
c_disconnect(bench_client *b)
{
	if (b == NULL)
		return;
	if (b->pool != NULL)
		pool_stop(b->pool);
	chan_disconnect(b->c);
	free(b->msgs);
	free(b->bufs);
	free(b);
}

static int
c_reset(bench_client *b, const char *ch)
{
	chan_status st = chan_delete(b->c, ch);

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

/* ---- several counter calls in flight on one client --------------------- */

typedef struct pool_arg {
	pipe_pool    *p;
	bench_client *b;
} pool_arg;

static void *
pool_main(void *arg)
{
	pool_arg a = *(pool_arg *) arg;
	pipe_pool *p = a.p;
	uint64_t seen = 0;

	free(arg);
	pthread_mutex_lock(&p->mu);
	for (;;) {
		chan_status st;

		while (!p->stop && (p->job == seen || p->left == 0)) {
			if (p->left == 0)
				seen = p->job;
			pthread_cond_wait(&p->work, &p->mu);
		}
		if (p->stop)
			break;
		p->left--;
		p->running++;
		pthread_mutex_unlock(&p->mu);
		st = chan_counter_add(a.b->c, p->key, 1, NULL);
		pthread_mutex_lock(&p->mu);
		if (st != CHAN_OK && p->st == CHAN_OK) {
			p->st = st;
			snprintf(p->err, sizeof(p->err), "%s",
			    chan_last_error(a.b->c));
		}
		p->running--;
		if (p->left == 0 && p->running == 0)
			pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return (NULL);
}

static pipe_pool *
pool_start(bench_client *b, int n)
{
	pipe_pool *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return (NULL);
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	for (int i = 0; i < n; i++) {
		pool_arg *a = malloc(sizeof(*a));

		if (a == NULL)
			break;
		a->p = p;
		a->b = b;
		if (pthread_create(&p->th[i], NULL, pool_main, a) != 0) {
			free(a);
			break;
		}
		p->nth++;
	}
	return (p);
}

/*
 * n increments with up to PIPE_THREADS_MAX calls in flight (the depth the
 * issue compares with Redis's 16-deep pipeline and more).
 */
static int
c_incr_pipe(bench_client *b, const char *key, size_t n)
{
	pipe_pool *p;
	chan_status st;

	if (b->pool == NULL) {
		int t = n < PIPE_THREADS_MAX ? (int) n : PIPE_THREADS_MAX;

		if ((b->pool = pool_start(b, t)) == NULL || b->pool->nth == 0)
			return (fail(b, "threads", CHAN_INTERNAL));
	}
	p = b->pool;
	pthread_mutex_lock(&p->mu);
	p->key = key;
	p->left = n;
	p->st = CHAN_OK;
	p->job++;
	pthread_cond_broadcast(&p->work);
	while (p->left > 0 || p->running > 0)
		pthread_cond_wait(&p->done, &p->mu);
	st = p->st;
	if (st != CHAN_OK)
		snprintf(b->err, sizeof(b->err), "chan_counter_add: %s: %s",
		    chan_status_name(st), p->err);
	pthread_mutex_unlock(&p->mu);
	return (st == CHAN_OK ? 0 : -1);
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
	.incr = c_incr,
	.incr_pipe = c_incr_pipe,
	.error = c_error,
	.batch_note = "chan_send_batch of the batch; chan_recv_n; counter "
	    "adds from up to 32 threads sharing the client",
};
