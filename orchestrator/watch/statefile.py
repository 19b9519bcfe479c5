"""The watch loop's decisions on disk, so that they outlive the watch process.

One JSON file (``--state PATH``, ``$MINERFLEET_STATE``, default ``state/orchestrator.json`` under the
project directory) holds every unit's policy record: state, reason, restart counts, the crash-loop
window, the backoff deadline and the recent history. The policy runs on monotonic time, which means
nothing after a restart, so the file holds wall-clock times and loading converts them back.

Writes are atomic (a temporary file in the same directory, then ``os.replace``): a watch killed in the
middle of a write leaves the previous file. A missing or unreadable file means fresh records, with a
warning: supervision must go on without its memory rather than not at all.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.errors import PermanentError
from orchestrator.policy import HISTORY_LENGTH, Action, Decision, MinerRecord, State

log = logging.getLogger("orchestrator.state")

STATE_ENV = "MINERFLEET_STATE"
DEFAULT_STATE_FILE = Path("state/orchestrator.json")
VERSION = 1


class StateFileError(PermanentError):
    """The state file cannot be read as saved records (it is then ignored, with a warning)."""


def state_path(explicit: Path | None, project_dir: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """``--state``, else ``$MINERFLEET_STATE``, else ``state/orchestrator.json`` under the project."""
    chosen = explicit or (Path(environ[STATE_ENV]) if environ.get(STATE_ENV) else DEFAULT_STATE_FILE)
    return chosen if chosen.is_absolute() else project_dir / chosen


class StateFile:
    """Saves and loads records; ``clock``/``wall_clock`` are the watch's (monotonic, wall) pair."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.clock = clock
        self.wall_clock = wall_clock
        self._failed = False

    def _offset(self) -> float:
        """Add to a monotonic time to get the wall-clock time."""
        return self.wall_clock() - self.clock()

    # --- writing ------------------------------------------------------------------------------------

    def save(self, records: Mapping[str, MinerRecord]) -> None:
        """Write every record atomically. A failure is logged once and the watch goes on."""
        offset = self._offset()
        document = {
            "version": VERSION,
            "saved_at": self.wall_clock(),
            "units": {name: _dump(record, offset) for name, record in records.items()},
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(document, out, indent=1, sort_keys=True)
                    out.write("\n")
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            if not self._failed:
                log.error(
                    "cannot write the state file %s (%s): decisions will not survive a restart of the "
                    "watch; make its directory writable or pass --state PATH", self.path, exc,
                )  # fmt: skip
            self._failed = True
            return
        self._failed = False

    # --- reading ------------------------------------------------------------------------------------

    def load(self) -> dict[str, MinerRecord]:
        """The saved records by unit name; empty (with a warning on stderr) when missing or unreadable."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            log.warning("no state file at %s: starting with fresh records", self.path)
            return {}
        except OSError as exc:
            log.warning("cannot read the state file %s (%s): starting with fresh records", self.path, exc)
            return {}
        try:
            return self.parse(text)
        except StateFileError as exc:
            log.warning("the state file %s is unusable (%s): starting with fresh records", self.path, exc)
            return {}

    def parse(self, text: str) -> dict[str, MinerRecord]:
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise StateFileError(f"not JSON: {exc}") from exc
        if not isinstance(document, dict) or document.get("version") != VERSION:
            raise StateFileError(f"not a version-{VERSION} state file")
        units = document.get("units")
        if not isinstance(units, dict):
            raise StateFileError("no `units` mapping")
        offset = self._offset()
        try:
            return {str(name): _load(str(name), data, offset) for name, data in units.items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFileError(f"a record is malformed ({type(exc).__name__}: {exc})") from exc


# --- one record <-> JSON --------------------------------------------------------------------------------


def _wall(monotonic: float | None, offset: float) -> float | None:
    return None if monotonic is None else monotonic + offset


def _mono(wall: Any, offset: float) -> float | None:
    return None if wall is None else float(wall) - offset


def _dump(record: MinerRecord, offset: float) -> dict[str, Any]:
    return {
        "state": record.state.value,
        "reason": record.reason,
        "detail": record.detail,
        "restarts": record.restarts,
        "restarts_by_reason": dict(record.restarts_by_reason),
        "consecutive_restarts": record.consecutive_restarts,
        "recent_restarts": [t + offset for t in record.recent_restarts],
        "failed_probes": record.failed_probes,
        "backoff_until": _wall(record.backoff_until, offset),
        "started_at": _wall(record.started_at, offset),
        "healthy_since": _wall(record.healthy_since, offset),
        "last_exit_code": record.last_exit_code,
        "history": [
            {
                "at": d.at + offset,
                "from": d.from_state.value,
                "to": d.to_state.value,
                "reason": d.reason,
                "detail": d.detail,
                "next_attempt_at": _wall(d.next_attempt_at, offset),
                "actions": [a.value for a in d.actions],
            }
            for d in record.history
        ],
    }


def _load(name: str, data: Any, offset: float) -> MinerRecord:
    if not isinstance(data, dict):
        raise TypeError(f"{name}: not a mapping")
    last_exit = data.get("last_exit_code")
    return MinerRecord(
        name=name,
        state=State(data["state"]),
        reason=str(data["reason"]),
        detail=str(data.get("detail", "")),
        restarts=int(data.get("restarts", 0)),
        restarts_by_reason={str(k): int(v) for k, v in dict(data.get("restarts_by_reason", {})).items()},
        consecutive_restarts=int(data.get("consecutive_restarts", 0)),
        recent_restarts=tuple(float(t) - offset for t in data.get("recent_restarts", [])),
        failed_probes=int(data.get("failed_probes", 0)),
        backoff_until=_mono(data.get("backoff_until"), offset),
        started_at=_mono(data.get("started_at"), offset),
        healthy_since=_mono(data.get("healthy_since"), offset),
        last_exit_code=None if last_exit is None else int(last_exit),
        history=tuple(
            Decision(
                at=float(d["at"]) - offset,
                miner=name,
                from_state=State(d["from"]),
                to_state=State(d["to"]),
                reason=str(d["reason"]),
                detail=str(d.get("detail", "")),
                next_attempt_at=_mono(d.get("next_attempt_at"), offset),
                actions=tuple(Action(a) for a in d.get("actions", [])),
            )
            for d in list(data.get("history", []))[-HISTORY_LENGTH:]  # as bounded as the policy keeps it
        ),
    )
