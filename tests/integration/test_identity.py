# SPDX-License-Identifier: ISC
"""Friend <-> customer identity: explicit links, LINE account link, LINE
Login ID tokens, and tracking tokens carried into orders."""
import json
import time
import urllib.parse

from musubi_test import (MusubiTestCase, Sandbox, apikey, main, sign,
                         wait_for)

SECRET = "identity-channel-secret"
TOKEN = "identity-access-token"
LOGIN_ID = "1234567890"
LOGIN_SECRET = "identity-login-secret"
U1 = "U" + "1" * 32
U2 = "U" + "2" * 32


class Identity(MusubiTestCase):
    start_musubid = False

    def setUp(self):
        super().setUp()
        self.sb = Sandbox()
        self.addCleanup(self.sb.stop)
        self.d = self.spawn(env={"MUSUBI_LINE_API_BASE": self.sb.url,
                                 "MUSUBI_LINE_ACCESS_BASE": self.sb.url})
        self.admin = apikey(self.db.url)
        r = self.d.post("/api/v1/channels", {
            "slug": "shop", "name": "Shop", "channel_secret": SECRET,
            "channel_access_token": TOKEN, "login_channel_id": LOGIN_ID,
            "login_channel_secret": LOGIN_SECRET}, key=self.admin)
        self.assertEqual(r.status, 201, r)
        self.assertTrue(r.json()["has_login_channel_secret"])
        self.assertNotIn(LOGIN_SECRET.encode(), r.body)
        self.sb.configure(
            webhooks={TOKEN: {"url": "http://127.0.0.1:%d/webhooks/line/"
                              "shop" % self.d.port, "secret": SECRET}},
            login={"clients": {LOGIN_ID: {"secret": LOGIN_SECRET,
                                          "bot_token": TOKEN}}})
        self.db.sql("INSERT INTO shops (channel_id, slug, name, platform, "
                    "webhook_secret) SELECT id, 'store', 'Store', "
                    "'generic', 'x' FROM channels")
        self.follow(U1)
        self.follow(U2)

    def follow(self, uid, ts=None):
        ev = {"type": "follow", "mode": "active",
              "timestamp": ts or int(time.time() * 1000),
              "webhookEventId": "01ID" + uid[1:23],
              "deliveryContext": {"isRedelivery": False},
              "source": {"type": "user", "userId": uid},
              "follow": {"isUnblocked": False}}
        self.deliver([ev])
        wait_for(lambda: self.db.sql("SELECT 1 FROM friends WHERE user_id "
                                     "= '%s'" % uid), what="friend")

    def deliver(self, events):
        body = json.dumps({"destination": "U" + "f" * 32,
                           "events": events})
        r = self.d.post("/webhooks/line/shop", body,
                        headers={"x-line-signature": sign(SECRET, body)})
        self.assertEqual(r.status, 200, r)

    def link(self, uid, customer, key=None, **extra):
        body = {"shop": "store", "customer_id": customer}
        body.update(extra)
        return self.d.post("/api/v1/channels/shop/friends/%s/customers" %
                           uid, body, key=key or self.admin)

    def current(self, uid):
        r = self.d.get("/api/v1/channels/shop/friends/%s/customers" % uid,
                       key=self.admin)
        self.assertEqual(r.status, 200, r)
        return [(c["customer_id"], c["method"]) for c in
                r.json()["customers"] if c["unlinked_at"] is None]

    def add_order(self, customer, amount, token=None, placed=None):
        """An order with its sale in the ledger, as the EC apply writes
        it (the EC webhooks are tested on their own)."""
        cust = self.db.sql(
            "SELECT musubi_identity_customer(c.id, 'store', '%s') FROM "
            "channels c" % customer)[0][0]
        placed = placed or "now()"
        tok = "'%s'" % token.replace("'", "''") if token else "NULL"
        oid = self.db.sql(
            "INSERT INTO orders (channel_id, shop_id, external_id, "
            "customer_id, currency, placed_at, paid_at, gross, "
            "current_total, revenue_state, net, attribution_token) "
            "SELECT c.channel_id, c.shop_id, 'o-' || gen_random_uuid(), "
            "c.id, 'JPY', %s, %s, %d, %d, 'counted', %d, %s FROM "
            "customers c WHERE c.id = %s RETURNING id" %
            (placed, placed, amount, amount, amount, tok, cust))[0][0]
        self.db.sql(
            "INSERT INTO ledger (channel_id, shop_id, order_id, "
            "customer_id, kind, amount, at) SELECT channel_id, shop_id, "
            "id, customer_id, 'sale', net, placed_at FROM orders "
            "WHERE id = %s" % oid)
        self.db.sql("SELECT musubi_ec_refresh(channel_id, "
                    "ARRAY[customer_id], NULL) FROM orders WHERE id = %s"
                    % oid)
        return oid

    def friend_stats(self, uid):
        rows = self.db.sql(
            "SELECT s.orders_count, s.net_revenue::int FROM friend_stats s "
            "JOIN friends f ON f.channel_id = s.channel_id AND "
            "f.id = s.friend_id WHERE f.user_id = '%s'" % uid)
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    # --- explicit links -------------------------------------------------

    def test_explicit_link_conflict_replace_unlink(self):
        r = self.link(U1, "c-1")
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["result"], "linked")
        self.assertEqual(self.link(U1, "c-1").json()["result"], "already")
        r = self.link(U2, "c-1")
        self.assertEqual(r.status, 409, r)
        self.assertEqual(self.current(U1), [("c-1", "api")])
        r = self.link(U2, "c-1", replace=True)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.current(U1), [])
        self.assertEqual(self.current(U2), [("c-1", "api")])
        hist = self.d.get("/api/v1/channels/shop/friends/%s/customers" % U1,
                          key=self.admin).json()["customers"]
        self.assertEqual(len(hist), 1)
        self.assertIsNotNone(hist[0]["unlinked_at"])
        path = "/api/v1/channels/shop/friends/%s/customers/store/c-1" % U2
        self.assertEqual(self.d.request("DELETE", path,
                                        key=self.admin).status, 204)
        self.assertEqual(self.d.request("DELETE", path,
                                        key=self.admin).status, 404)
        self.assertEqual(self.current(U2), [])

    def test_link_bad_input(self):
        r = self.d.post("/api/v1/channels/shop/friends/%s/customers" % U1,
                        {"shop": "nope", "customer_id": "c"},
                        key=self.admin)
        self.assertEqual((r.status, r.json()["error"]["path"]),
                         (404, "/shop"))
        r = self.link("U" + "9" * 32, "c")
        self.assertEqual(r.status, 404)
        r = self.link("not-a-user", "c")
        self.assertEqual(r.status, 404)
        for body, path in [({"customer_id": "c"}, "/shop"),
                           ({"shop": "store"}, "/customer_id"),
                           ({"shop": "store", "customer_id": "c",
                             "replace": "yes"}, "/replace"),
                           ({"shop": "store", "customer_id": "c",
                             "x": 1}, "/x")]:
            r = self.d.post("/api/v1/channels/shop/friends/%s/customers" %
                            U1, body, key=self.admin)
            self.assertEqual((r.status, r.json()["error"]["path"]),
                             (422, path), body)
        self.assertEqual(self.db.sql("SELECT count(*) FROM "
                                     "friend_customer_links"), [["0"]])

    def test_channel_key_cannot_link(self):
        k = apikey(self.db.url, scope="channel:shop")
        self.assertEqual(self.link(U1, "c-1", key=k).status, 403)
        r = self.d.get("/api/v1/channels/shop/friends/%s/customers" % U1,
                       key=k)
        self.assertEqual(r.status, 200)

    def test_orders_before_link_appear_after_link(self):
        self.add_order("c-5", 3000)
        self.add_order("c-5", 2000)
        self.assertEqual(self.friend_stats(U1), (0, 0))
        self.assertEqual(self.link(U1, "c-5").status, 201)
        self.assertEqual(self.friend_stats(U1), (2, 5000))
        self.assertEqual(self.link(U2, "c-5", replace=True).status, 201)
        self.assertEqual(self.friend_stats(U1), (0, 0))
        self.assertEqual(self.friend_stats(U2), (2, 5000))

    # --- LINE account link ----------------------------------------------

    def start_account_link(self, uid, customer):
        r = self.d.post("/api/v1/channels/shop/friends/%s/account-link" %
                        uid, {"login_url": "https://store.example/link"},
                        key=self.admin)
        self.assertEqual(r.status, 200, r)
        tok = r.json()["link_token"]
        self.assertEqual(r.json()["url"], "https://store.example/link?"
                         "linkToken=" + urllib.parse.quote(tok, safe=""))
        r = self.d.post("/api/v1/channels/shop/account-link/nonces",
                        {"shop": "store", "customer_id": customer,
                         "link_token": tok}, key=self.admin)
        self.assertEqual(r.status, 201, r)
        return r.json()

    def test_account_link_completes_on_event(self):
        n = self.start_account_link(U1, "c-7")
        self.assertGreaterEqual(len(n["nonce"]), 20)
        # The user's browser follows redirect_url to LINE (the sandbox),
        # which sends the accountLink event to musubi.
        u = urllib.parse.urlparse(n["redirect_url"])
        self.assertEqual("%s://%s" % (u.scheme, u.netloc), self.sb.url)
        st, body = self.sb.call("GET", u.path + "?" + u.query)
        self.assertEqual(st, 200, body)
        wait_for(lambda: self.current(U1) == [("c-7", "account_link")],
                 what="account link")
        # The nonce works once: the same event again links nothing new.
        self.db.sql("UPDATE friend_customer_links SET unlinked_at = now()")
        time.sleep(1.5)
        self.assertEqual(self.current(U1), [])

    def test_account_link_failed_or_unknown_nonce_links_nothing(self):
        n = self.start_account_link(U1, "c-8")
        u = urllib.parse.urlparse(n["redirect_url"])
        # Another LINE user completes the dialog: result failed.
        st, _ = self.sb.call("GET", u.path + "?" + u.query +
                             "&sandbox_user=" + U2)
        self.assertEqual(st, 200)
        self.deliver([{"type": "accountLink", "mode": "active",
                       "timestamp": int(time.time() * 1000),
                       "webhookEventId": "01IDFORGEDNONCE00000000001",
                       "source": {"type": "user", "userId": U2},
                       "link": {"result": "ok",
                                "nonce": "never-registered-nonce"}}])
        time.sleep(2)
        self.assertEqual(self.current(U1), [])
        self.assertEqual(self.current(U2), [])

    def test_expired_nonce_links_nothing(self):
        n = self.start_account_link(U1, "c-9")
        self.db.sql("UPDATE account_link_nonces SET expires_at = "
                    "now() - interval '1 minute'")
        self.deliver([{"type": "accountLink", "mode": "active",
                       "timestamp": int(time.time() * 1000),
                       "webhookEventId": "01IDEXPIREDNONCE0000000001",
                       "source": {"type": "user", "userId": U1},
                       "link": {"result": "ok", "nonce": n["nonce"]}}])
        time.sleep(2)
        self.assertEqual(self.current(U1), [])

    def test_nonce_bad_input(self):
        r = self.d.post("/api/v1/channels/shop/account-link/nonces",
                        {"shop": "store", "customer_id": "c",
                         "link_token": "t", "nonce": "short"},
                        key=self.admin)
        self.assertEqual((r.status, r.json()["error"]["path"]),
                         (422, "/nonce"))
        r = self.d.post("/api/v1/channels/shop/account-link/nonces",
                        {"shop": "elsewhere", "customer_id": "c",
                         "link_token": "t"}, key=self.admin)
        self.assertEqual(r.status, 404)
        body = {"shop": "store", "customer_id": "c", "link_token": "t",
                "nonce": "n" * 20}
        self.assertEqual(self.d.post(
            "/api/v1/channels/shop/account-link/nonces", body,
            key=self.admin).status, 201)
        self.assertEqual(self.d.post(
            "/api/v1/channels/shop/account-link/nonces", body,
            key=self.admin).status, 409)

    # --- LINE Login -----------------------------------------------------

    def login_id_token(self, uid, nonce="login-nonce"):
        q = urllib.parse.urlencode({
            "response_type": "code", "client_id": LOGIN_ID,
            "redirect_uri": "https://store.example/cb", "state": "s",
            "scope": "profile openid", "nonce": nonce,
            "sandbox_user": uid})
        st, _ = self.sb.call("GET", "/oauth2/v2.1/authorize?" + q)
        self.assertEqual(st, 302)
        # http.client does not follow redirects: read the code from the
        # sandbox by repeating the request and reading Location.
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.sb.port)
        c.request("GET", "/oauth2/v2.1/authorize?" + q)
        loc = c.getresponse().getheader("Location")
        c.close()
        code = urllib.parse.parse_qs(urllib.parse.urlparse(loc).query)[
            "code"][0]
        form = urllib.parse.urlencode({
            "grant_type": "authorization_code", "code": code,
            "redirect_uri": "https://store.example/cb",
            "client_id": LOGIN_ID, "client_secret": LOGIN_SECRET})
        st, tok = self.sb.call("POST", "/oauth2/v2.1/token", form, {
            "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(st, 200, tok)
        return tok["id_token"]

    def test_line_login_links_sub(self):
        tok = self.login_id_token(U1)
        r = self.d.post("/api/v1/channels/shop/identity/line-login",
                        {"shop": "store", "customer_id": "c-20",
                         "id_token": tok, "nonce": "login-nonce"},
                        key=self.admin)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["user_id"], U1)
        self.assertEqual(self.current(U1), [("c-20", "line_login")])

    def test_line_login_rejects_bad_tokens(self):
        tok = self.login_id_token(U1)
        for t, nonce in [(tok[:-4] + "AAAA", "login-nonce"),
                         (tok, "another-nonce"),
                         ("x" * 40, None)]:
            body = {"shop": "store", "customer_id": "c-21", "id_token": t}
            if nonce:
                body["nonce"] = nonce
            r = self.d.post("/api/v1/channels/shop/identity/line-login",
                            body, key=self.admin)
            self.assertEqual(r.status, 422, r)
            self.assertEqual(r.json()["error"]["code"], "invalid_id_token")
        self.assertEqual(self.current(U1), [])

    # --- tracking token -------------------------------------------------

    def click_token(self, uid):
        r = self.d.post("/api/v1/channels/shop/links",
                        {"name": "Sale", "destination":
                         "https://store.example/sale"}, key=self.admin)
        lid = r.json()["id"]
        url = self.d.get("/api/v1/channels/shop/links/%d?friend=%s" %
                         (lid, uid), key=self.admin).json()["url"]
        r = self.d.get(urllib.parse.urlparse(url).path)
        self.assertEqual(r.status, 302)
        loc = r.header("Location")
        return urllib.parse.parse_qs(urllib.parse.urlparse(loc).query)[
            "musubi_t"][0]

    def attribution(self, oid):
        return wait_for(lambda: self.db.sql(
            "SELECT o.attribution_state, f.user_id FROM orders o LEFT JOIN "
            "friends f ON f.channel_id = o.channel_id AND f.id = "
            "o.attributed_friend_id WHERE o.id = %s AND "
            "o.attribution_state IS NOT NULL" % oid), what="attribution")[0]

    def test_token_attributes_order_and_links_unlinked_customer(self):
        tok = self.click_token(U1)
        oid = self.add_order("c-30", 4200, token=tok)
        self.assertEqual(self.attribution(oid), ["ok", U1])
        self.assertEqual(self.current(U1), [("c-30", "tracking_token")])
        self.assertEqual(self.friend_stats(U1), (1, 4200))

    def test_token_never_moves_an_existing_link(self):
        self.assertEqual(self.link(U2, "c-31").status, 201)
        tok = self.click_token(U1)
        oid = self.add_order("c-31", 1000, token=tok)
        self.assertEqual(self.attribution(oid), ["ok", U1])
        self.assertEqual(self.current(U2), [("c-31", "api")])
        self.assertEqual(self.current(U1), [])

    def test_forged_and_stale_tokens(self):
        tok = self.click_token(U1)
        forged = tok[:-2] + ("AA" if not tok.endswith("AA") else "BB")
        oid = self.add_order("c-32", 100, token=forged)
        self.assertEqual(self.attribution(oid)[0], "invalid")
        oid = self.add_order("c-33", 100, token=tok,
                             placed="now() + interval '40 days'")
        self.assertEqual(self.attribution(oid)[0], "expired")
        oid = self.add_order("c-34", 100, token="'); DROP TABLE orders;--")
        self.assertEqual(self.attribution(oid)[0], "invalid")
        self.assertEqual(self.current(U1), [])


if __name__ == "__main__":
    main()
