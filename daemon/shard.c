/*
 * shard.c - executor shards: one thread, one libevent base and one mailbox
 * each (memcached's thread.c pattern: a locked queue plus an event made
 * active from other threads). Also the small shared helpers of the engine:
 * the intrusive hash table, answer arenas, parked-task bookkeeping.
 */
#include "engine_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#include <event2/thread.h>

/* ---- hash table --------------------------------------------------------- */

int
chd_htab_init(chd_htab *t)
{
	t->nb = 64;
	t->n = 0;
	if ((t->b = calloc(t->nb, sizeof(*t->b))) == NULL) {
		return (ENOMEM);
	}
	return (0);
}

void
chd_htab_fini(chd_htab *t)
{
	free(t->b);
	t->b = NULL;
	t->nb = t->n = 0;
}

chd_hnode *
chd_htab_find(chd_htab *t, uint64_t hash, chd_hnode *from)
{
	chd_hnode *n = from != NULL ? from->hnext : t->b[hash & (t->nb - 1)];

	for (; n != NULL; n = n->hnext) {
		if (n->hash == hash) {
			return (n);
		}
	}
	return (NULL);
}

/* Doubles the buckets; on ENOMEM it keeps the old (slower, still right). */
static void
chd_htab_grow(chd_htab *t)
{
	size_t      nb = t->nb * 2;
	chd_hnode **b;

	if ((b = calloc(nb, sizeof(*b))) == NULL) {
		return;
	}
	for (size_t i = 0; i < t->nb; i++) {
		chd_hnode *n, *next;
		for (n = t->b[i]; n != NULL; n = next) {
			next = n->hnext;
			n->hnext = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(t->b);
	t->b = b;
	t->nb = nb;
}

void
chd_htab_insert(chd_htab *t, chd_hnode *n)
{
	size_t i;

	if (t->n >= t->nb) {
		chd_htab_grow(t);
	}
	i = n->hash & (t->nb - 1);
	n->hnext = t->b[i];
	t->b[i] = n;
	t->n++;
}

void
chd_htab_remove(chd_htab *t, chd_hnode *n)
{
	chd_hnode **pp = &t->b[n->hash & (t->nb - 1)];

	for (; *pp != NULL; pp = &(*pp)->hnext) {
		if (*pp == n) {
			*pp = n->hnext;
			t->n--;
			return;
		}
	}
}

/* FNV-1a, 64 bit; the domain byte keeps channels and counters apart. */
uint64_t
chd_hash_name(char domain, const char *s)
{
	uint64_t h = 14695981039346656037ull;

	h = (h ^ (unsigned char) domain) * 1099511628211ull;
	for (; *s != '\0'; s++) {
		h = (h ^ (unsigned char) *s) * 1099511628211ull;
	}
	return (h);
}

chd_shard *
chd_shard_for_chan(chd_engine *e, const char *name)
{
	/* High bits: the low ones pick the bucket inside the shard. */
	return (e->shards[(chd_hash_name('c', name) >> 32) % (uint64_t) e->n]);
}

chd_shard *
chd_shard_for_counter(chd_engine *e, const char *name)
{
	return (e->shards[(chd_hash_name('k', name) >> 32) % (uint64_t) e->n]);
}

/* ---- answers ------------------------------------------------------------ */

struct chd_ablk {
	chd_ablk *next;
	size_t    size, used;
	_Alignas(16) unsigned char mem[];
};

void
chd_resp_init(chd_resp *a)
{
	Chan__V1__Response init = CHAN__V1__RESPONSE__INIT;

	a->r = init;
	a->arena = NULL;
}

void *
chd_resp_alloc_raw(chd_resp *a, size_t size)
{
	chd_ablk *b = a->arena;
	void     *p;

	size = (size + 15) & ~(size_t) 15;
	if (b == NULL || b->size - b->used < size) {
		size_t bs = size > 4000 ? size : 4000;
		if ((b = malloc(sizeof(*b) + bs)) == NULL) {
			return (NULL);
		}
		b->size = bs;
		b->used = 0;
		b->next = a->arena;
		a->arena = b;
	}
	p = b->mem + b->used;
	b->used += size;
	return (p);
}

void *
chd_resp_alloc(chd_resp *a, size_t size)
{
	void *p = chd_resp_alloc_raw(a, size);

	if (p != NULL) {
		memset(p, 0, size);
	}
	return (p);
}

void
chd_resp_send(chd_engine *e, chd_req *r, chd_resp *a, chan_status st)
{
	chd_ablk *b, *next;

	if (r->msg != NULL && r->msg->has_id) {
		a->r.has_id = true;
		a->r.id = r->msg->id;
	}
	a->r.has_status = true;
	a->r.status = (Chan__V1__Status) st;
	if (st != CHAN_OK && a->r.error == NULL) {
		a->r.error = (char *) chan_strerror(st);
	}
	atomic_fetch_add(&e->requests, 1);
	r->reply(r, &a->r);
	for (b = a->arena; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
	a->arena = NULL;
}

void
chd_reply_err(chd_engine *e, chd_req *r, chan_status st, const char *fmt, ...)
{
	chd_resp a;
	char     buf[512];
	va_list  ap;

	chd_resp_init(&a);
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	a.r.error = buf;
	chd_resp_send(e, r, &a, st);
}

void
chd_reply_empty(chd_engine *e, chd_req *r)
{
	chd_resp         a;
	Chan__V1__Empty  empty = CHAN__V1__EMPTY__INIT;

	chd_resp_init(&a);
	a.r.result_case = CHAN__V1__RESPONSE__RESULT_EMPTY;
	a.r.empty = &empty;
	chd_resp_send(e, r, &a, CHAN_OK);
}

/* ---- connections: what each holds here --------------------------------- */

static chd_connrec *
conn_find(chd_shard *sh, uint32_t conn)
{
	chd_hnode *n = NULL;

	while ((n = chd_htab_find(&sh->conns_seen, conn, n)) != NULL) {
		if (((chd_connrec *) n)->conn == conn) {
			return ((chd_connrec *) n);
		}
	}
	return (NULL);
}

/*
 * -DCHD_CONN_INDEX=0 at build time: no records, every close takes the
 * full walk (the out-of-memory fallback; the engine before the index),
 * for comparisons and to run the tests through that path.
 */
#ifndef CHD_CONN_INDEX
#define CHD_CONN_INDEX 1
#endif

chd_connrec *
chd_shard_conn(chd_shard *sh, uint32_t conn, bool create)
{
	chd_connrec *c = conn_find(sh, conn);

	if (c != NULL || !create) {
		return (c);
	}
	if (!CHD_CONN_INDEX || (c = calloc(1, sizeof(*c))) == NULL) {
		/* Cannot index it: make every close walk instead. */
		sh->seen_lost = true;
		return (NULL);
	}
	c->conn = conn;
	c->hn.hash = conn;
	chd_htab_insert(&sh->conns_seen, &c->hn);
	return (c);
}

chd_connrec *
chd_shard_conn_take(chd_shard *sh, uint32_t conn)
{
	chd_connrec *c = conn_find(sh, conn);

	if (c != NULL) {
		chd_htab_remove(&sh->conns_seen, &c->hn);
	}
	return (c);
}

void
chd_shard_conn_free(chd_connrec *c)
{
	free(c);
}

/* Shard teardown: channels and tasks are gone, the records are empty. */
static void
seen_free_all(chd_shard *sh)
{
	for (size_t i = 0; i < sh->conns_seen.nb; i++) {
		chd_hnode *n, *next;
		for (n = sh->conns_seen.b[i]; n != NULL; n = next) {
			next = n->hnext;
			free(n);
		}
	}
	chd_htab_fini(&sh->conns_seen);
}

/* ---- parked tasks ------------------------------------------------------- */

/*
 * A task's own timer: only when the deadline heap could not grow (out of
 * memory), so such a task still times out.
 */
static void
chd_task_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	chd_task  *t = arg;
	chd_shard *sh = t->sh;

	if (!chd_shard_timer_begin(sh, t->timer)) {
		return;
	}
	t->timer_fn(fd, what, t); /* may free t */
	chd_shard_timer_end(sh);
}

/*
 * The deadline timer (one per shard; deadline.h says why). Arming it is
 * the only libevent call parks make, and only for a deadline earlier than
 * the armed one: with uniform timeouts each new deadline is later, so a
 * park from a request thread neither calls libevent nor wakes the shard's
 * thread. Everything here runs with exec held.
 */
static void
dl_arm(chd_shard *sh, int64_t at, int64_t now)
{
	int64_t        us = at > now ? (at - now + 999) / 1000 : 0;
	struct timeval tv = { (time_t) (us / 1000000),
		(suseconds_t) (us % 1000000) };

	evtimer_add(sh->dl_tmr, &tv); /* a pending one is moved */
	sh->dl_armed = true;
	sh->dl_armed_at = at;
}

static void
chd_shard_dl_cb(evutil_socket_t fd, short what, void *arg)
{
	chd_shard   *sh = arg;
	chd_dl_node *x;
	int64_t      now;

	(void) fd;
	(void) what;
	if (!chd_shard_timer_begin(sh, sh->dl_tmr)) {
		return; /* runs again shortly; dl_armed_at stays (passed) */
	}
	sh->dl_armed = false;
	sh->dl_firing = true;
	now = chd_dl_now();
	/*
	 * Only what was due when we looked: a callback may unpark (and
	 * free) other tasks, which leaves them out of the heap, or park new
	 * ones, whose deadlines are later than now. So the loop ends, and
	 * it never holds a pointer across a callback.
	 */
	while ((x = chd_dl_min(&sh->dl)) != NULL && x->at <= now) {
		chd_task *t = (chd_task *) (void *) ((char *) x -
		    offsetof(chd_task, dl));

		chd_dl_remove(&sh->dl, x);
		t->timer_fn(-1, EV_TIMEOUT, t); /* unparks t, may free it */
	}
	sh->dl_firing = false;
	if ((x = chd_dl_min(&sh->dl)) != NULL) {
		dl_arm(sh, x->at, chd_dl_now());
	}
	chd_shard_timer_end(sh);
}

void
chd_task_park(chd_task *t, int64_t timeout_ms, event_callback_fn cb)
{
	chd_shard     *sh = t->sh;
	struct timeval tv;
	int64_t        now, at;

	if ((t->crec = chd_shard_conn(sh, t->conn, true)) != NULL) {
		CHD_DL_PUSH(t->crec->tasks, t, oprev, onext);
	}
	t->parked = true;
	t->sprev = NULL;
	t->snext = sh->parked;
	if (sh->parked != NULL) {
		sh->parked->sprev = t;
	}
	sh->parked = t;
	if (timeout_ms <= 0 || !chd_timeval((uint64_t) timeout_ms, &tv)) {
		return; /* waits until answered, closed or shut down */
	}
	t->timer_fn = cb;
	now = chd_dl_now();
	at = now + timeout_ms * 1000000;
	if (chd_dl_insert(&sh->dl, &t->dl, at) == 0) {
		if (!sh->dl_firing && (!sh->dl_armed || at < sh->dl_armed_at)) {
			dl_arm(sh, at, now);
		}
		return;
	}
	/* No room in the heap: a timer of its own, as before the heap.
	 * Without that either the task still ends on close/shutdown; a
	 * failed allocation only loses the timeout, never the answer. */
	if ((t->timer = evtimer_new(sh->base, chd_task_timer_cb, t)) != NULL) {
		evtimer_add(t->timer, &tv);
	}
}

void
chd_task_unpark(chd_task *t)
{
	chd_shard *sh = t->sh;

	if (!t->parked) {
		return;
	}
	/* Out of the heap only: the shard's timer stays as armed (it may
	 * fire early and re-arm), so no libevent call and no wake here. */
	if (chd_dl_queued(&t->dl)) {
		chd_dl_remove(&sh->dl, &t->dl);
	}
	if (t->timer != NULL) {
		chd_shard_timer_free(sh, t->timer);
		t->timer = NULL;
	}
	if (t->crec != NULL) {
		CHD_DL_REMOVE(t->crec->tasks, t, oprev, onext);
		t->crec = NULL;
	}
	if (t->sprev != NULL) {
		t->sprev->snext = t->snext;
	} else if (sh->parked == t) {
		sh->parked = t->snext;
	}
	if (t->snext != NULL) {
		t->snext->sprev = t->sprev;
	}
	t->sprev = t->snext = NULL;
	t->parked = false;
}

/* ---- small-object slabs ------------------------------------------------- */

/*
 * Object sizes: a queued message is a 32-byte header plus its payload, so
 * these hold payloads of up to 16, 32, 64, ... 2048 bytes (each class at
 * most twice the one below: under half of an object is ever slack).
 */
static const uint32_t slab_sizes[CHD_SLAB_CLASSES] = {
	48, 64, 96, 160, 288, 544, 1056, 2080
};


struct chd_slab {
	chd_slab      *prev, *next; /* the class's avail list, or spares */
	void          *free;        /* freed objects, linked through them */
	unsigned char *fresh, *end; /* never handed out yet (this use) */
	uint32_t       nlive;
	uint8_t        cls;
	bool           listed;      /* in the class's avail list */
};

#define SLAB_HDR (((sizeof(chd_slab)) + 15) & ~(size_t) 15)

/*
 * Under AddressSanitizer a slab is a heap block (so LeakSanitizer reports
 * one that still holds a live object at teardown: a leaked message), and
 * every object is poisoned while free and past its requested size while
 * live, so use after free and overflows into the slack are still caught.
 */
#if defined(__SANITIZE_ADDRESS__)
#define CHD_SLAB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHD_SLAB_ASAN 1
#endif
#endif
#ifdef CHD_SLAB_ASAN
#include <sanitizer/asan_interface.h>
#define SLAB_POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define SLAB_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define SLAB_POISON(p, n)   ((void) (p), (void) (n))
#define SLAB_UNPOISON(p, n) ((void) (p), (void) (n))
#endif

void
chd_slabs_init(chd_slabs *s)
{
	memset(s, 0, sizeof(*s));
	for (int i = 0; i < CHD_SLAB_CLASSES; i++) {
		s->c[i].size = slab_sizes[i];
	}
	s->keep_max = CHD_SLAB_KEEP_MAX;
}

#ifndef CHD_SLAB_ASAN
/*
 * CHD_SLAB_CHUNK slabs in one aligned mapping: one more slab's worth is
 * mapped and both ends trimmed (aligned_alloc went through glibc's
 * memalign, whose chunk headers touched two more pages per slab: 6 bytes
 * more per queued 16-byte message, measured). Slabs are carved from it
 * only when needed, so its untouched pages cost nothing, and each is
 * unmapped on its own later (munmap splits the mapping).
 */
static int
slab_chunk_map(chd_slabs *s)
{
	size_t         len = (size_t) (CHD_SLAB_CHUNK + 1) * CHD_SLAB_SIZE;
	unsigned char *p, *a;
	size_t         head, tail;

	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		return (ENOMEM);
	}
	a = (unsigned char *) (((uintptr_t) p + CHD_SLAB_SIZE - 1) &
	    ~(uintptr_t) (CHD_SLAB_SIZE - 1));
	head = (size_t) (a - p);
	tail = CHD_SLAB_SIZE - head;
	if (head > 0) {
		(void) munmap(p, head);
	}
	if (tail > 0) {
		(void) munmap(a + (size_t) CHD_SLAB_CHUNK * CHD_SLAB_SIZE, tail);
	}
	s->fresh = a;
	s->fresh_end = a + (size_t) CHD_SLAB_CHUNK * CHD_SLAB_SIZE;
	s->nmaps++;
	return (0);
}
#endif

/* A slab's memory, from the system. */
static void *
slab_map(chd_slabs *s)
{
	void *p;

#ifdef CHD_SLAB_ASAN
	if ((p = aligned_alloc(CHD_SLAB_SIZE, CHD_SLAB_SIZE)) == NULL) {
		return (NULL);
	}
	s->nmaps++;
#else
	if (s->fresh == s->fresh_end && slab_chunk_map(s) != 0) {
		return (NULL);
	}
	p = s->fresh;
	s->fresh += CHD_SLAB_SIZE;
#endif
	s->nmapped++;
	return (p);
}

/* n slabs from sl on, neighbours in memory, back to the system. */
static void
slab_unmap(chd_slabs *s, chd_slab *sl, size_t n)
{
#ifdef CHD_SLAB_ASAN
	/* Heap blocks: never one piece, whatever their addresses. */
	for (size_t i = 0; i < n; i++) {
		void *p = (unsigned char *) sl + i * CHD_SLAB_SIZE;

		SLAB_UNPOISON(p, CHD_SLAB_SIZE);
		free(p);
	}
#else
	(void) munmap(sl, n * CHD_SLAB_SIZE);
#endif
	s->nunmapped += n;
	s->nunmaps++;
}

static int
slab_addr_cmp(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t) *(chd_slab *const *) a;
	uintptr_t y = (uintptr_t) *(chd_slab *const *) b;

	return ((x > y) - (x < y));
}

