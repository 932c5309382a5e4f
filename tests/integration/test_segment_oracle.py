# SPDX-License-Identifier: ISC
"""Segment correctness oracle: random data, random rules, two evaluators.

A seeded generator writes friends, tags, tracked links, clicks, page views,
interactions, acquisition sources, shops, customers, friend-customer
links, orders with items and refunds into PostgreSQL for one channel, plus a second channel of
noise.  Clicks and page views go through musubi_record_clicks() and
musubi_record_page_views(), and orders through musubi_ec_ledger() and
musubi_ec_rfm(), so the rollups (friend_engagement, friend_stats) are the
ones production keeps.  The same rows are read back into Python.

Then N_RULES random rules (every condition musubi evaluates, nested
all/any/not, windows, products, shops, prefixes with LIKE wildcards, names
that look like SQL) are evaluated twice: by the plain reference evaluator
below, which reads only raw rows (never a rollup), and by musubid over HTTP.
For each rule, the preview count and sample, the saved segment's count,
its members page by page (row mode) and a snapshot's count and members
(set mode) must all equal the reference.

The seed is fixed (MUSUBI_ORACLE_SEED overrides it) and printed with every
mismatch, with the rule, so a failure can be replayed.
"""
import datetime as dt
import json
import os
import random
import subprocess
import time
import urllib.parse
from decimal import Decimal, ROUND_HALF_UP

from musubi_test import MusubiTestCase, main, psql

SEED = int(os.environ.get("MUSUBI_ORACLE_SEED", "20261122"))
N_RULES = int(os.environ.get("MUSUBI_ORACLE_RULES", "600"))
N_FRIENDS = 300
TOKYO = dt.timezone(dt.timedelta(hours=9))
UTC = dt.timezone.utc
DAY = dt.timedelta(days=1)

TAGS = ["VIP", "sale", "初回", "x'); DROP TABLE friends;--", "a,b",
        "リピーター"]
LANGS = ["ja", "en", "th", None]
STATUSES = ["following", "blocked", "unknown"]
URLS = ["https://shop.example/products/tea-1",
        "https://shop.example/products/tea_2",
        "https://shop.example/products/tea%3",
        "https://shop.example/products/sencha",
        "https://shop.example/cart",
        "https://shop.example/blog/spring",
        "http://other.example/products/tea-1"]
PREFIXES = ["https://shop.example/", "https://shop.example/products/",
            "https://shop.example/products/tea", "https://shop.example/"
            "products/tea_", "https://shop.example/products/tea%",
            "https://shop.example/products/tea-", "https://shop.example/c",
            "http://", "%", "_", "https://nowhere.example/"]
POSTBACKS = ["coupon=spring", "coupon=summer", "survey:1", "survey:2",
             "100%_off", "1000_off"]
PB_PREFIXES = ["coupon=", "survey:", "100%", "100", "1000_", "_", "%",
               "coupon=spring", "none"]
ITYPES = ["message", "postback", "follow", "beacon"]
PRODUCTS = ["P1", "P2", "P3", "P4", "P5", "P6"]
SKUS = ["SKU-1", "SKU-2", "SKU-3", "SKU-4"]
VENDORS = ["Acme", "茶舗", "Kyoto Tea"]
TITLES = ["Sencha 100g", "煎茶 100g", "Matcha 茶碗", "Gift box",
          "sencha refill"]
TITLE_NEEDLES = ["Sencha", "sencha", "茶", "100g", "box", "%", "refill"]
SHOPS = ["main", "sub", "noise-main", "nope"]
SOURCES = [("cpf-spring", "cpf_ad"), ("cpf-autumn", "cpf_ad"),
           ("qr-store", "qr"), ("web-top", "web")]
KINDS = ["cpf_ad", "qr", "web", "store"]


def q(s):
    """A SQL literal for s (test data only; the API gets JSON)."""
    if s is None:
        return "NULL"
    return "'" + str(s).replace("'", "''") + "'"


def ts_sql(t):
    return "NULL" if t is None else q(t.isoformat())


def run_sql(url, sql):
    r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                        url, "-f", "-"], input=sql, capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise AssertionError("psql: %s" % r.stderr[-3000:])


class World:
    """The generated data, as the reference evaluator sees it."""

    def __init__(self, rnd, now):
        self.rnd = rnd
        self.now = now

    def ago(self, max_days):
        """A time about d + 0.5 days ago: never near a day boundary."""
        d = self.rnd.randint(0, max_days)
        return self.now - (d + 0.5 + self.rnd.uniform(-0.3, 0.3)) * DAY


