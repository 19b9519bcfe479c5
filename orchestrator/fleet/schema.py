"""The typed schema of ``config/miners.yaml``, the one file an operator edits.

The file has fleet-wide settings (network, wallets, ports, the stream probe, the restart policy, named
models, the model servers several miners share; :mod:`orchestrator.fleet.sections`), ``defaults``
applied to every miner, and the list of ``miners`` (:mod:`orchestrator.fleet.options`). This module
only *describes* it: loading with line numbers and the checks that span several fields live in
:mod:`orchestrator.fleet.load`; turning it into settings files in :mod:`orchestrator.render`.

A miner's own values win over ``defaults``; a value neither sets is the miner service's own default
(``services.miner.settings``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from orchestrator.fleet.options import Defaults, MinerSpec
from orchestrator.fleet.sections import (
    KEY_NAME_PATTERN,
    MINER_NAME_PATTERN,
    LegacyModelServerSpec,
    ModelServerSpec,
    ModelSpec,
    NodeSpec,
    ProbeSpec,
    RolloutSpec,
    StatusApiSpec,
    SupervisorSpec,
    _Strict,
)
from orchestrator.policy import RestartPolicy
from services.miner.settings import Network

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
    metrics_port_offset: int | None = Field(
        1000,
        ge=1,
        le=64000,
        description="A miner without metrics_port serves its Prometheus metrics on axon_port + this; "
        "null: no metrics server unless the miner sets metrics_port.",
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
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec, description="Rolling updates (`make up ROLLING=1`): how many at once."
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
    nodes: dict[Annotated[str, Field(pattern=MINER_NAME_PATTERN)], NodeSpec] = Field(
        default_factory=dict,
        description="Docker Swarm nodes by name (`python -m orchestrator swarm up`); without them the fleet "
        "is one machine.",
    )
    defaults: Defaults = Field(default_factory=lambda: Defaults(), description="Applied to every miner.")
    miners: list[MinerSpec] = Field(..., min_length=1, description="The miners, one per hotkey.")


def json_schema() -> dict[str, Any]:
    """The JSON schema of the fleet file, for editors (``python -m orchestrator schema``)."""
    schema = Fleet.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
