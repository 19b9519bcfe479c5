"""The docker compose runtime: the engine API for the watch, ``docker compose`` for rollouts."""

from __future__ import annotations

from typing import TextIO

from orchestrator.fleet.load import LoadedFleet
from orchestrator.runtimes.compose.runtime import DockerRuntime
from orchestrator.runtimes.compose.updater import ComposeUpdater
from orchestrator.runtimes.spec import RuntimeSpec


def _runtime(loaded: LoadedFleet) -> DockerRuntime:
    return DockerRuntime(loaded.fleet.project)


def _updater(loaded: LoadedFleet, manager: str | None, out: TextIO) -> ComposeUpdater:
    return ComposeUpdater(loaded)


# Inside the compose network every miner and model server is reachable by its service name.
SPEC = RuntimeSpec("docker", _runtime, _updater, probes_by_service=True)
