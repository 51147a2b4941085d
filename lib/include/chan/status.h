/*
 * chan/status.h - the one status list of chand, libchan and chan.
 *
 * Each row gives: the name (CHAN_<name> in C, chan.v1.Status.<name> on the
 * wire, where it has the same number), the number, the CLI exit code of
 * SPEC's table, and the default human text. Everything that maps a status
 * (strerror, exit code, wire enum check, JSON names) is generated from this
 * list; nothing maps statuses by hand a second time.
 */
#ifndef CHAN_STATUS_H
#define CHAN_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/*        name                number exit  text */
#define CHAN_STATUS_LIST(X)                                                   \
	X(OK,                 0,     0,   "success")                           \
	X(INTERNAL,           1,     70,  "internal error")                    \
	X(TIMEOUT,            2,     2,   "timed out")                         \
	X(EMPTY,              3,     3,   "channel is empty")                  \
	X(FULL,               4,     4,   "channel is full")                   \
	X(CLOSED,             5,     5,   "channel is closed")                 \
	X(NOT_FOUND,          6,     6,   "not found")                         \
	X(BUSY,               7,     7,   "channel has another receiver")      \
	X(ALREADY_EXISTS,     8,     8,   "already exists with other parameters") \
	X(TOO_LARGE,          9,     9,   "message too large")                 \
	X(PERMISSION_DENIED,  10,    10,  "permission denied")                 \
	X(RESOURCE_EXHAUSTED, 11,    11,  "resource exhausted")                \
	X(OUT_OF_RANGE,       12,    12,  "value out of range")                \
	X(SHUTTING_DOWN,      13,    13,  "daemon is shutting down")           \
	X(INVALID_ARGUMENT,   14,    64,  "invalid argument")                  \
	X(UNAVAILABLE,        15,    69,  "daemon unavailable")                \
	X(PROTOCOL,           16,    69,  "protocol error")

typedef enum chan_status {
#define CHAN_STATUS_ENUM_(name, num, exitc, text) CHAN_##name = num,
	CHAN_STATUS_LIST(CHAN_STATUS_ENUM_)
#undef CHAN_STATUS_ENUM_
	CHAN_STATUS_COUNT_
} chan_status;

/* Default human text of a status; never NULL ("unknown status" if out of range). */
const char *chan_strerror(chan_status s);
/* "OK", "TIMEOUT", ...: the wire name; "UNKNOWN" if out of range. */
const char *chan_status_name(chan_status s);
/* The CLI exit code of SPEC's table; 70 if out of range. */
int chan_status_exit_code(chan_status s);

#ifdef __cplusplus
}
#endif
#endif
