/*
 * test_lib.c - the shared lib/: the status list against SPEC's table, the
 * name rule, durations, and the capped decoding allocator.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <chan/status.h>

#include "duration.h"
#include "names.h"
#include "wire.h"

/* ---- statuses ----------------------------------------------------------- */

/* SPEC "Status codes", written out by hand on purpose: this is the check. */
static const struct {
	chan_status s;
	const char *name;
	int         exit_code;
} spec_statuses[] = {
	{ CHAN_OK, "OK", 0 },
	{ CHAN_INTERNAL, "INTERNAL", 70 },
	{ CHAN_TIMEOUT, "TIMEOUT", 2 },
	{ CHAN_EMPTY, "EMPTY", 3 },
	{ CHAN_FULL, "FULL", 4 },
	{ CHAN_CLOSED, "CLOSED", 5 },
	{ CHAN_NOT_FOUND, "NOT_FOUND", 6 },
	{ CHAN_BUSY, "BUSY", 7 },
	{ CHAN_ALREADY_EXISTS, "ALREADY_EXISTS", 8 },
	{ CHAN_TOO_LARGE, "TOO_LARGE", 9 },
	{ CHAN_PERMISSION_DENIED, "PERMISSION_DENIED", 10 },
	{ CHAN_RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED", 11 },
	{ CHAN_OUT_OF_RANGE, "OUT_OF_RANGE", 12 },
	{ CHAN_SHUTTING_DOWN, "SHUTTING_DOWN", 13 },
	{ CHAN_INVALID_ARGUMENT, "INVALID_ARGUMENT", 64 },
	{ CHAN_UNAVAILABLE, "UNAVAILABLE", 69 },
	{ CHAN_PROTOCOL, "PROTOCOL", 69 },
};
#define N_SPEC_STATUSES (sizeof(spec_statuses) / sizeof(spec_statuses[0]))

START_TEST(status_table_matches_spec)
{
	chan_status s = spec_statuses[_i].s;

	ck_assert_str_eq(chan_status_name(s), spec_statuses[_i].name);
	ck_assert_int_eq(chan_status_exit_code(s), spec_statuses[_i].exit_code);
	ck_assert_ptr_nonnull(chan_strerror(s));
	ck_assert_msg(strlen(chan_strerror(s)) > 0, "status %s has empty text",
	    spec_statuses[_i].name);
	ck_assert_msg(strcmp(chan_strerror(s), "unknown status") != 0,
	    "status %s has no text of its own", spec_statuses[_i].name);
}
END_TEST

START_TEST(status_list_is_complete)
{
	/* Every status the enum has is in SPEC's table, and only those. */
	ck_assert_int_eq((int) CHAN_STATUS_COUNT_, (int) N_SPEC_STATUSES);
	for (int s = 0; s < (int) CHAN_STATUS_COUNT_; s++) {
		int found = 0;
		for (size_t i = 0; i < N_SPEC_STATUSES; i++) {
			found += (int) spec_statuses[i].s == s;
		}
		ck_assert_msg(found == 1, "status %d (%s) listed %d times", s,
		    chan_status_name((chan_status) s), found);
	}
}
END_TEST

START_TEST(status_texts_distinct)
{
	for (int a = 0; a < (int) CHAN_STATUS_COUNT_; a++) {
		for (int b = a + 1; b < (int) CHAN_STATUS_COUNT_; b++) {
			ck_assert_str_ne(chan_strerror((chan_status) a),
			    chan_strerror((chan_status) b));
		}
	}
}
END_TEST

START_TEST(status_wire_numbers)
{
	/* The wire enum uses the same numbers (the proto's promise). */
	ck_assert_int_eq(CHAN__V1__STATUS__OK, CHAN_OK);
	ck_assert_int_eq(CHAN__V1__STATUS__TIMEOUT, CHAN_TIMEOUT);
	ck_assert_int_eq(CHAN__V1__STATUS__INVALID_ARGUMENT,
	    CHAN_INVALID_ARGUMENT);
	ck_assert_int_eq(CHAN__V1__STATUS__PROTOCOL, CHAN_PROTOCOL);
	/* The generated descriptor knows every value by the same name. */
	for (int s = 0; s < (int) CHAN_STATUS_COUNT_; s++) {
		const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
		    &chan__v1__status__descriptor, s);
		ck_assert_msg(v != NULL, "wire has no status %d", s);
		ck_assert_str_eq(v->name, chan_status_name((chan_status) s));
	}
}
END_TEST

START_TEST(status_out_of_range)
{
	ck_assert_str_eq(chan_status_name((chan_status) 999), "UNKNOWN");
	ck_assert_str_eq(chan_status_name((chan_status) -1), "UNKNOWN");
	ck_assert_int_eq(chan_status_exit_code((chan_status) 999), 70);
	ck_assert_int_eq(chan_status_exit_code(CHAN_STATUS_COUNT_), 70);
	ck_assert_ptr_nonnull(chan_strerror((chan_status) 999));
	ck_assert_ptr_nonnull(chan_strerror((chan_status) -5));
}
END_TEST

/* ---- names ---------------------------------------------------------------- */

static int
name_ok(const char *s)
{
	char err[256];

	return (chl_name_valid(s, strlen(s), err, sizeof(err)));
}

