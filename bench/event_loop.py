"""Event loop under load: is a miner still responsive while it generates?

Two miners on the same Gemma model, threads and sampling: the product's llamacpp miner (generation in a
worker thread, one generation at a time, others queued up to ``max_queue``) and a reference miner written
the way the seed documents write it (``bench/seed_style_miner.py``: a blocking ``for token in llm(...)``
inside ``async _forward``, on the event loop).

For each miner, alternately, round after round:

- **idle**: pings and new requests one after another, nothing else running;
- **loaded**: K long generations are kept in flight for a fixed window (when one ends, the next is
  sent); meanwhile a ping is sent every 0.2 s and a new request every 1.5 s (each on its own, not waiting
  for the previous one).

The seed-style miner holds an ``asyncio.Lock`` around each generation: the seed exactly (no lock) lets two
requests interleave on one llama.cpp context and crashes; that is shown once, first (``seed_without_lock``).

A *ping* is ``POST /Synapse`` with ``{}``: the axon answers it (401, unsigned) from its middleware on the
event loop, so its latency is how long the loop takes to get to a request. A *new request* is a signed
streaming request with a short prompt; its first byte is the first chunk, or the whole refusal when the
miner answers "busy" (the product miner runs with ``max_queue = K - 1``: the K generations fill it). We
report p50 and p99 of both, loaded against idle.

Run: ``python -m bench.event_loop [--quick]``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench._common import (
    GGUF,
    LOCALHOST,
    Figure,
    Result,
    Wallets,
    free_port,
    log_tail,
    machine,
    main_for,
    make_result,
    make_wallets,
    miner_env,
    progress,
    started_miners,
    summarize,
)
from bench.harness import bench_tmp, model_missing
from bench.seed_launch import seed_style_miner, seed_without_lock
from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once

NAME = "event_loop"
TITLE = "Event loop under load: ping and new-request latency, product miner vs seed-style miner"
LONG_PROMPT = "Explain step by step how a steam engine works, in great detail."  # runs to max_tokens
SHORT_PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."  # ~20 tokens
LOAD_TIMEOUT = 90.0  # seconds a load generation may take (queued behind the others)
NEW_TIMEOUT = 30.0
PING_TIMEOUT = 60.0
KINDS = ("minerfleet", "seed-style")


@dataclass(frozen=True)
class Config:
    rounds: int
    k: int  # concurrent long generations
    gen_tokens: int  # max tokens of every generation (both miners)
    threads: int
    idle_pings: int
    idle_requests: int
    ping_interval: float
    request_interval: float
    max_requests_loaded: int
    window: float  # seconds a loaded phase keeps K generations in flight and samples

    @classmethod
    def for_run(cls, quick: bool) -> Config:
        if quick:
            return cls(1, 2, 24, 1, 10, 2, 0.2, 1.5, 2, 3.0)
        return cls(3, 4, 48, 1, 20, 3, 0.2, 1.5, 5, 8.0)


@dataclass
class PhaseSamples:
    """Latencies (seconds) collected in one kind of phase, pooled over rounds."""

    ping: list[float] = field(default_factory=list)
    ping_failed: int = 0
    request_first_byte: list[float] = field(default_factory=list)
    request_status: dict[str, int] = field(default_factory=dict)
    load_durations: list[float] = field(default_factory=list)

    def add_ping(self, latency: float | None) -> None:
        """A ping's latency, or a failed ping (None)."""
        if latency is None:
            self.ping_failed += 1
        else:
            self.ping.append(latency)

    def add_request(self, first: float, status: str) -> None:
        """A new request's first byte, and its status label."""
        self.request_first_byte.append(first)
        self.request_status[status] = self.request_status.get(status, 0) + 1


