"""Rolling updates end to end: four echo miners from rendered settings under a real supervisord, asked
all together every moment by a real dendrite while `python -m orchestrator rollout` replaces them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fleets import make_project
from tests.helpers import ROOT, free_ports, supervisord, wait_for_port
from tests.rounds import WORDS, AskingAll

pytestmark = pytest.mark.integration

NAMES = ("m-1", "m-2", "m-3", "m-4")


def _fleet(ports: dict[str, int], sup: int, max_tokens: int, broken: str | None = None) -> str:
    miners = "\n".join(
        f"      - {{name: {n}, hotkey: {n}, backend: echo, axon_port: {ports[n]}"
        + (", echo: {fail_after_tokens: 0}" if n == broken else "")
        + "}"
        for n in NAMES
    )
    return f"""
    network: local
    wallet_path: ./wallets
    probe: {{wallet: probe, hotkey: default, timeout: 4, prompt: "are you there"}}
    supervisor: {{port: {sup}}}
    rollout: {{max_unavailable: 1, wait: 20}}
    defaults: {{wallet: fleet, max_tokens: {max_tokens}, stop_on_forward_exception: false}}
    miners:
{miners}
    """


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args, "--config", str(project / "config/miners.yaml"),
         "--project-dir", str(project)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_rollout_keeps_three_of_four_answering_stops_on_a_bad_miner_and_rolls_back(tmp_path: Path) -> None:
    *axon_ports, sup = free_ports(5)
    ports = dict(zip(NAMES, axon_ports, strict=True))
    project = tmp_path / "project"
    fleet_file = project / "config/miners.yaml"
    make_project(project, _fleet(ports, sup, max_tokens=64), model=False)
    assert _cli(project, "render", "--python", sys.executable).returncode == 0
    with supervisord(project / "config/generated/supervisord.conf", sup):
        for port in axon_ports:
            wait_for_port(port, 60)
        assert set(AskingAll(project, ports).once().values()) == {WORDS}

        # A good update: every miner answers at most 3 tokens. One at a time; the others keep answering.
        assert _cli(project, "rollout", "--save").returncode == 0
        make_project(project, _fleet(ports, sup, max_tokens=3), model=False, keys=False)
        assert _cli(project, "render", "--python", sys.executable).returncode == 0
        with AskingAll(project, ports) as validator:
            done = _cli(project, "rollout", "--runtime", "supervisor")
            time.sleep(1.0)
        assert done.returncode == 0, done.stderr
        assert "rollout done: 4 miner(s) replaced" in done.stderr
        answering = validator.answering()
        assert len(answering) >= 5 and min(answering) >= 3, answering
        assert set(AskingAll(project, ports).once().values()) == {"one two three "}

        # A bad update: m-1 fails every request; the rollout stops there, m-2..m-4 stay as they were.
        assert _cli(project, "rollout", "--save").returncode == 0
        make_project(project, _fleet(ports, sup, max_tokens=5, broken="m-1"), model=False, keys=False)
        assert _cli(project, "render", "--python", sys.executable).returncode == 0
        stopped = _cli(project, "rollout", "--runtime", "supervisor")
        assert stopped.returncode == 1
        assert "stopped: m-1 did not stream" in stopped.stderr and "m-2, m-3, m-4" in stopped.stderr
        answers = AskingAll(project, ports).once()
        assert answers["m-1"] == "" and {answers[n] for n in NAMES[1:]} == {"one two three "}

        # Rolling back: the saved revision again, m-1 answers as the others do.
        back = _cli(project, "rollout", "--runtime", "supervisor", "--rollback")
        assert back.returncode == 0, back.stderr
        assert set(AskingAll(project, ports).once().values()) == {"one two three "}
        assert "fail_after_tokens" in (project / "config/miners.yaml.rejected").read_text()
        assert "fail_after_tokens" not in fleet_file.read_text()
        status = (project / "state/rollout/status.json").read_text()
        assert '"state": "done"' in status and '"kind": "rollback"' in status
