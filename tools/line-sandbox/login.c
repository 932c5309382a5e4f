/* SPDX-License-Identifier: ISC */
/*
 * login.c -- the LINE Login side of the sandbox: the authorize dialog
 * (which "logs in" a sandbox user without any UI and redirects back with a
 * one-time code), the token endpoint (code and refresh grants, PKCE S256),
 * ID token verification, access token verification, the user profile and
 * friendship status, and the account-link dialog that turns a link token
 * into an accountLink webhook.  ID tokens are HS256 JWTs keyed with the
 * login channel secret, as LINE signs tokens for web login.
 *
 * The add-friend option (bot_prompt) is modelled: a user who is not yet a
 * friend becomes one, the callback carries friendship_status_changed, and
 * a signed follow event goes to the linked Messaging API channel's
 * webhook target.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "musubi/crypto.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

#include "sandbox.h"

#define LOGIN_ISS	"https://access.line.me"
#define LOGIN_ID_TTL_S	3600

/* An issued authorization code. */
struct login_code {
	char		*client_id;
	char		*redirect_uri;
	char		*nonce;
	char		*challenge;
	char		*scope;
	char		 user[SB_ID_STRLEN + 1];
	int64_t		 expires_ms;
	int64_t		 auth_time;
};

/* An access or refresh token. */
struct login_token {
	char		*client_id;
	char		*scope;
	char		 user[SB_ID_STRLEN + 1];
	int64_t		 expires_ms;
};

struct sb_login {
	struct strmap	*codes;
	struct strmap	*access;
	struct strmap	*refresh;
};

/* Free a code. */
static void
login_code_free(void *p)
{
	struct login_code	*c = p;

	free(c->client_id);
	free(c->redirect_uri);
	free(c->nonce);
	free(c->challenge);
	free(c->scope);
	free(c);
}

/* Free a token. */
static void
login_token_free(void *p)
{
	struct login_token	*t = p;

	free(t->client_id);
	free(t->scope);
	free(t);
}

/* Make the login state. */
struct sb_login *
login_new(void)
{
	struct sb_login	*l = xcalloc(1, sizeof *l);

	l->codes = strmap_new(login_code_free);
	l->access = strmap_new(login_token_free);
	l->refresh = strmap_new(login_token_free);
	return (l);
}

/* Free the login state. */
void
login_free(struct sb_login *l)
{
	if (l == NULL)
		return;
	strmap_free(l->codes);
	strmap_free(l->access);
	strmap_free(l->refresh);
	free(l);
}

/* Forget all codes and tokens. */
void
login_reset(struct sb_login *l)
{
	strmap_clear(l->codes);
	strmap_clear(l->access);
	strmap_clear(l->refresh);
}

/* Tell whether a code has expired. */
static int
login_code_expired_cb(const char *key, void *val, void *arg)
{
	return (((struct login_code *)val)->expires_ms < *(int64_t *)arg);
}

/* Tell whether a token has expired. */
static int
login_token_expired_cb(const char *key, void *val, void *arg)
{
	return (((struct login_token *)val)->expires_ms < *(int64_t *)arg);
}

/* Drop expired codes and tokens. */
void
login_expire(struct sb_login *l, int64_t now_ms)
{
	strmap_sweep(l->codes, login_code_expired_cb, &now_ms);
	strmap_sweep(l->access, login_token_expired_cb, &now_ms);
	strmap_sweep(l->refresh, login_token_expired_cb, &now_ms);
}

/* Log the outcome of a fire-and-forget webhook. */
static void
login_event_done_cb(int status, const char *body, size_t len,
    const char *err, void *arg)
{
	if (err != NULL)
		log_warnx("login: webhook event not delivered: %s", err);
	else
		log_info("login: webhook event delivered, status %d", status);
}

