"""The command line's arguments, one helper per command; each names the function that runs it
(``module:function`` in ``orchestrator.commands``), imported only when that command runs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from orchestrator.commands.base import Subparsers, add_command, add_miner_choice, positive_int
from orchestrator.runtimes.registry import NAMES
from services.miner.signed import SCHEMES


def _fleet_file(sub: Subparsers) -> None:
    add_command(
        sub,
        "validate",
        "fleetfile:validate",
        "check the fleet file; report every error with its line and fix",
    )
    render = add_command(
        sub,
        "render",
        "fleetfile:render_files",
        "write config/generated/*.env, supervisord.conf and docker-compose.yml",
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


def _keys(sub: Subparsers) -> None:
    wallets = add_command(
        sub,
        "wallets",
        "fleetfile:wallets",
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
        "fleetfile:init",
        "before the stack starts: create the missing local hotkeys, put the bundled model in place",
    )


def _health(sub: Subparsers) -> None:
    health = add_command(
        sub, "health", "health:command", "stream a prompt through every miner; exit 1 if any is unhealthy"
    )
    health.add_argument("--json", action="store_true", help="print JSON instead of a table")
    health.add_argument(
        "--announced",
        action="store_true",
        help="probe each miner at the address the chain holds for its hotkey (what validators reach), "
        "not at --host; a miner the chain holds no address for is unhealthy",
    )
    add_miner_choice(health, "check", "miner")


def _capacity(sub: Subparsers) -> None:
    capacity = add_command(
        sub,
        "capacity",
        "capacity:command",
        "K concurrent signed requests through each miner, N rounds: answered, complete, refused, latency",
    )
    capacity.add_argument(
        "--concurrency", "-k", type=positive_int, required=True, metavar="K", help="requests at once"
    )
    capacity.add_argument(
        "--rounds", type=positive_int, default=1, metavar="N", help="rounds per miner (default: 1)"
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
    add_miner_choice(capacity, "measure", "request")
    capacity.add_argument("--prompt", default=None, help="the prompt sent (default: probe.prompt)")


def _rollout(sub: Subparsers) -> None:
    rollout = add_command(
        sub,
        "rollout",
        "rollout:command",
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


def _watch(sub: Subparsers) -> None:
    watch = add_command(
        sub,
        "watch",
        "watch:watch",
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


def _images_and_status(sub: Subparsers) -> None:
    images = add_command(
        sub, "images", "fleetfile:images", "the images the fleet uses (for scripts/images.sh)"
    )
    images.add_argument("--monitoring", action="store_true", help="with the monitoring profile's Prometheus")
    status = add_command(sub, "status", "watch:status", "print the watch loop's view of every miner")
    status.add_argument("--json", action="store_true", help="print the /status JSON")
    status.add_argument(
        "--url", default=None, help="the status API (default: http://127.0.0.1:<status_api.port>)"
    )


def _swarm(sub: Subparsers) -> None:
    swarm = add_command(
        sub,
        "swarm",
        "swarm:command",
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


def _prometheus_and_schema(sub: Subparsers) -> None:
    prom = add_command(
        sub,
        "prometheus-config",
        "fleetfile:prometheus",
        "print a prometheus.yml scraping the whole fleet through the status API (for a host Prometheus)",
    )
    prom.add_argument(
        "--status-address",
        default=None,
        help="host:port of the status API (default 127.0.0.1:<status_api.port>)",
    )
    add_command(sub, "schema", "fleetfile:schema", "print the JSON schema of the fleet file", fleet=False)


# In the order `--help` lists them.
_COMMANDS = (_fleet_file, _keys, _health, _capacity, _rollout, _watch, _images_and_status, _swarm,
             _prometheus_and_schema)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator", description="Run a fleet of Bittensor streaming miners from one file."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser
