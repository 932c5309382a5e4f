/* SPDX-License-Identifier: ISC */
/*
 * compile.c -- turn a parsed segment rule into parameterized SQL over one
 * channel.  The SQL text depends only on the rule's shape: every value
 * (names, numbers, dates, prefixes, ids) becomes a $n parameter, and the
 * channel id is always $1.
 *
 * A leaf is a boolean expression over the friend row f.  Friend columns
 * are read directly; purchase totals, recency, AOV and RFM come from the
 * friend_stats rollup, unwindowed click and page-view counts from
 * friend_engagement (one LEFT JOIN each, shared by all leaves); so does
 * "at least one / none in the last N days" of purchases, clicks and page
 * views, through the rollup's time of the latest one.  A leaf
 * that needs raw events -- a time window, products, a shop, a link or
 * campaign, a URL prefix, tags, interactions -- gets its own derived table
 * "xN" of per-friend aggregates (n: how many, amt: how much):
 *	SEGMENT_SET	LEFT JOIN (SELECT key AS fid, aggs FROM ... WHERE
 *			channel_id = $1 ... GROUP BY 1) xN ON xN.fid = f.id
 *	SEGMENT_ROWS	LEFT JOIN LATERAL (SELECT aggs FROM ... WHERE
 *			channel_id = $1 ... AND key = f.id) xN ON true
 * and compares coalesce(xN.n, 0), which is the same in both modes.
 *
 * Every leaf is two-valued: a comparison with a missing value (no
 * language, never purchased) is false, never NULL, so "not" is exact.
 * The acquisition source is the friend's source_id (kept by the
 * acquisition module), read through one LEFT JOIN of acquisition_sources.
 * Leaves whose data musubi does not keep yet (campaign deliveries) have no
 * compiler in the table below and are refused with "not_available"; adding
 * one is a function and a row.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/segment.h"
#include "musubi/xmalloc.h"

/* The channel's time zone: local dates in rules are in it. */
#define COMPILE_TZ "(SELECT ch.timezone FROM channels ch WHERE ch.id = $1)"

struct sbuf {
	char	*s;
	size_t	 len;
	size_t	 cap;
};

struct segment_query {
	char		*joins;
	char		*where;
	char		**params;
	int		 nparams;
};

struct compiler {
	struct segment_error	*err;
	enum segment_mode	 mode;
	struct segment_query	*q;
	struct sbuf		 joins;		/* derived tables */
	int			 stats;		/* friend_stats s joined */
	int			 engagement;	/* friend_engagement e joined */
	int			 source;	/* acquisition_sources src */
	int			 positive;	/* no "not" above this node */
	int			 nderived;
};

typedef int leaf_fn(struct compiler *, const struct segment_node *,
    struct sbuf *);

static int	compile_node(struct compiler *, const struct segment_node *,
		    struct sbuf *);

/* Append formatted text (fmt is always a constant of this file). */
static void PRINTFLIKE(2, 3)
sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s == NULL ? NULL : b->s + b->len,
		    b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			abort();
		if ((size_t)n < b->cap - b->len)
			break;
		b->cap = (b->cap + (size_t)n + 1) * 2;
		b->s = xreallocarray(b->s, 1, b->cap);
	}
	b->len += (size_t)n;
}

/* Add a parameter; returns its number ($n). */
static int
compile_param(struct compiler *c, const char *v)
{
	struct segment_query	*q = c->q;

	q->params = xreallocarray(q->params, q->nparams + 1,
	    sizeof *q->params);
	q->params[q->nparams++] = v != NULL ? xstrdup(v) : NULL;
	return (q->nparams);
}

/*
 * An array literal of the values, as one parameter: text values are
 * double-quoted with '"' and '\' escaped, so any text is one element.
 */
