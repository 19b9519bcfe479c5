"""The orchestrator's own Prometheus families (:class:`FleetMetrics`).

Each unit's state and restarts by reason are read from the watch's :class:`~orchestrator.status.fleetstatus.
FleetStatus` at scrape time; probe results are observed as they happen (counters by verdict, first-chunk
and duration histograms), beside the last probe's values as gauges. The units' own metrics, which the
orchestrator reads and passes through, are :mod:`orchestrator.status.unitmetrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.policy import State
from orchestrator.probing.modelservers import ServerReport
from orchestrator.probing.reports import ProbeReport
from orchestrator.status.fleetstatus import FleetStatus, UnitStatus

Snapshot = Callable[[], FleetStatus]
PROBE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0)


class SnapshotCollector(Collector):
    """State, restarts and the last probe of every unit, read from the watch's snapshot per scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        status = self.snapshot()
        miners, servers = status.miners, status.model_servers
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
            p = m.last_probe
            if p is None:
                continue
            healthy.add_metric([m.name], 1 if p.healthy else 0)
            chunks.add_metric([m.name], p.chunks)
            if p.first_chunk_after is not None:
                ttft.add_metric([m.name], p.first_chunk_after)
            if p.tokens_per_s is not None:
                rate.add_metric([m.name], p.tokens_per_s)
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
        for server in servers:
            if server.last_check is not None:
                up.add_metric([server.name], 1 if server.last_check.healthy else 0)
        yield up


def _states(name: str, label: str, units: Sequence[UnitStatus], doc: str) -> Metric:
    family = GaugeMetricFamily(name, doc + " 0 for the others.", labels=[label, "state"])
    for unit in units:
        for state in State:
            family.add_metric([unit.name, state.value], 1 if unit.state is state else 0)
    return family


def _restarts(name: str, label: str, units: Sequence[UnitStatus], doc: str) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label, "reason"])
    for unit in units:
        for reason, count in sorted(unit.restarts_by_reason.items()):
            family.add_metric([unit.name, reason], count)
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

    def probed(self, name: str, report: ProbeReport) -> None:
        """A miner's probe finished."""
        self.probes.labels(name, report.verdict.value).inc()
        if report.first_chunk_after is not None:
            self.probe_first_chunk.labels(name).observe(report.first_chunk_after)
        self.probe_duration.labels(name).observe(report.elapsed)

    def checked(self, name: str, report: ServerReport) -> None:
        """A model server's ``/health`` check finished."""
        self.server_checks.labels(name, report.verdict.value).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


def metrics_text(status: FleetStatus) -> str:
    """The status's families alone, in the text format (for tests and one-off use)."""
    return FleetMetrics(lambda: status).text().decode()
