#!/usr/bin/env bash
# bench/campaign_bench.sh -- a 1,000,000-recipient multicast campaign
# against line-sandbox, twice: first with LINE's multicast limit (200
# requests/s, in the sandbox and in musubid), then with no limit on either
# side, to find musubi's ceiling.  Prints, for each: the preparation time
# (audience snapshot + 2,000 batch bodies), the sending time and rate
# (first attempt to last answer), 429s seen, exactly-once check from the
# sandbox's counters, and musubid's resident memory.
#
# Usage: bench/campaign_bench.sh [RECIPIENTS]
# Builds a Release musubid and line-sandbox (build-bench/), and starts its
# own PostgreSQL (scripts/pg.sh, fsync on) unless MUSUBI_BENCH_DATABASE_URL
# names a server to use (a conninfo with dbname=postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
PORT=${MUSUBI_BENCH_PORT:-18191}
SBPORT=${MUSUBI_BENCH_SANDBOX_PORT:-18192}
WORK=var/bench
mkdir -p "$WORK"

cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DMUSUBI_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" --target musubid musubictl line-sandbox >/dev/null
if [ -n "${MUSUBI_BENCH_DATABASE_URL:-}" ]; then
	PGURL=$MUSUBI_BENCH_DATABASE_URL
else
	bash scripts/pg.sh start >/dev/null
	PGURL=$(bash scripts/pg.sh url)
fi
DB=musubi_bench_campaign
psql -X -q -d "$PGURL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
DBURL="${PGURL/dbname=postgres/dbname=$DB}"
SQL() { psql -X -q -At -d "$DBURL" -c "$1"; }

PID=
SBPID=
cleanup() {
	[ -n "$PID" ] && kill "$PID" 2>/dev/null || true
	[ -n "$SBPID" ] && kill "$SBPID" 2>/dev/null || true
}
trap cleanup EXIT

echo '{"seed":1,"auto_profiles":true}' >"$WORK/sandbox.json"
build-bench/line-sandbox -l "127.0.0.1:$SBPORT" -c "$WORK/sandbox.json" >"$WORK/sandbox.log" 2>&1 &
SBPID=$!
SB="http://127.0.0.1:$SBPORT"
for _ in $(seq 100); do curl -sf "$SB/sandbox/health" >/dev/null && break; sleep 0.1; done

# start_musubid MULTICAST_RPS: (re)start musubid with that limit.
start_musubid() {
	if [ -n "$PID" ]; then
		kill "$PID"
		wait "$PID" || true
	fi
	MUSUBI_DATABASE_URL=$DBURL MUSUBI_LISTEN=127.0.0.1:$PORT MUSUBI_LOG_LEVEL=warn \
		MUSUBI_LINE_API_BASE=$SB MUSUBI_LINE_MULTICAST_RPS=$1 \
		MUSUBI_CAMPAIGN_POLL=100ms MUSUBI_DB_STATEMENT_TIMEOUT=120s \
		build-bench/musubid >>"$WORK/campaign-musubid.log" 2>&1 &
	PID=$!
	for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
}

start_musubid 200
KEY=$(MUSUBI_DATABASE_URL=$DBURL build-bench/musubictl apikey create --name bench --scope admin 2>/dev/null)
API="http://127.0.0.1:$PORT/api/v1/channels"
curl -sf -H "Authorization: Bearer $KEY" "$API" \
	-d '{"slug":"bench","name":"Bench","channel_secret":"s","channel_access_token":"bench-token"}' >/dev/null
echo "==> inserting $N friends"
t0=$(date +%s.%N)
SQL "INSERT INTO friends (channel_id, user_id, status, profile_state)
     SELECT 1, 'U' || md5(g::text), 'following', 'ok' FROM generate_series(1, $N) g"
SQL "VACUUM ANALYZE friends"
echo "    $(echo "$(date +%s.%N) - $t0" | bc) s"

# run LABEL: one campaign to everyone; report its numbers.
run() {
	local label=$1 cid t0 state prep
	curl -sf -X POST "$SB/sandbox/reset" >/dev/null
	cid=$(curl -sf -H "Authorization: Bearer $KEY" "$API/bench/campaigns" \
		-d "{\"name\":\"$label\",\"audience\":{\"type\":\"all\"},\"messages\":[{\"type\":\"text\",\"text\":\"セール中 https://shop.example/sale\"}]}" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
	t0=$(date +%s.%N)
	curl -sf -X POST -H "Authorization: Bearer $KEY" "$API/bench/campaigns/$cid/schedule" >/dev/null
	rss=0
	while :; do
		state=$(SQL "SELECT state FROM campaigns WHERE id = $cid")
		r=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^process_resident_memory_bytes/ {print $2}')
		[ -n "$r" ] && [ "$r" -gt "$rss" ] && rss=$r
		case $state in completed | failed | cancelled) break ;; esac
		sleep 0.5
	done
	total=$(echo "$(date +%s.%N) - $t0" | bc)
	echo "==> $label: campaign $cid $state in ${total}s"
	SQL "SELECT '    preparation (run created -> first request): ' ||
	        round(extract(epoch FROM min(b.first_attempt_at) - r.created_at)::numeric, 2) || ' s'
	     FROM campaign_runs r JOIN delivery_batches b ON b.run_id = r.id
	     WHERE r.campaign_id = $cid GROUP BY r.created_at"
	echo "    load average: $(cut -d' ' -f1-3 /proc/loadavg)"
	SQL "SELECT '    sending: ' || count(*) || ' requests, ' || sum(hi - lo + 1) ||
	        ' recipients in ' || round(extract(epoch FROM max(sent_at) - min(first_attempt_at))::numeric, 2) ||
	        ' s = ' || round(count(*) / extract(epoch FROM max(sent_at) - min(first_attempt_at))::numeric, 1) ||
	        ' requests/s, ' || round(sum(hi - lo + 1) / extract(epoch FROM max(sent_at) - min(first_attempt_at))::numeric) ||
	        ' recipients/s'
	     FROM delivery_batches b JOIN campaign_runs r ON r.id = b.run_id
	     WHERE r.campaign_id = $cid AND b.state = 'sent'"
	curl -s "$SB/sandbox/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
m = s["requests"].get("POST /v2/bot/message/multicast", {})
u = s["users"]
print("    sandbox: %s; %d users, max %d per user, %d duplicates" %
      (m, u["count"], u["max_per_user"], u["duplicates"]))'
	echo "    musubid peak RSS: $((rss / 1048576)) MiB"
}

curl -sf -X PUT "$SB/sandbox/config" -d '{"rate_limits":{"default":2000,"POST /v2/bot/message/multicast":200}}' >/dev/null
run "limited-200rps"
curl -sf -X PUT "$SB/sandbox/config" -d '{"rate_limits":{"default":0,"POST /v2/bot/message/multicast":0}}' >/dev/null
start_musubid 0
run "unlimited"