static int
compile_array(struct compiler *c, char *const *v, size_t n, int quote)
{
	struct sbuf	 b = { NULL, 0, 0 };
	const char	*s;
	size_t		 i;
	int		 k;

	sb_printf(&b, "{");
	for (i = 0; i < n; i++) {
		sb_printf(&b, "%s", i ? "," : "");
		if (!quote) {
			sb_printf(&b, "%s", v[i]);
			continue;
		}
		sb_printf(&b, "\"");
		for (s = v[i]; *s != '\0'; s++) {
			if (*s == '"' || *s == '\\')
				sb_printf(&b, "\\");
			sb_printf(&b, "%c", *s);
		}
		sb_printf(&b, "\"");
	}
	sb_printf(&b, "}");
	k = compile_param(c, b.s);
	free(b.s);
	return (k);
}

/* A LIKE pattern matching text that starts with prefix, as a parameter. */
static int
compile_prefix(struct compiler *c, const char *prefix)
{
	struct sbuf	 b = { NULL, 0, 0 };
	const char	*s;
	int		 k;

	sb_printf(&b, "%s", "");
	for (s = prefix; *s != '\0'; s++) {
		if (*s == '%' || *s == '_' || *s == '\\')
			sb_printf(&b, "\\");
		sb_printf(&b, "%c", *s);
	}
	sb_printf(&b, "%%");
	k = compile_param(c, b.s);
	free(b.s);
	return (k);
}

/* The SQL type of a predicate's values. */
static const char *
compile_cast(enum segment_vtype t)
{
	switch (t) {
	case SEG_V_INT:
		return ("bigint");
	case SEG_V_NUM:
		return ("numeric");
	case SEG_V_DATE:
		return ("date");
	case SEG_V_STR:
		break;
	}
	return ("text");
}

/* One comparison of expression e. */
static void
compile_cmp(struct compiler *c, struct sbuf *w, const char *e,
    enum segment_vtype t, const struct segment_cmp *cmp)
{
	const char	*cast = compile_cast(t), *op = "=";
	int		 a, b;

	switch (cmp->op) {
	case SEG_OP_EQ:
		break;
	case SEG_OP_NE:
		op = "<>";
		break;
	case SEG_OP_GT:
		op = ">";
		break;
	case SEG_OP_GTE:
		op = ">=";
		break;
	case SEG_OP_LT:
		op = "<";
		break;
	case SEG_OP_LTE:
		op = "<=";
		break;
	case SEG_OP_BETWEEN:
		a = compile_param(c, cmp->values[0]);
		b = compile_param(c, cmp->values[1]);
		sb_printf(w, "%s BETWEEN $%d::%s AND $%d::%s", e, a, cast, b,
		    cast);
		return;
	case SEG_OP_IN:
		a = compile_array(c, cmp->values, cmp->nvalues,
		    t == SEG_V_STR);
		sb_printf(w, "%s = ANY ($%d::%s[])", e, a, cast);
		return;
	case SEG_OP_WITHIN_DAYS:
		a = compile_param(c, cmp->values[0]);
		sb_printf(w, "%s >= now() - make_interval(days => $%d::int)",
		    e, a);
		return;
	case SEG_OP_MORE_THAN_DAYS:
		a = compile_param(c, cmp->values[0]);
		sb_printf(w, "%s < now() - make_interval(days => $%d::int)",
		    e, a);
		return;
	case SEG_OP_DATES:
		a = compile_param(c, cmp->values[0]);
		b = compile_param(c, cmp->values[1]);
		sb_printf(w, "(%s >= (($%d::date)::timestamp AT TIME ZONE "
		    COMPILE_TZ ") AND %s < (($%d::date + 1)::timestamp AT "
		    "TIME ZONE " COMPILE_TZ "))", e, a, e, b);
		return;
	case SEG_OP_PREFIX:
		a = compile_prefix(c, cmp->values[0]);
		sb_printf(w, "%s LIKE $%d::text", e, a);
		return;
	}
	a = compile_param(c, cmp->values[0]);
	sb_printf(w, "%s %s $%d::%s", e, op, a, cast);
}

/*
 * Every comparison of a predicate over e, ANDed.  A nullable e is wrapped
 * in coalesce(..., false) so the leaf is never NULL -- except where no
 * "not" is above it: there NULL and false both leave the friend out, and
 * a strict comparison lets PostgreSQL turn the outer join of a rollup or
 * derived table into an inner one and filter before it joins.
 */
static void
compile_pred(struct compiler *c, struct sbuf *w, const char *e,
    const struct segment_pred *pr, int nullable)
{
	size_t	 i;

	nullable = nullable && !c->positive;
	sb_printf(w, "%s(", nullable ? "coalesce(" : "");
	for (i = 0; i < pr->ncmps; i++) {
		if (i > 0)
			sb_printf(w, " AND ");
		compile_cmp(c, w, e, pr->type, &pr->cmps[i]);
	}
	sb_printf(w, ")%s", nullable ? ", false)" : "");
}

/* Restrict event rows by a window over their time column. */
static void
compile_window(struct compiler *c, struct sbuf *b, const char *col,
    const struct segment_node *n)
{
	if (!n->has_window)
		return;
	sb_printf(b, " AND ");
	compile_cmp(c, b, col, SEG_V_DATE, &n->window);
}

/*
 * Join a derived table of per-friend aggregates; returns its number N
 * (alias xN).  body starts with FROM and ends inside its WHERE clause,
 * which already scopes it to the channel.
 */
static int
compile_derived(struct compiler *c, const char *key, const char *aggs,
    const char *body)
{
	int	 n = ++c->nderived;

	if (c->mode == SEGMENT_SET)
		sb_printf(&c->joins, " LEFT JOIN (SELECT %s AS fid, %s %s "
		    "GROUP BY 1) x%d ON x%d.fid = f.id", key, aggs, body, n,
		    n);
	else
		sb_printf(&c->joins, " LEFT JOIN LATERAL (SELECT %s %s AND "
		    "%s = f.id) x%d ON true", aggs, body, key, n);
	return (n);
}

/* Does a numeric predicate hold for 0? */
static int
compile_zero_ok(const struct segment_pred *pr)
{
	const struct segment_cmp	*cmp;
	double				 a, b;
	size_t				 i, j;
	int				 ok;

	for (i = 0; i < pr->ncmps; i++) {
		cmp = &pr->cmps[i];
		a = strtod(cmp->values[0], NULL);
		switch (cmp->op) {
		case SEG_OP_EQ:
			ok = a == 0;
			break;
		case SEG_OP_NE:
			ok = a != 0;
			break;
		case SEG_OP_GT:
			ok = 0 > a;
			break;
		case SEG_OP_GTE:
			ok = 0 >= a;
			break;
		case SEG_OP_LT:
			ok = 0 < a;
			break;
		case SEG_OP_LTE:
			ok = 0 <= a;
			break;
		case SEG_OP_BETWEEN:
			b = strtod(cmp->values[1], NULL);
			ok = a <= 0 && 0 <= b;
			break;
		case SEG_OP_IN:
			for (ok = 0, j = 0; j < cmp->nvalues; j++)
				ok |= strtod(cmp->values[j], NULL) == 0;
			break;
		default:
			ok = 0;
			break;
		}
		if (!ok)
			return (0);
	}
	return (1);
}

/*
 * Compare a count or amount that is NULL when the friend has no rows:
 * as 0 (coalesce), or, where no "not" is above and 0 cannot match, as is
 * (strict; see compile_pred).
 */
static void
compile_count(struct compiler *c, struct sbuf *w, const char *col,
    const struct segment_pred *pr)
{
	char	 e[64];

	if (c->positive && !compile_zero_ok(pr))
		snprintf(e, sizeof e, "%s", col);
	else
		snprintf(e, sizeof e, "coalesce(%s, 0)", col);
	compile_pred(c, w, e, pr, 0);
}

