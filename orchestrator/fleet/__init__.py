"""``config/miners.yaml``: its schema, loading with line numbers, the checks across fields, the errors.

| module | what it holds |
|---|---|
| :mod:`~orchestrator.fleet.sections` | the fleet-wide sections (models, probe, resources, model servers) |
| :mod:`~orchestrator.fleet.options` | a miner's options, derived from the miner's settings and backends |
| :mod:`~orchestrator.fleet.schema` | the whole file (``Fleet``) and its JSON schema |
| :mod:`~orchestrator.fleet.located` | YAML with the line of every value, bounded against alias bombs |
| :mod:`~orchestrator.fleet.errors` | ``file:line: field: problem; fix: ...`` errors |
| :mod:`~orchestrator.fleet.resolved` | a miner and a model server with every derived value decided |
| :mod:`~orchestrator.fleet.checks` | the checks across fields and files (a module per group) |
| :mod:`~orchestrator.fleet.load` | ``load_fleet``: all of the above, every error at once |
"""

from orchestrator.fleet.errors import FleetError, FleetInvalid
from orchestrator.fleet.load import DEFAULT_FLEET_FILE, LoadedFleet, display, load_fleet
from orchestrator.fleet.options import (
    BACKEND_GROUPS,
    PASS_THROUGH,
    PASS_THROUGH_GROUPS,
    Defaults,
    MinerOptions,
    MinerSpec,
)
from orchestrator.fleet.resolved import Miner, ModelServer, resolve_path
from orchestrator.fleet.schema import Fleet, json_schema
from orchestrator.fleet.sections import (
    BUNDLED_GGUF,
    BUNDLED_GGUF_BYTES,
    ENV_NAME_PATTERN,
    KEY_NAME_PATTERN,
    MINER_NAME_PATTERN,
    RESERVED_NAMES,
    ImageName,
    ModelServerSpec,
    ModelSpec,
    NodeSpec,
    Resources,
)

__all__ = [
    "BACKEND_GROUPS",
    "BUNDLED_GGUF",
    "BUNDLED_GGUF_BYTES",
    "DEFAULT_FLEET_FILE",
    "ENV_NAME_PATTERN",
    "KEY_NAME_PATTERN",
    "MINER_NAME_PATTERN",
    "PASS_THROUGH",
    "PASS_THROUGH_GROUPS",
    "RESERVED_NAMES",
    "Defaults",
    "Fleet",
    "FleetError",
    "FleetInvalid",
    "ImageName",
    "LoadedFleet",
    "Miner",
    "MinerOptions",
    "MinerSpec",
    "ModelServer",
    "ModelServerSpec",
    "ModelSpec",
    "NodeSpec",
    "Resources",
    "display",
    "json_schema",
    "load_fleet",
    "resolve_path",
]
