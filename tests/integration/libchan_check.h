/*
 * libchan_check.h - what the libchan tests (test_libchan.c, test_async.c,
 * test_handles.c, test_direct.c ...) share: a fresh chand per test case
 * (the checked fixture's setup/teardown), a status assertion that prints
 * both names and the library's message, a connect that must work, numbered
 * payloads, waits on a channel's stat, a free tcp port, a producer's
 * outcomes recorded per ticket, a helper process, the daemon's connection
 * count, raw socket helpers for fake peers (gp_*) and a relay in front of
 * the daemon that turns into a fake peer when armed (chh_relay_*). Include it once,
 * after harness.h and chan/chan.h. Everything is static inline so that a
 * suite that does not use a helper gets no unused-function warning.
 */
#ifndef CHAN_LIBCHAN_CHECK_H
#define CHAN_LIBCHAN_CHECK_H

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
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

/* Payload i of the numbered messages: "m%08llu". */
static inline void
payload(char *buf, size_t cap, uint64_t i)
{
	snprintf(buf, cap, "m%08llu", (unsigned long long) i);
}

/* Index of a payload made by payload(), or UINT64_MAX. */
static inline uint64_t
payload_index(const chan_msg *m)
{
	char buf[32];

	if (chan_msg_len(m) == 0 || chan_msg_len(m) >= sizeof(buf)) {
		return (UINT64_MAX);
	}
	memcpy(buf, chan_msg_data(m), chan_msg_len(m));
	buf[chan_msg_len(m)] = '\0';
	return (buf[0] == 'm' ? strtoull(buf + 1, NULL, 10) : UINT64_MAX);
}

/*
 * Sends payload(from) .. payload(from + n - 1) one by one on c; each send
 * bounded (a send that cannot complete fails the test, it does not hang it).
 */
static inline void
send_n(chan_client *c, const char *name, uint64_t from, uint64_t n)
{
	char b[32];

	for (uint64_t i = from; i < from + n; i++) {
		payload(b, sizeof(b), i);
		ck_status(chan_send(c, name, b, strlen(b), chh_scaled_ms(5000)), CHAN_OK);
	}
}

static inline chan_stat_info
stat_of(chan_client *c, const char *name)
{
	chan_stat_info st;

	ck_status(chan_stat(c, name, &st), CHAN_OK);
	return (st);
}

/* Waits until the channel shows n parked senders. */
static inline void
wait_blocked_senders(chan_client *c, const char *name, uint32_t n)
{
	int64_t deadline = chh_now_ms() + chh_scaled_ms(5000);

	while (stat_of(c, name).blocked_senders < n) {
		ck_assert_msg(chh_now_ms() < deadline, "%s: %u parked senders never showed",
		    name, n);
		usleep(10 * 1000);
	}
}

/*
 * Waits until the channel shows exactly n parked receivers (0: a cancelled
 * fetch withdrawn). A channel not there yet has none: a receive creates it
 * when its request arrives, so NOT_FOUND is no failure.
 */
static inline void
wait_blocked_receivers(chan_client *c, const char *name, uint32_t n)
{
	int64_t        deadline = chh_now_ms() + chh_scaled_ms(5000);
	chan_stat_info si;
	chan_status    st;

	while ((st = chan_stat(c, name, &si)) != CHAN_OK || si.blocked_receivers != n) {
		ck_assert_msg(st == CHAN_OK || st == CHAN_NOT_FOUND, "stat %s: %s (%s)", name,
		    chan_status_name(st), chan_last_error(NULL));
		ck_assert_msg(chh_now_ms() < deadline, "%s: %u parked receivers never showed",
		    name, n);
		usleep(10 * 1000);
	}
}

/*
 * What a producer's on_outcome callbacks said (on_outcome with arg = an
 * outcomes): counts, order and seqs checked as they come.
 */
typedef struct outcomes {
	pthread_mutex_t mtx;
	uint64_t        n;         /* callbacks so far */
	uint64_t        bad_order; /* tickets not 1, 2, 3, ... */
	uint64_t        ok, failed;
	chan_status     first_fail;
	uint64_t        bad_seq;   /* OK seqs not increasing, or failed ones not 0 */
	uint64_t        last_seq;
	uint64_t       *seqs;      /* seqs[ticket - 1], cap of them (may be NULL) */
	uint64_t        cap;
} outcomes;

static inline void
outcomes_init(outcomes *o, uint64_t cap)
{
	memset(o, 0, sizeof(*o));
	pthread_mutex_init(&o->mtx, NULL);
	if (cap > 0) {
		o->seqs = calloc(cap, sizeof(*o->seqs));
		ck_assert_ptr_nonnull(o->seqs);
		o->cap = cap;
	}
}

