"""The exit-code contract with the orchestrator, on real miner processes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once
from tests.helpers import MinerProcess, Wallets, free_port, miner_env, running_miner

pytestmark = pytest.mark.integration


async def test_a_backend_fault_with_stop_on_forward_exception_exits_75(
    tmp_path: Path, wallets: Wallets
) -> None:
    with running_miner(
        tmp_path,
        wallets,
        backend="echo",
        echo__fail_after_tokens="2",
        stop_on_forward_exception="true",
        streaming_batch_size="1",
    ) as miner:
        dendrite = make_dendrite(wallets.wallet("probe"))
        target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
        result = await stream_once(
            dendrite, target, make_synapse("prompting", "one two three four"), timeout=10
        )
        await dendrite.aclose_session()
        code = miner.wait(timeout=30)
        log = miner.log
    # The pieces produced before the fault were still delivered, and the response was closed cleanly.
    assert result.status_code == 200
    assert result.completion == "one two "
    assert code == 75
    assert "forward exception" in log and "injected fault" in log


async def test_without_stop_on_forward_exception_the_miner_keeps_serving(
    tmp_path: Path, wallets: Wallets
) -> None:
    with running_miner(tmp_path, wallets, backend="echo", echo__fail_after_tokens="2") as miner:
        dendrite = make_dendrite(wallets.wallet("probe"))
        target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
        first = await stream_once(
            dendrite, target, make_synapse("prompting", "one two three four"), timeout=10
        )
        second = await stream_once(dendrite, target, make_synapse("prompting", "a"), timeout=10)
        await dendrite.aclose_session()
        assert miner.proc is not None and miner.proc.poll() is None
    assert first.completion == "one two "
    # "a" has one piece: shorter than the fault point, so no fault at all.
    assert second.completion == "a"


def _run_to_exit(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    miner = MinerProcess(env, tmp_path / "miner.log").start(wait=0)
    code = miner.wait(timeout=60)
    miner.stop()
    return code, miner.log


def _error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("error:")]


def test_a_missing_model_file_exits_78_with_one_line(tmp_path: Path, wallets: Wallets) -> None:
    env = miner_env(
        wallets, free_port(), backend="llamacpp", llamacpp__model_path=str(tmp_path / "absent.gguf")
    )
    code, log = _run_to_exit(tmp_path, env)
    assert code == 78
    assert _error_lines(log) == [
        f"error: MINER_LLAMACPP__MODEL_PATH: model file not found: {tmp_path / 'absent.gguf'}"
    ]


def test_a_missing_hotkey_exits_78_and_says_how_to_create_it(tmp_path: Path, wallets: Wallets) -> None:
    env = miner_env(wallets, free_port(), wallet_hotkey="nobody")
    code, log = _run_to_exit(tmp_path, env)
    assert code == 78
    [line] = _error_lines(log)
    assert "MINER_WALLET_HOTKEY: hotkey file not found" in line
    assert "python -m orchestrator wallets" in line


def test_a_bad_setting_exits_78_naming_the_variable(tmp_path: Path, wallets: Wallets) -> None:
    env = miner_env(wallets, free_port(), streaming_batch_size="500")
    code, log = _run_to_exit(tmp_path, env)
    assert code == 78
    [line] = _error_lines(log)
    assert line.startswith("error: MINER_STREAMING_BATCH_SIZE:") and "200" in line


def test_a_port_in_use_exits_78(tmp_path: Path, wallets: Wallets) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, log = _run_to_exit(tmp_path, miner_env(wallets, port))
    assert code == 78
    [line] = _error_lines(log)
    assert line.startswith(f"error: MINER_AXON_PORT: cannot bind 127.0.0.1:{port}")


def test_sigterm_is_a_clean_stop(tmp_path: Path, wallets: Wallets) -> None:
    with running_miner(tmp_path, wallets, backend="echo") as miner:
        code = miner.stop()
    assert code == 0
