/* SPDX-License-Identifier: ISC */
/*
 * line.c -- turn a verified LINE webhook body into inbox records.  Parsing is
 * lenient where LINE may change or extend things (unknown event and message
 * types, missing optional fields) and records what is wrong instead of
 * failing, so that nothing LINE sent is dropped.  Strings holding NUL
 * (\u0000, which PostgreSQL's jsonb refuses) are rewritten to U+FFFD.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/crypto.h"
#include "musubi/line.h"
#include "musubi/xmalloc.h"

/* Tell whether s is a LINE user id. */
int
line_is_user_id(const char *s)
{
	size_t	 i;

	if (s == NULL || s[0] != 'U' || strlen(s) != 33)
		return (0);
	for (i = 1; i < 33; i++) {
		if (!isdigit((unsigned char)s[i]) &&
		    !(s[i] >= 'a' && s[i] <= 'f'))
			return (0);
	}
	return (1);
}

/* Cut s to at most max bytes without splitting a UTF-8 character. */
static void
line_truncate(char *s, size_t max)
{
	if (s == NULL || strlen(s) <= max)
		return;
	while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
		max--;
	s[max] = '\0';
}

/*
 * Replace NUL bytes inside string values, recursively.  jansson refuses
 * documents nested deeper than JSON_PARSER_MAX_DEPTH, which bounds this.
 */
static void
line_sanitize(json_t *j, int depth)
{
	const char	*key;
	json_t		*v;
	size_t		 i, len, n;
	char		*out;
	const char	*s;

	if (depth > 4096)
		return;
	if (json_is_object(j)) {
		json_object_foreach(j, key, v)
			line_sanitize(v, depth + 1);
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, v)
			line_sanitize(v, depth + 1);
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

/*
 * Hash a JSON value canonically: "h:" + hex SHA-256.  deliveryContext is
 * left out, so a redelivered copy hashes like the original.
 */
static char *
line_hash_id(const json_t *j)
{
	char	*s, *hex, *id;
	json_t	*copy = NULL;

	if (json_is_object(j) &&
	    json_object_get(j, "deliveryContext") != NULL) {
		copy = json_copy((json_t *)j);
		json_object_del(copy, "deliveryContext");
		j = copy;
	}
	s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	json_decref(copy);
	if (s == NULL)
		s = xstrdup("");
	hex = crypto_sha256_hex(s, strlen(s));
	xasprintf(&id, "h:%s", hex);
	free(hex);
	free(s);
	return (id);
}

/* Copy a string member, or NULL. */
static char *
line_str(const json_t *obj, const char *key)
{
	const json_t	*v = json_object_get(obj, key);

	if (!json_is_string(v))
		return (NULL);
	return (xstrdup(json_string_value(v)));
}

/*
 * Fill one record from an event value.  reals: numbers were read as reals
 * (see line_parse), so an integral real timestamp counts.
 */
static void
line_event(json_t *ev, struct line_event_rec *r, int reals)
{
	const json_t	*v, *src, *ctx;
	const char	*id;

	r->ts_ms = -1;
	r->payload = json_incref(ev);
	if (!json_is_object(ev)) {
		r->type = xstrdup("");
		r->event_id = line_hash_id(ev);
		r->problem = xstrdup("event is not a JSON object");
		return;
	}
	v = json_object_get(ev, "type");
	r->type = json_is_string(v) ? xstrdup(json_string_value(v)) :
	    xstrdup("");
	line_truncate(r->type, 64);
	v = json_object_get(ev, "timestamp");
	if (json_is_integer(v) && json_integer_value(v) >= 0 &&
	    json_integer_value(v) < 32503680000000LL)	/* year 3000 */
		r->ts_ms = json_integer_value(v);
	else if (reals && json_is_real(v) && json_real_value(v) >= 0 &&
	    json_real_value(v) < 32503680000000.0 &&
	    json_real_value(v) == (double)(long long)json_real_value(v))
		r->ts_ms = (long long)json_real_value(v);
	r->mode = line_str(ev, "mode");
	line_truncate(r->mode, 32);
	src = json_object_get(ev, "source");
	if (json_is_object(src)) {
		r->user_id = line_str(src, "userId");
		line_truncate(r->user_id, 64);
	}
	ctx = json_object_get(ev, "deliveryContext");
	r->redelivery = json_is_object(ctx) &&
	    json_is_true(json_object_get(ctx, "isRedelivery"));
	v = json_object_get(ev, "webhookEventId");
	id = json_is_string(v) ? json_string_value(v) : NULL;
	if (id != NULL && *id != '\0' && strlen(id) <= LINE_EVENT_ID_MAX)
		r->event_id = xstrdup(id);
	else
		r->event_id = line_hash_id(ev);

	if (*r->type == '\0')
		r->problem = xstrdup("event has no type");
	else if (r->ts_ms < 0)
		r->problem = xstrdup("event has no valid timestamp");
	else if (r->user_id != NULL && !line_is_user_id(r->user_id))
		r->problem = xstrdup("source.userId is not a LINE user id");
	else if ((strcmp(r->type, "follow") == 0 ||
	    strcmp(r->type, "unfollow") == 0) && r->user_id == NULL)
		r->problem = xstrdup("follow/unfollow without source.userId");
}

/* Parse a delivery. */
int
line_parse(const void *body, size_t len, struct line_delivery *d,
    char **cause)
{
	json_t		*root, *events, *ev;
	json_error_t	 err;
	size_t		 i;
	int		 reals = 0;

	memset(d, 0, sizeof *d);
	root = json_loadb(body, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &err);
	if (root == NULL && strstr(err.text, "too big integer") != NULL) {
		/*
		 * Valid JSON with an integer beyond 64 bits somewhere: read
		 * numbers as reals rather than refuse what LINE would resend.
		 */
		root = json_loadb(body, len, JSON_ALLOW_NUL | JSON_DECODE_ANY |
		    JSON_DECODE_INT_AS_REAL, &err);
		reals = 1;
	}
	if (root == NULL) {
		xsetcause(cause, "invalid JSON at line %d, column %d: %s",
		    err.line, err.column, err.text);
		return (-1);
	}
	line_sanitize(root, 0);
	if (json_is_object(root)) {
		d->destination = line_str(root, "destination");
		events = json_object_get(root, "events");
		if (json_is_array(events)) {
			d->nevents = json_array_size(events);
			if (d->nevents > 0)
				d->events = xcalloc(d->nevents,
				    sizeof *d->events);
			json_array_foreach(events, i, ev)
				line_event(ev, &d->events[i], reals);
			json_decref(root);
			return (0);
		}
	}
	/* Not a delivery as documented: keep the whole thing, marked. */
	d->nevents = 1;
	d->events = xcalloc(1, sizeof *d->events);
	d->events[0].ts_ms = -1;
	d->events[0].type = xstrdup("");
	d->events[0].event_id = line_hash_id(root);
	d->events[0].payload = root;
	d->events[0].problem = xstrdup(json_is_object(root) ?
	    "delivery has no events array" : "delivery is not a JSON object");
	return (0);
}

/* Free a parsed delivery. */
void
line_delivery_free(struct line_delivery *d)
{
	size_t	 i;

	for (i = 0; i < d->nevents; i++) {
		free(d->events[i].event_id);
		free(d->events[i].type);
		free(d->events[i].mode);
		free(d->events[i].user_id);
		free(d->events[i].problem);
		json_decref(d->events[i].payload);
	}
	free(d->events);
	free(d->destination);
	memset(d, 0, sizeof *d);
}
