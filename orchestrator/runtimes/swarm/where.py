"""Where a unit of a swarm runs: the node its task runs on now, else the node the fleet file pins it to
(the watch probes it there and the status shows it: :mod:`orchestrator.watch.placed`).

Before the runtime has seen a task, a unit pinned to one node is looked for at that node's address from
the fleet file.
"""

from __future__ import annotations

from typing import Any, Protocol

from orchestrator.fleet.load import LoadedFleet


class _Located(Protocol):
    def locate(self, name: str) -> Any: ...


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
