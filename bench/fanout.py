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

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    LOCALHOST,
    Figure,
    Result,
    free_ports,
    machine,
    main_for,
    make_result,
    started_miners,
    summarize,
    tree_memory,
)
from bench.fanout_worker import Worker, cli_health
from bench.harness import PerRound, alternating, bench_tmp, per_round_figures

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


def names_of(n: int) -> list[str]:
    """The first ``n`` miners' names."""
    return [f"m{i}" for i in range(n)]


def miner_envs(project: Path, ports: Sequence[int]) -> list[dict[str, str]]:
    """The environment of each echo miner (its own hotkey and port; only the probe hotkey allowed)."""
    from orchestrator.render import read_ss58

    probe_ss58 = read_ss58(project / "wallets/probe/hotkeys/default")
    return [
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


Rounds = dict[tuple[int, int], list[dict[str, Any]]]  # (miners, max_concurrency) -> each round's answer


@dataclass
class Probed:
    """What the probing workers measured."""

    default: int  # the fleet's probe.max_concurrency
    rounds: Rounds
    peaks: dict[int, float]  # VmHWM of each size's worker after its last round, MiB
    baselines: dict[int, float]  # RSS of each size's worker after its imports, MiB


def probe_rounds(cfg: Config, config: Path, project: Path) -> Probed:
    """One worker per size; a warm-up probe each, then the rounds (the sizes' order alternating)."""
    workers: dict[int, Worker] = {}
    try:
        for n in cfg.sizes:
            workers[n] = Worker(config, project, names_of(n))
        default = workers[cfg.sizes[0]].default_concurrency
        variants = {n: [default] + ([n] if n > default else []) for n in cfg.sizes}
        for n, w in workers.items():  # warm-up: dendrite session, lazy imports, first connections
            for concurrency in variants[n]:
                w.probe(concurrency)
        rounds: Rounds = {(n, c): [] for n in cfg.sizes for c in variants[n]}
        for index in range(cfg.rounds):
            for n in alternating(cfg.sizes, index):
                for concurrency in variants[n]:
                    rounds[(n, concurrency)].append(workers[n].probe(concurrency))
        peaks = {n: rounds[(n, default)][-1]["hwm_mb"] for n in cfg.sizes}
        baselines = {n: w.baseline_rss for n, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    return Probed(default, rounds, peaks, baselines)


@dataclass
class Measured:
    """Everything one run measured, raw."""

    probed: Probed
    start_all: float  # seconds until every miner's port answered
    miner_rss: list[float]
    miner_pss: list[float]
    cli: dict[int, dict[str, Any]]


def measure(cfg: Config, tmp: Path) -> Measured:
    """Start the echo miners once, probe them at every size round after round, then the CLI once."""
    from devkit.projects import make_project

    project = tmp / "project"
    ports = free_ports(max(cfg.sizes))
    config = make_project(project, fleet_text(ports), model=False)
    envs = miner_envs(project, ports)
    launch = time.monotonic()
    with started_miners(tmp, envs, wait=300) as miners:
        start_all = time.monotonic() - launch
        probed = probe_rounds(cfg, config, project)
        miner_rss = [tree_memory(m.proc.pid)["rss"] for m in miners if m.proc is not None]
        miner_pss = [tree_memory(m.proc.pid)["pss"] for m in miners if m.proc is not None]
        cli = {n: cli_health(config, project, names_of(n)) for n in cfg.sizes}
    return Measured(probed, start_all, miner_rss, miner_pss, cli)


def size_figures(n: int, probed: Probed) -> list[Figure]:
    """The fan-out over ``n`` miners at the default limit (and with it lifted, above the limit)."""
    default = probed.default
    figures = per_round_figures(
        probed.rounds[(n, default)],
        [
            PerRound(
                f"n{n}_wall_ms",
                f"{n} miner(s), max_concurrency {min(n, default)}: probe_all wall time",
                lambda r: r["wall"],
                "ms",
                1000,
            ),
            PerRound(
                f"n{n}_slowest_ms",
                f"{n} miner(s): the slowest single probe inside that fan-out",
                lambda r: r["slowest"],
                "ms",
                1000,
            ),
            PerRound(
                f"n{n}_wall_over_slowest",
                f"{n} miner(s): wall / slowest single probe (1.0 = fully parallel)",
                lambda r: r["wall"] / r["slowest"],
                "x",
            ),
            PerRound(
                f"n{n}_cpu_ms",
                f"{n} miner(s): CPU time of the probing process per fan-out (user+sys)",
                lambda r: r["cpu"],
                "ms",
                1000,
            ),
        ],
    )
    figures.append(
        Figure(
            f"n{n}_peak_rss_mb",
            f"{n} miner(s): peak RSS (VmHWM) of the probing process "
            f"(after imports: {probed.baselines[n]:.0f} MiB)",
            round(probed.peaks[n], 1),
            "MiB",
        )
    )
    if n > default:
        figures += per_round_figures(
            probed.rounds[(n, n)],
            [
                PerRound(
                    f"n{n}_unbounded_wall_over_slowest",
                    f"{n} miners, max_concurrency raised to {n}: wall / slowest single probe",
                    lambda r: r["wall"] / r["slowest"],
                    "x",
                ),
            ],
        )
    return figures


def once(key: str, what: str, value: float, unit: str, digits: int) -> Figure:
    """A figure measured once (n=1), rounded to ``digits``."""
    return Figure(key, what, round(value, digits), unit, {"n": 1})


def fleet_figures(biggest: int, m: Measured) -> list[Figure]:
    """The CLI run over the biggest fleet, the idle echo miners and their start-up."""
    top = m.cli[biggest]
    what = f"`orchestrator health --json` over {biggest} miners, start-up included: wall time (one run)"
    return [
        once(f"cli_n{biggest}_wall_s", what, top["wall"], "s", 2),
        once(
            f"cli_n{biggest}_cpu_s",
            "the same CLI run: CPU time of the process (user+sys)",
            top["cpu"],
            "s",
            2,
        ),
        once(
            f"cli_n{biggest}_maxrss_mb",
            "the same CLI run: max RSS of the process",
            top["maxrss_mb"],
            "MiB",
            1,
        ),
        Figure.of("echo_miner_rss_mb", "one idle echo miner process: RSS", m.miner_rss, "MiB"),
        Figure.of(
            "echo_miner_pss_mb", "one idle echo miner process: PSS (shared pages split)", m.miner_pss, "MiB"
        ),
        once(
            "start_all_s",
            f"starting all {biggest} echo miners at once until every port answers",
            m.start_all,
            "s",
            1,
        ),
    ]


def failures_of(rounds: Rounds) -> list[str]:
    return [u for runs in rounds.values() for r in runs for u in r["unhealthy"]]


def figures(cfg: Config, m: Measured) -> list[Figure]:
    result = [f for n in cfg.sizes for f in size_figures(n, m.probed)]
    result += fleet_figures(max(cfg.sizes), m)
    rounds = m.probed.rounds
    probes = sum(n * len(rounds[(n, c)]) for (n, c) in rounds)
    what = f"probes that did not come back healthy, of {probes} (all sizes and rounds; expected 0)"
    result.append(Figure("unhealthy_probes", what, len(failures_of(rounds))))
    return result


def details(cfg: Config, m: Measured) -> dict[str, Any]:
    return {
        "sizes": list(cfg.sizes),
        "rounds": cfg.rounds,
        "default_max_concurrency": m.probed.default,
        "echo_delay_per_token": ECHO_DELAY,
        "per_size": {f"{n}/{c}": runs for (n, c), runs in m.probed.rounds.items()},
        "unhealthy_probes": failures_of(m.probed.rounds)[:50],
        "worker_rss_after_imports_mb": m.probed.baselines,
        "cli": m.cli,
        "miner_rss_mb": summarize(m.miner_rss),
    }


def run(quick: bool) -> Result:
    """Start the echo miners once, probe them at every size round after round, then the CLI once."""
    started, before = time.time(), machine()
    cfg = Config.for_run(quick)
    with bench_tmp() as tmp:
        measured = measure(cfg, tmp)
    default = measured.probed.default
    notes = [
        f"the fleet's default probe.max_concurrency is {default}: above that many miners the fan-out runs in "
        "waves, by configuration",
        "all miners, the prober and the CLI share the same 2 cores: CPU-bound parts of a probe (signing, "
        "verifying, JSON) slow each other down",
    ]
    return make_result(
        NAME,
        TITLE,
        quick,
        started,
        figures(cfg, measured),
        details(cfg, measured),
        notes=notes,
        machine_before=before,
    )


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--worker" in argv:  # the probing worker, as bench.fanout_worker runs it
        from bench.fanout_worker import main as worker_main

        return worker_main(argv)
    return main_for(NAME, __doc__ or "", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
