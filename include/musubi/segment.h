/* SPDX-License-Identifier: ISC */
/*
 * segment.h -- segments: a JSON rule that picks LINE friends of one channel.
 *
 * A rule is a tree of groups (all, any, not) over conditions on the friend,
 * its acquisition source, tags, purchases, clicks, page views,
 * interactions and (not yet evaluated) the campaigns it received;
 * docs/segments.md has the grammar.  Three steps, all pure (no I/O):
 *
 *	segment_rule_parse()	JSON -> a validated tree; errors carry a JSON
 *				pointer to the offending node
 *	segment_compile()	tree -> parameterized SQL over one channel:
 *				no value of the rule is ever spliced into the
 *				SQL text, every value is a $n parameter
 *	segment_query_*()	the SQL, its parameters, and statements built
 *				around it (count, pages, snapshot)
 *
 * The compiled query has the shape
 *	SELECT ... FROM friends f <joins> WHERE f.channel_id = $1 AND (<where>)
 * where conditions answered by a rollup (friend_stats, friend_engagement)
 * read its columns through one LEFT JOIN each, and conditions that need raw
 * events (a time window, a product, a link...) get a derived table:
 *	SEGMENT_SET	an aggregate over the channel's events GROUP BY friend,
 *			LEFT JOINed on the friend id: set-based, for counts and
 *			snapshots that visit every friend
 *	SEGMENT_ROWS	the same aggregate as a LATERAL subquery correlated on
 *			the friend (index lookups), for keyset pages that visit
 *			a few friends at a time
 * Both modes give the same members (the oracle test checks it).
 *
 * Set-mode statements run under segment_settings (segment_db_query()).
 * Other modules (campaigns) call segment_sql() and segment_db_query(), or
 * segment_snapshot().
 */
#ifndef MUSUBI_SEGMENT_H
#define MUSUBI_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "musubi/compat.h"
#include "musubi/db.h"

#define SEGMENT_MAX_DEPTH	8	/* nested all/any/not */
#define SEGMENT_MAX_CONDITIONS	50	/* leaf conditions in one rule */
#define SEGMENT_MAX_LIST	100	/* items of one list (tags, in...) */
#define SEGMENT_MAX_DAYS	36500
#define SEGMENT_ERR_LEN		512

/* Why a rule was refused: code is "invalid_rule" or "not_available". */
struct segment_error {
	const char	*code;
	char		 path[SEGMENT_ERR_LEN];	/* JSON pointer to the node */
	char		 message[SEGMENT_ERR_LEN];
};

/* The parsed tree. */
enum segment_kind {
	SEG_ALL,
	SEG_ANY,
	SEG_NOT,
	SEG_FRIEND_STATUS,		/* str: following|blocked|unknown */
	SEG_FRIEND_LANGUAGE,		/* str */
	SEG_FRIEND_FOLLOWED_AT,		/* date */
	SEG_FRIEND_FIRST_FOLLOWED_AT,	/* date */
	SEG_FRIEND_LINKED,		/* flag */
	SEG_TAGS,			/* tag_op over names */
	SEG_SOURCE_CODE,		/* str: acquisition source code */
	SEG_SOURCE_KIND,		/* str: cpf_ad, web, qr... */
	SEG_PURCHASES,			/* count/amount, window, products... */
	SEG_FIRST_PURCHASE,		/* date */
	SEG_LAST_PURCHASE,		/* date */
	SEG_AOV,			/* num */
	SEG_RFM_R,			/* int 1-5 */
	SEG_RFM_F,
	SEG_RFM_M,
	SEG_CLICKS,			/* count, window, links, campaign */
	SEG_PAGE_VIEWS,			/* count, window, url_prefix */
	SEG_INTERACTIONS,		/* count, window, type, postback */
	SEG_MESSAGING,			/* count, window, campaign (not yet) */
	SEG_NKINDS
};

enum segment_op {
	SEG_OP_EQ,
	SEG_OP_NE,
	SEG_OP_GT,
	SEG_OP_GTE,
	SEG_OP_LT,
	SEG_OP_LTE,
	SEG_OP_BETWEEN,		/* values[0..1], inclusive */
	SEG_OP_IN,		/* values[0..n-1] */
	SEG_OP_WITHIN_DAYS,	/* at or after now - N days */
	SEG_OP_MORE_THAN_DAYS,	/* before now - N days */
	SEG_OP_DATES,		/* local days values[0]..values[1] */
	SEG_OP_PREFIX		/* starts with values[0] */
};

enum segment_vtype {
	SEG_V_STR,
	SEG_V_INT,
	SEG_V_NUM,
	SEG_V_DATE
};

/* One comparison; values are text as sent to PostgreSQL. */
struct segment_cmp {
	enum segment_op	 op;
	char		**values;
	size_t		 nvalues;
};

/* Comparisons that must all hold; ncmps 0 means "not given". */
struct segment_pred {
	enum segment_vtype	 type;
	struct segment_cmp	*cmps;
	size_t			 ncmps;
};

struct segment_list {
	char	**items;
	size_t	 n;
};

