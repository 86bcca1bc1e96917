#!/usr/bin/env bash
# Builds Kyverno's admission controller (cmd/kyverno) and reports controller
# (cmd/reports-controller) from the Go module pinned beside this script, into
# ~/.cache/enclave-operator/peers/kyverno-<version>/bin. Only `make bench-peers` calls it:
# Kyverno is a peer we measure against, never something the tests need.
#
# Like tools/cluster/build.sh: nothing downloaded from a release page, no Docker; a second
# run (or a fresh clone on the same machine) finds the binaries and builds nothing.
# Prints the bin directory on stdout; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# The version is the one go.mod requires; go.sum pins every dependency beside it.
version=$(awk '$1 == "require" && $2 == "github.com/kyverno/kyverno" { print $3 }' "$here/go.mod")
[[ -n $version ]] || { echo "error: no github.com/kyverno/kyverno requirement in $here/go.mod" >&2; exit 1; }

cache=${ENCLAVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enclave-operator}
out=$cache/peers/kyverno-$version
# The cache is keyed by version in its name and by go.mod/go.sum in .key, so that a
# changed pin (a different replace, a bumped dependency) rebuilds instead of reusing.
key=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
if [[ -f $out/bin/.complete && $(cat "$out/bin/.key" 2>/dev/null) == "$key" ]]; then
	echo "$out/bin"
	exit 0
fi

echo ">> building Kyverno $version into $out/bin (first time only; later runs reuse it)" >&2
start=$SECONDS
rm -rf "$out/bin.tmp"
mkdir -p "$out/bin.tmp"
# Upstream's Makefile builds with CGO_ENABLED=0 and stamps the version the same way.
# -mod=mod: go.sum is complete, but the module cache may be empty on a fresh machine.
(cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
	-ldflags "-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion=$version" \
	-o "$out/bin.tmp/" \
	github.com/kyverno/kyverno/cmd/kyverno github.com/kyverno/kyverno/cmd/reports-controller)
echo "$key" >"$out/bin.tmp/.key"
touch "$out/bin.tmp/.complete"
rm -rf "${out:?}/bin" && mv "$out/bin.tmp" "$out/bin"
echo ">> built Kyverno $version in $((SECONDS - start)) s" >&2
echo "$out/bin"
