/* SPDX-License-Identifier: ISC */
/*
 * api_identity.c -- linking LINE friends and shop customers through the API.
 *
 *	GET    .../friends/{user_id}/customers		links, current and past
 *	POST   .../friends/{user_id}/customers		link (admin)
 *	DELETE .../friends/{user_id}/customers/{shop}/{customer_id} (admin)
 *	POST   .../friends/{user_id}/account-link	issue a LINE link token
 *	POST   .../account-link/nonces			shop registers nonce
 *	POST   .../identity/line-login			verify an ID token, link
 *
 * Every path is under /api/v1/channels/{slug}.  The rules (one current
 * friend per customer, rollups recomputed in the same transaction) live in
 * sql/007_identity.sql.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "musubi/api.h"
#include "musubi/app.h"
#include "musubi/chancache.h"
#include "musubi/config.h"
#include "musubi/crypto.h"
#include "musubi/curlev.h"
#include "musubi/db.h"
#include "musubi/httpd.h"
#include "musubi/identity.h"
#include "musubi/line.h"
#include "musubi/log.h"
#include "musubi/metrics.h"
#include "musubi/xmalloc.h"

#define ISO8601(col) \
	"to_char(" col " AT TIME ZONE 'UTC', " \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* Per-request state of the multi-step handlers. */
struct ident_call {
	struct api_ctx	*ctx;
	char		*user_id;
	char		*shop;
	char		*customer;
	char		*login_url;
	char		*link_token;
	char		*nonce;
	int		 replace;
};

/* Free a call. */
static void
ident_call_free(struct ident_call *ic)
{
	free(ic->user_id);
	free(ic->shop);
	free(ic->customer);
	free(ic->login_url);
	free(ic->link_token);
	free(ic->nonce);
	free(ic);
}

/* Check the {user_id} in the path; replies 404 if it cannot be one. */
static const char *
ident_user(struct api_ctx *ctx)
{
	const char	*u = http_req_param(ctx->req, "user_id");

	if (!line_is_user_id(u)) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such friend");
		return (NULL);
	}
	return (u);
}

/* The links of a friend were read. */
static void
ident_list_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*items;
	int		 i;

	if (err != NULL) {
		api_db_error(ctx->req, "customer links", err);
		return;
	}
	if (PQntuples(res) == 0 || db_value(res, 0, 0) == NULL) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such friend");
		return;
	}
	items = json_array();
	for (i = 0; i < PQntuples(res); i++) {
		if (db_value(res, i, 1) == NULL)
			continue;
		json_array_append_new(items, json_pack("{s:s, s:s, s:s, "
		    "s:s, s:o}", "shop", db_value(res, i, 1),
		    "customer_id", db_value(res, i, 2),
		    "method", db_value(res, i, 3),
		    "linked_at", db_value(res, i, 4),
		    "unlinked_at", db_value(res, i, 5) != NULL ?
		    json_string(db_value(res, i, 5)) : json_null()));
	}
	http_reply_json(ctx->req, 200, json_pack("{s:o}", "customers",
	    items));
}

/* GET .../friends/{user_id}/customers */
static void
ident_list(struct api_ctx *ctx)
{
	const char		*u;
	struct db_params	*p;

	if ((u = ident_user(ctx)) == NULL)
		return;
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, u);
	db_query(ctx->app->db, "SELECT f.id, s.slug, c.external_id, l.method, "
	    ISO8601("l.linked_at") ", " ISO8601("l.unlinked_at") " "
	    "FROM friends f LEFT JOIN friend_customer_links l "
	    "ON l.channel_id = f.channel_id AND l.friend_id = f.id "
	    "LEFT JOIN customers c ON c.channel_id = l.channel_id "
	    "AND c.id = l.customer_id LEFT JOIN shops s "
	    "ON s.channel_id = c.channel_id AND s.id = c.shop_id "
	    "WHERE f.channel_id = $1 AND f.user_id = $2 "
	    "ORDER BY l.linked_at DESC NULLS LAST, l.id DESC", p,
	    ident_list_cb, ctx);
}

