from __future__ import annotations

import pytest

from tests.helpers import GGUF


@pytest.fixture(scope="session")
def gguf_model() -> str:
    if not GGUF.exists():
        pytest.fail(f"{GGUF} is missing: run `make model` (make test does it)")
    return str(GGUF)
