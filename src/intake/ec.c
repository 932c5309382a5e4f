/* SPDX-License-Identifier: ISC */
/*
 * ec.c -- purchase webhooks in, orders and rollups out.
 *
 * ec_webhook_cb -> the shop (cached, ec_shop_get) -> HMAC with the current
 * or previous secret -> the platform's parser -> ec_row -> the current
 * batch.  ec_flush_cb starts a commit whenever fewer than
 * intake_max_commits are in flight, taking every delivery that queued
 * meanwhile, so under load one INSERT (and one WAL flush) carries many
 * deliveries; each delivery is answered when its INSERT returns.  A batch
 * the server refuses is retried one delivery at a time.
 *
 * The processor (ec_apply_cb) and the RFM job (ec_rfm_cb) are timers that
 * call musubi_ec_apply() and musubi_ec_rfm() in PostgreSQL; both take an
 * advisory lock there, so any number of musubid processes can run them.
 *
 * The first part of the file holds the pure helpers the three parsers
 * share: exact money, times, ids, contact hashes, the normalized document.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>

#include "musubi/app.h"
#include "musubi/config.h"
#include "musubi/crypto.h"
#include "musubi/db.h"
#include "musubi/ec.h"
#include "musubi/httpd.h"
#include "musubi/log.h"
#include "musubi/metrics.h"
#include "musubi/xmalloc.h"

#define EC_APPLY_LIMIT		1000
#define EC_APPLY_POLL_MS	1000
#define EC_APPLY_DELAY_MS	50
#define EC_APPLY_BUSY_MS	200
#define EC_RFM_RETRY_MS		60000
#define EC_SHOP_BUCKETS		64
#define EC_SHOP_MAX		4096
#define EC_SHOP_TTL_MS		5000
#define EC_SHOP_MISS_TTL_MS	1000
#define EC_HEADER_MAX		128

/* Seconds from 1970-01-01 to 10000-01-01. */
#define EC_TIME_END		253402300800LL

/* ---- pure helpers ------------------------------------------------------ */

static json_t	*ec_jstr(const char *);

/* Name a kind as the inbox stores it. */
const char *
ec_kind_name(enum ec_kind k)
{
	switch (k) {
	case EC_ORDER:
		return ("order");
	case EC_REFUND:
		return ("refund");
	case EC_DELETE:
		return ("delete");
	case EC_IGNORED:
		return ("ignored");
	case EC_INVALID:
		break;
	}
	return ("invalid");
}

/* Name a platform as shops.platform does. */
const char *
ec_platform_name(enum ec_platform p)
{
	switch (p) {
	case EC_SHOPIFY:
		return ("shopify");
	case EC_WOOCOMMERCE:
		return ("woocommerce");
	case EC_GENERIC:
		break;
	}
	return ("generic");
}

/* Parse a decimal string into millionths. */
int
ec_money_str(const char *s, int64_t *out, const char **why)
{
	const char	*p = s;
	int64_t		 ip = 0, fp = 0;
	int		 neg = 0, nint = 0, nfrac = 0;

	if (*p == '-') {
		neg = 1;
		p++;
	}
	if (!isdigit((unsigned char)*p)) {
		*why = "not a decimal number";
		return (-1);
	}
	while (*p == '0' && isdigit((unsigned char)p[1]))
		p++;
	for (; isdigit((unsigned char)*p); p++) {
		if (++nint > 12) {
			*why = "out of range (at most 12 integer digits)";
			return (-1);
		}
		ip = ip * 10 + (*p - '0');
	}
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p)) {
			*why = "not a decimal number";
			return (-1);
		}
		for (; isdigit((unsigned char)*p); p++) {
			if (nfrac < 6)
				fp = fp * 10 + (*p - '0');
			else if (*p != '0') {
				*why = "more than 6 decimal places";
				return (-1);
			}
			nfrac++;
		}
		for (; nfrac < 6; nfrac++)
			fp *= 10;
	}
	if (*p != '\0') {
		*why = "not a decimal number";
		return (-1);
	}
	*out = ip * EC_MONEY_SCALE + fp;
	if (neg)
		*out = -*out;
	return (0);
}

/* Parse an amount (string, integer, or real if allowed) into millionths. */
int
ec_money(const json_t *v, int allow_real, int64_t *out, const char **why)
{
	char		 buf[64];
	json_int_t	 i;
	double		 d;

	if (json_is_string(v))
		return (ec_money_str(json_string_value(v), out, why));
	if (json_is_integer(v)) {
		i = json_integer_value(v);
		if (i >= 1000000000000LL || i <= -1000000000000LL) {
			*why = "out of range (at most 12 integer digits)";
			return (-1);
		}
		*out = (int64_t)i * EC_MONEY_SCALE;
		return (0);
	}
	if (json_is_real(v)) {
		d = json_real_value(v);
		if (!allow_real) {
			*why = "a JSON number with a fraction or exponent; "
			    "send amounts as decimal strings";
			return (-1);
		}
		if (!isfinite(d) || fabs(d) >= 1e12) {
			*why = "out of range (at most 12 integer digits)";
			return (-1);
		}
		snprintf(buf, sizeof buf, "%.6f", d);
		return (ec_money_str(buf, out, why));
	}
	*why = "not an amount";
	return (-1);
}

/* Format millionths as a decimal string. */
void
ec_money_format(int64_t v, char out[EC_MONEY_LEN])
{
	uint64_t	 u = v < 0 ? -(uint64_t)v : (uint64_t)v;
	unsigned long long ip = u / EC_MONEY_SCALE, fp = u % EC_MONEY_SCALE;
	int		 n, digits = 6;

	n = snprintf(out, EC_MONEY_LEN, "%s%llu", v < 0 ? "-" : "", ip);
	if (fp == 0)
		return;
	while (fp % 10 == 0) {
		fp /= 10;
		digits--;
	}
	snprintf(out + n, EC_MONEY_LEN - n, ".%0*llu", digits, fp);
}

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm). */
static int64_t
ec_days_from_civil(int64_t y, int m, int d)
{
	int64_t		 era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return (era * 146097 + doe - 719468);
}

/* The civil date of a day count since 1970-01-01. */
static void
ec_civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	int64_t		 era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

/* Read exactly n digits. */
static int
ec_digits(const char **pp, int n, int *out)
{
	const char	*p = *pp;
	int		 v = 0, i;

	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)p[i]))
			return (-1);
		v = v * 10 + (p[i] - '0');
	}
	*pp = p + n;
	*out = v;
	return (0);
}

/* Format Unix seconds and microseconds as UTC. */
static void
ec_time_format(int64_t secs, long usec, char out[EC_TIME_LEN])
{
	int64_t		 y, days = secs / 86400, rem = secs % 86400;
	int		 m, d, n;

	ec_civil_from_days(days, &y, &m, &d);
	n = snprintf(out, EC_TIME_LEN, "%04lld-%02d-%02dT%02d:%02d:%02d",
	    (long long)y, m, d, (int)(rem / 3600), (int)(rem % 3600 / 60),
	    (int)(rem % 60));
	if (usec > 0)
		n += snprintf(out + n, EC_TIME_LEN - n, ".%06ld", usec);
	snprintf(out + n, EC_TIME_LEN - n, "Z");
}

