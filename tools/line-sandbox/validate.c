/* SPDX-License-Identifier: ISC */
/*
 * validate.c -- check message objects the way the Messaging API does and
 * collect the errors in LINE's shape: bean-validation style details
 * ({"message":"May not be empty","property":"messages[0].text"}) under
 * "The request body has N error(s)", or a single binding error ("The
 * property, X, in the request body is invalid (line: -, column: -)") for
 * values of the wrong JSON type.  Text lengths are counted in UTF-16 code
 * units, as LINE counts them.  Pure: no I/O, no state.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/xmalloc.h"

#include "sandbox.h"

#define SB_TYPES	"[text, textV2, sticker, image, video, audio, " \
			"location, imagemap, template, flex, coupon]"

/* Count UTF-16 code units, validating UTF-8 on the way. */
long
sb_utf16_len(const char *s, size_t len)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 i = 0, n, k;
	long			 units = 0;
	uint32_t		 cp;

	while (i < len) {
		if (p[i] < 0x80) {
			units++;
			i++;
			continue;
		}
		if (p[i] >= 0xc2 && p[i] <= 0xdf) {
			n = 1;
			cp = p[i] & 0x1f;
		} else if (p[i] >= 0xe0 && p[i] <= 0xef) {
			n = 2;
			cp = p[i] & 0x0f;
		} else if (p[i] >= 0xf0 && p[i] <= 0xf4) {
			n = 3;
			cp = p[i] & 0x07;
		} else
			return (-1);
		if (len - i < n + 1)
			return (-1);	/* truncated sequence */
		for (k = 1; k <= n; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return (-1);
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		/* Reject overlong forms, surrogates and > U+10FFFF. */
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return (-1);
		units += cp >= 0x10000 ? 2 : 1;
		i += n + 1;
	}
	return (units);
}

/* Start an empty error list. */
void
sb_errors_init(struct sb_errors *e)
{
	e->details = json_array();
	e->invalid = NULL;
}

/* Release an error list. */
void
sb_errors_clear(struct sb_errors *e)
{
	json_decref(e->details);
	e->details = NULL;
	free(e->invalid);
	e->invalid = NULL;
}

/* Add one detail. */
void
sb_errors_add(struct sb_errors *e, const char *property, const char *fmt,
    ...)
{
	va_list	 ap;
	char	*msg;
	json_t	*d;

	va_start(ap, fmt);
	xvasprintf(&msg, fmt, ap);
	va_end(ap);
	d = json_object();
	json_object_set_new(d, "message", json_string(msg));
	json_object_set_new(d, "property", json_string(property));
	json_array_append_new(e->details, d);
	free(msg);
}

/* Record a binding error; the first one wins, as Jackson stops there. */
void
sb_errors_invalid(struct sb_errors *e, const char *property)
{
	if (e->invalid == NULL)
		e->invalid = xstrdup(property);
}

/* Tell whether anything was recorded. */
int
sb_errors_any(const struct sb_errors *e)
{
	return (e->invalid != NULL || json_array_size(e->details) > 0);
}

/* Build LINE's error body. */
json_t *
sb_errors_json(const struct sb_errors *e)
{
	json_t	*o = json_object();
	char	*msg;

	if (e->invalid != NULL) {
		xasprintf(&msg, "The property, %s, in the request body is "
		    "invalid (line: -, column: -)", e->invalid);
		json_object_set_new(o, "message", json_string(msg));
		free(msg);
		return (o);
	}
	xasprintf(&msg, "The request body has %zu error(s)",
	    json_array_size(e->details));
	json_object_set_new(o, "message", json_string(msg));
	json_object_set_new(o, "details", json_deep_copy(e->details));
	free(msg);
	return (o);
}

/* Check a required non-empty string of at most max UTF-16 units. */
static void
validate_string(json_t *obj, const char *key, const char *prefix,
    long max, int required, struct sb_errors *errs)
{
	json_t	*v = json_object_get(obj, key);
	char	 prop[128];
	long	 n;

	snprintf(prop, sizeof prop, "%s.%s", prefix, key);
	if (v == NULL || json_is_null(v)) {
		if (required)
			sb_errors_add(errs, prop, "May not be empty");
		return;
	}
	if (!json_is_string(v)) {
		sb_errors_invalid(errs, prop);
		return;
	}
	n = sb_utf16_len(json_string_value(v), json_string_length(v));
	if (n < 0) {
		sb_errors_invalid(errs, prop);
		return;
	}
	if (n == 0 && required)
		sb_errors_add(errs, prop, "May not be empty");
	else if (max > 0 && n > max)
		sb_errors_add(errs, prop, "Length must be between 0 and %ld",
		    max);
}

