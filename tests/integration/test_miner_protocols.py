"""What the subnets' validators send (issue 11), answered by real miners through a real axon and dendrite,
with validator-side classes written the subnets' way (tests/validators.py) beside the project's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once
from tests import validators
from tests.helpers import Wallets, running_miner

pytestmark = pytest.mark.integration

PROMPT = "the quick brown fox"


async def _five_calls(wallets: Wallets, port: int, seed: int | None = None) -> dict[str, Any]:
    """SN1 classic, SN1 late-2024, availability, SN35, text-prompting streaming and plain."""
    dendrite = make_dendrite(wallets.wallet("probe"))
    target = axon_info("127.0.0.1", port, wallets.miner_hotkey)
    try:
        late = validators.StreamPromptingSynapse(
            task_name="QuestionAnsweringTask", roles=["user"], messages=[PROMPT], seed=seed, timeout=30
        )
        asked = validators.AvailabilitySynapse(
            task_availabilities={"QuestionAnsweringTask": True, "InferenceTask": True},
            llm_model_availabilities={"gemma-3-270m-q4_k_m": True, "some/other-model": True},
        )
        plain = validators.Prompting(roles=["user"], messages=[PROMPT])
        return {
            "classic": await stream_once(dendrite, target, make_synapse("prompting", PROMPT, timeout=30), 30),
            "late": await stream_once(dendrite, target, late, timeout=30),
            "einstein": await stream_once(
                dendrite, target, make_synapse("einstein", f"question_text={PROMPT.replace(' ', '+')}"), 30
            ),
            "text-stream": await stream_once(dendrite, target, make_synapse("text-prompting", PROMPT), 30),
            "plain": await dendrite.call(target, plain, timeout=30, deserialize=False),
            "availability": await dendrite.call(target, asked, timeout=10, deserialize=False),
        }
    finally:
        await dendrite.aclose_session()


async def test_an_echo_miner_answers_all_five_calls_exactly(tmp_path: Path, wallets: Wallets) -> None:
    protocols = json.dumps(["prompting", "einstein", "text-prompting"])
    with running_miner(
        tmp_path, wallets, backend="echo", protocols=protocols, tasks='["QuestionAnsweringTask"]'
    ) as miner:
        answers = await _five_calls(wallets, miner.port)
    for name in ("classic", "late", "einstein", "text-stream"):
        assert answers[name].status_code == 200, (name, answers[name].status_message)
        assert answers[name].completion == PROMPT, name
    plain = answers["plain"]
    assert plain.dendrite.status_code == 200, plain.dendrite.status_message
    assert plain.completion == PROMPT
    availability = answers["availability"]
    assert availability.dendrite.status_code == 200, availability.dendrite.status_message
    assert availability.task_availabilities == {"QuestionAnsweringTask": True, "InferenceTask": False}
    assert availability.llm_model_availabilities == {"gemma-3-270m-q4_k_m": False, "some/other-model": False}


@pytest.mark.model
async def test_a_llamacpp_miner_answers_all_five_and_a_seed_repeats_its_answer(
    tmp_path: Path, wallets: Wallets, gguf_model: str
) -> None:
    protocols = json.dumps(["prompting", "einstein", "text-prompting"])
    with running_miner(
        tmp_path,
        wallets,
        backend="llamacpp",
        llamacpp__model_path=gguf_model,
        llamacpp__n_threads="1",
        protocols=protocols,
        max_tokens="24",
        temperature="0.9",
        max_queue="8",
    ) as miner:
        first = await _five_calls(wallets, miner.port, seed=1234)
        second = await _five_calls(wallets, miner.port, seed=1234)
    for name in ("classic", "late", "einstein", "text-stream"):
        assert first[name].status_code == 200 and first[name].completion, (name, first[name].status_message)
    assert first["plain"].dendrite.status_code == 200 and first["plain"].completion
    assert first["availability"].llm_model_availabilities == {
        "gemma-3-270m-q4_k_m": True,
        "some/other-model": False,
    }
    assert first["availability"].task_availabilities == {"QuestionAnsweringTask": True, "InferenceTask": True}
    # Same seed, temperature 0.9: the same answer twice.
    assert first["late"].completion == second["late"].completion


async def test_a_target_model_it_does_not_serve_is_refused_when_configured(
    tmp_path: Path, wallets: Wallets
) -> None:
    with running_miner(
        tmp_path, wallets, backend="echo", on_other_model="refuse", model_names='["my-alias"]'
    ) as miner:
        dendrite = make_dendrite(wallets.wallet("probe"))
        target = axon_info("127.0.0.1", miner.port, wallets.miner_hotkey)
        other = validators.StreamPromptingSynapse(
            task_name="InferenceTask", roles=["user"], messages=["hi"], target_model="some/other-model"
        )
        mine = validators.StreamPromptingSynapse(
            task_name="InferenceTask", roles=["user"], messages=["hi"], target_model="my-alias"
        )
        refused = await stream_once(dendrite, target, other, timeout=10)
        served = await stream_once(dendrite, target, mine, timeout=10)
        await dendrite.aclose_session()
    assert refused.status_code == 400 and "not served here" in refused.status_message
    assert served.status_code == 200 and served.completion == "hi"
