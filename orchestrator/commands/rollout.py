"""``python -m orchestrator rollout``: apply a changed fleet file or new images a few miners at a time
(the rolling update itself: :mod:`orchestrator.runtimes.rollout`)."""

from __future__ import annotations

import argparse
from typing import TextIO

from orchestrator.commands.base import load
from orchestrator.fleet.load import load_fleet
from orchestrator.probing.targets import probe_wallet, targets
from orchestrator.runtimes.registry import runtime_spec
from orchestrator.runtimes.rollout import restore_previous, run_rollout, save_previous


def command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``rollout [--save | --rollback] [--runtime docker|supervisor|swarm] [--manager ENGINE]``."""
    loaded = load(args, check_files=False)
    if args.save:
        print(f"rollout: saved the running revision in {save_previous(loaded)}", file=err)
        return 0
    if args.rollback:
        restore_previous(loaded)
        loaded = load_fleet(loaded.path, loaded.project_dir, check_files=False)
    updater = runtime_spec(args.runtime).updater(loaded, args.manager, err)
    try:
        return run_rollout(
            loaded, updater, targets(loaded, args.host), probe_wallet(loaded), err, rollback=args.rollback
        )
    finally:
        updater.finish()
