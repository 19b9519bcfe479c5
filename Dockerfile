# minerfleet images. Build them with `make images` (scripts/images.sh), or `docker compose build`
# (without a registry: MINERFLEET_BASE_IMAGE=$(scripts/images.sh --base) docker compose build).
#
#   target        image                      what
#   orchestrator  minerfleet/orchestrator    probe, policy, docker SDK, status API (no llama.cpp, no torch)
#   miner         minerfleet/miner:cpu       miner with llama.cpp (CPU), openai, echo backends; also runs
#                                            the shared model server (python -m llama_cpp.server)
#   miner-hf      minerfleet/miner:hf        the miner image plus transformers and CPU torch
#   miner-cuda    minerfleet/miner:cuda      llama.cpp built with CUDA on nvidia/cuda images. Not built by
#                                            `make images` on CPU hosts: MINERFLEET_IMAGES="... cuda".
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
#   CUDA_DEVEL_IMAGE, CUDA_RUNTIME_IMAGE, CUDA_ARCHITECTURES   the CUDA image
#
# Prepared outside the build by scripts/images.sh, both optional (a clean clone builds without them):
#   certs/*.crt         extra CA certificates, trusted from the first download on (TLS-intercepting proxies)
#   container/wheels/      llama_cpp_python-<version>-*.whl compiled once and cached across engine resets
#                       (else the llama-wheel stage compiles it); torch-<version>+cpu-*.whl (else it is
#                       downloaded from TORCH_INDEX_URL)

ARG BASE_IMAGE=debian:bookworm-slim
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu22.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu22.04

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

# --- miner-deps: deps + llama-cpp-python[server], and the miner images' run-time settings ----------
FROM deps AS miner-deps
ARG LLAMA_CPP_VERSION=0.3.16
COPY --from=llama-wheel /wheels/ /tmp/wheels/
# --only-binary: never compile here (no build tools in runtime images); the wheel comes from llama-wheel.
RUN pip install --find-links /tmp/wheels --only-binary llama-cpp-python \
        "llama-cpp-python[server]==${LLAMA_CPP_VERSION}" \
 && rm -rf /tmp/wheels
USER 1000:1000
EXPOSE 8091
# The axon port accepts connections (llama_cpp.server: /v1/models answers). No model call.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-S", "/app/container/healthcheck.py", "miner"]
CMD ["python", "-m", "services.miner"]

# --- miner (CPU): llama.cpp, openai, echo; also the shared model server ------------------------------
FROM miner-deps AS miner
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

# --- CUDA (last: other base images; built only on request, on a host with the NVIDIA runtime) -------
# cuda-build compiles llama-cpp-python against CUDA in the devel image (nvcc; no GPU needed to build);
# miner-cuda copies the finished venv into the much smaller runtime image. Ubuntu 22.04's python3.11
# (universe) is the interpreter in both, so the venv moves as it is. Run with GPUs
# (`deploy.resources.reservations.devices` in compose, `--gpus` with docker run) and set
# MINER_LLAMACPP__N_GPU_LAYERS. Builds with BuildKit skip the CPU stages above; the legacy builder
# builds them first.
FROM ${CUDA_DEVEL_IMAGE} AS cuda-build
ARG LLAMA_CPP_VERSION=0.3.16
ARG CUDA_ARCHITECTURES="70;75;80;86;89;90"
ENV LANG=C.UTF-8 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
COPY certs/ /tmp/certs/
COPY container/setup-base.sh /usr/local/lib/minerfleet/setup-base.sh
RUN sh /usr/local/lib/minerfleet/setup-base.sh gcc g++ make cmake ninja-build
COPY pyproject.toml container/requirements.py /tmp/minerfleet/
RUN python /tmp/minerfleet/requirements.py /tmp/minerfleet/pyproject.toml --exclude llama-cpp-python \
        >/opt/venv/requirements-core.txt \
 && pip install -r /opt/venv/requirements-core.txt
# GGML_NATIVE=OFF: the build host's CPU is not the GPU host's. libcuda comes from the driver at run
# time; the link uses the toolkit's stub.
RUN CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip install "llama-cpp-python[server]==${LLAMA_CPP_VERSION}"

FROM ${CUDA_RUNTIME_IMAGE} AS miner-cuda
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/miner \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY certs/ /tmp/certs/
COPY container/setup-base.sh /usr/local/lib/minerfleet/setup-base.sh
RUN sh /usr/local/lib/minerfleet/setup-base.sh
COPY --from=cuda-build /opt/venv/ /opt/venv/
WORKDIR /app
COPY --from=code /app/ /app/
LABEL org.opencontainers.image.title="minerfleet miner (CUDA llama.cpp)" minerfleet.image=cuda
USER 1000:1000
EXPOSE 8091
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-S", "/app/container/healthcheck.py", "miner"]
CMD ["python", "-m", "services.miner"]
