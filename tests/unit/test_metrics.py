"""Metrics: what a miner counts per outcome, the fleet file's metrics ports, and the orchestrator's
reading of a miner's metrics (window totals, answered fraction, first-chunk p90, restarts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest

from orchestrator.fleet.load import FleetInvalid, load_fleet
from orchestrator.status.fleetstatus import MinerTraffic, Role
from orchestrator.status.unitmetrics import (
    Sample,
    UnitEndpoint,
    UnitTraffic,
    parse_miner,
    quantile,
    sd_targets,
)
from services.miner.ledger import MAX_HOTKEYS, CallerLedger
from services.miner.metrics import MinerMetrics
from tests.fleets import make_project
from tests.unit.test_miner_service import PROBE, STRANGER, Recorder, make_service, synapse

CALLERS = ("probe", "validator")
VALIDATOR_A, VALIDATOR_B = "5ValidatorA", "5ValidatorB"


def _count(
    metrics: MinerMetrics, outcome: str, protocol: str = "prompting", callers: tuple[str, ...] = CALLERS
) -> float:
    get = metrics.registry.get_sample_value
    return sum(
        get("minerfleet_miner_requests_total", {"protocol": protocol, "outcome": outcome, "caller": caller})
        or 0.0
        for caller in callers
    )


async def test_a_miner_counts_each_request_once_by_its_outcome() -> None:
    service, _ = make_service(max_queue=0, max_concurrency=1)
    metrics = service.metrics
    first = await service.forward(synapse(), "prompting")
    busy = await service.forward(synapse(), "prompting")  # the only place is taken
    assert busy.axon.status_code == 503
    await first.token_streamer(Recorder())
    too_many = await service.forward(synapse(messages=["a"] * 100, roles=["user"] * 100), "prompting")
    assert too_many.axon.status_code == 413
    bad = await service.forward(synapse(roles=[], messages=[]), "prompting")
    assert bad.axon.status_code == 400
    blacklist = service.handlers("prompting")[1]
    assert blacklist(synapse(hotkey=STRANGER))[0] is True

    assert {o: _count(metrics, o) for o in ("done", "busy", "too_long", "bad_request", "blacklisted")} == {
        "done": 1, "busy": 1, "too_long": 1, "bad_request": 1, "blacklisted": 1,
    }  # fmt: skip
    get = metrics.registry.get_sample_value
    assert get("minerfleet_miner_first_chunk_seconds_count", {"protocol": "prompting"}) == 1
    assert get("minerfleet_miner_pieces_streamed_total", {"protocol": "prompting"}) > 0
    assert get("minerfleet_miner_model_gate_wait_seconds_count") == 1
    assert get("minerfleet_miner_requests_in_flight") == 0
    assert get("minerfleet_miner_model_running") == 0 and get("minerfleet_miner_model_waiting") == 0
    assert _count(metrics, "done", "einstein") == 0  # every series exists from the start
    assert b"minerfleet_miner_requests_total" in generate_latest(metrics.registry)


async def test_the_fleets_probe_is_counted_apart_from_validators() -> None:
    service, _ = make_service(allowed_hotkeys=[VALIDATOR_A, VALIDATOR_B])
    service.ledger = CallerLedger([PROBE])  # what serve() passes: the keys of allowed_hotkey_files
    service.metrics = MinerMetrics(process=False)
    service.metrics.watch_ledger(service.ledger)
    for hotkey in (PROBE, VALIDATOR_A, VALIDATOR_B, VALIDATOR_A):
        response = await service.forward(synapse(hotkey=hotkey), "prompting")
        await response.token_streamer(Recorder())
    get = service.metrics.registry.get_sample_value
    assert _count(service.metrics, "done", callers=("probe",)) == 1
    assert _count(service.metrics, "done", callers=("validator",)) == 3
    assert get("minerfleet_miner_validator_requests_last_hour") == 3
    assert get("minerfleet_miner_validator_answered_last_hour") == 3
    assert get("minerfleet_miner_validator_hotkeys_last_hour") == 2
    assert get("minerfleet_miner_probe_requests_last_hour") == 1
    assert get("minerfleet_miner_last_validator_answer_timestamp_seconds") > 0


def test_the_ledger_forgets_after_an_hour_and_stays_bounded() -> None:
    now = [1_000_000.0]
    ledger = CallerLedger(["probe"], clock=lambda: now[0])
    ledger.record("v1", answered=True)
    ledger.record("probe", answered=True)
    now[0] += 1800
    ledger.record("v2", answered=False)
    assert (ledger.view().validator_requests, ledger.view().validator_hotkeys) == (2, 2)
    now[0] += 1900  # the first half hour has left the window
    view = ledger.view()
    assert (view.validator_requests, view.validator_answered, view.validator_hotkeys) == (1, 0, 1)
    assert view.probe_requests == 0 and view.last_validator_answer == 1_000_000.0
    for i in range(MAX_HOTKEYS + 10):
        ledger.record(f"h{i}", answered=True)
    assert ledger.view().validator_hotkeys == MAX_HOTKEYS
    assert len(ledger._minutes) <= 61


async def test_a_client_gone_mid_stream_is_a_disconnect() -> None:
    service, _ = make_service()
    response = await service.forward(synapse(), "prompting")
    await response.token_streamer(Recorder(fail_with=OSError("gone")))
    assert _count(service.metrics, "disconnect") == 1


FLEET = """
network: local
wallet_path: ./wallets
port_base: 8091
defaults: {{wallet: fleet, backend: echo{defaults}}}
miners:
  - {{name: one, hotkey: one}}
  - {{name: two, hotkey: two, axon_port: 9091}}
