/*
 * test_wire_batch.c - the batch form on the wire (chan.v1.Batch, lib/
 * wire_batch.c): answers and sends packed in the batch form decode (with
 * protobuf-c and with the hand decoders) back to exactly what was packed,
 * the packers write protobuf-c's own bytes, chl_batch_check refuses every
 * inconsistent batch with a reason, and the hand decoders never accept
 * damaged batch-form input that protobuf-c reads differently.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

#define CAP (1u << 28)

/* ---- helpers --------------------------------------------------------------- */

/* Deterministic pseudo random numbers (xorshift64*), independent of libc. */
static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return (*s * 2685821657736338717ULL);
}

/* n engine-shaped messages (no channel, seq and time set) over pool. */
typedef struct msgset {
	size_t             n;
	Chan__V1__Message *ms;
	Chan__V1__Message **mp;
	uint8_t           *pool;
} msgset;

#define POOL 4096

static void
msgset_make(msgset *s, size_t n, uint64_t seed)
{
	uint64_t seq = 1000, t = 1700000000000000ULL;

	s->n = n;
	s->ms = calloc(n, sizeof(*s->ms));
	s->mp = calloc(n, sizeof(*s->mp));
	s->pool = malloc(POOL + 600);
	ck_assert_ptr_nonnull(s->ms);
	ck_assert_ptr_nonnull(s->mp);
	ck_assert_ptr_nonnull(s->pool);
	for (size_t i = 0; i < POOL + 600; i++) {
		s->pool[i] = (uint8_t) rnd(&seed);
	}
	for (size_t i = 0; i < n; i++) {
		Chan__V1__Message init = CHAN__V1__MESSAGE__INIT;
		uint64_t          r = rnd(&seed);
		size_t            len;

		s->ms[i] = init;
		s->mp[i] = &s->ms[i];
		/* A quarter empty, some big enough for 2-byte size varints. */
		switch (r % 4) {
		case 0:
			len = 0;
			break;
		case 1:
			len = 1 + (size_t) (r >> 8) % 16;
			break;
		case 2:
			len = (size_t) (r >> 8) % 600;
			break;
		default:
			len = 100 + (size_t) (r >> 8) % 200;
			break;
		}
		s->ms[i].has_data = len > 0 || (r & 0x100000) != 0;
		s->ms[i].data.len = len;
		s->ms[i].data.data = len > 0 ? s->pool + (r >> 20) % POOL : NULL;
		/* Mostly increasing; now and then a redelivered one from the past. */
		if ((r >> 40) % 10 == 0 && seq > 500) {
			seq -= 1 + (r >> 44) % 400;
			s->ms[i].has_redelivered = true;
			s->ms[i].redelivered = true;
		} else {
			seq += 1 + ((r >> 44) % 50 == 0 ? (r >> 50) : 0);
			if ((r >> 36) % 7 == 0) {
				/* Explicitly not redelivered. */
				s->ms[i].has_redelivered = true;
			}
		}
		s->ms[i].has_seq = true;
		s->ms[i].seq = seq;
		s->ms[i].has_time_us = true;
		/* Times go mostly up, sometimes back (clock steps). */
		t += (r >> 52) % 3 == 0 ? (uint64_t) -(int64_t) ((r >> 30) % 5000) : (r >> 30) % 100000;
		s->ms[i].time_us = i == 7 ? 0 : t; /* one at time 0 too */
	}
}

static void
msgset_free(msgset *s)
{
	free(s->ms);
	free(s->mp);
	free(s->pool);
}

/* The batch b expands back to exactly ms[0..n). */
static void
expect_batch_is(const Chan__V1__Batch *b, Chan__V1__Message *const *ms, size_t n)
{
	char     why[256] = "";
	uint64_t seq = 0, t = 0;
	size_t   off = 0, ri = 0;

	ck_assert_ptr_nonnull(b);
	ck_assert_msg(chl_batch_check(b, true, why, sizeof(why)), "check refused: %s", why);
	ck_assert_uint_eq(b->n_sizes, n);
	ck_assert_uint_eq(b->n_seq_deltas, n);
	ck_assert_uint_eq(b->n_time_deltas, n);
	for (size_t i = 0; i < n; i++) {
		size_t want = ms[i]->has_data ? ms[i]->data.len : 0;
		bool   redel = ms[i]->has_redelivered && ms[i]->redelivered;
		bool   got_redel;

		ck_assert_msg(b->sizes[i] == want, "message %zu: size %u, wanted %zu", i,
		    b->sizes[i], want);
		if (want > 0) {
			ck_assert_msg(memcmp(b->data.data + off, ms[i]->data.data, want) == 0,
			    "message %zu: payload differs", i);
		}
		off += want;
		seq += (uint64_t) b->seq_deltas[i];
		t += (uint64_t) b->time_deltas[i];
		ck_assert_msg(seq == ms[i]->seq, "message %zu: seq %llu, wanted %llu", i,
		    (unsigned long long) seq, (unsigned long long) ms[i]->seq);
		ck_assert_msg(t == ms[i]->time_us, "message %zu: time %llu, wanted %llu", i,
		    (unsigned long long) t, (unsigned long long) ms[i]->time_us);
		got_redel = ri < b->n_redelivered && b->redelivered[ri] == i;
		ri += got_redel;
		ck_assert_msg(got_redel == redel, "message %zu: redelivered %d, wanted %d", i,
		    got_redel, redel);
	}
	ck_assert_uint_eq(ri, b->n_redelivered);
	ck_assert_uint_eq(off, b->has_data ? b->data.len : 0);
}

