#!/usr/bin/env bash
# Restarts the local cluster's kube-apiserver in place: TERM, wait for it to exit,
# start it again with the same command line, wait for /readyz. For tests of how clients
# (the operator) recover from an API server restart.
#
#   usage: restart-apiserver.sh STATE_DIR [SECONDS_DOWN] [-- FLAG...]
#
# SECONDS_DOWN (default 0): how long the API server stays down before it starts again.
# FLAGs are added to the command line up.sh started it with (e.g. a --runtime-config
# that switches an API off); a restart without FLAGs starts it as up.sh did again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

if [[ $# -lt 1 || -z $1 ]]; then
	echo "usage: $0 STATE_DIR [SECONDS_DOWN]" >&2
	exit 2
fi
state=$(resolve_state_dir "$1")
shift
down=0
if [[ $# -gt 0 && $1 != -- ]]; then
	down=$1
	shift
fi
[[ ${1:-} == -- ]] && shift
extra=("$@")
pid=$(component_pid "$state" kube-apiserver) || {
	echo "error: no kube-apiserver of $state is running" >&2
	exit 1
}
# The command line up.sh started it with, NUL-separated, and the binary: read from the
# process at the first restart and kept (up.sh removes it when it starts a new one), so
# that FLAGs added by one restart are gone at the next.
base=$state/kube-apiserver.argv
if [[ ! -s $base ]]; then
	cp "/proc/$pid/cmdline" "$base.tmp" && mv "$base.tmp" "$base"
fi
mapfile -d '' argv <"$base"
argv[0]=$(readlink "/proc/$pid/exe")
argv+=("${extra[@]}")
log "stopping kube-apiserver (pid $pid)"
kill -TERM "$pid"
# It drains open requests and watches on TERM; past 10 s it is killed, as a crash.
for _ in $(seq 1 100); do
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
	kill -KILL "$pid"
fi
sleep "$down"
log "starting kube-apiserver again"
echo "==== $(date -u +%FT%TZ) restart-apiserver.sh starting kube-apiserver" >>"$state/logs/kube-apiserver.log"
setsid "${argv[@]}" >>"$state/logs/kube-apiserver.log" 2>&1 </dev/null 9>&- &
echo $! >"$state/pids/kube-apiserver.pid"
# shellcheck disable=SC1091 # written by up.sh
source "$state/ports.env"
for _ in $(seq 1 600); do
	if curl -sf --max-time 2 --cacert "$state/pki/ca.crt" --cert "$state/pki/admin.crt" \
		--key "$state/pki/admin.key" "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null; then
		log "kube-apiserver ready again"
		exit 0
	fi
	sleep 0.1
done
echo "error: kube-apiserver did not become ready within 60 s; see $state/logs/kube-apiserver.log" >&2
exit 1
