/* SPDX-License-Identifier: ISC */
/*
 * test_campaign_messages.c -- campaign messages (messages.c): every LINE
 * limit checked before saving and the JSON pointer of each error, UTF-16
 * counting, personalisation tokens, the URLs tracked and how they are
 * rewritten; schedules (schedule.c); and the classification of LINE's
 * answers (lineapi.c), which decides retries, splits and stops.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/campaign.h"
#include "musubi/lineapi.h"

#define NOW	1795000000	/* 2026-11-18 */

/* Validate a messages document; returns the error path or NULL. */
static char *
vpath(const char *doc)
{
	json_error_t	 e;
	json_t		*m = json_loads(doc, 0, &e);
	char		*path = NULL, *cause = NULL;
	int		 rc;

	if (m == NULL)
		fail_msg("bad test JSON: %s: %s", e.text, doc);
	rc = campaign_messages_validate(m, &path, &cause);
	json_decref(m);
	free(cause);
	if (rc == 0)
		return (NULL);
	assert_non_null(path);
	return (path);
}

/* Assert that doc fails at path. */
static void
fails_at(const char *doc, const char *want)
{
	char	*p = vpath(doc);

	if (p == NULL)
		fail_msg("accepted, expected an error at %s: %s", want, doc);
	assert_string_equal(p, want);
	free(p);
}

/* Assert that doc is valid. */
static void
valid(const char *doc)
{
	char	*p = vpath(doc);

	if (p != NULL)
		fail_msg("refused at %s: %s", p, doc);
}

/* A text message of n copies of unit (a UTF-8 string). */
static char *
text_of(const char *unit, size_t n)
{
	size_t	 ul = strlen(unit), i;
	char	*doc = malloc(n * ul + 64), *p;

	p = doc + sprintf(doc, "[{\"type\":\"text\",\"text\":\"");
	for (i = 0; i < n; i++, p += ul)
		memcpy(p, unit, ul);
	strcpy(p, "\"}]");
	return (doc);
}

static void
test_utf16_counts_surrogate_pairs_twice(void **state)
{
	assert_int_equal(campaign_utf16_len("abc"), 3);
	assert_int_equal(campaign_utf16_len("あいう"), 3);
	assert_int_equal(campaign_utf16_len("\xf0\x9f\x98\x80"), 2);	/* 😀 */
	assert_int_equal(campaign_utf16_len("é😀x"), 4);
	assert_int_equal(campaign_utf16_len(""), 0);
}

static void
test_text_limit_5000_utf16_units(void **state)
{
	char	*d;

	d = text_of("a", 5000);
	valid(d);
	free(d);
	d = text_of("a", 5001);
	fails_at(d, "/messages/0/text");
	free(d);
	d = text_of("あ", 5000);
	valid(d);
	free(d);
	/* 2,500 emoji are 5,000 units; one more is over. */
	d = text_of("\xf0\x9f\x98\x80", 2500);
	valid(d);
	free(d);
	d = text_of("\xf0\x9f\x98\x80", 2501);
	fails_at(d, "/messages/0/text");
	free(d);
}

static void
test_text_required_and_not_empty(void **state)
{
	fails_at("[{\"type\":\"text\"}]", "/messages/0/text");
	fails_at("[{\"type\":\"text\",\"text\":\"\"}]", "/messages/0/text");
	fails_at("[{\"type\":\"text\",\"text\":5}]", "/messages/0/text");
}

static void
test_messages_count_1_to_5(void **state)
{
	fails_at("[]", "/messages");
	fails_at("{}", "/messages");
	valid("[{\"type\":\"text\",\"text\":\"1\"},{\"type\":\"text\","
	    "\"text\":\"2\"},{\"type\":\"text\",\"text\":\"3\"},{\"type\":"
	    "\"text\",\"text\":\"4\"},{\"type\":\"text\",\"text\":\"5\"}]");
	fails_at("[{\"type\":\"text\",\"text\":\"1\"},{\"type\":\"text\","
	    "\"text\":\"2\"},{\"type\":\"text\",\"text\":\"3\"},{\"type\":"
	    "\"text\",\"text\":\"4\"},{\"type\":\"text\",\"text\":\"5\"},"
	    "{\"type\":\"text\",\"text\":\"6\"}]", "/messages");
}

