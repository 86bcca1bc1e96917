# Shared helpers for up.sh and down.sh (sourced, not executed).
# shellcheck shell=bash

# Components in start order; they are stopped in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# Marker file that says "this directory is a cluster state dir made by up.sh";
# down.sh only deletes directories that carry it.
# shellcheck disable=SC2034 # used by up.sh and down.sh
MARKER=.enclave-cluster

log() { printf '>> %s\n' "$*" >&2; }

# lock_state STATE: serialise up.sh/down.sh runs on one state dir (make -j).
# The lock is fd 9; up.sh closes it for the processes it starts.
lock_state() {
	exec 9>>"$1/.lock"
	if ! flock -w 300 9; then
		echo "error: another up.sh/down.sh on $1 did not finish within 300 s" >&2
		exit 1
	fi
}

# resolve_state_dir DIR: absolute path of DIR (which need not exist yet).
resolve_state_dir() {
	local dir=$1
	[[ -n $dir ]] || return 1
	if [[ -d $dir ]]; then
		(cd "$dir" && pwd -P)
	else
		local parent
		parent=$(dirname "$dir")
		mkdir -p "$parent"
		printf '%s/%s\n' "$(cd "$parent" && pwd -P)" "$(basename "$dir")"
	fi
}

# is_ours STATE PID: true if PID is alive (not a zombie) and its command line
# points into STATE, so that a recycled pid is never mistaken for ours.
is_ours() {
	local state=$1 pid=$2 stat cmdline
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat%% *} != Z ]] || return 1
	cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	[[ $cmdline == *"$state/"* ]]
}

# component_pid STATE NAME: prints the pid of a running component, or fails.
component_pid() {
	local state=$1 name=$2 pid
	pid=$(cat "$state/pids/$name.pid" 2>/dev/null) || return 1
	is_ours "$state" "$pid" || return 1
	echo "$pid"
}

# stray_pids STATE: processes of our binaries whose arguments point into STATE
# but that no pid file names (e.g. up.sh was killed between fork and writing it).
stray_pids() {
	local state=$1 p pid exe
	for p in /proc/[0-9]*; do
		pid=${p#/proc/}
		exe=$(tr '\0' '\n' <"$p/cmdline" 2>/dev/null | head -n1) || continue
		case ${exe##*/} in
		etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kwok) ;;
		*) continue ;;
		esac
		is_ours "$state" "$pid" && echo "$pid"
	done
	return 0
}

# stop_all STATE: TERM every component (reverse start order), wait up to 20 s,
# then KILL what is left. Only pids that pass is_ours are signalled.
stop_all() {
	local state=$1 pids=() pid i name
	for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
		name=${COMPONENTS[i]}
		if pid=$(component_pid "$state" "$name"); then
			log "stopping $name (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
		rm -f "$state/pids/$name.pid"
	done
	for pid in $(stray_pids "$state"); do
		[[ " ${pids[*]} " == *" $pid "* ]] && continue
		log "stopping stray process $pid"
		kill -TERM "$pid" 2>/dev/null || true
		pids+=("$pid")
	done
	((${#pids[@]})) || return 0
	local deadline=$((SECONDS + 20)) alive
	while :; do
		alive=()
		for pid in "${pids[@]}"; do
			is_ours "$state" "$pid" && alive+=("$pid")
		done
		((${#alive[@]})) || return 0
		if ((SECONDS >= deadline)); then
			log "killing ${alive[*]} (did not exit within 20 s)"
			kill -KILL "${alive[@]}" 2>/dev/null || true
			sleep 0.5
			return 0
		fi
		sleep 0.2
	done
}

# proc_start PID: start time of PID in seconds since the epoch (fails for a zombie
# or a process that is gone).
proc_start() {
	local stat fields btime hz
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	read -ra fields <<<"$stat"
	[[ ${fields[0]} != Z ]] || return 1
	btime=$(awk '$1 == "btime" { print $2 }' /proc/stat)
	hz=$(getconf CLK_TCK)
	echo $((btime + fields[19] / hz)) # field 22 of /proc/PID/stat: start in ticks after boot
}

# recorded_by STATE PID FILE: true if PID is alive and was started after STATE
# was created and no later than FILE (its pid file) was written: neither a
# process older than the cluster (pid 1, a shell) nor a recycled pid.
recorded_by() {
	local state=$1 pid=$2 file=$3 start
	[[ $pid =~ ^[0-9]+$ ]] && ((pid > 1 && pid != $$)) || return 1
	start=$(proc_start "$pid") || return 1
	((start >= $(stat -c %Y "$state/created") - 1 && start <= $(stat -c %Y "$file") + 2))
}

# stop_extra STATE: TERM (then KILL after 20 s) the processes that other tools
# recorded in STATE/pids (e.g. hack/demo.sh's operator), so that none outlives
# the state dir. Only pids that pass recorded_by are signalled.
stop_extra() {
	local state=$1 f name pid pids=() files=() deadline i
	[[ -e $state/created ]] || return 0
	for f in "$state"/pids/*.pid; do
		[[ -e $f ]] || continue
		name=$(basename "$f" .pid)
		[[ " ${COMPONENTS[*]} " == *" $name "* ]] && continue
		pid=$(cat "$f" 2>/dev/null) || continue
		if recorded_by "$state" "$pid" "$f"; then
			log "stopping $name (pid $pid, from $f)"
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
			files+=("$f")
		fi
	done
	deadline=$((SECONDS + 20))
	for i in "${!pids[@]}"; do
		while recorded_by "$state" "${pids[i]}" "${files[i]}" && ((SECONDS < deadline)); do sleep 0.2; done
		if recorded_by "$state" "${pids[i]}" "${files[i]}"; then
			log "killing ${pids[i]} (did not exit within 20 s)"
			kill -KILL "${pids[i]}" 2>/dev/null || true
		fi
	done
}
