/*
 * access.h - who may use chand, and for what (docs/SECURITY.md).
 *
 * A policy is a list of rules "SUBJECT:OPS:PATTERN", built from the
 * --allow-uid, --allow-gid and --allow options. With no rule at all access
 * control is off: whoever can open the socket may do everything (the
 * socket's mode and group are then the only gate). With at least one rule,
 * every request is checked against the peer's credentials before it
 * reaches the engine; a refused one is answered PERMISSION_DENIED with a
 * message saying why.
 *
 * Pure code: no nng, no printing, no exits. The transport fills a chd_peer
 * per connection (uid/gid from the ipc socket, whether a tls+tcp client
 * certificate was verified) and keeps it in a chd_peers table, so the
 * credentials are read once per connection and a refusal is logged once.
 */
#ifndef CHD_ACCESS_H
#define CHD_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chan.pb-c.h"
#include "chan/status.h"

/* What a rule grants (OPS of a rule), as bits. */
#define CHD_ACC_SEND 0x01u    /* send, sender_open, sender_close */
#define CHD_ACC_RECV 0x02u    /* recv, recv_any, receiver_*, ack, release */
#define CHD_ACC_MANAGE 0x04u  /* create, close, delete */
#define CHD_ACC_INFO 0x08u    /* stat NAME; list and stats need pattern '*' */
#define CHD_ACC_COUNTER 0x10u /* counter ops; counter list needs '*' */
#define CHD_ACC_ALL 0x1fu

/* What the transport knows about the other end of a connection. */
typedef struct chd_peer {
	bool     cred;         /* uid/gid known (ipc) */
	bool     tls_verified; /* tls+tcp with a client cert the CA signed */
	uint32_t uid;
	uint32_t gid;          /* the peer's effective (primary) gid */
} chd_peer;

typedef struct chd_access chd_access;

/* An empty policy (access control off). NULL when out of memory. */
chd_access *chd_access_new(void);
void        chd_access_free(chd_access *a);

/*
 * Adds rules. list: "UID|USER[,...]" (--allow-uid), "GID|GROUP[,...]"
 * (--allow-gid); each entry gets every right on every name. rule:
 * "SUBJECT:OPS:PATTERN" (--allow), SUBJECT "uid=UID|USER", "gid=GID|GROUP"
 * or "any" (every peer, plain tcp included), OPS a comma list of send,
 * recv, manage, info, counter, all (or *), PATTERN a name, "PREFIX*" or
 * "*". User and group names are looked up now, not per request.
 * 0, or -1 with a one-line message in err.
 */
int chd_access_allow_uids(chd_access *a, const char *list, char *err,
    size_t errlen);
int chd_access_allow_gids(chd_access *a, const char *list, char *err,
    size_t errlen);
int chd_access_allow_rule(chd_access *a, const char *rule, char *err,
    size_t errlen);

/*
 * Uids that always have every right when access control is on: root and
 * the daemon's own user (both can read the daemon's memory anyway). The
 * daemon calls this once with geteuid(); 0 is trusted from the start.
 */
void chd_access_trust_uid(chd_access *a, uint32_t uid);

/* True when at least one rule exists (a NULL policy is off). */
bool chd_access_enabled(const chd_access *a);

/*
 * Whether the peer has any right at all. When not, why says so (for the
 * log and the answer) and every request of it is refused.
 */
bool chd_access_admits(const chd_access *a, const chd_peer *p, char *why,
    size_t whylen);

/*
 * CHAN_OK when peer p may make request req, else CHAN_PERMISSION_DENIED
 * with why naming the peer, the operation and the name. Hello and Ping
 * are allowed to every admitted peer. A request without an op passes (the
 * engine answers it INVALID_ARGUMENT) only for full-rights peers.
 */
chan_status chd_access_check(const chd_access *a, const chd_peer *p,
    const Chan__V1__Request *req, char *why, size_t whylen);

/* Describes a peer for messages: "uid 1001 gid 1001", "tls client", ... */
void chd_peer_describe(const chd_peer *p, char *buf, size_t len);

/*
 * Per-connection peers, for the transport: put at pipe add, get per
 * request, del at pipe removal. Thread-safe (striped mutexes, each held
 * for one lookup).
 */
typedef struct chd_peers chd_peers;

chd_peers *chd_peers_new(void);
void       chd_peers_free(chd_peers *t);
/* 0, or -1 when out of memory (the connection then reads as unknown). */
int  chd_peers_put(chd_peers *t, uint32_t conn, const chd_peer *p);
bool chd_peers_get(chd_peers *t, uint32_t conn, chd_peer *p);
/* True when conn was there (its pipe was admitted). */
bool chd_peers_del(chd_peers *t, uint32_t conn);
/* True the first time it is called for conn (log a refusal once). */
bool chd_peers_first_refusal(chd_peers *t, uint32_t conn);
/*
 * Requests in flight per connection (parked waiters included): add is
 * false, counting nothing, when conn has max already (max 0: no limit);
 * done after the answer. A conn not in the table is not limited.
 */
bool chd_peers_pending_add(chd_peers *t, uint32_t conn, unsigned max);
void chd_peers_pending_done(chd_peers *t, uint32_t conn);
/* Connections in the table (lock-free read). */
size_t chd_peers_count(chd_peers *t);

#endif
