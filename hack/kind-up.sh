#!/usr/bin/env bash
# make kind-up / make kind-down: a kind cluster on a machine that reaches no image
# registry (docs/kind.md).
#
#   hack/kind-up.sh up     dockerd (hack/kind/docker.sh), the node image and kind
#                          (tools/kind/build.sh, once per version), then the cluster
#                          $KIND_CLUSTER from hack/kind.yaml with kube-router as CNI and
#                          NetworkPolicy enforcer, sites labelled, local-path-provisioner
#                          with a StorageClass per site (hack/kind/local-path.yaml). An
#                          existing cluster is reused when all its nodes are Ready.
#   hack/kind-up.sh down   deletes the cluster (dockerd and the images stay).
#
# The kubeconfig is written to $KIND_DIR/kubeconfig (default .kind/ in the repository);
# $KIND_DIR/env holds the PATH and KUBECONFIG lines to source.
set -euo pipefail
# Command substitutions keep errexit: a failure inside $(...) ends the script.
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
name=${KIND_CLUSTER:-enclave-kind}
dir=${KIND_DIR:-$root/.kind}
export ENCLAVE_CACHE=${ENCLAVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enclave-operator}
die() {
	echo "kind-up: $*" >&2
	exit 1
}
step() { printf '>> %s\n' "$*" >&2; }
# timed WHAT COMMAND...: runs COMMAND, prints its wall time. Never call it in a condition
# (errexit would be off inside COMMAND); a failure ends the script.
timed() {
	local what=$1 start=$SECONDS
	shift
	"$@"
	step "$what: $((SECONDS - start)) s"
}

tools() {
	local lines
	cluster_bin=$(tools/cluster/build.sh)
	mapfile -t lines < <(tools/kind/build.sh)
	((${#lines[@]} == 2)) || die "tools/kind/build.sh printed ${#lines[@]} lines, expected 2"
	kind_bin=${lines[0]}
	node_image=${lines[1]}
	export PATH=$kind_bin:$cluster_bin:$PATH
}

ready() { # all nodes Ready, kube-router running everywhere
	kubectl wait --for condition=Ready nodes --all --timeout "${1:-0}s" >/dev/null 2>&1 &&
		kubectl rollout status -n kube-system daemonset/kube-router --timeout "${1:-0}s" >/dev/null 2>&1
}

up() {
	local start=$SECONDS
	timed "dockerd" hack/kind/docker.sh
	timed "kind and the node image" tools
	mkdir -p "$dir"
	export KUBECONFIG=$dir/kubeconfig
	if kind get clusters 2>/dev/null | grep -qxF "$name"; then
		kind get kubeconfig --name "$name" >"$KUBECONFIG"
		if [[ $(docker inspect --format '{{.Config.Image}}' "$name-control-plane" 2>/dev/null) == "$node_image" ]] &&
			ready 60; then
			step "reusing the kind cluster $name"
		else
			step "the kind cluster $name is of another node image or not ready: recreating it"
			local old_image
			old_image=$(docker inspect --format '{{.Config.Image}}' "$name-control-plane" 2>/dev/null || true)
			kind delete cluster --name "$name" >&2
			# tools/kind/build.sh could not remove the image the old cluster still ran.
			[[ -z $old_image || $old_image == "$node_image" ]] || docker rmi "$old_image" >/dev/null 2>&1 || true
		fi
	fi
	if ! kind get clusters 2>/dev/null | grep -qxF "$name"; then
		timed "kind create cluster" kind create cluster --name "$name" --config hack/kind.yaml \
			--image "$node_image" --kubeconfig "$KUBECONFIG" --retain=false
		local router_image
		router_image=$(grep '^enclave-kind/kube-router:' "$(dirname "$kind_bin")/images")
		sed "s#KUBE_ROUTER_IMAGE#$router_image#" hack/kind/kube-router.yaml | kubectl apply -f - >/dev/null
		local waited=$SECONDS
		ready 300 || {
			kubectl get nodes -o wide >&2 || true
			kubectl get pods -A -o wide >&2 || true
			die "the nodes did not become Ready within 300 s"
		}
		step "nodes Ready (kube-router): $((SECONDS - waited)) s"
	fi

	# The site label is one only an administrator may set (hack/kind.yaml says why).
	local node site labelled=0
	while read -r node site; do
		[[ -n $node ]] || continue
		kubectl label node "$node" --overwrite "node-restriction.kubernetes.io/enclave-site=$site" >/dev/null
		labelled=$((labelled + 1))
	done < <(kubectl get nodes -l enclave.dev/e2e-site \
		-o jsonpath='{range .items[*]}{.metadata.name}{" "}{.metadata.labels.enclave\.dev/e2e-site}{"\n"}{end}')
	((labelled == 3)) || die "expected 3 workers labelled enclave.dev/e2e-site, found $labelled"
	local images
	images=$(dirname "$kind_bin")/images
	sed -e "s#LOCAL_PATH_IMAGE#$(grep '^enclave-kind/local-path-provisioner:' "$images")#" \
		-e "s#BUSYBOX_IMAGE#$(grep '^enclave-kind/busybox:' "$images")#" hack/kind/local-path.yaml |
		kubectl apply -f - >/dev/null
	kubectl -n local-path-storage rollout status deployment/local-path-provisioner --timeout 180s >/dev/null ||
		die "local-path-provisioner did not become available"
	# kind falls back to a default class of the in-tree host-path provisioner when the node
	# image has no storage manifest; nothing serves it here, and a default class that never
	# provisions leaves claims without a class Pending for ever.
	if [[ $(kubectl get storageclass standard -o jsonpath='{.provisioner}' 2>/dev/null) == kubernetes.io/host-path ]]; then
		kubectl delete storageclass standard >/dev/null
	fi
	kubectl -n kube-system rollout status deployment/coredns --timeout 180s >/dev/null ||
		die "CoreDNS did not become available"

	cat >"$dir/env" <<ENV
export PATH=$kind_bin:$cluster_bin:\$PATH
export KUBECONFIG=$KUBECONFIG
ENV
	kubectl get nodes -L node-restriction.kubernetes.io/enclave-site >&2
	step "kind cluster $name up in $((SECONDS - start)) s; to use it: source $dir/env"
}

down() {
	# The node containers carry kind's cluster label; deleting them (and their anonymous
	# /var volumes) is what `kind delete cluster` does, without needing kind built.
	if docker info >/dev/null 2>&1; then
		local nodes
		nodes=$(docker ps -aq --filter "label=io.x-k8s.kind.cluster=$name")
		if [[ -n $nodes ]]; then
			# shellcheck disable=SC2086
			docker rm -f -v $nodes >/dev/null
			step "deleted the kind cluster $name"
		fi
	fi
	rm -f "$dir/kubeconfig" "$dir/env"
}

case ${1:-} in
up) up ;;
down) down ;;
*) die "usage: $0 up|down" ;;
esac
