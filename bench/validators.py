"""Validator load: K validators query one miner at the same moment, on three serving paths side by side.

K = 1, 2, 4, 8, 16 validators, each its own hotkey (created offline in a temp dir) and its own real
dendrite, send the SN1 prompting synapse (``StreamPromptingSynapse``, 12 s timeout) together, for a few
rounds, to a miner of each path (same GGUF, Gemma 3 270M Q4_K_M; same prompt, ``max_tokens`` 96,
temperature 0, 1 thread; the same transcript prompt through ``/completions``):

- ``llamacpp``: the in-process llamacpp backend (the model in the miner: one generation at a time);
- ``llama_cpp_server``: an ``openai`` miner on ``python -m llama_cpp.server`` (as ``bench.memory`` runs it);
- ``llama_server``: an ``openai`` miner on llama.cpp's own ``llama-server`` (``--parallel 8``, continuous
  batching; ``MINER_MAX_CONCURRENCY`` = its 8 slots). The binary comes from ``scripts/llama-server.sh``
  (or ``$MINERFLEET_LLAMA_SERVER``); without one the path is skipped and the reason printed.

Each request is counted by the capacity command's rules (``orchestrator.probing.capacity``): *answered*
(200 with an answer), *refused* (``503 busy`` and other statuses); *complete* is judged by length here,
which the capacity command cannot do: at temperature 0 the prompt gives the K=1 answer, so a shorter one
was cut at the miner's deadline or ended early (e.g. by ``llama_cpp.server``'s
``interrupt_requests``). Tokens are counted by tokenizing each answer with the model (as
``bench.streaming``); total tokens/s is every
answer's tokens over the round's wall time, and its ratio to K=1 says what concurrency buys.

Run: ``python -m bench.validators [--quick]`` (quick: K = 1, 4, 8, one round).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    GGUF,
    LOCALHOST,
    RESULTS_DIR,
    ROOT,
    Figure,
    MinerProcess,
    Result,
    Wallets,
    count_tokens,
    format_result,
    free_port,
    machine,
    make_hotkey,
    make_result,
    make_wallets,
    miner_env,
    progress,
    started_miners,
    summarize,
    write_result,
)
from bench.find_llama_server import find_llama_server
from bench.harness import bench_tmp, model_missing
from bench.memory import model_server as llama_cpp_python_server
from bench.streaming import rotations
from devkit.local import llama_server
from orchestrator.probing.capacity import LoadRunner, classify, cut_after, percentile
from orchestrator.probing.reports import ProbeReport, ProbeTarget
from services.miner.settings import MinerSettings

NAME = "validators"
TITLE = "Validator load: K concurrent validators on llamacpp, llama_cpp.server and llama-server miners"
# A prompt the base model answers to max_tokens at temperature 0 on every path: llama_cpp.server applies
# its own default repeat_penalty (1.1), which ends most prompts (the streaming benchmark's too) early.
PROMPT = "Write a Python program that prints the first 50 prime numbers, with comments on every line."
TIMEOUT = 12.0
MAX_TOKENS = 96
THREADS = 1
SLOTS = 8
CTX_PER_SLOT = 1024
SETTLE = 1.0  # seconds between rounds, so an abandoned generation has stopped before the next round
SHORTER_BY = 3  # tokens: re-tokenizing a completion may differ from the generated count by a token or two
PATHS = {
    "llamacpp": "in-process llamacpp miner",
    "llama_cpp_server": "openai miner on llama_cpp.server",
    "llama_server": f"openai miner on llama-server ({SLOTS} slots)",
}
# The miner setting that admits more than one generation at once (docs/ARCHITECTURE.md, "Admission");
# a miner refuses an unknown MINER_* variable, so it is only set where the miner has it.
HAS_MAX_CONCURRENCY = "max_concurrency" in MinerSettings.model_fields


@dataclass(frozen=True)
class Config:
    ks: tuple[int, ...]
    rounds: int

    @classmethod
    def for_run(cls, quick: bool) -> Config:
        return cls((1, 4, 8), 1) if quick else cls((1, 2, 4, 8, 16), 2)


Round = tuple[list[ProbeReport], float]  # every validator's report, and the round's wall time


async def measure(
    cfg: Config, targets: dict[str, ProbeTarget], validators: Sequence[Any]
) -> dict[tuple[str, int], list[Round]]:
    """Every K in turn; per round, each path once (the order rotating), all K validators at once."""
    warm = LoadRunner(validators[:1], PROMPT, TIMEOUT)
    try:
        for target in targets.values():  # the first generation of a process pays one-off costs
            await warm.round(target)
    finally:
        await warm.aclose()
    samples: dict[tuple[str, int], list[Round]] = {(p, k): [] for p in targets for k in cfg.ks}
    for k in cfg.ks:
        runner = LoadRunner(validators[:k], PROMPT, TIMEOUT)
        try:
            for index, order in rotations(list(targets), cfg.rounds):
                for path in order:
                    progress(f"validators: K={k} round {index + 1}/{cfg.rounds} {path}")
                    samples[(path, k)].append(await runner.round(targets[path]))
                    await asyncio.sleep(SETTLE)
        finally:
            await runner.aclose()
    return samples


def cell(path: str, k: int, rounds: list[Round], llm: Any, reference: int | None) -> dict[str, Any]:
    """The figures of one path at one K, over its rounds."""
    cut = cut_after(TIMEOUT, float(MinerSettings.model_fields["deadline_margin"].default))
    requests, firsts, rates = 0, [], []
    counts = {"answered": 0, "complete": 0, "refused": 0, "cut_at_deadline": 0, "shorter": 0}
    kinds: dict[str, int] = {}
    lengths: list[int] = []  # tokens of each answer
    for reports, wall in rounds:
        tokens = 0
        for report in reports:
            requests += 1
            outcome = classify(report, cut)
            kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
            counts["refused"] += outcome.refused
            if report.first_chunk_after is not None:
                firsts.append(report.first_chunk_after)
            if not outcome.answered:
                continue
            n = count_tokens(llm, report.completion)
            lengths.append(n)
            tokens += n
            counts["answered"] += 1
            counts["cut_at_deadline"] += outcome.kind == "cut"
            if reference is None:  # no K=1 answer to compare with: the capacity command's rule alone
                counts["complete"] += outcome.complete
                continue
            # The length says it best: an answer cut at the deadline or ended early is shorter than the
            # K=1 one, and one that ended a hair before the deadline is whole however late it came.
            shorter = n < reference - SHORTER_BY
            counts["shorter"] += shorter
            counts["complete"] += not shorter
        rates.append(tokens / wall if wall > 0 else 0.0)
    return {
        "path": path,
        "k": k,
        "requests": requests,
        **counts,
        "outcomes": kinds,
        "first_chunk_s": firsts,
        "first_chunk_p50_s": percentile(firsts, 50),
        "first_chunk_p90_s": percentile(firsts, 90),
        "tokens_per_s": statistics.median(rates) if rates else None,
        "rates": rates,
        "answer_tokens": lengths,
        "k1_answer_tokens": reference,
    }


def k1_tokens(rounds: list[Round], llm: Any) -> int | None:
    """The K=1 answer's length in tokens (the shortest, if rounds differ): a complete answer's length."""
    lengths = [
        count_tokens(llm, r.completion)
        for reports, _ in rounds
        for r in reports
        if r.status_code == 200 and r.completion
    ]
    return min(lengths) if lengths else None


def figures_of(cells: list[dict[str, Any]]) -> list[Figure]:
    figures = []
    base = {c["path"]: c["tokens_per_s"] for c in cells if c["k"] == 1}
    for c in cells:
        key, n, what = f"{c['path']}_k{c['k']}", c["requests"], f"{PATHS[c['path']]}, K={c['k']}"
        firsts = [v * 1000 for v in c["first_chunk_s"]]
        sample = summarize(firsts)
        tail = {k: v for k, v in sample.items() if k in ("n", "min", "max")}  # shown as the range
        figures += [
            Figure(f"{key}_answered", f"{what}: fraction of {n} requests answered (200 with text)",
                   c["answered"] / n if n else None),
            Figure(f"{key}_complete", f"{what}: fraction of {n} requests complete (as long as the K=1 "
                   f"answer, give or take {SHORTER_BY} tokens)", c["complete"] / n if n else None),
            Figure(f"{key}_refused", f"{what}: requests refused of {n} (503 busy or other status)",
                   c["refused"]),
            Figure.of(f"{key}_first_chunk_p50_ms", f"{what}: first chunk, median", firsts, "ms"),
            Figure(f"{key}_first_chunk_p90_ms", f"{what}: first chunk, p90", percentile(firsts, 90), "ms",
                   tail),
            Figure.of(f"{key}_tokens_per_s", f"{what}: total tokens/s (tokenized answers / round wall time)",
                      c["rates"], "tok/s"),
        ]  # fmt: skip
        if base.get(c["path"]) and c["tokens_per_s"] is not None:
            figures.append(
                Figure(
                    f"{key}_tokens_per_s_vs_k1",
                    f"{what}: total tokens/s / K=1's",
                    c["tokens_per_s"] / base[c["path"]],
                    "x",
                )
            )
    return figures


def table_markdown(data: Result) -> str:
    """The side-by-side table: one row per path and K."""
    cells = data.get("details", {}).get("cells", [])
    base = {c["path"]: c["tokens_per_s"] for c in cells if c["k"] == 1}
    lines = [
        "| path | K | answered | complete | refused | first chunk p50 / p90 | tokens/s total | vs K=1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        n = c["requests"]
        p50, p90 = c["first_chunk_p50_s"], c["first_chunk_p90_s"]
        first = "-" if p50 is None else f"{p50:.2f} / {p90:.2f} s"
        rate = c["tokens_per_s"]
        ratio = f"{rate / base[c['path']]:.2f}x" if rate is not None and base.get(c["path"]) else "-"
        lines.append(
            f"| {PATHS[c['path']]} | {c['k']} | {c['answered']}/{n} | {c['complete']}/{n} | "
            f"{c['refused']} | {first} | {'-' if rate is None else f'{rate:.1f}'} | {ratio} |"
        )
    return "\n".join(lines)


def llama_server_env(
    quick: bool,
    tmp: Path,
    stack: ExitStack,
    wallets: Wallets,
    openai: dict[str, str],
    common: dict[str, str],
    notes: list[str],
) -> dict[str, str] | None:
    """An openai miner on llama.cpp's own llama-server (started here), or None (and a note) without one."""
    binary, source = find_llama_server(quick)
    if binary is None:
        notes.append(f"llama_server path skipped: {source}")
        return None
    progress(f"validators: starting llama-server ({source})")
    # llama.cpp's server on the bundled Gemma, the way the fleet runs it (one thread, SLOTS slots).
    base_c = stack.enter_context(
        llama_server(GGUF, free_port(), tmp / "llama-server.log", slots=SLOTS,
                     ctx_per_slot=CTX_PER_SLOT, binary=binary)
    )  # fmt: skip
    # As render sets it for a miner on a model server: the slots, and as many waiting.
    slots = {"max_concurrency": str(SLOTS), "max_queue": str(SLOTS)} if HAS_MAX_CONCURRENCY else {}
    env = miner_env(
        wallets,
        free_port(),
        name="v-llama-server",
        **openai,
        openai__base_url=base_c,
        **common,
        **slots,
    )
    notes.append(f"llama-server: {binary} ({source}), --parallel {SLOTS}, ctx {CTX_PER_SLOT}/slot")
    return env


