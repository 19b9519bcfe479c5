#!/usr/bin/env bash
# `make up`: everything missing, then the stack, then wait until every miner streams.
#   engine (root, no engine) -> wallets (network local) -> render -> images -> compose up -> health
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CONFIG=${CONFIG:-config/miners.yaml}
WAIT=${MINERFLEET_UP_WAIT:-300}

step() { printf '\n== %s\n' "$*"; }

step "docker engine"
bash scripts/docker-engine.sh
# Containers run as this uid (the hotkeys are handed to it on network local); the orchestrator joins
# the docker socket's group. `make` exports these; a direct call gets the same defaults.
if [ "$(id -u)" = 0 ]; then def_uid=1000 def_gid=1000; else def_uid=$(id -u) def_gid=$(id -g); fi
export MINERFLEET_UID=${MINERFLEET_UID:-$def_uid} MINERFLEET_GID=${MINERFLEET_GID:-$def_gid}
MINERFLEET_DOCKER_GID=$(stat -c %g /var/run/docker.sock)
export MINERFLEET_DOCKER_GID

step "fleet file"
$PY -m orchestrator validate --config "$CONFIG" >/dev/null 2>&1 || true  # wallets below may be what is missing
$PY -m orchestrator wallets --config "$CONFIG"
$PY -m orchestrator render --config "$CONFIG"
$PY -m orchestrator validate --config "$CONFIG"

step "images"
bash scripts/images.sh

step "compose up"
bash scripts/compose.sh up -d --no-build --remove-orphans

step "waiting until every miner streams (up to ${WAIT}s)"
deadline=$((SECONDS + WAIT))
until $PY -m orchestrator health --config "$CONFIG" --json >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    $PY -m orchestrator health --config "$CONFIG" || true
    echo "error: not every miner streams after ${WAIT}s: see the table above, \`make status\` and \`make logs\`" >&2
    exit 1
  fi
  sleep 3
done
$PY -m orchestrator health --config "$CONFIG"
echo
echo "The fleet is up. make health | make status | make logs | make down"
