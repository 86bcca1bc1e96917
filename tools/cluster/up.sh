#!/usr/bin/env bash
# Starts (or checks) the local Kubernetes control plane of the test cluster:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and a kwok
# controller that runs five fake nodes. Everything listens on 127.0.0.1 only.
#
#   usage: up.sh STATE_DIR
#
# STATE_DIR holds the CA and certificates, etcd's data, logs/, pids/ and the admin
# kubeconfig (STATE_DIR/kubeconfig). Running it again on a healthy cluster does
# nothing; on a stopped or broken one it restarts every component from the same
# state. down.sh STATE_DIR stops it and deletes STATE_DIR. See README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

t0=$(date +%s%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }

if [[ $# -ne 1 || -z $1 ]]; then
	echo "usage: $0 STATE_DIR" >&2
	exit 2
fi

UP_TIMEOUT=${UP_TIMEOUT:-90}
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1 # first address of SERVICE_CIDR: the "kubernetes" Service
NODE_LEASE_SECONDS=40

state=$(resolve_state_dir "$1")
if [[ -d $state && ! -e $state/$MARKER && -n $(ls -A "$state") ]]; then
	echo "error: $state exists, is not empty and was not made by up.sh; refusing to use it" >&2
	exit 1
fi
mkdir -p "$state"/{pki,logs,pids,etcd,kwok}
touch "$state/$MARKER"
[[ -e $state/created ]] || touch "$state/created" # when this cluster was made (see lib.sh recorded_by)
lock_state "$state"

# Ports: the environment wins, then what the last up.sh on this state dir used
# (STATE/ports.env), then the defaults.
PORT_VARS=(ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT CONTROLLER_MANAGER_PORT SCHEDULER_PORT AUTHORIZER_PORT AUDIT_SINK_PORT)
if [[ -f $state/ports.env ]]; then
	while IFS='=' read -r k v; do
		[[ " ${PORT_VARS[*]} " == *" $k "* && -z ${!k:-} ]] && printf -v "$k" '%s' "$v"
	done <"$state/ports.env"
fi
ETCD_CLIENT_PORT=${ETCD_CLIENT_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
APISERVER_PORT=${APISERVER_PORT:-16443}
CONTROLLER_MANAGER_PORT=${CONTROLLER_MANAGER_PORT:-20257}
SCHEDULER_PORT=${SCHEDULER_PORT:-20259}
# Where the API server asks enclave-operator's authorizer (the operator under test
# listens there with --authorizer-addr; nothing listens until it runs).
AUTHORIZER_PORT=${AUTHORIZER_PORT:-$((APISERVER_PORT + 1))}
# Where the API server sends the audit events of the native engine's decisions (the
# operator under test listens there with --audit-sink-addr).
AUDIT_SINK_PORT=${AUDIT_SINK_PORT:-$((APISERVER_PORT + 2))}
for k in "${PORT_VARS[@]}"; do
	[[ ${!k} =~ ^[0-9]+$ ]] || { echo "error: $k=${!k} is not a port number" >&2; exit 2; }
	echo "$k=${!k}"
done >"$state/ports.env"
pki=$state/pki

bin=$("$here/build.sh")
export PATH="$bin:$PATH"
kubeconfig=$state/kubeconfig
kubectl() { command kubectl --kubeconfig="$kubeconfig" "$@"; }
t_bin=$(elapsed)

NODES=()
while read -r n; do NODES+=("$n"); done < <(sed -n 's/^  name: \(.*\)$/\1/p' "$here/nodes.yaml")

# --- failure reporting -------------------------------------------------------

fail() { # fail COMPONENT MESSAGE: print the component's log tail and exit
	local name=$1
	shift
	echo "error: $*" >&2
	if [[ -s $state/logs/$name.log ]]; then
		echo "---- last 40 lines of $state/logs/$name.log ----" >&2
		tail -n 40 "$state/logs/$name.log" >&2
		echo "----" >&2
	fi
	if [[ ${KEEP_ON_FAILURE:-} == 1 ]]; then
		echo "components left running (KEEP_ON_FAILURE=1); clean up with: $here/down.sh $state" >&2
	else
		stop_all "$state" 2>/dev/null
		echo "stopped the components again; logs are kept in $state/logs (down.sh $state removes them)" >&2
	fi
	exit 1
}

# wait_for COMPONENT WHAT TIMEOUT CMD...: poll CMD until it succeeds; fail fast if
# COMPONENT's process died meanwhile, or after TIMEOUT seconds.
wait_for() {
	local name=$1 what=$2 timeout=$3
	shift 3
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		component_pid "$state" "$name" >/dev/null || fail "$name" "$name exited while waiting for $what"
		((SECONDS < deadline)) || fail "$name" "timed out after ${timeout}s waiting for $what"
		sleep 0.2
	done
}

curl_api() { # curl_api PATH: GET on the apiserver as the admin
	curl -sf --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
		"https://127.0.0.1:$APISERVER_PORT$1"
}
curl_healthz() { curl -skf --max-time 5 "https://127.0.0.1:$1/healthz"; }
etcd_healthy() { curl -sf --max-time 5 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'; }

# All nodes of nodes.yaml exist, are Ready and no longer carry the not-ready or
# unreachable taints of the node lifecycle (other taints and cordons, e.g. left
# by a test, are not ours to judge).
nodes_ready() {
	local out
	out=$(kubectl get nodes "${NODES[@]}" -o \
		'jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}/{.spec.taints[*].key}{"\n"}{end}') || return 1
	[[ $(grep -c '=True/' <<<"$out") -eq ${#NODES[@]} ]] || return 1
	! grep -qE 'node\.kubernetes\.io/(not-ready|unreachable)' <<<"$out"
}

summary() {
	kubectl get nodes -L node-restriction.kubernetes.io/enclave-site -L topology.kubernetes.io/zone
	cat <<EOF

kubeconfig: $kubeconfig   (or: source $state/env.sh)
api server: https://127.0.0.1:$APISERVER_PORT   logs: $state/logs/   stop: $here/down.sh $state
EOF
}

all_running() {
	local name
	for name in "${COMPONENTS[@]}"; do component_pid "$state" "$name" >/dev/null || return 1; done
}

# --- already up? ---------------------------------------------------------------

if all_running && [[ -s $kubeconfig ]] && curl_api /readyz >/dev/null 2>&1 &&
	curl_healthz "$CONTROLLER_MANAGER_PORT" >/dev/null 2>&1 &&
	curl_healthz "$SCHEDULER_PORT" >/dev/null 2>&1 && nodes_ready; then
	echo "cluster in $state is already up and healthy"
	summary
	exit 0
fi

# Something is missing or unhealthy: stop what is left and start from the state.
stop_all "$state"

for port in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$CONTROLLER_MANAGER_PORT" "$SCHEDULER_PORT"; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "error: 127.0.0.1:$port is already in use (another cluster? see the port variables in $here/README.md)" >&2
		exit 1
	fi
done

# --- PKI -------------------------------------------------------------------------

cat >"$pki/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$SERVICE_IP
EOF

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# issue NAME SUBJECT EXTENSIONS: key + certificate signed by the cluster CA
issue() {
	[[ -s $pki/$1.crt && -s $pki/$1.key ]] && return 0
	new_key "$pki/$1.key"
	openssl req -new -config "$pki/openssl.cnf" -key "$pki/$1.key" -subj "$2" |
		openssl x509 -req -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
			-days 825 -extfile "$pki/openssl.cnf" -extensions "$3" -out "$pki/$1.crt" 2>/dev/null
}

if [[ ! -s $pki/ca.crt || ! -s $pki/ca.key ]]; then
	log "generating the cluster CA and certificates in $pki"
	find "$pki" -name '*.crt' -delete
	new_key "$pki/ca.key"
	openssl req -x509 -new -config "$pki/openssl.cnf" -extensions ca -key "$pki/ca.key" \
		-subj "/CN=enclave-operator-local-ca" -days 3650 -out "$pki/ca.crt"
fi
issue apiserver "/CN=kube-apiserver" server
issue admin "/O=system:masters/CN=kubernetes-admin" client
issue controller-manager "/CN=system:kube-controller-manager" client
issue scheduler "/CN=system:kube-scheduler" client
# The authorizer's serving certificate (127.0.0.1), in the layout --authorizer-tls-dir
# reads; the API server verifies it with the cluster CA.
issue authorizer "/CN=enclave-operator-authorizer" server
mkdir -p "$state/authorizer"
cp "$pki/authorizer.crt" "$state/authorizer/tls.crt"
cp "$pki/authorizer.key" "$state/authorizer/tls.key"
chmod 600 "$state/authorizer/tls.key"
cp "$pki/ca.crt" "$state/authorizer/ca.crt"
# The API server's client certificate for the audit sink, from a CA of its own that
# signs nothing else: the sink (--audit-sink-client-ca) accepts only what it signed,
# so no other identity of this cluster (admin, kwok, a node) can post an event.
if [[ ! -s $pki/audit-ca.crt || ! -s $pki/audit-ca.key ]]; then
	rm -f "$pki/audit-client.crt"
	new_key "$pki/audit-ca.key"
	openssl req -x509 -new -config "$pki/openssl.cnf" -extensions ca -key "$pki/audit-ca.key" \
		-subj "/CN=enclave-operator-local-audit-ca" -days 3650 -out "$pki/audit-ca.crt"
fi
if [[ ! -s $pki/audit-client.crt || ! -s $pki/audit-client.key ]]; then
	new_key "$pki/audit-client.key"
	openssl req -new -config "$pki/openssl.cnf" -key "$pki/audit-client.key" -subj "/CN=kube-apiserver-audit" |
		openssl x509 -req -CA "$pki/audit-ca.crt" -CAkey "$pki/audit-ca.key" -set_serial "0x$(openssl rand -hex 16)" \
			-days 825 -extfile "$pki/openssl.cnf" -extensions client -out "$pki/audit-client.crt" 2>/dev/null
fi
cp "$pki/audit-ca.crt" "$state/authorizer/audit-client-ca.crt"
# kwok writes the status of nodes and pods, holds node leases and deletes pods
# on several nodes at once, so no single system:node identity fits.
issue kwok "/O=system:masters/CN=kwok-controller" client
if [[ ! -s $pki/sa.key ]]; then
	new_key "$pki/sa.key"
	openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
fi
chmod 600 "$pki"/*.key

b64() { base64 -w0 <"$1"; }
write_kubeconfig() { # write_kubeconfig FILE CERTNAME USER
	cat >"$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: enclave-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: $3
  user:
    client-certificate-data: $(b64 "$pki/$2.crt")
    client-key-data: $(b64 "$pki/$2.key")
contexts:
- name: enclave-local
  context:
    cluster: enclave-local
    user: $3
current-context: enclave-local
EOF
	chmod 600 "$1.tmp"
	mv "$1.tmp" "$1"
}
write_kubeconfig "$kubeconfig" admin kubernetes-admin
write_kubeconfig "$state/controller-manager.kubeconfig" controller-manager system:kube-controller-manager
write_kubeconfig "$state/scheduler.kubeconfig" scheduler system:kube-scheduler
write_kubeconfig "$state/kwok.kubeconfig" kwok kwok-controller
# The API server's authorization: Node, then enclave-operator's authorizer, then RBAC
# (authorization.yaml is generated by `enclave-operator authorization-config`; see
# README, "The authorizer"). ENCLAVE_AUTHORIZER=off starts it with Node,RBAC only.
cat >"$state/authorizer.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: enclave-operator
  cluster:
    server: https://127.0.0.1:$AUTHORIZER_PORT/authorize
    certificate-authority: $pki/ca.crt
users:
- name: kube-apiserver
  user: {}
contexts:
- name: enclave-operator
  context: {cluster: enclave-operator, user: kube-apiserver}
current-context: enclave-operator
EOF
sed -e "s|@OPERATOR_NAMESPACE@|enclave-system|" -e "s|@KUBECONFIG@|$state/authorizer.kubeconfig|" \
	"$here/authorization.yaml" >"$state/authorization.yaml"
if [[ ${ENCLAVE_AUTHORIZER:-on} == off ]]; then
	authorization=("--authorization-mode=Node,RBAC")
else
	authorization=(--authorization-config="$state/authorization.yaml")
fi
# The native engine's decisions reach the decision log through the API server's audit
# webhook backend (audit-policy.yaml is generated by `enclave-operator
# audit-sink-config`; see README, "Native decisions in the decision log"). Batch mode:
# the request never waits for the operator; a batch is sent at most 1 s after its
# first event. ENCLAVE_AUDIT_WEBHOOK_MODE=blocking|off changes it.
cat >"$state/audit-webhook.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: enclave-operator
  cluster:
    server: https://127.0.0.1:$AUDIT_SINK_PORT/audit-events
    certificate-authority: $pki/ca.crt
users:
- name: kube-apiserver
  user:
    client-certificate: $pki/audit-client.crt
    client-key: $pki/audit-client.key
contexts:
- name: enclave-operator
  context: {cluster: enclave-operator, user: kube-apiserver}
current-context: enclave-operator
EOF
cp "$here/audit-policy.yaml" "$state/audit-policy.yaml"
case ${ENCLAVE_AUDIT_WEBHOOK_MODE:-batch} in
off) audit=() ;;
batch)
	audit=(--audit-policy-file="$state/audit-policy.yaml" --audit-webhook-config-file="$state/audit-webhook.kubeconfig"
		--audit-webhook-mode=batch --audit-webhook-batch-max-wait=1s --audit-webhook-initial-backoff=1s)
	;;
blocking)
	audit=(--audit-policy-file="$state/audit-policy.yaml" --audit-webhook-config-file="$state/audit-webhook.kubeconfig"
		--audit-webhook-mode=blocking --audit-webhook-initial-backoff=1s)
	;;
*)
	echo "error: ENCLAVE_AUDIT_WEBHOOK_MODE must be batch, blocking or off, got ${ENCLAVE_AUDIT_WEBHOOK_MODE}" >&2
	exit 2
	;;
esac
# shellcheck disable=SC2016 # $PATH is for env.sh to expand
printf 'export KUBECONFIG=%q\nexport PATH=%q:"$PATH"\n' "$kubeconfig" "$bin" >"$state/env.sh"

cat >"$state/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $state/scheduler.kubeconfig
  qps: 200
  burst: 400
leaderElection:
  leaderElect: false
EOF

# --- processes -------------------------------------------------------------------

# start NAME CMD...: runs CMD detached (own session, so that it outlives this
# script and its terminal), appending to logs/NAME.log; pid in pids/NAME.pid.
start() {
	local name=$1
	shift
	echo "==== $(date -u +%FT%TZ) up.sh starting $name" >>"$state/logs/$name.log"
	setsid "$@" >>"$state/logs/$name.log" 2>&1 </dev/null 9>&- &
	echo $! >"$state/pids/$name.pid"
}

restart=false
[[ -d $state/etcd/member ]] && restart=true

log "starting etcd on 127.0.0.1:$ETCD_CLIENT_PORT"
start etcd etcd \
	--name=enclave-local \
	--data-dir="$state/etcd" \
	--listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
	--advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
	--listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-cluster="enclave-local=http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-cluster-state=new \
	--auto-compaction-mode=periodic \
	--auto-compaction-retention=5m \
	--quota-backend-bytes=$((8 * 1024 * 1024 * 1024)) \
	--unsafe-no-fsync=true \
	--log-level=warn
wait_for etcd "etcd /health" 30 etcd_healthy

log "starting kube-apiserver on https://127.0.0.1:$APISERVER_PORT"
rm -f "$state/kube-apiserver.argv" # restart-apiserver.sh's copy of an older command line
start kube-apiserver kube-apiserver \
	--etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
	--bind-address=127.0.0.1 \
	--advertise-address=127.0.0.1 \
	--secure-port="$APISERVER_PORT" \
	--tls-cert-file="$pki/apiserver.crt" \
	--tls-private-key-file="$pki/apiserver.key" \
	--client-ca-file="$pki/ca.crt" \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-account-key-file="$pki/sa.pub" \
	--service-account-signing-key-file="$pki/sa.key" \
	"${authorization[@]}" \
	"${audit[@]}" \
	--enable-admission-plugins=NodeRestriction \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--allow-privileged=true \
	--profiling=false
wait_for kube-apiserver "kube-apiserver /readyz" "$UP_TIMEOUT" curl_api /readyz

if $restart; then
	# Leases held by a previous kwok (random identity) would keep the new one off
	# the nodes until they expire; drop them and let kwok take the nodes at once.
	kubectl -n kube-node-lease delete lease "${NODES[@]}" --ignore-not-found >/dev/null
fi

log "starting kube-controller-manager, kube-scheduler and kwok"
start kube-controller-manager kube-controller-manager \
	--kubeconfig="$state/controller-manager.kubeconfig" \
	--bind-address=127.0.0.1 \
	--secure-port="$CONTROLLER_MANAGER_PORT" \
	--leader-elect=false \
	--controllers='*,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller' \
	--use-service-account-credentials=true \
	--service-account-private-key-file="$pki/sa.key" \
	--root-ca-file="$pki/ca.crt" \
	--cluster-signing-cert-file="$pki/ca.crt" \
	--cluster-signing-key-file="$pki/ca.key" \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--kube-api-qps=200 \
	--kube-api-burst=400 \
	--profiling=false
start kube-scheduler kube-scheduler \
	--config="$state/scheduler.yaml" \
	--bind-address=127.0.0.1 \
	--secure-port="$SCHEDULER_PORT" \
	--profiling=false
# KWOK_WORKDIR keeps kwok from also loading ~/.kwok/kwok.yaml.
start kwok env KWOK_WORKDIR="$state/kwok" kwok \
	--kubeconfig="$state/kwok.kubeconfig" \
	--config="$here/kwok-stages.yaml" \
	--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
	--node-lease-duration-seconds="$NODE_LEASE_SECONDS" \
	--cidr=10.244.0.0/16

kubectl apply -f "$here/nodes.yaml" -f "$here/storage.yaml" >/dev/null ||
	fail kube-apiserver "kubectl apply of nodes.yaml/storage.yaml failed"

wait_for kwok "all ${#NODES[@]} nodes Ready and untainted" "$UP_TIMEOUT" nodes_ready
wait_for kube-controller-manager "the default ServiceAccount" "$UP_TIMEOUT" \
	kubectl -n default get serviceaccount default
wait_for kube-controller-manager "kube-controller-manager /healthz" 30 curl_healthz "$CONTROLLER_MANAGER_PORT"
wait_for kube-scheduler "kube-scheduler /healthz" 30 curl_healthz "$SCHEDULER_PORT"

summary
echo "cluster up in $(elapsed) s ($t_bin s of it for build.sh)"
