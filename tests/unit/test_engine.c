/*
 * test_engine.c - SPEC rules on the engine, in-process: requests are packed
 * and decoded like the transport does, submitted with a reply function
 * that unpacks a copy of the answer and signals a condvar.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "engine.h"
#include "engine_harness.h"
#include "engine_int.h" /* shard routing, to put channels on two shards */
#include "wire.h"

static uint64_t max_memory_opt;
static uint32_t grace_opt; /* custody grace, 0: the default */

static void
start_engine(bool auto_create)
{
	chd_engine_opts o;

	chd_engine_opts_default(&o);
	if (max_memory_opt != 0) {
		o.max_memory = max_memory_opt;
	}
	if (grace_opt != 0) {
		o.custody_grace_ms = grace_opt;
	}
	o.workers = 4;
	o.max_message_size = 1000;
	o.max_batch = 16;
	o.auto_create = auto_create;
	th_start(&o, 20, 1000);
}

static void
setup(void)
{
	th_reset();
	start_engine(true);
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
    uint64_t receiver, const uint64_t *confirm, size_t nconfirm)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Recv    r = CHAN__V1__RECV__INIT;

	r.name = (char *) name;
	if (max > 0) {
		r.has_max = true;
		r.max = max;
	}
	r.has_timeout_ms = true;
	r.timeout_ms = timeout;
	r.has_receiver = receiver != 0;
	r.receiver = receiver;
	m.op_case = CHAN__V1__REQUEST__OP_RECV;
	m.recv = &r;
	m.n_confirm = nconfirm;
	m.confirm = (uint64_t *) confirm;
	return (submit(conn, &m));
}

static treq *
r_recv_lease(uint32_t conn, const char *name, int64_t timeout, uint64_t lease)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Recv    r = CHAN__V1__RECV__INIT;

	r.name = (char *) name;
	r.has_timeout_ms = true;
	r.timeout_ms = timeout;
	r.has_lease_ms = true;
	r.lease_ms = lease;
	m.op_case = CHAN__V1__REQUEST__OP_RECV;
	m.recv = &r;
	return (submit(conn, &m));
}

static treq *
r_release(uint32_t conn, const char *name, uint64_t seq, uint64_t delay)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Release a = CHAN__V1__RELEASE__INIT;

	a.name = (char *) name;
	a.has_seq = true;
	a.seq = seq;
	a.has_delay_ms = delay != 0;
	a.delay_ms = delay;
	m.op_case = CHAN__V1__REQUEST__OP_RELEASE;
	m.release = &a;
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
NAME_OP(r_close, CLOSE, Chan__V1__Close, CHAN__V1__CLOSE__INIT, close)
NAME_OP(r_delete, DELETE, Chan__V1__Delete, CHAN__V1__DELETE__INIT, delete_)
NAME_OP(r_sender_open, SENDER_OPEN, Chan__V1__SenderOpen,
    CHAN__V1__SENDER_OPEN__INIT, sender_open)
NAME_OP(r_receiver_open, RECEIVER_OPEN, Chan__V1__ReceiverOpen,
    CHAN__V1__RECEIVER_OPEN__INIT, receiver_open)
NAME_OP(r_cget, COUNTER_GET, Chan__V1__CounterGet,
    CHAN__V1__COUNTER_GET__INIT, counter_get)
NAME_OP(r_cdelete, COUNTER_DELETE, Chan__V1__CounterDelete,
    CHAN__V1__COUNTER_DELETE__INIT, counter_delete)

static treq *
r_sender_close(uint32_t conn, const char *name, uint64_t h)
{
	Chan__V1__Request     m = CHAN__V1__REQUEST__INIT;
	Chan__V1__SenderClose x = CHAN__V1__SENDER_CLOSE__INIT;

	x.name = (char *) name;
	x.has_sender = true;
	x.sender = h;
	m.op_case = CHAN__V1__REQUEST__OP_SENDER_CLOSE;
	m.sender_close = &x;
	return (submit(conn, &m));
}

static treq *
r_receiver_close(uint32_t conn, const char *name, uint64_t h, bool detach)
{
	Chan__V1__Request       m = CHAN__V1__REQUEST__INIT;
	Chan__V1__ReceiverClose x = CHAN__V1__RECEIVER_CLOSE__INIT;

	x.name = (char *) name;
	x.has_receiver = true;
	x.receiver = h;
	x.has_detach_only = detach;
	x.detach_only = detach;
	m.op_case = CHAN__V1__REQUEST__OP_RECEIVER_CLOSE;
	m.receiver_close = &x;
	return (submit(conn, &m));
}

