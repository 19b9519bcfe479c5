"""Container limits (memory, CPUs, processes) of each service: the fleet file's ``resources:``, else a
default from the backend and the size of the model it holds.

The defaults are ceilings that catch a runaway (a leak, a fork bomb, a prompt that blows up a buffer)
before it takes the whole box, not reservations: they leave the usual load room to spare. Memory:

- an ``echo``/``openai`` miner: Python, bittensor and the axon, no model: 384 MiB (~110 after imports);
- a ``llamacpp`` miner: that plus the model file (memory-mapped, counted once loaded), its KV cache
  for ``n_ctx`` tokens and llama.cpp's compute buffers;
- an ``hf`` miner: 1 GiB plus six times the model file (torch holds the weights as float32, a GGUF's
  4-bit weights dequantized; loading briefly needs more);
- a model server (llama-server, no Python): the model file, the KV cache of every slot
  (``slots * ctx_per_slot`` tokens) and 256 MiB of compute buffers and HTTP threads.

The KV cache per token is estimated from the model's size (1/8000 of the file per token, which covers
grouped-query models and most older full-attention ones); set ``resources.memory`` for anything exotic.
CPUs: a model server (llama-server) gets no CPU quota by default. Its CPU is bounded by its own threads
(``n_threads`` decoding, plus its HTTP and sampling threads), and a quota can only throttle decoding:
measured on 2 cores (Gemma 3 270M, ``--threads 1``, one stream), 19.6 tok/s under ``cpus: 1``, 48.6 under
``cpus: 2``, 46.7 on the host; ``bench.fleet`` compares one stream through the stack with the host's.
A quota above the threads' needs would not throttle, but docker refuses one above the host's core count,
which the render cannot know: so there is none (``resources.cpus`` sets one on purpose). An in-process
llama.cpp or transformers miner gets its thread count. Unset ``n_threads``: no CPU limit, since
llama.cpp then spreads over every core and a quota would only throttle it. An ``echo``/``openai`` miner
gets one core.
CPU weight (``cpu_shares``): a miner holding its own model runs at :data:`IN_PROCESS_CPU_SHARES`, so
when the box is busy the model servers and the miners streaming from them go first (a weight applies
under compose; ``docker stack deploy`` ignores it).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.fleet import BUNDLED_GGUF_BYTES, Resources
from orchestrator.fleet.load import LoadedFleet, Miner, ModelServer
from orchestrator.render.places import RenderError
from services.miner.backends import SPECS
from services.miner.backends.spec import Memory

MIB = 1 << 20
PYTHON_MIB = 384  # a miner without a model (Python, bittensor, the axon: ~110 MiB after imports)
LLAMACPP_EXTRA_MIB = 256  # llama.cpp's compute and logits buffers in a llamacpp miner
HF_BASE_MIB = 1024
HF_MODEL_FACTOR = 6
SERVER_EXTRA_MIB = 256  # llama-server's compute buffers and HTTP threads
KV_BYTES_PER_TOKEN_DIVISOR = 8000  # KV cache per token ~ model bytes / this
ORCHESTRATOR_MIB = 512

# An in-process model miner's CPU weight: a quarter of the others'. It generates one answer at a time
# flat out, where a model server answers many at once from the same CPU; when the box is saturated the
# server and the miners in front of it go first. Measured on the shipped fleet (2 cores, one server
# thread, 8 validators asking every miner at once, capacity --fleet): at an even weight the shared
# miners' first-chunk p90 was 2.6-5.4 s, at 256 0.6-0.8 s (one question for all), for no fewer answers
# from solo-1 itself.
IN_PROCESS_CPU_SHARES = 256
PIDS_MINER = 256
PIDS_HF = 1024  # torch starts a pool of threads per core
PIDS_SERVER = 512  # llama-server: a thread per core for compute and for HTTP


@dataclass(frozen=True)
class Limits:
    """What compose gets as ``mem_limit``, ``cpus`` and ``pids_limit``."""

    memory: str
    cpus: float | None
    pids: int
    cpu_shares: int | None = None  # CPU weight under contention (None: docker's even 1024)

    def compose(self) -> dict[str, str | float | int]:
        out: dict[str, str | float | int] = {"mem_limit": self.memory}
        if self.cpus is not None:
            out["cpus"] = self.cpus
        if self.cpu_shares is not None:
            out["cpu_shares"] = self.cpu_shares
        out["pids_limit"] = self.pids
        return out


ORCHESTRATOR_LIMITS = Limits(f"{ORCHESTRATOR_MIB}m", 1.0, PIDS_MINER)


def model_bytes(loaded: LoadedFleet, name: str) -> int:
    """The size of a named model: known for the bundled one, else read from disk (a directory: the sum
    of its files)."""
    spec = loaded.fleet.models[name]
    if spec.gguf is not None:
        return BUNDLED_GGUF_BYTES[str(spec.gguf)]
    path = loaded.model_file(name)
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError as exc:
        raise RenderError(
            f"the model {name!r} ({path}) is not there to size its container's memory limit "
            f"({exc.strerror}): put the file in place, or set `resources: {{memory: ...}}` on what uses it"
        ) from exc


def _mib(n_bytes: int) -> int:
    return -(-n_bytes // MIB)


def _memory(mib: int) -> str:
    """Rounded up to a multiple of 64 MiB, in docker's notation."""
    return f"{-(-mib // 64) * 64}m"


