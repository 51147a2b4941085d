/*
 * engine_harness.c - the engine tests' in-process harness; see
 * engine_harness.h.
 */
#include "engine_harness.h"

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wire.h"

static pthread_mutex_t mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  cv = PTHREAD_COND_INITIALIZER;
static treq           *all;
static uint64_t        next_id;

chd_engine *E;
uint64_t    force_client, force_id;
int         th_answer_ms = 10000;
uint32_t    th_stat_conn = 1;

void
th_reset(void)
{
	pthread_mutex_lock(&mtx);
	all = NULL;
	next_id = 0;
	pthread_mutex_unlock(&mtx);
	force_client = force_id = 0;
	th_lend_input = true;
}

void
th_start(const chd_engine_opts *o, uint32_t conns, int pid_base)
{
	ck_assert_int_eq(chd_engine_start(o, &E), 0);
	for (uint32_t c = 1; c <= conns; c++) {
		chd_engine_conn_open(E, c, pid_base + (int) c);
	}
}

void
th_teardown(void)
{
	treq *t, *next;

	if (E != NULL) {
		chd_engine_shutdown(E);
		chd_engine_free(E);
		E = NULL;
	}
	for (t = all; t != NULL; t = next) {
		next = t->all_next;
		ck_assert_int_eq(t->nreplies, 1);
		if (t->resp != NULL) {
			chan__v1__response__free_unpacked(t->resp, NULL);
		}
		free(t);
	}
	all = NULL;
}

static void
test_reply(chd_req *r, const Chan__V1__Response *resp)
{
	treq               *t = (treq *) r;
	size_t              len = chan__v1__response__get_packed_size(resp);
	uint8_t            *buf = malloc(len + 1);
	Chan__V1__Response *copy;

	chan__v1__response__pack(resp, buf);
	copy = chan__v1__response__unpack(NULL, len, buf);
	free(buf);
	chl_request_free(&r->alloc, r->msg);
	r->msg = NULL;
	pthread_mutex_lock(&mtx);
	t->nreplies++;
	if (t->resp == NULL) {
		t->resp = copy;
	} else {
		chan__v1__response__free_unpacked(copy, NULL);
	}
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mtx);
}

/* Request buffers the engine has freed (engine_harness.h). */
atomic_uint th_inputs_freed;
bool        th_lend_input = true;

/* A request buffer: its treq, then the bytes (aligned as malloc's). */
#define TH_INPUT_HEAD 16

static void
th_input_free(void *input)
{
	treq *t;

	memcpy(&t, input, sizeof(t));
	atomic_store(&t->input_freed, true);
	free(input);
	atomic_fetch_add(&th_inputs_freed, 1);
}

treq *
submit(uint32_t conn, Chan__V1__Request *m)
{
	treq    *t = calloc(1, sizeof(*t));
	size_t   len;
	uint8_t *buf, *input;

	ck_assert_ptr_nonnull(t);
	m->has_id = true;
	pthread_mutex_lock(&mtx);
	m->id = force_id != 0 ? force_id : ++next_id;
	pthread_mutex_unlock(&mtx);
	if (force_client != 0) {
		m->has_client = true;
		m->client = force_client;
	}
	t->id = m->id;
	len = chan__v1__request__get_packed_size(m);
	input = malloc(TH_INPUT_HEAD + len + 1);
	ck_assert_ptr_nonnull(input);
	memcpy(input, &t, sizeof(t));
	buf = input + TH_INPUT_HEAD;
	chan__v1__request__pack(m, buf);
	chl_capped_alloc_init(&t->req.alloc, 64u << 20);
	/* As the transport does: payloads point into buf, and big ones stay
	 * there while queued; the engine frees it when nothing needs it. */
	chl_capped_alloc_borrow(&t->req.alloc, input, th_input_free);
	if (th_lend_input) {
		chl_capped_alloc_input_bytes(&t->req.alloc, buf, len);
	}
	t->req.msg = chl_request_decode(&t->req.alloc, buf, len);
	ck_assert_ptr_nonnull(t->req.msg);
	t->req.conn = conn;
	t->req.reply = test_reply;
	pthread_mutex_lock(&mtx);
	t->all_next = all;
	all = t;
	pthread_mutex_unlock(&mtx);
	chd_engine_submit(E, &t->req);
	return (t);
}

Chan__V1__Response *
wait_for(treq *t, int ms)
{
	struct timespec    ts;
	Chan__V1__Response *r;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long) (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&mtx);
	while (t->resp == NULL) {
		if (pthread_cond_timedwait(&cv, &mtx, &ts) != 0) {
			break;
		}
	}
	r = t->resp;
	pthread_mutex_unlock(&mtx);
	return (r);
}

