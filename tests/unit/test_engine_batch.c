/*
 * test_engine_batch.c - the engine's side of the batch form, in-process:
 * a Send in the batch form (Send.batch) enqueues exactly its messages,
 * inconsistent ones are refused with INVALID_ARGUMENT and a reason while
 * the engine keeps serving, Recv.max_bytes bounds an answer's payload
 * bytes, and a Recv asking for the batch form (Recv.batch) is answered in
 * it by whoever packs the answer (chd_req_wants_batch).
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "engine_harness.h"
#include "wire.h"

#define MAX_BATCH 16
#define MAX_MSG   1000

static void
setup(void)
{
	chd_engine_opts o;

	th_reset();
	chd_engine_opts_default(&o);
	o.workers = 2;
	o.max_message_size = MAX_MSG;
	o.max_batch = MAX_BATCH;
	o.auto_create = true;
	th_start(&o, 8, 1000);
}

/* ---- requests answered in the packed form (see breq_reply) -------------- */

/*
 * A request whose answer is packed like the transport packs it
 * (chl_packer_init with chd_req_wants_batch) and kept as bytes, so that
 * the test sees what goes on the wire.
 */
typedef struct breq {
	chd_req      req; /* first: the reply gets a chd_req * */
	int          nreplies;
	bool         wanted_batch;
	uint8_t     *bytes;
	size_t       len;
	struct breq *next;
} breq;

static pthread_mutex_t bmtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  bcv = PTHREAD_COND_INITIALIZER;
static breq           *ball;
static uint64_t        bnext_id = 1u << 30;

static void
breq_reply(chd_req *r, const Chan__V1__Response *resp)
{
	breq      *b = (breq *) r;
	bool       batch = chd_req_wants_batch(r);
	chl_packer pk;
	size_t     n = chl_packer_init(&pk, resp, batch);
	uint8_t   *buf = malloc(n + 1);

	if (buf != NULL) {
		(void) chl_packer_write(&pk, buf);
	}
	chl_packer_fini(&pk);
	chl_request_free(&r->alloc, r->msg);
	r->msg = NULL;
	pthread_mutex_lock(&bmtx);
	b->nreplies++;
	if (b->bytes == NULL) {
		b->bytes = buf;
		b->len = n;
		b->wanted_batch = batch;
	} else {
		free(buf);
	}
	pthread_cond_broadcast(&bcv);
	pthread_mutex_unlock(&bmtx);
}

/* As the transport's: an answer the engine packed (idempotent calls, batch-form recvs). */
static void
breq_reply_answer(chd_req *r, chd_answer *a, chan_status st, uint64_t delivery)
{
	breq    *b = (breq *) r;
	size_t   len = a->len;
	uint8_t *buf = malloc(len + 1);

	(void) st;
	(void) delivery;
	if (buf != NULL) {
		memcpy(buf, a->bytes, len);
	}
	chd_answer_unref(a);
	chl_request_free(&r->alloc, r->msg);
	r->msg = NULL;
	pthread_mutex_lock(&bmtx);
	b->nreplies++;
	if (b->bytes == NULL) {
		b->bytes = buf;
		b->len = len;
		b->wanted_batch = true; /* not known here; checked by the bytes */
	} else {
		free(buf);
	}
	pthread_cond_broadcast(&bcv);
	pthread_mutex_unlock(&bmtx);
}

static uint64_t bclient, bid; /* non-zero: the next bsubmit's client, id */

static breq *
bsubmit(uint32_t conn, Chan__V1__Request *m)
{
	breq    *b = calloc(1, sizeof(*b));
	size_t   len;
	uint8_t *buf;

	ck_assert_ptr_nonnull(b);
	m->has_id = true;
	pthread_mutex_lock(&bmtx);
	m->id = bid != 0 ? bid : bnext_id++;
	b->next = ball;
	ball = b;
	pthread_mutex_unlock(&bmtx);
	if (bclient != 0) {
		m->has_client = true;
		m->client = bclient;
	}
	len = chan__v1__request__get_packed_size(m);
	buf = malloc(len + 1);
	ck_assert_ptr_nonnull(buf);
	chan__v1__request__pack(m, buf);
	chl_capped_alloc_init(&b->req.alloc, 64u << 20);
	b->req.msg = chl_request_decode(&b->req.alloc, buf, len);
	free(buf);
	ck_assert_ptr_nonnull(b->req.msg);
	b->req.conn = conn;
	b->req.reply = breq_reply;
	b->req.reply_answer = breq_reply_answer;
	chd_engine_submit(E, &b->req);
	return (b);
}

/* The answer decoded by protobuf-c (free it with free_unpacked). */
static Chan__V1__Response *
banswer(breq *b)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	pthread_mutex_lock(&bmtx);
	while (b->bytes == NULL) {
		if (pthread_cond_timedwait(&bcv, &bmtx, &ts) != 0) {
			break;
		}
	}
	pthread_mutex_unlock(&bmtx);
	ck_assert_msg(b->bytes != NULL, "no answer within 10 s");
	return (chan__v1__response__unpack(NULL, b->len, b->bytes));
}

