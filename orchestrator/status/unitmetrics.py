"""The units' own metrics, read by the orchestrator: every miner serves ``/metrics`` on its
``metrics_port`` and llama-server on its port.

:class:`UnitScraper` reads them every few seconds for the status page (requests, answered fraction and
first-chunk p90 over the last minutes, with a short history: a
:class:`~orchestrator.status.fleetstatus.Traffic` per unit), and the status API lists them for
Prometheus's HTTP service discovery (``/targets``) and
passes scrapes through (``/scrape/<unit>``), so a Prometheus on the host needs only the
orchestrator's address, on docker and supervisor alike.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.status.fleetstatus import MinerTraffic, Role, ServerTraffic, Traffic, TrafficPoint
from orchestrator.status.metrics import FleetMetrics

SCRAPE_TIMEOUT = 5.0
WINDOW = 300.0  # seconds the status page sums over ("the last minutes")
HISTORY_POINTS = 30  # scrapes kept as the page's small history
ANSWERED = ("done", "deadline")
NOT_VALIDATORS = ("blacklisted",)  # callers that say nothing about what validators get


@dataclass(frozen=True)
class UnitEndpoint:
    """Where one unit serves its Prometheus metrics, as the orchestrator reaches it."""

    name: str
    role: Role
    host: str
    port: int
    path: str = "/metrics"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"


@dataclass(frozen=True)
class Sample:
    """The totals read from one scrape of a miner: requests by outcome, first-chunk buckets."""

    at: float  # wall clock
    outcomes: dict[str, float]
    buckets: dict[float, float]  # cumulative counts by upper bound
    started: float | None = None  # the miner process's start (wall clock): its counters count from there
    validators: dict[str, float] = field(default_factory=dict)  # the miner's ledger (VALIDATOR_FIGURES)


@dataclass
class UnitTraffic:
    endpoint: UnitEndpoint
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS + 1))
    last_ok: float | None = None
    last_error: str = ""
    extra: dict[str, float] = field(default_factory=dict)  # a model server's gauges and counters

    def summary(self, now: float, window: float = WINDOW) -> Traffic:
        """Requests, answered fraction and first-chunk p90 over ``window``, and the recent history."""
        read = (self.endpoint.url, self.last_ok, self.last_error, window)
        if self.endpoint.role is not Role.miner:
            return ServerTraffic(*read, figures=dict(self.extra))
        samples = list(self.samples)
        if not samples:
            return MinerTraffic(*read)
        recent = [s for s in samples if now - s.at <= window]
        newest = samples[-1]
        # The sample just before the window is the base; a miner that started inside the window counts
        # from zero; else the oldest sample we have (the orchestrator itself started recently).
        older = [s for s in samples if now - s.at > window]
        base: Sample | None = older[-1] if older else (recent[0] if recent else None)
        if newest.started is not None and now - newest.started <= window:
            base = None
        outcomes = _delta(newest.outcomes, base.outcomes if base else {})
        buckets = _delta(newest.buckets, base.buckets if base else {})
        requests = _requests(outcomes)
        answered = _answered(outcomes)
        history = []
        for before, after in itertools.pairwise(samples):
            step = _delta(after.outcomes, before.outcomes)
            history.append(TrafficPoint(after.at, _requests(step), _answered(step)))
        return MinerTraffic(
            *read,
            requests=requests,
            answered=answered,
            answered_fraction=answered / requests if requests else None,
            first_chunk_p90=quantile(0.9, buckets),
            outcomes={k: v for k, v in sorted(outcomes.items()) if v},
            totals={k: v for k, v in sorted(newest.outcomes.items()) if v},
            history=tuple(history),
            validators=_validators(newest, now),
        )


def _validators(sample: Sample, now: float) -> dict[str, float]:
    """The ledger's figures, and how long no validator has asked (since the later of the last validator
    request and the miner's start: a miner that just started has not been forgotten yet)."""
    figures = dict(sample.validators)
    if figures:
        since = max(figures.get("last_request_at") or 0.0, sample.started or 0.0)
        if since:
            figures["silent_s"] = max(0.0, now - since)
    return figures


def _requests(outcomes: dict[str, float]) -> float:
    return sum(v for k, v in outcomes.items() if k not in NOT_VALIDATORS)


def _answered(outcomes: dict[str, float]) -> float:
    return sum(outcomes.get(k, 0.0) for k in ANSWERED)


def _delta(new: dict[Any, float], old: dict[Any, float]) -> dict[Any, float]:
    """Counter increases; a counter that went down was reset (the unit restarted): count from zero."""
    if any(new.get(k, 0.0) < v for k, v in old.items()):
        return dict(new)
    return {k: v - old.get(k, 0.0) for k, v in new.items()}


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile``'s estimate from cumulative bucket counts (linear within a bucket)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: its bound is all we know
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return None


