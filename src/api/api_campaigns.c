/* SPDX-License-Identifier: ISC */
/*
 * api_campaigns.c -- /api/v1/channels/{slug}/campaigns and .../policies.
 *
 *	POST   .../campaigns			create (draft)
 *	GET    .../campaigns			list
 *	GET    .../campaigns/{id}		one, with its runs
 *	PATCH  .../campaigns/{id}		edit (draft, scheduled; else 409)
 *	DELETE .../campaigns/{id}		delete a draft
 *	POST   .../campaigns/{id}/{action}	schedule, pause, resume, cancel
 *	GET    .../campaigns/{id}/report	JSON, or CSV with ?format=csv
 *	GET    .../campaigns/{id}/runs/{run}/report
 *	GET    .../campaigns/{id}/runs/{run}/recipients?status=&after=
 *	GET    .../policies, PUT .../policies	frequency cap, quiet hours
 *
 * Bad input is 422 with a JSON pointer (messages are checked against
 * LINE's limits by messages.c); a segment or snapshot of another channel is
 * 404; changing a campaign that is running, or an action its state does
 * not allow, is 409.  State changes are musubi_campaign_action() in
 * PostgreSQL, so two requests (or two processes) cannot race.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "musubi/api.h"
#include "musubi/app.h"
#include "musubi/campaign.h"
#include "musubi/db.h"
#include "musubi/httpd.h"
#include "musubi/line.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

#define ISO8601(col) \
	"to_char(" col " AT TIME ZONE 'UTC', " \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

#define CAMPAIGN_COLS \
	"c.id, c.name, c.state, c.audience::text, c.messages::text, " \
	"c.personalized, c.notification_disabled, c.aggregation_unit, " \
	"c.schedule::text, " ISO8601("c.next_run_at") ", c.policies::text, " \
	"c.quota_policy, c.attribution_days, c.status_reason, " \
	ISO8601("c.created_at") ", " ISO8601("c.updated_at") ", " \
	ISO8601("c.finished_at")
#define CAMPAIGN_NCOLS	17

#define RUNS_JSON \
	"(SELECT coalesce(json_agg(json_build_object('id', r.id, " \
	"'scheduled_at', " ISO8601("r.scheduled_at") ", 'state', r.state, " \
	"'status_reason', r.status_reason, 'audience', r.audience_count, " \
	"'sendable', r.sendable_count, 'started_at', " \
	ISO8601("r.started_at") ", 'finished_at', " ISO8601("r.finished_at") \
	") ORDER BY r.id), '[]') FROM campaign_runs r " \
	"WHERE r.channel_id = c.channel_id AND r.campaign_id = c.id)"

#define FRIENDS_MAX	10000
#define LIST_MAX	200

static const char *const campaign_fields[] = {
	"name", "audience", "messages", "schedule", "notification_disabled",
	"aggregation_unit", "policies", "quota_policy", "attribution_days",
	NULL
};

/* A validated create/edit body, as SQL parameters (NULL: not given). */
struct campaign_in {
	const char	*name;
	char		*audience;
	char		*messages;
	int		 personalized;
	char		*schedule;
	int		 notify_off;	/* -1 not given */
	const char	*unit;
	int		 unit_given;
	char		*policies;
	const char	*quota_policy;
	long		 attribution_days;	/* 0 not given */
};

/* Free a parsed body. */
static void
campaign_in_free(struct campaign_in *in)
{
	free(in->audience);
	free(in->messages);
	free(in->schedule);
	free(in->policies);
}

/* Parse a positive id from the path; 0 if not one. */
static int64_t
campaign_path_id(struct api_ctx *ctx, const char *name)
{
	const char	*s = http_req_param(ctx->req, name);
	char		*end;
	long long	 n;

	if (s == NULL)
		return (0);
	errno = 0;
	n = strtoll(s, &end, 10);
	if (*end != '\0' || end == s || n <= 0 || errno != 0)
		return (0);
	return (n);
}

static void	campaign_get(struct api_ctx *);

