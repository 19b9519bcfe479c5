"""``python -m services.miner``: load settings once, check everything, serve, exit with a meaningful code.

Exit codes (the orchestrator's contract, docs/ARCHITECTURE.md): 0 clean stop on SIGTERM/SIGINT; 75 after a
forward exception when ``stop_on_forward_exception`` is set; 78 for a configuration error (a one-line
message on stderr naming the setting); anything else is a crash.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bittensor_wallet import Wallet

from services.miner.backends import make_backend
from services.miner.blacklist import SyncLoop
from services.miner.chain import Announcer, build_gatekeeper, external_ip, first_sync, not_registered
from services.miner.errors import ConfigError, ExitCode, exit_now
from services.miner.keys import KeyUnreadable, read_ss58
from services.miner.metrics import MetricsServer, MinerMetrics
from services.miner.servers import GRACEFUL_SHUTDOWN, build_axon, open_door, run_servers
from services.miner.settings import MinerSettings, Network, describe_settings, load_settings

log = logging.getLogger("services.miner")


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
    # bittensor (~1 s) installs its own handlers on import: imported here, so ours replace them after.
    import bittensor  # noqa: F401

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


def raise_open_files_limit() -> None:
    """Use the hard limit on open files: each validator connection is a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard)
            )


# glibc gives each thread that allocates while another holds the lock an arena of its own, up to 8 per
# core, and an arena keeps what it once held. A llama.cpp miner generates in a new thread per answer and
# its sampler takes ~3 MiB (a record per vocabulary entry) per token: over hours the answers land on one
# arena after another and each keeps its 3 MiB. Measured in the shipped solo-1 under the soak: 16 arenas,
# filled one by one, +3.2 MiB a step; with 2, one step of 2.8 MiB at minute 86 of a 2-hour soak,
# probably the second arena's block (docs/ARCHITECTURE.md, "Memory of a miner"). A miner generates at
# most one in-process answer at a time, so one arena leaves a single heap that reuses the sampler's block,
# at the same throughput (bench.arenas: one over two 1.03). The cap only stops new arenas: it must come
# before any thread allocates, and main() sets it first thing.
MALLOC_ARENAS = 1
_M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)


