/* SPDX-License-Identifier: ISC */
/*
 * campaign.c -- the scheduler and run preparation, and the owner of the
 * sender and the LINE API client.
 *
 * A timer (campaign_poll, or at once after campaign_kick()) runs
 * musubi_campaign_tick(), which in one transaction turns due occurrences
 * into runs, applies quiet hours and claims at most one run to prepare,
 * under a lease.  The preparation then walks the run's steps (see
 * sql/006_campaigns.sql), each step one transaction that opens with
 * musubi_run_guard():
 *
 *	step 0	create the run's tracked links (one per distinct URL)
 *	step 1	read LINE's quota (GET quota, quota/consumption), then
 *		snapshot the audience into deliveries with the policies
 *		(blocked, frequency cap, quota) in one INSERT ... SELECT; for
 *		multicast the same statement builds the batches of <= 500
 *		from the same materialized snapshot, and the run is sending
 *	step 2	personalised runs: push bodies rendered here in chunks of
 *		PREP_CHUNK recipients, one transaction each; then sending
 *
 * A process that dies mid-step loses nothing: the step's transaction rolls
 * back and the run's lease expires, and the next tick anywhere resumes it
 * at the same step.  Only one run is prepared at a time per process.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "musubi/app.h"
#include "musubi/campaign.h"
#include "musubi/config.h"
#include "musubi/crypto.h"
#include "musubi/db.h"
#include "musubi/lineapi.h"
#include "musubi/log.h"
#include "musubi/metrics.h"
#include "musubi/segment.h"
#include "musubi/track.h"
#include "musubi/xmalloc.h"

#define PREP_CHUNK		2000
#define PREP_RETRY_S		5

struct campaign {
	struct app	*app;
	struct lineapi	*api;
	struct sender	*sender;
	char		 owner[96];
	struct event	*tick_ev;
	int		 ticking;
	struct prep	*prep;		/* the run being prepared */
	int		 stopping;
	int		 final;		/* the loop is over: no more queries */
};

struct prep {
	struct campaign	*cm;
	int64_t		 channel_id;
	int64_t		 run_id;
	int64_t		 campaign_id;
	int		 step;
	int64_t		 built_friend;
	json_t		*audience;
	json_t		*messages;
	int		 personalized;
	int		 notification_disabled;
	char		*unit;		/* customAggregationUnits, or NULL */
	int		 refuse;	/* quota policy */
	char		*token;
	int64_t		 cap;		/* frequency cap; 0 = none */
	int64_t		 window_s;
	int64_t		 remaining;	/* quota left; -1 = unlimited */
	json_t		*links;		/* destination -> link id */
	json_t		*rendered;	/* multicast: the one copy */
	int64_t		 friend_id;	/* while rendering a push body */
};

static void	campaign_tick_cb(evutil_socket_t, short, void *);
static void	prep_next(struct prep *);
static void	prep_options(struct prep *, json_t *);

/* Arm the scheduler. */
static void
campaign_arm(struct campaign *cm, long ms)
{
	struct timeval	 tv = { ms / 1000, (ms % 1000) * 1000 };

	if (evtimer_add(cm->tick_ev, &tv) != 0)
		log_warnx("campaign: cannot arm the scheduler");
}

/* Create the module with its sender and LINE client. */
struct campaign *
campaign_new(struct app *app)
{
	struct campaign	*cm = xcalloc(1, sizeof *cm);
	char		 host[64], *tok;

	cm->app = app;
	cm->api = lineapi_new(app);
	cm->sender = sender_new(app, cm->api);
	if (gethostname(host, sizeof host) != 0)
		snprintf(host, sizeof host, "host");
	host[sizeof host - 1] = '\0';
	tok = crypto_token(6);
	snprintf(cm->owner, sizeof cm->owner, "%.60s:%ld:%s", host,
	    (long)getpid(), tok);
	free(tok);
	cm->tick_ev = evtimer_new(app->base, campaign_tick_cb, cm);
	metrics_describe(app->metrics, "musubi_campaign_runs_prepared_total",
	    "counter", "Campaign runs whose batches were built.");
	return (cm);
}

