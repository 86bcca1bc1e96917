#!/usr/bin/env bash
# make demo: start the local control plane, install the CRDs and samples, run the
# operator on the host, and show what it did. Leaves the cluster running (make
# cluster-down stops it) so that you can look around with the printed KUBECONFIG.
set -euo pipefail
cluster_dir=${1:?usage: demo.sh <cluster-dir>}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# until_true SECONDS WHAT COMMAND...: polls COMMAND; fails with the operator's log when
# the operator has exited or the time is up, instead of waiting forever.
until_true() {
	local seconds=$1 what=$2
	shift 2
	local deadline=$((SECONDS + seconds))
	until "$@"; do
		if ! kill -0 "$operator" 2>/dev/null || ((SECONDS >= deadline)); then
			echo "demo: gave up waiting for $what; the operator's log ends with:" >&2
			tail -20 "$cluster_dir/logs/enclave-operator.log" >&2
			exit 1
		fi
		sleep 0.2
	done
}

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
webhook_port=${ENCLAVE_DEMO_WEBHOOK_PORT:-18443}
target/debug/enclave-operator run --metrics-addr "127.0.0.1:${ENCLAVE_DEMO_METRICS_PORT:-18080}" \
	--webhook-addr "127.0.0.1:$webhook_port" --webhook-url "https://127.0.0.1:$webhook_port" \
	>"$cluster_dir/logs/enclave-operator.log" 2>&1 &
operator=$!
echo "$operator" >"$cluster_dir/pids/enclave-operator.pid"

step "Applying the sample DataEnclave (config/samples/data-enclave.yaml)"
kubectl apply -f config/samples/data-enclave.yaml
enclave_ready() {
	[[ $(kubectl get dataenclave eu -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
until_true 60 "the enclave to be Ready" enclave_ready

step "The enclave's site inventory"
kubectl get dataenclave eu
echo
kubectl get dataenclave eu -o jsonpath='{range .status.sites[*]}{"site "}{.name}{": "}{.readyNodes}{"/"}{.nodes}{" nodes Ready\n"}{end}'
echo
kubectl get dataenclave eu -o jsonpath='{range .status.conditions[*]}{.type}{"="}{.status}{" ("}{.reason}{"): "}{.message}{"\n"}{end}'

step "Nodes by site"
kubectl get nodes -L node-restriction.kubernetes.io/enclave-site -L topology.kubernetes.io/region

# Pods per site, from the nodes they run on.
pods_by_site() {
	local table
	table=$(kubectl get pods -n shop -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort | uniq -c)
	printf '%-12s %-10s %s\n' NODE SITE PODS
	while read -r count node; do
		[[ -z "$node" ]] && continue
		site=$(kubectl get node "$node" -o jsonpath='{.metadata.labels.node-restriction\.kubernetes\.io/enclave-site}')
		printf '%-12s %-10s %s\n' "$node" "$site" "$count"
	done <<<"$table"
}

step "Before the policy: a shop workload whose pods landed in Virginia"
kubectl delete residencypolicy eu-user-data --ignore-not-found >/dev/null
kubectl delete namespace shop --ignore-not-found --wait=true >/dev/null
kubectl create namespace shop >/dev/null
kubectl label namespace shop enclave.dev/residency=eu >/dev/null
kubectl apply -n shop -f config/samples/shop-workload.yaml >/dev/null
kubectl rollout status -n shop deployment/checkout --timeout=120s >/dev/null
pods_by_site

step "Applying the ResidencyPolicy (config/samples/residency-policy.yaml)"
kubectl apply -f config/samples/residency-policy.yaml
start=$(date +%s%N)
total=$(kubectl get deployment -n shop checkout -o jsonpath='{.spec.replicas}')
all_inside() {
	local inside all
	inside=$(kubectl get pods -n shop -o jsonpath='{range .items[?(@.status.phase=="Running")]}{.spec.nodeName}{"\n"}{end}' | grep -cE '^(dublin|norway)' || true)
	all=$(kubectl get pods -n shop --no-headers | wc -l)
	[[ "$inside" == "$total" && "$all" == "$total" ]]
}
until_true 120 "every shop pod to run inside the enclave" all_inside
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
elapsed=$((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))

step "After: every pod inside the enclave (migration took ${elapsed} s)"
pods_by_site
echo
kubectl get residencypolicy eu-user-data
echo
kubectl get events -n shop --field-selector reason=EvictedIntoEnclave -o custom-columns=POD:.involvedObject.name,MESSAGE:.message --no-headers 2>/dev/null | head -5 || true
echo "..."

step "A pod asking for Virginia is refused"
kubectl run -n shop pinned --image=registry.k8s.io/pause:3.10 \
	--overrides='{"spec":{"nodeSelector":{"node-restriction.kubernetes.io/enclave-site":"virginia"}}}' 2>&1 || true

cat <<MSG

The operator keeps running in the background (pid $(cat "$cluster_dir/pids/enclave-operator.pid")).
Try:  export KUBECONFIG=$cluster_dir/kubeconfig
      kubectl label node norway-a node-restriction.kubernetes.io/enclave-site=virginia --overwrite
      kubectl get dataenclave eu -o yaml
Stop everything with: make cluster-down
MSG
