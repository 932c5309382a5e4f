/* SPDX-License-Identifier: ISC */
/*
 * log.c -- the only global state in musubi: the log level and ident.  One
 * write(2) per line, so lines from several processes sharing a file do not
 * interleave.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "musubi/log.h"

static enum log_level	 log_level = LOG_LEVEL_INFO;
static const char	*log_ident = "musubi";

static const char *const log_names[] = { "debug", "info", "warn", "error" };

static void log_vwrite(enum log_level, int, const char *, va_list)
    PRINTFLIKE(3, 0);

/* Set the program name used by fatal messages. */
void
log_init(const char *ident)
{
	if (ident != NULL)
		log_ident = ident;
}

/* Parse a level name. */
int
log_level_parse(const char *s, enum log_level *out)
{
	size_t	 i;

	for (i = 0; i < nitems(log_names); i++) {
		if (strcmp(s, log_names[i]) == 0) {
			*out = (enum log_level)i;
			return (0);
		}
	}
	if (strcmp(s, "warning") == 0) {
		*out = LOG_LEVEL_WARN;
		return (0);
	}
	return (-1);
}

/* Set the lowest level written. */
void
log_set_level(enum log_level level)
{
	log_level = level;
}

/* Return the current level. */
enum log_level
log_get_level(void)
{
	return (log_level);
}

/* Tell whether a level would be written. */
int
log_enabled(enum log_level level)
{
	return (level >= log_level);
}

/* Format and write one line. */
static void
log_vwrite(enum log_level level, int with_errno, const char *fmt, va_list ap)
{
	char		 line[4096];
	struct timeval	 tv;
	struct tm	 tm;
	size_t		 n;
	int		 saved = errno, r;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, sizeof line - n, ".%03ldZ %-5s ",
	    (long)(tv.tv_usec / 1000), log_names[level]);
	if (r > 0)
		n += (size_t)r;
	r = vsnprintf(line + n, sizeof line - n, fmt, ap);
	if (r > 0)
		n += (size_t)r;
	if (n >= sizeof line - 1)
		n = sizeof line - 2;
	if (with_errno) {
		r = snprintf(line + n, sizeof line - n, ": %s",
		    strerror(saved));
		if (r > 0)
			n += (size_t)r;
		if (n >= sizeof line - 1)
			n = sizeof line - 2;
	}
	/* Keep one event on one line, whatever the message held. */
	for (size_t i = 0; i < n; i++) {
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	}
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
	errno = saved;
}

#define LOG_FN(name, level, err)					\
	void								\
	name(const char *fmt, ...)					\
	{								\
		va_list	ap;						\
									\
		if (!log_enabled(level))				\
			return;						\
		va_start(ap, fmt);					\
		log_vwrite(level, err, fmt, ap);			\
		va_end(ap);						\
	}

LOG_FN(log_debug, LOG_LEVEL_DEBUG, 0)
LOG_FN(log_info, LOG_LEVEL_INFO, 0)
LOG_FN(log_warn, LOG_LEVEL_WARN, 1)
LOG_FN(log_warnx, LOG_LEVEL_WARN, 0)
LOG_FN(log_error, LOG_LEVEL_ERROR, 0)

/* Log with errno and exit. */
void
fatal(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, 1, fmt, ap);
	va_end(ap);
	exit(1);
}

/* Log and exit. */
void
fatalx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, 0, fmt, ap);
	va_end(ap);
	exit(1);
}
