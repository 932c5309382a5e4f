/* SPDX-License-Identifier: ISC */
/*
 * shopify.c -- turn a verified Shopify webhook body into an ec_event.  Pure:
 * no I/O.
 *
 * orders/create, orders/paid, orders/updated, orders/cancelled,
 * orders/fulfilled and orders/partially_fulfilled carry the Order resource
 * and become a snapshot of the order; orders/delete names a deleted order;
 * refunds/create carries a Refund.  Other topics are stored and ignored.
 *
 * Amounts are read from the *_set.shop_money variants when present, else
 * from the plain fields (both are the shop currency); the net comes from
 * current_total_price.  Ids are JSON integers kept exact (json_int_t is 64
 * bits); one that arrives as a real is refused, except the order id, which
 * then comes from admin_graphql_api_id ("gid://shopify/Order/<id>").  A
 * refund's money is the sum of its successful refund transactions; when a
 * transaction is in another currency, the refunded line items (shop money)
 * stand in, and the order's next current_total_price settles the rest.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/ec.h"
#include "musubi/xmalloc.h"

static const char *const shopify_order_topics[] = {
	"orders/create", "orders/paid", "orders/updated", "orders/cancelled",
	"orders/fulfilled", "orders/partially_fulfilled", NULL
};

/* financial_status values that mean the money was received. */
static const char *const shopify_paid[] = {
	"paid", "partially_paid", "partially_refunded", "refunded", NULL
};

/* Tell whether s is in the NULL-terminated list. */
static int
shopify_in(const char *s, const char *const *list)
{
	size_t	 i;

	if (s == NULL)
		return (0);
	for (i = 0; list[i] != NULL; i++) {
		if (strcmp(s, list[i]) == 0)
			return (1);
	}
	return (0);
}

/*
 * Read an amount from key_set.shop_money.amount, or else key.  Same
 * returns as ec_get_money.
 */
static int
shopify_money(struct ec_event *ev, const json_t *obj, const char *key,
    const char *parent, int flags, int64_t *out)
{
	const json_t	*set;
	char		 name[64], path[256];

	snprintf(name, sizeof name, "%s_set", key);
	set = json_object_get(json_object_get(json_object_get(obj, name),
	    "shop_money"), "amount");
	if (set != NULL && !json_is_null(set)) {
		snprintf(path, sizeof path, "%s/%s/shop_money", parent, name);
		return (ec_get_money(ev, json_object_get(json_object_get(obj,
		    name), "shop_money"), "amount", path, flags, out));
	}
	return (ec_get_money(ev, obj, key, parent, flags, out));
}

