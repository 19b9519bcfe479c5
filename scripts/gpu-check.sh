#!/usr/bin/env bash
# The GPU check, for the day a machine with an NVIDIA GPU is at hand (driver >= 580: CUDA 13):
#   1. builds llama-server with CUDA (scripts/llama-server.sh --cuda; toolkit from PyPI wheels) for
#      this machine's GPU only (CUDA_ARCHITECTURES from nvidia-smi: minutes, not hours),
#   2. starts it on 127.0.0.1 with the Gemma GGUF and every layer on the GPU, and checks the log says so,
#   3. streams completions straight from it: 1 stream, then N at once (tokens/s, first-token times),
#   4. starts a real miner (openai backend on that server) and streams N synapses through it with
#      real dendrites (answered, first chunk, tokens/s counted with the server's own tokenizer),
#   5. with --wheel: also builds the llama-cpp-python CUDA wheel and generates in-process with all
#      layers on the GPU (the `llamacpp` backend's path).
#
#   scripts/gpu-check.sh [--cpu] [--wheel] [--streams N] [--tokens N] [--model PATH]
#     --cpu      the dry path for a machine without a GPU: the CPU llama-server (1 thread), no layers
#                offloaded; every other step is the same
#     --wheel    also step 5 (another CUDA compile: ~1.5x the server's)
#     --streams  concurrent streams (default 8; also the server's --parallel slots)
#     --tokens   tokens per completion (default 96)
#     --model    the GGUF (default models/gemma-3-270m-q4_k_m.gguf: `make model`)
#
# Needs: the project venv (`make venv`), the model (`make model`), cmake/make/g++ (installed with
# apt-get when root), PyPI for the toolkit wheels the first time. Prints the figures on stdout; exits
# non-zero with the reason when a step fails. Ports: LLAMA_PORT (18560), MINER_PORT (18561).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "gpu-check: $*" >&2; }
fail() { say "error: $*"; exit 1; }

cpu=0
wheel=0
streams=8
tokens=96
model=models/gemma-3-270m-q4_k_m.gguf
while [ $# -gt 0 ]; do
  case $1 in
    --cpu) cpu=1 ;;
    --wheel) wheel=1 ;;
    --streams) streams=$2; shift ;;
    --tokens) tokens=$2; shift ;;
    --model) model=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument '$1' (see $0 --help)" ;;
  esac
  shift
done
py=.venv/bin/python
[ -x "$py" ] || fail "no project venv; fix: make venv"
[ -f "$model" ] || fail "no model at $model; fix: make model (or --model PATH)"
llama_port=${LLAMA_PORT:-18560}
miner_port=${MINER_PORT:-18561}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# llama.cpp logs "load_tensors: offloaded 19/19 layers to GPU" when it loads a model.
offload_line() { grep -o 'offloaded [0-9]*/[0-9]* layers to GPU' "$1" | tail -1 || echo "no offload line in $1"; }
all_on_gpu() { [[ $(offload_line "$1") =~ offloaded\ ([0-9]+)/([0-9]+) ]] && [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ]; }

# --- 1. the GPU and the build ----------------------------------------------------------------------
if [ "$cpu" = 1 ]; then
  say "--cpu: the CPU llama-server, no GPU offload (the dry path of this check)"
  bin=$(bash scripts/llama-server.sh | tail -1)
  gpu_layers=0
  threads=1 # a dry run of the steps, not a CPU benchmark: one thread does not fight other work
else
  command -v nvidia-smi >/dev/null || fail "no nvidia-smi: no NVIDIA driver here; fix: run on a GPU machine, or --cpu for the dry path"
  info=$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader | head -1) ||
    fail "nvidia-smi found no GPU"
  say "GPU: $info"
  driver=$(echo "$info" | cut -d, -f2 | tr -d ' ')
  [ "${driver%%.*}" -ge 580 ] || fail "driver $driver is too old for CUDA 13; fix: install an NVIDIA driver >= 580"
  # Only this GPU's architecture (e.g. 9.0 -> 90-real): the compile takes minutes instead of hours.
  cap=$(echo "$info" | cut -d, -f3 | tr -d ' .')
  export CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-$cap-real}
  say "building llama-server with CUDA for sm_$cap (with $(nproc) cores: ~$((60 * 2 / $(nproc) / 5 + 1))+ min)"
  start=$SECONDS
  bin=$(bash scripts/llama-server.sh --cuda | tail -1)
  say "llama-server ready after $((SECONDS - start)) s: $bin"
  gpu_layers=999 # more than any model has: all of them
  threads=2      # the GPU does the work; threads only feed it
fi
"$bin" --version 2>&1 | grep -i -m1 version >&2 || true

