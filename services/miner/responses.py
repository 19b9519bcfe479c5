"""The answers a miner sends: a stream whose status waits for its first chunk, or an error answer.

bittensor's streaming response sends ``200`` before the token streamer runs and never reads
``receive``. :class:`DisconnectAwareResponse` waits for the first chunk before it commits to ``200`` (so
a refusal found when the stream starts is answered with its own status and reason) and stops generation
when the client leaves.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import anyio
from bittensor.core.stream import BTStreamingResponseModel, StreamingSynapse
from bittensor.core.synapse import TerminalInfo
from starlette.types import Receive, Scope
from starlette.types import Send as StarletteSend

from services.miner.errors import RefusedError
from services.miner.guard import send_error


class Refusal:
    """Why a stream that sent nothing yet is refused; read when its response would have started."""

    def __init__(self) -> None:
        self.error: RefusedError | None = None

    def set(self, error: RefusedError) -> None:
        self.error = error


class DisconnectAwareResponse(StreamingSynapse.BTStreamingResponse):
    """bittensor's streaming response, plus what starlette's own does: stop when the client leaves.

    bittensor's ``BTStreamingResponse`` never reads ``receive``, so a validator that disconnects or
    times out goes unnoticed and the model keeps generating for nobody (uvicorn drops writes to a
    closed connection silently). Here the token streamer runs beside a listener for
    ``http.disconnect``; whichever ends first cancels the other, and cancellation stops generation.
    """

    def __init__(
        self, model: BTStreamingResponseModel, *, synapse: Any, refusal: Refusal | None = None
    ) -> None:
        super().__init__(model, synapse=synapse)
        self.refusal = refusal or Refusal()

    async def stream_response(self, send: StarletteSend) -> None:
        """Like bittensor's, except that the status line waits for the first chunk.

        Until a chunk is ready the answer may still be a refusal (the model server is down, the request
        waited out its deadline, the prompt is too long for the model): then the caller gets that status
        and reason, not an empty 200 that looks like a miner with nothing to say.
        """
        headers = [(b"content-type", b"text/event-stream"), *self.raw_headers]
        started = False

        async def send_body(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if not started:
                started = True
                await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send(message)

        await self.token_streamer(send_body)
        if not started and self.refusal.error is not None:
            error = self.refusal.error
            await send_error(send, error.status, str(error), self.raw_headers)
            return
        if not started:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

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


def refuse(synapse: Any, status: int, message: str) -> Any:
    """Answer with an HTTP error instead of a stream (the axon serialises the synapse as JSON)."""
    if synapse.axon is None:
        synapse.axon = TerminalInfo()
    synapse.axon.status_code = status
    synapse.axon.status_message = message
    return synapse