static treq *
r_simple(uint32_t conn, Chan__V1__Request__OpCase op)
{
	Chan__V1__Request     m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Ping        p = CHAN__V1__PING__INIT;
	Chan__V1__Stats       s = CHAN__V1__STATS__INIT;
	Chan__V1__List        l = CHAN__V1__LIST__INIT;
	Chan__V1__Hello       h = CHAN__V1__HELLO__INIT;
	Chan__V1__CounterList c = CHAN__V1__COUNTER_LIST__INIT;

	m.op_case = op;
	switch (op) {
	case CHAN__V1__REQUEST__OP_PING: m.ping = &p; break;
	case CHAN__V1__REQUEST__OP_STATS: m.stats = &s; break;
	case CHAN__V1__REQUEST__OP_LIST: m.list = &l; break;
	case CHAN__V1__REQUEST__OP_HELLO: m.hello = &h; break;
	case CHAN__V1__REQUEST__OP_COUNTER_LIST: m.counter_list = &c; break;
	default: break;
	}
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

/* CounterAdd.deltas (n of them); with_delta also sets delta. */
static treq *
r_cadd_many(uint32_t conn, const char *name, const int64_t *deltas, size_t n,
    bool with_delta)
{
	Chan__V1__Request    m = CHAN__V1__REQUEST__INIT;
	Chan__V1__CounterAdd x = CHAN__V1__COUNTER_ADD__INIT;

	x.name = (char *) name;
	x.n_deltas = n;
	x.deltas = (int64_t *) deltas;
	x.has_delta = with_delta;
	x.delta = 1;
	m.op_case = CHAN__V1__REQUEST__OP_COUNTER_ADD;
	m.counter_add = &x;
	return (submit(conn, &m));
}

static treq *
r_cset(uint32_t conn, const char *name, int64_t v)
{
	Chan__V1__Request    m = CHAN__V1__REQUEST__INIT;
	Chan__V1__CounterSet x = CHAN__V1__COUNTER_SET__INIT;

	x.name = (char *) name;
	x.has_value = true;
	x.value = v;
	m.op_case = CHAN__V1__REQUEST__OP_COUNTER_SET;
	m.counter_set = &x;
	return (submit(conn, &m));
}

static treq *
r_ccas(uint32_t conn, const char *name, int64_t expected, int64_t nv)
{
	Chan__V1__Request    m = CHAN__V1__REQUEST__INIT;
	Chan__V1__CounterCas x = CHAN__V1__COUNTER_CAS__INIT;

	x.name = (char *) name;
	x.has_expected = x.has_new_value = true;
	x.expected = expected;
	x.new_value = nv;
	m.op_case = CHAN__V1__REQUEST__OP_COUNTER_CAS;
	m.counter_cas = &x;
	return (submit(conn, &m));
}

static treq *
r_cwait(uint32_t conn, const char *name, int op, int64_t v, int64_t timeout)
{
	Chan__V1__Request     m = CHAN__V1__REQUEST__INIT;
	Chan__V1__CounterWait x = CHAN__V1__COUNTER_WAIT__INIT;

	x.name = (char *) name;
	x.has_op = x.has_value = x.has_timeout_ms = true;
	x.op = (Chan__V1__WaitOp) op;
	x.value = v;
	x.timeout_ms = timeout;
	m.op_case = CHAN__V1__REQUEST__OP_COUNTER_WAIT;
	m.counter_wait = &x;
	return (submit(conn, &m));
}

/* ---- assertions helpers ------------------------------------------------- */

static void
expect_leased(treq *t, const char *data)
{
	Chan__V1__Response *r = answer(t);

	expect_status(t, CHAN_OK);
	ck_assert_int_eq(r->result_case, CHAN__V1__RESPONSE__RESULT_RECV);
	ck_assert_uint_eq(r->recv->n_messages, 1);
	ck_assert_uint_eq(r->recv->messages[0]->data.len, strlen(data));
	ck_assert(memcmp(r->recv->messages[0]->data.data, data,
	    strlen(data)) == 0);
	ck_assert(!r->has_delivery || r->delivery == 0);
}

static void
expect_msg(treq *t, const char *data)
{
	Chan__V1__Response *r = answer(t);

	expect_status(t, CHAN_OK);
	ck_assert_int_eq(r->result_case, CHAN__V1__RESPONSE__RESULT_RECV);
	ck_assert_uint_eq(r->recv->n_messages, 1);
	ck_assert_uint_eq(r->recv->messages[0]->data.len, strlen(data));
	ck_assert(memcmp(r->recv->messages[0]->data.data, data,
	    strlen(data)) == 0);
	ck_assert(r->has_delivery && r->delivery != 0);
}

static int64_t
value_of(treq *t)
{
	Chan__V1__Response *r = answer(t);

	expect_status(t, CHAN_OK);
	ck_assert_int_eq(r->result_case, CHAN__V1__RESPONSE__RESULT_VALUE);
	return (r->value->value);
}

static int64_t
now_ms(void)
{
	return (chl_now_mono_ms());
}

/* ---- capacities, FIFO, try ---------------------------------------------- */

START_TEST(test_unbounded_fifo_seq_and_time)
{
	uint64_t before = chl_now_unix_us();

	expect_status(r_send(1, "q", "a", -1), CHAN_OK);
	expect_status(r_send(1, "q", "b", -1), CHAN_OK);
	expect_status(r_send(2, "q", "c", 0), CHAN_OK);
	for (int i = 0; i < 3; i++) {
		treq *t = r_recv(3, "q", 0);
		char  want[2] = { (char) ('a' + i), 0 };
		expect_msg(t, want);
		ck_assert_uint_eq(answer(t)->recv->messages[0]->seq,
		    (uint64_t) i + 1);
		ck_assert_uint_ge(answer(t)->recv->messages[0]->time_us, before);
		/* a plain recv named its channel: not repeated per message */
		ck_assert_ptr_null(answer(t)->recv->messages[0]->channel);
	}
	expect_status(r_recv(3, "q", 0), CHAN_EMPTY);
}
END_TEST

START_TEST(test_create_idempotent_and_already_exists)
{
	expect_status(r_create(1, "b", 5), CHAN_OK);
	expect_status(r_create(1, "b", 5), CHAN_OK);
	expect_status(r_create(1, "b", 6), CHAN_ALREADY_EXISTS);
	expect_status(r_create(1, "b", -1), CHAN_ALREADY_EXISTS);
	expect_status(r_create(1, "u", -1), CHAN_OK);
	expect_status(r_create(1, "u", 0), CHAN_ALREADY_EXISTS);
	/* auto-created is unbounded */
	expect_status(r_send(1, "auto", "x", 0), CHAN_OK);
	expect_status(r_create(1, "auto", -1), CHAN_OK);
	ck_assert(!stat_of("auto")->bounded);
	ck_assert(stat_of("b")->bounded);
	ck_assert_uint_eq(stat_of("b")->capacity, 5);
}
END_TEST

START_TEST(test_no_auto_create_not_found)
{
	chd_engine_free(E);
	start_engine(false);
	expect_status(r_send(1, "nope", "x", 0), CHAN_NOT_FOUND);
	expect_status(r_recv(1, "nope", 0), CHAN_NOT_FOUND);
	expect_status(r_create(1, "nope", -1), CHAN_OK);
	expect_status(r_send(1, "nope", "x", 0), CHAN_OK);
}
END_TEST

START_TEST(test_bounded_try_send_full)
{
	expect_status(r_create(1, "b", 2), CHAN_OK);
	expect_status(r_send(1, "b", "1", 0), CHAN_OK);
	expect_status(r_send(1, "b", "2", 0), CHAN_OK);
	expect_status(r_send(1, "b", "3", 0), CHAN_FULL);
	ck_assert_uint_eq(stat_of("b")->depth, 2);
}
END_TEST

START_TEST(test_try_recv_empty)
{
	expect_status(r_create(1, "e", -1), CHAN_OK);
	expect_status(r_recv(1, "e", 0), CHAN_EMPTY);
}
END_TEST

START_TEST(test_bounded_sender_waits_for_room)
{
	treq *s;

	expect_status(r_create(1, "b", 1), CHAN_OK);
	expect_status(r_send(1, "b", "a", -1), CHAN_OK);
	s = r_send(1, "b", "b", -1);
	ck_assert(pending(s, 150));
	expect_msg(r_recv(2, "b", 0), "a");
	expect_status(s, CHAN_OK);
	expect_msg(r_recv(2, "b", 0), "b");
}
END_TEST

START_TEST(test_blocked_senders_arrival_order)
{
	treq       *s[3];
	const char *want[] = { "x", "y", "z" };

	expect_status(r_create(1, "b", 1), CHAN_OK);
	expect_status(r_send(1, "b", "first", -1), CHAN_OK);
	for (int i = 0; i < 3; i++) {
		s[i] = r_send((uint32_t) (4 + i), "b", want[i], -1);
		wait_blocked("b", (uint32_t) i + 1, 0);
	}
	expect_msg(r_recv(2, "b", 0), "first");
	for (int i = 0; i < 3; i++) {
		expect_status(s[i], CHAN_OK);
		expect_msg(r_recv(2, "b", -1), want[i]);
	}
}
END_TEST

START_TEST(test_send_timeout_leaves_nothing)
{
	int64_t t0;
	treq   *s;

	expect_status(r_create(1, "b", 1), CHAN_OK);
	expect_status(r_send(1, "b", "a", -1), CHAN_OK);
	t0 = now_ms();
	s = r_send(1, "b", "late", 300);
	expect_status(s, CHAN_TIMEOUT);
	ck_assert_int_ge(now_ms() - t0, 270);
	ck_assert_int_lt(now_ms() - t0, 5000);
	ck_assert_uint_eq(stat_of("b")->depth, 1);
	ck_assert_uint_eq(stat_of("b")->blocked_senders, 0);
	expect_msg(r_recv(2, "b", 0), "a");
	expect_status(r_recv(2, "b", 0), CHAN_EMPTY);
}
END_TEST

START_TEST(test_recv_timeout)
{
	int64_t t0 = now_ms();

	expect_status(r_recv(1, "t", 300), CHAN_TIMEOUT);
	ck_assert_int_ge(now_ms() - t0, 270);
	ck_assert_int_lt(now_ms() - t0, 5000);
	ck_assert_uint_eq(stat_of("t")->blocked_receivers, 0);
	ck_assert(!stat_of("t")->receiver_attached);
	/* a connection the engine has not heard of yet may still park */
	expect_status(r_recv(99, "t2", 100), CHAN_TIMEOUT);
	/* a timeout too long for any timer is a wait forever */
	ck_assert(pending(r_recv(1, "t3", INT64_MAX), 200));
}
END_TEST

START_TEST(test_rendezvous_try_send_full)
{
	expect_status(r_create(1, "rv", 0), CHAN_OK);
	expect_status(r_send(1, "rv", "x", 0), CHAN_FULL);
	ck_assert_uint_eq(stat_of("rv")->depth, 0);
}
END_TEST

START_TEST(test_rendezvous_handoff_to_parked_receiver)
{
	treq *r;

	expect_status(r_create(1, "rv", 0), CHAN_OK);
	r = r_recv(2, "rv", -1);
	wait_blocked("rv", 0, 1);
	expect_status(r_send(1, "rv", "hand", 0), CHAN_OK);
	expect_msg(r, "hand");
}
END_TEST

START_TEST(test_rendezvous_sender_completes_only_when_taken)
{
	treq *s;

	expect_status(r_create(1, "rv", 0), CHAN_OK);
	s = r_send(1, "rv", "wait", -1);
	ck_assert(pending(s, 200));
	ck_assert_uint_eq(stat_of("rv")->depth, 0);
	ck_assert_uint_eq(stat_of("rv")->blocked_senders, 1);
	expect_msg(r_recv(2, "rv", 0), "wait");
	expect_status(s, CHAN_OK);
}
END_TEST

START_TEST(test_rendezvous_batch_invalid)
{
	const char *two[] = { "a", "b" };

	expect_status(r_create(1, "rv", 0), CHAN_OK);
	expect_status(r_sendv(1, "rv", two, 2, 0, 0), CHAN_INVALID_ARGUMENT);
}
END_TEST

START_TEST(test_batch_all_or_nothing)
{
	const char *two[] = { "a", "b" };
	const char *four[] = { "1", "2", "3", "4" };
	treq       *s;

	expect_status(r_create(1, "b", 3), CHAN_OK);
	expect_status(r_sendv(1, "b", two, 2, 0, 0), CHAN_OK);
	expect_status(r_sendv(1, "b", two, 2, 0, 0), CHAN_FULL);
	ck_assert_uint_eq(stat_of("b")->depth, 2);
	expect_status(r_sendv(1, "b", four, 4, -1, 0), CHAN_INVALID_ARGUMENT);
	/* A parked batch enters whole once there is room for all of it. */
	s = r_sendv(1, "b", two, 2, -1, 0);
	ck_assert(pending(s, 100));
	expect_msg(r_recv(2, "b", 0), "a");
	expect_status(s, CHAN_OK);
	ck_assert_uint_eq(answer(s)->send->accepted, 2);
	ck_assert_uint_eq(answer(s)->send->first_seq, 3);
	ck_assert_uint_eq(stat_of("b")->depth, 3);
}
END_TEST

START_TEST(test_recv_max_n)
{
	const char *five[] = { "1", "2", "3", "4", "5" };
	treq       *r;

	expect_status(r_sendv(1, "m", five, 5, 0, 0), CHAN_OK);
	r = r_recvx(2, "m", 3, 0, 0, NULL, 0);
	expect_status(r, CHAN_OK);
	ck_assert_uint_eq(answer(r)->recv->n_messages, 3);
	ck_assert_uint_eq(answer(r)->recv->messages[2]->seq, 3);
	r = r_recvx(2, "m", 10, 0, 0, NULL, 0);
	expect_status(r, CHAN_OK);
	ck_assert_uint_eq(answer(r)->recv->n_messages, 2);
	/* waits only for the first */
	r = r_recvx(2, "m", 10, -1, 0, NULL, 0);
	ck_assert(pending(r, 100));
	expect_status(r_send(1, "m", "solo", 0), CHAN_OK);
	expect_msg(r, "solo");
}
END_TEST

START_TEST(test_memory_limit_resource_exhausted)
{
	char        m600[601];
	treq       *r;
	uint64_t    d;

	chd_engine_free(E);
	max_memory_opt = 1500;
	start_engine(true);
	max_memory_opt = 0;
	memset(m600, 'x', 600);
	m600[600] = '\0';
	/* One request each: a request whose big payloads stay in it counts
	 * whole until its last message goes (test_engine_batch.c). */
	expect_status(r_send(1, "mem", m600, -1), CHAN_OK);
	expect_status(r_send(1, "mem", m600, -1), CHAN_OK);
	r = r_send(1, "mem", m600, -1);
	expect_status(r, CHAN_RESOURCE_EXHAUSTED);
	ck_assert_ptr_nonnull(strstr(answer(r)->error, "limit"));
	ck_assert_uint_eq(stat_of("mem")->depth, 2);
	/* in custody still counts; confirmed frees the room */
	r = r_recv(2, "mem", 0);
	expect_msg(r, m600);
	d = answer(r)->delivery;
	expect_status(r_send(1, "mem", m600, -1), CHAN_RESOURCE_EXHAUSTED);
	r = r_recvx(2, "mem", 0, 0, 0, &d, 1);
	expect_msg(r, m600);
	expect_status(r_send(1, "mem", m600, -1), CHAN_OK);
}
END_TEST

/* ---- close, senders, receivers ------------------------------------------ */

START_TEST(test_close_drains_then_closed)
{
	treq *s;

	expect_status(r_create(1, "c", 1), CHAN_OK);
	expect_status(r_send(1, "c", "a", 0), CHAN_OK);
	s = r_send(1, "c", "blocked", -1);
	wait_blocked("c", 1, 0);
	expect_status(r_close(1, "c"), CHAN_OK);
	expect_status(s, CHAN_CLOSED);
	expect_status(r_send(1, "c", "more", 0), CHAN_CLOSED);
	ck_assert(stat_of("c")->closed);
	expect_msg(r_recv(2, "c", -1), "a");
	expect_status(r_recv(2, "c", -1), CHAN_CLOSED);
	expect_status(r_recv(2, "c", 0), CHAN_CLOSED);
}
END_TEST

START_TEST(test_close_wakes_parked_receiver)
{
	treq *r = r_recv(2, "c", -1);

	wait_blocked("c", 0, 1);
	expect_status(r_close(1, "c"), CHAN_OK);
	expect_status(r, CHAN_CLOSED);
}
END_TEST

START_TEST(test_sender_drop_closes)
{
	treq    *a, *b;
	uint64_t ha, hb;

	a = r_sender_open(1, "s");
	b = r_sender_open(2, "s");
	expect_status(a, CHAN_OK);
	expect_status(b, CHAN_OK);
	ha = answer(a)->handle->handle;
	hb = answer(b)->handle->handle;
	ck_assert_uint_ne(ha, hb);
	ck_assert_uint_eq(stat_of("s")->senders, 2);
	expect_status(r_sendv(1, "s", (const char *[]) { "m" }, 1, 0, ha),
	    CHAN_OK);
	expect_status(r_sender_close(1, "s", ha), CHAN_OK);
	ck_assert(!stat_of("s")->closed);
	expect_status(r_sender_close(1, "s", ha), CHAN_NOT_FOUND);
	expect_status(r_sender_close(2, "s", hb), CHAN_OK);
	ck_assert(stat_of("s")->closed);
	expect_msg(r_recv(3, "s", -1), "m");
	expect_status(r_recv(3, "s", -1), CHAN_CLOSED);
}
END_TEST

START_TEST(test_sender_conn_close_closes)
{
	treq *r;

	expect_status(r_sender_open(5, "s"), CHAN_OK);
	r = r_recv(3, "s", -1);
	wait_blocked("s", 0, 1);
	chd_engine_conn_close(E, 5);
	expect_status(r, CHAN_CLOSED);
	/* one-shot sends register nothing: no close when they come and go */
	expect_status(r_send(6, "o", "x", 0), CHAN_OK);
	chd_engine_conn_close(E, 6);
	ck_assert(!stat_of("o")->closed);
}
END_TEST

START_TEST(test_receiver_drop_discards)
{
	treq    *o, *s;
	uint64_t h;

	expect_status(r_create(1, "d", 3), CHAN_OK);
	expect_status(r_send(1, "d", "1", 0), CHAN_OK);
	expect_status(r_send(1, "d", "2", 0), CHAN_OK);
	o = r_receiver_open(2, "d");
	expect_status(o, CHAN_OK);
	h = answer(o)->handle->handle;
	expect_msg(r_recvx(2, "d", 0, 0, h, NULL, 0), "1");
	expect_status(r_send(1, "d", "3", 0), CHAN_OK);
	expect_status(r_send(1, "d", "4", 0), CHAN_OK);
	s = r_send(1, "d", "5", -1);
	wait_blocked("d", 1, 0);
	expect_status(r_receiver_close(2, "d", h, false), CHAN_OK);
	expect_status(s, CHAN_CLOSED);
	ck_assert_uint_eq(stat_of("d")->total_dropped, 3);
	ck_assert_uint_eq(stat_of("d")->depth, 0);
	ck_assert(stat_of("d")->closed);
	ck_assert_uint_eq(stat_of("d")->in_flight, 0);
	expect_status(r_send(1, "d", "6", 0), CHAN_CLOSED);
	expect_status(r_recv(3, "d", 0), CHAN_CLOSED);
}
END_TEST

START_TEST(test_receiver_detach_only_keeps_messages)
{
	treq    *o;
	uint64_t h;

	expect_status(r_send(1, "d", "1", 0), CHAN_OK);
	o = r_receiver_open(2, "d");
	expect_status(o, CHAN_OK);
	h = answer(o)->handle->handle;
	expect_status(r_recv(3, "d", 0), CHAN_BUSY);
	expect_status(r_receiver_close(2, "d", h, true), CHAN_OK);
	ck_assert(!stat_of("d")->closed);
	expect_msg(r_recv(3, "d", 0), "1");
}
END_TEST

START_TEST(test_busy_second_connection)
{
	treq    *o, *p;
	uint64_t h;

	o = r_receiver_open(1, "x");
	expect_status(o, CHAN_OK);
	h = answer(o)->handle->handle;
	expect_status(r_recv(2, "x", 0), CHAN_BUSY);
	expect_status(r_receiver_open(2, "x"), CHAN_BUSY);
	ck_assert_int_eq(stat_of("x")->receiver_pid, 1001);
	/* the owner's own recv is fine, with or without the handle */
	expect_status(r_recvx(1, "x", 0, 0, h, NULL, 0), CHAN_EMPTY);
	expect_status(r_recv(1, "x", 0), CHAN_EMPTY);
	/* implicit attach lasts while the recv is parked */
	p = r_recv(3, "y", -1);
	wait_blocked("y", 0, 1);
	ck_assert(stat_of("y")->receiver_attached);
	expect_status(r_recv(4, "y", 0), CHAN_BUSY);
	expect_status(r_send(4, "y", "m", 0), CHAN_OK);
	expect_msg(p, "m");
	ck_assert(!stat_of("y")->receiver_attached);
	expect_status(r_recv(4, "y", 0), CHAN_EMPTY);
}
END_TEST

START_TEST(test_receiver_detached_on_conn_close)
{
	treq    *p, *k;
	uint64_t d;

	expect_status(r_receiver_open(7, "x"), CHAN_OK);
	expect_status(r_send(1, "x", "kept", 0), CHAN_OK);
	p = r_recv(7, "z", -1);
	wait_blocked("z", 0, 1);
	chd_engine_conn_close(E, 7);
	expect_status(p, CHAN_UNAVAILABLE);
	ck_assert(!stat_of("x")->receiver_attached);
	ck_assert(!stat_of("z")->receiver_attached);
	ck_assert_uint_eq(stat_of("z")->blocked_receivers, 0);
	k = r_recv(2, "x", 0);
	expect_msg(k, "kept");
	d = answer(k)->delivery;
	/* a request of the gone connection does not park */
	expect_status(r_recv(7, "x", -1), CHAN_UNAVAILABLE);
	/* and what it still receives does not stay in custody for good
	 * (conn 2 confirms "kept" first: its custody would hold conn 7's
	 * recv back) */
	expect_status(r_send(1, "x", "late", 0), CHAN_OK);
	expect_status(r_recvx(2, "y", 0, 0, 0, &d, 1), CHAN_EMPTY);
	expect_msg(r_recv(7, "x", 0), "late");
	for (int i = 0; i < 100 && stat_of("x")->in_flight != 0; i++) {
		msleep(10);
	}
	ck_assert_uint_eq(stat_of("x")->in_flight, 0);
	k = r_recv(2, "x", 0);
	expect_msg(k, "late");
	ck_assert(answer(k)->recv->messages[0]->redelivered);
}
END_TEST

START_TEST(test_handles_are_checked)
{
	treq    *a, *b;
	uint64_t h;

	a = r_receiver_open(1, "h");
	b = r_receiver_open(1, "h");
	expect_status(a, CHAN_OK);
	expect_status(b, CHAN_OK);
	h = answer(a)->handle->handle;
	/* the same connection asking again gets the same receiver */
	ck_assert_uint_eq(answer(b)->handle->handle, h);
	expect_status(r_recvx(1, "h", 0, 0, h + 1000, NULL, 0),
	    CHAN_NOT_FOUND);
	expect_status(r_receiver_close(1, "h", h + 1000, false),
	    CHAN_NOT_FOUND);
	expect_status(r_sendv(2, "h", (const char *[]) { "m" }, 1, 0, 4242),
	    CHAN_NOT_FOUND);
	expect_status(r_close(2, "h"), CHAN_OK);
	expect_status(r_sender_open(2, "h"), CHAN_CLOSED);
	expect_status(r_close(2, "missing"), CHAN_NOT_FOUND);
}
END_TEST

/* ---- recv_any, delete, shutdown ----------------------------------------- */

/* Two channel names owned by different shards. */
static void
two_shard_names(char *a, char *b)
{
	strcpy(a, "any.0");
	for (int i = 1; i < 1000; i++) {
		snprintf(b, 32, "any.%d", i);
		if (chd_shard_for_chan(E, a) != chd_shard_for_chan(E, b)) {
			return;
		}
	}
	ck_abort_msg("no two names on different shards");
}

START_TEST(test_recv_any_across_shards)
{
	char        a[32], b[32];
	const char *names[2] = { a, b };
	treq       *r;

	two_shard_names(a, b);
	r = r_recv_any(2, names, 2, -1);
	wait_blocked(a, 0, 1);
	wait_blocked(b, 0, 1);
	expect_status(r_recv(3, a, 0), CHAN_BUSY);
	expect_status(r_send(1, b, "from-b", 0), CHAN_OK);
	expect_msg(r, "from-b");
	ck_assert_str_eq(answer(r)->recv->messages[0]->channel, b);
	/* the registration on the other shard is gone */
	wait_blocked(a, 0, 0);
	ck_assert(!stat_of(a)->receiver_attached);
	expect_status(r_send(1, a, "from-a", 0), CHAN_OK);
	r = r_recv_any(2, names, 2, 0);
	expect_msg(r, "from-a");
	ck_assert_str_eq(answer(r)->recv->messages[0]->channel, a);
	expect_status(r_recv_any(2, names, 2, 0), CHAN_EMPTY);
}
END_TEST

START_TEST(test_recv_any_takes_from_rendezvous_sender)
{
	char        a[32], b[32];
	const char *names[2] = { a, b };
	treq       *s, *r;

	two_shard_names(a, b);
	expect_status(r_create(1, b, 0), CHAN_OK);
	s = r_send(1, b, "rv", -1);
	wait_blocked(b, 1, 0);
	r = r_recv_any(2, names, 2, 0);
	expect_msg(r, "rv");
	expect_status(s, CHAN_OK);
	s = r_send(1, b, "rv2", -1);
	wait_blocked(b, 1, 0);
	r = r_recv_any(2, names, 2, -1);
	expect_msg(r, "rv2");
	expect_status(s, CHAN_OK);
}
END_TEST

START_TEST(test_recv_any_timeout_and_closed)
{
	char        a[32], b[32];
	const char *names[2] = { a, b };
	int64_t     t0 = now_ms();
	treq       *r;

	two_shard_names(a, b);
	expect_status(r_recv_any(2, names, 2, 300), CHAN_TIMEOUT);
	ck_assert_int_ge(now_ms() - t0, 270);
	wait_blocked(a, 0, 0);
	wait_blocked(b, 0, 0);
	r = r_recv_any(2, names, 2, -1);
	wait_blocked(a, 0, 1);
	wait_blocked(b, 0, 1);
	expect_status(r_close(1, a), CHAN_OK);
	ck_assert(pending(r, 100));
	expect_status(r_close(1, b), CHAN_OK);
	expect_status(r, CHAN_CLOSED);
	expect_status(r_recv_any(2, names, 2, -1), CHAN_CLOSED);
}
END_TEST

START_TEST(test_delete_wakes_waiters_not_found)
{
	char        a[32], b[32];
	const char *names[2] = { a, b };
	treq       *r, *s, *any;

	two_shard_names(a, b);
	expect_status(r_create(1, "del", 1), CHAN_OK);
	expect_status(r_send(1, "del", "x", 0), CHAN_OK);
	s = r_send(1, "del", "y", -1);
	r = r_recv(2, "del2", -1);
	any = r_recv_any(3, names, 2, -1);
	wait_blocked("del", 1, 0);
	wait_blocked("del2", 0, 1);
	wait_blocked(b, 0, 1);
	expect_status(r_delete(1, "del"), CHAN_OK);
	expect_status(s, CHAN_NOT_FOUND);
	expect_status(r_delete(1, "del2"), CHAN_OK);
	expect_status(r, CHAN_NOT_FOUND);
	expect_status(r_delete(1, b), CHAN_OK);
	expect_status(any, CHAN_NOT_FOUND);
	expect_status(r_stat(1, "del"), CHAN_NOT_FOUND);
	expect_status(r_delete(1, "del"), CHAN_NOT_FOUND);
	wait_blocked(a, 0, 0);
}
END_TEST

START_TEST(test_shutdown_wakes_everyone)
{
	char        a[32], b[32];
	const char *names[2] = { a, b };
	treq       *w[4];

	two_shard_names(a, b);
	expect_status(r_create(1, "b", 1), CHAN_OK);
	expect_status(r_send(1, "b", "x", 0), CHAN_OK);
	w[0] = r_send(1, "b", "y", -1);
	w[1] = r_recv(2, "r", -1);
	w[2] = r_recv_any(3, names, 2, -1);
	w[3] = r_cwait(4, "k", CHAN__V1__WAIT_OP__GT, 10, -1);
	wait_blocked("b", 1, 0);
	wait_blocked("r", 0, 1);
	wait_blocked(a, 0, 1);
	wait_blocked(b, 0, 1);
	for (int i = 0; i < 4; i++) {
		ck_assert(pending(w[i], 20));
	}
	chd_engine_shutdown(E);
	for (int i = 0; i < 4; i++) {
		expect_status(w[i], CHAN_SHUTTING_DOWN);
	}
	expect_status(r_recv(2, "r", -1), CHAN_SHUTTING_DOWN);
	expect_status(r_simple(1, CHAN__V1__REQUEST__OP_PING),
	    CHAN_SHUTTING_DOWN);
}
END_TEST

/* ---- counters ----------------------------------------------------------- */

START_TEST(test_counter_basic_ops)
{
	treq *c;

	ck_assert_int_eq(value_of(r_cadd(1, "n", 5)), 5);
	ck_assert_int_eq(value_of(r_cadd(1, "n", -7)), -2);
	ck_assert_int_eq(value_of(r_cget(1, "n")), -2);
	expect_status(r_cget(1, "missing"), CHAN_NOT_FOUND);
	ck_assert_int_eq(value_of(r_cset(1, "n", 40)), -2);
	c = r_ccas(1, "n", 40, 41);
	expect_status(c, CHAN_OK);
	ck_assert(answer(c)->cas->swapped);
	ck_assert_int_eq(answer(c)->cas->value, 41);
	c = r_ccas(1, "n", 40, 99);
	ck_assert(!answer(c)->cas->swapped);
	ck_assert_int_eq(answer(c)->cas->value, 41);
	/* channels and counters are separate namespaces */
	expect_status(r_stat(1, "n"), CHAN_NOT_FOUND);
	expect_status(r_cdelete(1, "n"), CHAN_OK);
	expect_status(r_cget(1, "n"), CHAN_NOT_FOUND);
	expect_status(r_cdelete(1, "n"), CHAN_NOT_FOUND);
}
END_TEST

START_TEST(test_counter_overflow_out_of_range)
{
	value_of(r_cset(1, "big", INT64_MAX - 1));
	expect_status(r_cadd(1, "big", 2), CHAN_OUT_OF_RANGE);
	ck_assert_int_eq(value_of(r_cget(1, "big")), INT64_MAX - 1);
	value_of(r_cset(1, "small", INT64_MIN));
	expect_status(r_cadd(1, "small", -1), CHAN_OUT_OF_RANGE);
	ck_assert_int_eq(value_of(r_cget(1, "small")), INT64_MIN);
}
END_TEST

/* The answer to a CounterAdd.deltas: n values, each checked, value = last. */
static void
expect_values(treq *t, const int64_t *want, size_t n)
{
	Chan__V1__Response *r = answer(t);

	expect_status(t, CHAN_OK);
	ck_assert_int_eq(r->result_case, CHAN__V1__RESPONSE__RESULT_VALUE);
	ck_assert_uint_eq(r->value->n_values, n);
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(r->value->values[i], want[i]);
	}
	ck_assert(r->value->has_value);
	ck_assert_int_eq(r->value->value, want[n - 1]);
}

