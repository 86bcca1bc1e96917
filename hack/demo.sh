#!/usr/bin/env bash
# make demo: start the local control plane, install the CRDs and samples, run the
# operator on the host, and show what it did. Leaves the cluster running (make
# cluster-down stops it) so that you can look around with the printed KUBECONFIG.
set -euo pipefail
cluster_dir=${1:?usage: demo.sh <cluster-dir>}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Local control plane (etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kwok)"
tools/cluster/up.sh "$cluster_dir"
export KUBECONFIG=$cluster_dir/kubeconfig

step "Building enclave-operator"
cargo build --quiet --bin enclave-operator

step "Installing the CRDs"
kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for condition=established --timeout=60s -f crds/ >/dev/null

step "Starting the operator (log: $cluster_dir/logs/enclave-operator.log)"
if [[ -f "$cluster_dir/pids/enclave-operator.pid" ]]; then
	kill "$(cat "$cluster_dir/pids/enclave-operator.pid")" 2>/dev/null || true
fi
mkdir -p "$cluster_dir/logs" "$cluster_dir/pids"
target/debug/enclave-operator run --metrics-addr 127.0.0.1:18080 >"$cluster_dir/logs/enclave-operator.log" 2>&1 &
echo $! >"$cluster_dir/pids/enclave-operator.pid"

step "Applying the sample DataEnclave (config/samples/data-enclave.yaml)"
kubectl apply -f config/samples/data-enclave.yaml
for _ in $(seq 1 60); do
	ready=$(kubectl get dataenclave eu -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')
	[[ "$ready" == "True" ]] && break
	sleep 0.5
done

step "The enclave's site inventory"
kubectl get dataenclave eu
echo
kubectl get dataenclave eu -o jsonpath='{range .status.sites[*]}{"site "}{.name}{": "}{.readyNodes}{"/"}{.nodes}{" nodes Ready\n"}{end}'
echo
kubectl get dataenclave eu -o jsonpath='{range .status.conditions[*]}{.type}{"="}{.status}{" ("}{.reason}{"): "}{.message}{"\n"}{end}'

step "Nodes by site"
kubectl get nodes -L node-restriction.kubernetes.io/enclave-site -L topology.kubernetes.io/region

cat <<MSG

The operator keeps running in the background (pid $(cat "$cluster_dir/pids/enclave-operator.pid")).
Try:  export KUBECONFIG=$cluster_dir/kubeconfig
      kubectl label node norway-a node-restriction.kubernetes.io/enclave-site=virginia --overwrite
      kubectl get dataenclave eu -o yaml
Stop everything with: make cluster-down
MSG