def _kv_mib(loaded: LoadedFleet, model: str, tokens: int) -> int:
    return _mib(model_bytes(loaded, model) * tokens // KV_BYTES_PER_TOKEN_DIVISOR)


def _apply(default: Limits, written: Resources | None) -> Limits:
    if written is None:
        return default
    return Limits(
        written.memory or default.memory,
        written.cpus if written.cpus is not None else default.cpus,
        written.pids if written.pids is not None else default.pids,
        written.cpu_shares if written.cpu_shares is not None else default.cpu_shares,
    )


def miner_limits(loaded: LoadedFleet, miner: Miner) -> Limits:
    options = miner.options
    described = SPECS[miner.backend]
    group = getattr(options, miner.backend.value)
    threads = _threads(getattr(group, "n_threads", None))
    if described.memory is Memory.gguf and miner.model is not None:
        # llama.cpp holds the file and a KV cache the size of its context.
        n_ctx = getattr(group, "n_ctx", None) or described.settings.model_fields["n_ctx"].default
        mib = (
            PYTHON_MIB
            + _mib(model_bytes(loaded, miner.model))
            + _kv_mib(loaded, miner.model, n_ctx)
            + LLAMACPP_EXTRA_MIB
        )
        default = Limits(_memory(mib), threads, PIDS_MINER, IN_PROCESS_CPU_SHARES)
    elif described.memory is Memory.torch and miner.model is not None:
        mib = HF_BASE_MIB + HF_MODEL_FACTOR * _mib(model_bytes(loaded, miner.model))
        default = Limits(_memory(mib), threads, PIDS_HF, IN_PROCESS_CPU_SHARES)
    else:
        default = Limits(_memory(PYTHON_MIB), 1.0, PIDS_MINER)
    # Only what was written counts: the default of a field left unset is the backend's, not None's.
    return _apply(default, options.resources)


def server_limits(loaded: LoadedFleet, server: ModelServer) -> Limits:
    spec = server.spec
    mib = (
        _mib(model_bytes(loaded, spec.model))
        + _kv_mib(loaded, spec.model, server.ctx_size)
        + SERVER_EXTRA_MIB
    )
    # No quota: its threads bound its CPU, and a quota would only throttle decoding (module docstring).
    return _apply(Limits(_memory(mib), None, PIDS_SERVER), spec.resources)


def _threads(n_threads: int | None) -> float | None:
    return float(n_threads) if n_threads is not None else None
