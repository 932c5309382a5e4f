/* SPDX-License-Identifier: ISC */
/*
 * woocommerce.c -- turn a verified WooCommerce webhook body into an
 * ec_event.  Pure: no I/O.
 *
 * order.created, order.updated and order.restored carry the REST v3 order
 * (the webhook body is the /wc/v3/orders/<id> resource) and become a
 * snapshot of the order; order.deleted carries {"id": N}.  WooCommerce has
 * no refund topic: a refund arrives as an order.updated listing it in
 * refunds[] with a negative total and no date, so its date is the
 * snapshot's date_modified (marked estimated; the earliest one wins).  Other
 * resources and action.* topics are stored and ignored.
 *
 * Times are the *_gmt fields (UTC without an offset).  An order counts as
 * paid once date_paid_gmt is set, or its status is completed or refunded;
 * "processing" alone is not enough (cash on delivery sits there unpaid).
 * Totals are decimal strings; a line's unit price is its subtotal divided
 * by its quantity (the "price" member is a JSON float, read only when
 * there is no subtotal).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/ec.h"
#include "musubi/xmalloc.h"

/* Tell whether a body is the unsigned creation ping "webhook_id=N". */
int
woocommerce_is_ping(const void *body, size_t len)
{
	const char	*s = body;
	size_t		 i = 11, digits = 0;

	if (s == NULL || len < 12 || len > 64 ||
	    memcmp(s, "webhook_id=", 11) != 0)
		return (0);
	for (; i < len && isdigit((unsigned char)s[i]); i++)
		digits++;
	for (; i < len && isspace((unsigned char)s[i]); i++)
		;
	return (digits > 0 && digits <= 20 && i == len);
}