static void
test_path_names_the_right_message(void **state)
{
	fails_at("[{\"type\":\"text\",\"text\":\"ok\"},{\"type\":\"nope\"}]",
	    "/messages/1/type");
	fails_at("[{\"type\":\"text\",\"text\":\"ok\"},{\"type\":\"sticker\","
	    "\"packageId\":\"1\"}]", "/messages/1/stickerId");
	fails_at("[\"text\"]", "/messages/0");
}

static void
test_alttext_limit_400(void **state)
{
	char	 doc[1200], alt[450];

	memset(alt, 'x', 400);
	alt[400] = '\0';
	snprintf(doc, sizeof doc, "[{\"type\":\"flex\",\"altText\":\"%s\","
	    "\"contents\":{\"type\":\"bubble\"}}]", alt);
	valid(doc);
	alt[400] = 'x';
	alt[401] = '\0';
	snprintf(doc, sizeof doc, "[{\"type\":\"flex\",\"altText\":\"%s\","
	    "\"contents\":{\"type\":\"bubble\"}}]", alt);
	fails_at(doc, "/messages/0/altText");
	fails_at("[{\"type\":\"template\",\"template\":{\"type\":\"confirm\","
	    "\"text\":\"?\",\"actions\":[]}}]", "/messages/0/altText");
}

static void
test_flex_sizes_and_bubbles(void **state)
{
	char	*big, *doc;
	size_t	 n;

	fails_at("[{\"type\":\"flex\",\"altText\":\"a\",\"contents\":"
	    "{\"type\":\"box\"}}]", "/messages/0/contents/type");
	fails_at("[{\"type\":\"flex\",\"altText\":\"a\",\"contents\":"
	    "{\"type\":\"carousel\",\"contents\":[]}}]",
	    "/messages/0/contents/contents");
	/* 13 bubbles */
	fails_at("[{\"type\":\"flex\",\"altText\":\"a\",\"contents\":"
	    "{\"type\":\"carousel\",\"contents\":[{},{},{},{},{},{},{},{},{},"
	    "{},{},{},{}]}}]", "/messages/0/contents/contents");
	/* a bubble over 30 KB of JSON */
	n = 31 * 1024;
	big = malloc(n + 1);
	memset(big, 'x', n);
	big[n] = '\0';
	doc = malloc(n + 200);
	sprintf(doc, "[{\"type\":\"flex\",\"altText\":\"a\",\"contents\":"
	    "{\"type\":\"bubble\",\"body\":{\"type\":\"text\",\"text\":\"%s\"}}}]",
	    big);
	fails_at(doc, "/messages/0/contents");
	/* the same is fine inside a carousel (50 KB) */
	sprintf(doc, "[{\"type\":\"flex\",\"altText\":\"a\",\"contents\":"
	    "{\"type\":\"carousel\",\"contents\":[{\"type\":\"bubble\",\"body\":"
	    "{\"type\":\"text\",\"text\":\"%s\"}}]}}]", big);
	valid(doc);
	free(big);
	free(doc);
}

static void
test_quick_reply_at_most_13(void **state)
{
	char	 doc[4096], *p;
	int	 i;

	for (int n = 13; n <= 14; n++) {
		p = doc + sprintf(doc, "[{\"type\":\"text\",\"text\":\"q\","
		    "\"quickReply\":{\"items\":[");
		for (i = 0; i < n; i++)
			p += sprintf(p, "%s{\"type\":\"action\",\"action\":"
			    "{\"type\":\"message\",\"label\":\"l\",\"text\":"
			    "\"t\"}}", i ? "," : "");
		strcpy(p, "]}}]");
		if (n == 13)
			valid(doc);
		else
			fails_at(doc, "/messages/0/quickReply/items");
	}
	fails_at("[{\"type\":\"text\",\"text\":\"q\",\"quickReply\":{\"items\":"
	    "[{\"type\":\"action\",\"imageUrl\":\"http://x.example/a.png\","
	    "\"action\":{\"type\":\"message\",\"text\":\"t\"}}]}}]",
	    "/messages/0/quickReply/items/0/imageUrl");
	fails_at("[{\"type\":\"text\",\"text\":\"q\",\"quickReply\":{\"items\":"
	    "[{\"type\":\"action\",\"action\":{\"type\":\"uri\",\"uri\":"
	    "\"http://x.example/\"}}]}}]",
	    "/messages/0/quickReply/items/0/action/uri");
}

