# shellcheck shell=bash
# What the benchmark scripts in hack/ (bench-*.sh) share: the local control plane, the
# release build, an operator process, polling, CPU and memory of a process, the rows
# they print, and the objects several of them create. Sourced, never run:
#
#   set -euo pipefail
#   cluster_dir=${1:?usage: bench-x.sh <cluster-dir>}
#   source "$(dirname "$0")/lib/bench.sh"
#
# Sourcing it enters the repository's root, since the scripts name files from there
# (crds/, config/samples/, target/), as each of them did before. Functions take their
# inputs as arguments; the few globals they set are named where they are set: root,
# KUBECONFIG, target, operator_bin, operator, operator_log, bench_hz, bench_cpu.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit
bench_name=$(basename "$0" .sh)
bench_hz=$(getconf CLK_TCK) # clock ticks per second, the unit of /proc/PID/stat
operator="" operator_log=""
declare -A bench_cpu

# --- failing and polling --------------------------------------------------------------

# bench_fail MESSAGE: print it, naming the script and where its logs are, and exit.
bench_fail() {
	echo "$bench_name: $1; logs in ${cluster_dir:-.}/logs" >&2
	exit 1
}

# bench_poll [--every SECONDS] TIMEOUT WHAT COMMAND...: run COMMAND (output discarded)
# every 0.2 s (or --every) until it succeeds; after TIMEOUT seconds fail, naming WHAT.
bench_poll() {
	local every=0.2
	if [[ $1 == --every ]]; then
		every=$2
		shift 2
	fi
	local deadline=$((SECONDS + $1)) what=$2
	shift 2
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || bench_fail "gave up waiting for $what"
		sleep "$every"
	done
}

# --- the cluster and the build ------------------------------------------------------

# bench_cluster_up: start the local control plane in $cluster_dir (or check it is up)
# with the port variables of the environment or those it last ran with; make
# cluster_dir absolute and export KUBECONFIG for everything after.
bench_cluster_up() {
	tools/cluster/up.sh "$cluster_dir" >/dev/null
	cluster_dir=$(cd "$cluster_dir" && pwd)
	export KUBECONFIG=$cluster_dir/kubeconfig
	mkdir -p "$cluster_dir/logs" "$cluster_dir/pids"
}

# bench_build_release: the release operator, built once per run however often called;
# sets target (cargo's target directory) and operator_bin.
bench_build_release() {
	target=${CARGO_TARGET_DIR:-target}
	operator_bin=$target/release/enclave-operator
	[[ -n ${bench_built:-} ]] && return
	cargo build --quiet --release --bin enclave-operator
	bench_built=yes
}

# bench_namespace NAME [KEY=VALUE...]: the namespace, created if missing, with these labels.
bench_namespace() {
	local name=$1
	shift
	kubectl create namespace "$name" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
	if (($#)); then kubectl label namespace "$name" "$@" --overwrite >/dev/null; fi
}

# bench_namespace_gone NAME SECONDS: wait until a namespace still being deleted (by an
# earlier run's cleanup) is gone, since it would vanish under this run.
bench_namespace_gone() {
	if [[ $(kubectl get namespace "$1" -o jsonpath='{.status.phase}' 2>/dev/null) == Terminating ]]; then
		kubectl wait --for=delete "namespace/$1" --timeout="$2s" >/dev/null
	fi
}

# bench_crds: the CRDs established and the namespace the operator keeps its CA Secret,
# Lease and checkpoints in, so that a run starts on a fresh cluster as on one the tests
# left behind.
bench_crds() {
	kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
	kubectl wait --for condition=established --timeout=60s -f crds/ >/dev/null
	bench_namespace_gone enclave-system 300
	bench_namespace enclave-system
}

# bench_setup: all of the above, what every benchmark starts with.
bench_setup() {
	bench_cluster_up
	bench_build_release
	bench_crds
}

# --- the operator -------------------------------------------------------------------

# bench_operator_start [--kubeconfig FILE] [--pid-file FILE] LOG ARGS...: start the
# release operator's `run` with ARGS in the background, its output in LOG; sets
# operator (its pid) and operator_log. BENCH_WRAPPER, if set, runs it under a profiler
# (e.g. "heaptrack -o /tmp/run"); the pid is then the wrapper's.
bench_operator_start() {
	local kubeconfig=${KUBECONFIG:-} pid_file=""
	while [[ $1 == --* ]]; do
		case $1 in
		--kubeconfig) kubeconfig=$2 ;;
		--pid-file) pid_file=$2 ;;
		*) bench_fail "bench_operator_start: unknown option $1" ;;
		esac
		shift 2
	done
	operator_log=$1
	shift
	# shellcheck disable=SC2086 # BENCH_WRAPPER is a command and its words
	KUBECONFIG=$kubeconfig ${BENCH_WRAPPER:-} "$operator_bin" run "$@" >"$operator_log" 2>&1 &
	operator=$!
	if [[ -n $pid_file ]]; then echo "$operator" >"$pid_file"; fi
}

