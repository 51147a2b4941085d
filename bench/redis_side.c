/*
 * redis_side.c - the Redis side of every workload, through hiredis over
 * the private unix socket: LPUSH/BRPOP one per call, variadic LPUSH and
 * RPOP key count for batches, INCR and pipelined INCR.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "bench.h"

struct bench_client {
	redisContext *ctx;
	char          err[256];
	/* argv scratch for variadic LPUSH, grown as needed */
	const char  **argv;
	size_t       *argl;
	size_t        argcap;
	/* pipe_send: payloads of the batch being filled (copied) */
	char         *pbuf;
	size_t        pused, pcap;
	size_t       *plen;
	size_t        pn, pncap;
	int           pout;     /* LPUSHes written, replies not read */
	/* pipe_recv: the last RPOP's answer, taken one by one */
	redisReply   *rbatch;
	size_t        rnext;
	bool          rpending; /* an RPOP is written, its reply not read */
};

static int
fail(bench_client *c, const char *what, redisReply *rep)
{
	if (rep == NULL)
		snprintf(c->err, sizeof(c->err), "%s: %s", what,
		    c->ctx->errstr[0] != '\0' ? c->ctx->errstr : "no reply");
	else if (rep->type == REDIS_REPLY_ERROR)
		snprintf(c->err, sizeof(c->err), "%s: %s", what, rep->str);
	else
		snprintf(c->err, sizeof(c->err), "%s: unexpected reply "
		    "type %d", what, rep->type);
	if (rep != NULL)
		freeReplyObject(rep);
	return (-1);
}

static bench_client *
r_connect(const bench_opts *o, char *err, size_t errlen)
{
	bench_client *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		snprintf(err, errlen, "out of memory");
		return (NULL);
	}
	c->ctx = redisConnectUnix(o->redis_sock);
	if (c->ctx == NULL || c->ctx->err != 0) {
		snprintf(err, errlen, "redis connect %.100s: %.100s", o->redis_sock,
		    c->ctx != NULL ? c->ctx->errstr : "out of memory");
		if (c->ctx != NULL)
			redisFree(c->ctx);
		free(c);
		return (NULL);
	}
	return (c);
}

static void
r_disconnect(bench_client *c)
{
	if (c == NULL)
		return;
	if (c->rbatch != NULL)
		freeReplyObject(c->rbatch);
	redisFree(c->ctx);
	free(c->argv);
	free(c->argl);
	free(c->pbuf);
	free(c->plen);
	free(c);
}

static int
r_reset(bench_client *c, const char *ch)
{
	redisReply *rep;

	/* A streaming RPOP still in flight answers first: drop it. */
	if (c->rpending) {
		c->rpending = false;
		if (redisGetReply(c->ctx, (void **) &rep) != REDIS_OK)
			return (fail(c, "RPOP", NULL));
		freeReplyObject(rep);
	}
	if (c->rbatch != NULL) {
		freeReplyObject(c->rbatch);
		c->rbatch = NULL;
	}
	rep = redisCommand(c->ctx, "DEL %s", ch);

	if (rep == NULL || rep->type != REDIS_REPLY_INTEGER)
		return (fail(c, "DEL", rep));
	freeReplyObject(rep);
	return (0);
}

static int
r_send(bench_client *c, const char *ch, const void *data, size_t len)
{
	redisReply *rep = redisCommand(c->ctx, "LPUSH %s %b", ch, data, len);

	if (rep == NULL || rep->type != REDIS_REPLY_INTEGER)
		return (fail(c, "LPUSH", rep));
	freeReplyObject(rep);
	return (0);
}

static int
argv_room(bench_client *c, size_t n)
{
	if (n + 2 > c->argcap) {
		size_t cap = n + 2;
		const char **a = realloc(c->argv, cap * sizeof(*a));
		size_t *l;

		if (a == NULL)
			return (-1);
		c->argv = a;
		if ((l = realloc(c->argl, cap * sizeof(*l))) == NULL)
			return (-1);
		c->argl = l;
		c->argcap = cap;
	}
	return (0);
}

