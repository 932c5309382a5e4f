/* SPDX-License-Identifier: ISC */
/*
 * messages.c -- LINE message objects of a campaign: validation against
 * LINE's documented limits (reference/line-platform.md §0, §2.4), the
 * personalisation tokens, and the rewriting of URLs into tracked links.
 * Pure: no I/O, no state; everything is driven by campaign.c and the API.
 *
 * Which URLs are tracked: every http(s) URL inside the "text" of a text or
 * textV2 message, and the target of every URI action (uri, linkUri of
 * imagemap actions, altUri.desktop), wherever the action sits (template,
 * flex, imagemap, quick reply).  Media URLs (images, video) are left alone:
 * LINE fetches them, a person never clicks them.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "musubi/campaign.h"
#include "musubi/xmalloc.h"

#define MV_PATH_MAX	512
#define MV_FALLBACK_MAX	100

/* Validation state: the path being looked at and the first error. */
struct mv {
	char	 path[MV_PATH_MAX];
	char	*epath;
	char	*cause;
};

/* What a string walk does. */
struct mwalk {
	const struct campaign_recipient	*rcpt;
	campaign_url_fn			*fn;
	void				*arg;
	json_t				*urls;	/* collect mode */
};

/* Count UTF-16 code units. */
size_t
campaign_utf16_len(const char *s)
{
	const unsigned char	*p;
	size_t			 n = 0;

	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if ((*p & 0xc0) == 0x80)
			continue;
		n += *p >= 0xf0 ? 2 : 1;
	}
	return (n);
}

/* Record the first error at path + suffix; always returns -1. */
static int PRINTFLIKE(3, 4)
mv_fail(struct mv *v, const char *suffix, const char *fmt, ...)
{
	va_list	 ap;

	if (v->cause != NULL)
		return (-1);
	xasprintf(&v->epath, "%s%s", v->path, suffix != NULL ? suffix : "");
	va_start(ap, fmt);
	xvasprintf(&v->cause, fmt, ap);
	va_end(ap);
	return (-1);
}

/* Append one JSON-pointer step (escaped) to the path; returns old length. */
static size_t
mv_push(struct mv *v, const char *key)
{
	size_t	 len = strlen(v->path), n = len;
	const char *k;

	if (n + 2 < sizeof v->path)
		v->path[n++] = '/';
	for (k = key; *k != '\0' && n + 3 < sizeof v->path; k++) {
		if (*k == '~' || *k == '/') {
			v->path[n++] = '~';
			v->path[n++] = *k == '~' ? '0' : '1';
		} else
			v->path[n++] = *k;
	}
	v->path[n] = '\0';
	return (len);
}

/* Append an array index to the path; returns old length. */
static size_t
mv_push_index(struct mv *v, size_t i)
{
	char	 b[24];

	snprintf(b, sizeof b, "%zu", i);
	return (mv_push(v, b));
}

/* Restore the path to an old length. */
static void
mv_pop(struct mv *v, size_t len)
{
	v->path[len] = '\0';
}

/*
 * Check a string member: present if required, non-empty, at most max
 * UTF-16 units (0: no limit).  *out is borrowed (NULL when absent).
 */
static int
mv_string(struct mv *v, json_t *obj, const char *key, int required,
    size_t max, const char **out)
{
	json_t	*s = json_object_get(obj, key);
	char	 sfx[80];

	snprintf(sfx, sizeof sfx, "/%s", key);
	if (out != NULL)
		*out = NULL;
	if (s == NULL || json_is_null(s)) {
		if (required)
			return (mv_fail(v, sfx, "%s is required", key));
		return (0);
	}
	if (!json_is_string(s))
		return (mv_fail(v, sfx, "%s must be a string", key));
	if (strlen(json_string_value(s)) != json_string_length(s))
		return (mv_fail(v, sfx, "%s must not contain NUL", key));
	if (json_string_length(s) == 0)
		return (mv_fail(v, sfx, "%s must not be empty", key));
	if (max > 0 && campaign_utf16_len(json_string_value(s)) > max)
		return (mv_fail(v, sfx, "%s is longer than %zu characters "
		    "(UTF-16 code units)", key, max));
	if (out != NULL)
		*out = json_string_value(s);
	return (0);
}

