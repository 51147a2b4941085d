/*
 * test_lane.c - the lane (client/libchan/lane.c): a client's synchronous
 * calls on one SP connection that the calling threads write and read
 * themselves, several calls in flight at once.
 *
 * Against a real chand: calls of many threads multiplexed on one client
 * while a receive is parked, the reader role handed over when the reader's
 * own call ends, the connections a client holds (one for sync calls, a
 * second once it makes an async one), chan_cancel of several parked
 * calls (withdrawn in the daemon too), a daemon restarted under a parked
 * receive, a peer that hangs up on every request, a peer that is not SP
 * at all, tcp end to end, sync and async deliveries mixed on one client
 * (all confirmed: nothing redelivered after chan_disconnect), and
 * chan_cancel while the daemon reads nothing (SIGSTOP) or is gone.
 *
 * The same binary runs with CHAN_SP_DIRECT=0 (integration.lane_nng: every
 * call on nng's client). A check that only the lane can pass says so and
 * returns early there (direct_mode()).
 *
 * Helper threads never call check's assertions: they record what they saw
 * and the test thread asserts.
 */
#include <check.h>
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chan/chan.h>

#include "harness.h"
#include "libchan_check.h"

/* ---- a call on its own thread ------------------------------------------------------ */

enum { JOB_RECV, JOB_CWAIT };

/* One blocking call, run on a thread; the test thread reads the outcome once done. */
typedef struct job {
	chan_client *c;
	const char  *name;
	int          kind;
	int64_t      timeout;
	pthread_t    th;
	chan_status  st;
	chan_msg    *m;      /* JOB_RECV: what came */
	int64_t      value;  /* JOB_CWAIT: the value */
	int64_t      t0, t_end;
	char         why[256];
	int          done;   /* atomic */
} job;

static void *
job_main(void *arg)
{
	job *j = arg;

	j->t0 = chh_now_ms();
	if (j->kind == JOB_RECV) {
		j->st = chan_recv(j->c, j->name, &j->m, j->timeout);
	} else {
		j->st = chan_counter_wait(j->c, j->name, CHAN_WAIT_GE, 1, j->timeout, &j->value);
	}
	j->t_end = chh_now_ms();
	snprintf(j->why, sizeof(j->why), "%s", why(j->st));
	__atomic_store_n(&j->done, 1, __ATOMIC_SEQ_CST);
	return (NULL);
}

static void
job_start(job *j, chan_client *c, const char *name, int kind, int64_t timeout)
{
	memset(j, 0, sizeof(*j));
	j->c = c;
	j->name = name;
	j->kind = kind;
	j->timeout = timeout;
	ck_assert_int_eq(pthread_create(&j->th, NULL, job_main, j), 0);
}

static bool
job_is_done(job *j)
{
	return (__atomic_load_n(&j->done, __ATOMIC_SEQ_CST) != 0);
}

/*
 * Joins j if it ends within ms; false (the thread left running: the
 * forked test exits with it) when it does not.
 */
static bool
job_finish(job *j, int ms)
{
	int64_t deadline = chh_now_ms() + ms;

	while (!job_is_done(j)) {
		if (chh_now_ms() >= deadline) {
			return (false);
		}
		usleep(2 * 1000);
	}
	pthread_join(j->th, NULL);
	return (true);
}

/* Asserts j received the single payload want. */
static void
job_assert_got(job *j, const char *want)
{
	ck_assert_msg(j->st == CHAN_OK, "receive on %s: %s (%s)", j->name,
	    chan_status_name(j->st), j->why);
	ck_assert_msg(chan_msg_len(j->m) == strlen(want) &&
	    memcmp(chan_msg_data(j->m), want, strlen(want)) == 0,
	    "receive on %s: %zu bytes, not \"%s\"", j->name, chan_msg_len(j->m), want);
	chan_msg_free(j->m);
	j->m = NULL;
}

/* ---- 1. many threads on one client while a receive is parked ------------------------ */

#define MUX_THREADS 4
#define MUX_N       500

typedef struct mux_worker {
	chan_client *c;
	int          idx;
	pthread_t    th;
	int          errors;
	char         first[256]; /* the first error */
} mux_worker;

static void
mux_fail(mux_worker *w, const char *what, int k, chan_status st)
{
	if (w->errors++ == 0) {
		snprintf(w->first, sizeof(w->first), "thread %d, %s %d: %s (%s)", w->idx, what, k,
		    chan_status_name(st), why(st));
	}
}

