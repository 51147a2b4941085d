/* counter.c - shared counters: add, get, set, cas, wait, delete, list. */
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs x and takes ValueResult.value into *value (may be NULL). */
static chan_status
chan_counter_value_call(chan_client *c, chan_exchange *x, int64_t *value)
{
	chan_status s;

	s = chan_exchange_run(c, x, CHAN__V1__RESPONSE__RESULT_VALUE, -1, false);
	if (s == CHAN_OK && value != NULL) {
		*value = x->resp->value->value;
	}
	chan_exchange_fini(x);
	return (s);
}

chan_status
chan_counter_add_build(chan_client *c, const char *name, int64_t delta, Chan__V1__CounterAdd *a)
{
	chan_status s;

	if (c == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "client is NULL"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	chan__v1__counter_add__init(a);
	a->name = (char *) name;
	a->has_delta = 1;
	a->delta = delta;
	return (CHAN_OK);
}

chan_status
chan_counter_add(chan_client *c, const char *name, int64_t delta, int64_t *new_value)
{
	chan_exchange        x;
	Chan__V1__CounterAdd a;
	chan_status          s;

	if ((s = chan_counter_add_build(c, name, delta, &a)) != CHAN_OK) {
		return (s);
	}
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_COUNTER_ADD;
	x.req.counter_add = &a;
	return (chan_counter_value_call(c, &x, new_value));
}

/*
 * The daemon reads CounterAdd.deltas. CHAN_COUNTER_ADD_MANY=0 in the
 * environment acts as if it did not (one request per add), to compare the
 * two and to test the fallback against a current daemon.
 */
bool
chan_counter_add_many(const chan_client *c)
{
	const char *v = getenv("CHAN_COUNTER_ADD_MANY");

	return (c->add_many && (v == NULL || strcmp(v, "0") != 0));
}

chan_status
chan_counter_add_n_build(chan_client *c, const char *name, const int64_t *deltas, size_t n,
    Chan__V1__CounterAdd *a)
{
	chan_status s;

	if (c == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "client is NULL"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	if (deltas == NULL || n == 0) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "counter add: no deltas"));
	}
	if (n > c->max_batch) {
		return (chan_fail(CHAN_INVALID_ARGUMENT,
		    "counter add: %zu deltas in one call; the daemon takes 1 to %u", n,
		    c->max_batch));
	}
	chan__v1__counter_add__init(a);
	a->name = (char *) name;
	a->n_deltas = n;
	a->deltas = (int64_t *) deltas;
	return (CHAN_OK);
}

/* One CounterAdd.deltas request for n (1..max_batch) deltas. */
static chan_status
chan_counter_add_chunk(chan_client *c, const char *name, const int64_t *deltas, size_t n,
    int64_t *values)
{
	chan_exchange        x;
	Chan__V1__CounterAdd a;
	const Chan__V1__ValueResult *r;
	chan_status          s;

	if ((s = chan_counter_add_n_build(c, name, deltas, n, &a)) != CHAN_OK) {
		return (s);
	}
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_COUNTER_ADD;
	x.req.counter_add = &a;
	s = chan_exchange_run(c, &x, CHAN__V1__RESPONSE__RESULT_VALUE, -1, false);
	if (s == CHAN_OK) {
		r = x.resp->value;
		if (r->n_values != n) {
			s = chan_fail(CHAN_PROTOCOL, "counter add: %zu deltas answered with %zu "
			    "values", n, r->n_values);
		} else if (values != NULL) {
			memcpy(values, r->values, n * sizeof(*values));
		}
	}
	chan_exchange_fini(&x);
	return (s);
}

chan_status
chan_counter_add_n(chan_client *c, const char *name, const int64_t *deltas, size_t n,
    int64_t *values)
{
	chan_status s;
	size_t      i, k;

	if (c == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "client is NULL"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	if (deltas == NULL || n == 0) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "counter add: no deltas"));
	}
	/* More than max_batch: several requests, in order (chan.h). */
	for (i = 0; i < n; i += k) {
		if (!chan_counter_add_many(c)) {
			k = 1;
			s = chan_counter_add(c, name, deltas[i], values != NULL ? &values[i] : NULL);
		} else {
			k = n - i < c->max_batch ? n - i : c->max_batch;
			s = chan_counter_add_chunk(c, name, deltas + i, k,
			    values != NULL ? values + i : NULL);
		}
		if (s != CHAN_OK) {
			return (s);
		}
	}
	return (CHAN_OK);
}

