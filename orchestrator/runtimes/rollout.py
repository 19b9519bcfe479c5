"""The rolling update (``python -m orchestrator rollout``): apply a changed fleet file or new images a few
miners at a time, through a runtime's ``Updater`` (``runtimes/<name>/updater.py``).

``docker compose up`` (and ``supervisorctl update``) replace every changed miner at the same moment, and
while their models load none of them answers: a validator that asks then scores them all zero. A rollout
replaces at most ``rollout.max_unavailable`` miners at once and moves on only when each new one streams
(the fleet's own stream probe, every door), so the rest keep answering (docs/ARCHITECTURE.md, "Rolling
updates"):

1. ``--save`` (``make up ROLLING=1`` runs it before rendering) keeps the fleet file and the rendered
   files as they are, the revision the fleet runs, under ``state/rollout/previous``.
2. Everything but the miners (model servers, the orchestrator) is applied as the runtime applies it.
3. The miners whose running settings or image differ from the rendered ones are replaced, a batch at a
   time; a batch that does not stream within ``rollout.wait`` stops the rollout there, the rest stay on
   the old revision, and the command exits 1 saying so.
4. ``--rollback`` puts the saved revision back (the rejected fleet file is kept beside it as
   ``miners.yaml.rejected``) and rolls it out the same way.

The progress is written to ``state/rollout/status.json``, which the watch's ``/status`` and page show.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from orchestrator.fleet.load import LoadedFleet
from orchestrator.probing.probe import Prober
from orchestrator.probing.reports import ProbeReport, ProbeTarget
from orchestrator.runtimes.spec import RolloutError, Updater, streaming_within

ROLLOUT_DIR = Path("state") / "rollout"
PREVIOUS = "previous"
STATUS = "status.json"
# What a revision is: the fleet file and everything rendered from it (relative to the project directory).
RENDERED = ("docker-compose.yml", "docker-stack.yml", "config/generated")
POLL = 2.0  # seconds between probes of a replaced miner


# --- revisions ---------------------------------------------------------------------------------------


def _revision_files(loaded: LoadedFleet) -> list[Path]:
    fleet = loaded.path.resolve().relative_to(loaded.project_dir.resolve())
    return [fleet, *(Path(p) for p in RENDERED)]


def save_previous(loaded: LoadedFleet) -> Path:
    """Keep the fleet file and the rendered files as they are now: the revision to roll back to."""
    into = loaded.project_dir / ROLLOUT_DIR / PREVIOUS
    shutil.rmtree(into, ignore_errors=True)
    for relative in _revision_files(loaded):
        source = loaded.project_dir / relative
        if source.is_dir():
            shutil.copytree(source, into / relative)
        elif source.exists():
            (into / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / relative)
    return into


def restore_previous(loaded: LoadedFleet) -> None:
    """Put the saved revision back; the fleet file it replaces is kept as ``<file>.rejected``."""
    saved = loaded.project_dir / ROLLOUT_DIR / PREVIOUS
    files = _revision_files(loaded)
    if not (saved / files[0]).is_file():
        raise RolloutError(
            f"nothing to roll back to: {saved} holds no saved revision (`make up ROLLING=1` saves one "
            "before each rollout)"
        )
    shutil.copy2(loaded.path, loaded.path.with_name(loaded.path.name + ".rejected"))
    for relative in files:
        source, target = saved / relative, loaded.project_dir / relative
        if source.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)
        elif source.exists():
            shutil.copy2(source, target)


# --- the rollout -------------------------------------------------------------------------------------


class Progress:
    """The rollout's state, written to ``state/rollout/status.json`` at every step (the watch shows it)."""

    def __init__(self, path: Path, out: TextIO, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.out = out
        self.clock = clock
        self.data: dict[str, Any] = {}

    def update(self, message: str, **fields: Any) -> None:
        self.data.update(fields, message=message, updated_at=self.clock())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")
        print(f"rollout: {message}", file=self.out, flush=True)


async def streams(prober: Prober, target: ProbeTarget, within: float) -> ProbeReport:
    """Probe ``target`` until it streams on every door, or ``within`` seconds pass; the last report."""
    deadline = time.monotonic() + within
    while True:
        report = await prober.probe(target)
        if report.healthy or time.monotonic() >= deadline:
            return report
        await asyncio.sleep(POLL)


async def roll(
    loaded: LoadedFleet,
    updater: Updater,
    prober: Prober,
    targets: dict[str, ProbeTarget],
    progress: Progress,
    *,
    rollback: bool = False,
) -> int:
    """Replace the changed miners, ``max_unavailable`` at a time, each batch gated on streaming."""
    spec = loaded.fleet.rollout
    within = streaming_within(loaded)
    miners = [m.name for m in loaded.miners]
    kind = "rollback" if rollback else "rollout"
    others = await asyncio.to_thread(updater.prepare, miners)
    changed = await asyncio.to_thread(updater.changed, miners)
    progress.update(
        f"{kind}: {len(changed)} of {len(miners)} miners changed ({', '.join(changed) or 'none'}), "
        f"{spec.max_unavailable} at a time" + (f"; applied {', '.join(others)}" if others else ""),
        kind=kind, state="rolling", started_at=progress.clock(), max_unavailable=spec.max_unavailable,
        pending=list(changed), replacing=[], done=[], failed={},
    )  # fmt: skip
    done: list[str] = []
    for start in range(0, len(changed), spec.max_unavailable):
        batch = changed[start : start + spec.max_unavailable]
        pending = changed[start + len(batch) :]
        progress.update(f"replacing {', '.join(batch)}", replacing=batch, pending=pending)
        await asyncio.to_thread(updater.replace, batch)
        where = await asyncio.gather(*(asyncio.to_thread(updater.locate, targets[name]) for name in batch))
        reports = await asyncio.gather(*(streams(prober, target, within) for target in where))
        failed = {r.name: f"{r.verdict.value}: {r.reason}" for r in reports if not r.healthy}
        if failed:
            left, why = ", ".join(pending) or "none", "; ".join(failed.values())
            progress.update(
                f"stopped: {', '.join(failed)} did not stream within {within:g}s ({why}); "
                f"left on the old revision: {left}. Roll back with `make up ROLLBACK=1` "
                "(python -m orchestrator rollout --rollback)",
                state="stopped", replacing=[], failed=failed, done=done,
            )  # fmt: skip
            return 1
        done += batch
        progress.update(f"{', '.join(batch)} stream again", replacing=[], done=list(done))
    progress.update(f"{kind} done: {len(done)} miner(s) replaced", state="done", pending=[], replacing=[])
    return 0


def run_rollout(
    loaded: LoadedFleet,
    updater: Updater,
    probe_targets: Sequence[ProbeTarget],
    wallet: Any,
    out: TextIO = sys.stderr,
    *,
    rollback: bool = False,
) -> int:
    probe = loaded.fleet.probe
    progress = Progress(loaded.project_dir / ROLLOUT_DIR / STATUS, out)

    async def main() -> int:
        prober = Prober(wallet, probe.prompt, probe.timeout, probe.max_concurrency)
        try:
            targets = {t.name: t for t in probe_targets}
            return await roll(loaded, updater, prober, targets, progress, rollback=rollback)
        finally:
            await prober.aclose()

    return asyncio.run(main())


def read_status(project_dir: Path) -> dict[str, Any] | None:
    """The last rollout's progress (None: no rollout yet), for ``/status`` (``project_dir``: where
    ``state/`` is, the orchestrator's own state folder)."""
    try:
        data: dict[str, Any] = json.loads((project_dir / ROLLOUT_DIR / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data
