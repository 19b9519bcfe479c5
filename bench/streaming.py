"""Streaming efficiency: the Gemma model through the miner (axon -> dendrite) against raw llama-cpp-python.

Part 1, the model. The same GGUF, prompt, sampling (temperature 0, seed 0), max tokens, context and
thread count, once in-process with llama-cpp-python and once through a real miner process (default batch
settings: ``streaming_batch_size``, ``max_chunk_delay`` and, where the miner has it, ``first_chunk_delay``;
see :func:`default_batching`), interleaved over several rounds (the
order rotates each round). A second miner with batch size 1 separates the transport's own cost from the
batching delay. Tokens are counted by tokenizing each completion with the same model (never chars/4),
on both paths alike; the completions are compared for equality as a sanity check.

Part 2, the streaming path alone. Echo miners (no model, no delay) stream a long prompt back with batch
sizes 1, 12 and 200: chunks/s and MB/s of the axon -> dendrite path (chunk counts from the miner's log).

Run: ``python -m bench.streaming [--quick]``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import (
    GGUF,
    Figure,
    MinerProcess,
    Result,
    count_tokens,
    free_port,
    machine,
    main_for,
    make_result,
    make_wallets,
    miner_env,
    started_miners,
    summarize,
)
from bench.harness import bench_tmp, model_missing, probe_dendrite
from bench.streaming_path import MinerAnswer, echo_part, miner_generation, rotations
from services.miner.chat import TRANSCRIPT_STOP, build_chat, transcript
from services.miner.settings import MinerSettings

NAME = "streaming"
TITLE = "Streaming efficiency: miner vs raw llama-cpp-python; echo streaming path"
# A prompt the base model answers at length (it runs to max_tokens at temperature 0).
PROMPT = "Explain step by step how a steam engine works, in great detail."
N_CTX = 2048
SEED = 0


@dataclass(frozen=True)
class Config:
    rounds: int
    max_tokens: int
    threads: int
    echo_words: int
    echo_rounds: int
    echo_batches: tuple[int, ...] = (1, 12, 200)

    @classmethod
    def for_run(cls, quick: bool) -> Config:
        if quick:
            return cls(rounds=1, max_tokens=24, threads=1, echo_words=1000, echo_rounds=1)
        return cls(rounds=5, max_tokens=128, threads=1, echo_words=20000, echo_rounds=5)


@dataclass
class Sample:
    ttft: float  # seconds to the first text (raw) / first chunk (miner)
    elapsed: float
    tokens: int  # the completion tokenized by the same model
    generated: int  # raw: stream items; miner: pieces the miner says it sent (its log)
    completion: str

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed if self.elapsed > 0 else 0.0


def default_batching() -> str:
    """The miner's default batching settings, read from its settings model (they change over time)."""
    fields = MinerSettings.model_fields
    size = fields["streaming_batch_size"].default
    delay = fields["max_chunk_delay"].default
    text = f"batch {size}, max_chunk_delay {delay:g} s"
    if "first_chunk_delay" in fields:
        text += f", first_chunk_delay {fields['first_chunk_delay'].default:g} s"
    return text


def system_prompt() -> str:
    return str(MinerSettings.model_fields["system_prompt"].default)


def model_prompt() -> str:
    """Exactly the text the miner's llamacpp backend gives a base model (no chat template)."""
    chat = build_chat(["user"], [PROMPT], system_prompt=system_prompt(), protocol="prompting")
    return transcript(chat)


def raw_generation(llm: Any, prompt: str, cfg: Config) -> Sample:
    started = time.monotonic()
    first: float | None = None
    pieces: list[str] = []
    items = 0
    stream = llm.create_completion(
        prompt=prompt,
        stop=list(TRANSCRIPT_STOP),
        max_tokens=cfg.max_tokens,
        temperature=0.0,
        seed=SEED,
        stream=True,
    )
    for chunk in stream:
        items += 1
        text = chunk["choices"][0]["text"]
        if text:
            if first is None:
                first = time.monotonic() - started
            pieces.append(text)
    elapsed = time.monotonic() - started
    completion = "".join(pieces)
    return Sample(first or elapsed, elapsed, count_tokens(llm, completion), items, completion)


def model_envs(cfg: Config, wallets: Any) -> list[dict[str, str]]:
    """Two llamacpp miners on the same settings: default batching, and batch size 1."""
    common = {
        "backend": "llamacpp",
        "llamacpp__model_path": str(GGUF),
        "llamacpp__n_threads": str(cfg.threads),
        "llamacpp__n_ctx": str(N_CTX),
        "llamacpp__seed": str(SEED),
        "temperature": "0",
        "max_tokens": str(cfg.max_tokens),
        "log_level": "info",
    }
    return [
        miner_env(wallets, free_port(), name="bench-default", **common),
        miner_env(wallets, free_port(), name="bench-batch1", streaming_batch_size="1", **common),
    ]


