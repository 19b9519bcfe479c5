"""The restart policy, state by state, on virtual time (plain floats; nothing sleeps)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator.policy import (
    HISTORY_LENGTH,
    Action,
    Adopted,
    Blame,
    Decision,
    Event,
    Exited,
    MinerRecord,
    OperatorStopped,
    ProbeResult,
    RestartPolicy,
    Resumed,
    Started,
    StartRequested,
    State,
    StopRequested,
    Tick,
    classify_exit,
    transition,
)

POLICY = RestartPolicy()
GRACE = POLICY.start_grace
N = POLICY.unhealthy_after_failed_probes


def run(
    record: MinerRecord, *events: Event, policy: RestartPolicy = POLICY
) -> tuple[MinerRecord, list[Action]]:
    """Feed events in order; return the last record and every action asked for along the way."""
    actions: list[Action] = []
    for event in events:
        record, step = transition(record, event, policy)
        actions.extend(step)
    return record, actions


def starting(at: float = 0.0) -> MinerRecord:
    """A miner the operator just started, whose process is up since ``at``."""
    record, _ = run(MinerRecord("a"), StartRequested(at), Started(at))
    assert record.state is State.STARTING
    return record


def running(at: float = 0.0) -> MinerRecord:
    """A miner that became healthy at ``at + 1``."""
    record, _ = run(starting(at), ProbeResult(at + 1, ok=True))
    assert record.state is State.RUNNING
    return record


def unhealthy(at: float = 0.0) -> MinerRecord:
    """A RUNNING miner whose first probe after becoming healthy failed (at ``at + 10``)."""
    record, _ = run(running(at), ProbeResult(at + 10, ok=False, reason="timeout"))
    assert record.state is State.UNHEALTHY
    return record


def backoff(at: float = 0.0) -> MinerRecord:
    """A miner that crashed at ``at + 10`` and waits out its first backoff."""
    record, _ = run(running(at), Exited(at + 10, exit_code=1))
    assert record.state is State.BACKOFF
    return record


def fatal(at: float = 0.0) -> MinerRecord:
    """A miner that exited with a configuration error at ``at + 5``."""
    record, _ = run(starting(at), Exited(at + 5, exit_code=78, detail="error: MINER_AXON__PORT: in use"))
    assert record.state is State.FATAL
    return record


# --- exit classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exit_code", "signal", "oom", "reason"),
    [
        (0, None, False, "clean-exit"),
        (75, None, False, "forward-exception"),
        (78, None, False, "config-error"),
        (1, None, False, "crash:exit-1"),
        (2, None, False, "crash:exit-2"),
        (255, None, False, "crash:exit-255"),  # 255 - 128 = 127 is no signal
        (137, None, False, "killed:SIGKILL"),  # docker reports a signal death as 128 + N
        (143, None, False, "killed:SIGTERM"),
        (-9, None, False, "killed:SIGKILL"),  # subprocess convention
        (None, 9, False, "killed:SIGKILL"),
        (None, 11, False, "killed:SIGSEGV"),
        (None, 200, False, "killed:200"),
        (137, None, True, "oom"),  # the OOM killer's SIGKILL is named by the runtime's flag
        (0, None, True, "oom"),
        (None, None, False, "crash:unknown"),
    ],
)
def test_classify_exit(exit_code: int | None, signal: int | None, oom: bool, reason: str) -> None:
    assert classify_exit(exit_code, signal, oom) == reason


# --- the policy's numbers ------------------------------------------------------------------------


def test_policy_defaults() -> None:
    assert POLICY.model_dump() == {
        "backoff_initial": 1.0,
        "backoff_factor": 2.0,
        "backoff_max": 60.0,
        "reset_after": 300.0,
        "crash_loop_max_restarts": 5,
        "crash_loop_window": 300.0,
        "unhealthy_after_failed_probes": 3,
        "start_grace": 120.0,
    }


def test_policy_fields_are_described() -> None:
    for name, info in RestartPolicy.model_fields.items():
        assert info.description, name


def test_policy_is_frozen_and_strict() -> None:
    with pytest.raises(ValidationError):
        POLICY.backoff_max = 5.0  # type: ignore[misc]
    with pytest.raises(ValidationError, match="backof_max"):
        RestartPolicy.model_validate({"backof_max": 5})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backoff_initial", 0),
        ("backoff_initial", -1),
        ("backoff_factor", 0.5),
        ("backoff_max", 0),
        ("reset_after", 0),
        ("crash_loop_max_restarts", 0),
        ("crash_loop_window", -5),
        ("unhealthy_after_failed_probes", 0),
        ("start_grace", -1),
    ],
)
def test_policy_rejects_non_positive_numbers(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        RestartPolicy.model_validate({field: value})


def test_policy_accepts_zero_grace() -> None:
    assert RestartPolicy(start_grace=0).start_grace == 0


def test_policy_rejects_max_below_initial() -> None:
    with pytest.raises(ValidationError, match="backoff_max"):
        RestartPolicy(backoff_initial=10, backoff_max=5)


def test_with_overrides_validates_and_keeps_the_rest() -> None:
    miner = POLICY.with_overrides({"backoff_max": 10, "start_grace": 600})
    assert (miner.backoff_max, miner.start_grace, miner.backoff_initial) == (10.0, 600.0, 1.0)
    assert POLICY.backoff_max == 60.0
    with pytest.raises(ValidationError, match="crash_loop_window"):
        POLICY.with_overrides({"crash_loop_window": -1})
    with pytest.raises(ValidationError):
        POLICY.with_overrides({"no_such_field": 1})


def test_backoff_delay_doubles_up_to_the_cap() -> None:
    assert [POLICY.backoff_delay(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert POLICY.backoff_delay(10_000) == 60.0  # no float overflow far past the cap
    assert RestartPolicy(backoff_initial=0.5, backoff_factor=3, backoff_max=10).backoff_delay(3) == 4.5
    with pytest.raises(ValueError):
        POLICY.backoff_delay(0)


# --- STOPPED -------------------------------------------------------------------------------------


def test_a_new_record_is_stopped_and_clean() -> None:
    record = MinerRecord("a")
    assert record.state is State.STOPPED
    assert (record.restarts, record.consecutive_restarts, record.history) == (0, 0, ())


def test_stopped_start_requested_starts() -> None:
    record, actions = transition(MinerRecord("a"), StartRequested(5.0), POLICY)
    assert record.state is State.STARTING
    assert actions == [Action.START]
    assert record.started_at == 5.0
    assert record.decision is not None
    assert (record.decision.from_state, record.decision.to_state) == (State.STOPPED, State.STARTING)
    assert record.decision.reason == "start-requested"


@pytest.mark.parametrize(
    "event",
    [StopRequested(1.0), ProbeResult(1.0, ok=True), ProbeResult(1.0, ok=False), Tick(1.0)],
    ids=["stop", "probe-ok", "probe-failed", "tick"],
)
def test_stopped_ignores(event: Event) -> None:
    stopped, _ = run(starting(), StopRequested(0.5))
    record, actions = transition(stopped, event, POLICY)
    assert (record.state, actions, record.decision) == (State.STOPPED, [], None)
    assert record.history == stopped.history


def test_stopped_exit_after_a_stop_is_not_a_crash() -> None:
    # Stopping may end in SIGKILL (137) when the miner is slow to quit; that must not restart it.
    record, actions = run(running(), StopRequested(50.0), Exited(52.0, exit_code=137))
    assert (record.state, actions) == (State.STOPPED, [Action.STOP])
    assert record.restarts == 0
    assert record.last_exit_code == 137


def test_stopped_started_by_hand_is_followed() -> None:
    record, actions = transition(MinerRecord("a"), Started(3.0), POLICY)
    assert (record.state, actions, record.started_at) == (State.STARTING, [], 3.0)
    assert record.reason == "started"


def test_adopted_running_goes_to_running_without_a_restart() -> None:
    record, actions = transition(MinerRecord("a"), Adopted(100.0, running=True), POLICY)
    assert record.state is State.RUNNING
    assert actions == []
    assert (record.restarts, record.consecutive_restarts, record.recent_restarts) == (0, 0, ())
    assert record.healthy_since == 100.0
    # No grace period: an adopted miner was loaded long ago, so a failed probe counts at once.
    record, _ = transition(record, ProbeResult(101.0, ok=False, reason="timeout"), POLICY)
    assert (record.state, record.failed_probes) == (State.UNHEALTHY, 1)


def test_adopted_not_running_is_started() -> None:
    record, actions = transition(MinerRecord("a"), Adopted(100.0, running=False), POLICY)
    assert (record.state, actions, record.restarts) == (State.STARTING, [Action.START], 0)


def test_adopted_is_ignored_once_the_policy_drives_the_miner() -> None:
    stopped, _ = run(starting(), StopRequested(1.0))
    record, actions = transition(stopped, Adopted(2.0, running=False), POLICY)
    assert (record.state, actions) == (State.STOPPED, [])
    record, actions = transition(running(), Adopted(30.0, running=False), POLICY)
    assert (record.state, actions) == (State.RUNNING, [])


# --- STARTING ------------------------------------------------------------------------------------


def test_starting_ignores_failed_probes_during_grace() -> None:
    probes = [ProbeResult(t, ok=False, reason="connection refused") for t in (10.0, 40.0, 70.0, 100.0, 119.9)]
    record, actions = run(starting(), *probes)
    assert (record.state, record.failed_probes, actions) == (State.STARTING, 0, [])


def test_starting_first_good_probe_is_running() -> None:
    record, actions = run(starting(), ProbeResult(30.0, ok=True))
    assert (record.state, actions, record.healthy_since) == (State.RUNNING, [], 30.0)
    assert record.reason == "probe-ok"


def test_starting_failed_probe_after_grace_is_unhealthy() -> None:
    record, actions = run(starting(), ProbeResult(GRACE, ok=False, reason="timeout"))
    assert (record.state, record.failed_probes, actions) == (State.UNHEALTHY, 1, [])
    assert record.detail == f"1/{N} probes failed: timeout"


def test_starting_grace_runs_from_the_real_start() -> None:
    # StartRequested at 0, but the process only came up at 50 (image pull, slow runtime).
    record, _ = run(MinerRecord("a"), StartRequested(0.0), Started(50.0))
    record, _ = transition(record, ProbeResult(GRACE + 10, ok=False), POLICY)
    assert (record.state, record.failed_probes) == (State.STARTING, 0)
    record, _ = transition(record, ProbeResult(GRACE + 50, ok=False), POLICY)
    assert (record.state, record.failed_probes) == (State.UNHEALTHY, 1)


def test_starting_never_healthy_is_restarted_after_n_failures() -> None:
    probes = [ProbeResult(GRACE + 30 * i, ok=False, reason="timeout") for i in range(N)]
    record, actions = run(starting(), *probes)
    assert actions == [Action.RESTART]
    assert record.state is State.STARTING
    assert record.restarts_by_reason == {"probe-failed": 1}


def test_starting_crash_backs_off() -> None:
    record, actions = run(starting(), Exited(5.0, exit_code=1))
    assert (record.state, actions, record.reason) == (State.BACKOFF, [], "crash:exit-1")
    assert record.backoff_until == 6.0


def test_starting_stop_requested_stops() -> None:
    record, actions = run(starting(), StopRequested(5.0))
    assert (record.state, actions) == (State.STOPPED, [Action.STOP])


def test_starting_ignores_start_requested_and_tick() -> None:
    before = starting()
    record, actions = run(before, StartRequested(5.0), Tick(GRACE * 3))
    assert (record.state, actions, record.history) == (State.STARTING, [], before.history)


# --- RUNNING -------------------------------------------------------------------------------------


def test_running_good_probe_changes_nothing() -> None:
    before = running()
    record, actions = transition(before, ProbeResult(60.0, ok=True), POLICY)
    assert (record.state, actions, record.decision, record.history) == (
        State.RUNNING,
        [],
        None,
        before.history,
    )


def test_running_failed_probe_is_unhealthy_at_once() -> None:
    record, actions = run(running(), ProbeResult(10.0, ok=False, reason="empty completion"))
    assert (record.state, record.failed_probes, actions) == (State.UNHEALTHY, 1, [])
    assert record.reason == "probe-failed"


def test_running_n_failed_probes_restart() -> None:
    probes = [ProbeResult(10.0 + 30 * i, ok=False, reason="timeout") for i in range(N)]
    record, actions = run(running(), *probes[:-1])
    assert (record.state, actions) == (State.UNHEALTHY, [])
    record, actions = transition(record, probes[-1], POLICY)
    assert actions == [Action.RESTART]
    assert record.state is State.STARTING
    assert (record.restarts, record.consecutive_restarts, record.failed_probes) == (1, 1, 0)
    assert record.restarts_by_reason == {"probe-failed": 1}
    assert record.started_at == probes[-1].now  # a new grace period for the new process
    assert record.detail == f"{N}/{N} probes failed: timeout"


def test_one_failed_probe_restarts_when_n_is_one() -> None:
    policy = RestartPolicy(unhealthy_after_failed_probes=1)
    record, actions = run(running(), ProbeResult(10.0, ok=False), policy=policy)
    assert (record.state, actions) == (State.STARTING, [Action.RESTART])


def test_running_clean_exit_stops_without_restart() -> None:
    record, actions = run(running(), Exited(20.0, exit_code=0))
    assert (record.state, actions, record.reason) == (State.STOPPED, [], "clean-exit")
    assert record.restarts == 0
    # Nothing brings it back on its own.
    record, actions = run(record, Tick(10_000.0), ProbeResult(10_001.0, ok=False))
    assert (record.state, actions) == (State.STOPPED, [])


def test_running_config_error_is_fatal_with_the_miners_message() -> None:
    line = "error: MINER_LLAMACPP__MODEL_PATH: /models/x.gguf does not exist"
    record, actions = run(running(), Exited(20.0, exit_code=78, detail=line))
    assert (record.state, actions, record.reason, record.detail) == (State.FATAL, [], "config-error", line)
    assert (record.restarts, record.last_exit_code, record.backoff_until) == (0, 78, None)
    record, actions = run(record, Tick(10_000.0))
    assert (record.state, actions) == (State.FATAL, [])


def test_a_deregistered_hotkey_is_fatal_as_deregistered() -> None:
    line = "error: MINER_WALLET_HOTKEY: hotkey 5F... is no longer registered (deregistered) on netuid 1"
    record, actions = run(running(), Exited(20.0, exit_code=78, detail=line))
    assert (record.state, actions, record.reason, record.detail) == (State.FATAL, [], "deregistered", line)
    record, actions = run(record, Tick(10_000.0))
    assert (record.state, actions) == (State.FATAL, [])


@pytest.mark.parametrize(
    ("exited", "reason"),
    [
        (Exited(20.0, exit_code=75, detail="backend error"), "forward-exception"),
        (Exited(20.0, exit_code=1), "crash:exit-1"),
        (Exited(20.0, exit_code=137), "killed:SIGKILL"),
        (Exited(20.0, exit_code=None, signal=9), "killed:SIGKILL"),
        (Exited(20.0, exit_code=137, oom=True), "oom"),
    ],
)
def test_running_failure_exits_back_off(exited: Exited, reason: str) -> None:
    record, actions = run(running(), exited)
    assert (record.state, actions, record.reason) == (State.BACKOFF, [], reason)
    assert (record.backoff_until, record.restarts, record.restarts_by_reason) == (21.0, 1, {reason: 1})
    assert record.decision is not None and record.decision.next_attempt_at == 21.0


def test_running_stop_requested_stops() -> None:
    record, actions = run(running(), StopRequested(20.0))
    assert (record.state, actions, record.reason) == (State.STOPPED, [Action.STOP], "stop-requested")


# --- UNHEALTHY -----------------------------------------------------------------------------------


def test_unhealthy_good_probe_recovers_and_resets_the_count() -> None:
    record, _ = run(unhealthy(), ProbeResult(40.0, ok=False))
    assert record.failed_probes == 2
    record, actions = run(record, ProbeResult(70.0, ok=True))
    assert (record.state, record.failed_probes, record.healthy_since, actions) == (State.RUNNING, 0, 70.0, [])
    # The count starts over: N - 1 new failures do not restart.
    record, actions = run(record, *[ProbeResult(100.0 + 30 * i, ok=False) for i in range(N - 1)])
    assert (record.state, actions) == (State.UNHEALTHY, [])


def test_unhealthy_more_failures_stay_unhealthy_until_n() -> None:
    record, actions = run(unhealthy(), ProbeResult(40.0, ok=False, reason="timeout"))
    assert (record.state, record.failed_probes, actions) == (State.UNHEALTHY, 2, [])
    assert record.decision is None  # no state change, nothing to log as a decision


def test_unhealthy_exit_backs_off() -> None:
    record, actions = run(unhealthy(), Exited(30.0, exit_code=75))
    assert (record.state, actions, record.reason, record.failed_probes) == (
        State.BACKOFF,
        [],
        "forward-exception",
        0,
    )


def test_unhealthy_stop_requested_stops() -> None:
    record, actions = run(unhealthy(), StopRequested(30.0))
    assert (record.state, actions) == (State.STOPPED, [Action.STOP])


def test_exit_of_the_replaced_process_is_not_a_second_failure() -> None:
    probes = [ProbeResult(10.0 + 30 * i, ok=False) for i in range(N)]
    record, actions = run(running(), *probes)
    assert actions == [Action.RESTART]
    # The runtime stops the old process (it may report its SIGKILL) and then starts the new one.
    record, actions = run(record, Exited(80.0, exit_code=137), Started(81.0))
    assert (record.state, actions, record.restarts, record.started_at) == (State.STARTING, [], 1, 81.0)
    # Once the new process is up, its own exit counts again.
    record, actions = run(record, Exited(90.0, exit_code=1))
    assert (record.state, record.restarts) == (State.BACKOFF, 2)


# --- BACKOFF -------------------------------------------------------------------------------------


def test_backoff_waits_for_the_deadline_then_starts() -> None:
    record = backoff()  # crashed at 10, first backoff is 1 s
    assert record.backoff_until == 11.0
    early, actions = transition(record, Tick(10.9), POLICY)
    assert (early.state, actions) == (State.BACKOFF, [])
    record, actions = transition(early, Tick(11.0), POLICY)
    assert (record.state, actions) == (State.STARTING, [Action.START])
    assert (record.started_at, record.backoff_until, record.reason) == (11.0, None, "backoff-elapsed")
    assert record.decision is not None
    assert record.decision.log_line() == (
        "miner=a from=BACKOFF to=STARTING reason=backoff-elapsed action=start "
        'detail="restart 1 after crash:exit-1"'
    )


@pytest.mark.parametrize(
    "event",
    [
        ProbeResult(10.5, ok=True),
        ProbeResult(10.5, ok=False),
        Exited(10.5, exit_code=1),
        StartRequested(10.5),
    ],
    ids=["probe-ok", "probe-failed", "exited", "start"],
)
def test_backoff_ignores(event: Event) -> None:
    before = backoff()
    record, actions = transition(before, event, POLICY)
    assert (record.state, actions, record.restarts, record.backoff_until) == (State.BACKOFF, [], 1, 11.0)


def test_backoff_stop_requested_cancels_the_restart() -> None:
    record, actions = run(backoff(), StopRequested(10.5))
    assert (record.state, actions, record.backoff_until) == (State.STOPPED, [], None)
    record, actions = run(record, Tick(100.0))
    assert (record.state, actions) == (State.STOPPED, [])


def test_backoff_started_by_hand_is_followed() -> None:
    record, actions = run(backoff(), Started(10.5))
    assert (record.state, actions, record.backoff_until, record.started_at) == (
        State.STARTING,
        [],
        None,
        10.5,
    )


# --- FATAL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [Tick(1000.0), ProbeResult(1000.0, ok=True), Exited(1000.0, exit_code=1), Adopted(1000.0, running=True)],
    ids=["tick", "probe", "exited", "adopted"],
)
def test_fatal_ignores(event: Event) -> None:
    record, actions = transition(fatal(), event, POLICY)
    assert (record.state, actions) == (State.FATAL, [])


def test_fatal_start_requested_starts_over() -> None:
    record = crash_loop()
    assert record.consecutive_restarts > 0 and record.recent_restarts
    record, actions = transition(record, StartRequested(1000.0), POLICY)
    assert (record.state, actions) == (State.STARTING, [Action.START])
    assert (record.consecutive_restarts, record.recent_restarts, record.failed_probes) == (0, (), 0)
    # Totals are history, not policy input: they survive an operator restart for the metrics.
    assert record.restarts == POLICY.crash_loop_max_restarts


def test_fatal_stop_requested_is_stopped_without_action() -> None:
    record, actions = run(fatal(), StopRequested(100.0))
    assert (record.state, actions) == (State.STOPPED, [])


# --- backoff, reset and crash loop over time -----------------------------------------------------


def crash_loop(policy: RestartPolicy = POLICY) -> MinerRecord:
    """Crash right after every restart until the policy gives up; returns the FATAL record."""
    record, now = running(), 10.0
    for _ in range(policy.crash_loop_max_restarts + 1):
        record, _ = run(record, Exited(now, exit_code=1), policy=policy)
        if record.state is State.FATAL:
            return record
        assert record.backoff_until is not None
        now = record.backoff_until
        record, _ = run(record, Tick(now), Started(now), policy=policy)
        now += 0.5
    raise AssertionError("the crash loop was never cut off")


def test_backoff_sequence_doubles_up_to_the_cap() -> None:
    policy = RestartPolicy(crash_loop_max_restarts=100)
    record, now, delays = running(), 10.0, []
    for _ in range(9):
        record, _ = run(record, Exited(now, exit_code=75), policy=policy)
        assert record.state is State.BACKOFF and record.backoff_until is not None
        delays.append(record.backoff_until - now)
        now = record.backoff_until
        record, actions = run(record, Tick(now), Started(now), policy=policy)
        assert actions == [Action.START]
        now += 0.5  # dies half a second after each start: never healthy, never reset
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert record.restarts_by_reason == {"forward-exception": 9}


def test_crash_loop_is_cut_off() -> None:
    record = crash_loop()
    assert record.state is State.FATAL
    assert record.reason == "crash-loop"
    assert record.restarts == POLICY.crash_loop_max_restarts  # the refused restart is not counted
    assert record.detail.startswith(f"{POLICY.crash_loop_max_restarts + 1} restarts within 300s")
    assert "crash:exit-1" in record.detail
    record, actions = run(record, Tick(10_000.0))
    assert (record.state, actions) == (State.FATAL, [])


def test_crash_loop_counts_only_the_window() -> None:
    # Restarts 100 s apart: never more than 3 in any 300 s window, so never FATAL.
    policy = RestartPolicy(crash_loop_max_restarts=3, crash_loop_window=300.0, reset_after=10_000.0)
    record, now = running(), 10.0
    for _ in range(20):
        record, _ = run(record, Exited(now, exit_code=1), policy=policy)
        assert record.state is State.BACKOFF, record.detail
        assert record.backoff_until is not None
        record, _ = run(record, Tick(record.backoff_until), Started(record.backoff_until), policy=policy)
        now += 100.0
    assert record.restarts == 20
    assert len(record.recent_restarts) <= 3


def test_crash_loop_of_a_hung_miner_stops_it() -> None:
    policy = RestartPolicy(unhealthy_after_failed_probes=1, crash_loop_max_restarts=2, start_grace=0)
    record, actions = run(
        running(),
        ProbeResult(10.0, ok=False),
        Started(11.0),
        ProbeResult(20.0, ok=False),
        Started(21.0),
        ProbeResult(30.0, ok=False),
        policy=policy,
    )
    assert actions == [Action.RESTART, Action.RESTART, Action.STOP]
    assert (record.state, record.reason, record.restarts) == (State.FATAL, "crash-loop", 2)


def three_crashes() -> tuple[MinerRecord, float]:
    """A miner restarted three times in a row, then healthy again; returns it and when it got healthy."""
    record, now = running(), 10.0
    for _ in range(3):
        record, _ = run(record, Exited(now, exit_code=1))
        assert record.backoff_until is not None
        now = record.backoff_until
        record, _ = run(record, Tick(now), Started(now))
        now += 0.5
    record, _ = run(record, ProbeResult(now, ok=True))
    assert (record.state, record.consecutive_restarts) == (State.RUNNING, 3)
    return record, now


def test_backoff_resets_after_a_healthy_period() -> None:
    record, healthy_at = three_crashes()
    record, _ = run(record, Tick(healthy_at + POLICY.reset_after))
    assert record.consecutive_restarts == 0
    record, _ = run(record, Exited(healthy_at + 400.0, exit_code=1))
    assert record.backoff_until == healthy_at + 400.0 + 1.0


def test_backoff_does_not_reset_before_the_healthy_period() -> None:
    record, healthy_at = three_crashes()
    record, _ = run(record, Tick(healthy_at + POLICY.reset_after - 1))
    record, _ = run(record, Exited(healthy_at + POLICY.reset_after - 0.5, exit_code=1))
    assert record.consecutive_restarts == 4
    assert record.backoff_until == healthy_at + POLICY.reset_after - 0.5 + 8.0


def test_backoff_resets_even_without_a_tick() -> None:
    record, healthy_at = three_crashes()
    record, _ = run(record, Exited(healthy_at + 1000.0, exit_code=1))
    assert (record.consecutive_restarts, record.backoff_until) == (1, healthy_at + 1001.0)


def test_an_unhealthy_spell_interrupts_the_healthy_period() -> None:
    record, healthy_at = three_crashes()
    record, _ = run(
        record,
        ProbeResult(healthy_at + 200.0, ok=False),  # -> UNHEALTHY: the clock stops
        ProbeResult(healthy_at + 230.0, ok=True),  # -> RUNNING again: the clock restarts here
        Exited(healthy_at + 230.0 + POLICY.reset_after - 1, exit_code=1),
    )
    assert record.consecutive_restarts == 4


# --- decisions and records -----------------------------------------------------------------------


def test_decision_log_line() -> None:
    decision = Decision(
        at=10.0,
        miner="a",
        from_state=State.RUNNING,
        to_state=State.BACKOFF,
        reason="forward-exception",
        next_attempt_at=12.0,
    )
    assert (
        decision.log_line() == "miner=a from=RUNNING to=BACKOFF reason=forward-exception next_attempt_in=2.0s"
    )


def test_decision_log_line_quotes_and_stays_one_line() -> None:
    decision = Decision(
        at=0.0,
        miner="gpu miner",
        from_state=State.RUNNING,
        to_state=State.FATAL,
        reason="config-error",
        detail='error: bad "port"\nsee C:\\x',
        actions=(Action.STOP,),
    )
    line = decision.log_line()
    assert line == (
        'miner="gpu miner" from=RUNNING to=FATAL reason=config-error action=stop '
        'detail="error: bad \\"port\\"\\nsee C:\\\\x"'
    )
    assert "\n" not in line


def test_transition_returns_a_new_record_and_leaves_the_old_one() -> None:
    before = running()
    history = before.history
    after, _ = transition(before, Exited(20.0, exit_code=1), POLICY)
    assert (before.state, before.restarts, before.restarts_by_reason, before.history) == (
        State.RUNNING,
        0,
        {},
        history,
    )
    assert after is not before and after.state is State.BACKOFF


def test_history_records_each_state_change_and_is_bounded() -> None:
    record = running()
    assert [(d.from_state, d.to_state) for d in record.history] == [
        (State.STOPPED, State.STARTING),
        (State.STARTING, State.RUNNING),
    ]
    assert record.decision is record.history[-1]
    for i in range(HISTORY_LENGTH):  # 2 state changes per round
        record, _ = run(record, ProbeResult(100.0 + i, ok=False), ProbeResult(100.5 + i, ok=True))
    assert len(record.history) == HISTORY_LENGTH
    assert record.history[-1].to_state is State.RUNNING
    assert record.history[0].at > 1.0  # the oldest decisions were dropped


def test_quiet_events_carry_no_decision() -> None:
    record, _ = transition(running(), Tick(50.0), POLICY)
    assert record.decision is None


# --- whose fault: a model server that is down, a model still loading ------------------------------


def dependency_down(at: float) -> ProbeResult:
    return ProbeResult(
        at, ok=False, reason="model server http://model-server:8000 unreachable", blame=Blame.DEPENDENCY
    )


def test_dependency_down_never_counts_toward_a_restart_and_recovers_by_itself() -> None:
    record, actions = run(running(), *(dependency_down(20.0 + 10 * i) for i in range(20)))
    assert (record.state, record.reason, actions) == (State.UNHEALTHY, "dependency-down", [])
    assert (record.failed_probes, record.restarts) == (0, 0)
    assert "model server" in record.detail
    record, actions = run(record, ProbeResult(300.0, ok=True))
    assert (record.state, actions, record.restarts) == (State.RUNNING, [], 0)


def test_dependency_down_does_not_forgive_the_miners_own_failures() -> None:
    """A failure of the miner itself still counts, with or without its server down in between."""
    own = [ProbeResult(20.0 + i, ok=False, reason="timeout") for i in range(N)]
    record, actions = run(running(), own[0], dependency_down(20.5), *own[1:])
    assert actions == [Action.RESTART] and record.restarts_by_reason == {"probe-failed": 1}


def test_a_miner_busy_or_slow_with_validators_is_shown_overloaded_and_never_restarted() -> None:
    """Under load the probe may find it busy, or still streaming at its deadline: a restart would drop
    every validator's stream and make nothing faster (a hung miner fails its liveness checks instead)."""
    slow = [ProbeResult(20.0 + 10 * i, ok=False, reason="slow: still streaming", blame=Blame.LOAD)
            for i in range(3 * N)]  # fmt: skip
    record, actions = run(running(), *slow)
    assert (record.state, record.reason, actions) == (State.UNHEALTHY, "overloaded", [])
    assert (record.failed_probes, record.restarts) == (0, 0)
    record, actions = run(record, ProbeResult(500.0, ok=True))
    assert (record.state, actions) == (State.RUNNING, [])


