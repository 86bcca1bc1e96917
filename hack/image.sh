#!/usr/bin/env bash
# make image: the operator's container image, assembled without a container engine.
#
# Builds the release binary, then assembles an OCI image with umoci (Debian's package,
# installed here when missing) from one layer holding exactly:
#   /enclave-operator                  the binary
#   /usr/bin/rsync                     Debian's rsync (installed here when missing), which
#                                      the volume mover runs (`enclave-operator mover`):
#                                      one image for the operator and the mover pods
#   the shared libraries ldd lists     of both: glibc, libm, libgcc_s and the dynamic
#                                      loader; rsync's libacl, libpopt, liblz4, libzstd,
#                                      libxxhash, libcrypto and libz; at the paths ldd prints
#   /etc/passwd, /etc/group            root and nonroot (65532)
#   /tmp                               1777
# and the config of the Dockerfile's image: entrypoint /enclave-operator, user
# 65532:65532, working dir /, the same OCI labels. No base image is pulled.
#
# Output, tagged with the image reference the chart uses by default (values.yaml
# image.repository, and image.tag or else Chart.yaml appVersion):
#   target/image/enclave-operator      OCI image layout
#   target/image/enclave-operator.tar  the same as an oci-archive, e.g. for
#                                      skopeo copy oci-archive:target/image/enclave-operator.tar docker://REGISTRY/...
#                                      kind load image-archive target/image/enclave-operator.tar
# Timestamps are fixed (SOURCE_DATE_EPOCH, else the time of the last commit), so the
# same binary always gives the same digest; when neither the binary, its libraries, the
# reference nor this script changed, nothing is assembled again.
#
#   IMAGE_PROFILE=dev                  package the debug build instead, into target/image-dev
#                                      (make test does, to stay within its time budget: the
#                                      packaging and the runtime are the same)
#
#   hack/image.sh                      build, print the reference and the digest
#   hack/image.sh --print-reference    print the chart's default image reference only
set -euo pipefail
umask 022
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
chart=charts/enclave-operator

die() {
	echo "image.sh: $*" >&2
	exit 1
}

# yaml_value FILE BLOCK KEY: the plain scalar KEY of the top-level mapping BLOCK (or a
# top-level KEY when BLOCK is empty), without quotes or trailing comment. Enough for
# the chart's own two files; not a YAML parser.
yaml_value() {
	awk -v block="$2" -v key="$3" '
		function scalar(line) {
			sub(/^[^:]*:[ \t]*/, "", line)
			sub(/[ \t]+#.*$/, "", line)
			gsub(/^["\047]|["\047]$/, "", line)
			return line
		}
		block == "" && index($0, key ":") == 1 { print scalar($0); exit }
		block != "" && index($0, block ":") == 1 { inside = 1; next }
		inside && /^[^ \t#]/ { inside = 0 }
		inside && $1 == key ":" { print scalar($0); exit }
	' "$1"
}

# The reference the chart's Deployment uses when no value is set.
reference() {
	local repository tag
	repository=$(yaml_value "$chart/values.yaml" image repository)
	tag=$(yaml_value "$chart/values.yaml" image tag)
	[[ -n $tag ]] || tag=$(yaml_value "$chart/Chart.yaml" "" appVersion)
	[[ -n $repository && -n $tag ]] ||
		die "cannot read image.repository and appVersion from $chart/values.yaml and $chart/Chart.yaml"
	echo "$repository:$tag"
}

case ${1:-} in
--print-reference)
	reference
	exit 0
	;;
"") ;;
*) die "usage: hack/image.sh [--print-reference]" ;;
esac

# ensure_package COMMAND [PACKAGE]: COMMAND from the distribution's packages, installed
# once (hack/deps.sh).
ensure_package() {
	"$root/hack/deps.sh" "$@" >&2
}

ref=$(reference)
version=${ref##*:}
target_dir=${CARGO_TARGET_DIR:-$root/target}
profile=${IMAGE_PROFILE:-release}
case $profile in
release)
	build=(cargo build --release --locked --bin enclave-operator)
	binary=$target_dir/release/enclave-operator
	out=$target_dir/image
	;;
dev)
	build=(cargo build --locked --bin enclave-operator)
	binary=$target_dir/debug/enclave-operator
	out=$target_dir/image-dev
	;;
*) die "IMAGE_PROFILE must be release or dev, not $profile" ;;
esac
layout=$out/enclave-operator
archive=$out/enclave-operator.tar

