/* harness.c - start, probe and stop a real chand for integration tests. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw */
#endif
#include "harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <nng/protocol/reqrep0/req.h>

#include "wire.h"

#ifndef CHAND_PATH
#error "CHAND_PATH must name the chand binary"
#endif

/* Every daemon dir of this run lives in here (chh_suite_begin). */
static char chh_base[64];

static int
chh_rm_entry(const char *path, const struct stat *sb, int flag,
    struct FTW *ftw)
{
	(void) sb;
	(void) flag;
	(void) ftw;
	remove(path);
	return (0);
}

void
chh_suite_begin(void)
{
	snprintf(chh_base, sizeof(chh_base), "/tmp/chan-test-XXXXXX");
	if (mkdtemp(chh_base) == NULL) {
		chh_base[0] = '\0'; /* fall back to /tmp itself */
	}
}

void
chh_suite_end(void)
{
	/* Dirs of tests that failed (and so skipped their cleanup) too. */
	if (chh_base[0] != '\0') {
		nftw(chh_base, chh_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	}
}

int
chh_run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int      failed;

	chh_suite_begin();
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	chh_suite_end();
	return (failed);
}

/* The daemons this process started, for the atexit safety net. */
#define CHH_LIVE_MAX 8
static chh_daemon *chh_live[CHH_LIVE_MAX];
static bool        chh_atexit_set;

static void
chh_live_set(chh_daemon *d, bool on)
{
	for (int i = 0; i < CHH_LIVE_MAX; i++) {
		if (on ? chh_live[i] == NULL : chh_live[i] == d) {
			chh_live[i] = on ? d : NULL;
			return;
		}
	}
}

int64_t
chh_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

int
chh_scaled_ms(int ms)
{
	const char *san = getenv("CHAN_TEST_SANITIZER");

	/* Sanitized daemons start and stop several times slower. */
	return (san != NULL && *san != '\0' ? ms * 4 : ms);
}

static void
chh_rm_dir(chh_daemon *d)
{
	if (d->dir[0] == '\0') {
		return;
	}
	unlink(d->sock);
	unlink(d->log);
	rmdir(d->dir);
	d->dir[0] = '\0';
}

static void
chh_atexit(void)
{
	for (int i = 0; i < CHH_LIVE_MAX; i++) {
		chh_daemon *d = chh_live[i];
		if (d != NULL && d->pid > 0) {
			kill(d->pid, SIGKILL);
			waitpid(d->pid, NULL, 0);
			d->pid = 0;
			chh_rm_dir(d);
		}
	}
}

void
chh_dump_log(const chh_daemon *d)
{
	char  buf[4096];
	FILE *f;
	size_t n;

	if ((f = fopen(d->log, "r")) == NULL) {
		return;
	}
	fprintf(stderr, "---- chand log (%s) ----\n", d->log);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		fwrite(buf, 1, n, stderr);
	}
	fprintf(stderr, "---- end of chand log ----\n");
	fclose(f);
}

static const char *
chh_chand_path(void)
{
	const char *p = getenv("CHAN_TEST_CHAND");

	return (p != NULL && *p != '\0' ? p : CHAND_PATH);
}

