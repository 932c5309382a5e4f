/* SPDX-License-Identifier: ISC */
/*
 * log.h -- levelled, one-line-per-event logging to stderr.
 *
 * Lines look like
 *	2026-11-22T01:50:00.123Z info  httpd: rid=5f2c... GET /healthz 200 0.1ms
 * A line about an HTTP request carries "rid=<request id>"; the caller puts it
 * there.  Never pass a secret to these functions.
 * log_warn and fatal append strerror(errno); log_warnx and fatalx do not.
 */
#ifndef MUSUBI_LOG_H
#define MUSUBI_LOG_H

#include "musubi/compat.h"

enum log_level {
	LOG_LEVEL_DEBUG = 0,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERROR,
};

void	 log_init(const char *ident);
/* Parse "debug", "info", "warn" or "error"; -1 if unknown. */
int	 log_level_parse(const char *, enum log_level *);
void	 log_set_level(enum log_level);
enum log_level log_get_level(void);
int	 log_enabled(enum log_level);

void	 log_debug(const char *, ...) PRINTFLIKE(1, 2);
void	 log_info(const char *, ...) PRINTFLIKE(1, 2);
void	 log_warn(const char *, ...) PRINTFLIKE(1, 2);
void	 log_warnx(const char *, ...) PRINTFLIKE(1, 2);
void	 log_error(const char *, ...) PRINTFLIKE(1, 2);
void	 fatal(const char *, ...) PRINTFLIKE(1, 2) NORETURN;
void	 fatalx(const char *, ...) PRINTFLIKE(1, 2) NORETURN;

#endif
