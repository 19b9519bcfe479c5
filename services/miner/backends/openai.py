"""Any OpenAI-compatible server (llama_cpp.server, vLLM, OpenAI) through the async client.

No thread needed: the client is async. Several hotkeys can point at one server so a model is loaded once
for the whole fleet. The API key comes from the environment and is never logged.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from pydantic import Field, SecretStr

from services.miner.backends.base import GenerationRequest, sampling
from services.miner.backends.spec import BackendSpec
from services.miner.chat import TRANSCRIPT_STOP, ChatMessage, transcript
from services.miner.errors import BackendError, BusyError, ConfigError, DependencyError, RequestError
from services.miner.groups import SettingsGroup

log = logging.getLogger(__name__)


def _connection_errors(openai: Any) -> tuple[type[BaseException], ...]:
    """openai's connection error and the HTTP client's own transport errors (a reset mid-stream is not
    wrapped by openai). openai 1.x uses httpx, openai 3.x its fork httpx2: take whichever is there.
    """
    found: list[type[BaseException]] = [openai.APIConnectionError]
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


# llama-server's own gauges on /metrics (started with --metrics): requests in a slot, requests waiting.
_GAUGE = re.compile(r"^llamacpp:(requests_processing|requests_deferred)\s+([0-9.eE+-]+)\s*$", re.MULTILINE)


def llama_server_load(metrics_text: str) -> tuple[int, int] | None:
    """(requests in a slot, requests waiting) from llama-server's ``/metrics`` text; None if absent."""
    gauges = {name: float(value) for name, value in _GAUGE.findall(metrics_text)}
    if "requests_processing" not in gauges:
        return None
    return int(gauges["requests_processing"]), int(gauges.get("requests_deferred", 0))


