/* SPDX-License-Identifier: ISC */
/*
 * rule.c -- parse and validate a segment rule (JSON) into a tree of groups
 * and leaf conditions.  Nothing here touches the database: a rule is
 * checked for shape, types, known keys, sane values and the limits on depth
 * and size, and each refusal names the node with a JSON pointer and says
 * what is wrong in words a marketer can act on.  Values are kept as the
 * text that compile.c sends as query parameters.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/segment.h"
#include "musubi/xmalloc.h"

#define RULE_KEY_SHOWN	60	/* bytes of an unknown key quoted back */
#define RULE_STR_MAX	200	/* characters of most text values */
#define RULE_URL_MAX	2000	/* bytes of a URL prefix (page_views.url) */
#define RULE_POSTBACK_MAX 300	/* LINE's limit on postback data */
#define RULE_INT_MAX	1000000000LL
#define RULE_NUM_MAX	1e15

struct parser {
	struct segment_error	*err;
	int			 conditions;
	int			 depth;
};

/* What a string value must look like. */
struct strspec {
	const char		*what;		/* the field, for messages */
	size_t			 maxchars;
	const char *const	*allowed;	/* NULL: any */
	int			 slug;		/* a shop slug */
};

static const char *const group_keys[] = { "all", "any", "not", NULL };
static const char *const any_keys[] = {
	"all", "any", "not", "friend", "tags", "source", "purchases",
	"first_purchase", "last_purchase", "aov", "rfm", "clicks",
	"page_views", "interactions", "messaging", NULL
};
static const char *const friend_keys[] = {
	"status", "followed_at", "first_followed_at", "language", "linked",
	NULL
};
static const char *const tags_keys[] = {
	"has_any", "has_all", "has_none", NULL
};
static const char *const source_keys[] = { "code", "kind", NULL };
static const char *const purchases_keys[] = {
	"count", "net_amount", "window", "products", "shop", NULL
};
static const char *const products_keys[] = {
	"product_id", "sku", "vendor", "title_contains", NULL
};
static const char *const rfm_keys[] = { "r", "f", "m", NULL };
static const char *const clicks_keys[] = {
	"count", "window", "link", "campaign", NULL
};
static const char *const page_views_keys[] = {
	"count", "window", "url_prefix", NULL
};
static const char *const interactions_keys[] = {
	"count", "window", "type", "postback_data", NULL
};
static const char *const messaging_keys[] = {
	"count", "window", "campaign", NULL
};
static const char *const num_ops[] = {
	"eq", "ne", "gt", "gte", "lt", "lte", "between", "in", NULL
};
static const char *const str_ops[] = { "eq", "ne", "in", NULL };
static const char *const date_ops[] = {
	"within_days", "more_than_days", "between", NULL
};
static const char *const window_keys[] = { "last_days", "between", NULL };
static const char *const postback_ops[] = { "eq", "prefix", NULL };
static const char *const statuses[] = {
	"following", "blocked", "unknown", NULL
};
static const char *const source_kinds[] = {
	"cpf_ad", "web", "qr", "store", "influencer", "other", NULL
};
static const char *const itypes[] = {
	"message", "postback", "follow", "unfollow", "beacon", "accountLink",
	"videoPlayComplete", NULL
};

static struct segment_node *rule_node(struct parser *, const json_t *,
		    const char *, int);

/* Fill an error; returns -1. */
int
segment_error_set(struct segment_error *err, const char *code,
    const char *path, const char *fmt, ...)
{
	va_list	 ap;

	err->code = code != NULL ? code : "invalid_rule";
	snprintf(err->path, sizeof err->path, "%s", path);
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	return (-1);
}

/* Record a validation error at path; returns -1. */
static int PRINTFLIKE(3, 4)
rule_fail(struct parser *p, const char *path, const char *fmt, ...)
{
	va_list	 ap;

	p->err->code = "invalid_rule";
	snprintf(p->err->path, sizeof p->err->path, "%s", path);
	va_start(ap, fmt);
	vsnprintf(p->err->message, sizeof p->err->message, fmt, ap);
	va_end(ap);
	return (-1);
}

