"""The recovery benchmark's rounds: trigger one exit, time the way back from the watch's ``/status``
(read as :class:`~orchestrator.status.fleetstatus.FleetStatus`) and from a client's own streams."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench._common import LOCALHOST, port_open, progress
from bench.harness import alternating
from orchestrator.policy import State
from orchestrator.status.fleetstatus import Change, FleetStatus, MinerStatus
from orchestrator.watch.supervise import WatchError, fetch_status
from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once

RESET_AFTER = 3.0
HEALTH_PROMPT = "are you there"
ECHO_FAULT_PROMPT = "one two three four five six seven"  # > fail_after_tokens (5) pieces
_LOADED = re.compile(r"backend \S+ loaded in ([0-9.]+)s")
BACKENDS = ("echo", "llamacpp")
MINER = {"echo": "rec-echo", "llamacpp": "rec-llama"}
FAULT = {"echo": ECHO_FAULT_PROMPT}  # the other backends are crashed with SIGKILL (see one_round)


class Runtime(Protocol):
    """What a round needs from where the miners run."""

    def pid(self, name: str) -> int: ...

    def miner_log(self, name: str) -> str: ...


@dataclass
class RoundTimes:
    """Wall-clock times (time.time()) of one recovery, and what came of it."""

    backend: str
    trigger: float
    response: float
    exit: float
    port_open: float | None
    healthy: float | None
    backoff_at: float | None
    starting_at: float | None
    running_at: float | None
    exit_reason: str
    model_load: float | None
    error: str = ""

    def phases(self) -> dict[str, float | None]:
        def diff(end: float | None, start: float | None) -> float | None:
            return None if end is None or start is None else end - start

        return {
            "exit_after_response": diff(self.exit, self.response),
            "exit_to_healthy": diff(self.healthy, self.exit),
            "detect": diff(self.backoff_at, self.exit),
            "backoff": diff(self.starting_at, self.backoff_at),
            "restart": diff(self.healthy, self.starting_at),
            "port_after_start": diff(self.port_open, self.starting_at),
            "watch_running_after_start": diff(self.running_at, self.starting_at),
            "model_load": self.model_load,
        }


def status(port: int) -> FleetStatus:
    return fetch_status(f"http://{LOCALHOST}:{port}")


def wait_status(
    port: int, name: str, check: Callable[[MinerStatus], bool], limit: float, what: str
) -> MinerStatus:
    """Poll the watch's /status until ``check`` holds for miner ``name`` (bounded by ``limit`` s)."""
    deadline = time.monotonic() + limit
    last: MinerStatus | None = None
    while time.monotonic() < deadline:
        try:
            last = status(port).miner(name)
            if check(last):
                return last
        except WatchError:
            pass
        time.sleep(0.1)
    brief: dict[str, Any] = {}
    if last is not None:
        brief = {k: getattr(last, k) for k in ("state", "reason", "detail", "restarts", "last_exit_code")}
        brief["history"] = [c.to_json() for c in last.history[-3:]]
        probe = last.last_probe
        brief["last_probe"] = None if probe is None else {"verdict": probe.verdict, "reason": probe.reason}
    raise TimeoutError(f"timed out after {limit:.0f}s waiting for {what}; {name}: {json.dumps(brief)[:900]}")


def settled(miner: MinerStatus) -> bool:
    """RUNNING long enough for the backoff to have been reset (reset_after + a tick)."""
    if not miner.running:
        return False
    since = (miner.history[-1].at or 0.0) if miner.history else 0.0
    return time.time() - since > RESET_AFTER + 0.7


