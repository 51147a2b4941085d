/* test_access.c - the access policy (docs/SECURITY.md) and the peer table. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access.h"

static chd_access *a;
static char        err[256];

static void
setup(void)
{
	a = chd_access_new();
	ck_assert_ptr_nonnull(a);
	err[0] = '\0';
}

static void
teardown(void)
{
	chd_access_free(a);
}

static chd_peer
ipc_peer(uint32_t uid, uint32_t gid)
{
	chd_peer p = { .cred = true, .uid = uid, .gid = gid };

	return (p);
}

/* Builds a request of one op on one name and checks it. */
static chan_status
check_op(const chd_peer *p, Chan__V1__Request__OpCase op, const char *name)
{
	Chan__V1__Request       q = CHAN__V1__REQUEST__INIT;
	Chan__V1__Send          send = CHAN__V1__SEND__INIT;
	Chan__V1__Recv          recv = CHAN__V1__RECV__INIT;
	Chan__V1__Create        create = CHAN__V1__CREATE__INIT;
	Chan__V1__Delete        del = CHAN__V1__DELETE__INIT;
	Chan__V1__Stat          stat = CHAN__V1__STAT__INIT;
	Chan__V1__List          list = CHAN__V1__LIST__INIT;
	Chan__V1__Ping          ping = CHAN__V1__PING__INIT;
	Chan__V1__CounterAdd    cadd = CHAN__V1__COUNTER_ADD__INIT;
	Chan__V1__CounterList   clist = CHAN__V1__COUNTER_LIST__INIT;
	Chan__V1__SenderOpen    sopen = CHAN__V1__SENDER_OPEN__INIT;
	Chan__V1__ReceiverOpen  ropen = CHAN__V1__RECEIVER_OPEN__INIT;
	Chan__V1__Ack           ack = CHAN__V1__ACK__INIT;
	char                   *n = (char *) name;

	q.op_case = op;
	switch (op) {
	case CHAN__V1__REQUEST__OP_SEND:
		send.name = n;
		q.send = &send;
		break;
	case CHAN__V1__REQUEST__OP_RECV:
		recv.name = n;
		q.recv = &recv;
		break;
	case CHAN__V1__REQUEST__OP_CREATE:
		create.name = n;
		q.create = &create;
		break;
	case CHAN__V1__REQUEST__OP_DELETE:
		del.name = n;
		q.delete_ = &del;
		break;
	case CHAN__V1__REQUEST__OP_STAT:
		stat.name = n;
		q.stat = &stat;
		break;
	case CHAN__V1__REQUEST__OP_LIST:
		q.list = &list;
		break;
	case CHAN__V1__REQUEST__OP_PING:
		q.ping = &ping;
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_ADD:
		cadd.name = n;
		q.counter_add = &cadd;
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_LIST:
		q.counter_list = &clist;
		break;
	case CHAN__V1__REQUEST__OP_SENDER_OPEN:
		sopen.name = n;
		q.sender_open = &sopen;
		break;
	case CHAN__V1__REQUEST__OP_RECEIVER_OPEN:
		ropen.name = n;
		q.receiver_open = &ropen;
		break;
	case CHAN__V1__REQUEST__OP_ACK:
		ack.name = n;
		q.ack = &ack;
		break;
	default:
		break;
	}
	err[0] = '\0';
	return (chd_access_check(a, p, &q, err, sizeof(err)));
}

START_TEST(test_no_rules_is_off_and_allows_everyone)
{
	chd_peer p = ipc_peer(1234, 1234);
	chd_peer tcp = { 0 };

	ck_assert(!chd_access_enabled(a));
	ck_assert(!chd_access_enabled(NULL));
	ck_assert(chd_access_admits(a, &p, err, sizeof(err)));
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_DELETE, "x"),
	    CHAN_OK);
	ck_assert_int_eq(check_op(&tcp, CHAN__V1__REQUEST__OP_SEND, "x"),
	    CHAN_OK);
}
END_TEST

START_TEST(test_allow_uid_list_gives_everything_to_listed_uids_only)
{
	chd_peer ok = ipc_peer(1001, 50), ok2 = ipc_peer(1002, 50);
	chd_peer bad = ipc_peer(65534, 65534);

	ck_assert_int_eq(chd_access_allow_uids(a, "1001,1002", err,
	    sizeof(err)), 0);
	ck_assert(chd_access_enabled(a));
	ck_assert(chd_access_admits(a, &ok, err, sizeof(err)));
	ck_assert_int_eq(check_op(&ok, CHAN__V1__REQUEST__OP_DELETE, "any"),
	    CHAN_OK);
	ck_assert_int_eq(check_op(&ok2, CHAN__V1__REQUEST__OP_LIST, NULL),
	    CHAN_OK);
	ck_assert(!chd_access_admits(a, &bad, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "uid 65534"));
	ck_assert_ptr_nonnull(strstr(err, "--allow-uid"));
	/* A refused peer gets nothing, not even a ping. */
	ck_assert_int_eq(check_op(&bad, CHAN__V1__REQUEST__OP_PING, NULL),
	    CHAN_PERMISSION_DENIED);
	ck_assert_ptr_nonnull(strstr(err, "permission denied"));
	ck_assert_int_eq(check_op(&bad, CHAN__V1__REQUEST__OP_SEND, "x"),
	    CHAN_PERMISSION_DENIED);
}
END_TEST