chan_status
chan_counter_get(chan_client *c, const char *name, int64_t *value)
{
	chan_exchange        x;
	Chan__V1__CounterGet a = CHAN__V1__COUNTER_GET__INIT;
	chan_status          s;

	if (c == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "client is NULL"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	a.name = (char *) name;
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_COUNTER_GET;
	x.req.counter_get = &a;
	return (chan_counter_value_call(c, &x, value));
}

chan_status
chan_counter_set(chan_client *c, const char *name, int64_t value, int64_t *old_value)
{
	chan_exchange        x;
	Chan__V1__CounterSet a = CHAN__V1__COUNTER_SET__INIT;
	chan_status          s;

	if (c == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "client is NULL"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	a.name = (char *) name;
	a.has_value = 1;
	a.value = value;
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_COUNTER_SET;
	x.req.counter_set = &a;
	return (chan_counter_value_call(c, &x, old_value));
}

chan_status
chan_counter_cas(chan_client *c, const char *name, int64_t expected, int64_t new_value,
    bool *swapped, int64_t *current)
{
	chan_exchange        x;
	Chan__V1__CounterCas a = CHAN__V1__COUNTER_CAS__INIT;
	chan_status          s;

	if (c == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "client is NULL"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	a.name = (char *) name;
	a.has_expected = 1;
	a.expected = expected;
	a.has_new_value = 1;
	a.new_value = new_value;
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_COUNTER_CAS;
	x.req.counter_cas = &a;
	s = chan_exchange_run(c, &x, CHAN__V1__RESPONSE__RESULT_CAS, -1, false);
	if (s == CHAN_OK) {
		if (swapped != NULL) {
			*swapped = x.resp->cas->swapped;
		}
		if (current != NULL) {
			*current = x.resp->cas->value;
		}
	}
	chan_exchange_fini(&x);
	return (s);
}

chan_status
chan_counter_wait_build(chan_client *c, const char *name, chan_wait_op op, int64_t operand,
    int64_t timeout_ms, Chan__V1__CounterWait *a)
{
	chan_status s;

	if (c == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "client is NULL"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	if ((unsigned) op > (unsigned) CHAN_WAIT_GE) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "unknown wait operator %d", (int) op));
	}
	chan__v1__counter_wait__init(a);
	a->name = (char *) name;
	a->has_op = 1;
	a->op = (Chan__V1__WaitOp) op;
	a->has_value = 1;
	a->value = operand;
	a->has_timeout_ms = 1;
	a->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
	return (CHAN_OK);
}

chan_status
chan_counter_wait(chan_client *c, const char *name, chan_wait_op op, int64_t operand,
    int64_t timeout_ms, int64_t *value)
{
	chan_exchange         x;
	Chan__V1__CounterWait a;
	chan_status           s;

	if ((s = chan_counter_wait_build(c, name, op, operand, timeout_ms, &a)) != CHAN_OK) {
		return (s);
	}
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_COUNTER_WAIT;
	x.req.counter_wait = &a;
	return (chan_counter_value_call(c, &x, value));
}

chan_status
chan_counter_delete(chan_client *c, const char *name)
{
	chan_exchange           x;
	Chan__V1__CounterDelete a = CHAN__V1__COUNTER_DELETE__INIT;
	chan_status             s;

	if (c == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "client is NULL"));
	}
	if ((s = chan_check_name(name)) != CHAN_OK) {
		return (s);
	}
	a.name = (char *) name;
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_COUNTER_DELETE;
	x.req.counter_delete = &a;
	s = chan_exchange_run(c, &x, 0, -1, false);
	chan_exchange_fini(&x);
	return (s);
}

chan_status
chan_counter_list(chan_client *c, chan_counter_info **infos, size_t *n)
{
	chan_exchange         x;
	Chan__V1__CounterList a = CHAN__V1__COUNTER_LIST__INIT;
	chan_counter_info    *arr;
	const Chan__V1__CounterListResult *r;
	chan_status           s;
	size_t                i;

	if (c == NULL || infos == NULL || n == NULL) {
		return (chan_fail(CHAN_INVALID_ARGUMENT, "counter list: client or output missing"));
	}
	chan_exchange_init(&x);
	x.req.op_case = CHAN__V1__REQUEST__OP_COUNTER_LIST;
	x.req.counter_list = &a;
	s = chan_exchange_run(c, &x, CHAN__V1__RESPONSE__RESULT_COUNTER_LIST, -1, false);
	if (s != CHAN_OK) {
		goto out;
	}
	r = x.resp->counter_list;
	if ((arr = calloc(r->n_counters + 1, sizeof(*arr))) == NULL) {
		s = chan_fail(CHAN_RESOURCE_EXHAUSTED, "out of memory");
		goto out;
	}
	for (i = 0; i < r->n_counters; i++) {
		snprintf(arr[i].name, sizeof(arr[i].name), "%s",
		    r->counters[i]->name != NULL ? r->counters[i]->name : "");
		arr[i].value = r->counters[i]->value;
	}
	*infos = arr;
	*n = r->n_counters;
out:
	chan_exchange_fini(&x);
	return (s);
}

void
chan_counter_list_free(chan_counter_info *infos)
{
	free(infos);
}