/*
 * Gives back the spares above keep, the most recently freed first (a
 * queue that drained freed them in the order it filled them, so they
 * are mostly neighbours): sorted by address, each run of neighbours is
 * one munmap, not one a slab.
 */
static void
slab_trim(chd_slabs *s, uint32_t keep)
{
	chd_slab *v[64];
	size_t    n, i, j;

	while (s->nspare > keep) {
		for (n = 0; s->nspare > keep && n < sizeof(v) / sizeof(v[0]);
		    n++) {
			v[n] = s->spare;
			CHD_DL_REMOVE(s->spare, v[n], prev, next);
			s->nspare--;
		}
		qsort(v, n, sizeof(v[0]), slab_addr_cmp);
		for (i = 0; i < n; i = j) {
			for (j = i + 1; j < n && (unsigned char *) v[j] ==
			    (unsigned char *) v[j - 1] + CHD_SLAB_SIZE; j++) {
			}
			slab_unmap(s, v[i], j - i);
		}
	}
}

/*
 * The tick's trim (not on the hot path): all spares sorted by address,
 * the lowest kept, the highest given back. Spares reused in LIFO order
 * get scattered over the chunks, so the batches of slab_trim would give
 * them back a slab or two per munmap; from the sorted whole, the chunks
 * a queue drained out of go back whole.
 */
