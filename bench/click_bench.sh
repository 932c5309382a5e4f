#!/usr/bin/env bash
# SPDX-License-Identifier: ISC
# bench/click_bench.sh -- click redirects (GET /c/{token} -> 302) under wrk.
#
# Starts its own PostgreSQL (scripts/pg.sh; or the one named by
# MUSUBI_BENCH_PG_URL), builds a Release musubid, creates a channel, 1,000
# friends (inserted with SQL) and 10 links (through the API), asks the API
# for the personalised /c/ URL of every (link, friend) pair (10,000 URLs,
# bench/gen_click_urls.py), and runs wrk (2 threads, 64 connections,
# --latency) with bench/click.lua cycling through them.  Afterwards it
# waits for the buffered clicks to be written and checks that the number
# of rows in clicks equals the number of 302s musubid answered, that the
# per-friend rollup agrees, and that nothing was dropped.
#
# Usage: bench/click_bench.sh [SECONDS] [CONNECTIONS]
# Environment: MUSUBI_BENCH_PORT (18182), MUSUBI_BENCH_BUILD (build-bench),
#   MUSUBI_BENCH_NO_BUILD=1 (use the binaries already there),
#   MUSUBI_BENCH_PG_URL (an existing PostgreSQL; scripts/pg.sh is not used).
# Target (design.md §7): >= 20,000 redirects/s on the 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-15}
CONNS=${2:-64}
PORT=${MUSUBI_BENCH_PORT:-18182}
BUILD=${MUSUBI_BENCH_BUILD:-build-bench}
WORK=var/bench-click
NFRIENDS=1000
NLINKS=10
mkdir -p "$WORK"

die() {
	echo "click_bench: $*" >&2
	exit 1
}
command -v wrk >/dev/null || bash scripts/deps.sh --bench >/dev/null
command -v wrk >/dev/null || die "wrk is not installed"

if [ "${MUSUBI_BENCH_NO_BUILD:-0}" != 1 ]; then
	cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DMUSUBI_TESTS=OFF >/dev/null
	cmake --build "$BUILD" -j"$(nproc)" --target musubid musubictl >/dev/null
fi
if [ -n "${MUSUBI_BENCH_PG_URL:-}" ]; then
	PGURL=$MUSUBI_BENCH_PG_URL
else
	bash scripts/pg.sh start >/dev/null
	PGURL=$(bash scripts/pg.sh url)
fi
DB=musubi_bench_click
PGOPTIONS="-c client_min_messages=warning" psql -X -q -d "$PGURL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
DBURL="${PGURL/dbname=postgres/dbname=$DB}"
[ "$DBURL" != "$PGURL" ] || die "cannot name the database in: $PGURL"
BASE=http://127.0.0.1:$PORT

MUSUBI_DATABASE_URL=$DBURL MUSUBI_LISTEN=127.0.0.1:$PORT MUSUBI_LOG_LEVEL=warn \
	"$BUILD"/musubid >"$WORK/musubid.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$BASE/healthz" >/dev/null || die "musubid did not start: $(tail -5 "$WORK/musubid.log")"
