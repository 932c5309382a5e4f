/* SPDX-License-Identifier: ISC */
/*
 * api_sources.c -- friend-acquisition sources (流入経路), their daily costs
 * and the acquisition report, under /api/v1/channels/{slug}:
 *	GET|PUT	acquisition			add-friend URL, landing page,
 *						currency, refollow policy
 *	GET|POST sources			list, create (URL /f/{code})
 *	GET|PATCH sources/{code}		read, change, archive
 *	GET	sources/{code}/costs		cost rows (?from=&to=)
 *	PUT|DELETE sources/{code}/costs/{date}	one day's cost
 *	POST	costs				{"costs":[...]}, all or nothing
 *	POST	costs.csv			text/csv, all or nothing
 *	GET	reports/acquisition[.csv]	?from=&to=&source=[&table=]
 * Every route takes the API_CHANNEL scope.  Rows with problems are
 * answered 422 {"error":{"code":"invalid_rows","rows":[{row, field,
 * message}]}} and nothing is imported.  The report is built in PostgreSQL
 * (musubi_acq_report), so its numbers are exact decimals.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "musubi/acquire.h"
#include "musubi/api.h"
#include "musubi/app.h"
#include "musubi/config.h"
#include "musubi/db.h"
#include "musubi/httpd.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

#define ISO8601(col) \
	"to_char(" col " AT TIME ZONE 'UTC', " \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

#define SRC_MAX_SPAN_DAYS	731
#define SRC_COSTS_MAX		1000

/* Columns rendered by src_json(), over an acquisition_sources row s. */
#define SRC_COLS \
	"s.code, s.name, s.kind, s.in_app, s.active_from::text, " \
	"s.active_until::text, s.attribution_window_days, s.add_friend_url, " \
	"s.landing_url, s.archived_at IS NOT NULL, " ISO8601("s.created_at") \
	", " ISO8601("s.updated_at") ", " \
	"(SELECT count(*) FROM acquisition_touches t " \
	"WHERE t.channel_id = s.channel_id AND t.source_id = s.id), " \
	"(SELECT count(*) FROM friends f WHERE f.channel_id = s.channel_id " \
	"AND f.source_id = s.id)"

#define COST_COLS \
	"c.day::text, c.spend::text, c.currency, c.impressions, c.clicks, " \
	"c.reported_adds, c.origin, " ISO8601("c.updated_at")

static const char *const src_kinds[] = {
	"cpf_ad", "web", "qr", "store", "influencer", "other", NULL
};

static const char *const src_fields[] = {
	"code", "name", "kind", "in_app", "active_from", "active_until",
	"attribution_window_days", "add_friend_url", "landing_url",
	"archived", NULL
};

static const char *const cost_fields[] = {
	"spend", "currency", "impressions", "clicks", "reported_adds", NULL
};

static const char *const batch_fields[] = {
	"source", "date", "spend", "currency", "impressions", "clicks",
	"reported_adds", NULL
};

static const char *const settings_fields[] = {
	"add_friend_url", "landing_url", "currency", "refollow", NULL
};

/* A create or update waiting for PostgreSQL. */
struct src_call {
	struct api_ctx	*ctx;
	char		*code;
	char		*date;
	int		 generated;	/* code made up: retry on conflict */
	int		 tries;
	int		 json_paths;	/* errors point into {"costs": [...]} */
	json_t		*vals;		/* a create's values, for a retry */
};

/* A string or JSON null. */
static json_t *
src_str(const char *s)
{
	return (s != NULL ? json_string(s) : json_null());
}

/* Render row i of a SRC_COLS result. */
static json_t *
src_json(struct api_ctx *ctx, const PGresult *res, int row)
{
	char	*url = acquire_source_url(ctx->app->cfg, db_value(res, row, 0));
	json_t	*j;

	j = json_pack("{s:s, s:s, s:s, s:b, s:s, s:o, s:I, s:o, s:o, s:b, "
	    "s:s, s:s, s:s, s:I, s:I}",
	    "code", db_value(res, row, 0), "name", db_value(res, row, 1),
	    "kind", db_value(res, row, 2),
	    "in_app", *db_value(res, row, 3) == 't',
	    "active_from", db_value(res, row, 4),
	    "active_until", src_str(db_value(res, row, 5)),
	    "attribution_window_days", (json_int_t)db_int(res, row, 6),
	    "add_friend_url", src_str(db_value(res, row, 7)),
	    "landing_url", src_str(db_value(res, row, 8)),
	    "archived", *db_value(res, row, 9) == 't',
	    "created_at", db_value(res, row, 10),
	    "updated_at", db_value(res, row, 11), "url", url,
	    "touches", (json_int_t)db_int(res, row, 12),
	    "friends", (json_int_t)db_int(res, row, 13));
	free(url);
	return (j);
}

/* Render row i of a COST_COLS result for a source code. */
static json_t *
cost_json(const char *code, const PGresult *res, int row)
{
	json_t	*j;

	j = json_pack("{s:s, s:s, s:s, s:s}", "source", code,
	    "date", db_value(res, row, 0), "spend", db_value(res, row, 1),
	    "currency", db_value(res, row, 2));
	json_object_set_new(j, "impressions", db_value(res, row, 3) ?
	    json_integer(db_int(res, row, 3)) : json_null());
	json_object_set_new(j, "clicks", db_value(res, row, 4) ?
	    json_integer(db_int(res, row, 4)) : json_null());
	json_object_set_new(j, "reported_adds", db_value(res, row, 5) ?
	    json_integer(db_int(res, row, 5)) : json_null());
	json_object_set_new(j, "origin", json_string(db_value(res, row, 6)));
	json_object_set_new(j, "updated_at",
	    json_string(db_value(res, row, 7)));
	return (j);
}

/* Free a call. */
static void
src_call_free(struct src_call *sc)
{
	free(sc->code);
	free(sc->date);
	json_decref(sc->vals);
	free(sc);
}

/* Check an http(s) URL with a host and no spaces or controls. */
static int
src_url_ok(const char *s)
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

