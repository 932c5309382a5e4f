/* SPDX-License-Identifier: ISC */
/*
 * chancache.h -- channels by slug, with their secrets, cached in memory for
 * the hot paths (webhook signature checks, LINE API calls) so that a webhook
 * costs no extra query.  Entries live for CHANCACHE_TTL_MS; unknown slugs are
 * remembered briefly too, so a flood of bad URLs does not become a flood of
 * queries.  The secrets are held only here and never logged.
 */
#ifndef MUSUBI_CHANCACHE_H
#define MUSUBI_CHANCACHE_H

#include <stdint.h>

struct db;
struct chancache;

#define CHANCACHE_TTL_MS	5000
#define CHANCACHE_MISS_TTL_MS	1000

struct channel_info {
	int64_t		 id;
	const char	*slug;
	const char	*secret;	/* channel secret (webhook HMAC key) */
	const char	*token;		/* channel access token */
	const char	*timezone;
};

/*
 * ch is borrowed for the duration of the callback only; NULL with err NULL
 * means there is no such channel; err set means the database failed.
 */
typedef void chancache_cb(const struct channel_info *ch, const char *err,
    void *arg);

struct chancache *chancache_new(struct db *);
void		 chancache_free(struct chancache *);
/* Look a channel up by slug; the callback may run before this returns. */
void		 chancache_get(struct chancache *, const char *slug,
		    chancache_cb *, void *arg);
/* Look a channel up by id (same rules). */
void		 chancache_get_id(struct chancache *, int64_t id,
		    chancache_cb *, void *arg);
/* Forget everything (after an update through the API). */
void		 chancache_flush(struct chancache *);

#endif
