"""The status records: what ``/status`` serves is written from them and read back into the same records,
the CLI's table and the swarm's node column read their fields."""

from __future__ import annotations

import json
from functools import partial
from types import SimpleNamespace
from typing import Any, cast

from orchestrator.fleet.load import LoadedFleet
from orchestrator.policy import State
from orchestrator.probing.modelservers import ServerReport, ServerVerdict
from orchestrator.probing.reports import ProbeReport, Verdict
from orchestrator.runtimes.swarm.runtime import Location
from orchestrator.runtimes.swarm.where import where
from orchestrator.status.app import page
from orchestrator.status.fleetstatus import (
    Change,
    FleetStatus,
    MinerStatus,
    MinerTraffic,
    Role,
    ServerStatus,
    ServerTraffic,
    TrafficPoint,
    Where,
)
from orchestrator.watch.placed import with_nodes
from orchestrator.watch.supervise import format_status

UNIT: dict[str, Any] = {
    "role": Role.miner,
    "detail": "",
    "restarts_by_reason": {},
    "last_exit_code": None,
    "backoff_remaining": None,
    "history": (),
}


def _fleet() -> FleetStatus:
    probe = ProbeReport(
        "gemma-1", "5F...", 8091, "openai", "Prompting", Verdict.healthy, "", 200, 0.25, 12, 40.0, 300, 1.5,
        routes={"Prompting": "healthy"},
    )  # fmt: skip
    miner = MinerStatus(
        **{
            **UNIT,
            "restarts_by_reason": {"forward-exception": 1},
            "last_exit_code": 75,
            "history": (Change(1000.0, State.BACKOFF, State.STARTING, "backoff-elapsed", ""),),
        },
        name="gemma-1",
        port=8091,
        state=State.RUNNING,
        reason="probe-ok",
        restarts=1,
        traffic=MinerTraffic(
            "http://gemma-1:9091/metrics",
            1001.0,
            "",
            300.0,
            requests=5,
            answered=4,
            answered_fraction=0.8,
            first_chunk_p90=0.4,
            outcomes={"done": 4, "busy": 1},
            totals={"done": 9, "busy": 1},
            history=(TrafficPoint(1001.0, 5, 4),),
            validators={
                "requests_last_hour": 12.0,
                "hotkeys_last_hour": 3.0,
                "last_answer_at": 941.0,
                "silent_s": 60.0,
                "uid": 7.0,
            },
        ),
        backend="openai",
        hotkey="5F...",
        last_probe=probe,
        last_probe_at=1001.5,
    )
    down = MinerStatus(
        **{**UNIT, "detail": "exit 1"},
        name="echo-1",
        port=8092,
        state=State.BACKOFF,
        reason="crash:exit-1",
        restarts=0,
        backend="echo",
        hotkey="5G...",
    )
    server = ServerStatus(
        **{**UNIT, "role": Role.model_server},
        name="model-server-gemma",
        port=8000,
        state=State.RUNNING,
        reason="probe-ok",
        restarts=0,
        traffic=ServerTraffic(
            "http://model-server-gemma:8000/metrics",
            1001.0,
            "",
            300.0,
            figures={"requests_processing": 3.0, "tokens_predicted_total": 1234.0},
        ),
        url="http://model-server-gemma:8000/health",
        last_check=ServerReport("model-server-gemma", ServerVerdict.healthy, "", 200, 0.01),
        last_check_at=1001.2,
    )
    rollout = {"kind": "rollout", "state": "rolling", "message": "replacing gemma-1", "done": ["echo-1"]}
    return FleetStatus(
        "docker", True, 12.0, "state/orchestrator.json", (miner, down), (server,), rollout=rollout
    )


def test_the_served_json_reads_back_into_the_same_records() -> None:
    status = _fleet()
    served = json.loads(json.dumps(status.to_json()))
    assert FleetStatus.from_json(served) == status
    miner, _ = served["miners"]
    # The wire format the page's script, operators' scripts and the tests read:
    assert miner["state"] == "RUNNING" and miner["history"][0]["to"] == "STARTING"
    assert miner["last_probe"]["verdict"] == "healthy" and miner["last_probe"]["at"] == 1001.5
    assert "completion" not in miner["last_probe"] and "node" not in miner
    assert miner["traffic"]["answered_fraction"] == 0.8 and miner["traffic"]["history"][0]["answered"] == 4
    [server] = served["model_servers"]
    assert server["traffic"]["requests_processing"] == 3.0  # a model server's figures beside the rest
    assert server["last_check"]["healthy"] is True


def test_the_table_and_the_page_read_the_records() -> None:
    status = _fleet()
    lines = format_status(status).splitlines()
    assert lines[0].split() == [
        "MINER",
        "BACKEND",
        "PORT",
        "STATE",
        "RESTARTS",
        "LAST",
        "PROBE",
        "TTFC",
        "REASON",
    ]
    assert lines[1].split() == ["gemma-1", "openai", "8091", "RUNNING", "1", "healthy", "0.25s", "probe-ok"]
    assert lines[2].split() == [
        "echo-1",
        "echo",
        "8092",
        "BACKOFF",
        "0",
        "-",
        "-",
        "crash:exit-1:",
        "exit",
        "1",
    ]
    assert lines[-1] == "1/2 running, model servers 1/1 running (runtime: docker)"
    html = page(status)
    assert "<td>80%</td>" in html and "<td>1234</td>" in html and "crash:exit-1" not in html  # detail shown
    assert "rollout (rolling): replacing gemma-1" in html  # a rolling update's progress
    assert "<td>12/h, 3 hotkeys, answered 1 min ago, uid 7</td>" in html  # validators, not the probe


def test_on_a_swarm_each_unit_says_where_it_runs() -> None:
    class Runtime:
        def locate(self, name: str) -> Location | None:
            return Location("beta", "10.213.0.2") if name == "gemma-1" else None

    # Nothing pinned in the fleet file: a unit without a task yet has no node.
    loaded = cast(LoadedFleet, SimpleNamespace(miners=[], model_servers=[]))
    status = with_nodes(_fleet, partial(where, Runtime(), loaded))()
    assert status.placed and status.miner("gemma-1").where == Where("beta", "10.213.0.2")
    assert status.miner("echo-1").where == Where(None, None)
    served = status.to_json()
    assert (served["miners"][0]["node"], served["miners"][0]["address"]) == ("beta", "10.213.0.2")
    assert FleetStatus.from_json(served) == status
    lines = format_status(status).splitlines()
    assert lines[0].split()[:4] == ["MINER", "BACKEND", "NODE", "PORT"]
    assert lines[1].split()[:4] == ["gemma-1", "openai", "beta", "(10.213.0.2)"]
    assert lines[2].split()[:4] == ["echo-1", "echo", "-", "(-)"]


def test_the_page_says_when_only_the_probe_asks_or_the_hotkey_is_gone() -> None:
    def alarm(**validators: float) -> str:
        return MinerTraffic("", 1000.0, "", 300.0, validators=validators).validator_alarm

    assert alarm(silent_s=60.0, registered=1.0) == ""
    assert alarm(silent_s=2000.0) == "no validator request for 33 min (only the probe asks)"
    assert alarm(silent_s=10.0, registered=0.0).startswith("deregistered")
    assert MinerTraffic("", None, "", 300.0).validators_line == "-"
