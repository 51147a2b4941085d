/* args.c - numbers, wait operators and negative-number protection. */
#include "args.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CLI_ARG_MARK '\x01'

bool
cli_parse_i64(const char *s, int64_t *v)
{
	char     *end;
	long long x;

	if (s == NULL || *s == '\0') {
		return (false);
	}
	errno = 0;
	x = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || end == s) {
		return (false);
	}
	*v = (int64_t) x;
	return (true);
}

bool
cli_parse_u64(const char *s, uint64_t *v)
{
	char              *end;
	unsigned long long x;

	/* strtoull accepts "-1" as a huge number: refuse any sign. */
	if (s == NULL || *s < '0' || *s > '9') {
		return (false);
	}
	errno = 0;
	x = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0') {
		return (false);
	}
	*v = (uint64_t) x;
	return (true);
}

bool
cli_parse_wait_op(const char *s, chan_wait_op *op)
{
	static const struct {
		const char  *sym;
		const char  *word;
		chan_wait_op op;
	} ops[] = {
		{ "==", "eq", CHAN_WAIT_EQ }, { "!=", "ne", CHAN_WAIT_NE },
		{ "<", "lt", CHAN_WAIT_LT },  { "<=", "le", CHAN_WAIT_LE },
		{ ">", "gt", CHAN_WAIT_GT },  { ">=", "ge", CHAN_WAIT_GE },
	};
	size_t i;

	if (s == NULL) {
		return (false);
	}
	for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		if (strcmp(s, ops[i].sym) == 0 || strcasecmp(s, ops[i].word) == 0) {
			*op = ops[i].op;
			return (true);
		}
	}
	if (strcmp(s, "=") == 0) {
		*op = CHAN_WAIT_EQ;
		return (true);
	}
	return (false);
}

static bool
cli_is_negative_number(const char *s)
{
	int64_t v;

	return (s[0] == '-' && s[1] >= '0' && s[1] <= '9' && cli_parse_i64(s, &v));
}

char **
cli_args_protect(int argc, char **argv)
{
	char **out;
	int    i;

	if ((out = calloc((size_t) argc + 1, sizeof(*out))) == NULL) {
		return (NULL);
	}
	for (i = 0; i < argc; i++) {
		if (i > 0 && cli_is_negative_number(argv[i])) {
			size_t n = strlen(argv[i]);

			if ((out[i] = malloc(n + 2)) == NULL) {
				cli_args_free(i, out);
				return (NULL);
			}
			out[i][0] = CLI_ARG_MARK;
			memcpy(out[i] + 1, argv[i], n + 1);
		} else {
			out[i] = argv[i];
		}
	}
	return (out);
}

void
cli_args_free(int argc, char **argv)
{
	int i;

	if (argv == NULL) {
		return;
	}
	for (i = 0; i < argc; i++) {
		if (argv[i] != NULL && argv[i][0] == CLI_ARG_MARK) {
			free(argv[i]);
		}
	}
	free(argv);
}

const char *
cli_arg(const char *s)
{
	return ((s != NULL && s[0] == CLI_ARG_MARK) ? s + 1 : s);
}
