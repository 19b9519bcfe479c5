"""bittensor 10.5's own in-memory chain (``MockSubtensor``), with the four calls it gets wrong mended.

Used by the tests (and for trying the chain path by hand): a real ``MockSubtensor``, with its real
neuron types and storage, on which a miner registers, announces its axon and is looked up. bittensor
10.5's mock cannot do three of these as shipped (checked against the installed 10.5.0):

- ``is_hotkey_registered(hotkey, netuid)`` asks the patched substrate and is always true, and
  ``get_neuron_for_pubkey_and_subnet`` finds no uid (a MagicMock): both read the mock's own ``Uids`` here;
- ``neurons_lite`` builds ``NeuronInfo`` with fields 10.5 removed (rank, trust, pruning_score) and
  raises: the lite neuron is made from the full one's fields here;
- ``serve_axon`` always fails (the uid lookup above): it writes the mock's ``Axons`` storage here, as
  the chain's ``serve_axon`` extrinsic does, and answers an ``ExtrinsicResponse``.

The chain is one module-global state shared by every instance (``MockSubtensor.reset()`` clears it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bittensor.core.chain_data import NeuronInfo, NeuronInfoLite
from bittensor.core.types import ExtrinsicResponse
from bittensor.utils import networking
from bittensor.utils.balance import Balance
from bittensor.utils.mock import MockSubtensor


class MockChain(MockSubtensor):
    """``MockSubtensor`` with registration lookups, ``neurons_lite`` and ``serve_axon`` that work."""

    def _module(self) -> Any:
        return self.chain_state["SubtensorModule"]

    def get_uid_for_hotkey_on_subnet(self, hotkey_ss58: str, netuid: int, block: int | None = None) -> Any:
        uids = self._module()["Uids"].get(netuid, {})
        return self._get_most_recent_storage(uids[hotkey_ss58], block) if hotkey_ss58 in uids else None

    def is_hotkey_registered(
        self, hotkey_ss58: str, netuid: int | None = None, block: int | None = None
    ) -> bool:
        if netuid is None:
            return any(self.get_uid_for_hotkey_on_subnet(hotkey_ss58, n) is not None for n in self._netuids())
        return self.get_uid_for_hotkey_on_subnet(hotkey_ss58, netuid, block) is not None

    def _netuids(self) -> list[int]:
        return list(self._module()["Uids"])

    def get_neuron_for_pubkey_and_subnet(
        self, hotkey_ss58: str, netuid: int, block: int | None = None
    ) -> Any:
        uid = self.get_uid_for_hotkey_on_subnet(hotkey_ss58, netuid, block)
        return NeuronInfo.get_null_neuron() if uid is None else self.neuron_for_uid(uid, netuid, block)

    def neuron_for_uid_lite(self, uid: int, netuid: int, block: int | None = None) -> Any:
        full = self.neuron_for_uid(uid, netuid, block)
        if full is None:
            return None
        names = {f.name for f in dataclasses.fields(NeuronInfoLite)}
        return NeuronInfoLite(**{k: v for k, v in vars(full).items() if k in names})

    def serve_axon(self, netuid: int, axon: Any, certificate: Any = None, **_: Any) -> ExtrinsicResponse:
        hotkey = axon.wallet.hotkey.ss58_address
        if self.get_uid_for_hotkey_on_subnet(hotkey, netuid) is None:
            return ExtrinsicResponse(False, "HotKeyNotRegisteredInSubNet")
        self._module()["Axons"][netuid][hotkey][self.block_number] = {
            "block": self.block_number,
            "version": 1,
            "ip": networking.ip_to_int(axon.external_ip),
            "port": axon.external_port,
            "ip_type": networking.ip_version(axon.external_ip),
            "protocol": 4,
            "placeholder1": 0,
            "placeholder2": 0,
        }
        return ExtrinsicResponse(True, "ok")

    # --- what a test sets up -------------------------------------------------------------------------

    def add_neuron(
        self, netuid: int, hotkey: str, coldkey: str, stake_tao: float = 0.0, permit: bool = False
    ) -> int:
        """Register ``hotkey`` with ``stake_tao`` of stake and, if ``permit``, a validator permit; its uid."""
        uid = int(self.force_register_neuron(netuid, hotkey, coldkey, stake=Balance.from_tao(stake_tao)))
        if permit:
            self._module()["ValidatorPermit"][netuid][uid][self.block_number] = True
        return uid

    def deregister(self, netuid: int, hotkey: str, replaced_by: str, coldkey: str) -> None:
        """A new registration (``replaced_by``, owned by ``coldkey``) takes ``hotkey``'s uid, as the chain
        prunes a neuron to make room."""
        module = self._module()
        uid = self._get_most_recent_storage(module["Uids"][netuid].pop(hotkey))
        module["Keys"][netuid][uid][self.block_number] = replaced_by
        module["Uids"][netuid][replaced_by] = {self.block_number: uid}
        module["Owner"].setdefault(replaced_by, {})[self.block_number] = coldkey
        module["Stake"].setdefault(replaced_by, {}).setdefault(coldkey, {})[self.block_number] = 0


def fresh_chain(*netuids: int) -> MockChain:
    """A new, empty mock chain (the shared state reset) with these subnets."""
    MockSubtensor.reset()
    chain = MockChain()
    for netuid in netuids:
        chain.create_subnet(netuid)
    return chain
