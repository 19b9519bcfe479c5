#!/usr/bin/env bash
# A throwaway Docker Swarm of N nodes on this one machine, for the swarm tests and for trying
# `python -m orchestrator swarm up` without a second machine. Root only.
#
#   scripts/swarm-lab.sh up [N]     N nodes (default 2); node 1 is the manager, the others join as workers
#   scripts/swarm-lab.sh down       stop and remove everything `up` made (also after a crash half-way)
#   scripts/swarm-lab.sh stop I     switch node I off: its dockerd, containerd, shims and containers are
#                                   killed at once (SIGKILL), as on a power cut; its data stays
#   scripts/swarm-lab.sh start I    switch node I on again: its dockerd restarts and rejoins the swarm
#   scripts/swarm-lab.sh host I     print node I's engine (unix://.../docker.sock) for DOCKER_HOST
#   scripts/swarm-lab.sh netns I    print node I's network namespace (/var/run/netns/...) for nsenter --net
#
# Each node is its own `dockerd` (own socket, data-root, exec-root, pidfile, config file, cgroup parent)
# inside its own network namespace. Namespaces are entered with `nsenter --net=` (`ip netns exec` remounts
# /sys and dockerd then fails: "Devices cgroup isn't mounted"). A switch namespace holds a bridge; each
# node has a veth to it and the address 10.213.0.I/24. Every 10.213.x.x address (the links, each node's
# docker0 and local networks, the swarm's overlays) lives inside these namespaces only: nothing is added
# to the host's own interfaces, routes or iptables. This kernel has no IPVS and no ingress mesh: the
# stack file uses `endpoint_mode: dnsrr` and `mode: host` ports, as on real machines.
#
# Environment: MINERFLEET_SWARM_LAB (state folder, default /tmp/minerfleet-swarm-lab), MINERFLEET_SWARM_PREFIX
# (namespace names, default mfswarm).
set -euo pipefail

lab=${MINERFLEET_SWARM_LAB:-/tmp/minerfleet-swarm-lab}
prefix=${MINERFLEET_SWARM_PREFIX:-mfswarm}
subnet=10.213.0

fail() { echo "swarm-lab: $*" >&2; exit 1; }
say() { echo "swarm-lab: $*" >&2; }

node_dir() { echo "$lab/node$1"; }
node_ns() { echo "$prefix-$1"; }
node_sock() { echo "unix://$(node_dir "$1")/docker.sock"; }
in_ns() { local ns=$1; shift; nsenter --net="/var/run/netns/$ns" -- "$@"; }

