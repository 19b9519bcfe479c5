"""The watch loop: one process that keeps the fleet streaming.

Three loops share one event loop and one record per unit (each miner, each model server): the
runtime's events (a process started or exited, the operator stopping something), probes (a miner's
stream every ``probe.interval``, a model server's ``GET /health``; every few seconds while starting)
and a tick (backoff deadlines). Each event goes through the pure policy
(``orchestrator.policy.transition``); the actions it returns go to the runtime. Every state change is
logged as one structured line and saved to the state file (``orchestrator.watch.statefile``).

The operator wins: a stop the orchestrator did not cause leaves the unit STOPPED; for a while after
any such stop in the project (``compose down`` stops them one after another) no unit leaves BACKOFF;
a container being removed is not started. On SIGTERM the watch makes no further decision at all.

All loops sleep on the stop event, not on a clock, so SIGTERM ends the watch at once, and units are
left running: the next watch adopts them without restarting anything, with the records it saved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from orchestrator.policy import (
    Action,
    Adopted,
    Blame,
    Event,
    Exited,
    MinerRecord,
    OperatorStopped,
    ProbeResult,
    Reason,
    RestartPolicy,
    Resumed,
    Started,
    State,
    Tick,
    transition,
)
from orchestrator.probing.modelservers import ServerReport, ServerTarget, ServerVerdict
from orchestrator.probing.reports import ProbeReport, ProbeTarget, Verdict
from orchestrator.runtimes.base import (
    OperatorStop,
    ProcessExited,
    ProcessStarted,
    Runtime,
    RuntimeFailure,
    RuntimeGone,
)
from orchestrator.status.fleetstatus import FleetStatus, Role
from orchestrator.status.metrics import FleetMetrics
from orchestrator.status.view import snapshot as status_of
from orchestrator.watch.statefile import StateFile
from orchestrator.watch.units import Probe, ServerHealth, Watched, wait

log = logging.getLogger("orchestrator.watch")

STARTING_PROBE_INTERVAL = 2.0  # a starting miner is probed this often, so it turns RUNNING quickly
TICK_INTERVAL = 0.5  # resolution of backoff deadlines
OPERATOR_HOLD = 30.0
"""Seconds after the operator stops any unit of the project during which no unit leaves BACKOFF:
``compose down`` stops the services one after another (up to their stop grace period each), and a unit
started meanwhile would be left running, and the network with it."""
FLEET_CHECK_INTERVAL = 5.0  # how often the watch looks whether its fleet file changed under it
LIVENESS_INTERVAL = 5.0
"""Seconds between a running miner's liveness checks (``GET /health``, which its event loop answers and
counts nowhere), between its stream probes: a hung miner (paused, deadlocked) fails one every interval, and
``unhealthy_after_failed_probes`` of them restart it, in well under a minute with the shipped numbers."""


class Watcher:
    """Runs the policy for every miner and model server against one runtime."""

    def __init__(
        self,
        miners: Sequence[tuple[ProbeTarget, RestartPolicy]],
        runtime: Runtime,
        prober: Probe,
        probe_interval: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        *,
        servers: Sequence[tuple[ServerTarget, RestartPolicy]] = (),
        checker: ServerHealth | None = None,
        state: StateFile | None = None,
        metrics: FleetMetrics | None = None,
        fleet_check: Callable[[], str | None] | None = None,
        dependents: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics  # probe results over time (counters, histograms), beside the last values
        self.prober = prober
        self.checker = checker
        self.probe_interval = probe_interval
        self.clock = clock
        self.wall_clock = wall_clock
        self.state = state
        self.miners = {t.name: Watched(t, p, MinerRecord(name=t.name)) for t, p in miners}
        self.servers = {
            t.name: Watched(t, p, MinerRecord(name=t.name), Role.model_server) for t, p in servers
        }
        if servers and checker is None:
            raise ValueError("model servers need a checker")
        self.units: dict[str, Watched] = {**self.servers, **self.miners}
        self.started_at = clock()
        self.adopted = False
        self.operator_stop_at: float | None = None  # monotonic: the last stop the operator made
        # What says whether the fleet file changed since this watch loaded it (None: unchanged), and
        # what it said last: while it has changed, the watch's targets and policy may be stale (ports,
        # miners, settings), so it decides nothing on failures until it runs on the new file.
        self.fleet_check = fleet_check
        self.fleet_changed: str | None = None
        # Model server unit -> the miners that use it: probed again as soon as it is back.
        self.dependents = {name: tuple(users) for name, users in (dependents or {}).items()}
        self._stop: asyncio.Event | None = None

    @property
    def stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    # --- the policy -------------------------------------------------------------------------------

    def apply(self, name: str, event: Event) -> list[Action]:
        watched = self.units[name]
        record, actions = transition(watched.record, event, watched.policy)
        watched.record = record
        if record.decision is not None:
            log.info(record.decision.log_line())
            self.save()
        return actions

    def save(self) -> None:
        if self.state is not None:
            self.state.save({name: w.record for name, w in self.units.items()})

    async def execute(self, name: str, actions: list[Action]) -> None:
        for action in actions:
            if self.stopping and action is not Action.STOP:
                log.info("unit=%s action=%s skipped: the watch is stopping", name, action.value)
                return
            try:
                if action is Action.START:
                    await self.runtime.start(name)
                elif action is Action.RESTART:
                    await self.runtime.restart(name)
                else:
                    await self.runtime.stop(name)
            except RuntimeGone as exc:
                # Someone is tearing it down (`compose down`): theirs to decide, not a failed start.
                log.info("unit=%s action=%s not done: %s", name, action.value, exc)
                await self.handle(name, OperatorStopped(self.clock()))
            except RuntimeFailure as exc:
                log.error("unit=%s action=%s failed: %s", name, action.value, exc)
                if action is not Action.STOP:
                    # The start did not happen: to the policy that is a failed start, with backoff.
                    failed = Exited(self.clock(), exit_code=None, detail=str(exc), cause=Reason.START_FAILED)
                    await self.handle(name, failed)

    async def handle(self, name: str, event: Event) -> None:
        if self.stopping:
            return  # SIGTERM: no decision after it, so none can fight the teardown that sent it
        if isinstance(event, Started | Exited):
            self.units[name].proven = False  # a new process: it proves itself again
        actions = self.apply(name, event)
        if any(a in (Action.START, Action.RESTART) for a in actions):
            self.units[name].proven = False
        await self.execute(name, actions)

    # --- the loops --------------------------------------------------------------------------------

    async def adopt(self) -> None:
        """Take over whatever runs now, with the records the previous watch saved: running units are
        not restarted; the others are started unless their record says to leave them (FATAL, STOPPED)
        or to wait (BACKOFF)."""
        saved = self.state.load() if self.state is not None else {}
        infos = await self.runtime.inspect(list(self.units))
        for name, info in infos.items():
            record = saved.get(name)
            event: Event
            if record is None:
                event = Adopted(self.clock(), running=info.running)
            else:
                self.units[name].record = record
                event = Resumed(
                    self.clock(), info.running, info.exit_code, info.signal, info.oom, info.detail
                )
            await self.handle(name, event)
        self.save()
        self.adopted = True

    async def watch_events(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async for event in self.runtime.events(list(self.units)):
                    now = self.clock()
                    if isinstance(event, OperatorStop):
                        self.operator_stop_at = now
                        if event.name in self.units:
                            log.info("unit=%s stopped by the operator (%s)", event.name, event.what)
                            await self.handle(event.name, OperatorStopped(now))
                    elif isinstance(event, ProcessStarted):
                        await self.handle(event.name, Started(now))
                    elif isinstance(event, ProcessExited):
                        exited = Exited(
                            now, event.exit_code, event.signal, event.oom, event.detail, event.cause
                        )
                        await self.handle(event.name, exited)
            except RuntimeFailure as exc:
                log.error("runtime %s events: %s; retrying", self.runtime.name, exc)
            if await wait(stop, 2.0):
                return

    def held(self, now: float) -> bool:
        """Whether nothing leaves BACKOFF now: the operator stopped something a moment ago, or the fleet
        file changed under this watch."""
        if self.fleet_changed is not None:
            return True
        return self.operator_stop_at is not None and now - self.operator_stop_at < OPERATOR_HOLD

    def due_for_probe(self, watched: Watched, now: float) -> bool:
        if watched.probing or watched.record.state not in (State.STARTING, State.RUNNING, State.UNHEALTHY):
            return False
        if watched.probe_requested:
            return True
        interval = STARTING_PROBE_INTERVAL if watched.record.state is State.STARTING else self.probe_interval
        interval = min(interval, self.probe_interval)
        return watched.last_probe_at is None or now - watched.last_probe_at >= interval

    async def probe_one(self, watched: Watched) -> None:
        watched.probing = True
        quick = watched.probe_requested  # its model server is back: a first chunk tells enough
        watched.probe_requested = False  # a request made while this probe runs asks for another one
        try:
            result = await self._probe(watched, quick=quick)
        finally:
            watched.probing = False
        if not result.ok and self.fleet_changed is not None:
            return  # probed where the old fleet file said: no restart on that (shown in the status)
        was = watched.record.state
        first_pass = result.ok and not watched.proven  # since its process started, or this watch did
        if result.ok:
            watched.proven = True
        await self.handle(watched.target.name, result)
        if watched.role is Role.model_server and watched.record.state is State.RUNNING:
            if was is not State.RUNNING:
                self.reprobe_dependents(watched.target.name)
            if first_pass:
                await self.warm(watched)

    async def warm(self, watched: Watched) -> None:
        """Batch every slot of a model server once, before validators do (``ServerChecker.warm``)."""
        assert self.checker is not None and isinstance(watched.target, ServerTarget)
        warmed = await self.checker.warm(watched.target)
        if warmed.answered == warmed.slots:
            log.info("unit=%s warmed %d slot(s) in %.1fs", warmed.name, warmed.slots, warmed.elapsed)
        else:  # a nicety, not health: the checks decide what is wrong with it
            log.warning(
                "unit=%s warm-up: %d of %d slot(s) answered in %.1fs (%s)",
                warmed.name, warmed.answered, warmed.slots, warmed.elapsed, warmed.error,
            )  # fmt: skip

    def reprobe_dependents(self, server: str) -> None:
        """A model server is back: its miners are probed at the loop's next pass, not an interval later,
        so a miner that said "dependency down" is shown RUNNING within seconds."""
        for name in self.dependents.get(server, ()):
            miner = self.miners.get(name)
            if miner is not None:
                # Even one probing now: that probe may have asked before the server was back.
                miner.probe_requested = True

    def due_for_liveness(self, watched: Watched, now: float) -> bool:
        if watched.role is not Role.miner or watched.checking_alive or not watched.proven:
            return False
        if watched.record.state not in (State.RUNNING, State.UNHEALTHY) or watched.last_probe_at is None:
            return False  # starting (the model may be loading): the stream probes and the grace decide
        last = max(watched.last_probe_at, watched.last_alive_at or 0.0)
        return now - last >= min(LIVENESS_INTERVAL, self.probe_interval)

    async def liveness_one(self, watched: Watched) -> None:
        """A cheap check between stream probes: a miner whose HTTP server does not answer at all (paused,
        hung) fails like a probe; one that answers changes nothing (the stream probe judges the rest)."""
        watched.checking_alive = True
        try:
            problem = await self.prober.alive(watched.target)  # type: ignore[arg-type]
        finally:
            watched.checking_alive = False
            watched.last_alive_at = self.clock()
        if problem is None or self.fleet_changed is not None or self.stopping:
            return
        if watched.record.state in (State.RUNNING, State.UNHEALTHY):
            await self.handle(watched.target.name, ProbeResult(self.clock(), False, problem, Blame.SELF))

    async def _probe(self, watched: Watched, quick: bool = False) -> ProbeResult:
        """Probe a unit the way its role needs (``quick``: a miner to its first chunk only); the result as
        the policy reads it."""
        report: ProbeReport | ServerReport
        blame = Blame.SELF
        if isinstance(watched.target, ServerTarget):
            assert self.checker is not None
            report = await self.checker.check(watched.target)
            if report.verdict is ServerVerdict.loading:
                blame = Blame.LOADING
            if self.metrics is not None:
                self.metrics.checked(watched.target.name, report)
        else:
            probe = self.prober.first_chunk if quick else self.prober.probe
            report = await probe(watched.target)
            if report.verdict is Verdict.dependency_down:
                blame = Blame.DEPENDENCY  # restarting the miner cannot bring its server back
            elif report.verdict in (Verdict.busy, Verdict.slow):
                blame = Blame.LOAD  # it answers validators; a restart would drop their streams
            if self.metrics is not None:
                self.metrics.probed(watched.target.name, report)
        watched.last_probe = report
        watched.last_probe_at = self.clock()
        if report.healthy:
            reason = ""
        elif blame is Blame.DEPENDENCY:
            reason = report.reason  # the record's reason is "dependency-down" already: name it once
        else:
            reason = f"{report.verdict.value}: {report.reason}".rstrip(": ")
        return ProbeResult(self.clock(), report.healthy, reason, blame)

    async def probe_loop(self, stop: asyncio.Event) -> None:
        running: set[asyncio.Task[None]] = set()
        try:
            while not await wait(stop, min(STARTING_PROBE_INTERVAL, self.probe_interval)):
                now = self.clock()
                for watched in self.units.values():
                    due = []
                    if self.due_for_probe(watched, now):
                        due.append((self.probe_one(watched), f"probe-{watched.target.name}"))
                    if self.due_for_liveness(watched, now):
                        due.append((self.liveness_one(watched), f"alive-{watched.target.name}"))
                    for work, name in due:
                        task = asyncio.create_task(work, name=name)
                        running.add(task)
                        task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()

    async def tick(self) -> None:
        """Let time pass for every unit (backoff deadlines, healthy periods)."""
        now = self.clock()
        held = self.held(now)
        for name, watched in self.units.items():
            if held and watched.record.state is State.BACKOFF:
                continue  # the operator is stopping things: wait until they are done
            await self.handle(name, Tick(now))

    async def tick_loop(self, stop: asyncio.Event) -> None:
        while not await wait(stop, TICK_INTERVAL):
            await self.tick()

    async def check_fleet(self) -> None:
        if self.fleet_check is None:
            return
        changed = await asyncio.to_thread(self.fleet_check)
        if changed and changed != self.fleet_changed:
            log.warning(
                "%s: no restarts until the watch runs on it (compose: `make up`; supervisor: render, "
                "`supervisorctl update`, then start the watch again)",
                changed,
            )
        elif self.fleet_changed and not changed:
            log.info("the fleet file is back to the one this watch runs on: deciding again")
        self.fleet_changed = changed

    async def fleet_loop(self, stop: asyncio.Event) -> None:
        while not await wait(stop, FLEET_CHECK_INTERVAL):
            await self.check_fleet()

    async def run(self, stop: asyncio.Event) -> None:
        """Adopt, then watch until ``stop`` is set. Units are left as they are on return."""
        self._stop = stop
        await self.adopt()
        loops = [
            asyncio.create_task(self.watch_events(stop), name="events"),
            asyncio.create_task(self.probe_loop(stop), name="probes"),
            asyncio.create_task(self.tick_loop(stop), name="ticks"),
            asyncio.create_task(self.fleet_loop(stop), name="fleet"),
        ]
        try:
            await stop.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            self.save()

    # --- what the status API shows ----------------------------------------------------------------

    def wall(self, monotonic: float | None) -> float | None:
        return None if monotonic is None else monotonic - self.clock() + self.wall_clock()

    def snapshot(self) -> FleetStatus:
        """What ``/status`` serves (:mod:`orchestrator.status.view`)."""
        return status_of(self)