Chan__V1__Response *
answer(treq *t)
{
	Chan__V1__Response *r = wait_for(t, th_answer_ms);

	ck_assert_msg(r != NULL, "no answer within %d ms", th_answer_ms);
	ck_assert_uint_eq(r->id, t->id);
	return (r);
}

bool
pending(treq *t, int ms)
{
	return (wait_for(t, ms) == NULL);
}

void
msleep(int ms)
{
	struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

void
expect_status(treq *t, chan_status st)
{
	Chan__V1__Response *r = answer(t);

	ck_assert_msg((int) r->status == (int) st, "status %s (%s), wanted %s",
	    chan_status_name((chan_status) r->status),
	    r->error ? r->error : "", chan_status_name(st));
	if (st != CHAN_OK) {
		ck_assert_msg(r->error != NULL && r->error[0] != '\0',
		    "error answer without a message");
	}
}

treq *
r_create(uint32_t conn, const char *name, int64_t cap)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Create  c = CHAN__V1__CREATE__INIT;

	c.name = (char *) name;
	if (cap >= 0) {
		c.has_capacity = true;
		c.capacity = (uint64_t) cap;
	}
	m.op_case = CHAN__V1__REQUEST__OP_CREATE;
	m.create = &c;
	return (submit(conn, &m));
}

treq *
r_sendv(uint32_t conn, const char *name, const char **msgs, size_t n,
    int64_t timeout, uint64_t sender)
{
	Chan__V1__Request   m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Send      s = CHAN__V1__SEND__INIT;
	ProtobufCBinaryData d[64];

	ck_assert_uint_le(n, 64);
	for (size_t i = 0; i < n; i++) {
		d[i].data = (uint8_t *) msgs[i];
		d[i].len = strlen(msgs[i]);
	}
	s.name = (char *) name;
	s.n_data = n;
	s.data = d;
	if (timeout != -2) {
		s.has_timeout_ms = true;
		s.timeout_ms = timeout;
	}
	s.has_sender = sender != 0;
	s.sender = sender;
	m.op_case = CHAN__V1__REQUEST__OP_SEND;
	m.send = &s;
	return (submit(conn, &m));
}

treq *
r_send(uint32_t conn, const char *name, const char *msg, int64_t timeout)
{
	return (r_sendv(conn, name, &msg, 1, timeout, 0));
}

treq *
r_recv(uint32_t conn, const char *name, int64_t timeout)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Recv    r = CHAN__V1__RECV__INIT;

	r.name = (char *) name;
	r.has_timeout_ms = true;
	r.timeout_ms = timeout;
	m.op_case = CHAN__V1__REQUEST__OP_RECV;
	m.recv = &r;
	return (submit(conn, &m));
}

treq *
r_recv_any(uint32_t conn, const char **names, size_t n, int64_t timeout)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__RecvAny r = CHAN__V1__RECV_ANY__INIT;

	r.names = (char **) names;
	r.n_names = n;
	r.has_timeout_ms = true;
	r.timeout_ms = timeout;
	m.op_case = CHAN__V1__REQUEST__OP_RECV_ANY;
	m.recv_any = &r;
	return (submit(conn, &m));
}

treq *
r_ack(uint32_t conn, const char *name, uint64_t seq)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Ack     a = CHAN__V1__ACK__INIT;

	a.name = (char *) name;
	a.has_seq = true;
	a.seq = seq;
	m.op_case = CHAN__V1__REQUEST__OP_ACK;
	m.ack = &a;
	return (submit(conn, &m));
}

treq *
r_stat(uint32_t conn, const char *name)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Stat    x = CHAN__V1__STAT__INIT;

	x.name = (char *) name;
	m.op_case = CHAN__V1__REQUEST__OP_STAT;
	m.stat = &x;
	return (submit(conn, &m));
}

Chan__V1__ChannelInfo *
stat_of(const char *name)
{
	treq               *t = r_stat(th_stat_conn, name);
	Chan__V1__Response *r = answer(t);

	expect_status(t, CHAN_OK);
	ck_assert_int_eq(r->result_case, CHAN__V1__RESPONSE__RESULT_STAT);
	return (r->stat);
}

void
wait_blocked(const char *name, uint32_t senders, uint32_t receivers)
{
	Chan__V1__ChannelInfo *ci = NULL;

	for (int i = 0; i < 2000; i++) {
		ci = stat_of(name);
		if (ci->blocked_senders == senders &&
		    ci->blocked_receivers == receivers) {
			return;
		}
		msleep(5);
	}
	ck_abort_msg("%s: %u blocked senders, %u receivers; wanted %u, %u",
	    name, ci->blocked_senders, ci->blocked_receivers, senders,
	    receivers);
}
