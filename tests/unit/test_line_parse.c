/* SPDX-License-Identifier: ISC */
/*
 * test_line_parse.c -- line_parse() and line_is_user_id(): the recorded
 * sample deliveries in webhooks/line/ parse cleanly, event ids come from
 * webhookEventId or a key-order-independent content hash, odd shapes turn
 * into records with the documented problem, NUL becomes U+FFFD, and the
 * redelivery flag and timestamp range are read as documented in line.h.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "musubi/line.h"

#define SAMPLES	MUSUBI_SOURCE_DIR "/webhooks/line"
#define UID	"U4af4980629a1b2c3d4e5f60718293a4b"

/* Parse a NUL-terminated body, which must succeed. */
static void
parse_ok(const char *body, struct line_delivery *d)
{
	char	*cause = NULL;

	if (line_parse(body, strlen(body), d, &cause) != 0)
		fail_msg("line_parse failed: %s", cause);
	assert_null(cause);
}

/* Parse a delivery of one event and return its problem (or NULL). */
static char *
one_problem(const char *event)
{
	struct line_delivery	 d;
	char			*body, *problem;

	if (asprintf(&body, "{\"destination\":\"%s\",\"events\":[%s]}", UID,
	    event) < 0)
		fail();
	parse_ok(body, &d);
	free(body);
	assert_int_equal(d.nevents, 1);
	problem = d.events[0].problem != NULL ?
	    strdup(d.events[0].problem) : NULL;
	line_delivery_free(&d);
	return (problem);
}

/* Assert one event parses with the given problem (NULL for none). */
static void
assert_problem(const char *event, const char *want)
{
	char	*got = one_problem(event);

	if (want == NULL && got != NULL)
		fail_msg("%s: unexpected problem \"%s\"", event, got);
	if (want != NULL && (got == NULL || strcmp(got, want) != 0))
		fail_msg("%s: problem \"%s\", want \"%s\"", event,
		    got != NULL ? got : "(none)", want);
	free(got);
}

/* Read a whole file into a new buffer. */
static char *
slurp(const char *path, size_t *len)
{
	FILE	*f = fopen(path, "rb");
	char	*buf;
	long	 n;

	if (f == NULL)
		fail_msg("cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return (buf);
}

/* Every recorded sample parses, with no problem and the right fields. */
static void
test_line_parse_samples_have_no_problem(void **state)
{
	DIR			*dir = opendir(SAMPLES);
	struct dirent		*de;
	struct line_delivery	 d;
	json_t			*root, *ev;
	char			 path[1024], *body, *cause = NULL;
	size_t			 len, i, files = 0, singles = 0, all = 0;

	assert_non_null(dir);
	while ((de = readdir(dir)) != NULL) {
		len = strlen(de->d_name);
		if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0)
			continue;
		snprintf(path, sizeof path, "%s/%s", SAMPLES, de->d_name);
		body = slurp(path, &len);
		if (line_parse(body, len, &d, &cause) != 0)
			fail_msg("%s: %s", de->d_name, cause);
		root = json_loads(body, 0, NULL);
		assert_non_null(root);
		assert_string_equal(d.destination, json_string_value(
		    json_object_get(root, "destination")));
		assert_int_equal(d.nevents, json_array_size(json_object_get(
		    root, "events")));
		for (i = 0; i < d.nevents; i++) {
			ev = json_array_get(json_object_get(root, "events"), i);
			if (d.events[i].problem != NULL)
				fail_msg("%s: event %zu: %s", de->d_name, i,
				    d.events[i].problem);
			assert_string_equal(d.events[i].event_id,
			    json_string_value(json_object_get(ev,
			    "webhookEventId")));
			assert_int_equal(strlen(d.events[i].event_id), 26);
			assert_string_equal(d.events[i].type,
			    json_string_value(json_object_get(ev, "type")));
			assert_int_equal(d.events[i].ts_ms, json_integer_value(
			    json_object_get(ev, "timestamp")));
			assert_non_null(d.events[i].mode);
			assert_false(d.events[i].redelivery);
			assert_true(json_equal(d.events[i].payload, ev));
			if (d.events[i].user_id != NULL)
				assert_true(line_is_user_id(
				    d.events[i].user_id));
		}
		if (strcmp(de->d_name, "all-events.json") == 0)
			all = d.nevents;
		else if (strcmp(de->d_name, "verify.json") == 0)
			assert_int_equal(d.nevents, 0);
		else {
			assert_int_equal(d.nevents, 1);
			singles++;
		}
		files++;
		json_decref(root);
		line_delivery_free(&d);
		free(body);
	}
	closedir(dir);
	assert_true(files >= 30);
	assert_int_equal(all, singles);
}

