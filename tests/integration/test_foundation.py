# SPDX-License-Identifier: ISC
"""The foundation: health, limits, JSON errors, API keys, channels, config."""
import json
import os
import signal
import socket
import subprocess
import time

from musubi_test import (MUSUBID, MusubiTestCase, Musubid, apikey, ctl,
                         main)


class Health(MusubiTestCase):
    def test_healthz(self):
        r = self.d.get("/healthz")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["status"], "ok")
        self.assertTrue(r.header("X-Request-Id"))

    def test_readyz_reports_schema(self):
        r = self.d.get("/readyz")
        self.assertEqual(r.status, 200, r)
        self.assertGreaterEqual(r.json()["schema_version"], 1)

    def test_readyz_503_when_schema_behind(self):
        self.db.sql("INSERT INTO schema_migrations VALUES "
                    "(0, 'x', 'x') ON CONFLICT DO NOTHING")
        v = int(self.db.sql("SELECT max(version) FROM schema_migrations")
                [0][0])
        self.db.sql("DELETE FROM schema_migrations WHERE version = %d" % v)
        r = self.d.get("/readyz")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.json()["error"]["code"], "migrations_pending")

    def test_request_id_taken_from_client(self):
        r = self.d.get("/healthz", headers={"X-Request-Id": "abc-123"})
        self.assertEqual(r.header("X-Request-Id"), "abc-123")
        r = self.d.get("/healthz", headers={"X-Request-Id": "bad id\x01"})
        self.assertNotEqual(r.header("X-Request-Id"), "bad id\x01")
        self.assertIn("rid=abc-123", self.d.logtext())

    def test_metrics(self):
        self.d.get("/healthz")
        self.d.get("/nope")
        r = self.d.get("/metrics")
        self.assertEqual(r.status, 200)
        text = r.body.decode()
        self.assertIn('musubi_http_requests_total{route="/healthz",'
                      'method="GET",code="200"}', text)
        self.assertIn('code="404"', text)
        self.assertIn("musubi_http_request_duration_seconds_bucket", text)
        self.assertIn('musubi_db_connections{state="open"}', text)
        self.assertIn("process_resident_memory_bytes", text)


class Errors(MusubiTestCase):
    config = "http_max_body = 4k\nhttp_timeout = 1s\n"

    def assertError(self, r, status, code):
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.header("Content-Type").startswith(
            "application/json"), r.headers)
        self.assertEqual(r.json()["error"]["code"], code, r)

    def test_unknown_route_404(self):
        self.assertError(self.d.get("/no/such/thing"), 404, "not_found")

    def test_wrong_method_405(self):
        r = self.d.request("DELETE", "/api/v1/channels", key=self.admin)
        self.assertError(r, 405, "method_not_allowed")
        self.assertIn("GET", r.header("Allow"))

    def test_oversized_body_413(self):
        r = self.d.post("/api/v1/channels", "x" * 5000, key=self.admin)
        self.assertError(r, 413, "body_too_large")

    def test_malformed_json_400_says_where(self):
        r = self.d.post("/api/v1/channels", '{"slug": "a",\n "name": }',
                        key=self.admin)
        self.assertError(r, 400, "invalid_json")
        self.assertIn("line 2", r.json()["error"]["message"])

    def test_non_object_json_400(self):
        r = self.d.post("/api/v1/channels", "[1,2]", key=self.admin)
        self.assertError(r, 400, "invalid_json")

    def test_stalled_client_is_timed_out(self):
        s = socket.create_connection(("127.0.0.1", self.d.port))
        s.sendall(b"POST /api/v1/channels HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 100\r\n\r\n{")
        s.settimeout(5)
        t0 = time.time()
        data = s.recv(4096)
        while data and not data.endswith(b"\n") and time.time() - t0 < 5:
            more = s.recv(4096)
            if not more:
                break
            data += more
        self.assertLess(time.time() - t0, 4)
        s.close()
        # musubid is still healthy afterwards.
        self.assertEqual(self.d.get("/healthz").status, 200)


