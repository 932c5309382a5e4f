/* SPDX-License-Identifier: ISC */
/*
 * api_segments.c -- /api/v1/channels/{slug}/segments and /snapshots.
 *
 * Segments are saved rules (src/segment/), evaluated when asked: preview
 * (an unsaved rule: count and 20 sample friends), count, and members by
 * keyset pages or as one CSV.  A snapshot freezes a segment's members now
 * (one INSERT ... SELECT) for a campaign or an audit; it never changes
 * and outlives its segment.
 *
 * Counts, previews and snapshots run the rule in set mode (aggregates
 * joined once); member pages run it in row mode (aggregates looked up per
 * friend), so each page costs what it reads.  The CSV export is built page
 * by page (5,000 friends a query) into one buffer and sent when complete;
 * for a list that must not move while it is read, export a snapshot.
 *
 * Rule errors are 422 with a JSON pointer into the request body
 * ("/rule/all/2/purchases/count"); conditions whose data musubi does not
 * keep yet are 422 "not_available".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "musubi/api.h"
#include "musubi/app.h"
#include "musubi/crypto.h"
#include "musubi/db.h"
#include "musubi/httpd.h"
#include "musubi/log.h"
#include "musubi/segment.h"
#include "musubi/xmalloc.h"

#define ISO8601(col) \
	"to_char(" col " AT TIME ZONE 'UTC', " \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

#define SEGMENT_COLS \
	"id, name, description, rule::text, " ISO8601("created_at") ", " \
	ISO8601("updated_at")

/* A member row: the friend id (cursor) and what is shown. */
#define MEMBER_COLS \
	"f.id, f.user_id, f.display_name, f.status, f.language, " \
	ISO8601("f.followed_at")

/* A snapshot as JSON, built by PostgreSQL for lists. */
#define SNAPSHOT_JSON \
	"json_build_object('id', z.id, 'segment_id', z.segment_id, " \
	"'segment_name', z.segment_name, 'note', z.note, 'rule', z.rule, " \
	"'member_count', z.member_count, 'created_at', " \
	ISO8601("z.created_at") ")"

#define SEG_SAMPLE		20
#define SEG_LIST_MAX		1000
#define SEG_PAGE_DEFAULT	100
#define SEG_PAGE_MAX		1000
#define SEG_CSV_PAGE		5000
#define SNAP_PAGE_DEFAULT	50
#define SNAP_PAGE_MAX		500

static const char *const segment_fields[] = {
	"name", "description", "rule", NULL
};
static const char *const preview_fields[] = { "rule", NULL };
static const char *const sql_fields[] = { "rule", "mode", NULL };
static const char *const snapshot_fields[] = { "note", NULL };

enum seg_action {
	SEG_COUNT,
	SEG_MEMBERS,
	SEG_SNAPSHOT
};

/* A request about a saved segment: load its rule, then act. */
struct seg_job {
	struct api_ctx		*ctx;
	enum seg_action		 action;
	int64_t			 id;
	char			*note;
	int64_t			 cursor;
	long			 limit;
	int			 csv;
};

/* Preview: a count and a sample, run side by side. */
struct seg_preview {
	struct api_ctx		*ctx;
	int			 pending;
	char			*err;
	int			 timeout;
	int64_t			 count;
	json_t			*sample;
};

/* Member pages of a segment or a snapshot. */
struct seg_pager {
	struct api_ctx		*ctx;
	char			*sql;		/* then cursor, limit */
	char			**params;
	int			 nparams;
	int64_t			 cursor;
	long			 limit;		/* rows wanted per page */
	int			 csv;
	struct evbuffer		*buf;
	char			*filename;
	uint64_t		 rows;
};

/* A JSON string, or null. */
static json_t *
seg_str(const char *s)
{
	json_t	*j;

	if (s == NULL || (j = json_string(s)) == NULL)
		return (json_null());
	return (j);
}

/* Parse JSON text from PostgreSQL; null if unusable. */
static json_t *
seg_json(const char *s)
{
	json_t	*j;

	if (s == NULL || (j = json_loads(s, JSON_DECODE_ANY, NULL)) == NULL)
		return (json_null());
	return (j);
}

/* Render a SEGMENT_COLS row. */
static json_t *
seg_row_json(const PGresult *res, int row)
{
	return (json_pack("{s:I, s:o, s:o, s:o, s:o, s:o}",
	    "id", (json_int_t)db_int(res, row, 0),
	    "name", seg_str(db_value(res, row, 1)),
	    "description", seg_str(db_value(res, row, 2)),
	    "rule", seg_json(db_value(res, row, 3)),
	    "created_at", seg_str(db_value(res, row, 4)),
	    "updated_at", seg_str(db_value(res, row, 5))));
}

/* Render a SEGMENT_SNAPSHOT_COLS row. */
static json_t *
seg_snapshot_json(const PGresult *res, int row)
{
	const char	*sid = db_value(res, row, 1);

	return (json_pack("{s:I, s:o, s:o, s:o, s:o, s:I, s:o}",
	    "id", (json_int_t)db_int(res, row, 0),
	    "segment_id", sid != NULL ? json_integer(db_int(res, row, 1)) :
	    json_null(),
	    "segment_name", seg_str(db_value(res, row, 2)),
	    "note", seg_str(db_value(res, row, 3)),
	    "rule", seg_json(db_value(res, row, 4)),
	    "member_count", (json_int_t)db_int(res, row, 5),
	    "created_at", seg_str(db_value(res, row, 6))));
}