/* musubi_identity_link() returned (columns: friend, customer, result). */
static void
ident_linked_cb(const PGresult *res, const char *err, void *arg)
{
	struct ident_call	*ic = arg;
	struct api_ctx		*ctx = ic->ctx;
	const char		*r;
	char			 label[64];

	if (err != NULL) {
		api_db_error(ctx->req, "link", err);
		goto out;
	}
	if (db_value(res, 0, 0) == NULL) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such friend");
		goto out;
	}
	if (db_value(res, 0, 1) == NULL) {
		http_reply_error(ctx->req, 404, "not_found", "/shop",
		    "no such shop in this channel");
		goto out;
	}
	r = db_value(res, 0, 2);
	if (strcmp(r, "conflict") == 0) {
		http_reply_error(ctx->req, 409, "conflict", "/customer_id",
		    "this customer is linked to another friend; send "
		    "\"replace\": true to move the link");
		goto out;
	}
	if (strcmp(r, "linked") == 0) {
		snprintf(label, sizeof label, "method=\"%s\"",
		    ic->login_url != NULL ? "line_login" : "api");
		metrics_add(ctx->app->metrics, "musubi_identity_links_total",
		    label, 1);
		log_info("api: rid=%s friend linked to a %s customer",
		    http_req_id(ctx->req), ic->shop);
	}
	http_reply_json(ctx->req, strcmp(r, "linked") == 0 ? 201 : 200,
	    json_pack("{s:s, s:s, s:s, s:s}", "user_id", ic->user_id,
	    "shop", ic->shop, "customer_id", ic->customer, "result", r));
out:
	ident_call_free(ic);
}

/* Link (friend by user id, customer by shop + external id). */
static void
ident_link(struct ident_call *ic, const char *method, int create_friend)
{
	struct db_params	*p = db_params_new();

	db_params_int(p, ic->ctx->channel_id);
	db_params_text(p, ic->user_id);
	db_params_text(p, ic->shop);
	db_params_text(p, ic->customer);
	db_params_text(p, method);
	db_params_bool(p, ic->replace);
	db_params_bool(p, create_friend);
	db_query(ic->ctx->app->db,
	    "WITH nf AS (INSERT INTO friends (channel_id, user_id) "
	    "SELECT $1, $2 WHERE $7 ON CONFLICT (channel_id, user_id) "
	    "DO NOTHING RETURNING id), "
	    "f AS (SELECT id FROM nf UNION ALL SELECT id FROM friends "
	    "WHERE channel_id = $1 AND user_id = $2), "
	    "c AS (SELECT musubi_identity_customer($1, $3, $4) AS id "
	    "WHERE EXISTS (SELECT 1 FROM f)) "
	    "SELECT (SELECT id FROM f LIMIT 1), (SELECT id FROM c), "
	    "CASE WHEN (SELECT id FROM c) IS NOT NULL THEN "
	    "musubi_identity_link($1, (SELECT id FROM f LIMIT 1), "
	    "(SELECT id FROM c), $5, $6) END", p, ident_linked_cb, ic);
}

/* Read shop and customer_id from a body; 0 or -1 (replied). */
static int
ident_customer_fields(struct api_ctx *ctx, json_t *body,
    struct ident_call *ic)
{
	const char	*shop, *cust;

	if (api_string(ctx->req, body, "shop", 1, 1, 63, &shop) != 0 ||
	    api_string(ctx->req, body, "customer_id", 1, 1, 200, &cust) != 0)
		return (-1);
	ic->shop = xstrdup(shop);
	ic->customer = xstrdup(cust);
	return (0);
}

/* POST .../friends/{user_id}/customers (admin) */
static void
ident_link_api(struct api_ctx *ctx)
{
	static const char *const fields[] = { "shop", "customer_id",
	    "replace", NULL };
	struct ident_call	*ic;
	const char		*u;
	json_t			*body, *rep;

	if ((u = ident_user(ctx)) == NULL ||
	    (body = http_req_json(ctx->req)) == NULL)
		return;
	ic = xcalloc(1, sizeof *ic);
	ic->ctx = ctx;
	ic->user_id = xstrdup(u);
	rep = json_object_get(body, "replace");
	if (api_reject_unknown(ctx->req, body, fields) != 0 ||
	    ident_customer_fields(ctx, body, ic) != 0)
		goto bad;
	if (rep != NULL && !json_is_boolean(rep)) {
		http_reply_error(ctx->req, 422, "invalid_type", "/replace",
		    "replace must be true or false");
		goto bad;
	}
	ic->replace = json_is_true(rep);
	json_decref(body);
	ident_link(ic, "api", 0);
	return;
bad:
	json_decref(body);
	ident_call_free(ic);
}

