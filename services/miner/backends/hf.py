"""HuggingFace transformers: ``generate`` in a worker thread, text through a queue to the event loop.

``TextIteratorStreamer`` is the per-request queue between ``generate`` (its own thread) and the reader
(:func:`iterate_in_thread`'s thread); a stopping criterion watches the stop flag, so a deadline or a
disconnect ends ``generate`` at the next token and nothing of one request leaks into the next.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from services.miner.backends.base import GenerationRequest, iterate_in_thread
from services.miner.backends.spec import BackendSpec, Memory
from services.miner.chat import TRANSCRIPT_STOP, ChatMessage, transcript
from services.miner.errors import BackendError, ConfigError
from services.miner.groups import SettingsGroup


class HFSettings(SettingsGroup):
    """HuggingFace transformers: generation in a worker thread feeding an async queue."""

    model: str | None = Field(None, description="A local model directory (or a hub id when online).")
    gguf_file: str | None = Field(None, description="Load this GGUF file from the model directory.")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, ...")
    torch_dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "float32", description="Weights dtype."
    )
    n_threads: int | None = Field(None, ge=1, description="torch intra-op threads.")


class HFBackend:
    name = "hf"
    # One model.generate at a time (batching concurrent requests is a server's job).
    default_concurrency = 1
    max_concurrency: int | None = 1
    server_load = None  # the model is this miner's own

    def __init__(self, settings: HFSettings) -> None:
        self.settings = settings
        self._model: Any = None
        self._tokenizer: Any = None

    def load(self) -> None:
        source = self.settings.model
        if not source:
            raise ConfigError("MINER_HF__MODEL: not set (a local model directory)")
        if (source.startswith((".", "/", "~")) or self.settings.gguf_file) and not Path(
            source
        ).expanduser().exists():
            raise ConfigError(f"MINER_HF__MODEL: model directory not found: {source}")
        try:
            # torch and transformers take seconds to import: only a miner of this backend pays.
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ConfigError(
                f"MINER_BACKEND=hf: transformers/torch are not installed ({exc}); use the miner-hf image"
            ) from exc
        if self.settings.n_threads:
            torch.set_num_threads(self.settings.n_threads)
        kwargs: dict[str, Any] = {}
        if self.settings.gguf_file:
            kwargs["gguf_file"] = self.settings.gguf_file
        dtype = self.settings.torch_dtype
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(Path(source).expanduser()), **kwargs)
            loader: Any = AutoModelForCausalLM
            self._model = loader.from_pretrained(
                str(Path(source).expanduser()),
                dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                **kwargs,
            ).to(self.settings.device)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"MINER_HF__MODEL: cannot load {source}: {exc}") from exc
        self._model.eval()

    def warmup(self) -> None:
        """Two tokens through generate, so the first real request runs at normal speed."""
        stop = threading.Event()
        request = GenerationRequest(chat=[ChatMessage("user", "Hello")], max_tokens=2, temperature=0.0)
        for piece in self._pieces(request, stop):
            del piece

    def _prompt(self, chat: list[ChatMessage]) -> str:
        if getattr(self._tokenizer, "chat_template", None):
            text: str = self._tokenizer.apply_chat_template(
                [m.as_dict() for m in chat], tokenize=False, add_generation_prompt=True
            )
            return text
        return transcript(chat)

    def prompt_tokens(self, chat: list[ChatMessage]) -> int | None:
        return len(self._tokenizer(self._prompt(chat))["input_ids"])

    def token_budget(self, max_tokens: int) -> int | None:
        limit = getattr(self._model.config, "max_position_embeddings", None) if self._model else None
        return max(1, int(limit) - max_tokens) if limit else None

    def _pieces(self, request: GenerationRequest, stop: threading.Event) -> Iterator[str]:
        streamer, worker, failure = self._start(request, stop)
        try:
            yield from _until_marker(streamer, stop)
        finally:
            stop.set()
            worker.join()
        if failure:
            raise BackendError(f"transformers generate failed: {failure[0]}") from failure[0]

    def _start(
        self, request: GenerationRequest, stop: threading.Event
    ) -> tuple[Iterable[str], threading.Thread, list[BaseException]]:
        """Start ``generate`` in a worker thread: its streamer, the thread, and where its error goes."""
        # torch and transformers take seconds to import: only a miner of this backend pays, at load().
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        class _StopFlag(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return stop.is_set()

        inputs = self._tokenizer(self._prompt(request.chat), return_tensors="pt").to(self.settings.device)
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []
        sampling = _sampling(request)
        if request.seed is not None:
            torch.manual_seed(request.seed)

        def generate() -> None:
            try:
                with torch.inference_mode():
                    self._model.generate(
                        **inputs,
                        streamer=streamer,
                        max_new_tokens=request.max_tokens,
                        stopping_criteria=StoppingCriteriaList([_StopFlag()]),
                        stop_strings=list(TRANSCRIPT_STOP),
                        tokenizer=self._tokenizer,
                        pad_token_id=self._tokenizer.eos_token_id,
                        **sampling,
                    )
            except BaseException as exc:
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=generate, name="hf-generate", daemon=True)
        worker.start()
        return streamer, worker, failure

    def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        return iterate_in_thread(lambda stop: self._pieces(request, stop))

    async def aclose(self) -> None:
        self._model = None
        self._tokenizer = None


def _sampling(request: GenerationRequest) -> dict[str, Any]:
    """``generate``'s sampling arguments: greedy at temperature 0."""
    sampling: dict[str, Any] = {"do_sample": False}
    if request.temperature > 0:
        sampling = {"do_sample": True, "temperature": request.temperature}
        if request.top_p is not None:
            sampling["top_p"] = request.top_p
    return sampling


def _until_marker(texts: Iterable[str], stop: threading.Event) -> Iterator[str]:
    """The streamer's text up to the first transcript stop marker (which sets ``stop``).

    Text that could be the start of a marker is held back, up to its last newline, and cut at a full one.
    """
    held = ""
    for text in texts:
        if stop.is_set():
            break
        held += text
        cut = min((i for i in (held.find(s) for s in TRANSCRIPT_STOP) if i >= 0), default=-1)
        if cut >= 0:
            if held[:cut]:
                yield held[:cut]
            held = ""
            stop.set()
            break
        if "\n" in held:
            keep = held.rfind("\n")
            if held[:keep]:
                yield held[:keep]
            held = held[keep:]
        else:
            yield held
            held = ""
    if held and not stop.is_set():
        yield held


SPEC = BackendSpec(
    name="hf",
    settings=HFSettings,
    create=HFBackend,
    summary="transformers in the miner (CPU torch): one generation at a time",
    image="hf",
    image_target="miner-hf",
    gpu_image=None,  # the hf image carries CPU torch
    model_settings=("model", "gguf_file"),
    gpu_settings=("device",),
    memory=Memory.torch,
    model_name=lambda group: Path(group.model).name if group.model else "",
)
