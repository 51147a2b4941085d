/*
 * recv_any.c - the first message from any of several channels (Rust's
 * select!), when the channels live on different shards.
 *
 * One shared chd_any per request, one part per shard involved. Each part
 * scans its channels on its own shard and registers a CHD_T_ANY task as a
 * receiver on each. Whoever first flips `claimed` (a message arrived, a
 * timer, an error, close, shutdown) answers; it then posts a cancel to the
 * other parts, which drop their registrations. References: one per part
 * (given back when the part finishes), one per cancel job in flight, one
 * for the submitter while it posts.
 */
#include "engine_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
any_unref(chd_any *a)
{
	if (atomic_fetch_sub(&a->refs, 1) == 1) {
		for (int i = 0; i < a->nnames; i++) {
			free(a->names[i]);
		}
		free(a->names);
		free(a->parts);
		free(a);
	}
}

static bool
any_claim(chd_any *a)
{
	bool expected = false;

	return (atomic_compare_exchange_strong(&a->claimed, &expected, true));
}

/* Drops this shard's registrations and timer; gives the part's ref back. */
static void
part_finish(chd_any_part *p)
{
	chd_task *t, *next;

	if (p->finished) {
		return;
	}
	p->finished = true;
	for (t = p->tasks; t != NULL; t = next) {
		next = t->anext;
		chd_chan_remove_receiver(t->ch, t);
		chd_task_unpark(t);
		free(t);
	}
	p->tasks = NULL;
	if (p->timer != NULL) {
		chd_shard_timer_free(p->any->e->shards[p->shard], p->timer);
		p->timer = NULL;
	}
	any_unref(p->any);
}

static void
part_cancel_job(chd_shard *sh, void *arg)
{
	chd_any_part *p = arg;
	chd_any      *a = p->any;

	/* Not scanned yet: the scan will see `claimed` and finish itself. */
	if (p->scanned) {
		part_finish(p);
	}
	any_unref(a);
}

/* After a claim by part `self`: the others stop, self finishes. */
static void
any_wrap_up(chd_any_part *self)
{
	chd_any *a = self->any;

	a->req = NULL;
	for (int i = 0; i < a->nparts; i++) {
		chd_any_part *q = &a->parts[i];
		if (q == self) {
			continue;
		}
		atomic_fetch_add(&a->refs, 1);
		if (chd_shard_post(a->e->shards[q->shard], part_cancel_job,
		    q) != 0) {
			/* Out of memory: the part lingers until its channels
			 * wake it (it is claimed, so it then finishes). */
			atomic_fetch_sub(&a->refs, 1);
		}
	}
	part_finish(self);
}

static void
any_fail_part(chd_any_part *p, chan_status st, const char *msg)
{
	chd_any *a = p->any;

	if (any_claim(a)) {
		chd_reply_err(a->e, a->req, st, "%s", msg);
		any_wrap_up(p);
	} else {
		part_finish(p);
	}
}

void
chd_any_fail(chd_task *t, chan_status st, const char *fmt, ...)
{
	char    buf[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	any_fail_part(t->part, st, buf);
}

void
chd_any_serve(chd_task *t)
{
	chd_any_part *p = t->part;
	chd_any      *a = p->any;

	if (any_claim(a)) {
		chd_chan_deliver(t->sh, t->ch, a->req, a->conn, 1, 0);
		any_wrap_up(p);
	} else {
		part_finish(p);
	}
}

/* Every listed channel closed and drained, all scans done: CLOSED. */
static void
any_check_all_closed(chd_any_part *p)
{
	chd_any *a = p->any;

	if (atomic_load(&a->nclosed) == a->nnames &&
	    atomic_load(&a->pending) == 0) {
		any_fail_part(p, CHAN_CLOSED, "every listed channel is closed");
	}
}

void
chd_any_chan_closed(chd_task *t)
{
	chd_any_part *p = t->part;
	chd_task    **pp;

	for (pp = &p->tasks; *pp != NULL; pp = &(*pp)->anext) {
		if (*pp == t) {
			*pp = t->anext;
			break;
		}
	}
	chd_chan_remove_receiver(t->ch, t);
	chd_task_unpark(t);
	free(t);
	atomic_fetch_add(&p->any->nclosed, 1);
	if (atomic_load(&p->any->claimed)) {
		part_finish(p);
		return;
	}
	any_check_all_closed(p);
}

/* The home part's timer: TIMEOUT (or EMPTY for a try), unless claimed. */
static void
any_timeout(chd_any_part *p)
{
	if (!any_claim(p->any)) {
		return;
	}
	if (p->any->timeout_ms == 0) {
		/* A try that waited out another connection's custody. */
		chd_reply_err(p->any->e, p->any->req, CHAN_EMPTY,
		    "every listed channel is empty");
	} else {
		chd_reply_err(p->any->e, p->any->req, CHAN_TIMEOUT,
		    "no message on any of the %d channels within the timeout",
		    p->any->nnames);
	}
	any_wrap_up(p);
}

static void
any_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	chd_any_part *p = arg;
	chd_shard    *sh = p->any->e->shards[p->shard];

	if (!chd_shard_timer_begin(sh, p->timer)) {
		return;
	}
	any_timeout(p);
	chd_shard_timer_end(sh);
}

