"""Backends: one module each, one small interface (:class:`~services.miner.backends.base.Backend`), one
description (:class:`~services.miner.backends.spec.BackendSpec`) declared beside it, with its settings
group. Everything else that lists backends (the settings' allowed values and groups, the fleet's options,
images and checks) is derived from :data:`SPECS`."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from services.miner.backends import echo, hf, llamacpp, openai
from services.miner.backends.base import Backend
from services.miner.backends.spec import SHARED_IMAGE_TARGETS, BackendSpec

# Every backend, in the order they are documented. Importing a backend module is light: its model
# library loads in load().
_ALL: tuple[BackendSpec, ...] = (echo.SPEC, llamacpp.SPEC, hf.SPEC, openai.SPEC)

if TYPE_CHECKING:

    class BackendName(StrEnum):
        """(What mypy sees: the members are the backends' names, made from their specs at import time.)"""

else:
    BackendName = StrEnum("BackendName", [(spec.name, spec.name) for spec in _ALL])

# Every backend, by name (MINER_BACKEND's allowed values).
SPECS: dict[BackendName, BackendSpec] = {BackendName(spec.name): spec for spec in _ALL}
# The backend a miner runs when its settings name none.
DEFAULT_BACKEND = echo.SPEC.name


class _Chosen(Protocol):
    """What :func:`make_backend` reads of the miner's settings (they import this package, not it them)."""

    @property
    def backend(self) -> str: ...


def make_backend(settings: _Chosen) -> Backend:
    """The backend the settings (``MinerSettings``) name, built from its own settings group."""
    spec = SPECS[BackendName(settings.backend)]
    return spec.create(getattr(settings, spec.name))


# The Dockerfile target of every image a miner may run on: the shared ones, then the backends' own.
IMAGE_TARGETS: dict[str, str] = {
    **SHARED_IMAGE_TARGETS,
    **{spec.image: spec.image_target for spec in _ALL if spec.image_target},
}
# The backends whose model is one file (a folder there is an error the fleet reports).
ONE_FILE_MODELS: frozenset[str] = frozenset(spec.name for spec in _ALL if spec.loads_one_file)
