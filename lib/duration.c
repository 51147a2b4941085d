/* duration.c - "250ms", "2s", "1.5s", "1m", "1h"; a bare number is seconds. */
#include "duration.h"

#include <stdio.h>
#include <string.h>

static bool
chl_dur_fail(char *err, size_t errlen, const char *s, const char *why)
{
	if (err != NULL && errlen > 0) {
		snprintf(err, errlen,
		    "bad duration '%s': %s (use e.g. 250ms, 2s, 1.5s, 1m)",
		    s == NULL ? "" : s, why);
	}
	return (false);
}

/* Unit scale in ms; 0 when the suffix is not a unit. */
static int64_t
chl_dur_unit(const char *u)
{
	if (*u == '\0' || strcmp(u, "s") == 0) {
		return (1000);
	}
	if (strcmp(u, "ms") == 0) {
		return (1);
	}
	if (strcmp(u, "m") == 0) {
		return (60 * 1000);
	}
	if (strcmp(u, "h") == 0) {
		return (3600 * 1000);
	}
	return (0);
}

bool
chl_duration_parse(const char *s, int64_t *ms, char *err, size_t errlen)
{
	const char *p = s;
	uint64_t    whole = 0;
	uint64_t    frac = 0, frac_div = 1;
	int64_t     unit;
	int         digits = 0;

	if (s == NULL || *s == '\0') {
		return (chl_dur_fail(err, errlen, s, "empty"));
	}
	for (; *p >= '0' && *p <= '9'; p++, digits++) {
		if (whole > (UINT64_MAX - 9) / 10) {
			return (chl_dur_fail(err, errlen, s, "too large"));
		}
		whole = whole * 10 + (uint64_t) (*p - '0');
	}
	if (*p == '.') {
		p++;
		for (; *p >= '0' && *p <= '9'; p++, digits++) {
			/* Digits past microseconds cannot change the result. */
			if (frac_div < 1000000000) {
				frac = frac * 10 + (uint64_t) (*p - '0');
				frac_div *= 10;
			}
		}
	}
	if (digits == 0) {
		return (chl_dur_fail(err, errlen, s, "no number"));
	}
	if ((unit = chl_dur_unit(p)) == 0) {
		return (chl_dur_fail(err, errlen, s, "unknown unit"));
	}
	if (whole > (uint64_t) INT64_MAX / (uint64_t) unit) {
		return (chl_dur_fail(err, errlen, s, "too large"));
	}
	uint64_t total = whole * (uint64_t) unit;
	/* frac < frac_div <= 1e9 and unit <= 3.6e6: no overflow in 64 bits. */
	uint64_t part = (frac * (uint64_t) unit + frac_div / 2) / frac_div;
	if (total > (uint64_t) INT64_MAX - part) {
		return (chl_dur_fail(err, errlen, s, "too large"));
	}
	*ms = (int64_t) (total + part);
	return (true);
}
