/*
 * chan/threads.h - how many threads nng starts in a program using libchan.
 *
 * nng 1.5.2 starts two task threads per CPU the first time anything in the
 * process uses it, and has no setting for that. Each completion it queues
 * wakes one of them; on a small machine most of those wake-ups are context
 * switches that add CPU time and latency to every call (docs/PERFORMANCE.md
 * measured a third fewer switches with one per CPU). libchan itself never
 * changes this: a library must not touch what its host program gets.
 *
 * A program that wants fewer (or more) threads links libchan_threads.a into
 * its executable (`-lchan_threads`, after the objects) and calls
 * chan_nng_threads first thing in main(), before it starts threads of its
 * own (nng's threads inherit the signal mask of the caller) and before
 * anything uses nng. It works by defining sysconf() in the executable,
 * which answers nng's one question, the number of CPUs, with
 * task_threads / 2 while nng starts; every other caller, then and later,
 * gets the C library's answer. Never link it into a shared library.
 */
#ifndef CHAN_THREADS_H
#define CHAN_THREADS_H

#include <chan/status.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Starts nng with task_threads task threads: an even number from 2 to 16
 * (an odd one is rounded up, as nng runs two per CPU it is told about).
 * CHAN_OK; CHAN_INVALID_ARGUMENT for a count outside 2..16 (nng not
 * started); CHAN_ALREADY_EXISTS when nng had already started (it keeps its
 * threads); CHAN_RESOURCE_EXHAUSTED when nng could not start.
 */
chan_status chan_nng_threads(int task_threads);

#ifdef __cplusplus
}
#endif

#endif
