/* SPDX-License-Identifier: ISC */
/*
 * acquisition_report.c -- the pure half of acquisition (see acquire.h):
 * source codes, the value parsers shared by the API and CSV uploads, and
 * the cost CSV reader.  Nothing here does I/O; the report itself is SQL
 * (musubi_acq_report in sql/008_acquisition.sql).
 *
 * The CSV reader never stops at the first bad row: every record is read,
 * each problem is listed with its record number, and the caller imports
 * nothing unless the list is empty.  It is fuzzed (fuzz_cost_csv.c).
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "musubi/acquire.h"
#include "musubi/config.h"
#include "musubi/crypto.h"
#include "musubi/xmalloc.h"

#define CSV_MAX_FIELDS	32

enum csv_col {
	COL_SOURCE,
	COL_DATE,
	COL_SPEND,
	COL_CURRENCY,
	COL_IMPRESSIONS,
	COL_CLICKS,
	COL_ADDS,
	COL_MAX
};

static const struct {
	const char	*name;
	enum csv_col	 col;
} csv_headers[] = {
	{ "source", COL_SOURCE }, { "source_code", COL_SOURCE },
	{ "code", COL_SOURCE },
	{ "date", COL_DATE }, { "day", COL_DATE },
	{ "spend", COL_SPEND }, { "cost", COL_SPEND },
	{ "currency", COL_CURRENCY },
	{ "impressions", COL_IMPRESSIONS },
	{ "clicks", COL_CLICKS },
	{ "friend_adds", COL_ADDS }, { "reported_adds", COL_ADDS },
	{ "adds", COL_ADDS }, { "friends_added", COL_ADDS },
};

static const char *const csv_colname[COL_MAX] = {
	"source", "date", "spend", "currency", "impressions", "clicks",
	"friend_adds",
};

/* One record being read. */
struct csv_reader {
	const char	*p;
	const char	*end;
	int		 rec;		/* number of the record just read */
};

/* The length of the valid UTF-8 sequence at p (n bytes left), or 0. */
static size_t
acquire_utf8_len(const unsigned char *p, size_t n)
{
	size_t	 len, i;
	unsigned int cp;

	if (p[0] < 0x80)
		return (1);
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
		cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		cp = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		cp = p[0] & 0x07;
	} else
		return (0);
	if (len > n)
		return (0);
	for (i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return (0);
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	/* Overlong forms, surrogates, beyond U+10FFFF. */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return (0);
	return (len);
}

/* Copy s as valid UTF-8 text of at most max bytes. */
char *
acquire_clean_text(const char *s, size_t max)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 n = strlen(s), i = 0, o = 0, len;
	char			*out = xmalloc((n < max ? n : max) + 1);

	while (i < n) {
		if ((len = acquire_utf8_len(p + i, n - i)) == 0 ||
		    (len == 1 && (p[i] < ' ' || p[i] == 0x7f) &&
		    p[i] != '\t')) {
			if (o + 1 > max)
				break;
			out[o++] = '?';
			i++;
			continue;
		}
		if (o + len > max)
			break;
		memcpy(out + o, p + i, len);
		o += len;
		i += len;
	}
	out[o] = '\0';
	return (out);
}

/* Is s a well-formed source code? */
int
acquire_code_ok(const char *s)
{
	size_t	 n, i;

	if (s == NULL || (n = strlen(s)) < ACQUIRE_CODE_MIN ||
	    n > ACQUIRE_CODE_MAX || strcmp(s, "callback") == 0)
		return (0);
	for (i = 0; i < n; i++) {
		if ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' &&
		    s[i] <= '9'))
			continue;
		if (i > 0 && (s[i] == '_' || s[i] == '-'))
			continue;
		return (0);
	}
	return (1);
}

/* Generate a random code: 8 characters without look-alikes. */
char *
acquire_code_generate(void)
{
	static const char alpha[] = "abcdefghjkmnpqrstuvwxyz23456789";
	unsigned char	 r[8];
	char		*s = xmalloc(sizeof r + 1);
	size_t		 i;

	crypto_random(r, sizeof r);
	for (i = 0; i < sizeof r; i++)
		s[i] = alpha[r[i] % (sizeof alpha - 1)];
	s[sizeof r] = '\0';
	return (s);
}

