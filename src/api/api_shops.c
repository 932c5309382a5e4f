/* SPDX-License-Identifier: ISC */
/*
 * api_shops.c -- /api/v1/channels/{slug}/shops: create, list, read and
 * update the shops whose purchase webhooks a channel receives, and read a
 * shop's recent deliveries with their state and, when one was rejected,
 * the reason.
 *
 * Every route takes the API_CHANNEL scope: an admin key, or a key of the
 * channel itself (a shop developer setting up webhooks needs no admin
 * key).  A shop of another channel is 404, like a shop that does not
 * exist.  Webhook secrets are write-only: accepted here, stored, never
 * returned and never logged; responses say only whether they are set.  A
 * PATCH with a new webhook_secret keeps the old one as
 * previous_webhook_secret, so deliveries signed with either verify until
 * the rotation is ended with "previous_webhook_secret": null.  All shops
 * of a channel share one currency, so the channel's rollups add up.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/api.h"
#include "musubi/app.h"
#include "musubi/config.h"
#include "musubi/db.h"
#include "musubi/ec.h"
#include "musubi/httpd.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

#define ISO8601(col) \
	"to_char(" col " AT TIME ZONE 'UTC', " \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

#define SHOP_SECRET_MIN		8
#define SHOP_SECRET_MAX		500
#define SHOP_EVENTS_DEFAULT	50
#define SHOP_EVENTS_MAX		500

/* Columns rendered by shop_json(), over a shops row named s. */
#define SHOP_COLS \
	"s.slug, s.name, s.platform, s.currency, s.shop_domain, " \
	"s.previous_webhook_secret IS NOT NULL, " \
	ISO8601("s.secret_rotated_at") ", " ISO8601("s.created_at") ", " \
	ISO8601("s.updated_at") ", " \
	"(SELECT " ISO8601("e.received_at") " FROM ec_webhook_events e " \
	"WHERE e.channel_id = s.channel_id AND e.shop_id = s.id " \
	"ORDER BY e.id DESC LIMIT 1)"

static const char *const shop_fields[] = {
	"slug", "name", "platform", "webhook_secret",
	"previous_webhook_secret", "currency", "shop_domain", NULL
};

static const char *const shop_states[] = {
	"pending", "applied", "rejected", "ignored", NULL
};

/* A string or JSON null. */
static json_t *
shop_str(const char *s)
{
	return (s != NULL ? json_string(s) : json_null());
}

/* Render row i of a SHOP_COLS result. */
static json_t *
shop_json(struct api_ctx *ctx, const PGresult *res, int row)
{
	const char	*slug = db_value(res, row, 0);
	const char	*plat = db_value(res, row, 2);
	const char	*base = ctx->app->cfg->public_url;
	const char	*dir, *hdr;
	char		*path, *url = NULL;
	json_t		*j;

	if (strcmp(plat, "shopify") == 0) {
		dir = "shopify";
		hdr = "X-Shopify-Hmac-Sha256";
	} else if (strcmp(plat, "woocommerce") == 0) {
		dir = "woocommerce";
		hdr = "X-WC-Webhook-Signature";
	} else {
		dir = "ec";
		hdr = "X-Musubi-Signature";
	}
	xasprintf(&path, "/webhooks/%s/%s", dir, slug);
	if (base != NULL && *base != '\0')
		xasprintf(&url, "%.*s%s", (int)(strlen(base) -
		    (base[strlen(base) - 1] == '/')), base, path);
	j = json_pack("{s:s, s:s, s:s, s:s, s:o, s:b, s:b, s:o, s:s, s:o, "
	    "s:s, s:s, s:s, s:o}",
	    "slug", slug,
	    "name", db_value(res, row, 1),
	    "platform", plat,
	    "currency", db_value(res, row, 3),
	    "shop_domain", shop_str(db_value(res, row, 4)),
	    "has_webhook_secret", 1,
	    "has_previous_webhook_secret", *db_value(res, row, 5) == 't',
	    "secret_rotated_at", shop_str(db_value(res, row, 6)),
	    "webhook_path", path,
	    "webhook_url", shop_str(url),
	    "signature_header", hdr,
	    "created_at", db_value(res, row, 7),
	    "updated_at", db_value(res, row, 8),
	    "last_delivery_at", shop_str(db_value(res, row, 9)));
	free(path);
	free(url);
	return (j);
}

/* Check a slug: lowercase letters, digits and '-', 1-63, not leading '-'. */
static int
shop_slug_ok(const char *s)
{
	size_t	 i, n = strlen(s);

	if (n == 0 || n > 63 || s[0] == '-')
		return (0);
	for (i = 0; i < n; i++) {
		if (!(islower((unsigned char)s[i]) ||
		    isdigit((unsigned char)s[i]) || s[i] == '-'))
			return (0);
	}
	return (1);
}