def miner_envs(
    quick: bool, tmp: Path, stack: ExitStack, wallets: Wallets, addresses: list[str], notes: list[str]
) -> dict[str, dict[str, str]]:
    """A miner's environment per path (starting the model servers the openai miners talk to)."""
    common = {"max_tokens": str(MAX_TOKENS), "temperature": "0", "allowed_hotkeys": json.dumps(addresses)}
    openai = {"backend": "openai", "openai__model": "gemma", "openai__use_chat": "false"}
    envs = {
        "llamacpp": miner_env(
            wallets,
            free_port(),
            name="v-llamacpp",
            backend="llamacpp",
            llamacpp__model_path=str(GGUF),
            llamacpp__n_threads=str(THREADS),
            llamacpp__n_ctx=str(CTX_PER_SLOT),
            **common,
        )
    }
    progress("validators: starting llama_cpp.server")
    port_b, _ = stack.enter_context(llama_cpp_python_server(tmp))
    envs["llama_cpp_server"] = miner_env(
        wallets,
        free_port(),
        name="v-llama-cpp-server",
        **openai,
        openai__base_url=f"http://{LOCALHOST}:{port_b}/v1",
        **common,
    )
    env = llama_server_env(quick, tmp, stack, wallets, openai, common, notes)
    if env is not None:
        envs["llama_server"] = env
    if not HAS_MAX_CONCURRENCY:
        notes.append(
            "MINER_MAX_CONCURRENCY is not a miner setting in this checkout: every miner admits "
            "one generation at a time (the rest queue up to max_queue, then 503 busy)"
        )
    return envs


