"""The watch's memory over time: does ``python -m orchestrator watch`` grow while it probes?

A small fleet of echo miners (each serving two protocols, so a probe makes four dendrite calls, and its
own ``/metrics``) runs under a real supervisord on free ports; the real watch runs as a child process
with a short probe interval, so many probe rounds happen in a few minutes. Beside it, two validators
ask every miner every 20 s, and a poller reads the watch's ``/status``, ``/metrics`` and
``/scrape/<unit>`` every 5 s (the page and a Prometheus). The watch's RSS (``VmRSS``) is read every
``--sample`` seconds; the report gives the series and the least-squares slope (MiB/h) over the samples
after the first 3 minutes (Python's RSS rises while it warms up, then levels).

``--tracemalloc``: the watch runs under tracemalloc (slower, and its RSS is not comparable with a plain
run) and writes the top 25 allocation sites by line that grew between minute 2 and the end, to tell
growth per probe round from warm-up. ``MINERFLEET_TRACE_FRAMES=30 MINERFLEET_TRACE_BY=traceback``: by
whole stacks (30 frames) instead of by line, to tell who allocates.

Run (about ``--minutes`` plus half a minute; not part of ``bench.run``)::

    .venv/bin/python -m bench.watch_memory --minutes 12 --interval 2 --out /tmp/watch-mem.json
    .venv/bin/python -m bench.watch_memory --minutes 12 --interval 2 --tracemalloc --out /tmp/watch-tm.json

Everything talks to 127.0.0.1 only, on free ports; nothing of the shipped fleet (``make up``) is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench._common import slope_per_hour
from devkit.local import ROOT, free_ports, supervisord, wait_for_port
from devkit.projects import make_key, make_project

WARMUP_S = 180.0  # samples before this are left out of the slope
VALIDATORS = ("v1", "v2")
VALIDATOR_PERIOD = 20.0
POLL_PERIOD = 5.0

# Run in the watch's own process for --tracemalloc: snapshots at minute 2 and near the end.
_TRACED = """
import os, sys, threading, time, tracemalloc
tracemalloc.start(int(os.environ.get("MINERFLEET_TRACE_FRAMES", "1")))
first, last, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
def snap():
    time.sleep(first)
    s1 = tracemalloc.take_snapshot()
    time.sleep(last - first)
    s2 = tracemalloc.take_snapshot()
    diff = s2.compare_to(s1, os.environ.get("MINERFLEET_TRACE_BY", "lineno"))
    with open(out, "w") as f:
        f.write(f"total growth {sum(d.size_diff for d in diff) / 1024:.1f} KiB over {last - first:.0f} s\\n")
        for d in diff[:25]:
            f.write(f"{d}\\n" + "".join(f"    {line}\\n" for line in d.traceback.format()[-24:]))
