/* test_counter.c - SPEC "Counters" rules on a shard's counter table. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "counter.h"

#define MAX_WOKEN 16

static struct {
	chd_counter_waiter *w[MAX_WOKEN];
	chan_status         st[MAX_WOKEN];
	int64_t             value[MAX_WOKEN];
	int                 n;
} woken;

static void
record_wake(chd_counter_waiter *w, chan_status st, int64_t value)
{
	ck_assert_int_lt(woken.n, MAX_WOKEN);
	woken.w[woken.n] = w;
	woken.st[woken.n] = st;
	woken.value[woken.n] = value;
	woken.n++;
}

static chd_counters *t;

static void
setup(void)
{
	woken.n = 0;
	t = chd_counters_new(record_wake);
	ck_assert_ptr_nonnull(t);
}

static void
teardown(void)
{
	chd_counters_free(t);
}

START_TEST(test_add_creates_at_zero_and_returns_new_value)
{
	int64_t v = -1;

	ck_assert_int_eq(chd_counter_add(t, "hits", 5, &v), CHAN_OK);
	ck_assert_int_eq(v, 5);
	ck_assert_int_eq(chd_counter_add(t, "hits", -7, &v), CHAN_OK);
	ck_assert_int_eq(v, -2);
	ck_assert_uint_eq(chd_counters_count(t), 1);
}
END_TEST

START_TEST(test_add_overflow_is_out_of_range_and_keeps_value)
{
	int64_t v, old;

	ck_assert_int_eq(chd_counter_set(t, "big", INT64_MAX - 1, &old), CHAN_OK);
	ck_assert_int_eq(chd_counter_add(t, "big", 2, &v), CHAN_OUT_OF_RANGE);
	ck_assert_int_eq(chd_counter_get(t, "big", &v), CHAN_OK);
	ck_assert_int_eq(v, INT64_MAX - 1);
	ck_assert_int_eq(chd_counter_set(t, "small", INT64_MIN, &old), CHAN_OK);
	ck_assert_int_eq(chd_counter_add(t, "small", -1, &v), CHAN_OUT_OF_RANGE);
	ck_assert_int_eq(chd_counter_get(t, "small", &v), CHAN_OK);
	ck_assert_int_eq(v, INT64_MIN);
}
END_TEST

START_TEST(test_get_missing_is_not_found)
{
	int64_t v = 42;

	ck_assert_int_eq(chd_counter_get(t, "nope", &v), CHAN_NOT_FOUND);
	ck_assert_int_eq(chd_counter_delete(t, "nope"), CHAN_NOT_FOUND);
}
END_TEST

START_TEST(test_set_returns_old_value)
{
	int64_t old = -1;

	ck_assert_int_eq(chd_counter_set(t, "x", 10, &old), CHAN_OK);
	ck_assert_int_eq(old, 0);
	ck_assert_int_eq(chd_counter_set(t, "x", 20, &old), CHAN_OK);
	ck_assert_int_eq(old, 10);
}
END_TEST

START_TEST(test_cas_swaps_only_on_expected)
{
	bool    swapped;
	int64_t cur;

	/* A fresh lock is 0: `cas lock 0 1` takes it. */
	ck_assert_int_eq(chd_counter_cas(t, "lock", 0, 1, &swapped, &cur), CHAN_OK);
	ck_assert(swapped);
	ck_assert_int_eq(cur, 1);
	ck_assert_int_eq(chd_counter_cas(t, "lock", 0, 1, &swapped, &cur), CHAN_OK);
	ck_assert(!swapped);
	ck_assert_int_eq(cur, 1);
}
END_TEST

START_TEST(test_wait_already_true_returns_at_once)
{
	chd_counter_waiter w = { .op = CHD_WAIT_GE, .value = 0 };
	int64_t            v = -1;

	ck_assert_int_eq(chd_counter_wait(t, "c", &w, &v), CHAN_OK);
	ck_assert_int_eq(v, 0);
	ck_assert_int_eq(woken.n, 0);
}
END_TEST

/* Each operator: parks while false, wakes on the change that makes it
 * true with the value that satisfied it. */
