"""The streaming synapses the miner serves. Class names and fields are the wire contract.

The axon routes a request by the synapse's *class name* (``POST /StreamPromptingSynapse``), and the
validator builds the same class on its side, so names, field names and ``required_hash_fields`` must
match the subnets' own definitions exactly.

| protocol         | class                     | subnet                          |
|------------------|---------------------------|---------------------------------|
| ``prompting``    | ``StreamPromptingSynapse`` | SN1 prompting                   |
| ``einstein``     | ``StreamCoreSynapse``      | SN35 (URL-encoded question)     |
| ``text-prompting`` | ``StreamPrompting``      | text-prompting (newline-split)  |
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import bittensor as bt
import pydantic
from aiohttp import ClientResponse


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
    import codecs

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
    """SN1 prompting: chunks are plain UTF-8 text appended to ``completion``."""


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


PROTOCOLS: dict[str, type[_ChatSynapse]] = {
    "prompting": StreamPromptingSynapse,
    "einstein": StreamCoreSynapse,
    "text-prompting": StreamPrompting,
}
