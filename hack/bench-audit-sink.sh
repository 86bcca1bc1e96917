#!/usr/bin/env bash
# What the audit sink costs the API server: pod CREATE latency (server-side dry runs,
# interleaved, one keep-alive client per namespace, benches/e2e.rs) without the audit
# webhook backend, in batch mode and in blocking mode, in a namespace without policy and
# one the native engine enforces. The audit policy sends every namespace's pod creates
# (it cannot filter by namespace label), so the backend's cost shows in both columns;
# the modes are compared across runs, alternated ROUNDS times so that drift on the
# machine hits each alike. The API server is restarted with each mode's flags
# (restart-apiserver.sh); the operator receives the events.
#
#   usage: bench-audit-sink.sh CLUSTER_DIR
#   environment: BENCH_REQUESTS (default 400), BENCH_ROUNDS (default 2),
#   BENCH_OPERATOR_BIN (default: the release build), BENCH_PROFILE (cargo profile of the
#   client, default bench), ENCLAVE_BENCH_METRICS_PORT, ENCLAVE_BENCH_WEBHOOK_PORT.
set -euo pipefail
cluster_dir=${1:?usage: bench-audit-sink.sh <cluster-dir>}
# shellcheck source=hack/lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"
if [[ -n ${BENCH_OPERATOR_BIN:-} ]]; then
	bench_built=yes # no release build
fi
bench_setup
operator_bin=${BENCH_OPERATOR_BIN:-$operator_bin}
metrics=${ENCLAVE_BENCH_METRICS_PORT:-18681}
port=${ENCLAVE_BENCH_WEBHOOK_PORT:-18644}
# shellcheck disable=SC1091 # written by up.sh
source "$cluster_dir/ports.env"

kubectl apply -f config/samples/data-enclave.yaml >/dev/null
bench_namespace bench-none "enclave.dev/bench=none"
bench_namespace bench-native "enclave.dev/bench=native"
bench_policy bench-native eu "{enclave.dev/bench: native}" \
	"migration: {enabled: false}" "admission: {engine: Native}"

# The API server's command line as up.sh started it, without its audit flags: each mode
# adds its own, and restart-apiserver.sh starts it with the line it finds in
# kube-apiserver.argv.
pid=$(bench_pid kube-apiserver)
original=() plain=()
while IFS= read -r -d '' arg; do
	original+=("$arg")
	[[ $arg == --audit-* ]] || plain+=("$arg")
done <"/proc/$pid/cmdline"
audit_flags=(--audit-policy-file="$cluster_dir/audit-policy.yaml"
	--audit-webhook-config-file="$cluster_dir/audit-webhook.kubeconfig" --audit-webhook-initial-backoff=1s)

run_mode() { # run_mode MODE
	local argv=("${plain[@]}")
	case $1 in
	batch) argv+=("${audit_flags[@]}" --audit-webhook-mode=batch --audit-webhook-batch-max-wait=1s) ;;
	blocking) argv+=("${audit_flags[@]}" --audit-webhook-mode=blocking) ;;
	esac
	printf '%s\0' "${argv[@]}" >"$cluster_dir/kube-apiserver.argv"
	tools/cluster/restart-apiserver.sh "$cluster_dir" >/dev/null
	bench_operator_start "$cluster_dir/logs/bench-audit-sink-operator.log" \
		--metrics-addr "127.0.0.1:$metrics" --webhook-addr "127.0.0.1:$port" \
		--webhook-url "https://127.0.0.1:$port" --lease-name bench-audit-sink \
		--audit-sink-addr "127.0.0.1:$AUDIT_SINK_PORT" \
		--audit-sink-client-ca "$cluster_dir/authorizer/audit-client-ca.crt" \
		--audit-sink-tls-dir "$cluster_dir/authorizer"
	bench_operator_ready "$metrics" 120
	bench_poll 60 "the native engine in bench-native" bench_in_force bench-native bench-native
	sleep 2
	echo "### audit webhook: $1"
	# The API server's CPU over the run, per request: less at the mercy of a busy machine
	# than latency (the warm-up's 20 requests per namespace included).
	local apiserver before after requests=${BENCH_REQUESTS:-400}
	apiserver=$(bench_pid kube-apiserver)
	before=$(bench_ticks "$apiserver")
	BENCH_CONCURRENCY=1 BENCH_REQUESTS=$requests BENCH_NAMESPACES=bench-none,bench-native \
		cargo bench --quiet --profile "${BENCH_PROFILE:-bench}" --bench e2e
	after=$(bench_ticks "$apiserver")
	echo "kube-apiserver CPU: $(bench_cpu_ms "$before" "$after") ms for $((2 * (requests + 20))) requests"
	sleep 2
	echo "events received by the sink: $(curl -s "http://127.0.0.1:$metrics/metrics" |
		awk '/^enclave_operator_auditsink_events_total/ {n += $2} END {print n + 0}')"
	echo
	bench_operator_stop
}
trap bench_operator_stop EXIT
for _ in $(seq 1 "${BENCH_ROUNDS:-2}"); do
	for mode in off batch blocking; do run_mode "$mode"; done
done
# Leave the API server as it was.
printf '%s\0' "${original[@]}" >"$cluster_dir/kube-apiserver.argv"
tools/cluster/restart-apiserver.sh "$cluster_dir" >/dev/null
rm -f "$cluster_dir/kube-apiserver.argv"
