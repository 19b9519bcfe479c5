"""The images' HEALTHCHECK: cheap, no model call, standard library only (runs with ``python -S``).

    healthcheck.py miner          a miner: its axon port (MINER_AXON_PORT, default 8091) accepts TCP;
                                  in a container running ``llama_cpp.server`` instead (the shared model
                                  server uses the miner image): GET /v1/models on its --port answers 200
    healthcheck.py orchestrator   GET /status on MINERFLEET_STATUS_PORT (default 9100) answers 200

Exit 0 healthy, 1 unhealthy (docker's contract). Whether a miner really *streams* is the
orchestrator's stream probe's job (``make health``); this only says the process serves its port.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from pathlib import Path

TIMEOUT = 3.0


def _tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT):
            return True
    except OSError as exc:
        print(f"127.0.0.1:{port}: {exc}")
        return False


def _http(port: int, path: str) -> bool:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return bool(response.status == 200)
    except OSError as exc:
        print(f"{url}: {exc}")
        return False


def _model_server_port() -> int | None:
    """The --port of a ``python -m llama_cpp.server`` running in this container, if there is one."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "llama_cpp.server" in argv:
            for flag in ("--port", "--port_"):
                if flag in argv[:-1]:
                    return int(argv[argv.index(flag) + 1])
            return int(os.environ.get("PORT", "8000"))  # llama_cpp.server's own default
    return None


def main(argv: list[str]) -> int:
    role = argv[1] if len(argv) > 1 else "miner"
    if role == "orchestrator":
        return 0 if _http(int(os.environ.get("MINERFLEET_STATUS_PORT", "9100")), "/status") else 1
    if "MINER_AXON_PORT" not in os.environ:
        port = _model_server_port()
        if port is not None:
            return 0 if _http(port, "/v1/models") else 1
    return 0 if _tcp(int(os.environ.get("MINER_AXON_PORT", "8091"))) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
