"""Each runtime is described once (its folder's SPEC, one registry line): the command line offers
exactly the registered names, and each spec builds the runtime of its own name."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from orchestrator.commands.parser import build_parser
from orchestrator.fleet.load import LoadedFleet
from orchestrator.runtimes.registry import NAMES, RUNTIMES, runtime_spec
from orchestrator.runtimes.supervisord.updater import SupervisorUpdater


def _loaded() -> LoadedFleet:
    fleet = SimpleNamespace(project="minerfleet", supervisor=SimpleNamespace(port=9001), nodes={})
    return cast(LoadedFleet, SimpleNamespace(fleet=fleet, project_dir=Path(".")))


def test_the_command_line_offers_the_registered_runtimes() -> None:
    assert NAMES == ("docker", "supervisor", "swarm")
    parser = build_parser()
    for command in ("watch", "rollout"):
        for name in NAMES:
            assert parser.parse_args([command, "--runtime", name]).runtime == name
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--runtime", "kubernetes"])


@pytest.mark.parametrize("name", NAMES)
def test_each_spec_builds_the_runtime_of_its_name(name: str) -> None:
    spec = runtime_spec(name)
    runtime: Any = spec.runtime(_loaded())
    assert spec.name == name and runtime.name == name


def test_what_differs_between_runtimes_is_said_in_their_specs() -> None:
    assert [n for n, s in RUNTIMES.items() if s.probes_by_service] == ["docker"]
    assert [n for n, s in RUNTIMES.items() if s.locator is not None] == ["swarm"]
    updater = runtime_spec("supervisor").updater(_loaded(), None, cast(Any, None))
    assert isinstance(updater, SupervisorUpdater)
    updater.finish()  # nothing to close
