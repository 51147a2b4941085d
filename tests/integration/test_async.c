/*
 * test_async.c - libchan's async calls (chan_aio, issue 4) against a real
 * chand: many calls in flight from one thread on one client, no thread per
 * call, parked receives completed by later sends, cancel (one call, the
 * whole client, chan_aio_free, chan_disconnect) with the messages a
 * cancelled receive would have taken kept by the daemon, callbacks run
 * exactly once on a libchan thread, timeouts and errors reported through
 * chan_aio_result / chan_aio_error.
 *
 * Every test gets its own chand (checked fixture). Callbacks never call
 * check's assertions: they count, the test thread asserts.
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <chan/chan.h>

#include "harness.h"
#include "libchan_check.h"

/* Asserts a finished async call's status, with its message. */
#define ck_aio_status(a, want)                                                \
	do {                                                                  \
		chan_status got_ = chan_aio_result(a);                        \
		ck_assert_msg(got_ == (want), "aio: %s (%s), expected %s",    \
		    chan_status_name(got_), chan_aio_error(a),                \
		    chan_status_name(want));                                  \
	} while (0)

/* Asserts an atomic counter's value, printing it. */
#define ck_count(var, want)                                                   \
	do {                                                                  \
		int got_ = atomic_load(&(var));                               \
		ck_assert_msg(got_ == (want), "%s is %d, expected %d", #var,  \
		    got_, (int) (want));                                      \
	} while (0)

/* What a callback saw: how often it ran and on which thread. */
typedef struct cb_count {
	atomic_int calls;
	atomic_int on_caller;  /* runs on the thread that started the call */
	pthread_t  caller;
} cb_count;

static void
count_cb(chan_aio *a, void *arg)
{
	cb_count *k = arg;

	(void) a;
	if (pthread_equal(pthread_self(), k->caller)) {
		atomic_fetch_add(&k->on_caller, 1);
	}
	atomic_fetch_add(&k->calls, 1);
}

/* One counter per aio, all started by this thread. */
static cb_count *
counts_new(size_t n)
{
	cb_count *k = calloc(n, sizeof(*k));
	size_t    i;

	ck_assert_ptr_nonnull(k);
	for (i = 0; i < n; i++) {
		atomic_init(&k[i].calls, 0);
		atomic_init(&k[i].on_caller, 0);
		k[i].caller = pthread_self();
	}
	return (k);
}

static chan_aio *
aio_new(cb_count *k)
{
	chan_aio *a = NULL;

	ck_status(chan_aio_alloc(&a, k != NULL ? count_cb : NULL, k), CHAN_OK);
	ck_assert_ptr_nonnull(a);
	return (a);
}

/* ---- many adds in one request (CounterAdd.deltas) ----------------------- */

/* Requests the daemon has served so far (chan_stats counts itself too). */
static uint64_t
served(chan_client *c)
{
	chan_stats_info si;

	ck_status(chan_stats(c, &si), CHAN_OK);
	return (si.requests);
}

START_TEST(counter_add_n_sync)
{
	chan_client *c = connect_ok();
	int64_t      d[] = { 1, 2, 3, -10 };
	int64_t      v[4] = { 0 }, got;
	int64_t     *big, *bv;
	size_t       nb = (size_t) chan_max_batch(c) + 5, i;
	uint64_t     before;

	before = served(c);
	ck_status(chan_counter_add_n(c, "many", d, 4, v), CHAN_OK);
	/* one request for the four adds (plus the stats call itself) */
	ck_assert_uint_eq(served(c) - before, 2);
	ck_assert_int_eq(v[0], 1);
	ck_assert_int_eq(v[1], 3);
	ck_assert_int_eq(v[2], 6);
	ck_assert_int_eq(v[3], -4);
	ck_status(chan_counter_add_n(c, "many", d, 2, NULL), CHAN_OK);
	ck_status(chan_counter_get(c, "many", &got), CHAN_OK);
	ck_assert_int_eq(got, -1);
	ck_status(chan_counter_add_n(c, "many", d, 0, v), CHAN_INVALID_ARGUMENT);
	ck_status(chan_counter_add_n(c, "many", NULL, 3, v), CHAN_INVALID_ARGUMENT);
	ck_status(chan_counter_add_n(c, "bad name", d, 3, v), CHAN_INVALID_ARGUMENT);
	/* all or nothing: the third add overflows, nothing moves */
	ck_status(chan_counter_set(c, "edge", INT64_MAX - 3, NULL), CHAN_OK);
	ck_status(chan_counter_add_n(c, "edge", d, 3, v), CHAN_OUT_OF_RANGE);
	ck_assert_ptr_nonnull(strstr(chan_last_error(c), "add 3 of 3"));
	ck_status(chan_counter_get(c, "edge", &got), CHAN_OK);
	ck_assert_int_eq(got, INT64_MAX - 3);
	/* more than max_batch: split in order, every value right */
	big = calloc(nb, sizeof(*big));
	bv = calloc(nb, sizeof(*bv));
	ck_assert(big != NULL && bv != NULL);
	for (i = 0; i < nb; i++) {
		big[i] = 2;
	}
	before = served(c);
	ck_status(chan_counter_add_n(c, "split", big, nb, bv), CHAN_OK);
	ck_assert_uint_eq(served(c) - before, 3);
	for (i = 0; i < nb; i++) {
		ck_assert_int_eq(bv[i], 2 * (int64_t) (i + 1));
	}
	free(big);
	free(bv);
	chan_disconnect(c);
}
END_TEST