def test_a_starting_miner_whose_server_is_down_shows_it_and_is_not_restarted() -> None:
    record, actions = run(starting(), *(dependency_down(GRACE + 10 * i) for i in range(10)))
    assert (record.state, record.reason, actions) == (State.UNHEALTHY, "dependency-down", [])


def test_loading_does_not_count_while_starting_even_past_the_grace_period() -> None:
    loading = [
        ProbeResult(GRACE + 10 * i, ok=False, reason="loading", blame=Blame.LOADING) for i in range(10)
    ]
    record, actions = run(starting(), *loading)
    assert (record.state, actions, record.failed_probes) == (State.STARTING, [], 0)
    # Once it was up, a server that answers 503 again is sick like any other failure.
    record, _ = run(record, ProbeResult(GRACE + 200, ok=True), *loading[:1])
    assert (record.state, record.failed_probes) == (State.UNHEALTHY, 1)


# --- the operator's own stop -----------------------------------------------------------------------


@pytest.mark.parametrize("make", [starting, running, unhealthy, backoff, fatal])
def test_an_operator_stop_leaves_it_stopped_and_asks_nothing(make: object) -> None:
    record, actions = run(make(), OperatorStopped(30.0))  # type: ignore[operator]
    assert (record.state, record.reason, actions) == (State.STOPPED, "stopped-by-operator", [])
    assert record.backoff_until is None
    # Its exit (code 0 after SIGTERM, or 137 when killed at the end of the grace) and time passing
    # start nothing.
    record, actions = run(record, Exited(31.0, exit_code=137), Tick(1000.0), Tick(5000.0))
    assert (record.state, actions) == (State.STOPPED, [])


