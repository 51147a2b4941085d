/*
 * format.h - pure formatting of what the CLI prints: message records
 * (plain and JSON), base64, timestamps, and the JSON of the info structs.
 * Nothing here does I/O, so tests/unit/test_client_local.c checks it.
 */
#ifndef CLI_FORMAT_H
#define CLI_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <chan/chan.h>

/* Bytes base64 needs for len input bytes, without the NUL. */
#define CLI_B64_LEN(len) ((((len) + 2) / 3) * 4)

/* Standard base64 with padding into out (room for CLI_B64_LEN(len) + 1); NUL-terminated. */
void cli_b64_encode(const void *in, size_t len, char *out);

/* Unix microseconds as RFC 3339 UTC with microseconds: "2026-11-27T02:12:34.123456Z". */
void cli_time_rfc3339(uint64_t us, char *buf, size_t n);

/* What a printed message shows. */
typedef struct cli_record {
	const char *channel;
	uint64_t    seq;
	uint64_t    time_us;
	const void *data;
	size_t      len;
	bool        redelivered;
} cli_record;

/*
 * One whole output record, malloc'd (caller frees), length in *outlen:
 * - plain: [prefix TAB] payload term (term '\n' or '\0'); the prefix is
 *   the channel for recv-any, the seq for a leased message, else NULL;
 * - json: {"channel","seq","time","time_us","data" | "data_b64"[,"redelivered"]} "\n".
 * NULL on ENOMEM.
 */
char *cli_record_plain(const cli_record *r, const char *prefix, char term, size_t *outlen);
char *cli_record_json(const cli_record *r, size_t *outlen);

/* The JSON line ("...}\n", malloc'd, caller frees) of a channel's stat / daemon stats. */
char *cli_stat_json(const chan_stat_info *i);
char *cli_stats_json(const chan_stats_info *i);

/*
 * Small JSON lines ("...}\n", malloc'd, caller frees; NULL on ENOMEM):
 * {"name":N,KEY:V} for counters, {"name","swapped","value"} for cas,
 * {"pong":true,"rtt_us","server_version"} for ping.
 */
char *cli_counter_json(const char *name, const char *key, int64_t v);
char *cli_cas_json(const char *name, bool swapped, int64_t v);
char *cli_ping_json(uint64_t rtt_us, const char *server_version);

#endif
