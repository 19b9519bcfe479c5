"""``python -m services.miner``: load settings once, check everything, serve, exit with a meaningful code.

Exit codes (the orchestrator's contract, docs/ARCHITECTURE.md): 0 clean stop on SIGTERM/SIGINT; 75 after a
forward exception when ``stop_on_forward_exception`` is set; 78 for a configuration error (a one-line
message on stderr naming the setting); anything else is a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from services.miner.blacklist import SyncLoop
from services.miner.chain import Announcer, build_gatekeeper, external_ip, first_sync, not_registered
from services.miner.errors import ConfigError, ExitCode, exit_now
from services.miner.guard import RequestGuard, guarded_protocol
from services.miner.settings import MinerSettings, Network, describe_settings, load_settings

log = logging.getLogger("services.miner")

GRACEFUL_SHUTDOWN = 5  # seconds in-flight responses get to finish when the miner stops
KEEP_ALIVE = 20  # seconds an idle connection stays open (longer than aiohttp's 15 s on the client)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.miner",
        description="Run one streaming miner. Settings come from MINER_* environment variables "
        "(nested groups with __, lists as JSON) and/or an env file; the environment wins.",
        epilog="settings:\n" + describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--env-file", type=Path, help="read MINER_* settings from this KEY=value file")
    parser.add_argument(
        "--check", action="store_true", help="validate the settings, wallet and model, then exit (0 or 78)"
    )
    return parser.parse_args(argv)


def configure_logging(settings: MinerSettings) -> None:
    """One plain log format on stderr (what `docker compose logs` shows), bittensor's logs included."""
    import bittensor  # noqa: F401 - bittensor installs its own handlers on import; replace them after

    level = getattr(logging, settings.log_level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s miner={settings.name} %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # bittensor sets every logger that exists when it is imported to CRITICAL; ours among them.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("services") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.NOTSET)
    for name in ("bittensor", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(max(level, logging.WARNING))


def open_wallet(settings: MinerSettings) -> Any:
    """The miner's wallet, with its hotkey loaded. Missing or encrypted hotkeys are config errors."""
    from bittensor_wallet import Wallet

    hotkey_file = settings.hotkey_file
    if not hotkey_file.is_file():
        how = (
            "python -m orchestrator wallets"
            if settings.network is Network.local
            else f"btcli wallet new_hotkey --wallet.name {settings.wallet_name} "
            f"--wallet.hotkey {settings.wallet_hotkey}"
        )
        raise ConfigError(
            f"MINER_WALLET_HOTKEY: hotkey file not found: {hotkey_file} (create it with: {how})"
        )
    wallet = Wallet(
        name=settings.wallet_name, hotkey=settings.wallet_hotkey, path=str(settings.wallet_path.expanduser())
    )
    try:
        if wallet.hotkey_file.is_encrypted():
            raise ConfigError(
                f"MINER_WALLET_HOTKEY: {hotkey_file} is encrypted; a miner needs an unencrypted hotkey"
            )
        _ = wallet.hotkey.ss58_address
    except ConfigError:
        raise
    except Exception as exc:  # bittensor_wallet raises its own KeyFileError and friends
        raise ConfigError(f"MINER_WALLET_HOTKEY: cannot read {hotkey_file}: {exc}") from exc
    return wallet


def read_allowed_hotkey_files(settings: MinerSettings) -> list[str]:
    """The ss58 addresses in ``allowed_hotkey_files`` (bittensor ``<hotkey>pub.txt``: JSON with
    ``ss58Address``). Read once at start-up: the fleet's rendered files name the probe's key by path, so
    they do not depend on which keys a machine has."""
    from services.miner.keys import KeyUnreadable, read_ss58

    addresses = []
    for path in settings.allowed_hotkey_files:
        try:
            addresses.append(read_ss58(path))
        except KeyUnreadable as exc:
            raise ConfigError(
                f"MINER_ALLOWED_HOTKEY_FILES: {exc}; create the key with `python -m orchestrator wallets` "
                "(network local) or btcli, or drop the file from the list"
            ) from exc
    return addresses


def check_port_free(ip: str, port: int, variable: str = "MINER_AXON_PORT") -> None:
    """Fail early, with a clear message, if the axon could not bind (uvicorn would only log it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError as exc:
            raise ConfigError(f"{variable}: cannot bind {ip}:{port}: {exc.strerror}") from exc


def build_axon(settings: MinerSettings, wallet: Any, metrics: Any = None, external: str | None = None) -> Any:
    """The axon; ``external``: the address announced (else :func:`external_ip`)."""
    import bittensor as bt

    from services.miner.protocols import PROTOCOLS

    axon = bt.Axon(
        wallet=wallet,
        ip=settings.axon_ip,
        port=settings.axon_port,
        external_ip=external if external is not None else external_ip(settings),
        external_port=settings.axon_external_port or settings.axon_port,
    )
    # bittensor binds uvicorn to 0.0.0.0 whatever ``ip`` says; honour the setting (127.0.0.1 in tests).
    axon.fast_server.config.host = settings.axon_ip
    axon.fast_server.config.timeout_graceful_shutdown = GRACEFUL_SHUTDOWN
    # Validators' aiohttp clients keep idle connections 15 s; uvicorn closes them after 5 s, so a reused
    # connection can hit a socket the server is closing (seen in the benchmarks). Outlive the client.
    config = axon.fast_server.config
    config.timeout_keep_alive = KEEP_ALIVE
    # Past max_connections uvicorn answers 503 instead of taking more; connections that never send a
    # request are closed after header_timeout, so idle sockets cannot exhaust the file descriptors.
    config.limit_concurrency = settings.max_connections
    config.http = guarded_protocol(
        _uvicorn_http_protocol(), header_timeout=settings.header_timeout, keep_alive=KEEP_ALIVE
    )
    routes = {f"/{PROTOCOLS[name].__name__}": PROTOCOLS[name] for name in settings.protocols}
    on_refused = None
    if metrics is not None:
        protocol_of = {f"/{PROTOCOLS[name].__name__}": name for name in settings.protocols}

        def on_refused(path: str, status: int) -> None:
            metrics.refused(protocol_of.get(path, "other"), None, 0.0, status)

    axon.app.add_middleware(
        RequestGuard, routes=routes, max_body=settings.limits.max_request_bytes, on_refused=on_refused
    )
    return axon


def open_door(settings: MinerSettings, service: Any, hotkey: str, axon: Any) -> Any:
    """The HTTP door (docs/ARCHITECTURE.md, "Doors"): in front of the axon on its port, or a server of
    its own on ``http.port`` (returned, to run beside the axon's on the same event loop). None: no door
    of its own."""
    if not settings.http.auth:
        return None
    import uvicorn

    from services.miner.httpdoor import HttpDoor
    from services.miner.signed import Verifier

    verifier = Verifier(hotkey, tuple(settings.http.auth))
    if settings.http.port is None:
        axon.app.add_middleware(HttpDoor, service=service, verifier=verifier)
        return None
    config = uvicorn.Config(
        HttpDoor(None, service=service, verifier=verifier),
        host=settings.axon_ip,
        port=settings.http.port,
        log_config=None,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        limit_concurrency=settings.max_connections,
        http=guarded_protocol(
            _uvicorn_http_protocol(), header_timeout=settings.header_timeout, keep_alive=KEEP_ALIVE
        ),
    )
    return uvicorn.Server(config)


def run_servers(axon_server: Any, door: Any) -> Callable[[], None]:
    """The axon thread's work: the axon's server, and the HTTP door's beside it on the same event loop
    (one admission gate for both)."""
    if door is None:
        return cast(Callable[[], None], axon_server.run)

    async def both() -> None:
        await asyncio.gather(axon_server.serve(), door.serve())

    return lambda: asyncio.run(both())


def _uvicorn_http_protocol() -> type[Any]:
    """The HTTP protocol class uvicorn would pick itself ("auto": httptools when installed, else h11)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol


def raise_open_files_limit() -> None:
    """Use the hard limit on open files: each validator connection is a descriptor."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard)
            )


def stop_while_starting(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGINT before the axon serves: nothing is in flight, so stop now, cleanly (exit 0).

    Installed first thing in ``main``: as PID 1 (no init) a process ignores signals it has no handler
    for, and under an init the default action would read as a crash (killed by a signal).
    """
    print(
        f"stopping ({signal.Signals(signum).name} while starting), exit code 0", file=sys.stderr, flush=True
    )
    exit_now(ExitCode.OK)


def serve(settings: MinerSettings, connect: Callable[[], Any] | None = None, exit_request: Any = None) -> int:
    """Everything after the settings: checks (exit 78 on failure), then the axon until told to stop.

    ``connect`` makes the chain's Subtensor (default: bittensor's, for the network); ``exit_request``
    stops it from another thread (tests run a miner in-process against bittensor's mock chain).
    """
    from services.miner.backends import make_backend
    from services.miner.metrics import MetricsServer, MinerMetrics
    from services.miner.service import ExitRequest, MinerService, admitted_concurrency

    exit_request = exit_request or ExitRequest()
    wallet = open_wallet(settings)
    extra_allowed = read_allowed_hotkey_files(settings)
    check_port_free(settings.axon_ip, settings.axon_port)
    if settings.metrics_port is not None:
        check_port_free(settings.axon_ip, settings.metrics_port, "MINER_METRICS_PORT")
    if settings.http.auth and settings.http.port is not None:
        check_port_free(settings.axon_ip, settings.http.port, "MINER_HTTP__PORT")
    backend = make_backend(settings)
    admitted_concurrency(settings, backend)  # a setting the backend cannot honour fails before loading
    # The chain's word before the model loads: not registered, or no public address, is exit 78 now.
    gatekeeper, chain = build_gatekeeper(settings, wallet, extra_allowed, connect)
    first_sync(settings, gatekeeper)
    announce_at = external_ip(settings)
    sync_loop = None
    if chain is not None:

        def deregistered() -> None:
            message = not_registered(
                settings, wallet.hotkey.ss58_address, any_more=gatekeeper.seen_registered
            )
            print(f"error: {message}", file=sys.stderr, flush=True)
            exit_request.request(ExitCode.CONFIG, message)

        sync_loop = SyncLoop(gatekeeper, settings.metagraph_sync_interval, on_deregistered=deregistered)
        sync_loop.start()  # retries a chain that did not answer while the model loads
    started = time.monotonic()
    backend.load()
    log.info("backend %s loaded in %.1fs", backend.name, time.monotonic() - started)
    if settings.warmup:
        started = time.monotonic()
        try:
            backend.warmup()
        except Exception as exc:  # a model that cannot generate at all is a broken backend: exit 75
            log.error("warm-up generation failed: %s", exc)
            return ExitCode.FORWARD_EXCEPTION
        log.info("backend %s warmed up in %.1fs", backend.name, time.monotonic() - started)
    metrics = MinerMetrics(settings.name, backend.name)
    # The probe's keys (allowed_hotkey_files) are counted apart from validators (services/miner/ledger.py).
    service = MinerService(settings, backend, gatekeeper, exit_request, metrics=metrics, probes=extra_allowed)
    axon = build_axon(settings, wallet, metrics, announce_at)
    service.attach(axon)
    door = open_door(settings, service, wallet.hotkey.ss58_address, axon)
    metrics_server = None
    if settings.metrics_port is not None:
        metrics_server = MetricsServer(metrics, settings.axon_ip, settings.metrics_port)
        metrics_server.start()
        log.info("metrics on http://%s:%d/metrics", settings.axon_ip, settings.metrics_port)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(
                sig, lambda signum, _frame: exit_request.request(ExitCode.OK, signal.Signals(signum).name)
            )

    server = axon.fast_server
    thread = threading.Thread(target=run_servers(server, door), name="axon", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise ConfigError(
                f"MINER_AXON_PORT: the axon could not start on {settings.axon_ip}:{settings.axon_port}"
            )
        time.sleep(0.01)
    if chain is not None and sync_loop is not None:
        external = (axon.external_ip, axon.external_port)
        sync_loop.on_synced = Announcer(settings, gatekeeper, chain, axon, external)
        sync_loop.poke()  # announce now (or as soon as the chain answers)
    if settings.http.auth:
        log.info(
            "HTTP door (OpenAI chat completions, %s) on %s:%d",
            ",".join(settings.http.auth),
            settings.axon_ip,
            settings.http.port or settings.axon_port,
        )
    log.info(
        "miner %s serving %s on %s:%d (hotkey %s, backend %s, network %s)",
        settings.name,
        ",".join(settings.protocols),
        settings.axon_ip,
        settings.axon_port,
        wallet.hotkey.ss58_address,
        backend.name,
        settings.network.value,
    )

    while not exit_request.wait(timeout=1.0):
        if not thread.is_alive():
            exit_request.request(1, "the axon's server thread died")
    log.info("stopping (%s), exit code %d", exit_request.reason, exit_request.code)
    if sync_loop is not None:
        sync_loop.stop()
    server.should_exit = True
    if door is not None:
        door.should_exit = True
    thread.join(GRACEFUL_SHUTDOWN + 2.0)
    if metrics_server is not None:
        metrics_server.stop()
    return exit_request.code


def main(argv: list[str] | None = None) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop_while_starting)
    args = parse_args(argv)
    raise_open_files_limit()
    try:
        settings = load_settings(env_file=args.env_file)
        configure_logging(settings)
        if args.check:
            open_wallet(settings)
            read_allowed_hotkey_files(settings)
            from services.miner.backends import make_backend

            make_backend(settings).load()
            print(f"ok: {settings.name} ({settings.backend.value}) on port {settings.axon_port}")
            sys.exit(ExitCode.OK)
        code = serve(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.stderr.flush()
        exit_now(ExitCode.CONFIG)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    exit_now(code)
