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
 * chan_consumer's direct mode too (client/libchan/consumer_sp.c): 20,000
 * messages through a tcp consumer exactly once, a daemon killed under a
 * parked fetch (the same fetch goes to the new daemon), a daemon gone
 * mid-stream, custody (a consumer process that dies, a consumer closed
 * with part of a delivery taken), confirmations of an idle consumer sent
 * by a Ping, chan_consumer_cancel over tcp, and peers that are not chand.
 *
 * The same suite runs with CHAN_SP_DIRECT=0 (integration.direct_nng: the
 * producer on nng's client, the chan_client's own connection; the consumer
 * on a chan_connect of its own). Where the two must differ, each test says
 * what it expects of which (direct_mode()).
 *
 * Helper threads never call check's assertions: they record what they saw
 * and the test thread asserts.
 */
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
#include <sys/wait.h>
#include <unistd.h>

#include <chan/chan.h>

#include "harness.h"
#include "libchan_check.h"

/*
 * Waits until nothing of the channel is handed out or parked for: a
 * consumer's connection gone (or its deliveries confirmed) and its fetch
 * withdrawn. The daemon learns of a hang-up asynchronously.
 */
static chan_stat_info
wait_settled(chan_client *c, const char *name)
{
	int64_t        deadline = chh_now_ms() + chh_scaled_ms(5000);
	chan_stat_info st;

	while ((st = stat_of(c, name)).in_flight != 0 || st.blocked_receivers != 0) {
		ck_assert_msg(chh_now_ms() < deadline, "%s: %llu still in flight, %u parked "
		    "receivers", name, (unsigned long long) st.in_flight, st.blocked_receivers);
		usleep(10 * 1000);
	}
	return (st);
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

/* ---- private paths and ports ------------------------------------------------------- */


/*
 * A URL for a daemon of the test's own, one it can restart on the same
 * URL: tcp on a free port, or ipc in own_dir.
 */
static void
own_url(char *url, size_t cap, bool tcp)
{
	char path[128];

	if (tcp) {
		snprintf(url, cap, "tcp://127.0.0.1:%d", chh_free_tcp_port());
	} else {
		snprintf(url, cap, "ipc://%s", own_path("r.sock", path, sizeof(path)));
	}
}

/* ---- 20,000 over tcp ----------------------------------------------------------------- */

#define TCP_N 20000

START_TEST(tcp_20k_in_order_exactly_once)
{
	chh_daemon     d;
	char           url[64];
	const char    *args[] = { "--listen", url, NULL };
	chan_client   *c, *r;
	chan_producer *p;
	outcomes       o, v;
	uint64_t       base;
	size_t         max;

	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", chh_free_tcp_port());
	chh_start(&d, args);
	ck_status(chan_connect(url, &c), CHAN_OK);
	ck_status(chan_connect(url, &r), CHAN_OK);
	/* c and r only (the harness's start-up probe may still be closing). */
	wait_connections(r, 2);
	base = 2;

	p = producer_with_outcomes(c, "tcp20k", &o, TCP_N);
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

	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", chh_free_tcp_port());
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
	bool           tcp = (_i & 1) != 0, killed = (_i & 2) != 0;
	chh_daemon     d;
	char           url[192];
	const char    *args[] = { "--listen", url, NULL };
	chan_client   *c, *r;
	chan_producer *p;
	chan_status    st;
	outcomes       o, v;
	int64_t        t0, took;
	int            bound = chh_scaled_ms(15000);

	own_url(url, sizeof(url), tcp);
	chh_start(&d, args);
	ck_status(chan_connect(url, &c), CHAN_OK);
	ck_status(chan_create(c, "rs", 10), CHAN_OK);
	send_n(c, "rs", 1000, 10); /* full: m00001000 .. m00001009 */
	p = producer_with_outcomes(c, "rs", &o, 10);
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
	chan_client   *c = connect_ok(), *r = connect_ok();
	chan_producer *p;
	chan_status    st;
	outcomes       o, v;
	chan_msg      *m;
	int64_t        t0, took, deadline;

	ck_status(chan_create(c, "pc", 10), CHAN_OK);
	send_n(c, "pc", 1000, 10); /* full */
	p = producer_with_outcomes(c, "pc", &o, 0);
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
 * A relay (chh_relay) in the test: until armed, its connections are
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
	chh_relay r;         /* relays chan_connect's connections until armed */
	int       mode;
	int       got_hello; /* refused connections that sent the 8-byte REQ handshake */
} gpeer;

/* A connection after arming: answered by mode (the gpeer in r->arg says how). */
static void
gp_refuse(chh_relay *r, int fd)
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
	gpeer               *g = r->arg;
	uint8_t              in[8], rest[64];

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
		chh_relay_keep_request(r, fd, 5000);
		return;
	}
	/* Until the client hangs up (or 2 s): it must not wait for more. */
	while (gp_read_within(fd, rest, sizeof(rest), 2000) == sizeof(rest)) {
	}
}

#define GP_RELAYS 4 /* chan_connect makes two connections */

static void
gp_start(gpeer *g, int mode, const char *target)
{
	char path[100];

	memset(g, 0, sizeof(*g));
	g->mode = mode;
	own_path("g.sock", path, sizeof(path));
	chh_relay_start(&g->r, path, target, GP_RELAYS, gp_refuse, g);
}

