#!/usr/bin/env bash
# scripts/demo.sh -- run musubi on this machine: install what is missing,
# build, start a throwaway PostgreSQL and musubid (and line-sandbox, the
# local stand-in for the LINE API, when it is built), then show what it
# answers.
#
#   scripts/demo.sh          (re)start the demo and leave it running
#   scripts/demo.sh stop     stop musubid, line-sandbox and PostgreSQL
#   scripts/demo.sh status   say what runs
#
# Environment: MUSUBI_DEMO_PORT (musubid, default 8080),
# MUSUBI_DEMO_SANDBOX_PORT (line-sandbox, default 8090), MUSUBI_PG_PORT
# (PostgreSQL, default 55432).  Logs and pid files go to var/demo/.
#
# The demo is a list of steps (demo_* functions) run in order by
# demo_start; a new step is a new function added to that list.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$MUSUBI_ROOT"

DEMO_DIR=$MUSUBI_ROOT/var/demo
BUILD_DIR=$MUSUBI_ROOT/build
HTTP_PORT=${MUSUBI_DEMO_PORT:-8080}
SANDBOX_PORT=${MUSUBI_DEMO_SANDBOX_PORT:-8090}
MUSUBI_URL=http://127.0.0.1:$HTTP_PORT
SANDBOX_URL=http://127.0.0.1:$SANDBOX_PORT
DEMO_DB=musubi_demo
MUSUBID_LOG=$DEMO_DIR/musubid.log
MUSUBID_PID=$DEMO_DIR/musubid.pid
SANDBOX_LOG=$DEMO_DIR/line-sandbox.log
SANDBOX_PID=$DEMO_DIR/line-sandbox.pid
URL_FILE=$DEMO_DIR/urls
CONF_SAMPLE=$MUSUBI_ROOT/etc/musubid.conf.sample

# Filled in by the steps.
DATABASE_URL=""
SANDBOX_RUNNING=0

# --- helpers -----------------------------------------------------------------

# The pid in pid file $1 when that process is alive and runs program $2.
live_pid() {
	local pid
	[ -f "$1" ] || return 1
	pid=$(cat "$1" 2>/dev/null || true)
	case $pid in '' | *[!0-9]*) return 1 ;; esac
	kill -0 "$pid" 2>/dev/null || return 1
	# A recycled pid must not be killed for ours.
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" || return 1
	echo "$pid"
}

# Stop the process of pid file $1 (program $2): SIGTERM, then SIGKILL after
# 15 seconds.
stop_pidfile() {
	local pid i
	if pid=$(live_pid "$1" "$2"); then
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 1 150); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			warn "$2 (pid $pid) ignored SIGTERM for 15s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		note "stopped $2 (pid $pid)"
	fi
	rm -f "$1"
}

# Start program $1 in the background with log $2 and pid file $3; the rest
# is the command line (with optional leading VAR=value assignments).
spawn() {
	local name=$1 log=$2 pidfile=$3
	shift 3
	: >"$log"
	nohup env "$@" >>"$log" 2>&1 </dev/null &
	echo $! >"$pidfile"
	note "started $name (pid $!, log ${log#"$MUSUBI_ROOT"/})"
}

show_log_tail() {
	echo "--- last lines of $1:" >&2
	tail -n 40 "$1" >&2 || true
	echo "---" >&2
}

# Wait until GET $1 answers anything (the process in pid file $2, program
# $3, must stay alive meanwhile).
wait_http() {
	local url=$1 pidfile=$2 prog=$3 i
	for i in $(seq 1 150); do
		if curl -s -o /dev/null --max-time 2 "$url"; then
			return 0
		fi
		live_pid "$pidfile" "$prog" >/dev/null || return 1
		sleep 0.2
	done
	return 1
}

