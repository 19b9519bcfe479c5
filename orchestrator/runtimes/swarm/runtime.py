"""The swarm runtime: the services of the deployed stack on a Docker Swarm, through a manager's engine.

Each unit (miner, model server) is one replicated service with one replica and ``restart_policy:
none`` (``docker-stack.yml``), so Swarm never restarts or replaces a task by itself and the policy
decides alone. The runtime reads each unit's newest *task*, on whichever node it runs:

- running: the task runs, is meant to, and its node is up;
- an exit: the task's container exit code; Swarm's task status has no OOM flag, so OOM is read from
  the node's own engine when the fleet file gives it (``nodes.NAME.engine``), else the kill is named
  by its signal; the detail is the service's last error line (``docker service logs``);
- a task Swarm shut down because its node was drained or went down is an exit with no code and the
  reason ``node-drained`` or ``node-down`` (restarted with backoff like a crash), its detail naming the
  node.

start: a new task (``service update --force``; ``scale 1`` after a stop). Swarm schedules it on a node
the placement allows: a miner placed by labels moves off a drained node; one pinned to a node that
cannot run it stays pending, and start fails with Swarm's reason ("no suitable node"), which the
policy backs off from; the pending task starts by itself once the node is back. stop: ``scale 0``.

Swarm's events are cluster-wide for services only (task changes are local to each node), so changes
are found by polling every second and diffing; a service scaled to 0 or removed by someone else
(``docker service scale``, ``docker stack rm``) is the operator's stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.placement import NODE_LABEL
from orchestrator.policy.states import Reason
from orchestrator.runtimes.base import (
    OperatorStop,
    OwnActions,
    ProcessInfo,
    RuntimeEvent,
    RuntimeFailure,
    RuntimeGone,
    diff_events,
    last_error_line,
)
from orchestrator.runtimes.engine import engine_client, failure, parse_time

POLL_INTERVAL = 1.0
START_WAIT = 3.0  # seconds start() waits for Swarm to place the new task (the watch waits with it)
LOG_TAIL = 40
# "starting": the container runs, and Swarm waits for a health check (none in docker-stack.yml).
_UP = frozenset({"starting", "running"})
_PLACING = frozenset({"new", "pending", "assigned", "accepted", "preparing", "ready"})


@dataclass(frozen=True)
class Location:
    """Where a unit's newest task is: the fleet's name of the node (its ``minerfleet.node`` label,
    else its hostname) and the node's address."""

    node: str
    address: str


def unit_of(spec: dict[str, Any]) -> str:
    """The unit a service of the stack is: a miner's name, else its service name in the stack file."""
    labels = spec.get("Labels") or {}
    if labels.get("minerfleet.role") == "miner" and labels.get("minerfleet.miner"):
        return str(labels["minerfleet.miner"])
    name = str(spec.get("Name", ""))
    namespace = labels.get("com.docker.stack.namespace", "")
    return name[len(namespace) + 1 :] if namespace and name.startswith(f"{namespace}_") else name


def node_location(node: dict[str, Any]) -> Location:
    spec, status = node.get("Spec") or {}, node.get("Status") or {}
    name = (spec.get("Labels") or {}).get(NODE_LABEL) or (node.get("Description") or {}).get("Hostname", "")
    address = str(status.get("Addr") or "")
    if address in ("", "0.0.0.0"):  # a manager may report its listen address: take the advertised one
        address = str((node.get("ManagerStatus") or {}).get("Addr", "")).rpartition(":")[0]
    return Location(str(name), address)


def _replicas(spec: dict[str, Any]) -> int | None:
    replicated = (spec.get("Mode") or {}).get("Replicated")
    return None if replicated is None else int(replicated.get("Replicas", 0))


def _update_began(then: dict[str, Any], now: dict[str, Any]) -> bool:
    """Swarm began replacing the service's task between two looks (a new spec: an update)."""
    status = now.get("UpdateStatus") or {}
    return status.get("State") == "updating" and status.get("StartedAt") != (
        (then.get("UpdateStatus") or {}).get("StartedAt")
    )


