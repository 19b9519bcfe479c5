"""The one small interface every runtime implements: start, stop, restart, inspect, events.

The runtime starts, stops and inspects; the policy (``orchestrator.policy``) decides. Blocking client
calls (XML-RPC, the docker SDK) run in threads, never on the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


class RuntimeFailure(Exception):
    """A runtime call failed (the service is unreachable, the miner's process/container is unknown)."""


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


RuntimeEvent = ProcessStarted | ProcessExited


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
            events.append(ProcessExited(name, exited.exit_code, exited.signal, exited.oom, exited.detail))
        if now.running and not (was_running and same_process):
            events.append(ProcessStarted(name, now.process_id))
    return events
