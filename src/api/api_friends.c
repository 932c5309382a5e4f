/* SPDX-License-Identifier: ISC */
/*
 * api_friends.c -- /api/v1/channels/{slug}/friends and /tags: list, filter
 * and search a channel's LINE friends, read one with its follow history and
 * timeline, and tag them.  The rows come from the LINE intake (friends and
 * interactions, written by musubi_line_apply()); this module only reads
 * them, and writes tags and friend_tags.
 *
 * Every statement is scoped by channel_id and takes its values as
 * parameters.  A write is one statement (CTEs), so a request either happens
 * whole or not at all.  Lists page by keyset: the cursor is the base64url of
 * the last row's id, opaque to clients.  Errors in query parameters are 422
 * with a path of "?name"; errors in a JSON body use a JSON pointer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/api.h"
#include "musubi/app.h"
#include "musubi/crypto.h"
#include "musubi/db.h"
#include "musubi/httpd.h"
#include "musubi/line.h"
#include "musubi/log.h"
#include "musubi/xmalloc.h"

#define ISO8601(col) \
	"to_char(" col " AT TIME ZONE 'UTC', " \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

#define FRIEND_LIMIT_DEFAULT	50
#define FRIEND_LIMIT_MAX	500
#define FRIEND_TIMELINE		50
#define FRIEND_Q_MAX		200	/* characters */
#define TAG_NAME_MAX		100	/* characters */
#define TAGS_PER_REQUEST	50

/* The friend's tag names as a JSON array. */
#define FRIEND_TAGS \
	"(SELECT coalesce(json_agg(t.name ORDER BY t.name), '[]') " \
	"FROM friend_tags ft JOIN tags t ON t.channel_id = ft.channel_id " \
	"AND t.id = ft.tag_id " \
	"WHERE ft.channel_id = f.channel_id AND ft.friend_id = f.id)"

/* Columns rendered by friend_json(), over a friends row named f. */
#define FRIEND_COLS \
	"f.user_id, f.status, f.display_name, f.picture_url, f.language, " \
	ISO8601("f.followed_at") ", " ISO8601("f.first_followed_at") ", " \
	ISO8601("f.unfollowed_at") ", f.follow_count, f.is_unblocked, " \
	"f.profile_state, " FRIEND_TAGS ", " ISO8601("f.created_at") ", f.id"
#define FRIEND_NCOLS	14

/* follow.isUnblocked of an interaction h, NULL unless a JSON boolean. */
#define FRIEND_UNBLOCKED \
	"CASE WHEN h.type = 'follow' AND " \
	"jsonb_typeof(h.payload #> '{follow,isUnblocked}') = 'boolean' " \
	"THEN (h.payload #>> '{follow,isUnblocked}')::boolean END"

/*
 * The friend list: each filter adds its condition (and one parameter) to
 * this, so the planner sees only what is asked for and can turn the tag
 * filter into a join.
 */
#define FRIEND_LIST_SQL \
	"SELECT " FRIEND_COLS " FROM friends f WHERE f.channel_id = $1"
#define FRIEND_LIST_MAX	2048

/*
 * One friend, whether the timeline cursor names one of its interactions,
 * its follow history, and one page (plus one row) of its timeline.
 */
static const char friend_get_sql[] =
    "WITH f AS (SELECT * FROM friends "
    "WHERE channel_id = $1 AND user_id = $2), "
    "c AS (SELECT i.event_ts, i.id FROM interactions i JOIN f "
    "ON i.friend_id = f.id WHERE i.channel_id = $1 AND i.id = $3) "
    "SELECT " FRIEND_COLS ", "
    "$3::bigint IS NULL OR EXISTS (SELECT 1 FROM c), "
    "(SELECT coalesce(json_agg(json_build_object('type', h.type, "
    "'at', " ISO8601("h.event_ts") ", 'is_unblocked', " FRIEND_UNBLOCKED
    ") ORDER BY h.event_ts, h.id), '[]') FROM interactions h "
    "WHERE h.channel_id = $1 AND h.friend_id = f.id "
    "AND h.type IN ('follow', 'unfollow')), "
    "(SELECT coalesce(json_agg(json_build_object('type', x.type, "
    "'subtype', x.subtype, 'at', " ISO8601("x.event_ts") ", "
    "'mode', x.mode, 'text', x.text, 'postback_data', x.postback_data, "
    "'message_id', x.message_id, 'unsent', x.unsent, 'cursor_id', x.id) "
    "ORDER BY x.event_ts DESC, x.id DESC), '[]') "
    "FROM (SELECT * FROM interactions i "
    "WHERE i.channel_id = $1 AND i.friend_id = f.id "
    "AND ($3::bigint IS NULL OR (i.event_ts, i.id) < "
    "(SELECT event_ts, id FROM c)) "
    "ORDER BY i.event_ts DESC, i.id DESC LIMIT $4) x) "
    "FROM f";