/* Parse an ISO 8601 time into canonical UTC. */
int
ec_time_str(const char *s, int flags, char out[EC_TIME_LEN],
    const char **why)
{
	static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31,
	    30, 31 };
	const char	*p = s;
	int		 y, mo, d, h, mi, sec = 0, oh = 0, om = 0, sign = 0;
	int		 ndig = 0, leap;
	long		 usec = 0;
	int64_t		 t;

	*why = "not an ISO 8601 time such as 2025-01-02T12:00:00+09:00";
	if (ec_digits(&p, 4, &y) != 0 || *p++ != '-' ||
	    ec_digits(&p, 2, &mo) != 0 || *p++ != '-' ||
	    ec_digits(&p, 2, &d) != 0)
		return (-1);
	if (*p != 'T' && *p != 't' && *p != ' ')
		return (-1);
	p++;
	if (ec_digits(&p, 2, &h) != 0 || *p++ != ':' ||
	    ec_digits(&p, 2, &mi) != 0)
		return (-1);
	if (*p == ':') {
		p++;
		if (ec_digits(&p, 2, &sec) != 0)
			return (-1);
		if (*p == '.' || *p == ',') {
			p++;
			if (!isdigit((unsigned char)*p))
				return (-1);
			for (; isdigit((unsigned char)*p); p++) {
				if (ndig < 6)
					usec = usec * 10 + (*p - '0');
				ndig++;
			}
			for (; ndig < 6; ndig++)
				usec *= 10;
		}
	}
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-') {
		sign = *p++ == '-' ? -1 : 1;
		if (ec_digits(&p, 2, &oh) != 0)
			return (-1);
		if (*p == ':')
			p++;
		if (isdigit((unsigned char)*p) && ec_digits(&p, 2, &om) != 0)
			return (-1);
	} else if (!(flags & EC_TIME_UTC)) {
		*why = "a time without a UTC offset; add Z or +09:00";
		return (-1);
	}
	if (*p != '\0')
		return (-1);
	leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (mo < 1 || mo > 12 || d < 1 ||
	    d > mdays[mo - 1] + (mo == 2 && leap) || h > 23 || mi > 59 ||
	    sec > 59 || oh > 23 || om > 59) {
		*why = "not a valid date and time";
		return (-1);
	}
	t = ec_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
	t -= (int64_t)sign * (oh * 3600 + om * 60);
	if (t < 0 || t >= EC_TIME_END) {
		*why = "out of range (years 1970 to 9999)";
		return (-1);
	}
	ec_time_format(t, usec, out);
	return (0);
}

/* Parse a time value (string, or integer seconds if allowed). */
int
ec_time(const json_t *v, int flags, char out[EC_TIME_LEN], const char **why)
{
	const char	*s = json_string_value(v);
	json_int_t	 i;
	size_t		 k = 0;

	if (s != NULL && (flags & EC_TIME_EPOCH)) {
		/* Templates render Unix seconds as strings too. */
		while (isdigit((unsigned char)s[k]))
			k++;
	}
	if (s != NULL && (k == 0 || k > 12 || s[k] != '\0'))
		return (ec_time_str(s, flags, out, why));
	if (!(flags & EC_TIME_EPOCH) || (s == NULL && !json_is_integer(v))) {
		*why = (flags & EC_TIME_EPOCH) ? "not an ISO 8601 time or Unix "
		    "seconds" : "not an ISO 8601 time string";
		return (-1);
	}
	i = s != NULL ? strtoll(s, NULL, 10) : json_integer_value(v);
	if (i < 0 || i >= EC_TIME_END) {
		*why = "out of range (years 1970 to 9999)";
		return (-1);
	}
	ec_time_format(i, 0, out);
	return (0);
}

/* Read an exact external id. */
char *
ec_id(const json_t *v, const char **why)
{
	char		 buf[32];
	const char	*s;
	size_t		 i, n;

	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0) {
			*why = "a negative id";
			return (NULL);
		}
		snprintf(buf, sizeof buf, "%lld",
		    (long long)json_integer_value(v));
		return (xstrdup(buf));
	}
	if (json_is_real(v)) {
		*why = "a JSON number with a fraction or exponent: not an "
		    "exact id";
		return (NULL);
	}
	if (!json_is_string(v)) {
		*why = v == NULL || json_is_null(v) ? "missing" :
		    "not an id (string or integer)";
		return (NULL);
	}
	s = json_string_value(v);
	n = json_string_length(v);
	if (n == 0 || n > EC_ID_MAX) {
		*why = n == 0 ? "empty" : "longer than 128 bytes";
		return (NULL);
	}
	for (i = 0; i < n; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
			*why = "contains control characters";
			return (NULL);
		}
	}
	return (xstrndup(s, n));
}

/* Copy a string value cut to maxchars UTF-8 characters. */
char *
ec_text(const json_t *v, size_t maxchars)
{
	const char	*s;
	size_t		 i, n, chars = 0;

	if (!json_is_string(v))
		return (NULL);
	s = json_string_value(v);
	n = json_string_length(v);
	if (n == 0)
		return (NULL);
	for (i = 0; i < n; i++) {
		if (((unsigned char)s[i] & 0xc0) == 0x80)
			continue;
		if (chars++ == maxchars)
			break;
	}
	return (xstrndup(s, i));
}

/* Hash a normalized string. */
static void
ec_hash(const char *s, char out[EC_HASH_LEN])
{
	unsigned char	 md[CRYPTO_SHA256_LEN];

	crypto_sha256(s, strlen(s), md);
	crypto_hex(md, sizeof md, out);
}

/* Hash an email address. */
void
ec_email_hash(const char *email, char out[EC_HASH_LEN])
{
	char		 buf[256];
	const char	*at;
	size_t		 n, i;

	out[0] = '\0';
	if (email == NULL)
		return;
	while (isspace((unsigned char)*email))
		email++;
	n = strlen(email);
	while (n > 0 && isspace((unsigned char)email[n - 1]))
		n--;
	if (n < 3 || n >= sizeof buf)
		return;
	for (i = 0; i < n; i++)
		buf[i] = (char)tolower((unsigned char)email[i]);
	buf[n] = '\0';
	if ((at = strchr(buf, '@')) == NULL || at == buf || at[1] == '\0' ||
	    strchr(at + 1, '@') != NULL)
		return;
	ec_hash(buf, out);
}

/* Hash a phone number in E.164, Japan by default. */
void
ec_phone_hash(const char *phone, char out[EC_HASH_LEN])
{
	char		 digits[32], e164[40];
	const char	*p;
	size_t		 n = 0;
	int		 plus = 0;

	out[0] = '\0';
	if (phone == NULL)
		return;
	for (p = phone; isspace((unsigned char)*p); p++)
		;
	if (*p == '+') {
		plus = 1;
		p++;
	}
	for (; *p != '\0'; p++) {
		if (isdigit((unsigned char)*p)) {
			if (n + 1 >= sizeof digits)
				return;
			digits[n++] = *p;
		} else if (strchr(" -().", *p) == NULL)
			return;
	}
	digits[n] = '\0';
	if (plus)
		snprintf(e164, sizeof e164, "+%s", digits);
	else if (digits[0] == '0' && digits[1] == '0')
		snprintf(e164, sizeof e164, "+%s", digits + 2);
	else if (digits[0] == '0')
		snprintf(e164, sizeof e164, "+81%s", digits + 1);
	else
		snprintf(e164, sizeof e164, "+%s", digits);
	n = strlen(e164) - 1;
	if (n < 8 || n > 15)
		return;
	ec_hash(e164, out);
}

/* Find musubi_t in a URL's query string. */
char *
ec_url_token(const char *url)
{
	const char	*p, *end, *v;
	size_t		 n;

	if (url == NULL || (p = strchr(url, '?')) == NULL ||
	    (size_t)(p - url) > strcspn(url, "#"))
		return (NULL);
	p++;
	while (*p != '\0' && *p != '#') {
		end = p + strcspn(p, "&;#");
		if (strncmp(p, "musubi_t=", 9) == 0) {
			v = p + 9;
			n = (size_t)(end - v);
			if (n == 0 || n > EC_TOKEN_MAX)
				return (NULL);
			return (xstrndup(v, n));
		}
		p = *end == '&' || *end == ';' ? end + 1 : end;
	}
	return (NULL);
}

/* Record why an event cannot be used. */
void
ec_problem(struct ec_event *ev, const char *path, const char *fmt, ...)
{
	va_list	 ap;

	if (ev->problem != NULL)
		return;
	va_start(ap, fmt);
	xvasprintf(&ev->problem, fmt, ap);
	va_end(ap);
	free(ev->path);
	ev->path = xstrdup(path != NULL ? path : "");
	ev->kind = EC_INVALID;
}

