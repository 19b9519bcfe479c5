#!/usr/bin/env bash
# A virtualenv of its own with bittensor 11.3.0, for the interop tests of the HTTP door: bittensor 11
# cannot share an environment with the fleet's bittensor 10 (same distribution name). Created once
# (about a minute, from PyPI) under ${MINERFLEET_CACHE:-~/.cache/minerfleet}/bt11-venv and reused; the
# last line printed is its python.
set -euo pipefail
version=11.3.0
cache=${MINERFLEET_CACHE:-$HOME/.cache/minerfleet}
venv=$cache/bt11-venv-$version
python=${PYTHON:-python3}
if ! "$venv/bin/python" -c "import bittensor.http_auth" >/dev/null 2>&1; then
    mkdir -p "$cache"
    exec 9>"$cache/bt11-venv.lock"
    flock 9
    if ! "$venv/bin/python" -c "import bittensor.http_auth" >/dev/null 2>&1; then
        rm -rf "$venv.tmp"
        "$python" -m venv "$venv.tmp" >&2
        "$venv.tmp/bin/pip" install --quiet --disable-pip-version-check "bittensor==$version" >&2
        rm -rf "$venv"
        mv "$venv.tmp" "$venv"
        # a venv's scripts name its folder: rebuild the links after the move
        "$python" -m venv --upgrade "$venv" >&2
    fi
fi
echo "$venv/bin/python"
