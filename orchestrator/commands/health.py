"""``python -m orchestrator health``: stream a real prompt through every miner and judge the answers."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from typing import Any, TextIO

from orchestrator.commands.base import EXIT_OK, load, unknown_miners
from orchestrator.errors import EXIT_FAILED, EXIT_INVALID
from orchestrator.fleet.load import LoadedFleet
from orchestrator.probing.probe import Prober
from orchestrator.probing.reports import ProbeReport, ProbeTarget, format_table
from orchestrator.probing.targets import probe_wallet, targets
from orchestrator.render import compose_staleness
from orchestrator.status.chainview import announced


async def check(
    loaded: LoadedFleet,
    host: str,
    names: Sequence[str] = (),
    timeout: float | None = None,
    chosen: Sequence[ProbeTarget] | None = None,
) -> list[ProbeReport]:
    """Every miner (or the ``names``) probed at ``host``, or the ``chosen`` targets where they say."""
    probe = loaded.fleet.probe
    prober = Prober(probe_wallet(loaded), probe.prompt, timeout or probe.timeout, probe.max_concurrency)
    try:
        return await prober.probe_all(targets(loaded, host, names) if chosen is None else chosen)
    finally:
        await prober.aclose()


def print_reports(reports: list[ProbeReport], out: TextIO, *, as_json: bool, stale: str | None) -> None:
    if as_json:
        payload = {
            "healthy": all(r.healthy for r in reports),
            "stale_compose": stale,
            "miners": [r.as_dict() for r in reports],
        }
        out.write(json.dumps(payload, indent=2) + "\n")
    else:
        out.write(format_table(reports) + "\n")


def run_health(
    loaded: LoadedFleet,
    host: str,
    names: Sequence[str],
    timeout: float | None,
    chosen: Sequence[ProbeTarget] | None = None,
) -> list[ProbeReport]:
    return asyncio.run(check(loaded, host, names, timeout, chosen))


def command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # Files are checked by the probe itself (it needs hotkeys, not models): a fleet whose model file
    # moved must still be probed.
    loaded = load(args, check_files=False)
    if unknown_miners(args, loaded, err):
        return EXIT_INVALID
    stale = compose_staleness(loaded)
    if stale.stale:
        print(f"WARNING: {stale.message}", file=err)
    chosen: list[Any] | None = None
    unannounced: list[Any] = []
    if args.announced:
        chosen, unannounced = announced(loaded, args.host, args.miner)  # OrchestratorError: said, exit 1
    reports = run_health(loaded, args.host, args.miner, args.timeout, chosen) + unannounced
    print_reports(reports, out, as_json=args.json, stale=stale.message if stale.stale else None)
    return EXIT_OK if all(r.healthy for r in reports) else EXIT_FAILED
