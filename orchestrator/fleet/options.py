"""What a miner entry (and ``defaults``) may set: derived from the miner's own settings.

``services.miner.settings.MinerSettings`` is the one declaration of a miner's settings, and each backend
is described once beside its code (``services.miner.backends.*.SPEC``). The options here are built from
them at import time: every setting the fleet does not decide itself, with the same type, bounds and
description, optional (unset = inherit from ``defaults``, else the miner's own default). Adding a miner
setting is one edit, in ``MinerSettings``; it is then settable from ``miners.yaml`` and rendered into the
miner's environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from orchestrator.fleet.sections import KEY_NAME_PATTERN, MINER_NAME_PATTERN, ImageName, Resources, _Strict
from orchestrator.policy import RestartPolicy
from services.miner.backends import SPECS
from services.miner.backends.spec import BackendSpec
from services.miner.settings import (
    BACKEND_CHOICES,
    PROTOCOL_CHOICES,
    BackendName,
    MinerSettings,
    ProtocolName,
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
    return _strict_model(name, f"{spec.name}: {spec.summary}.", fields)


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
    "backend": (BackendName | None, Field(None, description=BACKEND_CHOICES)),
    "protocols": (
        list[ProtocolName] | None,
        Field(None, min_length=1, description=PROTOCOL_CHOICES),
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
    "node": (str | None, Field(None, description="Swarm: the node (a name under `nodes:`) it runs on.")),
    "node_labels": (
        dict[str, str] | None,
        Field(None, description="Swarm: run on any node with these labels (instead of `node:`)."),
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
        node: str | None = None
        node_labels: dict[str, str] | None = None

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
