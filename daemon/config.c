/* config.c - defaults, `key = value` config file and command line. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "nng_threads.h"

#define CHD_MAX_WORKERS 256
#define CHD_MAX_BATCH_LIMIT 65536u
#define CHD_MAX_MESSAGE_LIMIT (1024ull * 1024u * 1024u)
#define CHD_MAX_REQUEST_LIMIT (4ull * 1024u * 1024u * 1024u)
#define CHD_MAX_ARGS 256
#define CHD_MAX_CONNECTIONS 1000000u

static const char chd_usage_text[] =
    "Usage: chand [OPTION]...\n"
    "Serve named channels and counters over nng (see chand(8)).\n"
    "\n"
    "  -l, --listen URL            listen on URL (ipc://PATH, tcp://HOST:PORT,\n"
    "                              tls+tcp://HOST:PORT); repeat for several;\n"
    "                              default " CHAN_DEFAULT_URL "\n"
    "  -c, --config FILE           read `key = value` settings from FILE first;\n"
    "                              options given here override it\n"
    "  -w, --workers N             engine worker threads (default %d)\n"
    "      --io-threads N          nng threads that read, write and run requests\n"
    "                              of tls+tcp:// (all URLs with --no-sp-direct)\n"
    "                              (2 to 16, odd rounds up; default %d: 1 per CPU)\n"
    "      --max-message-size BYTES\n"
    "                              largest payload (default %" PRIu64 " bytes;\n"
    "                              K/M/G suffixes)\n"
    "      --max-batch N           messages per send/recv request (default %" PRIu32 ")\n"
    "      --max-request-size BYTES\n"
    "                              largest request body accepted (default: a\n"
    "                              full batch, capped at 256M)\n"
    "      --no-auto-create        send/recv on a missing channel: NOT_FOUND\n"
    "      --no-sp-direct          serve ipc:// and tcp:// through nng's own\n"
    "                              listeners too (default: chand's own; the\n"
    "                              wire is the same, see chand(8))\n"
    "      --max-memory BYTES      payload bytes held daemon-wide before sends\n"
    "                              get RESOURCE_EXHAUSTED (default 1G; 0: none)\n"
    "      --max-connections N     client connections at once (default 0: any)\n"
    "      --max-pending N         requests in flight (parked waiters included)\n"
    "                              per connection (default %u; 0: any)\n"
    "      --max-channels N        channels daemon-wide (default %" PRIu64 "; 0: any)\n"
    "      --max-counters N        counters daemon-wide (default %" PRIu64 "; 0: any)\n"
    "      --socket-mode MODE      octal mode of ipc socket files (default: umask)\n"
    "      --socket-group GROUP    group (name or gid) of ipc socket files\n"
    "      --socket-dir-mode MODE  octal mode of a socket directory chand\n"
    "                              creates (default 0750)\n"
    "      --allow-uid UID,...     access control: these users (ids or names)\n"
    "                              may do everything; repeatable\n"
    "      --allow-gid GID,...     the same for peers with this primary group\n"
    "      --allow RULE            SUBJECT:OPS:PATTERN, e.g. uid=1001:send:jobs.*\n"
    "                              (see chand(8)); repeatable\n"
    "      --tls-cert FILE         PEM certificate (and key) for tls+tcp://\n"
    "      --tls-key FILE          PEM private key, if not in --tls-cert's file\n"
    "      --tls-ca FILE           PEM CA: tls+tcp clients need a certificate\n"
    "                              it signed\n"
    "      --log-level LEVEL       error, warn, info (default) or debug\n"
    "  -h, --help                  show this help and exit\n"
    "  -V, --version               show the version and exit\n"
    "\n"
    "Every option is also a config-file key without the dashes, e.g.\n"
    "`listen = tcp://127.0.0.1:7070`, `workers = 4`, `auto-create = no`;\n"
    "`config = FILE` reads FILE at that point.\n"
    "Exit status: 0 after SIGTERM/SIGINT, 1 cannot listen or start, 64 usage.\n";

/* One setting to apply: a key (as in the config file) and its value. */
typedef struct {
	const char *key;
	const char *val;
} chd_kv;