/* Start scheduling and sending. */
int
campaign_start(struct campaign *cm)
{
	campaign_arm(cm, 0);
	return (sender_start(cm->sender));
}

/* Look for due work now. */
void
campaign_kick(struct campaign *cm)
{
	if (cm == NULL || cm->stopping)
		return;
	if (!cm->ticking && cm->prep == NULL)
		campaign_arm(cm, 0);
	sender_kick(cm->sender);
}

/*
 * Stop taking work.  Called again after the loop (main's teardown), it
 * means the end: callbacks that still run only free their state.
 */
void
campaign_stop(struct campaign *cm)
{
	if (cm->stopping)
		cm->final = 1;
	cm->stopping = 1;
	evtimer_del(cm->tick_ev);
	sender_stop(cm->sender);
}

/* Tell whether anything is in flight. */
int
campaign_busy(const struct campaign *cm)
{
	return (cm->ticking || cm->prep != NULL || sender_busy(cm->sender) ||
	    lineapi_inflight(cm->api) > 0);
}

/* Free the module. */
void
campaign_free(struct campaign *cm)
{
	if (cm == NULL)
		return;
	sender_free(cm->sender);
	lineapi_free(cm->api);
	event_free(cm->tick_ev);
	free(cm);
}

/* Free a preparation and look for more work. */
static void
prep_done(struct prep *p, long next_ms)
{
	struct campaign	*cm = p->cm;

	json_decref(p->audience);
	json_decref(p->messages);
	json_decref(p->links);
	json_decref(p->rendered);
	free(p->unit);
	free(p->token);
	free(p);
	cm->prep = NULL;
	if (!cm->stopping)
		campaign_arm(cm, next_ms);
}

/* A release or failure statement returned. */
static void
prep_final_cb(const PGresult *res, const char *err, void *arg)
{
	struct prep	*p = arg;

	if (err != NULL)
		log_warnx("campaign: run %lld: %s", (long long)p->run_id, err);
	prep_done(p, 0);
}

/* Give the run back for a later try (a transient error). */
static void
prep_release(struct prep *p, const char *why)
{
	struct db_params	*pp;

	if (p->cm->final) {
		prep_done(p, 0);
		return;
	}
	pp = db_params_new();

	log_warnx("campaign: run %lld: %s; trying again in %ds",
	    (long long)p->run_id, why, PREP_RETRY_S);
	db_params_int(pp, p->channel_id);
	db_params_int(pp, p->run_id);
	db_params_text(pp, p->cm->owner);
	db_params_text(pp, why);
	db_params_int(pp, PREP_RETRY_S);
	db_query(p->cm->app->db, "UPDATE campaign_runs SET state = 'pending', "
	    "lease_owner = NULL, lease_until = NULL, status_reason = $4, "
	    "not_before = now() + make_interval(secs => $5) "
	    "WHERE channel_id = $1 AND id = $2 AND state = 'preparing' "
	    "AND lease_owner = $3", pp, prep_final_cb, p);
}

/* Fail the run (and the campaign when whole). */
static void
prep_fail(struct prep *p, const char *why, int whole)
{
	struct db_params	*pp;

	if (p->cm->final) {
		prep_done(p, 0);
		return;
	}
	pp = db_params_new();

	log_warnx("campaign: run %lld of campaign %lld failed: %s",
	    (long long)p->run_id, (long long)p->campaign_id, why);
	db_params_int(pp, p->channel_id);
	db_params_int(pp, p->run_id);
	db_params_text(pp, why);
	db_params_bool(pp, whole);
	db_query(p->cm->app->db, "SELECT musubi_run_fail($1, $2, $3, $4)", pp,
	    prep_final_cb, p);
}

