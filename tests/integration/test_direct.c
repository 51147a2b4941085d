/*
 * test_direct.c - chan_producer's direct mode (client/libchan/sp.c: a
 * connection of its own on which the producer speaks SP itself) against a
 * real chand: 20,000 messages over tcp in order and exactly once, big
 * frames over tcp, a daemon restarted on the same URL under a parked batch
 * (stopped: the batch is answered SHUTTING_DOWN; killed: no answer, the
 * same request goes again to the new daemon), chan_cancel of a parked
 * batch, and peers that are not chand (a wrong handshake, none, one that
 * hangs up on every request: 4 resends of the same bytes, then
 * UNAVAILABLE).
 *
 * The same suite runs with CHAN_SP_DIRECT=0 (integration.direct_nng: the
 * producer on nng's client, the chan_client's own connection). Where the
 * two must differ (a connection of the producer's own), each test says
 * what it expects of which (direct_mode()).
 *
 * Helper threads never call check's assertions: they record what they saw
 * and the test thread asserts.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4 */
#endif
#include <check.h>
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chan/chan.h>

#include "harness.h"
#include "libchan_check.h"

/* What the library does (client/libchan/sp.c chan_sp_wanted). */
static bool
direct_mode(void)
{
	const char *v = getenv("CHAN_SP_DIRECT");

	return (v == NULL || strcmp(v, "0") != 0);
}

/* The library's message for a failure (an OK leaves the last one, unrelated). */
static const char *
why(chan_status st)
{
	return (st == CHAN_OK ? "" : chan_last_error(NULL));
}

static void
payload(char *buf, size_t cap, uint64_t i)
{
	snprintf(buf, cap, "m%08llu", (unsigned long long) i);
}

/* Index of a payload made by payload(), or UINT64_MAX. */
static uint64_t
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

static chan_stat_info
stat_of(chan_client *c, const char *name)
{
	chan_stat_info st;

	ck_status(chan_stat(c, name, &st), CHAN_OK);
	return (st);
}

/* Waits until the channel shows n parked senders. */
static void
wait_blocked_senders(chan_client *c, const char *name, uint32_t n)
{
	int64_t deadline = chh_now_ms() + chh_scaled_ms(5000);

	while (stat_of(c, name).blocked_senders < n) {
		ck_assert_msg(chh_now_ms() < deadline, "%s: %u parked senders never showed",
		    name, n);
		usleep(10 * 1000);
	}
}

/* The daemon's open connections. */
static uint64_t
connections(chan_client *c)
{
	chan_stats_info si;

	ck_status(chan_stats(c, &si), CHAN_OK);
	return (si.connections);
}

/* Waits until the daemon counts exactly n connections (it learns of them asynchronously). */
static void
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

/* Sends payload(from) .. payload(from + n - 1) through the producer; asserts the tickets. */
static void
produce_n(chan_producer *p, uint64_t from, uint64_t n, uint64_t first_ticket)
{
	char     b[32];
	uint64_t i, t, bad = 0;

	for (i = 0; i < n; i++) {
		payload(b, sizeof(b), from + i);
		ck_status(chan_producer_send(p, b, strlen(b), &t), CHAN_OK);
		bad += t != first_ticket + i;
	}
	ck_assert_msg(bad == 0, "%llu tickets out of order", (unsigned long long) bad);
}

/*
 * Receives exactly payload(from) .. payload(from + n - 1), in order, in
 * batches of up to max, then asserts nothing more is queued. seqs (if not
 * NULL): seqs[i] must be the seq of message from + i.
 */
static void
recv_exactly(chan_client *r, const char *name, uint64_t from, uint64_t n, size_t max,
    const uint64_t *seqs)
{
	chan_msg **ms = calloc(max, sizeof(*ms));
	chan_msg  *m;
	uint64_t   got = 0, last = 0, x;
	size_t     k, i;

	ck_assert_ptr_nonnull(ms);
	while (got < n) {
		ck_status(chan_recv_n(r, name, max, ms, &k, chh_scaled_ms(5000)), CHAN_OK);
		ck_assert_uint_ge(k, 1);
		for (i = 0; i < k; i++) {
			x = payload_index(ms[i]);
			ck_assert_msg(x == from + got, "%s: got message %llu at %llu, expected %llu",
			    name, (unsigned long long) x, (unsigned long long) got,
			    (unsigned long long) (from + got));
			ck_assert_msg(chan_msg_seq(ms[i]) > last, "%s: seq %llu after %llu", name,
			    (unsigned long long) chan_msg_seq(ms[i]), (unsigned long long) last);
			ck_assert_msg(seqs == NULL || seqs[got] == chan_msg_seq(ms[i]),
			    "%s: message %llu has seq %llu, its outcome said %llu", name,
			    (unsigned long long) x, (unsigned long long) chan_msg_seq(ms[i]),
			    (unsigned long long) seqs[got]);
			last = chan_msg_seq(ms[i]);
			got++;
			chan_msg_free(ms[i]);
		}
	}
	free(ms);
	/* Exactly once: nothing after them. */
	ck_status(chan_try_recv(r, name, &m), CHAN_EMPTY);
}