static void
test_https_urls_required(void **state)
{
	fails_at("[{\"type\":\"image\",\"originalContentUrl\":"
	    "\"http://x.example/a.jpg\",\"previewImageUrl\":"
	    "\"https://x.example/p.jpg\"}]", "/messages/0/originalContentUrl");
	valid("[{\"type\":\"image\",\"originalContentUrl\":"
	    "\"https://x.example/a.jpg\",\"previewImageUrl\":"
	    "\"https://x.example/p.jpg\"}]");
	fails_at("[{\"type\":\"template\",\"altText\":\"a\",\"template\":"
	    "{\"type\":\"buttons\",\"text\":\"t\",\"actions\":[{\"type\":"
	    "\"uri\",\"label\":\"go\",\"uri\":\"ftp://x.example/\"}]}}]",
	    "/messages/0/template/actions/0/uri");
	fails_at("[{\"type\":\"flex\",\"altText\":\"a\",\"contents\":"
	    "{\"type\":\"bubble\",\"footer\":{\"type\":\"box\",\"contents\":"
	    "[{\"type\":\"button\",\"action\":{\"type\":\"uri\",\"uri\":"
	    "\"javascript:alert(1)\"}}]}}}]",
	    "/messages/0/contents/footer/contents/0/action/uri");
	valid("[{\"type\":\"template\",\"altText\":\"a\",\"template\":"
	    "{\"type\":\"buttons\",\"text\":\"t\",\"actions\":[{\"type\":"
	    "\"uri\",\"label\":\"call\",\"uri\":\"tel:0312345678\"}]}}]");
	fails_at("[{\"type\":\"text\",\"text\":\"x\",\"sender\":{\"name\":"
	    "\"ok\",\"iconUrl\":\"http://x.example/i.png\"}}]",
	    "/messages/0/sender/iconUrl");
	fails_at("[{\"type\":\"text\",\"text\":\"x\",\"sender\":{\"name\":"
	    "\"abcdefghijklmnopqrstu\"}}]", "/messages/0/sender/name");
}

static void
test_other_types(void **state)
{
	valid("[{\"type\":\"sticker\",\"packageId\":\"446\",\"stickerId\":"
	    "\"1988\"}]");
	fails_at("[{\"type\":\"location\",\"title\":\"t\",\"address\":\"a\","
	    "\"latitude\":\"35\",\"longitude\":139}]", "/messages/0/latitude");
	fails_at("[{\"type\":\"audio\",\"originalContentUrl\":"
	    "\"https://x.example/a.m4a\"}]", "/messages/0/duration");
	fails_at("[{\"type\":\"text\",\"text\":\"x\",\"emojis\":[1,2,3,4,5,6,"
	    "7,8,9,10,11,12,13,14,15,16,17,18,19,20,21]}]",
	    "/messages/0/emojis");
	fails_at("[{\"type\":\"textV2\",\"text\":\"{a}\",\"substitution\":"
	    "{\"bad-key\":{}}}]", "/messages/0/substitution");
}

static void
test_tokens_known_and_unknown(void **state)
{
	json_t	*m;

	valid("[{\"type\":\"text\",\"text\":\"Hi {{display_name}}\"}]");
	valid("[{\"type\":\"text\",\"text\":\"Hi {{display_name|you}}\"}]");
	valid("[{\"type\":\"text\",\"text\":\"id {{user_id}}\"}]");
	fails_at("[{\"type\":\"text\",\"text\":\"Hi {{name}}\"}]",
	    "/messages/0/text");
	fails_at("[{\"type\":\"flex\",\"altText\":\"{{nick}}\",\"contents\":"
	    "{\"type\":\"bubble\"}}]", "/messages/0/altText");
	fails_at("[{\"type\":\"text\",\"text\":\"https://x.example/?u="
	    "{{user_id}}\"}]", "/messages/0/text");
	m = json_loads("[{\"type\":\"text\",\"text\":\"Hi {{display_name}}\"}]",
	    0, NULL);
	assert_true(campaign_messages_personalized(m));
	json_decref(m);
	m = json_loads("[{\"type\":\"text\",\"text\":\"Hi {{ friend }}\"}]", 0,
	    NULL);
	assert_false(campaign_messages_personalized(m));
	json_decref(m);
}

/* Rewrite URLs as "T(<url>)". */
static char *
tag_url(const char *url, void *arg)
{
	char	*s;

	(*(int *)arg)++;
	if (asprintf(&s, "T(%s)", url) < 0)
		return (NULL);
	return (s);
}