/* Build the tracked URL of a code. */
char *
acquire_source_url(const struct config *cfg, const char *code)
{
	char	*url;

	xasprintf(&url, "%s/f/%s", cfg->public_url, code);
	return (url);
}

/* Derive one LINE Login secret from the state. */
static void
acquire_derive(const unsigned char key[TOKEN_KEY_LEN], const char *label,
    const char *state, char *out)
{
	unsigned char	 mac[CRYPTO_SHA256_LEN];
	char		*msg, *b;

	xasprintf(&msg, "%s:%s", label, state);
	crypto_hmac_sha256(key, TOKEN_KEY_LEN, msg, strlen(msg), mac);
	free(msg);
	b = crypto_base64url(mac, sizeof mac);
	snprintf(out, ACQUIRE_SECRET_LEN + 1, "%s", b);
	explicit_bzero(mac, sizeof mac);
	free(b);
}

/* Compute the nonce, PKCE verifier and challenge of a state. */
void
acquire_login_secrets(const unsigned char key[TOKEN_KEY_LEN],
    const char *state, char *nonce, char *verifier, char *challenge)
{
	unsigned char	 h[CRYPTO_SHA256_LEN];
	char		*b;

	acquire_derive(key, "musubi-acquire-nonce", state, nonce);
	acquire_derive(key, "musubi-acquire-pkce", state, verifier);
	crypto_sha256(verifier, strlen(verifier), h);
	b = crypto_base64url(h, sizeof h);
	snprintf(challenge, ACQUIRE_SECRET_LEN + 1, "%s", b);
	free(b);
}

