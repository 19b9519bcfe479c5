"""What every benchmark shares: statistics, figures and result files, process memory, miners as processes.

A benchmark module exposes ``run(quick: bool) -> dict`` (built with :func:`make_result`) and a CLI through
:func:`main_for`. Results are plain JSON: a list of *figures* (a number, its unit, a sentence saying what
it is, and its spread) plus free-form details. Nothing here asserts on a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit.local import (
    GGUF,
    ROOT,
    MinerProcess,
    Wallets,
    free_port,
    free_ports,
    make_hotkey,
    make_wallets,
    miner_env,
    stop_process,
    wait_for_port,
)
from orchestrator.probing.capacity import percentile as capacity_percentile

__all__ = [
    "GGUF",
    "LOCALHOST",
    "RESULTS_DIR",
    "ROOT",
    "Figure",
    "MinerProcess",
    "Wallets",
    "command_for",
    "count_tokens",
    "free_port",
    "free_ports",
    "main_for",
    "make_hotkey",
    "make_result",
    "make_wallets",
    "miner_env",
    "percentile",
    "port_open",
    "progress",
    "slope_per_hour",
    "started_miners",
    "stop_process",
    "summarize",
    "tree_memory",
    "wait_for_port",
]

LOCALHOST = "127.0.0.1"
RESULTS_DIR = ROOT / "bench" / "results"
MIB = 1024.0  # /proc reports kB

Result = dict[str, Any]


# --- statistics ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks (NaN if empty);
    the same statistic as the capacity command's."""
    value = capacity_percentile(values, q)
    return math.nan if value is None else value


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, median, p25/p75 (the spread we report), p99, min and max of a sample."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return {"n": 0}
    return {
        "n": len(clean),
        "median": statistics.median(clean),
        "p25": percentile(clean, 25),
        "p75": percentile(clean, 75),
        "p99": percentile(clean, 99),
        "min": min(clean),
        "max": max(clean),
    }


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour (None: fewer than 2 points, or no spread
    in time): what a memory series grows by, in MiB/h."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 3600.0 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else None


def count_tokens(llm: Any, text: str) -> int:
    """Tokens in ``text`` by the model's own tokenizer (``llama_cpp.Llama``; ``vocab_only`` is enough):
    what the benchmarks count instead of characters / 4."""
    return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0


# --- figures and results ---------------------------------------------------------------------------


@dataclass
class Figure:
    """One reported number: what it is (a sentence), its value and unit, and its spread over rounds."""

    key: str
    what: str
    value: float | int | str | None
    unit: str = ""
    stats: dict[str, float] | None = None

    @classmethod
    def of(cls, key: str, what: str, values: Sequence[float], unit: str, scale: float = 1.0) -> Figure:
        """The median of ``values`` (times ``scale``), with the sample's spread."""
        stats = {k: (v * scale if k != "n" else v) for k, v in summarize(values).items()}
        return cls(key, what, stats.get("median"), unit, stats)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "what": self.what,
            "value": self.value,
            "unit": self.unit,
            "stats": self.stats,
        }


