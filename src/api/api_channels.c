/* SPDX-License-Identifier: ISC */
/*
 * api_channels.c -- /api/v1/channels: create, list, read and update the LINE
 * Official Accounts musubi serves.  The channel secret and access token are
 * write-only: accepted here, stored, never returned and never logged; the
 * responses say only whether they are set.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/api.h"
#include "musubi/app.h"
#include "musubi/chancache.h"
#include "musubi/db.h"
#include "musubi/httpd.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

#define ISO8601(col) \
	"to_char(" col " AT TIME ZONE 'UTC', " \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

#define CHANNEL_COLS \
	"slug, name, bot_user_id, timezone, channel_secret <> '', " \
	"access_token <> '', " ISO8601("created_at") ", " \
	ISO8601("updated_at") ", login_channel_id, " \
	"coalesce(login_channel_secret, '') <> ''"

static const char *const channel_fields[] = {
	"slug", "name", "channel_secret", "channel_access_token",
	"bot_user_id", "timezone", "login_channel_id", "login_channel_secret",
	NULL
};

/* Render row i of a CHANNEL_COLS result starting at column off. */
static json_t *
channel_json(const PGresult *res, int row, int off)
{
	const char	*bot = db_value(res, row, off + 2);
	const char	*login = db_value(res, row, off + 8);

	return (json_pack("{s:s, s:s, s:o, s:s, s:b, s:b, s:s, s:s, s:o, "
	    "s:b}",
	    "slug", db_value(res, row, off),
	    "name", db_value(res, row, off + 1),
	    "bot_user_id", bot != NULL ? json_string(bot) : json_null(),
	    "timezone", db_value(res, row, off + 3),
	    "has_channel_secret", *db_value(res, row, off + 4) == 't',
	    "has_access_token", *db_value(res, row, off + 5) == 't',
	    "created_at", db_value(res, row, off + 6),
	    "updated_at", db_value(res, row, off + 7),
	    "login_channel_id", login != NULL ? json_string(login) :
	    json_null(),
	    "has_login_channel_secret", *db_value(res, row, off + 9) == 't'));
}

/* Check a slug: lowercase letters, digits and '-', 1-63, not leading '-'. */
static int
channel_slug_ok(const char *s)
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

/* Check a LINE bot user id: U followed by 32 lowercase hex digits. */
static int
channel_user_id_ok(const char *s)
{
	size_t	 i;

	if (strlen(s) != 33 || s[0] != 'U')
		return (0);
	for (i = 1; i < 33; i++) {
		if (!isxdigit((unsigned char)s[i]) ||
		    isupper((unsigned char)s[i]))
			return (0);
	}
	return (1);
}

/* The new channel was inserted, or not. */
static void
channel_create_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		if (res != NULL && strcmp(db_sqlstate(res), "23505") == 0) {
			http_reply_error(ctx->req, 409, "conflict", "/slug",
			    "a channel with this slug already exists");
			return;
		}
		api_db_error(ctx->req, "channel create", err);
		return;
	}
	if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 422, "invalid_value", "/timezone",
		    "unknown time zone; use an IANA name such as Asia/Tokyo");
		return;
	}
	log_info("api: rid=%s channel %s created", http_req_id(ctx->req),
	    db_value(res, 0, 0));
	{
		char	*loc;

		xasprintf(&loc, "/api/v1/channels/%s", db_value(res, 0, 0));
		http_reply_header(ctx->req, "Location", loc);
		free(loc);
	}
	http_reply_json(ctx->req, 201, channel_json(res, 0, 0));
}

/* Validate the fields shared by create and update. */
static int
channel_validate(struct http_req *req, json_t *body, int create,
    const char **slug, const char **name, const char **secret,
    const char **token, const char **bot, const char **tz,
    const char **login, const char **login_secret)
{
	if (api_reject_unknown(req, body, channel_fields) != 0)
		return (-1);
	if (create) {
		if (api_string(req, body, "slug", 1, 1, 63, slug) != 0)
			return (-1);
		if (!channel_slug_ok(*slug)) {
			http_reply_error(req, 422, "invalid_value", "/slug",
			    "slug may hold only lowercase letters, digits and "
			    "'-', and must not start with '-'");
			return (-1);
		}
	} else if (json_object_get(body, "slug") != NULL) {
		http_reply_error(req, 422, "immutable", "/slug",
		    "a channel's slug cannot be changed");
		return (-1);
	}
	if (api_string(req, body, "name", create, 1, 200, name) != 0 ||
	    api_string(req, body, "channel_secret", create, 1, 200,
	    secret) != 0 ||
	    api_string(req, body, "channel_access_token", 0, 1, 1000,
	    token) != 0 ||
	    api_string(req, body, "bot_user_id", 0, 33, 33, bot) != 0 ||
	    api_string(req, body, "timezone", 0, 1, 64, tz) != 0 ||
	    api_string(req, body, "login_channel_id", 0, 1, 32, login) != 0 ||
	    api_string(req, body, "login_channel_secret", 0, 1, 200,
	    login_secret) != 0)
		return (-1);
	if (*bot != NULL && !channel_user_id_ok(*bot)) {
		http_reply_error(req, 422, "invalid_value", "/bot_user_id",
		    "bot_user_id must be U followed by 32 lowercase hex "
		    "digits");
		return (-1);
	}
	return (0);
}

