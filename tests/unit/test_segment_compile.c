/* SPDX-License-Identifier: ISC */
/*
 * test_segment_compile.c -- segment_compile(): no value of a rule ever
 * reaches the SQL text (each is a parameter), the channel is $1 and scopes
 * every table read, rollups answer unwindowed conditions and raw events
 * the windowed ones, set mode joins grouped aggregates and row mode
 * correlated LATERAL ones, every $n is numbered right, and the conditions
 * musubi cannot evaluate yet are refused with "not_available" and a path.
 * The SQL itself runs against PostgreSQL in the integration tests.
 */
#include <ctype.h>
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

#define CHANNEL	4242

/* Compile JSON text for CHANNEL; the rule must parse. */
static struct segment_query *
compile(const char *text, enum segment_mode mode, struct segment_error *err)
{
	json_error_t		 jerr;
	json_t			*j;
	struct segment_rule	*r;
	struct segment_query	*q;

	if ((j = json_loads(text, 0, &jerr)) == NULL)
		fail_msg("bad JSON in test: %s", jerr.text);
	if ((r = segment_rule_parse(j, "/rule", err)) == NULL)
		fail_msg("refused %s: %s", text, err->message);
	json_decref(j);
	q = segment_compile(r, CHANNEL, mode, err);
	segment_rule_free(r);
	return (q);
}

/* Compile, which must succeed; returns the whole SELECT (caller frees). */
static char *
compile_sql(const char *text, enum segment_mode mode,
    struct segment_query **qp)
{
	struct segment_error	 err;
	struct segment_query	*q = compile(text, mode, &err);

	if (q == NULL)
		fail_msg("not compiled: %s: %s", text, err.message);
	*qp = q;
	return (segment_query_select(q, "f.id", NULL));
}

/* Does any parameter contain s? */
static int
in_params(const struct segment_query *q, const char *s)
{
	int	 i;

	for (i = 0; i < segment_query_nparams(q); i++) {
		if (segment_query_param(q, i) != NULL &&
		    strstr(segment_query_param(q, i), s) != NULL)
			return (1);
	}
	return (0);
}

/* Every $n in sql is 1..nparams and each of those appears. */
static void
check_numbering(const char *sql, int nparams)
{
	char		 seen[256];
	const char	*p;
	long		 n;
	int		 i;

	assert_true(nparams < (int)sizeof seen);
	memset(seen, 0, sizeof seen);
	for (p = sql; (p = strchr(p, '$')) != NULL; p++) {
		if (!isdigit((unsigned char)p[1]))
			continue;
		n = strtol(p + 1, NULL, 10);
		if (n < 1 || n > nparams)
			fail_msg("$%ld out of range (%d params): %s", n,
			    nparams, sql);
		seen[n] = 1;
	}
	for (i = 1; i <= nparams; i++) {
		if (!seen[i])
			fail_msg("$%d is never used: %s", i, sql);
	}
}

/* A rule with a marker in every value slot. */
static const char marked[] = "{\"all\": ["
    "{\"friend\": {\"language\": {\"in\": [\"zzlangzz\"]},"
    " \"followed_at\": {\"between\": [\"2031-07-19\", \"2032-08-21\"]},"
    " \"first_followed_at\": {\"within_days\": 3456}}},"
    "{\"tags\": {\"has_all\": [\"zztag1zz\", \"zz'tag2\"],"
    " \"has_none\": [\"zztag3zz\"]}},"
    "{\"purchases\": {\"count\": {\"between\": [777, 888]},"
    " \"net_amount\": {\"gte\": 123456.75}, \"window\":"
    " {\"last_days\": 4567}, \"shop\": \"zzshopzz\", \"products\":"
    " {\"product_id\": \"zzpidzz\", \"sku\": [\"zzskuzz\"], \"vendor\":"
    " \"zzvendorzz\", \"title_contains\": \"zztitlezz\"}}},"
    "{\"last_purchase\": {\"more_than_days\": 5678}},"
    "{\"aov\": {\"in\": [31415, 27182]}},"
    "{\"rfm\": {\"f\": {\"ne\": 3}}},"
    "{\"source\": {\"code\": {\"in\": [\"zzsrczz\"]}}},"
    "{\"any\": [{\"clicks\": {\"link\": [987654321], \"campaign\":"
    " 876543219}}, {\"page_views\": {\"url_prefix\": \"zzurlzz\","
    " \"window\": {\"between\": [\"2033-01-02\", \"2033-02-03\"]}}},"
    " {\"interactions\": {\"postback_data\": {\"prefix\": \"zzpbzz\"}}},"
    " {\"interactions\": {\"type\": \"message\", \"count\": 6789}}]}"
    "]}";

