"""The watch loop with a fake runtime and a fake prober: adoption, actions, failures, prompt stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from orchestrator.policy import Exited, RestartPolicy, State
from orchestrator.probe import ProbeReport, ProbeTarget, Verdict
from orchestrator.runtimes.base import (
    ProcessExited,
    ProcessInfo,
    ProcessStarted,
    RuntimeEvent,
    RuntimeFailure,
    diff_events,
    last_error_line,
)
from orchestrator.status import metrics_text, page
from orchestrator.watch import Watcher

POLICY = RestartPolicy(backoff_initial=0.05, backoff_max=0.1, start_grace=0, unhealthy_after_failed_probes=2)


class FakeRuntime:
    name = "fake"

    def __init__(self, running: dict[str, bool]) -> None:
        self.running = dict(running)
        self.calls: list[tuple[str, str]] = []
        self.queue: asyncio.Queue[RuntimeEvent] = asyncio.Queue()
        self.fail_start: set[str] = set()

    async def inspect(self, names: Sequence[str]) -> dict[str, ProcessInfo]:
        return {n: ProcessInfo(n, exists=True, running=self.running.get(n, False)) for n in names}

    async def start(self, name: str) -> None:
        self.calls.append(("start", name))
        if name in self.fail_start:
            raise RuntimeFailure(f"no container for miner {name}")
        self.running[name] = True
        self.queue.put_nowait(ProcessStarted(name, "new"))

    async def stop(self, name: str) -> None:
        self.calls.append(("stop", name))
        self.running[name] = False

    async def restart(self, name: str) -> None:
        self.calls.append(("restart", name))
        self.queue.put_nowait(ProcessStarted(name, "again"))

    async def events(self, names: Sequence[str]) -> AsyncIterator[RuntimeEvent]:
        while True:
            yield await self.queue.get()

    async def aclose(self) -> None:
        return None


class FakeProber:
    def __init__(self) -> None:
        self.healthy: dict[str, bool] = {}

    async def probe(self, target: ProbeTarget) -> ProbeReport:
        ok = self.healthy.get(target.name, True)
        return ProbeReport(
            target.name, target.hotkey, target.port, target.backend, target.protocol,
            Verdict.healthy if ok else Verdict.timeout, "" if ok else "no complete answer within 1s",
            200 if ok else 408, 0.01 if ok else None, 1 if ok else 0, 100.0 if ok else None, 5, 0.02,
        )  # fmt: skip


def _target(name: str) -> ProbeTarget:
    return ProbeTarget(name, f"5{name}", "127.0.0.1", 8091, "echo", "prompting")


def _watcher(runtime: FakeRuntime, prober: FakeProber, *names: str) -> Watcher:
    return Watcher([(_target(n), POLICY) for n in names], runtime, prober, probe_interval=0.05)


async def _until(check: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def test_adoption_keeps_running_miners_and_starts_the_others() -> None:
    runtime = FakeRuntime({"a": True, "b": False})
    watcher = _watcher(runtime, FakeProber(), "a", "b")
    await watcher.adopt()
    assert runtime.calls == [("start", "b")]
    assert watcher.miners["a"].record.state is State.RUNNING
    assert watcher.miners["a"].record.restarts == 0
    assert watcher.miners["b"].record.state is State.STARTING


async def test_an_exit_75_backs_off_then_starts_and_a_probe_makes_it_running() -> None:
    runtime = FakeRuntime({"a": True})
    watcher = _watcher(runtime, FakeProber(), "a")
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await _until(lambda: watcher.adopted)
    runtime.running["a"] = False
    runtime.queue.put_nowait(ProcessExited("a", 75, None, False, "error in forward"))
    await _until(
        lambda: watcher.miners["a"].record.restarts == 1 and watcher.miners["a"].record.state is State.RUNNING
    )
    stop.set()
    await asyncio.wait_for(task, 2)
    rec = watcher.miners["a"].record
    assert rec.restarts_by_reason == {"forward-exception": 1}
    assert [d.to_state for d in rec.history] == [State.RUNNING, State.BACKOFF, State.STARTING, State.RUNNING]
    assert runtime.calls == [("start", "a")]


async def test_exit_78_is_fatal_with_the_miners_message_and_no_restart() -> None:
    runtime = FakeRuntime({"a": True})
    watcher = _watcher(runtime, FakeProber(), "a")
    await watcher.adopt()
    await watcher.handle("a", Exited(watcher.clock(), 78, None, False, "error: MINER_AXON_PORT: cannot bind"))
    rec = watcher.miners["a"].record
    assert rec.state is State.FATAL and rec.detail == "error: MINER_AXON_PORT: cannot bind"
    assert runtime.calls == []


async def test_failed_probes_restart_the_miner() -> None:
    runtime = FakeRuntime({"a": True})
    prober = FakeProber()
    prober.healthy["a"] = False
    watcher = _watcher(runtime, prober, "a")
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await _until(lambda: ("restart", "a") in runtime.calls)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert watcher.miners["a"].record.restarts_by_reason.get("probe-failed") == 1


async def test_a_start_the_runtime_cannot_do_counts_as_a_failed_start() -> None:
    runtime = FakeRuntime({"a": False})
    runtime.fail_start.add("a")
    watcher = _watcher(runtime, FakeProber(), "a")
    await watcher.adopt()
    rec = watcher.miners["a"].record
    assert rec.state is State.BACKOFF
    assert "no container for miner a" in rec.detail


async def test_stop_is_prompt_and_touches_no_miner() -> None:
    runtime = FakeRuntime({"a": True, "b": True})
    watcher = Watcher(
        [(_target("a"), POLICY), (_target("b"), POLICY)], runtime, FakeProber(), probe_interval=3600
    )
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await _until(lambda: watcher.adopted)
    stop.set()
    await asyncio.wait_for(task, 1.0)
    assert runtime.calls == []


def test_snapshot_metrics_and_page_show_every_miner() -> None:
    async def scenario() -> Watcher:
        runtime = FakeRuntime({"a": True, "b": False})
        watcher = _watcher(runtime, FakeProber(), "a", "b")
        await watcher.adopt()
        await watcher.probe_one(watcher.miners["a"])
        return watcher

    watcher = asyncio.run(scenario())
    snap = watcher.snapshot()
    assert [m["name"] for m in snap["miners"]] == ["a", "b"]
    a = snap["miners"][0]
    assert (
        a["state"] == "RUNNING"
        and a["last_probe"]["verdict"] == "healthy"
        and "completion" not in a["last_probe"]
    )
    text = metrics_text(snap)
    assert 'minerfleet_miner_state{miner="a",state="RUNNING"} 1' in text
    assert 'minerfleet_miner_state{miner="b",state="STARTING"} 1' in text
    assert 'minerfleet_probe_ttft_seconds{miner="a"} 0.010000' in text
    assert "# TYPE minerfleet_restarts_total counter" in text
    html = page(snap)
    assert "<td>a</td>" in html and "RUNNING" in html


@pytest.mark.parametrize(
    ("log", "line"),
    [
        ("INFO loading\nerror: MINER_X: bad\n", "error: MINER_X: bad"),
        (
            "INFO a\n2026 ERROR miner=x forward exception: boom\nINFO stopping\n",
            "2026 ERROR miner=x forward exception: boom",
        ),
        ("INFO all fine\nINFO stopping\n", ""),
        ("Traceback (most recent call last):\n  File x\nValueError: nope\n", "ValueError: nope"),
    ],
)
def test_last_error_line(log: str, line: str) -> None:
    assert last_error_line(log) == line


def test_diff_events_from_polls() -> None:
    up = {"a": ProcessInfo("a", True, True, "1")}
    down = {"a": ProcessInfo("a", True, False, "", exit_code=75, detail="x")}
    again = {"a": ProcessInfo("a", True, True, "2")}
    assert diff_events(up, down) == [ProcessExited("a", 75, None, False, "x")]
    assert diff_events(down, again) == [ProcessStarted("a", "2")]
    assert diff_events(up, again)[0] == ProcessExited("a", None, None, False, "")
    assert diff_events(up, up) == []
