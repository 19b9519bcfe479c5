"""Render the fleet into the files that run it: per-miner env files, docker-compose.yml, supervisord.conf.

Deterministic: the same fleet file (and the same probe hotkey) gives the same bytes, with no absolute
path of the machine in them unless the fleet file itself has one.

The path scheme. A miner's env file (``config/generated/<name>.env``, ``MINER_*`` variables, the miner
service's settings contract) carries *container* paths: the wallet folder is ``/wallets``, models are
under ``/models``, the shared model server is ``http://model-server:PORT/v1``. Compose hands the env
file to the container as it is. ``supervisord.conf`` (for hosts without docker) runs the same env file
and overrides those few variables with *host* paths in the program's ``environment=``, written relative
to the config file itself (``%(here)s``), so the file does not depend on where the project lives.

Secrets are never written: a miner's ``api_key_env: NAME`` becomes ``MINER_OPENAI__API_KEY=${NAME}``
(compose interpolates it from the environment or ``.env`` at ``up``), and on the host a ``/bin/sh``
wrapper copies ``$NAME`` into the variable before ``exec``-ing the miner. Miners get only their own
hotkey file and their wallet's ``coldkeypub.txt``, read-only; no coldkey is ever mounted.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel

from orchestrator.fleet import PASS_THROUGH, ImageName
from orchestrator.fleetfile import LoadedFleet, Miner, display
from services.miner.settings import BackendName

GENERATED_DIR = Path("config/generated")
COMPOSE_FILE = Path("docker-compose.yml")
SUPERVISOR_FILE = GENERATED_DIR / "supervisord.conf"
RUN_DIR = Path(".run/supervisor")  # supervisord's logs and pid, git-ignored
DEFAULT_PYTHON = ".venv/bin/python"

CONTAINER_APP = "/app"  # WORKDIR of the images
CONTAINER_WALLETS = "/wallets"
CONTAINER_MODELS = "/models"
CONTAINER_EXTRA_MODELS = "/models-extra"  # models that live outside ./models, mounted one by one
MODEL_SERVER = "model-server"
ORCHESTRATOR = "orchestrator"
INIT = "init"
# Everything else starts once `init` has provided the local keys and the bundled model: containers are
# created only then, so docker never meets a missing key file (it would leave an empty directory there).
AFTER_INIT = {INIT: {"condition": "service_completed_successfully"}}

TARGETS = {ImageName.cpu: "miner", ImageName.cuda: "miner-cuda", ImageName.hf: "miner-hf"}
HERE_ROOT = "%(here)s/../.."  # the project directory, seen from config/generated/supervisord.conf

_HASH_RE = re.compile(r"sha256:([0-9a-f]{64})")


class RenderError(Exception):
    """Something render needs is missing or unreadable (the fleet file itself was valid)."""


# --- paths -----------------------------------------------------------------------------------------


def _is_relative(written: str) -> bool:
    return not (written.startswith("~") or Path(written).is_absolute())


def _norm(written: str) -> str:
    """A relative path as written, normalised (``./wallets/`` -> ``wallets``)."""
    return PurePosixPath(os.path.normpath(written)).as_posix()


def compose_host_path(written: str) -> str:
    """A fleet-file path as a compose bind-mount source (relative to docker-compose.yml)."""
    if _is_relative(written):
        return f"./{_norm(written)}"
    return str(Path(written).expanduser())


def supervisor_host_path(written: str) -> str:
    """A fleet-file path as supervisord.conf sees it (relative ones through %(here)s)."""
    if _is_relative(written):
        return f"{HERE_ROOT}/{_norm(written)}"
    return _escape_percent(str(Path(written).expanduser()))


def _escape_percent(text: str) -> str:
    return text.replace("%", "%%")


@dataclass(frozen=True)
class ModelPlace:
    """Where a named model is, in the container and on the host."""

    container: str
    host: str  # supervisord form
    mount: str | None  # an extra compose volume when the model is outside ./models


def model_place(loaded: LoadedFleet, name: str) -> ModelPlace:
    written = loaded.fleet.models[name].relative_path
    if _is_relative(written):
        parts = PurePosixPath(_norm(written)).parts
        if len(parts) > 1 and parts[0] == "models":
            return ModelPlace(
                f"{CONTAINER_MODELS}/{'/'.join(parts[1:])}", supervisor_host_path(written), None
            )
    container = f"{CONTAINER_EXTRA_MODELS}/{name}/{PurePosixPath(written).name}"
    return ModelPlace(
        container, supervisor_host_path(written), f"{compose_host_path(written)}:{container}:ro"
    )


# --- the probe hotkey ------------------------------------------------------------------------------


def read_ss58(hotkey_file: Path) -> str:
    """The public ss58 address of a hotkey, read from its keyfile (or its ``<hotkey>pub.txt``).

    Reads only the public part; an encrypted hotkey still has its ``pub.txt`` next to it.
    """
    for path in (hotkey_file, hotkey_file.with_name(hotkey_file.name + "pub.txt")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("ss58Address"), str):
            return str(data["ss58Address"])
    raise RenderError(
        f"cannot read the ss58 address of the hotkey {hotkey_file} (nor of its pub.txt): "
        "create it with `python -m orchestrator wallets` (network local) or btcli"
    )


def probe_ss58(loaded: LoadedFleet) -> str:
    probe = loaded.fleet.probe
    return read_ss58(loaded.hotkey_file(probe.wallet, probe.hotkey))


def probe_pub(loaded: LoadedFleet) -> str:
    """The probe's public key file (``<hotkey>pub.txt``), relative to the wallet folder.

    Miners are given this *path* (MINER_ALLOWED_HOTKEY_FILES) rather than the address, so the rendered
    files do not depend on the keys of one machine and can be committed; the miner reads it at start-up.
    """
    probe = loaded.fleet.probe
    return f"{probe.wallet}/hotkeys/{probe.hotkey}pub.txt"


def miner_pub(miner: Miner) -> str:
    """A miner's public key file, relative to the wallet folder (mounted into the orchestrator)."""
    return f"{miner.wallet}/hotkeys/{miner.hotkey}pub.txt"


# --- env files -------------------------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return json.dumps(list(value))
    if hasattr(value, "value"):  # enums
        return str(value.value)
    return str(value)


def _group(prefix: str, options: BaseModel | None, skip: Iterable[str] = ()) -> list[tuple[str, str]]:
    if options is None:
        return []
    return [
        (f"MINER_{prefix}__{key.upper()}", _value(value))
        for key, value in options.model_dump(exclude_none=True).items()
        if key not in skip
    ]


def model_server_url(loaded: LoadedFleet, *, host: bool) -> str:
    server = loaded.fleet.model_server
    assert server is not None
    return f"http://{'127.0.0.1' if host else MODEL_SERVER}:{server.port}/v1"


def env_entries(loaded: LoadedFleet, miner: Miner) -> list[tuple[str, str]]:
    """The miner's ``MINER_*`` settings (container view), in a fixed order."""
    fleet = loaded.fleet
    options = miner.options
    entries = [
        ("MINER_NAME", miner.name),
        ("MINER_NETWORK", fleet.network.value),
        ("MINER_NETUID", str(fleet.netuid)),
    ]
    if fleet.chain_endpoint:
        entries.append(("MINER_CHAIN_ENDPOINT", fleet.chain_endpoint))
    entries += [
        ("MINER_WALLET_PATH", CONTAINER_WALLETS),
        ("MINER_WALLET_NAME", miner.wallet),
        ("MINER_WALLET_HOTKEY", miner.hotkey),
        ("MINER_AXON_IP", options.axon_ip or "0.0.0.0"),
        ("MINER_AXON_PORT", str(miner.axon_port)),
    ]
    if miner.axon_external_port is not None:
        entries.append(("MINER_AXON_EXTERNAL_PORT", str(miner.axon_external_port)))
    entries += [
        ("MINER_PROTOCOLS", _value(miner.protocols)),
        ("MINER_BACKEND", miner.backend.value),
        ("MINER_ALLOWED_HOTKEY_FILES", _value([f"{CONTAINER_WALLETS}/{probe_pub(loaded)}"])),
    ]
    if options.allowed_hotkeys:
        entries.append(("MINER_ALLOWED_HOTKEYS", _value(list(dict.fromkeys(options.allowed_hotkeys)))))
    for key in PASS_THROUGH:
        value = getattr(options, key)
        if value is not None:
            entries.append((f"MINER_{key.upper()}", _value(value)))

    if miner.backend == BackendName.echo:
        entries += _group("ECHO", options.echo)
    elif miner.backend == BackendName.llamacpp:
        assert miner.model is not None
        entries.append(("MINER_LLAMACPP__MODEL_PATH", model_place(loaded, miner.model).container))
        entries += _group("LLAMACPP", options.llamacpp, skip={"model"})
    elif miner.backend == BackendName.hf:
        assert miner.model is not None
        place = PurePosixPath(model_place(loaded, miner.model).container)
        if place.suffix == ".gguf":
            entries += [("MINER_HF__MODEL", str(place.parent)), ("MINER_HF__GGUF_FILE", place.name)]
        else:
            entries.append(("MINER_HF__MODEL", str(place)))
        entries += _group("HF", options.hf, skip={"model"})
    elif miner.backend == BackendName.openai:
        openai = options.openai
        assert openai is not None
        if miner.uses_model_server:
            assert loaded.fleet.model_server is not None
            entries.append(("MINER_OPENAI__BASE_URL", model_server_url(loaded, host=False)))
            entries.append(("MINER_OPENAI__MODEL", openai.model or loaded.fleet.model_server.model))
        else:
            entries.append(("MINER_OPENAI__BASE_URL", str(openai.base_url)))
            if openai.model is not None:
                entries.append(("MINER_OPENAI__MODEL", openai.model))
        entries += _group("OPENAI", openai, skip={"model_server", "base_url", "model", "api_key_env"})
    return entries


