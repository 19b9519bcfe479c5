from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Wallets, make_wallets


@pytest.fixture(scope="session")
def wallets(tmp_path_factory: pytest.TempPathFactory) -> Wallets:
    """Real, unencrypted hotkeys in a temporary wallet folder (created offline)."""
    return make_wallets(Path(tmp_path_factory.mktemp("wallets")))