/* Render a MEMBER_COLS row. */
static json_t *
seg_member_json(const PGresult *res, int row)
{
	return (json_pack("{s:o, s:o, s:o, s:o, s:o}",
	    "user_id", seg_str(db_value(res, row, 1)),
	    "display_name", seg_str(db_value(res, row, 2)),
	    "status", seg_str(db_value(res, row, 3)),
	    "language", seg_str(db_value(res, row, 4)),
	    "followed_at", seg_str(db_value(res, row, 5))));
}

/* Reply for a failed query: a statement timeout says so. */
static void
seg_db_error(struct http_req *req, const char *what, const PGresult *res,
    const char *err)
{
	if (res != NULL && strcmp(db_sqlstate(res), "57014") == 0) {
		log_warnx("api: rid=%s %s: %s", http_req_id(req), what, err);
		http_reply_error(req, 503, "timeout", NULL, "the segment took "
		    "too long to evaluate; simplify it or retry later");
		return;
	}
	api_db_error(req, what, err);
}

/* Reply 422 for a refused rule. */
static void
seg_rule_error(struct http_req *req, const struct segment_error *err)
{
	http_reply_error(req, 422, err->code, err->path, "%s", err->message);
}

/* Parse a positive id from a path parameter; 0 if it is not one. */
static int64_t
seg_path_id(struct http_req *req, const char *name)
{
	const char	*s = http_req_param(req, name);
	char		*end;
	long long	 n;

	if (s == NULL || *s < '1' || *s > '9')
		return (0);
	errno = 0;
	n = strtoll(s, &end, 10);
	if (*end != '\0' || errno != 0 || n <= 0)
		return (0);
	return ((int64_t)n);
}

/* Encode a keyset cursor: new string, caller frees. */
static char *
seg_cursor_encode(int64_t id)
{
	char	 buf[32];

	snprintf(buf, sizeof buf, "%lld", (long long)id);
	return (crypto_base64url((const unsigned char *)buf, strlen(buf)));
}

/* Decode a cursor; 0, or -1 if it is not one of ours. */
static int
seg_cursor_decode(const char *s, int64_t *id)
{
	unsigned char	*raw;
	size_t		 n, i, len = strlen(s);
	long long	 v = 0;

	if (len == 0 || len > 32)
		return (-1);
	if ((raw = crypto_base64_decode(s, len, &n)) == NULL)
		return (-1);
	if (n == 0 || n > 18 || raw[0] == '0') {
		free(raw);
		return (-1);
	}
	for (i = 0; i < n; i++) {
		if (raw[i] < '0' || raw[i] > '9') {
			free(raw);
			return (-1);
		}
		v = v * 10 + (raw[i] - '0');
	}
	free(raw);
	*id = v;
	return (0);
}

/*
 * Read ?limit, ?cursor and ?format; replies and returns -1 when one is
 * bad.
 */
static int
seg_page_params(struct http_req *req, long def, long max, long *limit,
    int64_t *cursor, int *csv)
{
	const char	*s;
	char		*end;
	long		 v;

	*limit = def;
	*cursor = 0;
	if (csv != NULL)
		*csv = 0;
	if ((s = http_req_query(req, "limit")) != NULL) {
		errno = 0;
		v = strtol(s, &end, 10);
		if (*s < '0' || *s > '9' || *end != '\0' || errno != 0 ||
		    v < 1 || v > max) {
			http_reply_error(req, 422, "invalid_value", "?limit",
			    "limit must be a whole number from 1 to %ld", max);
			return (-1);
		}
		*limit = v;
	}
	if ((s = http_req_query(req, "cursor")) != NULL &&
	    seg_cursor_decode(s, cursor) != 0) {
		http_reply_error(req, 400, "bad_cursor", NULL,
		    "cursor is not a cursor this API handed out");
		return (-1);
	}
	if ((s = http_req_query(req, "format")) != NULL) {
		if (csv != NULL && strcmp(s, "csv") == 0)
			*csv = 1;
		else if (strcmp(s, "json") != 0) {
			http_reply_error(req, 422, "invalid_value", "?format",
			    "format must be json%s", csv != NULL ?
			    " or csv" : "");
			return (-1);
		}
	}
	return (0);
}

/*
 * Validate a rule from a request body: parse, then compile, so that a
 * condition musubi cannot evaluate yet is refused now.  Replies 422 and
 * returns NULL when refused.
 */
static struct segment_query *
seg_check_rule(struct api_ctx *ctx, json_t *rule, const char *path,
    enum segment_mode mode)
{
	struct segment_error	 err;
	struct segment_rule	*r;
	struct segment_query	*q;

