#!/usr/bin/env bash
# Stops the local cluster that up.sh started in STATE_DIR and deletes STATE_DIR.
#
#   usage: down.sh STATE_DIR
#
# Only processes named by STATE_DIR/pids/*.pid (or, for the control plane, whose
# arguments point into STATE_DIR) are signalled: TERM, then KILL after 20 s.
# Pid files that other tools left there (e.g. hack/demo.sh's operator) count too,
# as long as the process is older than its pid file. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

if [[ $# -ne 1 || -z $1 ]]; then
	echo "usage: $0 STATE_DIR" >&2
	exit 2
fi
if [[ ! -e $1 ]]; then
	echo "no cluster in $1 (nothing to do)"
	exit 0
fi
state=$(resolve_state_dir "$1")
if [[ ! -e $state/$MARKER ]]; then
	if [[ -d $state && -z $(ls -A "$state") ]]; then
		rmdir "$state"
		exit 0
	fi
	echo "error: $state was not made by up.sh (no $MARKER in it); not touching it" >&2
	exit 1
fi

lock_state "$state"
stop_extra "$state"
stop_all "$state"
rm -rf -- "$state"
echo "cluster in $state stopped and removed"