/* A step's transaction returned. */
static void
prep_step_cb(const PGresult *res, const char *err, void *arg)
{
	struct prep	*p = arg;
	const char	*state = res != NULL ? db_sqlstate(res) : "";

	if (err != NULL) {
		if (strcmp(state, "MS001") == 0) {
			log_info("campaign: run %lld is prepared elsewhere now",
			    (long long)p->run_id);
			prep_done(p, 0);
		} else if (strcmp(state, "MS002") == 0) {
			const char *m = PQresultErrorField(res,
			    PG_DIAG_MESSAGE_PRIMARY);

			prep_fail(p, m != NULL ? m : "quota", 0);
		} else
			prep_release(p, err);
		return;
	}
	if (PQnfields(res) == 1 && strcmp(PQfname(res, 0), "links") == 0 &&
	    PQntuples(res) == 1) {
		json_decref(p->links);
		if ((p->links = json_loads(db_value(res, 0, 0), 0,
		    NULL)) == NULL)
			p->links = json_object();
	}
	prep_next(p);
}

/* Start a guarded step: the guard statement, then the caller's. */
static struct db_batch *
prep_batch(struct prep *p)
{
	struct db_batch		*b = db_batch_new();
	struct db_params	*pp = db_params_new();

	db_params_int(pp, p->channel_id);
	db_params_int(pp, p->run_id);
	db_params_text(pp, p->cm->owner);
	db_params_int(pp, p->cm->app->cfg->send_lease);
	db_params_int(pp, p->step);
	db_batch_add(b, "SELECT musubi_run_guard($1, $2, $3, $4, $5)", pp);
	return (b);
}

/* Quote user ids as a PostgreSQL text[] literal: new string. */
static char *
prep_array_literal(json_t *arr)
{
	char	*s = xstrdup("{"), *t;
	json_t	*v;
	size_t	 i;

	json_array_foreach(arr, i, v) {
		const char *u = json_string_value(v);

		if (u == NULL || strpbrk(u, "\"\\{},") != NULL)
			continue;
		xasprintf(&t, "%s%s\"%s\"", s, i > 0 ? "," : "", u);
		free(s);
		s = t;
	}
	xasprintf(&t, "%s}", s);
	free(s);
	return (t);
}

/*
 * The snapshot statement around an audience query (friend ids in column
 * 1; $1 is the channel; NULL: every friend of the channel).  Parameters after the audience's: run, cap,
 * window, quota left, refuse, and for multicast the body's fixed part
 * (messages and options).  One statement: the snapshot is materialized
 * once, inserted into deliveries and, for multicast, grouped into batches
 * of CAMPAIGN_MULTICAST_MAX; its counts go to musubi_run_snapshotted().
 */