# --- 2. the server, every layer on the GPU ---------------------------------------------------------
log=$work/llama-server.log
"$bin" --model "$model" --alias gemma --host 127.0.0.1 --port "$llama_port" --parallel "$streams" \
  --ctx-size $((streams * 1024)) --threads "$threads" --cont-batching --metrics --swa-checkpoints 0 \
  --n-gpu-layers "$gpu_layers" >"$log" 2>&1 &
pids+=($!)
for _ in $(seq 1 240); do
  "$py" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$llama_port/health', timeout=2)" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { tail -n 20 "$log" >&2; fail "llama-server exited (log above)"; }
  sleep 0.5
done
say "llama-server up on 127.0.0.1:$llama_port ($(offload_line "$log"))"
if [ "$cpu" = 0 ] && ! all_on_gpu "$log"; then
  grep -i -m5 'cuda\|gpu' "$log" >&2
  fail "not every layer is on the GPU: '$(offload_line "$log")'"
fi

# --- 3 and 4: stream from the server, then through a real miner ------------------------------------
export GPU_CHECK_LLAMA="http://127.0.0.1:$llama_port" GPU_CHECK_STREAMS=$streams GPU_CHECK_TOKENS=$tokens
export GPU_CHECK_WALLETS=$work/wallets GPU_CHECK_MINER_PORT=$miner_port GPU_CHECK_LOG=$work/miner.log
"$py" - <<'PY'
"""Figures for the GPU check: direct streams from llama-server, then synapses through a real miner."""

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request

from bittensor_wallet import Wallet

from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once
from services.miner.settings import MinerSettings

LLAMA = os.environ["GPU_CHECK_LLAMA"]
N = int(os.environ["GPU_CHECK_STREAMS"])
TOKENS = int(os.environ["GPU_CHECK_TOKENS"])
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def post(path: str, body: dict) -> urllib.request.Request:
    data = json.dumps(body).encode()
    return urllib.request.Request(LLAMA + path, data, {"Content-Type": "application/json"})


def completion(_: int) -> tuple[float, int, float]:
    """One streamed /v1/completions: (first-token seconds, tokens, total seconds)."""
    body = {"prompt": PROMPT, "max_tokens": TOKENS, "stream": True, "ignore_eos": True, "temperature": 0.7}
    start, first, pieces = time.monotonic(), None, 0
    with urllib.request.urlopen(post("/v1/completions", body), timeout=120) as response:
        for line in response:  # server-sent events, one token each; the last one carries no text
            if line.startswith(b"data: {") and json.loads(line[6:])["choices"][0].get("text"):
                first = first or time.monotonic() - start
                pieces += 1
    return first or 0.0, pieces, time.monotonic() - start


async def direct(k: int) -> None:
    start = time.monotonic()
    results = await asyncio.gather(*(asyncio.to_thread(completion, i) for i in range(k)))
    wall = time.monotonic() - start
    firsts = sorted(r[0] for r in results)
    print(f"llama-server  {k:2d} streams: {sum(r[1] for r in results) / wall:7.1f} tokens/s in total, "
          f"first token median {firsts[len(firsts) // 2]:.2f} s, max {firsts[-1]:.2f} s")


def count_tokens(text: str) -> int:
    with urllib.request.urlopen(post("/tokenize", {"content": text}), timeout=30) as response:
        return len(json.load(response)["tokens"])


