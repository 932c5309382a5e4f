# SPDX-License-Identifier: ISC
"""Friend acquisition: tracked add-friend URLs, LINE Login against
line-sandbox, follow matching in both orders, re-follows, in-app CPF
estimates, costs (API and CSV) and the acquisition report."""
import datetime
import http.client
import json
import time
import urllib.parse
from decimal import ROUND_HALF_UP, Decimal

from musubi_test import (MusubiTestCase, Sandbox, apikey, free_port, main,
                         sign, wait_for)

SECRET = "acq-channel-secret"
TOKEN = "acq-access-token"
LOGIN_ID = "2000000001"
LOGIN_SECRET = "acq-login-secret"
JST = datetime.timezone(datetime.timedelta(hours=9))


def uid(n):
    return "U%032x" % n


def rnd(x, places):
    q = Decimal(1).scaleb(-places)
    return Decimal(x).quantize(q, rounding=ROUND_HALF_UP).normalize()


class Acquisition(MusubiTestCase):
    start_musubid = False
    login = True

    def setUp(self):
        super().setUp()
        self.sb = Sandbox()
        self.addCleanup(self.sb.stop)
        self.d = self.spawn(env={"MUSUBI_LINE_API_BASE": self.sb.url,
                                 "MUSUBI_LINE_ACCESS_BASE": self.sb.url})
        self.addCleanup(self.stop_clean)
        self.admin = apikey(self.db.url)
        body = {"slug": "shop", "name": "Shop", "channel_secret": SECRET,
                "channel_access_token": TOKEN}
        if self.login:
            body.update(login_channel_id=LOGIN_ID,
                        login_channel_secret=LOGIN_SECRET)
        r = self.d.post("/api/v1/channels", body, key=self.admin)
        self.assertEqual(r.status, 201, r)
        self.hook_live()
        self.db.sql("INSERT INTO shops (channel_id, slug, name, platform, "
                    "webhook_secret) SELECT id, 'store', 'Store', "
                    "'generic', 'x' FROM channels")
        r = self.api("PUT", "/acquisition", {
            "add_friend_url": "https://line.me/R/ti/p/@shop",
            "landing_url": "https://shop.example/welcome"})
        self.assertEqual(r.status, 200, r)
        self.nev = 0

    # --- helpers --------------------------------------------------------

    def stop_clean(self):
        """musubid exits 0 on SIGTERM, with no sanitizer report."""
        rc = self.d.stop()
        log = self.d.logtext()
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            self.assertNotIn(bad, log)
        self.assertEqual(rc, 0, log[-2000:])

    def api(self, method, path, body=None, key=None, **kw):
        return self.d.request(method, "/api/v1/channels/shop" + path,
                              body=body, key=key or self.admin, **kw)

    def hook_live(self):
        """The sandbox sends follow events to musubid."""
        self.sb.configure(
            webhooks={TOKEN: {"url": "http://127.0.0.1:%d/webhooks/line/"
                              "shop" % self.d.port, "secret": SECRET}},
            login={"clients": {LOGIN_ID: {"secret": LOGIN_SECRET,
                                          "bot_token": TOKEN}}})

    def hook_dead(self):
        """The sandbox's follow events go nowhere (we send them later)."""
        self.sb.configure(
            webhooks={TOKEN: {"url": "http://127.0.0.1:%d/none" %
                              free_port(), "secret": SECRET}},
            login={"clients": {LOGIN_ID: {"secret": LOGIN_SECRET,
                                          "bot_token": TOKEN}}})

    def source(self, code, kind="web", **extra):
        body = {"code": code, "name": code.title(), "kind": kind}
        body.update(extra)
        r = self.api("POST", "/sources", body)
        self.assertEqual(r.status, 201, r)
        return r.json()

    def not_friend(self, *users, blocked=False):
        self.sb.call("POST", "/sandbox/users", {"users": [
            {"userId": u, "friend": blocked, "blocked": blocked}
            for u in users]})

    def visit(self, code, **headers):
        r = self.d.get("/f/%s?utm_source=site&utm_medium=button" % code,
                       headers=headers)
        self.assertEqual(r.status, 302, r)
        return r.header("Location")

    def authorize(self, url, user, **override):
        """Log user in at the sandbox; return the callback path+query."""
        u = urllib.parse.urlparse(url)
        self.assertEqual("%s://%s" % (u.scheme, u.netloc), self.sb.url)
        q = dict(urllib.parse.parse_qsl(u.query))
        q.update(override)
        q["sandbox_user"] = user
        c = http.client.HTTPConnection("127.0.0.1", self.sb.port)
        c.request("GET", u.path + "?" + urllib.parse.urlencode(q))
        r = c.getresponse()
        r.read()
        loc = r.getheader("Location")
        c.close()
        self.assertEqual(r.status, 302)
        cb = urllib.parse.urlparse(loc)
        self.assertEqual(cb.path, "/f/callback")
        return cb.path + "?" + cb.query

    def callback(self, path, status=302):
        r = self.d.get(path)
        self.assertEqual(r.status, status, r)
        return r

    def deliver(self, events):
        body = json.dumps({"destination": "U" + "f" * 32,
                           "events": events})
        r = self.d.post("/webhooks/line/shop", body,
                        headers={"x-line-signature": sign(SECRET, body)})
        self.assertEqual(r.status, 200, r)

    def event(self, kind, user, ts=None, unblocked=False):
        self.nev += 1
        ev = {"type": kind, "mode": "active",
              "timestamp": int((ts or time.time()) * 1000),
              "webhookEventId": "01ACQ%021d" % self.nev,
              "deliveryContext": {"isRedelivery": False},
              "source": {"type": "user", "userId": user}}
        if kind == "follow":
            ev["follow"] = {"isUnblocked": unblocked}
        return ev

    def follows_applied(self, n):
        wait_for(lambda: int(self.db.sql(
            "SELECT count(*) FROM acquisition_follows")[0][0]) >= n,
            what="%d follows applied" % n)

    def friend_source(self, user):
        rows = self.db.sql(
            "SELECT s.code, f.source_estimated FROM friends f LEFT JOIN "
            "acquisition_sources s ON s.channel_id = f.channel_id AND "
            "s.id = f.source_id WHERE f.user_id = '%s'" % user)
        return (rows[0][0] or None, rows[0][1] == "t") if rows else None

    def wait_source(self, user, code):
        return wait_for(lambda: (self.friend_source(user) or (None,))[0]
                        == code, what="%s from %s" % (user, code))

    def link(self, user, customer):
        r = self.d.post("/api/v1/channels/shop/friends/%s/customers" %
                        user, {"shop": "store", "customer_id": customer},
                        key=self.admin)
        self.assertEqual(r.status, 201, r)

    def add_order(self, customer, amount, placed="now()"):
        """An order and its sale, as the EC apply writes them."""
        cust = self.db.sql(
            "SELECT musubi_identity_customer(c.id, 'store', '%s') FROM "
            "channels c" % customer)[0][0]
        oid = self.db.sql(
            "INSERT INTO orders (channel_id, shop_id, external_id, "
            "customer_id, currency, placed_at, paid_at, gross, "
            "current_total, revenue_state, net) SELECT c.channel_id, "
            "c.shop_id, 'o-' || gen_random_uuid(), c.id, 'JPY', %s, %s, "
            "%s, %s, 'counted', %s FROM customers c WHERE c.id = %s "
            "RETURNING id" % (placed, placed, amount, amount, amount,
                              cust))[0][0]
        self.db.sql(
            "INSERT INTO ledger (channel_id, shop_id, order_id, "
            "customer_id, kind, amount, at) SELECT channel_id, shop_id, "
            "id, customer_id, 'sale', net, placed_at FROM orders "
            "WHERE id = %s" % oid)
        self.db.sql("SELECT musubi_ec_refresh(channel_id, "
                    "ARRAY[customer_id], NULL) FROM orders WHERE id = %s"
                    % oid)

    def report(self, **q):
        r = self.api("GET", "/reports/acquisition?" +
                     urllib.parse.urlencode(q))
        self.assertEqual(r.status, 200, r)
        return r.json()

    def by_code(self, rep, code):
        return [s for s in rep["sources"] if s["code"] == code][0]

    def csv(self, **q):
        r = self.api("GET", "/reports/acquisition.csv?" +
                     urllib.parse.urlencode(q))
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type").startswith("text/csv"))
        text = r.body.decode("utf-8")
        self.assertTrue(text.startswith("\ufeff"))
        lines = text[1:].split("\r\n")
        head = lines[0].split(",")
        return [dict(zip(head, ln.split(","))) for ln in lines[1:] if ln]


