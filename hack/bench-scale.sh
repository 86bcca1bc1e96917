#!/usr/bin/env bash
# make bench-scale: the operator's cost as the cluster grows, on the local control plane.
# For each point NODES:PODS:SCOPE (SCOPE = percent of the pods some policy covers: 10,
# or 0 and 100 to separate the cost of a pod in scope from one out of it) the release
# build starts against a cluster of that size and we record: resident memory (steady,
# and peak including startup), time to ready (admission served) and until every pod is
# cached (the controllers start), the API server's CPU while the operator
# lists, CPU per 1,000 pod events in and out of scope, and the time until a newly
# labelled namespace of 100 pods is counted in status. Results go to
# $cluster_dir/bench-scale.tsv; hack/bench-scale-report.py turns them into the table
# and plot of docs/benchmarks.md (SCALE_PLOT, default docs/bench-scale.svg).
#
# Usage: bench-scale.sh <cluster-dir>   (SCALE_POINTS to choose the points)
set -euo pipefail
cluster_dir=${1:?usage: bench-scale.sh <cluster-dir>}
# shellcheck source=hack/lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"
points=${SCALE_POINTS:-"500:1000:10 500:10000:10 500:10000:0 500:10000:100 500:30000:10 2000:30000:10 2000:10000:10 2000:1000:10"}

echo ">> building the release operator and the load generator"
bench_setup
cargo bench --quiet --bench scale --no-run
kubectl apply -f config/samples/data-enclave.yaml >/dev/null

results=$cluster_dir/bench-scale.tsv
log=$cluster_dir/logs/bench-scale-operator.log
metrics_port=${ENCLAVE_BENCH_METRICS_PORT:-18780}
webhook_port=${ENCLAVE_BENCH_WEBHOOK_PORT:-18743}
apiserver=$(bench_pid kube-apiserver)
cleanup() {
	bench_operator_stop
	kubectl delete residencypolicy bench-scale --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

loadgen() { cargo bench --quiet --bench scale 2>&1 | grep -v '^$' || true; }
matched() { kubectl get residencypolicy bench-scale -o jsonpath='{.status.matchedPods}' 2>/dev/null || true; }

nodes_up_to() {
	local want=$1 have
	have=$(kubectl get nodes -l enclave.dev/scale-bench --no-headers 2>/dev/null | wc -l)
	((have >= want)) && return 0
	echo ">> nodes: $have -> $want"
	for ((i = have; i < want; i++)); do
		bench_node "bench-$i" "enclave.dev/scale-bench: \"true\", node-restriction.kubernetes.io/enclave-site: bench-$((i % 10)), topology.kubernetes.io/zone: us-east-1$((i % 3))" \
			64 512Gi 1000 "{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}"
	done | kubectl apply -f - >/dev/null
}

policy() { # the selector decides what share of the pods is in scope
	local selector
	case $1 in
	0) selector='{enclave.dev/scale: none}' ;;
	100) selector='{enclave.dev/scale-bench: "true"}' ;;
	*) selector='{enclave.dev/scale: in}' ;;
	esac
	bench_policy bench-scale eu "$selector" "enforcement: Audit" "migration: {enabled: false}"
}

bench_tsv nodes pods scope_pct ready_s pods_cached_s rss_mib peak_mib apiserver_cpu_s \
	cpu_ms_per_1000_in cpu_ms_per_1000_out namespace_count_s >"$results"
for point in $points; do
	IFS=: read -r nodes pods scope <<<"$point"
	echo ">> point: $nodes nodes, $pods pods, $scope % in scope"
	nodes_up_to "$nodes"
	SCALE_CMD=populate SCALE_PODS=$pods SCALE_NODES=$nodes loadgen
	policy "$scope"
	sleep 5 # let the cluster settle (kwok marks the new pods Running)

	api_before=$(bench_ticks "$apiserver")
	started=$(bench_now_ms)
	bench_operator_start "$log" --metrics-addr "127.0.0.1:$metrics_port" \
		--webhook-addr "127.0.0.1:$webhook_port" --webhook-url "https://127.0.0.1:$webhook_port" \
		--lease-name enclave-operator-bench-scale --chain-id bench-scale
	bench_operator_ready "$metrics_port"
	ready_ms=$(($(bench_now_ms) - started))
	# Ready means admission is served; the pod cache (what the controllers wait for)
	# may still be filling: its time comes from the "caches synced" log line.
	bench_operator_logged 'caches synced'
	synced_at=$(grep -m1 'caches synced' "$log" | awk '{print $1}')
	cached_ms=$(($(date -d "$synced_at" +%s%N) / 1000000 - started))
	sleep 5
	api_cpu=$(bench_cpu_s "$api_before" "$(bench_ticks "$apiserver")" 2)
	sleep 5
	rss=$(bench_kib "$operator" VmRSS)
	peak=$(bench_kib "$operator" VmHWM)

	cpu_in="" cpu_out="" counted=""
	if [[ $scope == 10 ]]; then
		for side in out in; do
			before=$(bench_ticks "$operator")
			SCALE_CMD=touch SCALE_SCOPE=$side SCALE_EVENTS=1000 loadgen >/dev/null
			sleep 3 # the operator's work on the last events
			cost=$(bench_cpu_ms "$before" "$(bench_ticks "$operator")")
			if [[ $side == in ]]; then cpu_in=$cost; else cpu_out=$cost; fi
		done
		# A namespace of 100 pods joins the policy's scope: how long until status counts it.
		until [[ -n "$(matched)" ]]; do sleep 0.2; done
		base=$(matched)
		label_ms=$(bench_now_ms)
		kubectl label namespace scale-00001 enclave.dev/scale=in --overwrite >/dev/null
		until (($(matched) >= base + 100)); do sleep 0.05; done
		counted=$(bench_seconds $(($(bench_now_ms) - label_ms)) 2)
		kubectl label namespace scale-00001 enclave.dev/scale- >/dev/null
	fi
	bench_operator_stop
	bench_tsv "$nodes" "$pods" "$scope" "$(bench_seconds "$ready_ms" 2)" "$(bench_seconds "$cached_ms" 2)" \
		"$(bench_mib "$rss" 1)" "$(bench_mib "$peak" 1)" "$api_cpu" "$cpu_in" "$cpu_out" "$counted" | tee -a "$results"
done
python3 hack/bench-scale-report.py "$results" "${SCALE_PLOT:-docs/bench-scale.svg}"
# Leave the cluster as small as it was (SCALE_KEEP=1 keeps the pods and nodes).
if [[ -z "${SCALE_KEEP:-}" ]]; then
	echo ">> removing the benchmark's pods, namespaces and nodes"
	SCALE_CMD=populate SCALE_PODS=0 loadgen
	kubectl delete nodes -l enclave.dev/scale-bench --wait=false >/dev/null
fi