# bench_operator_alive: fail if the operator has exited.
bench_operator_alive() {
	kill -0 "$operator" 2>/dev/null || bench_fail "the operator exited; see $operator_log"
}

# bench_operator_ready METRICS-PORT [SECONDS]: wait (polling every 10 ms, for the timing)
# until the operator answers /readyz, i.e. serves admission; default 300 s.
bench_operator_ready() {
	local deadline=$((SECONDS + ${2:-300}))
	until curl -sf "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; do
		bench_operator_alive
		((SECONDS < deadline)) || bench_fail "the operator not ready after ${2:-300} s"
		sleep 0.01
	done
}

# bench_operator_logged PATTERN [SECONDS]: wait (every 10 ms) until the operator's log
# has a line matching PATTERN; default 300 s.
bench_operator_logged() {
	local deadline=$((SECONDS + ${2:-300}))
	until grep -q "$1" "$operator_log"; do
		bench_operator_alive
		((SECONDS < deadline)) || bench_fail "no '$1' in the operator's log after ${2:-300} s"
		sleep 0.01
	done
}

# bench_operator_stop: stop the operator if one runs, and wait for it.
bench_operator_stop() {
	[[ -n $operator ]] || return 0
	kill "$operator" 2>/dev/null || true
	wait "$operator" 2>/dev/null || true
	operator=""
}

# --- measuring a process ------------------------------------------------------------

bench_now_ms() { echo $(($(date +%s%N) / 1000000)); }
# bench_pid COMPONENT: the pid of a control plane component (etcd, kube-apiserver, ...).
bench_pid() { cat "$cluster_dir/pids/$1.pid"; }
# bench_ticks PID: the CPU the process used so far, user + system, in clock ticks.
bench_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# bench_kib PID FIELD: a memory figure of /proc/PID/status in KiB (VmRSS, VmHWM: the peak).
bench_kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
# bench_mem PID FIELD: the same with its unit, as /proc prints it ("12345 kB").
bench_mem() { awk -v k="$2" '$1 == k":" {print $2 " " $3}' "/proc/$1/status"; }
# bench_cpu_s BEFORE AFTER [DECIMALS]: CPU seconds between two tick counts (1 decimal).
bench_cpu_s() { awk -v a="$1" -v b="$2" -v hz="$bench_hz" -v d="${3:-1}" 'BEGIN { printf "%.*f", d, (b - a) / hz }'; }
# bench_cpu_ms BEFORE AFTER: CPU milliseconds between two tick counts.
bench_cpu_ms() { awk -v a="$1" -v b="$2" -v hz="$bench_hz" 'BEGIN { printf "%.0f", (b - a) * 1000 / hz }'; }
# bench_seconds MS [DECIMALS]: milliseconds as seconds (1 decimal).
bench_seconds() { awk -v ms="$1" -v d="${2:-1}" 'BEGIN { printf "%.*f", d, ms / 1000 }'; }
# bench_mib KIB [DECIMALS]: KiB as MiB (no decimals).
bench_mib() { awk -v k="$1" -v d="${2:-0}" 'BEGIN { printf "%.*f", d, k / 1024 }'; }

# bench_cpu_mark LABEL NAME:PID...: record each process's ticks now, as
# bench_cpu[LABEL:NAME]; bench_cpu_used FROM TO NAME [DECIMALS] gives the seconds between
# two marks.
bench_cpu_mark() {
	local label=$1 entry
	shift
	for entry in "$@"; do bench_cpu[$label:${entry%%:*}]=$(bench_ticks "${entry#*:}"); done
}
bench_cpu_used() { bench_cpu_s "${bench_cpu[$1:$3]}" "${bench_cpu[$2:$3]}" "${4:-1}"; }

# --- printing -----------------------------------------------------------------------

# bench_row CELL...: one row of a Markdown table.
bench_row() {
	printf '|'
	printf ' %s |' "$@"
	printf '\n'
}
# bench_tsv CELL...: one tab-separated line.
bench_tsv() {
	local IFS=$'\t'
	printf '%s\n' "$*"
}
# bench_line WIDTH LABEL VALUE: a label padded to WIDTH, then its value.
bench_line() { printf '%-*s %s\n' "$1" "$2" "$3"; }

