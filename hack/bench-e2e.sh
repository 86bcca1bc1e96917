#!/usr/bin/env bash
# make bench-e2e: pod CREATE through the real API server, interleaved, without policy,
# with the floor (benches/floor-policy.yaml: the design's hand-written placing policy,
# the least any native placement costs), with the native engine and with webhooks, at 1, 10 and 50 concurrent clients, with
# nine more native policies on namespaces of their own; the operator is the release
# build. Prints one Markdown table per concurrency level (p50, p90, p99, p99.9 and the
# increments over no policy), and a warning when the machine is busy; after each level,
# where the webhook engine's time goes: the API server's time per webhook call against
# the operator's own time per review (the difference is the HTTPS hop and the API
# server's webhook client).
# Environment: BENCH_REQUESTS (per namespace and level; default 2,000 at one client, where
# the targets are p90 increments and 500 samples left them ±0.15 ms from run to run, and
# 500 at 10 and 50 clients),
# BENCH_CONCURRENCY_LEVELS (default "1 10 50"), ENCLAVE_BENCH_WEBHOOK_PORT and
# ENCLAVE_BENCH_METRICS_PORT (the operator's, default 18643 and 18680),
# BENCH_OTHER_POLICIES (default 9): the native policies on namespaces no request goes to
# (0 to 9; 0 for the engines alone),
# BENCH_ENCLAVE_NODES (default 0): that many more kwok nodes in the enclave's Dublin site
# before measuring, since the native policies carry the enclave's node names as literals
# (5,000: the Kubernetes scalability limit); they are removed afterwards.
set -euo pipefail
cluster_dir=${1:?usage: bench-e2e.sh <cluster-dir>}
# shellcheck source=hack/lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"
bench_setup

port=${ENCLAVE_BENCH_WEBHOOK_PORT:-18643}
# shellcheck disable=SC1091 # written by up.sh
source "$cluster_dir/ports.env"
# The operator receives the API server's audit events, as deployed: without a sink the
# API server's batches fail and it writes every event to its log instead, a cost no
# cluster running the operator pays (it slowed every request here, in scope or not).
bench_operator_start "$cluster_dir/logs/bench-operator.log" \
	--metrics-addr "127.0.0.1:${ENCLAVE_BENCH_METRICS_PORT:-18680}" \
	--webhook-addr "127.0.0.1:$port" --webhook-url "https://127.0.0.1:$port" \
	--audit-sink-addr "127.0.0.1:$AUDIT_SINK_PORT" \
	--audit-sink-client-ca "$cluster_dir/authorizer/audit-client-ca.crt" \
	--audit-sink-tls-dir "$cluster_dir/authorizer"
enclave_nodes=${BENCH_ENCLAVE_NODES:-0}
cleanup() {
	bench_operator_stop
	if ((enclave_nodes > 0)); then
		kubectl delete nodes -l enclave.dev/bench-enclave-node --wait=false >/dev/null 2>&1 || true
	fi
}
trap cleanup EXIT

kubectl apply -f config/samples/data-enclave.yaml >/dev/null
if ((enclave_nodes > 0)); then
	# Node objects only, without kwok's annotation: kwok would renew 5,000 leases and
	# statuses, which alone keeps two cores busy (measured: load 5.7, a webhook call past
	# its 5 s timeout), and the policies compile node names whatever the nodes' state.
	echo ">> $enclave_nodes more nodes in the enclave (Dublin)"
	enclave_node() {
		printf -- '---\napiVersion: v1\nkind: Node\nmetadata:\n  name: bench-enclave-%d\n' "$1"
		printf '  labels: {enclave.dev/bench-enclave-node: "true", node-restriction.kubernetes.io/enclave-site: dublin}\n'
		printf 'spec:\n  taints: [{key: enclave.dev/bench, value: "none", effect: NoSchedule}]\n'
	}
	appliers=()
	for part in 0 1 2 3; do
		for ((i = part; i < enclave_nodes; i += 4)); do enclave_node "$i"; done |
			kubectl apply -f - >/dev/null &
		appliers+=($!)
	done
	wait "${appliers[@]}" # not the operator's
fi
bench_engine_namespaces
bench_namespace bench-floor "enclave.dev/bench=floor"
kubectl apply -f benches/floor-policy.yaml >/dev/null
other_policies=${BENCH_OTHER_POLICIES:-9}
mapfile -t others < <(bench_other_native_policies "$other_policies")
# Fewer than an earlier run on this cluster left: the rest go.
for ((i = other_policies + 1; i <= 9; i++)); do
	kubectl delete residencypolicy "bench-other-$i" --ignore-not-found >/dev/null
