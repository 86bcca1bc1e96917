#!/usr/bin/env bash
# Makes sure a Docker engine answers, for make kind-up (docs/kind.md):
#  - installs Debian's docker.io with apt when dockerd is missing (as root, like the rest
#    of the machine's bootstrap);
#  - installs hack/kind/runc-wrapper into the cache and registers it in
#    /etc/docker/daemon.json as the default runtime, because this machine's capability
#    bounding set lacks CAP_SYS_RESOURCE and `docker run --privileged` (every kind node)
#    fails with plain runc;
#  - starts dockerd in the background (log: $ENCLAVE_CACHE/dockerd.log) when none answers,
#    and waits for it. A running dockerd is left alone when it already uses the wrapper,
#    and restarted (only if we started it: pid file) when its daemon.json had to change.
set -euo pipefail
# Command substitutions keep errexit: a failure inside $(...) ends the script.
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${ENCLAVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enclave-operator}
runtime_name=runc-no-sys-resource
die() {
	echo "docker.sh: $*" >&2
	exit 1
}

if ! command -v dockerd >/dev/null; then
	[[ $(id -u) == 0 ]] || die "dockerd is missing and installing it needs root (apt-get install docker.io)"
	echo ">> installing docker.io with apt" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io >&2 ||
		{ apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io >&2; }
fi
command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends jq >&2

# The wrapper, by content, so that a change to it is installed and a stale copy never runs.
mkdir -p "$cache"
wrapper="$cache/kind-runtime-$(sha256sum "$root/hack/kind/runc-wrapper" | cut -c1-12)/runc-wrapper"
if [[ ! -x $wrapper ]]; then
	mkdir -p "$(dirname "$wrapper")"
	install -m 0755 "$root/hack/kind/runc-wrapper" "$wrapper.tmp" && mv "$wrapper.tmp" "$wrapper"
fi

# daemon.json: keep what is there, set our runtime as the default.
config=/etc/docker/daemon.json
mkdir -p /etc/docker
current='{}'
[[ -s $config ]] && current=$(cat "$config")
wanted=$(jq --arg name "$runtime_name" --arg path "$wrapper" \
	'.runtimes[$name] = {path: $path} | ."default-runtime" = $name' <<<"$current") ||
	die "$config is not valid JSON; fix or remove it"
changed=0
if [[ $(jq -S . <<<"$current") != $(jq -S . <<<"$wanted") ]]; then
	printf '%s\n' "$wanted" >"$config.tmp" && mv "$config.tmp" "$config"
	changed=1
fi

pidfile=$cache/dockerd.pid
if docker info >/dev/null 2>&1; then
	if [[ $changed == 0 ]] && [[ $(docker info --format '{{.DefaultRuntime}}') == "$runtime_name" ]]; then
		exit 0
	fi
	if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
		echo ">> restarting dockerd (pid $(cat "$pidfile")) for the new $config" >&2
		kill "$(cat "$pidfile")"
		for _ in $(seq 60); do docker info >/dev/null 2>&1 || break; sleep 1; done
	else
		die "a Docker engine runs but not with the $runtime_name runtime, and not one this script started; restart it so that it reads $config"
	fi
fi

echo ">> starting dockerd (log: $cache/dockerd.log)" >&2
setsid nohup dockerd >>"$cache/dockerd.log" 2>&1 </dev/null &
echo $! >"$pidfile"
for _ in $(seq 60); do
	docker info >/dev/null 2>&1 && break
	sleep 1
done
docker info >/dev/null 2>&1 || die "dockerd did not answer within 60 s; see $cache/dockerd.log"
[[ $(docker info --format '{{.DefaultRuntime}}') == "$runtime_name" ]] || die "dockerd did not take $runtime_name as its default runtime"