static void *
mux_main(void *arg)
{
	mux_worker *w = arg;
	char        ctr[32], b[32];
	int64_t     v;
	chan_status st;

	snprintf(ctr, sizeof(ctr), "ctr%d", w->idx);
	for (int k = 0; k < MUX_N; k++) {
		if ((st = chan_counter_add(w->c, ctr, 1, &v)) != CHAN_OK) {
			mux_fail(w, "add", k, st);
		} else if (v != k + 1) {
			mux_fail(w, "add (wrong value)", k, CHAN_INTERNAL);
		}
		payload(b, sizeof(b), (uint64_t) w->idx * 1000000 + (uint64_t) k);
		if ((st = chan_send(w->c, "b", b, strlen(b), chh_scaled_ms(10000))) != CHAN_OK) {
			mux_fail(w, "send", k, st);
		}
	}
	return (NULL);
}

START_TEST(multiplex_under_parked_recv)
{
	chan_client *c = connect_ok(), *w = connect_ok();
	mux_worker   mw[MUX_THREADS];
	job          a;
	chan_msg    *ms[64];
	uint64_t     next[MUX_THREADS] = { 0 }, got = 0, x;
	size_t       n, max;
	int64_t      v;
	char         ctr[32];
	chan_msg    *m;

	job_start(&a, c, "a", JOB_RECV, CHAN_WAIT_FOREVER);
	wait_blocked_receivers(w, "a", 1);

	for (int i = 0; i < MUX_THREADS; i++) {
		memset(&mw[i], 0, sizeof(mw[i]));
		mw[i].c = c;
		mw[i].idx = i;
		ck_assert_int_eq(pthread_create(&mw[i].th, NULL, mux_main, &mw[i]), 0);
	}
	for (int i = 0; i < MUX_THREADS; i++) {
		pthread_join(mw[i].th, NULL);
	}
	for (int i = 0; i < MUX_THREADS; i++) {
		ck_assert_msg(mw[i].errors == 0, "%d failed calls; first: %s", mw[i].errors,
		    mw[i].first);
		snprintf(ctr, sizeof(ctr), "ctr%d", i);
		ck_status(chan_counter_get(w, ctr, &v), CHAN_OK);
		ck_assert_int_eq(v, MUX_N);
	}
	/* The receive is still parked, untouched by the traffic around it. */
	ck_assert_msg(!job_is_done(&a), "the parked receive returned %s (%s)",
	    chan_status_name(a.st), a.why);
	ck_assert_uint_eq(stat_of(w, "a").blocked_receivers, 1);

	ck_status(chan_send(w, "a", "wake", 4, chh_scaled_ms(5000)), CHAN_OK);
	ck_assert_msg(job_finish(&a, chh_scaled_ms(5000)), "the parked receive did not return "
	    "within 5 s of the send");
	job_assert_got(&a, "wake");

	/* "b": all 2000, each producer's in its own order. */
	max = chan_max_batch(w) < 64 ? chan_max_batch(w) : 64;
	while (got < MUX_THREADS * MUX_N) {
		ck_status(chan_recv_n(w, "b", max, ms, &n, chh_scaled_ms(5000)), CHAN_OK);
		for (size_t i = 0; i < n; i++) {
			x = payload_index(ms[i]);
			ck_assert_msg(x != UINT64_MAX && x / 1000000 < MUX_THREADS,
			    "a message not sent by a worker on \"b\"");
			ck_assert_msg(x % 1000000 == next[x / 1000000], "thread %llu: message %llu "
			    "where %llu was due", (unsigned long long) (x / 1000000),
			    (unsigned long long) (x % 1000000),
			    (unsigned long long) next[x / 1000000]);
			next[x / 1000000]++;
			got++;
			chan_msg_free(ms[i]);
		}
	}
	ck_status(chan_try_recv(w, "b", &m), CHAN_EMPTY);
	for (int i = 0; i < MUX_THREADS; i++) {
		ck_assert_uint_eq(next[i], MUX_N);
	}
	chan_disconnect(w);
	chan_disconnect(c);
}
END_TEST

/* ---- 2. the reader's call ends first: another waiter takes over ------------------- */

/*
 * A (a 300 ms receive on an empty channel, parked first: the lane's
 * reader) and B (a receive, _i 1: a counter wait, 5 s), on one client. A
 * times out; B's answer comes at ~800 ms, when A is long gone: B must
 * still get it (it took the reader role over).
 */