/*
 * Create the missing tags and attach them all.  ON CONFLICT DO UPDATE
 * (rather than DO NOTHING) returns the id of a tag that a concurrent
 * request created after this statement's snapshot was taken.  The tag list
 * is read from the snapshot, so the names just attached are added to it.
 */
static const char tag_add_sql[] =
    "WITH f AS (SELECT id FROM friends "
    "WHERE channel_id = $1 AND user_id = $2), "
    "n AS (SELECT DISTINCT name FROM jsonb_array_elements_text($3::jsonb) "
    "AS name WHERE EXISTS (SELECT 1 FROM f)), "
    "t AS (INSERT INTO tags (channel_id, name) SELECT $1, name FROM n "
    "ON CONFLICT (channel_id, name) DO UPDATE SET name = excluded.name "
    "RETURNING id, name), "
    "a AS (INSERT INTO friend_tags (channel_id, friend_id, tag_id) "
    "SELECT $1, f.id, t.id FROM f, t ON CONFLICT DO NOTHING) "
    "SELECT EXISTS (SELECT 1 FROM f), "
    "(SELECT coalesce(json_agg(x.name ORDER BY x.name), '[]') FROM "
    "(SELECT tg.name FROM friend_tags ft JOIN tags tg "
    "ON tg.channel_id = ft.channel_id AND tg.id = ft.tag_id "
    "WHERE ft.channel_id = $1 AND ft.friend_id = (SELECT id FROM f) "
    "UNION SELECT name FROM t) x)";

static const char tag_remove_sql[] =
    "WITH f AS (SELECT id FROM friends "
    "WHERE channel_id = $1 AND user_id = $2), "
    "t AS (SELECT id FROM tags WHERE channel_id = $1 AND name = $3), "
    "d AS (DELETE FROM friend_tags ft USING f, t "
    "WHERE ft.channel_id = $1 AND ft.friend_id = f.id AND ft.tag_id = t.id "
    "RETURNING 1) "
    "SELECT EXISTS (SELECT 1 FROM f), EXISTS (SELECT 1 FROM t), "
    "(SELECT count(*) FROM d)";

static const char tag_list_sql[] =
    "SELECT t.name, (SELECT count(*) FROM friend_tags ft "
    "WHERE ft.channel_id = t.channel_id AND ft.tag_id = t.id), "
    ISO8601("t.created_at") " FROM tags t WHERE t.channel_id = $1 "
    "ORDER BY t.name";

static const char *const tag_fields[] = { "tags", NULL };

/* A JSON string, or null for SQL NULL (or bytes jansson refuses). */
static json_t *
friend_str(const char *s)
{
	json_t	*j;

	if (s == NULL || (j = json_string(s)) == NULL)
		return (json_null());
	return (j);
}

/* Parse a JSON document built by PostgreSQL; an empty array if unusable. */
static json_t *
friend_json_col(const char *s)
{
	json_t	*j;

	if (s == NULL || (j = json_loads(s, 0, NULL)) == NULL)
		return (json_array());
	return (j);
}

