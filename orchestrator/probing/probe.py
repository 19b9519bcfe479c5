"""The stream probe: what a validator would see, for every miner of the fleet, in parallel.

A real ``bt.Dendrite`` signed by the fleet's probe hotkey sends each miner its synapse with a short
prompt and reads the whole stream. Each miner gets a :class:`ProbeReport`: a verdict with its reason,
the HTTP status, time to first chunk, chunks, an estimate of tokens/s and the completion's length.
No internet is needed (the dendrite is built without bittensor's public-IP lookup).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import aiohttp

from services.miner.client import (
    CHAT_PATH,
    StreamResult,
    axon_info,
    chat_once,
    make_dendrite,
    make_synapse,
    stream_once,
)


def bittensor_logs_to_stderr() -> None:
    """Point bittensor's own log output at stderr.

    bittensor's logging machine writes through a queue listener to a handler on *stdout*: a dendrite's
    ``ServerDisconnectedError`` line would land in the middle of ``health --json``. Our stdout carries
    results only; every log line goes to stderr. Idempotent.
    """
    import bittensor as bt

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

# What an answer that is really an error message looks like (a miner that returns its exception text
# as the completion, as the seed code does). A probe must not call that healthy.
_ERROR_TEXT = re.compile(
    r"^\s*(error\b|exception\b|traceback \(most recent call last\)|internal server error|"
    r"\w+(error|exception):)",
    re.IGNORECASE,
)
# A stream still running at this fraction of the probe's timeout was cut off by the miner's deadline
# (a miner stops deadline_margin, at most 20% of the timeout, before it).
DEADLINE_FRACTION = 0.8
# Tokens the probe asks of an HTTP door (its signature, route and stream format are what it checks there).
DOOR_PROBE_TOKENS = 16
# A stream cut at the deadline whose last chunk came this long before the cut had stopped flowing: stuck
# (5 s, or a quarter of a short timeout: a flowing stream sends a chunk every max_chunk_delay, 0.25 s).
STALLED_AFTER = 5.0
STALLED_FRACTION = 0.25
# How a miner words a 503 whose cause is its model server (or remote API), not itself.
DEPENDENCY_DOWN_PREFIX = "dependency down:"
# Clients cannot see tokens; ~4 characters per token is the usual estimate for English text.
CHARS_PER_TOKEN = 4.0


class Verdict(StrEnum):
    healthy = "healthy"
    down = "down"  # nothing listens on the port
    refused = "refused"  # the miner refused the probe's hotkey (403)
    busy = "busy"  # the model's queue was full (503 from the miner)
    dependency_down = "dependency-down"  # the miner answers, its model server does not (503)
    timeout = "timeout"  # no complete answer within the probe's timeout
    slow = "slow"  # still streaming when the deadline cut it: loaded, not stuck (never a restart)
    empty = "empty"  # a 200 stream with no text at all
    error_text = "error-text"  # the only "answer" is an error message
    broken = "broken"  # the stream was cut off
    error = "error"  # any other failure status


@dataclass(frozen=True)
class ProbeTarget:
    """One miner as the probe sees it."""

    name: str
    hotkey: str  # ss58: the request is signed for this hotkey
    host: str
    port: int
    backend: str
    protocol: str  # the first protocol: its stream gives the report's figures
    protocols: tuple[str, ...] = ()  # every protocol served (default: just ``protocol``)
    http_auth: tuple[str, ...] = ()  # the HTTP door's signatures (empty: no HTTP door)
    http_port: int | None = None  # the HTTP door's port (None: the axon's)

    @property
    def served(self) -> tuple[str, ...]:
        return self.protocols or (self.protocol,)

    @property
    def doors(self) -> list[dict[str, Any]]:
        """Where validators reach it: the axon, and the HTTP door with its port and signatures."""
        doors: list[dict[str, Any]] = [{"door": "axon", "port": self.port, "protocols": list(self.served)}]
        if self.http_auth:
            from services.miner.httpdoor import DOOR_PATHS

            doors.append({"door": "http", "port": self.http_port or self.port,
                          "auth": list(self.http_auth), "paths": list(DOOR_PATHS)})  # fmt: skip
        return doors


@dataclass(frozen=True)
class ProbeReport:
    name: str
    hotkey: str
    port: int
    backend: str
    protocol: str
    verdict: Verdict
    reason: str
    status_code: int | None
    first_chunk_after: float | None
    chunks: int
    tokens_per_s: float | None
    completion_chars: int
    elapsed: float
    completion: str = ""
    # Every route probed (synapse class name, or ``http:<scheme>`` for the HTTP door) and its verdict:
    # a miner is healthy when all are.
    routes: dict[str, str] = field(default_factory=dict)
    doors: list[dict[str, Any]] = field(default_factory=list)  # ProbeTarget.doors

    @property
    def healthy(self) -> bool:
        return self.verdict is Verdict.healthy

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        data["healthy"] = self.healthy
        return data


def judge(result: StreamResult, timeout: float) -> tuple[Verdict, str]:
    """Turn what came back into a verdict and a one-line reason."""
    code, message = result.status_code, result.status_message.strip()
    if code == 200:
        # Our miners flush and end the stream just before the deadline: an answer that took (nearly)
        # all the time allowed was cut off, however healthy the status looks.
        if result.elapsed >= timeout * DEADLINE_FRACTION:
            last = result.last_chunk_after
            stalled_after = min(STALLED_AFTER, timeout * STALLED_FRACTION)
            if result.completion.strip() and last is not None and result.elapsed - last <= stalled_after:
                # Text was still coming at the cut: the model is slow under load (a restart cannot make
                # it faster, and would drop every validator's stream); a stuck stream stops flowing.
                return Verdict.slow, (
                    f"still streaming at the {timeout:g}s deadline ({len(result.completion)} chars, the last "
                    f"{result.elapsed - last:.1f}s before the cut): loaded, not stuck"
                )
            return Verdict.timeout, (
                f"no complete answer within {timeout:g}s (stream cut at the deadline after "
                f"{len(result.completion)} chars)"
            )
        if not result.completion.strip():
            return Verdict.empty, "the stream carried no text"
        if _ERROR_TEXT.match(result.completion):
            return Verdict.error_text, f"the answer is an error message: {result.completion.strip()[:80]!r}"
        return Verdict.healthy, ""
    if code == 503 and message.lower().startswith(DEPENDENCY_DOWN_PREFIX):
        # The miner's contract: a dependency that is down is a 503 whose message starts so and names it.
        # The verdict says "dependency-down" already: the reason is what is down.
        return Verdict.dependency_down, message[len(DEPENDENCY_DOWN_PREFIX) :].strip()
    if code == 403:
        return Verdict.refused, message or "forbidden"
    if code == 503 and "busy" in message.lower():
        return Verdict.busy, message
    if code == 503 and ("unavailable" in message.lower() or "connection" in message.lower()):
        return Verdict.down, message or "connection refused"
    if code in (408, 504) or "timeout" in message.lower():
        return Verdict.timeout, f"no complete answer within {timeout:g}s"
    if code == 400 and "payload" in message.lower():
        return Verdict.broken, message
    if code is None:
        return Verdict.error, message or "no answer"
    return Verdict.error, f"HTTP {code}: {message}" if message else f"HTTP {code}"


def not_announced(target: ProbeTarget, *, registered: bool) -> ProbeReport:
    """The row of a miner validators cannot reach: the chain holds no axon address for its hotkey."""
    reason = (
        "the chain holds no axon address for this hotkey (not announced: see the miner's log for serve_axon)"
        if registered
        else "the subnet does not list this hotkey (not registered, or deregistered)"
    )
    return ProbeReport(
        name=target.name, hotkey=target.hotkey, port=target.port, backend=target.backend,
        protocol=target.protocol, verdict=Verdict.down, reason=reason, status_code=None,
        first_chunk_after=None, chunks=0, tokens_per_s=None, completion_chars=0, elapsed=0.0,
    )  # fmt: skip


def report(target: ProbeTarget, result: StreamResult, timeout: float) -> ProbeReport:
    verdict, reason = judge(result, timeout)
    streaming_time = (result.elapsed - result.first_chunk_after) if result.first_chunk_after else None
    tokens = len(result.completion) / CHARS_PER_TOKEN
    rate = tokens / streaming_time if streaming_time and streaming_time > 0 and tokens else None
    return ProbeReport(
        name=target.name,
        hotkey=target.hotkey,
        port=target.port,
        backend=target.backend,
        protocol=target.protocol,
        verdict=verdict,
        reason=reason,
        status_code=result.status_code,
        first_chunk_after=result.first_chunk_after,
        chunks=len(result.chunks),
        tokens_per_s=rate,
        completion_chars=len(result.completion),
        elapsed=result.elapsed,
        completion=result.completion,
    )


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
        from services.miner.protocols import ROUTES, Route

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
    from services.miner.protocols import PROTOCOLS

    return PROTOCOLS[protocol].__name__


def _plain_fields(route: Any, prompt: str) -> dict[str, Any]:
    """What a validator sends on a non-streaming route."""
    from services.miner.protocols import Route

    if route is Route.availability:
        return {"task_availabilities": {}, "llm_model_availabilities": {}}
    return {"roles": ["user"], "messages": [prompt]}


def _doors(report: ProbeReport) -> str:
    """Which doors answered: ``axon`` and each HTTP scheme, a failed one with its verdict."""
    if not report.routes:
        return "axon"
    axon = [v for k, v in report.routes.items() if not k.startswith("http:")]
    shown = ["axon" if all(v == Verdict.healthy.value for v in axon) else "axon:" + _worst(axon)]
    for route, verdict in report.routes.items():
        if route.startswith("http:"):
            scheme = route.removeprefix("http:")
            shown.append(scheme if verdict == Verdict.healthy.value else f"{scheme}:{verdict}")
    return ",".join(shown)


def _worst(verdicts: list[str]) -> str:
    return next((v for v in verdicts if v != Verdict.healthy.value), Verdict.healthy.value)


def format_table(reports: Sequence[ProbeReport]) -> str:
    """The human table ``health`` prints: one row per miner."""
    header = (
        "MINER",
        "HOTKEY",
        "PORT",
        "BACKEND",
        "VERDICT",
        "HTTP",
        "TTFC",
        "CHUNKS",
        "TOK/S~",
        "CHARS",
        "DOORS",
        "ERROR",
    )
    rows = [header]
    for r in reports:
        rows.append(
            (
                r.name,
                f"{r.hotkey[:6]}…{r.hotkey[-4:]}" if len(r.hotkey) > 12 else r.hotkey,
                str(r.port),
                r.backend,
                r.verdict.value,
                "-" if r.status_code is None else str(r.status_code),
                "-" if r.first_chunk_after is None else f"{r.first_chunk_after:.2f}s",
                str(r.chunks),
                "-" if r.tokens_per_s is None else f"{r.tokens_per_s:.1f}",
                str(r.completion_chars),
                _doors(r),
                r.reason,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    healthy = sum(r.healthy for r in reports)
    lines.append(f"{healthy}/{len(reports)} healthy")
    return "\n".join(lines)
