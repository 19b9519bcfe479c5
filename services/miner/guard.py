"""The HTTP edge in front of bittensor's axon: what reaches it is bounded and well-formed.

bittensor's axon answers some plain mistakes with ``500`` (a GET on a route, a request without a
signature, a body changed after signing: its own checks raise generic exceptions) and reads any body
whole before checking anything. :class:`RequestGuard` answers those at the edge with the honest status
(405, 413, 401, 400) and a JSON reason, and hands the axon only requests that are signed, small enough
and whose body matches the hash that was signed. The axon still verifies the signature itself.

:func:`guarded_protocol` closes connections that never send a complete request (idle sockets would
otherwise hold file descriptors until the process can accept no more).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

LIVENESS_PATH = "/health"  # GET: 200 while the miner's event loop runs

# Headers a dendrite signs with; without them the axon cannot verify anything.
SIGNED_HEADERS = (
    "bt_header_dendrite_hotkey",
    "bt_header_dendrite_nonce",
    "bt_header_dendrite_signature",
    "computed_body_hash",
)


class RequestGuard:
    """Pure ASGI middleware: method, size, signature headers and body hash, before the axon."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Mapping[str, type[Any]],
        max_body: int,
        on_refused: Callable[[str, int], None] | None = None,
    ) -> None:
        self.app = app
        self.routes = dict(routes)  # "/StreamPromptingSynapse" -> its synapse class
        self.max_body = max_body
        self.on_refused = on_refused  # (path, status) of each refusal here: the miner's metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == LIVENESS_PATH and scope["method"] in ("GET", "HEAD"):
            # The fleet's liveness check: answered on the event loop every request runs on (a paused or
            # hung miner does not answer), touching neither the model nor the chain, counted nowhere.
            alive = b'{"status": "ok"}'
            ok = [(b"content-type", b"application/json"), (b"content-length", str(len(alive)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": ok})
            await send({"type": "http.response.body", "body": alive, "more_body": False})
            return
        synapse_class = self.routes.get(scope["path"])
        if synapse_class is None:
            # Unknown routes (and the axon's own /Synapse ping) keep the axon's answers.
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await self._refuse(
                scope, send, 405, f"{scope['method']} is not allowed here: send a signed POST", allow="POST"
            )
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            await self._refuse(
                scope, send, 413, f"request body of {declared} bytes is over this miner's {self.max_body}"
            )
            return
        missing = [name for name in SIGNED_HEADERS if not headers.get(name)]
        if missing:
            await self._refuse(scope, send, 401, f"unsigned request: missing {', '.join(missing)}")
            return
        body = await read_body(receive, self.max_body)
        if body is None:
            await self._refuse(scope, send, 413, f"request body is over this miner's {self.max_body} bytes")
            return
        problem = _body_problem(body, synapse_class, headers["computed_body_hash"])
        if problem:
            await self._refuse(scope, send, 400, problem)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _refuse(self, scope: Scope, send: Send, status: int, message: str, allow: str = "") -> None:
        if self.on_refused is not None:
            self.on_refused(scope["path"], status)
        log.info("refused at the edge: %d %s", status, message)
        await send_error(send, status, message, [(b"allow", allow.encode())] if allow else [])


def _body_problem(body: bytes, synapse_class: type[Any], signed_hash: str) -> str | None:
    """Why the body cannot be what was signed (None when it is)."""
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "bad request: the body is not JSON"
    if not isinstance(fields, dict):
        return "bad request: the body is not a JSON object"
    try:
        # JSON can carry a lone surrogate ("\\ud800") that no UTF-8 text holds; a model cannot read it
        # and the axon cannot even write it back in an error answer.
        json.dumps(fields, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"bad request: the body holds text that is not valid Unicode ({exc.reason})"
    try:
        synapse = synapse_class(**fields)
        computed = synapse.body_hash
    except Exception as exc:  # pydantic's ValidationError and the synapse's own checks
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"bad request: not a valid {synapse_class.__name__}: {first}"
    if computed != signed_hash:
        return "bad request: the body does not match the hash that was signed"
    return None


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it grows past ``limit`` (chunked bodies have no length)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(parts)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over the body already read, then listens to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# Headers an error answer sets itself (a stream's own would contradict it).
_ERROR_HEADERS = {
    b"content-length",
    b"content-type",
    b"bt_header_axon_status_code",
    b"bt_header_axon_status_message",
}


async def send_error(
    send: Send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """A JSON ``{"message": ...}`` answer with the axon status headers the dendrite reads back into the
    synapse (``status_code``/``status_message``); ``headers`` are kept beside them."""
    body = json.dumps({"message": message}).encode("utf-8")
    kept = [(k, v) for k, v in headers if k.lower() not in _ERROR_HEADERS]
    kept += [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"bt_header_axon_status_code", str(status).encode()),
        (b"bt_header_axon_status_message", message.encode("latin-1", "replace")),
    ]
    await send({"type": "http.response.start", "status": status, "headers": kept})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def guarded_protocol(base: type[Any], *, header_timeout: float, keep_alive: float) -> type[Any]:
    """uvicorn's HTTP protocol ``base``, closing connections that do not send a request in time.

    A new connection has ``header_timeout`` seconds to send a complete request head; after a response,
    uvicorn's own keep-alive timer closes an idle connection, and this one is a backstop for a client
    that starts a request and never finishes it.
    """

    class GuardedProtocol(base):
        _guard_timer: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._guard_arm(header_timeout)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._guard_arm(keep_alive + header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._guard_timer is not None:
                self._guard_timer.cancel()
            super().connection_lost(exc)

        def _guard_arm(self, seconds: float) -> None:
            if self._guard_timer is not None:
                self._guard_timer.cancel()
            self._guard_timer = self.loop.call_later(seconds, self._guard_expired)

        def _guard_expired(self) -> None:
            cycle = getattr(self, "cycle", None)
            if cycle is None or cycle.response_complete:  # no request in progress: idle or too slow
                if not self.transport.is_closing():
                    self.transport.close()

    GuardedProtocol.__name__ = f"Guarded{base.__name__}"
    return GuardedProtocol
