/*
 * client.c - connecting, the one request/answer path, confirmations,
 * cancellation and the thread's last error.
 */
#include "client.h"
#include "lane.h"

#include "msgpool.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>

#include "names.h"

#define CHAN_HELLO_TIMEOUT_MS   5000 /* connect: a daemon answers Hello at once */
#define CHAN_GOODBYE_TIMEOUT_MS 3000 /* disconnect: last confirmations */
#define CHAN_SETTLE_MS          20   /* disconnect: stray answers of stopped calls */
#define CHAN_PROBE_RECVMAX      (64u * 1024u)
#define CHAN_MSG_OVERHEAD       512u /* per message in an answer: name, seq, time, tags */

/* The human message of the last failure on this thread. */
static __thread char chan_errbuf[512];

chan_status
chan_fail(chan_status s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(chan_errbuf, sizeof(chan_errbuf), fmt, ap);
	va_end(ap);
	return (s);
}

const char *
chan_last_error(const chan_client *c)
{
	(void) c;
	return (chan_errbuf[0] != '\0' ? chan_errbuf : "no error");
}

chan_status
chan_check_name(const char *name)
{
	char err[256];

	if (name == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "name is missing"));
	}
	if (!chl_name_valid(name, strlen(name), err, sizeof(err))) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "%s", err));
	}
	return (CHAN_OK);
}

/* nng errors of the transport, as statuses with a message naming the URL. */
static chan_status
chan_nng_fail(const chan_client *c, int rv, const char *what)
{
	switch (rv) {
	case NNG_ENOMEM:
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "%s: out of memory", what));
	case NNG_EADDRINVAL:
	case NNG_ENOTSUP:
		return (chan_fail(CHAN_INVALID_ARGUMENT, "%s %s: %s", what, c->url, nng_strerror(rv)));
	default:
		return (chan_fail(CHAN_UNAVAILABLE, "%s %s: %s", what, c->url, nng_strerror(rv)));
	}
}

void
chan_exchange_init(chan_exchange *x)
{
	chan__v1__request__init(&x->req);
	x->resp = NULL;
	x->via = (chan_via) { .pipe = NNG_PIPE_INITIALIZER };
	x->held = NULL;
	x->nheld = 0;
	chl_capped_alloc_init(&x->alloc, 0);
}

void
chan_exchange_fini(chan_exchange *x)
{
	chl_response_free(&x->alloc, x->resp);
	x->resp = NULL;
}

static int         chan_open_socket_later(chan_client *c);
static chan_status chan_answer_check(chan_client *c, chan_exchange *x, int want_result);
static chan_status chan_lane_exchange(chan_client *c, chan_exchange *x, int want_result,
    int64_t local_timeout_ms, bool internal);

static void
chan_pending_add(chan_client *c, uint64_t delivery, uint32_t taken, chan_via via)
{
	if (delivery == 0) {
		return;
	}
	pthread_mutex_lock(&c->mtx);
	if (c->npend == c->pend_cap) {
		size_t        ncap = c->pend_cap ? c->pend_cap * 2 : 16;
		chan_pending *n = realloc(c->pend, ncap * sizeof(*n));

		if (n == NULL) {
			/* Unconfirmed: the daemon gives it back later (at-least-once). */
			pthread_mutex_unlock(&c->mtx);
			return;
		}
		c->pend = n;
		c->pend_cap = ncap;
	}
	c->pend[c->npend].id = delivery;
	c->pend[c->npend].via = via;
	c->pend[c->npend].taken = taken;
	c->npend++;
	pthread_mutex_unlock(&c->mtx);
}

void
chan_confirm_later(chan_client *c, uint64_t delivery, chan_via via)
{
	chan_pending_add(c, delivery, CHAN_TAKEN_ALL, via);
}

void
chan_confirm_part_later(chan_client *c, uint64_t delivery, uint32_t taken, chan_via via)
{
	if (c->confirm_part) {
		chan_pending_add(c, delivery, taken, via);
	}
}

/* The request x carries every confirmation pending on c. c->mtx held. */
static void
chan_pend_take(chan_client *c, chan_exchange *x)
{
	x->held = c->pend;
	x->nheld = c->npend;
	c->pend = NULL;
	c->npend = 0;
	c->pend_cap = 0;
}

/*
 * After an exchange: the confirmations x carried reached the daemon
 * (sent), or they go back in front for the next request, since they may
 * not have (confirming twice is harmless, losing a confirmation is not).
 */
static void
chan_confirms_settle(chan_client *c, chan_exchange *x, bool sent)
{
	chan_confirms_clear(x);
	for (size_t i = 0; !sent && i < x->nheld; i++) {
		chan_pending_add(c, x->held[i].id, x->held[i].taken, x->held[i].via);
	}
	free(x->held);
	x->held = NULL;
	x->nheld = 0;
}

/* A request's id (the next of c's) and client. */
static void
chan_stamp(chan_client *c, chan_exchange *x)
{
	x->req.has_id = 1;
	x->req.id = atomic_fetch_add(&c->next_id, 1);
	x->req.has_client = 1;
	x->req.client = c->client_id;
}

void
chan_confirms_clear(chan_exchange *x)
{
	free(x->req.confirm);
	x->req.confirm = NULL;
	x->req.n_confirm = 0;
	free(x->req.confirm_part); /* one block with its PartConfirms */
	x->req.confirm_part = NULL;
	x->req.n_confirm_part = 0;
}

