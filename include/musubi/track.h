/* SPDX-License-Identifier: ISC */
/*
 * track.h -- tracked links and visits.
 *
 * GET /c/{token}: verify the click token, answer 302 to the link's stored
 * destination with utm parameters and a fresh attribution token
 * (musubi_t=...) added, and queue the click.  A forged, malformed or
 * unknown token gets a 404 page; the destination always comes from the
 * database, never from the request.
 * GET|POST /t/pv?t=<attribution token>&u=<url>&r=<referrer>: a page-view
 * beacon (204, or a 1x1 GIF at /t/pv.gif) from the shop's pages.
 * Clicks and views are buffered and written in batches off the request
 * path (musubi_record_clicks / musubi_record_page_views), every
 * TRACK_FLUSH_MS or when a batch fills.  If PostgreSQL is away the buffer
 * holds up to TRACK_BUFFER_MAX records, then drops the oldest and counts
 * them in musubi_track_dropped_total.
 */
#ifndef MUSUBI_TRACK_H
#define MUSUBI_TRACK_H

#include <stdint.h>

#include <libpq-fe.h>

#include "musubi/token.h"

struct app;
struct track;

#define TRACK_FLUSH_MS		100
#define TRACK_BATCH_MAX		2000
#define TRACK_BUFFER_MAX	50000
#define TRACK_PARAM		"musubi_t"

/* At start-up (blocking libpq): load or create the shared token key. */
int		 track_load_key(PGconn *, unsigned char key[TOKEN_KEY_LEN],
		    char **cause);

struct track	*track_new(struct app *, const unsigned char key[TOKEN_KEY_LEN]);
int		 track_start(struct track *);
/* Flush what is buffered; no new timers. */
void		 track_stop(struct track *);
int		 track_busy(const struct track *);
void		 track_free(struct track *);

/* The /c/ URL for a link sent to a friend in a run: new string. */
char		*track_click_url(const struct track *, int64_t channel_id,
		    int64_t link_id, int64_t friend_id, int64_t run_id);

#endif