def generate(url, rnd, now):
    """Write the random data set; returns the channel ids."""
    w = World(rnd, now)
    out = []
    chans = psql(url, "SELECT slug, id FROM channels")
    ch = {s: int(i) for s, i in chans}
    for slug, nfriends in (("shop", N_FRIENDS), ("noise", 60)):
        c = ch[slug]
        rows = []
        for i in range(nfriends):
            status = rnd.choices(STATUSES, [6, 3, 1])[0]
            followed = None if status == "unknown" else w.ago(420)
            first = followed
            if followed is not None and rnd.random() < 0.3:
                first = followed - rnd.randint(1, 300) * DAY
            rows.append("(%d, %s, %s, %s, %s, %s, %s)" % (
                c, q("U%032x" % rnd.getrandbits(128)), q(status),
                ts_sql(followed), ts_sql(first),
                q(rnd.choice(LANGS)), q("%s friend %d" % (slug, i))))
        out.append("INSERT INTO friends (channel_id, user_id, status, "
                   "followed_at, first_followed_at, language, "
                   "display_name) VALUES %s;" % ",".join(rows))
        out.append("INSERT INTO tags (channel_id, name) VALUES %s;" %
                   ",".join("(%d, %s)" % (c, q(t)) for t in TAGS))
        out.append("INSERT INTO links (channel_id, name, destination, "
                   "campaign_id) VALUES %s;" % ",".join(
                       "(%d, 'l%d', 'https://shop.example/%d', %s)" %
                       (c, i, i, {0: 101, 1: 101, 2: 102}.get(i, "NULL"))
                       for i in range(6)))
        out.append("INSERT INTO shops (channel_id, slug, name, platform, "
                   "webhook_secret) VALUES (%d, %s, 'Main', 'generic', "
                   "'s'), (%d, %s, 'Sub', 'generic', 's');" % (
                       c, q("main" if slug == "shop" else "noise-main"),
                       c, q("sub" if slug == "shop" else "noise-sub")))
    run_sql(url, "\n".join(out))

    for slug in ("shop", "noise"):
        c = ch[slug]
        fids = [int(r[0]) for r in psql(url, "SELECT id FROM friends "
                                        "WHERE channel_id = %d" % c)]
        links = [int(r[0]) for r in psql(url, "SELECT id FROM links "
                                         "WHERE channel_id = %d" % c)]
        tags = [int(r[0]) for r in psql(url, "SELECT id FROM tags "
                                        "WHERE channel_id = %d" % c)]
        shops = [int(r[0]) for r in psql(url, "SELECT id FROM shops "
                                         "WHERE channel_id = %d" % c)]
        out = []
        ft = ["(%d, %d, %d)" % (c, f, t) for f in fids for t in tags
              if rnd.random() < 0.25]
        out.append("INSERT INTO friend_tags (channel_id, friend_id, "
                   "tag_id) VALUES %s;" % ",".join(ft))

        def maybe_friend():
            return rnd.choice(fids) if rnd.random() < 0.9 else 0

        clicks = [{"c": c, "l": rnd.choice(links), "f": maybe_friend(),
                   "t": int(w.ago(200).timestamp() * 1000)}
                  for _ in range(len(fids) * 6)]
        out.append("SELECT musubi_record_clicks(%s::jsonb);" %
                   q(json.dumps(clicks)))
        views = [{"c": c, "f": maybe_friend(), "l": 0, "r": 0,
                  "u": rnd.choice(URLS), "ref": None,
                  "t": int(w.ago(200).timestamp() * 1000)}
                 for _ in range(len(fids) * 5)]
        out.append("SELECT musubi_record_page_views(%s::jsonb);" %
                   q(json.dumps(views)))
        rows = []
        for i in range(len(fids) * 5):
            t = rnd.choice(ITYPES)
            f = maybe_friend()
            rows.append("(%d, %s, %s, %s, %s, %s, '{}')" % (
                c, q("e%s%d" % (slug, i)), f or "NULL", q(t),
                q(rnd.choice(POSTBACKS)) if t == "postback" else "NULL",
                "NULL" if rnd.random() < 0.03 else ts_sql(w.ago(200))))
        out.append("INSERT INTO interactions (channel_id, event_id, "
                   "friend_id, type, postback_data, event_ts, payload) "
                   "VALUES %s;" % ",".join(rows))

        # customers, links to friends (some ended), then orders, refunds
        # and deletions as normalized ec_webhook_events documents applied
        # by musubi_ec_apply(), as production does
        ncust = len(fids)
        cshop = [rnd.choice(shops) for _ in range(ncust)]
        out.append("INSERT INTO customers (channel_id, shop_id, "
                   "external_id) VALUES %s;" % ",".join(
                       "(%d, %d, 'c%d')" % (c, cshop[i], i)
                       for i in range(ncust)))
        run_sql(url, "\n".join(out))
        custs = {r[1]: int(r[0]) for r in psql(
            url, "SELECT id, external_id FROM customers WHERE "
            "channel_id = %d" % c)}
        early, late = [], []
        for cu in custs.values():
            r = rnd.random()
            row = None
            if r < 0.65:
                row = "(%d, %d, %d, 'api', now(), NULL)" % (
                    c, rnd.choice(fids), cu)
            elif r < 0.8:
                row = ("(%d, %d, %d, 'api', now() - interval '9 days', "
                       "now() - interval '1 day')" % (
                           c, rnd.choice(fids), cu))
            if row is not None:
                (early if rnd.random() < 0.8 else late).append((row, cu))
        link_sql = ("INSERT INTO friend_customer_links (channel_id, "
                    "friend_id, customer_id, method, linked_at, "
                    "unlinked_at) VALUES %s;")
        run_sql(url, link_sql % ",".join(r for r, _ in early))

        def iso(t):
            return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        by_shop = {}
        for i, sh in enumerate(cshop):
            by_shop.setdefault(sh, []).append("c%d" % i)
        events = []
        for i in range(len(fids) * 3):
            shop = rnd.choice(shops)
            placed = w.ago(400)
            gross = Decimal(rnd.choice([rnd.randint(5, 300) * 100,
                                        rnd.randint(500, 30000),
                                        Decimal(rnd.randint(500, 9000)) +
                                        Decimal("0.5")]))
            total = gross - (200 if rnd.random() < 0.08 else 0)
            paid = rnd.random() < 0.85
            cancelled = rnd.random() < 0.08
            items = []
            for pos in range(rnd.randint(1, 3)):
                price = Decimal(rnd.randint(3, 60) * 100)
                qty = rnd.randint(1, 3)
                items.append({
                    "line_id": str(pos), "product_id":
                    rnd.choice(PRODUCTS), "variant_id": None,
                    "sku": rnd.choice(SKUS) if rnd.random() < 0.9
                    else None,
                    "title": rnd.choice(TITLES) if rnd.random() < 0.95
                    else None,
                    "vendor": rnd.choice(VENDORS) if rnd.random() < 0.9
                    else None,
                    "quantity": qty, "price": str(price),
                    "total": str(price * qty)})
            cust = None
            if rnd.random() < 0.95 and by_shop.get(shop):
                k = rnd.choice(by_shop[shop])
                cust = {"id": k, "key": k, "email_hash": None,
                        "phone_hash": None, "first_name": None,
                        "last_name": None}
            doc = {"kind": "order", "order": {
                "id": "o%d" % i, "number": str(1000 + i),
                "currency": "USD" if rnd.random() < 0.04 else "JPY",
                "presentment_currency": None, "status": None,
                "financial_status": "paid" if paid else "pending",
                "cancel_reason": None, "source_name": None,
                "test": rnd.random() < 0.04, "restored": False,
                "placed_at": iso(placed),
                "updated_at": iso(placed + 4 * DAY),
                "paid_at": iso(placed + dt.timedelta(minutes=1))
                if paid else None,
                "cancelled_at": iso(placed + DAY) if cancelled else None,
                "gross": str(gross), "current_total": str(total),
                "customer": cust, "landing_site": None,
                "referring_site": None, "attribution_token": None,
                "note_attributes": None, "items": items, "refunds": [],
                "flags": []}}
            events.append((shop, "order", "o%d" % i, doc))
            if rnd.random() < 0.15:
                events.append((shop, "refund", "r%d" % i, {
                    "kind": "refund", "refund": {
                        "id": "r%d" % i, "order_id": "o%d" % i,
                        "amount": str(min(gross, Decimal(
                            rnd.randint(1, 50) * 100))),
                        "created_at": iso(placed + 3 * DAY),
                        "estimated": False, "note": None, "items": [],
                        "flags": []}}))
            if rnd.random() < 0.03:
                events.append((shop, "delete", "o%d" % i, {
                    "kind": "delete", "order_id": "o%d" % i}))
        rnd.shuffle(events)
        run_sql(url, "INSERT INTO ec_webhook_events (channel_id, shop_id, "
                "platform, topic, delivery_id, kind, entity_id, payload, "
                "doc) VALUES %s;" % ",".join(
                    "(%d, %d, 'generic', %s, %s, %s, %s, '{}', %s)" % (
                        c, sh, q(kind), q("d%d" % n), q(kind), q(ent),
                        q(json.dumps(doc)))
                    for n, (sh, kind, ent, doc) in enumerate(events)))
        # musubid's own EC processor may hold the apply lock: wait it out
        deadline = time.time() + 60
        while psql(url, "SELECT count(*) FROM ec_webhook_events "
                   "WHERE state = 0")[0][0] != "0":
            if time.time() > deadline:
                raise AssertionError("EC events not applied in 60s")
            psql(url, "SELECT * FROM musubi_ec_apply(500)")
        bad = psql(url, "SELECT delivery_id, problem FROM "
                   "ec_webhook_events WHERE state <> 1 LIMIT 3")
        if bad:
            raise AssertionError("musubi_ec_apply left %s" % bad)
        if late:
            run_sql(url, link_sql % ",".join(r for r, _ in late) +
                    "SELECT musubi_ec_refresh(%d, ARRAY[%s]::bigint[], "
                    "'{}');" % (c, ",".join(str(cu) for _, cu in late)))
    # acquisition sources, set on friends as the acquisition module keeps
    # them (friends.source_id)
    out = []
    for slug in ("shop", "noise"):
        c = ch[slug]
        out.append("INSERT INTO acquisition_sources (channel_id, code, name,"
                   " kind, active_from) VALUES %s;" % ",".join(
                       "(%d, %s, 'src', %s, '2024-01-01')" % (
                           c, q(code if slug == "shop" else "n-" + code),
                           q(kind)) for code, kind in SOURCES))
        fids = [int(r[0]) for r in psql(url, "SELECT id FROM friends WHERE "
                                        "channel_id = %d ORDER BY id" % c)]
        rows = ["(%d, %d)" % (f, rnd.randrange(len(SOURCES)))
                for f in fids if rnd.random() < 0.6]
        out.append("UPDATE friends f SET source_id = s.id FROM (VALUES %s) "
                   "v(fid, k) JOIN (SELECT id, row_number() OVER (ORDER BY "
                   "id) - 1 AS k FROM acquisition_sources WHERE channel_id "
                   "= %d) s ON s.k = v.k WHERE f.channel_id = %d AND f.id = "
                   "v.fid;" % (",".join(rows), c, c))
    run_sql(url, "\n".join(out))
    # as autovacuum would: the planner needs statistics of the new rows
    run_sql(url, "SELECT * FROM musubi_ec_rfm(); ANALYZE;")
    return ch


