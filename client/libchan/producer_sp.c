/*
 * producer_sp.c - a direct producer's I/O (sp.h says why): the producer's
 * I/O thread packs each batch as one Send, writes it on the producer's
 * own connection and reads the answer, while the caller keeps filling the
 * next batch and the producer thread runs the outcomes. A lost connection
 * is dialled again (as nng's dialer would) and the same request written
 * again (same client and id, so the daemon never does it twice). chan_cancel(c) reaches the thread through a hook
 * on c and a pipe its reads poll.
 */
#include "producer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Whether b's payloads lie back to back, in order (one block to write from). */
static bool
chan_producer_contiguous(const chan_pbatch *b)
{
	for (uint32_t i = 1; i < b->n; i++) {
		if ((const char *) b->bufs[i].data !=
		    (const char *) b->bufs[i - 1].data + b->bufs[i - 1].len) {
			return (false);
		}
	}
	return (b->n > 0 && b->bufs[0].data != NULL);
}

/*
 * The batch in flight as one Send request in p->pk (a new Request.id),
 * its payloads left where they are when they can be written from there:
 * a copy of every byte saved (the 1 KiB stream spent 8% of all its CPU,
 * daemon included, on that copy).
 */
static chan_status
chan_producer_pack(chan_producer *p, const chan_pbatch *b)
{
	Chan__V1__Request q = CHAN__V1__REQUEST__INIT;
	Chan__V1__Send    snd = CHAN__V1__SEND__INIT;
	chl_batch_layout  lay;
	size_t            need;
	uint32_t          i;

	for (i = 0; i < b->n; i++) {
		p->wdata[i].data = (uint8_t *) b->bufs[i].data;
		p->wdata[i].len = b->bufs[i].len;
	}
	snd.name = p->name;
	snd.n_data = b->n;
	snd.data = p->wdata;
	snd.has_timeout_ms = 1;
	snd.timeout_ms = p->timeout_ms < 0 ? -1 : p->timeout_ms;
	q.has_id = 1;
	q.id = p->req_id = ++p->next_id;
	q.has_client = 1;
	q.client = p->client_id;
	q.op_case = CHAN__V1__REQUEST__OP_SEND;
	q.send = &snd;
	need = chl_request_packed_size(&q, p->c->batch_form, &lay);
	p->gather_len = 0;
	if (p->c->batch_form && chan_producer_contiguous(b)) {
		p->gather = (const uint8_t *) b->bufs[0].data;
		p->gather_len = lay.data;
		need -= lay.data;
	}
	if (need > p->pk_cap) {
		uint8_t *n = realloc(p->pk, need);

		if (n == NULL) {
			return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory for a batch request"));
		}
		p->pk = n;
		p->pk_cap = need;
	}
	if (p->gather_len == 0) {
		p->pk_len = chl_request_pack(&q, p->c->batch_form, &lay, p->pk);
	} else if ((p->pk_len = chl_request_pack_gather(&q, &lay, p->pk, &p->pk_split)) == 0) {
		/* Never: a batch of payloads is a Send the batch form carries. */
		return (chan_fail(CHAN_INTERNAL, "a batch the batch form cannot carry"));
	}
	return (CHAN_OK);
}

/* chan_cancel(c) (any thread, under c's lock): the thread stops waiting. */
static void
chan_producer_cancel_hook(void *arg)
{
	chan_producer *p = arg;

	atomic_store(&p->cancelled, true);
	(void) !write(p->wakefd[1], "x", 1);
}

/*
 * Cancelled: the connection closes, so a send parked in the daemon is
 * withdrawn with it (the outcome is "cancelled" either way, as for a
 * call on c).
 */
static chan_status
chan_producer_cancelled(chan_producer *p)
{
	chan_sp_close(&p->sp);
	return (chan_fail(CHAN_UNAVAILABLE, "cancelled"));
}

/* Writes p->pk, connecting first (as nng's dialer would: until it works). */
static chan_status
chan_producer_write(chan_producer *p)
{
	while (p->sp.fd < 0 && !atomic_load(&p->cancelled) &&
	    chan_sp_dial(&p->sp, CHAN_SP_DIAL_MS, p->wakefd[0]) != CHAN_OK) {
		(void) chan_sp_pause(p->wakefd[0], CHAN_RESET_PAUSE_MS);
	}
	if (atomic_load(&p->cancelled)) {
		return (chan_producer_cancelled(p));
	}
	if (p->gather_len > 0) {
		struct iovec parts[3] = {
			{ p->pk, p->pk_split },
			{ (void *) p->gather, p->gather_len },
			{ p->pk + p->pk_split, p->pk_len - p->pk_split },
		};

		return (chan_sp_sendv(&p->sp, (uint32_t) p->req_id, parts, 3));
	}
	return (chan_sp_send(&p->sp, (uint32_t) p->req_id, p->pk, p->pk_len));
}

/*
 * The answer to p->pk, written with status st. A connection lost under
 * it: the same request (same client and id, so the daemon never does it
 * twice) goes again on a new one, as nng's client does.
 */