/* Render row i of a FRIEND_COLS result. */
static json_t *
friend_json(const PGresult *res, int row)
{
	const char	*unblocked = db_value(res, row, 9);
	json_t		*j = json_object();

	json_object_set_new(j, "user_id", friend_str(db_value(res, row, 0)));
	json_object_set_new(j, "status", friend_str(db_value(res, row, 1)));
	json_object_set_new(j, "display_name",
	    friend_str(db_value(res, row, 2)));
	json_object_set_new(j, "picture_url",
	    friend_str(db_value(res, row, 3)));
	json_object_set_new(j, "language", friend_str(db_value(res, row, 4)));
	json_object_set_new(j, "followed_at",
	    friend_str(db_value(res, row, 5)));
	json_object_set_new(j, "first_followed_at",
	    friend_str(db_value(res, row, 6)));
	json_object_set_new(j, "unfollowed_at",
	    friend_str(db_value(res, row, 7)));
	json_object_set_new(j, "follow_count",
	    json_integer(db_int(res, row, 8)));
	json_object_set_new(j, "is_unblocked", unblocked == NULL ?
	    json_null() : json_boolean(*unblocked == 't'));
	json_object_set_new(j, "profile_state",
	    friend_str(db_value(res, row, 10)));
	json_object_set_new(j, "tags", friend_json_col(db_value(res, row,
	    11)));
	json_object_set_new(j, "created_at",
	    friend_str(db_value(res, row, 12)));
	return (j);
}

/* Encode a keyset cursor: new string, caller frees. */
static char *
friend_cursor_encode(int64_t id)
{
	char	 buf[32];

	snprintf(buf, sizeof buf, "%lld", (long long)id);
	return (crypto_base64url((const unsigned char *)buf, strlen(buf)));
}

/* Decode a cursor into a positive id; 0, or -1 if it is not one of ours. */
static int
friend_cursor_decode(const char *s, int64_t *id)
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

/* Read a cursor query parameter; replies 400 and returns -1 if bad. */
static int
friend_cursor_param(struct http_req *req, const char *name, int64_t *id)
{
	const char	*s = http_req_query(req, name);

	*id = 0;
	if (s == NULL)
		return (0);
	if (friend_cursor_decode(s, id) != 0) {
		http_reply_error(req, 400, "bad_cursor", NULL,
		    "%s is not a cursor this API handed out", name);
		return (-1);
	}
	return (0);
}

/* Parse n digits at s into *v. */
static int
friend_digits(const char *s, int n, int *v)
{
	int	 i;

	*v = 0;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return (-1);
		*v = *v * 10 + (s[i] - '0');
	}
	return (0);
}

/*
 * Check an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM))
 * and copy it, normalised, into out.  A space where the offset's sign goes
 * is taken for a '+' that was not percent-encoded in the URL.
 */
static int
friend_rfc3339(const char *s, char *out, size_t outlen)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31,
	    30, 31 };
	size_t	 len = strlen(s), i, n;
	int	 y, mo, d, h, mi, sec, oh, om;
	char	*p;

	if (len < 20 || len + 1 > outlen || len > 40)
		return (-1);
	if (friend_digits(s, 4, &y) != 0 || s[4] != '-' ||
	    friend_digits(s + 5, 2, &mo) != 0 || s[7] != '-' ||
	    friend_digits(s + 8, 2, &d) != 0 ||
	    (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
	    friend_digits(s + 11, 2, &h) != 0 || s[13] != ':' ||
	    friend_digits(s + 14, 2, &mi) != 0 || s[16] != ':' ||
	    friend_digits(s + 17, 2, &sec) != 0)
		return (-1);
	if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
	    h > 23 || mi > 59 || sec > 60)
		return (-1);
	if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 ||
	    y % 400 == 0)))
		return (-1);
	i = 19;
	if (s[i] == '.') {
		for (n = 0, i++; s[i] >= '0' && s[i] <= '9'; i++) {
			/* PostgreSQL takes a leap second only as :60.000 */
			if (sec == 60 && s[i] != '0')
				return (-1);
			n++;
		}
		if (n == 0 || n > 9)
			return (-1);
	}
	memcpy(out, s, len + 1);
	out[10] = 'T';
	if ((s[i] == 'Z' || s[i] == 'z') && s[i + 1] == '\0') {
		out[i] = 'Z';
		return (0);
	}
	if ((s[i] != '+' && s[i] != '-' && s[i] != ' ') || len != i + 6 ||
	    friend_digits(s + i + 1, 2, &oh) != 0 || s[i + 3] != ':' ||
	    friend_digits(s + i + 4, 2, &om) != 0 || oh > 15 || om > 59)
		return (-1);
	p = out + i;
	if (*p == ' ')
		*p = '+';
	return (0);
}

