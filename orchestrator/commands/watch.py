"""``python -m orchestrator watch``: the watch loop with its status API; ``status``: what it says."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from orchestrator.commands.base import EXIT_OK, load
from orchestrator.status.chainview import status_view
from orchestrator.watch.statefile import state_path
from orchestrator.watch.supervise import fetch_status, format_status, run_watch


def watch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    loaded = load(args, check_files=False)
    return run_watch(
        loaded,
        runtime=args.runtime,
        status_host=args.status_host,
        probe_host=args.probe_host,
        state_file=state_path(args.state, loaded.project_dir),
    )


def status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    loaded = load(args, check_files=False)
    fleet_status = fetch_status(args.url or f"http://127.0.0.1:{loaded.fleet.status_api.port}")
    chain = status_view(loaded)
    if args.json:
        document = fleet_status.to_json()
        if chain is not None:
            document["chain"] = chain[1]
        out.write(json.dumps(document, indent=2) + "\n")
    else:
        out.write(format_status(fleet_status) + "\n")
        if chain is not None:
            out.write(chain[0] + "\n")
    return EXIT_OK