def bound_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (unless ``MALLOC_ARENA_MAX`` is set: the operator's choice stands).

    Call it before threads start. True when the cap is in place; False off glibc (musl, macOS)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = libc().mallopt
    except (OSError, AttributeError):  # no libc by that name, or one without mallopt
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


def libc() -> ctypes.CDLL:
    """The C library this process runs on (raises OSError where there is none by that name)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


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
    # service imports the synapses, hence bittensor (~1 s): --help and a settings error do not wait for it.
    from services.miner.service import ExitRequest, MinerService, admitted_concurrency

    exit_request = exit_request or ExitRequest()
    wallet, extra_allowed = _preflight(settings)
    backend = make_backend(settings)
    admitted_concurrency(settings, backend)  # a setting the backend cannot honour fails before loading
    # The chain's word before the model loads: not registered, or no public address, is exit 78 now.
    gatekeeper, chain = build_gatekeeper(settings, wallet, extra_allowed, connect)
    first_sync(settings, gatekeeper)
    announce_at = external_ip(settings)
    sync_loop = _start_sync(settings, wallet, gatekeeper, exit_request) if chain is not None else None
    if not _load(settings, backend):
        return ExitCode.FORWARD_EXCEPTION
    metrics = MinerMetrics(settings.name, backend.name)
    # The probe's keys (allowed_hotkey_files) are counted apart from validators (services/miner/ledger.py).
    service = MinerService(settings, backend, gatekeeper, exit_request, metrics=metrics, probes=extra_allowed)
    axon = build_axon(settings, wallet, metrics, announce_at)
    service.attach(axon)
    door = open_door(settings, service, wallet.hotkey.ss58_address, axon)
    metrics_server = _start_metrics(settings, metrics)
    _stop_on_signals(exit_request)
    server = axon.fast_server
    thread = _start_axon(settings, server, door)
    if chain is not None and sync_loop is not None:
        external = (axon.external_ip, axon.external_port)
        sync_loop.on_synced = Announcer(settings, gatekeeper, chain, axon, external)
        sync_loop.poke()  # announce now (or as soon as the chain answers)
    _log_serving(settings, wallet, backend)
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


def _preflight(settings: MinerSettings) -> tuple[Any, list[str]]:
    """The wallet and the always-allowed keys, and every port free: each a config error (78) if not."""
    wallet = open_wallet(settings)
    extra_allowed = read_allowed_hotkey_files(settings)
    check_port_free(settings.axon_ip, settings.axon_port)
    if settings.metrics_port is not None:
        check_port_free(settings.axon_ip, settings.metrics_port, "MINER_METRICS_PORT")
    if settings.http.auth and settings.http.port is not None:
        check_port_free(settings.axon_ip, settings.http.port, "MINER_HTTP__PORT")
    return wallet, extra_allowed


def _start_sync(settings: MinerSettings, wallet: Any, gatekeeper: Any, exit_request: Any) -> SyncLoop:
    """The metagraph's re-syncs, in a thread; a deregistered hotkey stops the miner (exit 78)."""

    def deregistered() -> None:
        message = not_registered(settings, wallet.hotkey.ss58_address, any_more=gatekeeper.seen_registered)
        print(f"error: {message}", file=sys.stderr, flush=True)
        exit_request.request(ExitCode.CONFIG, message)

    sync_loop = SyncLoop(gatekeeper, settings.metagraph_sync_interval, on_deregistered=deregistered)
    sync_loop.start()  # retries a chain that did not answer while the model loads
    return sync_loop


def _load(settings: MinerSettings, backend: Any) -> bool:
    """Load the model, then warm it up; False when it cannot generate at all (a broken backend)."""
    started = time.monotonic()
    backend.load()
    log.info("backend %s loaded in %.1fs", backend.name, time.monotonic() - started)
    if settings.warmup:
        started = time.monotonic()
        try:
            backend.warmup()
        except Exception as exc:  # a model that cannot generate at all is a broken backend: exit 75
            log.error("warm-up generation failed: %s", exc)
            return False
        log.info("backend %s warmed up in %.1fs", backend.name, time.monotonic() - started)
    return True


def _start_metrics(settings: MinerSettings, metrics: MinerMetrics) -> MetricsServer | None:
    if settings.metrics_port is None:
        return None
    metrics_server = MetricsServer(metrics, settings.axon_ip, settings.metrics_port)
    metrics_server.start()
    log.info("metrics on http://%s:%d/metrics", settings.axon_ip, settings.metrics_port)
    return metrics_server


def _stop_on_signals(exit_request: Any) -> None:
    """SIGTERM/SIGINT from now on: a clean stop (exit 0) once in-flight answers are done."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(
                sig, lambda signum, _frame: exit_request.request(ExitCode.OK, signal.Signals(signum).name)
            )


def _start_axon(settings: MinerSettings, server: Any, door: Any) -> threading.Thread:
    """The axon's server (and the HTTP door's) in a thread; returns once it serves."""
    thread = threading.Thread(target=run_servers(server, door), name="axon", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise ConfigError(
                f"MINER_AXON_PORT: the axon could not start on {settings.axon_ip}:{settings.axon_port}"
            )
        time.sleep(0.01)
    return thread


def _log_serving(settings: MinerSettings, wallet: Any, backend: Any) -> None:
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


def main(argv: list[str] | None = None) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop_while_starting)
    args = parse_args(argv)
    raise_open_files_limit()
    bound_malloc_arenas()
    try:
        settings = load_settings(env_file=args.env_file)
        configure_logging(settings)
        if args.check:
            open_wallet(settings)
            read_allowed_hotkey_files(settings)
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
