"""What validators get from this miner, as Prometheus metrics (``prometheus_client``).

Served on a port of its own (``metrics_port``; the axon port stays synapse-only), bound to ``axon_ip``.
Every request that reaches the miner ends in exactly one ``outcome`` of
``minerfleet_miner_requests_total{protocol, outcome, caller}`` (``caller``: ``probe`` for the fleet's own
probe, ``validator`` for everyone else; :mod:`services.miner.ledger`):

- ``done``: the backend finished; ``deadline``: the time ran out and what was made was flushed (a partial
  answer still earns rewards); ``disconnect``: the caller went away first;
- ``backend_error``: a forward exception (the backend's own state is broken);
- ``busy``: admission refused it (queue full, or it would only start after its deadline), or it waited
  for the model until its deadline; ``dependency_down``: the model server or remote API is down;
- ``too_long`` (413), ``bad_request`` (400, and at the HTTP edge: unsigned, wrong method, a body that is
  not what was signed), ``refused`` (any other refusal); ``blacklisted``: the caller is not allowed.

"Answered" is ``done`` or ``deadline``: the status page and the alert rules divide those by every outcome
but ``blacklisted`` (callers who are not validators say nothing about what validators get).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from services.miner.errors import BusyError, DependencyError, RefusedError
from services.miner.ledger import CALLER_KINDS, CallerKind, CallerLedger, LedgerView
from services.miner.streamer import Ending, StreamOutcome

PREFIX = "minerfleet_miner"
OUTCOMES = (
    "done",
    "deadline",
    "disconnect",
    "backend_error",
    "busy",
    "dependency_down",
    "too_long",
    "bad_request",
    "refused",
    "blacklisted",
)
ANSWERED = ("done", "deadline")
# Seconds. A validator's timeout is ~12-20 s; first chunks that matter are well under a few seconds.
FIRST_CHUNK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 16.0, 20.0, 30.0, 60.0)
WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
_ENDINGS = {
    Ending.done: "done",
    Ending.deadline: "deadline",
    Ending.disconnect: "disconnect",
    Ending.error: "backend_error",
}


def refusal_outcome(error: BaseException | None, status: int | None = None) -> str:
    """The outcome label of a refusal: from its error class first, else from its HTTP status."""
    if isinstance(error, BusyError):
        return "busy"
    if isinstance(error, DependencyError):
        return "dependency_down"
    if isinstance(error, RefusedError):
        status = error.status
    if status == 413:
        return "too_long"
    if status in (400, 401, 405):
        return "bad_request"
    return "refused"


class MinerMetrics:
    """The miner's metric families, in a registry of their own (one per service: tests build many)."""

    def __init__(self, name: str = "miner", backend: str = "", *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        if process:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
        info = Gauge(
            f"{PREFIX}_info",
            "Always 1; labels name the miner and its backend.",
            ["name", "backend"],
            registry=reg,
        )
        info.labels(name, backend).set(1)
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests by protocol, how they ended, and who asked (probe: the fleet's own probe; "
            "validator: everyone else).",
            ["protocol", "outcome", "caller"],
            registry=reg,
        )
        self.in_flight = Gauge(f"{PREFIX}_requests_in_flight", "Streams being answered now.", registry=reg)
        self.running = Gauge(f"{PREFIX}_model_running", "Generations running at the model now.", registry=reg)
        self.waiting = Gauge(
            f"{PREFIX}_model_waiting",
            "Requests admitted and waiting for the model (queue depth).",
            registry=reg,
        )
        self.capacity = Gauge(
            f"{PREFIX}_model_concurrency",
            "Generations the miner runs at once (max_concurrency).",
            registry=reg,
        )
        self.first_chunk = Histogram(
            f"{PREFIX}_first_chunk_seconds",
            "From the request's arrival to its first streamed chunk.",
            ["protocol"],
            buckets=FIRST_CHUNK_BUCKETS,
            registry=reg,
        )
        self.duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "From the request's arrival to its end, by outcome.",
            ["protocol", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.gate_wait = Histogram(
            f"{PREFIX}_model_gate_wait_seconds",
            "How long an admitted request waited for a free place at the model.",
            buckets=WAIT_BUCKETS,
            registry=reg,
        )
        self.pieces = Counter(
            f"{PREFIX}_pieces_streamed",
            "Text pieces (about one token each) streamed.",
            ["protocol"],
            registry=reg,
        )
        self.bytes = Counter(f"{PREFIX}_bytes_streamed", "UTF-8 bytes streamed.", ["protocol"], registry=reg)
        self.chunks = Counter(f"{PREFIX}_chunks_streamed", "Chunks streamed.", ["protocol"], registry=reg)

    def watch_ledger(self, ledger: CallerLedger) -> None:
        """Validators' figures of the last hour, read from the ledger at scrape time."""
        reg = self.registry
        figures: dict[str, tuple[str, Callable[[LedgerView], float | None]]] = {
            "validator_requests_last_hour": ("Validator requests (not the probe's) in the last hour.",
                                             lambda v: v.validator_requests),
            "validator_answered_last_hour": ("Validator requests answered with text in the last hour.",
                                             lambda v: v.validator_answered),
            "validator_hotkeys_last_hour": ("Distinct validator hotkeys that asked in the last hour.",
                                            lambda v: v.validator_hotkeys),
            "probe_requests_last_hour": ("The fleet's probe requests in the last hour.",
                                         lambda v: v.probe_requests),
            "last_validator_request_timestamp_seconds": (
                "When a validator last asked (unix time; 0: none since the miner started).",
                lambda v: v.last_validator_request or 0.0),
            "last_validator_answer_timestamp_seconds": (
                "When a validator was last answered with text (unix time; 0: never since the start).",
                lambda v: v.last_validator_answer or 0.0),
        }  # fmt: skip
        for name, (doc, read) in figures.items():
            Gauge(f"{PREFIX}_{name}", doc, registry=reg).set_function(_reader(ledger, read))

    def watch_registration(
        self, registered: Callable[[], bool | None], uid: Callable[[], int | None]
    ) -> None:
        """On a chain: whether the metagraph still lists this miner's hotkey, and its uid (-1: unknown)."""
        reg = self.registry

        def _registered() -> float:
            known = registered()
            return -1.0 if known is None else float(known)

        Gauge(f"{PREFIX}_registered", "1: the subnet lists this hotkey; 0: it does not (deregistered); "
              "-1: not known yet.", registry=reg).set_function(_registered)  # fmt: skip

        def _uid() -> float:
            known = uid()
            return -1.0 if known is None else float(known)

        Gauge(f"{PREFIX}_uid", "This hotkey's uid on the subnet (-1: unknown).", registry=reg).set_function(
            _uid
        )

    def watch_gate(self, gate: Any) -> None:
        """Read queue depth from a :class:`~services.miner.admission.ModelGate` at scrape time."""
        self.running.set_function(lambda: gate.running)
        self.waiting.set_function(lambda: gate.waiting)
        self.capacity.set(gate.concurrency)

    def zero(self, protocols: list[str]) -> None:
        """Create every series at 0, so rates exist before the first request (and absent != zero)."""
        for protocol in protocols:
            for outcome in OUTCOMES:
                for caller in CALLER_KINDS:
                    self.requests.labels(protocol, outcome, caller)
            self.first_chunk.labels(protocol)
            for counter in (self.pieces, self.bytes, self.chunks):
                counter.labels(protocol)

    def refused(
        self,
        protocol: str,
        error: BaseException | None,
        took: float,
        status: int | None = None,
        caller: CallerKind = "validator",
    ) -> None:
        """A request answered with an error status (never streamed)."""
        self.count(protocol, refusal_outcome(error, status), took, caller)

    def count(
        self, protocol: str, outcome: str, took: float | None = None, caller: CallerKind = "validator"
    ) -> None:
        self.requests.labels(protocol, outcome, caller).inc()
        if took is not None:
            self.duration.labels(protocol, outcome).observe(took)

    def streamed(
        self,
        protocol: str,
        outcome: StreamOutcome | None,
        took: float,
        first_chunk: float | None,
        caller: CallerKind = "validator",
    ) -> None:
        """A stream that ran (``outcome`` None: cancelled before the streamer reported: the caller left)."""
        if outcome is None:
            self.count(protocol, "disconnect", took, caller)
            return
        if outcome.ending is Ending.refused:
            self.refused(protocol, outcome.error, took, caller=caller)
            return
        self.count(protocol, _ENDINGS[outcome.ending], took, caller)
        if first_chunk is not None:
            self.first_chunk.labels(protocol).observe(first_chunk)
        self.pieces.labels(protocol).inc(outcome.pieces)
        self.bytes.labels(protocol).inc(outcome.bytes_sent)
        self.chunks.labels(protocol).inc(outcome.chunks)

    @contextlib.contextmanager
    def tracking(self) -> Any:
        """Count a stream as in flight while the block runs."""
        self.in_flight.inc()
        try:
            yield
        finally:
            self.in_flight.dec()


def _reader(ledger: CallerLedger, read: Callable[[LedgerView], float | None]) -> Callable[[], float]:
    return lambda: float(read(ledger.view()) or 0.0)


class MetricsServer:
    """``/metrics`` over HTTP in a daemon thread (prometheus_client's own WSGI server)."""

    def __init__(self, metrics: MinerMetrics, host: str, port: int) -> None:
        self.metrics, self.host, self.port = metrics, host, port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server, self._thread = start_http_server(
            self.port, addr=self.host, registry=self.metrics.registry
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
