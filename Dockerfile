# minerfleet images. Build them with `make images` (scripts/images.sh), or `docker compose build`
# (without a registry: MINERFLEET_BASE_IMAGE=$(scripts/images.sh --base) docker compose build).
#
#   target        image                      what
#   orchestrator  minerfleet/orchestrator    probe, policy, docker SDK, status API (no llama.cpp, no torch)
#   miner         minerfleet/miner:cpu       miner with llama.cpp (CPU), openai, echo backends; also runs
#                                            the fleet's model server: llama.cpp's own llama-server
#                                            (/usr/local/bin/llama-server; python -m llama_cpp.server too)
#   miner-hf      minerfleet/miner:hf        the miner image plus transformers and CPU torch
#   prometheus    minerfleet/prometheus      Debian's Prometheus, for the opt-in `monitoring` compose profile
#   miner-cuda    minerfleet/miner:cuda      llama.cpp (library and llama-server) built with CUDA 13, the
#                                            toolkit from PyPI wheels, on the same Debian base. Not built
#                                            by `make images` on CPU hosts: MINERFLEET_IMAGES="... cuda".
#
# At run time: user 1000:1000 (`miner`) unless compose says otherwise (`user:`); HOME=/home/miner is
# world-writable (sticky) so any uid works; code in /app and the venv in /opt/venv are root-owned;
# no compilers. Mounted hotkeys (0600) must belong to the uid the container runs as.
#
# Works with the legacy builder (DOCKER_BUILDKIT=0, docker-compose 1.29) and with BuildKit: no
# `# syntax=` line, no RUN --mount. The legacy builder builds every stage above the target, so the
# stages are ordered cheapest first and the CUDA ones (other base images) come last.
#
# Build arguments:
#   BASE_IMAGE        any Debian bookworm based image (default debian:bookworm-slim; offline hosts use
#                     minerfleet/base:bookworm from scripts/base-image.sh; python:3.11-slim-bookworm works)
#   LLAMA_CPP_VERSION llama-cpp-python version (0.3.16: newer ones segfault with Gemma 3 here)
#   LLAMA_CMAKE_ARGS  how llama.cpp is compiled for the CPU images: portable x86-64-v3 (AVX2/FMA/F16C)
#                     by default, so images run on any x86-64 CPU since ~2015, not just the build
#                     host's (scripts/images.sh: MINERFLEET_LLAMA_CPU=portable|avx512|native)
#   TORCH_VERSION, TORCH_INDEX_URL   the CPU torch of the hf image
#   CUDA_ARCHITECTURES  the GPUs the CUDA image's code is compiled for (scripts/llama-flags.sh)
#
# Prepared outside the build by scripts/images.sh, both optional (a clean clone builds without them):
#   certs/*.crt         extra CA certificates, trusted from the first download on (TLS-intercepting proxies)
#   container/wheels/   llama_cpp_python-<version>-*.whl compiled once and cached across engine resets:
#                       the host venv's wheel (scripts/llama-wheel.sh, same sdist and LLAMA_CMAKE_ARGS)
#                       when it runs on BASE_IMAGE, else the llama-wheel stage compiles it (the miner
#                       images import it at build time); torch-<version>+cpu-*.whl (else it is
#                       downloaded from TORCH_INDEX_URL)
#   container/bin/      llama-server: the host's build (scripts/llama-server.sh, same source and flags)
#                       when it runs on BASE_IMAGE; else the llama-server stage compiles it

ARG BASE_IMAGE=debian:bookworm-slim

# --- base: Python 3.11 in /opt/venv, extra CAs, the unprivileged user ------------------------------
FROM ${BASE_IMAGE} AS base
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/home/miner
COPY certs/ /tmp/certs/
COPY container/setup-base.sh /usr/local/lib/minerfleet/setup-base.sh
RUN sh /usr/local/lib/minerfleet/setup-base.sh
WORKDIR /app

