/*
 * test_engine_cancel.c - Request.cancel in the engine (docs/ENGINE.md
 * "Cancel"): a client withdraws its own earlier requests. Parked ones
 * (recv, send, recv_any, counter wait) leave their queues and are
 * answered UNAVAILABLE "cancelled"; an answer's custody (or lease) goes
 * back to the channel, redelivered; an id not seen yet is refused when it
 * comes; unknown ids change nothing; bad Cancels are INVALID_ARGUMENT.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "engine_harness.h"
#include "engine_int.h" /* shard routing, to put channels on two shards */
#include "wire.h"

#define CLIENT 0xCA11u

static void
setup(void)
{
	chd_engine_opts o;

	th_reset();
	chd_engine_opts_default(&o);
	o.workers = 4;
	o.max_batch = 16;
	th_start(&o, 10, 2000);
	force_client = CLIENT;
}

static void
teardown(void)
{
	th_teardown(); /* every request had exactly one answer */
}

/* ---- builders and checks ------------------------------------------------ */

static treq *
r_cancel(uint32_t conn, const uint64_t *ids, size_t n)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Cancel  c = CHAN__V1__CANCEL__INIT;

	c.ids = (uint64_t *) ids;
	c.n_ids = n;
	m.op_case = CHAN__V1__REQUEST__OP_CANCEL;
	m.cancel = &c;
	return (submit(conn, &m));
}

/* A Cancel of one id; returns how many the daemon found to act on. */
static int64_t
cancel1(uint32_t conn, uint64_t id)
{
	treq               *t = r_cancel(conn, &id, 1);
	Chan__V1__Response *r = answer(t);

	expect_status(t, CHAN_OK);
	ck_assert_int_eq(r->result_case, CHAN__V1__RESPONSE__RESULT_VALUE);
	return (r->value->value);
}

static treq *
r_recvx(uint32_t conn, const char *name, uint32_t max, int64_t timeout,
    uint64_t lease_ms)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Recv    r = CHAN__V1__RECV__INIT;

	r.name = (char *) name;
	r.has_max = max > 0;
	r.max = max;
	r.has_timeout_ms = true;
	r.timeout_ms = timeout;
	r.has_lease_ms = lease_ms > 0;
	r.lease_ms = lease_ms;
	m.op_case = CHAN__V1__REQUEST__OP_RECV;
	m.recv = &r;
	return (submit(conn, &m));
}

static treq *
r_cwait(uint32_t conn, const char *name, int64_t v, int64_t timeout)
{
	Chan__V1__Request     m = CHAN__V1__REQUEST__INIT;
	Chan__V1__CounterWait x = CHAN__V1__COUNTER_WAIT__INIT;

	x.name = (char *) name;
	x.has_op = x.has_value = x.has_timeout_ms = true;
	x.op = CHAN__V1__WAIT_OP__GE;
	x.value = v;
	x.timeout_ms = timeout;
	m.op_case = CHAN__V1__REQUEST__OP_COUNTER_WAIT;
	m.counter_wait = &x;
	return (submit(conn, &m));
}

static treq *
r_cadd(uint32_t conn, const char *name, int64_t delta)
{
	Chan__V1__Request    m = CHAN__V1__REQUEST__INIT;
	Chan__V1__CounterAdd x = CHAN__V1__COUNTER_ADD__INIT;

	x.name = (char *) name;
	x.has_delta = true;
	x.delta = delta;
	m.op_case = CHAN__V1__REQUEST__OP_COUNTER_ADD;
	m.counter_add = &x;
	return (submit(conn, &m));
}

static void
expect_cancelled(treq *t)
{
	expect_status(t, CHAN_UNAVAILABLE);
	ck_assert_str_eq(answer(t)->error, "cancelled");
}

/* The answer of t holds exactly the payloads msgs (in order). */
static void
expect_msgs(treq *t, const char **msgs, size_t n, bool redelivered)
{
	Chan__V1__Response *r = answer(t);

	expect_status(t, CHAN_OK);
	ck_assert_int_eq(r->result_case, CHAN__V1__RESPONSE__RESULT_RECV);
	ck_assert_uint_eq(r->recv->n_messages, n);
	for (size_t i = 0; i < n; i++) {
		Chan__V1__Message *m = r->recv->messages[i];
		ck_assert_uint_eq(m->data.len, strlen(msgs[i]));
		ck_assert(memcmp(m->data.data, msgs[i], m->data.len) == 0);
		ck_assert_int_eq(m->redelivered, redelivered);
	}
}

