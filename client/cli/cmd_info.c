/* cmd_info.c - ping, stats, list, stat, create, close, delete. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "args.h"
#include "format.h"
#include "out.h"

/*
 * Parses a command that takes exactly npos_want positional arguments and
 * no options of its own. Returns -1 to go on, else the exit code.
 */
static int
cli_simple_args(cli_parser *p, int npos_want)
{
	int c;

	while ((c = cli_parser_next(p)) != -1) {
		if (c == 'h') {
			return (0);
		}
		return (p->bad != 0 ? p->bad : CLI_EXIT_USAGE);
	}
	if (p->npos < npos_want) {
		return (cli_usage(p->cmd->name, "missing NAME"));
	}
	if (p->npos > npos_want) {
		return (cli_usage(p->cmd->name, "unexpected argument '%s'", p->pos[npos_want]));
	}
	return (-1);
}

int
cli_cmd_ping(cli_global *g, int argc, char **argv)
{
	cli_parser   p;
	chan_client *c;
	uint64_t     rtt;
	chan_status  s;
	int          rv;

	cli_parser_init(&p, g, cli_cmd_find("ping"), argc, argv, "", NULL);
	if ((rv = cli_simple_args(&p, 0)) >= 0 || (rv = cli_connect(g, "ping", &c)) != 0) {
		cli_parser_fini(&p);
		return (rv);
	}
	cli_parser_fini(&p);
	if ((s = chan_ping(c, &rtt)) != CHAN_OK) {
		rv = cli_fail("ping", s);
	} else if (g->json) {
		char *j = cli_ping_json(rtt, chan_server_version(c));

		cli_out_take("ping", j, j != NULL ? strlen(j) : 0);
	} else {
		cli_outf("ping", "pong %.3f ms\n", (double) rtt / 1000.0);
	}
	cli_disconnect(c);
	return (rv);
}

int
cli_cmd_stats(cli_global *g, int argc, char **argv)
{
	cli_parser      p;
	chan_client    *c;
	chan_stats_info i;
	chan_status     s;
	int             rv;

	cli_parser_init(&p, g, cli_cmd_find("stats"), argc, argv, "", NULL);
	if ((rv = cli_simple_args(&p, 0)) >= 0 || (rv = cli_connect(g, "stats", &c)) != 0) {
		cli_parser_fini(&p);
		return (rv);
	}
	cli_parser_fini(&p);
	if ((s = chan_stats(c, &i)) != CHAN_OK) {
		rv = cli_fail("stats", s);
	} else if (g->json) {
		char *j = cli_stats_json(&i);

		cli_out_take("stats", j, j != NULL ? strlen(j) : 0);
	} else {
		cli_outf("stats",
		    "uptime_ms: %" PRIu64 "\nconnections: %" PRIu64 "\nchannels: %" PRIu64
		    "\ncounters: %" PRIu64 "\nmessages: %" PRIu64 "\nbytes: %" PRIu64
		    "\nrequests: %" PRIu64 "\nworkers: %u\n",
		    i.uptime_ms, i.connections, i.channels, i.counters, i.messages, i.bytes, i.requests,
		    i.workers);
	}
	cli_disconnect(c);
	return (rv);
}

int
cli_cmd_list(cli_global *g, int argc, char **argv)
{
	cli_parser      p;
	chan_client    *c;
	chan_stat_info *infos;
	chan_status     s;
	size_t          n, k;
	int             rv;

	cli_parser_init(&p, g, cli_cmd_find("list"), argc, argv, "", NULL);
	if ((rv = cli_simple_args(&p, 0)) >= 0 || (rv = cli_connect(g, "list", &c)) != 0) {
		cli_parser_fini(&p);
		return (rv);
	}
	cli_parser_fini(&p);
	if ((s = chan_list(c, &infos, &n)) != CHAN_OK) {
		rv = cli_fail("list", s);
	} else {
		for (k = 0; k < n; k++) {
			if (g->json) {
				char *j = cli_stat_json(&infos[k]);

				cli_out_take("list", j, j != NULL ? strlen(j) : 0);
			} else {
				cli_outf("list", "%s\t%" PRIu64 "\n", infos[k].name, infos[k].depth);
			}
		}
		chan_list_free(infos);
	}
	cli_disconnect(c);
	return (rv);
}

