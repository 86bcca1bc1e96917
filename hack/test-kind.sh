#!/usr/bin/env bash
# make test-kind: the real-node tier of `make test` (docs/kind.md): the kind cluster of
# `make kind-up` (built offline, once, cached by version), the tests of `make kind-e2e`,
# and the cluster deleted however they end (dockerd and the built images stay).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
hack/kind-up.sh up || exit 1
hack/kind-e2e.sh
status=$?
hack/kind-up.sh down || true
exit "$status"