/* Copy at most max bytes of a UTF-8 string without splitting a character. */
static void
rule_shown(char *out, size_t outlen, const char *s, size_t max)
{
	size_t	 n = strlen(s);

	if (max >= outlen)
		max = outlen - 1;
	if (n > max) {
		n = max;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	memcpy(out, s, n);
	out[n] = '\0';
}

/* Child path: base + "/" + key escaped as a JSON pointer token. */
static char *
rule_path(const char *base, const char *key)
{
	size_t	 n = strlen(base), i;
	char	*out = xmalloc(n + 2 + strlen(key) * 2), *q;

	memcpy(out, base, n);
	q = out + n;
	*q++ = '/';
	for (i = 0; key[i] != '\0'; i++) {
		if (key[i] == '~') {
			*q++ = '~';
			*q++ = '0';
		} else if (key[i] == '/') {
			*q++ = '~';
			*q++ = '1';
		} else
			*q++ = key[i];
	}
	*q = '\0';
	return (out);
}

/* Child path for an array index. */
static char *
rule_path_index(const char *base, size_t i)
{
	char	*out;

	xasprintf(&out, "%s/%zu", base, i);
	return (out);
}

/* Levenshtein distance, for "did you mean" (short strings only). */
static size_t
rule_distance(const char *a, const char *b)
{
	size_t	 la = strlen(a), lb = strlen(b), i, j, prev, cur, d[33];

	if (la > 32 || lb > 32)
		return (99);
	for (j = 0; j <= lb; j++)
		d[j] = j;
	for (i = 1; i <= la; i++) {
		prev = d[0];
		d[0] = i;
		for (j = 1; j <= lb; j++) {
			cur = d[j];
			d[j] = prev + (tolower((unsigned char)a[i - 1]) !=
			    tolower((unsigned char)b[j - 1]));
			if (cur + 1 < d[j])
				d[j] = cur + 1;
			if (d[j - 1] + 1 < d[j])
				d[j] = d[j - 1] + 1;
			prev = cur;
		}
	}
	return (d[lb]);
}

/* The allowed word closest to key, if close enough; NULL otherwise. */
static const char *
rule_suggest(const char *key, const char *const *allowed)
{
	size_t		 i, d, best = 3;
	const char	*hit = NULL;

	for (i = 0; allowed[i] != NULL; i++) {
		d = rule_distance(key, allowed[i]);
		if (d < best && d < strlen(allowed[i])) {
			best = d;
			hit = allowed[i];
		}
	}
	return (hit);
}

/* Format a list of words as "a, b or c" into buf. */
static void
rule_words(char *buf, size_t len, const char *const *words)
{
	size_t	 i, n = 0, off = 0;

	while (words[n] != NULL)
		n++;
	buf[0] = '\0';
	for (i = 0; i < n && off < len; i++) {
		off += (size_t)snprintf(buf + off, len - off, "%s%s",
		    i == 0 ? "" : (i == n - 1 ? " or " : ", "), words[i]);
	}
}

/* Is key one of allowed? */
static int
rule_in(const char *key, const char *const *allowed)
{
	size_t	 i;

	for (i = 0; allowed[i] != NULL; i++) {
		if (strcmp(key, allowed[i]) == 0)
			return (1);
	}
	return (0);
}

/* Refuse an unknown key of obj, naming the keys that are allowed. */
static int
rule_keys(struct parser *p, const json_t *obj, const char *path,
    const char *what, const char *const *allowed)
{
	const char	*key, *hint;
	json_t		*v;
	char		 shown[RULE_KEY_SHOWN + 1], words[512], *kp;

	json_object_foreach((json_t *)obj, key, v) {
		if (rule_in(key, allowed))
			continue;
		rule_shown(shown, sizeof shown, key, RULE_KEY_SHOWN);
		rule_words(words, sizeof words, allowed);
		hint = rule_suggest(key, allowed);
		kp = rule_path(path, key);
		if (hint != NULL)
			rule_fail(p, kp, "%s has no \"%s\"; did you mean "
			    "\"%s\"? (it takes %s)", what, shown, hint, words);
		else
			rule_fail(p, kp, "%s has no \"%s\"; it takes %s", what,
			    shown, words);
		free(kp);
		return (-1);
	}
	return (0);
}

/* Check that v is an object with at least one key among allowed. */
static int
rule_object(struct parser *p, const json_t *v, const char *path,
    const char *what, const char *const *allowed)
{
	char	 words[512];

	rule_words(words, sizeof words, allowed);
	if (!json_is_object(v))
		return (rule_fail(p, path, "%s must be an object with %s",
		    what, words));
	if (rule_keys(p, v, path, what, allowed) != 0)
		return (-1);
	if (json_object_size(v) == 0)
		return (rule_fail(p, path, "%s is empty; give at least one "
		    "of %s", what, words));
	return (0);
}

/* Count characters of UTF-8 text. */
static size_t
rule_chars(const char *s)
{
	size_t	 n = 0;

	for (; *s != '\0'; s++) {
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	}
	return (n);
}

/* Is s a shop slug? */
static int
rule_slug_ok(const char *s)
{
	size_t	 i, n = strlen(s);

	if (n == 0 || n > 63 || s[0] == '-')
		return (0);
	for (i = 0; i < n; i++) {
		if (!(islower((unsigned char)s[i]) ||
		    isdigit((unsigned char)s[i]) || s[i] == '-'))
			return (0);
	}
	return (1);
}

/* Check a text value against its spec; *out borrowed from v. */
static int
rule_string(struct parser *p, const json_t *v, const char *path,
    const struct strspec *spec, const char **out)
{
	const char	*s;
	char		 words[256];

	if (!json_is_string(v))
		return (rule_fail(p, path, "%s must be text", spec->what));
	s = json_string_value(v);
	if (strlen(s) != json_string_length(v))
		return (rule_fail(p, path, "%s must not contain NUL "
		    "characters", spec->what));
	if (*s == '\0')
		return (rule_fail(p, path, "%s must not be empty",
		    spec->what));
	if (spec->allowed != NULL && !rule_in(s, spec->allowed)) {
		rule_words(words, sizeof words, spec->allowed);
		return (rule_fail(p, path, "%s must be %s", spec->what,
		    words));
	}
	if (spec->slug && !rule_slug_ok(s))
		return (rule_fail(p, path, "%s must be a shop slug (lowercase "
		    "letters, digits and '-')", spec->what));
	if (spec->maxchars > 0 && rule_chars(s) > spec->maxchars)
		return (rule_fail(p, path, "%s must be at most %zu "
		    "characters", spec->what, spec->maxchars));
	if (spec->maxchars == 0 && strlen(s) > RULE_URL_MAX)
		return (rule_fail(p, path, "%s must be at most %d bytes",
		    spec->what, RULE_URL_MAX));
	*out = s;
	return (0);
}

/* Append a value to a comparison. */
static void
rule_cmp_add(struct segment_cmp *c, const char *v)
{
	c->values = xreallocarray(c->values, c->nvalues + 1,
	    sizeof *c->values);
	c->values[c->nvalues++] = xstrdup(v);
}

/* Append a new comparison to a predicate. */
static struct segment_cmp *
rule_pred_add(struct segment_pred *pr, enum segment_op op)
{
	struct segment_cmp	*c;

	pr->cmps = xreallocarray(pr->cmps, pr->ncmps + 1, sizeof *pr->cmps);
	c = &pr->cmps[pr->ncmps++];
	memset(c, 0, sizeof *c);
	c->op = op;
	return (c);
}

/* Append to a list, skipping duplicates. */
static void
rule_list_add(struct segment_list *l, const char *v)
{
	size_t	 i;

	for (i = 0; i < l->n; i++) {
		if (strcmp(l->items[i], v) == 0)
			return;
	}
	l->items = xreallocarray(l->items, l->n + 1, sizeof *l->items);
	l->items[l->n++] = xstrdup(v);
}

/* Map an operator name. */
static enum segment_op
rule_op(const char *k)
{
	if (strcmp(k, "eq") == 0)
		return (SEG_OP_EQ);
	if (strcmp(k, "ne") == 0)
		return (SEG_OP_NE);
	if (strcmp(k, "gt") == 0)
		return (SEG_OP_GT);
	if (strcmp(k, "gte") == 0)
		return (SEG_OP_GTE);
	if (strcmp(k, "lt") == 0)
		return (SEG_OP_LT);
	if (strcmp(k, "lte") == 0)
		return (SEG_OP_LTE);
	if (strcmp(k, "between") == 0)
		return (SEG_OP_BETWEEN);
	return (SEG_OP_IN);
}

/*
 * One number of a numeric predicate: a whole number in [min, max] when
 * integer, else any finite number within +-RULE_NUM_MAX.  Written as text
 * in buf; *d gets its value.
 */
static int
rule_number(struct parser *p, const json_t *v, const char *path,
    const char *what, int integer, long long min, long long max,
    char *buf, size_t len, double *d)
{
	json_int_t	 i;
	double		 x;

	if (integer) {
		i = json_is_integer(v) ? json_integer_value(v) : 0;
		if (!json_is_integer(v) || i < min || i > max) {
			if (max == INT64_MAX)
				return (rule_fail(p, path, "%s must be an id "
				    "(a positive whole number)", what));
			return (rule_fail(p, path, "%s must be a whole number "
			    "from %lld to %lld", what, min, max));
		}
		snprintf(buf, len, "%lld", (long long)i);
		*d = (double)i;
		return (0);
	}
	if (json_is_integer(v)) {
		i = json_integer_value(v);
		x = (double)i;
		if (fabs(x) > RULE_NUM_MAX)
			goto range;
		snprintf(buf, len, "%lld", (long long)i);
		*d = x;
		return (0);
	}
	if (!json_is_real(v))
		return (rule_fail(p, path, "%s must be a number", what));
	x = json_real_value(v);
	if (!isfinite(x) || fabs(x) > RULE_NUM_MAX)
		goto range;
	snprintf(buf, len, "%.15g", x);
	*d = x;
	return (0);
range:
	return (rule_fail(p, path, "%s must be a number between -%.0f and "
	    "%.0f", what, RULE_NUM_MAX, RULE_NUM_MAX));
}

/*
 * A numeric predicate: a bare number (eq) or {op: value, ...} with eq, ne,
 * gt, gte, lt, lte, between [a, b] or in [...]; all must hold.
 */
static int
rule_numpred(struct parser *p, const json_t *v, const char *path,
    const char *what, int integer, long long min, long long max,
    struct segment_pred *out)
{
	struct segment_cmp	*c;
	const char		*key;
	json_t			*val, *item;
	char			 buf[64], *kp, *ip;
	double			 a, b;
	size_t			 i;
	int			 rc;

	out->type = integer ? SEG_V_INT : SEG_V_NUM;
	if (json_is_number(v)) {
		if (rule_number(p, v, path, what, integer, min, max, buf,
		    sizeof buf, &a) != 0)
			return (-1);
		rule_cmp_add(rule_pred_add(out, SEG_OP_EQ), buf);
		return (0);
	}
	if (!json_is_object(v))
		return (rule_fail(p, path, "%s must be a number or an object "
		    "of comparisons such as {\"gte\": 2}", what));
	if (rule_keys(p, v, path, what, num_ops) != 0)
		return (-1);
	if (json_object_size(v) == 0)
		return (rule_fail(p, path, "%s needs a comparison: eq, ne, "
		    "gt, gte, lt, lte, between or in", what));
	json_object_foreach((json_t *)v, key, val) {
		kp = rule_path(path, key);
		rc = 0;
		c = rule_pred_add(out, rule_op(key));
		if (c->op == SEG_OP_BETWEEN) {
			if (!json_is_array(val) || json_array_size(val) != 2)
				rc = rule_fail(p, kp, "between takes two "
				    "numbers, [low, high]");
			for (i = 0; rc == 0 && i < 2; i++) {
				ip = rule_path_index(kp, i);
				rc = rule_number(p, json_array_get(val, i), ip,
				    what, integer, min, max, buf, sizeof buf,
				    i == 0 ? &a : &b);
				free(ip);
				if (rc == 0)
					rule_cmp_add(c, buf);
			}
			if (rc == 0 && a > b)
				rc = rule_fail(p, kp, "between needs the low "
				    "value first: [%s, %s] is empty",
				    c->values[0], c->values[1]);
		} else if (c->op == SEG_OP_IN) {
			if (!json_is_array(val) || json_array_size(val) == 0 ||
			    json_array_size(val) > SEGMENT_MAX_LIST)
				rc = rule_fail(p, kp, "in takes a list of 1 to "
				    "%d numbers", SEGMENT_MAX_LIST);
			json_array_foreach(val, i, item) {
				if (rc != 0)
					break;
				ip = rule_path_index(kp, i);
				rc = rule_number(p, item, ip, what, integer,
				    min, max, buf, sizeof buf, &a);
				free(ip);
				if (rc == 0)
					rule_cmp_add(c, buf);
			}
		} else {
			rc = rule_number(p, val, kp, what, integer, min, max,
			    buf, sizeof buf, &a);
			if (rc == 0)
				rule_cmp_add(c, buf);
		}
		free(kp);
		if (rc != 0)
			return (-1);
	}
	return (0);
}

/*
 * A text predicate: a bare string (eq) or {"eq": s}, {"ne": s} or
 * {"in": [s, ...]}.
 */
static int
rule_strpred(struct parser *p, const json_t *v, const char *path,
    const struct strspec *spec, struct segment_pred *out)
{
	struct segment_cmp	*c;
	const char		*key, *s;
	json_t			*val, *item;
	char			 shown[RULE_KEY_SHOWN + 1], *kp, *ip;
	size_t			 i;
	int			 rc;

	out->type = SEG_V_STR;
	if (json_is_string(v)) {
		if (rule_string(p, v, path, spec, &s) != 0)
			return (-1);
		rule_cmp_add(rule_pred_add(out, SEG_OP_EQ), s);
		return (0);
	}
	if (!json_is_object(v))
		return (rule_fail(p, path, "%s must be text or an object such "
		    "as {\"in\": [...]}", spec->what));
	json_object_foreach((json_t *)v, key, val) {
		if (rule_in(key, str_ops))
			continue;
		kp = rule_path(path, key);
		rule_shown(shown, sizeof shown, key, RULE_KEY_SHOWN);
		if (rule_in(key, num_ops))
			rule_fail(p, kp, "%s is text: \"%s\" does not apply; "
			    "use eq, ne or in", spec->what, shown);
		else
			rule_fail(p, kp, "%s has no \"%s\"; it takes eq, ne "
			    "or in", spec->what, shown);
		free(kp);
		return (-1);
	}
	if (json_object_size(v) == 0)
		return (rule_fail(p, path, "%s needs a comparison: eq, ne or "
		    "in", spec->what));
	json_object_foreach((json_t *)v, key, val) {
		kp = rule_path(path, key);
		rc = 0;
		c = rule_pred_add(out, rule_op(key));
		if (c->op == SEG_OP_IN) {
			if (!json_is_array(val) || json_array_size(val) == 0 ||
			    json_array_size(val) > SEGMENT_MAX_LIST)
				rc = rule_fail(p, kp, "in takes a list of 1 to "
				    "%d values", SEGMENT_MAX_LIST);
			json_array_foreach(val, i, item) {
				if (rc != 0)
					break;
				ip = rule_path_index(kp, i);
				rc = rule_string(p, item, ip, spec, &s);
				free(ip);
				if (rc == 0)
					rule_cmp_add(c, s);
			}
		} else if ((rc = rule_string(p, val, kp, spec, &s)) == 0)
			rule_cmp_add(c, s);
		free(kp);
		if (rc != 0)
			return (-1);
	}
	return (0);
}

/* Parse n digits. */
static int
rule_digits(const char *s, int n, int *v)
{
	int	 i;

	*v = 0;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return (-1);
		*v = *v * 10 + (s[i] - '0');
	}
	return (0);
}

