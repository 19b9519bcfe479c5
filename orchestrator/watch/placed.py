"""The watch on a runtime whose units run on several nodes (a swarm): probes go to each unit's node,
and the status shows where each one runs. The runtime says where (its spec's ``locator``).

A miner is reached the way validators reach it: at the address of the node its task runs on, on its
axon port (host-mode publishing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from orchestrator.runtimes.spec import Locate
from orchestrator.status.fleetstatus import FleetStatus, UnitStatus, Where

Snapshot = Callable[[], FleetStatus]
U = TypeVar("U", bound=UnitStatus)


class _Target(Protocol):
    name: str
    host: str


T = TypeVar("T", bound=_Target)


class AtNode:
    """Wraps a prober (``probe``) or a model-server checker (``check``): each target's host becomes the
    address of the node its unit runs on."""

    def __init__(self, inner: Any, locate: Locate) -> None:
        self.inner = inner
        self.locate = locate

    def _moved(self, target: T) -> T:
        _, address = self.locate(target.name)
        return replace(target, host=address) if address else target  # type: ignore[type-var]

    async def probe(self, target: Any) -> Any:
        return await self.inner.probe(self._moved(target))

    async def check(self, target: Any) -> Any:
        return await self.inner.check(self._moved(target))

    async def alive(self, target: Any) -> Any:
        return await self.inner.alive(self._moved(target))

    async def first_chunk(self, target: Any) -> Any:
        return await self.inner.first_chunk(self._moved(target))


def with_nodes(snapshot: Snapshot, locate: Locate) -> Snapshot:
    """The status with each miner's and model server's node and address."""

    def at(unit: U) -> U:
        return replace(unit, where=Where(*locate(unit.name)))

    def view() -> FleetStatus:
        status = snapshot()
        return replace(
            status,
            miners=tuple(at(m) for m in status.miners),
            model_servers=tuple(at(s) for s in status.model_servers),
        )

    return view
