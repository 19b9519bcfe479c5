"""The miner's small error taxonomy and its exit codes (the contract with the orchestrator)."""

from __future__ import annotations

import os


class ExitCode:
    """Process exit codes. The orchestrator reads them to decide what to do (DESIGN.md)."""

    OK = 0  # clean stop (SIGTERM/SIGINT): nothing to do
    FORWARD_EXCEPTION = 75  # stop_on_forward_exception fired (EX_TEMPFAIL): restart with backoff
    CONFIG = 78  # configuration error (EX_CONFIG): FATAL, no restart, message on stderr


class MinerError(Exception):
    """Base of every error the miner raises on purpose."""


class ConfigError(MinerError):
    """A setting is wrong or something it points at is missing. Permanent: the process exits 78."""


class BackendError(MinerError):
    """The model failed while generating (a *forward exception*). Temporary from the fleet's view."""


class BusyError(MinerError):
    """The model's queue is full; the request is answered 'busy' and nothing else happens."""


def exit_now(code: int) -> None:
    """Leave the process at once with ``code``, without running interpreter teardown.

    Used after the axon has stopped: bittensor's server thread and native model handles can make a
    normal interpreter exit hang or print noise, and the exit code is the only thing that matters then.
    """
    os._exit(code)