class OpenAISettings(SettingsGroup):
    """Any OpenAI-compatible server (vLLM, llama_cpp.server, OpenAI itself)."""

    base_url: str | None = Field(None, description="Base URL, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field("default", description="Model name sent to the server.")
    api_key: SecretStr = Field(
        SecretStr("not-needed"), description="API key (pass it through the environment, never a file)."
    )
    request_timeout: float = Field(
        60.0, gt=0, description="Seconds before a request to the server is abandoned."
    )
    use_chat: bool = Field(True, description="Use /chat/completions (else /completions with a transcript).")
    health_url: str | None = Field(
        None, description="The server's health URL for warm-up checks (default: base_url's root + /health)."
    )
    server_slots: int | None = Field(
        None,
        ge=1,
        description="The parallel slots of a llama-server shared with other miners: before admitting a "
        "request the miner asks its /metrics how many are busy and how many requests wait, and answers "
        "503 busy at once when none would free before the deadline (the fleet sets it for its model "
        "servers).",
    )


class LlamaServerLoad:
    """How many of a shared llama-server's slots are free now, from its ``/metrics``.

    Admission never waits on the server once it has a reading: a reading serves the requests of the next
    ``ttl`` seconds, less the ones this miner admitted since (so a burst to this miner does not overfill
    the server between two readings), and a stale one is refreshed in the background. That matters: the
    server answers ``/metrics`` between two batches, so while it digests a burst's prompts a reading can
    take seconds, and requests waiting for it would lose them. Only the very first reading is waited
    for, at most ``first_wait`` seconds.

    Miners sharing the server read it separately: at the very moment two bursts arrive together each may
    see the same free slots, and what overfills them waits in the server's own queue (and is refused at
    the deadline with a status, never an empty answer).
    """

    def __init__(
        self,
        metrics_url: str,
        slots: int,
        ttl: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        first_wait: float = 0.5,
    ) -> None:
        self.metrics_url = metrics_url
        self.slots = slots
        self.ttl = ttl
        self.clock = clock
        self.first_wait = first_wait
        self._session: aiohttp.ClientSession | None = None  # made on the event loop, at first use
        self._refreshing: asyncio.Task[None] | None = None
        self._read_at: float | None = None
        self._free: int | None = None
        self.reads = 0

    async def free_slots(self) -> int | None:
        stale = self._read_at is None or self.clock() - self._read_at >= self.ttl
        if stale and self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh(), name="llama-server-load")
        if self._read_at is None and self._refreshing is not None:
            await asyncio.wait({self._refreshing}, timeout=self.first_wait)
        free = self._free
        if free is not None and free > 0:
            self._free = free - 1  # this request takes one of them
        return free

    async def _refresh(self) -> None:
        try:
            self._free = await self._read()
            self._read_at = self.clock()
            self.reads += 1
        finally:
            self._refreshing = None

    async def _read(self) -> int | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0))
        try:
            async with self._session.get(self.metrics_url) as response:
                if response.status != 200:
                    return None
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return None  # down or restarting: the request itself finds out and says so (503)
        load = llama_server_load(text)
        return None if load is None else self.slots - sum(load)

    async def aclose(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        if self._session is not None:
            await self._session.close()


class OpenAIBackend:
    name = "openai"
    # A batching server (llama-server's parallel slots, vLLM) runs many streams at once; how many this
    # miner sends is its max_concurrency (the fleet renders it from the server's slots).
    default_concurrency = 4
    max_concurrency: int | None = None

    def __init__(self, settings: OpenAISettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._connection_errors: tuple[type[BaseException], ...] = ()
        self.server_load: LlamaServerLoad | None = None
        if settings.server_slots is not None:
            self.server_load = LlamaServerLoad(f"{self.server_root}/metrics", settings.server_slots)

    def load(self) -> None:
        if not self.settings.base_url:
            raise ConfigError("MINER_OPENAI__BASE_URL: not set (e.g. http://127.0.0.1:8000/v1)")
        try:
            import openai  # the SDK takes ~0.4 s to import: only a miner of this backend pays
        except ImportError as exc:
            raise ConfigError(f"MINER_BACKEND=openai: the openai package is not installed ({exc})") from exc
        self._client = openai.AsyncOpenAI(
            base_url=self.settings.base_url,
            api_key=self.settings.api_key.get_secret_value(),
            timeout=self.settings.request_timeout,
            max_retries=0,  # a retry would blow the validator's deadline; the fleet probe sees failures
        )
        self._connection_errors = _connection_errors(openai)

    def warmup(self) -> None:
        """Nothing to warm in the miner; say so if the server is not up yet (it is not an error: the
        miner answers 503 naming the server until it is)."""
        url = self.health_url
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
        except OSError as exc:
            log.warning("model server not ready yet (%s: %s); answering 503 until it is", url, exc)

    @property
    def server_root(self) -> str:
        return (self.settings.base_url or "").rstrip("/").removesuffix("/v1")

    @property
    def health_url(self) -> str:
        return self.settings.health_url or f"{self.server_root}/health"

    def prompt_tokens(self, chat: list[ChatMessage]) -> int | None:
        return None  # the server counts (and refuses) on its own: a 400 becomes a 413 answer

    def token_budget(self, max_tokens: int) -> int | None:
        return None

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        import openai  # loaded by load() already; at module level every miner would pay ~0.4 s

        common: dict[str, Any] = {"model": self.settings.model, **sampling(request), "stream": True}
        try:
            if self.settings.use_chat:
                stream = await self._client.chat.completions.create(
                    messages=[m.as_dict() for m in request.chat], **common
                )
            else:
                common["stop"] = [*TRANSCRIPT_STOP, *request.stop]
                stream = await self._client.completions.create(prompt=transcript(request.chat), **common)
            try:
                async for chunk in stream:
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    text = choice.delta.content if self.settings.use_chat else choice.text
                    if text:
                        yield text
            finally:
                # Closing the HTTP stream tells the server to stop generating (frees the shared model).
                await stream.close()
        except self._connection_errors as exc:
            # Refused, reset, timed out, name not found: the server is down or restarting. Restarting
            # this miner cannot fix that; the caller gets 503 naming the server.
            raise DependencyError(f"model server {self.settings.base_url} unreachable: {exc}") from exc
        except openai.RateLimitError as exc:
            raise BusyError(f"busy: model server {self.settings.base_url} is at capacity ({exc})") from exc
        except openai.BadRequestError as exc:
            text = str(exc)
            too_long = "context" in text or "too long" in text or "exceed" in text
            raise RequestError(
                f"the model server cannot take this request: {text}", status=413 if too_long else 400
            ) from exc
        except openai.APIStatusError as exc:
            # 5xx (loading, overloaded), 401/403 (key), 404 (model name): the server, not this miner.
            raise DependencyError(
                f"model server {self.settings.base_url} answered {exc.status_code}: {exc.message}"
            ) from exc
        except openai.OpenAIError as exc:
            raise BackendError(
                f"openai server {self.settings.base_url}: {type(exc).__name__}: {exc}"
            ) from exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self.server_load is not None:
            await self.server_load.aclose()


SPEC = BackendSpec(
    name="openai",
    settings=OpenAISettings,
    create=OpenAIBackend,
    summary="any OpenAI-compatible server: one of the fleet's model servers, or a base_url",
    secrets=("api_key",),
    model_server=True,
    address="base_url",
    served_model="model",
    shared_slots="server_slots",
    model_name=lambda group: group.model,
)