static const char *const markers[] = {
	"zzlangzz", "2031-07-19", "2032-08-21", "3456", "zztag1zz", "zz'tag2",
	"zztag3zz", "777", "888", "123456.75", "4567", "zzshopzz", "zzpidzz",
	"zzskuzz", "zzvendorzz", "zztitlezz", "5678", "31415", "27182",
	"987654321", "876543219", "zzurlzz", "2033-01-02", "2033-02-03",
	"zzpbzz", "message", "6789", "zzsrczz", NULL
};

/* No value of the rule is in the SQL; each is in a parameter. */
static void
test_segment_compile_values_are_parameters(void **state)
{
	struct segment_query	*q;
	char			*sql;
	size_t			 i;
	int			 mode;

	for (mode = SEGMENT_SET; mode <= SEGMENT_ROWS; mode++) {
		sql = compile_sql(marked, mode, &q);
		for (i = 0; markers[i] != NULL; i++) {
			if (strstr(sql, markers[i]) != NULL)
				fail_msg("value %s spliced into %s",
				    markers[i], sql);
			if (!in_params(q, markers[i]))
				fail_msg("value %s in no parameter",
				    markers[i]);
		}
		check_numbering(sql, segment_query_nparams(q));
		assert_string_equal(segment_query_param(q, 0), "4242");
		free(sql);
		segment_query_free(q);
	}
}

/* $1 is the channel and every table read is scoped by it. */
static void
test_segment_compile_channel_scope(void **state)
{
	static const char *const tables[] = {
		"FROM friend_tags ft", "FROM orders o",
		"FROM friend_customer_links k", "FROM clicks cl",
		"FROM page_views pv", "FROM interactions i",
		"FROM shops sh", "FROM links l", "FROM channels ch", NULL
	};
	static const char *const scopes[] = {
		"ft.channel_id = $1", "o.channel_id = $1",
		"k.channel_id = $1", "cl.channel_id = $1",
		"pv.channel_id = $1", "i.channel_id = $1",
		"sh.channel_id = $1", "l.channel_id = $1", "ch.id = $1", NULL
	};
	struct segment_query	*q;
	const char		*p, *w;
	char			*sql;
	size_t			 i;

	sql = compile_sql("{\"all\": [{\"friend\": {\"linked\": true}}, "
	    "{\"purchases\": {\"shop\": \"s\", \"window\": {\"between\": "
	    "[\"2024-01-01\", \"2024-01-31\"]}}}]}", SEGMENT_SET, &q);
	free(sql);
	segment_query_free(q);
	sql = compile_sql(marked, SEGMENT_SET, &q);
	assert_non_null(strstr(sql, "FROM friends f"));
	assert_non_null(strstr(sql, "WHERE f.channel_id = $1 AND"));
	for (i = 0; tables[i] != NULL; i++) {
		for (p = sql; (p = strstr(p, tables[i])) != NULL; p++) {
			/* the next WHERE after the table scopes it */
			w = strstr(p, " WHERE ");
			assert_non_null(w);
			if (strncmp(w + 7, scopes[i], strlen(scopes[i])) != 0)
				fail_msg("%s not scoped: %.120s", tables[i],
				    p);
		}
	}
	/* friend_stats and friend_engagement join on the friend's channel */
	free(sql);
	segment_query_free(q);
	sql = compile_sql("{\"all\": [{\"aov\": 1}, {\"clicks\": {}}]}",
	    SEGMENT_SET, &q);
	assert_non_null(strstr(sql, "friend_stats s ON s.channel_id = "
	    "f.channel_id AND s.friend_id = f.id"));
	assert_non_null(strstr(sql, "friend_engagement e ON e.channel_id = "
	    "f.channel_id AND e.friend_id = f.id"));
	free(sql);
	segment_query_free(q);
}

