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

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    GGUF,
    LOCALHOST,
    ROOT,
    Figure,
    Result,
    free_ports,
    log_tail,
    machine,
    main_for,
    make_result,
    progress,
    stop_process,
    summarize,
    wait_for_port,
)
from bench.harness import bench_tmp, model_missing
from bench.recovery_rounds import BACKENDS, HEALTH_PROMPT, MINER, RESET_AFTER, RoundTimes, measure

NAME = "recovery"
TITLE = "Recovery: exit 75 -> next healthy stream, backoff vs restart, supervisor and docker runtimes"
BACKOFF_INITIAL = 1.0  # the product's default
LLAMA_N_CTX = 256
DOCKER_IMAGES = ("minerfleet/miner:cpu", "minerfleet/orchestrator")


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

    *miner_ports, sup, status_port = free_ports(len(BACKENDS) + 2)
    ports = dict(zip(BACKENDS, miner_ports, strict=True))
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
        stop_process(proc, 30)
        log.close()


def supervisor_variant(rounds: int) -> list[RoundTimes]:
    from devkit.local import supervisord

    with bench_tmp() as tmp:
        progress("recovery: supervisor runtime: rendering a project")
        project = make_recovery_project(tmp / "project", "bench-recovery", sys.executable)
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
    missing = model_missing(NAME, TITLE, quick, started, before)
    if missing is not None:
        return missing

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
