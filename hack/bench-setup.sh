# Sourced by the benchmarks (from the repository's root, with cluster_dir set): brings
# the local control plane up, builds the release operator, establishes the CRDs and
# creates the namespace the operator keeps its CA Secret, Lease and checkpoints in, so
# that a benchmark runs on a fresh cluster as on one the tests left behind. Sets
# KUBECONFIG and target (the cargo target directory).
bench_setup() {
	tools/cluster/up.sh "$cluster_dir" >/dev/null
	export KUBECONFIG=$cluster_dir/kubeconfig
	target=${CARGO_TARGET_DIR:-target}
	cargo build --quiet --release --bin enclave-operator
	kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
	kubectl wait --for condition=established --timeout=60s -f crds/ >/dev/null
	# A namespace still being deleted (an earlier uninstall) would vanish under the run.
	if [[ $(kubectl get namespace enclave-system -o jsonpath='{.status.phase}' 2>/dev/null) == Terminating ]]; then
		kubectl wait --for=delete namespace/enclave-system --timeout=300s >/dev/null
	fi
	kubectl create namespace enclave-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}
