"""A miner and a model server as the rest of the orchestrator sees them: ``defaults`` merged in and every
derived value (port, image, GPUs, model, model server, restart policy) decided by the checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.fleet.options import MinerOptions
from orchestrator.fleet.sections import (
    ImageName,
    ModelServerSpec,
)
from orchestrator.placement import Placement
from orchestrator.policy import RestartPolicy
from services.miner.settings import BackendName

LEGACY_MODEL_SERVER = "model-server"  # the name of the older single `model_server:`


@dataclass(frozen=True)
class ModelServer:
    """One model server (llama-server) with everything derived from it decided."""

    name: str  # its key under `model_servers:` (the older `model_server:` is "model-server")
    service: str  # compose service and supervisord program: model-server (legacy/only one), model-server-NAME
    spec: ModelServerSpec
    image: ImageName
    ctx_per_slot: int
    users: tuple[str, ...] = ()  # the miners that use it, in file order
    at: tuple[str, ...] = ("model_server",)  # where it is written in the fleet file
    placement: Placement = field(default_factory=Placement)  # swarm: the nodes it may run on

    @property
    def ctx_size(self) -> int:
        """The server's whole context (``--ctx-size``): every slot's."""
        return self.spec.slots * self.ctx_per_slot


@dataclass(frozen=True)
class Miner:
    """One miner with ``defaults`` merged in and every derived value decided."""

    index: int  # position in `miners:` (port_base + index is its default port)
    name: str
    wallet: str
    hotkey: str
    axon_port: int
    axon_external_port: int | None
    backend: BackendName
    protocols: tuple[str, ...]
    image: ImageName
    gpus: tuple[int, ...]
    model: str | None  # the named model a llamacpp/hf miner loads
    model_server: str | None  # the model server an openai miner uses (its name)
    options: MinerOptions  # defaults and the miner's own values, merged (groups merged key by key)
    restart: RestartPolicy
    placement: Placement = field(default_factory=Placement)  # swarm: the nodes it may run on
    metrics_port: int | None = None  # its Prometheus /metrics (None: no metrics server)

    @property
    def uses_model_server(self) -> bool:
        return self.model_server is not None

    @property
    def http_auth(self) -> tuple[str, ...]:
        """The signatures its HTTP door takes (empty: no HTTP door)."""
        door = self.options.http
        return tuple(door.auth or ()) if door is not None else ()

    @property
    def http_port(self) -> int | None:
        """Where its HTTP door listens: ``http.port``, else the axon's own port (None: no door)."""
        if not self.http_auth:
            return None
        return self.options.http.port or self.axon_port

    @property
    def own_ports(self) -> tuple[int, ...]:
        """The ports it publishes: the axon's, and its HTTP door's when that has a port of its own."""
        door = self.http_port
        return (self.axon_port,) if door in (None, self.axon_port) else (self.axon_port, door)


def resolve_path(project_dir: Path, written: str) -> Path:
    """A path from the fleet file: ``~`` expanded, relative ones taken from the project directory."""
    path = Path(written).expanduser()
    return path if path.is_absolute() else project_dir / path


def display(project_dir: Path, path: Path) -> str:
    """``path`` relative to the project directory when it is inside it, else as it is."""
    try:
        return path.resolve().relative_to(project_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


_KEY_PREFIXES = ("sk-", "sk_", "pk-", "rk-", "hf_", "gsk_", "xai-", "AIza", "ghp_", "github_pat_")


def looks_like_secret(value: str) -> bool:
    """Whether a supposed variable *name* looks like a credential itself."""
    if value.startswith(_KEY_PREFIXES):
        return True
    # Variable names are short UPPER_CASE words; long mixed-case strings with digits are keys.
    return len(value) >= 24 and any(c.isdigit() for c in value) and any(c.islower() for c in value)