/* A try (timeout 0) held back by custody: EMPTY once the channels' grace
 * timers (armed earlier, in the scans) have had their turn. */
static void
any_arm_try_grace(chd_shard *sh, chd_any_part *p)
{
	struct timeval tv;

	(void) chd_timeval((uint64_t) sh->e->opts.custody_grace_ms + 10, &tv);
	if ((p->timer = evtimer_new(sh->base, any_timeout_cb, p)) == NULL) {
		any_fail_part(p, CHAN_EMPTY, "every listed channel is empty");
		return;
	}
	evtimer_add(p->timer, &tv);
}

static void
part_scan_job(chd_shard *sh, void *arg)
{
	chd_any_part *p = arg;
	chd_any      *a = p->any;
	struct timeval tv;
	char          msg[300];
	int           nclosed = 0;
	chd_chan     *chans[p->nnames > 0 ? p->nnames : 1];

	p->scanned = true;
	if (sh->shutdown) {
		any_fail_part(p, CHAN_SHUTTING_DOWN, "daemon is shutting down");
		return;
	}
	if (atomic_load(&a->claimed)) {
		part_finish(p);
		return;
	}
	/* Cancelled before this scan: the Cancel's job for this shard may
	 * have run already and found nothing to stop here. */
	if (a->client != 0 && chd_idem_id_cancelled(sh->e, a->client, a->id)) {
		any_fail_part(p, CHAN_UNAVAILABLE, "cancelled");
		return;
	}
	for (int i = 0; i < p->nnames; i++) {
		if ((chans[i] = chd_chan_get(sh, p->names[i], true)) == NULL) {
			if (sh->e->opts.auto_create) {
				snprintf(msg, sizeof(msg), chd_chan_limit_full(
				    sh->e) ? "no room for channel '%s' (the "
				    "--max-channels limit)" : "out of memory "
				    "creating channel '%s'", p->names[i]);
				any_fail_part(p, CHAN_RESOURCE_EXHAUSTED, msg);
				return;
			}
			snprintf(msg, sizeof(msg), "no channel named '%s'",
			    p->names[i]);
			any_fail_part(p, CHAN_NOT_FOUND, msg);
			return;
		}
		if (chd_chan_rx_busy(chans[i], a->conn) != 0) {
			snprintf(msg, sizeof(msg), "channel '%s' has a "
			    "receiver on another connection", p->names[i]);
			any_fail_part(p, CHAN_BUSY, msg);
			return;
		}
	}
	for (int i = 0; i < p->nnames; i++) {
		/* Not past older messages another connection still holds. */
		if (chd_chan_has_msgs(chans[i]) &&
		    !chd_chan_custody_gated(chans[i], a->conn)) {
			if (any_claim(a)) {
				chd_chan_deliver(sh, chans[i], a->req, a->conn,
				    1, 0);
				any_wrap_up(p);
			} else {
				part_finish(p);
			}
			return;
		}
	}
	if (a->timeout_ms != 0 && !chd_engine_conn_alive(sh->e, a->conn)) {
		any_fail_part(p, CHAN_UNAVAILABLE, "connection closed");
		return;
	}
	for (int i = 0; i < p->nnames; i++) {
		chd_task *t;
		bool      gated = chd_chan_custody_gated(chans[i], a->conn);
		if (chd_chan_closed_drained(chans[i]) && !gated) {
			nclosed++;
			continue;
		}
		if (gated) {
			atomic_store(&a->gated, true);
		}
		if ((t = calloc(1, sizeof(*t))) == NULL) {
			any_fail_part(p, CHAN_RESOURCE_EXHAUSTED,
			    "out of memory");
			return;
		}
		t->kind = CHD_T_ANY;
		t->sh = sh;
		t->conn = a->conn;
		t->max = 1;
		if (a->timeout_ms > 0 &&
		    a->timeout_ms < sh->e->opts.custody_grace_ms) {
			t->grace_ms = (uint32_t) a->timeout_ms;
		}
		t->part = p;
		t->anext = p->tasks;
		p->tasks = t;
		chd_chan_add_receiver(chans[i], t);
		chd_task_park(t, -1, NULL);
	}
	/* A rendezvous sender may be waiting for just this receiver. The
	 * pump can answer and finish the part: hold a reference meanwhile. */
	atomic_fetch_add(&a->refs, 1);
	for (int i = 0; i < p->nnames && !p->finished; i++) {
		chd_chan_pump(sh, chans[i]);
	}
	if (p->finished) {
		any_unref(a);
		return;
	}
	if (p == &a->parts[0] && a->timeout_ms > 0 &&
	    chd_timeval((uint64_t) a->timeout_ms, &tv)) {
		if ((p->timer = evtimer_new(sh->base, any_timeout_cb, p)) !=
		    NULL) {
			evtimer_add(p->timer, &tv);
		}
	}
	atomic_fetch_add(&a->nclosed, nclosed);
	if (atomic_fetch_sub(&a->pending, 1) == 1) {
		/* Last scan: nothing anywhere so far. */
		if (atomic_load(&a->nclosed) == a->nnames) {
			any_fail_part(p, CHAN_CLOSED,
			    "every listed channel is closed");
		} else if (a->timeout_ms == 0 && atomic_load(&a->gated)) {
			any_arm_try_grace(sh, p);
		} else if (a->timeout_ms == 0) {
			any_fail_part(p, CHAN_EMPTY,
			    "every listed channel is empty");
		}
	} else {
		any_check_all_closed(p);
	}
	any_unref(a);
}

