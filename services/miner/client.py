"""A validator's side of the wire, for the fleet probe, the tests and the benchmarks.

``bt.Dendrite(...)`` looks up this machine's public IP on the internet in its constructor and fails
offline. :func:`make_dendrite` builds a real dendrite without that lookup (the IP only goes into
request headers; the axon does not check it), so probing a miner works with no internet at all.

A dendrite also appends a copy of every synapse it sends to ``synapse_history``, a plain list that
nothing reads or trims: about 4 KiB per request, forever, in a process that keeps one dendrite (the
watch's prober). :func:`make_dendrite` makes it a ring of the last :data:`DENDRITE_HISTORY`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import aiohttp
import bittensor as bt
import bittensor.core.dendrite as dendrite_module
from bittensor.core.stream import StreamingSynapse

from services.miner.protocols import PROTOCOLS
from services.miner.signed import sign

_CONSTRUCT = threading.Lock()
DENDRITE_HISTORY = 16  # synapses a dendrite keeps in ``synapse_history`` (bittensor: all of them)


class _FixedIP(ModuleType):
    """Stands in for ``bittensor.utils.networking`` while a dendrite is built: same module, fixed IP."""

    def __init__(self, real: ModuleType, ip: str) -> None:
        super().__init__(real.__name__)
        self._real = real
        self._ip = ip

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def get_external_ip(self) -> str:
        return self._ip


def make_dendrite(wallet: Any, ip: str = "127.0.0.1") -> bt.Dendrite:
    """A real ``bt.Dendrite`` signed by ``wallet`` (or a Keypair), built without the public-IP lookup,
    whose ``synapse_history`` keeps the last :data:`DENDRITE_HISTORY` synapses only."""
    with _CONSTRUCT:
        real = dendrite_module.networking
        dendrite_module.networking = _FixedIP(real, ip)
        try:
            dendrite = bt.Dendrite(wallet=wallet)
        finally:
            dendrite_module.networking = real
    # bittensor only ever appends to it: a bounded deque appends the same way, dropping the oldest.
    dendrite.synapse_history = deque(maxlen=DENDRITE_HISTORY)  # type: ignore[assignment]
    return dendrite


def axon_info(ip: str, port: int, hotkey: str) -> bt.AxonInfo:
    """Where a miner listens and which hotkey it signs with (the request is signed for that hotkey)."""
    return bt.AxonInfo(
        version=0,
        ip=ip,
        port=port,
        ip_type=4,
        hotkey=hotkey,
        coldkey="",
        protocol=4,
        placeholder1=0,
        placeholder2=0,
    )


def make_synapse(
    protocol: str,
    prompt: str,
    roles: list[str] | None = None,
    messages: list[str] | None = None,
    timeout: float = 12.0,
) -> StreamingSynapse:
    cls = PROTOCOLS[protocol]
    return cls(
        roles=["user"] if roles is None else roles,
        messages=[prompt] if messages is None else messages,
        timeout=timeout,
    )


@dataclass
class StreamResult:
    """What one streamed request gave back, measured on the client side."""

    status_code: int | None = None
    status_message: str = ""
    chunks: list[str] = field(default_factory=list)
    completion: str = ""
    first_chunk_after: float | None = None
    elapsed: float = 0.0
    synapse: Any = None
    last_chunk_after: float | None = None  # when the last chunk came: a stream still flowing at its cut

    @property
    def ok(self) -> bool:
        return self.status_code == 200


async def stream_once(
    dendrite: bt.Dendrite, target: bt.AxonInfo, synapse: StreamingSynapse, timeout: float = 12.0
) -> StreamResult:
    """Send ``synapse`` to ``target`` and read the whole stream."""
    result = StreamResult()
    started = time.monotonic()
    async for item in dendrite.call_stream(target, synapse, timeout=timeout, deserialize=False):
        if isinstance(item, StreamingSynapse):
            result.synapse = item
            continue
        result.last_chunk_after = time.monotonic() - started
        if result.first_chunk_after is None:
            result.first_chunk_after = result.last_chunk_after
        result.chunks.append("\n".join(item) if isinstance(item, list) else str(item))
    result.elapsed = time.monotonic() - started
    final = result.synapse
    if final is not None:
        code = getattr(final.dendrite, "status_code", None)
        result.status_code = int(code) if code is not None else None
        result.status_message = str(getattr(final.dendrite, "status_message", "") or "")
        result.completion = final.completion or ""
    return result


CHAT_PATH = "/v1/chat/completions"


async def chat_once(
    session: Any,
    base_url: str,
    keypair: Any,
    receiver: str,
    scheme: str,
    prompt: str,
    timeout: float = 12.0,
    **fields: Any,
) -> StreamResult:
    """One streamed chat completion through a miner's HTTP door, signed with ``scheme`` (epistula or
    btauth) by ``keypair`` for ``receiver``, read as the OpenAI client reads it (server-sent events).

    ``session``: an ``aiohttp.ClientSession``; ``fields``: more of the body (``max_tokens``, ``seed``...).
    """
    body = json.dumps({"messages": [{"role": "user", "content": prompt}], "stream": True, **fields}).encode()
    headers = {
        **sign(scheme, keypair, "POST", CHAT_PATH, body, receiver, timeout),  # type: ignore[arg-type]
        "Content-Type": "application/json",
    }
    result = StreamResult()
    started = time.monotonic()
    try:
        async with session.post(
            base_url.rstrip("/") + CHAT_PATH,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            result.status_code = response.status
            if response.status != 200:
                result.status_message = _error_message(await response.read())
                return result
            async for line in response.content:
                if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices", []):
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        result.last_chunk_after = time.monotonic() - started
                        if result.first_chunk_after is None:
                            result.first_chunk_after = result.last_chunk_after
                        result.chunks.append(text)
    except TimeoutError:
        result.status_code, result.status_message = 408, f"timed out after {timeout:g}s"
    except aiohttp.ClientError as exc:
        result.status_code, result.status_message = 503, f"connection failed: {exc}"
    finally:
        result.elapsed = time.monotonic() - started
        result.completion = "".join(result.chunks)
    return result


def _error_message(body: bytes) -> str:
    """The reason of an OpenAI-style error answer (``{"error": {"message": ...}}``), else the body."""
    try:
        error = json.loads(body).get("error") or {}
        return str(error.get("message") or body[:200].decode("utf-8", "replace"))
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")
