"""Every runtime by name. Adding one: a folder under ``runtimes/`` whose ``__init__`` defines its
:class:`~orchestrator.runtimes.spec.RuntimeSpec` as ``SPEC``, and one entry here."""

from __future__ import annotations

from orchestrator.runtimes import compose, supervisord, swarm
from orchestrator.runtimes.spec import RuntimeSpec

RUNTIMES: dict[str, RuntimeSpec] = {spec.name: spec for spec in (compose.SPEC, supervisord.SPEC, swarm.SPEC)}
NAMES = tuple(RUNTIMES)


def runtime_spec(name: str) -> RuntimeSpec:
    """The runtime called ``name`` (the command line offers only these names)."""
    return RUNTIMES[name]
