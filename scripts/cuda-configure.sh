#!/usr/bin/env bash
# CI's check of the CUDA build, on a machine without a GPU: the CMake configure step (not the 1-2 h
# compile) of both CUDA builds the miner-cuda image makes, with the CUDA 13 toolkit from PyPI:
#   1. the library: llama-cpp-python's own CMake project (the sdist's root, shared libs), as
#      `pip install llama-cpp-python` with CMAKE_ARGS="-DGGML_CUDA=on ..." runs it;
#   2. the server: llama.cpp's `llama-server` target as scripts/llama-server.sh --cuda builds it.
# Exits 0 when both configure with CUDA found and nvcc working (CMake compiles a small CUDA program to
# check nvcc), and nvcc compiles one real llama.cpp CUDA file (acc.cu, for every architecture: ~5 s),
# which includes the toolkit's cuda_runtime, cuda_fp16 and cuBLAS headers and the CCCL ones.
#
# Time (measured here, 2 cores): 23 s from an empty toolkit cache (the wheels: 8 s for 530 MB, on a
# fast link; the sdist, when not cached yet: 10-40 s more), 3-5 s per configure, 5 s for acc.cu.
# Cached under ${MINERFLEET_CACHE:-~/.cache/minerfleet}: a second run takes ~6 s.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "cuda-configure: $*" >&2; }
fail() { say "error: $*"; exit 1; }
start=$SECONDS

# shellcheck source=scripts/llama-flags.sh
. scripts/llama-flags.sh
toolkit=$(bash scripts/cuda-toolkit.sh | tail -1)
sdist=$(bash scripts/llama-server.sh --sdist | tail -1)
mapfile -t cuda_args < <(llama_cuda_args "$toolkit")

# --- 1. the library (what the miner-cuda image's llama-cpp-python wheel is built from) --------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -xzf "$sdist" -C "$tmp"
say "configuring llama-cpp-python $llama_version (library) with CUDA"
step=$SECONDS
# SKBUILD_PLATLIB_DIR is what scikit-build-core passes; only install() rules use it.
# shellcheck disable=SC2086  # llama_cpu_args is a list of words
if ! cmake -S "$tmp/llama_cpp_python-$llama_version" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release \
  $llama_cpu_args "${cuda_args[@]}" "-DSKBUILD_PLATLIB_DIR=$tmp/platlib" >"$tmp/configure.log" 2>&1; then
  tail -n 25 "$tmp/configure.log" >&2
  fail "the library's CUDA configure failed (above: the last lines of its log)"
fi
grep -q '^GGML_CUDA:BOOL=ON' "$tmp/build/CMakeCache.txt" || fail "configured, but without GGML_CUDA"
nvcc=$(sed -n 's/^CMAKE_CUDA_COMPILER_VERSION:.*=//p; s/^set(CMAKE_CUDA_COMPILER_VERSION "\(.*\)")/\1/p' \
  "$tmp"/build/CMakeFiles/*/CMakeCUDACompiler.cmake 2>/dev/null | head -1)
say "library configured in $((SECONDS - step)) s (nvcc ${nvcc:-?})"

# --- 2. the server ---------------------------------------------------------------------------------
step=$SECONDS
build=$(bash scripts/llama-server.sh --cuda --configure-only | tail -1)
grep -q '^GGML_CUDA:BOOL=ON' "$build/CMakeCache.txt" || fail "llama-server configured, but without GGML_CUDA"
say "llama-server configured in $((SECONDS - step)) s ($build)"

# --- 3. one real CUDA object -----------------------------------------------------------------------
step=$SECONDS
if ! make -s -C "$build/ggml/src/ggml-cuda" acc.cu.o >"$build/acc.log" 2>&1; then
  tail -n 25 "$build/acc.log" >&2
  fail "nvcc could not compile ggml-cuda/acc.cu with this toolkit (above: the last lines of its log)"
fi
say "nvcc compiled ggml-cuda/acc.cu in $((SECONDS - step)) s"

say "ok: the CUDA builds configure (library and server) and nvcc compiles, in $((SECONDS - start)) s in all"