/* Read an optional URL field; *set tells whether it was in body. */
static int
src_url_field(struct api_ctx *ctx, json_t *body, const char *key,
    const char **out, int *set)
{
	char	 path[64];

	*set = json_object_get(body, key) != NULL;
	if (api_string(ctx->req, body, key, 0, 8, 2000, out) != 0)
		return (-1);
	if (*out != NULL && !src_url_ok(*out)) {
		snprintf(path, sizeof path, "/%s", key);
		http_reply_error(ctx->req, 422, "invalid_value", path,
		    "%s must be an http or https URL with a host", key);
		return (-1);
	}
	return (0);
}

/* Read an optional date field into out[11]; *set, *null as given. */
static int
src_date_field(struct http_req *req, json_t *body, const char *key,
    char *out, int *set, int *null)
{
	const char	*s, *why;
	char		 path[64];

	snprintf(path, sizeof path, "/%s", key);
	*out = '\0';
	*set = json_object_get(body, key) != NULL;
	*null = *set && json_is_null(json_object_get(body, key));
	if (!*set || *null)
		return (0);
	if (api_string(req, body, key, 1, 1, 20, &s) != 0)
		return (-1);
	if (acquire_parse_date(s, out, &why) != 0) {
		http_reply_error(req, 422, "invalid_value", path, "%s: %s",
		    key, why);
		return (-1);
	}
	return (0);
}

/* Read an optional boolean; -1 absent. */
static int
src_bool_field(struct http_req *req, json_t *body, const char *key, int *out)
{
	json_t	*v = json_object_get(body, key);
	char	 path[64];

	*out = -1;
	if (v == NULL)
		return (0);
	if (!json_is_boolean(v)) {
		snprintf(path, sizeof path, "/%s", key);
		http_reply_error(req, 422, "invalid_type", path,
		    "%s must be true or false", key);
		return (-1);
	}
	*out = json_is_true(v);
	return (0);
}

/* Read an optional integer in [lo, hi]; *out untouched when absent. */
static int
src_int_field(struct http_req *req, json_t *body, const char *key,
    int64_t lo, int64_t hi, int64_t *out, int *set)
{
	json_t	*v = json_object_get(body, key);
	char	 path[64];

	*set = 0;
	if (v == NULL || json_is_null(v))
		return (0);
	snprintf(path, sizeof path, "/%s", key);
	if (!json_is_integer(v) || json_integer_value(v) < lo ||
	    json_integer_value(v) > hi) {
		http_reply_error(req, 422, "invalid_value", path,
		    "%s must be a whole number from %lld to %lld", key,
		    (long long)lo, (long long)hi);
		return (-1);
	}
	*out = json_integer_value(v);
	*set = 1;
	return (0);
}

/* Is s one of list? */
static int
src_in(const char *s, const char *const *list)
{
	for (; *list != NULL; list++) {
		if (strcmp(s, *list) == 0)
			return (1);
	}
	return (0);
}

/* Map a write error: constraint problems are the client's. */
static void
src_write_error(struct api_ctx *ctx, const PGresult *res, const char *what,
    const char *err)
{
	const char	*st = res != NULL ? db_sqlstate(res) : "";

	if (strcmp(st, "23505") == 0)
		http_reply_error(ctx->req, 409, "conflict", "/code",
		    "a source with this code exists already (codes are "
		    "unique across channels)");
	else if (strcmp(st, "23514") == 0)
		http_reply_error(ctx->req, 422, "invalid_value", NULL,
		    "the values are inconsistent: in_app needs kind cpf_ad, "
		    "active_until cannot be before active_from");
	else
		api_db_error(ctx->req, what, err);
}

/* ---- settings -------------------------------------------------------- */

/* The settings were read or written. */
static void
settings_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	char		*cb;
	json_t		*j;

	if (err != NULL) {
		src_write_error(ctx, res, "acquisition settings", err);
		return;
	}
	xasprintf(&cb, "%s/f/callback", ctx->app->cfg->public_url);
	j = json_pack("{s:o, s:o, s:s, s:s, s:{s:b, s:o, s:s}}",
	    "add_friend_url", src_str(db_value(res, 0, 0)),
	    "landing_url", src_str(db_value(res, 0, 1)),
	    "currency", db_value(res, 0, 2), "refollow", db_value(res, 0, 3),
	    "line_login", "configured", *db_value(res, 0, 4) == 't',
	    "login_channel_id", src_str(db_value(res, 0, 5)),
	    "callback_url", cb);
	free(cb);
	http_reply_json(ctx->req, 200, j);
}

#define SETTINGS_SELECT \
	"SELECT st.add_friend_url, st.landing_url, " \
	"coalesce(st.currency, 'JPY'), coalesce(st.refollow, 'keep'), " \
	"c.login_channel_id IS NOT NULL AND " \
	"coalesce(c.login_channel_secret, '') <> '', c.login_channel_id " \
	"FROM channels c LEFT JOIN acquisition_settings st " \
	"ON st.channel_id = c.id WHERE c.id = $1"

/* GET .../acquisition */
static void
settings_get(struct api_ctx *ctx)
{
	struct db_params	*p = db_params_new();

	db_params_int(p, ctx->channel_id);
	db_query(ctx->app->db, SETTINGS_SELECT, p, settings_cb, ctx);
}