def host_overrides(loaded: LoadedFleet, miner: Miner) -> list[tuple[str, str]]:
    """The variables whose host value differs from the container one (supervisord form)."""
    wallet = supervisor_host_path(loaded.fleet.wallet_path)
    out = [
        ("MINER_WALLET_PATH", wallet),
        ("MINER_ALLOWED_HOTKEY_FILES", _value([f"{wallet}/{probe_pub(loaded)}"])),
    ]
    if miner.backend == BackendName.llamacpp and miner.model is not None:
        out.append(("MINER_LLAMACPP__MODEL_PATH", model_place(loaded, miner.model).host))
    elif miner.backend == BackendName.hf and miner.model is not None:
        host = model_place(loaded, miner.model).host
        if host.endswith(".gguf"):
            out.append(("MINER_HF__MODEL", host.rsplit("/", 1)[0]))
        else:
            out.append(("MINER_HF__MODEL", host))
    elif miner.uses_model_server:
        out.append(("MINER_OPENAI__BASE_URL", model_server_url(loaded, host=True)))
    if miner.gpus:
        out.append(("CUDA_VISIBLE_DEVICES", ",".join(str(g) for g in miner.gpus)))
    return out


def secret_env(miner: Miner) -> list[tuple[str, str]]:
    """(miner variable, name of the host variable holding the secret) pairs."""
    openai = miner.options.openai
    if miner.backend == BackendName.openai and openai is not None and openai.api_key_env:
        return [("MINER_OPENAI__API_KEY", openai.api_key_env)]
    return []


def _header(loaded: LoadedFleet, comment: str) -> str:
    return (
        f"{comment} Generated from {loaded.display_path} by `python -m orchestrator render`; do not edit "
        f"(edit {loaded.display_path} and render again). sha256:{loaded.sha256}\n"
    )


def render_env_file(loaded: LoadedFleet, miner: Miner) -> str:
    lines = [
        _header(loaded, "#").rstrip("\n"),
        "# Container paths (/wallets, /models); supervisord.conf overrides them with host paths.",
    ]
    for name, _ in secret_env(miner):
        lines.append(f"# {name} is passed through from the environment, never written here.")
    lines += [f"{key}={value}" for key, value in env_entries(loaded, miner)]
    return "\n".join(lines) + "\n"


# --- docker-compose.yml ----------------------------------------------------------------------------


