/* SPDX-License-Identifier: ISC */
/*
 * fuzz_line_parse.c -- libFuzzer target for line_parse(): any bytes a
 * signed LINE delivery may carry.  Beyond "no crash, no leak", it checks
 * the invariants line_intake.c relies on when it builds the inbox rows:
 * every record has an event id and a type, payload is set, a timestamp is
 * either -1 or in range, and no string the parser hands out holds a NUL.
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DMUSUBI_FUZZ=ON
 * Run:   build-fuzz/tests/fuzz_line_parse -max_total_time=60 CORPUS \
 *            webhooks/line
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "musubi/line.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* Abort unless every string inside j is NUL-free (the parser's promise). */
static void
fuzz_check_strings(const json_t *j, int depth)
{
	const char	*key;
	json_t		*v;
	size_t		 i;

	/*
	 * line.c sanitises 64 levels below the root; an event sits two
	 * below it.  (Deeper strings keep their NUL: see the report.)
	 */
	if (depth > 60)
		return;
	if (json_is_object(j)) {
		json_object_foreach((json_t *)j, key, v)
			fuzz_check_strings(v, depth + 1);
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, v)
			fuzz_check_strings(v, depth + 1);
	} else if (json_is_string(j)) {
		if (strlen(json_string_value(j)) != json_string_length(j))
			abort();
	}
}

/* Parse one input and check the records. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct line_delivery	 d;
	const struct line_event_rec *e;
	char			*cause = NULL;
	size_t			 i;

	if (line_parse(data, size, &d, &cause) != 0) {
		if (cause == NULL || d.nevents != 0)
			abort();
		free(cause);
		return (0);
	}
	for (i = 0; i < d.nevents; i++) {
		e = &d.events[i];
		if (e->event_id == NULL || *e->event_id == '\0' ||
		    strlen(e->event_id) > 2 + 64 + LINE_EVENT_ID_MAX ||
		    e->type == NULL || e->payload == NULL)
			abort();
		if (e->ts_ms < -1 || e->ts_ms >= 32503680000000LL)
			abort();
		if (e->problem == NULL && (*e->type == '\0' || e->ts_ms < 0))
			abort();
		if (e->user_id != NULL && e->problem == NULL &&
		    !line_is_user_id(e->user_id))
			abort();
		fuzz_check_strings(e->payload, 0);
	}
	line_delivery_free(&d);
	return (0);
}
