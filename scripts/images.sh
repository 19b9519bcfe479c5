#!/usr/bin/env bash
# Build the minerfleet images (`make images`). Idempotent: does whatever is missing, in order:
#   1. a Docker engine (scripts/docker-engine.sh: installs and starts one when root and absent),
#   2. the base image: $MINERFLEET_BASE_IMAGE if set; else the local minerfleet/base:bookworm if it
#      exists; else debian:bookworm-slim if present or pullable; else scripts/base-image.sh builds
#      minerfleet/base:bookworm with debootstrap (no registry needed),
#   3. this host's extra CA certificates -> certs/ (git-ignored copies),
#   4. llama-cpp-python compiled once: the host's wheel (scripts/llama-wheel.sh, the one the .venv
#      installs: same sdist and flags) when its libraries resolve on the base image, else the
#      Dockerfile's llama-wheel stage builds it; the wheel is kept in $MINERFLEET_CACHE/wheels/
#      (survives `docker system prune` and engine resets) and put into container/wheels/ for every
#      later build, so the compile (~5 min on 2 cores) happens once for the venv and the images,
#   5. llama-server for the miner image compiled once: the host's build (scripts/llama-server.sh, same
#      source and flags as the wheel) -> container/bin/ when it runs on the base image; else the
#      Dockerfile's llama-server stage compiles it, and the result is kept in $MINERFLEET_CACHE too,
#   6. the CPU torch wheel (hf image) from $MINERFLEET_TORCH_WHEELS (default /opt/wheels) -> container/wheels/,
#   7. docker build of each image in $MINERFLEET_IMAGES (default "cpu hf orchestrator"; add "cuda" on a
#      GPU host, "prometheus" for the monitoring profile: `make up MONITORING=1` adds it), printing the
#      time each took.
#
#   scripts/images.sh            build what MINERFLEET_IMAGES names
#   scripts/images.sh --base     only make sure the base image exists and print its name (what
#                                MINERFLEET_BASE_IMAGE must be for `docker compose build`)
#
# Environment: MINERFLEET_IMAGES, MINERFLEET_BASE_IMAGE, MINERFLEET_CACHE (~/.cache/minerfleet),
# MINERFLEET_EXTRA_CA_DIR (/usr/local/share/ca-certificates; empty: none), MINERFLEET_TORCH_WHEELS,
# MINERFLEET_LLAMA_CPU (portable, avx512 or native; scripts/llama-flags.sh), MINERFLEET_LLAMA_CMAKE_ARGS,
# TORCH_VERSION, TORCH_INDEX_URL, CUDA_ARCHITECTURES (passed as build args when set), MINERFLEET_VERBOSE=1 (stream the build output; it always goes to build/images/<target>.log),
# DOCKER_BUILDKIT (default: BuildKit when `docker buildx` works, else the legacy builder).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "images: $*" >&2; exit 1; }
# shellcheck source=scripts/progress.sh
. scripts/progress.sh
say() { echo "images: $*" >&2; }

images=${MINERFLEET_IMAGES:-cpu hf orchestrator}
cache=${MINERFLEET_CACHE:-$HOME/.cache/minerfleet}
local_base=minerfleet/base:bookworm
public_base=debian:bookworm-slim   # the Dockerfile's default BASE_IMAGE
# The llama-cpp-python version (pyproject.toml's pin) and the CPUs the llama.cpp in the images runs on
# (MINERFLEET_LLAMA_CPU, MINERFLEET_LLAMA_CMAKE_ARGS): one definition for the wheel and llama-server.
# shellcheck source=scripts/llama-flags.sh
. scripts/llama-flags.sh
cmake_args=$llama_cpu_args
torch_version=${TORCH_VERSION:-2.13.0}
torch_dir=${MINERFLEET_TORCH_WHEELS:-/opt/wheels}
logs=build/images

for image in $images; do
  case $image in cpu | hf | orchestrator | cuda | prometheus) ;; *) fail "unknown image '$image' in MINERFLEET_IMAGES (cpu hf orchestrator cuda prometheus)" ;; esac
done

# --- 1. engine -------------------------------------------------------------------------------------
bash scripts/docker-engine.sh
if [ -z "${DOCKER_BUILDKIT+set}" ] && ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0   # no buildx plugin: the CLI's BuildKit path fails; the legacy builder works
fi

# --- 2. base image ---------------------------------------------------------------------------------
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
if [ -n "${MINERFLEET_BASE_IMAGE:-}" ]; then
  base=$MINERFLEET_BASE_IMAGE
  if [ "$base" = "$local_base" ]; then
    bash scripts/base-image.sh
  elif ! have_image "$base"; then
    docker pull -q "$base" >/dev/null || fail "MINERFLEET_BASE_IMAGE=$base: not present and cannot be pulled"
  fi
elif have_image "$local_base"; then
  base=$local_base
elif have_image "$public_base" || timeout 120 docker pull -q "$public_base" >/dev/null 2>&1; then
  base=$public_base
