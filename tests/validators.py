"""Validator-side synapse classes written the way the subnets wrote them (not the project's own).

The axon routes by class name, so these share the miner's class names; they declare
``required_hash_fields`` as a pydantic *field* (as every one of these subnets did), require
``task_name`` (SN1 late 2024), and read the stream their own way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import bittensor as bt
import pydantic
from aiohttp import ClientResponse


class StreamPromptingSynapse(bt.StreamingSynapse):
    """SN1 prompting, late 2024."""

    task_name: str = pydantic.Field(..., frozen=True)
    roles: list[str] = pydantic.Field(..., frozen=True)
    messages: list[str] = pydantic.Field(..., frozen=True)
    required_hash_fields: list[str] = pydantic.Field(["messages"], frozen=True)
    target_model: str | None = None
    seed: int | None = None
    completion: str = ""

    async def process_streaming_response(self, response: ClientResponse) -> AsyncIterator[str]:  # type: ignore[override]
        if self.completion is None:
            self.completion = ""
        async for chunk in response.content.iter_any():
            text = chunk.decode("utf-8")
            self.completion += text
            yield text

    def deserialize(self) -> str:  # type: ignore[override]
        return self.completion

    def extract_response_json(self, response: ClientResponse) -> dict[str, Any]:
        headers = {k.decode("utf-8"): v.decode("utf-8") for k, v in response.__dict__["_raw_headers"]}
        return {
            "name": headers.get("name", ""),
            "timeout": float(headers.get("timeout", 0)),
            "task_name": self.task_name,
            "target_model": self.target_model,
            "seed": self.seed,
            "roles": self.roles,
            "messages": self.messages,
            "completion": self.completion,
        }


class AvailabilitySynapse(bt.Synapse):
    """SN1: asked before any work is sent."""

    task_availabilities: dict[str, bool]
    llm_model_availabilities: dict[str, bool]


class Prompting(bt.Synapse):
    """text-prompting's plain synapse, as its validators send it to about 50 miners with a 10 s timeout."""

    roles: list[str] = pydantic.Field(..., frozen=True)
    messages: list[str] = pydantic.Field(..., frozen=True)
    completion: str = ""
    required_hash_fields: list[str] = pydantic.Field(["messages"], frozen=True)

    def deserialize(self) -> Prompting:
        return self
