"""The HTTP door of a real miner process, against clients no one here wrote: the official ``openai``
client (through an Epistula-signing request hook, as SN1's validators call miners) and bittensor 11.3.0's
own ``bittensor.http_auth`` (in a virtualenv of its own, scripts/bt11-venv.sh)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx2 as httpx
import openai
import pytest

from services.miner.client import axon_info, chat_once, make_dendrite, make_synapse, stream_once
from services.miner.signed import sign_btauth, sign_epistula
from tests.helpers import ROOT, MinerProcess, Wallets, free_port, running_miner

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
BOTH = json.dumps(["epistula", "btauth"])


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, wallets: Wallets) -> Iterator[MinerProcess]:
    """One echo miner serving its axon and both HTTP schemes on the axon's port."""
    tmp = tmp_path_factory.mktemp("door")
    with running_miner(
        tmp, wallets, backend="echo", http__auth=BOTH, protocols=json.dumps(["prompting"])
    ) as miner:
        yield miner


@pytest.fixture(scope="session")
def bt11_python() -> str:
    """bittensor 11.3.0's interpreter (created once and cached by scripts/bt11-venv.sh)."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bt11-venv.sh")], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def _epistula_client(wallets: Wallets, port: int, signer: str = "probe", **hook: Any) -> openai.OpenAI:
    """The official client, its requests signed by an httpx request hook as SN1's validators do."""
    keypair = wallets.wallet(signer).hotkey  # type: ignore[attr-defined]

    def sign(request: httpx.Request) -> None:
        headers = sign_epistula(
            keypair, request.read(), hook.get("receiver", wallets.miner_hotkey), timeout=10
        )
        for key, value in headers.items():
            request.headers[key] = value

    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx.Client(event_hooks={"request": [sign]}, timeout=20),
    )


def test_the_openai_client_streams_through_an_epistula_hook(door: MinerProcess, wallets: Wallets) -> None:
    client = _epistula_client(wallets, door.port)
    prompt = "Grüße from the HTTP door 🚪"
    stream = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": prompt}], stream=True, seed=7, max_tokens=64
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == prompt
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    whole = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": prompt}])
    assert whole.choices[0].message.content == prompt
    assert whole.choices[0].finish_reason == "stop"


def test_max_tokens_and_stop_are_honoured(door: MinerProcess, wallets: Wallets) -> None:
    client = _epistula_client(wallets, door.port)
    words = " ".join(f"w{i}" for i in range(20))
    short = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": words}], max_tokens=3
    )
    assert short.choices[0].message.content == "w0 w1 w2 "  # echo: one piece a word
    assert short.choices[0].finish_reason == "length"
    stopped = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": words}], stop=["w5"], stream=False
    )
    assert stopped.choices[0].message.content == "w0 w1 w2 w3 w4 "


def test_one_miner_answers_the_axon_and_both_http_schemes_at_once(
    door: MinerProcess, wallets: Wallets
) -> None:
    keypair = wallets.wallet("probe").hotkey  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{door.port}"

    async def together() -> list[Any]:
        dendrite = make_dendrite(wallets.wallet("probe"))
        target = axon_info("127.0.0.1", door.port, wallets.miner_hotkey)
        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(
                stream_once(dendrite, target, make_synapse("prompting", "via the axon"), timeout=10),
                chat_once(session, url, keypair, wallets.miner_hotkey, "epistula", "via epistula"),
                chat_once(session, url, keypair, wallets.miner_hotkey, "btauth", "via btauth"),
            )
        await dendrite.aclose_session()
        return list(results)

    axon, epistula, btauth = asyncio.run(together())
    assert (axon.status_code, axon.completion) == (200, "via the axon")
    assert (epistula.status_code, epistula.completion) == (200, "via epistula")
    assert (btauth.status_code, btauth.completion) == (200, "via btauth")
    metrics = door.log
    assert "chat/epistula from" in metrics and "chat/btauth from" in metrics


