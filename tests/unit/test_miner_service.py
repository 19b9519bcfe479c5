"""MinerService with the echo backend: handler signatures (checked by a real bt.Axon), refusals, and
the forward-exception / exit-code decision, driving the response's token streamer with a fake send."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any, Tuple  # noqa: UP035 - the axon compares against typing.Tuple

import bittensor as bt
import pytest
from bittensor.core.synapse import TerminalInfo

from services.miner.backends.base import GenerationRequest
from services.miner.backends.echo import EchoBackend, EchoSettings
from services.miner.blacklist import ALLOWED_PRIORITY, Gatekeeper
from services.miner.chat import ChatMessage
from services.miner.errors import BackendError, ExitCode
from services.miner.protocols import PROTOCOLS, StreamPromptingSynapse
from services.miner.service import DisconnectAwareResponse, ExitRequest, MinerService
from services.miner.settings import MinerSettings
from tests.helpers import Wallets, free_port

PROBE = "5ProbeHotkeyForTheFleet"
STRANGER = "5SomeoneElse"
PROMPT = "Grüße aus 東京 🎉 and some more words"


class Recorder:
    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fail_with = fail_with

    async def __call__(self, message: dict[str, Any]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.messages.append(message)

    @property
    def text(self) -> str:
        return b"".join(m["body"] for m in self.messages).decode("utf-8")


def make_service(
    *, echo: EchoSettings | None = None, backend: Any = None, **settings: Any
) -> tuple[MinerService, ExitRequest]:
    values: dict[str, Any] = {
        "protocols": list(PROTOCOLS),
        "streaming_batch_size": 2,
        "max_chunk_delay": 60.0,
        "echo": echo or EchoSettings(),
    }
    values.update(settings)
    config = MinerSettings(**values)
    exit_request = ExitRequest()
    service = MinerService(
        config,
        backend if backend is not None else EchoBackend(config.echo),
        Gatekeeper(allowed_hotkeys=[PROBE], chain=None),
        exit_request,
    )
    return service, exit_request


def synapse(
    protocol: str = "prompting",
    roles: list[str] | None = None,
    messages: list[str] | None = None,
    hotkey: str | None = PROBE,
    timeout: float = 12.0,
) -> Any:
    return PROTOCOLS[protocol](
        roles=["user"] if roles is None else roles,
        messages=[PROMPT] if messages is None else messages,
        timeout=timeout,
        dendrite=TerminalInfo(hotkey=hotkey),
    )


# --- handlers and the real axon ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_handler_signatures_are_what_the_axon_checks(protocol: str) -> None:
    service, _ = make_service()
    forward, blacklist, priority = service.handlers(protocol)
    cls = PROTOCOLS[protocol]
    param = [inspect.Parameter("synapse", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=cls)]
    assert inspect.signature(forward) == inspect.Signature(param, return_annotation=cls.BTStreamingResponse)
    assert inspect.signature(blacklist) == inspect.Signature(param, return_annotation=Tuple[bool, str])  # noqa: UP006
    assert inspect.signature(priority) == inspect.Signature(param, return_annotation=float)


def make_axon(wallets: Wallets) -> bt.Axon:
    # external_ip given: no public-IP lookup. The axon is built but never started (nothing binds).
    return bt.Axon(wallet=wallets.wallet("miner"), ip="127.0.0.1", port=free_port(), external_ip="127.0.0.1")


def test_handlers_attach_to_a_real_axon_one_route_per_protocol(wallets: Wallets) -> None:
    service, _ = make_service()
    axon = make_axon(wallets)

    service.attach(axon)  # bittensor asserts every signature here

    names = {cls.__name__ for cls in PROTOCOLS.values()}
    assert names <= set(axon.forward_fns)
    for protocol, cls in PROTOCOLS.items():
        assert axon.forward_class_types[cls.__name__] is cls
        blacklist = axon.blacklist_fns[cls.__name__]
        priority = axon.priority_fns[cls.__name__]
        assert blacklist is not None and priority is not None
        assert blacklist(synapse(protocol, hotkey=PROBE)) == (False, "allowed hotkey")
        assert blacklist(synapse(protocol, hotkey=STRANGER))[0] is True
        assert priority(synapse(protocol, hotkey=PROBE)) == ALLOWED_PRIORITY
    routes = {getattr(route, "path", "") for route in axon.router.routes}
    assert {f"/{name}" for name in names} <= routes


def test_the_axon_really_rejects_a_wrong_blacklist_signature(wallets: Wallets) -> None:
    # The control for the test above: attach() does check, so passing it means something.
    service, _ = make_service()
    forward, _, priority = service.handlers("prompting")

    def blacklist(synapse: StreamPromptingSynapse) -> bool:
        return False

    with pytest.raises(AssertionError, match="blacklist_fn"):
        make_axon(wallets).attach(forward_fn=forward, blacklist_fn=blacklist, priority_fn=priority)


def test_only_the_configured_protocols_are_attached(wallets: Wallets) -> None:
    service, _ = make_service(protocols=["einstein"])
    axon = make_axon(wallets)
    service.attach(axon)
    assert "StreamCoreSynapse" in axon.forward_fns
    assert "StreamPromptingSynapse" not in axon.forward_fns


# --- forward -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
async def test_forward_streams_the_echo_answer(protocol: str) -> None:
    service, exit_request = make_service()
    forward, _, _ = service.handlers(protocol)

    response = await forward(synapse(protocol))
    assert isinstance(response, DisconnectAwareResponse)
    assert service.gate.load == 1  # reserved at once, before streaming
    send = Recorder()
    await response.token_streamer(send)

    assert send.text == PROMPT
    assert all(m["more_body"] is True for m in send.messages)
    assert service.gate.load == 0
    assert not exit_request.requested
    assert service.forward_exceptions == 0


@pytest.mark.parametrize(
    ("roles", "messages"),
    [(["user"], []), (["user", "assistant"], ["only one"]), ([], [])],
)
async def test_forward_on_a_bad_chat_answers_400(roles: list[str], messages: list[str]) -> None:
    service, exit_request = make_service()
    request = synapse(roles=roles, messages=messages)

    result = await service.forward(request, "prompting")

    assert result is request
    assert result.axon.status_code == 400
    assert result.axon.status_message.startswith("bad request:")
    assert service.gate.load == 0  # no place taken
    assert not exit_request.requested


async def test_forward_when_the_gate_is_full_answers_503_busy() -> None:
    service, exit_request = make_service(max_queue=0, max_concurrency=1)
    first = await service.forward(synapse(), "prompting")
    assert isinstance(first, DisconnectAwareResponse)

    request = synapse()
    second = await service.forward(request, "prompting")

    assert second is request
    assert second.axon.status_code == 503
    assert "busy" in second.axon.status_message
    assert not exit_request.requested

    await first.token_streamer(Recorder())  # the first finishes and frees the model
    assert isinstance(await service.forward(synapse(), "prompting"), DisconnectAwareResponse)


async def test_the_queue_admits_max_queue_waiting_requests() -> None:
    service, _ = make_service(max_queue=2, max_concurrency=1)
    answers = [await service.forward(synapse(), "prompting") for _ in range(4)]
    assert [isinstance(a, DisconnectAwareResponse) for a in answers] == [True, True, True, False]
    assert answers[3].axon.status_code == 503


async def test_a_failing_backend_with_stop_on_forward_exception_requests_exit_75() -> None:
    service, exit_request = make_service(
        echo=EchoSettings(fail_after_tokens=2), stop_on_forward_exception=True
    )
    response = await service.forward(synapse(messages=["one two three four five"]), "prompting")
    send = Recorder()

    await response.token_streamer(send)

    assert send.text == "one two "  # what was produced before the fault still went out
    assert exit_request.requested
    assert exit_request.code == ExitCode.FORWARD_EXCEPTION == 75
    assert "stop_on_forward_exception" in exit_request.reason
    assert "injected fault" in exit_request.reason
    assert service.forward_exceptions == 1
    assert service.gate.load == 0


async def test_a_failing_backend_without_stop_on_forward_exception_keeps_serving() -> None:
    service, exit_request = make_service(echo=EchoSettings(fail_after_tokens=1))
    response = await service.forward(synapse(messages=["one two three"]), "prompting")

    await response.token_streamer(Recorder())

    assert not exit_request.requested
    assert exit_request.code == ExitCode.OK
    assert service.forward_exceptions == 1
    assert service.gate.load == 0


async def test_a_client_disconnect_is_not_a_forward_exception() -> None:
    service, exit_request = make_service(stop_on_forward_exception=True)
    response = await service.forward(synapse(), "prompting")

    await response.token_streamer(Recorder(fail_with=OSError("client went away")))

    assert not exit_request.requested
    assert service.forward_exceptions == 0
    assert service.gate.load == 0


async def test_the_first_exit_reason_wins() -> None:
    service, exit_request = make_service(
        echo=EchoSettings(fail_after_tokens=0), stop_on_forward_exception=True
    )
    await (await service.forward(synapse(), "prompting")).token_streamer(Recorder())
    exit_request.request(ExitCode.OK, "SIGTERM")  # a stop signal during the forward-exception exit
    assert exit_request.code == ExitCode.FORWARD_EXCEPTION
    assert exit_request.wait(timeout=0) is True


class RecordingBackend:
    """A backend that records what it was asked (the chat the service built)."""

    name = "recording"
    default_concurrency = 1
    max_concurrency: int | None = 1
    server_load = None

    def __init__(self, context: int | None = None) -> None:
        self.requests: list[GenerationRequest] = []
        self.context = context  # prompt + answer tokens it takes (None: it cannot count)

    def load(self) -> None:
        return None

    def warmup(self) -> None:
        return None

    def prompt_tokens(self, chat: list[ChatMessage]) -> int | None:
        return sum(len(m.content.split()) for m in chat)  # a word is a token here

    def token_budget(self, max_tokens: int) -> int | None:
        return None if self.context is None else self.context - max_tokens

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        self.requests.append(request)
        yield "ok"

    async def aclose(self) -> None:
        return None


async def test_forward_passes_the_built_chat_and_limits_to_the_backend() -> None:
    backend = RecordingBackend()
    service, _ = make_service(backend=backend, system_prompt="SYS", max_tokens=17, temperature=0.2)
    prompt = "question_text=What+is+2%2B2%3F&question_markdown=&question_type=math"

    await (await service.forward(synapse("einstein", messages=[prompt]), "einstein")).token_streamer(
        Recorder()
    )

    [request] = backend.requests
    assert [(m.role, m.content) for m in request.chat] == [
        ("system", "SYS\nThe question type is: math."),
        ("user", "What is 2+2?"),
    ]
    assert (request.max_tokens, request.temperature) == (17, 0.2)


async def test_a_backend_error_raised_by_a_custom_backend_counts_once() -> None:
    class Broken(RecordingBackend):
        async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
            raise BackendError("GPU lost")
            yield ""  # pragma: no cover - makes this an async generator

    service, exit_request = make_service(backend=Broken(), stop_on_forward_exception=True)
    send = Recorder()
    await (await service.forward(synapse(), "prompting")).token_streamer(send)
    assert send.messages == []
    assert service.forward_exceptions == 1
    assert exit_request.code == ExitCode.FORWARD_EXCEPTION
    assert "GPU lost" in exit_request.reason


async def test_a_disconnect_while_the_backend_hangs_stops_generation_and_frees_the_model() -> None:
    # The whole ASGI response: the echo backend stalls after one piece, then the client goes away.
    service, exit_request = make_service(
        echo=EchoSettings(hang_after_tokens=1), streaming_batch_size=1, stop_on_forward_exception=True
    )
    response = await service.forward(synapse(messages=["first second third"]), "prompting")
    sent: list[dict[str, Any]] = []
    first_body = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body"):
            first_body.set()

    async def receive() -> dict[str, Any]:
        await first_body.wait()
        return {"type": "http.disconnect"}

    await asyncio.wait_for(response({"type": "http"}, receive, send), timeout=5)

    assert sent[0]["type"] == "http.response.start"
    assert [m["body"] for m in sent[1:] if m.get("body")] == [b"first "]
    assert service.gate.load == 0
    assert service.gate.running == 0
    assert service.forward_exceptions == 0
    assert not exit_request.requested


# --- requests the model cannot take: an answer with a status, never an exit -------------------------


async def test_a_lone_surrogate_is_a_400_not_a_forward_exception() -> None:
    service, exit_request = make_service(stop_on_forward_exception=True)
    request = synapse(messages=["hello \ud800 there"])
    result = await service.forward(request, "prompting")
    assert result is request
    assert result.axon.status_code == 400
    assert "not valid text" in result.axon.status_message
    assert not exit_request.requested and service.gate.load == 0


async def test_too_many_messages_or_characters_is_a_413() -> None:
    service, exit_request = make_service(limits={"max_messages": 2, "max_prompt_chars": 50}, system_prompt="")
    many = synapse(roles=["user"] * 3, messages=["a", "b", "c"])
    assert (await service.forward(many, "prompting")).axon.status_code == 413
    long = synapse(messages=["x" * 51])
    answer = await service.forward(long, "prompting")
    assert answer.axon.status_code == 413
    assert "prompt too long: 51 characters" in answer.axon.status_message
    assert not exit_request.requested


async def test_a_prompt_over_the_token_budget_is_refused_or_trimmed_as_configured() -> None:
    words = " ".join(f"w{i}" for i in range(100))  # 100 tokens for RecordingBackend; budget is 64 - 8
    refusing, _ = make_service(backend=RecordingBackend(context=64), max_tokens=8, system_prompt="")
    answer = await refusing.forward(synapse(messages=[words]), "prompting")
    assert answer.axon.status_code == 413
    assert "100 tokens, this miner takes at most 56" in answer.axon.status_message

    backend = RecordingBackend(context=64)
    trimming, _ = make_service(
        backend=backend, max_tokens=8, system_prompt="SYS", limits={"on_too_long": "trim"}
    )
    old = synapse(roles=["user", "assistant", "user"], messages=["old " * 30, "reply " * 30, words])
    response = await trimming.forward(old, "prompting")
    assert isinstance(response, DisconnectAwareResponse)
    await response.token_streamer(Recorder())
    [request] = backend.requests
    assert request.chat[0].content == "SYS"  # the system prompt stays
    assert len(request.chat) == 2  # older turns went first
    assert request.chat[-1].content.endswith("w99")  # the end of the question is kept
    assert backend.prompt_tokens(request.chat) <= 56


async def test_a_refusal_before_the_first_chunk_is_answered_with_its_status() -> None:
    """A backend that refuses at the start (a model server that is down): a 503 with the reason, no exit."""
    from services.miner.errors import DependencyError

    class Down(RecordingBackend):
        async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
            raise DependencyError("model server http://127.0.0.1:1/v1 unreachable: refused")
            yield ""  # pragma: no cover - makes this an async generator

    service, exit_request = make_service(backend=Down(), stop_on_forward_exception=True)
    response = await service.forward(synapse(), "prompting")
    send = Recorder()
    await response.stream_response(send)
    start = send.messages[0]
    assert start["type"] == "http.response.start" and start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"bt_header_axon_status_message"].startswith(b"dependency down: model server")
    assert not exit_request.requested and service.forward_exceptions == 0


async def test_a_stream_starts_with_200_only_when_its_first_chunk_is_ready() -> None:
    service, _ = make_service()
    response = await service.forward(synapse(messages=["one two three"]), "prompting")
    send = Recorder()
    await response.stream_response(send)
    assert send.messages[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in send.messages[1:]).decode() == "one two three"


def test_an_in_process_backend_refuses_more_than_one_generation_at_once() -> None:
    from services.miner.errors import ConfigError
    from services.miner.service import admitted_concurrency

    config = MinerSettings(max_concurrency=4)
    with pytest.raises(ConfigError, match="MINER_MAX_CONCURRENCY: the recording backend runs at most 1"):
        admitted_concurrency(config, RecordingBackend())
    assert admitted_concurrency(MinerSettings(), EchoBackend(EchoSettings())) == 64


def test_malloc_arenas_are_capped_on_glibc_unless_the_operator_set_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import platform

    from services.miner.app import bound_malloc_arenas

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert bound_malloc_arenas() is (platform.libc_ver()[0] == "glibc")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert bound_malloc_arenas() is False  # glibc read the operator's value at start; it stands


class BlankFirst(RecordingBackend):
    """A sampled model that ends its first answer at once (whitespace only), and answers the next."""

    def __init__(self, blanks: int = 1) -> None:
        super().__init__()
        self.blanks = blanks

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        self.requests.append(request)
        if len(self.requests) <= self.blanks:
            yield "\n"
            return
        for word in ("a", " second", " sample"):
            yield word


async def test_a_blank_answer_is_sampled_again_a_bounded_number_of_times() -> None:
    from services.miner.service import BLANK_SAMPLES

    backend = BlankFirst()
    service, _ = make_service(backend=backend, temperature=0.7)
    send = Recorder()
    await (await service.forward(synapse(), "prompting")).stream_response(send)
    assert send.messages[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in send.messages[1:]).decode() == "a second sample"
    first, second = backend.requests
    assert second.seed == (None if first.seed is None else first.seed + 1)

    # Blank twice: a third sample, each with the next seed.
    backend = BlankFirst(blanks=2)
    service, _ = make_service(backend=backend, temperature=0.7)
    send = Recorder()
    await (await service.forward(synapse(), "prompting")).stream_response(send)
    assert send.messages[0]["status"] == 200 and len(backend.requests) == 3
    seeds = [r.seed for r in backend.requests]
    assert seeds == [None] * 3 or seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]

    # Bounded: a model that ends blank BLANK_SAMPLES times is answered 502 with the reason.
    backend = BlankFirst(blanks=BLANK_SAMPLES)
    service, _ = make_service(backend=backend, temperature=0.7)
    send = Recorder()
    await (await service.forward(synapse(), "prompting")).stream_response(send)
    assert send.messages[0]["status"] == 502 and len(backend.requests) == BLANK_SAMPLES
    assert dict(send.messages[0]["headers"])[b"bt_header_axon_status_message"].startswith(b"the model ended")

    # Greedy decoding would give the same blank again: no second try.
    backend = BlankFirst()
    service, _ = make_service(backend=backend, temperature=0.0)
    await (await service.forward(synapse(), "prompting")).stream_response(Recorder())
    assert len(backend.requests) == 1


def test_a_second_sample_takes_the_next_seed() -> None:
    from services.miner.service import resampled

    request = GenerationRequest(chat=[ChatMessage("user", "hi")], max_tokens=8, temperature=0.7, seed=41)
    again = resampled(request)
    assert again is not None and again.seed == 42 and again.chat == request.chat
