"""The docker runtime on a real engine, on one throwaway container of its own project (``mf-orchtest-*``;
never the compose stack): the operator's ``docker stop`` is reported as such, the runtime's own stop is
not, ``docker kill`` is a crash, removal is a stop, and a removed container is not started.

Skipped when no docker engine answers or it has no image to run (nothing can be pulled here)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.runtimes.base import (
    OperatorStop,
    ProcessExited,
    ProcessStarted,
    RuntimeEvent,
    RuntimeFailure,
)
from orchestrator.runtimes.compose.runtime import DockerRuntime

pytestmark = [pytest.mark.integration, pytest.mark.docker]

PREFERRED_IMAGES = ("minerfleet/miner:cpu", "minerfleet/orchestrator", "minerfleet/base")


@pytest.fixture
def engine() -> Iterator[Any]:
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no engine, no socket, no permission: nothing to test against
        pytest.skip(f"no docker engine answers: {exc}")
    try:
        yield client
    finally:
        client.close()


def _image(client: Any) -> str:
    tags = [tag for image in client.images.list() for tag in image.tags]
    for preferred in PREFERRED_IMAGES:
        if preferred in tags:
            return preferred
    if not tags:
        pytest.skip("the docker engine has no image to run (none can be pulled here)")
    return tags[0]


@pytest.fixture
def container(engine: Any) -> Iterator[tuple[Any, str]]:
    """A created (not started) container that sleeps, labelled as miner ``m1`` of its own project."""
    project = f"mf-orchtest-{uuid.uuid4().hex[:8]}"
    created = engine.containers.create(
        _image(engine),
        command=["sleep", "3600"],
        entrypoint=[],
        name=f"{project}-m1",
        labels={"minerfleet.project": project, "minerfleet.role": "miner", "minerfleet.miner": "m1"},
        stop_signal="SIGTERM",
    )
    try:
        yield created, project
    finally:
        with contextlib.suppress(Exception):
            created.remove(force=True)


class Reader:
    """Collects the runtime's events in the background (subscribed before anything happens)."""

    def __init__(self, runtime: DockerRuntime, names: list[str]) -> None:
        self.seen: list[RuntimeEvent] = []
        self._task = asyncio.create_task(self._read(runtime, names))

    async def _read(self, runtime: DockerRuntime, names: list[str]) -> None:
        async for item in runtime.events(names):
            self.seen.append(item)

    async def next(self, want: type, timeout: float = 30.0) -> list[RuntimeEvent]:
        """Wait until an event of type ``want`` arrives; return (and forget) every event up to it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for i, item in enumerate(self.seen):
                if isinstance(item, want):
                    got, self.seen = self.seen[: i + 1], self.seen[i + 1 :]
                    return got
            if self._task.done():
                self._task.result()
                raise AssertionError(f"the event stream ended before a {want.__name__}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {want.__name__} within {timeout}s; seen: {self.seen}")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_operator_stops_crashes_and_own_stops_on_a_real_engine(
    engine: Any, container: tuple[Any, str]
) -> None:
    box, project = container
    runtime = DockerRuntime(project, engine)
    events = Reader(runtime, ["m1"])
    try:
        await asyncio.sleep(1)  # the event stream is subscribed
        await runtime.start("m1")
        await events.next(ProcessStarted)

        # docker kill (SIGKILL): a crash, not a stop.
        await asyncio.to_thread(box.kill)
        seen = await events.next(ProcessExited)
        assert not any(isinstance(e, OperatorStop) for e in seen), seen
        assert isinstance(seen[-1], ProcessExited) and seen[-1].exit_code == 137

        # The runtime's own stop is not the operator's.
        await runtime.start("m1")
        await events.next(ProcessStarted)
        await runtime.stop("m1")
        seen = await events.next(ProcessExited)
        await asyncio.sleep(1)  # docker's `stop` event comes after `die`
        assert not any(isinstance(e, OperatorStop) for e in [*seen, *events.seen]), seen

        # docker stop by someone else: the operator. `sleep` as PID 1 ignores SIGTERM: a short timeout.
        await runtime.start("m1")
        await events.next(ProcessStarted)
        await asyncio.to_thread(box.stop, timeout=1)
        seen = await events.next(OperatorStop)
        assert seen[-1] == OperatorStop("m1", "docker kill signal 15")

        # docker rm: removed is stopped, and a removed container is not started.
        await asyncio.to_thread(box.remove, force=True)
        seen = await events.next(OperatorStop)
        assert OperatorStop("m1", "docker destroy") in [*seen, *events.seen] or seen[-1].name == "m1"
        with pytest.raises(RuntimeFailure):
            await runtime.start("m1")
    finally:
        await events.close()
        await runtime.aclose()
