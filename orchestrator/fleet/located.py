"""YAML that remembers where each value came from.

PyYAML's ``safe_load`` throws the line numbers away. Here the document is *composed* into nodes (which
carry their marks) and turned into plain Python values by hand, recording the line of every mapping key
and sequence item under its path, e.g. ``("miners", 2, "streaming_batch_size") -> 41``. Validation
errors can then name ``file:line`` for any field pydantic complains about.

Duplicate keys (which ``safe_load`` silently resolves to the last one) are reported, not hidden.

A document is bounded before anything is built from it: aliases are counted as what they expand to
(a few kilobytes of nested aliases, a "billion laughs", would otherwise expand to gigabytes), nesting
has a depth limit, and a value Python cannot read (an integer of thousands of digits) is a problem
with its line, not a traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from orchestrator.errors import EXIT_INVALID, PermanentError

PathPart = str | int
Path = tuple[PathPart, ...]

MAX_NODES = 100_000
"""The most values (scalars, lists, mappings) a document may hold once every alias is expanded. A fleet
of a thousand miners stays far below; an alias bomb crosses it long before it costs memory."""
MAX_DEPTH = 64
"""The deepest nesting of lists and mappings a document may have (a fleet file needs about six)."""


@dataclass(frozen=True)
class YamlProblem:
    """Something wrong with the document itself (before any schema is applied)."""

    line: int
    path: Path
    problem: str
    fix: str


class YamlSyntaxError(PermanentError):
    """The text is not YAML. ``line`` is 1-based (0 when unknown)."""

    exit_code = EXIT_INVALID

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


class YamlTooLarge(YamlSyntaxError):
    """The text is YAML, but too big or too deep to build (an alias bomb, absurd nesting).

    Nothing has been built when this is raised: the check runs on the composed nodes, whose size is
    bounded by the text's.
    """

    def __init__(self, line: int, path: Path, problem: str, fix: str) -> None:
        super().__init__(line, problem)
        self.path = path
        self.fix = fix


@dataclass
class LocatedDocument:
    """Plain data plus where each part of it was written."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    """Line of each mapping key / sequence item (1-based), by path. ``()`` is the document start."""
    problems: list[YamlProblem] = field(default_factory=list)

    def line_of(self, path: Path) -> int:
        """The line of ``path``, or of its nearest written ancestor (a missing key is reported where
        its parent mapping starts)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 0

    def has(self, path: Path) -> bool:
        """Whether ``path`` was written in the document."""
        return path in self.lines


def load(text: str) -> LocatedDocument:
    """Parse ``text`` (a single YAML document) keeping the line of every key and item.

    Raises :class:`YamlSyntaxError` when the text is not valid YAML.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError as exc:  # the composer recurses once per nesting level
            raise _too_deep(loader.get_mark().line + 1, ()) from exc
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 0
            problem = " ".join(part for part in (exc.context, exc.problem) if part)
            raise YamlSyntaxError(line, problem or "invalid YAML") from exc
        except yaml.YAMLError as exc:  # pragma: no cover - the reader's own errors (bad bytes)
            raise YamlSyntaxError(0, str(exc)) from exc
        doc = LocatedDocument(data=None)
        if root is None:
            return doc
        doc.lines[()] = root.start_mark.line + 1
        _Sizer().size(root, (), frozenset())
        doc.data = _Builder(loader, doc).build(root, (), frozenset())
        return doc
    finally:
        loader.dispose()


def _too_deep(line: int, path: Path) -> YamlTooLarge:
    return YamlTooLarge(
        line,
        path,
        f"the document is nested more than {MAX_DEPTH} levels deep",
        "a fleet file needs a handful of levels: remove the extra nesting",
    )


class _Sizer:
    """Counts the values a document expands to, without building any of them.

    Each node's size is computed once (aliases share their node), so the count costs time and memory in
    proportion to the text, whatever it would expand to. Merge keys (``<<: *a``) count as the mapping
    they merge, which bounds what ``flatten_mapping`` copies later.
    """

    def __init__(self) -> None:
        self._sizes: dict[int, int] = {}
        self.aliases = 0

    def size(self, node: Node, path: Path, active: frozenset[int]) -> int:
        known = self._sizes.get(id(node))
        if known is not None:
            self.aliases += 1
            return known
        if id(node) in active:
            return 1  # a recursive alias: the builder reports it
        if len(path) > MAX_DEPTH:
            raise _too_deep(node.start_mark.line + 1, path[:MAX_DEPTH])
        total = 1
        inner = active | {id(node)}
        if isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                total += self.size(item, (*path, index), inner)
                self._check(total, node, path)
        elif isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, ScalarNode) else "?"
                key_path = (*path, key if isinstance(key, str) else str(key))
                total += self.size(key_node, key_path, inner) + self.size(value_node, key_path, inner)
                self._check(total, key_node, key_path)
        self._sizes[id(node)] = total
        return total

    def _check(self, total: int, node: Node, path: Path) -> None:
        if total > MAX_NODES:
            raise YamlTooLarge(
                node.start_mark.line + 1,
                path,
                f"the document expands to more than {MAX_NODES:,} values "
                f"({self.aliases:,} aliases so far): an alias bomb or a runaway alias",
                "write the values out, or use each anchor (&name) only a few times",
            )


_UNREADABLE: Any = object()


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, doc: LocatedDocument) -> None:
        self._loader = loader
        self._doc = doc

    def build(self, node: Node, path: Path, active: frozenset[int]) -> Any:
        if id(node) in active:
            # An alias pointing at one of its own ancestors: the data would be infinite.
            self._problem(node, path, "a YAML alias refers to itself", "remove the recursive alias")
            return None
        if isinstance(node, ScalarNode):
            value = self._scalar(node, path)
            return None if value is _UNREADABLE else value
        inner = active | {id(node)}
        if isinstance(node, SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self._doc.lines.setdefault((*path, index), item.start_mark.line + 1)
                items.append(self.build(item, (*path, index), inner))
            return items
        if isinstance(node, MappingNode):
            return self._mapping(node, path, inner)
        raise AssertionError(f"unexpected YAML node {node!r}")  # pragma: no cover

    def _mapping(self, node: MappingNode, path: Path, active: frozenset[int]) -> dict[Any, Any]:
        try:
            self._loader.flatten_mapping(node)  # resolve `<<: *anchor` merge keys
        except yaml.constructor.ConstructorError as exc:
            self._problem(node, path, f"bad merge key: {exc.problem}", "merge only mappings with `<<:`")
            return {}
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self._problem(key_node, path, "a key must be a plain word", "write `name: value`")
                continue
            key = self._scalar(key_node, (*path, str(key_node.value)[:40]))
            if key is _UNREADABLE:
                continue  # already reported
            if not isinstance(key, str | int | bool | float) or key is None:
                self._problem(key_node, path, "a key must be a plain word", "write `name: value`")
                continue
            key_path = (*path, key if isinstance(key, str) else str(key))
            if key in result:
                self._doc.problems.append(
                    YamlProblem(
                        line,
                        key_path,
                        f"duplicate key {key!r} (first at line {first_line[key]})",
                        "keep only one of them",
                    )
                )
                continue
            first_line[key] = line
            self._doc.lines.setdefault(key_path, line)
            result[key_path[-1]] = self.build(value_node, key_path, active)
        return result

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        """The scalar's value, or ``_UNREADABLE`` (and a problem) when YAML or Python cannot read it."""
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self._problem(node, path, f"cannot read this value: {exc.problem}", "quote it as a string")
        except ValueError:
            # int() refuses more than sys.get_int_max_str_digits() digits (a guard against slow parsing).
            digits = sum(c.isdigit() for c in node.value)
            limit = sys.get_int_max_str_digits()
            self._problem(
                node,
                path,
                f"a number of {digits:,} digits is too long to read (the limit is {limit:,})",
                "write a sensible value, or quote it if it is meant as text",
            )
        return _UNREADABLE

    def _problem(self, node: Node, path: Path, problem: str, fix: str) -> None:
        self._doc.problems.append(YamlProblem(node.start_mark.line + 1, path, problem, fix))
