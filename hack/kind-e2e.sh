#!/usr/bin/env bash
# make kind-e2e: what only real nodes can show, on the kind cluster of make kind-up
# (docs/kind.md). The operator runs from its image (hack/image.sh, loaded with
# `kind load image-archive`), installed by the chart with its defaults (two replicas,
# leader election); pods really start (busybox from Debian's busybox-static, built by
# tools/kind/build.sh), kube-router really enforces NetworkPolicies.
#
# A script of kubectl calls rather than a Rust test binary: every check is "run this in
# that pod and look at what came back", which kubectl exec expresses directly, and it
# needs no second compile of the test crates on the shared two-core machine.
#
# Tests, each failing with what did not happen:
#   enforcer   kube-router alone: a NetworkPolicy denying ingress blocks a TCP connection
#              between pods on two nodes; deleting it opens the connection again.
#   fence      an in-scope pod cannot open a TCP connection to a pod outside the enclave,
#              nor to an address outside allowEgressCIDRs; it still reaches its own
#              namespace, the enclave's gateway, an address inside allowEgressCIDRs, and
#              resolves names through cluster DNS; a tenant's allow-all NetworkPolicy
#              reopens the path and the policy reports it (NetworkFenced=False naming it);
#              deleting it closes the path again. Every "blocked" is preceded by the same
#              connection succeeding before the policy, so a block is the fence's doing.
#   access     an approved steward's kubectl exec runs a command and returns its output,
#              and kubectl cp copies a file out; an outsider with the same RBAC is
#              refused by the enclave's access gate (the message names the policy).
#   storage    a claim on a class outside the enclave is refused; a pod writes to a claim
#              on the enclave's Dublin class (local-path-provisioner makes the volume on
#              the Dublin node; the bytes are read on that node's disk), is deleted and
#              recreated, and reads the data back; the volume and its directory go with
#              the claim (reclaim policy Delete).
#   migration  the running pods of a Deployment and a StatefulSet outside the enclave
#              are moved onto enclave nodes once a policy with migration covers their
#              namespace.
#   failover   the leader force-deleted mid-migration: the other replica takes the Lease
#              and finishes, and no pod moved in before the kill is evicted again.
#   native     with both operator pods scaled away, the API server still refuses a pod
#              pinned outside the enclave (native engine) and admits one pinned inside.
#   hosts      a pod of a namespace no policy covers, bound to an enclave node with a
#              hostPath volume, reads an in-scope pod's emptyDir file from the node's
#              disk: the enclave lists that namespace (HostAccessGuarded=False); once an
#              admin labels it pod-security.kubernetes.io/enforce=baseline, the API
#              server refuses the same pod and the enclave no longer lists it.
#
#   KIND_E2E_TESTS="fence access"  run only these (default: all, in the order above)
#   IMAGE_PROFILE=release           package the release build (default dev, as make test)
#   KEEP=1                          keep the test namespaces, enclaves and policies
# The operator stays installed either way.

# The checks are small functions called through eventually, which shellcheck cannot
# follow.
# shellcheck disable=SC2317
set -euo pipefail
# Command substitutions keep errexit: a failure inside $(...) ends the script.
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
name=${KIND_CLUSTER:-enclave-kind}
dir=${KIND_DIR:-$root/.kind}
export ENCLAVE_CACHE=${ENCLAVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enclave-operator}
tests=${KIND_E2E_TESTS:-enforcer fence access storage migration volume_move volume_rollback failover native hosts}
start_all=$SECONDS

die() {
	echo "kind-e2e: FAIL: $*" >&2
	exit 1
}
step() { printf '\n>> %s\n' "$*" >&2; }
[[ -f $dir/env ]] || die "no kind cluster: run 'make kind-up' first ($dir/env is missing)"
# shellcheck disable=SC1091
source "$dir/env"
kubectl get nodes >/dev/null 2>&1 || die "the kind cluster does not answer: run 'make kind-up'"
busybox=$(grep '^enclave-kind/busybox:' "$(dirname "$(command -v kind)")/../images") ||
	die "no busybox image listed by tools/kind/build.sh"

diagnose() {
	echo "kind-e2e: the cluster's state:" >&2
	kubectl get nodes -o wide >&2 || true
	kubectl get pods -A -o wide >&2 || true
	kubectl get networkpolicies -A >&2 || true
	kubectl get residencypolicies -o wide >&2 || true
	kubectl get volumemigrations -A -o yaml >&2 || true
	echo "--- operator log (last 40 lines)" >&2
	kubectl logs -n enclave-system deployment/enclave-operator --tail 40 >&2 || true
}
cleanup() {
	local status=$?
	((status == 0)) || diagnose
	docker rm -f kind-e2e-allowed kind-e2e-denied >/dev/null 2>&1 || true
	if [[ ${KEEP:-} != 1 ]]; then
		kubectl delete residencypolicy -l kind-e2e=1 --ignore-not-found --wait=false >/dev/null 2>&1 || true
		kubectl delete dataenclave -l kind-e2e=1 --ignore-not-found --wait=false >/dev/null 2>&1 || true
		kubectl delete namespace -l kind-e2e=1 --ignore-not-found --wait=false >/dev/null 2>&1 || true
	fi
}
trap cleanup EXIT

# eventually SECONDS WHAT COMMAND...: polls COMMAND until it succeeds, or fails the test.
eventually() {
	local seconds=$1 what=$2
	shift 2
	local deadline=$((SECONDS + seconds))
	until "$@"; do
		((SECONDS < deadline)) || die "$what (gave up after $seconds s)"
		sleep 2
	done
}
not() { ! "$@"; }

# --- the operator, from its image -------------------------------------------------------
# Installed before the first test that needs it (all but enforcer).
operator_installed=0
install_operator() {
	((operator_installed == 0)) || return 0
	local archive running
	step "the operator image (IMAGE_PROFILE=${IMAGE_PROFILE:-dev}) into the cluster"
	export IMAGE_PROFILE=${IMAGE_PROFILE:-dev}
	hack/image.sh >&2
	if [[ $IMAGE_PROFILE == dev ]]; then archive=target/image-dev/enclave-operator.tar; else archive=target/image/enclave-operator.tar; fi
	[[ -f $archive ]] || die "hack/image.sh made no $archive"
	kind load image-archive "$archive" --name "$name" >&2
	step "the chart with its defaults"
	# Helm installs CRDs once and never upgrades them (README "Upgrading"): a kept cluster
	# gets this checkout's CRDs first.
	kubectl apply --server-side --force-conflicts -f charts/enclave-operator/crds/ >/dev/null
	helm upgrade --install enclave-operator charts/enclave-operator --namespace enclave-system \
		--create-namespace --wait --timeout 5m >/dev/null
	# A reload of the same tag does not restart running pods: restart them so that the
	# image just loaded is the one that runs.
	kubectl rollout restart -n enclave-system deployment/enclave-operator >/dev/null
	kubectl rollout status -n enclave-system deployment/enclave-operator --timeout 180s >&2
	running=$(kubectl get pods -n enclave-system -l app.kubernetes.io/name=enclave-operator \
		-o jsonpath='{range .items[*]}{.status.containerStatuses[0].image}{" "}{.status.containerStatuses[0].imageID}{"\n"}{end}' | sort -u)
	echo "operator pods run $running" >&2
	operator_installed=1
}

# --- helpers ------------------------------------------------------------------------------
# fresh NAME: no policy or enclave NAME left by an earlier run (KEEP=1, or one that died).
fresh() {
	kubectl delete residencypolicy "$1" --ignore-not-found --wait >/dev/null
	kubectl delete dataenclave "$1" --ignore-not-found --wait >/dev/null
}
# namespace NAME [LABEL=VALUE...]
namespace() {
	local ns=$1
	shift
	kubectl delete namespace "$ns" --ignore-not-found --wait >/dev/null
	kubectl create namespace "$ns" >/dev/null
	kubectl label namespace "$ns" kind-e2e=1 "$@" >/dev/null
}
# pod NAMESPACE NAME SITE COMMAND: a busybox pod labelled app=NAME on a node of SITE
# (any node when SITE is empty) running the shell COMMAND.
pod() {
	local ns=$1 pod=$2 site=$3 command=$4 selector=""
	[[ -z $site ]] || selector="nodeSelector: {node-restriction.kubernetes.io/enclave-site: $site}"
	kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $pod, namespace: $ns, labels: {app: $pod}}
spec:
  terminationGracePeriodSeconds: 1
  $selector
  containers:
    - name: main
      image: $busybox
      imagePullPolicy: Never
      command: [sh, -c, '$command']
YAML
}
server_command='mkdir -p /tmp/www && echo served > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www'
pod_ip() { kubectl get pod -n "$1" "$2" -o jsonpath='{.status.podIP}'; }
# The identity the probes exec as. Exec into an in-scope pod passes the enclave's access
# gate only for approved staff (even kind's kubernetes-admin is refused), so every enclave
# of these tests approves this user, and it holds system:masters for RBAC.
prober=(--as kind-e2e-prober --as-group system:masters)
prober_access="access: {approvedUsers: [kind-e2e-prober]}"
# probe NS POD ADDRESS: prints "open" when POD gets an HTTP answer from ADDRESS (ip:port)
# within 3 s, "closed" when it does not; fails when the exec itself fails, so that a
# refused exec is never taken for a closed path. (busybox nc: Debian's static busybox
# wget crashes on this machine.)
probe() {
	local host=${3%:*} port=${3##*:} out
	out=$(kubectl "${prober[@]}" exec -n "$1" "$2" -- sh -c \
		"if printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 $host $port 2>/dev/null | grep -q '200 OK'; then echo open; else echo closed; fi" 2>&1) ||
		die "exec into $1/$2 failed: $out"
	case $out in
	open | closed) echo "$out" ;;
	*) die "exec into $1/$2 printed '$out'" ;;
	esac
}
reaches() { [[ $(probe "$@") == open ]]; }
unreachable() { [[ $(probe "$@") == closed ]]; }
condition() { # condition POLICY TYPE: "status reason message" of the policy's condition TYPE
	kubectl get residencypolicy "$1" -o json |
		jq -r --arg t "$2" '.status.conditions[]? | select(.type == $t) | "\(.status) \(.reason) \(.message)"'
}
enclave() { # enclave NAME [ACCESS_YAML]
	kubectl apply -f - >/dev/null <<YAML
apiVersion: enclave.dev/v1alpha1
kind: DataEnclave
metadata: {name: $1, labels: {kind-e2e: "1"}}
spec:
  jurisdiction: EU
  sites:
    - name: dublin
      nodeSelector: {matchLabels: {node-restriction.kubernetes.io/enclave-site: dublin}}
    - name: norway
      nodeSelector: {matchLabels: {node-restriction.kubernetes.io/enclave-site: norway}}
  storage: {storageClassNames: [eu-dublin-ssd, eu-norway-ssd]}
  gateway:
    namespaceSelector: {matchLabels: {kind-e2e-role: gateway}}
    podSelector: {matchLabels: {app: gateway}}
  ${2:-}
YAML
}
# policy NAME SCOPE_LABEL_VALUE EXTRA_SPEC_YAML: an enforcing policy over the namespaces
# labelled kind-e2e-scope=VALUE.
policy() {
	kubectl apply -f - >/dev/null <<YAML
apiVersion: enclave.dev/v1alpha1
kind: ResidencyPolicy
metadata: {name: $1, labels: {kind-e2e: "1"}}
spec:
  enclave: $1
  match:
    namespaceSelector: {matchLabels: {kind-e2e-scope: $2}}
  enforcement: Enforce
$3
YAML
}
policy_ready() {
	[[ $(kubectl get residencypolicy "$1" -o json | jq -r \
		'(.metadata.generation) as $g | [.status.conditions[]? | select(.type == "Ready" and .status == "True" and .observedGeneration == $g)] | length') == 1 ]]
}

# --- enforcer -------------------------------------------------------------------------------
# kube-router itself, without the operator: a NetworkPolicy that denies ingress blocks a
# TCP connection between pods on two nodes, and its deletion opens it again. When this
# fails, the fence test below cannot mean anything.
test_enforcer() {
	local a=kind-enforcer-server b=kind-enforcer-client
	namespace "$a"
	namespace "$b"
	pod "$a" server virginia "$server_command"
	pod "$b" client dublin 'exec sleep 100000'
	kubectl wait --for condition=Ready --timeout 180s -n "$a" pod/server >/dev/null
	kubectl wait --for condition=Ready --timeout 180s -n "$b" pod/client >/dev/null
	local server
	server=$(pod_ip "$a" server):8080
	eventually 60 "with no NetworkPolicy, $b/client (dublin) cannot reach $server (virginia)" reaches "$b" client "$server"
	kubectl apply -f - >/dev/null <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: $a}
spec: {podSelector: {}, policyTypes: [Ingress]}
YAML
	eventually 30 "a deny-ingress NetworkPolicy did not block $b/client -> $server (kube-router enforces nothing)" \
		unreachable "$b" client "$server"
	kubectl delete networkpolicy -n "$a" deny-ingress >/dev/null
	eventually 30 "the path to $server stayed closed after the NetworkPolicy was deleted" reaches "$b" client "$server"
	echo "kube-router enforces: blocked under deny-ingress, open again without it" >&2
}

# --- fence ----------------------------------------------------------------------------------
test_fence() {
	local in=kind-fence-in out=kind-fence-out gw=kind-fence-gateway
	fresh fence
	namespace "$in" kind-e2e-scope=fence
	namespace "$out"
	namespace "$gw" kind-e2e-role=gateway
	pod "$out" server "" "$server_command"
	pod "$gw" gateway "" "$server_command"
	pod "$in" server dublin "$server_command"
	pod "$in" client dublin 'exec sleep 100000'
	# Two servers outside the cluster, on kind's Docker network: one whose address the
	# policy allows (allowEgressCIDRs), one it does not.
	local ext
	for ext in allowed denied; do
		docker rm -f "kind-e2e-$ext" >/dev/null 2>&1 || true
		docker run -d --name "kind-e2e-$ext" --network kind "$busybox" sh -c "$server_command" >/dev/null
	done
	local allowed_ip denied_ip
	allowed_ip=$(docker inspect -f '{{.NetworkSettings.Networks.kind.IPAddress}}' kind-e2e-allowed)
	denied_ip=$(docker inspect -f '{{.NetworkSettings.Networks.kind.IPAddress}}' kind-e2e-denied)
	kubectl wait --for condition=Ready --timeout 180s -n "$out" pod/server >/dev/null
	kubectl wait --for condition=Ready --timeout 180s -n "$gw" pod/gateway >/dev/null
	kubectl wait --for condition=Ready --timeout 180s -n "$in" pod/server pod/client >/dev/null
	local outside inside gateway
	outside=$(pod_ip "$out" server):8080
	inside=$(pod_ip "$in" server):8080
	gateway=$(pod_ip "$gw" gateway):8080

	# Before any policy every path is open: a path closed later is closed by the fence.
	for url in "$outside" "$inside" "$gateway" "$allowed_ip:8080" "$denied_ip:8080"; do
		eventually 60 "before any policy, $in/client cannot reach $url (the network itself is broken)" \
			reaches "$in" client "$url"
	done

	enclave fence "$prober_access"
	policy fence fence "  migration: {enabled: false}
  network:
    allowEgressCIDRs: [$allowed_ip/32]"
	eventually 120 "the policy fence did not become Ready" policy_ready fence
	eventually 60 "the fence did not close the path from $in/client to $outside (pod outside the enclave)" \
		unreachable "$in" client "$outside"
	# kube-router writes each NetworkPolicy in its own sync: the allow half of the fence
	# may land a few seconds after the deny half.
	eventually 30 "$in/client no longer reaches $inside in its own namespace" reaches "$in" client "$inside"
	eventually 30 "$in/client no longer reaches the enclave's gateway $gateway" reaches "$in" client "$gateway"
	eventually 30 "$in/client no longer reaches $allowed_ip:8080, inside allowEgressCIDRs" \
		reaches "$in" client "$allowed_ip:8080"
	dns() { kubectl "${prober[@]}" exec -n "$in" client -- nslookup kubernetes.default.svc.cluster.local >/dev/null 2>&1; }
	eventually 30 "$in/client cannot resolve kubernetes.default.svc.cluster.local through cluster DNS" dns
	# With the whole fence in force, what is outside is still out of reach.
	unreachable "$in" client "$outside" || die "$in/client reaches $outside again, with the whole fence in force"
	unreachable "$in" client "$denied_ip:8080" ||
		die "$in/client reaches $denied_ip:8080, an address outside allowEgressCIDRs"
	echo "fenced: $in -> $out and -> $denied_ip blocked; own namespace, gateway, $allowed_ip, DNS open" >&2

	# A tenant's own policy that allows all egress reopens the path (NetworkPolicies are
	# additive) and is reported by name.
	kubectl apply -f - >/dev/null <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: tenant-allow-all, namespace: $in}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{}]
YAML
	eventually 60 "a tenant's allow-all policy did not reopen the path to $outside" reaches "$in" client "$outside"
	# NetworkFenced=False, and the violation names the tenant's policy.
	leak() {
		kubectl get residencypolicy fence -o json | jq -r --arg via "$in/tenant-allow-all" '.status.violations[]? |
			select(.reason == "NetworkLeak" and (.message | contains($via))) | .message'
	}
	fence_reported() { [[ $(condition fence NetworkFenced) == False\ * && -n $(leak) ]]; }
	eventually 60 "the policy does not report the tenant's allow-all policy" fence_reported
	local reported
	reported="$(leak) (NetworkFenced: $(condition fence NetworkFenced))"
	kubectl delete networkpolicy -n "$in" tenant-allow-all >/dev/null
	eventually 60 "the path to $outside stayed open after the tenant's policy was deleted" \
		unreachable "$in" client "$outside"
	echo "reopened by tenant-allow-all, reported as $reported; closed again once it was deleted" >&2
}

# --- access -----------------------------------------------------------------------------------
test_access() {
	local ns=kind-access
	fresh access
	namespace "$ns" kind-e2e-scope=access
	enclave access "access: {approvedUsers: [kind-steward]}"
	# The same RBAC for both: what refuses the outsider is the enclave's gate, not RBAC.
	kubectl apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: exec, namespace: $ns}
rules:
  - {apiGroups: [""], resources: [pods], verbs: [get, list]}
  - {apiGroups: [""], resources: [pods/exec], verbs: [create, get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: exec, namespace: $ns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: exec}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: kind-steward}
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: kind-outsider}
YAML
	pod "$ns" work dublin 'echo enclave-data > /tmp/record && exec sleep 100000'
	kubectl wait --for condition=Ready --timeout 180s -n "$ns" pod/work >/dev/null
	policy access access "  migration: {enabled: false}"
	eventually 120 "the policy access did not become Ready" policy_ready access

	local out=""
	steward_exec() { out=$(kubectl --as kind-steward exec -n "$ns" work -- cat /tmp/record 2>&1); }
	eventually 30 "the approved steward's exec failed: $out" steward_exec
	[[ $out == enclave-data ]] || die "the approved steward's exec returned '$out', not the file's content"
	local copy
	copy=$(mktemp)
	kubectl --as kind-steward cp "$ns/work:/tmp/record" "$copy" >/dev/null 2>&1 ||
		die "the approved steward's kubectl cp failed"
	[[ $(cat "$copy") == enclave-data ]] || die "kubectl cp copied '$(cat "$copy")'"
	rm -f "$copy"
	if out=$(kubectl --as kind-outsider exec -n "$ns" work -- cat /tmp/record 2>&1); then
		die "an outsider's exec ran: $out"
	fi
	[[ $out == *access* ]] || die "the outsider was refused, but not by the enclave's gate: $out"
	[[ $out != *enclave-data* ]] || die "the outsider's refused exec still printed the data"
	if out=$(kubectl --as kind-outsider cp "$ns/work:/tmp/record" /dev/null 2>&1); then
		die "an outsider's kubectl cp succeeded"
	fi
	echo "steward's exec and cp ran; outsider refused: ${out%%$'\n'*}" >&2
}

