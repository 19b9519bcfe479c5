"""A unit's record (its state, restart counts, crash-loop window, last decisions) and exit classes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from signal import Signals

from orchestrator.policy.states import Action, Reason, State
from services.miner.errors import ExitCode

# ---------------------------------------------------------------------------------------------------
# Decisions and records


_LOGFMT_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _logfmt_value(value: str) -> str:
    # logfmt: bare when safe, else double-quoted with backslash escapes, so one decision stays one line.
    if value and not any(c in value for c in ' ="\\\n\r\t'):
        return value
    return '"' + value.translate(_LOGFMT_ESCAPES) + '"'


@dataclass(frozen=True, slots=True)
class Decision:
    """One state change of one miner, and why. Kept in the record's history and logged as one line."""

    at: float
    miner: str
    from_state: State
    to_state: State
    reason: str
    detail: str = ""
    next_attempt_at: float | None = None
    actions: tuple[Action, ...] = ()

    def log_line(self) -> str:
        """Render the decision as one logfmt line, e.g.
        ``miner=a from=RUNNING to=BACKOFF reason=forward-exception next_attempt_in=2.0s``."""
        parts = [
            f"miner={_logfmt_value(self.miner)}",
            f"from={self.from_state}",
            f"to={self.to_state}",
            f"reason={_logfmt_value(self.reason)}",
        ]
        if self.actions:
            parts.append(f"action={','.join(self.actions)}")
        if self.next_attempt_at is not None:
            parts.append(f"next_attempt_in={self.next_attempt_at - self.at:.1f}s")
        if self.detail:
            parts.append(f"detail={_logfmt_value(self.detail)}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class MinerRecord:
    """Everything the policy remembers about one miner. ``transition`` returns a new one each time."""

    name: str
    state: State = State.STOPPED
    reason: str = Reason.NOT_STARTED
    detail: str = ""
    restarts: int = 0  # total automatic restarts since the watch loop began
    restarts_by_reason: Mapping[str, int] = field(default_factory=dict)
    consecutive_restarts: int = 0  # drives the backoff; reset after a healthy period
    recent_restarts: tuple[float, ...] = ()  # restart times inside the crash-loop window
    failed_probes: int = 0  # consecutive failed probes that counted (outside the grace period)
    backoff_until: float | None = None
    started_at: float | None = None  # last start: the grace period runs from here
    healthy_since: float | None = None  # start of the current uninterrupted RUNNING period
    last_exit_code: int | None = None
    # A RESTART was asked for and the new process has not reported Started yet: an exit seen now is
    # the old process leaving, not a crash of the new one.
    restart_in_flight: bool = False
    history: tuple[Decision, ...] = ()
    # What the event that produced this record decided (None: nothing changed state). The watch loop
    # logs ``decision.log_line()`` when it is set.
    decision: Decision | None = None


def classify_exit(exit_code: int | None, signal: int | None, oom: bool) -> str:
    """Name why a miner's process ended, following the miner's exit-code contract
    (docs/ARCHITECTURE.md, "Exit codes").

    ``clean-exit`` (0), ``forward-exception`` (75), ``config-error`` (78), ``oom``, ``killed:SIGKILL``
    (a signal, or a shell-style exit code 128+N as docker reports it), ``crash:exit-N`` otherwise.
    """
    # The OOM killer's SIGKILL looks like any other kill; the runtime's flag is the only way to name it.
    if oom:
        return Reason.OOM
    if signal is None and exit_code is not None:
        if exit_code < 0:  # subprocess convention: -N means killed by signal N
            signal = -exit_code
        elif 128 < exit_code < 128 + 65 and exit_code - 128 in _SIGNAL_NUMBERS:
            signal = exit_code - 128
    if signal is not None:
        try:
            return f"killed:{Signals(signal).name}"
        except ValueError:
            return f"killed:{signal}"
    if exit_code is None:
        return "crash:unknown"
    if exit_code == ExitCode.OK:
        return Reason.CLEAN_EXIT
    if exit_code == ExitCode.FORWARD_EXCEPTION:
        return Reason.FORWARD_EXCEPTION
    if exit_code == ExitCode.CONFIG:
        return Reason.CONFIG_ERROR
    return f"crash:exit-{exit_code}"


_SIGNAL_NUMBERS = frozenset(int(s) for s in Signals)
