/* SPDX-License-Identifier: ISC */
/*
 * token.c -- signed URL tokens (see token.h).  Decoding checks length and
 * alphabet first, the signature next (constant time), and only then reads
 * the fields, so a forged token costs one HMAC and reveals nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "musubi/crypto.h"
#include "musubi/token.h"
#include "musubi/xmalloc.h"

#define TOKEN_SIG_LEN	12
#define TOKEN_BODY_MAX	64

/* Append an unsigned LEB128 value; returns the new length. */
static size_t
token_put(unsigned char *b, size_t n, uint64_t v)
{
	do {
		unsigned char	 c = v & 0x7f;

		v >>= 7;
		b[n++] = v != 0 ? (c | 0x80) : c;
	} while (v != 0);
	return (n);
}

/* Read an unsigned LEB128 value; -1 if truncated or too long. */
static int
token_get(const unsigned char *b, size_t len, size_t *off, int64_t *out)
{
	uint64_t	 v = 0;
	int		 shift = 0;
	unsigned char	 c;

	do {
		if (*off >= len || shift > 56)
			return (-1);
		c = b[(*off)++];
		v |= (uint64_t)(c & 0x7f) << shift;
		shift += 7;
	} while (c & 0x80);
	if (v > INT64_MAX)
		return (-1);
	*out = (int64_t)v;
	return (0);
}

/* Encode a token. */
char *
token_encode(const unsigned char key[TOKEN_KEY_LEN], const struct token *t)
{
	unsigned char	 b[TOKEN_BODY_MAX + TOKEN_SIG_LEN], mac[32];
	size_t		 n = 0;
	char		*body, *sig, *out;

	b[n++] = (unsigned char)t->kind;
	n = token_put(b, n, (uint64_t)t->channel_id);
	n = token_put(b, n, (uint64_t)t->link_id);
	n = token_put(b, n, (uint64_t)t->friend_id);
	n = token_put(b, n, (uint64_t)t->run_id);
	if (t->kind == TOKEN_ATTRIBUTION)
		n = token_put(b, n, (uint64_t)t->issued_at);
	crypto_hmac_sha256(key, TOKEN_KEY_LEN, b, n, mac);
	body = crypto_base64url(b, n);
	sig = crypto_base64url(mac, TOKEN_SIG_LEN);
	xasprintf(&out, "%s.%s", body, sig);
	free(body);
	free(sig);
	return (out);
}

/* Verify and decode a token. */
int
token_decode(const unsigned char key[TOKEN_KEY_LEN], const char *s,
    enum token_kind want, struct token *out)
{
	const char	*dot;
	unsigned char	*body = NULL, *sig = NULL, mac[32];
	size_t		 len, blen, slen, off = 1, i;
	int		 rc = -1;

	memset(out, 0, sizeof *out);
	if (s == NULL || (len = strlen(s)) == 0 || len > TOKEN_MAX)
		return (-1);
	for (i = 0; i < len; i++) {
		char	 c = s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		    c == '.'))
			return (-1);
	}
	if ((dot = strchr(s, '.')) == NULL || strchr(dot + 1, '.') != NULL)
		return (-1);
	body = crypto_base64_decode(s, (size_t)(dot - s), &blen);
	sig = crypto_base64_decode(dot + 1, strlen(dot + 1), &slen);
	if (body == NULL || sig == NULL || blen < 2 || blen > TOKEN_BODY_MAX ||
	    slen != TOKEN_SIG_LEN)
		goto out;
	crypto_hmac_sha256(key, TOKEN_KEY_LEN, body, blen, mac);
	if (!crypto_equal(mac, TOKEN_SIG_LEN, sig, slen))
		goto out;
	if (body[0] != (unsigned char)want)
		goto out;
	out->kind = want;
	if (token_get(body, blen, &off, &out->channel_id) != 0 ||
	    token_get(body, blen, &off, &out->link_id) != 0 ||
	    token_get(body, blen, &off, &out->friend_id) != 0 ||
	    token_get(body, blen, &off, &out->run_id) != 0)
		goto out;
	if (want == TOKEN_ATTRIBUTION &&
	    token_get(body, blen, &off, &out->issued_at) != 0)
		goto out;
	if (off != blen || out->channel_id == 0)
		goto out;
	rc = 0;
out:
	if (rc != 0)
		memset(out, 0, sizeof *out);
	free(body);
	free(sig);
	return (rc);
}
