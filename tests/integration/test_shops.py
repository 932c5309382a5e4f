# SPDX-License-Identifier: ISC
"""The shops API: create, list, read, update (secret rotation), the
deliveries list; validation with JSON pointers; channel scoping (another
channel's shop is never reachable); secrets never in a response or a log
line."""
import json

from musubi_test import MusubiTestCase, apikey, main

from test_ec_webhooks import deliver_case, wait_applied

SECRETS = ("first-webhook-secret", "second-webhook-secret",
           "rotated-webhook-secret", "musubi-sample-secret")


class ShopsApi(MusubiTestCase):
    def setUp(self):
        super().setUp()
        self.create_channel("alpha")
        self.create_channel("beta")
        self.responses = []

    def call(self, method, path, body=None, key=None):
        r = self.d.request(method, path, body, key=key or self.admin)
        self.responses.append(r.body.decode("utf-8", "replace"))
        return r

    def assertNoSecrets(self):
        text = "\n".join(self.responses) + self.d.logtext()
        for s in SECRETS:
            self.assertNotIn(s, text)

    def test_create_list_get_update(self):
        r = self.call("POST", "/api/v1/channels/alpha/shops",
                      {"slug": "alpha-jp", "name": "Alpha 本店",
                       "platform": "shopify",
                       "webhook_secret": SECRETS[0],
                       "shop_domain": "Alpha-JP.myshopify.com"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.header("Location"),
                         "/api/v1/channels/alpha/shops/alpha-jp")
        s = r.json()
        self.assertEqual(s["slug"], "alpha-jp")
        self.assertEqual(s["name"], "Alpha 本店")
        self.assertEqual(s["platform"], "shopify")
        self.assertEqual(s["currency"], "JPY")
        self.assertEqual(s["shop_domain"], "alpha-jp.myshopify.com")
        self.assertTrue(s["has_webhook_secret"])
        self.assertFalse(s["has_previous_webhook_secret"])
        self.assertIsNone(s["secret_rotated_at"])
        self.assertEqual(s["webhook_path"], "/webhooks/shopify/alpha-jp")
        self.assertEqual(s["signature_header"], "X-Shopify-Hmac-Sha256")
        self.assertIsNone(s["last_delivery_at"])
        self.assertEqual(set(s), {
            "slug", "name", "platform", "currency", "shop_domain",
            "has_webhook_secret", "has_previous_webhook_secret",
            "secret_rotated_at", "webhook_path", "webhook_url",
            "signature_header", "created_at", "updated_at",
            "last_delivery_at"})

        r = self.call("POST", "/api/v1/channels/alpha/shops",
                      {"slug": "alpha-woo", "name": "Alpha Woo",
                       "platform": "woocommerce",
                       "webhook_secret": SECRETS[1]})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["webhook_path"],
                         "/webhooks/woocommerce/alpha-woo")
        r = self.call("POST", "/api/v1/channels/alpha/shops",
                      {"slug": "alpha-cart", "name": "Alpha Cart",
                       "platform": "generic",
                       "webhook_secret": SECRETS[1]})
        self.assertEqual(r.json()["webhook_path"], "/webhooks/ec/alpha-cart")
        self.assertEqual(r.json()["signature_header"], "X-Musubi-Signature")

        r = self.call("GET", "/api/v1/channels/alpha/shops")
        self.assertEqual(r.status, 200)
        self.assertEqual([x["slug"] for x in r.json()["shops"]],
                         ["alpha-cart", "alpha-jp", "alpha-woo"])
        r = self.call("GET", "/api/v1/channels/beta/shops")
        self.assertEqual(r.json()["shops"], [])
        r = self.call("GET", "/api/v1/channels/alpha/shops/alpha-jp")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["name"], "Alpha 本店")

        r = self.call("PATCH", "/api/v1/channels/alpha/shops/alpha-jp",
                      {"name": "Alpha 2", "webhook_secret": SECRETS[2],
                       "shop_domain": None})
        self.assertEqual(r.status, 200, r)
        s = r.json()
        self.assertEqual(s["name"], "Alpha 2")
        self.assertTrue(s["has_previous_webhook_secret"])
        self.assertIsNotNone(s["secret_rotated_at"])
        self.assertIsNone(s["shop_domain"])
        self.assertEqual(self.db.sql(
            "SELECT webhook_secret, previous_webhook_secret FROM shops "
            "WHERE slug = 'alpha-jp'"), [[SECRETS[2], SECRETS[0]]])
        self.assertNoSecrets()

    def test_validation_422_with_path(self):
        good = {"slug": "s1", "name": "S", "platform": "shopify",
                "webhook_secret": SECRETS[0]}
        bad = [({"slug": "Bad Slug"}, "/slug"),
               ({"slug": "-x"}, "/slug"),
               ({"platform": "magento"}, "/platform"),
               ({"webhook_secret": "short"}, "/webhook_secret"),
               ({"webhook_secret": 12345678}, "/webhook_secret"),
               ({"currency": "yen"}, "/currency"),
               ({"currency": "JP"}, "/currency"),
               ({"shop_domain": "a b.example"}, "/shop_domain"),
               ({"colour": "red"}, "/colour"),
               ({"name": ""}, "/name")]
        for change, path in bad:
            body = dict(good, **change)
            r = self.call("POST", "/api/v1/channels/alpha/shops", body)
            self.assertEqual(r.status, 422, (change, r))
            self.assertEqual(r.json()["error"]["path"], path, change)
        for missing in ("slug", "name", "platform", "webhook_secret"):
            body = dict(good)
            del body[missing]
            r = self.call("POST", "/api/v1/channels/alpha/shops", body)
            self.assertEqual(r.status, 422, missing)
            self.assertEqual(r.json()["error"]["path"], "/" + missing)
        r = self.call("POST", "/api/v1/channels/alpha/shops", good)
        self.assertEqual(r.status, 201)
        for field, value in (("slug", "s2"), ("platform", "generic"),
                             ("currency", "USD")):
            r = self.call("PATCH", "/api/v1/channels/alpha/shops/s1",
                          {field: value})
            self.assertEqual(r.status, 422, field)
            self.assertEqual(r.json()["error"]["code"], "immutable")
        r = self.call("PATCH", "/api/v1/channels/alpha/shops/nope",
                      {"name": "x"})
        self.assertEqual(r.status, 404)
        r = self.d.request("POST", "/api/v1/channels/alpha/shops",
                           "{bad json", key=self.admin)
        self.assertEqual(r.status, 400)
        self.assertNoSecrets()

    def test_slug_unique_everywhere_and_one_currency_per_channel(self):
        body = {"slug": "same", "name": "S", "platform": "shopify",
                "webhook_secret": SECRETS[0]}
        self.assertEqual(self.call("POST", "/api/v1/channels/alpha/shops",
                                   body).status, 201)
        r = self.call("POST", "/api/v1/channels/beta/shops", body)
        self.assertEqual(r.status, 409)
        self.assertEqual(r.json()["error"]["path"], "/slug")
        r = self.call("POST", "/api/v1/channels/alpha/shops",
                      dict(body, slug="usd", currency="USD"))
        self.assertEqual(r.status, 422)
        self.assertEqual(r.json()["error"]["code"], "currency_conflict")
        r = self.call("POST", "/api/v1/channels/beta/shops",
                      dict(body, slug="usd", currency="USD"))
        self.assertEqual(r.status, 201)
        self.assertEqual(r.json()["currency"], "USD")

    def test_another_channels_shop_is_not_reachable(self):
        self.call("POST", "/api/v1/channels/beta/shops",
                  {"slug": "beta-shop", "name": "B", "platform": "shopify",
                   "webhook_secret": SECRETS[0]})
        ka = apikey(self.db.url, scope="channel:alpha", name="a")
        # A channel key manages its own channel's shops.
        r = self.call("POST", "/api/v1/channels/alpha/shops",
                      {"slug": "alpha-shop", "name": "A",
                       "platform": "generic", "webhook_secret": SECRETS[1]},
                      key=ka)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.call("GET", "/api/v1/channels/alpha/shops",
                                   key=ka).status, 200)
        # Beta's shop through alpha's path: 404, whoever asks.
        for key in (ka, self.admin):
            for method, body in (("GET", None), ("PATCH", {"name": "x"})):
                r = self.call(method,
                              "/api/v1/channels/alpha/shops/beta-shop",
                              body, key=key)
                self.assertEqual(r.status, 404, (method, r))
            r = self.call("GET", "/api/v1/channels/alpha/shops/beta-shop/"
                          "events", key=key)
            self.assertEqual(r.status, 404)
        # Beta's own path with alpha's key: refused.
        r = self.call("GET", "/api/v1/channels/beta/shops", key=ka)
        self.assertEqual(r.status, 403)
        r = self.call("GET", "/api/v1/channels/beta/shops/beta-shop",
                      key=ka)
        self.assertEqual(r.status, 403)
        self.assertEqual(self.db.sql("SELECT name FROM shops WHERE "
                                     "slug = 'beta-shop'"), [["B"]])
        r = self.call("GET", "/api/v1/channels/alpha/shops")
        self.assertEqual([x["slug"] for x in r.json()["shops"]],
                         ["alpha-shop"])
        # No key at all.
        self.assertEqual(self.d.get("/api/v1/channels/alpha/shops").status,
                         401)

    def test_events_list_and_last_delivery(self):
        self.call("POST", "/api/v1/channels/alpha/shops",
                  {"slug": "demo", "name": "Demo", "platform": "shopify",
                   "webhook_secret": "musubi-sample-secret"})
        for case in ("orders-create", "orders-paid", "app-uninstalled"):
            st, _ = deliver_case(self.d.port, "shopify", "demo", case)
            self.assertEqual(st, 200)
        wait_applied(self.db)
        r = self.call("GET", "/api/v1/channels/alpha/shops/demo/events")
        self.assertEqual(r.status, 200)
        ev = r.json()["events"]
        self.assertEqual([(e["topic"], e["state"]) for e in ev],
                         [("app/uninstalled", "ignored"),
                          ("orders/paid", "applied"),
                          ("orders/create", "applied")])
        self.assertEqual(ev[2]["entity_id"], "820982911946154508")
        self.assertEqual(ev[2]["delivery_id"],
                         "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
        self.assertNotIn("payload", ev[0])
        r = self.call("GET", "/api/v1/channels/alpha/shops/demo/events?"
                      "state=applied&limit=1")
        self.assertEqual(len(r.json()["events"]), 1)
        first = r.json()["events"][0]["id"]
        r = self.call("GET", "/api/v1/channels/alpha/shops/demo/events?"
                      "before=%d" % first)
        self.assertEqual([e["topic"] for e in r.json()["events"]],
                         ["orders/create"])
        for q in ("state=done", "limit=0", "limit=x", "before=-1"):
            r = self.call("GET", "/api/v1/channels/alpha/shops/demo/"
                          "events?" + q)
            self.assertEqual(r.status, 422, q)
        r = self.call("GET", "/api/v1/channels/alpha/shops/demo")
        self.assertIsNotNone(r.json()["last_delivery_at"])
        self.assertNoSecrets()


if __name__ == "__main__":
    main()