/* PUT .../acquisition {add_friend_url?, landing_url?, currency?, refollow?} */
static void
settings_put(struct api_ctx *ctx)
{
	struct db_batch		*b;
	struct db_params	*p;
	const char		*add, *land, *cur, *ref, *why;
	char			 curbuf[4] = "";
	int			 add_set, land_set;
	json_t			*body;

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (api_reject_unknown(ctx->req, body, settings_fields) != 0 ||
	    src_url_field(ctx, body, "add_friend_url", &add, &add_set) != 0 ||
	    src_url_field(ctx, body, "landing_url", &land, &land_set) != 0 ||
	    api_string(ctx->req, body, "currency", 0, 3, 3, &cur) != 0 ||
	    api_string(ctx->req, body, "refollow", 0, 1, 10, &ref) != 0)
		goto out;
	if (cur != NULL && acquire_parse_currency(cur, curbuf, &why) != 0) {
		http_reply_error(ctx->req, 422, "invalid_value", "/currency",
		    "%s", why);
		goto out;
	}
	if (ref != NULL && strcmp(ref, "keep") != 0 &&
	    strcmp(ref, "latest") != 0) {
		http_reply_error(ctx->req, 422, "invalid_value", "/refollow",
		    "refollow must be keep or latest");
		goto out;
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, add);
	db_params_bool(p, add_set);
	db_params_text(p, land);
	db_params_bool(p, land_set);
	db_params_text(p, *curbuf ? curbuf : NULL);
	db_params_text(p, ref);
	b = db_batch_new();
	db_batch_add(b, "INSERT INTO acquisition_settings AS st (channel_id, "
	    "add_friend_url, landing_url, currency, refollow) VALUES ($1, $2, "
	    "$4, coalesce($6, 'JPY'), coalesce($7, 'keep')) "
	    "ON CONFLICT (channel_id) DO UPDATE SET "
	    "add_friend_url = CASE WHEN $3 THEN $2 ELSE st.add_friend_url END, "
	    "landing_url = CASE WHEN $5 THEN $4 ELSE st.landing_url END, "
	    "currency = coalesce($6, st.currency), "
	    "refollow = coalesce($7, st.refollow), updated_at = now()", p);
	if (ref != NULL) {
		p = db_params_new();
		db_params_int(p, ctx->channel_id);
		db_batch_add(b, "SELECT musubi_acq_policy_refresh($1)", p);
	}
	if (*curbuf != '\0') {
		/* Revenue counts orders in this currency only. */
		p = db_params_new();
		db_params_int(p, ctx->channel_id);
		db_batch_add(b, "SELECT musubi_acq_orders_refresh_channel($1)",
		    p);
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_batch_add(b, SETTINGS_SELECT, p);
	db_batch_run(ctx->app->db, b, settings_cb, ctx);
out:
	json_decref(body);
}

/* ---- sources --------------------------------------------------------- */

static void	src_create_send(struct src_call *);

/* A source was created (or its generated code collided). */
static void
src_created_cb(const PGresult *res, const char *err, void *arg)
{
	struct src_call	*sc = arg;
	struct api_ctx	*ctx = sc->ctx;

	if (err != NULL && res != NULL && sc->generated && sc->tries < 3 &&
	    strcmp(db_sqlstate(res), "23505") == 0) {
		/* The made-up code was taken: make up another. */
		sc->tries++;
		free(sc->code);
		sc->code = acquire_code_generate();
		src_create_send(sc);
		return;
	}
	if (err != NULL)
		src_write_error(ctx, res, "source create", err);
	else
		http_reply_json(ctx->req, 201, src_json(ctx, res, 0));
	src_call_free(sc);
}

/* A string member of the saved values, or NULL. */
static const char *
src_val(const struct src_call *sc, const char *key)
{
	return (json_string_value(json_object_get(sc->vals, key)));
}

/* Insert the source described by sc. */
static void
src_create_send(struct src_call *sc)
{
	struct api_ctx		*ctx = sc->ctx;
	struct db_params	*p = db_params_new();

	db_params_int(p, ctx->channel_id);
	db_params_text(p, sc->code);
	db_params_text(p, src_val(sc, "name"));
	db_params_text(p, src_val(sc, "kind"));
	db_params_bool(p, json_is_true(json_object_get(sc->vals, "in_app")));
	db_params_text(p, src_val(sc, "active_from"));
	db_params_text(p, src_val(sc, "active_until"));
	db_params_int(p, json_integer_value(json_object_get(sc->vals,
	    "attribution_window_days")));
	db_params_text(p, src_val(sc, "add_friend_url"));
	db_params_text(p, src_val(sc, "landing_url"));
	db_params_text(p, ctx->channel_tz);
	db_query(ctx->app->db, "WITH s AS (INSERT INTO acquisition_sources "
	    "(channel_id, code, name, kind, in_app, active_from, active_until, "
	    "attribution_window_days, add_friend_url, landing_url) VALUES "
	    "($1, $2, $3, $4, $5, coalesce($6::date, "
	    "(now() AT TIME ZONE $11)::date), $7::date, $8, $9, $10) "
	    "RETURNING *) SELECT " SRC_COLS " FROM s", p, src_created_cb, sc);
}

/* POST .../sources */
static void
src_create(struct api_ctx *ctx)
{
	struct src_call		*sc;
	const char		*code, *name, *kind, *add, *land;
	char			 from[11], until[11];
	int			 in_app, set, null, add_set, land_set, wset;
	int64_t			 window = 7;
	json_t			*body;

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (api_reject_unknown(ctx->req, body, src_fields) != 0 ||
	    api_string(ctx->req, body, "code", 0, ACQUIRE_CODE_MIN,
	    ACQUIRE_CODE_MAX, &code) != 0 ||
	    api_string(ctx->req, body, "name", 1, 1, 200, &name) != 0 ||
	    api_string(ctx->req, body, "kind", 1, 1, 20, &kind) != 0 ||
	    src_bool_field(ctx->req, body, "in_app", &in_app) != 0 ||
	    src_date_field(ctx->req, body, "active_from", from, &set,
	    &null) != 0 ||
	    src_date_field(ctx->req, body, "active_until", until, &set,
	    &null) != 0 ||
	    src_int_field(ctx->req, body, "attribution_window_days", 1, 90,
	    &window, &wset) != 0 ||
	    src_url_field(ctx, body, "add_friend_url", &add, &add_set) != 0 ||
	    src_url_field(ctx, body, "landing_url", &land, &land_set) != 0)
		goto out;
	if (json_object_get(body, "archived") != NULL) {
		http_reply_error(ctx->req, 422, "invalid_value", "/archived",
		    "a new source cannot be archived");
		goto out;
	}
	if (code != NULL && !acquire_code_ok(code)) {
		http_reply_error(ctx->req, 422, "invalid_value", "/code",
		    "code must be 3-64 of a-z, 0-9, _ and -, starting with a "
		    "letter or digit (and not \"callback\")");
		goto out;
	}
	if (!src_in(kind, src_kinds)) {
		http_reply_error(ctx->req, 422, "invalid_value", "/kind",
		    "kind must be cpf_ad, web, qr, store, influencer or "
		    "other");
		goto out;
	}
	if (in_app == -1)
		in_app = strcmp(kind, "cpf_ad") == 0;
	if (in_app && strcmp(kind, "cpf_ad") != 0) {
		http_reply_error(ctx->req, 422, "invalid_value", "/in_app",
		    "only a cpf_ad source can be in_app");
		goto out;
	}
	if (*from != '\0' && *until != '\0' && strcmp(until, from) < 0) {
		http_reply_error(ctx->req, 422, "invalid_value",
		    "/active_until", "active_until is before active_from");
		goto out;
	}
	sc = xcalloc(1, sizeof *sc);
	sc->ctx = ctx;
	sc->generated = code == NULL;
	sc->code = code != NULL ? xstrdup(code) : acquire_code_generate();
	sc->vals = json_pack("{s:s, s:s, s:b, s:o, s:o, s:I, s:o, s:o}",
	    "name", name, "kind", kind, "in_app", in_app,
	    "active_from", *from ? json_string(from) : json_null(),
	    "active_until", *until ? json_string(until) : json_null(),
	    "attribution_window_days", (json_int_t)window,
	    "add_friend_url", src_str(add), "landing_url", src_str(land));
	src_create_send(sc);
out:
	json_decref(body);
}

/* Sources were read. */
static void
src_list_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*items;
	int		 i;

	if (err != NULL) {
		api_db_error(ctx->req, "source list", err);
		return;
	}
	items = json_array();
	for (i = 0; i < PQntuples(res); i++)
		json_array_append_new(items, src_json(ctx, res, i));
	http_reply_json(ctx->req, 200, json_pack("{s:o}", "sources", items));
}