static void
chd_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void) vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int
chd_parse_u64(const char *s, uint64_t *out)
{
	char              *end;
	unsigned long long v;

	if (s == NULL || !isdigit((unsigned char) s[0])) {
		return (-1);
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0') {
		return (-1);
	}
	*out = v;
	return (0);
}

/* BYTES: a number with an optional K, M or G (binary) suffix, KiB or B. */
static int
chd_parse_bytes(const char *s, uint64_t *out)
{
	char              *end;
	unsigned long long v;
	uint64_t           mult = 1;

	if (s == NULL || !isdigit((unsigned char) s[0])) {
		return (-1);
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0) {
		return (-1);
	}
	switch (toupper((unsigned char) *end)) {
	case 'K':
		mult = 1024;
		end++;
		break;
	case 'M':
		mult = 1024 * 1024;
		end++;
		break;
	case 'G':
		mult = 1024 * 1024 * 1024;
		end++;
		break;
	default:
		break;
	}
	if (mult != 1 && (strcmp(end, "iB") == 0 || strcmp(end, "ib") == 0 ||
	                     strcmp(end, "B") == 0 || strcmp(end, "b") == 0)) {
		end += strlen(end);
	} else if (mult == 1 && (strcmp(end, "B") == 0 || strcmp(end, "b") == 0)) {
		end++;
	}
	if (*end != '\0' || v > UINT64_MAX / mult) {
		return (-1);
	}
	*out = v * mult;
	return (0);
}

static int
chd_parse_bool(const char *s, bool *out)
{
	static const char *yes[] = { "yes", "true", "on", "1" };
	static const char *no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return (0);
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return (0);
		}
	}
	return (-1);
}

/* A yes/no setting k, or its "no-" form (which sets the opposite). */
static int
chd_set_flag(bool *flag, const char *k, const char *key, const char *val,
    char *err, size_t errlen)
{
	bool b;

	if (chd_parse_bool(val, &b) != 0) {
		chd_errf(err, errlen,
		    "%s: '%s' is not a boolean (yes/no, true/false, on/off, 1/0)",
		    key, val);
		return (-1);
	}
	*flag = strncmp(k, "no-", 3) == 0 ? !b : b;
	return (0);
}

static int
chd_set_string(char **slot, const char *val, char *err, size_t errlen)
{
	char *s;

	if ((s = strdup(val)) == NULL) {
		chd_errf(err, errlen, "out of memory");
		return (-1);
	}
	free(*slot);
	*slot = s;
	return (0);
}

static int
chd_add_listen(chd_config *cfg, const char *url, char *err, size_t errlen)
{
	if (url[0] == '\0') {
		chd_errf(err, errlen, "listen: empty URL");
		return (-1);
	}
	/* The scheme is nng's to judge, at listen time (exit 1, not usage). */
	if (cfg->nlisten == CHD_MAX_LISTEN) {
		chd_errf(err, errlen, "listen: at most %d URLs", CHD_MAX_LISTEN);
		return (-1);
	}
	if ((cfg->listen[cfg->nlisten] = strdup(url)) == NULL) {
		chd_errf(err, errlen, "out of memory");
		return (-1);
	}
	cfg->nlisten++;
	return (0);
}

static void
chd_clear_listen(chd_config *cfg)
{
	for (size_t i = 0; i < cfg->nlisten; i++) {
		free(cfg->listen[i]);
		cfg->listen[i] = NULL;
	}
	cfg->nlisten = 0;
}

static int
chd_set_log_level(chd_config *cfg, const char *val)
{
	static const char *names[] = { "error", "warn", "info", "debug" };

	for (int i = 0; i < 4; i++) {
		if (strcasecmp(val, names[i]) == 0) {
			cfg->log_level = (chd_log_level) i;
			return (0);
		}
	}
	if (strcasecmp(val, "warning") == 0) {
		cfg->log_level = CHD_LOG_WARN;
		return (0);
	}
	return (-1);
}