/* Read a refund object (refunds/create, or one listed in an order). */
static int
shopify_refund(struct ec_event *ev, const json_t *r, const char *parent,
    const struct ec_parse_opts *opts, const char *order_id,
    const char *fallback_at, struct ec_refund *out)
{
	const json_t	*txs, *tx, *rlis, *rli, *cur;
	char		 path[256];
	int64_t		 amt, sum = 0, lsum = 0, tax;
	size_t		 i;
	int		 foreign = 0, rc;

	if (!json_is_object(r)) {
		ec_problem(ev, parent, "%s: not a refund object", parent);
		return (-1);
	}
	if (ec_get_id(ev, r, "id", parent, EC_F_REQUIRED, &out->id) != 0)
		return (-1);
	rc = ec_get_id(ev, r, "order_id", parent,
	    order_id == NULL ? EC_F_REQUIRED : 0, &out->order_id);
	if (rc < 0)
		return (-1);
	if (rc == 1)
		out->order_id = xstrdup(order_id);
	else if (order_id != NULL && strcmp(out->order_id, order_id) != 0) {
		ec_problem(ev, parent, "%s/order_id: not the order listing "
		    "the refund", parent);
		return (-1);
	}
	rc = ec_get_time(ev, r, "created_at", parent, 0, out->created_at);
	if (rc == 1)
		rc = ec_get_time(ev, r, "processed_at", parent, 0,
		    out->created_at);
	if (rc < 0)
		return (-1);
	if (rc == 1) {
		if (fallback_at == NULL || *fallback_at == '\0') {
			ec_problem(ev, parent, "%s/created_at is required",
			    parent);
			return (-1);
		}
		snprintf(out->created_at, sizeof out->created_at, "%s",
		    fallback_at);
		out->estimated = 1;
	}
	out->note = ec_text(json_object_get(r, "note"), 500);

	txs = json_object_get(r, "transactions");
	json_array_foreach(txs, i, tx) {
		if (!json_is_string(json_object_get(tx, "kind")) ||
		    strcmp(json_string_value(json_object_get(tx, "kind")),
		    "refund") != 0 ||
		    !json_is_string(json_object_get(tx, "status")) ||
		    strcmp(json_string_value(json_object_get(tx, "status")),
		    "success") != 0)
			continue;
		snprintf(path, sizeof path, "%s/transactions/%zu", parent, i);
		cur = json_object_get(tx, "currency");
		if (json_object_get(json_object_get(tx, "amount_set"),
		    "shop_money") == NULL && json_is_string(cur) &&
		    opts->currency != NULL &&
		    strcmp(json_string_value(cur), opts->currency) != 0) {
			foreign = 1;
			continue;
		}
		if (shopify_money(ev, tx, "amount", path,
		    EC_F_REQUIRED | EC_F_NONNEG, &amt) != 0)
			return (-1);
		if (ec_money_add(sum, amt, &sum) != 0) {
			ec_problem(ev, path, "%s: refunded total out of range",
			    path);
			return (-1);
		}
	}

	rlis = json_object_get(r, "refund_line_items");
	if (json_array_size(rlis) > EC_ITEMS_MAX) {
		ec_problem(ev, parent, "%s/refund_line_items: more than %d",
		    parent, EC_ITEMS_MAX);
		return (-1);
	}
	if (json_array_size(rlis) > 0)
		out->items = xcalloc(json_array_size(rlis),
		    sizeof *out->items);
	json_array_foreach(rlis, i, rli) {
		struct ec_refund_item	*it = &out->items[i];

		snprintf(path, sizeof path, "%s/refund_line_items/%zu", parent,
		    i);
		out->nitems++;
		if (ec_get_id(ev, rli, "line_item_id", path, 0,
		    &it->line_id) < 0 ||
		    ec_get_quantity(ev, rli, "quantity", path, 0,
		    &it->quantity) < 0)
			return (-1);
		amt = tax = 0;
		if (shopify_money(ev, rli, "subtotal", path, EC_F_NONNEG,
		    &amt) < 0 ||
		    shopify_money(ev, rli, "total_tax", path, EC_F_NONNEG,
		    &tax) < 0)
			return (-1);
		if (ec_money_add(amt, tax, &it->amount) != 0 ||
		    ec_money_add(lsum, it->amount, &lsum) != 0) {
			ec_problem(ev, path, "%s: amount out of range", path);
			return (-1);
		}
	}
	if (foreign) {
		ec_flag(ev, "refund %s: transactions in another currency "
		    "than %s; amount taken from the refunded line items",
		    out->id, opts->currency);
		sum = lsum;
	}
	out->amount = sum;
	return (0);
}

/* Read one line item. */
static int
shopify_item(struct ec_event *ev, const json_t *li, const char *path,
    struct ec_item *it)
{
	const char	*ids[] = { "product_id", "variant_id" };
	char		**dst[] = { &it->product_id, &it->variant_id };
	const char	*why;
	const json_t	*v;
	int64_t		 disc = 0, gross;
	int		 k;

	if (!json_is_object(li)) {
		ec_problem(ev, path, "%s: not a line item", path);
		return (-1);
	}
	if (ec_get_id(ev, li, "id", path, 0, &it->line_id) < 0)
		return (-1);
	for (k = 0; k < 2; k++) {
		v = ec_member(li, ids[k], 0);
		if (v == NULL)
			continue;
		if ((*dst[k] = ec_id(v, &why)) == NULL)
			ec_flag(ev, "%s/%s dropped: %s", path, ids[k], why);
	}
	it->sku = ec_text(json_object_get(li, "sku"), 200);
	if ((it->title = ec_text(json_object_get(li, "title"), 500)) == NULL)
		it->title = ec_text(json_object_get(li, "name"), 500);
	it->vendor = ec_text(json_object_get(li, "vendor"), 200);
	if (ec_get_quantity(ev, li, "quantity", path, EC_F_REQUIRED,
	    &it->quantity) != 0 ||
	    shopify_money(ev, li, "price", path, EC_F_REQUIRED | EC_F_NONNEG,
	    &it->price) != 0 ||
	    shopify_money(ev, li, "total_discount", path, EC_F_NONNEG,
	    &disc) < 0)
		return (-1);
	if (ec_money_mul(it->price, it->quantity, &gross) != 0) {
		ec_problem(ev, path, "%s: price x quantity out of range", path);
		return (-1);
	}
	it->total = gross - disc;
	if (it->total < 0) {
		ec_flag(ev, "%s: discount larger than the line; total set to 0",
		    path);
		it->total = 0;
	}
	return (0);
}