/* Tell whether a URL has a scheme and a host and no blanks. */
static int
mv_url_shape(const char *u, const char *scheme)
{
	const char	*p;
	size_t		 n = strlen(scheme);

	if (strncasecmp(u, scheme, n) != 0 || u[n] == '\0' || u[n] == '/')
		return (0);
	for (p = u; *p != '\0'; p++) {
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return (0);
	}
	return (1);
}

/* Check an https URL member (media, icons): required or not. */
static int
mv_https(struct mv *v, json_t *obj, const char *key, int required)
{
	const char	*u;
	char		 sfx[80];

	if (mv_string(v, obj, key, required, CAMPAIGN_URL_MAX, &u) != 0)
		return (-1);
	snprintf(sfx, sizeof sfx, "/%s", key);
	if (u != NULL && !mv_url_shape(u, "https://"))
		return (mv_fail(v, sfx, "%s must be an https URL", key));
	return (0);
}

/* Check the target of a URI action: https, or a line:/tel: link. */
static int
mv_action_uri(struct mv *v, json_t *obj, const char *key, int required)
{
	const char	*u;
	char		 sfx[80];

	if (mv_string(v, obj, key, required, 1000, &u) != 0)
		return (-1);
	snprintf(sfx, sizeof sfx, "/%s", key);
	if (u != NULL && !mv_url_shape(u, "https://") &&
	    strncasecmp(u, "line://", 7) != 0 && strncasecmp(u, "tel:", 4) != 0)
		return (mv_fail(v, sfx, "%s must be an https URL (or a line:// "
		    "or tel: link)", key));
	return (0);
}

/* Check an action object. */
static int
mv_action(struct mv *v, json_t *a)
{
	const char	*type;
	json_t		*alt;
	size_t		 at;

	if (!json_is_object(a))
		return (mv_fail(v, NULL, "an action must be an object"));
	if (mv_string(v, a, "type", 1, 0, &type) != 0)
		return (-1);
	if (strcmp(type, "uri") == 0) {
		if (json_object_get(a, "linkUri") != NULL &&
		    json_object_get(a, "uri") == NULL)
			return (mv_action_uri(v, a, "linkUri", 1));
		if (mv_action_uri(v, a, "uri", 1) != 0)
			return (-1);
		if ((alt = json_object_get(a, "altUri")) != NULL) {
			at = mv_push(v, "altUri");
			if (!json_is_object(alt))
				return (mv_fail(v, NULL,
				    "altUri must be an object"));
			if (mv_action_uri(v, alt, "desktop", 1) != 0)
				return (-1);
			mv_pop(v, at);
		}
	} else if (strcmp(type, "message") == 0) {
		if (mv_string(v, a, "text", 1, 300, NULL) != 0)
			return (-1);
	} else if (strcmp(type, "postback") == 0) {
		if (mv_string(v, a, "data", 1, 300, NULL) != 0)
			return (-1);
	}
	return (0);
}

/* Check every action below a value (template, flex, imagemap). */
static int
mv_actions_below(struct mv *v, json_t *j)
{
	const char	*key;
	json_t		*c, *a;
	size_t		 i, at;

	if (json_is_object(j)) {
		json_object_foreach(j, key, c) {
			at = mv_push(v, key);
			if (strcmp(key, "action") == 0 ||
			    strcmp(key, "defaultAction") == 0) {
				if (mv_action(v, c) != 0)
					return (-1);
			} else if (strcmp(key, "actions") == 0 &&
			    json_is_array(c)) {
				json_array_foreach(c, i, a) {
					size_t	 at2 = mv_push_index(v, i);

					if (mv_action(v, a) != 0)
						return (-1);
					mv_pop(v, at2);
				}
			} else if (mv_actions_below(v, c) != 0)
				return (-1);
			mv_pop(v, at);
		}
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, c) {
			at = mv_push_index(v, i);
			if (mv_actions_below(v, c) != 0)
				return (-1);
			mv_pop(v, at);
		}
	}
	return (0);
}