START_TEST(test_counter_add_many_in_order)
{
	int64_t d[] = { 5, -2, 10, 0, -20 };
	int64_t v[] = { 105, 103, 113, 113, 93 };

	value_of(r_cset(1, "many", 100));
	expect_values(r_cadd_many(1, "many", d, 5, false), v, 5);
	ck_assert_int_eq(value_of(r_cget(1, "many")), 93);
	/* creates at 0, like the single add */
	expect_values(r_cadd_many(1, "fresh", d, 2, false),
	    (int64_t[]) { 5, 3 }, 2);
	/* the single add still answers one value and no list */
	ck_assert_int_eq(value_of(r_cadd(1, "many", 7)), 100);
	ck_assert_uint_eq(answer(r_cadd(1, "many", 0))->value->n_values, 0);
}
END_TEST

START_TEST(test_counter_add_many_wakes_intermediate_waiters)
{
	int64_t ones[10] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 };
	treq   *eq5, *eq3b, *gt100;

	eq5 = r_cwait(2, "steps", CHAN__V1__WAIT_OP__EQ, 5, -1);
	eq3b = r_cwait(3, "steps", CHAN__V1__WAIT_OP__EQ, 3, -1);
	gt100 = r_cwait(4, "steps", CHAN__V1__WAIT_OP__GT, 100, -1);
	ck_assert(pending(eq5, 50));
	/* 1..10 passes 3 and 5 on the way; the final value is 10 */
	ck_assert_int_eq(answer(r_cadd_many(1, "steps", ones, 10, false))->
	    value->value, 10);
	ck_assert_int_eq(value_of(eq5), 5);
	ck_assert_int_eq(value_of(eq3b), 3);
	ck_assert(pending(gt100, 50));
	expect_status(r_cdelete(1, "steps"), CHAN_OK);
	expect_status(gt100, CHAN_NOT_FOUND);
}
END_TEST