class Ping:
    """``POST /Synapse {}`` over a fresh connection each time; latency until the answer is read."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    async def __call__(self, port: int) -> float | None:
        started = time.monotonic()
        try:
            async with self.session.post(
                f"http://{LOCALHOST}:{port}/Synapse",
                json={},
                timeout=aiohttp.ClientTimeout(total=PING_TIMEOUT),
            ) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return None
        return time.monotonic() - started

    async def close(self) -> None:
        await self.session.close()


class Bench:
    """Drives both miners from one event loop (this process's)."""

    def __init__(self, cfg: Config, wallets: Wallets, ports: dict[str, int]) -> None:
        self.cfg = cfg
        self.wallets = wallets
        self.ports = ports
        self.ping = Ping()
        self.dendrite = make_dendrite(wallets.wallet("probe"))
        self.samples = {(kind, phase): PhaseSamples() for kind in KINDS for phase in ("idle", "loaded")}

    async def close(self) -> None:
        await self.ping.close()
        await self.dendrite.aclose_session()

    async def request(self, kind: str, prompt: str, timeout: float) -> tuple[float, str]:
        """A signed streaming request: (seconds to the first chunk or to the refusal, status label)."""
        target = axon_info(LOCALHOST, self.ports[kind], self.wallets.miner_hotkey)
        started = time.monotonic()
        result = await stream_once(
            self.dendrite, target, make_synapse("prompting", prompt, timeout=timeout), timeout
        )
        first = (
            result.first_chunk_after if result.first_chunk_after is not None else time.monotonic() - started
        )
        status = "200" if result.ok and result.completion else f"{result.status_code}"
        if result.status_code == 503 and "busy" in result.status_message.lower():
            status = "503-busy"
        return first, status

    async def idle(self, kind: str) -> None:
        samples = self.samples[(kind, "idle")]
        for _ in range(self.cfg.idle_pings):
            samples.add_ping(await self.ping(self.ports[kind]))
            await asyncio.sleep(0.1)
        for _ in range(self.cfg.idle_requests):
            samples.add_request(*await self.request(kind, SHORT_PROMPT, NEW_TIMEOUT))

    async def loaded(self, kind: str) -> None:
        samples = self.samples[(kind, "loaded")]
        cfg = self.cfg
        started = time.monotonic()
        window_end = started + cfg.window

        async def keep_generating() -> None:
            # One of the K: a long generation, and another as soon as it ends, until the window closes, so
            # the miner stays saturated (and the product miner's queue full) the whole time.
            while time.monotonic() < window_end:
                try:
                    await self.request(kind, LONG_PROMPT, LOAD_TIMEOUT)
                except Exception:  # a failed generation is still load that ended; go on
                    await asyncio.sleep(0.1)

        load = [asyncio.create_task(keep_generating(), name=f"load-{i}") for i in range(cfg.k)]
        await asyncio.sleep(0.5)  # let the K generations arrive and start before sampling
        probes: list[asyncio.Task[Any]] = []

        async def ping_once() -> None:
            samples.add_ping(await self.ping(self.ports[kind]))

        async def request_once() -> None:
            samples.add_request(*await self.request(kind, SHORT_PROMPT, NEW_TIMEOUT))

        next_ping = next_request = time.monotonic()
        requests_sent = 0
        while time.monotonic() < window_end:
            now = time.monotonic()
            if now >= next_ping:
                probes.append(asyncio.create_task(ping_once()))
                next_ping += cfg.ping_interval
            if now >= next_request and requests_sent < cfg.max_requests_loaded:
                probes.append(asyncio.create_task(request_once()))
                requests_sent += 1
                next_request += cfg.request_interval
            await asyncio.sleep(0.02)
        await asyncio.gather(*load, return_exceptions=True)  # the last generations run to their end
        samples.load_durations.append(time.monotonic() - started)
        await asyncio.gather(*probes, return_exceptions=True)
        progress(f"event_loop: {kind}: load drained after {time.monotonic() - started:.1f}s")
        await self.settle(kind)

    async def settle(self, kind: str, limit: float = 90.0) -> None:
        """Wait until the miner answers pings promptly again (the seed-style one may still be busy)."""
        deadline = time.monotonic() + limit
        failures = 0
        while time.monotonic() < deadline and failures < 10:
            latency = await self.ping(self.ports[kind])
            if latency is not None and latency < 0.1:
                return
            failures = failures + 1 if latency is None else 0  # nobody answers at all: give up
            await asyncio.sleep(0.2)

    async def measure(self) -> None:
        for kind in KINDS:  # warm-up, not counted: first generation and first connection
            await self.request(kind, SHORT_PROMPT, NEW_TIMEOUT)
        steps: list[Callable[[str], Awaitable[None]]] = [self.idle, self.loaded]
        for index in range(self.cfg.rounds):
            kinds = KINDS if index % 2 == 0 else tuple(reversed(KINDS))
            for kind in kinds:
                for step in steps:
                    progress(f"event_loop: round {index + 1}/{self.cfg.rounds}: {kind} {step.__name__}")
                    await step(kind)


def _figures(samples: dict[tuple[str, str], PhaseSamples]) -> list[Figure]:
    figures: list[Figure] = []
    for kind in KINDS:
        label = "product miner" if kind == "minerfleet" else "seed-style miner"
        short = "ours" if kind == "minerfleet" else "seed"
        for phase in ("idle", "loaded"):
            s = samples[(kind, phase)]
            where = "idle" if phase == "idle" else "during K long generations"
            ping = summarize(s.ping)
            first = summarize(s.request_first_byte)
            statuses = ", ".join(f"{k}: {v}" for k, v in sorted(s.request_status.items()))
            key, what = f"{short}_{phase}", f"{label}, {where}"
            figures += [
                _latency(f"{key}_ping_p50_ms", f"{what}: /Synapse ping latency, p50", ping),
                _latency(f"{key}_ping_p99_ms", f"{what}: /Synapse ping latency, p99", ping, tail=True),
                _latency(
                    f"{key}_request_p50_ms",
                    f"{what}: new request's first byte (first chunk or refusal), p50 ({statuses})",
                    first,
                ),
                _latency(
                    f"{key}_request_p99_ms",
                    f"{what}: new request's first byte, p99 (few samples: about the max)",
                    first,
                    tail=True,
                ),
            ]
    return figures


def _latency(key: str, what: str, stats: dict[str, float], *, tail: bool = False) -> Figure:
    """A latency in ms: the median (or, for a tail figure, the p99) of a sample."""
    return Figure(key, what, _ms(stats.get("p99" if tail else "median")), "ms", _ms_stats(stats, tail=tail))


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def _ms_stats(stats: dict[str, float], *, tail: bool = False) -> dict[str, float]:
    """The sample's stats in ms; for a tail figure (p99) only n/min/max, so the spread shown is the range."""
    keep = ("n", "min", "max") if tail else tuple(stats)
    return {k: (v if k == "n" else v * 1000) for k, v in stats.items() if k in keep}


def product_env(cfg: Config, wallets: Wallets) -> dict[str, str]:
    """The product's llamacpp miner, its queue just big enough for the K load generations."""
    return miner_env(
        wallets,
        free_port(),
        name="bench-loop",
        backend="llamacpp",
        llamacpp__model_path=str(GGUF),
        llamacpp__n_threads=str(cfg.threads),
        llamacpp__seed="0",
        temperature="0",
        max_tokens=str(cfg.gen_tokens),
        max_queue=str(cfg.k - 1),  # the K generations fill the queue: a new request is told "busy"
        log_level="warning",
    )


async def sample_phases(
    cfg: Config, wallets: Wallets, ports: dict[str, int]
) -> dict[tuple[str, str], PhaseSamples]:
    """Both miners' idle and loaded phases, round after round, from this process's event loop."""
    bench = Bench(cfg, wallets, ports)
    try:
        await bench.measure()
    finally:
        await bench.close()
    return bench.samples


@dataclass
class Measured:
    """What one run measured: each (miner, phase)'s samples, and how the seed-style miners fared."""

    samples: dict[tuple[str, str], PhaseSamples]
    unlocked: str  # the seed exactly (no lock), two concurrent requests: what became of the process
    seed_exit: int | None  # the seed-style miner's exit code if it exited during the run
    seed_log: str


def measure(cfg: Config, tmp: Path) -> Measured:
    """The seed without its lock once; then both miners side by side, idle and loaded phases alternating."""
    wallets = make_wallets(tmp / "wallets")
    env = product_env(cfg, wallets)
    progress("event_loop: the seed exactly (no lock), two concurrent requests")
    unlocked = seed_without_lock(tmp, wallets, cfg.threads, cfg.gen_tokens, LONG_PROMPT)
    with (
        started_miners(tmp, [env]) as (ours,),
        seed_style_miner(tmp, wallets, cfg.threads, cfg.gen_tokens) as (seed_port, seed),
    ):
        ports = {"minerfleet": ours.port, "seed-style": seed_port}
        samples = asyncio.run(sample_phases(cfg, wallets, ports))
        seed_exit = seed.poll()
        seed_log = log_tail(tmp / f"seed-style-{seed_port}.log")
    return Measured(samples, unlocked, seed_exit, seed_log)


def details(cfg: Config, m: Measured) -> dict[str, Any]:
    return {
        "k": cfg.k,
        "gen_tokens": cfg.gen_tokens,
        "n_threads": cfg.threads,
        "rounds": cfg.rounds,
        "ping_interval_s": cfg.ping_interval,
        "phases": {
            f"{kind}/{phase}": {
                "ping": summarize(s.ping),
                "ping_failed": s.ping_failed,
                "request_first_byte": summarize(s.request_first_byte),
                "request_status": s.request_status,
                "load_durations_s": [round(d, 2) for d in s.load_durations],
            }
            for (kind, phase), s in m.samples.items()
        },
        "seed_style_exit_during_run": m.seed_exit,
        "seed_style_log_tail": m.seed_log[-500:],
    }


def run(quick: bool) -> Result:
    """Start both miners, alternate idle and loaded phases, return p50/p99 latencies."""
    started, before = time.time(), machine()
    cfg = Config.for_run(quick)
    missing = model_missing(NAME, TITLE, quick, started, before)
    if missing is not None:
        return missing
    with bench_tmp() as tmp:
        measured = measure(cfg, tmp)
    notes = [
        f"K={cfg.k} generations of {cfg.gen_tokens} tokens, n_threads {cfg.threads}; the product miner "
        f"runs with max_queue={cfg.k - 1}, so a new request during the load is answered 'busy' (503) at once",
        "the seed-style miner serialises generations with a lock (the seed itself crashes, see "
        "seed_without_lock); requests and pings wait for the event loop, which every batch of tokens blocks",
    ]
    if measured.seed_exit is not None:
        notes.append(f"the seed-style miner (with its lock) exited during the run with {measured.seed_exit}")
    figures = [
        *_figures(measured.samples),
        Figure(
            "seed_without_lock",
            "the seed exactly (no lock around a generation), 2 concurrent long requests: the process",
            measured.unlocked,
        ),
    ]
    details_ = details(cfg, measured)
    return make_result(NAME, TITLE, quick, started, figures, details_, notes=notes, machine_before=before)


def main() -> int:
    return main_for(NAME, __doc__ or "", run)


if __name__ == "__main__":
    raise SystemExit(main())
