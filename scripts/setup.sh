#!/usr/bin/env bash
# Create .venv and install the project with everything the tests and the example fleet need.
# Idempotent: does nothing when pyproject.toml has not changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: minerfleet needs Python 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

stamp=.venv/.installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip wheel setuptools
# torch first, pinned to the CPU build (DESIGN.md: /opt/wheels has it; anything else pulls GBs of CUDA).
"${pip[@]}" install -q torch==2.13.0
# llama-cpp-python compiles from source (~5 min on 2 cores) the first time; pip caches the wheel after.
"${pip[@]}" install -q -e '.[dev,hf,model,server]'
echo "$want" > "$stamp"
echo "setup: .venv ready"
