# SPDX-License-Identifier: ISC
"""Shop purchase webhooks end to end: real musubid, real PostgreSQL, the
recorded deliveries of webhooks/{shopify,woocommerce,generic}, signed here.

Covers the Shopify create -> paid -> refund -> cancel sequence with exact
ledger rows and rollups, replays and shuffled orders converging on the same
totals, a refund before its order, an order of an unknown customer linked
later, every bad-input case (signature, shop, JSON, absurd values), the
WooCommerce ping and flow, the generic format and its 422s, and secret
rotation."""
import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import threading
import time

from musubi_test import MusubiTestCase, SOURCE_DIR, main

SECRET = "musubi-sample-secret"
WEBHOOKS = os.path.join(SOURCE_DIR, "webhooks")
SIG_HEADERS = {"shopify": "X-Shopify-Hmac-Sha256",
               "woocommerce": "X-WC-Webhook-Signature",
               "generic": "X-Musubi-Signature"}
ROUTES = {"shopify": "shopify", "woocommerce": "woocommerce",
          "generic": "ec"}

SHOPIFY_FLOW = ["orders-create", "orders-paid", "refunds-create",
                "orders-updated", "orders-cancelled", "orders-create-paid",
                "orders-create-test", "orders-create-guest"]


def sign(secret, body):
    return base64.b64encode(hmac.new(secret.encode(), body,
                                     hashlib.sha256).digest()).decode()


def recorded(platform, case):
    """(body bytes, headers dict) of a recorded delivery."""
    d = os.path.join(WEBHOOKS, platform)
    for ext in (".json", ".form"):
        p = os.path.join(d, case + ext)
        if os.path.exists(p):
            with open(p, "rb") as f:
                body = f.read()
            break
    headers = {}
    with open(os.path.join(d, case + ".headers")) as f:
        for line in f.read().splitlines():
            k, v = line.split(":", 1)
            headers[k.strip()] = v.strip()
    return body, headers


def deliver(port, platform, shop, body, headers=None, secret=SECRET,
            sign_it=True):
    """POST a body; sign it with secret unless sign_it is False."""
    h = dict(headers or {})
    for k in list(h):
        if k.lower() == SIG_HEADERS[platform].lower():
            del h[k]
    if sign_it:
        h[SIG_HEADERS[platform]] = sign(secret, body)
    h.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/webhooks/%s/%s" % (ROUTES[platform], shop),
                     body=body, headers=h)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def deliver_case(port, platform, shop, case, secret=SECRET, **kw):
    body, headers = recorded(platform, case)
    headers.update(kw.pop("extra", {}))
    return deliver(port, platform, shop, body, headers, secret, **kw)


