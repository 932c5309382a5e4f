/* SPDX-License-Identifier: ISC */
/*
 * test_acquire.c -- the pure half of acquisition (acquire.h): source codes,
 * the LINE Login secrets derived from a state (vectors computed with
 * Python hmac/hashlib), the authorize URL, the value parsers, and the cost
 * CSV reader: good files in their variants (BOM, CRLF, quotes, aliases,
 * blank lines, yen signs), and bad ones whose every bad row is listed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/acquire.h"

#define STATE	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"

/* Parse a NUL-terminated CSV. */
static int
parse(const char *s, struct acquire_costs *c)
{
	return (acquire_costs_parse_csv(s, strlen(s), c));
}

/* The sorted, distinct row numbers of the errors, as "3,5,9". */
static void
error_rows(const struct acquire_costs *c, char *out, size_t len)
{
	int	 last = 0, best;
	size_t	 i, o = 0;

	out[0] = '\0';
	for (;;) {
		best = 0;
		for (i = 0; i < c->nerrors; i++) {
			if (c->errors[i].row > last && (best == 0 ||
			    c->errors[i].row < best))
				best = c->errors[i].row;
		}
		if (best == 0)
			break;
		o += (size_t)snprintf(out + o, len - o, "%s%d", o ? "," : "",
		    best);
		last = best;
	}
}

/* Codes: lower-case letters, digits, _ and -, 3 to 64, not "callback". */
static void
test_code_ok(void **state)
{
	char	 longc[70], *g;

	assert_true(acquire_code_ok("abc"));
	assert_true(acquire_code_ok("spring-ad_01"));
	assert_true(acquire_code_ok("0qr"));
	assert_false(acquire_code_ok("ab"));
	assert_false(acquire_code_ok("Abc"));
	assert_false(acquire_code_ok("-abc"));
	assert_false(acquire_code_ok("a b"));
	assert_false(acquire_code_ok("callback"));
	assert_false(acquire_code_ok("ab/c"));
	assert_false(acquire_code_ok(""));
	assert_false(acquire_code_ok(NULL));
	memset(longc, 'a', 64);
	longc[64] = '\0';
	assert_true(acquire_code_ok(longc));
	longc[64] = 'a';
	longc[65] = '\0';
	assert_false(acquire_code_ok(longc));
	g = acquire_code_generate();
	assert_int_equal(strlen(g), 8);
	assert_true(acquire_code_ok(g));
	free(g);
}

/* Client text is cut to whole characters; bad bytes become '?'. */
static void
test_clean_text(void **state)
{
	char	*s;

	s = acquire_clean_text("Mozilla/5.0 \xe3\x81\x82", 100);
	assert_string_equal(s, "Mozilla/5.0 \xe3\x81\x82");
	free(s);
	s = acquire_clean_text("a\xff\xfe" "b\x01" "c\td", 100);
	assert_string_equal(s, "a??b?c\td");
	free(s);
	/* A 3-byte character does not fit in 2 bytes: it is dropped whole. */
	s = acquire_clean_text("a\xe3\x81\x82", 2);
	assert_string_equal(s, "a");
	free(s);
	/* Truncated, overlong and surrogate sequences. */
	s = acquire_clean_text("\xe3\x81", 10);
	assert_string_equal(s, "??");
	free(s);
	s = acquire_clean_text("\xc0\xaf\xed\xa0\x80", 10);
	assert_string_equal(s, "?????");
	free(s);
	s = acquire_clean_text("", 10);
	assert_string_equal(s, "");
	free(s);
}