/* Compare a derived table's count or amount. */
static void
compile_metric(struct compiler *c, struct sbuf *w, int x, const char *col,
    const struct segment_pred *pr)
{
	char	 e[32];

	snprintf(e, sizeof e, "x%d.%s", x, col);
	compile_count(c, w, e, pr);
}

/*
 * Is a count predicate "at least one" (1) or "none" (-1)?  0 otherwise.
 * Values are normalized integers, so text compares are exact.
 */
static int
compile_count_form(const struct segment_pred *pr)
{
	const struct segment_cmp	*c = pr->cmps;

	if (pr->ncmps != 1 || c->nvalues != 1)
		return (0);
	switch (c->op) {
	case SEG_OP_GTE:
		return (strcmp(c->values[0], "1") == 0 ? 1 : 0);
	case SEG_OP_GT:
	case SEG_OP_NE:
		return (strcmp(c->values[0], "0") == 0 ? 1 : 0);
	case SEG_OP_EQ:
	case SEG_OP_LTE:
		return (strcmp(c->values[0], "0") == 0 ? -1 : 0);
	case SEG_OP_LT:
		return (strcmp(c->values[0], "1") == 0 ? -1 : 0);
	default:
		return (0);
	}
}

/*
 * "At least one / none in the last N days" is answered by a rollup's time
 * of the latest event (col): at least one in the window exactly when the
 * latest is in it.  Returns 1 when it wrote the condition, 0 when the
 * count or window asks for more than that.
 */
static int
compile_latest(struct compiler *c, struct sbuf *w,
    const struct segment_node *n, const char *col)
{
	int	 form = compile_count_form(&n->value);

	if (form == 0 || !n->has_window || n->window.op != SEG_OP_WITHIN_DAYS)
		return (0);
	if (form > 0 && c->positive) {
		compile_cmp(c, w, col, SEG_V_DATE, &n->window);
		return (1);
	}
	sb_printf(w, "%scoalesce(", form < 0 ? "NOT " : "");
	compile_cmp(c, w, col, SEG_V_DATE, &n->window);
	sb_printf(w, ", false)");
	return (1);
}

/* status, language, followed_at, first_followed_at of the friend row. */
static int
leaf_friend(struct compiler *c, const struct segment_node *n,
    struct sbuf *w)
{
	switch (n->kind) {
	case SEG_FRIEND_STATUS:
		compile_pred(c, w, "f.status", &n->value, 0);
		break;
	case SEG_FRIEND_LANGUAGE:
		compile_pred(c, w, "f.language", &n->value, 1);
		break;
	case SEG_FRIEND_FOLLOWED_AT:
		compile_pred(c, w, "f.followed_at", &n->value, 1);
		break;
	default:
		compile_pred(c, w, "f.first_followed_at", &n->value, 1);
		break;
	}
	return (0);
}

/* linked: a current link to at least one shop customer. */
static int
leaf_linked(struct compiler *c, const struct segment_node *n,
    struct sbuf *w)
{
	int	 x;

	x = compile_derived(c, "k.friend_id", "count(*) AS n",
	    "FROM friend_customer_links k WHERE k.channel_id = $1 "
	    "AND k.unlinked_at IS NULL");
	if (n->flag && c->positive)
		sb_printf(w, "x%d.n > 0", x);
	else
		sb_printf(w, "coalesce(x%d.n, 0) %s 0", x, n->flag ? ">" : "=");
	return (0);
}