/* Check a required HTTPS URL of at most 2,000 characters. */
static void
validate_url(json_t *obj, const char *key, const char *prefix, int required,
    struct sb_errors *errs)
{
	json_t		*v = json_object_get(obj, key);
	char		 prop[128];
	const char	*s;

	snprintf(prop, sizeof prop, "%s.%s", prefix, key);
	if (v == NULL || json_is_null(v)) {
		if (required)
			sb_errors_add(errs, prop, "May not be empty");
		return;
	}
	if (!json_is_string(v)) {
		sb_errors_invalid(errs, prop);
		return;
	}
	s = json_string_value(v);
	if (*s == '\0' && required)
		sb_errors_add(errs, prop, "May not be empty");
	else if (json_string_length(v) > 2000)
		sb_errors_add(errs, prop, "Length must be between 0 and 2000");
	else if (*s != '\0' && strncmp(s, "https://", 8) != 0)
		sb_errors_add(errs, prop, "Must be a valid HTTPS URL");
}

/* Check that a member is present and numeric. */
static void
validate_number(json_t *obj, const char *key, const char *prefix,
    struct sb_errors *errs)
{
	json_t	*v = json_object_get(obj, key);
	char	 prop[128];

	snprintf(prop, sizeof prop, "%s.%s", prefix, key);
	if (v == NULL || json_is_null(v))
		sb_errors_add(errs, prop, "May not be null");
	else if (!json_is_number(v))
		sb_errors_invalid(errs, prop);
}

/* Check a required object member whose "type" is one of types. */
static json_t *
validate_typed(json_t *obj, const char *key, const char *prefix,
    const char *const *types, const char *typelist, struct sb_errors *errs)
{
	json_t		*v = json_object_get(obj, key), *t;
	char		 prop[128];
	const char	*ts;
	size_t		 i;

	snprintf(prop, sizeof prop, "%s.%s", prefix, key);
	if (v == NULL || json_is_null(v)) {
		sb_errors_add(errs, prop, "May not be null");
		return (NULL);
	}
	if (!json_is_object(v)) {
		sb_errors_invalid(errs, prop);
		return (NULL);
	}
	snprintf(prop, sizeof prop, "%s.%s.type", prefix, key);
	t = json_object_get(v, "type");
	if (!json_is_string(t)) {
		sb_errors_add(errs, prop, "May not be null");
		return (NULL);
	}
	ts = json_string_value(t);
	for (i = 0; types[i] != NULL; i++) {
		if (strcmp(ts, types[i]) == 0)
			return (v);
	}
	sb_errors_add(errs, prop, "Must be one of the following values: %s",
	    typelist);
	return (NULL);
}

/* Check quickReply and sender, which any message may carry. */
static void
validate_common(json_t *m, const char *prefix, struct sb_errors *errs)
{
	json_t	*qr, *items, *it, *sender;
	char	 prop[128];
	size_t	 i;

	if ((qr = json_object_get(m, "quickReply")) != NULL &&
	    !json_is_null(qr)) {
		snprintf(prop, sizeof prop, "%s.quickReply", prefix);
		if (!json_is_object(qr))
			sb_errors_invalid(errs, prop);
		else {
			items = json_object_get(qr, "items");
			snprintf(prop, sizeof prop, "%s.quickReply.items",
			    prefix);
			if (!json_is_array(items))
				sb_errors_add(errs, prop, "May not be null");
			else if (json_array_size(items) < 1 ||
			    json_array_size(items) > SB_QUICKREPLY_MAX)
				sb_errors_add(errs, prop,
				    "Size must be between 1 and %d",
				    SB_QUICKREPLY_MAX);
			else {
				json_array_foreach(items, i, it) {
					snprintf(prop, sizeof prop,
					    "%s.quickReply.items[%zu].action",
					    prefix, i);
					if (!json_is_object(it) ||
					    !json_is_object(json_object_get(it,
					    "action")))
						sb_errors_add(errs, prop,
						    "May not be null");
				}
			}
		}
	}
	if ((sender = json_object_get(m, "sender")) != NULL &&
	    !json_is_null(sender)) {
		snprintf(prop, sizeof prop, "%s.sender", prefix);
		if (!json_is_object(sender))
			sb_errors_invalid(errs, prop);
		else {
			validate_string(sender, "name", prop, 20, 0, errs);
			validate_url(sender, "iconUrl", prop, 0, errs);
		}
	}
}