/* Render a campaign whose CAMPAIGN_COLS start at column off. */
static json_t *
campaign_json(const PGresult *res, int row, int off)
{
	json_t		*j;
	const char	*v;
	char		*u;

#define COL(n)	db_value(res, row, off + (n))
	j = json_pack("{s:I, s:s, s:s}", "id",
	    (json_int_t)db_int(res, row, off), "name", COL(1), "state",
	    COL(2));
	json_object_set_new(j, "audience", json_loads(COL(3), 0, NULL));
	json_object_set_new(j, "messages", json_loads(COL(4), 0, NULL));
	json_object_set_new(j, "personalized", json_boolean(*COL(5) == 't'));
	json_object_set_new(j, "notification_disabled",
	    json_boolean(*COL(6) == 't'));
	if ((v = COL(7)) == NULL)
		json_object_set_new(j, "aggregation_unit", json_null());
	else if (*v == '\0') {
		xasprintf(&u, "musubi_c%lld",
		    (long long)db_int(res, row, off));
		json_object_set_new(j, "aggregation_unit", json_string(u));
		free(u);
	} else
		json_object_set_new(j, "aggregation_unit", json_string(v));
	json_object_set_new(j, "schedule", json_loads(COL(8), 0, NULL));
	json_object_set_new(j, "next_run_at", COL(9) != NULL ?
	    json_string(COL(9)) : json_null());
	json_object_set_new(j, "policies", json_loads(COL(10), 0, NULL));
	json_object_set_new(j, "quota_policy", json_string(COL(11)));
	json_object_set_new(j, "attribution_days",
	    json_integer(db_int(res, row, off + 12)));
	json_object_set_new(j, "status_reason", COL(13) != NULL ?
	    json_string(COL(13)) : json_null());
	json_object_set_new(j, "created_at", json_string(COL(14)));
	json_object_set_new(j, "updated_at", json_string(COL(15)));
	json_object_set_new(j, "finished_at", COL(16) != NULL ?
	    json_string(COL(16)) : json_null());
	if (PQnfields(res) > off + CAMPAIGN_NCOLS)
		json_object_set_new(j, "runs", json_loads(COL(CAMPAIGN_NCOLS),
		    0, NULL));
#undef COL
	return (j);
}

/* Check a local time "HH:MM". */
static int
campaign_hhmm(json_t *v)
{
	const char	*s = json_string_value(v);

	return (s != NULL && strlen(s) == 5 && s[2] == ':' &&
	    s[0] >= '0' && s[0] <= '2' && s[1] >= '0' && s[1] <= '9' &&
	    (s[0] < '2' || s[1] <= '3') && s[3] >= '0' && s[3] <= '5' &&
	    s[4] >= '0' && s[4] <= '9');
}

/*
 * Check a policies object (campaign overrides under prefix "/policies",
 * or the channel's, prefix "").  Replies 422 and returns -1 when bad.
 */
static int
campaign_policies_ok(struct http_req *req, json_t *p, const char *prefix)
{
	const char	*key;
	json_t		*v, *x;
	char		 path[64];

	if (!json_is_object(p)) {
		http_reply_error(req, 422, "invalid_type", *prefix ? prefix :
		    "/", "policies must be an object");
		return (-1);
	}
	json_object_foreach(p, key, v) {
		snprintf(path, sizeof path, "%s/%.40s", prefix, key);
		if (strcmp(key, "frequency_cap") == 0) {
			if (json_is_null(v))
				continue;
			x = json_object_get(v, "max");
			if (!json_is_object(v) || !json_is_integer(x) ||
			    json_integer_value(x) < 1 ||
			    json_integer_value(x) > 1000) {
				http_reply_error(req, 422, "invalid_value",
				    path, "frequency_cap is null or {\"max\": "
				    "1..1000, \"window_hours\": 1..8784}");
				return (-1);
			}
			x = json_object_get(v, "window_hours");
			if (x != NULL && (!json_is_integer(x) ||
			    json_integer_value(x) < 1 ||
			    json_integer_value(x) > 8784)) {
				snprintf(path, sizeof path,
				    "%s/frequency_cap/window_hours", prefix);
				http_reply_error(req, 422, "invalid_value",
				    path, "window_hours must be 1..8784");
				return (-1);
			}
		} else if (strcmp(key, "quiet_hours") == 0) {
			if (json_is_null(v))
				continue;
			if (!json_is_object(v) ||
			    !campaign_hhmm(json_object_get(v, "start")) ||
			    !campaign_hhmm(json_object_get(v, "end")) ||
			    json_equal(json_object_get(v, "start"),
			    json_object_get(v, "end"))) {
				http_reply_error(req, 422, "invalid_value",
				    path, "quiet_hours is null or {\"start\": "
				    "\"HH:MM\", \"end\": \"HH:MM\"} (local "
				    "times in the channel's timezone; may span "
				    "midnight)");
				return (-1);
			}
		} else {
			http_reply_error(req, 422, "unknown_field", path,
			    "unknown policy \"%.40s\" (frequency_cap, "
			    "quiet_hours)", key);
			return (-1);
		}
	}
	return (0);
}

