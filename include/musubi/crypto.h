/* SPDX-License-Identifier: ISC */
/*
 * crypto.h -- pure helpers over OpenSSL: HMAC-SHA256, SHA-256, base64 and
 * base64url, constant-time comparison, CSPRNG bytes, tokens and UUIDs.
 * Nothing here does I/O or keeps state.
 */
#ifndef MUSUBI_CRYPTO_H
#define MUSUBI_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "musubi/compat.h"

#define CRYPTO_SHA256_LEN	32
#define CRYPTO_UUID_LEN		36	/* without the NUL */

/* HMAC-SHA256 of msg with key into out[32]. */
void	 crypto_hmac_sha256(const void *key, size_t keylen, const void *msg,
	    size_t msglen, unsigned char out[CRYPTO_SHA256_LEN]);
/* SHA-256 of msg into out[32]. */
void	 crypto_sha256(const void *msg, size_t len,
	    unsigned char out[CRYPTO_SHA256_LEN]);
/* Lowercase hex of SHA-256 of msg: new string, caller frees. */
char	*crypto_sha256_hex(const void *msg, size_t len);
/* Lowercase hex of a buffer into out (2*len+1 bytes). */
void	 crypto_hex(const unsigned char *in, size_t len, char *out);

/* Standard base64 with padding: new string, caller frees. */
char	*crypto_base64(const unsigned char *in, size_t len);
/* base64url without padding: new string, caller frees. */
char	*crypto_base64url(const unsigned char *in, size_t len);
/*
 * Decode standard or url-safe base64, padding optional, into a new buffer
 * (caller frees) of *outlen bytes.  NULL on bad input.
 */
unsigned char *crypto_base64_decode(const char *in, size_t inlen,
	    size_t *outlen);

/* Compare two buffers in constant time; 1 if equal. */
int	 crypto_equal(const void *a, size_t alen, const void *b, size_t blen);

/*
 * Verify a base64 HMAC-SHA256 signature over body (LINE, Shopify and
 * musubi's own scheme): 0 if sig matches, -1 otherwise.  Decodes sig and
 * compares the digests in constant time.
 */
int	 crypto_verify_hmac_b64(const void *key, size_t keylen,
	    const void *body, size_t bodylen, const char *sig) MUSTCHECK;

/* Fill buf with CSPRNG bytes; exits if the CSPRNG fails. */
void	 crypto_random(void *buf, size_t len);
/* A random base64url token of nbytes of entropy: new string, caller frees. */
char	*crypto_token(size_t nbytes);
/* A random v4 UUID in lowercase hex with dashes into out[37]. */
void	 crypto_uuid(char out[CRYPTO_UUID_LEN + 1]);

#endif