	if (rule == NULL || json_is_null(rule)) {
		http_reply_error(ctx->req, 422, "required", path,
		    "rule is required");
		return (NULL);
	}
	if ((r = segment_rule_parse(rule, path, &err)) == NULL) {
		seg_rule_error(ctx->req, &err);
		return (NULL);
	}
	q = segment_compile(r, ctx->channel_id, mode, &err);
	segment_rule_free(r);
	if (q == NULL)
		seg_rule_error(ctx->req, &err);
	return (q);
}

/* Append one CSV field; defuses spreadsheet formulas. */
static void
seg_csv_field(struct evbuffer *b, const char *s, int last)
{
	const char	*p;
	int		 quote = 0, formula;

	if (s == NULL)
		s = "";
	formula = *s == '=' || *s == '+' || *s == '-' || *s == '@' ||
	    *s == '\t' || *s == '\r';
	for (p = s; *p != '\0'; p++) {
		if (*p == ',' || *p == '"' || *p == '\n' || *p == '\r')
			quote = 1;
	}
	if (quote || formula)
		evbuffer_add(b, "\"", 1);
	if (formula)
		evbuffer_add(b, "'", 1);
	for (p = s; *p != '\0'; p++) {
		if (*p == '"')
			evbuffer_add(b, "\"", 1);
		evbuffer_add(b, p, 1);
	}
	if (quote || formula)
		evbuffer_add(b, "\"", 1);
	evbuffer_add(b, last ? "\r\n" : ",", last ? 2 : 1);
}

/* Free a pager. */
static void
seg_pager_free(struct seg_pager *pg)
{
	int	 i;

	for (i = 0; i < pg->nparams; i++)
		free(pg->params[i]);
	free(pg->params);
	free(pg->sql);
	free(pg->filename);
	if (pg->buf != NULL)
		evbuffer_free(pg->buf);
	free(pg);
}

static void	seg_pager_next(struct seg_pager *);

/* A page of members was read. */
static void
seg_pager_cb(const PGresult *res, const char *err, void *arg)
{
	struct seg_pager	*pg = arg;
	struct http_req		*req = pg->ctx->req;
	json_t			*items;
	char			*cursor = NULL, disp[128];
	int			 i, n, c;

	if (err != NULL) {
		seg_db_error(req, "segment members", res, err);
		seg_pager_free(pg);
		return;
	}
	n = PQntuples(res);
	if (pg->csv) {
		for (i = 0; i < n; i++) {
			for (c = 1; c <= 5; c++)
				seg_csv_field(pg->buf, db_value(res, i, c),
				    c == 5);
		}
		pg->rows += (uint64_t)n;
		if (n == pg->limit) {
			pg->cursor = db_int(res, n - 1, 0);
			seg_pager_next(pg);
			return;
		}
		snprintf(disp, sizeof disp, "attachment; filename=\"%s\"",
		    pg->filename);
		http_reply_header(req, "Content-Disposition", disp);
		log_info("api: rid=%s csv export %s: %llu rows",
		    http_req_id(req), pg->filename,
		    (unsigned long long)pg->rows);
		http_reply_buffer(req, 200, "text/csv; charset=utf-8",
		    pg->buf);
		seg_pager_free(pg);
		return;
	}
	items = json_array();
	for (i = 0; i < n && i < pg->limit; i++)
		json_array_append_new(items, seg_member_json(res, i));
	if (n > pg->limit)
		cursor = seg_cursor_encode(db_int(res, pg->limit - 1, 0));
	http_reply_json(req, 200, json_pack("{s:o, s:o}", "members", items,
	    "next_cursor", seg_str(cursor)));
	free(cursor);
	seg_pager_free(pg);
}

/* Ask for the next page. */
static void
seg_pager_next(struct seg_pager *pg)
{
	struct db_params	*p = db_params_new();
	int			 i;

	for (i = 0; i < pg->nparams; i++)
		db_params_text(p, pg->params[i]);
	db_params_int(p, pg->cursor);
	db_params_int(p, pg->csv ? pg->limit : pg->limit + 1);
	db_query(pg->ctx->app->db, pg->sql, p, seg_pager_cb, pg);
}

/* Start paging: sql takes the base params, then cursor and limit. */
static void
seg_pager_start(struct api_ctx *ctx, char *sql, char **params, int n,
    int64_t cursor, long limit, int csv, const char *filename)
{
	struct seg_pager	*pg = xcalloc(1, sizeof *pg);

	pg->ctx = ctx;
	pg->sql = sql;
	pg->params = params;
	pg->nparams = n;
	pg->cursor = cursor;
	pg->csv = csv;
	pg->limit = csv ? SEG_CSV_PAGE : limit;
	if (csv) {
		pg->cursor = 0;
		pg->buf = evbuffer_new();
		pg->filename = xstrdup(filename);
		evbuffer_add_printf(pg->buf, "user_id,display_name,status,"
		    "language,followed_at\r\n");
	}
	seg_pager_next(pg);
}

/* Copy a query's parameters as strings. */
static char **
seg_params_copy(const struct segment_query *q, int *n)
{
	char	**out;
	int	 i;

	*n = segment_query_nparams(q);
	out = xcalloc((size_t)*n, sizeof *out);
	for (i = 0; i < *n; i++) {
		if (segment_query_param(q, i) != NULL)
			out[i] = xstrdup(segment_query_param(q, i));
	}
	return (out);
}

