/*
 * libchan_check.h - what the libchan tests (test_libchan.c, test_async.c,
 * test_handles.c) share: a fresh chand per test case (the checked
 * fixture's setup/teardown), a status assertion that prints both names and
 * the library's message, and a connect that must work. Include it once,
 * after harness.h and chan/chan.h.
 */
#ifndef CHAN_LIBCHAN_CHECK_H
#define CHAN_LIBCHAN_CHECK_H

#include <check.h>

#include <chan/chan.h>

#include "harness.h"

static chh_daemon D;

static inline void
setup(void)
{
	chh_start(&D, NULL);
}

static inline void
teardown(void)
{
	chh_stop(&D);
}

/* Asserts a status, printing both names and the library's message. */
#define ck_status(expr, want)                                                 \
	do {                                                                  \
		chan_status got_ = (expr);                                    \
		ck_assert_msg(got_ == (want), "%s: %s (%s), expected %s",     \
		    #expr, chan_status_name(got_), chan_last_error(NULL),     \
		    chan_status_name(want));                                  \
	} while (0)

static inline chan_client *
connect_ok(void)
{
	chan_client *c = NULL;

	ck_status(chan_connect(D.url, &c), CHAN_OK);
	ck_assert_ptr_nonnull(c);
	return (c);
}

#endif