/* Check a host name: letters, digits, '.' and '-'. */
static int
shop_domain_ok(const char *s)
{
	size_t	 i;

	for (i = 0; s[i] != '\0'; i++) {
		if (!isalnum((unsigned char)s[i]) && s[i] != '.' &&
		    s[i] != '-')
			return (0);
	}
	return (i > 0 && s[0] != '.' && s[0] != '-');
}

/* Check a currency code. */
static int
shop_currency_ok(const char *s)
{
	return (strlen(s) == 3 && isupper((unsigned char)s[0]) &&
	    isupper((unsigned char)s[1]) && isupper((unsigned char)s[2]));
}

/* Validate the fields of a create or an update. */
static int
shop_validate(struct http_req *req, json_t *body, int create,
    const char **slug, const char **name, const char **platform,
    const char **secret, const char **previous, const char **currency,
    const char **domain)
{
	*slug = *platform = *currency = NULL;
	if (api_reject_unknown(req, body, shop_fields) != 0)
		return (-1);
	if (create) {
		if (api_string(req, body, "slug", 1, 1, 63, slug) != 0)
			return (-1);
		if (!shop_slug_ok(*slug)) {
			http_reply_error(req, 422, "invalid_value", "/slug",
			    "slug may hold only lowercase letters, digits and "
			    "'-', and must not start with '-'");
			return (-1);
		}
		if (api_string(req, body, "platform", 1, 1, 32,
		    platform) != 0)
			return (-1);
		if (strcmp(*platform, "shopify") != 0 &&
		    strcmp(*platform, "woocommerce") != 0 &&
		    strcmp(*platform, "generic") != 0) {
			http_reply_error(req, 422, "invalid_value",
			    "/platform", "platform must be shopify, "
			    "woocommerce or generic");
			return (-1);
		}
		if (api_string(req, body, "currency", 0, 3, 3,
		    currency) != 0)
			return (-1);
		if (*currency != NULL && !shop_currency_ok(*currency)) {
			http_reply_error(req, 422, "invalid_value",
			    "/currency", "currency must be an ISO 4217 code "
			    "such as JPY");
			return (-1);
		}
	} else {
		const char *const immutable[] = { "slug", "platform",
		    "currency", NULL };
		size_t	 i;
		char	 path[32];

		for (i = 0; immutable[i] != NULL; i++) {
			if (json_object_get(body, immutable[i]) == NULL)
				continue;
			snprintf(path, sizeof path, "/%s", immutable[i]);
			http_reply_error(req, 422, "immutable", path,
			    "a shop's %s cannot be changed", immutable[i]);
			return (-1);
		}
	}
	if (api_string(req, body, "name", create, 1, 200, name) != 0 ||
	    api_string(req, body, "webhook_secret", create, SHOP_SECRET_MIN,
	    SHOP_SECRET_MAX, secret) != 0 ||
	    api_string(req, body, "previous_webhook_secret", 0,
	    SHOP_SECRET_MIN, SHOP_SECRET_MAX, previous) != 0 ||
	    api_string(req, body, "shop_domain", 0, 1, 255, domain) != 0)
		return (-1);
	if (*domain != NULL && !shop_domain_ok(*domain)) {
		http_reply_error(req, 422, "invalid_value", "/shop_domain",
		    "shop_domain must be a host name such as "
		    "example.myshopify.com");
		return (-1);
	}
	return (0);
}

/* Lowercase a host name: new string or NULL. */
static char *
shop_lower(const char *s)
{
	char	*out, *p;

	if (s == NULL)
		return (NULL);
	out = xstrdup(s);
	for (p = out; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	return (out);
}

/* The new shop was inserted, or not. */
static void
shop_create_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	char		*loc;

	if (err != NULL) {
		if (res != NULL && strcmp(db_sqlstate(res), "23505") == 0) {
			http_reply_error(ctx->req, 409, "conflict", "/slug",
			    "a shop with this slug already exists");
			return;
		}
		api_db_error(ctx->req, "shop create", err);
		return;
	}
	if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 422, "currency_conflict",
		    "/currency", "the channel's other shops use another "
		    "currency; all shops of a channel share one");
		return;
	}
	log_info("api: rid=%s shop %s (%s) created in channel %s",
	    http_req_id(ctx->req), db_value(res, 0, 0), db_value(res, 0, 2),
	    ctx->channel_slug);
	xasprintf(&loc, "/api/v1/channels/%s/shops/%s", ctx->channel_slug,
	    db_value(res, 0, 0));
	http_reply_header(ctx->req, "Location", loc);
	free(loc);
	http_reply_json(ctx->req, 201, shop_json(ctx, res, 0));
}

