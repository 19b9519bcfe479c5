"""``python -m orchestrator rollout``: apply a changed fleet file or new images a few miners at a time.

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
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from orchestrator.errors import PermanentError
from orchestrator.fleet.load import LoadedFleet
from orchestrator.probing.probe import Prober, ProbeReport, ProbeTarget

ROLLOUT_DIR = Path("state") / "rollout"
PREVIOUS = "previous"
STATUS = "status.json"
# What a revision is: the fleet file and everything rendered from it (relative to the project directory).
RENDERED = ("docker-compose.yml", "docker-stack.yml", "config/generated")
POLL = 2.0  # seconds between probes of a replaced miner
# docker compose v2, else docker-compose 1.29 (this checkout's script; run from any project directory)
COMPOSE_SH = Path(__file__).resolve().parents[2] / "scripts" / "compose.sh"


class RolloutError(PermanentError):
    """Nothing to roll back to, or the runtime refused a step."""


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


# --- the runtimes ------------------------------------------------------------------------------------


class Updater(Protocol):
    """How one runtime tells changed miners and replaces them."""

    def prepare(self, miners: Sequence[str]) -> list[str]:
        """Apply every change but the miners' (model servers, the orchestrator); what it changed."""
        ...

    def changed(self, miners: Sequence[str]) -> list[str]:
        """The miners whose running settings or image differ from the rendered ones (or not running)."""
        ...

    def replace(self, names: Sequence[str]) -> None:
        """Replace these miners with the rendered settings (stop the old process, start the new)."""
        ...

    def locate(self, target: ProbeTarget) -> ProbeTarget:
        """Where the replaced miner answers now (on a swarm: its node's address)."""
        ...