/* The segment was inserted. */
static void
seg_create_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	char		*loc;

	if (err != NULL) {
		if (res != NULL && strcmp(db_sqlstate(res), "23505") == 0) {
			http_reply_error(ctx->req, 409, "conflict", "/name",
			    "a segment with this name already exists");
			return;
		}
		api_db_error(ctx->req, "segment create", err);
		return;
	}
	xasprintf(&loc, "/api/v1/channels/%s/segments/%lld",
	    ctx->channel_slug, (long long)db_int(res, 0, 0));
	http_reply_header(ctx->req, "Location", loc);
	free(loc);
	http_reply_json(ctx->req, 201, seg_row_json(res, 0));
}

/* Validate name and description; -1 after replying. */
static int
seg_check_fields(struct api_ctx *ctx, json_t *body, int create,
    const char **name, const char **desc)
{
	if (api_reject_unknown(ctx->req, body, segment_fields) != 0 ||
	    api_string(ctx->req, body, "name", create, 1, 200, name) != 0 ||
	    api_string(ctx->req, body, "description", 0, 0, 2000,
	    desc) != 0)
		return (-1);
	return (0);
}

/* POST /api/v1/channels/{slug}/segments */
static void
seg_create(struct api_ctx *ctx)
{
	json_t			*body;
	const char		*name, *desc;
	struct segment_query	*q;
	struct db_params	*p;
	char			*text;

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (seg_check_fields(ctx, body, 1, &name, &desc) != 0)
		goto out;
	if ((q = seg_check_rule(ctx, json_object_get(body, "rule"), "/rule",
	    SEGMENT_SET)) == NULL)
		goto out;
	segment_query_free(q);
	text = json_dumps(json_object_get(body, "rule"), JSON_COMPACT);
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, name);
	db_params_text(p, desc);
	db_params_text(p, text);
	free(text);
	db_query(ctx->app->db, "INSERT INTO segments (channel_id, name, "
	    "description, rule) VALUES ($1, $2, $3, $4::jsonb) RETURNING "
	    SEGMENT_COLS, p, seg_create_cb, ctx);
out:
	json_decref(body);
}

/* The segments were read. */
static void
seg_list_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*items;
	int		 i;

	if (err != NULL) {
		api_db_error(ctx->req, "segment list", err);
		return;
	}
	items = json_array();
	for (i = 0; i < PQntuples(res); i++)
		json_array_append_new(items, seg_row_json(res, i));
	http_reply_json(ctx->req, 200, json_pack("{s:o}", "segments", items));
}

/* GET /api/v1/channels/{slug}/segments */
static void
seg_list(struct api_ctx *ctx)
{
	struct db_params	*p = db_params_new();

	db_params_int(p, ctx->channel_id);
	db_params_int(p, SEG_LIST_MAX);
	db_query(ctx->app->db, "SELECT " SEGMENT_COLS " FROM segments "
	    "WHERE channel_id = $1 ORDER BY id LIMIT $2", p, seg_list_cb, ctx);
}

/* One segment was read, updated or deleted. */
static void
seg_one_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		if (res != NULL && strcmp(db_sqlstate(res), "23505") == 0) {
			http_reply_error(ctx->req, 409, "conflict", "/name",
			    "a segment with this name already exists");
			return;
		}
		api_db_error(ctx->req, "segment", err);
		return;
	}
	if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such segment");
		return;
	}
	if (http_req_method(ctx->req) == HTTP_DELETE) {
		log_info("api: rid=%s segment %lld deleted",
		    http_req_id(ctx->req), (long long)db_int(res, 0, 0));
		http_reply_json(ctx->req, 204, NULL);
		return;
	}
	http_reply_json(ctx->req, 200, seg_row_json(res, 0));
}

/* Reply 404 for a malformed segment id; 0 otherwise. */
static int
seg_id_or_404(struct api_ctx *ctx, const char *name, int64_t *id)
{
	if ((*id = seg_path_id(ctx->req, name)) == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such %s", strcmp(name, "id") == 0 ? "segment" :
		    "snapshot");
		return (-1);
	}
	return (0);
}

/* GET /api/v1/channels/{slug}/segments/{id} */
static void
seg_get(struct api_ctx *ctx)
{
	struct db_params	*p;
	int64_t			 id;

	if (seg_id_or_404(ctx, "id", &id) != 0)
		return;
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_int(p, id);
	db_query(ctx->app->db, "SELECT " SEGMENT_COLS " FROM segments "
	    "WHERE channel_id = $1 AND id = $2", p, seg_one_cb, ctx);
}

