/*
 * test_engine_slabs.c - the shard's message slabs (daemon/shard.c,
 * docs/ENGINE.md "Message slabs"): size classes, reuse of empty slabs
 * across bursts (no new mappings for a burst the shard has seen within
 * the last ticks), giving the excess back once the need drops, the cap,
 * and nothing left mapped at teardown (run it under ASan too:
 * LeakSanitizer names a slab that is never freed).
 *
 * Ticks are called by hand here (the shard calls chd_slabs_tick from a
 * timer every CHD_SLAB_TICK_MS): no test depends on the clock.
 */
#include <check.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "engine_harness.h"
#include "engine_int.h"

/* As in shard.c: under AddressSanitizer slabs are heap blocks. */
#if defined(__SANITIZE_ADDRESS__)
#define SLABS_ARE_HEAP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLABS_ARE_HEAP 1
#endif
#endif

typedef struct sobj {
	void   *p;
	size_t  size;
	uint8_t cls;
} sobj;

/* Slabs the system has now (mapped and not given back). */
static uint64_t
held(const chd_slabs *s)
{
	return (s->nmapped - s->nunmapped);
}

/* Every held slab is in use or a spare; classes add up. */
static void
check_counts(const chd_slabs *s)
{
	uint64_t n = 0;

	for (int c = 0; c < CHD_SLAB_CLASSES; c++) {
		n += s->c[c].nslabs;
	}
	ck_assert_uint_eq(n, s->inuse);
	ck_assert_uint_eq(held(s), (uint64_t) s->inuse + s->nspare);
	ck_assert_uint_le(s->nmaps, s->nmapped);
}

static int narmed;

static void
count_arm(void *arg)
{
	(void) arg;
	narmed++;
}

/* n objects of size bytes, allocated in order, kept in o; their class. */
static uint8_t
burst_alloc(chd_slabs *s, void **o, int n, size_t size)
{
	uint8_t cls = CHD_SLAB_MALLOC;
	uint8_t first = CHD_SLAB_MALLOC;

	for (int i = 0; i < n; i++) {
		o[i] = chd_slab_alloc(s, size, &cls);
		ck_assert_ptr_nonnull(o[i]);
		ck_assert_uint_lt(cls, CHD_SLAB_CLASSES);
		if (i == 0) {
			first = cls;
		}
		ck_assert_uint_eq(cls, first);
		memset(o[i], i & 0xff, size);
	}
	return (cls);
}

/* Frees them FIFO, as a consumer drains a queue. */
static void
burst_free(chd_slabs *s, void **o, int n, size_t size, uint8_t cls)
{
	for (int i = 0; i < n; i++) {
		unsigned char *b = o[i];

		ck_assert(b[0] == (i & 0xff) && b[size - 1] == (i & 0xff));
		chd_slab_free(s, o[i], cls);
	}
}

/*
 * Objects of every class (and a malloc'd one) stay distinct while live;
 * freed in random order, their slabs become spares, and a second round
 * of the same objects maps nothing new.
 */