static void
teardown(void)
{
	breq *b, *next;

	th_teardown(); /* answers whatever is still parked */
	for (b = ball; b != NULL; b = next) {
		next = b->next;
		ck_assert_int_eq(b->nreplies, 1);
		free(b->bytes);
		free(b);
	}
	ball = NULL;
	bclient = bid = 0;
}

/* ---- request builders ------------------------------------------------------ */

/* A Send of msgs[0..n) in the batch form (optionally also in data). */
static Chan__V1__Request
send_req(Chan__V1__Send *s, Chan__V1__Batch *b, const char *name)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Send    si = CHAN__V1__SEND__INIT;

	*s = si;
	s->name = (char *) name;
	s->has_timeout_ms = true;
	s->timeout_ms = 0;
	s->batch = b;
	m.op_case = CHAN__V1__REQUEST__OP_SEND;
	m.send = s;
	return (m);
}

/* Fills b with msgs[0..n) back to back in data (n <= 64). */
static void
batch_of(Chan__V1__Batch *b, uint32_t *sizes, uint8_t *data, const char *const *msgs, size_t n)
{
	Chan__V1__Batch init = CHAN__V1__BATCH__INIT;
	size_t          off = 0;

	*b = init;
	for (size_t i = 0; i < n; i++) {
		sizes[i] = (uint32_t) strlen(msgs[i]);
		memcpy(data + off, msgs[i], sizes[i]);
		off += sizes[i];
	}
	b->has_data = true;
	b->data.data = data;
	b->data.len = off;
	b->sizes = sizes;
	b->n_sizes = n;
}

static treq *
r_send_batch(uint32_t conn, const char *name, const char *const *msgs, size_t n)
{
	Chan__V1__Send    s;
	Chan__V1__Batch   b;
	uint32_t          sizes[64];
	uint8_t           data[64 * 128];
	Chan__V1__Request m;

	ck_assert_uint_le(n, 64);
	batch_of(&b, sizes, data, msgs, n);
	m = send_req(&s, &b, name);
	return (submit(conn, &m));
}

static Chan__V1__Request
recv_req(Chan__V1__Recv *r, const char *name, uint32_t max, uint64_t max_bytes, int64_t timeout,
    bool batch)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Recv    ri = CHAN__V1__RECV__INIT;

	*r = ri;
	r->name = (char *) name;
	r->has_max = true;
	r->max = max;
	r->has_timeout_ms = true;
	r->timeout_ms = timeout;
	if (max_bytes > 0) {
		r->has_max_bytes = true;
		r->max_bytes = max_bytes;
	}
	if (batch) {
		r->has_batch = r->batch = true;
	}
	m.op_case = CHAN__V1__REQUEST__OP_RECV;
	m.recv = r;
	return (m);
}

static treq *
r_recvb(uint32_t conn, const char *name, uint32_t max, uint64_t max_bytes, int64_t timeout)
{
	Chan__V1__Recv    r;
	Chan__V1__Request m = recv_req(&r, name, max, max_bytes, timeout, false);

	return (submit(conn, &m));
}

/* The answer of t carries exactly msgs[0..n), seqs from first_seq up. */
static void
expect_recv(treq *t, const char *const *msgs, size_t n, uint64_t first_seq)
{
	Chan__V1__Response *r = answer(t);

	expect_status(t, CHAN_OK);
	ck_assert_int_eq(r->result_case, CHAN__V1__RESPONSE__RESULT_RECV);
	ck_assert_uint_eq(r->recv->n_messages, n);
	for (size_t i = 0; i < n; i++) {
		Chan__V1__Message *m = r->recv->messages[i];
		size_t             len = strlen(msgs[i]);

		ck_assert_msg(m->data.len == len, "message %zu: %zu bytes, wanted %zu", i,
		    m->data.len, len);
		ck_assert_msg(len == 0 || memcmp(m->data.data, msgs[i], len) == 0,
		    "message %zu differs", i);
		if (first_seq != 0) {
			ck_assert_uint_eq(m->seq, first_seq + i);
		}
	}
}

static void
expect_invalid(treq *t, const char *needle)
{
	Chan__V1__Response *r = answer(t);

	expect_status(t, CHAN_INVALID_ARGUMENT);
	ck_assert_msg(strstr(r->error, needle) != NULL, "error \"%s\" does not say \"%s\"",
	    r->error, needle);
}

/* The engine still serves: a plain send and recv on a fresh channel. */
static void
expect_still_serving(const char *name)
{
	const char *one[] = { "still here" };

	expect_status(r_send(1, name, "still here", 0), CHAN_OK);
	expect_recv(r_recvb(2, name, 4, 0, 0), one, 1, 0);
}

/* ---- sends in the batch form ----------------------------------------------- */

START_TEST(batch_send_enqueues_in_order)
{
	const char *msgs[] = { "alpha", "", "gamma-gamma", "d", "", "the last one" };
	const char *more[] = { "x", "yy" };
	treq       *t;
	uint64_t    first;

	t = r_send_batch(1, "bs", msgs, 6);
	expect_status(t, CHAN_OK);
	ck_assert_int_eq(answer(t)->result_case, CHAN__V1__RESPONSE__RESULT_SEND);
	ck_assert_uint_eq(answer(t)->send->accepted, 6);
	first = answer(t)->send->first_seq;
	ck_assert_uint_gt(first, 0);
	ck_assert_uint_eq(stat_of("bs")->depth, 6);
	/* A second batch continues the sequence. */
	t = r_send_batch(1, "bs", more, 2);
	expect_status(t, CHAN_OK);
	ck_assert_uint_eq(answer(t)->send->accepted, 2);
	ck_assert_uint_eq(answer(t)->send->first_seq, first + 6);
	expect_recv(r_recvb(2, "bs", 6, 0, 0), msgs, 6, first);
	expect_recv(r_recvb(2, "bs", MAX_BATCH, 0, 0), more, 2, first + 6);
	expect_status(r_recvb(2, "bs", 1, 0, 0), CHAN_EMPTY);
}
END_TEST

/* A batch of exactly max_batch messages is fine; one of one message too. */
START_TEST(batch_send_limits_inclusive)
{
	const char *msgs[MAX_BATCH];
	const char *one[] = { "solo" };
	treq       *t;

	for (int i = 0; i < MAX_BATCH; i++) {
		msgs[i] = "m";
	}
	t = r_send_batch(1, "lim", msgs, MAX_BATCH);
	expect_status(t, CHAN_OK);
	ck_assert_uint_eq(answer(t)->send->accepted, MAX_BATCH);
	t = r_send_batch(1, "lim", one, 1);
	expect_status(t, CHAN_OK);
	ck_assert_uint_eq(answer(t)->send->accepted, 1);
	ck_assert_uint_eq(stat_of("lim")->depth, MAX_BATCH + 1);
}
END_TEST

START_TEST(batch_send_both_forms_refused)
{
	Chan__V1__Send      s;
	Chan__V1__Batch     b;
	uint32_t            sizes[2];
	uint8_t             data[16];
	ProtobufCBinaryData d[1] = { { 3, (uint8_t *) "abc" } };
	const char         *msgs[] = { "x", "y" };
	Chan__V1__Request   m;

	batch_of(&b, sizes, data, msgs, 2);
	m = send_req(&s, &b, "both");
	s.data = d;
	s.n_data = 1;
	expect_invalid(submit(1, &m), "not both");
	/* Nothing of either form was stored. */
	expect_status(r_recvb(2, "both", MAX_BATCH, 0, 0), CHAN_EMPTY);
	expect_still_serving("both2");
}
END_TEST

START_TEST(batch_send_sizes_not_adding_up)
{
	Chan__V1__Send    s;
	Chan__V1__Batch   b;
	uint32_t          sizes[3];
	uint8_t           data[64];
	const char       *msgs[] = { "one", "two", "three" };
	Chan__V1__Request m;

	batch_of(&b, sizes, data, msgs, 3);
	sizes[2] = 6; /* one more than the data has */
	m = send_req(&s, &b, "sz");
	expect_invalid(submit(1, &m), "add up");
	sizes[2] = 4; /* one less */
	expect_invalid(submit(1, &m), "add up");
	b.n_sizes = 0; /* none at all */
	expect_invalid(submit(1, &m), "no sizes");
	expect_status(r_recvb(2, "sz", MAX_BATCH, 0, 0), CHAN_EMPTY);
	expect_still_serving("sz2");
}
END_TEST

START_TEST(batch_send_with_answer_fields_refused)
{
	Chan__V1__Send    s;
	Chan__V1__Batch   b;
	uint32_t          sizes[2], redel[1] = { 0 };
	uint8_t           data[16];
	int64_t           deltas[2] = { 1, 1 };
	const char       *msgs[] = { "a", "b" };
	Chan__V1__Request m;

	batch_of(&b, sizes, data, msgs, 2);
	m = send_req(&s, &b, "af");
	b.seq_deltas = deltas;
	b.n_seq_deltas = 2;
	expect_invalid(submit(1, &m), "seq");
	b.n_seq_deltas = 0;
	b.time_deltas = deltas;
	b.n_time_deltas = 2;
	expect_invalid(submit(1, &m), "time");
	b.n_time_deltas = 0;
	b.redelivered = redel;
	b.n_redelivered = 1;
	expect_invalid(submit(1, &m), "redelivered");
	expect_status(r_recvb(2, "af", MAX_BATCH, 0, 0), CHAN_EMPTY);
	expect_still_serving("af2");
}
END_TEST

START_TEST(batch_send_over_max_batch_refused)
{
	const char *msgs[MAX_BATCH + 1];
	char        num[16];
	treq       *t;

	for (int i = 0; i <= MAX_BATCH; i++) {
		msgs[i] = "m";
	}
	t = r_send_batch(1, "mb", msgs, MAX_BATCH + 1);
	snprintf(num, sizeof(num), "%d", MAX_BATCH + 1);
	expect_invalid(t, num);
	expect_status(r_recvb(2, "mb", MAX_BATCH, 0, 0), CHAN_EMPTY);
	expect_still_serving("mb2");
}
END_TEST

/* The rules after unbatching are the list form's: one message too large
 * refuses the whole batch (all-or-nothing). */