/* GET .../sources[?archived=true] */
static void
src_list(struct api_ctx *ctx)
{
	struct db_params	*p = db_params_new();
	const char		*a = http_req_query(ctx->req, "archived");

	db_params_int(p, ctx->channel_id);
	db_params_bool(p, a != NULL && strcmp(a, "true") == 0);
	db_query(ctx->app->db, "SELECT " SRC_COLS " FROM acquisition_sources s "
	    "WHERE s.channel_id = $1 AND ($2 OR s.archived_at IS NULL) "
	    "ORDER BY s.id", p, src_list_cb, ctx);
}

/* One source was read or changed. */
static void
src_one_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL)
		src_write_error(ctx, res, "source", err);
	else if (PQntuples(res) == 0)
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such source: %s", http_req_param(ctx->req, "code"));
	else
		http_reply_json(ctx->req, 200, src_json(ctx, res, 0));
}

/* GET .../sources/{code} */
static void
src_get(struct api_ctx *ctx)
{
	struct db_params	*p = db_params_new();

	db_params_int(p, ctx->channel_id);
	db_params_text(p, http_req_param(ctx->req, "code"));
	db_query(ctx->app->db, "SELECT " SRC_COLS " FROM acquisition_sources s "
	    "WHERE s.channel_id = $1 AND s.code = $2", p, src_one_cb, ctx);
}

