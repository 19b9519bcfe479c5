"""Recovery: from a miner's exit 75 to its next healthy stream, under the real watch loop.

A temporary project runs two miners with ``stop_on_forward_exception``: an echo miner that fails after 5
pieces (``fail_after_tokens``) and a llamacpp miner on Gemma with ``n_ctx`` 256 (a prompt longer than
that makes llama.cpp raise: a backend error). The benchmark sends each a request that triggers its fault,
so the miner exits 75, and then measures, round after round (echo and llamacpp alternately):

- **exit -> healthy stream**: from the process's disappearance to the first healthy stream the benchmark's
  own client (a dendrite, polling every 50 ms) gets back: what a validator sees. Split into
- **detect**: exit -> the watch's BACKOFF decision (the runtime's event),
- **backoff**: BACKOFF -> STARTING, the policy's wait (``backoff_initial`` 1 s, the product default; the
  watch's tick adds up to 0.5 s),
- **restart**: STARTING -> healthy stream = process start + imports + model load + first answer; with
  the port opening and the miner's own "backend loaded in" time reported inside it;
- **watch sees RUNNING**: STARTING -> the watch's own RUNNING decision (its probes of a starting miner run
  every 2 s).

Decision times come from the watch's ``/status`` history. ``reset_after`` is 3 s and each round waits
for it, so every round starts from ``backoff_initial``. Runtimes: ``supervisor`` (a real supervisord and
``python -m orchestrator watch --runtime supervisor``) and ``docker`` (the rendered compose project with
the orchestrator container), the latter only when ``docker info`` works and the images
``minerfleet/miner:cpu`` and ``minerfleet/orchestrator`` exist; otherwise it is reported as skipped.

Run: ``python -m bench.recovery [--quick]`` (``--quick`` skips the docker runtime).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench._common import (
    GGUF,
    LOCALHOST,
    ROOT,
    Figure,
    Result,
    free_port,
    log_tail,
    machine,
    main_for,
    make_result,
    port_open,
    progress,
    summarize,
    wait_for_port,
)
from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once

NAME = "recovery"
TITLE = "Recovery: exit 75 -> next healthy stream, backoff vs restart, supervisor and docker runtimes"
BACKOFF_INITIAL = 1.0  # the product's default
RESET_AFTER = 3.0
HEALTH_PROMPT = "are you there"
ECHO_FAULT_PROMPT = "one two three four five six seven"  # > fail_after_tokens (5) pieces
LLAMA_N_CTX = 256
DOCKER_IMAGES = ("minerfleet/miner:cpu", "minerfleet/orchestrator")
_LOADED = re.compile(r"backend \S+ loaded in ([0-9.]+)s")
BACKENDS = ("echo", "llamacpp")


@dataclass(frozen=True)
class Config:
    rounds: int
    docker_rounds: int

    @classmethod
    def for_run(cls, quick: bool) -> Config:
        return cls(1, 0) if quick else cls(3, 2)


def fleet_text(ports: dict[str, int], sup: int, status: int, project: str) -> str:
    return f"""\
network: local
wallet_path: ./wallets
project: {project}
probe: {{wallet: probe, hotkey: default, timeout: 10, prompt: "{HEALTH_PROMPT}"}}
supervisor: {{port: {sup}}}
status_api: {{port: {status}}}
restart:
  backoff_initial: {BACKOFF_INITIAL:g}
  reset_after: {RESET_AFTER:g}
  crash_loop_max_restarts: 100
  crash_loop_window: 600
models:
  gemma: {{path: {GGUF}}}
# temperature 0: the base model then answers the probe prompt with text every time (at 0.7 it sometimes
# stops at once, an empty answer the probe rightly calls unhealthy, which would blur the timings).
defaults: {{wallet: fleet, stop_on_forward_exception: true, temperature: 0}}
miners:
  - name: rec-echo
    hotkey: rec-echo
    backend: echo
    axon_port: {ports["echo"]}
    echo: {{fail_after_tokens: 5}}
  - name: rec-llama
    hotkey: rec-llama
    backend: llamacpp
    axon_port: {ports["llamacpp"]}
    max_tokens: 16
    llamacpp: {{model: gemma, n_threads: 1, n_ctx: {LLAMA_N_CTX}}}
