#!/usr/bin/env bash
# make bench-e2e: pod CREATE through the real API server, interleaved, without policy,
# with the native engine and with webhooks, at 1, 10 and 50 concurrent clients; the
# operator is the release build. Prints one Markdown table per concurrency level.
set -euo pipefail
cluster_dir=${1:?usage: bench-e2e.sh <cluster-dir>}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source hack/bench-setup.sh
bench_setup

log=$cluster_dir/logs/bench-operator.log
port=18643
"$target/release/enclave-operator" run --metrics-addr 127.0.0.1:18680 \
	--webhook-addr "127.0.0.1:$port" --webhook-url "https://127.0.0.1:$port" >/dev/null 2>"$log" &
operator=$!
trap 'kill $operator 2>/dev/null || true' EXIT

kubectl apply -f config/samples/data-enclave.yaml >/dev/null
for ns in none native webhook; do
	kubectl create namespace "bench-$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
	kubectl label namespace "bench-$ns" "enclave.dev/bench=$ns" --overwrite >/dev/null
done
for engine in Native Webhook; do
	lower=$(tr '[:upper:]' '[:lower:]' <<<"$engine")
	kubectl apply -f - >/dev/null <<YAML
apiVersion: enclave.dev/v1alpha1
kind: ResidencyPolicy
metadata: {name: bench-$lower}
spec:
  enclave: eu
  match: {namespaceSelector: {matchLabels: {enclave.dev/bench: $lower}}}
  migration: {enabled: false}
  admission: {engine: $engine}
YAML
done
# Both engines in force: a placed dry-run pod in each namespace.
for ns in native webhook; do
	for _ in $(seq 1 150); do
		if kubectl run probe -n "bench-$ns" --image=x --dry-run=server -o jsonpath='{.metadata.annotations}' 2>/dev/null | grep -q "bench-$ns"; then
			break
		fi
		sleep 0.2
	done
done
sleep 2
for concurrency in ${BENCH_CONCURRENCY_LEVELS:-1 10 50}; do
	BENCH_CONCURRENCY=$concurrency BENCH_REQUESTS=${BENCH_REQUESTS:-500} \
		BENCH_NAMESPACES=bench-none,bench-native,bench-webhook \
		cargo bench --quiet --bench e2e
	echo
done
