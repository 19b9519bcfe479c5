"""``python -m orchestrator capacity``: K validators at once on every miner, before real validators do it.

Validators query concurrently, so a miner is judged by how many of K simultaneous requests it answers in
full. For each miner in turn (never two at once: miners sharing a model server would share the load), K
requests leave together from K separate dendrites (own HTTP session and uuid each; all signed by the
probe's hotkey, the one key miners accept on network local), for N rounds. Each request is read by the
probe (:class:`orchestrator.probing.probe.Prober`) and counted as:

- **answered**: HTTP 200 carrying an answer (the probe's check: some text, not an error message);
- **complete**: answered, and not cut at the deadline. A miner flushes and ends a stream
  ``deadline_margin`` (at most 20% of the timeout) before the timeout, and nothing on the wire says so:
  a stream that lasted until that cut (less :data:`CUT_SLACK`) counts as cut;
- **refused**: the miner answered another status (``503 busy``, 403, 4xx);
- **failed**: the rest (nothing listening, the client's timeout, an empty stream, an error message).

First-chunk p50/p90 are over the requests that got a first chunk. Tokens/s is an *estimate* (characters
/ 4, as the probe's): every answer's characters over the rounds' wall time (first send to last byte).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from orchestrator.fleet.load import LoadedFleet
from orchestrator.probing.probe import Prober
from orchestrator.probing.reports import CHARS_PER_TOKEN, ProbeReport, ProbeTarget, Verdict, judge
from orchestrator.probing.targets import probe_wallet, targets
from services.miner.client import StreamResult
from services.miner.settings import MinerSettings

# A stream that ended this close to the miner's cut is counted as cut (the client's clock starts before
# the miner's, so a cut stream always looks at least this long; a real end this late is rare).
CUT_SLACK = 0.05
DEFAULT_MARGIN = float(MinerSettings.model_fields["deadline_margin"].default)


@dataclass(frozen=True)
class Outcome:
    """How one request counts."""

    answered: bool
    complete: bool
    refused: bool
    kind: str  # "complete", "cut", or the probe's verdict (busy, down, timeout, empty, ...)


def cut_after(timeout: float, deadline_margin: float = DEFAULT_MARGIN) -> float:
    """Seconds after which a stream counts as cut at the miner's deadline (the miner's own rule)."""
    return timeout - min(deadline_margin, timeout * 0.2) - CUT_SLACK


def classify(report: ProbeReport, cut: float) -> Outcome:
    """Count one probed request: answered / complete / refused / failed (see the module's docstring)."""
    if report.status_code == 200:
        # What the text is, whatever the time it took (the deadline is judged below, more tightly).
        content, _ = judge(StreamResult(status_code=200, completion=report.completion), math.inf)
        if content is not Verdict.healthy:
            return Outcome(False, False, False, content.value)
        if report.elapsed >= cut:
            return Outcome(True, False, False, "cut")
        return Outcome(True, True, False, "complete")
    # busy/refused/other HTTP codes came from the miner; down, timeout, broken from the client side.
    said_no = report.verdict in (Verdict.busy, Verdict.refused, Verdict.error)
    refused = said_no and report.status_code is not None
    return Outcome(False, False, refused, report.verdict.value)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), interpolated linearly between closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class CapacityReport:
    """One miner under K concurrent requests for N rounds."""

    name: str
    port: int
    backend: str
    concurrency: int
    rounds: int
    requests: int
    answered: int
    complete: int
    refused: int
    failed: int
    first_chunk_p50: float | None
    first_chunk_p90: float | None
    tokens_per_s: float | None  # estimate: characters / 4 over the rounds' wall time
    wall_s: float
    outcomes: dict[str, int] = field(default_factory=dict)  # kind -> count
    door: str = "axon"  # axon, or the HTTP door's scheme (epistula, btauth)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    target: ProbeTarget,
    rounds: Sequence[Sequence[ProbeReport]],
    walls: Sequence[float],
    cut: float,
    door: str = "axon",
) -> CapacityReport:
    """The figures of one miner from every request of every round and each round's wall time."""
    reports = [r for batch in rounds for r in batch]
    outcomes = [classify(r, cut) for r in reports]
    answered = sum(o.answered for o in outcomes)
    refused = sum(o.refused for o in outcomes)
    firsts = [r.first_chunk_after for r in reports if r.first_chunk_after is not None]
    chars = sum(r.completion_chars for r, o in zip(reports, outcomes, strict=True) if o.answered)
    wall = sum(walls)
    return CapacityReport(
        name=target.name,
        port=target.port,
        backend=target.backend,
        concurrency=max((len(b) for b in rounds), default=0),
        rounds=len(rounds),
        requests=len(reports),
        answered=answered,
        complete=sum(o.complete for o in outcomes),
        refused=refused,
        failed=len(reports) - answered - refused,
        first_chunk_p50=percentile(firsts, 50),
        first_chunk_p90=percentile(firsts, 90),
        tokens_per_s=chars / CHARS_PER_TOKEN / wall if wall > 0 else None,
        wall_s=wall,
        outcomes=dict(Counter(o.kind for o in outcomes).most_common()),
        door=door,
    )


