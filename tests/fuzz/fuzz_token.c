/* SPDX-License-Identifier: ISC */
/*
 * fuzz_token.c -- libFuzzer target for token_decode(): any bytes a URL
 * path segment or query value may carry, decoded as both kinds with a
 * fixed key.  Beyond "no crash, no leak", it checks what track.c relies
 * on: a refused token leaves the output zeroed; an accepted one has a
 * nonzero channel, no negative id, the kind asked for, and re-encodes to
 * a token that decodes to the same fields.
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DMUSUBI_FUZZ=ON
 * Run:   build-fuzz/tests/fuzz_token -max_total_time=60 CORPUS
 *        (seed CORPUS with a few tokens: see docs/tracking.md)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/token.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const unsigned char fuzz_key[TOKEN_KEY_LEN] = {
	0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
	16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
};

/* Check one decode of s as kind k. */
static void
fuzz_one(const char *s, enum token_kind k)
{
	struct token	 t, again;
	char		*enc;

	memset(&t, 0x5a, sizeof t);
	if (token_decode(fuzz_key, s, k, &t) != 0) {
		if (t.channel_id != 0 || t.link_id != 0 || t.friend_id != 0 ||
		    t.run_id != 0 || t.issued_at != 0)
			abort();
		return;
	}
	if (t.kind != k || t.channel_id <= 0 || t.link_id < 0 ||
	    t.friend_id < 0 || t.run_id < 0 || t.issued_at < 0)
		abort();
	if (k == TOKEN_CLICK && t.issued_at != 0)
		abort();
	if (strlen(s) > TOKEN_MAX)
		abort();
	enc = token_encode(fuzz_key, &t);
	if (token_decode(fuzz_key, enc, k, &again) != 0 ||
	    memcmp(&t, &again, sizeof t) != 0)
		abort();
	free(enc);
}

/* Decode one input as both kinds. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	*s = malloc(size + 1);

	if (s == NULL)
		return (0);
	memcpy(s, data, size);
	s[size] = '\0';
	fuzz_one(s, TOKEN_CLICK);
	fuzz_one(s, TOKEN_ATTRIBUTION);
	free(s);
	return (0);
}
