/*
 * test_engine_deadline.c - the deadline heap of parked tasks
 * (daemon/deadline.c) and the one lazily armed timer per shard that
 * serves it (daemon/shard.c, docs/ENGINE.md "Parked tasks"): order,
 * removal from anywhere, equal deadlines; in an engine of one shard
 * (every task in one heap): a timeout never comes before its deadline,
 * many come in deadline order, a served task never times out later, an
 * earlier deadline than the armed one re-arms, tasks leaving from the
 * middle (served, connection closed) leave the others' timeouts alone,
 * and a timeout callback that serves another due task.
 *
 * Times are checked one way exactly (never before the deadline) and the
 * other way loosely (seconds), as everywhere in the tests.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "engine.h"
#include "engine_harness.h"
#include "engine_int.h"

/* ---- the heap ------------------------------------------------------------ */

/* Every slot is where its node thinks, every parent comes first. */
static void
check_heap(const chd_dl_heap *h)
{
	for (size_t i = 0; i < h->n; i++) {
		const chd_dl_node *x = h->v[i];

		ck_assert_uint_eq(x->pos, i + 1);
		if (i > 0) {
			const chd_dl_node *p = h->v[(i - 1) / 2];
			ck_assert(p->at < x->at ||
			    (p->at == x->at && p->seq < x->seq));
		}
	}
}

START_TEST(test_heap_pop_order)
{
	chd_dl_heap h;
	chd_dl_node n[6];
	int64_t     at[6] = { 50, 10, 40, 30, 60, 20 };

	memset(n, 0, sizeof(n));
	chd_dl_init(&h);
	ck_assert_ptr_null(chd_dl_min(&h));
	ck_assert_ptr_null(chd_dl_pop(&h));
	for (int i = 0; i < 6; i++) {
		ck_assert(!chd_dl_queued(&n[i]));
		ck_assert_int_eq(chd_dl_insert(&h, &n[i], at[i]), 0);
		ck_assert(chd_dl_queued(&n[i]));
		check_heap(&h);
	}
	ck_assert_ptr_eq(chd_dl_min(&h), &n[1]);
	ck_assert_uint_eq(h.n, 6);
	for (int64_t want = 10; want <= 60; want += 10) {
		chd_dl_node *x = chd_dl_pop(&h);

		ck_assert_ptr_nonnull(x);
		ck_assert_int_eq(x->at, want);
		ck_assert(!chd_dl_queued(x));
		check_heap(&h);
	}
	ck_assert_ptr_null(chd_dl_pop(&h));
	/* A popped node goes in again. */
	ck_assert_int_eq(chd_dl_insert(&h, &n[0], 5), 0);
	ck_assert_ptr_eq(chd_dl_min(&h), &n[0]);
	chd_dl_fini(&h);
	ck_assert(!chd_dl_queued(&n[0]));
}
END_TEST

START_TEST(test_heap_remove_middle)
{
	chd_dl_heap h;
	chd_dl_node n[15];
	int         gone[] = { 7, 3, 11, 0, 14 }; /* middle, root, last... */
	bool        removed[15] = { false };
	int64_t     prev = -1;
	size_t      left = 15;

	memset(n, 0, sizeof(n));
	chd_dl_init(&h);
	for (int i = 0; i < 15; i++) {
		/* 0, 10, 20, ... in a scrambled order */
		ck_assert_int_eq(chd_dl_insert(&h, &n[i],
		    (int64_t) ((i * 7) % 15) * 10), 0);
	}
	check_heap(&h);
	for (size_t k = 0; k < sizeof(gone) / sizeof(gone[0]); k++) {
		chd_dl_remove(&h, &n[gone[k]]);
		removed[gone[k]] = true;
		ck_assert(!chd_dl_queued(&n[gone[k]]));
		ck_assert_uint_eq(h.n, --left);
		check_heap(&h);
	}
	while (h.n > 0) {
		chd_dl_node *x = chd_dl_pop(&h);
		int          i = (int) (x - n);

		ck_assert(!removed[i]);
		removed[i] = true;
		ck_assert_int_gt(x->at, prev);
		prev = x->at;
		check_heap(&h);
	}
	for (int i = 0; i < 15; i++) {
		ck_assert(removed[i]);
	}
	/*
	 * Deadlines laid out (inserted in slot order, each stays put) so
	 * that the last node, moved into the hole at slot 8, is earlier than
	 * the hole's parent (slot 3, 101): it must go up, not down.
	 */
	{
		int64_t lay[15] = { 0, 100, 1, 101, 102, 2, 3, 103, 104, 105,
			106, 4, 5, 6, 7 };

		for (int i = 0; i < 15; i++) {
			ck_assert_int_eq(chd_dl_insert(&h, &n[i], lay[i]), 0);
			ck_assert_uint_eq(n[i].pos, (size_t) i + 1);
		}
		chd_dl_remove(&h, &n[8]);
		check_heap(&h);
		ck_assert_uint_eq(n[14].pos, 2); /* 7 went up past 101, 100 */
	}
	chd_dl_fini(&h);
}
END_TEST

