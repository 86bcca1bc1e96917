#!/usr/bin/env bash
# Builds, once, everything a kind cluster needs on a machine that reaches no image
# registry (docs/kind.md): the kind binary and a node image of Kubernetes
# $KUBERNETES_VERSION with every image the cluster runs already in its containerd.
# Inputs are only the Go modules pinned beside this script and in tools/cluster, and
# Debian's packages (debootstrap); nothing is pulled.
#
#   - Debian userland: debootstrap of $DEBIAN_SUITE with the packages of kind's
#     images/base/Dockerfile (systemd, iptables, conntrack, ...) plus ipset, imported
#     with `docker import`. It is both the node's root and the base of the images that
#     need a userland (kube-proxy, kube-router).
#   - node: that userland plus kind's images/base/files (read from the sigs.k8s.io/kind
#     module: entrypoint, systemd units, containerd config), containerd, runc, crictl,
#     the CNI plugins, kubelet, kubeadm, kubectl, and the images below imported into its
#     containerd (k8s.io namespace) the way `kind build node-image` does, then
#     `docker commit`ed.
#   - images, under the names kubeadm and the manifests of hack/kind ask for:
#     kube-apiserver, kube-controller-manager, kube-scheduler (static binaries on
#     scratch), kube-proxy (userland), etcd, coredns, pause (static), kube-router
#     (userland), local-path-provisioner (static, on scratch), and enclave-kind/busybox
#     (Debian's busybox-static) for the tests and the provisioner's helper pods.
#
# The result is cached under $ENCLAVE_CACHE/kind-$KIND_VERSION-KEY, KEY a hash of every
# input (go.sum files, versions, the scripts here): a second run checks that the
# node image is still in Docker and builds nothing. Prints two lines on stdout: the
# directory holding `kind`, and the node image reference. Step times go to stderr.
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
export ENCLAVE_CACHE=$cache

die() {
	echo "kind build: $*" >&2
	exit 1
}
# timed WHAT COMMAND...: runs COMMAND, prints its wall time. Never call it in a condition
# (errexit would be off inside COMMAND); a failure ends the script.
timed() {
	local what=$1 start=$SECONDS
	shift
	"$@"
	echo ">> $what: $((SECONDS - start)) s" >&2
}