/* Send one event (stolen) to a channel's webhook target; -1 if none. */
int
login_send_event(struct sandbox *sb, const char *token, json_t *event)
{
	const char	*url, *secret, *dest;
	json_t		*events, *body;
	char		*s, *cause = NULL;

	if (token == NULL)
		token = config_only_webhook(sb->cfg);
	if (config_webhook_target(sb->cfg, token, &url, &secret, &dest) !=
	    0) {
		log_info("login: no webhook target for the event");
		json_decref(event);
		return (-1);
	}
	if (dest == NULL)
		dest = store_channel(sb->store, token)->bot_id;
	events = json_array();
	json_array_append_new(events, event);
	body = webhook_body(events, dest);
	store_reply_tokens_from(sb->store, events, sb_now_ms());
	s = json_dumps(body, JSON_COMPACT);
	if (webhook_post(sb->webhooks, url, secret, s, strlen(s),
	    sb->cfg->webhook_timeout_ms, login_event_done_cb, NULL,
	    &cause) != 0) {
		log_warnx("login: webhook: %s", cause);
		free(cause);
	}
	free(s);
	json_decref(body);
	json_decref(events);
	return (0);
}

/* A fresh reply token. */
static json_t *
login_reply_token(void)
{
	unsigned char	 b[16];
	char		 hex[33];

	crypto_random(b, sizeof b);
	crypto_hex(b, sizeof b, hex);
	return (json_string(hex));
}

/* Redirect to the client with an OAuth error. */
static void
login_redirect_error(struct sb_ctx *ctx, const char *uri, const char *err,
    const char *desc, const char *state)
{
	char	*d = sb_urlencode(desc);
	char	*st = sb_urlencode(state != NULL ? state : "");
	char	*loc;

	xasprintf(&loc, "%s%serror=%s&error_description=%s%s%s", uri,
	    strchr(uri, '?') != NULL ? "&" : "?", err, d,
	    state != NULL ? "&state=" : "", state != NULL ? st : "");
	server_reply_redirect(ctx, loc);
	free(loc);
	free(d);
	free(st);
}

/* Pick the logged-in user; -1 when answered. */
static int
login_user(struct sb_ctx *ctx, const char *want, char user[SB_ID_STRLEN + 1])
{
	struct sandbox	*sb = ctx->sb;
	unsigned char	 rnd[16];
	uint8_t		 id[SB_ID_LEN];
	json_t		*o;
	char		*cause = NULL;

	if (want != NULL) {
		if (sb_id_parse(want, id, "U") != 0) {
			server_reply_oauth(ctx, 400, "invalid_request",
			    "sandbox_user must match ^U[0-9a-f]{32}$");
			return (-1);
		}
		snprintf(user, SB_ID_STRLEN + 1, "%s", want);
		return (0);
	}
	if (sb->cfg->login_default_user != NULL) {
		snprintf(user, SB_ID_STRLEN + 1, "%s",
		    sb->cfg->login_default_user);
		return (0);
	}
	/* A brand-new LINE user who is not a friend of the bot yet. */
	crypto_random(rnd, sizeof rnd);
	user[0] = 'U';
	crypto_hex(rnd, sizeof rnd, user + 1);
	o = json_object();
	json_object_set_new(o, "userId", json_string(user));
	json_object_set_new(o, "friend", json_false());
	if (store_user_register(sb->store, o, &cause) != 0) {
		log_warnx("login: %s", cause);
		free(cause);
	}
	json_decref(o);
	return (0);
}

/* The Messaging API channel linked to a login channel (may be NULL). */
static const char *
login_bot_token(const struct sb_config *cfg, const char *client_id)
{
	json_t	*c = json_object_get(cfg->login_clients, client_id);

	return (json_string_value(json_object_get(c, "bot_token")));
}