static int
chd_parse_mode(const char *key, const char *val, int *out, char *err,
    size_t errlen)
{
	char *end;
	long  m;

	errno = 0;
	m = strtol(val, &end, 8);
	if (val[0] == '\0' || *end != '\0' || errno != 0 || m < 0 ||
	    m > 0777) {
		chd_errf(err, errlen,
		    "%s: '%s' is not an octal file mode (0000 to 0777)", key, val);
		return (-1);
	}
	*out = (int) m;
	return (0);
}

/* --socket-group: a gid or a group name, resolved now. */
static int
chd_set_group(chd_config *cfg, const char *key, const char *val, char *err,
    size_t errlen)
{
	struct group *g;
	uint64_t      u;

	if (chd_parse_u64(val, &u) == 0 && u < INT32_MAX) {
		cfg->socket_gid = (int) u;
		return (0);
	}
	if (val[0] == '\0' || (g = getgrnam(val)) == NULL) {
		chd_errf(err, errlen, "%s: unknown group '%s'", key, val);
		return (-1);
	}
	cfg->socket_gid = (int) g->gr_gid;
	return (0);
}

/* allow-uid, allow-gid, allow: rules add up (file, then command line). */
static int
chd_add_access(chd_config *cfg, const char *k, const char *key,
    const char *val, char *err, size_t errlen)
{
	char why[512];
	int  rv;

	if (cfg->access == NULL && (cfg->access = chd_access_new()) == NULL) {
		chd_errf(err, errlen, "out of memory");
		return (-1);
	}
	if (strcmp(k, "allow-uid") == 0) {
		rv = chd_access_allow_uids(cfg->access, val, why, sizeof(why));
	} else if (strcmp(k, "allow-gid") == 0) {
		rv = chd_access_allow_gids(cfg->access, val, why, sizeof(why));
	} else {
		rv = chd_access_allow_rule(cfg->access, val, why, sizeof(why));
	}
	if (rv != 0) {
		chd_errf(err, errlen, "%s: %s", key, why);
	}
	return (rv);
}

static int chd_config_read(chd_config *cfg, const char *path, char *err, size_t errlen);

/* `config = FILE` inside a file: how deep includes may nest (a loop stops here). */
#define CHD_MAX_INCLUDE 8
static int chd_include_depth;

/*
 * `config = FILE` in a config file reads FILE at that point, so --config,
 * like every other option, has a config-file key (SPEC).
 */
static int
chd_include(chd_config *cfg, const char *val, char *err, size_t errlen)
{
	int rv;

	if (chd_include_depth >= CHD_MAX_INCLUDE) {
		chd_errf(err, errlen, "config: files include each other more "
		    "than %d deep", CHD_MAX_INCLUDE);
		return (-1);
	}
	chd_include_depth++;
	rv = chd_config_read(cfg, val, err, errlen);
	chd_include_depth--;
	return (rv);
}

/*
 * Applies one setting. Keys are the long option names; '_' is accepted for
 * '-'. Returns 0, or -1 with err filled in.
 */