def cells_of(
    cfg: Config, targets: dict[str, ProbeTarget], samples: dict[tuple[str, int], list[Round]], llm: Any
) -> list[dict[str, Any]]:
    """Every path at every K, in that order (each against its own K=1 answer's length)."""
    cells = []
    for path in targets:
        reference = k1_tokens(samples[(path, 1)], llm) if 1 in cfg.ks else None
        cells += [cell(path, k, samples[(path, k)], llm, reference) for k in cfg.ks]
    return cells


def details(cfg: Config, cells: list[dict[str, Any]]) -> dict[str, Any]:
    config = {"ks": cfg.ks, "rounds": cfg.rounds, "timeout_s": TIMEOUT, "max_tokens": MAX_TOKENS}
    config |= {"threads": THREADS, "prompt": PROMPT, "slots": SLOTS, "ctx_per_slot": CTX_PER_SLOT}
    return {"config": config, "cells": cells}


def run(quick: bool) -> Result:
    started, before = time.time(), machine()
    cfg = Config.for_run(quick)
    missing = model_missing(NAME, TITLE, quick, started, before, "make model")
    if missing is not None:
        return missing
    from bittensor_wallet import Wallet
    from llama_cpp import Llama

    notes = [
        f"same GGUF, prompt, max_tokens {MAX_TOKENS}, temperature 0, {THREADS} thread, timeout "
        f"{TIMEOUT:g} s on every path; {cfg.rounds} round(s) per K; tokens by tokenizing each answer"
    ]
    with bench_tmp() as tmp, ExitStack() as stack:
        wallets = make_wallets(tmp / "wallets")
        addresses = [make_hotkey(wallets.path, "validators", f"v{i:02d}") for i in range(max(cfg.ks))]
        validators = [
            Wallet(name="validators", hotkey=f"v{i:02d}", path=str(wallets.path)) for i in range(max(cfg.ks))
        ]
        envs = miner_envs(quick, tmp, stack, wallets, addresses, notes)
        for note in notes:
            print(f"note: {note}", flush=True)
        miners: list[MinerProcess] = stack.enter_context(started_miners(tmp, list(envs.values())))
        targets = {
            path: ProbeTarget(path, wallets.miner_hotkey, LOCALHOST, miner.port, path, "prompting")
            for path, miner in zip(envs, miners, strict=True)
        }
        samples = asyncio.run(measure(cfg, targets, validators))
        llm = Llama(model_path=str(GGUF), vocab_only=True, verbose=False)
        cells = cells_of(cfg, targets, samples, llm)
    return make_result(
        NAME,
        TITLE,
        quick,
        started,
        figures_of(cells),
        details(cfg, cells),
        notes=notes,
        machine_before=before,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m bench.{NAME}", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="K = 1, 4, 8, one round")
    args = parser.parse_args(argv)
    data = run(args.quick)
    path = write_result(NAME, data)
    table = table_markdown(data)
    markdown = RESULTS_DIR / f"{NAME}.md"
    markdown.write_text(
        f"# {TITLE}\n\nReproduce: `{data['command']}` ({data['started_at']}, {data['duration_s']} s; "
        f"load average {data['machine_before'].get('loadavg')} before)\n\n{table}\n\n"
        + "".join(f"- {note}\n" for note in data["notes"]),
        encoding="utf-8",
    )
    print(format_result({**data, "figures": []}))
    print(table)
    print(f"wrote {path.relative_to(ROOT)}, {markdown.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