/* ---- outcome recording ---------------------------------------------------------------- */

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

static void
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

static void
outcomes_fini(outcomes *o)
{
	free(o->seqs);
	pthread_mutex_destroy(&o->mtx);
}

static void
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
static outcomes
outcomes_get(outcomes *o)
{
	outcomes v;

	pthread_mutex_lock(&o->mtx);
	v = *o;
	pthread_mutex_unlock(&o->mtx);
	return (v);
}

/* ---- private paths and ports ------------------------------------------------------- */

/*
 * A dir of this run's own for sockets that must outlive one daemon (the
 * harness removes a daemon's dir with it): made by main before the tests
 * (each runs in a forked child) and removed by it after them, with
 * whatever a failed test left in it.
 */
static char own_dir[64];

static const char *const own_files[] = { "r.sock", "g.sock" };

static void
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

static const char *
own_path(const char *file, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/%s", own_dir, file);
	return (buf);
}

/* A free local tcp port (closed again at once: a small race). */
static int
free_tcp_port(void)
{
	struct sockaddr_in sa;
	socklen_t          len = sizeof(sa);
	int                fd, port;

	fd = socket(AF_INET, SOCK_STREAM, 0);
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

/* ---- 20,000 over tcp ----------------------------------------------------------------- */

#define TCP_N 20000

START_TEST(tcp_20k_in_order_exactly_once)
{
	chh_daemon         d;
	char               url[64];
	const char        *args[] = { "--listen", url, NULL };
	chan_client       *c, *r;
	chan_producer     *p;
	chan_producer_opts po;
	outcomes           o, v;
	uint64_t           base;
	size_t             max;

	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", free_tcp_port());
	chh_start(&d, args);
	ck_status(chan_connect(url, &c), CHAN_OK);
	ck_status(chan_connect(url, &r), CHAN_OK);
	/* c and r only (the harness's start-up probe may still be closing). */
	wait_connections(r, 2);
	base = 2;

	outcomes_init(&o, TCP_N);
	chan_producer_opts_init(&po);
	po.on_outcome = on_outcome;
	po.arg = &o;
	ck_status(chan_producer_open(c, "tcp20k", &po, &p), CHAN_OK);
	if (direct_mode()) {
		/* Its own connection, made by open. */
		wait_connections(r, base + 1);
	}
	produce_n(p, 0, TCP_N, 1);
	ck_status(chan_producer_flush(p, chh_scaled_ms(20000)), CHAN_OK);
	ck_assert_uint_eq(chan_producer_accepted(p), TCP_N);
	ck_assert_uint_eq(chan_producer_failed(p), 0);
	if (!direct_mode()) {
		/* nng's client: the producer shares c's connection. */
		ck_assert_uint_eq(connections(r), base);
	}

	/* Every ticket once, in order, OK, with increasing seqs. */
	v = outcomes_get(&o);
	ck_assert_uint_eq(v.n, TCP_N);
	ck_assert_uint_eq(v.ok, TCP_N);
	ck_assert_uint_eq(v.failed, 0);
	ck_assert_uint_eq(v.bad_order, 0);
	ck_assert_uint_eq(v.bad_seq, 0);

	/* The channel got each exactly once, in order, with the seqs the outcomes said. */
	ck_assert_uint_eq(stat_of(r, "tcp20k").total_sent, TCP_N);
	max = chan_max_batch(r) < 1000 ? chan_max_batch(r) : 1000;
	recv_exactly(r, "tcp20k", 0, TCP_N, max, o.seqs);

	ck_status(chan_producer_close(p), CHAN_OK);
	if (direct_mode()) {
		wait_connections(r, base); /* its connection went with it */
	}
	outcomes_fini(&o);
	chan_disconnect(r);
	chan_disconnect(c);
	chh_stop(&d);
}
END_TEST

/*
 * Big frames over tcp: messages up to the daemon's maximum, each many
 * socket buffers long (partial writes and reads on both ends), with
 * contents checked byte for byte.
 */
#define BIG_N 12

static void
big_fill(uint8_t *buf, size_t len, uint64_t k)
{
	uint64_t x = k * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t) x;
	}
}