static inline void
outcomes_fini(outcomes *o)
{
	free(o->seqs);
	pthread_mutex_destroy(&o->mtx);
}

static inline void
on_outcome(void *arg, uint64_t ticket, chan_status st, uint64_t seq)
{
	outcomes *o = arg;

	pthread_mutex_lock(&o->mtx);
	if (ticket != o->n + 1) {
		o->bad_order++;
	}
	o->n++;
	if (ticket >= 1 && ticket <= o->cap) {
		o->seqs[ticket - 1] = seq;
	}
	if (st == CHAN_OK) {
		o->ok++;
		if (seq <= o->last_seq) {
			o->bad_seq++;
		}
		o->last_seq = seq;
	} else {
		if (o->failed++ == 0) {
			o->first_fail = st;
		}
		if (seq != 0) {
			o->bad_seq++;
		}
	}
	pthread_mutex_unlock(&o->mtx);
}

/* A consistent copy (the producer thread may still be in the callback). */
static inline outcomes
outcomes_get(outcomes *o)
{
	outcomes v;

	pthread_mutex_lock(&o->mtx);
	v = *o;
	pthread_mutex_unlock(&o->mtx);
	return (v);
}

/* A producer on c whose outcomes go to o (outcomes_init(o, cap) here). */
static inline chan_producer *
producer_with_outcomes(chan_client *c, const char *name, outcomes *o, uint64_t cap)
{
	chan_producer_opts po;
	chan_producer     *p = NULL;

	outcomes_init(o, cap);
	chan_producer_opts_init(&po);
	po.on_outcome = on_outcome;
	po.arg = o;
	ck_status(chan_producer_open(c, name, &po, &p), CHAN_OK);
	return (p);
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

/* ---- shared by test_direct.c and test_lane.c ---------------------------------------- */

/* What the library does (client/libchan/sp.c chan_sp_wanted). */
static inline bool
direct_mode(void)
{
	const char *v = getenv("CHAN_SP_DIRECT");

	return (v == NULL || strcmp(v, "0") != 0);
}

/* The library's message for a failure (an OK leaves the last one, unrelated). */
static inline const char *
why(chan_status st)
{
	return (st == CHAN_OK ? "" : chan_last_error(NULL));
}

/* The daemon's open connections. */
static inline uint64_t
connections(chan_client *c)
{
	chan_stats_info si;

	ck_status(chan_stats(c, &si), CHAN_OK);
	return (si.connections);
}

/* Waits until the daemon counts exactly n connections (it learns of them asynchronously). */
static inline void
wait_connections(chan_client *c, uint64_t n)
{
	int64_t  deadline = chh_now_ms() + chh_scaled_ms(5000);
	uint64_t now;

	while ((now = connections(c)) != n) {
		ck_assert_msg(chh_now_ms() < deadline, "the daemon counts %llu connections, "
		    "expected %llu", (unsigned long long) now, (unsigned long long) n);
		usleep(10 * 1000);
	}
}

/* A connected unix stream socket to path, or -1. */
static inline int
gp_connect_unix(const char *path)
{
	struct sockaddr_un sa;
	int                fd;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		return (-1);
	}
	if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
		close(fd);
		return (-1);
	}
	return (fd);
}

static inline bool
gp_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n <= 0) {
			return (false);
		}
		p += n;
		len -= (size_t) n;
	}
	return (true);
}

/* Reads up to len bytes within ms; returns how many came before EOF or the timeout. */
static inline size_t
gp_read_within(int fd, void *buf, size_t len, int ms)
{
	size_t        got = 0;
	struct pollfd pf = { .fd = fd, .events = POLLIN };

	while (got < len && poll(&pf, 1, ms) == 1) {
		ssize_t n = recv(fd, (char *) buf + got, len - got, 0);

		if (n <= 0) {
			break;
		}
		got += (size_t) n;
	}
	return (got);
}

/* Reads one ipc SP message (type byte, 64-bit length, bytes) within ms; malloc'd, NULL: none. */
static inline uint8_t *
gp_read_msg(int fd, size_t *len, int ms)
{
	uint8_t  head[9], *body;
	uint64_t n = 0;

	if (gp_read_within(fd, head, sizeof(head), ms) != sizeof(head) || head[0] != 0x01) {
		return (NULL);
	}
	for (int i = 1; i < 9; i++) {
		n = n << 8 | head[i];
	}
	if (n == 0 || n > (1u << 20) || (body = malloc((size_t) n)) == NULL) {
		return (NULL);
	}
	if (gp_read_within(fd, body, (size_t) n, ms) != n) {
		free(body);
		return (NULL);
	}
	*len = (size_t) n;
	return (body);
}

