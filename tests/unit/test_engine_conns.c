/*
 * test_engine_conns.c - connection close from the per-connection index
 * (docs/ENGINE.md "Connections"): many connections, each holding a mix of
 * state on several shards, closed in random order from two threads. Every
 * parked request is answered UNAVAILABLE exactly once, custody comes back
 * in seq order marked redelivered, channels whose last registered sender
 * goes are closed, channels deleted while a connection holds state there
 * leave nothing dangling (run it under ASan), and what other connections
 * hold is untouched.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <chan/status.h>

#include "engine.h"
#include "engine_harness.h"
#include "wire.h"

static uint32_t        grace_ms = 1; /* custody grace of the engine */

/* Connections 1..NCONN are closed by the tests; HELPER never is. */
#define HELPER 100000u

static void
start_engine(uint32_t nconn)
{
	chd_engine_opts o;

	chd_engine_opts_default(&o);
	o.workers = 4;
	o.max_batch = 64;
	o.custody_grace_ms = grace_ms;
	ck_assert_int_eq(chd_engine_start(&o, &E), 0);
	for (uint32_t c = 1; c <= nconn; c++) {
		chd_engine_conn_open(E, c, (int) c);
	}
	chd_engine_conn_open(E, HELPER, 1);
}

static void
setup(void)
{
	th_reset();
	grace_ms = 1;
	th_answer_ms = 20000;
	th_stat_conn = HELPER;
}

/* Every request got exactly one answer, whatever the test did. */
static void
teardown(void)
{
	th_teardown();
}

/* ---- request builders --------------------------------------------------- */

static treq *
r_recvx(uint32_t conn, const char *name, uint32_t max, int64_t timeout,
    uint64_t lease)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Recv    r = CHAN__V1__RECV__INIT;

	r.name = (char *) name;
	r.has_max = max > 0;
	r.max = max;
	r.has_timeout_ms = true;
	r.timeout_ms = timeout;
	r.has_lease_ms = lease > 0;
	r.lease_ms = lease;
	m.op_case = CHAN__V1__REQUEST__OP_RECV;
	m.recv = &r;
	return (submit(conn, &m));
}

static treq *
r_cwait(uint32_t conn, const char *name, int64_t v)
{
	Chan__V1__Request     m = CHAN__V1__REQUEST__INIT;
	Chan__V1__CounterWait x = CHAN__V1__COUNTER_WAIT__INIT;

	x.name = (char *) name;
	x.has_op = x.has_value = x.has_timeout_ms = true;
	x.op = CHAN__V1__WAIT_OP__EQ;
	x.value = v;
	x.timeout_ms = -1;
	m.op_case = CHAN__V1__REQUEST__OP_COUNTER_WAIT;
	m.counter_wait = &x;
	return (submit(conn, &m));
}

#define NAME_OP(fn, CASE, Type, INIT, field)                              \
	static treq *fn(uint32_t conn, const char *name)                  \
	{                                                                  \
		Chan__V1__Request m = CHAN__V1__REQUEST__INIT;             \
		Type              x = INIT;                                \
		x.name = (char *) name;                                    \
		m.op_case = CHAN__V1__REQUEST__OP_##CASE;                  \
		m.field = &x;                                              \
		return (submit(conn, &m));                                 \
	}
NAME_OP(r_delete, DELETE, Chan__V1__Delete, CHAN__V1__DELETE__INIT, delete_)
NAME_OP(r_sender_open, SENDER_OPEN, Chan__V1__SenderOpen,
    CHAN__V1__SENDER_OPEN__INIT, sender_open)
NAME_OP(r_receiver_open, RECEIVER_OPEN, Chan__V1__ReceiverOpen,
    CHAN__V1__RECEIVER_OPEN__INIT, receiver_open)

/* ---- helpers ------------------------------------------------------------ */

static uint64_t
handle_of(treq *t)
{
	Chan__V1__Response *r = answer(t);

	expect_status(t, CHAN_OK);
	ck_assert_int_eq(r->result_case, CHAN__V1__RESPONSE__RESULT_HANDLE);
	return (r->handle->handle);
}

static void
shuffle(uint32_t *a, size_t n, unsigned *seed)
{
	for (size_t i = n - 1; i > 0; i--) {
		size_t   j = (size_t) rand_r(seed) % (i + 1);
		uint32_t x = a[i];
		a[i] = a[j];
		a[j] = x;
	}
}

typedef struct closer {
	uint32_t *conns;
	size_t    n;
} closer;

