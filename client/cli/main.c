/*
 * main.c - chan: global options, the command table, help, and the helpers
 * every command shares (option parsing, connect, errors).
 */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "duration.h"
#include "names.h"
#include "nng_threads.h"

#define CLI_GLOBAL_OPTS                                                      \
	"Global options (before or after the command):\n"                    \
	"  --url URL        daemon address (default: $CHAN_URL, else " CHAN_DEFAULT_URL ")\n" \
	"  --timeout DUR    how long blocking commands wait: 250ms, 2s, 1.5s, 1m;\n" \
	"                   a bare number is seconds (default: forever)\n"       \
	"  --json           JSON output, one object a line\n"                     \
	"  --tls-ca FILE    tls+tcp://: CA that signed chand's certificate\n"      \
	"  --tls-cert FILE  tls+tcp://: client certificate (PEM; with the key\n"   \
	"                   too unless --tls-key is given)\n"                     \
	"  --tls-key FILE   tls+tcp://: the client certificate's key (PEM)\n"      \
	"  -h, --help       this help;  -V, --version  print the version\n"

const cli_cmd cli_cmds[] = {
	{ "ping", cli_cmd_ping, false, "ping",
	    "round trip to the daemon",
	    "Round trip to the daemon. Prints \"pong\" and the round-trip time.\n" },
	{ "stats", cli_cmd_stats, false, "stats",
	    "daemon-wide numbers (key: value lines)",
	    "Daemon-wide numbers, one \"key: value\" line each: uptime_ms, connections,\n"
	    "channels, counters, messages, bytes, requests, workers.\n" },
	{ "list", cli_cmd_list, false, "list",
	    "every channel and its depth (NAME<TAB>DEPTH lines)",
	    "Every channel, one \"NAME<TAB>DEPTH\" line each (--json: one object per channel).\n" },
	{ "create", cli_cmd_create, false, "create NAME [--capacity N | --rendezvous]",
	    "create a channel: unbounded, bounded to N, or rendezvous",
	    "Creates a channel: unbounded without a flag, bounded to N with --capacity N,\n"
	    "rendezvous (capacity 0) with --rendezvous. Idempotent with the same capacity;\n"
	    "ALREADY_EXISTS (exit 8) with another one.\n" },
	{ "send", cli_cmd_send, false, "send NAME [MSG...] [-0 | --raw] [--try]",
	    "send each MSG, or one message per stdin line (-0: NUL records; --raw: all of stdin)",
	    "Sends each MSG as one message. Without MSG, reads stdin: one message per\n"
	    "line (the newline is not part of it; a last line without newline counts),\n"
	    "or with -0 one message per NUL-terminated record, or with --raw all of\n"
	    "stdin as one message. Lines are sent in batches (all-or-nothing each).\n"
	    "  -0, --null    stdin records end with NUL\n"
	    "  --raw         all of stdin is one message\n"
	    "  --try         do not wait for room: FULL (exit 4) at once\n"
	    "Without --timeout or --try a send waits for room forever.\n" },
	{ "recv", cli_cmd_recv, true, "recv NAME [-n N | --follow | --lease DUR] [-0] [--json]",
	    "receive and print one message, N messages, or until the channel closes",
	    "Receives one message (or N, or until the channel closes) and prints each\n"
	    "payload followed by a newline.\n"
	    "  -n, --count N  exit 0 after N messages (-n 0: none, at once)\n"
	    "  -f, --follow   print until the channel closes (exit 5) or SIGINT/SIGTERM (exit 0)\n"
	    "  -0, --null     end each payload with NUL instead of newline\n"
	    "  --lease DUR    ack mode: one message that stays in flight until\n"
	    "                 'chan ack NAME SEQ' (or goes back at 'chan release' or when\n"
	    "                 DUR ends); prints \"SEQ<TAB>payload\" (--json: \"seq\")\n"
	    "  --json         one {\"channel\",\"seq\",\"time\",\"data\"|\"data_b64\"} object a line\n"
	    "Without --timeout it waits forever; with -n, --timeout bounds the whole\n"
	    "command, with --follow the wait for each next message.\n" },
	{ "try-recv", cli_cmd_try_recv, true, "try-recv NAME [-0] [--json]",
	    "receive one message without waiting (EMPTY: exit 3)",
	    "Receives one message without waiting: EMPTY (exit 3) or CLOSED (exit 5) at once.\n" },
	{ "recv-any", cli_cmd_recv_any, true, "recv-any NAME... [-0] [--json]",
	    "receive the first message of any channel; prints NAME<TAB>payload",
	    "Receives the first message from any of the channels and prints\n"
	    "\"NAME<TAB>payload\" and a newline (-0: NUL).\n" },
	{ "ack", cli_cmd_ack, false, "ack NAME SEQ",
	    "finish a message received with recv --lease",
	    "Finishes a leased message: it leaves the channel for good.\n"
	    "NOT_FOUND (exit 6) when no lease with that SEQ is held.\n" },
	{ "release", cli_cmd_release, false, "release NAME SEQ [--delay DUR]",
	    "give a leased message back to the channel",
	    "Gives a leased message back: it is received again (marked redelivered),\n"
	    "at once or after --delay DUR.\n" },
	{ "close", cli_cmd_close, false, "close NAME",
	    "close a channel (end of stream)",
	    "Closes the channel: receivers drain it, then get CLOSED; sends get CLOSED.\n" },
	{ "delete", cli_cmd_delete, false, "delete NAME",
	    "delete a channel and its messages",
	    "Removes the channel and its messages; its waiters get NOT_FOUND.\n" },
	{ "stat", cli_cmd_stat, false, "stat NAME",
	    "one channel's numbers (key: value lines)",
	    "One \"key: value\" line per field: name, capacity, depth, bytes, closed,\n"
	    "receiver_attached, receiver_pid, senders, blocked_senders, blocked_receivers,\n"
	    "total_sent, total_received, total_dropped, in_flight, total_redelivered.\n" },
	{ "counter", cli_cmd_counter, false,
	    "counter add NAME [DELTA...] | get NAME | set NAME V | cas NAME EXPECTED NEW |\n"
	    "            wait NAME OP VALUE | list | delete NAME",
	    "shared counters; cas exits 1 when it did not swap",
	    "Shared i64 counters. Each prints one value: add the new value (DELTA\n"
	    "defaults to 1), get the value, set the old value, wait the value that\n"
	    "satisfied the condition, cas the current value after the attempt.\n"
	    "add with several DELTAs makes them all in one request, in order, none\n"
	    "if one would overflow, and prints the value after each on its own line.\n"
	    "cas exits 0 when it swapped and 1 when it did not.\n"
	    "OP is one of == != < <= > >= (or eq ne lt le gt ge). list prints\n"
	    "\"NAME<TAB>VALUE\" lines. Negative numbers are taken as numbers.\n" },
	{ NULL, NULL, false, NULL, NULL, NULL },
};