/* Moves what from has to to; false: one of them is gone. */
static inline bool
gp_pump(int from, int to)
{
	char    buf[65536];
	ssize_t n = recv(from, buf, sizeof(buf), MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		return (true);
	}
	return (n > 0 && gp_write_all(to, buf, (size_t) n));
}

/*
 * A relay in front of the daemon (chh_relay_*): a thread accepts on a private
 * unix socket and, until armed, relays up to max connections to the daemon's
 * socket (chan_connect works through it). Once armed (or with max relayed
 * already) each new connection is counted in refused and handed to on_armed,
 * the suite's own fake peer, then closed. Arming can also cut the relayed
 * connections, so the client must dial again and meet the fake peer.
 */
#define CHH_RELAY_MAX 4

struct chh_relay;
typedef void (*chh_relay_fn)(struct chh_relay *, int);

typedef struct chh_relay {
	char         path[100]; /* fits sun_path */
	const char  *target;    /* the real daemon's socket */
	int          max;       /* connections relayed at once, <= CHH_RELAY_MAX */
	chh_relay_fn on_armed;  /* what a connection gets once armed */
	void        *arg;       /* the suite's, for on_armed */
	int          lfd;
	int          ctl[2];    /* 'c': arm and cut the relayed ones, 'q': quit */
	pthread_t    th;
	int          armed;     /* atomic: 0 relay new connections, 1 hand them to on_armed */
	int          relayed;   /* atomic: connections relayed */
	int          refused;   /* atomic: connections handed to on_armed */
	int          requests;  /* atomic: chh_relay_keep_request: requests read */
	int          changes;   /* atomic: of those, not the same as the one before */
	uint8_t     *req;       /* the last request read (on the relay's thread only) */
	size_t       req_len;
} chh_relay;

/*
 * For on_armed: reads one request on fd within ms and keeps it, counting it
 * and whether it differs, byte for byte, from the one before.
 */
static inline void
chh_relay_keep_request(chh_relay *r, int fd, int ms)
{
	uint8_t *m;
	size_t   len;

	if ((m = gp_read_msg(fd, &len, ms)) == NULL) {
		return;
	}
	if (r->req != NULL && (len != r->req_len || memcmp(m, r->req, len) != 0)) {
		__atomic_add_fetch(&r->changes, 1, __ATOMIC_SEQ_CST);
	}
	free(r->req);
	r->req = m;
	r->req_len = len;
	__atomic_add_fetch(&r->requests, 1, __ATOMIC_SEQ_CST);
}

/* A new connection: relayed while there is room and not armed, else on_armed's. */
static inline void
chh_relay_accept(chh_relay *r, int *a, int *b)
{
	int fd, i;

	/* accept, not accept4: not every suite that includes this has _GNU_SOURCE. */
	if ((fd = accept(r->lfd, NULL, NULL)) < 0) {
		return;
	}
	(void) fcntl(fd, F_SETFD, FD_CLOEXEC);
	for (i = 0; i < r->max && a[i] >= 0; i++) {
	}
	if (!__atomic_load_n(&r->armed, __ATOMIC_SEQ_CST) && i < r->max &&
	    (b[i] = gp_connect_unix(r->target)) >= 0) {
		a[i] = fd;
		__atomic_add_fetch(&r->relayed, 1, __ATOMIC_SEQ_CST);
		return;
	}
	__atomic_add_fetch(&r->refused, 1, __ATOMIC_SEQ_CST);
	r->on_armed(r, fd);
	close(fd);
}