/* GET /oauth2/v2.1/authorize */
static void
login_authorize(struct sb_ctx *ctx)
{
	struct sandbox		*sb = ctx->sb;
	struct evkeyvalq	 q;
	struct evhttp_uri	*ru;
	struct login_code	*c;
	const char		*rt, *cid, *ruri, *state, *scope, *nonce;
	const char		*prompt, *chal, *meth, *add;
	const char		*friendship = NULL;
	const char		*scheme, *query;
	char			 user[SB_ID_STRLEN + 1], *code, *loc, *est;
	uint8_t			 id[SB_ID_LEN];
	json_t			*ev, *f, *src;
	int			 was_blocked;

	TAILQ_INIT(&q);
	query = ctx->uri != NULL ? evhttp_uri_get_query(ctx->uri) : NULL;
	if (query != NULL && evhttp_parse_query_str(query, &q) != 0) {
		server_reply_oauth(ctx, 400, "invalid_request",
		    "malformed query string");
		return;
	}
	rt = evhttp_find_header(&q, "response_type");
	cid = evhttp_find_header(&q, "client_id");
	ruri = evhttp_find_header(&q, "redirect_uri");
	state = evhttp_find_header(&q, "state");
	scope = evhttp_find_header(&q, "scope");
	nonce = evhttp_find_header(&q, "nonce");
	prompt = evhttp_find_header(&q, "bot_prompt");
	chal = evhttp_find_header(&q, "code_challenge");
	meth = evhttp_find_header(&q, "code_challenge_method");
	add = evhttp_find_header(&q, "sandbox_add_friend");

	if (cid == NULL || *cid == '\0') {
		server_reply_oauth(ctx, 400, "invalid_request",
		    "client_id is required");
		goto out;
	}
	if (json_object_size(sb->cfg->login_clients) > 0 &&
	    json_object_get(sb->cfg->login_clients, cid) == NULL) {
		server_reply_oauth(ctx, 400, "invalid_request",
		    "Invalid client_id");
		goto out;
	}
	ru = ruri != NULL ? evhttp_uri_parse(ruri) : NULL;
	scheme = ru != NULL ? evhttp_uri_get_scheme(ru) : NULL;
	if (ru == NULL || scheme == NULL || (strcmp(scheme, "http") != 0 &&
	    strcmp(scheme, "https") != 0)) {
		if (ru != NULL)
			evhttp_uri_free(ru);
		server_reply_oauth(ctx, 400, "invalid_request",
		    "redirect_uri must be an absolute http(s) URL");
		goto out;
	}
	evhttp_uri_free(ru);
	if (rt == NULL || strcmp(rt, "code") != 0) {
		login_redirect_error(ctx, ruri, "unsupported_response_type",
		    "response_type must be code", state);
		goto out;
	}
	if (state == NULL || *state == '\0' || scope == NULL ||
	    *scope == '\0') {
		login_redirect_error(ctx, ruri, "invalid_request",
		    "state and scope are required", state);
		goto out;
	}
	if (chal != NULL && (meth == NULL || strcmp(meth, "S256") != 0)) {
		login_redirect_error(ctx, ruri, "invalid_request",
		    "code_challenge_method must be S256", state);
		goto out;
	}
	if (prompt != NULL && strcmp(prompt, "normal") != 0 &&
	    strcmp(prompt, "aggressive") != 0) {
		login_redirect_error(ctx, ruri, "invalid_request",
		    "bot_prompt must be normal or aggressive", state);
		goto out;
	}
	if (login_user(ctx, evhttp_find_header(&q, "sandbox_user"), user) !=
	    0)
		goto out;
	(void)sb_id_parse(user, id, "U");

	if (prompt != NULL) {
		if (store_reachable(sb->store, sb->cfg, id))
			friendship = "false";	/* already a friend */
		else if (add != NULL && (strcmp(add, "false") == 0 ||
		    strcmp(add, "0") == 0))
			friendship = "false";	/* declined */
		else {
			(void)store_user_befriend(sb->store, sb->cfg, id,
			    &was_blocked);
			friendship = "true";
			ev = json_object();
			json_object_set_new(ev, "type", json_string("follow"));
			src = json_object();
			json_object_set_new(src, "type", json_string("user"));
			json_object_set_new(src, "userId", json_string(user));
			json_object_set_new(ev, "source", src);
			json_object_set_new(ev, "replyToken",
			    login_reply_token());
			f = json_object();
			json_object_set_new(f, "isUnblocked",
			    json_boolean(was_blocked));
			json_object_set_new(ev, "follow", f);
			(void)login_send_event(sb, login_bot_token(sb->cfg,
			    cid), ev);
		}
	}

	c = xcalloc(1, sizeof *c);
	c->client_id = xstrdup(cid);
	c->redirect_uri = xstrdup(ruri);
	c->nonce = nonce != NULL ? xstrdup(nonce) : NULL;
	c->challenge = chal != NULL ? xstrdup(chal) : NULL;
	c->scope = xstrdup(scope);
	snprintf(c->user, sizeof c->user, "%s", user);
	c->expires_ms = sb_now_ms() + SB_CODE_TTL_MS;
	c->auth_time = sb_now_ms() / 1000;
	code = crypto_token(15);	/* 20 characters */
	strmap_put(sb->login->codes, code, c);

	est = sb_urlencode(state);
	xasprintf(&loc, "%s%scode=%s&state=%s%s%s", ruri,
	    strchr(ruri, '?') != NULL ? "&" : "?", code, est,
	    friendship != NULL ? "&friendship_status_changed=" : "",
	    friendship != NULL ? friendship : "");
	server_reply_redirect(ctx, loc);
	free(loc);
	free(est);
	free(code);
out:
	evhttp_clear_headers(&q);
}

