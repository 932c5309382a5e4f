# SPDX-License-Identifier: ISC
"""Tracked links end to end: the links API, GET /c/{token} (302 with utm
parameters and an attribution token), the page-view beacon, the rows and
per-friend rollups they leave, and what happens to forged tokens, tricks
aimed at an open redirect, and a PostgreSQL outage.

Friends are made the way production makes them: signed LINE follow
webhooks, applied by the processor.  Tokens the tests forge on purpose are
signed in Python with the instance key read from instance_keys, using the
wire format of include/musubi/token.h.
"""
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import time
import unittest
import urllib.parse

from musubi_test import (Musubid, PgCluster, ScratchDB, apikey, main,
                         psql)

SECRET_A = "trk-secret-alpha"
SECRET_B = "trk-secret-beta"
T0 = 1735693200000
PAGE_404 = "リンクが無効です"


# --- tokens (token.h: base64url(kind, LEB128 fields) "." base64url(mac12))

def _leb(v):
    out = bytearray()
    while True:
        c = v & 0x7f
        v >>= 7
        out.append(c | 0x80 if v else c)
        if not v:
            return bytes(out)


def _b64(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def make_token(key, kind, channel, link, friend=0, run=0, issued=None):
    body = kind.encode() + _leb(channel) + _leb(link) + _leb(friend) + \
        _leb(run)
    if kind == "a":
        body += _leb(int(time.time()) if issued is None else issued)
    mac = hmac.new(key, body, hashlib.sha256).digest()[:12]
    return _b64(body) + "." + _b64(mac)


def decode_token(key, s):
    """Fields of a token signed with key, or None."""
    try:
        body_s, sig_s = s.split(".")
        pad = lambda x: x + "=" * (-len(x) % 4)  # noqa: E731
        body = base64.urlsafe_b64decode(pad(body_s))
        sig = base64.urlsafe_b64decode(pad(sig_s))
    except ValueError:
        return None
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256)
                               .digest()[:12], sig):
        return None
    fields, off = [], 1
    while off < len(body):
        v, shift = 0, 0
        while True:
            c = body[off]
            off += 1
            v |= (c & 0x7f) << shift
            shift += 7
            if not c & 0x80:
                break
        fields.append(v)
    names = ["channel", "link", "friend", "run", "issued"]
    out = dict(zip(names, fields))
    out["kind"] = chr(body[0])
    return out


# --- LINE follow webhooks

def sign_line(secret, body):
    return base64.b64encode(hmac.new(secret.encode(), body,
                                     hashlib.sha256).digest()).decode()


_seq = [0]


def follow_delivery(users):
    evs = []
    for u in users:
        _seq[0] += 1
        evs.append({"type": "follow", "mode": "active",
                    "timestamp": T0 + _seq[0],
                    "webhookEventId": "01TRK%021d" % (
                        _seq[0] + os.getpid() * 10000),
                    "deliveryContext": {"isRedelivery": False},
                    "source": {"type": "user", "userId": u},
                    "replyToken": os.urandom(16).hex(),
                    "follow": {"isUnblocked": False}})
    return json.dumps({"destination": "U" + "f" * 32,
                       "events": evs}).encode()


def uid(n):
    return "U" + hashlib.md5(("trk-%d" % n).encode()).hexdigest()


