/* SPDX-License-Identifier: ISC */
/*
 * acquire.c -- tracked add-friend URLs and the LINE Login round trip (see
 * acquire.h).  A touch is written before its redirect is sent, in the same
 * statement that looks the code up, so the callback always finds it; the
 * callback claims the touch's state (pending -> exchanging) before it
 * talks to LINE, which makes a replayed callback fail at once.  Matching
 * and estimation are SQL (sql/008_acquisition.sql); a timer drains the
 * queue of days to re-estimate.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/http.h>

#include "musubi/acquire.h"
#include "musubi/app.h"
#include "musubi/config.h"
#include "musubi/crypto.h"
#include "musubi/curlev.h"
#include "musubi/db.h"
#include "musubi/httpd.h"
#include "musubi/line.h"
#include "musubi/log.h"
#include "musubi/metrics.h"
#include "musubi/xmalloc.h"

struct acquire {
	struct app	*app;
	unsigned char	 key[TOKEN_KEY_LEN];
	struct event	*estimate_ev;
	int		 estimating;
	int		 logins;	/* callbacks in flight */
	int		 stopping;
};

/* One callback on its way through LINE and PostgreSQL. */
struct acquire_login {
	struct acquire	*aq;
	struct http_req	*req;
	char		 state[ACQUIRE_STATE_LEN + 1];
	char		*code;
	int		 fsc;		/* friendship_status_changed; -1 */
	int64_t		 channel_id;
	int64_t		 touch_id;
	char		*client_id;
	char		*secret;
	char		*landing;
	char		*user_id;
};

struct acquire_touch {
	struct acquire	*aq;
	struct http_req	*req;
	char		 state[ACQUIRE_STATE_LEN + 1];
};

#define ACQ_PAGE_HEAD \
    "<!doctype html><html lang=\"ja\"><meta charset=\"utf-8\">" \
    "<meta name=\"viewport\" content=\"width=device-width\">" \
    "<meta name=\"robots\" content=\"noindex\">"
#define ACQ_PAGE_BODY \
    "<body style=\"font-family:sans-serif;margin:3em auto;max-width:30em\">"

static const char acq_404[] = ACQ_PAGE_HEAD
    "<title>リンクが無効です</title>" ACQ_PAGE_BODY
    "<h1>リンクが無効です</h1><p>このリンクは無効か、期限切れです。</p>"
    "<p>This link is not valid.</p></body></html>\n";
static const char acq_400[] = ACQ_PAGE_HEAD
    "<title>ログインを完了できませんでした</title>" ACQ_PAGE_BODY
    "<h1>ログインを完了できませんでした</h1>"
    "<p>リンクの有効期限が切れたか、すでに使用されています。"
    "最初のリンクからもう一度お試しください。</p>"
    "<p>This login link has expired or was already used. Please start "
    "again from the original link.</p></body></html>\n";
static const char acq_503[] = ACQ_PAGE_HEAD
    "<title>しばらくしてからお試しください</title>" ACQ_PAGE_BODY
    "<h1>しばらくしてからお試しください</h1>"
    "<p>ただいま処理できません。少し時間をおいて最初のリンクから"
    "もう一度お試しください。</p>"
    "<p>Temporarily unavailable; please try again from the original "
    "link.</p></body></html>\n";
static const char acq_thanks[] = ACQ_PAGE_HEAD
    "<title>友だち追加ありがとうございます</title>" ACQ_PAGE_BODY
    "<h1>ありがとうございます</h1>"
    "<p>LINEアプリに戻ってトークをご確認ください。</p>"
    "<p>Thank you. You can go back to LINE now.</p></body></html>\n";

static void	acquire_touch_cb(struct http_req *, void *);
static void	acquire_callback_cb(struct http_req *, void *);
static void	acquire_estimate_cb(evutil_socket_t, short, void *);

