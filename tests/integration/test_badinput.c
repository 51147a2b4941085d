/*
 * test_badinput.c - hostile and broken input against a real chand.
 *
 * Raw nng REQ sockets and raw unix sockets send what no well-behaved client
 * would. Each case gets its SPEC status (PROTOCOL for a body that does not
 * decode, INVALID_ARGUMENT for a bad field, TOO_LARGE for a payload over
 * the limit) or a clean connection drop, and after each one the daemon must
 * still answer a ping from a fresh client -- that is the assertion that
 * matters -- and still stop cleanly (exit 0) on SIGTERM.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "harness.h"
#include "wire.h"

#define ST(x) CHAN__V1__STATUS__##x
#define ANY_OR_DROP (-1) /* an answer of any status, or no answer */
#define MIB (1024u * 1024u)

static uint64_t test_client = 0x5eed0000c0ffee01ULL;
static uint64_t test_id = 1;

static const char *
st_name(int s)
{
	const ProtobufCEnumValue *v =
	    protobuf_c_enum_descriptor_get_value(&chan__v1__status__descriptor, s);

	return (v != NULL ? v->name : "?");
}

static uint8_t *
pack(Chan__V1__Request *req, size_t *len)
{
	uint8_t *buf;

	if (!req->has_client) {
		req->has_client = 1;
		req->client = test_client;
	}
	if (!req->has_id) {
		req->has_id = 1;
		req->id = test_id++;
	}
	*len = chan__v1__request__get_packed_size(req);
	buf = malloc(*len > 0 ? *len : 1);
	ck_assert_ptr_nonnull(buf);
	chan__v1__request__pack(req, buf);
	return (buf);
}

/*
 * What SPEC says a body deserves: PROTOCOL when it does not decode (same
 * protobuf-c the daemon uses, with a generous cap), else `if_decodes`.
 */
static int
want_for(const void *body, size_t len, int if_decodes)
{
	chl_capped_alloc   ca;
	Chan__V1__Request *r;

	chl_capped_alloc_init(&ca, 64 * MIB);
	r = chl_request_decode(&ca, body, len);
	if (r == NULL) {
		return (ST(PROTOCOL));
	}
	chl_request_free(&ca, r);
	return (if_decodes);
}

/*
 * Sends body raw and checks the answer's status (want >= 0), or accepts
 * any answer or none (ANY_OR_DROP). Returns the status seen, -1 for none.
 * The error text of a non-OK answer must name what was wrong (non-empty).
 */
static int
expect_raw(chh_daemon *d, const void *body, size_t len, int want,
    const char *what)
{
	Chan__V1__Response *r;
	void               *reply;
	size_t              rlen;
	int                 rv, got;

	rv = chh_raw(d->url, body, len, chh_scaled_ms(3000), &reply, &rlen);
	if (rv != 0) {
		if (want != ANY_OR_DROP) {
			chh_dump_log(d);
		}
		ck_assert_msg(want == ANY_OR_DROP,
		    "%s: no answer (%s), expected status %s", what,
		    nng_strerror(rv), st_name(want));
		return (-1);
	}
	r = chan__v1__response__unpack(NULL, rlen, reply);
	free(reply);
	ck_assert_msg(r != NULL, "%s: the answer (%zu bytes) does not decode",
	    what, rlen);
	got = r->status;
	if (want != ANY_OR_DROP) {
		ck_assert_msg(got == want, "%s: status %s (%d) '%s', expected %s",
		    what, st_name(got), got, r->error ? r->error : "",
		    st_name(want));
	}
	if (got != ST(OK)) {
		ck_assert_msg(r->error != NULL && r->error[0] != '\0',
		    "%s: status %s without an error message", what,
		    st_name(got));
	}
	chan__v1__response__free_unpacked(r, NULL);
	return (got);
}

/* Packs req, sends it, returns the decoded answer (must exist). */
static Chan__V1__Response *
call(chh_daemon *d, Chan__V1__Request *req, const char *what)
{
	Chan__V1__Response *r;
	int                 err = 0;

	r = chh_call(d->url, req, chh_scaled_ms(5000), &err);
	if (r == NULL) {
		chh_dump_log(d);
	}
	ck_assert_msg(r != NULL, "%s: no answer (%s)", what, nng_strerror(err));
	return (r);
}

static void
expect_call(chh_daemon *d, Chan__V1__Request *req, int want, const char *what)
{
	Chan__V1__Response *r = call(d, req, what);

	ck_assert_msg((int) r->status == want,
	    "%s: status %s '%s', expected %s", what, st_name(r->status),
	    r->error ? r->error : "", st_name(want));
	chh_resp_free(r);
}

/* ---- request builders --------------------------------------------------- */

typedef struct {
	Chan__V1__Request       req;
	Chan__V1__Hello         hello;
	Chan__V1__List          list;
	Chan__V1__Create        create;
	Chan__V1__Send          send;
	Chan__V1__Recv          recv;
	Chan__V1__RecvAny       recv_any;
	Chan__V1__Close         close;
	Chan__V1__Delete        del;
	Chan__V1__Stat          stat;
	Chan__V1__SenderOpen    sopen;
	Chan__V1__ReceiverOpen  ropen;
	Chan__V1__CounterAdd    cadd;
	Chan__V1__CounterGet    cget;
	Chan__V1__CounterSet    cset;
	Chan__V1__CounterCas    ccas;
	Chan__V1__CounterWait   cwait;
	Chan__V1__CounterDelete cdel;
	Chan__V1__CounterList   clist;
	ProtobufCBinaryData     data[4];
	char                   *names[4];
} reqbuf;

static void
rb_init(reqbuf *b)
{
	static const Chan__V1__Request req0 = CHAN__V1__REQUEST__INIT;

	memset(b, 0, sizeof(*b));
	b->req = req0;
	chan__v1__hello__init(&b->hello);
	chan__v1__list__init(&b->list);
	chan__v1__create__init(&b->create);
	chan__v1__send__init(&b->send);
	chan__v1__recv__init(&b->recv);
	chan__v1__recv_any__init(&b->recv_any);
	chan__v1__close__init(&b->close);
	chan__v1__delete__init(&b->del);
	chan__v1__stat__init(&b->stat);
	chan__v1__sender_open__init(&b->sopen);
	chan__v1__receiver_open__init(&b->ropen);
	chan__v1__counter_add__init(&b->cadd);
	chan__v1__counter_get__init(&b->cget);
	chan__v1__counter_set__init(&b->cset);
	chan__v1__counter_cas__init(&b->ccas);
	chan__v1__counter_wait__init(&b->cwait);
	chan__v1__counter_delete__init(&b->cdel);
	chan__v1__counter_list__init(&b->clist);
}

/* The ops that take a name; each built so it never waits. */
static const Chan__V1__Request__OpCase named_ops[] = {
	CHAN__V1__REQUEST__OP_CREATE,
	CHAN__V1__REQUEST__OP_SEND,
	CHAN__V1__REQUEST__OP_RECV,
	CHAN__V1__REQUEST__OP_RECV_ANY,
	CHAN__V1__REQUEST__OP_CLOSE,
	CHAN__V1__REQUEST__OP_DELETE,
	CHAN__V1__REQUEST__OP_STAT,
	CHAN__V1__REQUEST__OP_SENDER_OPEN,
	CHAN__V1__REQUEST__OP_RECEIVER_OPEN,
	CHAN__V1__REQUEST__OP_COUNTER_ADD,
	CHAN__V1__REQUEST__OP_COUNTER_GET,
	CHAN__V1__REQUEST__OP_COUNTER_SET,
	CHAN__V1__REQUEST__OP_COUNTER_CAS,
	CHAN__V1__REQUEST__OP_COUNTER_WAIT,
	CHAN__V1__REQUEST__OP_COUNTER_DELETE,
};
#define N_NAMED_OPS (sizeof(named_ops) / sizeof(named_ops[0]))