/* Check a flex message's altText and contents size. */
static void
validate_flex(json_t *m, const char *prefix, struct sb_errors *errs)
{
	static const char *const types[] = { "bubble", "carousel", NULL };
	json_t		*c, *bubbles;
	char		 prop[128], *dump;
	size_t		 len, max;

	validate_string(m, "altText", prefix, SB_ALTTEXT_MAX, 1, errs);
	c = validate_typed(m, "contents", prefix, types,
	    "[bubble, carousel]", errs);
	if (c == NULL)
		return;
	snprintf(prop, sizeof prop, "%s.contents", prefix);
	if (strcmp(json_string_value(json_object_get(c, "type")),
	    "carousel") == 0) {
		max = 50 * 1024;
		bubbles = json_object_get(c, "contents");
		snprintf(prop, sizeof prop, "%s.contents.contents", prefix);
		if (!json_is_array(bubbles) || json_array_size(bubbles) < 1 ||
		    json_array_size(bubbles) > 12) {
			sb_errors_add(errs, prop,
			    "Size must be between 1 and 12");
			return;
		}
		snprintf(prop, sizeof prop, "%s.contents", prefix);
	} else
		max = 30 * 1024;
	dump = json_dumps(c, JSON_COMPACT);
	len = dump != NULL ? strlen(dump) : 0;
	free(dump);
	if (len > max)
		sb_errors_add(errs, prop, "Size of the flex contents must not "
		    "exceed %zu bytes", max);
}

/* Check one message object. */
static void
validate_message(json_t *m, size_t idx, struct sb_errors *errs)
{
	static const char *const tmpl[] = { "buttons", "confirm", "carousel",
	    "image_carousel", NULL };
	json_t		*t, *emojis, *subst, *v;
	char		 prefix[64], prop[128];
	const char	*type, *key;
	size_t		 klen;

	snprintf(prefix, sizeof prefix, "messages[%zu]", idx);
	if (!json_is_object(m)) {
		sb_errors_invalid(errs, prefix);
		return;
	}
	snprintf(prop, sizeof prop, "%s.type", prefix);
	t = json_object_get(m, "type");
	if (t == NULL || json_is_null(t)) {
		sb_errors_add(errs, prop, "May not be null");
		return;
	}
	if (!json_is_string(t)) {
		sb_errors_invalid(errs, prop);
		return;
	}
	type = json_string_value(t);
	if (strcmp(type, "text") == 0) {
		validate_string(m, "text", prefix, SB_TEXT_MAX, 1, errs);
		emojis = json_object_get(m, "emojis");
		snprintf(prop, sizeof prop, "%s.emojis", prefix);
		if (emojis != NULL && !json_is_null(emojis)) {
			if (!json_is_array(emojis))
				sb_errors_invalid(errs, prop);
			else if (json_array_size(emojis) > SB_EMOJIS_MAX)
				sb_errors_add(errs, prop,
				    "Size must be between 0 and %d",
				    SB_EMOJIS_MAX);
		}
	} else if (strcmp(type, "textV2") == 0) {
		validate_string(m, "text", prefix, SB_TEXT_MAX, 1, errs);
		subst = json_object_get(m, "substitution");
		snprintf(prop, sizeof prop, "%s.substitution", prefix);
		if (subst != NULL && !json_is_null(subst)) {
			if (!json_is_object(subst))
				sb_errors_invalid(errs, prop);
			else if (json_object_size(subst) > 100)
				sb_errors_add(errs, prop,
				    "Size must be between 0 and 100");
			else {
				json_object_foreach(subst, key, v) {
					klen = strlen(key);
					if (klen < 1 || klen > 20 ||
					    strspn(key, "0123456789"
					    "abcdefghijklmnopqrstuvwxyz"
					    "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") !=
					    klen)
						sb_errors_add(errs, prop,
						    "Invalid substitution key: "
						    "%s", key);
				}
			}
		}
	} else if (strcmp(type, "sticker") == 0) {
		validate_string(m, "packageId", prefix, 0, 1, errs);
		validate_string(m, "stickerId", prefix, 0, 1, errs);
	} else if (strcmp(type, "image") == 0 || strcmp(type, "video") == 0) {
		validate_url(m, "originalContentUrl", prefix, 1, errs);
		validate_url(m, "previewImageUrl", prefix, 1, errs);
	} else if (strcmp(type, "audio") == 0) {
		validate_url(m, "originalContentUrl", prefix, 1, errs);
		validate_number(m, "duration", prefix, errs);
	} else if (strcmp(type, "location") == 0) {
		validate_string(m, "title", prefix, 100, 1, errs);
		validate_string(m, "address", prefix, 100, 1, errs);
		validate_number(m, "latitude", prefix, errs);
		validate_number(m, "longitude", prefix, errs);
	} else if (strcmp(type, "imagemap") == 0) {
		validate_url(m, "baseUrl", prefix, 1, errs);
		validate_string(m, "altText", prefix, SB_ALTTEXT_MAX, 1, errs);
		snprintf(prop, sizeof prop, "%s.baseSize", prefix);
		if (!json_is_object(json_object_get(m, "baseSize")))
			sb_errors_add(errs, prop, "May not be null");
		snprintf(prop, sizeof prop, "%s.actions", prefix);
		if (!json_is_array(json_object_get(m, "actions")))
			sb_errors_add(errs, prop, "May not be null");
	} else if (strcmp(type, "template") == 0) {
		validate_string(m, "altText", prefix, SB_ALTTEXT_MAX, 1, errs);
		(void)validate_typed(m, "template", prefix, tmpl,
		    "[buttons, confirm, carousel, image_carousel]", errs);
	} else if (strcmp(type, "flex") == 0) {
		validate_flex(m, prefix, errs);
	} else if (strcmp(type, "coupon") == 0) {
		validate_string(m, "couponId", prefix, 0, 1, errs);
	} else {
		sb_errors_add(errs, prop,
		    "Must be one of the following values: " SB_TYPES);
		return;
	}
	validate_common(m, prefix, errs);
}

