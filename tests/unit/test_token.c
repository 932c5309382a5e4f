/* SPDX-License-Identifier: ISC */
/*
 * test_token.c -- the signed URL tokens of token.c: round trips of both
 * kinds from tiny to INT64_MAX ids, the wire format pinned by vectors
 * computed independently (Python hmac/base64), one kind never passing for
 * the other, and refusal of every damaged form: each single-character
 * change, truncation, extension, stray '.', foreign alphabet, empty, NULL,
 * over-long input, another key, a zero channel id.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/token.h"

/* Vectors: key bytes 0..31; see the Python in the report / docs. */
#define V_CLICK		"YwECAwA.Nmbd56uLY4nu7_oi"	/* c 1,2,3,0 */
#define V_ATTR		"YQECAwCA4s-qBg.BEKigZzPAd-vt4Io" /* a 1,2,3,0,1.7e9 */
#define V_MAX		"Y___________f___________f___________f___________" \
			"fw.5xkmmKfcXEJ_QzDx"		/* c, all INT64_MAX */

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static unsigned char key_a[TOKEN_KEY_LEN];
static unsigned char key_b[TOKEN_KEY_LEN];

/* Fill the two keys: a = 0..31 (the vectors' key), b = a with one bit. */
static int
setup_keys(void **state)
{
	size_t	 i;

	for (i = 0; i < TOKEN_KEY_LEN; i++)
		key_a[i] = key_b[i] = (unsigned char)i;
	key_b[31] ^= 1;
	return (0);
}

static struct token
mk(enum token_kind kind, int64_t ch, int64_t link, int64_t fr, int64_t run,
    int64_t at)
{
	struct token	 t;

	memset(&t, 0, sizeof t);
	t.kind = kind;
	t.channel_id = ch;
	t.link_id = link;
	t.friend_id = fr;
	t.run_id = run;
	t.issued_at = at;
	return (t);
}

/* True when every byte of the token is zero (decode's failure promise). */
static int
is_zeroed(const struct token *t)
{
	static const struct token	 zero;

	return (t->kind == zero.kind && t->channel_id == 0 &&
	    t->link_id == 0 && t->friend_id == 0 && t->run_id == 0 &&
	    t->issued_at == 0);
}

/* Decode s expecting failure; the output must come back zeroed. */
static void
assert_rejected(const unsigned char *key, const char *s, enum token_kind k)
{
	struct token	 out;

	memset(&out, 0xa5, sizeof out);
	if (token_decode(key, s, k, &out) == 0)
		fail_msg("token accepted: \"%s\" as %c", s ? s : "(null)", k);
	assert_true(is_zeroed(&out));
}

/* Encode, check the alphabet, decode, compare. */
static void
roundtrip(const struct token *in)
{
	struct token	 out;
	char		*s = token_encode(key_a, in);
	size_t		 i, dots = 0;

	assert_non_null(s);
	assert_true(strlen(s) <= TOKEN_MAX);
	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] == '.')
			dots++;
		else if (strchr(b64url, s[i]) == NULL)
			fail_msg("not URL-safe: '%c' in %s", s[i], s);
	}
	assert_int_equal(dots, 1);
	assert_int_equal(token_decode(key_a, s, in->kind, &out), 0);
	assert_int_equal(out.kind, in->kind);
	assert_true(out.channel_id == in->channel_id);
	assert_true(out.link_id == in->link_id);
	assert_true(out.friend_id == in->friend_id);
	assert_true(out.run_id == in->run_id);
	if (in->kind == TOKEN_ATTRIBUTION)
		assert_true(out.issued_at == in->issued_at);
	else
		assert_true(out.issued_at == 0);
	free(s);
}

static const int64_t ids[] = {
	1, 2, 127, 128, 255, 16383, 16384, 1000000, 2147483647LL,
	2147483648LL, 4294967296LL, (1LL << 56) - 1, 1LL << 56,
	(1LL << 62), INT64_MAX - 1, INT64_MAX,
};