def test_bittensor_11_signs_requests_the_door_accepts(
    door: MinerProcess, wallets: Wallets, bt11_python: str
) -> None:
    done = subprocess.run(
        [bt11_python, str(ROOT / "tests" / "interop" / "bt11_http_auth.py"), "sign", str(wallets.path),
         wallets.miner_hotkey, f"http://127.0.0.1:{door.port}", "signed by bittensor 11"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"status": 200, "text": "signed by bittensor 11"}


def test_bittensor_11_verifies_the_fleets_own_signer(wallets: Wallets, bt11_python: str) -> None:
    keypair = wallets.wallet("probe").hotkey  # type: ignore[attr-defined]
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    signed = {
        "headers": sign_btauth(keypair, "POST", CHAT + "?x=1", body.encode(), wallets.miner_hotkey),
        "body": body,
        "method": "POST",
        "path": CHAT + "?x=1",
    }
    tampered = {**signed, "body": body.replace("hi", "ho")}
    script = str(ROOT / "tests" / "interop" / "bt11_http_auth.py")
    answers = []
    for request in (signed, tampered):
        done = subprocess.run(
            [bt11_python, script, "verify", wallets.miner_hotkey],
            input=json.dumps(request), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        answers.append(json.loads(done.stdout))
    assert answers[0] == {"verified": True, "hotkey": wallets.probe_hotkey}
    assert answers[1]["verified"] is False and "BadSignature" in answers[1]["error"]


def _post(port: int, body: bytes, headers: dict[str, str], path: str = CHAT) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}{path}",
        content=body,
        headers={**headers, "Content-Type": "application/json"},
        timeout=20,
    )


def test_refusals_get_their_4xx_and_the_miner_keeps_serving(door: MinerProcess, wallets: Wallets) -> None:
    probe = wallets.wallet("probe").hotkey  # type: ignore[attr-defined]
    stranger = wallets.wallet("stranger").hotkey  # type: ignore[attr-defined]
    miner = wallets.miner_hotkey
    body = json.dumps({"messages": [{"role": "user", "content": "refuse me"}]}).encode()
    replayed = sign_epistula(probe, body, miner)
    assert _post(door.port, body, replayed).status_code == 200
    forged = sign_btauth(stranger, "POST", CHAT, body, miner)
    forged["X-Bittensor-Hotkey"] = wallets.probe_hotkey  # claims the probe, signed by another key
    cases = {
        "unsigned": (401, {}, body),
        "wrong receiver": (401, sign_epistula(probe, body, wallets.stranger_hotkey), body),
        "stale": (401, sign_epistula(probe, body, miner, now=time.time() - 60), body),
        "replayed": (401, replayed, body),
        "tampered body": (401, sign_btauth(probe, "POST", CHAT, body, miner), body.replace(b"me", b"us")),
        "bad signature": (401, forged, body),
        "hotkey not allowed": (403, sign_btauth(stranger, "POST", CHAT, body, miner), body),
        "malformed header": (400, {**sign_epistula(probe, body, miner), "Epistula-Timestamp": "soon"}, body),
        "not json": (400, sign_btauth(probe, "POST", CHAT, b"{nope", miner), b"{nope"),
        "bad timeout": (400, {**sign_epistula(probe, body, miner), "X-Client-Timeout": "never"}, body),
    }
    seen = {}
    for name, (_, headers, sent) in cases.items():
        answer = _post(door.port, sent, headers)
        seen[name] = answer.status_code
        assert answer.json()["error"]["message"], name
    assert seen == {name: status for name, (status, _, _) in cases.items()}
    too_big = b'{"messages": [{"role": "user", "content": "' + b"x" * 1_100_000 + b'"}]}'
    assert _post(door.port, too_big, sign_epistula(probe, too_big, miner)).status_code == 413
    assert httpx.get(f"http://127.0.0.1:{door.port}{CHAT}").status_code == 405
    fine = _post(door.port, body, sign_epistula(probe, body, miner))
    assert fine.status_code == 200 and fine.json()["choices"][0]["message"]["content"] == "refuse me"
    assert door.proc is not None and door.proc.poll() is None