/* Two channel names owned by different shards. */
static void
two_shards(char *a, char *b, size_t len)
{
	snprintf(a, len, "any-a");
	for (int i = 0; i < 1000; i++) {
		snprintf(b, len, "any-b%d", i);
		if (chd_shard_for_chan(E, a) != chd_shard_for_chan(E, b)) {
			return;
		}
	}
	ck_abort_msg("no two shards");
}

/* ---- parked requests ---------------------------------------------------- */

START_TEST(test_cancel_parked_recv)
{
	treq                  *r;
	Chan__V1__ChannelInfo *ci;
	const char            *m[] = { "next" };

	r = r_recv(1, "pr", -1);
	wait_blocked("pr", 0, 1);
	ck_assert_int_eq(cancel1(1, r->id), 1);
	expect_cancelled(r);
	wait_blocked("pr", 0, 0);
	ci = stat_of("pr");
	ck_assert(!ci->receiver_attached);
	/* The next message waits in the queue, not in a dead receive. */
	expect_status(r_send(2, "pr", "next", 0), CHAN_OK);
	ci = stat_of("pr");
	ck_assert_uint_eq(ci->depth, 1);
	ck_assert_uint_eq(ci->in_flight, 0);
	/* And another connection may receive it (no BUSY). */
	force_client = 0xB0B;
	expect_msgs(r_recv(3, "pr", 0), m, 1, false);
}
END_TEST

START_TEST(test_cancel_parked_recv_with_timer)
{
	treq *r;

	r = r_recv(1, "pt", 60000); /* a finite timeout: a timer to free */
	wait_blocked("pt", 0, 1);
	ck_assert_int_eq(cancel1(1, r->id), 1);
	expect_cancelled(r);
	expect_status(r_send(2, "pt", "x", 0), CHAN_OK);
	ck_assert_uint_eq(stat_of("pt")->depth, 1);
}
END_TEST

START_TEST(test_cancel_parked_sender_lets_next_in)
{
	treq       *big, *small;
	const char *two[] = { "b1", "b2" };
	const char *one[] = { "s1" };
	const char *first[] = { "first" };

	expect_status(r_create(1, "ps", 2), CHAN_OK);
	expect_status(r_send(1, "ps", "first", 0), CHAN_OK);
	big = r_sendv(1, "ps", two, 2, -1, 0);   /* does not fit: parks */
	wait_blocked("ps", 1, 0);
	small = r_sendv(2, "ps", one, 1, -1, 0); /* would fit, waits its turn */
	wait_blocked("ps", 2, 0);
	ck_assert_int_eq(cancel1(1, big->id), 1);
	expect_cancelled(big);
	expect_status(small, CHAN_OK); /* the pump let it in */
	ck_assert_uint_eq(stat_of("ps")->depth, 2);
	ck_assert_uint_eq(stat_of("ps")->blocked_senders, 0);
	ck_assert_uint_eq(stat_of("ps")->total_sent, 2);
	force_client = 0xB0B;
	expect_msgs(r_recv(3, "ps", 0), first, 1, false);
	expect_msgs(r_recv(3, "ps", 0), one, 1, false);
	expect_status(r_recv(3, "ps", 0), CHAN_EMPTY);
}
END_TEST

START_TEST(test_cancel_counter_wait)
{
	treq *w;

	w = r_cwait(1, "cw", 5, -1);
	msleep(20);
	ck_assert(pending(w, 10));
	ck_assert_int_eq(cancel1(1, w->id), 1);
	expect_cancelled(w);
	/* The condition comes true: nobody is left to wake (the teardown
	 * checks the wait got exactly one answer). */
	expect_status(r_cadd(2, "cw", 10), CHAN_OK);
	msleep(20);
}
END_TEST

