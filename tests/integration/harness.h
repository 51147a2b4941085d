/*
 * harness.h - integration tests run a real chand: start it on a private ipc
 * socket, wait until it answers, talk raw nng to it, stop it by its PID.
 *
 * The binary is the one CMake built (CHAND_PATH), or $CHAN_TEST_CHAND.
 * $CHAN_TEST_CHAND_ARGS (blank-separated words, no quoting) is appended to
 * the command line of every daemon chh_start starts, after its own extra
 * arguments: e.g. "--no-sp-direct" runs a suite against nng's own
 * listeners (the *_nngd ctest variants). harness.sh's start_chand does the
 * same.
 * A daemon still running when the test process exits (a failed check
 * assertion exits the forked test) is killed by an atexit handler, and
 * PR_SET_PDEATHSIG covers a test process killed outright.
 */
#ifndef CHAN_TEST_HARNESS_H
#define CHAN_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "chan.pb-c.h"

typedef struct chh_daemon {
	char  dir[128];  /* private dir, removed by chh_stop/kill */
	char  sock[160]; /* dir/s.sock */
	char  url[192];  /* ipc://dir/s.sock */
	char  log[160];  /* dir/chand.log: chand's stderr and stdout */
	pid_t pid;       /* 0 when not running */
} chh_daemon;

/*
 * Around srunner_run_all in main: one private base dir for every daemon of
 * the run, removed at the end with whatever failed tests left in it.
 */
void chh_suite_begin(void);
void chh_suite_end(void);

/*
 * Runs a check suite (srunner_run_all) between chh_suite_begin and
 * chh_suite_end; returns how many tests failed.
 */
struct Suite;
int chh_run_suite(struct Suite *s);

/*
 * Starts chand --listen <url> plus extra (NULL-terminated, may be NULL)
 * plus $CHAN_TEST_CHAND_ARGS, and waits until it answers a Hello (10 s, longer under a
 * sanitizer). Fails the current check test when it does not.
 */
void chh_start(chh_daemon *d, const char *const *extra);

/*
 * SIGTERM to the daemon's own PID; asserts it exits with status 0 within
 * 5 s (scaled under a sanitizer), then removes its dir. On failure the
 * daemon's log is printed to stderr.
 */
void chh_stop(chh_daemon *d);

/* SIGKILL fallback: kills and reaps the daemon, removes its dir. */
void chh_kill(chh_daemon *d);

/* Prints the daemon's log to stderr (for failure diagnosis). */
void chh_dump_log(const chh_daemon *d);

/* Milliseconds scaled for slow (sanitized) builds. */
int chh_scaled_ms(int ms);

/* A loopback tcp port nobody listens on right now (bound to 0, read
 * back, closed): for an extra --listen tcp://127.0.0.1:PORT. */
int chh_free_tcp_port(void);

/* Monotonic clock in ms. */
int64_t chh_now_ms(void);

/* This process's threads (/proc/self/task); comm non-NULL: only those
 * with that name (e.g. "nng:task"). */
int chh_threads(const char *comm);

/*
 * One raw exchange on a fresh REQ socket: sends body[0..len), waits up to
 * timeout_ms for the reply. Returns 0 with *reply (malloc'd) and *rlen, or
 * the nng error (NNG_ETIMEDOUT when the daemon never answered, e.g.
 * because it dropped the connection).
 */
int chh_raw(const char *url, const void *body, size_t len, int timeout_ms,
    void **reply, size_t *rlen);

/*
 * Packs req (filling client and a fresh id when they are unset), exchanges
 * it, decodes the Response (free with chh_resp_free). NULL when there was
 * no answer or it did not decode; *nng_err (if not NULL) says which.
 */
Chan__V1__Response *chh_call(const char *url, Chan__V1__Request *req,
    int timeout_ms, int *nng_err);
void chh_resp_free(Chan__V1__Response *r);


/*
 * True when a fresh client gets OK to a Ping within timeout_ms on its
 * first connection (a reset connection counts as a failure, as it does for
 * libchan). Otherwise chh_last_failure() says what happened.
 */
bool        chh_ping(const char *url, int timeout_ms);
const char *chh_last_failure(void);

/* Asserts the daemon still answers a ping from a fresh client. */
#define chh_assert_alive(d)                                                   \
	do {                                                                  \
		if (!chh_ping((d)->url, chh_scaled_ms(5000))) {               \
			chh_dump_log(d);                                      \
			ck_abort_msg("chand no longer serves a fresh client: " \
			    "%s", chh_last_failure());                        \
		}                                                             \
	} while (0)

#endif