async def through_miner() -> None:
    path = os.environ["GPU_CHECK_WALLETS"]
    keys = {}
    for hotkey in ("miner", "probe"):
        wallet = Wallet(name="check", hotkey=hotkey, path=path)
        if hotkey == "miner":
            wallet.create_new_coldkey(use_password=False, overwrite=True, suppress=True)
        wallet.create_new_hotkey(use_password=False, overwrite=True, suppress=True)
        keys[hotkey] = wallet
    port = int(os.environ["GPU_CHECK_MINER_PORT"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINER_")}
    env.update({
        "MINER_NAME": "gpu-check", "MINER_NETWORK": "local", "MINER_WALLET_PATH": path,
        "MINER_WALLET_NAME": "check", "MINER_WALLET_HOTKEY": "miner", "MINER_AXON_IP": "127.0.0.1",
        "MINER_AXON_PORT": str(port), "MINER_ALLOWED_HOTKEYS": json.dumps([keys["probe"].hotkey.ss58_address]),
        "MINER_BACKEND": "openai", "MINER_OPENAI__BASE_URL": LLAMA + "/v1", "MINER_OPENAI__MODEL": "gemma",
        "MINER_OPENAI__USE_CHAT": "false", "MINER_MAX_TOKENS": str(TOKENS), "MINER_MAX_QUEUE": str(N),
        "PYTHONPATH": os.getcwd(),
    })
    if "max_concurrency" in MinerSettings.model_fields:  # a miner that runs N generations at once
        env["MINER_MAX_CONCURRENCY"] = str(N)
    with open(os.environ["GPU_CHECK_LOG"], "wb") as log:
        miner = subprocess.Popen([sys.executable, "-m", "services.miner"], env=env, stdout=log, stderr=log)
    try:
        dendrite = make_dendrite(keys["probe"])
        target = axon_info("127.0.0.1", port, keys["miner"].hotkey.ss58_address)
        for _ in range(240):  # the axon opens after the miner's warm-up
            if miner.poll() is not None:
                with open(os.environ["GPU_CHECK_LOG"], errors="replace") as log:
                    sys.exit(f"the miner exited with {miner.returncode}; its log ends:\n{log.read()[-2000:]}")
            result = await stream_once(dendrite, target, make_synapse("prompting", "Hello"), timeout=5)
            if result.ok:
                break
            await asyncio.sleep(0.5)
        for k in (1, N):
            start = time.monotonic()
            results = await asyncio.gather(
                *(stream_once(dendrite, target, make_synapse("prompting", PROMPT), timeout=30) for _ in range(k))
            )
            wall = time.monotonic() - start
            answered = [r for r in results if r.ok and r.completion]
            firsts = sorted(r.first_chunk_after or 0.0 for r in answered) or [float("nan")]
            tokens = sum(count_tokens(r.completion) for r in answered)
            print(f"through miner {k:2d} streams: {len(answered)}/{k} answered, {tokens / wall:7.1f} tokens/s "
                  f"in total, first chunk median {firsts[len(firsts) // 2]:.2f} s, max {firsts[-1]:.2f} s")
        await dendrite.aclose_session()
    finally:
        miner.terminate()
        miner.wait(15)


async def main() -> None:
    await direct(1)
    await direct(N)
    await through_miner()


asyncio.run(main())
PY

# --- 5. (--wheel) the llama-cpp-python CUDA wheel: the in-process `llamacpp` backend on the GPU --------
if [ "$wheel" = 1 ] && [ "$cpu" = 1 ]; then
  say "--wheel with --cpu: nothing to do (the venv's llama-cpp-python is the CPU build)"
elif [ "$wheel" = 1 ]; then
  # shellcheck source=scripts/llama-flags.sh
  . scripts/llama-flags.sh
  toolkit=$(bash scripts/cuda-toolkit.sh | tail -1)
  sdist=$(bash scripts/llama-server.sh --sdist | tail -1)
  mapfile -t cuda_args < <(llama_cuda_args "$toolkit")
  wheels=${MINERFLEET_CACHE:-$HOME/.cache/minerfleet}/wheels/llama-cpp-python-$llama_version-cuda-$CUDA_ARCHITECTURES
  if ! compgen -G "$wheels/llama_cpp_python-*.whl" >/dev/null; then
    say "building the llama-cpp-python $llama_version CUDA wheel (a CUDA compile again, the library's)"
    start=$SECONDS
    CMAKE_ARGS="$llama_cpu_args ${cuda_args[*]}" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      "$py" -m pip wheel -q --no-deps -w "$work/wheels" "$sdist" >&2
    mkdir -p "$wheels" && mv "$work"/wheels/llama_cpp_python-*.whl "$wheels/"
    say "wheel built in $((SECONDS - start)) s: $(ls "$wheels")"
  fi
  "$py" -m venv "$work/venv"
  "$work/venv/bin/python" -m pip install -q "$wheels"/llama_cpp_python-*.whl >&2
  # The wheel's libggml-cuda.so finds libcudart/libcublas through this (its RUNPATH is $ORIGIN only).
  LD_LIBRARY_PATH="$toolkit/lib" "$work/venv/bin/python" - "$model" "$tokens" 2>"$work/inprocess.log" <<'PY'
import sys
import time

from llama_cpp import Llama

llm = Llama(sys.argv[1], n_gpu_layers=-1, n_ctx=1024, verbose=True)
start = time.monotonic()
out = llm("Write a short story about a lighthouse keeper.", max_tokens=int(sys.argv[2]), temperature=0.7)
n = out["usage"]["completion_tokens"]
print(f"llama-cpp-python in-process: {n / (time.monotonic() - start):7.1f} tokens/s ({n} tokens, all layers on the GPU)")
PY
  if ! all_on_gpu "$work/inprocess.log"; then
    tail -n 20 "$work/inprocess.log" >&2
    fail "llama-cpp-python: not every layer is on the GPU: '$(offload_line "$work/inprocess.log")'"
  fi
fi
say "ok"