START_TEST(counter_add_n_aio)
{
	chan_client   *c = connect_ok();
	cb_count      *k = counts_new(2);
	chan_aio      *a = aio_new(&k[0]);
	int64_t        d[] = { 5, 5, -1 };
	int64_t       *big;
	const int64_t *vals;
	size_t         n = 99, nb = (size_t) chan_max_batch(c) + 1;

	chan_counter_add_n_aio(c, "am", d, 3, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_OK);
	ck_count(k[0].calls, 1);
	ck_count(k[0].on_caller, 0);
	vals = chan_aio_values(a, &n);
	ck_assert_uint_eq(n, 3);
	ck_assert_int_eq(vals[0], 5);
	ck_assert_int_eq(vals[1], 10);
	ck_assert_int_eq(vals[2], 9);
	ck_assert_int_eq(chan_aio_value(a), 9);
	/* the same aio again: values of the new call */
	chan_counter_add_n_aio(c, "am", d + 2, 1, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_OK);
	vals = chan_aio_values(a, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(vals[0], 8);
	/* one request only: more than max_batch is refused, not split */
	big = calloc(nb, sizeof(*big));
	ck_assert_ptr_nonnull(big);
	chan_counter_add_n_aio(c, "am", big, nb, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_INVALID_ARGUMENT);
	ck_assert_ptr_null(chan_aio_values(a, &n));
	ck_assert_uint_eq(n, 0);
	chan_counter_add_n_aio(c, "am", d, 0, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_INVALID_ARGUMENT);
	ck_status(chan_counter_set(c, "edge", INT64_MAX - 9, NULL), CHAN_OK);
	chan_counter_add_n_aio(c, "edge", d, 3, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_OUT_OF_RANGE);
	ck_assert_ptr_null(chan_aio_values(a, NULL));
	free(big);
	chan_aio_free(a);
	free(k);
	chan_disconnect(c);
}
END_TEST

/* CHAN_COUNTER_ADD_MANY=0: what libchan does against an older daemon. */
START_TEST(counter_add_n_one_by_one)
{
	chan_client   *c = connect_ok();
	chan_aio      *a = aio_new(NULL);
	int64_t        d[] = { 1, 2, 3, 4 };
	int64_t        v[4];
	const int64_t *vals;
	size_t         n = 0;
	uint64_t       before;

	ck_assert_int_eq(setenv("CHAN_COUNTER_ADD_MANY", "0", 1), 0);
	before = served(c);
	ck_status(chan_counter_add_n(c, "obo", d, 4, v), CHAN_OK);
	ck_assert_uint_eq(served(c) - before, 5); /* four adds and the stats */
	ck_assert_int_eq(v[0], 1);
	ck_assert_int_eq(v[3], 10);
	before = served(c);
	chan_counter_add_n_aio(c, "obo", d, 4, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_OK);
	ck_assert_uint_eq(served(c) - before, 5);
	vals = chan_aio_values(a, &n);
	ck_assert_uint_eq(n, 4);
	ck_assert_int_eq(vals[0], 11);
	ck_assert_int_eq(vals[1], 13);
	ck_assert_int_eq(vals[2], 16);
	ck_assert_int_eq(vals[3], 20);
	ck_assert_int_eq(chan_aio_value(a), 20);
	ck_assert_int_eq(unsetenv("CHAN_COUNTER_ADD_MANY"), 0);
	chan_aio_free(a);
	chan_disconnect(c);
}
END_TEST

/* Waits (up to 5 s, scaled) until the channel has n parked receivers. */
static void
wait_parked_receivers(chan_client *c, const char *name, uint32_t n)
{
	int64_t        end = chh_now_ms() + chh_scaled_ms(5000);
	chan_stat_info si;

	for (;;) {
		/* The receive may not have reached the daemon (and created the channel) yet. */
		chan_status st = chan_stat(c, name, &si);

		ck_assert_msg(st == CHAN_OK || st == CHAN_NOT_FOUND, "stat %s: %s", name,
		    chan_status_name(st));
		if (st == CHAN_OK && si.blocked_receivers >= n) {
			return;
		}
		ck_assert_msg(chh_now_ms() < end, "%s: %u receivers parked, expected %u", name,
		    st == CHAN_OK ? si.blocked_receivers : 0, n);
		usleep(5 * 1000);
	}
}

/* Asserts a finished receive got exactly one message with payload want. */
static void
aio_got(chan_aio *a, const char *want)
{
	chan_msg *m;

	ck_aio_status(a, CHAN_OK);
	ck_assert_uint_eq(chan_aio_count(a), 1);
	m = chan_aio_take_msg(a, 0);
	ck_assert_ptr_nonnull(m);
	ck_assert_ptr_null(chan_aio_take_msg(a, 0));
	ck_assert_msg(chan_msg_len(m) == strlen(want) &&
	    memcmp(chan_msg_data(m), want, strlen(want)) == 0,
	    "got '%.*s', expected '%s'", (int) chan_msg_len(m),
	    (const char *) chan_msg_data(m), want);
	chan_msg_free(m);
}

/* ---- many in flight ------------------------------------------------------ */

#define NADD 256

START_TEST(counter_adds_in_flight)
{
	chan_client *c = connect_ok();
	chan_aio    *a[NADD];
	cb_count    *k = counts_new(NADD);
	bool         seen[NADD + 1] = { false };
	int64_t      v;
	int          i;

	/* All started before any is waited for: 256 in flight from one thread. */
	for (i = 0; i < NADD; i++) {
		a[i] = aio_new(&k[i]);
		chan_counter_add_aio(c, "adds", 1, a[i]);
	}
	for (i = 0; i < NADD; i++) {
		chan_aio_wait(a[i]);
		ck_aio_status(a[i], CHAN_OK);
		v = chan_aio_value(a[i]);
		ck_assert_msg(v >= 1 && v <= NADD && !seen[v], "add %d answered %lld", i,
		    (long long) v);
		seen[v] = true;
		ck_count(k[i].calls, 1);
		ck_count(k[i].on_caller, 0);
	}
	ck_status(chan_counter_get(c, "adds", &v), CHAN_OK);
	ck_assert_int_eq(v, NADD);
	for (i = 0; i < NADD; i++) {
		chan_aio_free(a[i]);
	}
	free(k);
	chan_disconnect(c);
}
END_TEST

#define NPARK 200

START_TEST(no_thread_per_call)
{
	chan_client *c = connect_ok();
	chan_client *s = connect_ok();
	chan_aio    *a[NPARK];
	cb_count    *k = counts_new(NPARK);
	char         name[NPARK][32];
	char         payload[32];
	int          before, during, i;

	/* nng's own threads exist once a client is connected. */
	before = chh_threads(NULL);
	for (i = 0; i < NPARK; i++) {
		snprintf(name[i], sizeof(name[i]), "park.%d", i);
		a[i] = aio_new(&k[i]);
		chan_recv_aio(c, name[i], 1, CHAN_WAIT_FOREVER, a[i]);
	}
	/* Every one of them parked in the daemon, none answered. */
	for (i = 0; i < NPARK; i++) {
		wait_parked_receivers(s, name[i], 1);
	}
	during = chh_threads(NULL);
	for (i = 0; i < NPARK; i++) {
		ck_count(k[i].calls, 0);
	}
	ck_assert_msg(during - before < 40,
	    "%d threads before, %d with %d receives in flight", before, during, NPARK);

	/* Each parked receive is completed by a later send, with its own message. */
	for (i = NPARK - 1; i >= 0; i--) {
		snprintf(payload, sizeof(payload), "m%d", i);
		ck_status(chan_send(s, name[i], payload, strlen(payload), CHAN_WAIT_FOREVER),
		    CHAN_OK);
	}
	for (i = 0; i < NPARK; i++) {
		chan_aio_wait(a[i]);
		snprintf(payload, sizeof(payload), "m%d", i);
		aio_got(a[i], payload);
		ck_count(k[i].calls, 1);
		chan_aio_free(a[i]);
	}
	free(k);
	chan_disconnect(s);
	chan_disconnect(c);
}
END_TEST

START_TEST(parked_recv_completed_by_send)
{
	chan_client   *c = connect_ok();
	chan_client   *s = connect_ok();
	cb_count      *k = counts_new(1);
	chan_aio      *a = aio_new(k);
	const char    *names[] = { "any.a", "any.b" };
	chan_msg      *m;
	chan_stat_info si;

	chan_recv_aio(c, "late", 4, CHAN_WAIT_FOREVER, a);
	wait_parked_receivers(s, "late", 1);
	usleep(50 * 1000);
	ck_count(k->calls, 0);
	ck_status(chan_send(s, "late", "hello", 5, CHAN_WAIT_FOREVER), CHAN_OK);
	chan_aio_wait(a);
	ck_count(k->calls, 1);
	ck_assert_uint_eq(chan_aio_count(a), 1);
	m = chan_aio_take_msg(a, 0);
	ck_assert_str_eq(chan_msg_channel(m), "late");
	ck_assert_uint_eq(chan_msg_seq(m), 1);
	chan_msg_free(m);

	/* The delivery is confirmed with the client's next request. */
	ck_status(chan_ping(c, NULL), CHAN_OK);
	ck_status(chan_stat(s, "late", &si), CHAN_OK);
	ck_assert_uint_eq(si.in_flight, 0);
	ck_assert_uint_eq(si.total_received, 1);

	/* recv_any: the message names its channel. */
	chan_recv_any_aio(c, names, 2, CHAN_WAIT_FOREVER, a);
	wait_parked_receivers(s, "any.b", 1);
	ck_status(chan_send(s, "any.b", "bee", 3, CHAN_WAIT_FOREVER), CHAN_OK);
	chan_aio_wait(a);
	ck_count(k->calls, 2);
	ck_aio_status(a, CHAN_OK);
	m = chan_aio_take_msg(a, 0);
	ck_assert_ptr_nonnull(m);
	ck_assert_str_eq(chan_msg_channel(m), "any.b");
	chan_msg_free(m);

	/* A batch: several messages queued, one receive takes up to max. */
	ck_status(chan_send(s, "batch", "1", 1, 0), CHAN_OK);
	ck_status(chan_send(s, "batch", "2", 1, 0), CHAN_OK);
	ck_status(chan_send(s, "batch", "3", 1, 0), CHAN_OK);
	chan_recv_aio(c, "batch", 2, CHAN_WAIT_FOREVER, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_OK);
	ck_assert_uint_eq(chan_aio_count(a), 2);
	/* Not taken: freed with the next call. */
	chan_recv_aio(c, "batch", 2, CHAN_WAIT_FOREVER, a);
	chan_aio_wait(a);
	aio_got(a, "3");

	/* An async send and its sequence number. */
	{
		chan_buf b[2] = { { "x", 1 }, { "y", 1 } };

		chan_send_aio(c, "seqs", b, 2, CHAN_WAIT_FOREVER, a);
		chan_aio_wait(a);
		ck_aio_status(a, CHAN_OK);
		ck_assert_uint_eq(chan_aio_first_seq(a), 1);
		chan_send_aio(c, "seqs", b, 1, CHAN_WAIT_FOREVER, a);
		chan_aio_wait(a);
		ck_assert_uint_eq(chan_aio_first_seq(a), 3);
	}
	chan_aio_free(a);
	free(k);
	chan_disconnect(s);
	chan_disconnect(c);
}
END_TEST

/* ---- cancel ----------------------------------------------------------------- */

START_TEST(cancel_parked_recv_keeps_message)
{
	chan_client   *c = connect_ok();
	chan_client   *s = connect_ok();
	cb_count      *k = counts_new(1);
	chan_aio      *a = aio_new(k);
	chan_stat_info si;
	chan_msg      *m = NULL;

	chan_recv_aio(c, "cq", 1, CHAN_WAIT_FOREVER, a);
	wait_parked_receivers(s, "cq", 1);
	chan_aio_cancel(a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_UNAVAILABLE);
	ck_assert_str_eq(chan_aio_error(a), "cancelled");
	ck_assert_uint_eq(chan_aio_count(a), 0);
	ck_count(k->calls, 1);
	chan_aio_cancel(a); /* done already: no-op */

	/* Sent after the cancel: the daemon keeps it, in the queue or in custody. */
	ck_status(chan_send(s, "cq", "kept", 4, CHAN_WAIT_FOREVER), CHAN_OK);
	usleep(100 * 1000);
	ck_status(chan_stat(s, "cq", &si), CHAN_OK);
	ck_assert_uint_eq(si.depth + si.in_flight, 1);
	ck_assert_uint_eq(si.total_dropped, 0);

	/* The client is still usable for other calls. */
	ck_status(chan_ping(c, NULL), CHAN_OK);
	chan_aio_free(a);
	ck_count(k->calls, 1);
	chan_disconnect(c);

	/* A later receive gets it (redelivered if the cancelled one had taken it). */
	ck_status(chan_recv(s, "cq", &m, chh_scaled_ms(5000)), CHAN_OK);
	ck_assert_uint_eq(chan_msg_len(m), 4);
	ck_assert_int_eq(memcmp(chan_msg_data(m), "kept", 4), 0);
	chan_msg_free(m);
	free(k);
	chan_disconnect(s);
}
END_TEST

START_TEST(free_in_flight)
{
	chan_client   *c = connect_ok();
	chan_client   *s = connect_ok();
	cb_count      *k = counts_new(2);
	chan_aio      *a = aio_new(&k[0]);
	chan_aio      *w = aio_new(&k[1]);
	chan_msg      *m = NULL;

	chan_recv_aio(c, "fq", 1, CHAN_WAIT_FOREVER, a);
	chan_counter_wait_aio(c, "fc", CHAN_WAIT_GE, 10, CHAN_WAIT_FOREVER, w);
	wait_parked_receivers(s, "fq", 1);
	chan_aio_free(a);
	chan_aio_free(w);
	ck_count(k[0].calls, 1);
	ck_count(k[1].calls, 1);

	/* The client goes on; what the freed receive would have taken is not lost. */
	ck_status(chan_send(s, "fq", "after", 5, CHAN_WAIT_FOREVER), CHAN_OK);
	ck_status(chan_counter_add(c, "fc", 10, NULL), CHAN_OK);
	chan_disconnect(c);
	ck_status(chan_recv(s, "fq", &m, chh_scaled_ms(5000)), CHAN_OK);
	ck_assert_int_eq(memcmp(chan_msg_data(m), "after", 5), 0);
	chan_msg_free(m);

	/* Freeing one whose messages were never taken (leak check under ASan). */
	a = aio_new(NULL);
	ck_status(chan_send(s, "fq", "left", 4, CHAN_WAIT_FOREVER), CHAN_OK);
	chan_recv_aio(s, "fq", 1, CHAN_WAIT_FOREVER, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_OK);
	chan_aio_free(a);
	chan_aio_free(NULL);
	free(k);
	chan_disconnect(s);
}
END_TEST

#define NCANCEL 16

START_TEST(client_cancel_ends_async_calls)
{
	chan_client *c = connect_ok();
	chan_client *s = connect_ok();
	chan_aio    *a[NCANCEL];
	cb_count    *k = counts_new(NCANCEL + 1);
	chan_aio    *late;
	int          i;

	for (i = 0; i < NCANCEL; i++) {
		a[i] = aio_new(&k[i]);
		if (i % 2 == 0) {
			chan_recv_aio(c, "cc", 1, CHAN_WAIT_FOREVER, a[i]);
		} else {
			chan_counter_wait_aio(c, "ccw", CHAN_WAIT_EQ, 1, CHAN_WAIT_FOREVER, a[i]);
		}
	}
	wait_parked_receivers(s, "cc", NCANCEL / 2);
	chan_cancel(c);
	for (i = 0; i < NCANCEL; i++) {
		chan_aio_wait(a[i]);
		ck_aio_status(a[i], CHAN_UNAVAILABLE);
		ck_assert_str_eq(chan_aio_error(a[i]), "cancelled");
		ck_count(k[i].calls, 1);
	}
	/* Later calls on a cancelled client end at once, still through the callback. */
	late = aio_new(&k[NCANCEL]);
	chan_counter_add_aio(c, "x", 1, late);
	chan_aio_wait(late);
	ck_aio_status(late, CHAN_UNAVAILABLE);
	ck_count(k[NCANCEL].calls, 1);
	ck_count(k[NCANCEL].on_caller, 0);
	ck_status(chan_ping(c, NULL), CHAN_UNAVAILABLE);
	chan_aio_free(late);
	for (i = 0; i < NCANCEL; i++) {
		chan_aio_free(a[i]);
	}
	chan_disconnect(c);
	chh_assert_alive(&D);
	ck_status(chan_ping(s, NULL), CHAN_OK);
	free(k);
	chan_disconnect(s);
}
END_TEST

#define NDISC 64

START_TEST(disconnect_with_calls_in_flight)
{
	chan_client *c = connect_ok();
	chan_client *s = connect_ok();
	chan_aio    *a[NDISC];
	cb_count    *k = counts_new(NDISC);
	char         name[32];
	int          i;

	for (i = 0; i < NDISC; i++) {
		a[i] = aio_new(&k[i]);
		snprintf(name, sizeof(name), "dq.%d", i % 8);
		if (i < 8) {
			chan_recv_aio(c, name, 1, CHAN_WAIT_FOREVER, a[i]);
		} else if (i % 2 == 0) {
			chan_counter_wait_aio(c, "dw", CHAN_WAIT_EQ, -1, CHAN_WAIT_FOREVER, a[i]);
		} else {
			chan_counter_add_aio(c, "da", 1, a[i]);
		}
	}
	wait_parked_receivers(s, "dq.7", 1);
	chan_disconnect(c);
	/* Every call ended and ran its callback once before chan_disconnect returned. */
	for (i = 0; i < NDISC; i++) {
		ck_count(k[i].calls, 1);
		if (i < 8 || i % 2 == 0) {
			ck_aio_status(a[i], CHAN_UNAVAILABLE);
		} else {
			ck_assert_msg(chan_aio_result(a[i]) == CHAN_OK ||
			    chan_aio_result(a[i]) == CHAN_UNAVAILABLE, "add: %s",
			    chan_status_name(chan_aio_result(a[i])));
		}
		chan_aio_free(a[i]);
	}
	chh_assert_alive(&D);
	ck_status(chan_ping(s, NULL), CHAN_OK);
	free(k);
	chan_disconnect(s);
}
END_TEST

/* ---- callbacks ------------------------------------------------------------ */

/* A callback that restarts its own aio until n adds are done. */
typedef struct chain {
	chan_client *c;
	atomic_int   calls;
	atomic_int   failures;
	int          left;
	int64_t      last;
} chain;

static void
chain_cb(chan_aio *a, void *arg)
{
	chain *ch = arg;

	atomic_fetch_add(&ch->calls, 1);
	if (chan_aio_result(a) != CHAN_OK) {
		atomic_fetch_add(&ch->failures, 1);
		return;
	}
	ch->last = chan_aio_value(a);
	if (--ch->left > 0) {
		chan_counter_add_aio(ch->c, "chain", 1, a);
	}
}

/* A callback that is slow: chan_aio_wait must not return before it ends. */
static atomic_int slow_done;

static void
slow_cb(chan_aio *a, void *arg)
{
	(void) a;
	(void) arg;
	usleep(100 * 1000);
	atomic_store(&slow_done, 1);
}

/* A callback that makes a sync call on the same client (nng's reader must not wait on it). */
typedef struct sync_in_cb {
	chan_client *c;
	chan_status  st;
	int64_t      v;
} sync_in_cb;

static void
sync_cb(chan_aio *a, void *arg)
{
	sync_in_cb *x = arg;

	(void) a;
	x->st = chan_counter_get(x->c, "sic", &x->v);
}

START_TEST(callback_once_per_call)
{
	chan_client *c = connect_ok();
	chain        ch;
	chan_aio    *a = NULL;
	chan_aio    *b[4];
	cb_count    *k = counts_new(4);
	int          i;

	/* Restarting from the callback: one callback per call, in order. */
	ch.c = c;
	atomic_init(&ch.calls, 0);
	atomic_init(&ch.failures, 0);
	ch.left = 100;
	ch.last = 0;
	ck_status(chan_aio_alloc(&a, chain_cb, &ch), CHAN_OK);
	chan_counter_add_aio(c, "chain", 1, a);
	for (i = 0; i < 500 && atomic_load(&ch.calls) < 100; i++) {
		usleep(10 * 1000);
	}
	chan_aio_wait(a);
	ck_count(ch.calls, 100);
	ck_count(ch.failures, 0);
	ck_assert_int_eq(ch.last, 100);
	chan_aio_free(a);

	/* chan_aio_wait returns after the callback has returned. */
	atomic_init(&slow_done, 0);
	ck_status(chan_aio_alloc(&a, slow_cb, NULL), CHAN_OK);
	chan_counter_add_aio(c, "slow", 1, a);
	chan_aio_wait(a);
	ck_count(slow_done, 1);
	chan_aio_free(a);

	/* A sync call from the callback, on the same client. */
	{
		sync_in_cb x = { c, CHAN_INTERNAL, 0 };

		ck_status(chan_aio_alloc(&a, sync_cb, &x), CHAN_OK);
		chan_counter_add_aio(c, "sic", 7, a);
		chan_aio_wait(a);
		ck_aio_status(a, CHAN_OK);
		ck_status(x.st, CHAN_OK);
		ck_assert_int_eq(x.v, 7);
		chan_aio_free(a);
	}

	/* Calls refused locally still call back once, not on the caller's thread. */
	for (i = 0; i < 4; i++) {
		b[i] = aio_new(&k[i]);
	}
	chan_counter_add_aio(c, "bad name!", 1, b[0]);
	chan_recv_aio(c, "q", 0, 0, b[1]);
	chan_recv_aio(NULL, "q", 1, 0, b[2]);
	chan_send_aio(c, "q", NULL, 0, 0, b[3]);
	for (i = 0; i < 4; i++) {
		chan_aio_wait(b[i]);
		ck_aio_status(b[i], CHAN_INVALID_ARGUMENT);
		ck_assert_msg(chan_aio_error(b[i])[0] != '\0', "call %d: no message", i);
	}
	usleep(100 * 1000);
	for (i = 0; i < 4; i++) {
		ck_count(k[i].calls, 1);
		ck_count(k[i].on_caller, 0);
		chan_aio_free(b[i]);
	}
	free(k);
	chan_disconnect(c);
}
END_TEST

/* ---- timeouts and errors ---------------------------------------------------- */

START_TEST(timeouts)
{
	chan_client *c = connect_ok();
	cb_count    *k = counts_new(1);
	chan_aio    *a = aio_new(k);
	int64_t      t0, dt;

	t0 = chh_now_ms();
	chan_recv_aio(c, "tq", 1, 300, a);
	chan_aio_wait(a);
	dt = chh_now_ms() - t0;
	ck_aio_status(a, CHAN_TIMEOUT);
	ck_assert_msg(dt >= 270 && dt < chh_scaled_ms(5000), "recv timed out after %lld ms",
	    (long long) dt);

	chan_recv_aio(c, "tq", 1, CHAN_NO_WAIT, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_EMPTY);

	t0 = chh_now_ms();
	chan_counter_wait_aio(c, "tw", CHAN_WAIT_GT, 5, 300, a);
	chan_aio_wait(a);
	dt = chh_now_ms() - t0;
	ck_aio_status(a, CHAN_TIMEOUT);
	ck_assert_msg(dt >= 270 && dt < chh_scaled_ms(5000), "wait timed out after %lld ms",
	    (long long) dt);

	/* A bounded channel that is full: send waits for room, then times out. */
	ck_status(chan_create(c, "tb", 1), CHAN_OK);
	ck_status(chan_send(c, "tb", "1", 1, 0), CHAN_OK);
	{
		chan_buf b = { "2", 1 };

		chan_send_aio(c, "tb", &b, 1, CHAN_NO_WAIT, a);
		chan_aio_wait(a);
		ck_aio_status(a, CHAN_FULL);
		t0 = chh_now_ms();
		chan_send_aio(c, "tb", &b, 1, 300, a);
		chan_aio_wait(a);
		dt = chh_now_ms() - t0;
		ck_aio_status(a, CHAN_TIMEOUT);
		ck_assert_msg(dt >= 270 && dt < chh_scaled_ms(5000),
		    "send timed out after %lld ms", (long long) dt);
	}
	ck_count(k->calls, 5);
	chan_aio_free(a);
	free(k);
	chan_disconnect(c);
}
END_TEST

START_TEST(send_errors)
{
	chan_client *c = connect_ok();
	cb_count    *k = counts_new(1);
	chan_aio    *a = aio_new(k);
	size_t       max = (size_t) chan_max_message_size(c);
	char        *big = calloc(1, max + 1);
	chan_buf     b = { big, max + 1 };
	chan_buf     ok = { "m", 1 };

	ck_assert_ptr_nonnull(big);
	chan_send_aio(c, "se", &b, 1, CHAN_WAIT_FOREVER, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_TOO_LARGE);
	ck_assert_ptr_nonnull(strstr(chan_aio_error(a), "maximum"));

	ck_status(chan_create(c, "se", CHAN_UNBOUNDED), CHAN_OK);
	ck_status(chan_close(c, "se"), CHAN_OK);
	chan_send_aio(c, "se", &ok, 1, CHAN_WAIT_FOREVER, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_CLOSED);
	ck_assert_ptr_nonnull(strstr(chan_aio_error(a), "se"));

	chan_counter_add_aio(c, "ovf", INT64_MAX, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_OK);
	chan_counter_add_aio(c, "ovf", 1, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_OUT_OF_RANGE);
	ck_assert_msg(chan_aio_error(a)[0] != '\0', "no message for OUT_OF_RANGE");

	/* A success after failures clears the message. */
	chan_send_aio(c, "se2", &ok, 1, CHAN_WAIT_FOREVER, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_OK);
	ck_assert_str_eq(chan_aio_error(a), "");
	ck_count(k->calls, 5);
	chan_aio_free(a);
	free(big);
	free(k);
	chan_disconnect(c);
}
END_TEST

/* Its own daemon: no auto-create, so a send to a missing channel is NOT_FOUND. */
START_TEST(send_not_found)
{
	chh_daemon         d;
	const char *const  extra[] = { "--no-auto-create", NULL };
	chan_client       *c = NULL;
	chan_aio          *a = aio_new(NULL);
	chan_buf           ok = { "m", 1 };

	chh_start(&d, extra);
	ck_status(chan_connect(d.url, &c), CHAN_OK);
	chan_send_aio(c, "missing", &ok, 1, CHAN_WAIT_FOREVER, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(chan_aio_error(a), "missing"));
	chan_recv_aio(c, "missing", 1, CHAN_NO_WAIT, a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_NOT_FOUND);
	chan_aio_free(a);
	chan_disconnect(c);
	chh_stop(&d);
}
END_TEST

/* ---- reconnection ----------------------------------------------------------- */

/*
 * chand dies (SIGKILL) under a parked async receive and comes back on the
 * same address: the receive is sent again (same request) once nng has
 * reconnected and parks in the new daemon; a call started while no daemon
 * runs waits and is answered by the new one.
 */
START_TEST(survives_daemon_restart)
{
	chh_daemon  d1, d2;
	char        dir[] = "/tmp/chan-async-XXXXXX";
	char        url[128];
	const char *extra[] = { "--listen", url, NULL };
	chan_client *c = NULL, *s = NULL;
	cb_count    *k = counts_new(2);
	chan_aio    *r = aio_new(&k[0]);
	chan_aio    *add = aio_new(&k[1]);
	char         sock[64];

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(sock, sizeof(sock), "%s/r.sock", dir);
	snprintf(url, sizeof(url), "ipc://%s", sock);
	chh_start(&d1, extra);
	ck_status(chan_connect(url, &c), CHAN_OK);
	chan_recv_aio(c, "rs", 1, CHAN_WAIT_FOREVER, r);
	wait_parked_receivers(c, "rs", 1);

	chh_kill(&d1);
	chan_counter_add_aio(c, "rc", 5, add);
	usleep(200 * 1000);
	ck_count(k[0].calls, 0);
	ck_count(k[1].calls, 0);

	chh_start(&d2, extra);
	ck_status(chan_connect(d2.url, &s), CHAN_OK);
	wait_parked_receivers(s, "rs", 1);
	ck_status(chan_send(s, "rs", "again", 5, CHAN_WAIT_FOREVER), CHAN_OK);
	chan_aio_wait(r);
	aio_got(r, "again");
	chan_aio_wait(add);
	ck_aio_status(add, CHAN_OK);
	ck_assert_int_eq(chan_aio_value(add), 5);
	ck_count(k[0].calls, 1);
	ck_count(k[1].calls, 1);

	chan_aio_free(r);
	chan_aio_free(add);
	chan_disconnect(c);
	chan_disconnect(s);
	chh_stop(&d2);
	unlink(sock);
	rmdir(dir);
	free(k);
}
END_TEST

static Suite *
async_suite(void)
{
	Suite *s = suite_create("async");
	TCase *tc;

	tc = tcase_create("in_flight");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, counter_adds_in_flight);
	tcase_add_test(tc, counter_add_n_sync);
	tcase_add_test(tc, counter_add_n_aio);
	tcase_add_test(tc, counter_add_n_one_by_one);
	tcase_add_test(tc, no_thread_per_call);
	tcase_add_test(tc, parked_recv_completed_by_send);
	suite_add_tcase(s, tc);

	tc = tcase_create("cancel");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, cancel_parked_recv_keeps_message);
	tcase_add_test(tc, free_in_flight);
	tcase_add_test(tc, client_cancel_ends_async_calls);
	tcase_add_test(tc, disconnect_with_calls_in_flight);
	suite_add_tcase(s, tc);

	tc = tcase_create("results");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, callback_once_per_call);
	tcase_add_test(tc, timeouts);
	tcase_add_test(tc, send_errors);
	tcase_add_test(tc, send_not_found);
	suite_add_tcase(s, tc);

	tc = tcase_create("reconnect");
	tcase_add_test(tc, survives_daemon_restart);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	int failed;

	signal(SIGPIPE, SIG_IGN);
	failed = chh_run_suite(async_suite());
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
