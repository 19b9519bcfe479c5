"""One error base for the orchestrator: every error it raises on purpose is permanent or temporary and
carries its exit code, mapped once at the CLI edge."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import orchestrator
from orchestrator.commands.cli import main
from orchestrator.errors import EXIT_FAILED, EXIT_INVALID, OrchestratorError


def _orchestrator_exceptions() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(orchestrator.__path__, "orchestrator."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


def test_every_orchestrator_error_derives_from_the_one_base() -> None:
    errors = _orchestrator_exceptions()
    assert len(errors) >= 8
    strays = [e.__qualname__ for e in errors if not issubclass(e, OrchestratorError)]
    assert strays == []
    assert all(isinstance(e.permanent, bool) and e.exit_code in (EXIT_FAILED, EXIT_INVALID) for e in errors)  # type: ignore[attr-defined]


def test_the_cli_maps_errors_to_exit_codes_in_one_place(tmp_path: Path, capsys: object) -> None:
    broken = tmp_path / "miners.yaml"
    broken.write_text("network: local\nminers: 3\n", encoding="utf-8")
    assert main(["validate", "--config", str(broken), "--project-dir", str(tmp_path)]) == EXIT_INVALID
    fleet = tmp_path / "ok.yaml"
    fleet.write_text(
        "network: local\nwallet_path: ./w\nminers:\n  - {name: a, wallet: f, hotkey: a, backend: echo}\n",
        encoding="utf-8",
    )
    # No probe hotkey: the health command cannot sign; a failure (1), not bad input (2).
    assert main(["health", "--config", str(fleet), "--project-dir", str(tmp_path)]) == EXIT_FAILED
