/*
 * test_client_local.c - the CLI's pure logic (no daemon): base64, JSON and
 * plain message records, timestamps, number and operator parsing, and the
 * negative-number protection of `chan counter`.
 *
 * The CLI's helpers are compiled in from client/cli (on the include path).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "args.c"
#include "format.c"

static char *
b64(const char *s, size_t n)
{
	static char out[256];

	cli_b64_encode(s, n, out);
	return (out);
}

START_TEST(test_b64_rfc4648)
{
	/* RFC 4648 section 10 test vectors. */
	ck_assert_str_eq(b64("", 0), "");
	ck_assert_str_eq(b64("f", 1), "Zg==");
	ck_assert_str_eq(b64("fo", 2), "Zm8=");
	ck_assert_str_eq(b64("foo", 3), "Zm9v");
	ck_assert_str_eq(b64("foob", 4), "Zm9vYg==");
	ck_assert_str_eq(b64("fooba", 5), "Zm9vYmE=");
	ck_assert_str_eq(b64("foobar", 6), "Zm9vYmFy");
	ck_assert_str_eq(b64("\xff\xfe\x00", 3), "//4A");
	ck_assert_uint_eq(strlen(b64("fooba", 5)), CLI_B64_LEN(5));
}
END_TEST

START_TEST(test_time_rfc3339)
{
	char buf[40];

	cli_time_rfc3339(0, buf, sizeof(buf));
	ck_assert_str_eq(buf, "1970-01-01T00:00:00.000000Z");
	cli_time_rfc3339(1700000000123456ull, buf, sizeof(buf));
	ck_assert_str_eq(buf, "2023-11-14T22:13:20.123456Z");
}
END_TEST

static json_t *
record_json(const void *data, size_t len, bool redelivered)
{
	cli_record   r = { "q", 7, 1700000000000001ull, data, len, redelivered };
	size_t       n = 0;
	char        *line = cli_record_json(&r, &n);
	json_t      *o;
	json_error_t err;

	ck_assert_ptr_nonnull(line);
	ck_assert_uint_eq(n, strlen(line));
	ck_assert_int_eq(line[n - 1], '\n');
	ck_assert_ptr_null(memchr(line, '\n', n - 1)); /* one object, one line */
	o = json_loadb(line, n, JSON_ALLOW_NUL, &err);
	ck_assert_ptr_nonnull(o);
	free(line);
	return (o);
}

START_TEST(test_json_utf8_payload)
{
	json_t *o = record_json("h\xc3\xa9\n\"x", 6, false);

	ck_assert_str_eq(json_string_value(json_object_get(o, "channel")), "q");
	ck_assert_int_eq(json_integer_value(json_object_get(o, "seq")), 7);
	ck_assert_str_eq(json_string_value(json_object_get(o, "time")), "2023-11-14T22:13:20.000001Z");
	ck_assert_str_eq(json_string_value(json_object_get(o, "data")), "h\xc3\xa9\n\"x");
	ck_assert_ptr_null(json_object_get(o, "data_b64"));
	ck_assert_ptr_null(json_object_get(o, "redelivered"));
	json_decref(o);
}
END_TEST

START_TEST(test_json_binary_payload)
{
	json_t *o = record_json("\xff\xfe", 2, true);

	ck_assert_ptr_null(json_object_get(o, "data"));
	ck_assert_str_eq(json_string_value(json_object_get(o, "data_b64")), "//4=");
	ck_assert(json_is_true(json_object_get(o, "redelivered")));
	json_decref(o);

	/* Overlong encodings and lone surrogates are not UTF-8 either. */
	o = record_json("\xc0\xaf", 2, false);
	ck_assert_ptr_nonnull(json_object_get(o, "data_b64"));
	json_decref(o);
	o = record_json("\xed\xa0\x80", 3, false);
	ck_assert_ptr_nonnull(json_object_get(o, "data_b64"));
	json_decref(o);
}
END_TEST

START_TEST(test_json_empty_and_nul)
{
	json_t *o = record_json("", 0, false);
	json_t *d;

	ck_assert_str_eq(json_string_value(json_object_get(o, "data")), "");
	json_decref(o);
	o = record_json("a\0b", 3, false);
	d = json_object_get(o, "data");
	ck_assert_ptr_nonnull(d);
	ck_assert_uint_eq(json_string_length(d), 3);
	ck_assert_int_eq(memcmp(json_string_value(d), "a\0b", 3), 0);
	json_decref(o);
}
END_TEST

START_TEST(test_plain_records)
{
	cli_record r = { "chan1", 1, 0, "pay\nload", 8, false };
	size_t     n;
	char      *s;

	s = cli_record_plain(&r, NULL, '\n', &n);
	ck_assert_uint_eq(n, 9);
	ck_assert_int_eq(memcmp(s, "pay\nload\n", 9), 0);
	free(s);
	s = cli_record_plain(&r, r.channel, '\0', &n);
	ck_assert_uint_eq(n, 15);
	ck_assert_int_eq(memcmp(s, "chan1\tpay\nload\0", 15), 0);
	free(s);
	s = cli_record_plain(&r, "42", '\n', &n); /* recv --lease: SEQ TAB */
	ck_assert_uint_eq(n, 12);
	ck_assert_int_eq(memcmp(s, "42\tpay\nload\n", 12), 0);
	free(s);
	r.len = 0;
	s = cli_record_plain(&r, NULL, '\n', &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(s[0], '\n');
	free(s);
}
END_TEST

START_TEST(test_stat_json)
{
	chan_stat_info i;
	json_t        *o;
	char          *s;

	memset(&i, 0, sizeof(i));
	strcpy(i.name, "jobs");
	i.depth = 3;
	i.closed = true;
	s = cli_stat_json(&i);
	o = json_loads(s, 0, NULL);
	ck_assert_ptr_nonnull(o);
	ck_assert_str_eq(json_string_value(json_object_get(o, "capacity")), "unbounded");
	ck_assert_int_eq(json_integer_value(json_object_get(o, "depth")), 3);
	ck_assert(json_is_true(json_object_get(o, "closed")));
	json_decref(o);
	free(s);
	i.bounded = true;
	i.capacity = 0;
	s = cli_stat_json(&i);
	o = json_loads(s, 0, NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(o, "capacity")), 0);
	json_decref(o);
	free(s);
}
END_TEST