/* Unwindowed conditions read rollups; windows and filters read events. */
static void
test_segment_compile_rollups(void **state)
{
	static const struct {
		const char	*rule;
		const char	*has;
		const char	*lacks;
	} cases[] = {
		/* under "not", missing counts are 0 and missing values false */
		{ "{\"not\": {\"purchases\": {\"count\": {\"gte\": 2}}}}",
		  "coalesce(s.orders_count, 0) >= $2::bigint", "orders o" },
		{ "{\"not\": {\"purchases\": {\"net_amount\": {\"gte\": 2}}}}",
		  "coalesce(s.net_revenue, 0) >= $2::numeric", "orders o" },
		/* elsewhere, strict when 0 cannot match: inner-joinable */
		{ "{\"purchases\": {\"count\": {\"gte\": 2}}}",
		  "(s.orders_count >= $2::bigint)", "coalesce" },
		{ "{\"any\": [{\"purchases\": {\"count\": {\"lte\": 2}}}]}",
		  "(coalesce(s.orders_count, 0) <= $2::bigint)", "orders o" },
		{ "{\"purchases\": {\"count\": {\"in\": [3, 0]}}}",
		  "(coalesce(s.orders_count, 0) = ANY ($2::bigint[]))", "o." },
		{ "{\"purchases\": {\"net_amount\": {\"between\": [-5, 2]}}}",
		  "(coalesce(s.net_revenue, 0) BETWEEN", "o." },
		{ "{\"purchases\": {\"net_amount\": {\"between\": [0.5, 2]}}}",
		  "(s.net_revenue BETWEEN", "coalesce" },
		{ "{\"purchases\": {\"window\": {\"between\": "
		  "[\"2024-01-01\", \"2024-01-02\"]}}}", "FROM orders o",
		  "friend_stats" },
		{ "{\"purchases\": {\"shop\": \"a\"}}", "FROM orders o",
		  "friend_stats" },
		{ "{\"purchases\": {\"products\": {\"vendor\": \"a\"}}}",
		  "JOIN order_items it", "friend_stats" },
		{ "{\"clicks\": {\"count\": 3}}",
		  "(e.clicks = $2::bigint)", "FROM clicks" },
		{ "{\"clicks\": {\"count\": {\"ne\": 3}}}",
		  "(coalesce(e.clicks, 0) <> $2::bigint)", "FROM clicks" },
		{ "{\"clicks\": {\"window\": {\"last_days\": 3}, "
		  "\"count\": 2}}", "FROM clicks cl", "friend_engagement" },
		{ "{\"clicks\": {\"window\": {\"between\": [\"2024-01-01\", "
		  "\"2024-01-02\"]}}}", "FROM clicks cl", "friend_engagement" },
		/* at least one / none in the last N days: the latest time */
		{ "{\"not\": {\"clicks\": {\"window\": {\"last_days\": 3}}}}",
		  "(coalesce(e.last_click_at >= now() - make_interval(days => "
		  "$2::int), false))", "FROM clicks" },
		{ "{\"clicks\": {\"window\": {\"last_days\": 3}}}",
		  "AND (e.last_click_at >= now() - make_interval(days => "
		  "$2::int))", "coalesce" },
		{ "{\"page_views\": {\"window\": {\"last_days\": 3}, "
		  "\"count\": 0}}", "(NOT coalesce(e.last_view_at >= now() - "
		  "make_interval(days => $2::int), false))", "FROM page_views" },
		{ "{\"purchases\": {\"window\": {\"last_days\": 3}, "
		  "\"count\": {\"gt\": 0}}}", "AND (s.last_purchase_at >= "
		  "now() - make_interval(days => $2::int))", "orders" },
		{ "{\"purchases\": {\"window\": {\"last_days\": 3}, "
		  "\"count\": {\"gt\": 1}}}", "FROM orders o", "friend_stats" },
		{ "{\"purchases\": {\"window\": {\"last_days\": 3}, "
		  "\"net_amount\": 5}}", "FROM orders o", "friend_stats" },
		{ "{\"page_views\": {\"window\": {\"last_days\": 3}, "
		  "\"url_prefix\": \"h\"}}", "FROM page_views pv",
		  "friend_engagement" },
		{ "{\"page_views\": {}}", "(e.page_views >= ",
		  "FROM page_views" },
		{ "{\"page_views\": {\"url_prefix\": \"h\"}}",
		  "pv.url LIKE $2::text", "friend_engagement" },
		{ "{\"not\": {\"last_purchase\": {\"more_than_days\": 90}}}",
		  "coalesce((s.last_purchase_at < now() - make_interval(days "
		  "=> $2::int)), false)", "orders" },
		{ "{\"last_purchase\": {\"more_than_days\": 90}}",
		  "((s.last_purchase_at < now() - make_interval(days "
		  "=> $2::int)))", "coalesce" },
		{ "{\"rfm\": {\"r\": {\"gte\": 4}}}",
		  "(s.rfm_r >= $2::bigint)", "coalesce" },
		{ "{\"tags\": {\"has_any\": [\"a\"], \"has_none\": [\"b\"]}}",
		  "(x1.n > 0) AND (coalesce(x2.n, 0) = 0)", "LATERAL" },
		{ "{\"not\": {\"tags\": {\"has_all\": [\"a\"]}}}",
		  "(coalesce(x1.n, 0) >= $3::bigint)", "LATERAL" },
		{ "{\"friend\": {\"linked\": true}}", "(x1.n > 0)", "coal" },
		{ "{\"friend\": {\"linked\": false}}",
		  "(coalesce(x1.n, 0) = 0)", "LATERAL" },
		{ "{\"source\": {\"kind\": {\"in\": [\"cpf_ad\", \"qr\"]}, "
		  "\"code\": {\"ne\": \"x-1\"}}}", "LEFT JOIN acquisition_sources "
		  "src ON src.channel_id = f.channel_id AND src.id = "
		  "f.source_id", "$4" },
		{ "{\"friend\": {\"status\": \"blocked\"}}",
		  "(f.status = $2::text)", "coalesce" },
		{ "{\"not\": {\"friend\": {\"language\": {\"ne\": \"ja\"}}}}",
		  "coalesce((f.language <> $2::text), false)", "JOIN" },
		{ "{\"any\": [{\"friend\": {\"language\": \"ja\"}}]}",
		  "((f.language = $2::text))", "coalesce" },
	};
	struct segment_query	*q;
	char			*sql;
	size_t			 i;

	for (i = 0; i < nitems(cases); i++) {
		sql = compile_sql(cases[i].rule, SEGMENT_SET, &q);
		if (strstr(sql, cases[i].has) == NULL)
			fail_msg("%s: lacks %s: %s", cases[i].rule,
			    cases[i].has, sql);
		if (strstr(sql, cases[i].lacks) != NULL)
			fail_msg("%s: has %s: %s", cases[i].rule,
			    cases[i].lacks, sql);
		check_numbering(sql, segment_query_nparams(q));
		free(sql);
		segment_query_free(q);
	}
}

