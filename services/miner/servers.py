"""The miner's HTTP servers: the axon (bittensor's, with the request guard in front) and the HTTP door,
one event loop for both (docs/ARCHITECTURE.md, "Doors")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import uvicorn

from services.miner.chain import external_ip
from services.miner.guard import RequestGuard, guarded_protocol
from services.miner.settings import MinerSettings
from services.miner.signed import Verifier

GRACEFUL_SHUTDOWN = 5  # seconds in-flight responses get to finish when the miner stops
KEEP_ALIVE = 20  # seconds an idle connection stays open (longer than aiohttp's 15 s on the client)


def build_axon(settings: MinerSettings, wallet: Any, metrics: Any = None, external: str | None = None) -> Any:
    """The axon; ``external``: the address announced (else :func:`external_ip`)."""
    # bittensor and the synapses take ~1 s to import: --help and a settings error do not wait for them.
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
    from services.miner.httpdoor import HttpDoor  # imports the synapses, hence bittensor (~1 s)

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
    try:  # httptools is optional: whether it imports is the question asked here
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