/* A calendar date "YYYY-MM-DD" (1900-2999); *key gets YYYYMMDD. */
static int
rule_date(struct parser *p, const json_t *v, const char *path,
    const char *what, long *key)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31,
	    30, 31 };
	const char	*s;
	int		 y, m, d;

	if (!json_is_string(v))
		goto bad;
	s = json_string_value(v);
	if (json_string_length(v) != 10 || rule_digits(s, 4, &y) != 0 ||
	    s[4] != '-' || rule_digits(s + 5, 2, &m) != 0 || s[7] != '-' ||
	    rule_digits(s + 8, 2, &d) != 0)
		goto bad;
	if (y < 1900 || y > 2999 || m < 1 || m > 12 || d < 1 ||
	    d > mdays[m - 1])
		goto bad;
	if (m == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 ||
	    y % 400 == 0)))
		goto bad;
	*key = (long)y * 10000 + m * 100 + d;
	return (0);
bad:
	return (rule_fail(p, path, "%s must be a date written YYYY-MM-DD, "
	    "such as 2024-11-01", what));
}

/* [from, to]: two dates, from not after to, into c. */
static int
rule_dates(struct parser *p, const json_t *v, const char *path,
    struct segment_cmp *c)
{
	long	 a, b;
	char	*ip;
	int	 rc;

