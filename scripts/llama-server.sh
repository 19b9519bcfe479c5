#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` (the fleet's model server: continuous batching over parallel
# slots, OpenAI API, /health, /metrics) from the llama.cpp source vendored in the llama-cpp-python
# sdist pinned in pyproject.toml: the same source and CPU flags (scripts/llama-flags.sh) as the
# llama-cpp-python wheel, and nothing from outside PyPI and Debian.
#
#   scripts/llama-server.sh                   build once (CPU), print the binary's path (last stdout line)
#   scripts/llama-server.sh --cuda            the same with CUDA (toolkit from PyPI: scripts/cuda-toolkit.sh)
#   scripts/llama-server.sh --configure-only  only the CMake configure step (with --cuda: CI's check that
#                                             the CUDA build configures); prints the build directory
#   scripts/llama-server.sh --sdist           only fetch the sdist; print its path
#
# The binary is cached: ${MINERFLEET_CACHE:-~/.cache/minerfleet}/llama-server/<version>-<cpu|cuda>-<hash>/
# llama-server, <hash> covering the flags and the compiler; a second run prints the path at once. It
# is one file that can be copied: libllama/libggml are linked in statically (BUILD_SHARED_LIBS=OFF).
# At run time it needs only libstdc++6 (gcc >= 12: GLIBCXX_3.4.30), libgcc-s1, libgomp1 (OpenMP
# threads) and libc (glibc >= 2.34), all in Debian bookworm's base. No libcurl (LLAMA_CURL=OFF: we
# never download models by URL) and no libssl (LLAMA_SERVER_SSL=OFF: it listens on 127.0.0.1 or a
# container network; put TLS in front if needed), so building needs cmake, make and g++, not
# libssl-dev. CUDA builds also need the toolkit's libcudart.so.13 and libcublas*.so.13 (found through
# the build's RUNPATH, ld.so.conf or LD_LIBRARY_PATH) and the driver's libcuda.so.1.
#
# Time (measured on 2 cores, see the say lines below): 10-40 s for the sdist (50 MB) the first time,
# 3-6 min for the CPU compile (5.5 min with other builds running beside it, 3 min of CPU time);
# a CUDA compile is 1-2 h on 2 cores for the default architectures.
#
# Environment:
#   MINERFLEET_CACHE             cache root (default ~/.cache/minerfleet)
#   MINERFLEET_LLAMA_CPU         portable (default) | avx512 | native  (scripts/llama-flags.sh)
#   MINERFLEET_LLAMA_CMAKE_ARGS  replaces the CPU flags whole
#   MINERFLEET_LLAMA_SERVER      use this binary as it is: printed back, nothing is built (CPU only)
#   CUDA_ARCHITECTURES           --cuda only (scripts/llama-flags.sh); "native" on a machine with the GPU
#   MINERFLEET_JOBS              parallel compile jobs (default: nproc)
#   PYTHON                       the interpreter whose pip fetches the sdist (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "llama-server: $*" >&2; }
fail() { say "error: $*"; exit 1; }

gpu=cpu
mode=build
for arg in "$@"; do
  case $arg in
    --cuda) gpu=cuda ;;
    --configure-only) mode=configure ;;
    --sdist) mode=sdist ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument '$arg' (see $0 --help)" ;;
  esac
done

if [ "$gpu" = cpu ] && [ "$mode" = build ] && [ -n "${MINERFLEET_LLAMA_SERVER:-}" ]; then
  [ -x "$MINERFLEET_LLAMA_SERVER" ] ||
    fail "MINERFLEET_LLAMA_SERVER=$MINERFLEET_LLAMA_SERVER is not an executable file; fix: point it at a llama-server binary or unset it"
  echo "$MINERFLEET_LLAMA_SERVER"
  exit 0
fi

# shellcheck source=scripts/llama-flags.sh
. scripts/llama-flags.sh
cache=${MINERFLEET_CACHE:-$HOME/.cache/minerfleet}
jobs=${MINERFLEET_JOBS:-$(nproc)}
mkdir -p "$cache/llama-server" "$cache/sdist"

# --- the sdist: llama-cpp-python's source, which vendors llama.cpp ------------------------------------
sdist=$cache/sdist/llama_cpp_python-$llama_version.tar.gz
if [ ! -s "$sdist" ]; then
  python=${PYTHON:-python3}
  say "fetching llama.cpp's source, the llama-cpp-python $llama_version sdist (50 MB; ~10-40 s; kept in $cache/sdist)"
  tmp=$(mktemp -d "$cache/sdist/.download.XXXXXX")
  # --no-binary for this package only: the sdist, not a wheel; its build tools may come as wheels.
  "$python" -m pip download -q --disable-pip-version-check --no-deps \
    --no-binary llama-cpp-python -d "$tmp" "llama-cpp-python==$llama_version" >&2 ||
    { rm -rf "$tmp"; fail "pip download llama-cpp-python==$llama_version failed (see above); fix: check that PyPI is reachable and that $python has pip"; }
  mv "$tmp/llama_cpp_python-$llama_version.tar.gz" "$sdist" && rm -rf "$tmp"