static void
slab_trim_sorted(chd_slabs *s, uint32_t keep)
{
	chd_slab **v;
	chd_slab  *sl;
	size_t     n = 0, i, j;

	if (s->nspare <= keep) {
		return;
	}
	if ((v = malloc(s->nspare * sizeof(*v))) == NULL) {
		slab_trim(s, keep);
		return;
	}
	for (sl = s->spare; sl != NULL; sl = sl->next) {
		v[n++] = sl;
	}
	qsort(v, n, sizeof(v[0]), slab_addr_cmp);
	s->spare = NULL;
	for (i = keep; i-- > 0;) {
		CHD_DL_PUSH(s->spare, v[i], prev, next);
	}
	s->nspare = keep;
	for (i = keep; i < n; i = j) {
		for (j = i + 1; j < n && (unsigned char *) v[j] ==
		    (unsigned char *) v[j - 1] + CHD_SLAB_SIZE; j++) {
		}
		slab_unmap(s, v[i], j - i);
	}
	free(v);
}

/*
 * Spares kept now: the most slabs in use this tick or the one before
 * (capped at keep_max), less those in use; never fewer than
 * CHD_SLAB_SPARE. A burst that drains keeps its slabs for the next one,
 * and two ticks after the last such burst they go back.
 */
static uint32_t
slab_spare_max(const chd_slabs *s)
{
	uint32_t need = s->peak[0] > s->peak[1] ? s->peak[0] : s->peak[1];

	if (need > s->keep_max) {
		need = s->keep_max;
	}
	if (need > s->inuse + CHD_SLAB_SPARE) {
		return (need - s->inuse);
	}
	return (CHD_SLAB_SPARE);
}