/* Variadic LPUSH: one command, one round trip for n messages. */
static int
r_send_batch(bench_client *c, const char *ch, const void *const *data,
    const size_t *lens, size_t n)
{
	redisReply *rep;

	if (argv_room(c, n) != 0)
		return (fail(c, "LPUSH", NULL));
	c->argv[0] = "LPUSH";
	c->argl[0] = 5;
	c->argv[1] = ch;
	c->argl[1] = strlen(ch);
	for (size_t i = 0; i < n; i++) {
		c->argv[i + 2] = data[i];
		c->argl[i + 2] = lens[i];
	}
	rep = redisCommandArgv(c->ctx, (int) n + 2, c->argv, c->argl);
	if (rep == NULL || rep->type != REDIS_REPLY_INTEGER)
		return (fail(c, "LPUSH", rep));
	freeReplyObject(rep);
	return (0);
}

static int
to_seconds(int64_t timeout_ms)
{
	/* BRPOP takes seconds (0: forever); round up so we never wait less. */
	if (timeout_ms < 0)
		return (0);
	return ((int) ((timeout_ms + 999) / 1000));
}

static int
r_recv(bench_client *c, const char *ch, void *buf, size_t cap, size_t *len,
    int64_t timeout_ms)
{
	redisReply *rep = redisCommand(c->ctx, "BRPOP %s %d", ch,
	    to_seconds(timeout_ms));

	if (rep != NULL && rep->type == REDIS_REPLY_NIL) {
		freeReplyObject(rep);
		snprintf(c->err, sizeof(c->err), "BRPOP: timed out");
		return (-1);
	}
	if (rep == NULL || rep->type != REDIS_REPLY_ARRAY ||
	    rep->elements != 2)
		return (fail(c, "BRPOP", rep));
	*len = rep->element[1]->len;
	memcpy(buf, rep->element[1]->str, *len < cap ? *len : cap);
	freeReplyObject(rep);
	return (0);
}

/*
 * RPOP key count (Redis >= 6.2) takes up to max at once but never blocks;
 * when the list is empty, BRPOP waits for the first, as chand's recv
 * max=N does.
 */
static int
r_recv_batch(bench_client *c, const char *ch, size_t max, size_t *got,
    int64_t timeout_ms)
{
	redisReply *rep;
	char count[32];

	/* hiredis 0.14's format parser knows no %zu. */
	snprintf(count, sizeof(count), "%zu", max);
	rep = redisCommand(c->ctx, "RPOP %s %s", ch, count);

	if (rep != NULL && rep->type == REDIS_REPLY_ARRAY) {
		*got = rep->elements;
		freeReplyObject(rep);
		return (0);
	}
	if (rep == NULL || rep->type != REDIS_REPLY_NIL)
		return (fail(c, "RPOP", rep));
	freeReplyObject(rep);
	rep = redisCommand(c->ctx, "BRPOP %s %d", ch, to_seconds(timeout_ms));
	if (rep != NULL && rep->type == REDIS_REPLY_NIL) {
		freeReplyObject(rep);
		snprintf(c->err, sizeof(c->err), "BRPOP: timed out");
		return (-1);
	}
	if (rep == NULL || rep->type != REDIS_REPLY_ARRAY)
		return (fail(c, "BRPOP", rep));
	*got = 1;
	freeReplyObject(rep);
	return (0);
}

/* ---- streaming: client-side batches, pipelined ------------------------- */


static int
lpush_reply(bench_client *c)
{
	redisReply *rep;

	if (redisGetReply(c->ctx, (void **) &rep) != REDIS_OK)
		return (fail(c, "LPUSH", NULL));
	if (rep == NULL || rep->type != REDIS_REPLY_INTEGER)
		return (fail(c, "LPUSH", rep));
	freeReplyObject(rep);
	c->pout--;
	return (0);
}

static int
write_out(bench_client *c, const char *what)
{
	int done = 0;

	do {
		if (redisBufferWrite(c->ctx, &done) != REDIS_OK)
			return (fail(c, what, NULL));
	} while (!done);
	return (0);
}