"""


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


def status(port: int) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(f"http://{LOCALHOST}:{port}/status", timeout=5) as response:
        data: dict[str, Any] = json.load(response)
    return {m["name"]: m for m in data["miners"]}


def wait_status(
    port: int, name: str, check: Callable[[dict[str, Any]], bool], limit: float, what: str
) -> dict[str, dict[str, Any]]:
    """Poll the watch's /status until ``check`` holds for miner ``name`` (bounded by ``limit`` s)."""
    deadline = time.monotonic() + limit
    last: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        try:
            last = status(port)
            if check(last[name]):
                return last
        except OSError:
            pass
        time.sleep(0.1)
    seen = last.get(name, {})
    brief = {k: seen.get(k) for k in ("state", "reason", "detail", "restarts", "last_exit_code")}
    brief["history"] = seen.get("history", [])[-3:]
    brief["last_probe"] = {k: (seen.get("last_probe") or {}).get(k) for k in ("verdict", "reason")}
    raise TimeoutError(f"timed out after {limit:.0f}s waiting for {what}; {name}: {json.dumps(brief)[:900]}")


def settled(miner: dict[str, Any]) -> bool:
    """RUNNING long enough for the backoff to have been reset (reset_after + a tick)."""
    if miner["state"] != "RUNNING":
        return False
    history = miner["history"]
    since = history[-1]["at"] if history else 0.0
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
    target = axon_info(LOCALHOST, port, hotkeys[backend])
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
    response = time.time()
    deadline = time.monotonic() + 60
    while not process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    if not process_gone(pid):
        shown = "" if result is None else f" ({result.status_code}: {result.status_message[:200]})"
        raise RuntimeError(f"{name} did not exit after its fault{shown}")
    exited = time.time()
    opened: float | None = None
    healthy: float | None = None
    deadline = time.monotonic() + 180
    while healthy is None and time.monotonic() < deadline:
        if port_open(port):
            opened = opened or time.time()
            try:
                if loop.run_until_complete(healthy_stream(dendrite, port, hotkeys[backend])):
                    healthy = time.time()
                    break
            except Exception:  # connection reset while the miner starts: try again
                pass
        time.sleep(0.05)
    after = wait_status(
        status_port,
        name,
        lambda m: (
            m["state"] == "RUNNING" and any(h["at"] > trigger and h["to"] == "RUNNING" for h in m["history"])
        ),
        120,
        f"{name} RUNNING again",
    )
    progress(f"recovery: {name}: back (healthy stream after {(healthy or time.time()) - exited:.2f}s)")
    history = [h for h in after[name]["history"] if h["at"] > trigger - 0.05]

    def first(state: str) -> dict[str, Any] | None:
        return next((h for h in history if h["to"] == state), None)

    backoff, starting, running = first("BACKOFF"), first("STARTING"), first("RUNNING")
    loads = _LOADED.findall(runtime.miner_log(name))
    return RoundTimes(
        backend=backend,
        trigger=trigger,
        response=response,
        exit=exited,
        port_open=opened,
        healthy=healthy,
        backoff_at=backoff["at"] if backoff else None,
        starting_at=starting["at"] if starting else None,
        running_at=running["at"] if running else None,
        exit_reason=backoff["reason"] if backoff else "",
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
            order = BACKENDS if index % 2 == 0 else tuple(reversed(BACKENDS))
            for backend in order:
                results.append(one_round(backend, runtime, ports, hotkeys, status_port, dendrite, loop))
    finally:
        loop.run_until_complete(dendrite.aclose_session())
        loop.close()
    return results


# --- projects and runtimes -------------------------------------------------------------------------


@dataclass
class Project:
    root: Path
    config: Path
    ports: dict[str, int]
    sup_port: int
    status_port: int
    hotkeys: dict[str, str]

    def cli(self, *args: str) -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator",
                *args,
                "--config",
                str(self.config),
                "--project-dir",
                str(self.root),
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def probe_wallet(self) -> Any:
        from bittensor_wallet import Wallet

        return Wallet(name="probe", hotkey="default", path=str(self.root / "wallets"))


def make_recovery_project(root: Path, label: str, python: str) -> Project:
    from devkit.projects import make_project
    from orchestrator.render import read_ss58

    ports = {b: free_port() for b in BACKENDS}
    sup, status_port = free_port(), free_port()
    config = make_project(root, fleet_text(ports, sup, status_port, label), keys=False, model=False)
    project = Project(root, config, ports, sup, status_port, {})
    project.cli("wallets")
    project.cli("render", "--python", python)
    project.hotkeys = {b: read_ss58(root / "wallets/fleet/hotkeys" / MINER[b]) for b in BACKENDS}
    return project


class SupervisorSide:
    """Miners under a real supervisord; their pids from its XML-RPC, their logs from its log files."""

    def __init__(self, project: Project, server: Any) -> None:
        self.project = project
        self.server = server

    def pid(self, name: str) -> int:
        return int(self.server.supervisor.getProcessInfo(name)["pid"])

    def miner_log(self, name: str) -> str:
        run = self.project.root / ".run/supervisor"
        return log_tail(run / f"{name}.err.log", 20000) + log_tail(run / f"{name}.out.log", 20000)


@contextmanager
def watch_process(project: Project, runtime: str = "supervisor") -> Iterator[subprocess.Popen[bytes]]:
    """``python -m orchestrator watch`` on this host (probing miners at 127.0.0.1), stopped afterwards."""
    log = (project.root / f"watch-{runtime}.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "watch",
            "--config",
            str(project.config),
            "--project-dir",
            str(project.root),
            "--runtime",
            runtime,
            "--probe-host",
            LOCALHOST,
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for_port(project.status_port, 60, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def supervisor_variant(rounds: int) -> list[RoundTimes]:
    from devkit.local import supervisord

    with tempfile.TemporaryDirectory(prefix="minerfleet-bench-") as name:
        progress("recovery: supervisor runtime: rendering a project")
        project = make_recovery_project(Path(name) / "project", "bench-recovery", sys.executable)
        conf = project.root / "config/generated/supervisord.conf"
        with supervisord(conf, project.sup_port) as server:
            for port in project.ports.values():
                wait_for_port(port, 120)
            progress("recovery: supervisor runtime: miners up; starting the watch")
            with watch_process(project):
                return measure(
                    SupervisorSide(project, server),
                    project.ports,
                    project.hotkeys,
                    project.status_port,
                    rounds,
                    project.probe_wallet(),
                )


# --- the result ------------------------------------------------------------------------------------


PHASES = {
    "exit_to_healthy": "exit 75 -> first healthy stream seen by a client",
    "detect": "exit -> the watch's BACKOFF decision (runtime event)",
    "backoff": f"BACKOFF -> STARTING: the policy's wait (backoff_initial {BACKOFF_INITIAL:g} s + tick)",
    "restart": "STARTING -> first healthy stream: process start + model load + first answer",
    "model_load": "inside restart: the miner's own 'backend loaded in' time",
    "watch_running_after_start": "STARTING -> the watch's own RUNNING decision (its probe schedule)",
}


def figures_for(runtime: str, rounds: list[RoundTimes]) -> list[Figure]:
    figures: list[Figure] = []
    for backend in BACKENDS:
        mine = [r.phases() for r in rounds if r.backend == backend]
        for phase, what in PHASES.items():
            values = [p[phase] for p in mine if p[phase] is not None]
            figures.append(
                Figure.of(f"{runtime}_{backend}_{phase}_s", f"{runtime}, {backend}: {what}", values, "s")  # type: ignore[arg-type]
            )
    return figures


def run(quick: bool) -> Result:
    from bench.recovery_docker import docker_unavailable, docker_variant

    """The supervisor runtime always; the docker runtime when the engine and images are there."""
    started, before = time.time(), machine()
    cfg = Config.for_run(quick)
    figures: list[Figure] = []
    details: dict[str, Any] = {"backoff_initial_s": BACKOFF_INITIAL, "reset_after_s": RESET_AFTER}
    notes = [
        f"configured backoff: backoff_initial {BACKOFF_INITIAL:g} s (every round starts from it: reset_after "
        f"{RESET_AFTER:g} s); the watch's tick (0.5 s) and the supervisor runtime's poll (0.5 s) add to it",
    ]
    if not GGUF.exists():
        return make_result(
            NAME, TITLE, quick, started, [], skipped=f"{GGUF} is missing", machine_before=before
        )

    sup = supervisor_variant(cfg.rounds)
    figures += figures_for("supervisor", sup)
    details["supervisor"] = [dict(vars(r), phases=r.phases()) for r in sup]

    skipped: str | None = None
    why = "skipped in --quick" if quick else docker_unavailable()
    if why is None:
        try:
            progress("recovery: docker runtime: compose project up")
            dock, where = docker_variant(cfg.docker_rounds)
            figures += figures_for("docker", dock)
            details["docker"] = [dict(vars(r), phases=r.phases()) for r in dock]
            details["docker_watch"] = where
            notes.append(f"docker runtime: the watch ran as {where}")
        except Exception as exc:  # a broken image or engine is a finding, not a crash of the suite
            details["docker"] = f"failed: {type(exc).__name__}: {exc}"
            notes.append(f"docker runtime: failed: {type(exc).__name__}: {str(exc)[:300]}")
    else:
        details["docker"] = f"skipped: {why}"
        notes.append(f"docker runtime: skipped: {why}")
        skipped = None  # the supervisor part ran: the benchmark as a whole is not skipped
    details["summary"] = {
        key: {
            phase: summarize([p[phase] for p in (r["phases"] for r in value) if p[phase] is not None])
            for phase in PHASES
        }
        for key, value in details.items()
        if isinstance(value, list)
    }
    return make_result(
        NAME, TITLE, quick, started, figures, details, skipped=skipped, notes=notes, machine_before=before
    )


def main() -> int:
    return main_for(NAME, __doc__ or "", run)


if __name__ == "__main__":
    raise SystemExit(main())