/* Check a flex message. */
static int
mv_flex(struct mv *v, json_t *m)
{
	json_t		*c, *bubbles;
	const char	*type;
	char		*dump;
	size_t		 len, max, at;

	if (mv_string(v, m, "altText", 1, CAMPAIGN_ALTTEXT_MAX, NULL) != 0)
		return (-1);
	c = json_object_get(m, "contents");
	if (!json_is_object(c))
		return (mv_fail(v, "/contents", "contents must be a bubble or "
		    "carousel object"));
	at = mv_push(v, "contents");
	if (mv_string(v, c, "type", 1, 0, &type) != 0)
		return (-1);
	if (strcmp(type, "carousel") == 0) {
		max = CAMPAIGN_CAROUSEL_MAX;
		bubbles = json_object_get(c, "contents");
		if (!json_is_array(bubbles) || json_array_size(bubbles) < 1 ||
		    json_array_size(bubbles) > CAMPAIGN_BUBBLES_MAX)
			return (mv_fail(v, "/contents", "a carousel holds 1 "
			    "to %d bubbles", CAMPAIGN_BUBBLES_MAX));
	} else if (strcmp(type, "bubble") == 0)
		max = CAMPAIGN_BUBBLE_MAX;
	else
		return (mv_fail(v, "/type", "contents type must be bubble or "
		    "carousel"));
	dump = json_dumps(c, JSON_COMPACT);
	len = dump != NULL ? strlen(dump) : 0;
	free(dump);
	if (len > max)
		return (mv_fail(v, NULL, "a flex %s may be at most %zu bytes "
		    "of JSON (this one is %zu)", type, max, len));
	if (mv_actions_below(v, c) != 0)
		return (-1);
	mv_pop(v, at);
	return (0);
}

/* Check a template message. */
static int
mv_template(struct mv *v, json_t *m)
{
	static const char *const types[] = { "buttons", "confirm",
	    "carousel", "image_carousel", NULL };
	json_t		*t;
	const char	*type;
	size_t		 i, at;

	if (mv_string(v, m, "altText", 1, CAMPAIGN_ALTTEXT_MAX, NULL) != 0)
		return (-1);
	t = json_object_get(m, "template");
	if (!json_is_object(t))
		return (mv_fail(v, "/template", "template must be an object"));
	at = mv_push(v, "template");
	if (mv_string(v, t, "type", 1, 0, &type) != 0)
		return (-1);
	for (i = 0; types[i] != NULL; i++) {
		if (strcmp(types[i], type) == 0)
			break;
	}
	if (types[i] == NULL)
		return (mv_fail(v, "/type", "template type must be buttons, "
		    "confirm, carousel or image_carousel"));
	if (strcmp(type, "buttons") == 0 &&
	    (mv_string(v, t, "text", 1, 160, NULL) != 0 ||
	    mv_https(v, t, "thumbnailImageUrl", 0) != 0))
		return (-1);
	if (strcmp(type, "confirm") == 0 &&
	    mv_string(v, t, "text", 1, 240, NULL) != 0)
		return (-1);
	if (mv_actions_below(v, t) != 0)
		return (-1);
	mv_pop(v, at);
	return (0);
}

/* Check quickReply and sender, common to every message. */
static int
mv_common(struct mv *v, json_t *m)
{
	json_t	*qr, *items, *it, *s;
	size_t	 i, at, at2;

	if ((qr = json_object_get(m, "quickReply")) != NULL) {
		at = mv_push(v, "quickReply");
		if (!json_is_object(qr))
			return (mv_fail(v, NULL, "quickReply must be an "
			    "object"));
		items = json_object_get(qr, "items");
		if (!json_is_array(items) || json_array_size(items) < 1 ||
		    json_array_size(items) > CAMPAIGN_QUICKREPLY_MAX)
			return (mv_fail(v, "/items", "quickReply holds 1 to %d "
			    "items", CAMPAIGN_QUICKREPLY_MAX));
		mv_push(v, "items");
		json_array_foreach(items, i, it) {
			at2 = mv_push_index(v, i);
			if (!json_is_object(it))
				return (mv_fail(v, NULL, "an item must be an "
				    "object"));
			if (mv_https(v, it, "imageUrl", 0) != 0)
				return (-1);
			mv_push(v, "action");
			if (mv_action(v, json_object_get(it, "action")) != 0)
				return (-1);
			mv_pop(v, at2);
		}
		mv_pop(v, at);
	}
	if ((s = json_object_get(m, "sender")) != NULL) {
		at = mv_push(v, "sender");
		if (!json_is_object(s))
			return (mv_fail(v, NULL, "sender must be an object"));
		if (mv_string(v, s, "name", 0, 20, NULL) != 0 ||
		    mv_https(v, s, "iconUrl", 0) != 0)
			return (-1);
		mv_pop(v, at);
	}
	return (0);
}