START_TEST(test_counter_add_many_overflow_applies_nothing)
{
	int64_t d[] = { -1, 1, 1, 1, -5 };
	treq   *w, *t;

	value_of(r_cset(1, "edge", INT64_MAX - 1));
	/* -1 and 1 would reach INT64_MAX - 1 again: a waiter for it stays */
	w = r_cwait(2, "edge", CHAN__V1__WAIT_OP__EQ, INT64_MAX - 2, -1);
	ck_assert(pending(w, 50));
	t = r_cadd_many(1, "edge", d, 5, false); /* add 4 overflows */
	expect_status(t, CHAN_OUT_OF_RANGE);
	ck_assert_ptr_nonnull(strstr(answer(t)->error, "add 4 of 5"));
	ck_assert_int_eq(value_of(r_cget(1, "edge")), INT64_MAX - 1);
	ck_assert(pending(w, 50));
	/* the same sequence without the overflowing add goes through */
	expect_values(r_cadd_many(1, "edge", d, 3, false), (int64_t[]) {
	    INT64_MAX - 2, INT64_MAX - 1, INT64_MAX }, 3);
	ck_assert_int_eq(value_of(w), INT64_MAX - 2);
	value_of(r_cset(1, "low", INT64_MIN + 1));
	expect_status(r_cadd_many(1, "low", (int64_t[]) { -1, -1 }, 2, false),
	    CHAN_OUT_OF_RANGE);
	ck_assert_int_eq(value_of(r_cget(1, "low")), INT64_MIN + 1);
}
END_TEST

