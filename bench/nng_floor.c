/*
 * nng_floor.c - workload 6: a raw nng REQ/REP echo over ipc:// with the
 * same payload size, one request per call. This is the transport floor:
 * what one round trip costs before chand does any work at all.
 *
 * The echo server runs as a separate process (chan-bench re-executed with
 * --echo-server URL), as chand does, and serves like chand's transport:
 * a REP socket in context mode, completions driven by aio callbacks. So
 * the floor pays the same process boundary and nng threading, and nothing
 * else: it starts nng with as many task threads as chand does by default
 * (chand --io-threads, lib/nng_threads.h).
 *
 * Paced (bench_echo.rate), it is workload 5's floor too: the round trip
 * at 2,000 requests/s, through nng's REQ socket and through a client
 * that has no nng threads at all (bare_sp.c), so the server's share of
 * the tail shows on its own.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "bare_sp.h"
#include "bench.h"
#include "nng_threads.h"

#define ECHO_CONTEXTS 8

typedef struct echo_ctx {
	nng_socket s;
	nng_ctx    ctx;
	nng_aio   *aio;
	bool       sending;
} echo_ctx;

static void
echo_cb(void *arg)
{
	echo_ctx *e = arg;

	if (nng_aio_result(e->aio) != 0) {
		if (e->sending) {
			nng_msg_free(nng_aio_get_msg(e->aio));
			e->sending = false;
			nng_ctx_recv(e->ctx, e->aio);
		}
		return; /* closed: stop */
	}
	if (e->sending) {
		e->sending = false;
		nng_ctx_recv(e->ctx, e->aio);
	} else {
		/* The request message goes straight back: no copy. */
		e->sending = true;
		nng_ctx_send(e->ctx, e->aio);
	}
}

/* The child: serves until killed. */
int
bench_echo_server_main(const char *url)
{
	static echo_ctx es[ECHO_CONTEXTS];
	nng_socket s;
	int rv;

	if ((rv = chl_nng_threads_init(chl_nng_threads_default())) != 0 ||
	    (rv = nng_rep0_open(&s)) != 0 ||
	    (rv = nng_listen(s, url, NULL, 0)) != 0) {
		fprintf(stderr, "chan-bench echo: %s: %s\n", url,
		    nng_strerror(rv));
		return (1);
	}
	for (int i = 0; i < ECHO_CONTEXTS; i++) {
		es[i].s = s;
		if ((rv = nng_ctx_open(&es[i].ctx, s)) != 0 ||
		    (rv = nng_aio_alloc(&es[i].aio, echo_cb, &es[i])) != 0) {
			fprintf(stderr, "chan-bench echo: %s\n",
			    nng_strerror(rv));
			return (1);
		}
		nng_ctx_recv(es[i].ctx, es[i].aio);
	}
	for (;;)
		pause();
}

/* A REQ socket dialled to url (the server may still be starting). */
static int
echo_dial(const char *url, nng_socket *req)
{
	int rv;

	if ((rv = nng_req0_open(req)) != 0)
		return (rv);
	for (int t = 0; t < 500; t++) {
		if ((rv = nng_dial(*req, url, NULL, 0)) == 0)
			return (0);
		bench_sleep_ns(10 * 1000 * 1000);
	}
	return (rv);
}

/* One echo round trip of buf[0..size). */
static int
echo_once(nng_socket req, unsigned char *buf, size_t size, char *err,
    size_t errlen)
{
	void *back;
	size_t len;
	int rv;

	if ((rv = nng_send(req, buf, size, 0)) != 0 ||
	    (rv = nng_recv(req, &back, &len, NNG_FLAG_ALLOC)) != 0) {
		snprintf(err, errlen, "nng echo: %s", nng_strerror(rv));
		return (-1);
	}
	nng_free(back, len);
	if (len != size) {
		snprintf(err, errlen, "nng echo: %zu bytes back, sent %zu", len,
		    size);
		return (-1);
	}
	return (0);
}

/* The measured client: nng's REQ socket, or the bare one (bare_sp.c). */
typedef struct echo_client {
	bool       bare;
	nng_socket req;
	bare_sp    sp;
} echo_client;

static int
client_dial(echo_client *c, const char *url, bool bare, char *err,
    size_t errlen)
{
	int rv;

	c->bare = bare;
	c->req = (nng_socket) NNG_SOCKET_INITIALIZER;
	c->sp.fd = -1;
	/* The server is up: the nng client dialled it first. */
	if ((rv = echo_dial(url, &c->req)) != 0) {
		snprintf(err, errlen, "echo server %s: %s", url,
		    nng_strerror(rv));
		return (-1);
	}
	if (bare) {
		nng_close(c->req);
		c->req = (nng_socket) NNG_SOCKET_INITIALIZER;
		return (bare_sp_dial(&c->sp, url, err, errlen));
	}
	return (0);
}

