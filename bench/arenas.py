"""A llamacpp miner's malloc arenas: one (the miner's setting), two, or glibc's default, side by side.

llama.cpp's sampler takes ~3 MiB per token, in whichever glibc arena the generating thread holds, and an
arena keeps what it once held. The miner runs on one arena (``bound_malloc_arenas`` in
``services/miner/app.py``; docs/ARCHITECTURE.md, "Memory of a miner"). This asks what that costs and what
it saves: each variant runs in a fresh process, loads the bundled GGUF through the miner's own
``LlamaCppBackend`` (one thread, as in tests) and streams the same answers (same questions, seeds and
lengths) while the event loop keeps making small objects, the way the axon's loop does between pieces.
Reported per variant: pieces per second, how far the process's memory rose after the first two answers,
and the non-main arenas left in ``/proc/self/smaps``; and the one-arena / two-arena throughput ratio,
paired per round. Rounds alternate the variants' order. Run:

    python -m bench.arenas            # three rounds of 12 answers each (~6 min on 2 cores)
    python -m bench.arenas --quick    # one round of 5 answers
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench._common import GGUF, ROOT, Figure, Result, machine, main_for, make_result, progress, python
from bench.harness import alternating, model_missing

NAME = "arenas"
TITLE = "A llamacpp miner's malloc arenas: one (shipped) vs two vs glibc's default"
VARIANTS: dict[str, int | None] = {"one": 1, "two": 2, "default": None}
WARM = 2  # answers before the memory baseline: the model's and the sampler's first blocks
MAX_TOKENS = 48
HEAP_ALIGN = 64 << 20  # a non-main glibc arena is a heap reserved on a 64 MiB boundary
CHILD_TIMEOUT_S = 600.0


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def non_main_arenas(smaps: str) -> int:
    """Anonymous read-write mappings that start on a 64 MiB boundary: glibc's non-main heaps."""
    count = 0
    for line in smaps.splitlines():
        head = line.split()
        if len(head) < 5 or "-" not in head[0] or ":" in head[0]:
            continue  # a field line ("Rss: ..."), not a mapping's header
        start = int(head[0].split("-")[0], 16)
        anonymous = len(head) == 5 and head[4] == "0"
        count += anonymous and head[1].startswith("rw") and start % HEAP_ALIGN == 0
    return count


def _own_arenas() -> int:
    with open("/proc/self/smaps", encoding="ascii", errors="replace") as f:
        return non_main_arenas(f.read())


async def _answers(arenas: int | None, answers: int) -> dict[str, Any]:
    from services.miner.app import bound_malloc_arenas
    from services.miner.backends.base import GenerationRequest
    from services.miner.backends.llamacpp import LlamaCppBackend, LlamaCppSettings
    from services.miner.chat import ChatMessage

    capped = bound_malloc_arenas(arenas) if arenas is not None else False
    backend = LlamaCppBackend(LlamaCppSettings(model_path=GGUF, n_threads=1, n_ctx=512, seed=0))
    backend.load()
    ticks = 0

    async def event_loop_work() -> None:
        nonlocal ticks
        while True:
            _ = [f"{i}:{ticks}" for i in range(200)]
            ticks += 1
            await asyncio.sleep(0.001)

    loop_task = asyncio.create_task(event_loop_work())
    pieces, started, baseline = 0, 0.0, 0.0
    for i in range(answers):
        if i == WARM:
            pieces, started, baseline = 0, time.perf_counter(), _rss_mib()
        chat = [ChatMessage(role="user", content=f"Tell me something about the number {i}.")]
        request = GenerationRequest(chat=chat, max_tokens=MAX_TOKENS, temperature=0.7, seed=i)
        async for _piece in backend.stream(request):
            pieces += 1
    elapsed = time.perf_counter() - started
    loop_task.cancel()
    return {
        "capped": capped,
        "pieces_per_s": pieces / elapsed,
        "rss_growth_mib": _rss_mib() - baseline,
        "non_main_arenas": _own_arenas(),
    }


def child(arenas: str, answers: str) -> int:
    """``python -m bench.arenas --child ARENAS ANSWERS``: one variant, its result as a JSON line."""
    print(json.dumps(asyncio.run(_answers(None if arenas == "default" else int(arenas), int(answers)))))
    return 0


def one_variant(variant: str, answers: int) -> dict[str, Any]:
    arenas = VARIANTS[variant]
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    argv = [python(), "-m", "bench.arenas", "--child", str(arenas or "default"), str(answers)]
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=True
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def figures(rounds: list[dict[str, dict[str, Any]]]) -> list[Figure]:
    out = []
    for variant in VARIANTS:
        runs = [r[variant] for r in rounds]
        out += [
            Figure.of(
                f"{variant}_pieces_per_s",
                f"pieces a second, {variant} arena setting",
                [x["pieces_per_s"] for x in runs],
                "/s",
            ),
            Figure.of(
                f"{variant}_rss_growth_mib",
                f"memory risen after the first {WARM} answers, {variant}",
                [x["rss_growth_mib"] for x in runs],
                "MiB",
            ),
            Figure.of(
                f"{variant}_non_main_arenas",
                f"non-main arenas in smaps at the end, {variant}",
                [x["non_main_arenas"] for x in runs],
                "",
            ),
        ]
    ratios = [r["one"]["pieces_per_s"] / r["two"]["pieces_per_s"] for r in rounds]
    out.append(Figure.of("one_over_two_pieces_per_s", "one arena's throughput / two arenas'", ratios, "x"))
    return out


def run(quick: bool) -> Result:
    started, before = time.time(), machine()
    skipped = model_missing(NAME, TITLE, quick, started, before, hint="make model")
    if skipped is not None:
        return skipped
    n_rounds, answers = (1, WARM + 3) if quick else (3, WARM + 10)
    rounds: list[dict[str, dict[str, Any]]] = []
    for index in range(n_rounds):
        measured: dict[str, dict[str, Any]] = {}
        for variant in alternating(list(VARIANTS), index):
            progress(f"round {index + 1}/{n_rounds}: {variant}")
            measured[variant] = one_variant(variant, answers)
        rounds.append(measured)
    details = {"answers": answers, "warm": WARM, "max_tokens": MAX_TOKENS, "rounds": rounds}
    return make_result(NAME, TITLE, quick, started, figures(rounds), details, machine_before=before)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3])
    return main_for(NAME, __doc__ or "", run)


if __name__ == "__main__":
    sys.exit(main())