/* Note a correction or a doubt. */
void
ec_flag(struct ec_event *ev, const char *fmt, ...)
{
	va_list	 ap;
	char	*s;

	if (ev->nflags >= 32)
		return;
	va_start(ap, fmt);
	xvasprintf(&s, fmt, ap);
	va_end(ap);
	ev->flags = xreallocarray(ev->flags, ev->nflags + 1,
	    sizeof *ev->flags);
	ev->flags[ev->nflags++] = s;
}

/* Look a member up; NULL when absent. */
const json_t *
ec_member(const json_t *obj, const char *key, int flags)
{
	const json_t	*v;

	if (!json_is_object(obj))
		return (NULL);
	v = json_object_get(obj, key);
	if (v == NULL || json_is_null(v))
		return (NULL);
	if ((flags & EC_F_LENIENT) && json_is_string(v) &&
	    json_string_length(v) == 0)
		return (NULL);
	return (v);
}

/* Build the JSON pointer of a member. */
static void
ec_path(char *buf, size_t len, const char *parent, const char *key)
{
	snprintf(buf, len, "%s/%s", parent != NULL ? parent : "", key);
}

/* The absent case of the getters. */
static int
ec_absent(struct ec_event *ev, const char *path, int flags)
{
	if (flags & EC_F_REQUIRED) {
		ec_problem(ev, path, "%s is required", path);
		return (-1);
	}
	return (1);
}

/* Read an amount member. */
int
ec_get_money(struct ec_event *ev, const json_t *obj, const char *key,
    const char *parent, int flags, int64_t *out)
{
	const json_t	*v = ec_member(obj, key, flags);
	const char	*why;
	char		 path[256];

	ec_path(path, sizeof path, parent, key);
	if (v == NULL)
		return (ec_absent(ev, path, flags));
	if (ec_money(v, flags & EC_F_REAL, out, &why) != 0) {
		ec_problem(ev, path, "%s: %s", path, why);
		return (-1);
	}
	if ((flags & EC_F_NONNEG) && *out < 0) {
		ec_problem(ev, path, "%s: a negative amount", path);
		return (-1);
	}
	return (0);
}

/* Read a time member. */
int
ec_get_time(struct ec_event *ev, const json_t *obj, const char *key,
    const char *parent, int flags, char out[EC_TIME_LEN])
{
	const json_t	*v = ec_member(obj, key, flags);
	const char	*why;
	char		 path[256];

	ec_path(path, sizeof path, parent, key);
	if (v == NULL)
		return (ec_absent(ev, path, flags));
	if (ec_time(v, flags, out, &why) != 0) {
		out[0] = '\0';
		ec_problem(ev, path, "%s: %s", path, why);
		return (-1);
	}
	return (0);
}

/* Read an id member. */
int
ec_get_id(struct ec_event *ev, const json_t *obj, const char *key,
    const char *parent, int flags, char **out)
{
	const json_t	*v = ec_member(obj, key, flags);
	const char	*why;
	char		 path[256];

	ec_path(path, sizeof path, parent, key);
	*out = NULL;
	if (v == NULL)
		return (ec_absent(ev, path, flags));
	if ((*out = ec_id(v, &why)) == NULL) {
		ec_problem(ev, path, "%s: %s", path, why);
		return (-1);
	}
	return (0);
}

/* Read a quantity member. */
int
ec_get_quantity(struct ec_event *ev, const json_t *obj, const char *key,
    const char *parent, int flags, int64_t *out)
{
	const json_t	*v = ec_member(obj, key, flags);
	const char	*s;
	char		 path[256], *end;
	long long	 n;

	ec_path(path, sizeof path, parent, key);
	if (v == NULL)
		return (ec_absent(ev, path, flags));
	if (json_is_integer(v))
		n = json_integer_value(v);
	else if ((flags & EC_F_LENIENT) && json_is_string(v)) {
		s = json_string_value(v);
		n = strtoll(s, &end, 10);
		if (!isdigit((unsigned char)*s) && *s != '-')
			end = (char *)s;
		if (end == s || *end != '\0' ||
		    (size_t)(end - s) != json_string_length(v) ||
		    strlen(s) > 9) {
			ec_problem(ev, path, "%s: not an integer", path);
			return (-1);
		}
	} else {
		ec_problem(ev, path, "%s: not an integer", path);
		return (-1);
	}
	if (n < 0) {
		ec_problem(ev, path, "%s: a negative quantity", path);
		return (-1);
	}
	if (n > EC_QUANTITY_MAX) {
		ec_problem(ev, path, "%s: more than %d", path,
		    EC_QUANTITY_MAX);
		return (-1);
	}
	*out = n;
	return (0);
}

/* Read a boolean member. */
int
ec_get_bool(struct ec_event *ev, const json_t *obj, const char *key,
    const char *parent, int flags, int *out)
{
	const json_t	*v = ec_member(obj, key, flags);
	const char	*s;
	char		 path[256];

	ec_path(path, sizeof path, parent, key);
	*out = 0;
	if (v == NULL)
		return (ec_absent(ev, path, flags));
	if (json_is_boolean(v)) {
		*out = json_is_true(v);
		return (0);
	}
	if (flags & EC_F_LENIENT) {
		if (json_is_integer(v) && (json_integer_value(v) == 0 ||
		    json_integer_value(v) == 1)) {
			*out = json_integer_value(v) == 1;
			return (0);
		}
		s = json_is_string(v) ? json_string_value(v) : "";
		if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0) {
			*out = 1;
			return (0);
		}
		if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
			return (0);
	}
	ec_problem(ev, path, "%s: not a boolean", path);
	return (-1);
}

/* Read a currency code member. */
int
ec_get_currency(struct ec_event *ev, const json_t *obj, const char *key,
    const char *parent, int flags, char **out)
{
	const json_t	*v = ec_member(obj, key, flags);
	const char	*s;
	char		 path[256];

	ec_path(path, sizeof path, parent, key);
	*out = NULL;
	if (v == NULL)
		return (ec_absent(ev, path, flags));
	s = json_is_string(v) ? json_string_value(v) : "";
	if (strlen(s) != 3 || !isupper((unsigned char)s[0]) ||
	    !isupper((unsigned char)s[1]) || !isupper((unsigned char)s[2])) {
		ec_problem(ev, path, "%s: not an ISO 4217 currency code",
		    path);
		return (-1);
	}
	*out = xstrdup(s);
	return (0);
}

/* Copy [{name, value}] pairs, values as strings, within limits. */
json_t *
ec_name_values(const json_t *arr)
{
	json_t		*out = json_array(), *v, *val;
	const json_t	*n;
	char		*name, *text, buf[64];
	size_t		 i;

	json_array_foreach(arr, i, v) {
		if (i >= 100)
			break;
		n = json_object_get(v, "name");
		if (n == NULL)
			n = json_object_get(v, "key");
		if ((name = ec_text(n, 200)) == NULL)
			continue;
		val = json_object_get(v, "value");
		if (json_is_string(val))
			text = ec_text(val, 2000);
		else if (json_is_integer(val)) {
			snprintf(buf, sizeof buf, "%lld",
			    (long long)json_integer_value(val));
			text = xstrdup(buf);
		} else if (json_is_boolean(val))
			text = xstrdup(json_is_true(val) ? "true" : "false");
		else
			text = NULL;
		json_array_append_new(out, json_pack("{s:s, s:o}", "name",
		    name, "value", ec_jstr(text)));
		free(name);
		free(text);
	}
	return (out);
}

/* Find musubi_t (or _musubi_t) in [{name, value}] pairs. */
char *
ec_attr_token(const json_t *arr)
{
	const json_t	*v, *n, *val;
	const char	*name;
	size_t		 i;

	json_array_foreach(arr, i, v) {
		n = json_object_get(v, "name");
		if (n == NULL)
			n = json_object_get(v, "key");
		val = json_object_get(v, "value");
		if (!json_is_string(n) || !json_is_string(val))
			continue;
		name = json_string_value(n);
		if (strcmp(name, "musubi_t") != 0 &&
		    strcmp(name, "_musubi_t") != 0)
			continue;
		if (json_string_length(val) == 0 ||
		    json_string_length(val) > EC_TOKEN_MAX)
			return (NULL);
		return (xstrdup(json_string_value(val)));
	}
	return (NULL);
}

