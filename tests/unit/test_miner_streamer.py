"""TokenStreamer.stream with a recording ``send`` and hand-written async piece generators.

Real time is used only where the rule is about time (max delay, deadline), in tens of milliseconds, and
nothing asserts on speed: only on what was sent, in which chunks, and how the stream ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from services.miner.errors import BackendError
from services.miner.streamer import Ending, TokenStreamer, until_stop

FAR = 3600.0  # a deadline / max delay that never fires during a test


class Recorder:
    """A fake ASGI ``send`` that keeps every message (and can be told to fail)."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fail_with = fail_with

    async def __call__(self, message: dict[str, Any]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.messages.append(message)

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages]

    @property
    def text(self) -> str:
        return b"".join(self.bodies).decode("utf-8")


class Producer:
    """Async generators that remember whether their ``finally`` ran (i.e. generation stopped)."""

    def __init__(self) -> None:
        self.closed = False
        self.produced = 0
        self.first = asyncio.Event()

    async def pieces(self, items: Iterable[str]) -> AsyncIterator[str]:
        try:
            for item in items:
                self.produced += 1
                yield item
        finally:
            self.closed = True

    async def endless(self, piece: str = "x ", pause: float = 0.002) -> AsyncIterator[str]:
        try:
            while True:
                self.produced += 1
                self.first.set()
                yield piece
                await asyncio.sleep(pause)
        finally:
            self.closed = True


def deadline_in(seconds: float) -> float:
    return time.monotonic() + seconds


async def test_batches_by_count_into_exact_chunk_sizes() -> None:
    send = Recorder()
    pieces = [f"p{i} " for i in range(10)]
    streamer = TokenStreamer(batch_size=3, max_delay=FAR)

    outcome = await streamer.stream(Producer().pieces(pieces), send, deadline=deadline_in(FAR))

    assert outcome.ending is Ending.done
    assert outcome.chunk_sizes == [3, 3, 3, 1]
    assert send.bodies == [b"p0 p1 p2 ", b"p3 p4 p5 ", b"p6 p7 p8 ", b"p9 "]
    assert all(m["type"] == "http.response.body" and m["more_body"] is True for m in send.messages)
    assert (outcome.pieces, outcome.chunks) == (10, 4)
    assert outcome.bytes_sent == sum(len(b) for b in send.bodies)
    assert outcome.first_chunk_after is not None
    assert outcome.error is None


async def test_batch_size_one_sends_every_piece_alone() -> None:
    send = Recorder()
    outcome = await TokenStreamer(batch_size=1, max_delay=FAR).stream(
        Producer().pieces(["a", "b", "c"]), send, deadline=deadline_in(FAR)
    )
    assert send.bodies == [b"a", b"b", b"c"]
    assert outcome.chunk_sizes == [1, 1, 1]


async def test_a_pause_longer_than_max_delay_flushes_the_buffer_before_it_ends() -> None:
    send = Recorder()
    sent_when_pause_ended: list[bytes] = []

    async def slow_model() -> AsyncIterator[str]:
        yield "a "
        yield "b "
        await asyncio.sleep(0.3)  # much longer than max_delay; the batch (10) is far from full
        sent_when_pause_ended.extend(send.bodies)
        yield "c"

    outcome = await TokenStreamer(batch_size=10, max_delay=0.02).stream(
        slow_model(), send, deadline=deadline_in(FAR)
    )

    assert sent_when_pause_ended == [b"a b "]
    assert send.bodies == [b"a b ", b"c"]
    assert outcome.ending is Ending.done
    assert outcome.chunk_sizes == [2, 1]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
async def test_multibyte_characters_are_never_split(batch_size: int) -> None:
    text = "Grüße 🎉🚀 東京 naïve café — ok"
    pieces = ["Grü", "ße ", "🎉", "🚀 ", "東", "京 ", "naïve ", "café ", "—", " ok"]
    assert "".join(pieces) == text
    send = Recorder()

    await TokenStreamer(batch_size=batch_size, max_delay=FAR).stream(
        Producer().pieces(pieces), send, deadline=deadline_in(FAR)
    )

    for body in send.bodies:
        body.decode("utf-8")  # raises UnicodeDecodeError if a character was cut between chunks
    assert send.text == text