# --- code: the project's code, byte-compiled (images copy it last, as one small layer) --------------
# /app is importable from /opt/venv (base: minerfleet-app.pth). PYTHONDONTWRITEBYTECODE at run time:
# the code is root-owned and read-only for the miner user; the .pyc files made here are used.
FROM base AS code
COPY services/ /app/services/
COPY orchestrator/ /app/orchestrator/
COPY container/healthcheck.py /app/container/healthcheck.py
RUN python -m compileall -q /app

# --- deps: the dependencies every image shares (pyproject.toml minus llama-cpp-python) -------------
# Only pyproject.toml is copied here: a code change never reinstalls dependencies.
FROM base AS deps
COPY pyproject.toml container/requirements.py /tmp/minerfleet/
RUN python /tmp/minerfleet/requirements.py /tmp/minerfleet/pyproject.toml --exclude llama-cpp-python \
        >/opt/venv/requirements-core.txt \
 && pip install -r /opt/venv/requirements-core.txt \
 && rm -rf /tmp/minerfleet

# --- orchestrator ----------------------------------------------------------------------------------
FROM deps AS orchestrator
COPY --from=code /app/ /app/
LABEL org.opencontainers.image.title="minerfleet orchestrator" minerfleet.image=orchestrator
USER 1000:1000
EXPOSE 9100
# The status API answers (MINERFLEET_STATUS_PORT: set it when status_api.port is not 9100).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-S", "/app/container/healthcheck.py", "orchestrator"]
CMD ["python", "-m", "orchestrator", "--help"]

# --- prometheus: Debian's Prometheus for the `monitoring` compose profile ---------------------------
# From the same base as the other images (offline hosts: the debootstrap base and Debian's mirror).
# The configuration and rules are mounted by compose (config/generated/prometheus.yml, config/prometheus/).
FROM base AS prometheus
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && prometheus --version
LABEL org.opencontainers.image.title="minerfleet prometheus" minerfleet.image=prometheus
USER 1000:1000
EXPOSE 9090
CMD ["prometheus", "--config.file=/etc/minerfleet/prometheus.yml", "--storage.tsdb.path=/tmp/prometheus"]

# --- llama-wheel: llama-cpp-python compiled once (build tools live only in this stage) -------------
FROM base AS llama-wheel
ARG LLAMA_CPP_VERSION=0.3.16
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
# .gitignore always exists, so this COPY works when no wheel was prepared.
COPY container/wheels/.gitignore container/wheels/llama_cpp_python-* /wheels/
RUN set -eu; \
    if ls /wheels/llama_cpp_python-${LLAMA_CPP_VERSION}-*.whl 2>/dev/null; then \
        echo "llama-wheel: using the prepared wheel"; \
    else \
        echo "llama-wheel: compiling llama-cpp-python ${LLAMA_CPP_VERSION} (${LLAMA_CMAKE_ARGS})"; \
        export DEBIAN_FRONTEND=noninteractive; \
        apt-get update -q; \
        apt-get install -y -q --no-install-recommends gcc g++ make cmake ninja-build; \
        CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
            pip wheel --no-deps --wheel-dir /wheels "llama-cpp-python==${LLAMA_CPP_VERSION}"; \
    fi; \
    rm -f /wheels/.gitignore