static int
chd_apply(chd_config *cfg, const char *key, const char *val, char *err,
    size_t errlen)
{
	char     k[64];
	uint64_t u;
	size_t   i;

	for (i = 0; key[i] != '\0' && i < sizeof(k) - 1; i++) {
		k[i] = key[i] == '_' ? '-' : (char) tolower((unsigned char) key[i]);
	}
	k[i] = '\0';

	if (strcmp(k, "listen") == 0) {
		return (chd_add_listen(cfg, val, err, errlen));
	}
	if (strcmp(k, "config") == 0) {
		return (chd_include(cfg, val, err, errlen));
	}
	if (strcmp(k, "workers") == 0) {
		if (chd_parse_u64(val, &u) != 0 || u < 1 || u > CHD_MAX_WORKERS) {
			goto range;
		}
		cfg->workers = (int) u;
		return (0);
	}
	if (strcmp(k, "io-threads") == 0) {
		if (chd_parse_u64(val, &u) != 0 || u < 2 ||
		    u > CHL_NNG_THREADS_MAX) {
			goto range;
		}
		cfg->io_threads = (int) (u + (u & 1)); /* nng: two per CPU */
		return (0);
	}
	if (strcmp(k, "max-message-size") == 0) {
		if (chd_parse_bytes(val, &u) != 0 || u < 1 ||
		    u > CHD_MAX_MESSAGE_LIMIT) {
			goto range;
		}
		cfg->max_message_size = u;
		return (0);
	}
	if (strcmp(k, "max-batch") == 0) {
		if (chd_parse_u64(val, &u) != 0 || u < 1 ||
		    u > CHD_MAX_BATCH_LIMIT) {
			goto range;
		}
		cfg->max_batch = (uint32_t) u;
		return (0);
	}
	if (strcmp(k, "max-request-size") == 0) {
		if (chd_parse_bytes(val, &u) != 0 || u < 1024 ||
		    u > CHD_MAX_REQUEST_LIMIT) {
			goto range;
		}
		cfg->max_request_size = u;
		return (0);
	}
	if (strcmp(k, "sp-direct") == 0 || strcmp(k, "no-sp-direct") == 0) {
		return (chd_set_flag(&cfg->sp_direct, k, key, val, err, errlen));
	}
	if (strcmp(k, "auto-create") == 0 || strcmp(k, "no-auto-create") == 0) {
		return (chd_set_flag(&cfg->auto_create, k, key, val, err, errlen));
	}
	if (strcmp(k, "max-memory") == 0) {
		if (chd_parse_bytes(val, &u) != 0) {
			chd_errf(err, errlen, "%s: '%s' is not a size (bytes, "
			    "or K/M/G; 0: no limit)", key, val);
			return (-1);
		}
		cfg->max_memory = u;
		return (0);
	}
	if (strcmp(k, "max-connections") == 0) {
		if (chd_parse_u64(val, &u) != 0 || u > CHD_MAX_CONNECTIONS) {
			chd_errf(err, errlen, "%s: '%s' is not a number from 0 "
			    "(no limit) to %u", key, val, CHD_MAX_CONNECTIONS);
			return (-1);
		}
		cfg->max_connections = (unsigned) u;
		return (0);
	}
	if (strcmp(k, "max-channels") == 0 || strcmp(k, "max-counters") == 0) {
		if (chd_parse_u64(val, &u) != 0) {
			chd_errf(err, errlen, "%s: '%s' is not a number (0: no "
			    "limit)", key, val);
			return (-1);
		}
		if (strcmp(k, "max-channels") == 0) {
			cfg->max_channels = u;
		} else {
			cfg->max_counters = u;
		}
		return (0);
	}
	if (strcmp(k, "max-pending") == 0) {
		if (chd_parse_u64(val, &u) != 0 || u > UINT32_MAX) {
			chd_errf(err, errlen, "%s: '%s' is not a number from 0 "
			    "(no limit) to %u", key, val, UINT32_MAX);
			return (-1);
		}
		cfg->max_pending = (unsigned) u;
		return (0);
	}
	if (strcmp(k, "allow-uid") == 0 || strcmp(k, "allow-gid") == 0 ||
	    strcmp(k, "allow") == 0) {
		return (chd_add_access(cfg, k, key, val, err, errlen));
	}
	if (strcmp(k, "socket-group") == 0) {
		return (chd_set_group(cfg, key, val, err, errlen));
	}
	if (strcmp(k, "socket-dir-mode") == 0) {
		return (chd_parse_mode(key, val, &cfg->socket_dir_mode, err,
		    errlen));
	}
	if (strcmp(k, "tls-ca") == 0) {
		return (chd_set_string(&cfg->tls_ca, val, err, errlen));
	}
	if (strcmp(k, "socket-mode") == 0) {
		char *end;
		long  m;

		errno = 0;
		m = strtol(val, &end, 8);
		if (val[0] == '\0' || *end != '\0' || errno != 0 || m < 0 ||
		    m > 0777) {
			chd_errf(err, errlen,
			    "%s: '%s' is not an octal file mode (0000 to 0777)",
			    key, val);
			return (-1);
		}
		cfg->socket_mode = (int) m;
		return (0);
	}
	if (strcmp(k, "tls-cert") == 0) {
		return (chd_set_string(&cfg->tls_cert, val, err, errlen));
	}
	if (strcmp(k, "tls-key") == 0) {
		return (chd_set_string(&cfg->tls_key, val, err, errlen));
	}
	if (strcmp(k, "log-level") == 0) {
		if (chd_set_log_level(cfg, val) != 0) {
			chd_errf(err, errlen,
			    "%s: '%s' is not one of error, warn, info, debug", key,
			    val);
			return (-1);
		}
		return (0);
	}
	chd_errf(err, errlen, "unknown setting '%s'", key);
	return (-1);

range:
	if (strcmp(k, "workers") == 0) {
		chd_errf(err, errlen, "%s: '%s' is not a number from 1 to %d",
		    key, val, CHD_MAX_WORKERS);
	} else if (strcmp(k, "io-threads") == 0) {
		chd_errf(err, errlen, "%s: '%s' is not a number from 2 to %d",
		    key, val, CHL_NNG_THREADS_MAX);
	} else if (strcmp(k, "max-batch") == 0) {
		chd_errf(err, errlen, "%s: '%s' is not a number from 1 to %u",
		    key, val, CHD_MAX_BATCH_LIMIT);
	} else if (strcmp(k, "max-request-size") == 0) {
		chd_errf(err, errlen,
		    "%s: '%s' is not a size from 1K to 4G (bytes, or K/M/G)", key,
		    val);
	} else {
		chd_errf(err, errlen,
		    "%s: '%s' is not a size from 1 byte to 1G (bytes, or K/M/G)",
		    key, val);
	}
	return (-1);
}