/* Whether the connection a delivery came over is still up. */
static bool
chan_via_up(chan_client *c, chan_via via)
{
	size_t sz;

	if (via.lane_gen != 0) {
		return (c->lane != NULL && chan_lane_holds(c->lane, via.lane_gen));
	}
	return (nng_pipe_get_size(via.pipe, NNG_OPT_RECVMAXSZ, &sz) == 0);
}

/*
 * Fills Request.confirm (and confirm_part) from the held deliveries whose
 * connection is still up: deliveries of a closed connection were given
 * back by the daemon.
 */

void
chan_confirms_build(chan_client *c, chan_exchange *x)
{
	Chan__V1__PartConfirm *pcs;
	size_t                 i, n = 0, np = 0;

	chan_confirms_clear(x);
	for (i = 0; i < x->nheld; i++) {
		np += x->held[i].taken != CHAN_TAKEN_ALL;
	}
	if (x->nheld == 0 || (x->req.confirm = calloc(x->nheld, sizeof(uint64_t))) == NULL ||
	    (np > 0 && (x->req.confirm_part = calloc(np, sizeof(*x->req.confirm_part) +
	    sizeof(*pcs))) == NULL)) {
		chan_confirms_clear(x);
		return; /* ENOMEM: confirmed later, or given back (at-least-once) */
	}
	pcs = (Chan__V1__PartConfirm *) (x->req.confirm_part + np);
	for (i = 0; i < x->nheld; i++) {
		const chan_pending *h = &x->held[i];

		if (!chan_via_up(c, h->via)) {
			continue;
		}
		if (h->taken == CHAN_TAKEN_ALL) {
			x->req.confirm[n++] = h->id;
			continue;
		}
		chan__v1__part_confirm__init(&pcs[x->req.n_confirm_part]);
		pcs[x->req.n_confirm_part].has_delivery = pcs[x->req.n_confirm_part].has_taken = true;
		pcs[x->req.n_confirm_part].delivery = h->id;
		pcs[x->req.n_confirm_part].taken = h->taken;
		x->req.confirm_part[x->req.n_confirm_part] = &pcs[x->req.n_confirm_part];
		x->req.n_confirm_part++;
	}
	x->req.n_confirm = n;
}

/* A fresh context on c's socket. */
int
chan_ctx_open(chan_client *c, nng_ctx *ctx)
{
	int rv;

	if (!c->sock_open && (rv = chan_open_socket_later(c)) != 0) {
		return (rv);
	}
	if ((rv = nng_ctx_open(ctx, c->sock)) != 0) {
		return (rv);
	}
	/* Per context too: a resend would duplicate a request parked in the daemon. */
	nng_ctx_set_ms(*ctx, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	return (0);
}

/* A fresh context and aio for a call. c->mtx held (chan_cancel sees it). */
static int
chan_slot_open(chan_client *c, chan_call_link *link)
{
	int rv;

	if ((rv = nng_aio_alloc(&link->aio, NULL, NULL)) != 0) {
		return (rv);
	}
	if ((rv = chan_ctx_open(c, &link->ctx)) != 0) {
		nng_aio_free(link->aio);
		return (rv);
	}
	return (0);
}

/* Closes the idle pairs (before the socket they belong to is closed). */
static void
chan_slots_drain(chan_client *c)
{
	pthread_mutex_lock(&c->mtx);
	while (c->nslots > 0) {
		chan_slot *sl = &c->slots[--c->nslots];

		nng_ctx_close(sl->ctx);
		nng_aio_free(sl->aio);
	}
	while (c->nidle > 0) {
		nng_ctx_close(c->idle[--c->nidle]);
	}
	pthread_mutex_unlock(&c->mtx);
}

/* Starts a call: takes the pending confirmations and a context (idle or new). */
static chan_status
chan_call_begin(chan_client *c, chan_exchange *x, chan_call_link *link, bool internal)
{
	int rv;

	link->tag = NULL;
	link->gen = 0;
	link->req_id = x->req.id;
	link->clean = false;
	link->closed = false;
	link->withdrawn = false;
	pthread_mutex_lock(&c->mtx);
	if (c->cancelled && !internal) {
		pthread_mutex_unlock(&c->mtx);
		return (chan_fail(CHAN_UNAVAILABLE, "cancelled"));
	}
	if (c->nslots > 0) {
		c->nslots--;
		link->ctx = c->slots[c->nslots].ctx;
		link->aio = c->slots[c->nslots].aio;
	} else if ((rv = chan_slot_open(c, link)) != 0) {
		pthread_mutex_unlock(&c->mtx);
		return (chan_nng_fail(c, rv, "cannot open a context on"));
	}
	link->next = c->calls;
	c->calls = link;
	chan_pend_take(c, x);
	pthread_mutex_unlock(&c->mtx);
	chan_confirms_build(c, x);
	return (CHAN_OK);
}

/*
 * Ends a call: its context goes back to the idle pairs when the exchange
 * ended with an answer and nobody closed it (chan_cancel, an async
 * cancel); anything else (a timeout, a reset, a close) may leave the
 * context mid-request, so it is closed.
 */
static void
chan_call_end(chan_client *c, chan_call_link *link)
{
	chan_call_link **pp;
	bool             keep;

	pthread_mutex_lock(&c->mtx);
	for (pp = &c->calls; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == link) {
			*pp = link->next;
			break;
		}
	}
	keep = link->clean && !link->closed && !c->cancelled && c->nslots < CHAN_SLOTS;
	if (keep) {
		c->slots[c->nslots].ctx = link->ctx;
		c->slots[c->nslots].aio = link->aio;
		c->nslots++;
	}
	pthread_mutex_unlock(&c->mtx);
	if (!keep) {
		nng_ctx_close(link->ctx); /* NNG_ECLOSED after chan_cancel: fine */
		nng_aio_free(link->aio);
	}
}

