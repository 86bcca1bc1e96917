//go:build tools

// Package tools pins the Kyverno commands that `make bench-peers` runs side by side
// with enclave-operator. Nothing here is compiled into enclave-operator; build.sh runs
// `go build` on these import paths.
package tools

import (
	_ "github.com/kyverno/kyverno/cmd/kyverno"
	_ "github.com/kyverno/kyverno/cmd/reports-controller"
)
