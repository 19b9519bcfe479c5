"""Where a bittensor wallet keeps its keys, and a hotkey's public address: the one place that knows.

    <wallet_path>/<wallet>/coldkeypub.txt          the coldkey's public part (the coldkey is never used)
    <wallet_path>/<wallet>/hotkeys/<hotkey>        the hotkey (unencrypted for a miner)
    <wallet_path>/<wallet>/hotkeys/<hotkey>pub.txt its public part: JSON with ``ss58Address``

Paths here are relative to the wallet folder, so the same layout serves the host, the containers
(``/wallets``) and rendered files.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

HOTKEYS = "hotkeys"
COLDKEYPUB = "coldkeypub.txt"
PUB_SUFFIX = "pub.txt"


class KeyUnreadable(ValueError):
    """A key file that is missing or holds no ``ss58Address``; the message says which and why."""


def hotkey_file(wallet: str, hotkey: str) -> PurePosixPath:
    return PurePosixPath(wallet, HOTKEYS, hotkey)


def hotkey_pub_file(wallet: str, hotkey: str) -> PurePosixPath:
    return PurePosixPath(wallet, HOTKEYS, hotkey + PUB_SUFFIX)


def coldkeypub_file(wallet: str) -> PurePosixPath:
    return PurePosixPath(wallet, COLDKEYPUB)


def pub_of(hotkey_path: Path) -> Path:
    """The ``<hotkey>pub.txt`` beside a hotkey file."""
    return hotkey_path.with_name(hotkey_path.name + PUB_SUFFIX)


def read_ss58(path: Path) -> str:
    """The ss58 address in a key file (a ``pub.txt``, or an unencrypted hotkey: both are JSON)."""
    try:
        data = json.loads(path.expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyUnreadable(f"cannot read {path} ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise KeyUnreadable(f"{path} is not a key file (not JSON)") from exc
    address = data.get("ss58Address") if isinstance(data, dict) else None
    if not isinstance(address, str):
        raise KeyUnreadable(f"{path} has no ss58Address string")
    return address


def read_hotkey_ss58(hotkey_path: Path) -> str:
    """A hotkey's address from the hotkey file, else from its ``pub.txt`` (an encrypted hotkey still
    has its public part readable beside it)."""
    try:
        return read_ss58(hotkey_path)
    except KeyUnreadable as first:
        try:
            return read_ss58(pub_of(hotkey_path))
        except KeyUnreadable:
            raise first from None
