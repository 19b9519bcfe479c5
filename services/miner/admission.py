"""Admission: which requests get a place at the model, which wait, and which are told "busy" at once.

A miner runs ``concurrency`` generations at once and lets ``max_queue`` more wait; the rest get
``503 busy`` at once. A request that would only start after its deadline is refused at once too: a fast
503 lets the validator's time go elsewhere, a late start is cut.

High stake first: each request carries its caller's priority (its stake; the fleet's probe and
``allowed_hotkeys`` above everyone). A slot that frees goes to the highest-priority waiter (first come
first served among equals), and when every place is taken a caller with more stake takes the place of
the lowest-staked waiter, who is told "busy" at once.

A miner whose model server is shared with other miners (the fleet's llama-server) also asks the server
(:class:`ServerLoad`) what it can start now: the slots are the server's, not divided among its miners, so
any miner may use any free slot, and a request that would have to queue behind the server's full slots
until after its deadline is refused at once, whichever miner filled them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from services.miner.errors import BusyError


class ServerLoad(Protocol):
    """What a shared model server can start now (``backends.llamaserver.LlamaServerLoad``)."""

    slots: int

    async def free_slots(self) -> int | None:
        """Slots free now less the requests already waiting there (negative: that many wait with every
        slot busy); ``None`` when the server cannot say (down, not a llama-server)."""
        ...


class ModelGate:
    """Admission: ``concurrency`` generations at once, ``max_queue`` more waiting, the rest busy.

    A place is *reserved* when the request arrives (so a full queue is answered at once with a clear
    "busy"), then *entered* when the stream starts; entering waits for a free slot. A request that would
    only start after its deadline (judged from how long recent generations held a slot) is refused at
    once. With a ``server`` (a model server shared with other miners), :meth:`admit` also asks it.
    """

    def __init__(
        self,
        concurrency: int,
        max_queue: int,
        clock: Callable[[], float] = time.monotonic,
        server: ServerLoad | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.capacity = concurrency + max_queue
        self.server = server
        self._free = concurrency
        self._waiters: list[tuple[float, int, Reservation]] = []  # heap: highest priority, then oldest
        self._order = itertools.count()
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
    def idle_slots(self) -> int:
        return self._free

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

    def reserve(self, deadline: float, priority: float = 0.0) -> Reservation:
        """A place here (this miner's own slots and queue), or :class:`BusyError` at once."""
        load = self.load
        if load >= self.capacity and not self._make_room(priority):
            raise BusyError(
                f"busy: {min(load, self.concurrency)} running and {max(0, load - self.concurrency)} "
                f"waiting (max_concurrency {self.concurrency} + max_queue {self.max_queue})"
            )
        ahead = sum(1 for r in self._reservations if r.running or r.priority >= priority)
        wait = self.expected_wait(ahead)
        if wait and self._clock() + wait >= deadline:
            raise BusyError(
                f"busy: would start in about {wait:.1f}s, after this request's deadline "
                f"({ahead} ahead, max_concurrency {self.concurrency})"
            )
        reservation = Reservation(self, deadline, priority)
        self._reservations.add(reservation)
        return reservation

    def _make_room(self, priority: float) -> bool:
        """Every place is taken: turn away the lowest-priority waiter if it is below ``priority``."""
        waiting = [r for r in self._reservations if not r.running]
        if not waiting:
            return False
        lowest = min(waiting, key=lambda r: (r.priority, -r.order))
        if lowest.priority >= priority:
            return False
        lowest.evict(BusyError("busy: a caller with more stake took this request's place in the queue"))
        return True

    async def admit(self, deadline: float, priority: float = 0.0) -> Reservation:
        """:meth:`reserve`, then (with a shared server) whether the server can start it in time."""
        reservation = self.reserve(deadline, priority)
        if self.server is None:
            return reservation
        try:
            free = await self.server.free_slots()
        except BaseException:
            reservation.release()
            raise
        if free is None or free > 0:
            return reservation
        wait = self.server_wait(-free)
        if wait is not None and self._clock() + wait >= deadline:
            reservation.release()
            raise BusyError(
                f"busy: the model server's {self.server.slots} slots are all generating"
                + (f" and {-free} more wait there" if free < 0 else "")
                + f"; a slot would free in about {wait:.1f}s, after this request's deadline"
            )
        return reservation

    def server_wait(self, ahead: int) -> float | None:
        """Seconds until a request behind ``ahead`` waiting ones starts on a full shared server.

        Validators ask in rounds, so the running streams started together and end together: the next
        slot frees after a whole generation, not half of one. ``None``: no generation finished yet.
        """
        if self.typical_hold is None or self.server is None:
            return None
        return self.typical_hold * (1 + ahead // max(1, self.server.slots))

    def _held(self, seconds: float) -> None:
        self.typical_hold = seconds if self.typical_hold is None else 0.7 * self.typical_hold + 0.3 * seconds

    async def _acquire(self, reservation: Reservation, timeout: float) -> None:
        """A slot for ``reservation``: at once if one is free and nobody waits, else when it is its turn."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        heapq.heappush(self._waiters, (-reservation.priority, reservation.order, reservation))
        reservation.turn = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(reservation.turn), timeout=max(timeout, 0.0))
        except BaseException:
            turn = reservation.turn
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._release_slot()  # the slot came as we gave up: hand it on
            else:
                turn.cancel()
                self._waiters = [w for w in self._waiters if w[2] is not reservation]
                heapq.heapify(self._waiters)
            raise

    def _release_slot(self) -> None:
        """A slot freed: to the highest-priority waiter still waiting, else back to the pool."""
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if waiter.turn is not None and not waiter.turn.done():
                waiter.turn.set_result(None)
                return
        self._free += 1


class Reservation:
    """A place in a :class:`ModelGate`. ``async with reservation.hold():`` runs with a slot."""

    def __init__(self, gate: ModelGate, deadline: float, priority: float = 0.0) -> None:
        self.gate = gate
        self.deadline = deadline
        self.priority = priority
        self.order = next(gate._order)
        self.entered = False
        self.running = False
        self.turn: asyncio.Future[None] | None = None  # set while it waits for a slot
        self.evicted: BusyError | None = None

    def release(self) -> None:
        self.gate._reservations.discard(self)

    def evict(self, reason: BusyError) -> None:
        """Give this waiting place to a caller with more stake: it is answered ``reason`` (busy)."""
        self.evicted = reason
        self.release()
        if self.turn is not None and not self.turn.done():
            self.turn.set_exception(reason)

    @contextlib.asynccontextmanager
    async def hold(self, timeout: float) -> AsyncIterator[None]:
        """Wait (at most ``timeout`` s) for a slot, hold it, and free the place afterwards. Raises the
        :class:`BusyError` of an eviction (a caller with more stake took the place)."""
        self.entered = True
        gate = self.gate
        if self.evicted is not None:
            raise self.evicted
        try:
            await gate._acquire(self, timeout)
        except BaseException:
            self.release()
            raise
        self.running = True
        gate.running += 1
        started = gate._clock()
        try:
            yield
        finally:
            self.running = False
            gate.running -= 1
            gate._held(gate._clock() - started)
            gate._release_slot()
            self.release()
