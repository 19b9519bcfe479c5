"""Fleet probe fan-out: ``health`` over 1, 4, 16 and 32 echo miners.

32 echo miners (each its own hotkey and process, ``delay_per_token`` 0.05 s so a probe takes ~0.4 s like
a small model would) are started once and reused. One long-lived *probing worker* per fleet size holds an
``orchestrator.probing.probe.Prober`` (as the watch loop does) and, on command, runs ``Prober.probe_all``
over its miners; rounds go through the sizes in turn. Each round reports the fan-out's wall time against
the slowest single probe in it (1.0 = perfectly parallel), and the CPU time the probing process spent
(``getrusage``); each worker reports its peak memory (``VmHWM``). Sizes above the fleet's
``probe.max_concurrency`` (8 by default) are also probed with the limit lifted, to show what the limit
costs. Finally the real CLI (``python -m orchestrator health --json``) runs once per size, measured from
outside (wall, CPU and max RSS of the child, start-up included).

Run: ``python -m bench.fanout [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    LOCALHOST,
    ROOT,
    Figure,
    Result,
    free_ports,
    machine,
    main_for,
    make_result,
    self_memory,
    started_miners,
    summarize,
    tree_memory,
)

NAME = "fanout"
TITLE = "Fleet probe fan-out: wall time vs slowest single probe, CPU and memory of the prober"
ECHO_DELAY = 0.05  # seconds per piece; the probe prompt has 8 words
PROBE_TIMEOUT = 20.0


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]
    rounds: int

    @classmethod
    def for_run(cls, quick: bool) -> Config:
        return cls((1, 4), 2) if quick else cls((1, 4, 16, 32), 5)


def fleet_text(ports: Sequence[int]) -> str:
    miners = "\n".join(
        f"  - {{name: m{i}, hotkey: m{i}, backend: echo, axon_port: {port}, "
        f"echo: {{delay_per_token: {ECHO_DELAY}}}}}"
        for i, port in enumerate(ports)
    )
    return (
        "network: local\n"
        "wallet_path: ./wallets\n"
        f"probe: {{wallet: probe, hotkey: default, timeout: {PROBE_TIMEOUT:g}}}\n"
        "defaults: {wallet: fleet}\n"
        f"miners:\n{miners}\n"
    )


# --- the probing worker (a child process) -----------------------------------------------------------


def worker(config: Path, project: Path, names: list[str]) -> int:
    """Read commands on stdin (``probe <concurrency>`` | ``quit``), answer one JSON line each."""
    # Answers get the real stdout to themselves; anything else printed there (bittensor logs errors on
    # stdout) goes to stderr, the worker's log.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def answer(data: dict[str, Any]) -> None:
        answers.write(json.dumps(data) + "\n")
        answers.flush()

    from orchestrator.fleet.load import load_fleet
    from orchestrator.probing.probe import Prober
    from orchestrator.probing.targets import probe_wallet, targets

    loaded = load_fleet(config, project, check_files=False)
    chosen = targets(loaded, LOCALHOST, names)
    wallet = probe_wallet(loaded)
    probe = loaded.fleet.probe
    probers: dict[int, Prober] = {}
    loop = asyncio.new_event_loop()
    baseline = self_memory()
    answer({"ready": True, "rss_mb": baseline["rss"], "default_concurrency": probe.max_concurrency})
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        concurrency = int(command[1])
        prober = probers.setdefault(concurrency, Prober(wallet, probe.prompt, probe.timeout, concurrency))
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        reports = loop.run_until_complete(prober.probe_all(chosen))
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        memory = self_memory()
        answer(
            {
                "wall": wall,
                "slowest": max(r.elapsed for r in reports),
                "fastest": min(r.elapsed for r in reports),
                "healthy": sum(r.healthy for r in reports),
                "verdicts": sorted({r.verdict.value for r in reports}),
                "unhealthy": [
                    f"{r.name}: {r.verdict.value} {r.reason}"[:160] for r in reports if not r.healthy
                ],
                "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
                "rss_mb": memory["rss"],
                "hwm_mb": memory["hwm"],
            }
        )
    for prober in probers.values():
        loop.run_until_complete(prober.aclose())
    loop.close()
    return 0


class Worker:
    """The parent's handle on one probing worker."""

    def __init__(self, config: Path, project: Path, names: list[str]) -> None:
        self.size = len(names)
        self.log_path = project.parent / f"worker-{self.size}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.fanout",
                "--worker",
                "--config",
                str(config),
                "--project-dir",
                str(project),
                "--names",
                ",".join(names),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        hello = self._read()
        self.baseline_rss = float(hello["rss_mb"])
        self.default_concurrency = int(hello["default_concurrency"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log_path.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"probing worker for {self.size} miners exited ({self.proc.poll()}): {tail}")
        data: dict[str, Any] = json.loads(line)
        return data

    def probe(self, concurrency: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"probe {concurrency}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def cli_health(config: Path, project: Path, names: list[str]) -> dict[str, Any]:
    """``python -m orchestrator health --json`` once, measured from outside (os.wait4's rusage)."""
    args = [
        sys.executable,
        "-m",
        "orchestrator",
        "health",
        "--json",
        "--config",
        str(config),
        "--project-dir",
        str(project),
    ]
    for name in names:
        args += ["--miner", name]
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    try:
        report = json.loads(out)
        healthy = sum(m["healthy"] for m in report["miners"])
        slowest = max(m["elapsed"] for m in report["miners"])
    except (ValueError, KeyError):
        healthy, slowest = 0, float("nan")
    return {
        "exit_code": proc.returncode,
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "maxrss_mb": usage.ru_maxrss / 1024.0,
        "healthy": healthy,
        "slowest": slowest,
    }


def run(quick: bool) -> Result:
    """Start the echo miners once, probe them at every size round after round, then the CLI once."""
    from devkit.projects import make_project
    from orchestrator.render import read_ss58

    started, before = time.time(), machine()
    cfg = Config.for_run(quick)
    biggest = max(cfg.sizes)
    with tempfile.TemporaryDirectory(prefix="minerfleet-bench-") as name:
        project = Path(name) / "project"
        ports = free_ports(biggest)
        config = make_project(project, fleet_text(ports), model=False)
        probe_ss58 = read_ss58(project / "wallets/probe/hotkeys/default")
        envs = [
            {
                "MINER_NAME": f"m{i}",
                "MINER_NETWORK": "local",
                "MINER_WALLET_PATH": str(project / "wallets"),
                "MINER_WALLET_NAME": "fleet",
                "MINER_WALLET_HOTKEY": f"m{i}",
                "MINER_AXON_IP": LOCALHOST,
                "MINER_AXON_PORT": str(port),
                "MINER_ALLOWED_HOTKEYS": json.dumps([probe_ss58]),
                "MINER_BACKEND": "echo",
                "MINER_ECHO__DELAY_PER_TOKEN": str(ECHO_DELAY),
                "MINER_LOG_LEVEL": "warning",
            }
            for i, port in enumerate(ports)
        ]
        launch = time.monotonic()
        with started_miners(Path(name), envs, wait=300) as miners:
            start_all = time.monotonic() - launch
            workers: dict[int, Worker] = {}
            try:
                for n in cfg.sizes:
                    workers[n] = Worker(config, project, [f"m{i}" for i in range(n)])
                default = workers[cfg.sizes[0]].default_concurrency
                variants = {n: [default] + ([n] if n > default else []) for n in cfg.sizes}
                for n, w in workers.items():  # warm-up: dendrite session, lazy imports, first connections
                    for concurrency in variants[n]:
                        w.probe(concurrency)
                rounds: dict[tuple[int, int], list[dict[str, Any]]] = {
                    (n, c): [] for n in cfg.sizes for c in variants[n]
                }
                for index in range(cfg.rounds):
                    order = list(cfg.sizes) if index % 2 == 0 else list(reversed(cfg.sizes))
                    for n in order:
                        for concurrency in variants[n]:
                            rounds[(n, concurrency)].append(workers[n].probe(concurrency))
                peaks = {n: rounds[(n, default)][-1]["hwm_mb"] for n in cfg.sizes}
                baselines = {n: w.baseline_rss for n, w in workers.items()}
            finally:
                for w in workers.values():
                    w.close()
            miner_rss = [tree_memory(m.proc.pid)["rss"] for m in miners if m.proc is not None]
            miner_pss = [tree_memory(m.proc.pid)["pss"] for m in miners if m.proc is not None]
            cli = {n: cli_health(config, project, [f"m{i}" for i in range(n)]) for n in cfg.sizes}

    figures: list[Figure] = []
    for n in cfg.sizes:
        runs = rounds[(n, default)]
        figures += [
            Figure.of(
                f"n{n}_wall_ms",
                f"{n} miner(s), max_concurrency {min(n, default)}: probe_all wall time",
                [r["wall"] for r in runs],
                "ms",
                1000,
            ),
            Figure.of(
                f"n{n}_slowest_ms",
                f"{n} miner(s): the slowest single probe inside that fan-out",
                [r["slowest"] for r in runs],
                "ms",
                1000,
            ),
            Figure.of(
                f"n{n}_wall_over_slowest",
                f"{n} miner(s): wall / slowest single probe (1.0 = fully parallel)",
                [r["wall"] / r["slowest"] for r in runs],
                "x",
            ),
            Figure.of(
                f"n{n}_cpu_ms",
                f"{n} miner(s): CPU time of the probing process per fan-out (user+sys)",
                [r["cpu"] for r in runs],
                "ms",
                1000,
            ),
            Figure(
                f"n{n}_peak_rss_mb",
                f"{n} miner(s): peak RSS (VmHWM) of the probing process "
                f"(after imports: {baselines[n]:.0f} MiB)",
                round(peaks[n], 1),
                "MiB",
            ),
        ]
        if n > default:
            lifted = rounds[(n, n)]
            figures.append(
                Figure.of(
                    f"n{n}_unbounded_wall_over_slowest",
                    f"{n} miners, max_concurrency raised to {n}: wall / slowest single probe",
                    [r["wall"] / r["slowest"] for r in lifted],
                    "x",
                )
            )
    top = cli[biggest]
    figures += [
        Figure(
            f"cli_n{biggest}_wall_s",
            f"`orchestrator health --json` over {biggest} miners, start-up included: wall time (one run)",
            round(top["wall"], 2),
            "s",
            {"n": 1},
        ),
        Figure(
            f"cli_n{biggest}_cpu_s",
            "the same CLI run: CPU time of the process (user+sys)",
            round(top["cpu"], 2),
            "s",
            {"n": 1},
        ),
        Figure(
            f"cli_n{biggest}_maxrss_mb",
            "the same CLI run: max RSS of the process",
            round(top["maxrss_mb"], 1),
            "MiB",
            {"n": 1},
        ),
        Figure.of("echo_miner_rss_mb", "one idle echo miner process: RSS", miner_rss, "MiB"),
        Figure.of(
            "echo_miner_pss_mb", "one idle echo miner process: PSS (shared pages split)", miner_pss, "MiB"
        ),
        Figure(
            "start_all_s",
            f"starting all {biggest} echo miners at once until every port answers",
            round(start_all, 1),
            "s",
            {"n": 1},
        ),
    ]
    failures = [u for runs in rounds.values() for r in runs for u in r["unhealthy"]]
    probes = sum(n * len(rounds[(n, c)]) for (n, c) in rounds)
    figures.append(
        Figure(
            "unhealthy_probes",
            f"probes that did not come back healthy, of {probes} (all sizes and rounds; expected 0)",
            len(failures),
        )
    )
    details = {
        "sizes": list(cfg.sizes),
        "rounds": cfg.rounds,
        "default_max_concurrency": default,
        "echo_delay_per_token": ECHO_DELAY,
        "per_size": {f"{n}/{c}": runs for (n, c), runs in rounds.items()},
        "unhealthy_probes": failures[:50],
        "worker_rss_after_imports_mb": baselines,
        "cli": cli,
        "miner_rss_mb": summarize(miner_rss),
    }
    notes = [
        f"the fleet's default probe.max_concurrency is {default}: above that many miners the fan-out runs in "
        "waves, by configuration",
        "all miners, the prober and the CLI share the same 2 cores: CPU-bound parts of a probe (signing, "
        "verifying, JSON) slow each other down",
    ]
    return make_result(NAME, TITLE, quick, started, figures, details, notes=notes, machine_before=before)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--worker" in argv:
        parser = argparse.ArgumentParser(prog="python -m bench.fanout --worker")
        parser.add_argument("--worker", action="store_true")
        parser.add_argument("--config", type=Path, required=True)
        parser.add_argument("--project-dir", type=Path, required=True)
        parser.add_argument("--names", required=True)
        args = parser.parse_args(argv)
        return worker(args.config, args.project_dir, args.names.split(","))
    return main_for(NAME, __doc__ or "", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
