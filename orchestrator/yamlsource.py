"""YAML that remembers where each value came from.

PyYAML's ``safe_load`` throws the line numbers away. Here the document is *composed* into nodes (which
carry their marks) and turned into plain Python values by hand, recording the line of every mapping key
and sequence item under its path, e.g. ``("miners", 2, "streaming_batch_size") -> 41``. Validation
errors can then name ``file:line`` for any field pydantic complains about.

Duplicate keys (which ``safe_load`` silently resolves to the last one) are reported, not hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

PathPart = str | int
Path = tuple[PathPart, ...]


@dataclass(frozen=True)
class YamlProblem:
    """Something wrong with the document itself (before any schema is applied)."""

    line: int
    path: Path
    problem: str
    fix: str


class YamlSyntaxError(Exception):
    """The text is not YAML. ``line`` is 1-based (0 when unknown)."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


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
        doc.data = _Builder(loader, doc).build(root, (), frozenset())
        return doc
    finally:
        loader.dispose()


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
            try:
                return self._loader.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError as exc:
                self._problem(node, path, f"cannot read this value: {exc.problem}", "quote it as a string")
                return None
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
            key = self._loader.construct_object(key_node, deep=True)
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

    def _problem(self, node: Node, path: Path, problem: str, fix: str) -> None:
        self._doc.problems.append(YamlProblem(node.start_mark.line + 1, path, problem, fix))