/* POST /api/v1/channels/{slug}/shops */
static void
shop_create(struct api_ctx *ctx)
{
	json_t			*body;
	const char		*slug, *name, *plat, *secret, *prev, *cur, *dom;
	char			*ldom;
	struct db_params	*p;

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (shop_validate(ctx->req, body, 1, &slug, &name, &plat, &secret,
	    &prev, &cur, &dom) != 0) {
		json_decref(body);
		return;
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, slug);
	db_params_text(p, name);
	db_params_text(p, plat);
	db_params_text(p, secret);
	db_params_text(p, prev);
	db_params_text(p, cur != NULL ? cur : "JPY");
	ldom = shop_lower(dom);
	db_params_text(p, ldom);
	free(ldom);
	json_decref(body);
	db_query(ctx->app->db,
	    "WITH s AS (INSERT INTO shops (channel_id, slug, name, platform, "
	    "webhook_secret, previous_webhook_secret, currency, shop_domain) "
	    "SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS "
	    "(SELECT 1 FROM shops WHERE channel_id = $1 AND currency <> $7) "
	    "RETURNING *) SELECT " SHOP_COLS " FROM s", p, shop_create_cb,
	    ctx);
}

/* The shop list was read. */
static void
shop_list_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*items;
	int		 i;

	if (err != NULL) {
		api_db_error(ctx->req, "shop list", err);
		return;
	}
	items = json_array();
	for (i = 0; i < PQntuples(res); i++)
		json_array_append_new(items, shop_json(ctx, res, i));
	http_reply_json(ctx->req, 200, json_pack("{s:o}", "shops", items));
}

/* GET /api/v1/channels/{slug}/shops */
static void
shop_list(struct api_ctx *ctx)
{
	struct db_params	*p = db_params_new();

	db_params_int(p, ctx->channel_id);
	db_query(ctx->app->db, "SELECT " SHOP_COLS " FROM shops s "
	    "WHERE s.channel_id = $1 ORDER BY s.slug", p, shop_list_cb, ctx);
}

/* Reply 404 unless the {shop} parameter can be a shop slug. */
static int
shop_param_ok(struct api_ctx *ctx)
{
	if (shop_slug_ok(http_req_param(ctx->req, "shop")))
		return (1);
	http_reply_error(ctx->req, 404, "not_found", NULL,
	    "no such shop in channel %s", ctx->channel_slug);
	return (0);
}

/* One shop was read or updated. */
static void
shop_one_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		api_db_error(ctx->req, "shop read", err);
		return;
	}
	if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such shop in channel %s", ctx->channel_slug);
		return;
	}
	if (http_req_method(ctx->req) == HTTP_PATCH) {
		ec_flush_shops(ctx->app->ec);
		log_info("api: rid=%s shop %s updated", http_req_id(ctx->req),
		    db_value(res, 0, 0));
	}
	http_reply_json(ctx->req, 200, shop_json(ctx, res, 0));
}

/* GET /api/v1/channels/{slug}/shops/{shop} */
static void
shop_get(struct api_ctx *ctx)
{
	struct db_params	*p;

	if (!shop_param_ok(ctx))
		return;
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, http_req_param(ctx->req, "shop"));
	db_query(ctx->app->db, "SELECT " SHOP_COLS " FROM shops s "
	    "WHERE s.channel_id = $1 AND s.slug = $2", p, shop_one_cb, ctx);
}

/*
 * PATCH /api/v1/channels/{slug}/shops/{shop}: a webhook_secret that differs
 * from the current one moves the current one to previous_webhook_secret
 * (unless previous_webhook_secret is given too); previous_webhook_secret:
 * null ends a rotation.  Sending the current secret again changes nothing,
 * so a retried PATCH does not push the real previous secret out.
 */
static void
shop_update(struct api_ctx *ctx)
{
	json_t			*body;
	const char		*slug, *name, *plat, *secret, *prev, *cur, *dom;
	char			*ldom;
	struct db_params	*p;

	if (!shop_param_ok(ctx))
		return;
	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (shop_validate(ctx->req, body, 0, &slug, &name, &plat, &secret,
	    &prev, &cur, &dom) != 0) {
		json_decref(body);
		return;
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, http_req_param(ctx->req, "shop"));
	db_params_text(p, name);
	db_params_text(p, secret);
	db_params_bool(p, json_object_get(body, "previous_webhook_secret") !=
	    NULL);
	db_params_text(p, prev);
	db_params_bool(p, json_object_get(body, "shop_domain") != NULL);
	ldom = shop_lower(dom);
	db_params_text(p, ldom);
	free(ldom);
	json_decref(body);
	db_query(ctx->app->db,
	    "WITH s AS (UPDATE shops SET name = coalesce($3, name), "
	    "previous_webhook_secret = CASE WHEN $5 THEN $6::text "
	    "WHEN $4::text IS NOT NULL AND $4::text <> webhook_secret "
	    "THEN webhook_secret ELSE previous_webhook_secret END, "
	    "secret_rotated_at = CASE WHEN $4::text IS NOT NULL AND "
	    "$4::text <> webhook_secret THEN now() "
	    "ELSE secret_rotated_at END, "
	    "webhook_secret = coalesce($4::text, webhook_secret), "
	    "shop_domain = CASE WHEN $7 THEN $8::text ELSE shop_domain END, "
	    "updated_at = now() "
	    "WHERE channel_id = $1 AND slug = $2 RETURNING *) "
	    "SELECT " SHOP_COLS " FROM s", p, shop_one_cb, ctx);
}

