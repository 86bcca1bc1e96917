//go:build tools

// Package tools pins crictl for the kind node image; tools/kind/build.sh runs
// `go build` on these import paths. Nothing here is compiled into enclave-operator.
package tools

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
