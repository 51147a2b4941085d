/*
 * test_batchform.c - libchan and the batch form of the wire.
 *
 * Against a real chand: a client in the batch form and one held to the
 * list form (CHAN_WIRE_BATCH=0) exchange batches both ways; messages that
 * point into a received batch outlive each other, the answer and the
 * client; the consumer's byte bound and the producer's byte bound deliver
 * everything, big messages too.
 *
 * Against a fake daemon (an nng REP socket in this process): which form
 * libchan puts on the wire (offered or not, CHAN_WIRE_BATCH=0), and what
 * it makes of hostile batch answers (sizes not adding up, more messages
 * than asked, both forms, bad indices): CHAN_PROTOCOL, never a crash.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include <chan/chan.h>

#include "harness.h"
#include "libchan_check.h"

/* Connects with CHAN_WIRE_BATCH set to v (NULL: unset). */
static chan_client *
connect_with(const char *url, const char *v)
{
	chan_client *c = NULL;

	if (v != NULL) {
		setenv("CHAN_WIRE_BATCH", v, 1);
	} else {
		unsetenv("CHAN_WIRE_BATCH");
	}
	ck_status(chan_connect(url, &c), CHAN_OK);
	unsetenv("CHAN_WIRE_BATCH");
	ck_assert_ptr_nonnull(c);
	return (c);
}

/* Payload i of a test batch: i % 7 == 0 empty, else up to 2000 bytes. */
static size_t
batch_payload(size_t i, uint8_t *buf)
{
	size_t len = i % 7 == 0 ? 0 : (i * 131) % 2000 + 1;

	for (size_t k = 0; k < len; k++) {
		buf[k] = (uint8_t) (i * 31 + k);
	}
	return (len);
}

static void
expect_payload(const chan_msg *m, size_t i)
{
	static uint8_t want[2048];
	size_t         len = batch_payload(i, want);

	ck_assert_msg(chan_msg_len(m) == len, "message %zu: %zu bytes, wanted %zu", i,
	    chan_msg_len(m), len);
	ck_assert_msg(len == 0 || memcmp(chan_msg_data(m), want, len) == 0,
	    "message %zu: payload differs", i);
}

/* Sends n test payloads from `from` (one batch), receives them on `to`. */
static void
exchange(chan_client *from, chan_client *to, const char *name, size_t n)
{
	chan_buf  *bufs = calloc(n, sizeof(*bufs));
	uint8_t   *store = malloc(n * 2048);
	chan_msg **msgs = calloc(n, sizeof(*msgs));
	size_t     got = 0, k;
	uint64_t   first = 0, sent_first = 0, now = (uint64_t) time(NULL) * 1000000u;

	ck_assert_ptr_nonnull(bufs);
	ck_assert_ptr_nonnull(store);
	ck_assert_ptr_nonnull(msgs);
	for (size_t i = 0; i < n; i++) {
		bufs[i].data = store + i * 2048;
		bufs[i].len = batch_payload(i, store + i * 2048);
	}
	ck_status(chan_send_batch(from, name, bufs, n, CHAN_WAIT_FOREVER, &sent_first), CHAN_OK);
	while (got < n) {
		ck_status(chan_recv_n(to, name, n - got, msgs + got, &k, 5000), CHAN_OK);
		ck_assert_uint_ge(k, 1);
		got += k;
	}
	for (size_t i = 0; i < n; i++) {
		expect_payload(msgs[i], i);
		ck_assert_str_eq(chan_msg_channel(msgs[i]), name);
		ck_assert(!chan_msg_redelivered(msgs[i]));
		if (i == 0) {
			first = chan_msg_seq(msgs[0]);
			ck_assert_uint_eq(first, sent_first);
		}
		ck_assert_uint_eq(chan_msg_seq(msgs[i]), first + i);
		/* Enqueued within the last minute or so, by the wall clock. */
		ck_assert_msg(chan_msg_time_us(msgs[i]) + 120000000u > now &&
		    chan_msg_time_us(msgs[i]) < now + 120000000u,
		    "message %zu: time %llu, now %llu", i,
		    (unsigned long long) chan_msg_time_us(msgs[i]), (unsigned long long) now);
	}
	for (size_t i = 0; i < n; i++) {
		chan_msg_free(msgs[i]);
	}
	free(msgs);
	free(store);
	free(bufs);
}