START_TEST(batch_send_too_large_stores_nothing)
{
	static char big[MAX_MSG + 2];
	const char *msgs[] = { "ok", big, "ok too" };

	memset(big, 'b', MAX_MSG + 1);
	expect_status(r_send_batch(1, "tl", msgs, 3), CHAN_TOO_LARGE);
	expect_status(r_recvb(2, "tl", MAX_BATCH, 0, 0), CHAN_EMPTY);
	big[MAX_MSG] = '\0'; /* exactly the limit: fine */
	expect_status(r_send_batch(1, "tl", msgs, 3), CHAN_OK);
	expect_recv(r_recvb(2, "tl", MAX_BATCH, 0, 0), msgs, 3, 0);
}
END_TEST

/* ---- Recv.max_bytes ------------------------------------------------------- */

static const char *
hundred(void)
{
	static char h[101];

	memset(h, 'h', 100);
	return (h);
}

START_TEST(recv_max_bytes_bounds_the_answer)
{
	const char *msgs[10];

	for (int i = 0; i < 10; i++) {
		msgs[i] = hundred();
	}
	expect_status(r_send_batch(1, "mx", msgs, 10), CHAN_OK);
	expect_recv(r_recvb(2, "mx", 10, 350, 0), msgs, 3, 0);
	expect_recv(r_recvb(2, "mx", 10, 50, 0), msgs, 1, 0); /* the first always */
	expect_recv(r_recvb(2, "mx", 10, 300, 0), msgs, 3, 0); /* exactly: taken */
	expect_recv(r_recvb(2, "mx", 10, 0, 0), msgs, 3, 0);   /* no bound: the rest */
	expect_status(r_sendv(1, "mx", msgs, 10, 0, 0), CHAN_OK);
	expect_recv(r_recvb(2, "mx", 10, 0, 0), msgs, 10, 0);
	expect_status(r_sendv(1, "mx", msgs, 10, 0, 0), CHAN_OK);
	expect_recv(r_recvb(2, "mx", 10, 299, 0), msgs, 2, 0);
	/* max still bounds under a large max_bytes. */
	expect_recv(r_recvb(2, "mx", 4, 1u << 30, 0), msgs, 4, 0);
}
END_TEST

/* Zero-length messages cost nothing against max_bytes. */
START_TEST(recv_max_bytes_empty_messages)
{
	const char *msgs[] = { "", "", "12345", "", "6789" };

	expect_status(r_send_batch(1, "me", msgs, 5), CHAN_OK);
	expect_recv(r_recvb(2, "me", 10, 5, 0), msgs, 4, 0);
	expect_recv(r_recvb(2, "me", 10, 1, 0), msgs + 4, 1, 0);
}
END_TEST

/* A parked receiver woken by a send gets no more than its max_bytes. */
START_TEST(recv_max_bytes_parked_receiver)
{
	const char *msgs[5];
	treq       *r;

	for (int i = 0; i < 5; i++) {
		msgs[i] = hundred();
	}
	expect_status(r_create(1, "mp", -1), CHAN_OK);
	r = r_recvb(2, "mp", 10, 250, 5000);
	wait_blocked("mp", 0, 1);
	expect_status(r_send_batch(1, "mp", msgs, 5), CHAN_OK);
	expect_recv(r, msgs, 2, 0);
	ck_assert_uint_eq(stat_of("mp")->depth, 3);
}
END_TEST

/*
 * A full bounded channel with a blocked batch sender: a Recv bounded by
 * bytes takes what fits, and the sender's batch goes in once there is
 * room for all of it (all-or-nothing), behind what was queued.
 */
START_TEST(recv_max_bytes_bounded_with_blocked_sender)
{
	const char *first[4], *later[2] = { "late-1", "late-2" };
	treq       *snd;

	for (int i = 0; i < 4; i++) {
		first[i] = hundred();
	}
	expect_status(r_create(1, "bd", 4), CHAN_OK);
	expect_status(r_send_batch(1, "bd", first, 4), CHAN_OK);
	{
		Chan__V1__Send    s;
		Chan__V1__Batch   b;
		uint32_t          sizes[2];
		uint8_t           data[32];
		Chan__V1__Request m;

		batch_of(&b, sizes, data, later, 2);
		m = send_req(&s, &b, "bd");
		s.timeout_ms = 5000;
		snd = submit(1, &m);
	}
	wait_blocked("bd", 1, 0);
	/* 250 bytes: two of the queued ones, making room for the batch. */
	expect_recv(r_recvb(2, "bd", 10, 250, 0), first, 2, 0);
	expect_status(snd, CHAN_OK);
	ck_assert_uint_eq(answer(snd)->send->accepted, 2);
	expect_recv(r_recvb(2, "bd", 10, 1, 0), first, 1, 0);
	expect_recv(r_recvb(2, "bd", 10, 0, 0), (const char *[]) { hundred(), "late-1", "late-2" }, 3,
	    0);
}
END_TEST