/* Equal deadlines come out in insertion order, among others. */
START_TEST(test_heap_equal_deadlines_fifo)
{
	chd_dl_heap h;
	chd_dl_node n[40];

	memset(n, 0, sizeof(n));
	chd_dl_init(&h);
	for (int i = 0; i < 40; i++) {
		ck_assert_int_eq(chd_dl_insert(&h, &n[i], i % 2 == 0 ? 100 :
		    (i % 3 == 0 ? 50 : 200)), 0);
	}
	for (int64_t at = 0, last = -1; h.n > 0;) {
		chd_dl_node *x = chd_dl_pop(&h);
		int          i = (int) (x - n);

		ck_assert_int_ge(x->at, at);
		if (x->at == at) {
			ck_assert_int_gt(i, last); /* FIFO among equals */
		}
		at = x->at;
		last = i;
	}
	chd_dl_fini(&h);
}
END_TEST

/* Thousands of entries, random deadlines, random removals: against a
 * plain reference (a sorted scan). */
START_TEST(test_heap_many_random)
{
	enum { N = 5000 };
	chd_dl_heap  h;
	chd_dl_node *n = calloc(N, sizeof(*n));
	int64_t      prev = INT64_MIN;
	size_t       in = 0;

	ck_assert_ptr_nonnull(n);
	srand(12345);
	chd_dl_init(&h);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(chd_dl_insert(&h, &n[i],
		    (int64_t) (rand() % 1000)), 0);
		in++;
		if (i % 3 == 2) { /* take a random queued one out */
			int j = rand() % (i + 1);

			if (chd_dl_queued(&n[j])) {
				chd_dl_remove(&h, &n[j]);
				in--;
			}
		}
	}
	ck_assert_uint_eq(h.n, in);
	ck_assert_uint_ge(h.cap, h.n);
	check_heap(&h);
	while (h.n > 0) {
		chd_dl_node *x = chd_dl_min(&h);
		int64_t      least = INT64_MAX;

		if (h.n % 512 == 0) { /* the min is the least of all queued */
			for (int i = 0; i < N; i++) {
				if (chd_dl_queued(&n[i]) && n[i].at < least) {
					least = n[i].at;
				}
			}
			ck_assert_int_eq(x->at, least);
		}
		ck_assert_ptr_eq(chd_dl_pop(&h), x);
		ck_assert_int_ge(x->at, prev);
		prev = x->at;
	}
	for (int i = 0; i < N; i++) {
		ck_assert(!chd_dl_queued(&n[i]));
	}
	chd_dl_fini(&h);
	free(n);
}
END_TEST

/* ---- in an engine of one shard ------------------------------------------ */

static void
setup(void)
{
	chd_engine_opts o;

	th_reset();
	chd_engine_opts_default(&o);
	o.workers = 1; /* every parked task in one heap */
	o.max_message_size = 1000;
	o.max_batch = 16;
	o.auto_create = true;
	th_start(&o, 20, 1000);
}

static void
teardown(void)
{
	th_teardown(); /* every request had exactly one answer */
}

static int64_t
ms_since(int64_t t0)
{
	return ((chd_dl_now() - t0) / 1000000);
}

/* t times out: TIMEOUT, not before t0 + ms, and (loosely) soon after. */
static void
expect_timeout_after(treq *t, int64_t t0, int64_t ms)
{
	expect_status(t, CHAN_TIMEOUT);
	ck_assert_int_ge(ms_since(t0), ms);
	ck_assert_int_lt(ms_since(t0), ms + 3000);
}

