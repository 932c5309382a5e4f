#!/usr/bin/env python3
# SPDX-License-Identifier: ISC
"""Write N signed Shopify orders/create deliveries, each a paid order of 3
line items from a pool of 50,000 customers, one per line:
"<X-Shopify-Hmac-Sha256>\t<X-Shopify-Webhook-Id>\t<body>".
Usage: gen_ec_orders.py SECRET N OUT"""
import base64
import hashlib
import hmac
import json
import random
import sys

PRODUCTS = [(632910392 + i, 808950810 + i, "SKU-%04d" % i,
             "商品 %d 号 (ギフト包装)" % i, "musubi茶園",
             str(500 + 100 * (i % 40))) for i in range(200)]


def money(a):
    return {"shop_money": {"amount": a, "currency_code": "JPY"},
            "presentment_money": {"amount": a, "currency_code": "JPY"}}


def order(i, rnd):
    oid = 5000000000000000000 + i
    cust = 7000000000000 + rnd.randrange(50000)
    items, total = [], 0
    for k, p in enumerate(rnd.sample(PRODUCTS, 3)):
        qty = rnd.randint(1, 3)
        total += int(p[5]) * qty
        items.append({"id": 9000000000000000000 + i * 3 + k,
                      "product_id": p[0], "variant_id": p[1], "sku": p[2],
                      "title": p[3], "name": p[3], "vendor": p[4],
                      "quantity": qty, "current_quantity": qty,
                      "price": p[5], "price_set": money(p[5]),
                      "total_discount": "0", "gift_card": False,
                      "requires_shipping": True, "taxable": True,
                      "properties": []})
    t = "2025-03-%02dT%02d:%02d:%02d+09:00" % (1 + i % 28, i % 24,
                                               i % 60, i % 60)
    tot = str(total)
    return {"id": oid, "admin_graphql_api_id": "gid://shopify/Order/%d" % oid,
            "name": "#%d" % (1000 + i), "order_number": 1000 + i,
            "email": "buyer%d@example.jp" % cust, "created_at": t,
            "processed_at": t, "updated_at": t, "currency": "JPY",
            "presentment_currency": "JPY", "financial_status": "paid",
            "fulfillment_status": None, "test": False, "cancelled_at": None,
            "cancel_reason": None, "closed_at": None, "source_name": "web",
            "total_price": tot, "total_price_set": money(tot),
            "subtotal_price": tot, "current_total_price": tot,
            "current_total_price_set": money(tot), "total_tax": "0",
            "landing_site": "/products/x?utm_source=line&musubi_t=v1.t%d" % i,
            "referring_site": "https://liff.line.me/",
            "note_attributes": [{"name": "_musubi_t", "value": "v1.n%d" % i}],
            "customer": {"id": cust, "email": "buyer%d@example.jp" % cust,
                         "first_name": "花子", "last_name": "山田",
                         "phone": "+81 90-%04d-%04d" % (cust % 10000,
                                                         i % 10000)},
            "line_items": items, "refunds": [], "shipping_lines": []}


def main():
    secret, n, out = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
    rnd = random.Random(4)
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n):
            body = json.dumps(order(i, rnd), ensure_ascii=False,
                              separators=(",", ":"))
            sig = base64.b64encode(hmac.new(secret, body.encode(),
                                            hashlib.sha256).digest())
            f.write("%s\tbench-%d\t%s\n" % (sig.decode(), i, body))


if __name__ == "__main__":
    main()
