"""The shipped model server's memory under long questions: as rendered, beside a twin with SWA checkpoints.

A validator's question can be long, and a model server answers 32 of them at once. For a sliding-window
model (Gemma 3) llama-server by default keeps up to three copies of a slot's window per slot after each
answer (SWA checkpoints), each as big as the question's window, so its memory grows with the questions
until the container's limit kills it. The fleet renders ``--swa-checkpoints 0`` (``LLAMA_SERVER_FLAGS``
in ``orchestrator/render/places.py``; docs/ARCHITECTURE.md, "Memory of a model server").

This runs ``make up``, takes the running ``model-server`` container as rendered (image, command, memory
limit, mounts), and starts a twin of it with llama-server's default (``--swa-checkpoints 3``) on a free
port. Then, for questions of 60, 300 and 600 words, it asks each server as many questions at once as it
has slots (the shipped one first, then the twin, so they never share the CPU), and reads each one's
memory after every round. Reported: each one's peak and its peak over its limit, and whether the twin
was OOM-killed. Run:

    python -m bench.server_memory            # two rounds per length (~12 min on 2 cores)
    python -m bench.server_memory --quick    # one round per length
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench._common import Figure, Result, machine, main_for, make_result, progress
from bench.fleet import _up
from bench.soak import MIB, container_mib
from devkit.local import free_port

NAME = "server_memory"
TITLE = "The shipped model server's memory under long questions, as rendered vs with SWA checkpoints"
LENGTHS = (60, 300, 600)  # words a question; 600 stays inside a slot's 1024 tokens with the answer
ANSWER_TOKENS = 4  # the prompt is what is measured; the answer only has to start
DEFAULT_CHECKPOINTS = "3"  # llama-server's own default
READY_S = 300.0
ASK_TIMEOUT_S = 900.0
WORDS = ("apple", "river", "stone", "cloud", "market", "engine", "violet", "harbor", "lantern", "orbit")


@dataclass
class Server:
    """One llama-server under test: its container, its URL, its slots, its memory after each round."""

    name: str
    container: Any
    url: str
    slots: int
    limit_mib: float
    rounds: list[dict[str, Any]] = field(default_factory=list)
    killed: str | None = None

    def peak(self) -> float:
        return max((r["mib"] for r in self.rounds if r["mib"] is not None), default=0.0)


def _arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _shipped() -> Any:
    import docker

    found = docker.from_env().containers.list(filters={"label": "minerfleet.role=model-server"})
    if not found:
        raise SystemExit("no model-server container is running: the shipped fleet has none")
    return found[0]


def _twin(shipped: Any, port: int) -> Any:
    """The shipped container's twin: same image, limit, mounts and user, llama-server's default
    checkpoints, its port published on 127.0.0.1:``port``."""
    import docker

    attrs = shipped.attrs
    command = [*attrs["Config"]["Cmd"], "--swa-checkpoints", DEFAULT_CHECKPOINTS]  # the last one counts
    inner = _arg(command, "--port")
    return docker.from_env().containers.run(
        attrs["Config"]["Image"],
        command,
        name=f"minerfleet-bench-twin-{port}",
        detach=True,
        user=attrs["Config"].get("User") or None,
        mem_limit=attrs["HostConfig"]["Memory"],
        memswap_limit=attrs["HostConfig"].get("MemorySwap") or attrs["HostConfig"]["Memory"],
        volumes={
            m["Source"]: {"bind": m["Destination"], "mode": "rw" if m.get("RW") else "ro"}
            for m in attrs.get("Mounts", [])
            if m.get("Type") == "bind"
        },
        ports={f"{inner}/tcp": ("127.0.0.1", port)},
        labels={"minerfleet.bench": NAME},
    )


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(1.0)
    raise SystemExit(f"{server.name}: {server.url} not ready in {READY_S:.0f} s")


def _question(words: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _ask(url: str, text: str) -> str:
    body = json.dumps({"messages": [{"role": "user", "content": text}], "max_tokens": ANSWER_TOKENS}).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=ASK_TIMEOUT_S) as response:
            return "ok" if response.status == 200 else f"http {response.status}"
    except urllib.error.HTTPError as exc:
        return f"http {exc.code}"
    except OSError as exc:
        return type(exc).__name__


def _round(server: Server, words: int, rng: random.Random) -> None:
    """As many questions of ``words`` words at once as the server has slots; then its memory."""
    questions = [f"{i} {_question(words, rng)}" for i in range(server.slots)]
    began = time.monotonic()
    with ThreadPoolExecutor(server.slots) as pool:
        outcomes = list(pool.map(lambda q: _ask(server.url, q), questions))
    server.container.reload()
    state = server.container.attrs["State"]
    mib = container_mib(server.container) if state["Running"] else None
    if not state["Running"]:
        server.killed = f"{words}-word round: exit {state['ExitCode']}, OOM-killed {state['OOMKilled']}"
    server.rounds.append(
        {"words": words, "mib": mib, "ok": outcomes.count("ok"), "of": len(outcomes),
         "seconds": round(time.monotonic() - began, 1)}
    )  # fmt: skip
    killed = f" ({server.killed})" if server.killed else ""
    progress(f"{server.name}: {words} words x {server.slots}: {mib and round(mib, 1)} MiB, "
             f"{outcomes.count('ok')}/{len(outcomes)} ok{killed}")  # fmt: skip


def _figures(servers: list[Server]) -> list[Figure]:
    figures: list[Figure] = []
    for s in servers:
        first = s.rounds[0]["mib"] if s.rounds else None
        figures += [
            Figure(f"{s.name}_after_first_round_mib", f"{s.name}: memory after the first (60-word) round",
                   first, "MiB"),
            Figure(f"{s.name}_peak_mib", f"{s.name}: highest memory after any round", s.peak(), "MiB"),
            Figure(f"{s.name}_peak_over_limit", f"{s.name}: that peak over its container limit "
                   f"({s.limit_mib:.0f} MiB)", s.peak() / s.limit_mib, "ratio"),
            Figure(f"{s.name}_oom_killed", f"{s.name}: killed during the rounds (1) or not (0)",
                   int(s.killed is not None), ""),
        ]  # fmt: skip
    return figures


def run(quick: bool) -> Result:
    started, before = time.time(), machine()
    _up()
    shipped_container = _shipped()
    command = shipped_container.attrs["Config"]["Cmd"]
    slots = int(_arg(command, "--parallel"))
    limit = shipped_container.attrs["HostConfig"]["Memory"] / MIB
    published = shipped_container.attrs["NetworkSettings"]["Ports"][f"{_arg(command, '--port')}/tcp"][0]
    port = free_port()
    twin_container = _twin(shipped_container, port)
    shipped = Server("shipped", shipped_container, f"http://127.0.0.1:{published['HostPort']}", slots, limit)
    twin = Server("checkpoints", twin_container, f"http://127.0.0.1:{port}", slots, limit)
    rng = random.Random(0)
    try:
        for server in (shipped, twin):
            _wait_ready(server)
        for words in LENGTHS:
            for _ in range(1 if quick else 2):
                for server in (shipped, twin):
                    if server.killed is None:
                        _round(server, words, rng)
    finally:
        twin_container.remove(force=True)
    details = {
        "command": command, "slots": slots, "limit_mib": limit,
        "servers": {s.name: {"rounds": s.rounds, "killed": s.killed} for s in (shipped, twin)},
    }  # fmt: skip
    notes = [
        "shipped: the running model-server of make up, as rendered (--swa-checkpoints 0); checkpoints: "
        "its twin (same image, limit, mounts) with llama-server's default --swa-checkpoints "
        f"{DEFAULT_CHECKPOINTS}",
        f"each round: {slots} questions at once (one per slot), {ANSWER_TOKENS} answer tokens, fresh words; "
        "the two servers take turns, never both at once",
        "memory: docker stats' figure (usage less inactive file cache), as bench.soak reads it",
    ]
    return make_result(NAME, TITLE, quick, started, _figures([shipped, twin]), details,
                       notes=notes, machine_before=before)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return main_for(NAME, __doc__ or NAME, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