/* Multiply money, checked. */
int
ec_money_mul(int64_t a, int64_t b, int64_t *out)
{
	int64_t	 r;

	if (__builtin_mul_overflow(a, b, &r) || r > EC_MONEY_MAX ||
	    r < -EC_MONEY_MAX)
		return (-1);
	*out = r;
	return (0);
}

/* Add money, checked. */
int
ec_money_add(int64_t a, int64_t b, int64_t *out)
{
	int64_t	 r;

	if (__builtin_add_overflow(a, b, &r) || r > EC_MONEY_MAX ||
	    r < -EC_MONEY_MAX)
		return (-1);
	*out = r;
	return (0);
}

/* Replace NUL characters inside strings with U+FFFD, recursively. */
static void
ec_sanitize(json_t *j, int depth)
{
	const char	*key;
	json_t		*v;
	size_t		 i, len, n;
	char		*out;
	const char	*s;

	if (depth > 64)
		return;
	if (json_is_object(j)) {
		json_object_foreach(j, key, v)
			ec_sanitize(v, depth + 1);
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, v)
			ec_sanitize(v, depth + 1);
	} else if (json_is_string(j)) {
		s = json_string_value(j);
		len = json_string_length(j);
		if (strlen(s) == len)
			return;
		out = xmalloc(len * 3 + 1);
		for (i = 0, n = 0; i < len; i++) {
			if (s[i] == '\0') {
				memcpy(out + n, "\xef\xbf\xbd", 3);
				n += 3;
			} else
				out[n++] = s[i];
		}
		json_string_setn(j, out, n);
		free(out);
	}
}

/* Load a body as a JSON object. */
json_t *
ec_load(const void *body, size_t len, int *storable, char **cause)
{
	json_error_t	 err;
	json_t		*j, *k;

	*storable = 0;
	j = json_loadb(body, len, JSON_ALLOW_NUL, &err);
	if (j == NULL) {
		if (json_error_code(&err) == json_error_numeric_overflow &&
		    (k = json_loadb(body, len, JSON_ALLOW_NUL |
		    JSON_DECODE_INT_AS_REAL, NULL)) != NULL) {
			json_decref(k);
			*storable = 1;
			xsetcause(cause, "a number is out of range at line "
			    "%d, column %d: %s", err.line, err.column,
			    err.text);
			return (NULL);
		}
		xsetcause(cause, "invalid JSON at line %d, column %d: %s",
		    err.line, err.column, err.text);
		return (NULL);
	}
	if (!json_is_object(j)) {
		json_decref(j);
		*storable = 1;
		xsetcause(cause, "the body is not a JSON object");
		return (NULL);
	}
	ec_sanitize(j, 0);
	return (j);
}

/* Free a refund's contents. */
static void
ec_refund_clear(struct ec_refund *r)
{
	size_t	 i;

	for (i = 0; i < r->nitems; i++)
		free(r->items[i].line_id);
	free(r->items);
	free(r->id);
	free(r->order_id);
	free(r->note);
}

/* Free an event's contents. */
void
ec_event_free(struct ec_event *ev)
{
	struct ec_order	*o = &ev->order;
	size_t		 i;

	for (i = 0; i < o->nitems; i++) {
		free(o->items[i].line_id);
		free(o->items[i].product_id);
		free(o->items[i].variant_id);
		free(o->items[i].sku);
		free(o->items[i].title);
		free(o->items[i].vendor);
	}
	free(o->items);
	for (i = 0; i < o->nrefunds; i++)
		ec_refund_clear(&o->refunds[i]);
	free(o->refunds);
	free(o->id);
	free(o->number);
	free(o->currency);
	free(o->presentment_currency);
	free(o->status);
	free(o->financial_status);
	free(o->cancel_reason);
	free(o->source_name);
	free(o->customer.id);
	free(o->customer.key);
	free(o->customer.first_name);
	free(o->customer.last_name);
	free(o->landing_site);
	free(o->referring_site);
	free(o->attribution_token);
	json_decref(o->note_attributes);
	ec_refund_clear(&ev->refund);
	for (i = 0; i < ev->nflags; i++)
		free(ev->flags[i]);
	free(ev->flags);
	free(ev->entity_id);
	free(ev->event_id);
	free(ev->problem);
	free(ev->path);
	memset(ev, 0, sizeof *ev);
}

/* A string or JSON null. */
static json_t *
ec_jstr(const char *s)
{
	json_t	*j;

	if (s == NULL || *s == '\0')
		return (json_null());
	if ((j = json_string(s)) == NULL)	/* not UTF-8: cannot happen */
		j = json_null();
	return (j);
}

/* An amount as a JSON decimal string. */
static json_t *
ec_jmoney(int64_t v)
{
	char	 buf[EC_MONEY_LEN];

	ec_money_format(v, buf);
	return (json_string(buf));
}

/* The flags as a JSON array. */
static json_t *
ec_jflags(const struct ec_event *ev)
{
	json_t	*a = json_array();
	size_t	 i;

	for (i = 0; i < ev->nflags; i++)
		json_array_append_new(a, ec_jstr(ev->flags[i]));
	return (a);
}

/* A refund as the inbox document holds it. */
static json_t *
ec_refund_doc(const struct ec_refund *r, const struct ec_event *ev)
{
	json_t	*j, *items = json_array();
	size_t	 i;

	for (i = 0; i < r->nitems; i++) {
		json_array_append_new(items, json_pack("{s:o, s:I, s:o}",
		    "line_id", ec_jstr(r->items[i].line_id),
		    "quantity", (json_int_t)r->items[i].quantity,
		    "amount", ec_jmoney(r->items[i].amount)));
	}
	j = json_pack("{s:o, s:o, s:o, s:o, s:b, s:o, s:o}",
	    "id", ec_jstr(r->id),
	    "order_id", ec_jstr(r->order_id),
	    "amount", ec_jmoney(r->amount),
	    "created_at", ec_jstr(r->created_at),
	    "estimated", r->estimated,
	    "note", ec_jstr(r->note),
	    "items", items);
	if (ev != NULL)
		json_object_set_new(j, "flags", ec_jflags(ev));
	return (j);
}

