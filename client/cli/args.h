/* args.h - pure argument parsing of the CLI (numbers, wait operators, negative numbers). */
#ifndef CLI_ARGS_H
#define CLI_ARGS_H

#include <stdbool.h>
#include <stdint.h>

#include <chan/chan.h>

/* Whole-string decimal integers; false on junk, empty or overflow. */
bool cli_parse_i64(const char *s, int64_t *v);
bool cli_parse_u64(const char *s, uint64_t *v);

/* "==" "!=" "<" "<=" ">" ">=" (and eq ne lt le gt ge, shell-friendly). */
bool cli_parse_wait_op(const char *s, chan_wait_op *op);

/*
 * getopt would take "-5" for an option. Returns a malloc'd copy of argv
 * (argc entries plus NULL) where every argument that is a negative decimal
 * number is hidden behind a marker byte, so getopt sees a positional
 * argument; cli_arg() gives the original text back. Caller frees the
 * array and the marked strings with cli_args_free. NULL on ENOMEM.
 */
char      **cli_args_protect(int argc, char **argv);
void        cli_args_free(int argc, char **argv);
const char *cli_arg(const char *s);

#endif