class SwarmRuntime:
    name = "swarm"

    def __init__(
        self, stack: str, client: Any = None, engines: dict[str, str] | None = None, clients: Any = None
    ) -> None:
        """``stack``: the stack's name (the fleet's ``project``); ``client``: a docker client of a
        manager (default: from the environment); ``engines``: node name -> engine URL, to read OOM
        kills on that node (``clients`` builds a client from a URL; tests pass fakes)."""
        self.stack = stack
        self._client = client
        self._engines = dict(engines or {})
        self._make_client = clients
        self._node_clients: dict[str, Any] = {}
        self._own = OwnActions(slack=2.0)
        self.where: dict[str, Location] = {}  # unit -> where its newest task is (or was)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = engine_client()
        return self._client

    def locate(self, name: str) -> Location | None:
        return self.where.get(name)

    # --- reading the swarm (blocking: called in threads) ---------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import docker  # slow to import (0.14 s): the registry loads this module for every command

        try:
            return fn(*args, **kwargs)
        except (docker.errors.DockerException, OSError) as exc:
            if "not a swarm manager" in str(exc) or "This node is not a swarm manager" in str(exc):
                raise RuntimeFailure(
                    f"{what}: this engine is not a swarm manager: point DOCKER_HOST at a manager"
                ) from exc
            raise failure(f"docker {what}", exc) from exc

    def _services(self) -> dict[str, dict[str, Any]]:
        found = self._call(
            "service ls",
            self.client.api.services,
            filters={"label": [f"com.docker.stack.namespace={self.stack}"]},
        )
        return {unit_of(s.get("Spec") or {}): s for s in found}

    def _snapshot(self, names: Sequence[str]) -> tuple[dict[str, ProcessInfo], dict[str, dict[str, Any]]]:
        services = self._services()
        wanted = {name: services[name] for name in names if name in services}
        tasks: list[dict[str, Any]] = []
        if wanted:
            ids = [s["ID"] for s in wanted.values()]
            tasks = self._call("service ps", self.client.api.tasks, filters={"service": ids})
        nodes = {n["ID"]: n for n in self._call("node ls", self.client.api.nodes)}
        if tasks:
            # Read the services again, after their tasks: Swarm marks an update on its service
            # (UpdateStatus) before it stops the old task, so a stop seen in these tasks always has
            # its update in this listing, and ``events`` names it a deploy rather than a crash.
            services = self._services()
        newest: dict[str, dict[str, Any]] = {}
        for task in tasks:
            sid = str(task.get("ServiceID", ""))
            created = parse_time(task.get("CreatedAt") or "") or 0.0
            best = newest.get(sid)
            if best is None or created > (parse_time(best.get("CreatedAt") or "") or 0.0):
                newest[sid] = task
        infos: dict[str, ProcessInfo] = {}
        for name in names:
            service = wanted.get(name)
            if service is None:
                infos[name] = ProcessInfo(name=name, exists=False, running=False)
                continue
            infos[name] = self._info(name, service, newest.get(service["ID"]), nodes)
        return infos, services

    def _info(
        self, name: str, service: dict[str, Any], task: dict[str, Any] | None, nodes: dict[str, Any]
    ) -> ProcessInfo:
        if task is None:
            return ProcessInfo(name=name, exists=True, running=False, status="no task")
        status = task.get("Status") or {}
        state = str(status.get("State", ""))
        desired = str(task.get("DesiredState", ""))
        node = nodes.get(task.get("NodeID", ""))
        where = node_location(node) if node else None
        if where is not None:
            self.where[name] = where
        node_down = node is not None and (node.get("Status") or {}).get("State") != "ready"
        drained = node is not None and (node.get("Spec") or {}).get("Availability") == "drain"
        running = state in _UP and desired == "running" and not node_down
        container = status.get("ContainerStatus") or {}
        started = parse_time(status.get("Timestamp")) if running else None
        if running:
            return ProcessInfo(
                name=name, exists=True, running=True, process_id=str(task.get("ID", "")), started_at=started,
                status=state,
            )  # fmt: skip
        if state in _PLACING and desired == "running":
            # Not started yet: Swarm's reason (e.g. "no suitable node (...)") is the detail.
            return ProcessInfo(
                name=name, exists=True, running=False, status=state, detail=str(status.get("Err", ""))
            )
        code: int | None = container.get("ExitCode") if "ExitCode" in container else None
        detail = str(status.get("Err") or "")
        oom = False
        cause = ""
        if where is not None and (node_down or drained):
            # Swarm shut it down because of its node: not the miner's doing, whatever it exited with.
            code = None
            cause = Reason.NODE_DOWN if node_down else Reason.NODE_DRAINED
            detail = f"node {where.node} ({where.address}) is {'down' if node_down else 'drained'}"
        else:
            oom = self._oom(where, str(container.get("ContainerID", "")))
            detail = self._last_error(service) or detail
        return ProcessInfo(
            name=name, exists=True, running=False, exit_code=code, oom=oom, detail=detail, status=state,
            cause=cause,
        )  # fmt: skip

    def _oom(self, where: Location | None, container_id: str) -> bool:
        """Whether the kernel killed the container for memory: only its node's engine knows."""
        if where is None or not container_id or where.node not in self._engines:
            return False
        try:
            client = self._node_clients.get(where.node)
            if client is None:
                import docker  # slow to import (0.14 s): only when a node is reached

                make = self._make_client or (lambda url: docker.DockerClient(base_url=url))
                client = self._node_clients[where.node] = make(self._engines[where.node])
            state = client.api.inspect_container(container_id).get("State") or {}
            return bool(state.get("OOMKilled"))
        except Exception:  # the node's engine is optional knowledge; the exit code still counts
            return False

    def _last_error(self, service: dict[str, Any]) -> str:
        try:
            logs = self.client.api.service_logs(service["ID"], stdout=True, stderr=True, tail=LOG_TAIL)
            text = b"".join(logs) if not isinstance(logs, bytes) else logs
            return last_error_line(text.decode("utf-8", "replace"))
        except Exception:  # logs are a nicety; the exit code is what matters
            return ""

    # --- the Runtime interface -------------------------------------------------------------------

    async def inspect(self, names: Sequence[str]) -> dict[str, ProcessInfo]:
        infos, _ = await asyncio.to_thread(self._snapshot, names)
        return infos

    def _service(self, name: str) -> dict[str, Any]:
        service = self._services().get(name)
        if service is None:
            raise RuntimeGone(
                f"no service for {name} in stack {self.stack}: removed (`docker stack rm`), or not deployed "
                "yet (`python -m orchestrator swarm up`)"
            )
        return service

    def _scale(self, service: dict[str, Any], replicas: int) -> None:
        spec = dict(service["Spec"])
        spec["Mode"] = {"Replicated": {"Replicas": replicas}}
        self._update(service, spec)

    def _update(self, service: dict[str, Any], spec: dict[str, Any], force: bool = False) -> None:
        task_template = dict(spec.get("TaskTemplate") or {})
        if force:
            task_template["ForceUpdate"] = int(task_template.get("ForceUpdate", 0)) + 1
        self._call(
            f"service update {spec.get('Name')}",
            self.client.api.update_service,
            service["ID"],
            service["Version"]["Index"],
            task_template=task_template,
            mode=spec.get("Mode"),
            fetch_current_spec=True,  # everything not given here stays as deployed
        )

    def _start(self, name: str, force: bool) -> None:
        service = self._service(name)
        before = self._snapshot([name])[0][name]
        if _replicas(service["Spec"]) == 0:
            self._scale(service, 1)
        elif before.running and not force:
            return
        else:
            self._update(service, service["Spec"], force=True)
        self._wait_placed(name, before.process_id)

    def _wait_placed(self, name: str, old: str) -> None:
        """Wait until Swarm placed the new task; fail with its reason when no node can take it."""
        deadline = time.monotonic() + START_WAIT
        info = None
        while time.monotonic() < deadline:
            info = self._snapshot([name])[0][name]
            if info.running and info.process_id != old:
                return
            if info.status not in _PLACING and info.status not in ("no task", *_UP):
                return  # it already ended: the events report that exit
            time.sleep(0.5)
        if info is not None and "no suitable node" in info.detail:
            raise RuntimeFailure(f"swarm cannot place {name}: {info.detail}")

    async def start(self, name: str) -> None:
        call = self._own.begin(name)  # its update is ours, not an operator's (see events)
        try:
            await asyncio.to_thread(self._start, name, False)
        finally:
            self._own.end(call)

    async def stop(self, name: str) -> None:
        call = self._own.begin(name)
        try:
            await asyncio.to_thread(lambda: self._scale(self._service(name), 0))
        finally:
            self._own.end(call)

    async def restart(self, name: str) -> None:
        call = self._own.begin(name)
        try:
            await asyncio.to_thread(self._start, name, True)
        finally:
            self._own.end(call)

    async def events(self, names: Sequence[str]) -> AsyncIterator[RuntimeEvent]:
        """Polled: every second, the newest task of each unit, diffed against the last look; and the
        services the operator scaled to 0 or removed."""
        before, services = await asyncio.to_thread(self._snapshot, names)
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            after, now_services = await asyncio.to_thread(self._snapshot, names)
            for name in services:
                then, now = services[name], now_services.get(name)
                if now is None:
                    yield OperatorStop(name, "docker service rm (stack rm)")
                elif _replicas(now["Spec"]) == 0 != _replicas(then["Spec"]) and not self._own.ours(name):
                    yield OperatorStop(name, "docker service scale 0")
                elif _update_began(then, now) and not self._own.ours(name):
                    # A deploy or rollout replaces the task (stop-first): its stop is not a crash.
                    yield OperatorStop(name, "docker service update (a deploy or rollout)")
            for event in diff_events(before, after):
                yield event
            before, services = after, now_services

    async def aclose(self) -> None:
        for client in [self._client, *self._node_clients.values()]:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
