/* SPDX-License-Identifier: ISC */
/*
 * token.h -- compact, HMAC-signed tokens that travel in URLs.  Pure.
 *
 * A click token (/c/{token}) names what was clicked: the channel, the link,
 * the friend it was sent to (0 for an anonymous link) and the campaign run
 * (0 if none).  An attribution token (musubi_t=... on the landing URL, then
 * in cart attributes or landing_site) says which friend clicked which link
 * when, so an order that carries it can be tied to the friend.
 *
 * Wire form: base64url(kind byte, unsigned LEB128 fields...) followed by
 * base64url of the first 12 bytes of HMAC-SHA256(key, those bytes).  The
 * signature covers the kind, so one kind cannot pass for the other.  Tokens
 * carry ids, never a LINE userId or anything personal.
 */
#ifndef MUSUBI_TOKEN_H
#define MUSUBI_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "musubi/compat.h"

#define TOKEN_KEY_LEN	32
#define TOKEN_MAX	128	/* longest encoded token we accept */

enum token_kind {
	TOKEN_CLICK = 'c',
	TOKEN_ATTRIBUTION = 'a',
};

struct token {
	enum token_kind	 kind;
	int64_t		 channel_id;
	int64_t		 link_id;
	int64_t		 friend_id;	/* 0: anonymous */
	int64_t		 run_id;	/* 0: not from a campaign run */
	int64_t		 issued_at;	/* attribution: unix seconds */
};

/* Encode and sign: new string, caller frees. */
char	*token_encode(const unsigned char key[TOKEN_KEY_LEN],
	    const struct token *);
/*
 * Verify and decode.  0 on success; -1 for anything malformed, forged or
 * of the wrong kind (no detail, on purpose).
 */
int	 token_decode(const unsigned char key[TOKEN_KEY_LEN], const char *s,
	    enum token_kind want, struct token *out) MUSTCHECK;

#endif
