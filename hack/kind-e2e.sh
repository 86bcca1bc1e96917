#!/usr/bin/env bash
# The integration suite on a kind cluster. Needs a running Docker engine and `kind` on
# PATH; on machines without Docker use `make test`, which runs the same suite against a
# local control plane built from source.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v kind >/dev/null || ! docker info >/dev/null 2>&1; then
	echo "make kind-e2e needs Docker and kind; this machine has no Docker engine." >&2
	echo "Run 'make test' instead: it uses a local control plane built from Go modules." >&2
	exit 1
fi
name=enclave-e2e
kind create cluster --name "$name" --config "$root/hack/kind.yaml" --wait 120s
trap 'kind delete cluster --name "$name"' EXIT
export KUBECONFIG
KUBECONFIG=$(mktemp)
kind get kubeconfig --name "$name" >"$KUBECONFIG"
# worker, worker2..worker5 take the roles of dublin-a, dublin-b, norway-a, virginia-a, virginia-b.
i=0
for spec in dublin:eu-west-1:eu-west-1a dublin:eu-west-1:eu-west-1b norway:eu-north-1:eu-north-1a \
	virginia:us-east-1:us-east-1a virginia:us-east-1:us-east-1b; do
	i=$((i + 1))
	node=$name-worker$([[ $i -gt 1 ]] && echo $i || true)
	IFS=: read -r site region zone <<<"$spec"
	kubectl label node "$node" --overwrite node-restriction.kubernetes.io/enclave-site="$site" \
		topology.kubernetes.io/region="$region" topology.kubernetes.io/zone="$zone"
done
for sc in eu-dublin-ssd eu-norway-ssd us-east-ssd; do
	kubectl apply -f - <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: $sc}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
YAML
done
"$root/hack/test-integration.sh" "$root/.cluster"