/* tags: how many of the named tags the friend has. */
static int
leaf_tags(struct compiler *c, const struct segment_node *n, struct sbuf *w)
{
	struct sbuf	 b = { NULL, 0, 0 };
	char		 count[32];
	int		 x, k;

	k = compile_array(c, n->names.items, n->names.n, 1);
	sb_printf(&b, "FROM friend_tags ft JOIN tags t ON t.channel_id = "
	    "ft.channel_id AND t.id = ft.tag_id WHERE ft.channel_id = $1 "
	    "AND t.name = ANY ($%d::text[])", k);
	x = compile_derived(c, "ft.friend_id", "count(*) AS n", b.s);
	free(b.s);
	switch (n->tag_op) {
	case SEG_TAGS_ANY:
		sb_printf(w, c->positive ? "x%d.n > 0" :
		    "coalesce(x%d.n, 0) > 0", x);
		break;
	case SEG_TAGS_ALL:
		snprintf(count, sizeof count, "%zu", n->names.n);
		k = compile_param(c, count);
		sb_printf(w, c->positive ? "x%d.n >= $%d::bigint" :
		    "coalesce(x%d.n, 0) >= $%d::bigint", x, k);
		break;
	case SEG_TAGS_NONE:
		sb_printf(w, "coalesce(x%d.n, 0) = 0", x);
		break;
	}
	return (0);
}

/* Use the friend_stats rollup (alias s). */
static void
compile_stats(struct compiler *c)
{
	c->stats = 1;
}

/*
 * purchases: orders that count (paid, not test/deleted, shop currency)
 * of the customers currently linked to the friend.  n counts orders still
 * worth more than zero; amt is their net after refunds and cancellations,
 * or, limited to products, the total of the matching lines.
 */
static int
leaf_purchases(struct compiler *c, const struct segment_node *n,
    struct sbuf *w)
{
	struct sbuf	 b = { NULL, 0, 0 };
	int		 x, k, products;

	products = n->product_ids.n || n->skus.n || n->vendors.n ||
	    n->title_contains != NULL;
	if (!products && n->shop == NULL && n->amount.ncmps == 0 &&
	    compile_latest(c, w, n, "s.last_purchase_at")) {
		compile_stats(c);
		return (0);
	}
	if (!products && !n->has_window && n->shop == NULL) {
		compile_stats(c);
		if (n->value.ncmps > 0)
			compile_count(c, w, "s.orders_count", &n->value);
		if (n->value.ncmps > 0 && n->amount.ncmps > 0)
			sb_printf(w, " AND ");
		if (n->amount.ncmps > 0)
			compile_count(c, w, "s.net_revenue", &n->amount);
		return (0);
	}
	sb_printf(&b, "FROM orders o JOIN friend_customer_links k "
	    "ON k.channel_id = o.channel_id AND k.customer_id = o.customer_id "
	    "AND k.unlinked_at IS NULL");
	if (products)
		sb_printf(&b, " JOIN order_items it ON it.channel_id = "
		    "o.channel_id AND it.order_id = o.id");
	sb_printf(&b, " WHERE o.channel_id = $1 AND o.revenue_state = "
	    "'counted'");
	if (products)
		sb_printf(&b, " AND o.net > 0");
	if (n->shop != NULL) {
		k = compile_param(c, n->shop);
		sb_printf(&b, " AND o.shop_id = (SELECT sh.id FROM shops sh "
		    "WHERE sh.channel_id = $1 AND sh.slug = $%d::text)", k);
	}
	compile_window(c, &b, "o.placed_at", n);
	if (n->product_ids.n) {
		k = compile_array(c, n->product_ids.items, n->product_ids.n,
		    1);
		sb_printf(&b, " AND it.product_id = ANY ($%d::text[])", k);
	}
	if (n->skus.n) {
		k = compile_array(c, n->skus.items, n->skus.n, 1);
		sb_printf(&b, " AND it.sku = ANY ($%d::text[])", k);
	}
	if (n->vendors.n) {
		k = compile_array(c, n->vendors.items, n->vendors.n, 1);
		sb_printf(&b, " AND it.vendor = ANY ($%d::text[])", k);
	}
	if (n->title_contains != NULL) {
		k = compile_param(c, n->title_contains);
		sb_printf(&b, " AND strpos(it.title, $%d::text) > 0", k);
	}
	x = compile_derived(c, "k.friend_id", products ?
	    "count(DISTINCT o.id) AS n, sum(it.total) AS amt" :
	    "count(*) FILTER (WHERE o.net > 0) AS n, sum(o.net) AS amt",
	    b.s);
	free(b.s);
	if (n->value.ncmps > 0)
		compile_metric(c, w, x, "n", &n->value);
	if (n->value.ncmps > 0 && n->amount.ncmps > 0)
		sb_printf(w, " AND ");
	if (n->amount.ncmps > 0)
		compile_metric(c, w, x, "amt", &n->amount);
	return (0);
}

