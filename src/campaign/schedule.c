/* SPDX-License-Identifier: ISC */
/*
 * schedule.c -- campaign schedules, checked before they are saved.  Pure.
 * Occurrences themselves are computed in PostgreSQL
 * (musubi_campaign_next()), in the channel's timezone, where the zone
 * database is; here only the shape and "not in the past" are checked.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "musubi/campaign.h"
#include "musubi/xmalloc.h"

static const char *const sched_days[] = {
	"mon", "tue", "wed", "thu", "fri", "sat", "sun", NULL
};

/* Read exactly n digits; -1 if not digits. */
static int
sched_digits(const char *s, int n)
{
	int	 v = 0, i;

	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return (-1);
		v = v * 10 + (s[i] - '0');
	}
	return (v);
}

/* Parse an RFC 3339 date-time with a zone. */
int
campaign_parse_time(const char *s, time_t *out)
{
	struct tm	 tm;
	const char	*p;
	int		 y, mo, d, h, mi, sec, oh, om, sign;
	time_t		 t;

	if (s == NULL || strlen(s) < 20)
		return (-1);
	y = sched_digits(s, 4);
	mo = sched_digits(s + 5, 2);
	d = sched_digits(s + 8, 2);
	h = sched_digits(s + 11, 2);
	mi = sched_digits(s + 14, 2);
	sec = sched_digits(s + 17, 2);
	if (y < 1970 || s[4] != '-' || mo < 1 || mo > 12 || s[7] != '-' ||
	    d < 1 || d > 31 || (s[10] != 'T' && s[10] != 't' &&
	    s[10] != ' ') || h < 0 || h > 23 || s[13] != ':' || mi < 0 ||
	    mi > 59 || s[16] != ':' || sec < 0 || sec > 60)
		return (-1);
	p = s + 19;
	if (*p == '.') {
		for (p++; isdigit((unsigned char)*p); p++)
			;
		if (p == s + 20)
			return (-1);
	}
	if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
		oh = om = sign = 0;
	else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
		sign = *p == '-' ? -1 : 1;
		oh = sched_digits(p + 1, 2);
		om = sched_digits(p + 4, 2);
		if (oh < 0 || oh > 23 || om < 0 || om > 59)
			return (-1);
	} else
		return (-1);
	memset(&tm, 0, sizeof tm);
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	/* timegm normalises 31 Feb to 3 Mar: refuse dates that moved. */
	if (tm.tm_mday != d || tm.tm_mon != mo - 1)
		return (-1);
	*out = t - sign * (oh * 3600 + om * 60);
	return (0);
}

/* Fail with a path under /schedule. */
static int PRINTFLIKE(4, 5)
sched_fail(char **path, char **cause, const char *sub, const char *fmt, ...)
{
	va_list	 ap;

	xasprintf(path, "/schedule%s", sub);
	va_start(ap, fmt);
	xvasprintf(cause, fmt, ap);
	va_end(ap);
	return (-1);
}

/* Check an optional "until"/"at" time in the future. */
static int
sched_future(json_t *o, const char *key, int required, time_t now,
    char **path, char **cause)
{
	json_t	*v = json_object_get(o, key);
	time_t	 t;
	char	 sub[32];

	snprintf(sub, sizeof sub, "/%s", key);
	if (v == NULL || json_is_null(v)) {
		if (required)
			return (sched_fail(path, cause, sub, "%s is required",
			    key));
		return (0);
	}
	if (!json_is_string(v) ||
	    campaign_parse_time(json_string_value(v), &t) != 0)
		return (sched_fail(path, cause, sub, "%s must be an RFC 3339 "
		    "date-time with a zone, e.g. 2026-12-01T09:00:00+09:00",
		    key));
	if (t <= now)
		return (sched_fail(path, cause, sub, "%s is in the past", key));
	return (0);
}

/* Validate a schedule. */
int
campaign_schedule_validate(json_t *s, time_t now, char **path, char **cause)
{
	static const char *const keys[] = { "type", "at", "time", "days",
	    "until", NULL };
	const char	*type, *key, *tm;
	json_t		*v, *days;
	size_t		 i, j, k;
	char		 sub[32];

	if (!json_is_object(s))
		return (sched_fail(path, cause, "", "schedule must be an "
		    "object"));
	json_object_foreach(s, key, v) {
		for (i = 0; keys[i] != NULL; i++) {
			if (strcmp(keys[i], key) == 0)
				break;
		}
		if (keys[i] == NULL)
			return (sched_fail(path, cause, "", "unknown field "
			    "\"%.40s\"", key));
	}
	type = json_string_value(json_object_get(s, "type"));
	if (type == NULL)
		return (sched_fail(path, cause, "/type", "type is required "
		    "(now, at, daily or weekly)"));
	if (strcmp(type, "now") == 0)
		return (0);
	if (strcmp(type, "at") == 0)
		return (sched_future(s, "at", 1, now, path, cause));
	if (strcmp(type, "daily") != 0 && strcmp(type, "weekly") != 0)
		return (sched_fail(path, cause, "/type", "type must be now, "
		    "at, daily or weekly"));
	tm = json_string_value(json_object_get(s, "time"));
	if (tm == NULL || strlen(tm) != 5 || tm[2] != ':' ||
	    sched_digits(tm, 2) < 0 || sched_digits(tm, 2) > 23 ||
	    sched_digits(tm + 3, 2) < 0 || sched_digits(tm + 3, 2) > 59)
		return (sched_fail(path, cause, "/time", "time must be a local "
		    "time HH:MM in the channel's timezone"));
	if (strcmp(type, "weekly") == 0) {
		days = json_object_get(s, "days");
		if (!json_is_array(days) || json_array_size(days) < 1 ||
		    json_array_size(days) > 7)
			return (sched_fail(path, cause, "/days", "days must "
			    "list 1 to 7 of mon, tue, wed, thu, fri, sat, "
			    "sun"));
		json_array_foreach(days, i, v) {
			snprintf(sub, sizeof sub, "/days/%zu", i);
			for (k = 0; sched_days[k] != NULL; k++) {
				if (json_is_string(v) && strcmp(sched_days[k],
				    json_string_value(v)) == 0)
					break;
			}
			if (sched_days[k] == NULL)
				return (sched_fail(path, cause, sub, "a day is "
				    "one of mon, tue, wed, thu, fri, sat, "
				    "sun"));
			for (j = 0; j < i; j++) {
				if (json_equal(json_array_get(days, j), v))
					return (sched_fail(path, cause, sub,
					    "day listed twice"));
			}
		}
	} else if (json_object_get(s, "days") != NULL)
		return (sched_fail(path, cause, "/days", "days is for weekly "
		    "schedules"));
	return (sched_future(s, "until", 0, now, path, cause));
}
