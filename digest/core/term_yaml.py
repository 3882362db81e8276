"""A term file's YAML front matter, read with the file line of every node it holds.

PyYAML reports values, not where they were written; an editor needs `alpha.md:9`, so the
composed node tree is kept beside the data and walked to turn an error's location into a line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from digest.core.term_folder import shown

__all__ = ["YamlDocument", "YamlProblem", "key_name", "read_yaml", "shown"]

# The front matter starts on line 2 of its file, after the opening `---`.
_FIRST_LINE = 2

try:  # libyaml is ~10x faster; it matters for 10,000-term glossaries.
    _Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"


def key_name(key: object) -> str:
    """A key as an error's field shows it: as written when it is a plain name, else quoted with
    its escapes visible and cut short, so a key holding a line break cannot split the line."""
    text = str(key)
    if text and text.isprintable() and text.strip() == text and len(text) <= 40:
        return text
    return shown(key, 40)


class YamlProblem(Exception):
    """The front matter is no valid YAML: the file line and a one-line reason."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class YamlDocument:
    """The data of the front matter `text`, with its node tree to find the lines of values."""

    text: str
    node: yaml.Node | None
    data: Any
    repeated: bool  # some mapping repeats a key: only then is the duplicate walk paid

    def line_of(self, *loc: Any) -> int | None:
        """The file line of the value at a pydantic error location (keys and list indexes)."""
        return _node_line(self.node, loc, _FIRST_LINE, self.text)

    def item_lines(self, key: str) -> list[int]:
        """`line_of(key, i)` for every item i of the top-level sequence `key`, in one pass
        instead of one walk from the root per item ([] when `key` is no sequence)."""
        root = self.node
        if not isinstance(root, yaml.MappingNode):
            return []
        match = next((kv for kv in root.value if kv[0].value == key), None)
        if match is None or not isinstance(match[1], yaml.SequenceNode):
            return []
        return [_line_at(self.text, item.start_mark, _FIRST_LINE) for item in match[1].value]

    def char_line(self, loc: tuple[Any, ...], char: str) -> int | None:
        """The file line holding `char` within the value at `loc`: a folded `definition` spans
        lines, and the error must name the one the character is on. None when it is not there as
        written (a YAML escape such as `\\e` produced it); the field's line then stands."""
        node = self.node
        for part in loc:
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                node = next((v for k, v in node.value if k.value == part), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if part < len(node.value) else None
            else:
                break  # e.g. `name` of an alias written as a bare string: the scalar itself
        if not isinstance(node, yaml.ScalarNode):
            return None
        at = self.text.find(char, node.start_mark.index, node.end_mark.index)
        return None if at < 0 else self.text.count("\n", 0, at) + _FIRST_LINE

    def repeated_keys(self) -> Iterator[tuple[str, int]]:
        """(field, file line) of every key repeated within one mapping: YAML keeps the last of
        two equal keys without a word."""
        if not self.repeated:
            return
        for where, key, mark in _duplicate_keys(self.node):
            yield where + key, _line_at(self.text, mark, _FIRST_LINE)


def read_yaml(text: str) -> YamlDocument:
    """Compose and construct the front matter `text`; `YamlProblem` when it is no valid YAML."""
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            try:
                data, repeated = _plain_data(loader, node) if node is not None else (None, False)
            except _NotPlain:
                data, repeated = loader.construct_document(node), True
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise YamlProblem(*_yaml_problem(exc, text)) from exc
    return YamlDocument(text, node, data, repeated)


def _yaml_problem(exc: yaml.YAMLError, front: str) -> tuple[int, str]:
    """(file line, one-line reason) of a YAML error; the front matter starts on line 2."""
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.reader.ReaderError):
        # Raised for characters YAML forbids; it has a position, not a mark or a problem.
        line = front.count("\n", 0, max(exc.position, 0)) + _FIRST_LINE
        char = exc.character
        code = ord(char) if isinstance(char, str) and len(char) == 1 else char
        if isinstance(code, int):
            return line, f"character U+{code:04X} is not allowed in YAML"
        return line, str(exc.reason)
    line = _line_at(front, mark, _FIRST_LINE) if mark is not None else _FIRST_LINE
    problem = getattr(exc, "problem", None) or str(exc).split("\n", 1)[0]
    problem = " ".join(str(problem).split())
    problem = problem if len(problem) <= 200 else problem[:199] + "…"
    lines = front.split("\n")
    index = line - _FIRST_LINE
    hint = _hint(problem, lines[index] if 0 <= index < len(lines) else "")
    return line, f"{problem}; hint: {hint}" if hint else problem


