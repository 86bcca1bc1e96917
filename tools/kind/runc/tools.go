//go:build tools

// Package tools pins runc for the kind node image; tools/kind/build.sh runs
// `go build` on these import paths. Nothing here is compiled into enclave-operator.
package tools

import (
	_ "github.com/opencontainers/runc"
)
