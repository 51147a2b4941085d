/*
 * test_cancel.c - calls stopped in libchan are withdrawn in chand too
 * (Request.cancel, docs/CLIENT.md "Cancel"): a cancelled receive no longer
 * takes the next message of its channel into an answer nobody reads, nor
 * holds the channel's receiver slot; a cancelled blocked send never lands;
 * the same through chan_cancel (sync calls), chan_aio_free and a
 * consumer's cancel. Each of these failed before chand and libchan knew
 * Cancel (the message sat in custody, in_flight 1, until disconnect).
 *
 * Every test gets its own chand (checked fixture).
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <chan/chan.h>

#include "harness.h"
#include "libchan_check.h"

#define ck_aio_status(a, want)                                                \
	do {                                                                  \
		chan_status got_ = chan_aio_result(a);                        \
		ck_assert_msg(got_ == (want), "aio: %s (%s), expected %s",    \
		    chan_status_name(got_), chan_aio_error(a),                \
		    chan_status_name(want));                                  \
	} while (0)

static chan_aio *
aio_new(void)
{
	chan_aio *a = NULL;

	ck_status(chan_aio_alloc(&a, NULL, NULL), CHAN_OK);
	return (a);
}

/* Waits (5 s, scaled) until name shows these blocked senders and receivers. */
static void
wait_blocked(chan_client *c, const char *name, uint32_t senders, uint32_t receivers)
{
	int64_t        end = chh_now_ms() + chh_scaled_ms(5000);
	chan_stat_info si;

	for (;;) {
		chan_status st = chan_stat(c, name, &si);

		ck_assert_msg(st == CHAN_OK || st == CHAN_NOT_FOUND, "stat %s: %s", name,
		    chan_status_name(st));
		if (st == CHAN_OK && si.blocked_senders == senders &&
		    si.blocked_receivers == receivers) {
			return;
		}
		ck_assert_msg(chh_now_ms() < end,
		    "%s: %u blocked senders, %u receivers; expected %u, %u", name,
		    st == CHAN_OK ? si.blocked_senders : 0,
		    st == CHAN_OK ? si.blocked_receivers : 0, senders, receivers);
		usleep(5 * 1000);
	}
}

static void
msg_is(chan_msg *m, const char *want, bool redelivered)
{
	ck_assert_ptr_nonnull(m);
	ck_assert_msg(chan_msg_len(m) == strlen(want) &&
	    memcmp(chan_msg_data(m), want, strlen(want)) == 0,
	    "got '%.*s', expected '%s'", (int) chan_msg_len(m),
	    (const char *) chan_msg_data(m), want);
	ck_assert_int_eq(chan_msg_redelivered(m), redelivered);
}

/* ---- the select / race pattern ---------------------------------------------- */

