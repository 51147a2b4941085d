/*
 * fuzz_request.c - libFuzzer over what a client can make chand do: the
 * first byte picks a connection (1..4; 0xff: that connection goes away),
 * the rest is a request body, decoded exactly like the transport does (one
 * capped allocator per request) and submitted to a real in-process engine.
 *
 * Crashes, sanitizer reports, and these invariants are findings:
 * - every submitted request is answered exactly once, within a few seconds
 *   (timeouts are forced to 0 so nothing may legitimately park);
 * - every answer packs and decodes again, with a status from the list.
 *
 * Build and run: ./scripts/dev fuzz [seconds]
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <chan/status.h>

#include "engine.h"
#include "wire.h"

#define FZ_CONNS   4
#define FZ_CAP     (8u << 20)     /* decode budget of one request */
#define FZ_RESTART 2000           /* inputs between engine restarts */
#define FZ_WAIT_MS 5000           /* an answer later than this is a hang */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static chd_engine     *fz_engine;
static pthread_mutex_t fz_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  fz_cv = PTHREAD_COND_INITIALIZER;
static unsigned long   fz_submitted, fz_answered;
static unsigned long   fz_inputs;

static void
fz_die(const char *why)
{
	fprintf(stderr, "fuzz_request: %s\n", why);
	abort();
}

static void
fz_reply(chd_req *r, const Chan__V1__Response *resp)
{
	size_t              len;
	uint8_t            *buf;
	Chan__V1__Response *back;

	if (resp == NULL) {
		fz_die("reply without a response");
	}
	if ((unsigned) resp->status >= (unsigned) CHAN_STATUS_COUNT_) {
		fz_die("status outside the list");
	}
	len = chan__v1__response__get_packed_size(resp);
	if ((buf = malloc(len > 0 ? len : 1)) == NULL) {
		fz_die("out of memory");
	}
	if (chan__v1__response__pack(resp, buf) != len) {
		fz_die("packed size differs from the prediction");
	}
	if ((back = chan__v1__response__unpack(NULL, len, buf)) == NULL) {
		fz_die("an answer does not decode");
	}
	chan__v1__response__free_unpacked(back, NULL);
	free(buf);
	/* The reply function owns the request (engine.h). */
	chl_request_free(&r->alloc, r->msg);
	free(r);
	pthread_mutex_lock(&fz_mtx);
	fz_answered++;
	pthread_cond_broadcast(&fz_cv);
	pthread_mutex_unlock(&fz_mtx);
}

static void
fz_start(void)
{
	chd_engine_opts opts;

	chd_engine_opts_default(&opts);
	opts.workers = 2;
	if (chd_engine_start(&opts, &fz_engine) != 0) {
		fz_die("engine did not start");
	}
	for (uint32_t c = 1; c <= FZ_CONNS; c++) {
		chd_engine_conn_open(fz_engine, c, 0);
	}
}

static void
fz_stop(void)
{
	for (uint32_t c = 1; c <= FZ_CONNS; c++) {
		chd_engine_conn_close(fz_engine, c);
	}
	chd_engine_shutdown(fz_engine);
	chd_engine_free(fz_engine);
	fz_engine = NULL;
}

/* Nothing may wait: every timeout becomes 0, every delay short. */
static void
fz_no_waiting(Chan__V1__Request *m)
{
	switch (m->op_case) {
	case CHAN__V1__REQUEST__OP_SEND:
		m->send->has_timeout_ms = 1;
		m->send->timeout_ms = 0;
		break;
	case CHAN__V1__REQUEST__OP_RECV:
		m->recv->has_timeout_ms = 1;
		m->recv->timeout_ms = 0;
		if (m->recv->lease_ms > 50) {
			m->recv->lease_ms = 50;
		}
		break;
	case CHAN__V1__REQUEST__OP_RECV_ANY:
		m->recv_any->has_timeout_ms = 1;
		m->recv_any->timeout_ms = 0;
		break;
	case CHAN__V1__REQUEST__OP_COUNTER_WAIT:
		m->counter_wait->has_timeout_ms = 1;
		m->counter_wait->timeout_ms = 0;
		break;
	case CHAN__V1__REQUEST__OP_RELEASE:
		if (m->release->delay_ms > 50) {
			m->release->delay_ms = 50;
		}
		break;
	default:
		break;
	}
}

static void
fz_wait_answers(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += FZ_WAIT_MS / 1000;
	pthread_mutex_lock(&fz_mtx);
	while (fz_answered < fz_submitted) {
		if (pthread_cond_timedwait(&fz_cv, &fz_mtx, &ts) != 0) {
			pthread_mutex_unlock(&fz_mtx);
			fz_die("a request got no answer within 5 s");
		}
	}
	if (fz_answered > fz_submitted) {
		pthread_mutex_unlock(&fz_mtx);
		fz_die("a request was answered twice");
	}
	pthread_mutex_unlock(&fz_mtx);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	fz_start();
	return (0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	chd_req *r;
	uint32_t conn;

	if (size < 1) {
		return (0);
	}
	if (++fz_inputs % FZ_RESTART == 0) {
		/* Shutdown with state in it, and memory kept bounded. */
		fz_stop();
		fz_start();
	}
	if (data[0] == 0xff) {
		/* A connection goes away (and a new one takes its id). */
		conn = 1 + (size > 1 ? data[1] % FZ_CONNS : 0);
		chd_engine_conn_close(fz_engine, conn);
		chd_engine_conn_open(fz_engine, conn, 0);
		return (0);
	}
	conn = 1 + data[0] % FZ_CONNS;
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		fz_die("out of memory");
	}
	chl_capped_alloc_init(&r->alloc, FZ_CAP);
	if (data[0] & 0x40) {
		/* As chand's transport does: payloads point into the input,
		 * which the request frees with itself (ASan sees a late use). */
		uint8_t *copy = malloc(size);

		if (copy == NULL) {
			fz_die("out of memory");
		}
		memcpy(copy, data + 1, size - 1);
		chl_capped_alloc_borrow(&r->alloc, copy, free);
		r->msg = chl_request_decode(&r->alloc, copy, size - 1);
	} else {
		r->msg = chl_request_decode(&r->alloc, data + 1, size - 1);
	}
	if (r->msg == NULL) {
		/* The transport answers PROTOCOL itself; nothing to submit. */
		if (r->alloc.used != 0) {
			fz_die("a failed decode kept allocator budget");
		}
		free(r);
		return (0);
	}
	fz_no_waiting(r->msg);
	r->conn = conn;
	r->reply = fz_reply;
	pthread_mutex_lock(&fz_mtx);
	fz_submitted++;
	pthread_mutex_unlock(&fz_mtx);
	chd_engine_submit(fz_engine, r);
	fz_wait_answers();
	return (0);
}
