#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`; install and start one if not.
# Idempotent: exits 0 at once when an engine already runs. Used by CI on a clean
# machine (no systemd, no registry) and by operators via `make images`.
#
# Verified on Debian bookworm (root, no systemd, kernel with overlay + nf_tables):
# plain `dockerd` works there with its defaults (overlay2, cgroupfs v1, iptables-nft
# NAT + docker-proxy), so no special flags are needed.  Override with
# DOCKERD_FLAGS (e.g. "--storage-driver=vfs" where overlay is not allowed).
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/dockerd.log}
fail() { echo "docker-engine: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 && exit 0

[ "$(id -u)" = 0 ] || fail "no Docker engine answers and this is not root: start dockerd (sudo $0) or add your user to the 'docker' group"

# The apt docker.io (20.10, API 1.41) is the engine: no registry is needed to get it.
# A newer CLI (e.g. /usr/local/bin/docker 28.x) may come first on PATH; it negotiates
# API 1.41 with this engine and works.  iptables is for bridge NAT + port publishing.
need=()
command -v dockerd >/dev/null        || need+=(docker.io)
command -v iptables >/dev/null       || need+=(iptables)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null    || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Try with the current package lists first (fast); refresh them only if that fails.
  apt-get install -y --no-install-recommends "${need[@]}" >/tmp/docker-engine-apt.log 2>&1 ||
    { apt-get update -q >>/tmp/docker-engine-apt.log 2>&1 &&
      apt-get install -y --no-install-recommends "${need[@]}" >>/tmp/docker-engine-apt.log 2>&1; } ||
    fail "apt-get install ${need[*]} failed (see /tmp/docker-engine-apt.log): check the apt mirror, then rerun $0"
fi

# No systemd here (apt's policy-rc.d refuses to start the service), so start dockerd
# ourselves, in its own session so it outlives the calling shell/CI step.  dockerd
# starts its own containerd when none runs.
if ! pgrep -x dockerd >/dev/null; then
  mkdir -p "$(dirname "$log")"
  # shellcheck disable=SC2086  # DOCKERD_FLAGS is a list of words
  setsid nohup dockerd ${DOCKERD_FLAGS:-} >>"$log" 2>&1 </dev/null &
fi

for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  pgrep -x dockerd >/dev/null || break   # it died: no point waiting
  sleep 1
done
fail "dockerd exited or did not answer within 60 s; last log line: $(grep -E 'level=(fatal|error)' "$log" | tail -1 || tail -1 "$log") -- see $log (try DOCKERD_FLAGS=--storage-driver=vfs $0 if overlay2 is refused)"
