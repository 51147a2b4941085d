/*
 * test_libchan.c - libchan end to end against a real chand: SPEC's core C
 * API, sender and receiver handles (Rust's Sender / Receiver semantics),
 * rendezvous hand-off, a client shared by threads, counter waits across
 * clients, and a client killed in the middle of a recv.
 *
 * Every test gets its own chand (checked fixture); its teardown asserts
 * the daemon still exits 0 on SIGTERM. Helper threads never call check's
 * assertions: they record results that the test thread asserts.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chan/chan.h>

#include "harness.h"
#include "libchan_check.h"

static void
send_str(chan_client *c, const char *name, const char *s)
{
	ck_status(chan_send(c, name, s, strlen(s), CHAN_WAIT_FOREVER), CHAN_OK);
}

/* Receives one message and asserts its payload. */
static void
recv_is(chan_client *c, const char *name, const char *want, int64_t timeout)
{
	chan_msg *m = NULL;

	ck_status(chan_recv(c, name, &m, timeout), CHAN_OK);
	ck_assert_ptr_nonnull(m);
	ck_assert_msg(chan_msg_len(m) == strlen(want) &&
	    memcmp(chan_msg_data(m), want, strlen(want)) == 0,
	    "recv %s: got '%.*s' (%zu bytes), expected '%s'", name,
	    (int) chan_msg_len(m), (const char *) chan_msg_data(m),
	    chan_msg_len(m), want);
	chan_msg_free(m);
}

/* ---- helper processes ----------------------------------------------------------- */

/* Helper modes (see spawn_helper); never return. */
static void
helper_main(const char *mode, const char *url, const char *name)
{
	chan_client *k = NULL;
	chan_sender *s = NULL;
	chan_msg    *m = NULL;

	if (chan_connect(url, &k) != CHAN_OK) {
		_exit(2);
	}
	if (strcmp(mode, "--helper-recv") == 0) {
		if (write(3, "r", 1) != 1) {
			_exit(3);
		}
		/*
		 * Parks; whatever it gets, it holds on to until killed. The
		 * previous receiver may not be detached yet: BUSY is retried.
		 */
		chan_status st;
		while ((st = chan_recv(k, name, &m, CHAN_WAIT_FOREVER)) ==
		    CHAN_BUSY) {
			usleep(10 * 1000);
		}
		fprintf(stderr, "helper: recv returned %s (%s)\n",
		    chan_status_name(st), chan_last_error(k));
	} else if (strcmp(mode, "--helper-receiver") == 0) {
		chan_receiver *r = NULL;
		if (chan_receiver_open(k, name, &r) != CHAN_OK) {
			_exit(5);
		}
		if (write(3, "r", 1) != 1) {
			_exit(3);
		}
	} else if (strcmp(mode, "--helper-sender") == 0) {
		if (chan_sender_open(k, name, &s) != CHAN_OK ||
		    chan_sender_send(s, "last", 4, 0) != CHAN_OK) {
			_exit(4);
		}
		if (write(3, "r", 1) != 1) {
			_exit(3);
		}
	}
	for (;;) {
		pause();
	}
}

/* ---- SPEC's core API ------------------------------------------------------ */

START_TEST(core_send_recv)
{
	chan_client *c = connect_ok();
	chan_msg    *m = NULL;
	uint64_t     seq1, seq2;
	int64_t      v = 0;
	uint64_t     before = 0, after;

	ck_status(chan_ping(c, NULL), CHAN_OK);
	ck_status(chan_send(c, "core", "one", 3, CHAN_WAIT_FOREVER), CHAN_OK);
	ck_status(chan_send(c, "core", "two", 3, 0), CHAN_OK);
	ck_status(chan_send(c, "core", NULL, 0, 0), CHAN_OK);

	{
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		before = (uint64_t) ts.tv_sec * 1000000u - 60u * 1000000u;
	}
	ck_status(chan_recv(c, "core", &m, CHAN_WAIT_FOREVER), CHAN_OK);
	ck_assert_uint_eq(chan_msg_len(m), 3);
	ck_assert(memcmp(chan_msg_data(m), "one", 3) == 0);
	/* the daemon leaves the name out of plain recv answers; libchan fills it */
	ck_assert_str_eq(chan_msg_channel(m), "core");
	seq1 = chan_msg_seq(m);
	after = chan_msg_time_us(m);
	ck_assert_msg(after > before, "enqueue time %llu is not recent",
	    (unsigned long long) after);
	chan_msg_free(m);
	ck_status(chan_try_recv(c, "core", &m), CHAN_OK);
	ck_assert(memcmp(chan_msg_data(m), "two", 3) == 0);
	seq2 = chan_msg_seq(m);
	ck_assert_msg(seq2 > seq1, "seq %llu then %llu: not increasing",
	    (unsigned long long) seq1, (unsigned long long) seq2);
	chan_msg_free(m);
	ck_status(chan_recv(c, "core", &m, 0), CHAN_OK);
	ck_assert_uint_eq(chan_msg_len(m), 0);
	ck_assert_uint_gt(chan_msg_seq(m), seq2);
	chan_msg_free(m);

	m = NULL;
	ck_status(chan_try_recv(c, "core", &m), CHAN_EMPTY);
	ck_assert_ptr_null(m);
	ck_status(chan_recv(c, "core", &m, 0), CHAN_EMPTY);

	ck_status(chan_counter_add(c, "hits", 1, &v), CHAN_OK);
	ck_assert_int_eq(v, 1);
	ck_status(chan_counter_add(c, "hits", 41, &v), CHAN_OK);
	ck_assert_int_eq(v, 42);
	ck_status(chan_counter_add(c, "hits", -50, &v), CHAN_OK);
	ck_assert_int_eq(v, -8);

	/* Sending to / receiving from a missing channel creates it unbounded. */
	{
		chan_stat_info st;
		ck_status(chan_stat(c, "core", &st), CHAN_OK);
		ck_assert(!st.bounded);
		ck_status(chan_try_recv(c, "fresh", &m), CHAN_EMPTY);
		ck_status(chan_stat(c, "fresh", &st), CHAN_OK);
		ck_assert(!st.bounded);
	}

	ck_assert_ptr_nonnull(chan_strerror(CHAN_TIMEOUT));
	ck_assert_str_ne(chan_strerror(CHAN_TIMEOUT), chan_strerror(CHAN_OK));
	chan_disconnect(c);
}
END_TEST

