/* SPDX-License-Identifier: ISC */
/*
 * api_links.c -- /api/v1/channels/{slug}/links: destinations that musubi
 * tracks.  A link's /c/ URL is signed; GET .../links/{id}?friend=U... hands
 * out the URL personalised for one friend (what a campaign does for every
 * recipient).  Destinations are fixed once created, so a URL already sent
 * can never be turned into a redirect somewhere else.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "musubi/api.h"
#include "musubi/app.h"
#include "musubi/db.h"
#include "musubi/httpd.h"
#include "musubi/line.h"
#include "musubi/log.h"
#include "musubi/track.h"
#include "musubi/xmalloc.h"

#define LINK_COLS "id, name, destination, utm_campaign, " \
	"to_char(created_at AT TIME ZONE 'UTC', " \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

static const char *const link_fields[] = {
	"name", "destination", "utm_campaign", NULL
};

/* Render a link row (LINK_COLS at off, clicks at off+5 if present). */
static json_t *
link_json(struct api_ctx *ctx, const PGresult *res, int row, int64_t friend)
{
	int64_t	 id = db_int(res, row, 0);
	char	*url = track_click_url(ctx->app->track, ctx->channel_id, id,
	    friend, 0);
	json_t	*j;

	j = json_pack("{s:I, s:s, s:s, s:o, s:s, s:s}", "id", (json_int_t)id,
	    "name", db_value(res, row, 1), "destination",
	    db_value(res, row, 2), "utm_campaign",
	    db_value(res, row, 3) ? json_string(db_value(res, row, 3)) :
	    json_null(), "created_at", db_value(res, row, 4), "url", url);
	if (PQnfields(res) > 5)
		json_object_set_new(j, "clicks", json_integer(db_int(res,
		    row, 5)));
	free(url);
	return (j);
}

/* Check a destination URL: http(s), a host, no spaces or controls. */
static int
link_destination_ok(const char *s)
{
	struct evhttp_uri	*u;
	const char		*p, *scheme;
	int			 ok;

	for (p = s; *p != '\0'; p++) {
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return (0);
	}
	if ((u = evhttp_uri_parse(s)) == NULL)
		return (0);
	scheme = evhttp_uri_get_scheme(u);
	ok = scheme != NULL && (strcmp(scheme, "https") == 0 ||
	    strcmp(scheme, "http") == 0) && evhttp_uri_get_host(u) != NULL &&
	    *evhttp_uri_get_host(u) != '\0';
	evhttp_uri_free(u);
	return (ok);
}

/* The link was inserted. */
static void
link_create_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		api_db_error(ctx->req, "link create", err);
		return;
	}
	http_reply_json(ctx->req, 201, link_json(ctx, res, 0, 0));
}

/* POST /api/v1/channels/{slug}/links */
static void
link_create(struct api_ctx *ctx)
{
	json_t			*body;
	const char		*name, *dest, *utm;
	struct db_params	*p;

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (api_reject_unknown(ctx->req, body, link_fields) != 0 ||
	    api_string(ctx->req, body, "name", 1, 1, 200, &name) != 0 ||
	    api_string(ctx->req, body, "destination", 1, 8, 2000,
	    &dest) != 0 ||
	    api_string(ctx->req, body, "utm_campaign", 0, 1, 100, &utm) != 0)
		goto out;
	if (!link_destination_ok(dest)) {
		http_reply_error(ctx->req, 422, "invalid_value",
		    "/destination", "destination must be an http or https URL "
		    "with a host");
		goto out;
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, name);
	db_params_text(p, dest);
	db_params_text(p, utm);
	db_query(ctx->app->db, "INSERT INTO links (channel_id, name, "
	    "destination, utm_campaign) VALUES ($1, $2, $3, $4) RETURNING "
	    LINK_COLS, p, link_create_cb, ctx);
out:
	json_decref(body);
}

/* The links were read. */
static void
link_list_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*items;
	int		 i;

	if (err != NULL) {
		api_db_error(ctx->req, "link list", err);
		return;
	}
	items = json_array();
	for (i = 0; i < PQntuples(res); i++)
		json_array_append_new(items, link_json(ctx, res, i, 0));
	http_reply_json(ctx->req, 200, json_pack("{s:o}", "links", items));
}

/* GET /api/v1/channels/{slug}/links */
static void
link_list(struct api_ctx *ctx)
{
	struct db_params	*p = db_params_new();

	db_params_int(p, ctx->channel_id);
	db_query(ctx->app->db, "SELECT " LINK_COLS ", (SELECT count(*) FROM "
	    "clicks c WHERE c.channel_id = l.channel_id AND c.link_id = l.id) "
	    "FROM links l WHERE channel_id = $1 AND campaign_id IS NULL "
	    "ORDER BY id", p, link_list_cb, ctx);
}

/* One link was read (column 6: the friend's id, if one was asked for). */
static void
link_get_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	const char	*friend = http_req_query(ctx->req, "friend");

	if (err != NULL) {
		api_db_error(ctx->req, "link read", err);
		return;
	}
	if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such link");
		return;
	}
	if (friend != NULL && db_value(res, 0, 6) == NULL) {
		http_reply_error(ctx->req, 404, "not_found", "?friend",
		    "no such friend in this channel");
		return;
	}
	http_reply_json(ctx->req, 200, link_json(ctx, res, 0,
	    db_int(res, 0, 6)));
}

/* GET /api/v1/channels/{slug}/links/{id}[?friend=U...] */
static void
link_get(struct api_ctx *ctx)
{
	const char		*id = http_req_param(ctx->req, "id");
	const char		*friend = http_req_query(ctx->req, "friend");
	struct db_params	*p;
	char			*end;
	long long		 n;

	errno = 0;
	n = strtoll(id, &end, 10);
	if (*end != '\0' || end == id || n <= 0 || errno != 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such link");
		return;
	}
	if (friend != NULL && !line_is_user_id(friend)) {
		http_reply_error(ctx->req, 422, "invalid_value", "?friend",
		    "friend must be a LINE user id (U + 32 hex digits)");
		return;
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_int(p, n);
	db_params_text(p, friend);
	db_query(ctx->app->db, "SELECT " LINK_COLS ", (SELECT count(*) FROM "
	    "clicks c WHERE c.channel_id = l.channel_id AND c.link_id = l.id), "
	    "(SELECT f.id FROM friends f WHERE f.channel_id = l.channel_id "
	    "AND f.user_id = $3) FROM links l WHERE channel_id = $1 AND id = $2",
	    p, link_get_cb, ctx);
}

/* Register the link routes. */
void
api_links_init(struct api *api)
{
	api_route(api, HTTP_POST, "/api/v1/channels/{slug}/links",
	    API_CHANNEL, link_create);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/links",
	    API_CHANNEL, link_list);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/links/{id}",
	    API_CHANNEL, link_get);
}
