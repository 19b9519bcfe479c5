"""The HTTP door: OpenAI chat completions over signed HTTP, beside the axon, from the same miner.

Validators that left bittensor 10's dendrite call a miner as an OpenAI server (docs/ARCHITECTURE.md,
"Doors"):

- ``POST /v1/chat/completions``, streamed as server-sent events (``choices[].delta.content``, a last
  chunk with ``finish_reason``, then ``data: [DONE]``) or whole (``stream: false``), signed with
  Epistula v2 or bittensor 11's ``btauth/1`` (:mod:`services.miner.signed`), the deadline from
  ``X-Client-Timeout``;
- ``GET /v1/models`` and SN1's unsigned ``POST /availability`` (which tasks and models it serves).

Every request goes through the miner's own :class:`~services.miner.service.MinerService`: the same
gatekeeper (allowed hotkeys, or the metagraph's registration, stake and permit), limits, admission gate
(one queue with the axon's requests), token streamer, deadlines, partial answers, disconnect handling,
metrics (labelled ``chat/<scheme>``) and exit contract. A refusal is an HTTP status with an OpenAI-style
JSON error (``{"error": {"message", "type", "code"}}``), never a 500, and the miner keeps serving.
"""

from __future__ import annotations

import json
import logging
import time
import uuid as uuids
from collections.abc import MutableMapping
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from services.miner.backends.base import GenerationRequest
from services.miner.errors import BusyError, RefusedError, RequestError
from services.miner.guard import read_body
from services.miner.requests import availabilities, build_request, served_models
from services.miner.service import MinerService
from services.miner.signed import AuthFailure, Verifier, scheme_of
from services.miner.streamer import Ending, StreamOutcome

log = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
AVAILABILITY_PATH = "/availability"
DOOR_PATHS = (CHAT_PATH, MODELS_PATH, AVAILABILITY_PATH)
# The door where protocols are named (metrics labels, the request's decoding); never a MINER_PROTOCOLS value.
DOOR_PROTOCOL = "chat"
MAX_STOPS = 4  # as OpenAI's API
MAX_AVAILABILITY_BODY = 65_536


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # unknown fields are ignored, as OpenAI does


class ContentPart(_Loose):
    type: str
    text: str | None = None


class ChatTurn(_Loose):
    role: str
    content: str | list[ContentPart] | None = None

    def text(self, index: int) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise RequestError(f"messages[{index}]: only text content is served, not {part.type!r}")
            parts.append(part.text)
        return "".join(parts)