else
  say "$public_base cannot be pulled (no registry?): building $local_base with debootstrap"
  bash scripts/base-image.sh
  base=$local_base
fi
if [ "${1:-}" = --base ]; then
  echo "$base"
  exit 0
fi
say "base image $base, builder $([ "${DOCKER_BUILDKIT:-1}" = 0 ] && echo legacy || echo BuildKit)"

# --- 3. extra CA certificates ----------------------------------------------------------------------
cadir=${MINERFLEET_EXTRA_CA_DIR-/usr/local/share/ca-certificates}
if [ -n "$cadir" ] && [ -d "$cadir" ]; then
  while IFS= read -r -d '' crt; do
    cmp -s "$crt" "certs/$(basename "$crt")" || cp "$crt" certs/
  done < <(find "$cadir" -name '*.crt' -type f -print0)
fi

build_args=(--build-arg "BASE_IMAGE=$base" --build-arg "LLAMA_CPP_VERSION=$llama_version"
  --build-arg "LLAMA_CMAKE_ARGS=$cmake_args" --build-arg "TORCH_VERSION=$torch_version")
for var in TORCH_INDEX_URL CUDA_ARCHITECTURES; do
  [ -n "${!var:-}" ] && build_args+=(--build-arg "$var=${!var}")
done

mkdir -p "$logs"
# build TARGET TAG: docker build, output to build/images/TARGET.log (and the terminal if verbose).
build() {
  local target=$1 tag=$2 log=$logs/$1.log start=$SECONDS old
  old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
  say "building $tag (target $target${3:+, $3}) ..."
  if [ "${MINERFLEET_VERBOSE:-0}" = 1 ]; then
    docker build --target "$target" -t "$tag" "${build_args[@]}" . 2>&1 | tee "$log"
  else
    with_progress "$tag" "$log" docker build --target "$target" -t "$tag" "${build_args[@]}" .
  fi || fail "building $tag failed (whole log: $log)"
  if [ -n "$old" ] && [ "$old" = "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
    say "reused $tag: nothing changed ($((SECONDS - start)) s)"
    return
  fi
  say "built $tag in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
  # The previous build of this tag, now untagged, only takes disk space (kept if a container uses it).
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
    docker rmi "$old" >/dev/null 2>&1 || true
  fi
}

# --- 4. llama-cpp-python wheel, compiled once --------------------------------------------------------
# In order: the wheel compiled in the image before (cached); else the host's wheel (scripts/llama-wheel.sh:
# same sdist and flags; the one .venv installs, so a fresh machine compiles llama.cpp's library once)
# when every library it links resolves on the base image (`ldd` there, as for llama-server below); else
# the Dockerfile's llama-wheel stage compiles it, and the wheel is cached with a flags.txt that lets
# scripts/llama-wheel.sh give the same file to the host's venv.
if [[ " $images " == *" cpu "* || " $images " == *" hf "* ]]; then
  key=$(printf '%s\n' "$llama_version" "$cmake_args" "$base" | sha256sum | cut -c1-12)
  wheels=$cache/wheels/llama-cpp-python-$llama_version-$key
  host_whl=''
  from_host=0
  if compgen -G "$wheels/llama_cpp_python-$llama_version-*.whl" >/dev/null; then
    say "reused the compiled llama-cpp-python $llama_version wheel ($wheels)"
  elif { [ -x .venv/bin/python ] || command -v python3.11; } >/dev/null && command -v g++ >/dev/null &&
    host_whl=$(bash scripts/llama-wheel.sh | tail -1) && [ -n "$host_whl" ] &&
    missing=$(bash scripts/llama-wheel.sh --missing "$host_whl" "$base") && [ -z "$missing" ]; then
    wheels=$(dirname "$host_whl") from_host=1
    say "llama-cpp-python: the host's wheel, no compile in the image ($host_whl)"
  else
    [ -n "$host_whl" ] && say "llama-cpp-python: the host's wheel does not fit $base: $(echo "${missing:-?}" | head -1)"
    say "compiling llama-cpp-python $llama_version once ($cmake_args); cached in $wheels"
    rm -f container/wheels/llama_cpp_python-*
    build llama-wheel "minerfleet/llama-wheel:$key" "~5 min on 2 cores"
    tmp=$(mktemp -d "$cache/wheels.XXXXXX")
    cid=$(docker create "minerfleet/llama-wheel:$key" true)
    docker cp "$cid:/wheels/." "$tmp/" && docker rm "$cid" >/dev/null
    compgen -G "$tmp/llama_cpp_python-$llama_version-*.whl" >/dev/null || fail "the llama-wheel stage left no wheel"
    rm -rf "$wheels" && mkdir -p "$(dirname "$wheels")" && mv "$tmp" "$wheels"
    # The builder image (compilers) is not needed any more; the wheel is cached.
    docker rmi "minerfleet/llama-wheel:$key" >/dev/null
  fi
  # What scripts/llama-wheel.sh reads to reuse an image-compiled wheel for the host's venv.
  if [ "$from_host" = 0 ] && ! [ -f "$wheels/flags.txt" ]; then
    printf '%s\n' "llama-cpp-python $llama_version (compiled in the image on $base)" "$cmake_args" >"$wheels/flags.txt"
  fi
  for whl in container/wheels/llama_cpp_python-*; do
    [ -e "$whl" ] && ! [ -e "$wheels/$(basename "$whl")" ] && rm -f "$whl"
  done
  for whl in "$wheels"/llama_cpp_python-*.whl; do
    cmp -s "$whl" "container/wheels/$(basename "$whl")" || cp "$whl" container/wheels/
  done
fi

# --- 5. llama-server, compiled once -----------------------------------------------------------------
# The host's build is the same source and flags; on a Debian bookworm host (glibc 2.36, gcc 12) it
# runs on the bookworm base as it is. Whether it does is checked, not assumed: `ldd` inside the base
# image must find every library and symbol version it needs (but libgomp1, which setup-base.sh puts
# in every image). Otherwise the Dockerfile's llama-server stage compiles it, once per (version,
# flags, base image).
if [[ " $images " == *" cpu "* ]]; then
  prepared=container/bin/llama-server
  host_bin=
  missing=
  if [ -n "${MINERFLEET_LLAMA_SERVER:-}" ] || { command -v cmake && command -v g++ && command -v make; } >/dev/null; then
    host_bin=$(bash scripts/llama-server.sh | tail -1) || host_bin=
  fi
  if [ -n "$host_bin" ]; then
    if ldd_out=$(docker run --rm --network none -v "$host_bin:/tmp/llama-server:ro" "$base" ldd /tmp/llama-server 2>&1); then
      missing=$(printf '%s\n' "$ldd_out" | grep 'not found' | grep -v 'libgomp\.so\.1 => not found' || true)
    else
      missing="ldd failed: $(printf '%s\n' "$ldd_out" | tail -1)"
    fi
  fi
  if [ -n "$host_bin" ] && [ -z "$missing" ]; then
    cmp -s "$host_bin" "$prepared" || cp "$host_bin" "$prepared"
    say "llama-server: the host's build ($host_bin)"
  else
    [ -n "$host_bin" ] && say "llama-server: the host's build does not run on $base: $(echo "$missing" | head -1)"
    key=$(printf '%s\n' "$llama_version" "$cmake_args" "$base" | sha256sum | cut -c1-12)
    cached=$cache/llama-server/image-$llama_version-$key/llama-server
    if ! [ -x "$cached" ]; then
      say "llama-server: compiling it in the image once (3-6 min on 2 cores); cached in $(dirname "$cached")"
      rm -f "$prepared"
      build llama-server "minerfleet/llama-server-build:$key" "3-6 min on 2 cores"
      mkdir -p "$(dirname "$cached")"
      cid=$(docker create "minerfleet/llama-server-build:$key" true)
      docker cp "$cid:/out/llama-server" "$cached.tmp" && docker rm "$cid" >/dev/null
      mv "$cached.tmp" "$cached"
      docker rmi "minerfleet/llama-server-build:$key" >/dev/null
    fi
    cmp -s "$cached" "$prepared" || cp "$cached" "$prepared"
  fi
fi

# --- 6. CPU torch wheel ----------------------------------------------------------------------------
if [[ " $images " == *" hf "* ]]; then
  torch=$(compgen -G "$torch_dir/torch-$torch_version+cpu-cp311-cp311-*x86_64.whl" | head -1 || true)
  for whl in container/wheels/torch-*; do
    [ -e "$whl" ] && [ "$(basename "$whl")" != "$(basename "${torch:-none}")" ] && rm -f "$whl"
  done
  if [ -n "$torch" ]; then
    dest=container/wheels/$(basename "$torch")
    if ! cmp -s "$torch" "$dest"; then
      ln -f "$torch" "$dest" 2>/dev/null || cp "$torch" "$dest"
    fi
  else
    say "no torch-$torch_version+cpu wheel in $torch_dir: the hf build downloads it (TORCH_INDEX_URL)"
  fi
fi

# --- 7. the images ---------------------------------------------------------------------------------
total=$SECONDS
[[ " $images " == *" orchestrator "* ]] && build orchestrator minerfleet/orchestrator "first time ~2 min"
[[ " $images " == *" cpu "* ]] && build miner minerfleet/miner:cpu "first time ~2 min"
[[ " $images " == *" hf "* ]] && build miner-hf minerfleet/miner:hf "first time ~3 min: transformers, torch"
[[ " $images " == *" cuda "* ]] && build miner-cuda minerfleet/miner:cuda "first time 1-2 h on 2 cores"
[[ " $images " == *" prometheus "* ]] && build prometheus minerfleet/prometheus "first time ~1 min"
say "done in $((SECONDS - total)) s: $images"
