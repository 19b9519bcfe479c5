"""The fleet loaded the way validators load it: K validators, each asking every chosen miner at once.

A validator's query round reaches many of a subnet's miners at the same moment, and several validators
overlap, so a fleet is loaded as a whole: K validators (one dendrite each) send one stream request to
every chosen miner together, K x M requests per round, for N rounds. As SN1's validators do, each
validator asks its own question in a round, the same to every miner, and a new one the next round
(:func:`round_prompts`): a server that has just answered a question keeps its prompt cached, and one
question asked of everyone would measure that cache rather than the fleet. Each request is counted by
the capacity command's rules (:func:`orchestrator.probing.capacity.classify`), per miner and for the fleet.

Beside it, in the same run, each model server the chosen miners use is asked *on its own* (no miner,
no axon) at the concurrency its miners had (K x its miners), with the same chat, ``max_tokens`` and
temperature the miners send and the same cut (the miners' deadline): what the server gives is the
ceiling the fleet's figures are read against.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import aiohttp

from orchestrator.fleet.load import LoadedFleet, Miner
from orchestrator.probing.capacity import (
    DEFAULT_MARGIN,
    CapacityReport,
    cut_after,
    format_table,
    percentile,
    summarize,
)
from orchestrator.probing.probe import Prober
from orchestrator.probing.reports import CHARS_PER_TOKEN, ProbeReport, ProbeTarget
from orchestrator.probing.targets import targets
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


@dataclass(frozen=True)
class FleetLoadReport:
    """Every chosen miner under K validators at once, the fleet's totals, and each server alone."""

    validators: int
    rounds: int
    timeout: float
    miners: list[CapacityReport]
    servers: list[ServerAlone] = field(default_factory=list)
    round_walls: list[float] = field(default_factory=list)  # each round: first send to the last byte

    @property
    def requests(self) -> int:
        return sum(m.requests for m in self.miners)

    @property
    def answered(self) -> int:
        return sum(m.answered for m in self.miners)

    @property
    def empty_200(self) -> int:
        """Answers with status 200 that carried no text: never an answer."""
        return sum(m.outcomes.get("empty", 0) for m in self.miners)

    @property
    def tokens_per_s(self) -> float:
        """Every model's tokens over the rounds' wall time (``echo`` streams the prompt back: no model)."""
        tokens = sum((m.tokens_per_s or 0.0) * m.wall_s for m in self.miners if m.backend != "echo")
        wall = sum(self.round_walls)
        return tokens / wall if wall > 0 else 0.0

    def served_by(self, server: ServerAlone) -> list[CapacityReport]:
        return [m for m in self.miners if m.name in server.miners]

    def ratio(self, server: ServerAlone) -> float | None:
        """Tokens/s of the server's miners under the fleet's load over the server's own at that load."""
        through = sum(m.tokens_per_s or 0.0 for m in self.served_by(server))
        return through / server.tokens_per_s if server.tokens_per_s else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": "fleet",
            "validators": self.validators,
            "rounds": self.rounds,
            "timeout": self.timeout,
            "tokens_per_s_estimate": f"characters / {CHARS_PER_TOKEN:g}",
            "fleet": {
                "requests": self.requests,
                "answered": self.answered,
                "empty_200": self.empty_200,
                "tokens_per_s": self.tokens_per_s,
            },
            "miners": [m.as_dict() for m in self.miners],
            "servers": [{**s.as_dict(), "fleet_ratio": self.ratio(s)} for s in self.servers],
        }


async def fleet_round(
    probers: Sequence[Prober], chosen: Sequence[ProbeTarget], prompts: Sequence[str]
) -> tuple[list[list[ProbeReport]], float]:
    """One round: every validator asks every chosen miner at once (its own question, ``prompts[i]``);
    the reports per miner and the wall."""
    started = time.monotonic()
    asks = [
        prober.stream(target, target.protocol, question)
        for prober, question in zip(probers, prompts, strict=True)
        for target in chosen
    ]
    reports = await asyncio.gather(*asks)
    wall = time.monotonic() - started
    per_miner: list[list[ProbeReport]] = [[] for _ in chosen]
    for i, report in enumerate(reports):
        per_miner[i % len(chosen)].append(report)
    return per_miner, wall


