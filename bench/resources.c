/*
 * resources.c - what chand holds, not how fast it runs: RSS of 1,000,000
 * queued 16-byte messages, and the CPU a daemon burns while thousands of
 * receivers are parked on empty channels. Both daemons run fresh here, so
 * the "before" figure is not inflated by earlier workloads' heap.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "bench.h"
#include "chan.pb-c.h"
#include "resources.h"

/* Queues count messages of size bytes in batches of batch, via ops. */
int
bench_memory(const bench_ops *ops, const bench_opts *o, pid_t pid,
    size_t size, size_t count, size_t batch, bench_mem *m)
{
	bench_client *c;
	char err[256];
	unsigned char *buf = calloc(batch, size + 1);
	const void **data = calloc(batch, sizeof(*data));
	size_t *lens = calloc(batch, sizeof(*lens));
	size_t done = 0;
	int rv = -1;

	memset(m, 0, sizeof(*m));
	if ((c = ops->connect(o, err, sizeof(err))) == NULL) {
		snprintf(m->err, sizeof(m->err), "%s", err);
		goto out_free;
	}
	if (ops->reset(c, "bench.mem") != 0) {
		snprintf(m->err, sizeof(m->err), "%s", ops->error(c));
		goto out;
	}
	for (size_t k = 0; k < batch; k++) {
		data[k] = buf + k * size;
		lens[k] = size;
	}
	bench_sleep_ns(200 * 1000 * 1000);
	m->rss_before_kb = bench_rss_kb(pid);
	while (done < count) {
		size_t n = count - done < batch ? count - done : batch;

		for (size_t k = 0; k < n; k++)
			snprintf((char *) buf + k * size, size, "%015zu",
			    done + k);
		if (ops->send_batch(c, "bench.mem", data, lens, n) != 0) {
			snprintf(m->err, sizeof(m->err), "send: %s",
			    ops->error(c));
			goto out;
		}
		done += n;
	}
	bench_sleep_ns(200 * 1000 * 1000);
	m->rss_after_kb = bench_rss_kb(pid);
	m->count = count;
	m->per_msg = ((double) (m->rss_after_kb - m->rss_before_kb) * 1024.0) /
	    (double) count - (double) size;
	rv = 0;
	ops->reset(c, "bench.mem");
out:
	ops->disconnect(c);
out_free:
	free(buf);
	free(data);
	free(lens);
	return (rv);
}

/* ---- parked receivers ------------------------------------------------- */

/*
 * chand: every receiver is its own nng REQ socket (its own ipc
 * connection) with one Recv request outstanding on its own empty channel,
 * timeout forever. Raw protocol, not libchan: one aio per receiver, no
 * thread per receiver.
 */
typedef struct parked {
	nng_socket s;
	nng_aio   *aio;
} parked;

static volatile int parked_answered;

/* A parked Recv that completes was answered: that is not idle. */
static void
parked_done(void *arg)
{
	(void) arg;
	__atomic_add_fetch(&parked_answered, 1, __ATOMIC_RELAXED);
}

static int
encode_recv(uint64_t client, const char *name, nng_msg **out)
{
	Chan__V1__Request req = CHAN__V1__REQUEST__INIT;
	Chan__V1__Recv recv = CHAN__V1__RECV__INIT;
	size_t len;
	nng_msg *m;

	recv.name = (char *) name;
	recv.has_timeout_ms = 1;
	recv.timeout_ms = -1;
	req.has_id = 1;
	req.id = 1;
	req.has_client = 1;
	req.client = client;
	req.op_case = CHAN__V1__REQUEST__OP_RECV;
	req.recv = &recv;
	len = chan__v1__request__get_packed_size(&req);
	if (nng_msg_alloc(&m, len) != 0)
		return (-1);
	chan__v1__request__pack(&req, nng_msg_body(m));
	*out = m;
	return (0);
}

/* As for Redis: a burst of dials may overrun the listen backlog. */
static int
dial_retry(nng_socket s, const char *url)
{
	int e = 0;

	for (int t = 0; t < 200; t++) {
		if ((e = nng_dial(s, url, NULL, 0)) == 0)
			break;
		bench_sleep_ns(10 * 1000 * 1000);
	}
	return (e);
}

static void
hang_up(parked *ps, int n)
{
	for (int i = 0; i < n; i++) {
		if (ps[i].aio != NULL) {
			nng_msg *m;

			nng_aio_stop(ps[i].aio);
			m = nng_aio_result(ps[i].aio) == 0 ?
			    nng_aio_get_msg(ps[i].aio) : NULL;
			if (m != NULL)
				nng_msg_free(m);
			nng_aio_free(ps[i].aio);
			ps[i].aio = NULL;
		}
		nng_close(ps[i].s);
	}
}

/*
 * What the daemon spends on the hang-ups: CPU time from t0/c0 (taken
 * before the first close: closing 10,000 sockets takes seconds itself)
 * until it stops growing (2 s without a clock tick), at most 120 s (5 s
 * with --quick).
 */
#define SETTLE_QUIET 8

static void
settle(pid_t pid, uint64_t t0, double c0, bench_idle *r)
{
	uint64_t t_last = bench_now_ns();
	double last = bench_cpu_seconds(pid), now;
	/* --quick must stay under a minute: a short look only. */
	int quiet = 0, max = r->seconds >= 10 ? 480 : 20;

	for (int i = 0; i < max && quiet < SETTLE_QUIET; i++) {
		bench_sleep_ns(250ull * 1000 * 1000);
		now = bench_cpu_seconds(pid);
		if (now - last < 0.005) {
			quiet++;
		} else {
			quiet = 0;
			t_last = bench_now_ns();
		}
		last = now;
	}
	r->close_cpu_s = last - c0;
	r->close_wall_s = (double) (t_last - t0) / 1e9;
}