/* The unlink ran. */
static void
ident_unlinked_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		api_db_error(ctx->req, "unlink", err);
		return;
	}
	if (PQntuples(res) == 0 || db_value(res, 0, 0) == NULL ||
	    *db_value(res, 0, 0) != 't') {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such link");
		return;
	}
	http_reply_raw(ctx->req, 204, NULL, NULL, 0);
}

/* DELETE .../friends/{user_id}/customers/{shop}/{customer_id} (admin) */
static void
ident_unlink(struct api_ctx *ctx)
{
	struct db_params	*p;
	const char		*u;

	if ((u = ident_user(ctx)) == NULL)
		return;
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, u);
	db_params_text(p, http_req_param(ctx->req, "shop"));
	db_params_text(p, http_req_param(ctx->req, "customer_id"));
	db_query(ctx->app->db, "SELECT musubi_identity_unlink($1, f.id, c.id) "
	    "FROM friends f, customers c JOIN shops s ON s.channel_id = "
	    "c.channel_id AND s.id = c.shop_id WHERE f.channel_id = $1 AND "
	    "f.user_id = $2 AND c.channel_id = $1 AND s.slug = $3 AND "
	    "c.external_id = $4", p, ident_unlinked_cb, ctx);
}

/* LINE answered the link-token request. */
static void
ident_token_cb(const struct curlev_resp *resp, void *arg)
{
	struct ident_call	*ic = arg;
	struct api_ctx		*ctx = ic->ctx;
	json_t			*j = NULL, *tok;
	char			*url, *enc;

	if (resp->err != NULL || resp->status >= 500 || resp->status == 429) {
		log_warnx("api: rid=%s link token: %s", http_req_id(ctx->req),
		    resp->err != NULL ? resp->err : "LINE error");
		http_reply_header(ctx->req, "Retry-After", "1");
		http_reply_error(ctx->req, 503, "line_unavailable", NULL,
		    "LINE did not issue a link token (status %ld); retry",
		    resp->status);
		goto out;
	}
	if (resp->status != 200 ||
	    (j = json_loadb(resp->body, resp->bodylen, 0, NULL)) == NULL ||
	    !json_is_string(tok = json_object_get(j, "linkToken"))) {
		http_reply_error(ctx->req, 502, "line_error", NULL,
		    "LINE refused to issue a link token (status %ld): %.200s",
		    resp->status, resp->body);
		goto out;
	}
	enc = evhttp_encode_uri(json_string_value(tok));
	xasprintf(&url, "%s%clinkToken=%s", ic->login_url,
	    strchr(ic->login_url, '?') != NULL ? '&' : '?', enc);
	free(enc);
	http_reply_json(ctx->req, 200, json_pack("{s:s, s:s, s:i}",
	    "link_token", json_string_value(tok), "url", url,
	    "expires_in", 600));
	free(url);
out:
	json_decref(j);
	ident_call_free(ic);
}

/* The channel's access token is known: ask LINE for a link token. */
static void
ident_token_channel_cb(const struct channel_info *ch, const char *err,
    void *arg)
{
	struct ident_call	*ic = arg;
	struct api_ctx		*ctx = ic->ctx;
	struct curlev_req	*cr;
	char			*url, *auth;

	if (err != NULL || ch == NULL) {
		api_db_error(ctx->req, "channel", err ? err : "gone");
		ident_call_free(ic);
		return;
	}
	if (*ch->token == '\0') {
		http_reply_error(ctx->req, 409, "no_access_token", NULL,
		    "set the channel's channel_access_token first");
		ident_call_free(ic);
		return;
	}
	xasprintf(&url, "%s/v2/bot/user/%s/linkToken",
	    ctx->app->cfg->line_api_base, ic->user_id);
	xasprintf(&auth, "Bearer %s", ch->token);
	cr = curlev_req_new("POST", url);
	curlev_req_header(cr, "Authorization", auth);
	curlev_req_body(cr, "application/json", "", 0);
	curlev_req_max_response(cr, 16 * 1024);
	free(url);
	explicit_bzero(auth, strlen(auth));
	free(auth);
	curlev_send(ctx->app->curl, cr, ident_token_cb, ic);
}

