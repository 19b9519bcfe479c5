"""Where the validators benchmark finds llama.cpp's ``llama-server`` binary (or why it has none)."""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path

from bench._common import ROOT, progress


def find_llama_server(quick: bool) -> tuple[str | None, str]:
    """The llama-server binary and where it came from, or None and why not.

    ``scripts/llama-server.sh`` prints it (building it once, ~7 min on 2 cores); a quick run never
    builds, it only takes an already built one from the cache."""
    explicit = os.environ.get("MINERFLEET_LLAMA_SERVER")
    if explicit and os.access(explicit, os.X_OK):
        return explicit, "$MINERFLEET_LLAMA_SERVER"
    if explicit:
        return None, f"MINERFLEET_LLAMA_SERVER={explicit} is not an executable file"
    script = ROOT / "scripts" / "llama-server.sh"
    if script.exists() and not quick:
        progress("validators: bash scripts/llama-server.sh (builds llama-server once, then cached)")
        proc = subprocess.run(["bash", str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines and os.access(lines[-1], os.X_OK):
            return lines[-1], "scripts/llama-server.sh"
    cache = Path(os.environ.get("MINERFLEET_CACHE", "~/.cache/minerfleet")).expanduser()
    built = sorted(glob.glob(str(cache / "llama-server" / "*-cpu-*" / "llama-server")), key=os.path.getmtime)
    if built:
        return built[-1], f"the newest cached build under {cache}/llama-server"
    if not script.exists():
        return None, "scripts/llama-server.sh does not exist yet and no llama-server build is cached"
    if quick:
        return (
            None,
            "no llama-server build is cached (a quick run does not build; run scripts/llama-server.sh)",
        )
    return None, "scripts/llama-server.sh did not print a runnable binary (its messages are above)"