/* Parse the page size: absent means the default; 0, or -1 if bad. */
static int
friend_limit(const char *s, long *limit)
{
	int	 v;

	*limit = FRIEND_LIMIT_DEFAULT;
	if (s == NULL)
		return (0);
	if (*s == '\0' || strlen(s) > 3 || friend_digits(s, (int)strlen(s),
	    &v) != 0 || v < 1 || v > FRIEND_LIMIT_MAX)
		return (-1);
	*limit = v;
	return (0);
}

/* Reply 422 for a bad query parameter. */
static void
friend_bad_param(struct http_req *req, const char *name, const char *what)
{
	char	 path[64];

	snprintf(path, sizeof path, "?%s", name);
	http_reply_error(req, 422, "invalid_value", path, "%s %s", name, what);
}

/*
 * The {user_id} of the path, or NULL after replying 404: only LINE user ids
 * become friends, so anything else (bad UTF-8 included) is not one.
 */
static const char *
friend_user_param(struct http_req *req)
{
	const char	*uid = http_req_param(req, "user_id");

	if (!line_is_user_id(uid)) {
		http_reply_error(req, 404, "not_found", NULL,
		    "no such friend in this channel");
		return (NULL);
	}
	return (uid);
}

/* Tell whether s is valid UTF-8 (PostgreSQL refuses anything else). */
static int
friend_utf8_ok(const char *s)
{
	const unsigned char	*p = (const unsigned char *)s;
	unsigned int		 c, min;
	int			 n, i;

	while (*p != '\0') {
		if (*p < 0x80) {
			p++;
			continue;
		}
		if ((*p & 0xe0) == 0xc0) {
			n = 1;
			c = *p & 0x1f;
			min = 0x80;
		} else if ((*p & 0xf0) == 0xe0) {
			n = 2;
			c = *p & 0x0f;
			min = 0x800;
		} else if ((*p & 0xf8) == 0xf0) {
			n = 3;
			c = *p & 0x07;
			min = 0x10000;
		} else
			return (0);
		for (i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return (0);
			c = (c << 6) | (p[i] & 0x3f);
		}
		if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
			return (0);
		p += n + 1;
	}
	return (1);
}

/* Count the characters of a UTF-8 string. */
static size_t
friend_chars(const char *s)
{
	size_t	 n = 0;

	for (; *s != '\0'; s++) {
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	}
	return (n);
}

/* Escape LIKE's wildcards and escape character: new string, caller frees. */
static char *
friend_like_escape(const char *s)
{
	char	*out = xmalloc(strlen(s) * 2 + 1), *p = out;

	for (; *s != '\0'; s++) {
		if (*s == '%' || *s == '_' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	*p = '\0';
	return (out);
}

/* Append a condition to a statement being built (fmt is a constant). */
static void PRINTFLIKE(3, 4)
friend_sql_add(char *sql, size_t size, const char *fmt, ...)
{
	va_list	 ap;
	size_t	 len = strlen(sql);

	va_start(ap, fmt);
	if ((size_t)vsnprintf(sql + len, size - len, fmt, ap) >= size - len)
		fatalx("api: friend list statement too long");
	va_end(ap);
}

/* Check a tag name: 1..100 characters, no control characters. */
static int
tag_name_ok(const char *s)
{
	size_t	 n = friend_chars(s);
	const unsigned char *p;

	if (n < 1 || n > TAG_NAME_MAX)
		return (0);
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return (0);
	}
	return (1);
}

/* The friend page was read. */
static void
friend_list_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*items;
	int		 i, n;
	long		 limit;
	char		*cursor = NULL;

	if (err != NULL) {
		api_db_error(ctx->req, "friend list", err);
		return;
	}
	/* The limit was checked before the query; read it again. */
	n = PQntuples(res);
	if (friend_limit(http_req_query(ctx->req, "limit"), &limit) != 0)
		limit = FRIEND_LIMIT_DEFAULT;
	items = json_array();
	for (i = 0; i < n && i < limit; i++)
		json_array_append_new(items, friend_json(res, i));
	if (n > limit)
		cursor = friend_cursor_encode(db_int(res, limit - 1,
		    FRIEND_NCOLS - 1));
	http_reply_json(ctx->req, 200, json_pack("{s:o, s:o}", "friends",
	    items, "next_cursor", friend_str(cursor)));
	free(cursor);
}