/* POST .../friends/{user_id}/account-link {"login_url": "https://..."} */
static void
ident_account_link(struct api_ctx *ctx)
{
	static const char *const fields[] = { "login_url", NULL };
	struct ident_call	*ic;
	const char		*u, *login;
	json_t			*body;

	if ((u = ident_user(ctx)) == NULL ||
	    (body = http_req_json(ctx->req)) == NULL)
		return;
	if (api_reject_unknown(ctx->req, body, fields) != 0 ||
	    api_string(ctx->req, body, "login_url", 1, 9, 1000,
	    &login) != 0) {
		json_decref(body);
		return;
	}
	if (strncmp(login, "https://", 8) != 0 &&
	    strncmp(login, "http://", 7) != 0) {
		http_reply_error(ctx->req, 422, "invalid_value", "/login_url",
		    "login_url must be the shop's https URL where the customer "
		    "signs in");
		json_decref(body);
		return;
	}
	ic = xcalloc(1, sizeof *ic);
	ic->ctx = ctx;
	ic->user_id = xstrdup(u);
	ic->login_url = xstrdup(login);
	json_decref(body);
	chancache_get(ctx->app->channels, ctx->channel_slug,
	    ident_token_channel_cb, ic);
}

/* The nonce was stored. */
static void
ident_nonce_cb(const PGresult *res, const char *err, void *arg)
{
	struct ident_call	*ic = arg;
	struct api_ctx		*ctx = ic->ctx;
	char			*url, *t, *n;

	if (err != NULL) {
		if (res != NULL && strcmp(db_sqlstate(res), "23505") == 0)
			http_reply_error(ctx->req, 409, "conflict", "/nonce",
			    "this nonce was already registered");
		else
			api_db_error(ctx->req, "nonce", err);
		goto out;
	}
	if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 404, "not_found", "/shop",
		    "no such shop in this channel");
		goto out;
	}
	t = evhttp_encode_uri(ic->link_token);
	n = evhttp_encode_uri(ic->nonce);
	xasprintf(&url, "%s/dialog/bot/accountLink?linkToken=%s&nonce=%s",
	    ctx->app->cfg->line_access_base, t, n);
	free(t);
	free(n);
	http_reply_json(ctx->req, 201, json_pack("{s:s, s:s, s:s}", "nonce",
	    ic->nonce, "expires_at", db_value(res, 0, 0), "redirect_url",
	    url));
	free(url);
out:
	ident_call_free(ic);
}

/* POST .../account-link/nonces {shop, customer_id, link_token, nonce?} */
static void
ident_nonce(struct api_ctx *ctx)
{
	static const char *const fields[] = { "shop", "customer_id",
	    "link_token", "nonce", NULL };
	struct ident_call	*ic;
	struct db_params	*p;
	const char		*tok, *nonce;
	json_t			*body;

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	ic = xcalloc(1, sizeof *ic);
	ic->ctx = ctx;
	if (api_reject_unknown(ctx->req, body, fields) != 0 ||
	    ident_customer_fields(ctx, body, ic) != 0 ||
	    api_string(ctx->req, body, "link_token", 1, 1, 200, &tok) != 0 ||
	    api_string(ctx->req, body, "nonce", 0, 10, 255, &nonce) != 0) {
		json_decref(body);
		ident_call_free(ic);
		return;
	}
	ic->link_token = xstrdup(tok);
	/* 128 bits from the CSPRNG unless the shop brings its own. */
	ic->nonce = nonce != NULL ? xstrdup(nonce) : crypto_token(16);
	json_decref(body);
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, ic->nonce);
	db_params_text(p, ic->shop);
	db_params_text(p, ic->customer);
	db_params_int(p, IDENTITY_NONCE_TTL_S);
	db_query(ctx->app->db, "INSERT INTO account_link_nonces (channel_id, "
	    "nonce, customer_id, expires_at) SELECT $1, $2, c, "
	    "now() + make_interval(secs => $5) FROM "
	    "musubi_identity_customer($1, $3, $4) AS c WHERE c IS NOT NULL "
	    "RETURNING " ISO8601("expires_at"), p, ident_nonce_cb, ic);
}

/* LINE verified (or not) the ID token. */
static void
ident_verify_cb(const struct curlev_resp *resp, void *arg)
{
	struct ident_call	*ic = arg;
	struct api_ctx		*ctx = ic->ctx;
	json_t			*j = NULL, *sub;

	if (resp->err != NULL || resp->status >= 500 || resp->status == 429) {
		http_reply_header(ctx->req, "Retry-After", "1");
		http_reply_error(ctx->req, 503, "line_unavailable", NULL,
		    "LINE could not verify the ID token now; retry");
		goto fail;
	}
	j = json_loadb(resp->body, resp->bodylen, 0, NULL);
	if (resp->status != 200 || j == NULL ||
	    !json_is_string(sub = json_object_get(j, "sub")) ||
	    !line_is_user_id(json_string_value(sub))) {
		const char *why = j != NULL ? json_string_value(
		    json_object_get(j, "error_description")) : NULL;

		http_reply_error(ctx->req, 422, "invalid_id_token", "/id_token",
		    "LINE rejected the ID token: %s",
		    why != NULL ? why : "no subject");
		goto fail;
	}
	ic->user_id = xstrdup(json_string_value(sub));
	json_decref(j);
	ic->replace = 1;
	ident_link(ic, "line_login", 1);
	return;
fail:
	json_decref(j);
	ident_call_free(ic);
}

