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


def test_no_module_branches_on_a_runtime_name() -> None:
    """What differs between runtimes lives in their specs: nowhere in the orchestrator is a runtime's
    name compared (``== "swarm"``, ``in ("docker", ...)``), so a new runtime needs no edit elsewhere."""
    import ast

    root = Path(__file__).resolve().parents[2] / "orchestrator"
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            for side in (node.left, *node.comparators):
                values = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                if any(isinstance(v, ast.Constant) and v.value in NAMES for v in values):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)
