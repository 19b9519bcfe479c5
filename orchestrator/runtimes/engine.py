"""The docker engine as the docker runtimes (compose, swarm) reach it: a client, its failures, its times.

The ``docker`` package is imported inside these functions: it is slow to import (about 0.2 s), and the
commands that never talk to an engine (``validate``, ``render``) should not pay for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orchestrator.runtimes.base import RuntimeFailure


def engine_client(base_url: str | None = None) -> Any:
    """A docker client for the engine at ``base_url``, else the one the environment names (``DOCKER_HOST``,
    else the local socket)."""
    import docker  # slow to import (0.14 s): see the module docstring

    try:
        return docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
    except docker.errors.DockerException as exc:
        raise failure(f"no docker engine answers{f' at {base_url}' if base_url else ''}", exc) from exc


def failure(what: str, exc: BaseException) -> RuntimeFailure:
    """A runtime failure; a refused docker socket says how to fix it."""
    if "Permission denied" in str(exc):
        return RuntimeFailure(
            "the docker socket refuses this user: give the orchestrator the socket's group "
            "(MINERFLEET_DOCKER_GID=$(stat -c %g /var/run/docker.sock) in .env or the environment; "
            "`make up` does it)"
        )
    return RuntimeFailure(f"{what}: {exc}")


def parse_time(value: str | None) -> float | None:
    """An engine timestamp (RFC 3339, nanoseconds) as wall-clock seconds; None when unset."""
    if not value or value.startswith("0001"):
        return None
    try:
        # docker gives nanoseconds; Python's fromisoformat takes microseconds at most.
        head, _, rest = value.partition(".")
        fraction = rest.rstrip("Z")[:6]
        return datetime.fromisoformat(f"{head}.{fraction or '0'}+00:00").timestamp()
    except ValueError:
        return None
