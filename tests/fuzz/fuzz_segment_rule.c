/* SPDX-License-Identifier: ISC */
/*
 * fuzz_segment_rule.c -- libFuzzer target for segment rules: any JSON a
 * marketer may post as a rule goes through segment_rule_parse() and, when
 * accepted, segment_compile() in both modes.  Beyond "no crash, no leak",
 * it checks the promises the API relies on:
 *	- a refusal has a code, a message and a JSON pointer under "/rule"
 *	- an accepted rule is within the depth and condition limits
 *	- the only quoted literal in the compiled SQL is musubi's own
 *	  ('counted'): no value of the rule is ever spliced into SQL text
 *	- every $n placeholder is a parameter the query supplies
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DMUSUBI_FUZZ=ON
 * Run:   build-fuzz/tests/fuzz_segment_rule -max_total_time=60 CORPUS
 */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "musubi/segment.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* Abort unless every '...' literal in sql is one musubi wrote itself. */
static void
fuzz_check_literals(const char *sql)
{
	const char	*p = sql, *end;

	while ((p = strchr(p, '\'')) != NULL) {
		if ((end = strchr(p + 1, '\'')) == NULL)
			abort();
		if (end - p - 1 != 7 || strncmp(p + 1, "counted", 7) != 0)
			abort();
		p = end + 1;
	}
}

/* Abort unless every $n is in 1..nparams. */
static void
fuzz_check_params(const char *sql, int nparams)
{
	const char	*p;
	long		 n;

	for (p = sql; (p = strchr(p, '$')) != NULL; p++) {
		if (!isdigit((unsigned char)p[1]))
			abort();
		n = strtol(p + 1, NULL, 10);
		if (n < 1 || n > nparams)
			abort();
	}
}

/* Parse, validate and compile one input. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct segment_error	 err;
	struct segment_rule	*r;
	struct segment_query	*q;
	json_t			*j;
	char			*sql;
	int			 mode;

	if ((j = json_loadb((const char *)data, size, JSON_DECODE_ANY |
	    JSON_REJECT_DUPLICATES, NULL)) == NULL)
		return (0);
	r = segment_rule_parse(j, "/rule", &err);
	json_decref(j);
	if (r == NULL) {
		if (err.code == NULL || err.message[0] == '\0' ||
		    strncmp(err.path, "/rule", 5) != 0)
			abort();
		return (0);
	}
	if (r->depth > SEGMENT_MAX_DEPTH ||
	    r->conditions > SEGMENT_MAX_CONDITIONS || r->conditions < 1)
		abort();
	for (mode = SEGMENT_SET; mode <= SEGMENT_ROWS; mode++) {
		q = segment_compile(r, 1, mode, &err);
		if (q == NULL) {
			if (strcmp(err.code, "not_available") != 0 ||
			    strncmp(err.path, "/rule", 5) != 0)
				abort();
			continue;
		}
		sql = segment_query_select(q, "f.id", NULL);
		fuzz_check_literals(sql);
		fuzz_check_params(sql, segment_query_nparams(q));
		free(sql);
		segment_query_free(q);
	}
	segment_rule_free(r);
	return (0);
}
