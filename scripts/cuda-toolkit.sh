#!/usr/bin/env bash
# A CUDA 13 toolkit (nvcc, headers, cudart, cuBLAS) made from NVIDIA's PyPI wheels, for building
# llama.cpp with -DGGML_CUDA=on where no CUDA base image or .run installer can be fetched (only
# PyPI and Debian are reachable). No GPU and no driver are needed to build with it.
#
#   scripts/cuda-toolkit.sh [DIR]    install into DIR (default $MINERFLEET_CUDA_TOOLKIT, else
#                                    $MINERFLEET_CACHE/cuda-toolkit/<pins-hash>) and print the toolkit
#                                    root (DIR/nvidia/cu13) as the last stdout line
#
# The wheels lay the toolkit out under site-packages/nvidia/cu13/ but not quite as CMake's
# FindCUDAToolkit and nvcc expect a toolkit to look; the links below make up the difference:
#   targets/x86_64-linux/{include,lib} -> ../../{include,lib}   nvcc looks for headers/libs there
#   lib64 -> lib                                                 FindCUDAToolkit's default search path
#   libcudart.so, libcublas.so, libcublasLt.so -> *.so.13        the linker wants unversioned names
# There is no libcuda.so stub in any wheel: build with -DGGML_CUDA_NO_VMM=ON (llama.cpp then does not
# link the driver library; the driver's own libcuda.so.1 is loaded through cudart at run time).
#
# Idempotent: a stamp file records the pins; a second run only prints the path. Environment:
# MINERFLEET_CUDA_TOOLKIT (the install directory), MINERFLEET_CACHE (~/.cache/minerfleet), PYTHON (python3: the interpreter whose pip installs the wheels).
# Size (measured): 530 MB of wheels (cuBLAS 423 MB, nvvm 62 MB, nvcc 37 MB), 840 MB installed; ~10-60 s
# with a fast link to PyPI.
# CUDA 13 has no sm_50..72 (Maxwell, Pascal, Volta) and needs an NVIDIA driver >= 580 at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "cuda-toolkit: $*" >&2; }
fail() { say "error: $*"; exit 1; }

# One place for the toolkit's versions: nvcc and its parts from one CUDA release, cuBLAS from the
# 13.1 line that ships with it (CUDA 13.0 update 2).
pins=(
  'nvidia-cuda-nvcc==13.0.*' 'nvidia-cuda-crt==13.0.*' 'nvidia-nvvm==13.0.*'
  'nvidia-cuda-runtime==13.0.*' 'nvidia-cuda-cccl==13.0.*' 'nvidia-cublas==13.1.*'
)
key=$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-12)
dir=${1:-${MINERFLEET_CUDA_TOOLKIT:-${MINERFLEET_CACHE:-$HOME/.cache/minerfleet}/cuda-toolkit/$key}}
root=$dir/nvidia/cu13
stamp=$dir/.minerfleet-installed

if [ "$(cat "$stamp" 2>/dev/null)" != "$key" ]; then
  python=${PYTHON:-python3}
  "$python" -m pip --version >/dev/null 2>&1 ||
    fail "$python has no pip; fix: apt-get install -y python3-pip (or set PYTHON=/path/to/python with pip)"
  say "installing the CUDA 13 toolkit wheels into $dir (530 MB to download, 840 MB on disk; ~10-60 s)"
  start=$SECONDS
  # Never empty a directory this script did not fill (MINERFLEET_CUDA_TOOLKIT may name any path).
  if [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    [ -f "$stamp" ] || fail "$dir is not empty and not a toolkit this script installed; fix: name an empty or new directory"
    rm -rf "$dir"
  fi
  mkdir -p "$dir"
  # --target: a plain directory, no venv needed; --no-deps: the pins are the whole toolkit.
  "$python" -m pip install --disable-pip-version-check --no-deps --target "$dir" "${pins[@]}" >&2 ||
    fail "pip install of the CUDA wheels failed (see above); fix: check that PyPI is reachable, then rerun $0"
  [ -x "$root/bin/nvcc" ] || fail "no $root/bin/nvcc after the install: the wheels' layout changed; update $0"

  mkdir -p "$root/targets/x86_64-linux"
  ln -sfn ../../include "$root/targets/x86_64-linux/include"
  ln -sfn ../../lib "$root/targets/x86_64-linux/lib"
  ln -sfn lib "$root/lib64"
  for lib in libcudart libcublas libcublasLt; do
    so=("$root/lib/$lib".so.[0-9]*)
    [ -e "${so[0]}" ] || fail "no $lib.so.* in $root/lib: the wheels' layout changed; update $0"
    ln -sfn "$(basename "${so[0]}")" "$root/lib/$lib.so"
  done
  echo "$key" >"$stamp"
  say "installed in $((SECONDS - start)) s ($(du -sh "$dir" | cut -f1)); nvcc: $("$root/bin/nvcc" --version | tail -2 | head -1)"
fi
echo "$root"
