/*
 * notify.h - how chand tells the outside world: the log on stderr and
 * systemd's notification socket.
 */
#ifndef CHD_NOTIFY_H
#define CHD_NOTIFY_H

#include "config.h"

/* Lines above this level are dropped. Set once, before threads start. */
void chd_log_set_level(chd_log_level level);

/*
 * One line on stderr: "chand: LEVEL: message". Under systemd (JOURNAL_STREAM
 * set) the line starts with a <N> syslog priority prefix instead, which
 * journald turns into the entry's priority. Safe from any thread.
 */
void chd_log(chd_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* sd_notify wrappers; no-ops when NOTIFY_SOCKET is unset. */
void chd_notify_ready(const char *status);
void chd_notify_stopping(void);
void chd_notify_status(const char *status);

#endif
