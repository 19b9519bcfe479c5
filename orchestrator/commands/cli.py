"""The command line: ``python -m orchestrator COMMAND [--config config/miners.yaml]``.

Each command is one function ``run(args, out, err) -> exit code`` in a module of this package, named
by its arguments in :mod:`orchestrator.commands.parser`. Errors are printed at this edge only, one
``error: ...`` line each on stderr. Exit codes: 0 ok, 1 the check failed (stale docker-compose.yml,
keys missing on a chain network), 2 the fleet file is invalid (or a usage error).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import TextIO

from orchestrator.commands.base import EXIT_OK as EXIT_OK  # the exit codes main returns
from orchestrator.commands.base import Runner
from orchestrator.commands.parser import build_parser
from orchestrator.errors import EXIT_FAILED as EXIT_FAILED
from orchestrator.errors import EXIT_INVALID as EXIT_INVALID
from orchestrator.errors import OrchestratorError
from orchestrator.fleet.load import FleetInvalid


def command(name: str) -> Runner:
    """The function a command runs (``module:function``). Its module is imported only now: the probe
    imports bittensor (0.8 s), the watch uvicorn, a swarm the docker SDK; ``validate`` needs none."""
    module, _, function = name.partition(":")
    run: Runner = getattr(importlib.import_module(f"orchestrator.commands.{module}"), function)
    return run


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command; every error the orchestrator raises on purpose becomes ``error:`` lines on
    stderr and its exit code here, in one place (2: fix the input; 1: something failed)."""
    args = build_parser().parse_args(argv)
    err = err or sys.stderr
    try:
        return command(args.run)(args, out or sys.stdout, err)
    except FleetInvalid as exc:
        for message in exc.messages():
            print(f"error: {message}", file=err)
        if len(exc.errors) > 1:  # one error is its own summary: one `error:` line
            print(f"error: {exc.file}: {len(exc.errors)} errors, nothing done", file=err)
        return exc.exit_code
    except OrchestratorError as exc:
        print(f"error: {exc}", file=err)
        return exc.exit_code
