#!/usr/bin/env bash
# make kind-e2e: the integration suite against the operator running in a real cluster
# from its container image, on kind (https://kind.sigs.k8s.io/).
#
# Needs a running Docker engine and kind v0.24 or later (its default CNI, kindnet,
# enforces NetworkPolicies) on PATH, so it CANNOT run on machines without Docker: those
# run `make test` against the local control plane instead. kubectl and helm are the
# pinned ones of tools/cluster (built into ~/.cache/enclave-operator when missing).
#
#  1. creates the kind cluster enclave-e2e from hack/kind.yaml (Kubernetes v1.36): five
#     workers named and labelled like the local control plane's nodes (README's table);
#  2. builds the Dockerfile as the chart's default image and loads it into the nodes;
#  3. applies crds/, installs the chart into enclave-system and waits for the operator;
#  4. runs the e2e suite against that operator (ENCLAVE_TEST_EXTERNAL_OPERATOR=1);
#  5. checks that the NetworkPolicies the operator writes are enforced: a pod in a
#     namespace a ResidencyPolicy covers still reaches a pod of its own namespace but
#     no longer one in a namespace outside the enclave;
#  6. deletes the cluster, however the script ends (KEEP_CLUSTER=1 keeps it).
#
# KIND_NODE_IMAGE overrides the node image (the default is the v1.36 image listed in
# kind v0.33.0's release notes); TEST_THREADS the suite's threads (default 4).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
name=enclave-e2e
node_image=${KIND_NODE_IMAGE:-kindest/node:v1.36.4@sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed}
agnhost=registry.k8s.io/e2e-test-images/agnhost:2.53
threads=${TEST_THREADS:-4}

step() { printf '\n>> %s\n' "$*" >&2; }
die() {
	echo "kind-e2e: $*" >&2
	exit 1
}

# --- prerequisites ---------------------------------------------------------------
missing=()
for tool in docker kind; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
	die "needs Docker and kind on PATH (missing: ${missing[*]}); see https://kind.sigs.k8s.io/docs/user/quick-start/.
Without Docker, run 'make test': the same suite against a local control plane built from Go modules."
fi
docker info >/dev/null 2>&1 ||
	die "the docker CLI is installed but no Docker engine answers ('docker info' fails); start one, or run 'make test' instead"
kind_version=$(kind version | awk '{ print $2 }')
IFS=. read -r kind_major kind_minor _ <<<"${kind_version#v}"
if ! [[ $kind_major =~ ^[0-9]+$ && $kind_minor =~ ^[0-9]+$ ]] || ((kind_major == 0 && kind_minor < 24)); then
	die "kind $kind_version is too old: v0.24 or later is needed (NetworkPolicy enforcement by kindnet)"
fi
if ! command -v kubectl >/dev/null || ! command -v helm >/dev/null; then
	step "kubectl and helm from tools/cluster (built once)"
	PATH=$("$root/tools/cluster/build.sh"):$PATH
fi
ref=$("$root/hack/image.sh" --print-reference)

# --- cluster -----------------------------------------------------------------------
kubeconfig=$(mktemp "${TMPDIR:-/tmp}/kind-e2e-kubeconfig.XXXXXX")
export KUBECONFIG=$kubeconfig
cluster=""
diagnose() {
	echo "kind-e2e: failed; the cluster's state:" >&2
	kubectl get nodes -o wide >&2 || true
	kubectl get pods -A -o wide >&2 || true
	kubectl get networkpolicies -A >&2 || true
	echo "--- operator log (last 40 lines)" >&2
	kubectl logs -n enclave-system deployment/enclave-operator --tail 40 >&2 || true
}
cleanup() {
	local status=$?
	if [[ -n $cluster ]]; then
		((status == 0)) || diagnose
		if [[ ${KEEP_CLUSTER:-} == 1 ]]; then
			echo "kind-e2e: cluster kept: export KUBECONFIG=$kubeconfig; delete it with: kind delete cluster --name $name" >&2
			return
		fi
		kind delete cluster --name "$name" || true
	fi
	rm -f "$kubeconfig"
}
trap cleanup EXIT

if kind get clusters 2>/dev/null | grep -qxF "$name"; then
	step "reusing the kind cluster $name (left by KEEP_CLUSTER=1)"
	cluster=$name
	kind get kubeconfig --name "$name" >"$kubeconfig"
else
	step "creating the kind cluster $name ($node_image)"
	cluster=$name
	kind create cluster --name "$name" --config "$root/hack/kind.yaml" --image "$node_image" \
		--kubeconfig "$kubeconfig" --wait 180s
fi
kubectl wait --for condition=Ready nodes --all --timeout 180s >/dev/null

# The kubelets set enclave.dev/e2e-site (hack/kind.yaml); the site label itself is under
# node-restriction.kubernetes.io/, which only an administrator may set.
step "labelling the sites"
labelled=0
while read -r node site; do
	[[ -n $node ]] || continue
	kubectl label node "$node" --overwrite "node-restriction.kubernetes.io/enclave-site=$site" >/dev/null
	labelled=$((labelled + 1))
done < <(kubectl get nodes -l enclave.dev/e2e-site \
	-o jsonpath='{range .items[*]}{.metadata.name}{" "}{.metadata.labels.enclave\.dev/e2e-site}{"\n"}{end}')
