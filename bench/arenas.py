"""A llamacpp miner's malloc arenas: one (the miner's setting), two, or glibc's default, side by side.

llama.cpp's sampler takes ~3 MiB per token, in whichever glibc arena the generating thread holds, and an
arena keeps what it once held. The miner runs on one arena (``bound_malloc_arenas`` in
``services/miner/app.py``; docs/ARCHITECTURE.md, "Memory of a miner"). This asks what that costs and what
it saves: each variant runs in a fresh process, loads the bundled GGUF through the miner's own
``LlamaCppBackend`` (one thread, as in tests) and streams the same answers (same questions, seeds and
lengths) while the event loop keeps making small objects, the way the axon's loop does between pieces.
Reported per variant: pieces per second, how far the process's memory rose after the first two answers,
and the arenas glibc counts at the end; and the one-arena / two-arena throughput ratio,
paired per round. Rounds alternate the variants' order. Run:

    python -m bench.arenas            # three rounds of 12 answers each (~1.5 min on 2 cores)
    python -m bench.arenas --quick    # one round of 5 answers
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from bench._common import ROOT, Figure, Result, machine, main_for, make_result, progress, python
from bench.arenas_child import MAX_TOKENS, WARM
from bench.harness import PerRound, alternating, model_missing, per_round_figures

NAME = "arenas"
TITLE = "A llamacpp miner's malloc arenas: one (shipped) vs two vs glibc's default"
VARIANTS: dict[str, int | None] = {"one": 1, "two": 2, "default": None}
CHILD_TIMEOUT_S = 600.0


def one_variant(variant: str, answers: int) -> dict[str, Any]:
    arenas = VARIANTS[variant]
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    argv = [python(), "-m", "bench.arenas_child", str(arenas or "default"), str(answers)]
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=True
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# Per variant: (key, what, unit) of each figure, read from the child's result under the same key.
PER_VARIANT = (
    ("pieces_per_s", "pieces a second", "/s"),
    ("rss_growth_mib", f"memory risen after the first {WARM} answers", "MiB"),
    ("arenas", "malloc arenas at the end (malloc_stats)", ""),
)


def figures(rounds: list[dict[str, dict[str, Any]]]) -> list[Figure]:
    out = []
    for variant in VARIANTS:
        specs = [
            PerRound(f"{variant}_{key}", f"{what}, {variant}", lambda x, key=key: x[key], unit)
            for key, what, unit in PER_VARIANT
        ]
        out += per_round_figures([r[variant] for r in rounds], specs)
    ratios = [r["one"]["pieces_per_s"] / r["two"]["pieces_per_s"] for r in rounds]
    out.append(Figure.of("one_over_two_pieces_per_s", "one arena's throughput / two arenas'", ratios, "x"))
    return out


def run(quick: bool) -> Result:
    started, before = time.time(), machine()
    skipped = model_missing(NAME, TITLE, quick, started, before, hint="make model")
    if skipped is not None:
        return skipped
    n_rounds, answers = (1, WARM + 3) if quick else (3, WARM + 10)
    rounds: list[dict[str, dict[str, Any]]] = []
    for index in range(n_rounds):
        measured: dict[str, dict[str, Any]] = {}
        for variant in alternating(list(VARIANTS), index):
            progress(f"round {index + 1}/{n_rounds}: {variant}")
            measured[variant] = one_variant(variant, answers)
        rounds.append(measured)
    details = {"answers": answers, "warm": WARM, "max_tokens": MAX_TOKENS, "rounds": rounds}
    return make_result(NAME, TITLE, quick, started, figures(rounds), details, machine_before=before)


def main() -> int:
    return main_for(NAME, __doc__ or "", run)


if __name__ == "__main__":
    sys.exit(main())