static char *
prep_snapshot_sql(const char *aud, int base, int cap, int multicast)
{
	char	*sql, *capsql, *batches, *from;
	int	 run = base + 1, cp = base + 2, win = base + 3, rem = base + 4;
	int	 refuse = base + 5, body = base + 6;

	if (cap)
		xasprintf(&capsql,
		    "LEFT JOIN (SELECT d.friend_id, count(*) AS n "
		    "FROM delivery_batches b JOIN deliveries d "
		    "ON d.channel_id = b.channel_id AND d.run_id = b.run_id "
		    "AND d.friend_id BETWEEN b.flo AND b.fhi "
		    "AND d.seq BETWEEN b.lo AND b.hi "
		    "WHERE b.channel_id = $1 AND b.run_id <> $%d "
		    "AND b.state IN ('pending', 'sending', 'sent') "
		    "AND coalesce(b.sent_at, now()) > now() - "
		    "make_interval(secs => $%d) GROUP BY d.friend_id) fc "
		    "ON fc.friend_id = f.id ", run, win);
	else
		xasprintf(&capsql, "LEFT JOIN (SELECT NULL::bigint AS "
		    "friend_id, 0 AS n WHERE $%d::bigint IS NULL) fc ON false ", win);
	if (multicast)
		xasprintf(&batches, "bat AS (INSERT INTO delivery_batches "
		    "(channel_id, run_id, kind, lo, hi, flo, fhi, retry_key, "
		    "body) SELECT $1, $%d, 'multicast', min(s.n), max(s.n), "
		    "min(s.id), max(s.id), gen_random_uuid(), "
		    "jsonb_build_object('to', "
		    "jsonb_agg(s.user_id ORDER BY s.n)) || $%d::jsonb "
		    "FROM s WHERE s.reason IS NULL GROUP BY (s.n - 1) / %d "
		    "ON CONFLICT DO NOTHING), ", run, body,
		    CAMPAIGN_MULTICAST_MAX);
	else
		batches = xstrdup("");
	/* Everyone: the audience is the friends table itself, no join. */
	if (aud == NULL)
		from = xstrdup("friends f ");
	else
		xasprintf(&from, "(SELECT DISTINCT a.id FROM (%s) a) a "
		    "JOIN friends f ON f.channel_id = $1 AND f.id = a.id ", aud);
	xasprintf(&sql,
	    "WITH s AS MATERIALIZED (SELECT b.id, b.user_id, b.n, "
	    "CASE WHEN b.reason IS NULL AND b.n > $%d::bigint THEN 'quota' "
	    "ELSE b.reason END AS reason "
	    "FROM (SELECT c.id, c.user_id, c.reason, CASE WHEN c.reason IS "
	    "NULL THEN row_number() OVER (PARTITION BY c.reason IS NULL "
	    "ORDER BY c.id) END AS n FROM (SELECT f.id, f.user_id, CASE "
	    "WHEN f.status = 'blocked' THEN 'blocked' "
	    "WHEN f.status <> 'following' THEN 'not_friend' "
	    "WHEN $%d::integer > 0 AND coalesce(fc.n, 0) >= $%d::integer "
	    "THEN 'frequency_cap' END AS reason FROM %s%s"
	    "WHERE f.channel_id = $1) c) b), "
	    "ins AS (INSERT INTO deliveries (channel_id, run_id, friend_id, "
	    "seq, skip_reason) SELECT $1, $%d, s.id, CASE WHEN s.reason IS "
	    "NULL THEN s.n END, s.reason FROM s ON CONFLICT DO NOTHING), %s"
	    "cnt AS (SELECT count(*) AS total, count(*) FILTER (WHERE "
	    "s.reason IS NULL) AS ok, count(*) FILTER (WHERE s.reason = "
	    "'quota') AS over FROM s) "
	    "SELECT musubi_run_snapshotted($1, $%d, $%d, cnt.total, cnt.ok, "
	    "cnt.over, %s) FROM cnt",
	    rem, cp, cp, from, capsql, run, batches, run, refuse,
	    multicast ? "true" : "false");
	free(from);
	free(capsql);
	free(batches);
	if (!multicast) {
		/* Keep the parameter count the same: $body is unused. */
		char	*t;

		xasprintf(&t, "%s WHERE $%d::text IS NULL", sql, body);
		free(sql);
		sql = t;
	}
	return (sql);
}

