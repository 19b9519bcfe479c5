"""The command line: ``python -m orchestrator COMMAND [--config config/miners.yaml]``.

Each command is one function ``run(args, out, err) -> exit code``, registered in :func:`build_parser`.
Errors are printed at this edge only, one ``error: ...`` line each on stderr. Exit codes: 0 ok,
1 the check failed (stale docker-compose.yml, keys missing on a chain network), 2 the fleet file is
invalid (or a usage error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from orchestrator.errors import EXIT_FAILED, EXIT_INVALID, OrchestratorError
from orchestrator.fleet.load import DEFAULT_FLEET_FILE, FleetInvalid, LoadedFleet, load_fleet
from orchestrator.runtimes.registry import NAMES
from services.miner.signed import SCHEMES

EXIT_OK = 0

Runner = Callable[[argparse.Namespace, TextIO, TextIO], int]


def _load(args: argparse.Namespace, err: TextIO, *, check_files: bool = True) -> LoadedFleet:
    """Load the fleet file named by ``--config`` (``FleetInvalid`` is reported by :func:`main`)."""
    return load_fleet(args.config, args.project_dir, check_files=check_files)


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from orchestrator.render import compose_staleness

    loaded = _load(args, err)
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


def cmd_render(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from orchestrator.render import describe, render, write

    # The rendered files name keys and models by path only (the miners read them at start-up), so
    # rendering needs neither: a fresh clone renders, and `init` or `make up` provides them.
    loaded = _load(args, err, check_files=False)
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


def cmd_wallets(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from orchestrator.provision.wallets import ensure_wallets

    # The files that do not exist yet are what this command creates: don't require them.
    loaded = _load(args, err, check_files=False)
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


def cmd_init(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """What the stack needs before it starts, idempotently: the local hotkeys (chain networks: none, and
    no wallet is mounted) and the bundled model. The compose stack's one-shot `init` service runs this,
    so a plain `docker compose up` works right after a clone."""
    from orchestrator.provision.model import bundled_models_needed, ensure_gguf
    from orchestrator.provision.wallets import container_user, ensure_wallets
    from orchestrator.watch.supervise import in_container_view
    from services.miner.settings import Network

    loaded = _load(args, err, check_files=False)
    loaded = in_container_view(loaded)
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


def cmd_health(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from orchestrator.commands.health import print_reports, run_health
    from orchestrator.render import compose_staleness

    # Files are checked by the probe itself (it needs hotkeys, not models): a fleet whose model file
    # moved must still be probed.
    loaded = _load(args, err, check_files=False)
    unknown = [name for name in args.miner if name not in {m.name for m in loaded.miners}]
    if unknown:
        print(f"error: no miner named {', '.join(unknown)} in {args.config}", file=err)
        return EXIT_INVALID
    stale = compose_staleness(loaded)
    if stale.stale:
        print(f"WARNING: {stale.message}", file=err)
    chosen: list[Any] | None = None
    unannounced: list[Any] = []
    if args.announced:
        from orchestrator.status.chainview import announced

        chosen, unannounced = announced(loaded, args.host, args.miner)  # OrchestratorError: said, exit 1
    reports = run_health(loaded, args.host, args.miner, args.timeout, chosen) + unannounced
    print_reports(reports, out, as_json=args.json, stale=stale.message if stale.stale else None)
    return EXIT_OK if all(r.healthy for r in reports) else EXIT_FAILED


def cmd_capacity(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """A measurement: exit 0 whatever it finds; 2 for an invalid fleet file, 1 when nothing could be sent."""
    from orchestrator.probing.capacity import print_reports, run_capacity

    loaded = _load(args, err, check_files=False)
    unknown = [name for name in args.miner if name not in {m.name for m in loaded.miners}]
    if unknown:
        print(f"error: no miner named {', '.join(unknown)} in {args.config}", file=err)
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
    import asyncio

    from orchestrator.probing.fleetload import load_fleet, print_fleet
    from orchestrator.probing.targets import probe_wallet

    wallets = [probe_wallet(loaded)] * args.concurrency
    report = asyncio.run(
        load_fleet(
            loaded, args.host, args.miner, wallets, args.rounds, timeout, prompt,
            same_question=args.same_question,
        )
    )  # fmt: skip
    print_fleet(report, out, as_json=args.json, prompt=prompt)
    return EXIT_OK


def cmd_rollout(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from orchestrator.commands.rollout import command

    return command(args, _load(args, err, check_files=False), err)


def cmd_watch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from orchestrator.watch.statefile import state_path
    from orchestrator.watch.supervise import run_watch

    loaded = _load(args, err, check_files=False)
    return run_watch(
        loaded,
        runtime=args.runtime,
        status_host=args.status_host,
        probe_host=args.probe_host,
        state_file=state_path(args.state, loaded.project_dir),
    )


def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from orchestrator.watch.supervise import fetch_status, format_status

    loaded = _load(args, err, check_files=False)
    status = fetch_status(args.url or f"http://127.0.0.1:{loaded.fleet.status_api.port}")
    from orchestrator.status.chainview import status_view

    chain = status_view(loaded)
    if args.json:
        document = status.to_json()
        if chain is not None:
            document["chain"] = chain[1]
        out.write(json.dumps(document, indent=2) + "\n")
    else:
        out.write(format_status(status) + "\n")
        if chain is not None:
            out.write(chain[0] + "\n")
    return EXIT_OK


def cmd_swarm(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``swarm up``: deploy on a Docker Swarm and wait until every miner streams; ``swarm down``: remove."""
    from orchestrator.runtimes.swarm.deploy import swarm_down, swarm_up

    loaded = _load(args, err, check_files=False)
    if args.action == "up":
        ok = swarm_up(loaded, args.manager, args.orchestrator, args.timeout, out)
        if not ok:
            print(f"error: not every miner streams after {args.timeout:g} s (table above)", file=err)
        return EXIT_OK if ok else EXIT_FAILED
    return EXIT_FAILED if swarm_down(loaded, args.manager, args.timeout, out) else EXIT_OK