static void
cli_main_help(FILE *f)
{
	const cli_cmd *c;

	fprintf(f, "Usage: chan [--url URL] [--timeout DUR] [--json] COMMAND [ARGS]\n\n"
	           "Talks to chand: named MPSC channels and shared counters.\n\nCommands:\n");
	for (c = cli_cmds; c->name != NULL; c++) {
		fprintf(f, "  %s\n      %s\n", c->synopsis, c->summary);
	}
	fprintf(f, "\n" CLI_GLOBAL_OPTS
	           "\n'chan COMMAND --help' or 'chan help COMMAND' describes a command; see chan(1).\n"
	           "Exit status: 0 ok, 2 TIMEOUT, 3 EMPTY, 4 FULL, 5 CLOSED, 6 NOT_FOUND, 7 BUSY,\n"
	           "8 ALREADY_EXISTS, 9 TOO_LARGE, 10 PERMISSION_DENIED, 11 RESOURCE_EXHAUSTED,\n"
	           "12 OUT_OF_RANGE, 13 SHUTTING_DOWN, 64 usage/INVALID_ARGUMENT,\n"
	           "69 UNAVAILABLE/PROTOCOL, 70 INTERNAL.\n");
}

const cli_cmd *
cli_cmd_find(const char *name)
{
	const cli_cmd *c;

	for (c = cli_cmds; c->name != NULL; c++) {
		if (strcmp(c->name, name) == 0) {
			return (c);
		}
	}
	return (NULL);
}

void
cli_cmd_help(const cli_cmd *cmd)
{
	printf("Usage: chan [GLOBAL OPTIONS] %s\n\n%s\n" CLI_GLOBAL_OPTS, cmd->synopsis, cmd->help);
}

int
cli_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	char    msg[512];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (cmd != NULL) {
		fprintf(stderr, "chan: %s: %s\nTry 'chan %s --help'.\n", cmd, msg, cmd);
	} else {
		fprintf(stderr, "chan: %s\nTry 'chan --help'.\n", msg);
	}
	return (CLI_EXIT_USAGE);
}

int
cli_fail(const char *cmd, chan_status s)
{
	int sig = cli_signals_caught();

	/* A call cancelled by SIGINT/SIGTERM is not a daemon failure. */
	if (sig != 0 && s == CHAN_UNAVAILABLE) {
		return (128 + sig);
	}
	fprintf(stderr, "chan: %s: %s\n", cmd, chan_last_error(NULL));
	return (chan_status_exit_code(s));
}

