# SPDX-License-Identifier: ISC
"""The friend and tag API: /api/v1/channels/{slug}/friends and /tags.

Friends are made the way production makes them: signed follow, unfollow
and message webhooks, applied by the processor, with profiles fetched from
a stand-in LINE profile API (FakeLine from test_line_webhook).
"""
import base64
import threading
import time
import unittest
import urllib.parse

import test_line_webhook as line
from musubi_test import ScratchDB, Musubid, apikey, main

HOUR = 3600 * 1000
FIELDS = {"user_id", "status", "display_name", "picture_url", "language",
          "followed_at", "first_followed_at", "unfollowed_at",
          "follow_count", "is_unblocked", "profile_state", "tags",
          "created_at"}
SPECIAL = {
    5: "Hanako 田中",
    6: "hanako SUZUKI",
    7: "100% Pure_Love \\o/",
    8: "Robert'); DROP TABLE friends;--",
    9: "50_50 Shop",
    10: "x%y",
}
N_FOLLOWERS = 120
N_UNKNOWN = 5


def iso(ms, offset_hours=0):
    """RFC 3339 for a LINE millisecond time, in the given UTC offset."""
    t = time.gmtime(ms // 1000 + offset_hours * 3600)
    s = time.strftime("%Y-%m-%dT%H:%M:%S", t)
    if offset_hours == 0:
        return s + "Z"
    return s + "%+03d:00" % offset_hours


def qs(**kw):
    return "?" + urllib.parse.urlencode(kw) if kw else ""


def b64url(s):
    return base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")


class FriendList(line.LineMixin, unittest.TestCase):
    """125 friends of "shop", built once and read by every test."""

    @classmethod
    def setUpClass(cls):
        cls.fake = line.FakeLine()
        cls.db = ScratchDB()
        try:
            cls.d = Musubid(cls.db.url, env={
                "MUSUBI_LINE_API_BASE": cls.fake.url}).start()
            cls.admin = apikey(cls.db.url)
            cls.build()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "d", None) is not None:
            cls.d.kill()
        if getattr(cls, "db", None) is not None:
            cls.db.drop()
        cls.fake.stop()

    @classmethod
    def build(cls):
        tc = cls("run")         # an instance, to borrow LineMixin's helpers
        tc.line_channel("shop", token="tok-shop")
        cls.secrets = tc.secrets
        cls.users = [line.user_id("f%d" % i) for i in range(N_FOLLOWERS)]
        cls.unknown = [line.user_id("u%d" % i) for i in range(N_UNKNOWN)]
        events = []
        for i, u in enumerate(cls.users):
            cls.fake.profile(u, SPECIAL.get(i, "ユーザー%03d" % i),
                             language="ja")
            events.append(line.follow(u, line.T0 + i * HOUR))
            if i % 10 == 3:
                events.append(line.unfollow(u, line.T0 + i * HOUR +
                                            HOUR // 2))
        for i, u in enumerate(cls.unknown):
            e = line.text(u, line.T0 + i, "グループで発言")
            e["source"] = {"type": "group", "groupId": "C" + "1" * 32,
                           "userId": u}
            events.append(e)
        for i in range(0, len(events), 20):
            tc.deliver_ok("shop", line.delivery(*events[i:i + 20]))
        tc.wait_applied()
        deadline = time.time() + 60
        while time.time() < deadline:
            if cls.db.sql("SELECT count(*) FROM friends WHERE "
                          "profile_state = 'pending'")[0][0] == "0":
                break
            time.sleep(0.1)
        else:
            raise AssertionError("profiles not fetched:\n" +
                                 cls.d.logtext()[-3000:])
        cls.total = N_FOLLOWERS + N_UNKNOWN
        cls.blocked = sum(1 for i in range(N_FOLLOWERS) if i % 10 == 3)

    def get(self, query="", status=200, key=None):
        r = self.d.get("/api/v1/channels/shop/friends" + query,
                       key=key or self.admin)
        self.assertEqual(r.status, status, r)
        return r.json()

    def walk(self, **kw):
        """Every page of a listing: the user ids, in order."""
        seen, cursor, pages = [], None, 0
        while True:
            args = dict(kw)
            if cursor:
                args["cursor"] = cursor
            page = self.get(qs(**args))
            seen += [f["user_id"] for f in page["friends"]]
            cursor = page["next_cursor"]
            pages += 1
            if cursor is None:
                return seen, pages
            self.assertLess(pages, 1000)

    def names(self, **kw):
        return sorted(f["display_name"] for f in
                      self.get(qs(limit=500, **kw))["friends"])

    def test_default_page_and_fields(self):
        page = self.get()
        self.assertEqual(len(page["friends"]), 50)
        self.assertIsNotNone(page["next_cursor"])
        for f in page["friends"]:
            self.assertEqual(set(f), FIELDS)
        byid = {f["user_id"]: f for f in
                self.get(qs(limit=500))["friends"]}
        a = byid[self.users[1]]
        self.assertEqual(a["status"], "following")
        self.assertEqual(a["display_name"], "ユーザー001")
        self.assertEqual(a["language"], "ja")
        self.assertEqual(a["profile_state"], "ok")
        self.assertEqual(a["follow_count"], 1)
        self.assertFalse(a["is_unblocked"])
        self.assertEqual(a["followed_at"], iso(line.T0 + HOUR)[:-1] +
                         ".000Z")
        self.assertEqual(a["first_followed_at"], a["followed_at"])
        self.assertIsNone(a["unfollowed_at"])
        self.assertEqual(a["tags"], [])
        self.assertRegex(a["created_at"],
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        b = byid[self.users[3]]
        self.assertEqual(b["status"], "blocked")
        self.assertEqual(b["unfollowed_at"], iso(line.T0 + 3 * HOUR +
                                                 HOUR // 2)[:-1] + ".000Z")
        u = byid[self.unknown[0]]
        self.assertEqual(u["status"], "unknown")
        self.assertIsNone(u["followed_at"])
        self.assertEqual(u["profile_state"], "unavailable")
        self.assertIsNone(u["display_name"])

    def test_pagination_walks_everything_once(self):
        for limit in (1, 7, 50, 124, 125, 500):
            seen, pages = self.walk(limit=limit)
            self.assertEqual(len(seen), self.total, limit)
            self.assertEqual(len(set(seen)), self.total, limit)
            self.assertEqual(pages, -(-self.total // limit), limit)
        self.assertEqual(set(seen), set(self.users + self.unknown))
        # the same order whatever the page size
        self.assertEqual(self.walk(limit=7)[0], self.walk(limit=500)[0])

    def test_status_filter(self):
        want = {"following": self.total - N_UNKNOWN - self.blocked,
                "blocked": self.blocked, "unknown": N_UNKNOWN}
        for status, n in want.items():
            seen, _ = self.walk(status=status, limit=9)
            self.assertEqual(len(seen), n, status)
            for f in self.get(qs(status=status, limit=500))["friends"]:
                self.assertEqual(f["status"], status)
        self.assertEqual(sorted(self.walk(status="unknown")[0]),
                         sorted(self.unknown))

    def test_followed_window(self):
        lo, hi = line.T0 + 10 * HOUR, line.T0 + 20 * HOUR
        want = sorted(self.users[10:20])
        for after, before in [(iso(lo), iso(hi)),
                              (iso(lo, 9), iso(hi, 9)),
                              (iso(lo, -5), iso(hi, 14)),
                              (iso(lo).replace("T", "t").lower(),
                               iso(hi)[:-1] + ".000+00:00")]:
            got = self.get(qs(followed_after=after, followed_before=before,
                              limit=500))["friends"]
            self.assertEqual(sorted(f["user_id"] for f in got), want,
                             (after, before))
        # an unencoded "+" in the URL arrives as a space: still understood
        got = self.get("?followed_after=%s&limit=500" %
                       iso(lo, 9))["friends"]
        self.assertEqual(len(got), N_FOLLOWERS - 10)
        got = self.get(qs(followed_after=iso(line.T0 + 115 * HOUR),
                          status="following"))["friends"]
        self.assertEqual(sorted(f["user_id"] for f in got),
                         sorted(self.users[i] for i in range(115, 120)
                                if i % 10 != 3))
        self.assertEqual(self.get(qs(followed_after=iso(hi),
                                     followed_before=iso(lo)))["friends"],
                         [])

    def test_search_is_case_insensitive_substring(self):
        self.assertEqual(self.names(q="hanako"),
                         ["Hanako 田中", "hanako SUZUKI"])
        self.assertEqual(self.names(q="HANAKO"),
                         ["Hanako 田中", "hanako SUZUKI"])
        self.assertEqual(self.names(q="田中"), ["Hanako 田中"])
        self.assertEqual(len(self.names(q="ユーザー")),
                         N_FOLLOWERS - len(SPECIAL))
        self.assertEqual(self.names(q="ユーザー11"),
                         ["ユーザー110", "ユーザー111", "ユーザー112",
                          "ユーザー113", "ユーザー114", "ユーザー115",
                          "ユーザー116", "ユーザー117", "ユーザー118",
                          "ユーザー119"])
        self.assertEqual(self.names(q="no such name"), [])
        self.assertEqual(len(self.get(qs(q="", limit=500))["friends"]),
                         self.total)
        self.assertEqual(self.names(q="hanako", status="blocked"), [])

    def test_search_wildcards_and_sql_are_just_text(self):
        self.assertEqual(self.names(q="%"), ["100% Pure_Love \\o/", "x%y"])
        self.assertEqual(self.names(q="_"), ["100% Pure_Love \\o/",
                                             "50_50 Shop"])
        self.assertEqual(self.names(q="\\"), ["100% Pure_Love \\o/"])
        self.assertEqual(self.names(q="0_5"), ["50_50 Shop"])
        self.assertEqual(self.names(q="x_y"), [])
        self.assertEqual(self.names(q="%%"), [])
        for q in ["'); DROP TABLE friends;--", "' OR '1'='1",
                  "'; SELECT pg_sleep(5);--"]:
            got = self.names(q=q)
            if q.startswith("')"):
                self.assertEqual(got, ["Robert'); DROP TABLE friends;--"])
            else:
                self.assertEqual(got, [])
        self.assertEqual(len(self.walk(limit=500)[0]), self.total)

    def test_tag_filter(self):
        tagged = self.users[20:26]
        for u in tagged:
            r = self.d.post("/api/v1/channels/shop/friends/%s/tags" % u,
                            {"tags": ["filter-test"]}, key=self.admin)
            self.assertEqual(r.status, 200, r)
        got = self.get(qs(tag="filter-test", limit=500))["friends"]
        self.assertEqual(sorted(f["user_id"] for f in got), sorted(tagged))
        for f in got:
            self.assertIn("filter-test", f["tags"])
        seen, pages = self.walk(tag="filter-test", limit=4)
        self.assertEqual((sorted(seen), pages), (sorted(tagged), 2))
        got = self.get(qs(tag="filter-test", status="blocked"))["friends"]
        self.assertEqual([f["user_id"] for f in got], [self.users[23]])
        self.assertEqual(self.get(qs(tag="no-such-tag"))["friends"], [])

    def test_bad_cursor_400(self):
        for c in ["!!!", "Zm9v", b64url("-5"), b64url("0"), b64url("12a"),
                  b64url("1" * 40), b64url(" 12"), "A", "=" * 8,
                  b64url("99999999999999999999")]:
            r = self.d.get("/api/v1/channels/shop/friends" + qs(cursor=c),
                           key=self.admin)
            self.assertEqual(r.status, 400, (c, r))
            self.assertEqual(r.json()["error"]["code"], "bad_cursor")
        # a well-formed cursor past the end is an empty page, not an error
        page = self.get(qs(cursor=b64url("1")))
        self.assertEqual(page, {"friends": [], "next_cursor": None})

    def test_bad_filters_422_name_the_parameter(self):
        cases = [
            ("status", "active"), ("status", ""), ("status", "FOLLOWING"),
            ("followed_after", "yesterday"),
            ("followed_after", "2024-13-01T00:00:00Z"),
            ("followed_after", "2023-02-29T00:00:00Z"),
            ("followed_after", "2024-01-01T00:00:00"),
            ("followed_after", "2024-01-01"),
            ("followed_before", "2024-01-01T24:00:00Z"),
            ("followed_before", "2024-01-01T00:00:00+16:00"),
            ("followed_before", "2024-01-01T00:00:00.Z"),
            ("followed_before", "2024-01-01T00:00:00Z junk"),
            ("limit", "0"), ("limit", "501"), ("limit", "abc"),
            ("limit", "-1"), ("limit", "1e2"), ("limit", ""),
            ("limit", " 5"), ("limit", "5000"),
            ("followed_after", "2024-02-29T23:59:60.5Z"),
            ("tag", "x" * 101), ("tag", ""), ("q", "あ" * 201),
        ]
        for name, value in cases:
            r = self.d.get("/api/v1/channels/shop/friends" +
                           qs(**{name: value}), key=self.admin)
            self.assertEqual(r.status, 422, (name, value, r))
            err = r.json()["error"]
            self.assertEqual(err["path"], "?" + name, (name, value))
            self.assertEqual(err["code"], "invalid_value")
        # bytes that are not UTF-8 are refused here, not by PostgreSQL
        for raw, name in [("q=%FF", "q"), ("q=a%C3%28", "q"),
                          ("tag=%ED%A0%80", "tag"), ("tag=%C0%AF", "tag")]:
            r = self.d.get("/api/v1/channels/shop/friends?" + raw,
                           key=self.admin)
            self.assertEqual(r.status, 422, (raw, r))
            self.assertEqual(r.json()["error"]["path"], "?" + name)
        # the edges that are fine
        self.assertEqual(len(self.get(qs(limit="500"))["friends"]),
                         self.total)
        self.get(qs(followed_after="2024-02-29T23:59:60.000000000-12:00"))
        self.get(qs(followed_after="0001-01-01T00:00:00+15:59",
                    followed_before="9999-12-31T23:59:59.999999999-15:59"))
        self.get(qs(tag="x" * 100, q="あ" * 200))

    def test_needs_a_key_of_this_channel(self):
        r = self.d.get("/api/v1/channels/shop/friends")
        self.assertEqual(r.status, 401)
        r = self.d.get("/api/v1/channels/nope/friends", key=self.admin)
        self.assertEqual(r.status, 404)


class FriendCase(line.LineTestCase):
    """One musubid and a fresh database per test."""

    def follow_all(self, slug, *users, ts=line.T0):
        self.deliver_ok(slug, line.delivery(*[line.follow(u, ts + i)
                                              for i, u in
                                              enumerate(users)]))
        self.wait_applied()

    def api(self, method, path, body=None, key=None, slug="shop"):
        return self.d.request(method, "/api/v1/channels/%s%s" % (slug, path),
                              body=body, key=key or self.admin)


class FriendDetail(FriendCase):
    def test_history_and_timeline(self):
        self.line_channel()
        u = line.user_id("d")
        t = line.T0
        evs = [line.follow(u, t), line.unfollow(u, t + 10 * HOUR),
               line.follow(u, t + 20 * HOUR, True)]
        for i in range(60):
            evs.append(line.text(u, t + 21 * HOUR + i * 1000, "msg %02d" % i,
                                 str(7 * 10**17 + i)))
        pb = line.event("postback", u, t + 22 * HOUR,
                        postback={"data": "action=buy&item=1"})
        evs.append(pb)
        evs.append(line.unsend(u, t + 22 * HOUR + 1, str(7 * 10**17 + 59)))
        evs.append(line.event("message", u, t + 22 * HOUR + 2,
                              mode="standby", message={
                                  "type": "sticker", "id": "42",
                                  "packageId": "1", "stickerId": "2"}))
        # in two deliveries, the second first
        self.deliver_ok("shop", line.delivery(*evs[30:]))
        self.deliver_ok("shop", line.delivery(*evs[:30]))
        self.wait_applied()
        r = self.api("GET", "/friends/" + u)
        self.assertEqual(r.status, 200, r)
        f = r.json()
        self.assertTrue(FIELDS <= set(f))
        self.assertEqual(f["status"], "following")
        self.assertEqual(f["follow_count"], 2)
        self.assertTrue(f["is_unblocked"])
        self.assertEqual(f["status_history"], [
            {"type": "follow", "at": iso(t)[:-1] + ".000Z",
             "is_unblocked": False},
            {"type": "unfollow", "at": iso(t + 10 * HOUR)[:-1] + ".000Z",
             "is_unblocked": None},
            {"type": "follow", "at": iso(t + 20 * HOUR)[:-1] + ".000Z",
             "is_unblocked": True}])
        tl = f["timeline"]
        self.assertEqual(len(tl), 50)
        self.assertEqual(set(tl[0]), {"type", "subtype", "at", "mode",
                                      "text", "postback_data", "message_id",
                                      "unsent"})
        self.assertEqual([e["at"] for e in tl],
                         sorted([e["at"] for e in tl], reverse=True))
        self.assertEqual((tl[0]["type"], tl[0]["subtype"], tl[0]["mode"]),
                         ("message", "sticker", "standby"))
        self.assertEqual((tl[1]["type"], tl[1]["message_id"]),
                         ("unsend", str(7 * 10**17 + 59)))
        self.assertEqual((tl[2]["type"], tl[2]["postback_data"]),
                         ("postback", "action=buy&item=1"))
        self.assertEqual(tl[3], {"type": "message", "subtype": "text",
                                 "at": iso(t + 21 * HOUR + 59000)[:-1] +
                                 ".000Z", "mode": "active", "text": None,
                                 "postback_data": None,
                                 "message_id": str(7 * 10**17 + 59),
                                 "unsent": True})
        self.assertEqual(tl[4]["text"], "msg 58")
        self.assertFalse(tl[4]["unsent"])
        cursor = f["timeline_next_cursor"]
        self.assertIsNotNone(cursor)
        seen = [(e["type"], e["at"], e["text"]) for e in tl]
        while cursor:
            r = self.api("GET", "/friends/%s?before=%s" % (u, cursor))
            self.assertEqual(r.status, 200, r)
            page = r.json()
            self.assertLessEqual(len(page["timeline"]), 50)
            seen += [(e["type"], e["at"], e["text"])
                     for e in page["timeline"]]
            cursor = page["timeline_next_cursor"]
            self.assertEqual(page["status_history"], f["status_history"])
        self.assertEqual(len(seen), len(evs))
        self.assertEqual(len(set(seen)), len(evs))
        self.assertEqual(seen[-3:], [
            ("follow", iso(t + 20 * HOUR)[:-1] + ".000Z", None),
            ("unfollow", iso(t + 10 * HOUR)[:-1] + ".000Z", None),
            ("follow", iso(t)[:-1] + ".000Z", None)])

    def test_same_time_events_page_without_loss(self):
        self.line_channel()
        u = line.user_id("same")
        evs = [line.text(u, line.T0, "m%03d" % i) for i in range(120)]
        self.deliver_ok("shop", line.delivery(*evs))
        self.wait_applied()
        texts, cursor = [], ""
        while True:
            r = self.api("GET", "/friends/%s%s" % (u, cursor))
            page = r.json()
            texts += [e["text"] for e in page["timeline"]]
            if page["timeline_next_cursor"] is None:
                break
            cursor = "?before=" + page["timeline_next_cursor"]
        self.assertEqual(sorted(texts), sorted("m%03d" % i
                                               for i in range(120)))

    def test_unknown_friend_and_bad_cursor(self):
        self.line_channel()
        u, v = line.user_id(1), line.user_id(2)
        self.follow_all("shop", u, v)
        for who in [line.user_id(3), "Uxyz", "'; DROP TABLE friends;--",
                    "%25", u.upper()]:
            r = self.api("GET", "/friends/" + urllib.parse.quote(who))
            self.assertEqual(r.status, 404, (who, r))
            self.assertEqual(r.json()["error"]["code"], "not_found")
        for raw in ["%FF", "U%FF", "%ED%A0%80", "%00"]:
            r = self.api("GET", "/friends/" + raw)
            self.assertEqual(r.status, 404, (raw, r))
            r = self.api("POST", "/friends/%s/tags" % raw, {"tags": ["a"]})
            self.assertEqual(r.status, 404, (raw, r))
        for c in ["nope!", b64url("x"), b64url("0")]:
            r = self.api("GET", "/friends/%s?before=%s" % (u, c))
            self.assertEqual(r.status, 400, r)
            self.assertEqual(r.json()["error"]["code"], "bad_cursor")
        # a cursor from another friend's timeline is refused too
        vid = self.db.sql("SELECT id FROM interactions WHERE user_id = "
                          "'%s'" % v)[0][0]
        r = self.api("GET", "/friends/%s?before=%s" % (u, b64url(vid)))
        self.assertEqual(r.status, 400, r)
        self.assertEqual(self.count("friends"), 2)


class Tags(FriendCase):
    def setUp(self):
        super().setUp()
        self.line_channel()
        self.u = [line.user_id("t%d" % i) for i in range(3)]
        self.follow_all("shop", *self.u)

    def tag(self, u, tags, status=200):
        r = self.api("POST", "/friends/%s/tags" % u, {"tags": tags})
        self.assertEqual(r.status, status, r)
        return r.json() if r.body else None

    def tags(self, slug="shop"):
        r = self.api("GET", "/tags", slug=slug)
        self.assertEqual(r.status, 200, r)
        return [(t["name"], t["friends"]) for t in r.json()["tags"]]

    def test_add_is_idempotent_and_returns_the_list(self):
        u = self.u[0]
        self.assertEqual(self.tag(u, ["vip", "リピーター"]),
                         {"tags": ["vip", "リピーター"]})
        self.assertEqual(self.tag(u, ["vip", "リピーター", "vip"]),
                         {"tags": ["vip", "リピーター"]})
        self.assertEqual(self.tag(u, ["新規", "VIP"]),
                         {"tags": ["VIP", "vip", "リピーター", "新規"]})
        self.tag(self.u[1], ["vip"])
        self.assertEqual(self.tags(), [("VIP", 1), ("vip", 2),
                                       ("リピーター", 1), ("新規", 1)])
        r = self.api("GET", "/friends/" + u)
        self.assertEqual(r.json()["tags"], ["VIP", "vip", "リピーター",
                                            "新規"])
        self.assertEqual(self.count("friend_tags"), 5)
        r = self.api("GET", "/tags")
        for t in r.json()["tags"]:
            self.assertEqual(set(t), {"name", "friends", "created_at"})

    def test_remove(self):
        u, v = self.u[0], self.u[1]
        self.tag(u, ["vip", "a/b", "50%", "リピーター"])
        self.tag(v, ["vip"])
        for name in ["vip", "a/b", "50%", "リピーター"]:
            r = self.api("DELETE", "/friends/%s/tags/%s" %
                         (u, urllib.parse.quote(name, safe="")))
            self.assertEqual(r.status, 204, (name, r))
            self.assertEqual(r.body, b"")
        self.assertEqual(self.api("GET", "/friends/" + u).json()["tags"], [])
        # the tag stays (v still has it; a/b now has nobody)
        self.assertEqual(self.tags(), [("50%", 0), ("a/b", 0), ("vip", 1),
                                       ("リピーター", 0)])
        # detaching again is fine; unknown tag or friend is 404
        r = self.api("DELETE", "/friends/%s/tags/vip" % u)
        self.assertEqual(r.status, 204, r)
        for name in ["nope", "%FF", "x" * 101]:
            r = self.api("DELETE", "/friends/%s/tags/%s" % (u, name))
            self.assertEqual(r.status, 404, (name, r))
            if name != "%FF":   # not UTF-8: refused by the router itself
                self.assertIn("tag", r.json()["error"]["message"])
        r = self.api("DELETE", "/friends/%s/tags/vip" % line.user_id(9))
        self.assertEqual(r.status, 404, r)
        self.assertIn("friend", r.json()["error"]["message"])
        self.assertEqual(self.api("GET", "/friends/" + v).json()["tags"],
                         ["vip"])

    def test_unknown_friend_404_creates_nothing(self):
        self.tag(line.user_id(9), ["ghost"], status=404)
        self.assertEqual(self.tags(), [])
        self.assertEqual(self.count("tags"), 0)

    def test_bad_bodies_422_with_path(self):
        u = self.u[0]
        cases = [
            ({}, "/tags", "required"),
            ({"tags": None}, "/tags", "required"),
            ({"tags": "vip"}, "/tags", "invalid_type"),
            ({"tags": {"0": "vip"}}, "/tags", "invalid_type"),
            ({"tags": []}, "/tags", "invalid_length"),
            ({"tags": ["t%d" % i for i in range(51)]}, "/tags",
             "invalid_length"),
            ({"tags": ["a", "b", ""]}, "/tags/2", "invalid_value"),
            ({"tags": ["x" * 101]}, "/tags/0", "invalid_value"),
            ({"tags": ["ok", 1]}, "/tags/1", "invalid_type"),
            ({"tags": ["ok", None]}, "/tags/1", "invalid_type"),
            ({"tags": ["ok", ["nested"]]}, "/tags/1", "invalid_type"),
            ({"tags": ["line\nbreak"]}, "/tags/0", "invalid_value"),
            ({"tags": ["vip"], "color": "red"}, "/color", "unknown_field"),
        ]
        for body, path, code in cases:
            r = self.api("POST", "/friends/%s/tags" % u, body)
            self.assertEqual(r.status, 422, (body, r))
            err = r.json()["error"]
            self.assertEqual((err["path"], err["code"]), (path, code), body)
        for raw in ["not json", "[1]", '"vip"', '{"tags": ["a\\u0000b"]}']:
            r = self.api("POST", "/friends/%s/tags" % u, raw)
            self.assertEqual(r.status, 400, (raw, r))
        self.assertEqual(self.count("tags"), 0)
        # the limits themselves are fine
        got = self.tag(u, ["あ" * 100] + ["t%02d" % i for i in range(49)])
        self.assertEqual(len(got["tags"]), 50)

    def test_sql_looking_names_are_data(self):
        u = self.u[0]
        names = ["x'); DROP TABLE tags;--", "' OR 1=1 --", "$1", "%", "_",
                 "\\"]
        self.assertEqual(sorted(self.tag(u, names)["tags"]), sorted(names))
        self.assertEqual(sorted(n for n, _ in self.tags()), sorted(names))
        r = self.d.get("/api/v1/channels/shop/friends" + qs(tag="%"),
                       key=self.admin)
        self.assertEqual([f["user_id"] for f in r.json()["friends"]], [u])
        r = self.d.get("/api/v1/channels/shop/friends" + qs(tag="_"),
                       key=self.admin)
        self.assertEqual(len(r.json()["friends"]), 1)

    def test_concurrent_tagging_with_a_new_tag(self):
        users = [line.user_id("c%d" % i) for i in range(12)]
        self.follow_all("shop", *users)
        results = []
        barrier = threading.Barrier(len(users))

        def one(u):
            barrier.wait()
            r = self.api("POST", "/friends/%s/tags" % u,
                         {"tags": ["同時", "vip"]})
            results.append((r.status, r.json()))

        threads = [threading.Thread(target=one, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [(200, {"tags": ["vip", "同時"]})] *
                         len(users))
        self.assertEqual(self.tags(), [("vip", 12), ("同時", 12)])


class ChannelScope(FriendCase):
    def setUp(self):
        super().setUp()
        self.line_channel("shop", secret="secret-shop")
        self.line_channel("other", secret="secret-other")
        self.both = line.user_id("both")
        self.mine = line.user_id("mine")
        self.theirs = line.user_id("theirs")
        self.follow_all("shop", self.both, self.mine)
        self.follow_all("other", self.both, self.theirs)
        self.shop_key = apikey(self.db.url, scope="channel:shop")
        self.other_key = apikey(self.db.url, scope="channel:other")

    def test_other_channels_friends_are_404(self):
        r = self.api("GET", "/friends/" + self.theirs)
        self.assertEqual(r.status, 404, r)
        r = self.api("POST", "/friends/%s/tags" % self.theirs,
                     {"tags": ["x"]})
        self.assertEqual(r.status, 404, r)
        r = self.api("GET", "/friends/" + self.theirs, slug="other")
        self.assertEqual(r.status, 200, r)
        listed = [f["user_id"] for f in
                  self.api("GET", "/friends").json()["friends"]]
        self.assertEqual(sorted(listed), sorted([self.both, self.mine]))

    def test_tags_stay_in_their_channel(self):
        self.api("POST", "/friends/%s/tags" % self.both, {"tags": ["vip"]})
        r = self.api("GET", "/friends/" + self.both, slug="other")
        self.assertEqual(r.json()["tags"], [])
        self.assertEqual(self.api("GET", "/tags", slug="other").json(),
                         {"tags": []})
        r = self.api("GET", "/friends?tag=vip", slug="other")
        self.assertEqual(r.json()["friends"], [])
        r = self.api("DELETE", "/friends/%s/tags/vip" % self.both,
                     slug="other")
        self.assertEqual(r.status, 404, r)
        self.assertEqual(self.api("GET", "/friends/" + self.both)
                         .json()["tags"], ["vip"])

    def test_channel_key_reaches_only_its_channel(self):
        k = self.shop_key
        self.assertEqual(self.api("GET", "/friends", key=k).status, 200)
        self.assertEqual(self.api("GET", "/friends/" + self.mine,
                                  key=k).status, 200)
        self.assertEqual(self.api("GET", "/tags", key=k).status, 200)
        for method, path, body in [
                ("GET", "/friends", None),
                ("GET", "/friends/" + self.theirs, None),
                ("GET", "/friends/" + self.both, None),
                ("POST", "/friends/%s/tags" % self.both, {"tags": ["x"]}),
                ("DELETE", "/friends/%s/tags/x" % self.both, None),
                ("GET", "/tags", None)]:
            r = self.api(method, path, body, key=k, slug="other")
            self.assertEqual(r.status, 403, (method, path, r))
            self.assertEqual(r.json()["error"]["code"], "forbidden")
        self.assertEqual(self.count("tags"), 0)
        r = self.api("GET", "/friends", key=self.other_key, slug="other")
        self.assertEqual(sorted(f["user_id"] for f in r.json()["friends"]),
                         sorted([self.both, self.theirs]))


if __name__ == "__main__":
    main()
