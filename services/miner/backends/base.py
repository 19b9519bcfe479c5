"""The one small interface every backend implements, and the pieces they share.

A backend turns a chat into text pieces. It knows nothing about synapses, batching, deadlines or
``send``: that is the token streamer's job. Blocking model calls never run on the event loop: they go
through :func:`iterate_in_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import anyio

from services.miner.chat import ChatMessage
from services.miner.errors import BackendError, BusyError, MinerError


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What a backend is asked to generate."""

    chat: list[ChatMessage]
    max_tokens: int
    temperature: float = 0.7
    seed: int | None = None


class Backend(Protocol):
    """A source of text pieces. ``load`` runs once at start-up, before the axon serves.

    ``default_concurrency`` is how many generations it runs at once unless the settings say otherwise;
    ``max_concurrency`` is the most it can really run (``None``: no limit of its own). The in-process
    models take one: a llama.cpp context or a transformers model generates one answer at a time.
    """

    name: str
    default_concurrency: int
    max_concurrency: int | None

    def load(self) -> None:
        """Load the model (blocking). Raise ``ConfigError`` for a missing or unusable model."""
        ...

    def warmup(self) -> None:
        """One short generation (blocking), so the first real request runs at normal speed."""
        ...

    def prompt_tokens(self, chat: list[ChatMessage]) -> int | None:
        """How many tokens the model would read for ``chat`` (blocking: call it in a thread), or
        ``None`` when this backend cannot count them here (a remote server counts its own)."""
        ...

    def token_budget(self, max_tokens: int) -> int | None:
        """The most prompt tokens the model takes while leaving room for ``max_tokens``, or ``None``."""
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
            if isinstance(item, MinerError):
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
    """Admission: ``concurrency`` generations at once, ``max_queue`` more waiting, the rest busy.

    A place is *reserved* synchronously when the request arrives (so a full queue is answered at once
    with a clear "busy"), then *entered* when the stream starts; entering waits for a free slot. A
    request that would only start after its deadline (judged from how long recent generations held a
    slot) is refused at once: a fast 503 lets the validator's time go elsewhere, a late start is cut.
    """

    def __init__(self, concurrency: int, max_queue: int, clock: Callable[[], float] = time.monotonic) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.capacity = concurrency + max_queue
        self._slots = asyncio.Semaphore(concurrency)
        self._reservations: set[Reservation] = set()
        self._clock = clock
        self.running = 0
        # Exponentially weighted mean of how long a generation held its slot (None until one finished).
        self.typical_hold: float | None = None

    @property
    def load(self) -> int:
        """Reservations that still hold a place (running, waiting, or about to start)."""
        now = self._clock()
        # A reservation whose stream never started (the response was never sent) expires at its
        # deadline, so a lost request cannot make the miner busy for ever.
        self._reservations = {r for r in self._reservations if r.entered or r.deadline > now}
        return len(self._reservations)

    @property
    def waiting(self) -> int:
        return max(0, self.load - self.running)

    def expected_wait(self, ahead: int) -> float:
        """Seconds until a request with ``ahead`` requests before it would start (0 with a free slot)."""
        if ahead < self.concurrency or self.typical_hold is None:
            return 0.0
        # Slots free a wave at a time; the running wave is on average half done.
        waves = math.floor(ahead / self.concurrency)
        return self.typical_hold * (waves - 0.5)

    def reserve(self, deadline: float) -> Reservation:
        load = self.load
        if load >= self.capacity:
            raise BusyError(
                f"busy: {min(load, self.concurrency)} running and {max(0, load - self.concurrency)} "
                f"waiting (max_concurrency {self.concurrency} + max_queue {self.max_queue})"
            )
        wait = self.expected_wait(load)
        if wait and self._clock() + wait >= deadline:
            raise BusyError(
                f"busy: would start in about {wait:.1f}s, after this request's deadline "
                f"({load} ahead, max_concurrency {self.concurrency})"
            )
        reservation = Reservation(self, deadline)
        self._reservations.add(reservation)
        return reservation

    def _held(self, seconds: float) -> None:
        self.typical_hold = seconds if self.typical_hold is None else 0.7 * self.typical_hold + 0.3 * seconds


class Reservation:
    """A place in a :class:`ModelGate`. ``async with reservation.hold():`` runs with a slot."""

    def __init__(self, gate: ModelGate, deadline: float) -> None:
        self.gate = gate
        self.deadline = deadline
        self.entered = False

    def release(self) -> None:
        self.gate._reservations.discard(self)

    @contextlib.asynccontextmanager
    async def hold(self, timeout: float) -> AsyncIterator[None]:
        """Wait (at most ``timeout`` s) for a slot, hold it, and free the place afterwards."""
        self.entered = True
        gate = self.gate
        try:
            await asyncio.wait_for(gate._slots.acquire(), timeout=max(timeout, 0.0))
        except BaseException:
            self.release()
            raise
        gate.running += 1
        started = gate._clock()
        try:
            yield
        finally:
            gate.running -= 1
            gate._held(gate._clock() - started)
            gate._slots.release()
            self.release()