# --- storage --------------------------------------------------------------------------------
# node_container NODE: the Docker container of the kind node NODE (by its InternalIP).
node_container() {
	local ip container
	ip=$(kubectl get node "$1" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
	for container in $(docker ps -q --filter "label=io.x-k8s.kind.cluster=$name"); do
		if [[ $(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$container") == "$ip" ]]; then
			echo "$container"
			return 0
		fi
	done
	die "no container of the kind cluster has $1's address $ip"
}
# claim NAMESPACE NAME CLASS [kubectl create FLAGS...]: a 1 GiB ReadWriteOnce claim.
claim() {
	local ns=$1 claim_name=$2 class=$3
	shift 3
	kubectl create "$@" -f - <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $claim_name, namespace: $ns}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: $class
  resources: {requests: {storage: 1Gi}}
YAML
}
volume_gone() { ! kubectl get pv "$1" >/dev/null 2>&1; }
test_storage() {
	local ns=kind-storage node=dublin-a
	fresh storage
	namespace "$ns" kind-e2e-scope=storage
	enclave storage "$prober_access"
	policy storage storage "  migration: {enabled: false}"
	eventually 120 "the policy storage did not become Ready" policy_ready storage
	# The enclave's storage guard: a claim on a class outside the enclave is refused.
	local refused
	if refused=$(claim "$ns" outside us-east-ssd --dry-run=server 2>&1); then
		die "a claim on us-east-ssd (outside the enclave) was admitted in an enclave namespace: $refused"
	fi
	echo "a claim on us-east-ssd is refused: ${refused%%$'\n'*}" >&2
	# A claim on the Dublin class, provisioned by local-path-provisioner on the node its
	# first pod is scheduled to (WaitForFirstConsumer), which the class's allowedTopologies
	# and the policy's placement both confine to Dublin. A token of this run is written, so
	# that a directory left by an earlier run cannot pass.
	local token=run-$$-$RANDOM
	claim "$ns" data eu-dublin-ssd >/dev/null
	writer() {
		kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $ns}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: $busybox
      imagePullPolicy: Never
      command: [sh, -c, '$2']
      volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
YAML
	}
	writer first "echo $token > /data/record && exec sleep 100000"
	kubectl wait --for condition=Ready --timeout 180s -n "$ns" pod/first >/dev/null ||
		die "the pod with the claim on eu-dublin-ssd did not start"
	[[ $(kubectl get pod -n "$ns" first -o jsonpath='{.spec.nodeName}') == "$node" ]] ||
		die "the pod with the Dublin claim runs outside $node"
	# The volume is the provisioner's, bound to the Dublin node, and the bytes are on that
	# node's disk.
	local pv path
	pv=$(kubectl get pvc -n "$ns" data -o jsonpath='{.spec.volumeName}')
	[[ -n $pv ]] || die "the claim on eu-dublin-ssd is not bound"
	[[ $(kubectl get pv "$pv" -o jsonpath='{.metadata.annotations.pv\.kubernetes\.io/provisioned-by}') == rancher.io/local-path ]] ||
		die "the volume $pv was not made by local-path-provisioner"
	[[ $(kubectl get pv "$pv" -o jsonpath='{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}') == "$node" ]] ||
		die "the volume $pv is not bound to $node: $(kubectl get pv "$pv" -o jsonpath='{.spec.nodeAffinity}')"
	path=$(kubectl get pv "$pv" -o jsonpath='{.spec.hostPath.path}{.spec.local.path}')
	local on_disk container
	container=$(node_container "$node")
	on_disk=$(docker exec "$container" cat "$path/record" 2>&1) || die "no record in $path on $node's disk: $on_disk"
	[[ $on_disk == "$token" ]] || die "$node's disk holds '$on_disk' in $path, not $token"
	kubectl delete pod -n "$ns" first --wait >/dev/null
	writer second 'exec sleep 100000'
	kubectl wait --for condition=Ready --timeout 180s -n "$ns" pod/second >/dev/null ||
		die "the rescheduled pod did not start"
	local read
	read=$(kubectl "${prober[@]}" exec -n "$ns" second -- cat /data/record 2>&1) || die "the rescheduled pod cannot read the claim: $read"
	[[ $read == "$token" ]] || die "the rescheduled pod read '$read', not what the first pod wrote ($token)"
	# The class's reclaim policy (Delete) goes through the provisioner: the volume and its
	# directory are gone once the claim is.
	kubectl delete pod -n "$ns" second --wait >/dev/null
	kubectl delete pvc -n "$ns" data --wait >/dev/null
	eventually 120 "the volume $pv outlived its claim (reclaim policy Delete)" volume_gone "$pv"
	eventually 60 "$path is still on $node's disk after its volume was deleted" not docker exec "$container" test -e "$path"
	echo "the claim kept '$token' on $node's disk ($path) across the pod's rescheduling; deleted with its claim" >&2
}

# virginia_workload NAMESPACE KIND NAME REPLICAS APP GROUP: a Deployment or StatefulSet of
# sleeping busybox pods that prefer Virginia, so that they start outside the enclave
# before any policy covers them (labels app=APP and, unless empty, group=GROUP).
virginia_workload() {
	local ns=$1 kind_of=$2 name=$3 replicas=$4 app=$5 group=$6
	kubectl apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: $kind_of
metadata: {name: $name, namespace: $ns}
spec:
  replicas: $replicas
  selector: {matchLabels: {app: $app}}
  $([[ $kind_of == StatefulSet ]] && echo "serviceName: $name")
  template:
    metadata: {labels: {app: $app$([[ -n $group ]] && echo ", group: $group")}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        nodeAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              preference:
                matchExpressions:
                  - {key: node-restriction.kubernetes.io/enclave-site, operator: In, values: [virginia]}
      containers:
        - name: main
          image: $busybox
          imagePullPolicy: Never
          command: [sh, -c, 'exec sleep 100000']
YAML
}

# --- migration ------------------------------------------------------------------------------
test_migration() {
	local ns=kind-migration
	fresh migration
	namespace "$ns"
	# The pods start in Virginia: outside the enclave, before any policy covers them.
	virginia_workload "$ns" Deployment deployment 2 deployment web
	virginia_workload "$ns" StatefulSet statefulset 2 statefulset web
	kubectl rollout status -n "$ns" deployment/deployment --timeout 180s >/dev/null
	kubectl rollout status -n "$ns" statefulset/statefulset --timeout 180s >/dev/null
	sites() {
		kubectl get pods -n "$ns" -l group=web -o json | jq -r '.items[] | select(.metadata.deletionTimestamp == null) | "\(.status.phase) \(.spec.nodeName) \(.metadata.ownerReferences[0].kind)"' | sort
	}
	[[ $(sites | grep -c ' virginia-a ') -ge 2 ]] || die "fewer than 2 of the 4 pods started in Virginia (before: $(sites | tr '\n' ' '))"
	local before
	before=$(sites | tr '\n' ' ')
	enclave migration "$prober_access"
	policy migration migration "  migration: {enabled: true, maxEvictionsPerMinute: 60, maxConcurrent: 2}"
	kubectl label namespace "$ns" kind-e2e-scope=migration >/dev/null
	moved() {
		local now
		now=$(sites)
		[[ $(grep -c . <<<"$now") == 4 ]] && ! grep -qv -E '^Running (dublin|norway)-' <<<"$now"
	}
	eventually 240 "the pods were not moved into the enclave" moved
	echo "the Deployment's and the StatefulSet's pods moved into the enclave: before: $before; after: $(sites | tr '\n' ' ')" >&2
}

# --- volume move ----------------------------------------------------------------------------
# The data of a StatefulSet on Virginia storage, moved into the enclave by two
# VolumeMigrations (one per ordinal claim), each approved by an approver of the enclave.
# (One line: the pod's YAML quotes it in single quotes, which fold line ends.)
seed_command='set -e; if [ ! -e /data/.seeded ]; then'\
' mkdir -p /data/small /data/private /data/shared;'\
' i=0; while [ $i -lt 2000 ]; do echo "file $i of $HOSTNAME" > /data/small/f$i; i=$((i+1)); done;'\
' dd if=/dev/urandom of=/data/random.bin bs=1M count=16 2>/dev/null;'\
' dd if=/dev/zero of=/data/sparse.img bs=1 count=0 seek=512M 2>/dev/null; echo end >> /data/sparse.img;'\
' ln /data/random.bin /data/hardlink.bin; ln -s small/f1 /data/link; ln -s /nonexistent /data/dangling;'\
' echo secret > /data/private/key; chown -R 12345:23456 /data/private; chmod 0700 /data/private; chmod 0400 /data/private/key;'\
' echo none > /data/zero; chmod 0000 /data/zero; chown 1000:2000 /data/shared; chmod 2775 /data/shared;'\
' touch /data/.seeded; fi; exec sleep 100000'
# Path, type, owner, group, mode, size, link count and content (or link target) of every
# path of the volume, hashed: equal before and after means the same tree.
# A directory's st_size is how the filesystem laid out its entries (it depends on the
# order names were added, and rsync adds temporary names), not data: left out, as the
# mover's manifest leaves it out. Sizes of files and symlinks are kept.
tree_listing='cd /data && find . ! -name .seeded | sort | while IFS= read -r f; do
  if [ -L "$f" ]; then t=$(readlink "$f"); s=$(stat -c %s "$f"); elif [ -f "$f" ]; then t=$(md5sum < "$f" | cut -c1-32); s=$(stat -c %s "$f"); else t=-; s=-; fi
  echo "$f $(stat -c "%F %u %g %a %h" "$f") $s $t"
done'
tree_command="$tree_listing | md5sum | cut -c1-32"
volmig() { # volmig NS NAME CLAIM
	kubectl apply -f - >/dev/null <<YAML
apiVersion: enclave.dev/v1alpha1
kind: VolumeMigration
metadata: {name: $2, namespace: $1}
spec: {claimName: $3}
YAML
}
volmig_phase() { kubectl get volumemigration -n "$1" "$2" -o jsonpath='{.status.phase}' 2>/dev/null; }
volmig_in() { # volmig_in NS NAME PHASE...: the move is in one of the phases
	local phase
	phase=$(volmig_phase "$1" "$2")
	shift 2
	[[ " $* " == *" $phase "* ]]
}
test_volume_move() {
	local ns=kind-volume-move n
	fresh volmove
	namespace "$ns"
	kubectl apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: $ns}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: $busybox
          imagePullPolicy: Never
          command: [sh, -c, '$seed_command']
          volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        accessModes: [ReadWriteOnce]
        storageClassName: us-east-ssd
        resources: {requests: {storage: 1Gi}}
YAML
	kubectl rollout status -n "$ns" statefulset/db --timeout 240s >/dev/null ||
		die "the StatefulSet on us-east-ssd did not start"
	local -A before listing source_pv source_path
	for n in 0 1; do
		[[ $(kubectl get pod -n "$ns" "db-$n" -o jsonpath='{.spec.nodeName}') == virginia-* ]] ||
			die "db-$n does not run in Virginia"
		eventually 60 "db-$n did not finish seeding its volume" kubectl exec -n "$ns" "db-$n" -- test -e /data/.seeded
		before[$n]=$(kubectl exec -n "$ns" "db-$n" -- sh -c "$tree_command")
		listing[$n]=$(kubectl exec -n "$ns" "db-$n" -- sh -c "$tree_listing")
		source_pv[$n]=$(kubectl get pvc -n "$ns" "data-db-$n" -o jsonpath='{.spec.volumeName}')
		source_path[$n]=$(kubectl get pv "${source_pv[$n]}" -o jsonpath='{.spec.hostPath.path}{.spec.local.path}')
	done
	echo "db-0 and db-1 seeded in Virginia (trees ${before[0]} ${before[1]}; volumes ${source_pv[0]} ${source_pv[1]})" >&2
	local set_uid
	set_uid=$(kubectl get statefulset -n "$ns" db -o jsonpath='{.metadata.uid}')
	enclave volmove "access: {approvedUsers: [kind-e2e-prober], approverUsers: [kind-e2e-approver]}"
	policy volmove volmove "  migration: {enabled: true, volumeMoves: {minRetentionHours: 0, defaultRetentionHours: 0}}"
	kubectl label namespace "$ns" kind-e2e-scope=volmove >/dev/null
	eventually 120 "the policy volmove did not become Ready" policy_ready volmove
	for n in 0 1; do volmig "$ns" "data-db-$n" "data-db-$n"; done
	for n in 0 1; do
		eventually 120 "data-db-$n did not wait for an approval (phase $(volmig_phase "$ns" "data-db-$n"))" volmig_in "$ns" "data-db-$n" AwaitingApproval
	done
	# Nothing moves before the approval.
	[[ $(kubectl get pvc -n "$ns" data-db-0 -o jsonpath='{.spec.volumeName}') == "${source_pv[0]}" ]] ||
		die "data-db-0 was switched before anyone approved the move"
	for n in 0 1; do
		kubectl create --as kind-e2e-approver --as-group system:masters -f - >/dev/null <<YAML
apiVersion: enclave.dev/v1alpha1
kind: AccessApproval
metadata: {generateName: approve-data-db-$n-}
spec:
  decision: Approve
  approver: kind-e2e-approver
  reason: kind-e2e volume move
  volumeMigration: {namespace: $ns, name: data-db-$n, uid: $(kubectl get volumemigration -n "$ns" "data-db-$n" -o jsonpath='{.metadata.uid}')}
YAML
	done
	erased() { volmig_in "$ns" data-db-0 Erased && volmig_in "$ns" data-db-1 Erased; }
	ended() { volmig_in "$ns" data-db-0 Erased RolledBack Failed && volmig_in "$ns" data-db-1 Erased RolledBack Failed; }
	eventually 900 "the moves did not end: $(kubectl get volumemigrations -n "$ns" -o wide 2>&1)" ended
	erased || die "the moves did not end erased: $(kubectl get volumemigrations -n "$ns" -o yaml)"
	kubectl rollout status -n "$ns" statefulset/db --timeout 240s >/dev/null || die "the StatefulSet did not come back"
	local pv class node after
	for n in 0 1; do
		pv=$(kubectl get pvc -n "$ns" "data-db-$n" -o jsonpath='{.spec.volumeName}')
		class=$(kubectl get pv "$pv" -o jsonpath='{.spec.storageClassName}')
		[[ $class == eu-dublin-ssd || $class == eu-norway-ssd ]] || die "data-db-$n is bound to $pv of class $class, not the enclave's"
		node=$(kubectl get pod -n "$ns" "db-$n" -o jsonpath='{.spec.nodeName}')
		[[ $node == dublin-* || $node == norway-* ]] || die "db-$n runs on $node after the move, not in the enclave"
		after=$(kubectl "${prober[@]}" exec -n "$ns" "db-$n" -- sh -c "$tree_command")
		[[ $after == "${before[$n]}" ]] ||
			die "db-$n's tree differs after the move ($after, before ${before[$n]}): $(diff <(echo "${listing[$n]}") <(kubectl "${prober[@]}" exec -n "$ns" "db-$n" -- sh -c "$tree_listing") | head -20)"
		local allocated
		allocated=$(kubectl "${prober[@]}" exec -n "$ns" "db-$n" -- du -k /data/sparse.img | cut -f1)
		((allocated < 10240)) || die "the sparse file of db-$n takes $allocated KiB after the move (not sparse)"
		eventually 120 "the source volume ${source_pv[$n]} of data-db-$n was not erased" volume_gone "${source_pv[$n]}"
		eventually 60 "${source_path[$n]} is still on Virginia's disk" not docker exec "$(node_container virginia-a)" test -e "${source_path[$n]}"
		echo "data-db-$n: on $pv ($class, $node), same tree (${before[$n]}), sparse file $allocated KiB, source ${source_pv[$n]} erased" >&2
	done
	# The claim template names the enclave's class (the set was made again, its template
	# being immutable): a scale-up's new claim is provisioned inside, and its pod runs there.
	local template_class replaced
	template_class=$(kubectl get statefulset -n "$ns" db -o jsonpath='{.spec.volumeClaimTemplates[0].spec.storageClassName}')
	[[ $template_class == eu-dublin-ssd ]] || die "the StatefulSet's claim template names $template_class after the move, not eu-dublin-ssd"
	[[ $(kubectl get statefulset -n "$ns" db -o jsonpath='{.metadata.uid}') != "$set_uid" ]] || die "the StatefulSet was not made again"
	replaced=$(kubectl get volumemigrations -n "$ns" -o json | jq -r --arg uid "$set_uid" '[.items[].status.statefulSetReplacement
		| select(. != null and .replacedUid == $uid and .templates == [{"name": "data", "previousStorageClassName": "us-east-ssd"}]
			and .storageClassName == "eu-dublin-ssd" and .recreated != null and .manifest == null)] | length')
	[[ $replaced == 1 ]] || die "no move records the StatefulSet's replacement: $(kubectl get volumemigrations -n "$ns" -o yaml)"
	kubectl scale statefulset -n "$ns" db --replicas 3 >/dev/null
	kubectl rollout status -n "$ns" statefulset/db --timeout 240s >/dev/null || die "the StatefulSet did not scale to 3 after the move"
	pv=$(kubectl get pvc -n "$ns" data-db-2 -o jsonpath='{.spec.volumeName}')
	class=$(kubectl get pv "$pv" -o jsonpath='{.spec.storageClassName}')
	node=$(kubectl get pod -n "$ns" db-2 -o jsonpath='{.spec.nodeName}')
	[[ $class == eu-dublin-ssd && ($node == dublin-* || $node == norway-*) ]] ||
		die "the scale-up's claim data-db-2 is on $class and db-2 on $node, not the enclave"
	echo "StatefulSet db made again with its claim template on $template_class; scaled up, data-db-2 is on $class ($node)" >&2
	# The evidence: every step of both moves in the leader chain, whose hash chain holds.
	local logs records
	logs=$(mktemp)
	# A leader's log continues the leader chain from a checkpoint (the Lease changed hands
	# since the chain started): verified against the checkpoints the operators stored.
	kubectl get configmap -n enclave-system enclave-operator-checkpoints -o json |
		jq -r '.data["enclave-system.leader"]' >"$logs.checkpoints"
	for pod in $(kubectl get pods -n enclave-system -l app.kubernetes.io/name=enclave-operator -o name); do
		kubectl logs -n enclave-system "$pod" >"$logs.$(basename "$pod")"
		if grep -q '"kind":"VolumeMoveStep"' "$logs.$(basename "$pod")"; then
			cat "$logs.$(basename "$pod")" >>"$logs"
			target/debug/enclave-operator verify-log --skip-other-lines --chain enclave-system/leader \
				--checkpoints "$logs.checkpoints" "$logs.$(basename "$pod")" >&2 ||
				die "the leader chain in $pod's log does not verify"
		fi
	done
	records=$(grep -o '"kind":"VolumeMoveStep".*"phase":"[A-Za-z]*"' "$logs" | grep -o '"phase":"[A-Za-z]*"' | sort | uniq -c | tr '\n' ' ')
	for phase in AwaitingApproval Copying Quiescing FinalSync Verifying Switching Restoring Done Erasing Erased; do
		[[ $records == *"\"phase\":\"$phase\""* ]] || die "no VolumeMoveStep record of phase $phase in the operators' logs ($records)"
	done
	grep '"kind":"VolumeMoveStep"' "$logs" | grep '"phase":"Erased"' | grep -q '"sourceRootHash":"[0-9a-f]\{64\}"' ||
		die "the Erased records name no manifest root hash"
	echo "decision log: $records" >&2
	rm -f "$logs" "$logs".*
	# The audit report lists both moves, erased, with their equal root hashes.
	local report listed
	report=$(target/debug/enclave-operator audit --policy volmove --json - 2>/dev/null || true)
	listed=$(jq -r --arg ns "$ns" '[.moves.moves[]? | select(.namespace == $ns and .phase == "Erased"
		and .sourceRootHash != null and .sourceRootHash == .destinationRootHash) | .claim] | sort | join(" ")' <<<"$report")
	[[ $listed == "data-db-0 data-db-1" ]] || die "the audit report does not list both moves as erased with equal root hashes: '$listed'"
	echo "audit: the moves of $listed listed as erased, root hashes equal" >&2
}

# --- volume rollback ------------------------------------------------------------------------
# A Deployment's claim on Virginia storage: a move whose transfer is cut in the middle, and
# one whose source changes behind the mover's back before the verification, both roll
# back, the claim on its volume and the data on Virginia's disk as they were. Then a third
# move brings the Deployment's data in. The policy audits (a rollback after the quiesce
# restores the replicas; under Enforce they would be placed in the enclave, away from their
# volume, docs/design.md "Moving a volume's data"). Its copies are limited to 32 MiB/s,
# and the cut move's status shows the first copy's progress while it runs. First, a move
# over the namespace's ResourceQuota fails its preflight.
tree_on_disk() { # tree_on_disk CONTAINER PATH: tree_command, on a node's disk
	docker exec "$1" sh -c "${tree_command/cd \/data/cd $2}"
}
test_volume_rollback() {
	local ns=kind-volume-rollback virginia reason
	virginia=$(node_container virginia-a)
	fresh volrollback
	namespace "$ns"
	claim "$ns" files us-east-ssd >/dev/null
	kubectl apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: $ns}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: $busybox
          imagePullPolicy: Never
          command: [sh, -c, '[ -e /data/zzz-last ] || echo last > /data/zzz-last; $seed_command']
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, persistentVolumeClaim: {claimName: files}}]
YAML
	kubectl rollout status -n "$ns" deployment/app --timeout 240s >/dev/null || die "the Deployment on us-east-ssd did not start"
	local app pv path before
	app() { kubectl get pods -n "$ns" -l app=app -o jsonpath='{.items[0].metadata.name}'; }
	eventually 60 "the app did not finish seeding its volume" kubectl exec -n "$ns" "$(app)" -- test -e /data/.seeded
	pv=$(kubectl get pvc -n "$ns" files -o jsonpath='{.spec.volumeName}')
	path=$(kubectl get pv "$pv" -o jsonpath='{.spec.hostPath.path}{.spec.local.path}')
	before=$(tree_on_disk "$virginia" "$path")
	enclave volrollback "access: {approvedUsers: [kind-e2e-prober], approverUsers: [kind-e2e-approver]}"
	kubectl apply -f - >/dev/null <<YAML