START_TEST(reader_hand_over)
{
	chan_client *c = connect_ok(), *w = connect_ok();
	job          a, b;
	int64_t      t0;

	t0 = chh_now_ms();
	job_start(&a, c, "ha", JOB_RECV, 300);
	wait_blocked_receivers(w, "ha", 1);
	job_start(&b, c, "hb", _i == 0 ? JOB_RECV : JOB_CWAIT, chh_scaled_ms(5000));
	if (_i == 0) {
		wait_blocked_receivers(w, "hb", 1);
	}

	ck_assert_msg(job_finish(&a, chh_scaled_ms(5000)), "a 300 ms receive did not return "
	    "within 5 s");
	ck_assert_msg(a.st == CHAN_TIMEOUT, "A's 300 ms receive: %s (%s)",
	    chan_status_name(a.st), a.why);
	ck_assert_msg(a.t_end - a.t0 >= 270, "A's 300 ms receive timed out after %lld ms",
	    (long long) (a.t_end - a.t0));
	ck_assert_msg(!job_is_done(&b), "B returned before its answer: %s (%s)",
	    chan_status_name(b.st), b.why);

	while (chh_now_ms() - t0 < 800) {
		usleep(5 * 1000);
	}
	if (_i == 0) {
		ck_status(chan_send(w, "hb", "late", 4, chh_scaled_ms(5000)), CHAN_OK);
	} else {
		ck_status(chan_counter_add(w, "hb", 1, NULL), CHAN_OK);
	}
	ck_assert_msg(job_finish(&b, chh_scaled_ms(10000)), "B never returned");
	if (_i == 0) {
		job_assert_got(&b, "late");
	} else {
		ck_assert_msg(b.st == CHAN_OK, "B's counter wait: %s (%s) after %lld ms",
		    chan_status_name(b.st), b.why, (long long) (b.t_end - b.t0));
		ck_assert_int_eq(b.value, 1);
	}
	/* The client still works from this thread. */
	ck_status(chan_ping(c, NULL), CHAN_OK);
	chan_disconnect(w);
	chan_disconnect(c);
}
END_TEST

/* ---- 3. the connections a client holds --------------------------------------------- */

START_TEST(connections_held)
{
	chan_client *r = connect_ok(), *c = connect_ok();
	chan_aio    *a;
	chan_msg    *m;
	int64_t      v;

	/* r and c (the harness's start-up probe may still be closing). */
	wait_connections(r, 2);
	/* Sync calls of all kinds: still the one connection. */
	ck_status(chan_send(c, "cc", "x", 1, chh_scaled_ms(5000)), CHAN_OK);
	ck_status(chan_recv(c, "cc", &m, chh_scaled_ms(5000)), CHAN_OK);
	chan_msg_free(m);
	ck_status(chan_counter_add(c, "cn", 5, &v), CHAN_OK);
	ck_status(chan_ping(c, NULL), CHAN_OK);
	usleep(100 * 1000);
	ck_assert_uint_eq(connections(r), 2);

	/* The first async call. */
	ck_status(chan_aio_alloc(&a, NULL, NULL), CHAN_OK);
	chan_counter_add_aio(c, "cn", 1, a);
	chan_aio_wait(a);
	ck_status(chan_aio_result(a), CHAN_OK);
	ck_assert_int_eq(chan_aio_value(a), 6);
	if (direct_mode()) {
		/* nng's socket, opened for it. */
		wait_connections(r, 3);
	} else {
		/* nng's client from the start: the same connection. */
		usleep(100 * 1000);
		ck_assert_uint_eq(connections(r), 2);
	}
	/* Both kinds keep working side by side. */
	chan_counter_add_aio(c, "cn", 1, a);
	chan_aio_wait(a);
	ck_status(chan_aio_result(a), CHAN_OK);
	ck_status(chan_counter_add(c, "cn", 1, &v), CHAN_OK);
	ck_assert_int_eq(v, 8);
	chan_aio_free(a);

	chan_disconnect(c);
	wait_connections(r, 1);
	chan_disconnect(r);
}
END_TEST

/* ---- 4. chan_cancel with several calls parked ------------------------------------- */

#define CX_N 3