static char *
chd_trim(char *s)
{
	char *e;

	while (isspace((unsigned char) *s)) {
		s++;
	}
	e = s + strlen(s);
	while (e > s && isspace((unsigned char) e[-1])) {
		*--e = '\0';
	}
	return (s);
}

/*
 * Reads `key = value` lines; '#' starts a comment (on its own line or after
 * whitespace), blank lines are skipped. Values may be double-quoted.
 */
static int
chd_config_read(chd_config *cfg, const char *path, char *err, size_t errlen)
{
	FILE  *f;
	char  *line = NULL;
	size_t cap = 0;
	int    lineno = 0;
	int    rv = 0;
	char   msg[512];

	if ((f = fopen(path, "r")) == NULL) {
		chd_errf(err, errlen, "config file %s: %s", path, strerror(errno));
		return (-1);
	}
	while (getline(&line, &cap, f) >= 0) {
		char *s, *eq, *key, *val, *hash;

		lineno++;
		s = chd_trim(line);
		if (*s == '\0' || *s == '#') {
			continue;
		}
		if ((eq = strchr(s, '=')) == NULL) {
			chd_errf(err, errlen, "%s:%d: expected 'key = value'", path,
			    lineno);
			rv = -1;
			break;
		}
		*eq = '\0';
		key = chd_trim(s);
		val = chd_trim(eq + 1);
		if (val[0] == '"') {
			char *q = strrchr(val + 1, '"');

			if (q == NULL || (chd_trim(q + 1)[0] != '\0' &&
			                     chd_trim(q + 1)[0] != '#')) {
				chd_errf(err, errlen, "%s:%d: unterminated quote", path,
				    lineno);
				rv = -1;
				break;
			}
			*q = '\0';
			val++;
		} else {
			for (hash = val; (hash = strchr(hash, '#')) != NULL;
			     hash++) {
				if (hash > val && isspace((unsigned char) hash[-1])) {
					*hash = '\0';
					val = chd_trim(val);
					break;
				}
			}
		}
		if (*key == '\0') {
			chd_errf(err, errlen, "%s:%d: missing key", path, lineno);
			rv = -1;
			break;
		}
		if (chd_apply(cfg, key, val, msg, sizeof(msg)) != 0) {
			chd_errf(err, errlen, "%s:%d: %s", path, lineno, msg);
			rv = -1;
			break;
		}
	}
	if (rv == 0 && ferror(f)) {
		chd_errf(err, errlen, "config file %s: read error", path);
		rv = -1;
	}
	free(line);
	(void) fclose(f);
	return (rv);
}