static void
chh_exec_chand(chh_daemon *d, const char *const *extra)
{
	const char *argv[64];
	const char *env;
	char       *words, *save = NULL;
	int         n = 0, fd;

	/* Dies with the test process, whatever kills that. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if ((fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0600)) >= 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
	if ((fd = open("/dev/null", O_RDONLY)) >= 0) {
		dup2(fd, STDIN_FILENO);
		close(fd);
	}
	argv[n++] = chh_chand_path();
	argv[n++] = "--listen";
	argv[n++] = d->url;
	for (; extra != NULL && *extra != NULL && n < 62; extra++) {
		argv[n++] = *extra;
	}
	/*
	 * CHAN_TEST_CHAND_ARGS: extra words for every daemon of the run (a
	 * ctest variant such as the _nngd ones keeps nng's own listeners
	 * covered with --no-sp-direct). Split on blanks; no quoting. This is
	 * the forked child, so strtok_r on a copy costs nothing.
	 */
	if ((env = getenv("CHAN_TEST_CHAND_ARGS")) != NULL &&
	    (words = strdup(env)) != NULL) {
		for (char *w = strtok_r(words, " \t\n", &save); w != NULL;
		    w = strtok_r(NULL, " \t\n", &save)) {
			if (n >= 62) {
				fprintf(stderr, "CHAN_TEST_CHAND_ARGS: too many "
				    "arguments\n");
				_exit(127);
			}
			argv[n++] = w;
		}
	}
	argv[n] = NULL;
	execv(argv[0], (char *const *) argv);
	fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

void
chh_start(chh_daemon *d, const char *const *extra)
{
	int64_t deadline;
	int     st;

	memset(d, 0, sizeof(*d));
	snprintf(d->dir, sizeof(d->dir), "%s/d-XXXXXX",
	    chh_base[0] != '\0' ? chh_base : "/tmp");
	ck_assert_msg(mkdtemp(d->dir) != NULL, "mkdtemp: %s", strerror(errno));
	snprintf(d->sock, sizeof(d->sock), "%s/s.sock", d->dir);
	snprintf(d->url, sizeof(d->url), "ipc://%s", d->sock);
	snprintf(d->log, sizeof(d->log), "%s/chand.log", d->dir);

	if (!chh_atexit_set) {
		atexit(chh_atexit);
		chh_atexit_set = true;
	}
	fflush(NULL);
	d->pid = fork();
	ck_assert_msg(d->pid >= 0, "fork: %s", strerror(errno));
	if (d->pid == 0) {
		chh_exec_chand(d, extra);
	}
	chh_live_set(d, true);

	deadline = chh_now_ms() + chh_scaled_ms(10000);
	for (;;) {
		Chan__V1__Request  req = CHAN__V1__REQUEST__INIT;
		Chan__V1__Hello    hello = CHAN__V1__HELLO__INIT;
		Chan__V1__Response *r;

		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			d->pid = 0;
			chh_dump_log(d);
			chh_rm_dir(d);
			ck_abort_msg("chand exited during start-up (status 0x%x)",
			    st);
		}
		hello.has_protocol_version = 1;
		hello.protocol_version = CHL_PROTOCOL_VERSION;
		hello.client_name = "chan-test-harness";
		req.op_case = CHAN__V1__REQUEST__OP_HELLO;
		req.hello = &hello;
		if ((r = chh_call(d->url, &req, 1000, NULL)) != NULL) {
			int status = r->status;
			chh_resp_free(r);
			ck_assert_msg(status == CHAN__V1__STATUS__OK,
			    "Hello answered %d, expected OK", status);
			return;
		}
		if (chh_now_ms() > deadline) {
			chh_dump_log(d);
			chh_kill(d);
			ck_abort_msg("chand did not answer a Hello within %d ms",
			    chh_scaled_ms(10000));
		}
		usleep(20 * 1000);
	}
}

void
chh_kill(chh_daemon *d)
{
	if (d->pid > 0) {
		kill(d->pid, SIGKILL);
		waitpid(d->pid, NULL, 0);
		d->pid = 0;
	}
	chh_rm_dir(d);
	chh_live_set(d, false);
}

void
chh_stop(chh_daemon *d)
{
	int64_t deadline;
	int     st = 0, limit = chh_scaled_ms(5000);
	pid_t   w;

	if (d->pid <= 0) {
		return;
	}
	ck_assert_msg(kill(d->pid, SIGTERM) == 0, "kill(%d): %s", (int) d->pid,
	    strerror(errno));
	deadline = chh_now_ms() + limit;
	while ((w = waitpid(d->pid, &st, WNOHANG)) == 0 &&
	    chh_now_ms() < deadline) {
		usleep(10 * 1000);
	}
	if (w != d->pid) {
		chh_dump_log(d);
		chh_kill(d);
		ck_abort_msg("chand did not exit within %d ms of SIGTERM",
		    limit);
	}
	d->pid = 0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		chh_dump_log(d);
		chh_kill(d);
		if (WIFSIGNALED(st)) {
			ck_abort_msg("chand died of signal %d on SIGTERM, "
			    "expected exit 0", WTERMSIG(st));
		}
		ck_abort_msg("chand exited %d on SIGTERM, expected 0",
		    WEXITSTATUS(st));
	}
	chh_kill(d);
}

/* Connections (pipes) the last chh_raw exchange lost (chh_ping says so). */
static int chh_losses;
static char chh_why[160];

static void
chh_pipe_lost(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	(void) p;
	(void) ev;
	__atomic_add_fetch((int *) arg, 1, __ATOMIC_RELAXED);
}

const char *
chh_last_failure(void)
{
	return (chh_why);
}

/*
 * nng_close of a raw socket, waited for at most CHH_CLOSE_WAIT_MS. nng
 * 1.5.2's close can hang for good after the daemon dropped the
 * connection (issue #1543; seen in chh_raw under load even with the
 * no-redial and pause workarounds below, about once in 15 suite runs).
 * The test is about the daemon, which the next call still checks (a hung
 * daemon fails that call), so a close that does not come back is left to
 * its thread and the test goes on.
 */
