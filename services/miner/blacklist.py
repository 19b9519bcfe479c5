"""Who may talk to the miner, and in what order. Default deny.

- Always allowed: the hotkeys in ``allowed_hotkeys`` (the fleet's probe hotkey is among them).
- ``network: local``: nobody else; there is no chain to ask.
- On a chain network: hotkeys registered on the subnet, with a validator permit (unless the settings say
  otherwise) and at least ``min_stake``; priority by stake. The metagraph view is re-synced on an
  interval in a background thread, never per request, and a failed sync keeps the last good view.

The chain is a dependency, not a crash: until the first sync succeeds the miner answers every request
(the probe's too) ``503 dependency down: chain <endpoint> unreachable``, and the sync is retried with
backoff (about 1 s, doubling to 30 s), never only after the long interval. A sync that no longer lists
the miner's own hotkey reports it deregistered.

Stake: bittensor 10.5's ``neurons_lite`` ``stake`` is the hotkey's stake *on this subnet*: under dynamic
TAO that is the subnet's alpha (the chain's ``TotalHotkeyAlpha``), though the ``Balance`` prints ``τ``.
``min_stake`` is compared with that number.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Allowed hotkeys outrank every validator: the operator's own probe must never wait behind traffic.
ALLOWED_PRIORITY = float("inf")


@dataclass(frozen=True, slots=True)
class Neuron:
    uid: int
    stake: float
    validator_permit: bool
    axon: tuple[str, int] | None = None  # where the chain says its axon is (None: never served)


class ChainView(Protocol):
    """The slice of the chain the gatekeeper needs: the subnet's registered hotkeys."""

    def neurons(self) -> dict[str, Neuron]: ...


class SubtensorChain:
    """:class:`ChainView` over a bittensor ``Subtensor`` (or bittensor's ``MockSubtensor`` in tests).

    ``connect`` makes the ``Subtensor``; it is called at the first use and again after a failure (a
    chain that refused the connection at start, or dropped it), never in the constructor, so a chain
    that cannot be reached is a failed sync, not a crash.
    """

    def __init__(self, connect: Callable[[], Any], netuid: int, endpoint: str) -> None:
        self._connect = connect
        self.netuid = netuid
        self.endpoint = endpoint
        self.subtensor: Any = None

    def neurons(self) -> dict[str, Neuron]:
        if self.subtensor is None:
            self.subtensor = self._connect()
        try:
            fetched = self._fetch()
        except Exception:
            self.subtensor = None  # connect again next time
            raise
        result: dict[str, Neuron] = {}
        for n in fetched:
            info = getattr(n, "axon_info", None)
            ip, port = str(getattr(info, "ip", "0.0.0.0")), int(getattr(info, "port", 0) or 0)
            result[n.hotkey] = Neuron(
                uid=int(n.uid),
                stake=float(n.stake),
                validator_permit=bool(n.validator_permit),
                axon=(ip, port) if port and ip not in ("0.0.0.0", "0") else None,
            )
        return result

    def _fetch(self) -> list[Any]:
        # neurons_lite: hotkey, uid, stake and permit, without every neuron's weights and bonds.
        try:
            return list(self.subtensor.neurons_lite(netuid=self.netuid))
        except AttributeError:
            # bittensor 10.5's MockSubtensor.neurons_lite reads NeuronInfo fields that no longer exist
            # (rank, trust, pruning_score); neurons() carries the same four fields and works there.
            return list(self.subtensor.neurons(netuid=self.netuid))


