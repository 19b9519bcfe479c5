"""ModelGate / Reservation (one generation at a time, a bounded queue) and iterate_in_thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from services.miner.admission import ModelGate, Reservation
from services.miner.backends.base import iterate_in_thread
from services.miner.errors import BackendError, BusyError

FAR = 3600.0


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- ModelGate ---------------------------------------------------------------------------------------


async def test_concurrency_slots_run_together_then_the_queue_then_busy() -> None:
    gate = ModelGate(concurrency=3, max_queue=2)
    reservations = [gate.reserve(time.monotonic() + FAR) for _ in range(5)]
    with pytest.raises(BusyError, match=r"3 running and 2 waiting \(max_concurrency 3 \+ max_queue 2\)"):
        gate.reserve(time.monotonic() + FAR)
    inside = 0
    most_inside = 0
    all_in = asyncio.Event()
    release = asyncio.Event()

    async def run(reservation: Reservation) -> None:
        nonlocal inside, most_inside
        async with reservation.hold(timeout=5.0):
            inside += 1
            most_inside = max(most_inside, inside)
            if inside == 3:
                all_in.set()
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(run(r)) for r in reservations]
    await asyncio.wait_for(all_in.wait(), 5)
    assert gate.running == 3 and gate.waiting == 2
    release.set()
    await asyncio.gather(*tasks)
    assert most_inside == 3  # never more than the backend can run
    assert gate.load == 0 and gate.running == 0


async def test_a_request_that_would_start_after_its_deadline_is_refused_at_once() -> None:
    clock = FakeClock(100.0)
    gate = ModelGate(concurrency=2, max_queue=8, clock=clock)
    # Two generations that each held a slot for 10 s teach the gate how long a slot is held.
    for _ in range(2):
        reservation = gate.reserve(clock.now + FAR)
        async with reservation.hold(timeout=1.0):
            clock.now += 10.0
    assert gate.typical_hold == pytest.approx(10.0)
    busy = [gate.reserve(clock.now + FAR) for _ in range(2)]  # both slots taken
    assert gate.expected_wait(2) == pytest.approx(5.0)
    with pytest.raises(BusyError, match="after this request's deadline"):
        gate.reserve(deadline=clock.now + 3.0)
    waiting = gate.reserve(deadline=clock.now + 12.0)  # would start in ~5 s: worth waiting for
    assert gate.load == 3
    for reservation in [*busy, waiting]:
        reservation.release()


class FakeServer:
    """A shared model server's answer to "how many slots are free" (the real one reads /metrics)."""

    def __init__(self, slots: int, free: int | None) -> None:
        self.slots = slots
        self.free = free
        self.asked = 0

    async def free_slots(self) -> int | None:
        self.asked += 1
        return self.free


async def _learn_hold(gate: ModelGate, clock: FakeClock, seconds: float) -> None:
    reservation = await gate.admit(clock.now + FAR)
    async with reservation.hold(timeout=1.0):
        clock.now += seconds


async def test_a_shared_server_with_free_slots_admits_up_to_this_miners_own_limit() -> None:
    clock = FakeClock()
    server = FakeServer(slots=8, free=8)
    gate = ModelGate(concurrency=8, max_queue=0, clock=clock, server=server)
    places = [await gate.admit(clock.now + FAR) for _ in range(8)]  # every slot: none kept for others
    assert server.asked == 8 and gate.load == 8
    for place in places:
        place.release()


async def test_a_full_shared_server_refuses_at_once_when_no_slot_frees_before_the_deadline() -> None:
    clock = FakeClock()
    server = FakeServer(slots=4, free=4)
    gate = ModelGate(concurrency=4, max_queue=4, clock=clock, server=server)
    await _learn_hold(gate, clock, 10.0)  # a generation holds a slot for about 10 s
    server.free = 0  # the other miner took every slot: this miner's own gate is empty
    with pytest.raises(BusyError, match="model server's 4 slots are all generating"):
        await gate.admit(clock.now + 8.0)
    assert gate.load == 0  # the refused request holds no place
    server.free = -4  # a whole wave waits there too: two generations' time
    with pytest.raises(BusyError, match="4 more wait there"):
        await gate.admit(clock.now + 15.0)
    server.free = 0
    kept = await gate.admit(clock.now + 15.0)  # a slot frees in ~10 s: worth waiting for
    kept.release()


