#!/usr/bin/env bash
# Smoke test of a cluster started by up.sh: versions, nodes, scheduling, pod
# deletion, eviction (drain with a PodDisruptionBudget), DaemonSet, Job, and
# the ServiceAccount token controller. Works in its own namespace and removes it
# (and uncordons the drained node) at the end.
#
#   usage: smoke.sh STATE_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [[ $# -ne 1 || ! -s $1/kubeconfig ]]; then
	echo "usage: $0 STATE_DIR   (a state dir of a running up.sh cluster)" >&2
	exit 2
fi
bin=$("$here/build.sh")
export KUBECONFIG=$1/kubeconfig
kubectl() { "$bin/kubectl" "$@"; }

ns=cluster-smoke
drained=virginia-a
image=registry.k8s.io/pause:3.10
expected_version=$(sed -n 's/^KUBERNETES_VERSION=//p' "$here/versions.env")
passed=0 failed=0

cleanup() {
	kubectl uncordon "$drained" >/dev/null 2>&1 || true
	kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

check() { # check NAME CMD...
	local name=$1
	shift
	local t=$SECONDS
	if "$@"; then
		echo "ok   $name ($((SECONDS - t)) s)"
		passed=$((passed + 1))
	else
		echo "FAIL $name"
		failed=$((failed + 1))
	fi
}

# until_true TIMEOUT CMD...: poll CMD every 0.5 s
until_true() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
}

versions() {
	[[ $(kubectl version -o json | grep -c "\"gitVersion\": \"$expected_version\"") -eq 2 ]]
}

nodes_ready() {
	[[ $(kubectl get nodes -l type=kwok -o \
		'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True) -eq 5 ]]
}

# running_pods SELECTOR: "COUNT NODES": Running pods that have an IP and are not
# being deleted, and on how many distinct nodes they are
running_pods() {
	kubectl -n "$ns" get pods -l "$1" -o \
		'jsonpath={range .items[*]}{.status.phase} {.spec.nodeName} {.status.podIP} {.metadata.deletionTimestamp}{"\n"}{end}' |
		awk '$1 == "Running" && NF == 3 { n++; nodes[$2] = 1 } END { print n + 0, length(nodes) }'
}
deployment_spread() { [[ $(running_pods app=web) == "10 "[3-5] ]]; }
daemonset_ready() { [[ $(running_pods app=agent) == "5 5" ]]; }
disruptions_allowed() { [[ $(kubectl -n "$ns" get pdb web -o jsonpath='{.status.disruptionsAllowed}') == 1 ]]; }
token_filled() { [[ -n $(kubectl -n "$ns" get secret default-token -o jsonpath='{.data.token}') ]]; }
deployment_running() { [[ $(running_pods app=web) == "10 "* ]]; }

setup() {
	# a previous run's namespace may still be terminating
	kubectl delete namespace "$ns" --ignore-not-found --timeout=60s >/dev/null
	kubectl create namespace "$ns" >/dev/null
	until_true 30 kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1
	kubectl -n "$ns" create deployment web --image="$image" --replicas=10 >/dev/null
}

delete_one() {
	local pod
	pod=$(kubectl -n "$ns" get pods -l app=web -o jsonpath='{.items[0].metadata.name}')
	kubectl -n "$ns" delete pod "$pod" --timeout=30s >/dev/null &&
		until_true 30 deployment_running &&
		! kubectl -n "$ns" get pod "$pod" >/dev/null 2>&1
}

drain() {
	kubectl -n "$ns" create poddisruptionbudget web --selector=app=web --max-unavailable=1 >/dev/null
	until_true 30 disruptions_allowed
	kubectl drain "$drained" --ignore-daemonsets --delete-emptydir-data --timeout=60s >/dev/null 2>&1 &&
		until_true 30 deployment_running &&
		[[ $(kubectl -n "$ns" get pods -l app=web --field-selector "spec.nodeName=$drained" -o name | wc -l) -eq 0 ]]
}

daemonset() {
	kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: pause, image: "$image"}]
EOF
	kubectl uncordon "$drained" >/dev/null
	until_true 30 daemonset_ready
}

job() {
	kubectl -n "$ns" create job once --image="$image" >/dev/null &&
		kubectl -n "$ns" wait --for=condition=complete job/once --timeout=30s >/dev/null
}

sa_token() {
	kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: default-token
  annotations: {kubernetes.io/service-account.name: default}
type: kubernetes.io/service-account-token
EOF
	until_true 30 token_filled &&
		kubectl -n "$ns" get configmap kube-root-ca.crt >/dev/null
}

check "client and server are $expected_version" versions
check "5 kwok nodes Ready" nodes_ready
check "namespace + default ServiceAccount + Deployment of 10" setup
check "10 pods Running with IPs on >= 3 nodes (scheduler)" until_true 60 deployment_spread
check "kubectl delete pod: gone and replaced" delete_one
check "drain $drained with a PDB: evicted and rescheduled" drain
check "DaemonSet: one Running pod per node" daemonset
check "Job completes" job
check "ServiceAccount token controller fills a token Secret" sa_token
echo "$passed passed, $failed failed"
((failed == 0))
