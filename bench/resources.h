/*
 * resources.h - memory per queued message and CPU with parked receivers.
 */
#ifndef CHAN_BENCH_RESOURCES_H
#define CHAN_BENCH_RESOURCES_H

#include "bench.h"

typedef struct bench_mem {
	long   rss_before_kb;
	long   rss_after_kb;
	size_t count;
	double per_msg;      /* bytes per message beyond the payload */
	char   err[300];
} bench_mem;

typedef struct bench_idle {
	int    receivers;
	int    answered;     /* receivers answered during the window (chand) */
	double seconds;
	double cpu_pct;
	long   rss_before_kb;
	long   rss_after_kb;
	double close_cpu_s;  /* daemon CPU spent once all receivers hung up */
	double close_wall_s; /* and until its CPU time stopped growing */
	char   err[300];
} bench_idle;

int bench_memory(const bench_ops *ops, const bench_opts *o, pid_t pid,
    size_t size, size_t count, size_t batch, bench_mem *m);
int bench_parked_chand(const bench_opts *o, pid_t pid, int n,
    double seconds, bench_idle *r);
int bench_parked_redis(const bench_opts *o, pid_t pid, int n,
    double seconds, bench_idle *r);

#endif