START_TEST(tcp_large_messages)
{
	chh_daemon     d;
	char           url[64];
	const char    *args[] = { "--listen", url, NULL };
	chan_client   *c, *r;
	chan_producer *p;
	chan_msg      *m;
	uint8_t       *want;
	size_t         max, len[BIG_N];
	uint64_t       k;

	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", free_tcp_port());
	chh_start(&d, args);
	ck_status(chan_connect(url, &c), CHAN_OK);
	ck_status(chan_connect(url, &r), CHAN_OK);
	max = (size_t) chan_max_message_size(c);
	want = malloc(max + 1); /* + 1: the refused one below */
	ck_assert_ptr_nonnull(want);
	ck_status(chan_producer_open(c, "big", NULL, &p), CHAN_OK);
	for (k = 0; k < BIG_N; k++) {
		/* The maximum, one under it, and sizes around a few socket buffers. */
		len[k] = k == 0 ? max : k == 1 ? max - 1 : max / (k + 1) + k * 4097;
		big_fill(want, len[k], k);
		ck_status(chan_producer_send(p, want, len[k], NULL), CHAN_OK);
	}
	ck_status(chan_producer_flush(p, chh_scaled_ms(20000)), CHAN_OK);
	ck_assert_uint_eq(chan_producer_accepted(p), BIG_N);
	for (k = 0; k < BIG_N; k++) {
		ck_status(chan_recv(r, "big", &m, chh_scaled_ms(5000)), CHAN_OK);
		big_fill(want, len[k], k);
		ck_assert_msg(chan_msg_len(m) == len[k] && memcmp(chan_msg_data(m), want,
		    len[k]) == 0, "message %llu: %zu bytes, expected %zu, or other bytes",
		    (unsigned long long) k, chan_msg_len(m), len[k]);
		chan_msg_free(m);
	}
	ck_status(chan_try_recv(r, "big", &m), CHAN_EMPTY);
	/* One over the maximum: refused at once, nothing sent. */
	ck_status(chan_producer_send(p, want, max + 1, NULL), CHAN_TOO_LARGE);
	ck_status(chan_producer_close(p), CHAN_OK);
	free(want);
	chan_disconnect(r);
	chan_disconnect(c);
	chh_stop(&d);
}
END_TEST

/* ---- a daemon restarted under a parked batch ---------------------------------------- */

/*
 * _i bit 0: tcp (else ipc); bit 1: SIGKILL (else SIGTERM, chh_stop).
 *
 * The channel (capacity 10) is full and the producer's first batch is
 * parked in the daemon (the rest of its 5 messages queued behind it).
 * Then the daemon goes and a new one starts on the same URL:
 * - stopped: shutdown answers the parked batch SHUTTING_DOWN (SPEC), so
 *   flush returns that, and nothing is sent again;
 * - killed: no answer; the producer reconnects and sends the same request
 *   to the new daemon, which has no channel yet: auto-created unbounded,
 *   the batch is accepted (exactly once) and flush returns OK.
 * Either way flush returns within a bound, and the producer then delivers
 * new messages to the new daemon.
 */
START_TEST(restart_under_parked_batch)
{
	bool               tcp = (_i & 1) != 0, killed = (_i & 2) != 0;
	chh_daemon         d;
	char               url[192], path[128];
	const char        *args[] = { "--listen", url, NULL };
	chan_client       *c, *r;
	chan_producer     *p;
	chan_producer_opts po;
	chan_status        st;
	outcomes           o, v;
	int64_t            t0, took;
	int                bound = chh_scaled_ms(15000);

	if (tcp) {
		snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", free_tcp_port());
	} else {
		snprintf(url, sizeof(url), "ipc://%s", own_path("r.sock", path, sizeof(path)));
	}
	chh_start(&d, args);
	ck_status(chan_connect(url, &c), CHAN_OK);
	ck_status(chan_create(c, "rs", 10), CHAN_OK);
	{
		char     b[32];
		uint64_t i;

		for (i = 1000; i < 1010; i++) { /* full: m00001000 .. m00001009 */
			payload(b, sizeof(b), i);
			ck_status(chan_send(c, "rs", b, strlen(b), CHAN_WAIT_FOREVER), CHAN_OK);
		}
	}
	outcomes_init(&o, 10);
	chan_producer_opts_init(&po);
	po.on_outcome = on_outcome;
	po.arg = &o;
	ck_status(chan_producer_open(c, "rs", &po, &p), CHAN_OK);
	produce_n(p, 0, 5, 1);
	ck_status(chan_producer_flush(p, 0), CHAN_TIMEOUT); /* sends it, does not wait */
	wait_blocked_senders(c, "rs", 1);
	ck_status(chan_producer_flush(p, 100), CHAN_TIMEOUT); /* parked */
	ck_assert_uint_eq(outcomes_get(&o).n, 0);

	if (killed) {
		chh_kill(&d);
		usleep(300 * 1000); /* a few failed redials: the daemon is really gone */
	} else {
		chh_stop(&d); /* asserts exit 0: a client mid-request does not hold it up */
	}
	chh_start(&d, args);

	t0 = chh_now_ms();
	st = chan_producer_flush(p, bound);
	took = chh_now_ms() - t0;
	ck_assert_msg(st != CHAN_TIMEOUT, "flush did not return within %d ms of the restart "
	    "(%s)", bound, why(st));
	v = outcomes_get(&o);
	ck_assert_msg(v.n == 5, "%llu outcomes for 5 tickets", (unsigned long long) v.n);
	ck_assert_uint_eq(v.bad_order, 0);
	ck_assert_uint_eq(v.bad_seq, 0);

	ck_status(chan_connect(url, &r), CHAN_OK);
	if (killed) {
		/* Sent again to the new daemon, taken once. */
		ck_assert_msg(st == CHAN_OK, "flush after the restart: %s (%s) after %lld ms, "
		    "expected OK (the batch sent again)", chan_status_name(st), why(st),
		    (long long) took);
		ck_assert_uint_eq(v.ok, 5);
		ck_assert_uint_eq(stat_of(r, "rs").total_sent, 5);
		ck_assert(!stat_of(r, "rs").bounded);
	} else {
		ck_assert_msg(st == CHAN_SHUTTING_DOWN, "flush after the restart: %s (%s) after "
		    "%lld ms, expected SHUTTING_DOWN", chan_status_name(st), why(st),
		    (long long) took);
		ck_assert_uint_eq(v.failed, 5);
		ck_assert_int_eq(v.first_fail, CHAN_SHUTTING_DOWN);
		/* Not sent again: the new daemon never heard of the channel. */
		{
			chan_stat_info si;

			ck_status(chan_stat(r, "rs", &si), CHAN_NOT_FOUND);
		}
		ck_status(chan_create(r, "rs", 10), CHAN_OK);
	}

	/* New messages go to the new daemon. */
	produce_n(p, 5, 5, 6);
	ck_status(chan_producer_flush(p, bound), CHAN_OK);
	v = outcomes_get(&o);
	ck_assert_uint_eq(v.n, 10);
	ck_assert_uint_eq(v.ok, killed ? 10 : 5);
	ck_assert_uint_eq(v.bad_order, 0);
	recv_exactly(r, "rs", killed ? 0 : 5, killed ? 10 : 5, 10,
	    killed ? o.seqs : o.seqs + 5);
	ck_status(chan_producer_close(p), CHAN_OK);
	outcomes_fini(&o);
	chan_disconnect(r);
	chan_disconnect(c);
	chh_stop(&d);
	own_dir_clean(false);
}
END_TEST

