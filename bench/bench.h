/*
 * bench.h - chan-bench: chand beside Redis (and the raw nng floor), the same
 * workloads on both in one run (issue 4). Shared types and helpers.
 *
 * chan-bench is a measuring tool, not library code: it prints and exits.
 */
#ifndef CHAN_BENCH_H
#define CHAN_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- options ---------------------------------------------------------- */

typedef struct bench_opts {
	bool        quick;      /* everything in under a minute */
	int         only;       /* 0: all workloads, else just this one */
	const char *chand;      /* path of chand */
	const char *chan;       /* path of the chan CLI */
	const char *redis;      /* path of redis-server */
	const char *redis_cli;  /* path of redis-cli */
	int         workers;    /* chand --workers, 0: its default */
	int         receivers;  /* parked receivers for the CPU measurement */
	int         client_io_threads; /* nng task threads here, 0: nng's own */
	char       *chand_args[16]; /* extra chand arguments (--chand-arg) */
	int         nchand_args;
	const char *dir;        /* private temp dir */
	pid_t       chand_pid;  /* the shared chand of workloads 1-5, or 0 */
	char        chand_url[512];
	char        redis_sock[512];
} bench_opts;

/* ---- timing and latency ----------------------------------------------- */

uint64_t bench_now_ns(void);

/* CPU time counters of the whole machine (/proc/stat's cpu line): all of
 * it, and what the hypervisor gave to others (steal). Zeros if unreadable. */
typedef struct bench_cpu_sample {
	uint64_t total, steal;
} bench_cpu_sample;
void   bench_cpu_sample_take(bench_cpu_sample *s);
/* Percent of the machine's CPU time stolen between a and b; -1: unknown. */
double bench_steal_pct(const bench_cpu_sample *a, const bench_cpu_sample *b);
void     bench_sleep_ns(uint64_t ns);
void     bench_pace(uint64_t *next, uint64_t period);

/* Per-op durations, sorted once for percentiles. */
typedef struct bench_lat {
	uint64_t *ns;
	size_t    n;
	size_t    cap;
	bool      sorted;
} bench_lat;

void   bench_lat_init(bench_lat *l, size_t cap);
void   bench_lat_add(bench_lat *l, uint64_t ns);
void   bench_lat_merge(bench_lat *dst, const bench_lat *src);
double bench_lat_pct_us(bench_lat *l, double pct);
void   bench_lat_free(bench_lat *l);

/* One system's figures for one workload. */
typedef struct bench_result {
	bool   ran;
	bool   failed;
	double rate;    /* messages (or operations) per second */
	double p50_us;
	double p99_us;
	/* The server process's CPU (utime + stime) per operation, µs; 0:
	 * not measured. Wall-clock latency on a shared 2-CPU machine moves
	 * with whatever else runs; the server's own work per request moves
	 * less, and it is what "the daemon adds to the transport" means. */
	double server_cpu_us;
	char   err[160];
} bench_result;

void bench_result_fill(bench_result *r, size_t count, uint64_t elapsed_ns,
    bench_lat *lat);
/* Sets r->server_cpu_us from two bench_cpu_seconds readings around ops
 * operations (left 0 when either failed or r did). */
void bench_result_server_cpu(bench_result *r, double before, double after,
    size_t ops);