/* first_purchase, last_purchase, aov, rfm: friend_stats columns. */
static int
leaf_stats(struct compiler *c, const struct segment_node *n,
    struct sbuf *w)
{
	const char	*col;

	switch (n->kind) {
	case SEG_FIRST_PURCHASE:
		col = "s.first_purchase_at";
		break;
	case SEG_LAST_PURCHASE:
		col = "s.last_purchase_at";
		break;
	case SEG_AOV:
		col = "s.aov";
		break;
	case SEG_RFM_R:
		col = "s.rfm_r";
		break;
	case SEG_RFM_F:
		col = "s.rfm_f";
		break;
	default:
		col = "s.rfm_m";
		break;
	}
	compile_stats(c);
	compile_pred(c, w, col, &n->value, 1);
	return (0);
}

/* clicks: on any link, some links, or a campaign's links. */
static int
leaf_clicks(struct compiler *c, const struct segment_node *n,
    struct sbuf *w)
{
	struct sbuf	 b = { NULL, 0, 0 };
	int		 x, k;

	if (n->links.n == 0 && n->campaign == NULL &&
	    compile_latest(c, w, n, "e.last_click_at")) {
		c->engagement = 1;
		return (0);
	}
	if (!n->has_window && n->links.n == 0 && n->campaign == NULL) {
		c->engagement = 1;
		compile_count(c, w, "e.clicks", &n->value);
		return (0);
	}
	sb_printf(&b, "FROM clicks cl WHERE cl.channel_id = $1 "
	    "AND cl.friend_id IS NOT NULL");
	if (n->links.n) {
		k = compile_array(c, n->links.items, n->links.n, 0);
		sb_printf(&b, " AND cl.link_id = ANY ($%d::bigint[])", k);
	}
	if (n->campaign != NULL) {
		k = compile_param(c, n->campaign);
		sb_printf(&b, " AND cl.link_id IN (SELECT l.id FROM links l "
		    "WHERE l.channel_id = $1 AND l.campaign_id = $%d::bigint)",
		    k);
	}
	compile_window(c, &b, "cl.clicked_at", n);
	x = compile_derived(c, "cl.friend_id", "count(*) AS n", b.s);
	free(b.s);
	compile_metric(c, w, x, "n", &n->value);
	return (0);
}

/* page_views: optionally of URLs starting with a prefix. */
static int
leaf_page_views(struct compiler *c, const struct segment_node *n,
    struct sbuf *w)
{
	struct sbuf	 b = { NULL, 0, 0 };
	int		 x, k;

	if (n->url_prefix == NULL &&
	    compile_latest(c, w, n, "e.last_view_at")) {
		c->engagement = 1;
		return (0);
	}
	if (!n->has_window && n->url_prefix == NULL) {
		c->engagement = 1;
		compile_count(c, w, "e.page_views", &n->value);
		return (0);
	}
	sb_printf(&b, "FROM page_views pv WHERE pv.channel_id = $1 "
	    "AND pv.friend_id IS NOT NULL");
	if (n->url_prefix != NULL) {
		k = compile_prefix(c, n->url_prefix);
		sb_printf(&b, " AND pv.url LIKE $%d::text", k);
	}
	compile_window(c, &b, "pv.viewed_at", n);
	x = compile_derived(c, "pv.friend_id", "count(*) AS n", b.s);
	free(b.s);
	compile_metric(c, w, x, "n", &n->value);
	return (0);
}

