"""docker-stack.yml: the same fleet for ``docker stack deploy`` on a Docker Swarm of several machines.

What differs from docker-compose.yml, and why:

- ports are published in ``mode: host`` on the node that runs the task, and services resolve each
  other with ``endpoint_mode: dnsrr``: a validator reaches an axon at its node's own address, and
  neither the ingress routing mesh nor a virtual IP (IPVS) is needed;
- ``deploy.placement`` pins each miner and model server to its node (the node label
  ``minerfleet.node``, which ``swarm up`` sets from ``nodes:``) or to nodes with its ``node_labels``;
  the orchestrator runs on a manager, as the docker socket's group (no ``group_add`` in stack files);
- ``restart_policy: {condition: none}`` on miners and model servers: the orchestrator decides
  (exit codes, backoff, crash loops), and Swarm never restarts or replaces a task on its own;
- keys travel as Swarm secrets (each miner's own hotkey only) and configs (``coldkeypub.txt``, the
  probe's public key, the fleet file), read-only files owned by the container's user: the file names
  their sources on the deploying machine, never their contents, and no node needs a wallet folder;
- no health checks on miners and model servers: Swarm would kill an unhealthy task itself;
- no ``build``, ``depends_on`` or ``restart`` (``stack deploy`` ignores or rejects them): images must be
  on every node (``swarm up`` loads them), and there is no one-shot ``init`` (``swarm up`` makes the
  keys first). Swarm has no ``no-new-privileges``; the rest of the hardening is as in compose.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from orchestrator.fleet.load import LoadedFleet, Miner, ModelServer
from orchestrator.placement import Placement
from orchestrator.render.compose import (
    CONTAINER_STATE,
    CONTAINER_USER,
    GENERATED_DIR,
    ORCHESTRATOR,
    STATE_DIR,
    TMP,
    _dump,
    _labels,
)
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

STACK_FILE = Path("docker-stack.yml")
UID = "${MINERFLEET_UID:-1000}"
GID = "${MINERFLEET_GID:-1000}"
# The manager's docker socket, mounted into the orchestrator (a node's engine may listen elsewhere).
DOCKER_SOCKET = "${MINERFLEET_DOCKER_SOCKET:-/var/run/docker.sock}"
# Stack files have no group_add: the orchestrator runs with the socket's group as its own group
# (`swarm up` sets MINERFLEET_DOCKER_GID from the socket; make exports it too).
ORCHESTRATOR_USER = "${MINERFLEET_UID:-1000}:${MINERFLEET_DOCKER_GID:-0}"
# The status API: the manager's 127.0.0.1 unless the operator names one of its (private) addresses.
STATUS_HOST = "${MINERFLEET_STATUS_HOST:-127.0.0.1}"
# Another build of the orchestrator's image (a tag of your own); `swarm up` loads the same one.
ORCHESTRATOR_IMAGE = "${MINERFLEET_ORCHESTRATOR_IMAGE:-minerfleet/orchestrator}"
# `swarm up --orchestrator host` deploys it with 0 replicas and runs the watch as a host process.
ORCHESTRATOR_REPLICAS = "${MINERFLEET_ORCHESTRATOR_REPLICAS:-1}"
SECRET_MODE = 0o400  # written as 256: YAML has no octal in this dumper
CONFIG_MODE = 0o444
HOST_NETWORK = "host"
# Swarm acts on a container's health check (a task is "starting" until healthy, and an unhealthy one is
# killed): the orchestrator's own probes decide instead, so the images' checks are off here.
NO_HEALTHCHECK = {"disable": True}
# How Swarm replaces one unit's task (a unit is one service of one replica): stop-first, because its
# ports are the node's; a new task that exits within `monitor` pauses the update (no retry by Swarm).
UPDATE = {"parallelism": 1, "order": "stop-first", "failure_action": "pause", "monitor": "10s"}


def _file(name: str, target: str, mode: int) -> dict[str, Any]:
    return {"source": name, "target": target, "uid": UID, "gid": GID, "mode": mode}


def _deploy(placement: Placement, labels: dict[str, str], limits: Limits) -> dict[str, Any]:
    resources: dict[str, Any] = {"memory": limits.memory}
    if limits.cpus is not None:
        resources["cpus"] = str(limits.cpus)
    resources["pids"] = limits.pids
    deploy: dict[str, Any] = {
        "replicas": 1,
        "endpoint_mode": "dnsrr",
        "labels": dict(labels),  # a copy: the YAML stays free of anchors
        "resources": {"limits": resources},
        "restart_policy": {"condition": "none"},  # the orchestrator decides
        # A changed unit: its old task stops before the new one starts (its ports are published on the
        # node), and Swarm pauses an update whose new task fails; the orchestrator's rollout decides
        # which units change when, and its stream probe gates each batch (runtimes/swarm/rollout.py).
        "update_config": dict(UPDATE),
        "rollback_config": dict(UPDATE),
    }
    constraints = placement.constraints()
    if constraints:
        deploy["placement"] = {"constraints": constraints}
    return deploy


def _hardened() -> dict[str, Any]:
    return {"init": True, "read_only": True, "cap_drop": ["ALL"]}


def _host_port(port: int) -> dict[str, Any]:
    return {"target": port, "published": port, "protocol": "tcp", "mode": "host"}


def hotkey_secret(miner: Miner) -> str:
    return f"hotkey-{miner.name}"


def coldkeypub_config(wallet: str) -> str:
    return f"coldkeypub-{wallet}"


def _gpu_env(gpus: tuple[int, ...] | list[int]) -> dict[str, str]:
    # Swarm has no device requests: a GPU node runs the NVIDIA runtime by default (README), which
    # exposes the GPUs named here.
    ids = ",".join(str(g) for g in gpus)
    return {"NVIDIA_VISIBLE_DEVICES": ids, "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"} if ids else {}


def _miner_service(loaded: LoadedFleet, miner: Miner) -> dict[str, Any]:
    hotkey = str(keys.hotkey_file(miner.wallet, miner.hotkey))
    environment = {"HOME": TMP}
    environment.update({name: f"${{{source}}}" for name, source in secret_env(miner)})
    environment.update(_gpu_env(miner.gpus))
    volumes: list[dict[str, Any]] = [{"type": "tmpfs", "target": TMP}]
    if miner.model is not None:
        volumes.append(_bind(model_place(loaded, miner.model).volume))
    labels = _labels(loaded, "miner", miner=miner.name)
    return {
        "image": f"minerfleet/miner:{miner.image.value}",
        "command": ["python", "-m", "services.miner"],
        "user": CONTAINER_USER,
        "env_file": [(GENERATED_DIR / f"{miner.name}.env").as_posix()],
        "environment": environment,
        "ports": [_host_port(port) for port in miner.own_ports],
        "volumes": volumes,
        "secrets": [_file(hotkey_secret(miner), f"{CONTAINER_WALLETS}/{hotkey}", SECRET_MODE)],
        "configs": [
            _file(
                coldkeypub_config(miner.wallet),
                f"{CONTAINER_WALLETS}/{keys.coldkeypub_file(miner.wallet)}",
                CONFIG_MODE,
            ),
            _file("probe-pub", f"{CONTAINER_WALLETS}/{probe_pub(loaded)}", CONFIG_MODE),
        ],
        "labels": labels,
        "stop_signal": "SIGTERM",
        "stop_grace_period": "20s",
        "healthcheck": dict(NO_HEALTHCHECK),
        **_hardened(),
        "deploy": _deploy(miner.placement, labels, miner_limits(loaded, miner)),
    }


def _bind(volume: str) -> dict[str, Any]:
    """A compose short-form bind (``./models:/models:ro``) in the long form stack files read best."""
    source, target, *mode = volume.split(":")
    return {"type": "bind", "source": source, "target": target, "read_only": mode == ["ro"]}


def _model_server_service(loaded: LoadedFleet, server: ModelServer) -> dict[str, Any]:
    spec = server.spec
    labels = _labels(loaded, "model-server", model_server=server.name)
    service: dict[str, Any] = {
        "image": f"minerfleet/miner:{server.image.value}",
        "command": llama_server_args(Places.container(loaded), server),
        "user": CONTAINER_USER,
        # Published on its node (host mode) so the orchestrator on a manager can check /health there;
        # miners reach it by its service name. Keep the port closed to the world (README).
        "ports": [_host_port(spec.port)],
        "volumes": [{"type": "tmpfs", "target": TMP}, _bind(model_place(loaded, spec.model).volume)],
        "labels": labels,
        "stop_signal": "SIGTERM",
        "stop_grace_period": "10s",
        "healthcheck": dict(NO_HEALTHCHECK),
        **_hardened(),
        "deploy": _deploy(server.placement, labels, server_limits(loaded, server)),
    }
    if spec.gpus:
        service["environment"] = _gpu_env(spec.gpus)
    return service


def _orchestrator_service(loaded: LoadedFleet) -> dict[str, Any]:
    fleet = loaded.fleet
    config = loaded.display_path
    port = fleet.status_api.port
    probe = fleet.probe
    labels = _labels(loaded, ORCHESTRATOR)
    limits = ORCHESTRATOR_LIMITS
    return {
        "image": ORCHESTRATOR_IMAGE,
        "command": ["python", "-m", "orchestrator", "watch", "--config", config, "--runtime", "swarm"],
        "user": ORCHESTRATOR_USER,
        "environment": {
            "HOME": TMP,
            "MINERFLEET_RUNTIME": "swarm",
            "MINERFLEET_WALLET_PATH": CONTAINER_WALLETS,
            "MINERFLEET_STATE": f"{CONTAINER_STATE}/orchestrator.json",
            # The host's network (below): the status API on the manager's own 127.0.0.1, as in compose,
            # or the address MINERFLEET_STATUS_HOST names.
            "MINERFLEET_STATUS_HOST": STATUS_HOST,
            "MINERFLEET_STATUS_PORT": str(port),
        },
        # The node's own network: it reaches every miner at its node's address, as validators do.
        "networks": [HOST_NETWORK],
        "volumes": [
            {"type": "bind", "source": DOCKER_SOCKET, "target": "/var/run/docker.sock"},
            {"type": "bind", "source": f"./{STATE_DIR}", "target": CONTAINER_STATE},
            {"type": "tmpfs", "target": TMP},
        ],
        "secrets": [
            _file(
                "probe-hotkey",
                f"{CONTAINER_WALLETS}/{keys.hotkey_file(probe.wallet, probe.hotkey)}",
                SECRET_MODE,
            )
        ],
        "configs": [
            _file("fleet-file", f"{CONTAINER_APP}/{config}", CONFIG_MODE),
            *(
                _file(f"pub-{m.name}", f"{CONTAINER_WALLETS}/{miner_pub(m)}", CONFIG_MODE)
                for m in loaded.miners
            ),
        ],
        "labels": labels,
        **_hardened(),
        "deploy": {
            "replicas": ORCHESTRATOR_REPLICAS,
            "labels": dict(labels),
            "placement": {"constraints": ["node.role == manager"]},
            "resources": {"limits": {"memory": limits.memory, "cpus": str(limits.cpus), "pids": limits.pids}},
            # The one thing Swarm restarts itself: the orchestrator (compose: restart unless-stopped).
            "restart_policy": {"condition": "any", "delay": "5s"},
        },
    }


def key_files(loaded: LoadedFleet) -> tuple[dict[str, str], dict[str, str]]:
    """The stack's secrets (hotkeys) and configs (public files) by key, each with its source file as the
    stack file names it (relative to the project directory, or absolute)."""
    fleet = loaded.fleet
    wallets = fleet.wallet_path
    probe = fleet.probe

    def source(relative: str) -> str:
        return compose_host_path(f"{wallets}/{relative}")

    secrets = {hotkey_secret(m): source(str(keys.hotkey_file(m.wallet, m.hotkey))) for m in loaded.miners}
    secrets["probe-hotkey"] = source(str(keys.hotkey_file(probe.wallet, probe.hotkey)))
    configs = {"fleet-file": compose_host_path(loaded.display_path), "probe-pub": source(probe_pub(loaded))}
    for wallet in dict.fromkeys(m.wallet for m in loaded.miners):
        configs[coldkeypub_config(wallet)] = source(str(keys.coldkeypub_file(wallet)))
    for miner in loaded.miners:
        configs[f"pub-{miner.name}"] = source(miner_pub(miner))
    return secrets, configs


def name_variable(key: str) -> str:
    """The variable that carries the swarm's name of a secret or config (``swarm up`` sets it)."""
    return "MINERFLEET_NAME_" + re.sub(r"[^A-Z0-9]", "_", key.upper())


