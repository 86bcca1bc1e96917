#!/usr/bin/env bash
# Time to compliance on the local control plane: N pods (default 1,000) running in
# Virginia when a ResidencyPolicy arrives; measures how long until the policy's status
# counts them (detection) and until every pod runs inside the enclave (migration), and
# the operator's resident memory afterwards. Usage: bench-migration.sh <cluster-dir> [N]
set -euo pipefail
cluster_dir=${1:?usage: bench-migration.sh <cluster-dir> [pods]}
pods=${2:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

tools/cluster/up.sh "$cluster_dir" >/dev/null
export KUBECONFIG=$cluster_dir/kubeconfig
cargo build --quiet --release --bin enclave-operator
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for condition=established --timeout=60s -f crds/ >/dev/null
kubectl apply -f config/samples/data-enclave.yaml >/dev/null

port=${ENCLAVE_BENCH_WEBHOOK_PORT:-18543}
target/release/enclave-operator run --metrics-addr 127.0.0.1:0 --webhook-addr "127.0.0.1:$port" \
	--webhook-url "https://127.0.0.1:$port" >"$cluster_dir/logs/bench-operator.log" 2>&1 &
operator=$!
cleanup() {
	kill "$operator" 2>/dev/null || true
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

kubectl apply -f - >/dev/null <<YAML
apiVersion: enclave.dev/v1alpha1
kind: ResidencyPolicy
metadata: {name: bench}
spec:
  enclave: eu
  match: {namespaceSelector: {matchLabels: {enclave.dev/residency: bench}}}
  migration: {maxEvictionsPerMinute: $((pods * 2)), maxConcurrent: 100}
YAML
start=$(now_ms)
detected=""
while true; do
	if [[ -z "$detected" ]]; then
		matched=$(kubectl get residencypolicy bench -o jsonpath='{.status.matchedPods}')
		[[ "${matched:-0}" -ge "$pods" ]] && detected=$(($(now_ms) - start))
	fi
	read -r inside outside < <(running_where)
	[[ "$inside" -ge "$pods" && -n "$detected" ]] && break
	sleep 0.5
done
done_ms=$(($(now_ms) - start))
rss=$(awk '/VmRSS/ {print $2 " " $3}' "/proc/$operator/status")
cached=$(kubectl get pods -A --no-headers | wc -l)
printf '\n%-44s %s\n' "pods moved from Virginia into the enclave" "$moving (of $pods; the rest started inside)"
printf '%-44s %s\n' "detected and counted in status after" "$((detected / 1000)).$(printf %03d $((detected % 1000))) s"
printf '%-44s %s\n' "all inside the enclave after" "$((done_ms / 1000)).$(printf %03d $((done_ms % 1000))) s"
printf '%-44s %s\n' "operator resident memory ($cached pods cached)" "$rss"