/* ---- against chand ---------------------------------------------------------- */

START_TEST(both_forms_interoperate)
{
	chan_client *b = connect_with(D.url, NULL);
	chan_client *l = connect_with(D.url, "0");

	exchange(b, l, "b2l", 500);
	exchange(l, b, "l2b", 500);
	exchange(b, b, "b2b", 1);
	exchange(l, l, "l2l", 1);
	exchange(b, b, "b2b", 8192); /* the daemon's default max_batch */
	chan_disconnect(b);
	chan_disconnect(l);
}
END_TEST

/* Messages pointing into one answer: freed in any order, after the client. */
START_TEST(batch_messages_outlive_answer_and_client)
{
	chan_client *c = connect_with(D.url, NULL);
	chan_client *s = connect_with(D.url, NULL);
	chan_msg    *msgs[64];
	chan_buf     bufs[64];
	uint8_t      store[64 * 2048];
	size_t       n;

	for (size_t i = 0; i < 64; i++) {
		bufs[i].data = store + i * 2048;
		bufs[i].len = batch_payload(i, store + i * 2048);
	}
	ck_status(chan_send_batch(s, "keep", bufs, 64, CHAN_WAIT_FOREVER, NULL), CHAN_OK);
	ck_status(chan_recv_n(c, "keep", 64, msgs, &n, 5000), CHAN_OK);
	ck_assert_uint_eq(n, 64);
	/* Every other one first, then read the rest. */
	for (size_t i = 0; i < 64; i += 2) {
		chan_msg_free(msgs[i]);
	}
	for (size_t i = 1; i < 64; i += 2) {
		expect_payload(msgs[i], i);
	}
	chan_disconnect(c);
	/* The client is gone: the messages it handed out are still whole. */
	for (size_t i = 63; i >= 1 && i < 64; i -= 2) {
		expect_payload(msgs[i], i);
		ck_assert_str_eq(chan_msg_channel(msgs[i]), "keep");
		chan_msg_free(msgs[i]);
	}
	chan_disconnect(s);
}
END_TEST

/* Big messages through the producer's and consumer's 512 KiB bounds. */
START_TEST(byte_bounds_deliver_everything)
{
	chan_client       *c = connect_with(D.url, NULL);
	chan_producer     *p = NULL;
	chan_consumer     *k = NULL;
	chan_msg          *m = NULL;
	static uint8_t     big[700 * 1024 + 16]; /* big + i for i < 16 */
	static const size_t sizes[] = { 700 * 1024, 100 * 1024, 100 * 1024, 300 * 1024, 1,
		0, 512 * 1024, 512 * 1024 + 1, 700 * 1024, 5 };
	const size_t       n = sizeof(sizes) / sizeof(sizes[0]);

	for (size_t i = 0; i < sizeof(big); i++) {
		big[i] = (uint8_t) (i * 7 + i / 1000);
	}
	ck_status(chan_producer_open(c, "big", NULL, &p), CHAN_OK);
	for (int round = 0; round < 3; round++) {
		for (size_t i = 0; i < n; i++) {
			ck_status(chan_producer_send(p, big + i, sizes[i], NULL), CHAN_OK);
		}
	}
	ck_status(chan_producer_flush(p, 30000), CHAN_OK);
	ck_assert_uint_eq(chan_producer_accepted(p), 3 * n);
	ck_status(chan_producer_close(p), CHAN_OK);
	ck_status(chan_consumer_open(c, "big", NULL, &k), CHAN_OK);
	for (size_t j = 0; j < 3 * n; j++) {
		size_t i = j % n;

		ck_status(chan_consumer_recv(k, &m, 10000), CHAN_OK);
		ck_assert_msg(chan_msg_len(m) == sizes[i], "message %zu: %zu bytes, wanted %zu", j,
		    chan_msg_len(m), sizes[i]);
		ck_assert_msg(sizes[i] == 0 || memcmp(chan_msg_data(m), big + i, sizes[i]) == 0,
		    "message %zu differs", j);
		chan_msg_free(m);
	}
	ck_status(chan_consumer_recv(k, &m, 0), CHAN_EMPTY);
	chan_consumer_close(k);
	chan_disconnect(c);
}
END_TEST

