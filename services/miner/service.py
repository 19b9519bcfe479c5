"""The request path: a synapse in, a streaming response out.

For each protocol the miner serves, :class:`MinerService` attaches a forward, a blacklist and a priority
function to the axon (bittensor routes by the synapse's class name and checks these functions'
signatures, so they are built per class). ``forward`` never blocks: it turns the synapse into a chat,
reserves a place at the model (or answers "busy" at once), and returns a streaming response whose token
streamer runs the backend through the shared :class:`~services.miner.streamer.TokenStreamer`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from inspect import Parameter, Signature
from typing import Any, Tuple  # noqa: UP035 - bittensor compares signatures against typing.Tuple

from bittensor.core.stream import BTStreamingResponseModel

from services.miner.admission import ModelGate, Reservation
from services.miner.backends.base import Backend, GenerationRequest
from services.miner.blacklist import Gatekeeper
from services.miner.errors import BusyError, ConfigError, DependencyError, ExitCode, RefusedError
from services.miner.ledger import CallerLedger
from services.miner.metrics import MinerMetrics
from services.miner.protocols import PROTOCOLS, ROUTES, Route
from services.miner.requests import availabilities, build_request
from services.miner.responses import DisconnectAwareResponse, Refusal, refuse
from services.miner.settings import MinerSettings
from services.miner.streamer import Ending, Send, StreamOutcome, TokenStreamer, until_stop

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 12.0  # bittensor's default when a request carries none


class ExitRequest:
    """Why and with which code the process should stop. Set from any thread, waited on by ``main``."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.code: int = ExitCode.OK
        self.reason = ""

    def request(self, code: int, reason: str) -> None:
        if self._event.is_set():
            return  # the first reason wins: a SIGTERM during a forward-exception exit stays a 75
        self.code, self.reason = code, reason
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    @property
    def requested(self) -> bool:
        return self._event.is_set()


def admitted_concurrency(settings: MinerSettings, backend: Backend) -> int:
    """How many generations this miner runs at once: the setting, else the backend's own default.

    A backend that can run only so many (an in-process model: one) refuses more: that is a
    configuration error, not something to discover under load.
    """
    wanted = settings.max_concurrency or backend.default_concurrency
    most = backend.max_concurrency
    if most is not None and wanted > most:
        raise ConfigError(
            f"MINER_MAX_CONCURRENCY: the {backend.name} backend runs at most {most} generation(s) at once "
            f"(got {wanted}); for concurrent streams use an openai miner on a batching model server"
        )
    return wanted


