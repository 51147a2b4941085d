/*
 * counter.c - a shard's counters: a chained hash table of named i64 values,
 * each with the list of `wait` registrations parked on it.
 *
 * Waiters are checked on every change of their counter; a waiter whose
 * condition holds is unlinked and woken. A change wakes every waiter it
 * satisfies (SPEC: "Every waiter whose condition becomes true is woken"),
 * in the order they parked.
 */
#include "counter.h"

#include <stdlib.h>
#include <string.h>

#include "names.h"

struct chd_counter {
	chd_counter        *next;     /* hash chain */
	chd_counter_waiter *wait_head; /* parked waiters, FIFO */
	chd_counter_waiter *wait_tail;
	int64_t             value;
	char                name[CHL_NAME_MAX + 1];
};

struct chd_counters {
	chd_counter       **buckets;
	size_t              nbuckets; /* power of two */
	size_t              count;
	chd_counter_wake_fn wake;
	atomic_uint_least64_t *global; /* shared count, NULL: no limit */
	uint64_t            max;
};

/* FNV-1a: names are short, and an attacker gains nothing by colliding
 * names inside one client's own shard (per-connection limits cap it). */
static size_t
chd_counter_hash(const char *name)
{
	uint64_t h = 14695981039346656037u;

	for (; *name != '\0'; name++) {
		h = (h ^ (unsigned char) *name) * 1099511628211u;
	}
	return ((size_t) h);
}

chd_counters *
chd_counters_new(chd_counter_wake_fn wake)
{
	chd_counters *t;

	if ((t = calloc(1, sizeof(*t))) == NULL) {
		return (NULL);
	}
	t->nbuckets = 64;
	if ((t->buckets = calloc(t->nbuckets, sizeof(*t->buckets))) == NULL) {
		free(t);
		return (NULL);
	}
	t->wake = wake;
	return (t);
}

static chd_counter **
chd_counter_slot(chd_counters *t, const char *name)
{
	chd_counter **pp = &t->buckets[chd_counter_hash(name) & (t->nbuckets - 1)];

	while (*pp != NULL && strcmp((*pp)->name, name) != 0) {
		pp = &(*pp)->next;
	}
	return (pp);
}

static chd_counter *
chd_counter_find(chd_counters *t, const char *name)
{
	return (*chd_counter_slot(t, name));
}

/* Doubles the table when it is as full as it is wide; failure to grow only
 * costs speed, so it is not an error. */