def poll(fn, timeout=10, what="condition"):
    """Call fn until it returns something truthy; return that."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.05)


class TrackingBase(unittest.TestCase):
    """Shared plumbing: channels, friends, links, clicks, polling."""

    d = None
    db = None

    @classmethod
    def sql(cls, q):
        return psql(cls.db.url, q)

    @classmethod
    def scalar(cls, q):
        rows = cls.sql(q)
        return rows[0][0] if rows else None

    @classmethod
    def make_channel(cls, d, key, slug, secret):
        r = d.post("/api/v1/channels", {"slug": slug, "name": slug.title(),
                                        "channel_secret": secret}, key=key)
        assert r.status == 201, r
        return r.json()

    @classmethod
    def follow(cls, d, slug, secret, users):
        body = follow_delivery(users)
        r = d.post("/webhooks/line/" + slug, body,
                   headers={"Content-Type": "application/json",
                            "X-Line-Signature": sign_line(secret, body)})
        assert r.status == 200, r

    @classmethod
    def wait_applied(cls):
        poll(lambda: cls.scalar("SELECT count(*) FROM webhook_events "
                                "WHERE state = 0") == "0", 30,
             "the LINE inbox to drain")

    def create_link(self, slug="alpha", key=None, d=None, **body):
        body.setdefault("name", "link")
        body.setdefault("destination", "https://shop.example/")
        r = (d or self.d).post("/api/v1/channels/%s/links" % slug, body,
                               key=key or self.admin)
        self.assertEqual(r.status, 201, r)
        return r.json()

    def link_url(self, link_id, user, slug="alpha"):
        r = self.d.get("/api/v1/channels/%s/links/%d?friend=%s" %
                       (slug, link_id, user), key=self.admin)
        self.assertEqual(r.status, 200, r)
        return r.json()["url"]

    @staticmethod
    def path_of(url):
        return urllib.parse.urlsplit(url).path

    def click(self, url_or_path, headers=None, d=None):
        path = url_or_path
        if path.startswith("http"):
            path = self.path_of(path)
        return (d or self.d).get(path, headers=headers)

    def assert_404_page(self, r):
        self.assertEqual(r.status, 404, r)
        self.assertIsNone(r.header("Location"), r.headers)
        self.assertTrue(r.header("Content-Type").startswith("text/html"),
                        r.headers)
        self.assertIn(PAGE_404, r.body.decode())

    def clicks_of(self, link_id, cols="coalesce(friend_id::text, 'anon')"):
        # (psql() drops empty lines, so a lone NULL must become text.)
        return self.sql("SELECT %s FROM clicks WHERE link_id = %d "
                        "ORDER BY id" % (cols, link_id))

    def wait_clicks(self, link_id, n, timeout=10):
        poll(lambda: len(self.clicks_of(link_id)) >= n, timeout,
             "%d clicks on link %d" % (n, link_id))
        rows = self.clicks_of(link_id)
        self.assertEqual(len(rows), n, rows)
        return rows


class Tracking(TrackingBase):
    """One musubid and database for the class: channels alpha (3 friends)
    and beta (1 friend), built once."""

    @classmethod
    def setUpClass(cls):
        cls.db = ScratchDB()
        try:
            cls.d = Musubid(cls.db.url).start()
            cls.admin = apikey(cls.db.url)
            cls.alpha = cls.make_channel(cls.d, cls.admin, "alpha",
                                         SECRET_A)
            cls.beta = cls.make_channel(cls.d, cls.admin, "beta", SECRET_B)
            cls.users = [uid(i) for i in range(3)]
            cls.beta_user = uid(99)
            cls.follow(cls.d, "alpha", SECRET_A, cls.users)
            cls.follow(cls.d, "beta", SECRET_B, [cls.beta_user])
            cls.wait_applied()
            cls.cid = {s: int(cls.scalar("SELECT id FROM channels WHERE "
                                         "slug = '%s'" % s))
                       for s in ("alpha", "beta")}
            cls.fid = {u: int(cls.scalar("SELECT id FROM friends WHERE "
                                         "user_id = '%s'" % u))
                       for u in cls.users + [cls.beta_user]}
            cls.key = bytes.fromhex(cls.scalar(
                "SELECT encode(key, 'hex') FROM instance_keys "
                "WHERE name = 'tracking'"))
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.d is not None:
            try:
                rc = cls.d.stop()
            finally:
                cls.d.kill()
            log = cls.d.logtext()
            for bad in ("ERROR: AddressSanitizer", "runtime error:",
                        "LeakSanitizer"):
                assert bad not in log, log[-4000:]
            assert rc == 0, "musubid exit %s:\n%s" % (rc, log[-3000:])
        if cls.db is not None:
            cls.db.drop()

    # -- helpers over the class's data

    def redirect(self, url, **kw):
        r = self.click(url, **kw)
        self.assertEqual(r.status, 302, (r, self.d.logtext()[-2000:]))
        self.assertEqual(r.body, b"")
        return r.header("Location")

    def split_location(self, loc):
        """(url without musubi_t, musubi_t value, query pairs)."""
        parts = urllib.parse.urlsplit(loc)
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        toks = [v for k, v in pairs if k == "musubi_t"]
        self.assertEqual(len(toks), 1, loc)
        return parts, toks[0], pairs

    def wait_marker_view(self, before):
        """Send a valid view and wait for it, so that everything sent
        before it has been written (one FIFO queue)."""
        link = self.create_link(name="marker")
        tok = make_token(self.key, "a", self.cid["alpha"], link["id"])
        r = self.d.get("/t/pv?" + urllib.parse.urlencode(
            {"t": tok, "u": "https://shop.example/marker"}))
        self.assertEqual(r.status, 204)
        poll(lambda: int(self.scalar("SELECT count(*) FROM page_views")) >
             before, 10, "the marker page view")
        return int(self.scalar("SELECT count(*) FROM page_views"))

    # -- the redirect

    def test_click_redirects_with_utm_and_attribution_token(self):
        dest = "https://shop.example/item/42?color=red&size=M#reviews"
        link = self.create_link(name="Spring", destination=dest,
                                utm_campaign="spring sale 春")
        user = self.users[0]
        url = self.link_url(link["id"], user)
        self.assertTrue(url.startswith("http://127.0.0.1:%d/c/" %
                                       self.d.port), url)
        t0 = int(time.time())
        r = self.click(url)
        self.assertEqual(r.status, 302, r)
        self.assertEqual(r.header("Cache-Control"), "no-store")
        self.assertEqual(r.header("Referrer-Policy"), "no-referrer")
        loc = r.header("Location")
        parts, tok, pairs = self.split_location(loc)
        # Exactly the stored destination, parameters added before '#'.
        want_prefix = ("https://shop.example/item/42?color=red&size=M"
                       "&utm_source=line&utm_medium=message&utm_campaign=")
        self.assertTrue(loc.startswith(want_prefix), loc)
        self.assertTrue(loc.endswith("#reviews"), loc)
        self.assertEqual(parts.fragment, "reviews")
        self.assertEqual(pairs[:5], [
            ("color", "red"), ("size", "M"), ("utm_source", "line"),
            ("utm_medium", "message"), ("utm_campaign", "spring sale 春")])
        self.assertEqual(pairs[5][0], "musubi_t")
        self.assertEqual(len(pairs), 6, pairs)
        self.assertRegex(tok, r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
        # The attribution token names friend, link, channel, time; no
        # userId anywhere in the URL.
        a = decode_token(self.key, tok)
        self.assertEqual(a["kind"], "a")
        self.assertEqual((a["channel"], a["link"], a["friend"], a["run"]),
                         (self.cid["alpha"], link["id"], self.fid[user], 0))
        self.assertTrue(t0 - 2 <= a["issued"] <= time.time() + 2, a)
        self.assertNotIn(user, loc)
        self.assertNotIn(user, url)
        # The click row and the rollup.
        rows = self.wait_clicks(link["id"], 1)
        self.assertEqual(rows, [[str(self.fid[user])]])
        row = self.sql("SELECT channel_id, run_id IS NULL, ip_hash, "
                       "user_agent, clicked_at > now() - interval '1 min' "
                       "FROM clicks WHERE link_id = %d" % link["id"])[0]
        self.assertEqual(row[0], str(self.cid["alpha"]))
        self.assertEqual(row[1], "t")
        self.assertRegex(row[2], r"^[0-9a-f]{16}$")
        self.assertNotIn("127.0.0.1", row[2])
        self.assertEqual(row[4], "t")
        # A second click: two rows, rollup 2, each with a fresh token.
        loc2 = self.redirect(url)
        self.assertTrue(loc2.startswith(want_prefix), loc2)
        self.wait_clicks(link["id"], 2)
        eng = self.sql("SELECT clicks, first_click_at <= last_click_at "
                       "FROM friend_engagement WHERE friend_id = %d" %
                       self.fid[user])
        self.assertEqual(eng, [["2", "t"]])
        # The list and the single read count the clicks.
        r = self.d.get("/api/v1/channels/alpha/links/%d" % link["id"],
                       key=self.admin)
        self.assertEqual(r.json()["clicks"], 2)
        r = self.d.get("/api/v1/channels/alpha/links", key=self.admin)
        mine = [x for x in r.json()["links"] if x["id"] == link["id"]]
        self.assertEqual(mine[0]["clicks"], 2)
        self.assertEqual(mine[0]["destination"], dest)

    def test_existing_utm_not_duplicated(self):
        dest = ("https://shop.example/?utm_source=news&utm_campaign=autumn"
                "&q=1")
        link = self.create_link(name="has-utm", destination=dest,
                                utm_campaign="ignored")
        loc = self.redirect(link["url"])
        parts, tok, pairs = self.split_location(loc)
        keys = [k for k, _ in pairs]
        for k in ("utm_source", "utm_medium", "utm_campaign"):
            self.assertEqual(keys.count(k), 1, loc)
        self.assertEqual(dict(pairs)["utm_source"], "news")
        self.assertEqual(dict(pairs)["utm_campaign"], "autumn")
        self.assertEqual(dict(pairs)["utm_medium"], "message")
        self.assertTrue(loc.startswith(dest + "&"), loc)
        self.assertEqual(parts.fragment, "")

    def test_no_query_and_link_name_as_campaign(self):
        link = self.create_link(name="Winter Coats",
                                destination="https://shop.example/coats")
        loc = self.redirect(link["url"])
        self.assertTrue(loc.startswith(
            "https://shop.example/coats?utm_source=line&utm_medium=message"
            "&utm_campaign=Winter%20Coats&musubi_t="), loc)
        # The anonymous link: no friend in either token, no friend on the
        # row, no rollup.
        a = decode_token(self.key, self.split_location(loc)[1])
        self.assertEqual(a["friend"], 0)
        rows = self.wait_clicks(link["id"], 1)
        self.assertEqual(rows, [["anon"]])

    def test_fragment_holding_a_question_mark(self):
        """A '?' inside the #fragment is not a query: the utm parameters
        still go into the real query, and the fragment stays as it was."""
        dest = "https://shop.example/p#top?utm_source=x"
        link = self.create_link(name="frag", destination=dest)
        loc = self.redirect(link["url"])
        parts = urllib.parse.urlsplit(loc)
        self.assertEqual(parts.fragment, "top?utm_source=x", loc)
        q = dict(urllib.parse.parse_qsl(parts.query))
        self.assertEqual(q.get("utm_source"), "line", loc)
        self.assertEqual(q.get("utm_medium"), "message", loc)

    def test_longest_destination_redirects(self):
        dest = "https://shop.example/?x=" + "a" * (2000 - 24)
        self.assertEqual(len(dest), 2000)
        link = self.create_link(name="long", destination=dest)
        loc = self.redirect(link["url"])
        self.assertTrue(loc.startswith(dest + "&utm_source=line"), loc[:80])

    # -- the page-view beacon

    def test_page_view_beacon(self):
        link = self.create_link(name="pv", destination="https://shop.example"
                                "/landing")
        user = self.users[1]
        loc = self.redirect(self.link_url(link["id"], user))
        tok = self.split_location(loc)[1]
        page = "https://shop.example/landing?musubi_t=" + tok
        ref = "https://line.me/R/"
        q = urllib.parse.urlencode({"t": tok, "u": page, "r": ref})
        r = self.d.get("/t/pv?" + q)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.header("Access-Control-Allow-Origin"), "*")
        self.assertEqual(r.header("Cache-Control"), "no-store")
        self.assertEqual(r.body, b"")
        r = self.d.get("/t/pv.gif?" + q)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type").startswith("image/gif"))
        self.assertEqual(r.header("Access-Control-Allow-Origin"), "*")
        self.assertTrue(r.body.startswith(b"GIF89a"), r.body[:10])
        # navigator.sendBeacon POSTs (a body musubi ignores).
        r = self.d.post("/t/pv?" + q, "", headers={
            "Content-Type": "text/plain;charset=UTF-8"})
        self.assertEqual(r.status, 204, r)
        fid = self.fid[user]
        poll(lambda: self.scalar("SELECT count(*) FROM page_views WHERE "
                                 "friend_id = %d" % fid) == "3", 10,
             "3 page views")
        rows = self.sql("SELECT link_id, url, referrer, channel_id FROM "
                        "page_views WHERE friend_id = %d" % fid)
        self.assertEqual(rows, [[str(link["id"]), page, ref,
                                 str(self.cid["alpha"])]] * 3)
        eng = self.sql("SELECT page_views, last_view_at IS NOT NULL, "
                       "clicks FROM friend_engagement WHERE friend_id = "
                       "%d" % fid)
        self.assertEqual(eng, [["3", "t", "1"]])

    def test_page_view_rejects_bad_tokens_and_urls(self):
        before = int(self.scalar("SELECT count(*) FROM page_views"))
        link = self.create_link(name="pvbad")
        good = make_token(self.key, "a", self.cid["alpha"], link["id"],
                          self.fid[self.users[2]])
        click_tok = make_token(self.key, "c", self.cid["alpha"], link["id"],
                               self.fid[self.users[2]])
        other_key = make_token(b"k" * 32, "a", self.cid["alpha"],
                               link["id"], self.fid[self.users[2]])
        no_channel = make_token(self.key, "a", 987654321, link["id"],
                                self.fid[self.users[2]])
        page = "https://shop.example/x"
        cases = [
            {"t": good[:-1], "u": page},            # truncated
            {"t": good[:-1] + ("A" if good[-1] != "A" else "B"),
             "u": page},                            # forged signature
            {"t": good + "x", "u": page},           # extended
            {"t": click_tok, "u": page},            # click as attribution
            {"t": other_key, "u": page},            # another key
            {"t": "", "u": page},
            {"u": page},                            # no token
            {"t": good},                            # no url
            {"t": good, "u": "javascript:alert(1)"},
            {"t": good, "u": "ftp://shop.example/"},
            {"t": good, "u": "https://shop.example/" + "a" * 2000},
            {"t": good, "u": page, "r": "https://r.example/" + "b" * 2000},
            {"t": no_channel, "u": page},           # no such channel
        ]
        for c in cases:
            r = self.d.get("/t/pv?" + urllib.parse.urlencode(c))
            self.assertEqual(r.status, 204, (c, r))
            self.assertEqual(r.header("Access-Control-Allow-Origin"), "*")
            r = self.d.get("/t/pv.gif?" + urllib.parse.urlencode(c))
            self.assertEqual(r.status, 200, (c, r))
        after = self.wait_marker_view(before)
        self.assertEqual(after, before + 1,
                         self.sql("SELECT url, referrer FROM page_views"))
        self.assertEqual(self.sql(
            "SELECT count(*) FROM page_views WHERE friend_id = %d" %
            self.fid[self.users[2]]), [["0"]])
        m = self.d.get("/metrics").body.decode()
        self.assertRegex(m, r'musubi_track_events_total\{kind="page_view",'
                         r'stage="rejected"\} \d+')

    # -- bad tokens on /c/

    def test_bad_click_tokens_get_the_404_page(self):
        link = self.create_link(name="bad", destination="https://shop."
                                "example/bad")
        blink = self.create_link("beta", name="beta link",
                                 destination="https://beta.example/")
        good_url = self.link_url(link["id"], self.users[2])
        good = self.path_of(good_url)[3:]
        self.redirect(good_url)               # the good one works
        self.wait_clicks(link["id"], 1)
        ca, fa = self.cid["alpha"], self.fid[self.users[2]]
        attr = self.split_location(self.redirect(good_url))[1]
        self.wait_clicks(link["id"], 2)
        bad = [
            good[:-1],                                       # truncated
            good[:len(good) // 2],
            good + "A",                                      # extended
            good[:-1] + ("B" if good[-1] != "B" else "C"),   # sig altered
            good.split(".")[0] + ".",
            "." + good.split(".")[1],
            good.replace(".", ".."),
            # Standard base64 for url-safe (the vector has '-' or '_').
            good.replace("-", "+").replace("_", "/") if
            ("-" in good or "_" in good) else good.replace(".", "/"),
            "",
            "x",
            "A" * 300,
            "%00" + good,
            good + "%00",
            make_token(b"\x00" * 32, "c", ca, link["id"], fa),  # other key
            make_token(os.urandom(32), "c", ca, link["id"], fa),
            attr,                                        # attribution
            make_token(self.key, "a", ca, link["id"], fa),
            # Another channel's link named with this channel's id, and
            # this channel's link with beta's id.
            make_token(self.key, "c", ca, blink["id"], fa),
            make_token(self.key, "c", self.cid["beta"], link["id"], fa),
            make_token(self.key, "c", 0, link["id"], fa),   # no channel
        ]
        m = self.d.get("/metrics").body.decode()
        n0 = re.search(r'musubi_track_events_total\{kind="click",'
                       r'stage="rejected"\} (\d+)', m)
        n0 = int(n0.group(1)) if n0 else 0
        checked = 0
        for tok in bad:
            r = self.d.get("/c/" + tok)
            self.assertIsNone(r.header("Location"), (tok, r))
            if tok == "" or "%00" in tok or "/" in tok:
                # Usually refused by the router before the token check
                # (JSON 404); a '/' at the end is dropped as an empty
                # segment and reaches it.
                self.assertIn(r.status, (400, 404), (tok, r))
                if not r.header("Content-Type").startswith("text/html"):
                    continue
            self.assert_404_page(r)
            checked += 1
        # None of them was recorded; the beta link never saw a click.
        self.redirect(good_url)
        self.wait_clicks(link["id"], 3)
        time.sleep(0.3)
        self.assertEqual(len(self.clicks_of(link["id"])), 3)
        self.assertEqual(self.clicks_of(blink["id"]), [])
        m = self.d.get("/metrics").body.decode()
        n = re.search(r'musubi_track_events_total\{kind="click",'
                      r'stage="rejected"\} (\d+)', m)
        self.assertEqual(int(n.group(1)) - n0, checked)

    def test_bad_tokens_404_page_is_html(self):
        for path in ("/c/nope", "/c/" + "A" * 10 + "." + "B" * 16):
            self.assert_404_page(self.d.get(path))

    def test_token_for_missing_link_404(self):
        ca = self.cid["alpha"]
        for link_id in (999999, 123456789012):
            tok = make_token(self.key, "c", ca, link_id)
            self.assert_404_page(self.d.get("/c/" + tok))
            # Twice: the second answer comes from the negative cache.
            self.assert_404_page(self.d.get("/c/" + tok))
        self.assertEqual(self.sql("SELECT count(*) FROM clicks WHERE "
                                  "link_id IN (999999, 123456789012)"),
                         [["0"]])

    def test_click_for_unknown_friend_still_redirects_anonymously(self):
        """A signed token naming a friend id that is not a friend of that
        channel (here: beta's friend on an alpha link) redirects, and the
        click is stored without a friend and without a rollup."""
        link = self.create_link(name="foreign-friend")
        fb = self.fid[self.beta_user]
        tok = make_token(self.key, "c", self.cid["alpha"], link["id"], fb)
        self.redirect("/c/" + tok)
        self.assertEqual(self.wait_clicks(link["id"], 1), [["anon"]])
        self.assertEqual(self.sql("SELECT count(*) FROM friend_engagement "
                                  "WHERE friend_id = %d" % fb), [["0"]])

    # -- no open redirect

    def test_never_redirects_to_a_url_from_the_request(self):
        dest = "https://shop.example/safe"
        link = self.create_link(name="safe", destination=dest)
        url = link["url"]
        path = self.path_of(url)
        evil = "https://evil.example/"
        attempts = [
            (path + "?url=" + urllib.parse.quote(evil, safe=""), None),
            (path + "?redirect=" + evil + "&next=" + evil +
             "&destination=" + evil + "&u=" + evil, None),
            (path + "?musubi_t=forged&utm_source=evil", None),
            (path + "#" + evil, None),
            (path, {"Host": "evil.example"}),
            (path, {"X-Forwarded-Host": "evil.example",
                    "X-Forwarded-Proto": "https",
                    "Forwarded": "host=evil.example"}),
            (path, {"X-Original-URL": evil, "X-Rewrite-URL": evil,
                    "Referer": evil, "Origin": "https://evil.example"}),
        ]
        for p, h in attempts:
            r = self.d.get(p, headers=h)
            self.assertEqual(r.status, 302, (p, h, r))
            loc = r.header("Location")
            self.assertTrue(loc.startswith(dest + "?utm_source=line&"),
                            (p, h, loc))
            self.assertNotIn("evil", loc)
        # A second path segment, or the destination in the path: no
        # redirect at all.
        for p in (path + "/" + urllib.parse.quote(evil, safe=""),
                  path + "/https://evil.example", path + "/",
                  "/c/https%3A%2F%2Fevil.example%2F",
                  "/c//evil.example", "//c/" + path[3:] + "/evil.example",
                  path + "%2Fevil.example",
                  path + "%2F%2Fevil.example"):
            r = self.d.get(p)
            if r.status == 302:
                # Only acceptable as the link itself.
                self.assertTrue(r.header("Location").startswith(dest),
                                (p, r.headers))
            else:
                self.assertIn(r.status, (404, 405), (p, r))
                self.assertIsNone(r.header("Location"), p)
        # The response never reflects a header or query value.
        r = self.d.get(path + "?x=%3Cscript%3E")
        self.assertNotIn(b"<script>", r.body)

    # -- the links API

    def test_destination_validation(self):
        bad = [
            "javascript:alert(1)",
            "JAVASCRIPT:alert(document.cookie)//https://x",
            "data:text/html,<script>alert(1)</script>",
            "ftp://shop.example/file",
            "mailto:someone@shop.example",
            "https://",
            "https:///path-only",
            "http://",
            "//evil.example/",
            "shop.example/page",
            "https://shop .example/",
            "https://shop.example/a b",
            "https://shop.example/\r\nSet-Cookie: a=b",
            "https://shop.example/\ttab",
            " https://shop.example/",
            "https://shop.example/" + "a" * (2001 - 21),
        ]
        self.assertEqual(len(bad[-1]), 2001)
        n = int(self.scalar("SELECT count(*) FROM links"))
        for dest in bad:
            r = self.d.post("/api/v1/channels/alpha/links",
                            {"name": "bad", "destination": dest},
                            key=self.admin)
            self.assertEqual(r.status, 422, (dest, r))
            e = r.json()["error"]
            self.assertEqual(e["path"], "/destination", (dest, r))
        self.assertEqual(int(self.scalar("SELECT count(*) FROM links")), n)
        # Other fields.
        for body, path in [
                ({"destination": "https://shop.example/"}, "/name"),
                ({"name": "", "destination": "https://shop.example/"},
                 "/name"),
                ({"name": "x"}, "/destination"),
                ({"name": "x", "destination": 5}, "/destination"),
                ({"name": "x", "destination": "https://shop.example/",
                  "utm_campaign": "c" * 101}, "/utm_campaign"),
                ({"name": "x", "destination": "https://shop.example/",
                  "color": "red"}, "/color")]:
            r = self.d.post("/api/v1/channels/alpha/links", body,
                            key=self.admin)
            self.assertEqual(r.status, 422, (body, r))
            self.assertEqual(r.json()["error"]["path"], path, (body, r))
        # Good ones: http and https, with port, query, fragment.
        for dest in ("http://shop.example", "https://shop.example:8443/a?b=c"
                     "#d", "https://xn--eckwd4c7c.xn--zckzah/"):
            link = self.create_link(name="ok", destination=dest)
            self.assertEqual(link["destination"], dest)
            self.assertEqual(link["utm_campaign"], None)
            self.assertRegex(link["created_at"],
                             r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_personalised_url_per_friend(self):
        link = self.create_link(name="perso")
        urls = {u: self.link_url(link["id"], u) for u in self.users}
        self.assertEqual(len(set(urls.values())), 3)
        for u, url in urls.items():
            self.assertNotIn(u, url)
            c = decode_token(self.key, self.path_of(url)[3:])
            self.assertEqual(c["kind"], "c")
            self.assertEqual(c["friend"], self.fid[u])
            self.redirect(url)
        rows = self.wait_clicks(link["id"], 3)
        self.assertEqual(sorted(int(r[0]) for r in rows),
                         sorted(self.fid[u] for u in self.users))
        # Unknown friend (well-formed): 404; malformed: 422; beta's friend
        # on an alpha link: 404.
        base = "/api/v1/channels/alpha/links/%d" % link["id"]
        r = self.d.get(base + "?friend=" + uid(12345), key=self.admin)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json()["error"]["code"], "not_found")
        r = self.d.get(base + "?friend=" + self.beta_user, key=self.admin)
        self.assertEqual(r.status, 404, r)
        for bad in ("U123", "u" + "a" * 32, "U" + "A" * 32, "",
                    urllib.parse.quote("U' OR '1'='1"), "U" + "g" * 32):
            r = self.d.get(base + "?friend=" + bad, key=self.admin)
            self.assertEqual(r.status, 422, (bad, r))
            self.assertEqual(r.json()["error"]["path"], "?friend")
        # Bad link ids.
        for lid in ("abc", "0", "-1", "1.5", "99999999999999999999",
                    "999999"):
            r = self.d.get("/api/v1/channels/alpha/links/" + lid,
                           key=self.admin)
            self.assertEqual(r.status, 404, (lid, r))
        r = self.d.get("/api/v1/channels/nope/links", key=self.admin)
        self.assertEqual(r.status, 404, r)
        r = self.d.get(base)
        self.assertEqual(r.status, 401, r)

    def test_channel_key_cannot_read_other_channel_links(self):
        blink = self.create_link("beta", name="beta only")
        alink = self.create_link("alpha", name="alpha only")
        ka = apikey(self.db.url, scope="channel:alpha", name="ka")
        # Its own channel works.
        r = self.d.get("/api/v1/channels/alpha/links", key=ka)
        self.assertEqual(r.status, 200, r)
        ids = [x["id"] for x in r.json()["links"]]
        self.assertIn(alink["id"], ids)
        self.assertNotIn(blink["id"], ids)
        # Beta's routes: 403, read or write.
        for r in (self.d.get("/api/v1/channels/beta/links", key=ka),
                  self.d.get("/api/v1/channels/beta/links/%d" % blink["id"],
                             key=ka),
                  self.d.get("/api/v1/channels/beta/links/%d?friend=%s" %
                             (blink["id"], self.beta_user), key=ka),
                  self.d.post("/api/v1/channels/beta/links",
                              {"name": "x",
                               "destination": "https://evil.example/"},
                              key=ka)):
            self.assertEqual(r.status, 403, r)
            self.assertNotIn(b"beta.example", r.body)
        # Beta's link id through alpha's path: not found.
        r = self.d.get("/api/v1/channels/alpha/links/%d" % blink["id"],
                       key=ka)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(int(self.scalar(
            "SELECT count(*) FROM links WHERE destination = "
            "'https://evil.example/'")), 0)

    def test_sql_looking_values_are_data(self):
        name = "x'); DROP TABLE links; --"
        camp = "' OR 1=1; DELETE FROM clicks; --"
        dest = "https://shop.example/?q=%27%3B+DROP+TABLE+clicks%3B--"
        link = self.create_link(name=name, destination=dest,
                                utm_campaign=camp)
        self.assertEqual((link["name"], link["utm_campaign"],
                          link["destination"]), (name, camp, dest))
        ua = "Mozilla'); DROP TABLE clicks; --"
        loc = self.redirect(self.link_url(link["id"], self.users[0]),
                            headers={"User-Agent": ua})
        pairs = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc)
                                            .query))
        self.assertEqual(pairs["utm_campaign"], camp)
        self.assertEqual(pairs["q"], "'; DROP TABLE clicks;--")
        self.wait_clicks(link["id"], 1)
        self.assertEqual(self.clicks_of(link["id"], "user_agent"), [[ua]])
        tok = self.split_location(loc)[1]
        ref = "https://r.example/?x=');DROP TABLE page_views;--"
        page = "https://shop.example/?y=' OR ''='"
        self.assertEqual(self.d.get("/t/pv?" + urllib.parse.urlencode(
            {"t": tok, "u": page, "r": ref})).status, 204)
        poll(lambda: self.sql("SELECT url, referrer FROM page_views WHERE "
                              "link_id = %d" % link["id"]), 10, "the view")
        self.assertEqual(self.sql("SELECT url, referrer FROM page_views "
                                  "WHERE link_id = %d" % link["id"]),
                         [[page, ref]])
        r = self.d.get("/api/v1/channels/alpha/links", key=self.admin)
        self.assertIn(name, [x["name"] for x in r.json()["links"]])


class TrackingHugeIds(TrackingBase):
    """Its own musubid: if it dies, the other tests are not dragged down."""

    def test_token_for_huge_ids_404(self):
        """A correctly signed token may name any id up to INT64_MAX (the
        format allows it); musubid must answer 404, and nothing in it may
        overflow (the link cache hashes the ids)."""
        db = ScratchDB()
        self.addCleanup(db.drop)
        type(self).db = db
        d = Musubid(db.url)
        self.addCleanup(d.kill)
        d.start()
        self.d = d
        key = apikey(db.url)
        self.make_channel(d, key, "alpha", SECRET_A)
        self.admin = key
        link = self.create_link(name="small")
        ca = int(self.scalar("SELECT id FROM channels"))
        tk = bytes.fromhex(self.scalar("SELECT encode(key, 'hex') FROM "
                                       "instance_keys"))
        big = 2 ** 63 - 1
        for ch, ln in ((ca, big), (big, 1), (big, big), (ca, 2 ** 62 + 7),
                       (ca, big // 31 + 1)):
            try:
                r = d.get("/c/" + make_token(tk, "c", ch, ln))
            except OSError as e:
                time.sleep(0.2)
                self.fail("channel %d link %d: %r; musubid: %s\n%s" % (
                    ch, ln, e, d.proc.poll(), "\n".join(
                        line for line in d.logtext().splitlines()
                        if "error" in line)[-1500:]))
            self.assert_404_page(r)
        # Still serving, and nothing undefined happened on the way.
        self.assertEqual(self.click(link["url"]).status, 302)
        self.assertEqual(d.stop(), 0)
        self.assertNotIn("runtime error:", d.logtext())


class TrackingTransientErrors(TrackingBase):
    """A batch that PostgreSQL aborts for a passing reason (a deadlock, as
    two musubid processes updating the same friends' rollups in different
    orders produce; a serialization failure; a cancelled statement) must be
    retried, not dropped: those clicks already got their 302."""

    def test_deadlocked_batch_is_retried_not_dropped(self):
        db = ScratchDB()
        self.addCleanup(db.drop)
        type(self).db = db
        d = Musubid(db.url)
        self.addCleanup(d.kill)
        d.start()
        self.d = d
        self.admin = apikey(db.url)
        self.make_channel(d, self.admin, "alpha", SECRET_A)
        user = uid(3)
        self.follow(d, "alpha", SECRET_A, [user])
        self.wait_applied()
        link = self.create_link(name="dl")
        url = self.link_url(link["id"], user)
        fid = int(self.scalar("SELECT id FROM friends"))
        self.redirect_ok(url)
        self.wait_clicks(link["id"], 1)       # the rollup row exists now

        # Another session holds the friend's rollup row...
        x = subprocess.Popen(["psql", "-X", "-q", "-d", db.url],
                             stdin=subprocess.PIPE, text=True,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL,
                             env=dict(os.environ, PGAPPNAME="trk-locker"))
        self.addCleanup(x.kill)
        x.stdin.write("BEGIN; UPDATE friend_engagement SET clicks = clicks "
                      "WHERE friend_id = %d;\n" % fid)
        x.stdin.flush()
        poll(lambda: self.scalar("SELECT count(*) FROM pg_locks l JOIN "
                                 "pg_stat_activity a USING (pid) WHERE "
                                 "a.application_name = 'trk-locker' AND "
                                 "l.locktype = 'transactionid'") == "1",
             10, "the locker's transaction")
        # ...the click's batch inserts its click row and waits for the
        # rollup row...
        self.redirect_ok(url)
        poll(lambda: self.scalar("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE application_name = 'musubid' AND "
                                 "wait_event_type = 'Lock'") == "1",
             10, "the batch to wait for the rollup row")
        # ...and the other session now inserts a click with the same key
        # as the batch's uncommitted one, so it waits for the batch: a
        # deadlock, and PostgreSQL aborts the batch, which waited first.
        # (The same 40P01 happens between two musubid processes whose
        # batches update the same friends' rollups in different orders.)
        ch = int(self.scalar("SELECT id FROM channels"))
        x.stdin.write("INSERT INTO clicks (channel_id, id, link_id, "
                      "clicked_at) OVERRIDING SYSTEM VALUE SELECT %d, "
                      "last_value, %d, now() FROM clicks_id_seq;\n"
                      "ROLLBACK;\n" % (ch, link["id"]))
        x.stdin.close()
        x.wait(20)
        poll(lambda: "deadlock" in d.logtext(), 10, "the deadlock")
        # The click got its 302, so it must be written.
        rows = self.wait_clicks(link["id"], 2, timeout=10)
        self.assertEqual(rows, [[str(fid)], [str(fid)]])
        m = d.get("/metrics").body.decode()
        self.assertNotRegex(m, r'musubi_track_dropped_total\{[^}]*\} [1-9]')
        self.assertEqual(d.stop(), 0)

    def redirect_ok(self, url):
        r = self.click(url)
        self.assertEqual(r.status, 302, r)


class TrackingOutage(TrackingBase):
    """PostgreSQL goes away: a cached link still redirects, the clicks wait
    in musubid and are written once PostgreSQL is back."""

    def test_cached_link_redirects_while_postgres_is_down(self):
        pg = PgCluster()
        self.addCleanup(pg.destroy)
        pg.start()
        db = ScratchDB.__new__(ScratchDB)
        db.url = pg.url
        type(self).db = db
        d = Musubid(pg.url, env={"MUSUBI_DB_CONNECT_TIMEOUT": "1s"})
        self.addCleanup(d.kill)
        d.start()
        self.d = d
        self.admin = apikey(pg.url)
        self.make_channel(d, self.admin, "alpha", SECRET_A)
        user = uid(7)
        self.follow(d, "alpha", SECRET_A, [user])
        self.wait_applied()
        link = self.create_link(name="cached",
                                destination="https://shop.example/o")
        other = self.create_link(name="cold",
                                 destination="https://shop.example/c")
        url = self.link_url(link["id"], user)
        fid = int(self.scalar("SELECT id FROM friends"))
        loc = self.click(url).header("Location")   # warms the cache
        tok = urllib.parse.parse_qs(urllib.parse.urlsplit(loc)
                                    .query)["musubi_t"][0]
        self.wait_clicks(link["id"], 1)

        pg.stop("fast")
        locs = []
        for _ in range(5):
            r = self.click(url)
            self.assertEqual(r.status, 302, (r, d.logtext()[-2000:]))
            locs.append(r.header("Location"))
            self.assertTrue(locs[-1].startswith("https://shop.example/o?"))
        # A link never seen: musubid cannot know it, so it says "retry"
        # rather than 404 (which would be a lie) or a redirect.
        r = self.click(other["url"])
        self.assertEqual(r.status, 503, r)
        self.assertIsNone(r.header("Location"))
        # Beacons are taken too.
        for i in range(2):
            r = d.get("/t/pv?" + urllib.parse.urlencode(
                {"t": tok, "u": "https://shop.example/o?p=%d" % i}))
            self.assertEqual(r.status, 204)
        m = d.get("/metrics").body.decode()
        self.assertIn('musubi_track_events_total{kind="click",'
                      'stage="queued"} 6', m)
        time.sleep(0.5)
        pg.start()
        self.wait_clicks(link["id"], 6, timeout=20)
        self.assertEqual(self.sql("SELECT clicks FROM friend_engagement "
                                  "WHERE friend_id = %d" % fid), [["6"]])
        poll(lambda: self.scalar("SELECT count(*) FROM page_views") == "2",
             20, "the buffered page views")
        m = d.get("/metrics").body.decode()
        self.assertIn('musubi_track_events_total{kind="click",'
                      'stage="stored"} 6', m)
        self.assertNotRegex(m, r'musubi_track_dropped_total\{[^}]*\} [1-9]')
        # The cold link works again once PostgreSQL is back.
        poll(lambda: self.click(other["url"]).status == 302, 10,
             "the cold link to redirect")
        self.assertEqual(d.stop(), 0)
        log = d.logtext()
        self.assertNotIn("runtime error:", log)
        self.assertNotIn("AddressSanitizer", log)


if __name__ == "__main__":
    main()