static void
test_render_tokens_and_fallback(void **state)
{
	struct campaign_recipient	 r = { 7, "U0123", "Taro" };
	json_t				*m, *out;
	int				 n = 0;

	m = json_loads("[{\"type\":\"text\",\"text\":\"Hi {{display_name|"
	    "you}} ({{user_id}})\"},{\"type\":\"flex\",\"altText\":"
	    "\"For {{display_name}}\",\"contents\":{\"type\":\"bubble\"}}]", 0,
	    NULL);
	out = campaign_messages_render(m, &r, tag_url, &n);
	assert_string_equal(json_string_value(json_object_get(
	    json_array_get(out, 0), "text")), "Hi Taro (U0123)");
	assert_string_equal(json_string_value(json_object_get(
	    json_array_get(out, 1), "altText")), "For Taro");
	json_decref(out);
	r.display_name = NULL;
	out = campaign_messages_render(m, &r, tag_url, &n);
	assert_string_equal(json_string_value(json_object_get(
	    json_array_get(out, 0), "text")), "Hi you (U0123)");
	json_decref(out);
	/* the template itself is untouched */
	assert_string_equal(json_string_value(json_object_get(
	    json_array_get(m, 0), "text")), "Hi {{display_name|you}} "
	    "({{user_id}})");
	json_decref(m);
	assert_int_equal(n, 0);
}

static void
test_render_rewrites_text_urls(void **state)
{
	json_t	*m, *out;
	int	 n = 0;

	m = json_loads("[{\"type\":\"text\",\"text\":\"Sale: "
	    "https://shop.example/a?x=1&y=2. Also (http://b.example/p) and "
	    "「https://c.example/日本」 end\"}]", 0, NULL);
	out = campaign_messages_render(m, NULL, tag_url, &n);
	assert_string_equal(json_string_value(json_object_get(
	    json_array_get(out, 0), "text")), "Sale: "
	    "T(https://shop.example/a?x=1&y=2). Also (T(http://b.example/p)) "
	    "and 「T(https://c.example/)日本」 end");
	assert_int_equal(n, 3);
	json_decref(out);
	json_decref(m);
}

static void
test_render_rewrites_action_uris_not_media(void **state)
{
	json_t	*m, *out, *urls;
	char	*s;
	int	 n = 0;

	m = json_loads("[{\"type\":\"image\",\"originalContentUrl\":"
	    "\"https://img.example/a.jpg\",\"previewImageUrl\":"
	    "\"https://img.example/p.jpg\",\"quickReply\":{\"items\":[{\"type\":"
	    "\"action\",\"action\":{\"type\":\"uri\",\"label\":\"l\",\"uri\":"
	    "\"https://q.example/\"}}]}},{\"type\":\"template\",\"altText\":"
	    "\"a\",\"template\":{\"type\":\"buttons\",\"text\":\"see "
	    "https://not-a-text-message.example/\",\"actions\":[{\"type\":"
	    "\"uri\",\"uri\":\"https://t.example/\",\"altUri\":{\"desktop\":"
	    "\"https://d.example/\"}},{\"type\":\"uri\",\"uri\":"
	    "\"tel:0312345678\"}]}}]", 0, NULL);
	urls = campaign_messages_urls(m);
	s = json_dumps(urls, JSON_COMPACT);
	assert_string_equal(s, "[\"https://q.example/\",\"https://t.example/\","
	    "\"https://d.example/\"]");
	free(s);
	json_decref(urls);
	out = campaign_messages_render(m, NULL, tag_url, &n);
	s = json_dumps(out, JSON_COMPACT);
	assert_non_null(strstr(s, "\"uri\":\"T(https://q.example/)\""));
	assert_non_null(strstr(s, "\"uri\":\"T(https://t.example/)\""));
	assert_non_null(strstr(s, "\"desktop\":\"T(https://d.example/)\""));
	assert_non_null(strstr(s, "\"originalContentUrl\":"
	    "\"https://img.example/a.jpg\""));
	assert_non_null(strstr(s, "\"tel:0312345678\""));
	assert_non_null(strstr(s, "see https://not-a-text-message.example/"));
	free(s);
	assert_int_equal(n, 3);
	json_decref(out);
	json_decref(m);
}

