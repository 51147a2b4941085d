/*
 * sp.h - a private connection to chand that speaks nng's SP wire protocol
 * (the REQ side) itself, from the calling thread.
 *
 * Why: through nng's own client every request and every answer passes
 * through nng's poller and task threads, a thread hand-off for each and
 * another for each part of a big message the socket buffer splits. For
 * the bulk handles (chan_producer, chan_consumer) those hand-offs cost
 * more than the work: a 1 KiB stream moved 0.65-0.70 M msg/s through
 * nng's client and 1.04-1.10 M msg/s with both ends writing and reading
 * the socket themselves (docs/PERFORMANCE.md, session 7). chand cannot
 * tell the difference: it sees an ordinary REQ peer.
 *
 * What it speaks (nng 1.5.2's ipc and tcp transports, and req0):
 *   handshake  8 bytes each way: 0x00 'S' 'P' 0x00, the protocol number
 *              (16 bits, big-endian: REQ 0x30, REP 0x31), 2 zero bytes;
 *   message    ipc: a 0x01 byte, then the length (64 bits, big-endian);
 *              tcp: the length only; then the bytes: a 32-bit request id
 *              with its top bit set (REQ's header, echoed by REP), then
 *              the protobuf body.
 * Only ipc:// and tcp:// (tcp4://, tcp6://) URLs; anything else (tls+tcp,
 * ws) keeps nng's client (chan_sp_speaks).
 *
 * Blocking I/O on the caller's thread; one thread at a time per chan_sp,
 * except chan_sp_send_aside.
 * Errors: a chan_status, and the thread's last error (chan_fail).
 */
#ifndef CHAN_SP_H
#define CHAN_SP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <chan/chan.h>

typedef struct chan_sp {
	int      fd;      /* -1: not connected */
	bool     tcp;     /* tcp framing (no message-type byte) */
	char    *url;
	size_t   recvmax; /* a longer answer is refused (and drops the connection) */
	uint64_t gen;     /* connections made: custody belongs to one of them */
	pthread_mutex_t mtx; /* writes and fd changes (chan_sp_send_aside) */
} chan_sp;

#define CHAN_SP_DIAL_MS 10000 /* one connect, one handshake: each at most this long */

/* Whether url is one chan_sp can dial (ipc://, tcp://, tcp4://, tcp6://). */
bool        chan_sp_speaks(const char *url);
/*
 * Whether a bulk handle on url should use chan_sp: it can, and the
 * environment does not say CHAN_SP_DIRECT=0 (which keeps nng's client
 * for everything: a switch for comparing the two, docs/TRANSPORT.md).
 */
bool        chan_sp_wanted(const char *url);
/* Not connected yet. recvmax: 0 means no bound. */
chan_status chan_sp_init(chan_sp *s, const char *url, size_t recvmax);
/*
 * One attempt to connect and shake hands, each step within timeout_ms;
 * wakefd (>= 0) readable ends it (CHAN_UNAVAILABLE).
 */
chan_status chan_sp_dial(chan_sp *s, int64_t timeout_ms, int wakefd);
/* Whether s is connected; *gen (may be NULL): which connection it is. */
bool        chan_sp_up(chan_sp *s, uint64_t *gen);
/* Drops the connection (the daemon gives back what it held for it). */
void        chan_sp_close(chan_sp *s);
void        chan_sp_fini(chan_sp *s);
/*
 * Sends body[0..len) as request rid (the top bit is set here). Blocks
 * until the kernel has it all. CHAN_UNAVAILABLE: the connection is gone
 * (and closed).
 */
chan_status chan_sp_send(chan_sp *s, uint32_t rid, const void *body, size_t len);
/* The same with the body in pieces (chan_sp_putv). */
chan_status chan_sp_sendv(chan_sp *s, uint32_t rid, const struct iovec *parts, int nparts);
/* Waits ms, or until wakefd is readable: true then. */
bool        chan_sp_pause(int wakefd, int64_t ms);
/* A pipe for waking a blocked chan_sp_recv: both ends close-on-exec, non-blocking. */
chan_status chan_sp_wake_open(int wake[2]);
void        chan_sp_wake_close(int wake[2]);

/* What chan_sp_put did. */
typedef enum chan_sp_put_result {
	CHAN_SP_SENT,   /* all of the frame is with the kernel */
	CHAN_SP_UNSENT, /* none of it went (deadline, wake-up): the connection is intact */
	CHAN_SP_BROKEN, /* the connection failed, or the frame was cut short */
	CHAN_SP_NOCONN, /* not connected */
} chan_sp_put_result;

/*
 * Writes request rid, waiting for room in the socket until deadline_ms
 * (< 0: none), not once wakefd (>= 0) is readable. Frames of different
 * threads never interleave. CHAN_SP_BROKEN shuts the socket down without
 * closing it: a thread blocked reading it sees the end and closes it
 * (chan_sp_recv), where a close could pull it from under that read.
 */
chan_sp_put_result chan_sp_put(chan_sp *s, uint32_t rid, const void *body, size_t len,
    int64_t deadline_ms, int wakefd);
/* The same with the body in up to CHAN_SP_PARTS pieces, written as one frame. */
#define CHAN_SP_PARTS 3
chan_sp_put_result chan_sp_putv(chan_sp *s, uint32_t rid, const struct iovec *parts,
    int nparts, int64_t deadline_ms, int wakefd);

/*
 * chan_sp_send from another thread than the owner's (a Cancel while the
 * owner is blocked reading): whole frames never interleave; a failure
 * leaves the connection to the owner to find.
 */
void        chan_sp_send_aside(chan_sp *s, uint32_t rid, const void *body, size_t len);
/*
 * A Cancel (request rid of client) naming request id, written aside: the
 * daemon drops id if it is parked; its answer, and id's if one still
 * comes, are for the owner's reads to drop.
 */
void        chan_sp_cancel_aside(chan_sp *s, uint64_t client, uint64_t rid, uint64_t id);
/*
 * The next answer: *rid its request id (top bit cleared), *body its bytes
 * (malloc'd, caller frees; NULL when *len is 0). Waits until deadline_ms
 * (chl_now_mono_ms; < 0: none) for it to start; wakefd (>= 0) readable ends the wait
 * with CHAN_UNAVAILABLE "cancelled" (wakefd is not read; a wake-up in
 * the middle of a frame closes the connection). CHAN_TIMEOUT: nothing
 * came, the connection is intact. CHAN_UNAVAILABLE or
 * CHAN_PROTOCOL otherwise: the connection is gone (and closed).
 */
chan_status chan_sp_recv(chan_sp *s, uint32_t *rid, void **body, size_t *len,
    int64_t deadline_ms, int wakefd);

#endif
