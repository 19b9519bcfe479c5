"""`python -m orchestrator health` end to end: miners started from rendered settings by a real
supervisord, probed by the real CLI through a real dendrite."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fleets import make_project
from tests.helpers import ROOT, free_ports, supervisord, wait_for_port

pytestmark = pytest.mark.integration


def _health(project: Path, *args: str) -> tuple[int, dict[str, Any] | str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "health", "--config", str(project / "config/miners.yaml"),
         "--project-dir", str(project), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out: dict[str, Any] | str = json.loads(proc.stdout) if "--json" in args else proc.stdout
    return proc.returncode, out, proc.stderr


def _cli(project: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "orchestrator", *args, "--config", str(project / "config/miners.yaml"),
         "--project-dir", str(project)],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def test_health_reports_every_verdict_and_exits_accordingly(tmp_path: Path) -> None:
    *ports, sup, status_port = free_ports(7)
    project = tmp_path / "project"
    make_project(
        project,
        f"""
        network: local
        wallet_path: ./wallets
        probe: {{wallet: probe, hotkey: default, timeout: 4, prompt: "hello from the probe"}}
        supervisor: {{port: {sup}}}
        status_api: {{port: {status_port}}}
        defaults: {{wallet: fleet, stop_on_forward_exception: false}}
        miners:
          - name: ok-1
            hotkey: ok-1
            backend: echo
            axon_port: {ports[0]}
            protocols: [prompting, text-prompting]
            http: {{auth: [epistula, btauth]}}
          - {{name: stopped-1, hotkey: stopped-1, backend: echo, axon_port: {ports[1]}}}
          - name: faulty-1
            hotkey: faulty-1
            backend: echo
            axon_port: {ports[2]}
            echo: {{fail_after_tokens: 0}}
          - name: hung-1
            hotkey: hung-1
            backend: echo
            axon_port: {ports[3]}
            echo: {{hang_after_tokens: 1}}
          - {{name: strict-1, hotkey: strict-1, backend: echo, axon_port: {ports[4]}}}
        """,
        keys=False,
        model=False,
    )
    _cli(project, "wallets")
    _cli(project, "render", "--python", sys.executable)
    # strict-1 runs without the probe's key file in its allowance (edited by hand, say): it refuses it.
    # On the host the allowance is supervisord.conf's override of the env file's container path.
    conf = project / "config/generated/supervisord.conf"
    head, strict = conf.read_text().split("[program:strict-1]", 1)
    strict = re.sub(r"MINER_ALLOWED_HOTKEY_FILES='[^']*'", "MINER_ALLOWED_HOTKEY_FILES='[]'", strict, count=1)
    conf.write_text(f"{head}[program:strict-1]{strict}")
    with supervisord(project / "config/generated/supervisord.conf", sup) as server:
        for port in ports:
            wait_for_port(port, 60)
        code, table, _ = _health(project)
        assert code == 1
        assert "ok-1" in str(table) and "1/5 healthy" not in str(table)

        server.supervisor.stopProcess("stopped-1")  # type: ignore[attr-defined]
        code, report, stderr = _health(project, "--json")
        assert code == 1, stderr
        assert isinstance(report, dict)
        verdicts = {m["name"]: (m["verdict"], m["reason"]) for m in report["miners"]}
        ok = next(m for m in report["miners"] if m["name"] == "ok-1")

        code_one, one, _ = _health(project, "--json", "--miner", "ok-1")

    assert verdicts["ok-1"] == ("healthy", "")
    # Every route of both protocols was probed: the streams, SN1's availability, text-prompting's plain one.
    assert ok["routes"] == {
        "StreamPromptingSynapse": "healthy",
        "AvailabilitySynapse": "healthy",
        "StreamPrompting": "healthy",
        "Prompting": "healthy",
        "http:epistula": "healthy",
        "http:btauth": "healthy",
    }
    assert ok["doors"] == [
        {"door": "axon", "port": ports[0], "protocols": ["prompting", "text-prompting"]},
        {"door": "http", "port": ports[0], "auth": ["epistula", "btauth"],
         "paths": ["/v1/chat/completions", "/v1/models", "/availability"]},
    ]  # fmt: skip
    assert "axon,epistula,btauth" in str(table)
    assert ok["completion"] == "hello from the probe" and ok["status_code"] == 200 and ok["chunks"] >= 1
    assert ok["first_chunk_after"] is not None
    assert verdicts["stopped-1"][0] == "down"
    # A backend that fails before any text: a status and the reason, never a 200 without text.
    assert verdicts["faulty-1"][0] == "error" and "HTTP 503: the backend failed" in verdicts["faulty-1"][1]
    assert verdicts["hung-1"][0] == "timeout" and "4s" in verdicts["hung-1"][1]
    assert verdicts["strict-1"][0] == "refused" and "not in allowed_hotkeys" in verdicts["strict-1"][1]
    assert report["healthy"] is False
    assert code_one == 0 and isinstance(one, dict) and [m["name"] for m in one["miners"]] == ["ok-1"]


def test_health_with_an_unknown_miner_is_a_usage_error(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_project(
        project,
        """
        network: local
        wallet_path: ./wallets
        defaults: {wallet: fleet}
        miners:
          - {name: only-1, hotkey: only-1, backend: echo}
        """,
    )
    code, _, stderr = _health(project, "--miner", "nope")
    assert code == 2
    assert "no miner named nope" in stderr
