#!/usr/bin/env bash
# `make up`: everything missing, then the stack, then wait until every miner streams.
#   engine (root, no engine) -> wallets (network local) -> render -> images -> compose up -> health
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CONFIG=${CONFIG:-config/miners.yaml}
WAIT=${MINERFLEET_UP_WAIT:-300}

MONITORING=${MONITORING:-}
started=$SECONDS
step() { printf '\n== %s   [%d s so far]\n' "$*" $((SECONDS - started)); }

step "docker engine (installed and started when missing: ~1 min the first time)"
if docker info >/dev/null 2>&1; then
  echo "reused: the running Docker engine"
else
  bash scripts/docker-engine.sh
fi
# Containers run as this uid (the hotkeys are handed to it on network local); the orchestrator joins
# the docker socket's group. `make` exports these; a direct call gets the same defaults.
if [ "$(id -u)" = 0 ]; then def_uid=1000 def_gid=1000; else def_uid=$(id -u) def_gid=$(id -g); fi
export MINERFLEET_UID=${MINERFLEET_UID:-$def_uid} MINERFLEET_GID=${MINERFLEET_GID:-$def_gid}
MINERFLEET_DOCKER_GID=$(stat -c %g /var/run/docker.sock)
export MINERFLEET_DOCKER_GID

ROLLING=${ROLLING:-}
ROLLBACK=${ROLLBACK:-}
[ "$ROLLING" = 0 ] && ROLLING=
[ "$ROLLBACK" = 0 ] && ROLLBACK=

if [ -n "$ROLLBACK" ]; then
  step "rolling back to the saved revision, $($PY -c 'import sys, yaml; print((yaml.safe_load(open(sys.argv[1])).get("rollout") or {}).get("max_unavailable", 1))' "$CONFIG" 2>/dev/null || echo 1) miner(s) at a time"
  $PY -m orchestrator rollout --rollback --runtime docker --config "$CONFIG"
  $PY -m orchestrator health --config "$CONFIG"
  exit 0
fi

step "fleet file: hotkeys (network local), settings, docker-compose.yml (seconds)"
$PY -m orchestrator validate --config "$CONFIG" >/dev/null 2>&1 || true  # wallets below may be what is missing
$PY -m orchestrator wallets --config "$CONFIG"
if [ -n "$ROLLING" ]; then
  # The revision the fleet runs now, to roll back to (`make up ROLLBACK=1`).
  $PY -m orchestrator rollout --save --config "$CONFIG"
fi
$PY -m orchestrator render --config "$CONFIG"
$PY -m orchestrator validate --config "$CONFIG"

profile=()
monitoring=()
if [ -n "$MONITORING" ] && [ "$MONITORING" != 0 ]; then
  profile=(--profile monitoring)
  monitoring=(--monitoring)
fi
# Only the images the rendered fleet uses (an hf image is built only for a fleet with an hf miner);
# `make images ALL=1` builds every one.
MINERFLEET_IMAGES=${MINERFLEET_IMAGES:-$($PY -m orchestrator images --config "$CONFIG" "${monitoring[@]}")}
export MINERFLEET_IMAGES
step "images: $MINERFLEET_IMAGES (first time ~5 min on 2 cores: base image ~1 min, llama.cpp compiled ~4 min; later runs reuse them)"
bash scripts/images.sh

if [ -n "$ROLLING" ]; then
  # Changed miners a few at a time, each batch gated on streaming (rollout.max_unavailable).
  step "rolling update: changed miners a few at a time, each batch streaming before the next"
  bash scripts/compose.sh "${profile[@]}" up -d --no-build --no-recreate --remove-orphans
  $PY -m orchestrator rollout --runtime docker --config "$CONFIG"
else
  step "compose up${profile:+ (with the monitoring profile: Prometheus on 127.0.0.1:9090)}"
  bash scripts/compose.sh "${profile[@]}" up -d --no-build --remove-orphans
fi

step "waiting until every miner streams (models load in ~10-60 s; up to ${WAIT}s)"
# A miner streams when its probe is healthy, or `slow`: still streaming at the probe's deadline because
# the box is busy (loaded, not stuck; the watch shows it UNHEALTHY overloaded and never restarts it).
# Prints the miners that do not stream yet, "name (verdict)", comma-separated; exits 1 while any.
not_streaming() {
  printf '%s' "$1" | $PY -c 'import json, sys
try:
    rows = json.load(sys.stdin)
    rows = rows.get("miners", rows) if isinstance(rows, dict) else rows
    late = ["%s (%s)" % (r["name"], r["verdict"]) for r in rows if r["verdict"] not in ("healthy", "slow")]
except Exception:
    late = ["the miners"]
print(", ".join(late))
sys.exit(1 if late else 0)'
}
deadline=$((SECONDS + WAIT))
next_report=$((SECONDS + 15))
report=""
until report=$($PY -m orchestrator health --config "$CONFIG" --json 2>/dev/null) || waiting=$(not_streaming "$report"); do
  if [ $SECONDS -ge $deadline ]; then
    $PY -m orchestrator health --config "$CONFIG" || true
    echo "error: not every miner streams after ${WAIT}s: see the table above, \`make status\` and \`make logs\`" >&2
    exit 1
  fi
  if [ $SECONDS -ge $next_report ]; then
    echo "  $((SECONDS - deadline + WAIT)) s: still waiting for ${waiting:-the miners}"
    next_report=$((SECONDS + 15))
  fi
  sleep 3
done
if ! $PY -m orchestrator health --config "$CONFIG"; then
  echo "Every miner streams; the ones marked slow are still streaming at the probe's deadline because"
  echo "this machine is busy (the watch shows them UNHEALTHY overloaded and does not restart them)."
fi
echo
echo "The fleet is up in $((SECONDS - started)) s. make health | make status | make logs | make down"
echo "Status page: http://127.0.0.1:$($PY -c 'import sys, yaml; print((yaml.safe_load(open(sys.argv[1])).get("status_api") or {}).get("port", 9100))' "$CONFIG" 2>/dev/null || echo 9100)/"
if [ ${#profile[@]} -gt 0 ]; then
  echo "Prometheus: http://127.0.0.1:${MINERFLEET_PROMETHEUS_PORT:-9090}/ (alerts: /alerts)"
fi
