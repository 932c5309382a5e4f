/* SPDX-License-Identifier: ISC */
/*
 * test_segment_rule.c -- segment_rule_parse(): the documented grammar
 * parses into the expected tree, and every kind of bad input is refused
 * with code "invalid_rule", a JSON pointer to the offending node and a
 * message that says what to do.  Limits on depth, conditions and list
 * sizes hold.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "musubi/segment.h"

/* Parse JSON text as a rule under "/rule"; the text must be valid JSON. */
static struct segment_rule *
parse(const char *text, struct segment_error *err)
{
	json_error_t		 jerr;
	json_t			*j;
	struct segment_rule	*r;

	if ((j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr)) == NULL)
		fail_msg("bad JSON in test: %s: %s", text, jerr.text);
	r = segment_rule_parse(j, "/rule", err);
	json_decref(j);
	return (r);
}

/* Parse a rule that must be accepted. */
static struct segment_rule *
parse_ok(const char *text)
{
	struct segment_error	 err;
	struct segment_rule	*r = parse(text, &err);

	if (r == NULL)
		fail_msg("refused %s: %s at %s", text, err.message, err.path);
	return (r);
}

/* Assert a rule is refused at path, with msg in its message. */
static void
refused(const char *text, const char *path, const char *msg)
{
	struct segment_error	 err;
	struct segment_rule	*r = parse(text, &err);

	if (r != NULL) {
		segment_rule_free(r);
		fail_msg("accepted %s", text);
	}
	assert_string_equal(err.code, "invalid_rule");
	if (strcmp(err.path, path) != 0)
		fail_msg("%s: path %s, want %s (%s)", text, err.path, path,
		    err.message);
	if (strstr(err.message, msg) == NULL)
		fail_msg("%s: message \"%s\" lacks \"%s\"", text, err.message,
		    msg);
}