/* Tell whether a space-separated scope list holds a word. */
static int
login_has_scope(const char *scope, const char *word)
{
	size_t		 n = strlen(word);
	const char	*p = scope;

	while ((p = strstr(p, word)) != NULL) {
		if ((p == scope || p[-1] == ' ') && (p[n] == '\0' ||
		    p[n] == ' '))
			return (1);
		p += n;
	}
	return (0);
}

/* Sign claims as an HS256 JWT: new string. */
static char *
login_jwt(const char *secret, json_t *claims)
{
	static const char	 hdr[] = "{\"typ\":\"JWT\",\"alg\":\"HS256\"}";
	unsigned char		 mac[CRYPTO_SHA256_LEN];
	char			*h, *p, *s, *payload, *input, *out;

	payload = json_dumps(claims, JSON_COMPACT);
	h = crypto_base64url((const unsigned char *)hdr, strlen(hdr));
	p = crypto_base64url((const unsigned char *)payload, strlen(payload));
	xasprintf(&input, "%s.%s", h, p);
	crypto_hmac_sha256(secret, strlen(secret), input, strlen(input), mac);
	s = crypto_base64url(mac, sizeof mac);
	xasprintf(&out, "%s.%s", input, s);
	free(payload);
	free(h);
	free(p);
	free(input);
	free(s);
	return (out);
}

/* The display name and picture of a user for ID token claims. */
static void
login_user_claims(struct sandbox *sb, const char *user, json_t *claims)
{
	uint8_t	 id[SB_ID_LEN];
	json_t	*p, *v;

	if (sb_id_parse(user, id, "U") != 0)
		return;
	p = store_user_profile(sb->store, id);
	if ((v = json_object_get(p, "displayName")) != NULL)
		json_object_set(claims, "name", v);
	if ((v = json_object_get(p, "pictureUrl")) != NULL)
		json_object_set(claims, "picture", v);
	json_decref(p);
}

/* Issue access, refresh and (with openid) ID tokens. */
static void
login_issue(struct sb_ctx *ctx, const char *client_id, const char *scope,
    const char *user, const char *nonce, int64_t auth_time, int with_id)
{
	struct sandbox		*sb = ctx->sb;
	struct login_token	*t;
	int64_t			 now = sb_now_ms();
	json_t			*o = json_object(), *claims, *amr;
	char			*access = crypto_token(32);
	char			*refresh = crypto_token(24), *jwt;

	t = xcalloc(1, sizeof *t);
	t->client_id = xstrdup(client_id);
	t->scope = xstrdup(scope);
	snprintf(t->user, sizeof t->user, "%s", user);
	t->expires_ms = now + SB_ACCESS_TTL_S * 1000LL;
	strmap_put(sb->login->access, access, t);
	t = xcalloc(1, sizeof *t);
	t->client_id = xstrdup(client_id);
	t->scope = xstrdup(scope);
	snprintf(t->user, sizeof t->user, "%s", user);
	t->expires_ms = now + SB_REFRESH_TTL_S * 1000LL;
	strmap_put(sb->login->refresh, refresh, t);

	json_object_set_new(o, "access_token", json_string(access));
	json_object_set_new(o, "expires_in", json_integer(SB_ACCESS_TTL_S));
	if (with_id && login_has_scope(scope, "openid")) {
		claims = json_object();
		json_object_set_new(claims, "iss", json_string(LOGIN_ISS));
		json_object_set_new(claims, "sub", json_string(user));
		json_object_set_new(claims, "aud", json_string(client_id));
		json_object_set_new(claims, "exp",
		    json_integer(now / 1000 + LOGIN_ID_TTL_S));
		json_object_set_new(claims, "iat", json_integer(now / 1000));
		json_object_set_new(claims, "auth_time",
		    json_integer(auth_time));
		if (nonce != NULL)
			json_object_set_new(claims, "nonce",
			    json_string(nonce));
		amr = json_array();
		json_array_append_new(amr, json_string("linesso"));
		json_object_set_new(claims, "amr", amr);
		login_user_claims(sb, user, claims);
		jwt = login_jwt(config_login_secret(sb->cfg, client_id),
		    claims);
		json_object_set_new(o, "id_token", json_string(jwt));
		free(jwt);
		json_decref(claims);
	}
	json_object_set_new(o, "refresh_token", json_string(refresh));
	json_object_set_new(o, "scope", json_string(scope));
	json_object_set_new(o, "token_type", json_string("Bearer"));
	free(access);
	free(refresh);
	server_reply_json(ctx, 200, o);
}