/* PATCH /api/v1/channels/{slug}/segments/{id} */
static void
seg_update(struct api_ctx *ctx)
{
	json_t			*body, *rule;
	const char		*name, *desc;
	struct segment_query	*q;
	struct db_params	*p;
	char			*text = NULL;
	int64_t			 id;

	if (seg_id_or_404(ctx, "id", &id) != 0)
		return;
	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (seg_check_fields(ctx, body, 0, &name, &desc) != 0)
		goto out;
	if ((rule = json_object_get(body, "rule")) != NULL) {
		if ((q = seg_check_rule(ctx, rule, "/rule",
		    SEGMENT_SET)) == NULL)
			goto out;
		segment_query_free(q);
		text = json_dumps(rule, JSON_COMPACT);
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_int(p, id);
	db_params_text(p, name);
	db_params_bool(p, json_object_get(body, "description") != NULL);
	db_params_text(p, desc);
	db_params_text(p, text);
	free(text);
	db_query(ctx->app->db, "UPDATE segments SET "
	    "name = coalesce($3, name), "
	    "description = CASE WHEN $4 THEN $5 ELSE description END, "
	    "rule = coalesce($6::jsonb, rule), updated_at = now() "
	    "WHERE channel_id = $1 AND id = $2 RETURNING " SEGMENT_COLS,
	    p, seg_one_cb, ctx);
out:
	json_decref(body);
}

/* DELETE /api/v1/channels/{slug}/segments/{id}: snapshots stay. */
static void
seg_delete(struct api_ctx *ctx)
{
	struct db_params	*p;
	int64_t			 id;

	if (seg_id_or_404(ctx, "id", &id) != 0)
		return;
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_int(p, id);
	db_query(ctx->app->db, "DELETE FROM segments WHERE channel_id = $1 "
	    "AND id = $2 RETURNING id", p, seg_one_cb, ctx);
}

/* One half of a preview came back; reply when both have. */
static void
seg_preview_done(struct seg_preview *pv)
{
	struct http_req	*req = pv->ctx->req;

	if (--pv->pending > 0)
		return;
	if (pv->timeout)
		http_reply_error(req, 503, "timeout", NULL, "the segment took "
		    "too long to evaluate; simplify it or retry later");
	else if (pv->err != NULL)
		api_db_error(req, "segment preview", pv->err);
	else {
		http_reply_json(req, 200, json_pack("{s:I, s:O}", "count",
		    (json_int_t)pv->count, "sample", pv->sample));
	}
	json_decref(pv->sample);
	free(pv->err);
	free(pv);
}

/* Note a preview query's error. */
static void
seg_preview_fail(struct seg_preview *pv, const PGresult *res,
    const char *err)
{
	if (pv->err == NULL)
		pv->err = xstrdup(err);
	if (res != NULL && strcmp(db_sqlstate(res), "57014") == 0)
		pv->timeout = 1;
}

/* The preview count was read. */
static void
seg_preview_count_cb(const PGresult *res, const char *err, void *arg)
{
	struct seg_preview	*pv = arg;

	if (err != NULL)
		seg_preview_fail(pv, res, err);
	else
		pv->count = db_int(res, 0, 0);
	seg_preview_done(pv);
}

/* The preview sample was read. */
static void
seg_preview_sample_cb(const PGresult *res, const char *err, void *arg)
{
	struct seg_preview	*pv = arg;
	int			 i;

	if (err != NULL)
		seg_preview_fail(pv, res, err);
	else {
		for (i = 0; i < PQntuples(res); i++)
			json_array_append_new(pv->sample,
			    seg_member_json(res, i));
	}
	seg_preview_done(pv);
}

/* POST /api/v1/channels/{slug}/segments/preview */
static void
seg_preview(struct api_ctx *ctx)
{
	json_t			*body;
	struct segment_query	*q;
	struct seg_preview	*pv;
	struct db_params	*p;
	char			*sql, tail[64];

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (api_reject_unknown(ctx->req, body, preview_fields) != 0)
		goto out;
	if ((q = seg_check_rule(ctx, json_object_get(body, "rule"), "/rule",
	    SEGMENT_SET)) == NULL)
		goto out;
	pv = xcalloc(1, sizeof *pv);
	pv->ctx = ctx;
	pv->pending = 2;
	pv->sample = json_array();

	sql = segment_query_select(q, "count(*)", NULL);
	segment_db_query(ctx->app->db, sql, segment_query_params(q),
	    seg_preview_count_cb, pv);
	free(sql);

	snprintf(tail, sizeof tail, "ORDER BY f.id DESC LIMIT $%d",
	    segment_query_nparams(q) + 1);
	sql = segment_query_select(q, MEMBER_COLS, tail);
	p = segment_query_params(q);
	db_params_int(p, SEG_SAMPLE);
	segment_db_query(ctx->app->db, sql, p, seg_preview_sample_cb, pv);
	free(sql);
	segment_query_free(q);
out:
	json_decref(body);
}

/*
 * POST /api/v1/channels/{slug}/segments/sql (admin keys): the statements
 * a rule compiles to (members, count, snapshot: its four extra parameters
 * follow the query's), with their parameters and the settings
 * segment_db_query() runs them under -- for EXPLAIN, support and the
 * benchmark.  Runs nothing.
 */
static void
seg_sql(struct api_ctx *ctx)
{
	json_t			*body, *params, *settings;
	const char		*mode;
	struct segment_query	*q;
	char			*members, *count, *snap;
	int			 i;

	if ((body = http_req_json(ctx->req)) == NULL)
		return;
	if (api_reject_unknown(ctx->req, body, sql_fields) != 0 ||
	    api_string(ctx->req, body, "mode", 0, 1, 10, &mode) != 0)
		goto out;
	if (mode != NULL && strcmp(mode, "set") != 0 &&
	    strcmp(mode, "rows") != 0) {
		http_reply_error(ctx->req, 422, "invalid_value", "/mode",
		    "mode must be set or rows");
		goto out;
	}
	if ((q = seg_check_rule(ctx, json_object_get(body, "rule"), "/rule",
	    mode != NULL && strcmp(mode, "rows") == 0 ? SEGMENT_ROWS :
	    SEGMENT_SET)) == NULL)
		goto out;
	params = json_array();
	for (i = 0; i < segment_query_nparams(q); i++)
		json_array_append_new(params, seg_str(segment_query_param(q,
		    i)));
	settings = json_array();
	for (i = 0; segment_settings[i] != NULL; i++)
		json_array_append_new(settings,
		    json_string(segment_settings[i]));
	members = segment_query_select(q, "f.id", NULL);
	count = segment_query_select(q, "count(*)", NULL);
	snap = segment_snapshot_sql(q);
	http_reply_json(ctx->req, 200, json_pack("{s:s, s:s, s:s, s:o, s:o}",
	    "members_sql", members, "count_sql", count, "snapshot_sql", snap,
	    "params", params, "settings", settings));
	free(members);
	free(count);
	free(snap);
	segment_query_free(q);
out:
	json_decref(body);
}

/* Free a job. */
static void
seg_job_free(struct seg_job *job)
{
	free(job->note);
	free(job);
}

/* A segment's count was read. */
static void
seg_count_cb(const PGresult *res, const char *err, void *arg)
{
	struct seg_job	*job = arg;
	struct http_req	*req = job->ctx->req;

	if (err != NULL)
		seg_db_error(req, "segment count", res, err);
	else
		http_reply_json(req, 200, json_pack("{s:I, s:I}",
		    "segment_id", (json_int_t)job->id, "count",
		    (json_int_t)db_int(res, 0, 0)));
	seg_job_free(job);
}

/* A snapshot was written. */
static void
seg_snapshot_cb(const PGresult *res, const char *err, void *arg)
{
	struct seg_job	*job = arg;
	struct http_req	*req = job->ctx->req;
	char		*loc;

	if (err != NULL)
		seg_db_error(req, "segment snapshot", res, err);
	else {
		log_info("api: rid=%s segment %lld: snapshot %lld of %lld "
		    "friends", http_req_id(req), (long long)job->id,
		    (long long)db_int(res, 0, 0), (long long)db_int(res, 0,
		    5));
		xasprintf(&loc, "/api/v1/channels/%s/snapshots/%lld",
		    job->ctx->channel_slug, (long long)db_int(res, 0, 0));
		http_reply_header(req, "Location", loc);
		free(loc);
		http_reply_json(req, 201, seg_snapshot_json(res, 0));
	}
	seg_job_free(job);
}

/* The segment's rule was read: compile it and do the job. */
static void
seg_job_cb(const PGresult *res, const char *err, void *arg)
{
	struct seg_job		*job = arg;
	struct api_ctx		*ctx = job->ctx;
	struct segment_query	*q;
	struct db_params	*p;
	json_t			*rule;
	char			*sql, **params, tail[96], fname[64];
	int			 n;

	if (err != NULL) {
		api_db_error(ctx->req, "segment read", err);
		goto done;
	}
	if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such segment");
		goto done;
	}
	if ((rule = json_loads(db_value(res, 0, 0), 0, NULL)) == NULL) {
		api_db_error(ctx->req, "segment read", "stored rule is not "
		    "JSON");
		goto done;
	}
	q = seg_check_rule(ctx, rule, "/rule", job->action == SEG_MEMBERS ?
	    SEGMENT_ROWS : SEGMENT_SET);
	if (q == NULL) {
		json_decref(rule);
		goto done;
	}
	n = segment_query_nparams(q);
	switch (job->action) {
	case SEG_COUNT:
		sql = segment_query_select(q, "count(*)", NULL);
		segment_db_query(ctx->app->db, sql, segment_query_params(q),
		    seg_count_cb, job);
		free(sql);
		job = NULL;
		break;
	case SEG_SNAPSHOT:
		sql = segment_snapshot_sql(q);
		p = segment_query_params(q);
		db_params_int(p, job->id);
		db_params_text(p, db_value(res, 0, 1));
		db_params_text(p, db_value(res, 0, 0));
		db_params_text(p, job->note);
		segment_db_query(ctx->app->db, sql, p, seg_snapshot_cb, job);
		free(sql);
		job = NULL;
		break;
	case SEG_MEMBERS:
		snprintf(tail, sizeof tail, "AND f.id > $%d ORDER BY f.id "
		    "LIMIT $%d", n + 1, n + 2);
		sql = segment_query_select(q, MEMBER_COLS, tail);
		params = seg_params_copy(q, &n);
		snprintf(fname, sizeof fname, "segment-%lld-members.csv",
		    (long long)job->id);
		seg_pager_start(ctx, sql, params, n, job->cursor, job->limit,
		    job->csv, fname);
		break;
	}
	segment_query_free(q);
	json_decref(rule);
done:
	if (job != NULL)
		seg_job_free(job);
}