chan_status
chan_encode(chan_client *c, chan_exchange *x, nng_msg **out)
{
	chl_batch_layout lay;
	size_t           size = chl_request_packed_size(&x->req, c->batch_form, &lay);
	nng_msg         *m;
	int              rv;

	if ((rv = chl_msgpool_get(&m, size)) != 0) {
		return (chan_nng_fail(c, rv, "cannot encode a request for"));
	}
	(void) chl_request_pack(&x->req, c->batch_form, &lay, nng_msg_body(m));
	*out = m;
	return (CHAN_OK);
}

/* Was this (sync) call cancelled? */
static bool
chan_call_cancelled(chan_client *c)
{
	bool cancelled;

	pthread_mutex_lock(&c->mtx);
	cancelled = c->cancelled;
	pthread_mutex_unlock(&c->mtx);
	return (cancelled);
}

chan_status
chan_transfer_error(chan_client *c, int rv, bool stopped)
{
	if (stopped && (rv == NNG_ECLOSED || rv == NNG_ECANCELED || rv == NNG_ECONNRESET)) {
		return (chan_fail(CHAN_UNAVAILABLE, "cancelled"));
	}
	if (rv == NNG_ECONNRESET) {
		/*
		 * A daemon restart costs one reset; a request the daemon
		 * cannot take (over its request size limit) resets every
		 * connection.
		 */
		return (chan_fail(CHAN_UNAVAILABLE,
		    "%s closed the connection %d times under this request (over its "
		    "request size limit?)",
		    c->url, CHAN_MAX_RESETS + 1));
	}
	return (chan_nng_fail(c, rv, "lost the exchange with"));
}

/* Send then receive on one context; an nng error number, or 0. */
static int
chan_send_recv(nng_aio *aio, nng_ctx ctx, nng_msg *m, nng_msg **answer)
{
	int rv;

	nng_aio_set_msg(aio, m);
	nng_ctx_send(ctx, aio);
	nng_aio_wait(aio);
	if ((rv = nng_aio_result(aio)) != 0) {
		nng_msg_free(m);
		return (rv);
	}
	nng_ctx_recv(ctx, aio);
	nng_aio_wait(aio);
	if ((rv = nng_aio_result(aio)) != 0) {
		return (rv);
	}
	*answer = nng_aio_get_msg(aio);
	return (0);
}

/*
 * One exchange on the call's context. When the connection breaks under a
 * call that waits on the daemon's terms (no local timeout), the same
 * request (same client and id) goes again once nng has reconnected: the
 * daemon answers a repeat with its first answer, or re-binds a parked one,
 * so nothing is done twice and no answer carrying messages is lost.
 */
static chan_status
chan_transfer(chan_client *c, chan_call_link *link, chan_exchange *x, int64_t local_timeout_ms,
    nng_msg **answer)
{
	nng_msg    *m = NULL;
	chan_status s;
	int         rv;
	int         resets = 0;

	nng_aio_set_timeout(link->aio, local_timeout_ms < 0 ? NNG_DURATION_INFINITE
	                                                    : (nng_duration) local_timeout_ms);
	for (;;) {
		if ((s = chan_encode(c, x, &m)) != CHAN_OK) {
			return (s);
		}
		rv = chan_send_recv(link->aio, link->ctx, m, answer);
		if (rv != NNG_ECONNRESET || local_timeout_ms >= 0) {
			break;
		}
		if (++resets > CHAN_MAX_RESETS || chan_call_cancelled(c)) {
			break;
		}
		nng_msleep(CHAN_RESET_PAUSE_MS); /* the dialer reconnects meanwhile */
		chan_confirms_build(c, x); /* the broken connection's deliveries are void */
	}
	if (rv == 0) {
		if (!chan_call_answered(c, link)) {
			/* Cancelled meanwhile, and the daemon told so. */
			nng_msg_free(*answer);
			*answer = NULL;
			return (chan_fail(CHAN_UNAVAILABLE, "cancelled"));
		}
		return (CHAN_OK);
	}
	if (rv == NNG_ETIMEDOUT) {
		return (chan_fail(CHAN_UNAVAILABLE, "no answer from %s within %lld ms", c->url,
		    (long long) local_timeout_ms));
	}
	return (chan_transfer_error(c, rv, chan_call_cancelled(c)));
}

/* What a decoded answer's allocator frees its input with. */
static void
chan_answer_release(void *m)
{
	chl_msgpool_put(m);
}