/* ---- against a fake daemon ----------------------------------------------- */

enum fake_mode {
	FK_VALID,         /* 3 messages, deltas, one redelivered */
	FK_NO_DELTAS,     /* valid: no seq or time deltas at all */
	FK_SIZES_OVER,    /* sizes add up to more than the data */
	FK_SIZES_UNDER,   /* ... to less */
	FK_TOO_MANY,      /* 11 messages to a Recv of max 10 */
	FK_BOTH_FORMS,    /* messages and batch */
	FK_REDEL_RANGE,   /* a redelivered index past the end */
	FK_REDEL_ORDER,   /* redelivered indices going down */
	FK_SEQ_COUNT,     /* 3 sizes, 2 seq deltas */
	FK_NO_SIZES,      /* an empty batch */
};

typedef struct fake {
	nng_socket      s;
	char            url[128];
	pthread_t       thr;
	atomic_bool     stop;
	atomic_int      mode;
	atomic_bool     offer; /* HelloResult.batch_form */
	/* What the last Recv / Send asked or carried (for the test thread). */
	atomic_int      recv_batch;  /* Recv.batch: -1 none seen, 0, 1 */
	atomic_int      send_form;   /* -1 none seen, 0 list (data), 1 batch */
	atomic_int      send_count;  /* messages in the last Send */
} fake;

static fake F;

static void
fake_recv_answer(Chan__V1__Response *a, Chan__V1__RecvResult *rr, Chan__V1__Batch *b,
    int mode)
{
	static uint32_t    sizes[11] = { 3, 0, 2, 1, 1, 1, 1, 1, 1, 1, 1 };
	static int64_t     seqs[3] = { 5, 1, 1 }, times[3] = { 100, 1, 1 };
	static uint32_t    redel[2] = { 1, 0 };
	static uint8_t     data[] = "abcdefghijklmnop";
	static Chan__V1__Message  m = CHAN__V1__MESSAGE__INIT;
	static Chan__V1__Message *mp[1] = { &m };

	redel[0] = 1; /* the modes below change them */
	redel[1] = 0;
	b->has_data = 1;
	b->data.data = data;
	b->data.len = 5;
	b->sizes = sizes;
	b->n_sizes = 3;
	b->seq_deltas = seqs;
	b->n_seq_deltas = 3;
	b->time_deltas = times;
	b->n_time_deltas = 3;
	b->redelivered = redel;
	b->n_redelivered = 1;
	switch (mode) {
	case FK_NO_DELTAS:
		b->n_seq_deltas = b->n_time_deltas = 0;
		break;
	case FK_SIZES_OVER:
		b->data.len = 4;
		break;
	case FK_SIZES_UNDER:
		b->data.len = 6;
		break;
	case FK_TOO_MANY:
		b->n_sizes = 11;
		b->data.len = 13;
		b->n_seq_deltas = b->n_time_deltas = b->n_redelivered = 0;
		break;
	case FK_BOTH_FORMS:
		m.has_seq = m.has_time_us = 1;
		m.seq = 1;
		rr->messages = mp;
		rr->n_messages = 1;
		break;
	case FK_REDEL_RANGE:
		redel[0] = 3;
		break;
	case FK_REDEL_ORDER:
		redel[0] = 2;
		redel[1] = 1;
		b->n_redelivered = 2;
		break;
	case FK_SEQ_COUNT:
		b->n_seq_deltas = 2;
		break;
	case FK_NO_SIZES:
		b->has_data = 0;
		b->n_sizes = b->n_seq_deltas = b->n_time_deltas = b->n_redelivered = 0;
		break;
	default:
		break;
	}
	rr->batch = b;
	a->has_delivery = 1;
	a->delivery = 77;
	a->result_case = CHAN__V1__RESPONSE__RESULT_RECV;
	a->recv = rr;
}