async def test_deadline_flushes_the_buffer_and_stops_generation() -> None:
    send = Recorder()
    producer = Producer()
    # A batch that never fills and a max delay that never fires: only the deadline can send anything.
    streamer = TokenStreamer(batch_size=10_000, max_delay=FAR)

    outcome = await streamer.stream(producer.endless(), send, deadline=deadline_in(0.1))

    assert outcome.ending is Ending.deadline
    assert producer.closed, "the backend's generator must be closed (generation stopped)"
    assert outcome.pieces > 0
    assert len(send.bodies) == 1
    assert outcome.chunk_sizes == [outcome.pieces]
    assert send.text == "x " * outcome.pieces
    produced_at_return = producer.produced
    await asyncio.sleep(0.05)
    assert producer.produced == produced_at_return, "generation went on after the stream returned"


async def test_deadline_already_passed_sends_nothing_and_never_starts_generation() -> None:
    send = Recorder()
    producer = Producer()
    outcome = await TokenStreamer(batch_size=2, max_delay=FAR).stream(
        producer.endless(), send, deadline=time.monotonic() - 1.0
    )
    assert outcome.ending is Ending.deadline
    assert send.messages == []
    # Backends are lazy generators: one that was never iterated never started a model call.
    assert producer.produced == 0
    await asyncio.sleep(0.02)
    assert producer.produced == 0


async def test_backend_error_flushes_what_was_produced_and_reports_the_error() -> None:
    send = Recorder()
    error = BackendError("model fell over")

    async def failing() -> AsyncIterator[str]:
        yield "one "
        yield "two "
        yield "three "
        raise error

    outcome = await TokenStreamer(batch_size=10, max_delay=FAR).stream(
        failing(), send, deadline=deadline_in(FAR)
    )

    assert outcome.ending is Ending.error
    assert outcome.error is error
    assert send.bodies == [b"one two three "]
    assert outcome.pieces == 3


async def test_backend_error_before_any_piece_sends_nothing() -> None:
    send = Recorder()

    async def failing() -> AsyncIterator[str]:
        raise RuntimeError("load failed")
        yield ""  # pragma: no cover - makes this an async generator

    outcome = await TokenStreamer(batch_size=3, max_delay=FAR).stream(
        failing(), send, deadline=deadline_in(FAR)
    )
    assert outcome.ending is Ending.error
    assert isinstance(outcome.error, RuntimeError)
    assert send.messages == []


@pytest.mark.parametrize(
    "failure",
    [OSError("connection reset"), RuntimeError("Unexpected ASGI message after response completed")],
)
async def test_send_failing_is_a_disconnect_and_closes_the_generator(failure: BaseException) -> None:
    send = Recorder(fail_with=failure)
    producer = Producer()

    outcome = await TokenStreamer(batch_size=2, max_delay=FAR).stream(
        producer.endless(), send, deadline=deadline_in(FAR)
    )

    assert outcome.ending is Ending.disconnect
    assert outcome.error is None  # a gone client is not a forward exception
    assert outcome.chunks == 0
    assert producer.closed


async def test_a_generator_ahead_of_a_gone_client_is_closed_before_stream_returns() -> None:
    # This generator never awaits: it is parked at a ``yield`` while the bounded queue is full, so
    # only an explicit aclose() (not the cancellation of an await inside it) runs its ``finally``.
    closed: list[bool] = []

    async def fast_model() -> AsyncIterator[str]:
        try:
            while True:
                yield "x"
        finally:
            closed.append(True)

    outcome = await TokenStreamer(batch_size=2, max_delay=FAR).stream(
        fast_model(), Recorder(fail_with=OSError("gone")), deadline=deadline_in(FAR)
    )

    assert outcome.ending is Ending.disconnect
    assert closed == [True], "the backend's generator was left for the garbage collector to close"


