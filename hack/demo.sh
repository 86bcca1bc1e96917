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

step "Installing the chart without operator pods (its ServiceAccount, RBAC and Service)"
hack/chart-operator.sh "$cluster_dir"
echo "the operator runs on the host with a token of the chart's ServiceAccount: exactly the chart's RBAC"

step "Starting the operator (log: $cluster_dir/logs/enclave-operator.log)"
if [[ -f "$cluster_dir/pids/enclave-operator.pid" ]]; then
	kill "$(cat "$cluster_dir/pids/enclave-operator.pid")" 2>/dev/null || true
	sleep 1
fi
mkdir -p "$cluster_dir/logs" "$cluster_dir/pids"
decisions=$cluster_dir/logs/decisions.log
chain=demo
# The chain resumes from its last checkpoint in the cluster; a log whose cluster is
# gone (no checkpoint) starts afresh rather than mixing two chains in one file.
if [[ -z $(kubectl get configmap enclave-operator-checkpoints -n enclave-system -o "jsonpath={.data.$chain}" 2>/dev/null) ]]; then
	rm -f "$decisions"
fi
webhook_port=${ENCLAVE_DEMO_WEBHOOK_PORT:-18443}
# The API server asks the authorizer at a fixed address (tools/cluster/up.sh).
authorizer_port=$(sed -n 's/^AUTHORIZER_PORT=//p' "$cluster_dir/ports.env")
# ...and sends the native engine's decisions, as audit events, to the audit sink.
# (A cluster made before the audit sink has no such port: then the operator runs without it.)
audit_sink_port=$(sed -n 's/^AUDIT_SINK_PORT=//p' "$cluster_dir/ports.env")
audit_sink=()
if [[ -n $audit_sink_port && -s $cluster_dir/authorizer/audit-client-ca.crt ]]; then
	audit_sink=(--audit-sink-addr "127.0.0.1:$audit_sink_port" --audit-sink-tls-dir "$cluster_dir/authorizer"
		--audit-sink-client-ca "$cluster_dir/authorizer/audit-client-ca.crt")
fi
KUBECONFIG=$cluster_dir/operator.kubeconfig target/debug/enclave-operator run \
	--authorizer-addr "127.0.0.1:$authorizer_port" --authorizer-tls-dir "$cluster_dir/authorizer" \
	"${audit_sink[@]}" \
	--metrics-addr "127.0.0.1:${ENCLAVE_DEMO_METRICS_PORT:-18080}" \
	--webhook-addr "127.0.0.1:$webhook_port" --webhook-url "https://127.0.0.1:$webhook_port" \
	--owner-cluster-role enclave-operator --chain-id "$chain" --decision-log "$decisions" \
	--checkpoint-interval 2 \
	>/dev/null 2>"$cluster_dir/logs/enclave-operator.log" &
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

step "Admission runs inside the API server (Kubernetes 1.36 native policies)"
kubectl get residencypolicy eu-user-data -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}{"\n"}'
kubectl get mutatingadmissionpolicies,validatingadmissionpolicies -l app.kubernetes.io/managed-by=enclave-operator

step "A pod asking for Virginia is refused"
kubectl run -n shop pinned --image=registry.k8s.io/pause:3.10 \
	--overrides='{"spec":{"nodeSelector":{"node-restriction.kubernetes.io/enclave-site":"virginia"}}}' 2>&1 || true

step "A claim on US storage is refused"
kubectl apply -n shop -f - 2>&1 <<'YAML' || true
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: orders-us}
spec:
  storageClassName: us-east-ssd
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
YAML

step "The network fence: NetworkPolicies the operator keeps in every in-scope namespace"
fenced() { [[ $(kubectl get networkpolicy -n shop -l app.kubernetes.io/managed-by=enclave-operator --no-headers 2>/dev/null | wc -l) -ge 2 ]]; }
until_true 60 "the fence in shop" fenced
kubectl get networkpolicy -n shop
echo "(no CNI runs on this control plane: the policies are written and healed here; make kind-e2e checks that a CNI enforces them)"

