/*
 * cli.h - the chan CLI: options shared by every command, the command
 * table, and the helpers commands use (connect, errors, usage).
 */
#ifndef CLI_H
#define CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include <chan/chan.h>

/* Exit codes that are not statuses. */
#define CLI_EXIT_USAGE   64  /* SPEC: INVALID_ARGUMENT, usage */
#define CLI_EXIT_IOERR   74  /* stdout/stdin failed (sysexits EX_IOERR) */
#define CLI_EXIT_PIPE    141 /* stdout reader went away (as if killed by SIGPIPE) */

#define CLI_TIMEOUT_UNSET INT64_MIN

/* Options any command accepts, before or after its name. */
typedef struct cli_global {
	const char *url;        /* NULL: CHAN_URL, then the default */
	int64_t     timeout_ms; /* CLI_TIMEOUT_UNSET: the command's default */
	bool        json;
} cli_global;

/* A command: argv[0] is its name (for counters: "counter add" style). */
typedef int (*cli_cmd_fn)(cli_global *g, int argc, char **argv);

typedef struct cli_cmd {
	const char *name;
	cli_cmd_fn  run;
	bool        receives; /* SIGINT/SIGTERM: print, confirm, then exit */
	const char *synopsis; /* after "chan [GLOBAL] " */
	const char *summary;  /* one line for 'chan --help' */
	const char *help;     /* what it does, its options and output */
} cli_cmd;

extern const cli_cmd cli_cmds[];

const cli_cmd *cli_cmd_find(const char *name);
void           cli_cmd_help(const cli_cmd *cmd);

/* Usage error: message, "Try 'chan CMD --help'.", returns 64. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Status failure: "chan: CMD: <daemon's message>", returns the status's exit code. */
int cli_fail(const char *cmd, chan_status s);

/*
 * The option parser every command uses: getopt_long over argv with the
 * command's own options plus the global ones (handled here). Positional
 * arguments are collected into pos[0..*npos). Returns the option char for
 * command options, -1 at the end, or 'h' after printing help (the caller
 * returns 0). '?' on a bad option (message printed; caller returns 64).
 */
typedef struct cli_parser {
	cli_global          *g;
	const cli_cmd       *cmd;
	int                  argc;
	char               **argv;
	const char          *shortopts;  /* command's own, e.g. "0n:f" */
	const struct option *longopts;   /* command's own, ends with {0} */
	char               **pos;
	int                  npos;
	bool                 started;
	char                *optarg;     /* argument of the last option */
	int                  bad;        /* exit code when a global option was bad */
} cli_parser;


void cli_parser_init(cli_parser *p, cli_global *g, const cli_cmd *cmd, int argc, char **argv,
    const char *shortopts, const struct option *longopts);
int  cli_parser_next(cli_parser *p);
void cli_parser_fini(cli_parser *p);

/*
 * The daemon's name rule, checked before connecting so a bad name is a
 * usage error (64) even without a daemon. Returns 0 or 64 (message printed).
 */
int cli_check_name(const char *cmd, const char *name);

/* Local out of memory: message and RESOURCE_EXHAUSTED's exit code. */
int cli_oom(const char *cmd);

/* Connects with g->url; prints the error and returns its exit code, or 0. */
int cli_connect(cli_global *g, const char *cmd, chan_client **out);
/* Stops watching signals, confirms what was received, disconnects. */
void cli_disconnect(chan_client *c);

/* Timeout for a blocking command: g's, else dflt. */
int64_t cli_timeout(const cli_global *g, int64_t dflt);

/*
 * Signals: SIGINT/SIGTERM cancel the client's calls (so a blocked recv
 * returns) and are remembered; SIGPIPE is ignored (EPIPE on write).
 * Call before connecting so every thread inherits the mask.
 */
void cli_signals_block(void);
void cli_signals_watch(chan_client *c);
/* Also cancel this consumer on SIGINT/SIGTERM (NULL: stop before closing it). */
void cli_signals_watch_consumer(chan_consumer *k);
int  cli_signals_caught(void); /* 0, or the signal number */
void cli_signals_stop(void);

/* Commands. */
int cli_cmd_ping(cli_global *g, int argc, char **argv);
int cli_cmd_stats(cli_global *g, int argc, char **argv);
int cli_cmd_list(cli_global *g, int argc, char **argv);
int cli_cmd_create(cli_global *g, int argc, char **argv);
int cli_cmd_close(cli_global *g, int argc, char **argv);
int cli_cmd_delete(cli_global *g, int argc, char **argv);
int cli_cmd_stat(cli_global *g, int argc, char **argv);
int cli_cmd_send(cli_global *g, int argc, char **argv);
int cli_cmd_recv(cli_global *g, int argc, char **argv);
int cli_cmd_try_recv(cli_global *g, int argc, char **argv);
int cli_cmd_recv_any(cli_global *g, int argc, char **argv);
int cli_cmd_ack(cli_global *g, int argc, char **argv);
int cli_cmd_release(cli_global *g, int argc, char **argv);
int cli_cmd_counter(cli_global *g, int argc, char **argv);

#endif