/* The nonce, verifier and challenge match Python's. */
static void
test_login_secrets(void **state)
{
	unsigned char	 key[TOKEN_KEY_LEN];
	char		 n[ACQUIRE_SECRET_LEN + 1], v[ACQUIRE_SECRET_LEN + 1];
	char		 c[ACQUIRE_SECRET_LEN + 1], n2[ACQUIRE_SECRET_LEN + 1];
	size_t		 i;

	for (i = 0; i < sizeof key; i++)
		key[i] = (unsigned char)i;
	acquire_login_secrets(key, STATE, n, v, c);
	assert_string_equal(n, "EOELUGukUghQ0doonbFwIzqQvAhdMrQkjig3kdAPo-I");
	assert_string_equal(v, "XF8fHCe3eaMm1ZudIBwVPGQ32vH9t7_UuvsZZx6vISc");
	assert_string_equal(c, "7Njv4Ti6UrtEtqFc25C_-pkMl6tuaI-vTqqX-EViyxc");
	/* Another state, or another key: other secrets. */
	acquire_login_secrets(key, STATE "x", n2, v, c);
	assert_string_not_equal(n, n2);
	key[0] ^= 1;
	acquire_login_secrets(key, STATE, n2, v, c);
	assert_string_not_equal(n, n2);
}

/* The authorize URL carries every parameter, encoded. */
static void
test_authorize_url(void **state)
{
	char	*u = acquire_authorize_url("https://access.line.me",
	    "1234567890", "https://m.example/f/callback", STATE, "n-1", "c_2");

	assert_string_equal(u, "https://access.line.me/oauth2/v2.1/authorize?"
	    "response_type=code&client_id=1234567890&redirect_uri="
	    "https%3A%2F%2Fm.example%2Ff%2Fcallback&state=" STATE
	    "&scope=profile%20openid&nonce=n-1&bot_prompt=aggressive"
	    "&code_challenge=c_2&code_challenge_method=S256");
	free(u);
}

/* Dates: ISO or slashes, real days only. */
static void
test_parse_date(void **state)
{
	char		 d[11];
	const char	*why;

	assert_int_equal(acquire_parse_date("2026-03-01", d, &why), 0);
	assert_string_equal(d, "2026-03-01");
	assert_int_equal(acquire_parse_date("2026/3/1", d, &why), 0);
	assert_string_equal(d, "2026-03-01");
	assert_int_equal(acquire_parse_date("2024-02-29", d, &why), 0);
	assert_int_equal(acquire_parse_date("2026-02-29", d, &why), -1);
	assert_int_equal(acquire_parse_date("2026-13-01", d, &why), -1);
	assert_int_equal(acquire_parse_date("2026-04-31", d, &why), -1);
	assert_int_equal(acquire_parse_date("1999-01-01", d, &why), -1);
	assert_int_equal(acquire_parse_date("2026-03/01", d, &why), -1);
	assert_int_equal(acquire_parse_date("2026-03-01x", d, &why), -1);
	assert_int_equal(acquire_parse_date("20260301", d, &why), -1);
	assert_int_equal(acquire_parse_date("", d, &why), -1);
	assert_non_null(why);
}

/* Amounts: digits, thousands commas, up to 4 decimals, a yen sign. */
static void
test_parse_decimal(void **state)
{
	char		 d[32];
	const char	*why;

	assert_int_equal(acquire_parse_decimal("12000", d, sizeof d, &why), 0);
	assert_string_equal(d, "12000");
	assert_int_equal(acquire_parse_decimal("1,234.50", d, sizeof d, &why),
	    0);
	assert_string_equal(d, "1234.50");
	assert_int_equal(acquire_parse_decimal("\xc2\xa5" "3,000", d, sizeof d,
	    &why), 0);
	assert_string_equal(d, "3000");
	assert_int_equal(acquire_parse_decimal("\xef\xbf\xa5" "0.5", d,
	    sizeof d, &why), 0);
	assert_string_equal(d, "0.5");
	assert_int_equal(acquire_parse_decimal("999999999999999.9999", d,
	    sizeof d, &why), 0);
	assert_int_equal(acquire_parse_decimal("1000000000000000", d,
	    sizeof d, &why), -1);
	assert_int_equal(acquire_parse_decimal("1.23456", d, sizeof d, &why),
	    -1);
	assert_int_equal(acquire_parse_decimal("-1", d, sizeof d, &why), -1);
	assert_int_equal(acquire_parse_decimal("1,23", d, sizeof d, &why), -1);
	assert_int_equal(acquire_parse_decimal("1234,567", d, sizeof d, &why),
	    -1);
	assert_int_equal(acquire_parse_decimal(",123", d, sizeof d, &why), -1);
	assert_int_equal(acquire_parse_decimal("1.", d, sizeof d, &why), -1);
	assert_int_equal(acquire_parse_decimal(".5", d, sizeof d, &why), -1);
	assert_int_equal(acquire_parse_decimal("1e3", d, sizeof d, &why), -1);
	assert_int_equal(acquire_parse_decimal("", d, sizeof d, &why), -1);
}

