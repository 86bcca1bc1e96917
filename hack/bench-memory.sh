#!/usr/bin/env bash
# Resident memory of the operator with a large cluster cached: NODES nodes (kwok),
# WORKLOADS Deployments and PODS pods in all (default 500 / 2,000 / 10,000). Pods that do
# not fit stay Pending, which caches the same. Usage: bench-memory.sh <cluster-dir>
set -euo pipefail
cluster_dir=${1:?usage: bench-memory.sh <cluster-dir>}
nodes=${NODES:-500}
workloads=${WORKLOADS:-2000}
pods=${PODS:-10000}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

source hack/bench-setup.sh
bench_setup

echo ">> $nodes nodes"
existing=$(kubectl get nodes --no-headers | wc -l)
for ((i = existing; i < nodes; i++)); do
	cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: bench-$i
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {type: kwok, node-restriction.kubernetes.io/enclave-site: bench-$((i % 10))}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
YAML
done | kubectl apply -f - >/dev/null
echo ">> $workloads Deployments, $pods pods"
kubectl create namespace bench-memory --dry-run=client -o yaml | kubectl apply -f - >/dev/null
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

"$target/release/enclave-operator" run --metrics-addr 127.0.0.1:0 --webhook-addr 127.0.0.1:18643 \
	--webhook-url https://127.0.0.1:18643 >"$cluster_dir/logs/bench-memory-operator.log" 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null || true' EXIT
sleep 20
printf '%-50s %s\n' "operator resident memory, $nodes nodes / $pods pods cached" "$(awk '/VmRSS/ {print $2 " " $3}' "/proc/$operator/status")"
printf '%-50s %s\n' "peak" "$(awk '/VmHWM/ {print $2 " " $3}' "/proc/$operator/status")"