static void *
close_main(void *arg)
{
	closer *c = arg;

	for (size_t i = 0; i < c->n; i++) {
		chd_engine_conn_close(E, c->conns[i]);
	}
	return (NULL);
}

/* Closes conns in random order from two threads at once. */
static void
close_random(uint32_t *conns, size_t n, unsigned seed)
{
	pthread_t th;
	closer    a, b;

	shuffle(conns, n, &seed);
	a.conns = conns;
	a.n = n / 2;
	b.conns = conns + n / 2;
	b.n = n - n / 2;
	ck_assert_int_eq(pthread_create(&th, NULL, close_main, &a), 0);
	close_main(&b);
	pthread_join(th, NULL);
}

/* ---- the mix ------------------------------------------------------------ */

#define NCONN 120

/* What connection i holds, and the requests still parked. */
typedef struct holder {
	treq    *recv;      /* parked recv on r.i */
	treq    *send;      /* parked bounded send on b.i */
	treq    *any;       /* parked recv_any on x.i.0..3 */
	treq    *cwait;     /* parked counter wait on k.i */
	treq    *deleted;   /* parked recv on d.i, deleted before close */
	uint64_t sender;    /* handle on s.i and on "shared" */
	uint64_t lease_seq; /* leased on l.i */
	bool     delete_first; /* its channels go before the close */
} holder;

static void
name_of(char *buf, size_t len, const char *pfx, uint32_t i)
{
	snprintf(buf, len, "%s.%u", pfx, i);
}

/*
 * Connection i: a parked recv, a parked bounded send (with HELPER's
 * smaller send queued behind it), a sender handle, an attached receiver,
 * two deliveries in custody (of four messages), a lease, a recv_any over
 * four channels (so several shards), a counter wait; plus its share of a
 * channel every connection sends on with a handle and one where every
 * connection holds custody.
 */
static void
hold_mix(holder *h, uint32_t i, treq **behind)
{
	char        n[64], xn[4][64];
	const char *xs[4], *four[] = { "c1", "c2", "c3", "c4" };
	const char *two[] = { "p", "q" };
	treq       *t;

	name_of(n, sizeof(n), "r", i);
	h->recv = r_recv(i, n, -1);
	wait_blocked(n, 0, 1);

	name_of(n, sizeof(n), "b", i);
	expect_status(r_create(HELPER, n, 2), CHAN_OK);
	expect_status(r_send(HELPER, n, "full", 0), CHAN_OK);
	h->send = r_sendv(i, n, two, 2, -1, 0);   /* 1 + 2 > 2: waits */
	wait_blocked(n, 1, 0);
	*behind = r_send(HELPER, n, "small", -1); /* FIFO: waits behind */
	wait_blocked(n, 2, 0);

	name_of(n, sizeof(n), "s", i);
	h->sender = handle_of(r_sender_open(i, n));
	(void) handle_of(r_sender_open(i, "shared"));

	name_of(n, sizeof(n), "a", i);
	(void) handle_of(r_receiver_open(i, n));

	name_of(n, sizeof(n), "c", i);
	expect_status(r_sendv(HELPER, n, four, 4, 0, 0), CHAN_OK);
	t = r_recv(i, n, 0);
	expect_status(t, CHAN_OK);
	t = r_recvx(i, n, 2, 0, 0);
	expect_status(t, CHAN_OK);
	ck_assert_uint_eq(answer(t)->recv->n_messages, 2);
	t = r_recv(i, "sharedc", -1);
	expect_status(t, CHAN_OK);

	name_of(n, sizeof(n), "l", i);
	expect_status(r_send(HELPER, n, "job", 0), CHAN_OK);
	t = r_recvx(i, n, 0, 0, 60000);
	expect_status(t, CHAN_OK);
	h->lease_seq = answer(t)->recv->messages[0]->seq;

	for (int k = 0; k < 4; k++) {
		snprintf(xn[k], sizeof(xn[k]), "x.%u.%d", i, k);
		xs[k] = xn[k];
	}
	h->any = r_recv_any(i, xs, 4, -1);
	for (int k = 0; k < 4; k++) {
		wait_blocked(xs[k], 0, 1);
	}

	name_of(n, sizeof(n), "k", i);
	h->cwait = r_cwait(i, n, 5);

	name_of(n, sizeof(n), "d", i);
	h->deleted = r_recv(i, n, -1);
	wait_blocked(n, 0, 1);
}

