"""The probe's judgement of a stream, and the health table."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.probing.reports import ProbeTarget, Verdict, format_table, judge, report
from services.miner.client import StreamResult


def _result(code: int | None, message: str = "", completion: str = "", elapsed: float = 1.0) -> StreamResult:
    chunks = [completion] if completion else []
    first = 0.1 if completion else None
    return StreamResult(code, message, chunks, completion, first_chunk_after=first, elapsed=elapsed)


def _flowing(elapsed: float, last: float) -> StreamResult:
    """A stream cut at the deadline whose last chunk came ``last`` seconds in."""
    return StreamResult(200, "Success", ["some", " text"], "some text", 0.1, elapsed, last_chunk_after=last)


@pytest.mark.parametrize(
    ("result", "verdict", "reason_part"),
    [
        (_result(200, "Success", "Paris is the capital."), Verdict.healthy, ""),
        (_result(200, "Success", ""), Verdict.empty, "no text"),
        (_result(200, "Success", "   \n"), Verdict.empty, "no text"),
        (_result(200, "Success", "Error: CUDA out of memory"), Verdict.error_text, "error message"),
        (_result(200, "Success", "Traceback (most recent call last):\n  File"), Verdict.error_text, "error"),
        (_result(200, "Success", "RuntimeError: boom"), Verdict.error_text, "RuntimeError"),
        (_result(200, "Success", "Errors are how we learn."), Verdict.healthy, ""),
        (_result(200, "Success", "partial", elapsed=9.5), Verdict.timeout, "cut at the deadline"),
        (_flowing(elapsed=9.5, last=8.0), Verdict.slow, "still streaming at the 10s deadline"),
        (_flowing(elapsed=9.5, last=1.0), Verdict.timeout, "cut at the deadline"),  # stuck 8.5 s
        (_flowing(elapsed=9.5, last=6.0), Verdict.timeout, "cut at the deadline"),  # over 10 s / 4
        (_result(403, "Forbidden. Key is blacklisted: nope"), Verdict.refused, "blacklisted"),
        (_result(503, "busy: 0 request(s) already wait"), Verdict.busy, "busy"),
        (
            _result(
                503, "dependency down: model server http://model-server:8000 unreachable (connection refused)"
            ),
            Verdict.dependency_down,
            "model server",
        ),
        (_result(503, "Service unavailable at 127.0.0.1:1/X"), Verdict.down, "unavailable"),
        (_result(408, "Request timeout after 10 seconds"), Verdict.timeout, "within 10s"),
        (_result(400, "Payload error: Response payload is not completed"), Verdict.broken, "payload"),
        (_result(500, "Internal Server Error"), Verdict.error, "HTTP 500"),
        (_result(None, ""), Verdict.error, "no answer"),
    ],
)
def test_judge(result: StreamResult, verdict: Verdict, reason_part: str) -> None:
    got, reason = judge(result, timeout=10)
    assert got is verdict
    assert reason_part in reason


def test_report_estimates_tokens_per_second_and_the_table_shows_every_miner() -> None:
    target = ProbeTarget(
        "m-1", "5FcXSsAejw7Beau9RmpmX6jFxkEstd8jarGeXyvB1QaWrQMV", "127.0.0.1", 8091, "echo", "prompting"
    )
    result = StreamResult(200, "Success", ["a" * 40, "b" * 40], "a" * 40 + "b" * 40, 0.5, 2.5)
    rep = report(target, result, timeout=10)
    assert rep.healthy and rep.chunks == 2 and rep.completion_chars == 80
    assert rep.tokens_per_s == pytest.approx(80 / 4 / 2.0)
    down = report(target, _result(503, "Service unavailable at x"), timeout=10)
    table = format_table([rep, down])
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["MINER", "HOTKEY", "PORT", "BACKEND", "VERDICT"]
    assert "healthy" in lines[1] and "5FcXSs…rQMV" in lines[1] and "10.0" in lines[1]
    assert "down" in lines[2] and "Service unavailable" in lines[2]
    assert lines[-1] == "1/2 healthy"


async def test_every_route_a_miner_serves_is_probed_and_the_failed_one_is_named() -> None:
    """Fakes at the seams (the stream and the plain call); the routes come from the miner's protocols."""
    from orchestrator.probing.probe import Prober

    target = ProbeTarget(
        "m-2", "5Fc", "127.0.0.1", 8091, "echo", "prompting", protocols=("prompting", "text-prompting")
    )
    prober = Prober(wallet=None, prompt="hi", timeout=10, max_concurrency=4)
    ok = StreamResult(200, "Success", ["hi"], "hi", 0.1, 0.2)
    asked: list[str] = []

    async def stream(t: ProbeTarget, protocol: str) -> Any:
        asked.append(protocol)
        return report(t, ok, timeout=10)

    async def plain(t: ProbeTarget, synapse: Any) -> tuple[Verdict, str]:
        asked.append(type(synapse).__name__)
        if type(synapse).__name__ == "Prompting":
            return Verdict.busy, "busy: 1 running"
        return Verdict.healthy, ""

    prober.stream = stream  # type: ignore[method-assign]
    prober._plain = plain  # type: ignore[method-assign]
    rep = await prober.probe(target)
    assert asked == ["prompting", "AvailabilitySynapse", "text-prompting", "Prompting"]
    assert rep.routes == {
        "StreamPromptingSynapse": "healthy",
        "AvailabilitySynapse": "healthy",
        "StreamPrompting": "healthy",
        "Prompting": "busy",
    }
    assert rep.verdict is Verdict.busy and rep.reason == "/Prompting: busy: 1 running"
    assert "/Prompting: busy" in format_table([rep])


async def test_a_long_lived_dendrite_keeps_a_bounded_synapse_history() -> None:
    """bittensor appends a copy of every synapse a dendrite sends to ``synapse_history`` and never
    drops one: the watch's prober, which keeps its dendrite for days, grew ~4 KiB a request."""
    from bittensor_wallet import Keypair

    from devkit.local import free_port
    from services.miner.client import DENDRITE_HISTORY, axon_info, make_dendrite, make_synapse, stream_once

    dendrite = make_dendrite(Keypair.create_from_uri("//probe"))
    nobody = axon_info("127.0.0.1", free_port(), Keypair.create_from_uri("//miner").ss58_address)
    try:
        for _ in range(DENDRITE_HISTORY + 10):  # connection refused: each still lands in the history
            await dendrite.call(nobody, make_synapse("prompting", "hi", timeout=1), timeout=1)
            await stream_once(dendrite, nobody, make_synapse("prompting", "hi", timeout=1), 1)
    finally:
        await dendrite.aclose_session()
    assert len(dendrite.synapse_history) == DENDRITE_HISTORY