int
cli_check_name(const char *cmd, const char *name)
{
	char err[256];

	if (!chl_name_valid(name, strlen(name), err, sizeof(err))) {
		fprintf(stderr, "chan: %s: %s\n", cmd, err);
		return (CLI_EXIT_USAGE);
	}
	return (0);
}

int
cli_oom(const char *cmd)
{
	fprintf(stderr, "chan: %s: out of memory\n", cmd);
	return (chan_status_exit_code(CHAN_RESOURCE_EXHAUSTED));
}

int
cli_connect(cli_global *g, const char *cmd, chan_client **out)
{
	chan_status s;

	if ((s = chan_connect(g->url, out)) != CHAN_OK) {
		return (cli_fail(cmd, s));
	}
	cli_signals_watch(*out);
	return (0);
}

void
cli_disconnect(chan_client *c)
{
	cli_signals_stop();
	chan_disconnect(c);
}

int64_t
cli_timeout(const cli_global *g, int64_t dflt)
{
	return (g->timeout_ms == CLI_TIMEOUT_UNSET ? dflt : g->timeout_ms);
}

/* --timeout DUR into g; 0 or the usage exit code. */
static int
cli_set_timeout(cli_global *g, const char *cmd, const char *s)
{
	char    err[256];
	int64_t ms;

	if (!chl_duration_parse(s, &ms, err, sizeof(err))) {
		return (cli_usage(cmd, "--timeout: %s", err));
	}
	g->timeout_ms = ms;
	return (0);
}

enum {
	CLI_OPT_URL = 0x1000,
	CLI_OPT_TIMEOUT,
	CLI_OPT_JSON,
	CLI_OPT_VERSION,
	CLI_OPT_TLS_CA,
	CLI_OPT_TLS_CERT,
	CLI_OPT_TLS_KEY,
};

/*
 * --tls-* flags are the CHAN_TLS_* variables libchan reads at connect
 * (docs/CLIENT.md), so the flag and the variable can never disagree.
 */
static void
cli_set_tls(int opt, const char *file)
{
	const char *var = opt == CLI_OPT_TLS_CA ? "CHAN_TLS_CA_FILE"
	    : opt == CLI_OPT_TLS_CERT           ? "CHAN_TLS_CERT_FILE"
	                                        : "CHAN_TLS_KEY_FILE";
	setenv(var, file, 1);
}

static const struct option cli_global_longopts[] = {
	{ "tls-ca", required_argument, NULL, CLI_OPT_TLS_CA },
	{ "tls-cert", required_argument, NULL, CLI_OPT_TLS_CERT },
	{ "tls-key", required_argument, NULL, CLI_OPT_TLS_KEY },
	{ "url", required_argument, NULL, CLI_OPT_URL },
	{ "timeout", required_argument, NULL, CLI_OPT_TIMEOUT },
	{ "json", no_argument, NULL, CLI_OPT_JSON },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, CLI_OPT_VERSION },
	{ NULL, 0, NULL, 0 },
};
/* Entries, the terminator included. */
#define CLI_NGLOBAL (sizeof(cli_global_longopts) / sizeof(cli_global_longopts[0]))

/*
 * The global options that set something, wherever they stand on the line.
 * Returns 0 when c was one of them, -1 when it was not, else the exit code
 * of a bad value (message printed).
 */
static int
cli_global_set(cli_global *g, const char *cmd, int c, const char *arg)
{
	switch (c) {
	case CLI_OPT_URL:
		g->url = arg;
		return (0);
	case CLI_OPT_TLS_CA:
	case CLI_OPT_TLS_CERT:
	case CLI_OPT_TLS_KEY:
		cli_set_tls(c, arg);
		return (0);
	case CLI_OPT_TIMEOUT:
		return (cli_set_timeout(g, cmd, arg));
	case CLI_OPT_JSON:
		g->json = true;
		return (0);
	}
	return (-1);
}

void
cli_parser_init(cli_parser *p, cli_global *g, const cli_cmd *cmd, int argc, char **argv,
    const char *shortopts, const struct option *longopts)
{
	memset(p, 0, sizeof(*p));
	p->g = g;
	p->cmd = cmd;
	p->argc = argc;
	p->argv = argv;
	p->shortopts = shortopts;
	p->longopts = longopts;
	p->pos = calloc((size_t) argc + 1, sizeof(char *));
}

void
cli_parser_fini(cli_parser *p)
{
	free(p->pos);
	p->pos = NULL;
}

/*
 * getopt_long in "return in order" mode over the command's options plus
 * the global ones; positional arguments are collected as they come.
 */
