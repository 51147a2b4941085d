/*
 * redis_side.c - the Redis side of every workload, through hiredis over
 * the private unix socket: LPUSH/BRPOP one per call, variadic LPUSH and
 * RPOP key count for batches, INCR and pipelined INCR.
 */
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
	redisFree(c->ctx);
	free(c->argv);
	free(c->argl);
	free(c);
}

static int
r_reset(bench_client *c, const char *ch)
{
	redisReply *rep = redisCommand(c->ctx, "DEL %s", ch);

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

/* Variadic LPUSH: one command, one round trip for n messages. */
static int
r_send_batch(bench_client *c, const char *ch, const void *const *data,
    const size_t *lens, size_t n)
{
	redisReply *rep;

	if (n + 2 > c->argcap) {
		size_t cap = n + 2;
		const char **a = realloc(c->argv, cap * sizeof(*a));
		size_t *l;

		if (a == NULL)
			return (fail(c, "LPUSH", NULL));
		c->argv = a;
		if ((l = realloc(c->argl, cap * sizeof(*l))) == NULL)
			return (fail(c, "LPUSH", NULL));
		c->argl = l;
		c->argcap = cap;
	}
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
	.incr = r_incr,
	.incr_pipe = r_incr_pipe,
	.error = r_error,
	.batch_note = "variadic LPUSH of the batch; RPOP key count "
	    "(BRPOP when empty); INCR pipelined",
};

/* Workload 6's Redis column: ECHO of the same size, Redis's own floor. */
int
bench_redis_echo(const bench_opts *o, size_t size, size_t count,
    bench_result *r)
{
	char err[256];
	bench_client *c = r_connect(o, err, sizeof(err));
	char *buf = malloc(size + 1);
	bench_lat lat;
	uint64_t t0;

	if (c == NULL) {
		free(buf);
		bench_result_fail(r, "%s", err);
		return (-1);
	}
	memset(buf, 'e', size);
	bench_lat_init(&lat, count);
	t0 = bench_now_ns();
	for (size_t i = 0; i < count; i++) {
		uint64_t a = bench_now_ns();
		redisReply *rep = redisCommand(c->ctx, "ECHO %b", buf, size);

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
