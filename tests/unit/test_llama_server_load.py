"""LlamaServerLoad: a shared llama-server's free slots from its /metrics (a stand-in server at the seam)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from services.miner.backends.openai import LlamaServerLoad

METRICS = """# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing {processing}
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred {deferred}
"""


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[tuple[dict[str, int], str]]:
    state = {"processing": 0, "deferred": 0, "status": 200, "reads": 0, "delay": 0}

    async def metrics(_request: web.Request) -> web.Response:
        state["reads"] += 1
        if state["delay"]:
            await asyncio.sleep(state["delay"])
        text = METRICS.format(**state)
        return web.Response(text=text, status=state["status"])

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, handler_cancellation=True)  # a client that leaves ends its handler
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield state, f"http://127.0.0.1:{port}/metrics"
    await runner.cleanup()


async def test_free_slots_are_the_idle_ones_less_those_waiting(server: tuple[dict[str, int], str]) -> None:
    state, url = server
    clock = Clock()
    load = LlamaServerLoad(url, slots=8, ttl=0.2, clock=clock)
    try:
        state.update(processing=3)
        assert await load.free_slots() == 5  # the first reading is waited for
        clock.now += 1
        state.update(processing=8, deferred=2)
        assert await load.free_slots() == 4  # stale: answered from what it knows, refreshed behind
        await _refreshed(load, reads=2)
        assert await load.free_slots() == -2
    finally:
        await load.aclose()


async def test_one_reading_serves_a_burst_less_what_this_miner_took(
    server: tuple[dict[str, int], str],
) -> None:
    state, url = server
    clock = Clock()
    load = LlamaServerLoad(url, slots=4, ttl=0.2, clock=clock)
    try:
        state.update(processing=1)
        burst = [await load.free_slots() for _ in range(5)]
        assert burst == [3, 2, 1, 0, 0] and state["reads"] == 1
        clock.now += 0.5  # the next reading is the server's own word again
        state.update(processing=0)
        await load.free_slots()
        await _refreshed(load, reads=2)
        assert await load.free_slots() == 4 and state["reads"] == 2
    finally:
        await load.aclose()


async def test_admission_never_waits_on_a_slow_server_once_it_has_a_reading(
    server: tuple[dict[str, int], str],
) -> None:
    state, url = server
    clock = Clock()
    load = LlamaServerLoad(url, slots=4, ttl=0.2, clock=clock)
    try:
        assert await load.free_slots() == 4
        state["delay"] = 30  # the server is digesting a burst: /metrics answers late
        clock.now += 1
        answered = await asyncio.wait_for(load.free_slots(), timeout=5)  # not the server's 30 s
        assert answered == 3
    finally:
        await load.aclose()


async def _refreshed(load: LlamaServerLoad, reads: int) -> None:
    for _ in range(200):
        if load.reads >= reads:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{load.reads} readings, wanted {reads}")


async def test_a_server_that_cannot_say_gives_no_answer(server: tuple[dict[str, int], str]) -> None:
    state, url = server
    load = LlamaServerLoad(url, slots=4, ttl=0.0)
    try:
        state.update(status=503)
        assert await load.free_slots() is None
    finally:
        await load.aclose()
    gone = LlamaServerLoad("http://127.0.0.1:9/metrics", slots=4)  # nothing listens there
    try:
        assert await gone.free_slots() is None
    finally:
        await gone.aclose()
