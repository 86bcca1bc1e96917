#!/usr/bin/env bash
# make bench-native-profile: what the native engine's policies cost the API server per
# in-scope pod CREATE, from the API server's own heap profile (bytes and objects
# allocated per request in the policy plugins; see hack/bench-native-profile.py), with
# no policy, one native policy, and nine more native policies on other namespaces.
# The API server is restarted with --profiling=true for the run and without it after.
# Environment: BENCH_REQUESTS (per namespace, default 2000).
set -euo pipefail
cluster_dir=${1:?usage: bench-native-profile.sh <cluster-dir>}
# shellcheck source=hack/lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"
bench_setup
command -v go >/dev/null || bench_fail "needs go (go tool pprof reads the profiles)"

tools/cluster/restart-apiserver.sh "$cluster_dir" 0 -- --profiling=true >/dev/null
restore() {
	bench_operator_stop
	tools/cluster/restart-apiserver.sh "$cluster_dir" >/dev/null || true
}
bench_operator_start "$cluster_dir/logs/bench-operator.log" \
	--metrics-addr "127.0.0.1:${ENCLAVE_BENCH_METRICS_PORT:-18680}" \
	--webhook-addr "127.0.0.1:${ENCLAVE_BENCH_WEBHOOK_PORT:-18643}" \
	--webhook-url "https://127.0.0.1:${ENCLAVE_BENCH_WEBHOOK_PORT:-18643}"
trap restore EXIT

kubectl apply -f config/samples/data-enclave.yaml >/dev/null
bench_engine_namespaces
mapfile -t others < <(bench_other_native_policies)
kubectl wait --for=condition=Ready --timeout=120s residencypolicy/bench-native \
	"${others[@]}" >/dev/null
kubectl config view --raw --minify -o json >"$cluster_dir/bench-kubeconfig.json"
python3 hack/bench-native-profile.py "$cluster_dir/bench-kubeconfig.json" "${BENCH_REQUESTS:-2000}" bench-none bench-native
