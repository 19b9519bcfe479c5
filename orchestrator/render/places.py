"""Where the fleet's things are, seen from one side: inside a container, or on the host.

A miner's env file carries *container* paths: the wallet folder is ``/wallets``, models are under
``/models``, a model server is ``http://<its service>:PORT/v1``. ``supervisord.conf`` (hosts without
docker) runs the same env file and overrides what differs with *host* paths, written relative to the
config file itself (``%(here)s``), so the file does not depend on where the project lives. Both views
are one :class:`Places`; everything rendered asks it instead of branching on "host or container".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from orchestrator.errors import EXIT_INVALID, PermanentError
from orchestrator.fleet.load import LoadedFleet, Miner, ModelServer
from services.miner import keys

CONTAINER_APP = "/app"  # WORKDIR of the images
CONTAINER_WALLETS = "/wallets"
CONTAINER_MODELS = "/models"
CONTAINER_EXTRA_MODELS = "/models-extra"  # models that live outside ./models, mounted one by one
CONTAINER_LLAMA_SERVER = "/usr/local/bin/llama-server"  # in the miner and miner-cuda images
HERE_ROOT = "%(here)s/../.."  # the project directory, seen from config/generated/supervisord.conf
DEFAULT_PYTHON = ".venv/bin/python"
DEFAULT_LLAMA_SERVER = "llama-server"  # on PATH; `bash scripts/llama-server.sh` prints a built one


class RenderError(PermanentError):
    """Something render needs is missing or unreadable (the fleet file itself was valid)."""

    exit_code = EXIT_INVALID


# --- paths as written in the fleet file ------------------------------------------------------------


def is_relative(written: str) -> bool:
    return not (written.startswith("~") or Path(written).is_absolute())


def _norm(written: str) -> str:
    """A relative path as written, normalised (``./wallets/`` -> ``wallets``)."""
    return PurePosixPath(os.path.normpath(written)).as_posix()


def escape_percent(text: str) -> str:
    return text.replace("%", "%%")


def compose_host_path(written: str) -> str:
    """A fleet-file path as a compose bind-mount source (relative to docker-compose.yml)."""
    if is_relative(written):
        return f"./{_norm(written)}"
    return str(Path(written).expanduser())


def supervisor_host_path(written: str) -> str:
    """A fleet-file path as supervisord.conf sees it (relative ones through %(here)s)."""
    if is_relative(written):
        return f"{HERE_ROOT}/{_norm(written)}"
    return escape_percent(str(Path(written).expanduser()))


def supervisor_program_path(program: str) -> str:
    """A program for supervisord: a bare name stays (PATH), a relative path is the project's."""
    if "/" in program and is_relative(program):
        return f"{HERE_ROOT}/{_norm(program)}"
    return escape_percent(program)


@dataclass(frozen=True)
class ModelPlace:
    """Where a named model is, in the container and on the host."""

    container: str
    host: str  # supervisord form
    mount: str | None  # an extra compose volume when the model is outside ./models

    @property
    def volume(self) -> str:
        return self.mount or f"./models:{CONTAINER_MODELS}:ro"


def model_place(loaded: LoadedFleet, name: str) -> ModelPlace:
    written = loaded.fleet.models[name].relative_path
    if is_relative(written):
        parts = PurePosixPath(_norm(written)).parts
        if len(parts) > 1 and parts[0] == "models":
            return ModelPlace(
                f"{CONTAINER_MODELS}/{'/'.join(parts[1:])}", supervisor_host_path(written), None
            )
    container = f"{CONTAINER_EXTRA_MODELS}/{name}/{PurePosixPath(written).name}"
    return ModelPlace(
        container, supervisor_host_path(written), f"{compose_host_path(written)}:{container}:ro"
    )


# --- keys ------------------------------------------------------------------------------------------


def read_ss58(hotkey_file: Path) -> str:
    """The public ss58 address of a hotkey, read from its keyfile (or its ``<hotkey>pub.txt``)."""
    try:
        return keys.read_hotkey_ss58(hotkey_file)
    except keys.KeyUnreadable as exc:
        raise RenderError(
            f"cannot read the ss58 address of the hotkey {hotkey_file} (nor of its pub.txt): {exc}; "
            "create it with `python -m orchestrator wallets` (network local) or btcli"
        ) from exc


