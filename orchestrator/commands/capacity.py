"""``python -m orchestrator capacity``: K concurrent signed requests through each miner, N rounds; with
``--fleet``, K validators asking every miner at once (the measurements: :mod:`orchestrator.probing`)."""

from __future__ import annotations

import argparse
import asyncio
from typing import TextIO

from orchestrator.commands.base import EXIT_OK, load, unknown_miners
from orchestrator.errors import EXIT_INVALID
from orchestrator.fleet.load import LoadedFleet
from orchestrator.probing.capacity import print_reports, run_capacity
from orchestrator.probing.fleetload import load_fleet, print_fleet
from orchestrator.probing.targets import probe_wallet


def command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """A measurement: exit 0 whatever it finds; 2 for an invalid fleet file, 1 when nothing could be sent."""
    loaded = load(args, check_files=False)
    if unknown_miners(args, loaded, err):
        return EXIT_INVALID
    probe = loaded.fleet.probe
    timeout, prompt = args.timeout or probe.timeout, args.prompt or probe.prompt
    if args.fleet:
        return _fleet_capacity(args, loaded, timeout, prompt, out)
    reports = run_capacity(
        loaded, args.host, args.miner, args.concurrency, args.rounds, timeout, prompt, args.door
    )
    print_reports(
        reports, out, as_json=args.json, concurrency=args.concurrency, rounds=args.rounds, timeout=timeout,
        prompt=prompt,
    )  # fmt: skip
    return EXIT_OK


def _fleet_capacity(
    args: argparse.Namespace, loaded: LoadedFleet, timeout: float, prompt: str, out: TextIO
) -> int:
    """``capacity --fleet``: K validators each asking every chosen miner at once, each server alone beside."""
    wallets = [probe_wallet(loaded)] * args.concurrency
    report = asyncio.run(
        load_fleet(
            loaded, args.host, args.miner, wallets, args.rounds, timeout, prompt,
            same_question=args.same_question,
        )
    )  # fmt: skip
    print_fleet(report, out, as_json=args.json, prompt=prompt)
    return EXIT_OK
