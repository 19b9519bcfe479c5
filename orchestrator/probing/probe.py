"""The stream probe: what a validator would see, for every miner of the fleet, in parallel.

A real ``bt.Dendrite`` signed by the fleet's probe hotkey sends each miner its synapse with a short
prompt and reads the whole stream. Each miner gets a :class:`ProbeReport`: a verdict with its reason,
the HTTP status, time to first chunk, chunks, an estimate of tokens/s and the completion's length.
No internet is needed (the dendrite is built without bittensor's public-IP lookup).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import aiohttp
import bittensor as bt

from orchestrator.probing.reports import DOOR_PROBE_TOKENS, ProbeReport, ProbeTarget, Verdict, judge, report
from services.miner.client import (
    CHAT_PATH,
    StreamResult,
    axon_info,
    chat_once,
    make_dendrite,
    make_synapse,
    stream_once,
)
from services.miner.protocols import PROTOCOLS, ROUTES, Route


def bittensor_logs_to_stderr() -> None:
    """Point bittensor's own log output at stderr.

    bittensor's logging machine writes through a queue listener to a handler on *stdout*: a dendrite's
    ``ServerDisconnectedError`` line would land in the middle of ``health --json``. Our stdout carries
    results only; every log line goes to stderr. Idempotent.
    """
    machine = getattr(bt, "logging", None)
    handlers: list[logging.Handler] = list(getattr(machine, "_handlers", None) or ())
    listener = getattr(machine, "_listener", None)
    handlers += list(getattr(listener, "handlers", None) or ())
    for logger in (logging.getLogger(), logging.getLogger("bittensor")):
        handlers += logger.handlers
    for handler in handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
            handler.setStream(sys.stderr)


# Importing this module imports bittensor (for the dendrite): from here on its logs go to stderr.
bittensor_logs_to_stderr()


class Prober:
    """Probes miners with one dendrite; reuse it for many rounds (the watch loop does)."""

    def __init__(
        self, wallet: Any, prompt: str, timeout: float, max_concurrency: int, alive_timeout: float = 5.0
    ) -> None:
        self.wallet = wallet
        self.prompt = prompt
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.alive_timeout = alive_timeout
        self._dendrite: Any = None
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        """The plain HTTP session beside the dendrite (liveness, first chunks), made on first use."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.alive_timeout))
        return self._session

    async def alive(self, target: ProbeTarget) -> str | None:
        """Whether the miner's HTTP server answers at all: ``None`` if it does (any status), else why not.

        A ``GET /health``, which the miner's edge answers on its event loop without touching the model or
        the chain, and counts nowhere (a validator's request it would count): a paused or hung miner
        does not answer; a busy one does.
        """
        url = f"http://{target.host}:{target.port}/health"
        try:
            async with self._http().get(url) as response:
                await response.read()
        except TimeoutError:
            return f"unresponsive: no HTTP answer within {self.alive_timeout:g}s"
        except aiohttp.ClientError as exc:
            return f"down: {exc}"
        return None

    async def probe(self, target: ProbeTarget) -> ProbeReport:
        """Every route the miner serves, one after the other; the report is the first protocol's stream,
        with the verdict and reason of the first route that failed (named in the reason)."""
        main = await self.stream(target, target.protocol)
        routes = {_route_name(target.protocol): main.verdict.value}
        failed: tuple[str, Verdict, str] | None = None if main.healthy else ("", main.verdict, main.reason)
        for protocol in target.served:
            for cls, route in ROUTES[protocol]:
                name = cls.__name__
                if name in routes:
                    continue
                if route is Route.stream:
                    other = await self.stream(target, protocol)
                    verdict, reason = other.verdict, other.reason
                else:
                    verdict, reason = await self._plain(target, cls(**_plain_fields(route, self.prompt)))
                routes[name] = verdict.value
                if failed is None and verdict is not Verdict.healthy:
                    failed = (f"/{name}", verdict, reason)
        for scheme in target.http_auth:
            # The door's own checks (signature, route, the stream's format) need only a short answer: the
            # model's speed was judged on the first protocol's stream above.
            door = await self.chat(target, scheme, max_tokens=DOOR_PROBE_TOKENS)
            routes[f"http:{scheme}"] = door.verdict.value
            if failed is None and not door.healthy:
                failed = (f"http:{scheme} {CHAT_PATH}", door.verdict, door.reason)
        if failed is None or not failed[0]:
            return replace(main, routes=routes, doors=target.doors)
        name, verdict, reason = failed
        return replace(main, verdict=verdict, reason=f"{name}: {reason}", routes=routes, doors=target.doors)

    async def ask(self, target: ProbeTarget, door: str, prompt: str | None = None) -> ProbeReport:
        """One request through one door, read whole: ``axon`` (its first protocol's stream) or an HTTP
        scheme (``epistula``, ``btauth``)."""
        if door == "axon":
            return await self.stream(target, target.protocol, prompt)
        return await self.chat(target, door, prompt)

    async def chat(
        self, target: ProbeTarget, scheme: str, prompt: str | None = None, **fields: Any
    ) -> ProbeReport:
        """One streamed chat completion through the HTTP door, signed with ``scheme``, read whole
        (``fields``: more of the request body, e.g. ``max_tokens``)."""
        port = target.http_port or target.port
        result = await chat_once(
            self._http(), f"http://{target.host}:{port}", self.wallet.hotkey, target.hotkey, scheme,
            prompt or self.prompt, self.timeout, **fields,
        )  # fmt: skip
        return report(target, result, self.timeout)

    async def first_chunk(self, target: ProbeTarget) -> ProbeReport:
        """The miner's first protocol, signed as by a validator, read only to its first chunk of text.

        Enough to tell that what it depends on answers again (its model server is back), in about a
        second, where a whole probe reads every route's full answer. Used to follow a recovery at once;
        the next full probe judges the rest.
        """
        if self._dendrite is None:
            self._dendrite = make_dendrite(self.wallet)
        axon = axon_info(target.host, target.port, target.hotkey)
        synapse = make_synapse(target.protocol, self.prompt, timeout=self.timeout)
        synapse = self._dendrite.preprocess_synapse_for_request(axon, synapse, self.timeout)
        url = f"http://{target.host}:{target.port}/{_route_name(target.protocol)}"
        result = StreamResult()
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout), self._http().post(
                url, headers=synapse.to_headers(), json=synapse.model_dump(),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:  # fmt: skip
                result.status_code = response.status
                result.status_message = response.headers.get(
                    "bt_header_axon_status_message", response.reason or ""
                )
                while response.status == 200:
                    chunk = await response.content.readany()
                    if not chunk or chunk.strip():
                        result.completion = chunk.decode("utf-8", "replace")
                        break
            result.first_chunk_after = time.monotonic() - started if result.completion else None
        except TimeoutError:
            result = StreamResult(status_code=408, status_message="probe timeout")
        except aiohttp.ClientError as exc:
            result = StreamResult(status_code=None, status_message=f"connection failed: {exc}")
        result.elapsed = time.monotonic() - started
        return report(target, result, self.timeout)

    async def _plain(self, target: ProbeTarget, synapse: Any) -> tuple[Verdict, str]:
        """A non-streaming route (availability, plain completion): it must answer 200 in time."""
        if self._dendrite is None:
            self._dendrite = make_dendrite(self.wallet)
        axon = axon_info(target.host, target.port, target.hotkey)
        try:
            answer = await asyncio.wait_for(
                self._dendrite.call(axon, synapse, timeout=self.timeout, deserialize=False), self.timeout + 10
            )
        except TimeoutError:
            return Verdict.timeout, f"no answer within {self.timeout:g}s"
        code = getattr(answer.dendrite, "status_code", None)
        message = str(getattr(answer.dendrite, "status_message", "") or "")
        result = StreamResult(status_code=int(code) if code is not None else None, status_message=message)
        if result.status_code == 200:
            if hasattr(answer, "completion") and not str(answer.completion).strip():
                return Verdict.empty, "the answer carried no text"
            return Verdict.healthy, ""
        return judge(result, self.timeout)

    async def stream(self, target: ProbeTarget, protocol: str, prompt: str | None = None) -> ProbeReport:
        """One stream request of ``protocol`` to the miner (``prompt``: else the prober's), read whole:
        what a validator sees."""
        if self._dendrite is None:
            self._dendrite = make_dendrite(self.wallet)
        synapse = make_synapse(protocol, prompt or self.prompt, timeout=self.timeout)
        started = time.monotonic()
        try:
            # The dendrite enforces the timeout itself; this outer bound only guards against a hang
            # in the client (it should never fire).
            result = await asyncio.wait_for(
                stream_once(self._dendrite, axon_info(target.host, target.port, target.hotkey), synapse,
                            self.timeout),
                timeout=self.timeout + 10,
            )  # fmt: skip
        except TimeoutError:
            result = StreamResult(
                status_code=408, status_message="probe timeout", elapsed=time.monotonic() - started
            )
        return report(target, result, self.timeout)

    async def probe_all(self, targets: Iterable[ProbeTarget]) -> list[ProbeReport]:
        """Every target in parallel, at most ``max_concurrency`` at a time; results in target order."""
        limit = asyncio.Semaphore(self.max_concurrency)

        async def bounded(target: ProbeTarget) -> ProbeReport:
            async with limit:
                return await self.probe(target)

        return list(await asyncio.gather(*(bounded(t) for t in targets)))

    async def aclose(self) -> None:
        if self._dendrite is not None:
            await self._dendrite.aclose_session()
            self._dendrite = None
        if self._session is not None:
            await self._session.close()
            self._session = None


def _route_name(protocol: str) -> str:
    return PROTOCOLS[protocol].__name__


def _plain_fields(route: Any, prompt: str) -> dict[str, Any]:
    """What a validator sends on a non-streaming route."""
    if route is Route.availability:
        return {"task_availabilities": {}, "llm_model_availabilities": {}}
    return {"roles": ["user"], "messages": [prompt]}