static void
test_token_click_roundtrip_small_and_huge(void **state)
{
	struct token	 t;
	size_t		 i, j;

	for (i = 0; i < nitems(ids); i++) {
		for (j = 0; j < nitems(ids); j++) {
			t = mk(TOKEN_CLICK, ids[i], ids[j], ids[(i + j) %
			    nitems(ids)], ids[(i * 7 + j) % nitems(ids)], 0);
			roundtrip(&t);
		}
		t = mk(TOKEN_CLICK, ids[i], ids[i], 0, 0, 0);
		roundtrip(&t);
	}
}

static void
test_token_attribution_roundtrip_small_and_huge(void **state)
{
	struct token	 t;
	size_t		 i, j;

	for (i = 0; i < nitems(ids); i++) {
		for (j = 0; j < nitems(ids); j++) {
			t = mk(TOKEN_ATTRIBUTION, ids[i], ids[j], ids[j], 0,
			    ids[(i + j) % nitems(ids)]);
			roundtrip(&t);
		}
		t = mk(TOKEN_ATTRIBUTION, ids[i], 1, 0, 0, 0);
		roundtrip(&t);
		t = mk(TOKEN_ATTRIBUTION, ids[i], ids[i], ids[i], ids[i],
		    1700000000);
		roundtrip(&t);
	}
}

static void
test_token_all_int64_max_fits_and_is_url_safe(void **state)
{
	struct token	 t = mk(TOKEN_ATTRIBUTION, INT64_MAX, INT64_MAX,
	    INT64_MAX, INT64_MAX, INT64_MAX);
	char		*s = token_encode(key_a, &t);

	/* The longest token there is still fits TOKEN_MAX. */
	assert_true(strlen(s) < TOKEN_MAX);
	free(s);
	roundtrip(&t);
}

static void
test_token_known_vectors(void **state)
{
	struct token	 t = mk(TOKEN_CLICK, 1, 2, 3, 0, 0), out;
	char		*s;

	s = token_encode(key_a, &t);
	assert_string_equal(s, V_CLICK);
	free(s);
	t = mk(TOKEN_ATTRIBUTION, 1, 2, 3, 0, 1700000000);
	s = token_encode(key_a, &t);
	assert_string_equal(s, V_ATTR);
	free(s);
	t = mk(TOKEN_CLICK, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, 0);
	s = token_encode(key_a, &t);
	assert_string_equal(s, V_MAX);
	free(s);
	assert_int_equal(token_decode(key_a, V_ATTR, TOKEN_ATTRIBUTION, &out),
	    0);
	assert_true(out.issued_at == 1700000000);
	assert_true(out.friend_id == 3);
}

static void
test_token_click_never_decodes_as_attribution(void **state)
{
	struct token	 t;
	size_t		 i;
	char		*s;

	for (i = 0; i < nitems(ids); i++) {
		t = mk(TOKEN_CLICK, ids[i], ids[i], ids[i], ids[i], 0);
		s = token_encode(key_a, &t);
		assert_rejected(key_a, s, TOKEN_ATTRIBUTION);
		free(s);
	}
	assert_rejected(key_a, V_CLICK, TOKEN_ATTRIBUTION);
}

static void
test_token_attribution_never_decodes_as_click(void **state)
{
	struct token	 t;
	size_t		 i;
	char		*s;

	for (i = 0; i < nitems(ids); i++) {
		/* issued_at 0 makes the body a click body plus one byte. */
		t = mk(TOKEN_ATTRIBUTION, ids[i], ids[i], ids[i], ids[i], 0);
		s = token_encode(key_a, &t);
		assert_rejected(key_a, s, TOKEN_CLICK);
		free(s);
	}
	assert_rejected(key_a, V_ATTR, TOKEN_CLICK);
}

/*
 * A click body relabelled as an attribution one (or the reverse) and
 * re-signed by someone without the key cannot pass: the kind byte is
 * under the signature, so swapping it breaks the MAC.
 */