async def load_fleet(
    loaded: LoadedFleet,
    host: str,
    names: Sequence[str],
    wallets: Sequence[Any],
    rounds: int,
    timeout: float,
    prompt: str,
    *,
    servers_alone: bool = True,
    same_question: bool = False,
) -> FleetLoadReport:
    """K validators (one per wallet) asking every chosen miner at once, N rounds; then each server alone."""
    chosen = targets(loaded, host, names)
    probers = [Prober(wallet, prompt, timeout, max_concurrency=len(chosen)) for wallet in wallets]
    batches: list[list[list[ProbeReport]]] = [[] for _ in chosen]
    walls: list[list[float]] = [[] for _ in chosen]  # per miner: its requests' first send to its last byte
    round_walls: list[float] = []
    used = _servers_of(loaded, [t.name for t in chosen])
    offset = random.randrange(1 << 16)  # fresh questions each run; the server alone gets others again
    try:
        for index in range(rounds):
            if index:
                await asyncio.sleep(SETTLE)
            for server, _ in used:  # every round starts on idle servers, as the first one does
                await until_idle(host, server.spec.port)
            prompts = (
                [prompt] * len(probers)
                if same_question
                else round_prompts(prompt, len(probers), index, offset)
            )
            per_miner, round_wall = await fleet_round(probers, chosen, prompts)
            round_walls.append(round_wall)
            for i, reports in enumerate(per_miner):
                batches[i].append(reports)
                # All of a round's requests leave together: a miner's wall is its slowest answer, not the
                # round's (a slower miner beside it would dilute its tokens/s).
                walls[i].append(max((r.elapsed for r in reports), default=0.0))
    finally:
        for prober in probers:
            await prober.aclose()
    miners = [
        summarize(target, batches[i], walls[i], cut_after(timeout, _margin(loaded.miner(target.name))))
        for i, target in enumerate(chosen)
    ]
    servers = []
    if servers_alone:
        for server, users in used:
            await until_idle(host, server.spec.port)
            servers.append(
                await server_alone(
                    loaded,
                    server,
                    users,
                    host,
                    len(wallets),
                    rounds,
                    timeout,
                    prompt,
                    None if same_question else offset + 128,
                )
            )
    return FleetLoadReport(len(wallets), rounds, timeout, miners, servers, round_walls)


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


def _margin(miner: Miner) -> float:
    margin = miner.options.deadline_margin
    return DEFAULT_MARGIN if margin is None else margin


def _servers_of(loaded: LoadedFleet, names: Sequence[str]) -> list[tuple[Any, tuple[str, ...]]]:
    """Each model server used by the chosen miners, with those miners."""
    out = []
    for server in loaded.model_servers:
        users = tuple(name for name in names if loaded.miner(name).model_server == server.name)
        if users:
            out.append((server, users))
    return out


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
    cut = cut_after(timeout, _margin(miner))
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


def print_fleet(report: FleetLoadReport, out: TextIO, *, as_json: bool, prompt: str) -> None:
    if as_json:
        out.write(json.dumps({**report.as_dict(), "prompt": prompt}, indent=2) + "\n")
    else:
        out.write(format_fleet(report, format_table(report.miners, report.timeout)) + "\n")


def format_fleet(report: FleetLoadReport, table: str) -> str:
    """The per-miner table (the capacity command's), then the fleet's totals and each server alone."""
    lines = [table, ""]
    lines.append(
        f"fleet: {report.validators} validators x {len(report.miners)} miners at once, "
        f"{report.rounds} round(s): {report.answered}/{report.requests} answered with text, "
        f"{report.empty_200} empty 200s, ~{report.tokens_per_s:.1f} tok/s from its models"
    )
    for server in report.servers:
        through = sum(m.tokens_per_s or 0.0 for m in report.served_by(server))
        ratio = report.ratio(server)
        p90 = "-" if server.first_chunk_p90 is None else f"{server.first_chunk_p90:.2f}s"
        lines.append(
            f"model server {server.name} on its own, {server.concurrency} streams at once: "
            f"{server.answered}/{server.requests} with text, first text p90 {p90}, "
            f"~{server.tokens_per_s or 0:.1f} tok/s; through its miners ({', '.join(server.miners)}) "
            f"~{through:.1f} tok/s = {'-' if ratio is None else f'{ratio:.2f}'} of it"
        )
    return "\n".join(lines)