/* webhookEventId is the event id when it is a usable string. */
static void
test_line_parse_event_id_is_webhook_event_id(void **state)
{
	struct line_delivery	 d;

	parse_ok("{\"events\":[{\"type\":\"follow\",\"timestamp\":1,"
	    "\"webhookEventId\":\"01FZ74A0TDDPYRVKNK77XKC3ZR\","
	    "\"source\":{\"type\":\"user\",\"userId\":\"" UID "\"}}]}", &d);
	assert_string_equal(d.events[0].event_id,
	    "01FZ74A0TDDPYRVKNK77XKC3ZR");
	assert_string_equal(d.events[0].user_id, UID);
	assert_null(d.destination);
	line_delivery_free(&d);
}

/* Without a usable webhookEventId the id hashes the content. */
static void
test_line_parse_event_id_hash_is_stable(void **state)
{
	struct line_delivery	 a, b, c, e;
	char			 id129[200];

	parse_ok("{\"events\":[{\"type\":\"message\",\"timestamp\":5,"
	    "\"message\":{\"id\":\"1\",\"text\":\"x\"}}]}", &a);
	parse_ok("{ \"events\" : [ { \"message\" : { \"text\" : \"x\", "
	    "\"id\" : \"1\" } , \"timestamp\" : 5 , \"type\" : \"message\" "
	    "} ] }", &b);
	parse_ok("{\"events\":[{\"type\":\"message\",\"timestamp\":5,"
	    "\"message\":{\"id\":\"1\",\"text\":\"y\"}}]}", &c);
	assert_int_equal(strlen(a.events[0].event_id), 2 + 64);
	assert_memory_equal(a.events[0].event_id, "h:", 2);
	assert_string_equal(a.events[0].event_id, b.events[0].event_id);
	assert_string_not_equal(a.events[0].event_id, c.events[0].event_id);
	line_delivery_free(&a);
	line_delivery_free(&b);
	line_delivery_free(&c);

	/* Empty, non-string or over-long ids fall back to the hash. */
	parse_ok("{\"events\":[{\"type\":\"x\",\"webhookEventId\":\"\"},"
	    "{\"type\":\"x\",\"webhookEventId\":7}]}", &e);
	assert_memory_equal(e.events[0].event_id, "h:", 2);
	assert_memory_equal(e.events[1].event_id, "h:", 2);
	line_delivery_free(&e);
	memset(id129, 'A', 129);
	id129[129] = '\0';
	{
		char	*body;

		if (asprintf(&body, "{\"events\":[{\"type\":\"x\","
		    "\"webhookEventId\":\"%s\"},{\"type\":\"x\","
		    "\"webhookEventId\":\"%.128s\"}]}", id129, id129) < 0)
			fail();
		parse_ok(body, &e);
		free(body);
	}
	assert_memory_equal(e.events[0].event_id, "h:", 2);
	assert_int_equal(strlen(e.events[1].event_id), LINE_EVENT_ID_MAX);
	line_delivery_free(&e);
}

/* Deliveries of odd shape become one marked record holding the body. */
static void
test_line_parse_odd_deliveries(void **state)
{
	static const struct {
		const char	*body;
		const char	*problem;
	} cases[] = {
		{ "{\"hello\":\"world\"}", "delivery has no events array" },
		{ "{\"events\":{\"type\":\"follow\"}}",
		    "delivery has no events array" },
		{ "{\"events\":null}", "delivery has no events array" },
		{ "[1,2,3]", "delivery is not a JSON object" },
		{ "42", "delivery is not a JSON object" },
		{ "\"events\"", "delivery is not a JSON object" },
		{ "null", "delivery is not a JSON object" },
	};
	struct line_delivery	 d;
	json_t			*want;
	size_t			 i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		parse_ok(cases[i].body, &d);
		assert_int_equal(d.nevents, 1);
		assert_string_equal(d.events[0].problem, cases[i].problem);
		assert_string_equal(d.events[0].type, "");
		assert_int_equal(d.events[0].ts_ms, -1);
		assert_memory_equal(d.events[0].event_id, "h:", 2);
		want = json_loads(cases[i].body, JSON_DECODE_ANY, NULL);
		assert_true(json_equal(d.events[0].payload, want));
		json_decref(want);
		line_delivery_free(&d);
	}
	parse_ok("{\"destination\":\"" UID "\",\"events\":[]}", &d);
	assert_int_equal(d.nevents, 0);
	assert_string_equal(d.destination, UID);
	line_delivery_free(&d);
}

