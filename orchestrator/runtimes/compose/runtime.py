"""The docker runtime: the containers of the rendered compose project, through the docker SDK.

Containers are found by the labels render puts on them (``minerfleet.project``, ``minerfleet.role``,
``minerfleet.miner``; a model server by its compose service), not by name (compose v1 and v2 name them
differently). The SDK is blocking: every call runs in a thread. Events come from the engine's event
stream, read in a thread as well.

The operator's stops are never undone: a ``kill`` with a stop signal, a ``stop`` or a ``destroy`` the
orchestrator did not cause itself is reported as :class:`OperatorStop`, and a container is inspected
again right before it is started (one being removed is not started). ``docker kill`` (SIGKILL) is a
crash, not a stop: the fault-injection tests use it, and so does the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from orchestrator.runtimes.base import (
    OperatorStop,
    OwnActions,
    ProcessExited,
    ProcessInfo,
    ProcessStarted,
    RuntimeEvent,
    RuntimeFailure,
    RuntimeGone,
    last_error_line,
)
from orchestrator.runtimes.engine import engine_client, failure, parse_time

STOP_TIMEOUT = 20  # seconds docker waits after SIGTERM (the miner lets in-flight answers finish)
LOG_TAIL = 40
_SIGKILL = "9"
_GOING = frozenset({"removing", "dead"})  # docker State.Status of a container on its way out


def unit_name(labels: dict[str, str]) -> str:
    """The unit a container of the project is: a miner's name, a model server's compose service
    (``model-server``, ``model-server-NAME``), else its service (orchestrator, init)."""
    role = labels.get("minerfleet.role", "")
    if role == "miner":
        return labels.get("minerfleet.miner", "")
    service = labels.get("com.docker.compose.service", "")
    if role == "model-server" and not service:
        server = labels.get("minerfleet.model_server", "")
        return f"model-server-{server}" if server and server != "model-server" else "model-server"
    return service or role


class DockerRuntime:
    name = "docker"

    def __init__(self, project: str, client: Any = None) -> None:
        self.project = project
        self._client = client
        # Engine events carry their own timestamps (same host, same clock): a little slack is plenty.
        self._own = OwnActions(slack=1.0)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = engine_client()
        return self._client

    def _containers(self) -> dict[str, Any]:
        import docker  # slow to import (0.14 s): the registry loads this module for every command

        try:
            found = self.client.containers.list(
                all=True, filters={"label": [f"minerfleet.project={self.project}"]}
            )
        except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
            raise failure("docker: cannot list containers", exc) from exc
        # `compose run` leaves one-off containers with the same labels: they are not the unit.
        return {unit_name(c.labels): c for c in found if c.labels.get("com.docker.compose.oneoff") != "True"}

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
            started_at=parse_time(state.get("StartedAt")),
            detail=detail,
            status=str(state.get("Status", "")),
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
        import docker  # slow to import (0.14 s): only when the engine is reached

        def run() -> None:
            container = self._containers().get(name)
            if container is None:
                raise RuntimeFailure(
                    f"no container for miner {name} in project {self.project}: run `make up` "
                    "(docker compose up -d) so compose creates it"
                )
            try:
                if verb == "start":
                    # Decide on the container as it is now, not as it was listed: compose may be
                    # removing it (`down`) or someone started it meanwhile.
                    container.reload()
                    status = container.attrs.get("State", {}).get("Status", "")
                    if status in _GOING:
                        raise RuntimeGone(f"the container of {name} is {status}: not starting it")
                    if status == "running":
                        return
                    container.start()
                elif verb == "stop":
                    container.stop(timeout=STOP_TIMEOUT)
                else:
                    container.restart(timeout=STOP_TIMEOUT)
            except docker.errors.NotFound as exc:  # removed between the listing and the call
                raise RuntimeGone(f"docker {verb} {name}: the container is gone ({exc})") from exc
            except docker.errors.DockerException as exc:
                if "removal" in str(exc) or "is dead" in str(exc):
                    raise RuntimeGone(f"docker {verb} {name}: {exc}") from exc
                raise RuntimeFailure(f"docker {verb} {name}: {exc}") from exc

        await asyncio.to_thread(run)

    async def start(self, name: str) -> None:
        await self._act(name, "start")

    async def stop(self, name: str) -> None:
        call = self._own.begin(name)
        try:
            await self._act(name, "stop")
        finally:
            self._own.end(call)

    async def restart(self, name: str) -> None:
        call = self._own.begin(name)
        try:
            await self._act(name, "restart")
        finally:
            self._own.end(call)

    async def events(self, names: Sequence[str]) -> AsyncIterator[RuntimeEvent]:
        """The engine's event stream for this project's containers: start and die of the watched units,
        and the operator's stops of any container of the project."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        wanted = set(names)
        closed = threading.Event()
        stream = self.client.events(
            decode=True,
            filters={"type": "container", "label": [f"minerfleet.project={self.project}"]},
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
                if attributes.get("com.docker.compose.oneoff") == "True":
                    continue
                name = unit_name(attributes)
                action = str(item.get("Action") or item.get("status") or "")
                stop = self._operator_stop(name, action, attributes, _event_time(item))
                if stop is not None:
                    yield stop
                if name not in wanted:
                    continue
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

    def _operator_stop(
        self, name: str, action: str, attributes: dict[str, str], at: float | None
    ) -> OperatorStop | None:
        """The operator's stop in one engine event, or None. ``docker stop`` and ``compose down`` send the
        stop signal first (a ``kill`` event), then ``die``, ``stop`` (and ``destroy``): the first tells."""
        if action == "kill":
            signal = str(attributes.get("signal", ""))
            if signal == _SIGKILL or self._own.ours(name, at):
                return None  # docker kill / the OOM killer: a crash; or our own stop
            return OperatorStop(name, f"docker kill signal {signal}")
        if action in ("stop", "destroy") and not self._own.ours(name, at):
            return OperatorStop(name, f"docker {action}")
        return None

    async def aclose(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()


def _event_time(item: dict[str, Any]) -> float | None:
    """When the engine says an event happened (wall-clock seconds)."""
    if item.get("timeNano"):
        return int(item["timeNano"]) / 1e9
    if item.get("time"):
        return float(item["time"])
    return None