START_TEST(core_fifo_many)
{
	chan_client *c = connect_ok();
	char         buf[32];

	for (int i = 0; i < 500; i++) {
		snprintf(buf, sizeof(buf), "m%d", i);
		send_str(c, "fifo", buf);
	}
	for (int i = 0; i < 500; i++) {
		snprintf(buf, sizeof(buf), "m%d", i);
		recv_is(c, "fifo", buf, 0);
	}
	chan_disconnect(c);
}
END_TEST

START_TEST(core_timeouts)
{
	chan_client *c = connect_ok();
	chan_msg    *m = NULL;
	int64_t      t0, dt;

	t0 = chh_now_ms();
	ck_status(chan_recv(c, "idle", &m, 200), CHAN_TIMEOUT);
	dt = chh_now_ms() - t0;
	ck_assert_msg(dt >= 180, "TIMEOUT after %lld ms of a 200 ms timeout",
	    (long long) dt);
	ck_assert_msg(dt < chh_scaled_ms(5000), "200 ms timeout took %lld ms",
	    (long long) dt);
	ck_assert_ptr_null(m);

	ck_status(chan_create(c, "tiny", 1), CHAN_OK);
	ck_status(chan_send(c, "tiny", "a", 1, 0), CHAN_OK);
	ck_status(chan_send(c, "tiny", "b", 1, 0), CHAN_FULL);
	t0 = chh_now_ms();
	ck_status(chan_send(c, "tiny", "c", 1, 200), CHAN_TIMEOUT);
	dt = chh_now_ms() - t0;
	ck_assert_msg(dt >= 180, "send TIMEOUT after %lld ms of 200 ms",
	    (long long) dt);
	/* Timed-out and failed sends left nothing. */
	recv_is(c, "tiny", "a", 0);
	ck_status(chan_try_recv(c, "tiny", &m), CHAN_EMPTY);
	chan_disconnect(c);
}
END_TEST

START_TEST(core_url_from_env)
{
	chan_client *c = NULL;

	/* url NULL: $CHAN_URL, then the default. */
	ck_assert_int_eq(setenv("CHAN_URL", D.url, 1), 0);
	ck_status(chan_connect(NULL, &c), CHAN_OK);
	ck_assert_str_eq(chan_url(c), D.url);
	ck_status(chan_ping(c, NULL), CHAN_OK);
	chan_disconnect(c);
	unsetenv("CHAN_URL");
}
END_TEST

START_TEST(core_unavailable)
{
	chan_client *c = NULL;
	char         url[256];
	int64_t      t0 = chh_now_ms();

	snprintf(url, sizeof(url), "ipc://%s/nobody.sock", D.dir);
	ck_status(chan_connect(url, &c), CHAN_UNAVAILABLE);
	ck_assert_ptr_null(c);
	ck_assert_msg(chh_now_ms() - t0 < 10000, "connect to nowhere hung");
	ck_assert_msg(strlen(chan_last_error(NULL)) > 0,
	    "no message for UNAVAILABLE");
}
END_TEST

START_TEST(create_semantics)
{
	chan_client   *c = connect_ok();
	chan_stat_info st;

	ck_status(chan_create(c, "u", CHAN_UNBOUNDED), CHAN_OK);
	ck_status(chan_create(c, "u", CHAN_UNBOUNDED), CHAN_OK);
	ck_status(chan_create(c, "u", 4), CHAN_ALREADY_EXISTS);
	ck_status(chan_create(c, "b", 4), CHAN_OK);
	ck_status(chan_create(c, "b", 4), CHAN_OK);
	ck_status(chan_create(c, "b", 5), CHAN_ALREADY_EXISTS);
	ck_status(chan_create(c, "b", CHAN_RENDEZVOUS), CHAN_ALREADY_EXISTS);
	ck_status(chan_create(c, "r", CHAN_RENDEZVOUS), CHAN_OK);
	ck_status(chan_create(c, "r", CHAN_RENDEZVOUS), CHAN_OK);
	ck_status(chan_create(c, "r", CHAN_UNBOUNDED), CHAN_ALREADY_EXISTS);
	ck_status(chan_create(c, "bad name", 1), CHAN_INVALID_ARGUMENT);
	ck_assert_msg(strstr(chan_last_error(c), "A-Za-z0-9") != NULL,
	    "INVALID_ARGUMENT message '%s' lacks the name rule",
	    chan_last_error(c));

	ck_status(chan_stat(c, "b", &st), CHAN_OK);
	ck_assert_str_eq(st.name, "b");
	ck_assert(st.bounded);
	ck_assert_uint_eq(st.capacity, 4);
	ck_assert_uint_eq(st.depth, 0);
	ck_assert(!st.closed);
	ck_status(chan_stat(c, "u", &st), CHAN_OK);
	ck_assert(!st.bounded);
	ck_status(chan_stat(c, "r", &st), CHAN_OK);
	ck_assert(st.bounded);
	ck_assert_uint_eq(st.capacity, 0);
	ck_status(chan_stat(c, "nope", &st), CHAN_NOT_FOUND);
	chan_disconnect(c);
}
END_TEST

START_TEST(stat_list_stats)
{
	chan_client    *c = connect_ok();
	chan_stat_info  st, *infos = NULL;
	chan_stats_info ss;
	chan_msg       *m;
	size_t          n = 0;
	bool            seen = false;

	send_str(c, "st", "hello");
	send_str(c, "st", "world!");
	ck_status(chan_stat(c, "st", &st), CHAN_OK);
	ck_assert_uint_eq(st.depth, 2);
	ck_assert_uint_eq(st.bytes, 11);
	ck_assert_uint_eq(st.total_sent, 2);
	ck_assert_uint_eq(st.total_received, 0);
	ck_status(chan_recv(c, "st", &m, 0), CHAN_OK);
	chan_msg_free(m);
	ck_status(chan_stat(c, "st", &st), CHAN_OK);
	ck_assert_uint_eq(st.depth, 1);
	ck_assert_uint_eq(st.bytes, 6);
	ck_assert_uint_eq(st.total_received, 1);

	ck_status(chan_list(c, &infos, &n), CHAN_OK);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(infos[i].name, "st") == 0) {
			seen = true;
			ck_assert_uint_eq(infos[i].depth, 1);
		}
	}
	ck_assert_msg(seen, "list of %zu channels lacks 'st'", n);
	chan_list_free(infos);

	ck_status(chan_stats(c, &ss), CHAN_OK);
	ck_assert_uint_ge(ss.channels, 1);
	ck_assert_uint_ge(ss.messages, 1);
	ck_assert_uint_ge(ss.connections, 1);
	ck_assert_uint_ge(ss.requests, 5);
	chan_disconnect(c);
}
END_TEST

START_TEST(recv_n_and_any)
{
	chan_client *c = connect_ok();
	chan_msg    *ms[8], *m = NULL;
	size_t       n = 0;
	const char  *names[] = { "any1", "any2", "any3" };
	chan_buf     bufs[3] = { { "x", 1 }, { "yy", 2 }, { "zzz", 3 } };
	uint64_t     first = 0;

	ck_status(chan_send_batch(c, "batch", bufs, 3, 0, &first), CHAN_OK);
	send_str(c, "batch", "4");
	send_str(c, "batch", "5");
	ck_status(chan_recv_n(c, "batch", 3, ms, &n, 0), CHAN_OK);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(chan_msg_len(ms[2]), 3);
	ck_assert_str_eq(chan_msg_channel(ms[2]), "batch");
	ck_assert_uint_eq(chan_msg_seq(ms[0]), first);
	for (size_t i = 0; i < n; i++) {
		ck_assert_uint_eq(chan_msg_seq(ms[i]), first + i);
		chan_msg_free(ms[i]);
	}
	ck_status(chan_recv_n(c, "batch", 8, ms, &n, 0), CHAN_OK);
	ck_assert_uint_eq(n, 2);
	for (size_t i = 0; i < n; i++) {
		chan_msg_free(ms[i]);
	}
	ck_status(chan_recv_n(c, "batch", 8, ms, &n, 0), CHAN_EMPTY);
	/* Waits only for the first message, not for max of them. */
	{
		int64_t t0;
		send_str(c, "batch", "only");
		t0 = chh_now_ms();
		ck_status(chan_recv_n(c, "batch", 8, ms, &n, 5000), CHAN_OK);
		ck_assert_uint_eq(n, 1);
		ck_assert_msg(chh_now_ms() - t0 < 4000, "recv_n with one "
		    "message waited %lld ms for more",
		    (long long) (chh_now_ms() - t0));
		chan_msg_free(ms[0]);
	}

	send_str(c, "any2", "from2");
	ck_status(chan_recv_any(c, names, 3, &m, 0), CHAN_OK);
	ck_assert_str_eq(chan_msg_channel(m), "any2");
	ck_assert_uint_eq(chan_msg_len(m), 5);
	chan_msg_free(m);
	ck_status(chan_recv_any(c, names, 3, &m, 100), CHAN_TIMEOUT);
	chan_disconnect(c);
}
END_TEST

START_TEST(too_large)
{
	chan_client *c = connect_ok();
	size_t       max = chan_max_message_size(c);
	char        *big;

	ck_assert_uint_eq(max, 1024 * 1024);
	big = calloc(1, max + 1);
	ck_assert_ptr_nonnull(big);
	ck_status(chan_send(c, "big", big, max + 1, 0), CHAN_TOO_LARGE);
	ck_status(chan_send(c, "big", big, max, 0), CHAN_OK);
	free(big);
	chan_disconnect(c);
}
END_TEST

/* ---- close / delete / end of stream ------------------------------------------ */

typedef struct {
	chan_client *c;
	const char  *name;
	int64_t      timeout;
	chan_status  st;
	char         data[64];
	volatile int done;
} recv_job;

static void *
recv_thread(void *arg)
{
	recv_job *j = arg;
	chan_msg *m = NULL;

	j->st = chan_recv(j->c, j->name, &m, j->timeout);
	if (j->st == CHAN_OK) {
		snprintf(j->data, sizeof(j->data), "%.*s",
		    (int) chan_msg_len(m), (const char *) chan_msg_data(m));
		chan_msg_free(m);
	}
	__atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
	return (NULL);
}

typedef struct {
	chan_client *c;
	const char  *name;
	const char  *data;
	int64_t      timeout;
	chan_status  st;
	volatile int done;
} send_job;

static void *
send_thread(void *arg)
{
	send_job *j = arg;

	j->st = chan_send(j->c, j->name, j->data, strlen(j->data), j->timeout);
	__atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
	return (NULL);
}

START_TEST(close_drains_then_closed)
{
	chan_client   *c = connect_ok();
	chan_stat_info st;
	chan_msg      *m;

	send_str(c, "cl", "a");
	send_str(c, "cl", "b");
	ck_status(chan_close(c, "cl"), CHAN_OK);
	ck_status(chan_send(c, "cl", "c", 1, 0), CHAN_CLOSED);
	ck_status(chan_stat(c, "cl", &st), CHAN_OK);
	ck_assert(st.closed);
	ck_assert_uint_eq(st.depth, 2);
	recv_is(c, "cl", "a", 0);
	recv_is(c, "cl", "b", CHAN_WAIT_FOREVER);
	ck_status(chan_recv(c, "cl", &m, CHAN_WAIT_FOREVER), CHAN_CLOSED);
	ck_status(chan_try_recv(c, "cl", &m), CHAN_CLOSED);
	chan_disconnect(c);
}
END_TEST

START_TEST(waiters_woken_by_close_and_delete)
{
	chan_client *c = connect_ok(), *w = connect_ok();
	recv_job     j = { .c = w, .name = "wk", .timeout = CHAN_WAIT_FOREVER };
	pthread_t    t;

	ck_assert_int_eq(pthread_create(&t, NULL, recv_thread, &j), 0);
	wait_blocked_receivers(c, "wk", 1);
	ck_status(chan_close(c, "wk"), CHAN_OK);
	pthread_join(t, NULL);
	ck_assert_msg(j.st == CHAN_CLOSED, "waiter on close got %s",
	    chan_status_name(j.st));

	j = (recv_job) { .c = w, .name = "wk2", .timeout = CHAN_WAIT_FOREVER };
	ck_assert_int_eq(pthread_create(&t, NULL, recv_thread, &j), 0);
	wait_blocked_receivers(c, "wk2", 1);
	ck_status(chan_delete(c, "wk2"), CHAN_OK);
	pthread_join(t, NULL);
	ck_assert_msg(j.st == CHAN_NOT_FOUND, "waiter on delete got %s",
	    chan_status_name(j.st));

	/* Blocked senders are woken too: CLOSED on close, NOT_FOUND on delete. */
	{
		send_job sj = { .c = w, .name = "wk3", .data = "blocked",
			.timeout = CHAN_WAIT_FOREVER };
		chan_stat_info st;
		int k;

		ck_status(chan_create(c, "wk3", 1), CHAN_OK);
		send_str(c, "wk3", "fill");
		ck_assert_int_eq(pthread_create(&t, NULL, send_thread, &sj), 0);
		for (k = 0; k < 500; k++) {
			ck_status(chan_stat(c, "wk3", &st), CHAN_OK);
			if (st.blocked_senders >= 1) {
				break;
			}
			usleep(10 * 1000);
		}
		ck_assert_uint_eq(st.blocked_senders, 1);
		ck_status(chan_close(c, "wk3"), CHAN_OK);
		pthread_join(t, NULL);
		ck_assert_msg(sj.st == CHAN_CLOSED, "blocked sender on close "
		    "got %s", chan_status_name(sj.st));
		/* Nothing of the failed send was stored. */
		recv_is(c, "wk3", "fill", 0);
		{
			chan_msg *none = NULL;
			ck_status(chan_try_recv(c, "wk3", &none), CHAN_CLOSED);
		}

		sj = (send_job) { .c = w, .name = "wk4", .data = "blocked",
			.timeout = CHAN_WAIT_FOREVER };
		ck_status(chan_create(c, "wk4", 1), CHAN_OK);
		send_str(c, "wk4", "fill");
		ck_assert_int_eq(pthread_create(&t, NULL, send_thread, &sj), 0);
		for (k = 0; k < 500; k++) {
			ck_status(chan_stat(c, "wk4", &st), CHAN_OK);
			if (st.blocked_senders >= 1) {
				break;
			}
			usleep(10 * 1000);
		}
		ck_status(chan_delete(c, "wk4"), CHAN_OK);
		pthread_join(t, NULL);
		ck_assert_msg(sj.st == CHAN_NOT_FOUND, "blocked sender on "
		    "delete got %s", chan_status_name(sj.st));
	}
	chan_disconnect(w);
	chan_disconnect(c);
}
END_TEST

START_TEST(sender_drop_closes)
{
	chan_client   *c = connect_ok();
	chan_sender   *s1 = NULL, *s2 = NULL;
	chan_stat_info st;
	chan_msg      *m;

	ck_status(chan_sender_open(c, "sd", &s1), CHAN_OK);
	ck_status(chan_sender_send(s1, "1", 1, 0), CHAN_OK);
	ck_status(chan_sender_clone(s1, &s2), CHAN_OK);
	ck_status(chan_stat(c, "sd", &st), CHAN_OK);
	ck_assert_uint_eq(st.senders, 2);
	ck_status(chan_sender_close(s1), CHAN_OK);
	/* One sender left: still open. */
	ck_status(chan_stat(c, "sd", &st), CHAN_OK);
	ck_assert(!st.closed);
	ck_status(chan_sender_send(s2, "2", 1, 0), CHAN_OK);
	/* One-shot sends register nothing and do not keep it open. */
	send_str(c, "sd", "3");
	ck_status(chan_sender_close(s2), CHAN_OK);
	/* Rust: recv drains, then Err once every Sender is gone. */
	recv_is(c, "sd", "1", 0);
	recv_is(c, "sd", "2", 0);
	recv_is(c, "sd", "3", CHAN_WAIT_FOREVER);
	ck_status(chan_recv(c, "sd", &m, CHAN_WAIT_FOREVER), CHAN_CLOSED);
	chan_disconnect(c);
}
END_TEST

START_TEST(sender_connection_gone_closes)
{
	chan_client *c = connect_ok();
	chan_msg    *m;
	recv_job     j = { .c = c, .name = "sg", .timeout = CHAN_WAIT_FOREVER };
	pthread_t    t;
	pid_t        pid;

	/* The only registered sender lives in a process that gets killed. */
	pid = spawn_helper("--helper-sender", "sg");
	recv_is(c, "sg", "last", 0);
	ck_assert_int_eq(pthread_create(&t, NULL, recv_thread, &j), 0);
	wait_blocked_receivers(c, "sg", 1);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	pthread_join(t, NULL);
	ck_assert_msg(j.st == CHAN_CLOSED,
	    "receiver got %s when the last sender's connection went away",
	    chan_status_name(j.st));
	ck_status(chan_recv(c, "sg", &m, 0), CHAN_CLOSED);
	chan_disconnect(c);
}
END_TEST

START_TEST(plain_channel_not_closed_by_oneshot)
{
	chan_client *c = connect_ok(), *p = connect_ok();
	chan_msg    *m;

	/* A channel that never had registered senders stays open. */
	send_str(p, "os", "x");
	chan_disconnect(p);
	recv_is(c, "os", "x", 0);
	ck_status(chan_recv(c, "os", &m, 100), CHAN_TIMEOUT);
	chan_disconnect(c);
}
END_TEST

START_TEST(receiver_drop_closes_other_way)
{
	chan_client   *c = connect_ok(), *s = connect_ok();
	chan_receiver *r = NULL;
	chan_stat_info st;
	chan_msg      *m;

	ck_status(chan_receiver_open(c, "rd", &r), CHAN_OK);
	send_str(s, "rd", "a");
	send_str(s, "rd", "b");
	send_str(s, "rd", "c");
	ck_status(chan_receiver_recv(r, &m, 0), CHAN_OK);
	chan_msg_free(m);
	ck_status(chan_stat(s, "rd", &st), CHAN_OK);
	ck_assert(st.receiver_attached);
	/* ipc knows the peer: the receiver's pid is ours. */
	ck_assert_msg(st.receiver_pid == (int32_t) getpid(),
	    "stat receiver_pid %d, the receiver is pid %d",
	    (int) st.receiver_pid, (int) getpid());
	ck_status(chan_receiver_close(r), CHAN_OK);
	/* Rust's SendError: sends now fail, queued messages are discarded. */
	ck_status(chan_send(s, "rd", "d", 1, 0), CHAN_CLOSED);
	ck_status(chan_stat(s, "rd", &st), CHAN_OK);
	ck_assert(st.closed);
	ck_assert_uint_eq(st.depth, 0);
	ck_assert_msg(st.total_dropped == 2, "dropped %llu, expected 2",
	    (unsigned long long) st.total_dropped);
	ck_assert(!st.receiver_attached);
	ck_status(chan_recv(s, "rd", &m, 0), CHAN_CLOSED);
	chan_disconnect(s);
	chan_disconnect(c);
}
END_TEST

START_TEST(receiver_busy_and_detach)
{
	chan_client   *a = connect_ok(), *b = connect_ok();
	chan_receiver *ra = NULL, *rb = NULL;
	chan_msg      *m;
	chan_stat_info st;

	ck_status(chan_receiver_open(a, "one", &ra), CHAN_OK);
	/* Single consumer: everyone else is BUSY. */
	ck_status(chan_receiver_open(b, "one", &rb), CHAN_BUSY);
	ck_status(chan_recv(b, "one", &m, 0), CHAN_BUSY);
	ck_status(chan_recv(b, "one", &m, 100), CHAN_BUSY);
	ck_status(chan_receiver_detach(ra), CHAN_OK);
	/* Detached, not dropped: the channel keeps buffering. */
	send_str(b, "one", "kept");
	ck_status(chan_stat(b, "one", &st), CHAN_OK);
	ck_assert(!st.closed);
	ck_assert(!st.receiver_attached);
	ck_status(chan_receiver_open(b, "one", &rb), CHAN_OK);
	ck_status(chan_receiver_recv(rb, &m, 0), CHAN_OK);
	ck_assert(memcmp(chan_msg_data(m), "kept", 4) == 0);
	chan_msg_free(m);
	ck_status(chan_recv(a, "one", &m, 0), CHAN_BUSY);
	ck_status(chan_receiver_detach(rb), CHAN_OK);
	chan_disconnect(b);
	{
		/* A receiver whose connection goes away is detached, not
		 * dropped: its process is killed while attached. */
		pid_t       pid = spawn_helper("--helper-receiver", "one");
		int64_t     deadline = chh_now_ms() + chh_scaled_ms(5000);
		chan_status st2;

		ck_status(chan_recv(a, "one", &m, 0), CHAN_BUSY);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		send_str(a, "one", "after");
		while ((st2 = chan_recv(a, "one", &m, 1000)) == CHAN_BUSY &&
		    chh_now_ms() < deadline) {
			usleep(20 * 1000);
		}
		ck_assert_msg(st2 == CHAN_OK, "recv after the receiver's "
		    "connection went away: %s", chan_status_name(st2));
		ck_assert(memcmp(chan_msg_data(m), "after", 5) == 0);
		chan_msg_free(m);
		ck_status(chan_stat(a, "one", &st), CHAN_OK);
		ck_assert_msg(!st.closed, "a lost receiver connection closed "
		    "the channel");
	}
	chan_disconnect(a);
}
END_TEST