/* Snapshot the audience (step 1), given its query and parameters. */
static void
prep_snapshot(struct prep *p, const char *aud, struct db_params *pp)
{
	struct db_batch		*b = prep_batch(p);
	struct db_params	*q;
	json_t			*opts;
	char			*sql, *js;
	int			 base = db_params_count(pp);

	db_batch_add(b, "SET LOCAL work_mem = '256MB'", NULL);
	db_batch_add(b, "SET LOCAL jit = off", NULL);
	q = db_params_new();
	db_params_int(q, p->channel_id);
	db_params_int(q, p->run_id);
	if (p->remaining >= 0)
		db_params_int(q, p->remaining);
	else
		db_params_null(q);
	db_batch_add(b, "UPDATE campaign_runs SET quota_remaining = $3 "
	    "WHERE channel_id = $1 AND id = $2", q);
	db_params_int(pp, p->run_id);
	db_params_int(pp, p->cap);
	db_params_int(pp, p->window_s);
	if (p->remaining >= 0)
		db_params_int(pp, p->remaining);
	else
		db_params_null(pp);
	db_params_bool(pp, p->refuse);
	if (!p->personalized) {
		opts = json_pack("{s:O}", "messages", p->rendered);
		prep_options(p, opts);
		js = json_dumps(opts, JSON_COMPACT);
		json_decref(opts);
		db_params_text(pp, js);
		free(js);
	} else
		db_params_null(pp);
	sql = prep_snapshot_sql(aud, base, p->cap > 0, !p->personalized);
	db_batch_add(b, sql, pp);
	free(sql);
	q = db_params_new();
	db_params_int(q, p->channel_id);
	db_params_int(q, p->run_id);
	db_batch_add(b, "SELECT musubi_run_settle($1, $2)", q);
	p->step = p->personalized ? 2 : 3;
	db_batch_run(p->cm->app->db, b, prep_step_cb, p);
}

/* The segment's rule was read: compile and snapshot it. */
static void
prep_segment_cb(const PGresult *res, const char *err, void *arg)
{
	struct prep		*p = arg;
	struct segment_error	 se;
	struct db_params	*pp = NULL;
	json_t			*rule;
	char			*sql = NULL, why[1200];

	if (err != NULL) {
		prep_release(p, err);
		return;
	}
	if (PQntuples(res) == 0) {
		prep_fail(p, "the campaign's segment no longer exists", 0);
		return;
	}
	if ((rule = json_loads(db_value(res, 0, 0), 0, NULL)) == NULL) {
		prep_fail(p, "the segment's rule is not JSON", 0);
		return;
	}
	memset(&se, 0, sizeof se);
	if (segment_sql(rule, p->channel_id, &sql, &pp, &se) != 0) {
		json_decref(rule);
		snprintf(why, sizeof why, "segment rule refused at %s: %s",
		    se.path, se.message);
		prep_fail(p, why, 0);
		return;
	}
	json_decref(rule);
	prep_snapshot(p, sql, pp);
	free(sql);
}

/* The quota is known: evaluate the audience. */
static void
prep_quota_cb(const struct lineapi_quota *q, void *arg)
{
	struct prep		*p = arg;
	struct db_params	*pp;
	const char		*type;
	char			*lit, why[256];

	if (q->auth_failed) {
		snprintf(why, sizeof why, "unauthorized: LINE refused the "
		    "channel access token (%s)", q->err);
		prep_fail(p, why, 1);
		return;
	}
	if (q->err != NULL) {
		prep_release(p, q->err);
		return;
	}
	p->remaining = q->limited ? (q->value > q->used ?
	    q->value - q->used : 0) : -1;
	if (p->cm->stopping) {
		prep_release(p, "musubid is stopping");
		return;
	}
	type = json_string_value(json_object_get(p->audience, "type"));
	pp = db_params_new();
	db_params_int(pp, p->channel_id);
	if (type != NULL && strcmp(type, "friends") == 0) {
		lit = prep_array_literal(json_object_get(p->audience,
		    "user_ids"));
		db_params_text(pp, lit);
		free(lit);
		prep_snapshot(p, "SELECT f.id FROM friends f "
		    "WHERE f.channel_id = $1 AND f.user_id = ANY ($2::text[])",
		    pp);
	} else if (type != NULL && strcmp(type, "segment") == 0) {
		db_params_int(pp, json_integer_value(json_object_get(
		    p->audience, "segment_id")));
		db_query(p->cm->app->db, "SELECT rule::text FROM segments "
		    "WHERE channel_id = $1 AND id = $2", pp, prep_segment_cb,
		    p);
	} else if (type != NULL && strcmp(type, "snapshot") == 0) {
		db_params_int(pp, json_integer_value(json_object_get(
		    p->audience, "snapshot_id")));
		prep_snapshot(p, "SELECT m.friend_id AS id FROM "
		    "segment_snapshot_members m WHERE m.channel_id = $1 "
		    "AND m.snapshot_id = $2", pp);
	} else
		prep_snapshot(p, NULL, pp);
}

