"""Checks of swarm placement: ``nodes:``, and each miner's and model server's ``node``/``node_labels``."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from orchestrator.fleet.checks.base import Checks
from orchestrator.fleet.options import MinerOptions, MinerSpec
from orchestrator.placement import Placement, matching


class PlacementChecks(Checks):
    """Where each unit may run on a swarm (one machine: anywhere, which is the one)."""

    def _place_miner(self, spec: MinerSpec, options: MinerOptions, i: int) -> Placement:
        node, labels = options.node, options.node_labels
        if spec.node is not None:  # the miner's own node wins over labels from `defaults:`
            labels = spec.node_labels
        elif spec.node_labels is not None:
            node = None
        node_at = ("miners", i) if spec.node is not None else ("defaults",)
        labels_at = ("miners", i) if spec.node_labels is not None else ("defaults",)
        return self._place(node, labels, node_at, labels_at)

    def _place(
        self,
        node: str | None,
        labels: dict[str, str] | None,
        node_at: tuple[str | int, ...],
        labels_at: tuple[str | int, ...],
    ) -> Placement:
        """Check a ``node:``/``node_labels:`` pair against ``nodes:``; the nodes it allows."""
        nodes = self.fleet.nodes
        if node is None and labels is None:
            return Placement(candidates=tuple(nodes))
        if not nodes:
            key = "node" if node is not None else "node_labels"
            self.error(
                self.at(*(node_at if node is not None else labels_at), key),
                f"`{key}:` places it on a swarm node, but the fleet has no `nodes:`",
                "list the swarm's machines under `nodes:` (name: {address: ...}), or remove it",
            )
            return Placement()
        if node is not None and labels is not None:
            self.error(
                self.at(*labels_at, "node_labels"),
                "both node and node_labels are set",
                "keep one: `node:` pins it to one node, `node_labels:` lets it run on any node that has them",
            )
        if node is not None:
            if node not in nodes:
                close = difflib.get_close_matches(node, list(nodes), n=1, cutoff=0.6)
                fix = f"did you mean {close[0]!r}?" if close else f"use one of: {', '.join(nodes)}"
                self.error(self.at(*node_at, "node"), f"unknown node {node!r}", fix)
                return Placement(node=node)
            return Placement(node=node, candidates=(node,))
        assert labels is not None
        found = matching(nodes, labels)
        if not found:
            wanted = ", ".join(f"{k}={v}" for k, v in labels.items())
            self.error(
                self.at(*labels_at, "node_labels"),
                f"no node under `nodes:` has the labels {wanted}",
                "add them to a node's `labels:`, or change node_labels",
            )
        return Placement(labels=tuple(sorted(labels.items())), candidates=found)

    def _check_node_gpus(
        self, placement: Placement, gpus: Sequence[int], path: tuple[str | int, ...]
    ) -> None:
        """A unit with GPUs runs only where every node it may land on has those GPU ids."""
        for node in placement.candidates:
            missing = sorted(set(gpus) - set(self.fleet.nodes[node].gpus))
            if missing:
                self.error(
                    self.at(*path),
                    f"node {node} has no GPU {', '.join(map(str, missing))} "
                    f"(its gpus: {list(self.fleet.nodes[node].gpus)})",
                    f"list the GPU under nodes.{node}.gpus, or place it on a node that has it",
                )
                return

    def _check_nodes(self) -> None:
        seen: dict[str, str] = {}
        for name, spec in self.fleet.nodes.items():
            if spec.address in seen:
                self.error(
                    self.at("nodes", name, "address"),
                    f"address {spec.address} is already node {seen[spec.address]}'s",
                    "give each node its own address (the one it joined the swarm with)",
                )
            seen.setdefault(spec.address, name)
            self._check_gpus(spec.gpus, ("nodes", name, "gpus"))
