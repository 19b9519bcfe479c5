"""What a probe says about a miner: its target, its report and verdict, how a stream is judged, and the
table ``health`` prints. No network here (:mod:`orchestrator.probing.probe` sends the probes), and no
bittensor: the watch's status and the runtimes' updaters read these types without importing it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only in annotations: the client imports bittensor (0.8 s)
    from services.miner.client import StreamResult

# What an answer that is really an error message looks like (a miner that returns its exception text
# as the completion, as the seed code does). A probe must not call that healthy.
_ERROR_TEXT = re.compile(
    r"^\s*(error\b|exception\b|traceback \(most recent call last\)|internal server error|"
    r"\w+(error|exception):)",
    re.IGNORECASE,
)
# A stream still running at this fraction of the probe's timeout was cut off by the miner's deadline
# (a miner stops deadline_margin, at most 20% of the timeout, before it).
DEADLINE_FRACTION = 0.8
# Tokens the probe asks of an HTTP door (its signature, route and stream format are what it checks there).
DOOR_PROBE_TOKENS = 16
# A stream cut at the deadline whose last chunk came this long before the cut had stopped flowing: stuck
# (5 s, or a quarter of a short timeout: a flowing stream sends a chunk every max_chunk_delay, 0.25 s).
STALLED_AFTER = 5.0
STALLED_FRACTION = 0.25
# How a miner words a 503 whose cause is its model server (or remote API), not itself.
DEPENDENCY_DOWN_PREFIX = "dependency down:"
# Clients cannot see tokens; ~4 characters per token is the usual estimate for English text.
CHARS_PER_TOKEN = 4.0


class Verdict(StrEnum):
    healthy = "healthy"
    down = "down"  # nothing listens on the port
    refused = "refused"  # the miner refused the probe's hotkey (403)
    busy = "busy"  # the model's queue was full (503 from the miner)
    dependency_down = "dependency-down"  # the miner answers, its model server does not (503)
    timeout = "timeout"  # no complete answer within the probe's timeout
    slow = "slow"  # still streaming when the deadline cut it: loaded, not stuck (never a restart)
    empty = "empty"  # a 200 stream with no text at all
    error_text = "error-text"  # the only "answer" is an error message
    broken = "broken"  # the stream was cut off
    error = "error"  # any other failure status


@dataclass(frozen=True)
class ProbeTarget:
    """One miner as the probe sees it."""

    name: str
    hotkey: str  # ss58: the request is signed for this hotkey
    host: str
    port: int
    backend: str
    protocol: str  # the first protocol: its stream gives the report's figures
    protocols: tuple[str, ...] = ()  # every protocol served (default: just ``protocol``)
    http_auth: tuple[str, ...] = ()  # the HTTP door's signatures (empty: no HTTP door)
    http_port: int | None = None  # the HTTP door's port (None: the axon's)

    @property
    def served(self) -> tuple[str, ...]:
        return self.protocols or (self.protocol,)

    @property
    def doors(self) -> list[dict[str, Any]]:
        """Where validators reach it: the axon, and the HTTP door with its port and signatures."""
        doors: list[dict[str, Any]] = [{"door": "axon", "port": self.port, "protocols": list(self.served)}]
        if self.http_auth:
            from services.miner.httpdoor import DOOR_PATHS  # imports bittensor (1 s): only when shown

            doors.append({"door": "http", "port": self.http_port or self.port,
                          "auth": list(self.http_auth), "paths": list(DOOR_PATHS)})  # fmt: skip
        return doors


@dataclass(frozen=True)
class ProbeReport:
    name: str
    hotkey: str
    port: int
    backend: str
    protocol: str
    verdict: Verdict
    reason: str
    status_code: int | None
    first_chunk_after: float | None
    chunks: int
    tokens_per_s: float | None
    completion_chars: int
    elapsed: float
    completion: str = ""
    # Every route probed (synapse class name, or ``http:<scheme>`` for the HTTP door) and its verdict:
    # a miner is healthy when all are.
    routes: dict[str, str] = field(default_factory=dict)
    doors: list[dict[str, Any]] = field(default_factory=list)  # ProbeTarget.doors

    @property
    def healthy(self) -> bool:
        return self.verdict is Verdict.healthy

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        data["healthy"] = self.healthy
        return data


def judge(result: StreamResult, timeout: float) -> tuple[Verdict, str]:
    """Turn what came back into a verdict and a one-line reason."""
    code, message = result.status_code, result.status_message.strip()
    if code == 200:
        # Our miners flush and end the stream just before the deadline: an answer that took (nearly)
        # all the time allowed was cut off, however healthy the status looks.
        if result.elapsed >= timeout * DEADLINE_FRACTION:
            last = result.last_chunk_after
            stalled_after = min(STALLED_AFTER, timeout * STALLED_FRACTION)
            if result.completion.strip() and last is not None and result.elapsed - last <= stalled_after:
                # Text was still coming at the cut: the model is slow under load (a restart cannot make
                # it faster, and would drop every validator's stream); a stuck stream stops flowing.
                return Verdict.slow, (
                    f"still streaming at the {timeout:g}s deadline ({len(result.completion)} chars, the last "
                    f"{result.elapsed - last:.1f}s before the cut): loaded, not stuck"
                )
            return Verdict.timeout, (
                f"no complete answer within {timeout:g}s (stream cut at the deadline after "
                f"{len(result.completion)} chars)"
            )
        if not result.completion.strip():
            return Verdict.empty, "the stream carried no text"
        if _ERROR_TEXT.match(result.completion):
            return Verdict.error_text, f"the answer is an error message: {result.completion.strip()[:80]!r}"
        return Verdict.healthy, ""
    if code == 503 and message.lower().startswith(DEPENDENCY_DOWN_PREFIX):
        # The miner's contract: a dependency that is down is a 503 whose message starts so and names it.
        # The verdict says "dependency-down" already: the reason is what is down.
        return Verdict.dependency_down, message[len(DEPENDENCY_DOWN_PREFIX) :].strip()
    if code == 403:
        return Verdict.refused, message or "forbidden"
    if code == 503 and "busy" in message.lower():
        return Verdict.busy, message
    if code == 503 and ("unavailable" in message.lower() or "connection" in message.lower()):
        return Verdict.down, message or "connection refused"
    if code in (408, 504) or "timeout" in message.lower():
        return Verdict.timeout, f"no complete answer within {timeout:g}s"
    if code == 400 and "payload" in message.lower():
        return Verdict.broken, message
    if code is None:
        return Verdict.error, message or "no answer"
    return Verdict.error, f"HTTP {code}: {message}" if message else f"HTTP {code}"


def not_announced(target: ProbeTarget, *, registered: bool) -> ProbeReport:
    """The row of a miner validators cannot reach: the chain holds no axon address for its hotkey."""
    reason = (
        "the chain holds no axon address for this hotkey (not announced: see the miner's log for serve_axon)"
        if registered
        else "the subnet does not list this hotkey (not registered, or deregistered)"
    )
    return ProbeReport(
        name=target.name, hotkey=target.hotkey, port=target.port, backend=target.backend,
        protocol=target.protocol, verdict=Verdict.down, reason=reason, status_code=None,
        first_chunk_after=None, chunks=0, tokens_per_s=None, completion_chars=0, elapsed=0.0,
    )  # fmt: skip


def report(target: ProbeTarget, result: StreamResult, timeout: float) -> ProbeReport:
    verdict, reason = judge(result, timeout)
    streaming_time = (result.elapsed - result.first_chunk_after) if result.first_chunk_after else None
    tokens = len(result.completion) / CHARS_PER_TOKEN
    rate = tokens / streaming_time if streaming_time and streaming_time > 0 and tokens else None
    return ProbeReport(
        name=target.name,
        hotkey=target.hotkey,
        port=target.port,
        backend=target.backend,
        protocol=target.protocol,
        verdict=verdict,
        reason=reason,
        status_code=result.status_code,
        first_chunk_after=result.first_chunk_after,
        chunks=len(result.chunks),
        tokens_per_s=rate,
        completion_chars=len(result.completion),
        elapsed=result.elapsed,
        completion=result.completion,
    )


def _doors(report: ProbeReport) -> str:
    """Which doors answered: ``axon`` and each HTTP scheme, a failed one with its verdict."""
    if not report.routes:
        return "axon"
    axon = [v for k, v in report.routes.items() if not k.startswith("http:")]
    shown = ["axon" if all(v == Verdict.healthy.value for v in axon) else "axon:" + _worst(axon)]
    for route, verdict in report.routes.items():
        if route.startswith("http:"):
            scheme = route.removeprefix("http:")
            shown.append(scheme if verdict == Verdict.healthy.value else f"{scheme}:{verdict}")
    return ",".join(shown)


def _worst(verdicts: list[str]) -> str:
    return next((v for v in verdicts if v != Verdict.healthy.value), Verdict.healthy.value)


def format_table(reports: Sequence[ProbeReport]) -> str:
    """The human table ``health`` prints: one row per miner."""
    header = (
        "MINER",
        "HOTKEY",
        "PORT",
        "BACKEND",
        "VERDICT",
        "HTTP",
        "TTFC",
        "CHUNKS",
        "TOK/S~",
        "CHARS",
        "DOORS",
        "ERROR",
    )
    rows = [header]
    for r in reports:
        rows.append(
            (
                r.name,
                f"{r.hotkey[:6]}…{r.hotkey[-4:]}" if len(r.hotkey) > 12 else r.hotkey,
                str(r.port),
                r.backend,
                r.verdict.value,
                "-" if r.status_code is None else str(r.status_code),
                "-" if r.first_chunk_after is None else f"{r.first_chunk_after:.2f}s",
                str(r.chunks),
                "-" if r.tokens_per_s is None else f"{r.tokens_per_s:.1f}",
                str(r.completion_chars),
                _doors(r),
                r.reason,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    healthy = sum(r.healthy for r in reports)
    lines.append(f"{healthy}/{len(reports)} healthy")
    return "\n".join(lines)
