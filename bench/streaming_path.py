"""The streaming benchmark's requests to a miner, and its part 2: the streaming path alone (echo miners,
no model, batch sizes 1, 12 and 200: chunks/s and MB/s of axon -> dendrite). See bench/streaming.py."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import LOCALHOST, Figure, MinerProcess, free_port, miner_env, started_miners
from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once

REQUEST_TIMEOUT = 120.0
# The miner logs one line per request: "... N pieces in M chunks, B bytes, first chunk ..."
_OUTCOME = re.compile(r"(\d+) pieces in (\d+) chunks, (\d+) bytes")


def outcomes(miner: MinerProcess) -> list[tuple[int, int, int]]:
    """(pieces, chunks, bytes) of every request the miner has finished, from its log."""
    return [(int(p), int(c), int(b)) for p, c, b in _OUTCOME.findall(miner.log)]


@dataclass
class MinerAnswer:
    """One measured request to a miner: the stream, its time, and the miner's own count of it."""

    result: Any  # services.miner.client.StreamResult
    elapsed: float
    outcome: tuple[int, int, int]  # pieces, chunks, bytes (from the miner's log)
    failed_attempts: int


async def miner_generation(dendrite: Any, miner: MinerProcess, hotkey: str, prompt: str) -> MinerAnswer:
    """Stream ``prompt`` from ``miner``; retried (at most twice) when no answer came back at all.

    A pooled connection that the miner's server closed after its keep-alive timeout (5 s) can fail
    the next request before it reaches the miner: that is the client's race, not a streaming cost, so
    such an attempt is counted apart and sent again.
    """
    target = axon_info(LOCALHOST, miner.port, hotkey)
    failed = 0
    while True:
        seen = len(outcomes(miner))
        synapse = make_synapse("prompting", prompt, timeout=REQUEST_TIMEOUT)
        started = time.monotonic()
        result = await stream_once(dendrite, target, synapse, REQUEST_TIMEOUT)
        elapsed = time.monotonic() - started
        if (result.ok and result.completion) or failed >= 2:
            break
        failed += 1
    # The miner logs a request's outcome just after the stream ends: wait for that line (bounded).
    deadline = time.monotonic() + 3.0
    logged = outcomes(miner)
    while len(logged) <= seen and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        logged = outcomes(miner)
    outcome = logged[-1] if len(logged) > seen else (0, 0, 0)
    return MinerAnswer(result, elapsed, outcome, failed)


def rotations(items: list[str], rounds: int) -> Iterator[tuple[int, list[str]]]:
    """Each round runs every variant once; the order rotates so none always goes first."""
    for index in range(rounds):
        shift = index % len(items)
        yield index, items[shift:] + items[:shift]


def echo_part(
    echo_words: int, echo_rounds: int, echo_batches: tuple[int, ...], tmp: Path, wallets: Any
) -> tuple[list[Figure], dict[str, Any]]:
    """Part 2: echo miners stream ``echo_words`` words back with each batch size, ``echo_rounds`` times."""
    words = " ".join(f"w{i:05d}" for i in range(echo_words))
    envs = [
        miner_env(
            wallets,
            free_port(),
            name=f"echo-b{batch}",
            backend="echo",
            streaming_batch_size=str(batch),
            max_tokens=str(echo_words + 10),
            log_level="info",
        )
        for batch in echo_batches
    ]
    per_batch: dict[int, list[dict[str, float]]] = {b: [] for b in echo_batches}
    failed_attempts = {str(b): 0 for b in echo_batches}
    with started_miners(tmp, envs) as miners:
        by_batch = dict(zip(echo_batches, miners, strict=True))

        async def measure() -> None:
            dendrite = make_dendrite(wallets.wallet("probe"))
            try:
                for miner in miners:  # warm-up
                    await miner_generation(dendrite, miner, wallets.miner_hotkey, "warm up")
                names = [str(b) for b in echo_batches]
                for _, order in rotations(names, echo_rounds):
                    for name in order:
                        miner = by_batch[int(name)]
                        answer = await miner_generation(dendrite, miner, wallets.miner_hotkey, words)
                        failed_attempts[name] += answer.failed_attempts
                        result, elapsed, outcome = answer.result, answer.elapsed, answer.outcome
                        per_batch[int(name)].append(
                            {
                                "elapsed": elapsed,
                                "ttfc": result.first_chunk_after or elapsed,
                                "pieces": outcome[0],
                                "chunks": outcome[1],
                                "bytes": outcome[2],
                                "client_chunks": len(result.chunks),
                                "complete": float(result.completion == words),
                            }
                        )
            finally:
                await dendrite.aclose_session()

        asyncio.run(measure())

    figures: list[Figure] = []
    for batch, runs in per_batch.items():
        figures.append(
            Figure.of(
                f"echo_b{batch}_chunks_per_s",
                f"echo, batch {batch}: chunks sent per second (miner-side count / client-side elapsed)",
                [r["chunks"] / r["elapsed"] for r in runs],
                "chunks/s",
            )
        )
        figures.append(
            Figure.of(
                f"echo_b{batch}_pieces_per_s",
                f"echo, batch {batch}: pieces (words, the echo backend's tokens) streamed per second",
                [r["pieces"] / r["elapsed"] for r in runs],
                "pieces/s",
            )
        )
        figures.append(
            Figure.of(
                f"echo_b{batch}_mb_per_s",
                f"echo, batch {batch}: completion MB per second through axon -> dendrite",
                [r["bytes"] / r["elapsed"] / 1e6 for r in runs],
                "MB/s",
            )
        )
    details = {
        "words": echo_words,
        "prompt_bytes": len(words.encode()),
        "rounds": echo_rounds,
        "runs": {str(b): runs for b, runs in per_batch.items()},
        "failed_attempts_resent": failed_attempts,
        "all_complete": all(r["complete"] == 1.0 for runs in per_batch.values() for r in runs),
    }
    return figures, details
