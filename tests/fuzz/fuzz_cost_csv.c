/* SPDX-License-Identifier: ISC */
/*
 * fuzz_cost_csv.c -- libFuzzer target for acquire_costs_parse_csv(), the
 * reader behind POST .../costs.csv.  Beyond "no crash, no leak", it checks
 * what api_sources.c relies on: the result is "ok" exactly when there are
 * no errors; every row and error has a record number >= 1 (rows >= 2, in
 * increasing order); every row holds a well-formed code, a normalized date
 * and amount; every message is printable ASCII; and both JSON renderings
 * succeed and contain one element per row and per error.
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DMUSUBI_FUZZ=ON
 * Run:   build-fuzz/tests/fuzz_cost_csv -max_total_time=60 CORPUS
 *        (seed CORPUS with a few CSV files: see docs/acquisition.md)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/acquire.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* Abort unless s is printable ASCII. */
static void
fuzz_ascii(const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s < ' ' || *s > '~')
			abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct acquire_costs	 c;
	const char		*why;
	char			 date[11], dec[32];
	json_t			*j;
	size_t			 i;
	int			 rc, last = 1;

	rc = acquire_costs_parse_csv((const char *)data, len, &c);
	if ((rc == 0) != (c.nerrors == 0))
		abort();
	for (i = 0; i < c.nrows; i++) {
		if (c.rows[i].row <= last)
			abort();
		last = c.rows[i].row;
		if (!acquire_code_ok(c.rows[i].source) ||
		    acquire_parse_date(c.rows[i].date, date, &why) != 0 ||
		    strcmp(date, c.rows[i].date) != 0 ||
		    acquire_parse_decimal(c.rows[i].spend, dec, sizeof dec,
		    &why) != 0 || strcmp(dec, c.rows[i].spend) != 0)
			abort();
		if (c.rows[i].adds < 0 || c.rows[i].clicks < 0 ||
		    c.rows[i].impressions < 0)
			abort();
	}
	for (i = 0; i < c.nerrors; i++) {
		if (c.errors[i].row < 1)
			abort();
		fuzz_ascii(c.errors[i].field);
		fuzz_ascii(c.errors[i].message);
	}
	j = acquire_costs_json(&c);
	if (j == NULL || json_array_size(j) != c.nrows)
		abort();
	json_decref(j);
	j = acquire_costs_errors_json(&c);
	if (j == NULL || json_array_size(j) != c.nerrors)
		abort();
	json_decref(j);
	acquire_costs_free(&c);
	return (0);
}