/* The normalized document of an event. */
json_t *
ec_event_doc(const struct ec_event *ev)
{
	const struct ec_order	*o = &ev->order;
	const struct ec_item	*it;
	json_t			*j, *items, *refunds, *cust = NULL;
	size_t			 i;

	switch (ev->kind) {
	case EC_REFUND:
		return (json_pack("{s:s, s:o}", "kind", "refund", "refund",
		    ec_refund_doc(&ev->refund, ev)));
	case EC_DELETE:
		return (json_pack("{s:s, s:o}", "kind", "delete", "order_id",
		    ec_jstr(o->id)));
	case EC_ORDER:
		break;
	default:
		return (NULL);
	}
	items = json_array();
	for (i = 0; i < o->nitems; i++) {
		it = &o->items[i];
		json_array_append_new(items, json_pack(
		    "{s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:o, s:o}",
		    "line_id", ec_jstr(it->line_id),
		    "product_id", ec_jstr(it->product_id),
		    "variant_id", ec_jstr(it->variant_id),
		    "sku", ec_jstr(it->sku),
		    "title", ec_jstr(it->title),
		    "vendor", ec_jstr(it->vendor),
		    "quantity", (json_int_t)it->quantity,
		    "price", ec_jmoney(it->price),
		    "total", ec_jmoney(it->total)));
	}
	refunds = json_array();
	for (i = 0; i < o->nrefunds; i++)
		json_array_append_new(refunds, ec_refund_doc(&o->refunds[i],
		    NULL));
	if (o->has_customer && o->customer.key != NULL) {
		cust = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}",
		    "id", ec_jstr(o->customer.id),
		    "key", ec_jstr(o->customer.key),
		    "email_hash", ec_jstr(o->customer.email_hash),
		    "phone_hash", ec_jstr(o->customer.phone_hash),
		    "first_name", ec_jstr(o->customer.first_name),
		    "last_name", ec_jstr(o->customer.last_name));
	}
	j = json_object();
	json_object_set_new(j, "id", ec_jstr(o->id));
	json_object_set_new(j, "number", ec_jstr(o->number));
	json_object_set_new(j, "currency", ec_jstr(o->currency));
	json_object_set_new(j, "presentment_currency",
	    ec_jstr(o->presentment_currency));
	json_object_set_new(j, "status", ec_jstr(o->status));
	json_object_set_new(j, "financial_status",
	    ec_jstr(o->financial_status));
	json_object_set_new(j, "cancel_reason", ec_jstr(o->cancel_reason));
	json_object_set_new(j, "source_name", ec_jstr(o->source_name));
	json_object_set_new(j, "test", json_boolean(o->test));
	json_object_set_new(j, "restored", json_boolean(o->restored));
	json_object_set_new(j, "placed_at", ec_jstr(o->placed_at));
	json_object_set_new(j, "updated_at", ec_jstr(o->updated_at));
	json_object_set_new(j, "paid_at", ec_jstr(o->paid_at));
	json_object_set_new(j, "cancelled_at", ec_jstr(o->cancelled_at));
	json_object_set_new(j, "gross", ec_jmoney(o->gross));
	json_object_set_new(j, "current_total", ec_jmoney(o->current_total));
	json_object_set_new(j, "customer", cust != NULL ? cust : json_null());
	json_object_set_new(j, "landing_site", ec_jstr(o->landing_site));
	json_object_set_new(j, "referring_site", ec_jstr(o->referring_site));
	json_object_set_new(j, "attribution_token",
	    ec_jstr(o->attribution_token));
	json_object_set_new(j, "note_attributes", o->note_attributes != NULL ?
	    json_incref(o->note_attributes) : json_array());
	json_object_set_new(j, "items", items);
	json_object_set_new(j, "refunds", refunds);
	json_object_set_new(j, "flags", ec_jflags(ev));
	return (json_pack("{s:s, s:o}", "kind", "order", "order", j));
}

/* ---- the intake -------------------------------------------------------- */

struct ec;

struct ec_shop {
	char		*slug;
	int		 found;
	int64_t		 id;
	int64_t		 channel_id;
	enum ec_platform platform;
	char		*currency;
	char		*domain;
	char		*secret;
	char		*previous;
	struct timespec	 expires;
	struct ec_shop	*next;
};

struct ec_route {
	struct ec	*ec;
	enum ec_platform platform;
};

struct ec_batch {
	struct ec	 *ec;
	char		**rows;
	size_t		 *lens;
	struct http_req	**reqs;
	size_t		  n;
	size_t		  cap;
	int		  single;	/* a split retry: do not split again */
};

struct ec {
	struct app	*app;
	struct ec_route	 routes[3];
	struct ec_shop	*shops[EC_SHOP_BUCKETS];
	size_t		 nshops;
	struct ec_batch	*cur;
	int		 commits;	/* in flight */
	int		 max_commits;
	struct event	*flush_ev;
	struct event	*apply_ev;
	struct event	*rfm_ev;
	int		 applying;
	int		 apply_wanted;	/* commits during an apply */
	int		 rfm_running;
	int		 stopping;
};

static const char ec_insert_sql[] =
    "INSERT INTO ec_webhook_events (channel_id, shop_id, platform, topic, "
    "delivery_id, event_id, triggered_at, request_id, kind, entity_id, "
    "payload, doc, state, problem) "
    "SELECT r.c, r.s, r.p, r.t, r.d, r.e, r.g, r.q, r.k, r.i, r.b, r.n, "
    "CASE r.k WHEN 'invalid' THEN 2 WHEN 'ignored' THEN 3 ELSE 0 END, r.x "
    "FROM json_to_recordset($1::json) AS r(c bigint, s bigint, p text, "
    "t text, d text, e text, g timestamptz, q text, k text, i text, "
    "b json, n jsonb, x text) "
    "ON CONFLICT (channel_id, shop_id, delivery_id) DO NOTHING";

static void	ec_webhook_cb(struct http_req *, void *);
static void	ec_flush_cb(evutil_socket_t, short, void *);
static void	ec_apply_cb(evutil_socket_t, short, void *);
static void	ec_rfm_cb(evutil_socket_t, short, void *);

/* Make an empty batch. */
static struct ec_batch *
ec_batch_new(struct ec *ec)
{
	struct ec_batch	*b = xcalloc(1, sizeof *b);

	b->ec = ec;
	return (b);
}

/* Free a batch (its requests must have been answered). */
static void
ec_batch_free(struct ec_batch *b)
{
	size_t	 i;

	for (i = 0; i < b->n; i++)
		free(b->rows[i]);
	free(b->rows);
	free(b->lens);
	free(b->reqs);
	free(b);
}

/* Add a request and its row to a batch; steals row. */
static void
ec_batch_add(struct ec_batch *b, struct http_req *req, char *row, size_t len)
{
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 16;
		b->rows = xreallocarray(b->rows, b->cap, sizeof *b->rows);
		b->lens = xreallocarray(b->lens, b->cap, sizeof *b->lens);
		b->reqs = xreallocarray(b->reqs, b->cap, sizeof *b->reqs);
	}
	b->rows[b->n] = row;
	b->lens[b->n] = len;
	b->reqs[b->n] = req;
	b->n++;
}

/* Arm a one-shot timer in ms. */
static void
ec_arm(struct event *ev, long ms)
{
	struct timeval	 tv = { ms / 1000, (ms % 1000) * 1000 };

	if (evtimer_add(ev, &tv) != 0)
		log_warnx("ec: cannot arm a timer");
}

/* Create the intake and register its routes. */
struct ec *
ec_new(struct app *app)
{
	struct ec	*ec = xcalloc(1, sizeof *ec);
	int		 i;

	ec->app = app;
	ec->cur = ec_batch_new(ec);
	ec->max_commits = app->cfg->intake_max_commits;
	ec->flush_ev = event_new(app->base, -1, 0, ec_flush_cb, ec);
	ec->apply_ev = evtimer_new(app->base, ec_apply_cb, ec);
	ec->rfm_ev = evtimer_new(app->base, ec_rfm_cb, ec);
	for (i = 0; i < 3; i++) {
		ec->routes[i].ec = ec;
		ec->routes[i].platform = (enum ec_platform)i;
	}
	httpd_route_limit(app->httpd, HTTP_POST, "/webhooks/shopify/{shop}",
	    EC_MAX_BODY, ec_webhook_cb, &ec->routes[EC_SHOPIFY]);
	httpd_route_limit(app->httpd, HTTP_POST,
	    "/webhooks/woocommerce/{shop}", EC_MAX_BODY, ec_webhook_cb,
	    &ec->routes[EC_WOOCOMMERCE]);
	httpd_route_limit(app->httpd, HTTP_POST, "/webhooks/ec/{shop}",
	    EC_MAX_BODY, ec_webhook_cb, &ec->routes[EC_GENERIC]);
	metrics_describe(app->metrics, "musubi_ec_deliveries_total",
	    "counter", "Shop webhook deliveries answered, by platform and "
	    "result.");
	metrics_describe(app->metrics, "musubi_ec_events_total", "counter",
	    "Shop webhook events applied or rejected by the processor.");
	metrics_describe(app->metrics, "musubi_ec_commits_total", "counter",
	    "Group commits of the shop webhook inbox.");
	metrics_describe(app->metrics, "musubi_ec_rfm_runs_total", "counter",
	    "Runs of the RFM job, by result.");
	return (ec);
}

/* Start the processor and the RFM job. */
int
ec_start(struct ec *ec)
{
	ec_arm(ec->apply_ev, 0);
	ec_arm(ec->rfm_ev, 0);
	return (0);
}