/* ---- threads ------------------------------------------------------------------ */

START_TEST(rendezvous_handoff)
{
	chan_client *c = connect_ok(), *s = connect_ok();
	send_job     j = { .c = s, .name = "rz", .data = "baton",
		    .timeout = CHAN_WAIT_FOREVER };
	pthread_t    t;
	chan_msg    *m;

	ck_status(chan_create(c, "rz", CHAN_RENDEZVOUS), CHAN_OK);
	ck_status(chan_send(c, "rz", "x", 1, 0), CHAN_FULL);
	ck_assert_int_eq(pthread_create(&t, NULL, send_thread, &j), 0);
	usleep(300 * 1000);
	/* sync_channel(0): the send waits for a receiver. */
	ck_assert_msg(!__atomic_load_n(&j.done, __ATOMIC_ACQUIRE),
	    "rendezvous send completed with no receiver (%s)",
	    chan_status_name(j.st));
	ck_status(chan_recv(c, "rz", &m, chh_scaled_ms(5000)), CHAN_OK);
	ck_assert(memcmp(chan_msg_data(m), "baton", 5) == 0);
	chan_msg_free(m);
	pthread_join(t, NULL);
	ck_status(j.st, CHAN_OK);

	/* The other way round: a receiver waits, a sender hands over. */
	{
		recv_job r = { .c = c, .name = "rz",
			.timeout = CHAN_WAIT_FOREVER };
		ck_assert_int_eq(pthread_create(&t, NULL, recv_thread, &r), 0);
		wait_blocked_receivers(s, "rz", 1);
		ck_status(chan_send(s, "rz", "back", 4, chh_scaled_ms(5000)),
		    CHAN_OK);
		pthread_join(t, NULL);
		ck_status(r.st, CHAN_OK);
		ck_assert_str_eq(r.data, "back");
	}
	chan_disconnect(s);
	chan_disconnect(c);
}
END_TEST

START_TEST(blocked_senders_in_arrival_order)
{
	chan_client *c = connect_ok();
	chan_client *sc[3];
	send_job     j[3];
	pthread_t    t[3];
	static const char *data[3] = { "first", "second", "third" };
	chan_stat_info st;

	ck_status(chan_create(c, "order", 1), CHAN_OK);
	send_str(c, "order", "zero");
	for (int i = 0; i < 3; i++) {
		sc[i] = connect_ok();
		j[i] = (send_job) { .c = sc[i], .name = "order",
			.data = data[i], .timeout = CHAN_WAIT_FOREVER };
		ck_assert_int_eq(pthread_create(&t[i], NULL, send_thread,
		    &j[i]), 0);
		/* Let it park before the next one arrives. */
		for (int k = 0; k < 500; k++) {
			ck_status(chan_stat(c, "order", &st), CHAN_OK);
			if (st.blocked_senders >= (uint32_t) i + 1) {
				break;
			}
			usleep(10 * 1000);
		}
		ck_assert_uint_eq(st.blocked_senders, i + 1);
	}
	recv_is(c, "order", "zero", 0);
	recv_is(c, "order", "first", chh_scaled_ms(5000));
	recv_is(c, "order", "second", chh_scaled_ms(5000));
	recv_is(c, "order", "third", chh_scaled_ms(5000));
	for (int i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		ck_status(j[i].st, CHAN_OK);
		chan_disconnect(sc[i]);
	}
	chan_disconnect(c);
}
END_TEST

#define SHARE_THREADS 4
#define SHARE_MSGS    200

typedef struct {
	chan_client *c;
	int          id;
	int          failures;
	chan_status  first_bad;
} share_job;

static void *
share_thread(void *arg)
{
	share_job *j = arg;
	char       buf[32];
	int64_t    v;

	for (int i = 0; i < SHARE_MSGS; i++) {
		chan_status st;
		snprintf(buf, sizeof(buf), "%d:%d", j->id, i);
		st = chan_send(j->c, "shared", buf, strlen(buf),
		    CHAN_WAIT_FOREVER);
		if (st == CHAN_OK) {
			st = chan_counter_add(j->c, "shared", 1, &v);
		}
		if (st != CHAN_OK) {
			j->failures++;
			j->first_bad = st;
		}
	}
	return (NULL);
}

