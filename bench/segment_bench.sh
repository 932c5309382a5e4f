#!/usr/bin/env bash
# SPDX-License-Identifier: ISC
# bench/segment_bench.sh -- segment preview and snapshot at scale.
#
# Builds musubid/musubictl (Release, build-segbench/), uses the PostgreSQL
# named by MUSUBI_BENCH_DATABASE_URL (a server conninfo; the script creates
# and keeps database $BENCH_DB there) or else starts a private cluster in a
# temporary directory (removed at exit), migrates, and fills the database
# with bench/segment_gen.sql (1,000,000 friends, 5,000,000 orders with
# items, 10,000,000 clicks, 2,000,000 page views, plus two noise channels)
# unless it holds that data already.  Then, through musubid's HTTP API:
#
#   1. preview (count + 20 sample friends) of two 6-condition nested
#      rules (from rollups; with a raw 90-day window): one warm-up, then
#      BENCH_RUNS timed runs each
#   2. GET .../segments/{id}/count of the same rule, saved
#   3. a snapshot of every friend of the channel (1,000,000 members):
#      BENCH_RUNS timed runs
#   4. EXPLAIN ANALYZE of the statements of 1-3, as POST .../segments/sql
#      hands them out, under the same settings, in $OUT/plans.txt
#
# Usage: bench/segment_bench.sh [--regen] [--no-build]
#   --regen     drop $BENCH_DB and generate the data again
#   --no-build  use the binaries already in the build directory
# Environment: MUSUBI_BENCH_DATABASE_URL, BENCH_DB (musubi_segbench),
#   BENCH_RUNS (5), BENCH_SCALE (1.0: multiplies every row count),
#   MUSUBI_BENCH_BUILD (build-segbench), BENCH_OUT ($BUILD/segbench-out).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD=${MUSUBI_BENCH_BUILD:-$ROOT/build-segbench}
OUT=${BENCH_OUT:-$BUILD/segbench-out}
DB=${BENCH_DB:-musubi_segbench}
RUNS=${BENCH_RUNS:-5}
SCALE=${BENCH_SCALE:-1.0}
REGEN=0
BUILD_IT=1

for a in "$@"; do
	case $a in
	--regen) REGEN=1 ;;
	--no-build) BUILD_IT=0 ;;
	-h | --help)
		sed -n '3,29p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "segment_bench: unknown option $a" >&2
		exit 2
		;;
	esac
done

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'segment_bench: %s\n' "$*" >&2
	exit 1
}

for c in curl psql python3; do
	command -v $c >/dev/null || die "$c is not installed"
done

MUSUBID_PID=""
PRIVATE_DIR=""

pgbin() {
	if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
		echo /usr/lib/postgresql/15/bin
	else
		printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1
	fi
}

as_pg_owner() {
	if [ "$(id -u)" = 0 ]; then
		(cd / && runuser -u postgres -- "$@")
	else
		(cd / && "$@")
	fi
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

stop_musubid() {
	if [ -n "$MUSUBID_PID" ] && kill -0 "$MUSUBID_PID" 2>/dev/null; then
		kill -TERM "$MUSUBID_PID"
		wait "$MUSUBID_PID" 2>/dev/null || true
	fi
	MUSUBID_PID=""
}

cleanup() {
	set +e
	stop_musubid
	if [ -n "$PRIVATE_DIR" ]; then
		as_pg_owner "$(pgbin)/pg_ctl" -D "$PRIVATE_DIR/data" \
			-m immediate -w stop >/dev/null 2>&1
		rm -rf "$PRIVATE_DIR"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$BUILD_IT" = 1 ]; then
	say "building Release in $BUILD"
	cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
		-DMUSUBI_TESTS=OFF >/dev/null
	cmake --build "$BUILD" -j"$(nproc)" --target musubid musubictl \
		>/dev/null
fi
[ -x "$BUILD/musubid" ] || die "no musubid in $BUILD"
mkdir -p "$OUT"

# ---- PostgreSQL -------------------------------------------------------------

PGURL=${MUSUBI_BENCH_DATABASE_URL:-}
if [ -z "$PGURL" ]; then
	PRIVATE_DIR=$(mktemp -d /tmp/musubi-segbench-pg.XXXXXX)
	port=$(free_port)
	if [ "$(id -u)" = 0 ]; then
		chmod 755 "$PRIVATE_DIR"
		chown postgres: "$PRIVATE_DIR"
	fi
	as_pg_owner "$(pgbin)/initdb" -D "$PRIVATE_DIR/data" -A trust \
		-U postgres --no-sync -E UTF8 --locale=C >/dev/null
	as_pg_owner sh -c "printf '%s\n' \"port = $port\" \
\"listen_addresses = '127.0.0.1'\" \
\"unix_socket_directories = '$PRIVATE_DIR'\" 'max_connections = 100' \
'shared_buffers = 1GB' 'max_wal_size = 8GB' 'fsync = off' \
'synchronous_commit = off' 'full_page_writes = off' \
>>\"$PRIVATE_DIR/data/postgresql.conf\""
	as_pg_owner "$(pgbin)/pg_ctl" -D "$PRIVATE_DIR/data" -w \
		-l "$PRIVATE_DIR/log" start >/dev/null
	PGURL="host=127.0.0.1 port=$port user=postgres dbname=postgres"
	REGEN=1
	say "private PostgreSQL: $PGURL"
fi
DBURL=$(printf '%s\n' "$PGURL" | sed "s/dbname=[^ ]*/dbname=$DB/")
case $DBURL in *dbname=*) ;; *) DBURL="$DBURL dbname=$DB" ;; esac

