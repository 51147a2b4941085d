/* out.c - whole records to stdout, EPIPE handled. */
#define _GNU_SOURCE /* vasprintf */
#include "out.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void
cli_out_failed(const char *cmd, int err)
{
	if (err == EPIPE) {
		_exit(CLI_EXIT_PIPE);
	}
	fprintf(stderr, "chan: %s: cannot write to stdout: %s\n", cmd, strerror(err));
	/* No chan_disconnect: unprinted messages must stay with the daemon. */
	_exit(CLI_EXIT_IOERR);
}

void
cli_out(const char *cmd, const void *buf, size_t len)
{
	errno = 0;
	if ((len > 0 && fwrite(buf, 1, len, stdout) != len) || fflush(stdout) != 0) {
		cli_out_failed(cmd, errno != 0 ? errno : EIO);
	}
}

void
cli_out_take(const char *cmd, char *buf, size_t len)
{
	if (buf == NULL) {
		fprintf(stderr, "chan: %s: out of memory\n", cmd);
		_exit(chan_status_exit_code(CHAN_RESOURCE_EXHAUSTED));
	}
	cli_out(cmd, buf, len);
	free(buf);
}

void
cli_outf(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	char   *s = NULL;
	int     n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	cli_out_take(cmd, n < 0 ? NULL : s, n < 0 ? 0 : (size_t) n);
}