def cmd_prometheus_config(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """A Prometheus configuration for a Prometheus on this host: the fleet through the status API."""
    from orchestrator.render.prometheus import RULES_DIR, prometheus_config

    loaded = _load(args, err, check_files=False)
    address = args.status_address or f"127.0.0.1:{loaded.fleet.status_api.port}"
    rules = (loaded.project_dir / RULES_DIR / "rules.yml").resolve()
    out.write(prometheus_config(address, [str(rules)], project=loaded.fleet.project))
    return EXIT_OK


def cmd_images(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The images the fleet's services use, as scripts/images.sh names them (`make up` builds only these)."""
    loaded = _load(args, err, check_files=False)
    used = {miner.image.value for miner in loaded.miners} | {s.image.value for s in loaded.model_servers}
    names = [name for name in ("cpu", "cuda", "hf") if name in used] + ["orchestrator"]
    out.write(" ".join(names + (["prometheus"] if args.monitoring else [])) + "\n")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from orchestrator.fleet import json_schema

    out.write(json.dumps(json_schema(), indent=2) + "\n")
    return EXIT_OK


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    run: Runner,
    help: str,
    *,
    fleet: bool = True,
) -> argparse.ArgumentParser:
    """Register a command; ``fleet=True`` gives it ``--config`` and ``--project-dir``."""
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_miner_choice(parser: argparse.ArgumentParser, verb: str, per: str) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator", description="Run a fleet of Bittensor streaming miners from one file."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_command(
        sub, "validate", cmd_validate, "check the fleet file; report every error with its line and fix"
    )
    render = add_command(
        sub, "render", cmd_render, "write config/generated/*.env, supervisord.conf and docker-compose.yml"
    )
    render.add_argument(
        "--python",
        default=".venv/bin/python",
        help="python that supervisord runs the miners with (relative to the project dir; %(default)s)",
    )
    render.add_argument(
        "--llama-server",
        default=os.environ.get("MINERFLEET_LLAMA_SERVER", "llama-server"),
        help="llama-server that supervisord runs the model servers with (a bare name: from PATH; "
        "default $MINERFLEET_LLAMA_SERVER or %(default)s; `bash scripts/llama-server.sh` prints a built one)",
    )
    render.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the rendered files are not up to date"
    )
    wallets = add_command(
        sub,
        "wallets",
        cmd_wallets,
        "network local: create missing hotkeys; chain networks: list what is missing",
    )
    wallets.add_argument(
        "--hand-over",
        action="store_true",
        help="chain networks, as root: give the fleet's hotkeys, their pub.txt and coldkeypub.txt to the "
        "containers' user (MINERFLEET_UID, 1000), so btcli keys made by root can be mounted; never a coldkey",
    )
    add_command(
        sub,
        "init",
        cmd_init,
        "before the stack starts: create the missing local hotkeys, put the bundled model in place",
    )
    health = add_command(
        sub, "health", cmd_health, "stream a prompt through every miner; exit 1 if any is unhealthy"
    )
    health.add_argument("--json", action="store_true", help="print JSON instead of a table")
    health.add_argument(
        "--announced",
        action="store_true",
        help="probe each miner at the address the chain holds for its hotkey (what validators reach), "
        "not at --host; a miner the chain holds no address for is unhealthy",
    )
    _add_miner_choice(health, "check", "miner")
    capacity = add_command(
        sub,
        "capacity",
        cmd_capacity,
        "K concurrent signed requests through each miner, N rounds: answered, complete, refused, latency",
    )
    capacity.add_argument(
        "--concurrency", "-k", type=_positive_int, required=True, metavar="K", help="requests at once"
    )
    capacity.add_argument(
        "--rounds", type=_positive_int, default=1, metavar="N", help="rounds per miner (default: 1)"
    )
    capacity.add_argument("--json", action="store_true", help="print JSON only on stdout")
    capacity.add_argument(
        "--fleet",
        action="store_true",
        help="as validators load a fleet: K validators each ask every chosen miner at the same moment "
        "(K x miners requests per round), and each model server is then asked on its own at that load",
    )
    capacity.add_argument(
        "--same-question",
        action="store_true",
        help="with --fleet: every validator asks the same question every round (by default each asks its "
        "own, new each round, as validators do; one question lets llama-server answer from its prompt cache)",
    )
    capacity.add_argument(
        "--door",
        choices=("axon", *SCHEMES, "all"),
        default="axon",
        help="through which door: the axon (default), the HTTP door signed with epistula or btauth, or "
        "all (each door a miner has, one after the other, rows side by side)",
    )
    _add_miner_choice(capacity, "measure", "request")
    capacity.add_argument("--prompt", default=None, help="the prompt sent (default: probe.prompt)")
    rollout = add_command(
        sub,
        "rollout",
        cmd_rollout,
        "replace changed miners a few at a time, each batch gated on streaming; or roll back",
    )
    rollout.add_argument("--runtime", choices=NAMES, default="docker",
                         help="where the miners run (default: %(default)s)")  # fmt: skip
    rollout.add_argument("--manager", default=None,
                         help="swarm: a manager's engine (default: DOCKER_HOST, or this one)")  # fmt: skip
    rollout.add_argument("--save", action="store_true",
                         help="only keep the revision now rendered, to roll back to")  # fmt: skip
    rollout.add_argument("--rollback", action="store_true",
                         help="put the saved revision back and roll it out")  # fmt: skip
    rollout.add_argument(
        "--host", default="127.0.0.1", help="where the miners are probed (default: %(default)s)"
    )
    watch = add_command(
        sub,
        "watch",
        cmd_watch,
        "supervise the fleet: restart on exit codes and failed probes; serve the status API",
    )
    watch.add_argument(
        "--runtime",
        choices=NAMES,
        default=os.environ.get("MINERFLEET_RUNTIME", "supervisor"),
        help="where the miners run (default: $MINERFLEET_RUNTIME or %(default)s)",
    )
    watch.add_argument(
        "--status-host",
        default=os.environ.get("MINERFLEET_STATUS_HOST", "127.0.0.1"),
        help="address the status API binds to (default: $MINERFLEET_STATUS_HOST or %(default)s)",
    )
    watch.add_argument(
        "--probe-host",
        default=None,
        help="where miners are reached (default: 127.0.0.1; for docker, each compose service's name)",
    )
    watch.add_argument(
        "--state",
        type=Path,
        default=None,
        help="the file the watch keeps its decisions in, across its own restarts (default: "
        "$MINERFLEET_STATE or state/orchestrator.json under the project dir)",
    )
    images = add_command(sub, "images", cmd_images, "the images the fleet uses (for scripts/images.sh)")
    images.add_argument("--monitoring", action="store_true", help="with the monitoring profile's Prometheus")
    status = add_command(sub, "status", cmd_status, "print the watch loop's view of every miner")
    status.add_argument("--json", action="store_true", help="print the /status JSON")
    status.add_argument(
        "--url", default=None, help="the status API (default: http://127.0.0.1:<status_api.port>)"
    )
    swarm = add_command(
        sub,
        "swarm",
        cmd_swarm,
        "up: deploy docker-stack.yml on a Docker Swarm (labels, images, deploy) and wait until every miner "
        "streams; down: docker stack rm and wait until nothing is left",
    )
    swarm.add_argument("action", choices=["up", "down"])
    swarm.add_argument(
        "--manager", default=None, help="a manager's engine (default: $DOCKER_HOST, else the local engine)"
    )
    swarm.add_argument(
        "--orchestrator",
        choices=["service", "host"],
        default="service",
        help="run the watch as the stack's service on a manager (default), or deploy it with 0 replicas "
        "and run `python -m orchestrator watch --runtime swarm` yourself",
    )
    swarm.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default: %(default)s)")
    prom = add_command(
        sub,
        "prometheus-config",
        cmd_prometheus_config,
        "print a prometheus.yml scraping the whole fleet through the status API (for a host Prometheus)",
    )
    prom.add_argument(
        "--status-address",
        default=None,
        help="host:port of the status API (default 127.0.0.1:<status_api.port>)",
    )
    add_command(sub, "schema", cmd_schema, "print the JSON schema of the fleet file", fleet=False)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command; every error the orchestrator raises on purpose becomes ``error:`` lines on
    stderr and its exit code here, in one place (2: fix the input; 1: something failed)."""
    args = build_parser().parse_args(argv)
    run: Runner = args.run
    err = err or sys.stderr
    try:
        return run(args, out or sys.stdout, err)
    except FleetInvalid as exc:
        for message in exc.messages():
            print(f"error: {message}", file=err)
        if len(exc.errors) > 1:  # one error is its own summary: one `error:` line
            print(f"error: {exc.file}: {len(exc.errors)} errors, nothing done", file=err)
        return exc.exit_code
    except OrchestratorError as exc:
        print(f"error: {exc}", file=err)
        return exc.exit_code
