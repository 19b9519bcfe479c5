"""One variant of ``bench.arenas`` in a process of its own: ``python -m bench.arenas_child ARENAS ANSWERS``.

The cap comes where the miner sets it: right after ``services.miner.app`` is imported (``main`` calls
``bound_malloc_arenas`` first thing) and before anything else is imported, since an arena that a thread
has made stays whatever the cap says later (``bench._common``'s imports start threads). ARENAS is a
number, or ``default`` for glibc's own limit. Prints the result as one JSON line.
"""

from __future__ import annotations

import sys

WARM = 2  # answers before the memory baseline: the model's and the sampler's first blocks
MAX_TOKENS = 48

if __name__ == "__main__":
    from services.miner.app import bound_malloc_arenas

    CAPPED = sys.argv[1] != "default" and bound_malloc_arenas(int(sys.argv[1]))

import asyncio  # noqa: E402 - after the cap, like everything below
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from bench._common import GGUF, self_memory  # noqa: E402


def arenas_in_use() -> int:
    """glibc's own count of this process's arenas (``malloc_stats`` writes one "Arena N:" each to fd 2)."""
    import tempfile

    from services.miner.app import libc

    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            libc().malloc_stats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        return sum(line.startswith(b"Arena ") for line in out.read().splitlines())


async def _answers(capped: bool, answers: int) -> dict[str, Any]:
    from services.miner.backends.base import GenerationRequest
    from services.miner.backends.llamacpp import LlamaCppBackend, LlamaCppSettings
    from services.miner.chat import ChatMessage

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
            pieces, started, baseline = 0, time.perf_counter(), self_memory()["rss"]
        chat = [ChatMessage(role="user", content=f"Tell me about the number {i}.")]
        request = GenerationRequest(chat=chat, max_tokens=MAX_TOKENS, temperature=0.7, seed=i)
        async for _piece in backend.stream(request):
            pieces += 1
    elapsed = time.perf_counter() - started
    loop_task.cancel()
    return {
        "capped": capped,
        "pieces": pieces,
        "pieces_per_s": pieces / elapsed,
        "rss_growth_mib": self_memory()["rss"] - baseline,
        "arenas": arenas_in_use(),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_answers(CAPPED, int(sys.argv[2])))))