static inline void *
chh_relay_main(void *arg)
{
	chh_relay *r = arg;
	int        a[CHH_RELAY_MAX], b[CHH_RELAY_MAX], i;
	char       cmd;

	for (i = 0; i < CHH_RELAY_MAX; i++) {
		a[i] = b[i] = -1;
	}
	for (;;) {
		struct pollfd pf[2 + 2 * CHH_RELAY_MAX];

		cmd = 0;
		pf[0] = (struct pollfd) { .fd = r->ctl[0], .events = POLLIN };
		pf[1] = (struct pollfd) { .fd = r->lfd, .events = POLLIN };
		for (i = 0; i < r->max; i++) {
			pf[2 + 2 * i] = (struct pollfd) { .fd = a[i], .events = POLLIN };
			pf[3 + 2 * i] = (struct pollfd) { .fd = b[i], .events = POLLIN };
		}
		if (poll(pf, (nfds_t) (2 + 2 * r->max), -1) < 0) {
			if (errno == EINTR) {
				continue;
			}
			break;
		}
		if (pf[0].revents != 0) {
			if (read(r->ctl[0], &cmd, 1) != 1 || cmd == 'q') {
				break;
			}
		}
		for (i = 0; i < r->max; i++) {
			if (a[i] >= 0 && (cmd == 'c' ||
			    (pf[2 + 2 * i].revents != 0 && !gp_pump(a[i], b[i])) ||
			    (pf[3 + 2 * i].revents != 0 && !gp_pump(b[i], a[i])))) {
				close(a[i]);
				close(b[i]);
				a[i] = b[i] = -1;
			}
		}
		if (cmd == 'c') {
			__atomic_store_n(&r->armed, 1, __ATOMIC_SEQ_CST);
		}
		if ((pf[1].revents & POLLIN) != 0) {
			chh_relay_accept(r, a, b);
		}
	}
	for (i = 0; i < r->max; i++) {
		if (a[i] >= 0) {
			close(a[i]);
			close(b[i]);
		}
	}
	return (NULL);
}

/* Listens on path and relays to target (max at once) until armed. */
static inline void
chh_relay_start(chh_relay *r, const char *path, const char *target, int max,
    chh_relay_fn on_armed, void *arg)
{
	struct sockaddr_un sa;

	ck_assert(max >= 1 && max <= CHH_RELAY_MAX);
	memset(r, 0, sizeof(*r));
	snprintf(r->path, sizeof(r->path), "%s", path);
	r->target = target;
	r->max = max;
	r->on_armed = on_armed;
	r->arg = arg;
	unlink(r->path);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", r->path);
	r->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(r->lfd, 0);
	ck_assert_int_eq(bind(r->lfd, (struct sockaddr *) &sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(r->lfd, 16), 0);
	ck_assert_int_eq(pipe(r->ctl), 0);
	ck_assert_int_eq(pthread_create(&r->th, NULL, chh_relay_main, r), 0);
}

/*
 * From now on every new connection goes to on_armed. cut: the relayed ones
 * are hung up on too; waits until the relay's thread has done both.
 */
static inline void
chh_relay_arm(chh_relay *r, bool cut)
{
	int64_t deadline = chh_now_ms() + chh_scaled_ms(5000);

	if (!cut) {
		__atomic_store_n(&r->armed, 1, __ATOMIC_SEQ_CST);
		return;
	}
	ck_assert_int_eq(write(r->ctl[1], "c", 1), 1);
	while (!__atomic_load_n(&r->armed, __ATOMIC_SEQ_CST)) {
		ck_assert_msg(chh_now_ms() < deadline, "the relay never armed");
		usleep(2 * 1000);
	}
}

static inline void
chh_relay_stop(chh_relay *r)
{
	ck_assert_int_eq(write(r->ctl[1], "q", 1), 1);
	pthread_join(r->th, NULL);
	close(r->ctl[0]);
	close(r->ctl[1]);
	close(r->lfd);
	unlink(r->path);
	free(r->req);
	r->req = NULL;
}

/* ---- a dir of the run's own -------------------------------------------- */

/*
 * For sockets that must outlive one daemon (the harness removes a
 * daemon's dir with it): own_dir_run makes it, runs the suite (each test
 * in a forked child) and removes it after, with whatever a failed test
 * left in it. Tests put their sockets at own_path("r.sock" or "g.sock").
 */
static char own_dir[64] __attribute__((unused));
static const char *const own_files[] __attribute__((unused)) = { "r.sock", "g.sock" };

static inline void
own_dir_clean(bool rm)
{
	char path[128];

	for (size_t i = 0; i < sizeof(own_files) / sizeof(own_files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", own_dir, own_files[i]);
		unlink(path);
	}
	if (rm) {
		rmdir(own_dir);
	}
}

static inline const char *
own_path(const char *file, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/%s", own_dir, file);
	return (buf);
}

/* main's whole body for a suite that needs own_dir: an exit status. */
static inline int
own_dir_run(const char *name, Suite *s)
{
	int failed;

	signal(SIGPIPE, SIG_IGN);
	snprintf(own_dir, sizeof(own_dir), "/tmp/chan-%s-XXXXXX", name);
	if (mkdtemp(own_dir) == NULL) {
		perror("mkdtemp");
		return (EXIT_FAILURE);
	}
	failed = chh_run_suite(s);
	own_dir_clean(true);
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}

#endif
