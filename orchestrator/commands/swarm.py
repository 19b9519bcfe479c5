"""``python -m orchestrator swarm up``: deploy on a Docker Swarm and wait until every miner streams;
``swarm down``: remove the stack (the runtime itself: :mod:`orchestrator.runtimes.swarm`)."""

from __future__ import annotations

import argparse
from typing import TextIO

from orchestrator.commands.base import EXIT_OK, load
from orchestrator.errors import EXIT_FAILED
from orchestrator.runtimes.swarm.deploy import swarm_down, swarm_up


def command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    loaded = load(args, check_files=False)
    if args.action == "up":
        ok = swarm_up(loaded, args.manager, args.orchestrator, args.timeout, out)
        if not ok:
            print(f"error: not every miner streams after {args.timeout:g} s (table above)", file=err)
        return EXIT_OK if ok else EXIT_FAILED
    return EXIT_FAILED if swarm_down(loaded, args.manager, args.timeout, out) else EXIT_OK