/* Answers one request (q decoded). */
static void
fake_answer(const Chan__V1__Request *q, uint8_t **out, size_t *len)
{
	Chan__V1__Response    a = CHAN__V1__RESPONSE__INIT;
	Chan__V1__HelloResult h = CHAN__V1__HELLO_RESULT__INIT;
	Chan__V1__RecvResult  rr = CHAN__V1__RECV_RESULT__INIT;
	Chan__V1__SendResult  sr = CHAN__V1__SEND_RESULT__INIT;
	Chan__V1__Batch       b = CHAN__V1__BATCH__INIT;
	int                   mode = atomic_load(&F.mode);

	a.has_id = q->has_id;
	a.id = q->id;
	a.has_status = 1;
	a.status = CHAN__V1__STATUS__OK;
	switch (q->op_case) {
	case CHAN__V1__REQUEST__OP_HELLO:
		h.has_protocol_version = h.has_max_message_size = h.has_max_batch = 1;
		h.protocol_version = 1;
		h.max_message_size = 1 << 20;
		h.max_batch = 64;
		h.server_version = "fake";
		h.has_batch_form = 1;
		h.batch_form = atomic_load(&F.offer);
		a.result_case = CHAN__V1__RESPONSE__RESULT_HELLO;
		a.hello = &h;
		break;
	case CHAN__V1__REQUEST__OP_RECV:
		atomic_store(&F.recv_batch, q->recv->has_batch && q->recv->batch ? 1 : 0);
		fake_recv_answer(&a, &rr, &b, mode);
		break;
	case CHAN__V1__REQUEST__OP_RECV_ANY:
		fake_recv_answer(&a, &rr, &b, FK_VALID);
		break;
	case CHAN__V1__REQUEST__OP_SEND:
		atomic_store(&F.send_form, q->send->batch != NULL ? 1 : 0);
		atomic_store(&F.send_count, (int) (q->send->batch != NULL ? q->send->batch->n_sizes
		    : q->send->n_data));
		sr.has_accepted = sr.has_first_seq = 1;
		sr.accepted = (uint32_t) atomic_load(&F.send_count);
		sr.first_seq = 1;
		a.result_case = CHAN__V1__RESPONSE__RESULT_SEND;
		a.send = &sr;
		break;
	default:
		break; /* Ping and the rest: OK */
	}
	*len = chan__v1__response__get_packed_size(&a);
	*out = malloc(*len + 1);
	if (*out != NULL) {
		chan__v1__response__pack(&a, *out);
	}
}

static void *
fake_main(void *arg)
{
	(void) arg;
	while (!atomic_load(&F.stop)) {
		void              *buf = NULL;
		size_t             len = 0;
		uint8_t           *out = NULL;
		size_t             olen = 0;
		Chan__V1__Request *q;

		if (nng_recv(F.s, &buf, &len, NNG_FLAG_ALLOC) != 0) {
			continue; /* the receive timeout: look at stop again */
		}
		q = chan__v1__request__unpack(NULL, len, buf);
		nng_free(buf, len);
		if (q == NULL) {
			continue;
		}
		fake_answer(q, &out, &olen);
		chan__v1__request__free_unpacked(q, NULL);
		if (out != NULL) {
			(void) nng_send(F.s, out, olen, 0);
			free(out);
		}
	}
	return (NULL);
}