	if (!json_is_array(v) || json_array_size(v) != 2)
		return (rule_fail(p, path, "between takes two dates, [first "
		    "day, last day], such as [\"2024-11-01\", "
		    "\"2024-11-30\"]"));
	ip = rule_path_index(path, 0);
	rc = rule_date(p, json_array_get(v, 0), ip, "the first day", &a);
	free(ip);
	if (rc != 0)
		return (-1);
	ip = rule_path_index(path, 1);
	rc = rule_date(p, json_array_get(v, 1), ip, "the last day", &b);
	free(ip);
	if (rc != 0)
		return (-1);
	if (a > b)
		return (rule_fail(p, path, "between needs the first day "
		    "before the last: %s is after %s",
		    json_string_value(json_array_get(v, 0)),
		    json_string_value(json_array_get(v, 1))));
	rule_cmp_add(c, json_string_value(json_array_get(v, 0)));
	rule_cmp_add(c, json_string_value(json_array_get(v, 1)));
	return (0);
}

/* A number of days for within_days/more_than_days/last_days. */
static int
rule_days(struct parser *p, const json_t *v, const char *path,
    const char *what, long long min, struct segment_cmp *c)
{
	char	 buf[32];
	double	 d;

	if (rule_number(p, v, path, what, 1, min, SEGMENT_MAX_DAYS, buf,
	    sizeof buf, &d) != 0)
		return (-1);
	rule_cmp_add(c, buf);
	return (0);
}

/*
 * A date predicate: {"within_days": N}, {"more_than_days": N} and/or
 * {"between": [from, to]}; all given must hold.
 */
static int
rule_datepred(struct parser *p, const json_t *v, const char *path,
    const char *what, struct segment_pred *out)
{
	const char	*key;
	json_t		*val;
	char		*kp;
	int		 rc;

	out->type = SEG_V_DATE;
	if (!json_is_object(v))
		return (rule_fail(p, path, "%s takes {\"within_days\": N}, "
		    "{\"more_than_days\": N} or {\"between\": [first day, "
		    "last day]}", what));
	if (rule_keys(p, v, path, what, date_ops) != 0)
		return (-1);
	if (json_object_size(v) == 0)
		return (rule_fail(p, path, "%s needs within_days, "
		    "more_than_days or between", what));
	json_object_foreach((json_t *)v, key, val) {
		kp = rule_path(path, key);
		if (strcmp(key, "within_days") == 0)
			rc = rule_days(p, val, kp, "within_days", 1,
			    rule_pred_add(out, SEG_OP_WITHIN_DAYS));
		else if (strcmp(key, "more_than_days") == 0)
			rc = rule_days(p, val, kp, "more_than_days", 0,
			    rule_pred_add(out, SEG_OP_MORE_THAN_DAYS));
		else
			rc = rule_dates(p, val, kp,
			    rule_pred_add(out, SEG_OP_DATES));
		free(kp);
		if (rc != 0)
			return (-1);
	}
	return (0);
}

/* A window: {"last_days": N} or {"between": [from, to]}. */
static int
rule_window(struct parser *p, const json_t *v, const char *path,
    struct segment_node *n)
{
	json_t	*val;
	char	*kp;
	int	 rc;

	if (!json_is_object(v))
		return (rule_fail(p, path, "window takes {\"last_days\": N} "
		    "or {\"between\": [first day, last day]}"));
	if (rule_keys(p, v, path, "window", window_keys) != 0)
		return (-1);
	if (json_object_size(v) != 1)
		return (rule_fail(p, path, "window takes exactly one of "
		    "last_days or between"));
	n->has_window = 1;
	if ((val = json_object_get(v, "last_days")) != NULL) {
		n->window.op = SEG_OP_WITHIN_DAYS;
		kp = rule_path(path, "last_days");
		rc = rule_days(p, val, kp, "last_days", 1, &n->window);
	} else {
		n->window.op = SEG_OP_DATES;
		kp = rule_path(path, "between");
		rc = rule_dates(p, json_object_get(v, "between"), kp,
		    &n->window);
	}
	free(kp);
	return (rc);
}

/* A string or a list of strings into l. */
static int
rule_strlist(struct parser *p, const json_t *v, const char *path,
    const struct strspec *spec, struct segment_list *l)
{
	const char	*s;
	json_t		*item;
	size_t		 i;
	char		*ip;
	int		 rc;

	if (json_is_string(v)) {
		if (rule_string(p, v, path, spec, &s) != 0)
			return (-1);
		rule_list_add(l, s);
		return (0);
	}
	if (!json_is_array(v) || json_array_size(v) == 0 ||
	    json_array_size(v) > SEGMENT_MAX_LIST)
		return (rule_fail(p, path, "%s takes text or a list of 1 to "
		    "%d values", spec->what, SEGMENT_MAX_LIST));
	json_array_foreach(v, i, item) {
		ip = rule_path_index(path, i);
		rc = rule_string(p, item, ip, spec, &s);
		free(ip);
		if (rc != 0)
			return (-1);
		rule_list_add(l, s);
	}
	return (0);
}

/* A positive id (or, with list, a list of them) into l. */
static int
rule_ids(struct parser *p, const json_t *v, const char *path,
    const char *what, int list, struct segment_list *l)
{
	json_t	*item;
	size_t	 i;
	char	 buf[32], *ip;
	double	 d;
	int	 rc;

	if (list && json_is_array(v)) {
		if (json_array_size(v) == 0 ||
		    json_array_size(v) > SEGMENT_MAX_LIST)
			return (rule_fail(p, path, "%s takes an id or a list "
			    "of 1 to %d ids", what, SEGMENT_MAX_LIST));
		json_array_foreach(v, i, item) {
			ip = rule_path_index(path, i);
			rc = rule_number(p, item, ip, what, 1, 1,
			    INT64_MAX, buf, sizeof buf, &d);
			free(ip);
			if (rc != 0)
				return (-1);
			rule_list_add(l, buf);
		}
		return (0);
	}
	if (rule_number(p, v, path, what, 1, 1, INT64_MAX, buf, sizeof buf,
	    &d) != 0)
		return (-1);
	rule_list_add(l, buf);
	return (0);
}