class ComposeUpdater:
    """docker compose: a service changed when its rendered config hash (env files included) or its
    image differs from its container's."""

    def __init__(self, loaded: LoadedFleet, compose: Sequence[str] = ("bash", str(COMPOSE_SH))) -> None:
        self.loaded = loaded
        self.compose = [*compose, "-f", str(loaded.project_dir / "docker-compose.yml")]
        self.cwd = loaded.project_dir

    def _run(self, *args: str) -> str:
        done = subprocess.run([*self.compose, *args], cwd=self.cwd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RolloutError(f"compose {' '.join(args)}: {done.stderr.strip()[-800:]}")
        return done.stdout

    def _services(self) -> dict[str, str]:
        lines = self._run("config", "--hash=*").splitlines()
        return dict(line.split(None, 1) for line in lines if line.strip())

    def prepare(self, miners: Sequence[str]) -> list[str]:
        others = [s for s in self._services() if s not in miners]
        before = set(self._changed(others))
        if others:
            self._run("up", "-d", "--no-build", "--no-deps", "--remove-orphans", *others)
        return sorted(before)

    def changed(self, miners: Sequence[str]) -> list[str]:
        return self._changed(list(miners))

    def _changed(self, services: Sequence[str]) -> list[str]:
        import docker

        client = docker.from_env()
        wanted = self._services()
        running = {}
        for ident in self._run("ps", "-q").split():  # this compose project's containers, none other
            try:
                container = client.containers.get(ident)
            except docker.errors.NotFound:
                continue  # removed meanwhile
            if container.labels.get("com.docker.compose.oneoff") != "True":
                running[container.labels.get("com.docker.compose.service")] = container
        images: dict[str, str | None] = {}
        out = []
        for service in services:
            container = running.get(service)
            done_once = (
                container is not None
                and container.status == "exited"
                and (
                    container.attrs["State"].get("ExitCode") == 0  # a one-shot (init) that did its work
                )
            )
            if container is None or (container.status != "running" and not done_once):
                out.append(service)
                continue
            if container.labels.get("com.docker.compose.config-hash") != wanted.get(service):
                out.append(service)
                continue
            tag = container.attrs["Config"]["Image"]
            if tag not in images:
                try:
                    images[tag] = client.images.get(tag).id
                except docker.errors.ImageNotFound:
                    images[tag] = None
            if images[tag] is not None and images[tag] != container.attrs["Image"]:
                out.append(service)  # a new image under the same tag
        return out

    def replace(self, names: Sequence[str]) -> None:
        self._run("up", "-d", "--no-build", "--no-deps", *names)

    def locate(self, target: ProbeTarget) -> ProbeTarget:
        return target


class SupervisorUpdater:
    """supervisord: ``reloadConfig`` says which programs changed (a miner's program carries the hash of
    its rendered settings); a program is replaced by removing and adding its group."""

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy
        self._diff: tuple[list[str], list[str], list[str]] | None = None

    def _reload(self) -> tuple[list[str], list[str], list[str]]:
        if self._diff is None:
            added, changed, removed = self.proxy.supervisor.reloadConfig()[0]
            self._diff = (list(added), list(changed), list(removed))
        return self._diff

    def prepare(self, miners: Sequence[str]) -> list[str]:
        added, changed, removed = self._reload()
        others = [n for n in [*added, *changed] if n not in miners]
        for name in [*removed, *others]:
            self._remove(name)
        for name in others:
            self.proxy.supervisor.addProcessGroup(name)
        return sorted([*others, *removed])

    def changed(self, miners: Sequence[str]) -> list[str]:
        added, changed, _ = self._reload()
        infos = {i["name"]: i for i in self.proxy.supervisor.getAllProcessInfo()}
        stopped = [n for n in miners if infos.get(n, {}).get("statename") not in ("RUNNING", "STARTING")]
        return [n for n in miners if n in added or n in changed or n in stopped]

    def replace(self, names: Sequence[str]) -> None:
        for name in names:
            self._remove(name)
            self.proxy.supervisor.addProcessGroup(name)  # autostart: it starts with the new settings

    def locate(self, target: ProbeTarget) -> ProbeTarget:
        return target

    def _remove(self, name: str) -> None:
        import xmlrpc.client

        try:
            self.proxy.supervisor.stopProcessGroup(name, True)
        except xmlrpc.client.Fault:
            pass  # not running, or not there at all
        try:
            self.proxy.supervisor.removeProcessGroup(name)
        except xmlrpc.client.Fault:
            pass


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


def streaming_within(loaded: LoadedFleet) -> float:
    """Seconds a replaced miner has to stream (``rollout.wait``; default: its start grace and a probe)."""
    fleet = loaded.fleet
    return fleet.rollout.wait or (fleet.restart.start_grace + fleet.probe.timeout)


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


def command(args: Any, loaded: LoadedFleet, err: TextIO) -> int:
    """``rollout [--save | --rollback] [--runtime docker|supervisor|swarm] [--manager ENGINE]``."""
    from orchestrator.fleet.load import load_fleet
    from orchestrator.probing.targets import probe_wallet, targets

    if args.save:
        print(f"rollout: saved the running revision in {save_previous(loaded)}", file=err)
        return 0
    if args.rollback:
        restore_previous(loaded)
        loaded = load_fleet(loaded.path, loaded.project_dir, check_files=False)
    updater: Updater
    if args.runtime == "supervisor":
        import xmlrpc.client

        updater = SupervisorUpdater(
            xmlrpc.client.ServerProxy(f"http://127.0.0.1:{loaded.fleet.supervisor.port}/RPC2")
        )
    elif args.runtime == "swarm":
        from orchestrator.runtimes.swarm.deploy import manager_engine
        from orchestrator.runtimes.swarm.rollout import SwarmUpdater

        swarm = SwarmUpdater(loaded, manager_engine(args.manager), err, streaming_within(loaded))
        try:
            return run_rollout(
                loaded, swarm, targets(loaded, args.host), probe_wallet(loaded), err, rollback=args.rollback
            )
        finally:
            swarm.finish()
    else:
        updater = ComposeUpdater(loaded)
    return run_rollout(
        loaded, updater, targets(loaded, args.host), probe_wallet(loaded), err, rollback=args.rollback
    )


def read_status(project_dir: Path) -> dict[str, Any] | None:
    """The last rollout's progress (None: no rollout yet), for ``/status`` (``project_dir``: where
    ``state/`` is, the orchestrator's own state folder)."""
    try:
        data: dict[str, Any] = json.loads((project_dir / ROLLOUT_DIR / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data
