//go:build tools

// Package tools pins etcd for the local test cluster; build.sh builds the
// server's main package.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
