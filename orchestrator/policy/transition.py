"""The restart policy: one state machine per miner, pure and driven by events.

Nothing here does I/O, sleeps or reads a clock. The watch loop feeds events (a process started or
exited, a stream probe answered, time passed, the operator asked for something) into ``transition``
with the current monotonic time in the event, and gets back the miner's new record and the actions
to hand to the runtime. Tests drive it with plain floats as time.

States (docs/ARCHITECTURE.md, "Supervision")::

    STOPPED --start--> STARTING --probe ok--> RUNNING --probe fails--> UNHEALTHY
                          ^                     |  ^                      |
                          |                     |  +------probe ok--------+
                          |                exit (restartable)      N failed probes: RESTART
                          |                     v                         |
                          +---backoff over--- BACKOFF                     +--> STARTING
                                                | too many restarts in the window
                                                v
                                              FATAL  (also: exit 78 at once)

A clean exit (code 0) and an operator stop end in STOPPED; only an operator start (or a process the
operator started by hand) leaves STOPPED or FATAL.

A probe failure that is not the process's own fault (its model server is down: ``Blame.DEPENDENCY``)
shows as UNHEALTHY but never counts toward a restart: restarting a miner cannot bring its server back.

The same machine supervises model servers (their "probe" is ``GET /health``). Records outlive the
watch process (``orchestrator.watch.statefile``): when the watch starts again, ``Adopted`` meets the record
it saved, so FATAL stays FATAL, STOPPED stays stopped, and restart counts and windows carry on.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from orchestrator.policy.events import (
    Adopted,
    Blame,
    Event,
    Exited,
    OperatorStopped,
    ProbeResult,
    Resumed,
    Started,
    StartRequested,
    StopRequested,
    Tick,
)
from orchestrator.policy.records import Decision, MinerRecord, classify_exit
from orchestrator.policy.states import HISTORY_LENGTH, Action, Reason, RestartPolicy, State
from services.miner.errors import DEREGISTERED_MARK

# ---------------------------------------------------------------------------------------------------
# The transition function


def transition(record: MinerRecord, event: Event, policy: RestartPolicy) -> tuple[MinerRecord, list[Action]]:
    """Apply one event to one miner's record.

    Returns the new record (the given one is never changed) and the actions the runtime must take,
    in order (usually none or one). When the state changed, ``new.decision`` says how and why and is
    also the last entry of ``new.history``.
    """
    now = event.now
    state = record.state
    rec = _quiet(record)

    # A long enough healthy stretch forgives earlier failures, checked on every event so that a crash
    # after an hour of RUNNING gets the short backoff even if no Tick came in between.
    if state is State.RUNNING and rec.healthy_since is not None and rec.consecutive_restarts:
        if now - rec.healthy_since >= policy.reset_after:
            rec = replace(rec, consecutive_restarts=0)

    match event:
        case StopRequested():
            if state is State.STOPPED:
                return rec, []
            # Only a live process needs stopping; from BACKOFF/FATAL it is already gone.
            actions = [Action.STOP] if state in _PROCESS_UP else []
            # STARTING/RUNNING/UNHEALTHY/BACKOFF/FATAL -> STOPPED
            return _move(rec, now, State.STOPPED, Reason.STOP_REQUESTED, actions=actions, **_CLEARED), actions

        case OperatorStopped():
            if state is State.STOPPED:
                return rec, []
            # STARTING/RUNNING/UNHEALTHY/BACKOFF/FATAL -> STOPPED: the operator's stop is under way; a
            # miner in BACKOFF is not started again behind their back.
            new = _move(rec, now, State.STOPPED, Reason.STOPPED_BY_OPERATOR, **_CLEARED)
            return new, []

        case StartRequested():
            if state not in (State.STOPPED, State.FATAL):
                return rec, []  # already running or about to: nothing to do
            # STOPPED/FATAL -> STARTING: the operator starts over, so earlier failures are forgiven.
            new = _move(
                rec,
                now,
                State.STARTING,
                Reason.START_REQUESTED,
                actions=[Action.START],
                **_CLEARED,
                **_FORGIVEN,
                started_at=now,
            )
            return new, [Action.START]

        case Adopted(running=running):
            if state is not State.STOPPED or rec.reason != Reason.NOT_STARTED:
                return rec, []  # adoption only makes sense for a record nobody has driven yet
            if running:
                # STOPPED -> RUNNING: take the live process over; no restart, no grace period.
                new = _move(rec, now, State.RUNNING, Reason.ADOPTED, healthy_since=now, started_at=None)
                return new, []
            # STOPPED -> STARTING: the fleet says this miner should run, and its process is not running.
            actions = [Action.START]
            new = _move(rec, now, State.STARTING, Reason.ADOPTED_NOT_RUNNING, actions=actions, started_at=now)
            return new, actions

        case Resumed():
            return _resume(rec, event, policy)

        case Started():
            if state is State.STARTING:
                # STARTING -> STARTING (quiet): the grace period runs from the real start.
                return replace(rec, started_at=now, restart_in_flight=False, failed_probes=0), []
            # Someone started the process outside the policy (by hand, or docker's own restart).
            changes: dict[str, Any] = {"started_at": now, "failed_probes": 0, "restart_in_flight": False}
            changes.update(backoff_until=None, healthy_since=None)
            if state in (State.STOPPED, State.FATAL):
                changes.update(_FORGIVEN)  # a hand start out of FATAL is the operator starting over
            # STOPPED/FATAL/BACKOFF/RUNNING/UNHEALTHY -> STARTING
            detail = "started outside the policy"
            return _move(rec, now, State.STARTING, Reason.STARTED, detail=detail, **changes), []

        case Exited(exit_code=code, signal=sig, oom=oom, detail=detail, cause=cause):
            rec = replace(rec, last_exit_code=code)
            if state not in _PROCESS_UP:
                return rec, []  # STOPPED/FATAL/BACKOFF: the process was already gone or meant to go
            if state is State.STARTING and rec.restart_in_flight:
                return rec, []  # the old process leaving during our RESTART
            reason = cause or classify_exit(code, sig, oom)
            if reason == Reason.CONFIG_ERROR and DEREGISTERED_MARK in (detail or ""):
                reason = Reason.DEREGISTERED  # still a config error: nothing a restart can fix
            if reason == Reason.CLEAN_EXIT:
                # STARTING/RUNNING/UNHEALTHY -> STOPPED: the miner stopped on purpose (SIGTERM).
                return _move(rec, now, State.STOPPED, reason, detail=detail, **_CLEARED), []
            if reason in (Reason.CONFIG_ERROR, Reason.DEREGISTERED):
                # STARTING/RUNNING/UNHEALTHY -> FATAL: restarting cannot fix a bad setting; show the
                # miner's own message so the operator knows what to fix.
                return _move(rec, now, State.FATAL, reason, detail=detail, **_CLEARED), []
            # STARTING/RUNNING/UNHEALTHY -> BACKOFF (or FATAL on a crash loop)
            return _restart(rec, now, reason, detail, policy, process_up=False)

        case ProbeResult(ok=ok, reason=probe_reason, blame=blame):
            if state not in _PROCESS_UP:
                return rec, []  # a probe that raced with an exit or a stop says nothing new
            if ok:
                if state is State.RUNNING:
                    return replace(rec, failed_probes=0), []
                # STARTING/UNHEALTHY -> RUNNING
                new = _move(rec, now, State.RUNNING, Reason.PROBE_OK, failed_probes=0, healthy_since=now)
                return new, []
            if blame in (Blame.DEPENDENCY, Blame.LOAD):
                why = Reason.DEPENDENCY_DOWN if blame is Blame.DEPENDENCY else Reason.OVERLOADED
                if state is State.UNHEALTHY and rec.reason == why:
                    return replace(rec, detail=probe_reason), []
                # STARTING/RUNNING/UNHEALTHY -> UNHEALTHY, not counted: the miner answers, but its model
                # server does not, or the model is busy with other requests (a restart would fix neither,
                # and would drop every stream in flight); it turns RUNNING by itself at the next good probe.
                new = _move(rec, now, State.UNHEALTHY, why, detail=probe_reason, healthy_since=None)
                return new, []
            in_grace = rec.started_at is not None and now - rec.started_at < policy.start_grace
            if state is State.STARTING and (in_grace or blame is Blame.LOADING):
                return rec, []  # the model may still be loading: this failure does not count
            failed = rec.failed_probes + 1
            detail = f"{failed}/{policy.unhealthy_after_failed_probes} probes failed: {probe_reason}"
            if failed >= policy.unhealthy_after_failed_probes:
                # STARTING/RUNNING/UNHEALTHY -> STARTING via RESTART (or FATAL on a crash loop)
                return _restart(rec, now, Reason.PROBE_FAILED, detail, policy, process_up=True)
            if state is State.UNHEALTHY:
                return replace(rec, failed_probes=failed, detail=detail), []
            # STARTING/RUNNING -> UNHEALTHY
            new = _move(
                rec,
                now,
                State.UNHEALTHY,
                Reason.PROBE_FAILED,
                detail=detail,
                failed_probes=failed,
                healthy_since=None,
            )
            return new, []

        case Tick():
            if state is State.BACKOFF and rec.backoff_until is not None and now >= rec.backoff_until:
                # BACKOFF -> STARTING
                new = _move(
                    rec,
                    now,
                    State.STARTING,
                    Reason.BACKOFF_ELAPSED,
                    detail=f"restart {rec.consecutive_restarts} after {rec.reason}",
                    actions=[Action.START],
                    backoff_until=None,
                    started_at=now,
                    failed_probes=0,
                )
                return new, [Action.START]
            return rec, []

    raise TypeError(f"not a policy event: {event!r}")  # pragma: no cover - the match is exhaustive


def _resume(rec: MinerRecord, event: Resumed, policy: RestartPolicy) -> tuple[MinerRecord, list[Action]]:
    """The watch starts again with the record it saved: its decisions stand."""
    now, state = event.now, rec.state
    if state is State.STOPPED and rec.reason == Reason.NOT_STARTED:
        return transition(rec, Adopted(now, event.running), policy)  # saved before anything was decided
    if event.running:
        if state in _PROCESS_UP:
            # STARTING/RUNNING/UNHEALTHY -> RUNNING: still up; counts and windows carry on.
            new = _move(rec, now, State.RUNNING, Reason.ADOPTED, healthy_since=now, **_CLEARED_PROBES)
            return new, []
        # STOPPED/FATAL/BACKOFF -> RUNNING: someone started it while no watch ran (`make up` after a
        # `down`, a hand start): like a hand start, the operator starts over.
        changes = dict(_FORGIVEN) if state in (State.STOPPED, State.FATAL) else {}
        new = _move(
            rec, now, State.RUNNING, Reason.ADOPTED, detail="started while no watch ran",
            healthy_since=now, backoff_until=None, **_CLEARED_PROBES, **changes,
        )  # fmt: skip
        return new, []
    if state in (State.STOPPED, State.FATAL, State.BACKOFF):
        # STOPPED/FATAL stay: a config error or the operator's stop is not undone by our own restart.
        # BACKOFF stays: its deadline (saved) ends it as before.
        return rec, []
    # STARTING/RUNNING/UNHEALTHY: the process ended while no watch ran; judge its exit now.
    exited = Exited(now, event.exit_code, event.signal, event.oom, event.detail)
    return transition(replace(rec, restart_in_flight=False), exited, policy)


# States in which the miner's process is (or should be) alive.
_PROCESS_UP = frozenset({State.STARTING, State.RUNNING, State.UNHEALTHY})

# Fields reset whenever the miner leaves the running states for good.
_CLEARED: dict[str, Any] = {
    "backoff_until": None,
    "failed_probes": 0,
    "healthy_since": None,
    "restart_in_flight": False,
}
_CLEARED_PROBES: dict[str, Any] = {"failed_probes": 0, "restart_in_flight": False, "started_at": None}
# Fields reset when the operator starts over: the backoff and the crash-loop window.
_FORGIVEN: dict[str, Any] = {"consecutive_restarts": 0, "recent_restarts": ()}


def _quiet(record: MinerRecord) -> MinerRecord:
    """The record as an event that decides nothing leaves it: no decision of its own."""
    return record if record.decision is None else replace(record, decision=None)


def _move(
    record: MinerRecord,
    now: float,
    to: State,
    reason: str,
    *,
    detail: str = "",
    actions: list[Action] | None = None,
    next_attempt_at: float | None = None,
    **changes: Any,
) -> MinerRecord:
    """Change state, remembering the decision in the record's bounded history."""
    decision = Decision(
        at=now,
        miner=record.name,
        from_state=record.state,
        to_state=to,
        reason=str(reason),
        detail=detail,
        next_attempt_at=next_attempt_at,
        actions=tuple(actions or ()),
    )
    history = (*record.history, decision)[-HISTORY_LENGTH:]
    return replace(
        record, state=to, reason=str(reason), detail=detail, history=history, decision=decision, **changes
    )