static uint8_t *
pack_answer(const Chan__V1__Response *r, bool batch, size_t *len)
{
	chl_packer pk;
	size_t     n = chl_packer_init(&pk, r, batch);
	uint8_t   *buf = malloc(n + 1);

	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(chl_packer_write(&pk, buf), n);
	chl_packer_fini(&pk);
	*len = n;
	return (buf);
}

static uint8_t *
repack_resp(const Chan__V1__Response *r, size_t *len)
{
	uint8_t *b;

	*len = chan__v1__response__get_packed_size(r);
	b = malloc(*len + 1);
	ck_assert_ptr_nonnull(b);
	ck_assert_uint_eq(chan__v1__response__pack(r, b), *len);
	return (b);
}

static uint8_t *
repack_req(const Chan__V1__Request *r, size_t *len)
{
	uint8_t *b;

	*len = chan__v1__request__get_packed_size(r);
	b = malloc(*len + 1);
	ck_assert_ptr_nonnull(b);
	ck_assert_uint_eq(chan__v1__request__pack(r, b), *len);
	return (b);
}

static void
expect_same_bytes(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, const char *what)
{
	ck_assert_msg(alen == blen, "%s: %zu bytes against %zu", what, alen, blen);
	for (size_t i = 0; i < alen; i++) {
		ck_assert_msg(a[i] == b[i], "%s: byte %zu differs (%02x, %02x)", what, i, a[i], b[i]);
	}
}

static void
answer_init(Chan__V1__Response *r, Chan__V1__RecvResult *rr, msgset *s)
{
	Chan__V1__Response   ri = CHAN__V1__RESPONSE__INIT;
	Chan__V1__RecvResult rri = CHAN__V1__RECV_RESULT__INIT;

	*r = ri;
	*rr = rri;
	r->has_id = true;
	r->id = 77777;
	r->has_status = true;
	r->status = CHAN__V1__STATUS__OK;
	r->has_delivery = true;
	r->delivery = 0x123456789aULL;
	r->result_case = CHAN__V1__RESPONSE__RESULT_RECV;
	r->recv = rr;
	rr->messages = s->mp;
	rr->n_messages = s->n;
}

/* ---- answers ------------------------------------------------------------- */

static const size_t answer_ns[] = { 1, 2, 100, 8192 };

START_TEST(answer_roundtrip)
{
	size_t                n = answer_ns[_i];
	msgset                s;
	Chan__V1__Response    r, *g, *f;
	Chan__V1__RecvResult  rr;
	chl_capped_alloc      ga, fa;
	uint8_t              *buf, *gb, *fb;
	size_t                len, gl, fl;

	msgset_make(&s, n, 0x9e3779b97f4a7c15ULL + n);
	answer_init(&r, &rr, &s);
	buf = pack_answer(&r, true, &len);
	/* The point of the form: many messages take fewer bytes. */
	if (n >= 100) {
		ck_assert_uint_lt(len, chan__v1__response__get_packed_size(&r));
	}

	chl_capped_alloc_init(&ga, CAP);
	g = chan__v1__response__unpack(&ga.base, len, buf);
	ck_assert_msg(g != NULL, "protobuf-c refuses the batch-form answer");
	ck_assert_uint_eq(g->id, 77777);
	ck_assert_uint_eq(g->delivery, 0x123456789aULL);
	ck_assert_int_eq(g->result_case, CHAN__V1__RESPONSE__RESULT_RECV);
	ck_assert_uint_eq(g->recv->n_messages, 0);
	expect_batch_is(g->recv->batch, s.mp, n);
	/* The packer writes the fields in protobuf-c's order: same bytes. */
	gb = repack_resp(g, &gl);
	expect_same_bytes(buf, len, gb, gl, "protobuf-c repack of a batch answer");

	/* The hand decoder takes it, and reads the same. */
	chl_capped_alloc_init(&fa, CAP);
	f = chl_fast_response_decode(&fa, buf, len);
	ck_assert_msg(f != NULL, "a valid batch answer missed the fast path");
	expect_batch_is(f->recv->batch, s.mp, n);
	fb = repack_resp(f, &fl);
	expect_same_bytes(buf, len, fb, fl, "fast-decoded batch answer");
	chl_response_free(&fa, f);
	free(fb);

	chl_capped_alloc_init(&fa, CAP);
	f = chl_response_decode(&fa, buf, len);
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(f->recv->n_messages, 0);
	expect_batch_is(f->recv->batch, s.mp, n);
	chl_response_free(&fa, f);
	ck_assert_uint_eq(fa.used, 0);

	chan__v1__response__free_unpacked(g, &ga.base);
	chl_capped_alloc_release(&ga);
	free(gb);
	free(buf);
	msgset_free(&s);
}
END_TEST

