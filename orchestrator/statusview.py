"""The watch loop's state as the status API serves it (``/status``): one view per unit, plain JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.modelservers import ServerTarget
from orchestrator.probe import ProbeTarget

if TYPE_CHECKING:
    from orchestrator.watch import Watched, Watcher


def unit_view(watcher: Watcher, watched: Watched, now: float) -> dict[str, Any]:
    rec = watched.record
    return {
        "name": watched.target.name,
        "role": watched.role.value,
        "port": watched.target.port,
        "state": rec.state.value,
        "reason": rec.reason,
        "detail": rec.detail,
        "restarts": rec.restarts,
        "restarts_by_reason": dict(rec.restarts_by_reason),
        "last_exit_code": rec.last_exit_code,
        "backoff_remaining": None if rec.backoff_until is None else max(0.0, rec.backoff_until - now),
        "history": [
            {
                "at": watcher.wall(d.at),
                "from": d.from_state.value,
                "to": d.to_state.value,
                "reason": d.reason,
                "detail": d.detail,
            }
            for d in rec.history
        ],
    }


def last_probe(watcher: Watcher, watched: Watched) -> dict[str, Any] | None:
    if watched.last_probe is None:
        return None
    probe = watched.last_probe.as_dict()
    probe.pop("completion", None)
    probe["at"] = watcher.wall(watched.last_probe_at)
    return probe


def snapshot(watcher: Watcher) -> dict[str, Any]:
    now = watcher.clock()
    miners = []
    for watched in watcher.miners.values():
        assert isinstance(watched.target, ProbeTarget)
        view = unit_view(watcher, watched, now)
        view.update(
            backend=watched.target.backend,
            hotkey=watched.target.hotkey,
            last_probe=last_probe(watcher, watched),
        )
        miners.append(view)
    servers = []
    for watched in watcher.servers.values():
        assert isinstance(watched.target, ServerTarget)
        view = unit_view(watcher, watched, now)
        view.update(url=watched.target.url, last_check=last_probe(watcher, watched))
        servers.append(view)
    return {
        "runtime": watcher.runtime.name,
        "adopted": watcher.adopted,
        "uptime": now - watcher.started_at,
        "state_file": None if watcher.state is None else str(watcher.state.path),
        "miners": miners,
        "model_servers": servers,
    }