START_TEST(test_allow_gid_matches_primary_gid)
{
	chd_peer in = ipc_peer(5000, 600), out = ipc_peer(600, 5000);

	ck_assert_int_eq(chd_access_allow_gids(a, "600", err, sizeof(err)),
	    0);
	ck_assert_int_eq(check_op(&in, CHAN__V1__REQUEST__OP_SEND, "q"),
	    CHAN_OK);
	/* uid 600 is not gid 600. */
	ck_assert_int_eq(check_op(&out, CHAN__V1__REQUEST__OP_SEND, "q"),
	    CHAN_PERMISSION_DENIED);
}
END_TEST

START_TEST(test_names_resolve_and_unknown_names_fail)
{
	chd_peer root = ipc_peer(0, 0), nobody = ipc_peer(65534, 65534);

	/* "root" and "nobody"/"nogroup" exist on every Debian system. */
	ck_assert_int_eq(chd_access_allow_uids(a, "nobody", err, sizeof(err)),
	    0);
	ck_assert_int_eq(check_op(&nobody, CHAN__V1__REQUEST__OP_SEND, "q"),
	    CHAN_OK);
	ck_assert_int_eq(check_op(&root, CHAN__V1__REQUEST__OP_SEND, "q"),
	    CHAN_OK);
	ck_assert_int_eq(chd_access_allow_gids(a, "root", err, sizeof(err)),
	    0);
	ck_assert_int_eq(chd_access_allow_uids(a, "no-such-user-xyz", err,
	    sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "unknown user 'no-such-user-xyz'"));
	ck_assert_int_eq(chd_access_allow_gids(a, "no-such-group-xyz", err,
	    sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "unknown group"));
	ck_assert_int_eq(chd_access_allow_uids(a, "", err, sizeof(err)), -1);
	ck_assert_int_eq(chd_access_allow_uids(a, "1,,2", err, sizeof(err)),
	    -1);
	ck_assert_int_eq(chd_access_allow_uids(a, "4294967295", err,
	    sizeof(err)), -1);
}
END_TEST

START_TEST(test_root_and_trusted_uid_always_allowed)
{
	chd_peer root = ipc_peer(0, 0), self = ipc_peer(4242, 4242);
	chd_peer other = ipc_peer(4243, 4242);

	chd_access_trust_uid(a, 4242);
	ck_assert_int_eq(chd_access_allow_uids(a, "1001", err, sizeof(err)),
	    0);
	ck_assert_int_eq(check_op(&root, CHAN__V1__REQUEST__OP_DELETE, "q"),
	    CHAN_OK);
	ck_assert_int_eq(check_op(&self, CHAN__V1__REQUEST__OP_DELETE, "q"),
	    CHAN_OK);
	ck_assert_int_eq(check_op(&other, CHAN__V1__REQUEST__OP_DELETE, "q"),
	    CHAN_PERMISSION_DENIED);
}
END_TEST

START_TEST(test_tcp_refused_tls_verified_allowed_when_on)
{
	chd_peer tcp = { 0 };
	chd_peer tls = { .tls_verified = true };

	ck_assert_int_eq(chd_access_allow_uids(a, "1001", err, sizeof(err)),
	    0);
	ck_assert(!chd_access_admits(a, &tcp, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "tcp"));
	ck_assert_ptr_nonnull(strstr(err, "--tls-ca"));
	ck_assert_int_eq(check_op(&tcp, CHAN__V1__REQUEST__OP_PING, NULL),
	    CHAN_PERMISSION_DENIED);
	ck_assert_int_eq(check_op(&tls, CHAN__V1__REQUEST__OP_DELETE, "q"),
	    CHAN_OK);
	/* An "any" rule opens a prefix to plain tcp peers too. */
	ck_assert_int_eq(chd_access_allow_rule(a, "any:send:public.*", err,
	    sizeof(err)), 0);
	ck_assert_int_eq(check_op(&tcp, CHAN__V1__REQUEST__OP_SEND,
	    "public.x"), CHAN_OK);
	ck_assert_int_eq(check_op(&tcp, CHAN__V1__REQUEST__OP_SEND,
	    "private"), CHAN_PERMISSION_DENIED);
}
END_TEST