/* Set mode groups aggregates; row mode correlates them per friend. */
static void
test_segment_compile_modes(void **state)
{
	const char		*rule = "{\"not\": {\"clicks\": {\"window\": "
	    "{\"last_days\": 7}, \"count\": {\"gte\": 2}}}}";
	struct segment_query	*q;
	char			*sql;

	sql = compile_sql(rule, SEGMENT_SET, &q);
	assert_non_null(strstr(sql, "LEFT JOIN (SELECT cl.friend_id AS fid, "
	    "count(*) AS n FROM clicks cl WHERE cl.channel_id = $1"));
	assert_non_null(strstr(sql, "GROUP BY 1) x1 ON x1.fid = f.id"));
	assert_null(strstr(sql, "LATERAL"));
	assert_non_null(strstr(sql, "(NOT ((coalesce(x1.n, 0) >= $3::bigint))"));
	free(sql);
	segment_query_free(q);

	sql = compile_sql(rule, SEGMENT_ROWS, &q);
	assert_non_null(strstr(sql, "LEFT JOIN LATERAL (SELECT count(*) AS n "
	    "FROM clicks cl WHERE cl.channel_id = $1"));
	assert_non_null(strstr(sql, "AND cl.friend_id = f.id) x1 ON true"));
	assert_null(strstr(sql, "GROUP BY"));
	assert_non_null(strstr(sql, "(NOT ((coalesce(x1.n, 0) >= $3::bigint))"));
	free(sql);
	segment_query_free(q);
}

/* List values go in one array parameter, quoted element by element. */
static void
test_segment_compile_array_literal(void **state)
{
	struct segment_query	*q;
	char			*sql;

	sql = compile_sql("{\"tags\": {\"has_any\": [\"a\\\"b\", \"c\\\\d\", "
	    "\"x,y\", \"{z}\", \"NULL\", \" \"]}}", SEGMENT_SET, &q);
	assert_int_equal(segment_query_nparams(q), 2);
	assert_string_equal(segment_query_param(q, 1),
	    "{\"a\\\"b\",\"c\\\\d\",\"x,y\",\"{z}\",\"NULL\",\" \"}");
	assert_non_null(strstr(sql, "t.name = ANY ($2::text[])"));
	free(sql);
	segment_query_free(q);

	sql = compile_sql("{\"clicks\": {\"link\": [5, 6]}}", SEGMENT_SET,
	    &q);
	assert_string_equal(segment_query_param(q, 1), "{5,6}");
	free(sql);
	segment_query_free(q);

	/* has_all compares with the number of distinct names */
	sql = compile_sql("{\"tags\": {\"has_all\": [\"a\", \"b\", \"a\"]}}",
	    SEGMENT_SET, &q);
	assert_string_equal(segment_query_param(q, 2), "2");
	assert_non_null(strstr(sql, "x1.n >= $3::bigint"));
	free(sql);
	segment_query_free(q);
}