/* Create the module and register /f/ routes. */
struct acquire *
acquire_new(struct app *app, const unsigned char key[TOKEN_KEY_LEN])
{
	struct acquire	*aq = xcalloc(1, sizeof *aq);

	aq->app = app;
	memcpy(aq->key, key, TOKEN_KEY_LEN);
	aq->estimate_ev = evtimer_new(app->base, acquire_estimate_cb, aq);
	/* The literal route first: "callback" is never a code. */
	httpd_route(app->httpd, HTTP_GET, "/f/callback", acquire_callback_cb,
	    aq);
	httpd_route(app->httpd, HTTP_GET, "/f/{code}", acquire_touch_cb, aq);
	metrics_describe(app->metrics, "musubi_acquire_touches_total",
	    "counter", "Visits of tracked add-friend URLs, by outcome (login: "
	    "sent to LINE Login; redirect: sent to the add-friend URL; "
	    "rejected: unknown code).");
	metrics_describe(app->metrics, "musubi_acquire_logins_total",
	    "counter", "LINE Login callbacks, by result.");
	return (aq);
}

/* Arm the estimate timer. */
static void
acquire_arm(struct acquire *aq, long ms)
{
	struct timeval	 tv = { ms / 1000, (ms % 1000) * 1000 };

	if (aq->stopping)
		return;
	if (evtimer_add(aq->estimate_ev, &tv) != 0)
		log_warnx("acquire: cannot arm the estimate timer");
}

/* Start the estimate timer. */
int
acquire_start(struct acquire *aq)
{
	acquire_arm(aq, ACQUIRE_ESTIMATE_POLL_MS);
	return (0);
}

/* Stop starting work. */
void
acquire_stop(struct acquire *aq)
{
	aq->stopping = 1;
	evtimer_del(aq->estimate_ev);
}

/* Tell whether work is in flight. */
int
acquire_busy(const struct acquire *aq)
{
	return (aq->estimating || aq->logins > 0);
}

/* Free the module. */
void
acquire_free(struct acquire *aq)
{
	if (aq == NULL)
		return;
	event_free(aq->estimate_ev);
	explicit_bzero(aq->key, sizeof aq->key);
	free(aq);
}

/* Queued days were estimated (or not). */
static void
acquire_estimated_cb(const PGresult *res, const char *err, void *arg)
{
	struct acquire	*aq = arg;
	int64_t		 n = 0;

	aq->estimating = 0;
	if (err != NULL)
		log_warnx("acquire: estimating queued days failed: %s", err);
	else
		n = db_int(res, 0, 0);
	acquire_arm(aq, n >= ACQUIRE_ESTIMATE_BATCH ? 0 :
	    ACQUIRE_ESTIMATE_POLL_MS);
}

/* Timer: re-estimate the days whose follows or matches changed. */
static void
acquire_estimate_cb(evutil_socket_t fd, short what, void *arg)
{
	struct acquire		*aq = arg;
	struct db_params	*p;

	if (aq->estimating || aq->stopping)
		return;
	if (!db_is_ready(aq->app->db)) {
		acquire_arm(aq, ACQUIRE_ESTIMATE_POLL_MS);
		return;
	}
	aq->estimating = 1;
	p = db_params_new();
	db_params_int(p, ACQUIRE_ESTIMATE_BATCH);
	db_query(aq->app->db, "SELECT musubi_acq_estimate_queued($1)", p,
	    acquire_estimated_cb, aq);
}

/* Send one of the fixed HTML pages. */
static void
acquire_page(struct http_req *req, int status, const char *page)
{
	http_reply_header(req, "Cache-Control", "no-store");
	http_reply_header(req, "Referrer-Policy", "no-referrer");
	if (status == 503)
		http_reply_header(req, "Retry-After", "5");
	http_reply_raw(req, status, "text/html; charset=utf-8", page,
	    strlen(page));
}

/* Redirect the browser. */
static void
acquire_redirect(struct http_req *req, const char *url)
{
	http_reply_header(req, "Location", url);
	http_reply_header(req, "Cache-Control", "no-store");
	http_reply_header(req, "Referrer-Policy", "no-referrer");
	http_reply_raw(req, 302, NULL, NULL, 0);
}