if [ "$REGEN" = 1 ]; then
	psql -X -q -d "$PGURL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
fi
if ! psql -X -qAt -d "$PGURL" -c "SELECT 1 FROM pg_database WHERE \
datname = '$DB'" | grep -q 1; then
	psql -X -q -d "$PGURL" -c "CREATE DATABASE $DB"
	"$BUILD/musubictl" -d "$DBURL" migrate >/dev/null 2>&1
	say "generating data (scale $SCALE) -- minutes"
	start=$SECONDS
	psql -X -q -d "$DBURL" -v ON_ERROR_STOP=1 \
		-v friends="$(python3 -c "print(int(1000000*$SCALE))")" \
		-v orders="$(python3 -c "print(int(5000000*$SCALE))")" \
		-v clicks="$(python3 -c "print(int(10000000*$SCALE))")" \
		-v views="$(python3 -c "print(int(2000000*$SCALE))")" \
		-v events="$(python3 -c "print(int(2000000*$SCALE))")" \
		-f "$ROOT/bench/segment_gen.sql" >"$OUT/gen.log" 2>&1 ||
		die "generation failed: $(tail -n 5 "$OUT/gen.log")"
	say "generated in $((SECONDS - start))s"
	tail -n 8 "$OUT/gen.log"
else
	"$BUILD/musubictl" -d "$DBURL" migrate >/dev/null 2>&1
	say "reusing database $DB"
fi
psql -X -q -d "$DBURL" -c "ALTER DATABASE $DB RESET ALL"

# ---- musubid ----------------------------------------------------------------

PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
start_musubid() {
	MUSUBI_DATABASE_URL="$DBURL" MUSUBI_LISTEN="127.0.0.1:$PORT" \
		MUSUBI_LOG_LEVEL=$1 MUSUBI_DB_STATEMENT_TIMEOUT=120s \
		"$BUILD/musubid" >"$OUT/musubid-$1.log" 2>&1 &
	MUSUBID_PID=$!
	for _ in $(seq 1 300); do
		curl -fs -o /dev/null "$BASE/readyz" && return 0
		kill -0 "$MUSUBID_PID" 2>/dev/null ||
			die "musubid exited: $(tail -n 5 "$OUT/musubid-$1.log")"
		sleep 0.1
	done
	die "musubid is not ready"
}
start_musubid warn
# musubid runs the RFM job at start-up (a full recompute: seconds at this
# scale): let it finish so that it does not share the CPU with the timings
for _ in $(seq 1 600); do
	curl -fs "$BASE/metrics" | grep -q '^musubi_ec_rfm_runs_total.* [1-9]' &&
		break
	sleep 0.5
done
KEY=$("$BUILD/musubictl" -d "$DBURL" apikey create --name segbench \
	--scope admin 2>/dev/null)
[ -n "$KEY" ] || die "musubictl apikey create failed"
API="$BASE/api/v1/channels/bench"

# POST/GET with the key; prints "seconds status" and keeps the body.
call() {
	local method=$1 path=$2 body=${3:-}
	if [ -n "$body" ]; then
		curl -s -o "$OUT/last.json" -w '%{time_total} %{http_code}\n' \
			-X "$method" -H "Authorization: Bearer $KEY" \
			-H 'Content-Type: application/json' -d "$body" \
			"$API$path"
	else
		curl -s -o "$OUT/last.json" -w '%{time_total} %{http_code}\n' \
			-X "$method" -H "Authorization: Bearer $KEY" "$API$path"
	fi
}

# The 6-condition nested rules: a marketer's "engaged good customers
# without tag-3": following, (2+ orders or an AOV of 5,000 yen), clicked
# in the last 30 days, not tagged tag-3, bought more than 14 days ago --
# RULE answers from rollups (and friend_tags); RULE_RAW replaces the AOV by
# "20,000 yen in the last 90 days", which aggregates raw orders.
RULE='{"all": [
  {"friend": {"status": "following"}},
  {"any": [
    {"purchases": {"count": {"gte": 2}}},
    {"aov": {"gte": 5000}}]},
  {"clicks": {"window": {"last_days": 30}}},
  {"not": {"tags": {"has_any": ["tag-3"]}}},
  {"last_purchase": {"more_than_days": 14}}]}'
