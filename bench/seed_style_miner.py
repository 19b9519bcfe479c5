"""A reference miner written the way the seed documents write it, for the event-loop benchmark only.

``forward`` returns ``synapse.create_streaming_response(token_streamer)`` whose ``async _forward`` runs
``for token in llm(..., stream=True)`` *on the event loop*, sending every ``streaming_batch_size`` tokens
and checking a timeout between tokens, as in the guide "Creating Stream Miners". Each token is produced
by a blocking llama.cpp call on the event loop, which gets control back only at each ``await send``: a
ping, a new request or a health probe waits for whole batches of tokens, several times over (each step
of handling a request is one more turn of the loop). Same protocol class, model, prompt format, sampling
and threads as the product's llamacpp miner, so only the structure differs. Do not copy this: it is the
anti-pattern.

One addition to the seed: an ``asyncio.Lock`` around a generation (``--no-lock`` removes it). Without it,
two concurrent requests interleave on one llama.cpp context at the ``await send`` points, and the process
dies with a segmentation fault (the event-loop benchmark shows it once, then uses the lock).

Run (the benchmark starts it): ``python -m bench.seed_style_miner --port P --wallet-path DIR ...``.
"""

# No ``from __future__ import annotations``: bittensor reads the forward's annotations as classes.

import argparse
import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import bittensor as bt
from bittensor_wallet import Wallet

from services.miner.chat import TRANSCRIPT_STOP, build_chat, transcript
from services.miner.protocols import StreamPromptingSynapse

if TYPE_CHECKING:
    from llama_cpp import Llama

SYSTEM_PROMPT = "You are a helpful, concise assistant."  # the product miner's default

Send = Callable[[dict[str, Any]], Awaitable[None]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.seed_style_miner", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--wallet-path", required=True)
    parser.add_argument("--wallet-name", default="fleet")
    parser.add_argument("--hotkey", default="miner")
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--n-threads", type=int, default=1)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=12, help="streaming_batch_size")
    parser.add_argument(
        "--no-lock",
        action="store_true",
        help="no asyncio.Lock around a generation: the seed exactly (crashes under concurrent requests)",
    )
    return parser.parse_args(argv)


Forward = Callable[[StreamPromptingSynapse], StreamPromptingSynapse.BTStreamingResponse]


def make_forward(llm: "Llama", args: argparse.Namespace, lock: Any) -> Forward:
    """The seed's ``forward``: a streaming response whose ``_forward`` iterates llama.cpp on the loop."""

    def forward(synapse: StreamPromptingSynapse) -> StreamPromptingSynapse.BTStreamingResponse:
        init_time = time.time()
        timeout_threshold = float(synapse.timeout or 12.0)
        chat = build_chat(
            list(synapse.roles), list(synapse.messages), system_prompt=SYSTEM_PROMPT, protocol="prompting"
        )
        prompt = transcript(chat)

        async def _forward(send: Send) -> None:
            buffer: list[str] = []
            timeout_reached = False
            try:
                async with lock:
                    # The seed's pattern: a blocking iterator inside the coroutine, on the event loop.
                    stream: Iterator[Any] = llm(
                        prompt,
                        max_tokens=args.max_tokens,
                        temperature=0.0,
                        stop=list(TRANSCRIPT_STOP),
                        stream=True,
                    )  # type: ignore[assignment]
                    for chunk in stream:
                        buffer.append(chunk["choices"][0]["text"])
                        if time.time() - init_time > timeout_threshold:
                            timeout_reached = True
                            break
                        if len(buffer) == args.batch_size:
                            joined = "".join(buffer)
                            await send(
                                {"type": "http.response.body", "body": joined.encode(), "more_body": True}
                            )
                            buffer = []
                    if buffer and not timeout_reached:
                        joined = "".join(buffer)
                        # The seed sends this last part with more_body False; bittensor's response sends the
                        # closing empty body itself, so True here avoids a second "final" message.
                        await send({"type": "http.response.body", "body": joined.encode(), "more_body": True})
            except Exception as exc:  # the seed's catch-all
                bt.logging.error(f"Error in forward: {exc}")

        return synapse.create_streaming_response(_forward)

    return forward


def serve(wallet: Wallet, port: int, forward: Forward) -> None:
    """An axon on 127.0.0.1:``port`` serving ``forward`` until SIGTERM or SIGINT."""
    axon = bt.Axon(wallet=wallet, ip="127.0.0.1", port=port, external_ip="127.0.0.1")
    axon.fast_server.config.host = "127.0.0.1"  # only ever reachable from this machine
    axon.attach(forward_fn=forward)
    axon.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"seed-style miner on 127.0.0.1:{port}", flush=True)
    while not stop.wait(1.0):
        pass
    axon.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from llama_cpp import Llama

    llm = Llama(model_path=args.model, n_ctx=args.n_ctx, n_threads=args.n_threads, seed=0, verbose=False)
    wallet = Wallet(name=args.wallet_name, hotkey=args.hotkey, path=args.wallet_path)
    # Each `await send` yields to the event loop (bittensor's middleware passes the body through a memory
    # stream), so without this lock a second request's `for token in llm(...)` starts in between and two
    # generations interleave on one llama.cpp context: the process segfaults. The lock keeps the seed's
    # structure (blocking iteration on the loop) and adds only "one generation at a time", like the product.
    lock = contextlib.nullcontext() if args.no_lock else asyncio.Lock()
    serve(wallet, args.port, make_forward(llm, args, lock))
    llm.close()


if __name__ == "__main__":
    main()