/* Check the client secret; -1 when answered. */
static int
login_client(struct sb_ctx *ctx, const char *cid, const char *secret)
{
	const char	*want;

	if (cid == NULL || secret == NULL) {
		server_reply_oauth(ctx, 400, "invalid_request",
		    "client_id and client_secret are required");
		return (-1);
	}
	want = config_login_secret(ctx->sb->cfg, cid);
	if (!crypto_equal(want, strlen(want), secret, strlen(secret))) {
		server_reply_oauth(ctx, 400, "invalid_client",
		    "invalid client_secret");
		return (-1);
	}
	return (0);
}

/* Tell whether a PKCE verifier matches its S256 challenge. */
static int
login_pkce_ok(const char *verifier, const char *challenge)
{
	unsigned char	 d[CRYPTO_SHA256_LEN];
	char		*enc;
	size_t		 n = strlen(verifier);
	int		 ok;

	if (n < 43 || n > 128)
		return (0);
	crypto_sha256(verifier, n, d);
	enc = crypto_base64url(d, sizeof d);
	ok = crypto_equal(enc, strlen(enc), challenge, strlen(challenge));
	free(enc);
	return (ok);
}

/* grant_type=authorization_code */
static void
login_token_code(struct sb_ctx *ctx, struct evkeyvalq *f)
{
	struct sb_login		*l = ctx->sb->login;
	struct login_code	*c;
	const char		*code = evhttp_find_header(f, "code");
	const char		*ruri = evhttp_find_header(f, "redirect_uri");
	const char		*cid = evhttp_find_header(f, "client_id");
	const char		*ver = evhttp_find_header(f, "code_verifier");
	const char		*why = NULL;

	if (code == NULL || ruri == NULL) {
		server_reply_oauth(ctx, 400, "invalid_request",
		    "code and redirect_uri are required");
		return;
	}
	if (login_client(ctx, cid, evhttp_find_header(f,
	    "client_secret")) != 0)
		return;
	if ((c = strmap_get(l->codes, code)) == NULL) {
		server_reply_oauth(ctx, 400, "invalid_grant",
		    "invalid authorization code");
		return;
	}
	if (c->expires_ms < sb_now_ms())
		why = "authorization code expired";
	else if (strcmp(c->client_id, cid) != 0)
		why = "client_id does not match the authorization code";
	else if (strcmp(c->redirect_uri, ruri) != 0)
		why = "redirect_uri does not match";
	else if (c->challenge != NULL && (ver == NULL ||
	    !login_pkce_ok(ver, c->challenge)))
		why = "invalid code_verifier";
	if (why != NULL) {
		(void)strmap_del(l->codes, code);	/* single use */
		server_reply_oauth(ctx, 400, "invalid_grant", why);
		return;
	}
	login_issue(ctx, c->client_id, c->scope, c->user, c->nonce,
	    c->auth_time, 1);
	(void)strmap_del(l->codes, code);
}

