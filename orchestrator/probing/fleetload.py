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
from dataclasses import dataclass, field
from typing import Any, TextIO

from orchestrator.fleet.load import LoadedFleet
from orchestrator.probing.capacity import (
    CapacityReport,
    cut_after,
    format_table,
    summarize,
)
from orchestrator.probing.probe import Prober
from orchestrator.probing.reports import CHARS_PER_TOKEN, ProbeReport, ProbeTarget
from orchestrator.probing.serverload import (
    SETTLE,
    ServerAlone,
    deadline_margin,
    round_prompts,
    server_alone,
    until_idle,
)
from orchestrator.probing.targets import targets


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
    used = _servers_of(loaded, [t.name for t in chosen])
    offset = random.randrange(1 << 16)  # fresh questions each run; the server alone gets others again
    try:
        batches, walls, round_walls = await _rounds(
            probers, chosen, used, host, rounds, prompt, None if same_question else offset
        )
    finally:
        for prober in probers:
            await prober.aclose()
    miners = [
        summarize(
            target, batches[i], walls[i], cut_after(timeout, deadline_margin(loaded.miner(target.name)))
        )
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


async def _rounds(
    probers: Sequence[Prober],
    chosen: Sequence[ProbeTarget],
    used: Sequence[tuple[Any, tuple[str, ...]]],
    host: str,
    rounds: int,
    prompt: str,
    offset: int | None,
) -> tuple[list[list[list[ProbeReport]]], list[list[float]], list[float]]:
    """The N rounds on idle servers: each miner's reports per round, its walls, each round's wall (each
    validator its own question from ``offset``, or all the same ``prompt`` when it is None)."""
    batches: list[list[list[ProbeReport]]] = [[] for _ in chosen]
    walls: list[list[float]] = [[] for _ in chosen]  # per miner: its requests' first send to its last byte
    round_walls: list[float] = []
    for index in range(rounds):
        if index:
            await asyncio.sleep(SETTLE)
        for server, _ in used:  # every round starts on idle servers, as the first one does
            await until_idle(host, server.spec.port)
        prompts = (
            [prompt] * len(probers) if offset is None else round_prompts(prompt, len(probers), index, offset)
        )
        per_miner, round_wall = await fleet_round(probers, chosen, prompts)
        round_walls.append(round_wall)
        for i, reports in enumerate(per_miner):
            batches[i].append(reports)
            # All of a round's requests leave together: a miner's wall is its slowest answer, not the
            # round's (a slower miner beside it would dilute its tokens/s).
            walls[i].append(max((r.elapsed for r in reports), default=0.0))
    return batches, walls, round_walls


def _servers_of(loaded: LoadedFleet, names: Sequence[str]) -> list[tuple[Any, tuple[str, ...]]]:
    """Each model server used by the chosen miners, with those miners."""
    out = []
    for server in loaded.model_servers:
        users = tuple(name for name in names if loaded.miner(name).model_server == server.name)
        if users:
            out.append((server, users))
    return out


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
