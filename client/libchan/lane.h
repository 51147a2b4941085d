/*
 * lane.h - the connection a client's synchronous calls travel on, spoken
 * by the calling threads themselves (sp.h) instead of nng's client.
 *
 * Why: through nng's client a synchronous call hands its request to nng's
 * threads and waits to be woken with the answer, several thread hand-offs
 * per call. On this kind of machine that was half the latency of a
 * one-message send (p50 ~90 us through nng, ~46 us written and read by
 * the caller; docs/PERFORMANCE.md, session 8).
 *
 * One connection per client, shared by all its threads, as nng's socket
 * was: chand sees the same single REQ peer, so handles, receivers and
 * custody bound to the connection behave as before. Several calls may be
 * in flight at once (a parked receive and sends from other threads): each
 * writes its request, and whichever caller finds nobody reading becomes
 * the reader, hands every answer to the call it belongs to (by request
 * id) and gives the role up when its own answer is in. A lone caller thus
 * writes and reads without waking anyone.
 *
 * Asynchronous calls (chan_*_aio) and the Cancel they need stay on nng's
 * socket, which a client with a lane opens only when it first needs it.
 */
#ifndef CHAN_LANE_H
#define CHAN_LANE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "client.h"
#include "sp.h"

/* A call waiting on the lane. */
typedef struct chan_lane_call {
	struct chan_lane_call *next;
	uint32_t               rid;  /* the SP request id (the Request.id's low 31 bits) */
	uint64_t               gen;  /* the connection it was written on */
	bool                   done; /* body/len hold its answer */
	pthread_cond_t         cv;   /* its answer came, or it is to read */
	void                  *body;
	size_t                 len;
} chan_lane_call;

typedef struct chan_lane {
	chan_sp          sp;
	pthread_mutex_t  mtx;     /* everything below, and the reader role */
	pthread_cond_t   cv;      /* the dialer left, or the connection went (callers not linked yet) */
	bool             reading; /* a caller is reading sp */
	bool             dialing; /* a caller is (re)connecting sp */
	bool             cancelled; /* chan_cancel: the wake pipe is written */
	/*
	 * Whether sp is connected, and which connection it is: kept here
	 * because sp's own lock is held across a write that may block (a
	 * daemon that stopped reading), and nothing may wait for it under
	 * mtx (chan_cancel takes mtx). Set by the dialer; cleared by the
	 * reader, the one thread that closes sp.
	 */
	bool             up;
	uint64_t         gen;
	chan_lane_call  *calls;
	int              wake[2]; /* ends a wait of a cancelled client */
	chan_cancel_hook hook;
} chan_lane;

/*
 * Connects (one attempt, CHAN_SP_DIAL_MS). recvmax: as chan_sp_init. A
 * client has a lane when chan_sp_wanted(url) (ipc:// and tcp://, unless
 * CHAN_SP_DIRECT=0).
 */
chan_status chan_lane_open(chan_lane *l, chan_client *c, size_t recvmax);
/*
 * Hangs up (the daemon gives back what the connection held). c: NULL
 * when chan_lane_open failed before adding its cancel hook.
 */
void        chan_lane_close(chan_lane *l, chan_client *c);

/*
 * One exchange of x->req (id, client and confirmations filled), as
 * chan_transfer does on nng: local_timeout_ms < 0 waits on the daemon's
 * terms, and a connection lost under the request reconnects and sends the
 * same request again (CHAN_MAX_RESETS times at most); otherwise the call
 * gives up after local_timeout_ms. internal: ignores chan_cancel. On
 * CHAN_OK x->resp holds the decoded answer and x->via its connection.
 */
chan_status chan_lane_run(chan_lane *l, chan_client *c, chan_exchange *x,
    int64_t local_timeout_ms, bool internal);

/* Whether deliveries that came over connection gen are still held by it. */
bool        chan_lane_holds(chan_lane *l, uint64_t gen);

#endif
