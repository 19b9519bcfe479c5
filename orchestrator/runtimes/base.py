"""The one small interface every runtime implements: start, stop, restart, inspect, events.

The runtime starts, stops and inspects; the policy (``orchestrator.policy``) decides. Blocking client
calls (XML-RPC, the docker SDK) run in threads, never on the event loop.

A supervised *unit* is a miner (named as in the fleet file) or a model server (named as its compose
service / supervisord program: ``model-server`` or ``model-server-NAME``); the runtime treats both alike.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from orchestrator.errors import TemporaryError


class RuntimeFailure(TemporaryError):
    """A runtime call failed (the service is unreachable, the miner's process/container is unknown)."""


class RuntimeGone(RuntimeFailure):
    """The unit's container is gone or being removed, or its program is being stopped: someone else
    (the operator, ``compose down``) is tearing it down, so it is not started."""


@dataclass(frozen=True)
class ProcessInfo:
    """A miner's process as the runtime sees it now."""

    name: str
    exists: bool  # the runtime knows this miner (a supervisord program, a compose container)
    running: bool
    process_id: str = ""  # pid or container id: a new one means a new process
    exit_code: int | None = None  # of the last exit, when not running
    signal: int | None = None  # killed by this signal, when known
    oom: bool = False
    started_at: float | None = None  # wall-clock seconds
    detail: str = ""  # the miner's last error line (or last log line) after an exit
    status: str = ""  # the runtime's own word for it (docker's State.Status, supervisord's statename)
    cause: str = ""  # why it ended when the miner did not end itself (swarm: ``node-down``), else ""


@dataclass(frozen=True)
class ProcessStarted:
    name: str
    process_id: str


@dataclass(frozen=True)
class ProcessExited:
    name: str
    exit_code: int | None
    signal: int | None
    oom: bool
    detail: str
    cause: str = ""  # ProcessInfo.cause


@dataclass(frozen=True)
class OperatorStop:
    """Someone other than the orchestrator is stopping or removing a unit of the project (``docker
    stop``, ``compose down``, ``supervisorctl stop``). ``name`` may be a unit nobody watches (the
    orchestrator's own container): a teardown under way all the same."""

    name: str
    what: str  # e.g. "docker kill SIGTERM", "docker destroy", "supervisord STOPPING"


RuntimeEvent = ProcessStarted | ProcessExited | OperatorStop


class OwnActions:
    """When the orchestrator itself stopped or restarted each unit, so that the stop events those calls
    cause are not mistaken for the operator's.

    An event counts as ours when it happened (by its own timestamp, or when it was observed) during one
    of our calls on that unit, give or take ``slack`` seconds: delivery may lag, the timestamps do not.
    """

    KEEP = 120.0  # seconds an ended call is remembered

    def __init__(self, slack: float, clock: Callable[[], float] = time.time) -> None:
        self.slack = slack
        self._clock = clock
        self._calls: dict[str, list[list[float]]] = {}  # name -> [start, end (inf while running)]

    def begin(self, name: str) -> list[float]:
        now = self._clock()
        calls = [c for c in self._calls.get(name, []) if c[1] > now - self.KEEP]
        call = [now, float("inf")]
        calls.append(call)
        self._calls[name] = calls
        return call

    def end(self, call: list[float]) -> None:
        call[1] = self._clock()

    def ours(self, name: str, at: float | None = None) -> bool:
        """Whether an event of ``name`` at wall-clock time ``at`` (default: now) came from our own call."""
        at = self._clock() if at is None else at
        return any(start - self.slack <= at <= end + self.slack for start, end in self._calls.get(name, []))


class Runtime(Protocol):
    """Where miners run. ``events`` yields what happens to their processes, as it happens."""

    name: str

    async def inspect(self, names: Sequence[str]) -> dict[str, ProcessInfo]: ...

    async def start(self, name: str) -> None: ...

    async def stop(self, name: str) -> None: ...

    async def restart(self, name: str) -> None: ...

    def events(self, names: Sequence[str]) -> AsyncIterator[RuntimeEvent]: ...

    async def aclose(self) -> None: ...


_ERRORISH = ("ERROR", "CRITICAL", "Error:", "Exception:", "error:", "Killed", "Segmentation fault")


def last_error_line(log: str) -> str:
    """The line that explains an exit: the miner's ``error:`` line (exit 78), else its last error-looking
    line (a forward exception, a traceback's last line), else nothing: an INFO line explains nothing."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line
    for line in reversed(lines):
        if any(mark in line for mark in _ERRORISH):
            return line[-300:]
    return ""


def diff_events(before: dict[str, ProcessInfo], after: dict[str, ProcessInfo]) -> list[RuntimeEvent]:
    """Events implied by two successive inspections (for runtimes that can only be polled)."""
    events: list[RuntimeEvent] = []
    for name, now in after.items():
        then = before.get(name)
        was_running = then is not None and then.running
        same_process = then is not None and then.process_id == now.process_id
        if was_running and (not now.running or not same_process):
            assert then is not None
            # The process we knew is gone (possibly already replaced by a new one).
            exited = now if not now.running else then
            events.append(
                ProcessExited(name, exited.exit_code, exited.signal, exited.oom, exited.detail, exited.cause)
            )
        if now.running and not (was_running and same_process):
            events.append(ProcessStarted(name, now.process_id))
    return events