/* Load a segment's rule for a job. */
static void
seg_job_start(struct seg_job *job)
{
	struct db_params	*p = db_params_new();

	db_params_int(p, job->ctx->channel_id);
	db_params_int(p, job->id);
	db_query(job->ctx->app->db, "SELECT rule::text, name FROM segments "
	    "WHERE channel_id = $1 AND id = $2", p, seg_job_cb, job);
}

/* A new job for the segment named in the path, or NULL after a 404. */
static struct seg_job *
seg_job_new(struct api_ctx *ctx, enum seg_action action)
{
	struct seg_job	*job;
	int64_t		 id;

	if (seg_id_or_404(ctx, "id", &id) != 0)
		return (NULL);
	job = xcalloc(1, sizeof *job);
	job->ctx = ctx;
	job->action = action;
	job->id = id;
	return (job);
}

/* GET /api/v1/channels/{slug}/segments/{id}/count */
static void
seg_count(struct api_ctx *ctx)
{
	struct seg_job	*job;

	if ((job = seg_job_new(ctx, SEG_COUNT)) != NULL)
		seg_job_start(job);
}

/* GET /api/v1/channels/{slug}/segments/{id}/members[?format=csv] */
static void
seg_members(struct api_ctx *ctx)
{
	struct seg_job	*job;
	long		 limit;
	int64_t		 cursor;
	int		 csv;

	if (seg_page_params(ctx->req, SEG_PAGE_DEFAULT, SEG_PAGE_MAX, &limit,
	    &cursor, &csv) != 0)
		return;
	if ((job = seg_job_new(ctx, SEG_MEMBERS)) == NULL)
		return;
	job->limit = limit;
	job->cursor = cursor;
	job->csv = csv;
	seg_job_start(job);
}

