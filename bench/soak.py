"""A soak: the shipped fleet (``make up``, docker) under steady validator load for a set time.

Operators run a fleet for weeks; a leak of a few MiB an hour, or a miner that stops answering after an
hour, shows nowhere in a five-minute benchmark. This one runs ``make up`` (reusing what is built and
running), then every ``--every`` seconds two validators (a dendrite each) ask every miner at once, each
its own question (new every round, so no prompt cache flatters the server), for ``--minutes``. Every
minute it reads each service's memory (what ``docker stats`` shows: usage less inactive file cache) and
the orchestrator's restart counts (``/status``).

Reported: the answered fraction (with text), what the rest were (busy, timeouts, ...; each one's miner
and reason in the details, up to 200), restarts, and per
service its memory at the start and end and its slope in MiB per hour, by least squares over the
samples after the warm-up (the first sixth of the run, at least 5 minutes). Run:

    python -m bench.soak --minutes 120      # the default is 30; --quick: 3 minutes

The validators sign with the probe's hotkey (the one key a ``network: local`` fleet admits), so the
miners count this load as the probe's (``caller="probe"``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench._common import (
    ROOT,
    Figure,
    Result,
    format_result,
    make_result,
    progress,
    slope_per_hour,
    write_result,
)
from bench.fleet import CONFIG, HOST, TIMEOUT, _up
from orchestrator.fleet.load import load_fleet
from orchestrator.probing.capacity import Outcome, classify, cut_after
from orchestrator.probing.fleetload import fleet_round
from orchestrator.probing.probe import Prober
from orchestrator.probing.reports import ProbeReport
from orchestrator.probing.serverload import round_prompts
from orchestrator.probing.targets import probe_wallet, targets

NAME = "soak"
TITLE = "The shipped fleet (make up, docker) under steady validator load: answers, restarts, memory"
VALIDATORS = 2
MAX_UNANSWERED = 200  # requests not answered whose reasons the details keep
MIB = 1024.0 * 1024.0


def container_mib(container: Any) -> float:
    """MiB a container uses, as ``docker stats`` shows it: usage less inactive file cache."""
    stats = container.stats(stream=False, one_shot=True)["memory_stats"]
    inner = stats.get("stats") or {}
    cache = inner.get("total_inactive_file", inner.get("inactive_file", 0))  # cgroup v1, v2
    return float(stats.get("usage", 0) - cache) / MIB


def memory(project: str) -> dict[str, float]:
    """MiB in use per compose service of the fleet (:func:`container_mib`)."""
    import docker

    client = docker.from_env()
    return {
        container.labels.get("com.docker.compose.service", container.name): container_mib(container)
        for container in client.containers.list(filters={"label": f"minerfleet.project={project}"})
    }


def restarts(status_port: int) -> dict[str, int]:
    """Restarts per unit since the orchestrator started, from its ``/status``."""
    with urllib.request.urlopen(f"http://{HOST}:{status_port}/status", timeout=10) as response:
        snapshot = json.loads(response.read())
    units = [*snapshot.get("miners", []), *snapshot.get("model_servers", [])]
    return {unit["name"]: int(unit.get("restarts") or 0) for unit in units}


@dataclass
class Tally:
    """What the requests came to: per kind, per miner and kind, and each unanswered one's reason."""

    by_miner: dict[str, Counter[str]]
    kinds: Counter[str] = field(default_factory=Counter)
    unanswered: list[dict[str, Any]] = field(default_factory=list)

    def add(self, miner: str, report: ProbeReport, outcome: Outcome, t_s: float) -> None:
        kind = "answered" if outcome.answered else outcome.kind
        self.kinds[kind] += 1
        self.by_miner[miner][kind] += 1
        if not outcome.answered and len(self.unanswered) < MAX_UNANSWERED:
            self.unanswered.append(
                {"t_s": round(t_s, 1), "miner": miner, "kind": kind, "status": report.status_code,
                 "reason": report.reason, "elapsed_s": round(report.elapsed, 2)}
            )  # fmt: skip