/* Check one message object. */
static int
mv_message(struct mv *v, json_t *m)
{
	const char	*type, *key;
	json_t		*e, *j;
	size_t		 n;

	if (!json_is_object(m))
		return (mv_fail(v, NULL, "a message must be an object"));
	if (mv_string(v, m, "type", 1, 0, &type) != 0)
		return (-1);
	if (strcmp(type, "text") == 0 || strcmp(type, "textV2") == 0) {
		if (mv_string(v, m, "text", 1, CAMPAIGN_TEXT_MAX, NULL) != 0)
			return (-1);
		e = json_object_get(m, "emojis");
		if (e != NULL && (!json_is_array(e) ||
		    json_array_size(e) > CAMPAIGN_EMOJIS_MAX))
			return (mv_fail(v, "/emojis", "emojis holds at most %d "
			    "entries", CAMPAIGN_EMOJIS_MAX));
		e = json_object_get(m, "substitution");
		if (e != NULL) {
			if (!json_is_object(e) || json_object_size(e) > 100)
				return (mv_fail(v, "/substitution",
				    "substitution holds at most 100 entries"));
			json_object_foreach(e, key, j) {
				n = strlen(key);
				if (n < 1 || n > 20 || strspn(key,
				    "abcdefghijklmnopqrstuvwxyz"
				    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				    "0123456789_") != n)
					return (mv_fail(v, "/substitution",
					    "substitution keys match "
					    "[0-9A-Za-z_]{1,20}"));
			}
		}
	} else if (strcmp(type, "sticker") == 0) {
		if (mv_string(v, m, "packageId", 1, 0, NULL) != 0 ||
		    mv_string(v, m, "stickerId", 1, 0, NULL) != 0)
			return (-1);
	} else if (strcmp(type, "image") == 0 || strcmp(type, "video") == 0) {
		if (mv_https(v, m, "originalContentUrl", 1) != 0 ||
		    mv_https(v, m, "previewImageUrl", 1) != 0)
			return (-1);
	} else if (strcmp(type, "audio") == 0) {
		if (mv_https(v, m, "originalContentUrl", 1) != 0)
			return (-1);
		if (!json_is_integer(json_object_get(m, "duration")))
			return (mv_fail(v, "/duration", "duration (ms) is "
			    "required"));
	} else if (strcmp(type, "location") == 0) {
		if (mv_string(v, m, "title", 1, 100, NULL) != 0 ||
		    mv_string(v, m, "address", 1, 100, NULL) != 0)
			return (-1);
		if (!json_is_number(json_object_get(m, "latitude")))
			return (mv_fail(v, "/latitude", "latitude must be a "
			    "number"));
		if (!json_is_number(json_object_get(m, "longitude")))
			return (mv_fail(v, "/longitude", "longitude must be a "
			    "number"));
	} else if (strcmp(type, "imagemap") == 0) {
		if (mv_https(v, m, "baseUrl", 1) != 0 ||
		    mv_string(v, m, "altText", 1, CAMPAIGN_ALTTEXT_MAX,
		    NULL) != 0)
			return (-1);
		if (!json_is_object(json_object_get(m, "baseSize")))
			return (mv_fail(v, "/baseSize", "baseSize is "
			    "required"));
		e = json_object_get(m, "actions");
		if (!json_is_array(e) || json_array_size(e) > 50)
			return (mv_fail(v, "/actions", "actions must be an "
			    "array of at most 50"));
		if (mv_actions_below(v, m) != 0)
			return (-1);
	} else if (strcmp(type, "template") == 0) {
		if (mv_template(v, m) != 0)
			return (-1);
	} else if (strcmp(type, "flex") == 0) {
		if (mv_flex(v, m) != 0)
			return (-1);
	} else if (strcmp(type, "coupon") == 0) {
		if (mv_string(v, m, "couponId", 1, 0, NULL) != 0)
			return (-1);
	} else
		return (mv_fail(v, "/type", "unknown message type \"%.40s\" "
		    "(text, textV2, sticker, image, video, audio, location, "
		    "imagemap, template, flex, coupon)", type));
	return (mv_common(v, m));
}

