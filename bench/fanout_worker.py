"""The fan-out benchmark's probing worker (a child process holding one ``Prober``), the parent's handle
on it, and the CLI's ``health`` run measured from outside. See bench/fanout.py.

Run (the benchmark starts it): ``python -m bench.fanout_worker --config FILE --project-dir DIR --names ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._common import LOCALHOST, ROOT, self_memory

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
                "bench.fanout_worker",
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout_worker")
    parser.add_argument("--worker", action="store_true", help="accepted for bench.fanout's --worker")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--project-dir", type=Path, required=True)
    parser.add_argument("--names", required=True)
    args = parser.parse_args(argv)
    return worker(args.config, args.project_dir, args.names.split(","))


if __name__ == "__main__":
    raise SystemExit(main())