int
cli_cmd_stat(cli_global *g, int argc, char **argv)
{
	cli_parser     p;
	chan_client   *c;
	chan_stat_info i;
	chan_status    s;
	char           cap[32];
	int            rv;

	cli_parser_init(&p, g, cli_cmd_find("stat"), argc, argv, "", NULL);
	if ((rv = cli_simple_args(&p, 1)) >= 0 || (rv = cli_check_name("stat", p.pos[0])) != 0 ||
	    (rv = cli_connect(g, "stat", &c)) != 0) {
		cli_parser_fini(&p);
		return (rv);
	}
	if ((s = chan_stat(c, p.pos[0], &i)) != CHAN_OK) {
		rv = cli_fail("stat", s);
	} else if (g->json) {
		char *j = cli_stat_json(&i);

		cli_out_take("stat", j, j != NULL ? strlen(j) : 0);
	} else {
		if (i.bounded) {
			snprintf(cap, sizeof(cap), "%" PRIu64, i.capacity);
		} else {
			snprintf(cap, sizeof(cap), "unbounded");
		}
		cli_outf("stat",
		    "name: %s\ncapacity: %s\ndepth: %" PRIu64 "\nbytes: %" PRIu64
		    "\nclosed: %s\nreceiver_attached: %s\nreceiver_pid: %d\nsenders: %u"
		    "\nblocked_senders: %u\nblocked_receivers: %u\ntotal_sent: %" PRIu64
		    "\ntotal_received: %" PRIu64 "\ntotal_dropped: %" PRIu64 "\nin_flight: %" PRIu64
		    "\ntotal_redelivered: %" PRIu64 "\n",
		    i.name, cap, i.depth, i.bytes, i.closed ? "true" : "false",
		    i.receiver_attached ? "true" : "false", (int) i.receiver_pid, i.senders,
		    i.blocked_senders, i.blocked_receivers, i.total_sent, i.total_received,
		    i.total_dropped, i.in_flight, i.total_redelivered);
	}
	cli_parser_fini(&p);
	cli_disconnect(c);
	return (rv);
}

int
cli_cmd_create(cli_global *g, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "capacity", required_argument, NULL, 'c' },
		{ "rendezvous", no_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	cli_parser   p;
	chan_client *c = NULL;
	int64_t      capacity = CHAN_UNBOUNDED;
	uint64_t     n;
	bool         have_cap = false, rendezvous = false;
	chan_status  s;
	int          o, rv = -1;

	cli_parser_init(&p, g, cli_cmd_find("create"), argc, argv, "c:r", longopts);
	while (rv < 0 && (o = cli_parser_next(&p)) != -1) {
		switch (o) {
		case 'c':
			if (!cli_parse_u64(p.optarg, &n) || n > INT64_MAX) {
				rv = cli_usage("create", "--capacity: '%s' is not a number >= 0", p.optarg);
			}
			capacity = (int64_t) n;
			have_cap = true;
			break;
		case 'r':
			rendezvous = true;
			break;
		case 'h':
			rv = 0;
			break;
		default:
			rv = p.bad != 0 ? p.bad : CLI_EXIT_USAGE;
			break;
		}
	}
	if (rv < 0) {
		if (have_cap && rendezvous) {
			rv = cli_usage("create", "--capacity and --rendezvous exclude each other");
		} else if (p.npos != 1) {
			rv = p.npos == 0 ? cli_usage("create", "missing NAME")
			                 : cli_usage("create", "unexpected argument '%s'", p.pos[1]);
		} else if ((rv = cli_check_name("create", p.pos[0])) == 0 &&
		    (rv = cli_connect(g, "create", &c)) == 0) {
			if (rendezvous) {
				capacity = CHAN_RENDEZVOUS;
			}
			if ((s = chan_create(c, p.pos[0], capacity)) != CHAN_OK) {
				rv = cli_fail("create", s);
			}
			cli_disconnect(c);
		}
	}
	cli_parser_fini(&p);
	return (rv);
}

/* close and delete: NAME, no output. */
static int
cli_name_cmd(cli_global *g, int argc, char **argv, const char *name,
    chan_status (*fn)(chan_client *, const char *))
{
	cli_parser   p;
	chan_client *c;
	chan_status  s;
	int          rv;

	cli_parser_init(&p, g, cli_cmd_find(name), argc, argv, "", NULL);
	if ((rv = cli_simple_args(&p, 1)) >= 0 || (rv = cli_check_name(name, p.pos[0])) != 0 ||
	    (rv = cli_connect(g, name, &c)) != 0) {
		cli_parser_fini(&p);
		return (rv);
	}
	if ((s = fn(c, p.pos[0])) != CHAN_OK) {
		rv = cli_fail(name, s);
	}
	cli_parser_fini(&p);
	cli_disconnect(c);
	return (rv);
}

int
cli_cmd_close(cli_global *g, int argc, char **argv)
{
	return (cli_name_cmd(g, argc, argv, "close", chan_close));
}

int
cli_cmd_delete(cli_global *g, int argc, char **argv)
{
	return (cli_name_cmd(g, argc, argv, "delete", chan_delete));
}