void
chd_any_submit(chd_engine *e, chd_req *r)
{
	Chan__V1__RecvAny *ra = r->msg->recv_any;
	chd_any           *a;
	int               *shard_of;
	int                n = 0;
	bool               dup_failed = false;

	if ((a = calloc(1, sizeof(*a))) == NULL ||
	    (a->names = calloc(ra->n_names, sizeof(*a->names))) == NULL ||
	    (shard_of = calloc(ra->n_names, sizeof(*shard_of))) == NULL ||
	    (a->parts = calloc((size_t) e->n, sizeof(*a->parts))) == NULL) {
		if (a != NULL) {
			free(a->names);
			free(a);
		}
		chd_reply_err(e, r, CHAN_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	/* Distinct names, grouped by owner shard in first-seen order. Copies:
	 * r->msg is freed with the answer while other parts still scan. */
	for (size_t i = 0; i < ra->n_names; i++) {
		bool dup = false;
		for (int j = 0; j < n && !dup; j++) {
			dup = strcmp(a->names[j], ra->names[i]) == 0;
		}
		if (!dup) {
			if ((a->names[n] = strdup(ra->names[i])) == NULL) {
				dup_failed = true;
				break;
			}
			shard_of[n] = chd_shard_for_chan(e, ra->names[i])->idx;
			n++;
		}
	}
	a->nnames = n;
	/* Sort names by shard (stable), then cut into parts. */
	for (int i = 1; i < n; i++) {
		for (int j = i; j > 0 && shard_of[j - 1] > shard_of[j]; j--) {
			int   ts = shard_of[j];
			char *tn = a->names[j];
			shard_of[j] = shard_of[j - 1];
			a->names[j] = a->names[j - 1];
			shard_of[j - 1] = ts;
			a->names[j - 1] = tn;
		}
	}
	for (int i = 0; i < n; i++) {
		chd_any_part *p;
		if (i == 0 || shard_of[i] != shard_of[i - 1]) {
			p = &a->parts[a->nparts++];
			p->any = a;
			p->shard = shard_of[i];
			p->names = &a->names[i];
		}
		a->parts[a->nparts - 1].nnames++;
	}
	free(shard_of);
	if (n < (int) ra->n_names && dup_failed) {
		for (int i = 0; i < n; i++) {
			free(a->names[i]);
		}
		free(a->names);
		free(a->parts);
		free(a);
		chd_reply_err(e, r, CHAN_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	a->req = r;
	a->e = e;
	a->conn = r->conn;
	if (r->msg->has_client && r->msg->has_id) {
		a->client = r->msg->client;
		a->id = r->msg->id;
	}
	a->timeout_ms = ra->has_timeout_ms ? ra->timeout_ms : -1;
	atomic_init(&a->refs, a->nparts + 1);
	atomic_init(&a->pending, a->nparts);
	atomic_init(&a->claimed, false);
	atomic_init(&a->nclosed, 0);
	atomic_init(&a->gated, false);
	for (int i = 0; i < a->nparts; i++) {
		chd_any_part *p = &a->parts[i];
		if (chd_shard_post(e->shards[p->shard], part_scan_job, p) != 0) {
			if (any_claim(a)) {
				chd_reply_err(e, r, CHAN_RESOURCE_EXHAUSTED,
				    "out of memory");
				a->req = NULL;
			}
			atomic_fetch_sub(&a->pending, 1);
			any_unref(a);
		}
	}
	any_unref(a);
}