async def test_a_shared_server_that_cannot_say_leaves_admission_to_the_miners_own_gate() -> None:
    clock = FakeClock()
    gate = ModelGate(concurrency=1, max_queue=0, clock=clock, server=FakeServer(slots=4, free=None))
    place = await gate.admit(clock.now + FAR)
    with pytest.raises(BusyError, match="max_concurrency 1"):
        await gate.admit(clock.now + FAR)
    place.release()


async def test_before_any_generation_finished_a_full_server_is_waited_for() -> None:
    clock = FakeClock()
    gate = ModelGate(concurrency=4, max_queue=0, clock=clock, server=FakeServer(slots=4, free=0))
    place = await gate.admit(clock.now + 5.0)  # no hold time learned yet: no grounds to refuse
    place.release()


@pytest.mark.parametrize("max_queue", [0, 1, 3])
def test_capacity_is_one_running_plus_max_queue(max_queue: int) -> None:
    clock = FakeClock()
    gate = ModelGate(concurrency=1, max_queue=max_queue, clock=clock)
    assert gate.capacity == 1 + max_queue
    for _ in range(1 + max_queue):
        gate.reserve(clock.now + FAR)
    assert gate.load == 1 + max_queue
    with pytest.raises(BusyError, match="busy"):
        gate.reserve(clock.now + FAR)
    assert gate.load == 1 + max_queue  # a refused request takes no place


async def test_a_place_is_freed_after_hold() -> None:
    gate = ModelGate(concurrency=1, max_queue=0)
    reservation = gate.reserve(time.monotonic() + FAR)
    with pytest.raises(BusyError):
        gate.reserve(time.monotonic() + FAR)
    async with reservation.hold(timeout=1.0):
        assert gate.load == 1
        with pytest.raises(BusyError):
            gate.reserve(time.monotonic() + FAR)
    assert gate.load == 0
    gate.reserve(time.monotonic() + FAR)  # no BusyError


async def test_a_place_is_freed_when_the_holder_fails() -> None:
    gate = ModelGate(concurrency=1, max_queue=0)
    reservation = gate.reserve(time.monotonic() + FAR)
    with pytest.raises(RuntimeError, match="backend blew up"):
        async with reservation.hold(timeout=1.0):
            raise RuntimeError("backend blew up")
    assert gate.load == 0
    assert gate.idle_slots == 1


def test_a_reservation_never_entered_expires_at_its_deadline() -> None:
    clock = FakeClock(100.0)
    gate = ModelGate(concurrency=1, max_queue=0, clock=clock)
    gate.reserve(deadline=110.0)  # the response is never sent, so hold() never runs

    clock.now = 109.9
    with pytest.raises(BusyError):
        gate.reserve(deadline=200.0)
    clock.now = 110.0
    assert gate.load == 0
    gate.reserve(deadline=200.0)
    assert gate.load == 1


async def test_an_entered_reservation_does_not_expire_while_it_runs() -> None:
    clock = FakeClock(100.0)
    gate = ModelGate(concurrency=1, max_queue=0, clock=clock)
    reservation = gate.reserve(deadline=110.0)
    async with reservation.hold(timeout=1.0):
        clock.now = 500.0  # long past its deadline: a long generation still holds the model
        assert gate.load == 1
        with pytest.raises(BusyError):
            gate.reserve(deadline=600.0)
    assert gate.load == 0


async def test_hold_timeout_raises_and_frees_the_place() -> None:
    gate = ModelGate(concurrency=1, max_queue=1)
    first = gate.reserve(time.monotonic() + FAR)
    second = gate.reserve(time.monotonic() + FAR)
    release_first = asyncio.Event()
    first_in = asyncio.Event()

    async def hold_first() -> None:
        async with first.hold(timeout=1.0):
            first_in.set()
            await release_first.wait()

    task = asyncio.create_task(hold_first())
    await asyncio.wait_for(first_in.wait(), 5)

    with pytest.raises(TimeoutError):
        async with second.hold(timeout=0.05):
            pytest.fail("the second request must not get the model while the first holds it")
    assert gate.load == 1  # only the first still holds a place
    third = gate.reserve(time.monotonic() + FAR)  # the timed-out one's place is free again

    release_first.set()
    await task
    async with third.hold(timeout=1.0):
        pass
    assert gate.load == 0


