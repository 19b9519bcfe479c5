"""The watch loop: one process that keeps the fleet streaming.

Three loops share one event loop and one record per miner: the runtime's events (a process started or
exited), stream probes (every ``probe.interval``; every few seconds while a miner is starting) and a
tick (backoff deadlines). Each event goes through the pure policy (``orchestrator.policy.transition``);
the actions it returns go to the runtime. Every state change is logged as one structured line.

All loops sleep on the stop event, not on a clock, so SIGTERM ends the watch at once, and miners are
left running: the next watch adopts them without restarting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.policy import (
    Action,
    Adopted,
    Event,
    Exited,
    MinerRecord,
    ProbeResult,
    RestartPolicy,
    Started,
    State,
    Tick,
    transition,
)
from orchestrator.probe import ProbeReport, ProbeTarget
from orchestrator.runtimes.base import ProcessExited, ProcessStarted, Runtime, RuntimeFailure

log = logging.getLogger("orchestrator.watch")

STARTING_PROBE_INTERVAL = 2.0  # a starting miner is probed this often, so it turns RUNNING quickly
TICK_INTERVAL = 0.5  # resolution of backoff deadlines


async def wait(stop: asyncio.Event, timeout: float) -> bool:
    """Sleep ``timeout`` seconds or until ``stop`` is set; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout)
    return stop.is_set()


class Probe(Protocol):
    """What the watch needs from a prober (``orchestrator.probe.Prober``); tests pass a fake."""

    async def probe(self, target: ProbeTarget) -> ProbeReport: ...


@dataclass
class Watched:
    """One miner under watch: its policy numbers, where to probe it, and what we know."""

    target: ProbeTarget
    policy: RestartPolicy
    record: MinerRecord
    last_probe: ProbeReport | None = None
    last_probe_at: float | None = None  # monotonic
    probing: bool = False
    log_tail: list[str] = field(default_factory=list)


class Watcher:
    """Runs the policy for every miner against one runtime."""

    def __init__(
        self,
        miners: Sequence[tuple[ProbeTarget, RestartPolicy]],
        runtime: Runtime,
        prober: Probe,
        probe_interval: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.prober = prober
        self.probe_interval = probe_interval
        self.clock = clock
        self.wall_clock = wall_clock
        self.miners = {t.name: Watched(t, p, MinerRecord(name=t.name)) for t, p in miners}
        self.started_at = clock()
        self.adopted = False

    # --- the policy -------------------------------------------------------------------------------

    def apply(self, name: str, event: Event) -> list[Action]:
        watched = self.miners[name]
        record, actions = transition(watched.record, event, watched.policy)
        watched.record = record
        if record.decision is not None:
            log.info(record.decision.log_line())
        return actions

    async def execute(self, name: str, actions: list[Action]) -> None:
        for action in actions:
            try:
                if action is Action.START:
                    await self.runtime.start(name)
                elif action is Action.RESTART:
                    await self.runtime.restart(name)
                else:
                    await self.runtime.stop(name)
            except RuntimeFailure as exc:
                log.error("miner=%s action=%s failed: %s", name, action.value, exc)
                if action is not Action.STOP:
                    # The start did not happen: to the policy that is a failed start, with backoff.
                    await self.handle(name, Exited(self.clock(), exit_code=None, detail=str(exc)))

    async def handle(self, name: str, event: Event) -> None:
        await self.execute(name, self.apply(name, event))

    # --- the loops --------------------------------------------------------------------------------

    async def adopt(self) -> None:
        """Take over whatever runs now: running miners are not restarted, the rest are started."""
        infos = await self.runtime.inspect(list(self.miners))
        for name, info in infos.items():
            await self.handle(name, Adopted(self.clock(), running=info.running))
        self.adopted = True

    async def watch_events(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async for event in self.runtime.events(list(self.miners)):
                    now = self.clock()
                    if isinstance(event, ProcessStarted):
                        await self.handle(event.name, Started(now))
                    elif isinstance(event, ProcessExited):
                        exited = Exited(now, event.exit_code, event.signal, event.oom, event.detail)
                        await self.handle(event.name, exited)
            except RuntimeFailure as exc:
                log.error("runtime %s events: %s; retrying", self.runtime.name, exc)
            if await wait(stop, 2.0):
                return

    def due_for_probe(self, watched: Watched, now: float) -> bool:
        if watched.probing or watched.record.state not in (State.STARTING, State.RUNNING, State.UNHEALTHY):
            return False
        interval = STARTING_PROBE_INTERVAL if watched.record.state is State.STARTING else self.probe_interval
        interval = min(interval, self.probe_interval)
        return watched.last_probe_at is None or now - watched.last_probe_at >= interval

    async def probe_one(self, watched: Watched) -> None:
        watched.probing = True
        try:
            report: ProbeReport = await self.prober.probe(watched.target)
        finally:
            watched.probing = False
        watched.last_probe = report
        watched.last_probe_at = self.clock()
        reason = "" if report.healthy else f"{report.verdict.value}: {report.reason}".rstrip(": ")
        await self.handle(watched.target.name, ProbeResult(self.clock(), report.healthy, reason))

    async def probe_loop(self, stop: asyncio.Event) -> None:
        running: set[asyncio.Task[None]] = set()
        try:
            while not await wait(stop, min(STARTING_PROBE_INTERVAL, self.probe_interval)):
                now = self.clock()
                for watched in self.miners.values():
                    if self.due_for_probe(watched, now):
                        task = asyncio.create_task(
                            self.probe_one(watched), name=f"probe-{watched.target.name}"
                        )
                        running.add(task)
                        task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()

    async def tick_loop(self, stop: asyncio.Event) -> None:
        while not await wait(stop, TICK_INTERVAL):
            now = self.clock()
            for name in self.miners:
                await self.handle(name, Tick(now))

    async def run(self, stop: asyncio.Event) -> None:
        """Adopt, then watch until ``stop`` is set. Miners are left as they are on return."""
        await self.adopt()
        loops = [
            asyncio.create_task(self.watch_events(stop), name="events"),
            asyncio.create_task(self.probe_loop(stop), name="probes"),
            asyncio.create_task(self.tick_loop(stop), name="ticks"),
        ]
        try:
            await stop.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    # --- what the status API shows ----------------------------------------------------------------

    def wall(self, monotonic: float | None) -> float | None:
        return None if monotonic is None else monotonic - self.clock() + self.wall_clock()

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        miners = []
        for name, watched in self.miners.items():
            rec = watched.record
            probe = watched.last_probe.as_dict() if watched.last_probe else None
            if probe is not None:
                probe.pop("completion", None)
                probe["at"] = self.wall(watched.last_probe_at)
            miners.append(
                {
                    "name": name,
                    "backend": watched.target.backend,
                    "port": watched.target.port,
                    "hotkey": watched.target.hotkey,
                    "state": rec.state.value,
                    "reason": rec.reason,
                    "detail": rec.detail,
                    "restarts": rec.restarts,
                    "restarts_by_reason": dict(rec.restarts_by_reason),
                    "last_exit_code": rec.last_exit_code,
                    "backoff_remaining": None
                    if rec.backoff_until is None
                    else max(0.0, rec.backoff_until - now),
                    "last_probe": probe,
                    "history": [
                        {
                            "at": self.wall(d.at),
                            "from": d.from_state.value,
                            "to": d.to_state.value,
                            "reason": d.reason,
                            "detail": d.detail,
                        }
                        for d in rec.history
                    ],
                }
            )
        return {
            "runtime": self.runtime.name,
            "adopted": self.adopted,
            "uptime": now - self.started_at,
            "miners": miners,
        }