/*
 * The filled batch becomes one variadic LPUSH, written at once; at most
 * one earlier LPUSH stays unanswered (as chand's producer keeps one batch
 * in flight while the next fills).
 */
static int
lpush_batch(bench_client *c, const char *ch)
{
	size_t off = 0;

	if (c->pn == 0)
		return (0);
	if (argv_room(c, c->pn) != 0)
		return (fail(c, "LPUSH", NULL));
	c->argv[0] = "LPUSH";
	c->argl[0] = 5;
	c->argv[1] = ch;
	c->argl[1] = strlen(ch);
	for (size_t i = 0; i < c->pn; i++) {
		c->argv[i + 2] = c->pbuf + off;
		c->argl[i + 2] = c->plen[i];
		off += c->plen[i];
	}
	if (redisAppendCommandArgv(c->ctx, (int) c->pn + 2, c->argv,
	    c->argl) != REDIS_OK)
		return (fail(c, "LPUSH", NULL));
	c->pn = 0;
	c->pused = 0;
	c->pout++;
	if (write_out(c, "LPUSH") != 0)
		return (-1);
	while (c->pout > 1)
		if (lpush_reply(c) != 0)
			return (-1);
	return (0);
}

static int
r_pipe_send(bench_client *c, const char *ch, const void *data, size_t len,
    size_t batch)
{
	if (c->pused + len > c->pcap) {
		size_t cap = (c->pused + len) * 2;
		char *b = realloc(c->pbuf, cap);

		if (b == NULL)
			return (fail(c, "LPUSH", NULL));
		c->pbuf = b;
		c->pcap = cap;
	}
	if (c->pn == c->pncap) {
		size_t cap = c->pncap == 0 ? 256 : c->pncap * 2;
		size_t *l = realloc(c->plen, cap * sizeof(*l));

		if (l == NULL)
			return (fail(c, "LPUSH", NULL));
		c->plen = l;
		c->pncap = cap;
	}
	memcpy(c->pbuf + c->pused, data, len);
	c->pused += len;
	c->plen[c->pn++] = len;
	return (c->pn >= batch ? lpush_batch(c, ch) : 0);
}

static int
r_pipe_flush(bench_client *c, const char *ch)
{
	if (lpush_batch(c, ch) != 0)
		return (-1);
	while (c->pout > 0)
		if (lpush_reply(c) != 0)
			return (-1);
	return (0);
}

static int
rpop_start(bench_client *c, const char *ch, size_t batch)
{
	char count[32];

	snprintf(count, sizeof(count), "%zu", batch);
	if (redisAppendCommand(c->ctx, "RPOP %s %s", ch, count) != REDIS_OK)
		return (fail(c, "RPOP", NULL));
	c->rpending = true;
	return (write_out(c, "RPOP"));
}

/* The RPOP in flight answered; nil (empty list) waits with BRPOP. */
static int
rpop_finish(bench_client *c, const char *ch, int64_t timeout_ms)
{
	redisReply *rep;

	c->rpending = false;
	if (redisGetReply(c->ctx, (void **) &rep) != REDIS_OK)
		return (fail(c, "RPOP", NULL));
	if (rep != NULL && rep->type == REDIS_REPLY_ARRAY) {
		c->rbatch = rep;
		c->rnext = 0;
		return (0);
	}
	if (rep == NULL || rep->type != REDIS_REPLY_NIL)
		return (fail(c, "RPOP", rep));
	freeReplyObject(rep);
	rep = redisCommand(c->ctx, "BRPOP %s %d", ch, to_seconds(timeout_ms));
	if (rep != NULL && rep->type == REDIS_REPLY_NIL) {
		freeReplyObject(rep);
		snprintf(c->err, sizeof(c->err), "BRPOP: timed out");
		return (-1);
	}
	if (rep == NULL || rep->type != REDIS_REPLY_ARRAY ||
	    rep->elements != 2)
		return (fail(c, "BRPOP", rep));
	c->rbatch = rep;
	c->rnext = 1; /* element 0 is the key */
	return (0);
}