START_TEST(test_slab_classes_reuse)
{
	enum { N = 20000 };
	static const size_t sizes[] = { 1, 32, 48, 49, 64, 100, 160, 161,
	    288, 500, 544, 1000, 1056, 2080, 2081, 70000 };
	chd_slabs s;
	sobj     *o = calloc(N, sizeof(*o));
	unsigned  seed = 11;
	uint64_t  mapped = 0;

	chd_slabs_init(&s);
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < N; i++) {
			o[i].size = sizes[(size_t) i % (sizeof(sizes) /
			    sizeof(sizes[0]))];
			o[i].p = chd_slab_alloc(&s, o[i].size, &o[i].cls);
			ck_assert_ptr_nonnull(o[i].p);
			if (o[i].size <= 2080) {
				ck_assert_uint_lt(o[i].cls, CHD_SLAB_CLASSES);
				ck_assert_uint_ge(s.c[o[i].cls].size,
				    o[i].size);
				ck_assert(o[i].cls == 0 ||
				    s.c[o[i].cls - 1].size < o[i].size);
			} else {
				ck_assert_uint_eq(o[i].cls, CHD_SLAB_MALLOC);
			}
			memset(o[i].p, i & 0xff, o[i].size);
		}
		for (int i = 0; i < N; i++) {
			unsigned char *b = o[i].p;
			ck_assert(b[0] == (i & 0xff) &&
			    b[o[i].size - 1] == (i & 0xff));
		}
		check_counts(&s);
		for (int i = N - 1; i > 0; i--) {
			int  j = rand_r(&seed) % (i + 1);
			sobj x = o[i];
			o[i] = o[j];
			o[j] = x;
		}
		for (int i = 0; i < N; i++) {
			chd_slab_free(&s, o[i].p, o[i].cls);
		}
		check_counts(&s);
		ck_assert_uint_eq(s.inuse, 0);
		/* Within the cap, every slab of the round is kept. */
		ck_assert_uint_eq(s.nunmapped, 0);
		if (round == 0) {
			mapped = s.nmapped;
			ck_assert_uint_gt(mapped, CHD_SLAB_SPARE);
		} else {
			ck_assert_uint_eq(s.nmapped, mapped);
		}
	}
	chd_slabs_fini(&s);
	ck_assert_uint_eq(s.nunmapped, s.nmapped);
	free(o);
}
END_TEST

/*
 * A queue that keeps moving (FIFO: new at the tail, old freed at the
 * head) uses a bounded number of slabs, however many pass through, and
 * maps none after the first few.
 */
START_TEST(test_slab_fifo_stays_bounded)
{
	enum { LIVE = 5000, TOTAL = 400000 };
	chd_slabs s;
	void    **q = calloc(LIVE, sizeof(*q));
	uint8_t   cls;
	uint64_t  most = 0;

	chd_slabs_init(&s);
	for (int i = 0; i < TOTAL; i++) {
		if (i >= LIVE) {
			chd_slab_free(&s, q[i % LIVE], 0);
		}
		q[i % LIVE] = chd_slab_alloc(&s, 40, &cls);
		ck_assert_uint_eq(cls, 0);
		if (s.c[0].nslabs > most) {
			most = s.c[0].nslabs;
		}
		if (i % 50000 == 0) {
			(void) chd_slabs_tick(&s);
		}
	}
	/* 5000 live 48-byte objects: 4 slabs' worth, one more while the
	 * head slab drains; the drained ones come back as spares. */
	ck_assert_uint_le(most, LIVE * 48 / (CHD_SLAB_SIZE - 64) + 3);
	ck_assert_uint_le(s.nmapped, most + 1);
	for (int i = 0; i < LIVE; i++) {
		chd_slab_free(&s, q[i], 0);
	}
	check_counts(&s);
	ck_assert_uint_eq(s.c[0].nslabs, 0);
	ck_assert_uint_le(s.nspare, CHD_SLAB_SPARE);
	chd_slabs_fini(&s);
	ck_assert_uint_eq(s.nunmapped, s.nmapped);
	free(q);
}
END_TEST

/*
 * Bursts of 1 KiB messages deeper than CHD_SLAB_SPARE (5 MiB: 80 slabs):
 * the first maps its slabs (16 to a mapping), the next identical bursts
 * map and unmap nothing, and the shard's tick is asked for once.
 */
START_TEST(test_slab_burst_reuse)
{
	enum { N = 5 * 1024, SZ = 1024 + 32 };
	chd_slabs s;
	uint8_t   cls;
	void    **o = calloc(N, sizeof(*o));
	uint64_t  mapped, maps;

	chd_slabs_init(&s);
	s.arm = count_arm;
	narmed = 0;
	cls = burst_alloc(&s, o, N, SZ);
	check_counts(&s);
	mapped = s.nmapped;
	maps = s.nmaps;
	ck_assert_uint_gt(mapped, 2 * CHD_SLAB_SPARE);
	ck_assert_uint_eq(s.nunmapped, 0);
	burst_free(&s, o, N, SZ, cls);
	check_counts(&s);
	ck_assert_uint_eq(s.nspare, mapped);
	ck_assert_int_eq(narmed, 1);
	ck_assert(s.armed);
	for (int round = 0; round < 5; round++) {
		cls = burst_alloc(&s, o, N, SZ);
		burst_free(&s, o, N, SZ, cls);
		/* The shard ticks about once a second between bursts. */
		ck_assert(chd_slabs_tick(&s));
		check_counts(&s);
	}
	ck_assert_uint_eq(s.nmapped, mapped);
	ck_assert_uint_eq(s.nmaps, maps);
	ck_assert_uint_eq(s.nunmapped, 0);
	ck_assert_int_eq(narmed, 1);
	chd_slabs_fini(&s);
	ck_assert_uint_eq(s.nunmapped, s.nmapped);
	free(o);
}
END_TEST

