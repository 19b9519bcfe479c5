"""``watch`` and ``status``: build the watch loop from the fleet file, run it with its status API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.errors import TemporaryError
from orchestrator.fleet.load import LoadedFleet, hash_file_bytes
from orchestrator.probing.modelservers import ServerChecker, server_targets
from orchestrator.probing.probe import Prober
from orchestrator.probing.targets import probe_wallet, targets
from orchestrator.provision.wallets import in_container_view
from orchestrator.runtimes.base import Runtime, RuntimeFailure
from orchestrator.runtimes.registry import RUNTIMES, runtime_spec
from orchestrator.status.app import make_app
from orchestrator.status.fleetstatus import FleetStatus, Role, UnitStatus, Where
from orchestrator.status.metrics import FleetMetrics
from orchestrator.status.unitmetrics import UnitEndpoint, UnitScraper
from orchestrator.watch.loop import Watcher
from orchestrator.watch.placed import AtNode, with_nodes
from orchestrator.watch.statefile import StateFile

log = logging.getLogger("orchestrator")
SCRAPE_INTERVAL = 10.0  # seconds between reads of the units' own /metrics (the status page's figures)


class WatchError(TemporaryError):
    """The watch cannot start (no runtime answers, the status port is taken) or cannot be reached."""


def make_runtime(loaded: LoadedFleet, kind: str) -> Runtime:
    return runtime_spec(kind).runtime(loaded)


def make_watcher(
    loaded: LoadedFleet, runtime: Runtime, probe_host: str | None, state_file: Path | None = None
) -> tuple[Watcher, Prober]:
    probe = loaded.fleet.probe
    prober = Prober(probe_wallet(loaded), probe.prompt, probe.timeout, probe.max_concurrency)
    spec = RUNTIMES.get(runtime.name)
    # Inside the compose network every miner and model server is reachable by its service name.
    by_service = spec is not None and spec.probes_by_service and probe_host is None
    watched = []
    for target in targets(loaded, probe_host or "127.0.0.1"):
        if by_service:
            target = replace(target, host=target.name)
        watched.append((target, loaded.miner(target.name).restart))
    servers = [
        (server, loaded.fleet.restart)
        for server in server_targets(loaded, None if by_service else probe_host or "127.0.0.1")
    ]
    probing: Any = prober
    checker: Any = ServerChecker()
    if spec is not None and spec.locator is not None and probe_host is None:
        # Each miner and model server at its node's address, wherever its task runs now.
        locate = spec.locator(runtime, loaded)
        probing, checker = AtNode(prober, locate), AtNode(checker, locate)
    watcher = Watcher(
        watched,
        runtime,
        probing,
        probe.interval,
        servers=servers,
        checker=checker,
        state=None if state_file is None else StateFile(state_file),
        fleet_check=fleet_file_check(loaded),
        dependents={server.service: server.users for server in loaded.model_servers},
    )
    watcher.metrics = FleetMetrics(watcher.snapshot)
    return watcher, prober


def fleet_file_check(loaded: LoadedFleet) -> Callable[[], str | None]:
    """Whether the fleet file differs from the one loaded (None: the same, or unreadable for now)."""

    def changed() -> str | None:
        try:
            digest = hash_file_bytes(loaded.path.read_bytes())
        except OSError:
            return None
        if digest == loaded.sha256:
            return None
        was = loaded.sha256[:12]
        return f"{loaded.display_path} changed since this watch loaded it (sha256 {digest[:12]}, was {was})"

    return changed


def make_scraper(loaded: LoadedFleet, watcher: Watcher) -> UnitScraper:
    """Every unit's own /metrics, reached where the watch reaches the unit (its service name on the
    compose network, else the probe's host)."""
    endpoints = []
    for watched in watcher.miners.values():
        metrics_port = loaded.miner(watched.target.name).metrics_port
        if metrics_port is not None:
            endpoints.append(UnitEndpoint(watched.target.name, Role.miner, watched.target.host, metrics_port))
    for watched in watcher.servers.values():
        target = watched.target
        endpoints.append(UnitEndpoint(target.name, Role.model_server, target.host, target.port))
    interval = min(SCRAPE_INTERVAL, loaded.fleet.probe.interval)
    return UnitScraper(endpoints, interval, watcher.metrics)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # bittensor (imported for the probe's dendrite) silences loggers that exist at its import.
    for name in ("orchestrator", "orchestrator.watch", "orchestrator.state"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    for noisy in ("bittensor", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise WatchError(
                f"the status API cannot bind {host}:{port} ({exc.strerror}): is another watch running? "
                "(change status_api.port in the fleet file otherwise)"
            ) from exc


def _server_class() -> type[Any]:
    import uvicorn  # 73 ms to import: only the watch serves (`status` reads through this module)

    class Server(uvicorn.Server):
        """uvicorn without its own signal handling: SIGTERM stops the whole watch, API included."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server


async def serve_watch(
    loaded: LoadedFleet,
    runtime_kind: str,
    status_host: str,
    probe_host: str | None,
    state_file: Path | None = None,
) -> int:
    runtime = make_runtime(loaded, runtime_kind)
    watcher, prober = make_watcher(loaded, runtime, probe_host, state_file)
    try:
        await runtime.inspect([])
    except RuntimeFailure as exc:
        raise WatchError(f"the {runtime.name} runtime does not answer: {exc}") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = loaded.fleet.status_api.port
    _check_port_free(status_host, port)
    import uvicorn  # 73 ms: only the watch serves

    snapshot = watcher.snapshot
    spec = RUNTIMES.get(runtime.name)
    if spec is not None and spec.locator is not None:
        snapshot = with_nodes(watcher.snapshot, spec.locator(runtime, loaded))
    scraper = make_scraper(loaded, watcher)
    app = make_app(snapshot, watcher.metrics, scraper)
    config = uvicorn.Config(app, host=status_host, port=port, log_level="warning")
    server = _server_class()(config)
    api = asyncio.create_task(server.serve(), name="status-api")
    scraping = asyncio.create_task(scraper.run(stop), name="scrape")
    log.info(
        "watching %d miners and %d model servers with the %s runtime; status API on http://%s:%d; "
        "state in %s",
        len(watcher.miners), len(watcher.servers), runtime.name, status_host, port, state_file,
    )  # fmt: skip
    try:
        watch = asyncio.create_task(watcher.run(stop), name="watch")
        done, _ = await asyncio.wait({watch, api}, return_when=asyncio.FIRST_COMPLETED)
        if api in done and not stop.is_set():
            stop.set()
            await watch
            raise WatchError(f"the status API could not serve on {status_host}:{port} (port in use?)")
        await watch
    finally:
        server.should_exit = True
        stop.set()
        await asyncio.gather(api, scraping, return_exceptions=True)
        await prober.aclose()
        await runtime.aclose()
    log.info("watch stopped; miners left as they are")
    return 0


def run_watch(
    loaded: LoadedFleet, runtime: str, status_host: str, probe_host: str | None, state_file: Path | None
) -> int:
    configure_logging()
    return asyncio.run(serve_watch(in_container_view(loaded), runtime, status_host, probe_host, state_file))


def fetch_status(url: str, timeout: float = 5.0) -> FleetStatus:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/status", timeout=timeout) as response:
            body = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise WatchError(
            f"no watch loop answers at {url} ({exc}): "
            "start it with `make up` or `python -m orchestrator watch`"
        ) from exc
    try:
        return FleetStatus.from_json(json.loads(body))
    except (KeyError, TypeError, ValueError) as exc:  # another service on that port, or another version
        raise WatchError(f"{url}/status did not answer a minerfleet status: {exc!r}") from exc


def format_status(status: FleetStatus) -> str:
    header: tuple[str, ...] = (
        "MINER",
        "BACKEND",
        "PORT",
        "STATE",
        "RESTARTS",
        "LAST PROBE",
        "TTFC",
        "REASON",
    )
    if status.placed:  # the swarm runtime: where each one runs
        header = ("MINER", "BACKEND", "NODE", "PORT", *header[3:])
    rows = [header]

    def row(unit: UnitStatus, kind: str, verdict: str, ttfc: float | None) -> tuple[str, ...]:
        where = unit.where or Where(None, None)
        at = (f"{where.node or '-'} ({where.address or '-'})",) if status.placed else ()
        return (
            unit.name,
            kind,
            *at,
            str(unit.port),
            unit.state.value,
            str(unit.restarts),
            verdict,
            "-" if ttfc is None else f"{ttfc:.2f}s",
            unit.why,
        )

    for m in status.miners:
        p = m.last_probe
        rows.append(
            row(m, m.backend, "-" if p is None else p.verdict, None if p is None else p.first_chunk_after)
        )
    for server in status.model_servers:
        check = server.last_check
        rows.append(row(server, "model-server", "-" if check is None else check.verdict, None))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join([*(c.ljust(widths[i]) for i, c in enumerate(r[:-1])), r[-1]]).rstrip() for r in rows]
    summary = f"{sum(m.running for m in status.miners)}/{len(status.miners)} running"
    if status.model_servers:
        up = sum(s.running for s in status.model_servers)
        summary += f", model servers {up}/{len(status.model_servers)} running"
    lines.append(f"{summary} (runtime: {status.runtime})")
    if status.fleet_changed:
        lines.append(f"held: {status.fleet_changed}; no restarts until the watch runs on it")
    return "\n".join(lines)
