/*
 * consumer_sp.c - a direct consumer's I/O (sp.h says why): fetches and
 * Pings written and their answers read by the caller's own thread on the
 * consumer's own connection. Confirmations of deliveries are queued with
 * the connection they came over (chan_sp.gen) and ride on the next
 * request of that same connection; a new connection voids them, as the
 * daemon gave those deliveries back when the old one closed.
 */
#include "consumer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Queues a confirmation for the next request (ENOMEM: given back later, at-least-once). */
void
chan_kc_add(chan_consumer *k, uint64_t id, uint32_t taken, uint64_t gen)
{
	if (k->nkc == k->kc_cap) {
		size_t         ncap = k->kc_cap != 0 ? k->kc_cap * 2 : 16;
		chan_kconfirm *n = realloc(k->kc, ncap * sizeof(*n));

		if (n == NULL) {
			return;
		}
		k->kc = n;
		k->kc_cap = ncap;
	}
	k->kc[k->nkc++] = (chan_kconfirm) { id, taken, gen };
}

/*
 * Packs and writes a request carrying op (set in q) and every queued
 * confirmation of this connection (the others are void: that connection's
 * deliveries went back). The queue empties either way: a request that
 * does not arrive means a lost connection, and that voids them too. All
 * of them go, however many (a slow caller taking many one-message
 * deliveries while a fetch is parked queues one each).
 */
static chan_status
chan_kd_send(chan_consumer *k, Chan__V1__Request *q, uint64_t id)
{
	Chan__V1__PartConfirm  *parts = NULL, **pp = NULL;
	uint64_t               *conf = NULL;
	uint8_t                 small[1024], *buf = small;
	size_t                  len, i;
	chan_status             st = CHAN_OK;

	q->has_id = 1;
	q->id = id;
	q->has_client = 1;
	q->client = k->client_id;
	if (k->nkc > 0 && ((conf = malloc(k->nkc * sizeof(*conf))) == NULL ||
	                      (parts = malloc(k->nkc * sizeof(*parts))) == NULL ||
	                      (pp = malloc(k->nkc * sizeof(*pp))) == NULL)) {
		st = chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory");
		goto done; /* kept for the next request */
	}
	for (i = 0; i < k->nkc; i++) {
		const chan_kconfirm *c = &k->kc[i];

		if (c->gen != k->sp.gen) {
			continue;
		}
		if (c->taken == CHAN_TAKEN_ALL) {
			conf[q->n_confirm++] = c->id;
		} else if (k->confirm_part) {
			chan__v1__part_confirm__init(&parts[q->n_confirm_part]);
			parts[q->n_confirm_part].has_delivery = parts[q->n_confirm_part].has_taken = 1;
			parts[q->n_confirm_part].delivery = c->id;
			parts[q->n_confirm_part].taken = c->taken;
			pp[q->n_confirm_part] = &parts[q->n_confirm_part];
			q->n_confirm_part++;
		}
	}
	q->confirm = conf;
	q->confirm_part = pp;
	len = chan__v1__request__get_packed_size(q);
	if (len > sizeof(small) && (buf = malloc(len)) == NULL) {
		st = chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory");
		goto done;
	}
	(void) chan__v1__request__pack(q, buf);
	k->nkc = 0;
	st = chan_sp_send(&k->sp, (uint32_t) id, buf, len);
done:
	if (buf != small) {
		free(buf);
	}
	free(conf);
	free(parts);
	free(pp);
	return (st);
}

/* (Re)writes the fetch in flight, connecting first when needed. */
chan_status
chan_kd_send_fetch(chan_consumer *k)
{
	Chan__V1__Request q = CHAN__V1__REQUEST__INIT;
	Chan__V1__Recv    r = CHAN__V1__RECV__INIT;
	chan_status       st;

	if (k->sp.fd < 0 && (st = chan_sp_dial(&k->sp, CHAN_SP_DIAL_MS, k->wake[0])) != CHAN_OK) {
		return (st);
	}
	r.name = k->name;
	r.has_max = 1;
	r.max = k->fetch_want;
	r.has_timeout_ms = 1;
	r.timeout_ms = k->fetch_timeout < 0 ? -1 : k->fetch_timeout;
	r.has_batch = r.batch = k->batch_form;
	if (k->fetch_bytes > 0) {
		r.has_max_bytes = 1;
		r.max_bytes = k->fetch_bytes;
	}
	q.op_case = CHAN__V1__REQUEST__OP_RECV;
	q.recv = &r;
	atomic_store(&k->live_fetch, k->fetch_id);
	st = chan_kd_send(k, &q, k->fetch_id);
	k->fetch_sent = st == CHAN_OK;
	return (st);
}