/* Check an audience; replies 422 and returns -1 when bad. */
static int
campaign_audience_ok(struct http_req *req, json_t *a)
{
	const char	*type, *k;
	json_t		*ids, *v;
	size_t		 i;
	char		 path[64];

	if (!json_is_object(a)) {
		http_reply_error(req, 422, "invalid_type", "/audience",
		    "audience must be an object");
		return (-1);
	}
	type = json_string_value(json_object_get(a, "type"));
	if (type == NULL || (strcmp(type, "all") != 0 &&
	    strcmp(type, "friends") != 0 && strcmp(type, "segment") != 0 &&
	    strcmp(type, "snapshot") != 0)) {
		http_reply_error(req, 422, "invalid_value", "/audience/type",
		    "audience type must be segment, snapshot, friends or all");
		return (-1);
	}
	if (strcmp(type, "friends") == 0) {
		ids = json_object_get(a, "user_ids");
		if (!json_is_array(ids) || json_array_size(ids) < 1 ||
		    json_array_size(ids) > FRIENDS_MAX) {
			http_reply_error(req, 422, "invalid_value",
			    "/audience/user_ids", "user_ids must list 1 to %d "
			    "LINE user ids", FRIENDS_MAX);
			return (-1);
		}
		json_array_foreach(ids, i, v) {
			if (!json_is_string(v) ||
			    !line_is_user_id(json_string_value(v))) {
				snprintf(path, sizeof path,
				    "/audience/user_ids/%zu", i);
				http_reply_error(req, 422, "invalid_value",
				    path, "not a LINE user id (U + 32 hex "
				    "digits)");
				return (-1);
			}
		}
	} else if (strcmp(type, "segment") == 0 ||
	    strcmp(type, "snapshot") == 0) {
		k = strcmp(type, "segment") == 0 ? "segment_id" :
		    "snapshot_id";
		v = json_object_get(a, k);
		if (!json_is_integer(v) || json_integer_value(v) < 1) {
			snprintf(path, sizeof path, "/audience/%s", k);
			http_reply_error(req, 422, "invalid_value", path,
			    "%s must be a positive integer", k);
			return (-1);
		}
	}
	return (0);
}

/* Dump a JSON value: new string. */
static char *
campaign_dump(json_t *v)
{
	char	*s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

	if (s == NULL)
		fatalx("api: json_dumps failed");
	return (s);
}

/*
 * Validate a create (all required fields) or edit body into in.  Replies
 * and returns -1 when bad.
 */
static int
campaign_parse(struct api_ctx *ctx, json_t *body, int create,
    struct campaign_in *in)
{
	struct http_req	*req = ctx->req;
	json_t		*v;
	char		*path = NULL, *cause = NULL;

	if (api_reject_unknown(req, body, campaign_fields) != 0 ||
	    api_string(req, body, "name", create, 1, 200, &in->name) != 0)
		return (-1);
	if ((v = json_object_get(body, "messages")) != NULL || create) {
		if (v == NULL) {
			http_reply_error(req, 422, "required", "/messages",
			    "messages is required");
			return (-1);
		}
		if (campaign_messages_validate(v, &path, &cause) != 0) {
			http_reply_error(req, 422, "invalid_message", path,
			    "%s", cause);
			free(path);
			free(cause);
			return (-1);
		}
		in->messages = campaign_dump(v);
		in->personalized = campaign_messages_personalized(v);
	}
	if ((v = json_object_get(body, "audience")) != NULL || create) {
		if (v == NULL) {
			http_reply_error(req, 422, "required", "/audience",
			    "audience is required");
			return (-1);
		}
		if (campaign_audience_ok(req, v) != 0)
			return (-1);
		in->audience = campaign_dump(v);
	}
	if ((v = json_object_get(body, "schedule")) != NULL) {
		if (campaign_schedule_validate(v, time(NULL), &path,
		    &cause) != 0) {
			http_reply_error(req, 422, "invalid_schedule", path,
			    "%s", cause);
			free(path);
			free(cause);
			return (-1);
		}
		in->schedule = campaign_dump(v);
	} else if (create)
		in->schedule = xstrdup("{\"type\":\"now\"}");
	if ((v = json_object_get(body, "notification_disabled")) != NULL) {
		if (!json_is_boolean(v)) {
			http_reply_error(req, 422, "invalid_type",
			    "/notification_disabled", "must be a boolean");
			return (-1);
		}
		in->notify_off = json_is_true(v);
	}
	if ((v = json_object_get(body, "aggregation_unit")) != NULL) {
		in->unit_given = 1;
		if (!json_is_null(v)) {
			const char	*u = json_string_value(v);
			size_t		 n = u != NULL ? strlen(u) : 0;

			if (u == NULL || n < 1 || n > 30 || strspn(u,
			    "abcdefghijklmnopqrstuvwxyz"
			    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != n) {
				http_reply_error(req, 422, "invalid_value",
				    "/aggregation_unit", "aggregation_unit "
				    "must match ^[a-zA-Z0-9_]{1,30}$, or be "
				    "null for none");
				return (-1);
			}
			in->unit = u;
		}
	} else if (create) {
		in->unit_given = 1;
		in->unit = "";		/* derived: musubi_c<id> */
	}
	if ((v = json_object_get(body, "policies")) != NULL) {
		if (campaign_policies_ok(req, v, "/policies") != 0)
			return (-1);
		in->policies = campaign_dump(v);
	}
	if ((v = json_object_get(body, "quota_policy")) != NULL) {
		in->quota_policy = json_string_value(v);
		if (in->quota_policy == NULL ||
		    (strcmp(in->quota_policy, "refuse") != 0 &&
		    strcmp(in->quota_policy, "partial") != 0)) {
			http_reply_error(req, 422, "invalid_value",
			    "/quota_policy", "quota_policy is refuse (do not "
			    "start when the monthly quota cannot cover the "
			    "audience) or partial (send up to what remains)");
			return (-1);
		}
	}
	if ((v = json_object_get(body, "attribution_days")) != NULL) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 90) {
			http_reply_error(req, 422, "invalid_value",
			    "/attribution_days", "attribution_days must be "
			    "1..90");
			return (-1);
		}
		in->attribution_days = (long)json_integer_value(v);
	}
	return (0);
}

