"""What every command shares: its signature, the exit codes, loading the fleet file, common arguments."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeAlias

from orchestrator.fleet.load import DEFAULT_FLEET_FILE, LoadedFleet, load_fleet

EXIT_OK = 0

Runner = Callable[[argparse.Namespace, TextIO, TextIO], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def load(args: argparse.Namespace, *, check_files: bool = True) -> LoadedFleet:
    """Load the fleet file named by ``--config`` (``FleetInvalid`` is reported by ``main``)."""
    return load_fleet(args.config, args.project_dir, check_files=check_files)


def add_command(
    sub: Subparsers, name: str, run: str, help: str, *, fleet: bool = True
) -> argparse.ArgumentParser:
    """Register a command whose ``run`` is the function of that name in ``orchestrator.commands.<module>``
    (``run`` is ``module:function``); ``fleet=True`` gives it ``--config`` and ``--project-dir``."""
    parser = sub.add_parser(name, help=help, description=help)
    if fleet:
        parser.add_argument(
            "--config", type=Path, default=DEFAULT_FLEET_FILE, help="the fleet file (default: %(default)s)"
        )
        parser.add_argument(
            "--project-dir",
            type=Path,
            default=None,
            help="where docker-compose.yml goes and relative paths start (default: the current directory)",
        )
    parser.set_defaults(run=run)
    return parser


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_miner_choice(parser: argparse.ArgumentParser, verb: str, per: str) -> None:
    """``--miner`` (repeatable), ``--host`` and ``--timeout``: which miners, where, how long each ``per``."""
    parser.add_argument(
        "--miner", action="append", default=[], metavar="NAME", help=f"{verb} only this miner (repeatable)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="where the miners' axon ports are reachable (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help=f"seconds per {per} (default: probe.timeout)"
    )


def unknown_miners(args: argparse.Namespace, loaded: LoadedFleet, err: TextIO) -> bool:
    """Whether ``--miner`` names a miner the fleet file lacks (said on ``err``)."""
    unknown = [name for name in args.miner if name not in {m.name for m in loaded.miners}]
    if unknown:
        print(f"error: no miner named {', '.join(unknown)} in {args.config}", file=err)
    return bool(unknown)