/* grant_type=refresh_token */
static void
login_token_refresh(struct sb_ctx *ctx, struct evkeyvalq *f)
{
	struct login_token	*t;
	const char		*rt = evhttp_find_header(f, "refresh_token");
	const char		*cid = evhttp_find_header(f, "client_id");
	char			*scope, user[SB_ID_STRLEN + 1];

	if (rt == NULL) {
		server_reply_oauth(ctx, 400, "invalid_request",
		    "refresh_token is required");
		return;
	}
	if (login_client(ctx, cid, evhttp_find_header(f,
	    "client_secret")) != 0)
		return;
	t = strmap_get(ctx->sb->login->refresh, rt);
	if (t == NULL || t->expires_ms < sb_now_ms() ||
	    strcmp(t->client_id, cid) != 0) {
		server_reply_oauth(ctx, 400, "invalid_grant",
		    "invalid refresh token");
		return;
	}
	scope = xstrdup(t->scope);
	snprintf(user, sizeof user, "%s", t->user);
	(void)strmap_del(ctx->sb->login->refresh, rt);
	login_issue(ctx, cid, scope, user, NULL, 0, 0);
	free(scope);
}

/* POST /oauth2/v2.1/token */
static void
login_token(struct sb_ctx *ctx)
{
	struct evkeyvalq	 f;
	const char		*body, *gt;
	size_t			 len;

	body = server_body(ctx, &len);
	if (sb_parse_form(body, len, &f) != 0) {
		server_reply_oauth(ctx, 400, "invalid_request",
		    "malformed form body");
		return;
	}
	gt = evhttp_find_header(&f, "grant_type");
	if (gt != NULL && strcmp(gt, "authorization_code") == 0)
		login_token_code(ctx, &f);
	else if (gt != NULL && strcmp(gt, "refresh_token") == 0)
		login_token_refresh(ctx, &f);
	else
		server_reply_oauth(ctx, 400, "unsupported_grant_type",
		    "grant_type must be authorization_code or refresh_token");
	evhttp_clear_headers(&f);
}

/* Decode a base64url JSON segment: new reference or NULL. */
static json_t *
login_segment(const char *s, size_t len)
{
	unsigned char	*raw;
	size_t		 n;
	json_t		*j;

	if ((raw = crypto_base64_decode(s, len, &n)) == NULL)
		return (NULL);
	j = json_loadb((const char *)raw, n, 0, NULL);
	free(raw);
	return (j);
}

/* Check an ID token; the payload (new reference) or NULL and *why. */
static json_t *
login_check_id_token(struct sandbox *sb, const char *tok, const char *cid,
    const char *nonce, const char *user_id, const char **why)
{
	unsigned char	 mac[CRYPTO_SHA256_LEN], *sig;
	const char	*d1, *d2, *secret, *s;
	json_t		*hdr, *pl;
	size_t		 n;

	*why = "Invalid IdToken.";
	if ((d1 = strchr(tok, '.')) == NULL ||
	    (d2 = strchr(d1 + 1, '.')) == NULL || strchr(d2 + 1, '.') != NULL)
		return (NULL);
	hdr = login_segment(tok, (size_t)(d1 - tok));
	s = json_string_value(json_object_get(hdr, "alg"));
	if (s == NULL || strcmp(s, "HS256") != 0) {
		json_decref(hdr);
		return (NULL);
	}
	json_decref(hdr);
	secret = config_login_secret(sb->cfg, cid);
	crypto_hmac_sha256(secret, strlen(secret), tok, (size_t)(d2 - tok),
	    mac);
	if ((sig = crypto_base64_decode(d2 + 1, strlen(d2 + 1), &n)) == NULL)
		return (NULL);
	if (!crypto_equal(sig, n, mac, sizeof mac)) {
		free(sig);
		return (NULL);
	}
	free(sig);
	if ((pl = login_segment(d1 + 1, (size_t)(d2 - d1 - 1))) == NULL ||
	    !json_is_object(pl)) {
		json_decref(pl);
		return (NULL);
	}
	s = json_string_value(json_object_get(pl, "iss"));
	if (s == NULL || strcmp(s, LOGIN_ISS) != 0)
		*why = "Invalid IdToken Issuer.";
	else if (json_integer_value(json_object_get(pl, "exp")) <
	    sb_now_ms() / 1000)
		*why = "IdToken expired.";
	else if ((s = json_string_value(json_object_get(pl, "aud"))) ==
	    NULL || strcmp(s, cid) != 0)
		*why = "Invalid IdToken Audience.";
	else if (nonce != NULL && ((s = json_string_value(json_object_get(pl,
	    "nonce"))) == NULL || strcmp(s, nonce) != 0))
		*why = "Invalid IdToken Nonce.";
	else if (user_id != NULL && ((s = json_string_value(
	    json_object_get(pl, "sub"))) == NULL || strcmp(s, user_id) != 0))
		*why = "Invalid IdToken Subject Identifier.";
	else {
		*why = NULL;
		return (pl);
	}
	json_decref(pl);
	return (NULL);
}

