"""The one token streamer every backend goes through.

Backends only produce text pieces (an ``AsyncIterator[str]``); this module owns batching, deadlines and
``send``. Its rules (docs/ARCHITECTURE.md, "Admission"; the seeds' token streamer):

- a chunk goes out when it holds ``batch_size`` pieces, or when its oldest piece has waited
  ``max_delay`` seconds (``first_chunk_delay`` for the first chunk), whichever comes first
  (validators penalise chunks over 200 tokens, and a slow model must still look alive);
- a chunk is the UTF-8 encoding of whole ``str`` pieces, so a multi-byte character is never split;
- just before the request's deadline whatever is buffered is sent (a partial answer still earns
  rewards) and generation stops;
- a client that disconnects or times out cancels generation (the producer task is cancelled and the
  backend's generator closed, which frees the model); that is *not* a forward exception;
- a backend error ends the stream after flushing what was produced, and is reported in the outcome so
  the caller can apply ``stop_on_forward_exception``; a refusal (``RefusedError``: the request is too
  long for the model, a model server is down) ends it the same way but is never a forward exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio

from services.miner.errors import RefusedError

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Clock = Callable[[], float]


class Ending(StrEnum):
    """How a stream ended."""

    done = "done"  # the backend finished
    deadline = "deadline"  # the request's time ran out; what we had was flushed
    disconnect = "disconnect"  # the client went away (or timed out on its side)
    error = "error"  # the backend's own state is broken: a forward exception
    refused = "refused"  # the backend refused this request (too long, dependency down): not an exit


@dataclass
class StreamOutcome:
    """What happened to one stream: for logs, metrics and the exit-code decision."""

    ending: Ending = Ending.done
    pieces: int = 0
    chunks: int = 0
    bytes_sent: int = 0
    first_chunk_after: float | None = None
    error: BaseException | None = None
    chunk_sizes: list[int] = field(default_factory=list)


class _End:
    """Sentinel put on the queue when the backend's iterator is exhausted."""


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


class _Deadline:
    """What :meth:`TokenStreamer._next` returns when the request's time is up."""


_END = _End()
_DEADLINE = _Deadline()


class ClientGone(Exception):
    """``send`` failed because the client's connection is closed."""


class TokenStreamer:
    """Batch text pieces into chunks and send them as an ASGI streaming body.

    One instance per miner; :meth:`stream` runs once per request. ``clock`` is injectable so tests can
    check deadline behaviour without real waiting.
    """

    def __init__(
        self,
        *,
        batch_size: int,
        max_delay: float,
        first_chunk_delay: float | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.max_delay = max_delay
        # The first chunk waits less: time to first chunk is what a validator sees first, and waiting
        # for a whole batch there only adds latency (bench: +265 ms at batch 12 on Gemma 270M).
        self.first_chunk_delay = max_delay if first_chunk_delay is None else min(first_chunk_delay, max_delay)
        self.clock = clock

    async def stream(self, pieces: AsyncIterator[str], send: Send, *, deadline: float) -> StreamOutcome:
        """Stream ``pieces`` through ``send`` until they end, fail, or ``deadline`` (a ``clock`` time).

        Never raises for a backend error or a gone client (see :class:`StreamOutcome`); re-raises
        ``CancelledError`` after stopping generation, as cancellation must never be swallowed.
        """
        outcome = StreamOutcome()
        batch = _Batch(self, send, outcome, started=self.clock())
        # Bounded: a slow client slows generation down instead of piling text up in memory.
        queue: asyncio.Queue[str | _End | _Failed] = asyncio.Queue(maxsize=max(4, 2 * self.batch_size))
        producer = asyncio.create_task(_produce(pieces, queue), name="token-producer")
        try:
            await self._pump(queue, batch, deadline)
            await batch.flush()
        except ClientGone as exc:
            outcome.ending = Ending.disconnect
            log.info("client gone after %d chunks (%s): generation stopped", outcome.chunks, exc)
        except asyncio.CancelledError:
            outcome.ending = Ending.disconnect
            log.info(
                "stream cancelled after %d chunks (client disconnected): generation stopped", outcome.chunks
            )
            raise
        finally:
            await _stop(producer)
        return outcome

    async def _pump(self, queue: asyncio.Queue[str | _End | _Failed], batch: _Batch, deadline: float) -> None:
        """Move pieces from the queue into chunks until the backend ends, fails, or the deadline comes."""
        outcome = batch.outcome
        while True:
            item = await self._next(queue, batch, deadline)
            if item is None:
                continue  # a chunk went out, or a wait ended: look again
            if isinstance(item, _Deadline):
                outcome.ending = Ending.deadline
                return
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                refused = isinstance(item.error, RefusedError)
                outcome.ending = Ending.refused if refused else Ending.error
                outcome.error = item.error
                return
            if item:
                await batch.add(item)

    async def _next(
        self, queue: asyncio.Queue[str | _End | _Failed], batch: _Batch, deadline: float
    ) -> str | _End | _Failed | _Deadline | None:
        """The next item, or the deadline; None after flushing a chunk whose oldest piece waited enough,
        or after waiting in vain until then."""
        # Fast path: take what is already there without creating a timer.
        with contextlib.suppress(asyncio.QueueEmpty):
            return queue.get_nowait()
        now = self.clock()
        wait = batch.wait(deadline, now)
        if wait <= 0:
            if now >= deadline:
                return _DEADLINE
            await batch.flush()  # the oldest piece has waited long enough
            return None
        try:
            return await asyncio.wait_for(queue.get(), timeout=wait)
        except TimeoutError:
            return None


class _Batch:
    """The pieces of one stream waiting to go out as a chunk, and what was sent so far."""

    def __init__(
        self, streamer: TokenStreamer, send: Send, outcome: StreamOutcome, *, started: float
    ) -> None:
        self.streamer = streamer
        self.send = send
        self.outcome = outcome
        self.started = started
        self.buffer: list[str] = []
        self.oldest = 0.0
        # Nothing but whitespace yet: held back, since a first chunk commits the answer to 200 and blank
        # text is no answer (a stream that only ever had whitespace ends with no chunk: a refusal).
        self.blank = True

    def wait(self, deadline: float, now: float) -> float:
        """Seconds until the deadline, or until the oldest buffered piece has waited long enough."""
        wait = deadline - now
        if self.buffer and not self.blank:
            streamer = self.streamer
            delay = streamer.max_delay if self.outcome.chunks else streamer.first_chunk_delay
            wait = min(wait, self.oldest + delay - now)
        return wait

    async def add(self, piece: str) -> None:
        if not self.buffer:
            self.oldest = self.streamer.clock()
        self.buffer.append(piece)
        self.outcome.pieces += 1
        if self.blank and not piece.isspace():
            self.blank = False
            self.oldest = self.streamer.clock()  # the first chunk's delay counts from its first text
        if len(self.buffer) >= self.streamer.batch_size:
            await self.flush()

    async def flush(self) -> None:
        if not self.buffer or self.blank:
            return
        outcome = self.outcome
        body = "".join(self.buffer).encode("utf-8")
        count = len(self.buffer)
        self.buffer = []
        try:
            await self.send({"type": "http.response.body", "body": body, "more_body": True})
        except (OSError, RuntimeError) as exc:
            # uvicorn raises ClientDisconnected (an OSError); starlette a RuntimeError on a closed
            # stream. Either way nobody is listening any more.
            raise ClientGone(str(exc)) from exc
        if outcome.first_chunk_after is None:
            outcome.first_chunk_after = self.streamer.clock() - self.started
        outcome.chunks += 1
        outcome.bytes_sent += len(body)
        outcome.chunk_sizes.append(count)


async def _stop(producer: asyncio.Task[None]) -> None:
    producer.cancel()
    # Wait for the producer so the backend has really stopped (and released the model) before the next
    # request may take it. Shielded: under a cancelled anyio scope (the response's task group) every
    # unshielded await would be cancelled again at once, and the next request would start on a model
    # that is still generating. Its own errors were already reported through the queue.
    with anyio.CancelScope(shield=True), contextlib.suppress(asyncio.CancelledError, Exception):
        await producer


async def until_stop(pieces: AsyncIterator[str], stops: tuple[str, ...]) -> AsyncIterator[str]:
    """``pieces`` up to (not including) the first of ``stops``; then the backend's generator is closed.

    Text that could be the start of a stop string is held back until the next piece says whether it is,
    so a stop split across pieces is still found and never sent.
    """
    hold = max(len(stop) for stop in stops) - 1
    pending = ""
    try:
        async for piece in pieces:
            pending += piece
            cut = min((i for i in (pending.find(stop) for stop in stops) if i >= 0), default=-1)
            if cut >= 0:
                if cut:
                    yield pending[:cut]
                return
            safe = len(pending) - hold
            if safe > 0:
                yield pending[:safe]
                pending = pending[safe:]
        if pending:
            yield pending
    finally:
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await aclose()


async def _produce(pieces: AsyncIterator[str], queue: asyncio.Queue[str | _End | _Failed]) -> None:
    try:
        async for piece in pieces:
            await queue.put(piece)
        await queue.put(_END)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await queue.put(_Failed(exc))
    finally:
        # Close the backend's generator now (not at garbage collection), so its cleanup (stopping a
        # worker thread, closing an HTTP stream) runs before the model is handed to the next request.
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await aclose()
