"""What every group of fleet checks shares: where a value was written, and how an error is recorded."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.fleet import located as yamlsource
from orchestrator.fleet.errors import FleetError, format_path
from orchestrator.fleet.resolved import (
    ModelServer,
)
from orchestrator.fleet.schema import Fleet
from services.miner.settings import Network


class Checks:
    """The state and helpers of :class:`~orchestrator.fleet.checks.Checker`, which is built from the
    check groups deriving from this class (miners, model servers, files)."""

    fleet: Fleet
    indexes: list[int]  # fleet.miners[k] is miners[indexes[k]] in the file
    doc: yamlsource.LocatedDocument
    project_dir: Path
    check_files: bool
    errors: list[FleetError]
    servers: dict[str, ModelServer]

    def error(self, where: tuple[int, str], problem: str, fix: str) -> None:
        self.errors.append(FleetError(where[0], where[1], problem, fix))

    def at(self, *path: str | int) -> tuple[int, str]:
        return self.doc.line_of(path), format_path(path)

    def miner_at(self, index: int, *sub: str) -> tuple[int, str]:
        """Where a miner's (possibly inherited) value was written: the miner, else ``defaults``."""
        own: tuple[str | int, ...] = ("miners", index, *sub)
        if self.doc.has(own):
            return self.at(*own)
        if sub and self.doc.has(("defaults", *sub)):
            return self.at("defaults", *sub)
        return self.doc.line_of(own), format_path(own)

    def own_at(self, index: int, sub: str) -> tuple[int, str]:
        """For something missing on a miner: its own ``sub`` section if it has one, else the miner."""
        if self.doc.has(("miners", index, sub)):
            return self.at("miners", index, sub)
        return self.at("miners", index)

    def _fix_for_hotkey(self, wallet: str, hotkey: str, *, probe: bool = False) -> str:
        if self.fleet.network == Network.local:
            return "run `python -m orchestrator wallets` (creates the fleet's missing hotkeys, unencrypted)"
        made = f"run `btcli wallet new_hotkey --wallet.name {wallet} --wallet.hotkey {hotkey}`"
        if probe:
            # The probe only signs the fleet's own health requests, which every miner admits by its
            # address: registering it would spend a registration fee for nothing.
            return f"{made} (the probe's key needs no registration)"
        return f"{made} and register it on subnet {self.fleet.netuid}"

    def _model_ref(self, name: str | None, where: tuple[int, str], user: str, used: dict[str, Any]) -> bool:
        """Check a reference to a named model; remember where it is used."""
        if name is None:
            return False
        if name not in self.fleet.models:
            known = sorted(self.fleet.models)
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            fix = (
                f"did you mean {close[0]!r}?"
                if close
                else (
                    f"define it under `models:` (defined: {', '.join(known)})"
                    if known
                    else "define it under `models:`, e.g. `models: {gemma: {gguf: gemma-3-270m-q4_k_m}}`"
                )
            )
            self.error(where, f"unknown model {name!r}", fix)
            return False
        used.setdefault(name, (where[0], user))
        return True

    def _check_gpus(self, gpus: Sequence[int], path: tuple[str | int, ...]) -> None:
        seen: set[int] = set()
        for k, gpu in enumerate(gpus):
            if gpu < 0 or gpu in seen:
                self.error(
                    self.at(*path, k),
                    f"GPU id {gpu} is {'negative' if gpu < 0 else 'listed twice'}",
                    "list each GPU id (0, 1, ...) once",
                )
            seen.add(gpu)
