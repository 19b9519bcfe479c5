"""Rolling updates with supervisord: which programs changed, and replacing them a batch at a time."""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Sequence
from typing import Any

from orchestrator.probing.reports import ProbeTarget


class SupervisorUpdater:
    """supervisord: ``reloadConfig`` says which programs changed (a miner's program carries the hash of
    its rendered settings); a program is replaced by removing and adding its group."""

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy
        self._diff: tuple[list[str], list[str], list[str]] | None = None

    def _reload(self) -> tuple[list[str], list[str], list[str]]:
        if self._diff is None:
            added, changed, removed = self.proxy.supervisor.reloadConfig()[0]
            self._diff = (list(added), list(changed), list(removed))
        return self._diff

    def prepare(self, miners: Sequence[str]) -> list[str]:
        added, changed, removed = self._reload()
        others = [n for n in [*added, *changed] if n not in miners]
        for name in [*removed, *others]:
            self._remove(name)
        for name in others:
            self.proxy.supervisor.addProcessGroup(name)
        return sorted([*others, *removed])

    def changed(self, miners: Sequence[str]) -> list[str]:
        added, changed, _ = self._reload()
        infos = {i["name"]: i for i in self.proxy.supervisor.getAllProcessInfo()}
        stopped = [n for n in miners if infos.get(n, {}).get("statename") not in ("RUNNING", "STARTING")]
        return [n for n in miners if n in added or n in changed or n in stopped]

    def replace(self, names: Sequence[str]) -> None:
        for name in names:
            self._remove(name)
            self.proxy.supervisor.addProcessGroup(name)  # autostart: it starts with the new settings

    def locate(self, target: ProbeTarget) -> ProbeTarget:
        return target

    def finish(self) -> None:
        pass

    def _remove(self, name: str) -> None:
        try:
            self.proxy.supervisor.stopProcessGroup(name, True)
        except xmlrpc.client.Fault:
            pass  # not running, or not there at all
        try:
            self.proxy.supervisor.removeProcessGroup(name)
        except xmlrpc.client.Fault:
            pass