class Gatekeeper:
    """Decides blacklist and priority for a request's hotkey from a cached view of the subnet."""

    def __init__(
        self,
        *,
        allowed_hotkeys: Iterable[str],
        chain: ChainView | None,
        require_validator_permit: bool = False,
        min_stake: float = 0.0,
        own_hotkey: str | None = None,
        endpoint: str = "",
    ) -> None:
        self.allowed = frozenset(allowed_hotkeys)
        self.chain = chain
        self.require_validator_permit = require_validator_permit
        self.min_stake = min_stake
        self.own_hotkey = own_hotkey
        self.endpoint = endpoint
        self._view: dict[str, Neuron] = {}
        self.synced = False
        self.seen_registered = False  # a sync has listed this miner's own hotkey
        self.last_error = ""

    def sync(self) -> bool:
        """Refresh the view from the chain. On failure keep the last one and return False."""
        if self.chain is None:
            return True
        try:
            view = self.chain.neurons()
        except Exception as exc:  # any chain/network failure: keep serving with what we know
            self.last_error = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
            log.warning("metagraph sync failed, keeping the last view (%d hotkeys): %s", len(self._view), exc)
            return False
        self._view = view  # one reference swap: readers on the event loop never see a half-built dict
        self.synced = True
        self.last_error = ""
        if self.own_hotkey is not None and self.own_hotkey in view:
            self.seen_registered = True
        log.info("metagraph synced: %d registered hotkeys", len(view))
        return True

    def unavailable(self) -> str | None:
        """Why nobody can be judged yet (no successful sync), for a ``503 dependency down`` answer."""
        if self.chain is None or self.synced:
            return None
        why = f": {self.last_error}" if self.last_error else " (not synced yet)"
        return f"chain {self.endpoint or 'endpoint'} unreachable{why}"

    @property
    def registered(self) -> bool | None:
        """Whether the last successful sync lists this miner's own hotkey (None: not known yet)."""
        if self.chain is None or not self.synced or self.own_hotkey is None:
            return None
        return self.own_hotkey in self._view

    @property
    def own_uid(self) -> int | None:
        """This miner's uid in the last successful sync (None: not listed, or not known yet)."""
        neuron = self._view.get(self.own_hotkey) if self.own_hotkey is not None else None
        return neuron.uid if neuron is not None else None

    def neuron(self, hotkey: str) -> Neuron | None:
        return self._view.get(hotkey)

    def blacklist(self, hotkey: str | None) -> tuple[bool, str]:
        """(refuse?, reason). The reason is sent back to the caller in the 403 answer."""
        if not hotkey:
            return True, "request carries no hotkey"
        if hotkey in self.allowed:
            return False, "allowed hotkey"
        if self.unavailable():
            return False, "not judged: the chain has not answered yet (the request is answered 503)"
        if self.chain is None:
            return True, f"hotkey {hotkey} is not in allowed_hotkeys (network: local has no chain)"
        neuron = self._view.get(hotkey)
        if neuron is None:
            return True, f"hotkey {hotkey} is not registered on the subnet"
        if self.require_validator_permit and not neuron.validator_permit:
            return True, f"hotkey {hotkey} (uid {neuron.uid}) has no validator permit"
        if neuron.stake < self.min_stake:
            return (
                True,
                f"hotkey {hotkey} (uid {neuron.uid}) has stake {neuron.stake:g}"
                f" < min_stake {self.min_stake:g}",
            )
        return False, f"registered uid {neuron.uid}"

    def priority(self, hotkey: str | None) -> float:
        """Higher first: allowed hotkeys, then by stake."""
        if hotkey in self.allowed:
            return ALLOWED_PRIORITY
        neuron = self._view.get(hotkey or "")
        return neuron.stake if neuron else 0.0


RETRY_FIRST = 1.0  # seconds before the first retry of a failed sync; doubling...
RETRY_MAX = 30.0  # ...up to this, never the long interval


class SyncLoop:
    """Re-syncs a :class:`Gatekeeper` in a daemon thread: every ``interval`` seconds while the chain
    answers; after a failure (or before the first success) again after ``RETRY_FIRST`` seconds, doubling
    up to ``RETRY_MAX``. ``on_deregistered`` is called (once) when a sync no longer lists the miner's own
    hotkey.

    Sleeps on an event, not a clock, so :meth:`stop` is immediate.
    """

    def __init__(
        self,
        gatekeeper: Gatekeeper,
        interval: float,
        on_deregistered: Callable[[], None] | None = None,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
    ) -> None:
        self.gatekeeper = gatekeeper
        self.interval = interval
        self.on_deregistered = on_deregistered
        self.on_synced: Callable[[], None] | None = None  # after each successful sync (the announcer)
        self.retry_first = retry_first
        self.retry_max = retry_max
        self._stopping = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metagraph-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """Sync now, not at the next interval (the axon just started: announce it)."""
        self._wake.set()

    def next_wait(self, failures: int) -> float:
        """Seconds until the next sync after ``failures`` failed ones in a row (0: the last one worked)."""
        if failures == 0:
            return self.interval
        return min(self.retry_first * 2 ** (failures - 1), self.retry_max, self.interval)

    def _run(self) -> None:
        failures = 0 if self.gatekeeper.synced else 1
        while True:
            self._wake.wait(self.next_wait(failures))
            self._wake.clear()
            if self._stopping:
                return
            failures = 0 if self.gatekeeper.sync() else failures + 1
            if failures:
                continue
            if self.gatekeeper.registered is False and self.on_deregistered is not None:
                self.on_deregistered()
                return
            if self.on_synced is not None:
                try:
                    self.on_synced()
                except Exception:  # never let it end the loop that keeps the view fresh
                    log.exception("after the metagraph sync")

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
