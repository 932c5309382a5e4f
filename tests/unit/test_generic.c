/* SPDX-License-Identifier: ISC */
/*
 * test_generic.c -- musubi's own order/refund format against the recorded
 * deliveries in webhooks/generic/ (including a cart template that renders
 * every value as a string), the errors it answers with their JSON
 * pointers, and the pure helpers every parser shares: exact decimal money,
 * ISO 8601 times, ids, contact hashes and attribution tokens.
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

/* Read a file under webhooks/generic: new buffer, NUL-terminated. */
static char *
load(const char *name, size_t *len)
{
	char	 path[512], *buf;
	FILE	*f;
	long	 n;

	snprintf(path, sizeof path, "%s/webhooks/generic/%s",
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

/* Parse a recorded delivery. */
static void
parse_case(const char *cas, struct ec_event *ev)
{
	struct ec_parse_opts	 o;
	char			 file[128], *body, *cause = NULL;
	size_t			 len;

	snprintf(file, sizeof file, "%s.json", cas);
	body = load(file, &len);
	memset(&o, 0, sizeof o);
	o.currency = "JPY";
	assert_int_equal(generic_parse(body, len, &o, ev, &cause), 0);
	assert_null(cause);
	free(body);
}

/* Parse a document built by a test. */
static void
parse_json(json_t *j, struct ec_event *ev)
{
	struct ec_parse_opts	 o;
	char			*s = json_dumps(j, JSON_COMPACT), *cause = NULL;

	memset(&o, 0, sizeof o);
	o.currency = "JPY";
	assert_int_equal(generic_parse(s, strlen(s), &o, ev, &cause), 0);
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

/* Expect ev to be refused at path. */
static void
refused(struct ec_event *ev, const char *path)
{
	assert_int_equal(ev->kind, EC_INVALID);
	assert_non_null(ev->problem);
	assert_string_equal(ev->path, path);
	ec_event_free(ev);
}

static void
test_generic_samples_are_signed(void **state)
{
	const char *const cases[] = { "order-pending", "order-paid",
	    "order-cancelled", "refund", "order-template-strings", NULL };
	char	 file[128], *body, *hdr, *sig;
	size_t	 i, len;

	for (i = 0; cases[i] != NULL; i++) {
		snprintf(file, sizeof file, "%s.json", cases[i]);
		body = load(file, &len);
		snprintf(file, sizeof file, "%s.headers", cases[i]);
		hdr = load(file, NULL);
		assert_int_equal(strncmp(hdr, "X-Musubi-Signature: ", 20), 0);
		sig = hdr + 20;
		sig[strcspn(sig, "\n")] = '\0';
		assert_int_equal(crypto_verify_hmac_b64(SECRET,
		    strlen(SECRET), body, len, sig), 0);
		free(body);
		free(hdr);
	}
}

static void
test_generic_order_paid(void **state)
{
	struct ec_event		 ev;
	const struct ec_order	*o = &ev.order;

	parse_case("order-paid", &ev);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_string_equal(ev.event_id, "EC5001-2025-03-01T10:00:05+09:00");
	assert_string_equal(o->id, "EC5001");
	assert_string_equal(o->number, "5001");
	assert_string_equal(o->status, "注文確定");
	assert_string_equal(o->placed_at, "2025-03-01T01:00:00Z");
	assert_string_equal(o->paid_at, "2025-03-01T01:00:05Z");
	assert_int_equal(o->gross, M(8800));
	assert_int_equal(o->current_total, M(8800));
	assert_int_equal(o->nitems, 3);
	assert_int_equal(o->items[0].total, M(3300));
	/* total defaults to price x quantity */
	assert_int_equal(o->items[1].total, M(3300));
	assert_null(o->items[1].variant_id);
	assert_string_equal(o->customer.key, "C-20931");
	assert_string_equal(o->customer.email_hash, "50f81da749d2190b5a0c3055"
	    "1d425920c9b4340c5bf72bd34da146af7ce9828f");
	assert_string_equal(o->customer.phone_hash, "c80d1a35c99d2564217910"
	    "180590dbe770c90f9bb81bce322a237b7925929944");
	assert_string_equal(o->attribution_token, "v1.Z2VuZXJpYw.sig");
	assert_int_equal(json_array_size(o->note_attributes), 1);
	ec_event_free(&ev);

	parse_case("order-pending", &ev);
	assert_string_equal(ev.order.paid_at, "");
	ec_event_free(&ev);
	parse_case("order-cancelled", &ev);
	assert_string_equal(ev.order.cancelled_at, "2025-03-04T03:00:00Z");
	ec_event_free(&ev);
}

static void
test_generic_refund(void **state)
{
	struct ec_event	 ev;

	parse_case("refund", &ev);
	assert_int_equal(ev.kind, EC_REFUND);
	assert_string_equal(ev.entity_id, "R-5001-1");
	assert_string_equal(ev.refund.order_id, "EC5001");
	assert_int_equal(ev.refund.amount, M(3300));
	assert_string_equal(ev.refund.created_at, "2025-03-02T06:00:00Z");
	assert_int_equal(ev.refund.nitems, 1);
	assert_string_equal(ev.refund.items[0].line_id, "EC5001-2");
	ec_event_free(&ev);
}

static void
test_generic_template_strings(void **state)
{
	struct ec_event	 ev;

	parse_case("order-template-strings", &ev);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_false(ev.order.test);
	assert_string_equal(ev.order.placed_at, "2025-03-03T02:20:00Z");
	assert_string_equal(ev.order.paid_at, "2025-03-03T02:20:00Z");
	assert_string_equal(ev.order.cancelled_at, "");
	assert_int_equal(ev.order.items[0].quantity, 1);
	assert_int_equal(ev.order.items[0].total, M(4400));
	assert_null(ev.order.items[0].line_id);
	assert_string_equal(ev.order.customer.last_name, "伊藤 花子");
	assert_string_equal(ev.order.customer.phone_hash, "");
	assert_null(ev.order.landing_site);
	assert_string_equal(ev.order.attribution_token, "v1.dGVtcGxhdGU.sig");
	ec_event_free(&ev);
}

static void
test_generic_errors_name_the_value(void **state)
{
	json_t		*j = sample("order-paid"), *o, *it;
	struct ec_event	 ev;

	o = json_object_get(j, "order");
	it = json_array_get(json_object_get(o, "items"), 0);
	json_object_set_new(it, "quantity", json_integer(-1));
	parse_json(j, &ev);
	refused(&ev, "/order/items/0/quantity");
	json_object_set_new(it, "quantity", json_string("2x"));
	parse_json(j, &ev);
	refused(&ev, "/order/items/0/quantity");
	json_object_set_new(it, "quantity", json_integer(2));
	json_object_set_new(it, "price", json_real(1e30));
	parse_json(j, &ev);
	refused(&ev, "/order/items/0/price");
	json_object_set_new(it, "price", json_string("1e30"));
	parse_json(j, &ev);
	refused(&ev, "/order/items/0/price");
	json_object_set_new(it, "price", json_real(16.5));
	parse_json(j, &ev);
	refused(&ev, "/order/items/0/price");
	json_object_set_new(it, "price", json_string("1650"));

	json_object_set_new(o, "currency", json_string("USD"));
	parse_json(j, &ev);
	refused(&ev, "/order/currency");
	json_object_set_new(o, "currency", json_string("JPY"));
	json_object_set_new(o, "placed_at", json_string("2025-03-01 10:00:00"));
	parse_json(j, &ev);
	assert_non_null(strstr(ev.problem, "offset"));
	refused(&ev, "/order/placed_at");
	json_object_set_new(o, "placed_at", json_integer(1740790800));
	json_object_del(o, "updated_at");
	parse_json(j, &ev);
	refused(&ev, "/order/updated_at");
	json_object_set_new(o, "updated_at", json_string("2025-03-01T10:00:05"
	    "+09:00"));
	json_object_set_new(o, "test", json_string("maybe"));
	parse_json(j, &ev);
	refused(&ev, "/order/test");
	json_object_set_new(o, "test", json_false());
	json_object_set_new(o, "id", json_string(""));
	parse_json(j, &ev);
	refused(&ev, "/order/id");
	json_object_set_new(o, "id", json_string("EC5001"));
	json_object_set_new(o, "items", json_object());
	parse_json(j, &ev);
	refused(&ev, "/order/items");
	json_object_del(o, "items");
	parse_json(j, &ev);
	assert_int_equal(ev.kind, EC_ORDER);
	assert_int_equal(ev.order.nitems, 0);
	ec_event_free(&ev);

	json_object_set_new(j, "type", json_string("fulfillment"));
	parse_json(j, &ev);
	refused(&ev, "/type");
	json_decref(j);

	j = sample("refund");
	o = json_object_get(j, "refund");
	json_object_set_new(o, "amount", json_string("-3300"));
	parse_json(j, &ev);
	refused(&ev, "/refund/amount");
	json_object_set_new(o, "amount", json_string("3300"));
	json_object_set_new(o, "currency", json_string("USD"));
	parse_json(j, &ev);
	refused(&ev, "/refund/currency");
	json_object_del(o, "currency");
	json_object_del(o, "order_id");
	parse_json(j, &ev);
	refused(&ev, "/refund/order_id");
	json_decref(j);
}

static void
test_generic_money(void **state)
{
	const char	*why;
	int64_t		 v;
	char		 buf[EC_MONEY_LEN];
	json_t		*j;

	assert_int_equal(ec_money_str("1234", &v, &why), 0);
	assert_int_equal(v, M(1234));
	assert_int_equal(ec_money_str("-0.50", &v, &why), 0);
	assert_int_equal(v, -500000);
	assert_int_equal(ec_money_str("0007.1000000", &v, &why), 0);
	assert_int_equal(v, 7100000);
	assert_int_equal(ec_money_str("999999999999.999999", &v, &why), 0);
	assert_int_equal(v, EC_MONEY_MAX);
	assert_int_equal(ec_money_str("1000000000000", &v, &why), -1);
	assert_int_equal(ec_money_str("1.0000001", &v, &why), -1);
	assert_int_equal(ec_money_str("1e3", &v, &why), -1);
	assert_int_equal(ec_money_str("", &v, &why), -1);
	assert_int_equal(ec_money_str(".5", &v, &why), -1);
	assert_int_equal(ec_money_str("5.", &v, &why), -1);
	assert_int_equal(ec_money_str(" 5", &v, &why), -1);
	assert_int_equal(ec_money_str("--5", &v, &why), -1);
	assert_int_equal(ec_money_str("NaN", &v, &why), -1);

	ec_money_format(M(1234), buf);
	assert_string_equal(buf, "1234");
	ec_money_format(-500000, buf);
	assert_string_equal(buf, "-0.5");
	ec_money_format(1, buf);
	assert_string_equal(buf, "0.000001");
	ec_money_format(EC_MONEY_MAX, buf);
	assert_string_equal(buf, "999999999999.999999");
	ec_money_format(0, buf);
	assert_string_equal(buf, "0");

	j = json_integer(-42);
	assert_int_equal(ec_money(j, 0, &v, &why), 0);
	assert_int_equal(v, M(-42));
	json_decref(j);
	j = json_real(19.99);
	assert_int_equal(ec_money(j, 0, &v, &why), -1);
	assert_int_equal(ec_money(j, 1, &v, &why), 0);
	assert_int_equal(v, 19990000);
	json_decref(j);
	j = json_integer(INT64_MAX);
	assert_int_equal(ec_money(j, 1, &v, &why), -1);
	json_decref(j);
	assert_int_equal(ec_money_mul(EC_MONEY_MAX, 2, &v), -1);
	assert_int_equal(ec_money_add(EC_MONEY_MAX, 1, &v), -1);
	assert_int_equal(ec_money_mul(M(1100), 3, &v), 0);
	assert_int_equal(v, M(3300));
}

static void
test_generic_times(void **state)
{
	char		 out[EC_TIME_LEN];
	const char	*why;
	json_t		*j;

	assert_int_equal(ec_time_str("2025-01-06T19:00:00+09:00", 0, out,
	    &why), 0);
	assert_string_equal(out, "2025-01-06T10:00:00Z");
	assert_int_equal(ec_time_str("2025-01-01T08:59:59.5+0900", 0, out,
	    &why), 0);
	assert_string_equal(out, "2024-12-31T23:59:59.500000Z");
	assert_int_equal(ec_time_str("2024-02-29 23:30:00-05:30", 0, out,
	    &why), 0);
	assert_string_equal(out, "2024-03-01T05:00:00Z");
	assert_int_equal(ec_time_str("2025-02-03T12:10:11", EC_TIME_UTC, out,
	    &why), 0);
	assert_string_equal(out, "2025-02-03T12:10:11Z");
	assert_int_equal(ec_time_str("2025-02-03T12:10", EC_TIME_UTC, out,
	    &why), 0);
	assert_string_equal(out, "2025-02-03T12:10:00Z");
	assert_int_equal(ec_time_str("2025-02-03T12:10:11.123456789Z", 0, out,
	    &why), 0);
	assert_string_equal(out, "2025-02-03T12:10:11.123456Z");
	assert_int_equal(ec_time_str("9999-12-31T23:59:59Z", 0, out, &why), 0);

	assert_int_equal(ec_time_str("2025-02-03T12:10:11", 0, out, &why), -1);
	assert_int_equal(ec_time_str("2023-02-29T00:00:00Z", 0, out, &why),
	    -1);
	assert_int_equal(ec_time_str("2025-13-01T00:00:00Z", 0, out, &why),
	    -1);
	assert_int_equal(ec_time_str("2025-01-01T24:00:00Z", 0, out, &why),
	    -1);
	assert_int_equal(ec_time_str("1969-12-31T23:59:59Z", 0, out, &why),
	    -1);
	assert_int_equal(ec_time_str("1970-01-01T08:00:00+09:00", 0, out,
	    &why), -1);
	assert_int_equal(ec_time_str("2025-01-01", 0, out, &why), -1);
	assert_int_equal(ec_time_str("2025-01-01T00:00:00Zjunk", 0, out,
	    &why), -1);
	assert_int_equal(ec_time_str("", 0, out, &why), -1);

	j = json_integer(1740968400);
	assert_int_equal(ec_time(j, EC_TIME_EPOCH, out, &why), 0);
	assert_string_equal(out, "2025-03-03T02:20:00Z");
	assert_int_equal(ec_time(j, 0, out, &why), -1);
	json_decref(j);
	j = json_integer(-1);
	assert_int_equal(ec_time(j, EC_TIME_EPOCH, out, &why), -1);
	json_decref(j);
}

static void
test_generic_ids_hashes_tokens(void **state)
{
	const char	*why;
	char		*s, a[EC_HASH_LEN], b[EC_HASH_LEN];
	json_t		*j;

	j = json_integer(INT64_MAX);
	s = ec_id(j, &why);
	assert_string_equal(s, "9223372036854775807");
	free(s);
	json_decref(j);
	j = json_integer(-1);
	assert_null(ec_id(j, &why));
	json_decref(j);
	j = json_real(1.5);
	assert_null(ec_id(j, &why));
	json_decref(j);
	j = json_string("a\tb");
	assert_null(ec_id(j, &why));
	json_decref(j);
	j = json_string("ORD-１");
	s = ec_id(j, &why);
	assert_string_equal(s, "ORD-１");
	free(s);
	json_decref(j);

	j = json_string("あいうえお");
	s = ec_text(j, 3);
	assert_string_equal(s, "あいう");
	free(s);
	json_decref(j);

	ec_phone_hash("090-1234-5678", a);
	ec_phone_hash("+81 90 1234 5678", b);
	assert_string_equal(a, b);
	ec_phone_hash("0081 90 1234 5678", b);
	assert_string_equal(a, b);
	ec_phone_hash("(090) 1234-5678 ext", b);
	assert_string_equal(b, "");
	ec_phone_hash("123", b);
	assert_string_equal(b, "");
	ec_email_hash("  Hanako.Yamada@Example.JP ", a);
	ec_email_hash("hanako.yamada@example.jp", b);
	assert_string_equal(a, b);
	ec_email_hash("not-an-email", b);
	assert_string_equal(b, "");
	ec_email_hash("a@b@c", b);
	assert_string_equal(b, "");

	s = ec_url_token("/p?utm_source=line&musubi_t=v1.a-b_c.d#x");
	assert_string_equal(s, "v1.a-b_c.d");
	free(s);
	s = ec_url_token("https://x.jp/?musubi_t=abc%2Fd&y=1");
	assert_string_equal(s, "abc%2Fd");
	free(s);
	assert_null(ec_url_token("https://x.jp/?xmusubi_t=abc"));
	assert_null(ec_url_token("https://x.jp/#?musubi_t=abc"));
	assert_null(ec_url_token("https://x.jp/?musubi_t="));
	assert_null(ec_url_token(NULL));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_generic_samples_are_signed),
		cmocka_unit_test(test_generic_order_paid),
		cmocka_unit_test(test_generic_refund),
		cmocka_unit_test(test_generic_template_strings),
		cmocka_unit_test(test_generic_errors_name_the_value),
		cmocka_unit_test(test_generic_money),
		cmocka_unit_test(test_generic_times),
		cmocka_unit_test(test_generic_ids_hashes_tokens),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