/*
 * Once the bursts stop, the spares go back within two ticks, down to
 * CHD_SLAB_SPARE, and the tick stops asking to run; when the bursts get
 * smaller, what is kept follows them down.
 */
START_TEST(test_slab_gives_back_when_need_drops)
{
	enum { BIG = 6 * 1024, SMALL = 3 * 1024, SZ = 1024 + 32 };
	chd_slabs s;
	uint8_t   cls;
	void    **o = calloc(BIG, sizeof(*o));
	uint64_t  big, small;

	chd_slabs_init(&s);
	s.arm = count_arm;
	narmed = 0;
	cls = burst_alloc(&s, o, BIG, SZ);
	big = s.inuse;
	burst_free(&s, o, BIG, SZ, cls);
	ck_assert_uint_eq(s.nspare, big);
	/* The tick right after the burst still remembers it. */
	ck_assert(chd_slabs_tick(&s));
	ck_assert_uint_eq(s.nspare, big);
	ck_assert_uint_eq(s.nunmapped, 0);

	/* Smaller bursts: the big one is forgotten a tick later. */
	cls = burst_alloc(&s, o, SMALL, SZ);
	small = s.inuse;
	ck_assert_uint_lt(small, big);
	ck_assert_uint_gt(small, CHD_SLAB_SPARE);
	burst_free(&s, o, SMALL, SZ, cls);
	ck_assert(chd_slabs_tick(&s));
	check_counts(&s);
	ck_assert_uint_eq(s.nspare, small);
	ck_assert_uint_eq(s.nunmapped, big - small);
	cls = burst_alloc(&s, o, SMALL, SZ);
	burst_free(&s, o, SMALL, SZ, cls);
	ck_assert(chd_slabs_tick(&s));
	ck_assert_uint_eq(s.nspare, small);
	ck_assert_uint_eq(s.nmapped, big);

	/* Idle: that tick kept the last burst's slabs, the next gives back
	 * all but CHD_SLAB_SPARE and wants no more ticks. */
	ck_assert(!chd_slabs_tick(&s));
	ck_assert(!s.armed);
	check_counts(&s);
	ck_assert_uint_eq(s.nspare, CHD_SLAB_SPARE);
	ck_assert_uint_eq(held(&s), CHD_SLAB_SPARE);
	ck_assert_uint_eq(s.nunmapped, big - CHD_SLAB_SPARE);
#ifndef SLABS_ARE_HEAP
	/* Neighbours went back together: one munmap per run, not per slab
	 * (under ASan slabs are heap blocks, one free each). */
	ck_assert_uint_le(s.nunmaps * 4, s.nunmapped);
#endif

	/* A later burst arms the tick again. */
	narmed = 0;
	cls = burst_alloc(&s, o, SMALL, SZ);
	burst_free(&s, o, SMALL, SZ, cls);
	ck_assert_int_eq(narmed, 1);
	ck_assert_uint_eq(s.nspare, small);
	chd_slabs_fini(&s);
	ck_assert_uint_eq(s.nunmapped, s.nmapped);
	free(o);
}
END_TEST

/*
 * Spares freed in scattered order (objects of a burst freed at random):
 * the tick gives back the excess in runs of neighbours, a few munmaps
 * for the whole, not one a slab.
 */