static void
chd_config_defaults(chd_config *cfg)
{
	chd_engine_opts eo;

	memset(cfg, 0, sizeof(*cfg));
	chd_engine_opts_default(&eo);
	cfg->workers = eo.workers;
	cfg->io_threads = chl_nng_threads_default();
	cfg->max_message_size = eo.max_message_size;
	cfg->max_batch = eo.max_batch;
	cfg->auto_create = eo.auto_create;
	cfg->sp_direct = true;
	cfg->socket_mode = -1;
	cfg->socket_gid = -1;
	cfg->socket_dir_mode = 0750;
	cfg->max_memory = eo.max_memory;
	cfg->max_pending = CHD_MAX_PENDING_DEFAULT;
	cfg->max_channels = eo.max_channels;
	cfg->max_counters = eo.max_counters;
	cfg->log_level = CHD_LOG_INFO;
}

enum {
	OPT_MAX_MESSAGE_SIZE = 256,
	OPT_MAX_BATCH,
	OPT_MAX_REQUEST_SIZE,
	OPT_NO_AUTO_CREATE,
	OPT_SOCKET_MODE,
	OPT_TLS_CERT,
	OPT_TLS_KEY,
	OPT_LOG_LEVEL,
	OPT_MAX_MEMORY,
	OPT_MAX_CONNECTIONS,
	OPT_MAX_PENDING,
	OPT_MAX_CHANNELS,
	OPT_MAX_COUNTERS,
	OPT_SOCKET_GROUP,
	OPT_SOCKET_DIR_MODE,
	OPT_ALLOW_UID,
	OPT_ALLOW_GID,
	OPT_ALLOW,
	OPT_TLS_CA,
	OPT_IO_THREADS,
	OPT_NO_SP_DIRECT,
};