/* POST /oauth2/v2.1/verify */
static void
login_verify_id(struct sb_ctx *ctx)
{
	struct evkeyvalq	 f;
	const char		*body, *tok, *cid, *why;
	json_t			*pl;
	size_t			 len;

	body = server_body(ctx, &len);
	if (sb_parse_form(body, len, &f) != 0) {
		server_reply_oauth(ctx, 400, "invalid_request",
		    "malformed form body");
		return;
	}
	tok = evhttp_find_header(&f, "id_token");
	cid = evhttp_find_header(&f, "client_id");
	if (tok == NULL || cid == NULL)
		server_reply_oauth(ctx, 400, "invalid_request",
		    "id_token and client_id are required");
	else if ((pl = login_check_id_token(ctx->sb, tok, cid,
	    evhttp_find_header(&f, "nonce"), evhttp_find_header(&f,
	    "user_id"), &why)) == NULL)
		server_reply_oauth(ctx, 400, "invalid_request", why);
	else
		server_reply_json(ctx, 200, pl);
	evhttp_clear_headers(&f);
}

/* The access token of a request (query or bearer) or NULL. */
static struct login_token *
login_access(struct sb_ctx *ctx, const char *tok)
{
	struct login_token	*t;

	if (tok == NULL)
		return (NULL);
	t = strmap_get(ctx->sb->login->access, tok);
	if (t == NULL || t->expires_ms < sb_now_ms())
		return (NULL);
	return (t);
}

/* The bearer token of a request, or NULL. */
static const char *
login_bearer(struct sb_ctx *ctx)
{
	const char	*h = server_header(ctx, "Authorization");

	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return (NULL);
	return (h + 7);
}

/* GET /oauth2/v2.1/verify?access_token= */
static void
login_verify_access(struct sb_ctx *ctx)
{
	struct login_token	*t;
	char			*tok = server_query(ctx, "access_token");
	json_t			*o;

	if ((t = login_access(ctx, tok)) == NULL)
		server_reply_oauth(ctx, 400, "invalid_request",
		    "access token expired");
	else {
		o = json_object();
		json_object_set_new(o, "scope", json_string(t->scope));
		json_object_set_new(o, "client_id", json_string(t->client_id));
		json_object_set_new(o, "expires_in", json_integer(
		    (t->expires_ms - sb_now_ms()) / 1000));
		server_reply_json(ctx, 200, o);
	}
	free(tok);
}

/* GET /v2/profile and GET /friendship/v1/status */
static void
login_user_info(struct sb_ctx *ctx)
{
	struct login_token	*t;
	uint8_t			 id[SB_ID_LEN];
	json_t			*o;

	if ((t = login_access(ctx, login_bearer(ctx))) == NULL ||
	    sb_id_parse(t->user, id, "U") != 0) {
		server_reply_message(ctx, 401, "invalid token");
		return;
	}
	if (ctx->ep == SB_EP_FRIENDSHIP) {
		o = json_object();
		json_object_set_new(o, "friendFlag", json_boolean(
		    store_reachable(ctx->sb->store, ctx->sb->cfg, id)));
		server_reply_json(ctx, 200, o);
		return;
	}
	o = store_user_profile(ctx->sb->store, id);
	json_object_del(o, "language");
	server_reply_json(ctx, 200, o);
}

