"""Memory per hotkey: what one more miner costs, by backend, and N hotkeys shared vs separate.

Processes, all on 127.0.0.1: one echo miner; a shared model server (``python -m llama_cpp.server`` on
Gemma, ``--n_threads 1``, the way the fleet's ``model_server:`` runs it) with ``openai`` miners pointed at
it; and ``llamacpp`` miners each loading Gemma themselves (``n_threads`` 1, same ``n_ctx``). Hotkeys are
added one at a time (one openai and one llamacpp miner per step); after each miner has answered one
request (so lazily allocated buffers count), the memory of every process tree is read from ``/proc``:

- **RSS** (``VmRSS``, summed over the process and its children): what ``top`` and ``docker stats`` show;
- **PSS** (``smaps_rollup``): shared pages divided among the processes sharing them. llama.cpp maps the
  GGUF file (mmap), so N llamacpp miners share the weights through the page cache: their RSS sum counts
  the model N times, their PSS sum once. Both are reported; PSS is the honest total.

Run: ``python -m bench.memory [--quick]``.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    GGUF,
    LOCALHOST,
    Figure,
    MinerProcess,
    Result,
    Wallets,
    free_port,
    machine,
    main_for,
    make_result,
    make_wallets,
    miner_env,
    progress,
    started_miners,
    tree_memory,
)
from bench.harness import bench_tmp, model_missing, probe_dendrite
from devkit.local import llama_cpp_server_process
from services.miner.client import axon_info, make_synapse, stream_once

NAME = "memory"
TITLE = "Memory per hotkey: echo / openai / llamacpp miners; N hotkeys on a shared model server vs N models"
N_CTX = 2048
WARM_PROMPT = "Say hello."
SAMPLES = 3  # readings per measurement, 0.5 s apart; the median is reported


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]

    @classmethod
    def for_run(cls, quick: bool) -> Config:
        return cls((1, 2)) if quick else cls((1, 2, 4))


@contextmanager
def model_server(tmp: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``python -m llama_cpp.server`` on the bundled Gemma, as the fleet's ``model_server:`` runs it."""
    port = free_port()
    with llama_cpp_server_process(GGUF, port, tmp / "model-server.log", n_ctx=N_CTX) as proc:
        yield port, proc


def warm(wallets: Wallets, miners: list[MinerProcess]) -> list[bool]:
    """One request to each miner (one after the other), so what a request allocates is counted."""

    async def go() -> list[bool]:
        async with probe_dendrite(wallets) as dendrite:
            answers = []
            for miner in miners:
                target = axon_info(LOCALHOST, miner.port, wallets.miner_hotkey)
                result = await stream_once(
                    dendrite, target, make_synapse("prompting", WARM_PROMPT, timeout=60), 60
                )
                answers.append(result.ok)
            return answers

    return asyncio.run(go())


class Snapshot:
    """Tree memory of some processes (MiB): for each, the median of a few readings taken together."""

    KEYS = ("rss", "pss", "uss", "anon", "file")

    def __init__(self, pids: list[int]) -> None:
        readings: dict[int, list[dict[str, float]]] = {pid: [] for pid in pids}
        for index in range(SAMPLES):
            if index:
                time.sleep(0.5)
            for pid in pids:
                readings[pid].append(tree_memory(pid))
        self.by_pid = {
            pid: {key: statistics.median(r[key] for r in values) for key in self.KEYS}
            for pid, values in readings.items()
        }

    def total(self, pids: list[int]) -> dict[str, float]:
        """Summed over ``pids``."""
        return {key: sum(self.by_pid[pid][key] for pid in pids) for key in self.KEYS}


def _pid(miner: MinerProcess) -> int:
    assert miner.proc is not None
    return miner.proc.pid


def hotkey_envs(wallets: Wallets, n: int, server_port: int) -> list[dict[str, str]]:
    """Hotkey ``n`` twice: an openai miner on the shared server, and a llamacpp miner with its own model."""
    openai_env = miner_env(
        wallets,
        free_port(),
        name=f"mem-openai-{n}",
        backend="openai",
        openai__base_url=f"http://{LOCALHOST}:{server_port}/v1",
        openai__model="gemma",
        max_tokens="8",
    )
    llama_env = miner_env(
        wallets,
        free_port(),
        name=f"mem-llama-{n}",
        backend="llamacpp",
        llamacpp__model_path=str(GGUF),
        llamacpp__n_threads="1",
        llamacpp__n_ctx=str(N_CTX),
        max_tokens="8",
    )
    return [openai_env, llama_env]


def reading(
    n: int,
    server_pid: int,
    echo_pid: int,
    shared: list[MinerProcess],
    separate: list[MinerProcess],
    answered: list[bool],
) -> dict[str, Any]:
    """Memory of every process now, summed the ways the figures need (one miner of each kind at n = 1)."""
    openai_pids, llama_pids = [_pid(m) for m in shared], [_pid(m) for m in separate]
    snap = Snapshot([server_pid, echo_pid, *openai_pids, *llama_pids])
    step: dict[str, Any] = {
        "model_server": snap.total([server_pid]),
        "openai_miners": snap.total(openai_pids),
        "shared_total": snap.total([server_pid, *openai_pids]),
        "separate_total": snap.total(llama_pids),
        "answered": answered,
    }
    if n == 1:
        step["one_miner"] = {
            "echo": snap.total([echo_pid]),
            "openai": snap.total(openai_pids[:1]),
            "llamacpp": snap.total(llama_pids[:1]),
        }
    return step