def test_a_hand_start_after_an_operator_stop_is_followed() -> None:
    record, _ = run(running(), OperatorStopped(30.0))
    record, actions = run(record, Started(40.0))
    assert (record.state, actions) == (State.STARTING, [])


# --- resuming from a saved record (the watch itself restarted) ------------------------------------


def test_resumed_fatal_and_stopped_are_left_alone() -> None:
    stopped, _ = run(running(), StopRequested(30.0))
    for saved in (fatal(), crash_loop(), stopped):
        record, actions = transition(saved, Resumed(5000.0, running=False, exit_code=78), POLICY)
        assert (record.state, actions) == (saved.state, [])
        record, actions = run(record, Tick(6000.0))
        assert (record.state, actions) == (saved.state, [])


def test_resumed_backoff_waits_out_its_deadline_and_keeps_counting() -> None:
    saved = backoff()
    assert saved.backoff_until is not None
    record, actions = transition(saved, Resumed(saved.backoff_until - 0.5, running=False), POLICY)
    assert (record.state, actions, record.restarts) == (State.BACKOFF, [], 1)
    record, actions = run(record, Tick(saved.backoff_until))
    assert (record.state, actions) == (State.STARTING, [Action.START])


def test_resumed_running_that_exited_meanwhile_is_judged_by_its_exit() -> None:
    clean, actions = transition(running(), Resumed(50.0, running=False, exit_code=0), POLICY)
    assert (clean.state, actions) == (State.STOPPED, [])
    config, _ = transition(running(), Resumed(50.0, running=False, exit_code=78, detail="error: x"), POLICY)
    assert (config.state, config.detail) == (State.FATAL, "error: x")
    crashed, actions = transition(running(), Resumed(50.0, running=False, exit_code=137), POLICY)
    assert (crashed.state, crashed.reason, crashed.restarts) == (State.BACKOFF, "killed:SIGKILL", 1)


