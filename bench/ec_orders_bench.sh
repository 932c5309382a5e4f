#!/usr/bin/env bash
# bench/ec_orders_bench.sh -- signed Shopify orders/create deliveries (paid,
# 3 line items, 50,000 customers) under wrk (64 connections, 2 threads),
# each committed to the inbox before its 200, then applied (orders, items,
# ledger, customer rollups) by musubi_ec_apply.  Starts its own PostgreSQL
# (scripts/pg.sh, synchronous_commit and fsync on), builds a Release
# musubid, and prints requests/s, latency percentiles, a check that every
# 200 is a stored delivery, and how fast the processor turned them into
# orders.  Usage: bench/ec_orders_bench.sh [SECONDS] [CONNECTIONS]
# Environment: MUSUBI_BENCH_PORT (18182), MUSUBI_INTAKE_MAX_COMMITS.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-15}
CONNS=${2:-64}
PORT=${MUSUBI_BENCH_PORT:-18182}
WORK=var/bench
mkdir -p "$WORK"

bash scripts/deps.sh --bench >/dev/null
cmake -S . -B build-bench-ec -DCMAKE_BUILD_TYPE=Release -DMUSUBI_TESTS=OFF >/dev/null
cmake --build build-bench-ec -j"$(nproc)" --target musubid musubictl >/dev/null
bash scripts/pg.sh start >/dev/null
PGURL=$(bash scripts/pg.sh url)
DB=musubi_bench_ec
psql -X -q -d "$PGURL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
DBURL="${PGURL/dbname=postgres/dbname=$DB}"

# Enough distinct deliveries that wrk never wraps around at 5,000/s.
N=$(( DUR * 5000 ))
[ -s "$WORK/ec-orders-$N.txt" ] || python3 bench/gen_ec_orders.py bench-secret "$N" "$WORK/ec-orders-$N.txt"

MUSUBI_DATABASE_URL=$DBURL MUSUBI_LISTEN=127.0.0.1:$PORT MUSUBI_LOG_LEVEL=warn \
	build-bench-ec/musubid >"$WORK/musubid-ec.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
KEY=$(MUSUBI_DATABASE_URL=$DBURL build-bench-ec/musubictl apikey create --name bench --scope admin 2>/dev/null)
curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/channels" \
	-d '{"slug":"bench","name":"Bench","channel_secret":"bench-line-secret"}' >/dev/null
curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/channels/bench/shops" \
	-d '{"slug":"bench-shop","name":"Bench","platform":"shopify","webhook_secret":"bench-secret","shop_domain":"bench.myshopify.com"}' >/dev/null

metric() {
	curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" 'index($0, m) == 1 {s += $2} END {print s + 0}'
}

echo "==> wrk -t2 -c$CONNS -d${DUR}s --latency (signed Shopify orders/create, 3 line items each)"
start=$(date +%s.%N)
wrk -t2 -c"$CONNS" -d"${DUR}s" --latency -s bench/ec_orders.lua \
	"http://127.0.0.1:$PORT/webhooks/shopify/bench-shop" -- "$PWD/$WORK/ec-orders-$N.txt" 2 bench.myshopify.com |
	tee "$WORK/wrk-ec.txt"
# Let the processor finish what was acknowledged.
for _ in $(seq 600); do
	pending=$(psql -X -At -d "$DBURL" -c "SELECT count(*) FROM ec_webhook_events WHERE state = 0")
	[ "$pending" = 0 ] && break
	sleep 0.1
done
end=$(date +%s.%N)
stored=$(metric 'musubi_ec_deliveries_total{platform="shopify",result="stored"}')
rows=$(psql -X -At -d "$DBURL" -c "SELECT count(*) FROM ec_webhook_events")
orders=$(psql -X -At -d "$DBURL" -c "SELECT count(*) FROM orders WHERE revenue_state = 'counted'")
items=$(psql -X -At -d "$DBURL" -c "SELECT count(*) FROM order_items")
ledger=$(psql -X -At -d "$DBURL" -c "SELECT count(*) FROM ledger")
custs=$(psql -X -At -d "$DBURL" -c "SELECT count(*) FROM customer_stats WHERE orders_count > 0")
check=$(psql -X -At -d "$DBURL" -c "SELECT (SELECT sum(net_revenue) FROM customer_stats) = (SELECT sum(amount) FROM ledger)")
commits=$(metric musubi_ec_commits_total)
rss=$(metric process_resident_memory_bytes)
echo "==> answered 200 (stored): $stored; rows in ec_webhook_events: $rows; group commits: $commits; musubid RSS: $((rss / 1048576)) MiB"
echo "==> applied: $orders orders, $items line items, $ledger ledger rows, $custs customers with purchases, rollups match the ledger: $check"
awk -v o="$orders" -v s="$start" -v e="$end" 'BEGIN {printf "==> ingest to last order applied: %.1f s, %.0f orders/s end to end\n", e - s, o / (e - s)}'
[ "$stored" = "$rows" ] || { echo "MISMATCH: a 200 without a stored row"; exit 1; }
[ "$orders" = "$rows" ] || { echo "MISMATCH: stored deliveries not all applied"; exit 1; }
[ "$check" = t ] || { echo "MISMATCH: rollups do not add up to the ledger"; exit 1; }