static void
test_urls_are_collected_once(void **state)
{
	json_t	*m, *urls;

	m = json_loads("[{\"type\":\"text\",\"text\":\"https://a.example/ "
	    "https://a.example/ https://b.example/x\"},{\"type\":\"text\","
	    "\"text\":\"again https://a.example/\"}]", 0, NULL);
	urls = campaign_messages_urls(m);
	assert_int_equal(json_array_size(urls), 2);
	json_decref(urls);
	json_decref(m);
}

/* Validate a schedule document at NOW; returns the error path or NULL. */
static char *
spath(const char *doc)
{
	json_t	*s = json_loads(doc, 0, NULL);
	char	*path = NULL, *cause = NULL;
	int	 rc;

	assert_non_null(s);
	rc = campaign_schedule_validate(s, NOW, &path, &cause);
	json_decref(s);
	free(cause);
	return (rc == 0 ? NULL : path);
}

static void
test_schedule_shapes(void **state)
{
	char	*p;

	assert_null(spath("{\"type\":\"now\"}"));
	assert_null(spath("{\"type\":\"at\",\"at\":\"2027-01-01T09:00:00+09:00\"}"));
	assert_null(spath("{\"type\":\"daily\",\"time\":\"09:30\"}"));
	assert_null(spath("{\"type\":\"weekly\",\"days\":[\"mon\",\"fri\"],"
	    "\"time\":\"21:00\",\"until\":\"2027-03-31T00:00:00Z\"}"));
#define BAD(doc, want) do {						\
	p = spath(doc);							\
	assert_non_null(p);						\
	assert_string_equal(p, want);					\
	free(p);							\
} while (0)
	BAD("{\"type\":\"at\",\"at\":\"2020-01-01T09:00:00+09:00\"}",
	    "/schedule/at");
	BAD("{\"type\":\"at\",\"at\":\"2027-01-01T09:00:00\"}", "/schedule/at");
	BAD("{\"type\":\"at\",\"at\":\"2027-02-30T09:00:00Z\"}", "/schedule/at");
	BAD("{\"type\":\"at\"}", "/schedule/at");
	BAD("{\"type\":\"hourly\"}", "/schedule/type");
	BAD("{\"type\":\"daily\",\"time\":\"24:00\"}", "/schedule/time");
	BAD("{\"type\":\"weekly\",\"time\":\"09:00\",\"days\":[\"mon\","
	    "\"funday\"]}", "/schedule/days/1");
	BAD("{\"type\":\"weekly\",\"time\":\"09:00\",\"days\":[]}",
	    "/schedule/days");
	BAD("{\"type\":\"daily\",\"time\":\"09:00\",\"until\":"
	    "\"2001-01-01T00:00:00Z\"}", "/schedule/until");
#undef BAD
}

static void
test_parse_time_zones(void **state)
{
	time_t	 a, b;

	assert_int_equal(campaign_parse_time("2026-11-22T09:00:00+09:00", &a),
	    0);
	assert_int_equal(campaign_parse_time("2026-11-22T00:00:00Z", &b), 0);
	assert_int_equal(a, b);
	assert_int_equal(campaign_parse_time("2026-11-22T00:00:00.250Z", &b),
	    0);
	assert_int_equal(a, b);
	assert_int_not_equal(campaign_parse_time("2026-11-22", &a), 0);
	assert_int_not_equal(campaign_parse_time("2026-11-22T00:00:00+0900",
	    &a), 0);
}

/* Classify a status and body. */
static void
classify(long status, const char *body, struct lineapi_result *r)
{
	memset(r, 0, sizeof *r);
	lineapi_classify(status, NULL, body, body ? strlen(body) : 0, r);
}

