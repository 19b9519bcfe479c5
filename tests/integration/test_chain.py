"""A miner on a chain network (issue 22): bittensor 10.5's own MockSubtensor as the chain
(:mod:`devkit.mockchain`), a real axon and real dendrites on 127.0.0.1.

The mock chain lives in this process, so the miner runs in-process here (``services.miner.app.serve`` in
a thread, exactly what ``python -m services.miner`` runs); the unreachable chain is a real miner process
pointed at an endpoint that refuses connections.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bittensor_wallet import Wallet

from devkit.mockchain import MockChain, fresh_chain
from orchestrator.probing.probe import Prober
from orchestrator.probing.reports import ProbeTarget, Verdict
from services.miner.app import serve
from services.miner.client import axon_info, chat_once, make_dendrite, make_synapse, stream_once
from services.miner.errors import ConfigError, ExitCode
from services.miner.service import ExitRequest
from services.miner.settings import MinerSettings, load_settings
from tests.helpers import Wallets, free_port, make_hotkey, running_miner

pytestmark = [pytest.mark.integration]

NETUID = 7
OWNER = "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw"  # any coldkey address: the mock checks none


@pytest.fixture
def chain() -> Iterator[MockChain]:
    yield fresh_chain(NETUID)
    MockChain.reset()


def _settings(wallets: Wallets, port: int, **extra: str) -> MinerSettings:
    environ = {
        "MINER_NAME": "chain-miner",
        "MINER_NETWORK": "test",
        "MINER_NETUID": str(NETUID),
        "MINER_WALLET_PATH": str(wallets.path),
        "MINER_WALLET_NAME": "fleet",
        "MINER_WALLET_HOTKEY": "miner",
        "MINER_AXON_IP": "127.0.0.1",
        "MINER_AXON_PORT": str(port),
        "MINER_AXON_EXTERNAL_IP": "127.0.0.1",
        "MINER_ALLOWED_HOTKEYS": f'["{wallets.probe_hotkey}"]',
        "MINER_BACKEND": "echo",
        "MINER_METAGRAPH_SYNC_INTERVAL": "0.5",
    }
    environ.update({f"MINER_{k.upper()}": v for k, v in extra.items()})
    return load_settings(environ=environ)


@contextmanager
def _miner_in_process(settings: MinerSettings, chain: MockChain) -> Iterator[dict[str, Any]]:
    """``serve()`` in a thread against the mock chain; yields what it returned once it has."""
    exit_request = ExitRequest()
    outcome: dict[str, Any] = {"exit_request": exit_request}

    def run() -> None:
        try:
            outcome["code"] = serve(settings, connect=lambda: chain, exit_request=exit_request)
        except BaseException as exc:  # ConfigError: what main() turns into exit 78
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="miner", daemon=True)
    thread.start()
    outcome["thread"] = thread
    try:
        yield outcome
    finally:
        exit_request.request(ExitCode.OK, "test over")
        thread.join(30)


def _wait(predicate: Any, within: float = 60.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _serving(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _ask(wallet: Any, port: int, miner: str, prompt: str = "hello chain", timeout: float = 30.0) -> Any:
    dendrite = make_dendrite(wallet)
    try:
        synapse = make_synapse("prompting", prompt, timeout=timeout)
        return await stream_once(dendrite, axon_info("127.0.0.1", port, miner), synapse, timeout)
    finally:
        await dendrite.aclose_session()


def _validator(wallets: Wallets, name: str) -> tuple[str, Any]:
    return make_hotkey(wallets.path, "fleet", name), Wallet(name="fleet", hotkey=name, path=str(wallets.path))


async def test_a_registered_miner_announces_itself_and_serves_validators_by_permit(
    chain: MockChain, wallets: Wallets
) -> None:
    validator, validator_wallet = _validator(wallets, "validator-big")
    peer, peer_wallet = _validator(wallets, "peer-miner")
    stranger_wallet = wallets.wallet("stranger")
    chain.add_neuron(NETUID, wallets.miner_hotkey, OWNER)
    chain.add_neuron(NETUID, validator, OWNER, stake_tao=5000.0, permit=True)
    chain.add_neuron(NETUID, peer, OWNER, stake_tao=900.0)  # registered, a miner: no validator permit
    port = free_port()
    settings = _settings(wallets, port, http__auth='["epistula", "btauth"]')
    with _miner_in_process(settings, chain) as miner:
        assert _wait(lambda: _serving(port) or not miner["thread"].is_alive()), miner

        # Announced: the chain now holds the address validators will look up (serve_axon's result read).
        def held() -> tuple[str, int] | None:
            for neuron in chain.neurons_lite(NETUID):
                if neuron.hotkey == wallets.miner_hotkey and neuron.axon_info.port:
                    return neuron.axon_info.ip, neuron.axon_info.port
            return None

        assert _wait(lambda: held() == ("127.0.0.1", port)), held()
        answered = await _ask(validator_wallet, port, wallets.miner_hotkey)
        peer_answer = await _ask(peer_wallet, port, wallets.miner_hotkey)
        stranger_answer = await _ask(stranger_wallet, port, wallets.miner_hotkey)
        # The HTTP door judges callers by the same metagraph: permit, registration.
        async with aiohttp.ClientSession() as session:
            url, miner_key = f"http://127.0.0.1:{port}", wallets.miner_hotkey
            asks = [("validator", validator_wallet, "epistula"), ("validator", validator_wallet, "btauth"),
                    ("peer", peer_wallet, "btauth"), ("stranger", stranger_wallet, "epistula")]  # fmt: skip
            door = {
                (who, scheme): await chat_once(
                    session, url, w.hotkey, miner_key, scheme, f"{who} by {scheme}"
                )
                for who, w, scheme in asks
            }
    for scheme in ("epistula", "btauth"):
        answer = door["validator", scheme]
        assert (answer.status_code, answer.completion) == (200, f"validator by {scheme}"), (
            answer.status_message
        )
    assert door["peer", "btauth"].status_code == 403
    assert "validator permit" in door["peer", "btauth"].status_message
    assert door["stranger", "epistula"].status_code == 403
    assert "not registered" in door["stranger", "epistula"].status_message
    assert answered.status_code == 200 and answered.completion == "hello chain", answered.status_message
    # Safe defaults on a chain: a validator permit is required unless the fleet file says otherwise.
    assert peer_answer.status_code == 403 and "validator permit" in peer_answer.status_message
    assert stranger_answer.status_code == 403 and "not registered" in stranger_answer.status_message


def test_a_hotkey_that_is_not_registered_exits_78_before_the_model_loads(
    chain: MockChain, wallets: Wallets, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.miner.backends.echo import EchoBackend

    loaded: list[bool] = []
    monkeypatch.setattr(EchoBackend, "load", lambda self: loaded.append(True))
    with pytest.raises(ConfigError) as refused:
        serve(_settings(wallets, free_port()), connect=lambda: chain)
    message = str(refused.value)
    assert message.startswith(
        f"MINER_WALLET_HOTKEY: hotkey {wallets.miner_hotkey} is not registered on netuid 7"
    )
    assert (
        "btcli subnet register --netuid 7 --wallet.name fleet --wallet.hotkey miner --network test" in message
    )
    assert loaded == []  # found before the model (here: the backend's load) was touched


async def test_a_deregistered_hotkey_is_reported_and_exits_78(
    chain: MockChain, wallets: Wallets, capsys: pytest.CaptureFixture[str]
) -> None:
    chain.add_neuron(NETUID, wallets.miner_hotkey, OWNER)
    port = free_port()
    with _miner_in_process(_settings(wallets, port), chain) as miner:
        assert _wait(lambda: _serving(port) or not miner["thread"].is_alive())
        newcomer = make_hotkey(wallets.path, "fleet", "newcomer")
        chain.deregister(NETUID, wallets.miner_hotkey, replaced_by=newcomer, coldkey=OWNER)
        miner["thread"].join(60)
    assert miner.get("code") == ExitCode.CONFIG, miner
    assert f"hotkey {wallets.miner_hotkey} is no longer registered (deregistered)" in capsys.readouterr().err


async def test_when_stake_waits_the_highest_stake_is_served_first(chain: MockChain, wallets: Wallets) -> None:
    low, low_wallet = _validator(wallets, "validator-low")
    second, second_wallet = _validator(wallets, "validator-second")
    high, high_wallet = _validator(wallets, "validator-high")
    chain.add_neuron(NETUID, wallets.miner_hotkey, OWNER)
    for hotkey, stake in ((low, 10.0), (second, 20.0), (high, 9000.0)):
        chain.add_neuron(NETUID, hotkey, OWNER, stake_tao=stake, permit=True)
    port = free_port()
    # One stream at a time, two may wait: the first runs ~3 s (echo, 0.1 s a word) while two wait.
    settings = _settings(wallets, port, max_concurrency="1", max_queue="2", echo__delay_per_token="0.1")
    finished: list[str] = []

    async def ask(name: str, wallet: Any, prompt: str) -> Any:
        answer = await _ask(wallet, port, wallets.miner_hotkey, prompt, timeout=60)
        finished.append(name)
        return answer

    with _miner_in_process(settings, chain) as miner:
        assert _wait(lambda: _serving(port) or not miner["thread"].is_alive())
        first = asyncio.create_task(ask("low", low_wallet, " ".join(["word"] * 30)))
        await asyncio.sleep(1.0)  # it holds the model
        waiting_low = asyncio.create_task(ask("second", second_wallet, "small stake"))
        await asyncio.sleep(0.5)  # it waits first...
        waiting_high = asyncio.create_task(ask("high", high_wallet, "big stake"))  # ...this one after it
        answers = await asyncio.gather(first, waiting_low, waiting_high)
    assert [a.status_code for a in answers] == [200, 200, 200], [a.status_message for a in answers]
    assert finished == ["low", "high", "second"]  # the freed model went to the highest stake waiting


def test_an_unreachable_chain_is_a_503_naming_it_and_the_miner_keeps_running(
    tmp_path: Path, wallets: Wallets
) -> None:
    refused = f"ws://127.0.0.1:{free_port()}"  # nothing listens there: connections are refused
    with running_miner(
        tmp_path,
        wallets,
        backend="echo",
        network="test",
        netuid=str(NETUID),
        chain_endpoint=refused,
        axon_external_ip="127.0.0.1",
    ) as miner:
        prober = Prober(wallets.wallet("probe"), "hello", timeout=20, max_concurrency=1)
        target = ProbeTarget(
            "chain-miner", wallets.miner_hotkey, "127.0.0.1", miner.port, "echo", "prompting"
        )
        try:
            report = asyncio.run(prober.probe(target))
        finally:
            asyncio.run(prober.aclose())
        assert miner.proc is not None and miner.proc.poll() is None, (
            miner.log
        )  # still up: an unreachable chain is no crash
        log = miner.log
    assert report.verdict is Verdict.dependency_down, report
    assert report.reason.startswith(f"chain {refused} unreachable"), report.reason
    assert "starting anyway" in log and "Traceback" not in log


def _chain_fleet(tmp_path: Path, wallets: Wallets, port: int) -> Path:
    """A fleet file on the test network: the miner running here, and one the chain holds no address for."""
    path = tmp_path / "config" / "miners.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""network: test
netuid: {NETUID}
wallet_path: {wallets.path}
probe: {{wallet: fleet, hotkey: probe}}
defaults: {{wallet: fleet, backend: echo, axon_external_ip: 127.0.0.1}}
miners:
  - {{name: chain-1, hotkey: miner, axon_port: {port}}}
  - {{name: ghost-1, hotkey: stranger, axon_port: {free_port()}}}
""",
        encoding="utf-8",
    )
    return path


