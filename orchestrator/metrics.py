"""The orchestrator's Prometheus families, and the fleet's metrics reachable from one place.

Two kinds of numbers:

- the watch's own (:class:`FleetMetrics`): each unit's state and restarts by reason, read from the watch's
  records at scrape time; probe results observed as they happen (counters by verdict, first-chunk and
  duration histograms), beside the last probe's values as gauges;
- the units' own: every miner serves ``/metrics`` on its ``metrics_port`` and llama-server on its port.
  :class:`UnitScraper` reads them every few seconds for the status page (requests, answered fraction and
  first-chunk p90 over the last minutes, with a short history), and the status API lists them for
  Prometheus's HTTP service discovery (``/targets``) and passes scrapes through (``/scrape/<unit>``), so a
  Prometheus on the host needs only the orchestrator's address, on docker and supervisor alike.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from orchestrator.policy import State

Snapshot = Callable[[], dict[str, Any]]
PROBE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0)
SCRAPE_TIMEOUT = 5.0
WINDOW = 300.0  # seconds the status page sums over ("the last minutes")
HISTORY_POINTS = 30  # scrapes kept as the page's small history
ANSWERED = ("done", "deadline")
NOT_VALIDATORS = ("blacklisted",)  # callers that say nothing about what validators get


class SnapshotCollector(Collector):
    """State, restarts and the last probe of every unit, read from the watch's snapshot per scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        miners, servers = snap["miners"], snap.get("model_servers", [])
        yield _states("minerfleet_miner_state", "miner", miners, "1 for the state each miner is in.")
        yield _restarts(
            "minerfleet_restarts", "miner", miners, "Automatic restarts of each miner, by reason."
        )
        healthy = GaugeMetricFamily(
            "minerfleet_probe_healthy", "1 when the last stream probe was healthy.", labels=["miner"]
        )
        ttft = GaugeMetricFamily(
            "minerfleet_probe_ttft_seconds", "Time to the first chunk in the last probe.", labels=["miner"]
        )
        rate = GaugeMetricFamily(
            "minerfleet_probe_tokens_per_second",
            "Estimated tokens/s (chars/4) in the last probe.",
            labels=["miner"],
        )
        chunks = GaugeMetricFamily("minerfleet_probe_chunks", "Chunks in the last probe.", labels=["miner"])
        for m in miners:
            p = m["last_probe"]
            if not p:
                continue
            healthy.add_metric([m["name"]], 1 if p["healthy"] else 0)
            chunks.add_metric([m["name"]], p["chunks"])
            if p["first_chunk_after"] is not None:
                ttft.add_metric([m["name"]], p["first_chunk_after"])
            if p["tokens_per_s"] is not None:
                rate.add_metric([m["name"]], p["tokens_per_s"])
        yield from (healthy, ttft, rate, chunks)
        yield _states(
            "minerfleet_model_server_state", "server", servers, "1 for the state each model server is in."
        )
        yield _restarts(
            "minerfleet_model_server_restarts", "server", servers, "Automatic restarts of each model server."
        )
        up = GaugeMetricFamily(
            "minerfleet_model_server_healthy", "1 when the last GET /health answered 200.", labels=["server"]
        )
        for m in servers:
            if m["last_check"]:
                up.add_metric([m["name"]], 1 if m["last_check"]["healthy"] else 0)
        yield up


def _states(name: str, label: str, units: list[dict[str, Any]], doc: str) -> Metric:
    family = GaugeMetricFamily(name, doc + " 0 for the others.", labels=[label, "state"])
    for unit in units:
        for state in State:
            family.add_metric([unit["name"], state.value], 1 if unit["state"] == state.value else 0)
    return family


def _restarts(name: str, label: str, units: list[dict[str, Any]], doc: str) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label, "reason"])
    for unit in units:
        for reason, count in sorted(unit["restarts_by_reason"].items()):
            family.add_metric([unit["name"], reason], count)
    return family


