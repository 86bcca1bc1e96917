#!/usr/bin/env bash
# make bench-volume-move: what moving a volume's data costs, on the kind cluster of
# make kind-up (real nodes, local-path volumes on each node's disk), in one run:
#
#   for each data set (1 GB of mixed files; 100,000 small files), on a claim of
#   us-east-ssd (Virginia) held by a one-replica Deployment:
#     plain rsync   `rsync -aHAXS --numeric-ids` from a pod on Virginia to an rsync
#                   daemon pod on Dublin (a claim of eu-dublin-ssd), over the pod
#                   network: the floor, same nodes, same disks, same image's rsync
#     mover         a VolumeMigration of the claim (no approval, no retention): its first
#                   pass (rsync inside mutual TLS, application running), its verify pass
#                   (both sides' manifests), and the application's downtime (the quiesce
#                   to the pod Ready again on the new volume)
#
# Prints a Markdown table (docs/benchmarks.md, "Moving a volume's data"). The mover runs
# the operator image make kind-e2e loads (IMAGE_PROFILE=dev by default: the debug build,
# whose hashing is about ten times slower than release; IMAGE_PROFILE=release for the
# release build). Leaves the cluster up; deletes its namespaces.
#
#   SETS="mixed small"   the data sets (default both)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir=${KIND_DIR:-$root/.kind}
[[ -f $dir/env ]] || { echo "bench-volume-move: no kind cluster: run 'make kind-up' first" >&2; exit 1; }
# shellcheck disable=SC1091
source "$dir/env"
export IMAGE_PROFILE=${IMAGE_PROFILE:-dev}
busybox=$(grep '^enclave-kind/busybox:' "$(dirname "$(command -v kind)")/../images")
sets=${SETS:-mixed small}

die() {
	echo "bench-volume-move: $*" >&2
	exit 1
}
step() { printf '>> %s\n' "$*" >&2; }
eventually() {
	local seconds=$1 what=$2
	shift 2
	local deadline=$((SECONDS + seconds))
	until "$@" >/dev/null; do
		((SECONDS < deadline)) || die "$what (gave up after $seconds s)"
		sleep 1
	done
}

# The operator, from its image, as kind-e2e installs it (its install is reused).
step "the operator (IMAGE_PROFILE=$IMAGE_PROFILE)"
hack/image.sh >/dev/null
if [[ $IMAGE_PROFILE == dev ]]; then archive=target/image-dev/enclave-operator.tar; else archive=target/image/enclave-operator.tar; fi
kind load image-archive "$archive" --name "${KIND_CLUSTER:-enclave-kind}" >/dev/null
helm upgrade --install enclave-operator charts/enclave-operator --namespace enclave-system \
	--create-namespace --wait --timeout 5m >/dev/null
kubectl rollout restart -n enclave-system deployment/enclave-operator >/dev/null
kubectl rollout status -n enclave-system deployment/enclave-operator --timeout 180s >/dev/null
image=$(hack/image.sh --print-reference)

kubectl apply -f - >/dev/null <<YAML
apiVersion: enclave.dev/v1alpha1
kind: DataEnclave
metadata: {name: bench-move}
spec:
  jurisdiction: EU
  sites:
    - name: dublin
      nodeSelector: {matchLabels: {node-restriction.kubernetes.io/enclave-site: dublin}}
  storage: {storageClassNames: [eu-dublin-ssd]}
---
apiVersion: enclave.dev/v1alpha1
kind: ResidencyPolicy
metadata: {name: bench-move}
spec:
  enclave: bench-move
  match: {namespaceSelector: {matchLabels: {bench-move: "1"}}}
  enforcement: Audit
  migration: {enabled: false, volumeMoves: {requireApproval: false, minRetentionHours: 0, defaultRetentionHours: 0}}
YAML

# seed_command SET: the shell that fills /data with the set, then sleeps.
seed_command() {
	case $1 in
	mixed) # 12 x 64 MiB, 2,000 x 100 KiB, 10,000 x 4 KiB of random bytes: 1.05 GB
		echo 'set -e; if [ ! -e /data/.seeded ]; then mkdir -p /data/big /data/mid /data/small;'\