/* Deletes every channel connection i holds something on (not shared). */
static void
delete_mix(holder *h, uint32_t i)
{
	const char *pfx[] = { "r", "b", "s", "a", "c", "l", "d" };
	char        n[64];

	for (size_t k = 0; k < sizeof(pfx) / sizeof(pfx[0]); k++) {
		name_of(n, sizeof(n), pfx[k], i);
		expect_status(r_delete(HELPER, n), CHAN_OK);
	}
	for (int k = 0; k < 4; k++) {
		snprintf(n, sizeof(n), "x.%u.%d", i, k);
		expect_status(r_delete(HELPER, n), CHAN_OK);
	}
	expect_status(h->recv, CHAN_NOT_FOUND);
	expect_status(h->send, CHAN_NOT_FOUND);
	expect_status(h->any, CHAN_NOT_FOUND);
	expect_status(h->deleted, CHAN_NOT_FOUND);
}

static void
check_after_close(holder *h, uint32_t i, treq *behind)
{
	Chan__V1__ChannelInfo *ci;
	Chan__V1__Response    *r;
	char                   n[64];
	treq                  *t;

	expect_status(h->cwait, CHAN_UNAVAILABLE);
	if (h->delete_first) {
		return;
	}
	expect_status(h->recv, CHAN_UNAVAILABLE);
	expect_status(h->send, CHAN_UNAVAILABLE);
	expect_status(h->any, CHAN_UNAVAILABLE);
	expect_status(h->deleted, CHAN_UNAVAILABLE);

	/* The big batch gone, the small one behind it fits now. */
	expect_status(behind, CHAN_OK);
	name_of(n, sizeof(n), "b", i);
	ci = stat_of(n);
	ck_assert_uint_eq(ci->depth, 2);
	ck_assert_uint_eq(ci->blocked_senders, 0);

	name_of(n, sizeof(n), "s", i);
	ci = stat_of(n);
	ck_assert(ci->closed);
	ck_assert_uint_eq(ci->senders, 0);

	name_of(n, sizeof(n), "a", i);
	ck_assert(!stat_of(n)->receiver_attached);
	expect_status(r_send(HELPER, n, "to-a", 0), CHAN_OK);
	t = r_recv(HELPER, n, 0); /* no longer BUSY */
	expect_status(t, CHAN_OK);

	/* Both deliveries back, in seq order, redelivered, before c4. */
	name_of(n, sizeof(n), "c", i);
	ci = stat_of(n);
	ck_assert_uint_eq(ci->in_flight, 0);
	ck_assert_uint_eq(ci->depth, 4);
	ck_assert_uint_eq(ci->total_redelivered, 3);
	t = r_recvx(HELPER, n, 10, 0, 0);
	expect_status(t, CHAN_OK);
	r = answer(t);
	ck_assert_uint_eq(r->recv->n_messages, 4);
	for (size_t k = 0; k < 4; k++) {
		Chan__V1__Message *m = r->recv->messages[k];
		char               want[8];
		snprintf(want, sizeof(want), "c%zu", k + 1);
		ck_assert_uint_eq(m->seq, k + 1);
		ck_assert_uint_eq(m->data.len, strlen(want));
		ck_assert(memcmp(m->data.data, want, m->data.len) == 0);
		ck_assert_int_eq(!!m->redelivered, k < 3);
	}

	/* The lease outlives its connection; anyone may ack it. */
	name_of(n, sizeof(n), "l", i);
	ck_assert_uint_eq(stat_of(n)->in_flight, 1);
	expect_status(r_ack(HELPER, n, h->lease_seq), CHAN_OK);
	ck_assert_uint_eq(stat_of(n)->in_flight, 0);

	/* Nobody waits on its recv_any channels any more. */
	for (int k = 0; k < 4; k++) {
		snprintf(n, sizeof(n), "x.%u.%d", i, k);
		ck_assert_uint_eq(stat_of(n)->blocked_receivers, 0);
	}
}

