"""From a synapse to what the model is asked: checked against the miner's limits before it may wait.

A request the model cannot take is a :class:`~services.miner.errors.RequestError` with its status (400
for text it cannot read, 413 for too much of it) and never reaches the model; with
``limits.on_too_long: trim`` a prompt over a limit is trimmed instead (oldest turns first, then the start
of the question). Token counts come from the backend, off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from services.miner.backends import SPECS
from services.miner.backends.base import Backend, GenerationRequest
from services.miner.chat import ChatError, ChatMessage, build_chat, check_text, trim_chat
from services.miner.errors import RequestError
from services.miner.settings import MinerSettings


def served_models(settings: MinerSettings) -> list[str]:
    """The model names this miner answers to: its model's own name, then the configured aliases."""
    spec = SPECS[settings.backend]
    own = spec.model_name(getattr(settings, spec.name))
    return [name for name in dict.fromkeys([own, *settings.model_names]) if name]


def availabilities(
    settings: MinerSettings, tasks: list[str], models: list[str]
) -> tuple[dict[str, bool], dict[str, bool]]:
    """SN1's availability question: which of these tasks and models this miner serves (its settings)."""
    served = served_models(settings)
    return (
        {task: settings.tasks is None or task in settings.tasks for task in tasks},
        {model: model in served for model in models},
    )


async def build_request(
    settings: MinerSettings, backend: Backend, synapse: Any, protocol: str
) -> GenerationRequest:
    """The generation request for a synapse, or a :class:`RequestError` saying why there is none."""
    limits = settings.limits
    roles, messages = list(synapse.roles), list(synapse.messages)
    if len(messages) > limits.max_messages:
        raise RequestError(
            f"request too large: {len(messages)} messages, at most {limits.max_messages} taken", status=413
        )
    try:
        check_text(messages)
        chat = build_chat(roles, messages, system_prompt=settings.system_prompt, protocol=protocol)
    except ChatError as exc:
        raise RequestError(f"bad request: {exc}") from None
    chat = fit(settings, chat, limits.max_prompt_chars, _chars, "characters")
    budget = backend.token_budget(settings.max_tokens)
    if limits.max_prompt_tokens is not None:
        budget = limits.max_prompt_tokens if budget is None else min(budget, limits.max_prompt_tokens)
    if budget is not None:
        count = backend.prompt_tokens
        # Tokenizing is bounded by max_prompt_chars, but it is still model work: off the loop.
        tokens = await asyncio.to_thread(count, chat)
        if tokens is not None and tokens > budget:
            chat = await asyncio.to_thread(
                fit, settings, chat, budget, lambda c: count(c) or 0, "tokens", tokens
            )
    target = getattr(synapse, "target_model", None)
    models = served_models(settings)
    if target and settings.on_other_model == "refuse" and target not in models:
        raise RequestError(f"model {target!r} is not served here (this miner serves {', '.join(models)})")
    return GenerationRequest(
        chat=chat,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        seed=getattr(synapse, "seed", None),
    )


def fit(
    settings: MinerSettings,
    chat: list[ChatMessage],
    budget: int,
    measure: Callable[[list[ChatMessage]], int],
    unit: str,
    measured: int | None = None,
) -> list[ChatMessage]:
    """``chat`` if it fits ``budget``, else trimmed or refused as ``limits.on_too_long`` says."""
    size = measure(chat) if measured is None else measured
    if size <= budget:
        return chat
    if settings.limits.on_too_long == "trim":
        trimmed = trim_chat(chat, budget, measure)
        if trimmed:
            return trimmed
    raise RequestError(
        f"prompt too long: {size} {unit}, this miner takes at most {budget} "
        f"(limits.on_too_long: {settings.limits.on_too_long})",
        status=413,
    )


def _chars(chat: list[ChatMessage]) -> int:
    return sum(len(message.content) for message in chat)
