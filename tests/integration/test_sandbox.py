#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""integration.sandbox -- black-box tests of line-sandbox.

Starts the binary named by $LINE_SANDBOX on a free loopback port, plus a
small webhook receiver (http.server in a thread), and drives both over real
HTTP: sending and recording, LINE's validation errors, retry keys (409 and
x-line-accepted-request-id, retries after injected faults), rate limits,
the monthly quota, profiles, link tokens and the account-link dialog, LINE
Login (authorize -> token -> verify), webhook signing (send-webhook and
POST /sandbox/webhook), stats, per-user counts and reset.  Standard library
only.  Exits non-zero on failure and always stops the sandbox it started;
the sandbox must exit 0 on SIGTERM.
"""

import atexit
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid

SANDBOX = os.environ.get("LINE_SANDBOX")
TOKEN = "sandbox-test-token"
SECRET = "test_secret"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                     r"[0-9a-f]{12}$")
ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
MSG_BAD_TO = ("The property, to, in the request body is invalid "
              "(line: -, column: -)")
MSG_QUOTA = "You have reached your monthly limit."
MSG_NO_AUTH = ("Authorization header required. Must follow the scheme, "
               "'Authorization: Bearer <ACCESS TOKEN>'")
MSG_BAD_TOKEN = ("Authentication failed due to the following reason: "
                 "invalid token. Confirm that the access token in the "
                 "authorization header is valid.")

STATE = {}


def free_port():
    """A port nobody listens on right now."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def uid(n):
    """A well-formed user id derived from n."""
    return "U" + hashlib.md5(str(n).encode()).hexdigest()


def text(t="hello"):
    return {"type": "text", "text": t}


class Receiver(http.server.BaseHTTPRequestHandler):
    """Webhook target: records every POST and answers 200."""

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        with STATE["lock"]:
            STATE["hooks"].append((self.path, dict(self.headers), body))
            STATE["cond"].notify_all()
        reply = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, fmt, *args):
        pass


def wait_hooks(n, timeout=10):
    """Wait until n webhook POSTs arrived; return them."""
    deadline = time.time() + timeout
    with STATE["lock"]:
        while len(STATE["hooks"]) < n and time.time() < deadline:
            STATE["cond"].wait(0.1)
        return list(STATE["hooks"])


def call(method, path, body=None, token=TOKEN, headers=None, raw=None,
         timeout=10, conn=None):
    """One request; returns (status, headers dict (lowercase), parsed body)."""
    h = {}
    if token is not None:
        h["Authorization"] = "Bearer " + token
    if body is not None:
        raw = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    if headers:
        h.update(headers)
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", STATE["port"],
                                          timeout=timeout)
    try:
        conn.request(method, path, body=raw, headers=h)
        r = conn.getresponse()
        data = r.read()
    finally:
        if own:
            conn.close()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = data
    if not path.startswith("/sandbox/"):
        assert UUID_RE.match(hdrs.get("x-line-request-id", "")), \
            "%s %s: no x-line-request-id" % (method, path)
    return r.status, hdrs, parsed


def push(to, messages=None, key=None, token=TOKEN, **extra):
    if messages is None:
        messages = [text()]
    body = {"to": to, "messages": messages}
    body.update(extra)
    h = {"X-Line-Retry-Key": key} if key else None
    return call("POST", "/v2/bot/message/push", body, token=token,
                headers=h)


def multicast(to, messages=None, key=None, token=TOKEN, conn=None):
    if messages is None:
        messages = [text()]
    h = {"X-Line-Retry-Key": key} if key else None
    return call("POST", "/v2/bot/message/multicast",
                {"to": to, "messages": messages}, token=token, headers=h,
                conn=conn)


def control(method, path, body=None):
    return call(method, "/sandbox/" + path, body, token=None)


def configure(**sections):
    """PUT /sandbox/config; sections not given go back to defaults."""
    doc = {"rate_limits": {}, "faults": {}, "quota": {"type": "none"},
           "auto_profiles": True, "tokens": None, "retry_after": 0,
           "webhooks": {TOKEN: {"url": STATE["hook_url"],
                                "secret": SECRET}},
           "login": {"default_secret": "sandbox-login-secret",
                     "default_user": None, "clients": {}}}
    doc.update(sections)
    st, _, body = control("PUT", "config", doc)
    assert st == 200, body
    return body


def delivered(user):
    st, _, body = control("GET", "deliveries?user=" + user)
    assert st == 200, body
    return body


def stats():
    return control("GET", "stats")[2]


