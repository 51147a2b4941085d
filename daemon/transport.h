/*
 * transport.h - chand's nng side: one REP socket in context mode, its
 * listeners, and the path of each request into the engine and back.
 * See docs/TRANSPORT.md for the threads and the shutdown sequence.
 */
#ifndef CHD_TRANSPORT_H
#define CHD_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "access.h"
#include "engine.h"

typedef struct chd_transport chd_transport;

typedef struct chd_transport_opts {
	size_t      recv_max;    /* NNG_OPT_RECVMAXSZ: largest request body */
	size_t      decode_cap;  /* capped allocator budget per request */
	int         receivers;   /* contexts kept waiting in nng_ctx_recv */
	int         socket_mode; /* ipc socket file mode, -1: leave to umask */
	const char *tls_cert;    /* PEM file for tls+tcp (cert, maybe key) */
	const char *tls_key;     /* PEM key file, NULL: in tls_cert */
	const char *tls_ca;      /* PEM CA file: client certs required */
	int         socket_gid;  /* group of ipc socket files, -1: leave */
	int         socket_dir_mode; /* a socket directory chand creates */
	unsigned    max_conns;   /* client connections at once, 0: any */
	unsigned    max_pending; /* requests in flight per connection, 0: any */
	bool        sp_direct;   /* ipc://, tcp://: chand's own listener (sps.h) */
	const chd_access *access; /* borrowed; NULL or empty: off */
} chd_transport_opts;

/* Opens the REP socket bound to engine e. 0 or -1 with err filled in. */
int chd_transport_open(chd_engine *e, const chd_transport_opts *o,
    chd_transport **out, char *err, size_t errlen);

/*
 * Starts listening on url. For ipc:// it first creates a missing parent
 * directory (socket_dir_mode, group socket_gid; parents above it 0755),
 * creates the socket with mode 0600 then applies socket_mode and
 * socket_gid, and deals with an existing socket file: removed when
 * nothing answers on it, refused when something (another chand) does.
 * 0 or -1 with err naming the URL and the reason.
 */
int chd_transport_listen(chd_transport *t, const char *url, char *err,
    size_t errlen);

/* Puts the receiving contexts to work. 0 or -1 with err. */
int chd_transport_start(chd_transport *t, char *err, size_t errlen);

/* Closes every listener: no new connections (existing ones keep going). */
void chd_transport_stop_listening(chd_transport *t);

/*
 * Waits up to timeout_ms for every received request to be answered and
 * its reply handed to nng. Returns true when none is left.
 */
bool chd_transport_drain(chd_transport *t, int timeout_ms);

/*
 * A finished nng_ctx_send only means the reply was queued on its pipe, not
 * written: closing the socket at once would drop it. Waits up to
 * timeout_ms for the clients to hang up (they do once answered). Returns
 * true when no connection is left.
 */
bool chd_transport_linger(chd_transport *t, int timeout_ms);

/*
 * Closes the socket (and all connections). The engine is no longer told
 * about connections after this; replies still arriving are dropped.
 */
void chd_transport_close(chd_transport *t);

/* Frees everything. After chd_transport_close and chd_engine_free. */
void chd_transport_free(chd_transport *t);

/* Connections currently open (for the log). */
unsigned chd_transport_connections(chd_transport *t);

#endif
