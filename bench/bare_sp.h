/*
 * bare_sp.h - a REQ client without nng's threads, for the floor rows
 * (bare_sp.c says why and what it speaks). Calls return 0, or -1 with a
 * message in err.
 */
#ifndef CHAN_BENCH_BARE_SP_H
#define CHAN_BENCH_BARE_SP_H

#include <stddef.h>
#include <stdint.h>

typedef struct bare_sp {
	int      fd;
	uint32_t id; /* the last request id */
} bare_sp;

/* Connects to an ipc:// REP socket and does the SP handshake. */
int  bare_sp_dial(bare_sp *b, const char *url, char *err, size_t errlen);
/* Sends buf[0..len) as one request and reads the reply into buf (at
 * most cap bytes; *got says how many). */
int  bare_sp_call(bare_sp *b, unsigned char *buf, size_t len, size_t cap,
    size_t *got, char *err, size_t errlen);
void bare_sp_close(bare_sp *b);

#endif