START_TEST(test_prefix_rule_limits_ops_and_names)
{
	chd_peer p = ipc_peer(1001, 1001);

	ck_assert_int_eq(chd_access_allow_rule(a, "uid=1001:send:jobs.*", err,
	    sizeof(err)), 0);
	ck_assert(chd_access_admits(a, &p, err, sizeof(err)));
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_PING, NULL),
	    CHAN_OK);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_SEND, "jobs.a"),
	    CHAN_OK);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_SENDER_OPEN,
	    "jobs.a"), CHAN_OK);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_SEND, "jobs."),
	    CHAN_OK);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_SEND, "jobs"),
	    CHAN_PERMISSION_DENIED);
	ck_assert_ptr_nonnull(strstr(err, "may not send to channel 'jobs'"));
	ck_assert_ptr_nonnull(strstr(err, "uid 1001"));
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_SEND, "other"),
	    CHAN_PERMISSION_DENIED);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_RECV, "jobs.a"),
	    CHAN_PERMISSION_DENIED);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_DELETE, "jobs.a"),
	    CHAN_PERMISSION_DENIED);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_LIST, NULL),
	    CHAN_PERMISSION_DENIED);
	ck_assert_ptr_nonnull(strstr(err, "'*'"));
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_COUNTER_ADD,
	    "jobs.a"), CHAN_PERMISSION_DENIED);
	/* A missing name is checked as "": the prefix does not grant it. */
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_SEND, NULL),
	    CHAN_PERMISSION_DENIED);
}
END_TEST

START_TEST(test_exact_name_ops_list_and_star)
{
	chd_peer p = ipc_peer(7, 7);

	ck_assert_int_eq(chd_access_allow_rule(a, "uid=7:recv,info:a:b", err,
	    sizeof(err)), 0);
	/* The pattern is everything after the second ':' (names have ':'). */
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_RECV, "a:b"),
	    CHAN_OK);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_RECEIVER_OPEN,
	    "a:b"), CHAN_OK);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_ACK, "a:b"),
	    CHAN_OK);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_STAT, "a:b"),
	    CHAN_OK);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_RECV, "a:bc"),
	    CHAN_PERMISSION_DENIED);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_SEND, "a:b"),
	    CHAN_PERMISSION_DENIED);
	ck_assert_int_eq(chd_access_allow_rule(a, "gid=7:info,counter:*", err,
	    sizeof(err)), 0);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_LIST, NULL),
	    CHAN_OK);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_COUNTER_LIST,
	    NULL), CHAN_OK);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_COUNTER_ADD, "c"),
	    CHAN_OK);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_CREATE, "c"),
	    CHAN_PERMISSION_DENIED);
	ck_assert_int_eq(chd_access_allow_rule(a, "uid=7:all:*", err,
	    sizeof(err)), 0);
	ck_assert_int_eq(check_op(&p, CHAN__V1__REQUEST__OP_CREATE, "c"),
	    CHAN_OK);
}
END_TEST

START_TEST(test_recv_any_needs_every_name)
{
	Chan__V1__Request q = CHAN__V1__REQUEST__INIT;
	Chan__V1__RecvAny ra = CHAN__V1__RECV_ANY__INIT;
	char             *names[] = { "jobs.a", "secret" };
	chd_peer          p = ipc_peer(1001, 1001);

	ck_assert_int_eq(chd_access_allow_rule(a, "uid=1001:recv:jobs.*", err,
	    sizeof(err)), 0);
	q.op_case = CHAN__V1__REQUEST__OP_RECV_ANY;
	q.recv_any = &ra;
	ra.names = names;
	ra.n_names = 1;
	ck_assert_int_eq(chd_access_check(a, &p, &q, err, sizeof(err)),
	    CHAN_OK);
	ra.n_names = 2;
	ck_assert_int_eq(chd_access_check(a, &p, &q, err, sizeof(err)),
	    CHAN_PERMISSION_DENIED);
	ck_assert_ptr_nonnull(strstr(err, "'secret'"));
}
END_TEST

START_TEST(test_unknown_op_denied_unless_full)
{
	Chan__V1__Request q = CHAN__V1__REQUEST__INIT;
	chd_peer          p = ipc_peer(1001, 1001), root = ipc_peer(0, 0);

	ck_assert_int_eq(chd_access_allow_rule(a, "uid=1001:send:*", err,
	    sizeof(err)), 0);
	q.op_case = CHAN__V1__REQUEST__OP__NOT_SET;
	ck_assert_int_eq(chd_access_check(a, &p, &q, err, sizeof(err)),
	    CHAN_PERMISSION_DENIED);
	ck_assert_int_eq(chd_access_check(a, &root, &q, err, sizeof(err)),
	    CHAN_OK);
}
END_TEST

