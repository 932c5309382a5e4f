#!/usr/bin/env bash
# scripts/pg.sh -- a throwaway PostgreSQL cluster for tests, the demo and
# the benchmarks.  Nothing here touches the system's own clusters.
#
#   scripts/pg.sh start [--fast]   init if needed, start, wait until ready,
#                                  print the conninfo (running already: just
#                                  apply the mode and print the conninfo)
#   scripts/pg.sh stop [--wipe]    stop (quiet when not running); --wipe also
#                                  deletes the cluster
#   scripts/pg.sh restart [--fast] stop and start again
#   scripts/pg.sh status           say whether it runs (exit 3 when not)
#   scripts/pg.sh url              print the libpq conninfo
#   scripts/pg.sh psql [ARGS]      psql on it (-d NAME picks another database)
#   scripts/pg.sh env              print PGBIN, PGDATA, PGHOST... as shell
#                                  assignments (for tests driving pg_ctl)
#
# The cluster lives in var/pg/ of this repository: data/ (PGDATA), sock/
# (unix socket), postgres.log.  It listens on 127.0.0.1, port
# $MUSUBI_PG_PORT (default 55432), trust authentication, superuser
# "postgres".  --fast (or MUSUBI_PG_FAST=1) turns off fsync,
# synchronous_commit and full_page_writes, for tests only; the default keeps
# them on because the benchmarks measure committed work.
#
# initdb and postgres refuse to run as root.  As root, this script runs them
# as the "postgres" user (runuser) on a data directory that user owns; when
# that user cannot reach the repository (a clone under /root, say), or the
# socket path would be too long, the cluster goes to /tmp/musubi-pg-<hash>/
# and var/pg is a symlink to it.  Any other user runs them directly.
#
# The settings live in PGDATA/musubi.conf (included by postgresql.conf), so a
# plain "pg_ctl -D PGDATA restart" keeps port, socket and mode.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$MUSUBI_ROOT
PORT=${MUSUBI_PG_PORT:-55432}
LINK=$ROOT/var/pg
PGUSER_NAME=postgres

case $PORT in
'' | *[!0-9]*) die "MUSUBI_PG_PORT must be a port number, not '$PORT'" ;;
esac

# --- binaries --------------------------------------------------------------

find_pgbin() {
	local d best=""
	if [ -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
		echo /usr/lib/postgresql/15/bin
		return 0
	fi
	# Otherwise the newest major installed.
	while IFS= read -r d; do
		[ -x "$d/pg_ctl" ] && best=$d
	done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
	[ -n "$best" ] || return 1
	echo "$best"
}
PGBIN=$(find_pgbin) || die "no PostgreSQL server found under /usr/lib/postgresql (run scripts/deps.sh)"

# --- who runs the server ---------------------------------------------------

if [ "$(id -u)" = 0 ]; then
	AS_ROOT=1
	id "$PGUSER_NAME" >/dev/null 2>&1 ||
		die "running as root needs the '$PGUSER_NAME' user (installed with postgresql-15)"
else
	AS_ROOT=0
fi

# Run a server-side command as the cluster's owner, from a directory that
# user can read (initdb and postgres complain about an unreadable cwd).
as_owner() {
	if [ "$AS_ROOT" = 1 ]; then
		(cd / && runuser -u "$PGUSER_NAME" -- "$@")
	else
		(cd / && "$@")
	fi
}

# True when the server's user can traverse into directory $1.
owner_can_reach() {
	if [ "$AS_ROOT" = 1 ]; then
		runuser -u "$PGUSER_NAME" -- test -x "$1" 2>/dev/null
	else
		test -x "$1"
	fi
}

# --- where the cluster lives -----------------------------------------------

tmp_cluster_dir() {
	local h
	h=$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)
	echo "/tmp/musubi-pg-$h"
}