def _deploy_gpus(gpus: tuple[int, ...] | list[int]) -> dict[str, Any]:
    return {
        "resources": {
            "reservations": {
                "devices": [
                    {"driver": "nvidia", "device_ids": [str(g) for g in gpus], "capabilities": ["gpu"]}
                ]
            }
        }
    }


def _build(target: str) -> dict[str, Any]:
    # BASE_IMAGE: a registry's Debian by default; offline hosts pass the debootstrap-built one
    # (`make images` does, or `MINERFLEET_BASE_IMAGE=$(scripts/images.sh --base) docker compose build`).
    return {
        "context": ".",
        "dockerfile": "Dockerfile",
        "target": target,
        "args": {"BASE_IMAGE": "${MINERFLEET_BASE_IMAGE:-debian:bookworm-slim}"},
    }


# Containers never run as root. The hotkeys they read are owned by this uid (`wallets` sees to it on
# network local); `make` sets it to the operator's own uid, or 1000 when run as root.
CONTAINER_USER = "${MINERFLEET_UID:-1000}:${MINERFLEET_GID:-1000}"


def _labels(loaded: LoadedFleet, role: str, miner: str | None = None) -> dict[str, str]:
    labels = {"minerfleet.project": loaded.fleet.project, "minerfleet.role": role}
    if miner is not None:
        labels["minerfleet.miner"] = miner
    return labels


def _miner_service(loaded: LoadedFleet, miner: Miner) -> dict[str, Any]:
    wallet = loaded.fleet.wallet_path
    hotkey = f"{miner.wallet}/hotkeys/{miner.hotkey}"
    coldkeypub = f"{miner.wallet}/coldkeypub.txt"
    volumes = [
        f"{compose_host_path(f'{wallet}/{hotkey}')}:{CONTAINER_WALLETS}/{hotkey}:ro",
        f"{compose_host_path(f'{wallet}/{coldkeypub}')}:{CONTAINER_WALLETS}/{coldkeypub}:ro",
        f"{compose_host_path(f'{wallet}/{probe_pub(loaded)}')}:{CONTAINER_WALLETS}/{probe_pub(loaded)}:ro",
    ]
    if miner.model is not None:
        place = model_place(loaded, miner.model)
        volumes.append(place.mount or f"./models:{CONTAINER_MODELS}:ro")
    service: dict[str, Any] = {
        "build": _build(TARGETS[miner.image]),
        "image": f"minerfleet/miner:{miner.image.value}",
        "command": ["python", "-m", "services.miner"],
        "user": CONTAINER_USER,
        "env_file": [(GENERATED_DIR / f"{miner.name}.env").as_posix()],
    }
    secrets = secret_env(miner)
    if secrets:
        service["environment"] = {name: f"${{{source}}}" for name, source in secrets}
    service.update(
        {
            "ports": [f"{miner.axon_port}:{miner.axon_port}"],
            "volumes": volumes,
            "labels": _labels(loaded, "miner", miner.name),
            "restart": "no",  # the orchestrator decides (exit codes, backoff, crash loops)
            "stop_signal": "SIGTERM",
            "stop_grace_period": "20s",
        }
    )
    service["depends_on"] = dict(AFTER_INIT)
    if miner.uses_model_server:
        service["depends_on"][MODEL_SERVER] = {"condition": "service_started"}
    if miner.gpus:
        service["deploy"] = _deploy_gpus(miner.gpus)
    return service


def _model_server_args(loaded: LoadedFleet, *, host: bool) -> list[str]:
    server = loaded.fleet.model_server
    assert server is not None
    place = model_place(loaded, server.model)
    args = [
        "--model", place.host if host else place.container,
        "--model_alias", server.model,
        "--host", "127.0.0.1" if host else "0.0.0.0",
        "--port", str(server.port),
        "--n_ctx", str(server.n_ctx),
    ]  # fmt: skip
    if server.n_threads is not None:
        args += ["--n_threads", str(server.n_threads)]
    if server.n_gpu_layers:
        args += ["--n_gpu_layers", str(server.n_gpu_layers)]
    return args