class LoadRunner:
    """K probers, one dendrite each, sending to one miner at the same moment. ``wallets`` holds one wallet
    (or Keypair) per concurrent request: the same one K times for the fleet's probe, distinct ones for a
    benchmark of distinct validators."""

    def __init__(self, wallets: Sequence[Any], prompt: str, timeout: float) -> None:
        self.timeout = timeout
        self.probers = [Prober(wallet, prompt, timeout, max_concurrency=1) for wallet in wallets]

    async def round(self, target: ProbeTarget, door: str = "axon") -> tuple[list[ProbeReport], float]:
        """One request per prober through ``door``, all at once; the reports and the round's wall time."""
        started = time.monotonic()
        reports = await asyncio.gather(*(prober.ask(target, door) for prober in self.probers))
        return list(reports), time.monotonic() - started

    async def measure(
        self, target: ProbeTarget, rounds: int, cut: float, door: str = "axon"
    ) -> CapacityReport:
        batches: list[list[ProbeReport]] = []
        walls: list[float] = []
        for _ in range(rounds):
            batch, wall = await self.round(target, door)
            batches.append(batch)
            walls.append(wall)
        return summarize(target, batches, walls, cut, door)

    async def aclose(self) -> None:
        for prober in self.probers:
            await prober.aclose()


async def measure_fleet(
    loaded: LoadedFleet,
    host: str,
    names: Sequence[str],
    concurrency: int,
    rounds: int,
    timeout: float,
    prompt: str,
    progress: TextIO = sys.stderr,
    door: str = "axon",
) -> list[CapacityReport]:
    """Every chosen miner in turn, K concurrent requests for N rounds each, through ``door`` (``all``:
    through each door the miner has, one after the other: the axon, then each HTTP scheme)."""
    runner = LoadRunner([probe_wallet(loaded)] * concurrency, prompt, timeout)
    results = []
    try:
        for target in targets(loaded, host, names):
            margin = loaded.miner(target.name).options.deadline_margin
            cut = cut_after(timeout, DEFAULT_MARGIN if margin is None else margin)
            for through in doors_of(target, door):
                print(f"capacity: {target.name} ({through}): {concurrency} at once x {rounds} round(s)",
                      file=progress)  # fmt: skip
                results.append(await runner.measure(target, rounds, cut, through))
    finally:
        await runner.aclose()
    return results


def doors_of(target: ProbeTarget, door: str) -> list[str]:
    """The doors of ``target`` to measure: ``door`` if the miner has it, every one for ``all``."""
    own = ["axon", *target.http_auth]
    return own if door == "all" else [d for d in own if d == door]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def format_table(reports: Sequence[CapacityReport], timeout: float) -> str:
    """The human table: one row per miner, then what the columns mean."""
    header = ("MINER", "DOOR", "BACKEND", "K", "ANSWERED", "COMPLETE", "REFUSED", "FAILED", "FIRST p50",
              "p90", "TOK/S~", "OTHER OUTCOMES")  # fmt: skip
    rows = [header]
    for r in reports:
        other = ", ".join(f"{kind} {n}" for kind, n in r.outcomes.items() if kind != "complete")
        rows.append(
            (
                r.name,
                r.door,
                r.backend,
                str(r.concurrency),
                f"{r.answered}/{r.requests}",
                f"{r.complete}/{r.requests}",
                str(r.refused),
                str(r.failed),
                _seconds(r.first_chunk_p50),
                _seconds(r.first_chunk_p90),
                "-" if r.tokens_per_s is None else f"{r.tokens_per_s:.1f}",
                other,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join([*(c.ljust(widths[i]) for i, c in enumerate(row[:-1])), row[-1]]).rstrip()
             for row in rows]  # fmt: skip
    rounds = max((r.rounds for r in reports), default=0)
    lines.append(
        f"{rounds} round(s) per miner, timeout {timeout:g}s; complete = not cut at the miner's deadline; "
        f"TOK/S~ = all answers' characters / {CHARS_PER_TOKEN:g} per second of wall time (an estimate)"
    )
    return "\n".join(lines)


def print_reports(
    reports: Sequence[CapacityReport],
    out: TextIO,
    *,
    as_json: bool,
    concurrency: int,
    rounds: int,
    timeout: float,
    prompt: str,
) -> None:
    if not as_json:
        out.write(format_table(reports, timeout) + "\n")
        return
    payload = {
        "concurrency": concurrency,
        "rounds": rounds,
        "timeout": timeout,
        "prompt": prompt,
        "tokens_per_s_estimate": f"characters / {CHARS_PER_TOKEN:g}",
        "miners": [r.as_dict() for r in reports],
    }
    out.write(json.dumps(payload, indent=2) + "\n")


def run_capacity(
    loaded: LoadedFleet,
    host: str,
    names: Sequence[str],
    concurrency: int,
    rounds: int,
    timeout: float,
    prompt: str,
    door: str = "axon",
) -> list[CapacityReport]:
    return asyncio.run(measure_fleet(loaded, host, names, concurrency, rounds, timeout, prompt, door=door))