fi
if [ "$mode" = sdist ]; then
  echo "$sdist"
  exit 0
fi

# --- build tools -----------------------------------------------------------------------------------
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v make >/dev/null || need+=(make)
command -v g++ >/dev/null || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${need[*]} with apt-get (~1 min)"
    export DEBIAN_FRONTEND=noninteractive
    # The current package lists first (fast); refresh them only if that fails.
    apt-get install -y -q --no-install-recommends "${need[@]}" >/tmp/llama-server-apt.log 2>&1 ||
      { apt-get update -q >>/tmp/llama-server-apt.log 2>&1 &&
        apt-get install -y -q --no-install-recommends "${need[@]}" >>/tmp/llama-server-apt.log 2>&1; } ||
      fail "apt-get install ${need[*]} failed (see /tmp/llama-server-apt.log); fix: check the apt mirror, then rerun $0"
  else
    fail "${need[*]} missing; fix: sudo apt-get install -y cmake make g++ (or set MINERFLEET_LLAMA_SERVER=/path/to/llama-server)"
  fi
fi

# --- what to build, and where it is cached ---------------------------------------------------------
# BUILD_SHARED_LIBS=OFF: one self-contained file. Only the server among the tools, no tests/examples.
# LLAMA_BUILD_COMMIT: `llama-server --version` says which llama-cpp-python the source came from.
# shellcheck disable=SC2206  # llama_cpu_args is a list of words
args=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF $llama_cpu_args
  -DLLAMA_CURL=OFF -DLLAMA_SERVER_SSL=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_NUMBER=0 "-DLLAMA_BUILD_COMMIT=llama-cpp-python-$llama_version")
if [ "$gpu" = cuda ]; then
  toolkit=$(bash scripts/cuda-toolkit.sh | tail -1)
  mapfile -t -O ${#args[@]} args < <(llama_cuda_args "$toolkit")
fi
key=$({ printf '%s\n' "$llama_version" "${args[@]}"; g++ --version | head -1; } | sha256sum | cut -c1-12)
name=$llama_version-$gpu-$key
out=$cache/llama-server/$name/llama-server
build=$cache/llama-server/build-$name

if [ "$mode" = build ] && [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

# One build at a time per cache (make test and make images may both ask for it): wait for the other.
exec 9>"$cache/llama-server/.lock"
if ! flock -n 9; then
  say "another llama-server build is running; waiting for it"
  flock 9
fi
if [ "$mode" = build ] && [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

# An interrupted build resumes in $build (same flags, same directory); a finished one removes it.
src=$build/llama.cpp
if [ ! -f "$src/CMakeLists.txt" ]; then
  mkdir -p "$src"
  tar -xzf "$sdist" -C "$src" --strip-components=3 "llama_cpp_python-$llama_version/vendor/llama.cpp"
fi
log=$build/build.log
start=$SECONDS
say "configuring ($gpu; ${args[*]})"
if ! cmake -S "$src" -B "$build/cmake" "${args[@]}" >"$log" 2>&1; then
  tail -n 25 "$log" >&2
  fail "cmake configure failed (whole log: $log)"
fi
say "configured in $((SECONDS - start)) s"
if [ "$mode" = configure ]; then
  echo "$build/cmake"
  exit 0
fi

if [ "$gpu" = cuda ]; then
  say "compiling llama-server with CUDA, $jobs jobs: 1-2 h on 2 cores for 5 architectures, ~10 min on 16 cores for one"
else
  say "compiling llama-server, $jobs jobs: 3-6 min on 2 cores (log: $log)"
fi
# Progress: one line per 10% step of the build, with the time so far.
step=-10
if ! cmake --build "$build/cmake" --target llama-server -j "$jobs" 2>&1 | tee -a "$log" |
  while IFS= read -r line; do
    if [[ $line =~ ^\[\ *([0-9]+)%\] ]] && ((BASH_REMATCH[1] >= step + 10)); then
      step=$((BASH_REMATCH[1] - BASH_REMATCH[1] % 10))
      say "$(printf '%3d%%' "${BASH_REMATCH[1]}") after $((SECONDS - start)) s"
    fi
  done; then
  tail -n 25 "$log" >&2
  fail "compile failed (whole log: $log)"
fi
bin=$build/cmake/bin/llama-server
"$bin" --version >/dev/null 2>&1 || fail "the new $bin does not run: $("$bin" --version 2>&1 | tail -1)"

mkdir -p "$(dirname "$out")"
cp "$bin" "$out.tmp"
strip "$out.tmp" 2>/dev/null || true  # symbols only; a few MB less to copy into images
mv "$out.tmp" "$out"
printf '%s\n' "llama-cpp-python $llama_version ($gpu)" "${args[@]}" >"$(dirname "$out")/flags.txt"
rm -rf "$build"
say "built in $((SECONDS - start)) s: $out ($(du -h "$out" | cut -f1))"
echo "$out"
