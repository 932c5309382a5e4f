#!/usr/bin/env bash
# SPDX-License-Identifier: ISC
# bench/http_bench.sh -- HTTP throughput and latency of musubid's foundation.
#
# Builds musubid and musubictl in Release mode (build-bench/), starts a
# throwaway PostgreSQL with scripts/pg.sh (or, if that script is missing or
# fails, a private cluster in a temporary directory, the way
# tests/integration/musubi_test.py's PgCluster does), creates a scratch
# database, runs musubid on a free 127.0.0.1 port with log_level=warn,
# creates an admin API key (musubictl) and one channel, then runs wrk:
#
#   1. GET /healthz                                  (no database work)
#   2. GET /api/v1/channels with a Bearer API key    (key check + one query)
#
# each for BENCH_DURATION (default 15s) with BENCH_CONNECTIONS (64)
# connections on BENCH_THREADS (2) threads, --latency for the percentiles.
# Finally it reads process_resident_memory_bytes from /metrics, prints a
# summary and stops everything it started (musubid, the scratch database,
# and PostgreSQL if this script started it).
#
# Usage: bench/http_bench.sh [--keep-pg] [--no-build]
#   --keep-pg   leave a PostgreSQL this script started running
#   --no-build  use the binaries already in build-bench/
# Environment: BENCH_DURATION, BENCH_CONNECTIONS, BENCH_THREADS,
#   MUSUBI_BENCH_BUILD (build directory), MUSUBI_PG_PORT (scripts/pg.sh).
# Raw wrk output is kept in $BENCH_OUT (default build-bench/bench-out/).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD=${MUSUBI_BENCH_BUILD:-$ROOT/build-bench}
OUT=${BENCH_OUT:-$BUILD/bench-out}
DURATION=${BENCH_DURATION:-15s}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
KEEP_PG=0
BUILD_IT=1

for a in "$@"; do
	case $a in
	--keep-pg) KEEP_PG=1 ;;
	--no-build) BUILD_IT=0 ;;
	-h | --help)
		sed -n '3,27p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "http_bench: unknown option $a" >&2
		exit 2
		;;
	esac
done

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'http_bench: %s\n' "$*" >&2
	exit 1
}

command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
command -v curl >/dev/null || die "curl is not installed"
command -v psql >/dev/null || die "psql is not installed (postgresql-client)"

MUSUBID_PID=""
PG_STARTED=""		# "script" or "private" when we started it
PRIVATE_DIR=""
PGURL=""
DBNAME="musubi_bench_$$"
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
		for _ in $(seq 1 100); do
			kill -0 "$MUSUBID_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$MUSUBID_PID" 2>/dev/null && kill -KILL "$MUSUBID_PID"
		wait "$MUSUBID_PID" 2>/dev/null
	fi
	if [ "$DB_CREATED" = 1 ]; then
		psql -X -q -d "$PGURL" -c "DROP DATABASE IF EXISTS $DBNAME WITH (FORCE)" >/dev/null 2>&1
	fi
	case $PG_STARTED in
	script)
		[ "$KEEP_PG" = 1 ] || "$ROOT/scripts/pg.sh" stop >/dev/null 2>&1
		;;
	private)
		as_pg_owner "$(pgbin)/pg_ctl" -D "$PRIVATE_DIR/data" -m immediate -w stop >/dev/null 2>&1
		rm -rf "$PRIVATE_DIR"
		;;
	esac
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build -------------------------------------------------------------------

if [ "$BUILD_IT" = 1 ]; then
	say "building Release in $BUILD"
	cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
		-DMUSUBI_TESTS=OFF >/dev/null
	cmake --build "$BUILD" -j"$(nproc)" --target musubid musubictl >/dev/null
fi
[ -x "$BUILD/musubid" ] && [ -x "$BUILD/musubictl" ] ||
	die "no musubid/musubictl in $BUILD"
mkdir -p "$OUT"

# ---- PostgreSQL ----------------------------------------------------------------

start_private_pg() {
	local bin port
	bin=$(pgbin)
	PRIVATE_DIR=$(mktemp -d /tmp/musubi-bench-pg.XXXXXX)
	port=$(free_port)
	if [ "$(id -u)" = 0 ]; then
		chmod 755 "$PRIVATE_DIR"
		chown postgres: "$PRIVATE_DIR"
	fi
	as_pg_owner "$bin/initdb" -D "$PRIVATE_DIR/data" -A trust -U postgres \
		--no-sync -E UTF8 --locale=C >/dev/null
	as_pg_owner sh -c "printf '%s\n' \"port = $port\" \
\"listen_addresses = '127.0.0.1'\" \
\"unix_socket_directories = '$PRIVATE_DIR'\" \
'max_connections = 200' >>\"$PRIVATE_DIR/data/postgresql.conf\""
	as_pg_owner "$bin/pg_ctl" -D "$PRIVATE_DIR/data" -w \
		-l "$PRIVATE_DIR/log" start >/dev/null
	PG_STARTED=private
	PGURL="host=127.0.0.1 port=$port user=postgres dbname=postgres"
}

