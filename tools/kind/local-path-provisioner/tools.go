//go:build tools

// Package tools pins local-path-provisioner, the kind cluster's volume provisioner (one
// StorageClass per site, volumes on the node a claim's first pod runs on);
// tools/kind/build.sh runs `go build` on this import path. Nothing here is compiled into
// enclave-operator.
package tools

import (
	_ "github.com/rancher/local-path-provisioner"
)
