/* SPDX-License-Identifier: ISC */
/*
 * line_intake.c -- LINE webhooks in, friends out.
 *
 * line_webhook_cb -> chancache (secret) -> signature -> line_parse -> the
 * current batch.  line_flush_cb starts a commit whenever fewer than
 * max_commits are in flight, taking every delivery that queued meanwhile:
 * under load each INSERT carries many deliveries, and each delivery costs a
 * share of one WAL flush instead of one of its own (group commit).
 *
 * The processor (line_apply_cb) and the profile fetcher (line_profile_cb)
 * are timers; both claim their work in PostgreSQL with SKIP LOCKED, so
 * several musubid processes can run them side by side.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "musubi/app.h"
#include "musubi/chancache.h"
#include "musubi/config.h"
#include "musubi/crypto.h"
#include "musubi/curlev.h"
#include "musubi/db.h"
#include "musubi/httpd.h"
#include "musubi/line.h"
#include "musubi/line_intake.h"
#include "musubi/log.h"
#include "musubi/metrics.h"
#include "musubi/xmalloc.h"

#define LINE_APPLY_LIMIT	1000
#define LINE_APPLY_POLL_MS	1000
#define LINE_APPLY_DELAY_MS	50
#define LINE_PROFILE_MAX	16
#define LINE_PROFILE_POLL_MS	2000
#define LINE_PROFILE_TRIES	8

struct line_batch {
	struct line_intake *li;
	json_t		 *rows;
	struct http_req	**reqs;
	size_t		 *nrows;	/* rows of each request */
	size_t		  nreqs;
	size_t		  cap;
	int		  single;	/* a split retry: do not split again */
};

struct line_intake {
	struct app		*app;
	struct chancache	*cc;
	struct line_batch	*cur;
	int			 commits;	/* in flight */
	int			 max_commits;
	struct event		*flush_ev;
	struct event		*apply_ev;
	int			 applying;
	int			 apply_wanted;	/* commits during an apply */
	struct event		*profile_ev;
	int			 profiles;	/* fetches in flight */
	int			 claiming;
	int			 stopping;
};

struct line_profile_req {
	struct line_intake	*li;
	int64_t			 channel_id;
	int64_t			 friend_id;
	int			 attempts;
	char			*user_id;
};

static const char line_insert_sql[] =
    "INSERT INTO webhook_events (channel_id, event_id, request_id, type, "
    "event_ts, mode, user_id, redelivery, payload, state, problem) "
    "SELECT r.c, r.e, r.q, r.t, to_timestamp(r.ts / 1000.0), r.m, r.u, "
    "r.r, r.p, CASE WHEN r.x IS NULL THEN 0 ELSE 2 END, r.x "
    "FROM jsonb_to_recordset($1::jsonb) AS r(c bigint, e text, q text, "
    "t text, ts bigint, m text, u text, r boolean, p jsonb, x text) "
    "ON CONFLICT (channel_id, event_id) DO NOTHING";

static void	line_webhook_cb(struct http_req *, void *);
static void	line_flush_cb(evutil_socket_t, short, void *);
static void	line_apply_cb(evutil_socket_t, short, void *);
static void	line_profile_cb(evutil_socket_t, short, void *);

/* Make an empty batch. */
static struct line_batch *
line_batch_new(struct line_intake *li)
{
	struct line_batch	*b = xcalloc(1, sizeof *b);

	b->li = li;
	b->rows = json_array();
	return (b);
}

/* Free a batch (its requests must have been answered). */
static void
line_batch_free(struct line_batch *b)
{
	json_decref(b->rows);
	free(b->reqs);
	free(b->nrows);
	free(b);
}

/* Add a request and its rows to a batch; steals rows' references. */
static void
line_batch_add(struct line_batch *b, struct http_req *req, json_t *rows)
{
	if (b->nreqs == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 16;
		b->reqs = xreallocarray(b->reqs, b->cap, sizeof *b->reqs);
		b->nrows = xreallocarray(b->nrows, b->cap, sizeof *b->nrows);
	}
	b->reqs[b->nreqs] = req;
	b->nrows[b->nreqs] = json_array_size(rows);
	b->nreqs++;
	json_array_extend(b->rows, rows);
	json_decref(rows);
}

/* Create the intake and register its route. */
struct line_intake *
line_intake_new(struct app *app, struct chancache *cc)
{
	struct line_intake	*li = xcalloc(1, sizeof *li);

	li->app = app;
	li->cc = cc;
	li->cur = line_batch_new(li);
	li->max_commits = app->cfg->intake_max_commits;
	li->flush_ev = event_new(app->base, -1, 0, line_flush_cb, li);
	li->apply_ev = evtimer_new(app->base, line_apply_cb, li);
	li->profile_ev = evtimer_new(app->base, line_profile_cb, li);
	httpd_route(app->httpd, HTTP_POST, "/webhooks/line/{channel}",
	    line_webhook_cb, li);
	metrics_describe(app->metrics, "musubi_line_deliveries_total",
	    "counter", "LINE webhook deliveries answered, by result.");
	metrics_describe(app->metrics, "musubi_line_events_total", "counter",
	    "LINE webhook events, by stage (committed, applied, malformed).");
	metrics_describe(app->metrics, "musubi_line_commits_total", "counter",
	    "Group commits of the LINE inbox.");
	metrics_describe(app->metrics, "musubi_line_profile_fetches_total",
	    "counter", "LINE profile fetches, by result.");
	return (li);
}

/* Arm a one-shot timer in ms. */
static void
line_arm(struct event *ev, long ms)
{
	struct timeval	 tv = { ms / 1000, (ms % 1000) * 1000 };

	if (evtimer_add(ev, &tv) != 0)
		log_warnx("line: cannot arm a timer");
}

/* Start the processor and the profile fetcher. */
int
line_intake_start(struct line_intake *li)
{
	line_arm(li->apply_ev, 0);
	line_arm(li->profile_ev, 0);
	return (0);
}

/* Stop claiming new work. */
void
line_intake_stop(struct line_intake *li)
{
	li->stopping = 1;
	evtimer_del(li->apply_ev);
	evtimer_del(li->profile_ev);
}

/* Tell whether work is in flight. */
int
line_intake_busy(const struct line_intake *li)
{
	return (li->commits > 0 || li->cur->nreqs > 0 || li->applying ||
	    li->profiles > 0 || li->claiming);
}

/* Free the intake. */
void
line_intake_free(struct line_intake *li)
{
	size_t	 i;

	if (li == NULL)
		return;
	for (i = 0; i < li->cur->nreqs; i++)
		http_reply_error(li->cur->reqs[i], 503, "shutting_down", NULL,
		    "musubid is shutting down; retry");
	line_batch_free(li->cur);
	event_free(li->flush_ev);
	event_free(li->apply_ev);
	event_free(li->profile_ev);
	free(li);
}

/* Build the inbox rows of a parsed delivery. */
static json_t *
line_rows(const struct line_delivery *d, int64_t channel_id,
    const char *request_id)
{
	json_t				*rows = json_array(), *r;
	const struct line_event_rec	*e;
	size_t				 i;

	for (i = 0; i < d->nevents; i++) {
		e = &d->events[i];
		r = json_object();
		json_object_set_new(r, "c", json_integer(channel_id));
		json_object_set_new(r, "e", json_string(e->event_id));
		json_object_set_new(r, "q", json_string(request_id));
		json_object_set_new(r, "t", json_string(e->type));
		json_object_set_new(r, "ts", e->ts_ms >= 0 ?
		    json_integer(e->ts_ms) : json_null());
		json_object_set_new(r, "m", e->mode != NULL ?
		    json_string(e->mode) : json_null());
		json_object_set_new(r, "u", e->user_id != NULL ?
		    json_string(e->user_id) : json_null());
		json_object_set_new(r, "r", json_boolean(e->redelivery));
		json_object_set(r, "p", e->payload);
		json_object_set_new(r, "x", e->problem != NULL ?
		    json_string(e->problem) : json_null());
		json_array_append_new(rows, r);
	}
	return (rows);
}

/* The channel is known (or not): verify, parse, queue. */
static void
line_channel_cb(const struct channel_info *ch, const char *err, void *arg)
{
	struct http_req		*req = arg;
	struct line_intake	*li = http_req_data(req);
	struct line_delivery	 d;
	const unsigned char	*body;
	const char		*sig;
	char			*cause = NULL;
	size_t			 len;

	if (err != NULL) {
		log_warnx("line: rid=%s channel lookup: %s", http_req_id(req),
		    err);
		metrics_add(li->app->metrics, "musubi_line_deliveries_total",
		    "result=\"unavailable\"", 1);
		http_reply_header(req, "Retry-After", "1");
		http_reply_error(req, 503, "database_unavailable", NULL,
		    "the database is unavailable; retry later");
		return;
	}
	if (ch == NULL) {
		metrics_add(li->app->metrics, "musubi_line_deliveries_total",
		    "result=\"unknown_channel\"", 1);
		http_reply_error(req, 404, "not_found", NULL,
		    "no such channel");
		return;
	}
	body = http_req_body(req, &len);
	sig = http_req_header(req, "x-line-signature");
	if (crypto_verify_hmac_b64(ch->secret, strlen(ch->secret), body, len,
	    sig) != 0) {
		log_warnx("line: rid=%s channel %s: %s signature", 
		    http_req_id(req), ch->slug, sig == NULL ? "missing" :
		    "invalid");
		metrics_add(li->app->metrics, "musubi_line_deliveries_total",
		    "result=\"bad_signature\"", 1);
		http_reply_error(req, 401, "invalid_signature", NULL,
		    "x-line-signature is missing or does not match the body");
		return;
	}
	if (line_parse(body, len, &d, &cause) != 0) {
		metrics_add(li->app->metrics, "musubi_line_deliveries_total",
		    "result=\"bad_json\"", 1);
		http_reply_error(req, 400, "invalid_json", NULL, "%s", cause);
		free(cause);
		return;
	}
	if (d.nevents == 0) {
		/* LINE's "Verify" button and connection checks. */
		line_delivery_free(&d);
		metrics_add(li->app->metrics, "musubi_line_deliveries_total",
		    "result=\"empty\"", 1);
		http_reply_json(req, 200, json_object());
		return;
	}
	line_batch_add(li->cur, req, line_rows(&d, ch->id, http_req_id(req)));
	line_delivery_free(&d);
	event_active(li->flush_ev, 0, 0);
}

/* POST /webhooks/line/{channel} */
static void
line_webhook_cb(struct http_req *req, void *arg)
{
	struct line_intake	*li = arg;

	http_req_set_data(req, li, NULL);
	chancache_get(li->cc, http_req_param(req, "channel"), line_channel_cb,
	    req);
}

static void	line_commit(struct line_intake *, struct line_batch *);

/* A batch's INSERT returned. */
static void
line_commit_cb(const PGresult *res, const char *err, void *arg)
{
	struct line_batch	*b = arg;
	struct line_intake	*li = b->li;
	struct line_batch	*one;
	size_t			 i, off = 0, j;

	li->commits--;
	if (err == NULL) {
		metrics_add(li->app->metrics, "musubi_line_commits_total", "",
		    1);
		metrics_add(li->app->metrics, "musubi_line_events_total",
		    "stage=\"committed\"", json_array_size(b->rows));
		metrics_add(li->app->metrics, "musubi_line_deliveries_total",
		    "result=\"stored\"", b->nreqs);
		for (i = 0; i < b->nreqs; i++)
			http_reply_json(b->reqs[i], 200, json_object());
		/*
		 * Apply soon, but not once per commit: under load, batching
		 * applies saves PostgreSQL far more than it delays them.
		 */
		if (li->applying)
			li->apply_wanted = 1;
		else if (!li->stopping && !evtimer_pending(li->apply_ev, NULL))
			line_arm(li->apply_ev, LINE_APPLY_DELAY_MS);
	} else if (res != NULL && b->nreqs > 1 && !b->single) {
		/* The server refused the batch: isolate the delivery. */
		log_warnx("line: batch of %zu deliveries refused (%s); "
		    "retrying them one by one", b->nreqs, err);
		for (i = 0; i < b->nreqs; i++) {
			one = line_batch_new(li);
			one->single = 1;
			for (j = 0; j < b->nrows[i]; j++)
				json_array_append(one->rows,
				    json_array_get(b->rows, off + j));
			off += b->nrows[i];
			one->reqs = xcalloc(1, sizeof *one->reqs);
			one->nrows = xcalloc(1, sizeof *one->nrows);
			one->reqs[0] = b->reqs[i];
			one->nrows[0] = j;
			one->nreqs = one->cap = 1;
			line_commit(li, one);
		}
	} else {
		log_warnx("line: commit of %zu deliveries failed: %s", b->nreqs,
		    err);
		metrics_add(li->app->metrics, "musubi_line_deliveries_total",
		    "result=\"unavailable\"", b->nreqs);
		for (i = 0; i < b->nreqs; i++) {
			http_reply_header(b->reqs[i], "Retry-After", "1");
			http_reply_error(b->reqs[i], 503,
			    res != NULL ? "store_failed" :
			    "database_unavailable", NULL,
			    "the delivery could not be stored; retry later");
		}
	}
	line_batch_free(b);
	if (li->cur->nreqs > 0)
		event_active(li->flush_ev, 0, 0);
}

/* Send one batch to PostgreSQL. */
static void
line_commit(struct line_intake *li, struct line_batch *b)
{
	struct db_params	*p = db_params_new();
	char			*s;

	s = json_dumps(b->rows, JSON_COMPACT);
	if (s == NULL)
		fatalx("line: json_dumps failed");
	db_params_text(p, s);
	free(s);
	li->commits++;
	db_query(li->app->db, line_insert_sql, p, line_commit_cb, b);
}

/* Start commits while there is room and work. */
static void
line_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct line_intake	*li = arg;
	struct line_batch	*b;

	if (li->cur->nreqs == 0 || li->commits >= li->max_commits)
		return;
	b = li->cur;
	li->cur = line_batch_new(li);
	line_commit(li, b);
}

/* The apply function returned. */
static void
line_applied_cb(const PGresult *res, const char *err, void *arg)
{
	struct line_intake	*li = arg;
	int64_t			 applied, malformed;
	const char		*profiles;

	li->applying = 0;
	if (err != NULL) {
		log_warnx("line: applying events failed: %s", err);
		if (!li->stopping)
			line_arm(li->apply_ev, LINE_APPLY_POLL_MS);
		return;
	}
	applied = db_int(res, 0, 0);
	malformed = db_int(res, 0, 1);
	profiles = db_value(res, 0, 2);
	if (applied > 0)
		metrics_add(li->app->metrics, "musubi_line_events_total",
		    "stage=\"applied\"", (uint64_t)applied);
	if (malformed > 0) {
		metrics_add(li->app->metrics, "musubi_line_events_total",
		    "stage=\"malformed\"", (uint64_t)malformed);
		log_warnx("line: %lld malformed events stored and marked",
		    (long long)malformed);
	}
	if (li->stopping)
		return;
	if (profiles != NULL && strcmp(profiles, "{}") != 0 &&
	    li->profiles == 0 && !li->claiming) {
		evtimer_del(li->profile_ev);
		line_arm(li->profile_ev, 0);
	}
	line_arm(li->apply_ev, applied + malformed >= LINE_APPLY_LIMIT ? 0 :
	    li->apply_wanted ? LINE_APPLY_DELAY_MS : LINE_APPLY_POLL_MS);
	li->apply_wanted = 0;
}

/* Apply pending inbox events. */
static void
line_apply_cb(evutil_socket_t fd, short what, void *arg)
{
	struct line_intake	*li = arg;
	struct db_params	*p;

	if (li->applying || li->stopping)
		return;
	if (!db_is_ready(li->app->db)) {
		line_arm(li->apply_ev, LINE_APPLY_POLL_MS);
		return;
	}
	li->applying = 1;
	li->apply_wanted = 0;
	evtimer_del(li->apply_ev);
	p = db_params_new();
	db_params_int(p, LINE_APPLY_LIMIT);
	db_query(li->app->db, "SELECT applied, malformed, profiles FROM "
	    "musubi_line_apply($1)", p, line_applied_cb, li);
}

/* A profile result was written. */
static void
line_profile_saved_cb(const PGresult *res, const char *err, void *arg)
{
	struct line_intake	*li = arg;

	if (err != NULL)
		log_warnx("line: saving a profile failed: %s", err);
	li->profiles--;
	if (li->profiles == 0 && !li->stopping) {
		evtimer_del(li->profile_ev);
		line_arm(li->profile_ev, 0);
	}
}

/* Seconds to wait before retry n (1-based): 2, 4, 8 ... capped at 1 h. */
static long
line_backoff(int n)
{
	long	 s = 1L << (n < 11 ? n : 11);
	unsigned char r;

	crypto_random(&r, 1);
	s += s * r / 512;	/* up to +50% jitter */
	return (s > 3600 ? 3600 : s);
}

/* The LINE API answered a profile request. */
static void
line_profile_done_cb(const struct curlev_resp *resp, void *arg)
{
	struct line_profile_req	*pr = arg;
	struct line_intake	*li = pr->li;
	struct db_params	*p = db_params_new();
	json_t			*j = NULL;
	const char		*result;
	char			 label[64];

	db_params_int(p, pr->channel_id);
	db_params_int(p, pr->friend_id);
	if (resp->err == NULL && resp->status == 200 &&
	    (j = json_loadb(resp->body, resp->bodylen, 0, NULL)) != NULL &&
	    json_is_string(json_object_get(j, "displayName"))) {
		result = "ok";
		db_params_text(p, json_string_value(json_object_get(j,
		    "displayName")));
		db_params_text(p, json_string_value(json_object_get(j,
		    "pictureUrl")));
		db_params_text(p, json_string_value(json_object_get(j,
		    "statusMessage")));
		db_params_text(p, json_string_value(json_object_get(j,
		    "language")));
		db_query(li->app->db, "UPDATE friends SET display_name = $3, "
		    "picture_url = $4, status_message = $5, language = $6, "
		    "profile_state = 'ok', profile_attempts = 0, "
		    "profile_updated_at = now(), updated_at = now() "
		    "WHERE channel_id = $1 AND id = $2", p,
		    line_profile_saved_cb, li);
	} else if (resp->err == NULL && resp->status == 404) {
		result = "unavailable";
		db_query(li->app->db, "UPDATE friends SET "
		    "profile_state = 'unavailable', profile_updated_at = now(), "
		    "updated_at = now() WHERE channel_id = $1 AND id = $2", p,
		    line_profile_saved_cb, li);
	} else {
		int	 give_up = pr->attempts >= LINE_PROFILE_TRIES ||
		    (resp->err == NULL && resp->status >= 400 &&
		    resp->status < 500 && resp->status != 429 &&
		    resp->status != 401 && resp->status != 403);

		result = give_up ? "failed" : "retry";
		log_warnx("line: profile of %s: %s; %s", pr->user_id,
		    resp->err != NULL ? resp->err : "HTTP error",
		    give_up ? "giving up" : "will retry");
		if (resp->err == NULL)
			log_debug("line: profile status %ld", resp->status);
		db_params_int(p, line_backoff(pr->attempts));
		db_params_bool(p, give_up);
		db_query(li->app->db, "UPDATE friends SET "
		    "profile_state = CASE WHEN $4 THEN 'failed' "
		    "ELSE profile_state END, "
		    "profile_next_at = now() + make_interval(secs => $3), "
		    "updated_at = now() WHERE channel_id = $1 AND id = $2", p,
		    line_profile_saved_cb, li);
	}
	snprintf(label, sizeof label, "result=\"%s\"", result);
	metrics_add(li->app->metrics, "musubi_line_profile_fetches_total",
	    label, 1);
	json_decref(j);
	free(pr->user_id);
	free(pr);
}

/* Friends whose profile is due were claimed: fetch each. */
static void
line_profile_claimed_cb(const PGresult *res, const char *err, void *arg)
{
	struct line_intake	*li = arg;
	struct line_profile_req	*pr;
	struct curlev_req	*cr;
	char			*url, *auth;
	int			 i, n;

	li->claiming = 0;
	if (err != NULL) {
		log_warnx("line: claiming profiles failed: %s", err);
		if (!li->stopping)
			line_arm(li->profile_ev, LINE_PROFILE_POLL_MS);
		return;
	}
	n = PQntuples(res);
	for (i = 0; i < n; i++) {
		pr = xcalloc(1, sizeof *pr);
		pr->li = li;
		pr->channel_id = db_int(res, i, 0);
		pr->friend_id = db_int(res, i, 1);
		pr->user_id = xstrdup(db_value(res, i, 2));
		pr->attempts = (int)db_int(res, i, 4);
		xasprintf(&url, "%s/v2/bot/profile/%s",
		    li->app->cfg->line_api_base, pr->user_id);
		xasprintf(&auth, "Bearer %s", db_value(res, i, 3));
		cr = curlev_req_new("GET", url);
		curlev_req_header(cr, "Authorization", auth);
		curlev_req_max_response(cr, 64 * 1024);
		free(url);
		free(auth);
		li->profiles++;
		curlev_send(li->app->curl, cr, line_profile_done_cb, pr);
	}
	if (li->stopping)
		return;
	if (n == 0)
		line_arm(li->profile_ev, LINE_PROFILE_POLL_MS);
}

/* Claim friends whose profile is due. */
static void
line_profile_cb(evutil_socket_t fd, short what, void *arg)
{
	struct line_intake	*li = arg;
	struct db_params	*p;

	if (li->stopping || li->claiming || li->profiles > 0)
		return;
	if (!db_is_ready(li->app->db)) {
		line_arm(li->profile_ev, LINE_PROFILE_POLL_MS);
		return;
	}
	li->claiming = 1;
	p = db_params_new();
	db_params_int(p, LINE_PROFILE_MAX);
	/*
	 * Claim by pushing profile_next_at a minute ahead: if this process
	 * dies mid-fetch, another one takes the friend after that.
	 */
	db_query(li->app->db,
	    "UPDATE friends f SET profile_next_at = now() + interval '60 s', "
	    "profile_attempts = f.profile_attempts + 1 "
	    "FROM (SELECT x.channel_id, x.id FROM friends x "
	    "JOIN channels k ON k.id = x.channel_id AND k.access_token <> '' "
	    "WHERE x.profile_state = 'pending' AND x.profile_next_at <= now() "
	    "ORDER BY x.profile_next_at LIMIT $1 FOR UPDATE OF x SKIP LOCKED) "
	    "d, channels c WHERE f.channel_id = d.channel_id AND f.id = d.id "
	    "AND c.id = f.channel_id "
	    "RETURNING f.channel_id, f.id, f.user_id, c.access_token, "
	    "f.profile_attempts", p, line_profile_claimed_cb, li);
}
