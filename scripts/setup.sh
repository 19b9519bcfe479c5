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

# shellcheck source=scripts/progress.sh
. scripts/progress.sh
log=build/setup.log
started=$SECONDS
if [ -x .venv/bin/python ]; then
  echo "setup: updating .venv (pyproject.toml or setup.sh changed; what is installed is reused)" >&2
else
  echo "setup: creating .venv (first time ~8 min on 2 cores, ~5 of them compiling llama.cpp once; log: $log)" >&2
  "$PYTHON" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)
with_progress "pip, setuptools" "$log" "${pip[@]}" install --upgrade pip wheel setuptools
# torch first, pinned to the CPU build (DESIGN.md: /opt/wheels has it; anything else pulls GBs of CUDA).
echo "setup: torch (CPU build, ~1 min the first time)" >&2
with_progress "torch" "$log" "${pip[@]}" install torch==2.13.0
# llama-cpp-python: the wheel the images use too (scripts/llama-wheel.sh: compiled once, 4-6 min on 2
# cores, with the images' portable CPU flags, cached in ~/.cache/minerfleet), so llama.cpp is compiled
# once for the venv and the images, not twice. --only-binary: pip never compiles it a second time.
llama=()
if .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
  echo "setup: the project and its dependencies (llama-cpp-python already installed: reused)" >&2
else
  whl=$(PYTHON=.venv/bin/python bash scripts/llama-wheel.sh | tail -1)
  echo "setup: the project and its dependencies (llama-cpp-python: $whl)" >&2
  llama=(--find-links "$(dirname "$whl")" --only-binary llama-cpp-python)
fi
with_progress "dependencies" "$log" "${pip[@]}" install "${llama[@]}" -e '.[dev,hf,model,server]'
echo "$want" > "$stamp"
echo "setup: .venv ready in $((SECONDS - started)) s"