/* An empty slab for class c: a spare, else a new one. */
static chd_slab *
slab_get(chd_slabs *s, chd_slab_class *c, uint8_t cls)
{
	chd_slab *sl;

	if ((sl = s->spare) != NULL) {
		CHD_DL_REMOVE(s->spare, sl, prev, next);
		s->nspare--;
	} else if ((sl = slab_map(s)) == NULL) {
		return (NULL);
	}
	sl->free = NULL;
	sl->fresh = (unsigned char *) sl + SLAB_HDR;
	sl->end = sl->fresh + (CHD_SLAB_SIZE - SLAB_HDR) / c->size * c->size;
	sl->nlive = 0;
	sl->cls = cls;
	sl->listed = true;
	SLAB_POISON(sl->fresh, CHD_SLAB_SIZE - SLAB_HDR);
	CHD_DL_PUSH(c->avail, sl, prev, next);
	c->nslabs++;
	if (++s->inuse > s->peak[0]) {
		s->peak[0] = s->inuse;
	}
	return (sl);
}

void *
chd_slab_alloc(chd_slabs *s, size_t size, uint8_t *cls)
{
	chd_slab_class *c = NULL;
	chd_slab       *sl;
	void           *p;
	uint8_t         i;

	for (i = 0; i < CHD_SLAB_CLASSES; i++) {
		if (size <= s->c[i].size) {
			c = &s->c[i];
			break;
		}
	}
	if (c == NULL) {
		*cls = CHD_SLAB_MALLOC;
		return (malloc(size));
	}
	if ((sl = c->avail) == NULL && (sl = slab_get(s, c, i)) == NULL) {
		return (NULL);
	}
	if (sl->free != NULL) {
		p = sl->free;
		SLAB_UNPOISON(p, sizeof(void *));
		sl->free = *(void **) p;
	} else {
		p = sl->fresh;
		sl->fresh += c->size;
	}
	sl->nlive++;
	if (sl->free == NULL && sl->fresh == sl->end) {
		CHD_DL_REMOVE(c->avail, sl, prev, next);
		sl->listed = false;
	}
	SLAB_POISON(p, c->size);
	SLAB_UNPOISON(p, size);
	*cls = i;
	return (p);
}