class ChatBody(_Loose):
    """A chat completion request, as the official client sends it (and SN1's extra fields)."""

    model: str | None = None
    messages: list[ChatTurn] = Field(..., min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    sampling_parameters: dict[str, Any] | None = None  # SN1: temperature, top_p, max_new_tokens

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOPS:
            raise RequestError(f"stop: at most {MAX_STOPS} sequences")
        return tuple(stop for stop in stops if stop)

    def sampled(self, key: str, default: Any = None) -> Any:
        return (self.sampling_parameters or {}).get(key, default)


class HttpDoor:
    """Pure ASGI: answers the door's paths and hands every other request to ``app`` (the axon, when the
    door shares its port; None on a port of its own: 404)."""

    def __init__(self, app: ASGIApp | None, *, service: MinerService, verifier: Verifier) -> None:
        self.app = app
        self.service = service
        self.verifier = verifier
        self.settings = service.settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path in DOOR_PATHS:
            if path == CHAT_PATH:
                await self._chat(scope, receive, send)
            elif path == MODELS_PATH:
                await self._models(scope, send)
            else:
                await self._availability(scope, receive, send)
            return
        if self.app is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await send_json(send, 404, _error(f"no route {path}: this is a miner's HTTP door", 404))

    async def _models(self, scope: Scope, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await send_json(send, 405, _error("send a GET", 405), allow="GET")
            return
        data = [{"id": name, "object": "model", "created": 0, "owned_by": self.settings.name}
                for name in served_models(self.settings)]  # fmt: skip
        await send_json(send, 200, {"object": "list", "data": data})

    async def _availability(self, scope: Scope, receive: Receive, send: Send) -> None:
        """SN1's question, unsigned: which of these tasks and models does this miner serve?"""
        if scope["method"] != "POST":
            await send_json(send, 405, _error("send a POST", 405), allow="POST")
            return
        body = await read_body(receive, MAX_AVAILABILITY_BODY)
        asked = _json_object(body or b"{}") if body is not None else None
        tasks = asked.get("task_availabilities") or {} if asked is not None else None
        models = asked.get("llm_model_availabilities") or {} if asked is not None else None
        if not isinstance(tasks, dict) or not isinstance(models, dict):
            await send_json(send, 400, _error("send a JSON object of task_availabilities and "
                                              "llm_model_availabilities", 400))  # fmt: skip
            return
        served_tasks, served = availabilities(self.settings, list(tasks), list(models))
        await send_json(send, 200, {"task_availabilities": served_tasks, "llm_model_availabilities": served})

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = self.service.clock()
        if scope["method"] != "POST":
            await self._refuse(send, DOOR_PROTOCOL, arrived, 405, "send a signed POST", allow="POST")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        most = self.settings.limits.max_request_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > most:
            await self._refuse(
                send, DOOR_PROTOCOL, arrived, 413, f"request body of {declared} bytes is over {most}"
            )
            return
        if scheme_of(headers) is None:  # before reading a body nobody signed
            try:
                self.verifier.verify(headers, b"", "POST", CHAT_PATH)
            except AuthFailure as exc:
                await self._refuse(send, DOOR_PROTOCOL, arrived, exc.status, str(exc))
                return
        body = await read_body(receive, most)
        if body is None:
            await self._refuse(
                send, DOOR_PROTOCOL, arrived, 413, f"request body is over this miner's {most} bytes"
            )
            return
        target = scope.get("raw_path", CHAT_PATH.encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        try:
            signer = self.verifier.verify(headers, body, "POST", target)
        except AuthFailure as exc:
            await self._refuse(send, DOOR_PROTOCOL, arrived, exc.status, str(exc))
            return
        label = f"chat/{signer.scheme}"
        refused, reason = self.service.gatekeeper.blacklist(signer.hotkey)
        if refused:
            self.service.metrics.count(label, "blacklisted")
            await self._refuse(send, None, arrived, 403, f"not allowed: {reason}")
            return
        try:
            chat = ChatBody.model_validate_json(body)
            timeout = self._timeout(headers)
        except ValidationError as exc:
            await self._refuse(send, label, arrived, 400, f"bad request: {_first(exc)}")
            return
        except RequestError as exc:
            await self._refuse(send, label, arrived, exc.status, str(exc))
            return
        await self._answer(scope, receive, send, chat, label, signer.hotkey, timeout)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        chat: ChatBody,
        label: str,
        hotkey: str,
        timeout: float,
    ) -> None:
        service = self.service
        arrived, deadline = service.deadline(timeout)
        caller = f"{hotkey[:8]}…"
        admitted = await service.admit(label, caller, hotkey, lambda: self._request(chat), arrived, deadline)
        if isinstance(admitted, RefusedError):
            await send_json(send, admitted.status, _error(str(admitted), admitted.status))
            return
        request, reservation = admitted
        reply = _Reply(send, chat.model or served_models(self.settings)[0], chat.stream)
        ended: list[StreamOutcome | BusyError] = []

        async def generate() -> None:
            ended.append(
                await service.generate(
                    label, caller, request, reservation, reply.text, arrived, deadline, hotkey
                )
            )

        await _until_disconnect(generate(), receive)
        if not ended:
            return  # the caller left: generation stopped, nobody to answer
        outcome = ended[0]
        refusal = service.settle(outcome)
        if refusal is not None and not reply.parts:
            await send_json(send, refusal.status, _error(str(refusal), refusal.status))
            return
        assert isinstance(outcome, StreamOutcome)
        await reply.finish(_finish_reason(outcome, request))

    async def _request(self, chat: ChatBody) -> GenerationRequest:
        """The generation request: the chat checked as the axon's are, the sampling within the miner's
        own bounds (``max_tokens`` is a ceiling a caller may lower, never raise)."""
        settings = self.settings
        roles, messages = [], []
        for index, turn in enumerate(chat.messages):
            roles.append(turn.role)
            messages.append(turn.text(index))
        asked = SimpleNamespace(roles=roles, messages=messages, target_model=chat.model, seed=chat.seed)
        request = await build_request(settings, self.service.backend, asked, DOOR_PROTOCOL)
        wanted = chat.max_tokens or chat.max_completion_tokens or chat.sampled("max_new_tokens")
        temperature = chat.temperature if chat.temperature is not None else chat.sampled("temperature")
        top_p = chat.top_p if chat.top_p is not None else chat.sampled("top_p")
        try:
            return replace(
                request,
                max_tokens=min(int(wanted), settings.max_tokens) if wanted else settings.max_tokens,
                temperature=min(max(float(temperature), 0.0), 2.0)
                if temperature is not None
                else settings.temperature,
                top_p=min(max(float(top_p), 0.01), 1.0) if top_p is not None else None,
                stop=chat.stops(),
            )
        except (TypeError, ValueError) as exc:
            raise RequestError(f"bad request: sampling_parameters: {exc}") from None

    def _timeout(self, headers: dict[str, str]) -> float:
        door = self.settings.http
        raw = headers.get("x-client-timeout")
        if raw is None:
            return door.default_timeout
        try:
            timeout = float(raw)
        except ValueError:
            raise RequestError(f"X-Client-Timeout is not a number of seconds: {raw[:32]!r}") from None
        if not timeout > 0:
            raise RequestError("X-Client-Timeout must be above 0 seconds")
        return min(timeout, door.max_timeout)

    async def _refuse(
        self, send: Send, label: str | None, arrived: float, status: int, message: str, allow: str = ""
    ) -> None:
        if label is not None:
            self.service.metrics.refused(label, None, self.service.clock() - arrived, status)
        log.info("refused at the HTTP door: %d %s", status, message)
        await send_json(send, status, _error(message, status), allow=allow)


class _Reply:
    """The answer under way: server-sent events as the official client reads them, or one JSON body.

    Nothing is sent before the first text, so a request refused when its stream starts still gets its
    own status (a 200 that never carries text is not an answer)."""

    def __init__(self, send: Send, model: str, stream: bool) -> None:
        self.send = send
        self.model = model
        self.stream = stream
        self.id = f"chatcmpl-{uuids.uuid4().hex}"
        self.created = int(time.time())
        self.parts: list[str] = []

    async def text(self, message: MutableMapping[str, Any]) -> None:
        text = message.get("body", b"").decode("utf-8")
        if not text:
            return
        first = not self.parts
        self.parts.append(text)
        if not self.stream:
            return
        if first:
            start = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
            await self.send({"type": "http.response.start", "status": 200, "headers": start})
            await self._event({"role": "assistant", "content": ""}, None)
        await self._event({"content": text}, None)

    async def finish(self, reason: str) -> None:
        if self.stream:
            await self._event({}, reason)
            await self.send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
            return
        whole = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(self.parts)},
                         "finish_reason": reason, "logprobs": None}],
        }  # fmt: skip
        await send_json(self.send, 200, whole)

    async def _event(self, delta: dict[str, Any], reason: str | None) -> None:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}],
        }
        event = b"data: " + json.dumps(chunk, ensure_ascii=False).encode("utf-8") + b"\n\n"
        await self.send({"type": "http.response.body", "body": event, "more_body": True})


async def _until_disconnect(work: Any, receive: Receive) -> None:
    """Run ``work`` beside a listener for ``http.disconnect``; whichever ends first stops the other
    (cancelling the work stops generation and frees the model)."""
    async with anyio.create_task_group() as group:

        async def run() -> None:
            await work
            group.cancel_scope.cancel()

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(run)
        group.start_soon(listen)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _finish_reason(outcome: StreamOutcome, request: GenerationRequest) -> str:
    if outcome.ending is Ending.deadline or outcome.pieces >= request.max_tokens:
        return "length"
    return "stop"


def _error(message: str, status: int) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 413: "invalid_request_error"}.get(status, "server_error")  # fmt: skip
    return {"error": {"message": message, "type": kind, "code": status}}


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


async def send_json(send: Send, status: int, payload: Any, allow: str = "") -> None:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if allow:
        headers.append((b"allow", allow.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