/* Ack mode (a lease) honours max_bytes too, and leases each message taken. */
START_TEST(recv_max_bytes_lease_mode)
{
	const char       *msgs[4];
	Chan__V1__Recv    rv;
	Chan__V1__Request m;
	treq             *t;

	for (int i = 0; i < 4; i++) {
		msgs[i] = hundred();
	}
	expect_status(r_send_batch(1, "ls", msgs, 4), CHAN_OK);
	m = recv_req(&rv, "ls", 10, 150, 0, false);
	rv.has_lease_ms = true;
	rv.lease_ms = 60000;
	t = submit(2, &m);
	expect_recv(t, msgs, 1, 0);
	ck_assert_uint_eq(stat_of("ls")->in_flight, 1);
	ck_assert_uint_eq(stat_of("ls")->depth, 3);
	m = recv_req(&rv, "ls", 10, 200, 0, false);
	rv.has_lease_ms = true;
	rv.lease_ms = 60000;
	expect_recv(submit(2, &m), msgs, 2, 0);
	ck_assert_uint_eq(stat_of("ls")->in_flight, 3);
	ck_assert_uint_eq(stat_of("ls")->depth, 1);
}
END_TEST

/* ---- answers in the batch form ------------------------------------------- */

/*
 * The engine packs batch answers straight from the queue; chl_packer packs
 * them from a Response's message list. Both must write the same bytes:
 * r (b's answer, decoded) turned back into a list and packed again.
 */
