/* SPDX-License-Identifier: ISC */
/*
 * api.h -- the marketer and admin JSON API under /api/v1, and the
 * operational endpoints (/healthz, /readyz, /metrics).
 *
 * Every /api/v1 route is registered with a scope.  Before its handler runs,
 * the API key from "Authorization: Bearer KEY" is checked (SHA-256 looked up
 * in api_keys, cached for api_key_cache_ttl) and, for channel routes, the
 * {slug} in the path is resolved to a channel the key may reach:
 *	no key or unknown/revoked key	401 unauthorized
 *	a channel key on an admin route	403 forbidden
 *	a channel key on another channel	403 forbidden (whether or not
 *					that channel exists: no existence leak)
 * Handlers are thin: validate, call a module, render.
 */
#ifndef MUSUBI_API_H
#define MUSUBI_API_H

#include <stdint.h>

#include <jansson.h>

#include "musubi/compat.h"

struct app;
struct http_req;

enum api_scope {
	API_ADMIN,	/* admin keys only */
	API_ANY,	/* any valid key */
	API_CHANNEL,	/* admin, or a key of the channel named by {slug} */
	API_CHANNEL_ADMIN, /* admin only, with {slug} resolved */
};

/* What the authenticated request may reach; borrowed by handlers. */
struct api_ctx {
	struct app	*app;
	struct http_req	*req;
	int64_t		 key_id;
	int		 admin;
	int64_t		 key_channel_id;	/* 0 for admin keys */
	int64_t		 channel_id;		/* API_CHANNEL routes */
	char		*channel_slug;
	char		*channel_tz;
};

typedef void api_handler(struct api_ctx *);

struct api	*api_new(struct app *);
void		 api_free(struct api *);
/* Register an authenticated route under the given scope. */
void		 api_route(struct api *, int methods, const char *pattern,
		    enum api_scope, api_handler *);
/* Forget cached keys (tests, SIGHUP). */
void		 api_flush_cache(struct api *);

/* Hash an API key as stored in api_keys.key_hash (32 bytes). */
void		 api_key_hash(const char *key, unsigned char out[32]);
/* A new random API key: new string, caller frees. */
char		*api_key_generate(void);

/*
 * Validation helpers: each replies 422 with a JSON-pointer path and returns
 * -1 on bad input, 0 otherwise.  *out is borrowed from obj.
 */
int		 api_reject_unknown(struct http_req *, json_t *obj,
		    const char *const *allowed);
int		 api_string(struct http_req *, json_t *obj, const char *key,
		    int required, size_t minlen, size_t maxlen,
		    const char **out);
/* Reply 503 (with Retry-After) for a database error; logs it. */
void		 api_db_error(struct http_req *, const char *what,
		    const char *err);

/* Route registration of each resource module (api_*.c). */
void		 api_channels_init(struct api *);
void		 api_links_init(struct api *);
void		 api_campaigns_init(struct api *);
void		 api_identity_init(struct api *);
void		 api_friends_init(struct api *);
void		 api_segments_init(struct api *);
void		 api_shops_init(struct api *);
void		 api_sources_init(struct api *);

#endif
