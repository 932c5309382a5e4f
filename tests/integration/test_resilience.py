# SPDX-License-Identifier: ISC
"""musubid under failure: PostgreSQL restarts, concurrent start-up, SIGTERM
during a burst, connection limits."""
import http.client
import signal
import socket
import subprocess
import threading
import time
import unittest

from musubi_test import (MusubiTestCase, Musubid, PgCluster, ScratchDB,
                         apikey, main, psql)


def fire(port, method, path, key=None, timeout=30):
    """One request on its own connection: (status, body) or an exception."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Authorization": "Bearer " + key} if key else {}
    try:
        conn.request(method, path, headers=h)
        r = conn.getresponse()
        return (r.status, r.read())
    finally:
        conn.close()


class PostgresRestart(unittest.TestCase):
    def setUp(self):
        self.pg = PgCluster()
        self.addCleanup(self.pg.destroy)
        self.pg.start()

    def test_readyz_follows_postgres_and_every_request_is_answered(self):
        d = Musubid(self.pg.url, env={"MUSUBI_DB_CONNECT_TIMEOUT": "1s"})
        self.addCleanup(d.kill)
        d.start()
        key = apikey(self.pg.url)
        self.assertEqual(d.get("/readyz").status, 200)

        # Requests in flight while PostgreSQL goes away.
        results = []
        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    results.append(fire(d.port, "GET", "/api/v1/channels",
                                        key=key, timeout=10)[0])
                except Exception as e:  # noqa: BLE001
                    results.append(repr(e))
        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        self.pg.stop("immediate")
        t0 = time.time()
        r = d.get("/readyz", timeout=5)
        self.assertLess(time.time() - t0, 3, "readyz hung")
        self.assertEqual(r.status, 503, r)
        time.sleep(0.5)
        self.pg.start()
        deadline = time.time() + 20
        while time.time() < deadline:
            if d.get("/readyz", timeout=5).status == 200:
                break
            time.sleep(0.1)
        else:
            self.fail("readyz never came back:\n" + d.logtext())
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        # Every request got an HTTP answer: 200, or 503 while PG was away.
        self.assertTrue(results)
        for res in results:
            self.assertIn(res, (200, 503), res)
        self.assertIn(503, results)
        self.assertEqual(d.get("/api/v1/channels", key=key).status, 200)
        self.assertEqual(d.proc.poll(), None, "musubid must not restart")
        self.assertEqual(d.stop(), 0)

    def test_database_down_gives_503_not_hang(self):
        d = Musubid(self.pg.url)
        self.addCleanup(d.kill)
        d.start()
        key = apikey(self.pg.url)
        self.pg.stop("fast")
        for _ in range(5):
            t0 = time.time()
            status, body = fire(d.port, "GET", "/api/v1/channels", key=key)
            self.assertEqual(status, 503)
            self.assertIn(b"database_unavailable", body)
            self.assertLess(time.time() - t0, 2)
        self.assertEqual(d.stop(), 0)


class ConcurrentStart(unittest.TestCase):
    def test_two_processes_apply_migrations_once(self):
        db = ScratchDB()
        self.addCleanup(db.drop)
        a = Musubid(db.url)
        b = Musubid(db.url)
        self.addCleanup(a.kill)
        self.addCleanup(b.kill)
        a.start(wait=False)
        b.start(wait=False)
        a.wait_ready()
        b.wait_ready()
        rows = db.sql("SELECT version, count(*) FROM schema_migrations "
                      "GROUP BY version ORDER BY version")
        self.assertTrue(rows)
        for v, n in rows:
            self.assertEqual(n, "1", rows)
        # Exactly one of them applied each migration.
        applied = 0
        for d in (a, b):
            for line in d.logtext().splitlines():
                if "migrate: applied" in line:
                    applied += 1
        self.assertEqual(applied, len(rows))
        self.assertEqual(a.get("/readyz").status, 200)
        self.assertEqual(b.get("/readyz").status, 200)
        self.assertEqual(a.stop(), 0)
        self.assertEqual(b.stop(), 0)


class GracefulStop(MusubiTestCase):
    def test_sigterm_during_burst_answers_every_request(self):
        # Hold the channels table so API requests wait inside PostgreSQL.
        locker = subprocess.Popen(
            ["psql", "-X", "-q", "-d", self.db.url],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, text=True)
        locker.stdin.write("BEGIN; LOCK TABLE channels IN ACCESS EXCLUSIVE "
                           "MODE; SELECT pg_sleep(1.5); COMMIT;\n")
        locker.stdin.flush()
        time.sleep(0.3)
        results = [None] * 40

        def one(i):
            try:
                results[i] = fire(self.d.port, "GET", "/api/v1/channels",
                                  key=self.admin)[0]
            except Exception as e:  # noqa: BLE001
                results[i] = repr(e)
        threads = [threading.Thread(target=one, args=(i,))
                   for i in range(len(results))]
        for t in threads:
            t.start()
        time.sleep(0.5)
        self.d.signal(signal.SIGTERM)
        t0 = time.time()
        for t in threads:
            t.join()
        locker.stdin.close()
        locker.wait()
        self.assertEqual(self.d.proc.wait(20), 0, self.d.logtext())
        self.assertLess(time.time() - t0, 15)
        self.assertEqual(results, [200] * len(results), results)
        # New connections are refused once it has stopped.
        with self.assertRaises(OSError):
            fire(self.d.port, "GET", "/healthz", timeout=2)

    def test_shutdown_deadline_answers_503(self):
        d = self.spawn(env={"MUSUBI_SHUTDOWN_TIMEOUT": "500ms",
                            "MUSUBI_API_KEY_CACHE_TTL": "0"})
        locker = subprocess.Popen(
            ["psql", "-X", "-q", "-d", self.db.url],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, text=True)
        locker.stdin.write("BEGIN; LOCK TABLE channels IN ACCESS EXCLUSIVE "
                           "MODE; SELECT pg_sleep(4); COMMIT;\n")
        locker.stdin.flush()
        time.sleep(0.3)
        out = []
        t = threading.Thread(target=lambda: out.append(
            fire(d.port, "GET", "/api/v1/channels", key=self.admin)))
        t.start()
        time.sleep(0.3)
        d.signal(signal.SIGTERM)
        t.join(10)
        self.assertEqual(out[0][0], 503, out)
        self.assertIn(b"shutting_down", out[0][1])
        self.assertEqual(d.proc.wait(10), 0)
        locker.stdin.close()
        locker.wait()


class ConnectionLimit(MusubiTestCase):
    env = {"MUSUBI_HTTP_MAX_CONNECTIONS": "5"}

    def test_over_limit_503_and_count_recovers(self):
        socks = []
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", self.d.port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(4096)
            socks.append(s)
        r = self.d.get("/healthz")
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json()["error"]["code"], "too_many_connections")
        for s in socks:
            s.close()
        time.sleep(0.3)
        self.assertEqual(self.d.get("/healthz").status, 200)
        m = self.d.get("/metrics").body.decode()
        line = [ln for ln in m.splitlines()
                if ln.startswith("musubi_http_connections ")][0]
        self.assertEqual(line.split()[1], "1")


if __name__ == "__main__":
    main()