key=$( (
	cd "$root"
	cat tools/kind/versions.env tools/cluster/versions.env tools/kind/*.sh tools/kind/*/go.sum \
		tools/cluster/*/go.sum hack/kind/runc-wrapper
	echo "${DEBIAN_MIRROR:-}"
) | sha256sum | cut -c1-12)
out=$cache/kind-$KIND_VERSION-$key
node_image=enclave-kind/node:$KUBERNETES_VERSION-$key
if [[ -f $out/.complete ]] && docker image inspect "$node_image" >/dev/null 2>&1; then
	echo "$out/bin"
	echo "$node_image"
	exit 0
fi
echo ">> building the kind node image $node_image (first time only; cache: $out)" >&2
total=$SECONDS

# --- binaries ---------------------------------------------------------------------------
declare -A bin
# Captured first, so that a failed build stops here (a process substitution's status
# would be lost).
built=$(timed "Go binaries of the node" "$here/bins.sh")
while read -r name dir; do bin[$name]=$dir; done <<<"$built"
cluster_links=$(timed "control-plane binaries (tools/cluster)" "$root/tools/cluster/build.sh")
cluster_bin=$(dirname "$(readlink -f "$cluster_links/kube-apiserver")")
etcd_bin=$(dirname "$(readlink -f "$cluster_links/etcd")")
kind_module=$(cd "$here/kind" && go list -m -f '{{.Dir}}' sigs.k8s.io/kind)
kind_files=$kind_module/images/base/files
[[ -f $kind_files/usr/local/bin/entrypoint ]] || die "no images/base/files in $kind_module"

work=$(mktemp -d "${TMPDIR:-/tmp}/kind-build.XXXXXX")
build_container=""
cleanup() {
	[[ -z $build_container ]] || docker rm -f -v "$build_container" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# --- Debian userland ----------------------------------------------------------------------
debian_image=$(timed "Debian userland" "$here/userland.sh")

# --- images -------------------------------------------------------------------------------
path_env='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
# scratch_image REF ENTRYPOINT_JSON FILE...: an image holding FILEs in /usr/local/bin.
scratch_image() {
	local ref=$1 entrypoint=$2
	shift 2
	local dir=$work/scratch
	rm -rf "$dir" && mkdir -p "$dir/usr/local/bin" "$dir/etc" "$dir/tmp"
	chmod 1777 "$dir/tmp"
	cp "$@" "$dir/usr/local/bin/"
	docker rmi "$ref" >/dev/null 2>&1 || true
	echo 'root:x:0:0:root:/root:/sbin/nologin' >"$dir/etc/passwd"
	echo 'nobody:x:65534:65534:nobody:/:/sbin/nologin' >>"$dir/etc/passwd"
	tar --numeric-owner --owner=0 --group=0 -C "$dir" -c . |
		docker import --change "$path_env" --change "ENTRYPOINT $entrypoint" - "$ref" >/dev/null
}
# userland_image REF ENTRYPOINT_JSON FILE...: the Debian userland plus FILEs in /usr/local/bin.
userland_image() {
	local ref=$1 entrypoint=$2
	shift 2
	local id
	docker rmi "$ref" >/dev/null 2>&1 || true
	id=$(docker create "$debian_image" true)
	local file
	for file in "$@"; do docker cp "$file" "$id:/usr/local/bin/$(basename "$file")"; done
	docker commit --change "ENTRYPOINT $entrypoint" --change 'CMD []' "$id" "$ref" >/dev/null
	docker rm "$id" >/dev/null
}
busybox_image() {
	local deb dir=$work/busybox
	mkdir -p "$dir/root/bin" "$dir/root/tmp" "$dir/root/etc"
	(cd "$work" && { apt-get download busybox-static >/dev/null 2>&1 ||
		{ apt-get update >/dev/null && apt-get download busybox-static >/dev/null; }; }) ||
		die "apt-get download busybox-static failed"
	deb=$(ls "$work"/busybox-static_*.deb)
	dpkg-deb -x "$deb" "$dir/x"
	cp "$dir/x/bin/busybox" "$dir/root/bin/busybox"
	local applet
	for applet in $("$dir/root/bin/busybox" --list); do
		[[ $applet == busybox ]] || ln -sf busybox "$dir/root/bin/$applet"
	done
	chmod 1777 "$dir/root/tmp"
	echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/root/etc/passwd"
	echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >>"$dir/root/etc/passwd"
	echo 'root:x:0:' >"$dir/root/etc/group"
	echo 'nogroup:x:65534:' >>"$dir/root/etc/group"
	docker rmi "$1" >/dev/null 2>&1 || true
	tar --numeric-owner --owner=0 --group=0 -C "$dir/root" -c . |
		docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$1" >/dev/null
}

k8s=${bin[node-kubernetes]}
# The names kubeadm asks for (pause comes from containerd's sandbox_image below).
mapfile -t required < <("$k8s/kubeadm" config images list --kubernetes-version "$KUBERNETES_VERSION" 2>/dev/null)
((${#required[@]} >= 6)) || die "kubeadm config images list printed ${#required[@]} images"
images=()
build_images() {
	local ref name
	for ref in "${required[@]}"; do
		name=${ref##*/}
		name=${name%%:*}
		case $name in
		kube-apiserver | kube-controller-manager | kube-scheduler)
			scratch_image "$ref" "[\"/usr/local/bin/$name\"]" "$cluster_bin/$name"
			;;
		kube-proxy) userland_image "$ref" '["/usr/local/bin/kube-proxy"]' "$k8s/kube-proxy" ;;
		etcd) scratch_image "$ref" '["/usr/local/bin/etcd"]' "$etcd_bin/etcd" "$etcd_bin/etcdctl" ;;
		coredns) scratch_image "$ref" '["/usr/local/bin/coredns"]' "${bin[coredns]}/coredns" ;;
		pause) continue ;;
		*) die "kubeadm asks for an image this script cannot build: $ref" ;;
		esac
		images+=("$ref")
	done
	ref=registry.k8s.io/pause:$PAUSE_VERSION
	scratch_image "$ref" '["/usr/local/bin/pause"]' "${bin[pause]}/pause"
	images+=("$ref")
	ref=enclave-kind/kube-router:$KUBE_ROUTER_VERSION
	userland_image "$ref" '["/usr/local/bin/kube-router"]' "${bin[kube-router]}/kube-router"
	images+=("$ref")
	ref=enclave-kind/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION
	scratch_image "$ref" '["/usr/local/bin/local-path-provisioner"]' \
		"${bin[local-path-provisioner]}/local-path-provisioner"
	images+=("$ref")
	ref=enclave-kind/busybox:1.35
	busybox_image "$ref"
	images+=("$ref")
	docker save "${images[@]}" -o "$work/images.tar"
}
timed "images (${#required[@]} for kubeadm, kube-router, local-path-provisioner, busybox)" build_images