/* PATCH .../sources/{code} */
static void
src_patch(struct api_ctx *ctx)
{
	struct db_batch		*b;
	struct db_params	*p;
	const char		*name, *kind, *add, *land;
	char			 from[11], until[11], *s;
	int			 in_app, archived, fset, fnull, uset, unull;
	int			 add_set, land_set, wset, refresh;
	int64_t			 window = 0;
	json_t			*body, *patch;

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (api_reject_unknown(ctx->req, body, src_fields) != 0 ||
	    api_string(ctx->req, body, "name", 0, 1, 200, &name) != 0 ||
	    api_string(ctx->req, body, "kind", 0, 1, 20, &kind) != 0 ||
	    src_bool_field(ctx->req, body, "in_app", &in_app) != 0 ||
	    src_bool_field(ctx->req, body, "archived", &archived) != 0 ||
	    src_date_field(ctx->req, body, "active_from", from, &fset,
	    &fnull) != 0 ||
	    src_date_field(ctx->req, body, "active_until", until, &uset,
	    &unull) != 0 ||
	    src_int_field(ctx->req, body, "attribution_window_days", 1, 90,
	    &window, &wset) != 0 ||
	    src_url_field(ctx, body, "add_friend_url", &add, &add_set) != 0 ||
	    src_url_field(ctx, body, "landing_url", &land, &land_set) != 0)
		goto out;
	if (json_object_get(body, "code") != NULL) {
		http_reply_error(ctx->req, 422, "immutable", "/code",
		    "a source's code cannot change (it is printed on QR codes "
		    "and links); create a new source");
		goto out;
	}
	if (fnull) {
		http_reply_error(ctx->req, 422, "required", "/active_from",
		    "active_from cannot be null");
		goto out;
	}
	if (kind != NULL && !src_in(kind, src_kinds)) {
		http_reply_error(ctx->req, 422, "invalid_value", "/kind",
		    "kind must be cpf_ad, web, qr, store, influencer or "
		    "other");
		goto out;
	}
	if (kind != NULL && strcmp(kind, "cpf_ad") != 0) {
		if (in_app == 1) {
			http_reply_error(ctx->req, 422, "invalid_value",
			    "/in_app", "only a cpf_ad source can be in_app");
			goto out;
		}
		in_app = 0;
	}
	patch = json_object();
	if (name != NULL)
		json_object_set_new(patch, "name", json_string(name));
	if (kind != NULL)
		json_object_set_new(patch, "kind", json_string(kind));
	if (in_app != -1)
		json_object_set_new(patch, "in_app", json_boolean(in_app));
	if (archived != -1)
		json_object_set_new(patch, "archived", json_boolean(archived));
	if (fset)
		json_object_set_new(patch, "active_from", json_string(from));
	if (uset)
		json_object_set_new(patch, "active_until", unull ?
		    json_null() : json_string(until));
	if (wset)
		json_object_set_new(patch, "attribution_window_days",
		    json_integer(window));
	if (add_set)
		json_object_set_new(patch, "add_friend_url", src_str(add));
	if (land_set)
		json_object_set_new(patch, "landing_url", src_str(land));
	refresh = kind != NULL || in_app != -1 || fset || uset || wset;
	s = json_dumps(patch, JSON_COMPACT);
	json_decref(patch);

	b = db_batch_new();
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, http_req_param(ctx->req, "code"));
	db_params_text(p, s);
	db_batch_add(b, "UPDATE acquisition_sources s SET "
	    "name = coalesce($3::jsonb->>'name', name), "
	    "kind = coalesce($3::jsonb->>'kind', kind), "
	    "in_app = coalesce(($3::jsonb->>'in_app')::boolean, in_app), "
	    "active_from = coalesce(($3::jsonb->>'active_from')::date, "
	    "active_from), "
	    "active_until = CASE WHEN $3::jsonb ? 'active_until' "
	    "THEN ($3::jsonb->>'active_until')::date ELSE active_until END, "
	    "attribution_window_days = coalesce(($3::jsonb->>"
	    "'attribution_window_days')::integer, attribution_window_days), "
	    "add_friend_url = CASE WHEN $3::jsonb ? 'add_friend_url' "
	    "THEN $3::jsonb->>'add_friend_url' ELSE add_friend_url END, "
	    "landing_url = CASE WHEN $3::jsonb ? 'landing_url' "
	    "THEN $3::jsonb->>'landing_url' ELSE landing_url END, "
	    "archived_at = CASE WHEN $3::jsonb ? 'archived' THEN CASE WHEN "
	    "($3::jsonb->>'archived')::boolean THEN coalesce(archived_at, "
	    "now()) END ELSE archived_at END, updated_at = now() "
	    "WHERE channel_id = $1 AND code = $2", p);
	if (refresh) {
		p = db_params_new();
		db_params_int(p, ctx->channel_id);
		db_params_text(p, http_req_param(ctx->req, "code"));
		db_batch_add(b, "SELECT musubi_acq_source_refresh($1, s.id) "
		    "FROM acquisition_sources s WHERE s.channel_id = $1 "
		    "AND s.code = $2", p);
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, http_req_param(ctx->req, "code"));
	db_batch_add(b, "SELECT " SRC_COLS " FROM acquisition_sources s "
	    "WHERE s.channel_id = $1 AND s.code = $2", p);
	db_batch_run(ctx->app->db, b, src_one_cb, ctx);
	free(s);
out:
	json_decref(body);
}

/* ---- costs ----------------------------------------------------------- */

/* Reply 422 listing bad rows; json_paths adds /costs/i/field paths. */
static void
cost_reply_rows(struct api_ctx *ctx, json_t *rows, const char *what,
    int json_paths)
{
	json_t	*e;
	size_t	 i;
	char	 path[96];

	if (json_paths) {
		json_array_foreach(rows, i, e) {
			snprintf(path, sizeof path, "/costs/%lld%s%s",
			    (long long)json_integer_value(json_object_get(e,
			    "row")),
			    *json_string_value(json_object_get(e, "field")) ?
			    "/" : "",
			    json_string_value(json_object_get(e, "field")));
			json_object_set_new(e, "path", json_string(path));
		}
	}
	http_reply_json(ctx->req, 422, json_pack("{s:{s:s, s:s, s:o}}",
	    "error", "code", "invalid_rows", "message", what, "rows", rows));
}

/* A cost upload was imported (or refused). */
static void
cost_imported_cb(const PGresult *res, const char *err, void *arg)
{
	struct src_call	*sc = arg;
	struct api_ctx	*ctx = sc->ctx;
	json_t		*errors;

	if (err != NULL) {
		api_db_error(ctx->req, "cost import", err);
		goto out;
	}
	errors = json_loads(db_value(res, 0, 1), 0, NULL);
	if (errors != NULL && json_array_size(errors) > 0) {
		cost_reply_rows(ctx, errors, "some rows are not valid; nothing "
		    "was imported", sc->json_paths);
		goto out;
	}
	json_decref(errors);
	http_reply_json(ctx->req, 200, json_pack("{s:I}", "imported",
	    (json_int_t)db_int(res, 0, 0)));
out:
	src_call_free(sc);
}

/* Import parsed rows, or list their problems (and the database's). */
static void
cost_import(struct api_ctx *ctx, struct acquire_costs *c, const char *origin,
    int json_paths)
{
	struct src_call		*sc;
	struct db_params	*p;
	json_t			*j;
	char			*s;

	sc = xcalloc(1, sizeof *sc);
	sc->ctx = ctx;
	sc->json_paths = json_paths;
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	j = acquire_costs_json(c);
	s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	db_params_text(p, s);
	free(s);
	db_params_text(p, origin);
	/* With the parser's errors, only check: their rows are listed too. */
	db_params_bool(p, c->nerrors > 0);
	j = acquire_costs_errors_json(c);
	s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	db_params_text(p, s);
	free(s);
	db_query(ctx->app->db, "SELECT i.imported, (SELECT coalesce("
	    "jsonb_agg(e ORDER BY (e->>'row')::integer, e->>'field'), '[]') "
	    "FROM jsonb_array_elements(i.errors || $5::jsonb) e)::text "
	    "FROM musubi_acq_costs_import($1, $2::jsonb, $3, $4) i", p,
	    cost_imported_cb, sc);
}

