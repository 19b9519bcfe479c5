"""The miner's side of the chain: who it is there, where it is announced, and what it does when the
chain does not answer (docs/ARCHITECTURE.md, "On a chain").

- The chain is a dependency, not a crash: the first sync happens before the model loads; a hotkey the
  subnet does not list exits 78 in seconds with the ``btcli`` command that registers it, while a chain
  that cannot be reached is no exit (the miner loads and answers ``503 dependency down: chain ...``
  until it answers; :class:`~services.miner.blacklist.SyncLoop` retries every 1-30 s).
- The public address announced is the setting, else looked up once before the model loads; a failed
  lookup exits 78 naming ``axon_external_ip``.
- :class:`Announcer` serves the axon on the chain (``serve_axon``), checks the extrinsic's result, retries,
  and compares what the chain then holds with what was meant; after every sync it checks again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as Late
from typing import Any

from services.miner.blacklist import Gatekeeper, SubtensorChain
from services.miner.errors import DEREGISTERED_MARK, ConfigError
from services.miner.settings import MinerSettings, Network

log = logging.getLogger(__name__)

EXTERNAL_IP_TIMEOUT = 30.0  # seconds the public-address lookup may take (its HTTP calls have no timeout)
ANNOUNCE_TRIES = 3  # serve_axon attempts per sync that finds the announcement missing or stale


def build_gatekeeper(
    settings: MinerSettings,
    wallet: Any,
    extra_allowed: list[str] | None = None,
    connect: Callable[[], Any] | None = None,
) -> tuple[Gatekeeper, SubtensorChain | None]:
    """(gatekeeper, chain or None). ``network: local`` touches no chain; on a chain network nothing is
    asked here: the first sync is the caller's (``connect`` makes the Subtensor: a test's mock chain)."""
    allowed = [*settings.allowed_hotkeys, *(extra_allowed or [])]
    if settings.network is Network.local:
        return Gatekeeper(allowed_hotkeys=allowed, chain=None), None

    def subtensor() -> Any:
        import bittensor as bt  # ~1 s to import: paid on a chain network only, where it is needed

        return bt.Subtensor(network=settings.chain)

    chain = SubtensorChain(connect or subtensor, settings.netuid, settings.chain)
    gatekeeper = Gatekeeper(
        allowed_hotkeys=allowed,
        chain=chain,
        require_validator_permit=settings.permit_required,
        min_stake=settings.min_stake,
        own_hotkey=wallet.hotkey.ss58_address,
        endpoint=settings.chain,
    )
    return gatekeeper, chain


def not_registered(settings: MinerSettings, hotkey: str, *, any_more: bool = False) -> str:
    """The exit-78 line for a hotkey the subnet does not list, with the command that registers it."""
    what = f"is no longer registered {DEREGISTERED_MARK}" if any_more else "is not registered"
    return (
        f"MINER_WALLET_HOTKEY: hotkey {hotkey} {what} on netuid {settings.netuid} "
        f"({settings.network.value}); "
        f"register it with: btcli subnet register --netuid {settings.netuid} --wallet.name "
        f"{settings.wallet_name} --wallet.hotkey {settings.wallet_hotkey}"
        + (" --network test" if settings.network is Network.test else "")
    )


def first_sync(settings: MinerSettings, gatekeeper: Gatekeeper) -> None:
    """Before the model loads: the chain's word on this hotkey. Not registered: exit 78 in seconds. An
    unreachable chain is no exit: the miner loads and answers 503 naming the chain until it answers."""
    if gatekeeper.chain is None:
        return
    if not gatekeeper.sync():
        log.warning(
            "chain %s unreachable (%s): starting anyway; every request is answered 503 'dependency down' "
            "until it answers (retried every 1-30 s)",
            settings.chain,
            gatekeeper.last_error,
        )
        return
    if gatekeeper.registered is False:
        raise ConfigError(not_registered(settings, gatekeeper.own_hotkey or "?"))
    neuron = gatekeeper.neuron(gatekeeper.own_hotkey or "")
    log.info("hotkey registered on netuid %d as uid %s", settings.netuid, neuron.uid if neuron else "?")


def external_ip(settings: MinerSettings) -> str | None:
    """The address announced to the chain: the setting, 127.0.0.1 on network local, else looked up once
    (over the internet) before the model loads; a failed lookup is a configuration error naming the
    setting that avoids it."""
    if settings.axon_external_ip is not None:
        return settings.axon_external_ip
    if settings.network is Network.local:
        return "127.0.0.1" if settings.axon_ip == "0.0.0.0" else settings.axon_ip
    from bittensor.utils.networking import get_external_ip  # bittensor (~1 s): only off network local

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return str(pool.submit(get_external_ip).result(timeout=EXTERNAL_IP_TIMEOUT))
    except Late:
        problem = f"no answer within {EXTERNAL_IP_TIMEOUT:g}s"
    except Exception as exc:  # bittensor's ExternalIPNotFound, or the lookup's own network errors
        problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
    finally:
        pool.shutdown(wait=False)
    raise ConfigError(
        f"MINER_AXON_EXTERNAL_IP: not set, and looking up this host's public address failed ({problem}); "
        "set axon_external_ip to the address validators reach this miner at"
    )


class Announcer:
    """Keeps this miner announced on the chain at ``external``: after each successful sync, if the chain's
    record of the hotkey's axon is not that address, ``serve_axon`` (result checked, ``ANNOUNCE_TRIES``
    tries). ``state`` says where things stand, for the logs and the miner's metrics."""

    def __init__(
        self,
        settings: MinerSettings,
        gatekeeper: Gatekeeper,
        chain: SubtensorChain,
        axon: Any,
        external: tuple[str, int],
        serve: Callable[[Any, Any, int], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.gatekeeper = gatekeeper
        self.chain = chain
        self.axon = axon
        self.external = external
        self._serve = serve or (
            lambda subtensor, axon, netuid: subtensor.serve_axon(netuid=netuid, axon=axon)
        )
        self.state = "not announced yet"

    def announced(self) -> tuple[str, int] | None:
        neuron = self.gatekeeper.neuron(self.gatekeeper.own_hotkey or "")
        return neuron.axon if neuron is not None else None

    def __call__(self) -> None:
        held = self.announced()
        if held == self.external:
            if self.state != "announced":
                log.info("the chain holds this miner's axon at %s:%d, as set", *self.external)
            self.state = "announced"
            return
        if held is not None:
            log.warning(
                "the chain holds %s:%d for this hotkey, not %s:%d: announcing again", *held, *self.external
            )
        for attempt in range(1, ANNOUNCE_TRIES + 1):
            try:
                result = self._serve(self.chain.subtensor, self.axon, self.settings.netuid)
                # bittensor 10.5 answers an ExtrinsicResponse (always truthy: read .success); older a bool.
                ok, why = bool(getattr(result, "success", result)), str(getattr(result, "message", "") or "")
            except Exception as exc:  # the chain dropped mid-call: the next sync tries again
                ok, why = False, f"{type(exc).__name__}: {exc}"
            if ok:
                log.info("announced the axon at %s:%d on netuid %d", *self.external, self.settings.netuid)
                self.state = "announced (the next sync checks the chain's record)"
                return
            log.warning("serve_axon failed (try %d/%d): %s", attempt, ANNOUNCE_TRIES, why)
        self.state = f"not announced: serve_axon failed {ANNOUNCE_TRIES} times"
        log.error(
            "could not announce the axon at %s:%d on netuid %d: validators cannot find this miner; "
            "trying again after the next sync",
            *self.external,
            self.settings.netuid,
        )