/* batch=false still writes protobuf-c's list form for the same messages. */
START_TEST(answer_batch_false_is_list_form)
{
	msgset               s;
	Chan__V1__Response   r;
	Chan__V1__RecvResult rr;
	uint8_t             *a, *b;
	size_t               al, bl;

	msgset_make(&s, 100, 42);
	answer_init(&r, &rr, &s);
	a = pack_answer(&r, false, &al);
	b = repack_resp(&r, &bl);
	expect_same_bytes(a, al, b, bl, "list form");
	free(a);
	free(b);
	msgset_free(&s);
}
END_TEST

/*
 * Messages the engine would not build for a plain Recv (a channel name, a
 * seq or time missing: RecvAny, or anything else) stay in the list form,
 * byte for byte protobuf-c's, whatever the asker wanted.
 */
START_TEST(answer_not_engine_shape_is_list_form)
{
	msgset               s;
	Chan__V1__Response   r;
	Chan__V1__RecvResult rr;
	uint8_t             *a, *b;
	size_t               al, bl;

	for (int v = 0; v < 5; v++) {
		msgset_make(&s, 10, 7 + (uint64_t) v);
		answer_init(&r, &rr, &s);
		switch (v) {
		case 0:
			s.ms[3].channel = "jobs";
			break;
		case 1:
			s.ms[9].has_seq = false;
			break;
		case 2:
			s.ms[0].has_time_us = false;
			break;
		case 3:
			s.ms[5].channel = ""; /* an empty name is still a name */
			break;
		default:
			rr.n_messages = 0; /* no messages: nothing to batch */
			break;
		}
		ck_assert(!chl_batch_fits_msgs(s.mp, rr.n_messages));
		a = pack_answer(&r, true, &al);
		b = repack_resp(&r, &bl);
		expect_same_bytes(a, al, b, bl, "not engine shaped");
		free(a);
		free(b);
		msgset_free(&s);
	}
	/* And the shape the engine builds fits. */
	msgset_make(&s, 10, 99);
	ck_assert(chl_batch_fits_msgs(s.mp, s.n));
	msgset_free(&s);
}
END_TEST

/* ---- requests ------------------------------------------------------------ */

static const size_t request_ns[] = { 1, 3, 100, 8192 };

static void
request_init(Chan__V1__Request *q, Chan__V1__Send *sd, ProtobufCBinaryData *d, size_t n,
    uint8_t *pool, uint64_t seed)
{
	static uint64_t    confirm[] = { 1, 300, 1ULL << 40 };
	Chan__V1__Request  qi = CHAN__V1__REQUEST__INIT;
	Chan__V1__Send     si = CHAN__V1__SEND__INIT;

	*q = qi;
	*sd = si;
	for (size_t i = 0; i < POOL + 600; i++) {
		pool[i] = (uint8_t) rnd(&seed);
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t r = rnd(&seed);

		d[i].len = r % 3 == 0 ? 0 : (size_t) (r >> 8) % 500;
		d[i].data = d[i].len > 0 ? pool + (r >> 20) % POOL : NULL;
	}
	q->has_id = true;
	q->id = 123456789;
	q->has_client = true;
	q->client = 0xfeedfacecafebeefULL;
	q->confirm = confirm;
	q->n_confirm = 3;
	sd->name = "jobs.batch";
	sd->data = d;
	sd->n_data = n;
	sd->has_timeout_ms = true;
	sd->timeout_ms = -1;
	sd->has_sender = true;
	sd->sender = 99;
	q->op_case = CHAN__V1__REQUEST__OP_SEND;
	q->send = sd;
}