/* Count an outcome. */
static void
acquire_count(struct acquire *aq, const char *metric, const char *label)
{
	metrics_add(aq->app->metrics, metric, label, 1);
}

/* A query parameter, NULL when absent or longer than max. */
static const char *
acquire_query(struct http_req *req, const char *name, size_t max)
{
	const char	*v = http_req_query(req, name);

	if (v == NULL || *v == '\0' || strlen(v) > max)
		return (NULL);
	return (v);
}

/* Add what a client sent to params: valid UTF-8, at most max bytes. */
static void
acquire_param_text(struct db_params *p, const char *v, size_t max)
{
	char	*c;

	if (v == NULL || *v == '\0') {
		db_params_null(p);
		return;
	}
	c = acquire_clean_text(v, max);
	db_params_text(p, c);
	free(c);
}

/* The touch was stored and the code resolved (or not). */
static void
acquire_touched_cb(const PGresult *res, const char *err, void *arg)
{
	struct acquire_touch	*t = arg;
	struct acquire		*aq = t->aq;
	char			 nonce[ACQUIRE_SECRET_LEN + 1];
	char			 verifier[ACQUIRE_SECRET_LEN + 1];
	char			 challenge[ACQUIRE_SECRET_LEN + 1];
	char			*redirect, *url;
	const char		*addurl;

	if (err != NULL) {
		log_warnx("acquire: rid=%s touch: %s", http_req_id(t->req),
		    err);
		acquire_page(t->req, 503, acq_503);
		goto out;
	}
	if (PQntuples(res) == 0) {
		acquire_count(aq, "musubi_acquire_touches_total",
		    "outcome=\"rejected\"");
		acquire_page(t->req, 404, acq_404);
		goto out;
	}
	addurl = db_value(res, 0, 2);
	if (db_value(res, 0, 3) == NULL) {
		/* Neither LINE Login nor an add-friend URL: nowhere to go. */
		log_warnx("acquire: rid=%s source %s has no LINE Login and no "
		    "add_friend_url; answering 404", http_req_id(t->req),
		    http_req_param(t->req, "code"));
		acquire_count(aq, "musubi_acquire_touches_total",
		    "outcome=\"unconfigured\"");
		acquire_page(t->req, 404, acq_404);
		goto out;
	}
	if (*db_value(res, 0, 0) != 't') {
		acquire_count(aq, "musubi_acquire_touches_total",
		    "outcome=\"redirect\"");
		acquire_redirect(t->req, addurl);
		goto out;
	}
	acquire_login_secrets(aq->key, t->state, nonce, verifier, challenge);
	xasprintf(&redirect, "%s/f/callback", aq->app->cfg->public_url);
	url = acquire_authorize_url(aq->app->cfg->line_access_base,
	    db_value(res, 0, 1), redirect, t->state, nonce, challenge);
	acquire_count(aq, "musubi_acquire_touches_total", "outcome=\"login\"");
	acquire_redirect(t->req, url);
	free(url);
	free(redirect);
	explicit_bzero(verifier, sizeof verifier);
out:
	explicit_bzero(t->state, sizeof t->state);
	free(t);
}