START_TEST(cancel_parked_calls)
{
	static const char *const names[CX_N] = { "k0", "k1", "k2" };
	chan_client *c = connect_ok(), *w = connect_ok();
	job          j[CX_N];
	chan_msg    *m;
	int64_t      t0;
	char         b[16];

	for (int i = 0; i < CX_N; i++) {
		job_start(&j[i], c, names[i], JOB_RECV, CHAN_WAIT_FOREVER);
	}
	for (int i = 0; i < CX_N; i++) {
		wait_blocked_receivers(w, names[i], 1);
	}
	t0 = chh_now_ms();
	chan_cancel(c);
	for (int i = 0; i < CX_N; i++) {
		ck_assert_msg(job_finish(&j[i], chh_scaled_ms(2000) - (int) (chh_now_ms() - t0)),
		    "the receive on %s did not return within 2 s of chan_cancel", names[i]);
		ck_assert_msg(j[i].st == CHAN_UNAVAILABLE && strstr(j[i].why, "cancel") != NULL,
		    "the receive on %s after chan_cancel: %s (%s)", names[i],
		    chan_status_name(j[i].st), j[i].why);
	}
	/* Later calls: cancelled at once. */
	ck_status(chan_ping(c, NULL), CHAN_UNAVAILABLE);

	/* Withdrawn in the daemon: another client receives there at once, nothing BUSY. */
	for (int i = 0; i < CX_N; i++) {
		wait_blocked_receivers(w, names[i], 0);
	}
	for (int i = 0; i < CX_N; i++) {
		snprintf(b, sizeof(b), "after%d", i);
		ck_status(chan_send(w, names[i], b, strlen(b), chh_scaled_ms(5000)), CHAN_OK);
		ck_status(chan_recv(w, names[i], &m, chh_scaled_ms(1000)), CHAN_OK);
		ck_assert_msg(chan_msg_len(m) == strlen(b) && memcmp(chan_msg_data(m), b,
		    strlen(b)) == 0, "%s: not the message just sent", names[i]);
		chan_msg_free(m);
		ck_assert_uint_eq(stat_of(w, names[i]).total_sent, 1);
	}
	chan_disconnect(c);
	chan_disconnect(w);
}
END_TEST

/* ---- 5. a daemon restarted under a parked receive ----------------------------------- */

/*
 * _i 0: SIGKILL. No answer: the connection is lost under the receive,
 * which is sent again (same client and id) to the new daemon once it is
 * up, and gets what is sent there. _i 1: SIGTERM. Shutdown answers parked
 * receivers SHUTTING_DOWN (SPEC "Waiters"), so that is what the receive
 * returns; the client then works with the new daemon.
 */
START_TEST(restart_under_parked_recv)
{
	bool         killed = _i == 0;
	chh_daemon   d;
	char         url[192];
	const char  *args[] = { "--listen", url, NULL };
	chan_client *c, *w;
	job          a;
	chan_msg    *m;

	snprintf(url, sizeof(url), "ipc://%s/r.sock", own_dir);
	chh_start(&d, args);
	ck_status(chan_connect(url, &c), CHAN_OK);
	job_start(&a, c, "rr", JOB_RECV, CHAN_WAIT_FOREVER);
	ck_status(chan_connect(url, &w), CHAN_OK);
	wait_blocked_receivers(w, "rr", 1);
	chan_disconnect(w);

	if (killed) {
		chh_kill(&d);
		usleep(300 * 1000); /* a few failed redials: really gone */
	} else {
		chh_stop(&d); /* asserts exit 0 */
	}
	chh_start(&d, args);
	ck_status(chan_connect(url, &w), CHAN_OK);
	if (killed) {
		ck_assert_msg(!job_is_done(&a), "the parked receive returned %s (%s) when the "
		    "daemon was killed", chan_status_name(a.st), a.why);
		/* Sent again: parked in the new daemon. */
		wait_blocked_receivers(w, "rr", 1);
		ck_status(chan_send(w, "rr", "again", 5, chh_scaled_ms(5000)), CHAN_OK);
		ck_assert_msg(job_finish(&a, chh_scaled_ms(5000)), "the parked receive did not "
		    "return within 5 s of the send to the new daemon");
		job_assert_got(&a, "again");
	} else {
		ck_assert_msg(job_finish(&a, chh_scaled_ms(5000)), "the parked receive did not "
		    "return within 5 s of the restart");
		ck_assert_msg(a.st == CHAN_SHUTTING_DOWN, "the parked receive when chand stopped: "
		    "%s (%s), expected SHUTTING_DOWN", chan_status_name(a.st), a.why);
		ck_status(chan_send(w, "rr", "again", 5, chh_scaled_ms(5000)), CHAN_OK);
		ck_status(chan_recv(c, "rr", &m, chh_scaled_ms(5000)), CHAN_OK);
		ck_assert_uint_eq(chan_msg_len(m), 5);
		chan_msg_free(m);
	}
	ck_status(chan_try_recv(w, "rr", &m), CHAN_EMPTY);
	ck_assert_uint_eq(stat_of(w, "rr").total_sent, 1);
	chan_disconnect(w);
	chan_disconnect(c);
	chh_stop(&d);
	own_dir_clean(false);
}
END_TEST

