/* cmd_recv.c - recv (one, -n N, --follow), try-recv, recv-any. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "duration.h"
#include "cli.h"
#include "format.h"
#include "out.h"

typedef struct cli_recv_opts {
	uint64_t count;  /* -n; 0: not given, or -n 0 (see have_count) */
	bool     have_count;
	bool     follow;
	bool     nul;
	int64_t  lease_ms; /* --lease; 0: not given */
} cli_recv_opts;

/* Prints one message as a whole record; prefix: see cli_record_plain. */
static void
cli_print_msg(const cli_global *g, const char *cmd, const chan_msg *m, const char *prefix, bool nul)
{
	cli_record r = {
		.channel = chan_msg_channel(m),
		.seq = chan_msg_seq(m),
		.time_us = chan_msg_time_us(m),
		.data = chan_msg_data(m),
		.len = chan_msg_len(m),
		.redelivered = chan_msg_redelivered(m),
	};
	size_t len = 0;
	char  *line;

	line = g->json ? cli_record_json(&r, &len) : cli_record_plain(&r, prefix, nul ? '\0' : '\n', &len);
	cli_out_take(cmd, line, len);
}

/* Options of recv / try-recv / recv-any. Returns -1 to go on, else the exit code. */
static int
cli_recv_parse(cli_parser *p, cli_recv_opts *o, bool counted)
{
	int c;

	memset(o, 0, sizeof(*o));
	while ((c = cli_parser_next(p)) != -1) {
		switch (c) {
		case '0':
			o->nul = true;
			break;
		case 'n':
			if (!counted) {
				return (cli_usage(p->cmd->name, "unknown option '-n'"));
			}
			/* -n 0 is valid: like head -n 0, it takes nothing and exits 0. */
			if (!cli_parse_u64(p->optarg, &o->count)) {
				return (cli_usage(p->cmd->name, "-n: '%s' is not a number >= 0", p->optarg));
			}
			o->have_count = true;
			break;
		case 'f':
			if (!counted) {
				return (cli_usage(p->cmd->name, "unknown option '--follow'"));
			}
			o->follow = true;
			break;
		case 'l': {
			char err[160];
			if (!counted) {
				return (cli_usage(p->cmd->name, "unknown option '--lease'"));
			}
			if (!chl_duration_parse(p->optarg, &o->lease_ms, err, sizeof(err)) ||
			    o->lease_ms <= 0) {
				return (cli_usage(p->cmd->name, "--lease: %s",
				    o->lease_ms == 0 ? "a lease must be longer than 0" : err));
			}
			break;
		}
		case 'h':
			return (0);
		default:
			return (p->bad != 0 ? p->bad : CLI_EXIT_USAGE);
		}
	}
	if (o->lease_ms > 0 && (o->have_count || o->follow)) {
		return (cli_usage(p->cmd->name, "--lease takes one message: no -n or --follow"));
	}
	if (o->have_count && o->follow) {
		return (cli_usage(p->cmd->name, "-n and --follow exclude each other"));
	}
	if (p->npos == 0) {
		return (cli_usage(p->cmd->name, "missing NAME"));
	}
	return (-1);
}

static const struct option cli_recv_longopts[] = {
	{ "count", required_argument, NULL, 'n' },
	{ "follow", no_argument, NULL, 'f' },
	{ "null", no_argument, NULL, '0' },
	{ "lease", required_argument, NULL, 'l' },
	{ NULL, 0, NULL, 0 },
};

static int64_t
cli_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/*
 * -n N or --follow: through a chan_consumer, which fetches ahead (up to
 * max_batch per round trip, never more than N in all for -n) while the
 * messages before are printed. A message counts as taken, and may be
 * confirmed, only when the next one is asked for (or at the end), so one
 * that was not printed whole (SIGKILL, EPIPE) goes back to the channel.
 * On SIGINT/SIGTERM the consumer is cancelled: what it already holds is
 * printed, then the command ends.
 */
