#!/usr/bin/env bash
# Resident memory of the operator with a large cluster cached: NODES nodes (kwok),
# WORKLOADS Deployments and PODS pods in all (default 500 / 2,000 / 10,000). Pods that do
# not fit stay Pending, which caches the same. ENCLAVE_BENCH_WEBHOOK_PORT: the operator's
# (default 18643). Usage: bench-memory.sh <cluster-dir>
set -euo pipefail
cluster_dir=${1:?usage: bench-memory.sh <cluster-dir>}
nodes=${NODES:-500}
workloads=${WORKLOADS:-2000}
pods=${PODS:-10000}
# shellcheck source=hack/lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"
bench_setup

echo ">> $nodes nodes"
existing=$(kubectl get nodes --no-headers | wc -l)
# A second run finds them made (kubectl apply refuses an empty input).
if ((existing < nodes)); then
	for ((i = existing; i < nodes; i++)); do
		bench_node "bench-$i" "node-restriction.kubernetes.io/enclave-site: bench-$((i % 10))" 32 256Gi 110
	done | kubectl apply -f - >/dev/null
fi
echo ">> $workloads Deployments, $pods pods"
bench_namespace bench-memory
for ((i = 0; i < workloads; i++)); do
	cat <<YAML
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app-$i, namespace: bench-memory, labels: {app: app-$i}}
spec:
  replicas: $((pods / workloads))
  selector: {matchLabels: {app: app-$i}}
  template:
    metadata: {labels: {app: app-$i, tier: backend}, annotations: {team: payments, owner: platform}}
    spec:
      containers:
      - name: app
        image: registry.example.com/app:1.0
        env: [{name: A, value: "1"}, {name: B, value: "2"}]
        resources: {requests: {cpu: 10m, memory: 16Mi}}
YAML
done | kubectl apply -f - >/dev/null
until [[ $(kubectl get pods -n bench-memory --no-headers 2>/dev/null | wc -l) -ge $pods ]]; do sleep 5; done

port=${ENCLAVE_BENCH_WEBHOOK_PORT:-18643}
bench_operator_start "$cluster_dir/logs/bench-memory-operator.log" --metrics-addr 127.0.0.1:0 \
	--webhook-addr "127.0.0.1:$port" --webhook-url "https://127.0.0.1:$port"
trap bench_operator_stop EXIT
sleep 20
bench_line 50 "operator resident memory, $nodes nodes / $pods pods cached" "$(bench_mem "$operator" VmRSS)"
bench_line 50 "peak" "$(bench_mem "$operator" VmHWM)"