/* GET /f/{code}: record a touch and send the visitor on. */
static void
acquire_touch_cb(struct http_req *req, void *arg)
{
	struct acquire		*aq = arg;
	struct acquire_touch	*t;
	struct db_params	*p;
	const char		*code = http_req_param(req, "code");
	unsigned char		 raw[32], h[CRYPTO_SHA256_LEN], mac[32];
	char			*st, iph[17];
	const char		*peer = http_req_peer(req);

	if (!acquire_code_ok(code)) {
		acquire_count(aq, "musubi_acquire_touches_total",
		    "outcome=\"rejected\"");
		acquire_page(req, 404, acq_404);
		return;
	}
	t = xcalloc(1, sizeof *t);
	t->aq = aq;
	t->req = req;
	crypto_random(raw, sizeof raw);
	st = crypto_base64url(raw, sizeof raw);
	snprintf(t->state, sizeof t->state, "%s", st);
	free(st);
	crypto_sha256(t->state, strlen(t->state), h);
	crypto_hmac_sha256(aq->key, sizeof aq->key, peer, strlen(peer), mac);
	crypto_hex(mac, 8, iph);

	p = db_params_new();
	db_params_text(p, code);
	acquire_param_text(p, http_req_header(req, "User-Agent"), 500);
	acquire_param_text(p, http_req_header(req, "Referer"), 2000);
	acquire_param_text(p, acquire_query(req, "utm_source", 200), 200);
	acquire_param_text(p, acquire_query(req, "utm_medium", 200), 200);
	acquire_param_text(p, acquire_query(req, "utm_campaign", 200), 200);
	acquire_param_text(p, acquire_query(req, "utm_content", 200), 200);
	acquire_param_text(p, acquire_query(req, "utm_term", 200), 200);
	db_params_text(p, iph);
	db_params_bytea(p, h, sizeof h);
	db_query(aq->app->db,
	    "WITH s AS (SELECT s.channel_id, s.id, c.login_channel_id, "
	    "c.login_channel_id IS NOT NULL AND "
	    "coalesce(c.login_channel_secret, '') <> '' AS login, "
	    "coalesce(s.add_friend_url, st.add_friend_url) AS add_url "
	    "FROM acquisition_sources s JOIN channels c ON c.id = s.channel_id "
	    "LEFT JOIN acquisition_settings st ON st.channel_id = s.channel_id "
	    "WHERE s.code = $1 AND s.archived_at IS NULL), "
	    "ins AS (INSERT INTO acquisition_touches (channel_id, source_id, "
	    "user_agent, referrer, utm_source, utm_medium, utm_campaign, "
	    "utm_content, utm_term, ip_hash, login_state, state_hash) "
	    "SELECT s.channel_id, s.id, $2, $3, $4, $5, $6, $7, $8, $9, "
	    "CASE WHEN s.login THEN 'pending' ELSE 'none' END, "
	    "CASE WHEN s.login THEN $10::bytea END "
	    "FROM s WHERE s.login OR s.add_url IS NOT NULL RETURNING id) "
	    "SELECT s.login, s.login_channel_id, s.add_url, "
	    "(SELECT id FROM ins) FROM s", p, acquire_touched_cb, t);
}

/* Free a login. */
static void
acquire_login_free(struct acquire_login *l)
{
	l->aq->logins--;
	explicit_bzero(l->state, sizeof l->state);
	if (l->secret != NULL) {
		explicit_bzero(l->secret, strlen(l->secret));
		free(l->secret);
	}
	free(l->code);
	free(l->client_id);
	free(l->landing);
	free(l->user_id);
	free(l);
}

/* The touch was marked failed; answer the page. */
static void
acquire_failed_cb(const PGresult *res, const char *err, void *arg)
{
	struct acquire_login	*l = arg;

	if (err != NULL)
		log_warnx("acquire: touch %lld: recording the failure: %s",
		    (long long)l->touch_id, err);
	acquire_login_free(l);
}

/* Give up on a login: mark the touch and answer status with its page. */
static void
acquire_login_fail(struct acquire_login *l, int status, const char *result,
    const char *why)
{
	struct db_params	*p = db_params_new();
	char			 label[64];

	log_info("acquire: rid=%s touch %lld: login %s: %s",
	    http_req_id(l->req), (long long)l->touch_id, result, why);
	snprintf(label, sizeof label, "result=\"%s\"", result);
	acquire_count(l->aq, "musubi_acquire_logins_total", label);
	acquire_page(l->req, status, status == 503 ? acq_503 : acq_400);
	db_params_int(p, l->channel_id);
	db_params_int(p, l->touch_id);
	acquire_param_text(p, why, 300);
	db_query(l->aq->app->db, "UPDATE acquisition_touches SET "
	    "login_state = 'failed', login_error = $3 WHERE channel_id = $1 "
	    "AND id = $2 AND login_state = 'exchanging'", p,
	    acquire_failed_cb, l);
}