# The miner's ledger of who asked (services/miner/ledger.py): validators apart from the fleet's probe.
VALIDATOR_FIGURES = {
    "minerfleet_miner_validator_requests_last_hour": "requests_last_hour",
    "minerfleet_miner_validator_answered_last_hour": "answered_last_hour",
    "minerfleet_miner_validator_hotkeys_last_hour": "hotkeys_last_hour",
    "minerfleet_miner_probe_requests_last_hour": "probe_requests_last_hour",
    "minerfleet_miner_last_validator_request_timestamp_seconds": "last_request_at",
    "minerfleet_miner_last_validator_answer_timestamp_seconds": "last_answer_at",
    "minerfleet_miner_registered": "registered",
    "minerfleet_miner_uid": "uid",
}


def parse_miner(text: str, at: float) -> Sample:
    """The totals of a miner's ``/metrics`` text, summed over protocols."""
    outcomes: dict[str, float] = {}
    buckets: dict[float, float] = {}
    started: float | None = None
    validators: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "minerfleet_miner_requests_total":
                outcomes[s.labels["outcome"]] = outcomes.get(s.labels["outcome"], 0.0) + s.value
            elif s.name == "minerfleet_miner_first_chunk_seconds_bucket":
                bound = float(s.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + s.value
            elif s.name == "process_start_time_seconds":
                started = s.value
            elif s.name in VALIDATOR_FIGURES:
                validators[VALIDATOR_FIGURES[s.name]] = s.value
    return Sample(at, outcomes, buckets, started, validators)


# llama-server's families worth showing beside a model server (names as its /metrics writes them).
SERVER_FIGURES = {
    "llamacpp:requests_processing": "requests_processing",
    "llamacpp:requests_deferred": "requests_deferred",
    "llamacpp:tokens_predicted_total": "tokens_predicted_total",
    "llamacpp:predicted_tokens_seconds": "predicted_tokens_per_second",
}


def parse_server(text: str) -> dict[str, float]:
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in SERVER_FIGURES:
                figures[SERVER_FIGURES[s.name]] = s.value
    return figures


def fetch(url: str, timeout: float = SCRAPE_TIMEOUT) -> tuple[str, str]:
    """GET ``url`` (blocking): its text and content type. Raises ``OSError`` when nothing answers."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body.decode("utf-8", "replace"), response.headers.get("Content-Type", "text/plain")


class UnitScraper:
    """Reads every unit's ``/metrics`` every ``interval`` seconds, off the event loop."""

    def __init__(
        self,
        endpoints: Sequence[UnitEndpoint],
        interval: float,
        metrics: FleetMetrics | None = None,
        wall_clock: Callable[[], float] = time.time,
        fetcher: Callable[[str], tuple[str, str]] = fetch,
    ) -> None:
        self.units = {e.name: UnitTraffic(e) for e in endpoints}
        self.interval = interval
        self.metrics = metrics
        self.wall_clock = wall_clock
        self.fetcher = fetcher

    @property
    def endpoints(self) -> Iterable[UnitEndpoint]:
        return (u.endpoint for u in self.units.values())

    async def scrape(self, traffic: UnitTraffic) -> None:
        endpoint = traffic.endpoint
        try:
            text, _ = await asyncio.to_thread(self.fetcher, endpoint.url)
            now = self.wall_clock()
            if endpoint.role is Role.miner:
                traffic.samples.append(parse_miner(text, now))
            else:
                traffic.extra = parse_server(text)
        except (OSError, ValueError) as exc:  # urllib's errors are OSErrors; a bad text a ValueError
            traffic.last_error = str(getattr(exc, "reason", exc))
            result = "failed"
        else:
            traffic.last_ok, traffic.last_error, result = now, "", "ok"
        if self.metrics is not None:
            self.metrics.scrape_up.labels(endpoint.name, result).inc()

    async def scrape_all(self) -> None:
        await asyncio.gather(*(self.scrape(t) for t in self.units.values()))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.scrape_all()
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except TimeoutError:
                pass

    def summary(self, name: str) -> Traffic | None:
        traffic = self.units.get(name)
        return None if traffic is None else traffic.summary(self.wall_clock())


def sd_targets(endpoints: Iterable[UnitEndpoint], via: str | None) -> list[dict[str, Any]]:
    """Prometheus HTTP service discovery: one target group per unit.

    ``via``: the orchestrator's own address as the caller reached it; each unit is then scraped through
    ``/scrape/<unit>`` there (one address to reach, from the host or another network). ``None``: the
    units' own addresses (for a Prometheus on the same network as the units).
    """
    groups = []
    for e in endpoints:
        labels = {
            "unit": e.name,
            "role": e.role.value,
            ("miner" if e.role is Role.miner else "server"): e.name,
        }
        if via is not None:
            labels["__metrics_path__"] = f"/scrape/{e.name}"
            groups.append({"targets": [via], "labels": labels})
        else:
            labels["__metrics_path__"] = e.path
            groups.append({"targets": [f"{e.host}:{e.port}"], "labels": labels})
    return groups