chan_status
chan_decode_bytes(const char *url, chan_exchange *x, void *owner, void (*release)(void *),
    const void *bytes, size_t len)
{
	/* protobuf-c copies every field; 4x plus slack covers any honest answer. */
	chl_capped_alloc_init(&x->alloc, len * 4 + (1u << 20));
	/*
	 * The answer stays with the decoded Response (the hand decoder points
	 * payloads into it instead of copying them; a batch answer's messages
	 * then point into it too, see msg.c), and goes with x->alloc.
	 */
	chl_capped_alloc_borrow(&x->alloc, owner, release);
	x->resp = chl_response_decode(&x->alloc, bytes, len);
	if (x->resp == NULL) {
		return (chan_fail(CHAN_PROTOCOL, "undecodable answer (%zu bytes) from %s", len, url));
	}
	/* The transport matched the answer to this request; an id, when there is one, must agree. */
	if (x->resp->has_id && x->resp->id != x->req.id) {
		return (chan_fail(CHAN_PROTOCOL, "answer to request %llu from %s, expected %llu",
		    (unsigned long long) x->resp->id, url, (unsigned long long) x->req.id));
	}
	return (CHAN_OK);
}

chan_status
chan_answer_status(const Chan__V1__Response *r)
{
	chan_status st = (chan_status) r->status;

	if (st == CHAN_OK) {
		return (CHAN_OK);
	}
	return (chan_fail(st, "%s", r->error != NULL && r->error[0] != '\0' ? r->error
	                                                                   : chan_strerror(st)));
}

/* Decodes and checks the answer; keeps it in x->resp. */
static chan_status
chan_decode(chan_client *c, chan_exchange *x, nng_msg *answer)
{
	x->via = (chan_via) { .pipe = nng_msg_get_pipe(answer) };
	return (chan_decode_bytes(c->url, x, answer, chan_answer_release, nng_msg_body(answer),
	    nng_msg_len(answer)));
}

/* chan_exchange_run on nng's socket (id and client filled). */
static chan_status
chan_exchange_nng(chan_client *c, chan_exchange *x, int want_result, int64_t local_timeout_ms,
    bool internal)
{
	chan_call_link link;
	nng_msg       *answer = NULL;
	chan_status    s;

	if ((s = chan_call_begin(c, x, &link, internal)) != CHAN_OK) {
		return (s);
	}
	s = chan_transfer(c, &link, x, local_timeout_ms, &answer);
	chan_call_end(c, &link);
	chan_confirms_settle(c, x, s == CHAN_OK);
	if (s != CHAN_OK) {
		return (s);
	}
	return (chan_exchange_answer(c, x, answer, want_result));
}

/* chan_exchange_run on the lane: the pending confirmations ride along as on nng's. */
static chan_status
chan_lane_exchange(chan_client *c, chan_exchange *x, int want_result, int64_t local_timeout_ms,
    bool internal)
{
	chan_status s;

	pthread_mutex_lock(&c->mtx);
	if (c->cancelled && !internal) {
		pthread_mutex_unlock(&c->mtx);
		return (chan_fail(CHAN_UNAVAILABLE, "cancelled"));
	}
	chan_pend_take(c, x);
	pthread_mutex_unlock(&c->mtx);
	chan_confirms_build(c, x);
	s = chan_lane_run(c->lane, c, x, local_timeout_ms, internal);
	chan_confirms_settle(c, x, s == CHAN_OK);
	if (s != CHAN_OK) {
		return (s);
	}
	return (chan_answer_check(c, x, want_result));
}

/* Fills the request's id and client, then one exchange on the lane or nng's socket. */
chan_status
chan_exchange_run(chan_client *c, chan_exchange *x, int want_result, int64_t local_timeout_ms,
    bool internal)
{
	chan_stamp(c, x);
	if (c->lane != NULL) {
		return (chan_lane_exchange(c, x, want_result, local_timeout_ms, internal));
	}
	return (chan_exchange_nng(c, x, want_result, local_timeout_ms, internal));
}

chan_status
chan_exchange_answer(chan_client *c, chan_exchange *x, nng_msg *answer, int want_result)
{
	chan_status s;

	if ((s = chan_decode(c, x, answer)) != CHAN_OK) {
		return (s);
	}
	return (chan_answer_check(c, x, want_result));
}

/* The rest of an answer's checks, once decoded into x->resp. */
static chan_status
chan_answer_check(chan_client *c, chan_exchange *x, int want_result)
{
	chan_status st = (chan_status) x->resp->status;

	/* Answers carrying messages are confirmed by whoever unpacks them. */
	if (st != CHAN_OK || x->resp->result_case != CHAN__V1__RESPONSE__RESULT_RECV) {
		chan_confirm_later(c, x->resp->delivery, x->via);
	}
	if (st != CHAN_OK) {
		return (chan_answer_status(x->resp));
	}
	if (want_result != 0 && (int) x->resp->result_case != want_result) {
		return (chan_fail(CHAN_PROTOCOL, "answer from %s carries result %d, expected %d", c->url,
		    (int) x->resp->result_case, want_result));
	}
	return (CHAN_OK);
}

/*
 * Stops one call: closing its context makes nng end the request (the
 * answer, if one comes, is dropped by nng and its messages stay in the
 * daemon's custody); an async call's aio is aborted too, for the pause
 * before a resend. c->mtx held; nng never calls back inline here.
 */
