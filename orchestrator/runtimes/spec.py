"""What describes a runtime once: how the watch gets its :class:`Runtime`, how a rollout gets its
:class:`Updater`, and what else differs between runtimes. :mod:`orchestrator.runtimes.registry` lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO

from orchestrator.errors import PermanentError
from orchestrator.fleet.load import LoadedFleet
from orchestrator.probing.reports import ProbeTarget
from orchestrator.runtimes.base import Runtime

# Where a unit runs now: (node name, address), either None when the runtime cannot say.
Locate = Callable[[str], tuple[str | None, str | None]]


class RolloutError(PermanentError):
    """Nothing to roll back to, or the runtime refused a step."""


class Updater(Protocol):
    """How one runtime tells changed miners and replaces them (``python -m orchestrator rollout``)."""

    def prepare(self, miners: Sequence[str]) -> list[str]:
        """Apply every change but the miners' (model servers, the orchestrator); what it changed."""
        ...

    def changed(self, miners: Sequence[str]) -> list[str]:
        """The miners whose running settings or image differ from the rendered ones (or not running)."""
        ...

    def replace(self, names: Sequence[str]) -> None:
        """Replace these miners with the rendered settings (stop the old process, start the new)."""
        ...

    def locate(self, target: ProbeTarget) -> ProbeTarget:
        """Where the replaced miner answers now (on a swarm: its node's address)."""
        ...

    def finish(self) -> None:
        """The rollout is over, done or not (a swarm's updater closes its engine client)."""
        ...


@dataclass(frozen=True)
class RuntimeSpec:
    """One runtime, as the commands and the watch choose it by name (``--runtime NAME``)."""

    name: str
    # The runtime the watch drives, for this fleet.
    runtime: Callable[[LoadedFleet], Runtime]
    # The updater a rollout drives: the fleet, the manager's engine (``--manager``; swarm), the output.
    updater: Callable[[LoadedFleet, str | None, TextIO], Updater]
    # The watch runs beside the units (the compose network): it reaches each unit by its service name.
    probes_by_service: bool = False
    # Units run on several nodes: where each runs now, for the probes and the status (swarm).
    locator: Callable[[Runtime, LoadedFleet], Locate] | None = None


def streaming_within(loaded: LoadedFleet) -> float:
    """Seconds a replaced miner has to stream (``rollout.wait``; default: its start grace and a probe)."""
    fleet = loaded.fleet
    return fleet.rollout.wait or (fleet.restart.start_grace + fleet.probe.timeout)