/* interactions: events the friend caused (messages, postbacks...). */
static int
leaf_interactions(struct compiler *c, const struct segment_node *n,
    struct sbuf *w)
{
	struct sbuf	 b = { NULL, 0, 0 };
	int		 x, k;

	sb_printf(&b, "FROM interactions i WHERE i.channel_id = $1 "
	    "AND i.friend_id IS NOT NULL");
	if (n->itype != NULL) {
		k = compile_param(c, n->itype);
		sb_printf(&b, " AND i.type = $%d::text", k);
	}
	if (n->postback.nvalues > 0) {
		if (n->postback.op == SEG_OP_PREFIX) {
			k = compile_prefix(c, n->postback.values[0]);
			sb_printf(&b, " AND i.postback_data LIKE $%d::text", k);
		} else {
			k = compile_param(c, n->postback.values[0]);
			sb_printf(&b, " AND i.postback_data = $%d::text", k);
		}
	}
	compile_window(c, &b, "i.event_ts", n);
	x = compile_derived(c, "i.friend_id", "count(*) AS n", b.s);
	free(b.s);
	compile_metric(c, w, x, "n", &n->value);
	return (0);
}

/* source: the acquisition source (流入経路) the friend came from. */
static int
leaf_source(struct compiler *c, const struct segment_node *n,
    struct sbuf *w)
{
	c->source = 1;
	compile_pred(c, w, n->kind == SEG_SOURCE_CODE ? "src.code" :
	    "src.kind", &n->value, 1);
	return (0);
}

/*
 * The leaf compilers.  A row without a function is a condition whose data
 * musubi does not keep yet; "why" is what the marketer is told.
 */
static const struct {
	leaf_fn		*fn;
	const char	*why;
} compile_leaves[SEG_NKINDS] = {
	[SEG_FRIEND_STATUS] = { leaf_friend, NULL },
	[SEG_FRIEND_LANGUAGE] = { leaf_friend, NULL },
	[SEG_FRIEND_FOLLOWED_AT] = { leaf_friend, NULL },
	[SEG_FRIEND_FIRST_FOLLOWED_AT] = { leaf_friend, NULL },
	[SEG_FRIEND_LINKED] = { leaf_linked, NULL },
	[SEG_TAGS] = { leaf_tags, NULL },
	[SEG_SOURCE_CODE] = { leaf_source, NULL },
	[SEG_SOURCE_KIND] = { leaf_source, NULL },
	[SEG_PURCHASES] = { leaf_purchases, NULL },
	[SEG_FIRST_PURCHASE] = { leaf_stats, NULL },
	[SEG_LAST_PURCHASE] = { leaf_stats, NULL },
	[SEG_AOV] = { leaf_stats, NULL },
	[SEG_RFM_R] = { leaf_stats, NULL },
	[SEG_RFM_F] = { leaf_stats, NULL },
	[SEG_RFM_M] = { leaf_stats, NULL },
	[SEG_CLICKS] = { leaf_clicks, NULL },
	[SEG_PAGE_VIEWS] = { leaf_page_views, NULL },
	[SEG_INTERACTIONS] = { leaf_interactions, NULL },
	[SEG_MESSAGING] = { NULL, "messaging conditions are not available "
	    "yet: musubi does not record campaign deliveries, so \"received "
	    "a campaign\" cannot be evaluated; remove this condition for "
	    "now" },
};

/* Compile a node into w. */
static int
compile_node(struct compiler *c, const struct segment_node *n,
    struct sbuf *w)
{
	size_t	 i;
	int	 positive, rc;