void bench_result_fail(bench_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- the systems under test -------------------------------------------- */

/*
 * One client connection of one system. Every workload is written once,
 * against these operations; "channel" is a Redis list key or a chand
 * channel. Calls return 0 or -1 with a message in err.
 */
typedef struct bench_client bench_client;

typedef struct bench_ops {
	const char *name;
	bench_client *(*connect)(const bench_opts *o, char *err, size_t errlen);
	void (*disconnect)(bench_client *c);
	/* Removes the channel (and what it holds) before a workload. */
	int (*reset)(bench_client *c, const char *ch);
	/* One message per call. */
	int (*send)(bench_client *c, const char *ch, const void *data,
	    size_t len);
	/* n messages in the system's best batched/pipelined way. */
	int (*send_batch)(bench_client *c, const char *ch,
	    const void *const *data, const size_t *lens, size_t n);
	/*
	 * One message per call, waiting up to timeout_ms. The payload is
	 * copied into buf (up to cap bytes); *len is its full length.
	 */
	int (*recv)(bench_client *c, const char *ch, void *buf, size_t cap,
	    size_t *len, int64_t timeout_ms);
	/* 1..max messages, waiting up to timeout_ms for the first; *got. */
	int (*recv_batch)(bench_client *c, const char *ch, size_t max,
	    size_t *got, int64_t timeout_ms);
	/*
	 * Streaming: one message per call into the system's best client-side
	 * batching, pipelined (chand: a chan_producer; Redis: variadic LPUSH
	 * of `batch` written while the previous one is answered). pipe_flush
	 * waits until every message given so far is accepted.
	 */
	int (*pipe_send)(bench_client *c, const char *ch, const void *data,
	    size_t len, size_t batch);
	int (*pipe_flush)(bench_client *c, const char *ch);
	/*
	 * Streaming receive, one message per call from a buffer the system
	 * fills ahead (chand: a chan_consumer prefetching `batch`; Redis:
	 * RPOP key batch kept in flight while the last one is consumed).
	 */
	int (*pipe_recv)(bench_client *c, const char *ch, void *buf,
	    size_t cap, size_t *len, size_t batch, int64_t timeout_ms);
	/* One counter increment per call. */
	int (*incr)(bench_client *c, const char *key);
	/* n increments in the system's best pipelined/batched way. */
	int (*incr_pipe)(bench_client *c, const char *key, size_t n);
	/* The error text of the last failed call. */
	const char *(*error)(bench_client *c);
	/* A short note on how send_batch / incr_pipe work, for the report. */
	const char *batch_note;
} bench_ops;

extern const bench_ops bench_redis_ops;
#ifdef CHAN_BENCH_HAVE_CHAND
extern const bench_ops bench_chand_ops;
#endif

/* ---- child processes --------------------------------------------------- */

/*
 * Starts argv[0] with stdin/stdout from the given fds (-1: /dev/null) and
 * stderr into errpath (NULL: /dev/null). The pid is remembered so that
 * every child is stopped on exit, error or SIGINT.
 */
pid_t bench_spawn(char *const argv[], int in_fd, int out_fd,
    const char *errpath);
/* Waits for pid; returns its exit status (-1 on error, 128+sig). */
int   bench_wait(pid_t pid);
/* As bench_wait, but stops it and returns -2 after timeout_ms. */
int   bench_wait_for(pid_t pid, int timeout_ms);
/* SIGTERM, then SIGKILL after timeout_ms; forgets the pid. */
void  bench_stop(pid_t pid, int timeout_ms);
/* Remembers a path to unlink at exit (temp files, sockets). */
void  bench_track_path(const char *path);
/* Installs the exit/SIGINT cleanup (stop children, remove temp files). */
void  bench_cleanup_install(const char *dir);
void  bench_cleanup_run(void);

/* The daemons under test. */
pid_t bench_start_chand(const bench_opts *o, const char *url,
    const char *logname);
pid_t bench_start_redis(const bench_opts *o, const char *sock,
    const char *logname);

/* /proc readings of a process. */
long   bench_rss_kb(pid_t pid);
double bench_cpu_seconds(pid_t pid);

/* ---- the raw nng floor -------------------------------------------------- */

/* One floor measurement: count echoes of size bytes. */
typedef struct bench_echo {
	size_t size;
	size_t count;
	/* 1: one client, the floor of every one-per-call workload; 2: the
	 * measured client's round trips while a second client echoes too
	 * (the shape of workload 1, a producer and a consumer at once). */
	int    clients;
	double rate; /* requests/s on an absolute schedule; 0: back to back */
	bool   bare; /* the client speaks SP itself, no nng threads (ipc) */
} bench_echo;

int bench_nng_echo(const bench_opts *o, const bench_echo *e, bench_result *r);
/* The echo server process (chan-bench --echo-server URL). */
int bench_echo_server_main(const char *url);
/* Redis ECHO of the same size: Redis's own round-trip floor (rate as
 * in bench_echo). */
int bench_redis_echo(const bench_opts *o, size_t size, size_t count,
    double rate, bench_result *r);

/* The machine's own floor for workload 5: a paced producer thread, a
 * relay process, a consumer thread, unix sockets, no work (wake_floor.c). */
int bench_wake_floor(size_t count, double rate, bench_result *r);

/* ---- workload 7 and the memory / CPU figures ----------------------------- */

int bench_script_chand(const bench_opts *o, size_t size, size_t lines,
    bench_result *r);
int bench_script_redis(const bench_opts *o, size_t size, size_t lines,
    bench_result *r);

#endif