/* Stop claiming new work. */
void
ec_stop(struct ec *ec)
{
	ec->stopping = 1;
	evtimer_del(ec->apply_ev);
	evtimer_del(ec->rfm_ev);
}

/* Tell whether work is in flight. */
int
ec_busy(const struct ec *ec)
{
	return (ec->commits > 0 || ec->cur->n > 0 || ec->applying ||
	    ec->rfm_running);
}

/* Free a cached shop. */
static void
ec_shop_free(struct ec_shop *s)
{
	free(s->slug);
	free(s->currency);
	free(s->domain);
	if (s->secret != NULL) {
		explicit_bzero(s->secret, strlen(s->secret));
		free(s->secret);
	}
	if (s->previous != NULL) {
		explicit_bzero(s->previous, strlen(s->previous));
		free(s->previous);
	}
	free(s);
}

/* Drop every cached shop. */
void
ec_flush_shops(struct ec *ec)
{
	struct ec_shop	*s, *n;
	size_t		 i;

	if (ec == NULL)
		return;
	for (i = 0; i < EC_SHOP_BUCKETS; i++) {
		for (s = ec->shops[i]; s != NULL; s = n) {
			n = s->next;
			ec_shop_free(s);
		}
		ec->shops[i] = NULL;
	}
	ec->nshops = 0;
}

/* Free the intake. */
void
ec_free(struct ec *ec)
{
	size_t	 i;

	if (ec == NULL)
		return;
	for (i = 0; i < ec->cur->n; i++)
		http_reply_error(ec->cur->reqs[i], 503, "shutting_down", NULL,
		    "musubid is shutting down; retry");
	ec_batch_free(ec->cur);
	ec_flush_shops(ec);
	event_free(ec->flush_ev);
	event_free(ec->apply_ev);
	event_free(ec->rfm_ev);
	free(ec);
}

/* Bucket of a slug. */
static size_t
ec_shop_bucket(const char *slug)
{
	size_t	 h = 5381;

	while (*slug != '\0')
		h = h * 33 + (unsigned char)*slug++;
	return (h % EC_SHOP_BUCKETS);
}

/* Find a fresh cache entry. */
static struct ec_shop *
ec_shop_find(struct ec *ec, const char *slug)
{
	struct ec_shop	*s;
	struct timespec	 now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	for (s = ec->shops[ec_shop_bucket(slug)]; s != NULL; s = s->next) {
		if (strcmp(s->slug, slug) != 0)
			continue;
		if (now.tv_sec > s->expires.tv_sec ||
		    (now.tv_sec == s->expires.tv_sec &&
		    now.tv_nsec >= s->expires.tv_nsec))
			return (NULL);
		return (s);
	}
	return (NULL);
}

