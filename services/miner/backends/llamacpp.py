"""llama-cpp-python, on CPU or GPU (``n_gpu_layers``).

The model's own chat template is used when the GGUF carries one; a base model (no template) gets a
plain transcript and stops before it would write the next user turn. Generation runs in a worker thread
(:func:`iterate_in_thread`); the thread checks the stop flag between tokens, so a deadline or a
disconnect frees the model within one token.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from services.miner.backends.base import GenerationRequest, iterate_in_thread, sampling
from services.miner.backends.spec import BackendSpec, Memory
from services.miner.chat import TRANSCRIPT_STOP, ChatMessage, transcript
from services.miner.errors import ConfigError, RequestError
from services.miner.groups import SettingsGroup

BUNDLED_MODEL = "gemma-3-270m-q4_k_m.gguf"


class LlamaCppSettings(SettingsGroup):
    """llama-cpp-python on CPU, or on GPU with ``n_gpu_layers``."""

    model_path: Path | None = Field(None, description="Path to a GGUF model file.")
    n_ctx: int = Field(2048, ge=128, description="Context window in tokens.")
    n_threads: int | None = Field(None, ge=1, description="CPU threads for generation (default: all cores).")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU (-1: all; 0: CPU only).")
    n_batch: int = Field(512, ge=1, description="Prompt-processing batch size.")
    seed: int = Field(-1, description="Sampling seed (-1: random).")
    chat_format: str | None = Field(
        None,
        description="Force a llama.cpp chat format; default: the model's own template, else a transcript.",
    )


class LlamaCppBackend:
    name = "llamacpp"
    # One llama.cpp context generates one answer at a time; concurrent streams need a batching server.
    default_concurrency = 1
    max_concurrency: int | None = 1
    server_load = None  # the model is this miner's own

    def __init__(self, settings: LlamaCppSettings) -> None:
        self.settings = settings
        self._llm: Any = None
        # The model gate already allows one generation at a time; this lock makes that a hard
        # guarantee in the thread itself (a llama.cpp context used by two threads crashes the process).
        self._busy = threading.Lock()
        self.has_chat_template = False

    def load(self) -> None:
        path = self.settings.model_path
        if path is None:
            raise ConfigError("MINER_LLAMACPP__MODEL_PATH: not set (path to a GGUF model file)")
        path = path.expanduser()
        if not path.is_file():
            hint = " (the bundled model: run `make model`)" if path.name == BUNDLED_MODEL else ""
            raise ConfigError(f"MINER_LLAMACPP__MODEL_PATH: model file not found: {path}{hint}")
        try:
            from llama_cpp import Llama  # the native library loads here: only a miner of this backend pays
        except ImportError as exc:  # a cuda/hf image without llama.cpp, say
            raise ConfigError(f"MINER_BACKEND=llamacpp: llama-cpp-python is not installed ({exc})") from exc
        try:
            self._llm = Llama(
                model_path=str(path),
                n_ctx=self.settings.n_ctx,
                n_threads=self.settings.n_threads or os.cpu_count(),
                n_gpu_layers=self.settings.n_gpu_layers,
                n_batch=self.settings.n_batch,
                seed=self.settings.seed if self.settings.seed >= 0 else 0xFFFFFFFF,
                chat_format=self.settings.chat_format,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"MINER_LLAMACPP__MODEL_PATH: cannot load {path}: {exc}") from exc
        self.has_chat_template = bool(self.settings.chat_format) or (
            "tokenizer.chat_template" in (self._llm.metadata or {})
        )

    def warmup(self) -> None:
        """A few tokens, so the first validator after a (re)start does not pay for the first inference."""
        with self._busy:
            for chunk in self._llm.create_completion(prompt="Hello", max_tokens=4, stream=True):
                del chunk

    def _prompt_text(self, chat: list[ChatMessage]) -> str:
        if self.has_chat_template:
            # What the template adds is small next to the content; count the content and a margin.
            return "\n".join(f"<|{m.role}|>\n{m.content}" for m in chat)
        return transcript(chat)

    def prompt_tokens(self, chat: list[ChatMessage]) -> int | None:
        # Tokenizing reads the vocabulary only; it is safe beside a running generation.
        text = self._prompt_text(chat).encode("utf-8", errors="replace")
        return len(self._llm.tokenize(text, add_bos=True, special=True)) + (
            8 if self.has_chat_template else 0
        )

    def token_budget(self, max_tokens: int) -> int | None:
        return max(1, self.settings.n_ctx - max_tokens)

    def _pieces(self, request: GenerationRequest, stop: threading.Event) -> Iterator[str]:
        with self._busy:
            try:
                yield from self._generate(request, stop)
            except ValueError as exc:
                # llama-cpp-python's "Requested tokens (N) exceed context window of M", bad text and the
                # like: this request cannot be served, the model itself is fine.
                too_long = "context" in str(exc)
                raise RequestError(
                    f"the model cannot take this prompt: {exc}", status=413 if too_long else 400
                ) from exc
            except UnicodeError as exc:
                raise RequestError(f"the model cannot take this text: {exc}") from exc

    def _generate(self, request: GenerationRequest, stop: threading.Event) -> Iterator[str]:
        common: dict[str, Any] = {**sampling(request), "stream": True}
        if self.has_chat_template:
            chunks = self._llm.create_chat_completion(messages=[m.as_dict() for m in request.chat], **common)
            for chunk in chunks:
                if stop.is_set():
                    break
                text = chunk["choices"][0]["delta"].get("content")
                if text:
                    yield text
        else:
            common["stop"] = [*TRANSCRIPT_STOP, *request.stop]
            chunks = self._llm.create_completion(prompt=transcript(request.chat), **common)
            for chunk in chunks:
                if stop.is_set():
                    break
                text = chunk["choices"][0]["text"]
                if text:
                    yield text
        # Closing the generator ends llama.cpp's loop now rather than at garbage collection.
        chunks.close()

    def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        return iterate_in_thread(lambda stop: self._pieces(request, stop))

    async def aclose(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None


SPEC = BackendSpec(
    name="llamacpp",
    settings=LlamaCppSettings,
    create=LlamaCppBackend,
    summary="llama-cpp-python in the miner, on CPU or GPU (n_gpu_layers): one generation at a time",
    model_settings=("model_path",),
    gpu_settings=("n_gpu_layers",),
    memory=Memory.gguf,
    model_name=lambda group: group.model_path.stem if group.model_path else "",
)