# `key: value` on one line, the key as YAML reads it (a list item's dash kept with it).
_FIELD_RE = re.compile(r"^(?P<key>\s*(?:-\s+)?[^\s:#'\"][^:]*?):[ \t]+(?P<value>.+?)\s*$")


def _hint(problem: str, line: str) -> str | None:
    """What an editor most likely did to get PyYAML's `problem` on `line`, and the fix, shown
    on their own line where it can be: PyYAML names the parser's state, not the slip."""
    field = _FIELD_RE.match(line)
    value = field["value"] if field else ""
    example = _quoted(field["key"].strip(), value) if field else None
    if "mapping values are not allowed" in problem:
        if ": " in value or value.endswith(":"):
            return f'quote a value that contains ": " ({example})'
        if line[:1].isspace():
            return (
                "check this line's indentation: top-level fields start at the beginning of a line"
            )
        return 'quote a value that contains ": " (summary: "A: B")'
    if "tab" in problem:
        return "indent with spaces; YAML does not allow tabs there"
    if field and value[:1] in ("'", '"') and "expected" in problem:
        inner = value[1:-1] if len(value) > 1 and value[-1] == value[0] else value
        return f"quote the value as a whole ({_quoted(field['key'].strip(), inner)})"
    if value[:1] in ("@", "`", "%", "*", "&", "!", "|", ">", "[", "{", "-"):
        return f"quote a value that starts with {value[0]!r} ({example})"
    if "end of stream" in problem:
        return "a quote or bracket opened in the front matter is never closed"
    return None


def _quoted(key: str, value: str) -> str:
    """`key: "value"` as the editor could write it, short enough to read in one error line."""
    if len(value) > 40:
        value = value[:39] + "…"
    if '"' not in value:
        return f'{key}: "{value}"'
    return f"{key}: '" + value.replace("'", "''") + "'"


def _line_at(text: str, mark: Any, first_line: int) -> int:
    """The file line of a YAML mark. Not `mark.line`: YAML also breaks lines at U+2028, U+0085
    and a lone CR, which editors show inside one line, so its count drifts from the file's."""
    return text.count("\n", 0, mark.index) + first_line


def _duplicate_keys(
    node: yaml.Node | None, where: str = "", seen: set[int] | None = None
) -> Iterator[tuple[str, str, Any]]:
    """(location prefix, key, mark) of every key repeated within one YAML mapping."""
    seen = set() if seen is None else seen
    if node is None or id(node) in seen:  # anchors can make the tree a graph, even a cycle
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key != "<<":
                if key in keys:
                    yield where, key_name(key), key_node.start_mark
                keys.add(key)
                yield from _duplicate_keys(value_node, f"{where}{key_name(key)}.", seen)
            else:
                yield from _duplicate_keys(value_node, where, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{where.rstrip('.')}[{i}].", seen)


class _NotPlain(Exception):
    """The YAML uses anchors, merge keys, non-string keys or explicit tags."""


def _plain_data(loader: yaml.SafeLoader | yaml.CSafeLoader, root: yaml.Node) -> tuple[Any, bool]:
    """(data, whether some mapping repeats a key) of a composed document, built directly.

    For front matter without anchors, merge keys, non-string keys or unusual tags — every real
    term file — this gives what `construct_document` gives, several times faster: that goes
    through a generic, state-keeping constructor for every string. Raises `_NotPlain` for
    anything else, and the caller constructs that the general way.
    """
    seen: set[int] = set()
    repeated = False

    def build(node: yaml.Node) -> Any:
        nonlocal repeated
        if id(node) in seen:  # an alias: the composer hands out the anchored node again
            raise _NotPlain
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR_TAG:
                return node.value
            return loader.construct_object(node, deep=True)  # ints, booleans, nulls, dates
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            return [build(item) for item in node.value]
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            mapping: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                    raise _NotPlain
                key = key_node.value
                repeated = repeated or key in mapping
                mapping[key] = build(value_node)
            return mapping
        raise _NotPlain

    return build(root), repeated


def _node_line(
    node: yaml.Node | None, loc: tuple[Any, ...], first_line: int, text: str
) -> int | None:
    """Walk a composed YAML node along a pydantic error location to the line it came from."""
    if node is None:
        return first_line
    line = _line_at(text, node.start_mark, first_line)
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next((kv for kv in node.value if kv[0].value == part), None)
            if match is None:
                return line
            node = match[1]
            line = _line_at(text, match[0].start_mark, first_line)
            if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
                line = _line_at(text, node.start_mark, first_line)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = _line_at(text, node.start_mark, first_line)
        else:
            break
    return line