/* GET /api/v1/channels/{slug}/friends */
static void
friend_list(struct api_ctx *ctx)
{
	struct http_req		*req = ctx->req;
	struct db_params	*p;
	const char		*status, *after, *before, *q, *tag, *lim;
	char			 after_ts[48], before_ts[48], *like;
	char			 sql[FRIEND_LIST_MAX];
	int64_t			 cursor;
	long			 limit;

	status = http_req_query(req, "status");
	after = http_req_query(req, "followed_after");
	before = http_req_query(req, "followed_before");
	q = http_req_query(req, "q");
	tag = http_req_query(req, "tag");
	lim = http_req_query(req, "limit");
	if (status != NULL && strcmp(status, "following") != 0 &&
	    strcmp(status, "blocked") != 0 && strcmp(status, "unknown") != 0) {
		friend_bad_param(req, "status",
		    "must be following, blocked or unknown");
		return;
	}
	if (after != NULL && friend_rfc3339(after, after_ts,
	    sizeof after_ts) != 0) {
		friend_bad_param(req, "followed_after", "must be an RFC 3339 "
		    "date-time such as 2024-05-01T00:00:00+09:00");
		return;
	}
	if (before != NULL && friend_rfc3339(before, before_ts,
	    sizeof before_ts) != 0) {
		friend_bad_param(req, "followed_before", "must be an RFC 3339 "
		    "date-time such as 2024-05-01T00:00:00+09:00");
		return;
	}
	if (q != NULL && (!friend_utf8_ok(q) ||
	    friend_chars(q) > FRIEND_Q_MAX)) {
		friend_bad_param(req, "q",
		    "must be at most 200 characters of UTF-8");
		return;
	}
	if (tag != NULL && (!friend_utf8_ok(tag) || !tag_name_ok(tag))) {
		friend_bad_param(req, "tag", "must be a tag name of 1 to 100 "
		    "characters");
		return;
	}
	if (friend_limit(lim, &limit) != 0) {
		friend_bad_param(req, "limit",
		    "must be an integer from 1 to 500");
		return;
	}
	if (friend_cursor_param(req, "cursor", &cursor) != 0)
		return;

	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	snprintf(sql, sizeof sql, "%s", FRIEND_LIST_SQL);
	if (status != NULL) {
		db_params_text(p, status);
		friend_sql_add(sql, sizeof sql, " AND f.status = $%d",
		    db_params_count(p));
	}
	if (after != NULL) {
		db_params_text(p, after_ts);
		friend_sql_add(sql, sizeof sql,
		    " AND f.followed_at >= $%d::timestamptz",
		    db_params_count(p));
	}
	if (before != NULL) {
		db_params_text(p, before_ts);
		friend_sql_add(sql, sizeof sql,
		    " AND f.followed_at < $%d::timestamptz",
		    db_params_count(p));
	}
	if (q != NULL && *q != '\0') {
		like = friend_like_escape(q);
		db_params_text(p, like);
		free(like);
		friend_sql_add(sql, sizeof sql,
		    " AND f.display_name ILIKE '%%' || $%d || '%%'",
		    db_params_count(p));
	}
	if (tag != NULL) {
		db_params_text(p, tag);
		friend_sql_add(sql, sizeof sql, " AND EXISTS (SELECT 1 "
		    "FROM friend_tags ft JOIN tags t ON t.channel_id = "
		    "ft.channel_id AND t.id = ft.tag_id WHERE ft.channel_id = "
		    "$1 AND ft.friend_id = f.id AND t.name = $%d)",
		    db_params_count(p));
	}
	if (cursor > 0) {
		db_params_int(p, cursor);
		friend_sql_add(sql, sizeof sql, " AND f.id < $%d",
		    db_params_count(p));
	}
	db_params_int(p, limit + 1);
	friend_sql_add(sql, sizeof sql, " ORDER BY f.id DESC LIMIT $%d",
	    db_params_count(p));
	db_query(ctx->app->db, sql, p, friend_list_cb, ctx);
}