# --- objects several benchmarks create ----------------------------------------------

# bench_node NAME LABELS CPU MEMORY PODS [TAINTS]: the YAML of a kwok node (LABELS and
# TAINTS in flow style, without their braces or brackets), as one document.
bench_node() {
	cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: $1
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {type: kwok, $2}
YAML
	if [[ -n ${6:-} ]]; then printf 'spec:\n  taints: [%s]\n' "$6"; fi
	cat <<YAML
status:
  allocatable: {cpu: "$3", memory: $4, pods: "$5"}
  capacity: {cpu: "$3", memory: $4, pods: "$5"}
YAML
}

# bench_policy NAME ENCLAVE MATCH-LABELS [SPEC-LINE...]: apply a ResidencyPolicy of that
# enclave for the namespaces with those labels (flow style, with braces), each SPEC-LINE
# one more field of its spec ("migration: {enabled: false}").
bench_policy() {
	{
		printf 'apiVersion: enclave.dev/v1alpha1\nkind: ResidencyPolicy\nmetadata: {name: %s}\n' "$1"
		printf 'spec:\n  enclave: %s\n  match: {namespaceSelector: {matchLabels: %s}}\n' "$2" "$3"
		if (($# > 3)); then printf '  %s\n' "${@:4}"; fi
	} | kubectl apply -f - >/dev/null
}

# bench_engine_namespaces: the namespaces bench-none, bench-native and bench-webhook
# (labelled enclave.dev/bench=none|native|webhook) and the policies bench-native and
# bench-webhook placing the last two with that admission engine, migration off.
bench_engine_namespaces() {
	local ns engine lower
	for ns in none native webhook; do bench_namespace "bench-$ns" "enclave.dev/bench=$ns"; done
	for engine in Native Webhook; do
		lower=$(tr '[:upper:]' '[:lower:]' <<<"$engine")
		bench_policy "bench-$lower" eu "{enclave.dev/bench: $lower}" \
			"migration: {enabled: false}" "admission: {engine: $engine}"
	done
}

# bench_other_native_policies [N]: N (default nine) more native policies,
# bench-other-1..N, each on a namespace of its own that no request of the benchmarks goes
# to: only the policy that matches a request may cost anything. Prints the policies'
# names, for kubectl wait.
bench_other_native_policies() {
	local i
	for i in $(seq 1 "${1:-9}"); do
		bench_namespace "bench-other-$i" "enclave.dev/bench=other-$i"
		bench_policy "bench-other-$i" eu "{enclave.dev/bench: other-$i}" \
			"migration: {enabled: false}" "admission: {engine: Native}"
		echo "residencypolicy/bench-other-$i"
	done
}

# bench_placed_by NAMESPACE: the annotations and required node affinity of a dry-run pod
# there: what the policies in force in it do to a pod.
bench_placed_by() {
	kubectl run probe -n "$1" --image=x --dry-run=server \
		-o jsonpath='{.metadata.annotations}{.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution}' 2>/dev/null
}
# bench_in_force NAMESPACE TEXT: a dry-run pod there shows TEXT (a policy is in force).
bench_in_force() { bench_placed_by "$1" | grep -q "$2"; }

# The enclave's sites in the test topology, as a node selector.
bench_enclave_nodes="node-restriction.kubernetes.io/enclave-site in (dublin,norway)"
# bench_enclave_closed / bench_enclave_open: taint the enclave's nodes so that a workload
# starting now lands in Virginia, and lift it again.
bench_enclave_closed() { kubectl taint nodes -l "$bench_enclave_nodes" enclave.dev/bench=setup:NoSchedule --overwrite >/dev/null; }
bench_enclave_open() { kubectl taint nodes -l "$bench_enclave_nodes" enclave.dev/bench- >/dev/null; }

# bench_virginia_workload NAMESPACE REPLICAS: the demo's workload (pause pods preferring
# Virginia) without its PodDisruptionBudget, as Deployment "bench".
bench_virginia_workload() {
	kubectl apply -n "$1" -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: bench}
spec:
  replicas: $2
  selector: {matchLabels: {app: bench}}
  template:
    metadata: {labels: {app: bench}}
    spec:
      containers: [{name: app, image: registry.k8s.io/pause:3.10}]
      affinity:
        nodeAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            preference: {matchExpressions: [{key: node-restriction.kubernetes.io/enclave-site, operator: In, values: [virginia]}]}
YAML
}

# bench_running_nodes NAMESPACE: the node of each Running pod there, one a line.
bench_running_nodes() {
	kubectl get pods -n "$1" --field-selector=status.phase=Running \
		-o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}'
}
