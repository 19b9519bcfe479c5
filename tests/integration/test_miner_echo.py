"""A real miner process (echo backend) and a real bt.Dendrite on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once
from services.miner.protocols import PROTOCOLS
from tests.helpers import Wallets, ask_until_not_busy, running_miner, stream_then_drop

pytestmark = pytest.mark.integration

PROMPT = "Grüße 🎉🚀 from 東京 — naïve café\n  two  spaces, tabs\tand a trailing space "


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
async def test_echo_completion_equals_prompt_for_every_protocol(
    tmp_path: Path, wallets: Wallets, protocol: str
) -> None:
    with running_miner(tmp_path, wallets, backend="echo", protocols=json.dumps([protocol])) as miner:
        dendrite = make_dendrite(wallets.wallet("probe"))
        target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
        result = await stream_once(dendrite, target, make_synapse(protocol, PROMPT), timeout=10)
        await dendrite.aclose_session()
    assert result.status_code == 200, result.status_message
    assert result.completion == PROMPT
    assert "".join(result.chunks) == PROMPT


async def test_one_miner_serves_all_protocols_at_once(tmp_path: Path, wallets: Wallets) -> None:
    with running_miner(tmp_path, wallets, backend="echo", protocols=json.dumps(list(PROTOCOLS))) as miner:
        dendrite = make_dendrite(wallets.wallet("probe"))
        target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
        results = await asyncio.gather(
            *(stream_once(dendrite, target, make_synapse(p, f"hello {p}"), timeout=10) for p in PROTOCOLS)
        )
        await dendrite.aclose_session()
    assert [r.completion for r in results] == [f"hello {p}" for p in PROTOCOLS]


async def test_chunks_follow_the_batch_size(tmp_path: Path, wallets: Wallets) -> None:
    words = [f"w{i} " for i in range(10)]
    # A per-token delay keeps chunks apart on the wire; a long max delay means only the count flushes.
    with running_miner(
        tmp_path,
        wallets,
        backend="echo",
        streaming_batch_size="4",
        max_chunk_delay="30",
        first_chunk_delay="30",
        echo__delay_per_token="0.05",
    ) as miner:
        dendrite = make_dendrite(wallets.wallet("probe"))
        target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
        result = await stream_once(dendrite, target, make_synapse("prompting", "".join(words)), timeout=10)
        await dendrite.aclose_session()
    assert result.chunks == ["".join(words[0:4]), "".join(words[4:8]), "".join(words[8:10])]
    assert "10 pieces in 3 chunks" in miner.log


async def test_a_hotkey_that_is_not_allowed_is_refused(tmp_path: Path, wallets: Wallets) -> None:
    with running_miner(tmp_path, wallets, backend="echo") as miner:
        stranger = make_dendrite(wallets.wallet("stranger"))
        target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
        refused = await stream_once(stranger, target, make_synapse("prompting", "let me in"), timeout=10)
        await stranger.aclose_session()
        probe = make_dendrite(wallets.wallet("probe"))
        allowed = await stream_once(probe, target, make_synapse("prompting", "hello"), timeout=10)
        await probe.aclose_session()
    assert refused.status_code == 403
    assert "not in allowed_hotkeys" in refused.status_message
    assert refused.completion == ""
    assert allowed.completion == "hello"


async def test_malformed_requests_get_an_error_and_the_miner_keeps_serving(
    tmp_path: Path, wallets: Wallets
) -> None:
    with running_miner(tmp_path, wallets, backend="echo") as miner:
        url = f"http://127.0.0.1:{miner.port}/StreamPromptingSynapse"
        async with aiohttp.ClientSession() as session:
            for body in (b"{not json", b'{"roles": "user", "messages": 5}', b""):
                async with session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
                    assert resp.status >= 400, body
            async with session.post(f"http://127.0.0.1:{miner.port}/NoSuchSynapse", json={}) as resp:
                assert resp.status >= 400
        dendrite = make_dendrite(wallets.wallet("probe"))
        target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
        empty = await stream_once(
            dendrite, target, make_synapse("prompting", "", messages=[], roles=[]), timeout=10
        )
        mismatched = await stream_once(
            dendrite,
            target,
            make_synapse("prompting", "", roles=["user", "user"], messages=["one"]),
            timeout=10,
        )
        fine = await stream_once(dendrite, target, make_synapse("prompting", "still here"), timeout=10)
        await dendrite.aclose_session()
        assert miner.proc is not None and miner.proc.poll() is None
    assert empty.status_code == 400 and "messages is empty" in empty.status_message
    assert mismatched.status_code == 400 and "roles has 2 entries" in mismatched.status_message
    assert fine.completion == "still here"


async def test_a_second_request_is_answered_busy_while_the_model_is_taken(
    tmp_path: Path, wallets: Wallets
) -> None:
    slow = " ".join(f"w{i}" for i in range(100))
    with running_miner(
        tmp_path, wallets, backend="echo", max_queue="0", max_concurrency="1", echo__delay_per_token="0.05"
    ) as miner:
        dendrite = make_dendrite(wallets.wallet("probe"))
        target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
        first = asyncio.create_task(
            stream_once(dendrite, target, make_synapse("prompting", slow), timeout=20)
        )
        await asyncio.sleep(0.5)
        started = time.monotonic()
        second = await stream_once(dendrite, target, make_synapse("prompting", "me too"), timeout=20)
        answered_after = time.monotonic() - started
        first_done = first.done()
        first_result = await first
        await dendrite.aclose_session()
    assert second.status_code == 503 and "busy" in second.status_message
    assert not first_done, f"the busy answer waited for the first stream ({answered_after:.1f}s)"
    assert first_result.completion == slow


async def test_a_client_that_disconnects_stops_the_generation(tmp_path: Path, wallets: Wallets) -> None:
    slow = " ".join(f"w{i}" for i in range(400))
    with running_miner(
        tmp_path,
        wallets,
        backend="echo",
        max_queue="0",
        streaming_batch_size="1",
        echo__delay_per_token="0.05",
    ) as miner:
        dendrite = make_dendrite(wallets.wallet("probe"))
        target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
        first = await stream_then_drop(dendrite, miner.port, target, slow, timeout=30)
        again = await ask_until_not_busy(dendrite, target, "after", timeout=10)
        await dendrite.aclose_session()
        log = miner.log
    assert first
    assert again.completion == "after"
    assert "disconnect" in log and "forward exception" not in log


async def test_the_liveness_route_answers_on_the_event_loop(tmp_path: Path, wallets: Wallets) -> None:
    """``GET /health``: what the watch checks between stream probes (counted in no request metric: the
    monitoring test counts a fleet's requests exactly while the watch checks it)."""

    with running_miner(tmp_path, wallets, backend="echo") as miner:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{miner.port}/health") as response:
                status, body = response.status, await response.json()
            async with session.head(f"http://127.0.0.1:{miner.port}/health") as response:
                head = response.status
    assert (status, body, head) == (200, {"status": "ok"}, 200)