static void
test_token_kind_byte_is_signed(void **state)
{
	char	 s[] = V_CLICK;

	/* 'Y' 'w' -> 'Y' 'Q' turns byte 0 from 'c' (0x63) into 'a' (0x61). */
	assert_int_equal(s[1], 'w');
	s[1] = 'Q';
	assert_rejected(key_a, s, TOKEN_ATTRIBUTION);
	assert_rejected(key_a, s, TOKEN_CLICK);
}

/*
 * Every single-character change of the signature (16 characters, 96 bits,
 * no slack bits) and of the body, to any other character of the alphabet,
 * '.', or a few outsiders, is refused.
 */
static void
mutate_all(const char *good, enum token_kind kind, size_t from, size_t to,
    char *accepted, size_t acclen)
{
	static const char	 extra[] = ".+/= %~\x7f\x80\xff";
	char			 alpha[sizeof b64url + sizeof extra];
	char			 buf[TOKEN_MAX + 2];
	struct token		 out;
	size_t			 i, j;

	snprintf(alpha, sizeof alpha, "%s%s", b64url, extra);
	for (i = from; i < to; i++) {
		for (j = 0; alpha[j] != '\0'; j++) {
			if (alpha[j] == good[i])
				continue;
			snprintf(buf, sizeof buf, "%s", good);
			buf[i] = alpha[j];
			if (token_decode(key_a, buf, kind, &out) == 0 &&
			    strlen(accepted) + strlen(buf) + 3 < acclen) {
				strcat(accepted, " ");
				strcat(accepted, buf);
			}
		}
	}
}

static void
test_token_every_signature_char_change_rejected(void **state)
{
	const char	*goods[] = { V_CLICK, V_ATTR, V_MAX };
	enum token_kind	 kinds[] = { TOKEN_CLICK, TOKEN_ATTRIBUTION,
	    TOKEN_CLICK };
	char		 acc[4096];
	size_t		 i, dot;

	for (i = 0; i < nitems(goods); i++) {
		acc[0] = '\0';
		dot = (size_t)(strchr(goods[i], '.') - goods[i]);
		mutate_all(goods[i], kinds[i], dot, strlen(goods[i]), acc,
		    sizeof acc);
		if (acc[0] != '\0')
			fail_msg("mutations of %s accepted:%s", goods[i], acc);
	}
}

/*
 * The same for the body.  The body's last base64 character carries 2 or 4
 * slack bits when the body length is not a multiple of 3 (a click token
 * of small ids is 5 bytes: 7 characters, 42 bits for 40).  A decoder that
 * ignores those bits lets several strings stand for one token.
 */
static void
test_token_every_body_char_change_rejected(void **state)
{
	const char	*goods[] = { V_CLICK, V_ATTR, V_MAX };
	enum token_kind	 kinds[] = { TOKEN_CLICK, TOKEN_ATTRIBUTION,
	    TOKEN_CLICK };
	char		 acc[4096];
	size_t		 i, dot, any = 0;

	acc[0] = '\0';
	for (i = 0; i < nitems(goods); i++) {
		dot = (size_t)(strchr(goods[i], '.') - goods[i]);
		mutate_all(goods[i], kinds[i], 0, dot, acc, sizeof acc);
		any += acc[0] != '\0';
	}
	if (any)
		fail_msg("altered tokens accepted (non-canonical base64 in "
		    "the body):%s", acc);
}

/*
 * A sample of 200 tokens, every single-character change of each (but the
 * body's last character, which the test above covers).
 */