/* Read the customer and contact data of an order. */
static void
shopify_customer(struct ec_event *ev, const json_t *o)
{
	struct ec_customer	*c = &ev->order.customer;
	const json_t		*cu = json_object_get(o, "customer");
	const json_t		*ba = json_object_get(o, "billing_address");
	const json_t		*v;
	const char		*email = NULL, *phone = NULL, *why;
	const char *const	 ekeys[] = { "email", "contact_email" };
	size_t			 i;

	if (json_is_object(cu) && (v = ec_member(cu, "id", 0)) != NULL) {
		if ((c->id = ec_id(v, &why)) == NULL)
			ec_flag(ev, "/customer/id ignored: %s", why);
	}
	if (json_is_string(json_object_get(cu, "email")))
		email = json_string_value(json_object_get(cu, "email"));
	for (i = 0; i < 2 && (email == NULL || *email == '\0'); i++) {
		if (json_is_string(json_object_get(o, ekeys[i])))
			email = json_string_value(json_object_get(o,
			    ekeys[i]));
	}
	if (json_is_string(json_object_get(cu, "phone")))
		phone = json_string_value(json_object_get(cu, "phone"));
	if ((phone == NULL || *phone == '\0') &&
	    json_is_string(json_object_get(o, "phone")))
		phone = json_string_value(json_object_get(o, "phone"));
	if ((phone == NULL || *phone == '\0') &&
	    json_is_string(json_object_get(ba, "phone")))
		phone = json_string_value(json_object_get(ba, "phone"));
	ec_email_hash(email, c->email_hash);
	ec_phone_hash(phone, c->phone_hash);
	if ((c->first_name = ec_text(json_object_get(cu, "first_name"),
	    100)) == NULL)
		c->first_name = ec_text(json_object_get(ba, "first_name"), 100);
	if ((c->last_name = ec_text(json_object_get(cu, "last_name"),
	    100)) == NULL)
		c->last_name = ec_text(json_object_get(ba, "last_name"), 100);
	if (c->id != NULL)
		c->key = xstrdup(c->id);
	else if (c->email_hash[0] != '\0')
		xasprintf(&c->key, "guest:%s", c->email_hash);
	ev->order.has_customer = c->key != NULL;
}

/* Read the order id, falling back on admin_graphql_api_id. */
static char *
shopify_order_id(struct ec_event *ev, const json_t *o)
{
	const json_t	*v = ec_member(o, "id", 0);
	const char	*why = "missing", *gid, *p;
	char		*id;

	if (v != NULL && (json_is_integer(v) || json_is_string(v)))
		return (ec_get_id(ev, o, "id", "", EC_F_REQUIRED, &id) == 0 ?
		    id : NULL);
	if (v != NULL)
		(void)ec_id(v, &why);
	gid = json_string_value(json_object_get(o, "admin_graphql_api_id"));
	if (gid != NULL && strncmp(gid, "gid://shopify/Order/", 20) == 0) {
		for (p = gid + 20; *p >= '0' && *p <= '9'; p++)
			;
		if (*p == '\0' && p > gid + 20 && p - (gid + 20) < 20) {
			ec_flag(ev, "/id is %s; taken from "
			    "admin_graphql_api_id", why);
			return (xstrdup(gid + 20));
		}
	}
	ec_problem(ev, "/id", "/id: %s", why);
	return (NULL);
}