static void
rb_named(reqbuf *b, Chan__V1__Request__OpCase op, char *name)
{
	rb_init(b);
	b->req.op_case = op;
	b->data[0].data = (uint8_t *) "x";
	b->data[0].len = 1;
	switch (op) {
	case CHAN__V1__REQUEST__OP_CREATE:
		b->create.name = name;
		b->req.create = &b->create;
		break;
	case CHAN__V1__REQUEST__OP_SEND:
		b->send.name = name;
		b->send.n_data = 1;
		b->send.data = b->data;
		b->send.has_timeout_ms = 1;
		b->req.send = &b->send;
		break;
	case CHAN__V1__REQUEST__OP_RECV:
		b->recv.name = name;
		b->recv.has_timeout_ms = 1;
		b->req.recv = &b->recv;
		break;
	case CHAN__V1__REQUEST__OP_RECV_ANY:
		/* protobuf-c cannot pack a NULL inside a repeated string. */
		b->names[0] = name;
		b->recv_any.n_names = name != NULL ? 1 : 0;
		b->recv_any.names = b->names;
		b->recv_any.has_timeout_ms = 1;
		b->req.recv_any = &b->recv_any;
		break;
	case CHAN__V1__REQUEST__OP_CLOSE:
		b->close.name = name;
		b->req.close = &b->close;
		break;
	case CHAN__V1__REQUEST__OP_DELETE:
		b->del.name = name;
		b->req.delete_ = &b->del;
		break;
	case CHAN__V1__REQUEST__OP_STAT:
		b->stat.name = name;
		b->req.stat = &b->stat;
		break;
	case CHAN__V1__REQUEST__OP_SENDER_OPEN:
		b->sopen.name = name;
		b->req.sender_open = &b->sopen;
		break;
	case CHAN__V1__REQUEST__OP_RECEIVER_OPEN:
		b->ropen.name = name;
		b->req.receiver_open = &b->ropen;
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_ADD:
		b->cadd.name = name;
		b->cadd.has_delta = 1;
		b->cadd.delta = 1;
		b->req.counter_add = &b->cadd;
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_GET:
		b->cget.name = name;
		b->req.counter_get = &b->cget;
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_SET:
		b->cset.name = name;
		b->cset.has_value = 1;
		b->req.counter_set = &b->cset;
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_CAS:
		b->ccas.name = name;
		b->ccas.has_expected = b->ccas.has_new_value = 1;
		b->req.counter_cas = &b->ccas;
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_WAIT:
		b->cwait.name = name;
		b->cwait.has_op = b->cwait.has_value = 1;
		b->cwait.value = 1;
		b->cwait.has_timeout_ms = 1; /* 0: no waiting */
		b->req.counter_wait = &b->cwait;
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_DELETE:
		b->cdel.name = name;
		b->req.counter_delete = &b->cdel;
		break;
	default:
		ck_abort_msg("op %d takes no name", (int) op);
	}
}

static void
rb_send(reqbuf *b, char *name, const void *data, size_t len)
{
	rb_named(b, CHAN__V1__REQUEST__OP_SEND, name);
	b->data[0].data = (uint8_t *) data;
	b->data[0].len = len;
}

/* Depth of a channel per Stat; -1 when it does not exist (NOT_FOUND). */
static int64_t
depth_of(chh_daemon *d, char *name)
{
	reqbuf              b;
	Chan__V1__Response *r;
	int64_t             depth;

	rb_named(&b, CHAN__V1__REQUEST__OP_STAT, name);
	r = call(d, &b.req, "stat");
	if (r->status == ST(NOT_FOUND)) {
		chh_resp_free(r);
		return (-1);
	}
	ck_assert_msg(r->status == ST(OK), "stat %s: %s '%s'", name,
	    st_name(r->status), r->error ? r->error : "");
	ck_assert_msg(r->result_case == CHAN__V1__RESPONSE__RESULT_STAT,
	    "stat answer carries no ChannelInfo");
	depth = (int64_t) r->stat->depth;
	chh_resp_free(r);
	return (depth);
}

static Chan__V1__HelloResult
hello(chh_daemon *d)
{
	reqbuf                b;
	Chan__V1__Response   *r;
	Chan__V1__HelloResult hr;

	rb_init(&b);
	b.hello.has_protocol_version = 1;
	b.hello.protocol_version = CHL_PROTOCOL_VERSION;
	b.req.op_case = CHAN__V1__REQUEST__OP_HELLO;
	b.req.hello = &b.hello;
	r = call(d, &b.req, "hello");
	ck_assert_int_eq(r->status, ST(OK));
	ck_assert_msg(r->result_case == CHAN__V1__RESPONSE__RESULT_HELLO,
	    "hello answer carries no HelloResult");
	hr = *r->hello;
	hr.server_version = NULL;
	chh_resp_free(r);
	return (hr);
}

/* ---- the cases ----------------------------------------------------------- */