/* Make the run's tracked links (step 0). */
static void
prep_links(struct prep *p)
{
	struct db_batch		*b = prep_batch(p);
	struct db_params	*pp = db_params_new();
	json_t			*urls = campaign_messages_urls(p->messages);
	json_t			*keep = json_array(), *u;
	size_t			 i;
	char			*lit;

	json_array_foreach(urls, i, u) {
		if (json_string_length(u) <= CAMPAIGN_URL_MAX)
			json_array_append(keep, u);
	}
	json_decref(urls);
	lit = prep_array_literal(keep);
	json_decref(keep);
	db_params_int(pp, p->channel_id);
	db_params_int(pp, p->run_id);
	db_params_int(pp, p->campaign_id);
	db_params_text(pp, lit);
	free(lit);
	db_batch_add(b, "WITH u AS (SELECT DISTINCT x FROM unnest($4::text[]) "
	    "x), ins AS (INSERT INTO links (channel_id, name, destination, "
	    "campaign_id) SELECT $1, 'campaign ' || $3::bigint || ' run ' || "
	    "$2::bigint, u.x, $3::bigint FROM u RETURNING id, destination) "
	    "UPDATE campaign_runs SET step = 1, links = coalesce((SELECT "
	    "jsonb_object_agg(destination, id) FROM ins), '{}') "
	    "WHERE channel_id = $1 AND id = $2 RETURNING links::text", pp);
	p->step = 1;
	db_batch_run(p->cm->app->db, b, prep_step_cb, p);
}

/* Map a URL to this run's tracked link for the current recipient. */
static char *
prep_url_cb(const char *url, void *arg)
{
	struct prep	*p = arg;
	json_t		*id = json_object_get(p->links, url);

	if (!json_is_integer(id))
		return (NULL);
	return (track_click_url(p->cm->app->track, p->channel_id,
	    json_integer_value(id), p->friend_id, p->run_id));
}

/* The options every body of the run carries besides "to" and messages. */
static void
prep_options(struct prep *p, json_t *body)
{
	if (p->notification_disabled)
		json_object_set_new(body, "notificationDisabled", json_true());
	if (p->unit != NULL)
		json_object_set_new(body, "customAggregationUnits",
		    json_pack("[s]", p->unit));
}

/* The last statement of step 2: the run can be sent. */
static void
prep_ready(struct prep *p, struct db_batch *b)
{
	struct db_params	*pp = db_params_new();

	db_params_int(pp, p->channel_id);
	db_params_int(pp, p->run_id);
	db_batch_add(b, "UPDATE campaign_runs SET step = 3, state = 'sending', "
	    "started_at = now(), lease_owner = NULL, lease_until = NULL "
	    "WHERE channel_id = $1 AND id = $2", pp);
	pp = db_params_new();
	db_params_int(pp, p->channel_id);
	db_params_int(pp, p->run_id);
	db_batch_add(b, "SELECT musubi_run_settle($1, $2)", pp);
	p->step = 3;
}

static void	prep_push(struct prep *);

