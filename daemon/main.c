/*
 * main.c - chand: settings, engine, transport, signals, systemd.
 *
 * The main thread only sets things up, waits for SIGTERM/SIGINT with
 * sigwait (every thread is started with those signals blocked) and runs
 * the shutdown sequence; all request work happens on nng's and the
 * engine's threads.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>

#include "config.h"
#include "engine.h"
#include "nng_threads.h"
#include "notify.h"
#include "transport.h"

#define CHD_DRAIN_MS 1000     /* time given to SHUTTING_DOWN answers to flush */
#define CHD_LINGER_MS 500     /* then for clients to read them and hang up */
#define CHD_WATCHDOG_SEC 10   /* shutdown taking longer than this: give up */

static sigset_t chd_sigs;

/*
 * Read by LeakSanitizer in sanitizer builds, unused otherwise. nng 1.5.2
 * never frees a listener that had connections stuck in its handshake
 * queue, which is what the #1518 guard leaves behind when it replaces a
 * dead listener (see docs/TRANSPORT.md). Those few KiB are nng's.
 */
const char *__lsan_default_suppressions(void);
const char *
__lsan_default_suppressions(void)
{
	return ("leak:libnng.so\n");
}

static const char *
chd_signame(int sig)
{
	switch (sig) {
	case SIGTERM:
		return ("SIGTERM");
	case SIGINT:
		return ("SIGINT");
	case SIGHUP:
		return ("SIGHUP");
	default:
		return ("signal");
	}
}

/*
 * Runs during shutdown: a second SIGTERM/SIGINT, or a shutdown stuck for
 * CHD_WATCHDOG_SEC, ends the process at once rather than leave it hanging.
 */
static void *
chd_watchdog(void *arg)
{
	struct timespec ts = { CHD_WATCHDOG_SEC, 0 };
	int64_t         deadline = chl_now_mono_ms() + CHD_WATCHDOG_SEC * 1000;
	int             sig;

	(void) arg;
	for (;;) {
		int64_t left = deadline - chl_now_mono_ms();

		if (left <= 0) {
			chd_log(CHD_LOG_ERROR,
			    "shutdown still running after %d s; exiting now",
			    CHD_WATCHDOG_SEC);
			_exit(CHD_EXIT_FAIL);
		}
		ts.tv_sec = left / 1000;
		ts.tv_nsec = (left % 1000) * 1000000L;
		sig = sigtimedwait(&chd_sigs, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT) {
			chd_log(CHD_LOG_WARN, "second %s during shutdown; exiting now",
			    chd_signame(sig));
			_exit(CHD_EXIT_FAIL);
		}
	}
	return (NULL);
}

static void
chd_engine_opts_from(const chd_config *cfg, chd_engine_opts *eo)
{
	chd_engine_opts_default(eo);
	eo->workers = cfg->workers;
	eo->max_message_size = cfg->max_message_size;
	eo->max_batch = cfg->max_batch;
	eo->auto_create = cfg->auto_create;
	eo->max_memory = cfg->max_memory;
	eo->max_channels = cfg->max_channels;
	eo->max_counters = cfg->max_counters;
}

static void
chd_transport_opts_from(const chd_config *cfg, chd_transport_opts *to)
{
	uint64_t rmax = chd_config_request_max(cfg);

	memset(to, 0, sizeof(*to));
	to->recv_max = (size_t) rmax;
	/*
	 * Decoding copies every bytes field and adds per-element structs; twice
	 * the body plus slack covers any legitimate request.
	 */
	to->decode_cap = (size_t) (rmax * 2 + CHD_REQUEST_OVERHEAD);
	to->receivers = cfg->workers * 2;
	if (to->receivers < 4) {
		to->receivers = 4;
	}
	to->socket_mode = cfg->socket_mode;
	to->tls_cert = cfg->tls_cert;
	to->tls_key = cfg->tls_key;
	to->tls_ca = cfg->tls_ca;
	to->socket_gid = cfg->socket_gid;
	to->socket_dir_mode = cfg->socket_dir_mode;
	to->max_conns = cfg->max_connections;
	to->max_pending = cfg->max_pending;
	to->sp_direct = cfg->sp_direct;
	to->access = cfg->access;
}

/*
 * Each connection is a file descriptor: the soft limit (often 1024) would
 * refuse clients long before memory does. Raise it to the hard limit.
 */
static void
chd_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) {
		return;
	}
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
		chd_log(CHD_LOG_WARN, "cannot raise the open-file limit: %s",
		    strerror(errno));
	}
}

/* Waits for SIGTERM/SIGINT; SIGHUP is logged and ignored. */
static int
chd_wait_for_stop(void)
{
	int sig;

	for (;;) {
		if (sigwait(&chd_sigs, &sig) != 0) {
			continue;
		}
		if (sig == SIGTERM || sig == SIGINT) {
			return (sig);
		}
		chd_log(CHD_LOG_INFO,
		    "%s ignored: settings are read only at start; restart chand "
		    "to change them",
		    chd_signame(sig));
	}
}

/*
 * Queued messages live in the engine's own slabs, so glibc's heap holds
 * mostly the big transient buffers of batches (a decoded request, a packed
 * answer, its nng message: up to about 1 MB each for 1,024 x 1 KiB). With
 * glibc's defaults (128 KiB, adjusted upwards only when an mmapped block
 * is freed) those are mapped and faulted in again and again: 80,000-140,000
 * page faults per bench run instead of 1,000-12,000 (docs/ENGINE.md). The
 * cost is up to 32 MiB of freed heap kept mapped after a burst.
 */