/* Counts and currencies. */
static void
test_parse_count_currency(void **state)
{
	int64_t		 v;
	char		 c[4];
	const char	*why;

	assert_int_equal(acquire_parse_count("1,200", 1000000, &v, &why), 0);
	assert_int_equal(v, 1200);
	assert_int_equal(acquire_parse_count("0", 10, &v, &why), 0);
	assert_int_equal(v, 0);
	assert_int_equal(acquire_parse_count("11", 10, &v, &why), -1);
	assert_int_equal(acquire_parse_count("1.5", 10, &v, &why), -1);
	assert_int_equal(acquire_parse_count("-1", 10, &v, &why), -1);
	assert_int_equal(acquire_parse_count("99999999999999999", INT64_MAX,
	    &v, &why), -1);
	assert_int_equal(acquire_parse_currency("jpy", c, &why), 0);
	assert_string_equal(c, "JPY");
	assert_int_equal(acquire_parse_currency("JP", c, &why), -1);
	assert_int_equal(acquire_parse_currency("JPYY", c, &why), -1);
	assert_int_equal(acquire_parse_currency("J1Y", c, &why), -1);
}

/* A good file in its variants. */
static void
test_csv_good(void **state)
{
	struct acquire_costs	 c;

	assert_int_equal(parse("\xef\xbb\xbf" "Source, Date ,SPEND,currency,"
	    "impressions,clicks,friend_adds\r\n"
	    "ad-a,2026-03-01,\"1,500.25\",jpy,100,10,5\r\n"
	    "\r\n"
	    "\"ad-b\",2026/3/2,\xc2\xa5" "800,,,,\r\n"
	    "ad-c , 2026-03-03 , 0 ,JPY,\"1,000\",\"\",0", &c), 0);
	assert_int_equal(c.nerrors, 0);
	assert_int_equal(c.nrows, 3);
	assert_int_equal(c.rows[0].row, 2);
	assert_string_equal(c.rows[0].source, "ad-a");
	assert_string_equal(c.rows[0].date, "2026-03-01");
	assert_string_equal(c.rows[0].spend, "1500.25");
	assert_string_equal(c.rows[0].currency, "JPY");
	assert_true(c.rows[0].has_impressions && c.rows[0].has_clicks &&
	    c.rows[0].has_adds);
	assert_int_equal(c.rows[0].adds, 5);
	/* Row 3 was blank; it still counts as a row. */
	assert_int_equal(c.rows[1].row, 4);
	assert_string_equal(c.rows[1].date, "2026-03-02");
	assert_string_equal(c.rows[1].spend, "800");
	assert_string_equal(c.rows[1].currency, "");
	assert_false(c.rows[1].has_impressions || c.rows[1].has_clicks ||
	    c.rows[1].has_adds);
	assert_int_equal(c.rows[2].row, 5);
	assert_string_equal(c.rows[2].source, "ad-c");
	assert_int_equal(c.rows[2].impressions, 1000);
	assert_false(c.rows[2].has_clicks);
	assert_true(c.rows[2].has_adds);
	acquire_costs_free(&c);

	/* Aliases, LF only, a quoted field over two lines in another column. */
	assert_int_equal(parse("code,day,cost,adds\nad-a,2026-03-01,1,2\n", &c),
	    0);
	assert_int_equal(c.nrows, 1);
	assert_int_equal(c.rows[0].adds, 2);
	acquire_costs_free(&c);
}

