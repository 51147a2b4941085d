/*
 * config.h - chand's settings: defaults, the config file, the command line.
 *
 * Every command-line option has a config-file key of the same name without
 * the leading dashes (`listen`, `workers`, `max-message-size`, ...). The
 * file is read first, then the command line overrides it; `listen` given
 * on the command line replaces the file's whole list.
 */
#ifndef CHD_CONFIG_H
#define CHD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "access.h"

#define CHD_MAX_LISTEN 32
/* Requests one connection may have in flight (parked ones included). */
#define CHD_MAX_PENDING_DEFAULT 65536u

/* Exit codes (sysexits-style where they exist). */
#define CHD_EXIT_OK 0
#define CHD_EXIT_FAIL 1   /* cannot listen, cannot start */
#define CHD_EXIT_USAGE 64 /* bad option, bad value, bad config file */

typedef enum chd_log_level {
	CHD_LOG_ERROR = 0,
	CHD_LOG_WARN,
	CHD_LOG_INFO,
	CHD_LOG_DEBUG,
} chd_log_level;

typedef struct chd_config {
	char         *listen[CHD_MAX_LISTEN]; /* URLs, owned */
	size_t        nlisten;
	char         *config_file;      /* NULL: none read */
	int           workers;          /* engine shards */
	int           io_threads;       /* nng task threads (nng_threads.h) */
	uint64_t      max_message_size; /* bytes */
	uint32_t      max_batch;        /* messages per request */
	bool          auto_create;
	bool          sp_direct;        /* chand's own ipc/tcp listeners */
	uint64_t      max_request_size; /* 0: derived, see chd_config_request_max */
	int           socket_mode;      /* ipc socket file mode, -1: umask */
	char         *tls_cert;         /* PEM file: certificate (+ key) */
	char         *tls_key;          /* PEM file: key (NULL: in tls_cert) */
	char         *tls_ca;           /* PEM CA file: client certs required */
	int           socket_gid;       /* group of ipc sockets, -1: as created */
	int           socket_dir_mode;  /* mode of a socket dir chand creates */
	uint64_t      max_memory;       /* payload bytes held, 0: no limit */
	unsigned      max_connections;  /* 0: no limit */
	unsigned      max_pending;      /* requests in flight per conn, 0: any */
	uint64_t      max_channels;     /* daemon-wide, 0: no limit */
	uint64_t      max_counters;     /* daemon-wide, 0: no limit */
	chd_access   *access;           /* NULL: access control off */
	chd_log_level log_level;
} chd_config;

/* What chd_config_parse decided. */
typedef enum chd_config_result {
	CHD_CONFIG_RUN,     /* cfg is filled in: start */
	CHD_CONFIG_EXIT_OK, /* --help or --version printed: exit 0 */
	CHD_CONFIG_USAGE,   /* err says why: exit CHD_EXIT_USAGE */
} chd_config_result;

/*
 * Fills cfg from defaults, the --config file and argv. On CHD_CONFIG_USAGE,
 * err holds a one-line message. --help/--version print on stdout.
 */
chd_config_result chd_config_parse(chd_config *cfg, int argc, char **argv,
    char *err, size_t errlen);

/* Frees what cfg owns. */
void chd_config_fini(chd_config *cfg);

/*
 * The largest request body chand accepts (NNG_OPT_RECVMAXSZ): the
 * configured max-request-size, else a full batch of full messages plus
 * framing, capped at CHD_REQUEST_CAP but never below one full message.
 */
#define CHD_REQUEST_OVERHEAD (64u * 1024u)
#define CHD_REQUEST_CAP (256ull * 1024u * 1024u)
uint64_t chd_config_request_max(const chd_config *cfg);

#endif
