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
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

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

/*
 * A client in another process, to be SIGKILLed: fork and re-exec this
 * binary as "PROG MODE URL NAME" (nng is not usable in a forked child of a
 * process that already runs nng threads; the test's main() dispatches on
 * MODE). The helper writes one byte to fd 3 once it is in position.
 * Returns its pid.
 */
static inline pid_t
spawn_helper(const char *mode, const char *name)
{
	int   ready[2];
	pid_t pid;
	char  b;

	ck_assert_int_eq(pipe(ready), 0);
	fflush(NULL);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(ready[0]);
		/* Never outlives the test, even when an assertion fails. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (dup2(ready[1], 3) < 0) {
			_exit(126);
		}
		execl("/proc/self/exe", "chan-test-helper", mode,
		    D.url, name, (char *) NULL);
		_exit(127);
	}
	close(ready[1]);
	ck_assert_msg(read(ready[0], &b, 1) == 1,
	    "helper %s did not get into position", mode);
	close(ready[0]);
	return (pid);
}

#endif
