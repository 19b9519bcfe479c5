"""Projects for the fleet file, for tests and benchmarks: a temp project directory with a fleet file,
deterministic wallets (keys derived from fixed URIs, so rendered addresses never change) and a stand-in
model file."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_FLEET = ROOT / "config" / "miners.yaml"
BUNDLED_MODEL = Path("models/gemma-3-270m-q4_k_m.gguf")


def make_key(wallet_dir: Path, wallet: str, hotkey: str) -> str:
    """An unencrypted hotkey derived from ``//wallet/hotkey`` (and the wallet's coldkeypub); its ss58."""
    from bittensor_wallet import Wallet

    w = Wallet(name=wallet, hotkey=hotkey, path=str(wallet_dir))
    if not (wallet_dir / wallet / "coldkeypub.txt").exists():
        w.create_coldkey_from_uri(f"//{wallet}", use_password=False, overwrite=True, suppress=True)
    w.create_hotkey_from_uri(f"//{wallet}/{hotkey}", use_password=False, overwrite=True, suppress=True)
    return str(w.hotkey.ss58_address)


def fleet_keys(text: str) -> list[tuple[str, str]]:
    """The (wallet, hotkey) pairs a fleet file uses, the probe's first."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    if not isinstance(data, dict):
        return []
    probe = data.get("probe") or {}
    keys = [(probe.get("wallet", "probe"), probe.get("hotkey", "default"))]
    default_wallet = (data.get("defaults") or {}).get("wallet")
    for miner in data.get("miners") or []:
        wallet = miner.get("wallet", default_wallet)
        if wallet and miner.get("hotkey"):
            keys.append((wallet, miner["hotkey"]))
    return list(dict.fromkeys(keys))


def make_project(root: Path, fleet: str, *, keys: bool = True, model: bool = True) -> Path:
    """Write ``config/miners.yaml`` under ``root`` (dedented), with its wallets and the bundled model
    file (an empty stand-in: validation and render only need it to exist). Returns the fleet path."""
    text = textwrap.dedent(fleet).lstrip("\n")
    path = root / "config" / "miners.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if keys:
        for wallet, hotkey in fleet_keys(text):
            make_key(root / "wallets", wallet, hotkey)  # the test fleets say `wallet_path: ./wallets`
    if model:
        (root / BUNDLED_MODEL).parent.mkdir(parents=True, exist_ok=True)
        (root / BUNDLED_MODEL).touch()
    return path


def shipped_project(root: Path) -> Path:
    """A project with the shipped config/miners.yaml, byte for byte."""
    path = make_project(root, SHIPPED_FLEET.read_text(encoding="utf-8"))
    shutil.copyfile(SHIPPED_FLEET, path)  # the header's sha256 is of these exact bytes
    return path
