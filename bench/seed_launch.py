"""Starting ``python -m bench.seed_style_miner`` (the miner as the seed wrote it) for a benchmark."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench._common import GGUF, LOCALHOST, ROOT, Wallets, free_port, stop_process, wait_for_port
from bench.harness import probe_dendrite
from services.miner.client import axon_info, make_synapse, stream_once


@contextmanager
def seed_style_miner(
    tmp: Path, wallets: Wallets, threads: int, max_tokens: int, *extra: str
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``python -m bench.seed_style_miner`` on a free port: (port, process); stopped afterwards."""
    port = free_port()
    log = (tmp / f"seed-style-{port}.log").open("wb")
    args = [
        sys.executable,
        "-m",
        "bench.seed_style_miner",
        "--port",
        str(port),
        "--wallet-path",
        str(wallets.path),
    ]
    args += [
        "--model",
        str(GGUF),
        "--n-threads",
        str(threads),
        "--max-tokens",
        str(max_tokens),
        *extra,
    ]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 120, proc)
        yield port, proc
    finally:
        stop_process(proc)
        log.close()


def seed_without_lock(tmp: Path, wallets: Wallets, threads: int, max_tokens: int, prompt: str) -> str:
    """The seed exactly (no lock): two concurrent requests; how the process ends up."""
    with seed_style_miner(tmp, wallets, threads, max_tokens, "--no-lock") as (port, proc):

        async def two() -> None:
            async with probe_dendrite(wallets) as dendrite:
                target = axon_info(LOCALHOST, port, wallets.miner_hotkey)
                await asyncio.gather(
                    *(
                        stream_once(dendrite, target, make_synapse("prompting", prompt, timeout=30), 30)
                        for _ in range(2)
                    )
                )

        asyncio.run(two())
        try:
            code = proc.wait(3)
        except subprocess.TimeoutExpired:
            return "survived"
    if code < 0:
        return f"crashed ({signal.Signals(-code).name})"
    return f"exited with code {code}"