def test_resumed_keeps_the_crash_loop_window() -> None:
    """Restarts before the watch restarted still count: one more crash inside the window is FATAL."""
    policy = RestartPolicy(crash_loop_max_restarts=2, crash_loop_window=300)
    record, now = running(), 10.0
    for _ in range(2):
        record, _ = run(record, Exited(now, exit_code=1), policy=policy)
        assert record.backoff_until is not None
        now = record.backoff_until
        record, _ = run(record, Tick(now), Started(now), ProbeResult(now + 1, ok=True), policy=policy)
    assert (record.state, len(record.recent_restarts)) == (State.RUNNING, 2)
    record, actions = transition(record, Resumed(now + 5, running=False, exit_code=1), policy)
    assert (record.state, record.reason, actions) == (State.FATAL, "crash-loop", [])


def test_resumed_running_is_adopted_with_its_counts() -> None:
    saved, _ = run(backoff(), Tick(100.0), Started(100.0), ProbeResult(101.0, ok=True))
    record, actions = transition(saved, Resumed(500.0, running=True), POLICY)
    assert (record.state, record.reason, actions, record.restarts) == (State.RUNNING, "adopted", [], 1)
    assert record.recent_restarts == saved.recent_restarts


def test_resumed_fatal_that_someone_started_is_adopted_as_a_fresh_start() -> None:
    record, actions = transition(crash_loop(), Resumed(5000.0, running=True), POLICY)
    assert (record.state, actions, record.recent_restarts, record.consecutive_restarts) == (
        State.RUNNING,
        [],
        (),
        0,
    )


def test_resumed_before_anything_was_decided_is_an_adoption() -> None:
    record, actions = transition(MinerRecord("a"), Resumed(1.0, running=False), POLICY)
    assert (record.state, actions) == (State.STARTING, [Action.START])


def test_an_exit_the_runtime_names_keeps_that_reason_and_is_restarted() -> None:
    """A task Swarm shut down with its node (or a start no node could take): the runtime's own reason,
    not ``crash:unknown``, and a restart with backoff like a crash."""
    for cause in ("node-down", "node-drained", "start-failed"):
        record, _ = run(running(), Exited(10.0, exit_code=None, detail="node beta is down", cause=cause))
        assert (record.state, record.reason) == (State.BACKOFF, cause)