/* A new node. */
static struct segment_node *
rule_new(enum segment_kind kind, const char *path)
{
	struct segment_node	*n = xcalloc(1, sizeof *n);

	n->kind = kind;
	n->path = xstrdup(path);
	return (n);
}

/* Free a comparison's values. */
static void
rule_cmp_free(struct segment_cmp *c)
{
	size_t	 i;

	for (i = 0; i < c->nvalues; i++)
		free(c->values[i]);
	free(c->values);
}

/* Free a predicate. */
static void
rule_pred_free(struct segment_pred *pr)
{
	size_t	 i;

	for (i = 0; i < pr->ncmps; i++)
		rule_cmp_free(&pr->cmps[i]);
	free(pr->cmps);
}

/* Free a list. */
static void
rule_list_free(struct segment_list *l)
{
	size_t	 i;

	for (i = 0; i < l->n; i++)
		free(l->items[i]);
	free(l->items);
}

/* Free a node and its children. */
static void
rule_node_free(struct segment_node *n)
{
	size_t	 i;

	if (n == NULL)
		return;
	for (i = 0; i < n->nchild; i++)
		rule_node_free(n->child[i]);
	free(n->child);
	rule_pred_free(&n->value);
	rule_pred_free(&n->amount);
	rule_cmp_free(&n->window);
	rule_list_free(&n->names);
	rule_list_free(&n->product_ids);
	rule_list_free(&n->skus);
	rule_list_free(&n->vendors);
	rule_list_free(&n->links);
	rule_cmp_free(&n->postback);
	free(n->title_contains);
	free(n->shop);
	free(n->campaign);
	free(n->url_prefix);
	free(n->itype);
	free(n->path);
	free(n);
}

/* Add a child to a group. */
static void
rule_adopt(struct segment_node *g, struct segment_node *c)
{
	g->child = xreallocarray(g->child, g->nchild + 1, sizeof *g->child);
	g->child[g->nchild++] = c;
}

/* Count one more condition; refuse past the limit. */
static int
rule_count(struct parser *p, const char *path)
{
	if (++p->conditions > SEGMENT_MAX_CONDITIONS)
		return (rule_fail(p, path, "a segment may have at most %d "
		    "conditions; this is one too many (split the segment or "
		    "use in/has_any lists)", SEGMENT_MAX_CONDITIONS));
	return (0);
}

/*
 * A leaf of kind at path (one condition), or fold several into an "all"
 * group: the condition objects with several keys (friend, tags, rfm) mean
 * every key must hold.
 */
static struct segment_node *
rule_leaf(struct parser *p, enum segment_kind kind, const char *path)
{
	if (rule_count(p, path) != 0)
		return (NULL);
	return (rule_new(kind, path));
}

/* Return a single child as is, or the group of several. */
static struct segment_node *
rule_fold(struct segment_node *g)
{
	struct segment_node	*c;

	if (g->nchild != 1)
		return (g);
	c = g->child[0];
	g->nchild = 0;
	rule_node_free(g);
	return (c);
}

/* {"friend": {...}} */
static struct segment_node *
rule_friend(struct parser *p, const json_t *v, const char *path)
{
	static const struct strspec status = { "status", 0, statuses, 0 };
	static const struct strspec lang = { "language", 35, NULL, 0 };
	struct segment_node	*g, *n = NULL;
	const char		*key;
	json_t			*val;
	char			*kp;
	int			 rc;

	if (rule_object(p, v, path, "friend", friend_keys) != 0)
		return (NULL);
	g = rule_new(SEG_ALL, path);
	json_object_foreach((json_t *)v, key, val) {
		kp = rule_path(path, key);
		rc = -1;
		if (strcmp(key, "status") == 0) {
			if ((n = rule_leaf(p, SEG_FRIEND_STATUS, kp)) != NULL)
				rc = rule_strpred(p, val, kp, &status,
				    &n->value);
		} else if (strcmp(key, "language") == 0) {
			if ((n = rule_leaf(p, SEG_FRIEND_LANGUAGE,
			    kp)) != NULL)
				rc = rule_strpred(p, val, kp, &lang,
				    &n->value);
		} else if (strcmp(key, "followed_at") == 0) {
			if ((n = rule_leaf(p, SEG_FRIEND_FOLLOWED_AT,
			    kp)) != NULL)
				rc = rule_datepred(p, val, kp, "followed_at",
				    &n->value);
		} else if (strcmp(key, "first_followed_at") == 0) {
			if ((n = rule_leaf(p, SEG_FRIEND_FIRST_FOLLOWED_AT,
			    kp)) != NULL)
				rc = rule_datepred(p, val, kp,
				    "first_followed_at", &n->value);
		} else {
			if ((n = rule_leaf(p, SEG_FRIEND_LINKED, kp)) != NULL) {
				if (!json_is_boolean(val))
					rule_fail(p, kp, "linked must be true "
					    "(linked to a shop customer) or "
					    "false");
				else {
					n->flag = json_is_true(val);
					rc = 0;
				}
			}
		}
		free(kp);
		if (n != NULL)
			rule_adopt(g, n);
		if (rc != 0) {
			rule_node_free(g);
			return (NULL);
		}
	}
	return (rule_fold(g));
}

/* {"tags": {"has_any": [...], "has_all": [...], "has_none": [...]}} */
static struct segment_node *
rule_tags(struct parser *p, const json_t *v, const char *path)
{
	static const struct strspec tag = { "a tag name", 100, NULL, 0 };
	struct segment_node	*g, *n;
	const char		*key;
	json_t			*val;
	char			*kp;
	int			 rc;

	if (rule_object(p, v, path, "tags", tags_keys) != 0)
		return (NULL);
	g = rule_new(SEG_ALL, path);
	json_object_foreach((json_t *)v, key, val) {
		kp = rule_path(path, key);
		rc = -1;
		if ((n = rule_leaf(p, SEG_TAGS, kp)) != NULL) {
			n->tag_op = strcmp(key, "has_any") == 0 ?
			    SEG_TAGS_ANY : strcmp(key, "has_all") == 0 ?
			    SEG_TAGS_ALL : SEG_TAGS_NONE;
			if (!json_is_array(val))
				rule_fail(p, kp, "%s takes a list of tag "
				    "names, such as [\"VIP\"]", key);
			else
				rc = rule_strlist(p, val, kp, &tag,
				    &n->names);
			rule_adopt(g, n);
		}
		free(kp);
		if (rc != 0) {
			rule_node_free(g);
			return (NULL);
		}
	}
	return (rule_fold(g));
}

