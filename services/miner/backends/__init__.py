"""Backends: one module each, one small interface (:class:`~services.miner.backends.base.Backend`), one
description (:class:`~services.miner.backends.spec.BackendSpec`) declared beside it."""

from __future__ import annotations

from services.miner.backends import echo, hf, llamacpp, openai
from services.miner.backends.base import Backend
from services.miner.backends.spec import BackendSpec
from services.miner.settings import BackendName, MinerSettings

# Every backend, by name. Importing a backend module is light: its model library loads in load().
SPECS: dict[BackendName, BackendSpec] = {
    spec.name: spec for spec in (echo.SPEC, llamacpp.SPEC, hf.SPEC, openai.SPEC)
}


def make_backend(settings: MinerSettings) -> Backend:
    """The backend the settings name, built from its own settings group."""
    spec = SPECS[settings.backend]
    return spec.create(getattr(settings, spec.name.value))
