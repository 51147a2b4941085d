/* notify.c - stderr log lines and sd_notify. */
#include "notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

static chd_log_level chd_level = CHD_LOG_INFO;
static int           chd_journal = -1; /* -1: not looked at yet */

void
chd_log_set_level(chd_log_level level)
{
	const char        *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat        st;

	chd_level = level;
	/* Only when stderr really is the journal stream systemd gave us. */
	chd_journal = js != NULL && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
	    fstat(STDERR_FILENO, &st) == 0 && st.st_dev == (dev_t) dev &&
	    st.st_ino == (ino_t) ino;
}

void
chd_log(chd_log_level level, const char *fmt, ...)
{
	static const char *names[] = { "error", "warn", "info", "debug" };
	static const int   prio[] = { 3, 4, 6, 7 }; /* syslog levels */
	char               msg[1024];
	char               stamp[64];
	struct timespec    ts;
	struct tm          tm;
	va_list            ap;

	if (level > chd_level) {
		return;
	}
	va_start(ap, fmt);
	(void) vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	if (chd_journal == 1) {
		/* journald adds the time and parses the <N> priority. */
		fprintf(stderr, "<%d>%s: %s\n", prio[level], names[level], msg);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	(void) strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	/* One fprintf: stderr is unbuffered, a single call keeps lines whole. */
	fprintf(stderr, "%s.%03ldZ chand %s: %s\n", stamp,
	    (long) (ts.tv_nsec / 1000000), names[level], msg);
}

void
chd_notify_ready(const char *status)
{
	if (status != NULL) {
		(void) sd_notifyf(0, "READY=1\nSTATUS=%s", status);
	} else {
		(void) sd_notify(0, "READY=1");
	}
}

void
chd_notify_stopping(void)
{
	(void) sd_notify(0, "STOPPING=1\nSTATUS=shutting down");
}

void
chd_notify_status(const char *status)
{
	(void) sd_notifyf(0, "STATUS=%s", status);
}
