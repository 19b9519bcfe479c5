"""The watch loop with a fake runtime and a fake prober: adoption, actions, failures, prompt stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from orchestrator.policy import Exited, RestartPolicy, State, StopRequested
from orchestrator.probing.modelservers import ServerReport, ServerTarget, ServerVerdict, Warmed
from orchestrator.probing.reports import ProbeReport, ProbeTarget, Verdict
from orchestrator.runtimes.base import (
    OperatorStop,
    ProcessExited,
    ProcessInfo,
    ProcessStarted,
    RuntimeEvent,
    RuntimeFailure,
    RuntimeGone,
    diff_events,
    last_error_line,
)
from orchestrator.status.app import metrics_text, page
from orchestrator.status.fleetstatus import FleetStatus
from orchestrator.watch.loop import OPERATOR_HOLD, Watcher
from orchestrator.watch.statefile import StateFile
from orchestrator.watch.supervise import format_status

POLICY = RestartPolicy(backoff_initial=0.05, backoff_max=0.1, start_grace=0, unhealthy_after_failed_probes=2)


class FakeRuntime:
    name = "fake"

    def __init__(self, running: dict[str, bool]) -> None:
        self.running = dict(running)
        self.calls: list[tuple[str, str]] = []
        self.queue: asyncio.Queue[RuntimeEvent] = asyncio.Queue()
        self.fail_start: set[str] = set()
        self.gone: set[str] = set()  # containers being removed (compose down)
        self.exit_codes: dict[str, int] = {}

    async def inspect(self, names: Sequence[str]) -> dict[str, ProcessInfo]:
        return {
            n: ProcessInfo(
                n, exists=True, running=self.running.get(n, False), exit_code=self.exit_codes.get(n)
            )
            for n in names
        }

    async def start(self, name: str) -> None:
        self.calls.append(("start", name))
        if name in self.gone:
            raise RuntimeGone(f"the container of {name} is removing: not starting it")
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
        self.dependency_down: set[str] = set()  # these answer 503 "dependency down: ..."
        self.probes = 0
        self.hung: set[str] = set()  # these do not answer HTTP at all (paused)
        self.liveness_checks = 0
        self.first_chunks = 0  # quick probes: to the first chunk only

    async def alive(self, target: ProbeTarget) -> str | None:
        self.liveness_checks += 1
        return "unresponsive: no HTTP answer within 5s" if target.name in self.hung else None

    async def first_chunk(self, target: ProbeTarget) -> ProbeReport:
        self.first_chunks += 1
        return await self.probe(target)

    async def probe(self, target: ProbeTarget) -> ProbeReport:
        self.probes += 1
        if target.name in self.dependency_down:
            return ProbeReport(
                target.name, target.hotkey, target.port, target.backend, target.protocol,
                Verdict.dependency_down, "model server http://model-server:8000 unreachable",
                503, None, 0, None, 0, 0.01,
            )  # fmt: skip
        ok = self.healthy.get(target.name, True)
        return ProbeReport(
            target.name, target.hotkey, target.port, target.backend, target.protocol,
            Verdict.healthy if ok else Verdict.timeout, "" if ok else "no complete answer within 1s",
            200 if ok else 408, 0.01 if ok else None, 1 if ok else 0, 100.0 if ok else None, 5, 0.02,
        )  # fmt: skip


class FakeChecker:
    """A model server's GET /health: 200, 503 (loading) or no answer, as the test sets it."""

    def __init__(self) -> None:
        self.status: dict[str, int | None] = {}
        self.warmed: list[str] = []  # the servers whose slots were warmed, in order

    async def check(self, target: ServerTarget) -> ServerReport:
        status = self.status.get(target.name, 200)
        if status == 200:
            return ServerReport(target.name, ServerVerdict.healthy, "", 200, 0.01)
        if status == 503:
            return ServerReport(target.name, ServerVerdict.loading, "HTTP 503: loading", 503, 0.01)
        return ServerReport(target.name, ServerVerdict.down, "connection refused", None, 0.01)

    async def warm(self, target: ServerTarget) -> Warmed:
        self.warmed.append(target.name)
        return Warmed(target.name, target.slots, target.slots, 0.01)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


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
    assert [m.name for m in snap.miners] == ["a", "b"]
    a = snap.miners[0]
    assert a.state is State.RUNNING and a.last_probe is not None and a.last_probe.verdict == "healthy"
    served = snap.to_json()["miners"][0]
    assert served["last_probe"]["verdict"] == "healthy" and "completion" not in served["last_probe"]
    assert FleetStatus.from_json(snap.to_json()) == snap  # what the CLI reads back is what was served
    text = metrics_text(snap)
    assert 'minerfleet_miner_state{miner="a",state="RUNNING"} 1' in text
    assert 'minerfleet_miner_state{miner="b",state="STARTING"} 1' in text
    assert 'minerfleet_probe_ttft_seconds{miner="a"} 0.01' in text
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


