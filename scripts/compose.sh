#!/usr/bin/env bash
# Run docker compose v2 when the engine has it, else docker-compose 1.29: same file, same commands.
set -euo pipefail
if docker compose version >/dev/null 2>&1; then
  exec docker compose "$@"
elif command -v docker-compose >/dev/null 2>&1; then
  exec docker-compose "$@"
fi
echo "error: neither 'docker compose' nor 'docker-compose' is installed: run scripts/docker-engine.sh (as root) or install the compose plugin" >&2
exit 1
