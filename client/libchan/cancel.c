/*
 * cancel.c - telling the daemon about calls stopped on the client.
 *
 * Stopping a call closes its nng context, which only stops the client
 * waiting: the request stays parked in the daemon (a receive would take
 * the next message into an answer nobody reads). So every stopped call
 * whose answer has not arrived is named in a Request.cancel on the same
 * connection, when the daemon's HelloResult says it knows the op (older
 * daemons get nothing new). Fire and forget: the stopping thread only
 * queues the id (under c->mtx) and at most starts an nng send; one Cancel
 * is in flight at a time on its own context and aio, driven by the aio's
 * callback (send, then read the answer, then send what queued meanwhile).
 * chan_disconnect waits for it (chan_cancel_settle), so the socket never
 * closes while a Cancel is being written or answered (nng #1543).
 */
#include "client.h"

#include <stdlib.h>
#include <string.h>

/* Each step of the Cancel exchange is bounded: the daemon answers at once. */
#define CHAN_CANCEL_TIMEOUT_MS 3000

static void chan_cancel_cb(void *arg);

void
chan_cancel_note(chan_client *c, chan_call_link *link)
{
	if (!c->cancel_op || link->clean || link->withdrawn || link->req_id == 0) {
		return; /* an answer is in: the call ends with it */
	}
	if (c->cx_n == c->cx_cap) {
		size_t    ncap = c->cx_cap ? c->cx_cap * 2 : 16;
		uint64_t *n = realloc(c->cx_ids, ncap * sizeof(*n));

		if (n == NULL) {
			return; /* as without Cancel: freed when the connection closes */
		}
		c->cx_ids = n;
		c->cx_cap = ncap;
	}
	c->cx_ids[c->cx_n++] = link->req_id;
	link->withdrawn = true;
}

/* The Cancel of up to max_batch queued ids, packed; NULL without memory. */
static nng_msg *
chan_cancel_msg(chan_client *c, size_t *taken)
{
	Chan__V1__Request req = CHAN__V1__REQUEST__INIT;
	Chan__V1__Cancel  cm = CHAN__V1__CANCEL__INIT;
	size_t            n = c->cx_n < c->max_batch ? c->cx_n : c->max_batch;
	nng_msg          *m;

	cm.ids = c->cx_ids;
	cm.n_ids = n;
	req.has_id = 1;
	req.id = atomic_fetch_add(&c->next_id, 1);
	req.has_client = 1;
	req.client = c->client_id;
	req.op_case = CHAN__V1__REQUEST__OP_CANCEL;
	req.cancel = &cm;
	if (nng_msg_alloc(&m, chan__v1__request__get_packed_size(&req)) != 0) {
		return (NULL);
	}
	(void) chan__v1__request__pack(&req, nng_msg_body(m));
	*taken = n;
	return (m);
}

/* Ids that cannot be sent: their calls stay parked until the connection closes. */
static void
chan_cancel_drop(chan_client *c)
{
	c->cx_n = 0;
}

void
chan_cancel_kick(chan_client *c)
{
	nng_msg *m;
	size_t   n = 0;

	if (c->cx_busy || c->cx_n == 0) {
		return;
	}
	if (c->cx_aio == NULL) {
		if (nng_aio_alloc(&c->cx_aio, chan_cancel_cb, c) != 0) {
			c->cx_aio = NULL;
			chan_cancel_drop(c);
			return;
		}
		nng_aio_set_timeout(c->cx_aio, CHAN_CANCEL_TIMEOUT_MS);
	}
	if (!c->cx_open) {
		if (chan_ctx_open(c, &c->cx_ctx) != 0) {
			chan_cancel_drop(c);
			return;
		}
		c->cx_open = true;
	}
	if ((m = chan_cancel_msg(c, &n)) == NULL) {
		chan_cancel_drop(c);
		return;
	}
	memmove(c->cx_ids, c->cx_ids + n, (c->cx_n - n) * sizeof(*c->cx_ids));
	c->cx_n -= n;
	c->cx_busy = true;
	c->cx_recv = false;
	nng_aio_set_msg(c->cx_aio, m);
	/* nng never completes it inline: the callback runs on its threads. */
	nng_ctx_send(c->cx_ctx, c->cx_aio);
}

static void
chan_cancel_cb(void *arg)
{
	chan_client *c = arg;
	int          rv = nng_aio_result(c->cx_aio);
	nng_msg     *m;

	pthread_mutex_lock(&c->mtx);
	if (!c->cx_recv && rv == 0) {
		c->cx_recv = true;
		nng_ctx_recv(c->cx_ctx, c->cx_aio);
		pthread_mutex_unlock(&c->mtx);
		return;
	}
	if ((m = nng_aio_get_msg(c->cx_aio)) != NULL) {
		nng_aio_set_msg(c->cx_aio, NULL);
		nng_msg_free(m); /* the answer (OK and a count), or the unsent request */
	}
	if (rv != 0) {
		/* The context may hold a half-done exchange: a new one next time. */
		nng_ctx_close(c->cx_ctx);
		c->cx_open = false;
	}
	c->cx_busy = false;
	chan_cancel_kick(c); /* what was queued meanwhile */
	if (!c->cx_busy) {
		pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mtx);
}

void
chan_cancel_settle(chan_client *c)
{
	while (c->cx_busy) {
		pthread_cond_wait(&c->cv, &c->mtx);
	}
	if (c->cx_aio != NULL) {
		nng_aio *aio = c->cx_aio;

		/* Its callback may still be returning: free it unlocked. */
		c->cx_aio = NULL;
		pthread_mutex_unlock(&c->mtx);
		nng_aio_free(aio);
		pthread_mutex_lock(&c->mtx);
	}
	if (c->cx_open) {
		nng_ctx_close(c->cx_ctx);
		c->cx_open = false;
	}
}