done
# Both engines in force: a placed dry-run pod in each namespace.
bench_poll 30 "the native engine in bench-native" bench_in_force bench-native bench-native
bench_poll 30 "the webhook engine in bench-webhook" bench_in_force bench-webhook bench-webhook
bench_poll 30 "the floor policy in bench-floor" bench_in_force bench-floor dublin
kubectl wait --for=condition=Ready --timeout=120s residencypolicy/bench-native \
	residencypolicy/bench-webhook ${others[@]+"${others[@]}"} >/dev/null
if ((enclave_nodes > 0)); then
	# The native check names every enclave node: measured once it names the last one.
	compiled() {
		kubectl get validatingadmissionpolicy enclave-check.bench-native -o json |
			grep -q "bench-enclave-$((enclave_nodes - 1))[^0-9]"
	}
	bench_poll --every 2 300 "the native check naming the $enclave_nodes nodes" compiled
	kubectl wait --for=condition=Ready --timeout=300s residencypolicy/bench-native >/dev/null
	echo ">> the native check names the $enclave_nodes nodes: $(kubectl get validatingadmissionpolicy \
		enclave-check.bench-native -o json | wc -c) bytes"
fi
# The client compiled before the machine is judged idle (its build is the busiest
# thing this script does).
cargo bench --quiet --no-run --bench e2e 2>/dev/null
# The figures mean something only on an otherwise idle machine: wait up to two minutes
# for the 1-minute load to fall under half the CPUs (it lags the builds above), then
# say when it has not.
idle() { awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v n="$(nproc)" 'BEGIN { exit !(l <= n / 2) }'; }
for _ in $(seq 24); do
	if idle; then break; fi
	sleep 5
done
if ! idle; then
	echo "WARNING: the machine is busy (1-minute load $(cut -d' ' -f1 /proc/loadavg) on $(nproc) CPUs): the figures below are not comparable"
fi
# webhook_seconds: "API_SERVER_SUM API_SERVER_COUNT OPERATOR_SUM OPERATOR_COUNT", the
# seconds and calls of this operator's webhooks as the API server timed them
# (apiserver_admission_webhook_admission_duration_seconds) and as the operator did
# (enclave_operator_admission_review_duration_seconds), totals since each started.
webhook_seconds() {
	local apiserver operator
	apiserver=$(kubectl get --raw /metrics | awk '
		/^apiserver_admission_webhook_admission_duration_seconds_(sum|count)\{name="[^"]*\.policies\.enclave\.dev"/ {
			if ($1 ~ /_sum/) s += $2; else c += $2 }
		END { printf "%.9f %d", s, c }')
	operator=$(curl -sf "http://127.0.0.1:${ENCLAVE_BENCH_METRICS_PORT:-18680}/metrics" | awk '
		/^enclave_operator_admission_review_duration_seconds_sum / { s = $2 }
		/^enclave_operator_admission_review_duration_seconds_count / { c = $2 }
		END { printf "%.9f %d", s, c }')
	echo "$apiserver $operator"
}
for concurrency in ${BENCH_CONCURRENCY_LEVELS:-1 10 50}; do
	before=$(webhook_seconds)
	default_requests=500
	if ((concurrency == 1)); then default_requests=2000; fi
	BENCH_CONCURRENCY=$concurrency BENCH_REQUESTS=${BENCH_REQUESTS:-$default_requests} \
		BENCH_NAMESPACES=bench-none,bench-floor,bench-native,bench-webhook \
		cargo bench --quiet --bench e2e
	# shellcheck disable=SC2086 # two lists of four numbers
	awk -v c="$concurrency" 'BEGIN {
		split(ARGV[1], b, " "); split(ARGV[2], a, " "); ARGV[1] = ARGV[2] = ""
		calls = a[2] - b[2]; reviews = a[4] - b[4]
		if (calls == 0 || reviews == 0) { print "(no webhook calls at concurrency " c ")"; exit }
		server = (a[1] - b[1]) / calls * 1000; ours = (a[3] - b[3]) / reviews * 1000
		printf "\nwebhook engine, concurrency %d: %d calls (%d reviews); mean per call: API server %.3f ms, the operator deciding %.3f ms, so the HTTPS hop and the API server'"'"'s webhook client %.3f ms\n", c, calls, reviews, server, ours, server - ours
	}' "$before" "$(webhook_seconds)"
	echo
done