/* Cache a shop (or its absence), replacing an older entry. */
static struct ec_shop *
ec_shop_put(struct ec *ec, struct ec_shop *e)
{
	struct ec_shop	**pp, *old;
	size_t		  b = ec_shop_bucket(e->slug);
	long		  ttl = e->found ? EC_SHOP_TTL_MS : EC_SHOP_MISS_TTL_MS;

	if (ec->nshops >= EC_SHOP_MAX)
		ec_flush_shops(ec);
	for (pp = &ec->shops[b]; *pp != NULL; pp = &(*pp)->next) {
		if (strcmp((*pp)->slug, e->slug) == 0) {
			old = *pp;
			*pp = old->next;
			ec_shop_free(old);
			ec->nshops--;
			break;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &e->expires);
	e->expires.tv_sec += ttl / 1000;
	e->expires.tv_nsec += (ttl % 1000) * 1000000;
	if (e->expires.tv_nsec >= 1000000000) {
		e->expires.tv_sec++;
		e->expires.tv_nsec -= 1000000000;
	}
	e->next = ec->shops[b];
	ec->shops[b] = e;
	ec->nshops++;
	return (e);
}

/* Keep a header value only if it is short printable ASCII. */
static const char *
ec_header(struct http_req *req, const char *name, const char *alt)
{
	const char	*v = http_req_header(req, name);
	size_t		 i;

	if (v == NULL && alt != NULL)
		v = http_req_header(req, alt);
	if (v == NULL)
		return (NULL);
	for (i = 0; v[i] != '\0'; i++) {
		if (i >= EC_HEADER_MAX || v[i] <= 0x20 || v[i] >= 0x7f)
			return (NULL);
	}
	return (i > 0 ? v : NULL);
}

/* Count a delivery's result. */
static void
ec_count(struct ec *ec, enum ec_platform p, const char *result)
{
	char	 labels[96];

	snprintf(labels, sizeof labels, "platform=\"%s\",result=\"%s\"",
	    ec_platform_name(p), result);
	metrics_add(ec->app->metrics, "musubi_ec_deliveries_total", labels, 1);
}

/* Check the body's HMAC against the shop's secrets. */
static int
ec_verify(const struct ec_shop *s, const unsigned char *body, size_t len,
    const char *sig)
{
	const char	*keys[2] = { s->secret, s->previous };
	char		*dec;
	int		 i, ok = 0;

	if (sig == NULL)
		return (-1);
	for (i = 0; i < 2; i++) {
		if (keys[i] == NULL || *keys[i] == '\0')
			continue;
		if (crypto_verify_hmac_b64(keys[i], strlen(keys[i]), body, len,
		    sig) == 0)
			ok = 1;
		if (s->platform != EC_WOOCOMMERCE)
			continue;
		dec = woocommerce_secret(keys[i]);
		if (strcmp(dec, keys[i]) != 0 &&
		    crypto_verify_hmac_b64(dec, strlen(dec), body, len,
		    sig) == 0)
			ok = 1;
		explicit_bzero(dec, strlen(dec));
		free(dec);
	}
	return (ok ? 0 : -1);
}

/*
 * Build the inbox row of a delivery: JSON with the body appended
 * verbatim, except that \u0000 escapes (which PostgreSQL cannot hold in
 * text) become \ufffd.  New string of *outlen bytes.
 */
static char *
ec_row(const struct ec_shop *s, const char *topic, const char *delivery,
    const char *event_id, const char *triggered, const char *rid,
    const struct ec_event *ev, const unsigned char *body, size_t len,
    size_t *outlen)
{
	json_t		*r = json_object(), *doc = ec_event_doc(ev);
	char		*head, *out;
	size_t		 hlen, i, n;

	json_object_set_new(r, "c", json_integer(s->channel_id));
	json_object_set_new(r, "s", json_integer(s->id));
	json_object_set_new(r, "p", json_string(ec_platform_name(
	    s->platform)));
	json_object_set_new(r, "t", json_string(topic));
	json_object_set_new(r, "d", json_string(delivery));
	json_object_set_new(r, "e", ec_jstr(event_id));
	json_object_set_new(r, "g", ec_jstr(triggered));
	json_object_set_new(r, "q", ec_jstr(rid));
	json_object_set_new(r, "k", json_string(ec_kind_name(ev->kind)));
	json_object_set_new(r, "i", ec_jstr(ev->entity_id));
	json_object_set_new(r, "x", ec_jstr(ev->problem));
	json_object_set_new(r, "n", doc != NULL ? doc : json_null());
	if ((head = json_dumps(r, JSON_COMPACT)) == NULL)
		fatalx("ec: json_dumps failed");
	json_decref(r);
	hlen = strlen(head);
	out = xmalloc(hlen + len + 16);
	memcpy(out, head, hlen - 1);		/* without the final '}' */
	n = hlen - 1;
	memcpy(out + n, ",\"b\":", 5);
	n += 5;
	for (i = 0; i < len; i++) {
		if (body[i] == '\\' && i + 5 < len &&
		    memcmp(body + i, "\\u0000", 6) == 0) {
			memcpy(out + n, "\\ufffd", 6);
			n += 6;
			i += 5;
		} else if (body[i] == '\\' && i + 1 < len) {
			out[n++] = (char)body[i++];	/* keep \\ pairs */
			out[n++] = (char)body[i];
		} else
			out[n++] = (char)body[i];
	}
	out[n++] = '}';
	out[n] = '\0';
	free(head);
	*outlen = n;
	return (out);
}

/* Reply 503 because the database failed. */
static void
ec_unavailable(struct http_req *req)
{
	http_reply_header(req, "Retry-After", "1");
	http_reply_error(req, 503, "database_unavailable", NULL,
	    "the database is unavailable; retry later");
}

/* The shop is known: verify, parse, queue. */
static void
ec_shop_ready(struct http_req *req, const struct ec_shop *s)
{
	struct ec_route		*rt = http_req_data(req);
	struct ec		*ec = rt->ec;
	struct ec_parse_opts	 opts;
	struct ec_event		 ev;
	const unsigned char	*body;
	const char		*sig, *topic = NULL, *delivery = NULL;
	const char		*event_id = NULL, *domain, *hv, *why;
	char			 trig[EC_TIME_LEN] = "", *cause = NULL;
	char			*hash_id = NULL, *row, *buf, *wtopic = NULL;
	size_t			 len, rowlen;
	int			 rc;

	if (s == NULL || !s->found || s->platform != rt->platform) {
		ec_count(ec, rt->platform, "unknown_shop");
		http_reply_error(req, 404, "not_found", NULL,
		    "no such %s shop", ec_platform_name(rt->platform));
		return;
	}
	body = http_req_body(req, &len);
	if (rt->platform == EC_WOOCOMMERCE && woocommerce_is_ping(body, len)) {
		ec_count(ec, rt->platform, "ping");
		http_reply_json(req, 200, json_object());
		return;
	}
	switch (rt->platform) {
	case EC_SHOPIFY:
		sig = http_req_header(req, "X-Shopify-Hmac-Sha256");
		if (sig == NULL)
			sig = http_req_header(req, "shopify-hmac-sha256");
		break;
	case EC_WOOCOMMERCE:
		sig = http_req_header(req, "X-WC-Webhook-Signature");
		break;
	default:
		sig = http_req_header(req, "X-Musubi-Signature");
		break;
	}
	if (body == NULL || ec_verify(s, body, len, sig) != 0) {
		log_warnx("ec: rid=%s shop %s: %s signature", http_req_id(req),
		    s->slug, sig == NULL ? "missing" : "invalid");
		ec_count(ec, rt->platform, "bad_signature");
		http_reply_error(req, 401, "invalid_signature", NULL,
		    "the signature header is missing or does not match the "
		    "body");
		return;
	}
	memset(&opts, 0, sizeof opts);
	opts.currency = s->currency;
	switch (rt->platform) {
	case EC_SHOPIFY:
		domain = ec_header(req, "X-Shopify-Shop-Domain",
		    "shopify-shop-domain");
		if (s->domain != NULL && domain != NULL &&
		    strcasecmp(domain, s->domain) != 0) {
			log_warnx("ec: rid=%s shop %s: delivery for another "
			    "shop domain", http_req_id(req), s->slug);
			ec_count(ec, rt->platform, "wrong_domain");
			http_reply_error(req, 403, "wrong_shop_domain", NULL,
			    "X-Shopify-Shop-Domain does not name this shop's "
			    "domain");
			return;
		}
		topic = ec_header(req, "X-Shopify-Topic", "shopify-topic");
		delivery = ec_header(req, "X-Shopify-Webhook-Id",
		    "shopify-webhook-id");
		event_id = ec_header(req, "X-Shopify-Event-Id",
		    "shopify-event-id");
		if ((hv = ec_header(req, "X-Shopify-Triggered-At",
		    "shopify-triggered-at")) != NULL &&
		    ec_time_str(hv, 0, trig, &why) != 0)
			trig[0] = '\0';
		opts.triggered_at = trig[0] != '\0' ? trig : NULL;
		break;
	case EC_WOOCOMMERCE:
		topic = ec_header(req, "X-WC-Webhook-Topic", NULL);
		if (topic == NULL && (hv = ec_header(req,
		    "X-WC-Webhook-Resource", NULL)) != NULL &&
		    ec_header(req, "X-WC-Webhook-Event", NULL) != NULL) {
			xasprintf(&wtopic, "%s.%s", hv,
			    ec_header(req, "X-WC-Webhook-Event", NULL));
			topic = wtopic;
		}
		delivery = ec_header(req, "X-WC-Webhook-Delivery-ID",
		    "X-WC-Delivery-ID");
		break;
	case EC_GENERIC:
		delivery = ec_header(req, "X-Musubi-Event-Id",
		    "Idempotency-Key");
		break;
	}
	opts.topic = topic;
	switch (rt->platform) {
	case EC_SHOPIFY:
		rc = shopify_parse(body, len, &opts, &ev, &cause);
		break;
	case EC_WOOCOMMERCE:
		rc = woocommerce_parse(body, len, &opts, &ev, &cause);
		break;
	default:
		rc = generic_parse(body, len, &opts, &ev, &cause);
		break;
	}
	if (rc != 0) {
		ec_count(ec, rt->platform, "bad_json");
		http_reply_error(req, 400, "invalid_json", NULL, "%s", cause);
		goto out;
	}
	if (rt->platform == EC_GENERIC) {
		if (ev.kind == EC_INVALID) {
			ec_count(ec, rt->platform, "invalid");
			http_reply_error(req, 422, "invalid_value", ev.path,
			    "%s", ev.problem);
			goto out;
		}
		topic = ec_kind_name(ev.kind);
		if (ev.event_id != NULL)
			delivery = ev.event_id;
	}
	if (delivery == NULL) {
		/* No delivery id: identical deliveries are duplicates. */
		xasprintf(&buf, "%s\n%.*s", topic != NULL ? topic : "",
		    (int)len, (const char *)body);
		hash_id = crypto_sha256_hex(buf, strlen(buf));
		free(buf);
		xasprintf(&buf, "h:%s", hash_id);
		free(hash_id);
		hash_id = buf;
		delivery = hash_id;
	}
	if (ev.kind == EC_INVALID) {
		log_warnx("ec: rid=%s shop %s: stored as rejected: %s",
		    http_req_id(req), s->slug, ev.problem);
		ec_count(ec, rt->platform, "rejected");
	} else if (ev.kind == EC_IGNORED)
		ec_count(ec, rt->platform, "ignored");
	row = ec_row(s, topic != NULL ? topic : "", delivery, event_id,
	    opts.triggered_at, http_req_id(req), &ev, body, len, &rowlen);
	ec_batch_add(ec->cur, req, row, rowlen);
	event_active(ec->flush_ev, 0, 0);
out:
	ec_event_free(&ev);
	free(cause);
	free(hash_id);
	free(wtopic);
}

/* A shop was read from PostgreSQL. */
static void
ec_shop_cb(const PGresult *res, const char *err, void *arg)
{
	struct http_req	*req = arg;
	struct ec_route	*rt = http_req_data(req);
	struct ec_shop	*s;
	const char	*plat;

	if (err != NULL) {
		log_warnx("ec: rid=%s shop lookup: %s", http_req_id(req), err);
		ec_count(rt->ec, rt->platform, "unavailable");
		ec_unavailable(req);
		return;
	}
	s = xcalloc(1, sizeof *s);
	s->slug = xstrdup(http_req_param(req, "shop"));
	if (PQntuples(res) > 0) {
		s->found = 1;
		s->channel_id = db_int(res, 0, 0);
		s->id = db_int(res, 0, 1);
		plat = db_value(res, 0, 2);
		s->platform = strcmp(plat, "shopify") == 0 ? EC_SHOPIFY :
		    strcmp(plat, "woocommerce") == 0 ? EC_WOOCOMMERCE :
		    EC_GENERIC;
		s->currency = xstrdup(db_value(res, 0, 3));
		if (db_value(res, 0, 4) != NULL)
			s->domain = xstrdup(db_value(res, 0, 4));
		s->secret = xstrdup(db_value(res, 0, 5));
		if (db_value(res, 0, 6) != NULL)
			s->previous = xstrdup(db_value(res, 0, 6));
	}
	ec_shop_ready(req, ec_shop_put(rt->ec, s));
}

/* Tell whether s can be a shop slug (shops.slug's CHECK). */
static int
ec_slug_ok(const char *s)
{
	size_t	 i;

	for (i = 0; s[i] != '\0'; i++) {
		if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= '0' &&
		    s[i] <= '9') && (s[i] != '-' || i == 0))
			return (0);
	}
	return (i > 0 && i <= 63);
}