static void
expect_send_is(chl_capped_alloc *ca, Chan__V1__Send *got, const ProtobufCBinaryData *d, size_t n)
{
	char why[256] = "";

	ck_assert_str_eq(got->name, "jobs.batch");
	ck_assert(got->has_timeout_ms);
	ck_assert_int_eq(got->timeout_ms, -1);
	ck_assert(got->has_sender);
	ck_assert_uint_eq(got->sender, 99);
	ck_assert_uint_eq(got->n_data, 0);
	ck_assert_ptr_nonnull(got->batch);
	ck_assert_msg(chl_batch_check(got->batch, false, why, sizeof(why)), "%s", why);
	ck_assert_msg(chl_send_unbatch(ca, got, why, sizeof(why)), "unbatch: %s", why);
	ck_assert_ptr_null(got->batch);
	ck_assert_uint_eq(got->n_data, n);
	for (size_t i = 0; i < n; i++) {
		ck_assert_msg(got->data[i].len == d[i].len, "payload %zu: %zu bytes, wanted %zu", i,
		    got->data[i].len, d[i].len);
		if (d[i].len > 0) {
			ck_assert_msg(memcmp(got->data[i].data, d[i].data, d[i].len) == 0,
			    "payload %zu differs", i);
		}
	}
	/* No batch any more: unbatch again is a no-op that succeeds. */
	ck_assert(chl_send_unbatch(ca, got, why, sizeof(why)));
	ck_assert_uint_eq(got->n_data, n);
}

