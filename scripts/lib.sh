# scripts/lib.sh -- small helpers shared by the scripts in this folder.
# Source it, do not run it:  . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sets MUSUBI_ROOT (the repository root, symlinks resolved) and defines:
#   step MSG      print a progress line "==> MSG"
#   note MSG      print an indented detail line
#   warn MSG      print "NAME: warning: MSG" on stderr
#   die MSG       print "NAME: MSG" on stderr and exit 1
#   ncpu          number of CPUs to build with
#   port_busy P   true if something accepts TCP connections on 127.0.0.1:P

MUSUBI_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
MUSUBI_SCRIPT=$(basename "$0" .sh)

step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$MUSUBI_SCRIPT" "$*" >&2; }
die() {
	printf '%s: %s\n' "$MUSUBI_SCRIPT" "$*" >&2
	exit 1
}

ncpu() {
	local n
	n=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
	[ "$n" -ge 1 ] 2>/dev/null || n=2
	printf '%s\n' "$n"
}

port_busy() {
	# bash's /dev/tcp: needs no ss/netstat, which a minimal Debian lacks.
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