/*
 * Parse a personalisation token at p ("{{"): its length, and which one
 * (1 display_name, 2 user_id); fallback points into p.  0 if not a token.
 */
static size_t
mv_token(const char *p, int *which, const char **fb, size_t *fblen)
{
	const char	*q, *end;

	if (strncmp(p, "{{", 2) != 0 || (end = strstr(p + 2, "}}")) == NULL)
		return (0);
	q = p + 2;
	*fb = NULL;
	*fblen = 0;
	if (strncmp(q, "user_id}}", 9) == 0) {
		*which = 2;
		return (11);
	}
	if (strncmp(q, "display_name", 12) != 0)
		return (0);
	q += 12;
	if (q == end) {
		*which = 1;
		return ((size_t)(end + 2 - p));
	}
	if (*q != '|' || (size_t)(end - q - 1) > MV_FALLBACK_MAX ||
	    memchr(q + 1, '{', (size_t)(end - q - 1)) != NULL)
		return (0);
	*which = 1;
	*fb = q + 1;
	*fblen = (size_t)(end - q - 1);
	return ((size_t)(end + 2 - p));
}

/*
 * The length of an http(s) URL starting at s[i], or 0.  A URL ends at a
 * blank, a non-ASCII byte or one of "<>\^`{|}; trailing punctuation and an
 * unbalanced ')' are left out.
 */
static size_t
mv_url_len(const char *s, size_t i)
{
	const char	*p = s + i;
	size_t		 n, k, open = 0, close = 0;

	if (i > 0 && (isalnum((unsigned char)s[i - 1]) || s[i - 1] == '/'))
		return (0);
	if (strncasecmp(p, "https://", 8) == 0)
		n = 8;
	else if (strncasecmp(p, "http://", 7) == 0)
		n = 7;
	else
		return (0);
	k = n;
	while ((unsigned char)p[n] > ' ' && (unsigned char)p[n] < 0x7f &&
	    strchr("\"<>\\^`{|}", p[n]) == NULL)
		n++;
	while (n > k && strchr(".,;:!?'*", p[n - 1]) != NULL)
		n--;
	for (i = 0; i < n; i++) {
		open += p[i] == '(';
		close += p[i] == ')';
	}
	if (n > k && p[n - 1] == ')' && close > open)
		n--;
	if (n == k || p[k] == '/' || p[k] == '.')
		return (0);
	return (n);
}

/* Check the tokens (and URLs next to them) of one string. */
static int
mv_tokens(struct mv *v, const char *s)
{
	const char	*fb;
	size_t		 i, n, fblen;
	int		 which;

	for (i = 0; s[i] != '\0'; i++) {
		if ((n = mv_url_len(s, i)) > 0) {
			if (strncmp(s + i + n, "{{", 2) == 0)
				return (mv_fail(v, NULL, "personalisation "
				    "tokens cannot be used inside a URL"));
			i += n - 1;
			continue;
		}
		if (s[i] != '{' || s[i + 1] != '{')
			continue;
		if ((n = mv_token(s + i, &which, &fb, &fblen)) == 0)
			return (mv_fail(v, NULL, "unknown personalisation "
			    "token at \"%.30s\" (known: {{display_name}}, "
			    "{{display_name|fallback}}, {{user_id}})", s + i));
		i += n - 1;
	}
	return (0);
}

/* Check the tokens of every string below a value. */
static int
mv_tokens_below(struct mv *v, json_t *j)
{
	const char	*key;
	json_t		*c;
	size_t		 i, at;

	if (json_is_string(j))
		return (mv_tokens(v, json_string_value(j)));
	if (json_is_object(j)) {
		json_object_foreach(j, key, c) {
			at = mv_push(v, key);
			if (mv_tokens_below(v, c) != 0)
				return (-1);
			mv_pop(v, at);
		}
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, c) {
			at = mv_push_index(v, i);
			if (mv_tokens_below(v, c) != 0)
				return (-1);
			mv_pop(v, at);
		}
	}
	return (0);
}