/* A chunk of recipients was read: render their push bodies. */
static void
prep_push_rows_cb(const PGresult *res, const char *err, void *arg)
{
	struct prep			*p = arg;
	struct campaign_recipient	 r;
	struct db_batch			*b;
	struct db_params		*pp;
	json_t				*rows, *body, *msgs;
	int				 i, n;
	int64_t				 last = p->built_friend, seq;
	char				*js;

	if (err != NULL) {
		prep_release(p, err);
		return;
	}
	n = PQntuples(res);
	b = prep_batch(p);
	if (n == 0) {
		prep_ready(p, b);
		db_batch_run(p->cm->app->db, b, prep_step_cb, p);
		return;
	}
	rows = json_array();
	for (i = 0; i < n; i++) {
		memset(&r, 0, sizeof r);
		seq = db_int(res, i, 0);
		last = r.friend_id = p->friend_id = db_int(res, i, 1);
		r.user_id = db_value(res, i, 2);
		r.display_name = db_value(res, i, 3);
		msgs = campaign_messages_render(p->messages, &r, prep_url_cb,
		    p);
		body = json_pack("{s:s, s:o}", "to", r.user_id, "messages",
		    msgs);
		prep_options(p, body);
		json_array_append_new(rows, json_pack("{s:I, s:I, s:o}", "lo",
		    (json_int_t)seq, "f", (json_int_t)last, "body", body));
	}
	js = json_dumps(rows, JSON_COMPACT);
	json_decref(rows);
	pp = db_params_new();
	db_params_int(pp, p->channel_id);
	db_params_int(pp, p->run_id);
	db_params_text(pp, js);
	free(js);
	db_batch_add(b, "INSERT INTO delivery_batches (channel_id, run_id, "
	    "kind, lo, hi, flo, fhi, retry_key, body) "
	    "SELECT $1, $2, 'push', r.lo, r.lo, r.f, r.f, gen_random_uuid(), "
	    "r.body FROM jsonb_to_recordset($3::jsonb) AS r(lo integer, "
	    "f bigint, body jsonb) ON CONFLICT DO NOTHING", pp);
	pp = db_params_new();
	db_params_int(pp, p->channel_id);
	db_params_int(pp, p->run_id);
	db_params_int(pp, last);
	db_batch_add(b, "UPDATE campaign_runs SET built_friend = $3 "
	    "WHERE channel_id = $1 AND id = $2", pp);
	p->built_friend = last;
	db_batch_run(p->cm->app->db, b, prep_step_cb, p);
}

/* Read the next chunk of push recipients (step 2, personalised). */
static void
prep_push(struct prep *p)
{
	struct db_params	*pp = db_params_new();

	db_params_int(pp, p->channel_id);
	db_params_int(pp, p->run_id);
	db_params_int(pp, p->built_friend);
	db_params_int(pp, PREP_CHUNK);
	db_query(p->cm->app->db, "SELECT d.seq, d.friend_id, f.user_id, "
	    "f.display_name FROM deliveries d JOIN friends f "
	    "ON f.channel_id = d.channel_id AND f.id = d.friend_id "
	    "WHERE d.channel_id = $1 AND d.run_id = $2 AND d.friend_id > $3 "
	    "AND d.seq IS NOT NULL ORDER BY d.friend_id LIMIT $4", pp,
	    prep_push_rows_cb, p);
}

/*
 * Multicast: render the one copy of the messages (the run's links, no
 * recipient) and check it still fits LINE's limits.  -1 when it failed
 * the run.
 */
static int
prep_render(struct prep *p)
{
	char	*path = NULL, *cause = NULL, why[600];

	json_decref(p->rendered);
	p->friend_id = 0;
	p->rendered = campaign_messages_render(p->messages, NULL, prep_url_cb,
	    p);
	if (campaign_messages_validate(p->rendered, &path, &cause) == 0)
		return (0);
	snprintf(why, sizeof why, "after link rewriting, %s: %s", path,
	    cause);
	free(path);
	free(cause);
	prep_fail(p, why, 0);
	return (-1);
}