/* Answer for an audience check that failed; 0 when it passed. */
static int
campaign_refuse_audience(struct api_ctx *ctx, const char *why)
{
	char	 path[64];

	if (why == NULL)
		return (0);
	if (strcmp(why, "not_found") == 0)
		http_reply_error(ctx->req, 404, "not_found", "/audience",
		    "no such segment or snapshot in this channel");
	else if (strcmp(why, "unavailable") == 0)
		http_reply_error(ctx->req, 422, "not_available", "/audience",
		    "segments are not available on this server yet");
	else if (strncmp(why, "friend:", 7) == 0) {
		snprintf(path, sizeof path, "/audience/user_ids/%.20s",
		    why + 7);
		http_reply_error(ctx->req, 422, "invalid_value", path,
		    "no such friend in this channel");
	} else
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such campaign");
	return (-1);
}

/* Bind a parsed body's values ($3..$13 of the write statements). */
static void
campaign_bind(struct db_params *p, const struct campaign_in *in)
{
	db_params_text(p, in->name);
	db_params_text(p, in->audience);
	db_params_text(p, in->messages);
	if (in->messages != NULL)
		db_params_bool(p, in->personalized);
	else
		db_params_null(p);
	if (in->notify_off >= 0)
		db_params_bool(p, in->notify_off);
	else
		db_params_null(p);
	db_params_bool(p, in->unit_given);
	db_params_text(p, in->unit);
	db_params_text(p, in->schedule);
	db_params_text(p, in->policies);
	db_params_text(p, in->quota_policy);
	if (in->attribution_days > 0)
		db_params_int(p, in->attribution_days);
	else
		db_params_null(p);
}

/* The create statement returned: why (col 0) or the new campaign. */
static void
campaign_created_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		api_db_error(ctx->req, "campaign create", err);
		return;
	}
	if (campaign_refuse_audience(ctx, db_value(res, 0, 0)) != 0)
		return;
	http_reply_json(ctx->req, 201, campaign_json(res, 0, 1));
}

/* POST /api/v1/channels/{slug}/campaigns */
static void
campaign_create(struct api_ctx *ctx)
{
	struct campaign_in	 in;
	struct db_params	*p;
	json_t			*body;

	memset(&in, 0, sizeof in);
	in.notify_off = -1;
	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (campaign_parse(ctx, body, 1, &in) != 0)
		goto out;
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_null(p);
	campaign_bind(p, &in);
	/* One statement: insert only when the audience is usable. */
	db_query(ctx->app->db,
	    "WITH chk AS (SELECT musubi_campaign_audience_check($1, "
	    "$4::jsonb) AS why), ins AS (INSERT INTO campaigns "
	    "(channel_id, name, audience, messages, personalized, "
	    "notification_disabled, aggregation_unit, schedule, policies, "
	    "quota_policy, attribution_days) "
	    "SELECT $1, $3, $4::jsonb, $5::jsonb, $6, coalesce($7, false), "
	    "CASE WHEN $8 THEN $9 END, $10::jsonb, "
	    "coalesce($11::jsonb, '{}'), coalesce($12, 'refuse'), "
	    "coalesce($13::integer, 7) FROM chk "
	    "WHERE chk.why IS NULL AND $2::bigint IS NULL RETURNING *) "
	    "SELECT chk.why, " CAMPAIGN_COLS " FROM chk LEFT JOIN ins c "
	    "ON true", p, campaign_created_cb, ctx);
out:
	campaign_in_free(&in);
	json_decref(body);
}

