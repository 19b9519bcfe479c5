"""The watch loop's records as a :class:`~orchestrator.status.fleetstatus.FleetStatus` (``/status``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from orchestrator.policy import MinerRecord
from orchestrator.probing.modelservers import ServerReport, ServerTarget
from orchestrator.probing.reports import ProbeReport, ProbeTarget
from orchestrator.runtimes.rollout import read_status
from orchestrator.status.fleetstatus import Change, FleetStatus, MinerStatus, Role, ServerStatus, UnitFields

# What the status reads of the watch loop (orchestrator.watch.loop's Watcher and Watched), read-only:
# the watch depends on the status, never the other way round.


class Watched(Protocol):
    """One unit under watch."""

    @property
    def target(self) -> ProbeTarget | ServerTarget: ...
    @property
    def record(self) -> MinerRecord: ...
    @property
    def role(self) -> Role: ...
    @property
    def last_probe(self) -> ProbeReport | ServerReport | None: ...
    @property
    def last_probe_at(self) -> float | None: ...


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Saved(Protocol):
    @property
    def path(self) -> Path: ...


class Watcher(Protocol):
    """The watch loop: its units, its runtime and state file, and its clocks."""

    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def started_at(self) -> float: ...
    @property
    def runtime(self) -> _Named: ...
    @property
    def adopted(self) -> bool: ...
    @property
    def state(self) -> _Saved | None: ...
    @property
    def miners(self) -> Mapping[str, Watched]: ...
    @property
    def servers(self) -> Mapping[str, Watched]: ...
    @property
    def fleet_changed(self) -> str | None: ...

    def wall(self, monotonic: float | None) -> float | None: ...


def _unit(watcher: Watcher, watched: Watched, now: float) -> UnitFields:
    """The fields every unit's status has, from its policy record."""
    rec = watched.record
    return {
        "name": watched.target.name,
        "role": watched.role,
        "port": watched.target.port,
        "state": rec.state,
        "reason": rec.reason,
        "detail": rec.detail,
        "restarts": rec.restarts,
        "restarts_by_reason": dict(rec.restarts_by_reason),
        "last_exit_code": rec.last_exit_code,
        "backoff_remaining": None if rec.backoff_until is None else max(0.0, rec.backoff_until - now),
        "history": tuple(
            Change(watcher.wall(d.at), d.from_state, d.to_state, d.reason, d.detail) for d in rec.history
        ),
    }


def miner_status(watcher: Watcher, watched: Watched, now: float) -> MinerStatus:
    assert isinstance(watched.target, ProbeTarget)
    probe = watched.last_probe
    assert probe is None or isinstance(probe, ProbeReport)
    return MinerStatus(
        **_unit(watcher, watched, now),
        backend=watched.target.backend,
        hotkey=watched.target.hotkey,
        last_probe=None if probe is None else replace(probe, completion=""),
        last_probe_at=watcher.wall(watched.last_probe_at),
    )


def server_status(watcher: Watcher, watched: Watched, now: float) -> ServerStatus:
    assert isinstance(watched.target, ServerTarget)
    check = watched.last_probe
    assert check is None or isinstance(check, ServerReport)
    return ServerStatus(
        **_unit(watcher, watched, now),
        url=watched.target.url,
        last_check=check,
        last_check_at=watcher.wall(watched.last_probe_at),
    )


def snapshot(watcher: Watcher) -> FleetStatus:
    now = watcher.clock()
    return FleetStatus(
        runtime=watcher.runtime.name,
        adopted=watcher.adopted,
        uptime=now - watcher.started_at,
        state_file=None if watcher.state is None else str(watcher.state.path),
        miners=tuple(miner_status(watcher, w, now) for w in watcher.miners.values()),
        model_servers=tuple(server_status(watcher, w, now) for w in watcher.servers.values()),
        fleet_changed=watcher.fleet_changed,
        rollout=None if watcher.state is None else read_status(watcher.state.path.parent.parent),
    )
