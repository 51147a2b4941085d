/*
 * test_engine_stress.c - races between shards: recv_any claims racing
 * sends, timers and connection closes on several shards at once. Run it
 * under TSan (-DCHAN_SANITIZE=thread); the checks are exactly-once
 * delivery and one answer per request.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <chan/status.h>

#include "engine.h"
#include "wire.h"

typedef struct sreq {
	chd_req             req;
	pthread_mutex_t     m;
	pthread_cond_t      c;
	int                 nreplies;
	Chan__V1__Response *resp;
} sreq;

static chd_engine  *E;
static atomic_int   extra_replies;

static void
s_reply(chd_req *r, const Chan__V1__Response *resp)
{
	sreq    *x = (sreq *) r;
	size_t   len = chan__v1__response__get_packed_size(resp);
	uint8_t *buf = malloc(len + 1);

	chan__v1__response__pack(resp, buf);
	chl_request_free(&r->alloc, r->msg);
	r->msg = NULL;
	pthread_mutex_lock(&x->m);
	if (x->nreplies++ == 0) {
		x->resp = chan__v1__response__unpack(NULL, len, buf);
	} else {
		atomic_fetch_add(&extra_replies, 1);
	}
	pthread_cond_broadcast(&x->c);
	pthread_mutex_unlock(&x->m);
	free(buf);
}

static sreq *
s_submit(uint32_t conn, Chan__V1__Request *m)
{
	sreq    *x = calloc(1, sizeof(*x));
	size_t   len = chan__v1__request__get_packed_size(m);
	uint8_t *buf = malloc(len + 1);

	pthread_mutex_init(&x->m, NULL);
	pthread_cond_init(&x->c, NULL);
	chan__v1__request__pack(m, buf);
	chl_capped_alloc_init(&x->req.alloc, 64u << 20);
	x->req.msg = chl_request_decode(&x->req.alloc, buf, len);
	free(buf);
	x->req.conn = conn;
	x->req.reply = s_reply;
	chd_engine_submit(E, &x->req);
	return (x);
}

/* Waits for the answer, returns its status, frees the request. */
static int
s_finish(sreq *x, Chan__V1__Response **keep)
{
	int st;

	pthread_mutex_lock(&x->m);
	while (x->nreplies == 0) {
		pthread_cond_wait(&x->c, &x->m);
	}
	pthread_mutex_unlock(&x->m);
	st = (int) x->resp->status;
	if (keep != NULL) {
		*keep = x->resp;
	} else {
		chan__v1__response__free_unpacked(x->resp, NULL);
	}
	pthread_mutex_destroy(&x->m);
	pthread_cond_destroy(&x->c);
	free(x);
	return (st);
}

#define NCHAN     8
#define NPROD     3
#define PER_PROD  600

static char names[NCHAN][16];

static void *
producer(void *arg)
{
	int id = (int) (intptr_t) arg;

	for (int i = 0; i < PER_PROD; i++) {
		Chan__V1__Request   m = CHAN__V1__REQUEST__INIT;
		Chan__V1__Send      s = CHAN__V1__SEND__INIT;
		ProtobufCBinaryData d;
		char                buf[32];

		snprintf(buf, sizeof(buf), "%d:%d", id, i);
		d.data = (uint8_t *) buf;
		d.len = strlen(buf);
		s.name = names[(i * 7 + id) % NCHAN];
		s.n_data = 1;
		s.data = &d;
		m.op_case = CHAN__V1__REQUEST__OP_SEND;
		m.send = &s;
		ck_assert_int_eq(s_finish(s_submit((uint32_t) (10 + id), &m),
		    NULL), CHAN_OK);
	}
	return (NULL);
}