#define CHH_CLOSE_WAIT_MS 5000

typedef struct chh_closer {
	nng_socket      s;
	pthread_mutex_t mtx;
	pthread_cond_t  cv;
	bool            done;
} chh_closer;

static void *
chh_closer_main(void *arg)
{
	chh_closer *c = arg;

	nng_close(c->s);
	pthread_mutex_lock(&c->mtx);
	c->done = true;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mtx);
	return (NULL);
}

static void
chh_close_bounded(nng_socket s)
{
	chh_closer     *c = calloc(1, sizeof(*c));
	pthread_t       th;
	struct timespec ts;
	bool            done;

	if (c == NULL) {
		nng_close(s);
		return;
	}
	c->s = s;
	pthread_mutex_init(&c->mtx, NULL);
	pthread_cond_init(&c->cv, NULL);
	if (pthread_create(&th, NULL, chh_closer_main, c) != 0) {
		nng_close(s);
		pthread_cond_destroy(&c->cv);
		pthread_mutex_destroy(&c->mtx);
		free(c);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += CHH_CLOSE_WAIT_MS / 1000;
	pthread_mutex_lock(&c->mtx);
	while (!c->done && pthread_cond_timedwait(&c->cv, &c->mtx, &ts) == 0) {
	}
	done = c->done;
	pthread_mutex_unlock(&c->mtx);
	if (!done) {
		/* Still inside nng_close: the thread keeps c. */
		fprintf(stderr, "harness: nng_close did not return within %d ms "
		    "(nng #1543); going on without it\n", CHH_CLOSE_WAIT_MS);
		pthread_detach(th);
		return;
	}
	pthread_join(th, NULL);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mtx);
	free(c);
}

int
chh_raw(const char *url, const void *body, size_t len, int timeout_ms,
    void **reply, size_t *rlen)
{
	nng_socket s;
	nng_msg   *m = NULL;
	int        rv;
	static int lost;

	*reply = NULL;
	*rlen = 0;
	__atomic_store_n(&lost, 0, __ATOMIC_RELAXED);
	chh_losses = 0;
	if ((rv = nng_req0_open(&s)) != 0) {
		return (rv);
	}
	/*
	 * Count the connections lost (the daemon dropped us): with no
	 * redial (below) such a call ends without an answer, and callers
	 * can tell a reset from a silent daemon.
	 */
	nng_pipe_notify(s, NNG_PIPE_EV_REM_POST, chh_pipe_lost, &lost);
	/* One try: a resend would hide a dropped connection. */
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, 3600 * 1000);
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms);
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, timeout_ms);
	/* Our side accepts any answer size; the daemon's limits are tested. */
	nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 0);
	/*
	 * No reconnect within the call: after the daemon drops us (a frame
	 * over its limit), a redial racing with nng_close is what makes
	 * nng 1.5.2's close hang for good (issue #1543; seen in badinput's
	 * frame_over_daemon_limit under ASan, the test stuck in nng_close).
	 */
	nng_socket_set_ms(s, NNG_OPT_RECONNMINT, 3600 * 1000);
	nng_socket_set_ms(s, NNG_OPT_RECONNMAXT, 3600 * 1000);
	/*
	 * A unix socket whose listen backlog is full refuses a connect with
	 * EAGAIN at once: the daemon has not accepted the connections queued
	 * before ours yet (connection_churn's 200 under a sanitizer). Dial
	 * again until the timeout; anything else (ECONNREFUSED: nobody
	 * listens) fails the call.
	 */
	for (int waited = 0; (rv = nng_dial(s, url, NULL, 0)) == NNG_EAGAIN &&
	    waited < timeout_ms; waited += 10) {
		nng_msleep(10);
	}
	if (rv != 0) {
		goto out;
	}
	if ((rv = nng_msg_alloc(&m, 0)) != 0 ||
	    (rv = nng_msg_append(m, body, len)) != 0) {
		goto out;
	}
	if ((rv = nng_sendmsg(s, m, 0)) != 0) {
		goto out;
	}
	m = NULL;
	rv = nng_recvmsg(s, &m, 0);
	chh_losses = __atomic_load_n(&lost, __ATOMIC_RELAXED);
	if (rv != 0) {
		m = NULL;
		goto out;
	}
	*rlen = nng_msg_len(m);
	if ((*reply = malloc(*rlen > 0 ? *rlen : 1)) == NULL) {
		rv = NNG_ENOMEM;
		goto out;
	}
	memcpy(*reply, nng_msg_body(m), *rlen);