static int
cli_recv_many(cli_global *g, chan_client *c, const char *name, const cli_recv_opts *o)
{
	chan_consumer_opts ko;
	chan_consumer     *k;
	chan_msg          *m;
	uint64_t           left = o->count;
	int64_t            timeout = cli_timeout(g, CHAN_WAIT_FOREVER);
	int64_t            deadline = timeout >= 0 ? cli_mono_ms() + timeout : 0;
	chan_status        s;
	int                rv = 0;

	chan_consumer_opts_init(&ko);
	ko.limit = o->follow ? 0 : o->count;
	if ((s = chan_consumer_open(c, name, &ko, &k)) != CHAN_OK) {
		return (cli_fail("recv", s));
	}
	cli_signals_watch_consumer(k);
	while (o->follow || left > 0) {
		int64_t t = timeout;

		if (!o->follow && timeout >= 0) {
			t = deadline - cli_mono_ms();
			t = t < 0 ? 0 : t;
		}
		if ((s = chan_consumer_recv(k, &m, t)) != CHAN_OK) {
			if (o->follow && cli_signals_caught() != 0 && s == CHAN_UNAVAILABLE) {
				rv = 0; /* --follow ends on SIGINT/SIGTERM */
			} else {
				rv = cli_fail("recv", s);
			}
			break;
		}
		cli_print_msg(g, "recv", m, NULL, o->nul);
		chan_msg_free(m);
		left -= o->follow ? 0 : 1;
	}
	cli_signals_watch_consumer(NULL);
	chan_consumer_close(k);
	return (rv);
}

/*
 * --lease: one message that stays in flight until `chan ack` (or goes back
 * at `chan release` or when the lease ends). Plain output is
 * "SEQ<TAB>payload", because a script needs the seq to ack; --json has it
 * as "seq".
 */
static int
cli_recv_leased(cli_global *g, chan_client *c, const char *name, const cli_recv_opts *o)
{
	chan_msg   *m;
	chan_status s;
	char        seq[24];

	s = chan_recv_lease(c, name, (uint64_t) o->lease_ms, &m, cli_timeout(g, CHAN_WAIT_FOREVER));
	if (s != CHAN_OK) {
		return (cli_fail("recv", s));
	}
	snprintf(seq, sizeof(seq), "%llu", (unsigned long long) chan_msg_seq(m));
	cli_print_msg(g, "recv", m, seq, o->nul);
	chan_msg_free(m);
	return (0);
}

int
cli_cmd_recv(cli_global *g, int argc, char **argv)
{
	cli_parser    p;
	cli_recv_opts o;
	chan_client  *c;
	chan_msg     *m;
	chan_status   s;
	int           rv;

	cli_parser_init(&p, g, cli_cmd_find("recv"), argc, argv, "0n:fl:", cli_recv_longopts);
	if ((rv = cli_recv_parse(&p, &o, true)) >= 0) {
		goto out;
	}
	if (p.npos > 1) {
		rv = cli_usage("recv", "unexpected argument '%s'", p.pos[1]);
		goto out;
	}
	if ((rv = cli_check_name("recv", p.pos[0])) != 0) {
		goto out;
	}
	if (o.have_count && o.count == 0) {
		rv = 0; /* "exits 0 after N messages": N = 0 receives nothing */
		goto out;
	}
	if ((rv = cli_connect(g, "recv", &c)) != 0) {
		goto out;
	}
	if (o.count > 0 || o.follow) {
		rv = cli_recv_many(g, c, p.pos[0], &o);
	} else if (o.lease_ms > 0) {
		rv = cli_recv_leased(g, c, p.pos[0], &o);
	} else if ((s = chan_recv(c, p.pos[0], &m, cli_timeout(g, CHAN_WAIT_FOREVER))) != CHAN_OK) {
		rv = cli_fail("recv", s);
	} else {
		cli_print_msg(g, "recv", m, NULL, o.nul);
		chan_msg_free(m);
	}
	cli_disconnect(c);
out:
	cli_parser_fini(&p);
	return (rv);
}