START_TEST(test_recv_any_races_exactly_once)
{
	chd_engine_opts o;
	pthread_t       th[NPROD];
	static bool     seen[NPROD][PER_PROD];
	int             got = 0, timeouts = 0;
	uint64_t        confirm = 0;

	chd_engine_opts_default(&o);
	o.workers = 4;
	ck_assert_int_eq(chd_engine_start(&o, &E), 0);
	for (int i = 0; i < NCHAN; i++) {
		snprintf(names[i], sizeof(names[i]), "st.%d", i);
	}
	memset(seen, 0, sizeof(seen));
	for (int i = 0; i < NPROD; i++) {
		pthread_create(&th[i], NULL, producer, (void *) (intptr_t) i);
	}
	while (got < NPROD * PER_PROD) {
		Chan__V1__Request   m = CHAN__V1__REQUEST__INIT;
		Chan__V1__RecvAny   r = CHAN__V1__RECV_ANY__INIT;
		char               *nm[NCHAN];
		Chan__V1__Response *resp;
		int                 st, p, i;

		for (int k = 0; k < NCHAN; k++) {
			nm[k] = names[k];
		}
		r.names = nm;
		r.n_names = NCHAN;
		r.has_timeout_ms = true;
		r.timeout_ms = 1 + got % 3; /* timers race arrivals */
		m.op_case = CHAN__V1__REQUEST__OP_RECV_ANY;
		m.recv_any = &r;
		if (confirm != 0) {
			m.n_confirm = 1;
			m.confirm = &confirm;
		}
		st = s_finish(s_submit(1, &m), &resp);
		confirm = 0;
		if (st == CHAN_TIMEOUT) {
			timeouts++;
			chan__v1__response__free_unpacked(resp, NULL);
			ck_assert_int_lt(timeouts, 100000);
			continue;
		}
		ck_assert_int_eq(st, CHAN_OK);
		ck_assert_uint_eq(resp->recv->n_messages, 1);
		{
			char   txt[32];
			size_t len = resp->recv->messages[0]->data.len;
			ck_assert_uint_lt(len, sizeof(txt));
			memcpy(txt, resp->recv->messages[0]->data.data, len);
			txt[len] = '\0';
			ck_assert(sscanf(txt, "%d:%d", &p, &i) == 2);
		}
		ck_assert(!seen[p][i]);
		seen[p][i] = true;
		confirm = resp->delivery;
		got++;
		chan__v1__response__free_unpacked(resp, NULL);
	}
	for (int i = 0; i < NPROD; i++) {
		pthread_join(th[i], NULL);
	}
	chd_engine_shutdown(E);
	chd_engine_free(E);
	ck_assert_int_eq(atomic_load(&extra_replies), 0);
}
END_TEST

/* Parked recv_any and recvs on many conns, closed while messages flow. */
START_TEST(test_conn_close_races_sends)
{
	chd_engine_opts o;
	sreq           *w[200];
	int             ok = 0, unavailable = 0;

	chd_engine_opts_default(&o);
	o.workers = 3;
	ck_assert_int_eq(chd_engine_start(&o, &E), 0);
	for (int i = 0; i < 200; i++) {
		Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
		Chan__V1__RecvAny r = CHAN__V1__RECV_ANY__INIT;
		char              a[16], b[16];
		char             *nm[2] = { a, b };

		snprintf(a, sizeof(a), "cc.%da", i);
		snprintf(b, sizeof(b), "cc.%db", i);
		r.names = nm;
		r.n_names = 2;
		r.has_timeout_ms = true;
		r.timeout_ms = -1;
		m.op_case = CHAN__V1__REQUEST__OP_RECV_ANY;
		m.recv_any = &r;
		chd_engine_conn_open(E, (uint32_t) (100 + i), 0);
		w[i] = s_submit((uint32_t) (100 + i), &m);
	}
	for (int i = 0; i < 200; i++) {
		Chan__V1__Request   m = CHAN__V1__REQUEST__INIT;
		Chan__V1__Send      s = CHAN__V1__SEND__INIT;
		ProtobufCBinaryData d = { 1, (uint8_t *) "x" };
		char                b[16];

		snprintf(b, sizeof(b), "cc.%db", i);
		s.name = b;
		s.n_data = 1;
		s.data = &d;
		m.op_case = CHAN__V1__REQUEST__OP_SEND;
		m.send = &s;
		if (i % 2 == 0) {
			chd_engine_conn_close(E, (uint32_t) (100 + i));
		}
		ck_assert_int_eq(s_finish(s_submit(1, &m), NULL), CHAN_OK);
		if (i % 2 == 1) {
			chd_engine_conn_close(E, (uint32_t) (100 + i));
		}
	}
	for (int i = 0; i < 200; i++) {
		int st = s_finish(w[i], NULL);
		ck_assert(st == CHAN_OK || st == CHAN_UNAVAILABLE);
		ok += st == CHAN_OK;
		unavailable += st == CHAN_UNAVAILABLE;
	}
	ck_assert_int_eq(ok + unavailable, 200);
	chd_engine_shutdown(E);
	chd_engine_free(E);
	ck_assert_int_eq(atomic_load(&extra_replies), 0);
}
END_TEST

int
main(void)
{
	Suite   *s = suite_create("engine_stress");
	TCase   *tc = tcase_create("races");
	SRunner *sr;
	int      nf;

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_recv_any_races_exactly_once);
	tcase_add_test(tc, test_conn_close_races_sends);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (nf == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