/* The userId was stored and matched. */
static void
acquire_logged_in_cb(const PGresult *res, const char *err, void *arg)
{
	struct acquire_login	*l = arg;

	if (err != NULL) {
		log_warnx("acquire: rid=%s touch %lld: storing the login: %s",
		    http_req_id(l->req), (long long)l->touch_id, err);
		acquire_count(l->aq, "musubi_acquire_logins_total",
		    "result=\"db_error\"");
		acquire_page(l->req, 503, acq_503);
	} else if (strcmp(db_value(res, 0, 0), "ok") != 0) {
		acquire_count(l->aq, "musubi_acquire_logins_total",
		    "result=\"replayed\"");
		acquire_page(l->req, 400, acq_400);
	} else {
		acquire_count(l->aq, "musubi_acquire_logins_total",
		    "result=\"ok\"");
		if (l->landing != NULL)
			acquire_redirect(l->req, l->landing);
		else
			acquire_page(l->req, 200, acq_thanks);
	}
	acquire_login_free(l);
}

/* Classify a LINE answer: 0 ok (JSON in *j), else fills status/why. */
static int
acquire_line_answer(const struct curlev_resp *resp, json_t **j, int *status,
    const char **why)
{
	const char	*desc;

	*j = NULL;
	if (resp->err != NULL || resp->status == 0 || resp->status >= 500 ||
	    resp->status == 429) {
		*status = 503;
		*why = resp->err != NULL ? resp->err : "LINE is unavailable";
		return (-1);
	}
	*j = json_loadb(resp->body, resp->bodylen, 0, NULL);
	if (resp->status != 200 || *j == NULL || !json_is_object(*j)) {
		*status = 400;
		desc = *j != NULL ? json_string_value(json_object_get(*j,
		    "error_description")) : NULL;
		if (desc == NULL && *j != NULL)
			desc = json_string_value(json_object_get(*j, "error"));
		*why = desc != NULL ? desc : "LINE refused the request";
		return (-1);
	}
	return (0);
}

/* LINE verified the ID token (or not). */
static void
acquire_verified_cb(const struct curlev_resp *resp, void *arg)
{
	struct acquire_login	*l = arg;
	struct db_params	*p;
	json_t			*j;
	const char		*why, *sub, *nonce, *aud;
	char			 want[ACQUIRE_SECRET_LEN + 1];
	char			 verifier[ACQUIRE_SECRET_LEN + 1];
	char			 challenge[ACQUIRE_SECRET_LEN + 1];
	int			 status;

	if (acquire_line_answer(resp, &j, &status, &why) != 0) {
		char	*w = xstrdup(why);

		json_decref(j);
		acquire_login_fail(l, status, status == 503 ?
		    "line_unavailable" : "invalid_id_token", w);
		free(w);
		return;
	}
	acquire_login_secrets(l->aq->key, l->state, want, verifier,
	    challenge);
	explicit_bzero(verifier, sizeof verifier);
	sub = json_string_value(json_object_get(j, "sub"));
	nonce = json_string_value(json_object_get(j, "nonce"));
	aud = json_string_value(json_object_get(j, "aud"));
	if (sub == NULL || !line_is_user_id(sub) || nonce == NULL ||
	    !crypto_equal(nonce, strlen(nonce), want, strlen(want)) ||
	    aud == NULL || strcmp(aud, l->client_id) != 0) {
		json_decref(j);
		acquire_login_fail(l, 400, "invalid_id_token",
		    "the ID token's subject, nonce or audience is wrong");
		return;
	}
	l->user_id = xstrdup(sub);
	json_decref(j);
	p = db_params_new();
	db_params_int(p, l->channel_id);
	db_params_int(p, l->touch_id);
	db_params_text(p, l->user_id);
	if (l->fsc < 0)
		db_params_null(p);
	else
		db_params_bool(p, l->fsc);
	db_query(l->aq->app->db, "SELECT musubi_acq_login($1, $2, $3, $4)",
	    p, acquire_logged_in_cb, l);
}

