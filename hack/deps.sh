#!/usr/bin/env bash
# hack/deps.sh COMMAND [PACKAGE]: makes sure COMMAND is on PATH, installing PACKAGE
# (default: COMMAND) from the distribution's packages when it is missing (Debian and
# derivatives; sudo when not root). Used by hack/image.sh (umoci, rsync) and by
# `make test-unit` (rsync, which the mover's tests run for real).
set -euo pipefail
command=${1:?usage: hack/deps.sh COMMAND [PACKAGE]}
package=${2:-$command}
command -v "$command" >/dev/null && exit 0
die() {
	echo "deps.sh: $*" >&2
	exit 1
}
command -v apt-get >/dev/null ||
	die "$command is not installed and this is not a Debian-based system: install $package and rerun"
as_root=()
if ((EUID != 0)); then
	command -v sudo >/dev/null || die "$command is not installed and installing it needs root: apt-get install $package"
	as_root=(sudo)
fi
echo ">> installing $package from Debian's packages (first time only)" >&2
install=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$package")
if ! "${install[@]}" >&2; then
	"${as_root[@]}" apt-get update >&2
	"${install[@]}" >&2
fi
command -v "$command" >/dev/null || die "apt-get installed no $command"
