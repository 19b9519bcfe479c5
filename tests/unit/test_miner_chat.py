"""From a synapse's roles/messages to a chat, Einstein's URL-encoded question, and the transcript."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from services.miner.chat import (
    ChatError,
    ChatMessage,
    build_chat,
    last_user_message,
    transcript,
)
from services.miner.protocolspec import decode_einstein

SYSTEM = "Be brief."


def pairs(chat: list[ChatMessage]) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in chat]


def einstein_prompt(text: str = "", markdown: str = "", qtype: str = "") -> str:
    return urlencode({"question_text": text, "question_markdown": markdown, "question_type": qtype})


# --- build_chat ---------------------------------------------------------------------------------------


def test_system_prompt_goes_first() -> None:
    chat = build_chat(["user"], ["Hi"], system_prompt=SYSTEM, protocol="prompting")
    assert pairs(chat) == [("system", SYSTEM), ("user", "Hi")]


def test_empty_system_prompt_adds_no_system_message() -> None:
    chat = build_chat(["user"], ["Hi"], system_prompt="", protocol="prompting")
    assert pairs(chat) == [("user", "Hi")]


def test_the_requests_own_system_message_is_kept_after_ours() -> None:
    chat = build_chat(
        ["system", "user", "assistant", "user"],
        ["You are a pirate.", "Hi", "Arr.", "Where is the gold?"],
        system_prompt=SYSTEM,
        protocol="prompting",
    )
    assert pairs(chat) == [
        ("system", SYSTEM),
        ("system", "You are a pirate."),
        ("user", "Hi"),
        ("assistant", "Arr."),
        ("user", "Where is the gold?"),
    ]


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("human", "user"),
        ("Human", "user"),
        ("ai", "assistant"),
        ("bot", "assistant"),
        ("ASSISTANT", "assistant"),
        ("User", "user"),
        ("System", "system"),
    ],
)
def test_role_aliases_and_case(role: str, expected: str) -> None:
    chat = build_chat([role], ["text"], system_prompt="", protocol="prompting")
    assert pairs(chat) == [(expected, "text")]


@pytest.mark.parametrize("role", ["tool", "narrator", "", "function"])
def test_unknown_roles_become_user(role: str) -> None:
    chat = build_chat([role], ["text"], system_prompt="", protocol="prompting")
    assert pairs(chat) == [("user", "text")]


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ChatError, match="2 entries but messages has 1"):
        build_chat(["user", "assistant"], ["Hi"], system_prompt=SYSTEM, protocol="prompting")


def test_empty_messages_are_refused() -> None:
    with pytest.raises(ChatError, match="empty"):
        build_chat([], [], system_prompt=SYSTEM, protocol="prompting")


def test_chat_error_is_a_value_error() -> None:
    # The service answers it with a 400; it must not be mistaken for a backend failure.
    assert issubclass(ChatError, ValueError)


def test_other_protocols_leave_an_einstein_looking_message_alone() -> None:
    prompt = einstein_prompt(text="What is 2+2?", qtype="math")
    chat = build_chat(["user"], [prompt], system_prompt=SYSTEM, protocol="prompting")
    assert pairs(chat) == [("system", SYSTEM), ("user", prompt)]


# --- Einstein ----------------------------------------------------------------------------------------


def test_einstein_question_text_is_preferred_over_markdown() -> None:
    prompt = einstein_prompt(text="What is 2+2?", markdown="What is **2+2**?", qtype="math")
    chat = build_chat(["user"], [prompt], system_prompt=SYSTEM, protocol="einstein")
    assert chat[-1] == ChatMessage("user", "What is 2+2?")


def test_einstein_markdown_is_the_fallback() -> None:
    prompt = einstein_prompt(text="", markdown="Solve $x^2 = 4$", qtype="algebra")
    chat = build_chat(["user"], [prompt], system_prompt=SYSTEM, protocol="einstein")
    assert chat[-1] == ChatMessage("user", "Solve $x^2 = 4$")


def test_einstein_question_type_goes_to_the_system_prompt() -> None:
    prompt = einstein_prompt(text="Integrate x dx", qtype="calculus")
    chat = build_chat(["user"], [prompt], system_prompt=SYSTEM, protocol="einstein")
    assert chat[0].role == "system"
    assert chat[0].content.startswith(SYSTEM)
    assert "calculus" in chat[0].content
    assert "calculus" not in chat[-1].content


def test_einstein_question_type_without_a_system_prompt() -> None:
    prompt = einstein_prompt(text="Integrate x dx", qtype="calculus")
    chat = build_chat(["user"], [prompt], system_prompt="", protocol="einstein")
    assert chat[0] == ChatMessage("system", "The question type is: calculus.")


def test_einstein_without_a_type_leaves_the_system_prompt_as_is() -> None:
    prompt = einstein_prompt(text="Integrate x dx")
    chat = build_chat(["user"], [prompt], system_prompt=SYSTEM, protocol="einstein")
    assert chat[0] == ChatMessage("system", SYSTEM)


def test_einstein_plain_message_is_unchanged() -> None:
    message = "What is 2 + 2? Answer & explain = please."
    chat = build_chat(["user"], [message], system_prompt=SYSTEM, protocol="einstein")
    assert pairs(chat) == [("system", SYSTEM), ("user", message)]


def test_einstein_url_encoded_characters_are_decoded() -> None:
    question = "Is 1 + 1 = 2 & 3 > 2? Ünïcödé: π ≈ 3.14, 東京 50% off"
    prompt = einstein_prompt(text=question, qtype="logic")
    assert "%" in prompt and "+" in prompt  # really encoded: spaces as '+', the rest as %XX
    chat = build_chat(["user"], [prompt], system_prompt="", protocol="einstein")
    assert chat[-1].content == question


def test_einstein_hand_written_encoding_is_decoded() -> None:
    prompt = "question_text=What+is+3%2B4%3F&question_markdown=&question_type=arithmetic"
    assert decode_einstein(prompt) == ("What is 3+4?", "arithmetic")


def test_einstein_decodes_only_the_last_user_message() -> None:
    first = einstein_prompt(text="old question")
    last = einstein_prompt(text="new question", qtype="t")
    chat = build_chat(
        ["user", "assistant", "user", "assistant"],
        [first, "old answer", last, "partial"],
        system_prompt="",
        protocol="einstein",
    )
    assert chat[1].content == first  # an earlier turn stays as it came
    assert chat[3].content == "new question"
    assert chat[4] == ChatMessage("assistant", "partial")


def test_decode_einstein_returns_plain_text_and_no_type() -> None:
    assert decode_einstein("hello") == ("hello", "")


# --- transcript and last_user_message -----------------------------------------------------------------


def test_transcript_format() -> None:
    chat = [
        ChatMessage("system", "  Be brief.  "),
        ChatMessage("user", "Hi there "),
        ChatMessage("assistant", " Hello!"),
        ChatMessage("user", "Bye"),
    ]
    assert transcript(chat) == ("Be brief.\n\nUser: Hi there\nAssistant: Hello!\nUser: Bye\nAssistant:")


def test_transcript_ends_with_the_assistant_cue_even_without_a_system_prompt() -> None:
    assert transcript([ChatMessage("user", "Q")]) == "User: Q\nAssistant:"


def test_transcript_of_a_built_chat() -> None:
    chat = build_chat(["human"], ["What is 2+2?"], system_prompt=SYSTEM, protocol="prompting")
    assert transcript(chat) == f"{SYSTEM}\n\nUser: What is 2+2?\nAssistant:"


def test_last_user_message_is_the_last_user_turn() -> None:
    chat = [
        ChatMessage("system", "s"),
        ChatMessage("user", "first"),
        ChatMessage("assistant", "a"),
        ChatMessage("user", "second"),
        ChatMessage("assistant", "b"),
    ]
    assert last_user_message(chat) == "second"


def test_last_user_message_without_a_user_turn_is_the_last_message() -> None:
    assert last_user_message([ChatMessage("system", "s"), ChatMessage("assistant", "a")]) == "a"


def test_last_user_message_of_nothing_is_empty() -> None:
    assert last_user_message([]) == ""


def test_chat_message_as_dict() -> None:
    assert ChatMessage("user", "hi").as_dict() == {"role": "user", "content": "hi"}