/* POST a form to LINE's API. */
static void
acquire_post_form(struct acquire_login *l, const char *path, char *form,
    curlev_done_cb *cb)
{
	struct curlev_req	*cr;
	char			*url;

	xasprintf(&url, "%s%s", l->aq->app->cfg->line_api_base, path);
	cr = curlev_req_new("POST", url);
	curlev_req_body(cr, "application/x-www-form-urlencoded", form,
	    strlen(form));
	curlev_req_max_response(cr, 64 * 1024);
	explicit_bzero(form, strlen(form));
	free(form);
	free(url);
	curlev_send(l->aq->app->curl, cr, cb, l);
}

/* LINE answered the code exchange. */
static void
acquire_token_cb(const struct curlev_resp *resp, void *arg)
{
	struct acquire_login	*l = arg;
	json_t			*j;
	const char		*why, *idt;
	char			*form, *t, *c, *n;
	char			 nonce[ACQUIRE_SECRET_LEN + 1];
	char			 verifier[ACQUIRE_SECRET_LEN + 1];
	char			 challenge[ACQUIRE_SECRET_LEN + 1];
	int			 status;

	if (acquire_line_answer(resp, &j, &status, &why) != 0) {
		char	*w = xstrdup(why);

		json_decref(j);
		acquire_login_fail(l, status, status == 503 ?
		    "line_unavailable" : "invalid_code", w);
		free(w);
		return;
	}
	if ((idt = json_string_value(json_object_get(j, "id_token"))) ==
	    NULL) {
		json_decref(j);
		acquire_login_fail(l, 400, "invalid_code",
		    "LINE returned no ID token (scope without openid?)");
		return;
	}
	acquire_login_secrets(l->aq->key, l->state, nonce, verifier,
	    challenge);
	explicit_bzero(verifier, sizeof verifier);
	t = evhttp_encode_uri(idt);
	c = evhttp_encode_uri(l->client_id);
	n = evhttp_encode_uri(nonce);
	xasprintf(&form, "id_token=%s&client_id=%s&nonce=%s", t, c, n);
	free(t);
	free(c);
	free(n);
	json_decref(j);
	acquire_post_form(l, "/oauth2/v2.1/verify", form, acquire_verified_cb);
}

/* The touch's state was claimed (or not). */
static void
acquire_claimed_cb(const PGresult *res, const char *err, void *arg)
{
	struct acquire_login	*l = arg;
	char			 nonce[ACQUIRE_SECRET_LEN + 1];
	char			 verifier[ACQUIRE_SECRET_LEN + 1];
	char			 challenge[ACQUIRE_SECRET_LEN + 1];
	char			*form, *code, *redirect, *ruri, *cid, *sec;
	char			*ver;

	if (err != NULL) {
		log_warnx("acquire: rid=%s claiming a touch: %s",
		    http_req_id(l->req), err);
		acquire_count(l->aq, "musubi_acquire_logins_total",
		    "result=\"db_error\"");
		acquire_page(l->req, 503, acq_503);
		acquire_login_free(l);
		return;
	}
	if (PQntuples(res) == 0) {
		/* Unknown, forged, expired or already used. */
		acquire_count(l->aq, "musubi_acquire_logins_total",
		    "result=\"invalid_state\"");
		acquire_page(l->req, 400, acq_400);
		acquire_login_free(l);
		return;
	}
	l->channel_id = db_int(res, 0, 0);
	l->touch_id = db_int(res, 0, 1);
	if (db_value(res, 0, 4) != NULL)
		l->landing = xstrdup(db_value(res, 0, 4));
	if (l->code == NULL) {
		/* The user declined the login: let them add the friend. */
		acquire_count(l->aq, "musubi_acquire_logins_total",
		    "result=\"cancelled\"");
		if (db_value(res, 0, 5) != NULL)
			acquire_redirect(l->req, db_value(res, 0, 5));
		else
			acquire_page(l->req, 200, acq_thanks);
		acquire_login_free(l);
		return;
	}
	if (db_value(res, 0, 2) == NULL || db_value(res, 0, 3) == NULL ||
	    *db_value(res, 0, 3) == '\0') {
		acquire_login_fail(l, 400, "no_login_channel",
		    "the channel has no LINE Login channel any more");
		return;
	}
	l->client_id = xstrdup(db_value(res, 0, 2));
	l->secret = xstrdup(db_value(res, 0, 3));
	acquire_login_secrets(l->aq->key, l->state, nonce, verifier,
	    challenge);
	xasprintf(&redirect, "%s/f/callback", l->aq->app->cfg->public_url);
	code = evhttp_encode_uri(l->code);
	ruri = evhttp_encode_uri(redirect);
	cid = evhttp_encode_uri(l->client_id);
	sec = evhttp_encode_uri(l->secret);
	ver = evhttp_encode_uri(verifier);
	xasprintf(&form, "grant_type=authorization_code&code=%s&"
	    "redirect_uri=%s&client_id=%s&client_secret=%s&code_verifier=%s",
	    code, ruri, cid, sec, ver);
	explicit_bzero(sec, strlen(sec));
	explicit_bzero(ver, strlen(ver));
	explicit_bzero(verifier, sizeof verifier);
	free(code);
	free(ruri);
	free(cid);
	free(sec);
	free(ver);
	free(redirect);
	acquire_post_form(l, "/oauth2/v2.1/token", form, acquire_token_cb);
}