async def _soak(minutes: float, every: float) -> dict[str, Any]:
    loaded = load_fleet(CONFIG)
    chosen = targets(loaded, HOST)
    wallet = probe_wallet(loaded)
    prompt = loaded.fleet.probe.prompt
    probers = [Prober(wallet, prompt, TIMEOUT, max_concurrency=len(chosen)) for _ in range(VALIDATORS)]
    cut = cut_after(TIMEOUT)
    tally = Tally({t.name: Counter() for t in chosen})
    samples: list[tuple[float, dict[str, float]]] = []
    first_restarts = restarts(loaded.fleet.status_api.port)
    started = time.monotonic()
    next_sample = started
    offset = random.randrange(1 << 16)
    index = 0
    try:
        while time.monotonic() - started < minutes * 60:
            if time.monotonic() >= next_sample:
                samples.append(
                    (time.monotonic() - started, await asyncio.to_thread(memory, loaded.fleet.project))
                )
                next_sample += 60.0
            began = time.monotonic()
            per_miner, _ = await fleet_round(
                probers, chosen, round_prompts(prompt, VALIDATORS, index, offset)
            )
            for target, reports in zip(chosen, per_miner, strict=True):
                for report in reports:
                    tally.add(target.name, report, classify(report, cut), time.monotonic() - started)
            index += 1
            if index % 10 == 0:
                progress(f"{(time.monotonic() - started) / 60:.1f} min, {index} rounds: {dict(tally.kinds)}")
            await asyncio.sleep(max(0.0, every - (time.monotonic() - began)))
        samples.append((time.monotonic() - started, await asyncio.to_thread(memory, loaded.fleet.project)))
    finally:
        for prober in probers:
            await prober.aclose()
    last_restarts = restarts(loaded.fleet.status_api.port)
    return {
        "rounds": index,
        "outcomes": dict(tally.kinds),
        "by_miner": {name: dict(c) for name, c in tally.by_miner.items()},
        "unanswered": tally.unanswered,
        "restarts": {k: last_restarts.get(k, 0) - first_restarts.get(k, 0) for k in last_restarts},
        "memory_samples": [
            {"t_s": round(t, 1), "mib": {k: round(v, 2) for k, v in m.items()}} for t, m in samples
        ],
        "duration_s": time.monotonic() - started,
    }


def _memory_figures(samples: list[dict[str, Any]], warmup_s: float) -> tuple[list[Figure], dict[str, Any]]:
    services = sorted({name for s in samples for name in s["mib"]})
    figures, per_service = [], {}
    for name in services:
        points = [(s["t_s"], s["mib"][name]) for s in samples if name in s["mib"]]
        after = [p for p in points if p[0] >= warmup_s]
        rate = slope_per_hour(after) if len(after) >= 3 else None
        per_service[name] = {
            "start_mib": points[0][1] if points else None,
            "after_warmup_mib": after[0][1] if after else None,
            "end_mib": points[-1][1] if points else None,
            "max_mib": max((m for _, m in points), default=None),
            "slope_mib_per_h": rate,
        }
        figures.append(Figure(f"memory_slope_{name}", f"{name}: memory slope after warm-up", rate, "MiB/h"))
    return figures, per_service


def run(quick: bool, minutes: float | None = None, every: float = 20.0) -> Result:
    started = time.time()
    minutes = minutes if minutes is not None else (3.0 if quick else 30.0)
    _up()
    progress(f"soak: {VALIDATORS} validators x every miner every {every:g}s for {minutes:g} min")
    soak = asyncio.run(_soak(minutes, every))
    warmup_s = max(300.0, soak["duration_s"] / 6) if not quick else 60.0
    total = sum(soak["outcomes"].values())
    answered = soak["outcomes"].get("answered", 0)
    figures = [
        Figure("answered", "requests answered with text", answered / total if total else None, "fraction"),
        Figure("requests", "requests sent", total, ""),
        Figure("restarts", "restarts of any unit during the soak", sum(soak["restarts"].values()), ""),
    ]
    memory_figures, per_service = _memory_figures(soak["memory_samples"], warmup_s)
    figures += memory_figures
    details = {**soak, "minutes": minutes, "every_s": every, "warmup_s": warmup_s, "memory": per_service}
    notes = [
        "the stack is the shipped config/miners.yaml under make up (docker compose, rendered limits)",
        f"{VALIDATORS} validators (the probe's hotkey, a dendrite each) ask every miner at once, a new "
        "question each round",
        "memory: docker stats' figure (usage less inactive file cache); slope by least squares after warm-up",
    ]
    return make_result(NAME, TITLE, quick, started, figures, details, notes=notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--minutes", type=float, default=None, help="how long (default 30; quick: 3)")
    parser.add_argument("--every", type=float, default=20.0, help="seconds between rounds (default 20)")
    parser.add_argument("--quick", action="store_true", help="3 minutes")
    args = parser.parse_args(argv)
    result = run(args.quick, args.minutes, args.every)
    path = write_result(NAME, result)
    print(format_result(result))
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