/* Prefixes become LIKE patterns with their wildcards escaped. */
static void
test_segment_compile_prefix_escaped(void **state)
{
	struct segment_query	*q;
	char			*sql;

	sql = compile_sql("{\"page_views\": {\"url_prefix\": "
	    "\"https://s/a_b%c\\\\d\"}}", SEGMENT_SET, &q);
	assert_string_equal(segment_query_param(q, 1),
	    "https://s/a\\_b\\%c\\\\d%");
	free(sql);
	segment_query_free(q);

	sql = compile_sql("{\"interactions\": {\"postback_data\": "
	    "{\"prefix\": \"100%_off\"}}}", SEGMENT_SET, &q);
	assert_string_equal(segment_query_param(q, 2), "100\\%\\_off%");
	assert_string_equal(segment_query_param(q, 1), "postback");
	free(sql);
	segment_query_free(q);
}

/* Local dates: the first day's start to the day after the last. */
static void
test_segment_compile_dates(void **state)
{
	struct segment_query	*q;
	char			*sql;

	sql = compile_sql("{\"friend\": {\"followed_at\": {\"between\": "
	    "[\"2024-01-01\", \"2024-01-31\"]}}}", SEGMENT_SET, &q);
	assert_non_null(strstr(sql, "f.followed_at >= (($2::date)::timestamp "
	    "AT TIME ZONE (SELECT ch.timezone FROM channels ch WHERE ch.id = "
	    "$1)) AND f.followed_at < (($3::date + 1)::timestamp AT TIME "
	    "ZONE"));
	free(sql);
	segment_query_free(q);
}

/* Campaign deliveries are refused until musubi keeps them. */
static void
test_segment_compile_not_available(void **state)
{
	struct segment_error	 err;

	assert_null(compile("{\"all\": [{\"clicks\": {}}, {\"any\": "
	    "[{\"messaging\": {\"campaign\": 4}}]}]}", SEGMENT_SET, &err));
	assert_string_equal(err.code, "not_available");
	assert_string_equal(err.path, "/rule/all/1/any/0/messaging");
	assert_non_null(strstr(err.message, "not available yet"));

	assert_null(compile("{\"not\": {\"messaging\": {\"window\": "
	    "{\"last_days\": 3}}}}", SEGMENT_ROWS, &err));
	assert_string_equal(err.code, "not_available");
	assert_string_equal(err.path, "/rule/not/messaging");
}

/* The snapshot statement takes its four values after the query's. */
static void
test_segment_compile_snapshot_sql(void **state)
{
	struct segment_query	*q;
	char			*sql, *snap;

	sql = compile_sql("{\"tags\": {\"has_any\": [\"a\"]}}", SEGMENT_SET,
	    &q);
	snap = segment_snapshot_sql(q);
	assert_non_null(strstr(snap, "INSERT INTO segment_snapshot_members"));
	assert_non_null(strstr(snap, "$3::bigint, $4::text, $5::jsonb, "
	    "$6::text, (SELECT count(*) FROM m)"));
	check_numbering(snap, segment_query_nparams(q) + 4);
	free(snap);
	free(sql);
	segment_query_free(q);
}

/* segment_sql() hands out the friend-id query and its parameters. */
static void
test_segment_compile_segment_sql(void **state)
{
	struct segment_error	 err;
	struct db_params	*p;
	json_t			*j;
	char			*sql;

	j = json_loads("{\"friend\": {\"status\": \"following\"}}", 0, NULL);
	assert_int_equal(segment_sql(j, 7, &sql, &p, &err), 0);
	assert_string_equal(sql, "SELECT f.id FROM friends f WHERE "
	    "f.channel_id = $1 AND ((f.status = $2::text))");
	assert_int_equal(db_params_count(p), 2);
	free(sql);
	db_params_free(p);
	json_decref(j);

	j = json_loads("{\"friend\": {\"status\": 1}}", 0, NULL);
	assert_int_equal(segment_sql(j, 7, &sql, &p, &err), -1);
	assert_string_equal(err.path, "/friend/status");
	json_decref(j);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_segment_compile_values_are_parameters),
		cmocka_unit_test(test_segment_compile_channel_scope),
		cmocka_unit_test(test_segment_compile_rollups),
		cmocka_unit_test(test_segment_compile_modes),
		cmocka_unit_test(test_segment_compile_array_literal),
		cmocka_unit_test(test_segment_compile_prefix_escaped),
		cmocka_unit_test(test_segment_compile_dates),
		cmocka_unit_test(test_segment_compile_not_available),
		cmocka_unit_test(test_segment_compile_snapshot_sql),
		cmocka_unit_test(test_segment_compile_segment_sql),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