def _model_server_service(loaded: LoadedFleet) -> dict[str, Any]:
    server = loaded.fleet.model_server
    assert server is not None and loaded.model_server_image is not None
    image = loaded.model_server_image
    place = model_place(loaded, server.model)
    service: dict[str, Any] = {
        "build": _build(TARGETS[image]),
        "image": f"minerfleet/miner:{image.value}",
        "command": ["python", "-m", "llama_cpp.server", *_model_server_args(loaded, host=False)],
        "ports": [f"127.0.0.1:{server.port}:{server.port}"],
        "volumes": [place.mount or f"./models:{CONTAINER_MODELS}:ro"],
        "labels": _labels(loaded, MODEL_SERVER),
        "restart": "unless-stopped",  # shared by several miners; nothing else restarts it
        "depends_on": dict(AFTER_INIT),
    }
    if server.gpus:
        service["deploy"] = _deploy_gpus(server.gpus)
    return service


def _orchestrator_service(loaded: LoadedFleet) -> dict[str, Any]:
    fleet = loaded.fleet
    config = loaded.display_path
    port = fleet.status_api.port
    probe_hotkey = f"{fleet.probe.wallet}/hotkeys/{fleet.probe.hotkey}"
    # The probe signs with its hotkey; the miners' addresses come from their public files (no secrets).
    keys = list(dict.fromkeys([probe_hotkey, *(miner_pub(miner) for miner in loaded.miners)]))
    return {
        "build": _build("orchestrator"),
        "image": "minerfleet/orchestrator",
        "command": ["python", "-m", "orchestrator", "watch", "--config", config],
        "user": CONTAINER_USER,
        # The docker socket's group, so a non-root orchestrator may use it (make sets it).
        "group_add": ["${MINERFLEET_DOCKER_GID:-0}"],
        "environment": {
            "MINERFLEET_RUNTIME": "docker",
            "MINERFLEET_WALLET_PATH": CONTAINER_WALLETS,
            "MINERFLEET_STATUS_HOST": "0.0.0.0",  # inside the container; published on 127.0.0.1 only
            "MINERFLEET_STATUS_PORT": str(port),  # for the image's HEALTHCHECK
        },
        "ports": [f"127.0.0.1:{port}:{port}"],
        "volumes": [
            "/var/run/docker.sock:/var/run/docker.sock",
            f"{compose_host_path(config)}:{CONTAINER_APP}/{config}:ro",
            f"./{GENERATED_DIR.as_posix()}:{CONTAINER_APP}/{GENERATED_DIR.as_posix()}:ro",
            f"./{COMPOSE_FILE.as_posix()}:{CONTAINER_APP}/{COMPOSE_FILE.as_posix()}:ro",
            *(f"{compose_host_path(f'{fleet.wallet_path}/{k}')}:{CONTAINER_WALLETS}/{k}:ro" for k in keys),
        ],
        "labels": _labels(loaded, ORCHESTRATOR),
        "restart": "unless-stopped",
        "depends_on": dict(AFTER_INIT),
    }


def _init_service(loaded: LoadedFleet) -> dict[str, Any]:
    """A one-shot: the local hotkeys and the bundled model, so `docker compose up` works after a clone.

    Root, because it writes into bind-mounted host folders that may not exist yet (docker makes them
    root-owned); it hands the keys to the containers' uid, as `python -m orchestrator wallets` does.
    """
    config = loaded.display_path
    return {
        "build": _build("orchestrator"),
        "image": "minerfleet/orchestrator",
        "command": ["python", "-m", "orchestrator", "init", "--config", config],
        "user": "0:0",
        "environment": {
            "MINERFLEET_WALLET_PATH": CONTAINER_WALLETS,
            "MINERFLEET_UID": "${MINERFLEET_UID:-1000}",
            "MINERFLEET_GID": "${MINERFLEET_GID:-1000}",
        },
        "volumes": [
            f"{compose_host_path(config)}:{CONTAINER_APP}/{config}:ro",
            f"{compose_host_path(loaded.fleet.wallet_path)}:{CONTAINER_WALLETS}",
            f"./models:{CONTAINER_APP}/models",
        ],
        "labels": _labels(loaded, INIT),
        "restart": "no",
        "healthcheck": {"disable": True},  # the image's check is the status API's, which init has not
    }


