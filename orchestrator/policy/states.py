"""The states, actions and reasons of the restart policy, and its tunables (``RestartPolicy``)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

HISTORY_LENGTH = 20
"""How many decisions a ``MinerRecord`` keeps for the status API."""


class State(StrEnum):
    """Where a miner is in its lifecycle, as the orchestrator sees it."""

    STARTING = "STARTING"  # process started, inside the grace period or not yet healthy
    RUNNING = "RUNNING"  # the last stream probe succeeded
    UNHEALTHY = "UNHEALTHY"  # process up, but stream probes fail
    BACKOFF = "BACKOFF"  # process gone, waiting before the next start
    FATAL = "FATAL"  # gave up (config error or crash loop): waits for the operator
    STOPPED = "STOPPED"  # not running and not meant to run (clean exit, stop request, never started)


class Action(StrEnum):
    """What the policy asks the runtime to do to the miner's process."""

    START = "start"  # the process is not running: start it
    RESTART = "restart"  # the process runs but is sick: stop it and start it again
    STOP = "stop"  # stop the process and leave it stopped


class Reason(StrEnum):
    """The fixed reasons a decision carries. Exit reasons can also be ``killed:SIG…``/``crash:exit-N``."""

    CLEAN_EXIT = "clean-exit"
    FORWARD_EXCEPTION = "forward-exception"
    CONFIG_ERROR = "config-error"
    DEREGISTERED = "deregistered"  # exit 78 because the subnet no longer lists the hotkey
    OOM = "oom"
    CRASH_LOOP = "crash-loop"
    PROBE_FAILED = "probe-failed"
    PROBE_OK = "probe-ok"
    BACKOFF_ELAPSED = "backoff-elapsed"
    STARTED = "started"
    STOP_REQUESTED = "stop-requested"
    STOPPED_BY_OPERATOR = "stopped-by-operator"
    DEPENDENCY_DOWN = "dependency-down"
    OVERLOADED = "overloaded"  # the probe found it busy or still streaming at the deadline: not counted
    START_REQUESTED = "start-requested"
    ADOPTED = "adopted"
    ADOPTED_NOT_RUNNING = "adopted-not-running"
    NOT_STARTED = "not-started"
    # The runtime shut the process down because of its machine, not the miner (swarm: the node was
    # drained, or stopped answering): restarted with backoff like a crash.
    NODE_DRAINED = "node-drained"
    NODE_DOWN = "node-down"
    START_FAILED = "start-failed"  # the runtime could not start it (swarm: no node can take it)


# Reasons after which the miner is never restarted automatically.
_NO_RESTART = frozenset({Reason.CLEAN_EXIT, Reason.CONFIG_ERROR, Reason.DEREGISTERED})


class RestartPolicy(BaseModel):
    """Every number the restart policy uses. The fleet file embeds it as ``restart:`` (fleet-wide
    defaults) with per-miner overrides; see ``with_overrides``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backoff_initial: float = Field(
        1.0, gt=0, description="Seconds to wait before the first restart after a failure."
    )
    backoff_factor: float = Field(
        2.0, ge=1, description="Each further consecutive restart waits this many times longer."
    )
    backoff_max: float = Field(60.0, gt=0, description="The longest wait before a restart, in seconds.")
    reset_after: float = Field(
        300.0,
        gt=0,
        description="Seconds of uninterrupted RUNNING after which the backoff starts over.",
    )
    crash_loop_max_restarts: int = Field(
        5, ge=1, description="More restarts than this within crash_loop_window make the miner FATAL."
    )
    crash_loop_window: float = Field(
        300.0, gt=0, description="Seconds over which restarts are counted for crash-loop detection."
    )
    unhealthy_after_failed_probes: int = Field(
        3, ge=1, description="This many consecutive failed stream probes restart a miner."
    )
    start_grace: float = Field(
        120.0,
        ge=0,
        description="Seconds after each start during which failed probes are ignored (model loading).",
    )

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> RestartPolicy:
        if self.backoff_max < self.backoff_initial:
            raise ValueError(
                f"backoff_max ({self.backoff_max:g}) is smaller than backoff_initial "
                f"({self.backoff_initial:g}): raise backoff_max or lower backoff_initial"
            )
        return self

    def with_overrides(self, overrides: Mapping[str, Any]) -> RestartPolicy:
        """Return this policy with a miner's overrides applied, validated like the defaults were."""
        # model_copy(update=...) skips validation; a per-miner typo or a negative number must fail loudly.
        return RestartPolicy.model_validate({**self.model_dump(), **overrides})

    def backoff_delay(self, restart_number: int) -> float:
        """Seconds to wait before the ``restart_number``-th consecutive restart (1-based)."""
        if restart_number < 1:
            raise ValueError(f"restart_number must be 1 or more, got {restart_number}")
        try:
            delay = self.backoff_initial * self.backoff_factor ** (restart_number - 1)
        except OverflowError:  # far past the cap (a miner failing for days): the cap it is
            return self.backoff_max
        return min(delay, self.backoff_max)