def _keys(loaded: LoadedFleet) -> tuple[dict[str, Any], dict[str, Any]]:
    """The secrets and configs as the stack file declares them.

    Docker never changes a secret or config in place, so each one's name comes from a variable: ``swarm
    up`` names it after its content (a rotated hotkey or an edited fleet file gets a new name, and only the
    services that use it are updated). Deployed by hand, the name is the one Docker would give it anyway.
    """
    project = loaded.fleet.project

    def declared(found: dict[str, str]) -> dict[str, Any]:
        return {
            key: {"file": file, "name": f"${{{name_variable(key)}:-{project}_{key}}}"}
            for key, file in found.items()
        }

    secrets, configs = key_files(loaded)
    return declared(secrets), declared(configs)


def render_stack(loaded: LoadedFleet, header: str) -> str:
    """docker-stack.yml: the model servers, one service per miner, the orchestrator, keys and network."""
    parts = [
        header,
        "# Docker Swarm: `python -m orchestrator swarm up` labels the nodes, loads the images on every\n"
        "# node, deploys this file as the stack named by `project:` and waits until every miner streams.\n"
        "# Miners and model servers never restart on their own (restart_policy: none): the orchestrator\n"
        "# decides. Secret and config modes are decimal (256 = 0400, 292 = 0444).\n",
        "services:\n",
    ]
    for server in loaded.model_servers:
        parts.append(f"  # model server {server.name}: {server.placement.describe()}\n")
        parts.append(_dump({server.service: _model_server_service(loaded, server)}, 2))
        parts.append("\n")
    for miner in loaded.miners:
        parts.append(
            f"  # miner {miner.name}: {miner.backend.value}, hotkey {miner.wallet}/{miner.hotkey}, "
            f"{miner.placement.describe()}\n"
        )
        parts.append(_dump({miner.name: _miner_service(loaded, miner)}, 2))
        parts.append("\n")
    parts.append("  # the watch loop and the status API, on a manager, in the node's own network\n")
    parts.append(_dump({ORCHESTRATOR: _orchestrator_service(loaded)}, 2))
    secrets, configs = _keys(loaded)
    parts.append("\n")
    parts.append(
        _dump(
            {
                "networks": {HOST_NETWORK: {"external": True, "name": HOST_NETWORK}},
                "secrets": secrets,
                "configs": configs,
            },
            0,
        )
    )
    return "".join(parts)