/* POST .../costs.csv */
static void
cost_csv(struct api_ctx *ctx)
{
	struct acquire_costs	 c;
	const unsigned char	*body;
	size_t			 len;

	body = http_req_body(ctx->req, &len);
	if (body == NULL || len == 0) {
		http_reply_error(ctx->req, 400, "empty_body", NULL,
		    "send the CSV as the request body (Content-Type: "
		    "text/csv)");
		return;
	}
	(void)acquire_costs_parse_csv((const char *)body, len, &c);
	if (c.nerrors > 0 && c.nrows == 0) {
		cost_reply_rows(ctx, acquire_costs_errors_json(&c),
		    "some rows are not valid; nothing was imported", 0);
		acquire_costs_free(&c);
		return;
	}
	cost_import(ctx, &c, "csv", 0);
	acquire_costs_free(&c);
}

/* Read one JSON cost entry into c (row = its index) or add errors. */
static void
cost_entry(struct acquire_costs *c, json_t *e, int row, const char *code,
    const char *date)
{
	struct acquire_cost_row	 r;
	const char		*why, *key;
	char			 dec[32];
	json_t			*v;
	size_t			 before = c->nerrors, i;
	static const char *const counts[] = { "impressions", "clicks",
	    "reported_adds" };

	memset(&r, 0, sizeof r);
	r.row = row;
	if (!json_is_object(e)) {
		acquire_costs_error(c, row, "", "each cost must be an object");
		return;
	}
	json_object_foreach(e, key, v) {
		if (!src_in(key, code != NULL ? cost_fields : batch_fields))
			acquire_costs_error(c, row, "", "unknown field");
	}
	if (code == NULL) {
		v = json_object_get(e, "source");
		if (!json_is_string(v) ||
		    !acquire_code_ok(json_string_value(v)))
			acquire_costs_error(c, row, "source", "source must be "
			    "a source code");
		else
			r.source = xstrdup(json_string_value(v));
		v = json_object_get(e, "date");
		if (!json_is_string(v) || acquire_parse_date(
		    json_string_value(v), r.date, &why) != 0)
			acquire_costs_error(c, row, "date", "date must be "
			    "YYYY-MM-DD");
	} else {
		r.source = xstrdup(code);
		snprintf(r.date, sizeof r.date, "%s", date);
	}
	v = json_object_get(e, "spend");
	if (json_is_string(v)) {
		if (acquire_parse_decimal(json_string_value(v), dec,
		    sizeof dec, &why) != 0)
			acquire_costs_error(c, row, "spend", "%s", why);
		else
			r.spend = xstrdup(dec);
	} else if (json_is_integer(v) && json_integer_value(v) >= 0 &&
	    json_integer_value(v) < 1000000000000000LL) {
		xasprintf(&r.spend, "%lld", (long long)json_integer_value(v));
	} else if (json_is_real(v) && json_real_value(v) >= 0 &&
	    json_real_value(v) < 1e15) {
		snprintf(dec, sizeof dec, "%.4f", json_real_value(v));
		r.spend = xstrdup(dec);
	} else
		acquire_costs_error(c, row, "spend", "spend is required: a "
		    "number >= 0 or a decimal string such as \"1234.50\"");
	v = json_object_get(e, "currency");
	if (v != NULL && (!json_is_string(v) || acquire_parse_currency(
	    json_string_value(v), r.currency, &why) != 0))
		acquire_costs_error(c, row, "currency", "currency must be a "
		    "three-letter code such as JPY");
	for (i = 0; i < 3; i++) {
		v = json_object_get(e, counts[i]);
		if (v == NULL || json_is_null(v))
			continue;
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > (i == 2 ? 1000000000 :
		    1000000000000000LL)) {
			acquire_costs_error(c, row, counts[i], "%s must be a "
			    "whole number >= 0", counts[i]);
			continue;
		}
		if (i == 0) {
			r.impressions = json_integer_value(v);
			r.has_impressions = 1;
		} else if (i == 1) {
			r.clicks = json_integer_value(v);
			r.has_clicks = 1;
		} else {
			r.adds = json_integer_value(v);
			r.has_adds = 1;
		}
	}
	if (c->nerrors != before) {
		free(r.source);
		free(r.spend);
		return;
	}
	c->rows = xreallocarray(c->rows, c->nrows + 1, sizeof *c->rows);
	c->rows[c->nrows++] = r;
}

/* POST .../costs {"costs": [...]} */
static void
cost_batch(struct api_ctx *ctx)
{
	struct acquire_costs	 c;
	json_t			*body, *a, *e;
	size_t			 i;

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	a = json_object_get(body, "costs");
	if (!json_is_array(a) || json_array_size(a) == 0 ||
	    json_array_size(a) > ACQUIRE_CSV_MAX_ROWS ||
	    json_object_size(body) != 1) {
		http_reply_error(ctx->req, 422, "invalid_value", "/costs",
		    "send {\"costs\": [...]} with 1 to %d entries",
		    ACQUIRE_CSV_MAX_ROWS);
		json_decref(body);
		return;
	}
	memset(&c, 0, sizeof c);
	json_array_foreach(a, i, e)
		cost_entry(&c, e, (int)i, NULL, NULL);
	json_decref(body);
	if (c.nerrors > 0 && c.nrows == 0) {
		cost_reply_rows(ctx, acquire_costs_errors_json(&c),
		    "some rows are not valid; nothing was imported", 1);
		acquire_costs_free(&c);
		return;
	}
	cost_import(ctx, &c, "api", 1);
	acquire_costs_free(&c);
}

/* The day's cost was read back after a PUT. */
static void
cost_read_cb(const PGresult *res, const char *err, void *arg)
{
	struct src_call	*sc = arg;
	struct api_ctx	*ctx = sc->ctx;

	if (err != NULL)
		api_db_error(ctx->req, "cost read", err);
	else if (PQntuples(res) == 0)
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no cost for %s on %s", sc->code, sc->date);
	else
		http_reply_json(ctx->req, 200, cost_json(sc->code, res, 0));
	src_call_free(sc);
}

