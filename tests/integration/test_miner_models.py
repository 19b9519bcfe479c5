"""Real models through a real axon: llama.cpp, transformers, and an OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from devkit.local import llama_cpp_server
from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once
from tests.helpers import (
    HF_DIR,
    ROOT,
    Wallets,
    ask_until_not_busy,
    free_port,
    llama_miner,
    running_miner,
    stream_then_drop,
)

pytestmark = [pytest.mark.integration, pytest.mark.model]

QUESTION = "What is the capital of France?"
# A base model keeps going on this one, so the generation is long enough to overlap with others.
COUNTING = "Count from 1 to 500, separated by commas: 1, 2, 3, 4,"


async def _ask(wallets: Wallets, port: int, prompt: str = QUESTION, timeout: float = 30.0) -> object:
    dendrite = make_dendrite(wallets.wallet("probe"))
    try:
        return await stream_once(
            dendrite,
            axon_info("127.0.0.1", port, wallets.miner_hotkey),
            make_synapse("prompting", prompt),
            timeout,
        )
    finally:
        await dendrite.aclose_session()


async def test_llamacpp_streams_real_tokens(tmp_path: Path, wallets: Wallets, gguf_model: str) -> None:
    with llama_miner(
        tmp_path,
        wallets,
        gguf_model,
        max_tokens="32",
        streaming_batch_size="4",
        temperature="0",
    ) as miner:
        result = await _ask(wallets, miner.port)
    assert result.status_code == 200, result.status_message  # type: ignore[attr-defined]
    assert "Paris" in result.completion  # type: ignore[attr-defined]
    assert len(result.chunks) >= 2  # type: ignore[attr-defined]


async def test_the_event_loop_is_never_blocked_by_generation(
    tmp_path: Path, wallets: Wallets, gguf_model: str
) -> None:
    """While one long llama.cpp generation streams, a second request is answered at once."""
    with llama_miner(
        tmp_path,
        wallets,
        gguf_model,
        max_tokens="400",
        max_queue="0",
        temperature="0",
    ) as miner:
        long = asyncio.create_task(_ask(wallets, miner.port, COUNTING, timeout=90))
        await asyncio.sleep(1.5)  # the first generation is streaming now
        assert not long.done()
        second = await _ask(wallets, miner.port, "hi", timeout=30)
        # The axon's built-in ping route too (a plain Synapse), which validators use as a heartbeat.
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{miner.port}/Synapse", json={}) as resp:
                await resp.read()
                ping_status = resp.status
        still_running = not long.done()
        first = await long
    assert second.status_code == 503 and "busy" in second.status_message  # type: ignore[attr-defined]
    assert still_running, "the second answer waited for the first generation to finish"
    assert ping_status < 500, ping_status  # answered (a 4xx for an unsigned ping is an answer)
    assert first.status_code == 200 and len(first.completion) > 0  # type: ignore[attr-defined]


async def test_llamacpp_generation_stops_when_the_client_leaves(
    tmp_path: Path, wallets: Wallets, gguf_model: str
) -> None:
    with llama_miner(
        tmp_path,
        wallets,
        gguf_model,
        max_tokens="2000",
        max_queue="0",
        streaming_batch_size="1",
    ) as miner:
        dendrite = make_dendrite(wallets.wallet("probe"))
        target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
        await stream_then_drop(dendrite, miner.port, target, "Count from one to one thousand.")
        again = await ask_until_not_busy(dendrite, target, QUESTION)
        await dendrite.aclose_session()
    assert again.status_code == 200 and again.completion


@pytest.fixture(scope="session")
def hf_model_dir() -> Path:
    if not (HF_DIR / "config.json").exists():
        subprocess.run([sys.executable, "scripts/model.py", "--hf"], cwd=ROOT, check=True)
    return HF_DIR


@pytest.mark.hf
async def test_hf_streams_the_same_model_through_transformers(
    tmp_path: Path, wallets: Wallets, hf_model_dir: Path
) -> None:
    with running_miner(
        tmp_path,
        wallets,
        wait=240,
        backend="hf",
        hf__model=str(hf_model_dir),
        hf__n_threads="2",
        max_tokens="24",
        temperature="0",
        streaming_batch_size="2",
    ) as miner:
        result = await _ask(wallets, miner.port, timeout=60)
    assert result.status_code == 200, result.status_message  # type: ignore[attr-defined]
    assert "Paris" in result.completion  # type: ignore[attr-defined]
    assert len(result.chunks) >= 2  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def llama_server(gguf_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with llama_cpp_server(Path(gguf_model), port, log) as base_url:
        yield base_url


async def test_openai_backend_streams_through_a_real_llama_cpp_server(
    tmp_path: Path, wallets: Wallets, llama_server: str
) -> None:
    with running_miner(
        tmp_path,
        wallets,
        backend="openai",
        openai__base_url=llama_server,
        openai__model="gemma",
        openai__use_chat="false",
        max_tokens="32",
        temperature="0",
        streaming_batch_size="3",
    ) as miner:
        result = await _ask(wallets, miner.port)
    assert result.status_code == 200, result.status_message  # type: ignore[attr-defined]
    assert "Paris" in result.completion  # type: ignore[attr-defined]
    assert len(result.chunks) >= 2  # type: ignore[attr-defined]


async def test_openai_model_server_down_is_503_naming_it_and_the_miner_recovers_by_itself(
    tmp_path: Path, wallets: Wallets, gguf_model: str
) -> None:
    """A dependency that is down is not a forward exception: restarting the miner cannot fix it."""
    port = free_port()
    with running_miner(
        tmp_path,
        wallets,
        backend="openai",
        openai__base_url=f"http://127.0.0.1:{port}/v1",
        openai__model="gemma",
        openai__use_chat="false",
        max_tokens="8",
        stop_on_forward_exception="true",
    ) as miner:
        down = await _ask(wallets, miner.port)
        with llama_cpp_server(Path(gguf_model), port, tmp_path / "server.log"):
            back = await _ask(wallets, miner.port)
        alive = miner.proc is not None and miner.proc.poll() is None
        log = miner.log
    assert down.status_code == 503  # type: ignore[attr-defined]
    assert down.status_message.startswith(f"dependency down: model server http://127.0.0.1:{port}/v1")  # type: ignore[attr-defined]
    assert back.status_code == 200 and back.completion, back.status_message  # type: ignore[attr-defined]
    assert alive and "forward exception" not in log