' i=0; while [ $i -lt 12 ]; do dd if=/dev/urandom of=/data/big/f$i bs=1M count=64 2>/dev/null; i=$((i+1)); done;'\
' head -c 204800000 /dev/urandom > /tmp/pool; i=0; while [ $i -lt 2000 ]; do dd if=/tmp/pool of=/data/mid/f$i bs=102400 count=1 skip=$i 2>/dev/null; i=$((i+1)); done;'\
' i=0; while [ $i -lt 10000 ]; do dd if=/tmp/pool of=/data/small/f$i bs=4096 count=1 skip=$i 2>/dev/null; i=$((i+1)); done; rm /tmp/pool;'\
' touch /data/.seeded; fi; exec sleep 100000' ;;
	small) # 100,000 files of 1 B to 2 KiB in 1,000 directories
		echo 'set -e; if [ ! -e /data/.seeded ]; then d=0; while [ $d -lt 1000 ]; do mkdir -p /data/d$d; f=0;'\
' while [ $f -lt 100 ]; do printf "%0$(( (d * 100 + f) % 2048 + 1 ))d" 0 > /data/d$d/f$f; f=$((f+1)); done; d=$((d+1)); done;'\
' touch /data/.seeded; fi; exec sleep 100000' ;;
	esac
}

# seconds_between T1 T2: whole seconds between two RFC 3339 times.
seconds_between() { echo $(($(date -d "$2" +%s) - $(date -d "$1" +%s))); }
seeded() { kubectl exec -n "$1" "$2" -- test -e /data/.seeded 2>/dev/null; }
pod_seconds() { # pod_seconds NS POD: the container's run time
	local started finished
	started=$(kubectl get pod -n "$1" "$2" -o jsonpath='{.status.containerStatuses[0].state.terminated.startedAt}')
	finished=$(kubectl get pod -n "$1" "$2" -o jsonpath='{.status.containerStatuses[0].state.terminated.finishedAt}')
	seconds_between "$started" "$finished"
}
# pod_done NS POD: it succeeded; a failure ends the benchmark with its log.
pod_done() {
	local phase
	phase=$(kubectl get pod -n "$1" "$2" -o jsonpath='{.status.phase}' 2>/dev/null || true)
	[[ $phase != Failed ]] || die "pod $1/$2 failed: $(kubectl logs -n "$1" "$2" 2>&1 | tail -3)"
	[[ $phase == Succeeded ]]
}

rows=()
for set in $sets; do
	ns=bench-move-$set
	step "$set: seeding a claim of us-east-ssd"
	kubectl delete namespace "$ns" --ignore-not-found --wait >/dev/null
	kubectl create namespace "$ns" >/dev/null
	kubectl apply -n "$ns" -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec: {accessModes: [ReadWriteOnce], storageClassName: us-east-ssd, resources: {requests: {storage: 4Gi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: floor}
spec: {accessModes: [ReadWriteOnce], storageClassName: eu-dublin-ssd, resources: {requests: {storage: 4Gi}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: rsyncd}
data:
  rsyncd.conf: |
    use chroot = yes
    uid = 0
    gid = 0
    numeric ids = yes
    log file = /dev/stderr
    [data]
    path = /data
    read only = false
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: $busybox
          imagePullPolicy: Never
          command: [sh, -c, '$(seed_command "$set")']
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
YAML
	kubectl rollout status -n "$ns" deployment/app --timeout 300s >/dev/null
	app=$(kubectl get pods -n "$ns" -l app=app -o jsonpath='{.items[0].metadata.name}')
	eventually 900 "the $set set was not seeded" seeded "$ns" "$app"
	bytes=$(kubectl exec -n "$ns" "$app" -- du -sb /data | cut -f1)
	files=$(kubectl exec -n "$ns" "$app" -- sh -c 'find /data -type f | wc -l')

	step "$set: plain rsync, Virginia to Dublin"
	kubectl apply -n "$ns" -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: floor-daemon}
spec:
  nodeSelector: {node-restriction.kubernetes.io/enclave-site: dublin}
  containers:
    - name: rsync
      image: $image
      imagePullPolicy: IfNotPresent
      command: [/usr/bin/rsync, --daemon, --no-detach, --config=/config/rsyncd.conf]
      securityContext: {runAsUser: 0, runAsGroup: 0}
      volumeMounts: [{name: data, mountPath: /data}, {name: config, mountPath: /config}]
  volumes:
    - {name: data, persistentVolumeClaim: {claimName: floor}}
    - {name: config, configMap: {name: rsyncd}}
YAML
	kubectl wait -n "$ns" --for condition=Ready pod/floor-daemon --timeout 180s >/dev/null
	address=$(kubectl get pod -n "$ns" floor-daemon -o jsonpath='{.status.podIP}')
	kubectl apply -n "$ns" -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: floor-client}
spec:
  restartPolicy: Never
  nodeSelector: {node-restriction.kubernetes.io/enclave-site: virginia}
  containers:
    - name: rsync
      image: $image
      imagePullPolicy: IfNotPresent
      command: [/usr/bin/rsync, -aHAXS, --numeric-ids, --stats, /data/, "rsync://$address/data/"]
      securityContext: {runAsUser: 0, runAsGroup: 0}
      volumeMounts: [{name: data, mountPath: /data, readOnly: true}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data, readOnly: true}}]