START_TEST(test_recv_timeout_not_before_deadline)
{
	for (int i = 0; i < 5; i++) {
		int64_t t0 = chd_dl_now();
		treq   *t = r_recv(1, "t", 120 + 7 * i);

		expect_timeout_after(t, t0, 120 + 7 * i);
	}
	ck_assert_uint_eq(stat_of("t")->blocked_receivers, 0);
}
END_TEST

/*
 * Receivers on one shard with different timeouts, parked out of order,
 * time out in deadline order: when each answers, the later ones are
 * still pending, and none answers before its deadline.
 */
START_TEST(test_timeouts_in_deadline_order)
{
	enum { N = 6 };
	int64_t     ms[N] = { 600, 150, 450, 750, 300, 900 };
	const char *names[N] = { "a", "b", "c", "d", "e", "f" };
	treq       *t[N];
	int         order[N];
	int64_t     t0 = chd_dl_now();

	for (int i = 0; i < N; i++) {
		t[i] = r_recv((uint32_t) (1 + i), names[i], ms[i]);
	}
	for (int i = 0; i < N; i++) { /* indices by deadline */
		order[i] = i;
	}
	for (int i = 0; i < N; i++) {
		for (int j = i + 1; j < N; j++) {
			if (ms[order[j]] < ms[order[i]]) {
				int x = order[i];
				order[i] = order[j];
				order[j] = x;
			}
		}
	}
	for (int k = 0; k < N; k++) {
		expect_timeout_after(t[order[k]], t0, ms[order[k]]);
		for (int l = k + 1; l < N; l++) {
			ck_assert_msg(wait_for(t[order[l]], 0) == NULL,
			    "%s (%lld ms) answered before %s (%lld ms)",
			    names[order[l]], (long long) ms[order[l]],
			    names[order[k]], (long long) ms[order[k]]);
		}
	}
}
END_TEST

/*
 * Served before its deadline: one answer (OK), never a TIMEOUT later,
 * and the others' timeouts are unchanged by its leaving.
 */
START_TEST(test_served_never_times_out)
{
	enum { N = 20 };
	treq   *t[N], *late;
	char    name[16];
	int64_t t0 = chd_dl_now();

	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		t[i] = r_recv(1, name, 300 + 10 * i);
	}
	late = r_recv(2, "late", 700);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		expect_status(r_send(3, name, "m", -1), CHAN_OK);
		expect_status(t[i], CHAN_OK);
	}
	ck_assert_int_lt(ms_since(t0), 300); /* all served in time */
	/* Past every served one's deadline: still the one answer each
	 * (th_teardown counts them), and the late one waits on. */
	ck_assert(pending(late, ms_since(t0) < 540 ?
	    550 - (int) ms_since(t0) : 10));
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(answer(t[i])->status, CHAN_OK);
	}
	expect_timeout_after(late, t0, 700);
}
END_TEST

/*
 * The timer is armed for a long deadline; a shorter one parked after it
 * must re-arm it and time out on time, the long one still waiting.
 */
START_TEST(test_earlier_deadline_rearms)
{
	int64_t t0 = chd_dl_now();
	treq   *longer = r_recv(1, "long", 4000);
	int64_t t1;
	treq   *shorter;

	ck_assert(pending(longer, 50));
	t1 = chd_dl_now();
	shorter = r_recv(2, "short", 200);
	expect_timeout_after(shorter, t1, 200);
	ck_assert_int_lt(ms_since(t1), 2000); /* not at the long one's */
	ck_assert(wait_for(longer, 0) == NULL);
	/* Then earlier again, while the long one is still the armed
	 * one's successor. */
	t1 = chd_dl_now();
	shorter = r_recv(3, "short2", 150);
	expect_timeout_after(shorter, t1, 150);
	ck_assert_int_lt(ms_since(t1), 2000);
	expect_timeout_after(longer, t0, 4000);
}
END_TEST

/*
 * Tasks leave from the middle of the heap (served; their connection
 * closed) and the ones around them still time out in order, on time.
 */
