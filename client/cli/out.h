/* out.h - writing whole records to stdout. */
#ifndef CLI_OUT_H
#define CLI_OUT_H

#include <stddef.h>

/*
 * Writes buf[0..len) with one fwrite and flushes, so a record is never
 * half-printed by us. When the reader went away (EPIPE) the CLI exits at
 * once and quietly with CLI_EXIT_PIPE, without confirming what it holds:
 * the daemon gives unprinted messages back to their channel. Other write
 * errors: message on stderr, exit CLI_EXIT_IOERR, same custody rule.
 */
void cli_out(const char *cmd, const void *buf, size_t len);

/* cli_out of a malloc'd record (freed here); NULL means out of memory. */
void cli_out_take(const char *cmd, char *buf, size_t len);

/* printf-style cli_out. */
void cli_outf(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
