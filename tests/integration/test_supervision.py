"""Supervision end to end with the supervisor runtime: a real supervisord running real miners from
rendered settings, and the real `python -m orchestrator watch` deciding from exit codes and probes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from services.miner.client import axon_info, make_dendrite, make_synapse, stream_once
from tests.fleets import make_project
from tests.helpers import ROOT, free_ports, supervisord, wait_for_port

pytestmark = pytest.mark.integration


def _fleet(ports: dict[str, int], sup: int, status: int) -> str:
    return f"""
    network: local
    wallet_path: ./wallets
    probe: {{wallet: probe, hotkey: default, timeout: 2, interval: 1, prompt: "are you there"}}
    supervisor: {{port: {sup}}}
    status_api: {{port: {status}}}
    restart:
      backoff_initial: 0.5
      backoff_max: 2
      start_grace: 5
      unhealthy_after_failed_probes: 2
      crash_loop_max_restarts: 3
      crash_loop_window: 120
    models:
      broken: {{path: ./models/broken.gguf}}
    defaults: {{wallet: fleet, stop_on_forward_exception: true}}
    miners:
      - {{name: steady, hotkey: steady, backend: echo, axon_port: {ports["steady"]}}}
      - name: faulty
        hotkey: faulty
        backend: echo
        axon_port: {ports["faulty"]}
        echo: {{fail_after_tokens: 5}}
      - name: misconfigured
        hotkey: misconfigured
        backend: llamacpp
        axon_port: {ports["misconfigured"]}
        llamacpp: {{model: broken}}
      - name: hanging
        hotkey: hanging
        backend: echo
        axon_port: {ports["hanging"]}
        echo: {{hang_after_tokens: 1}}
        restart: {{crash_loop_max_restarts: 100}}
      - name: doomed
        hotkey: doomed
        backend: echo
        axon_port: {ports["doomed"]}
        echo: {{fail_after_tokens: 0}}
    """


class Watch:
    """`python -m orchestrator watch` as a child process, and its status API."""

    def __init__(self, project: Path, status_port: int) -> None:
        self.project = project
        self.status_port = status_port
        self.log_path = project / f"watch-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "watch", "--config", str(project / "config/miners.yaml"),
             "--project-dir", str(project), "--runtime", "supervisor"],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        wait_for_port(status_port, 60, self.proc)

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/status", timeout=5) as resp:
            data: dict[str, Any] = json.load(resp)
        return {m["name"]: m for m in data["miners"]}

    def wait_for(
        self, what: str, check: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.status()
            if check(last):
                return last
            time.sleep(0.3)
        raise AssertionError(
            f"timed out waiting for {what}; last status: {json.dumps(last, indent=1)[:3000]}"
        )

    def stop(self, sig: int = signal.SIGTERM) -> float:
        started = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(30)
        self._log.close()
        return time.monotonic() - started

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def fleet(tmp_path: Path) -> Iterator[tuple[Path, dict[str, int], Any, int]]:
    names = ["steady", "faulty", "misconfigured", "hanging", "doomed"]
    *miner_ports, sup, status = free_ports(len(names) + 2)
    ports = {**dict(zip(names, miner_ports, strict=True)), "supervisor": sup}  # all but the status API's
    project = tmp_path / "project"
    make_project(project, _fleet(ports, sup, status), keys=False, model=False)
    (project / "models").mkdir(exist_ok=True)
    (project / "models/broken.gguf").write_bytes(b"this is not a GGUF file")
    for args in (["wallets"], ["render", "--python", sys.executable]):
        subprocess.run(
            [sys.executable, "-m", "orchestrator", *args, "--config", str(project / "config/miners.yaml"),
             "--project-dir", str(project)],
            cwd=ROOT, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    with supervisord(project / "config/generated/supervisord.conf", sup) as server:
        yield project, ports, server, status


def _pid(server: Any, name: str) -> int:
    return int(server.supervisor.getProcessInfo(name)["pid"])


async def _send(project: Path, port: int, prompt: str) -> None:
    """A request signed by the probe hotkey (the only one the miners accept on network local)."""
    from bittensor_wallet import Wallet

    from orchestrator.render import read_ss58

    dendrite = make_dendrite(Wallet(name="probe", hotkey="default", path=str(project / "wallets")))
    hotkey = read_ss58(project / "wallets/fleet/hotkeys/faulty")
    await stream_once(dendrite, axon_info("127.0.0.1", port, hotkey), make_synapse("prompting", prompt), 5)
    await dendrite.aclose_session()


def test_the_watch_loop_restarts_for_the_right_reasons(tmp_path: Path) -> None:
    with fleet(tmp_path) as (project, ports, server, status_port):
        wait_for_port(ports["steady"], 60)
        watch = Watch(project, status_port)
        try:
            # A bad setting: FATAL after one try, with the miner's own error line.
            s = watch.wait_for("misconfigured FATAL", lambda s: s["misconfigured"]["state"] == "FATAL")
            assert s["misconfigured"]["reason"] == "config-error"
            assert s["misconfigured"]["detail"].startswith("error: MINER_LLAMACPP__MODEL_PATH: cannot load")
            assert s["misconfigured"]["restarts"] == 0

            # A healthy miner runs and is probed healthy.
            watch.wait_for(
                "steady probed", lambda s: (s["steady"]["last_probe"] or {}).get("healthy") is True
            )

            # stop_on_forward_exception: a fault exits 75, and the miner is back healthy on its own.
            watch.wait_for("faulty RUNNING", lambda s: s["faulty"]["state"] == "RUNNING")
            old_pid = _pid(server, "faulty")
            asyncio.run(_send(project, ports["faulty"], "one two three four five six seven"))
            s = watch.wait_for(
                "faulty restarted",
                lambda s: (
                    s["faulty"]["restarts_by_reason"].get("forward-exception") == 1
                    and s["faulty"]["state"] == "RUNNING"
                ),
            )
            assert _pid(server, "faulty") != old_pid
            assert [h["to"] for h in s["faulty"]["history"]][-3:] == ["BACKOFF", "STARTING", "RUNNING"]

            # SIGKILL: back again.
            os.kill(_pid(server, "steady"), signal.SIGKILL)
            s = watch.wait_for(
                "steady back after SIGKILL",
                lambda s: (
                    s["steady"]["restarts_by_reason"].get("killed:SIGKILL") == 1
                    and s["steady"]["state"] == "RUNNING"
                ),
            )

            # A stream that hangs: restarted after 2 failed probes.
            s = watch.wait_for(
                "hanging restarted", lambda s: s["hanging"]["restarts_by_reason"].get("probe-failed", 0) >= 1
            )
            assert "probes failed" in s["hanging"]["detail"] or s["hanging"]["state"] in (
                "STARTING",
                "UNHEALTHY",
            )

            # Always crashing: FATAL (crash loop), not an endless loop.
            s = watch.wait_for("doomed FATAL", lambda s: s["doomed"]["state"] == "FATAL", timeout=90)
            assert s["doomed"]["reason"] == "crash-loop"
            assert s["doomed"]["restarts"] == 3

            # The status API's other faces.
            metrics = (
                urllib.request.urlopen(f"http://127.0.0.1:{status_port}/metrics", timeout=5).read().decode()
            )
            assert 'minerfleet_restarts_total{miner="faulty",reason="forward-exception"} 1' in metrics
            assert 'minerfleet_miner_state{miner="doomed",state="FATAL"} 1' in metrics
            page = urllib.request.urlopen(f"http://127.0.0.1:{status_port}/", timeout=5).read().decode()
            assert "<table>" in page and "misconfigured" in page and "FATAL" in page
            where = ["--config", str(project / "config/miners.yaml"), "--project-dir", str(project)]
            status_cli = subprocess.run(
                [sys.executable, "-m", "orchestrator", "status", *where],
                cwd=ROOT, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert status_cli.returncode == 0, status_cli.stderr
            assert (
                "misconfigured" in status_cli.stdout
                and "config-error: error: MINER_LLAMACPP" in status_cli.stdout
            )

            # Shutdown on SIGTERM is prompt and leaves the miners running.
            pids = {name: _pid(server, name) for name in ("steady", "faulty")}
            took = watch.stop()
            assert took < 10
            assert {name: _pid(server, name) for name in pids} == pids

            # A new watch (the orchestrator restarted) adopts them: no restart; its decisions and counts
            # stand (the state file): FATAL stays FATAL and is not started again.
            watch = Watch(project, status_port)
            s = watch.wait_for("adopted", lambda s: s["steady"]["state"] == "RUNNING")
            assert s["steady"]["reason"] == "adopted" and s["steady"]["restarts"] == 1
            assert s["faulty"]["reason"] in ("adopted", "probe-ok") and s["faulty"]["restarts"] == 1
            assert (s["doomed"]["state"], s["doomed"]["reason"]) == ("FATAL", "crash-loop")
            assert (s["misconfigured"]["state"], s["misconfigured"]["restarts"]) == ("FATAL", 0)
            assert (project / "state" / "orchestrator.json").is_file()

            # The orchestrator killed outright: the same.
            watch.stop(signal.SIGKILL)
            watch = Watch(project, status_port)
            s = watch.wait_for("adopted again", lambda s: s["faulty"]["state"] == "RUNNING")
            assert {name: _pid(server, name) for name in pids} == pids
            assert s["steady"]["restarts"] == 1 and s["doomed"]["state"] == "FATAL"
        finally:
            if watch.proc.poll() is None:
                watch.stop()
            print(watch.log[-5000:])


def test_an_edited_fleet_is_applied_without_the_watch_fighting_it(tmp_path: Path) -> None:
    """The operator moves a miner to another port while the watch runs: the watch holds (no restart on
    what it can no longer trust) until it runs on the new file; `supervisorctl update` restarts exactly
    the miner whose settings changed."""
    with fleet(tmp_path) as (project, ports, server, status_port):
        wait_for_port(ports["steady"], 60)
        watch = Watch(project, status_port)
        try:
            watch.wait_for(
                "steady probed", lambda s: (s["steady"]["last_probe"] or {}).get("healthy") is True
            )
            config = project / "config/miners.yaml"
            moved = free_ports(1, taken=[*ports.values(), status_port])[0]
            config.write_text(
                config.read_text().replace(f"axon_port: {ports['steady']}}}", f"axon_port: {moved}}}")
            )

            def fleet_changed() -> str | None:
                url = f"http://127.0.0.1:{status_port}/status"
                with urllib.request.urlopen(url, timeout=5) as resp:
                    changed: str | None = json.load(resp)["fleet_changed"]
                return changed

            deadline = time.monotonic() + 30
            while not fleet_changed() and time.monotonic() < deadline:
                time.sleep(0.3)
            assert "config/miners.yaml changed since this watch loaded it" in (fleet_changed() or "")
            held_at = time.time()
            faulty_pid = _pid(server, "faulty")

            where = ["--config", str(config), "--project-dir", str(project)]
            subprocess.run(
                [sys.executable, "-m", "orchestrator", "render", "--python", sys.executable, *where],
                cwd=ROOT, check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            update = subprocess.run(
                [sys.executable, "-m", "supervisor.supervisorctl", "-c",
                 str(project / "config/generated/supervisord.conf"), "update"],
                cwd=ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert "steady" in update.stdout and "faulty" not in update.stdout, update.stdout
            wait_for_port(moved, 60)
            time.sleep(3)  # probes of the old port fail meanwhile: the held watch must not act on them
            # Nothing the watch itself would start or restart (a backoff ending, failed probes) while it
            # holds; hanging's probes fail all along, and doomed exits into a BACKOFF it does not leave.
            acted = [
                (name, h["reason"], h["to"])
                for name, m in watch.status().items()
                for h in m["history"]
                if h["at"] > held_at and h["reason"] in ("backoff-elapsed", "probe-failed")
            ]
            assert acted == [], acted
            assert _pid(server, "faulty") == faulty_pid  # its settings did not change

            # The watch started again on the new file follows steady to its new port.
            watch.stop()
            watch = Watch(project, status_port)
            watch.wait_for(
                "steady on its new port",
                lambda s: (
                    s["steady"]["port"] == moved
                    and s["steady"]["state"] == "RUNNING"
                    and bool((s["steady"]["last_probe"] or {}).get("healthy"))
                ),
            )
            assert fleet_changed() is None
        finally:
            if watch.proc.poll() is None:
                watch.stop()
            print(watch.log[-5000:])