step "The security gateway: who may reach into enclave pods"
# RBAC comes first: both users below may exec in shop as far as RBAC goes. The gate
# then admits only the enclave's approved staff (group eu-data-stewards).
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: shop-debug, namespace: shop}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list]}
- {apiGroups: [""], resources: [pods/exec], verbs: [create, get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: shop-debug, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: shop-debug}
subjects:
- {kind: User, name: mallory, apiGroup: rbac.authorization.k8s.io}
- {kind: Group, name: eu-data-stewards, apiGroup: rbac.authorization.k8s.io}
YAML
pod=$(kubectl get pods -n shop -l app=checkout -o jsonpath='{.items[0].metadata.name}')
echo "\$ kubectl exec -n shop $pod --as mallory -- cat /etc/hostname"
kubectl exec -n shop "$pod" --as mallory --request-timeout=10s -- cat /etc/hostname 2>&1 || true
echo
echo "\$ kubectl exec -n shop $pod --as alice --as-group eu-data-stewards -- cat /etc/hostname"
kubectl exec -n shop "$pod" --as alice --as-group eu-data-stewards --request-timeout=10s -- cat /etc/hostname 2>&1 || true
echo "(admitted by the gate; kwok nodes run no kubelet, so the API server cannot connect further)"
echo
kubectl get events -n shop --field-selector "involvedObject.name=$pod" -o custom-columns=REASON:.reason,MESSAGE:.message --no-headers 2>/dev/null | grep Access || true

step "The authorizer: logs and the kubelet API, which admission never sees"
# RBAC lets both users read logs in shop and reach every kubelet through nodes/proxy
# (as the built-in view role and many monitoring roles do); the API server asks the
# operator before RBAC, and it refuses everyone but the approved staff.
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: shop-view, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects:
- {kind: User, name: mallory, apiGroup: rbac.authorization.k8s.io}
- {kind: Group, name: eu-data-stewards, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: demo-kubelet-api}
rules:
- {apiGroups: [""], resources: [nodes/proxy], verbs: [get, create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: demo-kubelet-api}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: demo-kubelet-api}
subjects:
- {kind: User, name: mallory, apiGroup: rbac.authorization.k8s.io}
- {kind: Group, name: eu-data-stewards, apiGroup: rbac.authorization.k8s.io}
YAML
kubectl get dataenclave eu -o jsonpath='AuthorizerInForce={.status.conditions[?(@.type=="AuthorizerInForce")].status} ({.status.conditions[?(@.type=="AuthorizerInForce")].reason}){"\n"}'
node=$(kubectl get pod -n shop "$pod" -o jsonpath='{.spec.nodeName}')
echo "\$ kubectl logs -n shop $pod --as mallory"
kubectl logs -n shop "$pod" --as mallory --request-timeout=10s 2>&1 || true
echo
echo "\$ kubectl get --raw /api/v1/nodes/$node/proxy/exec/shop/$pod/checkout?command=cat&command=/etc/hostname --as mallory"
kubectl get --raw "/api/v1/nodes/$node/proxy/exec/shop/$pod/checkout?command=cat&command=/etc/hostname" --as mallory --request-timeout=10s 2>&1 || true
echo
echo "\$ kubectl logs -n shop $pod --as alice --as-group eu-data-stewards"
kubectl logs -n shop "$pod" --as alice --as-group eu-data-stewards --request-timeout=10s 2>&1 || true
echo "\$ kubectl get --raw /api/v1/nodes/$node/proxy/exec/... --as alice --as-group eu-data-stewards"
kubectl get --raw "/api/v1/nodes/$node/proxy/exec/shop/$pod/checkout?command=cat&command=/etc/hostname" --as alice --as-group eu-data-stewards --request-timeout=10s 2>&1 || true
echo "(both authorized for the approved staff; kwok nodes run no kubelet, so the API server cannot connect further)"

step "Access grants: no standing access; asked for, approved by someone else, time-bound"
# The enclave empties its standing lists ("no standing access"): from here an approved,
# unexpired grant is the only way to exec into or read the logs of an enclave pod. dora
# may exec and read logs in shop as far as RBAC goes, and may ask for access; carol is
# named by the enclave as an approver.
kubectl patch dataenclave eu --type merge -p '{"spec":{"access":{"approvedUsers":[],"approvedGroups":[],"approverUsers":["carol"]}}}' >/dev/null
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: shop-debug-dora, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: shop-debug}
subjects:
- {kind: User, name: dora, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: shop-view-dora, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects:
- {kind: User, name: dora, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: demo-access-requesters}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: enclave-operator-access-requester}
subjects:
- {kind: User, name: dora, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: demo-access-approvers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: enclave-operator-access-approver}
subjects:
- {kind: User, name: carol, apiGroup: rbac.authorization.k8s.io}
YAML
refused_staff() {
	local out
	out=$(kubectl exec -n shop "$pod" --as alice --as-group eu-data-stewards --request-timeout=10s -- cat /etc/hostname 2>&1 || true)
	[[ $out == *"denied the request"* ]]
}
until_true 30 "the empty standing lists in force" refused_staff
echo "\$ kubectl exec -n shop $pod --as alice --as-group eu-data-stewards -- cat /etc/hostname   # the stewards too must ask now"
kubectl exec -n shop "$pod" --as alice --as-group eu-data-stewards --request-timeout=10s -- cat /etc/hostname 2>&1 || true
echo
echo "\$ kubectl exec -n shop $pod --as dora -- cat /etc/hostname"
kubectl exec -n shop "$pod" --as dora --request-timeout=10s -- cat /etc/hostname 2>&1 || true
echo
echo "\$ kubectl logs -n shop $pod --as dora"
kubectl logs -n shop "$pod" --as dora --request-timeout=10s 2>&1 || true
echo
echo "\$ kubectl create --as dora -f grant.yaml   # dora asks: exec and logs on $pod for 30 minutes"
kubectl delete accessgrant demo-dora --ignore-not-found >/dev/null
kubectl create --as dora -f - <<YAML
apiVersion: enclave.dev/v1alpha1
kind: AccessGrant
metadata: {name: demo-dora}
spec:
  enclave: eu
  requester: dora
  verbs: [Exec, Logs]
  namespaces: [shop]
  pods: [$pod]
  reason: "checkout stuck: read the order queue"
  ticket: INC-4711
  durationMinutes: 30
