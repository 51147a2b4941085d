/*
 * counter_ops.c - the counter requests on their owner shard, over the
 * shard's chd_counters table (counter.h). Waits park a task with a timer.
 */
#include "engine_int.h"

#include <stdlib.h>

static void
reply_value(chd_engine *e, chd_req *r, int64_t v)
{
	chd_resp              a;
	Chan__V1__ValueResult vr = CHAN__V1__VALUE_RESULT__INIT;

	chd_resp_init(&a);
	vr.has_value = true;
	vr.value = v;
	a.r.result_case = CHAN__V1__RESPONSE__RESULT_VALUE;
	a.r.value = &vr;
	chd_resp_send(e, r, &a, CHAN_OK);
}

/* A counter op failed: names --max-counters when that is the cause. */
static void
counter_fail(chd_shard *sh, chd_req *r, const char *name, chan_status st)
{
	if (st == CHAN_RESOURCE_EXHAUSTED && chd_counters_full(sh->counters)) {
		chd_reply_err(sh->e, r, st, "no room for counter '%s': the "
		    "daemon holds its maximum of %llu counters (--max-counters)",
		    name, (unsigned long long) sh->e->opts.max_counters);
		return;
	}
	chd_reply_err(sh->e, r, st, "counter '%s': %s", name,
	    chan_strerror(st));
}

/* CounterAdd.deltas (engine.c checked 1..max_batch and no delta). */
static void
counter_add_many(chd_shard *sh, chd_req *r)
{
	Chan__V1__CounterAdd *c = r->msg->counter_add;
	Chan__V1__ValueResult vr = CHAN__V1__VALUE_RESULT__INIT;
	chd_resp              a;
	int64_t              *vals;
	size_t                bad = 0;
	chan_status           st;

	/* r->reply packs the answer before chd_resp_send returns. */
	if ((vals = malloc(c->n_deltas * sizeof(*vals))) == NULL) {
		chd_reply_err(sh->e, r, CHAN_RESOURCE_EXHAUSTED,
		    "out of memory");
		return;
	}
	st = chd_counter_add_many(sh->counters, c->name, c->deltas,
	    c->n_deltas, vals, &bad);
	if (st == CHAN_OUT_OF_RANGE) {
		chd_reply_err(sh->e, r, st, "add %zu of %zu (%lld) to counter "
		    "'%s' would overflow a 64-bit signed value; none of the "
		    "adds was applied", bad + 1, c->n_deltas,
		    (long long) c->deltas[bad], c->name);
	} else if (st != CHAN_OK) {
		counter_fail(sh, r, c->name, st);
	} else {
		chd_resp_init(&a);
		vr.has_value = true;
		vr.value = vals[c->n_deltas - 1];
		vr.n_values = c->n_deltas;
		vr.values = vals;
		a.r.result_case = CHAN__V1__RESPONSE__RESULT_VALUE;
		a.r.value = &vr;
		chd_resp_send(sh->e, r, &a, CHAN_OK);
	}
	free(vals);
}

void
chd_op_counter_add(chd_shard *sh, chd_req *r)
{
	Chan__V1__CounterAdd *c = r->msg->counter_add;
	int64_t               delta = c->has_delta ? c->delta : 1;
	int64_t               v = 0;
	chan_status           st;

	if (c->n_deltas > 0) {
		counter_add_many(sh, r);
		return;
	}
	st = chd_counter_add(sh->counters, c->name, delta, &v);
	if (st == CHAN_OUT_OF_RANGE) {
		chd_reply_err(sh->e, r, st, "adding %lld to counter '%s' "
		    "would overflow a 64-bit signed value; it is unchanged",
		    (long long) delta, c->name);
	} else if (st != CHAN_OK) {
		counter_fail(sh, r, c->name, st);
	} else {
		reply_value(sh->e, r, v);
	}
}

void
chd_op_counter_get(chd_shard *sh, chd_req *r)
{
	const char *name = r->msg->counter_get->name;
	int64_t     v = 0;
	chan_status st;

	if ((st = chd_counter_get(sh->counters, name, &v)) != CHAN_OK) {
		chd_reply_err(sh->e, r, st, st == CHAN_NOT_FOUND ?
		    "no counter named '%s'" : "counter '%s' failed", name);
		return;
	}
	reply_value(sh->e, r, v);
}

