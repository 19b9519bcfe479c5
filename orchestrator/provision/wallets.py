"""Create (network ``local``) or check (chain networks) the hotkeys the fleet needs.

On ``network: local`` there is no chain: any key will do, so missing hotkeys (the miners' and the
probe's) are created unencrypted in the fleet's wallet folder, with a coldkey per wallet when it has
none (the coldkey stays on the host; only ``coldkeypub.txt`` and hotkeys are ever mounted into miners).
On ``test``/``finney`` keys are the operator's money and identity: nothing is created, each missing
file is named with the ``btcli`` command that makes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from bittensor_wallet import Wallet

from orchestrator.fleet.load import LoadedFleet, display
from services.miner import keys
from services.miner.settings import Network


@dataclass(frozen=True)
class WalletReport:
    """What ``ensure_wallets`` did or found: lines for the operator, and whether anything is missing."""

    lines: list[str]
    missing: bool


def needed_keys(loaded: LoadedFleet) -> list[tuple[str, str]]:
    """Every (wallet, hotkey) the fleet uses, the probe's first, without repeats, in file order."""
    probe = loaded.fleet.probe
    keys = [(probe.wallet, probe.hotkey)] + [(miner.wallet, miner.hotkey) for miner in loaded.miners]
    return list(dict.fromkeys(keys))