static void
test_token_char_changes_over_many_tokens(void **state)
{
	struct token	 t;
	char		*s, acc[8192];
	size_t		 dot;
	int		 i;
	uint64_t	 x = 88172645463325252ULL;

	acc[0] = '\0';
	for (i = 0; i < 200; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		t = mk(i % 2 ? TOKEN_CLICK : TOKEN_ATTRIBUTION,
		    (int64_t)(x >> (1 + i % 60)) | 1, (int64_t)(x >> 40) + 1,
		    (int64_t)(x % 100000), i % 3 ? 0 : i,
		    1700000000 + i);
		s = token_encode(key_a, &t);
		dot = (size_t)(strchr(s, '.') - s);
		/* The body's last character: see the test above. */
		mutate_all(s, t.kind, 0, dot - 1, acc, sizeof acc);
		mutate_all(s, t.kind, dot, strlen(s), acc, sizeof acc);
		free(s);
	}
	if (acc[0] != '\0')
		fail_msg("altered tokens accepted:%s", acc);
}

static void
test_token_truncation_rejected(void **state)
{
	const char	*goods[] = { V_CLICK, V_ATTR, V_MAX };
	enum token_kind	 kinds[] = { TOKEN_CLICK, TOKEN_ATTRIBUTION,
	    TOKEN_CLICK };
	char		 buf[TOKEN_MAX + 1];
	size_t		 i, n, len;

	for (i = 0; i < nitems(goods); i++) {
		len = strlen(goods[i]);
		for (n = 0; n < len; n++) {
			/* Prefixes... */
			memcpy(buf, goods[i], n);
			buf[n] = '\0';
			assert_rejected(key_a, buf, kinds[i]);
			/* ...and suffixes. */
			assert_rejected(key_a, goods[i] + len - n, kinds[i]);
		}
	}
}

static void
test_token_extension_rejected(void **state)
{
	const char	*goods[] = { V_CLICK, V_ATTR, V_MAX };
	enum token_kind	 kinds[] = { TOKEN_CLICK, TOKEN_ATTRIBUTION,
	    TOKEN_CLICK };
	char		 buf[TOKEN_MAX * 2];
	size_t		 i, j, k, dot, len;

	for (i = 0; i < nitems(goods); i++) {
		len = strlen(goods[i]);
		dot = (size_t)(strchr(goods[i], '.') - goods[i]);
		for (j = 0; b64url[j] != '\0'; j++) {
			/* Appended at the end, 1 to 4 characters. */
			for (k = 1; k <= 4; k++) {
				snprintf(buf, sizeof buf, "%s%.*s", goods[i],
				    (int)k, "AAAA");
				buf[len + k - 1] = b64url[j];
				assert_rejected(key_a, buf, kinds[i]);
			}
			/* Inserted just before the '.' and at the front. */
			snprintf(buf, sizeof buf, "%.*s%c%s", (int)dot,
			    goods[i], b64url[j], goods[i] + dot);
			assert_rejected(key_a, buf, kinds[i]);
			snprintf(buf, sizeof buf, "%c%s", b64url[j], goods[i]);
			assert_rejected(key_a, buf, kinds[i]);
		}
		/* Padding is not part of the form. */
		snprintf(buf, sizeof buf, "%s=", goods[i]);
		assert_rejected(key_a, buf, kinds[i]);
		snprintf(buf, sizeof buf, "%s==", goods[i]);
		assert_rejected(key_a, buf, kinds[i]);
		/* A query or path tail glued on. */
		snprintf(buf, sizeof buf, "%s?x=1", goods[i]);
		assert_rejected(key_a, buf, kinds[i]);
		snprintf(buf, sizeof buf, "%s/x", goods[i]);
		assert_rejected(key_a, buf, kinds[i]);
	}
}

static void
test_token_extra_dot_rejected(void **state)
{
	const char	*goods[] = { V_CLICK, V_ATTR };
	enum token_kind	 kinds[] = { TOKEN_CLICK, TOKEN_ATTRIBUTION };
	char		 buf[TOKEN_MAX + 2];
	size_t		 i, p, len;

	for (i = 0; i < nitems(goods); i++) {
		len = strlen(goods[i]);
		for (p = 0; p <= len; p++) {
			snprintf(buf, sizeof buf, "%.*s.%s", (int)p, goods[i],
			    goods[i] + p);
			assert_rejected(key_a, buf, kinds[i]);
		}
		/* No dot at all: body and signature run together. */
		snprintf(buf, sizeof buf, "%s", goods[i]);
		memmove(strchr(buf, '.'), strchr(buf, '.') + 1,
		    strlen(strchr(buf, '.')));
		assert_rejected(key_a, buf, kinds[i]);
	}
	assert_rejected(key_a, ".", TOKEN_CLICK);
	assert_rejected(key_a, "..", TOKEN_CLICK);
	assert_rejected(key_a, ".Nmbd56uLY4nu7_oi", TOKEN_CLICK);
	assert_rejected(key_a, "YwECAwA.", TOKEN_CLICK);
}

