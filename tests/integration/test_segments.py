# SPDX-License-Identifier: ISC
"""The segment API: /api/v1/channels/{slug}/segments and /snapshots.

Friends, tags and clicks are written straight into PostgreSQL (the intake
paths have their own tests); everything about segments goes through the
HTTP API of a real musubid.  test_segment_oracle.py checks the members of
random rules against a reference evaluator; this file checks the API's
behaviour: CRUD, preview, count, member pages and CSV, snapshots, errors
with JSON pointers, channel isolation, and values that look like SQL.
"""
import csv
import io
import json
import urllib.parse

from musubi_test import MusubiTestCase, apikey, main

EVIL = "x'); DROP TABLE friends;--"


def qs(**kw):
    return "?" + urllib.parse.urlencode(kw) if kw else ""


class SegmentAPI(MusubiTestCase):

    def setUp(self):
        super().setUp()
        self.create_channel("shop")
        self.create_channel("other")
        self.ch = int(self.db.sql(
            "SELECT id FROM channels WHERE slug = 'shop'")[0][0])
        self.other = int(self.db.sql(
            "SELECT id FROM channels WHERE slug = 'other'")[0][0])
        # 30 friends in shop (every third blocked), 5 in other
        self.db.sql(
            "INSERT INTO friends (channel_id, user_id, status, "
            "followed_at, display_name, language) "
            "SELECT %d, 'U' || md5('shop' || g), CASE WHEN g %% 3 = 0 "
            "THEN 'blocked' ELSE 'following' END, now() - g * "
            "interval '1 day', 'friend ' || g, CASE WHEN g %% 2 = 0 "
            "THEN 'ja' END FROM generate_series(1, 30) g" % self.ch)
        self.db.sql(
            "INSERT INTO friends (channel_id, user_id, status) "
            "SELECT %d, 'U' || md5('other' || g), 'following' "
            "FROM generate_series(1, 5) g" % self.other)
        self.base = "/api/v1/channels/shop/segments"

    def api(self, method, path, body=None, key=None):
        return self.d.request(method, path, body=body,
                              key=key or self.admin)

    def following(self):
        return {"friend": {"status": "following"}}

    def create(self, name="Followers", rule=None, **extra):
        body = {"name": name, "rule": rule or self.following()}
        body.update(extra)
        r = self.api("POST", self.base, body)
        self.assertEqual(r.status, 201, r)
        return r.json()

    def assertError(self, r, status, code, path=None, text=None):
        self.assertEqual(r.status, status, r)
        err = r.json()["error"]
        self.assertEqual(err["code"], code, r)
        if path is not None:
            self.assertEqual(err.get("path"), path, r)
        if text is not None:
            self.assertIn(text, err["message"], r)

    def test_crud(self):
        s = self.create(description="still here", rule={"all": [
            {"friend": {"status": "following"}},
            {"friend": {"language": "ja"}}]})
        self.assertEqual(s["name"], "Followers")
        self.assertEqual(s["description"], "still here")
        self.assertEqual(s["rule"]["all"][1], {"friend": {"language": "ja"}})
        sid = s["id"]
        r = self.api("GET", "%s/%d" % (self.base, sid))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), s)
        r = self.api("GET", self.base)
        self.assertEqual([x["id"] for x in r.json()["segments"]], [sid])

        r = self.api("PATCH", "%s/%d" % (self.base, sid),
                     {"name": "JA followers", "description": None})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["name"], "JA followers")
        self.assertIsNone(r.json()["description"])
        self.assertEqual(r.json()["rule"], s["rule"])
        r = self.api("PATCH", "%s/%d" % (self.base, sid),
                     {"rule": {"friend": {"status": "blocked"}}})
        self.assertEqual(r.json()["rule"],
                         {"friend": {"status": "blocked"}})
        r = self.api("GET", "%s/%d/count" % (self.base, sid))
        self.assertEqual(r.json(), {"segment_id": sid, "count": 10})

        self.create("Second")
        r = self.api("PATCH", "%s/%d" % (self.base, sid),
                     {"name": "Second"})
        self.assertError(r, 409, "conflict", "/name")
        r = self.api("POST", self.base, {"name": "Second",
                                         "rule": self.following()})
        self.assertError(r, 409, "conflict", "/name")

        r = self.api("DELETE", "%s/%d" % (self.base, sid))
        self.assertEqual(r.status, 204, r)
        for m, p in (("GET", ""), ("DELETE", ""), ("PATCH", ""),
                     ("GET", "/count"), ("GET", "/members"),
                     ("POST", "/snapshots"), ("GET", "/snapshots")):
            r = self.api(m, "%s/%d%s" % (self.base, sid, p),
                         {} if m == "PATCH" else None)
            self.assertError(r, 404, "not_found")
        for bad in ("0", "-1", "abc", "99999999999999999999"):
            r = self.api("GET", "%s/%s" % (self.base, bad))
            self.assertError(r, 404, "not_found")

    def test_preview_count_and_sample(self):
        r = self.api("POST", self.base + "/preview",
                     {"rule": self.following()})
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertEqual(body["count"], 20)
        self.assertEqual(len(body["sample"]), 20)
        r = self.api("POST", self.base + "/preview", {"rule": {"all": [
            self.following(), {"friend": {"language": "ja"}}]}})
        body = r.json()
        self.assertEqual(body["count"], 10)
        names = [m["display_name"] for m in body["sample"]]
        # newest friends first; even g followed, g % 3 != 0
        want = ["friend %d" % g for g in range(30, 0, -1)
                if g % 2 == 0 and g % 3 != 0]
        self.assertEqual(names, want)
        m = body["sample"][0]
        self.assertEqual(set(m), {"user_id", "display_name", "status",
                                  "language", "followed_at"})
        self.assertEqual(m["status"], "following")
        self.assertTrue(m["user_id"].startswith("U"))

    def test_bad_requests(self):
        p = self.base + "/preview"
        r = self.api("POST", p, "{not json")
        self.assertError(r, 400, "invalid_json")
        r = self.api("POST", p, "[1]")
        self.assertError(r, 400, "invalid_json")
        r = self.api("POST", p, {})
        self.assertError(r, 422, "required", "/rule")
        r = self.api("POST", p, {"rule": {}, "extra": 1})
        self.assertError(r, 422, "unknown_field", "/extra")
        r = self.api("POST", p, {"rule": {"all": [
            self.following(), {"purchases": {"count": {"gte": -1}}}]}})
        self.assertError(r, 422, "invalid_rule",
                         "/rule/all/1/purchases/count/gte",
                         "whole number from 0")
        r = self.api("POST", p, {"rule": {"all": [
            self.following(), {"purchase": {}}]}})
        self.assertError(r, 422, "invalid_rule", "/rule/all/1/purchase",
                         'did you mean "purchases"')
        r = self.api("POST", p, {"rule": {"any": [{"clicks": {}}] * 51}})
        self.assertError(r, 422, "invalid_rule", "/rule/any",
                         "at most 50")
        r = self.api("POST", p, {"rule": {"all": [
            {"friend": {"linked": True, "status": "following"}}] * 25 +
            [{"clicks": {}}]}})
        self.assertError(r, 422, "invalid_rule", "/rule/all/25/clicks",
                         "at most 50 conditions")
        deep = {"clicks": {}}
        for _ in range(9):
            deep = {"not": deep}
        r = self.api("POST", p, {"rule": deep})
        self.assertError(r, 422, "invalid_rule", None, "nested at most 8")
        r = self.api("POST", p, {"rule": {"tags": {"has_any": [
            "t%d" % i for i in range(101)]}}})
        self.assertError(r, 422, "invalid_rule", "/rule/tags/has_any")
        # campaign deliveries: grammar known, data not yet
        r = self.api("POST", p, {"rule": {"all": [
            self.following(), {"source": {"kind": "cpf"}}]}})
        self.assertError(r, 422, "invalid_rule", "/rule/all/1/source/kind",
                         "cpf_ad")
        r = self.api("POST", p, {"rule": {"all": [
            self.following(), {"messaging": {"campaign": 3}}]}})
        self.assertError(r, 422, "not_available",
                         "/rule/all/1/messaging", "not available yet")
        r = self.api("POST", self.base, {"name": "x", "rule": {
            "not": {"messaging": {"window": {"last_days": 7}}}}})
        self.assertError(r, 422, "not_available", "/rule/not/messaging")
        self.assertEqual(self.db.sql("SELECT count(*) FROM segments"),
                         [["0"]])
        # other body fields
        r = self.api("POST", self.base, {"rule": self.following()})
        self.assertError(r, 422, "required", "/name")
        r = self.api("POST", self.base, {"name": "", "rule":
                                         self.following()})
        self.assertError(r, 422, "invalid_length", "/name")
        r = self.api("POST", self.base, {"name": "a", "rule":
                                         self.following(),
                                         "description": 5})
        self.assertError(r, 422, "invalid_type", "/description")
        s = self.create()
        r = self.api("PATCH", "%s/%d" % (self.base, s["id"]),
                     {"rule": {"friend": {"status": "gone"}}})
        self.assertError(r, 422, "invalid_rule", "/rule/friend/status")
        # a huge body is refused before it is parsed
        r = self.api("POST", p, "{\"rule\": \"" + "x" * (2 << 20) + "\"}")
        self.assertEqual(r.status, 413, r)
        # query parameters
        m = "%s/%d/members" % (self.base, s["id"])
        for q, code, status in (("limit=0", "invalid_value", 422),
                                ("limit=1001", "invalid_value", 422),
                                ("limit=x", "invalid_value", 422),
                                ("format=xml", "invalid_value", 422),
                                ("cursor=%%%%", "bad_cursor", 400),
                                ("cursor=MA", "bad_cursor", 400)):
            self.assertError(self.api("GET", m + "?" + q), status, code)

    def test_sql_looking_values_are_data(self):
        fid = self.db.sql("SELECT id FROM friends WHERE channel_id = %d "
                          "ORDER BY id LIMIT 1" % self.ch)[0][0]
        self.db.sql("INSERT INTO tags (channel_id, name) VALUES (%d, "
                    "$q$%s$q$)" % (self.ch, EVIL))
        self.db.sql("INSERT INTO friend_tags (channel_id, friend_id, "
                    "tag_id) SELECT %d, %s, id FROM tags" % (self.ch, fid))
        rules = [
            ({"tags": {"has_any": [EVIL]}}, 1),
            ({"tags": {"has_any": ["x"]}}, 0),
            ({"tags": {"has_all": [EVIL, "' OR '1'='1"]}}, 0),
            ({"friend": {"language": "' OR 1=1 --"}}, 0),
            ({"friend": {"language": {"in": ["ja", "'); DELETE FROM "
                                      "friends; --"]}}}, 15),
            ({"page_views": {"url_prefix": "%"}}, 0),
            ({"interactions": {"postback_data": {"prefix": "_"}}}, 0),
            ({"purchases": {"products": {"title_contains": "%'--"}}}, 0),
            ({"not": {"tags": {"has_none": [EVIL]}}}, 1),
        ]
        for rule, want in rules:
            r = self.api("POST", self.base + "/preview", {"rule": rule})
            self.assertEqual(r.status, 200, (rule, r))
            self.assertEqual(r.json()["count"], want, rule)
        s = self.create(name=EVIL, description=EVIL,
                        rule={"tags": {"has_any": [EVIL]}})
        self.assertEqual(s["name"], EVIL)
        r = self.api("GET", "%s/%d/members" % (self.base, s["id"]))
        self.assertEqual(len(r.json()["members"]), 1)
        self.assertEqual(self.db.sql(
            "SELECT count(*) FROM friends"), [["35"]])

    def test_channel_isolation(self):
        s = self.create()
        other = "/api/v1/channels/other/segments"
        for m, p in (("GET", ""), ("GET", "/count"), ("GET", "/members"),
                     ("PATCH", ""), ("DELETE", ""), ("POST", "/snapshots"),
                     ("GET", "/snapshots")):
            r = self.api(m, "%s/%d%s" % (other, s["id"], p),
                         {} if m == "PATCH" else None)
            self.assertError(r, 404, "not_found")
        # the other channel's friends never count here, nor ours there
        r = self.api("POST", other + "/preview", {"rule": self.following()})
        self.assertEqual(r.json()["count"], 5)
        # a key of the other channel cannot reach this one at all
        key = apikey(self.db.url, scope="channel:other")
        r = self.api("GET", "%s/%d" % (self.base, s["id"]), key=key)
        self.assertIn(r.status, (403, 404), r)
        snap = self.api("POST", "%s/%d/snapshots" % (self.base, s["id"]))
        sid = snap.json()["id"]
        for p in ("", "/members"):
            r = self.api("GET", "/api/v1/channels/other/snapshots/%d%s" %
                         (sid, p))
            self.assertError(r, 404, "not_found")
        r = self.api("GET", "/api/v1/channels/other/snapshots")
        self.assertEqual(r.json()["snapshots"], [])

    def test_members_pages_and_csv(self):
        self.db.sql("UPDATE friends SET display_name = '=HYPERLINK(\"x\")'"
                    " WHERE channel_id = %d AND display_name = 'friend 1'"
                    % self.ch)
        self.db.sql("UPDATE friends SET display_name = 'a,b \"c\"' WHERE "
                    "channel_id = %d AND display_name = 'friend 2'" %
                    self.ch)
        s = self.create()
        path = "%s/%d/members" % (self.base, s["id"])
        seen, cursor = [], None
        while True:
            kw = {"limit": 7}
            if cursor:
                kw["cursor"] = cursor
            r = self.api("GET", path + qs(**kw))
            self.assertEqual(r.status, 200, r)
            page = r.json()
            self.assertLessEqual(len(page["members"]), 7)
            seen += [m["user_id"] for m in page["members"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        self.assertEqual(len(seen), 20)
        self.assertEqual(len(set(seen)), 20)
        want = [r[0] for r in self.db.sql(
            "SELECT user_id FROM friends WHERE channel_id = %d AND "
            "status = 'following' ORDER BY id" % self.ch)]
        self.assertEqual(seen, want)

        r = self.api("GET", path + "?format=csv")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type").startswith("text/csv"))
        self.assertIn("segment-%d-members.csv" % s["id"],
                      r.header("Content-Disposition"))
        rows = list(csv.reader(io.StringIO(r.body.decode())))
        self.assertEqual(rows[0], ["user_id", "display_name", "status",
                                   "language", "followed_at"])
        self.assertEqual([x[0] for x in rows[1:]], want)
        names = {x[1] for x in rows[1:]}
        self.assertIn("'=HYPERLINK(\"x\")", names)
        self.assertIn('a,b "c"', names)

    def test_csv_many_pages(self):
        self.db.sql(
            "INSERT INTO friends (channel_id, user_id, status) "
            "SELECT %d, 'U' || md5('bulk' || g), 'following' "
            "FROM generate_series(1, 12000) g" % self.ch)
        s = self.create()
        r = self.api("GET", "%s/%d/members?format=csv" % (self.base,
                                                          s["id"]))
        self.assertEqual(r.status, 200, r)
        rows = r.body.decode().split("\r\n")
        self.assertEqual(rows[-1], "")
        self.assertEqual(len(rows) - 2, 12020)
        self.assertEqual(len(set(rows[1:-1])), 12020)
        r = self.api("GET", "%s/%d/count" % (self.base, s["id"]))
        self.assertEqual(r.json()["count"], 12020)

    def test_snapshots(self):
        s = self.create(rule={"all": [self.following(), {"clicks": {}}]})
        self.db.sql("INSERT INTO links (channel_id, name, destination) "
                    "VALUES (%d, 'l', 'https://s.example/')" % self.ch)
        ids = self.db.sql("SELECT id FROM friends WHERE channel_id = %d "
                          "AND status = 'following' ORDER BY id LIMIT 4"
                          % self.ch)
        batch = [{"c": self.ch, "l": int(self.db.sql(
            "SELECT id FROM links")[0][0]), "f": int(i[0]),
            "t": 1700000000000} for i in ids]
        self.db.sql("SELECT musubi_record_clicks($j$%s$j$::jsonb)" %
                    json.dumps(batch))
        snaps = "%s/%d/snapshots" % (self.base, s["id"])
        r = self.api("POST", snaps, {"note": "spring campaign"})
        self.assertEqual(r.status, 201, r)
        snap = r.json()
        self.assertEqual(snap["member_count"], 4)
        self.assertEqual(snap["segment_id"], s["id"])
        self.assertEqual(snap["segment_name"], "Followers")
        self.assertEqual(snap["note"], "spring campaign")
        self.assertEqual(snap["rule"], s["rule"])
        self.assertTrue(r.header("Location").endswith(
            "/snapshots/%d" % snap["id"]))
        # no body is fine too
        r = self.api("POST", snaps)
        self.assertEqual(r.status, 201, r)
        second = r.json()
        r = self.api("POST", snaps, {"note": 5})
        self.assertError(r, 422, "invalid_type", "/note")
        r = self.api("POST", snaps, {"memo": "x"})
        self.assertError(r, 422, "unknown_field", "/memo")

        # the segment moves on; the snapshot does not
        self.db.sql("UPDATE friends SET status = 'blocked' WHERE id = %s"
                    % ids[0][0])
        r = self.api("GET", "%s/%d/count" % (self.base, s["id"]))
        self.assertEqual(r.json()["count"], 3)
        sp = "/api/v1/channels/shop/snapshots/%d" % snap["id"]
        r = self.api("GET", sp)
        self.assertEqual(r.json(), snap)
        r = self.api("GET", sp + "/members?limit=3")
        page = r.json()
        self.assertEqual(len(page["members"]), 3)
        r = self.api("GET", sp + "/members?limit=3&cursor=" +
                     page["next_cursor"])
        self.assertEqual(len(r.json()["members"]), 1)
        self.assertIsNone(r.json()["next_cursor"])
        r = self.api("GET", sp + "/members?format=csv")
        rows = list(csv.reader(io.StringIO(r.body.decode())))
        self.assertEqual(sorted(x[0] for x in rows[1:]), sorted(
            self.db.sql("SELECT user_id FROM friends WHERE id IN (%s)" %
                        ",".join(i[0] for i in ids))[i][0]
            for i in range(4)))
        self.assertEqual(rows[1][2], "blocked")   # today's status

        # listed newest first, with counts; paged
        r = self.api("GET", snaps)
        self.assertEqual([(x["id"], x["member_count"])
                          for x in r.json()["snapshots"]],
                         [(second["id"], 4), (snap["id"], 4)])
        r = self.api("GET", "/api/v1/channels/shop/snapshots?limit=1")
        page = r.json()
        self.assertEqual([x["id"] for x in page["snapshots"]],
                         [second["id"]])
        r = self.api("GET", "/api/v1/channels/shop/snapshots?limit=1&"
                     "cursor=" + page["next_cursor"])
        self.assertEqual([x["id"] for x in r.json()["snapshots"]],
                         [snap["id"]])
        self.assertIsNone(r.json()["next_cursor"])

        # a snapshot outlives its segment
        self.assertEqual(self.api("DELETE", "%s/%d" % (
            self.base, s["id"])).status, 204)
        r = self.api("GET", sp)
        self.assertEqual(r.json()["member_count"], 4)
        r = self.api("GET", snaps)
        self.assertError(r, 404, "not_found")
        r = self.api("GET", "/api/v1/channels/shop/snapshots/999999")
        self.assertError(r, 404, "not_found")
        r = self.api("GET", "/api/v1/channels/shop/snapshots/x/members")
        self.assertError(r, 404, "not_found")
        # deleting the channel takes snapshots and members with it
        self.db.sql("DELETE FROM channels WHERE slug = 'shop'")
        self.assertEqual(self.db.sql(
            "SELECT count(*) FROM segment_snapshot_members"), [["0"]])

    def test_sql_for_admins(self):
        rule = {"all": [self.following(), {"tags": {"has_any": [EVIL]}}]}
        r = self.api("POST", self.base + "/sql", {"rule": rule})
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertTrue(j["count_sql"].startswith("SELECT count(*) FROM "
                                                  "friends f"))
        self.assertIn("INSERT INTO segment_snapshot_members",
                      j["snapshot_sql"])
        self.assertNotIn(EVIL, j["members_sql"] + j["count_sql"])
        self.assertEqual(j["params"], [str(self.ch), "following",
                                       '{"%s"}' % EVIL])
        self.assertIn("SET LOCAL jit = off", j["settings"])
        r = self.api("POST", self.base + "/sql", {"rule": rule,
                                                  "mode": "rows"})
        self.assertIn("LATERAL", r.json()["members_sql"])
        self.assertError(self.api("POST", self.base + "/sql", {
            "rule": rule, "mode": "x"}), 422, "invalid_value", "/mode")
        key = apikey(self.db.url, scope="channel:shop")
        r = self.api("POST", self.base + "/sql", {"rule": rule}, key=key)
        self.assertError(r, 403, "forbidden")
        # a channel key may preview, though
        r = self.api("POST", self.base + "/preview", {"rule": rule},
                     key=key)
        self.assertEqual(r.json()["count"], 0)

    def test_saved_rule_uses_channel_timezone(self):
        # followed_at between local dates: Asia/Tokyo by default
        self.db.sql("UPDATE friends SET followed_at = "
                    "'2024-03-31 15:30:00+00' WHERE channel_id = %d AND "
                    "display_name = 'friend 4'" % self.ch)
        self.db.sql("UPDATE friends SET followed_at = "
                    "'2024-03-31 14:30:00+00' WHERE channel_id = %d AND "
                    "display_name = 'friend 5'" % self.ch)
        rule = {"friend": {"followed_at": {"between": ["2024-04-01",
                                                       "2024-04-01"]}}}
        r = self.api("POST", self.base + "/preview", {"rule": rule})
        self.assertEqual([m["display_name"] for m in r.json()["sample"]],
                         ["friend 4"])
        self.db.sql("UPDATE channels SET timezone = 'UTC' WHERE slug = "
                    "'shop'")
        r = self.api("POST", self.base + "/preview", {"rule": rule})
        self.assertEqual(r.json()["count"], 0)


if __name__ == "__main__":
    main()