START_TEST(test_counter_add_many_bad_forms)
{
	int64_t d[17];
	treq   *t;

	for (int i = 0; i < 17; i++) {
		d[i] = 1;
	}
	value_of(r_cset(1, "bad", 0));
	t = r_cadd_many(1, "bad", d, 2, true); /* delta and deltas */
	expect_status(t, CHAN_INVALID_ARGUMENT);
	ck_assert_ptr_nonnull(strstr(answer(t)->error, "not both"));
	ck_assert_int_eq(value_of(r_cadd(1, "bad", 1)), 1);
	t = r_cadd_many(1, "bad", d, 17, false); /* max_batch is 16 */
	expect_status(t, CHAN_INVALID_ARGUMENT);
	ck_assert_ptr_nonnull(strstr(answer(t)->error, "1 to 16 deltas"));
	ck_assert_int_eq(value_of(r_cget(1, "bad")), 1);
	/* max_batch itself is fine, and the engine still serves */
	ck_assert_int_eq(answer(r_cadd_many(1, "bad", d, 16, false))->
	    value->value, 17);
	t = r_cadd_many(1, "bad name", d, 2, false);
	expect_status(t, CHAN_INVALID_ARGUMENT);
	ck_assert_int_eq(value_of(r_cget(1, "bad")), 17);
}
END_TEST

START_TEST(test_counter_wait_each_operator)
{
	/* value 5: each operator that holds answers at once */
	int      holds[] = { CHAN__V1__WAIT_OP__EQ, CHAN__V1__WAIT_OP__NE,
		CHAN__V1__WAIT_OP__LT, CHAN__V1__WAIT_OP__LE,
		CHAN__V1__WAIT_OP__GT, CHAN__V1__WAIT_OP__GE };
	int64_t  hv[] = { 5, 4, 6, 5, 4, 5 };
	int64_t  nv[] = { 6, 5, 5, 4, 5, 6 }; /* does not hold at 5 */
	int64_t  fix[] = { 6, 6, 4, 4, 6, 6 }; /* value that makes it hold */
	treq    *w;

	for (int i = 0; i < 6; i++) {
		char name[16];
		snprintf(name, sizeof(name), "w%d", i);
		value_of(r_cset(1, name, 5));
		ck_assert_int_eq(value_of(r_cwait(1, name, holds[i], hv[i], -1)),
		    5);
		expect_status(r_cwait(1, name, holds[i], nv[i], 0),
		    CHAN_TIMEOUT);
		w = r_cwait(1, name, holds[i], nv[i], -1);
		ck_assert(pending(w, 50));
		value_of(r_cset(1, name, fix[i]));
		ck_assert_int_eq(value_of(w), fix[i]);
	}
}
END_TEST

START_TEST(test_counter_wait_wakes_every_satisfied_waiter)
{
	treq   *w[4];
	int64_t t0;

	w[0] = r_cwait(1, "k", CHAN__V1__WAIT_OP__GE, 3, -1);
	w[1] = r_cwait(2, "k", CHAN__V1__WAIT_OP__GE, 3, -1);
	w[2] = r_cwait(3, "k", CHAN__V1__WAIT_OP__EQ, 3, -1);
	w[3] = r_cwait(4, "k", CHAN__V1__WAIT_OP__GT, 100, -1);
	ck_assert(pending(w[0], 50));
	value_of(r_cadd(1, "k", 3));
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(value_of(w[i]), 3);
	}
	ck_assert(pending(w[3], 50));
	expect_status(r_cdelete(1, "k"), CHAN_OK);
	expect_status(w[3], CHAN_NOT_FOUND);
	t0 = now_ms();
	expect_status(r_cwait(1, "k", CHAN__V1__WAIT_OP__GT, 100, 300),
	    CHAN_TIMEOUT);
	ck_assert_int_ge(now_ms() - t0, 270);
}
END_TEST

START_TEST(test_counter_list_fans_out)
{
	treq               *l;
	Chan__V1__Response *r;
	char                name[16];

	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "c%02d", i);
		value_of(r_cadd(1, name, i));
	}
	l = r_simple(1, CHAN__V1__REQUEST__OP_COUNTER_LIST);
	r = answer(l);
	expect_status(l, CHAN_OK);
	ck_assert_uint_eq(r->counter_list->n_counters, 20);
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "c%02d", i);
		ck_assert_str_eq(r->counter_list->counters[i]->name, name);
		ck_assert_int_eq(r->counter_list->counters[i]->value, i);
	}
}
END_TEST

/* ---- validation --------------------------------------------------------- */

START_TEST(test_invalid_names)
{
	char long_name[200];
	treq *t;

	memset(long_name, 'a', 129);
	long_name[129] = '\0';
	t = r_send(1, "a b", "x", 0);
	expect_status(t, CHAN_INVALID_ARGUMENT);
	ck_assert_ptr_nonnull(strstr(answer(t)->error, "[A-Za-z0-9._:-]"));
	expect_status(r_send(1, "", "x", 0), CHAN_INVALID_ARGUMENT);
	expect_status(r_recv(1, long_name, 0), CHAN_INVALID_ARGUMENT);
	long_name[128] = '\0';
	expect_status(r_send(1, long_name, "x", 0), CHAN_OK);
	expect_status(r_cadd(1, "bad/name", 1), CHAN_INVALID_ARGUMENT);
	expect_status(r_recv_any(1, (const char *[]) { "ok", "no way" }, 2, 0),
	    CHAN_INVALID_ARGUMENT);
	expect_status(r_stat(1, "ok"), CHAN_NOT_FOUND);
}
END_TEST

START_TEST(test_too_large_stores_nothing)
{
	char        big[1002];
	const char *batch[2] = { "small", big };
	treq       *t;

	memset(big, 'x', 1001);
	big[1001] = '\0';
	t = r_sendv(1, "big", batch, 2, 0, 0);
	expect_status(t, CHAN_TOO_LARGE);
	ck_assert_ptr_nonnull(strstr(answer(t)->error, "1001"));
	expect_status(r_stat(1, "big"), CHAN_NOT_FOUND);
	big[1000] = '\0';
	expect_status(r_send(1, "big", big, 0), CHAN_OK);
}
END_TEST

START_TEST(test_bad_fields_invalid_argument)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	const char       *many[17];
	treq             *t;

	for (int i = 0; i < 17; i++) {
		many[i] = "m";
	}
	t = submit(1, &m);
	expect_status(t, CHAN_INVALID_ARGUMENT);
	ck_assert_ptr_nonnull(strstr(answer(t)->error, "unknown request type"));
	expect_status(r_send(1, "q", "x", -2 - 1), CHAN_INVALID_ARGUMENT);
	expect_status(r_recv(1, "q", -5), CHAN_INVALID_ARGUMENT);
	expect_status(r_recvx(1, "q", 17, 0, 0, NULL, 0),
	    CHAN_INVALID_ARGUMENT);
	expect_status(r_sendv(1, "q", many, 0, 0, 0), CHAN_INVALID_ARGUMENT);
	expect_status(r_sendv(1, "q", many, 17, 0, 0), CHAN_INVALID_ARGUMENT);
	expect_status(r_cwait(1, "k", 9, 0, 0), CHAN_INVALID_ARGUMENT);
	expect_status(r_cwait(1, "k", 0, 0, -7), CHAN_INVALID_ARGUMENT);
	expect_status(r_sender_close(1, "q", 0), CHAN_INVALID_ARGUMENT);
	expect_status(r_stat(1, "q"), CHAN_NOT_FOUND);
}
END_TEST

/* ---- custody ------------------------------------------------------------ */

START_TEST(test_custody_unconfirmed_goes_back_redelivered)
{
	treq                  *r;
	Chan__V1__ChannelInfo *ci;

	expect_status(r_send(1, "cu", "one", 0), CHAN_OK);
	expect_status(r_send(1, "cu", "two", 0), CHAN_OK);
	expect_status(r_send(1, "cu", "three", 0), CHAN_OK);
	r = r_recv(8, "cu", 0);
	expect_msg(r, "one");
	ck_assert(!answer(r)->recv->messages[0]->redelivered);
	r = r_recv(8, "cu", 0);
	expect_msg(r, "two");
	ci = stat_of("cu");
	ck_assert_uint_eq(ci->in_flight, 2);
	ck_assert_uint_eq(ci->depth, 1);
	chd_engine_conn_close(E, 8);
	r = r_recvx(9, "cu", 5, 0, 0, NULL, 0);
	expect_status(r, CHAN_OK);
	ck_assert_uint_eq(answer(r)->recv->n_messages, 3);
	ck_assert_uint_eq(answer(r)->recv->messages[0]->seq, 1);
	ck_assert(answer(r)->recv->messages[0]->redelivered);
	ck_assert_uint_eq(answer(r)->recv->messages[1]->seq, 2);
	ck_assert(answer(r)->recv->messages[1]->redelivered);
	ck_assert_uint_eq(answer(r)->recv->messages[2]->seq, 3);
	ck_assert(!answer(r)->recv->messages[2]->redelivered);
	ck_assert_uint_eq(stat_of("cu")->total_redelivered, 2);
}
END_TEST

