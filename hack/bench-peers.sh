#!/usr/bin/env bash
# make bench-peers: enclave-operator side by side with Kyverno v1.19 on one local control
# plane, in one run. Kyverno (tools/peers/kyverno: built from its pinned Go module, run
# on the host against the control plane with its webhooks at 127.0.0.1) enforces the same
# enclave as tools/peers/kyverno/policies.yaml.
#
#  1. Admission: pod CREATE through the API server (benches/e2e.rs: server-side dry runs,
#     interleaved namespaces) at 1, 10 and 50 concurrent clients, p50/p99/p99.9 and the
#     increment over a namespace without policy:
#       A. no policy, our native engine, our webhook engine, Kyverno ClusterPolicy;
#       B. what Kyverno's ClusterPolicy webhooks cost a namespace no policy covers;
#       C. no policy, native, webhook, Kyverno's CEL policies (MutatingPolicy and
#          ValidatingPolicy, which v1.19 recommends over ClusterPolicy).
#     Then the CPU each process used in each phase and its resident memory.
#  2. Detection: N pods (default 1,000) run in Virginia before any policy; how long
#     until our ResidencyPolicy status counts them (migration disabled: it only detects)
#     and until Kyverno's reports controller has a failing PolicyReport for each, with
#     its default flags and with its fastest ones.
#
# Usage: bench-peers.sh <cluster-dir>. Environment: BENCH_REQUESTS (per namespace and
# level, default 2000), BENCH_CONCURRENCY_LEVELS (default "1 10 50"), DETECT_PODS
# (default 1000), BENCH_PEERS_PORT_BASE (default 18840: ports BASE+0..5 on 127.0.0.1).
set -euo pipefail
cluster_dir=${1:?usage: bench-peers.sh <cluster-dir>}
# shellcheck source=hack/lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"
requests=${BENCH_REQUESTS:-2000}
levels=${BENCH_CONCURRENCY_LEVELS:-1 10 50}
detect_pods=${DETECT_PODS:-1000}
port_base=${BENCH_PEERS_PORT_BASE:-18840}
operator_webhook_port=$port_base
operator_metrics_port=$((port_base + 1))
kyverno_webhook_port=$((port_base + 2))
kyverno_metrics_port=$((port_base + 3))
kyverno_runtime_metrics_port=$((port_base + 4))
reports_metrics_port=$((port_base + 5))

log() { printf '>> %s\n' "$*" >&2; }
# quiet COMMAND...: run it, show its output only if it fails (kubectl prints a
# deprecation warning for every Kyverno ClusterPolicy it touches).
quiet() {
	local out
	out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
}

