"""The shipped fleet under validators' load: ``config/miners.yaml`` as ``make up`` runs it (docker compose,
the rendered container limits), K validators each asking every miner at the same moment.

Figures only count on the fleet a user runs, so this benchmark measures nothing else: it runs
``make up`` (which reuses what is built and running) and loads that stack through its published ports,
as ``python -m orchestrator capacity --fleet`` does (:mod:`orchestrator.probing.fleetload`): K = 1, 8, 16
validators (own dendrites; signed by the probe's hotkey, the one key a ``network: local`` fleet admits),
the SN1 synapse, a 12 s timeout, the shipped ``max_tokens``. Beside each K, in the same run, the model
server is asked on its own at the same concurrency (K x its miners), with the miners' chat and cut.

One more baseline: llama.cpp's own ``llama-server`` on the host (the same binary and arguments as the
rendered model server, no container, no limit) answers one stream; the ratio of one stream through an
``openai`` miner of the stack to it says what the container limits and the miner cost.

Run: ``python -m bench.fleet [--quick]`` (quick: K = 1 and 8, one round). Needs a Docker engine (``make
up`` sets one up). Tokens are estimated as characters / 4, on every path alike.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._common import ROOT, Figure, Result, machine, main_for, make_result, progress
from devkit.local import free_port, llama_server, llama_server_binary
from orchestrator.fleet.load import LoadedFleet, load_fleet
from orchestrator.probing.capacity import CapacityReport
from orchestrator.probing.fleetload import FleetLoadReport
from orchestrator.probing.fleetload import load_fleet as load_the_fleet
from orchestrator.probing.reports import CHARS_PER_TOKEN
from orchestrator.probing.serverload import direct_session, request_body, stream_direct
from orchestrator.probing.targets import probe_wallet

NAME = "fleet"
TITLE = "The shipped fleet (make up, docker) under K validators asking every miner at once"
CONFIG = ROOT / "config" / "miners.yaml"
TIMEOUT = 12.0
HOST = "127.0.0.1"


def _up() -> None:
    """``make up``: the shipped fleet as a user runs it (reuses images and running containers)."""
    progress("make up (the shipped fleet, as rendered)")
    # Not with a test's llama-server path: render would write it into the committed supervisord.conf.
    env = {k: v for k, v in os.environ.items() if k != "MINERFLEET_LLAMA_SERVER"}
    subprocess.run(["make", "up"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=env)


def _fleet_figures(k: int, report: FleetLoadReport) -> list[Figure]:
    served = [m for s in report.servers for m in report.served_by(s)]
    answered = sum(m.answered for m in served)
    requests = sum(m.requests for m in served)
    p90s = [m.first_chunk_p90 for m in served if m.first_chunk_p90 is not None]
    figures = [
        Figure(f"k{k}_server_miners_answered", f"K={k}: the model-server miners' requests answered with text",
               answered / requests if requests else None, "fraction"),
        Figure(f"k{k}_server_miners_first_chunk_p90_s", f"K={k}: model-server miners' worst first-chunk p90",
               max(p90s) if p90s else None, "s"),
        Figure(f"k{k}_fleet_answered", f"K={k}: every miner's requests answered with text",
               report.answered / report.requests if report.requests else None, "fraction"),
        Figure(f"k{k}_empty_200", f"K={k}: answers 200 without text (never an answer)", report.empty_200, ""),
        Figure(f"k{k}_fleet_tokens_per_s", f"K={k}: the fleet's tokens/s (models, not echo)",
               report.tokens_per_s, "tok/s"),
    ]  # fmt: skip
    for server in report.servers:
        through = sum(m.tokens_per_s or 0.0 for m in report.served_by(server))
        figures += [
            Figure(f"k{k}_server_alone_tokens_per_s", f"K={k}: model server {server.name} on its own, "
                   f"{server.concurrency} streams", server.tokens_per_s, "tok/s"),
            Figure(f"k{k}_server_miners_vs_alone", f"K={k}: its miners' tokens/s over the server's own",
                   report.ratio(server), "ratio"),
            Figure(f"k{k}_fleet_vs_server_alone", f"K={k}: the fleet's tokens/s over the server's own",
                   report.tokens_per_s / server.tokens_per_s if server.tokens_per_s else None, "ratio"),
            Figure(f"k{k}_server_miners_tokens_per_s", f"K={k}: tokens/s through {', '.join(server.miners)}",
                   through, "tok/s"),
        ]  # fmt: skip
    return figures


async def _host_single_stream(loaded: LoadedFleet, rounds: int) -> float | None:
    """llama-server on the host (no container): one stream of the miners' request, chars/4 per second."""
    server = loaded.model_servers[0]
    miner = loaded.miner(server.users[0])
    body = request_body(miner, loaded.fleet.probe.prompt, "gemma")
    model = loaded.model_file(server.spec.model)
    port = free_port()
    rates = []
    with tempfile.TemporaryDirectory() as tmp, llama_server(
        model, port, Path(tmp) / "server.log", slots=server.spec.slots, ctx_per_slot=server.ctx_per_slot,
        binary=llama_server_binary(), threads=server.spec.n_threads or 1,
    ) as base_url:  # fmt: skip
        async with direct_session() as session:
            for _ in range(rounds + 1):  # the first one warms the server up
                started = time.monotonic()
                _, text = await stream_direct(session, f"{base_url}/chat/completions", body, TIMEOUT)
                rates.append(len(text) / CHARS_PER_TOKEN / (time.monotonic() - started))
    return sorted(rates[1:])[len(rates[1:]) // 2] if len(rates) > 1 else None


async def _measure(
    loaded: LoadedFleet, ks: Sequence[int], rounds: int
) -> tuple[dict[int, FleetLoadReport], CapacityReport | None]:
    wallet = probe_wallet(loaded)
    prompt = loaded.fleet.probe.prompt
    reports = {}
    for k in ks:
        progress(f"K={k}: {k} validators x every miner at once, {rounds} round(s); then the server alone")
        reports[k] = await load_the_fleet(loaded, HOST, (), [wallet] * k, rounds, TIMEOUT, prompt)
    progress("one stream through each model-server miner of the stack")
    single = await load_the_fleet(
        loaded, HOST, list(loaded.model_servers[0].users[:1]), [wallet], max(rounds, 3), TIMEOUT, prompt,
        servers_alone=False,
    )  # fmt: skip
    return reports, (single.miners[0] if single.miners else None)


def run(quick: bool) -> Result:
    started = time.time()
    before = machine()
    ks = (1, 8) if quick else (1, 8, 16)
    rounds = 1 if quick else 2
    _up()
    loaded = load_fleet(CONFIG)
    reports, single = asyncio.run(_measure(loaded, ks, rounds))
    progress("llama-server on the host, one stream (same binary and arguments, no container)")
    host = asyncio.run(_host_single_stream(loaded, 3))
    figures: list[Figure] = []
    for k, report in reports.items():
        figures += _fleet_figures(k, report)
    through = single.tokens_per_s if single else None
    figures += [
        Figure("single_stream_miner_tokens_per_s", "one stream through an openai miner of the stack",
               through, "tok/s"),
        Figure("single_stream_host_server_tokens_per_s", "one stream straight to llama-server on the host",
               host, "tok/s"),
        Figure("single_stream_miner_vs_host_server", "the first over the second",
               through / host if through and host else None, "ratio"),
    ]  # fmt: skip
    details: dict[str, Any] = {
        "fleet_file": str(CONFIG.relative_to(ROOT)),
        "timeout_s": TIMEOUT,
        "runs": {str(k): r.as_dict() for k, r in reports.items()},
        "single_stream": single.as_dict() if single else None,
    }
    notes = [
        "the stack is the shipped config/miners.yaml under make up (docker compose, rendered limits)",
        "validators sign with the probe's hotkey (the one key a network-local fleet admits), a dendrite each",
        "server alone = the same model server asked directly at K x its miners streams, same chat and cut",
    ]
    return make_result(NAME, TITLE, quick, started, figures, details, notes=notes, machine_before=before)


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(NAME, __doc__ or "", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