threading.Thread(target=snap, daemon=True).start()
from orchestrator.commands.cli import main
sys.exit(main(sys.argv[4:]))
"""


def fleet_file(ports: dict[str, int], miners: int, interval: float, validators: list[str]) -> str:
    lines = [
        f"""
    network: local
    wallet_path: ./wallets
    probe: {{wallet: probe, hotkey: default, timeout: 5, interval: {interval}, prompt: "are you there"}}
    supervisor: {{port: {ports["sup"]}}}
    status_api: {{port: {ports["status"]}}}
    defaults: {{wallet: fleet, backend: echo, warmup: false, protocols: [prompting, text-prompting],
                allowed_hotkeys: {json.dumps(validators)}}}
    miners:"""
    ]
    for i in range(miners):
        lines.append(
            f"      - {{name: echo-{i}, hotkey: echo-{i}, axon_port: {ports[f'a{i}']}, "
            f"metrics_port: {ports[f'm{i}']}}}"
        )
    return "\n".join(lines) + "\n"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def slope_mib_per_h(series: list[tuple[float, float]], after: float = WARMUP_S) -> float | None:
    """Least-squares slope of (seconds, MiB) over the samples at or after ``after`` seconds, in MiB/h."""
    return slope_per_hour([(t, m) for t, m in series if t >= after])


def _poll(status_port: int, units: list[str], stop: threading.Event) -> None:
    base = f"http://127.0.0.1:{status_port}"
    paths = ["/status", "/metrics", "/", *(f"/scrape/{u}" for u in units)]
    while not stop.wait(POLL_PERIOD):
        for path in paths:
            try:
                with urllib.request.urlopen(base + path, timeout=5) as response:
                    response.read()
            except OSError:
                pass


def _validators(
    project: Path, miners: dict[str, int], stop: threading.Event, answered: dict[bool, int]
) -> None:
    """Two validators asking every miner every VALIDATOR_PERIOD seconds (the soak's traffic)."""
    from bittensor_wallet import Wallet

    from orchestrator.render import read_ss58
    from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once

    async def run() -> None:
        dendrites = []
        for name in VALIDATORS:
            wallet = Wallet(name="validator", hotkey=name, path=str(project / "validators"))
            dendrites.append(make_dendrite(wallet))
        hotkeys = {m: read_ss58(project / "wallets" / "fleet" / "hotkeys" / m) for m in miners}
        while not stop.is_set():
            for dendrite in dendrites:
                for miner, port in miners.items():
                    axon = axon_info("127.0.0.1", port, hotkeys[miner])
                    synapse = make_synapse("prompting", "hello there", timeout=5)
                    try:
                        result = await stream_once(dendrite, axon, synapse, 5)
                        answered[result.ok] += 1
                    except Exception:  # load only: a failed request changes nothing here
                        answered[False] += 1
            await asyncio.to_thread(stop.wait, VALIDATOR_PERIOD)
        for dendrite in dendrites:
            await dendrite.aclose_session()

    asyncio.run(run())


def measure(
    minutes: float, interval: float, miners: int, sample: float, traced: bool, work: Path
) -> dict[str, Any]:
    names = ["sup", "status", *(f"a{i}" for i in range(miners)), *(f"m{i}" for i in range(miners))]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    project = work / "project"
    validators = [make_key(project / "validators", "validator", v) for v in VALIDATORS]
    config = make_project(project, fleet_file(ports, miners, interval, validators), model=False)
    common = ["--config", str(config), "--project-dir", str(project)]
    subprocess.run(
        [sys.executable, "-m", "orchestrator", "render", *common, "--python", sys.executable],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    os.environ["PYTHONPATH"] = str(ROOT)  # supervisord passes it on to the miners
    duration = minutes * 60.0
    tm_out = work / "tracemalloc.txt"
    watch_args = ["watch", *common, "--runtime", "supervisor"]
    if traced:
        cmd = [sys.executable, "-c", _TRACED, "120", str(duration - 10), str(tm_out), *watch_args]
    else:
        cmd = [sys.executable, "-m", "orchestrator", *watch_args]
    series: list[tuple[float, float]] = []
    stop = threading.Event()
    answered = {True: 0, False: 0}  # the validators' requests, by whether they were answered
    axons = {f"echo-{i}": ports[f"a{i}"] for i in range(miners)}
    with supervisord(project / "config/generated/supervisord.conf", ports["sup"]):
        for port in axons.values():
            wait_for_port(port, 120)
        with (work / "watch.log").open("wb") as log:
            watch = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                wait_for_port(ports["status"], 120, watch)
                helpers = [
                    threading.Thread(target=_poll, args=(ports["status"], list(axons), stop), daemon=True),
                    threading.Thread(target=_validators, args=(project, axons, stop, answered), daemon=True),
                ]
                for helper in helpers:
                    helper.start()
                started = time.monotonic()
                while (elapsed := time.monotonic() - started) <= duration:
                    series.append((round(elapsed, 1), round(rss_mib(watch.pid), 2)))
                    print(f"{elapsed / 60:5.1f} min  {series[-1][1]:7.2f} MiB", flush=True)
                    time.sleep(sample)
            finally:
                stop.set()
                watch.terminate()
                watch.wait(30)
        status_lines = (work / "watch.log").read_text(errors="replace").splitlines()
    return {
        "minutes": minutes,
        "probe_interval": interval,
        "miners": miners,
        "tracemalloc": traced,
        "rss_mib": series,
        "slope_mib_per_h_after_3min": slope_mib_per_h(series),
        "validator_requests": {"answered": answered[True], "failed": answered[False]},
        "tracemalloc_top": tm_out.read_text() if tm_out.exists() else None,
        "watch_log_tail": status_lines[-20:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--interval", type=float, default=2.0, help="probe.interval of the fleet (s)")
    parser.add_argument("--miners", type=int, default=3)
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between RSS samples")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="watch-memory-") as tmp:
        result = measure(args.minutes, args.interval, args.miners, args.sample, args.tracemalloc, Path(tmp))
    slope = result["slope_mib_per_h_after_3min"]
    print(f"validator requests: {result['validator_requests']}")
    print(f"slope after 3 min: {'-' if slope is None else f'{slope:.2f}'} MiB/h")
    if result["tracemalloc_top"]:
        print(result["tracemalloc_top"])
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
