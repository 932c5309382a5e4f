/* SPDX-License-Identifier: ISC */
/*
 * test_crypto.c -- the pure helpers of crypto.c: LINE's signature scheme
 * (HMAC-SHA256 of the raw body, base64) against known vectors, the
 * verifier's refusals, base64 and base64url round trips and bad input,
 * constant-time equality, UUIDs, tokens and SHA-256.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/crypto.h"

/* Vectors computed independently (Python hmac/hashlib/base64). */
#define V1_KEY		"test_secret"
#define V1_BODY		"{\"hello\":\"world\"}"
#define V1_SIG		"t7Hn4ZDHqs6e+wdvI5TyQIvzie0DmMUmuXEBqyyE/tM="
#define V2_KEY		"channel_secret"
#define V2_BODY		"bodybodybodybody"
#define V2_SIG		"/gg9a+LvFevTH1sd7XCQycD7tsWclCsInj7MhBHxN7k="

/* Verify sig over body with key, all NUL-terminated strings. */
static int
verify(const char *key, const char *body, const char *sig)
{
	return (crypto_verify_hmac_b64(key, strlen(key), body, strlen(body),
	    sig));
}

/* Sign body with key as LINE does: new string. */
static char *
sign(const char *key, const char *body)
{
	unsigned char	 mac[CRYPTO_SHA256_LEN];

	crypto_hmac_sha256(key, strlen(key), body, strlen(body), mac);
	return (crypto_base64(mac, sizeof mac));
}

static void
test_crypto_hmac_matches_line_vector_1(void **state)
{
	char	*sig = sign(V1_KEY, V1_BODY);

	assert_string_equal(sig, V1_SIG);
	free(sig);
}

static void
test_crypto_hmac_matches_line_vector_2(void **state)
{
	char	*sig = sign(V2_KEY, V2_BODY);

	assert_string_equal(sig, V2_SIG);
	free(sig);
}

static void
test_crypto_verify_accepts_right_signature(void **state)
{
	assert_int_equal(verify(V1_KEY, V1_BODY, V1_SIG), 0);
	assert_int_equal(verify(V2_KEY, V2_BODY, V2_SIG), 0);
}

static void
test_crypto_verify_rejects_tampered_body(void **state)
{
	assert_int_equal(verify(V1_KEY, "{\"hello\":\"World\"}", V1_SIG), -1);
	assert_int_equal(verify(V1_KEY, "{\"hello\":\"world\"} ", V1_SIG), -1);
	assert_int_equal(verify(V2_KEY, "", V2_SIG), -1);
}

static void
test_crypto_verify_rejects_tampered_signature(void **state)
{
	char	 sig[] = V1_SIG;

	sig[5] = sig[5] == 'A' ? 'B' : 'A';
	assert_int_equal(verify(V1_KEY, V1_BODY, sig), -1);
	/* The other vector's signature is well-formed but wrong. */
	assert_int_equal(verify(V1_KEY, V1_BODY, V2_SIG), -1);
}

static void
test_crypto_verify_rejects_truncated_signature(void **state)
{
	char	 sig[] = V1_SIG;

	sig[40] = '\0';		/* 40 chars: 30 bytes, a valid length */
	assert_int_equal(verify(V1_KEY, V1_BODY, sig), -1);
	sig[20] = '\0';
	assert_int_equal(verify(V1_KEY, V1_BODY, sig), -1);
}

static void
test_crypto_verify_rejects_extended_signature(void **state)
{
	/* 35 decoded bytes: the right 32 and three more. */
	assert_int_equal(verify(V1_KEY, V1_BODY,
	    "t7Hn4ZDHqs6e+wdvI5TyQIvzie0DmMUmuXEBqyyE/tMAAAA"), -1);
}

static void
test_crypto_verify_rejects_empty_signature(void **state)
{
	assert_int_equal(verify(V1_KEY, V1_BODY, ""), -1);
	assert_int_equal(verify(V1_KEY, V1_BODY, "   "), -1);
}

