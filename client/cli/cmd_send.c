/*
 * cmd_send.c - chan send: arguments, stdin lines, NUL records or raw stdin,
 * sent in all-or-nothing batches of at most max_batch messages and at most
 * max_message_size payload bytes (a single larger-than-that message cannot
 * exist: the daemon refuses it, so it is refused here first).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define CLI_READ_CHUNK (64u * 1024u)

/* A batch being filled; records are offsets into a buffer that may move. */
typedef struct cli_batch {
	chan_client *c;
	const char  *name;
	int64_t      timeout_ms;
	size_t      *off;
	size_t      *len;
	chan_buf    *bufs;
	size_t       n;
	size_t       max;    /* max_batch */
	size_t       bytes;
	size_t       budget; /* max_message_size */
	uint64_t     sent;
} cli_batch;

static int
cli_batch_init(cli_batch *b, chan_client *c, const char *name, int64_t timeout_ms)
{
	memset(b, 0, sizeof(*b));
	b->c = c;
	b->name = name;
	b->timeout_ms = timeout_ms;
	b->max = chan_max_batch(c);
	b->budget = (size_t) chan_max_message_size(c);
	b->off = calloc(b->max, sizeof(*b->off));
	b->len = calloc(b->max, sizeof(*b->len));
	b->bufs = calloc(b->max, sizeof(*b->bufs));
	return (b->off != NULL && b->len != NULL && b->bufs != NULL ? 0 : -1);
}

static void
cli_batch_fini(cli_batch *b)
{
	free(b->off);
	free(b->len);
	free(b->bufs);
}

/* Sends what the batch holds; base is the buffer the offsets point into. */
static chan_status
cli_batch_flush(cli_batch *b, const char *base)
{
	chan_status s;
	size_t      i;

	if (b->n == 0) {
		return (CHAN_OK);
	}
	for (i = 0; i < b->n; i++) {
		b->bufs[i].data = base + b->off[i];
		b->bufs[i].len = b->len[i];
	}
	s = chan_send_batch(b->c, b->name, b->bufs, b->n, b->timeout_ms, NULL);
	if (s == CHAN_OK) {
		b->sent += b->n;
	}
	b->n = 0;
	b->bytes = 0;
	return (s);
}

