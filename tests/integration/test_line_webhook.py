# SPDX-License-Identifier: ISC
"""LINE webhook intake: signatures, storage, apply, ordering, profiles.

Deliveries are signed here with hmac/hashlib/base64 exactly as LINE signs
them, and the recorded sample deliveries in webhooks/line/ are loaded rather
than copied.  A small http.server stands in for the LINE profile API so the
profile fetcher can be tested against 200, 404 and 429-then-200.

The helpers at the top (LineTestCase, FakeLine, sign, builders) are also
used by test_friends.py.
"""
import base64
import glob
import hashlib
import hmac
import http.client
import http.server
import json
import os
import random
import re
import threading
import time
import unittest

from musubi_test import MusubiTestCase, main

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(os.environ.get("MUSUBI_SOURCE_DIR",
                                      os.path.join(HERE, "..", "..")),
                       "webhooks", "line")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
T0 = 1735693200000          # 2025-01-01T01:00:00Z, in LINE's milliseconds


def sign(secret, body):
    """LINE's signature: base64 of HMAC-SHA256(channel secret, raw body)."""
    if isinstance(secret, str):
        secret = secret.encode()
    return base64.b64encode(hmac.new(secret, body,
                                     hashlib.sha256).digest()).decode()


def ulid():
    return "".join(random.choice(CROCKFORD) for _ in range(26))


def user_id(seed=None):
    if seed is None:
        return "U" + os.urandom(16).hex()
    return "U" + hashlib.md5(str(seed).encode()).hexdigest()


def event(type_, user=None, ts=None, mode="active", **extra):
    """One webhook event as LINE sends it."""
    e = {"type": type_, "mode": mode, "timestamp": ts or T0,
         "webhookEventId": ulid(), "deliveryContext": {"isRedelivery": False}}
    if user is not None:
        e["source"] = {"type": "user", "userId": user}
    e.update(extra)
    return e


def follow(user, ts, unblocked=False):
    return event("follow", user, ts, follow={"isUnblocked": unblocked},
                 replyToken=os.urandom(16).hex())


def unfollow(user, ts):
    return event("unfollow", user, ts)


def text(user, ts, body, mid=None):
    return event("message", user, ts, replyToken=os.urandom(16).hex(),
                 message={"type": "text", "id": mid or str(
                     random.randrange(10**17, 10**18)), "text": body,
                     "quoteToken": os.urandom(16).hex()})


def unsend(user, ts, mid):
    return event("unsend", user, ts, unsend={"messageId": mid})


def delivery(*events):
    return {"destination": "U" + "0" * 32, "events": list(events)}


def sample(name):
    with open(os.path.join(SAMPLES, name + ".json"), "rb") as f:
        return json.load(f)


def sample_names():
    return sorted(os.path.basename(p)[:-5] for p in
                  glob.glob(os.path.join(SAMPLES, "*.json"))
                  if not p.endswith(("all-events.json", "verify.json")))


