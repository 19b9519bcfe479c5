"""The docker runtime: the containers of the rendered compose project, through the docker SDK.

Containers are found by the labels render puts on them (``minerfleet.project``, ``minerfleet.miner``),
not by name (compose v1 and v2 name them differently). The SDK is blocking: every call runs in a
thread. Events come from the engine's event stream, read in a thread as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from orchestrator.runtimes.base import (
    ProcessExited,
    ProcessInfo,
    ProcessStarted,
    RuntimeEvent,
    RuntimeFailure,
    last_error_line,
)

STOP_TIMEOUT = 20  # seconds docker waits after SIGTERM (the miner lets in-flight answers finish)
LOG_TAIL = 40


class DockerRuntime:
    name = "docker"

    def __init__(self, project: str, client: Any = None) -> None:
        self.project = project
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env()
            except docker.errors.DockerException as exc:
                raise failure("no docker engine answers", exc) from exc
        return self._client

    def _containers(self) -> dict[str, Any]:
        import docker

        try:
            found = self.client.containers.list(
                all=True, filters={"label": [f"minerfleet.project={self.project}", "minerfleet.role=miner"]}
            )
        except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
            raise failure("docker: cannot list containers", exc) from exc
        return {c.labels.get("minerfleet.miner", ""): c for c in found}

    def _info(self, name: str, container: Any) -> ProcessInfo:
        state = container.attrs.get("State", {})
        running = bool(state.get("Running"))
        detail = ""
        finished = str(state.get("FinishedAt") or "")
        if not running and finished and not finished.startswith("0001"):  # it has exited at least once
            try:
                logs = container.logs(tail=LOG_TAIL, stdout=True, stderr=True).decode("utf-8", "replace")
            except Exception:  # logs are a nicety; the exit code is what matters
                logs = ""
            detail = last_error_line(logs)
        return ProcessInfo(
            name=name,
            exists=True,
            running=running,
            process_id=f"{container.id[:12]}:{state.get('StartedAt', '')}" if running else "",
            exit_code=None if running else state.get("ExitCode"),
            oom=bool(state.get("OOMKilled")),
            started_at=_parse_time(state.get("StartedAt")),
            detail=detail,
        )

    async def inspect(self, names: Sequence[str]) -> dict[str, ProcessInfo]:
        def run() -> dict[str, ProcessInfo]:
            containers = self._containers()
            result = {}
            for name in names:
                container = containers.get(name)
                if container is None:
                    result[name] = ProcessInfo(name=name, exists=False, running=False)
                else:
                    result[name] = self._info(name, container)
            return result

        return await asyncio.to_thread(run)

    async def _act(self, name: str, verb: str) -> None:
        import docker

        def run() -> None:
            container = self._containers().get(name)
            if container is None:
                raise RuntimeFailure(
                    f"no container for miner {name} in project {self.project}: run `make up` "
                    "(docker compose up -d) so compose creates it"
                )
            try:
                if verb == "start":
                    container.start()
                elif verb == "stop":
                    container.stop(timeout=STOP_TIMEOUT)
                else:
                    container.restart(timeout=STOP_TIMEOUT)
            except docker.errors.DockerException as exc:
                raise RuntimeFailure(f"docker {verb} {name}: {exc}") from exc

        await asyncio.to_thread(run)

    async def start(self, name: str) -> None:
        await self._act(name, "start")

    async def stop(self, name: str) -> None:
        await self._act(name, "stop")

    async def restart(self, name: str) -> None:
        await self._act(name, "restart")

    async def events(self, names: Sequence[str]) -> AsyncIterator[RuntimeEvent]:
        """The engine's event stream for this project's miner containers (start, die)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        wanted = set(names)
        closed = threading.Event()
        stream = self.client.events(
            decode=True,
            filters={
                "type": "container",
                "label": [f"minerfleet.project={self.project}", "minerfleet.role=miner"],
            },
        )

        def pump() -> None:
            try:
                for event in stream:
                    if closed.is_set():
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except BaseException as exc:  # the engine went away: tell the consumer
                if not closed.is_set():
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(queue.put_nowait, exc)

        threading.Thread(target=pump, name="docker-events", daemon=True).start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise RuntimeFailure(f"docker event stream ended: {item}")
                attributes = item.get("Actor", {}).get("Attributes", {})
                name = attributes.get("minerfleet.miner", "")
                if name not in wanted:
                    continue
                action = item.get("Action") or item.get("status")
                if action == "start":
                    yield ProcessStarted(name, f"{item.get('id', '')[:12]}:{item.get('time', '')}")
                elif action == "die":
                    info = (await self.inspect([name]))[name]
                    code = attributes.get("exitCode")
                    yield ProcessExited(
                        name,
                        int(code) if code is not None else info.exit_code,
                        None,
                        info.oom,
                        info.detail,
                    )
        finally:
            closed.set()
            with contextlib.suppress(Exception):
                stream.close()

    async def aclose(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()


def failure(what: str, exc: BaseException) -> RuntimeFailure:
    """A runtime failure; a refused docker socket says how to fix it."""
    if "Permission denied" in str(exc):
        return RuntimeFailure(
            "the docker socket refuses this user: give the orchestrator the socket's group "
            "(MINERFLEET_DOCKER_GID=$(stat -c %g /var/run/docker.sock) in .env or the environment; "
            "`make up` does it)"
        )
    return RuntimeFailure(f"{what}: {exc}")


def _parse_time(value: str | None) -> float | None:
    if not value or value.startswith("0001"):
        return None
    try:
        # docker gives nanoseconds; Python's fromisoformat takes microseconds at most.
        head, _, rest = value.partition(".")
        fraction = rest.rstrip("Z")[:6]
        return datetime.fromisoformat(f"{head}.{fraction or '0'}+00:00").timestamp()
    except ValueError:
        return None