static void
gp_stop(gpeer *g)
{
	chh_relay_stop(&g->r);
}

/* From now on the impostor refuses every new connection its way. */
static void
gp_arm(gpeer *g)
{
	chh_relay_arm(&g->r, false);
}

/*
 * Starts an impostor of mode in front of the suite's daemon and returns a
 * client connected through it (relayed to the daemon); arm: then armed.
 */
static chan_client *
gp_client(gpeer *g, int mode, bool arm)
{
	char         url[160];
	chan_client *c = NULL;

	gp_start(g, mode, D.sock);
	snprintf(url, sizeof(url), "ipc://%s", g->r.path);
	ck_status(chan_connect(url, &c), CHAN_OK);
	if (arm) {
		gp_arm(g);
	}
	return (c);
}

/* Asserts the library's last message names the impostor's URL. */
static void
gp_assert_named(const gpeer *g)
{
	ck_assert_msg(strstr(chan_last_error(NULL), g->r.path) != NULL,
	    "the message does not name the URL: %s", chan_last_error(NULL));
}

/*
 * What an open (what: "open", "consumer open") that dials its own
 * connection meets on an armed impostor of mode (below GP_HANGUP): the
 * status below, naming the URL, at once (a silent peer: the dial's own
 * bound, 10 s), the one connection refused, and (but for GP_CLOSE) the SP
 * handshake sent first (REQ's 8 bytes).
 */
static void
gp_assert_open_refused(const gpeer *g, int mode, const char *what, chan_status st,
    int64_t took)
{
	static const chan_status want[GP_HANGUP] = {
		CHAN_PROTOCOL, CHAN_PROTOCOL, CHAN_PROTOCOL, CHAN_UNAVAILABLE, CHAN_UNAVAILABLE,
	};
	int limit = chh_scaled_ms(mode == GP_SILENT ? 15000 : 3000);

	ck_assert_msg(st == want[mode], "%s on a peer that is not chand (mode %d): %s (%s), "
	    "expected %s", what, mode, chan_status_name(st), why(st),
	    chan_status_name(want[mode]));
	gp_assert_named(g);
	ck_assert_msg(took < limit, "open took %lld ms to fail", (long long) took);
	ck_assert_int_eq(__atomic_load_n(&g->r.refused, __ATOMIC_SEQ_CST), 1);
	if (mode != GP_CLOSE) {
		ck_assert_int_eq(__atomic_load_n(&g->got_hello, __ATOMIC_SEQ_CST), 1);
	}
}

/* GP_HANGUP: the requests it read, how many differed from the one before, connections refused. */
static void
gp_assert_hangups(const gpeer *g, int requests, int changes, int refused)
{
	ck_assert_int_eq(__atomic_load_n(&g->r.requests, __ATOMIC_SEQ_CST), requests);
	ck_assert_int_eq(__atomic_load_n(&g->r.changes, __ATOMIC_SEQ_CST), changes);
	ck_assert_int_eq(__atomic_load_n(&g->r.refused, __ATOMIC_SEQ_CST), refused);
}

/* Nothing reached the real daemon: it never heard of the channel. */
static void
assert_never_reached_daemon(const char *name)
{
	chan_client   *r = connect_ok();
	chan_stat_info si;

	ck_status(chan_stat(r, name, &si), CHAN_NOT_FOUND);
	chan_disconnect(r);
}