# --- node ---------------------------------------------------------------------------------
stage=$work/node
build_node() {
	mkdir -p "$work/empty"
	mkdir -p "$stage"/{usr/local/bin,usr/local/sbin,usr/bin,opt/cni/bin,kind,etc}
	cp -r "$kind_files"/. "$stage"/
	chmod -R u+w "$stage"
	chmod 0755 "$stage"/usr/local/bin/* "$stage"/kind "$stage"/kind/bin "$stage"/kind/bin/*
	cp "${bin[containerd]}"/{containerd,containerd-shim-runc-v2,ctr} "$stage/usr/local/bin/"
	cp "${bin[crictl]}/crictl" "$stage/usr/local/bin/"
	cp "${bin[runc]}/runc" "$stage/usr/local/sbin/"
	cp "$k8s"/{kubelet,kubeadm} "$cluster_bin/kubectl" "$stage/usr/bin/"
	cp "${bin[cni]}"/* "$stage/opt/cni/bin/"
	printf '%s' "$KUBERNETES_VERSION" >"$stage/kind/version"
	mkdir -p "$stage/etc/kubernetes/manifests"
	# containerd's base spec, as kind's Dockerfile makes it, and the pause image kubeadm's
	# version wants instead of the one in kind's config.toml.
	"${bin[containerd]}/ctr" oci spec |
		jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' |
		jq 'del(.process.rlimits)' >"$stage/etc/containerd/cri-base.json"
	sed -i "s#sandbox_image = .*#sandbox_image = \"registry.k8s.io/pause:$PAUSE_VERSION\"#" \
		"$stage/etc/containerd/config.toml"
	# Lowering a process's oom_score_adj needs CAP_SYS_RESOURCE, which this machine's
	# bounding set lacks (docs/kind.md): containerd must not ask runc for a score lower
	# than its own (the setting kind uses for rootless nodes), or every sandbox of a
	# critical pod (-998) fails with "failed to update /proc/self/oom_score_adj".
	sed -i 's#restrict_oom_score_adj = false#restrict_oom_score_adj = true#' "$stage/etc/containerd/config.toml"
	grep -q 'restrict_oom_score_adj = true' "$stage/etc/containerd/config.toml" ||
		die "kind's containerd config.toml has no restrict_oom_score_adj to set"
	# kind's fuse-overlayfs unit needs a snapshotter this image does not carry; the
	# default overlayfs one is used.
	rm -f "$stage/etc/systemd/system/containerd-fuse-overlayfs.service"
	sed -i '/^\[proxy_plugins/,/^  address/d' "$stage/etc/containerd/config.toml"

	build_container=$(docker run -d --privileged --entrypoint sleep "$debian_image" infinity)
	tar --numeric-owner --owner=0 --group=0 -C "$stage" -c . | docker cp - "$build_container:/"
	docker exec "$build_container" sh -euc '
		chmod 0644 /etc/systemd/system/*.service /etc/systemd/system/*.slice /etc/systemd/system/kubelet.service.d/*
		systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
		systemctl mask systemd-binfmt.service >/dev/null 2>&1
		runc --version >/dev/null && containerd --version >/dev/null
		nohup containerd >/tmp/containerd.log 2>&1 &
		for i in $(seq 50); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.2; done
		ctr info >/dev/null'
	docker exec -i "$build_container" ctr --namespace=k8s.io images import \
		--label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - \
		<"$work/images.tar" >/dev/null
	docker exec "$build_container" sh -euc '
		ctr --namespace=k8s.io images list -q
		pkill containerd; for i in $(seq 50); do pgrep containerd >/dev/null || break; sleep 0.2; done
		rm -rf /tmp/* /run/containerd' >"$work/imported"
	local ref
	for ref in "${images[@]}"; do
		# containerd names images without a registry as docker.io's, as the kubelet does.
		grep -qxF -e "$ref" -e "docker.io/$ref" "$work/imported" ||
			die "the node's containerd did not import $ref (it has: $(tr '\n' ' ' <"$work/imported"))"
	done
	local committed
	committed=$(docker commit \
		--change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
		--change 'CMD []' --change 'ENV container=docker' "$build_container")
	docker rm -f -v "$build_container" >/dev/null
	build_container=""
	# systemd shuts down cleanly on SIGRTMIN+3; `docker commit` of Docker 20.10 cannot set
	# a stop signal, a Dockerfile without RUN steps can (no container runs).
	printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$committed" >"$work/Dockerfile"
	DOCKER_BUILDKIT=0 docker build -q -t "$node_image" -f "$work/Dockerfile" "$work/empty" >/dev/null 2>"$work/build.err" || {
		cat "$work/build.err" >&2
		die "docker build of the node image's stop signal failed"
	}
	docker rmi "$committed" >/dev/null 2>&1 || true
}
timed "node image" build_node

# Node images and cache directories of other inputs are of no further use (a running
# cluster keeps its image: docker refuses to remove it).
for stale in $(docker images enclave-kind/node --format '{{.Repository}}:{{.Tag}}'); do
	[[ $stale == "$node_image" ]] || docker rmi "$stale" >/dev/null 2>&1 || true
done
for stale in "$cache"/kind-"$KIND_VERSION"-*; do
	[[ $stale == "$out" || ! -d $stale ]] || rm -rf "$stale"
done
rm -rf "$out" && mkdir -p "$out/bin"
cp "${bin[kind]}/kind" "$out/bin/kind"
echo "$node_image" >"$out/node-image"
printf '%s\n' "${images[@]}" >"$out/images"
touch "$out/.complete"
echo ">> kind node image built in $((SECONDS - total)) s" >&2
echo "$out/bin"
echo "$node_image"