"""


def test_metrics_ports_default_from_the_axon_port_and_clashes_name_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path, FLEET.format(defaults=""))
    with pytest.raises(FleetInvalid) as info:
        load_fleet(Path("config/miners.yaml"))
    assert info.value.messages() == [
        "config/miners.yaml:6: miners[0]: port 9091 is already used by miner 'two' (line 7); fix: set a "
        "metrics_port on this miner, or change metrics_port_offset"
    ]
    make_project(tmp_path, FLEET.format(defaults="").replace("9091", "9191"))
    one, two = load_fleet(Path("config/miners.yaml")).miners
    assert (one.metrics_port, two.metrics_port) == (9091, 10191)
    make_project(tmp_path, FLEET.format(defaults=", metrics_port: 9300").replace("9091", "9191"))
    with pytest.raises(FleetInvalid) as info:
        load_fleet(Path("config/miners.yaml"))
    assert info.value.messages() == [
        "config/miners.yaml:4: defaults.metrics_port: port 9300 is already used by the metrics of miner "
        "'one' (line 4); fix: choose another metrics_port (set in defaults: every miner gets the same one; "
        "set it per miner)"
    ]
    make_project(tmp_path, "metrics_port_offset: null\n" + FLEET.format(defaults="").replace("9091", "9191"))
    assert [m.metrics_port for m in load_fleet(Path("config/miners.yaml")).miners] == [None, None]


def test_the_window_counts_answers_and_restarts_from_zero() -> None:
    traffic = UnitTraffic(UnitEndpoint("m", Role.miner, "h", 1))
    inf = float("inf")
    traffic.samples.append(Sample(0.0, {"done": 10, "busy": 0}, {0.1: 5, 1.0: 10, inf: 10}, started=-1000))
    traffic.samples.append(Sample(400.0, {"done": 12, "busy": 2}, {0.1: 5, 1.0: 10, inf: 12}, started=-1000))
    traffic.samples.append(
        Sample(500.0, {"done": 20, "busy": 2, "blacklisted": 3}, {0.1: 5, 1.0: 18, inf: 20}, started=-1000)
    )
    summary = traffic.summary(now=500.0, window=300.0)
    assert isinstance(summary, MinerTraffic)
    # Since the sample at 0 (the last one before the window): 10 more done, 2 busy; blacklisted aside.
    assert (summary.requests, summary.answered) == (12, 10)
    assert summary.answered_fraction == pytest.approx(10 / 12)
    assert summary.first_chunk_p90 == pytest.approx(1.0)  # 9 of the 10 new first chunks in (0.1, 1]
    assert [p.requests for p in summary.history] == [4, 8]
    assert MinerTraffic.from_json(summary.to_json()) == summary
    # A restarted miner's counters went down: it counts from zero.
    traffic.samples.append(Sample(510.0, {"done": 1}, {inf: 1}, started=505.0))
    again = traffic.summary(now=510.0, window=300.0)
    assert isinstance(again, MinerTraffic) and again.requests == 1


def test_quantile_and_parsing_of_a_real_miner_exposition() -> None:
    metrics = MinerMetrics("m", "echo")
    metrics.zero(["prompting"])
    for seconds in (0.04, 0.2, 0.3, 0.6):
        metrics.first_chunk.labels("prompting").observe(seconds)
        metrics.count("prompting", "done")
    sample = parse_miner(generate_latest(metrics.registry).decode(), at=1.0)
    assert sample.outcomes["done"] == 4 and sample.started is not None
    assert quantile(0.5, sample.buckets) == pytest.approx(0.25)
    assert quantile(0.9, {1.0: 0.0, float("inf"): 0.0}) is None


def test_service_discovery_through_the_orchestrator_or_direct() -> None:
    endpoints = [UnitEndpoint("a", Role.miner, "a", 9091), UnitEndpoint("ms", Role.model_server, "ms", 8000)]
    via = sd_targets(endpoints, "127.0.0.1:9100")
    assert via[0] == {
        "targets": ["127.0.0.1:9100"],
        "labels": {"unit": "a", "role": "miner", "miner": "a", "__metrics_path__": "/scrape/a"},
    }
    direct = sd_targets(endpoints, None)
    assert direct[1]["targets"] == ["ms:8000"] and direct[1]["labels"]["server"] == "ms"
