#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""Sign recorded EC deliveries (and bodies of your own) the way the shop
platforms do: base64 of HMAC-SHA256 over the exact body bytes.

    sign.py SECRET FILE...          print the signature of each body
    sign.py --fix SECRET CASE...    rewrite the signature line of
                                    CASE.headers for the body CASE.json
                                    (or CASE.form)

The recorded samples in webhooks/{shopify,woocommerce,generic} are signed
with the secret "musubi-sample-secret".  The header rewritten is the one
already in the .headers file (X-Shopify-Hmac-Sha256,
X-WC-Webhook-Signature or X-Musubi-Signature)."""
import base64
import hashlib
import hmac
import os
import sys

SIG_HEADERS = ("x-shopify-hmac-sha256", "x-wc-webhook-signature",
               "x-musubi-signature")


def sign(secret, body):
    return base64.b64encode(hmac.new(secret.encode(), body,
                                     hashlib.sha256).digest()).decode()


def body_path(case):
    for ext in (".json", ".form"):
        if os.path.exists(case + ext):
            return case + ext
    raise SystemExit("no body for %s" % case)


def fix(secret, case):
    with open(body_path(case), "rb") as f:
        body = f.read()
    with open(case + ".headers") as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        name = line.split(":", 1)[0].strip().lower()
        if name in SIG_HEADERS:
            line = "%s: %s" % (line.split(":", 1)[0], sign(secret, body))
        out.append(line)
    with open(case + ".headers", "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    args = sys.argv[1:]
    if len(args) >= 3 and args[0] == "--fix":
        for case in args[2:]:
            fix(args[1], case[:-8] if case.endswith(".headers") else case)
        return
    if len(args) < 2:
        raise SystemExit(__doc__)
    for path in args[1:]:
        with open(path, "rb") as f:
            print("%s  %s" % (sign(args[0], f.read()), path))


if __name__ == "__main__":
    main()