static void
expect_packer_bytes(const breq *b, const Chan__V1__Response *r)
{
	const Chan__V1__Batch *w = r->recv->batch;
	size_t                 n = w->n_sizes, off = 0, ri = 0, len;
	Chan__V1__Message     *ms = calloc(n, sizeof(*ms));
	Chan__V1__Message    **mp = calloc(n, sizeof(*mp));
	Chan__V1__RecvResult   rr = CHAN__V1__RECV_RESULT__INIT;
	Chan__V1__Response     h = *r;
	chl_packer             pk;
	uint8_t               *buf;
	uint64_t               seq = 0, t = 0;

	ck_assert_ptr_nonnull(ms);
	ck_assert_ptr_nonnull(mp);
	for (size_t i = 0; i < n; i++) {
		chan__v1__message__init(&ms[i]);
		seq += (uint64_t) w->seq_deltas[i];
		t += (uint64_t) w->time_deltas[i];
		ms[i].has_seq = ms[i].has_time_us = ms[i].has_data = true;
		ms[i].seq = seq;
		ms[i].time_us = t;
		ms[i].data.len = w->sizes[i];
		ms[i].data.data = w->data.data + off;
		off += w->sizes[i];
		if (ri < w->n_redelivered && w->redelivered[ri] == i) {
			ms[i].has_redelivered = ms[i].redelivered = true;
			ri++;
		}
		mp[i] = &ms[i];
	}
	rr.messages = mp;
	rr.n_messages = n;
	h.recv = &rr;
	len = chl_packer_init(&pk, &h, true);
	buf = malloc(len + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(chl_packer_write(&pk, buf), len);
	chl_packer_fini(&pk);
	ck_assert_uint_eq(len, b->len);
	ck_assert_msg(memcmp(buf, b->bytes, len) == 0,
	    "the engine's batch answer differs from chl_packer's bytes");
	free(buf);
	free(mp);
	free(ms);
}

static void
expect_batch_answer(breq *b, const char *const *msgs, size_t n)
{
	Chan__V1__Response *r = banswer(b);
	Chan__V1__Batch    *w;
	char                why[256] = "";
	size_t              off = 0;
	uint64_t            seq = 0, prev = 0;

	ck_assert_ptr_nonnull(r);
	ck_assert_msg(r->status == CHAN__V1__STATUS__OK, "status %d (%s)", r->status,
	    r->error ? r->error : "");
	ck_assert(b->wanted_batch);
	ck_assert_int_eq(r->result_case, CHAN__V1__RESPONSE__RESULT_RECV);
	ck_assert_uint_eq(r->recv->n_messages, 0);
	w = r->recv->batch;
	ck_assert_msg(w != NULL, "a Recv with batch=true got no RecvResult.batch");
	ck_assert_msg(chl_batch_check(w, true, why, sizeof(why)), "%s", why);
	ck_assert_uint_eq(w->n_sizes, n);
	ck_assert_uint_eq(w->n_seq_deltas, n);
	ck_assert_uint_eq(w->n_time_deltas, n);
	for (size_t i = 0; i < n; i++) {
		ck_assert_uint_eq(w->sizes[i], strlen(msgs[i]));
		ck_assert(memcmp(w->data.data + off, msgs[i], w->sizes[i]) == 0);
		off += w->sizes[i];
		seq += (uint64_t) w->seq_deltas[i];
		ck_assert_msg(i == 0 || seq == prev + 1, "seqs not consecutive at %zu", i);
		prev = seq;
	}
	ck_assert_uint_gt(seq, 0);
	ck_assert(r->has_delivery && r->delivery != 0);
	expect_packer_bytes(b, r);
	chan__v1__response__free_unpacked(r, NULL);
}

START_TEST(recv_batch_answer_form)
{
	const char       *msgs[] = { "one", "", "three", "four" };
	Chan__V1__Recv    rv;
	Chan__V1__Request m;
	Chan__V1__Response *r;
	breq             *b;

	expect_status(r_send_batch(1, "ba", msgs, 4), CHAN_OK);
	m = recv_req(&rv, "ba", 10, 0, 0, true);
	expect_batch_answer(bsubmit(2, &m), msgs, 4);

	/* Parked, then woken by a send, with max_bytes: still the batch form. */
	m = recv_req(&rv, "ba", 10, 7, 5000, true);
	b = bsubmit(2, &m);
	wait_blocked("ba", 0, 1);
	expect_status(r_send_batch(1, "ba", msgs, 4), CHAN_OK);
	expect_batch_answer(b, msgs, 2); /* 3 + 0 bytes, then 5 would pass 7 */

	/* Without batch=true: the list form, as before. */
	m = recv_req(&rv, "ba", 10, 0, 0, false);
	b = bsubmit(2, &m);
	r = banswer(b);
	ck_assert_ptr_nonnull(r);
	ck_assert(!b->wanted_batch);
	ck_assert_ptr_null(r->recv->batch);
	ck_assert_uint_eq(r->recv->n_messages, 2);
	ck_assert_uint_eq(r->recv->messages[0]->data.len, 5);
	ck_assert(memcmp(r->recv->messages[0]->data.data, "three", 5) == 0);
	chan__v1__response__free_unpacked(r, NULL);

	/* Error answers to a batch Recv are plain. */
	m = recv_req(&rv, "ba", 10, 0, 0, true);
	b = bsubmit(2, &m);
	r = banswer(b);
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(r->status, CHAN__V1__STATUS__EMPTY);
	chan__v1__response__free_unpacked(r, NULL);
}
END_TEST

/* A redelivered message keeps its flag and its seq in the batch form. */
START_TEST(recv_batch_answer_redelivered)
{
	const char         *msgs[] = { "r1", "r2", "r3" };
	Chan__V1__Recv      rv;
	Chan__V1__Request   m;
	Chan__V1__Response *r;
	breq               *b;
	uint64_t            seq = 0;

	expect_status(r_send_batch(1, "rd", msgs, 3), CHAN_OK);
	/* Taken on conn 3, never confirmed, conn 3 goes: they come back. */
	expect_recv(r_recvb(3, "rd", 2, 0, 0), msgs, 2, 0);
	chd_engine_conn_close(E, 3);
	for (int i = 0; i < 500 && stat_of("rd")->depth < 3; i++) {
		msleep(10);
	}
	ck_assert_uint_eq(stat_of("rd")->depth, 3);
	m = recv_req(&rv, "rd", 10, 0, 0, true);
	b = bsubmit(2, &m);
	r = banswer(b);
	ck_assert_ptr_nonnull(r);
	ck_assert_ptr_nonnull(r->recv->batch);
	ck_assert_uint_eq(r->recv->batch->n_sizes, 3);
	ck_assert_uint_eq(r->recv->batch->n_redelivered, 2);
	ck_assert_uint_eq(r->recv->batch->redelivered[0], 0);
	ck_assert_uint_eq(r->recv->batch->redelivered[1], 1);
	for (size_t i = 0; i < 3; i++) {
		seq += (uint64_t) r->recv->batch->seq_deltas[i];
		ck_assert_uint_eq(seq, i + 1);
	}
	expect_packer_bytes(b, r);
	chan__v1__response__free_unpacked(r, NULL);
}
END_TEST

/*
 * An idempotent Recv (client and id given) asking for the batch form: the
 * answer the idempotency cache packs is in the batch form, and a repeat
 * of the call gets the very same bytes.
 */
START_TEST(recv_batch_answer_idempotent_repeat)
{
	const char       *msgs[] = { "i1", "", "i3" };
	Chan__V1__Recv    rv;
	Chan__V1__Request m;
	breq             *b1, *b2;

	expect_status(r_send_batch(1, "id", msgs, 3), CHAN_OK);
	bclient = 0x1234567890abcdefULL;
	bid = 4242;
	m = recv_req(&rv, "id", 10, 0, 0, true);
	b1 = bsubmit(2, &m);
	expect_batch_answer(b1, msgs, 3);
	m = recv_req(&rv, "id", 10, 0, 0, true);
	b2 = bsubmit(2, &m);
	expect_batch_answer(b2, msgs, 3);
	ck_assert_uint_eq(b1->len, b2->len);
	ck_assert(memcmp(b1->bytes, b2->bytes, b1->len) == 0);
	/* Replayed, not done twice: the channel is empty. */
	ck_assert_uint_eq(stat_of("id")->depth, 0);
}
END_TEST

/* ---- big payloads stay in the request buffer they came in ---------------- */

/* A Send (list form) of n payloads, each of sizes[i] bytes of fill[i]. */
static treq *
r_send_sized(uint32_t conn, const char *name, const size_t *sizes, const char *fill, size_t n,
    uint8_t *store)
{
	ProtobufCBinaryData d[8];
	Chan__V1__Send      s;
	Chan__V1__Request   m = send_req(&s, NULL, name);
	size_t              off = 0;

	ck_assert_uint_le(n, 8);
	for (size_t i = 0; i < n; i++) {
		memset(store + off, fill[i], sizes[i]);
		d[i].data = store + off;
		d[i].len = sizes[i];
		off += sizes[i];
	}
	s.data = d;
	s.n_data = n;
	return (submit(conn, &m));
}

/* A Recv of one message that confirms `confirm` (0: none) first. */
static treq *
r_recv_confirm(uint32_t conn, const char *name, uint64_t confirm)
{
	Chan__V1__Recv    rv;
	Chan__V1__Request m = recv_req(&rv, name, 1, 0, 0, false);

	m.n_confirm = confirm != 0;
	m.confirm = &confirm;
	return (submit(conn, &m));
}

/* t's answer is one message of len bytes of c; returns its delivery. */
static uint64_t
expect_one(treq *t, size_t len, char c, bool redelivered)
{
	Chan__V1__Response *r = answer(t);
	Chan__V1__Message  *m;

	expect_status(t, CHAN_OK);
	ck_assert_uint_eq(r->recv->n_messages, 1);
	m = r->recv->messages[0];
	ck_assert_uint_eq(m->data.len, len);
	for (size_t i = 0; i < len; i++) {
		ck_assert_msg(m->data.data[i] == (uint8_t) c, "byte %zu is %d, wanted '%c'", i,
		    m->data.data[i], c);
	}
	ck_assert_int_eq(m->redelivered, redelivered);
	ck_assert(r->has_delivery);
	return (r->delivery);
}

static treq *
r_delete(uint32_t conn, const char *name)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Delete  d = CHAN__V1__DELETE__INIT;

	d.name = (char *) name;
	m.op_case = CHAN__V1__REQUEST__OP_DELETE;
	m.delete_ = &d;
	return (submit(conn, &m));
}

