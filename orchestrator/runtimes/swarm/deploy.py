"""``python -m orchestrator swarm up|down``: the fleet on a Docker Swarm, from a manager.

up: keys (network local: created, as ``wallets`` does), render, label the nodes (each node of the fleet
file is found in the swarm by its address and gets ``minerfleet.node=NAME`` plus its labels), the
images on every node that names its ``engine`` (``docker save | docker load``, only when the node's
copy differs; no registry), ``docker stack deploy``, then wait until every miner streams through its
node's address. down: ``docker stack rm`` and wait until no service, task, container, network, secret
or config of the stack is left.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from orchestrator.errors import TemporaryError
from orchestrator.fleet.load import LoadedFleet
from orchestrator.placement import node_labels
from orchestrator.probing.targets import probe_wallet, targets
from orchestrator.provision.wallets import ensure_wallets
from orchestrator.render import render, write
from orchestrator.render.stack import STACK_FILE, key_files, name_variable
from orchestrator.runtimes.engine import engine_client
from orchestrator.runtimes.swarm.runtime import SwarmRuntime, node_location
from orchestrator.runtimes.swarm.stack import annotate, dump, load_stack

STACK_LABEL = "com.docker.stack.namespace"


class SwarmError(TemporaryError):
    """The swarm cannot take the fleet (a node is missing, an image cannot be loaded, a deploy failed)."""


def _docker(engine: str | None, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            stdin: Any = None, text_in: str | None = None, timeout: float = 600) -> str:  # fmt: skip
    command = ["docker", *(["-H", engine] if engine else []), *args]
    feed: dict[str, Any] = {"input": text_in} if text_in is not None else {"stdin": stdin}
    proc = subprocess.run(
        command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=timeout, **feed,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SwarmError(f"`{' '.join(command)}` failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout


def manager_engine(manager: str | None) -> str | None:
    return manager or os.environ.get("DOCKER_HOST") or None


def label_nodes(loaded: LoadedFleet, client: Any, out: TextIO) -> set[str]:
    """Give each swarm node of the fleet its name and labels; every fleet node must be in the swarm.
    Returns the fleet's names of the nodes that are managers (where the orchestrator's service runs)."""
    nodes = client.api.nodes()
    by_address = {node_location(n).address: n for n in nodes}
    missing = [f"{name} ({spec.address})" for name, spec in loaded.fleet.nodes.items()
               if spec.address not in by_address]  # fmt: skip
    if missing:
        known = ", ".join(sorted(a for a in by_address if a)) or "none"
        raise SwarmError(
            f"not in the swarm: {', '.join(missing)} (the swarm's node addresses: {known}); join them with "
            "`docker swarm join --token $(docker swarm join-token -q worker) --advertise-addr ADDRESS "
            "MANAGER:2377` or correct nodes.NAME.address"
        )
    managers = set()
    for name, spec in loaded.fleet.nodes.items():
        node = by_address[spec.address]
        if (node.get("Spec") or {}).get("Role") == "manager":
            managers.add(name)
        wanted = node_labels(name, spec)
        current = dict((node.get("Spec") or {}).get("Labels") or {})
        if all(current.get(k) == v for k, v in wanted.items()):
            continue
        node_spec = dict(node["Spec"])
        node_spec["Labels"] = {**current, **wanted}
        client.api.update_node(node["ID"], node["Version"]["Index"], node_spec)
        print(f"node {name} ({spec.address}): labels {wanted}", file=out)
    return managers


def orchestrator_image() -> str:
    """The orchestrator's image the stack file names (MINERFLEET_ORCHESTRATOR_IMAGE, as in the file)."""
    return os.environ.get("MINERFLEET_ORCHESTRATOR_IMAGE") or "minerfleet/orchestrator"


def needed_images(loaded: LoadedFleet, with_orchestrator: bool) -> list[str]:
    images = [f"minerfleet/miner:{m.image.value}" for m in loaded.miners]
    images += [f"minerfleet/miner:{s.image.value}" for s in loaded.model_servers]
    if with_orchestrator:
        images.append(orchestrator_image())
    return list(dict.fromkeys(images))


def _image_id(engine: str | None, image: str) -> str | None:
    try:
        return _docker(engine, "image", "inspect", "-f", "{{.Id}}", image, timeout=60).strip()
    except SwarmError:
        return None


def load_images(
    loaded: LoadedFleet, images: Sequence[str], source: str | None, out: TextIO,
    managers: set[str] | None = None,
) -> None:  # fmt: skip
    """``docker save | docker load`` of each image into every node whose engine the fleet names, when
    the node's copy is missing or differs; the orchestrator's image only into the ``managers``."""
    for image in images:
        wanted = _image_id(source, image)
        if wanted is None:
            raise SwarmError(f"image {image} is not on this machine: build it first (`make images`)")
        for name, spec in loaded.fleet.nodes.items():
            if image == orchestrator_image() and managers is not None and name not in managers:
                continue
            if not spec.engine or _image_id(spec.engine, image) == wanted:
                continue
            started = time.monotonic()
            save = subprocess.Popen(
                ["docker", *(["-H", source] if source else []), "save", image], stdout=subprocess.PIPE
            )
            try:
                _docker(spec.engine, "load", "-q", stdin=save.stdout, timeout=1800)
            finally:
                if save.stdout is not None:
                    save.stdout.close()
                save.wait()
            print(f"node {name}: loaded {image} in {time.monotonic() - started:.0f} s", file=out)