/* ---- 6. peers that are not chand ---------------------------------------------------- */

/*
 * A relay (chh_relay) in front of the daemon: chan_connect works through
 * it. Arming hangs up the relayed connections; every later one gets
 * chand's SP handshake (REP), one request is read (compared with the one
 * before, byte for byte) and the connection is closed.
 */
#define HP_RELAYS 2

static void
hp_hang_up(chh_relay *g, int fd)
{
	static const uint8_t rep[8] = { 0x00, 'S', 'P', 0x00, 0x00, 0x31, 0x00, 0x00 };
	uint8_t              in[8];

	if (gp_read_within(fd, in, sizeof(in), 2000) != sizeof(in) ||
	    !gp_write_all(fd, rep, sizeof(rep))) {
		return;
	}
	chh_relay_keep_request(g, fd, 5000);
}

/*
 * The lane's connection is hung up, and so is every new one after one
 * request: a call without a local timeout sends the same request again
 * (same client and id, byte for byte) CHAN_MAX_RESETS (4) times, then
 * fails UNAVAILABLE naming the URL, in bounded time. Lane-specific: nng's
 * client retries on its own terms (test_direct's impostors cover it).
 */
START_TEST(peer_hangs_up_every_request)
{
	chh_relay    g;
	char         path[100];
	chan_client *c, *w;
	chan_status  st;
	int64_t      t0, took, v;
	int          n;

	if (!direct_mode()) {
		return;
	}
	snprintf(path, sizeof(path), "%s/g.sock", own_dir);
	chh_relay_start(&g, path, D.sock, HP_RELAYS, hp_hang_up, NULL);
	{
		char url[128];

		snprintf(url, sizeof(url), "ipc://%s", g.path);
		ck_status(chan_connect(url, &c), CHAN_OK);
	}
	ck_assert_int_eq(__atomic_load_n(&g.relayed, __ATOMIC_SEQ_CST), 1);
	ck_status(chan_counter_add(c, "hu0", 1, &v), CHAN_OK); /* relayed: works */
	chh_relay_arm(&g, true);

	t0 = chh_now_ms();
	st = chan_counter_add(c, "hu", 1, &v);
	took = chh_now_ms() - t0;
	ck_assert_msg(st == CHAN_UNAVAILABLE, "add with every request hung up on: %s (%s) "
	    "after %lld ms", chan_status_name(st), why(st), (long long) took);
	ck_assert_msg(strstr(chan_last_error(NULL), g.path) != NULL,
	    "the message does not name the URL: %s", chan_last_error(NULL));
	ck_assert_msg(took < chh_scaled_ms(5000), "the add took %lld ms to fail",
	    (long long) took);
	/* The first went to the hung-up relay or here; 4 resends here; all the same. */
	n = __atomic_load_n(&g.requests, __ATOMIC_SEQ_CST);
	ck_assert_msg(n >= 4 && n <= 5, "the peer read %d requests, expected 4 or 5", n);
	ck_assert_int_eq(__atomic_load_n(&g.changes, __ATOMIC_SEQ_CST), 0);
	ck_assert_int_eq(__atomic_load_n(&g.refused, __ATOMIC_SEQ_CST), n);

	/* Nothing reached the daemon. */
	w = connect_ok();
	ck_status(chan_counter_get(w, "hu", &v), CHAN_NOT_FOUND);
	chan_disconnect(w);
	chan_disconnect(c);
	chh_relay_stop(&g);
	own_dir_clean(false);
}
END_TEST

/* A tcp listener that answers every connection with bytes that are not SP, then closes it. */
typedef struct garbage_peer {
	int       lfd;
	int       ctl[2];
	int       port;
	pthread_t th;
	int       conns; /* atomic */
} garbage_peer;

static void *
garbage_main(void *arg)
{
	static const char junk[] = "HTTP/1.0 400 Bad Request\r\n\r\nnot chand at all";
	garbage_peer     *p = arg;
	int               fd;
	char              in[64];

	for (;;) {
		struct pollfd pf[2] = {
			{ .fd = p->ctl[0], .events = POLLIN },
			{ .fd = p->lfd, .events = POLLIN },
		};

		if (poll(pf, 2, -1) < 0 && errno != EINTR) {
			break;
		}
		if (pf[0].revents != 0) {
			break;
		}
		if ((pf[1].revents & POLLIN) == 0 || (fd = accept(p->lfd, NULL, NULL)) < 0) {
			continue;
		}
		__atomic_add_fetch(&p->conns, 1, __ATOMIC_SEQ_CST);
		(void) gp_write_all(fd, junk, sizeof(junk) - 1);
		(void) gp_read_within(fd, in, sizeof(in), 200);
		close(fd);
	}
	return (NULL);
}

