//go:build tools

// Package tools pins containerd for the kind node image; tools/kind/build.sh runs
// `go build` on these import paths. Nothing here is compiled into enclave-operator.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