/* The edit statement returned: why, the state before, the campaign. */
static void
campaign_edited_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		api_db_error(ctx->req, "campaign edit", err);
		return;
	}
	if (campaign_refuse_audience(ctx, db_value(res, 0, 0)) != 0)
		return;
	if (db_value(res, 0, 2) == NULL) {
		http_reply_error(ctx->req, 409, "conflict", NULL,
		    "campaign is %s: it can be changed only while it is a "
		    "draft or scheduled", db_value(res, 0, 1));
		return;
	}
	campaign_kick(ctx->app->campaign);
	http_reply_json(ctx->req, 200, campaign_json(res, 0, 2));
}

/* PATCH /api/v1/channels/{slug}/campaigns/{id} */
static void
campaign_edit(struct api_ctx *ctx)
{
	struct campaign_in	 in;
	struct db_params	*p;
	json_t			*body;
	int64_t			 id = campaign_path_id(ctx, "id");

	memset(&in, 0, sizeof in);
	in.notify_off = -1;
	if (id == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such campaign");
		return;
	}
	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (campaign_parse(ctx, body, 0, &in) != 0)
		goto out;
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_int(p, id);
	campaign_bind(p, &in);
	db_query(ctx->app->db,
	    "WITH cur AS (SELECT c.state FROM campaigns c "
	    "WHERE c.channel_id = $1 AND c.id = $2), "
	    "chk AS (SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM cur) "
	    "THEN 'missing' WHEN $4::jsonb IS NOT NULL THEN "
	    "musubi_campaign_audience_check($1, $4::jsonb) END AS why), "
	    "upd AS (UPDATE campaigns c SET name = coalesce($3, c.name), "
	    "audience = coalesce($4::jsonb, c.audience), "
	    "messages = coalesce($5::jsonb, c.messages), "
	    "personalized = coalesce($6, c.personalized), "
	    "notification_disabled = coalesce($7, c.notification_disabled), "
	    "aggregation_unit = CASE WHEN $8 THEN $9 "
	    "ELSE c.aggregation_unit END, "
	    "schedule = coalesce($10::jsonb, c.schedule), "
	    "policies = coalesce($11::jsonb, c.policies), "
	    "quota_policy = coalesce($12, c.quota_policy), "
	    "attribution_days = coalesce($13::integer, c.attribution_days), "
	    "next_run_at = CASE WHEN c.state = 'scheduled' THEN "
	    "musubi_campaign_first(coalesce($10::jsonb, c.schedule), "
	    "ch.timezone) ELSE c.next_run_at END, updated_at = now() "
	    "FROM chk, channels ch WHERE ch.id = c.channel_id "
	    "AND c.channel_id = $1 AND c.id = $2 AND chk.why IS NULL "
	    "AND c.state IN ('draft', 'scheduled') RETURNING c.*) "
	    "SELECT chk.why, (SELECT state FROM cur), " CAMPAIGN_COLS
	    " FROM chk LEFT JOIN upd c ON true", p, campaign_edited_cb, ctx);
out:
	campaign_in_free(&in);
	json_decref(body);
}

/* The campaigns were read. */
static void
campaign_list_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*items;
	int		 i;

	if (err != NULL) {
		api_db_error(ctx->req, "campaign list", err);
		return;
	}
	items = json_array();
	for (i = 0; i < PQntuples(res); i++)
		json_array_append_new(items, campaign_json(res, i, 0));
	http_reply_json(ctx->req, 200, json_pack("{s:o}", "campaigns", items));
}

/* GET /api/v1/channels/{slug}/campaigns[?state=&before=<id>] */
static void
campaign_list(struct api_ctx *ctx)
{
	struct db_params	*p = db_params_new();
	const char		*state = http_req_query(ctx->req, "state");
	const char		*before = http_req_query(ctx->req, "before");

	db_params_int(p, ctx->channel_id);
	db_params_text(p, state);
	db_params_int(p, before != NULL ? strtoll(before, NULL, 10) : 0);
	db_params_int(p, LIST_MAX);
	db_query(ctx->app->db, "SELECT " CAMPAIGN_COLS " FROM campaigns c "
	    "WHERE c.channel_id = $1 AND ($2::text IS NULL OR c.state = $2) "
	    "AND ($3 = 0 OR c.id < $3) ORDER BY c.id DESC LIMIT $4", p,
	    campaign_list_cb, ctx);
}