/* A shop's deliveries were read. */
static void
shop_events_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*events;

	if (err != NULL) {
		api_db_error(ctx->req, "shop events", err);
		return;
	}
	if (*db_value(res, 0, 0) != 't') {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such shop in channel %s", ctx->channel_slug);
		return;
	}
	if ((events = json_loads(db_value(res, 0, 1), 0, NULL)) == NULL)
		events = json_array();
	http_reply_json(ctx->req, 200, json_pack("{s:o}", "events", events));
}

/*
 * GET /api/v1/channels/{slug}/shops/{shop}/events?state=&limit=&before=:
 * newest first; before is the id of the last event of the previous page.
 */
static void
shop_events(struct api_ctx *ctx)
{
	const char		*state = http_req_query(ctx->req, "state");
	const char		*lim = http_req_query(ctx->req, "limit");
	const char		*before = http_req_query(ctx->req, "before");
	struct db_params	*p;
	long long		 n = SHOP_EVENTS_DEFAULT, b = 0;
	char			*end;
	int			 st = -1, i;

	if (!shop_param_ok(ctx))
		return;
	if (state != NULL) {
		for (i = 0; shop_states[i] != NULL; i++) {
			if (strcmp(state, shop_states[i]) == 0)
				st = i;
		}
		if (st < 0) {
			http_reply_error(ctx->req, 422, "invalid_value",
			    "?state", "state must be pending, applied, "
			    "rejected or ignored");
			return;
		}
	}
	if (lim != NULL) {
		n = strtoll(lim, &end, 10);
		if (*lim == '\0' || *end != '\0' || n < 1 ||
		    n > SHOP_EVENTS_MAX) {
			http_reply_error(ctx->req, 422, "invalid_value",
			    "?limit", "limit must be 1 to %d",
			    SHOP_EVENTS_MAX);
			return;
		}
	}
	if (before != NULL) {
		b = strtoll(before, &end, 10);
		if (*before == '\0' || *end != '\0' || b < 1) {
			http_reply_error(ctx->req, 422, "invalid_value",
			    "?before", "before must be an event id");
			return;
		}
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, http_req_param(ctx->req, "shop"));
	if (st >= 0)
		db_params_int(p, st);
	else
		db_params_null(p);
	if (b > 0)
		db_params_int(p, b);
	else
		db_params_null(p);
	db_params_int(p, n);
	db_query(ctx->app->db,
	    "WITH s AS (SELECT channel_id, id FROM shops "
	    "WHERE channel_id = $1 AND slug = $2) "
	    "SELECT EXISTS (SELECT 1 FROM s), (SELECT coalesce(json_agg(x "
	    "ORDER BY x.id DESC), '[]') FROM (SELECT e.id, e.topic, "
	    "e.delivery_id, e.event_id, e.kind, e.entity_id, "
	    "(ARRAY['pending','applied','rejected','ignored'])[e.state + 1] "
	    "AS state, e.problem, " ISO8601("e.received_at") " AS received_at, "
	    ISO8601("e.applied_at") " AS applied_at "
	    "FROM ec_webhook_events e JOIN s ON e.channel_id = s.channel_id "
	    "AND e.shop_id = s.id "
	    "WHERE ($3::smallint IS NULL OR e.state = $3) "
	    "AND ($4::bigint IS NULL OR e.id < $4) "
	    "ORDER BY e.id DESC LIMIT $5) x)", p, shop_events_cb, ctx);
}

/* Register the shop routes. */
void
api_shops_init(struct api *api)
{
	api_route(api, HTTP_POST, "/api/v1/channels/{slug}/shops", API_CHANNEL,
	    shop_create);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/shops", API_CHANNEL,
	    shop_list);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/shops/{shop}",
	    API_CHANNEL, shop_get);
	api_route(api, HTTP_PATCH, "/api/v1/channels/{slug}/shops/{shop}",
	    API_CHANNEL, shop_update);
	api_route(api, HTTP_GET,
	    "/api/v1/channels/{slug}/shops/{shop}/events", API_CHANNEL,
	    shop_events);
}
