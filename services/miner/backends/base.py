"""The one small interface every backend implements, and the pieces they share.

A backend turns a chat into text pieces. It knows nothing about synapses, batching, deadlines or
``send``: that is the token streamer's job. Blocking model calls never run on the event loop: they go
through :func:`iterate_in_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from services.miner.admission import ServerLoad
from services.miner.chat import ChatMessage
from services.miner.errors import BackendError, MinerError


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What a backend is asked to generate."""

    chat: list[ChatMessage]
    max_tokens: int
    temperature: float = 0.7
    seed: int | None = None
    top_p: float | None = None  # nucleus sampling (None: the backend's default)
    stop: tuple[str, ...] = ()  # the answer ends before the first of these (the streamer cuts it too)


def sampling(request: GenerationRequest) -> dict[str, Any]:
    """The request's sampling as OpenAI-style keyword arguments (llama.cpp and the openai client)."""
    args: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature}
    if request.seed is not None:
        args["seed"] = request.seed
    if request.top_p is not None:
        args["top_p"] = request.top_p
    if request.stop:
        args["stop"] = list(request.stop)
    return args


class Backend(Protocol):
    """A source of text pieces. ``load`` runs once at start-up, before the axon serves.

    ``default_concurrency`` is how many generations it runs at once unless the settings say otherwise;
    ``max_concurrency`` is the most it can really run (``None``: no limit of its own). The in-process
    models take one: a llama.cpp context or a transformers model generates one answer at a time.
    """

    name: str
    default_concurrency: int
    max_concurrency: int | None

    @property
    def server_load(self) -> ServerLoad | None:
        """A model server shared with other miners, which admission asks what it can start now (None:
        the model is this miner's own, and its gate alone decides)."""
        ...

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
