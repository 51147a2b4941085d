/* nng_threads.c - nng's thread count for chand and chan (nng_threads.h). */
#include "nng_threads.h"

#include <stdatomic.h>
#include <unistd.h>

#include <nng/nng.h>

/* glibc's sysconf under its other exported name. */
extern long __sysconf(int name);

/* CPUs nng is told about while it starts; 0: the truth. */
static atomic_long chl_nng_cpus;
/* nng asked for the CPU count while chl_nng_cpus was set: it started then. */
static atomic_bool chl_nng_asked;

/*
 * Not instrumented by the sanitizers: their runtimes call sysconf while
 * they start, before they could record anything (TSan crashed in every
 * chand and chan of its build without this). The flags are atomics, so no
 * race is hidden.
 */
__attribute__((no_sanitize("address", "thread", "undefined"))) long
sysconf(int name)
{
	long n = atomic_load(&chl_nng_cpus);

	if (name == _SC_NPROCESSORS_ONLN && n > 0) {
		atomic_store(&chl_nng_asked, true);
		return (n);
	}
	return (__sysconf(name));
}

int
chl_nng_threads_init(int task_threads)
{
	nng_aio *aio;
	int      rv;

	if (task_threads < 2) {
		task_threads = 2;
	}
	if (task_threads > CHL_NNG_THREADS_MAX) {
		task_threads = CHL_NNG_THREADS_MAX;
	}
	atomic_store(&chl_nng_asked, false);
	atomic_store(&chl_nng_cpus, (long) (task_threads + 1) / 2);
	/* Allocating an aio is the cheapest call that starts nng. */
	if ((rv = nng_aio_alloc(&aio, NULL, NULL)) == 0) {
		nng_aio_free(aio);
	}
	atomic_store(&chl_nng_cpus, 0);
	if (rv == 0 && !atomic_load(&chl_nng_asked)) {
		rv = NNG_EBUSY; /* nng had started before: its pools stay */
	}
	return (rv);
}

int
chl_nng_threads_default(void)
{
	long n = __sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 2) {
		return (2);
	}
	n += n & 1;
	return (n > CHL_NNG_THREADS_MAX ? CHL_NNG_THREADS_MAX : (int)n);
}
