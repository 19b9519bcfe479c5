"""Model servers as supervised units: where each one answers ``GET /health``, and what that answer means.

llama.cpp's ``llama-server`` answers ``/health`` with 200 once its model is loaded and 503 while it is
still loading. The watch loop checks each server like it probes a miner and feeds the result into the
same restart policy: 200 is healthy, 503 is still starting (it never counts toward a restart while the
server starts), anything else (no answer, a refused connection, another status) is a failed check.

Once a server's process first answers healthy, the watch *warms* it: one tiny completion per slot, all
at once, so the server has batched every slot together before validators come. Its memory rises with
the most slots it ever sampled at once and then stays (docs/ARCHITECTURE.md, "Memory of a model
server"); warmed, it starts at that ceiling instead of reaching a new high the first time validators
and the probe happen to coincide, hours in.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from orchestrator.fleet.load import LoadedFleet

CHECK_TIMEOUT = 5.0
WARM_TOKENS = 16  # tokens each warm-up completion generates: enough for every slot to decode at once
WARM_TIMEOUT = 300.0  # a whole warm-up's deadline: a 2-core machine under load batches 32 slots slowly


class ServerVerdict(StrEnum):
    healthy = "healthy"
    loading = "loading"  # 503: the model is still loading
    down = "down"  # nothing answers
    error = "error"  # an answer, but not a healthy one


@dataclass(frozen=True)
class ServerTarget:
    """One model server as the watch loop sees it: the unit name is its compose service / program."""

    name: str
    host: str
    port: int
    slots: int = 1  # its --parallel: how many completions it batches at once

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/health"

    @property
    def completion_url(self) -> str:
        return f"http://{self.host}:{self.port}/completion"


@dataclass(frozen=True)
class ServerReport:
    name: str
    verdict: ServerVerdict
    reason: str
    status_code: int | None
    elapsed: float

    @property
    def healthy(self) -> bool:
        return self.verdict is ServerVerdict.healthy

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        data["healthy"] = self.healthy
        return data


@dataclass(frozen=True)
class Warmed:
    """What warming a model server's slots did: how many of its completions answered, and the first
    error when one did not."""

    name: str
    slots: int
    answered: int
    elapsed: float
    error: str = ""


def server_targets(loaded: LoadedFleet, host: str | None) -> list[ServerTarget]:
    """The fleet's model servers (``model_servers:``, or the older ``model_server:``), each named as
    its compose service / supervisord program; ``host=None`` reaches each by that service name."""
    return [
        ServerTarget(s.service, host or s.service, s.spec.port, s.spec.slots) for s in loaded.model_servers
    ]


def judge(status: int | None, body: str, error: str) -> tuple[ServerVerdict, str]:
    if status == 200:
        return ServerVerdict.healthy, ""
    if status == 503:
        return ServerVerdict.loading, f"HTTP 503: {body.strip()[:120] or 'loading the model'}"
    if status is None:
        return ServerVerdict.down, error or "no answer"
    return ServerVerdict.error, f"HTTP {status}: {body.strip()[:120]}".rstrip(": ")


class ServerChecker:
    """``GET /health`` in a thread (urllib is blocking); tests pass a fake with the same ``check``."""

    def __init__(self, timeout: float = CHECK_TIMEOUT) -> None:
        self.timeout = timeout

    async def check(self, target: ServerTarget) -> ServerReport:
        started = time.monotonic()
        status, body, error = await asyncio.to_thread(self._fetch, target.url)
        verdict, reason = judge(status, body, error)
        return ServerReport(target.name, verdict, reason, status, time.monotonic() - started)

    def _fetch(
        self, url: str, data: bytes | None = None, timeout: float | None = None
    ) -> tuple[int | None, str, str]:
        """GET ``url``, or POST ``data`` as JSON when given: its status, the start of its body, and why
        nothing answered ('' when something did)."""
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"} if data is not None else {}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return int(response.status), response.read(2000).decode("utf-8", "replace"), ""
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(2000).decode("utf-8", "replace"), ""
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return None, "", f"{url}: {reason}"

    async def warm(self, target: ServerTarget) -> Warmed:
        """One tiny completion per slot, all at once (each in its own thread, so that they reach the
        server together and it batches them into one)."""
        started = time.monotonic()
        errors = await asyncio.to_thread(self._warm, target)
        failed = [e for e in errors if e]
        return Warmed(
            target.name, target.slots, len(errors) - len(failed), time.monotonic() - started,
            failed[0] if failed else "",
        )  # fmt: skip

    def _warm(self, target: ServerTarget) -> list[str]:
        with ThreadPoolExecutor(max_workers=target.slots, thread_name_prefix="warm") as pool:
            return list(pool.map(lambda slot: self._complete(target, slot), range(target.slots)))

    def _complete(self, target: ServerTarget, slot: int) -> str:
        """'' when the server answered the completion; else why not."""
        body = {
            "prompt": f"Warm-up {slot}: count from one to ten.",
            "n_predict": WARM_TOKENS,
            "cache_prompt": False,
        }
        status, text, error = self._fetch(target.completion_url, json.dumps(body).encode(), WARM_TIMEOUT)
        if status is None:
            return error
        return "" if status == 200 else f"HTTP {status}: {text.strip()[:200]}"