static void
chan_close_call(chan_client *c, chan_call_link *l)
{
	chan_cancel_note(c, l); /* the daemon is told too, when it can be */
	nng_ctx_close(l->ctx); /* NNG_ECLOSED when already closed: fine */
	l->closed = true;
	c->stray = true;
	if (l->tag != NULL) {
		nng_aio_cancel(l->aio);
	}
}

/* Stops every call in flight (async_only: leave sync ones). c->mtx held. */
static void
chan_close_calls(chan_client *c, bool async_only)
{
	chan_call_link *l;

	for (l = c->calls; l != NULL; l = l->next) {
		if (!async_only || l->tag != NULL) {
			chan_close_call(c, l);
		}
	}
	chan_cancel_kick(c);
}

bool
chan_call_answered(chan_client *c, chan_call_link *link)
{
	bool ok;

	pthread_mutex_lock(&c->mtx);
	ok = !link->withdrawn;
	link->clean = ok;
	pthread_mutex_unlock(&c->mtx);
	return (ok);
}

void
chan_async_hold(chan_client *c)
{
	pthread_mutex_lock(&c->mtx);
	c->nasync++;
	pthread_mutex_unlock(&c->mtx);
}

void
chan_async_release(chan_client *c)
{
	pthread_mutex_lock(&c->mtx);
	if (--c->nasync == 0 && c->closing) {
		pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mtx);
}

chan_status
chan_async_begin(chan_client *c, chan_exchange *x, chan_call_link *link, const chan_aio *tag,
    uint64_t gen, nng_aio *aio)
{
	int rv;

	chan_stamp(c, x);
	link->tag = tag;
	link->gen = gen;
	link->aio = aio;
	link->req_id = x->req.id;
	link->clean = false;
	link->closed = false;
	link->withdrawn = false;
	pthread_mutex_lock(&c->mtx);
	if (c->cancelled || c->closing) {
		pthread_mutex_unlock(&c->mtx);
		return (chan_fail(CHAN_UNAVAILABLE, "cancelled"));
	}
	if (c->nidle > 0) {
		link->ctx = c->idle[--c->nidle];
	} else if ((rv = chan_ctx_open(c, &link->ctx)) != 0) {
		pthread_mutex_unlock(&c->mtx);
		return (chan_nng_fail(c, rv, "cannot open a context on"));
	}
	link->next = c->calls;
	c->calls = link;
	chan_pend_take(c, x);
	pthread_mutex_unlock(&c->mtx);
	chan_confirms_build(c, x);
	return (CHAN_OK);
}

bool
chan_async_stopped(chan_client *c, const chan_call_link *link)
{
	bool stopped;

	pthread_mutex_lock(&c->mtx);
	stopped = link->closed || c->cancelled || c->closing;
	pthread_mutex_unlock(&c->mtx);
	return (stopped);
}

bool
chan_async_pause(chan_client *c, chan_call_link *link)
{
	bool stopped;

	/* Under c->mtx: a cancel either sees the pause (and aborts it) or is seen here. */
	pthread_mutex_lock(&c->mtx);
	stopped = link->closed || c->cancelled || c->closing;
	if (!stopped) {
		nng_sleep_aio(CHAN_RESET_PAUSE_MS, link->aio);
	}
	pthread_mutex_unlock(&c->mtx);
	return (!stopped);
}

void
chan_async_end(chan_client *c, chan_call_link *link, chan_exchange *x)
{
	chan_call_link **pp;
	bool             keep;

	pthread_mutex_lock(&c->mtx);
	for (pp = &c->calls; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == link) {
			*pp = link->next;
			break;
		}
	}
	keep = link->clean && !link->closed && !c->cancelled && !c->closing;
	if (keep && c->nidle == 0 && c->idle == NULL) {
		c->idle = malloc(CHAN_IDLE_CTX * sizeof(*c->idle));
	}
	keep = keep && c->idle != NULL && c->nidle < CHAN_IDLE_CTX;
	if (keep) {
		c->idle[c->nidle++] = link->ctx;
	}
	pthread_mutex_unlock(&c->mtx);
	if (!keep) {
		nng_ctx_close(link->ctx);
	}
	chan_confirms_settle(c, x, link->clean);
}

void
chan_async_cancel(chan_client *c, const chan_aio *tag, uint64_t gen)
{
	chan_call_link *l;

	pthread_mutex_lock(&c->mtx);
	for (l = c->calls; l != NULL; l = l->next) {
		if (l->tag == tag && l->gen == gen) {
			chan_close_call(c, l);
		}
	}
	chan_cancel_kick(c);
	pthread_mutex_unlock(&c->mtx);
}

void
chan_cond_init_mono(pthread_cond_t *cv)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
}

struct timespec
chan_deadline_in(int64_t us)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += us / 1000000;
	ts.tv_nsec += (long) (us % 1000000) * 1000;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return (ts);
}

uint64_t
chan_random_id(void)
{
	uint64_t id = 0;

	while (id == 0) {
		if (getrandom(&id, sizeof(id), 0) != (ssize_t) sizeof(id)) {
			/* No entropy source: still distinct enough per process. */
			id = chl_now_unix_us() ^ ((uint64_t) getpid() << 40) ^ (uint64_t) (uintptr_t) &id;
		}
	}
	return (id);
}