/* A rule using every condition parses into the right tree. */
static void
test_segment_rule_full_grammar(void **state)
{
	struct segment_rule	*r;
	struct segment_node	*n, *c;

	r = parse_ok("{\"all\": ["
	    "{\"friend\": {\"status\": \"following\"}},"
	    "{\"friend\": {\"language\": {\"in\": [\"ja\", \"en\"]},"
	    " \"followed_at\": {\"within_days\": 30},"
	    " \"first_followed_at\": {\"between\": [\"2024-01-01\","
	    " \"2024-12-31\"]}, \"linked\": false}},"
	    "{\"tags\": {\"has_any\": [\"VIP\", \"VIP\", \"sale\"],"
	    " \"has_none\": [\"stop\"]}},"
	    "{\"source\": {\"kind\": \"cpf_ad\"}},"
	    "{\"purchases\": {\"count\": {\"gte\": 2}, \"net_amount\":"
	    " {\"between\": [1000, 5000.5]}, \"window\": {\"last_days\": 90},"
	    " \"products\": {\"sku\": \"A-1\", \"title_contains\": \"茶\"},"
	    " \"shop\": \"main-shop\"}},"
	    "{\"first_purchase\": {\"more_than_days\": 365}},"
	    "{\"last_purchase\": {\"within_days\": 30, \"more_than_days\": 7}},"
	    "{\"aov\": {\"gt\": 8000}},"
	    "{\"rfm\": {\"r\": {\"gte\": 4}, \"m\": 5}},"
	    "{\"any\": [{\"clicks\": {}}, {\"clicks\": {\"link\": [3, 4],"
	    " \"campaign\": 9, \"count\": {\"gte\": 2}}},"
	    " {\"page_views\": {\"url_prefix\": \"https://s.example/p/\"}}]},"
	    "{\"not\": {\"interactions\": {\"postback_data\": {\"prefix\":"
	    " \"coupon=\"}, \"window\": {\"between\": [\"2024-11-01\","
	    " \"2024-11-30\"]}}}},"
	    "{\"messaging\": {\"window\": {\"last_days\": 7}}}"
	    "]}");
	assert_int_equal(r->conditions, 19);
	assert_int_equal(r->depth, 2);
	n = r->root;
	assert_int_equal(n->kind, SEG_ALL);
	assert_int_equal(n->nchild, 12);
	assert_string_equal(n->path, "/rule/all");

	c = n->child[0];
	assert_int_equal(c->kind, SEG_FRIEND_STATUS);
	assert_string_equal(c->path, "/rule/all/0/friend/status");
	assert_int_equal(c->value.ncmps, 1);
	assert_int_equal(c->value.cmps[0].op, SEG_OP_EQ);
	assert_string_equal(c->value.cmps[0].values[0], "following");

	c = n->child[1];		/* several friend keys: all of them */
	assert_int_equal(c->kind, SEG_ALL);
	assert_int_equal(c->nchild, 4);
	assert_int_equal(c->child[0]->kind, SEG_FRIEND_LANGUAGE);
	assert_int_equal(c->child[0]->value.cmps[0].op, SEG_OP_IN);
	assert_int_equal(c->child[0]->value.cmps[0].nvalues, 2);
	assert_int_equal(c->child[2]->value.cmps[0].op, SEG_OP_DATES);
	assert_int_equal(c->child[3]->kind, SEG_FRIEND_LINKED);
	assert_int_equal(c->child[3]->flag, 0);

	c = n->child[2];
	assert_int_equal(c->nchild, 2);
	assert_int_equal(c->child[0]->tag_op, SEG_TAGS_ANY);
	assert_int_equal(c->child[0]->names.n, 2);	/* deduplicated */
	assert_int_equal(c->child[1]->tag_op, SEG_TAGS_NONE);

	c = n->child[4];
	assert_int_equal(c->kind, SEG_PURCHASES);
	assert_string_equal(c->path, "/rule/all/4/purchases");
	assert_int_equal(c->value.cmps[0].op, SEG_OP_GTE);
	assert_int_equal(c->amount.cmps[0].op, SEG_OP_BETWEEN);
	assert_string_equal(c->amount.cmps[0].values[1], "5000.5");
	assert_true(c->has_window);
	assert_int_equal(c->window.op, SEG_OP_WITHIN_DAYS);
	assert_string_equal(c->window.values[0], "90");
	assert_int_equal(c->skus.n, 1);
	assert_string_equal(c->title_contains, "茶");
	assert_string_equal(c->shop, "main-shop");

	c = n->child[6];
	assert_int_equal(c->kind, SEG_LAST_PURCHASE);
	assert_int_equal(c->value.ncmps, 2);

	c = n->child[8];
	assert_int_equal(c->kind, SEG_ALL);
	assert_int_equal(c->child[1]->kind, SEG_RFM_M);
	assert_string_equal(c->child[1]->value.cmps[0].values[0], "5");

	c = n->child[9];
	assert_int_equal(c->kind, SEG_ANY);
	assert_int_equal(c->child[0]->kind, SEG_CLICKS);
	/* no count given: "at least once" */
	assert_int_equal(c->child[0]->value.cmps[0].op, SEG_OP_GTE);
	assert_string_equal(c->child[0]->value.cmps[0].values[0], "1");
	assert_int_equal(c->child[1]->links.n, 2);
	assert_string_equal(c->child[1]->campaign, "9");

	c = n->child[10];
	assert_int_equal(c->kind, SEG_NOT);
	c = c->child[0];
	assert_int_equal(c->kind, SEG_INTERACTIONS);
	assert_string_equal(c->itype, "postback");
	assert_int_equal(c->postback.op, SEG_OP_PREFIX);
	assert_int_equal(c->window.op, SEG_OP_DATES);
	segment_rule_free(r);
}

/* Shorthands: a bare number is eq, a bare string is eq. */
static void
test_segment_rule_shorthands(void **state)
{
	struct segment_rule	*r;

	r = parse_ok("{\"purchases\": {\"count\": 0}}");
	assert_int_equal(r->root->kind, SEG_PURCHASES);
	assert_int_equal(r->root->value.cmps[0].op, SEG_OP_EQ);
	assert_string_equal(r->root->value.cmps[0].values[0], "0");
	assert_string_equal(r->root->path, "/rule/purchases");
	segment_rule_free(r);

	/* net_amount alone: no implied count */
	r = parse_ok("{\"purchases\": {\"net_amount\": {\"gte\": 30000}}}");
	assert_int_equal(r->root->value.ncmps, 0);
	assert_int_equal(r->root->amount.ncmps, 1);
	segment_rule_free(r);

	r = parse_ok("{\"interactions\": {\"postback_data\": \"a=1\"}}");
	assert_int_equal(r->root->postback.op, SEG_OP_EQ);
	assert_string_equal(r->root->itype, "postback");
	segment_rule_free(r);

	r = parse_ok("{\"not\": {\"not\": {\"friend\": {\"status\": "
	    "{\"ne\": \"blocked\"}}}}}");
	assert_int_equal(r->depth, 2);
	segment_rule_free(r);
}

