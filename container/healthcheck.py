"""The images' HEALTHCHECK: cheap, no model call, standard library only (runs with ``python -S``).

    healthcheck.py miner          a miner: its axon port (MINER_AXON_PORT, default 8091) accepts TCP;
                                  in a container running a model server instead (it uses the miner
                                  image): llama.cpp's ``llama-server``: GET /health on its --port answers
                                  200 (503 while the model loads); ``llama_cpp.server``: GET /v1/models
    healthcheck.py orchestrator   GET /status on MINERFLEET_STATUS_PORT (default 9100) answers 200, at
                                  MINERFLEET_STATUS_HOST when it names one address, else 127.0.0.1

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


def _http(port: int, path: str, host: str = "127.0.0.1") -> bool:
    url = f"http://{host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return bool(response.status == 200)
    except OSError as exc:
        print(f"{url}: {exc}")
        return False


def _flag(argv: list[str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in argv[:-1]:
            return argv[argv.index(name) + 1]
    return None


def _model_server() -> tuple[int, str] | None:
    """(port, path to GET) of a model server running in this container, if there is one."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and Path(argv[0]).name == "llama-server":
            return int(_flag(argv, ("--port",)) or os.environ.get("LLAMA_ARG_PORT", "8080")), "/health"
        if "llama_cpp.server" in argv:
            # llama_cpp.server's own default port is 8000 (or $PORT)
            return int(_flag(argv, ("--port", "--port_")) or os.environ.get("PORT", "8000")), "/v1/models"
    return None


def main(argv: list[str]) -> int:
    role = argv[1] if len(argv) > 1 else "miner"
    if role == "orchestrator":
        # The address it binds to (a swarm manager's own address, say), unless that is every address.
        host = os.environ.get("MINERFLEET_STATUS_HOST", "")
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        return 0 if _http(int(os.environ.get("MINERFLEET_STATUS_PORT", "9100")), "/status", host) else 1
    if "MINER_AXON_PORT" not in os.environ:
        server = _model_server()
        if server is not None:
            return 0 if _http(*server) else 1
    return 0 if _tcp(int(os.environ.get("MINER_AXON_PORT", "8091"))) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