/* Odd events become records with the documented problem. */
static void
test_line_parse_odd_events(void **state)
{
	assert_problem("42", "event is not a JSON object");
	assert_problem("\"follow\"", "event is not a JSON object");
	assert_problem("[]", "event is not a JSON object");
	assert_problem("null", "event is not a JSON object");
	assert_problem("{\"timestamp\":1}", "event has no type");
	assert_problem("{\"type\":5,\"timestamp\":1}", "event has no type");
	assert_problem("{\"type\":\"\",\"timestamp\":1}", "event has no type");
	assert_problem("{\"type\":\"message\"}",
	    "event has no valid timestamp");
	assert_problem("{\"type\":\"message\",\"timestamp\":null}",
	    "event has no valid timestamp");
	assert_problem("{\"type\":\"message\",\"source\":{\"type\":\"user\","
	    "\"userId\":\"Uxyz\"},\"timestamp\":1}",
	    "source.userId is not a LINE user id");
	assert_problem("{\"type\":\"follow\",\"timestamp\":1}",
	    "follow/unfollow without source.userId");
	assert_problem("{\"type\":\"unfollow\",\"timestamp\":1,\"source\":"
	    "{\"type\":\"user\"}}", "follow/unfollow without source.userId");
	assert_problem("{\"type\":\"follow\",\"timestamp\":1,\"source\":"
	    "{\"type\":\"user\",\"userId\":42}}",
	    "follow/unfollow without source.userId");
	/* Fine: unknown types, group events without a user, no source. */
	assert_problem("{\"type\":\"greatNewFeature\",\"timestamp\":1}", NULL);
	assert_problem("{\"type\":\"join\",\"timestamp\":1,\"source\":"
	    "{\"type\":\"group\",\"groupId\":\"C1\"}}", NULL);
	assert_problem("{\"type\":\"accountLink\",\"timestamp\":1,\"link\":"
	    "{\"result\":\"failed\",\"nonce\":\"n\"}}", NULL);
}

/* The type, mode and userId fields are read and bounded. */
static void
test_line_parse_fields(void **state)
{
	struct line_delivery	 d;
	char			 body[512], longtype[101];

	memset(longtype, 'a', 100);
	longtype[100] = '\0';
	snprintf(body, sizeof body, "{\"events\":[{\"type\":\"%s\","
	    "\"timestamp\":1,\"mode\":\"standby\"},{\"type\":\"message\","
	    "\"timestamp\":2,\"mode\":7,\"source\":{\"type\":\"group\","
	    "\"groupId\":\"C1\",\"userId\":\"" UID "\"}}]}", longtype);
	parse_ok(body, &d);
	assert_int_equal(d.nevents, 2);
	assert_int_equal(strlen(d.events[0].type), 64);
	assert_string_equal(d.events[0].mode, "standby");
	assert_null(d.events[0].user_id);
	assert_null(d.events[1].mode);
	assert_string_equal(d.events[1].user_id, UID);
	assert_null(d.events[1].problem);
	line_delivery_free(&d);
}

/* NUL inside any string value becomes U+FFFD. */
static void
test_line_parse_nul_becomes_replacement(void **state)
{
	struct line_delivery	 d;
	const json_t		*p;
	const char		*s;

	parse_ok("{\"events\":[{\"type\":\"mess\\u0000age\",\"timestamp\":1,"
	    "\"message\":{\"text\":\"a\\u0000b\\u0000\",\"list\":"
	    "[\"\\u0000\"]},\"source\":{\"type\":\"user\",\"userId\":\""
	    "U4af4980629a1b2c3d4e5f60718293a4\\u0000\"}}]}", &d);
	p = d.events[0].payload;
	s = json_string_value(json_object_get(json_object_get(p, "message"),
	    "text"));
	assert_string_equal(s, "a\xef\xbf\xbd" "b\xef\xbf\xbd");
	assert_int_equal(json_string_length(json_object_get(json_object_get(
	    p, "message"), "text")), strlen(s));
	assert_string_equal(json_string_value(json_array_get(json_object_get(
	    json_object_get(p, "message"), "list"), 0)), "\xef\xbf\xbd");
	assert_string_equal(d.events[0].type, "mess\xef\xbf\xbd" "age");
	assert_string_equal(d.events[0].problem,
	    "source.userId is not a LINE user id");
	line_delivery_free(&d);
}