apiVersion: enclave.dev/v1alpha1
kind: ResidencyPolicy
metadata: {name: volrollback, labels: {kind-e2e: "1"}}
spec:
  enclave: volrollback
  match: {namespaceSelector: {matchLabels: {kind-e2e-scope: volrollback}}}
  enforcement: Audit
  migration: {enabled: false, volumeMoves: {requireApproval: false, minRetentionHours: 0, defaultRetentionHours: 0, bandwidthLimitMiBPerSecond: 32}}
YAML
	kubectl label namespace "$ns" kind-e2e-scope=volrollback >/dev/null
	eventually 120 "the policy volrollback did not become Ready" policy_ready volrollback
	intact() { # the claim on its volume (Delete again), nothing of the move left, the bytes as they were
		[[ $(kubectl get pvc -n "$ns" files -o jsonpath='{.spec.volumeName}') == "$pv" ]] || die "the claim is no longer on $pv after the rollback"
		[[ $(kubectl get pv "$pv" -o jsonpath='{.spec.persistentVolumeReclaimPolicy}') == Delete ]] || die "$pv kept the move's Retain after the rollback"
		not kubectl get pvc -n "$ns" files-enclave-move >/dev/null 2>&1 || die "the destination claim outlived the rollback"
		[[ -z $(kubectl get pods,secrets,configmaps -n "$ns" -l enclave.dev/volume-migration -o name) ]] || die "mover objects outlived the rollback"
		[[ $(tree_on_disk "$virginia" "$path") == "$1" ]] || die "the source on Virginia's disk changed: $(tree_on_disk "$virginia" "$path") is not $1"
		kubectl rollout status -n "$ns" deployment/app --timeout 120s >/dev/null || die "the app is not back after the rollback"
	}
	# 0. A ResourceQuota that leaves less of the enclave's class than the claim needs: the
	# move fails its preflight naming the quota, and nothing changes.
	kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ResourceQuota
