"""The Docker Swarm runtime: the stack deployed, watched and rolled out through a manager's engine."""

from __future__ import annotations

from functools import partial
from typing import TextIO

from orchestrator.fleet.load import LoadedFleet
from orchestrator.runtimes.base import Runtime
from orchestrator.runtimes.spec import Locate, RuntimeSpec, streaming_within
from orchestrator.runtimes.swarm.deploy import manager_engine
from orchestrator.runtimes.swarm.rollout import SwarmUpdater
from orchestrator.runtimes.swarm.runtime import SwarmRuntime
from orchestrator.runtimes.swarm.where import where


def _runtime(loaded: LoadedFleet) -> SwarmRuntime:
    engines = {name: node.engine for name, node in loaded.fleet.nodes.items() if node.engine}
    return SwarmRuntime(loaded.fleet.project, engines=engines)


def _updater(loaded: LoadedFleet, manager: str | None, out: TextIO) -> SwarmUpdater:
    return SwarmUpdater(loaded, manager_engine(manager), out, streaming_within(loaded))


def _locator(runtime: Runtime, loaded: LoadedFleet) -> Locate:
    assert isinstance(runtime, SwarmRuntime)
    return partial(where, runtime, loaded)


SPEC = RuntimeSpec("swarm", _runtime, _updater, locator=_locator)