void
chd_slab_free(chd_slabs *s, void *p, uint8_t cls)
{
	chd_slab_class *c;
	chd_slab       *sl;
	uint32_t        keep;

	if (cls == CHD_SLAB_MALLOC) {
		free(p);
		return;
	}
	c = &s->c[cls];
	sl = (chd_slab *) ((uintptr_t) p & ~(uintptr_t) (CHD_SLAB_SIZE - 1));
	SLAB_UNPOISON(p, sizeof(void *));
	*(void **) p = sl->free;
	sl->free = p;
	SLAB_POISON(p, c->size);
	if (--sl->nlive > 0) {
		if (!sl->listed) {
			sl->listed = true;
			CHD_DL_PUSH(c->avail, sl, prev, next);
		}
		return;
	}
	/* Empty: a spare for any class, or back to the system. */
	if (sl->listed) {
		CHD_DL_REMOVE(c->avail, sl, prev, next);
		sl->listed = false;
	}
	c->nslabs--;
	s->inuse--;
	SLAB_POISON(sl, CHD_SLAB_SIZE);
	SLAB_UNPOISON(sl, SLAB_HDR);
	CHD_DL_PUSH(s->spare, sl, prev, next);
	s->nspare++;
	/* Beyond the need (the cap): given back a chunk's worth at a time. */
	keep = slab_spare_max(s);
	if (s->nspare >= keep + CHD_SLAB_CHUNK) {
		slab_trim(s, keep);
	}
	if (s->nspare > CHD_SLAB_SPARE && !s->armed && s->arm != NULL) {
		s->armed = true;
		s->arm(s->arm_arg);
	}
}