/* Read an Order resource into ev->order. */
static void
shopify_order(struct ec_event *ev, const json_t *o,
    const struct ec_parse_opts *opts)
{
	struct ec_order	*ord = &ev->order;
	const json_t	*v, *items, *refunds;
	char		 closed[EC_TIME_LEN] = "", path[64];
	int64_t		 listed = 0;
	size_t		 i;
	int		 rc;

	if ((ord->id = shopify_order_id(ev, o)) == NULL)
		return;
	ev->entity_id = xstrdup(ord->id);
	if ((ord->number = ec_text(json_object_get(o, "name"), 64)) == NULL &&
	    json_is_integer(v = json_object_get(o, "order_number")))
		xasprintf(&ord->number, "%lld",
		    (long long)json_integer_value(v));
	rc = ec_get_currency(ev, o, "currency", "", 0, &ord->currency);
	if (rc == 1)
		rc = ec_get_currency(ev, json_object_get(json_object_get(o,
		    "total_price_set"), "shop_money"), "currency_code",
		    "/total_price_set/shop_money", EC_F_REQUIRED,
		    &ord->currency);
	if (rc < 0)
		return;
	if (opts->currency != NULL && strcmp(ord->currency,
	    opts->currency) != 0)
		ec_flag(ev, "currency %s is not the shop's %s: kept out of "
		    "revenue", ord->currency, opts->currency);
	ord->presentment_currency = ec_text(json_object_get(o,
	    "presentment_currency"), 3);
	ord->financial_status = ec_text(json_object_get(o,
	    "financial_status"), 32);
	ord->cancel_reason = ec_text(json_object_get(o, "cancel_reason"), 32);
	ord->source_name = ec_text(json_object_get(o, "source_name"), 64);
	ord->test = json_is_true(json_object_get(o, "test"));
	if (ord->test)
		ec_flag(ev, "a test order: kept out of revenue");

	rc = ec_get_time(ev, o, "processed_at", "", 0, ord->placed_at);
	if (rc == 1)
		rc = ec_get_time(ev, o, "created_at", "", EC_F_REQUIRED,
		    ord->placed_at);
	if (rc < 0 ||
	    ec_get_time(ev, o, "updated_at", "", 0, ord->updated_at) < 0 ||
	    ec_get_time(ev, o, "cancelled_at", "", 0, ord->cancelled_at) < 0 ||
	    ec_get_time(ev, o, "closed_at", "", 0, closed) < 0)
		return;
	if (ord->updated_at[0] == '\0' && opts->triggered_at != NULL) {
		snprintf(ord->updated_at, sizeof ord->updated_at, "%s",
		    opts->triggered_at);
		ec_flag(ev, "no updated_at: X-Shopify-Triggered-At used");
	}
	ord->status = xstrdup(ord->cancelled_at[0] != '\0' ? "cancelled" :
	    closed[0] != '\0' ? "closed" : "open");
	if (shopify_in(ord->financial_status, shopify_paid))
		snprintf(ord->paid_at, sizeof ord->paid_at, "%s",
		    ord->updated_at[0] != '\0' ? ord->updated_at :
		    ord->placed_at);
	if (shopify_money(ev, o, "total_price", "", EC_F_REQUIRED |
	    EC_F_NONNEG, &ord->gross) != 0)
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
		if (shopify_item(ev, v, path, &ord->items[i]) != 0)
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
		ord->nrefunds++;
		if (shopify_refund(ev, v, path, opts, ord->id,
		    ord->updated_at, &ord->refunds[i]) != 0)
			return;
		if (ec_money_add(listed, ord->refunds[i].amount,
		    &listed) != 0) {
			ec_problem(ev, "/refunds", "/refunds: total out of "
			    "range");
			return;
		}
	}
	rc = shopify_money(ev, o, "current_total_price", "", EC_F_NONNEG,
	    &ord->current_total);
	if (rc < 0)
		return;
	if (rc == 1)
		ord->current_total = ord->gross - listed > 0 ?
		    ord->gross - listed : 0;

	shopify_customer(ev, o);
	ord->landing_site = ec_text(json_object_get(o, "landing_site"), 2000);
	ord->referring_site = ec_text(json_object_get(o, "referring_site"),
	    2000);
	ord->note_attributes = ec_name_values(json_object_get(o,
	    "note_attributes"));
	if ((ord->attribution_token = ec_attr_token(json_object_get(o,
	    "note_attributes"))) == NULL)
		ord->attribution_token = ec_url_token(ord->landing_site);
}

/* Parse a Shopify delivery. */
int
shopify_parse(const void *body, size_t len, const struct ec_parse_opts *opts,
    struct ec_event *ev, char **cause)
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
	if (topic == NULL) {
		ec_problem(ev, "", "no X-Shopify-Topic header");
	} else if (shopify_in(topic, shopify_order_topics)) {
		ev->kind = EC_ORDER;
		shopify_order(ev, root, opts);
	} else if (strcmp(topic, "orders/delete") == 0) {
		ev->kind = EC_DELETE;
		if ((ev->order.id = shopify_order_id(ev, root)) != NULL)
			ev->entity_id = xstrdup(ev->order.id);
	} else if (strcmp(topic, "refunds/create") == 0) {
		ev->kind = EC_REFUND;
		if (shopify_refund(ev, root, "", opts, NULL, NULL,
		    &ev->refund) == 0)
			ev->entity_id = xstrdup(ev->refund.id);
	} else {
		ev->kind = EC_IGNORED;
		xasprintf(&ev->problem, "topic %s is not used by musubi",
		    topic);
	}
	json_decref(root);
	return (0);
}
