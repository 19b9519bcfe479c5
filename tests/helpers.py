"""Test helpers: the local-run kit (devkit.local) plus what only tests need (dropping a stream mid-way,
asking again while busy)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from devkit.local import (
    GGUF,
    HF_DIR,
    ROOT,
    MinerProcess,
    Wallets,
    free_port,
    free_ports,
    make_hotkey,
    make_wallets,
    miner_env,
    run,
    running_miner,
    supervisord,
    wait_for_port,
)

__all__ = [
    "GGUF",
    "HF_DIR",
    "ROOT",
    "MinerProcess",
    "Wallets",
    "ask_together",
    "ask_until_not_busy",
    "free_port",
    "free_ports",
    "llama_miner",
    "make_hotkey",
    "make_wallets",
    "miner_env",
    "run",
    "running_miner",
    "stream_then_drop",
    "supervisord",
    "wait_for_port",
]


async def ask_together(
    port: int, miner_hotkey: str, wallets: list[Any], prompt: str, timeout: float = 60.0
) -> list[Any]:
    """K validators (one wallet and one dendrite each) asking one miner the same prompt at one moment."""
    from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once

    target = axon_info("127.0.0.1", port, miner_hotkey)
    dendrites = [make_dendrite(wallet) for wallet in wallets]
    try:
        asks = [
            stream_once(d, target, make_synapse("prompting", prompt, timeout=timeout), timeout)
            for d in dendrites
        ]
        return list(await asyncio.gather(*asks))
    finally:
        for dendrite in dendrites:
            await dendrite.aclose_session()


async def stream_then_drop(
    dendrite: Any, port: int, target: Any, prompt: str, timeout: float = 60.0
) -> bytes:
    """Start a signed stream, read its first chunk, then close the connection mid-stream.

    The dendrite only signs the request: it cannot leave a stream half-read (its generator refuses to
    be closed early), so the request is sent here with aiohttp.
    """
    import aiohttp

    from services.miner.client import make_synapse

    synapse = dendrite.preprocess_synapse_for_request(target, make_synapse("prompting", prompt), timeout)
    url = f"http://127.0.0.1:{port}/StreamPromptingSynapse"
    async with aiohttp.ClientSession() as session:
        resp = await session.post(url, headers=synapse.to_headers(), json=synapse.model_dump())
        assert resp.status == 200, resp.status
        first: bytes = await resp.content.readany()
        resp.close()
    return first


async def ask_until_not_busy(dendrite: Any, target: Any, prompt: str, timeout: float = 30.0) -> Any:
    """A request, repeated while the miner answers "busy" (503): with max_queue=0 the model is free
    again only once an abandoned generation has really stopped. Bounded: 40 tries, 0.25 s apart."""
    from services.miner.client import make_synapse, stream_once

    for _ in range(40):
        result = await stream_once(dendrite, target, make_synapse("prompting", prompt), timeout=timeout)
        if result.status_code != 503:
            return result
        await asyncio.sleep(0.25)
    return result


def llama_miner(tmp_path: Path, wallets: Wallets, gguf_model: str, **settings: str) -> Any:
    """A real miner on the Gemma GGUF through llama.cpp, one thread (tests share a busy 2-core box)."""
    return running_miner(
        tmp_path,
        wallets,
        backend="llamacpp",
        llamacpp__model_path=gguf_model,
        llamacpp__n_threads="1",
        **settings,
    )
