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
from bench.harness import PerRound, per_round_figures, probe_dendrite
from services.miner.client import axon_info, make_synapse, stream_once

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


@dataclass
class EchoRuns:
    """Part 2's raw measurements: per batch size, one dict per round; and the attempts sent again."""

    words: str
    per_batch: dict[int, list[dict[str, float]]]
    failed_attempts: dict[str, int]


def echo_envs(echo_words: int, echo_batches: tuple[int, ...], wallets: Any) -> list[dict[str, str]]:
    """One echo miner per batch size."""
    return [
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


def echo_round(answer: MinerAnswer, words: str) -> dict[str, float]:
    """One streamed echo, as recorded."""
    result, elapsed, outcome = answer.result, answer.elapsed, answer.outcome
    return {
        "elapsed": elapsed,
        "ttfc": result.first_chunk_after or elapsed,
        "pieces": outcome[0],
        "chunks": outcome[1],
        "bytes": outcome[2],
        "client_chunks": len(result.chunks),
        "complete": float(result.completion == words),
    }


async def stream_echoes(
    wallets: Any, miners: list[MinerProcess], echo_batches: tuple[int, ...], rounds: int, runs: EchoRuns
) -> None:
    """A warm-up request to each miner, then ``rounds`` rounds (the batch sizes' order rotating)."""
    by_batch = dict(zip(echo_batches, miners, strict=True))
    async with probe_dendrite(wallets) as dendrite:
        for miner in miners:  # warm-up
            await miner_generation(dendrite, miner, wallets.miner_hotkey, "warm up")
        names = [str(b) for b in echo_batches]
        for _, order in rotations(names, rounds):
            for name in order:
                miner = by_batch[int(name)]
                answer = await miner_generation(dendrite, miner, wallets.miner_hotkey, runs.words)
                runs.failed_attempts[name] += answer.failed_attempts
                runs.per_batch[int(name)].append(echo_round(answer, runs.words))


def echo_measure(
    echo_words: int, rounds: int, echo_batches: tuple[int, ...], tmp: Path, wallets: Any
) -> EchoRuns:
    """Start one echo miner per batch size, stream ``echo_words`` words from each, round after round."""
    words = " ".join(f"w{i:05d}" for i in range(echo_words))
    envs = echo_envs(echo_words, echo_batches, wallets)
    runs = EchoRuns(words, {b: [] for b in echo_batches}, {str(b): 0 for b in echo_batches})
    with started_miners(tmp, envs) as miners:
        asyncio.run(stream_echoes(wallets, miners, echo_batches, rounds, runs))
    return runs


def echo_figures(per_batch: dict[int, list[dict[str, float]]]) -> list[Figure]:
    """Chunks/s, pieces/s and MB/s of each batch size, over its rounds."""
    figures: list[Figure] = []
    for batch, runs in per_batch.items():
        figures += per_round_figures(
            runs,
            [
                PerRound(
                    f"echo_b{batch}_chunks_per_s",
                    f"echo, batch {batch}: chunks sent per second (miner-side count / client-side elapsed)",
                    lambda r: r["chunks"] / r["elapsed"],
                    "chunks/s",
                ),
                PerRound(
                    f"echo_b{batch}_pieces_per_s",
                    f"echo, batch {batch}: pieces (words, the echo backend's tokens) streamed per second",
                    lambda r: r["pieces"] / r["elapsed"],
                    "pieces/s",
                ),
                PerRound(
                    f"echo_b{batch}_mb_per_s",
                    f"echo, batch {batch}: completion MB per second through axon -> dendrite",
                    lambda r: r["bytes"] / r["elapsed"] / 1e6,
                    "MB/s",
                ),
            ],
        )
    return figures


def echo_details(echo_words: int, rounds: int, runs: EchoRuns) -> dict[str, Any]:
    return {
        "words": echo_words,
        "prompt_bytes": len(runs.words.encode()),
        "rounds": rounds,
        "runs": {str(b): r for b, r in runs.per_batch.items()},
        "failed_attempts_resent": runs.failed_attempts,
        "all_complete": all(r["complete"] == 1.0 for rs in runs.per_batch.values() for r in rs),
    }


def echo_part(
    echo_words: int, echo_rounds: int, echo_batches: tuple[int, ...], tmp: Path, wallets: Any
) -> tuple[list[Figure], dict[str, Any]]:
    """Part 2: echo miners stream ``echo_words`` words back with each batch size, ``echo_rounds`` times."""
    runs = echo_measure(echo_words, echo_rounds, echo_batches, tmp, wallets)
    return echo_figures(runs.per_batch), echo_details(echo_words, echo_rounds, runs)
