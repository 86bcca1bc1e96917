#!/usr/bin/env bash
# `enclave-operator audit` end to end on the local control plane with PODS pods in scope
# (default 10,000): NODES kwok nodes of a site of their own (default 100, tainted so that
# nothing else is scheduled there), NAMESPACES namespaces in scope of one Audit policy
# (default 100), bare pods with spec.nodeName set (no scheduler), a tenant
# NetworkPolicy per namespace. Times the release build of the audit with /usr/bin/time -v
# (wall time, maximum resident set size) RUNS times (default 3), then removes everything
# it made. Usage: bench-audit.sh <cluster-dir>
set -euo pipefail
cluster_dir=${1:?usage: bench-audit.sh <cluster-dir>}
pods=${PODS:-10000}
nodes=${NODES:-100}
namespaces=${NAMESPACES:-100}
runs=${RUNS:-3}
# shellcheck source=hack/lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"
bench_setup

cleanup() {
	kubectl delete residencypolicy bench-audit --ignore-not-found --wait=false >/dev/null 2>&1 || true
	kubectl delete dataenclave bench-audit --ignore-not-found --wait=false >/dev/null 2>&1 || true
	kubectl delete namespace -l enclave.dev/bench=audit --wait=false >/dev/null 2>&1 || true
	kubectl delete nodes -l enclave.dev/bench=audit --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The cleanup of an earlier run deletes its namespaces without waiting for them.
kubectl wait --for=delete namespace -l enclave.dev/bench=audit --timeout=300s >/dev/null 2>&1 || true
echo ">> $nodes nodes, $namespaces namespaces, $pods pods"
for ((i = 0; i < nodes; i++)); do
	bench_node "bench-audit-$i" "enclave.dev/bench: audit, node-restriction.kubernetes.io/enclave-site: bench-audit" \
		32 256Gi 250 "{key: enclave.dev/bench, value: audit, effect: NoSchedule}"
done | kubectl apply -f - >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: enclave.dev/v1alpha1
kind: DataEnclave
metadata: {name: bench-audit}
spec:
  jurisdiction: EU
  sites:
  - name: bench
    nodeSelector: {matchLabels: {node-restriction.kubernetes.io/enclave-site: bench-audit}}
YAML
bench_policy bench-audit bench-audit "{enclave.dev/residency: bench-audit}" "enforcement: Audit"

per_namespace=$((pods / namespaces))
namespace_yaml() { # <index>: the namespace, its NetworkPolicy and its pods
	local ns=bench-audit-$1
	cat <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $ns, labels: {enclave.dev/bench: audit, enclave.dev/residency: bench-audit}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: same-namespace, namespace: $ns}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}]}]
YAML
	for ((p = 0; p < per_namespace; p++)); do
		cat <<YAML
---
apiVersion: v1
kind: Pod
metadata: {name: app-$p, namespace: $ns, labels: {app: app-$((p / 5)), tier: backend}}
spec:
  nodeName: bench-audit-$(((p + $1 * per_namespace) % nodes))
  tolerations: [{key: enclave.dev/bench, operator: Exists}]
  containers: [{name: app, image: registry.k8s.io/pause:3.10, ports: [{name: http, containerPort: 8080}]}]
YAML
	done
}
export -f namespace_yaml
export per_namespace nodes
start=$(date +%s)
seq 0 $((namespaces - 1)) | xargs -P 6 -I{} bash -c 'namespace_yaml {} | kubectl create -f - >/dev/null'
echo "   created in $(($(date +%s) - start)) s; $(kubectl get pods -A -l tier=backend --no-headers 2>/dev/null | grep -c '^bench-audit-') pods listed"

for ((run = 1; run <= runs; run++)); do
	/usr/bin/time -v "$operator_bin" audit --policy bench-audit \
		--json "$cluster_dir/bench-audit.json" --markdown "$cluster_dir/bench-audit.md" \
		2>"$cluster_dir/logs/bench-audit.time" || true
	wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$cluster_dir/logs/bench-audit.time")
	rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$cluster_dir/logs/bench-audit.time")
	in_scope=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["podsInScope"])' "$cluster_dir/bench-audit.json")
	printf 'run %d: %s pods in scope, wall %s, max RSS %s KB (%d MiB)\n' "$run" "$in_scope" "$wall" "$rss" $((rss / 1024))
done
printf 'report sizes: Markdown %s, JSON %s\n' "$(du -h "$cluster_dir/bench-audit.md" | cut -f1)" "$(du -h "$cluster_dir/bench-audit.json" | cut -f1)"
