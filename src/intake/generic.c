/* SPDX-License-Identifier: ISC */
/*
 * generic.c -- turn a verified body in musubi's own order/refund format
 * (webhooks/generic/order.schema.json, refund.schema.json) into an
 * ec_event.  Pure: no I/O.
 *
 * The format is for carts that template their own payloads (ecforce,
 * EC-CUBE, makeshop, custom code), so it is lenient where templates are
 * clumsy -- "" means absent, integers and booleans may come as strings,
 * times may be Unix seconds -- and strict everywhere else: an event that
 * breaks the schema is refused with the JSON pointer of the first bad
 * value (the intake answers 422 and stores nothing), and so is an amount
 * or refund in a currency other than the shop's.  Unknown members are
 * ignored.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/ec.h"
#include "musubi/xmalloc.h"

#define GF	EC_F_LENIENT	/* every read of this format is lenient */

/* A string member; refuses non-strings. */
static int
generic_text(struct ec_event *ev, const json_t *obj, const char *key,
    const char *parent, size_t max, char **out)
{
	const json_t	*v = ec_member(obj, key, GF);

	*out = NULL;
	if (v == NULL)
		return (1);
	if (!json_is_string(v)) {
		ec_problem(ev, parent, "%s/%s: not a string", parent, key);
		return (-1);
	}
	*out = ec_text(v, max);
	return (0);
}

/* Check the currency of an event against the shop's. */
static int
generic_currency(struct ec_event *ev, const json_t *obj, const char *parent,
    int flags, const struct ec_parse_opts *opts, char **out)
{
	char	 path[64];
	int	 rc;

	rc = ec_get_currency(ev, obj, "currency", parent, GF | flags, out);
	if (rc != 0)
		return (rc);
	if (opts->currency != NULL && strcmp(*out, opts->currency) != 0) {
		snprintf(path, sizeof path, "%s/currency", parent);
		ec_problem(ev, path, "%s: %s is not the shop's currency (%s)",
		    path, *out, opts->currency);
		return (-1);
	}
	return (0);
}

/* Read one item of an order. */
static int
generic_item(struct ec_event *ev, const json_t *it, const char *path,
    struct ec_item *out)
{
	int	 rc;

	if (!json_is_object(it)) {
		ec_problem(ev, path, "%s: not an object", path);
		return (-1);
	}
	if (ec_get_id(ev, it, "id", path, GF, &out->line_id) < 0 ||
	    ec_get_id(ev, it, "product_id", path, GF, &out->product_id) < 0 ||
	    ec_get_id(ev, it, "variant_id", path, GF, &out->variant_id) < 0 ||
	    generic_text(ev, it, "sku", path, 200, &out->sku) < 0 ||
	    generic_text(ev, it, "title", path, 500, &out->title) < 0 ||
	    generic_text(ev, it, "vendor", path, 200, &out->vendor) < 0 ||
	    ec_get_quantity(ev, it, "quantity", path, GF | EC_F_REQUIRED,
	    &out->quantity) != 0 ||
	    ec_get_money(ev, it, "price", path, GF | EC_F_REQUIRED |
	    EC_F_NONNEG, &out->price) != 0)
		return (-1);
	rc = ec_get_money(ev, it, "total", path, GF | EC_F_NONNEG,
	    &out->total);
	if (rc < 0)
		return (-1);
	if (rc == 1 && ec_money_mul(out->price, out->quantity,
	    &out->total) != 0) {
		ec_problem(ev, path, "%s: price x quantity out of range", path);
		return (-1);
	}
	return (0);
}