static void
test_token_bad_alphabet_rejected(void **state)
{
	/* Standard base64 of the same bytes, and assorted outsiders. */
	const char	*bad[] = {
		"YwECAwA.Nmbd56uLY4nu7/oi",		/* '/' for '_' */
		"YwECAwA=.Nmbd56uLY4nu7_oi",		/* padding */
		"YwECAwA.Nmbd56uLY4nu7_oi\n",
		" YwECAwA.Nmbd56uLY4nu7_oi",
		"YwECAwA.Nmbd56uLY4nu7_oi ",
		"YwECAwA%2ENmbd56uLY4nu7_oi",		/* still URL-encoded */
		"YwEC\xc3\xa9wA.Nmbd56uLY4nu7_oi",	/* UTF-8 */
		"YwECAwA.Nmbd56uLY4nu7_o\xff",
		"YwECAwA.Nmbd56uLY4nu7_oi\t",
		"../../etc/passwd",
		"<script>alert(1)</script>",
		"YwECAwA.Nmbd56uLY4nu7_oi';--",
	};
	size_t		 i;

	for (i = 0; i < nitems(bad); i++)
		assert_rejected(key_a, bad[i], TOKEN_CLICK);
	/* The vector itself is fine, so the refusals above are real. */
	{
		struct token	 out;

		assert_int_equal(token_decode(key_a, V_CLICK, TOKEN_CLICK,
		    &out), 0);
	}
}

static void
test_token_embedded_nul_cuts_the_token(void **state)
{
	/* What a C caller sees is what it gets: a NUL ends the string. */
	const char	 s[] = "YwECAwA\0.Nmbd56uLY4nu7_oi";

	assert_rejected(key_a, s, TOKEN_CLICK);
}

static void
test_token_empty_and_null_rejected(void **state)
{
	assert_rejected(key_a, "", TOKEN_CLICK);
	assert_rejected(key_a, "", TOKEN_ATTRIBUTION);
	assert_rejected(key_a, NULL, TOKEN_CLICK);
	assert_rejected(key_a, NULL, TOKEN_ATTRIBUTION);
}

static void
test_token_over_long_rejected(void **state)
{
	char	 buf[4096];
	size_t	 n;

	for (n = TOKEN_MAX + 1; n < sizeof buf; n = n * 2 + 1) {
		memset(buf, 'A', n);
		buf[n / 2] = '.';
		buf[n] = '\0';
		assert_rejected(key_a, buf, TOKEN_CLICK);
	}
	/* A valid token followed by enough junk to pass TOKEN_MAX. */
	memset(buf, 'A', sizeof buf);
	memcpy(buf + 200, V_CLICK, strlen(V_CLICK));
	buf[200 + strlen(V_CLICK)] = '\0';
	assert_rejected(key_a, buf, TOKEN_CLICK);
	/* A long string of one character, no dot. */
	memset(buf, '_', sizeof buf - 1);
	buf[sizeof buf - 1] = '\0';
	assert_rejected(key_a, buf, TOKEN_ATTRIBUTION);
}

