"""The steps several benchmarks repeat: a temporary directory, the skip when the model is missing, a probe
dendrite, the order of rounds, and figures built from per-round measurements.

Kept apart from :mod:`bench._common` (statistics, results, process memory, miners as processes) so that
each module stays short.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import GGUF, Figure, Result, Wallets, make_result

__all__ = ["PerRound", "alternating", "bench_tmp", "model_missing", "per_round_figures", "probe_dendrite"]


@contextmanager
def bench_tmp() -> Iterator[Path]:
    """A temporary directory for one benchmark's project, wallets and logs (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="minerfleet-bench-") as name:
        yield Path(name)


def model_missing(
    name: str, title: str, quick: bool, started: float, before: Mapping[str, Any], hint: str = ""
) -> Result | None:
    """The skipped result when the bundled GGUF is not there (None when it is): ``<path> is missing``,
    followed by `` (hint)`` when a hint is given."""
    if GGUF.exists():
        return None
    reason = f"{GGUF} is missing" + (f" ({hint})" if hint else "")
    return make_result(name, title, quick, started, [], skipped=reason, machine_before=before)


@asynccontextmanager
async def probe_dendrite(wallets: Wallets) -> AsyncIterator[Any]:
    """A dendrite signed with the probe wallet; its HTTP session is closed afterwards."""
    from services.miner.client import make_dendrite  # imported when used: bittensor is a heavy import

    dendrite = make_dendrite(wallets.wallet("probe"))
    try:
        yield dendrite
    finally:
        await dendrite.aclose_session()


def alternating(items: Sequence[Any], index: int) -> list[Any]:
    """Round ``index``'s order: ``items`` as given in even rounds, reversed in odd ones."""
    return list(items) if index % 2 == 0 else list(reversed(items))


@dataclass(frozen=True)
class PerRound:
    """How to make one figure from a list of per-round measurements: ``Figure.of(key, what, [value(r) for
    r in runs], unit, scale)``."""

    key: str
    what: str
    value: Callable[[Any], float]
    unit: str
    scale: float = 1.0


def per_round_figures(runs: Sequence[Any], specs: Sequence[PerRound]) -> list[Figure]:
    """One figure per spec, in the specs' order, each the median (and spread) over ``runs``."""
    return [Figure.of(s.key, s.what, [s.value(r) for r in runs], s.unit, s.scale) for s in specs]
