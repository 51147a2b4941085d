/*
 * deadline.h - a binary min-heap of deadlines, intrusive: each entry is a
 * chd_dl_node inside its owner (a parked task) that remembers its slot,
 * so removing any entry (a task answered before its time) is O(log n).
 *
 * Why: a shard used to give every parked call with a finite timeout its
 * own libevent timer. Requests mostly run on nng's threads, and every
 * evtimer_add / event_del that changed the earliest timeout made libevent
 * wake the shard's thread just to recompute its epoll timeout (about one
 * context switch per message in a paced push/pop, measured), plus a
 * malloc/free of a struct event per park. Now a shard keeps its parked
 * deadlines here and one libevent timer armed for the earliest of them,
 * only re-armed when a new deadline comes before it (shard.c).
 *
 * Not thread-safe: a shard's heap is touched only under its exec lock.
 */
#ifndef CHD_DEADLINE_H
#define CHD_DEADLINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct chd_dl_node {
	int64_t  at;   /* deadline, CLOCK_MONOTONIC ns */
	uint64_t seq;  /* insertion order: equal deadlines pop FIFO */
	size_t   pos;  /* slot + 1; 0: not in a heap (a calloc'd node) */
} chd_dl_node;

typedef struct chd_dl_heap {
	chd_dl_node **v;
	size_t        n, cap;
	uint64_t      seq;
} chd_dl_heap;

void chd_dl_init(chd_dl_heap *h);
void chd_dl_fini(chd_dl_heap *h);  /* frees the array; nodes are the owners' */
/* Adds x (not in a heap) with deadline at. ENOMEM: x stays out. */
int  chd_dl_insert(chd_dl_heap *h, chd_dl_node *x, int64_t at);
/* Takes x out of h (x must be in h). */
void chd_dl_remove(chd_dl_heap *h, chd_dl_node *x);
/* The earliest entry (NULL: empty); it stays in the heap. */
chd_dl_node *chd_dl_min(const chd_dl_heap *h);
/* Takes the earliest entry out (NULL: empty). */
chd_dl_node *chd_dl_pop(chd_dl_heap *h);

static inline bool
chd_dl_queued(const chd_dl_node *x)
{
	return (x->pos != 0);
}

/* CLOCK_MONOTONIC now, in ns: the clock of every deadline. */
int64_t chd_dl_now(void);

#endif