/* One friend was read with its history and timeline. */
static void
friend_get_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*j, *timeline, *ev;
	char		*cursor = NULL;
	size_t		 i;

	if (err != NULL) {
		api_db_error(ctx->req, "friend read", err);
		return;
	}
	if (PQntuples(res) == 0) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such friend in this channel");
		return;
	}
	if (*db_value(res, 0, FRIEND_NCOLS) != 't') {
		http_reply_error(ctx->req, 400, "bad_cursor", NULL,
		    "before is not a cursor of this friend's timeline");
		return;
	}
	j = friend_json(res, 0);
	json_object_set_new(j, "status_history", friend_json_col(db_value(res,
	    0, FRIEND_NCOLS + 1)));
	timeline = friend_json_col(db_value(res, 0, FRIEND_NCOLS + 2));
	if (json_array_size(timeline) > FRIEND_TIMELINE) {
		json_array_remove(timeline, FRIEND_TIMELINE);
		ev = json_array_get(timeline, FRIEND_TIMELINE - 1);
		cursor = friend_cursor_encode(json_integer_value(
		    json_object_get(ev, "cursor_id")));
	}
	json_array_foreach(timeline, i, ev)
		json_object_del(ev, "cursor_id");
	json_object_set_new(j, "timeline", timeline);
	json_object_set_new(j, "timeline_next_cursor", friend_str(cursor));
	free(cursor);
	http_reply_json(ctx->req, 200, j);
}

/* GET /api/v1/channels/{slug}/friends/{user_id} */
static void
friend_get(struct api_ctx *ctx)
{
	struct db_params	*p;
	const char		*uid;
	int64_t			 before;

	if ((uid = friend_user_param(ctx->req)) == NULL)
		return;
	if (friend_cursor_param(ctx->req, "before", &before) != 0)
		return;
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, uid);
	if (before > 0)
		db_params_int(p, before);
	else
		db_params_null(p);
	db_params_int(p, FRIEND_TIMELINE + 1);
	db_query(ctx->app->db, friend_get_sql, p, friend_get_cb, ctx);
}

/* Tags were attached. */
static void
tag_add_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		api_db_error(ctx->req, "tag friend", err);
		return;
	}
	if (*db_value(res, 0, 0) != 't') {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such friend in this channel");
		return;
	}
	http_reply_json(ctx->req, 200, json_pack("{s:o}", "tags",
	    friend_json_col(db_value(res, 0, 1))));
}

