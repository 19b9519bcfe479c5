"""The streaming synapses the miner serves. Class names and fields are the wire contract.

The axon routes a request by the synapse's *class name* (``POST /StreamPromptingSynapse``), and the
validator builds the same class on its side, so names, field names and ``required_hash_fields`` must
match the subnets' own definitions exactly.

| protocol         | class                     | subnet                          |
|------------------|---------------------------|---------------------------------|
| ``prompting``    | ``StreamPromptingSynapse`` | SN1 prompting                   |
| ``einstein``     | ``StreamCoreSynapse``      | SN35 (URL-encoded question)     |
| ``text-prompting`` | ``StreamPrompting``      | text-prompting (newline-split)  |

Beside its streaming class, ``prompting`` answers ``AvailabilitySynapse`` (which tasks and models this
miner serves) and ``text-prompting`` the plain ``Prompting`` (the whole completion in one answer), as
those subnets' validators ask (:data:`ROUTES`). Each protocol is described once, in
:mod:`services.miner.protocolspec`; :data:`ROUTES` and :data:`PROTOCOLS` are derived from it.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import bittensor as bt
import pydantic
from aiohttp import ClientResponse

from services.miner.protocolspec import PROTOCOL_SPECS, Route


def _header_info(response: ClientResponse) -> dict[str, Any]:
    """The metadata every ``extract_response_json`` returns (the dendrite reads it back)."""
    headers = {k.decode("utf-8"): v.decode("utf-8") for k, v in response.__dict__["_raw_headers"]}

    def extract_info(prefix: str) -> dict[str, str]:
        return {key.split("_")[-1]: value for key, value in headers.items() if key.startswith(prefix)}

    return {
        "name": headers.get("name", ""),
        "timeout": float(headers.get("timeout", 0)),
        "total_size": int(headers.get("total_size", 0)),
        "header_size": int(headers.get("header_size", 0)),
        "dendrite": extract_info("bt_header_dendrite"),
        "axon": extract_info("bt_header_axon"),
    }


async def _decoded_chunks(response: ClientResponse) -> AsyncIterator[str]:
    """Yield the body as text, never cutting a multi-byte UTF-8 character in two.

    Only a 200 body is a completion: an error answer (403 blacklisted, 503 busy) carries a JSON
    message, and reading that as model output would make a refused request look like an answer.
    """
    if response.status != 200:
        return
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    async for chunk in response.content.iter_any():
        text = decoder.decode(chunk)
        if text:
            yield text
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


class _ChatSynapse(bt.StreamingSynapse):
    """Fields shared by every protocol: a chat as parallel ``roles``/``messages`` lists."""

    roles: list[str] = pydantic.Field(
        ..., title="Roles", description="Role of each message: system, user or assistant.", frozen=True
    )
    messages: list[str] = pydantic.Field(
        ...,
        title="Messages",
        description="The chat, oldest first. The prompt is the last user message.",
        frozen=True,
    )
    completion: str = pydantic.Field("", title="Completion", description="The streamed answer, accumulated.")
    # Only the chat is covered by the body hash, as in the subnets' own classes. A class variable (not a
    # field): a validator whose class still sends it as a field is compatible, pydantic ignores the extra key.
    required_hash_fields: ClassVar[tuple[str, ...]] = ("messages",)

    def deserialize(self) -> str:  # type: ignore[override]  # the subnets return the completion
        return self.completion

    async def process_streaming_response(self, response: ClientResponse) -> AsyncIterator[str]:  # type: ignore[override]
        if self.completion is None:
            self.completion = ""
        async for text in _decoded_chunks(response):
            self.completion += text
            yield text

    def extract_response_json(self, response: ClientResponse) -> dict[str, Any]:
        return {
            **_header_info(response),
            "roles": self.roles,
            "messages": self.messages,
            "completion": self.completion,
        }


class StreamPromptingSynapse(_ChatSynapse):
    """SN1 prompting: chunks are plain UTF-8 text appended to ``completion``.

    The late-2024 fields are optional here so that both forms are served: validators of that time send
    ``task_name`` (their class requires it), ``target_model`` and ``seed``; earlier ones send neither.
    """

    task_name: str = pydantic.Field(
        "", title="Task name", description="The validator's task, e.g. QuestionAnsweringTask."
    )
    target_model: str | None = pydantic.Field(
        None, title="Target model", description="The model the validator wants the answer from."
    )
    seed: int | None = pydantic.Field(
        None, title="Seed", description="Sampling seed, for reproducible answers."
    )


class StreamCoreSynapse(_ChatSynapse):
    """SN35 Einstein: the last message is ``question_text=...&question_markdown=...&question_type=...``."""


class StreamPrompting(_ChatSynapse):
    """text-prompting: its client splits each chunk on newlines and yields the lists."""

    async def process_streaming_response(  # type: ignore[override]
        self, response: ClientResponse
    ) -> AsyncIterator[list[str]]:
        if self.completion is None:
            self.completion = ""
        async for text in _decoded_chunks(response):
            self.completion += text
            yield text.split("\n")


class Prompting(bt.Synapse):
    """text-prompting's plain (non-streaming) synapse: the whole completion comes back in one answer."""

    roles: list[str] = pydantic.Field(..., title="Roles", description="Role of each message.", frozen=True)
    messages: list[str] = pydantic.Field(
        ..., title="Messages", description="The chat, oldest first.", frozen=True
    )
    completion: str = pydantic.Field("", title="Completion", description="The whole answer.")
    required_hash_fields: ClassVar[tuple[str, ...]] = ("messages",)

    def deserialize(self) -> Prompting:
        return self


class AvailabilitySynapse(bt.Synapse):
    """SN1's question before it sends work: which of these tasks and models does this miner serve?

    The validator sends the names it wants to know about; the miner sets each to true or false.
    """

    task_availabilities: dict[str, bool] = pydantic.Field(
        default_factory=dict, title="Tasks", description="Task name -> served."
    )
    llm_model_availabilities: dict[str, bool] = pydantic.Field(
        default_factory=dict, title="Models", description="Model name -> served."
    )


def _synapse_classes() -> dict[str, type[bt.Synapse]]:
    """The synapse classes defined here, by class name (the name the axon routes by)."""
    return {
        name: obj
        for name, obj in globals().items()
        if isinstance(obj, type) and issubclass(obj, bt.Synapse) and obj.__module__ == __name__
    }


_CLASSES = _synapse_classes()

# The synapse classes each protocol serves (one route each), the streaming one first: from the registry.
ROUTES: dict[str, tuple[tuple[type[bt.Synapse], Route], ...]] = {
    spec.name: tuple((_CLASSES[name], route) for name, route in spec.routes) for spec in PROTOCOL_SPECS
}


def _streaming(name: str) -> type[_ChatSynapse]:
    cls = _CLASSES[name]
    if not issubclass(cls, _ChatSynapse):
        raise TypeError(f"{name} is not a streaming chat synapse")
    return cls


# Each protocol's streaming synapse class.
PROTOCOLS: dict[str, type[_ChatSynapse]] = {spec.name: _streaming(spec.synapse) for spec in PROTOCOL_SPECS}