@dataclass
class ModelRuns:
    """Part 1's raw measurements: the samples of each variant, and the miners' attempts sent again."""

    samples: dict[str, list[Sample]] = field(
        default_factory=lambda: {"raw": [], "miner": [], "miner-batch1": []}
    )
    failed_attempts: dict[str, int] = field(default_factory=lambda: {"miner": 0, "miner-batch1": 0})


def miner_sample(answer: MinerAnswer, llm: Any) -> Sample:
    """One streamed answer from a miner, its completion tokenized by the model."""
    result, elapsed, outcome = answer.result, answer.elapsed, answer.outcome
    return Sample(
        ttft=result.first_chunk_after if result.first_chunk_after is not None else elapsed,
        elapsed=elapsed,
        tokens=count_tokens(llm, result.completion),
        generated=outcome[0],
        completion=result.completion,
    )


async def model_rounds(
    cfg: Config, llm: Any, prompt: str, wallets: Any, by_name: dict[str, MinerProcess], runs: ModelRuns
) -> None:
    """A warm-up generation on each path, then ``cfg.rounds`` rounds (the variants' order rotating)."""
    async with probe_dendrite(wallets) as dendrite:
        # Warm-up (not counted): the first generation of each process pays one-off costs.
        raw_generation(llm, prompt, cfg)
        for miner in by_name.values():
            await miner_generation(dendrite, miner, wallets.miner_hotkey, PROMPT)
        for _, order in rotations(list(runs.samples), cfg.rounds):
            for variant in order:
                if variant == "raw":
                    runs.samples["raw"].append(raw_generation(llm, prompt, cfg))
                    continue
                answer = await miner_generation(dendrite, by_name[variant], wallets.miner_hotkey, PROMPT)
                runs.failed_attempts[variant] += answer.failed_attempts
                runs.samples[variant].append(miner_sample(answer, llm))


def model_measure(cfg: Config, tmp: Path, wallets: Any) -> ModelRuns:
    """Load the model in-process, start both miners, and measure all three paths round after round."""
    from llama_cpp import Llama

    envs = model_envs(cfg, wallets)
    llm = Llama(model_path=str(GGUF), n_ctx=N_CTX, n_threads=cfg.threads, seed=SEED, verbose=False)
    prompt = model_prompt()
    runs = ModelRuns()
    with started_miners(tmp, envs) as (default_miner, batch1_miner):
        by_name = {"miner": default_miner, "miner-batch1": batch1_miner}
        asyncio.run(model_rounds(cfg, llm, prompt, wallets, by_name, runs))
    llm.close()
    return runs


def _paired(samples: dict[str, list[Sample]], variant: str) -> tuple[list[float], list[float]]:
    """A miner variant against raw, round by round: its tokens/s ratios and its TTFT overheads."""
    raw, miner = samples["raw"], samples[variant]
    ratio = [m.tokens_per_s / r.tokens_per_s for m, r in zip(miner, raw, strict=True) if r.tokens_per_s]
    overhead = [m.ttft - r.ttft for m, r in zip(miner, raw, strict=True)]
    return ratio, overhead


def model_figures(samples: dict[str, list[Sample]]) -> list[Figure]:
    raw, miner, batch1 = samples["raw"], samples["miner"], samples["miner-batch1"]
    ratio, overhead = _paired(samples, "miner")
    ratio1, overhead1 = _paired(samples, "miner-batch1")
    same = all(s.completion == raw[0].completion for s in raw + miner + batch1)
    batching = default_batching()
    return [
        Figure.of(
            "raw_tokens_per_s", "raw llama-cpp-python in-process: tokens/s end to end", _rates(raw), "tok/s"
        ),
        Figure.of(
            "miner_tokens_per_s",
            f"through the miner ({batching}): tokens/s end to end",
            _rates(miner),
            "tok/s",
        ),
        Figure.of(
            "tokens_per_s_ratio",
            "miner tokens/s divided by raw tokens/s (paired per round; 1.0 = no loss)",
            ratio,
            "x",
        ),
        *ttft_figures(raw, miner, batching, overhead, overhead1),
        Figure.of(
            "tokens_per_s_ratio_batch1",
            "miner (batch 1) tokens/s divided by raw tokens/s (paired)",
            ratio1,
            "x",
        ),
        Figure(
            "same_completion", "all completions identical across paths and rounds (temperature 0)", str(same)
        ),
    ]