/*
 * tls+tcp:// settings come from the environment, so every program built on
 * libchan (and the CLI) gets them without new API: CHAN_TLS_CA_FILE (CA
 * that signed chand's certificate), CHAN_TLS_SERVER_NAME (name to verify,
 * default the URL's host), CHAN_TLS_CERT_KEY_FILE (client certificate and
 * key, PEM, when chand asks for one), or CHAN_TLS_CERT_FILE and
 * CHAN_TLS_KEY_FILE (the same in two files, as `chan --tls-cert --tls-key`
 * set them), CHAN_TLS_INSECURE=1 (no verification).
 */

/* Whole file as a NUL-terminated string (PEM), or NULL. Caller frees. */
static char *
chan_read_pem(const char *path)
{
	FILE  *f = fopen(path, "rb");
	char  *buf = NULL;
	size_t cap = 0, len = 0, n;

	if (f == NULL) {
		return (NULL);
	}
	do {
		if (len + 4096 + 1 > cap) {
			char *nb = realloc(buf, cap = len + 4096 + 1);
			if (nb == NULL) {
				free(buf);
				fclose(f);
				return (NULL);
			}
			buf = nb;
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
	} while (n > 0 && len < (1u << 20)); /* a PEM is never a megabyte */
	fclose(f);
	buf[len] = '\0';
	return (buf);
}

/* CHAN_TLS_CERT_FILE + CHAN_TLS_KEY_FILE: our certificate from two files. */
static int
chan_tls_own_cert(nng_dialer d, const char *cert_path, const char *key_path)
{
	nng_tls_config *cfg;
	char           *cert = chan_read_pem(cert_path);
	char           *key = chan_read_pem(key_path);
	int             rv;

	if (cert == NULL || key == NULL) {
		rv = NNG_ENOENT;
	} else if ((rv = nng_dialer_get_ptr(d, NNG_OPT_TLS_CONFIG, (void **) &cfg)) == 0) {
		rv = nng_tls_config_own_cert(cfg, cert, key, NULL);
		nng_tls_config_free(cfg); /* the get took a reference */
	}
	free(cert);
	free(key);
	return (rv);
}

static int
chan_tls_setup(nng_dialer d)
{
	const char *v, *k;
	int         rv = 0;

	if ((v = getenv("CHAN_TLS_CA_FILE")) != NULL && v[0] != '\0' &&
	    (rv = nng_dialer_set_string(d, NNG_OPT_TLS_CA_FILE, v)) != 0) {
		return (rv);
	}
	if ((v = getenv("CHAN_TLS_SERVER_NAME")) != NULL && v[0] != '\0' &&
	    (rv = nng_dialer_set_string(d, NNG_OPT_TLS_SERVER_NAME, v)) != 0) {
		return (rv);
	}
	if ((v = getenv("CHAN_TLS_CERT_KEY_FILE")) != NULL && v[0] != '\0' &&
	    (rv = nng_dialer_set_string(d, NNG_OPT_TLS_CERT_KEY_FILE, v)) != 0) {
		return (rv);
	}
	v = getenv("CHAN_TLS_CERT_FILE");
	k = getenv("CHAN_TLS_KEY_FILE");
	if (v != NULL && v[0] != '\0') {
		rv = (k != NULL && k[0] != '\0')
		    ? chan_tls_own_cert(d, v, k)
		    : nng_dialer_set_string(d, NNG_OPT_TLS_CERT_KEY_FILE, v);
		if (rv != 0) {
			return (rv);
		}
	}
	if ((v = getenv("CHAN_TLS_INSECURE")) != NULL && strcmp(v, "1") == 0) {
		rv = nng_dialer_set_int(d, NNG_OPT_TLS_AUTH_MODE, NNG_TLS_AUTH_MODE_NONE);
	}
	return (rv);
}

/* A blocking dial, so a missing daemon fails here and now. */
static int
chan_dial(chan_client *c)
{
	nng_dialer d;
	int        rv;

	if (strncmp(c->url, "tls+", 4) != 0) {
		return (nng_dial(c->sock, c->url, NULL, 0));
	}
	if ((rv = nng_dialer_create(&d, c->sock, c->url)) != 0) {
		return (rv);
	}
	if ((rv = chan_tls_setup(d)) != 0 || (rv = nng_dialer_start(d, 0)) != 0) {
		nng_dialer_close(d);
	}
	return (rv);
}

/* A REQ socket, not dialled yet: 0 or an nng error. */
static int
chan_socket_make(chan_client *c, size_t recvmax)
{
	int rv;

	if ((rv = nng_req0_open(&c->sock)) != 0) {
		return (rv);
	}
	/* Resends would duplicate requests parked in the daemon. */
	nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, recvmax);
	return (0);
}

/*
 * nng's socket of a client with a lane, made by the first async call
 * (c->mtx held). The daemon answered on the lane, so nothing waits for
 * this dial: nng's dialer connects (and reconnects) in the background and
 * the call's request waits for it, as on any nng connection.
 */
static int
chan_open_socket_later(chan_client *c)
{
	int rv;

	if ((rv = chan_socket_make(c, chan_recv_bound(c))) != 0) {
		return (rv);
	}
	if ((rv = nng_dial(c->sock, c->url, NULL, NNG_FLAG_NONBLOCK)) != 0) {
		nng_close(c->sock);
		return (rv);
	}
	c->sock_open = true;
	return (0);
}