ensure_package umoci
# The mover's rsync: Debian's, at the path the mover runs (src/volume_move/mover).
ensure_package rsync
rsync_binary=/usr/bin/rsync
[[ -x $rsync_binary ]] || die "rsync is not at $rsync_binary"
mkdir -p "$out"
# One build at a time per output directory (parallel tests may call this script).
exec 9>>"$out/.lock"
flock -w 1200 9 || die "another hack/image.sh did not finish within 20 min"

echo ">> ${build[*]}" >&2
"${build[@]}"

# The shared libraries the binary and rsync need, as the paths ldd resolves them to.
ldd_out=""
for program in "$binary" "$rsync_binary"; do
	out_one=$(ldd "$program" 2>&1) || out_one="" # a static binary needs none
	if grep -q 'not found' <<<"$out_one"; then
		die "ldd cannot resolve every library of $program:"$'\n'"$out_one"
	fi
	ldd_out+=$out_one$'\n'
done
mapfile -t libs < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out" | LC_ALL=C sort -u)

epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

inputs=$(
	echo "$ref $epoch"
	umoci --version
	sha256sum "$root/hack/image.sh" "$binary" "$rsync_binary" "${libs[@]}"
)
stamp=$out/.enclave-operator.inputs
if [[ -f $stamp && $(cat "$stamp") == "$inputs" && -f $layout/index.json && -f $archive ]]; then
	echo ">> image up to date (binary, libraries and reference unchanged)" >&2
else
	start=$SECONDS
	echo ">> assembling $ref with umoci" >&2
	work=$(mktemp -d "$out/.build.XXXXXX")
	trap 'rm -rf "$work"' EXIT

	rootfs=$work/rootfs
	install -d "$rootfs/etc"
	install -d -m 1777 "$rootfs/tmp"
	install -m 0755 "$binary" "$rootfs/enclave-operator"
	install -D -m 0755 "$rsync_binary" "$rootfs$rsync_binary"
	for lib in "${libs[@]}"; do
		install -D -m 0755 "$lib" "$rootfs$lib" # follows symlinks: the file itself
		echo "   $lib" >&2
	done
	printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
		'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' >"$rootfs/etc/passwd"
	printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$rootfs/etc/group"

	# A reproducible layer: sorted, fixed time, owned by root.
	mapfile -t top < <(find "$rootfs" -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort)
	tar --create --file "$work/layer.tar" --directory "$rootfs" --format=gnu --sort=name \
		--mtime="@$epoch" --owner=0 --group=0 --numeric-owner "${top[@]}"

	image=$work/layout:$ref
	umoci init --layout "$work/layout"
	umoci new --image "$image"
	umoci raw add-layer --image "$image" --history.created "$created" \
		--history.created_by "hack/image.sh: /enclave-operator, /usr/bin/rsync, their shared libraries, /etc/passwd, /etc/group, /tmp" \
		"$work/layer.tar"
	umoci config --image "$image" --created "$created" \
		--config.entrypoint /enclave-operator --config.user 65532:65532 --config.workingdir / \
		--config.label org.opencontainers.image.title=enclave-operator \
		--config.label "org.opencontainers.image.description=Keeps personal data inside a jurisdiction's enclave on Kubernetes, and proves it." \
		--config.label org.opencontainers.image.source=https://github.com/enclave-operator/enclave-operator \
		--config.label org.opencontainers.image.licenses=Apache-2.0 \
		--config.label "org.opencontainers.image.version=$version" \
		--history.created "$created" --history.created_by "hack/image.sh: config"
	umoci gc --layout "$work/layout"
	chmod -R a+rX "$work/layout"
	tar --create --file "$work/archive.tar" --directory "$work/layout" --format=gnu --sort=name \
		--mtime="@$epoch" --owner=0 --group=0 --numeric-owner oci-layout index.json blobs

	rm -rf "$layout" "$stamp"
	mv "$work/layout" "$layout"
	mv "$work/archive.tar" "$archive"
	echo "$inputs" >"$stamp"
	echo ">> assembled in $((SECONDS - start)) s" >&2
fi

digest=$(grep -o '"digest":"sha256:[0-9a-f]*"' "$layout/index.json" | head -n1 | cut -d'"' -f4)
[[ -n $digest ]] || die "no manifest in $layout/index.json"
size=$(du -k "$archive" | cut -f1)
echo "reference: $ref"
echo "digest:    $digest"
echo "layout:    ${layout#"$root"/} (OCI image layout)"
echo "archive:   ${archive#"$root"/} (oci-archive, $((size / 1024)) MiB)"
