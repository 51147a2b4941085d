/* duration.h - SPEC durations: "250ms", "2s", "1.5s", "1m", bare number = seconds. */
#ifndef CHL_DURATION_H
#define CHL_DURATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Parses s into milliseconds (rounded to the nearest ms; "0" is 0).
 * Units: ms, s, m, h; a bare number is seconds; a decimal fraction is
 * allowed ("1.5s"). Negative, empty, unknown unit, trailing junk, or a value
 * over INT64_MAX ms: false, with a message into err (when not NULL).
 */
bool chl_duration_parse(const char *s, int64_t *ms, char *err, size_t errlen);

#endif