/* One campaign was read. */
static void
campaign_get_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		api_db_error(ctx->req, "campaign read", err);
		return;
	}
	if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such campaign");
		return;
	}
	http_reply_json(ctx->req, 200, campaign_json(res, 0, 0));
}

/* GET /api/v1/channels/{slug}/campaigns/{id} */
static void
campaign_get(struct api_ctx *ctx)
{
	struct db_params	*p;
	int64_t			 id = campaign_path_id(ctx, "id");

	if (id == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such campaign");
		return;
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_int(p, id);
	db_query(ctx->app->db, "SELECT " CAMPAIGN_COLS ", " RUNS_JSON
	    " FROM campaigns c WHERE c.channel_id = $1 AND c.id = $2", p,
	    campaign_get_cb, ctx);
}

/* A draft was deleted (or not). */
static void
campaign_deleted_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		api_db_error(ctx->req, "campaign delete", err);
		return;
	}
	if (db_value(res, 0, 0) == NULL)
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such campaign");
	else if (db_value(res, 0, 1) == NULL)
		http_reply_error(ctx->req, 409, "conflict", NULL,
		    "campaign is %s: only drafts can be deleted (cancel it "
		    "instead)", db_value(res, 0, 0));
	else
		http_reply_json(ctx->req, 204, NULL);
}

/* DELETE /api/v1/channels/{slug}/campaigns/{id} */
static void
campaign_delete(struct api_ctx *ctx)
{
	struct db_params	*p;
	int64_t			 id = campaign_path_id(ctx, "id");

	if (id == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such campaign");
		return;
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_int(p, id);
	db_query(ctx->app->db, "WITH del AS (DELETE FROM campaigns "
	    "WHERE channel_id = $1 AND id = $2 AND state = 'draft' "
	    "RETURNING id) SELECT (SELECT state FROM campaigns "
	    "WHERE channel_id = $1 AND id = $2), (SELECT id FROM del)", p,
	    campaign_deleted_cb, ctx);
}

/* An action returned: reply with the campaign as it is now. */
static void
campaign_acted_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	const char	*r;

	if (err != NULL) {
		api_db_error(ctx->req, "campaign action", err);
		return;
	}
	r = db_value(res, 0, 0);
	if (r == NULL || strcmp(r, "not_found") == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such campaign");
	} else if (strcmp(r, "past") == 0) {
		http_reply_error(ctx->req, 422, "invalid_schedule",
		    "/schedule", "the schedule has no occurrence in the "
		    "future");
	} else if (strncmp(r, "conflict:", 9) == 0) {
		http_reply_error(ctx->req, 409, "conflict", NULL,
		    "campaign is %s: %s is not possible now", r + 9,
		    http_req_param(ctx->req, "action"));
	} else {
		/* Read it again: this statement saw the row as it was. */
		campaign_kick(ctx->app->campaign);
		campaign_get(ctx);
	}
}

/* POST /api/v1/channels/{slug}/campaigns/{id}/{action} */
static void
campaign_action(struct api_ctx *ctx)
{
	static const char *const actions[] = { "schedule", "pause", "resume",
	    "cancel", NULL };
	const char		*a = http_req_param(ctx->req, "action");
	struct db_params	*p;
	int64_t			 id = campaign_path_id(ctx, "id");
	size_t			 i;

	for (i = 0; actions[i] != NULL; i++) {
		if (strcmp(actions[i], a) == 0)
			break;
	}
	if (actions[i] == NULL || id == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such campaign action (schedule, pause, resume, "
		    "cancel)");
		return;
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_int(p, id);
	db_params_text(p, a);
	db_query(ctx->app->db, "SELECT musubi_campaign_action($1, $2, $3)", p,
	    campaign_acted_cb, ctx);
}

/* The report was computed. */
static void
campaign_report_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	const char	*fmt = http_req_query(ctx->req, "format");
	json_t		*r;
	char		*csv;

	if (err != NULL) {
		api_db_error(ctx->req, "campaign report", err);
		return;
	}
	if (db_value(res, 0, 0) == NULL ||
	    (r = json_loads(db_value(res, 0, 0), 0, NULL)) == NULL) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such campaign or run");
		return;
	}
	if (fmt != NULL && strcmp(fmt, "csv") == 0) {
		csv = campaign_report_csv(r);
		http_reply_raw(ctx->req, 200, "text/csv; charset=utf-8", csv,
		    strlen(csv));
		free(csv);
		json_decref(r);
		return;
	}
	http_reply_json(ctx->req, 200, r);
}