if [ -x "$ROOT/scripts/pg.sh" ]; then
	was_running=0
	"$ROOT/scripts/pg.sh" status >/dev/null 2>&1 && was_running=1
	if PGURL=$("$ROOT/scripts/pg.sh" start 2>"$OUT/pg.err" | tail -n 1) &&
		[ -n "$PGURL" ]; then
		[ "$was_running" = 1 ] || PG_STARTED=script
		say "PostgreSQL from scripts/pg.sh: $PGURL"
	else
		say "scripts/pg.sh failed ($(tail -n 1 "$OUT/pg.err")); starting a private cluster"
		start_private_pg
	fi
else
	say "no scripts/pg.sh; starting a private cluster"
	start_private_pg
fi
[ "$PG_STARTED" = private ] && say "private PostgreSQL: $PGURL"

psql -X -q -d "$PGURL" -c "CREATE DATABASE $DBNAME" >/dev/null
DB_CREATED=1
DBURL=$(printf '%s\n' "$PGURL" | sed "s/dbname=[^ ]*/dbname=$DBNAME/")

# ---- musubid -------------------------------------------------------------------

PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
say "starting musubid on 127.0.0.1:$PORT"
MUSUBI_DATABASE_URL="$DBURL" MUSUBI_LISTEN="127.0.0.1:$PORT" \
	MUSUBI_LOG_LEVEL=warn "$BUILD/musubid" >"$OUT/musubid.log" 2>&1 &
MUSUBID_PID=$!
for _ in $(seq 1 200); do
	curl -fs -o /dev/null "$BASE/healthz" && break
	kill -0 "$MUSUBID_PID" 2>/dev/null || {
		cat "$OUT/musubid.log" >&2
		die "musubid exited"
	}
	sleep 0.1
done
curl -fs -o /dev/null "$BASE/readyz" || die "musubid is not ready"

KEY=$("$BUILD/musubictl" -d "$DBURL" apikey create --name bench \
	--scope admin 2>/dev/null)
[ -n "$KEY" ] || die "musubictl apikey create failed"
code=$(curl -s -o "$OUT/channel.json" -w '%{http_code}' \
	-H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
	-d '{"slug":"bench","name":"Bench shop","channel_secret":"bench-secret"}' \
	"$BASE/api/v1/channels")
[ "$code" = 201 ] || die "creating the channel answered $code: $(cat "$OUT/channel.json")"

# ---- load ----------------------------------------------------------------------

run_wrk() {
	local name=$1
	shift
	say "wrk $name: -t$THREADS -c$CONNS -d$DURATION --latency ${*//$KEY/msk_...}"
	wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" >"$OUT/$name.txt"
}

run_wrk healthz "$BASE/healthz"
run_wrk channels -H "Authorization: Bearer $KEY" "$BASE/api/v1/channels"

RSS=$(curl -fs "$BASE/metrics" | awk '$1 == "process_resident_memory_bytes" { print $2 }')

# ---- report --------------------------------------------------------------------

# Print "rps p50 p99 non2xx errors" from one wrk output.
summarize() {
	awk '
	/Requests\/sec:/ { rps = $2 }
	/^ +50%/ { p50 = $2 }
	/^ +99%/ { p99 = $2 }
	/Non-2xx or 3xx responses:/ { non2xx = $NF }
	/Socket errors:/ { errs = $0; sub(/.*Socket errors: */, "", errs) }
	END {
		printf "%s %s %s %s %s\n", rps, p50, p99, non2xx + 0,
		    errs == "" ? "none" : errs
	}' "$1"
}

echo
echo "machine:  $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, after the run)"
echo "musubid:  $("$BUILD/musubid" -V)"
printf '%-10s %12s %10s %10s %8s  %s\n' test req/s p50 p99 non-2xx "socket errors"
for t in healthz channels; do
	read -r rps p50 p99 non2xx errs <<<"$(summarize "$OUT/$t.txt")"
	printf '%-10s %12s %10s %10s %8s  %s\n' "$t" "$rps" "$p50" "$p99" "$non2xx" "$errs"
done
echo "RSS after the run: $RSS bytes ($((RSS / 1024 / 1024)) MiB)"
echo "raw wrk output: $OUT/"