START_TEST(test_mass_close_mix_random_order)
{
	holder   *h = calloc(NCONN + 1, sizeof(*h));
	treq    **behind = calloc(NCONN + 1, sizeof(*behind));
	uint32_t  conns[NCONN];
	treq     *t;
	Chan__V1__ChannelInfo *ci;
	Chan__V1__Response    *r;
	uint64_t  prev = 0;

	start_engine(NCONN);
	/* Enough on "sharedc" for every connection to hold one. */
	for (uint32_t i = 1; i <= NCONN; i++) {
		char m[16];
		snprintf(m, sizeof(m), "s%u", i);
		expect_status(r_send(HELPER, "sharedc", m, 0), CHAN_OK);
	}
	(void) handle_of(r_sender_open(HELPER, "keep")); /* untouched */
	for (uint32_t i = 1; i <= NCONN; i++) {
		hold_mix(&h[i], i, &behind[i]);
		h[i].delete_first = i % 7 == 0;
		conns[i - 1] = i;
	}
	ck_assert_uint_eq(stat_of("shared")->senders, NCONN);
	ck_assert_uint_eq(stat_of("sharedc")->in_flight, NCONN);
	/* Channels deleted while their connection holds state there. */
	for (uint32_t i = 7; i <= NCONN; i += 7) {
		delete_mix(&h[i], i);
		expect_status(behind[i], CHAN_NOT_FOUND);
	}
	/* Nothing answered yet. */
	for (uint32_t i = 1; i <= NCONN; i++) {
		ck_assert(pending(h[i].cwait, 0));
		if (!h[i].delete_first) {
			ck_assert(pending(h[i].recv, 0));
			ck_assert(pending(h[i].send, 0));
			ck_assert(pending(h[i].any, 0));
		}
	}

	close_random(conns, NCONN, 4242);
	for (uint32_t i = 1; i <= NCONN; i++) {
		check_after_close(&h[i], i, behind[i]);
	}
	ci = stat_of("shared");
	ck_assert(ci->closed);
	ck_assert_uint_eq(ci->senders, 0);
	ck_assert(!stat_of("keep")->closed);
	ck_assert_uint_eq(stat_of("keep")->senders, 1);

	/* Every connection's share of "sharedc" back, in seq order. */
	ci = stat_of("sharedc");
	ck_assert_uint_eq(ci->in_flight, 0);
	ck_assert_uint_eq(ci->depth, NCONN);
	t = r_recvx(HELPER, "sharedc", 64, 0, 0);
	r = answer(t);
	expect_status(t, CHAN_OK);
	ck_assert_uint_eq(r->recv->n_messages, 64);
	for (size_t k = 0; k < r->recv->n_messages; k++) {
		ck_assert_uint_gt(r->recv->messages[k]->seq, prev);
		ck_assert(r->recv->messages[k]->redelivered);
		prev = r->recv->messages[k]->seq;
	}
	free(h);
	free(behind);
}
END_TEST

/* "shared" closes only when the last connection with a sender goes. */
START_TEST(test_last_sender_conn_closes_channel)
{
	uint32_t conns[40];

	start_engine(40);
	for (uint32_t i = 1; i <= 40; i++) {
		(void) handle_of(r_sender_open(i, "ls"));
		(void) handle_of(r_sender_open(i, "ls"));  /* a clone */
		conns[i - 1] = i;
	}
	ck_assert_uint_eq(stat_of("ls")->senders, 80);
	close_random(conns, 39, 7); /* all but the last in conns[] */
	ck_assert(!stat_of("ls")->closed);
	ck_assert_uint_eq(stat_of("ls")->senders, 2);
	chd_engine_conn_close(E, conns[39]);
	ck_assert(stat_of("ls")->closed);
	ck_assert_uint_eq(stat_of("ls")->senders, 0);
}
END_TEST

/*
 * State whose channel went away first: sender handles, a receiver
 * handle, deliveries, a grace timer running for a parked receiver. The
 * close must find nothing of it (ASan: no use after free).
 */
START_TEST(test_close_after_channels_deleted)
{
	treq *holder_recv, *waiter;

	grace_ms = 5000; /* the grace timer must still run at delete */
	start_engine(10);
	(void) handle_of(r_sender_open(1, "g1"));
	(void) handle_of(r_receiver_open(1, "g2"));
	expect_status(r_send(HELPER, "g3", "m1", 0), CHAN_OK);
	expect_status(r_send(HELPER, "g3", "m2", 0), CHAN_OK);
	holder_recv = r_recv(2, "g3", 0); /* conn 2 holds m1 */
	expect_status(holder_recv, CHAN_OK);
	waiter = r_recv(3, "g3", -1);     /* gated: grace armed for 3 */
	wait_blocked("g3", 0, 1);
	ck_assert(pending(waiter, 20));
	expect_status(r_delete(HELPER, "g1"), CHAN_OK);
	expect_status(r_delete(HELPER, "g2"), CHAN_OK);
	expect_status(r_delete(HELPER, "g3"), CHAN_OK);
	expect_status(waiter, CHAN_NOT_FOUND);
	chd_engine_conn_close(E, 1);
	chd_engine_conn_close(E, 2);
	chd_engine_conn_close(E, 3);
	/* Same names again: fresh channels, nothing of the old state. */
	expect_status(r_send(HELPER, "g3", "n1", 0), CHAN_OK);
	ck_assert_uint_eq(stat_of("g3")->in_flight, 0);
	ck_assert_uint_eq(stat_of("g3")->depth, 1);
	(void) handle_of(r_receiver_open(4, "g2"));
	ck_assert(stat_of("g2")->receiver_attached);
}
END_TEST

