/*
 * util.c - clocks, latency percentiles and results for chan-bench.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

uint64_t
bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec);
}

void
bench_sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t) (ns / 1000000000u),
		(long) (ns % 1000000000u) };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/*
 * An absolute schedule: *next moves on by period and the caller sleeps
 * until then, so one slow call does not shift every later one.
 */
void
bench_pace(uint64_t *next, uint64_t period)
{
	uint64_t now;

	*next += period;
	while ((now = bench_now_ns()) < *next)
		bench_sleep_ns(*next - now);
}

void
bench_lat_init(bench_lat *l, size_t cap)
{
	l->cap = cap > 0 ? cap : 1;
	l->n = 0;
	l->sorted = false;
	l->ns = malloc(l->cap * sizeof(*l->ns));
	if (l->ns == NULL) {
		fprintf(stderr, "chan-bench: out of memory\n");
		exit(1);
	}
}

void
bench_lat_add(bench_lat *l, uint64_t ns)
{
	/* Sized up front so the hot loop never reallocates; extra samples
	 * (more ops than planned) are simply not recorded. */
	if (l->n < l->cap) {
		l->ns[l->n++] = ns;
		l->sorted = false;
	}
}

void
bench_lat_merge(bench_lat *dst, const bench_lat *src)
{
	for (size_t i = 0; i < src->n; i++)
		bench_lat_add(dst, src->ns[i]);
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

	return (x < y ? -1 : x > y ? 1 : 0);
}

double
bench_lat_pct_us(bench_lat *l, double pct)
{
	size_t i;

	if (l->n == 0)
		return (0);
	if (!l->sorted) {
		qsort(l->ns, l->n, sizeof(*l->ns), cmp_u64);
		l->sorted = true;
	}
	/* Nearest rank. */
	i = (size_t) (pct / 100.0 * (double) l->n + 0.5);
	if (i > 0)
		i--;
	if (i >= l->n)
		i = l->n - 1;
	return ((double) l->ns[i] / 1000.0);
}

void
bench_lat_free(bench_lat *l)
{
	free(l->ns);
	l->ns = NULL;
	l->n = l->cap = 0;
}

void
bench_result_fill(bench_result *r, size_t count, uint64_t elapsed_ns,
    bench_lat *lat)
{
	r->ran = true;
	r->failed = false;
	r->rate = elapsed_ns > 0 ?
	    (double) count * 1e9 / (double) elapsed_ns : 0;
	r->p50_us = lat != NULL ? bench_lat_pct_us(lat, 50) : 0;
	r->p99_us = lat != NULL ? bench_lat_pct_us(lat, 99) : 0;
}

void
bench_result_server_cpu(bench_result *r, double before, double after,
    size_t ops)
{
	if (!r->failed && before >= 0 && after >= before && ops > 0)
		r->server_cpu_us = (after - before) * 1e6 / (double) ops;
}

void
bench_result_fail(bench_result *r, const char *fmt, ...)
{
	va_list ap;

	r->ran = true;
	r->failed = true;
	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
}

void
bench_cpu_sample_take(bench_cpu_sample *s)
{
	unsigned long long v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "r");

	s->total = s->steal = 0;
	if (f == NULL)
		return;
	/* cpu  user nice system idle iowait irq softirq steal ... */
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
	    &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
		for (int i = 0; i < 8; i++)
			s->total += v[i];
		s->steal = v[7];
	}
	fclose(f);
}

double
bench_steal_pct(const bench_cpu_sample *a, const bench_cpu_sample *b)
{
	if (a->total == 0 || b->total <= a->total)
		return (-1);
	return (100.0 * (double) (b->steal - a->steal) /
	    (double) (b->total - a->total));
}
