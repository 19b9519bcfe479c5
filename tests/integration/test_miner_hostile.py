"""No input may take a miner down (issue 9): real miner processes, a real dendrite, raw HTTP where a
hostile client would not use one. Each test ends by checking that the miner still answers."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once
from tests.helpers import MinerProcess, Wallets, free_port, llama_miner, miner_env, running_miner

pytestmark = pytest.mark.integration


async def _ask(wallets: Wallets, port: int, prompt: str = "still here", timeout: float = 30.0) -> Any:
    dendrite = make_dendrite(wallets.wallet("probe"))
    try:
        target = axon_info("127.0.0.1", port, wallets.miner_hotkey)
        return await stream_once(dendrite, target, make_synapse("prompting", prompt), timeout=timeout)
    finally:
        await dendrite.aclose_session()


def _alive(miner: MinerProcess) -> bool:
    return miner.proc is not None and miner.proc.poll() is None


# --- the llama.cpp miner: what used to exit 75 and crash-loop it into FATAL ----------------------------


@pytest.mark.model
async def test_llamacpp_too_long_and_bad_text_are_answers_not_exits(
    tmp_path: Path, wallets: Wallets, gguf_model: str
) -> None:
    with llama_miner(
        tmp_path,
        wallets,
        gguf_model,
        llamacpp__n_ctx="512",
        max_tokens="16",
        stop_on_forward_exception="true",
        limits__max_prompt_chars="100000",
        warmup="false",
    ) as miner:
        too_long = await _ask(wallets, miner.port, " ".join(["word"] * 2100), timeout=60)
        surrogate = await _ask(wallets, miner.port, "hello \ud800 there")
        after = await _ask(wallets, miner.port, "What is the capital of France?", timeout=60)
        alive = _alive(miner)
        log = miner.log
    assert too_long.status_code == 413, too_long.status_message
    assert "prompt too long" in too_long.status_message and "tokens" in too_long.status_message
    assert surrogate.status_code == 400, surrogate.status_message
    assert "not valid Unicode" in surrogate.status_message
    assert after.status_code == 200 and after.completion, after.status_message
    assert alive, log
    assert "forward exception" not in log


@pytest.mark.model
async def test_llamacpp_trims_a_long_prompt_when_configured(
    tmp_path: Path, wallets: Wallets, gguf_model: str
) -> None:
    with llama_miner(
        tmp_path,
        wallets,
        gguf_model,
        llamacpp__n_ctx="512",
        max_tokens="8",
        limits__on_too_long="trim",
        limits__max_prompt_chars="100000",
        warmup="false",
    ) as miner:
        answer = await _ask(wallets, miner.port, " ".join(["word"] * 2100), timeout=60)
    assert answer.status_code == 200, answer.status_message
    assert answer.completion


@pytest.mark.model
async def test_the_model_is_warmed_before_the_axon_opens(
    tmp_path: Path, wallets: Wallets, gguf_model: str
) -> None:
    with llama_miner(
        tmp_path,
        wallets,
        gguf_model,
        max_tokens="8",
    ) as miner:
        answer = await _ask(wallets, miner.port, "Hello")
        log = miner.log
    assert answer.status_code == 200
    assert log.index("warmed up") < log.index("serving prompting")


# --- the HTTP edge -------------------------------------------------------------------------------------


async def test_a_huge_body_is_413_at_once_and_others_are_still_served(
    tmp_path: Path, wallets: Wallets
) -> None:
    with running_miner(tmp_path, wallets, backend="echo", limits__max_request_bytes="100000") as miner:
        huge = asyncio.create_task(_ask(wallets, miner.port, "x " * 10_000_000, timeout=60))
        normal = await _ask(wallets, miner.port, "one two three")
        refused = await huge
        after = await _ask(wallets, miner.port)
        alive = _alive(miner)
    assert refused.status_code == 413, refused.status_message
    assert normal.completion == "one two three"
    assert after.completion == "still here"
    assert alive


async def test_a_prompt_over_max_prompt_chars_is_413(tmp_path: Path, wallets: Wallets) -> None:
    with running_miner(tmp_path, wallets, backend="echo", limits__max_prompt_chars="1000") as miner:
        refused = await _ask(wallets, miner.port, "y" * 5000)
        after = await _ask(wallets, miner.port)
    assert refused.status_code == 413
    assert "prompt too long: " in refused.status_message
    assert after.completion == "still here"


async def test_unsigned_get_and_tampered_requests_get_4xx_not_500(tmp_path: Path, wallets: Wallets) -> None:
    with running_miner(tmp_path, wallets, backend="echo") as miner:
        url = f"http://127.0.0.1:{miner.port}/StreamPromptingSynapse"
        body = {"roles": ["user"], "messages": ["hi"], "completion": ""}
        # A correctly signed request, whose headers we reuse with a changed body.
        synapse = make_synapse("prompting", "hi")
        dendrite = make_dendrite(wallets.wallet("probe"))
        target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
        signed = dendrite.preprocess_synapse_for_request(target, synapse, timeout=12.0)
        signed_headers = signed.to_headers()
        await dendrite.aclose_session()
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                get_status = response.status
            async with session.post(url, json=body) as response:
                unsigned_status, unsigned = response.status, await response.json()
            tampered_body = {"roles": ["user"], "messages": ["something else"], "completion": ""}
            async with session.post(url, json=tampered_body, headers=signed_headers) as response:
                tampered_status, tampered = response.status, await response.json()
            async with session.post(url, data=b"{not json", headers=signed_headers) as response:
                garbage_status = response.status
        after = await _ask(wallets, miner.port)
    assert get_status == 405
    assert unsigned_status == 401 and "unsigned request" in unsigned["message"]
    assert tampered_status == 400 and "does not match the hash" in tampered["message"]
    assert garbage_status == 400
    assert after.completion == "still here"


async def test_idle_connections_are_closed_and_cannot_starve_the_miner(
    tmp_path: Path, wallets: Wallets
) -> None:
    with running_miner(tmp_path, wallets, backend="echo", header_timeout="1") as miner:
        idle = [socket.create_connection(("127.0.0.1", miner.port)) for _ in range(50)]
        slow = socket.create_connection(("127.0.0.1", miner.port))
        slow.sendall(b"POST /StreamPromptingSynapse HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
        try:
            deadline = time.monotonic() + 30
            closed = 0
            for sock in [*idle, slow]:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    if sock.recv(1) == b"":
                        closed += 1
                except (TimeoutError, ConnectionResetError):
                    pass
            answer = await _ask(wallets, miner.port)
        finally:
            for sock in [*idle, slow]:
                sock.close()
    assert closed == 51
    assert answer.completion == "still here"


# --- signals at any time --------------------------------------------------------------------------------


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler (``SigCgt`` in ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def test_sigterm_during_start_up_is_a_clean_stop(tmp_path: Path, wallets: Wallets) -> None:
    # The delays count from the first line of our code (services/miner/__main__.py installs the
    # handler before any import): before it, the interpreter itself is starting, which no program can
    # cover, and a busy machine can stretch that past the shortest delay.
    env = miner_env(wallets, free_port(), backend="echo")
    for delay in (0.05, 0.5, 1.5):
        miner = MinerProcess(env, tmp_path / f"start-{delay}.log").start(wait=0)
        assert miner.proc is not None
        deadline = time.monotonic() + 60
        while not _catches_sigterm(miner.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        miner.proc.send_signal(signal.SIGTERM)
        code = miner.wait(timeout=30)
        miner.stop()
        assert code == 0, (delay, miner.log)


def test_the_edge_checks_the_body_against_the_signed_hash() -> None:
    """A body is passed to the axon only when it is the one whose hash was signed."""
    from services.miner.guard import _body_problem
    from services.miner.protocols import StreamPromptingSynapse

    synapse = StreamPromptingSynapse(roles=["user"], messages=["hi"])
    body = json.dumps({"roles": ["user"], "messages": ["hi"], "completion": ""}).encode()
    assert _body_problem(body, StreamPromptingSynapse, synapse.body_hash) is None
    assert _body_problem(body, StreamPromptingSynapse, "0" * 64) is not None
    assert _body_problem(b"[]", StreamPromptingSynapse, synapse.body_hash) == (
        "bad request: the body is not a JSON object"
    )


@pytest.mark.model
async def test_llamacpp_samples_again_when_the_model_ends_at_once(
    tmp_path: Path, wallets: Wallets, gguf_model: str
) -> None:
    """Gemma 270M, sampled, sometimes ends its answer at its first token (8 of 660 in a 2-hour soak: a
    502 each). With this question and seed it does so, every time; the miner samples once more."""
    question = "About the history of photosynthesis: In one sentence, what is a language model?"
    with llama_miner(
        tmp_path, wallets, gguf_model, max_tokens="24", temperature="0.7", system_prompt="", warmup="false"
    ) as miner:
        dendrite = make_dendrite(wallets.wallet("probe"))
        try:
            synapse = make_synapse("prompting", question, timeout=60)
            synapse.seed = 1016  # this seed's first sample of this question is blank
            target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
            answer = await stream_once(dendrite, target, synapse, timeout=60)
        finally:
            await dendrite.aclose_session()
        log = miner.log
    assert "the model ended without text: sampling once more" in log, log
    assert answer.status_code == 200 and answer.completion.strip(), answer.status_message