/* Decode the entities wp_specialchars_decode(ENT_QUOTES) decodes. */
char *
woocommerce_secret(const char *secret)
{
	static const struct {
		const char	*ent;
		char		 c;
	} ents[] = {
		{ "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' },
		{ "&quot;", '"' }, { "&#039;", '\'' }, { "&#39;", '\'' },
		{ "&#x27;", '\'' }, { "&#X27;", '\'' },
	};
	char	*out = xmalloc(strlen(secret) + 1);
	size_t	 n = 0, k, el;

	while (*secret != '\0') {
		for (k = 0; k < nitems(ents); k++) {
			el = strlen(ents[k].ent);
			if (strncmp(secret, ents[k].ent, el) == 0)
				break;
		}
		if (k < nitems(ents)) {
			out[n++] = ents[k].c;
			secret += strlen(ents[k].ent);
		} else
			out[n++] = *secret++;
	}
	out[n] = '\0';
	return (out);
}

/* The value of meta_data key, or NULL. */
static const json_t *
woocommerce_meta(const json_t *meta, const char *key)
{
	const json_t	*m;
	size_t		 i;

	json_array_foreach(meta, i, m) {
		if (json_is_string(json_object_get(m, "key")) &&
		    strcmp(json_string_value(json_object_get(m, "key")),
		    key) == 0)
			return (json_object_get(m, "value"));
	}
	return (NULL);
}

/* An id that uses 0 for "none" (product_id, variation_id). */
static int
woocommerce_opt_id(struct ec_event *ev, const json_t *obj, const char *key,
    const char *parent, char **out)
{
	const json_t	*v = json_object_get(obj, key);

	*out = NULL;
	if (json_is_integer(v) && json_integer_value(v) == 0)
		return (1);
	return (ec_get_id(ev, obj, key, parent, 0, out));
}

/* Read one line item. */
static int
woocommerce_item(struct ec_event *ev, const json_t *li, const char *path,
    struct ec_item *it)
{
	int64_t		 sub;
	int		 rc;

	if (!json_is_object(li)) {
		ec_problem(ev, path, "%s: not a line item", path);
		return (-1);
	}
	if (ec_get_id(ev, li, "id", path, 0, &it->line_id) < 0 ||
	    woocommerce_opt_id(ev, li, "product_id", path,
	    &it->product_id) < 0 ||
	    woocommerce_opt_id(ev, li, "variation_id", path,
	    &it->variant_id) < 0 ||
	    ec_get_quantity(ev, li, "quantity", path, EC_F_REQUIRED,
	    &it->quantity) != 0)
		return (-1);
	it->sku = ec_text(json_object_get(li, "sku"), 200);
	it->title = ec_text(json_object_get(li, "name"), 500);
	rc = ec_get_money(ev, li, "subtotal", path, EC_F_NONNEG, &sub);
	if (rc < 0)
		return (-1);
	if (rc == 0 && it->quantity > 0) {
		/* Unit price: subtotal / quantity, rounded half up. */
		it->price = (sub + it->quantity / 2) / it->quantity;
	} else {
		if (ec_get_money(ev, li, "price", path, EC_F_REQUIRED |
		    EC_F_NONNEG | EC_F_REAL, &it->price) != 0)
			return (-1);
		if (rc == 1 && ec_money_mul(it->price, it->quantity,
		    &sub) != 0) {
			ec_problem(ev, path, "%s: price x quantity out of "
			    "range", path);
			return (-1);
		}
	}
	rc = ec_get_money(ev, li, "total", path, EC_F_NONNEG, &it->total);
	if (rc < 0)
		return (-1);
	if (rc == 1)
		it->total = sub;
	return (0);
}

/* Read the customer of an order. */
static void
woocommerce_customer(struct ec_event *ev, const json_t *o)
{
	struct ec_customer	*c = &ev->order.customer;
	const json_t		*b = json_object_get(o, "billing");
	const json_t		*v = json_object_get(o, "customer_id");
	const char		*why;

	if (v != NULL && !(json_is_integer(v) && json_integer_value(v) == 0) &&
	    !json_is_null(v)) {
		if ((c->id = ec_id(v, &why)) == NULL)
			ec_flag(ev, "/customer_id ignored: %s", why);
	}
	ec_email_hash(json_string_value(json_object_get(b, "email")),
	    c->email_hash);
	ec_phone_hash(json_string_value(json_object_get(b, "phone")),
	    c->phone_hash);
	c->first_name = ec_text(json_object_get(b, "first_name"), 100);
	c->last_name = ec_text(json_object_get(b, "last_name"), 100);
	if (c->id != NULL)
		c->key = xstrdup(c->id);
	else if (c->email_hash[0] != '\0')
		xasprintf(&c->key, "guest:%s", c->email_hash);
	ev->order.has_customer = c->key != NULL;
}

/* Read a REST order into ev->order. */
static void
woocommerce_order(struct ec_event *ev, const json_t *o,
    const struct ec_parse_opts *opts)
{
	struct ec_order	*ord = &ev->order;
	struct ec_refund *r;
	const json_t	*v, *items, *refunds, *meta;
	char		 path[64], done[EC_TIME_LEN] = "";
	int64_t		 listed = 0, amt;
	size_t		 i;
	int		 rc;

	if (ec_get_id(ev, o, "id", "", EC_F_REQUIRED, &ord->id) != 0)
		return;
	ev->entity_id = xstrdup(ord->id);
	if ((ord->number = ec_text(json_object_get(o, "number"), 64)) == NULL)
		ord->number = xstrdup(ord->id);
	if (ec_get_currency(ev, o, "currency", "", EC_F_REQUIRED,
	    &ord->currency) != 0)
		return;
	if (opts->currency != NULL && strcmp(ord->currency,
	    opts->currency) != 0)
		ec_flag(ev, "currency %s is not the shop's %s: kept out of "
		    "revenue", ord->currency, opts->currency);
	ord->status = ec_text(json_object_get(o, "status"), 32);
	ord->source_name = ec_text(json_object_get(o, "created_via"), 64);

	rc = ec_get_time(ev, o, "date_created_gmt", "", EC_TIME_UTC,
	    ord->placed_at);
	if (rc == 1) {
		rc = ec_get_time(ev, o, "date_created", "", EC_F_REQUIRED |
		    EC_TIME_UTC, ord->placed_at);
		if (rc == 0)
			ec_flag(ev, "no date_created_gmt: date_created read "
			    "as UTC");
	}
	if (rc < 0 ||
	    ec_get_time(ev, o, "date_modified_gmt", "", EC_TIME_UTC,
	    ord->updated_at) < 0 ||
	    ec_get_time(ev, o, "date_paid_gmt", "", EC_TIME_UTC,
	    ord->paid_at) < 0 ||
	    ec_get_time(ev, o, "date_completed_gmt", "", EC_TIME_UTC,
	    done) < 0)
		return;
	if (ord->paid_at[0] == '\0' && ord->status != NULL &&
	    (strcmp(ord->status, "completed") == 0 ||
	    strcmp(ord->status, "refunded") == 0))
		snprintf(ord->paid_at, sizeof ord->paid_at, "%s",
		    done[0] != '\0' ? done : ord->updated_at[0] != '\0' ?
		    ord->updated_at : ord->placed_at);
	ord->financial_status = xstrdup(ord->paid_at[0] != '\0' ? "paid" :
	    "unpaid");
	if (ord->status != NULL && strcmp(ord->status, "cancelled") == 0)
		snprintf(ord->cancelled_at, sizeof ord->cancelled_at, "%s",
		    ord->updated_at[0] != '\0' ? ord->updated_at :
		    ord->placed_at);
	if (ec_get_money(ev, o, "total", "", EC_F_REQUIRED | EC_F_NONNEG,
	    &ord->gross) != 0)
		return;

	items = json_object_get(o, "line_items");
	if (items != NULL && !json_is_array(items)) {
		ec_problem(ev, "/line_items", "/line_items: not an array");
		return;
	}
	if (json_array_size(items) > EC_ITEMS_MAX) {
		ec_problem(ev, "/line_items", "/line_items: more than %d",
		    EC_ITEMS_MAX);
		return;
	}
	if (json_array_size(items) > 0)
		ord->items = xcalloc(json_array_size(items),
		    sizeof *ord->items);
	json_array_foreach(items, i, v) {
		snprintf(path, sizeof path, "/line_items/%zu", i);
		ord->nitems++;
		if (woocommerce_item(ev, v, path, &ord->items[i]) != 0)
			return;
	}

	refunds = json_object_get(o, "refunds");
	if (json_array_size(refunds) > EC_REFUNDS_MAX) {
		ec_problem(ev, "/refunds", "/refunds: more than %d",
		    EC_REFUNDS_MAX);
		return;
	}
	if (json_array_size(refunds) > 0)
		ord->refunds = xcalloc(json_array_size(refunds),
		    sizeof *ord->refunds);
	json_array_foreach(refunds, i, v) {
		snprintf(path, sizeof path, "/refunds/%zu", i);
		r = &ord->refunds[ord->nrefunds++];
		if (ec_get_id(ev, v, "id", path, EC_F_REQUIRED, &r->id) != 0 ||
		    ec_get_money(ev, v, "total", path, EC_F_REQUIRED,
		    &amt) != 0)
			return;
		if (amt > 0)
			ec_flag(ev, "%s/total is positive; WooCommerce sends "
			    "refunds as negative totals", path);
		r->amount = amt < 0 ? -amt : amt;
		r->order_id = xstrdup(ord->id);
		r->note = ec_text(json_object_get(v, "reason"), 500);
		snprintf(r->created_at, sizeof r->created_at, "%s",
		    ord->updated_at[0] != '\0' ? ord->updated_at :
		    ord->placed_at);
		r->estimated = 1;
		if (ec_money_add(listed, r->amount, &listed) != 0) {
			ec_problem(ev, "/refunds", "/refunds: total out of "
			    "range");
			return;
		}
	}
	ord->current_total = ord->gross - listed > 0 ? ord->gross - listed : 0;

	woocommerce_customer(ev, o);
	meta = json_object_get(o, "meta_data");
	ord->landing_site = ec_text(woocommerce_meta(meta,
	    "_wc_order_attribution_session_entry"), 2000);
	ord->referring_site = ec_text(woocommerce_meta(meta,
	    "_wc_order_attribution_referrer"), 2000);
	ord->note_attributes = ec_name_values(meta);
	if ((ord->attribution_token = ec_attr_token(meta)) == NULL)
		ord->attribution_token = ec_url_token(ord->landing_site);
}

/* Parse a WooCommerce delivery. */
int
woocommerce_parse(const void *body, size_t len,
    const struct ec_parse_opts *opts, struct ec_event *ev, char **cause)
{
	json_t		*root;
	const char	*topic = opts->topic;
	int		 storable;

	memset(ev, 0, sizeof *ev);
	if ((root = ec_load(body, len, &storable, cause)) == NULL) {
		if (!storable)
			return (-1);
		ec_problem(ev, "", "%s", *cause);
		return (0);
	}
	if (topic == NULL)
		ec_problem(ev, "", "no X-WC-Webhook-Topic header");
	else if (strcmp(topic, "order.created") == 0 ||
	    strcmp(topic, "order.updated") == 0 ||
	    strcmp(topic, "order.restored") == 0) {
		ev->kind = EC_ORDER;
		ev->order.restored = strcmp(topic, "order.restored") == 0;
		woocommerce_order(ev, root, opts);
	} else if (strcmp(topic, "order.deleted") == 0) {
		ev->kind = EC_DELETE;
		if (ec_get_id(ev, root, "id", "", EC_F_REQUIRED,
		    &ev->order.id) == 0)
			ev->entity_id = xstrdup(ev->order.id);
	} else {
		ev->kind = EC_IGNORED;
		xasprintf(&ev->problem, "topic %s is not used by musubi",
		    topic);
	}
	json_decref(root);
	return (0);
}