# Print the status and the first lines of GET PATH from musubid, minus
# the lines matching the extended regex OMIT (if given).
# Usage: show_http PATH [max-lines [OMIT]]
show_http() {
	local path=$1 max=${2:-20} omit=${3:-} out code body n
	out=$(curl -sS --max-time 10 -w '\n%{http_code}' "$MUSUBI_URL$path" 2>&1) || true
	code=${out##*$'\n'}
	body=${out%$'\n'*}
	body=${body%$'\n'}
	if [ -n "$omit" ]; then
		body=$(printf '%s\n' "$body" | grep -Ev -- "$omit" || true)
	fi
	printf '\n$ curl %s%s    -> HTTP %s\n' "$MUSUBI_URL" "$path" "$code"
	printf '%s\n' "$body" | head -n "$max"
	n=$(printf '%s\n' "$body" | wc -l)
	if [ "$n" -gt "$max" ]; then
		echo "... ($((n - max)) more lines${omit:+, histogram buckets not shown})"
	fi
}

# musubictl against the demo database (for the steps to come).
ctl() { MUSUBI_DATABASE_URL=$DATABASE_URL "$BUILD_DIR/musubictl" "$@"; }

# --- steps -------------------------------------------------------------------

demo_stop_previous() {
	if live_pid "$MUSUBID_PID" musubid >/dev/null ||
		live_pid "$SANDBOX_PID" line-sandbox >/dev/null; then
		step "stop the previous demo"
		stop_pidfile "$MUSUBID_PID" musubid
		stop_pidfile "$SANDBOX_PID" line-sandbox
	fi
	mkdir -p "$DEMO_DIR"
}

demo_deps() {
	step "dependencies"
	bash scripts/deps.sh
}

demo_build() {
	local targets=(musubid musubictl)
	step "build $(basename "$BUILD_DIR")/ (-j$(ncpu))"
	cmake -S . -B "$BUILD_DIR" >"$DEMO_DIR/cmake.log" 2>&1 || {
		cat "$DEMO_DIR/cmake.log" >&2
		die "cmake configure failed"
	}
	if [ -d tools/line-sandbox ] && ls tools/line-sandbox/*.c >/dev/null 2>&1; then
		targets+=(line-sandbox)
	fi
	cmake --build "$BUILD_DIR" -j "$(ncpu)" --target "${targets[@]}"
}

demo_postgres() {
	step "PostgreSQL (scripts/pg.sh start)"
	local base
	base=$(bash scripts/pg.sh start)
	DATABASE_URL=${base/dbname=postgres/dbname=$DEMO_DB}
	if [ "$(bash scripts/pg.sh psql -tAc "select 1 from pg_database where datname = '$DEMO_DB'")" != 1 ]; then
		bash scripts/pg.sh psql -q -c "create database $DEMO_DB"
		note "created database $DEMO_DB"
	fi
	note "$DATABASE_URL"
}

demo_sandbox() {
	[ -x "$BUILD_DIR/line-sandbox" ] || return 0
	step "line-sandbox on $SANDBOX_URL"
	if port_busy "$SANDBOX_PORT"; then
		die "127.0.0.1:$SANDBOX_PORT is taken; set MUSUBI_DEMO_SANDBOX_PORT"
	fi
	spawn line-sandbox "$SANDBOX_LOG" "$SANDBOX_PID" \
		"$BUILD_DIR/line-sandbox" -l "127.0.0.1:$SANDBOX_PORT"
	if ! wait_http "$SANDBOX_URL/" "$SANDBOX_PID" line-sandbox; then
		show_log_tail "$SANDBOX_LOG"
		die "line-sandbox did not come up"
	fi
	SANDBOX_RUNNING=1
}

demo_musubid() {
	local args=() envs
	step "musubid on $MUSUBI_URL"
	if port_busy "$HTTP_PORT"; then
		die "127.0.0.1:$HTTP_PORT is taken; set MUSUBI_DEMO_PORT"
	fi
	[ -f "$CONF_SAMPLE" ] && args+=(-f "$CONF_SAMPLE")
	envs=(MUSUBI_DATABASE_URL="$DATABASE_URL"
		MUSUBI_LISTEN="127.0.0.1:$HTTP_PORT")
	if [ "$SANDBOX_RUNNING" = 1 ]; then
		envs+=(MUSUBI_LINE_API_BASE="$SANDBOX_URL")
	fi
	spawn musubid "$MUSUBID_LOG" "$MUSUBID_PID" \
		"${envs[@]}" "$BUILD_DIR/musubid" "${args[@]}"
	if ! wait_http "$MUSUBI_URL/healthz" "$MUSUBID_PID" musubid; then
		show_log_tail "$MUSUBID_LOG"
		die "musubid did not answer GET /healthz"
	fi
	printf 'MUSUBI_URL=%s\nSANDBOX_URL=%s\n' "$MUSUBI_URL" "$SANDBOX_URL" >"$URL_FILE"
}

demo_health() {
	step "what musubid answers"
	show_http /healthz
	show_http /readyz
	show_http /metrics 20 '_bucket\{|^# TYPE'
}

demo_summary() {
	local sb=""
	[ "$SANDBOX_RUNNING" = 1 ] && sb="
  line-sandbox  $SANDBOX_URL  (log: ${SANDBOX_LOG#"$MUSUBI_ROOT"/})"
	cat <<EOF

==> musubi is running
  musubid       $MUSUBI_URL  (/healthz /readyz /metrics)
  log           ${MUSUBID_LOG#"$MUSUBI_ROOT"/}$sb
  PostgreSQL    $DATABASE_URL
                (scripts/pg.sh psql -d $DEMO_DB)
  admin API key MUSUBI_DATABASE_URL='$DATABASE_URL' \\
                  build/musubictl apikey create --name me --scope admin
  stop it all   scripts/demo.sh stop
EOF
}

demo_start() {
	demo_stop_previous
	demo_deps
	demo_build
	demo_postgres
	demo_sandbox
	demo_musubid
	demo_health
	# Later steps go here, e.g. demo_channel, demo_webhooks, demo_segments,
	# demo_campaign, demo_reports.
	demo_summary
}

demo_stop() {
	step "stop the demo"
	stop_pidfile "$MUSUBID_PID" musubid
	stop_pidfile "$SANDBOX_PID" line-sandbox
	rm -f "$URL_FILE"
	bash scripts/pg.sh stop
	note "stopped"
}

demo_status() {
	local pid
	if [ -f "$URL_FILE" ]; then
		MUSUBI_URL=$(sed -n 's/^MUSUBI_URL=//p' "$URL_FILE")
		SANDBOX_URL=$(sed -n 's/^SANDBOX_URL=//p' "$URL_FILE")
	fi
	if pid=$(live_pid "$MUSUBID_PID" musubid); then
		echo "musubid: running (pid $pid) on $MUSUBI_URL"
	else
		echo "musubid: not running"
	fi
	if pid=$(live_pid "$SANDBOX_PID" line-sandbox); then
		echo "line-sandbox: running (pid $pid) on $SANDBOX_URL"
	fi
	printf 'PostgreSQL: '
	bash scripts/pg.sh status || true
}

case ${1:-start} in
start) demo_start ;;
stop) demo_stop ;;
status) demo_status ;;
-h | --help | help) sed -n '2,17s/^# \{0,1\}//p' "$0" ;;
*)
	echo "usage: scripts/demo.sh [start|stop|status]" >&2
	exit 2
	;;
esac