metadata: {name: enclave-storage, namespace: $ns}
spec: {hard: {eu-dublin-ssd.storageclass.storage.k8s.io/requests.storage: 100Mi}}
YAML
	volmig "$ns" quota files
	eventually 60 "the move over the quota did not fail (phase $(volmig_phase "$ns" quota))" volmig_in "$ns" quota Failed
	reason=$(kubectl get volumemigration -n "$ns" quota -o jsonpath='{.status.message}')
	[[ $reason == *"ResourceQuota leaves 100.0 MiB"* ]] || die "the move over the quota failed for another reason: $reason"
	kubectl delete resourcequota -n "$ns" enclave-storage >/dev/null
	intact "$before"
	echo "a move over the namespace's quota failed its preflight ($reason)" >&2
	# 1. The transfer cut: rsync killed on Virginia's node during the first copy.
	volmig "$ns" cut files
	sender_runs() { docker exec "$virginia" pgrep -x rsync >/dev/null; }
	eventually 180 "the first copy's sender never ran (phase $(volmig_phase "$ns" cut))" sender_runs
	# While it runs (about 17 s at the policy's 32 MiB/s), the status shows the sender's
	# counters: the operator reads them through the fence (enclave-fence-deny isolates the
	# namespace) over the move's own TLS.
	kubectl get networkpolicy -n "$ns" enclave-fence-deny-volrollback >/dev/null || die "the namespace is not fenced"
	progress_shown() {
		kubectl get volumemigration -n "$ns" cut -o json | jq -e '.status.phase == "Copying"
			and (.status.bytesDone // 0) > 0 and (.status.progress | startswith("first copy: "))' >/dev/null
	}
	eventually 60 "no progress in the status during the first copy ($(kubectl get volumemigration -n "$ns" cut -o jsonpath='{.status.progress}'))" progress_shown
	local progress rate
	progress=$(kubectl get volumemigration -n "$ns" cut -o jsonpath='{.status.progress}')
	rate=$(kubectl get volumemigration -n "$ns" cut -o jsonpath='{.status.bytesPerSecond}')
	((${rate:-0} <= 36 * 1048576)) || die "the first copy ran at $rate bytes/s, above the policy's 32 MiB/s"
	echo "during the first copy: $progress" >&2
	docker exec "$virginia" pkill -x rsync
	eventually 180 "the cut move did not roll back (phase $(volmig_phase "$ns" cut))" volmig_in "$ns" cut RolledBack
	reason=$(kubectl get volumemigration -n "$ns" cut -o jsonpath='{.status.rollbackReason}')
	[[ $reason == *"first copy"*failed* ]] || die "the cut move rolled back for another reason: $reason"
	intact "$before"
	echo "a transfer cut in the first copy rolled back ($reason); the source is intact" >&2
	# 2. A file changed behind the mover's back: the source's last file grows on Virginia's
	# disk as the verification starts.
	# (A mover container the node's runtime could not start, as runc on this cgroup v1
	# host under load sometimes cannot, "unable to freeze", does not roll back: the
	# operator runs that pass again, up to 3 times.)
	local changed
	volmig "$ns" mismatch files
	eventually 300 "the mismatch move never verified (phase $(volmig_phase "$ns" mismatch))" volmig_in "$ns" mismatch Verifying RollingBack RolledBack
	docker exec "$virginia" sh -c "echo changed >> $path/zzz-last"
	changed=$(tree_on_disk "$virginia" "$path")
	eventually 300 "the mismatch move did not roll back (phase $(volmig_phase "$ns" mismatch))" volmig_in "$ns" mismatch RolledBack
	reason=$(kubectl get volumemigration -n "$ns" mismatch -o jsonpath='{.status.rollbackReason}')
	[[ $reason == *zzz-last* ]] || die "the mismatch move rolled back without naming the changed file: $reason"
	intact "$changed"
	echo "a file changed during the verification rolled back ($reason); the source is intact" >&2
	# 3. The move done.
	volmig "$ns" done files
	eventually 600 "the third move did not end (phase $(volmig_phase "$ns" done))" volmig_in "$ns" done Erased RolledBack Failed
	volmig_in "$ns" done Erased || die "the third move ended $(volmig_phase "$ns" done): $(kubectl get volumemigration -n "$ns" done -o jsonpath='{.status.message}')"
	kubectl rollout status -n "$ns" deployment/app --timeout 120s >/dev/null || die "the app is not back after the move"
	[[ $(kubectl "${prober[@]}" exec -n "$ns" "$(app)" -- sh -c "$tree_command") == "$changed" ]] || die "the Deployment's data differs after the move"
	[[ $(kubectl get pvc -n "$ns" files -o jsonpath='{.spec.storageClassName}') == eu-* ]] || die "the claim is not on enclave storage after the move"
	echo "the Deployment's claim moved into the enclave with the same tree ($changed)" >&2
}