START_TEST(connect_to_non_sp_peer)
{
	garbage_peer       p;
	struct sockaddr_in sa;
	socklen_t          len = sizeof(sa);
	char               url[64];
	chan_client       *c = NULL;
	chan_status        st;
	int64_t            t0, took;

	memset(&p, 0, sizeof(p));
	p.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(p.lfd, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(p.lfd, (struct sockaddr *) &sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(p.lfd, 16), 0);
	ck_assert_int_eq(getsockname(p.lfd, (struct sockaddr *) &sa, &len), 0);
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", ntohs(sa.sin_port));
	ck_assert_int_eq(pipe(p.ctl), 0);
	ck_assert_int_eq(pthread_create(&p.th, NULL, garbage_main, &p), 0);

	t0 = chh_now_ms();
	st = chan_connect(url, &c);
	took = chh_now_ms() - t0;
	ck_assert_msg(st == CHAN_PROTOCOL || st == CHAN_UNAVAILABLE, "connect to a peer that "
	    "is not SP: %s (%s)", chan_status_name(st), why(st));
	ck_assert_msg(strstr(chan_last_error(NULL), url) != NULL,
	    "the message does not name the URL %s: %s", url, chan_last_error(NULL));
	ck_assert_ptr_null(c);
	ck_assert_msg(took < chh_scaled_ms(15000), "connect took %lld ms to fail",
	    (long long) took);
	ck_assert_int_ge(__atomic_load_n(&p.conns, __ATOMIC_SEQ_CST), 1);
	if (direct_mode()) {
		/* The lane dials once and reads the handshake: a clear PROTOCOL. */
		ck_assert_msg(st == CHAN_PROTOCOL, "the lane's connect: %s (%s)",
		    chan_status_name(st), why(st));
	}
	ck_assert_int_eq(write(p.ctl[1], "q", 1), 1);
	pthread_join(p.th, NULL);
	close(p.ctl[0]);
	close(p.ctl[1]);
	close(p.lfd);
}
END_TEST

/* ---- 7. tcp end to end ---------------------------------------------------------------- */

START_TEST(tcp_round_trip)
{
	chh_daemon   d;
	char         url[64];
	const char  *args[] = { "--listen", url, NULL };
	chan_client *c, *w;
	chan_msg    *m;
	job          a;
	int64_t      v;
	bool         swapped;

	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", chh_free_tcp_port());
	chh_start(&d, args);
	ck_status(chan_connect(url, &c), CHAN_OK);
	ck_status(chan_connect(url, &w), CHAN_OK);
	ck_assert_str_eq(chan_url(c), url);

	send_n(c, "t", 0, 10);
	for (uint64_t i = 0; i < 10; i++) {
		ck_status(chan_recv(w, "t", &m, chh_scaled_ms(5000)), CHAN_OK);
		ck_assert_uint_eq(payload_index(m), i);
		chan_msg_free(m);
	}
	ck_status(chan_try_recv(w, "t", &m), CHAN_EMPTY);

	ck_status(chan_counter_add(c, "tc", 41, &v), CHAN_OK);
	ck_assert_int_eq(v, 41);
	ck_status(chan_counter_cas(w, "tc", 41, 42, &swapped, &v), CHAN_OK);
	ck_assert(swapped);
	ck_status(chan_counter_get(c, "tc", &v), CHAN_OK);
	ck_assert_int_eq(v, 42);

	/* A parked receive over tcp, woken by the other client, while c keeps calling. */
	job_start(&a, c, "tp", JOB_RECV, chh_scaled_ms(10000));
	wait_blocked_receivers(w, "tp", 1);
	ck_status(chan_ping(c, NULL), CHAN_OK);
	ck_status(chan_send(w, "tp", "tcp", 3, chh_scaled_ms(5000)), CHAN_OK);
	ck_assert_msg(job_finish(&a, chh_scaled_ms(5000)), "the receive over tcp never "
	    "returned");
	job_assert_got(&a, "tcp");

	chan_disconnect(w);
	chan_disconnect(c);
	chh_stop(&d);
}
END_TEST

/* ---- 8. sync and async deliveries on one client ------------------------------------- */

START_TEST(mixed_sync_async_confirmed)
{
	chan_client *c = connect_ok(), *w = connect_ok(), *r;
	chan_aio    *a;
	chan_msg    *m;
	int64_t      t0;
	chan_status  st;

	send_n(w, "mx", 1, 3);
	ck_status(chan_recv(c, "mx", &m, chh_scaled_ms(5000)), CHAN_OK);
	ck_assert_uint_eq(payload_index(m), 1);
	chan_msg_free(m);

	ck_status(chan_aio_alloc(&a, NULL, NULL), CHAN_OK);
	chan_recv_aio(c, "mx", 1, chh_scaled_ms(5000), a);
	chan_aio_wait(a);
	ck_assert_msg(chan_aio_result(a) == CHAN_OK, "chan_recv_aio: %s (%s)",
	    chan_status_name(chan_aio_result(a)), chan_aio_error(a));
	ck_assert_uint_eq(chan_aio_count(a), 1);
	m = chan_aio_take_msg(a, 0);
	ck_assert_ptr_nonnull(m);
	ck_assert_uint_eq(payload_index(m), 2);
	ck_assert(!chan_msg_redelivered(m));
	chan_msg_free(m);
	chan_aio_free(a);

	ck_status(chan_recv(c, "mx", &m, chh_scaled_ms(5000)), CHAN_OK);
	ck_assert_uint_eq(payload_index(m), 3);
	ck_assert(!chan_msg_redelivered(m));
	chan_msg_free(m);
	chan_disconnect(c);

	/* Every delivery confirmed: nothing comes back to the channel. */
	r = connect_ok();
	t0 = chh_now_ms();
	st = chan_recv(r, "mx", &m, 300);
	if (st == CHAN_OK) {
		ck_abort_msg("message %llu came again (redelivered: %d) after chan_disconnect",
		    (unsigned long long) payload_index(m), (int) chan_msg_redelivered(m));
	}
	ck_assert_msg(st == CHAN_TIMEOUT, "a 300 ms receive after: %s (%s)",
	    chan_status_name(st), why(st));
	ck_assert_int_ge(chh_now_ms() - t0, 270);
	ck_assert_uint_eq(stat_of(r, "mx").in_flight, 0);
	ck_assert_uint_eq(stat_of(r, "mx").total_redelivered, 0);
	ck_assert_uint_eq(stat_of(r, "mx").total_received, 3);
	chan_disconnect(r);
	chan_disconnect(w);
}
END_TEST

/* ---- 9. chan_cancel while the daemon does not read ----------------------------------- */

typedef struct stall_call {
	chan_client *c;
	int          kind; /* 0: a 1 MiB send, 1: a ping, 2: chan_cancel */
	const void  *buf;
	size_t       len;
	pthread_t    th;
	chan_status  st;
	char         why[256];
	int          done; /* atomic */
} stall_call;

static void *
stall_main(void *arg)
{
	stall_call *k = arg;

	if (k->kind == 0) {
		k->st = chan_send(k->c, "st", k->buf, k->len, CHAN_WAIT_FOREVER);
	} else if (k->kind == 1) {
		k->st = chan_ping(k->c, NULL);
	} else {
		chan_cancel(k->c);
		k->st = CHAN_OK;
	}
	snprintf(k->why, sizeof(k->why), "%s", why(k->st));
	__atomic_store_n(&k->done, 1, __ATOMIC_SEQ_CST);
	return (NULL);
}

static void
stall_start(stall_call *k, chan_client *c, int kind, const void *buf, size_t len)
{
	memset(k, 0, sizeof(*k));
	k->c = c;
	k->kind = kind;
	k->buf = buf;
	k->len = len;
	ck_assert_int_eq(pthread_create(&k->th, NULL, stall_main, k), 0);
}

static bool
stall_finish(stall_call *k, int64_t deadline)
{
	while (!__atomic_load_n(&k->done, __ATOMIC_SEQ_CST)) {
		if (chh_now_ms() >= deadline) {
			return (false);
		}
		usleep(2 * 1000);
	}
	pthread_join(k->th, NULL);
	return (true);
}

/*
 * The daemon stops reading (SIGSTOP) while a thread sends a message
 * larger than the socket's buffers (it cannot be written whole) and
 * another pings on the same client. chan_cancel must return at once
 * and both calls with it, UNAVAILABLE "cancelled" (chan.h: "every call in
 * progress on c ... returns CHAN_UNAVAILABLE at once").
 */
START_TEST(cancel_while_daemon_stalled)
{
	chan_client *c = connect_ok();
	stall_call   snd, png, cx;
	uint8_t     *buf;
	size_t       len = (size_t) chan_max_message_size(c);
	int64_t      deadline;
	bool         ok;

	buf = calloc(1, len);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(kill(D.pid, SIGSTOP), 0);
	stall_start(&snd, c, 0, buf, len);
	usleep(200 * 1000);
	stall_start(&png, c, 1, NULL, 0);
	usleep(200 * 1000);
	stall_start(&cx, c, 2, NULL, 0);
	deadline = chh_now_ms() + chh_scaled_ms(2000);
	ok = stall_finish(&cx, deadline);
	if (!ok) {
		kill(D.pid, SIGCONT);
		ck_abort_msg("chan_cancel did not return within 2 s (the daemon stopped, a %zu-byte "
		    "send and a ping in progress)", len);
	}
	ok = stall_finish(&snd, deadline) && stall_finish(&png, deadline);
	kill(D.pid, SIGCONT);
	ck_assert_msg(ok, "after chan_cancel: the send %s, the ping %s within 2 s",
	    __atomic_load_n(&snd.done, __ATOMIC_SEQ_CST) ? "returned" : "did not return",
	    __atomic_load_n(&png.done, __ATOMIC_SEQ_CST) ? "returned" : "did not return");
	ck_assert_msg(snd.st == CHAN_UNAVAILABLE && strstr(snd.why, "cancel") != NULL,
	    "the send: %s (%s)", chan_status_name(snd.st), snd.why);
	ck_assert_msg(png.st == CHAN_UNAVAILABLE && strstr(png.why, "cancel") != NULL,
	    "the ping: %s (%s)", chan_status_name(png.st), png.why);
	chan_disconnect(c);
	free(buf);
	chh_assert_alive(&D);
}
END_TEST

/*
 * chan_cancel while the daemon is gone (SIGKILL, not restarted): the
 * parked receive lost its connection and is redialling (no local timeout:
 * it waits for a daemon). chan_cancel ends it at once, "cancelled".
 */
START_TEST(cancel_while_redialling)
{
	chh_daemon   d;
	char         url[192];
	const char  *args[] = { "--listen", url, NULL };
	chan_client *c, *w;
	job          a;
	int64_t      t0;

	snprintf(url, sizeof(url), "ipc://%s/r.sock", own_dir);
	chh_start(&d, args);
	ck_status(chan_connect(url, &c), CHAN_OK);
	job_start(&a, c, "cr", JOB_RECV, CHAN_WAIT_FOREVER);
	ck_status(chan_connect(url, &w), CHAN_OK);
	wait_blocked_receivers(w, "cr", 1);
	chan_disconnect(w);
	chh_kill(&d);
	usleep(400 * 1000); /* a few failed redials */
	ck_assert_msg(!job_is_done(&a), "the receive returned %s (%s) with the daemon gone",
	    chan_status_name(a.st), a.why);
	t0 = chh_now_ms();
	chan_cancel(c);
	ck_assert_msg(job_finish(&a, chh_scaled_ms(2000)), "the redialling receive did not "
	    "return within 2 s of chan_cancel");
	ck_assert_msg(a.st == CHAN_UNAVAILABLE && strstr(a.why, "cancel") != NULL,
	    "the receive after chan_cancel: %s (%s) after %lld ms", chan_status_name(a.st),
	    a.why, (long long) (a.t_end - t0));
	chan_disconnect(c);
	own_dir_clean(false);
}
END_TEST

static Suite *
lane_suite(void)
{
	Suite *s = suite_create("lane");
	TCase *tc;

	tc = tcase_create("calls");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, multiplex_under_parked_recv);
	tcase_add_loop_test(tc, reader_hand_over, 0, 2);
	tcase_add_test(tc, connections_held);
	tcase_add_test(tc, cancel_parked_calls);
	tcase_add_test(tc, mixed_sync_async_confirmed);
	tcase_add_test(tc, cancel_while_daemon_stalled);
	suite_add_tcase(s, tc);

	tc = tcase_create("connection");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, restart_under_parked_recv, 0, 2);
	tcase_add_test(tc, cancel_while_redialling);
	tcase_add_test(tc, peer_hangs_up_every_request);
	tcase_add_test(tc, connect_to_non_sp_peer);
	tcase_add_test(tc, tcp_round_trip);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	return (own_dir_run("lane", lane_suite()));
}
