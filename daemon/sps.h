/*
 * sps.h - chand's own listener for ipc:// and tcp:// ("SP server"): it
 * accepts the connections itself and speaks nng's SP wire protocol (the
 * REP side) on one libevent thread, instead of nng's REP socket.
 *
 * Why: through nng's server every request passes nng's poller thread, a
 * task thread, then an engine shard, and its answer a task thread and the
 * poller again: four thread hand-offs per round trip, and on a 2-CPU
 * machine each is a chance to wait for a CPU (docs/PERFORMANCE.md, session
 * 9). Here a request goes from the I/O thread to its shard, and the shard
 * writes the answer to the socket itself (the I/O thread only finishes
 * what the socket buffer did not take).
 *
 * The wire is nng 1.5.2's, so nng clients (libchan with CHAN_SP_DIRECT=0,
 * nngcat, any REQ socket) cannot tell: handshake 0x00 'S' 'P' 0x00, the
 * protocol (REP 0x31 here, REQ 0x30 expected), 0 0; ipc frames are a 0x01
 * byte and a 64-bit big-endian length, tcp frames the length only; a
 * request starts with its backtrace (32-bit words, the last with its top
 * bit set), echoed in front of the answer. tls+tcp:// stays with nng.
 *
 * Everything connection-wide (admission, access control, the engine's
 * view of connections, drain) stays in transport.c: it passes hooks.
 */
#ifndef CHD_SPS_H
#define CHD_SPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "access.h"
#include "engine.h"

typedef struct chd_sps chd_sps;

typedef struct chd_sps_hooks {
	void *arg;
	/* After the handshake: may conn (peer) be served? false: closed. */
	bool (*admit)(void *arg, uint32_t conn, const chd_peer *peer);
	/* An admitted connection is open / went away (once each). */
	void (*opened)(void *arg, uint32_t conn, int pid);
	void (*closed)(void *arg, uint32_t conn);
	/* A request was taken (+1) or answered or dropped (-1), for drain. */
	void (*inflight)(void *arg, int delta);
} chd_sps_hooks;

typedef struct chd_sps_opts {
	chd_engine       *engine;
	chd_peers        *peers;       /* pending counts, peers for access */
	const chd_access *access;      /* NULL: access control off */
	size_t            recv_max;    /* largest request body */
	size_t            decode_cap;  /* capped allocator budget per request */
	unsigned          max_pending; /* per connection, 0: any */
	int               socket_mode; /* ipc socket file mode, -1: umask */
	int               socket_gid;  /* ipc socket file group, -1: leave */
	chd_sps_hooks     hooks;
} chd_sps_opts;

/* Whether url is one the SP server listens on (ipc://, tcp://, tcp4/6). */
bool chd_sps_speaks(const char *url);

/* Starts the I/O thread. 0 or -1 with err. */
int chd_sps_new(const chd_sps_opts *o, chd_sps **out, char *err,
    size_t errlen);

/*
 * Binds and listens on url (the caller dealt with an ipc path's directory
 * and any stale file). *port: the tcp port bound (0 for ipc). 0 or -1 with
 * err naming the reason (not the URL).
 */
int chd_sps_listen(chd_sps *s, const char *url, unsigned *port, char *err,
    size_t errlen);

/* Closes every listener (and unlinks ipc paths); connections stay. */
void chd_sps_stop_listening(chd_sps *s);

/* Closes every connection (the closed hook hears of each) and stops the
 * thread. Answers arriving later are dropped. */
void chd_sps_close(chd_sps *s);

/* Frees everything. After chd_sps_close and after the engine is freed. */
void chd_sps_free(chd_sps *s);

#endif
