#!/usr/bin/env bash
# scripts/deps.sh -- install the Debian 12 packages musubi needs to build,
# test and run, and nothing when they are all there already (not even an
# "apt-get update").
#
#   scripts/deps.sh            build, test and run (compiler, libraries,
#                              cmocka, PostgreSQL 15, python3, curl)
#   scripts/deps.sh --bench    also wrk and hyperfine
#   scripts/deps.sh --fuzz     also clang and libFuzzer's runtime
#   scripts/deps.sh --check    only report; exit 1 when something is missing
#
# Installing needs root: it uses sudo when run by another user and sudo
# exists. apt's output goes to var/deps.log, shown only when apt fails.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pkgs=(gcc libc6-dev make cmake pkg-config
	libevent-dev libpq-dev libcurl4-openssl-dev libjansson-dev libssl-dev
	libcmocka-dev postgresql-15 postgresql-client-15 python3 curl
	ca-certificates)
check_only=0

while [ $# -gt 0 ]; do
	case $1 in
	--bench) pkgs+=(wrk hyperfine) ;;
	--fuzz) pkgs+=(clang libclang-rt-14-dev) ;;
	--check) check_only=1 ;;
	-h | --help)
		sed -n '2,14s/^# \{0,1\}//p' "$0"
		exit 0
		;;
	*) die "unknown option: $1 (try --help)" ;;
	esac
	shift
done

missing=()
for p in "${pkgs[@]}"; do
	st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$st" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: all present"
	exit 0
fi
if [ "$check_only" = 1 ]; then
	echo "deps: missing: ${missing[*]}"
	exit 1
fi

if [ "$(id -u)" = 0 ]; then
	asroot=(env)
elif command -v sudo >/dev/null 2>&1; then
	asroot=(sudo env)
else
	die "missing packages and not root (no sudo either); as root run:
    apt-get update && apt-get install -y ${missing[*]}"
fi

echo "deps: installing: ${missing[*]}"
mkdir -p "$MUSUBI_ROOT/var"
log=$MUSUBI_ROOT/var/deps.log
: >"$log"
apt=("${asroot[@]}" DEBIAN_FRONTEND=noninteractive apt-get -q -y
	-o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)

if ! "${apt[@]}" update >>"$log" 2>&1; then
	# A stale mirror should not stop an install the cached lists allow.
	warn "apt-get update failed (see $log); trying the install anyway"
fi
if ! "${apt[@]}" install "${missing[@]}" </dev/null >>"$log" 2>&1; then
	tail -n 30 "$log" >&2
	die "apt-get install failed; full log: $log"
fi

still=()
for p in "${missing[@]}"; do
	st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$st" = installed ] || still+=("$p")
done
[ ${#still[@]} -eq 0 ] || die "still missing after install: ${still[*]} (see $log)"
echo "deps: installed ${#missing[@]} package(s)"
