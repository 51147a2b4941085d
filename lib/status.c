/* status.c - tables generated from CHAN_STATUS_LIST, and the wire check. */
#include <chan/status.h>

#include "chan.pb-c.h"

/* The wire enum and the C enum are two spellings of one list: prove it. */
#define CHL_CHECK_WIRE_(name, num, exitc, text)                              \
	_Static_assert((int) CHAN__V1__STATUS__##name == (int) CHAN_##name,              \
	    "wire status " #name " differs from chan_status");
CHAN_STATUS_LIST(CHL_CHECK_WIRE_)
#undef CHL_CHECK_WIRE_

static const struct {
	const char *name;
	const char *text;
	int         exit_code;
} chl_status_rows[] = {
#define CHL_ROW_(name, num, exitc, text) [num] = { #name, text, exitc },
	CHAN_STATUS_LIST(CHL_ROW_)
#undef CHL_ROW_
};

static int
chl_status_known(chan_status s)
{
	return ((unsigned) s < (unsigned) CHAN_STATUS_COUNT_);
}

const char *
chan_strerror(chan_status s)
{
	return (chl_status_known(s) ? chl_status_rows[s].text : "unknown status");
}

const char *
chan_status_name(chan_status s)
{
	return (chl_status_known(s) ? chl_status_rows[s].name : "UNKNOWN");
}

int
chan_status_exit_code(chan_status s)
{
	return (chl_status_known(s) ? chl_status_rows[s].exit_code : 70);
}