START_TEST(test_custody_confirmed_is_gone)
{
	treq    *r;
	uint64_t d;

	expect_status(r_send(1, "cu", "one", 0), CHAN_OK);
	expect_status(r_send(1, "cu", "two", 0), CHAN_OK);
	r = r_recv(8, "cu", 0);
	expect_msg(r, "one");
	d = answer(r)->delivery;
	/* the confirm rides on the next request, before its op */
	r = r_recvx(8, "cu", 0, 0, 0, &d, 1);
	expect_msg(r, "two");
	ck_assert_uint_ne(answer(r)->delivery, d);
	ck_assert_uint_eq(stat_of("cu")->in_flight, 1);
	chd_engine_conn_close(E, 8);
	ck_assert_uint_eq(stat_of("cu")->in_flight, 0);
	r = r_recv(9, "cu", 0);
	expect_msg(r, "two");
	ck_assert(answer(r)->recv->messages[0]->redelivered);
	expect_status(r_recv(9, "cu", 0), CHAN_EMPTY);
}
END_TEST

/* A Stat of name on conn carrying one PartConfirm {d, taken}. */
static treq *
r_stat_part(uint32_t conn, const char *name, uint64_t d, uint32_t taken)
{
	Chan__V1__Request      m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Stat         st = CHAN__V1__STAT__INIT;
	Chan__V1__PartConfirm  pc = CHAN__V1__PART_CONFIRM__INIT;
	Chan__V1__PartConfirm *pcs[1] = { &pc };

	st.name = (char *) name;
	m.op_case = CHAN__V1__REQUEST__OP_STAT;
	m.stat = &st;
	pc.has_delivery = pc.has_taken = true;
	pc.delivery = d;
	pc.taken = taken;
	m.n_confirm_part = 1;
	m.confirm_part = pcs;
	return (submit(conn, &m));
}

/* Queues a..e on "cp" and hands all five to conn 8 in one delivery. */
static uint64_t
five_in_custody(void)
{
	const char *five[] = { "a", "b", "c", "d", "e" };
	treq       *r;

	expect_status(r_sendv(1, "cp", five, 5, 0, 0), CHAN_OK);
	r = r_recvx(8, "cp", 5, 0, 0, NULL, 0);
	expect_status(r, CHAN_OK);
	ck_assert_uint_eq(answer(r)->recv->n_messages, 5);
	return (answer(r)->delivery);
}

/*
 * A consumer closing with two of five taken (Request.confirm_part): those
 * two leave custody, the other three are back at once, in order and
 * marked redelivered; the taken ones never come again.
 */
START_TEST(test_custody_part_confirm_gives_back_the_rest)
{
	uint64_t d = five_in_custody();
	treq    *r;

	r = r_stat_part(8, "cp", d, 2);
	expect_status(r, CHAN_OK);
	ck_assert_uint_eq(answer(r)->stat->depth, 3);
	ck_assert_uint_eq(answer(r)->stat->in_flight, 0);
	ck_assert_uint_eq(answer(r)->stat->total_redelivered, 3);
	chd_engine_conn_close(E, 8); /* nothing left to give back */
	r = r_recvx(9, "cp", 5, 0, 0, NULL, 0);
	expect_status(r, CHAN_OK);
	ck_assert_uint_eq(answer(r)->recv->n_messages, 3);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_uint_eq(answer(r)->recv->messages[i]->seq, 3 + i);
		ck_assert(answer(r)->recv->messages[i]->redelivered);
	}
}
END_TEST

/* taken 0 gives all back; taken >= the count is a plain confirm; another
 * connection and client cannot do either. */
START_TEST(test_custody_part_confirm_edges)
{
	uint64_t d = five_in_custody();

	expect_status(r_stat_part(7, "cp", d, 0), CHAN_OK); /* not the holder */
	ck_assert_uint_eq(stat_of("cp")->in_flight, 5);
	expect_status(r_stat_part(8, "cp", d, 0), CHAN_OK);
	ck_assert_uint_eq(stat_of("cp")->in_flight, 0);
	ck_assert_uint_eq(stat_of("cp")->depth, 5);
	d = answer(r_recvx(8, "cp", 5, 0, 0, NULL, 0))->delivery;
	expect_status(r_stat_part(8, "cp", d, 9), CHAN_OK);
	ck_assert_uint_eq(stat_of("cp")->in_flight, 0);
	ck_assert_uint_eq(stat_of("cp")->depth, 0);
	expect_status(r_stat_part(8, "cp", d, 1), CHAN_OK); /* gone: ignored */
	expect_status(r_recv(9, "cp", 0), CHAN_EMPTY);
}
END_TEST

/* ---- idempotent requests ------------------------------------------------ */

START_TEST(test_idem_repeat_gets_first_answer)
{
	treq *a, *b;

	force_client = 0xC1;
	force_id = 500;
	a = r_send(1, "id", "once", 0);
	expect_status(a, CHAN_OK);
	b = r_send(2, "id", "once", 0); /* same (client, id), other conn */
	expect_status(b, CHAN_OK);
	ck_assert_uint_eq(answer(b)->send->first_seq,
	    answer(a)->send->first_seq);
	force_id = 501;
	ck_assert_int_eq(value_of(r_cadd(1, "idk", 5)), 5);
	ck_assert_int_eq(value_of(r_cadd(1, "idk", 5)), 5);
	force_id = 502; /* several adds: the whole answer is the cached one */
	expect_values(r_cadd_many(1, "idm", (int64_t[]) { 1, 2, 3 }, 3, false),
	    (int64_t[]) { 1, 3, 6 }, 3);
	expect_values(r_cadd_many(2, "idm", (int64_t[]) { 1, 2, 3 }, 3, false),
	    (int64_t[]) { 1, 3, 6 }, 3);
	force_client = force_id = 0;
	ck_assert_int_eq(value_of(r_cget(1, "idm")), 6);
	ck_assert_uint_eq(stat_of("id")->depth, 1);
	ck_assert_int_eq(value_of(r_cget(1, "idk")), 5);
	/* another client with the same id is another request */
	force_client = 0xC2;
	force_id = 500;
	expect_status(r_send(1, "id", "twice", 0), CHAN_OK);
	/* without a client nothing is cached */
	force_client = 0;
	expect_status(r_send(1, "id", "thrice", 0), CHAN_OK);
	force_id = 0;
	ck_assert_uint_eq(stat_of("id")->depth, 3);
}
END_TEST

START_TEST(test_idem_parked_repeat_rebinds)
{
	treq *a, *b;

	force_client = 0xC3;
	force_id = 77;
	a = r_recv(1, "rb", -1);
	wait_blocked("rb", 0, 1);
	b = r_recv(1, "rb", -1);
	expect_status(a, CHAN_UNAVAILABLE);
	force_client = force_id = 0;
	ck_assert(pending(b, 50));
	ck_assert_uint_eq(stat_of("rb")->blocked_receivers, 1);
	expect_status(r_send(2, "rb", "m", 0), CHAN_OK);
	expect_msg(b, "m");
}
END_TEST

START_TEST(test_idem_repeat_on_new_conn_survives_old_conn_close)
{
	treq *a, *b;

	force_client = 0xC4;
	force_id = 9;
	a = r_recv(5, "nc", -1);
	wait_blocked("nc", 0, 1);
	b = r_recv(6, "nc", -1); /* client reconnected, repeats */
	expect_status(a, CHAN_UNAVAILABLE);
	force_client = force_id = 0;
	chd_engine_conn_close(E, 5);
	ck_assert(pending(b, 100));
	wait_blocked("nc", 0, 1);
	expect_status(r_send(2, "nc", "late", 0), CHAN_OK);
	expect_msg(b, "late");
}
END_TEST

START_TEST(test_idem_given_back_answer_is_forgotten)
{
	treq *a, *b;

	expect_status(r_send(1, "gb", "msg", 0), CHAN_OK);
	force_client = 0xC5;
	force_id = 3;
	a = r_recv(7, "gb", 0);
	expect_msg(a, "msg");
	/* the answer was lost with the connection: messages come back and
	 * the repeat receives them afresh instead of a stale replay */
	chd_engine_conn_close(E, 7);
	b = r_recv(8, "gb", 0);
	expect_msg(b, "msg");
	ck_assert(answer(b)->recv->messages[0]->redelivered);
	ck_assert_uint_ne(answer(b)->delivery, answer(a)->delivery);
	force_client = force_id = 0;
	ck_assert_uint_eq(stat_of("gb")->in_flight, 1);
}
END_TEST

START_TEST(test_idem_replay_on_new_conn_moves_custody)
{
	treq *a, *b;

	expect_status(r_send(1, "mv", "msg", 0), CHAN_OK);
	force_client = 0xC6;
	force_id = 4;
	a = r_recv(12, "mv", 0);
	expect_msg(a, "msg");
	/* the repeat comes on the new connection before the old one is
	 * seen closing: it gets the first answer and custody moves */
	b = r_recv(13, "mv", 0);
	expect_msg(b, "msg");
	ck_assert_uint_eq(answer(b)->delivery, answer(a)->delivery);
	force_client = force_id = 0;
	chd_engine_conn_close(E, 12);
	ck_assert_uint_eq(stat_of("mv")->in_flight, 1);
	ck_assert_uint_eq(stat_of("mv")->depth, 0);
	chd_engine_conn_close(E, 13);
	ck_assert_uint_eq(stat_of("mv")->depth, 1);
}
END_TEST

/* ---- ack mode ----------------------------------------------------------- */