/* Go on with the step the run is at. */
static void
prep_next(struct prep *p)
{
	if (p->cm->stopping && p->step < 3) {
		prep_release(p, "musubid is stopping");
		return;
	}
	switch (p->step) {
	case 0:
		prep_links(p);
		break;
	case 1:
		if (p->token == NULL || *p->token == '\0') {
			prep_fail(p, "unauthorized: the channel has no access "
			    "token", 1);
			return;
		}
		if (!p->personalized && prep_render(p) != 0)
			return;
		lineapi_quota(p->cm->api, p->token, prep_quota_cb, p);
		break;
	case 2:
		prep_push(p);
		break;
	default:
		metrics_add(p->cm->app->metrics,
		    "musubi_campaign_runs_prepared_total", "", 1);
		log_info("campaign: run %lld of campaign %lld is sending",
		    (long long)p->run_id, (long long)p->campaign_id);
		sender_kick(p->cm->sender);
		prep_done(p, 0);
		break;
	}
}

/* The scheduler pass returned; maybe with a run to prepare. */
static void
campaign_ticked_cb(const PGresult *res, const char *err, void *arg)
{
	struct campaign	*cm = arg;
	struct prep	*p;
	const char	*unit;

	cm->ticking = 0;
	if (err != NULL) {
		log_warnx("campaign: scheduler pass failed: %s", err);
		if (!cm->stopping)
			campaign_arm(cm, cm->app->cfg->campaign_poll);
		return;
	}
	if (PQntuples(res) == 0 || cm->stopping) {
		if (!cm->stopping)
			campaign_arm(cm, cm->app->cfg->campaign_poll);
		return;
	}
	p = xcalloc(1, sizeof *p);
	p->cm = cm;
	p->channel_id = db_int(res, 0, 0);
	p->run_id = db_int(res, 0, 1);
	p->campaign_id = db_int(res, 0, 2);
	p->step = (int)db_int(res, 0, 3);
	p->built_friend = db_int(res, 0, 4);
	p->audience = json_loads(db_value(res, 0, 5), 0, NULL);
	p->messages = json_loads(db_value(res, 0, 6), 0, NULL);
	p->personalized = *db_value(res, 0, 7) == 't';
	p->notification_disabled = *db_value(res, 0, 8) == 't';
	unit = db_value(res, 0, 9);
	if (unit != NULL && *unit == '\0')
		xasprintf(&p->unit, "musubi_c%lld", (long long)p->campaign_id);
	else if (unit != NULL)
		p->unit = xstrdup(unit);
	p->refuse = strcmp(db_value(res, 0, 10), "refuse") == 0;
	p->token = db_value(res, 0, 11) != NULL ?
	    xstrdup(db_value(res, 0, 11)) : NULL;
	p->cap = db_int(res, 0, 12);
	p->window_s = db_int(res, 0, 13);
	p->remaining = db_value(res, 0, 14) != NULL ? db_int(res, 0, 14) : -1;
	p->links = db_value(res, 0, 15) != NULL ?
	    json_loads(db_value(res, 0, 15), 0, NULL) : NULL;
	if (p->links == NULL)
		p->links = json_object();
	cm->prep = p;
	if (p->audience == NULL || p->messages == NULL) {
		prep_fail(p, "the campaign's audience or messages are not "
		    "JSON", 1);
		return;
	}
	log_info("campaign: preparing run %lld of campaign %lld (step %d)",
	    (long long)p->run_id, (long long)p->campaign_id, p->step);
	prep_next(p);
}

/* One scheduler pass. */
static void
campaign_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct campaign		*cm = arg;
	struct db_params	*p;

	if (cm->stopping || cm->ticking || cm->prep != NULL)
		return;
	if (!db_is_ready(cm->app->db)) {
		campaign_arm(cm, 1000);
		return;
	}
	cm->ticking = 1;
	p = db_params_new();
	db_params_text(p, cm->owner);
	db_params_int(p, cm->app->cfg->send_lease);
	db_query(cm->app->db, "SELECT * FROM musubi_campaign_tick($1, $2)", p,
	    campaign_ticked_cb, cm);
}
