"""Render the fleet into the files that run it: per-miner env files, docker-compose.yml, supervisord.conf.

Deterministic: the same fleet file gives the same bytes, with no absolute path of the machine in them
unless the fleet file (or a ``--python``/``--llama-server`` option) has one. One module per target over
one description of where things are (:mod:`~orchestrator.render.places`: container or host):

- :mod:`~orchestrator.render.envfiles`: ``config/generated/<miner>.env`` (``MINER_*`` settings);
- :mod:`~orchestrator.render.compose`: ``docker-compose.yml``, hardened, with limits from
  :mod:`~orchestrator.render.resources`;
- :mod:`~orchestrator.render.supervisord`: ``config/generated/supervisord.conf`` (hosts without docker);
- :mod:`~orchestrator.render.stack`: ``docker-stack.yml``, the same fleet on a Docker Swarm.
- :mod:`~orchestrator.render.prometheus`: ``config/generated/prometheus.yml`` (the monitoring profile).

Secrets are never written (they are referenced by variable name), and miners get only their own hotkey
file, their wallet's ``coldkeypub.txt`` and the probe's public key file, read-only; no coldkey is ever
mounted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from orchestrator.fleet.load import LoadedFleet, display
from orchestrator.render.compose import COMPOSE_FILE, GENERATED_DIR, render_compose
from orchestrator.render.envfiles import env_entries, host_overrides, render_env_file
from orchestrator.render.places import (
    DEFAULT_LLAMA_SERVER,
    DEFAULT_PYTHON,
    Places,
    RenderError,
    probe_ss58,
    read_ss58,
)
from orchestrator.render.prometheus import PROMETHEUS_FILE, render_prometheus
from orchestrator.render.stack import STACK_FILE, render_stack
from orchestrator.render.supervisord import RUN_DIR, SUPERVISOR_FILE, render_supervisor

__all__ = [
    "COMPOSE_FILE",
    "DEFAULT_LLAMA_SERVER",
    "DEFAULT_PYTHON",
    "GENERATED_DIR",
    "STACK_FILE",
    "SUPERVISOR_FILE",
    "ComposeStaleness",
    "Freshness",
    "Places",
    "RenderError",
    "compose_hash",
    "compose_staleness",
    "describe",
    "env_entries",
    "host_overrides",
    "probe_ss58",
    "read_ss58",
    "render",
    "write",
]

_HASH_RE = re.compile(r"sha256:([0-9a-f]{64})")


def _header(loaded: LoadedFleet, comment: str) -> str:
    return (
        f"{comment} Generated from {loaded.display_path} by `python -m orchestrator render`; do not edit "
        f"(edit {loaded.display_path} and render again). sha256:{loaded.sha256}\n"
    )


def render(
    loaded: LoadedFleet, *, python: str = DEFAULT_PYTHON, llama_server: str = DEFAULT_LLAMA_SERVER
) -> dict[Path, str]:
    """Every rendered file, by path relative to the project directory. Pure: writes nothing.

    ``python`` and ``llama_server`` are the programs supervisord runs on the host (relative paths are
    the project's); they appear only in supervisord.conf.
    """
    files: dict[Path, str] = {COMPOSE_FILE: render_compose(loaded, _header(loaded, "#"))}
    for miner in loaded.miners:
        files[GENERATED_DIR / f"{miner.name}.env"] = render_env_file(loaded, miner, _header(loaded, "#"))
    host = Places.on_host(loaded, python, llama_server)
    files[SUPERVISOR_FILE] = render_supervisor(loaded, host, _header(loaded, ";"))
    files[STACK_FILE] = render_stack(loaded, _header(loaded, "#"))
    files[PROMETHEUS_FILE] = render_prometheus(loaded, _header(loaded, "#"))
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


def compose_hash(compose_file: Path) -> str | None:
    """The fleet-file hash recorded in a rendered docker-compose.yml (None if absent/not rendered)."""
    try:
        with compose_file.open(encoding="utf-8") as handle:
            first = handle.readline()
    except OSError:
        return None
    match = _HASH_RE.search(first)
    return match.group(1) if match else None


class Freshness(StrEnum):
    """How the rendered docker-compose.yml stands against the fleet file."""

    current = "current"
    not_rendered = "not-rendered"  # nothing rendered yet: a note (supervisord hosts never render it)
    stale = "stale"  # rendered from another version of the fleet file: an error before `compose up`


@dataclass(frozen=True)
class ComposeStaleness:
    freshness: Freshness
    message: str = ""

    @property
    def stale(self) -> bool:
        return self.freshness is Freshness.stale


def compose_staleness(loaded: LoadedFleet) -> ComposeStaleness:
    """Whether docker-compose.yml is missing or was rendered from another version of the fleet file."""
    compose = loaded.project_dir / COMPOSE_FILE
    if not compose.exists():
        return ComposeStaleness(
            Freshness.not_rendered,
            f"{COMPOSE_FILE} is not rendered yet: run `python -m orchestrator render` (or `make render`)",
        )
    recorded = compose_hash(compose)
    if recorded != loaded.sha256:
        return ComposeStaleness(
            Freshness.stale,
            f"{COMPOSE_FILE} is STALE: {loaded.display_path} changed since it was rendered "
            f"(recorded sha256 {recorded or 'none'}, now {loaded.sha256}); run "
            "`python -m orchestrator render` (or `make render`) before `docker compose up`",
        )
    return ComposeStaleness(Freshness.current)