static void
fake_setup(void)
{
	static int n;

	memset(&F, 0, sizeof(F));
	atomic_store(&F.offer, true);
	atomic_store(&F.recv_batch, -1);
	atomic_store(&F.send_form, -1);
	snprintf(F.url, sizeof(F.url), "ipc:///tmp/chan-fake-%d-%d.sock", (int) getpid(), n++);
	ck_assert_int_eq(nng_rep0_open(&F.s), 0);
	nng_socket_set_ms(F.s, NNG_OPT_RECVTIMEO, 100);
	nng_socket_set_size(F.s, NNG_OPT_RECVMAXSZ, 0);
	ck_assert_int_eq(nng_listen(F.s, F.url, NULL, 0), 0);
	ck_assert_int_eq(pthread_create(&F.thr, NULL, fake_main, NULL), 0);
}

static void
fake_teardown(void)
{
	atomic_store(&F.stop, true);
	pthread_join(F.thr, NULL);
	nng_close(F.s);
	unlink(F.url + strlen("ipc://"));
}

/* Which form libchan writes, by what the daemon offers and the env. */
START_TEST(client_picks_the_form)
{
	static const struct {
		bool        offer;
		const char *env;
		int         want; /* 1: batch form */
	} cases[] = {
		{ true, NULL, 1 },
		{ true, "1", 1 },
		{ true, "0", 0 },
		{ false, NULL, 0 },
		{ false, "1", 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		chan_client *c;
		chan_buf     bufs[3] = { { "ab", 2 }, { "", 0 }, { "cde", 3 } };
		chan_msg    *msgs[10];
		size_t       n = 0;

		atomic_store(&F.offer, cases[i].offer);
		atomic_store(&F.mode, FK_VALID);
		c = connect_with(F.url, cases[i].env);
		ck_status(chan_send_batch(c, "q", bufs, 3, 1000, NULL), CHAN_OK);
		ck_assert_msg(atomic_load(&F.send_form) == cases[i].want,
		    "case %zu: send in the %s form", i,
		    atomic_load(&F.send_form) == 1 ? "batch" : "list");
		ck_assert_int_eq(atomic_load(&F.send_count), 3);
		if (cases[i].want) {
			ck_status(chan_recv_n(c, "q", 10, msgs, &n, 0), CHAN_OK);
			ck_assert_uint_eq(n, 3);
			for (size_t k = 0; k < n; k++) {
				chan_msg_free(msgs[k]);
			}
		}
		if (!cases[i].want) {
			/* A list-form client does not ask for batch answers. */
			(void) chan_recv_n(c, "q", 10, msgs, &n, 0);
		}
		ck_assert_msg(atomic_load(&F.recv_batch) == cases[i].want,
		    "case %zu: Recv.batch %d", i, atomic_load(&F.recv_batch));
		if (!cases[i].want && n > 0) {
			for (size_t k = 0; k < n; k++) {
				chan_msg_free(msgs[k]);
			}
		}
		chan_disconnect(c);
		atomic_store(&F.recv_batch, -1);
		atomic_store(&F.send_form, -1);
	}
}
END_TEST

/* A valid batch answer: payloads, seqs, times, the redelivered flag. */
START_TEST(client_reads_batch_answer)
{
	chan_client *c;
	chan_msg    *msgs[10];
	size_t       n = 0;

	atomic_store(&F.mode, FK_VALID);
	c = connect_with(F.url, NULL);
	ck_status(chan_recv_n(c, "q", 10, msgs, &n, 0), CHAN_OK);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(chan_msg_len(msgs[0]), 3);
	ck_assert(memcmp(chan_msg_data(msgs[0]), "abc", 3) == 0);
	ck_assert_uint_eq(chan_msg_len(msgs[1]), 0);
	ck_assert_uint_eq(chan_msg_len(msgs[2]), 2);
	ck_assert(memcmp(chan_msg_data(msgs[2]), "de", 2) == 0);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_uint_eq(chan_msg_seq(msgs[i]), 5 + i);
		ck_assert_uint_eq(chan_msg_time_us(msgs[i]), 100 + i);
		ck_assert_str_eq(chan_msg_channel(msgs[i]), "q");
		ck_assert(chan_msg_redelivered(msgs[i]) == (i == 1));
	}
	for (size_t i = 0; i < 3; i++) {
		chan_msg_free(msgs[i]);
	}
	/* No deltas at all: allowed, seq and time 0. */
	atomic_store(&F.mode, FK_NO_DELTAS);
	ck_status(chan_recv_n(c, "q", 10, msgs, &n, 0), CHAN_OK);
	ck_assert_uint_eq(n, 3);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_uint_eq(chan_msg_seq(msgs[i]), 0);
		ck_assert_uint_eq(chan_msg_time_us(msgs[i]), 0);
		chan_msg_free(msgs[i]);
	}
	chan_disconnect(c);
}
END_TEST

