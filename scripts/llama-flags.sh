# shellcheck shell=sh
# Sourced (not run) by scripts/images.sh and scripts/llama-server.sh: the one place that says which
# llama.cpp is built and for which CPUs, so the wheel in the images and the llama-server binaries
# are compiled from the same source with the same flags.
#
# Sets:
#   llama_version   the llama-cpp-python version pinned in pyproject.toml (its sdist vendors llama.cpp)
#   llama_cpu_args  CMake flags for the CPU code (MINERFLEET_LLAMA_CMAKE_ARGS replaces them whole)
#
# MINERFLEET_LLAMA_CPU picks the CPUs the result runs on:
#   portable  x86-64-v3: AVX2/FMA/F16C/BMI2, any x86-64 CPU since ~2015 (Intel Haswell, AMD Zen)
#   avx512    adds AVX512 (+VBMI/VNNI/BF16) and AVX-VNNI: Intel Ice Lake/Sapphire Rapids, AMD Zen 4+
#   native    whatever the build host has: fastest, but only runs on CPUs like this one
# Expects the caller's working directory to be the repository root.

llama_version=$(sed -n 's/.*"llama-cpp-python==\([0-9][0-9.]*\)".*/\1/p' pyproject.toml | head -1)
if [ -z "$llama_version" ]; then
  echo "error: no llama-cpp-python==X pin found in pyproject.toml" >&2
  exit 1
fi

_llama_portable='-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON'
case ${MINERFLEET_LLAMA_CPU:-portable} in
  portable) llama_cpu_args=$_llama_portable ;;
  avx512) llama_cpu_args="$_llama_portable -DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON" ;;
  native) llama_cpu_args=-DGGML_NATIVE=ON ;;
  *)
    echo "error: MINERFLEET_LLAMA_CPU=${MINERFLEET_LLAMA_CPU}: use portable, avx512 or native" >&2
    exit 1
    ;;
esac
llama_cpu_args=${MINERFLEET_LLAMA_CMAKE_ARGS:-$llama_cpu_args}
unset _llama_portable

# llama_cuda_args TOOLKIT: the CMake flags for a CUDA build with the toolkit at TOOLKIT (the root that
# scripts/cuda-toolkit.sh prints), one flag a line.
#   GGML_CUDA_NO_VMM   the PyPI toolkit has no libcuda.so stub to link against (see cuda-toolkit.sh)
#   CUDA_ARCHITECTURES (env) what to compile for; default: Turing (75) and Ampere (80) as PTX that the
#                      driver compiles on first use, and ready code for RTX 30xx (86), RTX 40xx/L4/L40
#                      (89) and H100/H200 (90). CUDA 13 has nothing below 75. "native": the build
#                      machine's own GPU only (fastest build; needs the GPU present).
llama_cuda_args() {
  printf '%s\n' -DGGML_CUDA=ON -DGGML_CUDA_NO_VMM=ON \
    "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-75-virtual;80-virtual;86-real;89-real;90-real}" \
    "-DCUDAToolkit_ROOT=$1" "-DCMAKE_CUDA_COMPILER=$1/bin/nvcc"
}
