"""A miner's settings: ``MINER_*`` variables (the miner service's settings contract), from either side.

The env file (``config/generated/<name>.env``) holds the container view; supervisord.conf runs the
same file and overrides only the variables whose host value differs (:func:`host_overrides`).

Secrets are never written: a miner's ``api_key_env: NAME`` becomes ``MINER_OPENAI__API_KEY=${NAME}``
in compose (interpolated from the environment or ``.env`` at ``up``), and on the host a ``/bin/sh``
wrapper copies ``$NAME`` into the variable before ``exec``-ing the miner.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel

from orchestrator.fleet import PASS_THROUGH, PASS_THROUGH_GROUPS
from orchestrator.fleet.load import LoadedFleet, Miner
from orchestrator.render.places import Places, probe_pub
from services.miner.backends import SPECS


def env_value(value: Any) -> str:
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
        (f"MINER_{prefix}__{key.upper()}", env_value(value))
        for key, value in options.model_dump(exclude_none=True).items()
        if key not in skip
    ]


def env_entries(places: Places, miner: Miner) -> list[tuple[str, str]]:
    """The miner's ``MINER_*`` settings as ``places`` sees them, in a fixed order."""
    loaded = places.loaded
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
        ("MINER_WALLET_PATH", places.wallets),
        ("MINER_WALLET_NAME", miner.wallet),
        ("MINER_WALLET_HOTKEY", miner.hotkey),
        ("MINER_AXON_IP", options.axon_ip or "0.0.0.0"),
        ("MINER_AXON_PORT", str(miner.axon_port)),
    ]
    if miner.axon_external_port is not None:
        entries.append(("MINER_AXON_EXTERNAL_PORT", str(miner.axon_external_port)))
    entries += [
        ("MINER_PROTOCOLS", env_value(miner.protocols)),
        ("MINER_BACKEND", miner.backend.value),
        ("MINER_ALLOWED_HOTKEY_FILES", env_value([f"{places.wallets}/{probe_pub(loaded)}"])),
    ]
    if options.allowed_hotkeys:
        entries.append(("MINER_ALLOWED_HOTKEYS", env_value(list(dict.fromkeys(options.allowed_hotkeys)))))
    fleet_decides = _fleet_defaults(places, miner)
    for key in PASS_THROUGH:
        value = getattr(options, key)
        if value is None:
            value = fleet_decides.get(key)
        if value is not None:
            entries.append((f"MINER_{key.upper()}", env_value(value)))
    for group in PASS_THROUGH_GROUPS:
        entries += _group(group.upper(), getattr(options, group))
    return entries + _backend_entries(places, miner)


def _fleet_defaults(places: Places, miner: Miner) -> dict[str, Any]:
    """Defaults the fleet decides for a miner where neither it nor ``defaults:`` set a value."""
    decided: dict[str, Any] = {"metrics_port": miner.metrics_port}  # axon_port + metrics_port_offset
    if miner.model_server is not None:
        # The server's slots are shared by need: any miner using it may take any free slot (admission
        # asks the server what it can start now), so one miner can use them all while the others idle.
        # A batching server finishes a wave in a few seconds, so a second wave of the same size may
        # wait here (the miner refuses any that would start after its deadline).
        concurrency = miner.options.max_concurrency or places.model_server(miner.model_server).spec.slots
        decided.update(max_concurrency=concurrency, max_queue=max(concurrency, 4))
    return decided


def _backend_entries(places: Places, miner: Miner) -> list[tuple[str, str]]:
    """The backend's own group, from its description: the model it loads (named under ``models:``),
    the server it talks to (a fleet model server or its own address), then every other option."""
    described = SPECS[miner.backend]
    group = getattr(miner.options, miner.backend.value)
    prefix = f"MINER_{miner.backend.value.upper()}__"
    entries: list[tuple[str, str]] = []
    skip = {f"{secret}_env" for secret in described.secrets}
    if described.needs_model:
        assert miner.model is not None
        path, *inside = described.model_settings
        place = PurePosixPath(places.model(miner.model))
        if inside and place.suffix == ".gguf":  # a GGUF file given as its folder and its name
            entries += [(prefix + path.upper(), str(place.parent)), (prefix + inside[0].upper(), place.name)]
        else:
            entries.append((prefix + path.upper(), str(place)))
        skip.add("model")
    if described.model_server:
        assert group is not None and described.address is not None
        skip |= {"model_server", described.address}
        if miner.model_server is not None:
            server = places.model_server(miner.model_server)
            entries.append((prefix + described.address.upper(), places.server_url(server)))
            if described.shared_slots:
                # Admission asks the server how many of its slots are free (shared by need).
                skip.add(described.shared_slots)
                entries.append((prefix + described.shared_slots.upper(), str(server.spec.slots)))
        else:
            entries.append((prefix + described.address.upper(), str(getattr(group, described.address))))
        if described.served_model:
            skip.add(described.served_model)
            chosen = getattr(group, described.served_model)
            if chosen is None and miner.model_server is not None:
                chosen = places.model_server(miner.model_server).spec.model
            if chosen is not None:
                entries.append((prefix + described.served_model.upper(), chosen))
    return entries + _group(miner.backend.value.upper(), group, skip=skip)


def host_overrides(loaded: LoadedFleet, miner: Miner, host: Places) -> list[tuple[str, str]]:
    """The variables whose host value differs from the env file's (supervisord's ``environment=``)."""
    container = dict(env_entries(Places.container(loaded), miner))
    out = [(key, value) for key, value in env_entries(host, miner) if container.get(key) != value]
    if miner.gpus:
        out.append(("CUDA_VISIBLE_DEVICES", ",".join(str(g) for g in miner.gpus)))
    return out


def secret_env(miner: Miner) -> list[tuple[str, str]]:
    """(miner variable, name of the host variable holding the secret) pairs."""
    described = SPECS[miner.backend]
    group = getattr(miner.options, miner.backend.value)
    pairs = []
    for secret in described.secrets:
        name = getattr(group, f"{secret}_env", None) if group is not None else None
        if name:
            pairs.append((f"MINER_{miner.backend.value.upper()}__{secret.upper()}", name))
    return pairs


def render_env_file(loaded: LoadedFleet, miner: Miner, header: str) -> str:
    lines = [
        header.rstrip("\n"),
        "# Container paths (/wallets, /models); supervisord.conf overrides them with host paths.",
    ]
    for name, _ in secret_env(miner):
        lines.append(f"# {name} is passed through from the environment, never written here.")
    lines += [f"{key}={value}" for key, value in env_entries(Places.container(loaded), miner)]
    return "\n".join(lines) + "\n"
