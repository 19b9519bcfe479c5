"""Any OpenAI-compatible server (llama_cpp.server, vLLM, OpenAI) through the async client.

No thread needed: the client is async. Several hotkeys can point at one server so a model is loaded once
for the whole fleet. The API key comes from the environment and is never logged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from services.miner.backends.base import GenerationRequest
from services.miner.chat import TRANSCRIPT_STOP, transcript
from services.miner.errors import BackendError, ConfigError
from services.miner.settings import OpenAISettings


class OpenAIBackend:
    name = "openai"

    def __init__(self, settings: OpenAISettings) -> None:
        self.settings = settings
        self._client: Any = None

    def load(self) -> None:
        if not self.settings.base_url:
            raise ConfigError("MINER_OPENAI__BASE_URL: not set (e.g. http://127.0.0.1:8000/v1)")
        try:
            import openai
        except ImportError as exc:
            raise ConfigError(f"MINER_BACKEND=openai: the openai package is not installed ({exc})") from exc
        self._client = openai.AsyncOpenAI(
            base_url=self.settings.base_url,
            api_key=self.settings.api_key.get_secret_value(),
            timeout=self.settings.request_timeout,
            max_retries=0,  # a retry would blow the validator's deadline; the fleet probe sees failures
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        import openai

        common: dict[str, Any] = {
            "model": self.settings.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
        }
        if request.seed is not None:
            common["seed"] = request.seed
        try:
            if self.settings.use_chat:
                stream = await self._client.chat.completions.create(
                    messages=[m.as_dict() for m in request.chat], **common
                )
            else:
                stream = await self._client.completions.create(
                    prompt=transcript(request.chat), stop=list(TRANSCRIPT_STOP), **common
                )
            try:
                async for chunk in stream:
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    text = choice.delta.content if self.settings.use_chat else choice.text
                    if text:
                        yield text
            finally:
                # Closing the HTTP stream tells the server to stop generating (frees the shared model).
                await stream.close()
        except openai.OpenAIError as exc:
            raise BackendError(
                f"openai server {self.settings.base_url}: {type(exc).__name__}: {exc}"
            ) from exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