START_TEST(test_small_json)
{
	char   *s = cli_counter_json("lock", "old_value", -3);
	json_t *o = json_loads(s, 0, NULL);

	ck_assert_ptr_nonnull(o);
	ck_assert_str_eq(json_string_value(json_object_get(o, "name")), "lock");
	ck_assert_int_eq(json_integer_value(json_object_get(o, "old_value")), -3);
	json_decref(o);
	free(s);
	s = cli_cas_json("lock", false, INT64_MIN);
	o = json_loads(s, 0, NULL);
	ck_assert(json_is_false(json_object_get(o, "swapped")));
	ck_assert_int_eq(json_integer_value(json_object_get(o, "value")), INT64_MIN);
	json_decref(o);
	free(s);
	s = cli_ping_json(123, "v\"1");
	o = json_loads(s, 0, NULL);
	ck_assert_ptr_nonnull(o);
	ck_assert_str_eq(json_string_value(json_object_get(o, "server_version")), "v\"1");
	json_decref(o);
	free(s);
}
END_TEST

START_TEST(test_parse_numbers)
{
	int64_t  v;
	uint64_t u;

	ck_assert(cli_parse_i64("-5", &v) && v == -5);
	ck_assert(cli_parse_i64("9223372036854775807", &v) && v == INT64_MAX);
	ck_assert(cli_parse_i64("-9223372036854775808", &v) && v == INT64_MIN);
	ck_assert(!cli_parse_i64("9223372036854775808", &v));
	ck_assert(!cli_parse_i64("", &v));
	ck_assert(!cli_parse_i64("12x", &v));
	ck_assert(cli_parse_u64("42", &u) && u == 42);
	ck_assert(!cli_parse_u64("-1", &u));
	ck_assert(!cli_parse_u64("+1", &u));
	ck_assert(!cli_parse_u64(" 1", &u));
}
END_TEST

START_TEST(test_parse_wait_op)
{
	chan_wait_op op;

	ck_assert(cli_parse_wait_op("==", &op) && op == CHAN_WAIT_EQ);
	ck_assert(cli_parse_wait_op("!=", &op) && op == CHAN_WAIT_NE);
	ck_assert(cli_parse_wait_op("<", &op) && op == CHAN_WAIT_LT);
	ck_assert(cli_parse_wait_op("<=", &op) && op == CHAN_WAIT_LE);
	ck_assert(cli_parse_wait_op(">", &op) && op == CHAN_WAIT_GT);
	ck_assert(cli_parse_wait_op(">=", &op) && op == CHAN_WAIT_GE);
	ck_assert(cli_parse_wait_op("ge", &op) && op == CHAN_WAIT_GE);
	ck_assert(!cli_parse_wait_op("=>", &op));
	ck_assert(!cli_parse_wait_op("", &op));
}
END_TEST

START_TEST(test_protect_negatives)
{
	char  *argv[] = { "counter", "add", "x", "-5", "--json", "-0", "-n", NULL };
	char **p = cli_args_protect(7, argv);

	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_eq(p[0], argv[0]);
	ck_assert_ptr_eq(p[2], argv[2]);
	ck_assert_int_ne(p[3][0], '-');          /* hidden from getopt */
	ck_assert_str_eq(cli_arg(p[3]), "-5");   /* and given back */
	ck_assert_int_ne(p[5][0], '-');          /* "-0" is a number here */
	ck_assert_ptr_eq(p[4], argv[4]);         /* options stay options */
	ck_assert_ptr_eq(p[6], argv[6]);
	ck_assert_ptr_null(p[7]);
	ck_assert_str_eq(cli_arg("plain"), "plain");
	cli_args_free(7, p);
}
END_TEST

static Suite *
client_local_suite(void)
{
	Suite *s = suite_create("client_local");
	TCase *t = tcase_create("pure");

	tcase_add_test(t, test_b64_rfc4648);
	tcase_add_test(t, test_time_rfc3339);
	tcase_add_test(t, test_json_utf8_payload);
	tcase_add_test(t, test_json_binary_payload);
	tcase_add_test(t, test_json_empty_and_nul);
	tcase_add_test(t, test_plain_records);
	tcase_add_test(t, test_stat_json);
	tcase_add_test(t, test_small_json);
	tcase_add_test(t, test_parse_numbers);
	tcase_add_test(t, test_parse_wait_op);
	tcase_add_test(t, test_protect_negatives);
	suite_add_tcase(s, t);
	return (s);
}

int
main(void)
{
	SRunner *sr = srunner_create(client_local_suite());
	int      failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
