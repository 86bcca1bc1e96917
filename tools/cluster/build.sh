#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok, helm) from the Go modules pinned beside this script,
# into a cache outside the working tree keyed by version and by go.sum. A second run,
# or a fresh clone on the same machine, finds the binaries there and builds nothing.
#
# Prints the bin directory on stdout; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${ENCLAVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enclave-operator}
export GOFLAGS=-mod=mod CGO_ENABLED=0

# build_tool DIR VERSION LDFLAGS OUT=PKG...
build_tool() {
	local dir=$1 version=$2 ldflags=$3
	shift 3
	local key
	key=$( (cat "$here/$dir/go.mod" "$here/$dir/go.sum"; echo "$ldflags") | sha256sum | cut -c1-12)
	local out="$cache/$dir-$version-$key"
	if [[ -f "$out/.complete" ]]; then
		echo "$out"
		return
	fi
	echo ">> building $dir $version into $out (first time only; later runs reuse it)" >&2
	local start=$SECONDS
	mkdir -p "$out.tmp"
	local spec
	for spec in "$@"; do
		(cd "$here/$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp/${spec%%=*}" "${spec#*=}")
	done
	rm -rf "$out" && mv "$out.tmp" "$out" && touch "$out/.complete"
	echo ">> built $dir in $((SECONDS - start)) s" >&2
	echo "$out"
}

k8s_minor=${KUBERNETES_VERSION#v1.}
k8s_minor=${k8s_minor%%.*}
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
	k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# helm renders for this Kubernetes version when no cluster is asked (helm template);
# upstream's Makefile derives it from its client-go, v0.37 for helm v3.22.
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
helm_ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37"

dirs=(
	"$(build_tool etcd "$ETCD_VERSION" "" \
		etcd=go.etcd.io/etcd/server/v3 etcdctl=go.etcd.io/etcd/etcdctl/v3)"
	"$(build_tool kubernetes "$KUBERNETES_VERSION" "$k8s_ldflags" \
		kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
		kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
		kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
		kubectl=k8s.io/kubernetes/cmd/kubectl)"
	"$(build_tool kwok "$KWOK_VERSION" "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
		kwok=sigs.k8s.io/kwok/cmd/kwok)"
	"$(build_tool helm "$HELM_VERSION" "$helm_ldflags" \
		helm=helm.sh/helm/v3/cmd/helm)"
)

# One stable directory of links, so that callers put a single entry on PATH.
bin="$cache/bin"
mkdir -p "$bin"
for d in "${dirs[@]}"; do
	for f in "$d"/*; do ln -sfn "$f" "$bin/$(basename "$f")"; done
done
echo "$bin"