static int
r_pipe_recv(bench_client *c, const char *ch, void *buf, size_t cap,
    size_t *len, size_t batch, int64_t timeout_ms)
{
	redisReply *e;

	if (c->rbatch != NULL && c->rnext >= c->rbatch->elements) {
		freeReplyObject(c->rbatch);
		c->rbatch = NULL;
	}
	if (c->rbatch == NULL) {
		if (!c->rpending && rpop_start(c, ch, batch) != 0)
			return (-1);
		if (rpop_finish(c, ch, timeout_ms) != 0)
			return (-1);
		/* The next batch is fetched while this one is consumed. */
		if (rpop_start(c, ch, batch) != 0)
			return (-1);
	}
	e = c->rbatch->element[c->rnext++];
	*len = e->len;
	memcpy(buf, e->str, *len < cap ? *len : cap);
	return (0);
}

static int
r_incr(bench_client *c, const char *key)
{
	redisReply *rep = redisCommand(c->ctx, "INCR %s", key);

	if (rep == NULL || rep->type != REDIS_REPLY_INTEGER)
		return (fail(c, "INCR", rep));
	freeReplyObject(rep);
	return (0);
}

/* Pipelined: n INCRs written at once, then n replies read. */
static int
r_incr_pipe(bench_client *c, const char *key, size_t n)
{
	redisReply *rep;

	for (size_t i = 0; i < n; i++)
		if (redisAppendCommand(c->ctx, "INCR %s", key) != REDIS_OK)
			return (fail(c, "INCR", NULL));
	for (size_t i = 0; i < n; i++) {
		if (redisGetReply(c->ctx, (void **) &rep) != REDIS_OK)
			return (fail(c, "INCR", NULL));
		if (rep == NULL || rep->type != REDIS_REPLY_INTEGER)
			return (fail(c, "INCR", rep));
		freeReplyObject(rep);
	}
	return (0);
}

static const char *
r_error(bench_client *c)
{
	return (c->err);
}

const bench_ops bench_redis_ops = {
	.name = "redis",
	.connect = r_connect,
	.disconnect = r_disconnect,
	.reset = r_reset,
	.send = r_send,
	.send_batch = r_send_batch,
	.recv = r_recv,
	.recv_batch = r_recv_batch,
	.pipe_send = r_pipe_send,
	.pipe_flush = r_pipe_flush,
	.pipe_recv = r_pipe_recv,
	.incr = r_incr,
	.incr_pipe = r_incr_pipe,
	.error = r_error,
	.batch_note = "variadic LPUSH of the batch; RPOP key count "
	    "(BRPOP when empty); INCR pipelined",
};

/* Workload 6's Redis column: ECHO of the same size, Redis's own floor. */
int
bench_redis_echo(const bench_opts *o, size_t size, size_t count,
    double rate, bench_result *r)
{
	char err[256];
	bench_client *c = r_connect(o, err, sizeof(err));
	char *buf = malloc(size + 1);
	bench_lat lat;
	uint64_t t0, next;
	uint64_t period = rate > 0 ? (uint64_t) (1e9 / rate) : 0;

	if (c == NULL) {
		free(buf);
		bench_result_fail(r, "%s", err);
		return (-1);
	}
	memset(buf, 'e', size);
	bench_lat_init(&lat, count);
	t0 = next = bench_now_ns();
	for (size_t i = 0; i < count; i++) {
		uint64_t a;
		redisReply *rep;

		if (period > 0)
			bench_pace(&next, period);
		a = bench_now_ns();
		rep = redisCommand(c->ctx, "ECHO %b", buf, size);

		if (rep == NULL || rep->type != REDIS_REPLY_STRING ||
		    rep->len != size) {
			fail(c, "ECHO", rep);
			bench_result_fail(r, "%s", c->err);
			break;
		}
		freeReplyObject(rep);
		bench_lat_add(&lat, bench_now_ns() - a);
	}
	if (!r->failed)
		bench_result_fill(r, count, bench_now_ns() - t0, &lat);
	bench_lat_free(&lat);
	r_disconnect(c);
	free(buf);
	return (r->failed ? -1 : 0);
}
