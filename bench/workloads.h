/*
 * workloads.h - workloads 1 to 5 over any bench_ops.
 */
#ifndef CHAN_BENCH_WORKLOADS_H
#define CHAN_BENCH_WORKLOADS_H

#include "bench.h"

/*
 * producers threads send count messages of size bytes in all (batch 0: one
 * per call, else batches of that many) while the calling thread receives
 * them (cbatch 0: one per call, else up to cbatch per call). Rate: count
 * over first send to last receive; latency: the producers' calls.
 */
int bench_flow(const bench_ops *ops, const bench_opts *o, const char *ch,
    size_t size, size_t count, size_t batch, size_t cbatch, int producers,
    bench_result *r);

/*
 * One producer streams count messages (pipe_send, one per call, the
 * system batching and pipelining up to batch) while the calling thread
 * takes them one per call (pipe_recv) and checks order. Latency: the
 * producer's calls.
 */
int bench_stream(const bench_ops *ops, const bench_opts *o, const char *ch,
    size_t size, size_t count, size_t batch, bench_result *r);

/* count increments, one per call (depth 0) or depth per pipelined call. */
int bench_incr(const bench_ops *ops, const bench_opts *o, const char *key,
    size_t count, size_t depth, bench_result *r);

/* One producer at rate msgs/s, stamping its send time; latency push->pop. */
int bench_paced(const bench_ops *ops, const bench_opts *o, const char *ch,
    size_t size, size_t count, double rate, bench_result *r);

#endif
