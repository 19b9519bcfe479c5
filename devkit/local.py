"""Local runs for tests and benchmarks: real wallets in a temp dir, free ports, miners as real child
processes, a real supervisord. Everything here is the real thing on 127.0.0.1; nothing is faked."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.render.places import LLAMA_SERVER_FLAGS

ROOT = Path(__file__).resolve().parent.parent
GGUF = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
HF_DIR = ROOT / "models" / "gemma-3-270m-hf"


# The fleet file's default metrics_port_offset: a miner without metrics_port also takes axon_port + this.
METRICS_PORT_OFFSET = 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(
    count: int, *, taken: Iterable[int] = (), consecutive: bool = False, offset: int = METRICS_PORT_OFFSET
) -> list[int]:
    """``count`` ports for a fleet file that clash with nothing: each port is free now, and so is the port
    ``offset`` above it (a miner's default metrics port); no port or its twin is another's, or one of
    ``taken`` or its twin. Separate `free_port()` calls can clash there: the fleet file is then refused
    ("port ... is already used by miner ...", seen in CI). ``consecutive``: one block (a port_base)."""
    used = {q for p in taken for q in (p, p + offset)}
    ports: list[int] = []
    for _ in range(1000):
        if len(ports) == count:
            return ports
        first = free_port()
        block = list(range(first, first + (count - len(ports) if consecutive else 1)))
        claim = block + [p + offset for p in block]
        if max(claim) > 65535 or used.intersection(claim) or not all(_bindable(p) for p in claim):
            continue
        used.update(claim)
        ports.extend(block)
    raise RuntimeError(f"no {count} free ports (with their +{offset} twins) on 127.0.0.1")


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 20.0) -> int:
    """SIGTERM, ``grace`` seconds to leave, then SIGKILL; the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def make_hotkey(wallet_path: Path, wallet: str, hotkey: str) -> str:
    """Create an unencrypted hotkey (and the wallet's coldkeypub) offline; return its ss58 address."""
    from bittensor_wallet import Wallet

    w = Wallet(name=wallet, hotkey=hotkey, path=str(wallet_path))
    if not (wallet_path / wallet / "coldkeypub.txt").exists():
        w.create_new_coldkey(use_password=False, overwrite=True, suppress=True)
    w.create_new_hotkey(use_password=False, overwrite=True, suppress=True)
    return str(w.hotkey.ss58_address)


@dataclass
class Wallets:
    path: Path
    miner_hotkey: str  # ss58 of wallet "fleet", hotkey "miner"
    probe_hotkey: str  # ss58 of wallet "fleet", hotkey "probe"
    stranger_hotkey: str  # ss58 of wallet "fleet", hotkey "stranger": not allowed anywhere

    def wallet(self, hotkey: str) -> object:
        from bittensor_wallet import Wallet

        return Wallet(name="fleet", hotkey=hotkey, path=str(self.path))


def make_wallets(path: Path) -> Wallets:
    return Wallets(
        path=path,
        miner_hotkey=make_hotkey(path, "fleet", "miner"),
        probe_hotkey=make_hotkey(path, "fleet", "probe"),
        stranger_hotkey=make_hotkey(path, "fleet", "stranger"),
    )


class MinerProcess:
    """``python -m services.miner`` with the given MINER_* settings, as a real child process."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.port = int(self.env["MINER_AXON_PORT"])
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 60.0) -> MinerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINER_")}
        env.update(self.env)
        env["PYTHONPATH"] = str(ROOT)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.miner"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            wait_for_port(self.port, wait, self.proc)
        return self

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = stop_process(self.proc, 15)
        self._log.close()
        return code


def miner_env(wallets: Wallets, port: int, **settings: str) -> dict[str, str]:
    env = {
        "MINER_NAME": "test-miner",
        "MINER_NETWORK": "local",
        "MINER_WALLET_PATH": str(wallets.path),
        "MINER_WALLET_NAME": "fleet",
        "MINER_WALLET_HOTKEY": "miner",
        "MINER_AXON_IP": "127.0.0.1",
        "MINER_AXON_PORT": str(port),
        "MINER_ALLOWED_HOTKEYS": f'["{wallets.probe_hotkey}"]',
        "MINER_LOG_LEVEL": "info",
    }
    env.update({f"MINER_{k.upper()}": v for k, v in settings.items()})
    return env


@contextmanager
def running_miner(
    tmp_path: Path, wallets: Wallets, wait: float = 60.0, **settings: str
) -> Iterator[MinerProcess]:
    port = free_port()
    miner = MinerProcess(miner_env(wallets, port, **settings), tmp_path / f"miner-{port}.log")
    try:
        yield miner.start(wait=wait)
    finally:
        miner.stop()


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


@contextmanager
def supervisord(conf: Path, port: int, timeout: float = 60.0) -> Iterator[object]:
    """A real supervisord on ``conf`` (its XML-RPC on 127.0.0.1:``port``); shut down afterwards."""
    import xmlrpc.client

    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "supervisord"), "-c", str(conf)], check=True)
    server = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/RPC2")
    try:
        wait_for_port(port, timeout)
        yield server
    finally:
        try:
            server.supervisor.shutdown()
        except (OSError, xmlrpc.client.Fault):
            pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) != 0:
                    break
            time.sleep(0.1)


def llama_server_binary() -> str:
    """llama.cpp's ``llama-server``: ``$MINERFLEET_LLAMA_SERVER`` (``make test`` sets it), else built once
    and cached by ``scripts/llama-server.sh`` (its last line is the path)."""
    given = os.environ.get("MINERFLEET_LLAMA_SERVER")
    if given:
        return given
    out = subprocess.run(
        ["bash", "scripts/llama-server.sh"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        errors="replace",  # its progress lines quote the build's own output
        timeout=1800,
    )
    return out.stdout.strip().splitlines()[-1]


@contextmanager
def llama_server(
    gguf: Path,
    port: int,
    log_path: Path,
    *,
    slots: int,
    ctx_per_slot: int = 512,
    binary: str | None = None,
    threads: int = 1,
) -> Iterator[str]:
    """A real ``llama-server`` on 127.0.0.1:``port`` (``threads`` threads, one for tests; ``slots``
    parallel slots, metrics on), yielding its OpenAI base URL once the model is loaded (``/health``
    answers 200)."""
    import urllib.request

    args = [
        binary or llama_server_binary(), "--model", str(gguf), "--alias", "gemma", "--host", "127.0.0.1",
        "--port", str(port), "--parallel", str(slots), "--ctx-size", str(slots * ctx_per_slot),
        "--threads", str(threads), *LLAMA_SERVER_FLAGS,  # as the fleet starts its servers
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"llama-server exited with {proc.returncode}; see {log_path}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"llama-server not healthy within 120 s; see {log_path}") from None
                    time.sleep(0.2)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            stop_process(proc, 30)


@contextmanager
def llama_cpp_server(gguf: Path, port: int, log_path: Path, *, n_ctx: int = 2048) -> Iterator[str]:
    """llama-cpp-python's own OpenAI server (``python -m llama_cpp.server``, one request at a time) on
    127.0.0.1:``port``, one thread; yields its base URL once the model answers."""
    with llama_cpp_server_process(gguf, port, log_path, n_ctx=n_ctx):
        yield f"http://127.0.0.1:{port}/v1"


@contextmanager
def llama_cpp_server_process(
    gguf: Path, port: int, log_path: Path, *, n_ctx: int = 2048
) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`llama_cpp_server`, yielding its process (for what measures it) once the model answers."""
    import urllib.request

    args = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "gemma",
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "1",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, 120, proc)
            for _ in range(300):  # the port opens before the model is loaded
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5):
                        break
                except OSError:
                    time.sleep(0.2)
            yield proc
        finally:
            stop_process(proc, 30)
