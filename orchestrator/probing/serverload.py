"""A model server loaded on its own, straight (no miner, no axon), at the concurrency its miners had:
the ceiling ``capacity --fleet`` reads the fleet's figures against (:mod:`orchestrator.probing.fleetload`),
and the questions both ask, a new one per validator and round.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from orchestrator.fleet.load import LoadedFleet, Miner
from orchestrator.probing.capacity import DEFAULT_MARGIN, cut_after, percentile
from orchestrator.probing.reports import CHARS_PER_TOKEN
from services.miner.backends.openai import llama_server_load
from services.miner.chat import build_chat
from services.miner.settings import MinerSettings

SETTLE = 1.0  # seconds between rounds, so what a cut left running has stopped before the next round
# What the questions of a round are about: each validator's question starts with its own subject, so no
# two validators' prompts share more than the system prompt (as different validators' challenges).
SUBJECTS = (
    "volcanoes", "the printing press", "photosynthesis", "jazz", "glaciers", "the Roman roads",
    "bees", "tides", "the telegraph", "coral reefs", "chess openings", "bread yeast", "comets",
    "the Silk Road", "lighthouses", "octopuses", "monsoons", "the abacus", "wind turbines", "deserts",
    "the piano", "vaccines", "rainbows", "the compass", "penguins", "earthquakes", "paper money",
    "the moon's phases", "honey", "bridges", "the violin", "caves",
)  # fmt: skip


ASPECTS = ("history", "science", "uses", "dangers", "future", "economics", "art", "myths")


def round_prompts(prompt: str, validators: int, round_index: int, offset: int = 0) -> list[str]:
    """Each validator's question in round ``round_index``: ``prompt`` about a topic of its own, a new one
    each round (256 topics: a run starts at a random ``offset`` so that a second run does not find the
    first one's questions cached in the server's slots)."""
    topics = [f"the {aspect} of {subject}" for subject in SUBJECTS for aspect in ASPECTS]
    start = offset + round_index * validators
    return [f"About {topics[(start + i) % len(topics)]}: {prompt}" for i in range(validators)]


IDLE_WITHIN = 60.0  # seconds to wait for a model server to finish what a round left there (bounded)


@dataclass(frozen=True)
class ServerAlone:
    """One model server asked directly at its miners' concurrency (the same run's ceiling)."""

    name: str
    url: str
    miners: tuple[str, ...]
    concurrency: int
    rounds: int
    requests: int
    answered: int  # a stream that carried text before the cut
    first_chunk_p50: float | None
    first_chunk_p90: float | None
    tokens_per_s: float | None  # characters / 4 over the rounds' wall time, as the miners' figure
    wall_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def until_idle(host: str, port: int, within: float = IDLE_WITHIN) -> None:
    """Wait until a llama-server has no request in a slot or waiting (its /metrics), at most ``within``.

    A stream its client abandoned ends at the server's next token; one still waiting in its queue only
    when it would have started. Measuring on top of that leftover work would count it against the run.
    """
    deadline = time.monotonic() + within
    url = f"http://{host}:{port}/metrics"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError):
                return  # no metrics to read: nothing to wait for
            load = llama_server_load(text)
            if load is None or not any(load):
                return
            await asyncio.sleep(0.2)


def deadline_margin(miner: Miner) -> float:
    margin = miner.options.deadline_margin
    return DEFAULT_MARGIN if margin is None else margin


def request_body(miner: Miner, prompt: str, model: str) -> dict[str, Any]:
    """What the miner itself sends the server for a one-message prompt (chat, max_tokens, temperature)."""
    defaults = MinerSettings.model_fields
    options = miner.options
    system = options.system_prompt if options.system_prompt is not None else defaults["system_prompt"].default
    chat = build_chat(["user"], [prompt], system_prompt=system, protocol=miner.protocols[0])
    return {
        "model": model,
        "messages": [m.as_dict() for m in chat],
        "max_tokens": options.max_tokens
        if options.max_tokens is not None
        else defaults["max_tokens"].default,
        "temperature": options.temperature
        if options.temperature is not None
        else defaults["temperature"].default,
        "stream": True,
    }


async def server_alone(
    loaded: LoadedFleet,
    server: Any,
    users: Sequence[str],
    host: str,
    validators: int,
    rounds: int,
    timeout: float,
    prompt: str,
    offset: int | None = 0,
) -> ServerAlone:
    """The server asked directly by K x its miners streams at once, read until the miners' cut: each round
    K questions (each validator's, once per each of its miners), new ones (``offset``), so that what the
    miners' rounds left in its slots' cache does not favour it."""
    url = f"http://{host}:{server.spec.port}/v1/chat/completions"
    miner = loaded.miner(users[0])
    cut = cut_after(timeout, deadline_margin(miner))
    concurrency = validators * len(users)
    firsts: list[float] = []
    chars = answered = 0
    wall = 0.0
    async with direct_session(concurrency) as session:
        for index in range(rounds):
            if index:
                await asyncio.sleep(SETTLE)
            bodies = [
                request_body(miner, question, server.spec.model)
                for question in (
                    [prompt] * validators
                    if offset is None
                    else round_prompts(prompt, validators, index, offset)
                )
                for _ in users
            ]
            started = time.monotonic()
            results = await asyncio.gather(*(stream_direct(session, url, body, cut) for body in bodies))
            wall += time.monotonic() - started
            for first, text in results:
                if first is not None:
                    firsts.append(first)
                if text.strip():
                    answered += 1
                chars += len(text)
    return ServerAlone(
        name=server.name,
        url=url,
        miners=tuple(users),
        concurrency=concurrency,
        rounds=rounds,
        requests=concurrency * rounds,
        answered=answered,
        first_chunk_p50=percentile(firsts, 50),
        first_chunk_p90=percentile(firsts, 90),
        tokens_per_s=chars / CHARS_PER_TOKEN / wall if wall > 0 else None,
        wall_s=wall,
    )


def direct_session(limit: int = 100) -> aiohttp.ClientSession:
    """A client session for streams straight to a llama-server: a new connection per request (it closes
    a connection after a stream, and a reused one fails at once), as many at once as ``limit``."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=True))


async def stream_direct(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], cut: float
) -> tuple[float | None, str]:
    """One streamed chat completion, read until it ends or ``cut`` seconds pass: (first text after, text)."""
    started = time.monotonic()
    first: float | None = None
    parts: list[str] = []
    try:
        async with asyncio.timeout(cut):
            async with session.post(url, json=body) as response:
                if response.status != 200:
                    return None, ""
                async for raw in response.content:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:") or line == "data: [DONE]":
                        continue
                    choices = json.loads(line[5:]).get("choices") or [{}]
                    text = (choices[0].get("delta") or {}).get("content") or ""
                    if text:
                        first = first if first is not None else time.monotonic() - started
                        parts.append(text)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        pass  # cut at the miners' deadline (as they would be), or the server failed: what came counts
    return first, "".join(parts)
