/* names.c - the name rule, checked once for daemon and client alike. */
#include "names.h"

#include <stdio.h>

static bool
chl_name_byte_ok(unsigned char c)
{
	return ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
	    c == '-');
}

bool
chl_name_valid(const char *name, size_t len, char *err, size_t errlen)
{
	static const char rule[] = "names are 1 to 128 bytes of [A-Za-z0-9._:-]";

	if (name == NULL || len == 0) {
		if (err != NULL && errlen > 0) {
			snprintf(err, errlen, "empty name; %s", rule);
		}
		return (false);
	}
	if (len > CHL_NAME_MAX) {
		if (err != NULL && errlen > 0) {
			snprintf(err, errlen, "name is %zu bytes long; %s", len,
			    rule);
		}
		return (false);
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char) name[i];
		if (chl_name_byte_ok(c)) {
			continue;
		}
		if (err != NULL && errlen > 0) {
			if (c >= 0x20 && c < 0x7f) {
				snprintf(err, errlen,
				    "name has '%c' at offset %zu; %s", c, i,
				    rule);
			} else {
				snprintf(err, errlen,
				    "name has byte 0x%02x at offset %zu; %s",
				    c, i, rule);
			}
		}
		return (false);
	}
	return (true);
}
