"""What the chain says of the fleet's hotkeys: registered or not (uid), and the axon address it holds.

A miner is worth what validators can reach, and they reach the address the chain holds for its hotkey
(``serve_axon``), not 127.0.0.1. ``status`` shows each miner's announced address beside the one its
settings announce, and ``health --announced`` probes every miner at the address the chain holds
(:func:`announced_targets`). On ``network: local`` there is no chain and nothing here is asked.

The chain is read with bittensor's ``Subtensor`` (``neurons_lite``, via the miner's own
:class:`~services.miner.blacklist.SubtensorChain`); tests pass bittensor's ``MockSubtensor``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.errors import OrchestratorError
from orchestrator.fleet.load import LoadedFleet, Miner
from orchestrator.probing.reports import ProbeReport, ProbeTarget, not_announced
from orchestrator.probing.targets import targets
from services.miner.blacklist import Neuron, SubtensorChain
from services.miner.settings import Network

Connect = Callable[[], Any]


def chain_endpoint(loaded: LoadedFleet) -> str:
    """The chain the fleet's miners use: its ``chain_endpoint``, else the network's name."""
    return loaded.fleet.chain_endpoint or loaded.fleet.network.value


def subtensor_for(loaded: LoadedFleet) -> Connect:
    def connect() -> Any:
        import bittensor as bt  # 0.8 s to import: only when the chain is asked

        return bt.Subtensor(network=chain_endpoint(loaded))

    return connect


@dataclass(frozen=True)
class ChainRecord:
    """One miner as the chain holds it."""

    name: str
    hotkey: str
    uid: int | None  # None: the subnet does not list the hotkey (not registered, or deregistered)
    announced: tuple[str, int] | None  # the axon address the chain holds (None: never served)
    expected_ip: str | None  # what the miner's settings announce (None: looked up by the miner)
    expected_port: int

    @property
    def registered(self) -> bool:
        return self.uid is not None

    @property
    def matches(self) -> bool | None:
        """Whether the chain holds what the settings announce (None: the ip is the miner's own lookup,
        so only the port can be compared, and it matches)."""
        if self.announced is None:
            return False
        ip, port = self.announced
        if port != self.expected_port:
            return False
        return None if self.expected_ip is None else ip == self.expected_ip

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hotkey": self.hotkey,
            "registered": self.registered,
            "uid": self.uid,
            "announced": None if self.announced is None else f"{self.announced[0]}:{self.announced[1]}",
            "expected": f"{self.expected_ip or '<looked up>'}:{self.expected_port}",
            "matches": self.matches,
        }


def _record(miner: Miner, hotkey: str, neuron: Neuron | None) -> ChainRecord:
    return ChainRecord(
        name=miner.name,
        hotkey=hotkey,
        uid=None if neuron is None else neuron.uid,
        announced=None if neuron is None else neuron.axon,
        expected_ip=miner.options.axon_external_ip,
        expected_port=miner.axon_external_port or miner.axon_port,
    )


def chain_records(
    loaded: LoadedFleet, hotkeys: dict[str, str], connect: Connect | None = None
) -> list[ChainRecord]:
    """Each miner (name -> ss58 in ``hotkeys``) as the subnet lists it. Raises what the chain raises."""
    endpoint = chain_endpoint(loaded)
    neurons = SubtensorChain(connect or subtensor_for(loaded), loaded.fleet.netuid, endpoint).neurons()
    return [_record(loaded.miner(name), ss58, neurons.get(ss58)) for name, ss58 in hotkeys.items()]


def announced_targets(
    targets: Sequence[ProbeTarget], records: Sequence[ChainRecord]
) -> tuple[list[ProbeTarget], list[ChainRecord]]:
    """The targets moved to the address the chain holds, and the records of miners it holds none for."""
    by_name = {r.name: r for r in records}
    moved, missing = [], []
    for target in targets:
        record = by_name.get(target.name)
        if record is None or record.announced is None:
            if record is not None:
                missing.append(record)
            continue
        host, port = record.announced
        moved.append(replace(target, host=host, port=port))
    return moved, missing


def format_chain(records: Sequence[ChainRecord], loaded: LoadedFleet) -> str:
    """The table ``status`` adds on a chain network."""
    header = ("MINER", "UID", "ANNOUNCED", "SETTINGS", "")
    rows = [header]
    for r in records:
        state = (
            "NOT REGISTERED (deregistered?)"
            if not r.registered
            else "not announced"
            if r.announced is None
            else "ok"
            if r.matches is not False
            else "DIFFERS from the settings"
        )
        shown = r.as_dict()
        rows.append(
            (
                r.name,
                "-" if r.uid is None else str(r.uid),
                shown["announced"] or "-",
                shown["expected"],
                state,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"chain {chain_endpoint(loaded)}, netuid {loaded.fleet.netuid}:"]
    lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    return "\n".join(lines)


def on_chain(loaded: LoadedFleet) -> bool:
    return loaded.fleet.network != Network.local


class ChainUnreachable(OrchestratorError):
    """The chain did not answer (or has no such subnet): said in one line, exit 1."""


def _records(loaded: LoadedFleet, chosen: Sequence[ProbeTarget]) -> list[ChainRecord]:
    try:
        return chain_records(loaded, {t.name: t.hotkey for t in chosen})
    except Exception as exc:  # the chain's own errors: which chain, and why; no traceback
        raise ChainUnreachable(
            f"chain {chain_endpoint(loaded)} unreachable: {type(exc).__name__}: {exc}".rstrip(": ")
        ) from exc


def announced(
    loaded: LoadedFleet, host: str, names: Sequence[str]
) -> tuple[list[ProbeTarget], list[ProbeReport]]:
    """``health --announced``: the miners at the address the chain holds, and an unhealthy row for each
    miner it holds none for."""
    if not on_chain(loaded):
        raise ChainUnreachable("--announced needs a chain: this fleet is on network local")
    chosen = targets(loaded, host, names)
    moved, missing = announced_targets(chosen, _records(loaded, chosen))
    by_name = {t.name: t for t in chosen}
    return moved, [not_announced(by_name[r.name], registered=r.registered) for r in missing]


def status_view(loaded: LoadedFleet) -> tuple[str, Any] | None:
    """On a chain network: (the table, the JSON) of what the chain holds for each miner; else None."""
    if not on_chain(loaded):
        return None
    try:
        records = _records(loaded, targets(loaded, "127.0.0.1"))
    except ChainUnreachable as exc:  # shown in the status, not raised: the rest of it still stands
        return str(exc), {"error": str(exc)}
    return format_chain(records, loaded), [r.as_dict() for r in records]
