"""supervisord over XML-RPC, for hosts without docker.

The rendered ``supervisord.conf`` turns supervisord's own restarts off (``autorestart=false``), so
every exit is final for supervisord and the policy decides. supervisord reports an exit code, or -1
for a process killed by a signal; the signal's name is read from supervisord's own log line.

Model servers are programs like the miners (``model-server`` or ``model-server-NAME``). A program the
operator stops (``supervisorctl stop``: STOPPING, then STOPPED) is reported as :class:`OperatorStop`
unless the orchestrator stopped it itself, and a program being stopped is not started.
"""

from __future__ import annotations

import asyncio
import re
import signal as signals
import xmlrpc.client
from collections.abc import AsyncIterator, Sequence
from typing import Any

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

# supervisord's process states (supervisor.states.ProcessStates)
_RUNNING_STATES = {"STARTING", "RUNNING", "STOPPING"}
_STOPPING_STATES = {"STOPPING", "STOPPED"}  # what `supervisorctl stop` leads through (a crash: EXITED)
_KILLED = re.compile(r"exited: (?P<name>\S+) \(terminated by (?P<sig>SIG[A-Z0-9]+)")


class SupervisorRuntime:
    name = "supervisor"

    def __init__(self, url: str, poll_interval: float = 0.5, proxy: Any = None) -> None:
        self.url = url
        self.poll_interval = poll_interval
        # A proxy can be injected for tests; ServerProxy is not thread-safe, so calls are serialised.
        self._proxy = proxy or xmlrpc.client.ServerProxy(url, allow_none=True)
        self._lock = asyncio.Lock()
        # A stop is seen by polling, a little after it happened: a few polls of slack.
        self._own = OwnActions(slack=max(2.0, 4 * poll_interval))

    async def _call(self, method: str, *args: Any) -> Any:
        def call() -> Any:
            target: Any = self._proxy
            for part in method.split("."):
                target = getattr(target, part)
            return target(*args)

        async with self._lock:
            try:
                return await asyncio.to_thread(call)
            except xmlrpc.client.Fault as exc:
                raise RuntimeFailure(f"supervisord {method}{args}: {exc.faultString}") from exc
            except OSError as exc:
                raise RuntimeFailure(f"supervisord at {self.url} does not answer: {exc}") from exc

    async def inspect(self, names: Sequence[str]) -> dict[str, ProcessInfo]:
        infos = {info["name"]: info for info in await self._call("supervisor.getAllProcessInfo")}
        result: dict[str, ProcessInfo] = {}
        killed: dict[str, int] | None = None
        for name in names:
            info = infos.get(name)
            if info is None:
                result[name] = ProcessInfo(name=name, exists=False, running=False)
                continue
            running = info["statename"] in _RUNNING_STATES
            code = None if running else info["exitstatus"]
            sig = None
            detail = ""
            if not running and info["statename"] in {"EXITED", "FATAL", "BACKOFF"}:
                if code == -1:  # killed by a signal: supervisord's log says which
                    killed = killed if killed is not None else await self._killed_signals()
                    sig, code = killed.get(name), None
                detail = last_error_line(await self._stderr_tail(name))
            result[name] = ProcessInfo(
                name=name,
                exists=True,
                running=running,
                process_id=str(info["pid"]) if running else "",
                exit_code=code,
                signal=sig,
                started_at=float(info["start"]) if info["start"] else None,
                detail=detail or info.get("spawnerr", ""),
                status=str(info["statename"]),
            )
        return result

    async def _stderr_tail(self, name: str) -> str:
        try:
            text, _offset, _overflow = await self._call("supervisor.tailProcessStderrLog", name, 0, 4000)
        except RuntimeFailure:
            return ""
        return str(text)

    async def _killed_signals(self) -> dict[str, int]:
        """The last signal each process was killed by, from supervisord's main log."""
        try:
            log = str(await self._call("supervisor.readLog", -20000, 0))
        except RuntimeFailure:
            return {}
        found: dict[str, int] = {}
        for match in _KILLED.finditer(log):
            try:
                found[match["name"]] = int(signals.Signals[match["sig"]])
            except KeyError:
                continue
        return found

    async def start(self, name: str) -> None:
        info = await self._call("supervisor.getProcessInfo", name)
        if info["statename"] == "STOPPING":
            raise RuntimeGone(f"{name} is being stopped by someone else: not starting it")
        if info["statename"] in _RUNNING_STATES:
            return
        await self._call("supervisor.startProcess", name, False)

    async def stop(self, name: str) -> None:
        call = self._own.begin(name)
        try:
            await self._call("supervisor.stopProcess", name, True)
        except RuntimeFailure as exc:
            if "NOT_RUNNING" not in str(exc):
                raise
        finally:
            self._own.end(call)

    async def restart(self, name: str) -> None:
        call = self._own.begin(name)
        try:
            await self.stop(name)
            await self._call("supervisor.startProcess", name, False)
        finally:
            self._own.end(call)

    async def events(self, names: Sequence[str]) -> AsyncIterator[RuntimeEvent]:
        """supervisord is polled (its event listeners would need a process of their own)."""
        before = await self.inspect(names)
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                after = await self.inspect(names)
            except RuntimeFailure:
                continue  # supervisord restarting: the next poll catches up
            for name, now in after.items():
                then = before.get(name)
                if (
                    now.status in _STOPPING_STATES
                    and then is not None
                    and then.status not in _STOPPING_STATES
                    and then.running
                    and not self._own.ours(name)
                ):
                    yield OperatorStop(name, f"supervisord {now.status}")
            for event in diff_events(before, after):
                yield event
            before = after

    async def aclose(self) -> None:
        return None