static int
client_echo(echo_client *c, unsigned char *buf, size_t size, char *err,
    size_t errlen)
{
	size_t got;

	if (!c->bare)
		return (echo_once(c->req, buf, size, err, errlen));
	if (bare_sp_call(&c->sp, buf, size, size, &got, err, errlen) != 0)
		return (-1);
	if (got != size) {
		snprintf(err, errlen, "bare echo: %zu bytes back, sent %zu",
		    got, size);
		return (-1);
	}
	return (0);
}

static void
client_close(echo_client *c)
{
	if (c->bare)
		bare_sp_close(&c->sp);
	else
		nng_close(c->req);
}

/* The second client of a two-client floor: echoes until told to stop. */
typedef struct echo_peer {
	const char  *url;
	size_t       size;
	volatile int stop;
	int          failed;
} echo_peer;

static void *
echo_peer_main(void *arg)
{
	echo_peer *p = arg;
	nng_socket req = NNG_SOCKET_INITIALIZER;
	unsigned char *buf = calloc(1, p->size > 0 ? p->size : 1);
	char err[200];

	if (buf == NULL || echo_dial(p->url, &req) != 0)
		p->failed = 1;
	while (!p->failed && !p->stop)
		if (echo_once(req, buf, p->size, err, sizeof(err)) != 0)
			p->failed = 1;
	nng_close(req);
	free(buf);
	return (NULL);
}

/* Starts this program as the echo server on url; its pid, or -1. */
static pid_t
echo_server_start(const char *url, bench_result *r)
{
	char self[PATH_MAX];
	ssize_t n;

	if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) < 0) {
		bench_result_fail(r, "cannot find /proc/self/exe");
		return (-1);
	}
	self[n] = '\0';
	{
		char *argv[] = { self, "--echo-server", (char *) url, NULL };
		pid_t pid = bench_spawn(argv, -1, -1, NULL);

		if (pid < 0)
			bench_result_fail(r, "echo server %s: not started", url);
		return (pid);
	}
}

int
bench_nng_echo(const bench_opts *o, const bench_echo *e, bench_result *r)
{
	char url[600], err[800];
	unsigned char *buf = calloc(1, e->size > 0 ? e->size : 1);
	echo_client c = { .req = NNG_SOCKET_INITIALIZER, .sp = { .fd = -1 } };
	bench_lat lat;
	pid_t pid;
	uint64_t t0, t1, next;
	double c0, c1;
	uint64_t period = e->rate > 0 ? (uint64_t) (1e9 / e->rate) : 0;
	echo_peer peer = { .url = url, .size = e->size };
	pthread_t th;
	bool peer_started = false;

	bench_lat_init(&lat, e->count);
	snprintf(url, sizeof(url), "ipc://%s/nng-floor.sock", o->dir);
	bench_track_path(url + 6);
	if ((pid = echo_server_start(url, r)) < 0)
		goto out;
	if (client_dial(&c, url, e->bare, err, sizeof(err)) != 0) {
		bench_result_fail(r, "%s", err);
		goto out;
	}
	/* Workload 1's shape: another client's round trips share the CPUs. */
	if (e->clients > 1) {
		if (pthread_create(&th, NULL, echo_peer_main, &peer) != 0) {
			bench_result_fail(r, "pthread_create failed");
			goto out;
		}
		peer_started = true;
	}
	c0 = bench_cpu_seconds(pid);
	t0 = next = bench_now_ns();
	for (size_t i = 0; i < e->count; i++) {
		uint64_t a;

		if (period > 0)
			bench_pace(&next, period);
		a = bench_now_ns();
		memcpy(buf, &i, e->size < sizeof(i) ? e->size : sizeof(i));
		if (client_echo(&c, buf, e->size, err, sizeof(err)) != 0) {
			bench_result_fail(r, "%s", err);
			goto out;
		}
		bench_lat_add(&lat, bench_now_ns() - a);
	}
	t1 = bench_now_ns();
	c1 = bench_cpu_seconds(pid);
	if (peer.failed)
		bench_result_fail(r, "second echo client failed");
	else
		bench_result_fill(r, e->count, t1 - t0, &lat);
	if (e->clients == 1)
		bench_result_server_cpu(r, c0, c1, e->count);
out:
	if (peer_started) {
		peer.stop = 1;
		pthread_join(th, NULL);
	}
	client_close(&c);
	if (pid > 0)
		bench_stop(pid, 2000);
	bench_lat_free(&lat);
	free(buf);
	return (r->failed ? -1 : 0);
}
