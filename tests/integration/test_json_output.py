"""Every ``--json`` output is one JSON document on stdout and nothing else: bittensor's own log lines (a
dendrite's ``ServerDisconnectedError``) go to stderr."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fleets import make_project
from tests.helpers import ROOT, free_port

pytestmark = pytest.mark.integration


@contextmanager
def dropping_server(port: int) -> Iterator[None]:
    """A "miner" that reads the request and closes the connection without a word."""
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)
        server.close()


def test_health_json_is_only_json_when_a_miner_drops_the_connection(tmp_path: Path) -> None:
    port = free_port()
    project = tmp_path / "project"
    make_project(
        project,
        f"""
        network: local
        wallet_path: ./wallets
        probe: {{wallet: probe, hotkey: default, timeout: 5}}
        defaults: {{wallet: fleet}}
        miners:
          - {{name: drops-1, hotkey: drops-1, backend: echo, axon_port: {port}}}
        """,
        model=False,
    )
    with dropping_server(port):
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator", "health", "--json",
             "--config", str(project / "config/miners.yaml"), "--project-dir", str(project)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    document = json.loads(proc.stdout)  # the whole of stdout, nothing before or after
    assert document["healthy"] is False
    [miner] = document["miners"]
    assert miner["name"] == "drops-1" and miner["verdict"] != "healthy"
    assert "\x1b[" not in proc.stdout


def test_status_json_is_only_json(tmp_path: Path) -> None:
    """``status --json`` prints the watch's /status document (here from a stand-in API) and nothing else."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = json.dumps({"runtime": "fake", "adopted": True, "uptime": 1.0, "miners": []}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    project = tmp_path / "project"
    make_project(
        project,
        """
        network: local
        wallet_path: ./wallets
        defaults: {wallet: fleet}
        miners:
          - {name: echo-1, hotkey: echo-1, backend: echo}
        """,
        model=False,
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator", "status", "--json",
             "--url", f"http://127.0.0.1:{server.server_address[1]}",
             "--config", str(project / "config/miners.yaml"), "--project-dir", str(project)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["runtime"] == "fake"