START_TEST(peer_not_chand)
{
	gpeer          g;
	chan_client   *c, *r;
	chan_producer *p = NULL;
	chan_status    st;
	int64_t        t0, took;

	/* Through the relay to the real daemon. */
	c = gp_client(&g, _i, false);
	ck_assert_int_ge(__atomic_load_n(&g.r.relayed, __ATOMIC_SEQ_CST), 1);
	gp_arm(&g);

	t0 = chh_now_ms();
	st = chan_producer_open(c, "gp", NULL, &p);
	took = chh_now_ms() - t0;
	if (direct_mode()) {
		/* Its own connection meets the impostor: a clear failure, at once. */
		gp_assert_open_refused(&g, _i, "open", st, took);
		/* Nothing half-made: a second try fails the same way, c still works. */
		if (_i != GP_SILENT) {
			ck_status(chan_producer_open(c, "gp", NULL, &p), st);
		}
		ck_status(chan_ping(c, NULL), CHAN_OK);
	} else {
		/* nng's client: the producer rides on c's connection, the relayed one. */
		ck_status(st, CHAN_OK);
		produce_n(p, 0, 3, 1);
		ck_status(chan_producer_close(p), CHAN_OK);
		ck_assert_int_eq(__atomic_load_n(&g.r.refused, __ATOMIC_SEQ_CST), 0);
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
	gpeer          g;
	chan_client   *c, *r;
	chan_producer *p;
	outcomes       o, v;
	chan_status    st;
	int64_t        t0, took;

	c = gp_client(&g, GP_HANGUP, true);
	p = producer_with_outcomes(c, "hu", &o, 0);
	produce_n(p, 0, 1, 1); /* one batch */
	t0 = chh_now_ms();
	st = chan_producer_flush(p, chh_scaled_ms(10000));
	took = chh_now_ms() - t0;
	v = outcomes_get(&o);
	if (direct_mode()) {
		ck_assert_msg(st == CHAN_UNAVAILABLE, "flush: %s (%s) after %lld ms, expected "
		    "UNAVAILABLE", chan_status_name(st), why(st), (long long) took);
		gp_assert_named(&g);
		/* The first and 4 resends; each the same request. */
		gp_assert_hangups(&g, 5, 0, 5);
		ck_assert_uint_eq(v.n, 1);
		ck_assert_uint_eq(v.failed, 1);
		ck_assert_int_eq(v.first_fail, CHAN_UNAVAILABLE);
		ck_assert_uint_eq(chan_producer_failed(p), 1);
		/* A failed batch does not stop the next (stop_on_failure off): a new request, 5 times. */
		produce_n(p, 1, 1, 2);
		ck_status(chan_producer_flush(p, chh_scaled_ms(10000)), CHAN_UNAVAILABLE);
		ck_assert_int_eq(__atomic_load_n(&g.r.requests, __ATOMIC_SEQ_CST), 10);
		ck_assert_int_eq(__atomic_load_n(&g.r.changes, __ATOMIC_SEQ_CST), 1);
		ck_assert_uint_eq(chan_producer_failed(p), 2);
		ck_status(chan_producer_close(p), CHAN_OK);
		assert_never_reached_daemon("hu");
	} else {
		/* nng's client: the producer rides on c's connection, the relayed one. */
		ck_status(st, CHAN_OK);
		ck_assert_uint_eq(v.ok, 1);
		ck_status(chan_producer_close(p), CHAN_OK);
		ck_assert_int_eq(__atomic_load_n(&g.r.refused, __ATOMIC_SEQ_CST), 0);
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
	chan_client   *c;
	chan_producer *p = NULL;
	chan_status    st;
	int64_t        t0, took;

	if (!direct_mode()) {
		return; /* nng's client never dials the impostor (peer_not_chand) */
	}
	c = gp_client(&g, GP_HALF, true);
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

/* ---- the consumer ---------------------------------------------------------------- */

/*
 * chan_consumer in direct mode (client/libchan/consumer_sp.c): its own
 * connection, fetches written and answers read by the caller's thread,
 * confirmations riding on the next request of the connection their
 * delivery came over. With CHAN_SP_DIRECT=0 the consumer is on nng's
 * client (a chan_connect of its own): the tests say where the two differ.
 */

/*
 * chan_consumer_recv on a thread of its own, called until it returns OK
 * or calls_max times (a failure is recorded, then a short pause): the test
 * thread asserts on what it saw. A call that never returns is cancelled
 * by krecv_finish, so a hang fails the test instead of its timeout.
 */
typedef struct krecv_job {
	chan_consumer  *k;
	int64_t         timeout; /* of each call */
	int             calls_max;
	pthread_t       th;
	pthread_mutex_t mtx;
	pthread_cond_t  cv;
	bool            done;
	int             calls;
	chan_status     st;         /* of the last call */
	chan_status     first_fail; /* CHAN_OK: none */
	char            why[256];   /* the first failure's message */
	uint64_t        idx;        /* payload_index of the message */
	bool            redel;
	int64_t         took;       /* ms, all calls */
} krecv_job;

static void *
krecv_main(void *arg)
{
	krecv_job *j = arg;
	chan_msg  *m = NULL;
	int64_t    t0 = chh_now_ms();

	for (;;) {
		j->calls++;
		if ((j->st = chan_consumer_recv(j->k, &m, j->timeout)) == CHAN_OK) {
			j->idx = payload_index(m);
			j->redel = chan_msg_redelivered(m);
			chan_msg_free(m);
			break;
		}
		if (j->first_fail == CHAN_OK) {
			j->first_fail = j->st;
			snprintf(j->why, sizeof(j->why), "%s", chan_last_error(NULL));
		}
		if (j->calls >= j->calls_max) {
			break;
		}
		usleep(50 * 1000);
	}
	j->took = chh_now_ms() - t0;
	pthread_mutex_lock(&j->mtx);
	j->done = true;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mtx);
	return (NULL);
}

static void
krecv_start(krecv_job *j, chan_consumer *k, int64_t timeout, int calls_max)
{
	memset(j, 0, sizeof(*j));
	j->k = k;
	j->timeout = timeout;
	j->calls_max = calls_max;
	j->st = j->first_fail = CHAN_OK;
	pthread_mutex_init(&j->mtx, NULL);
	pthread_cond_init(&j->cv, NULL);
	ck_assert_int_eq(pthread_create(&j->th, NULL, krecv_main, j), 0);
}

/* Whether the job is done within ms (0: just look). */
static bool
krecv_done_within(krecv_job *j, int ms)
{
	struct timespec ts;
	bool            done;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long) (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&j->mtx);
	while (!j->done && pthread_cond_timedwait(&j->cv, &j->mtx, &ts) == 0) {
	}
	done = j->done;
	pthread_mutex_unlock(&j->mtx);
	return (done);
}

/*
 * Joins the job; true: it was done within ms. Not done: the consumer is
 * cancelled so the thread ends (the test then fails on false).
 */
static bool
krecv_finish(krecv_job *j, int ms)
{
	bool done = krecv_done_within(j, ms);

	if (!done) {
		chan_consumer_cancel(j->k);
	}
	pthread_join(j->th, NULL);
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mtx);
	return (done);
}

/* A consumer of prefetch (0: the default) messages per fetch. */
static chan_consumer *
consumer_ok(chan_client *c, const char *name, uint32_t prefetch)
{
	chan_consumer_opts ko;
	chan_consumer     *k = NULL;

	chan_consumer_opts_init(&ko);
	ko.prefetch = prefetch;
	ck_status(chan_consumer_open(c, name, &ko, &k), CHAN_OK);
	ck_assert_ptr_nonnull(k);
	return (k);
}

/* Receives payload(from) .. payload(from + n - 1) from k in order, each marked redel or not. */
static void
consume_exactly(chan_consumer *k, uint64_t from, uint64_t n, bool redel)
{
	chan_msg *m;
	uint64_t  i, x, last = 0, bad = 0, bad_seq = 0, bad_redel = 0, first_bad = 0;

	for (i = 0; i < n; i++) {
		ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_OK);
		x = payload_index(m);
		if (x != from + i && bad++ == 0) {
			first_bad = i;
		}
		bad_seq += chan_msg_seq(m) <= last;
		bad_redel += chan_msg_redelivered(m) != redel;
		last = chan_msg_seq(m);
		chan_msg_free(m);
	}
	ck_assert_msg(bad == 0, "%llu of %llu messages out of place, the first at %llu",
	    (unsigned long long) bad, (unsigned long long) n, (unsigned long long) first_bad);
	ck_assert_msg(bad_seq == 0, "%llu seqs not increasing", (unsigned long long) bad_seq);
	ck_assert_msg(bad_redel == 0, "%llu messages %s marked redelivered",
	    (unsigned long long) bad_redel, redel ? "not" : "wrongly");
}

/*
 * Sends payload(0) .. payload(n - 1) to name and returns a consumer
 * (prefetch 10: deliveries of 10) that has received the first `taken`.
 */
static chan_consumer *
consumer_took(chan_client *c, const char *name, uint64_t n, uint64_t taken)
{
	chan_consumer *k;

	send_n(c, name, 0, n);
	k = consumer_ok(c, name, 10);
	consume_exactly(k, 0, taken, false);
	return (k);
}

/*
 * 1. 20,000 messages through a tcp consumer, in order and exactly once;
 * closing it after the last leaves nothing handed out and gives nothing
 * back (every delivery confirmed: the last by the Ping of close).
 */
START_TEST(consumer_tcp_20k_exactly_once)
{
	chh_daemon     d;
	char           url[64];
	const char    *args[] = { "--listen", url, NULL };
	chan_client   *c, *r;
	chan_producer *p;
	chan_consumer *k;
	chan_msg      *m;
	chan_stat_info si;
	uint64_t       base = 2;

	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", chh_free_tcp_port());
	chh_start(&d, args);
	ck_status(chan_connect(url, &c), CHAN_OK);
	ck_status(chan_connect(url, &r), CHAN_OK);
	ck_status(chan_producer_open(c, "k20k", NULL, &p), CHAN_OK);
	produce_n(p, 0, TCP_N, 1);
	ck_status(chan_producer_close(p), CHAN_OK);
	ck_assert_uint_eq(stat_of(r, "k20k").depth, TCP_N);
	if (direct_mode()) {
		/* c and r only (the probe and the producer's own are gone). */
		wait_connections(r, base);
	}

	k = consumer_ok(c, "k20k", 0);
	if (direct_mode()) {
		/* Its own connection, dialled by open. */
		wait_connections(r, base + 1);
	}
	consume_exactly(k, 0, TCP_N, false);
	/* Nothing more: a try answered EMPTY (the fetch parked in the background). */
	ck_status(chan_consumer_recv(k, &m, 0), CHAN_EMPTY);
	ck_assert_uint_eq(chan_consumer_buffered(k), 0);
	chan_consumer_close(k);

	si = wait_settled(r, "k20k");
	ck_assert_uint_eq(si.depth, 0);
	ck_assert_uint_eq(si.total_sent, TCP_N);
	ck_assert_uint_eq(si.total_received, TCP_N);
	ck_assert_uint_eq(si.total_redelivered, 0);
	ck_status(chan_try_recv(r, "k20k", &m), CHAN_EMPTY);
	if (direct_mode()) {
		wait_connections(r, base);
	}
	chan_disconnect(r);
	chan_disconnect(c);
	chh_stop(&d);
}
END_TEST

/*
 * 2. _i bit 0: tcp (else ipc). A consumer parked on an empty channel (a
 * chan_consumer_recv waiting forever) and the daemon SIGKILLed, then a new
 * one started on the same URL. Direct: the consumer redials every 100 ms
 * and writes the same fetch again; the same call gets the first message
 * sent to the new daemon. nng: the consumer's client redials too (nng's
 * dialer) and the receive loop gets it as well.
 */
START_TEST(consumer_restart_while_parked)
{
	bool           tcp = (_i & 1) != 0;
	chh_daemon     d;
	char           url[192];
	const char    *args[] = { "--listen", url, NULL };
	chan_client   *c, *r;
	chan_consumer *k;
	chan_stat_info si;
	krecv_job      j;
	int64_t        t0;
	int            bound = chh_scaled_ms(5000);
	bool           done;

	own_url(url, sizeof(url), tcp);
	chh_start(&d, args);
	ck_status(chan_connect(url, &c), CHAN_OK);
	k = consumer_ok(c, "kr", 0);
	krecv_start(&j, k, CHAN_WAIT_FOREVER, 100);
	wait_blocked_receivers(c, "kr", 1);
	chan_disconnect(c);

	chh_kill(&d);
	usleep(300 * 1000); /* a few failed redials: the daemon is really gone */
	ck_assert_msg(!krecv_done_within(&j, 0), "the receive returned with the daemon gone: "
	    "%s (%s)", chan_status_name(j.first_fail), j.why);
	chh_start(&d, args);
	ck_status(chan_connect(url, &r), CHAN_OK);

	/* The fetch again, parked in the new daemon (which creates the channel for it). */
	wait_blocked_receivers(r, "kr", 1);
	send_n(r, "kr", 7, 1);
	t0 = chh_now_ms();
	done = krecv_finish(&j, bound);
	ck_assert_msg(done, "the message sent to the new daemon did not arrive within %d ms "
	    "(%d calls, %s: %s)", bound, j.calls, chan_status_name(j.first_fail), j.why);
	ck_assert_msg(j.st == CHAN_OK && j.idx == 7 && !j.redel, "after the restart: %s, "
	    "message %llu (redelivered %d)", chan_status_name(j.st), (unsigned long long) j.idx,
	    j.redel);
	/* The same call: no failure on the way. */
	ck_assert_msg(j.calls == 1 && j.first_fail == CHAN_OK, "%d calls, the first failure "
	    "%s (%s)", j.calls, chan_status_name(j.first_fail), j.why);
	ck_assert_int_lt(chh_now_ms() - t0, bound);

	/* And it goes on: more from the new daemon, in order, exactly once. */
	send_n(r, "kr", 8, 3);
	consume_exactly(k, 8, 3, false);
	chan_consumer_close(k);
	si = wait_settled(r, "kr");
	ck_assert_uint_eq(si.depth, 0);
	ck_assert_uint_eq(si.total_received, 4);
	ck_assert_uint_eq(si.total_redelivered, 0);
	chan_disconnect(r);
	chh_stop(&d);
	own_dir_clean(false);
}
END_TEST

/*
 * 3. _i 0: the daemon stopped (SIGTERM), 1: SIGKILLed, mid-stream: the
 * consumer took 15 of 20 messages (prefetch 10: the first delivery
 * confirmed by the fetch now parked, the second taken in half, not
 * confirmed), 4 more are in its buffer. The daemon is in memory: its
 * queue and custody die with it. Expected:
 * - the buffered messages are still handed out (they are local);
 * - then a clear status, never a hang: stopped, the parked fetch was
 *   answered SHUTTING_DOWN (SPEC), told once; killed, nothing answers,
 *   so a bounded receive times out while the consumer redials;
 * - the consumer keeps working with no daemon (TIMEOUT within bounds), and
 *   once a new daemon runs on the URL it receives what is sent there.
 */
START_TEST(consumer_daemon_gone_midstream)
{
	bool           killed = _i == 1;
	chh_daemon     d;
	char           url[192];
	const char    *args[] = { "--listen", url, NULL };
	chan_client   *c, *r;
	chan_consumer *k;
	chan_msg      *m;
	chan_status    st;
	krecv_job      j;
	int64_t        t0, took;
	bool           done;

	own_url(url, sizeof(url), false);
	chh_start(&d, args);
	ck_status(chan_connect(url, &c), CHAN_OK);
	k = consumer_took(c, "km", 20, 16); /* 15 taken, the 16th handed */
	wait_blocked_receivers(c, "km", 1);
	ck_assert_uint_eq(stat_of(c, "km").in_flight, 10); /* the first delivery confirmed */
	ck_assert_uint_eq(chan_consumer_buffered(k), 4);
	chan_disconnect(c);

	if (killed) {
		chh_kill(&d);
	} else {
		chh_stop(&d); /* asserts exit 0: the parked fetch does not hold it up */
	}
	/* What it holds. */
	consume_exactly(k, 16, 4, false);

	/* Then a clear status, within a bound. */
	krecv_start(&j, k, 500, 1);
	done = krecv_finish(&j, chh_scaled_ms(5000));
	ck_assert_msg(done, "a 500 ms receive with the daemon %s never returned",
	    killed ? "killed" : "stopped");
	ck_assert_msg(j.st == (killed ? CHAN_TIMEOUT : CHAN_SHUTTING_DOWN), "the receive after "
	    "the buffer: %s (%s) after %lld ms", chan_status_name(j.st), j.why,
	    (long long) j.took);
	if (killed) {
		/* On time: the Ping that carries its confirmations waits no longer. */
		ck_assert_int_ge(j.took, 450);
		ck_assert_msg(j.took < 500 + chh_scaled_ms(300), "a 500 ms receive took %lld ms",
		    (long long) j.took);
	}

	if (killed) {
		/*
		 * No daemon: a bounded receive returns TIMEOUT, not a hang (the
		 * background fetch is still in flight: its wait is local).
		 * Stopped, that fetch was answered, so the next receive makes a
		 * fetch of its own, which waits for a daemon
		 * (consumer_recv_waits_for_daemon).
		 */
		krecv_start(&j, k, 300, 1);
		done = krecv_finish(&j, chh_scaled_ms(5000));
		ck_assert_msg(done, "a 300 ms receive with no daemon never returned");
		ck_assert_msg(j.st == CHAN_TIMEOUT, "a 300 ms receive with no daemon: %s (%s)",
		    chan_status_name(j.st), j.why);
		ck_assert_int_ge(j.took, 270);
		ck_status(chan_consumer_recv(k, &m, 0), CHAN_EMPTY);
	}

	/* A new daemon (empty: the old queue is gone): what is sent there arrives. */
	chh_start(&d, args);
	ck_status(chan_connect(url, &r), CHAN_OK);
	send_n(r, "km", 100, 2);
	t0 = chh_now_ms();
	while ((st = chan_consumer_recv(k, &m, chh_scaled_ms(5000))) != CHAN_OK &&
	    chh_now_ms() - t0 < chh_scaled_ms(5000)) {
		usleep(10 * 1000);
	}
	took = chh_now_ms() - t0;
	ck_assert_msg(st == CHAN_OK, "after the restart: %s (%s) after %lld ms",
	    chan_status_name(st), why(st), (long long) took);
	ck_assert_uint_eq(payload_index(m), 100);
	chan_msg_free(m);
	consume_exactly(k, 101, 1, false);
	chan_consumer_close(k);
	ck_assert_uint_eq(wait_settled(r, "km").total_redelivered, 0);
	chan_disconnect(r);
	chh_stop(&d);
	own_dir_clean(false);
}
END_TEST

/*
 * A receive that makes a fetch of its own (the buffer empty, nothing in
 * flight) while no daemon runs: its timeout is the daemon's to apply
 * (docs/CLIENT.md "Requests, timeouts and reconnection": no client-side
 * receive timeout; a call made while the daemon is down waits until it is
 * back), so chan_consumer_recv(k, 300) does not return TIMEOUT after
 * 300 ms; the consumer redials every 100 ms, and once a daemon runs on
 * the URL again the fetch goes there and is answered (TIMEOUT by that
 * daemon, 300 ms later); the consumer then goes on. (A consumer whose
 * background fetch is in flight does time out locally instead:
 * consumer_daemon_gone_midstream.) _i 0: stopped (SIGTERM), 1: SIGKILLed.
 */
START_TEST(consumer_recv_waits_for_daemon)
{
	chh_daemon     d;
	char           url[192];
	const char    *args[] = { "--listen", url, NULL };
	chan_client   *c, *r;
	chan_consumer *k;
	krecv_job      j;
	bool           done;

	own_url(url, sizeof(url), false);
	chh_start(&d, args);
	ck_status(chan_connect(url, &c), CHAN_OK);
	ck_status(chan_create(c, "kn", CHAN_UNBOUNDED), CHAN_OK);
	k = consumer_ok(c, "kn", 0);
	chan_disconnect(c);
	if (_i == 1) {
		chh_kill(&d);
	} else {
		chh_stop(&d);
	}
	krecv_start(&j, k, 300, 1);
	ck_assert_msg(!krecv_done_within(&j, 1000), "a 300 ms receive with no daemon returned "
	    "%s (%s) after %lld ms: it waits for the daemon", chan_status_name(j.st), j.why,
	    (long long) j.took);
	chh_start(&d, args);
	done = krecv_finish(&j, chh_scaled_ms(5000));
	ck_assert_msg(done, "the receive did not return within 5 s of the restart");
	ck_assert_msg(j.st == CHAN_TIMEOUT && j.took >= 1000, "the receive after the restart: "
	    "%s (%s) after %lld ms", chan_status_name(j.st), j.why, (long long) j.took);
	ck_status(chan_connect(url, &r), CHAN_OK);
	send_n(r, "kn", 3, 1);
	consume_exactly(k, 3, 1, false);
	chan_consumer_close(k);
	ck_assert_uint_eq(wait_settled(r, "kn").depth, 0);
	chan_disconnect(r);
	chh_stop(&d);
	own_dir_clean(false);
}
END_TEST

/*
 * The consumer of consumer_killed_gives_back, in a process of its own
 * (spawn_helper): prefetch 10 on 20 messages, takes 15 and is handed the
 * 16th: the first delivery complete (its confirmation rides on the fetch
 * the 16th started, parked: the channel is empty), the second half taken.
 * Once that fetch is parked it says so on fd 3 and dies without closing.
 */
static void
kill_helper_main(const char *url, const char *name)
{
	chan_client       *c = NULL;
	chan_consumer     *k = NULL;
	chan_consumer_opts ko;
	chan_msg          *m = NULL;
	chan_stat_info     si;
	int64_t            deadline;

	chan_consumer_opts_init(&ko);
	ko.prefetch = 10;
	if (chan_connect(url, &c) != CHAN_OK || chan_consumer_open(c, name, &ko, &k) != CHAN_OK) {
		_exit(2);
	}
	for (uint64_t i = 0; i < 16; i++) {
		if (chan_consumer_recv(k, &m, 5000) != CHAN_OK || payload_index(m) != i) {
			_exit(3);
		}
		chan_msg_free(m);
	}
	deadline = chh_now_ms() + 5000;
	do {
		if (chan_stat(c, name, &si) != CHAN_OK || chh_now_ms() > deadline) {
			_exit(4);
		}
	} while (si.blocked_receivers == 0 && usleep(10 * 1000) == 0);
	if (write(3, "r", 1) != 1) {
		_exit(5);
	}
	_exit(0);
}

/*
 * A consumer of name went with the n messages from `from` on not
 * confirmed: they are back in the queue (and all it holds), counted
 * redelivered, and a new consumer gets exactly those, marked redelivered.
 */
static void
assert_redelivered(chan_client *c, const char *name, uint64_t from, uint64_t n)
{
	chan_stat_info si = wait_settled(c, name);
	chan_consumer *k;
	chan_msg      *m;

	ck_assert_uint_eq(si.depth, n);
	ck_assert_uint_eq(si.total_redelivered, n);
	k = consumer_ok(c, name, 0);
	consume_exactly(k, from, n, true);
	ck_status(chan_consumer_recv(k, &m, 0), CHAN_EMPTY);
	chan_consumer_close(k);
}

/*
 * 4. Custody over the consumer's connection. A consumer process that dies
 * (kill_helper_main): the confirmed delivery stays taken, the other one,
 * half taken and never confirmed, comes back whole, marked redelivered,
 * to the next receiver. A consumer closed with 4 of a delivery of 10
 * taken: those 4 stay taken (Request.confirm_part), the 6 others come back.
 */
START_TEST(consumer_custody)
{
	chan_client   *c = connect_ok();
	chan_consumer *k;
	chan_stat_info si;
	pid_t          pid;
	int            status;

	send_n(c, "kk", 0, 20);
	pid = spawn_helper("--helper-kconsumer", "kk");
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "helper status %d", status);
	assert_redelivered(c, "kk", 10, 10);
	si = wait_settled(c, "kk");
	ck_assert_uint_eq(si.depth, 0);
	ck_assert_uint_eq(si.total_redelivered, 10);

	/* Closed with part of a delivery taken. */
	k = consumer_took(c, "kp", 10, 4);
	ck_assert_uint_eq(stat_of(c, "kp").in_flight, 10);
	chan_consumer_close(k);
	assert_redelivered(c, "kp", 4, 6);
	ck_assert_uint_eq(wait_settled(c, "kp").depth, 0);
	chan_disconnect(c);
}
END_TEST

/*
 * 5. Idle confirmations: the consumer took all 10 messages and waits for
 * more, its fetch parked in the daemon. The confirmation of the delivery
 * cannot ride on a request (none is made) and goes with a Ping after
 * CHAN_CONFIRM_IDLE_MS (20 ms): the daemon's in_flight drops to 0 within
 * about a second, while the receive is still waiting.
 */
START_TEST(consumer_idle_confirms)
{
	chan_client   *c = connect_ok();
	chan_consumer *k;
	chan_stat_info si;
	krecv_job      j;
	int64_t        deadline;

	k = consumer_took(c, "kidle", 10, 10); /* the 10th handed, not taken yet */
	wait_blocked_receivers(c, "kidle", 1);
	ck_assert_uint_eq(stat_of(c, "kidle").in_flight, 10);

	krecv_start(&j, k, CHAN_WAIT_FOREVER, 1); /* takes the 10th, then waits */
	deadline = chh_now_ms() + chh_scaled_ms(1000);
	while ((si = stat_of(c, "kidle")).in_flight > 0 && chh_now_ms() < deadline) {
		usleep(10 * 1000);
	}
	ck_assert_msg(si.in_flight == 0, "%llu still in flight a second after the last was "
	    "taken", (unsigned long long) si.in_flight);
	ck_assert_msg(!krecv_done_within(&j, 0), "the receive returned: %s (%s)",
	    chan_status_name(j.st), j.why);
	ck_assert_uint_eq(si.blocked_receivers, 1);

	send_n(c, "kidle", 10, 1);
	ck_assert(krecv_finish(&j, chh_scaled_ms(5000)));
	ck_assert_msg(j.st == CHAN_OK && j.idx == 10, "%s, message %llu", chan_status_name(j.st),
	    (unsigned long long) j.idx);
	chan_consumer_close(k);
	si = wait_settled(c, "kidle");
	ck_assert_uint_eq(si.depth, 0);
	ck_assert_uint_eq(si.total_redelivered, 0);
	chan_disconnect(c);
}
END_TEST

/*
 * 6. chan_consumer_cancel of a receive parked on a tcp daemon: it returns
 * UNAVAILABLE "cancelled" at once, the fetch is withdrawn in the daemon
 * while the consumer is still open (a Cancel naming it: no receiver left
 * parked), so a message sent next goes to another client, not BUSY, and
 * nothing is lost or given back.
 */
START_TEST(consumer_cancel_tcp)
{
	chh_daemon     d;
	char           url[64];
	const char    *args[] = { "--listen", url, NULL };
	chan_client   *c, *r;
	chan_consumer *k;
	chan_msg      *m;
	chan_stat_info si;
	krecv_job      j;
	int64_t        t0, took;
	bool           done;

	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", chh_free_tcp_port());
	chh_start(&d, args);
	ck_status(chan_connect(url, &c), CHAN_OK);
	ck_status(chan_connect(url, &r), CHAN_OK);
	ck_status(chan_create(c, "kc", CHAN_UNBOUNDED), CHAN_OK);
	k = consumer_ok(c, "kc", 0);
	krecv_start(&j, k, CHAN_WAIT_FOREVER, 1);
	wait_blocked_receivers(r, "kc", 1);

	t0 = chh_now_ms();
	chan_consumer_cancel(k);
	done = krecv_done_within(&j, chh_scaled_ms(2000));
	took = chh_now_ms() - t0;
	ck_assert_msg(done, "the receive did not return within %lld ms of the cancel",
	    (long long) took);
	ck_assert(krecv_finish(&j, 0));
	ck_assert_msg(j.st == CHAN_UNAVAILABLE && strstr(j.why, "cancel") != NULL,
	    "the cancelled receive: %s (%s)", chan_status_name(j.st), j.why);

	/* Withdrawn with the consumer still open. */
	wait_blocked_receivers(r, "kc", 0);
	send_n(c, "kc", 5, 1);
	ck_status(chan_recv(r, "kc", &m, chh_scaled_ms(5000)), CHAN_OK);
	ck_assert_uint_eq(payload_index(m), 5);
	ck_assert(!chan_msg_redelivered(m));
	chan_msg_free(m);
	/* The cancelled consumer stays cancelled. */
	ck_status(chan_consumer_recv(k, &m, 0), CHAN_UNAVAILABLE);
	chan_consumer_close(k);
	si = wait_settled(r, "kc");
	ck_assert_uint_eq(si.depth, 0);
	ck_assert_uint_eq(si.total_sent, 1);
	ck_assert_uint_eq(si.total_received, 1);
	ck_assert_uint_eq(si.total_redelivered, 0);
	chan_disconnect(r);
	chan_disconnect(c);
	chh_stop(&d);
}
END_TEST

/*
 * 7. chan_consumer_open on a URL whose new connections meet a peer that is
 * not chand (gpeer modes 0-4). Direct: open dials its own connection at
 * once and fails with a clear status (PROTOCOL for a wrong handshake,
 * UNAVAILABLE for none), naming the URL; the client it was opened from
 * still works. nng: open makes its client with chan_connect, whose
 * connections meet the impostor too: UNAVAILABLE, naming the URL, within
 * nng's own bounds (up to 10 s for a silent peer).
 */
START_TEST(consumer_peer_not_chand)
{
	gpeer          g;
	chan_client   *c;
	chan_consumer *k = NULL;
	chan_status    st;
	int64_t        t0, took;

	c = gp_client(&g, _i, true);

	t0 = chh_now_ms();
	st = chan_consumer_open(c, "gk", NULL, &k);
	took = chh_now_ms() - t0;
	if (direct_mode()) {
		gp_assert_open_refused(&g, _i, "consumer open", st, took);
	} else {
		/*
		 * nng's client: its dialer fails (a handshake it refuses or a
		 * reset: at once; silent: its 10 s dial bound) or retries a
		 * wrong protocol until the 5 s Hello bound: UNAVAILABLE either way.
		 */
		ck_assert_msg(st == CHAN_UNAVAILABLE, "consumer open through an impostor (mode "
		    "%d): %s (%s)", _i, chan_status_name(st), why(st));
		gp_assert_named(&g);
		ck_assert_msg(took < chh_scaled_ms(15000), "open took %lld ms to fail",
		    (long long) took);
		ck_assert_int_ge(__atomic_load_n(&g.r.refused, __ATOMIC_SEQ_CST), 1);
	}
	ck_assert_ptr_null(k);
	ck_status(chan_ping(c, NULL), CHAN_OK);
	chan_disconnect(c);
	gp_stop(&g);
	own_dir_clean(false);
}
END_TEST

/*
 * A peer that shakes hands as chand does and hangs up on every request:
 * the direct consumer writes the same fetch (byte for byte: same client
 * and id) on each new connection, CHAN_MAX_RESETS (4) times, then the
 * receive fails UNAVAILABLE. nng: see consumer_peer_not_chand.
 */
START_TEST(consumer_peer_hangs_up_every_fetch)
{
	gpeer          g;
	chan_client   *c;
	chan_consumer *k;
	chan_msg      *m;
	chan_status    st;

	if (!direct_mode()) {
		return; /* nng's client never gets past the impostor (consumer_peer_not_chand) */
	}
	c = gp_client(&g, GP_HANGUP, true);
	k = consumer_ok(c, "khu", 0);
	st = chan_consumer_recv(k, &m, chh_scaled_ms(10000));
	ck_assert_msg(st == CHAN_UNAVAILABLE, "receive: %s (%s), expected UNAVAILABLE",
	    chan_status_name(st), why(st));
	gp_assert_hangups(&g, 5, 0, 5);
	chan_consumer_close(k);
	assert_never_reached_daemon("khu");
	chan_disconnect(c);
	gp_stop(&g);
	own_dir_clean(false);
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

	tc = tcase_create("consumer");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, consumer_tcp_20k_exactly_once);
	tcase_add_loop_test(tc, consumer_restart_while_parked, 0, 2);
	tcase_add_loop_test(tc, consumer_daemon_gone_midstream, 0, 2);
	tcase_add_loop_test(tc, consumer_recv_waits_for_daemon, 0, 2);
	tcase_add_test(tc, consumer_custody);
	tcase_add_test(tc, consumer_idle_confirms);
	tcase_add_test(tc, consumer_cancel_tcp);
	tcase_add_loop_test(tc, consumer_peer_not_chand, 0, GP_HANGUP);
	tcase_add_test(tc, consumer_peer_hangs_up_every_fetch);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "--helper-kconsumer") == 0) {
		kill_helper_main(argv[2], argv[3]); /* spawn_helper's child: never returns */
	}
	return (own_dir_run("direct", direct_suite()));
}
