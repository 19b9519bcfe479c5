"""A model server's slots are shared by need (issue 18), and an abandoned generation frees its slot.

Real llama-server, real miner processes, real dendrites. Judged by the server's own counters (its
``/metrics``: requests in a slot, tokens generated), never by timing.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from bittensor_wallet import Wallet

from devkit.local import llama_server
from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once
from tests.helpers import (
    Wallets,
    ask_together,
    free_port,
    llama_miner,
    make_hotkey,
    running_miner,
    stream_then_drop,
)

pytestmark = [pytest.mark.integration, pytest.mark.model]

SLOTS = 4
MAX_TOKENS = 24
# The bundled base model keeps counting to its token limit: every answer runs its full length unless cut.
COUNTING = "Count from 1 to 900: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


def _gauges(base_url: str) -> dict[str, float]:
    """llama-server's own counters and gauges (its /metrics)."""
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {name: float(value) for name, value in re.findall(r"^llamacpp:(\w+) (\S+)$", text, re.MULTILINE)}


def _wait_until_idle(base_url: str, within: float = 30.0) -> dict[str, float]:
    """The server's gauges once no request holds a slot (bounded: generous for a busy box)."""
    deadline = time.monotonic() + within
    while True:
        gauges = _gauges(base_url)
        if gauges["requests_processing"] == 0 or time.monotonic() > deadline:
            return gauges
        time.sleep(0.1)


def _shared_miner(
    tmp_path: Path, wallets: Wallets, base_url: str, validators: list[str], **extra: str
) -> Any:
    """An openai miner on the shared server, configured as the fleet renders it (every slot, shared)."""
    settings = {
        "backend": "openai",
        "openai__base_url": base_url,
        "openai__model": "gemma",
        "openai__use_chat": "false",
        "openai__server_slots": str(SLOTS),
        "max_tokens": str(MAX_TOKENS),
        "temperature": "0",
        "max_concurrency": str(SLOTS),
        "max_queue": "0",
        "streaming_batch_size": "4",
        "allowed_hotkeys": json.dumps(validators),
    }
    return running_miner(tmp_path, wallets, **{**settings, **extra})


async def test_one_miner_can_use_every_slot_of_a_shared_server_while_the_other_is_idle(
    tmp_path: Path, wallets: Wallets, gguf_model: str
) -> None:
    names = [f"validator-{i}" for i in range(SLOTS)]
    addresses = [make_hotkey(wallets.path, "fleet", name) for name in names]
    hotkeys = [Wallet(name="fleet", hotkey=name, path=str(wallets.path)) for name in names]
    with llama_server(Path(gguf_model), free_port(), tmp_path / "server.log", slots=SLOTS) as base_url:
        with (
            _shared_miner(tmp_path, wallets, base_url, addresses) as first,
            _shared_miner(tmp_path, wallets, base_url, addresses) as second,
        ):
            for miner in (first, second):  # each in turn takes all the slots, the other idle
                before = _gauges(base_url)["tokens_predicted_total"]
                answers = await ask_together(miner.port, wallets.miner_hotkey, hotkeys, COUNTING)
                generated = _wait_until_idle(base_url)["tokens_predicted_total"] - before
                assert [a.status_code for a in answers] == [200] * SLOTS, [a.status_message for a in answers]
                assert all(a.completion.strip() for a in answers)
                # Every answer ran its full length: none waited for a slot "reserved" for the idle miner.
                assert generated == SLOTS * MAX_TOKENS, [a.completion for a in answers]


async def test_a_disconnect_or_a_deadline_frees_the_servers_slot_at_once(
    tmp_path: Path, wallets: Wallets, gguf_model: str
) -> None:
    long = 1500
    with llama_server(
        Path(gguf_model), free_port(), tmp_path / "server.log", slots=2, ctx_per_slot=2048
    ) as base_url:
        with _shared_miner(
            tmp_path, wallets, base_url, [wallets.probe_hotkey], max_tokens=str(long)
        ) as miner:
            dendrite = make_dendrite(wallets.wallet("probe"))
            target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
            try:
                # The validator leaves after the first chunk: the server stops that generation.
                before = _gauges(base_url)["tokens_predicted_total"]
                await stream_then_drop(dendrite, miner.port, target, COUNTING)
                after_drop = _wait_until_idle(base_url)
                # The miner's deadline cuts the stream (5 s of a 1500-token answer): the same.
                cut = await stream_once(
                    dendrite, target, make_synapse("prompting", COUNTING, timeout=5.0), 5.0
                )
                after_cut = _wait_until_idle(base_url)
            finally:
                await dendrite.aclose_session()
    assert after_drop["requests_processing"] == 0
    assert after_drop["tokens_predicted_total"] - before < long / 2
    assert cut.status_code == 200 and cut.completion.strip(), cut.status_message
    assert after_cut["requests_processing"] == 0
    assert after_cut["tokens_predicted_total"] - after_drop["tokens_predicted_total"] < long / 2


async def test_an_in_process_model_is_free_again_as_soon_as_the_deadline_cuts_its_stream(
    tmp_path: Path, wallets: Wallets, gguf_model: str
) -> None:
    with llama_miner(tmp_path, wallets, gguf_model, max_tokens="1500", max_queue="0") as miner:
        dendrite = make_dendrite(wallets.wallet("probe"))
        target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
        try:
            cut = await stream_once(dendrite, target, make_synapse("prompting", COUNTING, timeout=5.0), 5.0)
            # No queue: were the cut generation still running, this would be "busy".
            after = await stream_once(
                dendrite, target, make_synapse("prompting", "Hello", timeout=30.0), 30.0
            )
        finally:
            await dendrite.aclose_session()
    assert cut.status_code == 200 and cut.completion.strip(), cut.status_message
    assert after.status_code == 200, after.status_message


async def test_the_watchs_warm_up_batches_every_slot_of_a_real_server(
    tmp_path: Path, gguf_model: str
) -> None:
    """What the watch does once a model server first answers: one completion per slot, all at once, so
    the server reaches the memory of its widest batch before validators do (docs/ARCHITECTURE.md,
    "Memory of a model server")."""
    from orchestrator.probing.modelservers import ServerChecker, ServerTarget

    port = free_port()
    log = tmp_path / "server.log"
    with llama_server(Path(gguf_model), port, log, slots=SLOTS) as base_url:
        warmed = await ServerChecker().warm(ServerTarget("model-server", "127.0.0.1", port, SLOTS))
        gauges = _wait_until_idle(base_url)
    assert (warmed.answered, warmed.error) == (SLOTS, ""), warmed
    used = set(re.findall(r"launch_slot_: id +(\d+)", log.read_text(errors="replace")))
    assert used == {str(i) for i in range(SLOTS)}, used  # every slot took one
    assert gauges["n_busy_slots_per_decode"] > 1  # and they were decoded together, not one by one