bench_cluster_up
mkdir -p "$cluster_dir/kyverno"
log "building the release operator, the e2e client and Kyverno (cached after the first run)"
bench_build_release
# Copies, run directly: a rebuild in the shared target directory during the run (or a
# cargo lock held by another build) must neither change nor stall what is measured.
bin=$cluster_dir/bench-peers
mkdir -p "$bin"
cp "$operator_bin" "$bin/enclave-operator"
operator_bin=$bin/enclave-operator
e2e=$(cargo bench --quiet --bench e2e --no-run --message-format=json |
	grep '"kind":\["bench"\]' | grep '"name":"e2e"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[[ -x $e2e ]] || { echo "error: no e2e bench executable from cargo" >&2; exit 1; }
cp "$e2e" "$bin/e2e"
kyverno_bin=$(tools/peers/kyverno/build.sh)
# Kyverno's CRDs, RBAC and default ConfigMaps come from its module, as released: the
# rendered chart (config/install-latest-testing.yaml) minus the Deployments, since its
# controllers run on this host instead.
kyverno_src=$(cd tools/peers/kyverno && go list -m -f '{{.Dir}}' github.com/kyverno/kyverno)
manifest=$kyverno_src/config/install-latest-testing.yaml
[[ -f $manifest ]] || { echo "error: $manifest not found in Kyverno's module" >&2; exit 1; }
# docs_except KIND FILE: the YAML documents of FILE whose kind is not KIND.
docs_except() {
	awk -v kind="$1" 'BEGIN { RS = "\n---\n" } $0 !~ ("(^|\n)kind: " kind "\n") { printf "---\n%s\n", $0 }' "$2"
}
# docs_of KIND FILE: the YAML documents of FILE of that kind.
docs_of() {
	awk -v kind="$1" 'BEGIN { RS = "\n---\n" } $0 ~ ("(^|\n)kind: " kind "\n") { printf "---\n%s\n", $0 }' "$2"
}
# docs_named KIND NAME FILE: the YAML documents of FILE of that kind and name.
docs_named() {
	awk -v kind="$1" -v name="$2" 'BEGIN { RS = "\n---\n" }
		$0 ~ ("(^|\n)kind: " kind "\n") && $0 ~ ("\n  name: " name "\n") { printf "---\n%s\n", $0 }' "$3"
}

kyverno="" reports=""
# Leave the cluster as we found it. Kyverno's webhook configurations outlive its process
# and fail requests closed, so its policies go while it still answers, then its webhooks
# and everything its manifest installed.
cleanup() {
	local pid
	kubectl delete clusterpolicies.kyverno.io,mutatingpolicies.policies.kyverno.io,validatingpolicies.policies.kyverno.io \
		-l enclave.dev/peer-form --ignore-not-found >/dev/null 2>&1 || true
	kubectl delete residencypolicy bench-native bench-webhook bench-detect --ignore-not-found >/dev/null 2>&1 || true
	# Without an owner (no --owner-cluster-role here) the operator's webhook configurations
	# go only when it deletes them: give it the time to.
	local deadline=$((SECONDS + 20))
	while [[ -n $operator ]] && ((SECONDS < deadline)) &&
		kubectl get validatingwebhookconfigurations,mutatingwebhookconfigurations -o name 2>/dev/null | grep -q 'enclave-operator-bench-'; do
		sleep 0.5
	done
	for pid in $operator $kyverno $reports; do kill "$pid" 2>/dev/null || true; done
	kubectl delete validatingwebhookconfigurations,mutatingwebhookconfigurations \
		-l webhook.kyverno.io/managed-by=kyverno --ignore-not-found >/dev/null 2>&1 || true
	docs_except Deployment "$manifest" | kubectl delete --ignore-not-found --wait=false -f - >/dev/null 2>&1 || true
	bench_enclave_open 2>/dev/null || true
	kubectl delete namespace bench-detect --ignore-not-found --wait=false >/dev/null 2>&1 || true
	rm -f "$cluster_dir"/pids/bench-peers-*.pid
}
trap cleanup EXIT

# --- setup -------------------------------------------------------------------------

bench_crds
kubectl apply -f config/samples/data-enclave.yaml >/dev/null
# The cleanup of an earlier run deletes Kyverno's namespace without waiting for it.
bench_namespace_gone kyverno 180
log "installing Kyverno's CRDs, RBAC and ConfigMaps from $manifest"
docs_except Deployment "$manifest" | kubectl apply --server-side --force-conflicts -f - >/dev/null
docs_of CustomResourceDefinition "$manifest" | kubectl wait --for condition=established --timeout=60s -f - >/dev/null
# Leftovers of an earlier run would be enforced or scanned from the start.
quiet kubectl delete clusterpolicies.kyverno.io,mutatingpolicies.policies.kyverno.io,validatingpolicies.policies.kyverno.io \
	-l enclave.dev/peer-form --ignore-not-found
kubectl delete namespace bench-detect --ignore-not-found --wait=true >/dev/null

# Kyverno's resource webhook for ClusterPolicies covers every namespace but kube-system
# and kyverno (the ConfigMap's `webhooks` key, the chart's config.webhooks), whatever
# the policies select. Phases A and C narrow it to the namespaces this benchmark labels,
# so that our namespaces do not pay a Kyverno hop; phase B measures that hop.
default_webhooks=$(docs_named ConfigMap kyverno "$manifest" | sed -n 's/^  webhooks: //p')
narrowed_webhooks='"{\"namespaceSelector\":{\"matchExpressions\":[{\"key\":\"kubernetes.io/metadata.name\",\"operator\":\"NotIn\",\"values\":[\"kube-system\"]},{\"key\":\"kubernetes.io/metadata.name\",\"operator\":\"NotIn\",\"values\":[\"kyverno\"]},{\"key\":\"enclave.dev/peer\",\"operator\":\"Exists\"}]}}"'
set_kyverno_webhooks() { # set_kyverno_webhooks JSON-STRING-LITERAL
	kubectl -n kyverno patch configmap kyverno --type merge -p "{\"data\":{\"webhooks\":$1}}" >/dev/null
}
set_kyverno_webhooks "$narrowed_webhooks"

log "starting the operator (log: $cluster_dir/logs/bench-peers-operator.log)"
bench_operator_start --pid-file "$cluster_dir/pids/bench-peers-operator.pid" "$cluster_dir/logs/bench-peers-operator.log" \
	--metrics-addr "127.0.0.1:$operator_metrics_port" \
	--webhook-addr "127.0.0.1:$operator_webhook_port" --webhook-url "https://127.0.0.1:$operator_webhook_port"

# Kyverno's controllers with the chart's arguments and environment (the release manifest
# above), plus what running outside the cluster needs: the admin kubeconfig, --serverIP
# (webhooks registered by URL at 127.0.0.1, certificate with that IP) and local ports.
# chart_args DEPLOYMENT CONTAINER: the container's args in the manifest.
chart_args() {
	docs_named Deployment "$1" "$manifest" |
		awk -v c="$2" '$0 ~ "^        - name: " c "$" { inside = 1; next }
			inside && /^          args:/ { args = 1; next }
			args && /^            - --/ { sub(/^            - /, ""); print; next }
			args { exit }'
}
kyverno_env() { # kyverno_env COMPONENT: the environment the chart gives the component
	echo KYVERNO_NAMESPACE=kyverno KYVERNO_SERVICEACCOUNT_NAME="kyverno-$1" KYVERNO_ROLE_NAME="kyverno:$1" \
		KYVERNO_DEPLOYMENT="kyverno-$1" KYVERNO_POD_NAME="kyverno-$1-host" KYVERNO_SVC=kyverno-svc \
		INIT_CONFIG=kyverno METRICS_CONFIG=kyverno-metrics TUF_ROOT="$cluster_dir/kyverno/sigstore"
}
mapfile -t admission_args < <(chart_args kyverno-admission-controller kyverno)
((${#admission_args[@]} > 10)) || { echo "error: no admission controller args found in $manifest" >&2; exit 1; }
mapfile -t reports_args < <(chart_args kyverno-reports-controller controller)
((${#reports_args[@]} > 10)) || { echo "error: no reports controller args found in $manifest" >&2; exit 1; }
log "starting Kyverno's admission controller (log: $cluster_dir/logs/bench-peers-kyverno.log)"
# shellcheck disable=SC2046 # kyverno_env prints NAME=value words for env
env $(kyverno_env admission-controller) "$kyverno_bin/kyverno" "${admission_args[@]}" \
	--kubeconfig="$KUBECONFIG" --disableLogColor \
	--serverIP="127.0.0.1:$kyverno_webhook_port" --webhookServerHost=127.0.0.1 --webhookServerPort="$kyverno_webhook_port" \
	--metricsHost=127.0.0.1 --metricsPort="$kyverno_metrics_port" \
	--controllerRuntimeMetricsAddress="127.0.0.1:$kyverno_runtime_metrics_port" \
	>"$cluster_dir/logs/bench-peers-kyverno.log" 2>&1 &
kyverno=$!
echo "$kyverno" >"$cluster_dir/pids/bench-peers-kyverno.pid"

# --- namespaces and policies -------------------------------------------------------

bench_engine_namespaces
for form in kyverno kyverno-cel; do bench_namespace "bench-$form" "enclave.dev/peer=$form"; done
# Kyverno validates its policies in its own webhook: wait for it to serve.
bench_poll 120 "Kyverno's policy webhook" kubectl apply --dry-run=server \
	-f tools/peers/kyverno/policies.yaml -l enclave.dev/peer-form=context
quiet kubectl apply -f tools/peers/kyverno/policies.yaml -l 'enclave.dev/peer-form in (context, clusterpolicy)'

webhook_narrowed() { # Kyverno's resource webhooks carry the benchmark's namespace selector
	kubectl get validatingwebhookconfiguration kyverno-resource-validating-webhook-cfg \
		-o jsonpath='{.webhooks[*].namespaceSelector.matchExpressions[*].key}' | grep -q enclave.dev/peer
}
bench_poll 60 "the native engine in bench-native" bench_in_force bench-native bench-native
bench_poll 60 "the webhook engine in bench-webhook" bench_in_force bench-webhook bench-webhook
bench_poll 60 "Kyverno's ClusterPolicies in bench-kyverno" bench_in_force bench-kyverno enclave-site
bench_poll 60 "Kyverno's webhooks narrowed to the benchmark's namespaces" webhook_narrowed
if bench_placed_by bench-none | grep -q enclave-site; then
	echo "error: bench-none is placed by some policy; it must be the baseline" >&2
	exit 1
fi
sleep 2

# --- admission latency -------------------------------------------------------------

processes=("kube-apiserver:$(bench_pid kube-apiserver)" "etcd:$(bench_pid etcd)" "enclave-operator:$operator" "kyverno:$kyverno")
snapshot() { bench_cpu_mark "$1" "${processes[@]}"; } # snapshot PHASE: CPU ticks of every process now
run_levels() { # run_levels NAMESPACES...: one table per concurrency level
	local namespaces=$1 concurrency
	for concurrency in $levels; do
		BENCH_CONCURRENCY=$concurrency BENCH_REQUESTS=$requests BENCH_NAMESPACES=$namespaces "$bin/e2e" --bench
		echo
	done
}

echo "Machine: $(nproc) cores; load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "## A. Pod CREATE: no policy, native, webhook, Kyverno ClusterPolicy"
echo
snapshot A0
run_levels bench-none,bench-native,bench-webhook,bench-kyverno
snapshot A1

echo "## B. Pod CREATE in a namespace no policy covers, with Kyverno's default webhook scope"
echo
echo "kube-system is outside every webhook (ours and Kyverno's); bench-none is outside every"
echo "policy but, with the chart's default config.webhooks, inside Kyverno's resource webhooks."
echo
set_kyverno_webhooks "$default_webhooks"
webhook_default() { ! webhook_narrowed; }
bench_poll 60 "Kyverno's webhooks back at the chart's scope" webhook_default
sleep 2
snapshot B0
run_levels kube-system,bench-none
snapshot B1

echo "## C. Pod CREATE: no policy, native, webhook, Kyverno CEL policies (MutatingPolicy, ValidatingPolicy)"
echo
quiet kubectl delete clusterpolicies.kyverno.io -l enclave.dev/peer-form=clusterpolicy
kubectl apply -f tools/peers/kyverno/policies.yaml -l enclave.dev/peer-form=cel >/dev/null
# Without ClusterPolicies Kyverno drops its catch-all resource webhooks; the CEL policies
# get webhooks of their own, narrowed by their namespaceSelector.
no_catch_all() {
	! kubectl get validatingwebhookconfiguration kyverno-resource-validating-webhook-cfg \
		-o jsonpath='{range .webhooks[*]}{.name}{"\n"}{end}' | grep -qx 'validate\.kyverno\.svc-fail'
}
bench_poll 60 "Kyverno's CEL policies in bench-kyverno-cel" bench_in_force bench-kyverno-cel enclave-site
bench_poll 60 "Kyverno's ClusterPolicy webhooks gone" no_catch_all
sleep 2
snapshot C0
run_levels bench-none,bench-native,bench-webhook,bench-kyverno-cel
snapshot C1

echo "Load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "## Processes: CPU used in each phase, resident memory at the end"
echo
bench_row process "CPU s, A" "CPU s, B" "CPU s, C" "RSS MB" "peak RSS MB"
bench_row --- --- --- --- --- ---
for entry in "${processes[@]}"; do
	name=${entry%%:*} pid=${entry#*:}
	bench_row "$name" "$(bench_cpu_used A0 A1 "$name")" "$(bench_cpu_used B0 B1 "$name")" "$(bench_cpu_used C0 C1 "$name")" \
		"$(bench_mib "$(bench_kib "$pid" VmRSS)")" "$(bench_mib "$(bench_kib "$pid" VmHWM)")"
done
echo
echo "(kube-apiserver and etcd also serve kwok, the scheduler and the controller manager;"
echo "their peak includes everything since the control plane started.)"
echo

# --- detection ---------------------------------------------------------------------

log "detection: $detect_pods pods in Virginia before any policy"
quiet kubectl delete mutatingpolicies.policies.kyverno.io,validatingpolicies.policies.kyverno.io \
	-l enclave.dev/peer-form=cel
kubectl delete residencypolicy bench-native bench-webhook --ignore-not-found >/dev/null
# The enclave's nodes stay closed while the workload starts, so that every pod lands in
# Virginia (hack/bench-migration.sh does the same); the namespace carries no label any
# policy selects yet.
bench_enclave_closed
kubectl create namespace bench-detect >/dev/null
bench_virginia_workload bench-detect "$detect_pods"
in_virginia() { [[ $(bench_running_nodes bench-detect | grep -c '^virginia') -ge $detect_pods ]]; }
bench_poll 600 "$detect_pods pods running in Virginia" in_virginia
bench_enclave_open
sleep 5

# detect NAME COMMAND...: milliseconds from now until COMMAND prints a number >= the pods
# (polled every DETECT_POLL seconds), or "-" after 10 minutes.
detect() {
	local start n
	start=$(bench_now_ms)
	while :; do
		n=$("$@" 2>/dev/null || true)
		[[ ${n:-0} -ge $detect_pods ]] && { echo $(($(bench_now_ms) - start)); return; }
		(($(bench_now_ms) - start > 600000)) && { echo "-"; return; }
		sleep "$DETECT_POLL"
	done
}
row() { # row TOOL SETTING MS PID CPU-TICKS-BEFORE: one line of the table, printed at once
	local took=$3
	[[ $took == - ]] || took="$(bench_seconds "$took") s"
	bench_row "$1" "$2" "$took" "$(bench_cpu_s "$5" "$(bench_ticks "$4")" 2)" "$(bench_mib "$(bench_kib "$4" VmRSS)")"
}

echo "## Detection: $detect_pods running pods outside the enclave, from the policy's creation"
echo
bench_row tool setting "all $detect_pods reported after" "CPU s of the process" "RSS MB"
bench_row --- --- --- --- ---

# Ours: the ResidencyPolicy's status counts every pod outside the enclave.
noncompliant() { kubectl get residencypolicy bench-detect -o jsonpath='{.status.nonCompliantPods}'; }
kubectl label namespace bench-detect enclave.dev/residency=detect --overwrite >/dev/null
before=$(bench_ticks "$operator")
bench_policy bench-detect eu "{enclave.dev/residency: detect}" "migration: {enabled: false}"
took=$(DETECT_POLL=0.2 detect noncompliant)
row "enclave-operator: ResidencyPolicy status.nonCompliantPods" "defaults (it has no slower or faster setting)" "$took" "$operator" "$before"
kubectl delete residencypolicy bench-detect >/dev/null

# Kyverno: the reports controller's background scan writes one PolicyReport per pod;
# count those with a failure (what `kubectl get policyreports` shows in FAIL).
no_reports() {
	[[ -z $(kubectl get policyreports.wgpolicyk8s.io,ephemeralreports.reports.kyverno.io -n bench-detect -o name) ]]
}
failing_reports() { kubectl get policyreports.wgpolicyk8s.io -n bench-detect --no-headers | awk '$5 > 0' | wc -l; }
fastest=(--backgroundScanWorkers=16 --aggregationWorkers=16 --backgroundScanInterval=1m
	--clientRateLimitQPS=2000 --clientRateLimitBurst=4000)
for form in clusterpolicy cel; do
	scope=kyverno
	[[ $form == cel ]] && scope="kyverno-cel"
	kubectl label namespace bench-detect "enclave.dev/peer=$scope" --overwrite >/dev/null
	for setting in defaults fastest; do
		extra=()
		[[ $setting == fastest ]] && extra=("${fastest[@]}")
		# shellcheck disable=SC2046 # kyverno_env prints NAME=value words for env
		env $(kyverno_env reports-controller) "$kyverno_bin/reports-controller" "${reports_args[@]}" "${extra[@]}" \
			--kubeconfig="$KUBECONFIG" --disableLogColor --metricsHost=127.0.0.1 --metricsPort="$reports_metrics_port" \
			>"$cluster_dir/logs/bench-peers-reports-$form-$setting.log" 2>&1 &
		reports=$!
		echo "$reports" >"$cluster_dir/pids/bench-peers-reports.pid"
		bench_poll 60 "Kyverno's reports controller to lead" grep -q 'name=background-scan-controller' \
			"$cluster_dir/logs/bench-peers-reports-$form-$setting.log"
		sleep 5
		before=$(bench_ticks "$reports")
		quiet kubectl apply -f tools/peers/kyverno/policies.yaml -l "enclave.dev/peer-form=$form,enclave.dev/peer-rule=check"
		took=$(DETECT_POLL=1 detect failing_reports)
		row "Kyverno $form: failing PolicyReports (reports controller)" "$setting" "$took" "$reports" "$before"
		quiet kubectl delete clusterpolicies.kyverno.io,validatingpolicies.policies.kyverno.io \
			-l "enclave.dev/peer-form=$form,enclave.dev/peer-rule=check"
		kill "$reports"
		wait "$reports" 2>/dev/null || true
		reports=""
		# One deletecollection each (kubectl delete --all deletes, and waits for, every object).
		kubectl delete --raw /apis/wgpolicyk8s.io/v1alpha2/namespaces/bench-detect/policyreports >/dev/null
		kubectl delete --raw /apis/reports.kyverno.io/v1/namespaces/bench-detect/ephemeralreports >/dev/null
		bench_poll 120 "the reports of the last run to go" no_reports
	done
done

echo
echo "Kyverno's defaults are the chart's arguments; fastest adds ${fastest[*]}."
echo "CPU is that of the process that detects (enclave-operator, Kyverno's reports controller)"
echo "from the policy's creation until the last pod was reported; polled every 0.2 s (ours) and 1 s (Kyverno's)."
