"""The runtimes against fakes of their clients: which containers/programs are which unit, the operator's
stops told apart from the orchestrator's own, and no start of a unit that is being torn down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runtimes.base import OperatorStop, ProcessExited, ProcessStarted, RuntimeEvent, RuntimeGone
from orchestrator.runtimes.compose.runtime import DockerRuntime, unit_name
from orchestrator.runtimes.supervisord.runtime import SupervisorRuntime

P = "minerfleet"


def miner_labels(name: str) -> dict[str, str]:
    return {
        "minerfleet.project": P,
        "minerfleet.role": "miner",
        "minerfleet.miner": name,
        "com.docker.compose.service": name,
    }


def server_labels(service: str, server: str) -> dict[str, str]:
    return {
        "minerfleet.project": P,
        "minerfleet.role": "model-server",
        "minerfleet.model_server": server,
        "com.docker.compose.service": service,
    }


class FakeContainer:
    def __init__(self, labels: dict[str, str], status: str = "running") -> None:
        self.id = f"c{id(self):x}0000000000"
        self.labels = labels
        self.status = status
        self.calls: list[str] = []

    @property
    def attrs(self) -> dict[str, Any]:
        running = self.status == "running"
        return {
            "State": {
                "Status": self.status,
                "Running": running,
                "ExitCode": 0 if running else 137,
                "StartedAt": "2026-01-01T00:00:00.000000000Z",
                "FinishedAt": "0001-01-01T00:00:00Z",
                "OOMKilled": False,
            }
        }

    def reload(self) -> None:
        self.calls.append("reload")

    def start(self) -> None:
        self.calls.append("start")
        self.status = "running"

    def stop(self, timeout: int) -> None:
        self.calls.append("stop")
        self.status = "exited"

    def restart(self, timeout: int) -> None:
        self.calls.append("restart")

    def logs(self, **kwargs: Any) -> bytes:
        return b""


class FakeEvents:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._events = events

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._events)

    def close(self) -> None:
        return None


class FakeDocker:
    def __init__(self, containers: list[FakeContainer], events: list[dict[str, Any]] | None = None) -> None:
        self.listed = containers
        self.events_list = events or []

        class Containers:
            @staticmethod
            def list(all: bool, filters: dict[str, Any]) -> list[FakeContainer]:
                assert filters == {"label": [f"minerfleet.project={P}"]}
                return list(self.listed)

        self.containers = Containers()

    def events(self, decode: bool, filters: dict[str, Any]) -> FakeEvents:
        return FakeEvents(self.events_list)

    def close(self) -> None:
        return None


def event(action: str, labels: dict[str, str], at: float | None = None, **attributes: str) -> dict[str, Any]:
    """An engine event as docker's stream decodes it; it happened ``at`` (default: now)."""
    nano = int((time.time() if at is None else at) * 1e9)
    return {
        "Action": action,
        "id": "abcdef1234567890",
        "time": nano // 10**9,
        "timeNano": nano,
        "Actor": {"Attributes": {**labels, **attributes}},
    }


async def collect(runtime: Any, names: list[str], count: int) -> list[RuntimeEvent]:
    got: list[RuntimeEvent] = []

    async def read() -> None:
        async for item in runtime.events(names):
            got.append(item)
            if len(got) == count:
                return

    await asyncio.wait_for(read(), 5)
    return got


def test_unit_names() -> None:
    assert unit_name(miner_labels("gemma-1")) == "gemma-1"
    assert unit_name(server_labels("model-server", "gemma")) == "model-server"
    assert unit_name(server_labels("model-server-big", "big")) == "model-server-big"
    no_service = {"minerfleet.role": "model-server", "minerfleet.model_server": "big"}
    assert unit_name(no_service) == "model-server-big"
    assert unit_name({"minerfleet.role": "orchestrator", "com.docker.compose.service": "orchestrator"}) == (
        "orchestrator"
    )