	switch (n->kind) {
	case SEG_ALL:
	case SEG_ANY:
		sb_printf(w, "(");
		for (i = 0; i < n->nchild; i++) {
			if (i > 0)
				sb_printf(w, n->kind == SEG_ALL ? " AND " :
				    " OR ");
			if (compile_node(c, n->child[i], w) != 0)
				return (-1);
		}
		sb_printf(w, ")");
		return (0);
	case SEG_NOT:
		positive = c->positive;
		c->positive = 0;
		sb_printf(w, "(NOT ");
		rc = compile_node(c, n->child[0], w);
		sb_printf(w, ")");
		c->positive = positive;
		return (rc);
	default:
		break;
	}
	if (compile_leaves[n->kind].fn == NULL)
		return (segment_error_set(c->err, "not_available", n->path,
		    "%s", compile_leaves[n->kind].why));
	sb_printf(w, "(");
	if (compile_leaves[n->kind].fn(c, n, w) != 0)
		return (-1);
	sb_printf(w, ")");
	return (0);
}

/* Compile a rule for one channel. */
struct segment_query *
segment_compile(const struct segment_rule *r, int64_t channel_id,
    enum segment_mode mode, struct segment_error *err)
{
	struct compiler		 c;
	struct sbuf		 w = { NULL, 0, 0 }, j = { NULL, 0, 0 };
	char			 id[32];

	memset(&c, 0, sizeof c);
	memset(err, 0, sizeof *err);
	c.err = err;
	c.mode = mode;
	c.positive = 1;
	c.q = xcalloc(1, sizeof *c.q);
	snprintf(id, sizeof id, "%lld", (long long)channel_id);
	compile_param(&c, id);
	sb_printf(&c.joins, "%s", "");
	if (compile_node(&c, r->root, &w) != 0) {
		free(w.s);
		free(c.joins.s);
		segment_query_free(c.q);
		return (NULL);
	}
	sb_printf(&j, "%s", "");
	if (c.stats)
		sb_printf(&j, " LEFT JOIN friend_stats s ON s.channel_id = "
		    "f.channel_id AND s.friend_id = f.id");
	if (c.engagement)
		sb_printf(&j, " LEFT JOIN friend_engagement e ON "
		    "e.channel_id = f.channel_id AND e.friend_id = f.id");
	if (c.source)
		sb_printf(&j, " LEFT JOIN acquisition_sources src ON "
		    "src.channel_id = f.channel_id AND src.id = f.source_id");
	sb_printf(&j, "%s", c.joins.s);
	free(c.joins.s);
	c.q->joins = j.s;
	c.q->where = w.s;
	return (c.q);
}

/* Free a compiled query. */
void
segment_query_free(struct segment_query *q)
{
	int	 i;

	if (q == NULL)
		return;
	for (i = 0; i < q->nparams; i++)
		free(q->params[i]);
	free(q->params);
	free(q->joins);
	free(q->where);
	free(q);
}

/* Number of parameters. */
int
segment_query_nparams(const struct segment_query *q)
{
	return (q->nparams);
}

/* Parameter i (0-based: i = 0 is $1). */
const char *
segment_query_param(const struct segment_query *q, int i)
{
	if (i < 0 || i >= q->nparams)
		return (NULL);
	return (q->params[i]);
}

/* A new parameter list for the query. */
struct db_params *
segment_query_params(const struct segment_query *q)
{
	struct db_params	*p = db_params_new();
	int			 i;

	for (i = 0; i < q->nparams; i++)
		db_params_text(p, q->params[i]);
	return (p);
}

/* Build a statement around the query. */
char *
segment_query_select(const struct segment_query *q, const char *cols,
    const char *tail)
{
	char	*sql;

	xasprintf(&sql, "SELECT %s FROM friends f%s WHERE f.channel_id = $1 "
	    "AND %s%s%s", cols, q->joins, q->where,
	    tail != NULL ? " " : "", tail != NULL ? tail : "");
	return (sql);
}