/* {"source": {"code": ..., "kind": ...}} */
static struct segment_node *
rule_source(struct parser *p, const json_t *v, const char *path)
{
	static const struct strspec code = { "code", 100, NULL, 0 };
	static const struct strspec kind = { "kind", 0, source_kinds, 0 };
	struct segment_node	*g, *n;
	const char		*key;
	json_t			*val;
	char			*kp;
	int			 rc;

	if (rule_object(p, v, path, "source", source_keys) != 0)
		return (NULL);
	g = rule_new(SEG_ALL, path);
	json_object_foreach((json_t *)v, key, val) {
		kp = rule_path(path, key);
		rc = -1;
		if ((n = rule_leaf(p, strcmp(key, "code") == 0 ?
		    SEG_SOURCE_CODE : SEG_SOURCE_KIND, kp)) != NULL) {
			rc = rule_strpred(p, val, kp, strcmp(key, "code") == 0 ?
			    &code : &kind, &n->value);
			rule_adopt(g, n);
		}
		free(kp);
		if (rc != 0) {
			rule_node_free(g);
			return (NULL);
		}
	}
	return (rule_fold(g));
}

/* The optional count of an event condition; absent means "at least 1". */
static int
rule_count_pred(struct parser *p, const json_t *v, const char *path,
    struct segment_node *n, const char *key)
{
	json_t	*c = json_object_get(v, key);
	char	*kp;
	int	 rc;

	if (c == NULL) {
		n->value.type = SEG_V_INT;
		rule_cmp_add(rule_pred_add(&n->value, SEG_OP_GTE), "1");
		return (0);
	}
	kp = rule_path(path, key);
	rc = rule_numpred(p, c, kp, key, 1, 0, RULE_INT_MAX, &n->value);
	free(kp);
	return (rc);
}

/* Parse the optional window of an event condition. */
static int
rule_opt_window(struct parser *p, const json_t *v, const char *path,
    struct segment_node *n)
{
	json_t	*w = json_object_get(v, "window");
	char	*kp;
	int	 rc;

	if (w == NULL)
		return (0);
	kp = rule_path(path, "window");
	rc = rule_window(p, w, kp, n);
	free(kp);
	return (rc);
}

/* {"products": {...}} of a purchases condition. */
static int
rule_products(struct parser *p, const json_t *v, const char *path,
    struct segment_node *n)
{
	static const struct strspec pid = { "product_id", 200, NULL, 0 };
	static const struct strspec sku = { "sku", 200, NULL, 0 };
	static const struct strspec vendor = { "vendor", 200, NULL, 0 };
	static const struct strspec title = { "title_contains", 200, NULL,
	    0 };
	const char	*key, *s;
	json_t		*val;
	char		*kp;
	int		 rc;

	if (rule_object(p, v, path, "products", products_keys) != 0)
		return (-1);
	json_object_foreach((json_t *)v, key, val) {
		kp = rule_path(path, key);
		if (strcmp(key, "product_id") == 0)
			rc = rule_strlist(p, val, kp, &pid, &n->product_ids);
		else if (strcmp(key, "sku") == 0)
			rc = rule_strlist(p, val, kp, &sku, &n->skus);
		else if (strcmp(key, "vendor") == 0)
			rc = rule_strlist(p, val, kp, &vendor, &n->vendors);
		else if ((rc = rule_string(p, val, kp, &title, &s)) == 0)
			n->title_contains = xstrdup(s);
		free(kp);
		if (rc != 0)
			return (-1);
	}
	return (0);
}

/* {"purchases": {...}} */
static struct segment_node *
rule_purchases(struct parser *p, const json_t *v, const char *path)
{
	static const struct strspec shop = { "shop", 63, NULL, 1 };
	struct segment_node	*n;
	json_t			*val;
	const char		*s;
	char			*kp;
	int			 rc = 0;

	if (!json_is_object(v))
		goto shape;
	if (rule_keys(p, v, path, "purchases", purchases_keys) != 0)
		return (NULL);
	if ((n = rule_leaf(p, SEG_PURCHASES, path)) == NULL)
		return (NULL);
	if (json_object_get(v, "net_amount") == NULL ||
	    json_object_get(v, "count") != NULL)
		rc = rule_count_pred(p, v, path, n, "count");
	if (rc == 0 && (val = json_object_get(v, "net_amount")) != NULL) {
		kp = rule_path(path, "net_amount");
		rc = rule_numpred(p, val, kp, "net_amount", 0, 0, 0,
		    &n->amount);
		free(kp);
	}
	if (rc == 0)
		rc = rule_opt_window(p, v, path, n);
	if (rc == 0 && (val = json_object_get(v, "products")) != NULL) {
		kp = rule_path(path, "products");
		rc = rule_products(p, val, kp, n);
		free(kp);
	}
	if (rc == 0 && (val = json_object_get(v, "shop")) != NULL) {
		kp = rule_path(path, "shop");
		if ((rc = rule_string(p, val, kp, &shop, &s)) == 0)
			n->shop = xstrdup(s);
		free(kp);
	}
	if (rc != 0) {
		rule_node_free(n);
		return (NULL);
	}
	return (n);
shape:
	rule_fail(p, path, "purchases must be an object such as {\"count\": "
	    "{\"gte\": 2}, \"window\": {\"last_days\": 90}}");
	return (NULL);
}

/* {"first_purchase": date}, {"last_purchase": date} */
static struct segment_node *
rule_purchase_date(struct parser *p, const json_t *v, const char *path,
    enum segment_kind kind, const char *what)
{
	struct segment_node	*n;

	if ((n = rule_leaf(p, kind, path)) == NULL)
		return (NULL);
	if (rule_datepred(p, v, path, what, &n->value) != 0) {
		rule_node_free(n);
		return (NULL);
	}
	return (n);
}

/* {"aov": number predicate} */
static struct segment_node *
rule_aov(struct parser *p, const json_t *v, const char *path)
{
	struct segment_node	*n;

	if ((n = rule_leaf(p, SEG_AOV, path)) == NULL)
		return (NULL);
	if (rule_numpred(p, v, path, "aov", 0, 0, 0, &n->value) != 0) {
		rule_node_free(n);
		return (NULL);
	}
	return (n);
}

/* {"rfm": {"r": ..., "f": ..., "m": ...}}, scores 1-5 */
static struct segment_node *
rule_rfm(struct parser *p, const json_t *v, const char *path)
{
	struct segment_node	*g, *n;
	const char		*key;
	json_t			*val;
	char			*kp, what[32];
	int			 rc;

	if (rule_object(p, v, path, "rfm", rfm_keys) != 0)
		return (NULL);
	g = rule_new(SEG_ALL, path);
	json_object_foreach((json_t *)v, key, val) {
		kp = rule_path(path, key);
		rc = -1;
		if ((n = rule_leaf(p, key[0] == 'r' ? SEG_RFM_R : key[0] ==
		    'f' ? SEG_RFM_F : SEG_RFM_M, kp)) != NULL) {
			snprintf(what, sizeof what, "the %s score", key);
			rc = rule_numpred(p, val, kp, what, 1, 1, 5,
			    &n->value);
			rule_adopt(g, n);
		}
		free(kp);
		if (rc != 0) {
			rule_node_free(g);
			return (NULL);
		}
	}
	return (rule_fold(g));
}