START_TEST(test_wait_each_operator)
{
	static const struct {
		chd_wait_op op;
		int64_t     arg, start, miss, hit;
	} cases[] = {
		{ CHD_WAIT_EQ, 5, 0, 4, 5 },
		{ CHD_WAIT_NE, 0, 0, 0, 3 },
		{ CHD_WAIT_LT, 0, 1, 0, -1 },
		{ CHD_WAIT_LE, 0, 2, 1, 0 },
		{ CHD_WAIT_GT, 9, 0, 9, 10 },
		{ CHD_WAIT_GE, 9, 0, 8, 9 },
	};
	int64_t v, old;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		chd_counter_waiter w = { .op = cases[i].op, .value = cases[i].arg };
		woken.n = 0;
		ck_assert_int_eq(chd_counter_set(t, "op", cases[i].start, &old), CHAN_OK);
		ck_assert_int_eq(chd_counter_wait(t, "op", &w, &v), CHAN_EMPTY);
		ck_assert_int_eq(chd_counter_set(t, "op", cases[i].miss, &old), CHAN_OK);
		ck_assert_msg(woken.n == 0, "op %d woke on %lld", (int) cases[i].op,
		    (long long) cases[i].miss);
		ck_assert_int_eq(chd_counter_set(t, "op", cases[i].hit, &old), CHAN_OK);
		ck_assert_int_eq(woken.n, 1);
		ck_assert_ptr_eq(woken.w[0], &w);
		ck_assert_int_eq(woken.st[0], CHAN_OK);
		ck_assert_int_eq(woken.value[0], cases[i].hit);
	}
}
END_TEST

START_TEST(test_every_satisfied_waiter_is_woken)
{
	chd_counter_waiter a = { .op = CHD_WAIT_GE, .value = 3 };
	chd_counter_waiter b = { .op = CHD_WAIT_GE, .value = 2 };
	chd_counter_waiter c = { .op = CHD_WAIT_GE, .value = 10 };
	int64_t            v;

	ck_assert_int_eq(chd_counter_wait(t, "n", &a, &v), CHAN_EMPTY);
	ck_assert_int_eq(chd_counter_wait(t, "n", &b, &v), CHAN_EMPTY);
	ck_assert_int_eq(chd_counter_wait(t, "n", &c, &v), CHAN_EMPTY);
	ck_assert_int_eq(chd_counter_add(t, "n", 5, &v), CHAN_OK);
	ck_assert_int_eq(woken.n, 2);
	ck_assert_ptr_eq(woken.w[0], &a); /* in the order they parked */
	ck_assert_ptr_eq(woken.w[1], &b);
	chd_counter_waiter_cancel(&c);
	chd_counter_waiter_cancel(&c); /* idempotent */
	ck_assert_int_eq(chd_counter_add(t, "n", 50, &v), CHAN_OK);
	ck_assert_int_eq(woken.n, 2);
}
END_TEST

START_TEST(test_add_many_values_and_intermediate_waiters)
{
	chd_counter_waiter eq5 = { .op = CHD_WAIT_EQ, .value = 5 };
	chd_counter_waiter lt0 = { .op = CHD_WAIT_LT, .value = 0 };
	int64_t            d[] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -20 };
	int64_t            vals[11], v;
	size_t             bad = 99;

	ck_assert_int_eq(chd_counter_wait(t, "m", &eq5, &v), CHAN_EMPTY);
	ck_assert_int_eq(chd_counter_wait(t, "m", &lt0, &v), CHAN_EMPTY);
	ck_assert_int_eq(chd_counter_add_many(t, "m", d, 11, vals, &bad),
	    CHAN_OK);
	for (int i = 0; i < 10; i++) {
		ck_assert_int_eq(vals[i], i + 1);
	}
	ck_assert_int_eq(vals[10], -10);
	/* 5 was passed on the way: the EQ waiter saw it, then LT 0 at -10 */
	ck_assert_int_eq(woken.n, 2);
	ck_assert_ptr_eq(woken.w[0], &eq5);
	ck_assert_int_eq(woken.value[0], 5);
	ck_assert_ptr_eq(woken.w[1], &lt0);
	ck_assert_int_eq(woken.value[1], -10);
	ck_assert_int_eq(bad, 99);
}
END_TEST

START_TEST(test_add_many_overflow_applies_nothing)
{
	chd_counter_waiter w = { .op = CHD_WAIT_EQ, .value = INT64_MAX };
	int64_t            d[] = { 1, 1, 1 };
	int64_t            vals[3], v, old;
	size_t             bad = 99;

	ck_assert_int_eq(chd_counter_set(t, "o", INT64_MAX - 2, &old), CHAN_OK);
	ck_assert_int_eq(chd_counter_wait(t, "o", &w, &v), CHAN_EMPTY);
	ck_assert_int_eq(chd_counter_add_many(t, "o", d, 3, vals, &bad),
	    CHAN_OUT_OF_RANGE);
	ck_assert_uint_eq(bad, 2);
	ck_assert_int_eq(chd_counter_get(t, "o", &v), CHAN_OK);
	ck_assert_int_eq(v, INT64_MAX - 2);
	ck_assert_int_eq(woken.n, 0); /* INT64_MAX was never really reached */
	chd_counter_waiter_cancel(&w);
}
END_TEST

