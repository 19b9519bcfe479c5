"""Concurrent validators through one openai miner on llama.cpp's own batching server (issue 10): real
llama-server, real miner process, K real dendrites with their own hotkeys. Counts only, no timing."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from devkit.local import llama_server
from tests.helpers import Wallets, ask_together, free_port, make_hotkey, running_miner

pytestmark = [pytest.mark.integration, pytest.mark.model]

K = 4
MAX_TOKENS = 24
# The bundled base model keeps counting to its token limit: every answer runs its full length unless cut.
PROMPT = "Count from 1 to 200: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


def _predicted_tokens(base_url: str) -> int:
    """llama-server's own count of generated tokens (its /metrics)."""
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    match = re.search(r"^llamacpp:tokens_predicted_total (\S+)$", text, re.MULTILINE)
    assert match, text[:500]
    return int(float(match.group(1)))


async def test_concurrent_streams_through_one_openai_miner_are_all_answered_in_full(
    tmp_path: Path, wallets: Wallets, gguf_model: str
) -> None:
    from bittensor_wallet import Wallet

    validators = [f"validator-{i}" for i in range(K + 1)]
    addresses = [make_hotkey(wallets.path, "fleet", name) for name in validators]
    hotkeys = [Wallet(name="fleet", hotkey=name, path=str(wallets.path)) for name in validators]
    with llama_server(Path(gguf_model), free_port(), tmp_path / "server.log", slots=K) as base_url:
        with running_miner(
            tmp_path,
            wallets,
            backend="openai",
            openai__base_url=base_url,
            openai__model="gemma",
            openai__use_chat="false",
            max_tokens=str(MAX_TOKENS),
            temperature="0",
            max_concurrency=str(K),
            max_queue="0",
            streaming_batch_size="4",
            allowed_hotkeys=json.dumps(addresses),
        ) as miner:
            before = _predicted_tokens(base_url)
            answers = await ask_together(miner.port, wallets.miner_hotkey, hotkeys[:K], PROMPT)
            generated = _predicted_tokens(base_url) - before
            # One more than it runs at once and no queue: refused at once, with the reason.
            crowd = await ask_together(miner.port, wallets.miner_hotkey, hotkeys, PROMPT)
    assert [a.status_code for a in answers] == [200] * K, [a.status_message for a in answers]
    assert all(a.completion.strip() for a in answers)
    # Every stream ran to its own end: the server generated every token of every answer (a server that
    # ends a stream when a new request comes, as llama_cpp.server does by default, generates far fewer).
    assert generated == K * MAX_TOKENS, (generated, [a.completion for a in answers])
    statuses = sorted(a.status_code or 0 for a in crowd)
    assert statuses.count(200) <= K and 503 in statuses, [(a.status_code, a.status_message) for a in crowd]
    assert any("busy" in a.status_message for a in crowd if a.status_code == 503)
