"""Backends: one module each, one small interface (:class:`~services.miner.backends.base.Backend`)."""

from __future__ import annotations

from services.miner.backends.base import Backend
from services.miner.settings import BackendName, MinerSettings


def make_backend(settings: MinerSettings) -> Backend:
    """The backend the settings name. Heavy libraries are imported by the backend's ``load``, not here."""
    if settings.backend is BackendName.echo:
        from services.miner.backends.echo import EchoBackend

        return EchoBackend(settings.echo)
    if settings.backend is BackendName.llamacpp:
        from services.miner.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(settings.llamacpp)
    if settings.backend is BackendName.hf:
        from services.miner.backends.hf import HFBackend

        return HFBackend(settings.hf)
    from services.miner.backends.openai import OpenAIBackend

    return OpenAIBackend(settings.openai)
