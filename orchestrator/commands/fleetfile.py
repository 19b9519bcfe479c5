"""The commands about the fleet file and what is made from it: ``validate``, ``render``, ``wallets``,
``init``, ``images``, ``prometheus-config`` and ``schema``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TextIO

from orchestrator.commands.base import EXIT_OK, load
from orchestrator.errors import EXIT_FAILED
from orchestrator.fleet import json_schema
from orchestrator.provision.model import bundled_models_needed, ensure_gguf
from orchestrator.provision.wallets import container_user, ensure_wallets, in_container_view
from orchestrator.render import compose_staleness, describe, render, write
from orchestrator.render.prometheus import RULES_DIR, prometheus_config
from services.miner.settings import Network


def validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    loaded = load(args)
    miners = ", ".join(f"{m.name}:{m.axon_port} ({m.backend.value})" for m in loaded.miners)
    print(
        f"ok: {args.config}: network {loaded.fleet.network.value}, {len(loaded.miners)} miners: {miners}",
        file=out,
    )
    stale = compose_staleness(loaded)
    if stale.stale:
        print(f"error: {stale.message}", file=err)
        return EXIT_FAILED
    if stale.message:
        print(f"note: {stale.message}", file=err)
    return EXIT_OK


def render_files(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # The rendered files name keys and models by path only (the miners read them at start-up), so
    # rendering needs neither: a fresh clone renders, and `init` or `make up` provides them.
    loaded = load(args, check_files=False)
    files = render(loaded, python=args.python, llama_server=args.llama_server)
    if args.check:
        stale = [
            path for path, text in files.items()
            if not (loaded.project_dir / path).is_file()
            or (loaded.project_dir / path).read_text(encoding="utf-8") != text
        ]  # fmt: skip
        for path in stale:
            print(f"error: {path} is not up to date: run `python -m orchestrator render`", file=err)
        return EXIT_FAILED if stale else EXIT_OK
    for line in describe(loaded, write(loaded, files)):
        print(line, file=out)
    return EXIT_OK


def wallets(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # The files that do not exist yet are what this command creates: don't require them.
    loaded = load(args, check_files=False)
    report = ensure_wallets(loaded, give=args.hand_over)
    for line in report.lines:
        print(line, file=out)
    if report.missing:
        print(
            "error: some keys are missing; run the commands above, then `python -m orchestrator validate`",
            file=err,
        )
        return EXIT_FAILED
    return EXIT_OK


def init(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """What the stack needs before it starts, idempotently: the local hotkeys (chain networks: none, and
    no wallet is mounted) and the bundled model. The compose stack's one-shot `init` service runs this,
    so a plain `docker compose up` works right after a clone."""
    loaded = in_container_view(load(args, check_files=False))
    state = os.environ.get("MINERFLEET_STATE")
    if state and os.geteuid() == 0:  # compose: the folder docker made (root's) becomes the orchestrator's
        Path(state).parent.mkdir(parents=True, exist_ok=True)
        os.chown(Path(state).parent, *container_user())
    if loaded.fleet.network != Network.local:
        # No wallet is mounted into init on a chain network: the keys are the operator's (btcli), and
        # `python -m orchestrator wallets` checks them on the host; each miner names a missing one.
        print(f"keys: network {loaded.fleet.network.value}: checked on the host, not here", file=out)
        report = None
    else:
        report = ensure_wallets(loaded)
        for line in report.lines:
            print(line, file=out)
    if report is not None and report.missing:
        print(
            f"error: the fleet's keys are missing or unreadable (network {loaded.fleet.network.value}); "
            "run the commands above on the host, then start again",
            file=err,
        )
        return EXIT_FAILED
    for place in bundled_models_needed(loaded):
        shown = place.relative_to(loaded.project_dir) if place.is_relative_to(loaded.project_dir) else place
        written = ensure_gguf(place, install=True)
        print(f"{'created' if written else 'ok     '} {shown} (sha256 ok)", file=out)
    return EXIT_OK


def prometheus(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """A Prometheus configuration for a Prometheus on this host: the fleet through the status API."""
    loaded = load(args, check_files=False)
    address = args.status_address or f"127.0.0.1:{loaded.fleet.status_api.port}"
    rules = (loaded.project_dir / RULES_DIR / "rules.yml").resolve()
    out.write(prometheus_config(address, [str(rules)], project=loaded.fleet.project))
    return EXIT_OK


def images(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The images the fleet's services use, as scripts/images.sh names them (`make up` builds only these)."""
    loaded = load(args, check_files=False)
    used = {miner.image.value for miner in loaded.miners} | {s.image.value for s in loaded.model_servers}
    names = [name for name in ("cpu", "cuda", "hf") if name in used] + ["orchestrator"]
    out.write(" ".join(names + (["prometheus"] if args.monitoring else [])) + "\n")
    return EXIT_OK


def schema(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    out.write(json.dumps(json_schema(), indent=2) + "\n")
    return EXIT_OK