def ttft_figures(
    raw: list[Sample], miner: list[Sample], batching: str, overhead: list[float], overhead1: list[float]
) -> list[Figure]:
    """Time to the first token (raw) / chunk (miner), and the miners' overheads over raw, in ms."""
    return [
        Figure.of("raw_ttft_ms", "raw llama-cpp-python: time to the first token", _ttfts(raw), "ms", 1000),
        Figure.of(
            "miner_ttft_ms",
            f"through the miner ({batching}): time to the first chunk",
            _ttfts(miner),
            "ms",
            1000,
        ),
        Figure.of(
            "ttft_overhead_ms",
            "miner TTFT minus raw TTFT (paired): the first chunk's batching wait (by design) plus transport",
            overhead,
            "ms",
            1000,
        ),
        Figure.of(
            "ttft_overhead_batch1_ms",
            "miner with batch size 1: TTFT minus raw TTFT (paired): the transport's own cost",
            overhead1,
            "ms",
            1000,
        ),
    ]


def model_details(cfg: Config, runs: ModelRuns) -> dict[str, Any]:
    samples = runs.samples
    raw, miner, batch1 = samples["raw"], samples["miner"], samples["miner-batch1"]
    return {
        "prompt": PROMPT,
        "miner_batching": default_batching(),
        "max_tokens": cfg.max_tokens,
        "n_threads": cfg.threads,
        "n_ctx": N_CTX,
        "rounds": cfg.rounds,
        "samples": {name: [_sample_dict(s) for s in values] for name, values in samples.items()},
        "failed_attempts_resent": runs.failed_attempts,
        "distinct_completions": len({s.completion for s in raw + miner + batch1}),
        "tokens": summarize([s.tokens for s in raw + miner]),
        "completion_head": raw[0].completion[:200] if raw else "",
    }


def model_part(cfg: Config, tmp: Path, wallets: Any) -> tuple[list[Figure], dict[str, Any]]:
    """Part 1: the model in-process against the same model through the miner (two batch settings)."""
    runs = model_measure(cfg, tmp, wallets)
    return model_figures(runs.samples), model_details(cfg, runs)


def _rates(samples: list[Sample]) -> list[float]:
    return [s.tokens_per_s for s in samples]


def _ttfts(samples: list[Sample]) -> list[float]:
    return [s.ttft for s in samples]


def _sample_dict(sample: Sample) -> dict[str, Any]:
    return {
        "ttft_s": round(sample.ttft, 4),
        "elapsed_s": round(sample.elapsed, 4),
        "tokens": sample.tokens,
        "generated": sample.generated,
        "tokens_per_s": round(sample.tokens_per_s, 2),
    }


def run(quick: bool) -> Result:
    """Measure both parts; return the result (figures + details)."""
    started, before = time.time(), machine()
    cfg = Config.for_run(quick)
    missing = model_missing(NAME, TITLE, quick, started, before, "make model")
    if missing is not None:
        return missing
    with bench_tmp() as tmp:
        wallets = make_wallets(tmp / "wallets")
        model_figures, model_details = model_part(cfg, tmp, wallets)
        echo_figures, echo_details = echo_part(
            cfg.echo_words, cfg.echo_rounds, cfg.echo_batches, tmp, wallets
        )
    resent = sum(model_details["failed_attempts_resent"].values()) + sum(
        echo_details["failed_attempts_resent"].values()
    )
    notes = [
        f"same model/prompt/temperature 0/seed {SEED}/max_tokens {cfg.max_tokens}/n_threads {cfg.threads}/"
        f"n_ctx {N_CTX} on both paths; tokens counted by tokenizing each completion with the model",
        f"TTFT through the miner is the first *chunk*; default batching ({default_batching()}): the first "
        "chunk waits for a full batch or the first-chunk delay, whichever comes first, by design",
    ]
    if resent:
        notes.append(
            f"{resent} request(s) got no answer (a pooled connection the miner had closed after its 5 s "
            "keep-alive) and were sent again; only the answered attempt is timed"
        )
    return make_result(
        NAME,
        TITLE,
        quick,
        started,
        model_figures + echo_figures,
        {"model": model_details, "echo": echo_details},
        notes=notes,
        machine_before=before,
    )


def main() -> int:
    return main_for(NAME, __doc__ or "", run)


if __name__ == "__main__":
    raise SystemExit(main())