/* {"clicks": {...}} */
static struct segment_node *
rule_clicks(struct parser *p, const json_t *v, const char *path)
{
	struct segment_node	*n;
	struct segment_list	 l = { NULL, 0 };
	json_t			*val;
	char			*kp;
	int			 rc;

	if (!json_is_object(v)) {
		rule_fail(p, path, "clicks must be an object such as "
		    "{\"window\": {\"last_days\": 30}} ({} means clicked at "
		    "least once)");
		return (NULL);
	}
	if (rule_keys(p, v, path, "clicks", clicks_keys) != 0)
		return (NULL);
	if ((n = rule_leaf(p, SEG_CLICKS, path)) == NULL)
		return (NULL);
	rc = rule_count_pred(p, v, path, n, "count");
	if (rc == 0)
		rc = rule_opt_window(p, v, path, n);
	if (rc == 0 && (val = json_object_get(v, "link")) != NULL) {
		kp = rule_path(path, "link");
		rc = rule_ids(p, val, kp, "link", 1, &n->links);
		free(kp);
	}
	if (rc == 0 && (val = json_object_get(v, "campaign")) != NULL) {
		kp = rule_path(path, "campaign");
		rc = rule_ids(p, val, kp, "campaign", 0, &l);
		free(kp);
		if (rc == 0)
			n->campaign = xstrdup(l.items[0]);
		rule_list_free(&l);
	}
	if (rc != 0) {
		rule_node_free(n);
		return (NULL);
	}
	return (n);
}

/* {"page_views": {...}} */
static struct segment_node *
rule_page_views(struct parser *p, const json_t *v, const char *path)
{
	static const struct strspec url = { "url_prefix", 0, NULL, 0 };
	struct segment_node	*n;
	json_t			*val;
	const char		*s;
	char			*kp;
	int			 rc;

	if (!json_is_object(v)) {
		rule_fail(p, path, "page_views must be an object such as "
		    "{\"url_prefix\": \"https://shop.example/products/\"}");
		return (NULL);
	}
	if (rule_keys(p, v, path, "page_views", page_views_keys) != 0)
		return (NULL);
	if ((n = rule_leaf(p, SEG_PAGE_VIEWS, path)) == NULL)
		return (NULL);
	rc = rule_count_pred(p, v, path, n, "count");
	if (rc == 0)
		rc = rule_opt_window(p, v, path, n);
	if (rc == 0 && (val = json_object_get(v, "url_prefix")) != NULL) {
		kp = rule_path(path, "url_prefix");
		if ((rc = rule_string(p, val, kp, &url, &s)) == 0)
			n->url_prefix = xstrdup(s);
		free(kp);
	}
	if (rc != 0) {
		rule_node_free(n);
		return (NULL);
	}
	return (n);
}

/* The postback_data of an interactions condition. */
static int
rule_postback(struct parser *p, const json_t *v, const char *path,
    struct segment_node *n)
{
	static const struct strspec pb = { "postback_data",
	    RULE_POSTBACK_MAX, NULL, 0 };
	const char	*key, *s;
	json_t		*val;
	char		*kp;
	int		 rc;

	if (json_is_string(v)) {
		if (rule_string(p, v, path, &pb, &s) != 0)
			return (-1);
		n->postback.op = SEG_OP_EQ;
		rule_cmp_add(&n->postback, s);
		return (0);
	}
	if (!json_is_object(v))
		return (rule_fail(p, path, "postback_data takes text, "
		    "{\"eq\": text} or {\"prefix\": text}"));
	if (rule_keys(p, v, path, "postback_data", postback_ops) != 0)
		return (-1);
	if (json_object_size(v) != 1)
		return (rule_fail(p, path, "postback_data takes exactly one of "
		    "eq or prefix"));
	json_object_foreach((json_t *)v, key, val) {
		kp = rule_path(path, key);
		rc = rule_string(p, val, kp, &pb, &s);
		free(kp);
		if (rc != 0)
			return (-1);
		n->postback.op = strcmp(key, "eq") == 0 ? SEG_OP_EQ :
		    SEG_OP_PREFIX;
		rule_cmp_add(&n->postback, s);
	}
	return (0);
}

/* {"interactions": {...}} */
static struct segment_node *
rule_interactions(struct parser *p, const json_t *v, const char *path)
{
	static const struct strspec itype = { "type", 0, itypes, 0 };
	struct segment_node	*n;
	json_t			*val, *pb;
	const char		*s;
	char			*kp;
	int			 rc;

	if (!json_is_object(v)) {
		rule_fail(p, path, "interactions must be an object such as "
		    "{\"type\": \"message\", \"window\": {\"last_days\": "
		    "30}}");
		return (NULL);
	}
	if (rule_keys(p, v, path, "interactions", interactions_keys) != 0)
		return (NULL);
	if ((n = rule_leaf(p, SEG_INTERACTIONS, path)) == NULL)
		return (NULL);
	rc = rule_count_pred(p, v, path, n, "count");
	if (rc == 0)
		rc = rule_opt_window(p, v, path, n);
	pb = json_object_get(v, "postback_data");
	if (rc == 0 && (val = json_object_get(v, "type")) != NULL) {
		kp = rule_path(path, "type");
		if ((rc = rule_string(p, val, kp, &itype, &s)) == 0) {
			n->itype = xstrdup(s);
			if (pb != NULL && strcmp(s, "postback") != 0)
				rc = rule_fail(p, kp, "postback_data applies "
				    "only to type postback");
		}
		free(kp);
	}
	if (rc == 0 && pb != NULL) {
		kp = rule_path(path, "postback_data");
		rc = rule_postback(p, pb, kp, n);
		free(kp);
		if (n->itype == NULL)
			n->itype = xstrdup("postback");
	}
	if (rc != 0) {
		rule_node_free(n);
		return (NULL);
	}
	return (n);
}

/* {"messaging": {...}} */
static struct segment_node *
rule_messaging(struct parser *p, const json_t *v, const char *path)
{
	struct segment_node	*n;
	struct segment_list	 l = { NULL, 0 };
	json_t			*val;
	char			*kp;
	int			 rc;

	if (!json_is_object(v)) {
		rule_fail(p, path, "messaging must be an object such as "
		    "{\"campaign\": 12} or {\"window\": {\"last_days\": 7}}");
		return (NULL);
	}
	if (rule_keys(p, v, path, "messaging", messaging_keys) != 0)
		return (NULL);
	if ((n = rule_leaf(p, SEG_MESSAGING, path)) == NULL)
		return (NULL);
	rc = rule_count_pred(p, v, path, n, "count");
	if (rc == 0)
		rc = rule_opt_window(p, v, path, n);
	if (rc == 0 && (val = json_object_get(v, "campaign")) != NULL) {
		kp = rule_path(path, "campaign");
		rc = rule_ids(p, val, kp, "campaign", 0, &l);
		free(kp);
		if (rc == 0)
			n->campaign = xstrdup(l.items[0]);
		rule_list_free(&l);
	}
	if (rc != 0) {
		rule_node_free(n);
		return (NULL);
	}
	return (n);
}

/* A group: {"all": [...]}, {"any": [...]} or {"not": rule}. */
static struct segment_node *
rule_group(struct parser *p, const char *key, const json_t *v,
    const char *path, int depth)
{
	struct segment_node	*g, *c;
	json_t			*item;
	size_t			 i;
	char			*ip;

	if (depth > SEGMENT_MAX_DEPTH) {
		rule_fail(p, path, "groups (all, any, not) may be nested at "
		    "most %d deep", SEGMENT_MAX_DEPTH);
		return (NULL);
	}
	if (depth > p->depth)
		p->depth = depth;
	if (strcmp(key, "not") == 0) {
		if (!json_is_object(v)) {
			rule_fail(p, path, "not takes one rule, such as "
			    "{\"not\": {\"tags\": {\"has_any\": [\"VIP\"]}}}");
			return (NULL);
		}
		g = rule_new(SEG_NOT, path);
		if ((c = rule_node(p, v, path, depth)) == NULL) {
			rule_node_free(g);
			return (NULL);
		}
		rule_adopt(g, c);
		return (g);
	}
	if (!json_is_array(v)) {
		rule_fail(p, path, "%s takes a list of rules", key);
		return (NULL);
	}
	if (json_array_size(v) == 0) {
		rule_fail(p, path, "%s needs at least one rule", key);
		return (NULL);
	}
	if (json_array_size(v) > SEGMENT_MAX_CONDITIONS) {
		rule_fail(p, path, "%s may list at most %d rules", key,
		    SEGMENT_MAX_CONDITIONS);
		return (NULL);
	}
	g = rule_new(strcmp(key, "all") == 0 ? SEG_ALL : SEG_ANY, path);
	json_array_foreach(v, i, item) {
		ip = rule_path_index(path, i);
		c = rule_node(p, item, ip, depth);
		free(ip);
		if (c == NULL) {
			rule_node_free(g);
			return (NULL);
		}
		rule_adopt(g, c);
	}
	return (g);
}

/* One rule node: a group or a condition, an object with exactly one key. */
static struct segment_node *
rule_node(struct parser *p, const json_t *v, const char *path, int depth)
{
	const char		*key, *hint, *other = NULL;
	json_t			*val, *x;
	char			 shown[RULE_KEY_SHOWN + 1];
	char			 shown2[RULE_KEY_SHOWN + 1];
	char			*kp;
	struct segment_node	*n;
	void			*it;

	if (!json_is_object(v)) {
		rule_fail(p, path, "a rule must be an object such as "
		    "{\"all\": [...]} or {\"friend\": {\"status\": "
		    "\"following\"}}");
		return (NULL);
	}
	if (json_object_size(v) == 0) {
		rule_fail(p, path, "this rule is empty: give a group (all, "
		    "any, not) or a condition (friend, tags, purchases, "
		    "clicks...)");
		return (NULL);
	}
	it = json_object_iter((json_t *)v);
	key = json_object_iter_key(it);
	val = json_object_iter_value(it);
	if (json_object_size(v) > 1) {
		json_object_foreach((json_t *)v, other, x) {
			if (strcmp(other, key) != 0)
				break;
		}
		rule_shown(shown, sizeof shown, key, RULE_KEY_SHOWN);
		rule_shown(shown2, sizeof shown2, other, RULE_KEY_SHOWN);
		rule_fail(p, path, "put one condition in each object and "
		    "combine them with all or any (this one has \"%s\" and "
		    "\"%s\")", shown, shown2);
		return (NULL);
	}
	kp = rule_path(path, key);
	if (rule_in(key, group_keys))
		n = rule_group(p, key, val, kp, depth + 1);
	else if (strcmp(key, "friend") == 0)
		n = rule_friend(p, val, kp);
	else if (strcmp(key, "tags") == 0)
		n = rule_tags(p, val, kp);
	else if (strcmp(key, "source") == 0)
		n = rule_source(p, val, kp);
	else if (strcmp(key, "purchases") == 0)
		n = rule_purchases(p, val, kp);
	else if (strcmp(key, "first_purchase") == 0)
		n = rule_purchase_date(p, val, kp, SEG_FIRST_PURCHASE,
		    "first_purchase");
	else if (strcmp(key, "last_purchase") == 0)
		n = rule_purchase_date(p, val, kp, SEG_LAST_PURCHASE,
		    "last_purchase");
	else if (strcmp(key, "aov") == 0)
		n = rule_aov(p, val, kp);
	else if (strcmp(key, "rfm") == 0)
		n = rule_rfm(p, val, kp);
	else if (strcmp(key, "clicks") == 0)
		n = rule_clicks(p, val, kp);
	else if (strcmp(key, "page_views") == 0)
		n = rule_page_views(p, val, kp);
	else if (strcmp(key, "interactions") == 0)
		n = rule_interactions(p, val, kp);
	else if (strcmp(key, "messaging") == 0)
		n = rule_messaging(p, val, kp);
	else {
		rule_shown(shown, sizeof shown, key, RULE_KEY_SHOWN);
		if ((hint = rule_suggest(key, any_keys)) != NULL)
			rule_fail(p, kp, "unknown condition \"%s\"; did you "
			    "mean \"%s\"?", shown, hint);
		else
			rule_fail(p, kp, "unknown condition \"%s\"; a rule is "
			    "a group (all, any, not) or a condition (friend, "
			    "tags, source, purchases, first_purchase, "
			    "last_purchase, aov, rfm, clicks, page_views, "
			    "interactions, messaging)", shown);
		n = NULL;
	}
	free(kp);
	return (n);
}

/* Parse and validate a rule. */
struct segment_rule *
segment_rule_parse(const json_t *v, const char *path,
    struct segment_error *err)
{
	struct parser		 p;
	struct segment_rule	*r;
	struct segment_node	*n;

	memset(&p, 0, sizeof p);
	memset(err, 0, sizeof *err);
	p.err = err;
	if (v == NULL) {
		rule_fail(&p, path, "a rule is required");
		return (NULL);
	}
	if ((n = rule_node(&p, v, path, 0)) == NULL)
		return (NULL);
	r = xcalloc(1, sizeof *r);
	r->root = n;
	r->conditions = p.conditions;
	r->depth = p.depth;
	return (r);
}

/* Free a parsed rule. */
void
segment_rule_free(struct segment_rule *r)
{
	if (r == NULL)
		return;
	rule_node_free(r->root);
	free(r);
}