/* POST /api/v1/channels/{slug}/friends/{user_id}/tags */
static void
tag_add(struct api_ctx *ctx)
{
	struct http_req		*req = ctx->req;
	struct db_params	*p;
	json_t			*body, *tags, *v;
	const char		*uid;
	size_t			 i;
	char			 path[32], *s;

	if ((uid = friend_user_param(req)) == NULL)
		return;
	if ((body = http_req_json(req)) == NULL)
		return;
	if (api_reject_unknown(req, body, tag_fields) != 0)
		goto out;
	tags = json_object_get(body, "tags");
	if (tags == NULL || json_is_null(tags)) {
		http_reply_error(req, 422, "required", "/tags",
		    "tags is required");
		goto out;
	}
	if (!json_is_array(tags)) {
		http_reply_error(req, 422, "invalid_type", "/tags",
		    "tags must be an array of tag names");
		goto out;
	}
	if (json_array_size(tags) < 1 ||
	    json_array_size(tags) > TAGS_PER_REQUEST) {
		http_reply_error(req, 422, "invalid_length", "/tags",
		    "tags must hold 1 to %d names", TAGS_PER_REQUEST);
		goto out;
	}
	json_array_foreach(tags, i, v) {
		snprintf(path, sizeof path, "/tags/%zu", i);
		if (!json_is_string(v)) {
			http_reply_error(req, 422, "invalid_type", path,
			    "a tag name must be a string");
			goto out;
		}
		if (strlen(json_string_value(v)) != json_string_length(v) ||
		    !tag_name_ok(json_string_value(v))) {
			http_reply_error(req, 422, "invalid_value", path,
			    "a tag name must be 1 to %d characters, without "
			    "control characters", TAG_NAME_MAX);
			goto out;
		}
	}
	if ((s = json_dumps(tags, JSON_COMPACT)) == NULL)
		fatalx("api: json_dumps failed");
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, uid);
	db_params_text(p, s);
	free(s);
	db_query(ctx->app->db, tag_add_sql, p, tag_add_cb, ctx);
out:
	json_decref(body);
}

/* A tag was detached (or not). */
static void
tag_remove_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;

	if (err != NULL) {
		api_db_error(ctx->req, "untag friend", err);
		return;
	}
	if (*db_value(res, 0, 0) != 't') {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such friend in this channel");
		return;
	}
	if (*db_value(res, 0, 1) != 't') {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such tag in this channel");
		return;
	}
	http_reply_json(ctx->req, 204, NULL);
}

/* DELETE /api/v1/channels/{slug}/friends/{user_id}/tags/{tag} */
static void
tag_remove(struct api_ctx *ctx)
{
	struct db_params	*p;
	const char		*uid, *tag = http_req_param(ctx->req, "tag");

	if ((uid = friend_user_param(ctx->req)) == NULL)
		return;
	if (!friend_utf8_ok(tag) || !tag_name_ok(tag)) {
		http_reply_error(ctx->req, 404, "not_found", NULL,
		    "no such tag in this channel");
		return;
	}
	p = db_params_new();
	db_params_int(p, ctx->channel_id);
	db_params_text(p, uid);
	db_params_text(p, tag);
	db_query(ctx->app->db, tag_remove_sql, p, tag_remove_cb, ctx);
}

/* The tag list was read. */
static void
tag_list_cb(const PGresult *res, const char *err, void *arg)
{
	struct api_ctx	*ctx = arg;
	json_t		*items;
	int		 i;

	if (err != NULL) {
		api_db_error(ctx->req, "tag list", err);
		return;
	}
	items = json_array();
	for (i = 0; i < PQntuples(res); i++) {
		json_array_append_new(items, json_pack("{s:o, s:I, s:o}",
		    "name", friend_str(db_value(res, i, 0)),
		    "friends", (json_int_t)db_int(res, i, 1),
		    "created_at", friend_str(db_value(res, i, 2))));
	}
	http_reply_json(ctx->req, 200, json_pack("{s:o}", "tags", items));
}

/* GET /api/v1/channels/{slug}/tags */
static void
tag_list(struct api_ctx *ctx)
{
	struct db_params	*p = db_params_new();

	db_params_int(p, ctx->channel_id);
	db_query(ctx->app->db, tag_list_sql, p, tag_list_cb, ctx);
}

/* Register the friend and tag routes. */
void
api_friends_init(struct api *api)
{
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/friends",
	    API_CHANNEL, friend_list);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/friends/{user_id}",
	    API_CHANNEL, friend_get);
	api_route(api, HTTP_POST,
	    "/api/v1/channels/{slug}/friends/{user_id}/tags", API_CHANNEL,
	    tag_add);
	api_route(api, HTTP_DELETE,
	    "/api/v1/channels/{slug}/friends/{user_id}/tags/{tag}",
	    API_CHANNEL, tag_remove);
	api_route(api, HTTP_GET, "/api/v1/channels/{slug}/tags", API_CHANNEL,
	    tag_list);
}