/* deliveryContext.isRedelivery is read only when it is true. */
static void
test_line_parse_redelivery_flag(void **state)
{
	struct line_delivery	 d;

	parse_ok("{\"events\":["
	    "{\"type\":\"x\",\"timestamp\":1,\"deliveryContext\":"
	    "{\"isRedelivery\":true}},"
	    "{\"type\":\"x\",\"timestamp\":2,\"deliveryContext\":"
	    "{\"isRedelivery\":false}},"
	    "{\"type\":\"x\",\"timestamp\":3},"
	    "{\"type\":\"x\",\"timestamp\":4,\"deliveryContext\":"
	    "{\"isRedelivery\":\"true\"}},"
	    "{\"type\":\"x\",\"timestamp\":5,\"deliveryContext\":true}]}", &d);
	assert_int_equal(d.nevents, 5);
	assert_true(d.events[0].redelivery);
	assert_false(d.events[1].redelivery);
	assert_false(d.events[2].redelivery);
	assert_false(d.events[3].redelivery);
	assert_false(d.events[4].redelivery);
	line_delivery_free(&d);
}

/* Timestamps: integer milliseconds from 1970 up to (not into) year 3000. */
static void
test_line_parse_timestamp_range(void **state)
{
	static const struct {
		const char	*value;
		long long	 want;
	} cases[] = {
		{ "0", 0 },
		{ "1735693200000", 1735693200000LL },
		{ "32503679999999", 32503679999999LL },
		{ "32503680000000", -1 },
		{ "9223372036854775807", -1 },
		{ "-1", -1 },
		{ "-9223372036854775808", -1 },
		{ "1735693200000.0", -1 },
		{ "1.7e12", -1 },
		{ "\"1735693200000\"", -1 },
		{ "true", -1 },
		{ "null", -1 },
	};
	struct line_delivery	 d;
	char			 body[256];
	size_t			 i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(body, sizeof body, "{\"events\":[{\"type\":\"x\","
		    "\"timestamp\":%s}]}", cases[i].value);
		parse_ok(body, &d);
		if (d.events[0].ts_ms != cases[i].want)
			fail_msg("timestamp %s: got %lld, want %lld",
			    cases[i].value, d.events[0].ts_ms, cases[i].want);
		if (cases[i].want < 0)
			assert_string_equal(d.events[0].problem,
			    "event has no valid timestamp");
		else
			assert_null(d.events[0].problem);
		line_delivery_free(&d);
	}
}

/* A body that is not JSON (or not UTF-8) fails with a cause. */
static void
test_line_parse_not_json(void **state)
{
	static const char *const bodies[] = {
		"", "{", "{\"events\":[}", "\xff\xfe{}", "{\"a\":\"\xc3\x28\"}",
		"{} {}", "{\"a\":1,}", "{\"a\":\"\\ud800\"}",
	};
	struct line_delivery	 d;
	char			*cause;
	size_t			 i;

	for (i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
		cause = NULL;
		if (line_parse(bodies[i], strlen(bodies[i]), &d, &cause) == 0)
			fail_msg("body %zu parsed", i);
		assert_non_null(cause);
		assert_int_equal(d.nevents, 0);
		assert_null(d.events);
		free(cause);
	}
	cause = NULL;
	assert_int_equal(line_parse(NULL, 0, &d, &cause), -1);
	free(cause);
}

/* line_is_user_id: U and 32 lowercase hex digits, nothing else. */
static void
test_line_is_user_id(void **state)
{
	assert_true(line_is_user_id(UID));
	assert_true(line_is_user_id("U00000000000000000000000000000000"));
	assert_false(line_is_user_id(NULL));
	assert_false(line_is_user_id(""));
	assert_false(line_is_user_id("U"));
	assert_false(line_is_user_id("Uxyz"));
	assert_false(line_is_user_id("U4AF4980629A1B2C3D4E5F60718293A4B"));
	assert_false(line_is_user_id("u4af4980629a1b2c3d4e5f60718293a4b"));
	assert_false(line_is_user_id("C4af4980629a1b2c3d4e5f60718293a4b"));
	assert_false(line_is_user_id("U4af4980629a1b2c3d4e5f60718293a4"));
	assert_false(line_is_user_id("U4af4980629a1b2c3d4e5f60718293a4b0"));
	assert_false(line_is_user_id("U4af4980629a1b2c3d4e5f60718293a4g"));
	assert_false(line_is_user_id("U4af4980629a1b2c3d4e5f6071829 a4b"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_parse_samples_have_no_problem),
		cmocka_unit_test(test_line_parse_event_id_is_webhook_event_id),
		cmocka_unit_test(test_line_parse_event_id_hash_is_stable),
		cmocka_unit_test(test_line_parse_odd_deliveries),
		cmocka_unit_test(test_line_parse_odd_events),
		cmocka_unit_test(test_line_parse_fields),
		cmocka_unit_test(test_line_parse_nul_becomes_replacement),
		cmocka_unit_test(test_line_parse_redelivery_flag),
		cmocka_unit_test(test_line_parse_timestamp_range),
		cmocka_unit_test(test_line_parse_not_json),
		cmocka_unit_test(test_line_is_user_id),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