START_TEST(test_cancel_recv_any)
{
	char        a[32], b[32];
	const char *names[2] = { a, b };
	const char *m[] = { "for-b" };
	treq       *r;

	two_shards(a, b, sizeof(a));
	r = r_recv_any(1, names, 2, -1);
	wait_blocked(a, 0, 1);
	wait_blocked(b, 0, 1);
	ck_assert_int_eq(cancel1(1, r->id), 1);
	expect_cancelled(r);
	wait_blocked(a, 0, 0);
	wait_blocked(b, 0, 0);
	expect_status(r_send(2, b, "for-b", 0), CHAN_OK);
	ck_assert_uint_eq(stat_of(b)->depth, 1);
	force_client = 0xB0B;
	expect_msgs(r_recv(3, b, 0), m, 1, false);
}
END_TEST

/* ---- answered requests -------------------------------------------------- */

START_TEST(test_cancel_answered_gives_custody_back)
{
	treq                  *r, *again;
	Chan__V1__ChannelInfo *ci;
	const char            *m[] = { "m1", "m2" };
	const char            *m3[] = { "m3" };

	expect_status(r_send(1, "ab", "m1", 0), CHAN_OK);
	expect_status(r_send(1, "ab", "m2", 0), CHAN_OK);
	expect_status(r_send(1, "ab", "m3", 0), CHAN_OK);
	r = r_recvx(1, "ab", 2, 0, 0);
	expect_msgs(r, m, 2, false);
	ci = stat_of("ab");
	ck_assert_uint_eq(ci->in_flight, 2);
	ck_assert_uint_eq(ci->depth, 1);
	/* Nobody read that answer: withdraw it. */
	ck_assert_int_eq(cancel1(1, r->id), 1);
	ci = stat_of("ab");
	ck_assert_uint_eq(ci->in_flight, 0);
	ck_assert_uint_eq(ci->depth, 3);
	ck_assert_uint_eq(ci->total_redelivered, 2);
	/* A repeat of the cancelled id is not answered from the cache. */
	force_id = r->id;
	again = r_recvx(1, "ab", 2, 0, 0);
	force_id = 0;
	expect_cancelled(again);
	/* Back at the head, in order, redelivered; the rest as it was. */
	force_client = 0xB0B;
	expect_msgs(r_recvx(2, "ab", 2, 0, 0), m, 2, true);
	expect_msgs(r_recvx(2, "ab", 2, 0, 0), m3, 1, false);
}
END_TEST

START_TEST(test_cancel_answered_lease_is_released)
{
	treq                  *r;
	Chan__V1__ChannelInfo *ci;
	const char            *m[] = { "job" };

	expect_status(r_send(1, "ls", "job", 0), CHAN_OK);
	r = r_recvx(1, "ls", 1, 0, 60000);
	expect_status(r, CHAN_OK);
	ck_assert_uint_eq(stat_of("ls")->in_flight, 1);
	cancel1(1, r->id);
	ci = stat_of("ls");
	ck_assert_uint_eq(ci->in_flight, 0);
	ck_assert_uint_eq(ci->depth, 1);
	force_client = 0xB0B;
	expect_msgs(r_recv(2, "ls", 0), m, 1, true);
}
END_TEST

START_TEST(test_cancel_before_request)
{
	treq                  *r;
	Chan__V1__ChannelInfo *ci;

	expect_status(r_send(1, "bf", "keep", 0), CHAN_OK);
	/* The Cancel overtakes the request it names. */
	ck_assert_int_eq(cancel1(1, 900), 0);
	force_id = 900;
	r = r_recv(1, "bf", -1);
	force_id = 0;
	expect_cancelled(r);
	ci = stat_of("bf");
	ck_assert_uint_eq(ci->depth, 1);
	ck_assert_uint_eq(ci->in_flight, 0);
	ck_assert_uint_eq(ci->blocked_receivers, 0);
	ck_assert(!ci->receiver_attached);
	/* Other ids of the client are not affected, retries included. */
	force_id = 901;
	expect_status(r_send(1, "bf", "more", 0), CHAN_OK);
	expect_status(r_send(1, "bf", "more", 0), CHAN_OK); /* a retry */
	force_id = 0;
	ck_assert_uint_eq(stat_of("bf")->depth, 2);
}
END_TEST

