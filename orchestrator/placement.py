"""Where a miner or a model server may run in a Docker Swarm: one node by name, or any node with some
labels. Without ``nodes:`` in the fleet file the fleet is one machine and nothing here applies.

The swarm learns the fleet's node names as the node label ``minerfleet.node`` (``swarm up`` sets it,
with the labels written under each node), so a placement is a plain Swarm constraint on node labels:
hostnames need not be unique or stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the fleet's resolved units carry a Placement: import its schema for types only
    from orchestrator.fleet.sections import NodeSpec

NODE_LABEL = "minerfleet.node"  # the node label carrying the fleet's name of a node


@dataclass(frozen=True)
class Placement:
    """The nodes a unit may run on. ``candidates`` is empty when the fleet has no ``nodes:``."""

    node: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    candidates: tuple[str, ...] = ()

    def constraints(self) -> list[str]:
        """Swarm placement constraints (``node.labels.K == V``)."""
        if self.node is not None:
            return [f"node.labels.{NODE_LABEL} == {self.node}"]
        return [f"node.labels.{key} == {value}" for key, value in self.labels]

    def describe(self) -> str:
        if self.node is not None:
            return f"node {self.node}"
        if self.labels:
            return "nodes with " + ", ".join(f"{k}={v}" for k, v in self.labels)
        return "any node"


def matching(nodes: dict[str, NodeSpec], labels: dict[str, str]) -> tuple[str, ...]:
    """The nodes whose labels include every one of ``labels``, in file order."""
    return tuple(
        name for name, spec in nodes.items() if all(spec.labels.get(k) == v for k, v in labels.items())
    )


def node_labels(name: str, spec: NodeSpec) -> dict[str, str]:
    """The labels ``swarm up`` puts on a node: the fleet's name for it and its own labels."""
    return {NODE_LABEL: name, **spec.labels}