START_TEST(test_slab_tick_gives_back_in_runs)
{
	enum { N = 10 * 1024, SZ = 1024 + 32 };
	chd_slabs s;
	void    **o = calloc(N, sizeof(*o));
	uint8_t   cls;
	unsigned  seed = 5;
	uint64_t  mapped;

	chd_slabs_init(&s);
	cls = burst_alloc(&s, o, N, SZ);
	mapped = s.nmapped;
	ck_assert_uint_gt(mapped, 4 * CHD_SLAB_SPARE);
	for (int i = N - 1; i > 0; i--) {
		int   j = rand_r(&seed) % (i + 1);
		void *x = o[i];

		o[i] = o[j];
		o[j] = x;
	}
	for (int i = 0; i < N; i++) {
		chd_slab_free(&s, o[i], cls);
	}
	check_counts(&s);
	ck_assert_uint_eq(s.nspare, mapped);
	(void) chd_slabs_tick(&s);
	ck_assert(!chd_slabs_tick(&s));
	check_counts(&s);
	ck_assert_uint_eq(s.nspare, CHD_SLAB_SPARE);
	ck_assert_uint_eq(s.nunmapped, mapped - CHD_SLAB_SPARE);
#ifndef SLABS_ARE_HEAP
	/* At most a run per chunk (16 slabs) and one more. */
	ck_assert_uint_le(s.nunmaps,
	    (mapped - CHD_SLAB_SPARE) / CHD_SLAB_CHUNK + 2);
#endif
	chd_slabs_fini(&s);
	ck_assert_uint_eq(s.nunmapped, s.nmapped);
	free(o);
}
END_TEST

/* Need beyond keep_max is given back as it drains, without a tick. */
START_TEST(test_slab_keep_max)
{
	enum { N = 6 * 1024, SZ = 1024 + 32, CAP = 48 };
	chd_slabs s;
	uint8_t   cls;
	void    **o = calloc(N, sizeof(*o));

	chd_slabs_init(&s);
	s.keep_max = CAP;
	cls = burst_alloc(&s, o, N, SZ);
	ck_assert_uint_gt(s.inuse, CAP);
	burst_free(&s, o, N, SZ, cls);
	check_counts(&s);
	/* Given back a chunk's worth at a time while it drained. */
	ck_assert_uint_ge(s.nspare, CAP);
	ck_assert_uint_lt(s.nspare, CAP + CHD_SLAB_CHUNK);
	ck_assert_uint_gt(s.nunmapped, 0);
	(void) chd_slabs_tick(&s);
	ck_assert_uint_eq(s.nspare, CAP);
	ck_assert_uint_eq(s.nunmapped, s.nmapped - CAP);
	/* A cap below CHD_SLAB_SPARE still keeps CHD_SLAB_SPARE. */
	s.keep_max = 1;
	(void) chd_slabs_tick(&s);
	(void) chd_slabs_tick(&s);
	ck_assert_uint_eq(s.nspare, CHD_SLAB_SPARE);
	chd_slabs_fini(&s);
	ck_assert_uint_eq(s.nunmapped, s.nmapped);
	free(o);
}
END_TEST

/*
 * Spares belong to no class: a burst of 16-byte messages after one of
 * 1 KiB ones reuses its slabs.
 */
START_TEST(test_slab_spares_any_class)
{
	enum { N = 4 * 1024, SZ = 1024 + 32, M = 80000, SMALLSZ = 48 };
	chd_slabs s;
	uint8_t   cls;
	void    **o = calloc(M, sizeof(*o));
	uint64_t  mapped;

	chd_slabs_init(&s);
	cls = burst_alloc(&s, o, N, SZ);
	burst_free(&s, o, N, SZ, cls);
	mapped = s.nmapped;
	/* 80,000 48-byte objects: 59 slabs, fewer than the 1 KiB burst's
	 * 65. */
	cls = burst_alloc(&s, o, M, SMALLSZ);
	ck_assert_uint_lt(s.inuse, mapped);
	ck_assert_uint_eq(s.nmapped, mapped);
	burst_free(&s, o, M, SMALLSZ, cls);
	check_counts(&s);
	chd_slabs_fini(&s);
	ck_assert_uint_eq(s.nunmapped, s.nmapped);
	free(o);
}
END_TEST

/* ---- in a running engine: the shard's timer gives spares back -------- */

typedef struct slab_snap {
	chd_slabs   s;
	atomic_bool done;
} slab_snap;

