/* SPDX-License-Identifier: ISC */
/*
 * test_woocommerce.c -- the WooCommerce parser against the recorded
 * deliveries in webhooks/woocommerce/: the unsigned creation ping, the
 * secret decoding WooCommerce applies before signing, orders as they move
 * from on-hold to paid, refunded and completed, the attribution meta data,
 * guests, deletions and ignored resources; then bad inputs.
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

/* Read a file under webhooks/woocommerce: new buffer, NUL-terminated. */
static char *
load(const char *name, size_t *len)
{
	char	 path[512], *buf;
	FILE	*f;
	long	 n;

	snprintf(path, sizeof path, "%s/webhooks/woocommerce/%s",
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
	char			 file[128], *body, *topic, *cause = NULL;
	size_t			 len;

	snprintf(file, sizeof file, "%s.json", cas);
	body = load(file, &len);
	topic = header(cas, "X-WC-Webhook-Topic");
	memset(&o, 0, sizeof o);
	o.topic = topic;
	o.currency = "JPY";
	assert_int_equal(woocommerce_parse(body, len, &o, ev, &cause), 0);
	assert_null(cause);
	free(body);
	free(topic);
}

/* Parse a document built by a test as order.updated. */
static void
parse_json(json_t *j, struct ec_event *ev)
{
	struct ec_parse_opts	 o;
	char			*s = json_dumps(j, JSON_COMPACT), *cause = NULL;

	memset(&o, 0, sizeof o);
	o.topic = "order.updated";
	o.currency = "JPY";
	assert_int_equal(woocommerce_parse(s, strlen(s), &o, ev, &cause), 0);
	free(s);
}

/* A recorded body as a tree. */
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

static void
test_woocommerce_ping(void **state)
{
	size_t	 len;
	char	*body = load("ping.form", &len);

	assert_true(woocommerce_is_ping(body, len));
	free(body);
	assert_true(woocommerce_is_ping("webhook_id=7\n", 13));
	assert_false(woocommerce_is_ping("webhook_id=", 11));
	assert_false(woocommerce_is_ping("webhook_id=42&x=1", 17));
	assert_false(woocommerce_is_ping("{\"webhook_id\":42}", 17));
	assert_false(woocommerce_is_ping(NULL, 0));
}

static void
test_woocommerce_secret_decoding(void **state)
{
	const char	*body = "{\"id\":1}";
	unsigned char	 mac[CRYPTO_SHA256_LEN];
	char		*sig, *key;

	key = woocommerce_secret("a&amp;b&#039;c&lt;&gt;&quot;&amp;lt;");
	assert_string_equal(key, "a&b'c<>\"&lt;");
	free(key);
	/* WooCommerce signed with the decoded secret. */
	crypto_hmac_sha256("s&t", 3, body, strlen(body), mac);
	sig = crypto_base64(mac, sizeof mac);
	key = woocommerce_secret("s&amp;t");
	assert_int_equal(crypto_verify_hmac_b64(key, strlen(key), body,
	    strlen(body), sig), 0);
	free(key);
	free(sig);
}

static void
test_woocommerce_samples_are_signed(void **state)
{
	const char *const cases[] = { "order-created", "order-updated-paid",
	    "order-updated-refund", "order-updated-completed",
	    "order-deleted", "product-updated", NULL };
	char	 file[128], *body, *sig;
	size_t	 i, len;

	for (i = 0; cases[i] != NULL; i++) {
		snprintf(file, sizeof file, "%s.json", cases[i]);
		body = load(file, &len);
		sig = header(cases[i], "X-WC-Webhook-Signature");
		assert_int_equal(crypto_verify_hmac_b64(SECRET,
		    strlen(SECRET), body, len, sig), 0);
		body[0] = ' ';
		assert_int_equal(crypto_verify_hmac_b64(SECRET,
		    strlen(SECRET), body, len, sig), -1);
		free(body);
		free(sig);
	}
	assert_null(header("ping", "X-WC-Webhook-Signature"));
}

static void
test_woocommerce_order_created_unpaid(void **state)
{
	struct ec_event		 ev;
	const struct ec_order	*o = &ev.order;

	parse_case("order-created", &ev);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_null(ev.problem);
	assert_string_equal(o->id, "727");
	assert_string_equal(o->number, "727");
	assert_string_equal(o->status, "on-hold");
	assert_string_equal(o->financial_status, "unpaid");
	assert_string_equal(o->paid_at, "");
	assert_string_equal(o->placed_at, "2025-02-03T12:10:11Z");
	assert_string_equal(o->updated_at, "2025-02-03T12:10:12Z");
	assert_int_equal(o->gross, M(6600));
	assert_int_equal(o->current_total, M(6600));
	assert_int_equal(o->nitems, 3);
	assert_string_equal(o->items[0].line_id, "315");
	assert_string_equal(o->items[0].product_id, "93");
	assert_null(o->items[0].variant_id);
	assert_string_equal(o->items[2].variant_id, "101");
	assert_string_equal(o->items[0].title, "草餅 6個入り");
	assert_int_equal(o->items[0].quantity, 2);
	assert_int_equal(o->items[0].price, M(1200));
	assert_int_equal(o->items[0].total, M(2400));
	/* customer_id 0: a guest, keyed by the billing email */
	assert_null(o->customer.id);
	assert_string_equal(o->customer.key, "guest:e7618498e1a319bc7d5a4029"
	    "9818b35c8eef4c26e860c7ae1907f51d0bde72bb");
	assert_string_equal(o->customer.phone_hash, "e30a6d022e821b98484186e"
	    "da8dcaff5ac117bf1e46c330f1f14ed485131c59b");
	assert_string_equal(o->customer.last_name, "佐藤");
	assert_string_equal(o->attribution_token, "v1.d29vLXRva2Vu.sig");
	assert_string_equal(o->referring_site, "https://liff.line.me/");
	assert_non_null(strstr(o->landing_site, "/product/mochi/"));
	assert_string_equal(o->source_name, "checkout");
	ec_event_free(&ev);
}

static void
test_woocommerce_paid_refunded_completed(void **state)
{
	struct ec_event	 ev;

	parse_case("order-updated-paid", &ev);
	assert_string_equal(ev.order.paid_at, "2025-02-04T01:00:00Z");
	assert_string_equal(ev.order.financial_status, "paid");
	ec_event_free(&ev);

	parse_case("order-updated-refund", &ev);
	assert_int_equal(ev.order.nrefunds, 1);
	assert_string_equal(ev.order.refunds[0].id, "731");
	assert_string_equal(ev.order.refunds[0].order_id, "727");
	assert_int_equal(ev.order.refunds[0].amount, M(1100));
	assert_true(ev.order.refunds[0].estimated);
	assert_string_equal(ev.order.refunds[0].created_at,
	    "2025-02-05T06:30:00Z");
	assert_string_equal(ev.order.refunds[0].note, "わらび餅 品切れ");
	assert_int_equal(ev.order.gross, M(6600));
	assert_int_equal(ev.order.current_total, M(5500));
	ec_event_free(&ev);

	parse_case("order-updated-completed", &ev);
	assert_string_equal(ev.order.status, "completed");
	assert_string_equal(ev.order.paid_at, "2025-02-04T01:00:00Z");
	ec_event_free(&ev);
}

static void
test_woocommerce_deleted_and_ignored(void **state)
{
	struct ec_event	 ev;

	parse_case("order-deleted", &ev);
	assert_int_equal(ev.kind, EC_DELETE);
	assert_string_equal(ev.order.id, "727");
	ec_event_free(&ev);
	parse_case("product-updated", &ev);
	assert_int_equal(ev.kind, EC_IGNORED);
	ec_event_free(&ev);
}

static void
test_woocommerce_status_rules(void **state)
{
	json_t		*j = sample("order-created");
	struct ec_event	 ev;

	/* processing without date_paid (cash on delivery) is unpaid */
	json_object_set_new(j, "status", json_string("processing"));
	parse_json(j, &ev);
	assert_string_equal(ev.order.paid_at, "");
	ec_event_free(&ev);
	/* completed counts as paid */
	json_object_set_new(j, "status", json_string("completed"));
	parse_json(j, &ev);
	assert_string_equal(ev.order.paid_at, "2025-02-03T12:10:12Z");
	ec_event_free(&ev);
	/* cancelled: dated by the snapshot */
	json_object_set_new(j, "status", json_string("cancelled"));
	parse_json(j, &ev);
	assert_string_equal(ev.order.cancelled_at, "2025-02-03T12:10:12Z");
	assert_string_equal(ev.order.paid_at, "");
	ec_event_free(&ev);
	json_decref(j);
}

static void
test_woocommerce_bad_values(void **state)
{
	json_t		*j = sample("order-updated-refund"), *li;
	struct ec_event	 ev;

	li = json_array_get(json_object_get(j, "line_items"), 1);
	json_object_set_new(li, "quantity", json_integer(-1));
	parse_json(j, &ev);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/line_items/1/quantity");
	ec_event_free(&ev);

	json_object_set_new(li, "quantity", json_integer(1));
	json_object_set_new(li, "subtotal", json_string("1e30"));
	parse_json(j, &ev);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/line_items/1/subtotal");
	ec_event_free(&ev);

	/* no subtotal: the float price is read, rounded to millionths */
	json_object_del(li, "subtotal");
	json_object_set_new(li, "price", json_real(0.1));
	json_object_del(li, "total");
	parse_json(j, &ev);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_int_equal(ev.order.items[1].price, 100000);
	assert_int_equal(ev.order.items[1].total, 100000);
	ec_event_free(&ev);
	json_object_set_new(li, "price", json_real(1e30));
	parse_json(j, &ev);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/line_items/1/price");
	ec_event_free(&ev);

	json_object_set_new(li, "price", json_integer(1100));
	json_object_set_new(json_array_get(json_object_get(j, "refunds"), 0),
	    "total", json_string("1100.00"));
	parse_json(j, &ev);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_int_equal(ev.order.refunds[0].amount, M(1100));
	assert_int_equal(ev.nflags, 1);
	ec_event_free(&ev);

	json_object_set_new(j, "currency", json_string("EUR"));
	parse_json(j, &ev);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_int_equal(ev.nflags, 2);
	ec_event_free(&ev);

	json_object_del(j, "currency");
	parse_json(j, &ev);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/currency");
	ec_event_free(&ev);

	json_object_set_new(j, "currency", json_string("JPY"));
	json_object_set_new(j, "total", json_string("-10"));
	parse_json(j, &ev);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/total");
	ec_event_free(&ev);

	json_object_set_new(j, "total", json_string("10"));
	json_object_set_new(j, "id", json_real(727.5));
	parse_json(j, &ev);
	assert_int_equal(ev.kind, EC_INVALID);
	assert_string_equal(ev.path, "/id");
	ec_event_free(&ev);
	json_decref(j);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_woocommerce_ping),
		cmocka_unit_test(test_woocommerce_secret_decoding),
		cmocka_unit_test(test_woocommerce_samples_are_signed),
		cmocka_unit_test(test_woocommerce_order_created_unpaid),
		cmocka_unit_test(test_woocommerce_paid_refunded_completed),
		cmocka_unit_test(test_woocommerce_deleted_and_ignored),
		cmocka_unit_test(test_woocommerce_status_rules),
		cmocka_unit_test(test_woocommerce_bad_values),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