def test_models_and_availability_are_answered_unsigned(door: MinerProcess) -> None:
    models = httpx.get(f"http://127.0.0.1:{door.port}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["echo"]
    asked = {
        "task_availabilities": {"QuestionAnsweringTask": False},
        "llm_model_availabilities": {"echo": False, "x": True},
    }
    answer = httpx.post(f"http://127.0.0.1:{door.port}/availability", json=asked).json()
    assert answer == {"task_availabilities": {"QuestionAnsweringTask": True},
                      "llm_model_availabilities": {"echo": True, "x": False}}  # fmt: skip


def test_a_door_on_its_own_port_shares_the_miners_gate(tmp_path: Path, wallets: Wallets) -> None:
    port = free_port()
    with running_miner(
        tmp_path, wallets, backend="echo", http__auth='["btauth"]', http__port=str(port),
        max_concurrency="1", max_queue="0", echo__delay_per_token="0.2",
    ) as miner:  # fmt: skip
        keypair = wallets.wallet("probe").hotkey  # type: ignore[attr-defined]

        async def both() -> list[Any]:
            dendrite = make_dendrite(wallets.wallet("probe"))
            target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
            async with aiohttp.ClientSession() as session:
                axon = asyncio.ensure_future(
                    stream_once(dendrite, target, make_synapse("prompting", "a b c d e f"), timeout=10)
                )
                await asyncio.sleep(0.5)  # the axon's request holds the one place at the model...
                http = await chat_once(
                    session, f"http://127.0.0.1:{port}", keypair, wallets.miner_hotkey, "btauth", "x"
                )
                results = [await axon, http]
            await dendrite.aclose_session()
            return results

        axon, http = asyncio.run(both())
        assert axon.status_code == 200
        assert http.status_code == 503 and "busy" in http.status_message  # ...so the door's waits on it

        async def alone() -> Any:
            async with aiohttp.ClientSession() as session:
                return await chat_once(
                    session, f"http://127.0.0.1:{port}", keypair, wallets.miner_hotkey, "btauth", "alone"
                )

        assert asyncio.run(alone()).completion == "alone"
        assert httpx.get(f"http://127.0.0.1:{port}/nowhere").status_code == 404


def test_a_caller_that_leaves_frees_the_model_at_once(tmp_path: Path, wallets: Wallets) -> None:
    with running_miner(
        tmp_path, wallets, backend="echo", http__auth='["epistula"]',
        max_concurrency="1", max_queue="0", echo__delay_per_token="0.1",
    ) as miner:  # fmt: skip
        keypair = wallets.wallet("probe").hotkey  # type: ignore[attr-defined]
        long = " ".join(f"w{i}" for i in range(200))  # 20 s of generation
        body = json.dumps({"messages": [{"role": "user", "content": long}], "stream": True}).encode()

        async def leave_then_ask() -> Any:
            async with aiohttp.ClientSession() as session:
                headers = {**sign_epistula(keypair, body, wallets.miner_hotkey), "Content-Type": "a/json"}
                async with session.post(
                    f"http://127.0.0.1:{miner.port}{CHAT}", data=body, headers=headers
                ) as r:
                    assert r.status == 200
                    await r.content.readline()  # the first event: generating
                # gone; the one place at the model must be free again without waiting out the 20 s
                for _ in range(50):
                    again = await chat_once(
                        session, f"http://127.0.0.1:{miner.port}", keypair, wallets.miner_hotkey,
                        "epistula", "back", timeout=10,
                    )  # fmt: skip
                    if again.status_code != 503:
                        return again
                    await asyncio.sleep(0.1)
                return again

        again = asyncio.run(leave_then_ask())
        assert (again.status_code, again.completion) == (200, "back"), again.status_message
        assert "chat/epistula from" in miner.log and "cancelled, client gone" in miner.log
