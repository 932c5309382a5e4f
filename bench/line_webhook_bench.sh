#!/usr/bin/env bash
# bench/line_webhook_bench.sh -- signed single-event LINE webhook deliveries
# under wrk (64 connections, 2 threads), each committed before its 200.
# Starts its own PostgreSQL (scripts/pg.sh, synchronous_commit and fsync on),
# builds a Release musubid, and prints requests/s, latency percentiles, and a
# check that every 200 is a stored event.  Usage: bench/line_webhook_bench.sh
# [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-15}
CONNS=${2:-64}
PORT=${MUSUBI_BENCH_PORT:-18181}
WORK=var/bench
mkdir -p "$WORK"

bash scripts/deps.sh --bench >/dev/null
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DMUSUBI_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target musubid musubictl >/dev/null
bash scripts/pg.sh start >/dev/null
PGURL=$(bash scripts/pg.sh url)
DB=musubi_bench_webhook
psql -X -q -d "$PGURL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
DBURL="${PGURL/dbname=postgres/dbname=$DB}"

N=$(( DUR * 20000 ))
[ -s "$WORK/webhooks-$N.txt" ] || python3 bench/gen_line_webhooks.py bench-secret "$N" "$WORK/webhooks-$N.txt"

MUSUBI_DATABASE_URL=$DBURL MUSUBI_LISTEN=127.0.0.1:$PORT MUSUBI_LOG_LEVEL=warn \
	build-bench/musubid >"$WORK/musubid.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
KEY=$(MUSUBI_DATABASE_URL=$DBURL build-bench/musubictl apikey create --name bench --scope admin 2>/dev/null)
curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/channels" \
	-d '{"slug":"bench","name":"Bench","channel_secret":"bench-secret"}' >/dev/null

echo "==> wrk -t2 -c$CONNS -d${DUR}s --latency (signed single-event deliveries)"
wrk -t2 -c"$CONNS" -d"${DUR}s" --latency -s bench/line_webhook.lua \
	"http://127.0.0.1:$PORT/webhooks/line/bench" -- "$PWD/$WORK/webhooks-$N.txt" 2 | tee "$WORK/wrk.txt"
sleep 2
stored=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^musubi_line_deliveries_total\{result="stored"\}/ {print $2}')
rows=$(psql -X -At -d "$DBURL" -c "SELECT count(*) FROM webhook_events")
rss=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^process_resident_memory_bytes/ {print $2}')
commits=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^musubi_line_commits_total/ {print $2}')
echo "==> answered 200 (stored): $stored; rows in webhook_events: $rows; group commits: $commits; musubid RSS: $((rss / 1048576)) MiB"
[ "$stored" = "$rows" ] || { echo "MISMATCH: a 200 without a stored row"; exit 1; }
