"""The base of every settings group (``MINER_<GROUP>__<KEY>``), shared by the miner's own groups and the
backends' groups declared in their own modules (:mod:`services.miner.backends`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SettingsGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def listed_once(value: list[str], what: str) -> list[str]:
    """A list setting whose entries must differ (protocols, signature schemes)."""
    if len(set(value)) != len(value):
        raise ValueError(f"each {what} may be listed once")
    return value