async def test_docker_finds_miners_and_model_servers_but_not_one_off_containers() -> None:
    oneoff = FakeContainer({**miner_labels("gemma-1"), "com.docker.compose.oneoff": "True"}, "exited")
    client = FakeDocker(
        [FakeContainer(miner_labels("gemma-1")), oneoff, FakeContainer(server_labels("model-server", "g"))]
    )
    infos = await DockerRuntime(P, client).inspect(["gemma-1", "model-server", "missing"])
    assert infos["gemma-1"].running and infos["gemma-1"].status == "running"
    assert infos["model-server"].running
    assert not infos["missing"].exists


@pytest.mark.parametrize("status", ["removing", "dead"])
async def test_docker_does_not_start_a_container_being_removed(status: str) -> None:
    container = FakeContainer(miner_labels("gemma-1"), status)
    with pytest.raises(RuntimeGone, match=status):
        await DockerRuntime(P, FakeDocker([container])).start("gemma-1")
    assert container.calls == ["reload"]


async def test_docker_start_re_inspects_and_leaves_a_running_container_alone() -> None:
    running = FakeContainer(miner_labels("a"), "running")
    exited = FakeContainer(miner_labels("b"), "exited")
    runtime = DockerRuntime(P, FakeDocker([running, exited]))
    await runtime.start("a")
    await runtime.start("b")
    assert running.calls == ["reload"] and exited.calls == ["reload", "start"]


async def test_docker_tells_the_operators_stops_from_crashes_and_from_its_own() -> None:
    a, b, server = miner_labels("a"), miner_labels("b"), server_labels("model-server", "g")
    orchestrator = {
        "minerfleet.project": P,
        "minerfleet.role": "orchestrator",
        "com.docker.compose.service": "orchestrator",
    }
    client = FakeDocker([FakeContainer(a, "exited"), FakeContainer(b), FakeContainer(server, "exited")])
    runtime = DockerRuntime(P, client)
    await runtime.stop("b")  # the events of our own stop, delivered later, carry the time it happened
    client.events_list = [
        event("kill", b, signal="15"),
        event("stop", b),
        event("kill", a, signal="9"),  # docker kill: a crash, no stop
        event("die", a, exitCode="137"),
        event("kill", server, at=time.time() + 5, signal="15"),  # docker stop model-server, later
        event("die", server, exitCode="0"),
        event("stop", server, at=time.time() + 5),
        event("kill", orchestrator, signal="15"),  # compose down reaches the orchestrator
        event("destroy", a),  # compose down removes an exited (BACKOFF) miner
        event("start", b),
    ]
    got = await collect(runtime, ["a", "b", "model-server"], 7)
    assert got[:6] == [
        ProcessExited("a", 137, None, False, ""),
        OperatorStop("model-server", "docker kill signal 15"),
        ProcessExited("model-server", 0, None, False, ""),
        OperatorStop("model-server", "docker stop"),
        OperatorStop("orchestrator", "docker kill signal 15"),
        OperatorStop("a", "docker destroy"),
    ]
    assert isinstance(got[6], ProcessStarted) and got[6].name == "b"