/* The shape of the tree itself. */
static void
test_segment_rule_bad_shape(void **state)
{
	refused("[]", "/rule", "must be an object");
	refused("{}", "/rule", "this rule is empty");
	refused("{\"all\": [], \"any\": []}", "/rule",
	    "one condition in each object");
	refused("{\"all\": {}}", "/rule/all", "takes a list of rules");
	refused("{\"any\": []}", "/rule/any", "at least one rule");
	refused("{\"not\": []}", "/rule/not", "not takes one rule");
	refused("{\"all\": [{\"friend\": {\"status\": \"following\"}}, 3]}",
	    "/rule/all/1", "must be an object");
	refused("{\"al\": []}", "/rule/al", "did you mean \"all\"");
	refused("{\"purchase\": {}}", "/rule/purchase",
	    "did you mean \"purchases\"");
	refused("{\"zzzzzz\": {}}", "/rule/zzzzzz", "unknown condition");
	refused("{\"friend\": {}}", "/rule/friend", "is empty");
	refused("{\"friend\": 1}", "/rule/friend", "must be an object");
	refused("{\"friend\": {\"statu\": \"following\"}}",
	    "/rule/friend/statu", "did you mean \"status\"");
	/* JSON pointer escaping of odd keys */
	refused("{\"friend\": {\"a/b~c\": 1}}", "/rule/friend/a~1b~0c",
	    "friend has no");
}