# --- failover -------------------------------------------------------------------------------
# The leader is force-deleted while a slow migration runs: the other replica takes the
# Lease and finishes it, and a pod already moved in is not evicted again.
test_failover() {
	local ns=kind-failover
	fresh failover
	namespace "$ns"
	virginia_workload "$ns" Deployment web 4 web ""
	kubectl rollout status -n "$ns" deployment/web --timeout 180s >/dev/null
	pods() { # "name node" of the running, not terminating pods
		kubectl get pods -n "$ns" -l app=web -o json | jq -r '.items[] |
			select(.metadata.deletionTimestamp == null and .status.phase == "Running") | "\(.metadata.name) \(.spec.nodeName)"'
	}
	[[ $(pods | grep -c ' virginia-') -ge 2 ]] || die "fewer than 2 of the 4 pods started in Virginia: $(pods | tr '\n' ' ')"
	enclave failover "$prober_access"
	# Two moves in the first minute at most: the leader cannot finish all four before it is
	# killed (at 4 a minute it did, on a fast run, and the Lease had not passed yet).
	policy failover failover "  migration: {enabled: true, maxEvictionsPerMinute: 2, maxConcurrent: 1}"
	kubectl label namespace "$ns" kind-e2e-scope=failover >/dev/null
	inside() { pods | grep -E ' (dublin|norway)-' | cut -d' ' -f1; }
	some_inside() { [[ -n $(inside) ]] && pods | grep -q ' virginia-'; }
	eventually 120 "the migration did not start (pods: $(pods | tr '\n' ' '))" some_inside
	local moved_before leader
	moved_before=$(inside)
	leader=$(kubectl get lease -n enclave-system enclave-operator -o jsonpath='{.spec.holderIdentity}')
	[[ -n $leader ]] || die "no holder of the enclave-operator Lease"
	kubectl delete pod -n enclave-system "$leader" --grace-period=0 --force >/dev/null 2>&1
	all_inside() { [[ $(pods | grep -cE ' (dublin|norway)-') == 4 ]]; }
	eventually 240 "after the leader $leader was killed, the migration did not finish (pods: $(pods | tr '\n' ' '))" all_inside
	local new_leader pod
	holder() { kubectl get lease -n enclave-system enclave-operator -o jsonpath='{.spec.holderIdentity}'; }
	lease_passed() { [[ $(holder) != "$leader" ]]; }
	eventually 60 "the killed pod $leader still holds the Lease" lease_passed
	new_leader=$(holder)
	for pod in $moved_before; do
		pods | grep -q "^$pod " || die "pod $pod, moved into the enclave before the leader was killed, was evicted again"
	done
	echo "leader $leader killed mid-migration ($(wc -w <<<"$moved_before") of 4 moved); $new_leader finished it; the moved pods were not evicted again" >&2
	kubectl rollout status -n enclave-system deployment/enclave-operator --timeout 180s >/dev/null
}

