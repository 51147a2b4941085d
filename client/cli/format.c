/* format.c - output records, base64, timestamps, info JSON (no I/O). */
#include "format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

void
cli_b64_encode(const void *in, size_t len, char *out)
{
	static const char tbl[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *p = in;
	size_t               i;
	char                *o = out;

	for (i = 0; i + 2 < len; i += 3) {
		*o++ = tbl[p[i] >> 2];
		*o++ = tbl[((p[i] & 0x03) << 4) | (p[i + 1] >> 4)];
		*o++ = tbl[((p[i + 1] & 0x0f) << 2) | (p[i + 2] >> 6)];
		*o++ = tbl[p[i + 2] & 0x3f];
	}
	if (i < len) {
		*o++ = tbl[p[i] >> 2];
		if (i + 1 < len) {
			*o++ = tbl[((p[i] & 0x03) << 4) | (p[i + 1] >> 4)];
			*o++ = tbl[(p[i + 1] & 0x0f) << 2];
		} else {
			*o++ = tbl[(p[i] & 0x03) << 4];
			*o++ = '=';
		}
		*o++ = '=';
	}
	*o = '\0';
}

void
cli_time_rfc3339(uint64_t us, char *buf, size_t n)
{
	time_t    sec = (time_t) (us / 1000000u);
	struct tm tm;
	char      base[32];

	gmtime_r(&sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, n, "%s.%06uZ", base, (unsigned) (us % 1000000u));
}

char *
cli_record_plain(const cli_record *r, const char *prefix, char term, size_t *outlen)
{
	size_t plen = prefix != NULL ? strlen(prefix) + 1 : 0;
	size_t total = plen + r->len + 1;
	char  *buf;

	if ((buf = malloc(total)) == NULL) {
		return (NULL);
	}
	if (prefix != NULL) {
		memcpy(buf, prefix, plen - 1);
		buf[plen - 1] = '\t';
	}
	if (r->len > 0) {
		memcpy(buf + plen, r->data, r->len);
	}
	buf[total - 1] = term;
	*outlen = total;
	return (buf);
}

/* Dumps o compactly with a newline, and drops o. */
static char *
cli_json_line(json_t *o, size_t *outlen)
{
	char  *s;
	char  *line;
	size_t n;

	if (o == NULL) {
		return (NULL);
	}
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (s == NULL) {
		return (NULL);
	}
	n = strlen(s);
	if ((line = realloc(s, n + 2)) == NULL) {
		free(s);
		return (NULL);
	}
	line[n] = '\n';
	line[n + 1] = '\0';
	if (outlen != NULL) {
		*outlen = n + 1;
	}
	return (line);
}

char *
cli_record_json(const cli_record *r, size_t *outlen)
{
	json_t *o = json_object();
	json_t *data;
	char    when[40];

	if (o == NULL) {
		return (NULL);
	}
	cli_time_rfc3339(r->time_us, when, sizeof(when));
	json_object_set_new(o, "channel", json_string(r->channel));
	json_object_set_new(o, "seq", json_integer((json_int_t) r->seq));
	json_object_set_new(o, "time", json_string(when));
	json_object_set_new(o, "time_us", json_integer((json_int_t) r->time_us));
	/* json_stringn refuses invalid UTF-8: exactly when data_b64 is due. */
	if ((data = json_stringn(r->len > 0 ? r->data : "", r->len)) != NULL) {
		json_object_set_new(o, "data", data);
	} else {
		char *b64 = malloc(CLI_B64_LEN(r->len) + 1);

		if (b64 == NULL) {
			json_decref(o);
			return (NULL);
		}
		cli_b64_encode(r->data, r->len, b64);
		json_object_set_new(o, "data_b64", json_string(b64));
		free(b64);
	}
	if (r->redelivered) {
		json_object_set_new(o, "redelivered", json_true());
	}
	return (cli_json_line(o, outlen));
}

char *
cli_stat_json(const chan_stat_info *i)
{
	json_t *o = json_object();

	if (o == NULL) {
		return (NULL);
	}
	json_object_set_new(o, "name", json_string(i->name));
	json_object_set_new(o, "capacity",
	    i->bounded ? json_integer((json_int_t) i->capacity) : json_string("unbounded"));
	json_object_set_new(o, "depth", json_integer((json_int_t) i->depth));
	json_object_set_new(o, "bytes", json_integer((json_int_t) i->bytes));
	json_object_set_new(o, "closed", json_boolean(i->closed));
	json_object_set_new(o, "receiver_attached", json_boolean(i->receiver_attached));
	json_object_set_new(o, "receiver_pid", json_integer(i->receiver_pid));
	json_object_set_new(o, "senders", json_integer(i->senders));
	json_object_set_new(o, "blocked_senders", json_integer(i->blocked_senders));
	json_object_set_new(o, "blocked_receivers", json_integer(i->blocked_receivers));
	json_object_set_new(o, "total_sent", json_integer((json_int_t) i->total_sent));
	json_object_set_new(o, "total_received", json_integer((json_int_t) i->total_received));
	json_object_set_new(o, "total_dropped", json_integer((json_int_t) i->total_dropped));
	json_object_set_new(o, "in_flight", json_integer((json_int_t) i->in_flight));
	json_object_set_new(o, "total_redelivered", json_integer((json_int_t) i->total_redelivered));
	return (cli_json_line(o, NULL));
}

char *
cli_stats_json(const chan_stats_info *i)
{
	json_t *o = json_object();

	if (o == NULL) {
		return (NULL);
	}
	json_object_set_new(o, "uptime_ms", json_integer((json_int_t) i->uptime_ms));
	json_object_set_new(o, "connections", json_integer((json_int_t) i->connections));
	json_object_set_new(o, "channels", json_integer((json_int_t) i->channels));
	json_object_set_new(o, "counters", json_integer((json_int_t) i->counters));
	json_object_set_new(o, "messages", json_integer((json_int_t) i->messages));
	json_object_set_new(o, "bytes", json_integer((json_int_t) i->bytes));
	json_object_set_new(o, "requests", json_integer((json_int_t) i->requests));
	json_object_set_new(o, "workers", json_integer(i->workers));
	return (cli_json_line(o, NULL));
}

char *
cli_counter_json(const char *name, const char *key, int64_t v)
{
	json_t *o = json_object();

	if (o == NULL) {
		return (NULL);
	}
	json_object_set_new(o, "name", json_string(name));
	json_object_set_new(o, key, json_integer((json_int_t) v));
	return (cli_json_line(o, NULL));
}

char *
cli_cas_json(const char *name, bool swapped, int64_t v)
{
	json_t *o = json_object();

	if (o == NULL) {
		return (NULL);
	}
	json_object_set_new(o, "name", json_string(name));
	json_object_set_new(o, "swapped", json_boolean(swapped));
	json_object_set_new(o, "value", json_integer((json_int_t) v));
	return (cli_json_line(o, NULL));
}

char *
cli_ping_json(uint64_t rtt_us, const char *server_version)
{
	json_t *o = json_object();

	if (o == NULL) {
		return (NULL);
	}
	json_object_set_new(o, "pong", json_true());
	json_object_set_new(o, "rtt_us", json_integer((json_int_t) rtt_us));
	json_object_set_new(o, "server_version", json_string(server_version != NULL ? server_version : ""));
	return (cli_json_line(o, NULL));
}