/* Types and values inside conditions. */
static void
test_segment_rule_bad_values(void **state)
{
	refused("{\"friend\": {\"status\": \"asleep\"}}",
	    "/rule/friend/status", "following, blocked or unknown");
	refused("{\"friend\": {\"status\": {\"gt\": \"a\"}}}",
	    "/rule/friend/status/gt", "does not apply");
	refused("{\"friend\": {\"status\": {\"in\": []}}}",
	    "/rule/friend/status/in", "list of 1 to");
	refused("{\"friend\": {\"language\": \"\"}}",
	    "/rule/friend/language", "must not be empty");
	refused("{\"friend\": {\"language\": \"a\\u0000b\"}}",
	    "/rule/friend/language", "NUL");
	refused("{\"friend\": {\"linked\": \"yes\"}}",
	    "/rule/friend/linked", "true");
	refused("{\"friend\": {\"followed_at\": 30}}",
	    "/rule/friend/followed_at", "within_days");
	refused("{\"friend\": {\"followed_at\": {\"within_days\": 0}}}",
	    "/rule/friend/followed_at/within_days", "from 1 to 36500");
	refused("{\"friend\": {\"followed_at\": {\"gte\": \"2024-01-01\"}}}",
	    "/rule/friend/followed_at/gte", "has no \"gte\"");
	refused("{\"friend\": {\"followed_at\": {\"between\": "
	    "[\"2024-02-30\", \"2024-03-01\"]}}}",
	    "/rule/friend/followed_at/between/0", "YYYY-MM-DD");
	refused("{\"friend\": {\"followed_at\": {\"between\": "
	    "[\"2024-03-02\", \"2024-03-01\"]}}}",
	    "/rule/friend/followed_at/between", "2024-03-02 is after");
	refused("{\"friend\": {\"followed_at\": {\"between\": "
	    "[\"2024-03-02\"]}}}",
	    "/rule/friend/followed_at/between", "two dates");
	refused("{\"friend\": {\"followed_at\": {\"between\": "
	    "[\"2023-02-29\", \"2024-01-01\"]}}}",
	    "/rule/friend/followed_at/between/0", "YYYY-MM-DD");
	refused("{\"purchases\": {\"count\": -1}}", "/rule/purchases/count",
	    "whole number from 0");
	refused("{\"purchases\": {\"count\": 1.5}}", "/rule/purchases/count",
	    "whole number");
	refused("{\"purchases\": {\"count\": \"2\"}}",
	    "/rule/purchases/count", "must be a number or an object");
	refused("{\"purchases\": {\"count\": {}}}", "/rule/purchases/count",
	    "needs a comparison");
	refused("{\"purchases\": {\"count\": {\"gte\": 5, \"atleast\": 2}}}",
	    "/rule/purchases/count/atleast", "has no \"atleast\"");
	refused("{\"purchases\": {\"count\": {\"between\": [5, 2]}}}",
	    "/rule/purchases/count/between", "low value first");
	refused("{\"purchases\": {\"count\": {\"between\": [1, 2, 3]}}}",
	    "/rule/purchases/count/between", "two numbers");
	refused("{\"purchases\": {\"count\": {\"in\": [1, \"x\"]}}}",
	    "/rule/purchases/count/in/1", "whole number");
	refused("{\"purchases\": {\"net_amount\": 1e300}}",
	    "/rule/purchases/net_amount", "number between");
	refused("{\"purchases\": {\"window\": {\"last_days\": 7, \"between\":"
	    " [\"2024-01-01\", \"2024-01-02\"]}}}", "/rule/purchases/window",
	    "exactly one");
	refused("{\"purchases\": {\"window\": {\"days\": 7}}}",
	    "/rule/purchases/window/days", "has no \"days\"");
	refused("{\"purchases\": {\"products\": {}}}",
	    "/rule/purchases/products", "is empty");
	refused("{\"purchases\": {\"products\": {\"sku\": [1]}}}",
	    "/rule/purchases/products/sku/0", "must be text");
	refused("{\"purchases\": {\"shop\": \"Main Shop\"}}",
	    "/rule/purchases/shop", "shop slug");
	refused("{\"purchases\": 2}", "/rule/purchases", "must be an object");
	refused("{\"rfm\": {\"r\": 6}}", "/rule/rfm/r", "from 1 to 5");
	refused("{\"rfm\": {\"x\": 1}}", "/rule/rfm/x", "rfm has no");
	refused("{\"aov\": \"high\"}", "/rule/aov", "must be a number");
	refused("{\"tags\": {\"has_any\": \"VIP\"}}", "/rule/tags/has_any",
	    "list of tag names");
	refused("{\"tags\": {\"has_any\": [\"\"]}}", "/rule/tags/has_any/0",
	    "must not be empty");
	refused("{\"clicks\": {\"link\": 0}}", "/rule/clicks/link",
	    "positive whole number");
	refused("{\"clicks\": {\"campaign\": [1]}}", "/rule/clicks/campaign",
	    "positive whole number");
	refused("{\"clicks\": []}", "/rule/clicks", "must be an object");
	refused("{\"page_views\": {\"url_prefix\": 5}}",
	    "/rule/page_views/url_prefix", "must be text");
	refused("{\"interactions\": {\"type\": \"message\", "
	    "\"postback_data\": \"x\"}}", "/rule/interactions/type",
	    "only to type postback");
	refused("{\"interactions\": {\"type\": \"sticker\"}}",
	    "/rule/interactions/type", "must be message");
	refused("{\"interactions\": {\"postback_data\": {\"eq\": \"a\", "
	    "\"prefix\": \"b\"}}}", "/rule/interactions/postback_data",
	    "exactly one");
	refused("{\"source\": {\"code\": 3}}", "/rule/source/code",
	    "must be text");
	refused("{\"source\": {\"kind\": \"cpf\"}}", "/rule/source/kind",
	    "cpf_ad, web, qr, store, influencer or other");
	refused("{\"messaging\": {\"campaign\": \"x\"}}",
	    "/rule/messaging/campaign", "positive whole number");
}

/* Text limits are in characters, not bytes. */
static void
test_segment_rule_text_limits(void **state)
{
	char	 buf[2048], *p;
	int	 i;

	/* 100 three-byte characters: a tag name of exactly 100 */
	p = buf + sprintf(buf, "{\"tags\": {\"has_any\": [\"");
	for (i = 0; i < 100; i++)
		p += sprintf(p, "タ");
	sprintf(p, "\"]}}");
	segment_rule_free(parse_ok(buf));
	sprintf(p, "グ\"]}}");
	refused(buf, "/rule/tags/has_any/0", "at most 100 characters");
}