START_TEST(test_bad_rules_say_why)
{
	static const struct {
		const char *rule, *msg;
	} bad[] = {
		{ "uid=1001", "SUBJECT:OPS:PATTERN" },
		{ "uid=1001:send", "SUBJECT:OPS:PATTERN" },
		{ "user=1:send:x", "subject must be" },
		{ "uid=:send:x", "bad subject" },
		{ "uid=no-such-user-xyz:send:x", "unknown user" },
		{ "uid=1:write:x", "unknown operation 'write'" },
		{ "uid=1:send,:x", "unknown operation ''" },
		{ "uid=1:send:", "pattern must be" },
		{ "uid=1:send:a b*", "pattern must be" },
		{ "uid=1:send:a*b", "pattern must be" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		ck_assert_msg(chd_access_allow_rule(a, bad[i].rule, err,
		                  sizeof(err)) == -1, "accepted '%s'",
		    bad[i].rule);
		ck_assert_msg(strstr(err, bad[i].msg) != NULL,
		    "'%s': message '%s' lacks '%s'", bad[i].rule, err,
		    bad[i].msg);
	}
	ck_assert(!chd_access_enabled(a));
}
END_TEST

START_TEST(test_peer_table)
{
	chd_peers *t = chd_peers_new();
	chd_peer   p = ipc_peer(1, 2), got;

	ck_assert_ptr_nonnull(t);
	ck_assert(!chd_peers_get(t, 5, &got));
	for (uint32_t c = 1; c <= 5000; c++) {
		p.uid = c;
		ck_assert_int_eq(chd_peers_put(t, c, &p), 0);
	}
	ck_assert_uint_eq(chd_peers_count(t), 5000);
	ck_assert(chd_peers_get(t, 4321, &got));
	ck_assert_uint_eq(got.uid, 4321);
	ck_assert(chd_peers_first_refusal(t, 4321));
	ck_assert(!chd_peers_first_refusal(t, 4321));
	ck_assert(!chd_peers_first_refusal(t, 4321));
	ck_assert(chd_peers_first_refusal(t, 4322));
	for (uint32_t c = 1; c <= 5000; c += 2) {
		ck_assert(chd_peers_del(t, c));
	}
	ck_assert(!chd_peers_del(t, 999999));
	ck_assert(!chd_peers_del(t, 1));
	ck_assert_uint_eq(chd_peers_count(t), 2500);
	ck_assert(!chd_peers_get(t, 4321, &got));
	ck_assert(chd_peers_get(t, 4322, &got));
	ck_assert_uint_eq(got.uid, 4322);

	/* Requests in flight: at most max, per connection. */
	for (int i = 0; i < 3; i++) {
		ck_assert(chd_peers_pending_add(t, 4322, 3));
	}
	ck_assert(!chd_peers_pending_add(t, 4322, 3));
	ck_assert(chd_peers_pending_add(t, 4324, 3));
	chd_peers_pending_done(t, 4322);
	ck_assert(chd_peers_pending_add(t, 4322, 3));
	ck_assert(!chd_peers_pending_add(t, 4322, 3));
	ck_assert(chd_peers_pending_add(t, 4322, 0)); /* 0: no limit */
	/* Unknown connections are not limited; done never underflows. */
	ck_assert(chd_peers_pending_add(t, 999999, 1));
	ck_assert(chd_peers_pending_add(t, 999999, 1));
	chd_peers_pending_done(t, 4326);
	chd_peers_pending_done(t, 4326);
	ck_assert(chd_peers_pending_add(t, 4326, 1));
	ck_assert(!chd_peers_pending_add(t, 4326, 1));
	chd_peers_free(t);
}
END_TEST

static Suite *
access_suite(void)
{
	Suite *s = suite_create("access");
	TCase *tc = tcase_create("policy");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_no_rules_is_off_and_allows_everyone);
	tcase_add_test(tc, test_allow_uid_list_gives_everything_to_listed_uids_only);
	tcase_add_test(tc, test_allow_gid_matches_primary_gid);
	tcase_add_test(tc, test_names_resolve_and_unknown_names_fail);
	tcase_add_test(tc, test_root_and_trusted_uid_always_allowed);
	tcase_add_test(tc, test_tcp_refused_tls_verified_allowed_when_on);
	tcase_add_test(tc, test_prefix_rule_limits_ops_and_names);
	tcase_add_test(tc, test_exact_name_ops_list_and_star);
	tcase_add_test(tc, test_recv_any_needs_every_name);
	tcase_add_test(tc, test_unknown_op_denied_unless_full);
	tcase_add_test(tc, test_bad_rules_say_why);
	tcase_add_test(tc, test_peer_table);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	SRunner *sr = srunner_create(access_suite());
	int      failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