/*
 * Reads answers until the one to request id comes (kept in *ans), until
 * deadline_ms (< 0: no bound); the fetch's answer, read on the way, is
 * kept in k->ans. wake: chan_consumer_cancel ends the wait.
 */
static chan_status
chan_kd_read(chan_consumer *k, uint64_t id, void **ans, size_t *len, int64_t deadline_ms,
    bool wake)
{
	for (;;) {
		uint32_t    rid;
		void       *b;
		size_t      n;
		chan_status st = chan_sp_recv(&k->sp, &rid, &b, &n, deadline_ms, wake ? k->wake[0] : -1);

		if (st != CHAN_OK) {
			return (st);
		}
		if (rid == ((uint32_t) id & 0x7fffffffu)) {
			*ans = b;
			*len = n;
			return (CHAN_OK);
		}
		if (k->inflight && k->ans == NULL && rid == ((uint32_t) k->fetch_id & 0x7fffffffu)) {
			k->ans = b; /* the fetch answered while a Ping waited */
			k->ans_len = n;
			continue;
		}
		free(b); /* a Ping given up on earlier, a Cancel's answer */
	}
}

/* Gives up the fetch in flight with status st (told once the buffer is drained). */
static void
chan_kd_give_up(chan_consumer *k, chan_status st, const char *why)
{
	k->pend = st;
	snprintf(k->pend_msg, sizeof(k->pend_msg), "%s", why);
}

/*
 * Waits for the fetch's answer (into k->ans) until deadline_ms (< 0: no
 * bound). No connection: dial again every CHAN_RESET_PAUSE_MS for as long
 * as the caller waits, as nng's dialer does. A connection lost under the
 * fetch: the same fetch again on a new one (same client and id: the
 * daemon answers it once), at most CHAN_MAX_RESETS times. false: the
 * deadline passed; true: answered, failed (k->pend) or cancelled.
 */
bool
chan_kd_wait(chan_consumer *k, int64_t deadline_ms)
{
	while (k->ans == NULL && k->pend == CHAN_OK) {
		chan_status st;

		if (chan_consumer_is_cancelled(k)) {
			return (true);
		}
		if (!k->fetch_sent && chan_kd_send_fetch(k) != CHAN_OK) {
			if (deadline_ms >= 0 && chl_now_mono_ms() >= deadline_ms) {
				return (false);
			}
			(void) chan_sp_pause(k->wake[0], CHAN_RESET_PAUSE_MS);
			continue;
		}
		st = chan_kd_read(k, k->fetch_id, &k->ans, &k->ans_len, deadline_ms, true);
		if (st == CHAN_OK || chan_consumer_is_cancelled(k)) {
			continue;
		}
		if (st == CHAN_TIMEOUT) {
			return (false);
		}
		k->fetch_sent = false;
		if (st != CHAN_UNAVAILABLE) {
			chan_kd_give_up(k, st, chan_last_error(NULL));
		} else if (++k->resets > CHAN_MAX_RESETS) {
			chan_kd_give_up(k, CHAN_UNAVAILABLE,
			    "the daemon closed the connection under this fetch too many times");
		} else {
			(void) chan_sp_pause(k->wake[0], CHAN_RESET_PAUSE_MS);
		}
	}
	return (true);
}