out:
	if (m != NULL) {
		nng_msg_free(m);
	}
	if (rv != 0) {
		/*
		 * No answer: the daemon may have dropped the connection (a
		 * frame over its limit). Let nng finish tearing it down
		 * before the close, as libchan's chan_disconnect does
		 * (docs/CLIENT.md). The pause alone was not enough (still a
		 * hang in 2 of 8 ASan runs); no redial (above) is the part
		 * that matters.
		 */
		nng_msleep(50);
	}
	chh_close_bounded(s);
	return (rv);
}

/* A random client identity per test process, and increasing ids. */
static uint64_t
chh_client_id(void)
{
	static uint64_t id;
	int             fd;

	if (id == 0) {
		if ((fd = open("/dev/urandom", O_RDONLY)) >= 0) {
			if (read(fd, &id, sizeof(id)) != (ssize_t) sizeof(id)) {
				id = 0;
			}
			close(fd);
		}
		id ^= (uint64_t) getpid() << 32 ^ (uint64_t) chh_now_ms();
		if (id == 0) {
			id = 1;
		}
	}
	return (id);
}

Chan__V1__Response *
chh_call(const char *url, Chan__V1__Request *req, int timeout_ms,
    int *nng_err)
{
	static uint64_t     next_id = 1;
	Chan__V1__Response *resp = NULL;
	uint8_t            *buf;
	void               *reply;
	size_t              len, rlen;
	int                 rv;

	if (!req->has_client) {
		req->has_client = 1;
		req->client = chh_client_id();
	}
	if (!req->has_id) {
		req->has_id = 1;
		req->id = __atomic_fetch_add(&next_id, 1, __ATOMIC_RELAXED);
	}
	len = chan__v1__request__get_packed_size(req);
	buf = malloc(len > 0 ? len : 1);
	ck_assert_ptr_nonnull(buf);
	chan__v1__request__pack(req, buf);
	rv = chh_raw(url, buf, len, timeout_ms, &reply, &rlen);
	free(buf);
	if (nng_err != NULL) {
		*nng_err = rv;
	}
	if (rv != 0) {
		return (NULL);
	}
	/* The test trusts the daemon's answer size: plain allocator. */
	resp = chan__v1__response__unpack(NULL, rlen, reply);
	free(reply);
	if (resp == NULL && nng_err != NULL) {
		*nng_err = NNG_EPROTO;
	}
	return (resp);
}

void
chh_resp_free(Chan__V1__Response *r)
{
	if (r != NULL) {
		chan__v1__response__free_unpacked(r, NULL);
	}
}

bool
chh_ping(const char *url, int timeout_ms)
{
	Chan__V1__Request   req = CHAN__V1__REQUEST__INIT;
	Chan__V1__Ping      ping = CHAN__V1__PING__INIT;
	Chan__V1__Response *r;
	bool                ok;

	int                 err = 0;

	req.op_case = CHAN__V1__REQUEST__OP_PING;
	req.ping = &ping;
	chh_why[0] = '\0';
	if ((r = chh_call(url, &req, timeout_ms, &err)) == NULL) {
		snprintf(chh_why, sizeof(chh_why), "no answer to a ping (%s%s)",
		    nng_strerror(err), chh_losses > 0 ?
		    ", the daemon reset the connection" : "");
		return (false);
	}
	ok = r->status == CHAN__V1__STATUS__OK;
	if (!ok) {
		snprintf(chh_why, sizeof(chh_why), "ping answered status %d",
		    (int) r->status);
	}
	chh_resp_free(r);
	return (ok);
}

int
chh_threads(const char *comm)
{
	DIR           *d = opendir("/proc/self/task");
	struct dirent *e;
	int            n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL) {
		char  path[300], name[64] = "";
		FILE *f;

		if (e->d_name[0] == '.') {
			continue;
		}
		if (comm == NULL) {
			n++;
			continue;
		}
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		if ((f = fopen(path, "r")) == NULL) {
			continue; /* the thread just ended */
		}
		if (fgets(name, sizeof(name), f) != NULL) {
			name[strcspn(name, "\n")] = '\0';
			n += strcmp(name, comm) == 0;
		}
		fclose(f);
	}
	closedir(d);
	return (n);
}

int
chh_free_tcp_port(void)
{
	struct sockaddr_in sa;
	socklen_t          len = sizeof(sa);
	int                fd, port;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *) &sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return (port);
}