def fmt_number(value: float | int | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    magnitude = abs(float(value))
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_spread(stats: Mapping[str, float] | None) -> str:
    """``p25-p75, n=5`` (or just ``n=1``)."""
    if not stats or not stats.get("n"):
        return ""
    n = int(stats["n"])
    if n < 2:
        return f"n={n}"
    if "p25" in stats:
        return f"IQR {fmt_number(stats['p25'])}-{fmt_number(stats['p75'])}, n={n}"
    return f"range {fmt_number(stats['min'])}-{fmt_number(stats['max'])}, n={n}"


def fmt_value(figure: Mapping[str, Any]) -> str:
    unit = figure.get("unit") or ""
    text = fmt_number(figure.get("value"))
    return f"{text} {unit}".strip() if text != "-" else text


def command_for(name: str, quick: bool) -> str:
    return f"python -m bench.{name}" + (" --quick" if quick else "")


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how busy it was."""
    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def make_result(
    name: str,
    title: str,
    quick: bool,
    started: float,
    figures: Sequence[Figure],
    details: Mapping[str, Any] | None = None,
    *,
    skipped: str | None = None,
    notes: Sequence[str] = (),
    machine_before: Mapping[str, Any] | None = None,
) -> Result:
    """The JSON a benchmark returns and :mod:`bench.run` writes to ``bench/results/<name>.json``."""
    return {
        "name": name,
        "title": title,
        "command": command_for(name, quick),
        "quick": quick,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine_before": dict(machine_before or {}),
        "machine_after": machine(),
        "skipped": skipped,
        "notes": list(notes),
        "figures": [f.as_dict() for f in figures],
        "details": dict(details or {}),
    }


def write_result(name: str, data: Result) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def format_result(data: Result) -> str:
    """A short plain-text table of one result's figures."""
    lines = [f"== {data['title']} ({data['command']}, {data['duration_s']}s)"]
    if data.get("skipped"):
        lines.append(f"   skipped: {data['skipped']}")
    rows = [(f["key"], fmt_value(f), fmt_spread(f.get("stats"))) for f in data["figures"]]
    if rows:
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines += [f"   {r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]}".rstrip() for r in rows]
    lines += [f"   note: {note}" for note in data.get("notes", [])]
    return "\n".join(lines)


def main_for(name: str, doc: str, run: Callable[[bool], Result], argv: Sequence[str] | None = None) -> int:
    """The CLI of one benchmark: ``python -m bench.<name> [--quick]``."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (fewer rounds and sizes)")
    args = parser.parse_args(argv)
    data = run(args.quick)
    path = write_result(name, data)
    print(format_result(data))
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


_T0 = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr (results go to stdout and the JSON files)."""
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- process memory --------------------------------------------------------------------------------


def _kb_fields(path: Path) -> dict[str, int]:
    """The ``kB`` fields of a ``/proc`` file such as ``status`` or ``smaps_rollup`` ({} if it is gone)."""
    values: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            values[key] = int(parts[0])
    return values


def _status(pid: int) -> dict[str, int]:
    """``/proc/<pid>/status`` (VmRSS, RssAnon, RssFile, VmHWM, ...)."""
    return _kb_fields(Path(f"/proc/{pid}/status"))


def _rollup(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` (Pss, Private_Clean, Private_Dirty, ...)."""
    return _kb_fields(Path(f"/proc/{pid}/smaps_rollup"))


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from ``/proc/<pid>/task/*/children``)."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                found += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def tree_memory(pid: int) -> dict[str, float]:
    """Memory of a process and its children, in MiB: RSS (VmRSS), its anonymous and file-backed parts,
    PSS (shared pages divided among the processes sharing them) and USS (pages no other process shares:
    what stopping it would free)."""
    totals = {"rss": 0.0, "anon": 0.0, "file": 0.0, "pss": 0.0, "uss": 0.0, "processes": 0.0}
    for member in descendants(pid):
        status = _status(member)
        if not status:
            continue
        rollup = _rollup(member)
        totals["rss"] += status.get("VmRSS", 0) / MIB
        totals["anon"] += status.get("RssAnon", 0) / MIB
        totals["file"] += status.get("RssFile", 0) / MIB
        totals["pss"] += rollup.get("Pss", 0) / MIB
        totals["uss"] += (rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)) / MIB
        totals["processes"] += 1
    return totals


def self_memory() -> dict[str, float]:
    """This process: current RSS and its high-water mark (VmHWM), in MiB."""
    status = _status(os.getpid())
    return {"rss": status.get("VmRSS", 0) / MIB, "hwm": status.get("VmHWM", 0) / MIB}


# --- miners ----------------------------------------------------------------------------------------


def port_open(port: int, host: str = LOCALHOST) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@contextmanager
def started_miners(
    log_dir: Path, envs: Sequence[Mapping[str, str]], wait: float = 180.0
) -> Iterator[list[MinerProcess]]:
    """Start several ``python -m services.miner`` processes at once, wait for their ports, stop them all.

    Started together so their imports overlap; stopped by signalling all first, then waiting, so a big
    fleet stops in about the time one miner takes.
    """
    miners = [MinerProcess(env, log_dir / f"miner-{env['MINER_AXON_PORT']}.log") for env in envs]
    try:
        for miner in miners:
            miner.start(wait=0)
        deadline = time.monotonic() + wait
        for miner in miners:
            wait_for_port(miner.port, max(1.0, deadline - time.monotonic()), miner.proc)
        yield miners
    finally:
        for miner in miners:
            if miner.proc is not None and miner.proc.poll() is None:
                miner.proc.terminate()
        for miner in miners:
            if miner.proc is not None:
                miner.stop()


def log_tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def python() -> str:
    """The interpreter running the benchmarks (the project's venv under ``make bench``)."""
    return sys.executable