START_TEST(garbage_bodies_are_protocol)
{
	static const uint8_t all_ff[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t bad_wiretype[] = { 0x0f, 0x00 };
	/* Field 15 (send, a message) sent as a varint. */
	static const uint8_t send_as_varint[] = { 0x78, 0x01 };
	/* Field 15 claiming 2^31 bytes that never come. */
	static const uint8_t huge_claim[] = { 0x7a, 0x80, 0x80, 0x80, 0x80,
		0x08, 0x01 };
	/* Field 0 does not exist. */
	static const uint8_t field_zero[] = { 0x02, 0x00 };
	static const char text[] = "PING\r\n";
	const struct {
		const void *b;
		size_t      n;
		const char *what;
	} cases[] = {
		{ all_ff, sizeof(all_ff), "0xff bytes" },
		{ bad_wiretype, sizeof(bad_wiretype), "wire type 7" },
		{ send_as_varint, sizeof(send_as_varint), "send as varint" },
		{ huge_claim, sizeof(huge_claim), "2 GiB length claim" },
		{ field_zero, sizeof(field_zero), "field number 0" },
		{ text, sizeof(text) - 1, "text line" },
	};
	chh_daemon d;

	chh_start(&d, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* The test's own premise: these bytes really do not decode. */
		ck_assert_msg(want_for(cases[i].b, cases[i].n, -2) ==
		    ST(PROTOCOL), "%s decodes", cases[i].what);
		expect_raw(&d, cases[i].b, cases[i].n, ST(PROTOCOL),
		    cases[i].what);
		chh_assert_alive(&d);
	}
	chh_stop(&d);
}
END_TEST

START_TEST(random_bodies)
{
	chh_daemon d;
	uint8_t    buf[600];
	int        sent = 0;

	chh_start(&d, NULL);
	srand(20261127);
	for (int i = 0; i < 400; i++) {
		size_t n = 1 + (size_t) (rand() % (int) sizeof(buf));
		char   what[64];
		int    want;

		for (size_t j = 0; j < n; j++) {
			buf[j] = (uint8_t) rand();
		}
		/*
		 * Random bytes that happen to decode could be any op, even a
		 * blocking one: only undecodable ones are sent.
		 */
		if ((want = want_for(buf, n, -2)) != ST(PROTOCOL)) {
			continue;
		}
		snprintf(what, sizeof(what), "random body %d (%zu bytes)", i,
		    n);
		expect_raw(&d, buf, n, want, what);
		sent++;
	}
	ck_assert_msg(sent > 100, "only %d random bodies were undecodable",
	    sent);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(truncated_send_is_protocol)
{
	chh_daemon d;
	reqbuf     b;
	uint8_t   *buf, payload[200];
	size_t     len;
	char       what[64];

	chh_start(&d, NULL);
	memset(payload, 'p', sizeof(payload));
	rb_send(&b, "trunc", payload, sizeof(payload));
	buf = pack(&b.req, &len);
	/* Every cut inside the Send sub-message (it is the last field). */
	for (size_t cut = len - 1; cut > len - sizeof(payload) - 8; cut -= 7) {
		snprintf(what, sizeof(what), "Send cut to %zu of %zu", cut,
		    len);
		expect_raw(&d, buf, cut, want_for(buf, cut, ST(INVALID_ARGUMENT)),
		    what);
	}
	ck_assert_msg(depth_of(&d, "trunc") <= 0,
	    "a truncated Send stored something");
	/* The whole thing is a fine request. */
	expect_raw(&d, buf, len, ST(OK), "the untruncated Send");
	ck_assert_int_eq(depth_of(&d, "trunc"), 1);
	free(buf);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(request_without_op)
{
	chh_daemon        d;
	Chan__V1__Request req = CHAN__V1__REQUEST__INIT;
	uint8_t          *buf;
	size_t            len;

	chh_start(&d, NULL);
	buf = pack(&req, &len);
	expect_raw(&d, buf, len, ST(INVALID_ARGUMENT), "id+client, no op");
	free(buf);
	/* Zero bytes decode as an all-absent Request: no op either. */
	expect_raw(&d, "", 0, ST(INVALID_ARGUMENT), "empty body");
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

/* Appends a varint. */
static size_t
put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	do {
		p[n] = (uint8_t) (v & 0x7f);
		v >>= 7;
		if (v != 0) {
			p[n] |= 0x80;
		}
		n++;
	} while (v != 0);
	return (n);
}

START_TEST(unknown_op_fields)
{
	/* Numbers the oneof does not use, up to the largest legal one. */
	static const uint32_t fields[] = { 28, 29, 37, 99, 1000, 19999,
		536870911 };
	chh_daemon d;
	uint8_t    buf[64];
	char       what[80];

	chh_start(&d, NULL);
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		size_t n;

		/* As an empty sub-message... */
		n = put_varint(buf, (uint64_t) fields[i] << 3 | 2);
		buf[n++] = 0;
		snprintf(what, sizeof(what), "unknown field %u (message)",
		    fields[i]);
		expect_raw(&d, buf, n, want_for(buf, n, ST(INVALID_ARGUMENT)),
		    what);
		/* ... and as a varint. */
		n = put_varint(buf, (uint64_t) fields[i] << 3 | 0);
		buf[n++] = 1;
		snprintf(what, sizeof(what), "unknown field %u (varint)",
		    fields[i]);
		expect_raw(&d, buf, n, want_for(buf, n, ST(INVALID_ARGUMENT)),
		    what);
	}
	/* An unknown field next to a real op is ignored (protobuf rules). */
	{
		reqbuf   b;
		uint8_t *p, *q;
		size_t   len;

		rb_init(&b);
		b.req.op_case = CHAN__V1__REQUEST__OP_LIST;
		b.req.list = &b.list;
		p = pack(&b.req, &len);
		q = malloc(len + 8);
		ck_assert_ptr_nonnull(q);
		memcpy(q, p, len);
		len += put_varint(q + len, (uint64_t) 99 << 3 | 0);
		q[len++] = 5;
		expect_raw(&d, q, len, ST(OK), "List plus unknown field 99");
		free(p);
		free(q);
	}
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(bad_names_every_op)
{
	chh_daemon d;
	char       n129[130], *big;
	char      *bad[6];
	char       what[128];
	reqbuf     b;

	chh_start(&d, NULL);
	memset(n129, 'a', 129);
	n129[129] = '\0';
	big = malloc(64 * 1024 + 1);
	ck_assert_ptr_nonnull(big);
	memset(big, 'b', 64 * 1024);
	big[64 * 1024] = '\0';
	bad[0] = n129;
	bad[1] = big;
	bad[2] = "";
	bad[3] = "a b";
	bad[4] = "caf\xc3\xa9";
	bad[5] = "x/y";
	for (size_t o = 0; o < N_NAMED_OPS; o++) {
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			Chan__V1__Response *r;
			uint8_t            *buf;
			size_t              len;

			rb_named(&b, named_ops[o], bad[i]);
			buf = pack(&b.req, &len);
			snprintf(what, sizeof(what), "op %d, bad name #%zu",
			    (int) named_ops[o], i);
			expect_raw(&d, buf, len,
			    want_for(buf, len, ST(INVALID_ARGUMENT)), what);
			free(buf);
			/* SPEC: the rule is in the message. */
			rb_named(&b, named_ops[o], bad[i]);
			r = call(&d, &b.req, what);
			if (r->status == ST(INVALID_ARGUMENT)) {
				ck_assert_msg(r->error != NULL &&
				    strstr(r->error, "A-Za-z0-9") != NULL,
				    "%s: message '%s' does not give the name "
				    "rule", what, r->error ? r->error : "");
			}
			chh_resp_free(r);
		}
		/* A missing name is no better. */
		rb_named(&b, named_ops[o], NULL);
		snprintf(what, sizeof(what), "op %d, no name",
		    (int) named_ops[o]);
		expect_call(&d, &b.req, ST(INVALID_ARGUMENT), what);
	}
	free(big);
	/* Nothing was created under any of those names. */
	{
		Chan__V1__Response *r;

		rb_init(&b);
		b.req.op_case = CHAN__V1__REQUEST__OP_LIST;
		b.req.list = &b.list;
		r = call(&d, &b.req, "list");
		ck_assert_int_eq(r->status, ST(OK));
		ck_assert_msg(r->list == NULL || r->list->n_channels == 0,
		    "bad names created %zu channels", r->list->n_channels);
		chh_resp_free(r);
		rb_init(&b);
		b.req.op_case = CHAN__V1__REQUEST__OP_COUNTER_LIST;
		b.req.counter_list = &b.clist;
		r = call(&d, &b.req, "counter list");
		ck_assert_int_eq(r->status, ST(OK));
		ck_assert_msg(r->counter_list == NULL ||
		    r->counter_list->n_counters == 0,
		    "bad names created %zu counters",
		    r->counter_list->n_counters);
		chh_resp_free(r);
	}
	/* recv_any with one bad name among good ones, and with none. */
	rb_named(&b, CHAN__V1__REQUEST__OP_RECV_ANY, "good");
	b.names[1] = "bad name";
	b.recv_any.n_names = 2;
	expect_call(&d, &b.req, ST(INVALID_ARGUMENT), "recv_any good+bad");
	rb_named(&b, CHAN__V1__REQUEST__OP_RECV_ANY, "good");
	b.recv_any.n_names = 0;
	expect_call(&d, &b.req, ST(INVALID_ARGUMENT), "recv_any no names");
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(bad_fields)
{
	chh_daemon d;
	reqbuf     b;
	uint8_t   *buf;
	size_t     len;

	chh_start(&d, NULL);
	/* A send carrying no message at all. */
	rb_send(&b, "f", "x", 1);
	b.send.n_data = 0;
	expect_call(&d, &b.req, ST(INVALID_ARGUMENT), "send of 0 messages");
	ck_assert_msg(depth_of(&d, "f") <= 0, "empty send stored something");
	/* A wait op outside the enum. */
	rb_named(&b, CHAN__V1__REQUEST__OP_COUNTER_WAIT, "w");
	b.cwait.op = (Chan__V1__WaitOp) 99;
	buf = pack(&b.req, &len);
	expect_raw(&d, buf, len, want_for(buf, len, ST(INVALID_ARGUMENT)),
	    "counter wait op 99");
	free(buf);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

/* Request.cancel: ids 1..max_batch, none 0, and a client (its own ids). */
START_TEST(cancel_bad_input)
{
	chh_daemon            d;
	Chan__V1__Request     req = CHAN__V1__REQUEST__INIT;
	Chan__V1__Cancel      cm = CHAN__V1__CANCEL__INIT;
	Chan__V1__HelloResult hr;
	Chan__V1__Response   *r;
	uint64_t             *ids;
	uint8_t               raw[16];
	size_t                n;

	chh_start(&d, NULL);
	hr = hello(&d);
	ck_assert_msg(hr.has_cancel && hr.cancel, "hello does not announce cancel");
	ids = calloc((size_t) hr.max_batch + 1, sizeof(*ids));
	ck_assert_ptr_nonnull(ids);
	for (size_t i = 0; i <= hr.max_batch; i++) {
		ids[i] = 1000000 + i;
	}
	req.op_case = CHAN__V1__REQUEST__OP_CANCEL;
	req.cancel = &cm;
	cm.ids = ids;
	cm.n_ids = 0;
	expect_call(&d, &req, ST(INVALID_ARGUMENT), "cancel of no ids");
	req.has_id = 0;
	cm.n_ids = hr.max_batch + 1;
	expect_call(&d, &req, ST(INVALID_ARGUMENT), "cancel of max_batch + 1 ids");
	req.has_id = 0;
	cm.n_ids = 3;
	ids[1] = 0;
	expect_call(&d, &req, ST(INVALID_ARGUMENT), "cancel of id 0");
	ids[1] = 1000001;
	req.has_id = 0;
	req.has_client = 1;
	req.client = 0;
	expect_call(&d, &req, ST(INVALID_ARGUMENT), "cancel with client 0");
	/* No client field at all: Request { cancel { ids: 5 } }. */
	n = put_varint(raw, (uint64_t) 27 << 3 | 2);
	raw[n++] = 2;
	raw[n++] = 1 << 3 | 0;
	raw[n++] = 5;
	expect_raw(&d, raw, n, ST(INVALID_ARGUMENT), "cancel without a client");
	/* A good one naming nothing known: OK, nothing found. */
	req.has_id = 0;
	req.has_client = 0;
	cm.n_ids = hr.max_batch;
	r = call(&d, &req, "cancel of unknown ids");
	ck_assert_int_eq(r->status, ST(OK));
	ck_assert_int_eq(r->result_case, CHAN__V1__RESPONSE__RESULT_VALUE);
	ck_assert_int_eq(r->value->value, 0);
	chh_resp_free(r);
	free(ids);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

/* Sends a raw body; its decoded answer (free with ..._free_unpacked), or NULL. */
static Chan__V1__Response *
call_raw_resp(chh_daemon *d, const void *body, size_t len)
{
	Chan__V1__Response *r;
	void               *reply;
	size_t              rlen;

	if (chh_raw(d->url, body, len, chh_scaled_ms(3000), &reply, &rlen) != 0) {
		return (NULL);
	}
	r = chan__v1__response__unpack(NULL, rlen, reply);
	free(reply);
	return (r);
}

/* CounterAdd.deltas: not with delta, 1..max_batch of them, either encoding. */
START_TEST(counter_add_many_bad_input)
{
	chh_daemon            d;
	reqbuf                b;
	Chan__V1__HelloResult hr;
	Chan__V1__Response   *r;
	int64_t              *deltas;
	uint8_t               raw[64];
	size_t                n;

	chh_start(&d, NULL);
	hr = hello(&d);
	ck_assert_msg(hr.has_counter_add_many && hr.counter_add_many,
	    "hello does not announce counter_add_many");
	deltas = calloc((size_t) hr.max_batch + 1, sizeof(*deltas));
	ck_assert_ptr_nonnull(deltas);
	for (size_t i = 0; i <= hr.max_batch; i++) {
		deltas[i] = 1;
	}
	/* both forms at once */
	rb_named(&b, CHAN__V1__REQUEST__OP_COUNTER_ADD, "ca");
	b.cadd.has_delta = 1;
	b.cadd.delta = 7;
	b.cadd.deltas = deltas;
	b.cadd.n_deltas = 2;
	r = call(&d, &b.req, "counter add with delta and deltas");
	ck_assert_msg(r->status == ST(INVALID_ARGUMENT) && r->error != NULL &&
	    strstr(r->error, "not both") != NULL, "both forms: %s '%s'",
	    st_name(r->status), r->error ? r->error : "");
	chh_resp_free(r);
	chh_assert_alive(&d);
	/* one delta too many */
	rb_named(&b, CHAN__V1__REQUEST__OP_COUNTER_ADD, "ca");
	b.cadd.has_delta = 0; /* rb_named gives the single add a delta */
	b.cadd.deltas = deltas;
	b.cadd.n_deltas = hr.max_batch + 1;
	r = call(&d, &b.req, "max_batch + 1 deltas");
	ck_assert_msg(r->status == ST(INVALID_ARGUMENT) && r->error != NULL &&
	    strstr(r->error, "deltas, not") != NULL, "max_batch + 1: %s '%s'",
	    st_name(r->status), r->error ? r->error : "");
	chh_resp_free(r);
	chh_assert_alive(&d);
	/* nothing was applied: max_batch deltas start from 0 */
	b.req.has_id = 0; /* a new request, not a repeat of the last one */
	b.cadd.n_deltas = hr.max_batch;
	r = call(&d, &b.req, "max_batch deltas");
	ck_assert_msg(r->status == ST(OK), "max_batch deltas: %s '%s'",
	    st_name(r->status), r->error ? r->error : "");
	ck_assert_uint_eq(r->value->n_values, hr.max_batch);
	ck_assert_int_eq(r->value->value, (int64_t) hr.max_batch);
	chh_resp_free(r);
	/* deltas not packed (one field each) mean the same:
	 * Request { counter_add(30) { name "cb"; deltas 1; deltas -3 } } */
	n = put_varint(raw, (uint64_t) 30 << 3 | 2);
	raw[n++] = 8;
	memcpy(raw + n, "\x0a\x02" "cb" "\x18\x02" "\x18\x05", 8);
	n += 8;
	r = call_raw_resp(&d, raw, n);
	ck_assert_msg(r != NULL && r->status == ST(OK) && r->value->n_values == 2 &&
	    r->value->values[0] == 1 && r->value->values[1] == -2,
	    "unpacked deltas not read as two adds");
	chan__v1__response__free_unpacked(r, NULL);
	free(deltas);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(message_size_limit_small)
{
	static const char *const args[] = { "--max-message-size", "1024",
		NULL };
	chh_daemon            d;
	reqbuf                b;
	uint8_t               big[1025];
	Chan__V1__HelloResult hr;
	Chan__V1__Response   *r;

	chh_start(&d, args);
	hr = hello(&d);
	ck_assert_msg(hr.max_message_size == 1024,
	    "Hello says max_message_size %llu, daemon started with 1024",
	    (unsigned long long) hr.max_message_size);
	memset(big, 'z', sizeof(big));

	rb_send(&b, "small", big, 1025);
	expect_call(&d, &b.req, ST(TOO_LARGE), "send of 1025 bytes");
	ck_assert_msg(depth_of(&d, "small") <= 0,
	    "a TOO_LARGE send stored something");
	rb_send(&b, "small", big, 1024);
	expect_call(&d, &b.req, ST(OK), "send of exactly 1024 bytes");
	ck_assert_int_eq(depth_of(&d, "small"), 1);
	/* A batch is all-or-nothing: one oversize message sinks it. */
	rb_send(&b, "small", big, 10);
	b.data[1].data = big;
	b.data[1].len = 1025;
	b.send.n_data = 2;
	expect_call(&d, &b.req, ST(TOO_LARGE), "batch with one 1025");
	ck_assert_int_eq(depth_of(&d, "small"), 1);
	/* The stored message is intact. */
	rb_named(&b, CHAN__V1__REQUEST__OP_RECV, "small");
	r = call(&d, &b.req, "recv");
	ck_assert_int_eq(r->status, ST(OK));
	ck_assert_ptr_nonnull(r->recv);
	ck_assert_uint_eq(r->recv->n_messages, 1);
	ck_assert_uint_eq(r->recv->messages[0]->data.len, 1024);
	chh_resp_free(r);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(message_size_limit_default)
{
	chh_daemon            d;
	reqbuf                b;
	uint8_t              *big;
	Chan__V1__HelloResult hr;
	Chan__V1__Response   *r;

	chh_start(&d, NULL);
	hr = hello(&d);
	ck_assert_msg(hr.max_message_size == MIB,
	    "Hello says max_message_size %llu, SPEC default is 1 MiB",
	    (unsigned long long) hr.max_message_size);
	big = malloc(MIB + 1);
	ck_assert_ptr_nonnull(big);
	for (size_t i = 0; i <= MIB; i++) {
		big[i] = (uint8_t) (i * 7);
	}
	/* Exactly the limit goes through nng and back intact. */
	rb_send(&b, "mib", big, MIB);
	expect_call(&d, &b.req, ST(OK), "send of exactly 1 MiB");
	rb_send(&b, "mib", big, MIB + 1);
	expect_call(&d, &b.req, ST(TOO_LARGE), "send of 1 MiB + 1");
	ck_assert_int_eq(depth_of(&d, "mib"), 1);
	rb_named(&b, CHAN__V1__REQUEST__OP_RECV, "mib");
	r = call(&d, &b.req, "recv 1 MiB");
	ck_assert_int_eq(r->status, ST(OK));
	ck_assert_ptr_nonnull(r->recv);
	ck_assert_uint_eq(r->recv->n_messages, 1);
	ck_assert_uint_eq(r->recv->messages[0]->data.len, MIB);
	ck_assert_msg(memcmp(r->recv->messages[0]->data.data, big, MIB) == 0,
	    "1 MiB payload came back altered");
	chh_resp_free(r);
	free(big);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(frame_over_daemon_limit)
{
	static const char *const args[] = { "--max-message-size", "1024",
		NULL };
	chh_daemon d;
	reqbuf     b;
	uint8_t   *junk, *buf;
	size_t     n = 32 * MIB, len;

	junk = malloc(n);
	ck_assert_ptr_nonnull(junk);
	memset(junk, 0xff, n);

	chh_start(&d, NULL);
	/* 32 MiB of junk: an answer (PROTOCOL/TOO_LARGE) or a drop. */
	expect_raw(&d, junk, n, ANY_OR_DROP, "32 MiB junk frame");
	chh_assert_alive(&d);
	/* A well-formed 32 MiB Send: refused, nothing stored. */
	rb_send(&b, "huge", junk, n);
	buf = pack(&b.req, &len);
	ck_assert_int_ne(expect_raw(&d, buf, len, ANY_OR_DROP,
	    "32 MiB Send"), ST(OK));
	free(buf);
	ck_assert_msg(depth_of(&d, "huge") <= 0, "32 MiB send stored something");
	chh_assert_alive(&d);
	chh_stop(&d);

	chh_start(&d, args);
	expect_raw(&d, junk, MIB, ANY_OR_DROP, "1 MiB junk, limit 1 KiB");
	chh_assert_alive(&d);
	rb_send(&b, "huge", junk, 64 * 1024);
	buf = pack(&b.req, &len);
	ck_assert_int_ne(expect_raw(&d, buf, len, ANY_OR_DROP,
	    "64 KiB Send, limit 1 KiB"), ST(OK));
	free(buf);
	ck_assert_msg(depth_of(&d, "huge") <= 0, "oversize send stored something");
	chh_assert_alive(&d);
	chh_stop(&d);

	/* A request-size limit far below the frame (chand --help option). */
	{
		static const char *const small_req[] = { "--max-request-size",
			"4096", NULL };
		chh_start(&d, small_req);
		expect_raw(&d, junk, 64 * 1024, ANY_OR_DROP,
		    "64 KiB junk, request limit 4 KiB");
		chh_assert_alive(&d);
		rb_send(&b, "huge", junk, 64 * 1024);
		buf = pack(&b.req, &len);
		ck_assert_int_ne(expect_raw(&d, buf, len, ANY_OR_DROP,
		    "64 KiB Send, request limit 4 KiB"), ST(OK));
		free(buf);
		ck_assert_msg(depth_of(&d, "huge") <= 0,
		    "a request over the limit stored something");
		chh_assert_alive(&d);
		chh_stop(&d);
	}
	free(junk);
}
END_TEST

static int
unix_connect(const char *path)
{
	struct sockaddr_un sa;
	int                fd;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	ck_assert_msg(connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0,
	    "connect %s: %s", path, strerror(errno));
	return (fd);
}

/* Writes what it can; the daemon may hang up on us half way. */
static void
write_some(int fd, const void *b, size_t n)
{
	if (send(fd, b, n, MSG_NOSIGNAL) < 0 && errno != EPIPE &&
	    errno != ECONNRESET) {
		ck_abort_msg("send: %s", strerror(errno));
	}
}

/* SP over ipc: 0 'S' 'P' 0, protocol (BE16), 0 0. REQ is 0x30. */
static const uint8_t sp_req[] = { 0, 'S', 'P', 0, 0x00, 0x30, 0, 0 };

/*
 * One raw unix-socket case per test, so each reports on its own. Every
 * one ends with a fresh client's ping and a clean SIGTERM stop.
 */
START_TEST(raw_unix_connect_close)
{
	chh_daemon d;

	/* Connect and hang up at once, before the SP handshake. */
	chh_start(&d, NULL);
	close(unix_connect(d.sock));
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(raw_unix_random_bytes)
{
	chh_daemon d;
	uint8_t    rnd[4096];
	int        fd;

	chh_start(&d, NULL);
	srand(99);
	for (size_t i = 0; i < sizeof(rnd); i++) {
		rnd[i] = (uint8_t) rand();
	}
	fd = unix_connect(d.sock);
	write_some(fd, rnd, sizeof(rnd));
	/* Give the daemon the bytes before the hang-up. */
	usleep(100 * 1000);
	close(fd);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(raw_unix_text)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	chh_daemon d;
	int        fd;

	chh_start(&d, NULL);
	fd = unix_connect(d.sock);
	write_some(fd, http, sizeof(http) - 1);
	usleep(100 * 1000);
	close(fd);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(raw_unix_wrong_handshake)
{
	/* REP talking to REP, and a made-up header. */
	static const uint8_t sp_rep[] = { 0, 'S', 'P', 0, 0x00, 0x31, 0, 0 };
	static const uint8_t sp_bogus[] = { 0, 'S', 'P', 7, 0x12, 0x34, 9, 9 };
	chh_daemon d;
	int        fd;

	chh_start(&d, NULL);
	fd = unix_connect(d.sock);
	write_some(fd, sp_rep, sizeof(sp_rep));
	usleep(100 * 1000);
	close(fd);
	chh_assert_alive(&d);
	fd = unix_connect(d.sock);
	write_some(fd, sp_bogus, sizeof(sp_bogus));
	usleep(100 * 1000);
	close(fd);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(raw_unix_huge_frame)
{
	/* ipc frame: type 1, then a BE64 length: 2^62 bytes announced. */
	static const uint8_t frame_huge[] = { 1, 0x40, 0, 0, 0, 0, 0, 0, 0 };
	chh_daemon d;
	uint8_t    junk[4096];
	int        fd;

	chh_start(&d, NULL);
	memset(junk, 0x5a, sizeof(junk));
	fd = unix_connect(d.sock);
	write_some(fd, sp_req, sizeof(sp_req));
	write_some(fd, frame_huge, sizeof(frame_huge));
	write_some(fd, junk, sizeof(junk));
	chh_assert_alive(&d);
	close(fd);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(raw_unix_short_frame)
{
	/* A 6-byte frame with no REQ id header in it. */
	static const uint8_t frame_short[] = { 1, 0, 0, 0, 0, 0, 0, 0, 6, 'h',
		'e', 'l', 'l', 'o', '!' };
	chh_daemon d;
	int        fd;

	chh_start(&d, NULL);
	fd = unix_connect(d.sock);
	write_some(fd, sp_req, sizeof(sp_req));
	write_some(fd, frame_short, sizeof(frame_short));
	chh_assert_alive(&d);
	close(fd);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(raw_unix_silent_peers)
{
	chh_daemon d;
	int        half, quiet;

	chh_start(&d, NULL);
	/* Half a handshake, and a connection that never says a word,
	 * both held open while others are served. */
	half = unix_connect(d.sock);
	write_some(half, sp_req, 3);
	quiet = unix_connect(d.sock);
	chh_assert_alive(&d);
	usleep(100 * 1000);
	close(half);
	close(quiet);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(connection_churn)
{
	chh_daemon d;
	int        fds[200];

	chh_start(&d, NULL);
	for (int i = 0; i < 200; i++) {
		fds[i] = unix_connect(d.sock);
	}
	chh_assert_alive(&d);
	for (int i = 0; i < 200; i++) {
		close(fds[i]);
	}
	/* nng sockets that connect and go away without a word. */
	for (int i = 0; i < 50; i++) {
		nng_socket s;
		ck_assert_int_eq(nng_req0_open(&s), 0);
		ck_assert_int_eq(nng_dial(s, d.url, NULL, 0), 0);
		nng_close(s);
	}
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

START_TEST(duplicate_request_id)
{
	chh_daemon          d;
	reqbuf              b;
	Chan__V1__Response *r;
	uint8_t            *buf;
	size_t              len;

	chh_start(&d, NULL);
	/* The same (client, id) twice: one add, the first answer twice. */
	rb_named(&b, CHAN__V1__REQUEST__OP_COUNTER_ADD, "dup");
	b.cadd.delta = 5;
	b.req.has_client = 1;
	b.req.client = 0xd00d;
	b.req.has_id = 1;
	b.req.id = 77;
	buf = pack(&b.req, &len);
	for (int i = 0; i < 2; i++) {
		void  *reply;
		size_t rlen;

		ck_assert_int_eq(chh_raw(d.url, buf, len, chh_scaled_ms(3000),
		    &reply, &rlen), 0);
		r = chan__v1__response__unpack(NULL, rlen, reply);
		free(reply);
		ck_assert_ptr_nonnull(r);
		ck_assert_int_eq(r->status, ST(OK));
		ck_assert_ptr_nonnull(r->value);
		ck_assert_msg(r->value->value == 5,
		    "answer %d to the same request: %lld, expected 5", i + 1,
		    (long long) r->value->value);
		chan__v1__response__free_unpacked(r, NULL);
	}
	free(buf);
	rb_named(&b, CHAN__V1__REQUEST__OP_COUNTER_GET, "dup");
	r = call(&d, &b.req, "counter get");
	ck_assert_int_eq(r->status, ST(OK));
	ck_assert_msg(r->value != NULL && r->value->value == 5,
	    "a repeated add was done twice: value %lld",
	    r->value ? (long long) r->value->value : -1LL);
	chh_resp_free(r);
	chh_stop(&d);
}
END_TEST

START_TEST(client_gone_mid_recv)
{
	chh_daemon          d;
	reqbuf              b;
	nng_socket          s;
	nng_msg            *m;
	uint8_t            *buf;
	size_t              len;
	Chan__V1__Response *r;
	int64_t             deadline;

	chh_start(&d, NULL);
	/* A raw client parks a recv that would wait forever, then vanishes. */
	rb_named(&b, CHAN__V1__REQUEST__OP_RECV, "gone");
	b.recv.has_timeout_ms = 0;
	buf = pack(&b.req, &len);
	ck_assert_int_eq(nng_req0_open(&s), 0);
	ck_assert_int_eq(nng_dial(s, d.url, NULL, 0), 0);
	ck_assert_int_eq(nng_msg_alloc(&m, 0), 0);
	ck_assert_int_eq(nng_msg_append(m, buf, len), 0);
	ck_assert_int_eq(nng_sendmsg(s, m, 0), 0);
	free(buf);
	usleep(200 * 1000);
	nng_close(s);

	/* What is sent next is not lost with the vanished receiver. */
	rb_send(&b, "gone", "kept", 4);
	expect_call(&d, &b.req, ST(OK), "send after receiver vanished");
	deadline = chh_now_ms() + chh_scaled_ms(5000);
	for (;;) {
		rb_named(&b, CHAN__V1__REQUEST__OP_RECV, "gone");
		b.recv.timeout_ms = 2000;
		r = call(&d, &b.req, "recv by a new receiver");
		/* The old receiver may take a moment to be detached. */
		if (r->status == ST(BUSY) && chh_now_ms() < deadline) {
			chh_resp_free(r);
			usleep(50 * 1000);
			continue;
		}
		break;
	}
	ck_assert_msg(r->status == ST(OK), "new receiver got %s '%s'",
	    st_name(r->status), r->error ? r->error : "");
	ck_assert_uint_eq(r->recv->n_messages, 1);
	ck_assert_uint_eq(r->recv->messages[0]->data.len, 4);
	ck_assert(memcmp(r->recv->messages[0]->data.data, "kept", 4) == 0);
	chh_resp_free(r);
	chh_stop(&d);
}
END_TEST

/* ---- the batch form (Send.batch, Recv.batch, Recv.max_bytes) ----------- */

/* A Send of sizes[0..n) (payload bytes 'a', 'b', ... back to back) in the
 * batch form; data holds the payloads (room for the sum). */
static void
rb_send_batch(reqbuf *b, Chan__V1__Batch *w, char *name, uint32_t *sizes, size_t n,
    uint8_t *data)
{
	size_t off = 0;

	rb_named(b, CHAN__V1__REQUEST__OP_SEND, name);
	chan__v1__batch__init(w);
	for (size_t i = 0; i < n; i++) {
		memset(data + off, 'a' + (int) (i % 26), sizes[i]);
		off += sizes[i];
	}
	w->has_data = 1;
	w->data.data = data;
	w->data.len = off;
	w->sizes = sizes;
	w->n_sizes = n;
	b->send.n_data = 0;
	b->send.data = NULL;
	b->send.batch = w;
}

static void
expect_invalid_saying(chh_daemon *d, Chan__V1__Request *req, const char *needle,
    const char *what)
{
	Chan__V1__Response *r = call(d, req, what);

	ck_assert_msg(r->status == ST(INVALID_ARGUMENT), "%s: status %s '%s', expected "
	    "INVALID_ARGUMENT", what, st_name(r->status), r->error ? r->error : "");
	ck_assert_msg(r->error != NULL && strstr(r->error, needle) != NULL,
	    "%s: error '%s' does not say '%s'", what, r->error ? r->error : "", needle);
	chh_resp_free(r);
}

/* A plain send and recv still work (fresh clients each). */
static void
expect_send_recv_works(chh_daemon *d, char *name)
{
	reqbuf              b;
	Chan__V1__Response *r;

	rb_send(&b, name, "after", 5);
	expect_call(d, &b.req, ST(OK), "plain send after a refused batch");
	rb_named(&b, CHAN__V1__REQUEST__OP_RECV, name);
	r = call(d, &b.req, "plain recv after a refused batch");
	ck_assert_int_eq(r->status, ST(OK));
	ck_assert_uint_eq(r->recv->n_messages, 1);
	ck_assert_uint_eq(r->recv->messages[0]->data.len, 5);
	ck_assert(memcmp(r->recv->messages[0]->data.data, "after", 5) == 0);
	chh_resp_free(r);
}

/* One REQ socket kept open across calls: deliveries stay in its custody
 * until confirmed (a fresh socket per call would hand them back). */
static nng_socket
sock_open(chh_daemon *d)
{
	nng_socket s;

	ck_assert_int_eq(nng_req0_open(&s), 0);
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, 3600 * 1000);
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, chh_scaled_ms(5000));
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, chh_scaled_ms(5000));
	nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 0);
	ck_assert_int_eq(nng_dial(s, d->url, NULL, 0), 0);
	return (s);
}

static Chan__V1__Response *
sock_call(nng_socket s, Chan__V1__Request *req, const char *what)
{
	uint8_t            *buf;
	size_t              len;
	void               *reply = NULL;
	size_t              rlen = 0;
	int                 rv;
	Chan__V1__Response *r;

	req->has_id = 0; /* a fresh id every time */
	buf = pack(req, &len);
	rv = nng_send(s, buf, len, 0);
	free(buf);
	ck_assert_msg(rv == 0, "%s: send: %s", what, nng_strerror(rv));
	rv = nng_recv(s, &reply, &rlen, NNG_FLAG_ALLOC);
	ck_assert_msg(rv == 0, "%s: no answer: %s", what, nng_strerror(rv));
	r = chan__v1__response__unpack(NULL, rlen, reply);
	nng_free(reply, rlen);
	ck_assert_msg(r != NULL, "%s: the answer does not decode", what);
	return (r);
}

START_TEST(batch_send_bad_sizes)
{
	chh_daemon            d;
	reqbuf                b;
	Chan__V1__Batch       w;
	uint32_t              sizes[3] = { 3, 0, 4 };
	uint8_t               data[16];
	Chan__V1__HelloResult hr;
	uint8_t              *buf;
	size_t                len;

	chh_start(&d, NULL);
	hr = hello(&d);
	ck_assert_msg(hr.has_batch_form && hr.batch_form, "Hello does not offer the batch form");
	/* Sizes adding up to one byte more than the data. */
	rb_send_batch(&b, &w, "bb", sizes, 3, data);
	w.data.len = 6;
	expect_invalid_saying(&d, &b.req, "add up", "sizes over the data");
	/* One byte less. */
	rb_send_batch(&b, &w, "bb", sizes, 3, data);
	sizes[2] = 3;
	expect_invalid_saying(&d, &b.req, "add up", "sizes under the data");
	sizes[2] = 4;
	/* Both forms at once. */
	rb_send_batch(&b, &w, "bb", sizes, 3, data);
	b.data[0].data = (uint8_t *) "x";
	b.data[0].len = 1;
	b.send.data = b.data;
	b.send.n_data = 1;
	expect_invalid_saying(&d, &b.req, "not both", "data and batch");
	/* Deltas are the daemon's to give. */
	rb_send_batch(&b, &w, "bb", sizes, 3, data);
	{
		int64_t deltas[3] = { 1, 1, 1 };

		w.seq_deltas = deltas;
		w.n_seq_deltas = 3;
		expect_invalid_saying(&d, &b.req, "seq", "a sent batch with seq deltas");
	}
	/* Also as raw bytes, the way expect_raw judges any body. */
	rb_send_batch(&b, &w, "bb", sizes, 3, data);
	w.data.len = 2;
	buf = pack(&b.req, &len);
	expect_raw(&d, buf, len, ST(INVALID_ARGUMENT), "raw batch with bad sizes");
	free(buf);
	ck_assert_msg(depth_of(&d, "bb") <= 0, "a refused batch stored something");
	chh_assert_alive(&d);
	expect_send_recv_works(&d, "bb-after");
	/* And a good batch, packed the way libchan packs it, goes in whole. */
	rb_send_batch(&b, &w, "bb", sizes, 3, data);
	b.send.batch = NULL;
	b.data[0].data = data;
	b.data[0].len = 3;
	b.data[1].data = NULL;
	b.data[1].len = 0;
	b.data[2].data = data + 3;
	b.data[2].len = 4;
	b.send.data = b.data;
	b.send.n_data = 3;
	free(pack(&b.req, &len)); /* fills client and id */
	{
		uint8_t            *lb;
		size_t              ll = chl_request_packed_size(&b.req, true, NULL);
		void               *reply;
		size_t              rlen;
		Chan__V1__Response *r;

		lb = malloc(ll);
		ck_assert_ptr_nonnull(lb);
		ck_assert_uint_eq(chl_request_pack(&b.req, true, NULL, lb), ll);
		ck_assert_int_eq(chh_raw(d.url, lb, ll, chh_scaled_ms(3000), &reply, &rlen), 0);
		free(lb);
		r = chan__v1__response__unpack(NULL, rlen, reply);
		free(reply);
		ck_assert_ptr_nonnull(r);
		ck_assert_msg(r->status == ST(OK), "good batch: %s '%s'", st_name(r->status),
		    r->error ? r->error : "");
		ck_assert_ptr_nonnull(r->send);
		ck_assert_uint_eq(r->send->accepted, 3);
		chan__v1__response__free_unpacked(r, NULL);
	}
	ck_assert_int_eq(depth_of(&d, "bb"), 3);
	chh_stop(&d);
}
END_TEST

START_TEST(batch_send_over_max_batch)
{
	chh_daemon            d;
	reqbuf                b;
	Chan__V1__Batch       w;
	Chan__V1__HelloResult hr;
	uint32_t             *sizes;
	uint8_t              *data;
	size_t                n;

	chh_start(&d, NULL);
	hr = hello(&d);
	ck_assert_msg(hr.max_batch == 8192, "default max_batch %u, expected 8192", hr.max_batch);
	n = (size_t) hr.max_batch + 1;
	sizes = malloc(n * sizeof(*sizes));
	data = malloc(n);
	ck_assert_ptr_nonnull(sizes);
	ck_assert_ptr_nonnull(data);
	for (size_t i = 0; i < n; i++) {
		sizes[i] = 1;
	}
	rb_send_batch(&b, &w, "mb", sizes, n, data);
	expect_invalid_saying(&d, &b.req, "8193", "a batch of max_batch+1");
	ck_assert_msg(depth_of(&d, "mb") <= 0, "a refused batch stored something");
	chh_assert_alive(&d);
	/* Exactly max_batch: all in. */
	rb_send_batch(&b, &w, "mb", sizes, n - 1, data);
	expect_call(&d, &b.req, ST(OK), "a batch of max_batch");
	ck_assert_int_eq(depth_of(&d, "mb"), (int64_t) n - 1);
	expect_send_recv_works(&d, "mb2");
	free(sizes);
	free(data);
	chh_stop(&d);
}
END_TEST

/* A Recv asking for the batch form, bounded by bytes, over the wire. */
START_TEST(recv_batch_form_max_bytes)
{
	chh_daemon             d;
	reqbuf                 b;
	Chan__V1__Batch        w;
	uint32_t               sizes[6] = { 10, 0, 20, 30, 5, 40 };
	uint8_t                data[128];
	Chan__V1__Response    *r;
	const Chan__V1__Batch *rb;
	char                   why[256];
	uint64_t               seq = 0, delivery;
	size_t                 off = 0;
	nng_socket             s;

	chh_start(&d, NULL);
	rb_send_batch(&b, &w, "rb", sizes, 6, data);
	expect_call(&d, &b.req, ST(OK), "batch send");
	s = sock_open(&d);
	/* 10 + 0 + 20 = 30 <= 35; + 30 would pass it. */
	rb_named(&b, CHAN__V1__REQUEST__OP_RECV, "rb");
	b.recv.has_max = 1;
	b.recv.max = 10;
	b.recv.has_batch = b.recv.batch = 1;
	b.recv.has_max_bytes = 1;
	b.recv.max_bytes = 35;
	r = sock_call(s, &b.req, "batch recv");
	ck_assert_msg(r->status == ST(OK), "batch recv: %s '%s'", st_name(r->status),
	    r->error ? r->error : "");
	ck_assert_ptr_nonnull(r->recv);
	ck_assert_uint_eq(r->recv->n_messages, 0);
	rb = r->recv->batch;
	ck_assert_msg(rb != NULL, "a Recv with batch=true got no RecvResult.batch");
	ck_assert_msg(chl_batch_check(rb, true, why, sizeof(why)), "%s", why);
	ck_assert_uint_eq(rb->n_sizes, 3);
	ck_assert_uint_eq(rb->n_seq_deltas, 3);
	ck_assert_uint_eq(rb->n_time_deltas, 3);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_uint_eq(rb->sizes[i], sizes[i]);
		for (size_t k = 0; k < sizes[i]; k++) {
			ck_assert_int_eq(rb->data.data[off + k], 'a' + (int) i);
		}
		off += sizes[i];
		seq += (uint64_t) rb->seq_deltas[i];
		ck_assert_uint_eq(seq, i + 1);
	}
	ck_assert_uint_eq(rb->n_redelivered, 0);
	ck_assert(r->has_delivery && r->delivery != 0);
	delivery = r->delivery;
	chan__v1__response__free_unpacked(r, NULL);
	/* max_bytes under the first message: that one alone (confirming). */
	b.req.confirm = &delivery;
	b.req.n_confirm = 1;
	b.recv.max_bytes = 1;
	r = sock_call(s, &b.req, "batch recv of 1 byte");
	ck_assert_int_eq(r->status, ST(OK));
	ck_assert_ptr_nonnull(r->recv->batch);
	ck_assert_uint_eq(r->recv->batch->n_sizes, 1);
	ck_assert_uint_eq(r->recv->batch->sizes[0], 30);
	ck_assert_int_eq(r->recv->batch->data.data[0], 'd');
	ck_assert_uint_eq(r->recv->batch->n_seq_deltas, 1);
	ck_assert_int_eq(r->recv->batch->seq_deltas[0], 4);
	delivery = r->delivery;
	chan__v1__response__free_unpacked(r, NULL);
	/* The list form still answers a Recv without batch. */
	rb_named(&b, CHAN__V1__REQUEST__OP_RECV, "rb");
	b.req.confirm = &delivery;
	b.req.n_confirm = 1;
	b.recv.has_max = 1;
	b.recv.max = 10;
	r = sock_call(s, &b.req, "list recv");
	ck_assert_int_eq(r->status, ST(OK));
	ck_assert_ptr_null(r->recv->batch);
	ck_assert_uint_eq(r->recv->n_messages, 2);
	ck_assert_uint_eq(r->recv->messages[0]->data.len, 5);
	ck_assert_uint_eq(r->recv->messages[1]->data.len, 40);
	ck_assert_uint_eq(r->recv->messages[1]->seq, 6);
	chan__v1__response__free_unpacked(r, NULL);
	nng_close(s);
	chh_assert_alive(&d);
	chh_stop(&d);
}
END_TEST

static Suite *
badinput_suite(void)
{
	Suite *s = suite_create("badinput");
	TCase *tc = tcase_create("badinput");

	/* Whole-daemon cases: well over check's 4 s default. */
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, garbage_bodies_are_protocol);
	tcase_add_test(tc, random_bodies);
	tcase_add_test(tc, truncated_send_is_protocol);
	tcase_add_test(tc, request_without_op);
	tcase_add_test(tc, unknown_op_fields);
	tcase_add_test(tc, bad_names_every_op);
	tcase_add_test(tc, bad_fields);
	tcase_add_test(tc, cancel_bad_input);
	tcase_add_test(tc, counter_add_many_bad_input);
	tcase_add_test(tc, message_size_limit_small);
	tcase_add_test(tc, message_size_limit_default);
	tcase_add_test(tc, frame_over_daemon_limit);
	tcase_add_test(tc, raw_unix_connect_close);
	tcase_add_test(tc, raw_unix_random_bytes);
	tcase_add_test(tc, raw_unix_text);
	tcase_add_test(tc, raw_unix_wrong_handshake);
	tcase_add_test(tc, raw_unix_huge_frame);
	tcase_add_test(tc, raw_unix_short_frame);
	tcase_add_test(tc, raw_unix_silent_peers);
	tcase_add_test(tc, connection_churn);
	tcase_add_test(tc, duplicate_request_id);
	tcase_add_test(tc, client_gone_mid_recv);
	tcase_add_test(tc, batch_send_bad_sizes);
	tcase_add_test(tc, batch_send_over_max_batch);
	tcase_add_test(tc, recv_batch_form_max_bytes);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	int failed;

	failed = chh_run_suite(badinput_suite());
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