async def test_one_holder_at_a_time_the_second_waits() -> None:
    gate = ModelGate(concurrency=1, max_queue=1)
    first = gate.reserve(time.monotonic() + FAR)
    second = gate.reserve(time.monotonic() + FAR)
    order: list[str] = []
    release_first = asyncio.Event()

    async def run(name: str, reservation: Reservation, release: asyncio.Event | None) -> None:
        async with reservation.hold(timeout=5.0):
            order.append(f"{name} in")
            if release is not None:
                await release.wait()
            order.append(f"{name} out")

    task_first = asyncio.create_task(run("first", first, release_first))
    await asyncio.sleep(0.01)
    task_second = asyncio.create_task(run("second", second, None))
    await asyncio.sleep(0.05)
    assert order == ["first in"], "the second request ran while the first held the model"

    release_first.set()
    await asyncio.gather(task_first, task_second)
    assert order == ["first in", "first out", "second in", "second out"]


# --- iterate_in_thread -------------------------------------------------------------------------------


async def test_iterate_in_thread_yields_every_item() -> None:
    threads: list[str] = []

    def produce(stop: threading.Event) -> Iterator[str]:
        threads.append(threading.current_thread().name)
        yield from ["a", "b", "c"]

    items = [item async for item in iterate_in_thread(produce)]
    assert items == ["a", "b", "c"]
    assert threads and threads[0] != threading.current_thread().name  # not on the event loop's thread


async def test_closing_early_sets_stop_and_waits_for_the_thread() -> None:
    seen: dict[str, object] = {}
    cleanup_done = threading.Event()

    def produce(stop: threading.Event) -> Iterator[str]:
        seen["stop"] = stop
        try:
            i = 0
            while not stop.is_set():
                yield f"t{i}"
                i += 1
                time.sleep(0.005)
        finally:
            time.sleep(0.1)  # slow cleanup (freeing a model): the consumer must wait for it
            cleanup_done.set()

    pieces = iterate_in_thread(produce)
    assert await pieces.__anext__() == "t0"
    await pieces.aclose()

    stop = seen["stop"]
    assert isinstance(stop, threading.Event) and stop.is_set()
    assert cleanup_done.is_set(), "aclose() returned before the generation thread finished"


async def test_cancelling_the_consumer_still_waits_for_the_thread() -> None:
    cleanup_done = threading.Event()
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def produce(stop: threading.Event) -> Iterator[str]:
        try:
            while not stop.is_set():
                loop.call_soon_threadsafe(started.set)
                time.sleep(0.005)  # a slow model: nothing yielded yet
            yield "never consumed"
        finally:
            time.sleep(0.05)
            cleanup_done.set()

    async def consume() -> list[str]:
        return [item async for item in iterate_in_thread(produce)]

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleanup_done.is_set()


async def test_an_exception_in_the_thread_surfaces_as_backend_error() -> None:
    def produce(stop: threading.Event) -> Iterator[str]:
        yield "a"
        yield "b"
        raise ValueError("CUDA out of memory")

    items: list[str] = []
    with pytest.raises(BackendError, match="ValueError: CUDA out of memory") as info:
        async for item in iterate_in_thread(produce):
            items.append(item)
    assert items == ["a", "b"]
    assert isinstance(info.value.__cause__, ValueError)


async def test_a_backend_error_in_the_thread_is_raised_as_is() -> None:
    error = BackendError("model file truncated")

    def produce(stop: threading.Event) -> Iterator[str]:
        raise error
        yield ""  # pragma: no cover - makes this a generator

    with pytest.raises(BackendError) as info:
        async for _ in iterate_in_thread(produce):
            pass
    assert info.value is error