# --- the operator wins -----------------------------------------------------------------------------


def _virtual(runtime: FakeRuntime, *names: str, **kwargs: object) -> tuple[Watcher, Clock]:
    clock = Clock()
    watcher = Watcher(
        [(_target(n), POLICY) for n in names], runtime, FakeProber(), probe_interval=3600,
        clock=clock, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    return watcher, clock


async def _drain(watcher: Watcher, runtime: FakeRuntime) -> None:
    """Feed every queued runtime event to the watcher (what watch_events does), without its loop."""
    task = asyncio.create_task(watcher.watch_events(asyncio.Event()))
    await _until(lambda: runtime.queue.empty())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_an_operator_stop_is_not_undone() -> None:
    runtime = FakeRuntime({"a": True})
    watcher, clock = _virtual(runtime, "a")
    await watcher.adopt()
    # `docker stop a`: the engine reports the stop signal, then the exit (137: it ignored SIGTERM).
    runtime.running["a"] = False
    runtime.queue.put_nowait(OperatorStop("a", "docker kill signal 15"))
    runtime.queue.put_nowait(ProcessExited("a", 137, None, False, ""))
    await _drain(watcher, runtime)
    clock.now += 3600
    await watcher.tick()
    rec = watcher.miners["a"].record
    assert (rec.state, rec.reason, rec.restarts) == (State.STOPPED, "stopped-by-operator", 0)
    assert runtime.calls == []


async def test_no_unit_leaves_backoff_while_the_operator_tears_the_project_down() -> None:
    """`compose down` with `a` in BACKOFF: the others are stopped one after another; `a` stays down."""
    runtime = FakeRuntime({"a": True, "b": True})
    watcher, clock = _virtual(runtime, "a", "b")
    await watcher.adopt()
    await watcher.handle("a", Exited(clock(), 1))
    assert watcher.miners["a"].record.state is State.BACKOFF
    runtime.queue.put_nowait(OperatorStop("b", "docker kill signal 15"))
    runtime.queue.put_nowait(OperatorStop("orchestrator", "docker kill signal 15"))
    await _drain(watcher, runtime)
    clock.now += OPERATOR_HOLD - 1  # the backoff (0.05 s) is long over
    await watcher.tick()
    assert runtime.calls == [] and watcher.miners["a"].record.state is State.BACKOFF
    # The container is being removed when the hold ends: still not started, and not a failed start.
    runtime.gone.add("a")
    clock.now += 2
    await watcher.tick()
    rec = watcher.miners["a"].record
    assert (rec.state, rec.reason, rec.restarts) == (State.STOPPED, "stopped-by-operator", 1)
    assert watcher.miners["b"].record.state is State.STOPPED


async def test_after_the_hold_a_backoff_ends_as_usual() -> None:
    runtime = FakeRuntime({"a": True, "b": True})
    watcher, clock = _virtual(runtime, "a", "b")
    await watcher.adopt()
    runtime.queue.put_nowait(OperatorStop("b", "docker stop"))
    await _drain(watcher, runtime)
    await watcher.handle("a", Exited(clock(), 1))
    clock.now += OPERATOR_HOLD + 1
    await watcher.tick()
    assert runtime.calls == [("start", "a")]


async def test_after_sigterm_the_watch_decides_nothing() -> None:
    runtime = FakeRuntime({"a": True})
    watcher, clock = _virtual(runtime, "a")
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await _until(lambda: watcher.adopted)
    await watcher.handle("a", Exited(clock(), 1))
    stop.set()
    await asyncio.wait_for(task, 2)
    clock.now += 3600
    await watcher.tick()
    await watcher.handle("a", StopRequested(clock()))
    assert runtime.calls == [] and watcher.miners["a"].record.state is State.BACKOFF


# --- decisions survive the watch's own restart -------------------------------------------------------


async def test_a_restarted_watch_keeps_its_decisions(tmp_path: Path) -> None:
    state = tmp_path / "state" / "orchestrator.json"
    runtime = FakeRuntime({"fatal": True, "stopped": True, "crashy": True, "fresh": True})
    clock = Clock()
    first = Watcher(
        [(_target(n), POLICY) for n in ("fatal", "stopped", "crashy")], runtime, FakeProber(), 3600,
        clock=clock, state=StateFile(state, clock=clock, wall_clock=lambda: clock.now + 1e9),
    )  # fmt: skip
    await first.adopt()
    runtime.running.update(fatal=False, crashy=False)
    await first.handle("fatal", Exited(clock(), 78, detail="error: MINER_AXON__PORT: in use"))
    await first.handle("stopped", StopRequested(clock()))
    await first.handle("crashy", Exited(clock(), 1))
    clock.now += 1
    await first.tick()  # crashy: backoff over, started again
    assert runtime.calls == [("stop", "stopped"), ("start", "crashy")]

    # The watch restarts (its monotonic clock starts over); every container is as it left them.
    runtime.calls.clear()
    runtime.exit_codes.update(fatal=78, stopped=0)
    clock2 = Clock(5.0)
    second = Watcher(
        [(_target(n), POLICY) for n in ("fatal", "stopped", "crashy", "fresh")], runtime, FakeProber(), 3600,
        clock=clock2, state=StateFile(state, clock=clock2, wall_clock=lambda: clock2.now - 5 + 1001 + 1e9),
    )  # fmt: skip
    await second.adopt()
    assert runtime.calls == []  # "fresh" (no record) runs: adopted; the others are left as saved
    recs = {name: w.record for name, w in second.miners.items()}
    assert (recs["fatal"].state, recs["fatal"].detail) == (State.FATAL, "error: MINER_AXON__PORT: in use")
    assert (recs["stopped"].state, recs["stopped"].reason) == (State.STOPPED, "stop-requested")
    assert (recs["crashy"].state, recs["crashy"].restarts) == (State.RUNNING, 1)
    assert recs["crashy"].recent_restarts == pytest.approx((5.0 - 1.0,))  # 1 s ago, on the new clock
    assert recs["fresh"].state is State.RUNNING and recs["fresh"].reason == "adopted"
    clock2.now += 3600
    await second.tick()
    assert ("start", "fatal") not in runtime.calls and ("start", "stopped") not in runtime.calls


async def test_a_corrupt_state_file_starts_fresh(tmp_path: Path) -> None:
    state = tmp_path / "orchestrator.json"
    state.write_text("{garbage")
    runtime = FakeRuntime({"a": False})
    watcher, _ = _virtual(runtime, "a", state=StateFile(state))
    await watcher.adopt()
    assert runtime.calls == [("start", "a")]
    assert '"STARTING"' in state.read_text()  # and the file is whole again


# --- openai miners and their model server ------------------------------------------------------------


async def test_a_miner_whose_model_server_is_down_is_not_restarted_and_recovers() -> None:
    runtime = FakeRuntime({"shared-1": True})
    prober = FakeProber()
    watcher = Watcher([(_target("shared-1"), POLICY)], runtime, prober, probe_interval=3600)
    await watcher.adopt()
    prober.dependency_down.add("shared-1")
    for _ in range(POLICY.unhealthy_after_failed_probes * 5):
        await watcher.probe_one(watcher.miners["shared-1"])
    rec = watcher.miners["shared-1"].record
    assert (rec.state, rec.reason, rec.restarts) == (State.UNHEALTHY, "dependency-down", 0)
    assert "model server" in rec.detail and runtime.calls == []
    probe = watcher.snapshot().miner("shared-1").last_probe
    assert probe is not None and probe.verdict is Verdict.dependency_down
    prober.dependency_down.clear()
    await watcher.probe_one(watcher.miners["shared-1"])
    assert watcher.miners["shared-1"].record.state is State.RUNNING


async def test_a_hung_miner_fails_its_liveness_checks_and_is_restarted_between_stream_probes() -> None:
    runtime = FakeRuntime({"hung-1": True})
    prober = FakeProber()
    clock = Clock()
    watcher = Watcher([(_target("hung-1"), POLICY)], runtime, prober, probe_interval=30, clock=clock)
    await watcher.adopt()
    miner = watcher.miners["hung-1"]
    clock.now += 5
    assert not watcher.due_for_liveness(miner, clock.now)  # adopted, not yet proven by a stream probe
    await watcher.probe_one(miner)  # a healthy stream probe: the next one is 30 s away
    clock.now += 5
    assert watcher.due_for_liveness(miner, clock.now) and not watcher.due_for_probe(miner, clock.now)
    await watcher.liveness_one(miner)  # it answers: nothing changes
    assert miner.record.state is State.RUNNING and prober.liveness_checks == 1
    prober.hung.add("hung-1")  # docker pause
    for _ in range(POLICY.unhealthy_after_failed_probes):
        clock.now += 5
        assert watcher.due_for_liveness(miner, clock.now)
        await watcher.liveness_one(miner)
    assert runtime.calls == [("restart", "hung-1")]
    assert miner.record.restarts_by_reason == {"probe-failed": 1}
    assert "unresponsive: no HTTP answer" in miner.record.detail
    clock.now += 60
    assert not watcher.due_for_liveness(miner, clock.now)  # restarted: it proves itself again first


async def test_an_adopted_miner_still_loading_is_not_restarted_by_liveness_checks() -> None:
    """A container that runs but whose miner still loads its model has no open port yet: only the stream
    probes and the grace decide until one has passed (CI once saw such a miner restarted at once)."""
    runtime = FakeRuntime({"loading-1": True})
    prober = FakeProber()
    prober.hung.add("loading-1")  # nothing answers on its port yet
    clock = Clock()
    watcher = Watcher([(_target("loading-1"), POLICY)], runtime, prober, probe_interval=30, clock=clock)
    await watcher.adopt()
    miner = watcher.miners["loading-1"]
    assert miner.record.state is State.RUNNING  # adopted as running
    for _ in range(10):
        clock.now += 5
        assert not watcher.due_for_liveness(miner, clock.now)
    assert runtime.calls == []


async def test_a_starting_miner_gets_no_liveness_checks() -> None:
    runtime = FakeRuntime({"loading-1": False})
    watcher = Watcher([(_target("loading-1"), POLICY)], runtime, FakeProber(), probe_interval=30)
    await watcher.adopt()
    miner = watcher.miners["loading-1"]
    assert miner.record.state is State.STARTING
    assert not watcher.due_for_liveness(miner, watcher.clock() + 3600)


async def test_a_model_server_back_up_gets_its_miners_probed_again_at_once() -> None:
    runtime = FakeRuntime({"shared-1": True, "model-server": True})
    checker = FakeChecker()
    prober = FakeProber()
    clock = Clock()
    watcher = Watcher(
        [(_target("shared-1"), POLICY)], runtime, prober, probe_interval=3600, clock=clock,
        servers=[(ServerTarget("model-server", "model-server", 8000), POLICY)], checker=checker,
        dependents={"model-server": ["shared-1"]},
    )  # fmt: skip
    await watcher.adopt()
    miner, server = watcher.miners["shared-1"], watcher.servers["model-server"]
    prober.dependency_down.add("shared-1")
    await watcher.probe_one(miner)
    assert (miner.record.state, miner.record.reason) == (State.UNHEALTHY, "dependency-down")
    # The reason names the cause once (the verdict is the record's reason; the detail says what is down).
    assert miner.record.detail == "model server http://model-server:8000 unreachable"
    checker.status["model-server"] = None
    await watcher.probe_one(server)
    assert server.record.state is State.UNHEALTHY
    assert not watcher.due_for_probe(miner, clock.now)  # an hour away
    prober.dependency_down.clear()
    checker.status["model-server"] = 200
    await watcher.probe_one(server)  # back: RUNNING again
    assert server.record.state is State.RUNNING
    assert watcher.due_for_probe(miner, clock.now)  # at the loop's next pass, not an hour later
    await watcher.probe_one(miner)
    assert miner.record.state is State.RUNNING
    assert prober.first_chunks == 1  # read to its first chunk: a recovery followed in about a second
    assert not watcher.due_for_probe(miner, clock.now)  # once
    await watcher.probe_one(miner)
    assert prober.first_chunks == 1  # the probes after it are whole again


async def test_a_probe_in_flight_when_the_server_comes_back_is_followed_by_another() -> None:
    runtime = FakeRuntime({"shared-1": True, "model-server": True})
    clock = Clock()
    watcher = Watcher(
        [(_target("shared-1"), POLICY)], runtime, FakeProber(), probe_interval=3600, clock=clock,
        servers=[(ServerTarget("model-server", "model-server", 8000), POLICY)], checker=FakeChecker(),
        dependents={"model-server": ["shared-1"]},
    )  # fmt: skip
    await watcher.adopt()
    miner = watcher.miners["shared-1"]
    miner.probing = True  # a probe that asked while the server was still down
    watcher.reprobe_dependents("model-server")
    assert not watcher.due_for_probe(miner, clock.now)  # not two at once
    miner.probing = False
    miner.last_probe_at = clock.now  # it ended just now (with the stale answer)
    assert watcher.due_for_probe(miner, clock.now)  # yet another follows at once


def _with_server(runtime: FakeRuntime, checker: FakeChecker) -> tuple[Watcher, Clock]:
    clock = Clock()
    watcher = Watcher(
        [(_target("shared-1"), POLICY)], runtime, FakeProber(), probe_interval=3600, clock=clock,
        servers=[(ServerTarget("model-server", "model-server", 8000), POLICY)], checker=checker,
    )  # fmt: skip
    return watcher, clock


async def test_a_model_server_that_exits_is_started_again() -> None:
    runtime = FakeRuntime({"shared-1": True, "model-server": True})
    watcher, clock = _with_server(runtime, FakeChecker())
    await watcher.adopt()
    assert watcher.servers["model-server"].record.state is State.RUNNING
    runtime.running["model-server"] = False
    runtime.queue.put_nowait(ProcessExited("model-server", 137, None, False, ""))  # docker kill
    await _drain(watcher, runtime)
    assert watcher.servers["model-server"].record.state is State.BACKOFF
    clock.now += 1
    await watcher.tick()
    assert runtime.calls == [("start", "model-server")]
    await watcher.probe_one(watcher.servers["model-server"])
    rec = watcher.servers["model-server"].record
    assert (rec.state, rec.restarts_by_reason) == (State.RUNNING, {"killed:SIGKILL": 1})


async def test_a_model_server_loading_is_starting_and_failing_health_checks_restart_it() -> None:
    runtime = FakeRuntime({"shared-1": True, "model-server": False})
    checker = FakeChecker()
    watcher, clock = _with_server(runtime, checker)
    await watcher.adopt()
    server = watcher.servers["model-server"]
    checker.status["model-server"] = 503
    for _ in range(10):
        clock.now += 60  # far past the grace period: loading still does not count
        await watcher.probe_one(server)
    assert (server.record.state, runtime.calls) == (State.STARTING, [("start", "model-server")])
    checker.status["model-server"] = 200
    await watcher.probe_one(server)
    assert server.record.state is State.RUNNING
    checker.status["model-server"] = None
    for _ in range(POLICY.unhealthy_after_failed_probes):
        await watcher.probe_one(server)
    assert runtime.calls[-1] == ("restart", "model-server")
    assert server.record.restarts_by_reason == {"probe-failed": 1}


async def test_a_model_servers_slots_are_warmed_once_per_process_once_it_answers() -> None:
    runtime = FakeRuntime({"shared-1": True, "model-server": True})
    checker = FakeChecker()
    watcher, clock = _with_server(runtime, checker)
    await watcher.adopt()  # adopted (this watch started beside a running server): not warmed yet
    server = watcher.servers["model-server"]
    checker.status["model-server"] = 503
    await watcher.probe_one(server)
    assert checker.warmed == []  # still loading its model: nothing to batch with
    checker.status["model-server"] = 200
    await watcher.probe_one(server)
    assert checker.warmed == ["model-server"]
    await watcher.probe_one(server)
    assert checker.warmed == ["model-server"]  # once
    runtime.running["model-server"] = False
    runtime.queue.put_nowait(ProcessExited("model-server", 137, None, False, ""))
    await _drain(watcher, runtime)
    clock.now += 1
    await watcher.tick()  # started again: a new process, with its memory to reach again
    await _drain(watcher, runtime)
    await watcher.probe_one(server)
    assert checker.warmed == ["model-server", "model-server"]


async def test_model_servers_are_in_status_metrics_and_the_status_table() -> None:
    runtime = FakeRuntime({"shared-1": True, "model-server": True})
    watcher, _ = _with_server(runtime, FakeChecker())
    await watcher.adopt()
    await watcher.probe_one(watcher.servers["model-server"])
    snap = watcher.snapshot()
    [server] = snap.model_servers
    assert (server.name, server.role, server.state) == ("model-server", "model-server", State.RUNNING)
    assert server.last_check is not None and server.last_check.verdict == "healthy"
    assert [m.name for m in snap.miners] == ["shared-1"]
    assert FleetStatus.from_json(snap.to_json()) == snap
    text = metrics_text(snap)
    assert 'minerfleet_model_server_state{server="model-server",state="RUNNING"} 1' in text
    assert 'minerfleet_model_server_healthy{server="model-server"} 1' in text
    table = format_status(snap)
    assert any(
        line.split()[:4] == ["model-server", "model-server", "8000", "RUNNING"] for line in table.splitlines()
    )
    assert "model servers 1/1 running" in table
    assert "model-server" in page(snap)


async def test_a_watch_whose_fleet_file_changed_decides_nothing_on_failures_until_it_is_back() -> None:
    # The operator edited the fleet file (say, a miner's port) and has not restarted the watch on it
    # yet: what the watch probes may be the old place, so it neither restarts nor starts anything.
    runtime = FakeRuntime({"a": True, "b": False})
    prober = FakeProber()
    changed: list[str | None] = [None]
    watcher = Watcher(
        [(_target(n), POLICY) for n in ("a", "b")], runtime, prober, probe_interval=3600,
        fleet_check=lambda: changed[0],
    )  # fmt: skip
    await watcher.adopt()
    b = watcher.miners["b"]
    await watcher.handle("b", Exited(watcher.clock(), exit_code=1))
    assert b.record.state is State.BACKOFF
    runtime.calls.clear()

    changed[0] = "config/miners.yaml changed since this watch loaded it"
    await watcher.check_fleet()
    prober.healthy["a"] = False
    for _ in range(POLICY.unhealthy_after_failed_probes * 3):
        await watcher.probe_one(watcher.miners["a"])
    await asyncio.sleep(POLICY.backoff_max * 2)
    await watcher.tick()
    assert runtime.calls == []  # no restart of a, no start of b
    assert watcher.miners["a"].record.state is State.RUNNING and b.record.state is State.BACKOFF
    status = watcher.snapshot()
    assert status.fleet_changed == changed[0]
    assert (
        status.miner("a").last_probe is not None and status.miner("a").last_probe.verdict is Verdict.timeout
    )
    assert "held: config/miners.yaml changed" in format_status(status)
    assert "held: config/miners.yaml changed" in page(status)

    changed[0] = None  # the edit undone (or the watch started again on the new file)
    await watcher.check_fleet()
    await watcher.tick()
    assert ("start", "b") in runtime.calls