/* GET .../campaigns/{id}/report and .../runs/{run}/report */
static void
campaign_report(struct api_ctx *ctx)
{
	const char	*fmt = http_req_query(ctx->req, "format");
	int64_t		 id = campaign_path_id(ctx, "id");
	int64_t		 run = campaign_path_id(ctx, "run");

	if (fmt != NULL && strcmp(fmt, "csv") != 0 &&
	    strcmp(fmt, "json") != 0) {
		http_reply_error(ctx->req, 422, "invalid_value", "?format",
		    "format is json or csv");
		return;
	}
	if (id == 0 || (http_req_param(ctx->req, "run") != NULL &&
	    run == 0)) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such campaign or run");
		return;
	}
	campaign_report_query(ctx->app->db, ctx->channel_id, id, run,
	    campaign_report_cb, ctx);
}

/* A page of recipients was read. */
static void
campaign_recipients_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*items, *o;
	int		 i, n;

	if (err != NULL) {
		api_db_error(ctx->req, "recipients", err);
		return;
	}
	items = json_array();
	n = PQntuples(res);
	for (i = 0; i < n; i++) {
		o = json_pack("{s:s, s:s}", "user_id", db_value(res, i, 0),
		    "status", db_value(res, i, 1));
		json_object_set_new(o, "reason", db_value(res, i, 2) ?
		    json_string(db_value(res, i, 2)) : json_null());
		json_object_set_new(o, "request_id", db_value(res, i, 3) ?
		    json_string(db_value(res, i, 3)) : json_null());
		json_array_append_new(items, o);
	}
	o = json_pack("{s:o}", "recipients", items);
	json_object_set_new(o, "next", n == LIST_MAX ?
	    json_integer(db_int(res, n - 1, 4)) : json_null());
	http_reply_json(ctx->req, 200, o);
}

/*
 * GET .../campaigns/{id}/runs/{run}/recipients[?status=&after=]: each
 * friend of the run with its status (queued, sent, failed, skipped,
 * cancelled), derived from its batch.
 */
static void
campaign_recipients(struct api_ctx *ctx)
{
	const char		*status = http_req_query(ctx->req, "status");
	const char		*after = http_req_query(ctx->req, "after");
	struct db_params	*p;
	int64_t			 id = campaign_path_id(ctx, "id");
	int64_t			 run = campaign_path_id(ctx, "run");

	if (id == 0 || run == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such campaign or run");
		return;
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_int(p, id);
	db_params_int(p, run);
	db_params_text(p, status);
	db_params_int(p, after != NULL ? strtoll(after, NULL, 10) : 0);
	db_params_int(p, LIST_MAX);
	db_query(ctx->app->db, "SELECT * FROM (SELECT f.user_id, "
	    "CASE WHEN d.skip_reason IS NOT NULL THEN 'skipped' "
	    "WHEN d.failure IS NOT NULL THEN 'failed' "
	    "WHEN b.state = 'sent' THEN 'sent' "
	    "WHEN b.state = 'cancelled' THEN 'cancelled' "
	    "WHEN b.state = 'failed' THEN 'failed' ELSE 'queued' END "
	    "AS status, "
	    "coalesce(d.skip_reason, d.failure), "
	    "coalesce(b.accepted_request_id, b.request_id), d.friend_id "
	    "FROM deliveries d JOIN campaign_runs r ON r.channel_id = "
	    "d.channel_id AND r.id = d.run_id AND r.campaign_id = $2 "
	    "JOIN friends f ON f.channel_id = d.channel_id "
	    "AND f.id = d.friend_id "
	    "LEFT JOIN LATERAL (SELECT * FROM delivery_batches b "
	    "WHERE b.channel_id = d.channel_id AND b.run_id = d.run_id "
	    "AND b.lo <= d.seq AND d.seq <= b.hi AND b.state <> 'split' "
	    "ORDER BY b.lo DESC, b.hi LIMIT 1) b ON true "
	    "WHERE d.channel_id = $1 AND d.run_id = $3 AND d.friend_id > $5) x "
	    "WHERE $4::text IS NULL OR x.status = $4 "
	    "ORDER BY x.friend_id LIMIT $6", p, campaign_recipients_cb, ctx);
}

/* The channel's policies were read or written. */
static void
policies_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*o;

	if (err != NULL) {
		api_db_error(ctx->req, "policies", err);
		return;
	}
	o = json_object();
	if (PQntuples(res) > 0 && db_value(res, 0, 0) != NULL)
		json_object_set_new(o, "frequency_cap", json_pack("{s:I, s:I}",
		    "max", (json_int_t)db_int(res, 0, 0), "window_hours",
		    (json_int_t)(db_int(res, 0, 1) / 3600)));
	else
		json_object_set_new(o, "frequency_cap", json_null());
	if (PQntuples(res) > 0 && db_value(res, 0, 2) != NULL)
		json_object_set_new(o, "quiet_hours", json_pack("{s:s, s:s}",
		    "start", db_value(res, 0, 2), "end", db_value(res, 0, 3)));
	else
		json_object_set_new(o, "quiet_hours", json_null());
	json_object_set_new(o, "timezone", json_string(ctx->channel_tz));
	http_reply_json(ctx->req, 200, o);
}

