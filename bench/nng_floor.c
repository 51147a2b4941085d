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

int
bench_nng_echo(const bench_opts *o, size_t size, size_t count, int clients,
    bench_result *r)
{
	nng_socket req = NNG_SOCKET_INITIALIZER;
	char url[600], self[PATH_MAX], err[200];
	unsigned char *buf = calloc(1, size > 0 ? size : 1);
	bench_lat lat;
	pid_t pid = -1;
	uint64_t t0, t1;
	ssize_t n;
	int rv = 0;
	echo_peer peer = { .url = url, .size = size };
	pthread_t th;
	bool peer_started = false;

	bench_lat_init(&lat, count);
	snprintf(url, sizeof(url), "ipc://%s/nng-floor.sock", o->dir);
	bench_track_path(url + 6);
	if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) < 0) {
		bench_result_fail(r, "cannot find /proc/self/exe");
		goto out;
	}
	self[n] = '\0';
	{
		char *argv[] = { self, "--echo-server", url, NULL };
		pid = bench_spawn(argv, -1, -1, NULL);
	}
	if (pid < 0 || (rv = echo_dial(url, &req)) != 0) {
		bench_result_fail(r, "echo server %s: %s", url,
		    pid < 0 ? "not started" : nng_strerror(rv));
		goto out;
	}
	/* Workload 1's shape: another client's round trips share the CPUs. */
	if (clients > 1) {
		if (pthread_create(&th, NULL, echo_peer_main, &peer) != 0) {
			bench_result_fail(r, "pthread_create failed");
			goto out;
		}
		peer_started = true;
	}
	t0 = bench_now_ns();
	for (size_t i = 0; i < count; i++) {
		uint64_t a = bench_now_ns();

		memcpy(buf, &i, size < sizeof(i) ? size : sizeof(i));
		if (echo_once(req, buf, size, err, sizeof(err)) != 0) {
			bench_result_fail(r, "%s", err);
			goto out;
		}
		bench_lat_add(&lat, bench_now_ns() - a);
	}
	t1 = bench_now_ns();
	if (peer.failed)
		bench_result_fail(r, "second echo client failed");
	else
		bench_result_fill(r, count, t1 - t0, &lat);
out:
	if (peer_started) {
		peer.stop = 1;
		pthread_join(th, NULL);
	}
	nng_close(req);
	if (pid > 0)
		bench_stop(pid, 2000);
	bench_lat_free(&lat);
	free(buf);
	return (r->failed ? -1 : 0);
}
