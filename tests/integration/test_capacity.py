"""`python -m orchestrator capacity` on a real fleet: echo miners as real processes named by a fleet file,
measured by the real CLI through K real dendrites. Counts only; nothing here asserts on a time."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from devkit.local import llama_cpp_server
from services.miner.settings import MinerSettings
from tests.fleets import make_key, make_project
from tests.helpers import ROOT, MinerProcess, free_ports, wait_for_port

pytestmark = pytest.mark.integration

K = 4
# The lead adds MINER_MAX_CONCURRENCY; before it lands a miner refuses unknown settings, so set it only then.
HAS_MAX_CONCURRENCY = "max_concurrency" in MinerSettings.model_fields


def _capacity(project: Path, *args: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "capacity", "--config", str(project / "config/miners.yaml"),
         "--project-dir", str(project), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


@contextmanager
def _miners(project: Path, probe_ss58: str, settings: dict[str, dict[str, str]]) -> Iterator[None]:
    """One ``python -m services.miner`` per entry (name -> MINER_* settings), keys from the project."""
    with ExitStack() as stack:
        started = []
        for name, extra in settings.items():
            env = {
                "MINER_NAME": name,
                "MINER_NETWORK": "local",
                "MINER_WALLET_PATH": str(project / "wallets"),
                "MINER_WALLET_NAME": "fleet",
                "MINER_WALLET_HOTKEY": name,
                "MINER_AXON_IP": "127.0.0.1",
                "MINER_ALLOWED_HOTKEYS": json.dumps([probe_ss58]),
                "MINER_BACKEND": "echo",
                **{f"MINER_{k.upper()}": v for k, v in extra.items()},
            }
            miner = MinerProcess(env, project / f"{name}.log")
            started.append(miner.start(wait=0))
            stack.callback(miner.stop)
        for miner in started:  # started together, so their imports overlap
            wait_for_port(miner.port, 60, miner.proc)
        yield


def test_capacity_counts_what_each_miner_of_a_real_fleet_does_with_k_concurrent_requests(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    ports = dict(zip(("roomy", "strict", "gone"), free_ports(3), strict=True))
    make_project(
        project,
        f"""
        network: local
        wallet_path: ./wallets
        probe: {{wallet: probe, hotkey: default, timeout: 8, prompt: "one two three four five six"}}
        defaults: {{wallet: fleet}}
        miners:
          - name: roomy
            hotkey: roomy
            backend: echo
            axon_port: {ports["roomy"]}
            http: {{auth: [epistula, btauth]}}
          - {{name: strict, hotkey: strict, backend: echo, axon_port: {ports["strict"]}}}
          - {{name: gone, hotkey: gone, backend: echo, axon_port: {ports["gone"]}}}
        """,
        model=False,
    )
    probe_ss58 = make_key(project / "wallets", "probe", "default")
    # 6 words, 0.15 s each: a stream lasts ~1 s, so K requests sent together overlap (and K of them one
    # after another still end well before the timeout)
    slow = {"echo__delay_per_token": "0.15"}
    roomy = {
        "axon_port": str(ports["roomy"]),
        **slow,
        "max_queue": "0",
        "http__auth": '["epistula", "btauth"]',
    }
    strict = {"axon_port": str(ports["strict"]), **slow, "max_queue": "0"}
    if HAS_MAX_CONCURRENCY:
        roomy["max_concurrency"] = str(K)
        strict["max_concurrency"] = "1"
    else:  # one generation at a time: the queue holds the others
        roomy["max_queue"] = str(K)
    with _miners(project, probe_ss58, {"roomy": roomy, "strict": strict}):
        code, out, err = _capacity(project, "--concurrency", str(K), "--rounds", "2", "--json")
        code_one, table, _ = _capacity(project, "--concurrency", "2", "--miner", "roomy")
        code_doors, doors, err_doors = _capacity(
            project, "--concurrency", str(K), "--miner", "roomy", "--door", "all", "--json"
        )

    assert code == 0, err
    data: dict[str, Any] = json.loads(out)  # JSON only on stdout (progress lines go to stderr)
    assert "capacity: roomy" in err
    assert (data["concurrency"], data["rounds"], data["timeout"]) == (K, 2, 8.0)
    assert "characters / 4" in data["tokens_per_s_estimate"]
    by_name = {m["name"]: m for m in data["miners"]}
    assert list(by_name) == ["roomy", "strict", "gone"]
    for m in by_name.values():
        assert m["requests"] == 2 * K and (m["concurrency"], m["rounds"]) == (K, 2)
        assert m["answered"] + m["refused"] + m["failed"] == m["requests"]
        assert sum(m["outcomes"].values()) == m["requests"]

    roomy_r = by_name["roomy"]
    assert roomy_r["answered"] == roomy_r["complete"] == 2 * K, roomy_r
    assert roomy_r["first_chunk_p50"] is not None and roomy_r["first_chunk_p90"] >= roomy_r["first_chunk_p50"]
    assert roomy_r["tokens_per_s"] > 0

    strict_r = by_name["strict"]  # one at a time and no queue: the others are told "busy" at once
    assert strict_r["answered"] >= 2 and strict_r["refused"] >= 2, strict_r
    assert strict_r["outcomes"].get("busy") == strict_r["refused"]

    gone_r = by_name["gone"]  # in the fleet file, nothing listening
    assert (gone_r["answered"], gone_r["refused"], gone_r["failed"]) == (0, 0, 2 * K)
    assert gone_r["outcomes"] == {"down": 2 * K} and gone_r["tokens_per_s"] == 0

    assert code_one == 0
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["MINER", "DOOR", "BACKEND", "K", "ANSWERED"]
    assert lines[1].split()[:6] == ["roomy", "axon", "echo", "2", "2/2", "2/2"] and len(lines) == 3

    # The same miner through each of its doors in one run: the HTTP door answers as the axon does.
    assert code_doors == 0, err_doors
    rows = {m["door"]: m for m in json.loads(doors)["miners"]}
    assert list(rows) == ["axon", "epistula", "btauth"]
    assert [(m["answered"], m["complete"]) for m in rows.values()] == [(K, K)] * 3, rows


@pytest.mark.model
def test_capacity_reports_an_openai_miner_on_a_model_server(tmp_path: Path, gguf_model: str) -> None:
    project, (port, server_port) = tmp_path / "project", free_ports(2)
    with llama_cpp_server(Path(gguf_model), server_port, tmp_path / "server.log", n_ctx=1024) as base_url:
        make_project(
            project,
            f"""
            network: local
            wallet_path: ./wallets
            probe: {{wallet: probe, hotkey: default}}
            defaults: {{wallet: fleet}}
            miners:
              - name: shared
                hotkey: shared
                backend: openai
                axon_port: {port}
                openai: {{base_url: "{base_url}", model: gemma}}
            """,
            model=False,
        )
        probe_ss58 = make_key(project / "wallets", "probe", "default")
        openai = {
            "backend": "openai",
            "openai__base_url": base_url,
            "openai__model": "gemma",
            "openai__use_chat": "false",
            "max_tokens": "16",
            "temperature": "0",
            "axon_port": str(port),
        }
        with _miners(project, probe_ss58, {"shared": openai}):
            code, out, err = _capacity(project, "--concurrency", str(K), "--json")

    assert code == 0, err
    (m,) = json.loads(out)["miners"]
    assert (m["name"], m["backend"], m["requests"]) == ("shared", "openai", K)
    assert m["answered"] >= 1 and m["tokens_per_s"] > 0, m
    assert m["answered"] + m["refused"] + m["failed"] == K == sum(m["outcomes"].values())


def test_capacity_exit_codes(tmp_path: Path) -> None:
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
        model=False,
    )
    code, _, err = _capacity(project, "--concurrency", "2", "--miner", "nope")
    assert code == 2 and "no miner named nope" in err
    code, _, err = _capacity(project, "--concurrency", "0")
    assert code == 2 and "at least 1" in err
    (project / "config/miners.yaml").write_text("miners: [", encoding="utf-8")
    code, out, err = _capacity(project, "--concurrency", "2", "--json")
    assert code == 2 and out == "" and "error:" in err