# --- llama-server: llama.cpp's server, one self-contained file, compiled once -----------------------
# scripts/llama-server.sh is the one recipe (source: the llama-cpp-python sdist; flags: LLAMA_CMAKE_ARGS,
# the wheel's). A binary prepared in container/bin/ is used as it is (3-6 min of compile saved).
FROM base AS llama-server
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
COPY container/bin/ /tmp/bin/
COPY pyproject.toml /tmp/minerfleet/
COPY scripts/llama-server.sh scripts/llama-flags.sh /tmp/minerfleet/scripts/
RUN set -eu; \
    mkdir -p /out; \
    if [ -x /tmp/bin/llama-server ]; then \
        echo "llama-server: using the prepared binary"; \
        cp /tmp/bin/llama-server /out/llama-server; \
    else \
        echo "llama-server: compiling (${LLAMA_CMAKE_ARGS})"; \
        export DEBIAN_FRONTEND=noninteractive; \
        apt-get update -q; \
        apt-get install -y -q --no-install-recommends gcc g++ make cmake; \
        bin=$(MINERFLEET_CACHE=/tmp/cache MINERFLEET_LLAMA_CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" \
              bash /tmp/minerfleet/scripts/llama-server.sh | tail -1); \
        cp "$bin" /out/llama-server; \
    fi; \
    /out/llama-server --version

# --- miner-deps: deps + llama-cpp-python[server], and the miner images' run-time settings ----------
FROM deps AS miner-deps
ARG LLAMA_CPP_VERSION=0.3.16
COPY --from=llama-wheel /wheels/ /tmp/wheels/
# --only-binary: never compile here (no build tools in runtime images); the wheel comes from llama-wheel.
# The import checks that a wheel prepared on the host runs with this image's Python and libraries.
RUN pip install --find-links /tmp/wheels --only-binary llama-cpp-python \
        "llama-cpp-python[server]==${LLAMA_CPP_VERSION}" \
 && rm -rf /tmp/wheels \
 && python -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__, llama_cpp.llama_print_system_info().decode())"
USER 1000:1000
EXPOSE 8091
# The axon port accepts connections (a model server: llama-server's /health, llama_cpp.server's
# /v1/models answers 200). No model call.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-S", "/app/container/healthcheck.py", "miner"]
CMD ["python", "-m", "services.miner"]

# --- miner (CPU): llama.cpp, openai, echo; also the shared model server ------------------------------
# llama-server here, not in miner-deps: a new binary must not rebuild the hf image's torch layer.
FROM miner-deps AS miner
COPY --from=llama-server /out/llama-server /usr/local/bin/llama-server
COPY --from=code /app/ /app/
LABEL org.opencontainers.image.title="minerfleet miner (CPU: llama.cpp, openai, echo)" minerfleet.image=cpu

# --- hf-build: transformers + CPU torch installed into /opt/hf, next to the miner's venv -----------
# A separate prefix, so the hf image is the miner image's layers plus one (no copy of the venv, no
# torch wheel left in a layer), and no code change reinstalls it. The constraints keep every package
# the venv already has at its version: were transformers to need a newer one, pip fails here instead
# of the venv's older copy shadowing it at run time.
FROM miner-deps AS hf-build
USER root
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY pyproject.toml container/requirements.py /tmp/minerfleet/
COPY container/wheels/.gitignore container/wheels/torch-* /tmp/wheels/
RUN set -eu; \
    python /tmp/minerfleet/requirements.py /tmp/minerfleet/pyproject.toml --only-extras --extra hf \
        >/tmp/minerfleet/requirements-hf.txt; \
    pip freeze --all >/tmp/minerfleet/constraints.txt; \
    if ls /tmp/wheels/torch-${TORCH_VERSION}+cpu-*.whl 2>/dev/null; then \
        torch_source="--find-links /tmp/wheels"; \
    else \
        torch_source="--extra-index-url ${TORCH_INDEX_URL}"; \
    fi; \
    pip install --prefix /opt/hf $torch_source -c /tmp/minerfleet/constraints.txt \
        "torch==${TORCH_VERSION}" -r /tmp/minerfleet/requirements-hf.txt; \
    mv /opt/hf/lib/python3.11/site-packages /opt/hf/site-packages; \
    rm -rf /opt/hf/lib /opt/hf/bin /opt/hf/share /opt/hf/include /tmp/wheels /tmp/minerfleet; \
    echo /opt/hf/site-packages >/opt/hf/minerfleet-hf.pth; \
    python -c "import sys; sys.path.append('/opt/hf/site-packages'); import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

# --- miner-hf: the miner image plus transformers and CPU torch -------------------------------------
FROM miner-deps AS miner-hf
COPY --from=hf-build /opt/hf/ /opt/hf/
COPY --from=hf-build /opt/hf/minerfleet-hf.pth /opt/venv/lib/python3.11/site-packages/minerfleet-hf.pth
COPY --from=code /app/ /app/
LABEL org.opencontainers.image.title="minerfleet miner (transformers + CPU torch)" minerfleet.image=hf