bool
chd_slabs_tick(chd_slabs *s)
{
	uint32_t keep;

	s->peak[1] = s->peak[0];
	s->peak[0] = s->inuse;
	keep = slab_spare_max(s);
	slab_trim_sorted(s, keep);
	s->armed = s->nspare > CHD_SLAB_SPARE;
	return (s->armed);
}

void
chd_slabs_fini(chd_slabs *s)
{
	/* Every message was freed first. A slab still holding one (a
	 * leak) is left alone: under ASan, LeakSanitizer names it. */
	slab_trim_sorted(s, 0);
	for (int i = 0; i < CHD_SLAB_CLASSES; i++) {
		s->c[i].avail = NULL;
		s->c[i].nslabs = 0;
	}
	s->inuse = 0;
#ifndef CHD_SLAB_ASAN
	if (s->fresh != s->fresh_end) {
		(void) munmap(s->fresh, (size_t) (s->fresh_end - s->fresh));
	}
#endif
	s->fresh = s->fresh_end = NULL;
	s->armed = false;
}

/* ---- who runs a shard's work --------------------------------------------- */

/*
 * The shard's thread runs its libevent loop (timers, the mailbox). A
 * request thread (nng's) that finds the shard idle runs its job itself
 * instead of queueing it and waking the shard's thread: two context
 * switches and a wake-up less per request. Either way the work runs under
 * sh->exec, so the shard's state still has one owner at a time.
 *
 * Nobody waits for exec where libevent may be waiting for them. Request
 * threads only try it (busy: the job goes to the mailbox, as before).
 * Timer callbacks only try it too (busy: the timer runs again 0.1 ms
 * later), because the holder may be inside event_free() of that very
 * timer, which waits until its running callback returns. Only the mailbox
 * callback waits for exec: nobody else frees the mailbox event.
 */
#define CHD_TIMER_RETRY_US 100

bool
chd_shard_timer_begin(chd_shard *sh, struct event *ev)
{
	struct timeval tv = { 0, CHD_TIMER_RETRY_US };

	if (pthread_mutex_trylock(&sh->exec) == 0) {
		return (true);
	}
	/*
	 * Run again shortly, unless the holder is deleting this timer: its
	 * event_del has already taken the timer off the heap and only waits
	 * for this callback to return, so a re-arm now would outlive the
	 * event_free that follows (a use after free the fuzzer found).
	 */
	pthread_mutex_lock(&sh->tmr_mtx);
	if (sh->tmr_dying != ev) {
		evtimer_add(ev, &tv);
	}
	pthread_mutex_unlock(&sh->tmr_mtx);
	return (false);
}

static void
chd_shard_timer_dying(chd_shard *sh, struct event *ev)
{
	pthread_mutex_lock(&sh->tmr_mtx);
	sh->tmr_dying = ev;
	pthread_mutex_unlock(&sh->tmr_mtx);
}

void
chd_shard_timer_del(chd_shard *sh, struct event *ev)
{
	chd_shard_timer_dying(sh, ev);
	evtimer_del(ev);
	chd_shard_timer_dying(sh, NULL);
}

void
chd_shard_timer_free(chd_shard *sh, struct event *ev)
{
	chd_shard_timer_dying(sh, ev);
	event_free(ev);
	chd_shard_timer_dying(sh, NULL);
}

void
chd_shard_timer_end(chd_shard *sh)
{
	pthread_mutex_unlock(&sh->exec);
}

/* The queued jobs, taken off the mailbox in post order. */
static chd_job *
chd_shard_take_jobs(chd_shard *sh, bool *stop)
{
	chd_job *j;

	pthread_mutex_lock(&sh->mtx);
	j = sh->qhead;
	sh->qhead = sh->qtail = NULL;
	if (stop != NULL) {
		*stop = sh->stop;
	}
	pthread_mutex_unlock(&sh->mtx);
	return (j);
}

static void
chd_shard_run_list(chd_shard *sh, chd_job *j)
{
	chd_job *next;

	for (; j != NULL; j = next) {
		next = j->next;
		j->fn(sh, j->arg);
		free(j);
	}
}

/* ---- the shard thread --------------------------------------------------- */

/* exec held. */
static void
chd_shard_run_jobs(chd_shard *sh)
{
	for (;;) {
		bool     stop;
		chd_job *j = chd_shard_take_jobs(sh, &stop);

		if (j == NULL) {
			if (stop) {
				event_base_loopbreak(sh->base);
			}
			return;
		}
		chd_shard_run_list(sh, j);
	}
}

