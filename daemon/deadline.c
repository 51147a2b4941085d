/*
 * deadline.c - the deadline heap of a shard's parked tasks (deadline.h
 * says why it exists). A plain array-backed binary heap ordered by
 * (deadline, insertion order); each node keeps its slot for O(log n)
 * removal from anywhere.
 */
#include "deadline.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

/* First array size: a shard with a few parked calls never grows it. */
#define CHD_DL_MIN_CAP 16

void
chd_dl_init(chd_dl_heap *h)
{
	h->v = NULL;
	h->n = h->cap = 0;
	h->seq = 0;
}

void
chd_dl_fini(chd_dl_heap *h)
{
	for (size_t i = 0; i < h->n; i++) {
		h->v[i]->pos = 0;
	}
	free(h->v);
	chd_dl_init(h);
}

int64_t
chd_dl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec);
}

static bool
dl_before(const chd_dl_node *a, const chd_dl_node *b)
{
	return (a->at < b->at || (a->at == b->at && a->seq < b->seq));
}

static void
dl_set(chd_dl_heap *h, size_t i, chd_dl_node *x)
{
	h->v[i] = x;
	x->pos = i + 1;
}

/* Moves the node at slot i up to where it belongs. */
static void
dl_up(chd_dl_heap *h, size_t i)
{
	chd_dl_node *x = h->v[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (!dl_before(x, h->v[parent])) {
			break;
		}
		dl_set(h, i, h->v[parent]);
		i = parent;
	}
	dl_set(h, i, x);
}

/* Moves the node at slot i down to where it belongs. */
static void
dl_down(chd_dl_heap *h, size_t i)
{
	chd_dl_node *x = h->v[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= h->n) {
			break;
		}
		if (c + 1 < h->n && dl_before(h->v[c + 1], h->v[c])) {
			c++;
		}
		if (!dl_before(h->v[c], x)) {
			break;
		}
		dl_set(h, i, h->v[c]);
		i = c;
	}
	dl_set(h, i, x);
}

int
chd_dl_insert(chd_dl_heap *h, chd_dl_node *x, int64_t at)
{
	if (h->n == h->cap) {
		size_t        cap = h->cap == 0 ? CHD_DL_MIN_CAP : h->cap * 2;
		chd_dl_node **v = realloc(h->v, cap * sizeof(*v));

		if (v == NULL) {
			return (ENOMEM);
		}
		h->v = v;
		h->cap = cap;
	}
	x->at = at;
	x->seq = h->seq++;
	dl_set(h, h->n++, x);
	dl_up(h, h->n - 1);
	return (0);
}

void
chd_dl_remove(chd_dl_heap *h, chd_dl_node *x)
{
	size_t       i = x->pos - 1;
	chd_dl_node *last;

	x->pos = 0;
	last = h->v[--h->n];
	if (i == h->n) {
		return; /* x was the last slot */
	}
	/* The last node fills the hole, then goes whichever way it must. */
	dl_set(h, i, last);
	if (i > 0 && dl_before(last, h->v[(i - 1) / 2])) {
		dl_up(h, i);
	} else {
		dl_down(h, i);
	}
}

chd_dl_node *
chd_dl_min(const chd_dl_heap *h)
{
	return (h->n > 0 ? h->v[0] : NULL);
}

chd_dl_node *
chd_dl_pop(chd_dl_heap *h)
{
	chd_dl_node *x = chd_dl_min(h);

	if (x != NULL) {
		chd_dl_remove(h, x);
	}
	return (x);
}