static void
chd_counters_grow(chd_counters *t)
{
	size_t        n = t->nbuckets * 2;
	chd_counter **b;

	if ((b = calloc(n, sizeof(*b))) == NULL) {
		return;
	}
	for (size_t i = 0; i < t->nbuckets; i++) {
		chd_counter *c = t->buckets[i];
		while (c != NULL) {
			chd_counter *next = c->next;
			size_t       j = chd_counter_hash(c->name) & (n - 1);
			c->next = b[j];
			b[j] = c;
			c = next;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
}

void
chd_counters_limit(chd_counters *t, atomic_uint_least64_t *global,
    uint64_t max)
{
	t->global = global;
	t->max = max;
}

bool
chd_counters_full(const chd_counters *t)
{
	return (t->global != NULL && t->max != 0 &&
	    atomic_load(t->global) >= t->max);
}

/* A slot under the shared limit (other shards create concurrently). */
static bool
chd_counter_slot_take(chd_counters *t)
{
	uint64_t n;

	if (t->global == NULL) {
		return (true);
	}
	n = atomic_load(t->global);
	do {
		if (t->max != 0 && n >= t->max) {
			return (false);
		}
	} while (!atomic_compare_exchange_weak(t->global, &n, n + 1));
	return (true);
}

static void
chd_counter_slot_give(chd_counters *t)
{
	if (t->global != NULL) {
		atomic_fetch_sub(t->global, 1);
	}
}

/* Finds or creates at 0. NULL when out of memory or at the limit. */
static chd_counter *
chd_counter_get_or_create(chd_counters *t, const char *name)
{
	chd_counter **pp = chd_counter_slot(t, name);
	chd_counter  *c;
	size_t        len = strlen(name);

	if (*pp != NULL) {
		return (*pp);
	}
	if (len > CHL_NAME_MAX || !chd_counter_slot_take(t)) {
		return (NULL);
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		chd_counter_slot_give(t);
		return (NULL);
	}
	memcpy(c->name, name, len + 1);
	*pp = c;
	t->count++;
	if (t->count > t->nbuckets) {
		chd_counters_grow(t);
	}
	return (c);
}

static void
chd_waiter_unlink(chd_counter_waiter *w)
{
	chd_counter *c = w->ctr_;

	if (c == NULL) {
		return;
	}
	if (w->prev_ != NULL) {
		w->prev_->next_ = w->next_;
	} else {
		c->wait_head = w->next_;
	}
	if (w->next_ != NULL) {
		w->next_->prev_ = w->prev_;
	} else {
		c->wait_tail = w->prev_;
	}
	w->prev_ = w->next_ = NULL;
	w->ctr_ = NULL;
}

bool
chd_wait_op_holds(chd_wait_op op, int64_t a, int64_t b)
{
	switch (op) {
	case CHD_WAIT_EQ:
		return (a == b);
	case CHD_WAIT_NE:
		return (a != b);
	case CHD_WAIT_LT:
		return (a < b);
	case CHD_WAIT_LE:
		return (a <= b);
	case CHD_WAIT_GT:
		return (a > b);
	case CHD_WAIT_GE:
		return (a >= b);
	}
	return (false);
}

/* After a change: wake every waiter the new value satisfies. The wake
 * function may free the waiter, so the next link is read first. */
static void
chd_counter_changed(chd_counters *t, chd_counter *c)
{
	chd_counter_waiter *w = c->wait_head;

	while (w != NULL) {
		chd_counter_waiter *next = w->next_;
		if (chd_wait_op_holds(w->op, c->value, w->value)) {
			chd_waiter_unlink(w);
			t->wake(w, CHAN_OK, c->value);
		}
		w = next;
	}
}

/* Unlinks every waiter of c and wakes it with st. */
static void
chd_counter_wake_all(chd_counters *t, chd_counter *c, chan_status st)
{
	while (c->wait_head != NULL) {
		chd_counter_waiter *w = c->wait_head;
		chd_waiter_unlink(w);
		t->wake(w, st, c->value);
	}
}

chan_status
chd_counter_add(chd_counters *t, const char *name, int64_t delta,
    int64_t *new_value)
{
	chd_counter *c;
	int64_t      v;

	if ((c = chd_counter_get_or_create(t, name)) == NULL) {
		return (CHAN_RESOURCE_EXHAUSTED);
	}
	if (__builtin_add_overflow(c->value, delta, &v)) {
		*new_value = c->value;
		return (CHAN_OUT_OF_RANGE);
	}
	c->value = v;
	*new_value = v;
	if (delta != 0) {
		chd_counter_changed(t, c);
	}
	return (CHAN_OK);
}

chan_status
chd_counter_add_many(chd_counters *t, const char *name, const int64_t *deltas,
    size_t n, int64_t *values, size_t *bad)
{
	chd_counter *c;
	int64_t      v;
	size_t       i;

	if ((c = chd_counter_get_or_create(t, name)) == NULL) {
		return (CHAN_RESOURCE_EXHAUSTED);
	}
	/* Checked in full first: a failed sequence must leave no trace,
	 * and a waiter must not be woken by a value that is then undone. */
	v = c->value;
	for (i = 0; i < n; i++) {
		if (__builtin_add_overflow(v, deltas[i], &v)) {
			*bad = i;
			return (CHAN_OUT_OF_RANGE);
		}
		values[i] = v;
	}
	for (i = 0; i < n; i++) {
		c->value = values[i];
		if (deltas[i] != 0) {
			chd_counter_changed(t, c);
		}
	}
	return (CHAN_OK);
}

chan_status
chd_counter_get(chd_counters *t, const char *name, int64_t *value)
{
	chd_counter *c;

	if ((c = chd_counter_find(t, name)) == NULL) {
		return (CHAN_NOT_FOUND);
	}
	*value = c->value;
	return (CHAN_OK);
}

chan_status
chd_counter_set(chd_counters *t, const char *name, int64_t value,
    int64_t *old_value)
{
	chd_counter *c;

	if ((c = chd_counter_get_or_create(t, name)) == NULL) {
		return (CHAN_RESOURCE_EXHAUSTED);
	}
	*old_value = c->value;
	c->value = value;
	if (*old_value != value) {
		chd_counter_changed(t, c);
	}
	return (CHAN_OK);
}

chan_status
chd_counter_cas(chd_counters *t, const char *name, int64_t expected,
    int64_t new_value, bool *swapped, int64_t *current)
{
	chd_counter *c;

	if ((c = chd_counter_get_or_create(t, name)) == NULL) {
		return (CHAN_RESOURCE_EXHAUSTED);
	}
	*swapped = (c->value == expected);
	if (*swapped) {
		c->value = new_value;
		if (expected != new_value) {
			chd_counter_changed(t, c);
		}
	}
	*current = c->value;
	return (CHAN_OK);
}

chan_status
chd_counter_delete(chd_counters *t, const char *name)
{
	chd_counter **pp = chd_counter_slot(t, name);
	chd_counter  *c = *pp;

	if (c == NULL) {
		return (CHAN_NOT_FOUND);
	}
	*pp = c->next;
	t->count--;
	chd_counter_slot_give(t);
	chd_counter_wake_all(t, c, CHAN_NOT_FOUND);
	free(c);
	return (CHAN_OK);
}

chan_status
chd_counter_wait(chd_counters *t, const char *name, chd_counter_waiter *w,
    int64_t *value)
{
	chd_counter *c;

	if ((c = chd_counter_get_or_create(t, name)) == NULL) {
		return (CHAN_RESOURCE_EXHAUSTED);
	}
	*value = c->value;
	if (chd_wait_op_holds(w->op, c->value, w->value)) {
		return (CHAN_OK);
	}
	w->ctr_ = c;
	w->next_ = NULL;
	w->prev_ = c->wait_tail;
	if (c->wait_tail != NULL) {
		c->wait_tail->next_ = w;
	} else {
		c->wait_head = w;
	}
	c->wait_tail = w;
	return (CHAN_EMPTY);
}

void
chd_counter_waiter_cancel(chd_counter_waiter *w)
{
	chd_waiter_unlink(w);
}

void
chd_counters_each(chd_counters *t, chd_counter_visit_fn fn, void *arg)
{
	for (size_t i = 0; i < t->nbuckets; i++) {
		for (chd_counter *c = t->buckets[i]; c != NULL; c = c->next) {
			fn(arg, c->name, c->value);
		}
	}
}

size_t
chd_counters_count(const chd_counters *t)
{
	return (t->count);
}

void
chd_counters_free(chd_counters *t)
{
	if (t == NULL) {
		return;
	}
	for (size_t i = 0; i < t->nbuckets; i++) {
		chd_counter *c = t->buckets[i];
		while (c != NULL) {
			chd_counter *next = c->next;
			chd_counter_wake_all(t, c, CHAN_SHUTTING_DOWN);
			free(c);
			c = next;
		}
	}
	free(t->buckets);
	free(t);
}
