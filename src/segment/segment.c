/* SPDX-License-Identifier: ISC */
/*
 * segment.c -- what other modules (the API, campaigns) call: a rule
 * straight to SQL, and snapshots.  A snapshot freezes the friends a rule
 * picks at one moment: a single INSERT ... SELECT writes the member rows
 * and the snapshot row with its count, so it happens whole or not at all,
 * and the count is the number of rows written.
 */
#include <stdlib.h>
#include <string.h>

#include "musubi/db.h"
#include "musubi/segment.h"
#include "musubi/xmalloc.h"

/* Parse and compile a rule in set mode. */
static struct segment_query *
segment_prepare(const json_t *rule, int64_t channel_id,
    struct segment_error *err)
{
	struct segment_rule	*r;
	struct segment_query	*q;

	if ((r = segment_rule_parse(rule, "", err)) == NULL)
		return (NULL);
	q = segment_compile(r, channel_id, SEGMENT_SET, err);
	segment_rule_free(r);
	return (q);
}

/* The friend ids a rule picks, as SQL and parameters. */
int
segment_sql(const json_t *rule, int64_t channel_id, char **sql,
    struct db_params **params, struct segment_error *err)
{
	struct segment_query	*q;

	if ((q = segment_prepare(rule, channel_id, err)) == NULL)
		return (-1);
	*sql = segment_query_select(q, "f.id", NULL);
	*params = segment_query_params(q);
	segment_query_free(q);
	return (0);
}

/*
 * The settings set-mode statements run under, in their own transaction:
 *	jit off		these statements are planned afresh each time and
 *			their cost estimates run high, so PostgreSQL would
 *			JIT-compile them on every run, which costs more
 *			(about half a second) than it saves
 *	no hash joins	every input is keyed by friend: friends and the
 *			covering indexes of the rollups (sql/005) come in
 *			friend order, so merge joins stream them; hash joins
 *			build a table of up to a million rows per rollup.
 *			Measured on 1M friends: half the CPU, or less.
 *	no parallel	a parallel merge join rescans its inner side in every
 *			worker; serial plans were faster on the 2-core box,
 *			and leave the other core to webhook intake
 */
const char *const segment_settings[] = {
	"SET LOCAL jit = off",
	"SET LOCAL enable_hashjoin = off",
	"SET LOCAL max_parallel_workers_per_gather = 0",
	NULL
};

/* Run a set-mode statement under segment_settings. */
int
segment_db_query(struct db *db, const char *sql, struct db_params *p,
    db_result_cb *cb, void *arg)
{
	struct db_batch	*b = db_batch_new();
	size_t		 i;

	for (i = 0; segment_settings[i] != NULL; i++)
		db_batch_add(b, segment_settings[i], NULL);
	db_batch_add(b, sql, p);
	return (db_batch_run(db, b, cb, arg));
}

/*
 * The snapshot statement around a compiled query.  Members are inserted
 * in friend order: the primary key then grows at its right edge, three
 * times faster for a million rows than in the order a hash join emits.
 */
char *
segment_snapshot_sql(const struct segment_query *q)
{
	char	*members, *sql, tail[256];
	int	 n = segment_query_nparams(q);

	members = segment_query_select(q, "f.channel_id, (SELECT id FROM "
	    "sid), f.id", "ORDER BY f.id");
	snprintf(tail, sizeof tail, "$%d::bigint, $%d::text, $%d::jsonb, "
	    "$%d::text", n + 1, n + 2, n + 3, n + 4);
	xasprintf(&sql,
	    "WITH sid AS (SELECT nextval(pg_get_serial_sequence("
	    "'segment_snapshots', 'id')) AS id), "
	    "m AS (INSERT INTO segment_snapshot_members (channel_id, "
	    "snapshot_id, friend_id) %s RETURNING 1) "
	    "INSERT INTO segment_snapshots (channel_id, id, segment_id, "
	    "segment_name, rule, note, member_count) "
	    "SELECT $1, (SELECT id FROM sid), %s, (SELECT count(*) FROM m) "
	    "RETURNING " SEGMENT_SNAPSHOT_COLS, members, tail);
	free(members);
	return (sql);
}

/* Freeze a rule's members into a new snapshot. */
int
segment_snapshot(struct db *db, int64_t channel_id, const json_t *rule,
    int64_t segment_id, const char *segment_name, const char *note,
    db_result_cb *cb, void *arg, struct segment_error *err)
{
	struct segment_query	*q;
	struct db_params	*p;
	char			*sql, *text;

	if ((q = segment_prepare(rule, channel_id, err)) == NULL)
		return (-1);
	if ((text = json_dumps(rule, JSON_COMPACT)) == NULL) {
		segment_query_free(q);
		return (segment_error_set(err, NULL, "",
		    "the rule cannot be written as JSON"));
	}
	sql = segment_snapshot_sql(q);
	p = segment_query_params(q);
	if (segment_id > 0)
		db_params_int(p, segment_id);
	else
		db_params_null(p);
	db_params_text(p, segment_name);
	db_params_text(p, text);
	db_params_text(p, note);
	segment_db_query(db, sql, p, cb, arg);
	free(sql);
	free(text);
	segment_query_free(q);
	return (0);
}