int
cli_parser_next(cli_parser *p)
{
	struct option all[64];
	char          shorts[64];
	size_t        n = 0;
	int           c, rv;

	if (p->pos == NULL) {
		fprintf(stderr, "chan: %s: out of memory\n", p->cmd->name);
		p->bad = CLI_EXIT_USAGE;
		return ('?');
	}
	for (; p->longopts != NULL && p->longopts[n].name != NULL && n < 40; n++) {
		all[n] = p->longopts[n];
	}
	memcpy(&all[n], cli_global_longopts, sizeof(cli_global_longopts));
	snprintf(shorts, sizeof(shorts), "-:h%s", p->shortopts != NULL ? p->shortopts : "");
	if (!p->started) {
		optind = 0; /* glibc: full re-initialisation for this argv */
		opterr = 0;
		p->started = true;
	}
	for (;;) {
		c = getopt_long(p->argc, p->argv, shorts, all, NULL);
		if ((rv = cli_global_set(p->g, p->cmd->name, c, optarg)) == 0) {
			continue;
		} else if (rv > 0) {
			p->bad = rv;
			return ('?');
		}
		switch (c) {
		case -1:
			/* After "--" getopt stops: the rest are positional arguments. */
			while (optind < p->argc) {
				p->pos[p->npos++] = p->argv[optind++];
			}
			return (-1);
		case 1:
			p->pos[p->npos++] = optarg;
			continue;
		case 'h':
			cli_cmd_help(p->cmd);
			return ('h');
		case CLI_OPT_VERSION:
			printf("chan %s\n", CHAN_VERSION);
			return ('h');
		case ':':
			p->bad = cli_usage(p->cmd->name, "option '%s' needs an argument",
			    p->argv[optind - 1]);
			return ('?');
		case '?':
			if (optopt != 0) {
				p->bad = cli_usage(p->cmd->name, "unknown option '-%c'", optopt);
			} else {
				p->bad = cli_usage(p->cmd->name, "unknown option '%s'", p->argv[optind - 1]);
			}
			return ('?');
		default:
			p->optarg = optarg;
			return (c);
		}
	}
}

int
main(int argc, char **argv)
{
	cli_global     g = { NULL, CLI_TIMEOUT_UNSET, false };
	const cli_cmd *cmd;
	const char    *bad_timeout = NULL;
	int            c, rv;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:hV", cli_global_longopts, NULL)) != -1) {
		/*
		 * A bad --timeout before the command is reported once the
		 * command is known, as "chan: <command>: --timeout: ...".
		 */
		if (c == CLI_OPT_TIMEOUT && !chl_duration_parse(optarg, &g.timeout_ms, NULL, 0)) {
			bad_timeout = optarg;
			continue;
		}
		if ((rv = cli_global_set(&g, NULL, c, optarg)) >= 0) {
			if (rv > 0) {
				return (rv);
			}
			continue;
		}
		switch (c) {
		case 'h':
			cli_main_help(stdout);
			return (0);
		case 'V':
		case CLI_OPT_VERSION:
			printf("chan %s\n", CHAN_VERSION);
			return (0);
		case ':':
			return (cli_usage(NULL, "option '%s' needs an argument", argv[optind - 1]));
		default:
			if (optopt != 0) {
				return (cli_usage(NULL, "unknown option '-%c'", optopt));
			}
			return (cli_usage(NULL, "unknown option '%s'", argv[optind - 1]));
		}
	}
	if (bad_timeout != NULL && (optind >= argc || cli_cmd_find(argv[optind]) == NULL)) {
		return (cli_set_timeout(&g, NULL, bad_timeout)); /* no command to name */
	}
	if (optind >= argc) {
		return (cli_usage(NULL, "missing COMMAND"));
	}
	if (strcmp(argv[optind], "help") == 0) {
		if (optind + 1 >= argc) {
			cli_main_help(stdout);
			return (0);
		}
		if ((cmd = cli_cmd_find(argv[optind + 1])) == NULL) {
			return (cli_usage(NULL, "unknown command '%s'", argv[optind + 1]));
		}
		cli_cmd_help(cmd);
		return (0);
	}
	if ((cmd = cli_cmd_find(argv[optind])) == NULL) {
		return (cli_usage(NULL, "unknown command '%s'", argv[optind]));
	}
	if (bad_timeout != NULL) {
		return (cli_set_timeout(&g, cmd->name, bad_timeout));
	}
	/*
	 * Commands that receive must print and confirm what they got before
	 * exiting; the others may simply die on SIGINT/SIGTERM.
	 */
	if (cmd->receives) {
		cli_signals_block();
	} else {
		signal(SIGPIPE, SIG_IGN);
	}
	/*
	 * One client: two nng task threads are plenty, and a shell loop of
	 * chan calls starts fewer threads each time (nng_threads.h). After
	 * the signal mask above, which nng's threads inherit. A failure here
	 * only leaves nng to start itself later, as it would by default.
	 */
	(void) chl_nng_threads_init(2);
	rv = cmd->run(&g, argc - optind, argv + optind);
	cli_signals_stop();
	return (rv);
}