START_TEST(test_unpark_middle)
{
	enum { N = 7 };
	int64_t     ms[N] = { 500, 200, 700, 300, 600, 400, 800 };
	const char *names[N] = { "m0", "m1", "m2", "m3", "m4", "m5", "m6" };
	treq       *t[N];
	int64_t     t0 = chd_dl_now();

	for (int i = 0; i < N; i++) {
		t[i] = r_recv((uint32_t) (1 + i), names[i], ms[i]);
	}
	wait_blocked("m6", 0, 1);
	/* 400 and 500 (middle): served; 600: its connection closes. */
	expect_status(r_send(10, "m5", "x", -1), CHAN_OK);
	expect_status(t[5], CHAN_OK);
	expect_status(r_send(10, "m0", "x", -1), CHAN_OK);
	expect_status(t[0], CHAN_OK);
	chd_engine_conn_close(E, 5);
	expect_status(t[4], CHAN_UNAVAILABLE);
	ck_assert_int_lt(ms_since(t0), 200);
	expect_timeout_after(t[1], t0, 200);
	ck_assert(wait_for(t[3], 0) == NULL);
	expect_timeout_after(t[3], t0, 300);
	ck_assert(wait_for(t[2], 0) == NULL);
	expect_timeout_after(t[2], t0, 700);
	ck_assert(wait_for(t[6], 0) == NULL);
	expect_timeout_after(t[6], t0, 800);
}
END_TEST

static void
hold_job(chd_shard *sh, void *arg)
{
	(void) sh;
	msleep(*(int *) arg);
}

/*
 * Two senders due in the same firing (the shard was busy past both
 * deadlines): the first's timeout makes room for the second, which is
 * served from inside that callback and so leaves the heap while the
 * timer walks it. The second gets OK, once; nothing is touched after
 * it is freed (ASan).
 */
START_TEST(test_timeout_serves_another_due)
{
	const char *two[2] = { "p", "q" };
	treq       *a, *b;
	int         hold = 400;
	int64_t     t0;

	expect_status(r_create(1, "c", 2), CHAN_OK);
	expect_status(r_send(1, "c", "x", -1), CHAN_OK);
	t0 = chd_dl_now();
	a = r_sendv(2, "c", two, 2, 150, 0); /* does not fit */
	b = r_send(3, "c", "y", 200);        /* fits, but behind a */
	wait_blocked("c", 2, 0);
	/* exec held well past both deadlines: the timer can only retry. */
	ck_assert_int_eq(chd_shard_post(E->shards[0], hold_job, &hold), 0);
	ck_assert_int_ge(ms_since(t0), 200);
	expect_timeout_after(a, t0, 150);
	expect_status(b, CHAN_OK);
	ck_assert_uint_eq(stat_of("c")->depth, 2);
	ck_assert_uint_eq(stat_of("c")->blocked_senders, 0);
}
END_TEST

/* Waits forever (no timeout) never enter the heap: still parked long
 * after a timed one next to it went. */
START_TEST(test_no_timeout_stays)
{
	int64_t t0 = chd_dl_now();
	treq   *forever = r_recv(1, "f", -1);
	treq   *timed = r_recv(2, "g", 100);

	expect_timeout_after(timed, t0, 100);
	ck_assert(pending(forever, 300));
	expect_status(r_send(3, "f", "x", -1), CHAN_OK);
	expect_status(forever, CHAN_OK);
}
END_TEST

static Suite *
deadline_suite(void)
{
	Suite *s = suite_create("engine_deadline");
	TCase *tc = tcase_create("heap");

	tcase_add_test(tc, test_heap_pop_order);
	tcase_add_test(tc, test_heap_remove_middle);
	tcase_add_test(tc, test_heap_equal_deadlines_fifo);
	tcase_add_test(tc, test_heap_many_random);
	suite_add_tcase(s, tc);
	tc = tcase_create("engine");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_recv_timeout_not_before_deadline);
	tcase_add_test(tc, test_timeouts_in_deadline_order);
	tcase_add_test(tc, test_served_never_times_out);
	tcase_add_test(tc, test_earlier_deadline_rearms);
	tcase_add_test(tc, test_unpark_middle);
	tcase_add_test(tc, test_timeout_serves_another_due);
	tcase_add_test(tc, test_no_timeout_stays);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	SRunner *sr = srunner_create(deadline_suite());
	int      failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
