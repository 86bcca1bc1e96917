#!/usr/bin/env bash
# The Debian userland of the kind node image and of the images that need one
# (tools/kind/build.sh): debootstrap of $DEBIAN_SUITE (minbase) with the packages of
# kind's images/base/Dockerfile plus ipset and socat, trimmed as kind trims its base,
# then `docker import`ed. The root filesystem's tarball is cached under $ENCLAVE_CACHE, so
# that a Docker engine without the image imports it again instead of downloading.
# Prints the image reference on stdout.
set -euo pipefail
# Command substitutions keep errexit: a failure inside $(...) ends the script.
shopt -s inherit_errexit
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${ENCLAVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enclave-operator}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
die() {
	echo "userland.sh: $*" >&2
	exit 1
}
packages=systemd,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2
packages+=,pigz,bash,ca-certificates,curl,jq,procps,ipset,socat,e2fsprogs
# Bump when the recipe below changes.
recipe=1
key=$(echo "$DEBIAN_SUITE $mirror $packages $recipe" | sha256sum | cut -c1-12)
image=enclave-kind/debian:$DEBIAN_SUITE-$key
tarball=$cache/kind-debian-$DEBIAN_SUITE-$key.tar
if docker image inspect "$image" >/dev/null 2>&1; then
	echo "$image"
	exit 0
fi

if [[ ! -f $tarball ]]; then
	command -v debootstrap >/dev/null ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >&2
	work=$(mktemp -d "${TMPDIR:-/tmp}/kind-userland.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	rootfs=$work/rootfs
	echo ">> debootstrap $DEBIAN_SUITE from $mirror (first time only)" >&2
	nice -n 10 debootstrap --variant=minbase --include="$packages" "$DEBIAN_SUITE" "$rootfs" "$mirror" \
		>"$work/debootstrap.log" 2>&1 || {
		tail -20 "$work/debootstrap.log" >&2
		die "debootstrap failed"
	}
	# What kind's base image removes: documentation, apt lists, and the units a container
	# must not start (udev, getty, the tmpfiles setup that fights the runtime's mounts).
	rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
		"$rootfs"/usr/share/man/* "$rootfs"/var/log/*
	find "$rootfs/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
	rm -f "$rootfs"/lib/systemd/system/multi-user.target.wants/* "$rootfs"/etc/systemd/system/*.wants/* \
		"$rootfs"/lib/systemd/system/local-fs.target.wants/* "$rootfs"/lib/systemd/system/sockets.target.wants/*udev* \
		"$rootfs"/lib/systemd/system/sockets.target.wants/*initctl* "$rootfs"/lib/systemd/system/basic.target.wants/*
	echo "ReadKMsg=no" >>"$rootfs/etc/systemd/journald.conf"
	ln -sf /usr/lib/systemd/systemd "$rootfs/sbin/init"
	mkdir -p "$cache"
	tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
fi
docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	"$tarball" "$image" >/dev/null
echo "$image"
