#!/usr/bin/env bash
# Runs the integration tests against the cluster $KUBECONFIG names or, when it names
# none, against the local control plane: started here if it is not up, and stopped
# again afterwards if this script started it.
#
# The operator under test runs on the host with a token of the chart's own
# ServiceAccount, so every test exercises exactly the RBAC the chart grants.
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
	# The chaos tests restart this control plane's API server.
	export ENCLAVE_CLUSTER_DIR=$cluster_dir
	# The API server asks the authorizer at a fixed address (tools/cluster/up.sh); the
	# shared operator of the e2e suite answers there.
	authorizer_port=$(sed -n 's/^AUTHORIZER_PORT=//p' "$cluster_dir/ports.env" 2>/dev/null || true)
	if [[ -n $authorizer_port && -d $cluster_dir/authorizer ]]; then
		export ENCLAVE_TEST_AUTHORIZER_ADDR=127.0.0.1:$authorizer_port
		export ENCLAVE_TEST_AUTHORIZER_TLS_DIR=$cluster_dir/authorizer
	fi
	# ...and receives the API server's audit events there (the native engine's decisions).
	audit_sink_port=$(sed -n 's/^AUDIT_SINK_PORT=//p' "$cluster_dir/ports.env" 2>/dev/null || true)
	if [[ -n $audit_sink_port && -s $cluster_dir/authorizer/audit-client-ca.crt ]]; then
		export ENCLAVE_TEST_AUDIT_SINK_ADDR=127.0.0.1:$audit_sink_port
		export ENCLAVE_TEST_AUDIT_SINK_CLIENT_CA=$cluster_dir/authorizer/audit-client-ca.crt
	fi
fi
cleanup() {
	if [[ -n "$started" ]]; then "$root/tools/cluster/down.sh" "$cluster_dir"; fi
}
trap cleanup EXIT

# An operator `make demo` left running would act on the tests' objects too.
if [[ -f "$cluster_dir/pids/enclave-operator.pid" ]]; then
	kill "$(cat "$cluster_dir/pids/enclave-operator.pid")" 2>/dev/null || true
	rm -f "$cluster_dir/pids/enclave-operator.pid"
fi

server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
echo ">> integration tests against $server"
kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
kubectl wait --for condition=established --timeout=60s -f "$root/crds/" >/dev/null

# The chart, without operator pods; the operator runs on the host with a token of the
# chart's ServiceAccount.
"$root/hack/chart-operator.sh" "$cluster_dir"
operator_kubeconfig=$cluster_dir/operator.kubeconfig
export ENCLAVE_TEST_OPERATOR_KUBECONFIG=$operator_kubeconfig

threads=${TEST_THREADS:-6}
# Developers: TEST_FILTER=native:: make test-integration runs only matching e2e tests.
if [[ -n "${TEST_FILTER:-}" ]]; then
	cargo test --test e2e "$TEST_FILTER" -- --test-threads "$threads" --nocapture
	exit
fi
# The suite, with the engine the cluster supports (native on Kubernetes 1.36)...
echo ">> e2e suite, admission engine: auto"
cargo test --test e2e -- --test-threads "$threads"
# ...and admission again with webhooks, as clusters before 1.36 run it.
echo ">> admission tests, admission engine: webhook"
ENCLAVE_TEST_ADMISSION=webhook cargo test --test e2e admission:: -- --test-threads "$threads"
# Binaries that run operators of their own, one at a time.
for binary in "$root"/tests/*.rs; do
	name=$(basename "$binary" .rs)
	echo ">> $name"
	cargo test --test "$name" -- --test-threads 1
done
