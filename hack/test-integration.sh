#!/usr/bin/env bash
# Runs the integration tests against the cluster $KUBECONFIG names or, when it names
# none, against the local control plane: started here if it is not up, and stopped
# again afterwards if this script started it.
set -euo pipefail
cluster_dir=${1:?usage: test-integration.sh <cluster-dir>}
root=$(cd "$(dirname "$0")/.." && pwd)

started=""
if [[ -z "${KUBECONFIG:-}" ]]; then
	if ! kubectl --kubeconfig "$cluster_dir/kubeconfig" get --raw /readyz >/dev/null 2>&1; then
		"$root/tools/cluster/up.sh" "$cluster_dir"
		started=yes
	fi
	export KUBECONFIG=$cluster_dir/kubeconfig
fi
cleanup() {
	if [[ -n "$started" ]]; then "$root/tools/cluster/down.sh" "$cluster_dir"; fi
}
trap cleanup EXIT

echo ">> integration tests against $(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
kubectl wait --for condition=established --timeout=60s -f "$root/crds/" >/dev/null
# One test binary at a time (cargo's default) and each binary runs one operator.
cargo test --test '*' -- --test-threads 4
