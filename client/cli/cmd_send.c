/*
 * cmd_send.c - chan send: arguments, stdin lines, NUL records or raw stdin.
 *
 * Arguments and records go through a chan_producer: it copies each one and
 * sends them in all-or-nothing batches of at most max_batch messages (capped
 * to a bounded channel's capacity) and about max_message_size payload
 * bytes, one batch in flight while the next fills, so reading stdin
 * overlaps the round trips. A lone line goes at once when nothing is in
 * flight (interactive use sees each line sent as it is typed). The first
 * failed batch stops everything after it (stop_on_failure): what went
 * before stays sent, nothing after a gap is. A record larger than
 * max_message_size cannot exist (the daemon refuses it), so it is refused
 * here, after what came before it was sent.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define CLI_READ_CHUNK (64u * 1024u)

typedef struct cli_send {
	chan_client   *c;
	const char    *name;
	int64_t        timeout_ms;
	chan_producer *p;
	size_t         budget; /* max_message_size */
} cli_send;

static void
cli_send_init(cli_send *s, chan_client *c, const char *name, int64_t timeout_ms)
{
	memset(s, 0, sizeof(*s));
	s->c = c;
	s->name = name;
	s->timeout_ms = timeout_ms;
	s->budget = (size_t) chan_max_message_size(c);
}

static int
cli_send_open(cli_send *s)
{
	chan_producer_opts o;
	chan_status        st;

	chan_producer_opts_init(&o);
	o.max_batch_bytes = s->budget;
	o.timeout_ms = s->timeout_ms;
	o.stop_on_failure = true;
	if ((st = chan_producer_open(s->c, s->name, &o, &s->p)) != CHAN_OK) {
		return (cli_fail("send", st));
	}
	return (0);
}

/* cli_fail, then how many messages earlier batches did send (they stay sent). */
static int
cli_fail_after(const char *cmd, chan_status s, uint64_t sent)
{
	int rv = cli_fail(cmd, s);

	if (sent > 0 && rv < 128) {
		fprintf(stderr, "chan: %s: the %llu messages before this batch were sent\n", cmd,
		    (unsigned long long) sent);
	}
	return (rv);
}

/*
 * Waits for every batch; the first failure (if any) decides the exit code
 * and is reported with how many messages went before it. 0 when all went.
 */
static int
cli_send_settle(cli_send *s)
{
	chan_status st = chan_producer_flush(s->p, CHAN_WAIT_FOREVER);

	return (st == CHAN_OK ? 0 : cli_fail_after("send", st, chan_producer_accepted(s->p)));
}

/* Ends the producer (everything given is settled by then). */
static void
cli_send_close(cli_send *s)
{
	(void) chan_producer_close(s->p);
	s->p = NULL;
}

/* One message; a refusal means an earlier batch failed: report that one. */
static int
cli_send_one(cli_send *s, const void *data, size_t len)
{
	if (chan_producer_send(s->p, data, len, NULL) != CHAN_OK) {
		int rv = cli_send_settle(s);

		return (rv != 0 ? rv : cli_fail("send", CHAN_INTERNAL));
	}
	return (0);
}

/* A record over max_message_size: what came before is sent (or its failure told) first. */
static int
cli_too_large(cli_send *s, const char *what, uint64_t idx, size_t len)
{
	int rv;

	if ((rv = cli_send_settle(s)) != 0) {
		return (rv);
	}
	fprintf(stderr,
	    "chan: send: %s %llu is %zu bytes, over the daemon's maximum of %zu bytes"
	    " (%llu messages before it were sent)\n",
	    what, (unsigned long long) idx, len, s->budget,
	    (unsigned long long) chan_producer_accepted(s->p));
	return (chan_status_exit_code(CHAN_TOO_LARGE));
}

/* MSG arguments: all known at once, so a too-large one is refused before any is sent. */
static int
cli_send_args(cli_send *s, int n, char **msgs)
{
	int i, rv;

	for (i = 0; i < n; i++) {
		size_t len = strlen(msgs[i]);

		if (len > s->budget) {
			return (cli_too_large(s, "message", (uint64_t) i + 1, len));
		}
	}
	for (i = 0; i < n; i++) {
		if ((rv = cli_send_one(s, msgs[i], strlen(msgs[i]))) != 0) {
			return (rv);
		}
	}
	return (cli_send_settle(s));
}