static chan_status
chan_open_socket(chan_client *c, size_t recvmax)
{
	int rv;

	if ((rv = chan_socket_make(c, recvmax)) != 0) {
		return (chan_nng_fail(c, rv, "cannot open a socket for"));
	}
	if ((rv = chan_dial(c)) != 0) {
		nng_close(c->sock);
		c->sock = (nng_socket) NNG_SOCKET_INITIALIZER;
		if (rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP) {
			return (chan_nng_fail(c, rv, "cannot connect to"));
		}
		return (chan_fail(CHAN_UNAVAILABLE, "cannot connect to %s: %s%s", c->url,
		    nng_strerror(rv),
		    rv == NNG_ECONNREFUSED || rv == NNG_ENOENT ? " (is chand running?)" : ""));
	}
	c->sock_open = true;
	return (CHAN_OK);
}

/*
 * The batch form of sends and answers is used whenever the daemon offers
 * it; CHAN_WIRE_BATCH=0 in the environment keeps the list form (one field
 * per message), for comparing the two and for testing the daemon's side
 * of both.
 */
static bool
chan_batch_form_wanted(void)
{
	const char *v = getenv("CHAN_WIRE_BATCH");

	return (v == NULL || strcmp(v, "0") != 0);
}

/* Hello: the daemon's limits and protocol version. */
static chan_status
chan_hello(chan_client *c)
{
	chan_exchange          x;
	Chan__V1__Hello        h = CHAN__V1__HELLO__INIT;
	Chan__V1__HelloResult *r;
	chan_status            s;

	h.has_protocol_version = 1;
	h.protocol_version = CHL_PROTOCOL_VERSION;
	h.client_name = "libchan/" CHAN_VERSION;
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_HELLO;
	x.req.hello = &h;
	s = chan_exchange_run(c, &x, CHAN__V1__RESPONSE__RESULT_HELLO, CHAN_HELLO_TIMEOUT_MS, false);
	if (s != CHAN_OK) {
		goto out;
	}
	r = x.resp->hello;
	if (r->protocol_version != CHL_PROTOCOL_VERSION) {
		s = chan_fail(CHAN_PROTOCOL, "%s speaks protocol version %u, this client %u", c->url,
		    r->protocol_version, (unsigned) CHL_PROTOCOL_VERSION);
		goto out;
	}
	if (r->max_batch == 0 || r->max_message_size == 0) {
		s = chan_fail(CHAN_PROTOCOL, "%s announced no limits", c->url);
		goto out;
	}
	c->max_message_size = r->max_message_size;
	c->max_batch = r->max_batch;
	c->batch_form = r->has_batch_form && r->batch_form && chan_batch_form_wanted();
	c->cancel_op = r->has_cancel && r->cancel;
	c->confirm_part = r->has_confirm_part && r->confirm_part;
	c->add_many = r->has_counter_add_many && r->counter_add_many;
	c->server_version = strdup(r->server_version != NULL ? r->server_version : "");
	if (c->server_version == NULL) {
		s = chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory");
	}
out:
	chan_exchange_fini(&x);
	return (s);
}

/* Largest answer the daemon's limits allow: a full batch of largest messages. */
size_t
chan_recv_bound(const chan_client *c)
{
	uint64_t per = c->max_message_size + CHAN_MSG_OVERHEAD;
	uint64_t total;

	if (per > (UINT64_MAX - 65536) / c->max_batch) {
		return (SIZE_MAX);
	}
	total = per * c->max_batch + 65536;
	return (total > SIZE_MAX ? SIZE_MAX : (size_t) total);
}

/*
 * Without a lane. The receive limit of an nng connection is fixed when it
 * is made, and the right one is only known from Hello: ask on a small
 * probe connection, then make the real one.
 */
static chan_status
chan_connect_nng(chan_client *c)
{
	chan_status s;

	if ((s = chan_open_socket(c, CHAN_PROBE_RECVMAX)) != CHAN_OK) {
		return (s);
	}
	s = chan_hello(c);
	chan_slots_drain(c); /* the probe connection's */
	nng_close(c->sock);
	if (s != CHAN_OK) {
		return (s);
	}
	return (chan_open_socket(c, chan_recv_bound(c)));
}

/* With a lane: Hello on it, whose answer sets how long an answer may be. */
static chan_status
chan_connect_lane(chan_client *c)
{
	chan_status s;

	if ((c->lane = malloc(sizeof(*c->lane))) == NULL) {
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
	}
	if ((s = chan_lane_open(c->lane, c, CHAN_PROBE_RECVMAX)) == CHAN_OK) {
		if ((s = chan_hello(c)) == CHAN_OK) {
			c->lane->sp.recvmax = chan_recv_bound(c);
			return (CHAN_OK);
		}
		chan_lane_close(c->lane, c);
	}
	free(c->lane);
	c->lane = NULL;
	return (s);
}

chan_status
chan_connect(const char *url, chan_client **out)
{
	chan_client *c;
	chan_status  s;

	if (out == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "chan_connect: out is NULL"));
	}
	if (url == NULL || url[0] == '\0') {
		url = getenv("CHAN_URL");
	}
	if (url == NULL || url[0] == '\0') {
		url = CHAN_DEFAULT_URL;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL || (c->url = strdup(url)) == NULL) {
		free(c);
		return (chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory"));
	}
	pthread_mutex_init(&c->mtx, NULL);
	pthread_cond_init(&c->cv, NULL);
	c->client_id = chan_random_id();
	atomic_init(&c->next_id, 1);
	s = chan_sp_wanted(url) ? chan_connect_lane(c) : chan_connect_nng(c);
	if (s != CHAN_OK) {
		goto fail;
	}
	*out = c;
	return (CHAN_OK);

fail:
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mtx);
	free(c->server_version);
	free(c->url);
	free(c);
	return (s);
}

