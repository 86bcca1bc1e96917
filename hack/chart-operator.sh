#!/usr/bin/env bash
# chart-operator.sh <cluster-dir>: installs the chart without operator pods (no
# container runs on the local control plane: its ServiceAccount, RBAC, owner
# ClusterRole and Service) and writes <cluster-dir>/operator.kubeconfig, a kubeconfig
# with a token of the chart's ServiceAccount. An operator run on the host with it has
# exactly the rights the chart grants. Needs KUBECONFIG set to an admin's.
set -euo pipefail
cluster_dir=${1:?usage: chart-operator.sh <cluster-dir>}
root=$(cd "$(dirname "$0")/.." && pwd)
namespace=enclave-system

helm upgrade --install enclave-operator "$root/charts/enclave-operator" \
	--namespace "$namespace" --create-namespace --set replicaCount=0 >/dev/null
token=$(kubectl create token enclave-operator --namespace "$namespace" --duration 24h)
operator_kubeconfig=$cluster_dir/operator.kubeconfig
mkdir -p "$cluster_dir"
kubectl config view --minify --raw -o json | python3 -c '
import json, sys
config = json.load(sys.stdin)
cluster = config["clusters"][0]
print(json.dumps({
    "apiVersion": "v1", "kind": "Config",
    "clusters": [cluster],
    "users": [{"name": "enclave-operator", "user": {"token": sys.argv[1]}}],
    "contexts": [{"name": "enclave-operator", "context": {"cluster": cluster["name"], "user": "enclave-operator"}}],
    "current-context": "enclave-operator",
}))' "$token" >"$operator_kubeconfig"
chmod 600 "$operator_kubeconfig"
