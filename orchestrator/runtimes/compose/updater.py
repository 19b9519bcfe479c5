"""Rolling updates with docker compose: which miners changed, and replacing them a batch at a time."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from orchestrator.fleet.load import LoadedFleet
from orchestrator.probing.reports import ProbeTarget
from orchestrator.runtimes.spec import RolloutError

# docker compose v2, else docker-compose 1.29 (this checkout's script; run from any project directory)
COMPOSE_SH = Path(__file__).resolve().parents[3] / "scripts" / "compose.sh"


class ComposeUpdater:
    """docker compose: a service changed when its rendered config hash (env files included) or its
    image differs from its container's."""

    def __init__(self, loaded: LoadedFleet, compose: Sequence[str] = ("bash", str(COMPOSE_SH))) -> None:
        self.loaded = loaded
        self.compose = [*compose, "-f", str(loaded.project_dir / "docker-compose.yml")]
        self.cwd = loaded.project_dir

    def _run(self, *args: str) -> str:
        done = subprocess.run([*self.compose, *args], cwd=self.cwd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RolloutError(f"compose {' '.join(args)}: {done.stderr.strip()[-800:]}")
        return done.stdout

    def _services(self) -> dict[str, str]:
        lines = self._run("config", "--hash=*").splitlines()
        return dict(line.split(None, 1) for line in lines if line.strip())

    def prepare(self, miners: Sequence[str]) -> list[str]:
        others = [s for s in self._services() if s not in miners]
        before = set(self._changed(others))
        if others:
            self._run("up", "-d", "--no-build", "--no-deps", "--remove-orphans", *others)
        return sorted(before)

    def changed(self, miners: Sequence[str]) -> list[str]:
        return self._changed(list(miners))

    def _changed(self, services: Sequence[str]) -> list[str]:
        import docker  # slow to import (0.14 s): only a rollout pays for it

        client = docker.from_env()
        wanted = self._services()
        running = {}
        for ident in self._run("ps", "-q").split():  # this compose project's containers, none other
            try:
                container = client.containers.get(ident)
            except docker.errors.NotFound:
                continue  # removed meanwhile
            if container.labels.get("com.docker.compose.oneoff") != "True":
                running[container.labels.get("com.docker.compose.service")] = container
        images: dict[str, str | None] = {}
        out = []
        for service in services:
            container = running.get(service)
            done_once = (
                container is not None
                and container.status == "exited"
                and (
                    container.attrs["State"].get("ExitCode") == 0  # a one-shot (init) that did its work
                )
            )
            if container is None or (container.status != "running" and not done_once):
                out.append(service)
                continue
            if container.labels.get("com.docker.compose.config-hash") != wanted.get(service):
                out.append(service)
                continue
            tag = container.attrs["Config"]["Image"]
            if tag not in images:
                try:
                    images[tag] = client.images.get(tag).id
                except docker.errors.ImageNotFound:
                    images[tag] = None
            if images[tag] is not None and images[tag] != container.attrs["Image"]:
                out.append(service)  # a new image under the same tag
        return out

    def replace(self, names: Sequence[str]) -> None:
        self._run("up", "-d", "--no-build", "--no-deps", *names)

    def locate(self, target: ProbeTarget) -> ProbeTarget:
        return target

    def finish(self) -> None:
        pass
