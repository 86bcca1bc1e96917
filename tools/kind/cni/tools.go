//go:build tools

// Package tools pins cni for the kind node image; tools/kind/build.sh runs
// `go build` on these import paths. Nothing here is compiled into enclave-operator.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
