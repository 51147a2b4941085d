/* cmd_counter.c - chan counter add|get|set|cas|wait|list|delete. */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "format.h"
#include "out.h"

typedef struct cli_counter_sub {
	const char *name;
	int         min_args; /* after the subcommand */
	int         max_args;
	const char *usage;
} cli_counter_sub;

static const cli_counter_sub cli_counter_subs[] = {
	{ "add", 1, INT_MAX, "NAME [DELTA...]" },
	{ "get", 1, 1, "NAME" },
	{ "set", 2, 2, "NAME V" },
	{ "cas", 3, 3, "NAME EXPECTED NEW" },
	{ "wait", 3, 3, "NAME OP VALUE" },
	{ "list", 0, 0, "" },
	{ "delete", 1, 1, "NAME" },
	{ NULL, 0, 0, NULL },
};

/* Prints "VALUE\n" or {"name":..,KEY:VALUE}. */
static void
cli_counter_print(const cli_global *g, const char *what, const char *name, const char *key,
    int64_t v)
{
	if (g->json) {
		char *j = cli_counter_json(name, key, v);

		cli_out_take(what, j, j != NULL ? strlen(j) : 0);
	} else {
		cli_outf(what, "%" PRId64 "\n", v);
	}
}

static int
cli_counter_num(const char *what, const char *arg, const char *label, int64_t *v)
{
	if (!cli_parse_i64(cli_arg(arg), v)) {
		return (cli_usage(what, "%s '%s' is not a 64-bit integer", label, cli_arg(arg)));
	}
	return (0);
}

static int
cli_counter_list(const cli_global *g, chan_client *c)
{
	chan_counter_info *infos;
	chan_status        s;
	size_t             n, k;

	if ((s = chan_counter_list(c, &infos, &n)) != CHAN_OK) {
		return (cli_fail("counter list", s));
	}
	for (k = 0; k < n; k++) {
		if (g->json) {
			char *j = cli_counter_json(infos[k].name, "value", infos[k].value);

			cli_out_take("counter list", j, j != NULL ? strlen(j) : 0);
		} else {
			cli_outf("counter list", "%s\t%" PRId64 "\n", infos[k].name, infos[k].value);
		}
	}
	chan_counter_list_free(infos);
	return (0);
}

/* A subcommand's numbers and operator, checked before connecting. */
typedef struct cli_counter_args {
	const char  *name;
	int64_t      a; /* DELTA, V, EXPECTED, VALUE */
	int64_t      b; /* NEW */
	chan_wait_op op;
	int64_t     *deltas; /* add with several DELTAs: all of them */
	size_t       ndeltas;
} cli_counter_args;

/* Returns 0, or the usage exit code. args[] are the positional arguments. */
static int
cli_counter_parse(const char *sub, char **args, cli_counter_args *ca)
{
	char what[32];
	int  rv = 0;

	snprintf(what, sizeof(what), "counter %s", sub);
	ca->name = args[0] != NULL ? cli_arg(args[0]) : NULL;
	ca->a = 1;
	ca->b = 0;
	ca->op = CHAN_WAIT_EQ;
	ca->deltas = NULL;
	ca->ndeltas = 0;
	if (strcmp(sub, "add") == 0 && args[1] != NULL && args[2] != NULL) {
		/* Several: one request (chan_counter_add_n), one value printed each. */
		while (args[ca->ndeltas + 1] != NULL) {
			ca->ndeltas++;
		}
		if ((ca->deltas = calloc(ca->ndeltas, sizeof(*ca->deltas))) == NULL) {
			fprintf(stderr, "chan: %s: out of memory\n", what);
			return (chan_status_exit_code(CHAN_RESOURCE_EXHAUSTED));
		}
		for (size_t i = 0; i < ca->ndeltas && rv == 0; i++) {
			rv = cli_counter_num(what, args[i + 1], "DELTA", &ca->deltas[i]);
		}
	} else if (strcmp(sub, "add") == 0 && args[1] != NULL) {
		rv = cli_counter_num(what, args[1], "DELTA", &ca->a);
	} else if (strcmp(sub, "set") == 0) {
		rv = cli_counter_num(what, args[1], "V", &ca->a);
	} else if (strcmp(sub, "cas") == 0) {
		if ((rv = cli_counter_num(what, args[1], "EXPECTED", &ca->a)) == 0) {
			rv = cli_counter_num(what, args[2], "NEW", &ca->b);
		}
	} else if (strcmp(sub, "wait") == 0) {
		if (!cli_parse_wait_op(cli_arg(args[1]), &ca->op)) {
			return (cli_usage(what, "OP '%s' is not one of == != < <= > >=",
			    cli_arg(args[1])));
		}
		rv = cli_counter_num(what, args[2], "VALUE", &ca->a);
	}
	return (rv);
}