async def test_cancelling_the_stream_propagates_and_closes_the_generator() -> None:
    send = Recorder()
    producer = Producer()
    streamer = TokenStreamer(batch_size=10_000, max_delay=FAR)
    task = asyncio.create_task(streamer.stream(producer.endless(), send, deadline=deadline_in(FAR)))
    await asyncio.wait_for(producer.first.wait(), timeout=5)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert producer.closed, "cancellation must stop generation before stream() gives up control"
    produced_at_cancel = producer.produced
    await asyncio.sleep(0.05)
    assert producer.produced == produced_at_cancel


async def test_empty_pieces_are_ignored() -> None:
    send = Recorder()
    outcome = await TokenStreamer(batch_size=2, max_delay=FAR).stream(
        Producer().pieces(["", "a", "", "", "b", "", "c", ""]), send, deadline=deadline_in(FAR)
    )
    assert send.bodies == [b"ab", b"c"]
    assert outcome.pieces == 3
    assert outcome.chunk_sizes == [2, 1]
    assert all(m["body"] for m in send.messages)


async def test_no_pieces_sends_nothing() -> None:
    send = Recorder()
    outcome = await TokenStreamer(batch_size=2, max_delay=FAR).stream(
        Producer().pieces([]), send, deadline=deadline_in(FAR)
    )
    assert outcome.ending is Ending.done
    assert send.messages == []
    assert outcome.first_chunk_after is None


async def test_leading_whitespace_waits_for_text_and_blank_alone_is_no_answer() -> None:
    # A first chunk commits the answer to 200: whitespace alone is no text, so it waits for the first
    # word (and goes out with it); a model that only ever says whitespace sends nothing (the miner then
    # answers 502, "ended without any text"), however long it waited or however many pieces it made.
    send = Recorder()
    streamer = TokenStreamer(batch_size=2, max_delay=0.0, first_chunk_delay=0.0)
    outcome = await streamer.stream(
        Producer().pieces(["\n", " ", "\n", "Hi", " there"]), send, deadline=deadline_in(FAR)
    )
    assert send.text == "\n \nHi there"
    assert outcome.pieces == 5 and outcome.chunks >= 1

    send = Recorder()
    outcome = await streamer.stream(Producer().pieces(["\n", " "] * 150), send, deadline=deadline_in(FAR))
    assert outcome.ending is Ending.done and outcome.chunks == 0 and outcome.pieces == 300
    assert send.messages == []


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_below_one_is_rejected(batch_size: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        TokenStreamer(batch_size=batch_size, max_delay=1.0)


async def test_the_first_chunk_waits_only_first_chunk_delay_then_batching_resumes() -> None:
    async def slow() -> AsyncIterator[str]:
        for i in range(6):
            yield f"s{i} "
            await asyncio.sleep(0.05)

    send = Recorder()
    streamer = TokenStreamer(batch_size=5, max_delay=FAR, first_chunk_delay=0.01)
    outcome = await streamer.stream(slow(), send, deadline=deadline_in(FAR))
    # The first piece goes out alone (after 10 ms, long before the second one arrives); then chunks
    # hold batch_size pieces again, since max_delay never fires.
    assert outcome.chunk_sizes == [1, 5]
    assert send.text == "".join(f"s{i} " for i in range(6))


async def _pieces(*pieces: str) -> AsyncIterator[str]:
    for piece in pieces:
        yield piece


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        (("ab", "cd", "ef"), ("cd",), "ab"),
        (("a", "b<", "/s", ">tail"), ("</s>",), "ab"),
        (("hello", " world"), ("zzz",), "hello world"),
        (("stop", "here"), ("stop",), ""),
        (("x<", "y"), ("<z",), "x<y"),
    ],
)
async def test_until_stop_cuts_before_a_stop_split_across_pieces(
    pieces: tuple[str, ...], stops: tuple[str, ...], expected: str
) -> None:
    out = [piece async for piece in until_stop(_pieces(*pieces), stops)]
    assert "".join(out) == expected
