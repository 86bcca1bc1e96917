#!/usr/bin/env bash
# Starts the operator from its container image, without a container engine, and
# waits until it is ready: the image (hack/image.sh) is unpacked with umoci and the
# binary run from the unpacked root filesystem with chroot as uid/gid 65532, like a
# container of the chart would run it. Proves that the image holds everything the
# binary needs (libraries, passwd) and that the chart's default image reference is
# the one the image was built with.
#
# Needs root (chroot, a kubeconfig owned by 65532) and a cluster with the CRDs:
#   KUBECONFIG                        the cluster (e.g. .cluster/kubeconfig); required
#   ENCLAVE_TEST_OPERATOR_KUBECONFIG  the operator's kubeconfig (default: $KUBECONFIG),
#                                     e.g. a token of the chart's ServiceAccount
#   IMAGE_SKIP_BUILD=1                use target/image as it is instead of hack/image.sh
#   IMAGE_PROFILE=dev                 the image of the debug build (target/image-dev)
#   IMAGE_TEST_TIMEOUT                seconds to wait for /readyz (default 60)
# The operator runs with --namespace enclave-system --admission webhook on free
# 127.0.0.1 ports (decision chain "image-test"); it is stopped and the unpacked image
# deleted however this script ends. Progress goes to stderr; on success the last line,
# on stdout, is
#   image-test: ready in N s from REFERENCE          (N with one decimal, e.g. 0.4)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache=${ENCLAVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enclave-operator}
export PATH=$cache/bin:$PATH # kubectl and helm of the local control plane, if built

say() { echo "image-test: $*" >&2; }
die() {
	say "$*"
	exit 1
}

: "${KUBECONFIG:?image-test.sh: set KUBECONFIG to the cluster (e.g. .cluster/kubeconfig)}"
operator_kubeconfig=${ENCLAVE_TEST_OPERATOR_KUBECONFIG:-$KUBECONFIG}
timeout=${IMAGE_TEST_TIMEOUT:-60}
target_dir=${CARGO_TARGET_DIR:-$root/target}
case ${IMAGE_PROFILE:-release} in
dev) layout=$target_dir/image-dev/enclave-operator ;;
*) layout=$target_dir/image/enclave-operator ;;
esac

((EUID == 0)) || die "needs root (chroot --userspec): run it as root, or with sudo -E"

if [[ ${IMAGE_SKIP_BUILD:-} == 1 ]]; then
	[[ -f $layout/index.json ]] || die "IMAGE_SKIP_BUILD=1 but there is no image in $layout (run make image)"
else
	"$root/hack/image.sh" >&2
fi
command -v umoci >/dev/null || die "umoci is not installed (hack/image.sh installs it)"

# The reference the chart deploys by default, rendered by helm when it is at hand.
if command -v helm >/dev/null; then
	expected=$(helm template enclave-operator charts/enclave-operator --namespace enclave-system \
		--show-only templates/deployment.yaml | awk '$1 == "image:" { gsub(/"/, "", $2); print $2; exit }') ||
		die "helm template charts/enclave-operator failed"
else
	expected=$("$root/hack/image.sh" --print-reference) || die "cannot read the chart's image reference"
fi
[[ -n $expected ]] || die "cannot tell the chart's default image"
tags=$(umoci ls --layout "$layout")
if ! grep -qxF "$expected" <<<"$tags"; then
	die "the chart deploys $expected by default, but the image in $layout is tagged: ${tags:-nothing} (rebuild it with make image, or align values.yaml image.* and Chart.yaml appVersion)"
fi
ref=$expected

tmp=$(mktemp -d "${TMPDIR:-/tmp}/enclave-image-test.XXXXXX")
operator=""
stop_operator() {
	[[ -n $operator ]] || return 0
	if kill -0 "$operator" 2>/dev/null; then
		kill -TERM "$operator" 2>/dev/null || true
		local deadline=$((SECONDS + 10))
		while kill -0 "$operator" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
		kill -KILL "$operator" 2>/dev/null || true
	fi
	wait "$operator" 2>/dev/null || true
	operator=""
}
cleanup() {
	stop_operator
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "unpacking $ref"
umoci unpack --image "$layout:$ref" "$tmp/bundle" >/dev/null
rootfs=$tmp/bundle/rootfs
[[ -x $rootfs/enclave-operator ]] || die "the image has no /enclave-operator"

# A self-contained copy of the kubeconfig (certificate files inlined), readable by the
# operator's user inside the root filesystem.
if command -v kubectl >/dev/null; then
	KUBECONFIG=$operator_kubeconfig kubectl config view --flatten --minify --raw >"$tmp/kubeconfig"
else
	cp "$operator_kubeconfig" "$tmp/kubeconfig"
fi
install -m 0600 -o 65532 -g 65532 "$tmp/kubeconfig" "$rootfs/tmp/kubeconfig"

# Two free ports, held open together so that they differ.
read -r webhook_port metrics_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')

log=$tmp/operator.log
start_ns=$(date +%s%N)
env -i KUBECONFIG=/tmp/kubeconfig RUST_LOG="${RUST_LOG:-info}" \
	"$(command -v chroot)" --userspec=65532:65532 "$rootfs" /enclave-operator run \
	--webhook-url "https://127.0.0.1:$webhook_port" --webhook-addr "127.0.0.1:$webhook_port" \
	--metrics-addr "127.0.0.1:$metrics_port" --namespace enclave-system --admission webhook \
	--chain-id image-test \
	</dev/null >"$log" 2>&1 &
operator=$!
say "operator started from the image (pid $operator), metrics on 127.0.0.1:$metrics_port"
# Should this script be killed outright (no trap runs), the operator goes with it.
(
	while kill -0 "$$" 2>/dev/null && kill -0 "$operator" 2>/dev/null; do sleep 1; done
	if ! kill -0 "$$" 2>/dev/null; then
		kill -KILL "$operator" 2>/dev/null
		rm -rf "$tmp"
	fi
) </dev/null >/dev/null 2>&1 &

# readyz: the HTTP status of GET /readyz, or nothing.
readyz() (
	exec 3<>"/dev/tcp/127.0.0.1/$metrics_port" || exit 0
	printf 'GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
	read -r -t 3 _ status _ <&3 || exit 0
	echo "$status"
) 2>/dev/null
fail() {
	say "$1; the operator's log ends with:"
	tail -n 30 "$log" >&2
	exit 1
}
while [[ $(readyz) != 200 ]]; do
	kill -0 "$operator" 2>/dev/null || fail "the operator exited before it was ready"
	(($(date +%s%N) - start_ns < timeout * 1000000000)) || fail "/readyz did not answer 200 within $timeout s"
	sleep 0.2
done
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
uid=$(awk '$1 == "Uid:" { print $2 }' "/proc/$operator/status")
[[ $uid == 65532 ]] || fail "the operator runs as uid $uid, not 65532"
say "ready: /readyz answered 200; the operator runs as uid $uid, chrooted to the unpacked image"
stop_operator
cleanup
trap - EXIT
echo "image-test: ready in $((elapsed_ms / 1000)).$(((elapsed_ms % 1000) / 100)) s from $ref"
