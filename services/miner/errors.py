"""The miner's small error taxonomy and its exit codes (the contract with the orchestrator)."""

from __future__ import annotations

import os


class ExitCode:
    """Process exit codes. The orchestrator reads them to decide what to do (docs/ARCHITECTURE.md,
    "Exit codes")."""

    OK = 0  # clean stop (SIGTERM/SIGINT): nothing to do
    FORWARD_EXCEPTION = 75  # stop_on_forward_exception fired (EX_TEMPFAIL): restart with backoff
    CONFIG = 78  # configuration error (EX_CONFIG): FATAL, no restart, message on stderr


# In the exit-78 line of a miner whose hotkey the subnet stopped listing: the orchestrator reads it as the
# reason "deregistered" (not a plain configuration error).
DEREGISTERED_MARK = "(deregistered)"


class MinerError(Exception):
    """Base of every error the miner raises on purpose."""


class ConfigError(MinerError):
    """A setting is wrong or something it points at is missing. Permanent: the process exits 78."""


class BackendError(MinerError):
    """The backend's own state is broken (a *forward exception*): a restart can fix it (exit 75)."""


class RefusedError(MinerError):
    """A request answered with an HTTP error status and a reason; the miner keeps serving.

    Never a forward exception: no input a caller sends, and no outage of something the miner depends
    on, may make a miner exit (docs/ARCHITECTURE.md, "Exit codes").
    """

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class RequestError(RefusedError):
    """The model cannot take this request (too long, bad text): 400/413 with the reason."""

    status = 400


class DependencyError(RefusedError):
    """Something the miner depends on (a model server, a remote API) is down: 503 with the reason.

    The message starts with ``dependency down:`` so the fleet's probe can name the dependency instead of
    blaming (and restarting) the miner.
    """

    status = 503

    def __init__(self, message: str) -> None:
        prefix = "dependency down: "
        super().__init__(message if message.startswith(prefix) else prefix + message)


class BusyError(RefusedError):
    """The model's queue is full, or the request could not start before its deadline: 503 'busy'."""

    status = 503


def exit_now(code: int) -> None:
    """Leave the process at once with ``code``, without running interpreter teardown.

    Used after the axon has stopped: bittensor's server thread and native model handles can make a
    normal interpreter exit hang or print noise, and the exit code is the only thing that matters then.
    """
    os._exit(code)