int
bench_parked_chand(const bench_opts *o, pid_t pid, int n, double seconds,
    bench_idle *r)
{
	parked *ps = calloc((size_t) n, sizeof(*ps));
	int opened = 0, rv = -1;
	uint64_t t0;
	double c0, c1;

	memset(r, 0, sizeof(*r));
	parked_answered = 0;
	r->rss_before_kb = bench_rss_kb(pid);
	for (int i = 0; i < n; i++) {
		char name[64];
		nng_msg *m;
		int e;

		snprintf(name, sizeof(name), "bench.park.%d", i);
		if ((e = nng_req0_open(&ps[i].s)) != 0 ||
		    (e = nng_socket_set_ms(ps[i].s, NNG_OPT_REQ_RESENDTIME,
		    NNG_DURATION_INFINITE)) != 0 ||
		    (e = dial_retry(ps[i].s, o->chand_url)) != 0 ||
		    (e = nng_aio_alloc(&ps[i].aio, parked_done, NULL)) != 0) {
			snprintf(r->err, sizeof(r->err), "receiver %d: %s", i,
			    nng_strerror(e));
			opened = i + 1;
			goto out;
		}
		opened = i + 1;
		if (encode_recv(0x62656e6300000000ull + (uint64_t) i, name,
		    &m) != 0) {
			snprintf(r->err, sizeof(r->err), "out of memory");
			goto out;
		}
		/* The send completes at once (REQ queues it); the Recv
		 * stays parked in chand. */
		if ((e = nng_sendmsg(ps[i].s, m, 0)) != 0) {
			nng_msg_free(m);
			snprintf(r->err, sizeof(r->err), "receiver %d send: %s",
			    i, nng_strerror(e));
			goto out;
		}
		nng_recv_aio(ps[i].s, ps[i].aio);
	}
	/* Let the daemon settle after the burst of connections. */
	bench_sleep_ns(2000ull * 1000 * 1000);
	fprintf(stderr, "chan-bench: %d receivers parked on chand pid %d; "
	    "measuring its CPU for %.0f s\n", n, (int) pid, seconds);
	r->rss_after_kb = bench_rss_kb(pid);
	c0 = bench_cpu_seconds(pid);
	bench_sleep_ns((uint64_t) (seconds * 1e9));
	c1 = bench_cpu_seconds(pid);
	r->receivers = n;
	r->answered = __atomic_load_n(&parked_answered, __ATOMIC_RELAXED);
	r->seconds = seconds;
	r->cpu_pct = (c1 - c0) / seconds * 100.0;
	rv = 0;
	t0 = bench_now_ns();
	c0 = bench_cpu_seconds(pid);
	hang_up(ps, opened);
	opened = 0;
	settle(pid, t0, c0, r);
out:
	hang_up(ps, opened);
	free(ps);
	return (rv);
}

/* Redis: every receiver its own connection with BRPOP key 0 written and
 * its reply never read. */
int
bench_parked_redis(const bench_opts *o, pid_t pid, int n, double seconds,
    bench_idle *r)
{
	redisContext **cs = calloc((size_t) n, sizeof(*cs));
	int opened = 0, rv = -1;
	uint64_t t0;
	double c0, c1;

	memset(r, 0, sizeof(*r));
	r->rss_before_kb = bench_rss_kb(pid);
	for (int i = 0; i < n; i++) {
		int done = 0;

		/* A burst of connects overruns the listen backlog (EAGAIN
		 * on unix sockets): retry while the daemon accepts. */
		for (int t = 0; t < 200; t++) {
			cs[i] = redisConnectUnix(o->redis_sock);
			if (cs[i] == NULL || cs[i]->err == 0 || t == 199)
				break;
			redisFree(cs[i]);
			cs[i] = NULL;
			bench_sleep_ns(10 * 1000 * 1000);
		}
		opened = i + 1;
		if (cs[i] == NULL || cs[i]->err != 0) {
			snprintf(r->err, sizeof(r->err), "receiver %d: %s", i,
			    cs[i] != NULL ? cs[i]->errstr : "out of memory");
			goto out;
		}
		redisAppendCommand(cs[i], "BRPOP bench.park.%d 0", i);
		while (!done)
			if (redisBufferWrite(cs[i], &done) != REDIS_OK) {
				snprintf(r->err, sizeof(r->err), "receiver %d:"
				    " %s", i, cs[i]->errstr);
				goto out;
			}
	}
	bench_sleep_ns(2000ull * 1000 * 1000);
	r->rss_after_kb = bench_rss_kb(pid);
	c0 = bench_cpu_seconds(pid);
	bench_sleep_ns((uint64_t) (seconds * 1e9));
	c1 = bench_cpu_seconds(pid);
	r->receivers = n;
	r->seconds = seconds;
	r->cpu_pct = (c1 - c0) / seconds * 100.0;
	rv = 0;
	t0 = bench_now_ns();
	c0 = bench_cpu_seconds(pid);
	for (int i = 0; i < opened; i++)
		if (cs[i] != NULL)
			redisFree(cs[i]);
	opened = 0;
	settle(pid, t0, c0, r);
out:
	for (int i = 0; i < opened; i++)
		if (cs[i] != NULL)
			redisFree(cs[i]);
	free(cs);
	return (rv);
}