def socket_gid(socket: str) -> str:
    """The group of the manager's docker socket (the orchestrator's service runs as it); "0" when the
    socket is not a local file."""
    try:
        return str(os.stat(socket).st_gid)
    except OSError:
        return "0"


def deploy_env(loaded: LoadedFleet, engine: str | None, orchestrator: str) -> dict[str, str]:
    """The variables the stack file names: ids, the docker socket, the orchestrator's replicas, and
    each secret's and config's name; what the operator set in the environment wins."""
    socket = engine.removeprefix("unix://") if engine and engine.startswith("unix://") else None
    env = {
        "MINERFLEET_ORCHESTRATOR_REPLICAS": "1" if orchestrator == "service" else "0",
        "MINERFLEET_UID": os.environ.get("MINERFLEET_UID", "1000"),
        "MINERFLEET_GID": os.environ.get("MINERFLEET_GID", "1000"),
        "MINERFLEET_DOCKER_GID": socket_gid(socket or "/var/run/docker.sock"),
    }
    if socket:
        env["MINERFLEET_DOCKER_SOCKET"] = socket
    env.update(_passed(env))
    env.update(key_names(loaded))
    return env


def annotated(loaded: LoadedFleet, env: dict[str, str]) -> dict[str, Any]:
    """The rendered stack with each service's image id (this machine's copy) and revision labels."""
    return annotate(load_stack(loaded.project_dir), loaded.project_dir, {**os.environ, **env},
                    lambda image: _image_id(None, image))  # fmt: skip


def stack_deploy(
    loaded: LoadedFleet, engine: str | None, env: dict[str, str], stack: dict[str, Any], prune: bool = False
) -> None:
    """``docker stack deploy`` of ``stack`` (annotated; all of it or some services) from its standard
    input, relative paths resolved in the project directory."""
    # --resolve-image never: the images are on the nodes already; there is no registry to ask.
    prune_flag = ["--prune"] if prune else []
    _docker(engine, "stack", "deploy", "--resolve-image", "never", *prune_flag, "-c", "-",
            loaded.fleet.project, cwd=loaded.project_dir, env=env, text_in=dump(stack))  # fmt: skip


def deploy(loaded: LoadedFleet, engine: str | None, orchestrator: str, out: TextIO) -> None:
    env = deploy_env(loaded, engine, orchestrator)
    state = loaded.project_dir / "state"
    state.mkdir(exist_ok=True)
    if os.geteuid() == 0:  # the orchestrator's service writes its decisions there as its own user
        os.chown(state, int(env["MINERFLEET_UID"]), int(env["MINERFLEET_DOCKER_GID"]))
    stack_deploy(loaded, engine, env, annotated(loaded, env))
    print(f"deployed stack {loaded.fleet.project} ({STACK_FILE})", file=out)
    prune_replaced_keys(loaded, engine, env, out)


def prune_replaced_keys(loaded: LoadedFleet, engine: str | None, env: dict[str, str], out: TextIO) -> None:
    client = engine_client(engine)
    try:
        removed = prune_keys(client, loaded.fleet.project, set(key_names(loaded).values()))
    finally:
        client.close()
    if removed:
        print(f"removed {len(removed)} replaced secret/config version(s): {', '.join(removed)}", file=out)


def key_names(loaded: LoadedFleet) -> dict[str, str]:
    """Each secret's and config's swarm name, by the stack file's variable: the stack, the key and a
    digest of the content. Docker cannot update a secret or config, so a new content needs a new name."""
    names = {}
    for key, file in {k: v for found in key_files(loaded) for k, v in found.items()}.items():
        digest = hashlib.sha256((loaded.project_dir / file).read_bytes()).hexdigest()[:12]
        # Docker's names are at most 64 characters: the digest is what must survive.
        names[name_variable(key)] = f"{loaded.fleet.project}_{key}"[: 64 - 13] + f"_{digest}"
    return names


def prune_keys(client: Any, stack: str, keep: set[str]) -> list[str]:
    """Remove the stack's secrets and configs that the deploy replaced; one still in use stays."""
    import docker  # slow to import (0.14 s): only when the swarm is reached

    label = {"label": [f"{STACK_LABEL}={stack}"]}
    removed = []
    for kind in (client.secrets, client.configs):
        for item in kind.list(filters=label):
            if item.name in keep:
                continue
            try:
                item.remove()
            except docker.errors.APIError:  # still referenced: the next deploy removes it
                continue
            removed.append(item.name)
    return removed