/* Read the customer of an order. */
static int
generic_customer(struct ec_event *ev, const json_t *o)
{
	struct ec_customer	*c = &ev->order.customer;
	const json_t		*cu = ec_member(o, "customer", GF);
	char			*email = NULL, *phone = NULL;

	if (cu == NULL)
		return (0);
	if (!json_is_object(cu)) {
		ec_problem(ev, "/order/customer", "/order/customer: not an "
		    "object");
		return (-1);
	}
	if (ec_get_id(ev, cu, "id", "/order/customer", GF, &c->id) < 0 ||
	    generic_text(ev, cu, "email", "/order/customer", 254,
	    &email) < 0 ||
	    generic_text(ev, cu, "phone", "/order/customer", 40, &phone) < 0 ||
	    generic_text(ev, cu, "first_name", "/order/customer", 100,
	    &c->first_name) < 0 ||
	    generic_text(ev, cu, "last_name", "/order/customer", 100,
	    &c->last_name) < 0) {
		free(email);
		free(phone);
		return (-1);
	}
	if (c->first_name == NULL && c->last_name == NULL &&
	    generic_text(ev, cu, "name", "/order/customer", 200,
	    &c->last_name) < 0) {
		free(email);
		free(phone);
		return (-1);
	}
	ec_email_hash(email, c->email_hash);
	ec_phone_hash(phone, c->phone_hash);
	if (email != NULL && c->email_hash[0] == '\0')
		ec_flag(ev, "/order/customer/email is not an email address");
	free(email);
	free(phone);
	if (c->id != NULL)
		c->key = xstrdup(c->id);
	else if (c->email_hash[0] != '\0')
		xasprintf(&c->key, "guest:%s", c->email_hash);
	ev->order.has_customer = c->key != NULL;
	return (0);
}

/* Read an order event. */
static void
generic_order(struct ec_event *ev, const json_t *o,
    const struct ec_parse_opts *opts)
{
	struct ec_order	*ord = &ev->order;
	const json_t	*items, *v, *attrs;
	char		 path[64];
	size_t		 i;
	int		 rc;

	if (!json_is_object(o)) {
		ec_problem(ev, "/order", "/order is required and must be an "
		    "object");
		return;
	}
	if (ec_get_id(ev, o, "id", "/order", GF | EC_F_REQUIRED,
	    &ord->id) != 0)
		return;
	ev->entity_id = xstrdup(ord->id);
	if (generic_text(ev, o, "number", "/order", 64, &ord->number) < 0 ||
	    generic_currency(ev, o, "/order", EC_F_REQUIRED, opts,
	    &ord->currency) != 0 ||
	    generic_text(ev, o, "status", "/order", 32, &ord->status) < 0 ||
	    generic_text(ev, o, "financial_status", "/order", 32,
	    &ord->financial_status) < 0 ||
	    generic_text(ev, o, "source_name", "/order", 64,
	    &ord->source_name) < 0 ||
	    ec_get_bool(ev, o, "test", "/order", GF, &ord->test) < 0 ||
	    ec_get_time(ev, o, "placed_at", "/order", GF | EC_F_REQUIRED |
	    EC_TIME_EPOCH, ord->placed_at) != 0 ||
	    ec_get_time(ev, o, "updated_at", "/order", GF | EC_F_REQUIRED |
	    EC_TIME_EPOCH, ord->updated_at) != 0 ||
	    ec_get_time(ev, o, "paid_at", "/order", GF | EC_TIME_EPOCH,
	    ord->paid_at) < 0 ||
	    ec_get_time(ev, o, "cancelled_at", "/order", GF | EC_TIME_EPOCH,
	    ord->cancelled_at) < 0 ||
	    ec_get_money(ev, o, "total", "/order", GF | EC_F_REQUIRED |
	    EC_F_NONNEG, &ord->gross) != 0)
		return;
	if (ord->test)
		ec_flag(ev, "a test order: kept out of revenue");
	rc = ec_get_money(ev, o, "current_total", "/order", GF | EC_F_NONNEG,
	    &ord->current_total);
	if (rc < 0)
		return;
	if (rc == 1)
		ord->current_total = ord->gross;

	items = ec_member(o, "items", GF);
	if (items != NULL && !json_is_array(items)) {
		ec_problem(ev, "/order/items", "/order/items: not an array");
		return;
	}
	if (json_array_size(items) > EC_ITEMS_MAX) {
		ec_problem(ev, "/order/items", "/order/items: more than %d",
		    EC_ITEMS_MAX);
		return;
	}
	if (json_array_size(items) > 0)
		ord->items = xcalloc(json_array_size(items),
		    sizeof *ord->items);
	json_array_foreach(items, i, v) {
		snprintf(path, sizeof path, "/order/items/%zu", i);
		ord->nitems++;
		if (generic_item(ev, v, path, &ord->items[i]) != 0)
			return;
	}
	if (generic_customer(ev, o) != 0 ||
	    generic_text(ev, o, "landing_site", "/order", 2000,
	    &ord->landing_site) < 0 ||
	    generic_text(ev, o, "referring_site", "/order", 2000,
	    &ord->referring_site) < 0 ||
	    generic_text(ev, o, "attribution_token", "/order", EC_TOKEN_MAX,
	    &ord->attribution_token) < 0)
		return;
	attrs = ec_member(o, "attributes", GF);
	if (attrs != NULL && !json_is_array(attrs)) {
		ec_problem(ev, "/order/attributes", "/order/attributes: not an "
		    "array");
		return;
	}
	ord->note_attributes = ec_name_values(attrs);
	if (ord->attribution_token == NULL &&
	    (ord->attribution_token = ec_attr_token(attrs)) == NULL)
		ord->attribution_token = ec_url_token(ord->landing_site);
}