static void
chd_tune_malloc(void)
{
	(void) mallopt(M_MMAP_THRESHOLD, 8 << 20);
	(void) mallopt(M_TRIM_THRESHOLD, 32 << 20);
}

int
main(int argc, char **argv)
{
	chd_config         cfg;
	chd_engine_opts    eo;
	chd_transport_opts to;
	chd_engine        *engine = NULL;
	chd_transport     *t = NULL;
	pthread_t          wd;
	char               err[1024];
	int                rv, sig, code = CHD_EXIT_FAIL;

	switch (chd_config_parse(&cfg, argc, argv, err, sizeof(err))) {
	case CHD_CONFIG_EXIT_OK:
		chd_config_fini(&cfg);
		return (CHD_EXIT_OK);
	case CHD_CONFIG_USAGE:
		fprintf(stderr, "chand: %s\nTry 'chand --help' for more.\n", err);
		chd_config_fini(&cfg);
		return (CHD_EXIT_USAGE);
	case CHD_CONFIG_RUN:
		break;
	}
	chd_log_set_level(cfg.log_level);
	chd_raise_nofile();
	chd_tune_malloc();
	if (cfg.access != NULL) {
		/* Root and our own user can read our memory anyway. */
		chd_access_trust_uid(cfg.access, (uint32_t) geteuid());
	}

	/* Before any thread exists, so nng's and the engine's inherit it. */
	(void) signal(SIGPIPE, SIG_IGN);
	sigemptyset(&chd_sigs);
	sigaddset(&chd_sigs, SIGTERM);
	sigaddset(&chd_sigs, SIGINT);
	sigaddset(&chd_sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &chd_sigs, NULL);
	/* nng's threads start here, with the mask above and our count. */
	if ((rv = chl_nng_threads_init(cfg.io_threads)) == NNG_EBUSY) {
		chd_log(CHD_LOG_WARN, "nng started before --io-threads could "
		    "apply; it keeps its own thread count");
	} else if (rv != 0) {
		chd_log(CHD_LOG_ERROR, "cannot start nng: %s", nng_strerror(rv));
		goto out;
	}

	chd_engine_opts_from(&cfg, &eo);
	if ((rv = chd_engine_start(&eo, &engine)) != 0) {
		chd_log(CHD_LOG_ERROR, "cannot start the engine: %s", strerror(rv));
		goto out;
	}
	chd_transport_opts_from(&cfg, &to);
	if (chd_transport_open(engine, &to, &t, err, sizeof(err)) != 0) {
		chd_log(CHD_LOG_ERROR, "%s", err);
		goto stop;
	}
	for (size_t i = 0; i < cfg.nlisten; i++) {
		if (chd_transport_listen(t, cfg.listen[i], err, sizeof(err)) != 0) {
			chd_log(CHD_LOG_ERROR, "%s", err);
			goto stop;
		}
	}
	if (chd_transport_start(t, err, sizeof(err)) != 0) {
		chd_log(CHD_LOG_ERROR, "%s", err);
		goto stop;
	}
	chd_log(CHD_LOG_INFO,
	    "chand %s ready (pid %d): %d workers, %d io threads (nng: %s), "
	    "max message %" PRIu64 " bytes, max batch %" PRIu32 ", max request "
	    "%zu bytes, auto-create %s",
	    CHAN_VERSION, (int) getpid(), cfg.workers, cfg.io_threads,
	    cfg.sp_direct ? "tls+tcp only; ipc and tcp on chand's own listener"
	                  : "every listener",
	    cfg.max_message_size,
	    cfg.max_batch, to.recv_max, cfg.auto_create ? "on" : "off");
	if (chd_access_enabled(cfg.access)) {
		chd_log(CHD_LOG_INFO, "access control on: the --allow-uid, "
		    "--allow-gid and --allow rules; root and uid %u always%s",
		    (unsigned) geteuid(),
		    cfg.tls_ca != NULL ? ", and verified tls clients" : "");
	}
	chd_log(CHD_LOG_INFO, "limits: max memory %" PRIu64 " bytes, max "
	    "connections %u, max pending %u per connection, max channels %"
	    PRIu64 ", max counters %" PRIu64 " (0: none)", cfg.max_memory,
	    cfg.max_connections, cfg.max_pending, cfg.max_channels,
	    cfg.max_counters);
	chd_notify_ready("serving");

	sig = chd_wait_for_stop();
	chd_log(CHD_LOG_INFO, "%s received: shutting down", chd_signame(sig));
	chd_notify_stopping();
	if (pthread_create(&wd, NULL, chd_watchdog, NULL) == 0) {
		(void) pthread_detach(wd);
	}
	code = CHD_EXIT_OK;

stop:
	/*
	 * Answer every waiter (and every request from now on) SHUTTING_DOWN,
	 * let the answers go out, then close listeners and connections. The
	 * listeners stay open until then: closing an nng listener also closes
	 * every connection it accepted, which would drop those answers.
	 */
	chd_engine_shutdown(engine);
	if (t != NULL) {
		if (!chd_transport_drain(t, CHD_DRAIN_MS)) {
			chd_log(CHD_LOG_WARN,
			    "some answers were not sent within %d ms; dropping them",
			    CHD_DRAIN_MS);
		} else if (!chd_transport_linger(t, CHD_LINGER_MS)) {
			chd_log(CHD_LOG_INFO,
			    "closing %u connection(s) still open after %d ms",
			    chd_transport_connections(t), CHD_LINGER_MS);
		}
		chd_transport_close(t);
	}
	chd_engine_free(engine);
	chd_transport_free(t);
	if (code == CHD_EXIT_OK) {
		chd_log(CHD_LOG_INFO, "stopped");
	}
out:
	chd_config_fini(&cfg);
	return (code);
}
