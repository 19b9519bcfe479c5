"""Run the benchmarks (all, or the ones named), write ``bench/results/*.json`` and ``summary.md``.

Each benchmark runs in its own process (``python -m bench.<name>``), one after the other, so none
inherits another's threads, models or memory high-water mark. A benchmark that crashes is recorded as an
error and the others still run; the exit code is then 1. Times are never asserted.

    python -m bench.run                    # everything (a few minutes)
    python -m bench.run --quick            # a smoke run
    python -m bench.run streaming memory   # only these
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from bench._common import (
    RESULTS_DIR,
    ROOT,
    command_for,
    fmt_spread,
    fmt_value,
    machine,
    write_result,
)

BENCHMARKS: dict[str, str] = {
    "streaming": "Streaming efficiency: miner vs raw llama-cpp-python; echo streaming path",
    "event_loop": "Event loop under load: product miner vs seed-style miner",
    "fanout": "Fleet probe fan-out over 1-32 echo miners",
    "recovery": "Recovery from exit 75: supervisor and docker runtimes",
    "memory": "Memory per hotkey: shared model server vs a model per miner",
    "validators": "Validator load: K concurrent validators on three serving paths",
    "fleet": "The shipped fleet (make up) under K validators asking every miner at once",
    "soak": "The shipped fleet (make up) under steady validator load for a set time: answers, memory slope",
    "server_memory": "The shipped model server's memory under long questions, vs a twin with SWA checkpoints",
    "arenas": "A llamacpp miner's malloc arenas: one (shipped) vs two vs glibc's default",
}
# These run `make up` (docker): not in a --quick run unless named.
NEEDS_THE_STACK = frozenset({"fleet", "soak", "server_memory"})
# Long (soak: 30 minutes by default; server_memory: ~12): `make bench ARGS=soak`
ONLY_WHEN_NAMED = frozenset({"soak", "server_memory"})
# The few figures printed in the final table (every figure is in the JSON files and summary.md).
HEADLINES: dict[str, tuple[str, ...]] = {
    "streaming": (
        "tokens_per_s_ratio",
        "ttft_overhead_ms",
        "ttft_overhead_batch1_ms",
        "echo_b12_pieces_per_s",
        "echo_b200_mb_per_s",
    ),
    "event_loop": (
        "ours_idle_ping_p99_ms",
        "ours_loaded_ping_p99_ms",
        "seed_loaded_ping_p99_ms",
        "ours_loaded_request_p50_ms",
        "seed_loaded_request_p50_ms",
        "seed_without_lock",
    ),
    "fanout": (
        "n4_wall_over_slowest",
        "n32_wall_over_slowest",
        "n32_unbounded_wall_over_slowest",
        "n32_cpu_ms",
        "n32_peak_rss_mb",
    ),
    "recovery": (
        "supervisor_echo_exit_to_healthy_s",
        "supervisor_llamacpp_exit_to_healthy_s",
        "supervisor_llamacpp_backoff_s",
        "supervisor_llamacpp_restart_s",
        "docker_echo_exit_to_healthy_s",
        "docker_llamacpp_exit_to_healthy_s",
        "docker_llamacpp_restart_s",
    ),
    "memory": (
        "echo_miner_rss_mb",
        "openai_miner_rss_mb",
        "llamacpp_miner_rss_mb",
        "shared_per_extra_hotkey_uss_mb",
        "separate_per_extra_hotkey_uss_mb",
        "shared_n4_pss_mb",
        "separate_n4_pss_mb",
    ),
    "validators": (
        "llamacpp_k8_answered",
        "llama_cpp_server_k8_complete",
        "llama_server_k8_answered",
        "llama_server_k8_complete",
        "llama_server_k8_first_chunk_p90_ms",
        "llama_server_k8_tokens_per_s_vs_k1",
        "llama_server_k16_answered",
    ),
    "server_memory": (
        "shipped_peak_mib",
        "shipped_peak_over_limit",
        "checkpoints_peak_mib",
        "checkpoints_oom_killed",
    ),
    "arenas": (
        "one_over_two_pieces_per_s",
        "one_rss_growth_mib",
        "two_rss_growth_mib",
        "default_rss_growth_mib",
    ),
    "soak": ("answered", "requests", "restarts", "memory_slope_orchestrator", "memory_slope_gemma-1"),
    "fleet": (
        "k8_server_miners_answered",
        "k8_server_miners_first_chunk_p90_s",
        "k8_server_miners_vs_alone",
        "k8_fleet_vs_server_alone",
        "k16_server_miners_answered",
        "single_stream_miner_vs_host_server",
    ),
}


def run_one(name: str, quick: bool) -> dict[str, Any]:
    """``python -m bench.<name>`` in a child process; its JSON, or an error record when it failed."""
    path = RESULTS_DIR / f"{name}.json"
    path.unlink(missing_ok=True)
    started = time.time()
    args = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])]
    # stderr (progress lines) is passed through as it comes, and its tail kept for an error record.
    proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE, text=True, errors="replace")
    assert proc.stderr is not None
    tail: deque[str] = deque(maxlen=40)
    for line in proc.stderr:
        sys.stderr.write(line)
        tail.append(line)
    proc.wait()
    if proc.returncode == 0 and path.exists():
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    error = {
        "name": name,
        "title": BENCHMARKS[name],
        "command": command_for(name, quick),
        "quick": quick,
        "duration_s": round(time.time() - started, 1),
        "error": f"exit code {proc.returncode}",
        "stderr_tail": "".join(tail)[-3000:],
        "figures": [],
        "notes": [],
    }
    write_result(name, error)
    return error


def _previous(name: str) -> dict[str, Any] | None:
    """The last result of a benchmark not run this time, if any."""
    try:
        data: dict[str, Any] = json.loads((RESULTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "?"
    return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def summary_markdown(results: Sequence[dict[str, Any]], quick: bool, before: dict[str, Any]) -> str:
    """``bench/results/summary.md``: every figure, what it is, and the command that reproduces it."""
    after = machine()
    lines = [
        "# minerfleet benchmarks: summary",
        "",
        f"Written by `python -m bench.run{' --quick' if quick else ''}` "
        f"at {time.strftime('%Y-%m-%d %H:%M:%S')} (commit {_git_commit()}); each section is the last run "
        f"of that benchmark. Machine: {after['cpus']} CPUs, load average {before['loadavg']} before, "
        f"{after['loadavg']} after. Values are medians over interleaved rounds; the spread is the "
        "interquartile range (IQR) or, for tail figures, the range; n is the number of samples. "
        "See `bench/README.md` for what each figure means and its caveats. Nothing here is asserted.",
        "",
    ]
    for data in results:
        when = f", run at {data['started_at']}" if data.get("started_at") else ""
        lines += [
            f"## {data['title']}",
            "",
            f"Reproduce: `{data['command']}` (took {data['duration_s']} s{when})",
            "",
        ]
        if data.get("error"):
            lines += [
                f"**Failed**: {data['error']}. Last lines of its output:",
                "",
                "```",
                data.get("stderr_tail", "")[-1500:],
                "```",
                "",
            ]
            continue
        if data.get("skipped"):
            lines += [f"Skipped: {data['skipped']}", ""]
        if data["figures"]:
            lines += ["| figure | value | spread | what it is |", "|---|---:|---|---|"]
            for figure in data["figures"]:
                what = str(figure["what"]).replace("|", "\\|")
                spread = fmt_spread(figure.get("stats"))
                lines.append(f"| `{figure['key']}` | {fmt_value(figure)} | {spread} | {what} |")
            lines.append("")
        lines += [f"- {note}" for note in data.get("notes", [])]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def headline_table(results: Sequence[dict[str, Any]]) -> str:
    rows: list[tuple[str, str, str]] = []
    for data in results:
        if data.get("error"):
            rows.append((data["name"], "FAILED", data["error"]))
            continue
        by_key = {f["key"]: f for f in data["figures"]}
        for key in HEADLINES.get(data["name"], ()):
            if key in by_key:
                rows.append(
                    (f"{data['name']}.{key}", fmt_value(by_key[key]), fmt_spread(by_key[key].get("stats")))
                )
        for note in data.get("notes", []):
            if "skipped" in note or "failed" in note:
                rows.append((data["name"], "note", note[:90]))
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(2)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]}".rstrip() for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run of each benchmark")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    # A smoke run stays off docker: the shipped fleet's benchmark runs `make up` (name it to run it).
    names = args.names or [
        n for n in BENCHMARKS if n not in ONLY_WHEN_NAMED and not (args.quick and n in NEEDS_THE_STACK)
    ]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    before = machine()
    started = time.monotonic()
    fresh = {}
    for name in names:
        print(f"--- {name}: {BENCHMARKS[name]}", flush=True)
        fresh[name] = run_one(name, args.quick)
    results = list(fresh.values())
    # The summary covers every benchmark: those not run now keep their last result (with its date).
    everything = [fresh.get(name) or _previous(name) for name in BENCHMARKS]
    summary = RESULTS_DIR / "summary.md"
    summary.write_text(
        summary_markdown([r for r in everything if r is not None], args.quick, before), encoding="utf-8"
    )
    print(
        f"\n=== headline figures ({time.monotonic() - started:.0f}s in all; every figure: "
        f"{summary.relative_to(ROOT)})"
    )
    print(headline_table(results))
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