START_TEST(test_cancel_unknown_changes_nothing)
{
	treq                  *s, *r;
	Chan__V1__ChannelInfo *ci;
	uint64_t               d;
	const char            *m[] = { "a" };

	expect_status(r_send(1, "un", "a", 0), CHAN_OK);
	s = r_send(1, "un", "b", 0);
	expect_status(s, CHAN_OK);
	/* Answered without custody: done, cannot be undone. */
	ck_assert_int_eq(cancel1(1, s->id), 0);
	/* Answered and confirmed: nothing left to give back. */
	r = r_recv(1, "un", 0);
	expect_msgs(r, m, 1, false);
	d = answer(r)->delivery;
	{
		Chan__V1__Request m2 = CHAN__V1__REQUEST__INIT;
		Chan__V1__Ping    p = CHAN__V1__PING__INIT;
		m2.op_case = CHAN__V1__REQUEST__OP_PING;
		m2.ping = &p;
		m2.n_confirm = 1;
		m2.confirm = &d;
		expect_status(submit(1, &m2), CHAN_OK);
	}
	ck_assert_int_eq(cancel1(1, r->id), 0);
	/* Too old to be known: its slot (ids are kept 128 deep) holds a
	 * newer id, whose cached answer stays. */
	force_id = 1000 + 128;
	expect_status(r_cadd(1, "unk", 7), CHAN_OK);
	force_id = 0;
	ck_assert_int_eq(cancel1(1, 1000), 0);
	force_id = 1000 + 128;
	ck_assert_int_eq(answer(r_cadd(1, "unk", 7))->value->value, 7);
	force_id = 0;
	ci = stat_of("un");
	ck_assert_uint_eq(ci->depth, 1);
	ck_assert_uint_eq(ci->in_flight, 0);
	ck_assert_uint_eq(ci->total_sent, 2);
	ck_assert_uint_eq(ci->total_redelivered, 0);
	/* A repeat of the send still gets its cached answer. */
	force_id = s->id;
	expect_status(r_send(1, "un", "b", 0), CHAN_OK);
	force_id = 0;
	ck_assert_uint_eq(stat_of("un")->total_sent, 2);
}
END_TEST

START_TEST(test_cancel_is_per_client)
{
	treq *r;

	r = r_recv(1, "pc", -1);
	wait_blocked("pc", 0, 1);
	/* Another client naming the same id names its own request. */
	force_client = 0xB0B;
	ck_assert_int_eq(cancel1(1, r->id), 0);
	force_client = CLIENT;
	ck_assert(pending(r, 50));
	wait_blocked("pc", 0, 1);
	expect_status(r_send(2, "pc", "x", 0), CHAN_OK);
	expect_status(r, CHAN_OK);
}
END_TEST

/* ---- races -------------------------------------------------------------- */

/* One request submitted from its own thread. */
typedef struct racer {
	int         what; /* 0: recv, 1: cancel, 2: send */
	const char *name;
	uint64_t    id;   /* cancel: the id named */
	treq       *t;
} racer;

static void *
racer_main(void *arg)
{
	racer *rc = arg;

	if (rc->what == 0) {
		rc->t = r_recv(1, rc->name, -1);
	} else if (rc->what == 1) {
		rc->t = r_cancel(1, &rc->id, 1);
	} else {
		rc->t = r_send(2, rc->name, "m", 0);
	}
	return (NULL);
}

static void
race(racer *a, racer *b)
{
	pthread_t ta, tb;

	ck_assert_int_eq(pthread_create(&ta, NULL, racer_main, a), 0);
	ck_assert_int_eq(pthread_create(&tb, NULL, racer_main, b), 0);
	ck_assert_int_eq(pthread_join(ta, NULL), 0);
	ck_assert_int_eq(pthread_join(tb, NULL), 0);
}

/*
 * A recv and the Cancel naming it, submitted at once: whichever the
 * engine sees first (the Cancel: a tombstone; the recv: marked while on
 * its way, or parked), the recv ends "cancelled" and nothing stays.
 */
START_TEST(test_cancel_races_its_request)
{
	char                name[32];
	Chan__V1__Response *r;

	for (int i = 0; i < 200; i++) {
		racer rv = { 0, name, 0, NULL }, cn = { 1, name, 0, NULL };

		snprintf(name, sizeof(name), "rr%d", i);
		cn.id = 10000 + (uint64_t) i;
		force_id = cn.id; /* both carry it; a Cancel's own id is unused */
		race(&rv, &cn);
		force_id = 0;
		expect_status(cn.t, CHAN_OK);
		expect_cancelled(rv.t);
		/* No channel at all when the Cancel came first. */
		r = answer(r_stat(1, name));
		if (r->status != CHAN__V1__STATUS__NOT_FOUND) {
			ck_assert_int_eq(r->status, CHAN__V1__STATUS__OK);
			ck_assert_uint_eq(r->stat->blocked_receivers, 0);
			ck_assert(!r->stat->receiver_attached);
		}
	}
}
END_TEST