def us(v):
    """A timestamp read as epoch microseconds."""
    if v == "":
        return None
    return dt.datetime.fromtimestamp(int(v) / 1e6, UTC)


class Data:
    """Raw rows of one channel, read back from PostgreSQL."""

    def __init__(self, url, c):
        def rows(sql):
            return psql(url, sql % {"c": c})

        def epoch(col):
            return "(extract(epoch FROM %s) * 1000000)::bigint" % col

        self.friends = {}
        for r in rows("SELECT id, user_id, status, %s, %s, "
                      "coalesce(language, '\x01') FROM friends "
                      "WHERE channel_id = %%(c)d ORDER BY id" % (
                          epoch("followed_at"),
                          epoch("first_followed_at"))):
            self.friends[int(r[0])] = {
                "user_id": r[1], "status": r[2], "followed_at": us(r[3]),
                "first_followed_at": us(r[4]),
                "language": None if r[5] == "\x01" else r[5]}
        self.ids = sorted(self.friends)
        self.source = {f: (None, None) for f in self.ids}
        for f, code, kind in rows("SELECT f.id, s.code, s.kind FROM friends "
                                  "f JOIN acquisition_sources s ON "
                                  "s.channel_id = f.channel_id AND s.id = "
                                  "f.source_id WHERE f.channel_id = %(c)d"):
            self.source[int(f)] = (code, kind)
        self.tags = {f: set() for f in self.ids}
        for f, name in rows("SELECT ft.friend_id, t.name FROM friend_tags "
                            "ft JOIN tags t ON t.channel_id = ft.channel_id"
                            " AND t.id = ft.tag_id WHERE ft.channel_id = "
                            "%(c)d"):
            self.tags[int(f)].add(name)
        self.link_campaign = {int(i): (int(k) if k else None) for i, k in
                              rows("SELECT id, campaign_id FROM links "
                                   "WHERE channel_id = %(c)d")}
        self.link_ids = sorted(self.link_campaign)
        self.clicks = {f: [] for f in self.ids}
        for f, ln, t in rows("SELECT friend_id, link_id, %s FROM clicks "
                             "WHERE channel_id = %%(c)d AND friend_id IS "
                             "NOT NULL" % epoch("clicked_at")):
            self.clicks[int(f)].append((int(ln), us(t)))
        self.views = {f: [] for f in self.ids}
        for f, u, t in rows("SELECT friend_id, url, %s FROM page_views "
                            "WHERE channel_id = %%(c)d AND friend_id IS "
                            "NOT NULL" % epoch("viewed_at")):
            self.views[int(f)].append((u, us(t)))
        self.events = {f: [] for f in self.ids}
        for f, ty, pb, t in rows("SELECT friend_id, type, coalesce("
                                 "postback_data, '\x01'), coalesce(%s::text,"
                                 " '') FROM interactions WHERE channel_id = "
                                 "%%(c)d AND friend_id IS NOT NULL" %
                                 epoch("event_ts")):
            self.events[int(f)].append((ty, None if pb == "\x01" else pb,
                                        us(t)))
        linked = {}
        for f, cu in rows("SELECT friend_id, customer_id FROM "
                          "friend_customer_links WHERE channel_id = %(c)d "
                          "AND unlinked_at IS NULL"):
            linked[int(cu)] = int(f)
        self.linked = set(linked.values())
        self.orders = {f: [] for f in self.ids}
        byid = {}
        for oid, shop, cu, state, net, placed in rows(
                "SELECT o.id, s.slug, coalesce(o.customer_id, 0), "
                "o.revenue_state, o.net, %s FROM orders o JOIN shops s ON "
                "s.channel_id = o.channel_id AND s.id = o.shop_id WHERE "
                "o.channel_id = %%(c)d" % epoch("o.placed_at")):
            if state != "counted" or int(cu) not in linked:
                continue
            o = {"id": int(oid), "shop": shop, "net": Decimal(net),
                 "placed": us(placed), "items": []}
            byid[o["id"]] = o
            self.orders[linked[int(cu)]].append(o)
        for oid, pid, sku, title, vendor, total in rows(
                "SELECT order_id, coalesce(product_id, '\x01'), "
                "coalesce(sku, '\x01'), coalesce(title, '\x01'), "
                "coalesce(vendor, '\x01'), total FROM order_items "
                "WHERE channel_id = %(c)d"):
            if int(oid) in byid:
                n = [None if x == "\x01" else x for x in (pid, sku, title,
                                                          vendor)]
                byid[int(oid)]["items"].append({
                    "product_id": n[0], "sku": n[1], "title": n[2],
                    "vendor": n[3], "total": Decimal(total)})
        self._stats()

    def _stats(self):
        """Per-friend purchase figures and RFM, from raw orders only."""
        self.stats = {}
        for f in self.ids:
            os_ = self.orders[f]
            pos = [o for o in os_ if o["net"] > 0]
            net = sum((o["net"] for o in os_), Decimal(0))
            n = len(pos)
            self.stats[f] = {
                "n": n, "net": net,
                "first": min((o["placed"] for o in pos), default=None),
                "last": max((o["placed"] for o in pos), default=None),
                "aov": (net / n).quantize(Decimal("0.01"), ROUND_HALF_UP)
                if n else None, "r": None, "f": None, "m": None}
        buyers = [f for f in self.ids if self.stats[f]["n"] > 0]
        total = len(buyers)
        for score, key in (("r", "last"), ("f", "n"), ("m", "net")):
            for f in buyers:
                v = self.stats[f][key]
                rank = 1 + sum(1 for g in buyers
                               if self.stats[g][key] < v)
                self.stats[f][score] = 1 + 5 * (rank - 1) // total


