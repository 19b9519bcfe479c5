"""What the watch loop feeds into :func:`~orchestrator.policy.transition`: one dataclass per event."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# ---------------------------------------------------------------------------------------------------
# Events: what the watch loop tells the policy. ``now`` is monotonic seconds.


@dataclass(frozen=True, slots=True)
class Started:
    """The runtime reports that the miner's process is up (after our START/RESTART, or by hand).

    Not for a process found already running when the watch loop begins: that is ``Adopted``.
    """

    now: float


@dataclass(frozen=True, slots=True)
class Exited:
    """The miner's process ended. ``detail`` is the miner's own last error line (stderr), if any."""

    now: float
    exit_code: int | None
    signal: int | None = None
    oom: bool = False
    detail: str = ""
    cause: str = ""  # the runtime's own reason when the miner did not end itself (``node-down``)


class Blame(StrEnum):
    """Whose fault a failed probe is, which decides whether it counts toward a restart."""

    SELF = "self"  # the process's own: counts
    DEPENDENCY = "dependency"  # its model server (or remote API) is down: shown, never counted
    LOADING = "loading"  # still loading its model (a model server's 503): like the start grace period
    LOAD = "load"  # busy or slow with other requests (it answers; a restart would drop them): never counted


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """A probe finished: ``ok`` when a real answer came back (a miner's stream, a model server's
    ``/health``), else ``reason`` says why not and ``blame`` whose fault it is."""

    now: float
    ok: bool
    reason: str = ""
    blame: Blame = Blame.SELF


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed. Lets a backoff end and a healthy period reset the backoff."""

    now: float


@dataclass(frozen=True, slots=True)
class StopRequested:
    """The operator wants the miner stopped and left stopped."""

    now: float


@dataclass(frozen=True, slots=True)
class OperatorStopped:
    """Someone else is stopping the process (``docker stop``, ``compose down``, ``supervisorctl stop``):
    the operator. Unlike ``StopRequested`` the stop is already under way, so nothing is asked of the
    runtime; and the miner is left stopped."""

    now: float


@dataclass(frozen=True, slots=True)
class StartRequested:
    """The operator wants a stopped or FATAL miner started again, with a clean slate."""

    now: float


@dataclass(frozen=True, slots=True)
class Adopted:
    """Sent once per miner when the watch loop begins: whether its process was already running.

    A running miner is taken over as RUNNING: not restarted, and no restart is counted.
    """

    now: float
    running: bool


@dataclass(frozen=True, slots=True)
class Resumed:
    """Sent once per miner, instead of ``Adopted``, when the watch loop begins with the record a
    previous watch saved: whether the process runs now and, if not, how it last ended.

    The saved decisions stand: FATAL and STOPPED are left alone, BACKOFF waits out its deadline,
    restart counts and the crash-loop window carry on.
    """

    now: float
    running: bool
    exit_code: int | None = None
    signal: int | None = None
    oom: bool = False
    detail: str = ""


Event = (
    Started
    | Exited
    | ProbeResult
    | Tick
    | StopRequested
    | OperatorStopped
    | StartRequested
    | Adopted
    | Resumed
)
