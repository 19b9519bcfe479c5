"""The deterministic backend: no model, streams the prompt back word by word.

For tests, demos and benchmarks of the streaming path itself. Whitespace is kept with the words, so the
completion equals the last user message exactly. Faults can be injected: an error after N pieces (a
forward exception) or a hang after N pieces (a stream that stalls).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from pydantic import Field

from services.miner.backends.base import GenerationRequest
from services.miner.backends.spec import BackendSpec
from services.miner.chat import ChatMessage, last_user_message
from services.miner.errors import BackendError
from services.miner.groups import SettingsGroup

_PIECE = re.compile(r"\S+\s*|\s+")


def split_pieces(text: str) -> list[str]:
    """Words with their trailing whitespace (leading whitespace is a piece of its own)."""
    return _PIECE.findall(text)


class EchoSettings(SettingsGroup):
    """The deterministic backend: streams the last user message back, word by word."""

    delay_per_token: float = Field(0.0, ge=0, description="Seconds to wait before each piece (demo/tests).")
    fail_after_tokens: int | None = Field(
        None, ge=0, description="Raise a backend error on reaching this many pieces (fault injection)."
    )
    hang_after_tokens: int | None = Field(
        None,
        ge=0,
        description="Stop producing (but stay connected) after this many pieces (fault injection).",
    )


class EchoBackend:
    name = "echo"
    default_concurrency = 64
    max_concurrency: int | None = None  # no model: as many streams as the event loop carries
    server_load = None

    def __init__(self, settings: EchoSettings) -> None:
        self.settings = settings

    def load(self) -> None:
        return None

    def warmup(self) -> None:
        return None

    def prompt_tokens(self, chat: list[ChatMessage]) -> int | None:
        return None

    def token_budget(self, max_tokens: int) -> int | None:
        return None

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        pieces = split_pieces(last_user_message(request.chat))[: request.max_tokens]
        fail_after = self.settings.fail_after_tokens
        hang_after = self.settings.hang_after_tokens
        for index, piece in enumerate(pieces):
            if fail_after is not None and index >= fail_after:
                raise BackendError(f"injected fault after {fail_after} pieces (echo.fail_after_tokens)")
            if hang_after is not None and index >= hang_after:
                await asyncio.Event().wait()  # stalls until the request is cancelled
            if self.settings.delay_per_token:
                await asyncio.sleep(self.settings.delay_per_token)
            yield piece
        if fail_after is not None and len(pieces) == fail_after:
            # The fault point is right at the end: the answer is complete, then the backend fails.
            raise BackendError(f"injected fault after {fail_after} pieces (echo.fail_after_tokens)")

    async def aclose(self) -> None:
        return None


SPEC = BackendSpec(
    name="echo",
    settings=EchoSettings,
    create=EchoBackend,
    summary="no model: streams the prompt back (plumbing checks, demos, fault injection)",
    model_name=lambda group: "echo",
)