class Reference:
    """The plain evaluator: one friend at a time, raw rows only."""

    def __init__(self, data, now):
        self.d = data
        self.now = now

    def members(self, rule):
        return [f for f in self.d.ids if self.node(rule, f)]

    def node(self, n, f):
        (k, v), = n.items()
        if k == "all":
            return all(self.node(c, f) for c in v)
        if k == "any":
            return any(self.node(c, f) for c in v)
        if k == "not":
            return not self.node(v, f)
        return getattr(self, "c_" + k)(v, f)

    # -- comparisons
    def cmp(self, pred, x, conv):
        """A number predicate on x (None never matches)."""
        if x is None:
            return False
        if not isinstance(pred, dict):
            pred = {"eq": pred}
        for op, a in pred.items():
            if op == "between":
                ok = conv(a[0]) <= x <= conv(a[1])
            elif op == "in":
                ok = x in [conv(y) for y in a]
            else:
                b = conv(a)
                ok = {"eq": x == b, "ne": x != b, "gt": x > b,
                      "gte": x >= b, "lt": x < b, "lte": x <= b}[op]
            if not ok:
                return False
        return True

    def count(self, v, n):
        return self.cmp(v.get("count", {"gte": 1}), n, int)

    @staticmethod
    def num(a):
        return Decimal(str(a))

    def strp(self, pred, x):
        if x is None:
            return False
        if isinstance(pred, str):
            pred = {"eq": pred}
        for op, a in pred.items():
            ok = {"eq": lambda: x == a, "ne": lambda: x != a,
                  "in": lambda: x in a}[op]()
            if not ok:
                return False
        return True

    @staticmethod
    def day(s):
        return dt.date.fromisoformat(s)

    def datep(self, pred, t):
        if t is None:
            return False
        for op, a in pred.items():
            if op == "within_days":
                ok = t >= self.now - a * DAY
            elif op == "more_than_days":
                ok = t < self.now - a * DAY
            else:
                local = t.astimezone(TOKYO).date()
                ok = self.day(a[0]) <= local <= self.day(a[1])
            if not ok:
                return False
        return True

    def window(self, v, t):
        w = v.get("window")
        if w is None:
            return True
        if "last_days" in w:
            return self.datep({"within_days": w["last_days"]}, t)
        return self.datep({"between": w["between"]}, t)

    # -- conditions
    def c_friend(self, v, f):
        fr = self.d.friends[f]
        for k, p in v.items():
            if k == "status":
                ok = self.strp(p, fr["status"])
            elif k == "language":
                ok = self.strp(p, fr["language"])
            elif k == "linked":
                ok = (f in self.d.linked) == p
            else:
                ok = self.datep(p, fr[k])
            if not ok:
                return False
        return True

    def c_source(self, v, f):
        code, kind = self.d.source[f]
        return all(self.strp(p, code if k == "code" else kind)
                   for k, p in v.items())

    def c_tags(self, v, f):
        have = self.d.tags[f]
        for k, names in v.items():
            n = len(set(names) & have)
            ok = {"has_any": n > 0, "has_all": n == len(set(names)),
                  "has_none": n == 0}[k]
            if not ok:
                return False
        return True

    def item_ok(self, it, p):
        for k, key in (("product_id", "product_id"), ("sku", "sku"),
                       ("vendor", "vendor")):
            if k in p:
                want = p[k] if isinstance(p[k], list) else [p[k]]
                if it[key] not in want:
                    return False
        if "title_contains" in p:
            if it["title"] is None or p["title_contains"] not in it["title"]:
                return False
        return True

    def c_purchases(self, v, f):
        os_ = [o for o in self.d.orders[f] if self.window(v, o["placed"])
               and ("shop" not in v or o["shop"] == v["shop"])]
        if "products" in v:
            n, amt = 0, Decimal(0)
            for o in os_:
                if o["net"] <= 0:
                    continue
                hits = [it for it in o["items"]
                        if self.item_ok(it, v["products"])]
                if hits:
                    n += 1
                    amt += sum(it["total"] for it in hits)
        else:
            n = sum(1 for o in os_ if o["net"] > 0)
            amt = sum((o["net"] for o in os_), Decimal(0))
        if ("count" in v or "net_amount" not in v) and not self.count(v, n):
            return False
        if "net_amount" in v and not self.cmp(v["net_amount"], amt,
                                              self.num):
            return False
        return True

    def c_first_purchase(self, v, f):
        return self.datep(v, self.d.stats[f]["first"])

    def c_last_purchase(self, v, f):
        return self.datep(v, self.d.stats[f]["last"])

    def c_aov(self, v, f):
        return self.cmp(v, self.d.stats[f]["aov"], self.num)

    def c_rfm(self, v, f):
        return all(self.cmp(p, self.d.stats[f][k], int)
                   for k, p in v.items())

    def c_clicks(self, v, f):
        links = v.get("link")
        if links is not None and not isinstance(links, list):
            links = [links]
        n = sum(1 for ln, t in self.d.clicks[f]
                if self.window(v, t)
                and (links is None or ln in links)
                and ("campaign" not in v or
                     self.d.link_campaign.get(ln) == v["campaign"]))
        return self.count(v, n)

    def c_page_views(self, v, f):
        n = sum(1 for u, t in self.d.views[f]
                if self.window(v, t)
                and u.startswith(v.get("url_prefix", "")))
        return self.count(v, n)

    def c_interactions(self, v, f):
        pb = v.get("postback_data")
        if isinstance(pb, str):
            pb = {"eq": pb}
        ty = v.get("type", "postback" if pb is not None else None)

        def ok(e):
            t, data, at = e
            if ty is not None and t != ty:
                return False
            if pb is not None:
                if data is None:
                    return False
                if "eq" in pb and data != pb["eq"]:
                    return False
                if "prefix" in pb and not data.startswith(pb["prefix"]):
                    return False
            return self.window(v, at)
        return self.count(v, sum(1 for e in self.d.events[f] if ok(e)))