/* Validate a messages array. */
int
campaign_messages_validate(json_t *messages, char **path, char **cause)
{
	struct mv	 v;
	json_t		*m;
	size_t		 i, at;

	memset(&v, 0, sizeof v);
	snprintf(v.path, sizeof v.path, "/messages");
	if (!json_is_array(messages) || json_array_size(messages) < 1 ||
	    json_array_size(messages) > CAMPAIGN_MESSAGES_MAX)
		mv_fail(&v, NULL, "messages must be an array of 1 to %d "
		    "message objects", CAMPAIGN_MESSAGES_MAX);
	else {
		json_array_foreach(messages, i, m) {
			at = mv_push_index(&v, i);
			if (mv_message(&v, m) != 0 ||
			    mv_tokens_below(&v, m) != 0)
				break;
			mv_pop(&v, at);
		}
	}
	if (v.cause == NULL)
		return (0);
	*path = v.epath;
	*cause = v.cause;
	return (-1);
}

/* Tell whether a string has a token. */
static int
mv_has_token(json_t *j)
{
	const char	*key, *s, *fb;
	json_t		*c;
	size_t		 i, fblen;
	int		 which;

	if (json_is_string(j)) {
		for (s = json_string_value(j); (s = strstr(s, "{{")) != NULL;
		    s++) {
			if (mv_token(s, &which, &fb, &fblen) > 0)
				return (1);
		}
		return (0);
	}
	json_object_foreach(j, key, c) {
		if (mv_has_token(c))
			return (1);
	}
	json_array_foreach(j, i, c) {
		if (mv_has_token(c))
			return (1);
	}
	return (0);
}

/* Tell whether the messages are personalised. */
int
campaign_messages_personalized(json_t *messages)
{
	return (mv_has_token(messages));
}

/* Add a URL to the collected set once. */
static void
mw_collect(struct mwalk *w, const char *u, size_t n)
{
	json_t	*e;
	size_t	 i;

	json_array_foreach(w->urls, i, e) {
		if (json_string_length(e) == n &&
		    memcmp(json_string_value(e), u, n) == 0)
			return;
	}
	json_array_append_new(w->urls, json_stringn(u, n));
}

/* Map one URL through the walk: new string (the URL itself if unmapped). */
static char *
mw_map(struct mwalk *w, const char *u, size_t n)
{
	char	*url = xstrndup(u, n), *t;

	if (w->urls != NULL) {
		mw_collect(w, u, n);
		return (url);
	}
	if (w->fn == NULL || (t = w->fn(url, w->arg)) == NULL)
		return (url);
	free(url);
	return (t);
}

/* Append n bytes to a growing string. */
static void
mw_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	if (*len + n + 1 > *cap) {
		*cap = (*len + n + 1) * 2;
		*buf = xreallocarray(*buf, *cap, 1);
	}
	memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
}

/*
 * Rewrite one string: URLs (when urls is set) and tokens (when the walk
 * has a recipient).  New string.
 */
static char *
mw_string(struct mwalk *w, const char *s, int urls)
{
	const struct campaign_recipient	*r = w->rcpt;
	char				*buf = NULL, *u;
	const char			*fb, *val;
	size_t				 len = 0, cap = 0, i, n, fblen;
	int				 which;

	mw_append(&buf, &len, &cap, "", 0);
	for (i = 0; s[i] != '\0';) {
		if (urls && (n = mv_url_len(s, i)) > 0) {
			u = mw_map(w, s + i, n);
			mw_append(&buf, &len, &cap, u, strlen(u));
			free(u);
			i += n;
			continue;
		}
		if (r != NULL && s[i] == '{' &&
		    (n = mv_token(s + i, &which, &fb, &fblen)) > 0) {
			val = which == 2 ? r->user_id : r->display_name;
			if (val != NULL && *val != '\0')
				mw_append(&buf, &len, &cap, val, strlen(val));
			else if (fb != NULL)
				mw_append(&buf, &len, &cap, fb, fblen);
			i += n;
			continue;
		}
		mw_append(&buf, &len, &cap, s + i, 1);
		i++;
	}
	return (buf);
}