static void
test_crypto_verify_rejects_null_signature(void **state)
{
	assert_int_equal(crypto_verify_hmac_b64(V1_KEY, strlen(V1_KEY),
	    V1_BODY, strlen(V1_BODY), NULL), -1);
}

static void
test_crypto_verify_rejects_garbage_base64(void **state)
{
	assert_int_equal(verify(V1_KEY, V1_BODY, "not base64 at all!"), -1);
	assert_int_equal(verify(V1_KEY, V1_BODY,
	    "t7Hn4ZDHqs6e+wdvI5TyQIvzie0DmMUmuXEBqyyE/t*="), -1);
	assert_int_equal(verify(V1_KEY, V1_BODY, "====="), -1);
}

static void
test_crypto_verify_rejects_wrong_key(void **state)
{
	assert_int_equal(verify(V2_KEY, V1_BODY, V1_SIG), -1);
	assert_int_equal(verify("test_secreT", V1_BODY, V1_SIG), -1);
}

static void
test_crypto_verify_rejects_empty_key(void **state)
{
	assert_int_equal(crypto_verify_hmac_b64("", 0, V1_BODY,
	    strlen(V1_BODY), V1_SIG), -1);
	assert_int_equal(crypto_verify_hmac_b64(NULL, 0, V1_BODY,
	    strlen(V1_BODY), V1_SIG), -1);
}

static void
test_crypto_verify_accepts_empty_body(void **state)
{
	char	*sig = sign(V1_KEY, "");

	assert_int_equal(crypto_verify_hmac_b64(V1_KEY, strlen(V1_KEY), NULL,
	    0, sig), 0);
	free(sig);
}

static void
test_crypto_base64_known_values(void **state)
{
	static const struct {
		const char	*in;
		const char	*std;
		const char	*url;
	} v[] = {
		{ "", "", "" },
		{ "f", "Zg==", "Zg" },
		{ "fo", "Zm8=", "Zm8" },
		{ "foo", "Zm9v", "Zm9v" },
		{ "foob", "Zm9vYg==", "Zm9vYg" },
		{ "fooba", "Zm9vYmE=", "Zm9vYmE" },
		{ "foobar", "Zm9vYmFy", "Zm9vYmFy" },
		{ "\xfb\xff", "+/8=", "-_8" },
	};
	size_t	 i;
	char	*s;

	for (i = 0; i < sizeof v / sizeof v[0]; i++) {
		s = crypto_base64((const unsigned char *)v[i].in,
		    strlen(v[i].in));
		assert_string_equal(s, v[i].std);
		free(s);
		s = crypto_base64url((const unsigned char *)v[i].in,
		    strlen(v[i].in));
		assert_string_equal(s, v[i].url);
		free(s);
	}
}

/* Fill buf with a pattern that covers every 6-bit group value. */
static void
fill_pattern(unsigned char *buf, size_t len, unsigned seed)
{
	size_t	 i;

	for (i = 0; i < len; i++)
		buf[i] = (unsigned char)(i * 37 + seed * 101 + 0xfb);
}

/* Encode with enc, decode, and compare, for lengths 0..40. */
static void
roundtrip(char *(*enc)(const unsigned char *, size_t))
{
	unsigned char	 in[40] = { 0 }, *out;
	size_t		 len, outlen;
	char		*s;

	for (len = 0; len <= sizeof in; len++) {
		fill_pattern(in, len, (unsigned)len);
		s = enc(in, len);
		outlen = (size_t)-1;
		out = crypto_base64_decode(s, strlen(s), &outlen);
		assert_non_null(out);
		assert_int_equal(outlen, len);
		if (len > 0)
			assert_memory_equal(out, in, len);
		free(out);
		free(s);
	}
}

static void
test_crypto_base64_roundtrip_0_to_40(void **state)
{
	roundtrip(crypto_base64);
}

static void
test_crypto_base64url_roundtrip_0_to_40(void **state)
{
	roundtrip(crypto_base64url);
}