def start_sandbox():
    port = free_port()
    STATE["port"] = port
    STATE["tmp"] = tempfile.TemporaryDirectory()
    cfg = os.path.join(STATE["tmp"].name, "sandbox.json")
    with open(cfg, "w") as f:
        json.dump({"seed": 42, "rate_limits": {"default": 2000}}, f)
    STATE["log"] = open(os.path.join(STATE["tmp"].name, "sandbox.log"),
                        "w+")
    STATE["proc"] = subprocess.Popen(
        [SANDBOX, "-l", "127.0.0.1:%d" % port, "-c", cfg],
        stdout=STATE["log"], stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while time.time() < deadline:
        if STATE["proc"].poll() is not None:
            raise RuntimeError("line-sandbox exited early: %s" % dump_log())
        try:
            if control("GET", "health")[0] == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("line-sandbox did not answer: %s" % dump_log())


def dump_log():
    log = STATE.get("log")
    if log is None:
        return ""
    log.flush()
    log.seek(0)
    return log.read()[-4000:]


def stop_sandbox():
    proc = STATE.get("proc")
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    STATE["proc"] = None
    return proc.returncode


def setUpModule():
    if not SANDBOX or not os.access(SANDBOX, os.X_OK):
        raise RuntimeError("LINE_SANDBOX must name the line-sandbox binary")
    STATE["lock"] = threading.Lock()
    STATE["cond"] = threading.Condition(STATE["lock"])
    STATE["hooks"] = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    srv.daemon_threads = True
    STATE["srv"] = srv
    STATE["hook_url"] = "http://127.0.0.1:%d/callback" % \
        srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    atexit.register(stop_sandbox)
    try:
        start_sandbox()
    except BaseException:
        stop_sandbox()
        raise


def tearDownModule():
    rc = stop_sandbox()
    if "srv" in STATE:
        STATE["srv"].shutdown()
        STATE["srv"].server_close()
    if rc != 0:
        sys.stderr.write(dump_log())
        sys.stderr.write("\n")
        raise RuntimeError("line-sandbox exited %s on SIGTERM" % rc)


class SandboxTest(unittest.TestCase):

    def setUp(self):
        configure()
        self.assertEqual(control("POST", "reset")[0], 200)
        with STATE["lock"]:
            STATE["hooks"].clear()

    # --- sending and recording

    def test_push_success_and_recording(self):
        st, h, body = push(uid(1), [text("hi"), text("there")])
        self.assertEqual(st, 200, body)
        self.assertEqual(len(body["sentMessages"]), 2)
        for m in body["sentMessages"]:
            self.assertTrue(m["id"].isdigit())
            self.assertTrue(m["quoteToken"])
        d = delivered(uid(1))
        self.assertEqual(d["count"], 1)
        batch = d["deliveries"][0]
        self.assertEqual(batch["endpoint"], "POST /v2/bot/message/push")
        self.assertEqual(batch["requestId"], h["x-line-request-id"])
        self.assertEqual([m["text"] for m in batch["messages"]],
                         ["hi", "there"])
        # Groups and rooms are valid push targets too.
        self.assertEqual(push("C" + "ab" * 16)[0], 200)
        self.assertEqual(push("R" + "cd" * 16)[0], 200)

    def test_multicast_success_and_counts(self):
        ids = [uid(i) for i in range(3)]
        st, _, body = multicast(ids)
        self.assertEqual((st, body), (200, {}))
        st, _, counts = control("GET", "deliveries/counts")
        self.assertEqual(st, 200)
        self.assertEqual(counts, {i: 1 for i in ids})
        s = stats()
        self.assertEqual(s["delivered"],
                         {"requests": 1, "recipients": 3, "messages": 3})
        self.assertEqual(
            s["requests"]["POST /v2/bot/message/multicast"], {"200": 1})

    def test_reply_uses_webhook_reply_tokens(self):
        ev = {"type": "message", "replyToken": "rt-" + uuid.uuid4().hex,
              "source": {"type": "user", "userId": uid(9)},
              "message": {"id": "1", "type": "text", "text": "hi"}}
        st, _, res = control("POST", "webhook", {"events": [ev]})
        self.assertEqual(st, 200, res)
        body = {"replyToken": ev["replyToken"], "messages": [text("ok")]}
        st, _, res = call("POST", "/v2/bot/message/reply", body)
        self.assertEqual(st, 200, res)
        self.assertEqual(len(res["sentMessages"]), 1)
        self.assertEqual(delivered(uid(9))["count"], 1)
        st, _, res = call("POST", "/v2/bot/message/reply", body)
        self.assertEqual((st, res["message"]), (400, "Invalid reply token"))
        # Reply is free: no quota used.
        st, _, res = call("GET", "/v2/bot/message/quota/consumption")
        self.assertEqual(res, {"totalUsage": 0})

    # --- validation

    def assertDetail(self, resp, prop, msg=None):
        st, _, body = resp
        self.assertEqual(st, 400, body)
        self.assertRegex(body["message"],
                         r"^The request body has \d+ error\(s\)$")
        props = {d["property"]: d["message"] for d in body["details"]}
        self.assertIn(prop, props, body)
        if msg is not None:
            self.assertEqual(props[prop], msg)

    def test_validation_errors(self):
        self.assertDetail(multicast([uid(i) for i in range(501)]), "to",
                          "Size must be between 1 and 500")
        self.assertDetail(push(uid(1), [text()] * 6), "messages",
                          "Size must be between 1 and 5")
        self.assertDetail(push(uid(1), []), "messages")
        self.assertDetail(push(uid(1), [text("a" * 5001)]),
                          "messages[0].text",
                          "Length must be between 0 and 5000")
        self.assertEqual(push(uid(1), [text("a" * 5000)])[0], 200)
        emoji = "\U0001F600" * 2500          # 2,500 surrogate pairs
        self.assertEqual(push(uid(1), [text(emoji)])[0], 200)
        self.assertDetail(push(uid(1), [text(emoji + "a")]),
                          "messages[0].text")
        self.assertDetail(push(uid(1), [text("")]), "messages[0].text",
                          "May not be empty")
        self.assertDetail(push(uid(1), [{"type": "text"}]),
                          "messages[0].text", "May not be empty")
        self.assertDetail(push(uid(1), [text(), {"type": "bogus"}]),
                          "messages[1].type")
        flex = {"type": "flex", "altText": "x" * 401,
                "contents": {"type": "bubble"}}
        self.assertDetail(push(uid(1), [flex]), "messages[0].altText")
        flex["altText"] = "x" * 400
        self.assertEqual(push(uid(1), [flex])[0], 200)
        qr = text()
        qr["quickReply"] = {"items": [{"type": "action", "action": {
            "type": "message", "label": "a", "text": "a"}}] * 14}
        self.assertDetail(push(uid(1), [qr]), "messages[0].quickReply.items")
        self.assertDetail(push(uid(1), customAggregationUnits=["a", "b"]),
                          "customAggregationUnits")
        self.assertDetail(push(uid(1), customAggregationUnits=["bad-name"]),
                          "customAggregationUnits[0]")
        self.assertEqual(push(uid(1), customAggregationUnits=["promo_1"])[0],
                         200)
        # Malformed ids.
        for bad in ("Uabc", "U" + "A" * 32, "X" + "a" * 32, 12):
            st, _, body = push(bad)
            self.assertEqual((st, body["message"]), (400, MSG_BAD_TO))
        before = stats()["delivered"]["recipients"]
        st, _, body = multicast([uid(1), "U123", uid(2)])
        self.assertEqual((st, body["message"]), (400, (
            "The property, to[1], in the request body is invalid "
            "(line: -, column: -)")))
        self.assertEqual(stats()["delivered"]["recipients"], before)
        # Not JSON, too large.
        st, _, body = call("POST", "/v2/bot/message/push", raw=b"{nope",
                           headers={"Content-Type": "application/json"})
        self.assertEqual(st, 400)
        self.assertTrue(body["message"].startswith(
            "The request body could not be parsed as JSON ("), body)
        big = json.dumps({"to": uid(1), "messages": [text()],
                          "pad": "x" * (2 * 1024 * 1024)}).encode()
        self.assertEqual(call("POST", "/v2/bot/message/push", raw=big)[0],
                         413)

    def test_authentication(self):
        st, _, body = call("POST", "/v2/bot/message/push",
                           {"to": uid(1), "messages": [text()]}, token=None)
        self.assertEqual((st, body["message"]), (401, MSG_NO_AUTH))
        configure(tokens=[TOKEN])
        st, _, body = push(uid(1), token="someone-else")
        self.assertEqual((st, body["message"]), (401, MSG_BAD_TOKEN))
        self.assertEqual(push(uid(1))[0], 200)

    # --- retry keys

    def test_retry_key_rules(self):
        st, _, body = push(uid(1), key="not-a-uuid")
        self.assertEqual(st, 400, body)
        st, _, body = push(uid(1), key="123e4567e89b12d3a456426614174000")
        self.assertEqual(st, 400, body)
        self.assertEqual(push(uid(1), key=str(uuid.uuid4()).upper())[0], 200)
        st, _, body = call("GET", "/v2/bot/profile/" + uid(1),
                           headers={"X-Line-Retry-Key": str(uuid.uuid4())})
        self.assertEqual(st, 400, body)
        st, _, body = call("POST", "/v2/bot/message/reply",
                           {"replyToken": "x", "messages": [text()]},
                           headers={"X-Line-Retry-Key": str(uuid.uuid4())})
        self.assertEqual(st, 400, body)

    def test_retry_key_conflict(self):
        key = str(uuid.uuid4())
        st1, h1, b1 = push(uid(1), [text("a"), text("b")], key=key)
        self.assertEqual(st1, 200)
        st2, h2, b2 = push(uid(1), [text("a"), text("b")], key=key)
        self.assertEqual(st2, 409, b2)
        self.assertEqual(b2["message"], "The retry key is already accepted")
        self.assertEqual(h2["x-line-accepted-request-id"],
                         h1["x-line-request-id"])
        self.assertNotEqual(h2["x-line-request-id"], h1["x-line-request-id"])
        self.assertEqual(b2["sentMessages"], b1["sentMessages"])
        self.assertEqual(delivered(uid(1))["count"], 1)
        # Multicast: 409 without sentMessages; keys are per channel.
        mkey = str(uuid.uuid4())
        _, h3, _ = multicast([uid(2)], key=mkey)
        st, h4, b4 = multicast([uid(2)], key=mkey.upper())
        self.assertEqual(st, 409)
        self.assertNotIn("sentMessages", b4)
        self.assertEqual(h4["x-line-accepted-request-id"],
                         h3["x-line-request-id"])
        self.assertEqual(multicast([uid(2)], key=mkey, token="other")[0], 200)

    def test_retry_after_rejected_attempts(self):
        key = str(uuid.uuid4())
        self.assertEqual(push(uid(1), [text("")], key=key)[0], 400)
        configure(quota={"type": "limited", "value": 0})
        self.assertEqual(push(uid(1), key=key)[0], 429)
        configure()
        self.assertEqual(push(uid(1), key=key)[0], 200)
        self.assertEqual(push(uid(1), key=key)[0], 409)

    def test_retry_after_injected_before_500(self):
        configure(faults={"POST /v2/bot/message/push": {
            "rate": 1, "statuses": [500], "mode": "before", "count": 1}})
        key = str(uuid.uuid4())
        st, _, body = push(uid(3), key=key)
        self.assertEqual(st, 500, body)
        self.assertEqual(delivered(uid(3))["count"], 0)
        st, _, body = push(uid(3), key=key)
        self.assertEqual(st, 200, body)
        self.assertEqual(push(uid(3), key=key)[0], 409)
        self.assertEqual(delivered(uid(3))["count"], 1)
        self.assertEqual(stats()["faults_injected"], 1)

    def test_retry_after_injected_after_500(self):
        configure(faults={"POST /v2/bot/message/multicast": {
            "rate": 1, "statuses": [500], "mode": "after", "count": 1}})
        key = str(uuid.uuid4())
        st, h1, body = multicast([uid(4), uid(5)], key=key)
        self.assertEqual(st, 500, body)
        self.assertEqual(delivered(uid(4))["count"], 1)
        st, h2, body = multicast([uid(4), uid(5)], key=key)
        self.assertEqual(st, 409, body)
        self.assertEqual(h2["x-line-accepted-request-id"],
                         h1["x-line-request-id"])
        self.assertEqual(delivered(uid(4))["count"], 1)
        self.assertEqual(stats()["users"]["duplicates"], 0)

    def test_injected_timeout_and_latency(self):
        configure(faults={"POST /v2/bot/message/push": {
            "timeout_rate": 1, "count": 1}})
        with self.assertRaises(OSError):
            call("POST", "/v2/bot/message/push",
                 {"to": uid(6), "messages": [text()]}, timeout=1,
                 headers={"X-Line-Retry-Key": str(uuid.uuid4())})
        # The client gave up; the sandbox lets go of the request.
        deadline = time.time() + 5
        while stats()["held"] != 0 and time.time() < deadline:
            time.sleep(0.05)
        s = stats()
        self.assertEqual(s["held"], 0)
        self.assertEqual(
            s["requests"]["POST /v2/bot/message/push"]["timeout"], 1)
        self.assertEqual(delivered(uid(6))["count"], 0)
        configure(faults={"global": {"latency_ms": 300}})
        t0 = time.time()
        self.assertEqual(push(uid(6))[0], 200)
        self.assertGreaterEqual(time.time() - t0, 0.28)

    def test_injected_statuses_are_seeded(self):
        configure(seed=7, faults={"POST /v2/bot/message/push": {
            "rate": 0.5, "statuses": [429, 502, 503]}})
        first = [push(uid(i))[0] for i in range(40)]
        configure(seed=8)
        configure(seed=7, faults={"POST /v2/bot/message/push": {
            "rate": 0.5, "statuses": [429, 502, 503]}})
        second = [push(uid(i))[0] for i in range(40)]
        self.assertEqual(first, second)
        self.assertTrue(set(first) <= {200, 429, 502, 503})
        self.assertIn(200, first)
        self.assertTrue(set(first) - {200})

    # --- rate limits and quota

    def test_rate_limit(self):
        configure(rate_limits={"POST /v2/bot/message/multicast": 20})
        conn = http.client.HTTPConnection("127.0.0.1", STATE["port"],
                                          timeout=10)
        codes = []
        t0 = time.time()
        for i in range(60):
            st, h, body = multicast([uid(i)], conn=conn)
            codes.append(st)
            if st == 429:
                self.assertEqual(body, {"message": "Too many requests"})
                self.assertNotIn("retry-after", h)
        elapsed = time.time() - t0
        conn.close()
        ok = codes.count(200)
        self.assertEqual(ok + codes.count(429), 60)
        self.assertGreaterEqual(ok, 20)
        self.assertLessEqual(ok, 21 + int(elapsed * 20) + 1, elapsed)
        # Other endpoints and channels have their own buckets.
        self.assertEqual(push(uid(1))[0], 200)
        self.assertEqual(multicast([uid(1)], token="other-channel")[0], 200)

    def test_quota(self):
        configure(quota={"type": "limited", "value": 5})
        st, _, body = call("GET", "/v2/bot/message/quota")
        self.assertEqual((st, body), (200, {"type": "limited", "value": 5}))
        self.assertEqual(multicast([uid(1), uid(2), uid(3)])[0], 200)
        st, _, body = multicast([uid(4), uid(5), uid(6)])
        self.assertEqual((st, body), (429, {"message": MSG_QUOTA}))
        self.assertEqual(delivered(uid(4))["count"], 0)
        st, _, body = call("GET", "/v2/bot/message/quota/consumption")
        self.assertEqual((st, body), (200, {"totalUsage": 3}))
        self.assertEqual(push(uid(1), [text()] * 5)[0], 200)
        self.assertEqual(push(uid(2))[0], 200)
        st, _, body = push(uid(3))
        self.assertEqual((st, body), (429, {"message": MSG_QUOTA}))
        self.assertEqual(call("GET", "/v2/bot/message/quota/consumption")[2],
                         {"totalUsage": 5})
        configure()
        self.assertEqual(call("GET", "/v2/bot/message/quota")[2],
                         {"type": "none"})

    # --- users

    def test_profile(self):
        users = [{"userId": uid(10), "displayName": "Taro",
                  "language": "ja", "pictureUrl": "https://example.com/p",
                  "statusMessage": "hi"},
                 {"userId": uid(11), "displayName": "Blocked",
                  "blocked": True},
                 {"userId": uid(12), "friend": False}]
        st, _, body = control("POST", "users", {"users": users})
        self.assertEqual((st, body), (200, {"registered": 3}))
        st, _, body = call("GET", "/v2/bot/profile/" + uid(10))
        self.assertEqual(st, 200)
        self.assertEqual(body, {"displayName": "Taro", "userId": uid(10),
                                "language": "ja",
                                "pictureUrl": "https://example.com/p",
                                "statusMessage": "hi"})
        for u in (uid(11), uid(12)):
            st, _, body = call("GET", "/v2/bot/profile/" + u)
            self.assertEqual((st, body), (404, {"message": "Not found"}))
        st, _, body = call("GET", "/v2/bot/profile/" + uid(13))
        self.assertEqual(st, 200)
        self.assertEqual(body["userId"], uid(13))
        self.assertTrue(body["displayName"])
        self.assertEqual(call("GET", "/v2/bot/profile/U123")[0], 400)
        configure(auto_profiles=False)
        self.assertEqual(call("GET", "/v2/bot/profile/" + uid(13))[0], 404)
        self.assertEqual(call("GET", "/v2/bot/profile/" + uid(10))[0], 200)
        # Blocked users and non-friends get 200 and nothing delivered.
        self.assertEqual(multicast([uid(10), uid(11), uid(13)])[0], 200)
        s = stats()
        self.assertEqual(s["delivered"]["recipients"], 1)
        self.assertEqual(s["undelivered"]["recipients"], 2)

    def test_link_token_and_account_link(self):
        st, _, body = call("POST",
                           "/v2/bot/user/%s/linkToken" % uid(20))
        self.assertEqual(st, 200, body)
        tok = body["linkToken"]
        self.assertEqual(len(tok), 32)
        self.assertEqual(call("POST", "/v2/bot/user/Ubad/linkToken")[0], 400)
        nonce = base64.b64encode(os.urandom(16)).decode()
        q = urllib.parse.urlencode({"linkToken": tok, "nonce": nonce})
        st, _, body = call("GET", "/dialog/bot/accountLink?" + q, token=None)
        self.assertEqual((st, body["result"]), (200, "ok"))
        path, headers, raw = wait_hooks(1)[0]
        self.check_signature(headers, raw)
        ev = json.loads(raw)["events"][0]
        self.assertEqual(ev["type"], "accountLink")
        self.assertEqual(ev["link"], {"result": "ok", "nonce": nonce})
        self.assertEqual(ev["source"]["userId"], uid(20))
        st, _, body = call("GET", "/dialog/bot/accountLink?" + q, token=None)
        self.assertEqual(st, 400, body)

    # --- LINE Login

    def authorize(self, **params):
        q = {"response_type": "code", "client_id": "1234567890",
             "redirect_uri": "http://127.0.0.1:9/cb", "state": "st ate",
             "scope": "profile openid", "nonce": "n-0123456789"}
        q.update(params)
        st, h, body = call("GET", "/oauth2/v2.1/authorize?" +
                           urllib.parse.urlencode(q), token=None)
        self.assertEqual(st, 302, body)
        loc = urllib.parse.urlsplit(h["location"])
        self.assertEqual(loc.path, "/cb")
        return dict(urllib.parse.parse_qsl(loc.query))

    def form(self, path, fields):
        return call("POST", path, token=None,
                    raw=urllib.parse.urlencode(fields).encode(),
                    headers={"Content-Type":
                             "application/x-www-form-urlencoded"})

    def test_login_flow(self):
        user = uid(30)
        control("POST", "users", {"users": [{"userId": user,
                                             "displayName": "Hanako",
                                             "friend": False}]})
        verifier = base64.urlsafe_b64encode(os.urandom(40)).decode().rstrip(
            "=")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(
            verifier.encode()).digest()).decode().rstrip("=")
        cb = self.authorize(sandbox_user=user, bot_prompt="aggressive",
                            code_challenge=challenge,
                            code_challenge_method="S256")
        self.assertEqual(cb["state"], "st ate")
        self.assertEqual(cb["friendship_status_changed"], "true")
        follow = json.loads(wait_hooks(1)[0][2])["events"][0]
        self.check_signature(wait_hooks(1)[0][1], wait_hooks(1)[0][2])
        self.assertEqual(follow["type"], "follow")
        self.assertEqual(follow["source"]["userId"], user)
        self.assertEqual(call("GET", "/v2/bot/profile/" + user)[0], 200)
        fields = {"grant_type": "authorization_code", "code": cb["code"],
                  "redirect_uri": "http://127.0.0.1:9/cb",
                  "client_id": "1234567890",
                  "client_secret": "sandbox-login-secret",
                  "code_verifier": verifier}
        st, _, tok = self.form("/oauth2/v2.1/token", fields)
        self.assertEqual(st, 200, tok)
        self.assertEqual(tok["token_type"], "Bearer")
        self.assertEqual(tok["scope"], "profile openid")
        for k in ("access_token", "refresh_token", "id_token", "expires_in"):
            self.assertIn(k, tok)
        # The ID token is HS256 over the login channel secret.
        h64, p64, s64 = tok["id_token"].split(".")
        mac = hmac.new(b"sandbox-login-secret", (h64 + "." + p64).encode(),
                       hashlib.sha256).digest()
        self.assertEqual(base64.urlsafe_b64encode(mac).decode().rstrip("="),
                         s64)
        st, _, body = self.form("/oauth2/v2.1/token", fields)
        self.assertEqual((st, body["error"]), (400, "invalid_grant"))
        st, _, pl = self.form("/oauth2/v2.1/verify", {
            "id_token": tok["id_token"], "client_id": "1234567890",
            "nonce": "n-0123456789"})
        self.assertEqual(st, 200, pl)
        self.assertEqual((pl["iss"], pl["sub"], pl["aud"], pl["amr"],
                          pl["name"], pl["nonce"]),
                         ("https://access.line.me", user, "1234567890",
                          ["linesso"], "Hanako", "n-0123456789"))
        self.assertGreater(pl["exp"], pl["iat"])
        st, _, body = self.form("/oauth2/v2.1/verify", {
            "id_token": tok["id_token"], "client_id": "1234567890",
            "nonce": "wrong"})
        self.assertEqual((st, body), (400, {
            "error": "invalid_request",
            "error_description": "Invalid IdToken Nonce."}))
        st, _, body = self.form("/oauth2/v2.1/verify", {
            "id_token": tok["id_token"], "client_id": "999"})
        self.assertEqual(body["error_description"],
                         "Invalid IdToken Audience.")
        st, _, body = self.form("/oauth2/v2.1/verify", {
            "id_token": tok["id_token"][:-2] + "xx",
            "client_id": "1234567890"})
        self.assertEqual(body["error_description"], "Invalid IdToken.")
        st, _, prof = call("GET", "/v2/profile", token=tok["access_token"])
        self.assertEqual((st, prof["userId"]), (200, user))
        st, _, fr = call("GET", "/friendship/v1/status",
                         token=tok["access_token"])
        self.assertEqual(fr, {"friendFlag": True})
        # Already a friend now: no change, no second follow event.
        cb = self.authorize(sandbox_user=user, bot_prompt="normal")
        self.assertEqual(cb["friendship_status_changed"], "false")

    def test_login_rejects_bad_exchanges(self):
        verifier = "v" * 43
        challenge = base64.urlsafe_b64encode(hashlib.sha256(
            verifier.encode()).digest()).decode().rstrip("=")
        cb = self.authorize(code_challenge=challenge,
                            code_challenge_method="S256")
        self.assertNotIn("friendship_status_changed", cb)
        base = {"grant_type": "authorization_code", "code": cb["code"],
                "redirect_uri": "http://127.0.0.1:9/cb",
                "client_id": "1234567890",
                "client_secret": "sandbox-login-secret",
                "code_verifier": "w" * 43}
        st, _, body = self.form("/oauth2/v2.1/token", base)
        self.assertEqual((st, body["error"]), (400, "invalid_grant"))
        cb = self.authorize()
        base.update(code=cb["code"], redirect_uri="http://127.0.0.1:9/x")
        st, _, body = self.form("/oauth2/v2.1/token", base)
        self.assertEqual((st, body["error"]), (400, "invalid_grant"))
        st, _, body = self.form("/oauth2/v2.1/token", {
            "grant_type": "authorization_code", "code": "nope",
            "redirect_uri": "http://127.0.0.1:9/cb",
            "client_id": "1234567890", "client_secret": "wrong"})
        self.assertEqual((st, body["error"]), (400, "invalid_client"))

    # --- webhooks

    def check_signature(self, headers, raw):
        sig = {k.lower(): v for k, v in headers.items()}["x-line-signature"]
        want = base64.b64encode(hmac.new(SECRET.encode(), raw,
                                          hashlib.sha256).digest()).decode()
        self.assertTrue(hmac.compare_digest(sig, want), (sig, want))

    def run_send_webhook(self, content, *args):
        path = os.path.join(STATE["tmp"].name, "events.json")
        with open(path, "wb") as f:
            f.write(content)
        return subprocess.run(
            [SANDBOX, "send-webhook", "--url", STATE["hook_url"],
             "--secret", SECRET] + list(args) + [path],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)

    def test_send_webhook_command(self):
        # The known vector from line-bot-sdk-nodejs.
        r = self.run_send_webhook(b'{"hello":"world"}')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith(b"HTTP 200"), r.stdout)
        _, headers, raw = wait_hooks(1)[0]
        self.assertEqual(raw, b'{"hello":"world"}')
        sig = {k.lower(): v for k, v in headers.items()}["x-line-signature"]
        self.assertEqual(sig, "t7Hn4ZDHqs6e+wdvI5TyQIvzie0DmMUmuXEBqyyE/tM=")
        # An events array is wrapped and completed.
        events = [{"type": "follow", "source": {"type": "user",
                                                "userId": uid(40)},
                   "replyToken": "r1", "follow": {"isUnblocked": False}}]
        dest = "U" + "f" * 32
        r = self.run_send_webhook(json.dumps(events).encode(),
                                  "--destination", dest)
        self.assertEqual(r.returncode, 0, r.stderr)
        _, headers, raw = wait_hooks(2)[1]
        self.check_signature(headers, raw)
        body = json.loads(raw)
        self.assertEqual(body["destination"], dest)
        ev = body["events"][0]
        self.assertRegex(ev["webhookEventId"], ULID_RE)
        self.assertEqual(ev["deliveryContext"], {"isRedelivery": False})
        self.assertEqual(ev["mode"], "active")
        self.assertIsInstance(ev["timestamp"], int)
        # Nobody listening: non-zero exit.
        path = os.path.join(STATE["tmp"].name, "e.json")
        with open(path, "w") as f:
            f.write("[]")
        r = subprocess.run([SANDBOX, "send-webhook", "--url",
                            "http://127.0.0.1:%d/" % free_port(),
                            "--secret", SECRET, path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        self.assertNotEqual(r.returncode, 0)

    def test_control_webhook(self):
        events = [{"type": "message", "replyToken": "abc",
                   "source": {"type": "user", "userId": uid(41)},
                   "message": {"id": "1", "type": "text", "text": "yo"}},
                  {"type": "unfollow", "timestamp": 1700000000000,
                   "source": {"type": "user", "userId": uid(42)}}]
        st, _, res = control("POST", "webhook", {
            "url": STATE["hook_url"], "secret": SECRET, "events": events})
        self.assertEqual(st, 200, res)
        self.assertEqual(res["status"], 200)
        self.assertEqual(json.loads(res["body"]), {"ok": True})
        path, headers, raw = wait_hooks(1)[0]
        self.assertEqual(path, "/callback")
        self.check_signature(headers, raw)
        self.assertEqual(raw.decode(), res["payload"])
        body = json.loads(raw)
        self.assertRegex(body["destination"], r"^U[0-9a-f]{32}$")
        ids = [e["webhookEventId"] for e in body["events"]]
        for i in ids:
            self.assertRegex(i, ULID_RE)
        self.assertNotEqual(ids[0], ids[1])
        self.assertEqual(body["events"][1]["timestamp"], 1700000000000)
        # By channel token, using the configured target.
        st, _, res = control("POST", "webhook", {"token": TOKEN,
                                                 "events": []})
        self.assertEqual((st, res["status"]), (200, 200))
        self.check_signature(*wait_hooks(2)[1][1:])
        # Unreachable target.
        st, _, res = control("POST", "webhook", {
            "url": "http://127.0.0.1:%d/" % free_port(), "secret": "s",
            "events": []})
        self.assertEqual((st, res["status"]), (502, 0))

    # --- stats, counts, reset, config

    def test_stats_counts_and_reset(self):
        ids = [uid(i) for i in range(5000)]
        for i in range(0, 5000, 500):
            self.assertEqual(multicast(ids[i:i + 500], [text("camp")])[0],
                             200)
        multicast(ids[:10], [text("camp")])          # a duplicate send
        multicast(ids[:5], [text("other")])          # not a duplicate
        s = stats()
        self.assertEqual(s["users"]["count"], 5000)
        self.assertEqual(s["users"]["max_per_user"], 3)
        self.assertEqual(s["users"]["duplicates"], 10)
        self.assertEqual(s["delivered"]["recipients"], 5015)
        self.assertEqual(s["channels"][TOKEN]["totalUsage"], 5015)
        st, h, counts = control("GET", "deliveries/counts")
        self.assertEqual(st, 200)
        self.assertEqual(len(counts), 5000)
        self.assertEqual(counts[ids[0]], 3)
        self.assertEqual(counts[ids[7]], 2)
        self.assertEqual(counts[ids[4999]], 1)
        st, _, recent = control("GET", "deliveries?limit=2")
        self.assertEqual(len(recent["deliveries"]), 2)
        self.assertEqual(recent["deliveries"][1]["to"], ids[:5])
        self.assertEqual(control("POST", "reset")[0], 200)
        s = stats()
        self.assertEqual(s["users"]["count"], 0)
        self.assertEqual(s["requests"], {})
        self.assertEqual(control("GET", "deliveries/counts")[2], {})

    def test_config_api(self):
        st, _, cfg = control("GET", "config")
        self.assertEqual(st, 200)
        self.assertEqual(cfg["quota"], {"type": "none"})
        st, _, body = control("PUT", "config", {"quota": {"type": "lots"}})
        self.assertEqual(st, 400, body)
        st, _, body = control("PUT", "config", {"no_such_key": 1})
        self.assertEqual(st, 400, body)
        self.assertEqual(control("GET", "config")[2], cfg)
        st, _, body = control("PUT", "config", {
            "rate_limits": {"POST /v2/bot/message/push": 5}})
        self.assertEqual(st, 200)
        self.assertEqual(body["rate_limits"]["POST /v2/bot/message/push"], 5)
        self.assertEqual(body["quota"], {"type": "none"})


if __name__ == "__main__":
    prog = unittest.main(exit=False, verbosity=2)
    ok = prog.result.wasSuccessful()
    sys.exit(0 if ok else 1)
