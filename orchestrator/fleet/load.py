"""Load ``config/miners.yaml``: parse with line numbers, validate, resolve every miner, report all errors.

Each error names ``file:line``, the field (``miners[2].streaming_batch_size``), what is wrong and the fix,
and all of them are reported at once, sorted by line. Three passes:

1. YAML (syntax errors, duplicate keys), keeping the line of every key (:mod:`orchestrator.fleet.located`);
2. the pydantic schema (:mod:`orchestrator.fleet`): unknown keys (with "did you mean"), types, ranges;
3. checks across fields, on what passed 2 (:mod:`orchestrator.fleet.checks`): ``defaults`` merged into
   each miner, duplicate names, ports and hotkeys, backends and their models, GPUs and images, and
   (``check_files``) the model and wallet files on disk, with the command that creates a missing hotkey.

Relative paths in the fleet file (``wallet_path``, model paths) are relative to the *project directory*:
the directory ``docker-compose.yml`` is rendered into, by default the current directory.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.fleet import located as yamlsource
from orchestrator.fleet.checks import Checker, Miner, ModelServer, display, looks_like_secret, resolve_path
from orchestrator.fleet.errors import FleetError, FleetInvalid, format_path, translate
from orchestrator.fleet.schema import Fleet, MinerSpec
from services.miner import keys

__all__ = [
    "DEFAULT_FLEET_FILE",
    "FleetError",
    "FleetInvalid",
    "LoadedFleet",
    "Miner",
    "ModelServer",
    "display",
    "format_path",
    "load_fleet",
    "looks_like_secret",
    "resolve_path",
]

DEFAULT_FLEET_FILE = Path("config/miners.yaml")

# --- the loaded fleet ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedFleet:
    """A valid fleet file and everything resolved from it."""

    path: Path
    project_dir: Path
    fleet: Fleet
    miners: tuple[Miner, ...]
    sha256: str  # of the fleet file's bytes: docker-compose.yml records it to detect staleness
    model_servers: tuple[ModelServer, ...] = ()  # `model_servers:` (or the older `model_server:`)

    @property
    def wallet_dir(self) -> Path:
        return resolve_path(self.project_dir, self.fleet.wallet_path)

    def hotkey_file(self, wallet: str, hotkey: str) -> Path:
        return self.wallet_dir / keys.hotkey_file(wallet, hotkey)

    def coldkeypub_file(self, wallet: str) -> Path:
        return self.wallet_dir / keys.coldkeypub_file(wallet)

    def model_file(self, name: str) -> Path:
        return resolve_path(self.project_dir, self.fleet.models[name].relative_path)

    def miner(self, name: str) -> Miner:
        for miner in self.miners:
            if miner.name == name:
                return miner
        known = ", ".join(m.name for m in self.miners)
        raise KeyError(f"no miner named {name!r} in {self.path} (miners: {known})")

    @property
    def display_path(self) -> str:
        """The fleet file relative to the project directory when inside it (for headers)."""
        return display(self.project_dir, self.path)


def hash_file_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- loading ---------------------------------------------------------------------------------------


def load_fleet(
    path: Path = DEFAULT_FLEET_FILE, project_dir: Path | None = None, *, check_files: bool = True
) -> LoadedFleet:
    """Read, validate and resolve the fleet file, or raise :class:`FleetInvalid` with every error.

    ``check_files=False`` skips the checks of files on disk (models, hotkeys): for a process that sees
    the fleet file but not the wallets, such as the orchestrator's container.
    """
    path = Path(path)
    project_dir = Path.cwd() if project_dir is None else Path(project_dir)
    file = str(path)
    raw, doc = _read(path)
    errors = [FleetError(p.line, format_path(p.path), p.problem, p.fix) for p in doc.problems]
    if not isinstance(doc.data, dict):
        errors.append(
            FleetError(
                doc.line_of(()),
                "",
                "the fleet file must be a mapping of settings (network:, miners:, ...)",
                "start from the shipped config/miners.yaml",
            )
        )
        raise FleetInvalid(file, errors)

    yaml_errors = len(errors)
    fleet, indexes = _validate_schema(doc, errors)
    # A value YAML could not read was reported as such; the schema's "got nothing (null)" for the same
    # field would only repeat it.
    unreadable = {e.field for e in errors[:yaml_errors]}
    errors = errors[:yaml_errors] + [e for e in errors[yaml_errors:] if e.field not in unreadable]
    miners: list[Miner] = []
    servers: list[ModelServer] = []
    if fleet is not None:
        checker = Checker(fleet, indexes, doc, project_dir, check_files)
        miners, servers = checker.run()
        errors.extend(checker.errors)
    if errors or fleet is None:
        raise FleetInvalid(file, errors)
    return LoadedFleet(
        path=path,
        project_dir=project_dir,
        fleet=fleet,
        miners=tuple(miners),
        sha256=hash_file_bytes(raw),
        model_servers=tuple(servers),
    )


def _read(path: Path) -> tuple[bytes, yamlsource.LocatedDocument]:
    """The file's bytes and its YAML with lines; a file that cannot be read or parsed is one error."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FleetInvalid(
            file,
            [FleetError(0, "", f"cannot read the fleet file ({exc.strerror})", "pass --config PATH")],
        ) from exc
    try:
        return raw, yamlsource.load(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FleetInvalid(
            file, [FleetError(0, "", "the file is not UTF-8 text", "save it as UTF-8")]
        ) from exc
    except yamlsource.YamlTooLarge as exc:
        raise FleetInvalid(file, [FleetError(exc.line, format_path(exc.path), exc.problem, exc.fix)]) from exc
    except yamlsource.YamlSyntaxError as exc:
        raise FleetInvalid(
            file,
            [
                FleetError(
                    exc.line,
                    "",
                    f"YAML syntax error: {exc.problem}",
                    "check the indentation and quoting on this line and the one before it",
                )
            ],
        ) from exc


def _validate_schema(
    doc: yamlsource.LocatedDocument, errors: list[FleetError]
) -> tuple[Fleet | None, list[int]]:
    """Apply the schema and translate every error.

    So that the checks across fields still run when some miners have schema errors (all errors at
    once), each broken miner is validated again with its offending keys removed; it takes part in the
    later checks if that works and none of its identity keys (name, hotkey, wallet, backend) was bad.
    An error outside ``miners`` stops here: the later checks would only repeat it in other words.
    Returns the fleet (without the miners that could not be repaired) and the file index of each
    miner it kept.
    """
    data: dict[str, Any] = doc.data
    try:
        fleet = Fleet.model_validate(data)
    except ValidationError as exc:
        details = exc.errors()
        errors.extend(translate(err, doc) for err in details)
        miners = data.get("miners")
        if not isinstance(miners, list):
            return None, []
        bad: dict[int, list[tuple[str | int, ...]]] = {}
        for err in details:
            loc = tuple(err["loc"])
            if len(loc) < 2 or loc[0] != "miners" or not isinstance(loc[1], int):
                return None, []
            bad.setdefault(loc[1], []).append(loc[2:])
        kept: list[Any] = []
        indexes: list[int] = []
        for i, raw in enumerate(miners):
            if i in bad:
                raw = _without(raw, bad[i])
                if raw is None:
                    continue
            kept.append(raw)
            indexes.append(i)
        try:
            fleet = Fleet.model_validate({**data, "miners": kept})
        except ValidationError:
            return None, []
        return fleet, indexes
    return fleet, list(range(len(fleet.miners)))


_IDENTITY_KEYS = frozenset({"name", "hotkey", "wallet", "backend"})


def _without(raw: Any, paths: list[tuple[str | int, ...]]) -> dict[str, Any] | None:
    """A copy of a miner's raw mapping without the keys at ``paths``; None if it cannot be repaired."""
    if not isinstance(raw, dict):
        return None
    result = copy.deepcopy(raw)
    for path in paths:
        if not path or path[0] in _IDENTITY_KEYS:
            return None
        node: Any = result
        # Walk down to the parent of the bad key; a bad list item takes its whole list with it.
        for depth, part in enumerate(path):
            last = depth == len(path) - 1 or isinstance(path[depth + 1], int)
            if not isinstance(node, dict) or part not in node:
                break
            if last:
                del node[part]
                break
            node = node[part]
    try:
        MinerSpec.model_validate(result)
    except ValidationError:
        return None
    return result