/* POST /api/v1/channels/{slug}/segments/{id}/snapshots {"note": ...} */
static void
seg_snapshot_create(struct api_ctx *ctx)
{
	struct seg_job	*job;
	json_t		*body = NULL;
	const char	*note = NULL;
	size_t		 len;

	if (seg_path_id(ctx->req, "id") == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such segment");
		return;
	}
	if (http_req_body(ctx->req, &len) != NULL && len > 0) {
		if ((body = http_req_json(ctx->req)) == NULL)
			return;
		if (api_reject_unknown(ctx->req, body, snapshot_fields) != 0 ||
		    api_string(ctx->req, body, "note", 0, 0, 500,
		    &note) != 0) {
			json_decref(body);
			return;
		}
	}
	job = seg_job_new(ctx, SEG_SNAPSHOT);
	if (note != NULL)
		job->note = xstrdup(note);
	json_decref(body);
	seg_job_start(job);
}

/* A list of snapshots (one row: exists, JSON array) was read. */
static void
seg_snapshot_list_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*items;
	char		*cursor = NULL;
	size_t		 n;
	long		 limit;
	int64_t		 unused;

	if (err != NULL) {
		api_db_error(ctx->req, "snapshot list", err);
		return;
	}
	if (*db_value(res, 0, 0) != 't') {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such segment");
		return;
	}
	items = seg_json(db_value(res, 0, 1));
	if (!json_is_array(items)) {
		json_decref(items);
		items = json_array();
	}
	if (seg_page_params(ctx->req, SNAP_PAGE_DEFAULT, SNAP_PAGE_MAX,
	    &limit, &unused, NULL) != 0)
		limit = SNAP_PAGE_DEFAULT;	/* checked before the query */
	if ((n = json_array_size(items)) > (size_t)limit) {
		json_array_remove(items, n - 1);
		cursor = seg_cursor_encode(json_integer_value(json_object_get(
		    json_array_get(items, n - 2), "id")));
	}
	http_reply_json(ctx->req, 200, json_pack("{s:o, s:o}", "snapshots",
	    items, "next_cursor", seg_str(cursor)));
	free(cursor);
}

/*
 * GET .../segments/{id}/snapshots and GET .../snapshots: newest first,
 * with their member counts.
 */
static void
seg_snapshot_list(struct api_ctx *ctx)
{
	struct db_params	*p;
	int64_t			 id = 0, cursor;
	long			 limit;

	if (http_req_param(ctx->req, "id") != NULL &&
	    seg_id_or_404(ctx, "id", &id) != 0)
		return;
	if (seg_page_params(ctx->req, SNAP_PAGE_DEFAULT, SNAP_PAGE_MAX,
	    &limit, &cursor, NULL) != 0)
		return;
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_int(p, id);
	db_params_int(p, cursor);
	db_params_int(p, limit + 1);
	db_query(ctx->app->db,
	    "SELECT $2 = 0 OR EXISTS (SELECT 1 FROM segments "
	    "WHERE channel_id = $1 AND id = $2), "
	    "(SELECT coalesce(json_agg(" SNAPSHOT_JSON " ORDER BY z.id DESC), "
	    "'[]') FROM (SELECT * FROM segment_snapshots "
	    "WHERE channel_id = $1 AND ($2 = 0 OR segment_id = $2) "
	    "AND ($3 = 0 OR id < $3) ORDER BY id DESC LIMIT $4) z)",
	    p, seg_snapshot_list_cb, ctx);
}