/* ---- chan_cancel ---------------------------------------------------------------- */

/*
 * chan_cancel(c) reaches the producer (direct: a hook on c wakes its
 * thread, which drops its connection; nng: the call on c is cancelled):
 * the parked batch ends "cancelled" at once, the daemon withdraws it (a
 * blocked send is not stored), and later batches fail the same way.
 */
START_TEST(cancel_parked_batch)
{
	chan_client       *c = connect_ok(), *r = connect_ok();
	chan_producer     *p;
	chan_producer_opts po;
	chan_status        st;
	outcomes           o, v;
	chan_msg          *m;
	int64_t            t0, took, deadline;
	uint64_t           i;

	ck_status(chan_create(c, "pc", 10), CHAN_OK);
	for (i = 1000; i < 1010; i++) { /* full */
		char b[32];

		payload(b, sizeof(b), i);
		ck_status(chan_send(c, "pc", b, strlen(b), CHAN_WAIT_FOREVER), CHAN_OK);
	}
	outcomes_init(&o, 0);
	chan_producer_opts_init(&po);
	po.on_outcome = on_outcome;
	po.arg = &o;
	ck_status(chan_producer_open(c, "pc", &po, &p), CHAN_OK);
	produce_n(p, 0, 5, 1);
	ck_status(chan_producer_flush(p, 0), CHAN_TIMEOUT);
	wait_blocked_senders(r, "pc", 1);

	t0 = chh_now_ms();
	chan_cancel(c);
	st = chan_producer_flush(p, chh_scaled_ms(5000));
	took = chh_now_ms() - t0;
	ck_assert_msg(st == CHAN_UNAVAILABLE, "flush after chan_cancel: %s (%s) after %lld ms, "
	    "expected UNAVAILABLE", chan_status_name(st), why(st), (long long) took);
	ck_assert_msg(strstr(chan_last_error(NULL), "cancel") != NULL,
	    "flush after chan_cancel says: %s", chan_last_error(NULL));
	ck_assert_msg(took < chh_scaled_ms(2000), "flush took %lld ms after chan_cancel",
	    (long long) took);
	v = outcomes_get(&o);
	ck_assert_uint_eq(v.n, 5);
	ck_assert_uint_eq(v.failed, 5);
	ck_assert_int_eq(v.first_fail, CHAN_UNAVAILABLE);
	ck_assert_uint_eq(v.bad_order, 0);

	/* Withdrawn in the daemon: room made now stores none of them. */
	deadline = chh_now_ms() + chh_scaled_ms(5000);
	while (stat_of(r, "pc").blocked_senders > 0) {
		ck_assert_msg(chh_now_ms() < deadline, "the cancelled send stays parked");
		usleep(10 * 1000);
	}
	recv_exactly(r, "pc", 1000, 10, 10, NULL);
	usleep(100 * 1000);
	ck_status(chan_try_recv(r, "pc", &m), CHAN_EMPTY);
	ck_assert_uint_eq(stat_of(r, "pc").total_sent, 10);

	/* Later batches: cancelled too, at once. */
	produce_n(p, 5, 1, 6);
	ck_status(chan_producer_flush(p, chh_scaled_ms(5000)), CHAN_UNAVAILABLE);
	ck_assert_uint_eq(outcomes_get(&o).n, 6);
	ck_status(chan_producer_close(p), CHAN_OK); /* nothing given since that flush */
	ck_status(chan_try_recv(r, "pc", &m), CHAN_EMPTY);
	outcomes_fini(&o);
	chan_disconnect(r);
	chan_disconnect(c);
}
END_TEST