class FleetMetrics:
    """The orchestrator's registry: the snapshot's families plus what probes observed over time."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if snapshot is not None:
            self.registry.register(SnapshotCollector(snapshot))
        reg = self.registry
        self.probes = Counter(
            "minerfleet_probes",
            "Stream probes of each miner, by verdict.",
            ["miner", "verdict"],
            registry=reg,
        )
        self.probe_first_chunk = Histogram(
            "minerfleet_probe_first_chunk_seconds",
            "Time to the first chunk of each probe that got one.",
            ["miner"],
            buckets=PROBE_BUCKETS,
            registry=reg,
        )
        self.probe_duration = Histogram(
            "minerfleet_probe_duration_seconds",
            "How long each probe took, whatever its verdict.",
            ["miner"],
            buckets=PROBE_BUCKETS,
            registry=reg,
        )
        self.server_checks = Counter(
            "minerfleet_model_server_checks",
            "GET /health checks of each model server, by verdict.",
            ["server", "verdict"],
            registry=reg,
        )
        self.scrape_up = Counter(
            "minerfleet_unit_scrapes",
            "The orchestrator's reads of each unit's own /metrics, by result (ok, failed).",
            ["unit", "result"],
            registry=reg,
        )

    def probed(self, name: str, report: Any) -> None:
        """A miner's probe finished (an ``orchestrator.probe.ProbeReport``)."""
        self.probes.labels(name, report.verdict.value).inc()
        if report.first_chunk_after is not None:
            self.probe_first_chunk.labels(name).observe(report.first_chunk_after)
        elapsed = getattr(report, "elapsed", None)
        if elapsed is not None:
            self.probe_duration.labels(name).observe(elapsed)

    def checked(self, name: str, report: Any) -> None:
        """A model server's ``/health`` check finished (an ``orchestrator.modelservers.ServerReport``)."""
        self.server_checks.labels(name, report.verdict.value).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


def metrics_text(snapshot: dict[str, Any]) -> str:
    """The snapshot's families alone, in the text format (for tests and one-off use)."""
    return FleetMetrics(lambda: snapshot).text().decode()


# --- the units' own metrics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitEndpoint:
    """Where one unit serves its Prometheus metrics, as the orchestrator reaches it."""

    name: str
    role: str  # "miner" or "model-server"
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


@dataclass
class UnitTraffic:
    endpoint: UnitEndpoint
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS + 1))
    last_ok: float | None = None
    last_error: str = ""
    extra: dict[str, float] = field(default_factory=dict)  # a model server's gauges and counters

    def summary(self, now: float, window: float = WINDOW) -> dict[str, Any]:
        """Requests, answered fraction and first-chunk p90 over ``window``, and the recent history."""
        out: dict[str, Any] = {
            "metrics_url": self.endpoint.url,
            "scraped_at": self.last_ok,
            "error": self.last_error,
            "window": window,
        }
        if self.endpoint.role != "miner":
            out.update(self.extra)
            return out
        samples = list(self.samples)
        recent = [s for s in samples if now - s.at <= window]
        if not samples:
            return {
                **out,
                "requests": None,
                "answered": None,
                "answered_fraction": None,
                "first_chunk_p90": None,
            }
        newest = samples[-1]
        # The sample just before the window is the base; a miner that started inside the window counts
        # from zero; else the oldest sample we have (the orchestrator itself started recently).
        older = [s for s in samples if now - s.at > window]
        base: Sample | None = older[-1] if older else (recent[0] if recent else None)
        if newest.started is not None and now - newest.started <= window:
            base = None
        outcomes = _delta(newest.outcomes, base.outcomes if base else {})
        buckets = _delta(newest.buckets, base.buckets if base else {})
        requests = sum(v for k, v in outcomes.items() if k not in NOT_VALIDATORS)
        answered = sum(outcomes.get(k, 0.0) for k in ANSWERED)
        history = []
        for before, after in itertools.pairwise(samples):
            step = _delta(after.outcomes, before.outcomes)
            history.append(
                {
                    "at": after.at,
                    "requests": sum(v for k, v in step.items() if k not in NOT_VALIDATORS),
                    "answered": sum(step.get(k, 0.0) for k in ANSWERED),
                }
            )
        return {
            **out,
            "requests": requests,
            "answered": answered,
            "outcomes": {k: v for k, v in sorted(outcomes.items()) if v},
            "answered_fraction": answered / requests if requests else None,
            "first_chunk_p90": quantile(0.9, buckets),
            "totals": {k: v for k, v in sorted(newest.outcomes.items()) if v},
            "history": history,
        }


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


def parse_miner(text: str, at: float) -> Sample:
    """The totals of a miner's ``/metrics`` text, summed over protocols."""
    outcomes: dict[str, float] = {}
    buckets: dict[float, float] = {}
    started: float | None = None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "minerfleet_miner_requests_total":
                outcomes[s.labels["outcome"]] = outcomes.get(s.labels["outcome"], 0.0) + s.value
            elif s.name == "minerfleet_miner_first_chunk_seconds_bucket":
                bound = float(s.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + s.value
            elif s.name == "process_start_time_seconds":
                started = s.value
    return Sample(at, outcomes, buckets, started)


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
            if endpoint.role == "miner":
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

    def summary(self, name: str) -> dict[str, Any] | None:
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
        labels = {"unit": e.name, "role": e.role, ("miner" if e.role == "miner" else "server"): e.name}
        if via is not None:
            labels["__metrics_path__"] = f"/scrape/{e.name}"
            groups.append({"targets": [via], "labels": labels})
        else:
            labels["__metrics_path__"] = e.path
            groups.append({"targets": [f"{e.host}:{e.port}"], "labels": labels})
    return groups