YAML
	eventually 1800 "plain rsync did not finish" pod_done "$ns" floor-client
	floor=$(pod_seconds "$ns" floor-client)
	kubectl delete pod -n "$ns" floor-client floor-daemon --wait >/dev/null

	step "$set: the mover (a VolumeMigration)"
	kubectl label namespace "$ns" bench-move=1 >/dev/null
	sleep 5
	kubectl apply -n "$ns" -f - >/dev/null <<YAML
apiVersion: enclave.dev/v1alpha1
kind: VolumeMigration
metadata: {name: data}
spec: {claimName: data}
YAML
	ended() { [[ $(kubectl get volumemigration -n "$ns" data -o jsonpath='{.status.phase}') =~ ^(Erased|RolledBack|Failed)$ ]]; }
	first_done() { pod_done "$ns" data-first-sender; }
	eventually 1800 "the first pass did not finish" first_done
	first=$(pod_seconds "$ns" data-first-sender)
	verify_done() { pod_done "$ns" data-verify-receiver; }
	eventually 3600 "the verify pass did not finish" verify_done
	verify=$(pod_seconds "$ns" data-verify-receiver)
	eventually 1800 "the move did not end" ended
	phase=$(kubectl get volumemigration -n "$ns" data -o jsonpath='{.status.phase}')
	[[ $phase == Erased ]] || die "the $set move ended $phase: $(kubectl get volumemigration -n "$ns" data -o jsonpath='{.status.message}')"
	quiesce=$(kubectl get volumemigration -n "$ns" data -o jsonpath='{.status.times.quiesceStarted}')
	back=$(kubectl get volumemigration -n "$ns" data -o jsonpath='{.status.times.done}')
	downtime=$(seconds_between "$quiesce" "$back")
	mb() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", (s > 0 ? b / s / 1e6 : 0) }'; }
	fps() { awk -v f="$files" -v s="$1" 'BEGIN { printf "%.0f", (s > 0 ? f / s : 0) }'; }
	ratio=$(awk -v a="$first" -v b="$floor" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
	rows+=("| $set ($((bytes / 1000000)) MB, $files files) | ${floor} s: $(mb "$floor") MB/s, $(fps "$floor") files/s | ${first} s: $(mb "$first") MB/s, $(fps "$first") files/s | ${ratio}x | ${verify} s | ${downtime} s |")
	kubectl delete namespace "$ns" --wait=false >/dev/null
done
kubectl delete residencypolicy bench-move --ignore-not-found >/dev/null
kubectl delete dataenclave bench-move --ignore-not-found >/dev/null

echo
echo "| data set | plain rsync -aHAXS (Virginia to Dublin) | mover, first pass | mover / rsync | verify pass | downtime (quiesce to Ready) |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo "(image profile: $IMAGE_PROFILE; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg))"
