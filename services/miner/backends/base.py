"""The one small interface every backend implements, and the pieces they share.

A backend turns a chat into text pieces. It knows nothing about synapses, batching, deadlines or
``send``: that is the token streamer's job. Blocking model calls never run on the event loop: they go
through :func:`iterate_in_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import anyio

from services.miner.chat import ChatMessage
from services.miner.errors import BackendError, BusyError


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What a backend is asked to generate."""

    chat: list[ChatMessage]
    max_tokens: int
    temperature: float = 0.7
    seed: int | None = None


class Backend(Protocol):
    """A source of text pieces. ``load`` runs once at start-up, before the axon serves."""

    name: str

    def load(self) -> None:
        """Load the model (blocking). Raise ``ConfigError`` for a missing or unusable model."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """Yield the answer piece by piece (roughly one token each). Raise ``BackendError`` on failure."""
        ...

    async def aclose(self) -> None:
        """Release clients and models."""
        ...


class _Done:
    pass


_DONE = _Done()


async def iterate_in_thread(produce: Callable[[threading.Event], Iterable[str]]) -> AsyncIterator[str]:
    """Run a blocking iterator in its own thread and yield its items on the event loop.

    ``produce`` receives a ``threading.Event`` that is set when the consumer stops (deadline, client
    gone, error); it must check it between items. Closing this generator sets the event and *waits for
    the thread to finish*, so the model is really free when the next request takes it.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | _Done | BaseException] = asyncio.Queue()
    stop = threading.Event()

    def put(item: str | _Done | BaseException) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody to tell
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def worker() -> None:
        try:
            for item in produce(stop):
                if stop.is_set():
                    break
                put(item)
        except BaseException as exc:  # reported to the consumer, which raises it on the loop
            put(exc)
        else:
            put(_DONE)

    finished = loop.create_future()

    def run() -> None:
        try:
            worker()
        finally:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, finished)

    thread = threading.Thread(target=run, name="generation", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, BackendError):
                raise item
            if isinstance(item, BaseException):
                raise BackendError(f"{type(item).__name__}: {item}") from item
            yield item
    finally:
        stop.set()
        # The thread ends within one item of seeing the flag; wait for it even if we are being
        # cancelled, so nobody else touches the model while it still runs.
        with anyio.CancelScope(shield=True):
            await finished


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ModelGate:
    """One generation at a time per model; at most ``max_queue`` more waiting; past that, busy.

    A place is *reserved* synchronously when the request arrives (so a full queue is answered at once
    with a clear "busy"), then *entered* when the stream starts; entering waits for the model.
    """

    def __init__(self, max_queue: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = 1 + max_queue
        self._lock = asyncio.Lock()
        self._reservations: set[Reservation] = set()
        self._clock = clock

    @property
    def load(self) -> int:
        """Reservations that still hold a place (running, waiting, or about to start)."""
        now = self._clock()
        # A reservation whose stream never started (the response was never sent) expires at its
        # deadline, so a lost request cannot make the miner busy for ever.
        self._reservations = {r for r in self._reservations if r.entered or r.deadline > now}
        return len(self._reservations)

    def reserve(self, deadline: float) -> Reservation:
        if self.load >= self.capacity:
            raise BusyError(
                f"busy: {self.capacity - 1} request(s) already wait for the model (max_queue reached)"
            )
        reservation = Reservation(self, deadline)
        self._reservations.add(reservation)
        return reservation


class Reservation:
    """A place in a :class:`ModelGate`. ``async with reservation.hold():`` runs with the model."""

    def __init__(self, gate: ModelGate, deadline: float) -> None:
        self.gate = gate
        self.deadline = deadline
        self.entered = False

    def release(self) -> None:
        self.gate._reservations.discard(self)

    @contextlib.asynccontextmanager
    async def hold(self, timeout: float) -> AsyncIterator[None]:
        """Wait (at most ``timeout`` s) for the model, hold it, and free the place afterwards."""
        self.entered = True
        try:
            await asyncio.wait_for(self.gate._lock.acquire(), timeout=max(timeout, 0.0))
        except BaseException:
            self.release()
            raise
        try:
            yield
        finally:
            self.gate._lock.release()
            self.release()