static void
test_token_other_key_rejected(void **state)
{
	struct token	 t;
	size_t		 i;
	char		*s;

	for (i = 0; i < nitems(ids); i++) {
		t = mk(TOKEN_CLICK, ids[i], 5, 0, 0, 0);
		s = token_encode(key_b, &t);
		assert_rejected(key_a, s, TOKEN_CLICK);
		free(s);
		t = mk(TOKEN_ATTRIBUTION, ids[i], 5, 7, 0, 1700000000);
		s = token_encode(key_b, &t);
		assert_rejected(key_a, s, TOKEN_ATTRIBUTION);
		free(s);
	}
	assert_rejected(key_b, V_CLICK, TOKEN_CLICK);
	assert_rejected(key_b, V_ATTR, TOKEN_ATTRIBUTION);
}

static void
test_token_zero_channel_rejected(void **state)
{
	struct token	 t;
	char		*s;

	t = mk(TOKEN_CLICK, 0, 1, 2, 3, 0);
	s = token_encode(key_a, &t);
	assert_rejected(key_a, s, TOKEN_CLICK);
	free(s);
	t = mk(TOKEN_ATTRIBUTION, 0, 1, 2, 3, 1700000000);
	s = token_encode(key_a, &t);
	assert_rejected(key_a, s, TOKEN_ATTRIBUTION);
	free(s);
}

/* Negative ids are not part of the format: they never come back. */
static void
test_token_negative_ids_do_not_decode(void **state)
{
	struct token	 t;
	char		*s;

	t = mk(TOKEN_CLICK, INT64_MIN, -1, -1, -1, 0);
	s = token_encode(key_a, &t);
	assert_true(strlen(s) <= TOKEN_MAX);
	assert_rejected(key_a, s, TOKEN_CLICK);
	free(s);
	t = mk(TOKEN_ATTRIBUTION, 1, 1, 1, 1, -1);
	s = token_encode(key_a, &t);
	assert_rejected(key_a, s, TOKEN_ATTRIBUTION);
	free(s);
}

/* Same input, same token; different inputs, different tokens. */
static void
test_token_deterministic_and_distinct(void **state)
{
	struct token	 a = mk(TOKEN_CLICK, 1, 2, 3, 4, 0);
	struct token	 b = mk(TOKEN_CLICK, 1, 2, 3, 5, 0);
	char		*s1 = token_encode(key_a, &a);
	char		*s2 = token_encode(key_a, &a);
	char		*s3 = token_encode(key_a, &b);
	char		*s4 = token_encode(key_b, &a);

	assert_string_equal(s1, s2);
	assert_string_not_equal(s1, s3);
	assert_string_not_equal(s1, s4);
	free(s1);
	free(s2);
	free(s3);
	free(s4);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token_click_roundtrip_small_and_huge),
		cmocka_unit_test(
		    test_token_attribution_roundtrip_small_and_huge),
		cmocka_unit_test(test_token_all_int64_max_fits_and_is_url_safe),
		cmocka_unit_test(test_token_known_vectors),
		cmocka_unit_test(test_token_click_never_decodes_as_attribution),
		cmocka_unit_test(test_token_attribution_never_decodes_as_click),
		cmocka_unit_test(test_token_kind_byte_is_signed),
		cmocka_unit_test(test_token_every_signature_char_change_rejected),
		cmocka_unit_test(test_token_every_body_char_change_rejected),
		cmocka_unit_test(test_token_char_changes_over_many_tokens),
		cmocka_unit_test(test_token_truncation_rejected),
		cmocka_unit_test(test_token_extension_rejected),
		cmocka_unit_test(test_token_extra_dot_rejected),
		cmocka_unit_test(test_token_bad_alphabet_rejected),
		cmocka_unit_test(test_token_embedded_nul_cuts_the_token),
		cmocka_unit_test(test_token_empty_and_null_rejected),
		cmocka_unit_test(test_token_over_long_rejected),
		cmocka_unit_test(test_token_other_key_rejected),
		cmocka_unit_test(test_token_zero_channel_rejected),
		cmocka_unit_test(test_token_negative_ids_do_not_decode),
		cmocka_unit_test(test_token_deterministic_and_distinct),
	};

	return (cmocka_run_group_tests(tests, setup_keys, NULL));
}