class ApiKeys(MusubiTestCase):
    def test_no_key_401(self):
        r = self.d.get("/api/v1/channels")
        self.assertEqual(r.status, 401)
        self.assertEqual(r.json()["error"]["code"], "unauthorized")
        self.assertEqual(r.header("WWW-Authenticate"), "Bearer")

    def test_wrong_key_401(self):
        r = self.d.get("/api/v1/channels", key="msk_wrong")
        self.assertEqual(r.status, 401)
        r = self.d.get("/api/v1/channels",
                       headers={"Authorization": "Basic Zm9vOmJhcg=="})
        self.assertEqual(r.status, 401)

    def test_channel_key_scope(self):
        self.create_channel("alpha")
        self.create_channel("beta")
        k = apikey(self.db.url, scope="channel:alpha")
        self.assertEqual(self.d.get("/api/v1/channels/alpha",
                                    key=k).status, 200)
        # Another channel, an admin route: 403.
        r = self.d.get("/api/v1/channels/beta", key=k)
        self.assertEqual(r.status, 403, r)
        r = self.d.post("/api/v1/channels", {"slug": "c", "name": "c",
                                             "channel_secret": "x"}, key=k)
        self.assertEqual(r.status, 403, r)
        r = self.d.request("PATCH", "/api/v1/channels/alpha",
                           {"name": "x"}, key=k)
        self.assertEqual(r.status, 403, r)
        # The list shows only its own channel.
        r = self.d.get("/api/v1/channels", key=k)
        self.assertEqual([c["slug"] for c in r.json()["channels"]],
                         ["alpha"])

    def test_revoked_key_401(self):
        k = apikey(self.db.url)
        self.assertEqual(self.d.get("/api/v1/channels", key=k).status, 200)
        prefix = k[:12]
        ctl(self.db.url, "apikey", "revoke", prefix)
        r = self.d.get("/api/v1/channels", key=k)
        self.assertEqual(r.status, 401)

    def test_key_stored_hashed(self):
        k = apikey(self.db.url, name="hashcheck")
        rows = self.db.sql("SELECT encode(key_hash, 'hex'), prefix FROM "
                           "api_keys WHERE name = 'hashcheck'")
        self.assertNotIn(k, str(rows))
        self.assertEqual(len(rows[0][0]), 64)
        listing = ctl(self.db.url, "apikey", "list").stdout
        self.assertIn(k[:12], listing)
        self.assertNotIn(k, listing)

    def test_ctl_rejects_unknown_channel_scope(self):
        r = ctl(self.db.url, "apikey", "create", "--name", "x", "--scope",
                "channel:nope", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no such channel", r.stderr)


class Channels(MusubiTestCase):
    SECRET = "cafebabe-secret-never-shown"
    TOKEN = "token-never-shown-" + "y" * 40

    def test_create_read_update_never_leaks_secrets(self):
        c = self.create_channel("shop", secret=self.SECRET, token=self.TOKEN)
        self.assertEqual(c["timezone"], "Asia/Tokyo")
        self.assertTrue(c["has_channel_secret"])
        self.assertTrue(c["has_access_token"])
        bodies = [self.d.get("/api/v1/channels", key=self.admin).body,
                  self.d.get("/api/v1/channels/shop", key=self.admin).body]
        r = self.d.request("PATCH", "/api/v1/channels/shop",
                           {"name": "Renamed", "timezone": "UTC",
                            "channel_secret": self.SECRET + "2",
                            "bot_user_id": "U" + "a" * 32},
                           key=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["name"], "Renamed")
        self.assertEqual(r.json()["timezone"], "UTC")
        self.assertEqual(r.json()["bot_user_id"], "U" + "a" * 32)
        bodies.append(r.body)
        for b in bodies:
            self.assertNotIn(self.SECRET.encode(), b)
            self.assertNotIn(self.TOKEN.encode(), b)
        log = self.d.logtext()
        self.assertNotIn(self.SECRET, log)
        self.assertNotIn(self.TOKEN, log)
        self.assertEqual(self.db.sql(
            "SELECT channel_secret FROM channels")[0][0], self.SECRET + "2")

    def test_duplicate_slug_409(self):
        self.create_channel("dup")
        r = self.d.post("/api/v1/channels", {"slug": "dup", "name": "d",
                                             "channel_secret": "x"},
                        key=self.admin)
        self.assertEqual(r.status, 409)
        self.assertEqual(r.json()["error"]["path"], "/slug")

    def test_validation_422_with_path(self):
        cases = [
            ({"name": "n", "channel_secret": "x"}, "/slug"),
            ({"slug": "Bad Slug", "name": "n", "channel_secret": "x"},
             "/slug"),
            ({"slug": "ok", "channel_secret": "x"}, "/name"),
            ({"slug": "ok", "name": "n"}, "/channel_secret"),
            ({"slug": "ok", "name": 5, "channel_secret": "x"}, "/name"),
            ({"slug": "ok", "name": "n", "channel_secret": "x",
              "timezone": "Mars/Olympus"}, "/timezone"),
            ({"slug": "ok", "name": "n", "channel_secret": "x",
              "bot_user_id": "U123"}, "/bot_user_id"),
            ({"slug": "ok", "name": "n", "channel_secret": "x",
              "colour": "red"}, "/colour"),
        ]
        for body, path in cases:
            r = self.d.post("/api/v1/channels", body, key=self.admin)
            self.assertEqual(r.status, 422, (body, r))
            self.assertEqual(r.json()["error"]["path"], path, (body, r))
        self.assertEqual(self.db.sql("SELECT count(*) FROM channels"),
                         [["0"]])

    def test_sql_looking_values_are_data(self):
        name = "x'); DROP TABLE channels; --"
        r = self.d.post("/api/v1/channels", {"slug": "inj", "name": name,
                                             "channel_secret": "x"},
                        key=self.admin)
        self.assertEqual(r.status, 201)
        self.assertEqual(r.json()["name"], name)

    def test_unknown_channel_404(self):
        r = self.d.get("/api/v1/channels/nope", key=self.admin)
        self.assertEqual(r.status, 404)
        r = self.d.request("PATCH", "/api/v1/channels/nope", {"name": "x"},
                           key=self.admin)
        self.assertEqual(r.status, 404)

    def test_slug_is_immutable(self):
        self.create_channel("fixed")
        r = self.d.request("PATCH", "/api/v1/channels/fixed",
                           {"slug": "other"}, key=self.admin)
        self.assertEqual(r.status, 422)


class Config(MusubiTestCase):
    start_musubid = False

    def run_check(self, text, env=None):
        d = Musubid(self.db.url, config=text, env=env)
        d.env.pop("MUSUBI_LISTEN", None)
        r = subprocess.run([MUSUBID, "-n", "-f", d.cfgpath], env=d.env,
                           capture_output=True, text=True)
        os.unlink(d.cfgpath)
        return r

    def test_check_ok(self):
        r = self.run_check("# comment\nlog_level = debug\n"
                           "http_timeout = 250ms\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration ok", r.stdout)

    def test_check_errors_name_the_line(self):
        for text, want in [("nope = 1\n", ":1: unknown key: nope"),
                           ("\nhttp_timeout = 5 weeks\n", ":2:"),
                           ("db_pool_size = 0\n", "out of range"),
                           ("listen = nonsense\n", "listen"),
                           ("garbage line\n", "expected key = value")]:
            r = self.run_check(text)
            self.assertEqual(r.returncode, 1, text)
            self.assertIn(want, r.stderr, text)

    def test_env_overrides_file(self):
        r = self.run_check("log_level = info\n",
                           env={"MUSUBI_LOG_LEVEL": "loud"})
        self.assertEqual(r.returncode, 1)
        self.assertIn("MUSUBI_LOG_LEVEL", r.stderr + r.stdout)

    def test_sighup_reload_good_and_bad(self):
        d = Musubid(self.db.url, config="http_max_body = 64k\n")
        self.addCleanup(d.kill)
        d.start()
        key = apikey(self.db.url)
        self.assertEqual(d.post("/api/v1/channels", "x" * 10000,
                                key=key).status, 400)
        with open(d.cfgpath, "w") as f:
            f.write("http_max_body = 4k\ndb_pool_size = 3\n")
        d.signal(signal.SIGHUP)
        self._wait_log(d, "configuration reloaded")
        self.assertIn("db_pool_size cannot change", d.logtext())
        self.assertEqual(d.post("/api/v1/channels", "x" * 10000,
                                key=key).status, 413)
        self.assertEqual(d.get("/healthz").status, 200)
        with open(d.cfgpath, "w") as f:
            f.write("http_max_body = lots\n")
        d.signal(signal.SIGHUP)
        self._wait_log(d, "reload failed")
        self.assertEqual(d.post("/api/v1/channels", "x" * 10000,
                                key=key).status, 413)
        self.assertEqual(d.stop(), 0)

    def _wait_log(self, d, text):
        for _ in range(100):
            if text in d.logtext():
                return
            time.sleep(0.05)
        self.fail("log never said %r:\n%s" % (text, d.logtext()))


if __name__ == "__main__":
    main()