static void
test_crypto_base64url_has_no_padding_or_std_chars(void **state)
{
	unsigned char	 in[40] = { 0 };
	size_t		 len;
	char		*s;

	for (len = 0; len <= sizeof in; len++) {
		fill_pattern(in, len, 7);
		s = crypto_base64url(in, len);
		assert_null(strpbrk(s, "=+/"));
		assert_int_equal(strlen(s), (len * 4 + 2) / 3);
		free(s);
	}
}

static void
test_crypto_base64_decode_accepts_missing_padding(void **state)
{
	unsigned char	*out;
	size_t		 n;

	out = crypto_base64_decode("Zm8", 3, &n);
	assert_non_null(out);
	assert_int_equal(n, 2);
	assert_memory_equal(out, "fo", 2);
	free(out);
}

static void
test_crypto_base64_decode_rejects_bad_characters(void **state)
{
	static const char *const bad[] = {
		"Zm9v!", "Zm 9v", "Zm9v\n", "Zm=9v", "Zm9v*YmFy", "\xc3\xa9" "AA",
	};
	size_t	 i, n;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_null(crypto_base64_decode(bad[i], strlen(bad[i]), &n));
}

static void
test_crypto_base64_decode_rejects_embedded_nul(void **state)
{
	size_t	 n;

	assert_null(crypto_base64_decode("Zm\0v", 4, &n));
}

static void
test_crypto_base64_decode_rejects_impossible_lengths(void **state)
{
	size_t	 n;

	/* 4k+1 significant characters cannot come from any byte string. */
	assert_null(crypto_base64_decode("Z", 1, &n));
	assert_null(crypto_base64_decode("Z===", 4, &n));
	assert_null(crypto_base64_decode("Zm9vY", 5, &n));
	assert_null(crypto_base64_decode("Zm9vYmFyZ", 9, &n));
}

static void
test_crypto_equal_same_bytes(void **state)
{
	assert_int_equal(crypto_equal("abcdef", 6, "abcdef", 6), 1);
	assert_int_equal(crypto_equal("", 0, "", 0), 1);
}

static void
test_crypto_equal_different_bytes(void **state)
{
	assert_int_equal(crypto_equal("abcdef", 6, "abcdeF", 6), 0);
	assert_int_equal(crypto_equal("xbcdef", 6, "abcdef", 6), 0);
}

static void
test_crypto_equal_different_lengths(void **state)
{
	assert_int_equal(crypto_equal("abc", 3, "abcd", 4), 0);
	assert_int_equal(crypto_equal("abc", 3, "", 0), 0);
}

/* Check one UUID's shape: 8-4-4-4-12 lowercase hex, v4, RFC 4122. */
static void
check_uuid(const char *u)
{
	size_t	 i;

	assert_int_equal(strlen(u), CRYPTO_UUID_LEN);
	for (i = 0; i < CRYPTO_UUID_LEN; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			assert_int_equal(u[i], '-');
			continue;
		}
		assert_true(isxdigit((unsigned char)u[i]));
		assert_false(isupper((unsigned char)u[i]));
	}
	assert_int_equal(u[14], '4');
	assert_non_null(strchr("89ab", u[19]));
}

static void
test_crypto_uuid_format(void **state)
{
	char	 u[CRYPTO_UUID_LEN + 1];
	int	 i;

	for (i = 0; i < 100; i++) {
		memset(u, 'X', sizeof u);
		crypto_uuid(u);
		check_uuid(u);
	}
}

static int
cmp_uuid(const void *a, const void *b)
{
	return (strcmp(a, b));
}

static void
test_crypto_uuid_unique_over_1000(void **state)
{
	enum { N = 1000 };
	char	(*u)[CRYPTO_UUID_LEN + 1] = calloc(N, sizeof *u);
	int	 i;

	assert_non_null(u);
	for (i = 0; i < N; i++)
		crypto_uuid(u[i]);
	qsort(u, N, sizeof *u, cmp_uuid);
	for (i = 1; i < N; i++)
		assert_string_not_equal(u[i - 1], u[i]);
	free(u);
}