for node in dublin-a dublin-b norway-a virginia-a virginia-b; do
	kubectl get node "$node" >/dev/null 2>&1 || die "no node $node: hack/kind.yaml names the workers (kubeadm nodeRegistration.name)"
done
((labelled == 5)) || die "expected 5 workers labelled enclave.dev/e2e-site, found $labelled"
kubectl get nodes -L node-restriction.kubernetes.io/enclave-site -L topology.kubernetes.io/region \
	-L topology.kubernetes.io/zone >&2

# The local control plane's StorageClasses, each restricted to its site's nodes.
kubectl apply -f "$root/tools/cluster/storage.yaml" >/dev/null

# --- the operator, from its image ----------------------------------------------------
step "docker build -t $ref"
docker build --build-arg "VERSION=${ref##*:}" -t "$ref" "$root"
kind load docker-image "$ref" --name "$name"

step "CRDs and the chart"
kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
kubectl wait --for condition=established --timeout 60s -f "$root/crds/" >/dev/null
helm upgrade --install enclave-operator "$root/charts/enclave-operator" \
	--namespace enclave-system --create-namespace --set image.pullPolicy=IfNotPresent \
	--wait --timeout 5m
kubectl rollout status -n enclave-system deployment/enclave-operator --timeout 120s

# --- the suite against the in-cluster operator ----------------------------------------
step "e2e suite against the operator in the cluster"
suite=0
ENCLAVE_TEST_EXTERNAL_OPERATOR=1 cargo test --test e2e -- --test-threads "$threads" || suite=$?

# --- NetworkPolicy enforcement ----------------------------------------------------------
step "NetworkPolicy enforcement (kindnet)"
inside=kind-e2e-inside
outside=kind-e2e-outside
kubectl delete residencypolicy kind-e2e --ignore-not-found >/dev/null
kubectl delete namespace "$inside" "$outside" --ignore-not-found --wait >/dev/null
kubectl create namespace "$inside" >/dev/null
kubectl label namespace "$inside" enclave.dev/residency=kind-e2e >/dev/null
kubectl create namespace "$outside" >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: enclave.dev/v1alpha1
kind: DataEnclave
metadata: {name: kind-e2e}
spec:
  jurisdiction: EU
  sites:
    - name: dublin
      nodeSelector: {matchLabels: {node-restriction.kubernetes.io/enclave-site: dublin}}
    - name: norway
      nodeSelector: {matchLabels: {node-restriction.kubernetes.io/enclave-site: norway}}
YAML
# pod NAMESPACE NAME ARGS...: an agnhost pod labelled app=NAME.
pod() {
	local namespace=$1 pod=$2
	shift 2
	local args
	args=$(printf '"%s",' "$@")
	kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $pod, namespace: $namespace, labels: {app: $pod}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: agnhost
      image: $agnhost
      args: [${args%,}]
      ports: [{containerPort: 8080}]
YAML
}
pod "$outside" server netexec --http-port=8080
pod "$inside" server netexec --http-port=8080
pod "$inside" client pause
kubectl wait --for condition=Ready --timeout 180s -n "$outside" pod/server >/dev/null
kubectl wait --for condition=Ready --timeout 180s -n "$inside" pod/server pod/client >/dev/null
outside_ip=$(kubectl get pod -n "$outside" server -o jsonpath='{.status.podIP}')
inside_ip=$(kubectl get pod -n "$inside" server -o jsonpath='{.status.podIP}')

# connect IP: can the in-scope client open a TCP connection to IP:8080?
connect() {
	kubectl exec -n "$inside" client -- /agnhost connect "$1:8080" --timeout=5s >/dev/null 2>&1
}
# eventually SECONDS WHAT COMMAND...: polls COMMAND until it succeeds, or fails.
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
fenced() {
	(($(kubectl get networkpolicies -n "$inside" -l app.kubernetes.io/managed-by=enclave-operator \
		-o name | wc -l) >= 2))
}

# Before any policy, the path out is open: a blocked connection later means the fence.
eventually 60 "the in-scope client cannot reach the outside server even before any policy" connect "$outside_ip"
kubectl apply -f - >/dev/null <<YAML
apiVersion: enclave.dev/v1alpha1
kind: ResidencyPolicy
metadata: {name: kind-e2e}
spec:
  enclave: kind-e2e
  match:
    namespaceSelector: {matchLabels: {enclave.dev/residency: kind-e2e}}
  enforcement: Enforce
  migration: {enabled: false}
YAML
eventually 60 "the operator wrote no NetworkPolicies into $inside" fenced
eventually 60 "the in-scope client still reaches $outside_ip:8080 in the unlabelled namespace $outside" \
	not connect "$outside_ip"
connect "$inside_ip" || die "the in-scope client cannot reach $inside_ip:8080 in its own namespace"
not connect "$outside_ip" || die "the path out of the enclave opened again"
echo "kind-e2e: fenced: $inside -> $outside ($outside_ip:8080) blocked, $inside -> $inside ($inside_ip:8080) open" >&2

((suite == 0)) || die "the e2e suite failed (exit $suite); the NetworkPolicy check passed"
echo "kind-e2e: passed"