class RuleGen:
    """Random rules over the whole grammar musubi evaluates."""

    def __init__(self, rnd, now):
        self.r = rnd
        self.now = now

    def date(self, lo=0, hi=420):
        d = (self.now - self.r.randint(lo, hi) * DAY).astimezone(TOKYO)
        return d.date()

    def dates(self):
        a, b = sorted([self.date(), self.date()])
        return [a.isoformat(), b.isoformat()]

    def datepred(self):
        ops = self.r.sample(["within_days", "more_than_days", "between"],
                            self.r.choice([1, 1, 1, 2]))
        p = {}
        for op in ops:
            if op == "within_days":
                p[op] = self.r.randint(1, 420)
            elif op == "more_than_days":
                p[op] = self.r.randint(0, 420)
            else:
                p[op] = self.dates()
        return p

    def window(self):
        if self.r.random() < 0.5:
            return {"last_days": self.r.choice([1, 7, 30, 90, 180, 365])}
        return {"between": self.dates()}

    def numpred(self, values, bare=True):
        r = self.r
        if bare and r.random() < 0.15:
            return r.choice(values)
        p = {}
        for op in r.sample(["eq", "ne", "gt", "gte", "lt", "lte",
                            "between", "in"], r.choice([1, 1, 1, 2])):
            if op == "between":
                p[op] = sorted([r.choice(values), r.choice(values)])
            elif op == "in":
                p[op] = r.sample(values, r.randint(1, min(3, len(values))))
            else:
                p[op] = r.choice(values)
        return p

    def count(self):
        return self.numpred([0, 1, 2, 3, 4, 5])

    def amounts(self):
        return [0, 500, 1000, 2500.5, 3000, 5000, 10000, 20000, 45000,
                -1, 123.45]

    def strpred(self, values):
        r = self.r
        x = r.random()
        if x < 0.4:
            return r.choice(values)
        if x < 0.6:
            return {"ne": r.choice(values)}
        if x < 0.7:
            return {"eq": r.choice(values)}
        return {"in": r.sample(values, r.randint(1, len(values)))}

    def one_or_list(self, values):
        if self.r.random() < 0.5:
            return self.r.choice(values)
        return self.r.sample(values, self.r.randint(1, min(3, len(values))))

    def leaf(self):
        r = self.r
        kind = r.choice(["status", "language", "followed", "linked",
                         "tags", "tags", "purchases", "purchases",
                         "purchases", "first", "last", "aov", "rfm",
                         "clicks", "clicks", "views", "views", "inter",
                         "inter", "friend2", "source"])
        if kind == "source":
            v = {}
            for k in r.sample(["code", "kind"], r.randint(1, 2)):
                v[k] = self.strpred([c for c, _ in SOURCES] + ["n-qr-store"]
                                    if k == "code" else KINDS)
            return {"source": v}
        if kind == "status":
            return {"friend": {"status": self.strpred(STATUSES)}}
        if kind == "language":
            return {"friend": {"language": self.strpred(["ja", "en", "th",
                                                         "fr"])}}
        if kind == "followed":
            return {"friend": {r.choice(["followed_at",
                                         "first_followed_at"]):
                               self.datepred()}}
        if kind == "linked":
            return {"friend": {"linked": r.random() < 0.5}}
        if kind == "friend2":
            return {"friend": {"status": self.strpred(STATUSES),
                               "followed_at": self.datepred()}}
        if kind == "tags":
            names = TAGS + ["unknown tag"]
            v = {}
            for op in r.sample(["has_any", "has_all", "has_none"],
                               r.choice([1, 1, 2])):
                v[op] = r.sample(names, r.randint(1, 3))
            return {"tags": v}
        if kind == "purchases":
            v = {}
            x = r.random()
            if x < 0.5:
                v["count"] = self.count()
            elif x < 0.75:
                v["net_amount"] = self.numpred(self.amounts())
            else:
                v["count"] = self.count()
                v["net_amount"] = self.numpred(self.amounts())
            if r.random() < 0.5:
                v["window"] = self.window()
            if r.random() < 0.2:
                v["shop"] = r.choice(SHOPS)
            if r.random() < 0.35:
                p = {}
                for k in r.sample(["product_id", "sku", "vendor",
                                   "title_contains"], r.randint(1, 2)):
                    if k == "product_id":
                        p[k] = self.one_or_list(PRODUCTS + ["P9"])
                    elif k == "sku":
                        p[k] = self.one_or_list(SKUS)
                    elif k == "vendor":
                        p[k] = self.one_or_list(VENDORS)
                    else:
                        p[k] = r.choice(TITLE_NEEDLES)
                v["products"] = p
            return {"purchases": v}
        if kind in ("first", "last"):
            return {kind + "_purchase": self.datepred()}
        if kind == "aov":
            return {"aov": self.numpred([0, 999.5, 1000, 2500, 5000, 8000,
                                         15000, 30000])}
        if kind == "rfm":
            return {"rfm": {k: self.numpred([1, 2, 3, 4, 5])
                            for k in r.sample(["r", "f", "m"],
                                              r.randint(1, 2))}}
        if kind == "clicks":
            v = {}
            if r.random() < 0.6:
                v["count"] = self.count()
            if r.random() < 0.5:
                v["window"] = self.window()
            x = r.random()
            if x < 0.25:
                v["link"] = self.one_or_list(self.link_ids)
            elif x < 0.45:
                v["campaign"] = r.choice([101, 102, 103])
            return {"clicks": v}
        if kind == "views":
            v = {}
            if r.random() < 0.6:
                v["count"] = self.count()
            if r.random() < 0.5:
                v["window"] = self.window()
            if r.random() < 0.7:
                v["url_prefix"] = r.choice(PREFIXES)
            return {"page_views": v}
        v = {}
        x = r.random()
        if x < 0.3:
            v["type"] = r.choice(ITYPES)
        elif x < 0.5:
            v["postback_data"] = r.choice(POSTBACKS + ["nope"])
        elif x < 0.8:
            v["postback_data"] = {r.choice(["eq", "prefix"]):
                                  r.choice(PB_PREFIXES)}
        if r.random() < 0.5:
            v["count"] = self.count()
        if r.random() < 0.5:
            v["window"] = self.window()
        return {"interactions": v}

    def rule(self, depth=0):
        r = self.r
        if depth >= 3 or (depth > 0 and r.random() < 0.45):
            return self.leaf()
        x = r.random()
        if x < 0.15 and depth > 0:
            return {"not": self.rule(depth + 1)}
        kids = [self.rule(depth + 1) for _ in range(r.randint(1, 4))]
        return {("all" if x < 0.6 else "any"): kids}


