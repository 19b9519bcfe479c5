"""The capacity command's arithmetic: how a request counts, percentiles, totals, and the table."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from orchestrator.probing import capacity
from orchestrator.probing.capacity import (
    CapacityReport,
    LoadRunner,
    classify,
    cut_after,
    percentile,
    summarize,
)
from orchestrator.probing.reports import ProbeReport, ProbeTarget, report
from services.miner.client import StreamResult

TARGET = ProbeTarget("m-1", "5FcXSsAejw7Beau9RmpmX6jFxkEstd8jarGeXyvB1QaWrQMV", "127.0.0.1", 8091, "echo",
                     "prompting")  # fmt: skip
TIMEOUT = 12.0
CUT = cut_after(TIMEOUT, 0.3)


def _probed(code: int | None, message: str = "", text: str = "", elapsed: float = 2.0,
            first: float | None = 0.2) -> ProbeReport:  # fmt: skip
    result = StreamResult(code, message, [text] if text else [], text,
                          first_chunk_after=first if text else None, elapsed=elapsed)  # fmt: skip
    return report(TARGET, result, TIMEOUT)


def test_the_cut_is_the_miners_own_deadline_rule() -> None:
    # the miner stops deadline_margin before the timeout, at most 20% of it
    assert cut_after(12.0, 0.3) == pytest.approx(12.0 - 0.3 - capacity.CUT_SLACK)
    assert cut_after(1.0, 0.3) == pytest.approx(1.0 - 0.2 - capacity.CUT_SLACK)
    assert cut_after(12.0, 0.0) == pytest.approx(12.0 - capacity.CUT_SLACK)


@pytest.mark.parametrize(
    ("probed", "answered", "complete", "refused", "kind"),
    [
        (_probed(200, "Success", "Paris is the capital."), True, True, False, "complete"),
        # a long answer that ended before the cut is complete (the probe's 80% rule would call it timeout)
        (_probed(200, "Success", "a long answer", elapsed=10.5), True, True, False, "complete"),
        (_probed(200, "Success", "cut short", elapsed=11.7), True, False, False, "cut"),
        (_probed(200, "Success", ""), False, False, False, "empty"),
        (_probed(200, "Success", "RuntimeError: boom"), False, False, False, "error-text"),
        (_probed(503, "busy: 4 request(s) already wait"), False, False, True, "busy"),
        (_probed(403, "Forbidden. Key is blacklisted: x"), False, False, True, "refused"),
        (_probed(413, "too large"), False, False, True, "error"),
        (_probed(503, "Service unavailable at 127.0.0.1:1/X"), False, False, False, "down"),
        (_probed(408, "Request timeout after 12 seconds"), False, False, False, "timeout"),
        (_probed(None, ""), False, False, False, "error"),
    ],
)
def test_classify(probed: ProbeReport, answered: bool, complete: bool, refused: bool, kind: str) -> None:
    outcome = classify(probed, CUT)
    assert (outcome.answered, outcome.complete, outcome.refused, outcome.kind) == (
        answered,
        complete,
        refused,
        kind,
    )


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 90) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([float(x) for x in range(1, 11)], 90) == pytest.approx(9.1)
    assert percentile([1.0, 2.0], 100) == 2.0


def test_summarize_counts_every_request_and_estimates_total_tokens_per_second() -> None:
    rounds = [
        [_probed(200, "", "a" * 40, first=0.1), _probed(200, "", "b" * 40, first=0.3),
         _probed(503, "busy: queue full")],
        [_probed(200, "", "c" * 80, elapsed=11.8, first=0.5), _probed(200, "", ""),
         _probed(503, "Service unavailable at x")],
    ]  # fmt: skip
    rep = summarize(TARGET, rounds, walls=[2.0, 3.0], cut=CUT)
    assert (rep.requests, rep.answered, rep.complete, rep.refused, rep.failed) == (6, 3, 2, 1, 2)
    assert (rep.concurrency, rep.rounds) == (3, 2)
    assert rep.first_chunk_p50 == pytest.approx(0.3)
    assert rep.first_chunk_p90 == pytest.approx(0.46)
    # answers only: (40 + 40 + 80) chars / 4 per token over 5 s of wall time
    assert rep.tokens_per_s == pytest.approx(160 / 4 / 5.0)
    assert rep.outcomes == {"complete": 2, "busy": 1, "cut": 1, "empty": 1, "down": 1}
    assert sum(rep.outcomes.values()) == rep.requests


def test_summarize_with_nothing_answered() -> None:
    rep = summarize(TARGET, [[_probed(503, "Service unavailable at x")]], walls=[0.01], cut=CUT)
    assert (rep.answered, rep.failed, rep.first_chunk_p50, rep.tokens_per_s) == (0, 1, None, 0.0)


class _FakeProber:
    """Stands in for a Prober: answers from a script, records that it was closed."""

    def __init__(self, answers: list[ProbeReport]) -> None:
        self.answers = answers
        self.closed = False

    async def ask(self, target: ProbeTarget, door: str) -> ProbeReport:
        await asyncio.sleep(0)
        return self.answers.pop(0)

    async def aclose(self) -> None:
        self.closed = True


async def test_load_runner_sends_one_request_per_prober_per_round() -> None:
    runner = LoadRunner([object(), object()], "hi", TIMEOUT)
    fakes = [
        _FakeProber([_probed(200, "", "one"), _probed(200, "", "two")]),
        _FakeProber([_probed(503, "busy: full"), _probed(200, "", "four")]),
    ]
    runner.probers = fakes  # type: ignore[assignment]
    rep = await runner.measure(TARGET, rounds=2, cut=CUT)
    await runner.aclose()
    assert (rep.requests, rep.answered, rep.refused, rep.concurrency, rep.rounds) == (4, 3, 1, 2, 2)
    assert all(f.closed and not f.answers for f in fakes)


def _report(**overrides: Any) -> CapacityReport:
    values: dict[str, Any] = dict(
        name="m-1", port=8091, backend="echo", concurrency=4, rounds=1, requests=4, answered=3, complete=2,
        refused=1, failed=0, first_chunk_p50=0.12, first_chunk_p90=0.5, tokens_per_s=42.0, wall_s=2.0,
        outcomes={"complete": 2, "cut": 1, "busy": 1},
    )  # fmt: skip
    values.update(overrides)
    return CapacityReport(**values)


def test_table_and_json() -> None:
    out = io.StringIO()
    capacity.print_reports(
        [_report(), _report(name="m-2", first_chunk_p50=None, first_chunk_p90=None, tokens_per_s=None)],
        out, as_json=False, concurrency=4, rounds=1, timeout=12.0, prompt="hi",
    )  # fmt: skip
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:5] == ["MINER", "DOOR", "BACKEND", "K", "ANSWERED"]
    assert lines[1].split()[:9] == ["m-1", "axon", "echo", "4", "3/4", "2/4", "1", "0", "0.12s"]
    assert lines[1].endswith("cut 1, busy 1") and "42.0" in lines[1]
    assert "characters / 4" in lines[-1]
    out = io.StringIO()
    capacity.print_reports([_report()], out, as_json=True, concurrency=4, rounds=1, timeout=12.0, prompt="hi")
    data = json.loads(out.getvalue())
    assert data["concurrency"] == 4 and data["miners"][0]["complete"] == 2
    assert data["miners"][0]["outcomes"] == {"complete": 2, "cut": 1, "busy": 1}