START_TEST(test_ack_mode_leased_counts_against_capacity)
{
	treq *r;

	expect_status(r_create(1, "ak", 2), CHAN_OK);
	expect_status(r_send(1, "ak", "a", 0), CHAN_OK);
	expect_status(r_send(1, "ak", "b", 0), CHAN_OK);
	r = r_recv_lease(2, "ak", 0, 60000);
	expect_leased(r, "a");
	ck_assert_uint_eq(stat_of("ak")->in_flight, 1);
	expect_status(r_send(1, "ak", "c", 0), CHAN_FULL);
	expect_status(r_ack(2, "ak", 1), CHAN_OK);
	ck_assert_uint_eq(stat_of("ak")->in_flight, 0);
	expect_status(r_send(1, "ak", "c", 0), CHAN_OK);
	expect_status(r_ack(2, "ak", 1), CHAN_NOT_FOUND);
	expect_msg(r_recv(2, "ak", 0), "b");
}
END_TEST

START_TEST(test_ack_mode_lease_expiry_gives_back)
{
	treq   *r;
	int64_t t0 = now_ms();

	expect_status(r_send(1, "le", "x", 0), CHAN_OK);
	expect_leased(r_recv_lease(2, "le", 0, 300), "x");
	expect_status(r_recv(2, "le", 0), CHAN_EMPTY);
	r = r_recv(2, "le", -1);
	expect_msg(r, "x");
	ck_assert(answer(r)->recv->messages[0]->redelivered);
	ck_assert_int_ge(now_ms() - t0, 270);
	ck_assert_uint_eq(stat_of("le")->total_redelivered, 1);
}
END_TEST

START_TEST(test_ack_mode_release_now_and_delayed)
{
	treq   *r;
	int64_t t0;

	expect_status(r_send(1, "rl", "x", 0), CHAN_OK);
	expect_status(r_send(1, "rl", "y", 0), CHAN_OK);
	expect_leased(r_recv_lease(2, "rl", 0, 60000), "x");
	expect_status(r_release(2, "rl", 1, 0), CHAN_OK);
	r = r_recv_lease(2, "rl", 0, 60000);
	expect_leased(r, "x"); /* back at the head */
	ck_assert(answer(r)->recv->messages[0]->redelivered);
	expect_msg(r_recv(2, "rl", 0), "y");
	t0 = now_ms();
	expect_status(r_release(2, "rl", 1, 300), CHAN_OK);
	expect_status(r_release(2, "rl", 1, 0), CHAN_NOT_FOUND);
	expect_status(r_recv(2, "rl", 0), CHAN_EMPTY);
	expect_msg(r_recv(2, "rl", -1), "x");
	ck_assert_int_ge(now_ms() - t0, 270);
}
END_TEST

/* A lease outlives its connection: `chan recv --lease` exits, and a later
 * `chan ack` from another process finishes the message. */
START_TEST(test_ack_mode_lease_outlives_conn)
{
	expect_status(r_send(1, "lc", "x", 0), CHAN_OK);
	expect_leased(r_recv_lease(11, "lc", 0, 60000), "x");
	chd_engine_conn_close(E, 11);
	expect_status(r_recv(2, "lc", 0), CHAN_EMPTY);
	ck_assert_uint_eq(stat_of("lc")->in_flight, 1);
	expect_status(r_ack(12, "lc", 1), CHAN_OK);
	ck_assert_uint_eq(stat_of("lc")->in_flight, 0);
}
END_TEST

/* ---- introspection ------------------------------------------------------ */

START_TEST(test_stat_list_stats_hello_ping)
{
	treq               *t;
	Chan__V1__Response *r;

	expect_status(r_create(1, "l2", 4), CHAN_OK);
	expect_status(r_send(1, "l1", "abc", 0), CHAN_OK);
	expect_status(r_send(1, "l1", "de", 0), CHAN_OK);
	ck_assert_uint_eq(stat_of("l1")->bytes, 5);
	ck_assert_uint_eq(stat_of("l1")->total_sent, 2);
	value_of(r_cadd(1, "k1", 1));
	t = r_simple(1, CHAN__V1__REQUEST__OP_LIST);
	r = answer(t);
	expect_status(t, CHAN_OK);
	ck_assert_uint_eq(r->list->n_channels, 2);
	ck_assert_str_eq(r->list->channels[0]->name, "l1");
	ck_assert_uint_eq(r->list->channels[0]->depth, 2);
	ck_assert_str_eq(r->list->channels[1]->name, "l2");
	t = r_simple(1, CHAN__V1__REQUEST__OP_STATS);
	r = answer(t);
	expect_status(t, CHAN_OK);
	ck_assert_uint_eq(r->stats->channels, 2);
	ck_assert_uint_eq(r->stats->counters, 1);
	ck_assert_uint_eq(r->stats->messages, 2);
	ck_assert_uint_eq(r->stats->bytes, 5);
	ck_assert_uint_eq(r->stats->connections, 20);
	ck_assert_uint_eq(r->stats->workers, 4);
	ck_assert_uint_ge(r->stats->requests, 8);
	t = r_simple(1, CHAN__V1__REQUEST__OP_HELLO);
	r = answer(t);
	expect_status(t, CHAN_OK);
	ck_assert_uint_eq(r->hello->protocol_version, CHL_PROTOCOL_VERSION);
	ck_assert_uint_eq(r->hello->max_message_size, 1000);
	ck_assert_uint_eq(r->hello->max_batch, 16);
	ck_assert(r->hello->has_counter_add_many && r->hello->counter_add_many);
	ck_assert_str_eq(r->hello->server_version, CHAN_VERSION);
	t = r_simple(1, CHAN__V1__REQUEST__OP_PING);
	expect_status(t, CHAN_OK);
	ck_assert_int_eq(answer(t)->result_case,
	    CHAN__V1__RESPONSE__RESULT_EMPTY);
}
END_TEST

/* ---- scale -------------------------------------------------------------- */

#define NPARKED 10000

START_TEST(test_10000_parked_receivers_cost_no_cpu)
{
	treq         **w = calloc(NPARKED, sizeof(*w));
	char           name[32];
	struct rusage  u0, u1;
	int64_t        cpu_ms;

	for (int i = 0; i < NPARKED; i++) {
		snprintf(name, sizeof(name), "p%d", i);
		w[i] = r_recv((uint32_t) (1 + i % 20), name, -1);
	}
	/* all parked: stats sees every channel; none answered */
	for (int i = 0; i < 1000; i++) {
		treq *t = r_simple(1, CHAN__V1__REQUEST__OP_STATS);
		if (answer(t)->stats->channels == NPARKED) {
			break;
		}
		msleep(10);
	}
	getrusage(RUSAGE_SELF, &u0);
	msleep(500);
	getrusage(RUSAGE_SELF, &u1);
	cpu_ms = (u1.ru_utime.tv_sec - u0.ru_utime.tv_sec) * 1000 +
	    (u1.ru_utime.tv_usec - u0.ru_utime.tv_usec) / 1000 +
	    (u1.ru_stime.tv_sec - u0.ru_stime.tv_sec) * 1000 +
	    (u1.ru_stime.tv_usec - u0.ru_stime.tv_usec) / 1000;
	ck_assert_msg(cpu_ms < 250, "parked waiters burned %lld ms CPU",
	    (long long) cpu_ms);
	for (int i = 0; i < NPARKED; i++) {
		ck_assert(pending(w[i], 0));
	}
	chd_engine_shutdown(E);
	for (int i = 0; i < NPARKED; i++) {
		expect_status(w[i], CHAN_SHUTTING_DOWN);
	}
	free(w);
}
END_TEST

/* ---- custody grace and confirmation ownership --------------------------- */

/* n messages with these payloads in this order, each redelivered or not. */
static void
expect_msgs(treq *t, const char *const *data, const int *redel, size_t n)
{
	Chan__V1__Response *r = answer(t);

	expect_status(t, CHAN_OK);
	ck_assert_int_eq(r->result_case, CHAN__V1__RESPONSE__RESULT_RECV);
	ck_assert_uint_eq(r->recv->n_messages, n);
	for (size_t i = 0; i < n; i++) {
		Chan__V1__Message *m = r->recv->messages[i];
		ck_assert_uint_eq(m->data.len, strlen(data[i]));
		ck_assert(memcmp(m->data.data, data[i], m->data.len) == 0);
		ck_assert_msg(!!m->redelivered == !!redel[i],
		    "message %zu (%s): redelivered %d", i, data[i],
		    (int) m->redelivered);
	}
	ck_assert(r->has_delivery && r->delivery != 0);
}

/*
 * The torture program's order violation: consumer A dies holding m1, m2;
 * B's recv reaches the shard before A's close does. B must wait for it
 * and get m1, m2 (redelivered) before m3, m4. Same for a try, recv_any and
 * a try recv_any.
 */
START_TEST(test_custody_grace_holder_closes)
{
	const char *m[] = { "m1", "m2", "m3", "m4" };
	const int   fresh2[] = { 1, 1, 0, 0 }, all4[] = { 1, 1, 1, 1 };
	const char *names[] = { "gr", "gr2" };
	treq       *a, *b;

	/* gr2 exists before recv_any runs: its part on gr2's shard is async,
	 * so an auto-create there could still be pending at the stat below. */
	expect_status(r_create(1, "gr2", -1), CHAN_OK);
	expect_status(r_sendv(1, "gr", m, 4, 0, 0), CHAN_OK);
	a = r_recvx(8, "gr", 2, 0, 0, NULL, 0);
	expect_msgs(a, m, fresh2 + 2, 2);
	/* posted before the close: without the wait it would take m3, m4 */
	b = r_recvx(9, "gr", 8, 5000, 0, NULL, 0);
	chd_engine_conn_close(E, 8);
	expect_msgs(b, m, fresh2, 4);
	/* a try waits too: answering m1.. later would break the order */
	b = r_recvx(10, "gr", 8, 0, 0, NULL, 0);
	chd_engine_conn_close(E, 9);
	expect_msgs(b, m, all4, 4);
	/* recv_any, waiting and trying */
	b = r_recv_any(11, names, 2, 5000);
	chd_engine_conn_close(E, 10);
	expect_msgs(b, m, all4, 1);
	wait_blocked("gr2", 0, 0); /* its other part's cancel is async */
	b = r_recv_any(12, names, 2, 0);
	chd_engine_conn_close(E, 11);
	expect_msgs(b, m, all4, 1);
	ck_assert_uint_eq(stat_of("gr")->depth, 3);
}
END_TEST

