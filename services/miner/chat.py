"""From a synapse's ``roles``/``messages`` to the chat a backend sees, and to a plain transcript.

Models with a chat template get the chat as messages; a base model (no template, like the bundled Gemma
270M) gets :func:`transcript`, which ends with ``"Assistant:"`` so the model continues as the assistant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.miner.protocolspec import SPECS

ROLES = ("system", "user", "assistant")
# A base model continuing a transcript would otherwise write the next user turn itself.
TRANSCRIPT_STOP = ("\nUser:", "\nSystem:")


class ChatError(ValueError):
    """The request's chat cannot be used (answered with HTTP 400, the miner keeps serving)."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def build_chat(
    roles: list[str], messages: list[str], *, system_prompt: str, protocol: str
) -> list[ChatMessage]:
    """Pair roles with messages, decode the protocol's question (Einstein's), and put the system prompt first.

    The request's own system message, when it has one, is kept and ours goes before it. Unknown roles
    are treated as ``user`` (validators have used ``human``/``ai`` in the past, which we map).
    """
    if not messages:
        raise ChatError("messages is empty: nothing to answer")
    if len(roles) != len(messages):
        raise ChatError(f"roles has {len(roles)} entries but messages has {len(messages)}")
    aliases = {"human": "user", "ai": "assistant", "bot": "assistant"}
    chat = [ChatMessage(aliases.get(r.lower(), r.lower()), m) for r, m in zip(roles, messages, strict=True)]
    chat = [c if c.role in ROLES else ChatMessage("user", c.content) for c in chat]
    system = system_prompt
    spec = SPECS.get(protocol)
    decode = spec.question if spec is not None else None
    if decode is not None:
        # The question is the last user message; its type becomes a hint in the system prompt so the
        # model sees the question itself, exactly as the validator wrote it.
        last = (
            max(i for i, c in enumerate(chat) if c.role == "user")
            if any(c.role == "user" for c in chat)
            else len(chat) - 1
        )
        question, qtype = decode(chat[last].content)
        chat[last] = ChatMessage(chat[last].role, question)
        if qtype:
            system = f"{system}\nThe question type is: {qtype}.".strip()
    if system:
        chat.insert(0, ChatMessage("system", system))
    return chat


def last_user_message(chat: list[ChatMessage]) -> str:
    """The prompt: the last user message (or the last message of any role if there is none)."""
    for message in reversed(chat):
        if message.role == "user":
            return message.content
    return chat[-1].content if chat else ""


def transcript(chat: list[ChatMessage]) -> str:
    """A plain prompt for base models: the system text, then ``User:``/``Assistant:`` turns."""
    lines: list[str] = []
    for message in chat:
        if message.role == "system":
            lines.append(message.content.strip())
            lines.append("")
        elif message.role == "user":
            lines.append(f"User: {message.content.strip()}")
        else:
            lines.append(f"Assistant: {message.content.strip()}")
    lines.append("Assistant:")
    return "\n".join(lines)


def check_text(messages: list[str]) -> None:
    """Refuse text a model cannot take: a lone surrogate (``"\\ud800"``) survives JSON but not UTF-8."""
    for index, message in enumerate(messages):
        try:
            message.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ChatError(
                f"messages[{index}] is not valid text: {exc.reason} at position {exc.start}"
            ) from None


def trim_chat(
    chat: list[ChatMessage], budget: int, measure: Callable[[list[ChatMessage]], int]
) -> list[ChatMessage]:
    """The newest part of ``chat`` that ``measure``s at most ``budget``.

    The leading system prompt and the last message (the question) are kept; older messages go first,
    oldest first; if the question alone is still too long, its beginning is cut (its end is usually
    what is asked). Returns an empty list when even that cannot fit.
    """
    head = chat[:1] if chat and chat[0].role == "system" and len(chat) > 1 else []
    body = chat[len(head) :]
    while len(body) > 1 and measure(head + body) > budget:
        body = body[1:]
    size = measure(head + body)
    last = body[-1]
    text = last.content
    for _ in range(8):  # each pass shrinks the text in proportion to how far over it is
        if size <= budget or not text:
            break
        keep = int(len(text) * budget / size * 0.95) - 1
        text = text[len(text) - keep :] if keep > 0 else ""
        size = measure([*head, *body[:-1], ChatMessage(last.role, text)])
    if size > budget or not text:
        return []
    return [*head, *body[:-1], ChatMessage(last.role, text)]