# The processes inside one of our namespaces, and everything they started (container processes live in
# namespaces of their own, under a containerd-shim that lives in ours).
ns_pids() {
  local ns=/var/run/netns/$1 inode roots=() pid
  [ -e "$ns" ] || return 0
  inode=$(stat -L -c %i "$ns")
  for pid in /proc/[0-9]*; do
    pid=${pid#/proc/}
    [ "$(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null)" = "$inode" ] && roots+=("$pid")
  done
  [ ${#roots[@]} -gt 0 ] || return 0
  # descendants of the roots, breadth first, from one snapshot of the ppid links
  local all=" ${roots[*]} " changed=1 links p pp
  links=$(ps -e -o pid=,ppid=)
  while [ $changed = 1 ]; do
    changed=0
    while read -r p pp; do
      [[ $all == *" $p "* ]] && continue
      if [[ -n $pp && $all == *" $pp "* ]]; then all+="$p "; changed=1; fi
    done <<<"$links"
  done
  echo "$all"
}

down() {
  local i ns pids dir pid ids
  for ns in $(ls /var/run/netns 2>/dev/null | grep -E "^$prefix-[0-9]+$" || true); do
    i=${ns#"$prefix"-}
    dir=$(node_dir "$i")
    if [ -S "$dir/docker.sock" ]; then
      # containers first (dockerd would stop them too, but may be the thing that is stuck)
      timeout 30 docker -H "$(node_sock "$i")" swarm leave --force >/dev/null 2>&1 || true
      ids=$(timeout 20 docker -H "$(node_sock "$i")" ps -aq 2>/dev/null || true)
      # shellcheck disable=SC2086
      [ -n "$ids" ] && timeout 60 docker -H "$(node_sock "$i")" rm -f $ids >/dev/null 2>&1 || true
    fi
    pid=$(cat "$dir/docker.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    pids=$(ns_pids "$ns")
    # shellcheck disable=SC2086
    [ -n "${pids// /}" ] && kill -KILL $pids 2>/dev/null || true
  done
  # what the daemons mounted under the lab (container layers, sandboxes' namespaces, shm), deepest first
  if [ -d "$lab" ]; then
    awk -v lab="$lab" '$2 == lab || index($2, lab "/") == 1 {print $2}' /proc/mounts | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  for ns in $(ls /var/run/netns 2>/dev/null | grep -E "^$prefix-" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
  for ctl in /sys/fs/cgroup/*/; do
    for cg in "$ctl$prefix"-*; do
      [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  done
  rm -rf "$lab"
}

start_dockerd() {
  local i=$1 ns dir
  ns=$(node_ns "$i")
  dir=$(node_dir "$i")
  nsenter --net="/var/run/netns/$ns" -- setsid dockerd \
    --config-file "$dir/daemon.json" \
    --host "$(node_sock "$i")" \
    --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
    --cgroup-parent "/$ns" \
    --bip "10.213.$((100 + i)).1/24" \
    --default-address-pool "base=10.213.$((16 * i)).0/20,size=24" \
    --log-level warn >>"$dir/dockerd.log" 2>&1 </dev/null &
}

wait_dockerd() {
  local i=$1
  for _ in $(seq 1 60); do
    docker -H "$(node_sock "$i")" info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  fail "node $i: dockerd did not answer; last log: $(tail -3 "$(node_dir "$i")/dockerd.log")"
}

stop_node() {
  local i=$1 ns dir victims keep other pid
  ns=$(node_ns "$i")
  dir=$(node_dir "$i")
  [ -e "/var/run/netns/$ns" ] || fail "no node $i"
  # never a process of another node (its dockerd, containerd, shims and containers)
  keep=" "
  for other in $(ls /var/run/netns 2>/dev/null | grep -E "^$prefix-[0-9]+$" || true); do
    [ "$other" = "$ns" ] || keep+="$(ns_pids "$other") "
  done
  victims=""
  for pid in $(ns_pids "$ns"); do
    [[ $keep == *" $pid "* ]] || victims+="$pid "
  done
  say "node $i: killing $(echo "$victims" | wc -w) processes"
  # shellcheck disable=SC2086
  [ -n "${victims// /}" ] && kill -KILL $victims 2>/dev/null || true
  for _ in $(seq 1 20); do
    pid=$(cat "$dir/docker.pid" 2>/dev/null || true)
    [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null && break
    sleep 0.25
  done
  # what the dead daemon had mounted (its containers' layers and sandboxes), so that it starts clean
  awk -v d="$dir" 'index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -f "$dir/docker.pid" "$dir/docker.sock"
  say "node $i stopped"
}

start_node() {
  local i=$1
  [ -e "/var/run/netns/$(node_ns "$i")" ] || fail "no node $i"
  start_dockerd "$i"
  wait_dockerd "$i"
  say "node $i started"
}

up() {
  local n=${1:-2} i ns dir
  [ "$(id -u)" = 0 ] || fail "needs root (network namespaces and dockerd)"
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 9 ] || fail "N must be 1-9, not '$n'"
  for tool in dockerd docker nsenter ip; do command -v $tool >/dev/null || fail "$tool is missing"; done
  down  # leftovers of an earlier run that was killed
  mkdir -p "$lab"
  trap 'say "failed; cleaning up"; down' ERR
  ip netns add "$prefix-lan"
  in_ns "$prefix-lan" ip link add br0 type bridge
  in_ns "$prefix-lan" ip link set br0 up
  in_ns "$prefix-lan" ip link set lo up
  for i in $(seq 1 "$n"); do
    ns=$(node_ns "$i")
    dir=$(node_dir "$i")
    mkdir -p "$dir"
    ip netns add "$ns"
    # the pair is made inside the node's namespace, then one end moves to the switch: the host's own
    # namespace never holds either end
    in_ns "$ns" ip link add eth0 type veth peer name "p$i"
    in_ns "$ns" ip link set "p$i" netns "/var/run/netns/$prefix-lan"
    in_ns "$prefix-lan" ip link set "p$i" master br0 up
    in_ns "$ns" ip addr add "$subnet.$i/24" dev eth0
    in_ns "$ns" ip link set eth0 up
    in_ns "$ns" ip link set lo up
    echo '{}' >"$dir/daemon.json"
    start_dockerd "$i"
  done
  for i in $(seq 1 "$n"); do
    wait_dockerd "$i"
  done
  # A 1 s heartbeat (default 5 s): the manager calls a switched-off node down after a few seconds.
  docker -H "$(node_sock 1)" swarm init --advertise-addr "$subnet.1" --listen-addr "$subnet.1:2377" \
    --default-addr-pool 10.213.128.0/17 --default-addr-pool-mask-length 24 \
    --dispatcher-heartbeat 1s >/dev/null
  token=$(docker -H "$(node_sock 1)" swarm join-token -q worker)
  for i in $(seq 2 "$n"); do
    docker -H "$(node_sock "$i")" swarm join --token "$token" --advertise-addr "$subnet.$i" \
      --listen-addr "$subnet.$i:2377" "$subnet.1:2377" >/dev/null
  done
  trap - ERR
  say "$n nodes up: manager $subnet.1 ($(node_sock 1)); workers: $(seq -s ' ' -f "$subnet.%g" 2 "$n")"
}

case ${1:-} in
  up) up "${2:-2}" ;;
  down) down ;;
  stop) stop_node "${2:?node number}" ;;
  start) start_node "${2:?node number}" ;;
  host) node_sock "${2:?node number}" ;;
  netns) echo "/var/run/netns/$(node_ns "${2:?node number}")" ;;
  *) fail "usage: $0 up [N] | down | stop I | start I | host I | netns I" ;;
esac