KEY=$(MUSUBI_DATABASE_URL=$DBURL "$BUILD"/musubictl apikey create --name bench --scope admin 2>/dev/null)
api() { curl -sf -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' "$@"; }
api "$BASE/api/v1/channels" -d '{"slug":"bench","name":"Bench","channel_secret":"bench-secret"}' >/dev/null

# 1,000 followers, straight into friends (sql/002_line_intake.sql).
psql -X -q -d "$DBURL" -v ON_ERROR_STOP=1 -c "
	INSERT INTO friends (channel_id, user_id, status, status_at, followed_at,
	    first_followed_at, follow_count, profile_state)
	SELECT c.id, 'U' || md5('click-bench-' || g), 'following', now(), now(),
	    now(), 1, 'ok'
	FROM channels c, generate_series(1, $NFRIENDS) g WHERE c.slug = 'bench'"
for i in $(seq "$NLINKS"); do
	api "$BASE/api/v1/channels/bench/links" \
		-d "{\"name\":\"Link $i\",\"destination\":\"https://shop.example/item/$i?ref=line#top\",\"utm_campaign\":\"bench-$i\"}" >/dev/null
done
psql -X -At -d "$DBURL" -c "SELECT user_id FROM friends ORDER BY id" |
	python3 bench/gen_click_urls.py "$BASE" "$KEY" bench "$WORK/urls.txt"

# Warm the link cache, so the run measures the steady state.
for p in $(head -n "$NLINKS" "$WORK/urls.txt"); do curl -s -o /dev/null "$BASE$p"; done

metric() {
	curl -s "$BASE/metrics" | awk -v m="$1" 'index($0, m) == 1 {print $NF; f=1} END {if (!f) print 0}'
}
wait_flushed() {
	local q s
	for _ in $(seq 300); do
		q=$(metric 'musubi_track_events_total{kind="click",stage="queued"}')
		s=$(metric 'musubi_track_events_total{kind="click",stage="stored"}')
		[ "$q" = "$s" ] && return 0
		sleep 0.1
	done
	return 1
}
wait_flushed || die "warm-up clicks were not written"
base302=$(metric 'musubi_http_requests_total{route="/c/{token}",method="GET",code="302"}')
baserows=$(psql -X -At -d "$DBURL" -c "SELECT count(*) FROM clicks")

echo "==> wrk -t2 -c$CONNS -d${DUR}s --latency (personalised /c/ redirects, $(wc -l <"$WORK/urls.txt") URLs)"
wrk -t2 -c"$CONNS" -d"${DUR}s" --latency -s bench/click.lua "$BASE" -- "$PWD/$WORK/urls.txt" | tee "$WORK/wrk.txt"

wait_flushed || echo "WARNING: clicks still buffered after 30 s"
n302=$(( $(metric 'musubi_http_requests_total{route="/c/{token}",method="GET",code="302"}') - base302 ))
n404=$(metric 'musubi_http_requests_total{route="/c/{token}",method="GET",code="404"}')
n503=$(metric 'musubi_http_requests_total{route="/c/{token}",method="GET",code="503"}')
rows=$(( $(psql -X -At -d "$DBURL" -c "SELECT count(*) FROM clicks") - baserows ))
rollup=$(psql -X -At -d "$DBURL" -c "SELECT coalesce(sum(clicks), 0) FROM friend_engagement")
allrows=$(psql -X -At -d "$DBURL" -c "SELECT count(*) FROM clicks")
dropped=$(curl -s "$BASE/metrics" | awk '/^musubi_track_dropped_total/ {s += $NF} END {print s + 0}')
rss=$(metric process_resident_memory_bytes)
rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk.txt")
p50=$(awk '$1 == "50%" {print $2}' "$WORK/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.txt")

echo "==> redirects/s: $rps   p50: $p50   p99: $p99   (target >= 20,000/s)"
echo "==> 302 answered: $n302; click rows written: $rows; rollup sum: $rollup (rows in total: $allrows); 404: $n404; 503: $n503; dropped: $dropped; musubid RSS: $((rss / 1048576)) MiB"
fail=0
if grep -q "Non-2xx or 3xx responses" "$WORK/wrk.txt"; then
	echo "FAIL: wrk saw responses other than 2xx/3xx"
	fail=1
fi
if grep -q "Socket errors" "$WORK/wrk.txt"; then
	echo "NOTE: wrk reported socket errors (see above)"
fi
[ "$n302" = "$rows" ] || { echo "FAIL: $n302 redirects but $rows click rows"; fail=1; }
[ "$rollup" = "$allrows" ] || { echo "FAIL: friend_engagement sums to $rollup, clicks has $allrows rows"; fail=1; }
[ "$dropped" = 0 ] || { echo "FAIL: $dropped clicks dropped"; fail=1; }
[ "$n404" = 0 ] && [ "$n503" = 0 ] || { echo "FAIL: 404 or 503 answers"; fail=1; }
[ "$fail" = 0 ] && echo "==> OK: every 302 is a stored click"
exit "$fail"