/* GET /api/v1/channels/{slug}/policies */
static void
policies_get(struct api_ctx *ctx)
{
	struct db_params	*p = db_params_new();

	db_params_int(p, ctx->channel_id);
	db_query(ctx->app->db, "SELECT frequency_cap, frequency_window_s, "
	    "to_char(quiet_start, 'HH24:MI'), to_char(quiet_end, 'HH24:MI') "
	    "FROM channel_policies WHERE channel_id = $1", p, policies_cb,
	    ctx);
}

/*
 * PUT /api/v1/channels/{slug}/policies: {"frequency_cap": {"max": N,
 * "window_hours": H} | null, "quiet_hours": {"start": "21:00", "end":
 * "08:00"} | null}; a key left out keeps its value.
 */
static void
policies_put(struct api_ctx *ctx)
{
	struct db_params	*p;
	json_t			*body, *fc, *qh;

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (campaign_policies_ok(ctx->req, body, "") != 0) {
		json_decref(body);
		return;
	}
	fc = json_object_get(body, "frequency_cap");
	qh = json_object_get(body, "quiet_hours");
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_bool(p, fc != NULL);
	if (json_is_object(fc)) {
		db_params_int(p, json_integer_value(json_object_get(fc,
		    "max")));
		db_params_int(p, json_object_get(fc, "window_hours") != NULL ?
		    json_integer_value(json_object_get(fc, "window_hours")) *
		    3600 : 604800);
	} else {
		db_params_null(p);
		db_params_null(p);
	}
	db_params_bool(p, qh != NULL);
	db_params_text(p, json_string_value(json_object_get(qh, "start")));
	db_params_text(p, json_string_value(json_object_get(qh, "end")));
	db_query(ctx->app->db, "INSERT INTO channel_policies AS cp "
	    "(channel_id, frequency_cap, frequency_window_s, quiet_start, "
	    "quiet_end) VALUES ($1, $3, coalesce($4::integer, 604800), "
	    "$6::time, $7::time) ON CONFLICT (channel_id) DO UPDATE SET "
	    "frequency_cap = CASE WHEN $2 THEN $3 ELSE cp.frequency_cap END, "
	    "frequency_window_s = CASE WHEN $2 THEN coalesce($4::integer, "
	    "cp.frequency_window_s) ELSE cp.frequency_window_s END, "
	    "quiet_start = CASE WHEN $5 THEN $6::time ELSE cp.quiet_start END, "
	    "quiet_end = CASE WHEN $5 THEN $7::time ELSE cp.quiet_end END, "
	    "updated_at = now() RETURNING frequency_cap, frequency_window_s, "
	    "to_char(quiet_start, 'HH24:MI'), to_char(quiet_end, 'HH24:MI')",
	    p, policies_cb, ctx);
	json_decref(body);
	campaign_kick(ctx->app->campaign);
}

/* Register the campaign and policy routes. */
void
api_campaigns_init(struct api *api)
{
	api_route(api, HTTP_POST, "/api/v1/channels/{slug}/campaigns",
	    API_CHANNEL, campaign_create);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/campaigns",
	    API_CHANNEL, campaign_list);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/campaigns/{id}",
	    API_CHANNEL, campaign_get);
	api_route(api, HTTP_PATCH, "/api/v1/channels/{slug}/campaigns/{id}",
	    API_CHANNEL, campaign_edit);
	api_route(api, HTTP_DELETE, "/api/v1/channels/{slug}/campaigns/{id}",
	    API_CHANNEL, campaign_delete);
	api_route(api, HTTP_POST,
	    "/api/v1/channels/{slug}/campaigns/{id}/{action}", API_CHANNEL,
	    campaign_action);
	api_route(api, HTTP_GET,
	    "/api/v1/channels/{slug}/campaigns/{id}/report", API_CHANNEL,
	    campaign_report);
	api_route(api, HTTP_GET,
	    "/api/v1/channels/{slug}/campaigns/{id}/runs/{run}/report",
	    API_CHANNEL, campaign_report);
	api_route(api, HTTP_GET,
	    "/api/v1/channels/{slug}/campaigns/{id}/runs/{run}/recipients",
	    API_CHANNEL, campaign_recipients);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/policies",
	    API_CHANNEL, policies_get);
	api_route(api, HTTP_PUT, "/api/v1/channels/{slug}/policies",
	    API_CHANNEL, policies_put);
}