def container_user(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """The uid:gid the containers run as ($MINERFLEET_UID/$MINERFLEET_GID, 1000:1000 by default)."""
    env = os.environ if environ is None else environ
    return int(env.get("MINERFLEET_UID") or 1000), int(env.get("MINERFLEET_GID") or 1000)


def readable_by(path: Path, uid: int, gid: int) -> bool:
    st = path.stat()
    if uid == 0 or st.st_uid == uid:
        return bool(st.st_mode & 0o400)
    if st.st_gid == gid:
        return bool(st.st_mode & 0o040)
    return bool(st.st_mode & 0o004)


def hand_over(loaded: LoadedFleet, user: tuple[int, int], *, give: bool) -> tuple[list[str], bool]:
    """Make the files containers read (hotkeys, their pub.txt, coldkeypub.txt) readable by ``user``.

    With ``give`` (network local, or ``wallets --hand-over`` on a chain), as root, they are given to that
    uid (mode stays 0600: nobody else reads them); a coldkey is never touched. Otherwise nothing is
    changed: each unreadable file is named with the command that fixes it.
    """
    uid, gid = user
    lines: list[str] = []
    problem = False
    files: list[Path] = []
    for wallet, hotkey in needed_keys(loaded):
        hotkey_path = loaded.hotkey_file(wallet, hotkey)
        files += [hotkey_path, keys.pub_of(hotkey_path), loaded.coldkeypub_file(wallet)]
    for path in dict.fromkeys(files):
        if not path.is_file() or readable_by(path, uid, gid):
            continue
        shown = display(loaded.project_dir, path)
        if give and os.geteuid() == 0:
            os.chown(path, uid, gid)
            lines.append(f"owner   {shown} -> {uid}:{gid} (the containers' user)")
        else:
            problem = True
            lines.append(
                f"unreadable for the containers (uid {uid}): {shown}; run `python -m orchestrator wallets "
                f"--hand-over` as root (or `sudo chown {uid}:{gid} {path}`), or set "
                f"MINERFLEET_UID/MINERFLEET_GID to its owner"
            )
    return lines, problem


def _clear_mount_stub(path: Path) -> str | None:
    """Docker creates an empty *directory* where a bind-mounted file is missing (a stack started before
    its keys existed). Remove such a stub so the key can be created; say so."""
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        path.rmdir()
        return f"removed the empty directory docker left at {path} (a key file belongs there)"
    return None


def ensure_wallets(
    loaded: LoadedFleet, user: tuple[int, int] | None = None, *, give: bool = False
) -> WalletReport:
    """Create the missing keys (local) or list them with the commands that create them (chain), then
    make sure the containers' user can read what they mount (``give``: hand them over on a chain too)."""
    root = loaded.wallet_dir
    local = loaded.fleet.network == Network.local
    lines: list[str] = []
    missing = False
    wallets_done: set[str] = set()
    for wallet_name, hotkey in needed_keys(loaded):
        wallet = Wallet(name=wallet_name, hotkey=hotkey, path=str(root))
        hotkey_path = root / keys.hotkey_file(wallet_name, hotkey)
        coldkeypub = root / keys.coldkeypub_file(wallet_name)
        for path in (hotkey_path, keys.pub_of(hotkey_path), coldkeypub):
            cleared = _clear_mount_stub(path)
            if cleared:
                lines.append(cleared)
        if wallet_name not in wallets_done:
            wallets_done.add(wallet_name)
            if not coldkeypub.is_file():
                line, lacking = _coldkey(loaded, wallet, wallet_name, coldkeypub, local)
                lines.append(line)
                missing = missing or lacking
        line, lacking = _hotkey(loaded, wallet, (wallet_name, hotkey), hotkey_path, local)
        lines.append(line)
        missing = missing or lacking
    handed, unreadable = hand_over(loaded, user or container_user(), give=local or give)
    return WalletReport(lines + handed, missing or unreadable)


def _coldkey(
    loaded: LoadedFleet, wallet: Wallet, name: str, coldkeypub: Path, local: bool
) -> tuple[str, bool]:
    """A wallet without its coldkeypub.txt: created (local, no coldkey yet), or what to run; missing?"""
    root, shown = loaded.wallet_dir, display(loaded.project_dir, coldkeypub)
    if local and not (root / name / "coldkey").exists():
        wallet.create_new_coldkey(use_password=False, overwrite=False, suppress=True)
        return (
            f"created coldkey {name} (unencrypted, stays on this host): {wallet.coldkeypub.ss58_address}",
            False,
        )
    if local:
        return (
            f"missing {shown}, but a coldkey exists: run "
            f"`btcli wallet regen_coldkeypub --wallet.name {name} --wallet.path {root}`",
            True,
        )
    return (
        f"missing {shown}: run `btcli wallet new_coldkey "
        f"--wallet.name {name}` (`btcli wallet regen_coldkeypub` for an existing one)",
        True,
    )


def _hotkey(
    loaded: LoadedFleet, wallet: Wallet, key: tuple[str, str], hotkey_path: Path, local: bool
) -> tuple[str, bool]:
    """A hotkey: there, created (local), or what to run to make and register it; missing?"""
    fleet, (wallet_name, hotkey) = loaded.fleet, key
    shown_hotkey = display(loaded.project_dir, hotkey_path)
    if hotkey_path.exists():
        return f"ok      {shown_hotkey}", False
    if local:
        wallet.create_new_hotkey(use_password=False, overwrite=False, suppress=True)
        return f"created {shown_hotkey} (unencrypted): {wallet.hotkey.ss58_address}", False
    made = (
        f"missing {shown_hotkey}: run `btcli wallet new_hotkey --wallet.name {wallet_name} "
        f"--wallet.hotkey {hotkey}`"
    )
    if key == (fleet.probe.wallet, fleet.probe.hotkey):
        return f"{made} (the probe's key signs health checks only: no registration needed)", True
    return (
        f"{made}, then register it on subnet {fleet.netuid} (`btcli subnet register --netuid "
        f"{fleet.netuid} --wallet.name {wallet_name} --wallet.hotkey {hotkey}`)",
        True,
    )


def in_container_view(loaded: LoadedFleet) -> LoadedFleet:
    """Inside the orchestrator container the wallets are mounted elsewhere ($MINERFLEET_WALLET_PATH)."""
    wallet_path = os.environ.get("MINERFLEET_WALLET_PATH")
    if not wallet_path:
        return loaded
    return replace(loaded, fleet=loaded.fleet.model_copy(update={"wallet_path": wallet_path}))
