/* test_msgpool.c - lib/msgpool.c: spare nng messages reused for their capacity. */
#include <check.h>
#include <stdint.h>
#include <string.h>

#include "msgpool.h"

START_TEST(reused_within_capacity)
{
	nng_msg *a, *b;

	ck_assert_int_eq(chl_msgpool_get(&a, 200000), 0);
	ck_assert_uint_eq(nng_msg_len(a), 200000);
	memset(nng_msg_body(a), 0xab, 200000);
	chl_msgpool_put(a);
	/* Smaller than the spare: the same message, its length as asked. */
	ck_assert_int_eq(chl_msgpool_get(&b, 150000), 0);
	ck_assert_ptr_eq(b, a);
	ck_assert_uint_eq(nng_msg_len(b), 150000);
	ck_assert_uint_eq(nng_msg_header_len(b), 0);
	/* Its buffer is usable whole. */
	memset(nng_msg_body(b), 0xcd, 150000);
	chl_msgpool_put(b);
	/* Bigger than any spare: a fresh one (the spare stays). */
	ck_assert_int_eq(chl_msgpool_get(&a, 400000), 0);
	ck_assert_ptr_ne(a, b);
	ck_assert_uint_eq(nng_msg_len(a), 400000);
	nng_msg_free(a);
	ck_assert_int_eq(chl_msgpool_get(&a, 100000), 0);
	ck_assert_ptr_eq(a, b);
	nng_msg_free(a);
}
END_TEST

START_TEST(small_ones_not_kept)
{
	nng_msg *a, *b;

	ck_assert_int_eq(chl_msgpool_get(&a, 100), 0);
	ck_assert_uint_eq(nng_msg_len(a), 100);
	chl_msgpool_put(a); /* freed: under CHL_MSGPOOL_MIN */
	ck_assert_int_eq(chl_msgpool_get(&b, CHL_MSGPOOL_MIN), 0);
	ck_assert_uint_eq(nng_msg_len(b), CHL_MSGPOOL_MIN);
	nng_msg_free(b);
	chl_msgpool_put(NULL);
}
END_TEST

START_TEST(bounded)
{
	nng_msg *m[CHL_MSGPOOL_N + 4], *got[CHL_MSGPOOL_N + 4];
	size_t   n = sizeof(m) / sizeof(m[0]);
	size_t   reused = 0;

	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(chl_msgpool_get(&m[i], 64 * 1024), 0);
	}
	for (size_t i = 0; i < n; i++) {
		chl_msgpool_put(m[i]); /* only CHL_MSGPOOL_N are kept */
	}
	for (size_t i = 0; i < n; i++) {
		nng_msg *x;

		ck_assert_int_eq(chl_msgpool_get(&x, 64 * 1024), 0);
		for (size_t j = 0; j < n; j++) {
			reused += x == m[j];
		}
		got[i] = x;
	}
	/* The kept ones come back (a fresh one may land where a freed one was). */
	ck_assert_uint_ge(reused, CHL_MSGPOOL_N);
	for (size_t i = 0; i < n; i++) {
		nng_msg_free(got[i]);
	}
}
END_TEST

/* A full pool keeps nothing more: a bigger spare put then is freed. */
START_TEST(full_pool_keeps_nothing_more)
{
	nng_msg *m[CHL_MSGPOOL_N], *big, *x;

	for (size_t i = 0; i < CHL_MSGPOOL_N; i++) {
		ck_assert_int_eq(chl_msgpool_get(&m[i], 64 * 1024), 0);
	}
	for (size_t i = 0; i < CHL_MSGPOOL_N; i++) {
		chl_msgpool_put(m[i]);
	}
	ck_assert_int_eq(chl_msgpool_get(&big, 128 * 1024), 0);
	ck_assert_uint_eq(nng_msg_capacity(big), 128 * 1024);
	chl_msgpool_put(big);
	/* Only `big` could serve this from the pool; it must be new. */
	ck_assert_int_eq(chl_msgpool_get(&x, 100000), 0);
	ck_assert_uint_ne(nng_msg_capacity(x), 128 * 1024);
	nng_msg_free(x);
	for (size_t i = 0; i < CHL_MSGPOOL_N; i++) {
		ck_assert_int_eq(chl_msgpool_get(&x, 64 * 1024), 0);
		nng_msg_free(x);
	}
}
END_TEST

int
main(void)
{
	Suite   *s = suite_create("msgpool");
	TCase   *tc = tcase_create("core");
	SRunner *sr;
	int      failed;

	tcase_add_test(tc, reused_within_capacity);
	tcase_add_test(tc, small_ones_not_kept);
	tcase_add_test(tc, bounded);
	tcase_add_test(tc, full_pool_keeps_nothing_more);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (failed == 0 ? 0 : 1);
}
