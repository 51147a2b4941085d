/*
 * nng_floor.c - workload 6: a raw nng REQ/REP echo over ipc:// with the
 * same payload size, one request per call. This is the transport floor:
 * what one round trip costs before chand does any work at all.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "bench.h"

static void *
echo_server(void *arg)
{
	nng_socket *s = arg;
	nng_msg *m;

	/* Returns when the socket is closed under it (NNG_ECLOSED). */
	while (nng_recvmsg(*s, &m, 0) == 0) {
		if (nng_sendmsg(*s, m, 0) != 0)
			nng_msg_free(m);
	}
	return (NULL);
}

int
bench_nng_echo(const bench_opts *o, size_t size, size_t count,
    bench_result *r)
{
	nng_socket rep = NNG_SOCKET_INITIALIZER, req = NNG_SOCKET_INITIALIZER;
	char url[600];
	pthread_t th;
	bool started = false;
	bench_lat lat;
	unsigned char *buf = calloc(1, size > 0 ? size : 1);
	uint64_t t0, t1;
	int rv;

	bench_lat_init(&lat, count);
	snprintf(url, sizeof(url), "ipc://%s/nng-floor.sock", o->dir);
	bench_track_path(url + 6);
	if ((rv = nng_rep0_open(&rep)) != 0 ||
	    (rv = nng_listen(rep, url, NULL, 0)) != 0) {
		bench_result_fail(r, "nng rep %s: %s", url, nng_strerror(rv));
		goto out;
	}
	if (pthread_create(&th, NULL, echo_server, &rep) != 0) {
		bench_result_fail(r, "pthread_create failed");
		goto out;
	}
	started = true;
	if ((rv = nng_req0_open(&req)) != 0 ||
	    (rv = nng_dial(req, url, NULL, 0)) != 0) {
		bench_result_fail(r, "nng req %s: %s", url, nng_strerror(rv));
		goto out;
	}
	t0 = bench_now_ns();
	for (size_t i = 0; i < count; i++) {
		uint64_t a = bench_now_ns();
		void *back;
		size_t len;

		memcpy(buf, &i, size < sizeof(i) ? size : sizeof(i));
		if ((rv = nng_send(req, buf, size, 0)) != 0 ||
		    (rv = nng_recv(req, &back, &len, NNG_FLAG_ALLOC)) != 0) {
			bench_result_fail(r, "nng echo: %s", nng_strerror(rv));
			goto out;
		}
		if (len != size) {
			nng_free(back, len);
			bench_result_fail(r, "nng echo: %zu bytes back, sent "
			    "%zu", len, size);
			goto out;
		}
		nng_free(back, len);
		bench_lat_add(&lat, bench_now_ns() - a);
	}
	t1 = bench_now_ns();
	bench_result_fill(r, count, t1 - t0, &lat);
out:
	nng_close(req);
	nng_close(rep);
	if (started)
		pthread_join(th, NULL);
	bench_lat_free(&lat);
	free(buf);
	return (r->failed ? -1 : 0);
}