/*
 * A live holder that does not confirm delays another connection once, by
 * about the grace (1 s here, to keep the bounds loose), and never past
 * that connection's own timeout.
 */
START_TEST(test_custody_grace_idle_holder_delays_once)
{
	const char *m[] = { "m1", "m2", "m3", "m4" };
	const int   fresh[] = { 0, 0, 0, 0 };
	treq       *a, *b;
	int64_t     t0, el;

	chd_engine_free(E);
	grace_opt = 1000;
	start_engine(true);
	grace_opt = 0;
	expect_status(r_sendv(1, "gi", m, 4, 0, 0), CHAN_OK);
	a = r_recv(8, "gi", 0); /* conn 8 holds m1, stays, never confirms */
	expect_msgs(a, m, fresh, 1);
	t0 = now_ms();
	b = r_recvx(9, "gi", 8, 20000, 0, NULL, 0);
	expect_msgs(b, m + 1, fresh, 3);
	el = now_ms() - t0;
	ck_assert_msg(el >= 900 && el < 10000, "waited %lld ms for a 1 s "
	    "grace", (long long) el);
	/* spent: conn 9 does not wait for m1 again, trying or waiting */
	expect_status(r_send(1, "gi", "m5", 0), CHAN_OK);
	t0 = now_ms();
	b = r_recv(9, "gi", 0);
	expect_msg(b, "m5");
	expect_status(r_recv(9, "gi", 0), CHAN_EMPTY);
	b = r_recv(9, "gi", -1);
	ck_assert(pending(b, 20));
	expect_status(r_send(1, "gi", "m6", 0), CHAN_OK);
	expect_msg(b, "m6");
	el = now_ms() - t0;
	ck_assert_msg(el < 900, "conn 9 waited again (%lld ms)",
	    (long long) el);
	/* conn 9's own custody holds conn 10 back, but not past its own
	 * 200 ms timeout: then TIMEOUT (nothing queued) and spent */
	t0 = now_ms();
	expect_status(r_recv(10, "gi", 200), CHAN_TIMEOUT);
	el = now_ms() - t0;
	ck_assert_msg(el >= 180 && el < 900, "a 200 ms recv answered after "
	    "%lld ms", (long long) el);
	expect_status(r_send(1, "gi", "m7", 0), CHAN_OK);
	t0 = now_ms();
	expect_msg(r_recv(10, "gi", 0), "m7");
	el = now_ms() - t0;
	ck_assert_msg(el < 900, "conn 10 waited again (%lld ms)",
	    (long long) el);
	/* the held ones are still in custody: m1 (8), m2-m6 (9) */
	ck_assert_uint_eq(stat_of("gi")->in_flight, 7);
}
END_TEST

/* A confirmation counts only from the holder: its connection, or its
 * client (Request.client) on another connection after a reconnect. */
START_TEST(test_confirm_only_by_holder)
{
	treq    *r;
	uint64_t d, d2;

	expect_status(r_send(1, "fc", "one", 0), CHAN_OK);
	force_client = 77;
	r = r_recv(8, "fc", 0);
	force_client = 0;
	expect_msg(r, "one");
	d = answer(r)->delivery;
	/* ids keep routing to the owning shard; they do not start at 1 */
	ck_assert_uint_eq(d % 4, (uint64_t) chd_shard_for_chan(E, "fc")->idx);
	ck_assert_uint_gt(d / 4, 1);
	/* another connection without client, another client: ignored */
	expect_status(r_recvx(9, "fc-x", 0, 0, 0, &d, 1), CHAN_EMPTY);
	ck_assert_uint_eq(stat_of("fc")->in_flight, 1);
	force_client = 78;
	expect_status(r_recvx(9, "fc-x", 0, 0, 0, &d, 1), CHAN_EMPTY);
	force_client = 0;
	ck_assert_uint_eq(stat_of("fc")->in_flight, 1);
	/* the same client on a new connection: confirmed */
	force_client = 77;
	expect_status(r_recvx(9, "fc-x", 0, 0, 0, &d, 1), CHAN_EMPTY);
	force_client = 0;
	ck_assert_uint_eq(stat_of("fc")->in_flight, 0);
	/* a restarted engine numbers its deliveries elsewhere */
	chd_engine_free(E);
	start_engine(true);
	expect_status(r_send(1, "fc", "one", 0), CHAN_OK);
	force_client = 77;
	r = r_recv(8, "fc", 0);
	force_client = 0;
	expect_msg(r, "one");
	d2 = answer(r)->delivery;
	ck_assert_uint_ne(d2, d);
	/* and a stale id from before the restart confirms nothing */
	force_client = 77;
	expect_status(r_recvx(8, "fc-x", 0, 0, 0, &d, 1), CHAN_EMPTY);
	force_client = 0;
	ck_assert_uint_eq(stat_of("fc")->in_flight, 1);
}
END_TEST

static Suite *
engine_suite(void)
{
	Suite *s = suite_create("engine");
	TCase *tc = tcase_create("spec");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_unbounded_fifo_seq_and_time);
	tcase_add_test(tc, test_create_idempotent_and_already_exists);
	tcase_add_test(tc, test_no_auto_create_not_found);
	tcase_add_test(tc, test_bounded_try_send_full);
	tcase_add_test(tc, test_try_recv_empty);
	tcase_add_test(tc, test_bounded_sender_waits_for_room);
	tcase_add_test(tc, test_blocked_senders_arrival_order);
	tcase_add_test(tc, test_send_timeout_leaves_nothing);
	tcase_add_test(tc, test_recv_timeout);
	tcase_add_test(tc, test_rendezvous_try_send_full);
	tcase_add_test(tc, test_rendezvous_handoff_to_parked_receiver);
	tcase_add_test(tc, test_rendezvous_sender_completes_only_when_taken);
	tcase_add_test(tc, test_rendezvous_batch_invalid);
	tcase_add_test(tc, test_batch_all_or_nothing);
	tcase_add_test(tc, test_recv_max_n);
	tcase_add_test(tc, test_memory_limit_resource_exhausted);
	tcase_add_test(tc, test_close_drains_then_closed);
	tcase_add_test(tc, test_close_wakes_parked_receiver);
	tcase_add_test(tc, test_sender_drop_closes);
	tcase_add_test(tc, test_sender_conn_close_closes);
	tcase_add_test(tc, test_receiver_drop_discards);
	tcase_add_test(tc, test_receiver_detach_only_keeps_messages);
	tcase_add_test(tc, test_busy_second_connection);
	tcase_add_test(tc, test_receiver_detached_on_conn_close);
	tcase_add_test(tc, test_handles_are_checked);
	tcase_add_test(tc, test_recv_any_across_shards);
	tcase_add_test(tc, test_recv_any_takes_from_rendezvous_sender);
	tcase_add_test(tc, test_recv_any_timeout_and_closed);
	tcase_add_test(tc, test_delete_wakes_waiters_not_found);
	tcase_add_test(tc, test_shutdown_wakes_everyone);
	tcase_add_test(tc, test_counter_basic_ops);
	tcase_add_test(tc, test_counter_overflow_out_of_range);
	tcase_add_test(tc, test_counter_add_many_in_order);
	tcase_add_test(tc, test_counter_add_many_wakes_intermediate_waiters);
	tcase_add_test(tc, test_counter_add_many_overflow_applies_nothing);
	tcase_add_test(tc, test_counter_add_many_bad_forms);
	tcase_add_test(tc, test_counter_wait_each_operator);
	tcase_add_test(tc, test_counter_wait_wakes_every_satisfied_waiter);
	tcase_add_test(tc, test_counter_list_fans_out);
	tcase_add_test(tc, test_invalid_names);
	tcase_add_test(tc, test_too_large_stores_nothing);
	tcase_add_test(tc, test_bad_fields_invalid_argument);
	tcase_add_test(tc, test_custody_unconfirmed_goes_back_redelivered);
	tcase_add_test(tc, test_custody_confirmed_is_gone);
	tcase_add_test(tc, test_custody_part_confirm_gives_back_the_rest);
	tcase_add_test(tc, test_custody_part_confirm_edges);
	tcase_add_test(tc, test_custody_grace_holder_closes);
	tcase_add_test(tc, test_custody_grace_idle_holder_delays_once);
	tcase_add_test(tc, test_confirm_only_by_holder);
	tcase_add_test(tc, test_idem_repeat_gets_first_answer);
	tcase_add_test(tc, test_idem_parked_repeat_rebinds);
	tcase_add_test(tc, test_idem_repeat_on_new_conn_survives_old_conn_close);
	tcase_add_test(tc, test_idem_given_back_answer_is_forgotten);
	tcase_add_test(tc, test_idem_replay_on_new_conn_moves_custody);
	tcase_add_test(tc, test_ack_mode_leased_counts_against_capacity);
	tcase_add_test(tc, test_ack_mode_lease_expiry_gives_back);
	tcase_add_test(tc, test_ack_mode_release_now_and_delayed);
	tcase_add_test(tc, test_ack_mode_lease_outlives_conn);
	tcase_add_test(tc, test_stat_list_stats_hello_ping);
	tcase_add_test(tc, test_10000_parked_receivers_cost_no_cpu);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	SRunner *sr = srunner_create(engine_suite());
	int      nf;

	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (nf == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