/* POST /api/v1/channels */
static void
channel_create(struct api_ctx *ctx)
{
	json_t			*body;
	const char		*slug, *name, *secret, *token, *bot, *tz;
	const char		*login, *lsecret;
	struct db_params	*p;

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (channel_validate(ctx->req, body, 1, &slug, &name, &secret, &token,
	    &bot, &tz, &login, &lsecret) != 0) {
		json_decref(body);
		return;
	}
	p = db_params_new();
	db_params_text(p, slug);
	db_params_text(p, name);
	db_params_text(p, secret);
	db_params_text(p, token != NULL ? token : "");
	db_params_text(p, bot);
	db_params_text(p, tz != NULL ? tz : "Asia/Tokyo");
	db_params_text(p, login);
	db_params_text(p, lsecret);
	json_decref(body);
	db_query(ctx->app->db,
	    "INSERT INTO channels (slug, name, channel_secret, access_token, "
	    "bot_user_id, timezone, login_channel_id, login_channel_secret) "
	    "SELECT $1, $2, $3, $4, $5, $6, $7, $8 "
	    "WHERE EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $6) "
	    "RETURNING " CHANNEL_COLS, p, channel_create_cb, ctx);
}

/* The channel list was read. */
static void
channel_list_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*items;
	int		 i;

	if (err != NULL) {
		api_db_error(ctx->req, "channel list", err);
		return;
	}
	items = json_array();
	for (i = 0; i < PQntuples(res); i++)
		json_array_append_new(items, channel_json(res, i, 0));
	http_reply_json(ctx->req, 200, json_pack("{s:o}", "channels", items));
}

/* GET /api/v1/channels: every channel for admin keys, one's own otherwise. */
static void
channel_list(struct api_ctx *ctx)
{
	struct db_params	*p = db_params_new();

	db_params_int(p, ctx->admin ? 0 : ctx->key_channel_id);
	db_query(ctx->app->db, "SELECT " CHANNEL_COLS " FROM channels "
	    "WHERE $1 = 0 OR id = $1 ORDER BY slug", p, channel_list_cb, ctx);
}

/* One channel was read. */
static void
channel_get_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		api_db_error(ctx->req, "channel read", err);
		return;
	}
	if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such channel");
		return;
	}
	http_reply_json(ctx->req, 200, channel_json(res, 0, 0));
}

/* GET /api/v1/channels/{slug} */
static void
channel_get(struct api_ctx *ctx)
{
	struct db_params	*p = db_params_new();

	db_params_int(p, ctx->channel_id);
	db_query(ctx->app->db, "SELECT " CHANNEL_COLS " FROM channels "
	    "WHERE id = $1", p, channel_get_cb, ctx);
}

/* The update ran: column 0 says whether the time zone was valid. */
static void
channel_update_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		api_db_error(ctx->req, "channel update", err);
		return;
	}
	if (*db_value(res, 0, 0) != 't') {
		http_reply_error(ctx->req, 422, "invalid_value", "/timezone",
		    "unknown time zone; use an IANA name such as Asia/Tokyo");
		return;
	}
	if (db_value(res, 0, 1) == NULL) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such channel: %s", http_req_param(ctx->req, "slug"));
		return;
	}
	chancache_flush(ctx->app->channels);
	log_info("api: rid=%s channel %s updated", http_req_id(ctx->req),
	    db_value(res, 0, 1));
	http_reply_json(ctx->req, 200, channel_json(res, 0, 1));
}

/* PATCH /api/v1/channels/{slug} (admin) */
static void
channel_update(struct api_ctx *ctx)
{
	json_t			*body;
	const char		*slug, *name, *secret, *token, *bot, *tz;
	const char		*login, *lsecret;
	struct db_params	*p;

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (channel_validate(ctx->req, body, 0, &slug, &name, &secret, &token,
	    &bot, &tz, &login, &lsecret) != 0) {
		json_decref(body);
		return;
	}
	p = db_params_new();
	db_params_text(p, http_req_param(ctx->req, "slug"));
	db_params_text(p, name);
	db_params_text(p, secret);
	db_params_text(p, token);
	db_params_bool(p, json_object_get(body, "bot_user_id") != NULL);
	db_params_text(p, bot);
	db_params_text(p, tz);
	db_params_text(p, login);
	db_params_text(p, lsecret);
	json_decref(body);
	db_query(ctx->app->db,
	    "WITH tz AS (SELECT $7::text IS NULL OR EXISTS (SELECT 1 FROM "
	    "pg_timezone_names WHERE name = $7) AS ok), "
	    "upd AS (UPDATE channels SET name = coalesce($2, name), "
	    "channel_secret = coalesce($3, channel_secret), "
	    "access_token = coalesce($4, access_token), "
	    "bot_user_id = CASE WHEN $5 THEN $6 ELSE bot_user_id END, "
	    "timezone = coalesce($7, timezone), "
	    "login_channel_id = coalesce($8, login_channel_id), "
	    "login_channel_secret = coalesce($9, login_channel_secret), "
	    "updated_at = now() "
	    "WHERE slug = $1 AND (SELECT ok FROM tz) RETURNING " CHANNEL_COLS
	    ") SELECT (SELECT ok FROM tz), upd.* FROM (SELECT 1) one "
	    "LEFT JOIN upd ON true", p, channel_update_cb, ctx);
}

/* Register the channel routes. */
void
api_channels_init(struct api *api)
{
	api_route(api, HTTP_POST, "/api/v1/channels", API_ADMIN,
	    channel_create);
	api_route(api, HTTP_GET, "/api/v1/channels", API_ANY, channel_list);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}", API_CHANNEL,
	    channel_get);
	api_route(api, HTTP_PATCH, "/api/v1/channels/{slug}", API_ADMIN,
	    channel_update);
}