async def test_the_event_loop_is_not_blocked_while_the_thread_works() -> None:
    loop_ran = threading.Event()

    def produce(stop: threading.Event) -> Iterator[str]:
        # Blocks this thread until a coroutine on the event loop has run. If the producer ran on the
        # loop (or blocked it), that coroutine could never run and this would time out.
        if not loop_ran.wait(timeout=5):
            raise AssertionError("the event loop was blocked while the generation thread worked")
        yield "done"

    async def other_request() -> None:
        await asyncio.sleep(0.01)
        loop_ran.set()

    async def collect() -> list[str]:
        return [item async for item in iterate_in_thread(produce)]

    items, _ = await asyncio.gather(collect(), other_request())
    assert items == ["done"]


# --- high stake first -----------------------------------------------------------------------------


async def test_a_freed_slot_goes_to_the_highest_stake_waiting() -> None:
    gate = ModelGate(concurrency=1, max_queue=3)
    holder = gate.reserve(time.monotonic() + FAR, priority=0)
    order: list[float] = []

    async def wait_turn(reservation: Reservation) -> None:
        async with reservation.hold(timeout=10):
            order.append(reservation.priority)

    release = asyncio.Event()

    async def hold_first() -> None:
        async with holder.hold(timeout=1):
            await release.wait()

    first = asyncio.create_task(hold_first())
    await asyncio.sleep(0)
    waiters = []
    for stake in (1.0, 500.0, 30.0):  # arrive low, high, middle
        waiters.append(asyncio.create_task(wait_turn(gate.reserve(time.monotonic() + FAR, priority=stake))))
        await asyncio.sleep(0)  # each is waiting for the slot before the next arrives
    release.set()
    await asyncio.gather(first, *waiters)
    assert order == [500.0, 30.0, 1.0]
    assert gate.load == 0 and gate.idle_slots == 1


async def test_equal_stakes_wait_in_arrival_order() -> None:
    gate = ModelGate(concurrency=1, max_queue=3)
    release = asyncio.Event()
    order: list[int] = []

    async def run(reservation: Reservation, tag: int) -> None:
        async with reservation.hold(timeout=10):
            order.append(tag)
            if tag == 0:
                await release.wait()

    tasks = []
    for tag in range(4):
        tasks.append(asyncio.create_task(run(gate.reserve(time.monotonic() + FAR, priority=7.0), tag)))
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]


async def test_a_full_queue_gives_the_lowest_stake_waiters_place_to_a_higher_stake() -> None:
    clock = FakeClock()
    gate = ModelGate(concurrency=1, max_queue=1, clock=clock)
    running = gate.reserve(clock.now + FAR, priority=1.0)
    async with running.hold(timeout=1):  # generating: a running request is never turned away
        low = gate.reserve(clock.now + FAR, priority=2.0)  # waits
        with pytest.raises(BusyError, match="max_queue 1"):
            gate.reserve(clock.now + FAR, priority=2.0)  # not more than the waiter: told busy at once
        high = gate.reserve(clock.now + FAR, priority=900.0)  # takes the low waiter's place
        assert gate.load == 2
        with pytest.raises(BusyError, match="more stake took this request's place"):
            async with low.hold(timeout=1):
                pass
    high.release()


async def test_a_waiter_evicted_while_it_waits_is_told_busy_at_once() -> None:
    gate = ModelGate(concurrency=1, max_queue=1)
    release = asyncio.Event()

    async def hold_it(reservation: Reservation) -> None:
        async with reservation.hold(timeout=10):
            await release.wait()

    holder = asyncio.create_task(hold_it(gate.reserve(time.monotonic() + FAR, priority=5.0)))
    await asyncio.sleep(0)
    low = gate.reserve(time.monotonic() + FAR, priority=1.0)
    waiting = asyncio.create_task(hold_it(low))
    await asyncio.sleep(0)
    gate.reserve(time.monotonic() + FAR, priority=50.0)  # a bigger stake arrives with the queue full
    with pytest.raises(BusyError, match="more stake"):
        await asyncio.wait_for(waiting, timeout=5)
    release.set()
    await holder
