/* log.h: one logging function for the programs (fuse/, vmm/, tools).
 *
 * Libraries (imgfmt/, partition/) never log; they return -errno and a
 * message. Programs print to stderr until they detach, then to syslog.
 */
#ifndef IMGFS_COMMON_LOG_H
#define IMGFS_COMMON_LOG_H

#include <stdbool.h>
#include <syslog.h>

/* Sends later messages to syslog (true) or stderr (false). */
void log_use_syslog(bool on, const char *ident);
/* Drops messages above this syslog priority (default LOG_INFO). */
void log_set_level(int priority);
void log_msg(int priority, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