def wait_applied(db, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if db.sql("SELECT count(*) FROM ec_webhook_events "
                  "WHERE state = 0") == [["0"]]:
            return
        time.sleep(0.05)
    raise AssertionError("shop events still pending after %ds" % timeout)


def create_shop(t, channel, slug, platform, key=None, **extra):
    body = {"slug": slug, "name": slug.title(), "platform": platform,
            "webhook_secret": SECRET}
    body.update(extra)
    r = t.d.post("/api/v1/channels/%s/shops" % channel, body,
                 key=key or t.admin)
    t.assertEqual(r.status, 201, r)
    return r.json()


class Base(MusubiTestCase):
    def setUp(self):
        super().setUp()
        self.create_channel("shop")

    def send(self, platform, shop, case, expect=200, **kw):
        st, body = deliver_case(self.d.port, platform, shop, case, **kw)
        self.assertEqual(st, expect, (case, body))
        return body

    def stats(self, channel="shop"):
        """customer_stats of a channel, keyed by the customer's external id."""
        rows = self.db.sql(
            "SELECT c.external_id, s.orders_count, s.net_revenue, "
            "to_char(s.first_purchase_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS'), "
            "to_char(s.last_purchase_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS'), s.aov "
            "FROM customer_stats s JOIN customers c "
            "ON c.channel_id = s.channel_id AND c.id = s.customer_id "
            "JOIN channels ch ON ch.id = s.channel_id "
            "WHERE ch.slug = '%s' ORDER BY 1" % channel)
        return {r[0]: r[1:] for r in rows}

    def ledger(self, channel="shop"):
        return self.db.sql(
            "SELECT o.external_id, l.kind, l.ref, l.amount::numeric(19,2), "
            "to_char(l.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') "
            "FROM ledger l JOIN orders o ON o.channel_id = l.channel_id "
            "AND o.id = l.order_id JOIN channels ch ON ch.id = l.channel_id "
            "WHERE ch.slug = '%s' ORDER BY 1, 2, 3" % channel)

    def orders(self, channel="shop"):
        return self.db.sql(
            "SELECT o.external_id, o.revenue_state, o.net::numeric(19,2) "
            "FROM orders o JOIN channels ch ON ch.id = o.channel_id "
            "WHERE ch.slug = '%s' ORDER BY 1" % channel)


HANAKO = "115310627314723954"
ORDER1 = "820982911946154508"
ORDER2 = "820982911946154509"


class ShopifySequence(Base):
    def test_create_paid_refund_cancel_exact_numbers(self):
        create_shop(self, "shop", "demo", "shopify",
                    shop_domain="musubi-demo.myshopify.com")
        db = self.db

        self.send("shopify", "demo", "orders-create")
        wait_applied(db)
        # Konbini, not paid yet: stored, not revenue.
        self.assertEqual(self.orders(), [[ORDER1, "unpaid", "0.00"]])
        self.assertEqual(self.stats(), {HANAKO: ["0", "0.000000", "", "",
                                                 ""]})
        self.assertEqual(self.ledger(), [])
        # Exact ids, items, attribution.
        self.assertEqual(db.sql(
            "SELECT i.line_id, i.product_id, i.quantity, i.price::int, "
            "i.total::int, i.title FROM order_items i ORDER BY position"),
            [["866550311766439020", "632910392", "2", "2200", "4400",
              "静岡 深蒸し煎茶 100g"],
             ["141249953214522974", "632910393", "1", "3300", "3300",
              "ほうじ茶 200g"],
             ["518995019", "921728736", "1", "3300", "3300",
              "有田焼 湯呑み"]])
        self.assertEqual(db.sql(
            "SELECT attribution_token, order_number, currency, "
            "gross::int FROM orders"),
            [["v1.Zm9vYmFy.c2lnbmF0dXJl-_x", "#1001", "JPY", "11000"]])

        self.send("shopify", "demo", "orders-paid")
        wait_applied(db)
        self.assertEqual(self.orders(), [[ORDER1, "counted", "11000.00"]])
        self.assertEqual(self.stats()[HANAKO],
                         ["1", "11000.000000", "2025-01-06T10:00:00",
                          "2025-01-06T10:00:00", "11000.00"])

        self.send("shopify", "demo", "refunds-create")
        wait_applied(db)
        self.assertEqual(self.orders(), [[ORDER1, "counted", "7700.00"]])
        self.assertEqual(self.ledger(), [
            [ORDER1, "refund", "929361462", "-3300.00",
             "2025-01-08T05:00:00"],
            [ORDER1, "sale", "", "11000.00", "2025-01-06T10:00:00"]])
        self.assertEqual(self.stats()[HANAKO][:2], ["1", "7700.000000"])

        # The update that follows the refund agrees: no adjustment.
        self.send("shopify", "demo", "orders-updated")
        wait_applied(db)
        self.assertEqual(len(self.ledger()), 2)
        self.assertEqual(self.stats()[HANAKO][:2], ["1", "7700.000000"])

        self.send("shopify", "demo", "orders-cancelled")
        wait_applied(db)
        self.assertEqual(self.ledger(), [
            [ORDER1, "cancel", "", "-7700.00", "2025-01-09T00:00:00"],
            [ORDER1, "refund", "929361462", "-3300.00",
             "2025-01-08T05:00:00"],
            [ORDER1, "sale", "", "11000.00", "2025-01-06T10:00:00"]])
        self.assertEqual(self.orders(), [[ORDER1, "counted", "0.00"]])
        # Worth nothing now: no order, no recency.
        self.assertEqual(self.stats()[HANAKO], ["0", "0.000000", "", "",
                                                ""])

        self.send("shopify", "demo", "orders-create-paid")
        self.send("shopify", "demo", "orders-create-test")
        wait_applied(db)
        self.assertEqual(self.stats()[HANAKO],
                         ["1", "5500.000000", "2025-01-10T03:30:00",
                          "2025-01-10T03:30:00", "5500.00"])
        self.assertEqual(self.orders(), [
            [ORDER1, "counted", "0.00"], [ORDER2, "counted", "5500.00"],
            ["820982911946154510", "test", "0.00"]])

        # RFM inputs and the job: one customer with purchases.
        db.sql("SELECT * FROM musubi_ec_rfm()")
        self.assertEqual(db.sql("SELECT rfm_r, rfm_f, rfm_m FROM "
                                "customer_stats WHERE orders_count > 0"),
                         [["1", "1", "1"]])

        # The customer is linked to a friend later: the friend's rollup
        # follows in the same transaction.
        db.sql("INSERT INTO friends (channel_id, user_id, status) "
               "SELECT id, 'U%s', 'following' FROM channels" % ("a" * 32))
        db.sql("WITH l AS (INSERT INTO friend_customer_links (channel_id, "
               "friend_id, customer_id, method) SELECT f.channel_id, f.id, "
               "c.id, 'api' FROM friends f JOIN customers c ON "
               "c.channel_id = f.channel_id WHERE c.external_id = '%s' "
               "RETURNING channel_id, customer_id, friend_id) "
               "SELECT musubi_ec_refresh(channel_id, ARRAY[customer_id], "
               "ARRAY[friend_id]) FROM l" % HANAKO)
        self.assertEqual(db.sql(
            "SELECT orders_count, net_revenue, aov FROM friend_stats"),
            [["1", "5500.000000", "5500.00"]])
        # Later purchases reach the friend through the link.
        self.send("shopify", "demo", "orders-create-guest")
        body, headers = recorded("shopify", "orders-create-paid")
        o = json.loads(body)
        o["id"] = 820982911946154599
        o["name"] = "#1099"
        o["processed_at"] = "2025-02-01T12:00:00+09:00"
        headers["X-Shopify-Webhook-Id"] = "later-order"
        st, _ = deliver(self.d.port, "shopify", "demo",
                        json.dumps(o).encode(), headers)
        self.assertEqual(st, 200)
        wait_applied(db)
        self.assertEqual(db.sql(
            "SELECT orders_count, net_revenue, aov, "
            "to_char(last_purchase_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') "
            "FROM friend_stats"),
            [["2", "11000.000000", "5500.00", "2025-02-01"]])
        db.sql("SELECT * FROM musubi_ec_rfm()")
        self.assertEqual(db.sql("SELECT rfm_r, rfm_f, rfm_m FROM "
                                "friend_stats"), [["1", "1", "1"]])
        self.assertNotIn("ERROR", self.d.logtext())

    def test_out_of_order_update_does_not_regress(self):
        create_shop(self, "shop", "demo", "shopify")
        self.send("shopify", "demo", "orders-cancelled")
        wait_applied(self.db)
        self.send("shopify", "demo", "orders-paid")
        self.send("shopify", "demo", "orders-create")
        wait_applied(self.db)
        self.assertEqual(self.db.sql(
            "SELECT status, financial_status, to_char(cancelled_at AT TIME "
            "ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI') FROM orders"),
            [["cancelled", "partially_refunded", "2025-01-09T00:00"]])
        # The cancelled snapshot listed its refund: it waits for nothing.
        self.assertEqual(self.orders(), [[ORDER1, "counted", "0.00"]])
        # Paid from the first snapshot that said so, whatever came first.
        self.assertEqual(self.db.sql(
            "SELECT to_char(paid_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI') FROM orders"),
            [["2025-01-07T01:15"]])

    def test_refund_before_its_order_waits(self):
        create_shop(self, "shop", "demo", "shopify")
        self.send("shopify", "demo", "refunds-create")
        wait_applied(self.db)
        self.assertEqual(self.db.sql(
            "SELECT external_id, order_external_id, order_id IS NULL, "
            "amount::int FROM refunds"),
            [["929361462", ORDER1, "t", "3300"]])
        self.assertEqual(self.db.sql("SELECT count(*) FROM orders"), [["0"]])
        self.assertEqual(self.db.sql(
            "SELECT state FROM ec_webhook_events"), [["1"]])
        self.send("shopify", "demo", "orders-paid")
        wait_applied(self.db)
        self.assertEqual(self.db.sql("SELECT order_id IS NULL FROM refunds"),
                         [["f"]])
        self.assertEqual(self.orders(), [[ORDER1, "counted", "7700.00"]])
        self.assertEqual(self.stats()[HANAKO][:2], ["1", "7700.000000"])


class ReplayAndShuffle(Base):
    def snapshot(self, channel):
        return (self.stats(channel), self.ledger(channel),
                self.orders(channel),
                self.db.sql("SELECT c.external_id, c.guest, c.email_hash "
                            "FROM customers c JOIN channels ch ON "
                            "ch.id = c.channel_id WHERE ch.slug = '%s' "
                            "ORDER BY 1" % channel),
                self.db.sql("SELECT o.external_id, i.position, i.quantity, "
                            "i.total FROM order_items i JOIN orders o ON "
                            "o.channel_id = i.channel_id AND "
                            "o.id = i.order_id JOIN channels ch ON "
                            "ch.id = o.channel_id WHERE ch.slug = '%s' "
                            "ORDER BY 1, 2" % channel))

    def run_set(self, channel, shop, cases, mode):
        if mode == "concurrent":
            errs = []

            def one(c):
                st, b = deliver_case(self.d.port, "shopify", shop, c)
                if st != 200:
                    errs.append((c, st, b))
            ts = [threading.Thread(target=one, args=(c,)) for c in cases]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            self.assertEqual(errs, [])
        else:
            for c in cases:
                self.send("shopify", shop, c)
                if mode == "apply-each":
                    wait_applied(self.db)
        wait_applied(self.db)

    def test_replayed_and_shuffled_deliveries_give_the_same_totals(self):
        rnd = random.Random(20250106)
        modes = ["in-order", "apply-each", "concurrent", "apply-each",
                 "burst", "concurrent"]
        snaps = []
        for n, mode in enumerate(modes):
            ch = "perm%d" % n
            self.create_channel(ch)
            create_shop(self, ch, "s%d" % n, "shopify")
            cases = list(SHOPIFY_FLOW)
            if n > 0:
                rnd.shuffle(cases)
            self.run_set(ch, "s%d" % n, cases, mode)
            first = self.snapshot(ch)
            # Replays, shuffled again, change nothing.
            events = self.db.sql("SELECT count(*) FROM ec_webhook_events")
            rnd.shuffle(cases)
            self.run_set(ch, "s%d" % n, cases + cases[:3], mode)
            self.assertEqual(self.db.sql("SELECT count(*) FROM "
                                         "ec_webhook_events"), events)
            self.assertEqual(self.snapshot(ch), first, (mode, cases))
            snaps.append(first)
        for s in snaps[1:]:
            self.assertEqual(s, snaps[0])
        stats, ledger, orders = snaps[0][:3]
        self.assertEqual(stats[HANAKO], ["1", "5500.000000",
                                         "2025-01-10T03:30:00",
                                         "2025-01-10T03:30:00", "5500.00"])
        self.assertEqual(len(stats), 2)     # Hanako and the guest
        self.assertEqual(
            sum(float(r[3]) for r in ledger), 5500.0 + 5500.0)


class BadInput(Base):
    def setUp(self):
        super().setUp()
        create_shop(self, "shop", "demo", "shopify",
                    shop_domain="musubi-demo.myshopify.com")

    def count(self):
        return int(self.db.sql("SELECT count(*) FROM ec_webhook_events")
                   [0][0])

    def test_bad_or_missing_hmac_401_nothing_stored(self):
        body, h = recorded("shopify", "orders-create")
        port = self.d.port
        self.assertEqual(deliver(port, "shopify", "demo", body, h,
                                 secret="wrong-secret")[0], 401)
        self.assertEqual(deliver(port, "shopify", "demo", body, h,
                                 sign_it=False)[0], 401)
        h2 = dict(h)
        h2["X-Shopify-Hmac-Sha256"] = sign(SECRET, body)
        self.assertEqual(deliver(port, "shopify", "demo", body + b" ", h2,
                                 sign_it=False)[0], 401)
        h2["X-Shopify-Hmac-Sha256"] = "not base64!"
        self.assertEqual(deliver(port, "shopify", "demo", body, h2,
                                 sign_it=False)[0], 401)
        # hex instead of base64 is refused too
        h2["X-Shopify-Hmac-Sha256"] = hmac.new(SECRET.encode(), body,
                                               hashlib.sha256).hexdigest()
        self.assertEqual(deliver(port, "shopify", "demo", body, h2,
                                 sign_it=False)[0], 401)
        self.assertEqual(self.count(), 0)
        self.assertIn("invalid signature", self.d.logtext())

    def test_unknown_shop_and_wrong_platform_404(self):
        create_shop(self, "shop", "woo", "woocommerce")
        self.assertEqual(deliver_case(self.d.port, "shopify", "nope",
                                      "orders-create")[0], 404)
        self.assertEqual(deliver_case(self.d.port, "shopify", "woo",
                                      "orders-create")[0], 404)
        self.assertEqual(deliver_case(self.d.port, "woocommerce", "demo",
                                      "order-created")[0], 404)
        # Slugs that cannot exist never reach PostgreSQL.
        for bad in ("%FF", "De-Mo", "a%00b", "-x", "x" * 64):
            self.assertEqual(deliver_case(self.d.port, "shopify", bad,
                                          "orders-create")[0], 404, bad)
            r = self.d.get("/api/v1/channels/shop/shops/" + bad,
                           key=self.admin)
            self.assertEqual(r.status, 404, bad)
        self.assertEqual(self.count(), 0)

    def test_shop_domain_mismatch_403(self):
        st, _ = deliver_case(self.d.port, "shopify", "demo",
                             "orders-create", extra={
                                 "X-Shopify-Shop-Domain":
                                 "other.myshopify.com"})
        self.assertEqual(st, 403)
        self.assertEqual(self.count(), 0)

    def test_not_json_400_nothing_stored(self):
        h = {"X-Shopify-Topic": "orders/create"}
        for body in (b"", b"{", b"not json", b"\xff\xfe{}", b"1e999",
                     b"{\"a\": 1e999}"):
            st, _ = deliver(self.d.port, "shopify", "demo", body, h)
            self.assertIn(st, (400, 401), body)
        self.assertEqual(self.count(), 0)

    def test_duplicates_200_counted_once(self):
        for _ in range(3):
            self.send("shopify", "demo", "orders-create-paid")
        # The same event through a second subscription: new webhook id,
        # same order: stored twice, counted once.
        self.send("shopify", "demo", "orders-create-paid",
                  extra={"X-Shopify-Webhook-Id": "second-subscription"})
        wait_applied(self.db)
        self.assertEqual(self.count(), 2)
        self.assertEqual(self.stats()[HANAKO][:2], ["1", "5500.000000"])
        self.assertEqual(len(self.ledger()), 1)

    def test_absurd_values_rejected_or_flagged_with_reason(self):
        body, h = recorded("shopify", "orders-create-paid")
        cases = []
        o = json.loads(body)
        o["line_items"][0]["quantity"] = -2
        cases.append(("neg-qty", o, "/line_items/0/quantity"))
        o = json.loads(body)
        del o["line_items"][1]["price_set"]
        o["line_items"][1]["price"] = "1e30"
        cases.append(("price-1e30", o, "/line_items/1/price"))
        o = json.loads(body)
        del o["line_items"][1]["price_set"]
        o["line_items"][1]["price"] = 1e30
        cases.append(("price-real", o, "/line_items/1/price"))
        o = json.loads(body)
        o["id"] = 8.2e17
        del o["admin_graphql_api_id"]
        cases.append(("real-id", o, "/id"))
        for name, doc, path in cases:
            h2 = dict(h, **{"X-Shopify-Webhook-Id": name})
            st, _ = deliver(self.d.port, "shopify", "demo",
                            json.dumps(doc).encode(), h2)
            self.assertEqual(st, 200, name)
        st, _ = deliver(self.d.port, "shopify", "demo",
                        b'{"id": 123456789012345678901234567890}',
                        dict(h, **{"X-Shopify-Webhook-Id": "huge"}))
        self.assertEqual(st, 200)
        wait_applied(self.db)
        rows = self.db.sql("SELECT delivery_id, state, problem FROM "
                           "ec_webhook_events ORDER BY id")
        self.assertEqual([r[:2] for r in rows],
                         [[c[0], "2"] for c in cases] + [["huge", "2"]])
        for (name, _, path), r in zip(cases, rows):
            self.assertIn(path, r[2], name)
        self.assertIn("out of range", rows[-1][2])
        # The exact body is kept, big numbers and all.
        self.assertEqual(self.db.sql(
            "SELECT payload::text FROM ec_webhook_events "
            "WHERE delivery_id = 'huge'"),
            [['{"id": 123456789012345678901234567890}']])
        self.assertEqual(self.db.sql("SELECT count(*) FROM orders"),
                         [["0"]])
        # The reasons are in the API too.
        r = self.d.get("/api/v1/channels/shop/shops/demo/events?"
                       "state=rejected", key=self.admin)
        self.assertEqual(r.status, 200)
        ev = r.json()["events"]
        self.assertEqual(len(ev), 5)
        self.assertIn("negative", ev[-1]["problem"])

        # A foreign currency is kept, flagged and out of revenue.
        o = json.loads(body)
        o["currency"] = "USD"
        st, _ = deliver(self.d.port, "shopify", "demo",
                        json.dumps(o).encode(),
                        dict(h, **{"X-Shopify-Webhook-Id": "usd"}))
        self.assertEqual(st, 200)
        wait_applied(self.db)
        self.assertEqual(self.orders(),
                         [[ORDER2, "currency_mismatch", "0.00"]])
        flags = self.db.sql("SELECT array_to_string(flags, '|') "
                            "FROM orders")[0][0]
        self.assertIn("not the shop's JPY", flags)
        self.assertEqual(self.ledger(), [])
        # musubid is alive and well.
        self.assertEqual(self.d.get("/healthz").status, 200)

    def test_a_poison_row_does_not_block_the_queue(self):
        # A stored document the applier cannot digest (written behind the
        # parser's back): it alone is rejected, its batch is applied.
        self.db.sql(
            "INSERT INTO ec_webhook_events (channel_id, shop_id, platform, "
            "topic, delivery_id, kind, entity_id, payload, doc) "
            "SELECT channel_id, id, 'shopify', 'orders/create', 'poison', "
            "'order', 'p1', '{}', '{\"kind\": \"order\", \"order\": "
            "{\"id\": \"p1\", \"placed_at\": \"yesterday-ish\", "
            "\"gross\": \"1\", \"current_total\": \"1\", "
            "\"items\": [], \"refunds\": [], \"flags\": []}}' "
            "FROM shops")
        self.send("shopify", "demo", "orders-create-paid")
        wait_applied(self.db)
        rows = self.db.sql("SELECT delivery_id, state, problem FROM "
                           "ec_webhook_events ORDER BY id")
        self.assertEqual([r[:2] for r in rows],
                         [["poison", "2"], [rows[1][0], "1"]])
        self.assertIn("apply failed", rows[0][2])
        self.assertEqual(self.orders(), [[ORDER2, "counted", "5500.00"]])

    def test_unused_topic_stored_and_ignored(self):
        self.send("shopify", "demo", "app-uninstalled")
        wait_applied(self.db)
        self.assertEqual(self.db.sql("SELECT kind, state FROM "
                                     "ec_webhook_events"),
                         [["ignored", "3"]])


class WooCommerce(Base):
    def test_ping_flow_refund_and_delete(self):
        create_shop(self, "shop", "woo", "woocommerce")
        body, h = recorded("woocommerce", "ping")
        st, _ = deliver(self.d.port, "woocommerce", "woo", body, h,
                        sign_it=False)
        self.assertEqual(st, 200)
        self.assertEqual(self.db.sql("SELECT count(*) FROM "
                                     "ec_webhook_events"), [["0"]])
        # Anything else unsigned is refused.
        st, _ = deliver(self.d.port, "woocommerce", "woo", b'{"id":1}',
                        {"X-WC-Webhook-Topic": "order.created"},
                        sign_it=False)
        self.assertEqual(st, 401)

        self.send("woocommerce", "woo", "order-created")
        wait_applied(self.db)
        self.assertEqual(self.orders(), [["727", "unpaid", "0.00"]])
        self.send("woocommerce", "woo", "order-updated-paid")
        self.send("woocommerce", "woo", "order-updated-refund")
        self.send("woocommerce", "woo", "order-updated-completed")
        self.send("woocommerce", "woo", "product-updated")
        wait_applied(self.db)
        self.assertEqual(self.orders(), [["727", "counted", "5500.00"]])
        self.assertEqual(self.ledger(), [
            ["727", "refund", "731", "-1100.00", "2025-02-05T06:30:00"],
            ["727", "sale", "", "6600.00", "2025-02-03T12:10:11"]])
        guest = self.db.sql("SELECT external_id FROM customers")[0][0]
        self.assertTrue(guest.startswith("guest:"))
        self.assertEqual(self.stats()[guest][:2], ["1", "5500.000000"])
        self.assertEqual(self.db.sql(
            "SELECT attribution_token FROM orders"),
            [["v1.d29vLXRva2Vu.sig"]])

        # A refund deleted in WooCommerce drops out of a newer snapshot.
        body, h = recorded("woocommerce", "order-updated-completed")
        o = json.loads(body)
        o["refunds"] = []
        o["date_modified_gmt"] = "2025-02-07T00:00:00"
        h["X-WC-Webhook-Delivery-ID"] = "refund-deleted"
        st, _ = deliver(self.d.port, "woocommerce", "woo",
                        json.dumps(o).encode(), h)
        self.assertEqual(st, 200)
        wait_applied(self.db)
        self.assertEqual(self.orders(), [["727", "counted", "6600.00"]])
        self.assertEqual(len(self.ledger()), 1)
        # Replaying the older snapshot that listed it changes nothing.
        self.send("woocommerce", "woo", "order-updated-refund",
                  extra={"X-WC-Webhook-Delivery-ID": "old-again"})
        wait_applied(self.db)
        self.assertEqual(self.orders(), [["727", "counted", "6600.00"]])

        self.send("woocommerce", "woo", "order-deleted")
        wait_applied(self.db)
        self.assertEqual(self.orders(), [["727", "deleted", "0.00"]])
        self.assertEqual(self.ledger(), [])
        self.assertEqual(self.stats()[guest][:2], ["0", "0.000000"])

    def test_secret_typed_with_html_entities(self):
        create_shop(self, "shop", "woo", "woocommerce",
                    webhook_secret="s3cret&amp;more")
        body, h = recorded("woocommerce", "order-created")
        st, _ = deliver(self.d.port, "woocommerce", "woo", body, h,
                        secret="s3cret&more")
        self.assertEqual(st, 200)


class Generic(Base):
    def test_flow_and_template(self):
        create_shop(self, "shop", "cart", "generic")
        for c in ("refund", "order-paid", "order-pending"):
            self.send("generic", "cart", c)
        wait_applied(self.db)
        self.assertEqual(self.orders(), [["EC5001", "counted", "5500.00"]])
        self.assertEqual(self.stats()["C-20931"][:2], ["1", "5500.000000"])
        self.send("generic", "cart", "order-cancelled")
        self.send("generic", "cart", "order-template-strings")
        wait_applied(self.db)
        self.assertEqual(self.orders(), [["7781", "counted", "4400.00"],
                                         ["EC5001", "counted", "0.00"]])
        # event_id is the delivery id: a replay is a duplicate.
        self.send("generic", "cart", "order-paid")
        self.assertEqual(self.db.sql("SELECT count(*) FROM "
                                     "ec_webhook_events"), [["5"]])

    def test_schema_errors_422_with_path_nothing_stored(self):
        create_shop(self, "shop", "cart", "generic")
        body, h = recorded("generic", "order-paid")
        base = json.loads(body)
        cases = []
        o = json.loads(body)
        o["order"]["items"][0]["quantity"] = -1
        cases.append((o, "/order/items/0/quantity"))
        o = json.loads(body)
        o["order"]["items"][0]["price"] = 1e30
        cases.append((o, "/order/items/0/price"))
        o = json.loads(body)
        o["order"]["currency"] = "USD"
        cases.append((o, "/order/currency"))
        o = json.loads(body)
        del o["order"]["id"]
        cases.append((o, "/order/id"))
        o = dict(base, type="shipment")
        cases.append((o, "/type"))
        for doc, path in cases:
            st, b = deliver(self.d.port, "generic", "cart",
                            json.dumps(doc).encode(), h)
            self.assertEqual(st, 422, (path, b))
            self.assertEqual(json.loads(b)["error"]["path"], path)
        st, b = deliver(self.d.port, "generic", "cart", b"[]", h)
        self.assertEqual(st, 422)
        self.assertEqual(self.db.sql("SELECT count(*) FROM "
                                     "ec_webhook_events"), [["0"]])


class Rfm(Base):
    def test_quintiles_per_channel_and_job_at_start(self):
        create_shop(self, "shop", "cart", "generic")
        # Customer k (1..10) buys k times, 1000 yen each, the last on day k;
        # customers 11 and 12 tie with customer 10.
        bodies = []
        for k in range(1, 13):
            n = min(k, 10)
            for j in range(n):
                day = min(k, 10) - n + 1 + j
                t = "2025-04-%02dT10:00:00+09:00" % day
                bodies.append({"type": "order", "order": {
                    "id": "c%d-o%d" % (k, j), "currency": "JPY",
                    "total": "1000", "placed_at": t, "updated_at": t,
                    "paid_at": t, "customer": {"id": "cust-%02d" % k}}})
        errs = []

        def send(chunk):
            for b in chunk:
                st, _ = deliver(self.d.port, "generic", "cart",
                                json.dumps(b).encode())
                if st != 200:
                    errs.append(st)
        ts = [threading.Thread(target=send, args=(bodies[i::4],))
              for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errs, [])
        wait_applied(self.db)
        # No scores before the job has run over these purchases.
        self.assertEqual(self.db.sql("SELECT count(*) FROM customer_stats "
                                     "WHERE rfm_r IS NOT NULL"), [["0"]])
        # A musubid that starts runs the job once at start.
        self.spawn()
        deadline = time.time() + 20
        while time.time() < deadline and self.db.sql(
                "SELECT count(*) FROM customer_stats WHERE rfm_r IS NULL"
        ) != [["0"]]:
            time.sleep(0.1)
        rows = self.db.sql(
            "SELECT c.external_id, s.orders_count, s.net_revenue::int, "
            "s.rfm_r, s.rfm_f, s.rfm_m FROM customer_stats s JOIN customers "
            "c ON c.channel_id = s.channel_id AND c.id = s.customer_id "
            "ORDER BY 1")
        got = {r[0]: r[1:] for r in rows}
        # 12 customers; equal values share the lower quintile:
        # 1 + 5 * (rank - 1) / 12, rank 10 for the three tied at the top.
        want_q = [1, 1, 1, 2, 2, 3, 3, 3, 4, 4]
        for k in range(1, 13):
            n = min(k, 10)
            q = str(want_q[n - 1])
            self.assertEqual(got["cust-%02d" % k],
                             [str(n), str(n * 1000), q, q, q], k)
        # Another channel is ranked on its own.
        self.create_channel("other")
        create_shop(self, "other", "cart2", "generic")
        st, _ = deliver(self.d.port, "generic", "cart2",
                        json.dumps(bodies[0]).encode())
        self.assertEqual(st, 200)
        wait_applied(self.db)
        self.db.sql("SELECT * FROM musubi_ec_rfm()")
        self.assertEqual(self.db.sql(
            "SELECT s.rfm_r, s.rfm_f, s.rfm_m FROM customer_stats s "
            "JOIN channels ch ON ch.id = s.channel_id "
            "WHERE ch.slug = 'other'"), [["1", "1", "1"]])
        self.assertEqual(self.db.sql("SELECT rfm_r FROM customer_stats s "
                                     "JOIN customers c ON c.id = "
                                     "s.customer_id WHERE c.external_id = "
                                     "'cust-10' AND c.shop_id = (SELECT id "
                                     "FROM shops WHERE slug = 'cart')"),
                         [["4"]])


class Rotation(Base):
    def test_old_secret_accepted_during_rotation(self):
        create_shop(self, "shop", "demo", "shopify")
        port = self.d.port
        new = "rotated-secret-2"
        r = self.d.request("PATCH", "/api/v1/channels/shop/shops/demo",
                           {"webhook_secret": new}, key=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json()["has_previous_webhook_secret"])
        # A retried PATCH does not push the old secret out.
        r = self.d.request("PATCH", "/api/v1/channels/shop/shops/demo",
                           {"webhook_secret": new}, key=self.admin)
        self.assertTrue(r.json()["has_previous_webhook_secret"])
        self.assertEqual(deliver_case(port, "shopify", "demo",
                                      "orders-create")[0], 200)
        self.assertEqual(deliver_case(port, "shopify", "demo",
                                      "orders-paid", secret=new)[0], 200)
        self.assertEqual(deliver_case(port, "shopify", "demo",
                                      "refunds-create",
                                      secret="unknown-secret")[0], 401)
        r = self.d.request("PATCH", "/api/v1/channels/shop/shops/demo",
                           {"previous_webhook_secret": None}, key=self.admin)
        self.assertFalse(r.json()["has_previous_webhook_secret"])
        self.assertEqual(deliver_case(port, "shopify", "demo",
                                      "refunds-create")[0], 401)
        self.assertEqual(deliver_case(port, "shopify", "demo",
                                      "refunds-create", secret=new)[0], 200)
        for s in (SECRET, new):
            self.assertNotIn(s, self.d.logtext())


if __name__ == "__main__":
    main()
