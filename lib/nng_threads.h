/*
 * nng_threads.h - how many threads nng 1.5.2 starts, for the programs
 * (chand, chan) that may choose.
 *
 * nng sizes its pools once, at its first use, from the number of CPUs:
 * two task threads per CPU (up to 16) and one timer thread per CPU. It
 * has no setting for them until nng 1.8 (nng_init_set_parameter). Every
 * completion nng hands to its task queue wakes one of the sleeping task
 * threads, and a request passes through about six of them; with more
 * threads than CPUs most of those wake-ups land on a thread that finds
 * the work already taken, or that has to be switched in. On the 2-CPU
 * machine of docs/PERFORMANCE.md, two task threads instead of four cut
 * chand's context switches per message by a third.
 *
 * The only input nng 1.5.2 reads is sysconf(_SC_NPROCESSORS_ONLN). This
 * file defines sysconf for the program that links it (an executable's
 * definition comes first in symbol lookup, so libnng's call lands here)
 * and answers with the chosen count only while chl_nng_threads_init
 * starts nng; every other call and every other moment gets glibc's own
 * answer. It is never linked into libchan: a library must not replace a
 * libc function for the program that loads it.
 */
#ifndef CHL_NNG_THREADS_H
#define CHL_NNG_THREADS_H

#define CHL_NNG_THREADS_MAX 16 /* nng 1.5.2's own cap on task threads */

/*
 * Starts nng (before anything else in the program uses it) with
 * task_threads task threads: an even number from 2 to CHL_NNG_THREADS_MAX
 * (an odd one is rounded up: nng takes two per CPU). 0, NNG_EBUSY when
 * nng had already started (its threads stay as they are), or the error
 * nng could not start with (NNG_ENOMEM).
 */
int chl_nng_threads_init(int task_threads);

/* What the daemon uses by default: one task thread per CPU, at least 2. */
int chl_nng_threads_default(void);

#endif