class LoginFlow(Acquisition):

    def test_end_to_end_cpf_and_roas(self):
        """touch -> login -> follow -> orders -> report, by hand."""
        self.source("lp-ad", kind="cpf_ad", in_app=False)
        today = datetime.datetime.now(JST).date().isoformat()
        r = self.api("PUT", "/sources/lp-ad/costs/" + today,
                     {"spend": "9000", "impressions": 120000, "clicks": 800,
                      "reported_adds": 3})
        self.assertEqual(r.status, 200, r)
        users = [uid(0xe1), uid(0xe2), uid(0xe3)]
        self.not_friend(*users)
        for u in users:
            cb = self.authorize(self.visit(
                "lp-ad", **{"User-Agent": "Mozilla/5.0 " + u}), u)
            self.assertIn("friendship_status_changed=true", cb)
            r = self.callback(cb)
            self.assertEqual(r.header("Location"),
                             "https://shop.example/welcome")
        for u in users:
            self.wait_source(u, "lp-ad")
        # Orders: one before the follow (not counted), two inside 30
        # days, one 40 days after the follow (60 and 90 only).
        self.link(users[0], "c-1")
        self.link(users[1], "c-2")
        self.add_order("c-1", 1500, "now() - interval '1 day'")
        self.add_order("c-1", 4000)
        self.add_order("c-2", 3000, "now() + interval '1 hour'")
        self.add_order("c-1", 2500, "now() + interval '40 days'")
        rep = self.report()
        s = self.by_code(rep, "lp-ad")
        spend, friends, buyers = Decimal(9000), 3, 2
        rev30, rev60 = Decimal(7000), Decimal(9500)
        self.assertEqual(s["attribution"], "exact")
        self.assertEqual((s["touches"], s["touches_logged_in"],
                          s["touches_matched"], s["friends"],
                          s["friends_matched"], s["friends_estimated"]),
                         (3, 3, 3, 3, 3, 0))
        self.assertEqual((s["linked"], s["purchasers"], s["orders_30d"],
                          s["orders_60d"], s["orders_90d"]),
                         (2, 2, 2, 3, 3))
        self.assertEqual(Decimal(str(s["revenue_30d"])), rev30)
        self.assertEqual(Decimal(str(s["revenue_60d"])), rev60)
        self.assertEqual(Decimal(str(s["spend"])), spend)
        self.assertEqual(Decimal(str(s["cpf"])), rnd(spend / friends, 2))
        self.assertEqual(Decimal(str(s["cac"])), rnd(spend / buyers, 2))
        self.assertEqual(Decimal(str(s["roas_30d"])), rnd(rev30 / spend, 4))
        self.assertEqual(Decimal(str(s["roas_60d"])), rnd(rev60 / spend, 4))
        self.assertEqual(Decimal(str(s["revenue_per_friend_90d"])),
                         rnd(rev60 / friends, 2))
        self.assertEqual((s["impressions"], s["clicks"], s["reported_adds"]),
                         (120000, 800, 3))
        self.assertEqual(rep["total"]["friends"], 3)
        self.assertEqual(rep["unattributed"]["friends"], 0)
        # The cohort of this week, and the same numbers as CSV.
        self.assertEqual([(c["source"], c["friends"], c["purchasers"])
                          for c in rep["cohorts"]], [("lp-ad", 3, 2)])
        row = [r for r in self.csv() if r["code"] == "lp-ad"][0]
        self.assertEqual((Decimal(row["cpf"]), Decimal(row["roas_30d"]),
                          row["currency"]),
                         (rnd(spend / friends, 2), rnd(rev30 / spend, 4),
                          "JPY"))
        self.assertEqual(self.csv(table="cohorts")[0]["source"], "lp-ad")
        # The touch kept what the browser sent; the address is hashed.
        t = self.db.sql("SELECT utm_source, utm_medium, user_agent, "
                        "length(ip_hash), friendship_status_changed "
                        "FROM acquisition_touches ORDER BY id LIMIT 1")[0]
        self.assertEqual(t, ["site", "button", "Mozilla/5.0 " + users[0],
                             "16", "t"])
        self.assertEqual(self.db.sql("SELECT count(*) FROM "
                                     "acquisition_touches WHERE ip_hash "
                                     "LIKE '127.%'"), [["0"]])
        # Unlinking a customer takes its orders out of the source's
        # numbers at once; linking the third friend brings its order in.
        r = self.d.request("DELETE", "/api/v1/channels/shop/friends/%s/"
                           "customers/store/c-2" % users[1], key=self.admin)
        self.assertEqual(r.status, 204, r)
        self.add_order("c-3", 1000, "now() + interval '2 hours'")
        self.link(users[2], "c-3")
        s = self.by_code(self.report(), "lp-ad")
        self.assertEqual((s["linked"], s["purchasers"], s["orders_30d"]),
                         (2, 2, 2))
        self.assertEqual(Decimal(str(s["revenue_30d"])), Decimal(5000))

    def test_follow_before_callback(self):
        self.source("web-a")
        u = uid(0xa1)
        self.not_friend(u)
        cb = self.authorize(self.visit("web-a"), u)
        # The sandbox sent the follow; it is applied before the callback.
        self.follows_applied(1)
        self.assertEqual(self.friend_source(u), (None, False))
        self.callback(cb)
        self.assertEqual(self.friend_source(u), ("web-a", False))
        t = self.db.sql("SELECT login_state, user_id, follow_event_id IS "
                        "NOT NULL FROM acquisition_touches")
        self.assertEqual(t, [["done", u, "t"]])

    def test_callback_before_follow(self):
        self.source("web-b")
        u = uid(0xb1)
        self.not_friend(u)
        self.hook_dead()
        cb = self.authorize(self.visit("web-b"), u)
        self.callback(cb)
        self.assertIsNone(self.friend_source(u))
        self.assertEqual(self.db.sql("SELECT login_state, user_id FROM "
                                     "acquisition_touches"),
                         [["done", u]])
        self.deliver([self.event("follow", u)])
        self.wait_source(u, "web-b")
        self.assertEqual(self.friend_source(u), ("web-b", False))

    def test_callbacks_racing_follows_all_match(self):
        """Whichever side commits second does the matching."""
        import random
        import threading
        self.source("race")
        users = [uid(0x900 + i) for i in range(16)]
        self.not_friend(*users)
        self.hook_dead()
        cbs = [self.authorize(self.visit("race"), u) for u in users]
        rng = random.Random(7)
        errors = []

        def run(fn, delay):
            time.sleep(delay)
            try:
                fn()
            except Exception as e:  # reported below
                errors.append(e)
        threads = []
        for u, cb in zip(users, cbs):
            threads.append(threading.Thread(target=run, args=(
                lambda u=u: self.deliver([self.event("follow", u)]),
                rng.random() * 0.3)))
            threads.append(threading.Thread(target=run, args=(
                lambda cb=cb: self.callback(cb), rng.random() * 0.3)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.follows_applied(len(users))
        for u in users:
            self.wait_source(u, "race")
        self.assertEqual(self.db.sql(
            "SELECT count(*) FROM acquisition_touches WHERE "
            "follow_event_id IS NOT NULL"), [[str(len(users))]])

    def test_latest_touch_wins_and_window(self):
        self.source("early")
        self.source("late")
        u, v = uid(0xc1), uid(0xc2)
        self.not_friend(u, v)
        self.hook_dead()
        self.callback(self.authorize(self.visit("early"), u))
        self.callback(self.authorize(self.visit("late"), u))
        self.deliver([self.event("follow", u)])
        self.wait_source(u, "late")
        self.assertEqual(self.db.sql(
            "SELECT s.code, t.follow_event_id IS NOT NULL FROM "
            "acquisition_touches t JOIN acquisition_sources s ON s.id = "
            "t.source_id ORDER BY t.id"), [["early", "f"], ["late", "t"]])
        # A touch older than the window explains nothing ...
        self.callback(self.authorize(self.visit("early"), v))
        self.db.sql("UPDATE acquisition_touches SET created_at = now() - "
                    "interval '8 days' WHERE user_id = '%s'" % v)
        self.deliver([self.event("follow", v)])
        self.follows_applied(2)
        time.sleep(0.5)
        self.assertEqual(self.friend_source(v), (None, False))
        # ... until the source's window grows to cover it.
        r = self.api("PATCH", "/sources/early",
                     {"attribution_window_days": 10})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["attribution_window_days"], 10)
        self.assertEqual(self.friend_source(v), ("early", False))

    def test_refollow_keeps_source_unless_latest(self):
        self.source("first")
        self.source("second")
        u = uid(0xd1)
        self.not_friend(u)
        self.callback(self.authorize(self.visit("first"), u))
        self.wait_source(u, "first")
        # The friend blocks the account, then comes back through another
        # source: LINE sends a follow with isUnblocked.
        self.deliver([self.event("unfollow", u)])
        wait_for(lambda: self.db.sql(
            "SELECT blocked_at IS NOT NULL FROM acquisition_follows") ==
            [["t"]], what="block recorded")
        self.not_friend(u, blocked=True)
        cb = self.authorize(self.visit("second"), u)
        self.assertIn("friendship_status_changed=true", cb)
        self.callback(cb)
        self.follows_applied(2)
        wait_for(lambda: self.db.sql(
            "SELECT count(*) FROM acquisition_touches WHERE "
            "follow_event_id IS NOT NULL") == [["2"]], what="both matched")
        self.assertEqual(self.friend_source(u), ("first", False))
        self.assertEqual(self.db.sql(
            "SELECT unblocked, role FROM acquisition_follows "
            "ORDER BY followed_at"), [["f", "source"], ["t", ""]])
        rep = self.report()
        self.assertEqual((self.by_code(rep, "first")["friends"],
                          self.by_code(rep, "first")["blocked_7d"],
                          self.by_code(rep, "second")["friends"],
                          self.by_code(rep, "second")["touches_matched"]),
                         (1, 1, 0, 1))
        # Configured otherwise: the latest attributed follow wins.
        r = self.api("PUT", "/acquisition", {"refollow": "latest"})
        self.assertEqual((r.status, r.json()["refollow"]), (200, "latest"))
        self.assertEqual(self.friend_source(u), ("second", False))
        rep = self.report()
        self.assertEqual((self.by_code(rep, "first")["friends"],
                          self.by_code(rep, "second")["friends"]), (0, 1))

    def test_bad_callbacks_link_nothing(self):
        self.source("web-x")
        u = uid(0xf1)
        self.not_friend(u)
        self.hook_dead()
        # Unknown code: a 404 page and no redirect.
        r = self.d.get("/f/no-such-code")
        self.assertEqual(r.status, 404)
        self.assertIsNone(r.header("Location"))
        self.assertIn(b"<html", r.body)
        self.assertEqual(self.d.get("/f/BAD!").status, 404)
        # Bytes that are not UTF-8 in what the browser sends are kept as
        # '?', and the visitor still gets the redirect.
        r = self.d.get("/f/web-x?utm_source=%FF%FEx", headers={
            "User-Agent": "ua\xff\xfe", "Referer": "https://x.example/\xe9"})
        self.assertEqual(r.status, 302, r)
        self.assertEqual(self.db.sql(
            "SELECT user_agent, referrer, utm_source, login_state "
            "FROM acquisition_touches"),
            [["ua??", "https://x.example/?", "??x", "pending"]])
        self.db.sql("DELETE FROM acquisition_touches")
        # Tampered state.
        cb = self.authorize(self.visit("web-x"), u)
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(cb).query))
        forged = dict(q, state=("A" if q["state"][0] != "A" else "B") +
                      q["state"][1:])
        self.callback("/f/callback?" + urllib.parse.urlencode(forged), 400)
        self.callback("/f/callback?" + urllib.parse.urlencode(
            dict(q, state="x")), 400)
        self.assertEqual(self.db.sql("SELECT login_state, user_id FROM "
                                     "acquisition_touches"),
                         [["pending", ""]])
        # The real one works once; a replay of it is rejected.
        self.callback(cb)
        self.callback(cb, 400)
        # The same (used) code with a fresh state: LINE refuses it.
        url = self.visit("web-x")
        st = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(url).query))
        self.callback("/f/callback?" + urllib.parse.urlencode(
            {"code": q["code"], "state": st["state"]}), 400)
        # A nonce or PKCE challenge changed on the way to LINE.
        for field in ("nonce", "code_challenge"):
            v = uid(0xf2 if field == "nonce" else 0xf3)
            self.not_friend(v)
            cb = self.authorize(self.visit("web-x"), v,
                                **{field: "tampered-" + "x" * 40})
            self.callback(cb, 400)
            self.deliver([self.event("follow", v)])
        self.follows_applied(2)
        time.sleep(0.5)
        self.assertEqual(self.db.sql(
            "SELECT login_state, coalesce(user_id, '-') FROM "
            "acquisition_touches ORDER BY id"),
            [["done", u], ["failed", "-"], ["failed", "-"], ["failed", "-"]])
        self.assertEqual(self.db.sql("SELECT count(*) FROM friends WHERE "
                                     "source_id IS NOT NULL"), [["0"]])
        # An expired state.
        url = self.visit("web-x")
        cb = self.authorize(url, uid(0xf4))
        self.db.sql("UPDATE acquisition_touches SET created_at = now() - "
                    "interval '31 minutes' WHERE login_state = 'pending'")
        self.callback(cb, 400)
        # A user who cancels the login is sent to the add-friend URL.
        url = self.visit("web-x")
        st = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(url).query))
        r = self.callback("/f/callback?" + urllib.parse.urlencode(
            {"error": "access_denied", "state": st["state"]}))
        self.assertEqual(r.header("Location"), "https://line.me/R/ti/p/@shop")
        self.assertIn("cancelled", [r[0] for r in self.db.sql(
            "SELECT login_state FROM acquisition_touches")])

    def test_archived_source_is_404_and_api_errors(self):
        src = self.source("qr-shop", kind="qr")
        self.assertTrue(src["url"].endswith("/f/qr-shop"))
        r = self.api("PATCH", "/sources/qr-shop", {"archived": True})
        self.assertEqual((r.status, r.json()["archived"]), (200, True))
        self.assertEqual(self.d.get("/f/qr-shop").status, 404)
        self.assertEqual(self.api("GET", "/sources").json()["sources"], [])
        self.assertEqual(len(self.api("GET", "/sources?archived=true")
                             .json()["sources"]), 1)
        for body, path in [({"name": "x", "kind": "tv"}, "/kind"),
                           ({"name": "x", "kind": "web", "in_app": True},
                            "/in_app"),
                           ({"name": "x", "kind": "web", "code": "Bad"},
                            "/code"),
                           ({"name": "x", "kind": "web",
                             "code": "callback"}, "/code"),
                           ({"name": "x", "kind": "web",
                             "active_from": "2026-02-30"}, "/active_from"),
                           ({"name": "x", "kind": "web",
                             "attribution_window_days": 0},
                            "/attribution_window_days"),
                           ({"name": "x", "kind": "web",
                             "landing_url": "javascript:alert(1)"},
                            "/landing_url"),
                           ({"kind": "web"}, "/name"),
                           ({"name": "x", "kind": "web", "x": 1}, "/x")]:
            r = self.api("POST", "/sources", body)
            self.assertEqual((r.status, r.json()["error"]["path"]),
                             (422, path), body)
        r = self.api("POST", "/sources", {"name": "x", "kind": "web",
                                          "code": "qr-shop"})
        self.assertEqual(r.status, 409)
        r = self.api("POST", "/sources", {"name": "Gen", "kind": "store"})
        self.assertEqual(r.status, 201)
        self.assertRegex(r.json()["code"], "^[a-z0-9]{8}$")
        self.assertEqual(self.api("PATCH", "/sources/qr-shop",
                                  {"code": "new"}).status, 422)
        self.assertEqual(self.api("GET", "/sources/nope").status, 404)
        # A channel key of another channel sees nothing.
        other = self.d.post("/api/v1/channels", {
            "slug": "other", "name": "Other", "channel_secret": "s" * 10,
            "channel_access_token": "t" * 10}, key=self.admin)
        self.assertEqual(other.status, 201)
        k = apikey(self.db.url, scope="channel:other")
        self.assertEqual(self.api("GET", "/sources", key=k).status, 403)
        self.assertEqual(self.api("GET", "/reports/acquisition",
                                  key=k).status, 403)