/* The channel's LINE Login channel id was read. */
static void
ident_login_channel_cb(const PGresult *res, const char *err, void *arg)
{
	struct ident_call	*ic = arg;
	struct api_ctx		*ctx = ic->ctx;
	struct curlev_req	*cr;
	char			*url, *form, *t, *c, *n = NULL;

	if (err != NULL) {
		api_db_error(ctx->req, "login channel", err);
		ident_call_free(ic);
		return;
	}
	if (db_value(res, 0, 0) == NULL) {
		http_reply_error(ctx->req, 409, "no_login_channel", NULL,
		    "set the channel's login_channel_id (the LINE Login "
		    "channel under the same provider) first");
		ident_call_free(ic);
		return;
	}
	t = evhttp_encode_uri(ic->link_token);	/* the ID token */
	c = evhttp_encode_uri(db_value(res, 0, 0));
	if (ic->nonce != NULL)
		n = evhttp_encode_uri(ic->nonce);
	xasprintf(&form, "id_token=%s&client_id=%s%s%s", t, c,
	    n != NULL ? "&nonce=" : "", n != NULL ? n : "");
	free(t);
	free(c);
	free(n);
	xasprintf(&url, "%s/oauth2/v2.1/verify", ctx->app->cfg->line_api_base);
	cr = curlev_req_new("POST", url);
	curlev_req_body(cr, "application/x-www-form-urlencoded", form,
	    strlen(form));
	curlev_req_max_response(cr, 16 * 1024);
	free(url);
	free(form);
	curlev_send(ctx->app->curl, cr, ident_verify_cb, ic);
}

/* POST .../identity/line-login {shop, customer_id, id_token, nonce?} */
static void
ident_line_login(struct api_ctx *ctx)
{
	static const char *const fields[] = { "shop", "customer_id",
	    "id_token", "nonce", NULL };
	struct ident_call	*ic;
	struct db_params	*p;
	const char		*tok, *nonce;
	json_t			*body;

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	ic = xcalloc(1, sizeof *ic);
	ic->ctx = ctx;
	if (api_reject_unknown(ctx->req, body, fields) != 0 ||
	    ident_customer_fields(ctx, body, ic) != 0 ||
	    api_string(ctx->req, body, "id_token", 1, 10, 8000, &tok) != 0 ||
	    api_string(ctx->req, body, "nonce", 0, 1, 255, &nonce) != 0) {
		json_decref(body);
		ident_call_free(ic);
		return;
	}
	ic->link_token = xstrdup(tok);
	ic->nonce = nonce != NULL ? xstrdup(nonce) : NULL;
	ic->login_url = xstrdup("");	/* marks the method for metrics */
	json_decref(body);
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_query(ctx->app->db, "SELECT login_channel_id FROM channels "
	    "WHERE id = $1", p, ident_login_channel_cb, ic);
}

/* Register the identity routes. */
void
api_identity_init(struct api *api)
{
	api_route(api, HTTP_GET,
	    "/api/v1/channels/{slug}/friends/{user_id}/customers",
	    API_CHANNEL, ident_list);
	api_route(api, HTTP_POST,
	    "/api/v1/channels/{slug}/friends/{user_id}/customers",
	    API_CHANNEL_ADMIN, ident_link_api);
	api_route(api, HTTP_DELETE, "/api/v1/channels/{slug}/friends/"
	    "{user_id}/customers/{shop}/{customer_id}", API_CHANNEL_ADMIN,
	    ident_unlink);
	api_route(api, HTTP_POST,
	    "/api/v1/channels/{slug}/friends/{user_id}/account-link",
	    API_CHANNEL, ident_account_link);
	api_route(api, HTTP_POST, "/api/v1/channels/{slug}/account-link/nonces",
	    API_CHANNEL, ident_nonce);
	api_route(api, HTTP_POST, "/api/v1/channels/{slug}/identity/line-login",
	    API_CHANNEL, ident_line_login);
}
