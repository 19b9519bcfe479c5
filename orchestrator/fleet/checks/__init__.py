"""The checks across fields of a fleet file, after the schema: ``defaults`` merged into each miner,
the model servers and the miners using them, duplicate names, ports and hotkeys, backends and their
models, GPUs and images, and the files on disk (models, hotkeys, coldkeypubs) with the command that
creates what is missing."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.fleet import located as yamlsource
from orchestrator.fleet.checks.base import Checks
from orchestrator.fleet.checks.files import FileChecks
from orchestrator.fleet.checks.miners import MinerChecks
from orchestrator.fleet.checks.servers import ServerChecks
from orchestrator.fleet.errors import FleetError
from orchestrator.fleet.resolved import (
    LEGACY_MODEL_SERVER,
    Miner,
    ModelServer,
    display,
    looks_like_secret,
    resolve_path,
)
from orchestrator.fleet.schema import Fleet
from orchestrator.fleet.sections import (
    RESERVED_NAMES,
)

__all__ = [
    "LEGACY_MODEL_SERVER",
    "Checker",
    "Miner",
    "ModelServer",
    "display",
    "looks_like_secret",
    "resolve_path",
]


@dataclass
class _Owner:
    what: str
    line: int

    def __str__(self) -> str:
        return f"{self.what} (line {self.line})" if self.line else self.what


class _PortClaims:
    """Who holds each port on each node (``None``: the one machine); a second claim is an error."""

    def __init__(self, checks: Checks, every_node: tuple[str | None, ...]) -> None:
        self.checks = checks
        self.every_node = every_node
        self.owners: dict[tuple[str | None, int], _Owner] = {}

    def taken(self, port: int, nodes: Sequence[str | None] = ()) -> bool:
        return any((node, port) in self.owners for node in (tuple(nodes) or self.every_node))

    def claim(
        self, port: int, owner: _Owner, where: tuple[int, str], fix: str, nodes: Sequence[str | None] = ()
    ) -> None:
        """Claim ``port`` on ``nodes`` (default: every node a unit may run on)."""
        claiming = tuple(nodes) or self.every_node
        for node in claiming:
            if (node, port) in self.owners:
                on = f" on node {node}" if node is not None else ""
                self.checks.error(where, f"port {port} is already used{on} by {self.owners[node, port]}", fix)
                return
        for node in claiming:
            self.owners[node, port] = owner


@dataclass
class Checker(MinerChecks, ServerChecks, FileChecks):
    """The checks across fields, on a fleet that passed the schema; collects errors, never raises."""

    fleet: Fleet
    indexes: list[int]  # fleet.miners[k] is miners[indexes[k]] in the file
    doc: yamlsource.LocatedDocument
    project_dir: Path
    check_files: bool
    errors: list[FleetError] = field(default_factory=list)
    servers: dict[str, ModelServer] = field(default_factory=dict)

    def run(self) -> tuple[list[Miner], list[ModelServer]]:
        used_models: dict[str, tuple[int, str]] = {}  # model name -> where it is first used
        self.servers = self._check_model_servers(used_models)
        miners = []
        for spec, index in zip(self.fleet.miners, self.indexes, strict=True):
            miner = self._resolve(spec, index, used_models)
            if miner is not None:
                miners.append(miner)
        servers = [
            replace(server, users=tuple(m.name for m in miners if m.model_server == server.name))
            for server in self.servers.values()
        ]
        self._check_names(servers)
        self._check_nodes()
        self._check_ports(miners, servers)
        self._check_hotkeys(miners)
        if self.check_files:
            self._check_model_files(used_models)
            self._check_wallet_files(miners)
        return miners, servers

    def _check_names(self, servers: list[ModelServer]) -> None:
        taken = {server.service: f"model server {server.name!r}" for server in servers}
        first: dict[str, int] = {}
        for spec, i in zip(self.fleet.miners, self.indexes, strict=True):
            where = self.at("miners", i, "name")
            if spec.name in RESERVED_NAMES or spec.name in taken:
                owner = f" ({taken[spec.name]})" if spec.name in taken else ""
                self.error(
                    where,
                    f"the name {spec.name!r} is taken by a service of the stack{owner}",
                    "choose another name",
                )
            elif spec.name in first:
                self.error(
                    where,
                    f"duplicate miner name {spec.name!r} (first at line {first[spec.name]})",
                    "give each miner its own name",
                )
            else:
                first[spec.name] = where[0]

    def _check_ports(self, miners: list[Miner], servers: list[ModelServer]) -> None:
        # One machine: ports are unique in the fleet. A swarm: unique on each node a unit may run on.
        claims = _PortClaims(self, tuple(self.fleet.nodes) or (None,))
        self._claim_server_ports(claims, servers)
        for section, what in (("status_api", "the status API"), ("supervisor", "supervisord")):
            # the orchestrator runs on a manager: whichever node that is
            port = getattr(self.fleet, section).port
            written = self.doc.has((section, "port"))
            line, where = self.at(section, "port")
            owner = _Owner(what, line) if written else _Owner(f"{what} (default port)", 0)
            claims.claim(port, owner, (line, where), f"change {section}.port")
        clashed = self._claim_axon_ports(claims, miners)
        for miner in miners:
            if miner.name in clashed:  # two miners on one axon port: that error says it already
                continue
            claim = functools.partial(claims.claim, nodes=miner.placement.candidates)
            self._claim_metrics_port(miner, claim)
            if len(miner.own_ports) > 1:  # an HTTP door on a port of its own
                door_at = self.miner_at(miner.index, "http", "port")
                fix = "choose another http.port" + (
                    " (set in defaults: every miner gets the same one; set it per miner)"
                    if door_at[1].startswith("defaults")
                    else ""
                )
                door = miner.own_ports[1]
                claim(door, _Owner(f"the HTTP door of miner {miner.name!r}", door_at[0]), door_at, fix)

    def _claim_server_ports(self, claims: _PortClaims, servers: list[ModelServer]) -> None:
        for server in servers:
            line, where = self.at(*server.at, "port")
            what = "the model server" if server.at == ("model_server",) else f"model server {server.name!r}"
            if not self.doc.has((*server.at, "port")):
                line = self.doc.line_of(server.at)
                what += " (default port 8000)"
            owner = _Owner(what, line)
            claims.claim(
                server.spec.port, owner, (line, where), f"change {where}", server.placement.candidates
            )

    def _claim_axon_ports(self, claims: _PortClaims, miners: list[Miner]) -> set[str]:
        """Each miner's axon port; the miners whose port clashed (their other ports are not checked)."""
        clashed: set[str] = set()
        for miner in miners:
            if self.doc.has(("miners", miner.index, "axon_port")):
                where = self.at("miners", miner.index, "axon_port")
                fix = "choose another axon_port"
                what = f"miner {miner.name!r}"
            else:
                where = self.at("miners", miner.index)
                fix = "set an axon_port on this miner, or change port_base"
                what = f"miner {miner.name!r} (port_base + {miner.index})"
            if miner.axon_port > 65535:
                self.error(
                    where,
                    f"port {miner.axon_port} (port_base + {miner.index}) is over 65535",
                    "lower port_base",
                )
                continue
            if claims.taken(miner.axon_port, miner.placement.candidates):
                clashed.add(miner.name)
            claims.claim(miner.axon_port, _Owner(what, where[0]), where, fix, miner.placement.candidates)
        return clashed

    def _claim_metrics_port(self, miner: Miner, claim: Any) -> None:
        """A miner's metrics port clashes with no other port of the fleet, and exists."""
        port = miner.metrics_port
        if port is None:
            return
        if miner.options.metrics_port is not None:
            where = self.miner_at(miner.index, "metrics_port")
            what = f"the metrics of miner {miner.name!r}"
            fix = "choose another metrics_port" + (
                " (set in defaults: every miner gets the same one; set it per miner)"
                if where[1].startswith("defaults")
                else ""
            )
        else:
            where = self.at("miners", miner.index)
            what = f"the metrics of miner {miner.name!r} (axon_port + metrics_port_offset)"
            fix = "set a metrics_port on this miner, or change metrics_port_offset"
        if port > 65535:
            self.error(where, f"metrics port {port} (axon_port + metrics_port_offset) is over 65535", fix)
            return
        claim(port, _Owner(what, where[0]), where, fix)

    def _check_hotkeys(self, miners: list[Miner]) -> None:
        probe = self.fleet.probe
        probe_line = self.doc.line_of(("probe", "hotkey"))
        owners: dict[tuple[str, str], _Owner] = {
            (probe.wallet, probe.hotkey): _Owner("the probe", probe_line if self.doc.has(("probe",)) else 0)
        }
        for miner in miners:
            key = (miner.wallet, miner.hotkey)
            where = self.at("miners", miner.index, "hotkey")
            if key in owners:
                owner = owners[key]
                fix = (
                    "the probe needs a hotkey of its own: change this miner's hotkey or probe.hotkey"
                    if owner.what == "the probe"
                    else "each miner needs its own hotkey"
                )
                self.error(where, f"hotkey {miner.wallet}/{miner.hotkey} is already used by {owner}", fix)
            else:
                owners[key] = _Owner(f"miner {miner.name!r}", where[0])