void
chd_op_counter_set(chd_shard *sh, chd_req *r)
{
	Chan__V1__CounterSet *c = r->msg->counter_set;
	int64_t               old = 0;
	chan_status           st;

	st = chd_counter_set(sh->counters, c->name, c->value, &old);
	if (st != CHAN_OK) {
		counter_fail(sh, r, c->name, st);
		return;
	}
	reply_value(sh->e, r, old);
}

void
chd_op_counter_cas(chd_shard *sh, chd_req *r)
{
	Chan__V1__CounterCas *c = r->msg->counter_cas;
	Chan__V1__CasResult   cr = CHAN__V1__CAS_RESULT__INIT;
	chd_resp              a;
	bool                  swapped = false;
	int64_t               cur = 0;
	chan_status           st;

	st = chd_counter_cas(sh->counters, c->name, c->expected, c->new_value,
	    &swapped, &cur);
	if (st != CHAN_OK) {
		counter_fail(sh, r, c->name, st);
		return;
	}
	chd_resp_init(&a);
	cr.has_swapped = cr.has_value = true;
	cr.swapped = swapped;
	cr.value = cur;
	a.r.result_case = CHAN__V1__RESPONSE__RESULT_CAS;
	a.r.cas = &cr;
	chd_resp_send(sh->e, r, &a, CHAN_OK);
}

void
chd_op_counter_delete(chd_shard *sh, chd_req *r)
{
	const char *name = r->msg->counter_delete->name;

	if (chd_counter_delete(sh->counters, name) != CHAN_OK) {
		chd_reply_err(sh->e, r, CHAN_NOT_FOUND,
		    "no counter named '%s'", name);
		return;
	}
	chd_reply_empty(sh->e, r);
}

/* The table says the waiter's condition holds (or its counter is gone). */
void
chd_counter_wake(chd_counter_waiter *w, chan_status st, int64_t value)
{
	chd_task   *t = w->arg;
	chd_engine *e = t->sh->e;
	chd_req    *r = t->req;

	chd_task_unpark(t);
	if (st == CHAN_OK) {
		reply_value(e, r, value);
	} else if (st == CHAN_NOT_FOUND) {
		chd_reply_err(e, r, st, "counter '%s' was deleted",
		    r->msg->counter_wait->name);
	} else {
		chd_reply_err(e, r, st, "%s", chan_strerror(st));
	}
	free(t);
}

static void
wait_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	chd_task *t = arg;
	chd_req  *r = t->req;

	chd_counter_waiter_cancel(&t->cw);
	chd_task_unpark(t);
	chd_reply_err(t->sh->e, r, CHAN_TIMEOUT,
	    "counter '%s' did not meet the condition within the timeout",
	    r->msg->counter_wait->name);
	free(t);
}

void
chd_op_counter_wait(chd_shard *sh, chd_req *r)
{
	Chan__V1__CounterWait *c = r->msg->counter_wait;
	int64_t                timeout = c->has_timeout_ms ? c->timeout_ms : -1;
	chd_task              *t;
	int64_t                v = 0;
	chan_status            st;

	if ((t = calloc(1, sizeof(*t))) == NULL) {
		chd_reply_err(sh->e, r, CHAN_RESOURCE_EXHAUSTED,
		    "out of memory");
		return;
	}
	t->kind = CHD_T_CWAIT;
	t->sh = sh;
	t->req = r;
	t->conn = r->conn;
	t->cw.op = (chd_wait_op) c->op;
	t->cw.value = c->value;
	t->cw.arg = t;
	st = chd_counter_wait(sh->counters, c->name, &t->cw, &v);
	if (st == CHAN_OK) {
		free(t);
		reply_value(sh->e, r, v);
		return;
	}
	if (st != CHAN_EMPTY) {
		free(t);
		counter_fail(sh, r, c->name, st);
		return;
	}
	if (timeout == 0 || !chd_engine_conn_alive(sh->e, r->conn)) {
		chd_counter_waiter_cancel(&t->cw);
		free(t);
		if (timeout == 0) {
			chd_reply_err(sh->e, r, CHAN_TIMEOUT, "counter '%s' is "
			    "%lld; the condition does not hold", c->name,
			    (long long) v);
		} else {
			chd_reply_err(sh->e, r, CHAN_UNAVAILABLE,
			    "connection closed");
		}
		return;
	}
	chd_task_park(t, timeout, wait_timeout_cb);
}