/* Every bad row is listed, with its record number. */
static void
test_csv_bad_rows(void **state)
{
	struct acquire_costs	 c;
	char			 rows[128];

	assert_int_equal(parse("source,date,spend,friend_adds\n"
	    "ad-a,2026-03-01,100,1\n"		/* 2 ok */
	    "ad-a,2026-02-30,100,1\n"		/* 3 no such day */
	    "Bad Code,2026-03-01,100,1\n"	/* 4 not a code */
	    "ad-a,2026-03-01,,1\n"		/* 5 empty spend */
	    "ad-a,2026-03-01,100\n"		/* 6 too few fields */
	    "ad-a,2026-03-01,100,1,9\n"		/* 7 too many */
	    "ad-a,2026-03-01,1x,1.5\n"		/* 8 two problems */
	    "ad-a,2026-03-01,\"100\"x,1\n"	/* 9 text after a quote */
	    "ad-a,2026-03-01,1\"0,1\n"		/* 10 stray quote */
	    "ad-a,2026-03-04,100,1\n"		/* 11 ok */
	    "ad-a,2026-03-05,\"100,1\n", &c), -1);	/* 12 unterminated */
	error_rows(&c, rows, sizeof rows);
	assert_string_equal(rows, "3,4,5,6,7,8,9,10,12");
	assert_int_equal(c.nrows, 2);
	assert_int_equal(c.rows[0].row, 2);
	assert_int_equal(c.rows[1].row, 11);
	acquire_costs_free(&c);
}

/* Header problems stop at row 1; empty files say so. */
static void
test_csv_header(void **state)
{
	static const char	 nul[] =
	    "source,date,spend\na\0b,2026-03-01,1\n";
	struct acquire_costs	 c;
	char			 rows[64];

	assert_int_equal(parse("", &c), -1);
	error_rows(&c, rows, sizeof rows);
	assert_string_equal(rows, "1");
	acquire_costs_free(&c);
	assert_int_equal(parse("source,date,spend\n", &c), -1);
	error_rows(&c, rows, sizeof rows);
	assert_string_equal(rows, "2");
	acquire_costs_free(&c);
	assert_int_equal(parse("source,date,colour,spend\nx,y,z,1\n", &c), -1);
	assert_int_equal(c.nerrors, 1);
	assert_non_null(strstr(c.errors[0].message, "colour"));
	acquire_costs_free(&c);
	assert_int_equal(parse("source,date\nad-a,2026-03-01\n", &c), -1);
	assert_string_equal(c.errors[0].field, "spend");
	acquire_costs_free(&c);
	assert_int_equal(parse("source,date,spend,cost\n", &c), -1);
	assert_int_equal(c.nerrors, 1);
	acquire_costs_free(&c);
	/* A NUL byte and an over-long field are errors, not truncations. */
	assert_int_equal(acquire_costs_parse_csv(nul, sizeof nul - 1, &c),
	    -1);
	error_rows(&c, rows, sizeof rows);
	assert_string_equal(rows, "2");
	acquire_costs_free(&c);
}

/* The JSON handed to musubi_acq_costs_import(). */
static void
test_csv_json(void **state)
{
	struct acquire_costs	 c;
	json_t			*j;
	char			*s;

	assert_int_equal(parse("source,date,spend,friend_adds,currency\n"
	    "ad-a,2026-03-01,10.5,3,\n", &c), 0);
	j = acquire_costs_json(&c);
	s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(s, "[{\"adds\":3,\"date\":\"2026-03-01\","
	    "\"row\":2,\"source\":\"ad-a\",\"spend\":\"10.5\"}]");
	free(s);
	json_decref(j);
	acquire_costs_error(&c, 7, "spend", "bad %s", "x");
	j = acquire_costs_errors_json(&c);
	s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(s, "[{\"field\":\"spend\",\"message\":\"bad x\","
	    "\"row\":7}]");
	free(s);
	json_decref(j);
	acquire_costs_free(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_code_ok),
		cmocka_unit_test(test_clean_text),
		cmocka_unit_test(test_login_secrets),
		cmocka_unit_test(test_authorize_url),
		cmocka_unit_test(test_parse_date),
		cmocka_unit_test(test_parse_decimal),
		cmocka_unit_test(test_parse_count_currency),
		cmocka_unit_test(test_csv_good),
		cmocka_unit_test(test_csv_bad_rows),
		cmocka_unit_test(test_csv_header),
		cmocka_unit_test(test_csv_json),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