def process_gone(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X")


async def healthy_stream(dendrite: Any, port: int, hotkey: str) -> bool:
    target = axon_info(LOCALHOST, port, hotkey)
    result = await stream_once(dendrite, target, make_synapse("prompting", HEALTH_PROMPT, timeout=10), 10)
    return result.ok and bool(result.completion.strip())


def trigger_fault(
    backend: str, pid: int, port: int, hotkey: str, dendrite: Any, loop: asyncio.AbstractEventLoop
) -> Any:
    """Make the miner exit (the fault prompt: exit 75; else SIGKILL); the fault request's result, if any."""
    target = axon_info(LOCALHOST, port, hotkey)
    result = None
    if backend in FAULT:
        for _ in range(3):
            # A pooled connection to the previous process (docker's proxy keeps it open) fails at once
            # with no answer from the miner: send again.
            synapse = make_synapse("prompting", FAULT[backend], timeout=10)
            result = loop.run_until_complete(stream_once(dendrite, target, synapse, 10))
            if result.status_code == 200:
                break
    else:
        # No request makes a llama.cpp miner exit any more (a prompt it cannot take is a 413): a crash
        # takes the same way back (exit -> backoff -> restart -> load -> healthy stream).
        os.kill(pid, signal.SIGKILL)
    return result


def wait_gone(name: str, pid: int, result: Any) -> None:
    """Until the process is gone (60 s at most: then the fault did not work)."""
    deadline = time.monotonic() + 60
    while not process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    if not process_gone(pid):
        shown = "" if result is None else f" ({result.status_code}: {result.status_message[:200]})"
        raise RuntimeError(f"{name} did not exit after its fault{shown}")


def wait_healthy(
    port: int, hotkey: str, dendrite: Any, loop: asyncio.AbstractEventLoop
) -> tuple[float | None, float | None]:
    """Poll every 50 ms (180 s at most): when the port opened, and when a stream first came back healthy."""
    opened: float | None = None
    healthy: float | None = None
    deadline = time.monotonic() + 180
    while healthy is None and time.monotonic() < deadline:
        if port_open(port):
            opened = opened or time.time()
            try:
                if loop.run_until_complete(healthy_stream(dendrite, port, hotkey)):
                    healthy = time.time()
                    break
            except Exception:  # connection reset while the miner starts: try again
                pass
        time.sleep(0.05)
    return opened, healthy


def one_round(
    backend: str,
    runtime: Runtime,
    ports: dict[str, int],
    hotkeys: dict[str, str],
    status_port: int,
    dendrite: Any,
    loop: asyncio.AbstractEventLoop,
) -> RoundTimes:
    """Trigger one exit 75 and time the way back. Blocking on purpose: polling needs no event loop."""
    name, port = MINER[backend], ports[backend]
    wait_status(status_port, name, settled, 120, f"{name} RUNNING and settled")
    progress(f"recovery: {name}: triggering {'exit 75' if backend in FAULT else 'a crash (SIGKILL)'}")
    pid = runtime.pid(name)
    trigger = time.time()
    result = trigger_fault(backend, pid, port, hotkeys[backend], dendrite, loop)
    response = time.time()
    wait_gone(name, pid, result)
    exited = time.time()
    opened, healthy = wait_healthy(port, hotkeys[backend], dendrite, loop)
    after = wait_status(
        status_port,
        name,
        lambda m: (
            m.running and any((c.at or 0.0) > trigger and c.to_state is State.RUNNING for c in m.history)
        ),
        120,
        f"{name} RUNNING again",
    )
    progress(f"recovery: {name}: back (healthy stream after {(healthy or time.time()) - exited:.2f}s)")
    history = [c for c in after.history if (c.at or 0.0) > trigger - 0.05]

    def first(state: State) -> Change | None:
        return next((c for c in history if c.to_state == state), None)

    backoff, starting, running = first(State.BACKOFF), first(State.STARTING), first(State.RUNNING)
    loads = _LOADED.findall(runtime.miner_log(name))
    return RoundTimes(
        backend=backend,
        trigger=trigger,
        response=response,
        exit=exited,
        port_open=opened,
        healthy=healthy,
        backoff_at=backoff.at if backoff else None,
        starting_at=starting.at if starting else None,
        running_at=running.at if running else None,
        exit_reason=backoff.reason if backoff else "",
        model_load=float(loads[-1]) if loads else None,
    )


def measure(
    runtime: Runtime,
    ports: dict[str, int],
    hotkeys: dict[str, str],
    status_port: int,
    rounds: int,
    probe_wallet: Any,
) -> list[RoundTimes]:
    # One event loop for the whole run: the dendrite's HTTP session belongs to the loop it was used on.
    loop = asyncio.new_event_loop()
    dendrite = make_dendrite(probe_wallet)
    results: list[RoundTimes] = []
    try:
        for index in range(rounds):
            for backend in alternating(BACKENDS, index):
                results.append(one_round(backend, runtime, ports, hotkeys, status_port, dendrite, loop))
    finally:
        loop.run_until_complete(dendrite.aclose_session())
        loop.close()
    return results
