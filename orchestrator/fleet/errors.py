"""Fleet-file errors: one type for every problem (file:line, field, what, fix), and the translation of
pydantic's validation errors into it ("did you mean" for unknown keys and values, plain words for types)."""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from orchestrator.errors import EXIT_INVALID, PermanentError
from orchestrator.fleet import located as yamlsource
from orchestrator.fleet.schema import Fleet
from services.miner.settings import MAX_STREAMING_BATCH_SIZE


@dataclass(frozen=True, order=True)
class FleetError:
    """One problem in the fleet file: where, which field, what is wrong, how to fix it."""

    line: int
    field: str
    problem: str
    fix: str

    def format(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        subject = f"{self.field}: " if self.field else ""
        return f"{where}: {subject}{self.problem}; fix: {self.fix}"


class FleetInvalid(PermanentError):
    """The fleet file has errors; ``messages()`` gives one line per error, sorted by line."""

    exit_code = EXIT_INVALID

    def __init__(self, file: str, errors: Iterable[FleetError]) -> None:
        self.file = file
        self.errors = sorted(set(errors))
        super().__init__("\n".join(self.messages()))

    def messages(self) -> list[str]:
        return [error.format(self.file) for error in self.errors]


def format_path(path: Sequence[str | int]) -> str:
    """``("miners", 2, "llamacpp", "model")`` -> ``miners[2].llamacpp.model``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_TYPE_WORDS: dict[str, tuple[str, str]] = {
    "int_type": ("a whole number", "write a whole number, e.g. 8091"),
    "int_parsing": ("a whole number", "write a whole number, e.g. 8091"),
    "int_from_float": ("a whole number", "write a whole number, e.g. 8091"),
    "float_type": ("a number", "write a number, e.g. 0.5"),
    "float_parsing": ("a number", "write a number, e.g. 0.5"),
    "bool_type": ("true or false", "write true or false"),
    "bool_parsing": ("true or false", "write true or false"),
    "string_type": ("text", "write text; quote it if YAML reads it as a number or boolean"),
    "list_type": ("a list", "write a list: [a, b], or one `- item` per line"),
    "dict_type": ("a mapping", "write `key: value` lines indented under it"),
    "model_type": ("a mapping", "write `key: value` lines indented under it"),
    "model_attributes_type": ("a mapping", "write `key: value` lines indented under it"),
}

_NOUNS = {
    "backend": "backend",
    "protocols": "protocol",
    "network": "network",
    "image": "image",
    "gguf": "bundled model",
    "log_level": "log level",
    "torch_dtype": "dtype",
}

_MISSING_FIXES = {
    "name": "add `name: <unique name>` (lowercase letters, digits, '-')",
    "hotkey": "add `hotkey: <hotkey name in the wallet>`",
    "miners": "add a `miners:` list with one entry per hotkey",
    "model": "add `model: <a name under models:>`",
}

_PATTERN_HINTS = {
    "name": "use lowercase letters, digits and '-' (it becomes a compose service name)",
    "project": "use lowercase letters, digits and '-'",
    "[key]": "use letters, digits, '.', '_' and '-'",
}


def translate(err: ErrorDetails, doc: yamlsource.LocatedDocument) -> FleetError:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if loc and loc[-1] == "[key]":  # a dict key (a model name) failed its pattern
        loc = loc[:-1]
    name = next((part for part in reversed(loc) if isinstance(part, str)), "")
    secret = "key" in name.lower()  # never echo what might be a credential
    shown = "it" if secret else _show(value)
    problem, fix = _key_problem(kind, loc, name, shown, value, ctx) or _value_problem(
        kind, name, shown, ctx, err
    )
    return FleetError(doc.line_of(loc), format_path(loc), problem, fix)


def _key_problem(
    kind: str, loc: tuple[str | int, ...], name: str, shown: str, value: Any, ctx: dict[str, Any]
) -> tuple[str, str] | None:
    """A key that is unknown or missing, or a value outside a fixed list: (problem, fix), else None."""
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        if close:
            fix = f"did you mean {close[0]!r}?"
        else:
            fix = f"remove it; the keys allowed here are: {', '.join(known)}" if known else "remove it"
        return f"unknown key {loc[-1]!r}", fix
    if kind == "missing":
        return f"required key {name!r} is missing", _MISSING_FIXES.get(name, f"add `{name}:`")
    if kind in ("enum", "literal_error"):
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        noun = _NOUNS.get(name, "value")
        fix = f"use one of: {', '.join(expected)}"
        close = difflib.get_close_matches(str(value), expected, n=1, cutoff=0.5)
        if close:
            fix = f"did you mean {close[0]!r}? ({fix})"
        return f"unknown {noun} {shown}", fix
    return None


_BOUNDS = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("at most", "le"),
}


def _value_problem(
    kind: str, name: str, shown: str, ctx: dict[str, Any], err: ErrorDetails
) -> tuple[str, str]:
    """A value of the wrong type, size, range or shape: (problem, fix)."""
    if kind == "less_than_equal" and name == "streaming_batch_size":
        return (
            f"streaming batch size {shown} is over {MAX_STREAMING_BATCH_SIZE}: validators penalise bigger "
            "chunks",
            f"set streaming_batch_size to {MAX_STREAMING_BATCH_SIZE} or less",
        )
    if kind in _TYPE_WORDS:
        word, fix = _TYPE_WORDS[kind]
        return f"expected {word}, got {shown}", fix
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        return f"{shown} is out of range", f"use a value {words} {ctx.get(key)}"
    if kind == "too_short":
        if name == "miners":
            return "the fleet has no miners", "add at least one miner under `miners:`"
        return "the list is empty", "list at least one item, or remove the key"
    if kind == "string_too_short":
        return "must not be empty", "write a value, or remove the key"
    if kind == "string_pattern_mismatch":
        hint = _PATTERN_HINTS.get(str(err["loc"][-1]), "use letters, digits, '.', '_' and '-' (no '/')")
        return f"{shown} is not a valid name", hint
    if kind == "value_error":
        message = str(ctx.get("error", err["msg"]))
        problem, sep, fix = message.partition("; fix: ")
        if not sep:
            problem, sep, fix = message.rpartition(": ")
            if not sep:
                problem, fix = message, "correct the value"
        return problem, fix
    return f"{err['msg']} (got {shown})", "see config/miners.schema.json"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int) and abs(value) >= 10**_SHOWN_DIGITS:
        return f"a number of {len(str(abs(value))):,} digits"  # one error stays one readable line
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[: _SHOWN_CHARS - 1]}…"


_SHOWN_DIGITS = 20
_SHOWN_CHARS = 80


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _known_keys(path: Sequence[str | int]) -> list[str]:
    """The keys the schema allows at ``path`` (a mapping), for "did you mean"."""
    current: Any = Fleet
    for part in path:
        current = _unwrap(current)
        origin = get_origin(current)
        if isinstance(part, int) and origin in (list, tuple):
            current = get_args(current)[0]
        elif isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            if part not in current.model_fields:
                return []
            current = current.model_fields[part].annotation
        elif origin is dict:
            current = get_args(current)[1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []
