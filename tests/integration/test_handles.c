/*
 * test_handles.c - the coalescing producer and the prefetching consumer
 * (chan_producer_*, chan_consumer_*) against a real chand: order and
 * exactly-once through both, outcomes per ticket, bounded and rendezvous
 * channels, flush and max_buffered, the consumer's limit, prefetch,
 * custody (close, a killed consumer), end of stream and BUSY.
 *
 * Every test gets its own chand (checked fixture). Helper threads never
 * call check's assertions: they record results the test thread asserts.
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chan/chan.h>

#include "harness.h"
#include "libchan_check.h"

/* Asserts m carries payload(i). */
static void
msg_is(const chan_msg *m, uint64_t i)
{
	char want[32];

	payload(want, sizeof(want), i);
	ck_assert_msg(chan_msg_len(m) == strlen(want) &&
	    memcmp(chan_msg_data(m), want, strlen(want)) == 0,
	    "got '%.*s', expected '%s'", (int) chan_msg_len(m),
	    (const char *) chan_msg_data(m), want);
}

/* Waits until the channel's depth is at least n. */
static void
wait_depth(chan_client *c, const char *name, uint64_t n)
{
	int64_t deadline = chh_now_ms() + chh_scaled_ms(5000);

	while (stat_of(c, name).depth < n) {
		ck_assert_msg(chh_now_ms() < deadline, "%s: depth %llu never reached", name,
		    (unsigned long long) n);
		usleep(10 * 1000);
	}
}

static void
helper_main(const char *mode, const char *url, const char *name)
{
	chan_client   *c = NULL;
	chan_consumer *k = NULL;
	chan_msg      *m = NULL;

	if (strcmp(mode, "--helper-consumer") != 0 || chan_connect(url, &c) != CHAN_OK ||
	    chan_consumer_open(c, name, NULL, &k) != CHAN_OK) {
		_exit(2);
	}
	if (chan_consumer_recv(k, &m, CHAN_WAIT_FOREVER) != CHAN_OK) {
		_exit(3);
	}
	if (write(3, "r", 1) != 1) {
		_exit(4);
	}
	/* Dies holding the message it took and the ones prefetched: no close. */
	_exit(0);
}

/* ---- producer ---------------------------------------------------------------------- */

#define BIG_N 100000

typedef struct produce_job {
	chan_producer *p;
	uint64_t       n;
	chan_status    st;
	uint64_t       bad_ticket;
} produce_job;

static void *
produce_thread(void *arg)
{
	produce_job *j = arg;
	char         b[32];
	uint64_t     i, t;

	for (i = 0; i < j->n; i++) {
		payload(b, sizeof(b), i);
		if ((j->st = chan_producer_send(j->p, b, strlen(b), &t)) != CHAN_OK) {
			return (NULL);
		}
		if (t != i + 1) {
			j->bad_ticket++;
		}
	}
	j->st = chan_producer_flush(j->p, CHAN_WAIT_FOREVER);
	return (NULL);
}

START_TEST(producer_100k_in_order_exactly_once)
{
	chan_client *c = connect_ok(), *r = connect_ok();
	produce_job  j = { .n = BIG_N };
	outcomes     o;
	pthread_t    t;
	chan_msg   **msgs = calloc(chan_max_batch(r), sizeof(*msgs));
	chan_msg    *m;
	uint64_t     got = 0, last_seq = 0;
	size_t       n, i;

	j.p = producer_with_outcomes(c, "big", &o, 0);
	ck_assert_int_eq(pthread_create(&t, NULL, produce_thread, &j), 0);
	/* Received while it is produced. */
	while (got < BIG_N) {
		ck_status(chan_recv_n(r, "big", chan_max_batch(r), msgs, &n, chh_scaled_ms(20000)),
		    CHAN_OK);
		for (i = 0; i < n; i++) {
			msg_is(msgs[i], got);
			ck_assert_uint_gt(chan_msg_seq(msgs[i]), last_seq);
			last_seq = chan_msg_seq(msgs[i]);
			got++;
			chan_msg_free(msgs[i]);
		}
	}
	pthread_join(t, NULL);
	ck_status(j.st, CHAN_OK);
	ck_assert_uint_eq(j.bad_ticket, 0);
	ck_status(chan_try_recv(r, "big", &m), CHAN_EMPTY);
	ck_assert_uint_eq(chan_producer_accepted(j.p), BIG_N);
	ck_assert_uint_eq(chan_producer_failed(j.p), 0);
	/* flush returned: every outcome was delivered, in ticket order */
	ck_assert_uint_eq(o.n, BIG_N);
	ck_assert_uint_eq(o.ok, BIG_N);
	ck_assert_uint_eq(o.bad_order, 0);
	ck_assert_uint_eq(o.bad_seq, 0);
	ck_assert_uint_eq(o.last_seq, last_seq);
	ck_status(chan_producer_close(j.p), CHAN_OK);
	free(msgs);
	chan_disconnect(r);
	chan_disconnect(c);
}
END_TEST

typedef struct drain_job {
	chan_client *c;
	const char  *name;
	uint64_t     n;
	uint64_t     got;
	uint64_t     bad;
	chan_status  st;
} drain_job;

static void *
drain_thread(void *arg)
{
	drain_job *j = arg;
	chan_msg  *m;

	while (j->got < j->n) {
		if ((j->st = chan_recv(j->c, j->name, &m, chh_scaled_ms(20000))) != CHAN_OK) {
			return (NULL);
		}
		if (payload_index(m) != j->got) {
			j->bad++;
		}
		j->got++;
		chan_msg_free(m);
	}
	return (NULL);
}

/* Batches larger than a bounded channel's capacity are refused by the daemon: capped. */
static void
produce_through(int64_t capacity, const char *name, uint64_t n)
{
	chan_client   *c = connect_ok(), *r = connect_ok();
	chan_producer *p;
	drain_job      j = { .c = r, .name = name, .n = n };
	outcomes       o;
	pthread_t      t;
	char           b[32];
	uint64_t       i;

	ck_status(chan_create(c, name, capacity), CHAN_OK);
	p = producer_with_outcomes(c, name, &o, 0);
	ck_assert_int_eq(pthread_create(&t, NULL, drain_thread, &j), 0);
	for (i = 0; i < n; i++) {
		payload(b, sizeof(b), i);
		ck_status(chan_producer_send(p, b, strlen(b), NULL), CHAN_OK);
	}
	ck_status(chan_producer_flush(p, CHAN_WAIT_FOREVER), CHAN_OK);
	pthread_join(t, NULL);
	ck_status(j.st, CHAN_OK);
	ck_assert_uint_eq(j.got, n);
	ck_assert_uint_eq(j.bad, 0);
	ck_assert_uint_eq(chan_producer_accepted(p), n);
	ck_assert_uint_eq(o.ok, n);
	ck_assert_uint_eq(o.bad_order, 0);
	ck_status(chan_producer_close(p), CHAN_OK);
	chan_disconnect(r);
	chan_disconnect(c);
}

START_TEST(producer_bounded_capacity_10)
{
	produce_through(10, "cap10", 2000);
}
END_TEST

START_TEST(producer_rendezvous)
{
	produce_through(CHAN_RENDEZVOUS, "rv", 50);
}
END_TEST

START_TEST(producer_closed_channel)
{
	chan_client   *c = connect_ok();
	chan_producer *p;
	outcomes       o;
	uint64_t       i, t;

	ck_status(chan_create(c, "shut", CHAN_UNBOUNDED), CHAN_OK);
	ck_status(chan_close(c, "shut"), CHAN_OK);
	p = producer_with_outcomes(c, "shut", &o, 0);
	for (i = 1; i <= 5; i++) {
		ck_status(chan_producer_send(p, "x", 1, &t), CHAN_OK);
		ck_assert_uint_eq(t, i);
	}
	ck_status(chan_producer_flush(p, CHAN_WAIT_FOREVER), CHAN_CLOSED);
	ck_assert_msg(strstr(chan_last_error(NULL), "shut") != NULL,
	    "flush's message names the channel: %s", chan_last_error(NULL));
	ck_assert_uint_eq(o.n, 5);
	ck_assert_uint_eq(o.failed, 5);
	ck_assert_int_eq(o.first_fail, CHAN_CLOSED);
	ck_assert_uint_eq(o.bad_order, 0);
	ck_assert_uint_eq(o.bad_seq, 0);
	ck_assert_uint_eq(chan_producer_failed(p), 5);
	ck_assert_uint_eq(chan_producer_accepted(p), 0);
	/* The failure was told by that flush; a failure does not stop the next batch. */
	ck_status(chan_producer_flush(p, CHAN_WAIT_FOREVER), CHAN_OK);
	ck_status(chan_producer_send(p, "y", 1, &t), CHAN_OK);
	ck_assert_uint_eq(t, 6);
	ck_status(chan_producer_close(p), CHAN_CLOSED);
	ck_assert_uint_eq(o.failed, 6);
	chan_disconnect(c);
}
END_TEST

START_TEST(producer_stop_on_failure)
{
	chan_client       *c = connect_ok();
	chan_producer     *p;
	chan_producer_opts po;
	outcomes           o;
	chan_status        s = CHAN_OK;
	int                i;

	ck_status(chan_create(c, "stop", CHAN_UNBOUNDED), CHAN_OK);
	ck_status(chan_close(c, "stop"), CHAN_OK);
	outcomes_init(&o, 0);
	chan_producer_opts_init(&po);
	po.on_outcome = on_outcome;
	po.arg = &o;
	po.stop_on_failure = true;
	ck_status(chan_producer_open(c, "stop", &po, &p), CHAN_OK);
	/* Sooner or later a send learns of the failure and refuses at once. */
	for (i = 0; i < 100000 && s == CHAN_OK; i++) {
		s = chan_producer_send(p, "x", 1, NULL);
		if (s == CHAN_OK && i % 64 == 0) {
			usleep(1000);
		}
	}
	ck_status(s, CHAN_CLOSED);
	ck_status(chan_producer_flush(p, CHAN_WAIT_FOREVER), CHAN_CLOSED);
	ck_assert_uint_eq(o.n, (uint64_t) i - 1);
	ck_assert_uint_eq(o.failed, o.n);
	ck_assert_uint_eq(o.bad_order, 0);
	ck_status(chan_producer_close(p), CHAN_OK);
	chan_disconnect(c);
}
END_TEST

START_TEST(producer_no_auto_create)
{
	static const char *const extra[] = { "--no-auto-create", NULL };
	chan_client   *c;
	chan_producer *p;
	outcomes       o;

	chh_stop(&D);
	chh_start(&D, extra);
	c = connect_ok();
	p = producer_with_outcomes(c, "nowhere", &o, 0);
	ck_status(chan_producer_send(p, "a", 1, NULL), CHAN_OK);
	ck_status(chan_producer_send(p, "b", 1, NULL), CHAN_OK);
	ck_status(chan_producer_close(p), CHAN_NOT_FOUND);
	ck_assert_uint_eq(o.failed, 2);
	ck_assert_int_eq(o.first_fail, CHAN_NOT_FOUND);
	chan_disconnect(c);
}
END_TEST

START_TEST(producer_empty_and_too_large)
{
	chan_client   *c = connect_ok();
	chan_producer *p;
	chan_msg      *m;
	size_t         big = (size_t) chan_max_message_size(c) + 1;
	char          *b = calloc(1, big);

	ck_status(chan_producer_open(c, "empty", NULL, &p), CHAN_OK);
	ck_status(chan_producer_send(p, NULL, 0, NULL), CHAN_OK);
	ck_status(chan_producer_send(p, "", 0, NULL), CHAN_OK);
	ck_status(chan_producer_send(p, b, big, NULL), CHAN_TOO_LARGE);
	ck_status(chan_producer_send(p, b, big - 1, NULL), CHAN_OK);
	ck_status(chan_producer_flush(p, CHAN_WAIT_FOREVER), CHAN_OK);
	ck_assert_uint_eq(chan_producer_accepted(p), 3);
	ck_status(chan_recv(c, "empty", &m, 0), CHAN_OK);
	ck_assert_uint_eq(chan_msg_len(m), 0);
	chan_msg_free(m);
	ck_status(chan_recv(c, "empty", &m, 0), CHAN_OK);
	ck_assert_uint_eq(chan_msg_len(m), 0);
	chan_msg_free(m);
	ck_status(chan_recv(c, "empty", &m, 0), CHAN_OK);
	ck_assert_uint_eq(chan_msg_len(m), big - 1);
	chan_msg_free(m);
	ck_status(chan_producer_close(p), CHAN_OK);
	free(b);
	chan_disconnect(c);
}
END_TEST

/* Batches of large messages: what the daemon's request limit lets one Send carry. */
START_TEST(producer_large_messages)
{
	chan_client   *c = connect_ok(), *r = connect_ok();
	chan_producer *p;
	chan_msg      *m;
	size_t         len = (size_t) chan_max_message_size(c);
	char          *b = malloc(len);
	int            i;

	ck_status(chan_producer_open(c, "large", NULL, &p), CHAN_OK);
	for (i = 0; i < 40; i++) {
		memset(b, 'a' + i % 26, len);
		ck_status(chan_producer_send(p, b, len, NULL), CHAN_OK);
	}
	ck_status(chan_producer_flush(p, CHAN_WAIT_FOREVER), CHAN_OK);
	ck_assert_uint_eq(chan_producer_accepted(p), 40);
	for (i = 0; i < 40; i++) {
		ck_status(chan_recv(r, "large", &m, 0), CHAN_OK);
		ck_assert_uint_eq(chan_msg_len(m), len);
		ck_assert_int_eq(((const char *) chan_msg_data(m))[len - 1], 'a' + i % 26);
		chan_msg_free(m);
	}
	ck_status(chan_producer_close(p), CHAN_OK);
	free(b);
	chan_disconnect(r);
	chan_disconnect(c);
}
END_TEST

START_TEST(producer_linger_and_flush)
{
	chan_client       *c = connect_ok(), *r = connect_ok();
	chan_producer     *p;
	chan_producer_opts po;
	chan_msg          *m;
	int64_t            t0, t1;

	chan_producer_opts_init(&po);
	po.linger_us = 60u * 1000u * 1000u; /* a minute: only flush sends */
	ck_status(chan_producer_open(c, "lf", &po, &p), CHAN_OK);
	send_n(c, "lf", 0, 1); /* creates it, holds m0 */
	ck_status(chan_producer_send(p, "m00000001", 9, NULL), CHAN_OK);
	ck_status(chan_producer_send(p, "m00000002", 9, NULL), CHAN_OK);
	usleep(200 * 1000);
	ck_assert_uint_eq(stat_of(c, "lf").depth, 1); /* lingering */
	ck_status(chan_producer_flush(p, CHAN_WAIT_FOREVER), CHAN_OK);
	ck_assert_uint_eq(stat_of(c, "lf").depth, 3);
	ck_assert_uint_eq(chan_producer_accepted(p), 2);
	ck_status(chan_producer_flush(p, 0), CHAN_OK); /* nothing pending */
	ck_status(chan_producer_close(p), CHAN_OK);

	/* linger 300 ms: a lone message goes by itself, not before. */
	po.linger_us = 300u * 1000u;
	ck_status(chan_producer_open(c, "lf", &po, &p), CHAN_OK);
	t0 = chh_now_ms();
	ck_status(chan_producer_send(p, "m00000003", 9, NULL), CHAN_OK);
	wait_depth(c, "lf", 4);
	t1 = chh_now_ms();
	ck_assert_msg(t1 - t0 >= 270, "a lingering message went after %lld ms",
	    (long long) (t1 - t0));
	ck_status(chan_producer_close(p), CHAN_OK);

	/* flush with a timeout: CHAN_TIMEOUT leaves them in flight. */
	ck_status(chan_create(c, "lf1", 1), CHAN_OK);
	send_n(c, "lf1", 0, 1);
	chan_producer_opts_init(&po);
	ck_status(chan_producer_open(c, "lf1", &po, &p), CHAN_OK);
	ck_status(chan_producer_send(p, "m00000001", 9, NULL), CHAN_OK);
	t0 = chh_now_ms();
	ck_status(chan_producer_flush(p, 200), CHAN_TIMEOUT);
	t1 = chh_now_ms();
	ck_assert_msg(t1 - t0 >= 180 && t1 - t0 < chh_scaled_ms(5000),
	    "flush(200) returned after %lld ms", (long long) (t1 - t0));
	ck_status(chan_producer_flush(p, 0), CHAN_TIMEOUT);
	ck_status(chan_recv(r, "lf1", &m, CHAN_WAIT_FOREVER), CHAN_OK); /* makes room */
	msg_is(m, 0);
	chan_msg_free(m);
	ck_status(chan_producer_flush(p, CHAN_WAIT_FOREVER), CHAN_OK);
	ck_status(chan_recv(r, "lf1", &m, CHAN_WAIT_FOREVER), CHAN_OK);
	msg_is(m, 1);
	chan_msg_free(m);
	ck_status(chan_producer_close(p), CHAN_OK);
	chan_disconnect(r);
	chan_disconnect(c);
}
END_TEST

typedef struct send_job {
	chan_producer *p;
	const char    *data;
	chan_status    st;
	volatile bool  done;
} send_job;

static void *
send_thread(void *arg)
{
	send_job *j = arg;

	j->st = chan_producer_send(j->p, j->data, strlen(j->data), NULL);
	j->done = true;
	return (NULL);
}

START_TEST(producer_max_buffered_blocks)
{
	chan_client       *c = connect_ok(), *r = connect_ok();
	chan_producer     *p;
	chan_producer_opts po;
	send_job           j = { .data = "m00000004" };
	pthread_t          t;
	chan_msg          *m;
	uint64_t           i;

	ck_status(chan_create(c, "mb", 1), CHAN_OK);
	send_n(c, "mb", 0, 1); /* full */
	chan_producer_opts_init(&po);
	po.max_buffered = 3;
	ck_status(chan_producer_open(c, "mb", &po, &p), CHAN_OK);
	ck_status(chan_producer_send(p, "m00000001", 9, NULL), CHAN_OK);
	ck_status(chan_producer_send(p, "m00000002", 9, NULL), CHAN_OK);
	ck_status(chan_producer_send(p, "m00000003", 9, NULL), CHAN_OK);
	j.p = p;
	ck_assert_int_eq(pthread_create(&t, NULL, send_thread, &j), 0);
	usleep(300 * 1000);
	ck_assert_msg(!j.done, "the 4th send did not block with max_buffered 3");
	for (i = 0; i < 5; i++) {
		ck_status(chan_recv(r, "mb", &m, chh_scaled_ms(10000)), CHAN_OK);
		msg_is(m, i);
		chan_msg_free(m);
	}
	pthread_join(t, NULL);
	ck_status(j.st, CHAN_OK);
	ck_status(chan_producer_flush(p, CHAN_WAIT_FOREVER), CHAN_OK);
	ck_assert_uint_eq(chan_producer_accepted(p), 4);
	ck_status(chan_producer_close(p), CHAN_OK);
	chan_disconnect(r);
	chan_disconnect(c);
}
END_TEST

/* ---- consumer ---------------------------------------------------------------------- */

START_TEST(consumer_order_and_limit)
{
	chan_client       *c = connect_ok();
	chan_consumer     *k;
	chan_consumer_opts ko;
	chan_msg          *m, *ms[8];
	size_t             n;
	uint64_t           i;

	send_n(c, "lim", 0, 100);
	chan_consumer_opts_init(&ko);
	ko.prefetch = 8;
	ko.limit = 30;
	ck_status(chan_consumer_open(c, "lim", &ko, &k), CHAN_OK);
	for (i = 0; i < 30; i++) {
		ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_OK);
		msg_is(m, i);
		chan_msg_free(m);
	}
	/* Never more than the limit out of the channel. */
	ck_assert_uint_eq(stat_of(c, "lim").depth, 70);
	ck_status(chan_consumer_recv(k, &m, 0), CHAN_OUT_OF_RANGE);
	chan_consumer_close(k);
	ck_assert_uint_eq(stat_of(c, "lim").depth, 70);
	ck_assert_uint_eq(stat_of(c, "lim").in_flight, 0);

	/* The rest, in order, through recv_n. */
	ck_status(chan_consumer_open(c, "lim", NULL, &k), CHAN_OK);
	for (i = 30; i < 100; i += n) {
		size_t x;

		ck_status(chan_consumer_recv_n(k, 8, ms, &n, chh_scaled_ms(5000)), CHAN_OK);
		ck_assert_uint_ge(n, 1);
		ck_assert_uint_le(n, 8);
		for (x = 0; x < n; x++) {
			msg_is(ms[x], i + x);
			ck_assert(!chan_msg_redelivered(ms[x]));
			chan_msg_free(ms[x]);
		}
	}
	ck_status(chan_consumer_recv(k, &m, 0), CHAN_EMPTY);
	chan_consumer_close(k);
	chan_disconnect(c);
}
END_TEST

START_TEST(consumer_prefetches)
{
	chan_client   *c = connect_ok();
	chan_consumer *k;
	chan_msg      *m;
	uint64_t       i;

	send_n(c, "pf", 0, 1000);
	ck_status(chan_consumer_open(c, "pf", NULL, &k), CHAN_OK);
	ck_assert_uint_eq(chan_consumer_buffered(k), 0);
	ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_OK);
	msg_is(m, 0);
	chan_msg_free(m);
	ck_assert_msg(chan_consumer_buffered(k) > 0, "nothing fetched ahead");
	ck_assert_uint_gt(stat_of(c, "pf").in_flight, 0);
	for (i = 1; i < 1000; i++) {
		ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_OK);
		msg_is(m, i);
		chan_msg_free(m);
	}
	chan_consumer_close(k);
	/* All taken: all confirmed, nothing comes back. */
	ck_assert_uint_eq(stat_of(c, "pf").depth, 0);
	ck_assert_uint_eq(stat_of(c, "pf").in_flight, 0);
	ck_assert_uint_eq(stat_of(c, "pf").total_redelivered, 0);
	chan_disconnect(c);
}
END_TEST

/*
 * Receives everything queued on name with a fresh consumer (until EMPTY);
 * seen[i] counts payload i, redel[i] whether it came marked redelivered.
 */
static void
drain_all(chan_client *c, const char *name, uint64_t n, int *seen, bool *redel)
{
	chan_consumer *k;
	chan_msg      *m;
	chan_status    s;
	uint64_t       last = 0, x;
	int64_t        deadline = chh_now_ms() + chh_scaled_ms(5000);

	ck_status(chan_consumer_open(c, name, NULL, &k), CHAN_OK);
	/* A consumer closed (or killed) just before may still be attached for a moment. */
	while ((s = chan_consumer_recv(k, &m, chh_scaled_ms(1000))) == CHAN_BUSY &&
	    chh_now_ms() < deadline) {
		usleep(10 * 1000);
	}
	for (; s == CHAN_OK; s = chan_consumer_recv(k, &m, chh_scaled_ms(1000))) {
		x = payload_index(m);
		ck_assert_uint_lt(x, n);
		ck_assert_msg(last == 0 || chan_msg_seq(m) > last, "seq %llu after %llu",
		    (unsigned long long) chan_msg_seq(m), (unsigned long long) last);
		last = chan_msg_seq(m);
		seen[x]++;
		redel[x] = chan_msg_redelivered(m);
		chan_msg_free(m);
	}
	ck_status(s, CHAN_TIMEOUT);
	chan_consumer_close(k);
}

START_TEST(consumer_close_gives_back_untaken)
{
	chan_client       *c = connect_ok();
	chan_consumer     *k;
	chan_consumer_opts ko;
	chan_msg          *m;
	int                seen[100] = { 0 };
	bool               redel[100] = { false };
	uint64_t           i;

	send_n(c, "gb", 0, 100);
	chan_consumer_opts_init(&ko);
	ko.prefetch = 16;
	ck_status(chan_consumer_open(c, "gb", &ko, &k), CHAN_OK);
	for (i = 0; i < 5; i++) {
		ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_OK);
		msg_is(m, i);
		chan_msg_free(m);
	}
	ck_assert_uint_gt(chan_consumer_buffered(k), 0);
	chan_consumer_close(k);
	drain_all(c, "gb", 100, seen, redel);
	/* None lost: every untaken one exactly once. The taken ones of the
	 * open delivery stay taken (Request.confirm_part at close). */
	for (i = 5; i < 100; i++) {
		ck_assert_msg(seen[i] == 1, "message %llu came %d times", (unsigned long long) i,
		    seen[i]);
	}
	for (i = 0; i < 5; i++) {
		ck_assert_msg(seen[i] == 0, "taken message %llu came back", (unsigned long long) i);
	}
	/* The prefetched ones come back marked; the never-fetched ones do not. */
	for (i = 5; i < 16; i++) {
		ck_assert_msg(redel[i], "prefetched message %llu not marked redelivered",
		    (unsigned long long) i);
	}
	for (i = 32; i < 100; i++) {
		ck_assert_msg(!redel[i], "message %llu marked redelivered", (unsigned long long) i);
	}
	chan_disconnect(c);
}
END_TEST

START_TEST(consumer_close_after_whole_delivery)
{
	chan_client       *c = connect_ok();
	chan_consumer     *k;
	chan_consumer_opts ko;
	chan_msg          *m;
	int                seen[100] = { 0 };
	bool               redel[100] = { false };
	uint64_t           i;

	/* The first answer is exactly what the caller takes: confirmed at close. */
	send_n(c, "wd", 0, 5);
	chan_consumer_opts_init(&ko);
	ko.prefetch = 5;
	ck_status(chan_consumer_open(c, "wd", &ko, &k), CHAN_OK);
	ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_OK);
	chan_msg_free(m);
	send_n(c, "wd", 5, 95);
	for (i = 1; i < 5; i++) {
		ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_OK);
		msg_is(m, i);
		chan_msg_free(m);
	}
	chan_consumer_close(k);
	drain_all(c, "wd", 100, seen, redel);
	for (i = 0; i < 5; i++) {
		ck_assert_msg(seen[i] == 0, "taken message %llu came back", (unsigned long long) i);
	}
	for (i = 5; i < 100; i++) {
		ck_assert_msg(seen[i] == 1, "message %llu came %d times", (unsigned long long) i,
		    seen[i]);
	}
	chan_disconnect(c);
}
END_TEST

START_TEST(consumer_killed_gives_back)
{
	chan_client *c = connect_ok();
	int          seen[200] = { 0 };
	bool         redel[200] = { false };
	pid_t        pid;
	int          status, i, nred = 0;

	send_n(c, "kill", 0, 200);
	pid = spawn_helper("--helper-consumer", "kill");
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "helper status %d", status);
	drain_all(c, "kill", 200, seen, redel);
	/* Even the one it took: it never came back for the next, so never confirmed. */
	for (i = 0; i < 200; i++) {
		ck_assert_msg(seen[i] == 1, "message %d came %d times", i, seen[i]);
		nred += redel[i];
	}
	ck_assert_msg(redel[0], "the message the dead consumer took is not marked redelivered");
	ck_assert_int_ge(nred, 1);
	chan_disconnect(c);
}
END_TEST

START_TEST(consumer_closed_after_drain)
{
	chan_client   *c = connect_ok();
	chan_consumer *k;
	chan_msg      *m;
	uint64_t       i;

	send_n(c, "eos", 0, 3);
	ck_status(chan_close(c, "eos"), CHAN_OK);
	ck_status(chan_consumer_open(c, "eos", NULL, &k), CHAN_OK);
	for (i = 0; i < 3; i++) {
		ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_OK);
		msg_is(m, i);
		chan_msg_free(m);
	}
	ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_CLOSED);
	ck_status(chan_consumer_recv(k, &m, 0), CHAN_CLOSED);
	chan_consumer_close(k);

	/* Closed while a fetch is parked: CLOSED once the buffer is drained. */
	send_n(c, "eos2", 0, 2);
	ck_status(chan_consumer_open(c, "eos2", NULL, &k), CHAN_OK);
	ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_OK);
	chan_msg_free(m);
	wait_blocked_receivers(c, "eos2", 1);
	ck_status(chan_close(c, "eos2"), CHAN_OK);
	ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_OK);
	msg_is(m, 1);
	chan_msg_free(m);
	ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_CLOSED);
	chan_consumer_close(k);
	chan_disconnect(c);
}
END_TEST

START_TEST(consumer_timeouts)
{
	chan_client   *c = connect_ok();
	chan_consumer *k;
	chan_msg      *m;
	int64_t        t0, t1;

	ck_status(chan_consumer_open(c, "tmo", NULL, &k), CHAN_OK);
	ck_status(chan_consumer_recv(k, &m, 0), CHAN_EMPTY);
	t0 = chh_now_ms();
	ck_status(chan_consumer_recv(k, &m, 200), CHAN_TIMEOUT);
	t1 = chh_now_ms();
	ck_assert_msg(t1 - t0 >= 180 && t1 - t0 < chh_scaled_ms(5000), "took %lld ms",
	    (long long) (t1 - t0));
	/* A fetch parked in the background: the wait is local. */
	send_n(c, "tmo", 0, 1);
	ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_OK);
	chan_msg_free(m);
	wait_blocked_receivers(c, "tmo", 1);
	ck_status(chan_consumer_recv(k, &m, 0), CHAN_EMPTY);
	t0 = chh_now_ms();
	ck_status(chan_consumer_recv(k, &m, 200), CHAN_TIMEOUT);
	t1 = chh_now_ms();
	ck_assert_msg(t1 - t0 >= 180 && t1 - t0 < chh_scaled_ms(5000), "took %lld ms",
	    (long long) (t1 - t0));
	send_n(c, "tmo", 1, 1);
	ck_status(chan_consumer_recv(k, &m, chh_scaled_ms(5000)), CHAN_OK);
	msg_is(m, 1);
	chan_msg_free(m);
	chan_consumer_close(k);
	chan_disconnect(c);
}
END_TEST

START_TEST(consumer_busy_while_parked)
{
	chan_client   *c = connect_ok();
	chan_consumer *a, *b;
	chan_msg      *m;
	uint64_t       i;

	send_n(c, "busy", 0, 3);
	ck_status(chan_consumer_open(c, "busy", NULL, &a), CHAN_OK);
	ck_status(chan_consumer_recv(a, &m, chh_scaled_ms(5000)), CHAN_OK);
	chan_msg_free(m);
	/* a fetched all three and parked a fetch for more. */
	wait_blocked_receivers(c, "busy", 1);
	ck_status(chan_consumer_open(c, "busy", NULL, &b), CHAN_OK);
	ck_status(chan_consumer_recv(b, &m, 200), CHAN_BUSY);
	ck_status(chan_recv(c, "busy", &m, 200), CHAN_BUSY);
	chan_consumer_close(a);
	/*
	 * a is gone: b gets its messages back, marked redelivered. a took one
	 * of the answer of three and never the rest: that one stays taken
	 * (Request.confirm_part at close), the other two come back.
	 */
	for (i = 1; i < 3; i++) {
		chan_status    st;
		int64_t        deadline = chh_now_ms() + chh_scaled_ms(5000);

		/* The daemon learns of a's hang-up asynchronously: BUSY until then. */
		while ((st = chan_consumer_recv(b, &m, chh_scaled_ms(5000))) == CHAN_BUSY &&
		    chh_now_ms() < deadline) {
			usleep(10 * 1000);
		}
		ck_status(st, CHAN_OK);
		msg_is(m, i);
		ck_assert(chan_msg_redelivered(m));
		chan_msg_free(m);
	}
	chan_consumer_close(b);
	chan_disconnect(c);
}
END_TEST

typedef struct crecv_job {
	chan_consumer *k;
	chan_status    st;
	int64_t        ms;
} crecv_job;

static void *
crecv_thread(void *arg)
{
	crecv_job *j = arg;
	chan_msg  *m = NULL;
	int64_t    t0 = chh_now_ms();

	j->st = chan_consumer_recv(j->k, &m, CHAN_WAIT_FOREVER);
	j->ms = chh_now_ms() - t0;
	chan_msg_free(j->st == CHAN_OK ? m : NULL);
	return (NULL);
}

START_TEST(consumer_cancel)
{
	chan_client   *c = connect_ok();
	chan_consumer *k;
	crecv_job      j;
	pthread_t      t;

	ck_status(chan_create(c, "cc", CHAN_UNBOUNDED), CHAN_OK);
	ck_status(chan_consumer_open(c, "cc", NULL, &k), CHAN_OK);
	j.k = k;
	ck_assert_int_eq(pthread_create(&t, NULL, crecv_thread, &j), 0);
	wait_blocked_receivers(c, "cc", 1);
	chan_consumer_cancel(k);
	pthread_join(t, NULL);
	ck_status(j.st, CHAN_UNAVAILABLE);
	chan_consumer_close(k);
	/* Nothing was taken from the channel by the cancelled fetch. */
	send_n(c, "cc", 0, 1);
	wait_depth(c, "cc", 1);
	chan_disconnect(c);
}
END_TEST

static Suite *
handles_suite(void)
{
	Suite *s = suite_create("handles");
	TCase *tc;

	tc = tcase_create("producer");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, producer_100k_in_order_exactly_once);
	tcase_add_test(tc, producer_bounded_capacity_10);
	tcase_add_test(tc, producer_rendezvous);
	tcase_add_test(tc, producer_closed_channel);
	tcase_add_test(tc, producer_stop_on_failure);
	tcase_add_test(tc, producer_no_auto_create);
	tcase_add_test(tc, producer_empty_and_too_large);
	tcase_add_test(tc, producer_large_messages);
	tcase_add_test(tc, producer_linger_and_flush);
	tcase_add_test(tc, producer_max_buffered_blocks);
	suite_add_tcase(s, tc);

	tc = tcase_create("consumer");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, consumer_order_and_limit);
	tcase_add_test(tc, consumer_prefetches);
	tcase_add_test(tc, consumer_close_gives_back_untaken);
	tcase_add_test(tc, consumer_close_after_whole_delivery);
	tcase_add_test(tc, consumer_killed_gives_back);
	tcase_add_test(tc, consumer_closed_after_drain);
	tcase_add_test(tc, consumer_timeouts);
	tcase_add_test(tc, consumer_busy_while_parked);
	tcase_add_test(tc, consumer_cancel);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(int argc, char **argv)
{
	int failed;

	if (argc == 4 && strncmp(argv[1], "--helper-", 9) == 0) {
		helper_main(argv[1], argv[2], argv[3]);
	}
	signal(SIGPIPE, SIG_IGN);
	failed = chh_run_suite(handles_suite());
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