/* Read a refund event. */
static void
generic_refund(struct ec_event *ev, const json_t *r,
    const struct ec_parse_opts *opts)
{
	struct ec_refund	*rf = &ev->refund;
	const json_t		*items, *v;
	char			 path[64], *cur = NULL;
	size_t			 i;

	if (!json_is_object(r)) {
		ec_problem(ev, "/refund", "/refund is required and must be an "
		    "object");
		return;
	}
	if (ec_get_id(ev, r, "id", "/refund", GF | EC_F_REQUIRED,
	    &rf->id) != 0)
		return;
	ev->entity_id = xstrdup(rf->id);
	if (ec_get_id(ev, r, "order_id", "/refund", GF | EC_F_REQUIRED,
	    &rf->order_id) != 0 ||
	    generic_currency(ev, r, "/refund", 0, opts, &cur) < 0 ||
	    ec_get_money(ev, r, "amount", "/refund", GF | EC_F_REQUIRED |
	    EC_F_NONNEG, &rf->amount) != 0 ||
	    ec_get_time(ev, r, "created_at", "/refund", GF | EC_F_REQUIRED |
	    EC_TIME_EPOCH, rf->created_at) != 0 ||
	    generic_text(ev, r, "note", "/refund", 500, &rf->note) < 0) {
		free(cur);
		return;
	}
	free(cur);
	items = ec_member(r, "items", GF);
	if (items != NULL && !json_is_array(items)) {
		ec_problem(ev, "/refund/items", "/refund/items: not an array");
		return;
	}
	if (json_array_size(items) > EC_ITEMS_MAX) {
		ec_problem(ev, "/refund/items", "/refund/items: more than %d",
		    EC_ITEMS_MAX);
		return;
	}
	if (json_array_size(items) > 0)
		rf->items = xcalloc(json_array_size(items), sizeof *rf->items);
	json_array_foreach(items, i, v) {
		snprintf(path, sizeof path, "/refund/items/%zu", i);
		rf->nitems++;
		if (!json_is_object(v)) {
			ec_problem(ev, path, "%s: not an object", path);
			return;
		}
		if (ec_get_id(ev, v, "item_id", path, GF,
		    &rf->items[i].line_id) < 0 ||
		    ec_get_quantity(ev, v, "quantity", path, GF,
		    &rf->items[i].quantity) < 0 ||
		    ec_get_money(ev, v, "amount", path, GF | EC_F_NONNEG,
		    &rf->items[i].amount) < 0)
			return;
	}
}

/* Parse a generic delivery. */
int
generic_parse(const void *body, size_t len, const struct ec_parse_opts *opts,
    struct ec_event *ev, char **cause)
{
	json_t		*root;
	const json_t	*t;
	const char	*type;
	int		 storable;

	memset(ev, 0, sizeof *ev);
	if ((root = ec_load(body, len, &storable, cause)) == NULL) {
		if (!storable)
			return (-1);
		ec_problem(ev, "", "%s", *cause);
		return (0);
	}
	if (ec_get_id(ev, root, "event_id", "", GF, &ev->event_id) < 0)
		goto done;
	t = json_object_get(root, "type");
	type = json_is_string(t) ? json_string_value(t) : NULL;
	if (type != NULL && strcmp(type, "order") == 0) {
		ev->kind = EC_ORDER;
		generic_order(ev, json_object_get(root, "order"), opts);
	} else if (type != NULL && strcmp(type, "refund") == 0) {
		ev->kind = EC_REFUND;
		generic_refund(ev, json_object_get(root, "refund"), opts);
	} else
		ec_problem(ev, "/type", "/type must be \"order\" or "
		    "\"refund\"");
done:
	json_decref(root);
	return (0);
}