/* Read one day's cost row. */
static void
cost_read(struct src_call *sc)
{
	struct db_params	*p = db_params_new();

	db_params_int(p, sc->ctx->channel_id);
	db_params_text(p, sc->code);
	db_params_text(p, sc->date);
	db_query(sc->ctx->app->db, "SELECT " COST_COLS " FROM "
	    "acquisition_costs c JOIN acquisition_sources s ON "
	    "s.channel_id = c.channel_id AND s.id = c.source_id "
	    "WHERE c.channel_id = $1 AND s.code = $2 AND c.day = $3::date",
	    p, cost_read_cb, sc);
}

/* One day's cost was imported (or refused). */
static void
cost_put_cb(const PGresult *res, const char *err, void *arg)
{
	struct src_call	*sc = arg;
	struct api_ctx	*ctx = sc->ctx;
	json_t		*errors, *e;
	const char	*field;
	char		 path[32];

	if (err != NULL) {
		api_db_error(ctx->req, "cost import", err);
		src_call_free(sc);
		return;
	}
	errors = json_loads(db_value(res, 0, 1), 0, NULL);
	if (errors != NULL && (e = json_array_get(errors, 0)) != NULL) {
		field = json_string_value(json_object_get(e, "field"));
		if (field != NULL && strcmp(field, "source") == 0)
			http_reply_error(ctx->req, 404, "not_found", NULL,
			    "%s", json_string_value(json_object_get(e,
			    "message")));
		else {
			snprintf(path, sizeof path, "/%s", field != NULL ?
			    field : "");
			http_reply_error(ctx->req, 422, "invalid_value", path,
			    "%s", json_string_value(json_object_get(e,
			    "message")));
		}
		json_decref(errors);
		src_call_free(sc);
		return;
	}
	json_decref(errors);
	cost_read(sc);
}

/* PUT .../sources/{code}/costs/{date} */
static void
cost_put(struct api_ctx *ctx)
{
	struct acquire_costs	 c;
	struct src_call		*sc;
	struct db_params	*p;
	const char		*code = http_req_param(ctx->req, "code");
	const char		*why;
	char			 date[11], path[64], *s;
	json_t			*body, *rows;

	if (acquire_parse_date(http_req_param(ctx->req, "date"), date,
	    &why) != 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such day: %s", why);
		return;
	}
	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	memset(&c, 0, sizeof c);
	cost_entry(&c, body, 0, code, date);
	json_decref(body);
	if (c.nerrors > 0) {
		snprintf(path, sizeof path, "/%s", c.errors[0].field);
		http_reply_error(ctx->req, 422, "invalid_value",
		    *c.errors[0].field ? path : NULL, "%s",
		    c.errors[0].message);
		acquire_costs_free(&c);
		return;
	}
	sc = xcalloc(1, sizeof *sc);
	sc->ctx = ctx;
	sc->code = xstrdup(code);
	sc->date = xstrdup(date);
	rows = acquire_costs_json(&c);
	s = json_dumps(rows, JSON_COMPACT);
	json_decref(rows);
	acquire_costs_free(&c);
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, s);
	free(s);
	db_query(ctx->app->db, "SELECT imported, errors::text FROM "
	    "musubi_acq_costs_import($1, $2::jsonb, 'api', false)", p,
	    cost_put_cb, sc);
}

/* A day's cost was deleted (or was not there). */
static void
cost_deleted_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL)
		api_db_error(ctx->req, "cost delete", err);
	else if (*db_value(res, 0, 0) != 't')
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such cost");
	else
		http_reply_raw(ctx->req, 204, NULL, NULL, 0);
}

/* DELETE .../sources/{code}/costs/{date} */
static void
cost_delete(struct api_ctx *ctx)
{
	struct db_params	*p;
	const char		*why;
	char			 date[11];

	if (acquire_parse_date(http_req_param(ctx->req, "date"), date,
	    &why) != 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such day: %s", why);
		return;
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, http_req_param(ctx->req, "code"));
	db_params_text(p, date);
	db_query(ctx->app->db, "SELECT musubi_acq_cost_delete($1, $2, "
	    "$3::date)", p, cost_deleted_cb, ctx);
}

/* A source's costs were read. */
static void
cost_list_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*items;
	int		 i;

	if (err != NULL) {
		api_db_error(ctx->req, "cost list", err);
		return;
	}
	if (PQntuples(res) == 0 || db_value(res, 0, 8) == NULL) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such source: %s", http_req_param(ctx->req, "code"));
		return;
	}
	items = json_array();
	for (i = 0; i < PQntuples(res); i++) {
		if (db_value(res, i, 0) != NULL)
			json_array_append_new(items, cost_json(
			    http_req_param(ctx->req, "code"), res, i));
	}
	http_reply_json(ctx->req, 200, json_pack("{s:o}", "costs", items));
}

/* Read an optional ?name=YYYY-MM-DD; -1 after replying. */
static int
src_query_date(struct api_ctx *ctx, const char *name, char *out)
{
	const char	*v = http_req_query(ctx->req, name), *why;
	char		 path[32];

	*out = '\0';
	if (v == NULL || *v == '\0')
		return (0);
	if (acquire_parse_date(v, out, &why) != 0) {
		snprintf(path, sizeof path, "?%s", name);
		http_reply_error(ctx->req, 422, "invalid_value", path,
		    "%s: %s", name, why);
		return (-1);
	}
	return (0);
}

/* GET .../sources/{code}/costs?from=&to= */
static void
cost_list(struct api_ctx *ctx)
{
	struct db_params	*p;
	char			 from[11], to[11];

	if (src_query_date(ctx, "from", from) != 0 ||
	    src_query_date(ctx, "to", to) != 0)
		return;
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, http_req_param(ctx->req, "code"));
	db_params_text(p, *from ? from : NULL);
	db_params_text(p, *to ? to : NULL);
	db_params_int(p, SRC_COSTS_MAX);
	db_query(ctx->app->db, "SELECT " COST_COLS ", s.id FROM "
	    "acquisition_sources s LEFT JOIN LATERAL (SELECT * FROM "
	    "acquisition_costs c WHERE c.channel_id = s.channel_id AND "
	    "c.source_id = s.id AND ($3::date IS NULL OR c.day >= $3::date) "
	    "AND ($4::date IS NULL OR c.day <= $4::date) ORDER BY c.day DESC "
	    "LIMIT $5) c ON true WHERE s.channel_id = $1 AND s.code = $2 "
	    "ORDER BY c.day DESC", p, cost_list_cb, ctx);
}