def _crash_loop(
    record: MinerRecord,
    now: float,
    reason: str,
    detail: str,
    policy: RestartPolicy,
    recent: tuple[float, ...],
    *,
    process_up: bool,
) -> tuple[MinerRecord, list[Action]]:
    """-> FATAL: restarting forever hides the problem and burns the validators' patience."""
    why = (
        f"{len(recent) + 1} restarts within {policy.crash_loop_window:g}s "
        f"(limit {policy.crash_loop_max_restarts}); last: {reason}" + (f": {detail}" if detail else "")
    )
    actions = [Action.STOP] if process_up else []
    new = _move(
        record,
        now,
        State.FATAL,
        Reason.CRASH_LOOP,
        detail=why,
        actions=actions,
        **_CLEARED,
        recent_restarts=recent,
    )
    return new, actions


def _restart(
    record: MinerRecord, now: float, reason: str, detail: str, policy: RestartPolicy, *, process_up: bool
) -> tuple[MinerRecord, list[Action]]:
    """A failure that calls for a restart: count it, then back off, restart, or give up on a crash loop.

    ``process_up`` is true for a sick but live process (failed probes): it is restarted at once,
    since it already had its grace period and N probe intervals. A dead process waits out the backoff.
    """
    window_start = now - policy.crash_loop_window
    recent = tuple(t for t in record.recent_restarts if t > window_start)
    if len(recent) + 1 > policy.crash_loop_max_restarts:
        return _crash_loop(record, now, reason, detail, policy, recent, process_up=process_up)
    by_reason = dict(record.restarts_by_reason)
    by_reason[reason] = by_reason.get(reason, 0) + 1
    consecutive = record.consecutive_restarts + 1
    counted: dict[str, Any] = {
        "restarts": record.restarts + 1,
        "restarts_by_reason": by_reason,
        "consecutive_restarts": consecutive,
        "recent_restarts": (*recent, now),
        "failed_probes": 0,
        "healthy_since": None,
    }
    if process_up:
        # -> STARTING: the runtime replaces the process now.
        new = _move(
            record,
            now,
            State.STARTING,
            reason,
            detail=detail,
            actions=[Action.RESTART],
            next_attempt_at=now,
            started_at=now,
            restart_in_flight=True,
            **counted,
        )
        return new, [Action.RESTART]
    # -> BACKOFF: a Tick after the deadline starts it again.
    until = now + policy.backoff_delay(consecutive)
    new = _move(
        record,
        now,
        State.BACKOFF,
        reason,
        detail=detail,
        next_attempt_at=until,
        backoff_until=until,
        restart_in_flight=False,
        **counted,
    )
    return new, []
