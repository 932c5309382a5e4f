#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""integration.campaigns -- campaigns end to end against line-sandbox.

Each test gets a scratch database, its own line-sandbox (LINE_SANDBOX) and
a musubid pointed at it (MUSUBI_LINE_API_BASE).  Friends are inserted with
SQL; the sandbox's auto_profiles makes any well-formed id a friend.  What
LINE received is read back from /sandbox/deliveries/counts and
/sandbox/stats, so "exactly once" is checked where it matters.

Covers: multicast and personalised push, tracked links (per run and per
recipient) and clicks in the report, JSON and CSV reports, per-recipient
status, frequency cap and quiet hours (exact skip and defer sets, channel
policy and campaign override), pause/resume/cancel, 401 (quota read and
send), the monthly quota (refuse, partial, 429 mid-run), a 400 that
isolates one bad recipient, schedules, and the API's bad-input cases.

CampaignCase is imported by test_exactly_once.py.
"""
import hashlib
import http.client
import json
import os
import subprocess
import tempfile
import time
import urllib.parse

import musubi_test as mt

SANDBOX = os.environ.get("LINE_SANDBOX", "")
TOKEN = "tok-campaigns-0123456789"


def uid(n, salt="u"):
    """A well-formed LINE user id derived from n."""
    return "U" + hashlib.md5(("%s%d" % (salt, n)).encode()).hexdigest()


class Sandbox:
    """One line-sandbox on a free port."""

    def __init__(self, config=None):
        self.port = mt.free_port()
        self.dir = tempfile.mkdtemp(prefix="musubi-sb-")
        cfg = {"seed": 7, "rate_limits": {"default": 0,
               "POST /v2/bot/message/multicast": 0,
               "POST /v2/bot/message/push": 0}}
        cfg.update(config or {})
        path = os.path.join(self.dir, "sandbox.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        self.logpath = os.path.join(self.dir, "sandbox.log")
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen([SANDBOX, "-l", "127.0.0.1:%d" %
                                      self.port, "-c", path],
                                     stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if self.call("GET", "/sandbox/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("line-sandbox did not start")

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def call(self, method, path, body=None, timeout=60):
        c = http.client.HTTPConnection("127.0.0.1", self.port,
                                       timeout=timeout)
        try:
            c.request(method, path, body=json.dumps(body)
                      if body is not None else None,
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            return r.status, json.loads(data) if data else None
        finally:
            c.close()

    def config(self, **sections):
        st, body = self.call("PUT", "/sandbox/config", sections)
        assert st == 200, (st, body)

    def counts(self):
        return self.call("GET", "/sandbox/deliveries/counts")[1]

    def stats(self):
        return self.call("GET", "/sandbox/stats")[1]

    def deliveries(self, user):
        return self.call("GET", "/sandbox/deliveries?user=" + user)[1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class CampaignCase(mt.MusubiTestCase):
    """A scratch database, a line-sandbox and one musubid aimed at it."""

    sandbox_config = None
    musubid_env = {}
    start_musubid = False

    def setUp(self):
        if not SANDBOX or not os.access(SANDBOX, os.X_OK):
            raise RuntimeError("LINE_SANDBOX must name the line-sandbox "
                               "binary")
        super().setUp()
        self.sb = Sandbox(self.sandbox_config)
        self.addCleanup(self.sb.stop)
        self.d = self.spawn_musubid()
        self.admin = mt.apikey(self.db.url)
        r = self.d.post("/api/v1/channels", {
            "slug": "shop", "name": "Shop", "channel_secret": "s3cret",
            "channel_access_token": TOKEN}, key=self.admin)
        self.assertEqual(r.status, 201, r)
        self.chan = int(self.db.sql("SELECT id FROM channels "
                                    "WHERE slug = 'shop'")[0][0])

    def env_for_musubid(self, **extra):
        env = {"MUSUBI_LINE_API_BASE": self.sb.url,
               "MUSUBI_CAMPAIGN_POLL": "100ms",
               "MUSUBI_SEND_LEASE": "4s",
               "MUSUBI_LINE_API_TIMEOUT": "2s",
               "MUSUBI_SHUTDOWN_TIMEOUT": "20s"}
        env.update(self.musubid_env)
        env.update(extra)
        return env

    def spawn_musubid(self, **extra):
        d = self.spawn(env=self.env_for_musubid(**extra))
        self.addCleanup(self.stop_cleanly, d)
        d.wait_ready(path="/readyz")
        return d

    def stop_cleanly(self, d):
        """SIGTERM; exit 0 means drained (and, under ASan, no leaks)."""
        if d.proc is None or d.proc.poll() is not None:
            return
        rc = d.stop(timeout=60)
        log = d.logtext()
        self.assertEqual(rc, 0, "musubid exit %s:\n%s" % (rc, log[-4000:]))
        for bad in ("ERROR: AddressSanitizer", "runtime error:",
                    "LeakSanitizer"):
            self.assertNotIn(bad, log)

    # -- data ---------------------------------------------------------

    def add_friends(self, n, start=0, channel=None, status="following",
                    salt="u", names=True):
        """Insert friends start..start+n-1 (ids from uid())."""
        ch = channel or self.chan
        self.db.sql(
            "INSERT INTO friends (channel_id, user_id, status, "
            "display_name, profile_state) SELECT %d, "
            "'U' || md5('%s' || g), '%s', %s, 'ok' "
            "FROM generate_series(%d, %d) g" %
            (ch, salt, status, "'友' || g" if names else "NULL", start,
             start + n - 1))

    # -- API ------------------------------------------------------------

    def api(self, method, path, body=None, slug="shop"):
        return self.d.request(method, "/api/v1/channels/%s%s" %
                              (slug, path), body=body, key=self.admin)

    def create(self, messages=None, audience=None, expect=201, **kw):
        body = {"name": kw.pop("name", "c"),
                "audience": audience or {"type": "all"},
                "messages": messages or [{"type": "text", "text": "Sale!"}]}
        body.update(kw)
        r = self.api("POST", "/campaigns", body)
        self.assertEqual(r.status, expect, r)
        return r.json()

    def start(self, cid, expect=200):
        r = self.api("POST", "/campaigns/%d/schedule" % cid)
        self.assertEqual(r.status, expect, r)
        return r.json()

    def send(self, **kw):
        """Create, schedule now and wait for the end; the campaign."""
        c = self.create(**kw)
        self.start(c["id"])
        return self.wait(c["id"])

    def campaign(self, cid):
        r = self.api("GET", "/campaigns/%d" % cid)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def wait(self, cid, states=("completed", "failed", "cancelled"),
             timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            c = self.campaign(cid)
            if c["state"] in states:
                return c
            time.sleep(0.1)
        raise AssertionError("campaign %d still %s: %s\n%s" %
                             (cid, c["state"], c, self.d.logtext()[-3000:]))

    def wait_for(self, cond, timeout=60, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = cond()
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError("timed out waiting for %s" % what)

    def report(self, cid, run=None, fmt=None):
        path = "/campaigns/%d" % cid
        if run:
            path += "/runs/%d" % run
        path += "/report"
        if fmt:
            path += "?format=" + fmt
        r = self.api("GET", path)
        self.assertEqual(r.status, 200, r)
        return r.body.decode() if fmt == "csv" else r.json()

    def recipients(self, cid, run, status=None):
        out, after = {}, 0
        while True:
            q = "?after=%d" % after
            if status:
                q += "&status=" + status
            r = self.api("GET", "/campaigns/%d/runs/%d/recipients%s" %
                         (cid, run, q))
            self.assertEqual(r.status, 200, r)
            j = r.json()
            for x in j["recipients"]:
                out[x["user_id"]] = x
            if j["next"] is None:
                return out
            after = j["next"]

    def assert_exactly_once(self, users):
        """Every id in users received exactly one batch; nobody else."""
        counts = self.sb.counts()
        missing = [u for u in users if u not in counts]
        twice = {u: n for u, n in counts.items() if n != 1}
        extra = set(counts) - set(users)
        self.assertEqual(missing, [], "never delivered: %d" % len(missing))
        self.assertEqual(twice, {}, "delivered more than once")
        self.assertEqual(extra, set(), "delivered to others")
        st = self.sb.stats()
        self.assertEqual(st["users"]["duplicates"], 0)


class TestCampaigns(CampaignCase):

    def test_multicast_reaches_each_following_friend_once(self):
        self.add_friends(1190)
        self.add_friends(10, start=5000, status="blocked")
        self.add_friends(3, start=6000, status="unknown")
        c = self.send(messages=[{"type": "text", "text":
                                 "Sale https://shop.example/s?a=1"}],
                      notification_disabled=True)
        self.assertEqual(c["state"], "completed", c)
        self.assertFalse(c["personalized"])
        self.assert_exactly_once([uid(i) for i in range(1190)])
        rep = self.report(c["id"])
        t = rep["totals"]
        self.assertEqual((t["audience"], t["sent"], t["failed"],
                          t["queued"]), (1203, 1190, 0, 0), rep)
        self.assertEqual(t["skipped"], {"blocked": 10, "not_friend": 3})
        self.assertEqual(t["requests"], 3)	# 500 + 500 + 190
        run = rep["runs"][0]["run_id"]
        # The body LINE got: multicast options and one tracked link.
        d = self.sb.deliveries(uid(0))["deliveries"][0]
        self.assertEqual(d["endpoint"], "POST /v2/bot/message/multicast")
        self.assertTrue(d["retryKey"])
        text = d["messages"][0]["text"]
        self.assertTrue(text.startswith("Sale http://127.0.0.1:%d/c/" %
                                        self.d.port), text)
        link = self.db.sql("SELECT destination, campaign_id FROM links "
                           "WHERE channel_id = %d" % self.chan)
        self.assertEqual(link, [["https://shop.example/s?a=1",
                                 str(c["id"])]])
        # Per-recipient status, derived from the batches.
        rc = self.recipients(c["id"], run)
        self.assertEqual(len(rc), 1203)
        self.assertEqual(rc[uid(0)]["status"], "sent")
        self.assertTrue(rc[uid(0)]["request_id"])
        self.assertEqual(rc[uid(5000)], {"user_id": uid(5000),
                                         "status": "skipped",
                                         "reason": "blocked",
                                         "request_id": None})
        self.assertEqual(len(self.recipients(c["id"], run, "skipped")), 13)
        # The run's link works, and its clicks reach the report.
        url = text.split(" ", 1)[1]
        tok = urllib.parse.urlparse(url).path
        r = self.d.get(tok)
        self.assertEqual(r.status, 302, r)
        self.assertTrue(r.header("Location").startswith(
            "https://shop.example/s?a=1"))
        self.wait_for(lambda: self.report(c["id"])["totals"]["clicks"] == 1,
                      what="the click in the report")
        csv = self.report(c["id"], fmt="csv").splitlines()
        self.assertTrue(csv[0].startswith("run_id,scheduled_at"))
        self.assertEqual(len(csv), 3)
        self.assertTrue(csv[2].startswith("total,"))
        head = csv[0].split(",")
        row = dict(zip(head, csv[1].split(",")))
        self.assertEqual((row["sent"], row["skipped_blocked"], row["clicks"]),
                         ("1190", "10", "1"))

    def test_personalized_push_with_per_recipient_links(self):
        self.add_friends(40)
        self.db.sql("UPDATE friends SET display_name = NULL "
                    "WHERE user_id = '%s'" % uid(3))
        c = self.send(messages=[
            {"type": "text", "text": "こんにちは {{display_name|お客様}}さん "
             "https://shop.example/p"},
            {"type": "template", "altText": "for {{display_name}}",
             "template": {"type": "buttons", "text": "see",
                          "actions": [{"type": "uri", "label": "go",
                                       "uri": "https://shop.example/q"}]}}],
            aggregation_unit="spring_sale")
        self.assertEqual(c["state"], "completed", c)
        self.assertTrue(c["personalized"])
        self.assert_exactly_once([uid(i) for i in range(40)])
        d = self.sb.deliveries(uid(7))["deliveries"][0]
        self.assertEqual(d["endpoint"], "POST /v2/bot/message/push")
        m = d["messages"]
        self.assertTrue(m[0]["text"].startswith("こんにちは 友7さん http://"),
                        m)
        self.assertEqual(m[1]["altText"], "for 友7")
        uri = m[1]["template"]["actions"][0]["uri"]
        self.assertIn("/c/", uri)
        d3 = self.sb.deliveries(uid(3))["deliveries"][0]
        self.assertTrue(d3["messages"][0]["text"].startswith(
            "こんにちは お客様さん"))
        # Two links for the run, each a different token per recipient.
        self.assertEqual(self.db.sql(
            "SELECT count(*) FROM links WHERE campaign_id = %d" %
            c["id"]), [["2"]])
        other = self.sb.deliveries(uid(8))["deliveries"][0]["messages"]
        self.assertNotEqual(other[1]["template"]["actions"][0]["uri"], uri)
        # A click names the friend: unique clickers count friends.
        for path in (uri, uri, other[1]["template"]["actions"][0]["uri"]):
            r = self.d.get(urllib.parse.urlparse(path).path)
            self.assertEqual(r.status, 302)
        rep = self.wait_for(
            lambda: (lambda r: r if r["totals"]["clicks"] == 3 else None)(
                self.report(c["id"])), what="clicks")
        self.assertEqual(rep["totals"]["unique_clickers"], 2)
        self.assertEqual(rep["totals"]["requests"], 40)

    def test_frequency_cap_skips_exactly_the_capped(self):
        self.add_friends(20)
        r = self.api("PUT", "/policies", {"frequency_cap": {
            "max": 2, "window_hours": 24}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["frequency_cap"],
                         {"max": 2, "window_hours": 24})
        a = self.send(audience={"type": "friends", "user_ids":
                                [uid(i) for i in range(10)]},
                      messages=[{"type": "text", "text": "A"}])
        b = self.send(audience={"type": "friends", "user_ids":
                                [uid(i) for i in range(5)]},
                      messages=[{"type": "text", "text": "B"}])
        self.assertEqual((a["state"], b["state"]), ("completed",
                                                     "completed"))
        c = self.send(messages=[{"type": "text", "text": "C"}])
        rep = self.report(c["id"])
        run = rep["runs"][0]["run_id"]
        skipped = self.recipients(c["id"], run, "skipped")
        self.assertEqual(set(skipped), {uid(i) for i in range(5)})
        self.assertTrue(all(x["reason"] == "frequency_cap"
                            for x in skipped.values()))
        self.assertEqual(rep["totals"]["sent"], 15)
        counts = self.sb.counts()
        self.assertEqual({u: counts[uid(i)] for i, u in
                          enumerate(uid(i) for i in range(20))},
                         {uid(i): 2 if i < 10 else 1 for i in range(20)})
        # A campaign may lift the cap for itself.
        d = self.send(messages=[{"type": "text", "text": "D"}],
                      policies={"frequency_cap": None})
        self.assertEqual(self.report(d["id"])["totals"]["sent"], 20)
        # Or set its own: friends 0-9 have had 3 (A or B, C or not, D),
        # friends 10-19 two (C, D).
        e = self.send(messages=[{"type": "text", "text": "E"}],
                      policies={"frequency_cap": {"max": 3,
                                                  "window_hours": 1}})
        rep = self.report(e["id"])
        self.assertEqual(rep["totals"]["skipped"], {"frequency_cap": 10})
        self.assertEqual(rep["totals"]["sent"], 10)

    def quiet_now(self, tz_offset_hours=9):
        """A quiet window covering now in a zone (start, end)."""
        now = time.gmtime(time.time() + tz_offset_hours * 3600)
        start = (now.tm_hour * 60 + now.tm_min - 30) % 1440
        end = (now.tm_hour * 60 + now.tm_min + 30) % 1440
        return ("%02d:%02d" % divmod(start, 60), "%02d:%02d" %
                divmod(end, 60))

    def quiet_not_now(self, tz_offset_hours=9):
        now = time.gmtime(time.time() + tz_offset_hours * 3600)
        start = (now.tm_hour * 60 + now.tm_min + 120) % 1440
        end = (now.tm_hour * 60 + now.tm_min + 180) % 1440
        return ("%02d:%02d" % divmod(start, 60), "%02d:%02d" %
                divmod(end, 60))

    def test_quiet_hours_defer_until_the_window_opens(self):
        self.add_friends(30)
        # A second channel in another timezone is not in its quiet hours.
        r = self.d.post("/api/v1/channels", {
            "slug": "ny", "name": "NY", "channel_secret": "s",
            "channel_access_token": "tok-ny-0123456789",
            "timezone": "America/New_York"}, key=self.admin)
        self.assertEqual(r.status, 201, r)
        ny = int(self.db.sql("SELECT id FROM channels WHERE slug = 'ny'")
                 [0][0])
        self.add_friends(30, channel=ny, salt="ny")
        s, e = self.quiet_now(9)
        self.assertEqual(self.api("PUT", "/policies", {"quiet_hours": {
            "start": s, "end": e}}).status, 200)
        # New York local time is 14 hours behind Tokyo: there the same
        # clock times are far from now.
        r = self.api("PUT", "/policies", {"quiet_hours": {
            "start": s, "end": e}}, slug="ny")
        self.assertEqual(r.status, 200)
        c = self.create(messages=[{"type": "text", "text": "quiet"}])
        self.start(c["id"])
        body = {"name": "ny", "audience": {"type": "all"},
                "messages": [{"type": "text", "text": "ny"}]}
        r = self.api("POST", "/campaigns", body, slug="ny")
        self.assertEqual(r.status, 201, r)
        nyc = r.json()["id"]
        r = self.api("POST", "/campaigns/%d/schedule" % nyc, slug="ny")
        self.assertEqual(r.status, 200)
        # The override: a campaign that ignores quiet hours goes now.
        o = self.create(messages=[{"type": "text", "text": "urgent"}],
                        audience={"type": "friends",
                                  "user_ids": [uid(0)]},
                        policies={"quiet_hours": None})
        self.start(o["id"])
        self.assertEqual(self.wait(o["id"])["state"], "completed")
        self.wait_for(lambda: len(self.sb.counts()) == 31,
                      what="the New York channel's friends")
        time.sleep(1.0)
        c = self.campaign(c["id"])
        self.assertEqual(c["state"], "running")
        self.assertIn("deferred: quiet hours", c["runs"][0]["status_reason"])
        counts = self.sb.counts()
        self.assertEqual(set(counts), {uid(i, "ny") for i in range(30)} |
                         {uid(0)})
        # The window opens (the policy moves): everyone gets it, once.
        s, e = self.quiet_not_now(9)
        self.api("PUT", "/policies", {"quiet_hours": {"start": s,
                                                      "end": e}})
        self.assertEqual(self.wait(c["id"])["state"], "completed")
        counts = self.sb.counts()
        self.assertEqual(counts[uid(0)], 2)
        self.assertTrue(all(counts[uid(i)] == 1 for i in range(1, 30)))

    def test_quiet_hours_pause_a_run_in_flight(self):
        self.add_friends(400)
        d2 = self.d
        d2.stop()
        self.d = self.spawn_musubid(MUSUBI_LINE_PUSH_RPS="100")
        c = self.create(messages=[{"type": "text",
                                   "text": "{{display_name}}"}])
        self.start(c["id"])
        self.wait_for(lambda: len(self.sb.counts()) >= 50, what="50 sent")
        s, e = self.quiet_now(9)
        self.api("PUT", "/policies", {"quiet_hours": {"start": s,
                                                      "end": e}})
        self.wait_for(lambda: "quiet hours" in (
            self.campaign(c["id"])["runs"][0]["status_reason"] or ""),
            what="the run to pause")
        time.sleep(0.5)
        n1 = len(self.sb.counts())
        time.sleep(1.5)
        n2 = len(self.sb.counts())
        self.assertEqual(n1, n2, "sent during quiet hours")
        self.assertLess(n2, 400)
        run = self.campaign(c["id"])["runs"][0]["id"]
        queued = self.recipients(c["id"], run, "queued")
        sent = self.recipients(c["id"], run, "sent")
        self.assertEqual(len(queued) + len(sent), 400)
        self.assertEqual(set(sent), set(self.sb.counts()))
        self.api("PUT", "/policies", {"quiet_hours": None})
        self.assertEqual(self.wait(c["id"])["state"], "completed")
        self.assert_exactly_once([uid(i) for i in range(400)])

    def test_pause_resume_cancel(self):
        self.d.stop()
        self.d = self.spawn_musubid(MUSUBI_LINE_PUSH_RPS="100")
        self.add_friends(300)
        c = self.create(messages=[{"type": "text",
                                   "text": "hi {{display_name}}"}])
        self.start(c["id"])
        self.wait_for(lambda: len(self.sb.counts()) >= 30, what="30 sent")
        r = self.api("POST", "/campaigns/%d/pause" % c["id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["state"], "paused")
        # Editing is refused while a run exists; resuming twice is too.
        r = self.api("PATCH", "/campaigns/%d" % c["id"], {"name": "x"})
        self.assertEqual(r.status, 409, r)
        time.sleep(0.5)
        n1 = len(self.sb.counts())
        time.sleep(1.0)
        self.assertEqual(len(self.sb.counts()), n1)
        r = self.api("POST", "/campaigns/%d/resume" % c["id"])
        self.assertEqual(r.status, 200, r)
        r = self.api("POST", "/campaigns/%d/resume" % c["id"])
        self.assertEqual(r.status, 409, r)
        self.assertEqual(self.wait(c["id"])["state"], "completed")
        self.assert_exactly_once([uid(i) for i in range(300)])
        # Cancel in the middle: what was not sent stays unsent.
        k = self.create(messages=[{"type": "text",
                                   "text": "bye {{display_name}}"}])
        self.start(k["id"])
        self.wait_for(lambda: self.sb.stats()["delivered"]["requests"] >=
                      330, what="30 more sent")
        r = self.api("POST", "/campaigns/%d/cancel" % k["id"])
        self.assertEqual(r.status, 200, r)
        k = self.wait(k["id"])
        self.assertEqual(k["state"], "cancelled")
        time.sleep(0.5)
        rep = self.report(k["id"])["totals"]
        delivered = self.sb.stats()["delivered"]["requests"] - 300
        self.assertEqual(rep["sent"], delivered)
        self.assertEqual(rep["sent"] + rep["cancelled"], 300, rep)
        self.assertGreater(rep["cancelled"], 0)
        r = self.api("POST", "/campaigns/%d/cancel" % k["id"])
        self.assertEqual(r.status, 409, r)

    def test_400_isolates_a_bad_recipient(self):
        self.add_friends(30)
        bad = "U" + "z" * 32	# not hex: LINE refuses to[i]
        self.db.sql("INSERT INTO friends (channel_id, user_id, status) "
                    "VALUES (%d, '%s', 'following')" % (self.chan, bad))
        c = self.send(messages=[{"type": "text", "text": "x"}])
        self.assertEqual(c["state"], "completed", c)
        self.assert_exactly_once([uid(i) for i in range(30)])
        rep = self.report(c["id"])
        self.assertEqual((rep["totals"]["sent"], rep["totals"]["failed"]),
                         (30, 1), rep)
        run = rep["runs"][0]["run_id"]
        failed = self.recipients(c["id"], run, "failed")
        self.assertEqual(list(failed), [bad])
        self.assertIn("to[", failed[bad]["reason"])
        self.assertIn("400", failed[bad]["reason"])

    def test_401_stops_the_campaign(self):
        self.add_friends(10)
        self.sb.config(tokens=["some-other-token"])
        c = self.send()
        self.assertEqual(c["state"], "failed")
        self.assertTrue(c["status_reason"].startswith("unauthorized"), c)
        self.assertEqual(self.sb.stats()["delivered"]["requests"], 0)
        # A 401 on the send itself (the quota read went through).
        self.sb.config(tokens=None, faults={
            "POST /v2/bot/message/multicast": {"rate": 1, "count": 1,
                                               "statuses": [401]}})
        c = self.send()
        self.assertEqual(c["state"], "failed")
        self.assertIn("unauthorized", c["status_reason"])
        self.assertEqual(c["runs"][0]["state"], "failed")
        self.assertEqual(self.sb.stats()["delivered"]["requests"], 0)

    def test_monthly_quota_refuse_partial_and_limit(self):
        self.add_friends(1500)
        self.sb.config(quota={"type": "limited", "value": 1000})
        c = self.send(quota_policy="refuse")
        self.assertEqual(c["state"], "failed")
        self.assertIn("quota", c["status_reason"])
        self.assertEqual(self.sb.stats()["delivered"]["recipients"], 0)
        c = self.send(quota_policy="partial")
        self.assertEqual(c["state"], "completed", c)
        rep = self.report(c["id"])["totals"]
        self.assertEqual((rep["sent"], rep["skipped"]),
                         (1000, {"quota": 500}))
        self.assertEqual(self.sb.stats()["delivered"]["recipients"], 1000)
        # LINE says "monthly limit" in the middle of a run: it stops.
        self.sb.call("POST", "/sandbox/reset")
        self.sb.config(quota={"type": "none"})
        self.d.stop()
        self.d = self.spawn_musubid(MUSUBI_LINE_MULTICAST_RPS="1")
        c = self.create(quota_policy="partial")
        self.start(c["id"])
        self.wait_for(lambda: self.sb.stats()["delivered"]["recipients"]
                      >= 500, what="the first batch")
        self.sb.config(quota={"type": "limited", "value": 700})
        c = self.wait(c["id"])
        self.assertEqual(c["state"], "failed")
        self.assertIn("monthly limit", c["status_reason"])
        self.assertEqual(self.sb.stats()["delivered"]["recipients"], 500)
        rep = self.report(c["id"])["totals"]
        self.assertEqual(rep["sent"], 500)
        self.assertEqual(rep["queued"], 1000)

    def test_schedule_at_and_recurring(self):
        self.add_friends(5)
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                           time.gmtime(time.time() + 3))
        c = self.create(schedule={"type": "at", "at": at})
        c = self.start(c["id"])
        self.assertEqual(c["state"], "scheduled")
        time.sleep(1)
        self.assertEqual(len(self.sb.counts()), 0)
        self.assertEqual(self.wait(c["id"])["state"], "completed")
        self.assertEqual(len(self.sb.counts()), 5)
        # Weekly at 09:00 Tokyo time: the next one is a 00:00 UTC.
        w = self.create(schedule={"type": "weekly", "days": ["mon", "thu"],
                                  "time": "09:00"})
        w = self.start(w["id"])
        self.assertEqual(w["state"], "scheduled")
        self.assertTrue(w["next_run_at"].endswith("T00:00:00.000Z"), w)
        wd = self.db.sql("SELECT extract(isodow FROM next_run_at AT TIME "
                         "ZONE 'Asia/Tokyo') FROM campaigns WHERE id = %d"
                         % w["id"])[0][0]
        self.assertIn(wd, ("1", "4"))
        # An occurrence that is due becomes a run once, even with two
        # schedulers: the next one is computed, the campaign stays alive.
        self.db.sql("UPDATE campaigns SET next_run_at = now() "
                    "WHERE id = %d" % w["id"])
        self.wait_for(lambda: len(self.campaign(w["id"])["runs"]) == 1 and
                      self.campaign(w["id"])["state"] == "scheduled",
                      what="one weekly run")
        self.assertEqual(sum(self.sb.counts().values()), 10)
        w = self.campaign(w["id"])
        self.assertIsNotNone(w["next_run_at"])
        # Editing a scheduled campaign is fine; it keeps its state.
        r = self.api("PATCH", "/campaigns/%d" % w["id"], {"name": "weekly"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["state"], "scheduled")
        r = self.api("POST", "/campaigns/%d/cancel" % w["id"])
        self.assertEqual(r.json()["state"], "cancelled")
        self.assertIsNone(r.json()["next_run_at"])

    def test_segment_audience(self):
        self.add_friends(20)
        self.db.sql("UPDATE friends SET language = 'ja' WHERE "
                    "display_name IN ('友1', '友2', '友3')")
        r = self.api("POST", "/segments", {"name": "ja", "rule":
                                           {"friend": {"language": "ja"}}})
        self.assertEqual(r.status, 201, r)
        seg = r.json()["id"]
        # A frozen snapshot keeps its members even when the rule would
        # now pick others.
        r = self.api("POST", "/segments/%d/snapshots" % seg, {})
        self.assertEqual(r.status, 201, r)
        snap = r.json()["id"]
        self.db.sql("UPDATE friends SET language = 'ja' WHERE "
                    "display_name = '友4'")
        c = self.send(audience={"type": "segment", "segment_id": seg})
        self.assertEqual(c["state"], "completed", c)
        self.assert_exactly_once([uid(1), uid(2), uid(3), uid(4)])
        c = self.send(audience={"type": "snapshot", "snapshot_id": snap},
                      messages=[{"type": "text", "text": "again"}])
        self.assertEqual(c["state"], "completed", c)
        counts = self.sb.counts()
        self.assertEqual(counts, {uid(1): 2, uid(2): 2, uid(3): 2,
                                  uid(4): 1})
        r = self.api("POST", "/campaigns", {
            "name": "x", "audience": {"type": "snapshot",
                                      "snapshot_id": snap + 100},
            "messages": [{"type": "text", "text": "ok"}]})
        self.assertEqual(r.status, 404, r)

    def test_bad_input(self):
        self.add_friends(3)
        bad = [
            ({"messages": [{"type": "text", "text": "x" * 5001}]},
             422, "/messages/0/text"),
            ({"messages": [{"type": "text", "text": "ok"},
                           {"type": "flex", "altText": "a" * 401,
                            "contents": {"type": "bubble"}}]},
             422, "/messages/1/altText"),
            ({"messages": []}, 422, "/messages"),
            ({"messages": [{"type": "text", "text": "Hi {{nickname}}"}]},
             422, "/messages/0/text"),
            ({"schedule": {"type": "at", "at": "2020-01-01T00:00:00Z"}},
             422, "/schedule/at"),
            ({"schedule": {"type": "at", "at": "2030-01-01T00:00:00"}},
             422, "/schedule/at"),
            ({"audience": {"type": "friends", "user_ids": ["nope"]}},
             422, "/audience/user_ids/0"),
            ({"audience": {"type": "friends",
                           "user_ids": [uid(0), uid(99)]}},
             422, "/audience/user_ids/1"),
            ({"audience": {"type": "everyone"}}, 422, "/audience/type"),
            ({"quota_policy": "maybe"}, 422, "/quota_policy"),
            ({"policies": {"quiet_hours": {"start": "25:00",
                                           "end": "08:00"}}},
             422, "/policies/quiet_hours"),
            ({"aggregation_unit": "has-dash"}, 422, "/aggregation_unit"),
            ({"colour": "red"}, 422, "/colour"),
        ]
        for patch, status, path in bad:
            body = {"name": "x", "audience": {"type": "all"},
                    "messages": [{"type": "text", "text": "ok"}]}
            body.update(patch)
            r = self.api("POST", "/campaigns", body)
            self.assertEqual(r.status, status, (patch, r))
            self.assertEqual(r.json()["error"]["path"], path, (patch, r))
        # A segment of another channel is 404.
        self.d.post("/api/v1/channels", {
            "slug": "other", "name": "Other", "channel_secret": "s",
            "channel_access_token": "tok-other-0123456789"},
            key=self.admin)
        r = self.api("POST", "/segments", {"name": "o", "rule": {
            "friend": {"status": "following"}}}, slug="other")
        self.assertEqual(r.status, 201, r)
        r = self.api("POST", "/campaigns", {
            "name": "x", "audience": {"type": "segment",
                                      "segment_id": r.json()["id"]},
            "messages": [{"type": "text", "text": "ok"}]})
        self.assertEqual(r.status, 404, r)
        # Nothing of the refused requests was stored.
        self.assertEqual(self.db.sql("SELECT count(*) FROM campaigns"),
                         [["0"]])
        # Editing a running (or finished) campaign is 409.
        c = self.send()
        r = self.api("PATCH", "/campaigns/%d" % c["id"],
                     {"messages": [{"type": "text", "text": "new"}]})
        self.assertEqual(r.status, 409, r)
        r = self.api("DELETE", "/campaigns/%d" % c["id"])
        self.assertEqual(r.status, 409, r)
        r = self.api("POST", "/campaigns/%d/schedule" % c["id"])
        self.assertEqual(r.status, 409, r)
        r = self.api("POST", "/campaigns/%d/explode" % c["id"])
        self.assertEqual(r.status, 404, r)
        r = self.api("GET", "/campaigns/999999")
        self.assertEqual(r.status, 404, r)
        # A draft can be edited (and re-validated) and deleted.
        d = self.create()
        r = self.api("PATCH", "/campaigns/%d" % d["id"],
                     {"messages": [{"type": "text", "text": "x" * 5001}]})
        self.assertEqual(r.status, 422, r)
        r = self.api("PATCH", "/campaigns/%d" % d["id"],
                     {"messages": [{"type": "text",
                                    "text": "Hi {{display_name}}"}]})
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json()["personalized"])
        r = self.api("DELETE", "/campaigns/%d" % d["id"])
        self.assertEqual(r.status, 204, r)
        # A draft whose "at" has passed cannot be scheduled.
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                           time.gmtime(time.time() + 1))
        p = self.create(schedule={"type": "at", "at": at})
        time.sleep(1.5)
        r = self.api("POST", "/campaigns/%d/schedule" % p["id"])
        self.assertEqual(r.status, 422, r)
        self.assertEqual(r.json()["error"]["path"], "/schedule")
        # Channel policies are validated too.
        r = self.api("PUT", "/policies", {"frequency_cap": {"max": 0}})
        self.assertEqual(r.status, 422, r)
        self.assertEqual(r.json()["error"]["path"], "/frequency_cap")


if __name__ == "__main__":
    mt.main()