def measure(cfg: Config, tmp: Path, stack: ExitStack) -> dict[int, dict[str, Any]]:
    """The server and an echo miner, then hotkeys one at a time; a reading at every size in ``sizes``."""
    wallets = make_wallets(tmp / "wallets")
    server_port, server = stack.enter_context(model_server(tmp))
    (echo,) = stack.enter_context(
        started_miners(tmp, [miner_env(wallets, free_port(), name="mem-echo", backend="echo")])
    )
    warm(wallets, [echo])
    shared: list[MinerProcess] = []
    separate: list[MinerProcess] = []
    steps: dict[int, dict[str, Any]] = {}
    for n in range(1, max(cfg.sizes) + 1):
        progress(f"memory: starting hotkey {n} (one openai miner, one llamacpp miner)")
        new_openai, new_llama = stack.enter_context(started_miners(tmp, hotkey_envs(wallets, n, server_port)))
        answered = warm(wallets, [new_openai, new_llama])
        shared.append(new_openai)
        separate.append(new_llama)
        if n in cfg.sizes:
            steps[n] = reading(n, server.pid, _pid(echo), shared, separate, answered)
    return steps


def mib(key: str, what: str, value: float) -> Figure:
    return Figure(key, what, round(value, 1), "MiB")


def one_miner_figures(steps: dict[int, dict[str, Any]]) -> list[Figure]:
    """One miner of each kind, and the model server, at one hotkey."""
    one = steps[1]["one_miner"]
    return [
        mib("echo_miner_rss_mb", "one echo miner (no model): RSS", one["echo"]["rss"]),
        mib(
            "openai_miner_rss_mb",
            "one openai miner (no model; talks to the server): RSS",
            one["openai"]["rss"],
        ),
        mib(
            "llamacpp_miner_rss_mb", "one llamacpp miner with its own Gemma 270M: RSS", one["llamacpp"]["rss"]
        ),
        mib(
            "llamacpp_miner_anon_mb",
            "the same llamacpp miner: anonymous RSS (not the mapped model file)",
            one["llamacpp"]["anon"],
        ),
        mib(
            "model_server_rss_mb",
            "the shared llama_cpp.server with Gemma 270M: RSS",
            steps[1]["model_server"]["rss"],
        ),
    ]


def size_figures(n: int, step: dict[str, Any]) -> list[Figure]:
    """``n`` hotkeys both ways: total RSS and PSS."""
    shared, separate = step["shared_total"], step["separate_total"]
    return [
        mib(
            f"shared_n{n}_rss_mb",
            f"{n} hotkey(s) as openai miners + one model server: total RSS",
            shared["rss"],
        ),
        mib(
            f"separate_n{n}_rss_mb",
            f"{n} hotkey(s) as llamacpp miners, one model each: total RSS",
            separate["rss"],
        ),
        mib(f"shared_n{n}_pss_mb", f"{n} hotkey(s), shared server: total PSS", shared["pss"]),
        mib(
            f"separate_n{n}_pss_mb",
            f"{n} hotkey(s), a model each: total PSS (mmapped weights shared)",
            separate["pss"],
        ),
    ]


def extra_hotkey_figures(biggest: int, steps: dict[int, dict[str, Any]]) -> list[Figure]:
    """What each hotkey beyond the first adds, both ways (none with only one size)."""
    figures: list[Figure] = []
    if biggest > 1:
        for way in ("shared", "separate"):
            for kind in ("rss", "pss", "uss"):
                extra = (steps[biggest][f"{way}_total"][kind] - steps[1][f"{way}_total"][kind]) / (
                    biggest - 1
                )
                what = f"{way}: {kind.upper()} added by each hotkey beyond the first (1 -> {biggest})"
                figures.append(mib(f"{way}_per_extra_hotkey_{kind}_mb", what, extra))
    return figures


def run(quick: bool) -> Result:
    """Add hotkeys one at a time; read memory at every size in ``sizes``."""
    started, before = time.time(), machine()
    cfg = Config.for_run(quick)
    missing = model_missing(NAME, TITLE, quick, started, before)
    if missing is not None:
        return missing
    with bench_tmp() as tmp, ExitStack() as stack:
        steps = measure(cfg, tmp, stack)
    figures = one_miner_figures(steps)
    figures += [f for n in cfg.sizes for f in size_figures(n, steps[n])]
    figures += extra_hotkey_figures(max(cfg.sizes), steps)
    notes = [
        "RSS counts the mmapped GGUF in every llamacpp miner; the page cache holds it once (see PSS)",
        "each miner answered one request before the reading (all answered: "
        f"{all(all(s['answered']) for s in steps.values())})",
    ]
    return make_result(
        NAME,
        TITLE,
        quick,
        started,
        figures,
        {"steps": steps, "n_ctx": N_CTX},
        notes=notes,
        machine_before=before,
    )


def main() -> int:
    return main_for(NAME, __doc__ or "", run)


if __name__ == "__main__":
    raise SystemExit(main())