int
cli_cmd_try_recv(cli_global *g, int argc, char **argv)
{
	cli_parser    p;
	cli_recv_opts o;
	chan_client  *c;
	chan_msg     *m;
	chan_status   s;
	int           rv;

	cli_parser_init(&p, g, cli_cmd_find("try-recv"), argc, argv, "0", cli_recv_longopts);
	if ((rv = cli_recv_parse(&p, &o, false)) >= 0) {
		goto out;
	}
	if (p.npos > 1) {
		rv = cli_usage("try-recv", "unexpected argument '%s'", p.pos[1]);
		goto out;
	}
	if ((rv = cli_check_name("try-recv", p.pos[0])) != 0 ||
	    (rv = cli_connect(g, "try-recv", &c)) != 0) {
		goto out;
	}
	if ((s = chan_try_recv(c, p.pos[0], &m)) != CHAN_OK) {
		rv = cli_fail("try-recv", s);
	} else {
		cli_print_msg(g, "try-recv", m, NULL, o.nul);
		chan_msg_free(m);
	}
	cli_disconnect(c);
out:
	cli_parser_fini(&p);
	return (rv);
}

int
cli_cmd_recv_any(cli_global *g, int argc, char **argv)
{
	cli_parser    p;
	cli_recv_opts o;
	chan_client  *c;
	chan_msg     *m;
	chan_status   s;
	int           rv, i;

	cli_parser_init(&p, g, cli_cmd_find("recv-any"), argc, argv, "0", cli_recv_longopts);
	if ((rv = cli_recv_parse(&p, &o, false)) >= 0) {
		goto out;
	}
	for (i = 0; i < p.npos; i++) {
		if ((rv = cli_check_name("recv-any", p.pos[i])) != 0) {
			goto out;
		}
	}
	if ((rv = cli_connect(g, "recv-any", &c)) != 0) {
		goto out;
	}
	s = chan_recv_any(c, (const char *const *) p.pos, (size_t) p.npos, &m,
	    cli_timeout(g, CHAN_WAIT_FOREVER));
	if (s != CHAN_OK) {
		rv = cli_fail("recv-any", s);
	} else {
		cli_print_msg(g, "recv-any", m, chan_msg_channel(m), o.nul);
		chan_msg_free(m);
	}
	cli_disconnect(c);
out:
	cli_parser_fini(&p);
	return (rv);
}

/* ack NAME SEQ / release NAME SEQ [--delay DUR]: finish or give back a lease. */
static int
cli_lease_cmd(cli_global *g, int argc, char **argv, bool ack)
{
	static const struct option lo[] = {
		{ "delay", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cmd = ack ? "ack" : "release";
	cli_parser  p;
	chan_client *c;
	chan_status s;
	uint64_t    seq;
	int64_t     delay = 0;
	int         rv = -1, ch;
	char        err[160];

	cli_parser_init(&p, g, cli_cmd_find(cmd), argc, argv, "", ack ? lo + 1 : lo);
	while (rv < 0 && (ch = cli_parser_next(&p)) != -1) {
		if (ch == 'd' && !chl_duration_parse(p.optarg, &delay, err, sizeof(err))) {
			rv = cli_usage(cmd, "--delay: %s", err);
		} else if (ch == 'h') {
			rv = 0;
		} else if (ch != 'd') {
			rv = p.bad != 0 ? p.bad : CLI_EXIT_USAGE;
		}
	}
	if (rv >= 0) {
		goto out;
	}
	if (p.npos != 2) {
		rv = cli_usage(cmd, "want NAME SEQ");
		goto out;
	}
	if (!cli_parse_u64(p.pos[1], &seq) || seq == 0) {
		rv = cli_usage(cmd, "SEQ: '%s' is not a sequence number", p.pos[1]);
		goto out;
	}
	if ((rv = cli_check_name(cmd, p.pos[0])) != 0 || (rv = cli_connect(g, cmd, &c)) != 0) {
		goto out;
	}
	s = ack ? chan_ack(c, p.pos[0], seq) : chan_release(c, p.pos[0], seq, (uint64_t) delay);
	rv = s == CHAN_OK ? 0 : cli_fail(cmd, s);
	cli_disconnect(c);
out:
	cli_parser_fini(&p);
	return (rv);
}

int
cli_cmd_ack(cli_global *g, int argc, char **argv)
{
	return (cli_lease_cmd(g, argc, argv, true));
}

int
cli_cmd_release(cli_global *g, int argc, char **argv)
{
	return (cli_lease_cmd(g, argc, argv, false));
}
