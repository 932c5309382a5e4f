# SPDX-License-Identifier: ISC
"""Shared harness for musubi's integration tests.

Each test gets a scratch database on the PostgreSQL named by
MUSUBI_TEST_DATABASE_URL (scripts/test.sh starts one), runs the real
musubid binary on a free loopback port, and talks to it over real HTTP.
Tests that must stop or restart PostgreSQL start a private cluster with
PgCluster so they never disturb tests running beside them.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

MUSUBID = os.environ.get("MUSUBID", "build/musubid")
MUSUBICTL = os.environ.get("MUSUBICTL", "build/musubictl")
LINE_SANDBOX = os.environ.get("LINE_SANDBOX", "")
SOURCE_DIR = os.environ.get("MUSUBI_SOURCE_DIR", os.getcwd())


def admin_url():
    url = os.environ.get("MUSUBI_TEST_DATABASE_URL")
    if not url:
        raise SystemExit("MUSUBI_TEST_DATABASE_URL is not set: run the "
                         "suite with scripts/test.sh, which starts "
                         "PostgreSQL (integration tests never skip)")
    return url


def conninfo_with(url, **kw):
    """Return url with keyword settings replaced (conninfo form only)."""
    parts = [p for p in url.split() if p.split("=", 1)[0] not in kw]
    parts += ["%s=%s" % (k, v) for k, v in kw.items()]
    return " ".join(parts)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def psql(url, sql, check=True):
    """Run SQL with psql; return stdout rows as lists of strings."""
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", "\t", "-v",
                        "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                       capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError("psql failed: %s\n%s" % (sql, r.stderr))
    return [line.split("\t") for line in r.stdout.splitlines() if line]


class ScratchDB:
    """A database created for one test and dropped after it."""

    def __init__(self, base=None):
        self.base = base or admin_url()
        self.name = "t_" + uuid.uuid4().hex[:12]
        psql(self.base, "CREATE DATABASE %s" % self.name)
        self.url = conninfo_with(self.base, dbname=self.name)

    def sql(self, q):
        return psql(self.url, q)

    def drop(self):
        psql(self.base, "DROP DATABASE IF EXISTS %s WITH (FORCE)" %
             self.name, check=False)


class PgCluster:
    """A private PostgreSQL cluster, for tests that stop or restart it."""

    def __init__(self):
        self.bindir = self._bindir()
        self.dir = tempfile.mkdtemp(prefix="musubi-pgt-")
        self.root = os.geteuid() == 0
        if self.root:
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self._as_owner([os.path.join(self.bindir, "initdb"), "-D",
                        self.data, "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8", "--locale=C"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("port = %d\nlisten_addresses = '127.0.0.1'\n"
                    "unix_socket_directories = '%s'\nfsync = off\n"
                    % (self.port, self.dir))
        self.url = ("host=127.0.0.1 port=%d user=postgres dbname=postgres"
                    % self.port)

    @staticmethod
    def _bindir():
        if os.path.exists("/usr/lib/postgresql/15/bin/pg_ctl"):
            return "/usr/lib/postgresql/15/bin"
        cands = sorted(d for d in os.listdir("/usr/lib/postgresql"))
        return os.path.join("/usr/lib/postgresql", cands[-1], "bin")

    def _as_owner(self, argv):
        if self.root:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        subprocess.run(argv, check=True, cwd="/", stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def start(self):
        self._as_owner([os.path.join(self.bindir, "pg_ctl"), "-D",
                        self.data, "-w", "-l",
                        os.path.join(self.dir, "log"), "start"])

    def stop(self, mode="fast"):
        self._as_owner([os.path.join(self.bindir, "pg_ctl"), "-D",
                        self.data, "-w", "-m", mode, "stop"])

    def destroy(self):
        try:
            self.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:300])


class Musubid:
    """One musubid process on a free port."""

    def __init__(self, db_url, config=None, env=None, port=None):
        self.port = port or free_port()
        self.db_url = db_url
        self.logpath = tempfile.mktemp(prefix="musubid-", suffix=".log")
        self.cfgpath = None
        if config is not None:
            self.cfgpath = tempfile.mktemp(prefix="musubid-",
                                           suffix=".conf")
            with open(self.cfgpath, "w") as f:
                f.write(config)
        self.env = dict(os.environ)
        self.env.update({"MUSUBI_DATABASE_URL": db_url,
                         "MUSUBI_LISTEN": "127.0.0.1:%d" % self.port,
                         "MUSUBI_API_KEY_CACHE_TTL": "0"})
        if env:
            self.env.update(env)
        self.proc = None

    def start(self, wait=True):
        argv = [MUSUBID]
        if self.cfgpath:
            argv += ["-f", self.cfgpath]
        self.log = open(self.logpath, "ab")
        self.proc = subprocess.Popen(argv, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=30, path="/healthz"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("musubid exited with %s:\n%s" %
                                     (self.proc.returncode, self.logtext()))
            try:
                if self.get(path, timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("musubid did not answer %s:\n%s" %
                             (path, self.logtext()))

    def logtext(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def request(self, method, path, body=None, headers=None, key=None,
                timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout)
        h = dict(headers or {})
        if key:
            h["Authorization"] = "Bearer " + key
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("musubid ignored SIGTERM:\n" +
                                     self.logtext())
        self.log.close()
        return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc:
            self.log.close()


def ctl(db_url, *args, check=True):
    r = subprocess.run([MUSUBICTL, "-d", db_url] + list(args),
                       capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError("musubictl %s failed: %s" % (args, r.stderr))
    return r


def apikey(db_url, scope="admin", name="test"):
    return ctl(db_url, "apikey", "create", "--name", name, "--scope",
               scope).stdout.strip()


class MusubiTestCase(unittest.TestCase):
    """A scratch database and one running musubid per test."""

    config = None
    env = None
    start_musubid = True

    def setUp(self):
        self.db = ScratchDB()
        self.addCleanup(self.db.drop)
        self.d = None
        if self.start_musubid:
            self.d = self.spawn()
            self.admin = apikey(self.db.url)

    def spawn(self, **kw):
        d = Musubid(self.db.url, config=kw.pop("config", self.config),
                    env=kw.pop("env", self.env), **kw)
        self.addCleanup(d.kill)
        d.start()
        return d

    def create_channel(self, slug="shop", secret="s3cret-channel",
                       token="tok-" + "x" * 20, **extra):
        body = {"slug": slug, "name": slug.title(),
                "channel_secret": secret, "channel_access_token": token}
        body.update(extra)
        r = self.d.post("/api/v1/channels", body, key=self.admin)
        self.assertEqual(r.status, 201, r)
        return r.json()


def main():
    unittest.main(verbosity=2)


class Sandbox:
    """A line-sandbox process on a free port (LINE API stand-in)."""

    def __init__(self, config=None):
        if not LINE_SANDBOX:
            raise SystemExit("LINE_SANDBOX is not set (ctest sets it)")
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.logpath = tempfile.mktemp(prefix="sandbox-", suffix=".log")
        argv = [LINE_SANDBOX, "-l", "127.0.0.1:%d" % self.port]
        if config is not None:
            self.cfgpath = tempfile.mktemp(prefix="sandbox-",
                                           suffix=".json")
            with open(self.cfgpath, "w") as f:
                json.dump(config, f)
            argv += ["-c", self.cfgpath]
        self.log = open(self.logpath, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if self.call("GET", "/sandbox/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("line-sandbox did not start")

    def call(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout)
        h = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            try:
                return r.status, json.loads(data)
            except ValueError:
                return r.status, data
        finally:
            conn.close()

    def configure(self, **sections):
        st, body = self.call("PUT", "/sandbox/config", sections)
        assert st == 200, body

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def sign(secret, body):
    """x-line-signature (and Shopify-style) base64 HMAC-SHA256."""
    import base64
    import hashlib
    import hmac
    if isinstance(body, str):
        body = body.encode()
    return base64.b64encode(hmac.new(secret.encode(), body,
                                     hashlib.sha256).digest()).decode()


def wait_for(fn, timeout=20, what="condition"):
    """Poll fn() until it returns a true value; return that value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)