/* Is s a state we could have issued (43 base64url characters)? */
static int
acquire_state_ok(const char *s)
{
	size_t	 i;

	if (s == NULL || strlen(s) != ACQUIRE_STATE_LEN)
		return (0);
	for (i = 0; i < ACQUIRE_STATE_LEN; i++) {
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' &&
		    s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		    s[i] == '-' || s[i] == '_'))
			return (0);
	}
	return (1);
}

/* GET /f/callback: LINE Login sent the visitor back. */
static void
acquire_callback_cb(struct http_req *req, void *arg)
{
	struct acquire		*aq = arg;
	struct acquire_login	*l;
	struct db_params	*p;
	const char		*state = http_req_query(req, "state");
	const char		*code = http_req_query(req, "code");
	const char		*error = http_req_query(req, "error");
	const char		*fsc = http_req_query(req,
	    "friendship_status_changed");
	unsigned char		 h[CRYPTO_SHA256_LEN];

	if (!acquire_state_ok(state) || (error == NULL && (code == NULL ||
	    *code == '\0' || strlen(code) > 512))) {
		acquire_count(aq, "musubi_acquire_logins_total",
		    "result=\"invalid_request\"");
		acquire_page(req, 400, acq_400);
		return;
	}
	l = xcalloc(1, sizeof *l);
	l->aq = aq;
	l->req = req;
	aq->logins++;
	snprintf(l->state, sizeof l->state, "%s", state);
	if (error == NULL)
		l->code = xstrdup(code);
	l->fsc = fsc == NULL ? -1 : strcmp(fsc, "true") == 0;
	crypto_sha256(l->state, strlen(l->state), h);
	p = db_params_new();
	db_params_bytea(p, h, sizeof h);
	db_params_int(p, ACQUIRE_LOGIN_TTL_S);
	db_params_text(p, error == NULL ? "exchanging" : "cancelled");
	acquire_param_text(p, error, 200);
	db_query(aq->app->db,
	    "UPDATE acquisition_touches t SET login_state = $3, "
	    "login_error = $4 "
	    "FROM channels c JOIN acquisition_sources s "
	    "ON s.channel_id = c.id "
	    "LEFT JOIN acquisition_settings st ON st.channel_id = c.id "
	    "WHERE t.state_hash = $1 AND t.login_state = 'pending' "
	    "AND t.created_at > now() - make_interval(secs => $2) "
	    "AND c.id = t.channel_id AND s.id = t.source_id "
	    "RETURNING t.channel_id, t.id, c.login_channel_id, "
	    "c.login_channel_secret, coalesce(s.landing_url, st.landing_url), "
	    "coalesce(s.add_friend_url, st.add_friend_url)", p,
	    acquire_claimed_cb, l);
}