class CostsAndEstimates(Acquisition):
    login = False

    def day(self, n):
        return (datetime.datetime.now(JST).date() -
                datetime.timedelta(days=n))

    def noon(self, d, minute=0):
        return datetime.datetime(d.year, d.month, d.day, 12, minute,
                                 tzinfo=JST).timestamp()

    def test_without_login_redirects_and_stays_unmatched(self):
        self.source("poster", kind="qr")
        r = self.d.get("/f/poster")
        self.assertEqual((r.status, r.header("Location")),
                         (302, "https://line.me/R/ti/p/@shop"))
        self.deliver([self.event("follow", uid(0x51))])
        self.follows_applied(1)
        rep = self.report()
        s = self.by_code(rep, "poster")
        self.assertEqual((s["touches"], s["touches_without_login"],
                          s["friends"]), (1, 1, 0))
        self.assertIn("1 touches had no LINE Login and cannot be matched",
                      s["notes"])
        self.assertEqual(rep["unattributed"]["friends"], 1)
        self.assertFalse(rep["line_login"])

    def test_estimated_split_follows_reported_adds(self):
        x, y, z = self.day(3), self.day(2), self.day(1)
        self.source("ad-a", kind="cpf_ad", active_from=str(self.day(10)))
        self.source("ad-b", kind="cpf_ad", active_from=str(self.day(10)))
        self.source("ad-old", kind="cpf_ad", active_from=str(self.day(10)),
                    active_until=str(self.day(5)))
        self.source("ad-lp", kind="cpf_ad", in_app=False,
                    active_from=str(self.day(10)))
        # Day x: 12 new friends and one unblock; day y: 5 new friends.
        evs = [self.event("follow", uid(0x100 + i), self.noon(x, i))
               for i in range(12)]
        evs.append(self.event("follow", uid(0x1ff), self.noon(x, 30),
                              unblocked=True))
        evs += [self.event("follow", uid(0x200 + i), self.noon(y, i))
                for i in range(5)]
        self.deliver(evs)
        self.follows_applied(18)
        csv = ("source,date,spend,currency,impressions,clicks,friend_adds\r\n"
               "ad-a,%s,\"5,000\",JPY,10000,300,5\r\n"
               "ad-b,%s,3000,JPY,,,3\r\n"
               "ad-old,%s,4000,JPY,,,4\r\n"
               "ad-lp,%s,1000,JPY,,,9\r\n"
               "ad-a,%s,4000.50,JPY,,,4\r\n"
               "ad-b,%s,\xa53000,,,,3\r\n" % (x, x, x, x, y, y))
        r = self.api("POST", "/costs.csv", csv.encode("utf-8"),
                     headers={"Content-Type": "text/csv"})
        self.assertEqual((r.status, r.json()), (200, {"imported": 6}), r)

        def split(d):
            return dict((c, int(n)) for c, n in self.db.sql(
                "SELECT s.code, count(*) FROM acquisition_follows af "
                "JOIN acquisition_sources s ON s.id = af.source_id "
                "WHERE af.estimated AND af.day = '%s' GROUP BY 1" % d))
        # Enough follows: each source gets exactly its reported adds
        # (ad-old is over, ad-lp is not in-app, the unblock never counts).
        self.assertEqual(split(x), {"ad-a": 5, "ad-b": 3})
        # Fewer follows (5) than adds (4 + 3): largest remainder,
        # 5*4/7 = 2 r6 and 5*3/7 = 2 r1, the leftover one goes to ad-a.
        self.assertEqual(split(y), {"ad-a": 3, "ad-b": 2})
        self.assertEqual(self.db.sql(
            "SELECT count(*) FROM friends WHERE source_estimated"),
            [["13"]])
        # Costs known first, follows later: the queue catches up.
        r = self.api("PUT", "/sources/ad-b/costs/%s" % z,
                     {"spend": 2000, "reported_adds": 2})
        self.assertEqual(r.status, 200, r)
        self.deliver([self.event("follow", uid(0x300 + i), self.noon(z, i))
                      for i in range(3)])
        self.follows_applied(21)
        wait_for(lambda: split(z) == {"ad-b": 2}, what="queued estimate")
        rep = self.report(**{"from": str(x), "to": str(z)})
        a, b = self.by_code(rep, "ad-a"), self.by_code(rep, "ad-b")
        self.assertEqual((a["attribution"], a["friends"],
                          a["friends_estimated"], a["reported_adds"]),
                         ("estimated", 8, 8, 9))
        self.assertEqual(Decimal(str(a["spend"])), Decimal("9000.5"))
        self.assertEqual(Decimal(str(a["cpf"])),
                         rnd(Decimal("9000.50") / 8, 2))
        self.assertEqual((b["friends"], b["reported_adds"]), (7, 8))
        self.assertTrue(any("estimated" in n for n in a["notes"]))
        self.assertEqual(self.by_code(rep, "ad-old")["friends"], 0)
        self.assertEqual(rep["unattributed"]["friends"], 21 - 8 - 7)
        self.assertTrue(all(c["estimated"] for c in rep["cohorts"]
                            if c["source"] in ("ad-a", "ad-b")))
        # Changing the reported adds re-splits the day at once.
        r = self.api("PUT", "/sources/ad-b/costs/%s" % x,
                     {"spend": 3000, "reported_adds": 7})
        self.assertEqual(split(x), {"ad-a": 5, "ad-b": 7})
        self.assertEqual(self.api("DELETE", "/sources/ad-b/costs/%s" % x)
                         .status, 204)
        self.assertEqual(split(x), {"ad-a": 5})
        self.assertEqual(self.api("DELETE", "/sources/ad-b/costs/%s" % x)
                         .status, 404)
        # Ending ad-a's period before x drops its estimates there.
        r = self.api("PATCH", "/sources/ad-a",
                     {"active_until": str(self.day(4))})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(split(x), {})
        self.assertEqual(split(y), {"ad-b": 3})

    def test_bad_cost_csv_lists_rows_and_imports_nothing(self):
        self.source("ad-a", kind="cpf_ad")
        csv = ("source,date,spend,friend_adds\n"
               "ad-a,2026-01-01,100,1\n"
               "ad-a,2026-13-01,100,1\n"
               "nope,2026-01-02,100,1\n"
               "ad-a,2026-01-03,abc,1\n"
               "ad-a,2026-01-04,100\n"
               "ad-a,2026-01-01,200,2\n"
               "ad-a,2026-01-05,100,-1\n"
               "ad-a,2026-01-06,\"10\"0,1\n")
        r = self.api("POST", "/costs.csv", csv,
                     headers={"Content-Type": "text/csv"})
        self.assertEqual(r.status, 422, r)
        err = r.json()["error"]
        self.assertEqual(err["code"], "invalid_rows")
        self.assertEqual(sorted(set(e["row"] for e in err["rows"])),
                         [3, 4, 5, 6, 7, 8, 9])
        self.assertEqual(self.db.sql("SELECT count(*) FROM "
                                     "acquisition_costs"), [["0"]])
        for text, rows in [("", [1]), ("source,date\nad-a,2026-01-01\n",
                                       [1]),
                           ("source,date,spend,color\n", [1]),
                           ("source,date,spend\n", [2]),
                           ("source,date,spend,currency\n"
                            "ad-a,2026-01-01,5,USD\n", [2])]:
            r = self.api("POST", "/costs.csv", text,
                         headers={"Content-Type": "text/csv"})
            self.assertIn(r.status, (400, 422), text)
            if r.status == 422:
                self.assertEqual(sorted(set(
                    e["row"] for e in r.json()["error"]["rows"])), rows,
                    text)
        self.assertEqual(self.db.sql("SELECT count(*) FROM "
                                     "acquisition_costs"), [["0"]])

    def test_costs_api(self):
        self.source("ad-a", kind="cpf_ad")
        r = self.api("PUT", "/sources/ad-a/costs/2026-03-01",
                     {"spend": "1234.5", "reported_adds": 10})
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json()["spend"], r.json()["currency"],
                          r.json()["reported_adds"], r.json()["clicks"]),
                         ("1234.5000", "JPY", 10, None))
        # A later value replaces spend and keeps what it does not name.
        r = self.api("PUT", "/sources/ad-a/costs/2026-03-01",
                     {"spend": 1300, "clicks": 5})
        self.assertEqual((r.json()["spend"], r.json()["reported_adds"],
                          r.json()["clicks"]), ("1300.0000", 10, 5))
        for body, path in [({"spend": -1}, "/spend"), ({}, "/spend"),
                           ({"spend": 1, "currency": "USD"}, "/currency"),
                           ({"spend": 1, "reported_adds": 1.5},
                            "/reported_adds"),
                           ({"spend": 1, "x": 1}, "")]:
            r = self.api("PUT", "/sources/ad-a/costs/2026-03-02", body)
            self.assertEqual(r.status, 422, (body, r))
            self.assertEqual(r.json()["error"].get("path", ""), path, body)
        self.assertEqual(self.api("PUT", "/sources/nope/costs/2026-03-02",
                                  {"spend": 1}).status, 404)
        self.assertEqual(self.api("PUT", "/sources/ad-a/costs/2026-02-30",
                                  {"spend": 1}).status, 404)
        r = self.api("POST", "/costs", {"costs": [
            {"source": "ad-a", "date": "2026-03-02", "spend": 1},
            {"source": "nope", "date": "2026-03-03", "spend": 1},
            {"source": "ad-a", "date": "2026-03-04", "spend": "x"}]})
        self.assertEqual(r.status, 422, r)
        self.assertEqual([e["path"] for e in r.json()["error"]["rows"]],
                         ["/costs/1/source", "/costs/2/spend"])
        r = self.api("POST", "/costs", {"costs": [
            {"source": "ad-a", "date": "2026-03-02", "spend": 1},
            {"source": "ad-a", "date": "2026-03-03", "spend": 2.25}]})
        self.assertEqual((r.status, r.json()), (200, {"imported": 2}))
        r = self.api("GET", "/sources/ad-a/costs?from=2026-03-02")
        self.assertEqual([(c["date"], c["spend"]) for c in
                          r.json()["costs"]],
                         [("2026-03-03", "2.2500"), ("2026-03-02",
                                                     "1.0000")])
        self.assertEqual(self.api("GET", "/sources/nope/costs").status, 404)
        r = self.api("GET", "/reports/acquisition?from=2026-03-05&"
                     "to=2026-03-01")
        self.assertEqual(r.status, 422)
        self.assertEqual(self.api("GET", "/reports/acquisition?source=nope")
                         .status, 404)
        r = self.report(**{"from": "2026-03-01", "to": "2026-03-31",
                           "source": "ad-a"})
        self.assertEqual([s["code"] for s in r["sources"]], ["ad-a"])
        self.assertEqual(Decimal(str(r["sources"][0]["spend"])),
                         Decimal("1303.25"))


if __name__ == "__main__":
    main()