/* Check the messages array of a send request. */
void
validate_messages(json_t *messages, struct sb_errors *errs)
{
	json_t	*m;
	size_t	 i;

	if (messages == NULL || json_is_null(messages)) {
		sb_errors_add(errs, "messages", "May not be null");
		return;
	}
	if (!json_is_array(messages)) {
		sb_errors_invalid(errs, "messages");
		return;
	}
	if (json_array_size(messages) < 1 ||
	    json_array_size(messages) > SB_MAX_MESSAGES) {
		sb_errors_add(errs, "messages", "Size must be between 1 and %d",
		    SB_MAX_MESSAGES);
		return;
	}
	json_array_foreach(messages, i, m)
		validate_message(m, i, errs);
}

/* Tell whether a name matches ^[a-zA-Z0-9_]{1,30}$. */
int
validate_unit_name(const char *s)
{
	size_t	 n = strlen(s);

	return (n >= 1 && n <= 30 && strspn(s, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == n);
}

/* Check notificationDisabled and customAggregationUnits. */
void
validate_send_options(json_t *body, struct sb_errors *errs)
{
	json_t	*v, *u;

	v = json_object_get(body, "notificationDisabled");
	if (v != NULL && !json_is_null(v) && !json_is_boolean(v))
		sb_errors_invalid(errs, "notificationDisabled");
	v = json_object_get(body, "customAggregationUnits");
	if (v == NULL || json_is_null(v))
		return;
	if (!json_is_array(v)) {
		sb_errors_invalid(errs, "customAggregationUnits");
		return;
	}
	if (json_array_size(v) != 1) {
		sb_errors_add(errs, "customAggregationUnits",
		    "Size must be between 1 and 1");
		return;
	}
	u = json_array_get(v, 0);
	if (!json_is_string(u)) {
		sb_errors_invalid(errs, "customAggregationUnits[0]");
		return;
	}
	if (!validate_unit_name(json_string_value(u)))
		sb_errors_add(errs, "customAggregationUnits[0]",
		    "Must match \"^[a-zA-Z0-9_]{1,30}$\"");
}
