"""Print the project's requirements from pyproject.toml, one per line, for ``pip install -r``.

The Dockerfile installs the dependencies before the code (so a code change does not reinstall them),
and each image needs a different part of them: the orchestrator has no llama.cpp, the hf image adds
the ``hf`` extra. pyproject.toml stays the one list; this picks from it.

    python requirements.py pyproject.toml [--extra NAME ...] [--exclude NAME ...]

Names are compared normalised (PEP 503), so ``--exclude llama-cpp-python`` drops
``llama-cpp-python==0.3.16`` and ``llama_cpp_python[server]``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib


def _name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise SystemExit(f"requirements.py: cannot parse requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("pyproject")
    parser.add_argument("--extra", action="append", default=[], help="add an optional-dependencies group")
    parser.add_argument("--only-extras", action="store_true", help="leave out the core dependencies")
    parser.add_argument("--exclude", action="append", default=[], help="leave out this distribution")
    args = parser.parse_args()
    with open(args.pyproject, "rb") as file:
        project = tomllib.load(file)["project"]
    requirements: list[str] = [] if args.only_extras else list(project.get("dependencies", []))
    extras = project.get("optional-dependencies", {})
    for extra in args.extra:
        if extra not in extras:
            raise SystemExit(f"requirements.py: no optional-dependencies group {extra!r} in {args.pyproject}")
        requirements += extras[extra]
    excluded = {_name(name) for name in args.exclude}
    for requirement in dict.fromkeys(requirements):
        if _name(requirement) not in excluded:
            print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main())
