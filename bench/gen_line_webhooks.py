#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""Write N signed single-event LINE webhook deliveries, one per line:
"<x-line-signature>\t<body>".  Usage: gen_line_webhooks.py SECRET N OUT"""
import base64
import hashlib
import hmac
import json
import sys
import time


def main():
    secret, n, out = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
    t = int(time.time() * 1000)
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n):
            uid = "U%032x" % (i % 50000)
            ev = {"type": "message", "timestamp": t + i, "mode": "active",
                  "webhookEventId": "01BENCH%019d" % i,
                  "deliveryContext": {"isRedelivery": False},
                  "source": {"type": "user", "userId": uid},
                  "replyToken": "r%d" % i,
                  "message": {"id": str(10**15 + i), "type": "text",
                              "quoteToken": "q", "text":
                              "こんにちは、在庫はありますか？ #%d" % i}}
            body = json.dumps({"destination": "U" + "f" * 32,
                               "events": [ev]}, ensure_ascii=False,
                              separators=(",", ":"))
            sig = base64.b64encode(hmac.new(secret, body.encode(),
                                            hashlib.sha256).digest())
            f.write(sig.decode() + "\t" + body + "\n")


if __name__ == "__main__":
    main()