/* counter add NAME DELTA DELTA...: the value after each add, a line each. */
static int
cli_counter_add_n(const cli_global *g, chan_client *c, const char *name,
    const cli_counter_args *ca)
{
	int64_t    *vals;
	chan_status s;

	if ((vals = calloc(ca->ndeltas, sizeof(*vals))) == NULL) {
		fprintf(stderr, "chan: counter add: out of memory\n");
		return (chan_status_exit_code(CHAN_RESOURCE_EXHAUSTED));
	}
	s = chan_counter_add_n(c, name, ca->deltas, ca->ndeltas, vals);
	if (s == CHAN_OK) {
		for (size_t i = 0; i < ca->ndeltas; i++) {
			cli_counter_print(g, "counter add", name, "value", vals[i]);
		}
	}
	free(vals);
	return (s == CHAN_OK ? 0 : cli_fail("counter add", s));
}

/* Runs one parsed subcommand. */
static int
cli_counter_run(const cli_global *g, chan_client *c, const char *sub, const cli_counter_args *ca)
{
	char        what[32];
	const char *name = ca->name;
	int64_t     v = 0;
	bool        swapped;
	chan_status s;

	snprintf(what, sizeof(what), "counter %s", sub);
	if (strcmp(sub, "list") == 0) {
		return (cli_counter_list(g, c));
	}
	if (strcmp(sub, "add") == 0 && ca->ndeltas > 0) {
		return (cli_counter_add_n(g, c, name, ca));
	} else if (strcmp(sub, "add") == 0) {
		if ((s = chan_counter_add(c, name, ca->a, &v)) != CHAN_OK) {
			return (cli_fail(what, s));
		}
		cli_counter_print(g, what, name, "value", v);
	} else if (strcmp(sub, "get") == 0) {
		if ((s = chan_counter_get(c, name, &v)) != CHAN_OK) {
			return (cli_fail(what, s));
		}
		cli_counter_print(g, what, name, "value", v);
	} else if (strcmp(sub, "set") == 0) {
		if ((s = chan_counter_set(c, name, ca->a, &v)) != CHAN_OK) {
			return (cli_fail(what, s));
		}
		cli_counter_print(g, what, name, "old_value", v);
	} else if (strcmp(sub, "cas") == 0) {
		if ((s = chan_counter_cas(c, name, ca->a, ca->b, &swapped, &v)) != CHAN_OK) {
			return (cli_fail(what, s));
		}
		if (g->json) {
			char *j = cli_cas_json(name, swapped, v);

			cli_out_take(what, j, j != NULL ? strlen(j) : 0);
		} else {
			cli_outf(what, "%" PRId64 "\n", v);
		}
		return (swapped ? 0 : 1);
	} else if (strcmp(sub, "wait") == 0) {
		s = chan_counter_wait(c, name, ca->op, ca->a, cli_timeout(g, CHAN_WAIT_FOREVER), &v);
		if (s != CHAN_OK) {
			return (cli_fail(what, s));
		}
		cli_counter_print(g, what, name, "value", v);
	} else {
		if ((s = chan_counter_delete(c, name)) != CHAN_OK) {
			return (cli_fail(what, s));
		}
	}
	return (0);
}

int
cli_cmd_counter(cli_global *g, int argc, char **argv)
{
	const cli_counter_sub *sub;
	cli_counter_args       ca = { 0 }; /* out: frees ca.deltas */
	char                   what[32];
	cli_parser             p;
	chan_client           *c;
	char                 **args;
	int                    o, n, rv = -1;

	/* "counter add x -5": -5 is a number, not an option. */
	if ((args = cli_args_protect(argc, argv)) == NULL) {
		fprintf(stderr, "chan: counter: out of memory\n");
		return (chan_status_exit_code(CHAN_RESOURCE_EXHAUSTED));
	}
	cli_parser_init(&p, g, cli_cmd_find("counter"), argc, args, "", NULL);
	while (rv < 0 && (o = cli_parser_next(&p)) != -1) {
		rv = (o == 'h') ? 0 : (p.bad != 0 ? p.bad : CLI_EXIT_USAGE);
	}
	if (rv >= 0) {
		goto out;
	}
	if (p.npos == 0) {
		rv = cli_usage("counter", "missing subcommand (add get set cas wait list delete)");
		goto out;
	}
	for (sub = cli_counter_subs; sub->name != NULL; sub++) {
		if (strcmp(sub->name, cli_arg(p.pos[0])) == 0) {
			break;
		}
	}
	if (sub->name == NULL) {
		rv = cli_usage("counter", "unknown subcommand '%s'", cli_arg(p.pos[0]));
		goto out;
	}
	n = p.npos - 1;
	if (n < sub->min_args || n > sub->max_args) {
		snprintf(what, sizeof(what), "counter %s", sub->name);
		rv = cli_usage(what, "usage: chan counter %s %s", sub->name, sub->usage);
		goto out;
	}
	p.pos[p.npos] = NULL;
	snprintf(what, sizeof(what), "counter %s", sub->name);
	if ((rv = cli_counter_parse(sub->name, p.pos + 1, &ca)) != 0 ||
	    (ca.name != NULL && (rv = cli_check_name(what, ca.name)) != 0)) {
		goto out;
	}
	if ((rv = cli_connect(g, what, &c)) != 0) {
		goto out;
	}
	rv = cli_counter_run(g, c, sub->name, &ca);
	cli_disconnect(c);
out:
	free(ca.deltas);
	cli_parser_fini(&p);
	cli_args_free(argc, args);
	return (rv);
}
