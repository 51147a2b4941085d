/*
 * wake_floor.c - workload 5's floor set by the machine itself: the same
 * pace and the same three wake-ups as a push→pop through any broker (a
 * producer thread, a relay process standing in for the daemon, a consumer
 * thread), over unix sockets, with no work at all. A daemon's p99 cannot
 * go below this one's on the same machine; on a VM it is where most of
 * the tail comes from (docs/PERFORMANCE.md, session 9).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

typedef struct {
	int    fd;
	size_t count;
	double rate;
	int    failed;
} wake_producer;

static void *
wake_produce(void *arg)
{
	wake_producer *p = arg;
	uint64_t       next = bench_now_ns(), period = (uint64_t) (1e9 / p->rate);

	for (size_t i = 0; i < p->count; i++) {
		uint64_t t;

		bench_pace(&next, period);
		t = bench_now_ns();
		if (write(p->fd, &t, sizeof(t)) != (ssize_t) sizeof(t)) {
			p->failed = 1;
			break;
		}
	}
	return (NULL);
}

/* The relay process: every 8 bytes in are 8 bytes out, at once. */
static void
wake_relay(int in, int out)
{
	uint64_t v;

	while (read(in, &v, sizeof(v)) == (ssize_t) sizeof(v))
		if (write(out, &v, sizeof(v)) != (ssize_t) sizeof(v))
			break;
	_exit(0);
}

int
bench_wake_floor(size_t count, double rate, bench_result *r)
{
	int           a[2] = { -1, -1 }, b[2] = { -1, -1 };
	wake_producer p = { .count = count, .rate = rate };
	bench_lat     lat;
	pthread_t     th;
	pid_t         pid = -1;
	uint64_t      t0;
	size_t        got = 0;

	bench_lat_init(&lat, count);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, a) != 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, b) != 0) {
		bench_result_fail(r, "socketpair: %s", strerror(errno));
		goto out;
	}
	if ((pid = fork()) < 0) {
		bench_result_fail(r, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		close(a[0]);
		close(b[1]);
		wake_relay(a[1], b[0]);
	}
	close(a[1]);
	close(b[0]);
	a[1] = b[0] = -1;
	p.fd = a[0];
	t0 = bench_now_ns();
	if (pthread_create(&th, NULL, wake_produce, &p) != 0) {
		bench_result_fail(r, "pthread_create failed");
		goto out;
	}
	for (; got < count; got++) {
		uint64_t sent;

		if (read(b[1], &sent, sizeof(sent)) != (ssize_t) sizeof(sent))
			break;
		bench_lat_add(&lat, bench_now_ns() - sent);
	}
	pthread_join(th, NULL);
	if (p.failed || got < count)
		bench_result_fail(r, "the relay stopped after %zu", got);
	else
		bench_result_fill(r, count, bench_now_ns() - t0, &lat);
out:
	for (int i = 0; i < 2; i++) {
		if (a[i] >= 0)
			close(a[i]);
		if (b[i] >= 0)
			close(b[i]);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
	bench_lat_free(&lat);
	return (r->failed ? -1 : 0);
}
