/*
 * test_threads.c - chan_nng_threads (<chan/threads.h>, libchan_threads.a):
 * nng really starts the task threads asked for, a call after nng started
 * says so and changes nothing, bad counts are refused without starting
 * nng, and libchan works on the threads it got.
 *
 * Each check test runs in its own forked process, where nng has not
 * started yet (the runner itself never uses nng); the daemon is started
 * only after the call, since starting it uses nng in this process.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <chan/chan.h>
#include <chan/threads.h>

#include "harness.h"
#include "libchan_check.h" /* ck_status, D, connect_ok; not its fixture */

/*
 * The nng:task threads once they have named themselves (each does so when
 * it first runs, which may be after nng's start returned): waits up to 5 s
 * (scaled) for want, then returns what there is.
 */
static int
nng_task_threads_settled(int want)
{
	int64_t end = chh_now_ms() + chh_scaled_ms(5000);
	int     n;

	while ((n = chh_threads("nng:task")) != want && chh_now_ms() < end) {
		usleep(2000);
	}
	return (n);
}

/* nng's own count: two per CPU, at most 16. */
static int
nng_default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN) * 2;

	return (n > 16 ? 16 : (int) n);
}

/* One message through a real chand on the threads nng has now. */
static void
round_trip(void)
{
	chan_client *c;
	chan_msg    *m;

	chh_start(&D, NULL);
	c = connect_ok();
	ck_status(chan_send(c, "t", "hello", 5, 1000), CHAN_OK);
	ck_status(chan_recv(c, "t", &m, 1000), CHAN_OK);
	ck_assert_int_eq(chan_msg_len(m), 5);
	ck_assert_mem_eq(chan_msg_data(m), "hello", 5);
	chan_msg_free(m);
	chan_disconnect(c);
	chh_stop(&D);
}

START_TEST(threads_as_asked)
{
	ck_status(chan_nng_threads(1), CHAN_INVALID_ARGUMENT);
	ck_status(chan_nng_threads(17), CHAN_INVALID_ARGUMENT);
	ck_assert_int_eq(chh_threads("nng:task"), 0); /* not started by those */
	ck_status(chan_nng_threads(3), CHAN_OK);  /* rounded up to 4 */
	ck_assert_int_eq(nng_task_threads_settled(4), 4);
	ck_status(chan_nng_threads(2), CHAN_ALREADY_EXISTS);
	ck_assert_int_eq(chh_threads("nng:task"), 4);
	/* The rest of the process asks sysconf and gets the truth. */
	ck_assert_int_eq(sysconf(_SC_NPROCESSORS_ONLN), get_nprocs());
	round_trip();
}
END_TEST

START_TEST(threads_two)
{
	ck_status(chan_nng_threads(2), CHAN_OK);
	ck_assert_int_eq(nng_task_threads_settled(2), 2);
	round_trip();
}
END_TEST

START_TEST(threads_too_late)
{
	chh_start(&D, NULL); /* nng starts here, with its own count */
	ck_status(chan_nng_threads(2), CHAN_ALREADY_EXISTS);
	ck_assert_int_eq(nng_task_threads_settled(nng_default_threads()),
	    nng_default_threads());
	chh_stop(&D);
}
END_TEST

static Suite *
threads_suite(void)
{
	Suite *s = suite_create("threads");
	TCase *tc = tcase_create("nng_threads");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, threads_as_asked);
	tcase_add_test(tc, threads_two);
	tcase_add_test(tc, threads_too_late);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	SRunner *sr = srunner_create(threads_suite());
	int      failed;

	signal(SIGPIPE, SIG_IGN);
	/* Each test needs a process where nng has not started: fork always. */
	srunner_set_fork_status(sr, CK_FORK);
	chh_suite_begin();
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	chh_suite_end();
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
