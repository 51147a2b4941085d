/* threads.c - chan_nng_threads (chan/threads.h), over lib/nng_threads.c. */
#include <chan/threads.h>

#include <nng/nng.h>

#include "nng_threads.h"

chan_status
chan_nng_threads(int task_threads)
{
	int rv;

	if (task_threads < 2 || task_threads > CHL_NNG_THREADS_MAX) {
		return (CHAN_INVALID_ARGUMENT);
	}
	switch ((rv = chl_nng_threads_init(task_threads))) {
	case 0:
		return (CHAN_OK);
	case NNG_EBUSY:
		return (CHAN_ALREADY_EXISTS);
	default:
		return (CHAN_RESOURCE_EXHAUSTED);
	}
}