/*
 * A last Ping, bounded: the pending confirmations ride on it (on the lane
 * when there is one); on_nng: on nng's socket whatever the client has.
 */
static void
chan_goodbye(chan_client *c, bool on_nng)
{
	chan_exchange  x;
	Chan__V1__Ping p = CHAN__V1__PING__INIT;

	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_PING;
	x.req.ping = &p;
	if (on_nng) {
		chan_stamp(c, &x);
		(void) chan_exchange_nng(c, &x, 0, CHAN_GOODBYE_TIMEOUT_MS, true);
	} else {
		(void) chan_exchange_run(c, &x, 0, CHAN_GOODBYE_TIMEOUT_MS, true);
	}
	chan_exchange_fini(&x);
}

void
chan_disconnect(chan_client *c)
{
	size_t pending;
	bool   inflight, stopped, sock;

	if (c == NULL) {
		return;
	}
	/*
	 * Async calls still in flight end as cancelled; their callbacks run
	 * (and may touch c) before c goes away.
	 */
	pthread_mutex_lock(&c->mtx);
	c->closing = true;
	inflight = c->nasync > 0;
	chan_close_calls(c, true);
	while (c->nasync > 0) {
		pthread_cond_wait(&c->cv, &c->mtx);
	}
	pending = c->npend;
	stopped = c->stray;
	sock = c->sock_open;
	pthread_mutex_unlock(&c->mtx);
	/*
	 * Calls stopped (cancelled, here or before) may still have requests
	 * being written and answers on their way (nng drops them: their
	 * contexts are closed). nng 1.5.2's nng_close can hang for good
	 * when such traffic races with the connection's teardown (nng
	 * issue #1543: a pipe operation started while it closes is never
	 * finished). One more round trip flushes the requests of calls
	 * stopped just now (a chan_cancel'd call's went out long ago, and
	 * the round trip would wait its 3 s when no daemon answers); a
	 * short pause lets the stray answers arrive first. Seen with 64
	 * async calls stopped here: a hang every few hundred disconnects
	 * before, none in 12,000 after.
	 */
	if (pending > 0 || inflight) {
		chan_goodbye(c, false);
	}
	if (inflight && sock && c->lane != NULL) {
		chan_goodbye(c, true); /* the flush above, on nng's connection */
	}
	/* The Cancel of stopped calls must not be mid-write when the
	 * socket closes (nng #1543 again): wait for its answer. */
	pthread_mutex_lock(&c->mtx);
	chan_cancel_settle(c);
	pthread_mutex_unlock(&c->mtx);
	if (stopped) {
		nng_msleep(CHAN_SETTLE_MS);
	}
	chan_slots_drain(c);
	if (sock) {
		nng_close(c->sock);
	}
	if (c->lane != NULL) {
		chan_lane_close(c->lane, c);
		free(c->lane);
	}
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mtx);
	free(c->idle);
	free(c->pend);
	free(c->cx_ids);
	free(c->server_version);
	free(c->url);
	free(c);
}

void
chan_cancel(chan_client *c)
{
	if (c == NULL) {
		return;
	}
	pthread_mutex_lock(&c->mtx);
	c->cancelled = true;
	chan_close_calls(c, false);
	for (chan_cancel_hook *h = c->hooks; h != NULL; h = h->next) {
		h->fn(h->arg);
	}
	pthread_mutex_unlock(&c->mtx);
}

void
chan_cancel_hook_add(chan_client *c, chan_cancel_hook *h)
{
	pthread_mutex_lock(&c->mtx);
	h->next = c->hooks;
	c->hooks = h;
	if (c->cancelled) {
		h->fn(h->arg);
	}
	pthread_mutex_unlock(&c->mtx);
}

void
chan_cancel_hook_remove(chan_client *c, chan_cancel_hook *h)
{
	pthread_mutex_lock(&c->mtx);
	for (chan_cancel_hook **pp = &c->hooks; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == h) {
			*pp = h->next;
			break;
		}
	}
	pthread_mutex_unlock(&c->mtx);
}

uint64_t
chan_max_message_size(const chan_client *c)
{
	return (c->max_message_size);
}

uint32_t
chan_max_batch(const chan_client *c)
{
	return (c->max_batch);
}

const char *
chan_server_version(const chan_client *c)
{
	return (c->server_version);
}

const char *
chan_url(const chan_client *c)
{
	return (c->url);
}

chan_status
chan_ping(chan_client *c, uint64_t *rtt_us)
{
	chan_exchange  x;
	Chan__V1__Ping p = CHAN__V1__PING__INIT;
	chan_status    s;
	struct timespec t0, t1;

	if (c == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "client is NULL"));
	}
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_PING;
	x.req.ping = &p;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	s = chan_exchange_run(c, &x, 0, -1, false);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (s == CHAN_OK && rtt_us != NULL) {
		*rtt_us = (uint64_t) ((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000);
	}
	chan_exchange_fini(&x);
	return (s);
}