# Resolve (and with $1 = create, make) the cluster directory; sets CLUSTER.
resolve_cluster() {
	local create=${1:-} alt sockpath
	if [ -L "$LINK" ]; then
		CLUSTER=$(readlink "$LINK")
	elif [ -d "$LINK" ]; then
		CLUSTER=$LINK
	else
		CLUSTER=""
	fi
	if [ -z "$CLUSTER" ] && [ "$create" = create ]; then
		mkdir -p "$ROOT/var"
		sockpath="$LINK/sock/.s.PGSQL.$PORT"
		# sun_path holds 107 bytes; stay well below.
		if [ ${#sockpath} -le 100 ] && owner_can_reach "$ROOT/var"; then
			mkdir -p "$LINK"
			CLUSTER=$LINK
		else
			alt=$(tmp_cluster_dir)
			ln -sfn "$alt" "$LINK"
			CLUSTER=$alt
		fi
	fi
	if [ -n "$CLUSTER" ] && [ "$create" = create ] && [ ! -d "$CLUSTER" ]; then
		# A symlink into /tmp outlives the /tmp it pointed at.
		mkdir -p "$CLUSTER"
	fi
	if [ -n "$CLUSTER" ] && [ -d "$CLUSTER" ]; then
		CLUSTER=$(cd "$CLUSTER" && pwd -P)
	fi
	PGDATA_DIR=${CLUSTER:+$CLUSTER/data}
	SOCKDIR=${CLUSTER:+$CLUSTER/sock}
	LOGFILE=${CLUSTER:+$CLUSTER/postgres.log}
}

# Give the cluster directory to the server's user, private.
own_cluster() {
	local want
	if [ "$AS_ROOT" = 1 ]; then
		want=$PGUSER_NAME
		case $CLUSTER in
		/tmp/*)
			# Never adopt a directory someone else planted in /tmp.
			local o
			o=$(stat -c %U "$CLUSTER")
			[ "$o" = root ] || [ "$o" = "$want" ] ||
				die "$CLUSTER belongs to '$o'; remove it or fix its owner"
			;;
		esac
		chown "$want:" "$CLUSTER"
	else
		want=$(id -un)
		[ "$(stat -c %U "$CLUSTER")" = "$want" ] ||
			die "$CLUSTER does not belong to $want"
	fi
	chmod 700 "$CLUSTER"
	mkdir -p "$SOCKDIR"
	[ "$AS_ROOT" = 1 ] && chown -R "$PGUSER_NAME:" "$SOCKDIR"
	chmod 700 "$SOCKDIR"
}

# --- state -------------------------------------------------------------------

initialized() { [ -n "${PGDATA_DIR:-}" ] && [ -f "$PGDATA_DIR/PG_VERSION" ]; }

is_running() {
	initialized || return 1
	as_owner "$PGBIN/pg_ctl" status -D "$PGDATA_DIR" >/dev/null 2>&1
}

# The port the running server listens on (line 4 of postmaster.pid), else
# the configured one.
current_port() {
	local p=""
	if is_running && [ -r "$PGDATA_DIR/postmaster.pid" ]; then
		p=$(sed -n 4p "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true)
	fi
	case $p in
	'' | *[!0-9]*) echo "$PORT" ;;
	*) echo "$p" ;;
	esac
}

conninfo() { echo "host=127.0.0.1 port=$1 user=postgres dbname=postgres"; }

# Parse start/restart options; true when the fast mode is asked for.
fast_mode() {
	local m=${MUSUBI_PG_FAST:-0} a
	for a in "$@"; do
		case $a in
		--fast) m=1 ;;
		*) die "unknown option: $a" ;;
		esac
	done
	[ "$m" = 1 ]
}

# Write PGDATA/musubi.conf for port $1 and mode $2 (fast|durable).  Returns
# 0 when the file changed.
write_conf() {
	local port=$1 mode=$2 tmp new
	if [ "$mode" = fast ]; then
		new="fsync = off
synchronous_commit = off
full_page_writes = off"
	else
		new="fsync = on
synchronous_commit = on
full_page_writes = on"
	fi
	tmp=$(mktemp "$PGDATA_DIR/musubi.conf.XXXXXX")
	cat >"$tmp" <<EOF
# Written by scripts/pg.sh on every start; edits are overwritten.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$SOCKDIR'
max_connections = 300
shared_buffers = 256MB
$new
EOF
	if [ "$AS_ROOT" = 1 ]; then
		chown "$PGUSER_NAME:" "$tmp"
	fi
	chmod 600 "$tmp"
	if cmp -s "$tmp" "$PGDATA_DIR/musubi.conf" 2>/dev/null; then
		rm -f "$tmp"
		return 1
	fi
	mv -f "$tmp" "$PGDATA_DIR/musubi.conf"
	return 0
}

show_log_tail() {
	if [ -n "${LOGFILE:-}" ] && [ -f "$LOGFILE" ]; then
		echo "--- last lines of $LOGFILE:" >&2
		tail -n 40 "$LOGFILE" >&2
		echo "---" >&2
	fi
}

wait_ready() {
	local port=$1 i
	for i in $(seq 1 120); do
		if "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
			return 0
		fi
		is_running || return 1
		sleep 0.5
	done
	return 1
}

# Serialize start/stop/restart between concurrent callers.  The descriptor
# is closed for pg_ctl, so the server does not inherit (and hold) the lock.
take_lock() {
	mkdir -p "$ROOT/var"
	exec 9>"$ROOT/var/.pg.lock"
	flock -w 120 9 || die "another scripts/pg.sh is busy (var/.pg.lock)"
}

# --- commands ----------------------------------------------------------------

cmd_start() {
	local mode=durable port
	fast_mode "$@" && mode=fast
	take_lock
	resolve_cluster create
	own_cluster

	if is_running; then
		port=$(current_port)
		if write_conf "$port" "$mode"; then
			as_owner "$PGBIN/pg_ctl" reload -s -D "$PGDATA_DIR" 9>&- >/dev/null
		fi
		[ "$port" = "$PORT" ] ||
			warn "already running on port $port, not $PORT (scripts/pg.sh restart moves it)"
		conninfo "$port"
		return 0
	fi

	if ! initialized; then
		if [ -e "$PGDATA_DIR" ]; then
			rm -rf "$PGDATA_DIR" # a half-made data dir from an interrupted init
		fi
		if ! as_owner "$PGBIN/initdb" -D "$PGDATA_DIR" -A trust -U postgres \
			--no-sync -E UTF8 --locale=C --no-instructions \
			>"$CLUSTER/initdb.log" 2>&1; then
			cat "$CLUSTER/initdb.log" >&2
			die "initdb failed"
		fi
		as_owner sh -c "echo \"include_if_exists = 'musubi.conf'\" >>\"\$1/postgresql.conf\"" \
			sh "$PGDATA_DIR"
	fi
	local have want
	have=$(cat "$PGDATA_DIR/PG_VERSION")
	want=$(basename "$(dirname "$PGBIN")")
	[ "$have" = "$want" ] ||
		die "the cluster in $CLUSTER is PostgreSQL $have, the server is $want: scripts/pg.sh stop --wipe"

	write_conf "$PORT" "$mode" || true
	if port_busy "$PORT"; then
		die "something else listens on 127.0.0.1:$PORT; set MUSUBI_PG_PORT to another port"
	fi
	if ! as_owner "$PGBIN/pg_ctl" start -D "$PGDATA_DIR" -l "$LOGFILE" -w -t 60 -s 9>&- </dev/null; then
		show_log_tail
		die "PostgreSQL did not start"
	fi
	if ! wait_ready "$PORT"; then
		show_log_tail
		die "PostgreSQL started but does not accept connections"
	fi
	conninfo "$PORT"
}

cmd_stop() {
	local wipe=0 a
	for a in "$@"; do
		case $a in
		--wipe) wipe=1 ;;
		*) die "stop: unknown option $a" ;;
		esac
	done
	take_lock
	resolve_cluster
	if is_running; then
		if ! as_owner "$PGBIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 60 -s 9>&-; then
			show_log_tail
			die "PostgreSQL did not stop"
		fi
	fi
	if [ "$wipe" = 1 ]; then
		if [ -n "${CLUSTER:-}" ] && [ -d "$CLUSTER" ]; then
			case $CLUSTER in
			"$ROOT"/var/* | /tmp/musubi-pg-*) rm -rf -- "$CLUSTER" ;;
			*) die "refusing to delete $CLUSTER" ;;
			esac
		fi
		if [ -L "$LINK" ]; then
			rm -f -- "$LINK"
		fi
	fi
}

cmd_restart() {
	local mode=durable
	fast_mode "$@" && mode=fast
	resolve_cluster
	if ! is_running; then
		cmd_start "$@"
		return
	fi
	take_lock
	own_cluster
	write_conf "$PORT" "$mode" || true
	if ! as_owner "$PGBIN/pg_ctl" restart -D "$PGDATA_DIR" -l "$LOGFILE" -m fast -w -t 60 -s 9>&- </dev/null; then
		show_log_tail
		die "PostgreSQL did not restart"
	fi
	if ! wait_ready "$PORT"; then
		show_log_tail
		die "PostgreSQL restarted but does not accept connections"
	fi
	conninfo "$PORT"
}

cmd_status() {
	resolve_cluster
	if is_running; then
		echo "running: $(conninfo "$(current_port)") data=$PGDATA_DIR"
		return 0
	fi
	if initialized; then
		echo "stopped (data in $PGDATA_DIR)"
	else
		echo "not initialized"
	fi
	return 3
}

cmd_url() {
	resolve_cluster
	conninfo "$(current_port)"
}

cmd_psql() {
	resolve_cluster
	PGHOST=127.0.0.1 PGPORT=$(current_port) PGUSER=postgres PGDATABASE=postgres \
		exec "$PGBIN/psql" -X "$@"
}

cmd_env() {
	resolve_cluster
	printf 'PGBIN=%q\n' "$PGBIN"
	printf 'PGDATA=%q\n' "${PGDATA_DIR:-}"
	printf 'PGHOST=127.0.0.1\nPGPORT=%s\nPGUSER=postgres\n' "$(current_port)"
	printf 'PG_OWNER=%q\n' "$([ "$AS_ROOT" = 1 ] && echo "$PGUSER_NAME" || id -un)"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
restart) cmd_restart "$@" ;;
status) cmd_status ;;
url) cmd_url ;;
psql) cmd_psql "$@" ;;
env) cmd_env ;;
-h | --help | help) sed -n '2,33s/^# \{0,1\}//p' "$0" ;;
*)
	echo "usage: scripts/pg.sh start [--fast] | stop [--wipe] | restart [--fast] | status | url | psql [ARGS] | env" >&2
	exit 2
	;;
esac