/* Lines (term '\n') or NUL records (term '\0') from stdin. */
static int
cli_send_stream(cli_send *s, char term)
{
	const char *what = term == '\n' ? "line" : "record";
	size_t      cap = 4 * CLI_READ_CHUNK, have = 0, start, scan = 0;
	uint64_t    recno = 0;
	char       *buf = malloc(cap), *e, *n;
	ssize_t     got;
	int         rv = 0;

	if (buf == NULL) {
		return (cli_oom("send"));
	}
	for (;;) {
		if (cap - have < CLI_READ_CHUNK) {
			if ((n = realloc(buf, cap * 2)) == NULL) {
				rv = cli_oom("send");
				goto out;
			}
			buf = n;
			cap *= 2;
		}
		if ((got = read(0, buf + have, cap - have)) < 0) {
			if (errno == EINTR) {
				continue;
			}
			fprintf(stderr, "chan: send: cannot read stdin: %s\n", strerror(errno));
			rv = CLI_EXIT_IOERR;
			goto out;
		}
		if (got == 0) {
			break;
		}
		have += (size_t) got;
		start = 0;
		while ((e = memchr(buf + scan, term, have - scan)) != NULL) {
			size_t end = (size_t) (e - buf);

			recno++;
			if (end - start > s->budget) {
				rv = cli_too_large(s, what, recno, end - start);
				goto out;
			}
			if ((rv = cli_send_one(s, buf + start, end - start)) != 0) {
				goto out;
			}
			start = scan = end + 1;
		}
		if (have - start > s->budget) {
			rv = cli_too_large(s, what, recno + 1, have - start);
			goto out;
		}
		/* The producer copied the records: keep only the partial one. */
		memmove(buf, buf + start, have - start);
		have -= start;
		scan = have;
	}
	/* A last record without terminator still counts. */
	if (have > 0 && (rv = cli_send_one(s, buf, have)) != 0) {
		goto out;
	}
	rv = cli_send_settle(s);
out:
	free(buf);
	return (rv);
}

static int
cli_raw_too_large(const cli_send *s, size_t len)
{
	fprintf(stderr,
	    "chan: send: message 1 is %zu bytes, over the daemon's maximum of %zu bytes"
	    " (0 messages before it were sent)\n",
	    len, s->budget);
	return (chan_status_exit_code(CHAN_TOO_LARGE));
}

/* All of stdin as one message (no producer: one request). */
static int
cli_send_raw(cli_send *b)
{
	size_t      cap = CLI_READ_CHUNK, have = 0;
	char       *buf = malloc(cap), *n;
	ssize_t     got;
	chan_status s;
	int         rv = 0;

	for (;;) {
		if (buf == NULL) {
			return (cli_oom("send"));
		}
		if (have == cap) {
			if (have > b->budget) {
				rv = cli_raw_too_large(b, have);
				goto out;
			}
			if ((n = realloc(buf, cap * 2)) == NULL) {
				free(buf);
				return (cli_oom("send"));
			}
			buf = n;
			cap *= 2;
		}
		if ((got = read(0, buf + have, cap - have)) < 0) {
			if (errno == EINTR) {
				continue;
			}
			fprintf(stderr, "chan: send: cannot read stdin: %s\n", strerror(errno));
			rv = CLI_EXIT_IOERR;
			goto out;
		}
		if (got == 0) {
			break;
		}
		have += (size_t) got;
	}
	if (have > b->budget) {
		rv = cli_raw_too_large(b, have);
		goto out;
	}
	if ((s = chan_send(b->c, b->name, buf, have, b->timeout_ms)) != CHAN_OK) {
		rv = cli_fail("send", s);
	}
out:
	free(buf);
	return (rv);
}

int
cli_cmd_send(cli_global *g, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "null", no_argument, NULL, '0' },
		{ "raw", no_argument, NULL, 'r' },
		{ "try", no_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	cli_parser   p;
	cli_send     b;
	chan_client *c;
	bool         nul = false, raw = false, try_ = false;
	int          o, rv = -1;

	cli_parser_init(&p, g, cli_cmd_find("send"), argc, argv, "0", longopts);
	while (rv < 0 && (o = cli_parser_next(&p)) != -1) {
		switch (o) {
		case '0':
			nul = true;
			break;
		case 'r':
			raw = true;
			break;
		case 't':
			try_ = true;
			break;
		case 'h':
			rv = 0;
			break;
		default:
			rv = p.bad != 0 ? p.bad : CLI_EXIT_USAGE;
			break;
		}
	}
	if (rv >= 0) {
		goto out;
	}
	if (p.npos == 0) {
		rv = cli_usage("send", "missing NAME");
		goto out;
	}
	if (nul && raw) {
		rv = cli_usage("send", "-0 and --raw exclude each other");
		goto out;
	}
	if ((nul || raw) && p.npos > 1) {
		rv = cli_usage("send", "-0 and --raw read stdin; they take no MSG arguments");
		goto out;
	}
	if ((rv = cli_check_name("send", p.pos[0])) != 0 || (rv = cli_connect(g, "send", &c)) != 0) {
		goto out;
	}
	cli_send_init(&b, c, p.pos[0], try_ ? 0 : cli_timeout(g, CHAN_WAIT_FOREVER));
	if (raw) {
		rv = cli_send_raw(&b);
	} else if ((rv = cli_send_open(&b)) == 0) {
		rv = p.npos > 1 ? cli_send_args(&b, p.npos - 1, p.pos + 1)
		                : cli_send_stream(&b, nul ? '\0' : '\n');
		cli_send_close(&b);
	}
	cli_disconnect(c);
out:
	cli_parser_fini(&p);
	return (rv);
}
