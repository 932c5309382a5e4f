# SPDX-License-Identifier: ISC
"""LINE intake durability: what got a 200 is stored and applied exactly once,
whatever happens to musubid or PostgreSQL afterwards."""
import base64
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import threading
import time
import unittest

from musubi_test import (MusubiTestCase, Musubid, PgCluster, ScratchDB,
                         apikey, main)

SECRET = "durability-secret"


def delivery(i, uid=None):
    uid = uid or "U%032x" % (i % 97)
    ev = {"type": "message", "timestamp": 1700000000000 + i,
          "mode": "active", "webhookEventId": "01DUR%021d" % i,
          "deliveryContext": {"isRedelivery": False},
          "source": {"type": "user", "userId": uid},
          "message": {"id": str(5000 + i), "type": "text",
                      "text": "msg %d" % i}}
    return json.dumps({"destination": "U" + "f" * 32, "events": [ev]})


def post(port, body, secret=SECRET, timeout=10):
    sig = base64.b64encode(hmac.new(secret.encode(), body.encode(),
                                    hashlib.sha256).digest()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/webhooks/line/dur", body=body,
                     headers={"x-line-signature": sig})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def burst(port, lo, hi, nthreads=8):
    """Send deliveries lo..hi-1 concurrently; return {i: status or error}."""
    out = {}
    lock = threading.Lock()
    nxt = [lo]

    def worker():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= hi:
                return
            try:
                st = post(port, delivery(i))
            except Exception as e:  # noqa: BLE001
                st = repr(e)
            with lock:
                out[i] = st
    ts = [threading.Thread(target=worker) for _ in range(nthreads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def wait_applied(db, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if db.sql("SELECT count(*) FROM webhook_events WHERE state = 0") \
                == [["0"]]:
            return
        time.sleep(0.1)
    raise AssertionError("events still pending after %ds" % timeout)


def create_channel(d, key):
    r = d.post("/api/v1/channels", {"slug": "dur", "name": "Dur",
                                    "channel_secret": SECRET}, key=key)
    assert r.status == 201, r


class KillNine(MusubiTestCase):
    def test_acked_events_applied_exactly_once_after_kill(self):
        create_channel(self.d, self.admin)
        # Hold the timeline table so the processor is stuck mid-apply
        # when musubid dies: the acked events must all still be pending.
        locker = subprocess.Popen(["psql", "-X", "-q", "-d", self.db.url],
                                  stdin=subprocess.PIPE, text=True,
                                  stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL,
                                  env=dict(os.environ,
                                           PGAPPNAME="locker"))
        locker.stdin.write("BEGIN; LOCK TABLE interactions IN ACCESS "
                           "EXCLUSIVE MODE; SELECT pg_sleep(30);\n")
        locker.stdin.flush()
        time.sleep(0.3)
        res = burst(self.d.port, 0, 400)
        time.sleep(0.3)
        self.d.proc.kill()          # right after the acks, no drain
        self.d.proc.wait()
        # The crash takes the processor's transaction with it.
        self.db.sql("SELECT pg_terminate_backend(pid) FROM "
                    "pg_stat_activity WHERE application_name IN "
                    "('musubid', 'locker') AND datname = "
                    "current_database()")
        locker.kill()
        locker.wait()
        time.sleep(0.2)
        pending = int(self.db.sql("SELECT count(*) FROM webhook_events "
                                  "WHERE state = 0")[0][0])
        self.assertEqual(pending, 400, "all acked events still pending")
        acked = sorted(i for i, st in res.items() if st == 200)
        self.assertEqual(len(acked), 400, [v for v in res.values()
                                           if v != 200][:5])
        d2 = self.spawn()
        wait_applied(self.db)
        rows = self.db.sql("SELECT event_id FROM interactions "
                           "WHERE type = 'message'")
        ids = sorted(r[0] for r in rows)
        self.assertEqual(ids, sorted("01DUR%021d" % i for i in acked))
        self.assertEqual(self.db.sql(
            "SELECT count(*), count(DISTINCT event_id) FROM interactions"),
            [["400", "400"]])
        # Replaying everything changes nothing.
        res = burst(d2.port, 0, 400)
        self.assertTrue(all(st == 200 for st in res.values()))
        wait_applied(self.db)
        self.assertEqual(self.db.sql("SELECT count(*) FROM interactions"),
                         [["400"]])
        self.assertEqual(self.db.sql("SELECT count(*) FROM webhook_events"),
                         [["400"]])


class TwoProcesses(MusubiTestCase):
    def test_two_musubid_share_intake_and_apply_each_event_once(self):
        create_channel(self.d, self.admin)
        other = self.spawn()
        results = {}

        def run(d, lo, hi):
            results.update(burst(d.port, lo, hi, nthreads=4))
        # Both processes get every delivery once: duplicates across them.
        ts = [threading.Thread(target=run, args=(self.d, 0, 600)),
              threading.Thread(target=run, args=(other, 0, 600))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(set(results.values()), {200})
        wait_applied(self.db)
        self.assertEqual(self.db.sql(
            "SELECT count(*), count(DISTINCT event_id) FROM interactions"),
            [["600", "600"]])
        self.assertEqual(self.db.sql("SELECT count(*) FROM webhook_events"),
                         [["600"]])


class PostgresStopsDuringBurst(unittest.TestCase):
    def test_every_200_is_stored_and_the_rest_got_503(self):
        pg = PgCluster()
        self.addCleanup(pg.destroy)
        pg.start()
        d = Musubid(pg.url, env={"MUSUBI_DB_CONNECT_TIMEOUT": "1s"})
        self.addCleanup(d.kill)
        d.start()
        create_channel(d, apikey(pg.url))
        results = {}

        def sender():
            results.update(burst(d.port, 0, 3000, nthreads=6))
        t = threading.Thread(target=sender)
        t.start()
        time.sleep(0.4)
        pg.stop("immediate")
        time.sleep(0.5)
        pg.start()
        t.join()
        statuses = set(results.values())
        self.assertTrue(statuses <= {200, 503}, statuses)
        self.assertIn(503, statuses, "PostgreSQL stop was not noticed")
        acked = {"01DUR%021d" % i for i, st in results.items() if st == 200}
        db = ScratchDB.__new__(ScratchDB)
        db.url = pg.url
        stored = {r[0] for r in db.sql("SELECT event_id FROM "
                                       "webhook_events")}
        self.assertTrue(acked <= stored, "a 200 was not stored: %s" %
                        sorted(acked - stored)[:5])
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    main()
