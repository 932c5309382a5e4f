/* SPDX-License-Identifier: ISC */
/*
 * identity.c -- the background half of identity linking.  Once a second it
 * runs musubi_identity_account_links() (accountLink events + registered
 * nonces) and verifies a page of orders whose musubi_t token has not been
 * checked yet: the HMAC key lives only in musubid, so the check is done
 * here and its verdict written back with musubi_identity_attribute().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "musubi/app.h"
#include "musubi/db.h"
#include "musubi/identity.h"
#include "musubi/log.h"
#include "musubi/metrics.h"
#include "musubi/token.h"
#include "musubi/xmalloc.h"

#define IDENTITY_TICK_MS	1000
#define IDENTITY_PAGE		500

struct identity {
	struct app	*app;
	unsigned char	 key[TOKEN_KEY_LEN];
	struct event	*tick;
	int		 busy;		/* queries in flight */
	int		 stopping;
};

static void	identity_tick_cb(evutil_socket_t, short, void *);

/* Create the identity worker. */
struct identity *
identity_new(struct app *app, const unsigned char key[TOKEN_KEY_LEN])
{
	struct identity	*id = xcalloc(1, sizeof *id);

	id->app = app;
	memcpy(id->key, key, TOKEN_KEY_LEN);
	id->tick = evtimer_new(app->base, identity_tick_cb, id);
	metrics_describe(app->metrics, "musubi_identity_links_total",
	    "counter", "Friend-customer links made, by method.");
	metrics_describe(app->metrics, "musubi_identity_tokens_total",
	    "counter", "Order tracking tokens checked, by verdict.");
	return (id);
}

/* Arm the timer. */
static void
identity_arm(struct identity *id, long ms)
{
	struct timeval	 tv = { ms / 1000, (ms % 1000) * 1000 };

	if (!id->stopping && evtimer_add(id->tick, &tv) != 0)
		log_warnx("identity: cannot arm the timer");
}

/* Start the timer. */
int
identity_start(struct identity *id)
{
	identity_arm(id, IDENTITY_TICK_MS);
	return (0);
}

/* Stop the timer; queries in flight finish. */
void
identity_stop(struct identity *id)
{
	id->stopping = 1;
	evtimer_del(id->tick);
}

/* Tell whether queries are in flight. */
int
identity_busy(const struct identity *id)
{
	return (id->busy > 0);
}

/* Free the worker. */
void
identity_free(struct identity *id)
{
	if (id == NULL)
		return;
	event_free(id->tick);
	explicit_bzero(id->key, sizeof id->key);
	free(id);
}

/* One query of the tick finished; re-arm when all have. */
static void
identity_done(struct identity *id, int again)
{
	if (--id->busy == 0)
		identity_arm(id, again ? 0 : IDENTITY_TICK_MS);
}

/* Account links were completed. */
static void
identity_links_cb(const PGresult *res, const char *err, void *arg)
{
	struct identity	*id = arg;
	int64_t		 n;

	if (err != NULL)
		log_warnx("identity: completing account links: %s", err);
	else if ((n = db_int(res, 0, 0)) > 0) {
		metrics_add(id->app->metrics, "musubi_identity_links_total",
		    "method=\"account_link\"", (uint64_t)n);
		log_info("identity: %lld account links completed",
		    (long long)n);
	}
	identity_done(id, 0);
}

/* Verdicts were written back. */
static void
identity_attributed_cb(const PGresult *res, const char *err, void *arg)
{
	struct identity	*id = arg;
	int64_t		 n;

	if (err != NULL)
		log_warnx("identity: recording token verdicts: %s", err);
	else if ((n = db_int(res, 0, 0)) > 0)
		metrics_add(id->app->metrics, "musubi_identity_links_total",
		    "method=\"tracking_token\"", (uint64_t)n);
	identity_done(id, 0);
}

/* Judge one order's token. */
static const char *
identity_verdict(struct identity *id, int64_t channel, const char *tok,
    const char *placed, struct token *t)
{
	long long	 at;

	if (token_decode(id->key, tok, TOKEN_ATTRIBUTION, t) != 0)
		return ("invalid");
	if (t->channel_id != channel)
		return ("foreign");
	if (t->friend_id == 0)
		return ("anonymous");
	if (placed == NULL)
		return ("ok");
	at = strtoll(placed, NULL, 10);
	if (at + 300 < t->issued_at ||
	    at > t->issued_at + IDENTITY_ATTRIBUTION_DAYS * 86400LL)
		return ("expired");
	return ("ok");
}

/* Orders with unchecked tokens were read: verify and write back. */
static void
identity_orders_cb(const PGresult *res, const char *err, void *arg)
{
	struct identity		*id = arg;
	struct db_params	*p;
	struct token		 t;
	json_t			*batch;
	const char		*verdict;
	char			*s, label[64];
	int			 i, n;

	if (err != NULL) {
		log_warnx("identity: reading tokens: %s", err);
		identity_done(id, 0);
		return;
	}
	if ((n = PQntuples(res)) == 0) {
		identity_done(id, 0);
		return;
	}
	batch = json_array();
	for (i = 0; i < n; i++) {
		verdict = identity_verdict(id, db_int(res, i, 0),
		    db_value(res, i, 2), db_value(res, i, 3), &t);
		json_array_append_new(batch, json_pack("{s:I, s:I, s:s, s:I, "
		    "s:I, s:I, s:I}", "c", (json_int_t)db_int(res, i, 0),
		    "o", (json_int_t)db_int(res, i, 1), "s", verdict,
		    "f", (json_int_t)t.friend_id, "l", (json_int_t)t.link_id,
		    "r", (json_int_t)t.run_id, "t", (json_int_t)t.issued_at));
		snprintf(label, sizeof label, "verdict=\"%s\"", verdict);
		metrics_add(id->app->metrics, "musubi_identity_tokens_total",
		    label, 1);
	}
	s = json_dumps(batch, JSON_COMPACT);
	json_decref(batch);
	p = db_params_new();
	db_params_text(p, s);
	free(s);
	id->busy++;
	db_query(id->app->db, "SELECT musubi_identity_attribute($1::jsonb)", p,
	    identity_attributed_cb, id);
	identity_done(id, n == IDENTITY_PAGE);
}

/* Tick: complete account links and check a page of tokens. */
static void
identity_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct identity		*id = arg;
	struct db_params	*p;

	if (id->stopping || id->busy > 0)
		return;
	if (!db_is_ready(id->app->db)) {
		identity_arm(id, IDENTITY_TICK_MS);
		return;
	}
	id->busy += 2;
	db_query(id->app->db, "SELECT musubi_identity_account_links()", NULL,
	    identity_links_cb, id);
	p = db_params_new();
	db_params_int(p, IDENTITY_PAGE);
	db_query(id->app->db, "SELECT channel_id, id, attribution_token, "
	    "extract(epoch FROM placed_at)::bigint FROM orders "
	    "WHERE attribution_token IS NOT NULL AND attribution_state IS NULL "
	    "ORDER BY id LIMIT $1", p, identity_orders_cb, id);
}
