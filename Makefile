# enclave-operator — every command a developer or CI needs. `make help` lists them.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# The local control plane lives here (logs, certificates, kubeconfig); gitignored.
CLUSTER_DIR ?= $(CURDIR)/.cluster
# Binaries built from the Go modules in tools/cluster, cached outside the tree.
ENCLAVE_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/enclave-operator
export ENCLAVE_CACHE
TOOLS_BIN := $(ENCLAVE_CACHE)/bin
export PATH := $(TOOLS_BIN):$(PATH)
CARGO ?= cargo

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the operator (debug)
	$(CARGO) build --bins

.PHONY: image
image: ## The operator's OCI image without Docker (umoci): target/image/enclave-operator{,.tar}
	hack/image.sh

.PHONY: crds
crds: ## Regenerate crds/ and the chart's CRDs from the Rust types
	$(CARGO) run --quiet --bin enclave-operator -- crd > crds/enclave.dev.yaml
	cp crds/enclave.dev.yaml charts/enclave-operator/crds/enclave.dev.yaml

.PHONY: tools
tools: ## Build the local control plane's binaries into the cache (once per version)
	tools/cluster/build.sh >/dev/null

.PHONY: cluster-up
cluster-up: tools ## Start the local control plane (etcd, apiserver, scheduler, controller-manager, kwok) with the test nodes
	tools/cluster/up.sh $(CLUSTER_DIR)

.PHONY: cluster-down
cluster-down: ## Stop the local control plane and delete its state
	tools/cluster/down.sh $(CLUSTER_DIR)

.PHONY: fmt-check
fmt-check: ## Check formatting
	$(CARGO) fmt --all -- --check

.PHONY: clippy
clippy: ## Lint, warnings are errors
	$(CARGO) clippy --all-targets -- -D warnings

.PHONY: test-unit
test-unit: ## Unit tests (no cluster)
	hack/deps.sh rsync # the mover's tests run Debian's rsync for real
	$(CARGO) test --lib --bins

.PHONY: test-integration
test-integration: tools ## Integration tests against the local control plane (or the cluster $KUBECONFIG names)
	hack/test-integration.sh $(CLUSTER_DIR)

.PHONY: test
test: fmt-check clippy test-unit test-integration test-kind ## Everything CI runs: fmt, clippy, unit and integration tests, the real-node tier on kind

.PHONY: bench
bench: ## Criterion benchmarks (see docs/benchmarks.md)
	$(CARGO) bench --bench admission

.PHONY: bench-e2e
bench-e2e: tools ## Pod CREATE through the API server: no policy vs native vs webhook engine (see docs/benchmarks.md)
	hack/bench-e2e.sh $(CLUSTER_DIR)

.PHONY: bench-peers
bench-peers: tools ## The same enclave in Kyverno v1.19 and here, one run: admission latency, CPU, memory, detection (builds Kyverno once; see docs/peers.md)
	hack/bench-peers.sh $(CLUSTER_DIR)

.PHONY: bench-migration
bench-migration: tools ## Time to compliance for 1,000 pods on the local control plane (see docs/benchmarks.md)
	hack/bench-migration.sh $(CLUSTER_DIR) $(or $(PODS),1000)

.PHONY: bench-audit
bench-audit: tools ## `enclave-operator audit` with 10,000 pods in scope on the local control plane: wall time and max RSS (in memory: cargo bench --bench audit)
	hack/bench-audit.sh $(CLUSTER_DIR)

.PHONY: bench-native-profile
bench-native-profile: tools ## What one in-scope pod CREATE allocates in the API server's policy plugins, from its heap profile (see docs/benchmarks.md)
	hack/bench-native-profile.sh $(CLUSTER_DIR)

.PHONY: bench-audit-sink
bench-audit-sink: tools ## What the audit sink costs the API server: dry-run pod CREATE latency with the audit webhook off, batch and blocking (see docs/benchmarks.md)
	hack/bench-audit-sink.sh $(CLUSTER_DIR)

.PHONY: bench-scale
bench-scale: tools ## Memory, CPU and readiness from 1,000 to 30,000 pods on 500 and 2,000 kwok nodes; table and plot (see docs/benchmarks.md)
	hack/bench-scale.sh $(CLUSTER_DIR)

.PHONY: bench-volume-move
bench-volume-move: ## Moving a volume's data on kind: mover vs plain rsync between the same nodes, verify pass, downtime (needs make kind-up; see docs/benchmarks.md)
	hack/bench-volume-move.sh

.PHONY: fuzz
fuzz: ## Coverage-guided fuzzing of admission (nightly, libFuzzer; FUZZ_RUNS inputs, default 10,000,000)
	hack/fuzz.sh $(or $(FUZZ_RUNS),10000000)

.PHONY: demo
demo: tools ## Start the local control plane, apply the samples, run the operator and show what it did
	hack/demo.sh $(CLUSTER_DIR)

.PHONY: kind-up
kind-up: ## A kind cluster built offline: dockerd, node image and images from modules and Debian packages (once), kube-router (see docs/kind.md)
	hack/kind-up.sh up

.PHONY: test-kind
test-kind: ## The real-node tier: make kind-up, make kind-e2e, and the cluster deleted after (see docs/kind.md)
	hack/test-kind.sh

.PHONY: kind-down
kind-down: ## Delete the kind cluster (dockerd and the built images stay)
	hack/kind-up.sh down

.PHONY: kind-e2e
kind-e2e: ## Real-node tests on the kind cluster of make kind-up: the operator from its image, the fence enforced (see docs/kind.md)
	hack/kind-e2e.sh
