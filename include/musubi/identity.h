/* SPDX-License-Identifier: ISC */
/*
 * identity.h -- tie LINE friends to shop customers (see sql/007_identity.sql
 * for the link rules).  A timer completes account links from accountLink
 * events and verifies the tracking tokens that orders carried in; the API
 * side (api_identity.c) starts account links, registers nonces, verifies
 * LINE Login ID tokens and links or unlinks explicitly.
 */
#ifndef MUSUBI_IDENTITY_H
#define MUSUBI_IDENTITY_H

#include "musubi/token.h"

struct app;
struct identity;

/* How long after a click an order may still be attributed to it. */
#define IDENTITY_ATTRIBUTION_DAYS	30
/* How long a registered account-link nonce stays usable. */
#define IDENTITY_NONCE_TTL_S		600

struct identity	*identity_new(struct app *,
		    const unsigned char key[TOKEN_KEY_LEN]);
int		 identity_start(struct identity *);
void		 identity_stop(struct identity *);
int		 identity_busy(const struct identity *);
void		 identity_free(struct identity *);

#endif