static void
snap_job(chd_shard *sh, void *arg)
{
	slab_snap *sn = arg;

	sn->s = sh->slabs;
	atomic_store(&sn->done, true);
}

/* The one shard's slab counters, read under its exec lock. */
static void
snap(slab_snap *sn)
{
	atomic_store(&sn->done, false);
	ck_assert_int_eq(chd_shard_post(E->shards[0], snap_job, sn), 0);
	while (!atomic_load(&sn->done)) {
		msleep(1);
	}
}

static void
engine_teardown(void)
{
	th_teardown();
}

/*
 * A channel of 3,840 1-KiB messages (62 slabs) is deleted: its slabs stay
 * as spares for the next burst, and with nothing else going on the
 * shard's timer gives back all but CHD_SLAB_SPARE within a few seconds
 * (two ticks of CHD_SLAB_TICK_MS) and stops.
 */
START_TEST(test_slab_engine_idle_gives_back)
{
	enum { REQS = 60, PER = 64, SZ = 1000 };
	chd_engine_opts   o;
	Chan__V1__Request m = CHAN__V1__REQUEST__INIT;
	Chan__V1__Delete  d = CHAN__V1__DELETE__INIT;
	static char       buf[SZ];
	const char       *msgs[PER];
	slab_snap         sn;
	uint64_t          mapped;
	int               waited;

	th_reset();
	th_lend_input = false; /* 1 KiB payloads would stay in their requests */
	chd_engine_opts_default(&o);
	o.workers = 1;
	o.max_batch = PER;
	th_start(&o, 1, 0);
	memset(buf, 'x', sizeof(buf) - 1);
	for (int i = 0; i < PER; i++) {
		msgs[i] = buf;
	}
	expect_status(r_create(1, "burst", -1), CHAN_OK);
	for (int i = 0; i < REQS; i++) {
		expect_status(r_sendv(1, "burst", msgs, PER, 0, 0), CHAN_OK);
	}
	snap(&sn);
	mapped = sn.s.nmapped;
	ck_assert_uint_ge(sn.s.inuse, REQS * PER / 62);
	ck_assert_uint_gt(mapped, CHD_SLAB_SPARE + 16);
	d.name = (char *) "burst";
	m.op_case = CHAN__V1__REQUEST__OP_DELETE;
	m.delete_ = &d;
	expect_status(submit(1, &m), CHAN_OK);
	snap(&sn);
	ck_assert_uint_eq(sn.s.inuse, 0);
	ck_assert_uint_eq(sn.s.nspare, mapped);
	ck_assert_uint_eq(sn.s.nunmapped, 0);
	ck_assert(sn.s.armed);
	for (waited = 0; waited < 10000; waited += 50) {
		snap(&sn);
		if (!sn.s.armed) {
			break;
		}
		msleep(50);
	}
	ck_assert(!sn.s.armed);
	ck_assert_uint_eq(sn.s.nspare, CHD_SLAB_SPARE);
	ck_assert_uint_eq(sn.s.nunmapped, mapped - CHD_SLAB_SPARE);
	/* Two ticks: the one that still remembered the burst, then the
	 * one that gave back (loosely: the clock is not under test). */
	ck_assert_int_ge(waited, CHD_SLAB_TICK_MS / 2);
}
END_TEST

static Suite *
slabs_suite(void)
{
	Suite *s = suite_create("engine_slabs");
	TCase *tc = tcase_create("slab");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_slab_classes_reuse);
	tcase_add_test(tc, test_slab_fifo_stays_bounded);
	tcase_add_test(tc, test_slab_burst_reuse);
	tcase_add_test(tc, test_slab_gives_back_when_need_drops);
	tcase_add_test(tc, test_slab_tick_gives_back_in_runs);
	tcase_add_test(tc, test_slab_keep_max);
	tcase_add_test(tc, test_slab_spares_any_class);
	suite_add_tcase(s, tc);
	tc = tcase_create("engine");
	tcase_add_checked_fixture(tc, NULL, engine_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_slab_engine_idle_gives_back);
	suite_add_tcase(s, tc);
	return (s);
}

int
main(void)
{
	SRunner *sr = srunner_create(slabs_suite());
	int      nf;

	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (nf == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