START_TEST(race_two_recvs_cancel_the_loser)
{
	chan_client   *c = connect_ok();
	chan_client   *s = connect_ok();
	chan_aio      *a = aio_new(), *b = aio_new();
	chan_msg      *m = NULL;
	chan_stat_info si;
	int64_t        t0;

	/* Race a receive on ra against one on rb. */
	chan_recv_aio(c, "ra", 1, CHAN_WAIT_FOREVER, a);
	chan_recv_aio(c, "rb", 1, CHAN_WAIT_FOREVER, b);
	wait_blocked(s, "ra", 0, 1);
	wait_blocked(s, "rb", 0, 1);
	ck_status(chan_send(s, "ra", "win", 3, CHAN_WAIT_FOREVER), CHAN_OK);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_OK);
	m = chan_aio_take_msg(a, 0);
	msg_is(m, "win", false);
	chan_msg_free(m);
	/* ra won: the loser is cancelled. */
	chan_aio_cancel(b);
	chan_aio_wait(b);
	ck_aio_status(b, CHAN_UNAVAILABLE);
	ck_assert_str_eq(chan_aio_error(b), "cancelled");

	/* The daemon drops the loser (chan_aio_cancel does not wait for
	 * that: a message sent in between would be taken by it and given
	 * back at once, marked redelivered). */
	wait_blocked(s, "rb", 0, 0);
	/* The next message of rb goes to the next receive of the same client. */
	ck_status(chan_send(s, "rb", "next", 4, CHAN_WAIT_FOREVER), CHAN_OK);
	t0 = chh_now_ms();
	ck_status(chan_recv(c, "rb", &m, chh_scaled_ms(3000)), CHAN_OK);
	ck_assert_msg(chh_now_ms() - t0 < chh_scaled_ms(2500), "the recv waited %lld ms",
	    (long long) (chh_now_ms() - t0));
	msg_is(m, "next", false); /* never handed to the dead receive */
	chan_msg_free(m);
	/* Nothing is left in custody (the stat carries the confirmation). */
	ck_status(chan_stat(c, "rb", &si), CHAN_OK);
	ck_assert_uint_eq(si.in_flight, 0);
	ck_assert_uint_eq(si.depth, 0);
	ck_assert_uint_eq(si.total_redelivered, 0);
	ck_assert_uint_eq(si.blocked_receivers, 0);

	/* Again without waiting for the daemon: whether the dead receive
	 * took the message first or not, it comes promptly (redelivered in
	 * the first case) and nothing stays in custody. */
	chan_recv_aio(c, "rb", 1, CHAN_WAIT_FOREVER, b);
	wait_blocked(s, "rb", 0, 1);
	chan_aio_cancel(b);
	ck_status(chan_send(s, "rb", "again", 5, CHAN_WAIT_FOREVER), CHAN_OK);
	chan_aio_wait(b);
	ck_status(chan_recv(c, "rb", &m, chh_scaled_ms(3000)), CHAN_OK);
	msg_is(m, "again", chan_msg_redelivered(m));
	chan_msg_free(m);
	ck_status(chan_stat(c, "rb", &si), CHAN_OK);
	ck_assert_uint_eq(si.in_flight, 0);
	ck_assert_uint_eq(si.depth, 0);
	chan_aio_free(a);
	chan_aio_free(b);
	chan_disconnect(c);
	chan_disconnect(s);
}
END_TEST

/* A cancelled receive no longer holds the channel: another client is not BUSY. */
START_TEST(cancelled_recv_frees_the_receiver_slot)
{
	chan_client *c = connect_ok();
	chan_client *s = connect_ok();
	chan_aio    *a = aio_new();
	chan_msg    *m = NULL;

	chan_recv_aio(c, "slot", 1, CHAN_WAIT_FOREVER, a);
	wait_blocked(s, "slot", 0, 1);
	chan_aio_free(a); /* cancels and waits */
	wait_blocked(s, "slot", 0, 0);
	ck_status(chan_try_recv(s, "slot", &m), CHAN_EMPTY);
	ck_status(chan_send(s, "slot", "x", 1, CHAN_WAIT_FOREVER), CHAN_OK);
	ck_status(chan_try_recv(s, "slot", &m), CHAN_OK);
	msg_is(m, "x", false);
	chan_msg_free(m);
	chan_disconnect(c);
	chan_disconnect(s);
}
END_TEST

/* ---- sync calls ended by chan_cancel -------------------------------------------- */

typedef struct blocked_recv {
	chan_client *c;
	const char  *name;
	chan_status  st;
} blocked_recv;

static void *
blocked_recv_main(void *arg)
{
	blocked_recv *br = arg;
	chan_msg     *m = NULL;

	br->st = chan_recv(br->c, br->name, &m, CHAN_WAIT_FOREVER);
	chan_msg_free(m);
	return (NULL);
}