def probe_ss58(loaded: LoadedFleet) -> str:
    probe = loaded.fleet.probe
    return read_ss58(loaded.hotkey_file(probe.wallet, probe.hotkey))


def probe_pub(loaded: LoadedFleet) -> str:
    """The probe's public key file (``<hotkey>pub.txt``), relative to the wallet folder.

    Miners are given this *path* (MINER_ALLOWED_HOTKEY_FILES) rather than the address, so the rendered
    files do not depend on the keys of one machine and can be committed; the miner reads it at start-up.
    """
    probe = loaded.fleet.probe
    return str(keys.hotkey_pub_file(probe.wallet, probe.hotkey))


def miner_pub(miner: Miner) -> str:
    """A miner's public key file, relative to the wallet folder (mounted into the orchestrator)."""
    return str(keys.hotkey_pub_file(miner.wallet, miner.hotkey))


# --- one side ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Places:
    """The fleet seen from one side: in a container (compose) or on the host (supervisord)."""

    loaded: LoadedFleet
    host: bool
    python: str = "python"
    llama_server: str = CONTAINER_LLAMA_SERVER

    @classmethod
    def container(cls, loaded: LoadedFleet) -> Places:
        return cls(loaded, host=False)

    @classmethod
    def on_host(
        cls, loaded: LoadedFleet, python: str = DEFAULT_PYTHON, llama_server: str = DEFAULT_LLAMA_SERVER
    ) -> Places:
        return cls(
            loaded,
            host=True,
            python=supervisor_program_path(python),
            llama_server=supervisor_program_path(llama_server),
        )

    @property
    def wallets(self) -> str:
        return supervisor_host_path(self.loaded.fleet.wallet_path) if self.host else CONTAINER_WALLETS

    @property
    def bind(self) -> str:
        """The address a model server listens on: the host's loopback, or every interface of its
        container (published on the host's 127.0.0.1 only)."""
        return "127.0.0.1" if self.host else "0.0.0.0"

    def model(self, name: str) -> str:
        place = model_place(self.loaded, name)
        return place.host if self.host else place.container

    def server_url(self, server: ModelServer) -> str:
        """The OpenAI base URL of a model server, as its miners reach it."""
        address = "127.0.0.1" if self.host else server.service
        return f"http://{address}:{server.spec.port}/v1"

    def model_server(self, name: str) -> ModelServer:
        for server in self.loaded.model_servers:
            if server.name == name:
                return server
        raise KeyError(name)


# What every llama-server minerfleet starts gets, whatever its slots and model:
# - continuous batching (a slot's stream never waits for another's to end) and /metrics (the watch
#   reads its slots from it);
# - no SWA checkpoints. For a sliding-window model (Gemma 3) llama-server keeps up to 3 snapshots of a
#   slot's window per slot after the answer, each as big as the prompt's window (~15 KiB a token for
#   Gemma 3 270M), to reuse for a follow-up that repeats the prompt. Validators ask fresh questions, so
#   they are never reused, and they are memory that grows with the prompts until the container's limit
#   kills the server: on the shipped fleet, 32 slots asked 600-word questions went from 723 MiB to
#   1442 and then to an OOM kill at 1536 (docs/ARCHITECTURE.md, "Memory of a model server").
LLAMA_SERVER_FLAGS = ("--cont-batching", "--metrics", "--swa-checkpoints", "0")


def llama_server_args(places: Places, server: ModelServer) -> list[str]:
    """The llama-server command line of a model server (continuous batching over parallel slots)."""
    spec = server.spec
    args = [
        places.llama_server,
        "--model", places.model(spec.model),
        "--alias", spec.model,  # what /v1/models lists and what its miners send as the model name
        "--host", places.bind,
        "--port", str(spec.port),
        "--parallel", str(spec.slots),
        "--ctx-size", str(server.ctx_size),
    ]  # fmt: skip
    if spec.n_threads is not None:
        args += ["--threads", str(spec.n_threads)]
    args += LLAMA_SERVER_FLAGS
    if spec.n_gpu_layers:
        args += ["--n-gpu-layers", str(spec.n_gpu_layers)]
    return args