/* Percent-encode everything but RFC 3986 unreserved characters. */
static char *
acquire_urlenc(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t		 n = strlen(s), i, o = 0;
	char		*out = xmalloc(3 * n + 1);
	unsigned char	 c;

	for (i = 0; i < n; i++) {
		c = (unsigned char)s[i];
		if (isalnum(c) || c == '-' || c == '.' || c == '_' ||
		    c == '~')
			out[o++] = (char)c;
		else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return (out);
}

/* Build the LINE Login authorize URL. */
char *
acquire_authorize_url(const char *access_base, const char *client_id,
    const char *redirect_uri, const char *state, const char *nonce,
    const char *challenge)
{
	char	*c = acquire_urlenc(client_id);
	char	*r = acquire_urlenc(redirect_uri);
	char	*s = acquire_urlenc(state), *n = acquire_urlenc(nonce);
	char	*ch = acquire_urlenc(challenge), *url;

	xasprintf(&url, "%s/oauth2/v2.1/authorize?response_type=code"
	    "&client_id=%s&redirect_uri=%s&state=%s&scope=profile%%20openid"
	    "&nonce=%s&bot_prompt=aggressive&code_challenge=%s"
	    "&code_challenge_method=S256", access_base, c, r, s, n, ch);
	free(c);
	free(r);
	free(s);
	free(n);
	free(ch);
	return (url);
}

/* Read up to max digits at *pp into *v; returns how many. */
static int
acquire_digits(const char **pp, int max, int *v)
{
	const char	*p = *pp;
	int		 n = 0;

	*v = 0;
	while (n < max && *p >= '0' && *p <= '9') {
		*v = *v * 10 + (*p - '0');
		p++;
		n++;
	}
	*pp = p;
	return (n);
}

/* Parse a date. */
int
acquire_parse_date(const char *s, char *out, const char **why)
{
	static const int mdays[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30,
	    31, 30, 31 };
	const char	*p = s;
	char		 sep;
	int		 y, m, d, dim;

	*why = "expected a date as YYYY-MM-DD";
	if (acquire_digits(&p, 4, &y) != 4 || (*p != '-' && *p != '/'))
		return (-1);
	sep = *p++;
	if (acquire_digits(&p, 2, &m) < 1 || *p != sep)
		return (-1);
	p++;
	if (acquire_digits(&p, 2, &d) < 1 || *p != '\0')
		return (-1);
	if (y < 2000 || y > 2099) {
		*why = "the year must be between 2000 and 2099";
		return (-1);
	}
	if (m < 1 || m > 12) {
		*why = "no such month";
		return (-1);
	}
	dim = mdays[m - 1] + (m == 2 && y % 4 == 0 ? 1 : 0);
	if (d < 1 || d > dim) {
		*why = "no such day in that month";
		return (-1);
	}
	snprintf(out, 11, "%04d-%02d-%02d", y, m, d);
	*why = NULL;
	return (0);
}

/*
 * Copy digits with optional thousands separators from *pp to out (without
 * the separators); at most max digits.  Returns the digit count, or -1.
 */
static int
acquire_grouped(const char **pp, char *out, size_t max)
{
	const char	*p = *pp;
	size_t		 n = 0, group = 0;
	int		 commas = 0;

	while ((*p >= '0' && *p <= '9') || *p == ',') {
		if (*p == ',') {
			/* 1-3 digits before the first comma, 3 between */
			if (n == 0 || (commas == 0 ? group > 3 : group != 3))
				return (-1);
			commas++;
			group = 0;
			p++;
			continue;
		}
		if (n >= max)
			return (-1);
		out[n++] = *p++;
		group++;
	}
	if (commas > 0 && group != 3)
		return (-1);
	out[n] = '\0';
	*pp = p;
	return ((int)n);
}

/* Parse a money amount. */
int
acquire_parse_decimal(const char *s, char *out, size_t outlen,
    const char **why)
{
	const char	*p = s;
	char		 ip[16], fp[5];
	size_t		 nf = 0;
	int		 ni;

	*why = "expected an amount such as 12000 or 1,234.50";
	if (outlen < 24)
		return (-1);
	if (strncmp(p, "\xc2\xa5", 2) == 0)		/* ¥ */
		p += 2;
	else if (strncmp(p, "\xef\xbf\xa5", 3) == 0)	/* ￥ */
		p += 3;
	if ((ni = acquire_grouped(&p, ip, 15)) < 1) {
		if (ni == -1 && *p >= '0' && *p <= '9')
			*why = "an amount has at most 15 digits before the "
			    "point";
		return (-1);
	}
	if (*p == '.') {
		p++;
		while (*p >= '0' && *p <= '9') {
			if (nf >= 4) {
				*why = "an amount has at most 4 decimals";
				return (-1);
			}
			fp[nf++] = *p++;
		}
		if (nf == 0)
			return (-1);
	}
	if (*p != '\0')
		return (-1);
	fp[nf] = '\0';
	snprintf(out, outlen, "%s%s%s", ip, nf ? "." : "", fp);
	*why = NULL;
	return (0);
}

/* Parse a non-negative count. */
int
acquire_parse_count(const char *s, int64_t max, int64_t *out,
    const char **why)
{
	const char	*p = s;
	char		 d[20];
	int		 n;
	int64_t		 v = 0;

	*why = "expected a whole number such as 1200 or 1,200";
	if ((n = acquire_grouped(&p, d, 16)) < 1 || *p != '\0')
		return (-1);
	for (p = d; *p != '\0'; p++)
		v = v * 10 + (*p - '0');
	if (v > max) {
		*why = "the number is too large";
		return (-1);
	}
	*out = v;
	*why = NULL;
	return (0);
}

/* Parse a currency code. */
int
acquire_parse_currency(const char *s, char *out, const char **why)
{
	int	 i;

	*why = "expected a three-letter currency code such as JPY";
	for (i = 0; i < 3; i++) {
		if (!isalpha((unsigned char)s[i]))
			return (-1);
		out[i] = (char)toupper((unsigned char)s[i]);
	}
	if (s[3] != '\0')
		return (-1);
	out[3] = '\0';
	*why = NULL;
	return (0);
}

/* Append an error. */
void
acquire_costs_error(struct acquire_costs *c, int row, const char *field,
    const char *fmt, ...)
{
	struct acquire_row_error	*e;
	va_list				 ap;

	c->errors = xreallocarray(c->errors, c->nerrors + 1,
	    sizeof *c->errors);
	e = &c->errors[c->nerrors++];
	e->row = row;
	e->field = xstrdup(field != NULL ? field : "");
	va_start(ap, fmt);
	xvasprintf(&e->message, fmt, ap);
	va_end(ap);
}

/* Free parsed rows and errors. */
void
acquire_costs_free(struct acquire_costs *c)
{
	size_t	 i;

	for (i = 0; i < c->nrows; i++) {
		free(c->rows[i].source);
		free(c->rows[i].spend);
	}
	for (i = 0; i < c->nerrors; i++) {
		free(c->errors[i].field);
		free(c->errors[i].message);
	}
	free(c->rows);
	free(c->errors);
	memset(c, 0, sizeof *c);
}

/* A printable, short copy of a value for a message (ASCII only). */
static void
acquire_quote(const char *s, char *out, size_t outlen)
{
	size_t	 o = 0;

	for (; *s != '\0' && o + 4 < outlen; s++)
		out[o++] = (*s >= ' ' && *s < 0x7f && *s != '"') ? *s : '?';
	if (*s != '\0') {
		out[o++] = '.';
		out[o++] = '.';
		out[o++] = '.';
	}
	out[o] = '\0';
}

/* Free a record's fields. */
static void
csv_fields_free(char **f, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		free(f[i]);
}

/* Skip to the start of the next physical line. */
static void
csv_skip_line(struct csv_reader *r)
{
	while (r->p < r->end && *r->p != '\n')
		r->p++;
	if (r->p < r->end)
		r->p++;
}

/*
 * Read one record into f (at most CSV_MAX_FIELDS fields, each trimmed of
 * spaces and tabs).  Returns 1 for a record, 0 at the end, -1 for a bad
 * record (with *err set; the rest of its line is skipped).
 */
static int
csv_record(struct csv_reader *r, char **f, size_t *nf, const char **err)
{
	char	 buf[ACQUIRE_CSV_MAX_FIELD + 1];
	size_t	 n, e;
	int	 quoted, toolong;
	char	 c;

	*nf = 0;
	*err = NULL;
	if (r->p >= r->end)
		return (0);
	r->rec++;
	for (;;) {
		n = 0;
		toolong = 0;
		quoted = 0;
		while (r->p < r->end && (*r->p == ' ' || *r->p == '\t'))
			r->p++;
		if (r->p < r->end && *r->p == '"') {
			quoted = 1;
			r->p++;
			for (;;) {
				if (r->p >= r->end) {
					*err = "a quoted field is not closed";
					goto bad;
				}
				c = *r->p++;
				if (c == '"') {
					if (r->p < r->end && *r->p == '"')
						r->p++;
					else
						break;
				}
				if (c == '\0') {
					*err = "the record contains a NUL byte";
					goto bad;
				}
				if (n < ACQUIRE_CSV_MAX_FIELD)
					buf[n++] = c;
				else
					toolong = 1;
			}
			while (r->p < r->end && (*r->p == ' ' ||
			    *r->p == '\t'))
				r->p++;
			if (r->p < r->end && *r->p != ',' && *r->p != '\r' &&
			    *r->p != '\n') {
				*err = "text after a closing quote";
				goto bad;
			}
		} else {
			while (r->p < r->end && *r->p != ',' &&
			    *r->p != '\r' && *r->p != '\n') {
				c = *r->p++;
				if (c == '"') {
					*err = "a quote inside an unquoted "
					    "field";
					goto bad;
				}
				if (c == '\0') {
					*err = "the record contains a NUL byte";
					goto bad;
				}
				if (n < ACQUIRE_CSV_MAX_FIELD)
					buf[n++] = c;
				else
					toolong = 1;
			}
		}
		if (toolong) {
			*err = "a field is longer than 256 bytes";
			goto bad;
		}
		if (*nf >= CSV_MAX_FIELDS) {
			*err = "more than 32 fields";
			goto bad;
		}
		e = n;
		if (!quoted) {
			while (e > 0 && (buf[e - 1] == ' ' ||
			    buf[e - 1] == '\t'))
				e--;
		}
		f[(*nf)++] = xstrndup(buf, e);
		if (r->p >= r->end)
			return (1);
		c = *r->p++;
		if (c == ',')
			continue;
		if (c == '\r' && r->p < r->end && *r->p == '\n')
			r->p++;
		return (1);
	}
bad:
	csv_fields_free(f, *nf);
	*nf = 0;
	csv_skip_line(r);
	return (-1);
}

/* Map the header record to columns; 0, or -1 after adding errors. */
static int
csv_header(struct acquire_costs *c, char **f, size_t nf, int *map)
{
	size_t	 i, k;
	int	 have[COL_MAX], bad = 0;
	char	 q[48];

	memset(have, 0, sizeof have);
	for (i = 0; i < nf; i++) {
		map[i] = -1;
		for (k = 0; k < sizeof csv_headers / sizeof csv_headers[0];
		    k++) {
			if (strcasecmp(f[i], csv_headers[k].name) == 0) {
				map[i] = (int)csv_headers[k].col;
				break;
			}
		}
		acquire_quote(f[i], q, sizeof q);
		if (map[i] == -1) {
			acquire_costs_error(c, 1, "", "unknown column \"%s\" "
			    "(expected source, date, spend, currency, "
			    "impressions, clicks, friend_adds)", q);
			bad = 1;
		} else if (have[map[i]]++) {
			acquire_costs_error(c, 1, csv_colname[map[i]],
			    "column \"%s\" appears twice", q);
			bad = 1;
		}
	}
	for (k = 0; k <= COL_SPEND; k++) {
		if (!have[k]) {
			acquire_costs_error(c, 1, csv_colname[k],
			    "the header has no %s column", csv_colname[k]);
			bad = 1;
		}
	}
	return (bad ? -1 : 0);
}

/* Check one data record and add it to rows (or its errors). */
static void
csv_row(struct acquire_costs *c, int rec, char **f, size_t nf,
    const int *map, size_t ncols)
{
	struct acquire_cost_row	 row;
	const char		*why, *name;
	char			 dec[32], q[48];
	size_t			 i;
	int64_t			 v;
	size_t			 before = c->nerrors;

	memset(&row, 0, sizeof row);
	row.row = rec;
	if (nf != ncols) {
		acquire_costs_error(c, rec, "", "the row has %zu fields; the "
		    "header has %zu", nf, ncols);
		return;
	}
	for (i = 0; i < nf; i++) {
		name = csv_colname[map[i]];
		if (*f[i] == '\0') {
			if (map[i] <= COL_SPEND)
				acquire_costs_error(c, rec, name, "%s is "
				    "empty", name);
			continue;
		}
		switch (map[i]) {
		case COL_SOURCE:
			if (!acquire_code_ok(f[i])) {
				acquire_quote(f[i], q, sizeof q);
				acquire_costs_error(c, rec, name, "\"%s\" is "
				    "not a source code", q);
			} else
				row.source = xstrdup(f[i]);
			break;
		case COL_DATE:
			if (acquire_parse_date(f[i], row.date, &why) != 0)
				acquire_costs_error(c, rec, name, "%s", why);
			break;
		case COL_SPEND:
			if (acquire_parse_decimal(f[i], dec, sizeof dec,
			    &why) != 0)
				acquire_costs_error(c, rec, name, "%s", why);
			else
				row.spend = xstrdup(dec);
			break;
		case COL_CURRENCY:
			if (acquire_parse_currency(f[i], row.currency,
			    &why) != 0)
				acquire_costs_error(c, rec, name, "%s", why);
			break;
		case COL_IMPRESSIONS:
		case COL_CLICKS:
		case COL_ADDS:
			if (acquire_parse_count(f[i], map[i] == COL_ADDS ?
			    1000000000 : 1000000000000000LL, &v, &why) != 0) {
				acquire_costs_error(c, rec, name, "%s", why);
				break;
			}
			if (map[i] == COL_IMPRESSIONS) {
				row.impressions = v;
				row.has_impressions = 1;
			} else if (map[i] == COL_CLICKS) {
				row.clicks = v;
				row.has_clicks = 1;
			} else {
				row.adds = v;
				row.has_adds = 1;
			}
			break;
		}
	}
	if (c->nerrors != before) {
		free(row.source);
		free(row.spend);
		return;
	}
	c->rows = xreallocarray(c->rows, c->nrows + 1, sizeof *c->rows);
	c->rows[c->nrows++] = row;
}

/* Parse a cost CSV. */
int
acquire_costs_parse_csv(const char *buf, size_t len,
    struct acquire_costs *c)
{
	struct csv_reader	 r;
	char			*f[CSV_MAX_FIELDS];
	int			 map[CSV_MAX_FIELDS];
	size_t			 nf, ncols = 0, data = 0;
	const char		*err;
	int			 rc, header = 0;

	memset(c, 0, sizeof *c);
	memset(&r, 0, sizeof r);
	r.p = buf;
	r.end = buf + len;
	if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
		r.p += 3;
	while ((rc = csv_record(&r, f, &nf, &err)) != 0) {
		if (rc == -1) {
			acquire_costs_error(c, r.rec, "", "%s", err);
			if (!header)
				return (-1);
			continue;
		}
		if (nf == 1 && *f[0] == '\0') {
			/* A blank line. */
			csv_fields_free(f, nf);
			continue;
		}
		if (!header) {
			header = 1;
			ncols = nf;
			rc = csv_header(c, f, nf, map);
			csv_fields_free(f, nf);
			if (rc != 0)
				return (-1);
			continue;
		}
		if (++data > ACQUIRE_CSV_MAX_ROWS) {
			csv_fields_free(f, nf);
			acquire_costs_error(c, r.rec, "", "more than %d rows; "
			    "split the file", ACQUIRE_CSV_MAX_ROWS);
			return (-1);
		}
		csv_row(c, r.rec, f, nf, map, ncols);
		csv_fields_free(f, nf);
	}
	if (!header)
		acquire_costs_error(c, 1, "", "the file is empty: it needs a "
		    "header (source,date,spend,...) and rows");
	else if (data == 0)
		acquire_costs_error(c, 2, "", "the file has a header but no "
		    "rows");
	return (c->nerrors > 0 ? -1 : 0);
}

/* The rows as JSON for musubi_acq_costs_import(). */
json_t *
acquire_costs_json(const struct acquire_costs *c)
{
	json_t				*a = json_array(), *o;
	const struct acquire_cost_row	*r;
	size_t				 i;

	for (i = 0; i < c->nrows; i++) {
		r = &c->rows[i];
		o = json_pack("{s:i, s:s, s:s, s:s}", "row", r->row,
		    "source", r->source, "date", r->date, "spend", r->spend);
		if (o == NULL)
			continue;
		if (r->currency[0] != '\0')
			json_object_set_new(o, "currency",
			    json_string(r->currency));
		if (r->has_impressions)
			json_object_set_new(o, "impressions",
			    json_integer(r->impressions));
		if (r->has_clicks)
			json_object_set_new(o, "clicks",
			    json_integer(r->clicks));
		if (r->has_adds)
			json_object_set_new(o, "adds", json_integer(r->adds));
		json_array_append_new(a, o);
	}
	return (a);
}

/* The errors as JSON. */
json_t *
acquire_costs_errors_json(const struct acquire_costs *c)
{
	json_t	*a = json_array();
	size_t	 i;

	for (i = 0; i < c->nerrors; i++)
		json_array_append_new(a, json_pack("{s:i, s:s, s:s}", "row",
		    c->errors[i].row, "field", c->errors[i].field, "message",
		    c->errors[i].message));
	return (a);
}