/* ---- reports --------------------------------------------------------- */

/* The report was built. */
static void
report_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	const char	*v, *table;
	char		*disp;

	if (err != NULL) {
		api_db_error(ctx->req, "acquisition report", err);
		return;
	}
	if (*db_value(res, 0, 1) == 't') {
		http_reply_error(ctx->req, 404, "not_found", "?source",
		    "no such source: %s", http_req_query(ctx->req, "source"));
		return;
	}
	if (*db_value(res, 0, 2) != 't') {
		http_reply_error(ctx->req, 422, "invalid_value", "?to",
		    "the period must run forward and span at most %d days",
		    SRC_MAX_SPAN_DAYS);
		return;
	}
	v = db_value(res, 0, 0);
	if (strstr(http_req_path(ctx->req), ".csv") == NULL) {
		http_reply_raw(ctx->req, 200, "application/json; charset=utf-8",
		    v, strlen(v));
		return;
	}
	table = http_req_query(ctx->req, "table");
	xasprintf(&disp, "attachment; filename=\"acquisition-%s-%s-%s-%s.csv\"",
	    ctx->channel_slug, db_value(res, 0, 3), db_value(res, 0, 4),
	    table != NULL ? table : "sources");
	http_reply_header(ctx->req, "Content-Disposition", disp);
	free(disp);
	http_reply_raw(ctx->req, 200, "text/csv; charset=utf-8", v,
	    strlen(v));
}

/* GET .../reports/acquisition[.csv]?from=&to=&source=&table= */
static void
report_get(struct api_ctx *ctx)
{
	struct db_params	*p;
	const char		*src = http_req_query(ctx->req, "source");
	const char		*table = http_req_query(ctx->req, "table");
	int			 csv;
	char			 from[11], to[11], *sql;

	csv = strstr(http_req_path(ctx->req), ".csv") != NULL;
	if (src_query_date(ctx, "from", from) != 0 ||
	    src_query_date(ctx, "to", to) != 0)
		return;
	if (src != NULL && !acquire_code_ok(src)) {
		http_reply_error(ctx->req, 404, "not_found", "?source",
		    "no such source");
		return;
	}
	if (table != NULL && (!csv || (strcmp(table, "sources") != 0 &&
	    strcmp(table, "cohorts") != 0 && strcmp(table, "funnel") != 0))) {
		http_reply_error(ctx->req, 422, "invalid_value", "?table",
		    "table is sources, cohorts or funnel (CSV only)");
		return;
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, *from ? from : NULL);
	db_params_text(p, *to ? to : NULL);
	db_params_text(p, src);
	db_params_text(p, ctx->channel_tz);
	db_params_text(p, table != NULL ? table : "sources");
	db_params_int(p, SRC_MAX_SPAN_DAYS);
	xasprintf(&sql, "SELECT CASE WHEN ok AND NOT missing THEN %s END, "
	    "missing, ok, f::text, t::text FROM (SELECT y.f, y.t, "
	    "$6::text AS tbl, "
	    "y.f <= y.t AND y.t - y.f <= $7 AS ok, $4::text IS NOT NULL AND "
	    "s.id IS NULL AS missing, s.id AS sid FROM (SELECT "
	    "coalesce($2::date, coalesce($3::date, x.today) - 29) AS f, "
	    "coalesce($3::date, x.today) AS t FROM (SELECT "
	    "(now() AT TIME ZONE $5)::date AS today) x) y "
	    "LEFT JOIN acquisition_sources s ON s.channel_id = $1 "
	    "AND s.code = $4) z",
	    csv ? "E'\\xef\\xbb\\xbf' || musubi_acq_report_csv($1, f, t, sid, "
	    "tbl)" : "musubi_acq_report($1, f, t, sid)::text");
	db_query(ctx->app->db, sql, p, report_cb, ctx);
	free(sql);
}

/* Register the acquisition routes. */
void
api_sources_init(struct api *api)
{
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/acquisition",
	    API_CHANNEL, settings_get);
	api_route(api, HTTP_PUT, "/api/v1/channels/{slug}/acquisition",
	    API_CHANNEL, settings_put);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/sources",
	    API_CHANNEL, src_list);
	api_route(api, HTTP_POST, "/api/v1/channels/{slug}/sources",
	    API_CHANNEL, src_create);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/sources/{code}",
	    API_CHANNEL, src_get);
	api_route(api, HTTP_PATCH, "/api/v1/channels/{slug}/sources/{code}",
	    API_CHANNEL, src_patch);
	api_route(api, HTTP_GET,
	    "/api/v1/channels/{slug}/sources/{code}/costs", API_CHANNEL,
	    cost_list);
	api_route(api, HTTP_PUT,
	    "/api/v1/channels/{slug}/sources/{code}/costs/{date}",
	    API_CHANNEL, cost_put);
	api_route(api, HTTP_DELETE,
	    "/api/v1/channels/{slug}/sources/{code}/costs/{date}",
	    API_CHANNEL, cost_delete);
	api_route(api, HTTP_POST, "/api/v1/channels/{slug}/costs.csv",
	    API_CHANNEL, cost_csv);
	api_route(api, HTTP_POST, "/api/v1/channels/{slug}/costs",
	    API_CHANNEL, cost_batch);
	api_route(api, HTTP_GET,
	    "/api/v1/channels/{slug}/reports/acquisition.csv", API_CHANNEL,
	    report_get);
	api_route(api, HTTP_GET,
	    "/api/v1/channels/{slug}/reports/acquisition", API_CHANNEL,
	    report_get);
}