START_TEST(name_every_allowed_class)
{
	static const char all[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                          "abcdefghijklmnopqrstuvwxyz"
	                          "0123456789._:-";
	char err[256];

	ck_assert_msg(name_ok(all), "'%s' rejected", all);
	for (const char *p = all; *p != '\0'; p++) {
		char one[2] = { *p, '\0' };
		ck_assert_msg(chl_name_valid(one, 1, err, sizeof(err)),
		    "single '%s' rejected: %s", one, err);
	}
	ck_assert(name_ok("jobs"));
	ck_assert(name_ok("a.b_c:d-e"));
	ck_assert(name_ok("..."));
	ck_assert(name_ok("-"));
	ck_assert(name_ok("0"));
}
END_TEST

START_TEST(name_every_other_byte_rejected)
{
	char err[256];

	for (int c = 0; c < 256; c++) {
		char b = (char) c;
		int  allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		    c == ':' || c == '-';
		err[0] = '\0';
		ck_assert_msg(chl_name_valid(&b, 1, err, sizeof(err)) == allowed,
		    "byte 0x%02x: valid=%d, expected %d", c, !allowed,
		    allowed);
		if (!allowed) {
			ck_assert_msg(strstr(err, "[A-Za-z0-9._:-]") != NULL,
			    "message for byte 0x%02x lacks the rule: '%s'", c,
			    err);
		}
	}
}
END_TEST

START_TEST(name_length_limits)
{
	char buf[130], err[256];

	memset(buf, 'a', sizeof(buf));
	ck_assert(chl_name_valid(buf, 1, err, sizeof(err)));
	ck_assert_msg(chl_name_valid(buf, 128, err, sizeof(err)),
	    "128 bytes rejected: %s", err);
	err[0] = '\0';
	ck_assert(!chl_name_valid(buf, 129, err, sizeof(err)));
	ck_assert_msg(strstr(err, "128") != NULL, "no limit in '%s'", err);
	ck_assert_msg(strstr(err, "[A-Za-z0-9._:-]") != NULL,
	    "no rule in '%s'", err);
	ck_assert(!chl_name_valid(buf, 130, err, sizeof(err)));
}
END_TEST

START_TEST(name_empty_and_null)
{
	char err[256];

	err[0] = '\0';
	ck_assert(!chl_name_valid("", 0, err, sizeof(err)));
	ck_assert_msg(strstr(err, "[A-Za-z0-9._:-]") != NULL,
	    "no rule in '%s'", err);
	ck_assert(!chl_name_valid(NULL, 0, err, sizeof(err)));
	ck_assert(!chl_name_valid(NULL, 5, err, sizeof(err)));
	/* No message buffer: still a plain answer, no crash. */
	ck_assert(!chl_name_valid("", 0, NULL, 0));
	ck_assert(!chl_name_valid("a b", 3, NULL, 0));
	ck_assert(chl_name_valid("ab", 2, NULL, 0));
}
END_TEST

START_TEST(name_space_nul_utf8)
{
	char err[256];

	err[0] = '\0';
	ck_assert(!chl_name_valid("a b", 3, err, sizeof(err)));
	ck_assert_msg(strstr(err, "[A-Za-z0-9._:-]") != NULL,
	    "no rule in '%s'", err);

	/* An embedded NUL counts: the length is the name, not strlen. */
	err[0] = '\0';
	ck_assert(!chl_name_valid("ab\0cd", 5, err, sizeof(err)));
	ck_assert_msg(strstr(err, "0x00") != NULL, "no byte in '%s'", err);
	ck_assert(chl_name_valid("ab\0cd", 2, err, sizeof(err)));

	/* UTF-8 letters are not in the rule. */
	ck_assert(!name_ok("caf\xc3\xa9"));
	ck_assert(!name_ok("\xe2\x9c\x93"));
	ck_assert(!name_ok("a/b"));
	ck_assert(!name_ok("a\tb"));
	ck_assert(!name_ok("a\nb"));
	ck_assert(!name_ok("a*"));
	ck_assert(!name_ok("a,b"));
}
END_TEST

START_TEST(name_small_err_buffer)
{
	char err[8];

	memset(err, 'x', sizeof(err));
	ck_assert(!chl_name_valid("a b", 3, err, sizeof(err)));
	ck_assert_msg(memchr(err, '\0', sizeof(err)) != NULL,
	    "message not NUL-terminated within its buffer");
}
END_TEST

/* ---- durations -------------------------------------------------------------- */

static void
dur_is(const char *s, int64_t want)
{
	char    err[256] = "";
	int64_t ms = -12345;

	ck_assert_msg(chl_duration_parse(s, &ms, err, sizeof(err)),
	    "'%s' rejected: %s", s, err);
	ck_assert_msg(ms == want, "'%s' parsed to %lld ms, expected %lld", s,
	    (long long) ms, (long long) want);
}

static void
dur_bad(const char *s)
{
	char    err[256] = "";
	int64_t ms = -12345;

	ck_assert_msg(!chl_duration_parse(s, &ms, err, sizeof(err)),
	    "'%s' accepted as %lld ms", s == NULL ? "(null)" : s,
	    (long long) ms);
	ck_assert_msg(strlen(err) > 0, "no message for bad '%s'",
	    s == NULL ? "(null)" : s);
	ck_assert_msg(ms == -12345, "'%s' rejected but wrote %lld",
	    s == NULL ? "(null)" : s, (long long) ms);
}

START_TEST(duration_units)
{
	dur_is("250ms", 250);
	dur_is("2s", 2000);
	dur_is("1.5s", 1500);
	dur_is("1m", 60000);
	dur_is("1h", 3600000);
	dur_is("0", 0);
	dur_is("0s", 0);
	dur_is("0ms", 0);
	dur_is("1ms", 1);
	dur_is("90m", 5400000);
	dur_is("2.5m", 150000);
	dur_is("0.25h", 900000);
}
END_TEST

START_TEST(duration_bare_number_is_seconds)
{
	dur_is("5", 5000);
	dur_is("1.5", 1500);
	dur_is("0.001", 1);
	dur_is("0.25", 250);
	dur_is("007", 7000);
	dur_is(".5", 500);
	dur_is("3.", 3000);
}
END_TEST

START_TEST(duration_rounding)
{
	/* Nearest millisecond. */
	dur_is("0.0004", 0);
	dur_is("0.0006", 1);
	dur_is("1.2345s", 1235);
	dur_is("0.5ms", 1);
	dur_is("0.4ms", 0);
	dur_is("1.000000000001", 1000);
}
END_TEST

START_TEST(duration_junk)
{
	dur_bad("");
	dur_bad(NULL);
	dur_bad("abc");
	dur_bad("s");
	dur_bad("ms");
	dur_bad(".");
	dur_bad("1x");
	dur_bad("1 s");
	dur_bad(" 1s");
	dur_bad("1s ");
	dur_bad("1sec");
	dur_bad("1S");
	dur_bad("1.5.2");
	dur_bad("1e3");
	dur_bad("+1s");
	dur_bad("1s2");
	dur_bad("1d");
	dur_bad("1us");
	dur_bad("0x10");
}
END_TEST

START_TEST(duration_negative)
{
	dur_bad("-1");
	dur_bad("-1s");
	dur_bad("-250ms");
	dur_bad("-0");
}
END_TEST

START_TEST(duration_overflow)
{
	char buf[64];

	/* INT64_MAX ms itself is fine, one more is not. */
	dur_is("9223372036854775807ms", INT64_MAX);
	dur_bad("9223372036854775808ms");
	dur_bad("99999999999999999999999999ms");
	dur_bad("9223372036854775807s");
	dur_bad("9223372036854775807h");
	dur_bad("18446744073709551616");
	/* The largest whole number of seconds that fits, and one past it. */
	snprintf(buf, sizeof(buf), "%llds", (long long) (INT64_MAX / 1000));
	dur_is(buf, (INT64_MAX / 1000) * 1000);
	snprintf(buf, sizeof(buf), "%llds", (long long) (INT64_MAX / 1000) + 1);
	dur_bad(buf);
	/* Fraction pushing past the limit. */
	dur_bad("9223372036854775807.9ms");
}
END_TEST

START_TEST(duration_message_names_input)
{
	char    err[256] = "";
	int64_t ms;

	ck_assert(!chl_duration_parse("12parsecs", &ms, err, sizeof(err)));
	ck_assert_msg(strstr(err, "12parsecs") != NULL,
	    "message does not name the input: '%s'", err);
	ck_assert_msg(strstr(err, "250ms") != NULL,
	    "message gives no example: '%s'", err);
	/* No message buffer: no crash. */
	ck_assert(!chl_duration_parse("junk", &ms, NULL, 0));
}
END_TEST

/* ---- capped allocator and decoding --------------------------------------------- */

/* Packs a Send request of n payload bytes; caller frees *out. */
static size_t
pack_send(const char *name, size_t n, uint8_t **out)
{
	Chan__V1__Request req = CHAN__V1__REQUEST__INIT;
	Chan__V1__Send    snd = CHAN__V1__SEND__INIT;
	ProtobufCBinaryData data;
	size_t len;

	data.len = n;
	data.data = malloc(n > 0 ? n : 1);
	ck_assert_ptr_nonnull(data.data);
	memset(data.data, 0xab, n);
	snd.name = (char *) name;
	snd.n_data = 1;
	snd.data = &data;
	snd.has_timeout_ms = 1;
	snd.timeout_ms = 250;
	req.has_id = 1;
	req.id = 42;
	req.op_case = CHAN__V1__REQUEST__OP_SEND;
	req.send = &snd;
	len = chan__v1__request__get_packed_size(&req);
	*out = malloc(len);
	ck_assert_ptr_nonnull(*out);
	ck_assert_uint_eq(chan__v1__request__pack(&req, *out), len);
	free(data.data);
	return (len);
}

START_TEST(capped_decode_within_cap)
{
	chl_capped_alloc   ca;
	Chan__V1__Request *r;
	uint8_t           *buf;
	size_t             len = pack_send("jobs", 1000, &buf);

	chl_capped_alloc_init(&ca, 64 * 1024);
	ck_assert_uint_eq(ca.used, 0);
	r = chl_request_decode(&ca, buf, len);
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(r->id, 42);
	ck_assert_int_eq(r->op_case, CHAN__V1__REQUEST__OP_SEND);
	ck_assert_str_eq(r->send->name, "jobs");
	ck_assert_uint_eq(r->send->n_data, 1);
	ck_assert_uint_eq(r->send->data[0].len, 1000);
	ck_assert_uint_eq(r->send->data[0].data[999], 0xab);
	ck_assert_int_eq(r->send->timeout_ms, 250);
	ck_assert_msg(ca.used >= 1000, "used %zu < payload 1000", ca.used);
	ck_assert_msg(ca.used <= ca.cap, "used %zu over cap %zu", ca.used,
	    ca.cap);
	chl_request_free(&ca, r);
	ck_assert_uint_eq(ca.used, 0);
	free(buf);
}
END_TEST

START_TEST(capped_decode_over_cap)
{
	chl_capped_alloc   ca;
	Chan__V1__Request *r;
	uint8_t           *buf;
	size_t             len = pack_send("jobs", 10000, &buf);

	/* A valid request whose decoded form needs more than the cap. */
	chl_capped_alloc_init(&ca, 4096);
	r = chl_request_decode(&ca, buf, len);
	ck_assert_ptr_null(r);
	ck_assert_msg(ca.used == 0, "failed decode left %zu bytes in use",
	    ca.used);
	/* The same bytes with room enough decode. */
	chl_capped_alloc_init(&ca, 1 << 20);
	r = chl_request_decode(&ca, buf, len);
	ck_assert_ptr_nonnull(r);
	chl_request_free(&ca, r);
	ck_assert_uint_eq(ca.used, 0);
	free(buf);
}
END_TEST

START_TEST(capped_decode_truncated)
{
	chl_capped_alloc   ca;
	Chan__V1__Request *r;
	uint8_t           *buf;
	size_t             len = pack_send("jobs", 300, &buf);

	chl_capped_alloc_init(&ca, 1 << 20);
	/* Every proper prefix that cuts into the Send is a bad body. */
	for (size_t cut = 1; cut < len; cut++) {
		r = chl_request_decode(&ca, buf, cut);
		if (r != NULL) {
			/* A cut exactly between top-level fields is valid. */
			ck_assert_msg(r->op_case != CHAN__V1__REQUEST__OP_SEND ||
			    r->send->n_data == 0 ||
			    r->send->data[0].len == 300,
			    "prefix %zu of %zu decoded a torn payload", cut,
			    len);
			chl_request_free(&ca, r);
		}
		ck_assert_msg(ca.used == 0, "prefix %zu left %zu bytes in use",
		    cut, ca.used);
	}
	/* Cutting inside the payload never decodes. */
	ck_assert_ptr_null(chl_request_decode(&ca, buf, len - 1));
	ck_assert_ptr_null(chl_request_decode(&ca, buf, len - 150));
	ck_assert_uint_eq(ca.used, 0);
	free(buf);
}
END_TEST

START_TEST(capped_decode_garbage)
{
	static const uint8_t junk1[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff };
	/* Field 15 (send), length-delimited, claiming 2^31 bytes. */
	static const uint8_t junk2[] = { 0x7a, 0x80, 0x80, 0x80, 0x80, 0x08,
		0x01 };
	/* Wire type 7 does not exist. */
	static const uint8_t junk3[] = { 0x0f, 0x00 };
	chl_capped_alloc ca;
	uint8_t          rnd[512];

	chl_capped_alloc_init(&ca, 1 << 20);
	ck_assert_ptr_null(chl_request_decode(&ca, junk1, sizeof(junk1)));
	ck_assert_ptr_null(chl_request_decode(&ca, junk2, sizeof(junk2)));
	ck_assert_ptr_null(chl_request_decode(&ca, junk3, sizeof(junk3)));
	ck_assert_ptr_null(chl_response_decode(&ca, junk1, sizeof(junk1)));
	ck_assert_uint_eq(ca.used, 0);
	/* Random bytes: decode or not, never leak budget, never crash. */
	srand(7);
	for (int i = 0; i < 2000; i++) {
		size_t n = (size_t) (rand() % (int) sizeof(rnd));
		for (size_t j = 0; j < n; j++) {
			rnd[j] = (uint8_t) rand();
		}
		Chan__V1__Request *r = chl_request_decode(&ca, rnd, n);
		chl_request_free(&ca, r);
		ck_assert_msg(ca.used == 0, "round %d left %zu bytes in use",
		    i, ca.used);
	}
}
END_TEST

START_TEST(capped_decode_empty_body)
{
	chl_capped_alloc   ca;
	Chan__V1__Request *r;

	/* Zero bytes is a valid (all-absent) Request: no op. The daemon
	 * answers that INVALID_ARGUMENT; decoding itself must succeed. */
	chl_capped_alloc_init(&ca, 4096);
	r = chl_request_decode(&ca, "", 0);
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(r->op_case, CHAN__V1__REQUEST__OP__NOT_SET);
	chl_request_free(&ca, r);
	ck_assert_uint_eq(ca.used, 0);
}
END_TEST

START_TEST(capped_response_roundtrip)
{
	Chan__V1__Response   resp = CHAN__V1__RESPONSE__INIT;
	Chan__V1__ValueResult val = CHAN__V1__VALUE_RESULT__INIT;
	chl_capped_alloc     ca;
	Chan__V1__Response  *r;
	uint8_t              buf[128];
	size_t               len;

	resp.has_id = 1;
	resp.id = 7;
	resp.has_status = 1;
	resp.status = CHAN__V1__STATUS__OUT_OF_RANGE;
	resp.error = "counter 'c' would overflow";
	resp.result_case = CHAN__V1__RESPONSE__RESULT_VALUE;
	val.has_value = 1;
	val.value = -5;
	resp.value = &val;
	len = chan__v1__response__pack(&resp, buf);
	chl_capped_alloc_init(&ca, 4096);
	r = chl_response_decode(&ca, buf, len);
	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(r->status, CHAN__V1__STATUS__OUT_OF_RANGE);
	ck_assert_str_eq(r->error, "counter 'c' would overflow");
	ck_assert_int_eq(r->value->value, -5);
	chl_response_free(&ca, r);
	ck_assert_uint_eq(ca.used, 0);
	/* Too small a budget for the same answer. */
	chl_capped_alloc_init(&ca, 16);
	ck_assert_ptr_null(chl_response_decode(&ca, buf, len));
	ck_assert_uint_eq(ca.used, 0);
}
END_TEST

/*
 * chl_packer writes RecvResult answers by hand: the bytes must be exactly
 * protobuf-c's, for every combination of optional fields and for values
 * whose varints need 1 to 10 bytes.
 */
static void
check_same_bytes(const Chan__V1__Response *r)
{
	chl_packer pk;
	size_t     want = chan__v1__response__get_packed_size(r);
	size_t     got = chl_packer_init(&pk, r, false);
	uint8_t   *a = malloc(want + 1), *b = malloc(got + 1);

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_uint_eq(got, want);
	ck_assert_uint_eq(chan__v1__response__pack(r, a), want);
	ck_assert_uint_eq(chl_packer_write(&pk, b), got);
	chl_packer_fini(&pk);
	ck_assert_msg(memcmp(a, b, want) == 0, "fast pack differs (%zu bytes)",
	    want);
	free(a);
	free(b);
}

START_TEST(fast_recv_pack_same_bytes)
{
	static const uint64_t big[] = { 0, 1, 127, 128, 16383, 16384,
		(1ULL << 35) + 3, UINT64_MAX };
	Chan__V1__Response  r = CHAN__V1__RESPONSE__INIT;
	Chan__V1__RecvResult rr = CHAN__V1__RECV_RESULT__INIT;
	Chan__V1__Message   ms[100], *mp[100]; /* past CHL_PACKER_SMALL */
	uint8_t             payload[300];
	unsigned            seed = 12345;

	memset(payload, 0xa5, sizeof(payload));
	r.result_case = CHAN__V1__RESPONSE__RESULT_RECV;
	r.recv = &rr;
	rr.messages = mp;
	/* No messages at all, then 1..64 with every field pattern. */
	check_same_bytes(&r);
	for (size_t n = 1; n <= 100; n++) {
		for (size_t i = 0; i < n; i++) {
			Chan__V1__Message init = CHAN__V1__MESSAGE__INIT;
			unsigned          bits = (unsigned) rand_r(&seed);

			ms[i] = init;
			mp[i] = &ms[i];
			if (bits & 1) {
				ms[i].channel = (bits & 2) ? "jobs" : "";
			}
			ms[i].has_seq = (bits & 4) != 0;
			ms[i].seq = big[(bits >> 3) % 8];
			ms[i].has_time_us = (bits & 64) != 0;
			ms[i].time_us = big[(bits >> 7) % 8];
			ms[i].has_data = (bits & 1024) != 0;
			ms[i].data.len = (bits >> 11) % (sizeof(payload) + 1);
			ms[i].data.data = payload;
			ms[i].has_redelivered = (bits & (1u << 20)) != 0;
			ms[i].redelivered = (bits & (1u << 21)) != 0;
		}
		rr.n_messages = n;
		r.has_id = (n % 2) == 0;
		r.id = big[n % 8];
		r.has_status = (n % 3) != 0;
		r.status = CHAN__V1__STATUS__OK;
		r.error = (n % 5) == 0 ? "some text" : NULL;
		r.has_delivery = (n % 7) != 0;
		r.delivery = big[(n / 2) % 8];
		check_same_bytes(&r);
	}
}
END_TEST

/* Other answers go through protobuf-c unchanged. */
START_TEST(fast_pack_other_answers)
{
	Chan__V1__Response    r = CHAN__V1__RESPONSE__INIT;
	Chan__V1__ValueResult v = CHAN__V1__VALUE_RESULT__INIT;

	r.has_id = true;
	r.id = 9;
	check_same_bytes(&r);
	v.has_value = true;
	v.value = -77;
	r.result_case = CHAN__V1__RESPONSE__RESULT_VALUE;
	r.value = &v;
	check_same_bytes(&r);
}
END_TEST

/* The arena gives every byte back at free, whatever the decode allocated. */
START_TEST(arena_decode_many_messages)
{
	Chan__V1__Request req = CHAN__V1__REQUEST__INIT;
	Chan__V1__Send    snd = CHAN__V1__SEND__INIT;
	ProtobufCBinaryData d[1024];
	uint8_t           payload[40], *buf;
	size_t            len;
	chl_capped_alloc  ca;
	Chan__V1__Request *r;

	memset(payload, 7, sizeof(payload));
	for (size_t i = 0; i < 1024; i++) {
		d[i].data = payload;
		d[i].len = i % sizeof(payload);
	}
	snd.name = "many";
	snd.n_data = 1024;
	snd.data = d;
	req.op_case = CHAN__V1__REQUEST__OP_SEND;
	req.send = &snd;
	len = chan__v1__request__get_packed_size(&req);
	buf = malloc(len);
	ck_assert_ptr_nonnull(buf);
	chan__v1__request__pack(&req, buf);
	chl_capped_alloc_init(&ca, 1 << 20);
	r = chl_request_decode(&ca, buf, len);
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(r->send->n_data, 1024);
	for (size_t i = 0; i < 1024; i++) {
		ck_assert_uint_eq(r->send->data[i].len, i % sizeof(payload));
	}
	ck_assert_uint_gt(ca.used, 0);
	chl_request_free(&ca, r);
	ck_assert_uint_eq(ca.used, 0);
	ck_assert_ptr_null(ca.blocks);
	/* Over the cap half way: nothing stays allocated. */
	chl_capped_alloc_init(&ca, 4096);
	ck_assert_ptr_null(chl_request_decode(&ca, buf, len));
	ck_assert_uint_eq(ca.used, 0);
	ck_assert_ptr_null(ca.blocks);
	free(buf);
}
END_TEST

/* ---- the hand decoders agree with protobuf-c ----------------------------- */

static uint8_t *
repack_req(const Chan__V1__Request *r, size_t *len)
{
	uint8_t *b;

	*len = chan__v1__request__get_packed_size(r);
	b = malloc(*len + 1);
	ck_assert_ptr_nonnull(b);
	chan__v1__request__pack(r, b);
	return (b);
}

static uint8_t *
repack_resp(const Chan__V1__Response *r, size_t *len)
{
	uint8_t *b;

	*len = chan__v1__response__get_packed_size(r);
	b = malloc(*len + 1);
	ck_assert_ptr_nonnull(b);
	chan__v1__response__pack(r, b);
	return (b);
}

/*
 * Whatever the fast request decoder accepts, protobuf-c accepts too and
 * decodes to the same message (compared by packing both). Returns whether
 * the fast path took it.
 */
static bool
same_request(const uint8_t *buf, size_t len)
{
	chl_capped_alloc   fa, ga;
	Chan__V1__Request *f, *g;
	uint8_t           *fb, *gb;
	size_t             fl, gl;

	chl_capped_alloc_init(&fa, 1 << 22);
	chl_capped_alloc_init(&ga, 1 << 22);
	f = chl_fast_request_decode(&fa, buf, len);
	g = chan__v1__request__unpack(&ga.base, len, buf);
	if (f == NULL) {
		chl_capped_alloc_release(&fa);
		chl_capped_alloc_release(&ga);
		return (false);
	}
	ck_assert_msg(g != NULL, "fast decode accepted what protobuf-c refuses");
	fb = repack_req(f, &fl);
	gb = repack_req(g, &gl);
	ck_assert_uint_eq(fl, gl);
	ck_assert_msg(memcmp(fb, gb, fl) == 0, "fast and protobuf-c decodes differ");
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

	chl_capped_alloc_init(&fa, 1 << 22);
	chl_capped_alloc_init(&ga, 1 << 22);
	f = chl_fast_response_decode(&fa, buf, len);
	g = chan__v1__response__unpack(&ga.base, len, buf);
	if (f == NULL) {
		chl_capped_alloc_release(&fa);
		chl_capped_alloc_release(&ga);
		return (false);
	}
	ck_assert_msg(g != NULL, "fast decode accepted what protobuf-c refuses");
	fb = repack_resp(f, &fl);
	gb = repack_resp(g, &gl);
	ck_assert_uint_eq(fl, gl);
	ck_assert_msg(memcmp(fb, gb, fl) == 0, "fast and protobuf-c decodes differ");
	free(fb);
	free(gb);
	chl_capped_alloc_release(&fa);
	chl_capped_alloc_release(&ga);
	return (true);
}

static const uint64_t wide[] = { 0, 1, 127, 128, 300, 1ULL << 32,
	(1ULL << 63) + 5, UINT64_MAX };

static uint8_t *
random_send(unsigned *seed, size_t *len)
{
	Chan__V1__Request   q = CHAN__V1__REQUEST__INIT;
	Chan__V1__Send      s = CHAN__V1__SEND__INIT;
	ProtobufCBinaryData d[40];
	uint64_t            conf[5];
	static uint8_t      payload[200];
	unsigned            bits = (unsigned) rand_r(seed);

	memset(payload, 0x3c, sizeof(payload));
	q.has_id = bits & 1;
	q.id = wide[(bits >> 1) % 8];
	q.has_client = (bits >> 4) & 1;
	q.client = wide[(bits >> 5) % 8];
	q.n_confirm = (bits >> 8) % 6;
	for (size_t i = 0; i < q.n_confirm; i++) {
		conf[i] = wide[(i + bits) % 8];
	}
	q.confirm = conf;
	s.name = (bits >> 11) & 1 ? "jobs.x" : NULL;
	s.n_data = (size_t) rand_r(seed) % 41;
	for (size_t i = 0; i < s.n_data; i++) {
		d[i].len = (size_t) rand_r(seed) % (sizeof(payload) + 1);
		d[i].data = payload;
	}
	s.data = d;
	s.has_timeout_ms = (bits >> 12) & 1;
	s.timeout_ms = (bits >> 13) & 1 ? -1 : (int64_t) wide[(bits >> 14) % 8] / 2;
	s.has_sender = (bits >> 17) & 1;
	s.sender = wide[(bits >> 18) % 8];
	q.op_case = CHAN__V1__REQUEST__OP_SEND;
	q.send = &s;
	return (repack_req(&q, len));
}

static uint8_t *
random_recv_answer(unsigned *seed, size_t *len)
{
	Chan__V1__Response   a = CHAN__V1__RESPONSE__INIT;
	Chan__V1__RecvResult rr = CHAN__V1__RECV_RESULT__INIT;
	Chan__V1__Message    ms[30], *mp[30];
	static uint8_t       payload[200];
	unsigned             bits = (unsigned) rand_r(seed);

	memset(payload, 0x5a, sizeof(payload));
	a.has_id = bits & 1;
	a.id = wide[(bits >> 1) % 8];
	a.has_status = (bits >> 4) & 1;
	a.status = (Chan__V1__Status) ((bits >> 5) % 17);
	a.error = (bits >> 10) & 1 ? "why" : NULL;
	a.has_delivery = (bits >> 11) & 1;
	a.delivery = wide[(bits >> 12) % 8];
	rr.n_messages = (size_t) rand_r(seed) % 31;
	for (size_t i = 0; i < rr.n_messages; i++) {
		Chan__V1__Message init = CHAN__V1__MESSAGE__INIT;
		unsigned          mb = (unsigned) rand_r(seed);

		ms[i] = init;
		mp[i] = &ms[i];
		ms[i].channel = mb & 1 ? "ch" : NULL;
		ms[i].has_seq = (mb >> 1) & 1;
		ms[i].seq = wide[(mb >> 2) % 8];
		ms[i].has_time_us = (mb >> 5) & 1;
		ms[i].time_us = wide[(mb >> 6) % 8];
		ms[i].has_data = (mb >> 9) & 1;
		ms[i].data.len = (mb >> 10) % (sizeof(payload) + 1);
		ms[i].data.data = payload;
		ms[i].has_redelivered = (mb >> 20) & 1;
		ms[i].redelivered = (mb >> 21) & 1;
	}
	rr.messages = mp;
	a.result_case = CHAN__V1__RESPONSE__RESULT_RECV;
	a.recv = &rr;
	return (repack_resp(&a, len));
}

START_TEST(fast_decode_matches_protobuf_c)
{
	unsigned seed = 777;
	int      fast_req = 0, fast_resp = 0;

	for (int i = 0; i < 2000; i++) {
		size_t   len;
		uint8_t *b = random_send(&seed, &len);

		/* Every well-formed Send takes the fast path. */
		ck_assert_msg(same_request(b, len), "a valid Send fell back");
		fast_req++;
		free(b);
		b = random_recv_answer(&seed, &len);
		ck_assert_msg(same_response(b, len), "a valid RecvResult fell back");
		fast_resp++;
		free(b);
	}
	ck_assert_int_eq(fast_req, 2000);
	ck_assert_int_eq(fast_resp, 2000);
}
END_TEST

/* Damaged input: the fast path either gives up or agrees with protobuf-c. */
START_TEST(fast_decode_damaged_input)
{
	unsigned seed = 4242;
	int      taken = 0, given_up = 0;

	for (int i = 0; i < 4000; i++) {
		size_t   len;
		uint8_t *b = (i & 1) ? random_send(&seed, &len) :
		    random_recv_answer(&seed, &len);
		int      flips = 1 + rand_r(&seed) % 3;

		if (len == 0) {
			free(b);
			continue;
		}
		for (int k = 0; k < flips; k++) {
			b[(size_t) rand_r(&seed) % len] ^= (uint8_t) (1 + rand_r(&seed) % 255);
		}
		if (rand_r(&seed) % 4 == 0) {
			len = (size_t) rand_r(&seed) % len; /* truncated */
		}
		if ((i & 1) ? same_request(b, len) : same_response(b, len)) {
			taken++;
		} else {
			given_up++;
		}
		free(b);
	}
	/* Both outcomes happen, so the comparison really ran. */
	ck_assert_int_gt(taken, 0);
	ck_assert_int_gt(given_up, 0);
}
END_TEST

/* Other ops are not the fast path's: protobuf-c decodes them. */
START_TEST(fast_decode_other_ops_fall_back)
{
	Chan__V1__Request q = CHAN__V1__REQUEST__INIT;
	Chan__V1__Recv    r = CHAN__V1__RECV__INIT;
	chl_capped_alloc  ca;
	Chan__V1__Request *d;
	uint8_t          *b;
	size_t            len;

	r.name = "jobs";
	q.op_case = CHAN__V1__REQUEST__OP_RECV;
	q.recv = &r;
	b = repack_req(&q, &len);
	chl_capped_alloc_init(&ca, 1 << 16);
	ck_assert_ptr_null(chl_fast_request_decode(&ca, b, len));
	chl_capped_alloc_release(&ca);
	d = chl_request_decode(&ca, b, len);
	ck_assert_ptr_nonnull(d);
	ck_assert_int_eq(d->op_case, CHAN__V1__REQUEST__OP_RECV);
	ck_assert_str_eq(d->recv->name, "jobs");
	chl_request_free(&ca, d);
	ck_assert_uint_eq(ca.used, 0);
	free(b);
}
END_TEST

/* A borrowed input: payloads point into it, and it is freed exactly once. */
static int borrow_frees;

static void
borrow_free(void *p)
{
	borrow_frees++;
	free(p);
}

START_TEST(arena_borrowed_input)
{
	unsigned           seed = 99;
	size_t             len;
	uint8_t           *b = random_send(&seed, &len), *copy;
	chl_capped_alloc   ca;
	Chan__V1__Request *r;

	/* A Send with payloads: decode it borrowed. */
	while (b != NULL) {
		chl_capped_alloc_init(&ca, 1 << 20);
		r = chl_fast_request_decode(&ca, b, len);
		if (r != NULL && r->send->n_data > 0 && r->send->data[0].len > 0) {
			chl_capped_alloc_release(&ca);
			break;
		}
		chl_capped_alloc_release(&ca);
		free(b);
		b = random_send(&seed, &len);
	}
	copy = malloc(len);
	ck_assert_ptr_nonnull(copy);
	memcpy(copy, b, len);
	borrow_frees = 0;
	chl_capped_alloc_init(&ca, 1 << 20);
	chl_capped_alloc_borrow(&ca, copy, borrow_free);
	r = chl_request_decode(&ca, copy, len);
	ck_assert_ptr_nonnull(r);
	ck_assert_msg(r->send->data[0].data >= copy && r->send->data[0].data < copy + len,
	    "a borrowed payload was copied");
	ck_assert_int_eq(borrow_frees, 0);
	chl_request_free(&ca, r);
	ck_assert_int_eq(borrow_frees, 1);
	/* A failed decode frees the input too, once. */
	copy = malloc(len);
	ck_assert_ptr_nonnull(copy);
	memset(copy, 0xff, len);
	chl_capped_alloc_init(&ca, 1 << 20);
	chl_capped_alloc_borrow(&ca, copy, borrow_free);
	ck_assert_ptr_null(chl_request_decode(&ca, copy, len));
	ck_assert_int_eq(borrow_frees, 2);
	ck_assert_uint_eq(ca.used, 0);
	free(b);
}
END_TEST

START_TEST(clocks_move_forward)
{
	int64_t  m1 = chl_now_mono_ms(), m2;
	uint64_t u = chl_now_unix_us();

	/* After 2020-01-01 and before 2100: a plausible Unix time in us. */
	ck_assert_msg(u > 1577836800ULL * 1000000ULL, "unix us %llu",
	    (unsigned long long) u);
	ck_assert_msg(u < 4102444800ULL * 1000000ULL, "unix us %llu",
	    (unsigned long long) u);
	m2 = chl_now_mono_ms();
	ck_assert_msg(m2 >= m1, "monotonic went back: %lld then %lld",
	    (long long) m1, (long long) m2);
}
END_TEST

static Suite *
lib_suite(void)
{
	Suite *s = suite_create("lib");
	TCase *tc;

	tc = tcase_create("status");
	tcase_add_loop_test(tc, status_table_matches_spec, 0,
	    (int) N_SPEC_STATUSES);
	tcase_add_test(tc, status_list_is_complete);
	tcase_add_test(tc, status_texts_distinct);
	tcase_add_test(tc, status_wire_numbers);
	tcase_add_test(tc, status_out_of_range);
	suite_add_tcase(s, tc);

	tc = tcase_create("names");
	tcase_add_test(tc, name_every_allowed_class);
	tcase_add_test(tc, name_every_other_byte_rejected);
	tcase_add_test(tc, name_length_limits);
	tcase_add_test(tc, name_empty_and_null);
	tcase_add_test(tc, name_space_nul_utf8);
	tcase_add_test(tc, name_small_err_buffer);
	suite_add_tcase(s, tc);

	tc = tcase_create("durations");
	tcase_add_test(tc, duration_units);
	tcase_add_test(tc, duration_bare_number_is_seconds);
	tcase_add_test(tc, duration_rounding);
	tcase_add_test(tc, duration_junk);
	tcase_add_test(tc, duration_negative);
	tcase_add_test(tc, duration_overflow);
	tcase_add_test(tc, duration_message_names_input);
	suite_add_tcase(s, tc);

	tc = tcase_create("wire");
	tcase_add_test(tc, capped_decode_within_cap);
	tcase_add_test(tc, capped_decode_over_cap);
	tcase_add_test(tc, capped_decode_truncated);
	tcase_add_test(tc, capped_decode_garbage);
	tcase_add_test(tc, capped_decode_empty_body);
	tcase_add_test(tc, capped_response_roundtrip);
	tcase_add_test(tc, fast_recv_pack_same_bytes);
	tcase_add_test(tc, fast_pack_other_answers);
	tcase_add_test(tc, arena_decode_many_messages);
	tcase_add_test(tc, fast_decode_matches_protobuf_c);
	tcase_add_test(tc, fast_decode_damaged_input);
	tcase_add_test(tc, fast_decode_other_ops_fall_back);
	tcase_add_test(tc, arena_borrowed_input);
	tcase_add_test(tc, clocks_move_forward);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	SRunner *sr = srunner_create(lib_suite());
	int      failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