/* ---- peers that are not chand --------------------------------------------------------- */

/*
 * A unix socket server in the test: until armed, its connections are
 * relayed to the real daemon (so chan_connect, and the producer's stat on
 * the client's connection, work through it); once armed, every new one
 * (the direct producer's own) gets a handshake that is not chand's, by
 * mode:
 *   0  SP, but protocol 0x50 (not REP);
 *   1  SP, protocol 0x30 (REQ, as the client itself);
 *   2  not SP at all ("HTTP/1.0");
 *   3  closed at once, no handshake;
 *   4  silent: takes the handshake, says nothing;
 *   5  chand's handshake (REP), then hangs up on every request (each
 *      compared with the one before, byte for byte);
 *   6  half of chand's handshake (4 bytes), then silent.
 */
#define GP_MODES   7
#define GP_CLOSE   3
#define GP_SILENT  4
#define GP_HANGUP  5
#define GP_HALF    6

typedef struct gpeer {
	char        path[100]; /* fits sun_path */
	const char *target; /* the real daemon's socket */
	int         mode;
	int         lfd;
	int         stop[2];
	pthread_t   th;
	int         armed;   /* 0: relay new connections; 1: refuse them */
	int         relayed; /* connections relayed */
	int         refused; /* connections answered with garbage */
	int         got_hello; /* of those, how many sent the 8-byte REQ handshake */
	int         requests;  /* GP_HANGUP: requests read */
	int         req_changes; /* GP_HANGUP: requests not the same as the one before */
	uint8_t    *req;       /* GP_HANGUP: the last request */
	size_t      req_len;
} gpeer;

static int
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

static bool
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
static size_t
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
static uint8_t *
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

/* A connection after arming: answered by mode (gpeer says how). */
static void
gp_refuse(gpeer *g, int fd)
{
	static const uint8_t hs[GP_MODES][8] = {
		{ 0x00, 'S', 'P', 0x00, 0x00, 0x50, 0x00, 0x00 },
		{ 0x00, 'S', 'P', 0x00, 0x00, 0x30, 0x00, 0x00 },
		{ 'H', 'T', 'T', 'P', '/', '1', '.', '0' },
		{ 0 },
		{ 0 },
		{ 0x00, 'S', 'P', 0x00, 0x00, 0x31, 0x00, 0x00 }, /* REP: chand's */
		{ 0x00, 'S', 'P', 0x00 },                         /* its first half */
	};
	static const uint8_t req[8] = { 0x00, 'S', 'P', 0x00, 0x00, 0x30, 0x00, 0x00 };
	uint8_t              in[8], rest[64], *m;
	size_t               len;

	__atomic_add_fetch(&g->refused, 1, __ATOMIC_SEQ_CST);
	if (g->mode == GP_CLOSE) {
		return; /* closed by the caller at once */
	}
	if (gp_read_within(fd, in, sizeof(in), 2000) == sizeof(in) &&
	    memcmp(in, req, sizeof(req)) == 0) {
		__atomic_add_fetch(&g->got_hello, 1, __ATOMIC_SEQ_CST);
	}
	if (g->mode == GP_SILENT) {
		/* Not a word until the client gives up (or 30 s). */
		(void) gp_read_within(fd, rest, sizeof(rest), 30000);
		return;
	}
	if (g->mode == GP_HALF) {
		/* Half a handshake, then nothing until the client gives up (or 30 s). */
		(void) gp_write_all(fd, hs[g->mode], 4);
		(void) gp_read_within(fd, rest, sizeof(rest), 30000);
		return;
	}
	(void) gp_write_all(fd, hs[g->mode], sizeof(hs[g->mode]));
	if (g->mode == GP_HANGUP) {
		/* One request (kept, to compare with the next), then hang up. */
		if ((m = gp_read_msg(fd, &len, 5000)) == NULL) {
			return;
		}
		if (g->req != NULL && (len != g->req_len || memcmp(m, g->req, len) != 0)) {
			__atomic_add_fetch(&g->req_changes, 1, __ATOMIC_SEQ_CST);
		}
		free(g->req);
		g->req = m;
		g->req_len = len;
		__atomic_add_fetch(&g->requests, 1, __ATOMIC_SEQ_CST);
		return;
	}
	/* Until the client hangs up (or 2 s): it must not wait for more. */
	while (gp_read_within(fd, rest, sizeof(rest), 2000) == sizeof(rest)) {
	}
}

/* Moves what from has to to; false: one of them is gone. */
static bool
gp_pump(int from, int to)
{
	char    buf[65536];
	ssize_t n = recv(from, buf, sizeof(buf), MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		return (true);
	}
	return (n > 0 && gp_write_all(to, buf, (size_t) n));
}

#define GP_RELAYS 4

static void *
gp_main(void *arg)
{
	gpeer *g = arg;
	int    a[GP_RELAYS], b[GP_RELAYS], fd, i, n;

	for (i = 0; i < GP_RELAYS; i++) {
		a[i] = b[i] = -1;
	}
	for (;;) {
		struct pollfd pf[2 + 2 * GP_RELAYS];

		pf[0] = (struct pollfd) { .fd = g->stop[0], .events = POLLIN };
		pf[1] = (struct pollfd) { .fd = g->lfd, .events = POLLIN };
		for (i = 0; i < GP_RELAYS; i++) {
			pf[2 + 2 * i] = (struct pollfd) { .fd = a[i], .events = POLLIN };
			pf[3 + 2 * i] = (struct pollfd) { .fd = b[i], .events = POLLIN };
		}
		if ((n = poll(pf, 2 + 2 * GP_RELAYS, -1)) < 0) {
			if (errno == EINTR) {
				continue;
			}
			break;
		}
		if (pf[0].revents != 0) {
			break;
		}
		for (i = 0; i < GP_RELAYS; i++) {
			if (a[i] >= 0 && ((pf[2 + 2 * i].revents != 0 && !gp_pump(a[i], b[i])) ||
			    (pf[3 + 2 * i].revents != 0 && !gp_pump(b[i], a[i])))) {
				close(a[i]);
				close(b[i]);
				a[i] = b[i] = -1;
			}
		}
		if ((pf[1].revents & POLLIN) == 0 ||
		    (fd = accept4(g->lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
			continue;
		}
		/* Relayed until the test arms it (chan_connect makes two connections). */
		for (i = 0; i < GP_RELAYS && a[i] >= 0; i++) {
		}
		if (!__atomic_load_n(&g->armed, __ATOMIC_SEQ_CST) && i < GP_RELAYS &&
		    (b[i] = gp_connect_unix(g->target)) >= 0) {
			a[i] = fd;
			__atomic_add_fetch(&g->relayed, 1, __ATOMIC_SEQ_CST);
		} else {
			gp_refuse(g, fd);
			close(fd);
		}
	}
	for (i = 0; i < GP_RELAYS; i++) {
		if (a[i] >= 0) {
			close(a[i]);
			close(b[i]);
		}
	}
	return (NULL);
}

static void
gp_start(gpeer *g, int mode, const char *target)
{
	struct sockaddr_un sa;

	memset(g, 0, sizeof(*g));
	g->mode = mode;
	g->target = target;
	own_path("g.sock", g->path, sizeof(g->path));
	unlink(g->path);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", g->path);
	g->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(g->lfd, 0);
	ck_assert_int_eq(bind(g->lfd, (struct sockaddr *) &sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(g->lfd, 16), 0);
	ck_assert_int_eq(pipe(g->stop), 0);
	ck_assert_int_eq(pthread_create(&g->th, NULL, gp_main, g), 0);
}

static void
gp_stop(gpeer *g)
{
	ck_assert_int_eq(write(g->stop[1], "x", 1), 1);
	pthread_join(g->th, NULL);
	close(g->stop[0]);
	close(g->stop[1]);
	close(g->lfd);
	unlink(g->path);
	free(g->req);
}

START_TEST(peer_not_chand)
{
	static const chan_status want[GP_HANGUP] = {
		CHAN_PROTOCOL, CHAN_PROTOCOL, CHAN_PROTOCOL, CHAN_UNAVAILABLE, CHAN_UNAVAILABLE,
	};
	/* A silent peer costs the dial's own bound (10 s); the others fail at once. */
	int            limit = chh_scaled_ms(_i == GP_SILENT ? 15000 : 3000);
	gpeer          g;
	char           url[160];
	chan_client   *c, *r;
	chan_producer *p = NULL;
	chan_status    st;
	int64_t        t0, took;

	gp_start(&g, _i, D.sock);
	snprintf(url, sizeof(url), "ipc://%s", g.path);
	/* Through the relay to the real daemon. */
	ck_status(chan_connect(url, &c), CHAN_OK);
	ck_assert_int_ge(__atomic_load_n(&g.relayed, __ATOMIC_SEQ_CST), 1);
	__atomic_store_n(&g.armed, 1, __ATOMIC_SEQ_CST);

	t0 = chh_now_ms();
	st = chan_producer_open(c, "gp", NULL, &p);
	took = chh_now_ms() - t0;
	if (direct_mode()) {
		/* Its own connection meets the impostor: a clear failure, at once. */
		ck_assert_msg(st == want[_i], "open on a peer that is not chand (mode %d): %s "
		    "(%s), expected %s", _i, chan_status_name(st), why(st),
		    chan_status_name(want[_i]));
		ck_assert_msg(strstr(chan_last_error(NULL), g.path) != NULL,
		    "the message does not name the URL: %s", chan_last_error(NULL));
		ck_assert_msg(took < limit, "open took %lld ms to fail", (long long) took);
		ck_assert_int_eq(__atomic_load_n(&g.refused, __ATOMIC_SEQ_CST), 1);
		if (_i != GP_CLOSE) {
			/* It did speak SP first (REQ's 8 bytes). */
			ck_assert_int_eq(__atomic_load_n(&g.got_hello, __ATOMIC_SEQ_CST), 1);
		}
		/* Nothing half-made: a second try fails the same way, c still works. */
		if (_i != GP_SILENT) {
			ck_status(chan_producer_open(c, "gp", NULL, &p), want[_i]);
		}
		ck_status(chan_ping(c, NULL), CHAN_OK);
	} else {
		/* nng's client: the producer rides on c's connection, the relayed one. */
		ck_status(st, CHAN_OK);
		produce_n(p, 0, 3, 1);
		ck_status(chan_producer_close(p), CHAN_OK);
		ck_assert_int_eq(__atomic_load_n(&g.refused, __ATOMIC_SEQ_CST), 0);
		r = connect_ok();
		recv_exactly(r, "gp", 0, 3, 8, NULL);
		chan_disconnect(r);
	}
	chan_disconnect(c);
	gp_stop(&g);
	own_dir_clean(false);
}
END_TEST

/*
 * A peer that shakes hands as chand does and hangs up on every request:
 * the direct producer sends the same request again (byte for byte: same
 * Request.client and id) on each new connection, CHAN_MAX_RESETS (4)
 * times, then the batch fails UNAVAILABLE, and flush says so.
 */
START_TEST(peer_hangs_up_every_request)
{
	gpeer              g;
	char               url[160];
	chan_client       *c, *r;
	chan_producer     *p = NULL;
	chan_producer_opts po;
	outcomes           o, v;
	chan_status        st;
	int64_t            t0, took;

	gp_start(&g, GP_HANGUP, D.sock);
	snprintf(url, sizeof(url), "ipc://%s", g.path);
	ck_status(chan_connect(url, &c), CHAN_OK);
	__atomic_store_n(&g.armed, 1, __ATOMIC_SEQ_CST);
	outcomes_init(&o, 0);
	chan_producer_opts_init(&po);
	po.on_outcome = on_outcome;
	po.arg = &o;
	ck_status(chan_producer_open(c, "hu", &po, &p), CHAN_OK);
	produce_n(p, 0, 1, 1); /* one batch */
	t0 = chh_now_ms();
	st = chan_producer_flush(p, chh_scaled_ms(10000));
	took = chh_now_ms() - t0;
	v = outcomes_get(&o);
	if (direct_mode()) {
		ck_assert_msg(st == CHAN_UNAVAILABLE, "flush: %s (%s) after %lld ms, expected "
		    "UNAVAILABLE", chan_status_name(st), why(st), (long long) took);
		ck_assert_msg(strstr(chan_last_error(NULL), g.path) != NULL,
		    "the message does not name the URL: %s", chan_last_error(NULL));
		/* The first and 4 resends; each the same request. */
		ck_assert_int_eq(__atomic_load_n(&g.requests, __ATOMIC_SEQ_CST), 5);
		ck_assert_int_eq(__atomic_load_n(&g.req_changes, __ATOMIC_SEQ_CST), 0);
		ck_assert_int_eq(__atomic_load_n(&g.refused, __ATOMIC_SEQ_CST), 5);
		ck_assert_uint_eq(v.n, 1);
		ck_assert_uint_eq(v.failed, 1);
		ck_assert_int_eq(v.first_fail, CHAN_UNAVAILABLE);
		ck_assert_uint_eq(chan_producer_failed(p), 1);
		/* A failed batch does not stop the next (stop_on_failure off): a new request, 5 times. */
		produce_n(p, 1, 1, 2);
		ck_status(chan_producer_flush(p, chh_scaled_ms(10000)), CHAN_UNAVAILABLE);
		ck_assert_int_eq(__atomic_load_n(&g.requests, __ATOMIC_SEQ_CST), 10);
		ck_assert_int_eq(__atomic_load_n(&g.req_changes, __ATOMIC_SEQ_CST), 1);
		ck_assert_uint_eq(chan_producer_failed(p), 2);
		ck_status(chan_producer_close(p), CHAN_OK);
		/* Nothing reached the real daemon. */
		r = connect_ok();
		{
			chan_stat_info si;

			ck_status(chan_stat(r, "hu", &si), CHAN_NOT_FOUND);
		}
		chan_disconnect(r);
	} else {
		/* nng's client: the producer rides on c's connection, the relayed one. */
		ck_status(st, CHAN_OK);
		ck_assert_uint_eq(v.ok, 1);
		ck_status(chan_producer_close(p), CHAN_OK);
		ck_assert_int_eq(__atomic_load_n(&g.refused, __ATOMIC_SEQ_CST), 0);
		r = connect_ok();
		recv_exactly(r, "hu", 0, 1, 8, NULL);
		chan_disconnect(r);
	}
	outcomes_fini(&o);
	chan_disconnect(c);
	gp_stop(&g);
	own_dir_clean(false);
}
END_TEST

/*
 * Half of chand's handshake and then silence: the dial's bound (10 s)
 * covers the whole handshake, so open fails UNAVAILABLE in time instead
 * of waiting on the peer for ever.
 */
START_TEST(peer_half_handshake)
{
	gpeer          g;
	char           url[160];
	chan_client   *c;
	chan_producer *p = NULL;
	chan_status    st;
	int64_t        t0, took;

	if (!direct_mode()) {
		return; /* nng's client never dials the impostor (peer_not_chand) */
	}
	gp_start(&g, GP_HALF, D.sock);
	snprintf(url, sizeof(url), "ipc://%s", g.path);
	ck_status(chan_connect(url, &c), CHAN_OK);
	__atomic_store_n(&g.armed, 1, __ATOMIC_SEQ_CST);
	t0 = chh_now_ms();
	st = chan_producer_open(c, "gh", NULL, &p);
	took = chh_now_ms() - t0;
	ck_assert_msg(st == CHAN_UNAVAILABLE, "open on half a handshake: %s (%s)",
	    chan_status_name(st), why(st));
	ck_assert_msg(took < chh_scaled_ms(15000), "open took %lld ms to fail", (long long) took);
	ck_status(chan_ping(c, NULL), CHAN_OK);
	chan_disconnect(c);
	gp_stop(&g);
	own_dir_clean(false);
}
END_TEST

/* An on_outcome callback that holds ticket 1 until the test lets it go. */
typedef struct gate {
	pthread_mutex_t mtx;
	pthread_cond_t  cv;
	bool            open;
	bool            held; /* the callback for ticket 1 is waiting */
} gate;

static void
gate_outcome(void *arg, uint64_t ticket, chan_status st, uint64_t seq)
{
	gate           *g = arg;
	struct timespec ts;

	(void) st;
	(void) seq;
	if (ticket != 1) {
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 20; /* a test that never opens it still ends */
	pthread_mutex_lock(&g->mtx);
	g->held = true;
	pthread_cond_broadcast(&g->cv);
	while (!g->open && pthread_cond_timedwait(&g->cv, &g->mtx, &ts) == 0) {
	}
	pthread_mutex_unlock(&g->mtx);
}

/*
 * A slow on_outcome delays the outcomes after it, never the sending
 * (docs/CLIENT.md): with the callback of ticket 1 held, 100 more messages
 * still reach the channel.
 */
START_TEST(slow_outcome_does_not_stall_sending)
{
	chan_client       *c = connect_ok(), *r = connect_ok();
	chan_producer     *p;
	chan_producer_opts po;
	gate               g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false };
	int64_t            deadline;

	ck_status(chan_create(c, "so", CHAN_UNBOUNDED), CHAN_OK);
	chan_producer_opts_init(&po);
	po.on_outcome = gate_outcome;
	po.arg = &g;
	ck_status(chan_producer_open(c, "so", &po, &p), CHAN_OK);
	produce_n(p, 0, 1, 1);
	pthread_mutex_lock(&g.mtx);
	while (!g.held) {
		pthread_cond_wait(&g.cv, &g.mtx);
	}
	pthread_mutex_unlock(&g.mtx);
	produce_n(p, 1, 100, 2);
	deadline = chh_now_ms() + chh_scaled_ms(5000);
	while (stat_of(r, "so").depth < 101 && chh_now_ms() < deadline) {
		usleep(10 * 1000);
	}
	ck_assert_msg(stat_of(r, "so").depth == 101, "with the callback of ticket 1 held, the "
	    "channel holds %llu of 101 messages", (unsigned long long) stat_of(r, "so").depth);
	pthread_mutex_lock(&g.mtx);
	g.open = true;
	pthread_cond_broadcast(&g.cv);
	pthread_mutex_unlock(&g.mtx);
	ck_status(chan_producer_close(p), CHAN_OK);
	recv_exactly(r, "so", 0, 101, 128, NULL);
	chan_disconnect(c);
	chan_disconnect(r);
}
END_TEST

static Suite *
direct_suite(void)
{
	Suite *s = suite_create("direct");
	TCase *tc;

	tc = tcase_create("producer");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, tcp_20k_in_order_exactly_once);
	tcase_add_test(tc, tcp_large_messages);
	tcase_add_loop_test(tc, restart_under_parked_batch, 0, 4);
	suite_add_tcase(s, tc);

	tc = tcase_create("cancel");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, cancel_parked_batch);
	tcase_add_test(tc, slow_outcome_does_not_stall_sending);
	suite_add_tcase(s, tc);

	tc = tcase_create("impostor");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, peer_not_chand, 0, GP_HANGUP);
	tcase_add_test(tc, peer_hangs_up_every_request);
	tcase_add_test(tc, peer_half_handshake);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	SRunner *sr;
	int      failed;

	signal(SIGPIPE, SIG_IGN);
	snprintf(own_dir, sizeof(own_dir), "/tmp/chan-direct-XXXXXX");
	if (mkdtemp(own_dir) == NULL) {
		perror("mkdtemp");
		return (EXIT_FAILURE);
	}
	sr = srunner_create(direct_suite());
	chh_suite_begin();
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	chh_suite_end();
	own_dir_clean(true);
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
