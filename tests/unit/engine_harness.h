/*
 * engine_harness.h - the engine tests' in-process harness (test_engine.c,
 * test_engine_conns.c): requests are packed and decoded as the transport
 * does, submitted to an in-process engine with a reply function that
 * unpacks a copy of the answer and signals a condvar, and every request
 * is checked at teardown to have had exactly one answer.
 */
#ifndef CHAN_ENGINE_HARNESS_H
#define CHAN_ENGINE_HARNESS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <chan/status.h>

#include "engine.h"

typedef struct treq {
	chd_req             req; /* first: the reply gets a chd_req * */
	int                 nreplies;
	uint64_t            id;
	Chan__V1__Response *resp;
	struct treq        *all_next;
	atomic_bool         input_freed; /* the engine freed its request buffer */
} treq;

extern chd_engine *E;                     /* the test's engine */
extern uint64_t    force_client, force_id; /* idempotency tests: fixed ids */
extern int         th_answer_ms;          /* answer() waits this long (10 s) */
extern uint32_t    th_stat_conn;          /* stat_of() asks on it (1) */
/* Request buffers freed so far (submit lends each to its request, as the
 * transport does; big payloads keep theirs while queued). */
extern atomic_uint th_inputs_freed;
/* false: submit does not say where the request's bytes are, so every
 * payload is copied into the slabs (the slab tests want that); true by
 * default, and again after th_reset. */
extern bool th_lend_input;

/* Forgets the requests of the last test and the forced ids. */
void th_reset(void);
/* Starts E with o and opens connections 1..conns, connection c with
 * pid pid_base + c. */
void th_start(const chd_engine_opts *o, uint32_t conns, int pid_base);
/* Shuts E down and frees it; asserts every request had exactly one answer. */
void th_teardown(void);

treq               *submit(uint32_t conn, Chan__V1__Request *m);
/* The answer, waiting up to ms; NULL if none came. */
Chan__V1__Response *wait_for(treq *t, int ms);
/* The answer (asserted within th_answer_ms, with the request's id). */
Chan__V1__Response *answer(treq *t);
bool                pending(treq *t, int ms);
void                msleep(int ms);
/* The answer's status is st; an error answer carries a message. */
void                expect_status(treq *t, chan_status st);

treq *r_create(uint32_t conn, const char *name, int64_t cap);
/* n <= 64 messages; timeout -2: none given (wait forever). */
treq *r_sendv(uint32_t conn, const char *name, const char **msgs, size_t n,
    int64_t timeout, uint64_t sender);
treq *r_send(uint32_t conn, const char *name, const char *msg, int64_t timeout);
/* A plain recv of one message, with this timeout_ms (-1: forever). */
treq *r_recv(uint32_t conn, const char *name, int64_t timeout);
treq *r_recv_any(uint32_t conn, const char **names, size_t n, int64_t timeout);
treq *r_ack(uint32_t conn, const char *name, uint64_t seq);
treq *r_stat(uint32_t conn, const char *name);

Chan__V1__ChannelInfo *stat_of(const char *name);
/* Waits until name shows this many blocked senders and receivers. */
void wait_blocked(const char *name, uint32_t senders, uint32_t receivers);

#endif