class FakeSupervisor:
    """supervisord's XML-RPC namespace, with programs whose states the test sets."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.calls: list[tuple[str, str]] = []
        self.supervisor = self

    def _info(self, name: str) -> dict[str, Any]:
        state = self.states[name]
        return {
            "name": name,
            "statename": state,
            "pid": 42 if state in ("RUNNING", "STOPPING") else 0,
            "exitstatus": 0,
            "start": 1,
            "spawnerr": "",
        }

    def getAllProcessInfo(self) -> list[dict[str, Any]]:
        return [self._info(name) for name in self.states]

    def getProcessInfo(self, name: str) -> dict[str, Any]:
        return self._info(name)

    def startProcess(self, name: str, wait: bool) -> bool:
        self.calls.append(("start", name))
        self.states[name] = "RUNNING"
        return True

    def stopProcess(self, name: str, wait: bool) -> bool:
        self.calls.append(("stop", name))
        self.states[name] = "STOPPED"
        return True

    def tailProcessStderrLog(self, name: str, offset: int, length: int) -> list[Any]:
        return ["", 0, False]

    def readLog(self, offset: int, length: int) -> str:
        return ""


async def test_supervisord_reports_an_operator_stop_but_not_its_own() -> None:
    fake = FakeSupervisor({"a": "RUNNING", "model-server": "RUNNING"})
    runtime = SupervisorRuntime("http://x/RPC2", poll_interval=0.01, proxy=fake)
    await runtime.stop("a")  # ours
    fake.states["a"] = "RUNNING"
    got: list[RuntimeEvent] = []

    async def read() -> None:
        async for item in runtime.events(["a", "model-server"]):
            got.append(item)
            if isinstance(item, ProcessExited) and item.name == "model-server":
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.05)
    fake.states["a"] = "STOPPED"  # looks like `supervisorctl stop a`, but inside our own stop's window
    fake.states["model-server"] = "STOPPING"  # supervisorctl stop model-server
    await asyncio.sleep(0.05)
    fake.states["model-server"] = "STOPPED"
    await asyncio.wait_for(reader, 5)
    assert OperatorStop("model-server", "supervisord STOPPING") in got
    assert not any(isinstance(e, OperatorStop) and e.name == "a" for e in got)


async def test_supervisord_does_not_start_a_program_being_stopped() -> None:
    fake = FakeSupervisor({"model-server": "STOPPING", "a": "EXITED", "b": "RUNNING"})
    runtime = SupervisorRuntime("http://x/RPC2", proxy=fake)
    with pytest.raises(RuntimeGone):
        await runtime.start("model-server")
    await runtime.start("a")
    await runtime.start("b")
    assert fake.calls == [("start", "a")]


def test_model_server_health_verdicts() -> None:
    from orchestrator.probing.modelservers import ServerVerdict, judge

    assert judge(200, '{"status":"ok"}', "") == (ServerVerdict.healthy, "")
    assert judge(503, '{"error":{"message":"Loading model"}}', "")[0] is ServerVerdict.loading
    assert judge(None, "", "http://model-server:8000/health: [Errno 111] refused") == (
        ServerVerdict.down,
        "http://model-server:8000/health: [Errno 111] refused",
    )
    assert judge(500, "boom", "") == (ServerVerdict.error, "HTTP 500: boom")


async def test_the_server_checker_reads_a_real_health_endpoint() -> None:
    """ServerChecker against a real HTTP server answering 503 (loading), then 200, then nothing."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from orchestrator.probing.modelservers import ServerChecker, ServerTarget, ServerVerdict

    status = {"code": 503}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"status":"ok"}' if status["code"] == 200 else b'{"error":{"message":"Loading model"}}'
            self.send_response(status["code"] if self.path == "/health" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = ServerTarget("model-server", "127.0.0.1", server.server_address[1])
    checker = ServerChecker(timeout=10)
    try:
        loading = await checker.check(target)
        status["code"] = 200
        healthy = await checker.check(target)
    finally:
        server.shutdown()
        server.server_close()
    gone = await checker.check(target)
    assert (loading.verdict, loading.status_code) == (ServerVerdict.loading, 503)
    assert "Loading model" in loading.reason
    assert healthy.healthy
    assert gone.verdict is ServerVerdict.down and gone.status_code is None


def test_the_watch_finds_the_fleets_model_servers(tmp_path: Path) -> None:
    from orchestrator.fleet.load import load_fleet
    from orchestrator.probing.modelservers import ServerTarget, server_targets
    from tests.fleets import shipped_project

    loaded = load_fleet(shipped_project(tmp_path), tmp_path, check_files=False)
    assert server_targets(loaded, None) == [ServerTarget("model-server", "model-server", 8000, slots=32)]
    assert server_targets(loaded, "127.0.0.1")[0].url == "http://127.0.0.1:8000/health"
