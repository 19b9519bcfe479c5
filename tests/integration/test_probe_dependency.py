"""The probe names a miner's dependency: an openai miner whose model server is down is `dependency-down`."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.probing.probe import Prober
from orchestrator.probing.reports import ProbeTarget, Verdict
from tests.helpers import Wallets, free_port, running_miner

pytestmark = pytest.mark.integration


async def test_an_openai_miner_whose_server_is_down_is_dependency_down(
    tmp_path: Path, wallets: Wallets
) -> None:
    port = free_port()
    with running_miner(
        tmp_path, wallets, backend="openai", openai__base_url=f"http://127.0.0.1:{port}/v1",
        openai__model="gemma", max_tokens="8",
    ) as miner:  # fmt: skip
        prober = Prober(wallets.wallet("probe"), "hello", 5.0, 1)
        try:
            report = await prober.probe(
                ProbeTarget("shared-1", wallets.miner_hotkey, "127.0.0.1", miner.port, "openai", "prompting")
            )
        finally:
            await prober.aclose()
    assert report.verdict is Verdict.dependency_down, report
    # named once: the verdict says "dependency-down", the reason says what is down
    assert report.reason.startswith(f"model server http://127.0.0.1:{port}/v1")
