/*
 * msgpool.h - a few spare nng messages, kept for their capacity.
 *
 * nng 1.5.2 zeroes every message buffer it allocates (nni_chunk_grow uses
 * nni_zalloc), and glibc maps and faults in again the batch-sized buffers
 * a stream keeps allocating and freeing: together 10-15% of the CPU of a
 * stream of small messages. A message whose buffer is big enough is
 * reused instead: nng_msg_clear and nng_msg_realloc within its capacity
 * neither allocate nor zero. chand gives back the requests it decoded and
 * takes its answers from here; libchan gives back the answers and takes
 * its requests.
 *
 * One pool per process, for messages of CHL_MSGPOOL_MIN bytes and more
 * (smaller ones are cheap), at most CHL_MSGPOOL_N of them and
 * CHL_MSGPOOL_BYTES of capacity in all; any thread.
 */
#ifndef CHL_MSGPOOL_H
#define CHL_MSGPOOL_H

#include <stddef.h>

#include <nng/nng.h>

#define CHL_MSGPOOL_MIN   ((size_t) 16 * 1024)
#define CHL_MSGPOOL_N     16
#define CHL_MSGPOOL_BYTES ((size_t) 16 * 1024 * 1024)

/* As nng_msg_alloc (0 or an nng error), but the bytes are not zeroed. */
int  chl_msgpool_get(nng_msg **out, size_t len);
/* As nng_msg_free (NULL: nothing); m must be the caller's alone. */
void chl_msgpool_put(nng_msg *m);

#endif
