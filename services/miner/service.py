"""The request path: a synapse in, a streaming response out.

For each protocol the miner serves, :class:`MinerService` attaches a forward, a blacklist and a priority
function to the axon (bittensor routes by the synapse's class name and checks these functions'
signatures, so they are built per class). ``forward`` never blocks: it turns the synapse into a chat,
reserves a place at the model (or answers "busy" at once), and returns a streaming response whose token
streamer runs the backend through the shared :class:`~services.miner.streamer.TokenStreamer`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from inspect import Parameter, Signature
from typing import Any, Tuple  # noqa: UP035 - bittensor compares signatures against typing.Tuple

import anyio
from bittensor.core.stream import BTStreamingResponseModel, StreamingSynapse
from starlette.types import Receive, Scope
from starlette.types import Send as StarletteSend

from services.miner.backends.base import Backend, GenerationRequest, ModelGate
from services.miner.blacklist import Gatekeeper
from services.miner.chat import ChatError, build_chat
from services.miner.errors import BusyError, ExitCode
from services.miner.protocols import PROTOCOLS
from services.miner.settings import MinerSettings
from services.miner.streamer import Ending, Send, StreamOutcome, TokenStreamer

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


class MinerService:
    """Serves every configured protocol from one backend, one model gate and one streamer."""

    def __init__(
        self,
        settings: MinerSettings,
        backend: Backend,
        gatekeeper: Gatekeeper,
        exit_request: ExitRequest,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.gatekeeper = gatekeeper
        self.exit_request = exit_request
        self.clock = clock
        self.gate = ModelGate(settings.max_queue, clock=clock)
        self.streamer = TokenStreamer(
            batch_size=settings.streaming_batch_size,
            max_delay=settings.max_chunk_delay,
            first_chunk_delay=settings.first_chunk_delay,
            clock=clock,
        )
        self.forward_exceptions = 0

    def attach(self, axon: Any) -> None:
        """Attach one route per protocol to a ``bt.Axon``."""
        for name in self.settings.protocols:
            forward, blacklist, priority = self.handlers(name)
            axon.attach(forward_fn=forward, blacklist_fn=blacklist, priority_fn=priority)
            log.info("serving protocol %s at /%s", name, PROTOCOLS[name].__name__)

    def handlers(self, protocol: str) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        """forward/blacklist/priority for one protocol, with the exact signatures the axon checks."""
        cls = PROTOCOLS[protocol]
        param = [Parameter("synapse", Parameter.POSITIONAL_OR_KEYWORD, annotation=cls)]

        def forward(synapse: Any) -> Any:
            return self.forward(synapse, protocol)

        def blacklist(synapse: Any) -> tuple[bool, str]:
            return self.gatekeeper.blacklist(_caller(synapse))

        def priority(synapse: Any) -> float:
            return self.gatekeeper.priority(_caller(synapse))

        forward.__signature__ = Signature(param, return_annotation=cls.BTStreamingResponse)  # type: ignore[attr-defined]
        blacklist.__signature__ = Signature(param, return_annotation=Tuple[bool, str])  # type: ignore[attr-defined]  # noqa: UP006
        priority.__signature__ = Signature(param, return_annotation=float)  # type: ignore[attr-defined]
        return forward, blacklist, priority

    def forward(self, synapse: Any, protocol: str) -> Any:
        """Answer one request. Runs on the event loop and returns at once."""
        arrived = self.clock()
        timeout = float(synapse.timeout or DEFAULT_TIMEOUT)
        # Stop a little before the caller gives up, so the last chunk arrives in time. On very short
        # timeouts the margin shrinks with it rather than eating the whole budget.
        deadline = arrived + timeout - min(self.settings.deadline_margin, timeout * 0.2)
        try:
            chat = build_chat(
                list(synapse.roles),
                list(synapse.messages),
                system_prompt=self.settings.system_prompt,
                protocol=protocol,
            )
        except ChatError as exc:
            return _refuse(synapse, 400, f"bad request: {exc}")
        try:
            reservation = self.gate.reserve(deadline)
        except BusyError as exc:
            log.warning("%s from %s: %s", protocol, _short(_caller(synapse)), exc)
            return _refuse(synapse, 503, str(exc))
        request = GenerationRequest(
            chat=chat, max_tokens=self.settings.max_tokens, temperature=self.settings.temperature
        )
        caller = _short(_caller(synapse))

        async def token_streamer(send: Send) -> None:
            outcome: StreamOutcome | None = None
            try:
                async with reservation.hold(timeout=deadline - self.clock()):
                    outcome = await self.streamer.stream(
                        self.backend.stream(request), send, deadline=deadline
                    )
            except TimeoutError:
                log.warning(
                    "%s from %s: waited for the model until the deadline; nothing sent", protocol, caller
                )
                return
            finally:
                self._log(protocol, caller, outcome, self.clock() - arrived)
            if outcome.ending is Ending.error:
                self._forward_exception(outcome.error)

        return DisconnectAwareResponse(
            BTStreamingResponseModel(token_streamer=token_streamer), synapse=synapse
        )

    def _forward_exception(self, error: BaseException | None) -> None:
        self.forward_exceptions += 1
        log.error("forward exception: %s", error)
        if self.settings.stop_on_forward_exception:
            # The response is closed once this token streamer returns; main() then stops the axon
            # (letting in-flight responses finish) and exits 75 so the orchestrator restarts us.
            self.exit_request.request(ExitCode.FORWARD_EXCEPTION, f"stop_on_forward_exception: {error}")

    def _log(self, protocol: str, caller: str, outcome: StreamOutcome | None, took: float) -> None:
        if outcome is None:
            log.info("%s from %s: cancelled, client gone (%.2fs)", protocol, caller, took)
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


class DisconnectAwareResponse(StreamingSynapse.BTStreamingResponse):
    """bittensor's streaming response, plus what starlette's own does: stop when the client leaves.

    bittensor's ``BTStreamingResponse`` never reads ``receive``, so a validator that disconnects or
    times out goes unnoticed and the model keeps generating for nobody (uvicorn drops writes to a
    closed connection silently). Here the token streamer runs beside a listener for
    ``http.disconnect``; whichever ends first cancels the other, and cancellation stops generation.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: StarletteSend) -> None:
        async with anyio.create_task_group() as group:

            async def stream_then_stop() -> None:
                await self.stream_response(send)
                group.cancel_scope.cancel()

            async def listen_then_stop() -> None:
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()

            group.start_soon(stream_then_stop)
            group.start_soon(listen_then_stop)


def _caller(synapse: Any) -> str | None:
    dendrite = getattr(synapse, "dendrite", None)
    return getattr(dendrite, "hotkey", None)


def _short(hotkey: str | None) -> str:
    return f"{hotkey[:8]}…" if hotkey else "?"


def _refuse(synapse: Any, status: int, message: str) -> Any:
    """Answer with an HTTP error instead of a stream (the axon serialises the synapse as JSON)."""
    from bittensor.core.synapse import TerminalInfo

    if synapse.axon is None:
        synapse.axon = TerminalInfo()
    synapse.axon.status_code = status
    synapse.axon.status_message = message
    return synapse