/* Depth, condition and list limits. */
static void
test_segment_rule_limits(void **state)
{
	char	 buf[8192], *p;
	int	 i;

	/* SEGMENT_MAX_DEPTH nested groups are fine; one more is not */
	p = buf;
	for (i = 0; i < SEGMENT_MAX_DEPTH; i++)
		p += sprintf(p, "{\"not\": ");
	p += sprintf(p, "{\"clicks\": {}}");
	for (i = 0; i < SEGMENT_MAX_DEPTH; i++)
		p += sprintf(p, "}");
	segment_rule_free(parse_ok(buf));
	p = buf;
	for (i = 0; i <= SEGMENT_MAX_DEPTH; i++)
		p += sprintf(p, "{\"all\": [");
	p += sprintf(p, "{\"clicks\": {}}");
	for (i = 0; i <= SEGMENT_MAX_DEPTH; i++)
		p += sprintf(p, "]}");
	refused(buf, "/rule/all/0/all/0/all/0/all/0/all/0/all/0/all/0/all/0/"
	    "all", "nested at most 8 deep");

	/* 50 conditions pass, 51 do not (counted across groups) */
	p = buf + sprintf(buf, "{\"any\": [");
	for (i = 0; i < SEGMENT_MAX_CONDITIONS; i++)
		p += sprintf(p, "%s{\"clicks\": {}}", i ? "," : "");
	sprintf(p, "]}");
	segment_rule_free(parse_ok(buf));
	p = buf + sprintf(buf, "{\"all\": [{\"friend\": {\"status\": "
	    "\"following\"}}, {\"any\": [");
	for (i = 0; i < SEGMENT_MAX_CONDITIONS; i++)
		p += sprintf(p, "%s{\"clicks\": {}}", i ? "," : "");
	sprintf(p, "]}]}");
	refused(buf, "/rule/all/1/any/49/clicks", "at most 50 conditions");

	/* a condition object with several keys counts each key */
	p = buf + sprintf(buf, "{\"all\": [");
	for (i = 0; i < 10; i++)
		p += sprintf(p, "%s{\"friend\": {\"status\": \"following\", "
		    "\"language\": \"ja\", \"linked\": true, \"followed_at\": "
		    "{\"within_days\": 3}, \"first_followed_at\": "
		    "{\"within_days\": 3}}}", i ? "," : "");
	sprintf(p, ", {\"clicks\": {}}]}");
	refused(buf, "/rule/all/10/clicks", "at most 50 conditions");

	/* lists hold at most SEGMENT_MAX_LIST items */
	p = buf + sprintf(buf, "{\"tags\": {\"has_all\": [");
	for (i = 0; i <= SEGMENT_MAX_LIST; i++)
		p += sprintf(p, "%s\"t%d\"", i ? "," : "", i);
	sprintf(p, "]}}");
	refused(buf, "/rule/tags/has_all", "1 to 100");
}

/* Values that look like SQL or JSON pointers are kept verbatim. */
static void
test_segment_rule_values_verbatim(void **state)
{
	struct segment_rule	*r;

	r = parse_ok("{\"tags\": {\"has_any\": [\"x'); DROP TABLE friends;"
	    "--\", \"a\\\"b\\\\c\"]}}");
	assert_string_equal(r->root->names.items[0],
	    "x'); DROP TABLE friends;--");
	assert_string_equal(r->root->names.items[1], "a\"b\\c");
	segment_rule_free(r);
}

/* A NULL rule (missing) is refused at the given path. */
static void
test_segment_rule_missing(void **state)
{
	struct segment_error	 err;

	assert_null(segment_rule_parse(NULL, "/rule", &err));
	assert_string_equal(err.path, "/rule");
	assert_string_equal(err.code, "invalid_rule");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_segment_rule_full_grammar),
		cmocka_unit_test(test_segment_rule_shorthands),
		cmocka_unit_test(test_segment_rule_bad_shape),
		cmocka_unit_test(test_segment_rule_bad_values),
		cmocka_unit_test(test_segment_rule_text_limits),
		cmocka_unit_test(test_segment_rule_limits),
		cmocka_unit_test(test_segment_rule_values_verbatim),
		cmocka_unit_test(test_segment_rule_missing),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