START_TEST(request_roundtrip)
{
	size_t               n = request_ns[_i];
	ProtobufCBinaryData *d = calloc(n, sizeof(*d));
	uint8_t             *pool = malloc(POOL + 600), *buf, *gb, *lb;
	Chan__V1__Request    q, *g, *f;
	Chan__V1__Send       sd;
	chl_capped_alloc     ga, fa;
	size_t               len, gl, ll;
	chl_batch_layout     lay;
	uint8_t             *nolay;

	ck_assert_ptr_nonnull(d);
	ck_assert_ptr_nonnull(pool);
	request_init(&q, &sd, d, n, pool, 0xabcdef + n);
	/* With the size pass's layout handed on, and without: same bytes. */
	len = chl_request_packed_size(&q, true, &lay);
	ck_assert_uint_eq(chl_request_packed_size(&q, true, NULL), len);
	buf = malloc(len + 1);
	nolay = malloc(len + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_ptr_nonnull(nolay);
	ck_assert_uint_eq(chl_request_pack(&q, true, &lay, buf), len);
	ck_assert_uint_eq(chl_request_pack(&q, true, NULL, nolay), len);
	ck_assert_mem_eq(buf, nolay, len);
	free(nolay);

	chl_capped_alloc_init(&ga, CAP);
	g = chan__v1__request__unpack(&ga.base, len, buf);
	ck_assert_msg(g != NULL, "protobuf-c refuses the batch-form request");
	ck_assert_uint_eq(g->id, 123456789);
	ck_assert_uint_eq(g->client, 0xfeedfacecafebeefULL);
	ck_assert_uint_eq(g->n_confirm, 3);
	ck_assert_uint_eq(g->confirm[2], 1ULL << 40);
	ck_assert_int_eq(g->op_case, CHAN__V1__REQUEST__OP_SEND);
	gb = repack_req(g, &gl);
	expect_same_bytes(buf, len, gb, gl, "protobuf-c repack of a batch send");
	expect_send_is(&ga, g->send, d, n);

	chl_capped_alloc_init(&fa, CAP);
	f = chl_fast_request_decode(&fa, buf, len);
	ck_assert_msg(f != NULL, "a valid batch send missed the fast path");
	ck_assert_uint_eq(f->n_confirm, 3);
	expect_send_is(&fa, f->send, d, n);
	chl_request_free(&fa, f);

	chl_capped_alloc_init(&fa, CAP);
	f = chl_request_decode(&fa, buf, len);
	ck_assert_ptr_nonnull(f);
	expect_send_is(&fa, f->send, d, n);
	chl_request_free(&fa, f);
	ck_assert_uint_eq(fa.used, 0);

	/* batch=false: exactly protobuf-c's bytes. */
	ll = chl_request_packed_size(&q, false, NULL);
	ck_assert_uint_eq(ll, chan__v1__request__get_packed_size(&q));
	lb = malloc(ll + 1);
	ck_assert_ptr_nonnull(lb);
	ck_assert_uint_eq(chl_request_pack(&q, false, NULL, lb), ll);
	free(gb);
	gb = repack_req(&q, &gl);
	expect_same_bytes(lb, ll, gb, gl, "batch=false request");

	chan__v1__request__free_unpacked(g, &ga.base);
	chl_capped_alloc_release(&ga);
	free(lb);
	free(gb);
	free(buf);
	free(pool);
	free(d);
}
END_TEST

/*
 * A producer writes its payloads from where they lie: the gathered pack
 * with the payloads put in at its split is byte for byte the whole pack.
 */
START_TEST(request_gather_same_bytes)
{
	size_t               n = request_ns[_i];
	ProtobufCBinaryData *d = calloc(n, sizeof(*d));
	uint8_t             *pool = malloc(POOL + 600), *whole, *part, *joined, *p;
	Chan__V1__Request    q;
	Chan__V1__Send       sd;
	chl_batch_layout     lay;
	size_t               len, plen, split = 0, data = 0;

	ck_assert_ptr_nonnull(d);
	ck_assert_ptr_nonnull(pool);
	request_init(&q, &sd, d, n, pool, 0x5eed + n);
	len = chl_request_packed_size(&q, true, &lay);
	for (size_t i = 0; i < n; i++) {
		data += d[i].len;
	}
	ck_assert_uint_eq(lay.data, data);
	whole = malloc(len);
	part = malloc(len);
	joined = malloc(len);
	ck_assert_ptr_nonnull(whole);
	ck_assert_ptr_nonnull(part);
	ck_assert_ptr_nonnull(joined);
	ck_assert_uint_eq(chl_request_pack(&q, true, &lay, whole), len);
	plen = chl_request_pack_gather(&q, &lay, part, &split);
	ck_assert_uint_eq(plen, len - data);
	ck_assert_uint_le(split, plen);
	memcpy(joined, part, split);
	p = joined + split;
	for (size_t i = 0; i < n; i++) {
		if (d[i].len > 0) {
			memcpy(p, d[i].data, d[i].len);
			p += d[i].len;
		}
	}
	memcpy(p, part + split, plen - split);
	expect_same_bytes(whole, len, joined, len, "gathered request");
	free(joined);
	free(part);
	free(whole);
	free(pool);
	free(d);
}
END_TEST

/* Not a Send with payloads: nothing to gather, 0. */
START_TEST(request_gather_refuses_other_ops)
{
	Chan__V1__Request q = CHAN__V1__REQUEST__INIT;
	Chan__V1__Send    sd = CHAN__V1__SEND__INIT;
	uint8_t           out[256];
	size_t            split = 7;

	q.op_case = CHAN__V1__REQUEST__OP_PING;
	ck_assert_uint_eq(chl_request_pack_gather(&q, NULL, out, &split), 0);
	sd.name = "empty";
	q.op_case = CHAN__V1__REQUEST__OP_SEND;
	q.send = &sd;
	ck_assert_uint_eq(chl_request_pack_gather(&q, NULL, out, &split), 0);
	ck_assert_uint_eq(split, 7);
}
END_TEST

/* Requests that are not a Send, or a Send without data, go as they are. */
START_TEST(request_other_ops_unchanged)
{
	Chan__V1__Request q = CHAN__V1__REQUEST__INIT;
	Chan__V1__Send    sd = CHAN__V1__SEND__INIT;
	Chan__V1__Recv    rv = CHAN__V1__RECV__INIT;
	uint8_t          *a, *b;
	size_t            al, bl;

	q.has_id = true;
	q.id = 5;
	rv.name = "x";
	rv.has_batch = rv.batch = true;
	rv.has_max_bytes = true;
	rv.max_bytes = 1 << 20;
	q.op_case = CHAN__V1__REQUEST__OP_RECV;
	q.recv = &rv;
	for (int v = 0; v < 2; v++) {
		al = chl_request_packed_size(&q, true, NULL);
		a = malloc(al + 1);
		ck_assert_uint_eq(chl_request_pack(&q, true, NULL, a), al);
		b = repack_req(&q, &bl);
		expect_same_bytes(a, al, b, bl, v == 0 ? "recv" : "empty send");
		free(a);
		free(b);
		sd.name = "x";
		q.op_case = CHAN__V1__REQUEST__OP_SEND;
		q.send = &sd;
	}
}
END_TEST

/* ---- refusals -------------------------------------------------------------- */

static void
expect_refused(const Chan__V1__Batch *b, bool answer, const char *what)
{
	char why[256] = "";

	ck_assert_msg(!chl_batch_check(b, answer, why, sizeof(why)), "%s: accepted", what);
	ck_assert_msg(why[0] != '\0', "%s: refused without a message", what);
}

static void
expect_accepted(const Chan__V1__Batch *b, bool answer, const char *what)
{
	char why[256] = "";

	ck_assert_msg(chl_batch_check(b, answer, why, sizeof(why)), "%s: refused: %s", what, why);
}

START_TEST(batch_check_refusals)
{
	Chan__V1__Batch b = CHAN__V1__BATCH__INIT, init = CHAN__V1__BATCH__INIT;
	uint32_t        sizes[3] = { 2, 0, 3 }, big[2] = { UINT32_MAX, 6 };
	uint32_t        redel[2];
	int64_t         seqs[3] = { 5, 1, 1 }, times[3] = { 10, 0, -2 };
	uint8_t         data[5] = "abcde";

	/* The valid baseline, both ways. */
	b.has_data = true;
	b.data.data = data;
	b.data.len = 5;
	b.sizes = sizes;
	b.n_sizes = 3;
	expect_accepted(&b, false, "a valid send batch");
	expect_accepted(&b, true, "an answer without deltas");
	b.seq_deltas = seqs;
	b.n_seq_deltas = 3;
	b.time_deltas = times;
	b.n_time_deltas = 3;
	expect_accepted(&b, true, "a valid answer batch");

	/* No sizes at all (data or not). */
	b = init;
	expect_refused(&b, false, "no sizes, no data");
	expect_refused(&b, true, "no sizes, no data (answer)");
	b.has_data = true;
	b.data.data = data;
	b.data.len = 5;
	expect_refused(&b, false, "data without sizes");

	/* Sizes adding up to more / less than the data. */
	b.sizes = sizes;
	b.n_sizes = 3;
	b.data.len = 4;
	expect_refused(&b, false, "sizes add up to more");
	expect_refused(&b, true, "sizes add up to more (answer)");
	b.data.len = 5;
	b.n_sizes = 2;
	expect_refused(&b, false, "sizes add up to less");
	b.has_data = false;
	b.data.len = 0;
	b.n_sizes = 3;
	expect_refused(&b, false, "sizes without data");
	/* A sum that wraps a 32-bit (or a naive) counter. */
	b.has_data = true;
	b.data.len = 5;
	b.sizes = big;
	b.n_sizes = 2;
	expect_refused(&b, false, "sizes overflowing 32 bits");

	/* A sent batch carries data and sizes only. */
	b = init;
	b.has_data = true;
	b.data.data = data;
	b.data.len = 5;
	b.sizes = sizes;
	b.n_sizes = 3;
	b.seq_deltas = seqs;
	b.n_seq_deltas = 3;
	expect_refused(&b, false, "a send batch with seq deltas");
	b.n_seq_deltas = 0;
	b.time_deltas = times;
	b.n_time_deltas = 3;
	expect_refused(&b, false, "a send batch with time deltas");
	b.n_time_deltas = 0;
	redel[0] = 1;
	b.redelivered = redel;
	b.n_redelivered = 1;
	expect_refused(&b, false, "a send batch with redelivered");
	expect_accepted(&b, true, "an answer with one redelivered");
	b.n_redelivered = 0;

	/* Answer deltas: one per message, or none. */
	b.seq_deltas = seqs;
	b.n_seq_deltas = 2;
	expect_refused(&b, true, "3 sizes and 2 seq deltas");
	b.n_seq_deltas = 3;
	b.time_deltas = times;
	b.n_time_deltas = 2;
	expect_refused(&b, true, "3 sizes and 2 time deltas");
	b.n_time_deltas = 3;
	expect_accepted(&b, true, "answer baseline again");

	/* Redelivered indices: in range, increasing. */
	redel[0] = 3;
	b.n_redelivered = 1;
	expect_refused(&b, true, "redelivered index out of range");
	redel[0] = 2;
	redel[1] = 1;
	b.n_redelivered = 2;
	expect_refused(&b, true, "redelivered not increasing");
	redel[1] = 2;
	expect_refused(&b, true, "redelivered repeated");
	redel[0] = 0;
	expect_accepted(&b, true, "redelivered 0, 2");
}
END_TEST

START_TEST(send_unbatch_refusals)
{
	Chan__V1__Send      s = CHAN__V1__SEND__INIT;
	Chan__V1__Batch     b = CHAN__V1__BATCH__INIT;
	ProtobufCBinaryData d[1] = { { 1, (uint8_t *) "z" } };
	uint32_t            sizes[2] = { 1, 2 };
	int64_t             seqs[2] = { 1, 1 };
	chl_capped_alloc    ca;
	char                why[256];

	chl_capped_alloc_init(&ca, 1 << 20);
	b.has_data = true;
	b.data.data = (uint8_t *) "abc";
	b.data.len = 3;
	b.sizes = sizes;
	b.n_sizes = 2;
	s.batch = &b;
	s.data = d;
	s.n_data = 1;
	why[0] = '\0';
	ck_assert(!chl_send_unbatch(&ca, &s, why, sizeof(why)));
	ck_assert_msg(why[0] != '\0', "both forms refused without a message");
	ck_assert_uint_eq(s.n_data, 1); /* untouched */
	ck_assert_ptr_eq(s.batch, &b);

	/* Inconsistent batch: refused with chl_batch_check's reason. */
	s.data = NULL;
	s.n_data = 0;
	b.data.len = 4;
	why[0] = '\0';
	ck_assert(!chl_send_unbatch(&ca, &s, why, sizeof(why)));
	ck_assert(why[0] != '\0');
	b.data.len = 3;
	b.seq_deltas = seqs;
	b.n_seq_deltas = 2;
	why[0] = '\0';
	ck_assert(!chl_send_unbatch(&ca, &s, why, sizeof(why)));
	ck_assert(why[0] != '\0');

	/* The good one: data points into the batch's bytes, in order. */
	b.n_seq_deltas = 0;
	ck_assert(chl_send_unbatch(&ca, &s, why, sizeof(why)));
	ck_assert_ptr_null(s.batch);
	ck_assert_uint_eq(s.n_data, 2);
	ck_assert_uint_eq(s.data[0].len, 1);
	ck_assert_ptr_eq(s.data[0].data, b.data.data);
	ck_assert_uint_eq(s.data[1].len, 2);
	ck_assert_ptr_eq(s.data[1].data, b.data.data + 1);
	chl_capped_alloc_release(&ca);
}
END_TEST

/* ---- damaged input: the hand decoders against protobuf-c ------------------ */

/*
 * Whatever a hand decoder accepts, protobuf-c accepts too and decodes the
 * same (both re-packed by protobuf-c). Returns whether the fast path took
 * it.
 */
static bool
same_request(const uint8_t *buf, size_t len)
{
	chl_capped_alloc   fa, ga;
	Chan__V1__Request *f, *g;
	uint8_t           *fb, *gb;
	size_t             fl, gl;

	chl_capped_alloc_init(&fa, 1 << 24);
	chl_capped_alloc_init(&ga, 1 << 24);
	f = chl_fast_request_decode(&fa, buf, len);
	g = chan__v1__request__unpack(&ga.base, len, buf);
	if (f == NULL) {
		chl_capped_alloc_release(&fa);
		chl_capped_alloc_release(&ga);
		return (false);
	}
	ck_assert_msg(g != NULL, "fast request decode accepted what protobuf-c refuses");
	fb = repack_req(f, &fl);
	gb = repack_req(g, &gl);
	expect_same_bytes(fb, fl, gb, gl, "fast and protobuf-c request decodes");
	free(fb);
	free(gb);
	chl_capped_alloc_release(&fa);
	chl_capped_alloc_release(&ga);
	return (true);
}

static bool
same_response(const uint8_t *buf, size_t len)
{
	chl_capped_alloc    fa, ga;
	Chan__V1__Response *f, *g;
	uint8_t            *fb, *gb;
	size_t              fl, gl;

	chl_capped_alloc_init(&fa, 1 << 24);
	chl_capped_alloc_init(&ga, 1 << 24);
	f = chl_fast_response_decode(&fa, buf, len);
	g = chan__v1__response__unpack(&ga.base, len, buf);
	if (f == NULL) {
		chl_capped_alloc_release(&fa);
		chl_capped_alloc_release(&ga);
		return (false);
	}
	ck_assert_msg(g != NULL, "fast response decode accepted what protobuf-c refuses");
	fb = repack_resp(f, &fl);
	gb = repack_resp(g, &gl);
	expect_same_bytes(fb, fl, gb, gl, "fast and protobuf-c response decodes");
	free(fb);
	free(gb);
	chl_capped_alloc_release(&fa);
	chl_capped_alloc_release(&ga);
	return (true);
}

/* One damaged copy of in[0..len) into out; returns its length. */
static size_t
damage(const uint8_t *in, size_t len, uint8_t *out, uint64_t *seed)
{
	uint64_t r = rnd(seed);
	size_t   at = (size_t) (r >> 8) % len, n;

	memcpy(out, in, len);
	switch (r % 6) {
	case 0: /* one byte set to anything */
		out[at] = (uint8_t) (r >> 40);
		return (len);
	case 1: /* one bit flipped */
		out[at] ^= (uint8_t) (1u << ((r >> 40) % 8));
		return (len);
	case 2: /* truncated */
		return (at);
	case 3: /* a range repeated in place (fields twice, lengths off) */
		n = 1 + (size_t) (r >> 40) % 16;
		if (at + n > len) {
			n = len - at;
		}
		memmove(out + at + n, in + at, len - at);
		memcpy(out + at + n, in + at, n);
		return (len + n);
	case 4: /* one byte removed */
		memmove(out + at, in + at + 1, len - at - 1);
		return (len - 1);
	default: /* a continuation bit set (varints run on) */
		out[at] |= 0x80;
		return (len);
	}
}

START_TEST(fast_decode_damaged_batch_input)
{
	msgset               s;
	Chan__V1__Response   r;
	Chan__V1__RecvResult rr;
	Chan__V1__Request    q;
	Chan__V1__Send       sd;
	ProtobufCBinaryData  d[6];
	uint8_t             *pool = malloc(POOL + 600), *ans, *req, *out;
	size_t               alen, qlen, fast = 0, total = 0;
	uint64_t             seed = 0x5eed5eedULL;

	ck_assert_ptr_nonnull(pool);
	/* Small inputs, so that damage hits every field's bytes. */
	msgset_make(&s, 6, 3);
	s.ms[2].has_redelivered = s.ms[2].redelivered = true;
	for (size_t i = 0; i < 6; i++) {
		if (s.ms[i].data.len > 20) {
			s.ms[i].data.len = 20;
		}
	}
	answer_init(&r, &rr, &s);
	ans = pack_answer(&r, true, &alen);
	request_init(&q, &sd, d, 6, pool, 11);
	for (size_t i = 0; i < 6; i++) {
		d[i].len %= 20;
		d[i].data = d[i].len > 0 ? pool : NULL;
	}
	qlen = chl_request_packed_size(&q, true, NULL);
	req = malloc(qlen + 1);
	ck_assert_ptr_nonnull(req);
	ck_assert_uint_eq(chl_request_pack(&q, true, NULL, req), qlen);
	ck_assert(same_response(ans, alen));
	ck_assert(same_request(req, qlen));

	out = malloc((alen > qlen ? alen : qlen) * 2 + 32);
	ck_assert_ptr_nonnull(out);
	for (int i = 0; i < 4000; i++) {
		size_t n;

		n = damage(ans, alen, out, &seed);
		fast += same_response(out, n);
		n = damage(req, qlen, out, &seed);
		fast += same_request(out, n);
		total += 2;
	}
	/* Some damage leaves valid input: the fast path must still see some. */
	ck_assert_msg(fast > 0, "no damaged variant took the fast path");
	ck_assert_msg(fast < total, "every damaged variant took the fast path");
	free(out);
	free(req);
	free(ans);
	free(pool);
	msgset_free(&s);
}
END_TEST

/*
 * Hand-made batch-form edge cases: fields twice, empty packed fields, a
 * size past 32 bits, deltas as unpacked varints. Whatever the fast decoder
 * does with them, it agrees with protobuf-c.
 */
START_TEST(fast_decode_batch_edge_cases)
{
	/* Response { recv(16) { batch(2) { ... } } } */
	static const struct {
		const char *what;
		uint8_t     b[40];
		size_t      len;
		bool        fast; /* must the fast path take it? */
	} cases[] = {
		{ "minimal", { 0x82, 0x01, 0x06, 0x12, 0x04, 0x0a, 0x00, 0x12, 0x00 }, 9, true },
		{ "one empty message", { 0x82, 0x01, 0x07, 0x12, 0x05, 0x0a, 0x00, 0x12, 0x01, 0x00 }, 10,
		    true },
		{ "sizes twice",
		    { 0x82, 0x01, 0x0a, 0x12, 0x08, 0x0a, 0x00, 0x12, 0x01, 0x00, 0x12, 0x01, 0x00 }, 13,
		    false },
		{ "batch twice",
		    { 0x82, 0x01, 0x0a, 0x12, 0x03, 0x12, 0x01, 0x00, 0x12, 0x03, 0x12, 0x01, 0x00 }, 13,
		    false },
		{ "size past 32 bits",
		    { 0x82, 0x01, 0x09, 0x12, 0x07, 0x12, 0x05, 0x80, 0x80, 0x80, 0x80, 0x10 }, 12, false },
		{ "unpacked seq delta",
		    { 0x82, 0x01, 0x07, 0x12, 0x05, 0x12, 0x01, 0x00, 0x18, 0x02 }, 10, false },
		{ "truncated varint in sizes",
		    { 0x82, 0x01, 0x06, 0x12, 0x04, 0x12, 0x02, 0x01, 0x80 }, 9, false },
		{ "unknown field in batch",
		    { 0x82, 0x01, 0x07, 0x12, 0x05, 0x12, 0x01, 0x00, 0x30, 0x01 }, 10, false },
		{ "messages and batch",
		    { 0x82, 0x01, 0x09, 0x0a, 0x02, 0x10, 0x01, 0x12, 0x03, 0x12, 0x01, 0x00 }, 12, true },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool took = same_response(cases[i].b, cases[i].len);

		if (cases[i].fast) {
			ck_assert_msg(took, "%s: missed the fast path", cases[i].what);
		}
	}
}
END_TEST

static Suite *
batch_suite(void)
{
	Suite *s = suite_create("wire_batch");
	TCase *tc;

	tc = tcase_create("answers");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, answer_roundtrip, 0, (int) (sizeof(answer_ns) / sizeof(answer_ns[0])));
	tcase_add_test(tc, answer_batch_false_is_list_form);
	tcase_add_test(tc, answer_not_engine_shape_is_list_form);
	suite_add_tcase(s, tc);

	tc = tcase_create("requests");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, request_roundtrip, 0,
	    (int) (sizeof(request_ns) / sizeof(request_ns[0])));
	tcase_add_loop_test(tc, request_gather_same_bytes, 0,
	    (int) (sizeof(request_ns) / sizeof(request_ns[0])));
	tcase_add_test(tc, request_gather_refuses_other_ops);
	tcase_add_test(tc, request_other_ops_unchanged);
	suite_add_tcase(s, tc);

	tc = tcase_create("refusals");
	tcase_add_test(tc, batch_check_refusals);
	tcase_add_test(tc, send_unbatch_refusals);
	suite_add_tcase(s, tc);

	tc = tcase_create("damaged");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, fast_decode_damaged_batch_input);
	tcase_add_test(tc, fast_decode_batch_edge_cases);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	SRunner *sr = srunner_create(batch_suite());
	int      failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