/* GET /dialog/bot/accountLink?linkToken=&nonce= */
static void
login_account_link(struct sb_ctx *ctx)
{
	struct sb_link_token	*lt;
	char			*tok = server_query(ctx, "linkToken");
	char			*nonce = server_query(ctx, "nonce");
	char			*as = server_query(ctx, "sandbox_user");
	const char		*result;
	json_t			*ev, *link, *src, *o;
	size_t			 n = nonce != NULL ? strlen(nonce) : 0;
	int			 sent;

	lt = tok != NULL ? store_link_token_find(ctx->sb->store, tok) : NULL;
	if (lt == NULL || lt->used || lt->expires_ms < sb_now_ms()) {
		server_reply_oauth(ctx, 400, "invalid_request",
		    "The link token is invalid, used or expired");
		goto out;
	}
	if (n < 10 || n > 255) {
		server_reply_oauth(ctx, 400, "invalid_request",
		    "nonce must be 10 to 255 characters");
		goto out;
	}
	lt->used = 1;
	result = as != NULL && strcmp(as, lt->user) != 0 ? "failed" : "ok";
	ev = json_object();
	json_object_set_new(ev, "type", json_string("accountLink"));
	if (strcmp(result, "ok") == 0) {
		src = json_object();
		json_object_set_new(src, "type", json_string("user"));
		json_object_set_new(src, "userId", json_string(lt->user));
		json_object_set_new(ev, "source", src);
		json_object_set_new(ev, "replyToken", login_reply_token());
	}
	link = json_object();
	json_object_set_new(link, "result", json_string(result));
	json_object_set_new(link, "nonce", json_string(nonce));
	json_object_set_new(ev, "link", link);
	sent = login_send_event(ctx->sb, lt->token, ev);
	o = json_object();
	json_object_set_new(o, "result", json_string(result));
	json_object_set_new(o, "webhook", json_string(sent == 0 ? "sent" :
	    "no webhook target configured"));
	server_reply_json(ctx, 200, o);
out:
	free(tok);
	free(nonce);
	free(as);
}

/* Answer a LINE Login path. */
int
login_handle(struct sb_ctx *ctx)
{
	static const struct {
		const char		*path;
		enum evhttp_cmd_type	 method;
		int			 ep;
	} routes[] = {
		{ "/oauth2/v2.1/authorize", EVHTTP_REQ_GET, SB_EP_AUTHORIZE },
		{ "/oauth2/v2.1/token", EVHTTP_REQ_POST, SB_EP_TOKEN },
		{ "/oauth2/v2.1/verify", EVHTTP_REQ_POST,
		    SB_EP_VERIFY_ID_TOKEN },
		{ "/oauth2/v2.1/verify", EVHTTP_REQ_GET,
		    SB_EP_VERIFY_ACCESS_TOKEN },
		{ "/v2/profile", EVHTTP_REQ_GET, SB_EP_USER_PROFILE },
		{ "/friendship/v1/status", EVHTTP_REQ_GET, SB_EP_FRIENDSHIP },
		{ "/dialog/bot/accountLink", EVHTTP_REQ_GET,
		    SB_EP_ACCOUNT_LINK },
	};
	enum evhttp_cmd_type	 m = evhttp_request_get_command(ctx->req);
	size_t			 i;
	int			 known = 0;

	for (i = 0; i < nitems(routes); i++) {
		if (strcmp(ctx->path, routes[i].path) != 0)
			continue;
		known = 1;
		if (m == routes[i].method)
			break;
	}
	if (!known)
		return (-1);
	if (i == nitems(routes)) {
		server_reply_message(ctx, 405, "Method Not Allowed");
		return (0);
	}
	ctx->ep = routes[i].ep;
	if (server_gate(ctx, &ctx->sb->store->login_buckets[ctx->ep]) != 0)
		return (0);
	switch (ctx->ep) {
	case SB_EP_AUTHORIZE:
		login_authorize(ctx);
		break;
	case SB_EP_TOKEN:
		login_token(ctx);
		break;
	case SB_EP_VERIFY_ID_TOKEN:
		login_verify_id(ctx);
		break;
	case SB_EP_VERIFY_ACCESS_TOKEN:
		login_verify_access(ctx);
		break;
	case SB_EP_ACCOUNT_LINK:
		login_account_link(ctx);
		break;
	default:
		login_user_info(ctx);
		break;
	}
	return (0);
}