YAML
until_true 30 "the grant's status" bash -c "[[ -n \$(kubectl get accessgrant demo-dora -o jsonpath='{.status.state}') ]]"
kubectl get accessgrant demo-dora
echo
echo "\$ kubectl create --as dora -f approval.yaml   # dora approves her own grant (not counted)"
uid=$(kubectl get accessgrant demo-dora -o jsonpath='{.metadata.uid}')
approve() {
	kubectl create --as "$1" -f - <<YAML 2>&1 || true
apiVersion: enclave.dev/v1alpha1
kind: AccessApproval
metadata: {name: demo-dora-$1}
spec: {grant: {name: demo-dora, uid: "$uid"}, decision: Approve, approver: $1}
YAML
}
kubectl delete accessapproval demo-dora-dora demo-dora-carol --ignore-not-found >/dev/null
approve dora
sleep 2
kubectl get accessgrant demo-dora -o jsonpath='{.status.state}: {.status.message}{"\n"}'
echo
echo "\$ kubectl create --as carol -f approval.yaml   # carol approves"
approve carol
until_true 30 "the grant active" bash -c "[[ \$(kubectl get accessgrant demo-dora -o jsonpath='{.status.state}') == Active ]]"
kubectl get accessgrant demo-dora
echo
echo "\$ kubectl exec -n shop $pod --as dora -- cat /etc/hostname"
kubectl exec -n shop "$pod" --as dora --request-timeout=10s -- cat /etc/hostname 2>&1 || true
# The API server caches the authorizer's refusal of dora's logs above for up to 10 s.
sleep 10
echo "\$ kubectl logs -n shop $pod --as dora"
kubectl logs -n shop "$pod" --as dora --request-timeout=10s 2>&1 || true
echo "(both admitted under grant demo-dora, by the gate and the authorizer; kwok nodes run no kubelet, so the API server cannot connect further)"

step "The access exposure report: RBAC that reaches enclave data outside the approved staff"
exposed() { kubectl get dataenclave eu -o jsonpath='{.status.exposures[*].subject}' | grep -q mallory; }
until_true 60 "the exposure report" exposed
kubectl get dataenclave eu -o jsonpath='{.status.conditions[?(@.type=="AccessRestricted")].message}{"\n\n"}'
kubectl get dataenclave eu -o jsonpath='{range .status.exposures[?(@.builtIn!=true)]}{.binding}{" gives "}{.subject}{": "}{.grants}{" via "}{.role}{"\n"}{end}'
echo "$(kubectl get dataenclave eu -o jsonpath='{.status.builtInExposureCount}') more are built-in system grants (status.exposures[].builtIn)"

step "The decision log: every decision, hash-chained ($decisions)"
sleep 3 # one checkpoint interval, so that the head of the lines above is in the cluster
python3 - "$decisions" <<'PY'
import collections, json, sys
kinds = collections.Counter(json.loads(line)["kind"] for line in open(sys.argv[1]) if line.strip())
for kind, count in sorted(kinds.items()):
    print(f"{count:6d}  {kind}")
PY
# Two chains share the file: this replica's (admission) and the leader's (controllers),
# each checkpointed under its own key ('/' becomes '.').
for id in "$chain" enclave-system/leader; do
	kubectl get configmap enclave-operator-checkpoints -n enclave-system -o json |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["data"].get(sys.argv[1], ""))' "${id//\//.}" \
			>"$cluster_dir/logs/checkpoints-${id//\//.}.jsonl"
	echo "\$ enclave-operator verify-log $decisions --chain $id --checkpoints $cluster_dir/logs/checkpoints-${id//\//.}.jsonl"
	target/debug/enclave-operator verify-log "$decisions" --chain "$id" --checkpoints "$cluster_dir/logs/checkpoints-${id//\//.}.jsonl"
done

step "The audit report an outside auditor reproduces (read-only; exit 1 = findings)"
echo "\$ enclave-operator audit --markdown $cluster_dir/logs/audit.md --json $cluster_dir/logs/audit.json"
audit_status=0
target/debug/enclave-operator audit --markdown "$cluster_dir/logs/audit.md" --json "$cluster_dir/logs/audit.json" || audit_status=$?
echo "exit status $audit_status; the summary:"
awk '/^## /{n++} n<2' "$cluster_dir/logs/audit.md" | head -20; echo "(the whole report: $cluster_dir/logs/audit.md)"

cat <<MSG

The operator keeps running in the background (pid $(cat "$cluster_dir/pids/enclave-operator.pid")).
Try:  export KUBECONFIG=$cluster_dir/kubeconfig
      kubectl label node norway-a node-restriction.kubernetes.io/enclave-site=virginia --overwrite
      kubectl get dataenclave eu -o yaml
Stop everything with: make cluster-down
MSG