/*
 * The receivers' connection closes while the grace runs for them: the
 * timer goes with it, the holder's grace is not spent, and the next
 * consumer, coming after that timer would have fired, still waits.
 */
START_TEST(test_grace_waiter_conn_closes)
{
	treq           *held, *waiter, *next;
	struct timespec t0, t1;
	int64_t         ms;

	grace_ms = 400;
	start_engine(10);
	expect_status(r_send(HELPER, "gw", "m1", 0), CHAN_OK);
	expect_status(r_send(HELPER, "gw", "m2", 0), CHAN_OK);
	held = r_recv(1, "gw", 0);
	expect_status(held, CHAN_OK);
	waiter = r_recv(2, "gw", -1);
	wait_blocked("gw", 0, 1);
	chd_engine_conn_close(E, 2);
	expect_status(waiter, CHAN_UNAVAILABLE);
	/* Past the end of conn 2's grace: had its timer run on, conn 1's
	 * custody would be spent and conn 3 would not wait at all. */
	msleep(600);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	next = r_recv(3, "gw", -1);
	/* Gated again for conn 3 (its own grace), then m2. */
	expect_status(next, CHAN_OK);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 +
	    (t1.tv_nsec - t0.tv_nsec) / 1000000;
	ck_assert_msg(ms >= 300, "waited %lld ms, less than its grace",
	    (long long) ms);
	ck_assert_uint_eq(answer(next)->recv->messages[0]->seq, 2);
}
END_TEST

/*
 * A request of a connection already closed still gets its messages; the
 * shard re-runs the close work and they come back (a fresh record for a
 * closed connection, freed by that close).
 */
START_TEST(test_late_request_after_close_gives_back)
{
	treq *late, *t;

	start_engine(10);
	expect_status(r_send(HELPER, "late", "m1", 0), CHAN_OK);
	chd_engine_conn_close(E, 5);
	late = r_recv(5, "late", 0);
	expect_status(late, CHAN_OK);
	t = r_recv(HELPER, "late", 0);
	expect_status(t, CHAN_OK);
	ck_assert(answer(t)->recv->messages[0]->redelivered);
	/* It cannot park or register anything either. */
	expect_status(r_recv(5, "late2", -1), CHAN_UNAVAILABLE);
	expect_status(r_sender_open(5, "late2"), CHAN_UNAVAILABLE);
}
END_TEST

/* Many connections, one parked receiver each: all answered once. */
#define NMANY 20000

START_TEST(test_many_conns_parked_then_closed)
{
	treq    **w = calloc(NMANY, sizeof(*w));
	uint32_t *conns = calloc(NMANY, sizeof(*conns));
	char      n[32];

	start_engine(NMANY);
	for (uint32_t i = 0; i < NMANY; i++) {
		snprintf(n, sizeof(n), "m%u", i);
		w[i] = r_recv(i + 1, n, -1);
		conns[i] = i + 1;
	}
	/* A channel of each shard answering means its jobs before ran. */
	for (uint32_t i = 0; i < NMANY; i += 997) {
		snprintf(n, sizeof(n), "m%u", i);
		(void) stat_of(n);
	}
	for (uint32_t i = 0; i < NMANY; i++) {
		ck_assert(pending(w[i], 0));
	}
	close_random(conns, NMANY, 99);
	for (uint32_t i = 0; i < NMANY; i++) {
		expect_status(w[i], CHAN_UNAVAILABLE);
	}
	snprintf(n, sizeof(n), "m%u", NMANY - 1);
	ck_assert_uint_eq(stat_of(n)->blocked_receivers, 0);
	free(w);
	free(conns);
}
END_TEST

static Suite *
conns_suite(void)
{
	Suite *s = suite_create("engine_conns");
	TCase *tc = tcase_create("close");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_mass_close_mix_random_order);
	tcase_add_test(tc, test_last_sender_conn_closes_channel);
	tcase_add_test(tc, test_close_after_channels_deleted);
	tcase_add_test(tc, test_grace_waiter_conn_closes);
	tcase_add_test(tc, test_late_request_after_close_gives_back);
	tcase_add_test(tc, test_many_conns_parked_then_closed);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	SRunner *sr = srunner_create(conns_suite());
	int      nf;

	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (nf == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