static void
chd_shard_mbox_cb(evutil_socket_t fd, short what, void *arg)
{
	chd_shard *sh = arg;

	pthread_mutex_lock(&sh->exec);
	chd_shard_run_jobs(sh);
	pthread_mutex_unlock(&sh->exec);
}

static void *
chd_shard_main(void *arg)
{
	chd_shard *sh = arg;

	event_base_loop(sh->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return (NULL);
}

int
chd_shard_post(chd_shard *sh, chd_job_fn fn, void *arg)
{
	chd_job *j;
	bool     wake;

	/* Idle shard: run it here, after what was queued before it. Try
	 * only: the shard's own thread (or a job posting to its own shard)
	 * already holds exec and queues instead. */
	if (atomic_load(&sh->direct) && pthread_mutex_trylock(&sh->exec) == 0) {
		chd_shard_run_list(sh, chd_shard_take_jobs(sh, NULL));
		fn(sh, arg);
		pthread_mutex_unlock(&sh->exec);
		return (0);
	}
	if ((j = malloc(sizeof(*j))) == NULL) {
		return (ENOMEM);
	}
	j->next = NULL;
	j->fn = fn;
	j->arg = arg;
	pthread_mutex_lock(&sh->mtx);
	wake = sh->qhead == NULL;
	if (sh->qtail != NULL) {
		sh->qtail->next = j;
	} else {
		sh->qhead = j;
	}
	sh->qtail = j;
	pthread_mutex_unlock(&sh->mtx);
	if (wake) {
		event_active(sh->mbox_ev, EV_READ, 0);
	}
	return (0);
}

/*
 * The slabs' tick: armed when a burst left more spares than
 * CHD_SLAB_SPARE, it gives back what the recent need no longer covers
 * and stops once only CHD_SLAB_SPARE remain, so an idle shard is not
 * woken. Only a timer could do this: an idle shard makes no other call.
 */
static void
chd_shard_slab_arm(void *arg)
{
	chd_shard     *sh = arg;
	struct timeval tv = { CHD_SLAB_TICK_MS / 1000,
		(CHD_SLAB_TICK_MS % 1000) * 1000 };

	evtimer_add(sh->slab_tmr, &tv);
}

static void
chd_shard_slab_cb(evutil_socket_t fd, short what, void *arg)
{
	chd_shard *sh = arg;

	(void) fd;
	(void) what;
	if (!chd_shard_timer_begin(sh, sh->slab_tmr)) {
		return;
	}
	if (chd_slabs_tick(&sh->slabs)) {
		chd_shard_slab_arm(sh);
	}
	chd_shard_timer_end(sh);
}

/*
 * Slabs kept for recent need, per shard: CHD_SLAB_KEEP_MAX (64 MiB), or
 * 1/8 of --max-memory spread over the shards when that is less.
 */
static uint32_t
slab_keep_max(const chd_engine_opts *o)
{
	uint64_t n;

	if (o->max_memory == 0) {
		return (CHD_SLAB_KEEP_MAX);
	}
	n = o->max_memory / 8 / (uint64_t) (o->workers > 0 ? o->workers : 1) /
	    CHD_SLAB_SIZE;
	return (n < CHD_SLAB_KEEP_MAX ? (uint32_t) n : CHD_SLAB_KEEP_MAX);
}

/*
 * A random first delivery counter: ids (k * N + shard) then differ from
 * one chand process to the next, so a confirmation meant for an earlier
 * daemon does not name a live delivery of this one. Below 2^62 / N, so
 * k * N + shard never wraps (the routing needs id % N to be the shard).
 */
static uint64_t
first_delivery(int n)
{
	uint64_t        x = 0;
	struct timespec ts;

	if (getrandom(&x, sizeof(x), GRND_NONBLOCK) != (ssize_t) sizeof(x)) {
		/* No entropy yet (early boot): time and address, mixed. */
		clock_gettime(CLOCK_REALTIME, &ts);
		x = (uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 30) ^
		    (uint64_t) (uintptr_t) &ts;
		x ^= x >> 33;
		x *= 0xff51afd7ed558ccdull;
		x ^= x >> 33;
	}
	return (1 + x % (((uint64_t) 1 << 62) / (uint64_t) n));
}

int
chd_shard_start(chd_engine *e, int idx, chd_shard **out)
{
	chd_shard  *sh;
	const char *direct;
	int         rv = ENOMEM;

	if ((sh = calloc(1, sizeof(*sh))) == NULL) {
		return (ENOMEM);
	}
	sh->e = e;
	sh->idx = idx;
	sh->next_delivery = first_delivery(e->opts.workers);
	sh->next_handle = 1;
	chd_slabs_init(&sh->slabs);
	chd_dl_init(&sh->dl);
	pthread_mutex_init(&sh->mtx, NULL);
	pthread_mutex_init(&sh->exec, NULL);
	pthread_mutex_init(&sh->tmr_mtx, NULL);
	if (chd_htab_init(&sh->chans) != 0 ||
	    chd_htab_init(&sh->deliveries) != 0 ||
	    chd_htab_init(&sh->leases) != 0 ||
	    chd_htab_init(&sh->conns_seen) != 0 ||
	    (sh->counters = chd_counters_new(chd_counter_wake)) == NULL ||
	    (sh->base = event_base_new()) == NULL ||
	    (sh->mbox_ev = event_new(sh->base, -1, EV_PERSIST,
	        chd_shard_mbox_cb, sh)) == NULL ||
	    (sh->slab_tmr = evtimer_new(sh->base, chd_shard_slab_cb,
	        sh)) == NULL ||
	    (sh->dl_tmr = evtimer_new(sh->base, chd_shard_dl_cb,
	        sh)) == NULL) {
		goto fail;
	}
	sh->slabs.keep_max = slab_keep_max(&e->opts);
	sh->slabs.arm = chd_shard_slab_arm;
	sh->slabs.arm_arg = sh;
	/* One count of counters for all shards (opts.max_counters). */
	chd_counters_limit(sh->counters, &e->ncounters, e->opts.max_counters);
	if ((rv = pthread_create(&sh->thr, NULL, chd_shard_main, sh)) != 0) {
		goto fail;
	}
	/* CHAND_DIRECT=0: every job through the mailbox (A/B measurements). */
	direct = getenv("CHAND_DIRECT");
	atomic_store(&sh->direct, direct == NULL || strcmp(direct, "0") != 0);
	*out = sh;
	return (0);
fail:
	if (sh->dl_tmr != NULL) {
		chd_shard_timer_free(sh, sh->dl_tmr);
	}
	if (sh->slab_tmr != NULL) {
		chd_shard_timer_free(sh, sh->slab_tmr);
	}
	if (sh->mbox_ev != NULL) {
		event_free(sh->mbox_ev);
	}
	if (sh->base != NULL) {
		event_base_free(sh->base);
	}
	if (sh->counters != NULL) {
		chd_counters_free(sh->counters);
	}
	chd_htab_fini(&sh->chans);
	chd_htab_fini(&sh->deliveries);
	chd_htab_fini(&sh->leases);
	chd_htab_fini(&sh->conns_seen);
	pthread_mutex_destroy(&sh->mtx);
	pthread_mutex_destroy(&sh->exec);
	pthread_mutex_destroy(&sh->tmr_mtx);
	free(sh);
	return (rv);
}

void
chd_shard_stop(chd_shard *sh)
{
	/* From here on jobs go through the mailbox (chd_shard_drain). */
	atomic_store(&sh->direct, false);
	pthread_mutex_lock(&sh->mtx);
	sh->stop = true;
	pthread_mutex_unlock(&sh->mtx);
	event_active(sh->mbox_ev, EV_READ, 0);
	pthread_join(sh->thr, NULL);
	sh->stop = false;
}

/*
 * After chd_shard_stop the caller's thread is the owner. Jobs posted after
 * the thread's last turn (recv_any cancels hold references) still run.
 * Returns true when it ran any.
 */
bool
chd_shard_drain(chd_shard *sh)
{
	bool ran;

	pthread_mutex_lock(&sh->mtx);
	ran = sh->qhead != NULL;
	pthread_mutex_unlock(&sh->mtx);
	pthread_mutex_lock(&sh->exec);
	chd_shard_run_jobs(sh);
	pthread_mutex_unlock(&sh->exec);
	return (ran);
}

void
chd_shard_free(chd_shard *sh)
{
	chd_chan_free_all(sh);
	/* Every task was answered and left the heap; the timer may still
	 * be armed (unparks leave it). */
	chd_shard_timer_free(sh, sh->dl_tmr);
	chd_dl_fini(&sh->dl);
	/* Freeing the messages may have armed it. */
	chd_shard_timer_free(sh, sh->slab_tmr);
	sh->slabs.arm = NULL;
	chd_slabs_fini(&sh->slabs);
	chd_counters_free(sh->counters);
	event_free(sh->mbox_ev);
	event_base_free(sh->base);
	chd_htab_fini(&sh->chans);
	chd_htab_fini(&sh->deliveries);
	chd_htab_fini(&sh->leases);
	seen_free_all(sh);
	pthread_mutex_destroy(&sh->mtx);
	pthread_mutex_destroy(&sh->exec);
	pthread_mutex_destroy(&sh->tmr_mtx);
	free(sh);
}