class FakeLine:
    """The LINE profile API: GET /v2/bot/profile/{userId}.

    profiles maps a userId to a list of (status, body) answers, used in
    order; the last one repeats.  Unknown users get 404."""

    def __init__(self, profiles=None):
        self.profiles = dict(profiles or {})
        self.calls = []
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                m = re.match(r"^/v2/bot/profile/([^/?]+)$", self.path)
                status, body = 404, {"message": "Not found"}
                with fake.lock:
                    if m:
                        uid = m.group(1)
                        fake.calls.append(
                            (uid, self.headers.get("Authorization")))
                        answers = fake.profiles.get(uid)
                        if answers:
                            status, body = (answers.pop(0) if
                                            len(answers) > 1 else answers[0])
                data = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def profile(self, uid, name, **extra):
        body = {"userId": uid, "displayName": name}
        body.update(extra)
        with self.lock:
            self.profiles[uid] = [(200, body)]

    def calls_for(self, uid):
        with self.lock:
            return [c for c in self.calls if c[0] == uid]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class LineMixin:
    """Channels, signed deliveries and waiting for the processor."""

    def line_channel(self, slug="shop", secret="line-secret", token=None,
                     d=None):
        body = {"slug": slug, "name": slug.title(), "channel_secret": secret}
        if token:
            body["channel_access_token"] = token
        r = (d or self.d).post("/api/v1/channels", body, key=self.admin)
        self.assertEqual(r.status, 201, r)
        self.secrets = getattr(self, "secrets", {})
        self.secrets[slug] = secret
        return r.json()

    def deliver(self, slug, body, secret=None, header="X-Line-Signature",
                signature=None, d=None):
        if not isinstance(body, bytes):
            body = json.dumps(body, ensure_ascii=False).encode()
        if secret is None:
            secret = self.secrets[slug]
        h = {"Content-Type": "application/json; charset=utf-8"}
        if header:
            h[header] = signature if signature is not None else \
                sign(secret, body)
        return (d or self.d).post("/webhooks/line/" + slug, body, headers=h)

    def deliver_ok(self, slug, body, **kw):
        r = self.deliver(slug, body, **kw)
        self.assertEqual(r.status, 200, r)
        return r

    def wait_applied(self, timeout=30):
        """Wait until the processor has taken every pending inbox row."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            n = int(self.db.sql("SELECT count(*) FROM webhook_events "
                                "WHERE state = 0")[0][0])
            if n == 0:
                return
            time.sleep(0.05)
        self.fail("events still pending after %ss:\n%s" %
                  (timeout, self.d.logtext()[-3000:]))

    def count(self, table, where="true"):
        return int(self.db.sql("SELECT count(*) FROM %s WHERE %s" %
                               (table, where))[0][0])

    def friend(self, uid, cols="status, follow_count"):
        rows = self.db.sql("SELECT %s FROM friends WHERE user_id = '%s'" %
                           (cols, uid))
        return rows[0] if rows else None

    def assertHealthy(self):
        self.assertEqual(self.d.get("/healthz").status, 200)
        self.assertIsNone(self.d.proc.poll(), "musubid exited")


class LineTestCase(LineMixin, MusubiTestCase):
    pass


class Signature(LineTestCase):
    def test_line_reference_vector(self):
        body = b'{"hello":"world"}'
        vector = "t7Hn4ZDHqs6e+wdvI5TyQIvzie0DmMUmuXEBqyyE/tM="
        self.assertEqual(sign("test_secret", body), vector)
        self.line_channel("vec", secret="test_secret")
        r = self.deliver("vec", body, signature=vector)
        self.assertEqual(r.status, 200, r)
        rows = self.db.sql("SELECT state, type, problem, payload::text, "
                           "event_ts IS NULL FROM webhook_events")
        self.assertEqual(rows, [["2", "", "delivery has no events array",
                                 '{"hello": "world"}', "t"]])

    def test_second_reference_vector_passes_the_signature(self):
        # secret channel_secret, body bodybodybodybody (LINE's Python SDK):
        # the signature is right, so the answer is about the body (400).
        self.line_channel("vec2", secret="channel_secret")
        r = self.deliver("vec2", b"bodybodybodybody", signature=
                         "/gg9a+LvFevTH1sd7XCQycD7tsWclCsInj7MhBHxN7k=")
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["error"]["code"], "invalid_json")

    def test_header_name_in_any_case(self):
        self.line_channel()
        for i, header in enumerate(["X-Line-Signature", "x-line-signature",
                                    "X-LINE-SIGNATURE", "x-LiNe-SiGnAtUrE"]):
            r = self.deliver("shop", delivery(follow(user_id(i), T0 + i)),
                             header=header)
            self.assertEqual(r.status, 200, (header, r))
        self.assertEqual(self.count("webhook_events"), 4)

    def test_missing_or_wrong_signature_401_stores_nothing(self):
        self.line_channel()
        body = json.dumps(delivery(follow(user_id(1), T0))).encode()
        good = sign("line-secret", body)
        bad = [None, "", "not base64 !!", sign("other-secret", body),
               sign("line-secret", body + b" "), good[:-4],
               base64.b64encode(b"\0" * 32).decode(), good + "AAAA"]
        for sig in bad:
            if sig is None:
                r = self.deliver("shop", body, header=None)
            else:
                r = self.deliver("shop", body, signature=sig)
            self.assertEqual(r.status, 401, (sig, r))
            self.assertEqual(r.json()["error"]["code"], "invalid_signature")
        # The signature is checked before the body is parsed.
        r = self.deliver("shop", b"{not json", signature=good)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(self.count("webhook_events"), 0)
        self.assertNotIn("line-secret", self.d.logtext())
        self.assertEqual(self.deliver("shop", body).status, 200)

    def test_signed_with_another_channels_secret_401(self):
        self.line_channel("a", secret="secret-a")
        self.line_channel("b", secret="secret-b")
        body = delivery(follow(user_id(1), T0))
        r = self.deliver("b", body, secret="secret-a")
        self.assertEqual(r.status, 401, r)
        self.assertEqual(self.count("webhook_events"), 0)

    def test_unknown_channel_404(self):
        self.line_channel()
        r = self.deliver("nope", delivery(follow(user_id(1), T0)),
                         secret="line-secret")
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json()["error"]["code"], "not_found")
        self.assertEqual(self.count("webhook_events"), 0)

    def test_invalid_json_with_valid_signature_400(self):
        self.line_channel()
        for body in [b"{not json", b"", b"\xff\xfe{}", b'{"events": [}']:
            r = self.deliver("shop", body)
            self.assertEqual(r.status, 400, (body, r))
            self.assertEqual(r.json()["error"]["code"], "invalid_json")
        self.assertEqual(self.count("webhook_events"), 0)
        self.assertHealthy()

    def test_empty_events_200_stores_nothing(self):
        self.line_channel()
        r = self.deliver("shop", sample("verify"))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.count("webhook_events"), 0)

    def test_body_over_limit_413(self):
        self.line_channel()
        big = delivery(text(user_id(1), T0, "あ" * 400000))    # 1.2 MB
        r = self.deliver("shop", big)
        self.assertEqual(r.status, 413, r)
        self.assertEqual(r.json()["error"]["code"], "body_too_large")
        self.assertEqual(self.count("webhook_events"), 0)
        self.assertHealthy()


class Events(LineTestCase):
    def test_samples_cover_every_documented_type(self):
        names = sample_names()
        combined = sample("all-events")["events"]
        singles = []
        for n in names:
            d = sample(n)
            self.assertEqual(len(d["events"]), 1, n)
            self.assertRegex(d["destination"], r"^U[0-9a-f]{32}$")
            singles += d["events"]
        self.assertEqual(sorted(json.dumps(e, sort_keys=True)
                                for e in combined),
                         sorted(json.dumps(e, sort_keys=True)
                                for e in singles),
                         "all-events.json must combine the single files")
        kinds = set()
        for e in combined:
            self.assertRegex(e["webhookEventId"], r"^[0-9A-HJKMNP-TV-Z]{26}$")
            uid = e.get("source", {}).get("userId")
            if uid is not None:
                self.assertRegex(uid, r"^U[0-9a-f]{32}$")
            kinds.add(e["type"] + ("/" + e["message"]["type"]
                                   if e["type"] == "message" else ""))
            if e["type"] == "accountLink":
                kinds.add("accountLink/" + e["link"]["result"])
        want = {"message/text", "message/image", "message/video",
                "message/audio", "message/file", "message/location",
                "message/sticker", "unsend", "follow", "unfollow", "join",
                "leave", "memberJoined", "memberLeft", "postback",
                "videoPlayComplete", "beacon", "accountLink/ok",
                "accountLink/failed", "membership", "module", "activated",
                "deactivated", "botSuspended", "botResumed", "delivery",
                "messageEdited", "greatNewFeature"}
        self.assertEqual(want - kinds, set())

    def test_every_event_type_stored_and_applied(self):
        self.line_channel()
        body = sample("all-events")
        events = body["events"]
        self.deliver_ok("shop", body)
        self.wait_applied()
        self.assertEqual(self.count("webhook_events"), len(events))
        self.assertEqual(self.count("webhook_events", "state = 1"),
                         len(events), self.db.sql(
                             "SELECT type, problem FROM webhook_events "
                             "WHERE state <> 1"))
        got = {r[0]: r[1:] for r in self.db.sql(
            "SELECT event_id, type, coalesce(subtype, ''), mode, "
            "coalesce(user_id, ''), coalesce(text, ''), "
            "coalesce(postback_data, ''), unsent FROM interactions")}
        self.assertEqual(set(got), {e["webhookEventId"] for e in events})
        by_type = {}
        for e in events:
            row = got[e["webhookEventId"]]
            self.assertEqual(row[0], e["type"])
            self.assertEqual(row[2], e["mode"])
            self.assertEqual(row[3], e.get("source", {}).get("userId", ""))
            by_type.setdefault(e["type"], []).append((e, row))
        subtypes = {row[1] for _, row in by_type["message"]}
        self.assertEqual(subtypes, {"text", "image", "video", "audio",
                                    "file", "location", "sticker"})
        e, row = [x for x in by_type["message"]
                  if x[1][1] == "text" and x[1][2] == "active"][0]
        self.assertEqual(row[4], e["message"]["text"])
        payload = json.loads(self.db.sql(
            "SELECT payload::text FROM interactions WHERE event_id = '%s'"
            % e["webhookEventId"])[0][0])
        self.assertEqual(payload["message"]["emojis"],
                         e["message"]["emojis"])
        self.assertEqual(payload["message"]["mention"],
                         e["message"]["mention"])
        e, row = by_type["postback"][0]
        self.assertEqual(row[5], e["postback"]["data"])
        self.assertEqual({row[1] for _, row in by_type["accountLink"]},
                         {"ok", "failed"})
        self.assertEqual(by_type["beacon"][0][1][1], "enter")
        self.assertEqual(by_type["membership"][0][1][1], "joined")
        self.assertEqual(by_type["module"][0][1][1], "attached")
        self.assertIn("greatNewFeature", by_type)
        # unsend.json takes back the sticker of message-sticker.json
        mid = sample("unsend")["events"][0]["unsend"]["messageId"]
        self.assertEqual(self.db.sql(
            "SELECT unsent FROM interactions WHERE type = 'message' AND "
            "message_id = '%s'" % mid), [["t"]])
        # friends: follow -> following, unfollow -> blocked, others unknown
        f = sample("follow")["events"][0]
        u = sample("unfollow")["events"][0]
        self.assertEqual(self.friend(f["source"]["userId"]), ["following",
                                                              "1"])
        self.assertEqual(self.friend(u["source"]["userId"]), ["blocked",
                                                              "0"])
        b = sample("beacon")["events"][0]["source"]["userId"]
        self.assertEqual(self.friend(b), ["unknown", "0"])
        # a group message is kept with its group
        g = sample("message-text")["events"][0]["source"]
        self.assertEqual(self.db.sql(
            "SELECT DISTINCT source_type, group_id FROM interactions "
            "WHERE type = 'message' AND subtype = 'text' AND mode = "
            "'active'"), [[g["type"], g["groupId"]]])
        self.assertHealthy()

    def test_each_sample_file_alone(self):
        self.line_channel()
        names = sample_names()
        for n in names:
            self.deliver_ok("shop", sample(n))
        self.wait_applied()
        self.assertEqual(self.count("webhook_events", "state = 1"),
                         len(names))
        # all-events.json holds the same events: nothing new.
        self.deliver_ok("shop", sample("all-events"))
        self.wait_applied()
        self.assertEqual(self.count("webhook_events"), len(names))
        self.assertEqual(self.count("interactions"), len(names))

    def snapshot(self):
        return {t: self.db.sql("SELECT x::text FROM %s x ORDER BY id" % t)
                for t in ("webhook_events", "interactions", "friends")}

    def test_redelivery_changes_nothing(self):
        self.line_channel()
        body = sample("all-events")
        self.deliver_ok("shop", body)
        self.wait_applied()
        before = self.snapshot()
        for e in body["events"]:
            e["deliveryContext"]["isRedelivery"] = True
        self.deliver_ok("shop", body)
        # and once more, as LINE may duplicate even without redelivery
        self.deliver_ok("shop", body)
        time.sleep(1.5)             # give the processor a pass
        self.wait_applied()
        after = self.snapshot()
        for t in before:
            self.assertEqual(len(before[t]), len(after[t]), t)
            self.assertEqual(before[t], after[t], t)
        self.assertEqual(self.count("webhook_events", "redelivery"), 0)

    def test_redelivery_first_is_kept_flagged(self):
        self.line_channel()
        e = follow(user_id(1), T0)
        e["deliveryContext"]["isRedelivery"] = True
        self.deliver_ok("shop", delivery(e))
        self.wait_applied()
        self.assertEqual(self.db.sql("SELECT redelivery, state FROM "
                                     "webhook_events"), [["t", "1"]])
        self.assertEqual(self.friend(user_id(1)), ["following", "1"])

    def test_follow_unfollow_out_of_order(self):
        self.line_channel()
        a, b = user_id("a"), user_id("b")
        # a: unfollow at t1, follow at t2 > t1 arrives first
        self.deliver_ok("shop", delivery(follow(a, T0 + 2000, True)))
        self.wait_applied()
        self.deliver_ok("shop", delivery(unfollow(a, T0 + 1000)))
        self.wait_applied()
        # b: the reverse
        self.deliver_ok("shop", delivery(unfollow(b, T0 + 2000)))
        self.wait_applied()
        self.deliver_ok("shop", delivery(follow(b, T0 + 1000)))
        self.wait_applied()
        cols = ("status, follow_count, is_unblocked, "
                "extract(epoch FROM followed_at) * 1000, "
                "extract(epoch FROM unfollowed_at) * 1000")
        fa = self.friend(a, cols)
        fb = self.friend(b, cols)
        self.assertEqual(fa[:3], ["following", "1", "t"])
        self.assertEqual([float(x) for x in fa[3:]], [T0 + 2000, T0 + 1000])
        # is_unblocked belongs to the follow that set the status: none here
        self.assertEqual(fb[:3], ["blocked", "1", ""])
        self.assertEqual([float(x) for x in fb[3:]], [T0 + 1000, T0 + 2000])

    def test_follow_unfollow_out_of_order_in_one_delivery(self):
        self.line_channel()
        a, b = user_id("a"), user_id("b")
        self.deliver_ok("shop", delivery(
            follow(a, T0 + 2000), unfollow(a, T0 + 1000),
            unfollow(b, T0 + 2000), follow(b, T0 + 1000)))
        self.wait_applied()
        self.assertEqual(self.friend(a, "status"), ["following"])
        self.assertEqual(self.friend(b, "status"), ["blocked"])

    def test_unsend_before_and_after_the_message(self):
        self.line_channel()
        u = user_id(1)
        m1, m2 = "500000000000000001", "500000000000000002"
        # after: the message is stored, then taken back
        self.deliver_ok("shop", delivery(text(u, T0, "秘密の話その1", m1)))
        self.wait_applied()
        self.assertEqual(self.db.sql("SELECT text FROM interactions WHERE "
                                     "message_id = '%s'" % m1),
                         [["秘密の話その1"]])
        self.deliver_ok("shop", delivery(unsend(u, T0 + 5000, m1)))
        self.wait_applied()
        # before: the unsend arrives first
        self.deliver_ok("shop", delivery(unsend(u, T0 + 9000, m2)))
        self.wait_applied()
        self.deliver_ok("shop", delivery(text(u, T0 + 8000, "秘密その2", m2)))
        self.wait_applied()
        rows = self.db.sql(
            "SELECT message_id, text IS NULL, unsent, "
            "payload #> '{message,text}' IS NULL FROM interactions "
            "WHERE type = 'message' ORDER BY message_id")
        self.assertEqual(rows, [[m1, "t", "t", "t"], [m2, "t", "t", "t"]])

    def test_standby_mode_is_stored(self):
        self.line_channel()
        d = sample("standby")
        self.deliver_ok("shop", d)
        self.wait_applied()
        eid = d["events"][0]["webhookEventId"]
        self.assertEqual(self.db.sql(
            "SELECT w.mode, i.mode, w.state FROM webhook_events w JOIN "
            "interactions i USING (channel_id, event_id) WHERE "
            "w.event_id = '%s'" % eid), [["standby", "standby", "1"]])

    def test_malformed_shapes_are_stored_and_marked(self):
        self.line_channel()
        cases = [
            ({"destination": "U" + "0" * 32, "events": {"type": "follow"}},
             "delivery has no events array"),
            ([1, 2, 3], "delivery is not a JSON object"),
            (delivery(42), "event is not a JSON object"),
            (delivery("follow"), "event is not a JSON object"),
            (delivery({"timestamp": T0, "webhookEventId": ulid(),
                       "source": {"type": "user", "userId": user_id(1)}}),
             "event has no type"),
            (delivery({"type": "message", "webhookEventId": ulid(),
                       "source": {"type": "user", "userId": user_id(1)}}),
             "event has no valid timestamp"),
            (delivery(event("message", "Uxyz", T0)),
             "source.userId is not a LINE user id"),
            (delivery({"type": "follow", "timestamp": T0,
                       "webhookEventId": ulid(), "mode": "active"}),
             "follow/unfollow without source.userId"),
            (delivery(event("follow", None, T0,
                            source={"type": "user"})),
             "follow/unfollow without source.userId"),
        ]
        for body, _ in cases:
            self.deliver_ok("shop", body)
            self.assertHealthy()
        self.wait_applied()
        rows = self.db.sql("SELECT problem FROM webhook_events "
                           "WHERE state = 2 ORDER BY id")
        self.assertEqual([r[0] for r in rows], [p for _, p in cases])
        self.assertEqual(self.count("webhook_events", "state <> 2"), 0)
        self.assertEqual(self.count("friends"), 0)
        # The inbox keeps flowing after them.
        self.deliver_ok("shop", delivery(follow(user_id(2), T0)))
        self.wait_applied()
        self.assertEqual(self.friend(user_id(2)), ["following", "1"])
        self.assertHealthy()

    def test_nul_in_strings_is_stored_as_replacement_character(self):
        self.line_channel()
        body = ('{"destination":"U%s","events":[{"type":"message",'
                '"mode":"active","timestamp":%d,"webhookEventId":"%s",'
                '"source":{"type":"user","userId":"%s"},"message":'
                '{"type":"text","id":"1","text":"a\\u0000b"}}]}' %
                ("0" * 32, T0, ulid(), user_id(1))).encode()
        self.deliver_ok("shop", body)
        self.wait_applied()
        self.assertEqual(self.db.sql("SELECT text FROM interactions"),
                         [["a\ufffdb"]])

    def test_concurrent_deliveries_share_commits(self):
        self.line_channel()
        n = 50
        bodies = []
        for i in range(n):
            b = json.dumps(delivery(follow(user_id(i), T0 + i))).encode()
            bodies.append(b)
        barrier = threading.Barrier(n)
        results = [None] * n

        def one(i):
            conn = http.client.HTTPConnection("127.0.0.1", self.d.port,
                                              timeout=30)
            conn.connect()
            barrier.wait()
            conn.request("POST", "/webhooks/line/shop", body=bodies[i],
                         headers={"X-Line-Signature":
                                  sign("line-secret", bodies[i])})
            r = conn.getresponse()
            r.read()
            results[i] = r.status
            conn.close()

        threads = [threading.Thread(target=one, args=(i,))
                   for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [200] * n)
        self.assertEqual(self.count("webhook_events"), n)
        text_ = self.d.get("/metrics").body.decode()
        m = re.search(r"^musubi_line_commits_total(?:\{\})? (\d+)$", text_,
                      re.M)
        self.assertIsNotNone(m, text_)
        self.assertLess(int(m.group(1)), n)
        self.wait_applied()
        self.assertEqual(self.count("friends", "status = 'following'"), n)


class Profiles(LineTestCase):
    def setUp(self):
        self.line = FakeLine()
        self.addCleanup(self.line.stop)
        self.env = {"MUSUBI_LINE_API_BASE": self.line.url}
        super().setUp()

    def wait_profiles(self, uids, timeout=30):
        deadline = time.time() + timeout
        q = ("SELECT count(*) FROM friends WHERE profile_state = 'pending' "
             "AND user_id IN (%s)" % ",".join("'%s'" % u for u in uids))
        while time.time() < deadline:
            if self.db.sql(q)[0][0] == "0":
                return
            time.sleep(0.1)
        self.fail("profiles still pending:\n%s" % self.d.logtext()[-3000:])

    def test_profile_fetch_200_404_429(self):
        self.line_channel(token="line-token-1")
        ok, gone, busy = user_id("ok"), user_id("gone"), user_id("busy")
        self.line.profile(ok, "青木 葵", pictureUrl=
                          "https://profile.line-scdn.net/0h-aoi",
                          language="ja", statusMessage="よろしく")
        self.line.profiles[busy] = [
            (429, {"message": "The API rate limit has been exceeded."}),
            (200, {"userId": busy, "displayName": "Busy Bee"})]
        self.deliver_ok("shop", delivery(follow(ok, T0), follow(gone, T0),
                                         follow(busy, T0)))
        self.wait_applied()
        self.wait_profiles([ok, gone, busy])
        cols = ("profile_state, display_name, picture_url, language, "
                "status_message")
        self.assertEqual(self.friend(ok, cols),
                         ["ok", "青木 葵", "https://profile.line-scdn.net/"
                          "0h-aoi", "ja", "よろしく"])
        self.assertEqual(self.friend(gone, cols)[0], "unavailable")
        self.assertEqual(self.friend(busy, cols)[:2], ["ok", "Busy Bee"])
        self.assertEqual(len(self.line.calls_for(busy)), 2)
        self.assertEqual(len(self.line.calls_for(ok)), 1)
        self.assertEqual({c[1] for c in self.line.calls},
                         {"Bearer line-token-1"})
        self.assertNotIn("line-token-1", self.d.logtext())

    def test_refollow_refreshes_profile(self):
        self.line_channel(token="line-token-1")
        u = user_id("re")
        self.line.profile(u, "旧い名前")
        self.deliver_ok("shop", delivery(follow(u, T0)))
        self.wait_applied()
        self.wait_profiles([u])
        self.line.profile(u, "新しい名前")
        self.deliver_ok("shop", delivery(unfollow(u, T0 + 1000),
                                         follow(u, T0 + 2000, True)))
        self.wait_applied()
        deadline = time.time() + 20
        while time.time() < deadline and \
                self.friend(u, "display_name") != ["新しい名前"]:
            time.sleep(0.1)
        self.assertEqual(self.friend(u, "display_name, follow_count"),
                         ["新しい名前", "2"])

    def test_no_fetch_without_access_token(self):
        self.line_channel()
        u = user_id("quiet")
        self.deliver_ok("shop", delivery(follow(u, T0)))
        self.wait_applied()
        time.sleep(2.5)
        self.assertEqual(self.line.calls, [])
        self.assertEqual(self.friend(u, "profile_state"), ["pending"])

    def test_channels_without_token_do_not_starve_the_others(self):
        # BUG (src/intake/line_intake.c, line_profile_cb): the claim takes
        # the 16 oldest due friends of any channel and only then drops
        # those whose channel has no access token; they stay due, so once
        # 16 of them exist no other channel's profile is ever fetched.
        self.line_channel("quiet")
        self.deliver_ok("quiet", delivery(*[follow(user_id(i), T0 + i)
                                            for i in range(20)]))
        self.wait_applied()
        self.line_channel("shop", token="line-token-1")
        u = user_id("loud")
        self.line.profile(u, "Loud")
        self.deliver_ok("shop", delivery(follow(u, T0)))
        self.wait_applied()
        self.wait_profiles([u], timeout=8)


class OddInput(LineTestCase):
    """Deliveries that once broke the intake (kept as regressions)."""

    def test_non_boolean_isUnblocked_does_not_stop_the_inbox(self):
        # BUG (sql/002_line_intake.sql, musubi_line_apply, "latest" CTE):
        # (payload #>> '{follow,isUnblocked}')::boolean raises on a string
        # such as "maybe"; the whole apply rolls back and is retried every
        # second forever, so no event of any channel is applied again.
        self.line_channel()
        odd = follow(user_id(1), T0)
        odd["follow"]["isUnblocked"] = "maybe"
        self.deliver_ok("shop", delivery(odd))
        self.deliver_ok("shop", delivery(follow(user_id(2), T0 + 1)))
        self.wait_applied(timeout=5)

    def test_long_multibyte_type_is_stored(self):
        # BUG (src/intake/line.c, line_event): type is cut at 64 bytes,
        # which can split a UTF-8 character; json_string() then returns
        # NULL in line_rows(), the row has no type, the INSERT violates
        # NOT NULL and the delivery gets 503 on every redelivery.
        self.line_channel()
        e = event("a" * 63 + "あ", user_id(1), T0)
        r = self.deliver("shop", delivery(e))
        self.assertEqual(r.status, 200, r)

    def test_slug_that_is_not_utf8_is_404(self):
        # BUG (src/core/chancache.c lookup via line_channel_cb, and
        # api_authorized in src/api/api.c): the percent-decoded slug goes
        # to PostgreSQL as is; bytes that are not UTF-8 make the query fail
        # and the answer is 503 "database_unavailable" with a warning.
        self.line_channel()
        r = self.deliver("%FF", delivery(follow(user_id(1), T0)),
                         secret="line-secret")
        self.assertEqual(r.status, 404, r)

    def test_deep_nul_is_stored(self):
        # BUG (src/intake/line.c, line_sanitize): NUL is replaced only 64
        # levels deep; below that "\\u0000" reaches PostgreSQL, whose jsonb
        # refuses it, and the delivery gets 503 on every redelivery.
        self.line_channel()
        body = ('{"events":[{"type":"message","timestamp":%d,'
                '"webhookEventId":"%s","x":%s"\\u0000"%s}]}' %
                (T0, ulid(), "[" * 70, "]" * 70)).encode()
        r = self.deliver("shop", body)
        self.assertEqual(r.status, 200, r)

    def test_integer_beyond_64_bits_is_stored_and_applied(self):
        self.line_channel()
        e = event("message", user_id(1), T0)
        body = json.dumps(delivery(e))[:-3] + \
            ',"x":123456789012345678901234567890}]}'
        e_id = e["webhookEventId"]
        r = self.deliver("shop", body.encode())
        self.assertEqual(r.status, 200, r)
        self.wait_applied()
        self.assertEqual(self.db.sql(
            "SELECT state FROM webhook_events WHERE event_id = '%s'" % e_id),
            [["1"]])

    def test_redelivered_event_without_id_is_deduplicated(self):
        self.line_channel()
        e = follow(user_id(3), T0)
        del e["webhookEventId"]
        self.deliver_ok("shop", delivery(e))
        e["deliveryContext"] = {"isRedelivery": True}
        self.deliver_ok("shop", delivery(e))
        self.assertEqual(self.count("webhook_events"), 1)


if __name__ == "__main__":
    main()
