/* SPDX-License-Identifier: ISC */
/*
 * crypto.c -- thin, pure wrappers over OpenSSL so that the rest of musubi
 * never touches its API directly.  Comparisons of secrets and signatures go
 * through CRYPTO_memcmp, never memcmp.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "musubi/crypto.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

/* Compute HMAC-SHA256. */
void
crypto_hmac_sha256(const void *key, size_t keylen, const void *msg,
    size_t msglen, unsigned char out[CRYPTO_SHA256_LEN])
{
	unsigned int	 outlen = CRYPTO_SHA256_LEN;
	static const unsigned char empty = 0;

	if (msg == NULL)
		msg = &empty;
	if (HMAC(EVP_sha256(), key, (int)keylen, msg, msglen, out,
	    &outlen) == NULL)
		fatalx("crypto: HMAC failed");
}

/* Compute SHA-256. */
void
crypto_sha256(const void *msg, size_t len, unsigned char out[CRYPTO_SHA256_LEN])
{
	unsigned int	 outlen = CRYPTO_SHA256_LEN;

	if (EVP_Digest(msg, len, out, &outlen, EVP_sha256(), NULL) != 1)
		fatalx("crypto: SHA-256 failed");
}

/* Write lowercase hex. */
void
crypto_hex(const unsigned char *in, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	size_t	 i;

	for (i = 0; i < len; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 0xf];
	}
	out[2 * len] = '\0';
}

/* Return the hex SHA-256 of a buffer. */
char *
crypto_sha256_hex(const void *msg, size_t len)
{
	unsigned char	 d[CRYPTO_SHA256_LEN];
	char		*out = xmalloc(2 * CRYPTO_SHA256_LEN + 1);

	crypto_sha256(msg, len, d);
	crypto_hex(d, sizeof d, out);
	return (out);
}

static const char b64std[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Encode with the given alphabet, padded or not. */
static char *
crypto_b64enc(const unsigned char *in, size_t len, const char *alpha, int pad)
{
	char	*out = xmalloc(4 * ((len + 2) / 3) + 1), *p = out;
	size_t	 i;

	for (i = 0; i + 2 < len; i += 3) {
		*p++ = alpha[in[i] >> 2];
		*p++ = alpha[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*p++ = alpha[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		*p++ = alpha[in[i + 2] & 63];
	}
	if (len - i == 1) {
		*p++ = alpha[in[i] >> 2];
		*p++ = alpha[(in[i] & 3) << 4];
		if (pad) {
			*p++ = '=';
			*p++ = '=';
		}
	} else if (len - i == 2) {
		*p++ = alpha[in[i] >> 2];
		*p++ = alpha[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*p++ = alpha[(in[i + 1] & 15) << 2];
		if (pad)
			*p++ = '=';
	}
	*p = '\0';
	return (out);
}

/* Encode standard base64. */
char *
crypto_base64(const unsigned char *in, size_t len)
{
	return (crypto_b64enc(in, len, b64std, 1));
}

/* Encode base64url without padding. */
char *
crypto_base64url(const unsigned char *in, size_t len)
{
	return (crypto_b64enc(in, len, b64url, 0));
}

/* Map one base64 character (either alphabet) to its value, or -1. */
static int
crypto_b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return (c - 'A');
	if (c >= 'a' && c <= 'z')
		return (c - 'a' + 26);
	if (c >= '0' && c <= '9')
		return (c - '0' + 52);
	if (c == '+' || c == '-')
		return (62);
	if (c == '/' || c == '_')
		return (63);
	return (-1);
}

/* Decode base64 of either alphabet. */
unsigned char *
crypto_base64_decode(const char *in, size_t inlen, size_t *outlen)
{
	unsigned char	*out;
	uint32_t	 acc = 0;
	size_t		 i, n = 0, bits = 0, pad = 0, full = inlen;
	int		 v;

	while (inlen > 0 && in[inlen - 1] == '=') {
		inlen--;
		pad++;
	}
	/* Padding, when present, must complete the last quantum exactly. */
	if (inlen % 4 == 1 || pad > 2 || (pad > 0 && full % 4 != 0))
		return (NULL);
	out = xmalloc(inlen * 3 / 4 + 1);
	for (i = 0; i < inlen; i++) {
		if ((v = crypto_b64val((unsigned char)in[i])) < 0) {
			free(out);
			return (NULL);
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/* Canonical only: the unused low bits of the last character are 0. */
	if (acc != 0) {
		free(out);
		return (NULL);
	}
	*outlen = n;
	return (out);
}

/* Constant-time equality; lengths are not secret. */
int
crypto_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	if (alen != blen)
		return (0);
	return (CRYPTO_memcmp(a, b, alen) == 0);
}

/* Verify a base64 HMAC-SHA256 signature. */
int
crypto_verify_hmac_b64(const void *key, size_t keylen, const void *body,
    size_t bodylen, const char *sig)
{
	unsigned char	 want[CRYPTO_SHA256_LEN], *got;
	size_t		 gotlen, siglen;
	int		 ok;

	if (sig == NULL || key == NULL || keylen == 0)
		return (-1);
	siglen = strlen(sig);
	while (siglen > 0 && (sig[siglen - 1] == ' ' || sig[siglen - 1] == '\t'))
		siglen--;
	if (siglen == 0 || siglen > 128)
		return (-1);
	if ((got = crypto_base64_decode(sig, siglen, &gotlen)) == NULL)
		return (-1);
	crypto_hmac_sha256(key, keylen, body, bodylen, want);
	ok = crypto_equal(want, sizeof want, got, gotlen);
	free(got);
	return (ok ? 0 : -1);
}

/* Fill a buffer from the CSPRNG. */
void
crypto_random(void *buf, size_t len)
{
	if (RAND_bytes(buf, (int)len) != 1)
		fatalx("crypto: RAND_bytes failed");
}

/* Return a random url-safe token. */
char *
crypto_token(size_t nbytes)
{
	unsigned char	 b[64];
	char		*t;

	if (nbytes > sizeof b)
		nbytes = sizeof b;
	crypto_random(b, nbytes);
	t = crypto_base64url(b, nbytes);
	OPENSSL_cleanse(b, sizeof b);
	return (t);
}

/* Write a random v4 UUID. */
void
crypto_uuid(char out[CRYPTO_UUID_LEN + 1])
{
	unsigned char	 b[16];
	char		 hex[33];

	crypto_random(b, sizeof b);
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	crypto_hex(b, sizeof b, hex);
	memcpy(out, hex, 8);
	out[8] = '-';
	memcpy(out + 9, hex + 8, 4);
	out[13] = '-';
	memcpy(out + 14, hex + 12, 4);
	out[18] = '-';
	memcpy(out + 19, hex + 16, 4);
	out[23] = '-';
	memcpy(out + 24, hex + 20, 12);
	out[36] = '\0';
}