/* Hostile batch answers: CHAN_PROTOCOL with a message, no crash. */
START_TEST(client_refuses_bad_batch_answers)
{
	static const struct {
		int         mode;
		const char *what;
	} bad[] = {
		{ FK_SIZES_OVER, "sizes over the data" },
		{ FK_SIZES_UNDER, "sizes under the data" },
		{ FK_TOO_MANY, "11 messages to a max of 10" },
		{ FK_BOTH_FORMS, "messages and batch" },
		{ FK_REDEL_RANGE, "redelivered index out of range" },
		{ FK_REDEL_ORDER, "redelivered indices going down" },
		{ FK_SEQ_COUNT, "2 seq deltas for 3 sizes" },
		{ FK_NO_SIZES, "an empty batch" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		chan_client *c;
		chan_msg    *msgs[10] = { NULL };
		size_t       n = 0;
		chan_status  st;

		atomic_store(&F.mode, FK_VALID);
		c = connect_with(F.url, NULL);
		atomic_store(&F.mode, bad[i].mode);
		st = chan_recv_n(c, "q", 10, msgs, &n, 0);
		ck_assert_msg(st == CHAN_PROTOCOL, "%s: %s (%s), expected PROTOCOL", bad[i].what,
		    chan_status_name(st), chan_last_error(c));
		ck_assert_msg(strlen(chan_last_error(c)) > 0, "%s: no message", bad[i].what);
		/* The client still works for a good answer afterwards. */
		atomic_store(&F.mode, FK_VALID);
		st = chan_recv_n(c, "q", 10, msgs, &n, 0);
		ck_assert_msg(st == CHAN_OK, "%s, then a good answer: %s (%s)", bad[i].what,
		    chan_status_name(st), chan_last_error(c));
		for (size_t k = 0; k < n; k++) {
			chan_msg_free(msgs[k]);
		}
		chan_disconnect(c);
	}
}
END_TEST

/* A batch answers a plain Recv only: to a RecvAny it is a protocol error. */
START_TEST(client_refuses_batch_to_recv_any)
{
	chan_client *c = connect_with(F.url, NULL);
	const char  *names[2] = { "q", "r" };
	chan_msg    *m = NULL;
	chan_status  st;

	st = chan_recv_any(c, names, 2, &m, 0);
	ck_assert_msg(st == CHAN_PROTOCOL, "%s (%s), expected PROTOCOL", chan_status_name(st),
	    chan_last_error(c));
	chan_disconnect(c);
}
END_TEST

static Suite *
batchform_suite(void)
{
	Suite *s = suite_create("batchform");
	TCase *tc = tcase_create("chand");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, both_forms_interoperate);
	tcase_add_test(tc, batch_messages_outlive_answer_and_client);
	tcase_add_test(tc, byte_bounds_deliver_everything);
	suite_add_tcase(s, tc);

	tc = tcase_create("fake");
	tcase_add_checked_fixture(tc, fake_setup, fake_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, client_picks_the_form);
	tcase_add_test(tc, client_reads_batch_answer);
	tcase_add_test(tc, client_refuses_bad_batch_answers);
	tcase_add_test(tc, client_refuses_batch_to_recv_any);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	int failed;

	failed = chh_run_suite(batchform_suite());
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