/* POST /webhooks/{shopify,woocommerce,ec}/{shop} */
static void
ec_webhook_cb(struct http_req *req, void *arg)
{
	struct ec_route		*rt = arg;
	struct ec_shop		*s;
	struct db_params	*p;
	const char		*slug = http_req_param(req, "shop");

	http_req_set_data(req, rt, NULL);
	if (!ec_slug_ok(slug)) {
		ec_shop_ready(req, NULL);
		return;
	}
	if ((s = ec_shop_find(rt->ec, slug)) != NULL) {
		ec_shop_ready(req, s);
		return;
	}
	p = db_params_new();
	db_params_text(p, slug);
	db_query(rt->ec->app->db, "SELECT channel_id, id, platform, currency, "
	    "shop_domain, webhook_secret, previous_webhook_secret "
	    "FROM shops WHERE slug = $1", p, ec_shop_cb, req);
}

static void	ec_commit(struct ec *, struct ec_batch *);

/* A batch's INSERT returned. */
static void
ec_commit_cb(const PGresult *res, const char *err, void *arg)
{
	struct ec_batch	*b = arg;
	struct ec	*ec = b->ec;
	struct ec_batch	*one;
	struct ec_route	*rt;
	size_t		 i;

	ec->commits--;
	if (err == NULL) {
		metrics_add(ec->app->metrics, "musubi_ec_commits_total", "",
		    1);
		for (i = 0; i < b->n; i++) {
			rt = http_req_data(b->reqs[i]);
			ec_count(ec, rt->platform, "stored");
			http_reply_json(b->reqs[i], 200, json_object());
		}
		if (ec->applying)
			ec->apply_wanted = 1;
		else if (!ec->stopping && !evtimer_pending(ec->apply_ev, NULL))
			ec_arm(ec->apply_ev, EC_APPLY_DELAY_MS);
	} else if (res != NULL && b->n > 1 && !b->single) {
		/* The server refused the batch: isolate the delivery. */
		log_warnx("ec: batch of %zu deliveries refused (%s); retrying "
		    "them one by one", b->n, err);
		for (i = 0; i < b->n; i++) {
			one = ec_batch_new(ec);
			one->single = 1;
			ec_batch_add(one, b->reqs[i], b->rows[i], b->lens[i]);
			b->rows[i] = NULL;
			ec_commit(ec, one);
		}
	} else {
		log_warnx("ec: commit of %zu deliveries failed: %s", b->n, err);
		for (i = 0; i < b->n; i++) {
			rt = http_req_data(b->reqs[i]);
			ec_count(ec, rt->platform, "unavailable");
			http_reply_header(b->reqs[i], "Retry-After", "1");
			http_reply_error(b->reqs[i], 503, res != NULL ?
			    "store_failed" : "database_unavailable", NULL,
			    "the delivery could not be stored; retry later");
		}
	}
	ec_batch_free(b);
	if (ec->cur->n > 0)
		event_active(ec->flush_ev, 0, 0);
}

/* Send one batch to PostgreSQL as a JSON array of rows. */
static void
ec_commit(struct ec *ec, struct ec_batch *b)
{
	struct db_params	*p = db_params_new();
	size_t			 i, total = 2, n = 0;
	char			*s;

	for (i = 0; i < b->n; i++)
		total += b->lens[i] + 1;
	s = xmalloc(total + 1);
	s[n++] = '[';
	for (i = 0; i < b->n; i++) {
		if (i > 0)
			s[n++] = ',';
		memcpy(s + n, b->rows[i], b->lens[i]);
		n += b->lens[i];
	}
	s[n++] = ']';
	db_params_textn(p, s, n);
	free(s);
	ec->commits++;
	db_query(ec->app->db, ec_insert_sql, p, ec_commit_cb, b);
}

/* Start commits while there is room and work. */
static void
ec_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ec	*ec = arg;
	struct ec_batch	*b;

	if (ec->cur->n == 0 || ec->commits >= ec->max_commits)
		return;
	b = ec->cur;
	ec->cur = ec_batch_new(ec);
	ec_commit(ec, b);
}

/* The apply function returned. */
static void
ec_applied_cb(const PGresult *res, const char *err, void *arg)
{
	struct ec	*ec = arg;
	int64_t		 applied, rejected;
	int		 busy;

	ec->applying = 0;
	if (err != NULL) {
		log_warnx("ec: applying shop events failed: %s", err);
		if (!ec->stopping)
			ec_arm(ec->apply_ev, EC_APPLY_POLL_MS);
		return;
	}
	applied = db_int(res, 0, 0);
	rejected = db_int(res, 0, 1);
	busy = db_value(res, 0, 2) != NULL && *db_value(res, 0, 2) == 't';
	if (applied > 0)
		metrics_add(ec->app->metrics, "musubi_ec_events_total",
		    "stage=\"applied\"", (uint64_t)applied);
	if (rejected > 0) {
		metrics_add(ec->app->metrics, "musubi_ec_events_total",
		    "stage=\"rejected\"", (uint64_t)rejected);
		log_warnx("ec: %lld shop events could not be applied and were "
		    "marked rejected", (long long)rejected);
	}
	if (ec->stopping)
		return;
	if (busy)
		ec_arm(ec->apply_ev, EC_APPLY_BUSY_MS);
	else
		ec_arm(ec->apply_ev, applied + rejected >= EC_APPLY_LIMIT ? 0 :
		    ec->apply_wanted ? EC_APPLY_DELAY_MS : EC_APPLY_POLL_MS);
	ec->apply_wanted = 0;
}

/* Apply pending inbox rows. */
static void
ec_apply_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ec		*ec = arg;
	struct db_params	*p;

	if (ec->applying || ec->stopping)
		return;
	if (!db_is_ready(ec->app->db)) {
		ec_arm(ec->apply_ev, EC_APPLY_POLL_MS);
		return;
	}
	ec->applying = 1;
	ec->apply_wanted = 0;
	evtimer_del(ec->apply_ev);
	p = db_params_new();
	db_params_int(p, EC_APPLY_LIMIT);
	db_query(ec->app->db, "SELECT applied, rejected, busy FROM "
	    "musubi_ec_apply($1)", p, ec_applied_cb, ec);
}

/* The RFM job returned. */
static void
ec_rfm_done_cb(const PGresult *res, const char *err, void *arg)
{
	struct ec	*ec = arg;

	ec->rfm_running = 0;
	if (err != NULL) {
		log_warnx("ec: RFM job failed: %s", err);
		metrics_add(ec->app->metrics, "musubi_ec_rfm_runs_total",
		    "result=\"error\"", 1);
		if (!ec->stopping)
			ec_arm(ec->rfm_ev, EC_RFM_RETRY_MS);
		return;
	}
	log_debug("ec: RFM scores changed for %lld customers, %lld friends",
	    (long long)db_int(res, 0, 0), (long long)db_int(res, 0, 1));
	metrics_add(ec->app->metrics, "musubi_ec_rfm_runs_total",
	    "result=\"ok\"", 1);
	if (!ec->stopping)
		ec_arm(ec->rfm_ev, EC_RFM_INTERVAL_MS);
}

/* Recompute RFM scores. */
static void
ec_rfm_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ec	*ec = arg;

	if (ec->rfm_running || ec->stopping)
		return;
	if (!db_is_ready(ec->app->db)) {
		ec_arm(ec->rfm_ev, EC_APPLY_POLL_MS);
		return;
	}
	ec->rfm_running = 1;
	db_query(ec->app->db, "SELECT customers, friends FROM musubi_ec_rfm()",
	    NULL, ec_rfm_done_cb, ec);
}
