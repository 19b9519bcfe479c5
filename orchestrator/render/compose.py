"""docker-compose.yml: the init one-shot, the model servers, one service per miner, the orchestrator.

Compose Specification without a ``version:`` key: read by ``docker compose`` v2 and by
``docker-compose`` 1.29 (which also honours ``deploy.resources.reservations.devices`` and the
service-level ``mem_limit``, ``cpus`` and ``pids_limit``).

Every long-running service is hardened the same way (:func:`_hardened`): an init process as PID 1 (signals
work at any moment, zombies are reaped), a read-only root filesystem with a tmpfs on /tmp (HOME points
there: bittensor creates ``~/.bittensor`` at import, caches go under ``~/.cache``; the images write no
bytecode), no new privileges, no capabilities, and limits from :mod:`orchestrator.render.resources`.
Miners and model servers never restart on their own (``restart: "no"``): the orchestrator decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestrator.fleet.load import LoadedFleet, Miner, ModelServer
from orchestrator.render.envfiles import secret_env
from orchestrator.render.places import (
    CONTAINER_APP,
    CONTAINER_WALLETS,
    Places,
    compose_host_path,
    llama_server_args,
    miner_pub,
    model_place,
    probe_pub,
)
from orchestrator.render.resources import ORCHESTRATOR_LIMITS, Limits, miner_limits, server_limits
from services.miner import keys
from services.miner.backends import IMAGE_TARGETS
from services.miner.settings import Network

GENERATED_DIR = Path("config/generated")
COMPOSE_FILE = Path("docker-compose.yml")
STATE_DIR = "state"  # the orchestrator's decisions (git-ignored), mounted read-write
CONTAINER_STATE = f"{CONTAINER_APP}/{STATE_DIR}"
ORCHESTRATOR = "orchestrator"
INIT = "init"
# Everything else starts once `init` has provided the local keys and the bundled model: containers are
# created only then, so docker never meets a missing key file (it would leave an empty directory there).
AFTER_INIT = {INIT: {"condition": "service_completed_successfully"}}
TMP = "/tmp"

TARGETS = IMAGE_TARGETS  # image name -> Dockerfile target, from the backends' specs

# Containers never run as root. The hotkeys they read are owned by this uid (`wallets` sees to it on
# network local); `make` sets it to the operator's own uid, or 1000 when run as root.
CONTAINER_USER = "${MINERFLEET_UID:-1000}:${MINERFLEET_GID:-1000}"


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


def _labels(loaded: LoadedFleet, role: str, **extra: str) -> dict[str, str]:
    labels = {"minerfleet.project": loaded.fleet.project, "minerfleet.role": role}
    labels.update({f"minerfleet.{key}": value for key, value in extra.items()})
    return labels


def _hardened(limits: Limits) -> dict[str, Any]:
    return {
        "init": True,
        "read_only": True,
        "tmpfs": [TMP],
        "security_opt": ["no-new-privileges:true"],
        "cap_drop": ["ALL"],
        **limits.compose(),
    }


def _miner_service(loaded: LoadedFleet, miner: Miner) -> dict[str, Any]:
    wallet = loaded.fleet.wallet_path
    hotkey = str(keys.hotkey_file(miner.wallet, miner.hotkey))
    coldkeypub = str(keys.coldkeypub_file(miner.wallet))
    probe = probe_pub(loaded)
    volumes = [
        f"{compose_host_path(f'{wallet}/{hotkey}')}:{CONTAINER_WALLETS}/{hotkey}:ro",
        f"{compose_host_path(f'{wallet}/{coldkeypub}')}:{CONTAINER_WALLETS}/{coldkeypub}:ro",
        f"{compose_host_path(f'{wallet}/{probe}')}:{CONTAINER_WALLETS}/{probe}:ro",
    ]
    if miner.model is not None:
        volumes.append(model_place(loaded, miner.model).volume)
    environment = {"HOME": TMP}
    environment.update({name: f"${{{source}}}" for name, source in secret_env(miner)})
    service: dict[str, Any] = {
        "build": _build(TARGETS[miner.image.value]),
        "image": f"minerfleet/miner:{miner.image.value}",
        "command": ["python", "-m", "services.miner"],
        "user": CONTAINER_USER,
        "env_file": [(GENERATED_DIR / f"{miner.name}.env").as_posix()],
        "environment": environment,
        "ports": [f"{port}:{port}" for port in miner.own_ports],  # the axon's, an HTTP door's
        # Metrics on the compose network only (the orchestrator and the monitoring profile read them),
        # never published: the axon port stays the only one open to the world.
        **({"expose": [str(miner.metrics_port)]} if miner.metrics_port is not None else {}),
        "volumes": volumes,
        "labels": _labels(loaded, "miner", miner=miner.name),
        "restart": "no",  # the orchestrator decides (exit codes, backoff, crash loops)
        "stop_signal": "SIGTERM",
        "stop_grace_period": "20s",
        **_hardened(miner_limits(loaded, miner)),
        "depends_on": dict(AFTER_INIT),
    }
    if miner.model_server is not None:
        server = Places.container(loaded).model_server(miner.model_server)
        service["depends_on"][server.service] = {"condition": "service_started"}
    if miner.gpus:
        service["deploy"] = _deploy_gpus(miner.gpus)
    return service


def _model_server_service(loaded: LoadedFleet, server: ModelServer) -> dict[str, Any]:
    spec = server.spec
    port = spec.port
    # llama-server answers /health with 200 once the model is loaded (503 while loading).
    check = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}/health', timeout=3)"
    service: dict[str, Any] = {
        "build": _build(TARGETS[server.image.value]),
        "image": f"minerfleet/miner:{server.image.value}",
        "command": llama_server_args(Places.container(loaded), server),
        "user": CONTAINER_USER,
        "ports": [f"127.0.0.1:{port}:{port}"],
        "volumes": [model_place(loaded, spec.model).volume],
        "labels": _labels(loaded, "model-server", model_server=server.name),
        "restart": "no",  # the orchestrator supervises it with the miners' policy
        "stop_signal": "SIGTERM",
        "stop_grace_period": "10s",
        "healthcheck": {
            "test": ["CMD", "python", "-S", "-c", check],
            "interval": "30s",
            "timeout": "5s",
            "start_period": "120s",
            "retries": 3,
        },
        **_hardened(server_limits(loaded, server)),
        "depends_on": dict(AFTER_INIT),
    }
    if spec.gpus:
        service["deploy"] = _deploy_gpus(spec.gpus)
    return service


def _orchestrator_service(loaded: LoadedFleet) -> dict[str, Any]:
    fleet = loaded.fleet
    config = loaded.display_path
    port = fleet.status_api.port
    probe_hotkey = str(keys.hotkey_file(fleet.probe.wallet, fleet.probe.hotkey))
    # The probe signs with its hotkey; the miners' addresses come from their public files (no secrets).
    key_files = list(dict.fromkeys([probe_hotkey, *(miner_pub(miner) for miner in loaded.miners)]))
    return {
        "build": _build("orchestrator"),
        "image": "minerfleet/orchestrator",
        "command": ["python", "-m", "orchestrator", "watch", "--config", config],
        "user": CONTAINER_USER,
        # The docker socket's group, so a non-root orchestrator may use it (make sets it).
        "group_add": ["${MINERFLEET_DOCKER_GID:-0}"],
        "environment": {
            "HOME": TMP,
            "MINERFLEET_RUNTIME": "docker",
            "MINERFLEET_WALLET_PATH": CONTAINER_WALLETS,
            "MINERFLEET_STATE": f"{CONTAINER_STATE}/orchestrator.json",  # survives its own restarts
            "MINERFLEET_STATUS_HOST": "0.0.0.0",  # inside the container; published on 127.0.0.1 only
            "MINERFLEET_STATUS_PORT": str(port),  # for the image's HEALTHCHECK
        },
        "ports": [f"127.0.0.1:{port}:{port}"],
        "volumes": [
            "/var/run/docker.sock:/var/run/docker.sock",
            f"./{STATE_DIR}:{CONTAINER_STATE}",
            f"{compose_host_path(config)}:{CONTAINER_APP}/{config}:ro",
            f"./{GENERATED_DIR.as_posix()}:{CONTAINER_APP}/{GENERATED_DIR.as_posix()}:ro",
            f"./{COMPOSE_FILE.as_posix()}:{CONTAINER_APP}/{COMPOSE_FILE.as_posix()}:ro",
            *(
                f"{compose_host_path(f'{fleet.wallet_path}/{k}')}:{CONTAINER_WALLETS}/{k}:ro"
                for k in key_files
            ),
        ],
        # The fleet file's hash: compose recreates a service only when its own definition changes, and
        # the orchestrator reads the fleet file (ports, probe, policy) only at start. With the hash here,
        # `make up` after any edit of the fleet file starts it again on the new file; its decisions
        # survive in the state file.
        "labels": {**_labels(loaded, ORCHESTRATOR), "minerfleet.fleet-sha256": loaded.sha256},
        "restart": "unless-stopped",
        **_hardened(ORCHESTRATOR_LIMITS),
        # After everything it supervises: `compose down` stops dependents first, so the orchestrator is
        # gone before any miner is stopped and cannot start one again during the teardown.
        "depends_on": {
            **AFTER_INIT,
            **{server.service: {"condition": "service_started"} for server in loaded.model_servers},
            **{miner.name: {"condition": "service_started"} for miner in loaded.miners},
        },
    }


PROMETHEUS = "prometheus"
MONITORING = "monitoring"  # the opt-in compose profile: `docker compose --profile monitoring up -d`


def _prometheus_service(loaded: LoadedFleet) -> dict[str, Any]:
    """Prometheus (Debian's package), only in the `monitoring` profile. It discovers every unit from the
    orchestrator (/targets) and keeps its data under ./state/prometheus."""
    port = "${MINERFLEET_PROMETHEUS_PORT:-9090}"
    return {
        "build": _build("prometheus"),
        "image": "minerfleet/prometheus",
        "profiles": [MONITORING],
        "command": [
            "prometheus",
            "--config.file=/etc/minerfleet/prometheus.yml",
            f"--storage.tsdb.path={CONTAINER_STATE}/prometheus",
            "--storage.tsdb.retention.time=15d",
            "--web.listen-address=0.0.0.0:9090",
        ],
        "user": CONTAINER_USER,
        "environment": {"HOME": TMP},
        "ports": [f"127.0.0.1:{port}:9090"],
        "volumes": [
            f"./{GENERATED_DIR.as_posix()}/prometheus.yml:/etc/minerfleet/prometheus.yml:ro",
            "./config/prometheus:/etc/minerfleet/rules:ro",
            f"./{STATE_DIR}:{CONTAINER_STATE}",
        ],
        "labels": _labels(loaded, PROMETHEUS),
        "restart": "unless-stopped",
        **_hardened(ORCHESTRATOR_LIMITS),
        "depends_on": {**AFTER_INIT, ORCHESTRATOR: {"condition": "service_started"}},
    }


def _init_service(loaded: LoadedFleet) -> dict[str, Any]:
    """A one-shot: the local hotkeys, the bundled model and the orchestrator's state folder, so `docker
    compose up` works right after a clone.

    Root, because it writes into bind-mounted host folders that may not exist yet (docker makes them
    root-owned); it hands them to the containers' uid, as `python -m orchestrator wallets` does.

    It gets only what it writes. On network local: the folders of the fleet's own wallets (the keys it
    creates there are throwaway local ones), never the wallet root, which may hold other coldkeys. On a
    chain network: no wallet at all (the keys are the operator's, made with btcli and checked on the
    host by `python -m orchestrator wallets`), so no coldkey is ever inside a container.
    """
    config = loaded.display_path
    wallets: list[str] = []
    if loaded.fleet.network == Network.local:
        root = compose_host_path(loaded.fleet.wallet_path).rstrip("/")
        names = dict.fromkeys([loaded.fleet.probe.wallet, *(miner.wallet for miner in loaded.miners)])
        wallets = [f"{root}/{name}:{CONTAINER_WALLETS}/{name}" for name in names]
    return {
        "build": _build("orchestrator"),
        "image": "minerfleet/orchestrator",
        "command": ["python", "-m", "orchestrator", "init", "--config", config],
        "user": "0:0",
        "environment": {
            "MINERFLEET_WALLET_PATH": CONTAINER_WALLETS,
            "MINERFLEET_STATE": f"{CONTAINER_STATE}/orchestrator.json",
            "MINERFLEET_UID": "${MINERFLEET_UID:-1000}",
            "MINERFLEET_GID": "${MINERFLEET_GID:-1000}",
        },
        "volumes": [
            f"{compose_host_path(config)}:{CONTAINER_APP}/{config}:ro",
            *wallets,
            f"./models:{CONTAINER_APP}/models",
            f"./{STATE_DIR}:{CONTAINER_STATE}",
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


def render_compose(loaded: LoadedFleet, header: str) -> str:
    """docker-compose.yml: init, the model servers, one service per miner and the orchestrator."""
    parts = [
        header,
        '# Miners and model servers restart only through the orchestrator (restart: "no"); secrets come\n'
        "# from the environment or .env by name.\n"
        "# Run: make up   (or: docker compose up -d / docker-compose up -d)\n",
        "services:\n",
        "  # one-shot, before everything else: creates missing local hotkeys, fetches the bundled model\n",
        _dump({INIT: _init_service(loaded)}, 2),
        "\n",
    ]
    for server in loaded.model_servers:
        users = ", ".join(server.users) or "no miner yet"
        parts.append(
            f"  # model server {server.name}: llama-server on {server.spec.model}, {server.spec.slots} slots "
            f"shared by {users}\n"
        )
        parts.append(_dump({server.service: _model_server_service(loaded, server)}, 2))
        parts.append("\n")
    for miner in loaded.miners:
        parts.append(f"  # miner {miner.name}: {miner.backend.value}, hotkey {miner.wallet}/{miner.hotkey}\n")
        parts.append(_dump({miner.name: _miner_service(loaded, miner)}, 2))
        parts.append("\n")
    parts.append("  # the watch loop and the status API; it reads the docker socket to start/stop miners\n")
    parts.append(_dump({ORCHESTRATOR: _orchestrator_service(loaded)}, 2))
    parts.append(
        "\n  # opt-in (make up MONITORING=1, or docker compose --profile monitoring up -d): Prometheus on\n"
        "  # 127.0.0.1:9090 with the alert rules of config/prometheus/\n"
    )
    parts.append(_dump({PROMETHEUS: _prometheus_service(loaded)}, 2))
    return "".join(parts)