# --- native -----------------------------------------------------------------------------------
# The native engine decides inside the API server: with both operator pods gone, a pod
# pinned outside the enclave is still refused, and one pinned inside is still admitted.
test_native() {
	local ns=kind-native
	fresh native
	namespace "$ns" kind-e2e-scope=native
	enclave native "$prober_access"
	policy native native "  migration: {enabled: false}
  admission: {engine: Native}"
	eventually 120 "the policy native did not become Ready" policy_ready native
	trap 'kubectl scale -n enclave-system deployment/enclave-operator --replicas 2 >/dev/null' EXIT
	kubectl scale -n enclave-system deployment/enclave-operator --replicas 0 >/dev/null
	gone() { [[ -z $(kubectl get pods -n enclave-system -l app.kubernetes.io/name=enclave-operator -o name) ]]; }
	eventually 60 "the operator's pods did not go away" gone
	pinned() { # pinned SITE: a server-side dry run of a pod pinned to SITE
		kubectl create --dry-run=server -o name -f - 2>&1 <<YAML
apiVersion: v1
kind: Pod
metadata: {name: pinned-$1, namespace: $ns}
spec:
  nodeSelector: {node-restriction.kubernetes.io/enclave-site: $1}
  containers: [{name: main, image: $busybox, imagePullPolicy: Never}]
YAML
	}
	local refused admitted
	if refused=$(pinned virginia); then
		die "with the operator gone, a pod pinned to Virginia was admitted: $refused"
	fi
	[[ $refused == *"ValidatingAdmissionPolicy 'enclave-check.native'"*"DataEnclave native"* ]] ||
		die "the pod pinned to Virginia was refused, but not by the policy's native check: $refused"
	admitted=$(pinned dublin) || die "with the operator gone, a pod pinned to Dublin was refused: $admitted"
	echo "operator at zero replicas: a pod pinned to Virginia refused by the API server (${refused%%:*}...), one pinned to Dublin admitted" >&2
	kubectl scale -n enclave-system deployment/enclave-operator --replicas 2 >/dev/null
	kubectl rollout status -n enclave-system deployment/enclave-operator --timeout 180s >/dev/null
	trap - EXIT
}

# --- hosts ------------------------------------------------------------------------------------
# Host access from outside the enclave: what the enclave reports is a real way to its data
# on a real node's disk, and Pod Security Admission at baseline, which the report asks
# for, closes it.
test_hosts() {
	local ns=kind-hosts outside=kind-hosts-outside secret="enclave-data-$RANDOM$RANDOM"
	fresh hosts
	namespace "$ns" kind-e2e-scope=hosts
	namespace "$outside"
	enclave hosts "$prober_access"
	policy hosts hosts "  migration: {enabled: false}"
	eventually 120 "the policy hosts did not become Ready" policy_ready hosts
	kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: record, namespace: $ns}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: $busybox
      imagePullPolicy: Never
      command: [sh, -c, 'echo $secret > /data/record && exec sleep 100000']
      volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, emptyDir: {}}]
YAML
	kubectl wait --for condition=Ready --timeout 180s -n "$ns" pod/record >/dev/null
	local node uid
	node=$(kubectl get pod -n "$ns" record -o jsonpath='{.spec.nodeName}')
	uid=$(kubectl get pod -n "$ns" record -o jsonpath='{.metadata.uid}')
	reader() { # reader NAME: a pod of the outside namespace bound to the record's node
		kubectl create -f - 2>&1 <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $outside}
spec:
  terminationGracePeriodSeconds: 1
  nodeName: $node
  containers:
    - name: main
      image: $busybox
      imagePullPolicy: Never
      command: [sh, -c, 'cat /host/$uid/volumes/kubernetes.io~empty-dir/data/record; exec sleep 100000']
      volumeMounts: [{name: host, mountPath: /host, readOnly: true}]
  volumes: [{name: host, hostPath: {path: /var/lib/kubelet/pods}}]
YAML
	}
	local out
	out=$(reader reader) || die "the outside namespace's host reader was refused: $out"
	read_back() { [[ $(kubectl logs -n "$outside" reader 2>/dev/null) == "$secret" ]]; }
	eventually 120 "the host reader on $node did not print the in-scope pod's file" read_back
	listed() { # listed NS: the enclave's status lists NS
		kubectl get dataenclave hosts -o json |
			jq -e --arg ns "$1" '.status.hostAccessNamespaces // [] | index($ns) != null' >/dev/null
	}
	host_condition() {
		kubectl get dataenclave hosts -o json |
			jq -r '.status.conditions[]? | select(.type == "HostAccessGuarded") | "\(.status) \(.reason)"'
	}
	eventually 60 "the enclave does not list $outside" listed "$outside"
	not listed "$ns" || die "the enclave lists its own namespace $ns"
	[[ $(host_condition) == "False HostAccessAllowed" ]] || die "HostAccessGuarded is '$(host_condition)'"
	kubectl delete pod -n "$outside" reader --wait=false >/dev/null

	kubectl label namespace "$outside" pod-security.kubernetes.io/enforce=baseline >/dev/null 2>&1
	if out=$(reader reader-2); then
		die "with Pod Security at baseline, the host reader was admitted: $out"
	fi
	[[ $out == *"violates PodSecurity"* ]] || die "the host reader was refused, but not by Pod Security: $out"
	eventually 60 "the enclave still lists $outside after it was labelled" not listed "$outside"
	echo "a pod of $outside on $node read the in-scope pod's emptyDir from the node's disk; labelled baseline, the same pod was refused (${out%%$'\n'*})" >&2
}

failed=()
for t in $tests; do
	declare -F "test_$t" >/dev/null || die "unknown test '$t' (enforcer, fence, access, storage, migration, volume_move, volume_rollback, failover, native, hosts)"
	step "test: $t"
	[[ $t == enforcer ]] || install_operator
	start=$SECONDS
	# A subshell with errexit of its own, outside any condition (where bash would ignore
	# it): the first failing command ends this test, and the next one still runs.
	set +e
	(
		set -e
		"test_$t"
	)
	status=$?
	set -e
	((status == 0)) || failed+=("$t")
	echo "test $t: $( ((status == 0)) && echo passed || echo FAILED) in $((SECONDS - start)) s" >&2
done
((${#failed[@]} == 0)) || die "failed: ${failed[*]}"
echo "kind-e2e: passed ($tests) in $((SECONDS - start_all)) s" >&2