static chan_status
chan_producer_read(chan_producer *p, chan_status st, void **ans, size_t *alen)
{
	uint32_t rid;
	int      resets = 0;

	for (;;) {
		while (st == CHAN_OK) {
			st = chan_sp_recv(&p->sp, &rid, ans, alen, -1, p->wakefd[0]);
			if (st == CHAN_OK && rid == ((uint32_t) p->req_id & 0x7fffffffu)) {
				return (CHAN_OK);
			}
			if (st == CHAN_OK) { /* not this request's: never expected, dropped */
				free(*ans);
				*ans = NULL;
			}
		}
		if (atomic_load(&p->cancelled)) {
			return (chan_producer_cancelled(p));
		}
		if (st != CHAN_UNAVAILABLE || ++resets > CHAN_MAX_RESETS) {
			return (st != CHAN_UNAVAILABLE ? st : chan_fail(CHAN_UNAVAILABLE,
			    "%s closed the connection %d times under this request (over its "
			    "request size limit?)", p->sp.url, CHAN_MAX_RESETS + 1));
		}
		(void) chan_sp_pause(p->wakefd[0], CHAN_RESET_PAUSE_MS);
		st = chan_producer_write(p);
	}
}

/* The batch's outcome from its answer (taken over). *seq: its first seq. */
static chan_status
chan_producer_outcome(chan_producer *p, void *ans, size_t alen, uint64_t *seq)
{
	chan_exchange x;
	chan_status   st;

	chan_exchange_init(&x);
	x.req.id = p->req_id;
	if ((st = chan_decode_bytes(p->sp.url, &x, ans, free, ans, alen)) == CHAN_OK &&
	    (st = chan_answer_status(x.resp)) == CHAN_OK &&
	    x.resp->result_case == CHAN__V1__RESPONSE__RESULT_SEND) {
		*seq = x.resp->send->first_seq;
	}
	chan_exchange_fini(&x);
	return (st);
}

/*
 * The batch in flight, packed into p->pk: written, answered (over lost
 * connections), and its outcome; *seq its first seq.
 */
static chan_status
chan_producer_exchange(chan_producer *p, uint64_t *seq)
{
	void       *ans = NULL;
	size_t      alen = 0;
	chan_status st;

	*seq = 0;
	if ((st = chan_producer_read(p, chan_producer_write(p), &ans, &alen)) == CHAN_OK) {
		st = chan_producer_outcome(p, ans, alen, seq);
	}
	if (p->pk_cap > 2 * CHAN_PROD_ARENA_KEEP) { /* one big burst keeps nothing */
		free(p->pk);
		p->pk = NULL;
		p->pk_cap = 0;
	}
	return (st);
}

/*
 * The I/O thread: writes each claimed batch, reads its answer, starts the
 * next due batch at once (the pipeline never waits for the outcomes),
 * then leaves the outcomes to the producer thread, whose on_outcome may
 * take its time without holding up the sending.
 */
static void *
chan_producer_io_main(void *arg)
{
	chan_producer *p = arg;

	pthread_mutex_lock(&p->mtx);
	for (;;) {
		if (p->inflight != NULL && p->wire) {
			chan_pbatch *b = p->inflight;
			chan_status  st;
			uint64_t     seq = 0;
			char         msg[512] = "";

			p->wire = false;
			pthread_mutex_unlock(&p->mtx);
			st = atomic_load(&p->cancelled) ? chan_producer_cancelled(p)
			                                : chan_producer_pack(p, b);
			if (st == CHAN_OK) {
				st = chan_producer_exchange(p, &seq);
			}
			if (st != CHAN_OK) {
				snprintf(msg, sizeof(msg), "%s", chan_last_error(NULL));
			}
			pthread_mutex_lock(&p->mtx);
			chan_producer_answered(p, b, st, seq, msg);
			if (p->head != NULL && p->stopped == CHAN_OK) {
				chan_producer_kick(p, false);
			}
			pthread_cond_signal(&p->wake);
		} else if (p->quit) {
			break;
		} else {
			pthread_cond_wait(&p->io_wake, &p->mtx);
		}
	}
	pthread_mutex_unlock(&p->mtx);
	return (NULL);
}

chan_status
chan_prod_sp_open(chan_producer *p)
{
	chan_status s;

	if ((p->wdata = calloc(p->max_batch, sizeof(*p->wdata))) == NULL) {
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
	}
	if ((s = chan_sp_init(&p->sp, chan_url(p->c), CHAN_PROD_ANSWER_MAX)) != CHAN_OK) {
		chan_sp_fini(&p->sp);
		return (s);
	}
	if ((s = chan_sp_wake_open(p->wakefd)) != CHAN_OK) {
		chan_sp_fini(&p->sp);
		return (s);
	}
	p->direct = true;
	p->client_id = chan_random_id();
	p->hook.fn = chan_producer_cancel_hook;
	p->hook.arg = p;
	chan_cancel_hook_add(p->c, &p->hook);
	if ((s = chan_sp_dial(&p->sp, CHAN_SP_DIAL_MS, p->wakefd[0])) != CHAN_OK) {
		return (s);
	}
	if (chan_thread_spawn(&p->io_thread, chan_producer_io_main, p) != 0) {
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "producer: cannot start its I/O thread"));
	}
	p->io_running = true;
	return (CHAN_OK);
}

void
chan_prod_sp_close(chan_producer *p)
{
	if (p->io_running) {
		pthread_mutex_lock(&p->mtx);
		p->quit = true;
		pthread_cond_signal(&p->io_wake);
		pthread_mutex_unlock(&p->mtx);
		pthread_join(p->io_thread, NULL);
		p->io_running = false;
	}
	if (p->direct) {
		chan_cancel_hook_remove(p->c, &p->hook);
		chan_sp_fini(&p->sp);
	}
	chan_sp_wake_close(p->wakefd);
	free(p->wdata);
	free(p->pk);
}
