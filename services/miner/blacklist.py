"""Who may talk to the miner, and in what order. Default deny.

- Always allowed: the hotkeys in ``allowed_hotkeys`` (the fleet's probe hotkey is among them).
- ``network: local``: nobody else; there is no chain to ask.
- On a chain network: hotkeys registered on the subnet, optionally only those with a validator permit
  and at least ``min_stake``; priority by stake. The metagraph view is re-synced on an interval in a
  background thread, never per request, and a failed sync keeps the last good view.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
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


class ChainView(Protocol):
    """The slice of the chain the gatekeeper needs: the subnet's registered hotkeys."""

    def neurons(self) -> dict[str, Neuron]: ...


class SubtensorChain:
    """:class:`ChainView` over a bittensor ``Subtensor`` (or bittensor's ``MockSubtensor`` in tests)."""

    def __init__(self, subtensor: Any, netuid: int) -> None:
        self.subtensor = subtensor
        self.netuid = netuid

    def neurons(self) -> dict[str, Neuron]:
        result: dict[str, Neuron] = {}
        for n in self._fetch():
            result[n.hotkey] = Neuron(
                uid=int(n.uid), stake=float(n.stake), validator_permit=bool(n.validator_permit)
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
    ) -> None:
        self.allowed = frozenset(allowed_hotkeys)
        self.chain = chain
        self.require_validator_permit = require_validator_permit
        self.min_stake = min_stake
        self._view: dict[str, Neuron] = {}
        self.synced = False

    def sync(self) -> bool:
        """Refresh the view from the chain. On failure keep the last one and return False."""
        if self.chain is None:
            return True
        try:
            view = self.chain.neurons()
        except Exception as exc:  # any chain/network failure: keep serving with what we know
            log.warning("metagraph sync failed, keeping the last view (%d hotkeys): %s", len(self._view), exc)
            return False
        self._view = view  # one reference swap: readers on the event loop never see a half-built dict
        self.synced = True
        log.info("metagraph synced: %d registered hotkeys", len(view))
        return True

    def blacklist(self, hotkey: str | None) -> tuple[bool, str]:
        """(refuse?, reason). The reason is sent back to the caller in the 403 answer."""
        if not hotkey:
            return True, "request carries no hotkey"
        if hotkey in self.allowed:
            return False, "allowed hotkey"
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


class SyncLoop:
    """Re-syncs a :class:`Gatekeeper` every ``interval`` seconds in a daemon thread.

    Sleeps on an event, not a clock, so :meth:`stop` is immediate.
    """

    def __init__(self, gatekeeper: Gatekeeper, interval: float) -> None:
        self.gatekeeper = gatekeeper
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metagraph-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.gatekeeper.sync()

    def stop(self) -> None:
        self._stop.set()
