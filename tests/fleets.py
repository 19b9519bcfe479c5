"""Test projects: the devkit's fleet projects, and the golden rendered files."""

from __future__ import annotations

from pathlib import Path

from devkit.projects import (
    BUNDLED_MODEL,
    ROOT,
    SHIPPED_FLEET,
    fleet_keys,
    make_key,
    make_project,
    shipped_project,
)

GOLDEN = Path(__file__).resolve().parent / "golden"

__all__ = [
    "BUNDLED_MODEL",
    "GOLDEN",
    "ROOT",
    "SHIPPED_FLEET",
    "fleet_keys",
    "make_key",
    "make_project",
    "shipped_project",
]