static const struct option chd_long_opts[] = {
	{ "listen", required_argument, NULL, 'l' },
	{ "config", required_argument, NULL, 'c' },
	{ "workers", required_argument, NULL, 'w' },
	{ "io-threads", required_argument, NULL, OPT_IO_THREADS },
	{ "max-message-size", required_argument, NULL, OPT_MAX_MESSAGE_SIZE },
	{ "max-batch", required_argument, NULL, OPT_MAX_BATCH },
	{ "max-request-size", required_argument, NULL, OPT_MAX_REQUEST_SIZE },
	{ "no-auto-create", no_argument, NULL, OPT_NO_AUTO_CREATE },
	{ "no-sp-direct", no_argument, NULL, OPT_NO_SP_DIRECT },
	{ "socket-mode", required_argument, NULL, OPT_SOCKET_MODE },
	{ "tls-cert", required_argument, NULL, OPT_TLS_CERT },
	{ "tls-key", required_argument, NULL, OPT_TLS_KEY },
	{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
	{ "max-memory", required_argument, NULL, OPT_MAX_MEMORY },
	{ "max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS },
	{ "max-pending", required_argument, NULL, OPT_MAX_PENDING },
	{ "max-channels", required_argument, NULL, OPT_MAX_CHANNELS },
	{ "max-counters", required_argument, NULL, OPT_MAX_COUNTERS },
	{ "socket-group", required_argument, NULL, OPT_SOCKET_GROUP },
	{ "socket-dir-mode", required_argument, NULL, OPT_SOCKET_DIR_MODE },
	{ "allow-uid", required_argument, NULL, OPT_ALLOW_UID },
	{ "allow-gid", required_argument, NULL, OPT_ALLOW_GID },
	{ "allow", required_argument, NULL, OPT_ALLOW },
	{ "tls-ca", required_argument, NULL, OPT_TLS_CA },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

/* The config key an option sets (long name without dashes). */
static const char *
chd_opt_key(int c)
{
	for (const struct option *o = chd_long_opts; o->name != NULL; o++) {
		if (o->val == c) {
			return (o->name);
		}
	}
	return ("?");
}

chd_config_result
chd_config_parse(chd_config *cfg, int argc, char **argv, char *err,
    size_t errlen)
{
	chd_kv      args[CHD_MAX_ARGS];
	size_t      nargs = 0;
	const char *config = NULL;
	bool        cli_listen = false;
	int         c;

	chd_config_defaults(cfg);
	opterr = 0; /* we word the errors ourselves */
	optind = 1;
	while ((c = getopt_long(argc, argv, ":l:c:w:hV", chd_long_opts, NULL)) !=
	    -1) {
		switch (c) {
		case 'h':
			/* The defaults are the engine's: print them, not copies. */
			printf(chd_usage_text, cfg->workers, cfg->io_threads,
			    cfg->max_message_size,
			    cfg->max_batch, cfg->max_pending, cfg->max_channels,
			    cfg->max_counters);
			return (CHD_CONFIG_EXIT_OK);
		case 'V':
			printf("chand %s\n", CHAN_VERSION);
			return (CHD_CONFIG_EXIT_OK);
		case 'c':
			config = optarg;
			continue;
		case ':':
			chd_errf(err, errlen, "option '%s' needs a value",
			    argv[optind - 1]);
			return (CHD_CONFIG_USAGE);
		case '?':
			chd_errf(err, errlen, "unknown option '%s'",
			    argv[optind - 1]);
			return (CHD_CONFIG_USAGE);
		default:
			break;
		}
		if (nargs == CHD_MAX_ARGS) {
			chd_errf(err, errlen, "too many options");
			return (CHD_CONFIG_USAGE);
		}
		args[nargs].key = chd_opt_key(c);
		args[nargs].val = c == OPT_NO_AUTO_CREATE || c == OPT_NO_SP_DIRECT
		    ? "yes" : optarg;
		nargs++;
	}
	if (optind < argc) {
		chd_errf(err, errlen, "unexpected argument '%s'", argv[optind]);
		return (CHD_CONFIG_USAGE);
	}
	if (config != NULL) {
		if (chd_set_string(&cfg->config_file, config, err, errlen) != 0 ||
		    chd_config_read(cfg, config, err, errlen) != 0) {
			return (CHD_CONFIG_USAGE);
		}
	}
	for (size_t i = 0; i < nargs; i++) {
		char msg[512];

		if (strcmp(args[i].key, "listen") == 0 && !cli_listen) {
			chd_clear_listen(cfg); /* the command line replaces the file's */
			cli_listen = true;
		}
		if (chd_apply(cfg, args[i].key, args[i].val, msg, sizeof(msg)) !=
		    0) {
			chd_errf(err, errlen, "--%s", msg);
			return (CHD_CONFIG_USAGE);
		}
	}
	if (cfg->nlisten == 0 &&
	    chd_add_listen(cfg, CHAN_DEFAULT_URL, err, errlen) != 0) {
		return (CHD_CONFIG_USAGE);
	}
	return (CHD_CONFIG_RUN);
}

void
chd_config_fini(chd_config *cfg)
{
	chd_clear_listen(cfg);
	free(cfg->config_file);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	free(cfg->tls_ca);
	chd_access_free(cfg->access);
	cfg->access = NULL;
	cfg->config_file = cfg->tls_cert = cfg->tls_key = cfg->tls_ca = NULL;
}

uint64_t
chd_config_request_max(const chd_config *cfg)
{
	uint64_t per, n;

	if (cfg->max_request_size != 0) {
		return (cfg->max_request_size);
	}
	/* Each message costs its bytes plus a tag and a length varint. */
	per = cfg->max_message_size + 16;
	n = (uint64_t) cfg->max_batch * per + CHD_REQUEST_OVERHEAD;
	if (n > CHD_REQUEST_CAP) {
		n = CHD_REQUEST_CAP;
	}
	if (n < per + CHD_REQUEST_OVERHEAD) {
		n = per + CHD_REQUEST_OVERHEAD;
	}
	return (n);
}