static uint64_t
stats_bytes(void)
{
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Stats   st = CHAN__V1__STATS__INIT;
	treq             *t;

	m.op_case = CHAN__V1__REQUEST__OP_STATS;
	m.stats = &st;
	t = submit(1, &m);
	expect_status(t, CHAN_OK);
	return (answer(t)->stats->bytes);
}

/*
 * Payloads of CHD_BORROW_MIN (512) bytes and more are kept in their
 * request's buffer, which the engine frees when the last of them is
 * confirmed; small ones are copied. The data stays intact throughout.
 */
START_TEST(big_payloads_keep_their_buffer_until_the_last_goes)
{
	static uint8_t store[4096];
	const size_t   sizes[] = { 600, 5, 900 };
	treq          *t, *small;
	uint64_t       d;

	t = r_send_sized(1, "bb", sizes, "abc", 3, store);
	expect_status(t, CHAN_OK);
	small = r_send_sized(1, "bb", sizes + 1, "s", 1, store);
	expect_status(small, CHAN_OK);
	ck_assert(atomic_load(&small->input_freed)); /* copied: freed with its request */
	ck_assert(!atomic_load(&t->input_freed));
	d = expect_one(r_recv_confirm(2, "bb", 0), 600, 'a', false);
	d = expect_one(r_recv_confirm(2, "bb", d), 5, 'b', false);
	ck_assert(!atomic_load(&t->input_freed));
	d = expect_one(r_recv_confirm(2, "bb", d), 900, 'c', false);
	ck_assert(!atomic_load(&t->input_freed)); /* in custody still */
	ck_assert_uint_eq(stat_of("bb")->depth, 1);
	d = expect_one(r_recv_confirm(2, "bb", d), 5, 's', false);
	/* The confirm ran on the channel's shard before the stat did. */
	ck_assert_uint_eq(stat_of("bb")->in_flight, 1);
	ck_assert(atomic_load(&t->input_freed));
	expect_status(r_recv_confirm(2, "bb", d), CHAN_EMPTY);
	ck_assert_uint_eq(stats_bytes(), 0);
}
END_TEST

/* A big payload among many small ones is copied like them: keeping the
 * request for it would keep all their bytes too. */
START_TEST(big_payload_among_small_ones_is_copied)
{
	static uint8_t store[4096];
	const size_t   sizes[] = { 600, 100, 100, 100, 100, 100, 100, 100 };
	treq          *t;

	t = r_send_sized(1, "bc", sizes, "abcdefgh", 8, store);
	expect_status(t, CHAN_OK);
	ck_assert(atomic_load(&t->input_freed));
	(void) expect_one(r_recv_confirm(2, "bc", 0), 600, 'a', false);
	ck_assert_uint_eq(stats_bytes(), 1300);
}
END_TEST

/* Given back (the holder's connection closed) and deleted, borrowed payloads stay intact. */
START_TEST(big_payloads_redelivered_then_deleted)
{
	static uint8_t store[4096];
	const size_t   sizes[] = { 700, 800 };
	treq          *t;

	t = r_send_sized(1, "br", sizes, "xy", 2, store);
	expect_status(t, CHAN_OK);
	(void) expect_one(r_recv_confirm(3, "br", 0), 700, 'x', false);
	chd_engine_conn_close(E, 3);
	(void) expect_one(r_recv_confirm(4, "br", 0), 700, 'x', true);
	ck_assert(!atomic_load(&t->input_freed));
	expect_status(r_delete(1, "br"), CHAN_OK);
	ck_assert(atomic_load(&t->input_freed));
	ck_assert_uint_eq(stats_bytes(), 0);
}
END_TEST

