/* SPDX-License-Identifier: ISC */
/*
 * test_shopify.c -- the Shopify parser against the recorded deliveries in
 * webhooks/shopify/: their signatures, exact 64-bit ids, shop-money
 * amounts, line items, customers and contact hashes, attribution tokens,
 * embedded and standalone refunds, cancellation, test and guest orders,
 * deletions and ignored topics; then the bad inputs (negative quantity,
 * absurd or real-valued amounts, real-valued ids, foreign currency, bad
 * times, non-JSON, huge numbers), each refused or flagged with its path.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "musubi/crypto.h"
#include "musubi/ec.h"

#define SECRET		"musubi-sample-secret"
#define M(x)		((int64_t)(x) * EC_MONEY_SCALE)

/* Read a file under webhooks/shopify: new buffer, NUL-terminated. */
static char *
load(const char *name, size_t *len)
{
	char	 path[512], *buf;
	FILE	*f;
	long	 n;

	snprintf(path, sizeof path, "%s/webhooks/shopify/%s",
	    MUSUBI_SOURCE_DIR, name);
	if ((f = fopen(path, "rb")) == NULL)
		fail_msg("cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	if (len != NULL)
		*len = (size_t)n;
	return (buf);
}

/* A header of a recorded delivery: new string or NULL. */
static char *
header(const char *cas, const char *name)
{
	char	 file[128], *text, *line, *save = NULL, *v = NULL;
	size_t	 n = strlen(name);

	snprintf(file, sizeof file, "%s.headers", cas);
	text = load(file, NULL);
	for (line = strtok_r(text, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
			v = strdup(line + n + 2);
			break;
		}
	}
	free(text);
	return (v);
}

/* Parse a recorded delivery with its own topic header. */
static void
parse_case(const char *cas, struct ec_event *ev)
{
	struct ec_parse_opts	 o;
	char			 file[128], *body, *topic, *trig, *cause = NULL;
	size_t			 len;

	snprintf(file, sizeof file, "%s.json", cas);
	body = load(file, &len);
	topic = header(cas, "X-Shopify-Topic");
	trig = header(cas, "X-Shopify-Triggered-At");
	memset(&o, 0, sizeof o);
	o.topic = topic;
	o.currency = "JPY";
	assert_int_equal(shopify_parse(body, len, &o, ev, &cause), 0);
	assert_null(cause);
	free(body);
	free(topic);
	free(trig);
}

/* Parse a JSON document (built by a test) as topic. */
static int
parse_json(json_t *j, const char *topic, struct ec_event *ev)
{
	struct ec_parse_opts	 o;
	char			*s = json_dumps(j, JSON_COMPACT), *cause = NULL;
	int			 rc;

	memset(&o, 0, sizeof o);
	o.topic = topic;
	o.currency = "JPY";
	rc = shopify_parse(s, strlen(s), &o, ev, &cause);
	free(cause);
	free(s);
	return (rc);
}

/* The orders-create sample as a tree. */
static json_t *
sample(const char *cas)
{
	char	 file[128], *s;
	json_t	*j;

	snprintf(file, sizeof file, "%s.json", cas);
	s = load(file, NULL);
	j = json_loads(s, 0, NULL);
	free(s);
	assert_non_null(j);
	return (j);
}

/* Tell whether one of ev's flags contains s. */
static int
has_flag(const struct ec_event *ev, const char *s)
{
	size_t	 i;

	for (i = 0; i < ev->nflags; i++) {
		if (strstr(ev->flags[i], s) != NULL)
			return (1);
	}
	return (0);
}

static void
test_shopify_samples_are_signed(void **state)
{
	const char *const cases[] = { "orders-create", "orders-paid",
	    "refunds-create", "orders-updated", "orders-cancelled",
	    "orders-create-paid", "orders-create-test", "orders-create-guest",
	    "orders-delete", "app-uninstalled", NULL };
	char	 file[128], *body, *sig;
	size_t	 i, len;

	for (i = 0; cases[i] != NULL; i++) {
		snprintf(file, sizeof file, "%s.json", cases[i]);
		body = load(file, &len);
		sig = header(cases[i], "X-Shopify-Hmac-Sha256");
		assert_non_null(sig);
		assert_int_equal(crypto_verify_hmac_b64(SECRET,
		    strlen(SECRET), body, len, sig), 0);
		body[len / 2] ^= 1;
		assert_int_equal(crypto_verify_hmac_b64(SECRET,
		    strlen(SECRET), body, len, sig), -1);
		assert_int_equal(crypto_verify_hmac_b64("other-secret", 12,
		    body, len, sig), -1);
		free(body);
		free(sig);
	}
}

static void
test_shopify_order_create(void **state)
{
	struct ec_event		 ev;
	const struct ec_order	*o = &ev.order;

	parse_case("orders-create", &ev);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_null(ev.problem);
	/* Above 2^53: exact, never through a double. */
	assert_string_equal(o->id, "820982911946154508");
	assert_string_equal(ev.entity_id, "820982911946154508");
	assert_string_equal(o->number, "#1001");
	assert_string_equal(o->currency, "JPY");
	assert_string_equal(o->financial_status, "pending");
	assert_string_equal(o->status, "open");
	assert_string_equal(o->placed_at, "2025-01-06T10:00:00Z");
	assert_string_equal(o->updated_at, "2025-01-06T10:00:01Z");
	assert_string_equal(o->paid_at, "");
	assert_string_equal(o->cancelled_at, "");
	assert_int_equal(o->gross, M(11000));
	assert_int_equal(o->current_total, M(11000));
	assert_false(o->test);
	assert_int_equal(o->nitems, 3);
	assert_string_equal(o->items[0].line_id, "866550311766439020");
	assert_string_equal(o->items[0].product_id, "632910392");
	assert_string_equal(o->items[0].variant_id, "808950810");
	assert_string_equal(o->items[0].sku, "TEA-SEN-100");
	assert_string_equal(o->items[0].title, "静岡 深蒸し煎茶 100g");
	assert_string_equal(o->items[0].vendor, "musubi茶園");
	assert_int_equal(o->items[0].quantity, 2);
	assert_int_equal(o->items[0].price, M(2200));
	assert_int_equal(o->items[0].total, M(4400));
	assert_string_equal(o->items[1].line_id, "141249953214522974");
	assert_int_equal(o->items[2].total, M(3300));
	assert_true(o->has_customer);
	assert_string_equal(o->customer.id, "115310627314723954");
	assert_string_equal(o->customer.key, "115310627314723954");
	assert_string_equal(o->customer.email_hash, "3889245b9ddadfc4e6eda1"
	    "d3ca9f00aadfd0511568a915a52fe2f9915d5e257b");
	/* "+81 90-1234-5678" in E.164 */
	assert_string_equal(o->customer.phone_hash, "3d06a39d40790f11761295"
	    "e053029378ae28c4b4f6f301693005e079f3d4ca64");
	assert_string_equal(o->customer.first_name, "花子");
	assert_string_equal(o->customer.last_name, "山田");
	/* The cart attribute wins over the landing page. */
	assert_string_equal(o->attribution_token,
	    "v1.Zm9vYmFy.c2lnbmF0dXJl-_x");
	assert_non_null(strstr(o->landing_site, "musubi_t=v1.landingTok_EN"));
	assert_string_equal(o->referring_site, "https://liff.line.me/");
	assert_int_equal(json_array_size(o->note_attributes), 2);
	assert_string_equal(json_string_value(json_object_get(
	    json_array_get(o->note_attributes, 1), "value")), "のし付き");
	assert_int_equal(o->nrefunds, 0);
	assert_int_equal(ev.nflags, 0);
	ec_event_free(&ev);
}

static void
test_shopify_order_paid_sets_paid_at(void **state)
{
	struct ec_event	 ev;

	parse_case("orders-paid", &ev);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_string_equal(ev.order.financial_status, "paid");
	assert_string_equal(ev.order.paid_at, "2025-01-07T01:15:00Z");
	ec_event_free(&ev);
}

static void
test_shopify_refund_create(void **state)
{
	struct ec_event		 ev;
	const struct ec_refund	*r = &ev.refund;

	parse_case("refunds-create", &ev);
	assert_int_equal(ev.kind, EC_REFUND);
	assert_string_equal(ev.entity_id, "929361462");
	assert_string_equal(r->id, "929361462");
	assert_string_equal(r->order_id, "820982911946154508");
	assert_int_equal(r->amount, M(3300));
	assert_string_equal(r->created_at, "2025-01-08T05:00:00Z");
	assert_false(r->estimated);
	assert_string_equal(r->note, "ほうじ茶 破損のため返金");
	assert_int_equal(r->nitems, 1);
	assert_string_equal(r->items[0].line_id, "141249953214522974");
	assert_int_equal(r->items[0].quantity, 1);
	assert_int_equal(r->items[0].amount, M(3300));
	ec_event_free(&ev);
}

static void
test_shopify_updated_lists_refund_and_net(void **state)
{
	struct ec_event	 ev;

	parse_case("orders-updated", &ev);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_int_equal(ev.order.gross, M(11000));
	assert_int_equal(ev.order.current_total, M(7700));
	assert_int_equal(ev.order.nrefunds, 1);
	assert_string_equal(ev.order.refunds[0].id, "929361462");
	assert_int_equal(ev.order.refunds[0].amount, M(3300));
	assert_string_equal(ev.order.paid_at, "2025-01-08T05:00:05Z");
	ec_event_free(&ev);
}

static void
test_shopify_cancelled(void **state)
{
	struct ec_event	 ev;

	parse_case("orders-cancelled", &ev);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_string_equal(ev.order.status, "cancelled");
	assert_string_equal(ev.order.cancel_reason, "customer");
	assert_string_equal(ev.order.cancelled_at, "2025-01-09T00:00:00Z");
	ec_event_free(&ev);
}

static void
test_shopify_test_order_flagged(void **state)
{
	struct ec_event	 ev;

	parse_case("orders-create-test", &ev);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_true(ev.order.test);
	assert_true(has_flag(&ev, "test order"));
	ec_event_free(&ev);
}

static void
test_shopify_guest_keyed_by_email_hash(void **state)
{
	struct ec_event	 ev;

	parse_case("orders-create-guest", &ev);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_null(ev.order.customer.id);
	/* " Guest.Buyer@Example.JP " trimmed and lowercased */
	assert_string_equal(ev.order.customer.key, "guest:942b527db19ff0d49"
	    "78a4f38ab189fdc9db18750e2c94b37f908a5bdabfcbf90");
	assert_string_equal(ev.order.customer.phone_hash, "7d7350df0a907cf9c"
	    "f79b40e32af0a5cc71886126b86babd1f2ccedd25d336c6");
	ec_event_free(&ev);
}

static void
test_shopify_delete_and_ignored(void **state)
{
	struct ec_event	 ev;

	parse_case("orders-delete", &ev);
	assert_int_equal(ev.kind, EC_DELETE);
	assert_string_equal(ev.order.id, "820982911946154511");
	ec_event_free(&ev);
	parse_case("app-uninstalled", &ev);
	assert_int_equal(ev.kind, EC_IGNORED);
	assert_non_null(strstr(ev.problem, "app/uninstalled"));
	assert_null(ec_event_doc(&ev));
	ec_event_free(&ev);
}

static void
test_shopify_doc_keeps_exact_strings(void **state)
{
	struct ec_event	 ev;
	json_t		*doc, *o;

	parse_case("orders-updated", &ev);
	doc = ec_event_doc(&ev);
	assert_string_equal(json_string_value(json_object_get(doc, "kind")),
	    "order");
	o = json_object_get(doc, "order");
	assert_string_equal(json_string_value(json_object_get(o, "id")),
	    "820982911946154508");
	assert_string_equal(json_string_value(json_object_get(o, "gross")),
	    "11000");
	assert_string_equal(json_string_value(json_object_get(o,
	    "current_total")), "7700");
	assert_string_equal(json_string_value(json_object_get(json_array_get(
	    json_object_get(o, "items"), 1), "line_id")),
	    "141249953214522974");
	assert_string_equal(json_string_value(json_object_get(json_array_get(
	    json_object_get(o, "refunds"), 0), "amount")), "3300");
	assert_string_equal(json_string_value(json_object_get(json_object_get(
	    o, "customer"), "key")), "115310627314723954");
	json_decref(doc);
	ec_event_free(&ev);
}

static void
test_shopify_negative_quantity_refused(void **state)
{
	json_t		*j = sample("orders-create");
	struct ec_event	 ev;

	json_object_set_new(json_array_get(json_object_get(j, "line_items"),
	    0), "quantity", json_integer(-3));
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/line_items/0/quantity");
	assert_non_null(strstr(ev.problem, "negative"));
	assert_null(ec_event_doc(&ev));
	ec_event_free(&ev);
	json_decref(j);
}

static void
test_shopify_absurd_price_refused(void **state)
{
	json_t		*j = sample("orders-create"), *li;
	struct ec_event	 ev;

	li = json_array_get(json_object_get(j, "line_items"), 1);
	json_object_del(li, "price_set");
	json_object_set_new(li, "price", json_string("1e30"));
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/line_items/1/price");
	ec_event_free(&ev);

	json_object_set_new(li, "price", json_real(1e30));
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/line_items/1/price");
	ec_event_free(&ev);

	json_object_set_new(li, "price", json_string("1000000000000"));
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_non_null(strstr(ev.problem, "out of range"));
	ec_event_free(&ev);

	/* Within range, but price x quantity is not. */
	json_object_set_new(li, "price", json_string("999999999999"));
	json_object_set_new(li, "quantity", json_integer(1000));
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/line_items/1");
	ec_event_free(&ev);

	json_object_set_new(li, "quantity", json_integer(EC_QUANTITY_MAX + 1));
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/line_items/1/quantity");
	ec_event_free(&ev);
	json_decref(j);
}

static void
test_shopify_negative_total_refused(void **state)
{
	json_t		*j = sample("orders-create");
	struct ec_event	 ev;

	json_object_set_new(json_object_get(json_object_get(j,
	    "total_price_set"), "shop_money"), "amount", json_string("-5"));
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/total_price_set/shop_money/amount");
	ec_event_free(&ev);
	json_decref(j);
}

static void
test_shopify_real_id_falls_back_to_gid(void **state)
{
	json_t		*j = sample("orders-create");
	struct ec_event	 ev;

	json_object_set_new(j, "id", json_real(820982911946154508.0));
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_string_equal(ev.order.id, "820982911946154508");
	assert_true(has_flag(&ev, "admin_graphql_api_id"));
	ec_event_free(&ev);

	json_object_del(j, "admin_graphql_api_id");
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/id");
	ec_event_free(&ev);

	/* A real-valued product id is dropped, not rounded. */
	json_object_set_new(j, "id", json_integer(INT64_MAX));
	json_object_set_new(json_array_get(json_object_get(j, "line_items"),
	    0), "product_id", json_real(6.3e8));
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_string_equal(ev.order.id, "9223372036854775807");
	assert_null(ev.order.items[0].product_id);
	assert_true(has_flag(&ev, "product_id dropped"));
	ec_event_free(&ev);
	json_decref(j);
}

static void
test_shopify_foreign_currency_flagged(void **state)
{
	json_t		*j = sample("orders-create");
	struct ec_event	 ev;

	json_object_set_new(j, "currency", json_string("USD"));
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_string_equal(ev.order.currency, "USD");
	assert_true(has_flag(&ev, "not the shop's JPY"));
	ec_event_free(&ev);

	json_object_set_new(j, "currency", json_string("yen"));
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/currency");
	ec_event_free(&ev);
	json_decref(j);
}

static void
test_shopify_bad_times_refused(void **state)
{
	json_t		*j = sample("orders-create");
	struct ec_event	 ev;

	json_object_set_new(j, "processed_at", json_string("2025-02-30T10:00:00"
	    "+09:00"));
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/processed_at");
	ec_event_free(&ev);
	json_object_del(j, "processed_at");
	json_object_del(j, "created_at");
	assert_int_equal(parse_json(j, "orders/create", &ev), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/created_at");
	ec_event_free(&ev);
	json_decref(j);
}

static void
test_shopify_topic_missing_or_body_odd(void **state)
{
	struct ec_parse_opts	 o;
	struct ec_event		 ev;
	char			*cause = NULL;
	const char		*big = "{\"id\": 99999999999999999999}";
	const char		*nul = "{\"id\": 5, \"note\": \"a\\u0000b\", "
	    "\"line_items\": [{\"quantity\": 1, \"price\": \"1\", "
	    "\"title\": \"x\\u0000y\"}], \"currency\": \"JPY\", "
	    "\"total_price\": \"1\", \"created_at\": "
	    "\"2025-01-01T00:00:00Z\"}";

	memset(&o, 0, sizeof o);
	o.currency = "JPY";
	assert_int_equal(shopify_parse("{}", 2, &o, &ev, &cause), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_non_null(strstr(ev.problem, "X-Shopify-Topic"));
	ec_event_free(&ev);

	o.topic = "orders/create";
	assert_int_equal(shopify_parse("not json", 8, &o, &ev, &cause), -1);
	assert_non_null(cause);
	free(cause);
	cause = NULL;
	ec_event_free(&ev);

	/* Valid JSON that cannot be used is stored, marked. */
	assert_int_equal(shopify_parse("[1,2]", 5, &o, &ev, &cause), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	free(cause);
	cause = NULL;
	ec_event_free(&ev);
	assert_int_equal(shopify_parse(big, strlen(big), &o, &ev, &cause), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_non_null(strstr(ev.problem, "out of range"));
	free(cause);
	cause = NULL;
	ec_event_free(&ev);

	/* NUL inside strings is replaced, never truncates. */
	assert_int_equal(shopify_parse(nul, strlen(nul), &o, &ev, &cause), 0);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_string_equal(ev.order.items[0].title, "x\xef\xbf\xbdy");
	ec_event_free(&ev);
}

static void
test_shopify_refund_in_other_currency_uses_items(void **state)
{
	json_t		*j = sample("refunds-create"), *tx;
	struct ec_event	 ev;

	tx = json_array_get(json_object_get(j, "transactions"), 0);
	json_object_set_new(tx, "currency", json_string("USD"));
	json_object_set_new(tx, "amount", json_string("22.00"));
	assert_int_equal(parse_json(j, "refunds/create", &ev), 0);
	assert_int_equal(ev.kind, EC_REFUND);
	assert_int_equal(ev.refund.amount, M(3300));
	assert_true(has_flag(&ev, "another currency"));
	ec_event_free(&ev);

	json_object_set_new(tx, "currency", json_string("JPY"));
	json_object_set_new(tx, "amount", json_string("-1"));
	assert_int_equal(parse_json(j, "refunds/create", &ev), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/transactions/0/amount");
	ec_event_free(&ev);

	json_object_del(j, "order_id");
	json_object_set_new(tx, "amount", json_string("1"));
	assert_int_equal(parse_json(j, "refunds/create", &ev), 0);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/order_id");
	ec_event_free(&ev);
	json_decref(j);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shopify_samples_are_signed),
		cmocka_unit_test(test_shopify_order_create),
		cmocka_unit_test(test_shopify_order_paid_sets_paid_at),
		cmocka_unit_test(test_shopify_refund_create),
		cmocka_unit_test(test_shopify_updated_lists_refund_and_net),
		cmocka_unit_test(test_shopify_cancelled),
		cmocka_unit_test(test_shopify_test_order_flagged),
		cmocka_unit_test(test_shopify_guest_keyed_by_email_hash),
		cmocka_unit_test(test_shopify_delete_and_ignored),
		cmocka_unit_test(test_shopify_doc_keeps_exact_strings),
		cmocka_unit_test(test_shopify_negative_quantity_refused),
		cmocka_unit_test(test_shopify_absurd_price_refused),
		cmocka_unit_test(test_shopify_negative_total_refused),
		cmocka_unit_test(test_shopify_real_id_falls_back_to_gid),
		cmocka_unit_test(test_shopify_foreign_currency_flagged),
		cmocka_unit_test(test_shopify_bad_times_refused),
		cmocka_unit_test(test_shopify_topic_missing_or_body_odd),
		cmocka_unit_test(
		    test_shopify_refund_in_other_currency_uses_items),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
