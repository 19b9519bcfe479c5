"""The watch's state file: wall-clock times across a restart (monotonic time starts over), atomic
writes, and a missing or corrupt file means fresh records with a warning."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from orchestrator.policy import (
    HISTORY_LENGTH,
    Exited,
    MinerRecord,
    ProbeResult,
    RestartPolicy,
    Started,
    State,
    Tick,
    transition,
)
from orchestrator.watch.statefile import DEFAULT_STATE_FILE, STATE_ENV, StateFile, state_path

POLICY = RestartPolicy()


class Clocks:
    """A monotonic clock and a wall clock the test moves by hand."""

    def __init__(self, monotonic: float, wall: float) -> None:
        self.monotonic = monotonic
        self.wall = wall

    def file(self, path: Path) -> StateFile:
        return StateFile(path, clock=lambda: self.monotonic, wall_clock=lambda: self.wall)


def _backing_off(at: float) -> MinerRecord:
    record = MinerRecord("a")
    for event in (Started(at), ProbeResult(at + 1, ok=True), Exited(at + 10, exit_code=1)):
        record, _ = transition(record, event, POLICY)
    assert record.state is State.BACKOFF
    return record


def test_times_survive_a_restart_as_wall_clock_times(tmp_path: Path) -> None:
    before = Clocks(monotonic=100.0, wall=1_000_000.0)
    record = _backing_off(90.0)  # crashed at monotonic 100, backoff until 101
    before.file(tmp_path / "s.json").save({"a": record})

    # The watch restarts half a second later (wall); its monotonic clock starts near 0.
    after = Clocks(monotonic=5.0, wall=1_000_000.5)
    loaded = after.file(tmp_path / "s.json").load()["a"]
    assert loaded.state is State.BACKOFF and loaded.reason == "crash:exit-1"
    assert loaded.restarts == 1 and loaded.restarts_by_reason == {"crash:exit-1": 1}
    assert loaded.backoff_until == pytest.approx(5.5)  # still 0.5 s to wait
    assert loaded.recent_restarts == pytest.approx((4.5,))
    assert [d.to_state for d in loaded.history] == [d.to_state for d in record.history]
    assert loaded.history[-1].at == pytest.approx(4.5)
    # And it drives on: the deadline passes on the new clock.
    loaded, actions = transition(loaded, Tick(5.5), POLICY)
    assert loaded.state is State.STARTING and actions


def test_a_loaded_history_is_as_bounded_as_the_policy_keeps_it(tmp_path: Path) -> None:
    """A file written by hand or by another version with a longer history: only the newest are kept."""
    clocks = Clocks(monotonic=100.0, wall=1_000_000.0)
    clocks.file(tmp_path / "s.json").save({"a": _backing_off(90.0)})
    data = json.loads((tmp_path / "s.json").read_text())
    entry = data["units"]["a"]["history"][-1]
    data["units"]["a"]["history"] = [{**entry, "at": entry["at"] + i} for i in range(3 * HISTORY_LENGTH)]
    (tmp_path / "s.json").write_text(json.dumps(data))
    loaded = clocks.file(tmp_path / "s.json").load()["a"]
    assert len(loaded.history) == HISTORY_LENGTH
    assert loaded.history[-1].at == pytest.approx(90.0 + 10 + 3 * HISTORY_LENGTH - 1)


def test_the_file_is_json_with_wall_clock_times(tmp_path: Path) -> None:
    clocks = Clocks(monotonic=100.0, wall=1_000_000.0)
    clocks.file(tmp_path / "s.json").save({"a": _backing_off(90.0)})
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["version"] == 1 and data["units"]["a"]["state"] == "BACKOFF"
    assert data["units"]["a"]["backoff_until"] == pytest.approx(1_000_001.0)


def test_writes_are_atomic_and_leave_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state" / "orchestrator.json"
    store = StateFile(path)
    store.save({"a": MinerRecord("a")})
    first = path.read_text()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    store.save({"a": _backing_off(0.0)})
    assert path.read_text() == first  # the old file is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["orchestrator.json"]


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", '{"version": 99, "units": {}}', '{"version": 1, "units": {"a": {"state": "NOPE"}}}'],
    ids=["not-json", "not-a-mapping", "other-version", "bad-record"],
)
def test_a_corrupt_file_means_fresh_records_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    path = tmp_path / "s.json"
    path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="orchestrator.state"):
        assert StateFile(path).load() == {}
    assert "unusable" in caplog.text and "fresh records" in caplog.text


def test_a_missing_file_means_fresh_records_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="orchestrator.state"):
        assert StateFile(tmp_path / "nothing.json").load() == {}
    assert "no state file" in caplog.text


def test_state_path_flag_then_environment_then_default(tmp_path: Path) -> None:
    assert state_path(None, tmp_path, environ={}) == tmp_path / DEFAULT_STATE_FILE
    assert state_path(None, tmp_path, environ={STATE_ENV: "/app/state/o.json"}) == Path("/app/state/o.json")
    assert state_path(Path("x.json"), tmp_path, environ={STATE_ENV: "/y"}) == tmp_path / "x.json"
    assert DEFAULT_STATE_FILE == Path("state/orchestrator.json")