static void
test_lineapi_classify(void **state)
{
	struct lineapi_result	 r;

	classify(200, "{}", &r);
	assert_int_equal(r.outcome, LINEAPI_SENT);
	classify(409, "{\"message\":\"The retry key is already accepted\"}",
	    &r);
	assert_int_equal(r.outcome, LINEAPI_ACCEPTED);
	free(r.error);
	classify(500, "{\"message\":\"Internal server error\"}", &r);
	assert_int_equal(r.outcome, LINEAPI_RETRY);
	free(r.error);
	classify(429, "{\"message\":\"Too many requests\"}", &r);
	assert_int_equal(r.outcome, LINEAPI_RATELIMIT);
	free(r.error);
	classify(429, "{\"message\":\"You have reached your monthly limit.\"}",
	    &r);
	assert_int_equal(r.outcome, LINEAPI_QUOTA);
	free(r.error);
	classify(401, "{\"message\":\"Authentication failed\"}", &r);
	assert_int_equal(r.outcome, LINEAPI_AUTH);
	free(r.error);
	classify(403, "{\"message\":\"Access to this API is not available\"}",
	    &r);
	assert_int_equal(r.outcome, LINEAPI_AUTH);
	free(r.error);
	classify(400, "{\"message\":\"The property, to[17], in the request "
	    "body is invalid (line: -, column: -)\"}", &r);
	assert_int_equal(r.outcome, LINEAPI_BAD_RECIPIENT);
	assert_int_equal(r.bad_index, 17);
	free(r.error);
	classify(400, "{\"message\":\"The property, to, in the request "
	    "body is invalid (line: -, column: -)\"}", &r);
	assert_int_equal(r.outcome, LINEAPI_BAD_RECIPIENT);
	assert_int_equal(r.bad_index, -2);
	free(r.error);
	classify(400, "{\"message\":\"The request body has 1 error(s)\","
	    "\"details\":[{\"message\":\"May not be empty\",\"property\":"
	    "\"messages[0].text\"}]}", &r);
	assert_int_equal(r.outcome, LINEAPI_BAD_MESSAGES);
	assert_non_null(strstr(r.error, "messages[0].text"));
	free(r.error);
	classify(400, "{\"message\":\"The request body has 1 error(s)\","
	    "\"details\":[{\"message\":\"invalid\",\"property\":\"to[3]\"}]}",
	    &r);
	assert_int_equal(r.outcome, LINEAPI_BAD_RECIPIENT);
	assert_int_equal(r.bad_index, 3);
	free(r.error);
	classify(400, "{\"message\":\"Failed to send messages\"}", &r);
	assert_int_equal(r.outcome, LINEAPI_BAD_REQUEST);
	free(r.error);
	classify(413, "{\"message\":\"Request Entity Too Large\"}", &r);
	assert_int_equal(r.outcome, LINEAPI_FAILED);
	free(r.error);
	memset(&r, 0, sizeof r);
	lineapi_classify(0, "Timeout was reached", NULL, 0, &r);
	assert_int_equal(r.outcome, LINEAPI_RETRY);
	free(r.error);
}

static void
test_lineapi_retry_after(void **state)
{
	assert_int_equal(lineapi_retry_after("3"), 3000);
	assert_int_equal(lineapi_retry_after(" 0 "), 0);
	assert_int_equal(lineapi_retry_after("soon"), -1);
	assert_int_equal(lineapi_retry_after(NULL), -1);
	assert_int_equal(lineapi_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
	    0);
}

static void
test_backoff_grows_with_jitter(void **state)
{
	long	 a, b;
	int	 i;

	for (i = 0; i < 50; i++) {
		a = sender_backoff_ms(1);
		assert_true(a >= 125 && a <= 375);
		b = sender_backoff_ms(4);
		assert_true(b >= 1000 && b <= 3000);
		assert_true(sender_backoff_ms(40) <= 5 * 60 * 1000 * 3 / 2);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utf16_counts_surrogate_pairs_twice),
		cmocka_unit_test(test_text_limit_5000_utf16_units),
		cmocka_unit_test(test_text_required_and_not_empty),
		cmocka_unit_test(test_messages_count_1_to_5),
		cmocka_unit_test(test_path_names_the_right_message),
		cmocka_unit_test(test_alttext_limit_400),
		cmocka_unit_test(test_flex_sizes_and_bubbles),
		cmocka_unit_test(test_quick_reply_at_most_13),
		cmocka_unit_test(test_https_urls_required),
		cmocka_unit_test(test_other_types),
		cmocka_unit_test(test_tokens_known_and_unknown),
		cmocka_unit_test(test_render_tokens_and_fallback),
		cmocka_unit_test(test_render_rewrites_text_urls),
		cmocka_unit_test(test_render_rewrites_action_uris_not_media),
		cmocka_unit_test(test_urls_are_collected_once),
		cmocka_unit_test(test_schedule_shapes),
		cmocka_unit_test(test_parse_time_zones),
		cmocka_unit_test(test_lineapi_classify),
		cmocka_unit_test(test_lineapi_retry_after),
		cmocka_unit_test(test_backoff_grows_with_jitter),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
