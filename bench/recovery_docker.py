"""The recovery benchmark's docker variant: the same rounds against a compose project on a real engine
(bench/recovery_rounds.py holds the rounds; bench/recovery.py the supervisor variant and the results)."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import time
from contextlib import ExitStack
from typing import Any

from bench._common import (
    progress,
    wait_for_port,
)
from bench.harness import bench_tmp
from bench.recovery import DOCKER_IMAGES, make_recovery_project, watch_process
from bench.recovery_rounds import RoundTimes, measure, status
from orchestrator.watch.supervise import WatchError

# --- docker ----------------------------------------------------------------------------------------


def docker_unavailable() -> str | None:
    """Why the docker variant cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` failed: {exc}"
    if info.returncode != 0:
        return f"`docker info` failed: {(info.stderr.strip().splitlines() or ['?'])[-1]}"
    missing = [
        image
        for image in DOCKER_IMAGES
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=30).returncode
        != 0
    ]
    if missing:
        return f"image(s) not built: {', '.join(missing)} (make images)"
    if compose_command() is None:
        return "neither `docker compose` nor `docker-compose` works"
    return None


def compose_command() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        try:
            if subprocess.run([*command, "version"], capture_output=True, timeout=30).returncode == 0:
                return command
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


class DockerSide:
    """Miners as containers of the rendered compose project; pids and logs from the docker SDK."""

    def __init__(self, label: str) -> None:
        # Imported by name: the repository's docker/ folder (build files) would shadow it for type checkers.
        docker: Any = importlib.import_module("docker")
        self.label = label
        self.client = docker.from_env()

    def _container(self, name: str) -> Any:
        found = self.client.containers.list(
            filters={"label": [f"minerfleet.project={self.label}", f"minerfleet.miner={name}"]}, all=True
        )
        if not found:
            raise RuntimeError(f"no container for miner {name}")
        return found[0]

    def pid(self, name: str) -> int:
        return int(self._container(name).attrs["State"]["Pid"])

    def miner_log(self, name: str) -> str:
        logs: bytes = self._container(name).logs(tail=400)
        return logs.decode("utf-8", "replace")


def _socket_gid() -> int:
    try:
        return os.stat("/var/run/docker.sock").st_gid
    except OSError:
        return 0


def status_answers(port: int, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            status(port)
            return True
        except WatchError:
            time.sleep(0.5)
    return False


def docker_variant(rounds: int) -> tuple[list[RoundTimes], str]:
    """Rounds under the docker runtime, and where the watch ran (its container, or this host)."""
    compose = compose_command()
    assert compose is not None
    label = f"bench-recovery-{os.getpid()}"
    with bench_tmp() as tmp, ExitStack() as stack:
        project = make_recovery_project(tmp / "project", label, "python")
        # `orchestrator wallets` (run by make_recovery_project) hands the keys to the containers' uid.
        base = [*compose, "-p", label, "-f", str(project.root / "docker-compose.yml")]

        def down() -> None:
            subprocess.run(
                [*base, "down", "-t", "5", "--remove-orphans"],
                cwd=project.root,
                capture_output=True,
                timeout=180,
            )

        stack.callback(down)
        # As scripts/up.sh does: the orchestrator container joins the docker socket's group.
        env = {**os.environ, "MINERFLEET_DOCKER_GID": str(_socket_gid())}
        up = subprocess.run(
            [*base, "up", "-d", "--no-build"],
            cwd=project.root,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        if up.returncode != 0:
            raise RuntimeError(f"compose up failed: {up.stderr.strip()[-400:]}")
        for port in project.ports.values():
            wait_for_port(port, 180)
        where = "the orchestrator container (as `make up` runs it)"
        if not status_answers(project.status_port, 25):
            # Still measure the docker runtime: the same watch, as a host process driving the containers.
            logs = subprocess.run(
                [*base, "logs", "--tail", "3", "orchestrator"],
                cwd=project.root,
                capture_output=True,
                text=True,
            )
            plain = re.sub(r"\x1b\[[0-9;]*m", "", logs.stdout).strip()
            last = (plain.splitlines() or ["(no output)"])[-1].split("|", 1)[-1].strip()
            subprocess.run([*base, "rm", "-s", "-f", "orchestrator"], cwd=project.root, capture_output=True)
            stack.enter_context(watch_process(project, runtime="docker"))
            where = f"a host process; the orchestrator container did not serve /status: {last[:300]}"
            progress(f"recovery: docker runtime: watch runs as {where}")
        results = measure(
            DockerSide(label),
            project.ports,
            project.hotkeys,
            project.status_port,
            rounds,
            project.probe_wallet(),
        )
        return results, where
