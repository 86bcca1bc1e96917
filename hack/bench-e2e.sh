#!/usr/bin/env bash
# make bench-e2e: pod CREATE through the real API server, interleaved, without policy,
# with the native engine and with webhooks, at 1, 10 and 50 concurrent clients, with
# nine more native policies on namespaces of their own; the operator is the release
# build. Prints one Markdown table per concurrency level (p50, p90, p99, p99.9 and the
# increments over no policy), and a warning when the machine is busy.
# Environment: BENCH_REQUESTS (per namespace and level, default 500),
# BENCH_CONCURRENCY_LEVELS (default "1 10 50"), ENCLAVE_BENCH_WEBHOOK_PORT and
# ENCLAVE_BENCH_METRICS_PORT (the operator's, default 18643 and 18680).
set -euo pipefail
cluster_dir=${1:?usage: bench-e2e.sh <cluster-dir>}
# shellcheck source=hack/lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"
bench_setup

port=${ENCLAVE_BENCH_WEBHOOK_PORT:-18643}
bench_operator_start "$cluster_dir/logs/bench-operator.log" \
	--metrics-addr "127.0.0.1:${ENCLAVE_BENCH_METRICS_PORT:-18680}" \
	--webhook-addr "127.0.0.1:$port" --webhook-url "https://127.0.0.1:$port"
trap bench_operator_stop EXIT

kubectl apply -f config/samples/data-enclave.yaml >/dev/null
bench_engine_namespaces
mapfile -t others < <(bench_other_native_policies)
# Both engines in force: a placed dry-run pod in each namespace.
bench_poll 30 "the native engine in bench-native" bench_in_force bench-native bench-native
bench_poll 30 "the webhook engine in bench-webhook" bench_in_force bench-webhook bench-webhook
kubectl wait --for=condition=Ready --timeout=120s residencypolicy/bench-native \
	residencypolicy/bench-webhook "${others[@]}" >/dev/null
sleep 2
# The figures mean something only on an otherwise idle machine: say when it is not.
read -r load _ </proc/loadavg
if awk -v l="$load" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
	echo "WARNING: the machine is busy (1-minute load $load on $(nproc) CPUs): the figures below are not comparable"
fi
for concurrency in ${BENCH_CONCURRENCY_LEVELS:-1 10 50}; do
	BENCH_CONCURRENCY=$concurrency BENCH_REQUESTS=${BENCH_REQUESTS:-500} \
		BENCH_NAMESPACES=bench-none,bench-native,bench-webhook \
		cargo bench --quiet --bench e2e
	echo
done