RULE_RAW='{"all": [
  {"friend": {"status": "following"}},
  {"any": [
    {"purchases": {"count": {"gte": 2}}},
    {"purchases": {"net_amount": {"gte": 20000},
                   "window": {"last_days": 90}}}]},
  {"clicks": {"window": {"last_days": 30}}},
  {"not": {"tags": {"has_any": ["tag-3"]}}},
  {"last_purchase": {"more_than_days": 14}}]}'
ALL='{"friend": {"status": {"in": ["following", "blocked", "unknown"]}}}'

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

preview() {
	local name=$1 rule=$2
	say "preview of $name ($RUNS runs after a warm-up)"
	call POST /segments/preview "{\"rule\": $rule}" >/dev/null
	: >"$OUT/preview-$name.times"
	for _ in $(seq 1 "$RUNS"); do
		read -r t code < <(call POST /segments/preview \
			"{\"rule\": $rule}")
		[ "$code" = 200 ] ||
			die "preview answered $code: $(cat "$OUT/last.json")"
		echo "$t" >>"$OUT/preview-$name.times"
	done
	count=$(python3 -c "import json; print(json.load(open('$OUT/last.json'))['count'])")
	say "preview $name: $count friends; median $(median <"$OUT/preview-$name.times")s, all: $(tr '\n' ' ' <"$OUT/preview-$name.times")"
}
preview RULE "$RULE"
preview RULE_RAW "$RULE_RAW"

psql -X -q -d "$DBURL" -c "DELETE FROM segments WHERE name LIKE 'bench %'"
read -r _ code < <(call POST /segments "{\"name\": \"bench rule\", \"rule\": $RULE}")
[ "$code" = 201 ] || die "segment create answered $code"
SID=$(python3 -c "import json; print(json.load(open('$OUT/last.json'))['id'])")
read -r t code < <(call GET "/segments/$SID/count")
say "count of the saved segment: $(cat "$OUT/last.json" | tr -d '\n') in ${t}s"

read -r _ code < <(call POST /segments "{\"name\": \"bench all\", \"rule\": $ALL}")
AID=$(python3 -c "import json; print(json.load(open('$OUT/last.json'))['id'])")
say "snapshot of every friend ($RUNS runs)"
: >"$OUT/snapshot.times"
for _ in $(seq 1 "$RUNS"); do
	read -r t code < <(call POST "/segments/$AID/snapshots")
	[ "$code" = 201 ] || die "snapshot answered $code: $(cat "$OUT/last.json")"
	echo "$t" >>"$OUT/snapshot.times"
done
members=$(python3 -c "import json; print(json.load(open('$OUT/last.json'))['member_count'])")
say "snapshot: $members members; median $(median <"$OUT/snapshot.times")s, all: $(tr '\n' ' ' <"$OUT/snapshot.times")"
psql -X -q -d "$DBURL" -c "DELETE FROM segment_snapshots WHERE \
segment_id = $AID" -c "VACUUM segment_snapshot_members"

# ---- plans ------------------------------------------------------------------

say "EXPLAIN ANALYZE of the statements musubid runs"
# POST .../segments/sql hands out the compiled SQL, its parameters and the
# settings; run them the same way, in a transaction that is rolled back.
: >"$OUT/plans.txt"
for name in RULE RULE_RAW ALL; do
	case $name in
	RULE) rule=$RULE; which=count_sql ;;
	RULE_RAW) rule=$RULE_RAW; which=count_sql ;;
	ALL) rule=$ALL; which=snapshot_sql ;;
	esac
	read -r _ code < <(call POST /segments/sql "{\"rule\": $rule}")
	[ "$code" = 200 ] || die "segments/sql answered $code"
	python3 - "$OUT/last.json" "$which" "$rule" >"$OUT/explain.sql" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
lit = lambda v: "NULL" if v is None else "'" + v.replace("'", "''") + "'"
params = j["params"]
if sys.argv[2] == "snapshot_sql":
    params = params + [None, "bench", json.dumps(json.loads(sys.argv[3])),
                       None]
print("BEGIN;")
for s in j["settings"]:
    print(s + ";")
print("PREPARE s AS " + j[sys.argv[2]] + ";")
print("EXPLAIN (ANALYZE, BUFFERS) EXECUTE s(%s);" %
      ", ".join(lit(p) for p in params))
print("ROLLBACK;")
EOF
	{
		echo "== $name ($which)"
		python3 -c "import json,sys; j=json.load(open('$OUT/last.json')); print(j['$which']); print('params:', j['params'])"
		psql -X -q -d "$DBURL" -f "$OUT/explain.sql"
	} >>"$OUT/plans.txt" 2>&1
done
stop_musubid
psql -X -q -d "$DBURL" -c "DELETE FROM segment_snapshots WHERE segment_id = $AID"
say "plans in $OUT/plans.txt:"
grep -E '^== |Execution Time' "$OUT/plans.txt"
