"""The orchestrator's one error base, and what each kind means for the caller.

Every error the orchestrator raises on purpose derives from :class:`OrchestratorError`. It is either
*permanent* (the input is wrong: a retry gives the same answer until someone fixes it) or *temporary*
(something outside is not there yet or hiccuped: the same call may pass later, and the watch loop
retries it). Each carries the CLI's exit code; ``python -m orchestrator`` maps errors to exit codes in
one place (:func:`orchestrator.commands.cli.main`), and its messages already name what to fix.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_FAILED = 1  # something outside failed, or a check found a problem
EXIT_INVALID = 2  # the input (fleet file, arguments) is wrong


class OrchestratorError(Exception):
    """Base of every error the orchestrator raises on purpose."""

    permanent: ClassVar[bool] = True
    exit_code: ClassVar[int] = EXIT_FAILED


class PermanentError(OrchestratorError):
    """Retrying cannot help: the message says what to change."""

    permanent = True


class TemporaryError(OrchestratorError):
    """May pass on a later try (a daemon still starting, a socket that hiccuped)."""

    permanent = False
