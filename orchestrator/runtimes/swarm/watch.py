"""The watch loop on a swarm: probes go to each unit's node, and the status shows where each one runs.

A miner is reached the way validators reach it: at the address of the node its task runs on, on its
axon port (host-mode publishing). Before the runtime has seen a task, a unit pinned to one node is
looked for at that node's address from the fleet file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from orchestrator.fleet.load import LoadedFleet
from orchestrator.status.fleetstatus import FleetStatus, UnitStatus, Where

Snapshot = Callable[[], FleetStatus]
U = TypeVar("U", bound=UnitStatus)


class _Located(Protocol):
    def locate(self, name: str) -> Any: ...


class _Target(Protocol):
    name: str
    host: str


T = TypeVar("T", bound=_Target)


def _fleet_node(loaded: LoadedFleet, name: str) -> str | None:
    """The node a unit is pinned to in the fleet file (units are miners, or model servers by service)."""
    for miner in loaded.miners:
        if miner.name == name:
            return miner.placement.node
    for server in loaded.model_servers:
        if server.service == name:
            return server.placement.node
    return None


def where(runtime: _Located, loaded: LoadedFleet, name: str) -> tuple[str | None, str | None]:
    """(node name, address) of a unit: where its task runs now, else the node it is pinned to."""
    located = runtime.locate(name)
    if located is not None:
        return located.node, located.address
    node = _fleet_node(loaded, name)
    if node is not None and node in loaded.fleet.nodes:
        return node, loaded.fleet.nodes[node].address
    return None, None


class AtNode:
    """Wraps a prober (``probe``) or a model-server checker (``check``): each target's host becomes the
    address of the node its unit runs on."""

    def __init__(self, inner: Any, runtime: _Located, loaded: LoadedFleet) -> None:
        self.inner = inner
        self.runtime = runtime
        self.loaded = loaded

    def _moved(self, target: T) -> T:
        _, address = where(self.runtime, self.loaded, target.name)
        return replace(target, host=address) if address else target  # type: ignore[type-var]

    async def probe(self, target: Any) -> Any:
        return await self.inner.probe(self._moved(target))

    async def check(self, target: Any) -> Any:
        return await self.inner.check(self._moved(target))

    async def alive(self, target: Any) -> Any:
        return await self.inner.alive(self._moved(target))

    async def first_chunk(self, target: Any) -> Any:
        return await self.inner.first_chunk(self._moved(target))


def with_nodes(snapshot: Snapshot, runtime: _Located, loaded: LoadedFleet) -> Snapshot:
    """The status with each miner's and model server's node and address."""

    def at(unit: U) -> U:
        return replace(unit, where=Where(*where(runtime, loaded, unit.name)))

    def view() -> FleetStatus:
        status = snapshot()
        return replace(
            status,
            miners=tuple(at(m) for m in status.miners),
            model_servers=tuple(at(s) for s in status.model_servers),
        )

    return view
