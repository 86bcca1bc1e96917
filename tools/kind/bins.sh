#!/usr/bin/env bash
# Builds the Go (and one C) programs of the kind node image from the modules pinned
# beside this script, into the cache keyed by version and go.sum, like
# tools/cluster/build.sh. Prints "NAME DIR" lines on stdout (NAME's binaries are in DIR);
# progress and timings go to stderr. Called by tools/kind/build.sh.
set -euo pipefail
# Command substitutions keep errexit: a failure inside $(...) ends the script.
shopt -s inherit_errexit
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=../cluster/versions.env
source "$root/tools/cluster/versions.env"
cache=${ENCLAVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enclave-operator}
# One package at a time, at low priority: the machine is shared with test runs.
export GOFLAGS="-mod=mod -p=${GO_BUILD_PARALLELISM:-1}"

# build_tool NAME DIR VERSION CGO TAGS LDFLAGS OUT=PKG...
build_tool() {
	local name=$1 dir=$2 version=$3 cgo=$4 tags=$5 ldflags=$6
	shift 6
	local key
	key=$( (cat "$here/$dir/go.mod" "$here/$dir/go.sum"; echo "$cgo $tags $ldflags $*") | sha256sum | cut -c1-12)
	local out="$cache/kind-$dir-$version-$key"
	if [[ ! -f "$out/.complete" ]]; then
		echo ">> building $dir $version into $out (first time only)" >&2
		local start=$SECONDS spec
		rm -rf "$out.tmp" && mkdir -p "$out.tmp"
		for spec in "$@"; do
			(cd "$here/$dir" && CGO_ENABLED=$cgo nice -n 10 go build -trimpath -tags "$tags" \
				-ldflags "-s -w $ldflags" -o "$out.tmp/${spec%%=*}" "${spec#*=}")
		done
		rm -rf "$out" && mv "$out.tmp" "$out" && touch "$out/.complete"
		echo ">> built $dir in $((SECONDS - start)) s" >&2
	fi
	echo "$name $out"
}

k8s_minor=${KUBERNETES_VERSION#v1.}
k8s_minor=${k8s_minor%%.*}
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
	k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build_tool node-kubernetes kubernetes "$KUBERNETES_VERSION" 0 "" "$k8s_ldflags" \
	kubelet=k8s.io/kubernetes/cmd/kubelet kubeadm=k8s.io/kubernetes/cmd/kubeadm \
	kube-proxy=k8s.io/kubernetes/cmd/kube-proxy
build_tool containerd containerd "$CONTAINERD_VERSION" 0 "no_btrfs no_devmapper no_zfs no_aufs" \
	"-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
	containerd=github.com/containerd/containerd/v2/cmd/containerd \
	containerd-shim-runc-v2=github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
	ctr=github.com/containerd/containerd/v2/cmd/ctr
# runc needs cgo (its nsenter is C) and libseccomp (Debian's libseccomp-dev here, the
# node's libseccomp2 at run time: both are bookworm's).
if [[ ! -f /usr/include/seccomp.h ]]; then
	[[ $(id -u) == 0 ]] || { echo "bins.sh: runc needs libseccomp-dev (apt-get install libseccomp-dev)" >&2; exit 1; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libseccomp-dev >&2
fi
build_tool runc runc "$RUNC_VERSION" 1 "seccomp" "-X main.version=${RUNC_VERSION#v}" \
	runc=github.com/opencontainers/runc
build_tool cni cni "$CNI_PLUGINS_VERSION" 0 "" "" \
	host-local=github.com/containernetworking/plugins/plugins/ipam/host-local \
	loopback=github.com/containernetworking/plugins/plugins/main/loopback \
	bridge=github.com/containernetworking/plugins/plugins/main/bridge \
	portmap=github.com/containernetworking/plugins/plugins/meta/portmap
build_tool crictl crictl "$CRICTL_VERSION" 0 "" "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
	crictl=sigs.k8s.io/cri-tools/cmd/crictl
build_tool kind kind "$KIND_VERSION" 0 "" "" kind=sigs.k8s.io/kind
build_tool kube-router kube-router "$KUBE_ROUTER_VERSION" 0 "" \
	"-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" \
	kube-router=github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
build_tool local-path-provisioner local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" 0 "" \
	"-X main.VERSION=$LOCAL_PATH_PROVISIONER_VERSION" \
	local-path-provisioner=github.com/rancher/local-path-provisioner
build_tool coredns coredns "$COREDNS_VERSION" 0 "" "" coredns=github.com/coredns/coredns

# pause: the sandbox process, Kubernetes' own C source from the same module, static.
pause_src=$(cd "$here/kubernetes" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
key=$( (cat "$pause_src"; echo "$PAUSE_VERSION") | sha256sum | cut -c1-12)
out="$cache/kind-pause-$PAUSE_VERSION-$key"
if [[ ! -f "$out/.complete" ]]; then
	rm -rf "$out" && mkdir -p "$out"
	gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION" -o "$out/pause" "$pause_src"
	strip "$out/pause" && touch "$out/.complete"
fi
echo "pause $out"
