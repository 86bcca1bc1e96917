#!/usr/bin/env bash
# Time to compliance on the local control plane: N pods (default 1,000) running in
# Virginia when a ResidencyPolicy arrives; measures how long until the policy's status
# counts them (detection) and until every pod runs inside the enclave (migration), and
# the operator's resident memory afterwards. Usage: bench-migration.sh <cluster-dir> [N]
# MAX_CONCURRENT sets the policy's maxConcurrent (default 100): raising it shows whether
# the operator or the cluster sets the pace.
set -euo pipefail
cluster_dir=${1:?usage: bench-migration.sh <cluster-dir> [pods]}
pods=${2:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

source hack/bench-setup.sh
bench_setup
kubectl apply -f config/samples/data-enclave.yaml >/dev/null

port=${ENCLAVE_BENCH_WEBHOOK_PORT:-18543}
decisions=$cluster_dir/logs/bench-migration-decisions.log
rm -f "$decisions"
# BENCH_WRAPPER runs the operator under a profiler (e.g. "heaptrack -o /tmp/migration").
${BENCH_WRAPPER:-} "$target/release/enclave-operator" run --metrics-addr 127.0.0.1:0 --webhook-addr "127.0.0.1:$port" \
	--webhook-url "https://127.0.0.1:$port" --chain-id bench-migration --decision-log "$decisions" \
	--lease-name enclave-operator-bench-migration >"$cluster_dir/logs/bench-operator.log" 2>&1 &
operator=$!
cleanup() {
	kill "$operator" 2>/dev/null || true
	kubectl delete nodes -l enclave.dev/bench-migration --wait=false >/dev/null 2>&1 || true
	kubectl taint nodes -l "node-restriction.kubernetes.io/enclave-site in (dublin,norway)" enclave.dev/bench- >/dev/null 2>&1 || true
	kubectl delete residencypolicy bench --ignore-not-found --wait=false >/dev/null 2>&1 || true
	kubectl delete namespace bench --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }
running_where() { # prints "inside outside" counts of Running pods
	kubectl get pods -n bench -o jsonpath='{range .items[?(@.status.phase=="Running")]}{.spec.nodeName}{"\n"}{end}' |
		awk '/^(dublin|norway)/ {i++} /^virginia/ {o++} END {printf "%d %d\n", i, o}'
}

kubectl delete namespace bench --ignore-not-found --wait=true >/dev/null
# The test topology's five nodes take 1,000 pods each: for larger runs, more nodes in
# Virginia and Dublin (5,000 pods each, removed afterwards; named after their site, as
# running_where counts), so that every pod fits on both sides of the move.
extra=$(((pods + 4999) / 5000))
if ((pods > 1000)); then
	for ((i = 0; i < extra; i++)); do
		for site in virginia dublin; do
			cat <<NODE
---
apiVersion: v1
kind: Node
metadata:
  name: $site-bench-$i
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {type: kwok, enclave.dev/bench-migration: "true", node-restriction.kubernetes.io/enclave-site: $site}
status:
  allocatable: {cpu: "256", memory: 2Ti, pods: "5000"}
  capacity: {cpu: "256", memory: 2Ti, pods: "5000"}
NODE
		done
	done | kubectl apply -f - >/dev/null
fi
# Keep the enclave's nodes closed while the workload starts, so that every pod lands in
# Virginia; they open again before the policy arrives.
enclave_nodes="node-restriction.kubernetes.io/enclave-site in (dublin,norway)"
kubectl taint nodes -l "$enclave_nodes" enclave.dev/bench=setup:NoSchedule --overwrite >/dev/null
kubectl create namespace bench >/dev/null
kubectl label namespace bench enclave.dev/residency=bench >/dev/null
# The demo's workload (pods prefer Virginia) without its PodDisruptionBudget.
kubectl apply -n bench -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: bench}
spec:
  replicas: $pods
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
echo ">> waiting for $pods pods to run in Virginia"
until read -r inside outside < <(running_where) && [[ $((inside + outside)) -ge $pods ]]; do sleep 1; done
echo "   before: $inside inside the enclave, $outside in Virginia"
kubectl taint nodes -l "$enclave_nodes" enclave.dev/bench- >/dev/null
moving=$outside

# CPU of every process over the run: who the bottleneck is.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A cpu_before
components="enclave-operator:$operator"
for c in kube-apiserver kube-controller-manager kube-scheduler kwok etcd; do
	components+=" $c:$(cat "$cluster_dir/pids/$c.pid")"
done
for entry in $components; do cpu_before[${entry%%:*}]=$(ticks "${entry#*:}"); done
# Times count from just before the policy is sent (kubectl included).
start=$(now_ms)
kubectl apply -f - >/dev/null <<YAML
apiVersion: enclave.dev/v1alpha1
kind: ResidencyPolicy
metadata: {name: bench}
spec:
  enclave: eu
  match: {namespaceSelector: {matchLabels: {enclave.dev/residency: bench}}}
  migration: {maxEvictionsPerMinute: $((pods * 2)), maxConcurrent: ${MAX_CONCURRENT:-100}}
YAML
read -r detected done_ms < <(hack/bench-migration-watch.py "$pods" "$start")
rss=$(awk '/VmRSS/ {print $2 " " $3}' "/proc/$operator/status")
peak=$(awk '/VmHWM/ {print $2 " " $3}' "/proc/$operator/status")
hz=$(getconf CLK_TCK)
cpu_report=""
for entry in $components; do
	used=$(echo "$(ticks "${entry#*:}") ${cpu_before[${entry%%:*}]} $hz" | awk '{printf "%.1f", ($1 - $2) / $3}')
	cpu_report+="$(printf '%-44s %s s' "  ${entry%%:*}" "$used")"$'\n'
done
cached=$(kubectl get pods -A --no-headers | wc -l)
printf '\n%-44s %s\n' "pods moved from Virginia into the enclave" "$moving (of $pods; the rest started inside)"
printf '%-44s %s\n' "detected and counted in status after" "$((detected / 1000)).$(printf %03d $((detected % 1000))) s"
printf '%-44s %s\n' "all inside the enclave after" "$((done_ms / 1000)).$(printf %03d $((done_ms % 1000))) s"
printf '%-44s %s\n' "operator resident memory ($cached pods cached)" "$rss, peak $peak"
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
printf '%s' "$cpu_report"