class _ComposeDumper(yaml.SafeDumper):
    """Block style, except short lists of plain values (ports, commands), which read better on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(isinstance(item, str | int | float) for item in data) and len(", ".join(map(str, data))) <= 80
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ComposeDumper.add_representer(list, _represent_list)


def _dump(mapping: dict[str, Any], indent: int) -> str:
    text = yaml.dump(
        mapping,
        Dumper=_ComposeDumper,
        sort_keys=False,
        default_flow_style=False,
        width=200,
        allow_unicode=True,
    )
    pad = " " * indent
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


def render_compose(loaded: LoadedFleet) -> str:
    """docker-compose.yml: one service per miner, the model server (if any) and the orchestrator.

    Compose Specification without a ``version:`` key: read by ``docker compose`` v2 and by
    ``docker-compose`` 1.29 (which also honours ``deploy.resources.reservations.devices``).
    """
    parts = [
        _header(loaded, "#"),
        '# Miners restart only through the orchestrator (restart: "no"); secrets come from the environment\n'
        "# or .env by name. Run: make up   (or: docker compose up -d / docker-compose up -d)\n",
        "services:\n",
        "  # one-shot, before everything else: creates missing local hotkeys, fetches the bundled model\n",
        _dump({INIT: _init_service(loaded)}, 2),
        "\n",
    ]
    if loaded.fleet.model_server is not None:
        model = loaded.fleet.model_server.model
        parts.append(f"  # the shared OpenAI-compatible server (llama_cpp.server on {model})\n")
        parts.append(_dump({MODEL_SERVER: _model_server_service(loaded)}, 2))
        parts.append("\n")
    for miner in loaded.miners:
        parts.append(f"  # miner {miner.name}: {miner.backend.value}, hotkey {miner.wallet}/{miner.hotkey}\n")
        parts.append(_dump({miner.name: _miner_service(loaded, miner)}, 2))
        parts.append("\n")
    parts.append("  # the watch loop and the status API; it reads the docker socket to start/stop miners\n")
    parts.append(_dump({ORCHESTRATOR: _orchestrator_service(loaded)}, 2))
    return "".join(parts)


def compose_hash(compose_file: Path) -> str | None:
    """The fleet-file hash recorded in a rendered docker-compose.yml (None if absent/not rendered)."""
    try:
        with compose_file.open(encoding="utf-8") as handle:
            first = handle.readline()
    except OSError:
        return None
    match = _HASH_RE.search(first)
    return match.group(1) if match else None


def compose_staleness(loaded: LoadedFleet) -> str | None:
    """A message when docker-compose.yml is missing or was rendered from another version of the fleet
    file; None when it is up to date."""
    compose = loaded.project_dir / COMPOSE_FILE
    if not compose.exists():
        return f"{COMPOSE_FILE} is not rendered yet: run `python -m orchestrator render` (or `make render`)"
    recorded = compose_hash(compose)
    if recorded != loaded.sha256:
        return (
            f"{COMPOSE_FILE} is STALE: {loaded.display_path} changed since it was rendered "
            f"(recorded sha256 {recorded or 'none'}, now {loaded.sha256}); run "
            "`python -m orchestrator render` (or `make render`) before `docker compose up`"
        )
    return None


# --- supervisord.conf ------------------------------------------------------------------------------


def _supervisor_env(pairs: list[tuple[str, str]]) -> str:
    # supervisord reads these like a POSIX shell: JSON values (double quotes inside) go in single quotes
    return ",".join(f"{key}='{value}'" if '"' in value else f'{key}="{value}"' for key, value in pairs)


def _python_path(python: str) -> str:
    if "/" in python and _is_relative(python):
        return f"{HERE_ROOT}/{_norm(python)}"
    return _escape_percent(python)


def _program(name: str, command: str, env: list[tuple[str, str]], *, miner: bool) -> str:
    run = f"{HERE_ROOT}/{RUN_DIR.as_posix()}"
    lines = [
        f"[program:{name}]",
        f"command={command}",
        f"directory={HERE_ROOT}",
    ]
    if env:
        lines.append(f"environment={_supervisor_env(env)}")
    lines += [
        "autostart=true",
    ]
    if miner:
        # Every exit is final for supervisord; the orchestrator reads the exit code and decides.
        lines += ["autorestart=false", "startsecs=0", "startretries=0"]
    else:
        # The model server is shared and nothing else restarts it; give up after a few quick failures.
        lines += ["autorestart=true", "startsecs=10", "startretries=3"]
    lines += [
        "exitcodes=0",
        "stopsignal=TERM",
        "stopwaitsecs=20",
        "stopasgroup=true",
        "killasgroup=true",
        f"stdout_logfile={run}/{name}.out.log",
        f"stderr_logfile={run}/{name}.err.log",
        "stdout_logfile_maxbytes=10MB",
        "stderr_logfile_maxbytes=10MB",
    ]
    return "\n".join(lines) + "\n"


def render_supervisor(loaded: LoadedFleet, python: str = DEFAULT_PYTHON) -> str:
    """supervisord.conf for hosts without docker: ``supervisord -c config/generated/supervisord.conf``."""
    fleet = loaded.fleet
    run = f"{HERE_ROOT}/{RUN_DIR.as_posix()}"
    py = _python_path(python)
    port = fleet.supervisor.port
    parts = [
        _header(loaded, ";"),
        "; Paths are relative to this file (%(here)s). Miners never restart on their own "
        "(autorestart=false):\n; the orchestrator reads their exit codes over XML-RPC and decides.\n\n",
        "[supervisord]\n"
        f"logfile={run}/supervisord.log\n"
        f"pidfile={run}/supervisord.pid\n"
        f"childlogdir={run}\n"
        f"identifier={fleet.project}\n\n",
        f"[inet_http_server]\nport=127.0.0.1:{port}\n\n",
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n",
        f"[supervisorctl]\nserverurl=http://127.0.0.1:{port}\n",
    ]
    if fleet.model_server is not None:
        args = " ".join(_model_server_args(loaded, host=True))
        env = []
        if fleet.model_server.gpus:
            env.append(("CUDA_VISIBLE_DEVICES", ",".join(str(g) for g in fleet.model_server.gpus)))
        parts.append("\n")
        parts.append(_program(MODEL_SERVER, f"{py} -m llama_cpp.server {args}", env, miner=False))
    for miner in loaded.miners:
        command = f"{py} -m services.miner --env-file %(here)s/{miner.name}.env"
        secrets = secret_env(miner)
        if secrets:
            # supervisord cannot rename a variable: a shell copies it, then becomes the miner (same pid).
            assigns = " ".join(f'{name}="${{{source}}}"' for name, source in secrets)
            command = f"/bin/sh -c '{assigns} exec {command}'"
        parts.append("\n")
        parts.append(_program(miner.name, command, host_overrides(loaded, miner), miner=True))
    return "".join(parts)


# --- everything ------------------------------------------------------------------------------------


def render(loaded: LoadedFleet, *, python: str = DEFAULT_PYTHON) -> dict[Path, str]:
    """Every rendered file, by path relative to the project directory. Pure: writes nothing."""
    files: dict[Path, str] = {COMPOSE_FILE: render_compose(loaded)}
    for miner in loaded.miners:
        files[GENERATED_DIR / f"{miner.name}.env"] = render_env_file(loaded, miner)
    files[SUPERVISOR_FILE] = render_supervisor(loaded, python)
    return files


def write(loaded: LoadedFleet, files: dict[Path, str]) -> list[Path]:
    """Write the rendered files under the project directory; remove env files of miners that are gone.
    Returns the paths written (relative)."""
    root = loaded.project_dir
    generated = root / GENERATED_DIR
    generated.mkdir(parents=True, exist_ok=True)
    (root / RUN_DIR).mkdir(parents=True, exist_ok=True)  # supervisord refuses to start without it
    for old in sorted(generated.glob("*.env")):
        if old.relative_to(root) not in files:
            old.unlink()
    for relative, text in files.items():
        target = root / relative
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    return list(files)


def describe(loaded: LoadedFleet, written: list[Path]) -> list[str]:
    """One line per written file, for the CLI."""
    return [f"wrote {display(loaded.project_dir, loaded.project_dir / path)}" for path in written]