enum segment_tag_op {
	SEG_TAGS_ANY,
	SEG_TAGS_ALL,
	SEG_TAGS_NONE
};

struct segment_node {
	enum segment_kind	 kind;
	char			*path;		/* JSON pointer of the node */
	/* groups */
	struct segment_node	**child;
	size_t			 nchild;
	/* leaves */
	struct segment_pred	 value;		/* the compared value/count */
	struct segment_pred	 amount;	/* purchases: net_amount */
	struct segment_cmp	 window;	/* op DATES or WITHIN_DAYS */
	int			 has_window;
	int			 flag;		/* linked: true/false */
	enum segment_tag_op	 tag_op;
	struct segment_list	 names;		/* tags */
	struct segment_list	 product_ids;
	struct segment_list	 skus;
	struct segment_list	 vendors;
	char			*title_contains;
	char			*shop;		/* shop slug */
	struct segment_list	 links;		/* link ids */
	char			*campaign;	/* campaign id */
	char			*url_prefix;
	char			*itype;		/* interaction type */
	struct segment_cmp	 postback;	/* EQ or PREFIX, or no values */
};

struct segment_rule {
	struct segment_node	*root;
	int			 conditions;
	int			 depth;
};

/* rule.c */
/*
 * Validate a rule.  path is the JSON pointer of the rule in its document
 * ("/rule", or "" for a bare rule).  New tree, or NULL with *err filled.
 */
struct segment_rule *segment_rule_parse(const json_t *, const char *path,
		    struct segment_error *);
void		 segment_rule_free(struct segment_rule *);
/* Fill err (code "invalid_rule" unless code is given); returns -1. */
int		 segment_error_set(struct segment_error *, const char *code,
		    const char *path, const char *fmt, ...) PRINTFLIKE(4, 5);

/* compile.c */
enum segment_mode {
	SEGMENT_SET,
	SEGMENT_ROWS
};
struct segment_query;
/*
 * Compile a rule for one channel ($1).  New query, or NULL with *err
 * filled (code "not_available" for conditions whose data musubi does not
 * keep yet).
 */
struct segment_query *segment_compile(const struct segment_rule *,
		    int64_t channel_id, enum segment_mode,
		    struct segment_error *);
void		 segment_query_free(struct segment_query *);
/* Parameters: $1 is the channel id; borrowed strings, NULL is SQL NULL. */
int		 segment_query_nparams(const struct segment_query *);
const char	*segment_query_param(const struct segment_query *, int i);
/* A new db_params holding the query's parameters, to append to. */
struct db_params *segment_query_params(const struct segment_query *);
/*
 * "SELECT <cols> FROM friends f <joins> WHERE f.channel_id = $1 AND
 * (<where>) <tail>": new string, caller frees.  The friend row is "f";
 * tail may use parameters from segment_query_nparams() + 1 on.
 */
char		*segment_query_select(const struct segment_query *,
		    const char *cols, const char *tail);

/* segment.c: entry points for other modules. */
/*
 * Parse and compile a rule (set mode) into "SELECT f.id FROM friends f ..."
 * and its parameters ($1 = channel_id).  *sql (caller frees) and *params
 * (caller frees or hands to db_query) are set on success; 0 or -1 with err.
 */
int		 segment_sql(const json_t *rule, int64_t channel_id,
		    char **sql, struct db_params **params,
		    struct segment_error *);
/*
 * Run a set-mode segment statement (count, snapshot, an INSERT ... SELECT
 * around segment_sql()): in a transaction with JIT and hash joins off (see
 * segment.c).  Steals params; the callback gets the statement's result.
 */
int		 segment_db_query(struct db *, const char *sql,
		    struct db_params *, db_result_cb *, void *arg);
/* Those settings, as SET LOCAL statements (NULL-terminated). */
extern const char *const segment_settings[];
/*
 * The columns a snapshot statement returns: id, segment_id, segment_name,
 * note, rule (text), member_count, created_at (ISO 8601 UTC).
 */
#define SEGMENT_SNAPSHOT_COLS \
	"id, segment_id, segment_name, note, rule::text, member_count, " \
	"to_char(created_at AT TIME ZONE 'UTC', " \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
/*
 * The statement that freezes a (set-mode) query's members into a new
 * snapshot in one INSERT ... SELECT and returns SEGMENT_SNAPSHOT_COLS.
 * Parameters after the query's: segment id (or NULL), segment name (or
 * NULL), rule (JSON text), note (or NULL).  New string, caller frees.
 */
char		*segment_snapshot_sql(const struct segment_query *);
/*
 * Freeze the friends a rule picks now into a new snapshot (one statement,
 * so all or nothing).  cb gets the SEGMENT_SNAPSHOT_COLS row.  0 when the
 * statement was queued; -1 with err (rule refused; cb is not called).
 */
int		 segment_snapshot(struct db *, int64_t channel_id,
		    const json_t *rule, int64_t segment_id,
		    const char *segment_name, const char *note,
		    db_result_cb *cb, void *arg, struct segment_error *);

#endif
