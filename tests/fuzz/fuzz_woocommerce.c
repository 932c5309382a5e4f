/* SPDX-License-Identifier: ISC */
/*
 * fuzz_woocommerce.c -- libFuzzer target for the WooCommerce parser.  Any
 * bytes, read as an order and a deletion, must parse or fail cleanly;
 * an event that parses must render its normalized document, and the
 * values it holds must stay inside the documented bounds.  The bytes also
 * go through the ping test and the secret decoding.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "musubi/ec.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* Abort unless the event respects the parser's contract. */
static void
check(const struct ec_event *ev)
{
	const struct ec_order	*o = &ev->order;
	json_t			*doc;
	char			*s;
	size_t			 i;

	if ((ev->kind == EC_INVALID) != (ev->problem != NULL &&
	    ev->path != NULL))
		abort();
	if (ev->kind == EC_ORDER) {
		if (o->id == NULL || o->placed_at[0] == '\0' ||
		    o->gross < 0 || o->gross > EC_MONEY_MAX ||
		    o->current_total < 0 || o->current_total > EC_MONEY_MAX)
			abort();
		for (i = 0; i < o->nitems; i++) {
			if (o->items[i].quantity < 0 ||
			    o->items[i].quantity > EC_QUANTITY_MAX ||
			    o->items[i].price < 0 || o->items[i].total < 0)
				abort();
		}
		if (strlen(o->placed_at) < 20 ||
		    o->placed_at[strlen(o->placed_at) - 1] != 'Z')
			abort();
	}
	if (ev->kind == EC_REFUND && (ev->refund.id == NULL ||
	    ev->refund.order_id == NULL || ev->refund.amount < 0))
		abort();
	doc = ec_event_doc(ev);
	if ((doc != NULL) != (ev->kind == EC_ORDER || ev->kind == EC_REFUND ||
	    ev->kind == EC_DELETE))
		abort();
	if (doc != NULL) {
		if ((s = json_dumps(doc, JSON_COMPACT)) == NULL)
			abort();
		free(s);
		json_decref(doc);
	}
}

/* Run one input. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const topics[] = { "order.created",
	    "order.deleted" };
	char			*str;
	struct ec_parse_opts	 o;
	struct ec_event		 ev;
	char			*cause;
	size_t			 i;

	memset(&o, 0, sizeof o);
	o.currency = "JPY";
	o.triggered_at = "2025-01-01T00:00:00Z";
	for (i = 0; i < 2; i++) {
		o.topic = topics[i];
		cause = NULL;
		if (woocommerce_parse(data, size, &o, &ev, &cause) == 0)
			check(&ev);
		else if (cause == NULL)
			abort();
		ec_event_free(&ev);
		free(cause);
	}
	(void)woocommerce_is_ping(data, size);
	str = malloc(size + 1);
	memcpy(str, data, size);
	str[size] = '\0';
	free(woocommerce_secret(str));
	free(str);
	return (0);
}
