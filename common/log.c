/* log.c: see log.h. Thread-safe: each message is one fprintf or syslog
 * call, and the stdio lock keeps lines whole.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

static bool use_syslog;
static int max_level = LOG_INFO;

void log_use_syslog(bool on, const char *ident)
{
	if (on && !use_syslog)
		openlog(ident, LOG_PID, LOG_DAEMON);
	use_syslog = on;
}

void log_set_level(int priority)
{
	max_level = priority;
}

void log_msg(int priority, const char *fmt, ...)
{
	va_list ap;

	if (priority > max_level)
		return;
	va_start(ap, fmt);
	if (use_syslog) {
		vsyslog(priority, fmt, ap);
	} else {
		char line[1024];
		vsnprintf(line, sizeof(line), fmt, ap);
		fprintf(stderr, "imgfs: %s\n", line);
	}
	va_end(ap);
}
