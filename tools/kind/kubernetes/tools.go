//go:build tools

// Package tools pins kubernetes for the kind node image; tools/kind/build.sh runs
// `go build` on these import paths. Nothing here is compiled into enclave-operator.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