/*
 * max-memory counts a kept buffer whole. When that would not fit but the
 * payloads alone do, they are copied instead and the send still succeeds.
 */
START_TEST(big_payloads_copied_when_their_buffer_passes_max_memory)
{
	static uint8_t store[4096];
	const size_t   sizes[] = { 600, 600 };
	treq          *t;

	t = r_send_sized(1, "bm", sizes, "pq", 2, store);
	expect_status(t, CHAN_OK);
	ck_assert(atomic_load(&t->input_freed));
	ck_assert_uint_eq(stats_bytes(), 1200);
	(void) expect_one(r_recv_confirm(2, "bm", 0), 600, 'p', false);
	/* Nothing more fits: refused, and nothing kept. */
	t = r_send_sized(1, "bm", sizes, "zz", 1, store);
	expect_status(t, CHAN_RESOURCE_EXHAUSTED);
	ck_assert(atomic_load(&t->input_freed));
	ck_assert_uint_eq(stat_of("bm")->depth, 1);
}
END_TEST

static void
setup_tight(void)
{
	chd_engine_opts o;

	th_reset();
	chd_engine_opts_default(&o);
	o.workers = 2;
	o.max_message_size = MAX_MSG;
	o.max_batch = MAX_BATCH;
	o.auto_create = true;
	o.max_memory = 1205; /* both payloads (1200), not their request (more) */
	th_start(&o, 8, 1000);
}

/* ---- the daemon's own bound on an answer (64 MiB of payload) ------------- */

#define BIG_MSG (4u << 20)

static void
setup_big(void)
{
	chd_engine_opts o;

	th_reset();
	chd_engine_opts_default(&o);
	o.workers = 2;
	o.max_message_size = BIG_MSG;
	o.max_batch = 64;
	o.max_memory = 0;
	th_start(&o, 1, 1000);
}

/* Without max_bytes, 20 x 4 MiB queued: one recv of up to 64 takes 16 (64 MiB). */
START_TEST(answer_bounded_to_64_mib)
{
	uint8_t            *buf = malloc(BIG_MSG);
	ProtobufCBinaryData d[4];
	Chan__V1__Send      s;
	Chan__V1__Recv      rv;
	Chan__V1__Request   m;
	Chan__V1__Response *r;
	treq               *t;

	ck_assert_ptr_nonnull(buf);
	memset(buf, 'b', BIG_MSG);
	for (size_t i = 0; i < 4; i++) {
		d[i].data = buf;
		d[i].len = BIG_MSG;
	}
	for (int k = 0; k < 5; k++) {
		m = send_req(&s, NULL, "big");
		s.data = d;
		s.n_data = 4;
		expect_status(submit(1, &m), CHAN_OK);
	}
	m = recv_req(&rv, "big", 64, 0, 0, false);
	t = submit(1, &m);
	expect_status(t, CHAN_OK);
	r = answer(t);
	ck_assert_uint_eq(r->recv->n_messages, 16);
	/* A smaller max_bytes still wins: 2 messages of the 4 left. */
	m = recv_req(&rv, "big", 64, 2 * BIG_MSG, 0, false);
	t = submit(1, &m);
	expect_status(t, CHAN_OK);
	ck_assert_uint_eq(answer(t)->recv->n_messages, 2);
	free(buf);
}
END_TEST

static Suite *
engine_batch_suite(void)
{
	Suite *s = suite_create("engine_batch");
	TCase *tc = tcase_create("batch");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, batch_send_enqueues_in_order);
	tcase_add_test(tc, batch_send_limits_inclusive);
	tcase_add_test(tc, batch_send_both_forms_refused);
	tcase_add_test(tc, batch_send_sizes_not_adding_up);
	tcase_add_test(tc, batch_send_with_answer_fields_refused);
	tcase_add_test(tc, batch_send_over_max_batch_refused);
	tcase_add_test(tc, batch_send_too_large_stores_nothing);
	tcase_add_test(tc, recv_max_bytes_bounds_the_answer);
	tcase_add_test(tc, recv_max_bytes_empty_messages);
	tcase_add_test(tc, recv_max_bytes_parked_receiver);
	tcase_add_test(tc, recv_max_bytes_bounded_with_blocked_sender);
	tcase_add_test(tc, recv_max_bytes_lease_mode);
	tcase_add_test(tc, recv_batch_answer_form);
	tcase_add_test(tc, recv_batch_answer_redelivered);
	tcase_add_test(tc, recv_batch_answer_idempotent_repeat);
	tcase_add_test(tc, big_payloads_keep_their_buffer_until_the_last_goes);
	tcase_add_test(tc, big_payloads_redelivered_then_deleted);
	tcase_add_test(tc, big_payload_among_small_ones_is_copied);
	suite_add_tcase(s, tc);
	tc = tcase_create("borrow_max_memory");
	tcase_add_checked_fixture(tc, setup_tight, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, big_payloads_copied_when_their_buffer_passes_max_memory);
	suite_add_tcase(s, tc);
	tc = tcase_create("answer_bound");
	tcase_add_checked_fixture(tc, setup_big, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, answer_bounded_to_64_mib);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	SRunner *sr = srunner_create(engine_batch_suite());
	int      nf;

	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (nf == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