START_TEST(threads_share_client)
{
	chan_client *c = connect_ok(), *r = connect_ok();
	share_job    j[SHARE_THREADS];
	pthread_t    t[SHARE_THREADS];
	int          next[SHARE_THREADS] = { 0 };
	int64_t      v = 0;

	for (int i = 0; i < SHARE_THREADS; i++) {
		j[i] = (share_job) { .c = c, .id = i };
		ck_assert_int_eq(pthread_create(&t[i], NULL, share_thread,
		    &j[i]), 0);
	}
	/* Receive while they send: every message, each thread's in order. */
	for (int n = 0; n < SHARE_THREADS * SHARE_MSGS; n++) {
		chan_msg *m = NULL;
		int       id, seq;
		char      buf[32];

		ck_status(chan_recv(r, "shared", &m, chh_scaled_ms(20000)),
		    CHAN_OK);
		snprintf(buf, sizeof(buf), "%.*s", (int) chan_msg_len(m),
		    (const char *) chan_msg_data(m));
		chan_msg_free(m);
		ck_assert_msg(sscanf(buf, "%d:%d", &id, &seq) == 2 && id >= 0 &&
		    id < SHARE_THREADS, "foreign message '%s'", buf);
		ck_assert_msg(seq == next[id], "thread %d: got #%d, expected "
		    "#%d", id, seq, next[id]);
		next[id]++;
	}
	for (int i = 0; i < SHARE_THREADS; i++) {
		pthread_join(t[i], NULL);
		ck_assert_msg(j[i].failures == 0, "thread %d: %d failures, "
		    "first %s", i, j[i].failures,
		    chan_status_name(j[i].first_bad));
	}
	ck_status(chan_counter_get(r, "shared", &v), CHAN_OK);
	ck_assert_int_eq(v, SHARE_THREADS * SHARE_MSGS);
	chan_disconnect(r);
	chan_disconnect(c);
}
END_TEST

/* ---- counters -------------------------------------------------------------------- */

typedef struct {
	chan_client *c;
	chan_wait_op op;
	int64_t      operand;
	int64_t      timeout;
	int64_t      value;
	chan_status  st;
} wait_job;

static void *
wait_thread(void *arg)
{
	wait_job *j = arg;

	j->st = chan_counter_wait(j->c, "cw", j->op, j->operand, j->timeout,
	    &j->value);
	return (NULL);
}

START_TEST(counter_wait_across_clients)
{
	chan_client *a = connect_ok(), *b = connect_ok(), *b2 = connect_ok();
	wait_job     w1 = { .c = b, .op = CHAN_WAIT_GE, .operand = 3,
		    .timeout = CHAN_WAIT_FOREVER };
	wait_job     w2 = { .c = b2, .op = CHAN_WAIT_EQ, .operand = 3,
		    .timeout = CHAN_WAIT_FOREVER };
	pthread_t    t1, t2;
	int64_t      v;

	ck_status(chan_counter_set(a, "cw", 0, NULL), CHAN_OK);
	ck_assert_int_eq(pthread_create(&t1, NULL, wait_thread, &w1), 0);
	ck_assert_int_eq(pthread_create(&t2, NULL, wait_thread, &w2), 0);
	usleep(200 * 1000);
	ck_status(chan_counter_add(a, "cw", 1, &v), CHAN_OK);
	ck_status(chan_counter_add(a, "cw", 1, &v), CHAN_OK);
	ck_status(chan_counter_add(a, "cw", 1, &v), CHAN_OK);
	ck_assert_int_eq(v, 3);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	ck_status(w1.st, CHAN_OK);
	ck_assert_int_eq(w1.value, 3);
	ck_status(w2.st, CHAN_OK);
	ck_assert_int_eq(w2.value, 3);

	/* Already true: at once. Never true: TIMEOUT. */
	ck_status(chan_counter_wait(b, "cw", CHAN_WAIT_LT, 10, 0, &v), CHAN_OK);
	ck_assert_int_eq(v, 3);
	ck_status(chan_counter_wait(b, "cw", CHAN_WAIT_GT, 10, 150, &v),
	    CHAN_TIMEOUT);
	chan_disconnect(b2);
	chan_disconnect(b);
	chan_disconnect(a);
}
END_TEST

START_TEST(counter_ops)
{
	chan_client       *c = connect_ok();
	int64_t            v = 0, old = 0;
	bool               swapped = true;
	chan_counter_info *infos = NULL;
	size_t             n = 0;

	ck_status(chan_counter_set(c, "k", 10, &old), CHAN_OK);
	ck_status(chan_counter_get(c, "k", &v), CHAN_OK);
	ck_assert_int_eq(v, 10);
	ck_status(chan_counter_set(c, "k", 11, &old), CHAN_OK);
	ck_assert_int_eq(old, 10);
	ck_status(chan_counter_cas(c, "k", 11, 12, &swapped, &v), CHAN_OK);
	ck_assert(swapped);
	ck_assert_int_eq(v, 12);
	ck_status(chan_counter_cas(c, "k", 11, 13, &swapped, &v), CHAN_OK);
	ck_assert(!swapped);
	ck_assert_int_eq(v, 12);

	ck_status(chan_counter_set(c, "max", INT64_MAX, NULL), CHAN_OK);
	ck_status(chan_counter_add(c, "max", 1, &v), CHAN_OUT_OF_RANGE);
	ck_status(chan_counter_get(c, "max", &v), CHAN_OK);
	ck_assert_int_eq(v, INT64_MAX);
	ck_status(chan_counter_set(c, "min", INT64_MIN, NULL), CHAN_OK);
	ck_status(chan_counter_add(c, "min", -1, &v), CHAN_OUT_OF_RANGE);
	ck_status(chan_counter_get(c, "min", &v), CHAN_OK);
	ck_assert_int_eq(v, INT64_MIN);

	ck_status(chan_counter_list(c, &infos, &n), CHAN_OK);
	ck_assert_uint_eq(n, 3);
	chan_counter_list_free(infos);
	ck_status(chan_counter_delete(c, "k"), CHAN_OK);
	ck_status(chan_counter_get(c, "k", &v), CHAN_NOT_FOUND);
	ck_status(chan_counter_add(c, "bad name", 1, &v), CHAN_INVALID_ARGUMENT);
	chan_disconnect(c);
}
END_TEST

/* ---- a client killed in the middle of a recv ------------------------------------ */

