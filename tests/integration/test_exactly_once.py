#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""integration.exactly_once -- every recipient gets exactly one message.

Against line-sandbox, whose /sandbox/deliveries/counts is the ground truth:
  * kill -9 musubid while a 100,000-recipient multicast campaign has batches
    in flight, restart it: everyone exactly once, nobody missing;
  * the same for a personalised (push) campaign;
  * two musubid processes sending one campaign at once;
  * the sandbox failing 10% of requests with 429 or 5xx before doing the
    work, and 10% with 5xx (or no answer) after doing it (the lost-answer
    case that only the retry key saves).
Leases are short (3 s) so the restarted process resumes quickly.
"""
import re
import signal
import time

import musubi_test as mt
from test_campaigns import CampaignCase, uid

N_BIG = 100000


class TestExactlyOnce(CampaignCase):

    musubid_env = {"MUSUBI_SEND_LEASE": "3s",
                   "MUSUBI_LINE_API_TIMEOUT": "1500ms"}

    def open_batches(self):
        return int(self.db.sql("SELECT count(*) FROM delivery_batches "
                               "WHERE state IN ('pending', 'sending')")
                   [0][0])

    def sends(self, d):
        """Requests this musubid made to LINE, from its /metrics."""
        body = d.get("/metrics").body.decode()
        return sum(int(v) for v in re.findall(
            r'^musubi_campaign_sends_total\{[^}]*\} (\d+)$', body, re.M))

    def test_kill_9_mid_multicast_then_restart(self):
        self.add_friends(N_BIG)
        self.d.stop()
        # 200 batches at 25/s: about 8 s of sending, 50 ms per request.
        self.sb.config(faults={"global": {"latency_ms": 50}})
        self.d = self.spawn_musubid(MUSUBI_LINE_MULTICAST_RPS="25")
        c = self.create(messages=[{"type": "text", "text":
                                   "big sale https://shop.example/"}])
        self.start(c["id"])
        self.wait_for(lambda: self.sb.stats()["delivered"]["recipients"]
                      >= 20000, timeout=120, what="20,000 delivered")
        self.d.proc.send_signal(signal.SIGKILL)
        self.d.proc.wait()
        before = self.sb.stats()["delivered"]["recipients"]
        self.assertLess(before, N_BIG, "finished before the kill")
        inflight = int(self.db.sql(
            "SELECT count(*) FROM delivery_batches WHERE state = "
            "'sending'")[0][0])
        self.d = self.spawn_musubid(MUSUBI_LINE_MULTICAST_RPS="200")
        c = self.wait(c["id"], timeout=180)
        self.assertEqual(c["state"], "completed", c)
        self.assertEqual(self.open_batches(), 0)
        self.assert_exactly_once([uid(i) for i in range(N_BIG)])
        rep = self.report(c["id"])["totals"]
        self.assertEqual((rep["sent"], rep["failed"], rep["queued"]),
                         (N_BIG, 0, 0))
        print("\n  killed after %d recipients, %d batches leased; "
              "resumed to %d, exactly once" % (before, inflight, N_BIG))

    def test_kill_9_mid_push_then_restart(self):
        n = 20000
        self.add_friends(n)
        self.d.stop()
        self.sb.config(faults={"global": {"latency_ms": 5}})
        self.d = self.spawn_musubid(MUSUBI_LINE_PUSH_RPS="2000")
        c = self.create(messages=[{"type": "text", "text":
                                   "{{display_name}}さん https://s.example/"}])
        self.start(c["id"])
        self.wait_for(lambda: self.sb.stats()["delivered"]["requests"]
                      >= 3000, timeout=120, what="3,000 pushes")
        self.d.proc.send_signal(signal.SIGKILL)
        self.d.proc.wait()
        before = self.sb.stats()["delivered"]["requests"]
        self.assertLess(before, n)
        self.d = self.spawn_musubid()
        c = self.wait(c["id"], timeout=180)
        self.assertEqual(c["state"], "completed", c)
        self.assert_exactly_once([uid(i) for i in range(n)])

    def test_sigterm_mid_send_leaves_nothing_behind(self):
        n = 30000
        self.add_friends(n)
        self.d.stop()
        self.d = self.spawn_musubid(MUSUBI_LINE_MULTICAST_RPS="10")
        c = self.create()
        self.start(c["id"])
        self.wait_for(lambda: self.sb.stats()["delivered"]["recipients"]
                      >= 2000, timeout=60, what="2,000 delivered")
        self.assertEqual(self.d.stop(), 0)
        # Drained: nothing is leased any more, so a restart goes on at
        # once (no lease to wait for).
        self.assertEqual(int(self.db.sql(
            "SELECT count(*) FROM delivery_batches WHERE state = "
            "'sending'")[0][0]), 0)
        self.d = self.spawn_musubid(MUSUBI_LINE_MULTICAST_RPS="200")
        self.assertEqual(self.wait(c["id"])["state"], "completed")
        self.assert_exactly_once([uid(i) for i in range(n)])

    def test_two_processes_share_one_campaign(self):
        self.add_friends(N_BIG)
        self.d.stop()
        # Together they keep to 100/s; each takes half (heartbeats).
        self.sb.config(faults={"global": {"latency_ms": 20}})
        a = self.spawn_musubid(MUSUBI_LINE_MULTICAST_RPS="100")
        b = self.spawn_musubid(MUSUBI_LINE_MULTICAST_RPS="100")
        self.d = a
        c = self.create()
        self.start(c["id"])
        c = self.wait(c["id"], timeout=180)
        self.assertEqual(c["state"], "completed", c)
        self.assert_exactly_once([uid(i) for i in range(N_BIG)])
        sa, sb = self.sends(a), self.sends(b)
        self.assertEqual(sa + sb, 200, (sa, sb))
        self.assertGreater(sa, 20, (sa, sb))
        self.assertGreater(sb, 20, (sa, sb))
        st = self.sb.stats()["requests"]
        self.assertNotIn("429", st.get("POST /v2/bot/message/multicast",
                                       {}), st)

    def faults_case(self, fault):
        n_multi, n_push = 20000, 2000
        self.add_friends(n_multi)
        self.add_friends(n_push, salt="p")
        self.sb.config(seed=11, faults={
            "POST /v2/bot/message/multicast": fault,
            "POST /v2/bot/message/push": fault})
        m = self.create(name="multicast", audience={
            "type": "all"}, messages=[{"type": "text", "text": "m"}])
        self.start(m["id"])
        self.assertEqual(self.wait(m["id"], timeout=180)["state"],
                         "completed")
        p = self.create(name="push", audience={
            "type": "friends", "user_ids": [uid(i, "p")
                                            for i in range(n_push)]},
            messages=[{"type": "text", "text": "{{display_name}}"}])
        self.start(p["id"])
        self.assertEqual(self.wait(p["id"], timeout=180)["state"],
                         "completed")
        counts = self.sb.counts()
        want = {uid(i): 1 for i in range(n_multi)}
        want.update({uid(i, "p"): 2 for i in range(n_push)})
        self.assertEqual(len(counts), len(want))
        bad = {u: c for u, c in counts.items() if want.get(u) != c}
        self.assertEqual(bad, {})
        st = self.sb.stats()
        self.assertEqual(st["users"]["duplicates"], 0)
        self.assertGreater(st["faults_injected"], 0)
        return st

    def test_ten_percent_429_and_5xx_before(self):
        st = self.faults_case({"rate": 0.1, "mode": "before",
                               "statuses": [429, 500, 502, 503]})
        print("\n  faults injected: %d; requests: %s" %
              (st["faults_injected"], st["requests"]))

    def test_ten_percent_5xx_and_timeouts_after(self):
        st = self.faults_case({"rate": 0.1, "mode": "after",
                               "statuses": [500, 502, 503, 504],
                               "timeout_rate": 0.02})
        r = st["requests"]
        self.assertIn("409", r["POST /v2/bot/message/multicast"], r)
        self.assertIn("409", r["POST /v2/bot/message/push"], r)
        print("\n  faults injected: %d; requests: %s" %
              (st["faults_injected"], r))


if __name__ == "__main__":
    mt.main()