/* One snapshot was read. */
static void
seg_snapshot_get_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		api_db_error(ctx->req, "snapshot read", err);
		return;
	}
	if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such snapshot");
		return;
	}
	http_reply_json(ctx->req, 200, seg_snapshot_json(res, 0));
}

/* GET /api/v1/channels/{slug}/snapshots/{sid} */
static void
seg_snapshot_get(struct api_ctx *ctx)
{
	struct db_params	*p;
	int64_t			 sid;

	if (seg_id_or_404(ctx, "sid", &sid) != 0)
		return;
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_int(p, sid);
	db_query(ctx->app->db, "SELECT " SEGMENT_SNAPSHOT_COLS " FROM "
	    "segment_snapshots WHERE channel_id = $1 AND id = $2", p,
	    seg_snapshot_get_cb, ctx);
}

/* The snapshot exists (or not): page its members. */
static void
seg_snapshot_members_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	char		**params, fname[64];
	long		 limit;
	int64_t		 cursor;
	int		 csv;

	if (err != NULL) {
		api_db_error(ctx->req, "snapshot read", err);
		return;
	}
	if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such snapshot");
		return;
	}
	if (seg_page_params(ctx->req, SEG_PAGE_DEFAULT, SEG_PAGE_MAX, &limit,
	    &cursor, &csv) != 0)
		return;
	params = xcalloc(2, sizeof *params);
	xasprintf(&params[0], "%lld", (long long)ctx->channel_id);
	params[1] = xstrdup(db_value(res, 0, 0));
	snprintf(fname, sizeof fname, "snapshot-%s-members.csv", params[1]);
	seg_pager_start(ctx, xstrdup("SELECT m.friend_id, f.user_id, "
	    "f.display_name, f.status, f.language, " ISO8601("f.followed_at")
	    " FROM segment_snapshot_members m LEFT JOIN friends f "
	    "ON f.channel_id = m.channel_id AND f.id = m.friend_id "
	    "WHERE m.channel_id = $1 AND m.snapshot_id = $2 "
	    "AND m.friend_id > $3 ORDER BY m.friend_id LIMIT $4"), params, 2,
	    cursor, limit, csv, fname);
}

/* GET /api/v1/channels/{slug}/snapshots/{sid}/members[?format=csv] */
static void
seg_snapshot_members(struct api_ctx *ctx)
{
	struct db_params	*p;
	long			 limit;
	int64_t			 sid, cursor;
	int			 csv;

	if (seg_id_or_404(ctx, "sid", &sid) != 0)
		return;
	if (seg_page_params(ctx->req, SEG_PAGE_DEFAULT, SEG_PAGE_MAX, &limit,
	    &cursor, &csv) != 0)
		return;
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_int(p, sid);
	db_query(ctx->app->db, "SELECT id FROM segment_snapshots "
	    "WHERE channel_id = $1 AND id = $2", p, seg_snapshot_members_cb,
	    ctx);
}

/* Register the segment and snapshot routes (literal paths first). */
void
api_segments_init(struct api *api)
{
	api_route(api, HTTP_POST, "/api/v1/channels/{slug}/segments/preview",
	    API_CHANNEL, seg_preview);
	api_route(api, HTTP_POST, "/api/v1/channels/{slug}/segments/sql",
	    API_CHANNEL_ADMIN, seg_sql);
	api_route(api, HTTP_POST, "/api/v1/channels/{slug}/segments",
	    API_CHANNEL, seg_create);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/segments",
	    API_CHANNEL, seg_list);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/segments/{id}",
	    API_CHANNEL, seg_get);
	api_route(api, HTTP_PATCH, "/api/v1/channels/{slug}/segments/{id}",
	    API_CHANNEL, seg_update);
	api_route(api, HTTP_DELETE, "/api/v1/channels/{slug}/segments/{id}",
	    API_CHANNEL, seg_delete);
	api_route(api, HTTP_GET,
	    "/api/v1/channels/{slug}/segments/{id}/count", API_CHANNEL,
	    seg_count);
	api_route(api, HTTP_GET,
	    "/api/v1/channels/{slug}/segments/{id}/members", API_CHANNEL,
	    seg_members);
	api_route(api, HTTP_POST,
	    "/api/v1/channels/{slug}/segments/{id}/snapshots", API_CHANNEL,
	    seg_snapshot_create);
	api_route(api, HTTP_GET,
	    "/api/v1/channels/{slug}/segments/{id}/snapshots", API_CHANNEL,
	    seg_snapshot_list);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/snapshots",
	    API_CHANNEL, seg_snapshot_list);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/snapshots/{sid}",
	    API_CHANNEL, seg_snapshot_get);
	api_route(api, HTTP_GET,
	    "/api/v1/channels/{slug}/snapshots/{sid}/members", API_CHANNEL,
	    seg_snapshot_members);
}