/* Adds one record, sending the batch first when it would overflow. */
static chan_status
cli_batch_add(cli_batch *b, const char *base, size_t off, size_t len)
{
	chan_status s;

	if (b->n == b->max || (b->n > 0 && b->bytes + len > b->budget)) {
		if ((s = cli_batch_flush(b, base)) != CHAN_OK) {
			return (s);
		}
	}
	b->off[b->n] = off;
	b->len[b->n] = len;
	b->n++;
	b->bytes += len;
	return (CHAN_OK);
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

static int
cli_too_large(const char *what, uint64_t idx, size_t len, const cli_batch *b)
{
	fprintf(stderr,
	    "chan: send: %s %llu is %zu bytes, over the daemon's maximum of %zu bytes"
	    " (%llu messages before it were sent)\n",
	    what, (unsigned long long) idx, len, b->budget, (unsigned long long) b->sent);
	return (chan_status_exit_code(CHAN_TOO_LARGE));
}

static int
cli_send_args(cli_batch *b, int n, char **msgs)
{
	chan_status s;
	size_t      k = 0, bytes = 0;
	int         i;

	for (i = 0; i < n; i++) {
		size_t len = strlen(msgs[i]);

		if (len > b->budget) {
			return (cli_too_large("message", (uint64_t) i + 1, len, b));
		}
		if (k == b->max || (k > 0 && bytes + len > b->budget)) {
			if ((s = chan_send_batch(b->c, b->name, b->bufs, k, b->timeout_ms, NULL)) != CHAN_OK) {
				return (cli_fail_after("send", s, b->sent));
			}
			b->sent += k;
			k = 0;
			bytes = 0;
		}
		b->bufs[k].data = msgs[i];
		b->bufs[k].len = len;
		k++;
		bytes += len;
	}
	if ((s = chan_send_batch(b->c, b->name, b->bufs, k, b->timeout_ms, NULL)) != CHAN_OK) {
		return (cli_fail_after("send", s, b->sent));
	}
	return (0);
}

/* More input readable right now (so the batch may grow before sending)? */
static bool
cli_stdin_ready(void)
{
	struct pollfd pfd = { .fd = 0, .events = POLLIN };

	return (poll(&pfd, 1, 0) == 1);
}

/* Makes room for a read: compacts consumed bytes away (batch empty) or grows. */
static int
cli_room(char **buf, size_t *cap, size_t *have, size_t *start, size_t *scan, const cli_batch *b)
{
	char *n;

	if (*cap - *have >= CLI_READ_CHUNK) {
		return (0);
	}
	if (b->n == 0 && *start > 0) {
		memmove(*buf, *buf + *start, *have - *start);
		*have -= *start;
		*scan -= *start;
		*start = 0;
		if (*cap - *have >= CLI_READ_CHUNK) {
			return (0);
		}
	}
	if ((n = realloc(*buf, *cap * 2)) == NULL) {
		return (-1);
	}
	*buf = n;
	*cap *= 2;
	return (0);
}

/* Lines (term '\n') or NUL records (term '\0') from stdin. */
static int
cli_send_stream(cli_batch *b, char term)
{
	size_t      cap = 4 * CLI_READ_CHUNK, have = 0, start = 0, scan = 0;
	uint64_t    recno = 0;
	char       *buf = malloc(cap);
	char       *e;
	ssize_t     got;
	chan_status s = CHAN_OK;
	int         rv = 0;

	if (buf == NULL) {
		return (cli_oom("send"));
	}
	for (;;) {
		if (cli_room(&buf, &cap, &have, &start, &scan, b) != 0) {
			fprintf(stderr, "chan: send: out of memory\n");
			rv = chan_status_exit_code(CHAN_RESOURCE_EXHAUSTED);
			goto out;
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
		while ((e = memchr(buf + scan, term, have - scan)) != NULL) {
			size_t end = (size_t) (e - buf);

			recno++;
			if (end - start > b->budget) {
				rv = cli_too_large(term == '\n' ? "line" : "record", recno, end - start, b);
				goto out;
			}
			if ((s = cli_batch_add(b, buf, start, end - start)) != CHAN_OK) {
				goto out;
			}
			start = scan = end + 1;
		}
		scan = have;
		if (have - start > b->budget) {
			rv = cli_too_large(term == '\n' ? "line" : "record", recno + 1, have - start, b);
			goto out;
		}
		if (b->n > 0 && (b->n == b->max || !cli_stdin_ready())) {
			if ((s = cli_batch_flush(b, buf)) != CHAN_OK) {
				goto out;
			}
		}
	}
	/* A last record without terminator still counts. */
	if (have > start && (s = cli_batch_add(b, buf, start, have - start)) != CHAN_OK) {
		goto out;
	}
	s = cli_batch_flush(b, buf);
out:
	if (s != CHAN_OK) {
		rv = cli_fail_after("send", s, b->sent);
	}
	free(buf);
	return (rv);
}

/* All of stdin as one message. */
static int
cli_send_raw(cli_batch *b)
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
				rv = cli_too_large("message", 1, have, b);
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
		rv = cli_too_large("message", 1, have, b);
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
	cli_batch    b;
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
	if (cli_batch_init(&b, c, p.pos[0], try_ ? 0 : cli_timeout(g, CHAN_WAIT_FOREVER)) != 0) {
		rv = cli_oom("send");
	} else if (p.npos > 1) {
		rv = cli_send_args(&b, p.npos - 1, p.pos + 1);
	} else if (raw) {
		rv = cli_send_raw(&b);
	} else {
		rv = cli_send_stream(&b, nul ? '\0' : '\n');
	}
	cli_batch_fini(&b);
	cli_disconnect(c);
out:
	cli_parser_fini(&p);
	return (rv);
}