async def test_health_announced_probes_each_miner_where_the_chain_says_and_status_shows_it(
    chain: MockChain, wallets: Wallets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import json

    from orchestrator.commands import cli
    from orchestrator.fleet.load import load_fleet
    from orchestrator.status import chainview

    chain.add_neuron(NETUID, wallets.miner_hotkey, OWNER)
    chain.add_neuron(NETUID, wallets.stranger_hotkey, OWNER)  # registered, never started: not announced
    port = free_port()
    fleet = _chain_fleet(tmp_path, wallets, port)
    monkeypatch.setattr(chainview, "subtensor_for", lambda loaded: lambda: chain)
    with _miner_in_process(_settings(wallets, port), chain) as miner:
        assert _wait(lambda: _serving(port) or not miner["thread"].is_alive())
        loaded = load_fleet(fleet, tmp_path, check_files=False)
        assert _wait(lambda: "127.0.0.1:" in (chainview.status_view(loaded) or ("", ""))[0])
        table, document = chainview.status_view(loaded) or ("", [])
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(
            cli.main, ["health", "--config", str(fleet), "--announced", "--json"], out, err
        )
    rows = {r["name"]: r for r in json.loads(out.getvalue())["miners"]}
    assert rows["chain-1"]["verdict"] == "healthy", rows["chain-1"]
    assert rows["chain-1"]["port"] == port  # reached at the address the chain holds
    assert rows["ghost-1"]["verdict"] == "down" and "no axon address" in rows["ghost-1"]["reason"]
    assert code == cli.EXIT_FAILED  # one miner validators cannot reach
    by_name = {r["name"]: r for r in document}
    assert by_name["chain-1"]["announced"] == f"127.0.0.1:{port}" and by_name["chain-1"]["matches"] is True
    assert by_name["ghost-1"]["registered"] is True and by_name["ghost-1"]["announced"] is None
    assert "not announced" in table and f"127.0.0.1:{port}" in table
