"""The swarm runtime's reading of tasks and nodes (fake API answers; the real swarm is in
tests/integration/test_swarm.py)."""

from __future__ import annotations

from typing import Any

from orchestrator.runtimes.swarm.runtime import Location, SwarmRuntime, node_location, unit_of

NODES = {
    "n1": {
        "ID": "n1",
        "Spec": {"Labels": {"minerfleet.node": "alpha"}, "Availability": "active"},
        "Status": {"State": "ready", "Addr": "0.0.0.0"},
        "ManagerStatus": {"Addr": "10.213.0.1:2377"},
        "Description": {"Hostname": "vm"},
    },
    "n2": {
        "ID": "n2",
        "Spec": {"Labels": {"minerfleet.node": "beta"}, "Availability": "drain"},
        "Status": {"State": "ready", "Addr": "10.213.0.2"},
        "Description": {"Hostname": "vm"},
    },
}
SERVICE = {"ID": "s1", "Spec": {"Name": "fleet_echo-b", "Labels": {}}}


def _task(node: str, state: str, desired: str = "running", code: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state, "Timestamp": "2026-01-01T00:00:00.5Z", "Err": ""}
    if code is not None:
        status["ContainerStatus"] = {"ContainerID": "c1", "ExitCode": code}
        status["Err"] = f"task: non-zero exit ({code})"
    return {"ID": "t1", "NodeID": node, "DesiredState": desired, "Status": status}


def _runtime() -> SwarmRuntime:
    runtime = SwarmRuntime("fleet", client=object())
    runtime._last_error = lambda service: ""  # type: ignore[method-assign]
    return runtime


def test_units_and_node_addresses() -> None:
    miner = {"Name": "fleet_x", "Labels": {"minerfleet.role": "miner", "minerfleet.miner": "echo-1"}}
    server = {"Name": "fleet_model-server", "Labels": {"com.docker.stack.namespace": "fleet"}}
    assert unit_of(miner) == "echo-1"
    assert unit_of(server) == "model-server"
    # a manager reporting its listen address 0.0.0.0: its advertised address instead
    assert node_location(NODES["n1"]) == Location("alpha", "10.213.0.1")


def test_a_kill_is_an_exit_code_and_a_drained_node_is_named() -> None:
    runtime = _runtime()
    running = runtime._info("echo-b", SERVICE, _task("n1", "running"), NODES)
    assert running.running and running.process_id == "t1"
    assert runtime.locate("echo-b") == Location("alpha", "10.213.0.1")

    killed = runtime._info("echo-b", SERVICE, _task("n1", "failed", "shutdown", 137), NODES)
    assert (killed.running, killed.exit_code, killed.detail) == (False, 137, "task: non-zero exit (137)")

    # Swarm shut it down because its node was drained: no exit code of the miner's own counts
    drained = runtime._info("echo-b", SERVICE, _task("n2", "shutdown", "shutdown", 0), NODES)
    assert (drained.running, drained.exit_code) == (False, None)
    assert drained.detail == "node beta (10.213.0.2) is drained"
    assert drained.cause == "node-drained"
    assert killed.cause == ""  # the miner's own exit: the policy names it from the code


def test_a_task_no_node_can_take_is_pending_with_the_reason() -> None:
    task = _task("", "pending")
    task["Status"]["Err"] = "no suitable node (scheduling constraints not satisfied on 2 nodes)"
    info = _runtime()._info("echo-b", SERVICE, task, NODES)
    assert (info.running, info.status) == (False, "pending")
    assert info.detail.startswith("no suitable node")


class _RacingApi:
    """A swarm in which a rollout's ``docker service update`` lands between the watch's reading of
    the services and its reading of their tasks."""

    def __init__(self) -> None:
        self.updating = False
        self.task = _task("n1", "running")
        self.task.update(ServiceID="s1", CreatedAt="2026-01-01T00:00:00Z")

    def _service(self) -> dict[str, Any]:
        labels = {"com.docker.stack.namespace": "fleet"}
        service: dict[str, Any] = {"ID": "s1", "Spec": {"Name": "fleet_echo-b", "Labels": labels}}
        if self.updating:
            service["UpdateStatus"] = {"State": "updating", "StartedAt": "2026-01-01T00:01:00Z"}
        return service

    def services(self, filters: Any = None) -> list[dict[str, Any]]:
        return [self._service()]

    def tasks(self, filters: Any = None) -> list[dict[str, Any]]:
        return [self.task]

    def nodes(self) -> list[dict[str, Any]]:
        return list(NODES.values())

    def update_now(self) -> None:
        """Swarm marks the update on the service, then shuts the old task down."""
        self.updating = True
        self.task = {**self.task, "DesiredState": "shutdown"}


def test_an_update_that_lands_mid_look_is_the_operators_not_a_crash(monkeypatch: Any) -> None:
    import asyncio
    import types

    from orchestrator.runtimes import swarm
    from orchestrator.runtimes.base import OperatorStop, ProcessExited

    monkeypatch.setattr(swarm.runtime, "POLL_INTERVAL", 0.0)
    api = _RacingApi()
    runtime = SwarmRuntime("fleet", client=types.SimpleNamespace(api=api))
    looks = 0
    read_tasks = api.tasks

    def tasks(filters: Any = None) -> list[dict[str, Any]]:
        nonlocal looks
        looks += 1
        if looks == 2:  # the second look: the services were read before the update, the tasks after
            api.update_now()
        return read_tasks(filters)

    api.tasks = tasks  # type: ignore[method-assign]

    async def first_two() -> list[Any]:
        stream = runtime.events(["echo-b"])
        got = [await asyncio.wait_for(stream.__anext__(), 10) for _ in range(2)]
        await stream.aclose()
        return got

    stop, exited = asyncio.run(first_two())
    assert isinstance(stop, OperatorStop) and stop.name == "echo-b" and "service update" in stop.what
    assert isinstance(exited, ProcessExited)  # the watch reads it as the stop it was just told of