/* Cut text to the LINE limit at a character boundary. */
static void
mw_clip(char *s)
{
	unsigned char	*p;
	size_t		 n = 0;

	for (p = (unsigned char *)s; *p != '\0'; p++) {
		if ((*p & 0xc0) == 0x80)
			continue;
		n += *p >= 0xf0 ? 2 : 1;
		if (n > CAMPAIGN_TEXT_MAX) {
			*p = '\0';
			return;
		}
	}
}

/* Whole-value URI of an action: mapped when http(s). */
static void
mw_uri(struct mwalk *w, json_t *obj, const char *key)
{
	json_t		*v = json_object_get(obj, key);
	const char	*s;
	char		*t;

	if (!json_is_string(v))
		return;
	s = json_string_value(v);
	if (strncasecmp(s, "https://", 8) != 0 &&
	    strncasecmp(s, "http://", 7) != 0)
		return;
	t = mw_map(w, s, strlen(s));
	json_object_set_new(obj, key, json_string(t));
	free(t);
}

/* Walk a value: actions' URIs, then tokens in every string. */
static void
mw_walk(struct mwalk *w, json_t *j)
{
	const char	*key, *type;
	json_t		*c, *alt;
	size_t		 i;
	char		*t;
	void		*tmp;

	if (json_is_object(j)) {
		type = json_string_value(json_object_get(j, "type"));
		if (type != NULL && strcmp(type, "uri") == 0) {
			mw_uri(w, j, "uri");
			mw_uri(w, j, "linkUri");
			if (json_is_object(alt = json_object_get(j, "altUri")))
				mw_uri(w, alt, "desktop");
		}
		json_object_foreach_safe(j, tmp, key, c) {
			if (json_is_string(c)) {
				if (w->urls != NULL || w->rcpt == NULL)
					continue;
				t = mw_string(w, json_string_value(c), 0);
				json_object_set_new(j, key, json_string(t));
				free(t);
			} else
				mw_walk(w, c);
		}
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, c) {
			if (json_is_string(c)) {
				if (w->urls != NULL || w->rcpt == NULL)
					continue;
				t = mw_string(w, json_string_value(c), 0);
				json_array_set_new(j, i, json_string(t));
				free(t);
			} else
				mw_walk(w, c);
		}
	}
}

/* Rewrite a message: its text's URLs first, then the rest. */
static void
mw_message(struct mwalk *w, json_t *m)
{
	const char	*type = json_string_value(json_object_get(m, "type"));
	json_t		*text = json_object_get(m, "text");
	char		*t;

	if (type != NULL && (strcmp(type, "text") == 0 ||
	    strcmp(type, "textV2") == 0) && json_is_string(text)) {
		t = mw_string(w, json_string_value(text), 1);
		if (w->urls == NULL) {
			mw_clip(t);
			json_object_set_new(m, "text", json_string(t));
		}
		free(t);
		if (w->urls == NULL) {
			/* The text is done: keep the walk off it. */
			text = json_incref(json_object_get(m, "text"));
			json_object_del(m, "text");
			mw_walk(w, m);
			json_object_set_new(m, "text", text);
			return;
		}
	}
	mw_walk(w, m);
}

/* Collect the URLs to track. */
json_t *
campaign_messages_urls(json_t *messages)
{
	struct mwalk	 w;
	json_t		*m;
	size_t		 i;

	memset(&w, 0, sizeof w);
	w.urls = json_array();
	json_array_foreach(messages, i, m)
		mw_message(&w, m);
	return (w.urls);
}

/* Render a recipient's copy. */
json_t *
campaign_messages_render(json_t *messages,
    const struct campaign_recipient *rcpt, campaign_url_fn *fn, void *arg)
{
	struct mwalk	 w;
	json_t		*copy = json_deep_copy(messages), *m;
	size_t		 i;

	memset(&w, 0, sizeof w);
	w.rcpt = rcpt;
	w.fn = fn;
	w.arg = arg;
	json_array_foreach(copy, i, m)
		mw_message(&w, m);
	return (copy);
}