START_TEST(client_killed_mid_recv)
{
	chan_client *c = connect_ok();

	for (int round = 0; round < 5; round++) {
		char        want[32];
		chan_msg   *m = NULL;
		chan_status st;
		int64_t     deadline;
		pid_t       pid;

		pid = spawn_helper("--helper-recv", "victim");
		wait_blocked_receivers(c, "victim", 1);
		/*
		 * Kill it and send at once: the message races the daemon
		 * noticing the connection is gone. Either way it must reach
		 * the next receiver.
		 */
		kill(pid, SIGKILL);
		snprintf(want, sizeof(want), "precious-%d", round);
		send_str(c, "victim", want);
		waitpid(pid, NULL, 0);
		deadline = chh_now_ms() + chh_scaled_ms(5000);
		while ((st = chan_recv(c, "victim", &m, chh_scaled_ms(3000))) ==
		    CHAN_BUSY && chh_now_ms() < deadline) {
			usleep(20 * 1000);
		}
		ck_assert_msg(st == CHAN_OK, "round %d: the next receiver got "
		    "%s (%s)", round, chan_status_name(st),
		    chan_last_error(c));
		ck_assert_msg(chan_msg_len(m) == strlen(want) &&
		    memcmp(chan_msg_data(m), want, strlen(want)) == 0,
		    "round %d: got '%.*s', expected '%s'", round,
		    (int) chan_msg_len(m), (const char *) chan_msg_data(m),
		    want);
		chan_msg_free(m);
	}
	chan_disconnect(c);
}
END_TEST

/* ---- tcp -------------------------------------------------------------------------- */

START_TEST(tcp_and_ipc_together)
{
	chh_daemon     d2;
	char           url[64], port[16];
	const char    *args[] = { "--listen", url, NULL };
	chan_client   *t = NULL, *i = NULL;
	chan_receiver *r = NULL;
	chan_stat_info st;

	/* A second daemon listening on ipc and tcp at once. */
	snprintf(port, sizeof(port), "%d", chh_free_tcp_port());
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%s", port);
	chh_start(&d2, args);
	ck_status(chan_connect(url, &t), CHAN_OK);
	ck_status(chan_connect(d2.url, &i), CHAN_OK);
	send_str(t, "both", "over tcp");
	recv_is(i, "both", "over tcp", 0);
	/* tcp does not know the peer's pid: stat says 0 (unknown). */
	ck_status(chan_receiver_open(t, "both", &r), CHAN_OK);
	ck_status(chan_stat(i, "both", &st), CHAN_OK);
	ck_assert(st.receiver_attached);
	ck_assert_msg(st.receiver_pid == 0, "receiver pid %d over tcp, "
	    "expected 0 (unknown)", (int) st.receiver_pid);
	ck_status(chan_receiver_detach(r), CHAN_OK);
	chan_disconnect(i);
	chan_disconnect(t);
	chh_stop(&d2);
}
END_TEST

/* ---- shutdown -------------------------------------------------------------------- */

START_TEST(shutdown_answers_waiters)
{
	chan_client *c = connect_ok(), *w = connect_ok();
	recv_job     j = { .c = w, .name = "sd", .timeout = CHAN_WAIT_FOREVER };
	pthread_t    t;

	ck_assert_int_eq(pthread_create(&t, NULL, recv_thread, &j), 0);
	wait_blocked_receivers(c, "sd", 1);
	chh_stop(&D); /* asserts exit 0 within 5 s */
	pthread_join(t, NULL);
	ck_assert_msg(j.st == CHAN_SHUTTING_DOWN,
	    "waiter at shutdown got %s, expected SHUTTING_DOWN",
	    chan_status_name(j.st));
	chan_disconnect(w);
	chan_disconnect(c);
}
END_TEST

static Suite *
libchan_suite(void)
{
	Suite *s = suite_create("libchan");
	TCase *tc;

	tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, core_send_recv);
	tcase_add_test(tc, core_fifo_many);
	tcase_add_test(tc, core_timeouts);
	tcase_add_test(tc, core_url_from_env);
	tcase_add_test(tc, core_unavailable);
	tcase_add_test(tc, create_semantics);
	tcase_add_test(tc, stat_list_stats);
	tcase_add_test(tc, recv_n_and_any);
	tcase_add_test(tc, too_large);
	suite_add_tcase(s, tc);

	tc = tcase_create("end_of_stream");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, close_drains_then_closed);
	tcase_add_test(tc, waiters_woken_by_close_and_delete);
	tcase_add_test(tc, sender_drop_closes);
	tcase_add_test(tc, sender_connection_gone_closes);
	tcase_add_test(tc, plain_channel_not_closed_by_oneshot);
	tcase_add_test(tc, receiver_drop_closes_other_way);
	tcase_add_test(tc, receiver_busy_and_detach);
	suite_add_tcase(s, tc);

	tc = tcase_create("concurrency");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, rendezvous_handoff);
	tcase_add_test(tc, blocked_senders_in_arrival_order);
	tcase_add_test(tc, threads_share_client);
	tcase_add_test(tc, counter_wait_across_clients);
	tcase_add_test(tc, counter_ops);
	tcase_add_test(tc, client_killed_mid_recv);
	tcase_add_test(tc, tcp_and_ipc_together);
	tcase_add_test(tc, shutdown_answers_waiters);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(int argc, char **argv)
{
	int failed;

	if (argc == 4 && strncmp(argv[1], "--helper-", 9) == 0) {
		helper_main(argv[1], argv[2], argv[3]);
	}
	/* libchan may run threads of its own; SIGPIPE is never wanted. */
	signal(SIGPIPE, SIG_IGN);
	failed = chh_run_suite(libchan_suite());
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
