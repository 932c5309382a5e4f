#!/usr/bin/env bash
# SPDX-License-Identifier: ISC
# bench/acquisition_bench.sh -- the acquisition report over 1,000,000 friends.
#
# Builds musubid and musubictl in Release mode (build-acq-bench/), starts a
# private PostgreSQL cluster in a temporary directory (or uses
# MUSUBI_BENCH_DATABASE_URL, a conninfo for an existing server), creates a
# scratch database, starts musubid on a free port (it applies the
# migrations), creates an admin key and a channel, then fills the database
# with SQL (generate_series), the way musubid's own code paths would have:
#
#   20 sources (5 in-app CPF ads, 5 site buttons, 4 QR, 3 store, 3 influencer)
#   BENCH_FRIENDS (1,000,000) friends, followed over the last 90 days, one
#     follow each: 60% attributed (in-app ones estimated), 40% organic;
#     10% blocked after 0-39 days
#   a logged-in, matched touch per URL-source friend, plus 30% unmatched visits
#   a cost row per source per day (96 days)
#   30% of the friends linked to a customer, with 1-5 counted orders each
#     placed after the follow (900,000 orders)
#   the order windows on the source follows (musubi_acq_orders_refresh)
#
# then VACUUM ANALYZE, and times BENCH_RUNS (5) requests of
#   GET /api/v1/channels/bench/reports/acquisition?from=<today-89>&to=<today>
# (all 1,000,000 friends in the period) with curl, plus one CSV request and
# one single-source request.  Prints the load average: other work on the
# machine shows up in the numbers.
#
# Usage: bench/acquisition_bench.sh [--no-build] [--keep]
#   --no-build  use the binaries already in the build directory
#   --keep      keep the database (and the private cluster) for inspection
# Environment: BENCH_FRIENDS, BENCH_RUNS, MUSUBI_BENCH_BUILD,
#   MUSUBI_BENCH_DATABASE_URL.  Output is kept in $BENCH_OUT
#   (default <build>/bench-out/).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD=${MUSUBI_BENCH_BUILD:-$ROOT/build-acq-bench}
OUT=${BENCH_OUT:-$BUILD/bench-out}
FRIENDS=${BENCH_FRIENDS:-1000000}
RUNS=${BENCH_RUNS:-5}
BUILD_IT=1
KEEP=0

for a in "$@"; do
	case $a in
	--no-build) BUILD_IT=0 ;;
	--keep) KEEP=1 ;;
	-h | --help)
		sed -n '3,32p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "acquisition_bench: unknown option $a" >&2
		exit 2
		;;
	esac
done

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'acquisition_bench: %s\n' "$*" >&2
	exit 1
}

command -v curl >/dev/null || die "curl is not installed"
command -v psql >/dev/null || die "psql is not installed (postgresql-client)"

MUSUBID_PID=""
PRIVATE_DIR=""
PGURL=${MUSUBI_BENCH_DATABASE_URL:-}
DBNAME="musubi_acqbench_$$"
DB_CREATED=0

pgbin() {
	if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
		echo /usr/lib/postgresql/15/bin
	else
		printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1
	fi
}

# Run a server-side PostgreSQL command as the cluster owner.
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