START_TEST(client_cancel_withdraws_sync_recv)
{
	chan_client   *c = connect_ok();
	chan_client   *s = connect_ok();
	blocked_recv   br = { c, "sync", CHAN_OK };
	pthread_t      th;
	chan_msg      *m = NULL;
	chan_stat_info si;

	ck_assert_int_eq(pthread_create(&th, NULL, blocked_recv_main, &br), 0);
	wait_blocked(s, "sync", 0, 1);
	chan_cancel(c);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert_int_eq(br.st, CHAN_UNAVAILABLE);
	wait_blocked(s, "sync", 0, 0);
	/* c is still connected: its cancelled receive takes nothing. */
	ck_status(chan_send(s, "sync", "kept", 4, CHAN_WAIT_FOREVER), CHAN_OK);
	ck_status(chan_stat(s, "sync", &si), CHAN_OK);
	ck_assert_uint_eq(si.depth, 1);
	ck_assert_uint_eq(si.in_flight, 0);
	ck_status(chan_recv(s, "sync", &m, chh_scaled_ms(3000)), CHAN_OK);
	msg_is(m, "kept", false);
	chan_msg_free(m);
	chan_disconnect(c);
	chan_disconnect(s);
}
END_TEST

/* ---- sends ------------------------------------------------------------------- */

START_TEST(cancelled_blocked_send_never_lands)
{
	chan_client   *c = connect_ok();
	chan_client   *s = connect_ok();
	chan_aio      *a = aio_new();
	chan_msg      *m = NULL;
	chan_buf       buf = { "late", 4 };
	chan_stat_info si;

	ck_status(chan_create(s, "bs", 1), CHAN_OK);
	ck_status(chan_send(s, "bs", "first", 5, CHAN_WAIT_FOREVER), CHAN_OK);
	chan_send_aio(c, "bs", &buf, 1, CHAN_WAIT_FOREVER, a);
	wait_blocked(s, "bs", 1, 0);
	chan_aio_cancel(a);
	chan_aio_wait(a);
	ck_aio_status(a, CHAN_UNAVAILABLE);
	wait_blocked(s, "bs", 0, 0);
	/* Room appears: the withdrawn batch does not take it. */
	ck_status(chan_recv(s, "bs", &m, chh_scaled_ms(3000)), CHAN_OK);
	msg_is(m, "first", false);
	chan_msg_free(m);
	usleep(50 * 1000);
	ck_status(chan_stat(s, "bs", &si), CHAN_OK);
	ck_assert_uint_eq(si.depth, 0);
	ck_assert_uint_eq(si.total_sent, 1);
	ck_status(chan_try_recv(s, "bs", &m), CHAN_EMPTY);
	chan_aio_free(a);
	chan_disconnect(c);
	chan_disconnect(s);
}
END_TEST

/* ---- the prefetching consumer ----------------------------------------------------- */

START_TEST(consumer_cancel_withdraws_its_fetch)
{
	chan_client       *c = connect_ok();
	chan_client       *s = connect_ok();
	chan_consumer     *k = NULL;
	chan_consumer_opts o;
	chan_msg          *m = NULL;

	chan_consumer_opts_init(&o);
	o.prefetch = 4;
	ck_status(chan_send(s, "kc", "one", 3, CHAN_WAIT_FOREVER), CHAN_OK);
	ck_status(chan_consumer_open(c, "kc", &o, &k), CHAN_OK);
	ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(3000)), CHAN_OK);
	msg_is(m, "one", false);
	chan_msg_free(m);
	/* It now fetches ahead in the background, parked on the empty channel. */
	wait_blocked(s, "kc", 0, 1);
	chan_consumer_cancel(k);
	wait_blocked(s, "kc", 0, 0);
	ck_status(chan_try_recv(s, "kc", &m), CHAN_EMPTY); /* not BUSY */
	chan_consumer_close(k);
	chan_disconnect(c);
	chan_disconnect(s);
}
END_TEST

static Suite *
cancel_suite(void)
{
	Suite *s = suite_create("cancel");
	TCase *tc = tcase_create("cancel");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, race_two_recvs_cancel_the_loser);
	tcase_add_test(tc, cancelled_recv_frees_the_receiver_slot);
	tcase_add_test(tc, client_cancel_withdraws_sync_recv);
	tcase_add_test(tc, cancelled_blocked_send_never_lands);
	tcase_add_test(tc, consumer_cancel_withdraws_its_fetch);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	int failed;

	signal(SIGPIPE, SIG_IGN);
	failed = chh_run_suite(cancel_suite());
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
