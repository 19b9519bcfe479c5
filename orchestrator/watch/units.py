"""What the watch loop keeps per unit (:class:`Watched`), and what it needs from a prober and a model
server checker (tests pass fakes)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.policy import MinerRecord, RestartPolicy
from orchestrator.probing.modelservers import ServerReport, ServerTarget, Warmed
from orchestrator.probing.reports import ProbeReport, ProbeTarget
from orchestrator.status.fleetstatus import Role


async def wait(stop: asyncio.Event, timeout: float) -> bool:
    """Sleep ``timeout`` seconds or until ``stop`` is set; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout)
    return stop.is_set()


class Probe(Protocol):
    """What the watch needs from a prober (``orchestrator.probing.probe.Prober``); tests pass a fake."""

    async def probe(self, target: ProbeTarget) -> ProbeReport: ...

    async def alive(self, target: ProbeTarget) -> str | None:
        """None when the miner's HTTP server answers at all; else why not."""
        ...

    async def first_chunk(self, target: ProbeTarget) -> ProbeReport:
        """The first protocol's stream, read to its first chunk only (a recovery, followed at once)."""
        ...


class ServerHealth(Protocol):
    """What the watch needs to check a model server (``orchestrator.probing.modelservers.ServerChecker``)."""

    async def check(self, target: ServerTarget) -> ServerReport: ...

    async def warm(self, target: ServerTarget) -> Warmed:
        """One completion per slot at once (see ``orchestrator.probing.modelservers``)."""
        ...


@dataclass
class Watched:
    """One unit under watch: its policy numbers, where to probe it, and what we know."""

    target: ProbeTarget | ServerTarget
    policy: RestartPolicy
    record: MinerRecord
    role: Role = Role.miner
    last_probe: ProbeReport | ServerReport | None = None
    last_probe_at: float | None = None  # monotonic
    probing: bool = False
    last_alive_at: float | None = None  # monotonic: the last liveness check's end
    checking_alive: bool = False
    # A stream probe has passed since the process last started: only then can a liveness failure mean
    # a hang (before, an adopted container may still be loading its model, its port not yet open).
    proven: bool = False
    probe_requested: bool = False  # probe at the loop's next pass (its model server is back)
    log_tail: list[str] = field(default_factory=list)