static void
test_crypto_token_length_and_alphabet(void **state)
{
	static const size_t sizes[] = { 1, 2, 3, 16, 32, 33, 64 };
	size_t	 i, j;
	char	*t;

	for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		t = crypto_token(sizes[i]);
		assert_int_equal(strlen(t), (sizes[i] * 4 + 2) / 3);
		for (j = 0; t[j] != '\0'; j++) {
			assert_true(isalnum((unsigned char)t[j]) ||
			    t[j] == '-' || t[j] == '_');
		}
		free(t);
	}
}

static void
test_crypto_token_differs_each_call(void **state)
{
	char	*a = crypto_token(32), *b = crypto_token(32);

	assert_string_not_equal(a, b);
	free(a);
	free(b);
}

static void
test_crypto_token_caps_at_64_bytes(void **state)
{
	char	*t = crypto_token(1000);

	assert_int_equal(strlen(t), (64 * 4 + 2) / 3);
	free(t);
}

static void
test_crypto_sha256_hex_of_abc(void **state)
{
	char	*h = crypto_sha256_hex("abc", 3);

	assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223"
	    "b00361a396177a9cb410ff61f20015ad");
	free(h);
}

static void
test_crypto_sha256_hex_of_empty(void **state)
{
	char	*h = crypto_sha256_hex("", 0);

	assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb924"
	    "27ae41e4649b934ca495991b7852b855");
	free(h);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crypto_hmac_matches_line_vector_1),
		cmocka_unit_test(test_crypto_hmac_matches_line_vector_2),
		cmocka_unit_test(test_crypto_verify_accepts_right_signature),
		cmocka_unit_test(test_crypto_verify_rejects_tampered_body),
		cmocka_unit_test(test_crypto_verify_rejects_tampered_signature),
		cmocka_unit_test(test_crypto_verify_rejects_truncated_signature),
		cmocka_unit_test(test_crypto_verify_rejects_extended_signature),
		cmocka_unit_test(test_crypto_verify_rejects_empty_signature),
		cmocka_unit_test(test_crypto_verify_rejects_null_signature),
		cmocka_unit_test(test_crypto_verify_rejects_garbage_base64),
		cmocka_unit_test(test_crypto_verify_rejects_wrong_key),
		cmocka_unit_test(test_crypto_verify_rejects_empty_key),
		cmocka_unit_test(test_crypto_verify_accepts_empty_body),
		cmocka_unit_test(test_crypto_base64_known_values),
		cmocka_unit_test(test_crypto_base64_roundtrip_0_to_40),
		cmocka_unit_test(test_crypto_base64url_roundtrip_0_to_40),
		cmocka_unit_test(test_crypto_base64url_has_no_padding_or_std_chars),
		cmocka_unit_test(test_crypto_base64_decode_accepts_missing_padding),
		cmocka_unit_test(test_crypto_base64_decode_rejects_bad_characters),
		cmocka_unit_test(test_crypto_base64_decode_rejects_embedded_nul),
		cmocka_unit_test(test_crypto_base64_decode_rejects_impossible_lengths),
		cmocka_unit_test(test_crypto_equal_same_bytes),
		cmocka_unit_test(test_crypto_equal_different_bytes),
		cmocka_unit_test(test_crypto_equal_different_lengths),
		cmocka_unit_test(test_crypto_uuid_format),
		cmocka_unit_test(test_crypto_uuid_unique_over_1000),
		cmocka_unit_test(test_crypto_token_length_and_alphabet),
		cmocka_unit_test(test_crypto_token_differs_each_call),
		cmocka_unit_test(test_crypto_token_caps_at_64_bytes),
		cmocka_unit_test(test_crypto_sha256_hex_of_abc),
		cmocka_unit_test(test_crypto_sha256_hex_of_empty),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
