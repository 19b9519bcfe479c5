#!/usr/bin/env bash
# The llama-cpp-python wheel, compiled once on this host with the images' portable CPU flags
# (scripts/llama-flags.sh), from the sdist that scripts/llama-server.sh also builds from. The host's
# .venv (scripts/setup.sh) installs it, and scripts/images.sh puts the same file into the miner
# images when its libraries resolve on the base image: one compile of llama.cpp's library, not two.
#
#   scripts/llama-wheel.sh                      build once, print the wheel's path (last stdout line)
#   scripts/llama-wheel.sh --missing WHL [IMG]  print what the wheel's libraries need and do not find
#                                               here, or in docker image IMG (nothing: the wheel fits)
#
# A wheel that scripts/images.sh compiled in the image for the same version and flags (its flags.txt
# says so) is used instead of compiling, when its libraries resolve on this host.
#
# Cached in ${MINERFLEET_CACHE:-~/.cache/minerfleet}/wheels/llama-cpp-python-<version>-host-<hash>/,
# <hash> covering the version, the CMake flags, the compiler and the Python (the wheel is cp311);
# a second run prints the path at once. Built with pip's cache off: pip's cache does not know the
# CMake flags, so a wheel it kept from another build (e.g. -DGGML_NATIVE=ON) must not come back.
#
# Time: 4-6 min on 2 cores the first time (progress every ${PROGRESS_EVERY:-20} s; log:
# build/llama-wheel.log). Needs a C/C++ compiler (g++, make or ninja; cmake comes from PyPI if absent).
#
# Environment: MINERFLEET_CACHE, MINERFLEET_LLAMA_CPU, MINERFLEET_LLAMA_CMAKE_ARGS (scripts/llama-flags.sh),
# MINERFLEET_JOBS (default nproc), PYTHON (a Python 3.11 with pip; default .venv/bin/python, else python3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "llama-wheel: $*" >&2; }
fail() { say "error: $*"; exit 1; }

# missing WHL [IMAGE]: `ldd` on every shared library in the wheel, on this host or inside IMAGE; prints
# the libraries and symbol versions not found (in an image, libgomp is ignored: every image has it).
missing() {
  local whl=$1 image=${2:-} dir out
  dir=$(mktemp -d)
  python3 -m zipfile -e "$whl" "$dir" >/dev/null || { echo "cannot unpack $whl"; rm -rf "$dir"; return 0; }
  chmod -R a+rX "$dir"
  if [ -n "$image" ]; then
    out=$(docker run --rm --network none -v "$dir:/wheel:ro" "$image" \
      sh -c 'find /wheel -name "*.so*" -type f -exec ldd {} \;' 2>&1) || out="ldd failed in $image: $out"
    out=$(printf '%s\n' "$out" | grep -v 'libgomp\.so\.1 => not found' || true)
  else
    out=$(find "$dir" -name '*.so*' -type f -exec ldd {} \; 2>&1) || out="ldd failed: $out"
  fi
  rm -rf "$dir"
  printf '%s\n' "$out" | grep -E 'not found|failed' || true
}
if [ "${1:-}" = --missing ]; then
  [ -f "${2:-}" ] || fail "--missing WHEEL [IMAGE]: no wheel '${2:-}'"
  missing "$2" "${3:-}"
  exit 0
fi

# shellcheck source=scripts/llama-flags.sh
. scripts/llama-flags.sh
# shellcheck source=scripts/progress.sh
. scripts/progress.sh
cache=${MINERFLEET_CACHE:-$HOME/.cache/minerfleet}
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3.11; fi
fi
command -v "$python" >/dev/null || fail "$python not found; fix: set PYTHON=/path/to/python3.11"
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
  fail "$python is not Python 3.11 (the images' Python); fix: set PYTHON=/path/to/python3.11"

key=$({
  printf '%s\n' "$llama_version" "$llama_cpu_args"
  { g++ --version 2>/dev/null || cc --version 2>/dev/null || echo no-compiler; } | head -1
  "$python" -c 'import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())'
} | sha256sum | cut -c1-12)
dir=$cache/wheels/llama-cpp-python-$llama_version-host-$key
pattern="llama_cpp_python-$llama_version-*.whl"

found() { compgen -G "$dir/$pattern" | head -1; }
if whl=$(found) && [ -n "$whl" ]; then
  echo "$whl"
  exit 0
fi

# One build at a time per cache (setup.sh and images.sh may both ask): wait for the other.
mkdir -p "$cache/wheels"
exec 9>"$cache/wheels/.lock"
if ! flock -n 9; then
  say "another llama-cpp-python wheel build is running; waiting for it"
  flock 9
fi
if whl=$(found) && [ -n "$whl" ]; then
  echo "$whl"
  exit 0
fi

# A wheel compiled in the image (scripts/images.sh) from the same version and flags, if it runs here.
for flags in "$cache"/wheels/llama-cpp-python-"$llama_version"-*/flags.txt; do
  if ! [ -f "$flags" ] || [ "$(sed -n 2p "$flags")" != "$llama_cpu_args" ]; then continue; fi
  whl=$(compgen -G "$(dirname "$flags")/llama_cpp_python-$llama_version-cp311-*.whl" | head -1) || continue
  if [ -n "$whl" ] && [ -z "$(missing "$whl")" ]; then
    say "reused the wheel compiled for the images ($(sed -n 1p "$flags"); same flags)"
    echo "$whl"
    exit 0
  fi
done

sdist=$(PYTHON=$python bash scripts/llama-server.sh --sdist | tail -1)
tmp=$(mktemp -d "$cache/wheels/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log=build/llama-wheel.log
start=$SECONDS
say "compiling llama-cpp-python $llama_version once ($llama_cpu_args): 4-6 min on 2 cores; cached in $dir (log: $log)"
# -v: the compile's own progress lines ([12/80] ...) go to the log, which with_progress shows.
if ! CMAKE_ARGS=$llama_cpu_args CMAKE_BUILD_PARALLEL_LEVEL=${MINERFLEET_JOBS:-$(nproc)} \
  with_progress "llama-cpp-python" "$log" "$python" -m pip --disable-pip-version-check wheel -v \
  --no-cache-dir --no-deps --wheel-dir "$tmp" "$sdist"; then
  fail "the wheel build failed (whole log: $log); fix: install a compiler (apt-get install -y g++ make cmake), then rerun"
fi
compgen -G "$tmp/$pattern" >/dev/null || fail "pip left no $pattern in $tmp (log: $log)"
printf '%s\n' "llama-cpp-python $llama_version (host build)" "$llama_cpu_args" >"$tmp/flags.txt"
chmod 755 "$tmp"
rm -rf "$dir" && mv "$tmp" "$dir"
trap - EXIT
whl=$(found)
say "built in $((SECONDS - start)) s: $whl ($(du -h "$whl" | cut -f1))"
echo "$whl"
