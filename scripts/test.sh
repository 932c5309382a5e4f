#!/usr/bin/env bash
# scripts/test.sh -- build musubi and run the whole test suite against a
# real, throwaway PostgreSQL.  This is what CI runs (.ci/run).
#
#   scripts/test.sh              both suites: build/ (RelWithDebInfo) and
#                                build-asan/ (Debug, ASan+UBSan), -Werror
#   scripts/test.sh --quick      build/ only, no sanitizer build
#   scripts/test.sh -L LABEL     only tests with this ctest label (unit,
#                                integration, ...)
#
# Steps: install missing packages (scripts/deps.sh), configure and build,
# start PostgreSQL (scripts/pg.sh start --fast; stopped again on exit unless
# it was running already; on the next free port when something else holds
# 55432 and MUSUBI_PG_PORT is unset), run ctest with
# MUSUBI_TEST_DATABASE_URL set, and print a summary of both runs.  Exits
# non-zero when anything failed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$MUSUBI_ROOT"

quick=0
labels=()
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 ;;
	-L)
		[ $# -ge 2 ] || die "-L needs a label"
		labels=(-L "$2")
		shift
		;;
	-L*) labels=(-L "${1#-L}") ;;
	-h | --help)
		sed -n '2,17s/^# \{0,1\}//p' "$0"
		exit 0
		;;
	*) die "unknown option: $1 (try --help)" ;;
	esac
	shift
done

jobs=$(ncpu)
started_at=$SECONDS
results=()
failed=0
build_failed=0

step "dependencies"
bash scripts/deps.sh

# Print the time since $1 (seconds since start) as "12s".
since() { printf '%ss' $((SECONDS - $1)); }

# Start PostgreSQL once, before the first ctest run; stop it on exit unless
# it was running already.
pg_ready=0
pg_was_running=0
stop_pg() {
	if [ "$pg_was_running" = 0 ]; then
		bash scripts/pg.sh stop || true
	fi
}
ensure_pg() {
	[ "$pg_ready" = 0 ] || return 0
	pg_ready=1
	step "PostgreSQL (scripts/pg.sh start --fast)"
	if bash scripts/pg.sh status >/dev/null 2>&1; then
		# The demo's, say: use it as it is, and leave it running.
		pg_was_running=1
		note "already running; using it as it is and leaving it running"
		MUSUBI_TEST_DATABASE_URL=$(bash scripts/pg.sh url)
	else
		if [ -z "${MUSUBI_PG_PORT:-}" ] && port_busy 55432; then
			# Another checkout's cluster (a demo, say) holds the
			# default port: take the next free one.
			local p
			for p in $(seq 55433 55531); do
				port_busy "$p" || break
			done
			export MUSUBI_PG_PORT=$p
			note "127.0.0.1:55432 is taken; using port $p"
		fi
		trap stop_pg EXIT
		trap 'exit 130' INT
		trap 'exit 143' TERM
		MUSUBI_TEST_DATABASE_URL=$(bash scripts/pg.sh start --fast)
		# Tests that restart PostgreSQL (scripts/pg.sh restart) keep the mode.
		export MUSUBI_PG_FAST=1
	fi
	export MUSUBI_TEST_DATABASE_URL
	MUSUBI_PG_PORT=$(sed -n 's/.*port=\([0-9]*\).*/\1/p' <<<"$MUSUBI_TEST_DATABASE_URL")
	export MUSUBI_PG_PORT
	note "MUSUBI_TEST_DATABASE_URL=$MUSUBI_TEST_DATABASE_URL"
}

# run_suite NAME BUILD_DIR [cmake -D options...]
# Configure, build and run ctest in BUILD_DIR; append a line to results.
run_suite() {
	local name=$1 dir=$2 t0=$SECONDS log summary rc
	shift 2
	step "configure $dir/ ($name)"
	mkdir -p "$dir"
	if ! cmake -S . -B "$dir" -DMUSUBI_WERROR=ON "$@" >"$dir/configure.log" 2>&1; then
		cat "$dir/configure.log"
		results+=("$name: FAILED to configure ($(since "$t0"))")
		failed=1
		build_failed=1
		return 0
	fi
	step "build $dir/ (-j$jobs)"
	if ! cmake --build "$dir" -j "$jobs"; then
		results+=("$name: FAILED to build ($(since "$t0"))")
		failed=1
		build_failed=1
		return 0
	fi
	ensure_pg
	step "ctest in $dir/${labels[*]:+ (${labels[*]})}"
	log=$dir/ctest.log
	set +e
	ctest --test-dir "$dir" --output-on-failure --no-tests=error -j2 \
		"${labels[@]}" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	set -e
	summary=$(grep -E 'tests passed, [0-9]+ tests? failed out of' "$log" | tail -n 1 || true)
	[ -n "$summary" ] || summary=$(grep -E 'No tests were found' "$log" | tail -n 1 || true)
	if [ "$rc" = 0 ]; then
		results+=("$name: passed: ${summary:-ctest ok} ($(since "$t0"))")
	else
		results+=("$name: FAILED: ${summary:-ctest exit $rc} ($(since "$t0"))")
		failed=1
	fi
}

run_suite "build (RelWithDebInfo)" build -DCMAKE_BUILD_TYPE=RelWithDebInfo

if [ "$build_failed" = 1 ]; then
	# The same errors again, only slower: not worth the wait.
	results+=("build-asan: skipped (build/ did not build)")
elif [ "$quick" = 0 ]; then
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	run_suite "build-asan (Debug, ASan+UBSan)" build-asan \
		-DCMAKE_BUILD_TYPE=Debug -DMUSUBI_SANITIZE=ON
	unset ASAN_OPTIONS UBSAN_OPTIONS
else
	results+=("build-asan: skipped (--quick)")
fi

step "summary ($(since "$started_at"))"
for r in "${results[@]}"; do
	note "$r"
done
if [ "$failed" != 0 ]; then
	echo "test: FAILED"
	exit 1
fi
echo "test: all passed"
