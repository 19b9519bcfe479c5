"""One typed settings tree for a miner, loaded once in ``main()`` and passed down.

Every value comes from an environment variable with the ``MINER_`` prefix (nested groups with ``__``,
e.g. ``MINER_LLAMACPP__MODEL_PATH``) or from an env file given with ``--env-file``. Lists are JSON
(``MINER_PROTOCOLS='["prompting", "einstein"]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, create_model, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from services.miner import keys
from services.miner.backends import DEFAULT_BACKEND, SPECS, BackendName
from services.miner.errors import ConfigError
from services.miner.groups import SettingsGroup, listed_once
from services.miner.protocolspec import DEFAULT_PROTOCOLS, PROTOCOL_NAMES
from services.miner.signed import Scheme

ENV_PREFIX = "MINER_"
NESTED_DELIMITER = "__"
# Validators penalise bigger chunks: the streamer never sends more tokens than this at once.
MAX_STREAMING_BATCH_SIZE = 200


class Network(StrEnum):
    local = "local"
    test = "test"
    finney = "finney"


def _one_of(names: list[str]) -> str:
    """``a, b or c``."""
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


# "echo, llamacpp, hf or openai.": MINER_BACKEND's description, from the backends' specs.
BACKEND_CHOICES = _one_of([spec.name for spec in SPECS.values()]) + "."
# "Synapses served: prompting, einstein, text-prompting.": from the protocols' registry.
PROTOCOL_CHOICES = f"Synapses served: {', '.join(PROTOCOL_NAMES)}."
if TYPE_CHECKING:
    ProtocolName = str
else:
    ProtocolName = Literal[PROTOCOL_NAMES]  # MINER_PROTOCOLS' allowed values, one per ProtocolSpec
AuthScheme = Scheme  # the HTTP door's signature schemes, named in services.miner.signed


class LimitsSettings(SettingsGroup):
    """Bounds on what a request may ask, checked before anything reaches the model."""

    max_request_bytes: int = Field(
        1_000_000, ge=1024, description="Largest HTTP body accepted; bigger ones get 413 before parsing."
    )
    max_messages: int = Field(64, ge=1, description="Most chat messages in one request (else 413).")
    max_prompt_chars: int = Field(
        32_000, ge=1, description="Most characters over all messages of one request (else 413 or trim)."
    )
    max_prompt_tokens: int | None = Field(
        None,
        ge=1,
        description="Most prompt tokens (default: the model's context minus max_tokens; else 413 or trim).",
    )
    on_too_long: Literal["refuse", "trim"] = Field(
        "refuse",
        description="A prompt over the limits: refuse with 413, or trim (keep the system prompt and the "
        "newest messages that fit).",
    )


class HttpSettings(SettingsGroup):
    """The HTTP door: OpenAI chat completions over signed HTTP (Epistula v2, bittensor 11's btauth/1),
    served from the same backend, admission gate and limits as the axon (docs/ARCHITECTURE.md, "Doors")."""

    auth: list[AuthScheme] = Field(
        default_factory=list,
        description="Signatures accepted at the HTTP door: epistula (SN1's validators), btauth (bittensor "
        "11's http_auth); empty: no HTTP door.",
    )
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port of the HTTP door (default: the axon's own, where validators reading the chain's "
        "axon address call it).",
    )
    default_timeout: float = Field(
        12.0, gt=0, description="Seconds a request has when it sends no X-Client-Timeout."
    )
    max_timeout: float = Field(
        60.0, gt=0, description="Most seconds a request may ask for with X-Client-Timeout."
    )

    _unique_schemes = field_validator("auth")(lambda value: listed_once(value, "scheme"))


class _MinerSettings(BaseSettings):
    """Everything one miner needs but its backends' groups (added from their specs below)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    name: str = Field("miner", description="Name of this miner in logs and the fleet.")
    network: Network = Field(Network.local, description="local (no chain at all), test or finney.")
    netuid: int = Field(1, ge=0, description="Subnet id.")
    chain_endpoint: str | None = Field(None, description="Subtensor websocket endpoint (default: network's).")
    wallet_path: Path = Field(Path("~/.bittensor/wallets"), description="Folder holding the wallets.")
    wallet_name: str = Field("default", description="Wallet (coldkey) name.")
    wallet_hotkey: str = Field("default", description="Hotkey name inside the wallet.")
    axon_port: int = Field(8091, ge=1, le=65535, description="Port the axon binds to.")
    axon_external_port: int | None = Field(
        None, ge=1, le=65535, description="Port announced to the network (default: axon_port)."
    )
    protocols: list[ProtocolName] = Field(
        default_factory=lambda: list[ProtocolName](DEFAULT_PROTOCOLS),
        min_length=1,
        description="Synapses served, one route each.",
    )
    backend: BackendName = Field(BackendName(DEFAULT_BACKEND), description=BACKEND_CHOICES)
    allowed_hotkey_files: list[Path] = Field(
        default_factory=list,
        description="Public hotkey files (<hotkey>pub.txt) whose addresses are always allowed (the probe's).",
    )
    allowed_hotkeys: list[str] = Field(default_factory=list, description="ss58 hotkeys always allowed.")
    axon_ip: str = Field("0.0.0.0", description="Address the axon binds to.")
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port of the miner's Prometheus /metrics, bound to axon_ip (unset: no metrics server).",
    )
    axon_external_ip: str | None = Field(
        None, description="Address announced to the network (default: axon_ip on local, looked up otherwise)."
    )
    require_validator_permit: bool | None = Field(
        None,
        description="On a chain network, refuse hotkeys without a validator permit (default: yes on a "
        "chain, so other miners cannot take this one's slots; set false to open it to any registered "
        "hotkey).",
    )
    min_stake: float = Field(
        0.0,
        ge=0,
        description="On a chain network, refuse hotkeys with less stake on the subnet: the metagraph's "
        "`stake` (bittensor 10.5 neurons_lite), which under dynamic TAO is the subnet's alpha, not TAO.",
    )
    metagraph_sync_interval: float = Field(600.0, gt=0, description="Seconds between metagraph re-syncs.")
    streaming_batch_size: int = Field(
        12, ge=1, le=MAX_STREAMING_BATCH_SIZE, description="Tokens per chunk (<= 200)."
    )
    max_chunk_delay: float = Field(
        0.25, gt=0, description="No token waits longer than this in the buffer (s)."
    )
    first_chunk_delay: float = Field(
        0.05, ge=0, description="The first chunk goes out once its first token waited this long (s)."
    )
    deadline_margin: float = Field(
        0.3, ge=0, description="Flush and stop this many seconds before the request's timeout."
    )
    max_tokens: int = Field(256, ge=1, description="Most tokens generated per request.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature.")
    max_concurrency: int | None = Field(
        None,
        ge=1,
        description="Generations run at once (default: the backend's own: llamacpp and hf 1, echo 64, "
        "openai 4; for the fleet's model server, its slots shared among its miners).",
    )
    max_queue: int = Field(
        4, ge=0, description="Requests waiting beyond max_concurrency; past it they get 503 'busy' at once."
    )
    stop_on_forward_exception: bool = Field(
        False, description="Exit with code 75 after a backend error so a supervisor restarts the miner."
    )
    system_prompt: str = Field(
        "You are a helpful, concise assistant.", description="System prompt put before the chat."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    warmup: bool = Field(
        True, description="Run one short generation before the axon opens (first answers at full speed)."
    )
    max_connections: int = Field(
        256, ge=1, description="Most open HTTP connections and requests; past it new requests get 503."
    )
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds a new connection has to send a complete request before it is closed."
    )
    limits: LimitsSettings = Field(
        default_factory=LimitsSettings, description="Bounds on requests, checked before the model."
    )
    tasks: list[str] | None = Field(
        None,
        description="SN1 tasks this miner says it serves when asked (AvailabilitySynapse); default: all.",
    )
    model_names: list[str] = Field(
        default_factory=list,
        description="More names the model answers to (availability and target_model), beside its own.",
    )
    on_other_model: Literal["serve", "refuse"] = Field(
        "serve",
        description="A request whose target_model this miner does not serve: answer anyway, or refuse (400).",
    )
    http: HttpSettings = Field(
        default_factory=HttpSettings,
        description="The HTTP door (OpenAI chat completions over signed HTTP) beside the axon.",
    )
    _unique_protocols = field_validator("protocols")(lambda value: listed_once(value, "protocol"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Values come only from what load_settings() passes in: the environment it was given and the env
        # file. Reading os.environ behind the caller's back would make tests depend on the shell.
        return (init_settings,)

    @property
    def hotkey_file(self) -> Path:
        return self.wallet_path.expanduser() / keys.hotkey_file(self.wallet_name, self.wallet_hotkey)

    @property
    def permit_required(self) -> bool:
        """``require_validator_permit`` as set, else yes on a chain network (no chain: nothing to ask)."""
        if self.require_validator_permit is not None:
            return self.require_validator_permit
        return self.network is not Network.local

    @property
    def chain(self) -> str:
        """The chain the miner talks to: its endpoint, else the network's name (bittensor resolves it)."""
        return self.chain_endpoint or self.network.value


if TYPE_CHECKING:

    class MinerSettings(_MinerSettings):
        """(What mypy sees: the backends' groups are added from their specs at import time, and read
        by name, ``getattr(settings, spec.name)``.)"""

else:
    # One group per backend (MINER_<BACKEND>__<KEY>), last, in the order of the backends' specs.
    MinerSettings = create_model(
        "MinerSettings",
        __base__=_MinerSettings,
        __module__=__name__,
        __doc__="Everything one miner needs. Loaded once in ``main()``.",
        **{
            spec.name: (
                spec.settings,
                Field(default_factory=spec.settings, description=f"{spec.name} backend options."),
            )
            for spec in SPECS.values()
        },
    )


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``KEY=value`` env file (comments, blank lines, optional quotes, ``export``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from exc
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{lineno}: expected KEY=value, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _nest(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``MINER_*`` variables into the nested dict the model validates (JSON for lists)."""
    fields = MinerSettings.model_fields
    data: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.upper().startswith(ENV_PREFIX):
            continue
        path = key[len(ENV_PREFIX) :].lower().split(NESTED_DELIMITER)
        top = path[0]
        if top not in fields:
            raise ConfigError(f"{key}: unknown setting (see `python -m services.miner --help`)")
        if len(path) == 1:
            annotation = str(fields[top].annotation)
            if annotation.startswith("list"):
                try:
                    data[top] = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ConfigError(
                        f'{key}: expected a JSON list such as ["a", "b"], got {value!r}'
                    ) from exc
            else:
                data[top] = value
        else:
            data.setdefault(top, {})
            if not isinstance(data[top], dict):
                raise ConfigError(f"{key}: {ENV_PREFIX}{top.upper()} is a group, not a value")
            name = NESTED_DELIMITER.join(path[1:])
            group = fields[top].annotation
            inner = getattr(group, "model_fields", {}).get(name)
            if inner is not None and str(inner.annotation).startswith("list"):
                try:
                    data[top][name] = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ConfigError(
                        f'{key}: expected a JSON list such as ["a", "b"], got {value!r}'
                    ) from exc
            else:
                data[top][name] = value
    return data


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> MinerSettings:
    """Build the settings from an environment (default ``os.environ``) and an optional env file.

    The environment wins over the file. Any bad value raises :class:`ConfigError` with one line naming
    the variable, what was wrong and the value expected.
    """
    merged: dict[str, str] = {}
    if env_file is not None:
        merged.update(read_env_file(env_file))
    merged.update(os.environ if environ is None else environ)
    data = _nest(merged)
    try:
        return MinerSettings(**data)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from exc


# The settings that are groups (MINER_<GROUP>__<KEY>), from the one declaration.
_GROUPS = frozenset(
    name
    for name, info in MinerSettings.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
)


def _first_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        # pydantic puts list indexes and union branches in loc; the variable is the first one or two parts.
        group = loc[0] if loc else ""
        var = ENV_PREFIX + group.upper()
        if len(loc) > 1 and group in _GROUPS:
            var += NESTED_DELIMITER + loc[1].upper()
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        # An unknown name's value helps nobody, and a mistyped key name (MINER_OPENAI__APIKEY) must
        # not print the secret it carries.
        if isinstance(value, SecretStr) or "api_key" in var.lower() or err["type"] == "extra_forbidden":
            shown = ""
        lines.append(f"{var}: {err['msg']}{shown}")
    return "; ".join(lines)


def describe_settings() -> str:
    """The ``--help`` text: every variable, its default and its description."""
    out = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name.upper()}{NESTED_DELIMITER}")
                continue
            default = field.get_default(call_default_factory=True)
            if isinstance(default, SecretStr):
                default = "***"
            shown = default.value if isinstance(default, StrEnum) else default
            out.append(f"  {prefix}{name.upper():<34} {field.description or ''} [default: {shown}]")

    walk(MinerSettings, ENV_PREFIX)
    return "\n".join(out)
