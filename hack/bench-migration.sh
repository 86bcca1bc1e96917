#!/usr/bin/env bash
# Time to compliance on the local control plane: N pods (default 1,000) running in
# Virginia when a ResidencyPolicy arrives; measures how long until the policy's status
# counts them (detection) and until every pod runs inside the enclave (migration), and
# the operator's resident memory afterwards. Usage: bench-migration.sh <cluster-dir> [N]
# MAX_CONCURRENT sets the policy's maxConcurrent (default 100): raising it shows whether
# the operator or the cluster sets the pace. BENCH_WRAPPER runs the operator under a
# profiler (e.g. "heaptrack -o /tmp/migration").
set -euo pipefail
cluster_dir=${1:?usage: bench-migration.sh <cluster-dir> [pods]}
pods=${2:-1000}
# shellcheck source=hack/lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"
bench_setup
kubectl apply -f config/samples/data-enclave.yaml >/dev/null

port=${ENCLAVE_BENCH_WEBHOOK_PORT:-18543}
decisions=$cluster_dir/logs/bench-migration-decisions.log
rm -f "$decisions"
bench_operator_start "$cluster_dir/logs/bench-operator.log" --metrics-addr 127.0.0.1:0 \
	--webhook-addr "127.0.0.1:$port" --webhook-url "https://127.0.0.1:$port" \
	--chain-id bench-migration --decision-log "$decisions" --lease-name enclave-operator-bench-migration
cleanup() {
	bench_operator_stop
	kubectl delete nodes -l enclave.dev/bench-migration --wait=false >/dev/null 2>&1 || true
	bench_enclave_open 2>/dev/null || true
	kubectl delete residencypolicy bench --ignore-not-found --wait=false >/dev/null 2>&1 || true
	kubectl delete namespace bench --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

running_where() { # prints "inside outside" counts of Running pods
	bench_running_nodes bench | awk '/^(dublin|norway)/ {i++} /^virginia/ {o++} END {printf "%d %d\n", i, o}'
}

kubectl delete namespace bench --ignore-not-found --wait=true >/dev/null
# The test topology's five nodes take 1,000 pods each: for larger runs, more nodes in
# Virginia and Dublin (5,000 pods each, removed afterwards; named after their site, as
# running_where counts), so that every pod fits on both sides of the move.
extra=$(((pods + 4999) / 5000))
if ((pods > 1000)); then
	for ((i = 0; i < extra; i++)); do
		for site in virginia dublin; do
			bench_node "$site-bench-$i" \
				"enclave.dev/bench-migration: \"true\", node-restriction.kubernetes.io/enclave-site: $site" 256 2Ti 5000
		done
	done | kubectl apply -f - >/dev/null
fi
# Keep the enclave's nodes closed while the workload starts, so that every pod lands in
# Virginia; they open again before the policy arrives.
bench_enclave_closed
bench_namespace bench enclave.dev/residency=bench
bench_virginia_workload bench "$pods"
echo ">> waiting for $pods pods to run in Virginia"
until read -r inside outside < <(running_where) && [[ $((inside + outside)) -ge $pods ]]; do sleep 1; done
echo "   before: $inside inside the enclave, $outside in Virginia"
bench_enclave_open
moving=$outside

# CPU of every process over the run: who the bottleneck is.
components=("enclave-operator:$operator")
for c in kube-apiserver kube-controller-manager kube-scheduler kwok etcd; do
	components+=("$c:$(bench_pid "$c")")
done
bench_cpu_mark before "${components[@]}"
# Times count from just before the policy is sent (kubectl included).
start=$(bench_now_ms)
bench_policy bench eu "{enclave.dev/residency: bench}" \
	"migration: {maxEvictionsPerMinute: $((pods * 2)), maxConcurrent: ${MAX_CONCURRENT:-100}}"
read -r detected done_ms < <(hack/bench-migration-watch.py "$pods" "$start")
rss=$(bench_mem "$operator" VmRSS)
peak=$(bench_mem "$operator" VmHWM)
bench_cpu_mark after "${components[@]}"
cached=$(kubectl get pods -A --no-headers | wc -l)
echo
bench_line 44 "pods moved from Virginia into the enclave" "$moving (of $pods; the rest started inside)"
bench_line 44 "detected and counted in status after" "$(bench_seconds "$detected" 3) s"
bench_line 44 "all inside the enclave after" "$(bench_seconds "$done_ms" 3) s"
bench_line 44 "operator resident memory ($cached pods cached)" "$rss, peak $peak"
# Evictions per second from the decision log: the operator's own pace.
python3 - "$decisions" "$start" <<'PY'
import datetime, json, sys
start = int(sys.argv[2]) / 1000
times = []
for line in open(sys.argv[1]):
    record = json.loads(line)
    if record.get("kind") == "PodEvicted":
        t = datetime.datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()
        times.append(t - start)
if times:
    span = max(times[-1] - times[0], 0.001)
    busiest = max(sum(1 for u in times if t <= u < t + 10) for t in times) / 10
    print(f"{'evictions':<44} {len(times)}, from {times[0]:.1f} s to {times[-1]:.1f} s: "
          f"{len(times) / span:.0f}/s on average, {busiest:.0f}/s in the busiest 10 s")
PY
echo "CPU seconds over the run (policy applied to all inside):"
for entry in "${components[@]}"; do
	bench_line 44 "  ${entry%%:*}" "$(bench_cpu_used before after "${entry%%:*}") s"
done
