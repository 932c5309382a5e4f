#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""Ask musubid for the personalised /c/ URL of every (link, friend) pair.

Usage: gen_click_urls.py BASE_URL API_KEY SLUG OUTFILE
Reads the channel's links (GET .../links) and friends (from stdin, one LINE
userId a line), calls GET .../links/{id}?friend=U... for each pair over one
keep-alive connection, and writes the URL paths (/c/...) to OUTFILE in
friend-major order, so consecutive requests hit different links.
"""
import http.client
import json
import sys
import urllib.parse


def main():
    base, key, slug, out = sys.argv[1:5]
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    hdr = {"Authorization": "Bearer " + key}

    def get(path):
        conn.request("GET", path, headers=hdr)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit("GET %s: %d %s" % (path, r.status, body[:200]))
        return json.loads(body)

    links = [x["id"] for x in get("/api/v1/channels/%s/links" % slug)
             ["links"]]
    users = [line.strip() for line in sys.stdin if line.strip()]
    n = 0
    with open(out, "w") as f:
        for user in users:
            for lid in links:
                url = get("/api/v1/channels/%s/links/%d?friend=%s" %
                          (slug, lid, user))["url"]
                f.write(urllib.parse.urlsplit(url).path + "\n")
                n += 1
    print("%d click URLs (%d links x %d friends)" % (n, len(links),
                                                     len(users)))


if __name__ == "__main__":
    main()