def _passed(defaults: dict[str, str]) -> dict[str, str]:
    """What the operator set in the environment wins over the defaults above."""
    return {key: os.environ[key] for key in defaults if key in os.environ}


async def wait_healthy(loaded: LoadedFleet, runtime: SwarmRuntime, timeout: float) -> list[dict[str, Any]]:
    """Every miner's task running and its stream healthy at its node's address; the last view."""
    # The prober imports bittensor (0.8 s): the registry loads this module for every command.
    from orchestrator.probing.probe import Prober

    probe = loaded.fleet.probe
    prober = Prober(probe_wallet(loaded), probe.prompt, probe.timeout, probe.max_concurrency)
    names = [m.name for m in loaded.miners]
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    try:
        while True:
            infos = await runtime.inspect(names)
            moved = []
            for target in targets(loaded, "127.0.0.1"):
                where = runtime.locate(target.name)
                moved.append(replace(target, host=where.address) if where else target)
            reports = await prober.probe_all([t for t in moved if infos[t.name].running])
            by_name = {r.name: r for r in reports}
            rows = []
            for target in moved:
                where = runtime.locate(target.name)
                report = by_name.get(target.name)
                rows.append({
                    "miner": target.name, "node": where.node if where else None, "address": target.host,
                    "port": target.port, "task": infos[target.name].status or "-",
                    "verdict": report.verdict.value if report else "not running",
                    "reason": (report.reason if report else infos[target.name].detail) or "",
                })  # fmt: skip
            if all(row["verdict"] == "healthy" for row in rows) or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(2)
    finally:
        await prober.aclose()


def format_rows(rows: list[dict[str, Any]]) -> str:
    header = ("MINER", "NODE", "ADDRESS", "PORT", "TASK", "PROBE", "REASON")
    table = [header] + [
        (
            r["miner"],
            r["node"] or "-",
            r["address"],
            str(r["port"]),
            r["task"],
            r["verdict"],
            r["reason"] or "",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(c.ljust(widths[i]) for i, c in enumerate(row[:-1])), row[-1]]).rstrip() for row in table
    )


def swarm_up(
    loaded: LoadedFleet, manager: str | None, orchestrator: str, timeout: float, out: TextIO
) -> bool:
    """Deploy the fleet; True when every miner streams through its node's address within ``timeout``."""
    engine = manager_engine(manager)
    report = ensure_wallets(loaded)
    if report.missing:
        raise SwarmError("some keys are missing: " + "; ".join(report.lines))
    write(loaded, render(loaded))
    client = engine_client(engine)
    try:
        managers = label_nodes(loaded, client, out)
    finally:
        client.close()
    load_images(loaded, needed_images(loaded, orchestrator == "service"), None, out, managers)
    deploy(loaded, engine, orchestrator, out)
    runtime = SwarmRuntime(loaded.fleet.project, client=engine_client(engine))

    async def wait() -> list[dict[str, Any]]:
        try:
            return await wait_healthy(loaded, runtime, timeout)
        finally:
            await runtime.aclose()

    rows = asyncio.run(wait())
    print(format_rows(rows), file=out)
    return all(row["verdict"] == "healthy" for row in rows)


def leftovers(loaded: LoadedFleet, client: Any) -> list[str]:
    """What of the stack is still there: services, networks, secrets, configs, and containers on every
    node whose engine the fleet names."""
    stack = loaded.fleet.project
    label = {"label": [f"{STACK_LABEL}={stack}"]}
    left = [f"service {s['Spec']['Name']}" for s in client.api.services(filters=label)]
    left += [f"network {n['Name']}" for n in client.api.networks(filters=label)]
    left += [f"secret {s['Spec']['Name']}" for s in client.api.secrets(filters=label)]
    left += [f"config {c['Spec']['Name']}" for c in client.api.configs(filters=label)]
    for name, spec in loaded.fleet.nodes.items():
        if spec.engine:
            node = engine_client(spec.engine)
            try:
                # The API's own list: docker-py's would inspect each container it lists, and one removed
                # between the two calls (what this loop waits for) raises NotFound.
                left += [
                    f"container {c['Names'][0].lstrip('/')} on {name}"
                    for c in node.api.containers(all=True, filters=label)
                ]
            finally:
                node.close()
    return left


def swarm_down(loaded: LoadedFleet, manager: str | None, timeout: float, out: TextIO) -> list[str]:
    """``docker stack rm`` and wait until it is all gone; what is left after ``timeout`` (nothing: [])."""
    engine = manager_engine(manager)
    _docker(engine, "stack", "rm", loaded.fleet.project)
    client = engine_client(engine)
    try:
        deadline = time.monotonic() + timeout
        while (left := leftovers(loaded, client)) and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        client.close()
    print(f"stack {loaded.fleet.project} removed" + (f"; left: {', '.join(left)}" if left else ""), file=out)
    return left
