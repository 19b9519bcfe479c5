"""What a probe needs from the fleet file: one target per miner, and the probe's own signing wallet."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bittensor_wallet import Wallet

from orchestrator.errors import PermanentError
from orchestrator.fleet.load import LoadedFleet
from orchestrator.probing.reports import ProbeTarget
from orchestrator.render import RenderError, read_ss58


class HealthError(PermanentError):
    """Something the probe needs is missing (its hotkey, a miner's hotkey file)."""


def probe_wallet(loaded: LoadedFleet) -> Any:
    """The probe's wallet with its (unencrypted) hotkey, which signs every probe request."""
    probe = loaded.fleet.probe
    path = loaded.hotkey_file(probe.wallet, probe.hotkey)
    if not path.is_file():
        raise HealthError(
            f"the probe hotkey {path} does not exist: run `python -m orchestrator wallets` (network local) "
            f"or point probe.wallet/probe.hotkey at an existing unencrypted hotkey"
        )
    return Wallet(name=probe.wallet, hotkey=probe.hotkey, path=str(loaded.wallet_dir))


def targets(loaded: LoadedFleet, host: str, names: Sequence[str] = ()) -> list[ProbeTarget]:
    """One target per miner (every route it serves is probed), optionally only the named ones."""
    chosen = [loaded.miner(name) for name in names] if names else list(loaded.miners)
    result = []
    for miner in chosen:
        try:
            # the public <hotkey>pub.txt is enough (all the orchestrator container has of a miner's key)
            ss58 = read_ss58(loaded.hotkey_file(miner.wallet, miner.hotkey))
        except RenderError as exc:  # it says which file and why
            raise HealthError(str(exc)) from exc
        result.append(
            ProbeTarget(
                name=miner.name,
                hotkey=ss58,
                host=host,
                port=miner.axon_port,
                backend=miner.backend.value,
                protocol=miner.protocols[0],
                protocols=tuple(miner.protocols),
                http_auth=miner.http_auth,
                http_port=miner.http_port,
            )
        )
    return result