cleanup() {
	set +e
	if [ -n "$MUSUBID_PID" ] && kill -0 "$MUSUBID_PID" 2>/dev/null; then
		kill -TERM "$MUSUBID_PID"
		wait "$MUSUBID_PID" 2>/dev/null
	fi
	[ "$KEEP" = 1 ] && return
	if [ "$DB_CREATED" = 1 ]; then
		psql -X -q -d "$PGURL" -c "DROP DATABASE IF EXISTS $DBNAME WITH (FORCE)" >/dev/null 2>&1
	fi
	if [ -n "$PRIVATE_DIR" ]; then
		as_pg_owner "$(pgbin)/pg_ctl" -D "$PRIVATE_DIR/data" -m immediate -w stop >/dev/null 2>&1
		rm -rf "$PRIVATE_DIR"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$BUILD_IT" = 1 ]; then
	say "building Release in $BUILD"
	cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
		-DMUSUBI_TESTS=OFF >/dev/null
	cmake --build "$BUILD" -j"$(nproc)" --target musubid musubictl >/dev/null
fi
[ -x "$BUILD/musubid" ] && [ -x "$BUILD/musubictl" ] ||
	die "no musubid/musubictl in $BUILD"
mkdir -p "$OUT"

if [ -z "$PGURL" ]; then
	bin=$(pgbin)
	PRIVATE_DIR=$(mktemp -d /tmp/musubi-acqbench-pg.XXXXXX)
	port=$(free_port)
	if [ "$(id -u)" = 0 ]; then
		chmod 755 "$PRIVATE_DIR"
		chown postgres: "$PRIVATE_DIR"
	fi
	as_pg_owner "$bin/initdb" -D "$PRIVATE_DIR/data" -A trust -U postgres \
		--no-sync -E UTF8 --locale=C >/dev/null
	# scripts/pg.sh's settings; fsync off only to load faster.
	as_pg_owner sh -c "printf '%s\n' \"port = $port\" \
\"listen_addresses = '127.0.0.1'\" \
\"unix_socket_directories = '$PRIVATE_DIR'\" \
'max_connections = 300' 'shared_buffers = 256MB' 'fsync = off' \
'synchronous_commit = off' 'full_page_writes = off' \
>>\"$PRIVATE_DIR/data/postgresql.conf\""
	as_pg_owner "$bin/pg_ctl" -D "$PRIVATE_DIR/data" -w \
		-l "$PRIVATE_DIR/log" start >/dev/null
	PGURL="host=127.0.0.1 port=$port user=postgres dbname=postgres"
	say "private PostgreSQL: $PGURL"
fi
psql -X -q -d "$PGURL" -c "CREATE DATABASE $DBNAME" >/dev/null
DB_CREATED=1
DBURL=$(printf '%s\n' "$PGURL" | sed "s/dbname=[^ ]*/dbname=$DBNAME/")

PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
say "starting musubid on 127.0.0.1:$PORT"
MUSUBI_DATABASE_URL="$DBURL" MUSUBI_LISTEN="127.0.0.1:$PORT" \
	MUSUBI_LOG_LEVEL=warn MUSUBI_DB_STATEMENT_TIMEOUT=600s \
	"$BUILD/musubid" >"$OUT/musubid.log" 2>&1 &
MUSUBID_PID=$!
for _ in $(seq 1 300); do
	curl -fs -o /dev/null "$BASE/readyz" && break
	kill -0 "$MUSUBID_PID" 2>/dev/null || {
		cat "$OUT/musubid.log" >&2
		die "musubid exited"
	}
	sleep 0.1
done
KEY=$("$BUILD/musubictl" -d "$DBURL" apikey create --name bench \
	--scope admin 2>/dev/null)
[ -n "$KEY" ] || die "musubictl apikey create failed"
code=$(curl -s -o "$OUT/channel.json" -w '%{http_code}' \
	-H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
	-d '{"slug":"bench","name":"Bench shop","channel_secret":"bench-secret"}' \
	"$BASE/api/v1/channels")
[ "$code" = 201 ] || die "creating the channel answered $code"

say "generating $FRIENDS friends (this takes a few minutes)"
start=$SECONDS
psql -X -q -v ON_ERROR_STOP=1 -v n="$FRIENDS" -d "$DBURL" >"$OUT/gen.log" <<'SQL'
SET synchronous_commit = off;
SELECT id AS ch FROM channels WHERE slug = 'bench' \gset
INSERT INTO shops (channel_id, slug, name, platform, webhook_secret)
VALUES (:ch, 'bench-store', 'Store', 'generic', 'x');
INSERT INTO acquisition_settings (channel_id, add_friend_url)
VALUES (:ch, 'https://line.me/R/ti/p/@bench');
INSERT INTO acquisition_sources (channel_id, code, name, kind, in_app,
    active_from)
SELECT :ch, 'src-' || i, 'Source ' || i, (ARRAY['cpf_ad', 'cpf_ad',
    'cpf_ad', 'cpf_ad', 'cpf_ad', 'web', 'web', 'web', 'web', 'web', 'qr',
    'qr', 'qr', 'qr', 'store', 'store', 'store', 'influencer', 'influencer',
    'influencer'])[i], i <= 5, current_date - 120
FROM generate_series(1, 20) i;
CREATE TEMP TABLE src AS SELECT id, row_number() OVER (ORDER BY id) AS k,
    in_app FROM acquisition_sources WHERE channel_id = :ch;
INSERT INTO friends (channel_id, user_id, status, status_at, followed_at,
    first_followed_at, follow_count, is_unblocked, profile_state)
SELECT :ch, 'U' || lpad(to_hex(i), 32, '0'),
    CASE WHEN i % 10 = 0 THEN 'blocked' ELSE 'following' END, t, t, t, 1,
    false, 'ok'
FROM (SELECT i, now() - (i::bigint * 7776000 / :n) * interval '1 second' AS t
    FROM generate_series(1, :n) i) g;
INSERT INTO acquisition_follows (channel_id, event_id, friend_id,
    followed_at, day, unblocked, first_follow, blocked_at, source_id,
    estimated, role)
SELECT f.channel_id, 'bench-' || f.id, f.id, f.followed_at,
    (f.followed_at AT TIME ZONE 'Asia/Tokyo')::date, false, true,
    CASE WHEN f.id % 10 = 0
	THEN f.followed_at + (f.id % 40) * interval '1 day' END,
    s.id, s.id IS NOT NULL AND s.in_app,
    CASE WHEN s.id IS NULL THEN 'organic' ELSE 'source' END
FROM friends f
LEFT JOIN src s ON f.id % 5 NOT IN (0, 1) AND s.k = 1 + (f.id / 5) % 20
WHERE f.channel_id = :ch;
INSERT INTO acquisition_touches (channel_id, source_id, created_at,
    user_agent, ip_hash, login_state, user_id, friendship_status_changed,
    logged_in_at, friend_id, follow_event_id, matched_at)
SELECT af.channel_id, af.source_id, af.followed_at - interval '20 seconds',
    'Mozilla/5.0 bench', substr(md5(af.friend_id::text), 1, 16), 'done',
    f.user_id, true, af.followed_at, af.friend_id, af.event_id,
    af.followed_at
FROM acquisition_follows af
JOIN friends f ON f.channel_id = af.channel_id AND f.id = af.friend_id
WHERE af.channel_id = :ch AND af.source_id IS NOT NULL AND NOT af.estimated;
INSERT INTO acquisition_touches (channel_id, source_id, created_at,
    user_agent, ip_hash, login_state)
SELECT :ch, s.id, now() - (i::bigint * 7776000 / (:n * 3 / 10)) *
    interval '1 second', 'Mozilla/5.0 bench', substr(md5(i::text), 1, 16),
    'pending'
FROM generate_series(1, :n * 3 / 10) i
JOIN src s ON NOT s.in_app AND s.k = 6 + i % 15;
UPDATE acquisition_follows af SET touch_id = t.id, matched_at = t.matched_at
FROM acquisition_touches t
WHERE t.channel_id = af.channel_id AND t.follow_event_id = af.event_id
    AND af.channel_id = :ch;
UPDATE friends f SET source_id = af.source_id,
    source_estimated = af.estimated, source_at = af.followed_at,
    source_touch_id = af.touch_id
FROM acquisition_follows af
WHERE af.channel_id = f.channel_id AND af.friend_id = f.id
    AND af.role = 'source' AND f.channel_id = :ch;
INSERT INTO acquisition_costs (channel_id, source_id, day, spend, currency,
    impressions, clicks, reported_adds)
SELECT :ch, s.id, d::date,
    20000 + (s.k * 37 + extract(doy FROM d)::int * 11) % 5000, 'JPY',
    100000, 1500, 300
FROM src s
CROSS JOIN generate_series(current_date - 95, current_date, interval '1 day') d;
INSERT INTO customers (channel_id, shop_id, external_id)
SELECT :ch, (SELECT id FROM shops WHERE slug = 'bench-store'), 'c-' || f.id
FROM friends f WHERE f.channel_id = :ch AND f.id % 10 IN (2, 4, 7);
INSERT INTO friend_customer_links (channel_id, friend_id, customer_id, method)
SELECT c.channel_id, substr(c.external_id, 3)::bigint, c.id, 'api'
FROM customers c WHERE c.channel_id = :ch;
INSERT INTO orders (channel_id, shop_id, external_id, customer_id, currency,
    placed_at, paid_at, gross, current_total, revenue_state, net)
SELECT c.channel_id, c.shop_id, 'o-' || c.id || '-' || k, c.id, 'JPY',
    f.followed_at + (k * 9 + c.id % 13) * interval '1 day',
    f.followed_at + (k * 9 + c.id % 13) * interval '1 day',
    3000 + (c.id * 7 + k) % 9000, 3000 + (c.id * 7 + k) % 9000, 'counted',
    3000 + (c.id * 7 + k) % 9000
FROM customers c
JOIN friends f ON f.channel_id = c.channel_id
    AND f.id = substr(c.external_id, 3)::bigint
CROSS JOIN generate_series(1, 5) k
WHERE c.channel_id = :ch AND k <= 1 + c.id % 5;
-- Statistics first: the refresh is one set-based statement.
ANALYZE;
SELECT musubi_acq_orders_refresh_channel(:ch);
VACUUM ANALYZE;
SELECT (SELECT count(*) FROM friends) AS friends,
    (SELECT count(*) FROM acquisition_follows) AS follows,
    (SELECT count(*) FROM acquisition_touches) AS touches,
    (SELECT count(*) FROM acquisition_costs) AS costs,
    (SELECT count(*) FROM friend_customer_links) AS links,
    (SELECT count(*) FROM orders) AS orders;
SQL
say "generated in $((SECONDS - start))s: $(tail -n 3 "$OUT/gen.log" | head -n 1)"

FROM=$(date -d "$(TZ=Asia/Tokyo date +%F) -89 days" +%F)
TO=$(TZ=Asia/Tokyo date +%F)
URL="$BASE/api/v1/channels/bench/reports/acquisition?from=$FROM&to=$TO"

# Time one request; print seconds, fail on anything but 200.
timed() {
	local t code
	read -r code t < <(curl -s -o "$OUT/$2" -w '%{http_code} %{time_total}\n' \
		-H "Authorization: Bearer $KEY" "$1")
	[ "$code" = 200 ] || die "$1 answered $code: $(head -c 300 "$OUT/$2")"
	echo "$t"
}

say "report $FROM .. $TO, $RUNS runs"
times=()
for i in $(seq 1 "$RUNS"); do
	times+=("$(timed "$URL" report.json)")
	echo "  run $i: ${times[-1]} s"
done
csv=$(timed "${URL/acquisition\?/acquisition.csv?}" report.csv)
one=$(timed "$URL&source=src-7" report-one.json)
friends=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"]["friends"])' "$OUT/report.json")

echo
echo "machine:   $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "load:      $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, after the runs)"
echo "musubid:   $("$BUILD/musubid" -V)"
echo "friends in the report: $friends"
printf 'report JSON: %s\n' "$(printf '%s\n' "${times[@]}" | sort -n |
	awk '{ a[NR] = $1 } END { printf "min %.3f s, median %.3f s, max %.3f s", a[1], a[int((NR + 1) / 2)], a[NR] }')"
echo "report CSV:  $csv s; one source: $one s"
echo "output:      $OUT/"