class SegmentOracle(MusubiTestCase):

    def setUp(self):
        super().setUp()
        self.create_channel("shop")
        self.create_channel("noise")
        self.rnd = random.Random(SEED)
        self.now = dt.datetime.now(UTC).replace(microsecond=0)
        t0 = time.time()
        self.ch = generate(self.db.url, self.rnd, self.now)
        self.data = Data(self.db.url, self.ch["shop"])
        self.ref = Reference(self.data, self.now)
        print("oracle: seed %d, data in %.1fs: %d friends, %d orders "
              "counted, %d buyers" % (
                  SEED, time.time() - t0, len(self.data.ids),
                  sum(len(v) for v in self.data.orders.values()),
                  sum(1 for s in self.data.stats.values() if s["n"])))
        self.base = "/api/v1/channels/shop/segments"

    def api(self, method, path, body=None, rule=None):
        r = self.d.request(method, path, body=body, key=self.admin)
        if r.status >= 300:
            raise AssertionError("seed %d: %s %s: %r\nrule: %s" % (
                SEED, method, path, r, json.dumps(rule,
                                                  ensure_ascii=False)))
        return r.json() if r.body else None

    def uids(self, ids):
        return [self.data.friends[f]["user_id"] for f in ids]

    def check(self, i, rule, want, got, what):
        if got == want:
            return
        detail = ""
        if isinstance(want, list) and isinstance(got, list):
            ws, gs = set(want), set(got)
            detail = " missing %s extra %s" % (sorted(ws - gs)[:5],
                                               sorted(gs - ws)[:5])
        self.fail("seed %d rule %d: %s differs: want %s, got %s%s\n"
                  "rule: %s" % (SEED, i, what,
                                want if not isinstance(want, list)
                                else len(want),
                                got if not isinstance(got, list)
                                else len(got), detail,
                                json.dumps(rule, ensure_ascii=False)))

    def test_random_rules_match_reference(self):
        gen = RuleGen(self.rnd, self.now)
        gen.link_ids = self.data.link_ids
        sizes = []
        for i in range(N_RULES):
            rule = gen.rule()
            want = self.ref.members(rule)
            sizes.append(len(want))
            pv = self.api("POST", self.base + "/preview", {"rule": rule},
                          rule)
            self.check(i, rule, len(want), pv["count"], "preview count")
            self.check(i, rule, self.uids(sorted(want, reverse=True)[:20]),
                       [m["user_id"] for m in pv["sample"]],
                       "preview sample")
            seg = self.api("POST", self.base, {"name": "r%d" % i,
                                               "rule": rule})
            sp = "%s/%d" % (self.base, seg["id"])
            cnt = self.api("GET", sp + "/count", rule=rule)["count"]
            self.check(i, rule, len(want), cnt, "segment count")
            got, cursor = [], None
            limit = self.rnd.choice([7, 50, 1000])
            while True:
                path = sp + "/members?limit=%d" % limit
                if cursor:
                    path += "&cursor=" + urllib.parse.quote(cursor)
                page = self.api("GET", path, rule=rule)
                got += [m["user_id"] for m in page["members"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            self.check(i, rule, self.uids(want), got, "members (row mode)")
            if i % 3 == 0:
                snap = self.api("POST", sp + "/snapshots", rule=rule)
                self.check(i, rule, len(want), snap["member_count"],
                           "snapshot count")
                ids = psql(self.db.url, "SELECT friend_id FROM "
                           "segment_snapshot_members WHERE snapshot_id = "
                           "%d ORDER BY friend_id" % snap["id"])
                self.check(i, rule, want, [int(x[0]) for x in ids],
                           "snapshot members")
            self.api("DELETE", sp)
        empty = sum(1 for s in sizes if s == 0)
        full = sum(1 for s in sizes if s == len(self.data.ids))
        print("oracle: %d rules agree; members per rule: %d empty, %d all, "
              "median %d" % (N_RULES, empty, full,
                             sorted(sizes)[len(sizes) // 2]))
        # the rules must not be trivial
        self.assertLess(empty, N_RULES * 0.5)
        self.assertLess(full, N_RULES * 0.2)

    def test_rollups_agree_with_raw_rows(self):
        """friend_stats and friend_engagement equal the raw rows."""
        c = self.ch["shop"]
        got = {int(f): (int(n), Decimal(net), aov, r, fs, m)
               for f, n, net, aov, r, fs, m in psql(
                   self.db.url, "SELECT friend_id, orders_count, "
                   "net_revenue, coalesce(aov::text, ''), "
                   "coalesce(rfm_r::text, ''), coalesce(rfm_f::text, ''), "
                   "coalesce(rfm_m::text, '') FROM friend_stats "
                   "WHERE channel_id = %d" % c)}
        for f in self.data.ids:
            s = self.data.stats[f]
            want = (s["n"], s["net"], "" if s["aov"] is None
                    else str(s["aov"]),
                    *("" if s[k] is None else str(s[k])
                      for k in ("r", "f", "m")))
            have = got.get(f, (0, Decimal(0), "", "", "", ""))
            self.assertEqual(have, want, "seed %d friend %d" % (SEED, f))


if __name__ == "__main__":
    main()