/* The fetch's answer (k->ans) decoded into the buffer, or its failure into pend. */
void
chan_kd_absorb(chan_consumer *k)
{
	chan_exchange x;
	chan_msg    **msgs = NULL;
	size_t        n = 0, i;
	uint64_t      delivery = 0;
	chan_status   st;
	Chan__V1__Recv recv = CHAN__V1__RECV__INIT;

	chan_exchange_init(&x);
	recv.name = k->name;
	x.req.id = k->fetch_id;
	x.req.op_case = CHAN__V1__REQUEST__OP_RECV;
	x.req.recv = &recv;
	atomic_store(&k->live_fetch, 0);
	st = chan_decode_bytes(k->sp.url, &x, k->ans, free, k->ans, k->ans_len);
	k->ans = NULL;
	k->inflight = false;
	k->resets = 0;
	if (st == CHAN_OK) {
		st = chan_answer_status(x.resp);
	}
	if (st == CHAN_OK &&
	    (!chan_ring_grow((void **) &k->buf, sizeof(*k->buf), &k->bhead, k->bn, &k->bcap,
	         k->fetch_want) ||
	        !chan_ring_grow((void **) &k->dq, sizeof(*k->dq), &k->dhead, k->dn, &k->dcap, 1) ||
	        (msgs = calloc(k->fetch_want, sizeof(*msgs))) == NULL)) {
		st = chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory for prefetched messages");
	}
	if (st == CHAN_OK) {
		delivery = x.resp->delivery; /* the messages take x.resp with them */
		st = chan_unpack_msgs_from(k->sp.url, &x, k->fetch_want, msgs, &n);
	}
	if (st != CHAN_OK) {
		chan_kd_give_up(k, st, chan_last_error(NULL));
	} else {
		for (i = 0; i < n; i++) {
			k->buf[(k->bhead + k->bn) % k->bcap] = msgs[i];
			k->bn++;
		}
		k->dq[(k->dhead + k->dn) % k->dcap] =
		    (chan_kdelivery) { delivery, NNG_PIPE_INITIALIZER, k->sp.gen, n, n };
		k->dn++;
		k->fetched += n;
	}
	free(msgs);
	chan_exchange_fini(&x);
}

/* A Ping carrying the queued confirmations, answered within CHAN_CONFIRM_PING_MS. */
void
chan_kd_ping(chan_consumer *k, int64_t deadline_ms)
{
	Chan__V1__Request q = CHAN__V1__REQUEST__INIT;
	Chan__V1__Ping    p = CHAN__V1__PING__INIT;
	uint64_t          id = atomic_fetch_add(&k->next_id, 1) + 1;
	void             *ans = NULL;
	size_t            len;

	if (k->sp.fd < 0) {
		k->nkc = 0; /* no connection: its deliveries went back */
		return;
	}
	q.op_case = CHAN__V1__REQUEST__OP_PING;
	q.ping = &p;
	if (chan_kd_send(k, &q, id) == CHAN_OK &&
	    chan_kd_read(k, id, &ans, &len, deadline_ms, false) == CHAN_OK) {
		free(ans);
	}
}

/*
 * From any thread: the parked fetch is withdrawn (a Cancel naming it, as
 * chan_cancel does), so the channel has no receiver left behind, and a
 * read blocked in chan_sp_recv wakes (it polls k->wake too).
 */
void
chan_kd_cancel(chan_consumer *k)
{
	uint64_t id = atomic_load(&k->live_fetch);

	if (id != 0 && k->cancel_op) {
		chan_sp_cancel_aside(&k->sp, k->client_id, atomic_fetch_add(&k->next_id, 1) + 1, id);
	}
	(void) !write(k->wake[1], "x", 1);
}

chan_status
chan_kd_open(chan_consumer *k, chan_client *c)
{
	chan_status s;

	/* First, so that chan_kd_close can undo whatever follows. */
	s = chan_sp_init(&k->sp, chan_url(c), chan_recv_bound(c));
	k->direct = true;
	k->wake[0] = k->wake[1] = -1;
	if (s != CHAN_OK || (s = chan_sp_wake_open(k->wake)) != CHAN_OK) {
		return (s);
	}
	k->dmax = c->max_batch;
	k->batch_form = c->batch_form;
	k->confirm_part = c->confirm_part;
	k->cancel_op = c->cancel_op;
	k->client_id = chan_random_id();
	return (chan_sp_dial(&k->sp, CHAN_SP_DIAL_MS, k->wake[0]));
}

void
chan_kd_close(chan_consumer *k)
{
	if (k->nkc > 0) {
		/* Last confirmations, then the connection closes. */
		chan_kd_ping(k, chl_now_mono_ms() + CHAN_CONFIRM_PING_MS);
	}
	free(k->ans); /* never absorbed: its delivery goes back with the connection */
	k->ans = NULL;
	chan_sp_fini(&k->sp);
	chan_sp_wake_close(k->wake);
	free(k->kc);
}