/*
 * A parked recv, a send and the Cancel at once: the recv ends cancelled
 * or with the message (answered before the Cancel came); either way the
 * message ends up queued, nothing in custody.
 */
START_TEST(test_cancel_races_delivery)
{
	char                   name[32];
	Chan__V1__ChannelInfo *ci;
	int                    got = 0;

	for (int i = 0; i < 200; i++) {
		racer rv = { 0, name, 0, NULL }, cn = { 1, name, 0, NULL };
		racer sd = { 2, name, 0, NULL };
		chan_status st;

		snprintf(name, sizeof(name), "rd%d", i);
		racer_main(&rv);
		wait_blocked(name, 0, 1);
		cn.id = rv.t->id;
		race(&sd, &cn);
		expect_status(sd.t, CHAN_OK);
		expect_status(cn.t, CHAN_OK);
		st = (chan_status) answer(rv.t)->status;
		ck_assert_msg(st == CHAN_OK || st == CHAN_UNAVAILABLE,
		    "recv: %s", chan_status_name(st));
		got += st == CHAN_OK;
		ci = stat_of(name);
		ck_assert_uint_eq(ci->in_flight, 0);
		ck_assert_uint_eq(ci->depth, 1);
		ck_assert_uint_eq(ci->blocked_receivers, 0);
		/* Handed out (to the recv) means given back, redelivered. */
		ck_assert_uint_eq(ci->total_redelivered, ci->total_received);
	}
	(void) got;
}
END_TEST

/* ---- bad input ---------------------------------------------------------- */

START_TEST(test_cancel_bad_input)
{
	uint64_t ids[17];
	treq    *t;

	for (int i = 0; i < 17; i++) {
		ids[i] = (uint64_t) (1000 + i);
	}
	t = r_cancel(1, ids, 0);
	expect_status(t, CHAN_INVALID_ARGUMENT);
	ck_assert_ptr_nonnull(strstr(answer(t)->error, "1 to 16"));
	t = r_cancel(1, ids, 17); /* max_batch is 16 */
	expect_status(t, CHAN_INVALID_ARGUMENT);
	ck_assert_ptr_nonnull(strstr(answer(t)->error, "not 17"));
	ids[3] = 0;
	t = r_cancel(1, ids, 4);
	expect_status(t, CHAN_INVALID_ARGUMENT);
	ck_assert_ptr_nonnull(strstr(answer(t)->error, "is 0"));
	force_client = 0;
	t = r_cancel(1, ids, 1);
	expect_status(t, CHAN_INVALID_ARGUMENT);
	ck_assert_ptr_nonnull(strstr(answer(t)->error, "Request.client"));
	/* Nothing was marked by the refused Cancels, and it keeps serving. */
	force_client = CLIENT;
	force_id = 1000;
	expect_status(r_send(1, "bi", "ok", 0), CHAN_OK);
	force_id = 0;
	ck_assert_uint_eq(stat_of("bi")->depth, 1);
}
END_TEST

static Suite *
cancel_suite(void)
{
	Suite *s = suite_create("engine_cancel");
	TCase *tc = tcase_create("cancel");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_cancel_parked_recv);
	tcase_add_test(tc, test_cancel_parked_recv_with_timer);
	tcase_add_test(tc, test_cancel_parked_sender_lets_next_in);
	tcase_add_test(tc, test_cancel_counter_wait);
	tcase_add_test(tc, test_cancel_recv_any);
	tcase_add_test(tc, test_cancel_answered_gives_custody_back);
	tcase_add_test(tc, test_cancel_answered_lease_is_released);
	tcase_add_test(tc, test_cancel_before_request);
	tcase_add_test(tc, test_cancel_unknown_changes_nothing);
	tcase_add_test(tc, test_cancel_is_per_client);
	tcase_add_test(tc, test_cancel_races_its_request);
	tcase_add_test(tc, test_cancel_races_delivery);
	tcase_add_test(tc, test_cancel_bad_input);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	SRunner *sr = srunner_create(cancel_suite());
	int      failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