START_TEST(test_delete_wakes_waiters_not_found)
{
	chd_counter_waiter w = { .op = CHD_WAIT_EQ, .value = 1 };
	int64_t            v;

	ck_assert_int_eq(chd_counter_wait(t, "gone", &w, &v), CHAN_EMPTY);
	ck_assert_int_eq(chd_counter_delete(t, "gone"), CHAN_OK);
	ck_assert_int_eq(woken.n, 1);
	ck_assert_int_eq(woken.st[0], CHAN_NOT_FOUND);
	ck_assert_int_eq(chd_counter_get(t, "gone", &v), CHAN_NOT_FOUND);
}
END_TEST

START_TEST(test_free_wakes_waiters_shutting_down)
{
	chd_counters      *t2 = chd_counters_new(record_wake);
	chd_counter_waiter w = { .op = CHD_WAIT_EQ, .value = 1 };
	int64_t            v;

	ck_assert_int_eq(chd_counter_wait(t2, "x", &w, &v), CHAN_EMPTY);
	chd_counters_free(t2);
	ck_assert_int_eq(woken.n, 1);
	ck_assert_int_eq(woken.st[0], CHAN_SHUTTING_DOWN);
}
END_TEST

static void
count_visit(void *arg, const char *name, int64_t value)
{
	int64_t *sum = arg;
	(void) name;
	*sum += value;
}

START_TEST(test_many_counters_grow_and_list)
{
	char    name[32];
	int64_t v, sum = 0;

	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "c%d", i);
		ck_assert_int_eq(chd_counter_add(t, name, i, &v), CHAN_OK);
	}
	ck_assert_uint_eq(chd_counters_count(t), 1000);
	ck_assert_int_eq(chd_counter_get(t, "c999", &v), CHAN_OK);
	ck_assert_int_eq(v, 999);
	chd_counters_each(t, count_visit, &sum);
	ck_assert_int_eq(sum, 999 * 1000 / 2);
}
END_TEST

START_TEST(test_shared_limit_across_tables)
{
	atomic_uint_least64_t n;
	chd_counters         *t2 = chd_counters_new(record_wake);
	int64_t               v;

	atomic_init(&n, 0);
	ck_assert_ptr_nonnull(t2);
	chd_counters_limit(t, &n, 2);
	chd_counters_limit(t2, &n, 2);
	ck_assert_int_eq(chd_counter_add(t, "a", 1, &v), CHAN_OK);
	ck_assert_int_eq(chd_counter_set(t2, "b", 7, &v), CHAN_OK);
	ck_assert(chd_counters_full(t) && chd_counters_full(t2));
	/* Existing counters keep working; a new one in either table fails. */
	ck_assert_int_eq(chd_counter_add(t, "a", 1, &v), CHAN_OK);
	ck_assert_int_eq(v, 2);
	ck_assert_int_eq(chd_counter_add(t, "c", 1, &v), CHAN_RESOURCE_EXHAUSTED);
	ck_assert_int_eq(chd_counter_add(t2, "c", 1, &v),
	    CHAN_RESOURCE_EXHAUSTED);
	ck_assert_int_eq(chd_counter_get(t, "c", &v), CHAN_NOT_FOUND);
	ck_assert_int_eq(chd_counter_delete(t, "a"), CHAN_OK);
	ck_assert(!chd_counters_full(t));
	ck_assert_int_eq(chd_counter_add(t2, "c", 1, &v), CHAN_OK);
	ck_assert_uint_eq(atomic_load(&n), 2);
	chd_counters_free(t2);
}
END_TEST

static Suite *
counter_suite(void)
{
	Suite *s = suite_create("counter");
	TCase *tc = tcase_create("table");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_add_creates_at_zero_and_returns_new_value);
	tcase_add_test(tc, test_add_overflow_is_out_of_range_and_keeps_value);
	tcase_add_test(tc, test_get_missing_is_not_found);
	tcase_add_test(tc, test_set_returns_old_value);
	tcase_add_test(tc, test_cas_swaps_only_on_expected);
	tcase_add_test(tc, test_wait_already_true_returns_at_once);
	tcase_add_test(tc, test_wait_each_operator);
	tcase_add_test(tc, test_every_satisfied_waiter_is_woken);
	tcase_add_test(tc, test_add_many_values_and_intermediate_waiters);
	tcase_add_test(tc, test_add_many_overflow_applies_nothing);
	tcase_add_test(tc, test_delete_wakes_waiters_not_found);
	tcase_add_test(tc, test_free_wakes_waiters_shutting_down);
	tcase_add_test(tc, test_many_counters_grow_and_list);
	tcase_add_test(tc, test_shared_limit_across_tables);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	SRunner *sr = srunner_create(counter_suite());
	int      failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
