"""One description per protocol the miner serves, in one registry: everything else that lists protocols
is derived from :data:`PROTOCOL_SPECS` (the settings' allowed values, the fleet file's options and schema,
the axon's routes in :mod:`services.miner.protocols`, the chat's decoding in :mod:`services.miner.chat`).

This module is light (no bittensor): the settings and the fleet read it without loading the synapse
classes, which :mod:`services.miner.protocols` defines and looks up by the class names given here (the
axon routes by class name, ``POST /<class>``, so the name is the wire contract).

Adding a protocol: its synapse class in :mod:`services.miner.protocols`, its :class:`ProtocolSpec` here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs


class Route(StrEnum):
    """How a synapse class is answered."""

    stream = "stream"  # a streaming response through the token streamer
    plain = "plain"  # the whole completion in the synapse
    availability = "availability"  # what this miner serves, from its settings


@dataclass(frozen=True)
class ProtocolSpec:
    """What the miner and the fleet need to know about one protocol (one value of ``MINER_PROTOCOLS``)."""

    name: str
    subnet: str  # whose validators send it (docs)
    # The synapse classes it serves (by class name: the axon's route) and how each is answered; the
    # streaming one first.
    routes: tuple[tuple[str, Route], ...]
    # How the last user message is decoded into (question, question type) before the model sees it; the
    # type becomes a hint in the system prompt. None: the message is the question as it is.
    question: Callable[[str], tuple[str, str]] | None = None

    @property
    def synapse(self) -> str:
        """The class name of its streaming synapse."""
        return self.routes[0][0]


def decode_einstein(message: str) -> tuple[str, str]:
    """Split Einstein's URL-encoded prompt into (question, question type).

    The prompt looks like ``question_text=...&question_markdown=...&question_type=...``. ``question_text``
    wins over ``question_markdown``. A message that is not in that form is returned unchanged.
    """
    if "question_text=" not in message and "question_markdown=" not in message:
        return message, ""
    fields = parse_qs(message, keep_blank_values=True)
    text = (fields.get("question_text") or [""])[0]
    markdown = (fields.get("question_markdown") or [""])[0]
    qtype = (fields.get("question_type") or [""])[0]
    return text or markdown, qtype


PROTOCOL_SPECS: tuple[ProtocolSpec, ...] = (
    # Beside its streaming class, prompting answers which tasks and models this miner serves.
    ProtocolSpec(
        name="prompting",
        subnet="SN1 prompting",
        routes=(("StreamPromptingSynapse", Route.stream), ("AvailabilitySynapse", Route.availability)),
    ),
    ProtocolSpec(
        name="einstein",
        subnet="SN35 (URL-encoded question)",
        routes=(("StreamCoreSynapse", Route.stream),),
        question=decode_einstein,
    ),
    # Beside its streaming class (chunks split on newlines by its client), the plain Prompting: the
    # whole completion in one answer.
    ProtocolSpec(
        name="text-prompting",
        subnet="text-prompting (newline-split)",
        routes=(("StreamPrompting", Route.stream), ("Prompting", Route.plain)),
    ),
)

SPECS: dict[str, ProtocolSpec] = {spec.name: spec for spec in PROTOCOL_SPECS}
PROTOCOL_NAMES: tuple[str, ...] = tuple(SPECS)
# What a miner serves when its settings name no protocol.
DEFAULT_PROTOCOLS: tuple[str, ...] = (PROTOCOL_SPECS[0].name,)