class MinerService:
    """Serves every configured protocol from one backend, one model gate and one streamer."""

    def __init__(
        self,
        settings: MinerSettings,
        backend: Backend,
        gatekeeper: Gatekeeper,
        exit_request: ExitRequest,
        clock: Callable[[], float] = time.monotonic,
        metrics: MinerMetrics | None = None,
        probes: Iterable[str] = (),
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.gatekeeper = gatekeeper
        self.exit_request = exit_request
        self.clock = clock
        self.gate = ModelGate(
            admitted_concurrency(settings, backend),
            settings.max_queue,
            clock=clock,
            server=backend.server_load,
        )
        self.streamer = TokenStreamer(
            batch_size=settings.streaming_batch_size,
            max_delay=settings.max_chunk_delay,
            first_chunk_delay=settings.first_chunk_delay,
            clock=clock,
        )
        self.metrics = metrics or MinerMetrics(settings.name, backend.name, process=False)
        self.metrics.watch_gate(self.gate)
        self.ledger = CallerLedger(probes)  # the fleet's probe apart from validators
        self.metrics.watch_ledger(self.ledger)
        if gatekeeper.chain is not None:
            self.metrics.watch_registration(lambda: gatekeeper.registered, lambda: gatekeeper.own_uid)
        self.metrics.zero([*settings.protocols, *(f"chat/{scheme}" for scheme in settings.http.auth)])
        self.forward_exceptions = 0
        self.tasks_seen: Counter[str] = Counter()  # SN1 task names asked for, for logs and metrics

    def attach(self, axon: Any) -> None:
        """Attach every route of every protocol to a ``bt.Axon`` (one per synapse class)."""
        for name in self.settings.protocols:
            for cls, route in ROUTES[name]:
                forward, blacklist, priority = self.handlers(name, cls, route)
                axon.attach(forward_fn=forward, blacklist_fn=blacklist, priority_fn=priority)
                log.info("serving protocol %s at /%s (%s)", name, cls.__name__, route.value)

    def handlers(
        self, protocol: str, cls: type[Any] | None = None, route: Route = Route.stream
    ) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        """forward/blacklist/priority for one route, with the exact signatures the axon checks."""
        cls = cls or PROTOCOLS[protocol]
        param = [Parameter("synapse", Parameter.POSITIONAL_OR_KEYWORD, annotation=cls)]
        answer = {
            Route.stream: self.forward,
            Route.plain: self.forward_plain,
            Route.availability: self.forward_availability,
        }[route]

        def forward(synapse: Any) -> Any:
            return answer(synapse, protocol)

        def blacklist(synapse: Any) -> tuple[bool, str]:
            verdict = self.gatekeeper.blacklist(_caller(synapse))
            if verdict[0]:
                self.metrics.count(protocol, "blacklisted")
            return verdict

        def priority(synapse: Any) -> float:
            return self.gatekeeper.priority(_caller(synapse))

        returns = cls.BTStreamingResponse if route is Route.stream else cls
        forward.__signature__ = Signature(param, return_annotation=returns)  # type: ignore[attr-defined]
        blacklist.__signature__ = Signature(param, return_annotation=Tuple[bool, str])  # type: ignore[attr-defined]  # noqa: UP006
        priority.__signature__ = Signature(param, return_annotation=float)  # type: ignore[attr-defined]
        return forward, blacklist, priority

    async def forward(self, synapse: Any, protocol: str) -> Any:
        """Answer one request: checks, admission, then a stream. Never blocks the event loop.

        Whatever the caller sends ends in an answer with a status and a reason (400/413 for a request
        the model cannot take, 503 for busy or a dependency that is down); only a backend whose own state
        is broken is a forward exception.
        """
        arrived, deadline = self._deadline(synapse)
        caller = _short(_caller(synapse))
        admitted = await self.admit(
            protocol, caller, _caller(synapse), lambda: self._request(synapse, protocol), arrived, deadline
        )
        if isinstance(admitted, RefusedError):
            return refuse(synapse, admitted.status, str(admitted))
        request, reservation = admitted
        refusal = Refusal()

        async def token_streamer(send: Send) -> None:
            outcome = await self.generate(
                protocol, caller, request, reservation, send, arrived, deadline, _caller(synapse)
            )
            error = self.settle(outcome)
            if error is not None:
                refusal.set(error)  # read only if nothing was sent yet

        return DisconnectAwareResponse(
            BTStreamingResponseModel(token_streamer=token_streamer), synapse=synapse, refusal=refusal
        )

    def settle(self, outcome: StreamOutcome | BusyError) -> RefusedError | None:
        """What an ended stream means for its answer: the refusal to answer with if it sent nothing
        (None: its text stands). A broken backend is a forward exception, handled here."""
        if isinstance(outcome, BusyError):
            return outcome
        if outcome.ending is Ending.refused and isinstance(outcome.error, RefusedError):
            return outcome.error
        if outcome.ending is Ending.error:
            self._forward_exception(outcome.error)
            return RefusedError(f"the backend failed: {outcome.error}", status=503)
        if not outcome.chunks:
            return no_text(outcome)  # a 200 that never carries text is not an answer: say why
        return None

    async def forward_plain(self, synapse: Any, protocol: str) -> Any:
        """The plain answer: the same checks, admission and deadline; the completion in the synapse."""
        arrived, deadline = self._deadline(synapse)
        caller = _short(_caller(synapse))
        parts: list[str] = []

        async def collect(message: MutableMapping[str, Any]) -> None:
            parts.append(message.get("body", b"").decode("utf-8"))

        admitted = await self.admit(
            protocol,
            f"{caller} (plain)",
            _caller(synapse),
            lambda: self._request(synapse, protocol),
            arrived,
            deadline,
        )
        if isinstance(admitted, RefusedError):
            return refuse(synapse, admitted.status, str(admitted))
        request, reservation = admitted
        outcome = await self.generate(
            protocol, caller, request, reservation, collect, arrived, deadline, _caller(synapse)
        )
        if isinstance(outcome, BusyError):
            return refuse(synapse, outcome.status, str(outcome))
        if outcome.ending is Ending.refused and isinstance(outcome.error, RefusedError) and not parts:
            # Counted with the stream; answered with its own status.
            log.warning("%s (plain) from %s: %d %s", protocol, caller, outcome.error.status, outcome.error)
            return refuse(synapse, outcome.error.status, str(outcome.error))
        if outcome.ending is Ending.error:
            self._forward_exception(outcome.error)
            return refuse(synapse, 500, f"the backend failed: {outcome.error}")
        if not parts and isinstance(outcome, StreamOutcome):
            error = no_text(outcome)
            return refuse(synapse, error.status, str(error))
        synapse.completion = "".join(parts)
        return synapse

    async def admit(
        self,
        protocol: str,
        label: str,
        hotkey: str | None,
        build: Callable[[], Awaitable[GenerationRequest]],
        arrived: float,
        deadline: float,
    ) -> tuple[GenerationRequest, Reservation] | RefusedError:
        """The request (``build`` makes it) and its place in the model's queue, or the counted refusal
        to answer. One gate for every door: the axon's protocols and the HTTP door queue together."""
        try:
            unavailable = self.gatekeeper.unavailable()
            if unavailable:  # the chain has not answered yet: nobody can be judged, the probe included
                raise DependencyError(unavailable)
            request = await build()
            return request, await self.gate.admit(deadline, self.gatekeeper.priority(hotkey))
        except RefusedError as exc:
            log.warning("%s from %s: %d %s", protocol, label, exc.status, exc)
            self.metrics.refused(protocol, exc, self.clock() - arrived, caller=self.ledger.kind(hotkey))
            self.ledger.record(hotkey, answered=False)
            return exc

    async def generate(
        self,
        protocol: str,
        caller: str,
        request: GenerationRequest,
        reservation: Reservation,
        send: Send,
        arrived: float,
        deadline: float,
        hotkey: str | None = None,
    ) -> StreamOutcome | BusyError:
        """Wait for the reserved place at the model until the deadline, then stream into ``send``;
        counted (by ``hotkey``'s kind: probe or validator) and logged once however it ends. No place in
        time: the :class:`BusyError` to answer."""
        kind = self.ledger.kind(hotkey)
        outcome: StreamOutcome | None = None
        started: float | None = None
        try:
            with self.metrics.tracking():
                async with reservation.hold(timeout=deadline - self.clock()):
                    started = self._entered(arrived)
                    outcome = await self._sample_until_text(protocol, caller, request, send, deadline)
        except TimeoutError:
            busy = BusyError("busy: waited for the model until the request's deadline")
            log.warning("%s from %s: waited for the model until the deadline", protocol, caller)
            self.metrics.refused(protocol, busy, self.clock() - arrived, caller=kind)
            self.ledger.record(hotkey, answered=False)
            return busy
        except BusyError as busy:  # its place went to a caller with more stake
            log.warning("%s from %s: %s", protocol, caller, busy)
            self.metrics.refused(protocol, busy, self.clock() - arrived, caller=kind)
            self.ledger.record(hotkey, answered=False)
            return busy
        except BaseException:
            self._finished(protocol, caller, None, arrived, started, hotkey)  # cancelled: the caller left
            raise
        self._finished(protocol, caller, outcome, arrived, started, hotkey)
        return outcome

    async def _sample_until_text(
        self, protocol: str, caller: str, request: GenerationRequest, send: Send, deadline: float
    ) -> StreamOutcome:
        """Stream ``request``; while the model ends without text, sample again (the next seed), up to
        :data:`BLANK_SAMPLES` in all and while :data:`BLANK_RETRY_MARGIN` is left before the deadline.
        Nothing was sent (blank text is held back), so the stream can still carry the next sample: an
        empty answer earns nothing."""
        outcome = await self._stream(request, send, deadline)
        for number in range(2, BLANK_SAMPLES + 1):
            again = resampled(request) if blank(outcome) else None
            if again is None or deadline - self.clock() <= BLANK_RETRY_MARGIN:
                break
            log.info(
                "%s from %s: the model ended without text: sampling once more (%d of %d)",
                protocol, caller, number, BLANK_SAMPLES,
            )  # fmt: skip
            request = again
            outcome = await self._stream(request, send, deadline)
        return outcome

    async def _stream(self, request: GenerationRequest, send: Send, deadline: float) -> StreamOutcome:
        pieces = self.backend.stream(request)
        if request.stop:  # no extra step per token for the requests that set none
            pieces = until_stop(pieces, request.stop)
        return await self.streamer.stream(pieces, send, deadline=deadline)

    async def forward_availability(self, synapse: Any, protocol: str) -> Any:
        """Which of the asked tasks and models this miner serves (from its settings; no model work)."""
        synapse.task_availabilities, synapse.llm_model_availabilities = availabilities(
            self.settings, list(synapse.task_availabilities), list(synapse.llm_model_availabilities)
        )
        return synapse

    async def _request(self, synapse: Any, protocol: str) -> GenerationRequest:
        """The generation request for a synapse, or a :class:`RefusedError` saying why there is none."""
        request = await build_request(self.settings, self.backend, synapse, protocol)
        task = getattr(synapse, "task_name", "") or ""
        if task:
            self.tasks_seen[task] += 1
        return request

    def _deadline(self, synapse: Any) -> tuple[float, float]:
        return self.deadline(float(synapse.timeout or DEFAULT_TIMEOUT))

    def deadline(self, timeout: float) -> tuple[float, float]:
        """(arrival, the time to stop by): a little before the caller gives up, so the last chunk arrives
        in time; on very short timeouts the margin shrinks with it rather than eating the whole budget."""
        arrived = self.clock()
        return arrived, arrived + timeout - min(self.settings.deadline_margin, timeout * 0.2)

    def _forward_exception(self, error: BaseException | None) -> None:
        self.forward_exceptions += 1
        log.error("forward exception: %s", error)
        if self.settings.stop_on_forward_exception:
            # The response is closed once this token streamer returns; main() then stops the axon
            # (letting in-flight responses finish) and exits 75 so the orchestrator restarts us.
            self.exit_request.request(ExitCode.FORWARD_EXCEPTION, f"stop_on_forward_exception: {error}")

    def _entered(self, arrived: float) -> float:
        """The request got its place at the model: record how long it waited; the time it started."""
        now = self.clock()
        self.metrics.gate_wait.observe(now - arrived)
        return now

    def _finished(
        self,
        protocol: str,
        caller: str,
        outcome: StreamOutcome | None,
        arrived: float,
        started: float | None,
        hotkey: str | None,
    ) -> None:
        """One stream ended: its metrics (first chunk counted from the arrival), the ledger of who
        asked, and its log line."""
        took = self.clock() - arrived
        first = None
        if outcome is not None and outcome.first_chunk_after is not None and started is not None:
            first = started - arrived + outcome.first_chunk_after
        self.metrics.streamed(protocol, outcome, took, first, self.ledger.kind(hotkey))
        answered = outcome is not None and outcome.chunks > 0 and outcome.ending in ANSWERED_ENDINGS
        self.ledger.record(hotkey, answered)
        self._log(protocol, caller, outcome, took)

    def _log(self, protocol: str, caller: str, outcome: StreamOutcome | None, took: float) -> None:
        if outcome is None:
            log.info("%s from %s: cancelled, client gone (%.2fs)", protocol, caller, took)
            return
        if outcome.ending is Ending.refused:
            log.warning(
                "%s from %s: refused by the backend: %s (%.2fs)", protocol, caller, outcome.error, took
            )
            return
        ttfc = "-" if outcome.first_chunk_after is None else f"{outcome.first_chunk_after:.3f}s"
        log.info(
            "%s from %s: %s, %d pieces in %d chunks, %d bytes, first chunk %s, %.2fs",
            protocol,
            caller,
            outcome.ending.value,
            outcome.pieces,
            outcome.chunks,
            outcome.bytes_sent,
            ttfc,
            took,
        )


ANSWERED_ENDINGS = (Ending.done, Ending.deadline)  # with text: an answer (a partial one still earns)
BLANK_RETRY_MARGIN = 1.0
"""Seconds that must be left before the deadline to sample again after a blank answer. A sampled model
now and then ends at once (its first token is the end of its turn): the shipped in-process miner did so
for 8 of 660 soak questions (bench.soak), each a 502 to a validator."""
BLANK_SAMPLES = 4
"""Samples in all for one question while the model ends without text. One more was not always enough:
in a 2-hour soak one question of 660 came back blank twice in 0.38 s, a 502 with 11 s still left."""


def blank(outcome: StreamOutcome) -> bool:
    """The backend finished without any text (whitespace at most): nothing was sent."""
    return outcome.ending is Ending.done and not outcome.chunks


def resampled(request: GenerationRequest) -> GenerationRequest | None:
    """The same request for a second sample (the next seed, when it set one); None when sampling again
    cannot differ (temperature 0 is greedy: the same tokens again)."""
    if request.temperature <= 0:
        return None
    return request if request.seed is None else dataclasses.replace(request, seed=request.seed + 1)


def no_text(outcome: StreamOutcome) -> RefusedError:
    """Why a stream that ended without sending any text has no answer."""
    if outcome.ending is Ending.deadline:
        # Admitted, but the model could not start it in time (a shared server's slots were all taken).
        return BusyError("busy: the model produced no text before the request's deadline")
    return RefusedError("the model ended its answer without any text", status=502)


def _caller(synapse: Any) -> str | None:
    dendrite = getattr(synapse, "dendrite", None)
    return getattr(dendrite, "hotkey", None)


def _short(hotkey: str | None) -> str:
    return f"{hotkey[:8]}…" if hotkey else "?"
