/* names.h - the name rule of SPEC: 1..128 bytes of [A-Za-z0-9._:-]. */
#ifndef CHL_NAMES_H
#define CHL_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define CHL_NAME_MAX 128

/*
 * True when name[0..len) follows the rule. On false, when err is not NULL,
 * writes a NUL-terminated message naming the rule and what broke it (e.g.
 * "name 'a b' has byte ' ' at offset 1; names are 1 to 128 bytes of
 * [A-Za-z0-9._:-]") into err[0..errlen). Never prints, never allocates.
 */
bool chl_name_valid(const char *name, size_t len, char *err, size_t errlen);

#endif