# --- CUDA (last: the legacy builder builds every stage above the target; these compile for hours) --
# cuda-build compiles llama.cpp with CUDA twice, as the CPU images have it: the llama-cpp-python wheel
# (the in-process `llamacpp` backend) and llama-server (the fleet's model server). The toolkit is
# NVIDIA's PyPI wheels (scripts/cuda-toolkit.sh; no CUDA base image needed, no GPU needed to build);
# on 2 cores the two compiles take 2-4 h for the default CUDA_ARCHITECTURES, on 16 cores ~30 min.
# miner-cuda is the CPU images' deps plus that wheel, that binary and the CUDA run-time libraries
# (cudart, cuBLAS: ~700 MB); the driver's libcuda.so.1 comes from the host at run time (NVIDIA
# container toolkit: `--gpus` with docker run, `deploy.resources.reservations.devices` in compose).
# CUDA 13 needs an NVIDIA driver >= 580. Set MINER_LLAMACPP__N_GPU_LAYERS / the model server's
# n_gpu_layers to use the GPU.
FROM base AS cuda-build
ARG LLAMA_CPP_VERSION=0.3.16
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
ARG CUDA_ARCHITECTURES="75-virtual;80-virtual;86-real;89-real;90-real"
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update -q \
 && apt-get install -y -q --no-install-recommends gcc g++ make cmake \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml /tmp/minerfleet/
COPY scripts/cuda-toolkit.sh scripts/llama-server.sh scripts/llama-flags.sh /tmp/minerfleet/scripts/
# The toolkit in /opt/cuda: the scripts below find it there (MINERFLEET_CUDA_TOOLKIT).
ENV MINERFLEET_CUDA_TOOLKIT=/opt/cuda \
    MINERFLEET_CACHE=/tmp/cache
RUN bash /tmp/minerfleet/scripts/cuda-toolkit.sh
# Each compile in its own layer: a failure in the second keeps the first in the build cache.
# (ARGs are in RUN's environment: llama-flags.sh reads CUDA_ARCHITECTURES from there.)
RUN set -eu; \
    bin=$(MINERFLEET_LLAMA_CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" bash /tmp/minerfleet/scripts/llama-server.sh --cuda | tail -1); \
    mkdir -p /out && cp "$bin" /out/llama-server && rm -rf /tmp/cache
RUN set -eu; \
    cd /tmp/minerfleet; \
    MINERFLEET_LLAMA_CMAKE_ARGS="${LLAMA_CMAKE_ARGS}"; \
    . scripts/llama-flags.sh; \
    CMAKE_ARGS="$llama_cpu_args $(llama_cuda_args /opt/cuda/nvidia/cu13 | tr '\n' ' ')" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        pip wheel --no-deps --wheel-dir /wheels "llama-cpp-python==${LLAMA_CPP_VERSION}"

FROM deps AS miner-cuda
ARG LLAMA_CPP_VERSION=0.3.16
COPY --from=cuda-build /wheels/ /tmp/wheels/
RUN pip install --find-links /tmp/wheels --only-binary llama-cpp-python \
        "llama-cpp-python[server]==${LLAMA_CPP_VERSION}" \
 && rm -rf /tmp/wheels
# The CUDA run-time libraries the toolkit wheels brought, found by every binary through ld.so.conf.
COPY --from=cuda-build /opt/cuda/nvidia/cu13/lib/libcudart.so.13 /opt/cuda/nvidia/cu13/lib/libcublas.so.13 \
     /opt/cuda/nvidia/cu13/lib/libcublasLt.so.13 /usr/local/lib/cuda/
RUN echo /usr/local/lib/cuda >/etc/ld.so.conf.d/minerfleet-cuda.conf && ldconfig
COPY --from=cuda-build /out/llama-server /usr/local/bin/llama-server
COPY --from=code /app/ /app/
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
LABEL org.opencontainers.image.title="minerfleet miner (CUDA llama.cpp)" minerfleet.image=cuda
USER 1000:1000
EXPOSE 8091
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-S", "/app/container/healthcheck.py", "miner"]
CMD ["python", "-m", "services.miner"]
