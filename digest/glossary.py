"""The glossary: term files in `terms/` read into typed `Term` objects and a `Glossary`.

Validation is strict and complete: every problem in a folder is reported in one run, each naming
the file, the line and the field, so an editor fixes them all at once instead of one per try.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from markdown_it import MarkdownIt
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationError,
    field_validator,
)

from digest.characters import (
    CANDIDATE_RE,
    first_refused,
    holds_refused,
    is_refused,
    refusal,
    refused,
)
from digest.weeks import IsoWeek, parse_week

__all__ = [
    "MAX_TERM_BYTES",
    "REQUIRED_SECTIONS",
    "Alias",
    "Glossary",
    "GlossaryError",
    "InvalidGlossary",
    "Section",
    "Source",
    "Term",
    "load_glossary",
    "read_glossary",
    "render_markdown",
]

Difficulty = Literal["beginner", "intermediate", "advanced"]
DIFFICULTY_RANK: dict[str, int] = {"beginner": 0, "intermediate": 1, "advanced": 2}
REQUIRED_SECTIONS = ("Why it matters", "How it works", "Example")
# The largest term file read, judged from its size before reading. The longest starter term is
# under 3 KB and a mail over 102 KB is clipped by Gmail anyway; without a limit a 50 MB file
# passed validation in a second and then cost the build minutes and gigabytes before a size
# gate refused it.
MAX_TERM_BYTES = 256 * 1024

# Used with fullmatch: `$` alone also matches before a trailing newline ("nl\n").
_SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_LANG_RE = re.compile(r"[a-z]{2,3}")
# Embedding, override and isolate controls reorder how text is shown ("Trojan Source"): a
# title could read differently in the mail than in the file. Marks (LRM/RLM) stay allowed.
_HEADING_RE = re.compile(r"^##[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE_RE = re.compile(r"^(```|~~~)")
_HEADING_LINE_RE = re.compile(_HEADING_RE.pattern, re.MULTILINE)  # for a whole body at once

try:  # libyaml is ~10x faster; it matters for 10,000-term glossaries.
    _Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_markdown.enable("table")


def render_markdown(text: str) -> str:
    """Markdown → HTML with raw HTML disabled, so a term file cannot inject markup."""
    return str(_markdown.render(text))


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class GlossaryError:
    """One problem in one term file, printed as `path:line: field: message`."""

    path: Path
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else f"{self.path}"
        return f"{where}: {self.field}: {self.message}"


class InvalidGlossary(Exception):
    """Raised by `load_glossary` with every error found in the folder."""

    def __init__(self, errors: list[GlossaryError]) -> None:
        self.errors = errors
        files = len({e.path for e in errors})
        super().__init__(
            f"{len(errors)} error{'s' * (len(errors) != 1)} in {files} file{'s' * (files != 1)}"
        )


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Alias:
    name: str
    lang: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    title: str
    url: str


@dataclass(frozen=True)
class Section:
    """A `## Heading` of a term body; its HTML is rendered on first use, not at load time."""

    title: str
    markdown: str

    @cached_property
    def html(self) -> str:
        return render_markdown(self.markdown)


@dataclass(frozen=True)
class Term:
    slug: str
    title: str
    summary: str
    definition: str
    category: str
    difficulty: Difficulty
    added: IsoWeek
    related: tuple[str, ...]
    sources: tuple[Source, ...]
    aliases: tuple[Alias, ...] = ()
    sections: tuple[Section, ...] = ()
    path: Path | None = field(default=None, compare=False)

    @property
    def level(self) -> int:
        """0 for beginner, 1 intermediate, 2 advanced: what selection orders prerequisites by."""
        return DIFFICULTY_RANK[self.difficulty]

    def section(self, title: str) -> Section | None:
        wanted = title.casefold()
        return next((s for s in self.sections if s.title.casefold() == wanted), None)

    @property
    def body_text(self) -> str:
        return "\n\n".join(s.markdown for s in self.sections)

    @property
    def names(self) -> tuple[str, ...]:
        """Title and every alias: the words that mean this term in someone else's text."""
        return (self.title, *(a.name for a in self.aliases))


class Glossary:
    """All terms of a folder, indexed by slug and by alias, with the related-concept graph."""

    def __init__(self, terms: Iterable[Term]) -> None:
        self._terms: dict[str, Term] = {t.slug: t for t in sorted(terms, key=lambda t: t.slug)}
        self._names: dict[str, str] = {}
        for term in self._terms.values():
            for name in (term.slug, *term.names):
                self._names.setdefault(name.casefold(), term.slug)

    def __len__(self) -> int:
        return len(self._terms)

    def __iter__(self) -> Iterator[Term]:
        return iter(self._terms.values())

    def __contains__(self, slug: object) -> bool:
        return slug in self._terms

    def __getitem__(self, slug: str) -> Term:
        return self._terms[slug]

    def get(self, slug: str) -> Term | None:
        return self._terms.get(slug)

    @property
    def slugs(self) -> list[str]:
        return list(self._terms)

    def lookup(self, name: str) -> Term | None:
        """Find a term by slug, title or alias, ignoring case."""
        slug = self._names.get(name.strip().casefold())
        return self._terms[slug] if slug else None

    def categories(self) -> list[str]:
        return sorted({t.category for t in self._terms.values()})

    def in_category(self, category: str) -> list[Term]:
        wanted = category.casefold()
        return [t for t in self._terms.values() if t.category.casefold() == wanted]

    def related(self, slug: str) -> list[Term]:
        """The terms `slug` names in its own `related` list, in the file's order."""
        return [self._terms[s] for s in self._terms[slug].related if s in self._terms]

    @cached_property
    def backlinks(self) -> dict[str, tuple[str, ...]]:
        """For each slug, the terms whose `related` list names it."""
        links: dict[str, list[str]] = {slug: [] for slug in self._terms}
        for term in self._terms.values():
            for other in term.related:
                if other in links:
                    links[other].append(term.slug)
        return {slug: tuple(v) for slug, v in links.items()}

    def neighbours(self, slug: str) -> set[str]:
        """Related in either direction: the undirected graph that must be connected."""
        return (set(self._terms[slug].related) | set(self.backlinks[slug])) - {slug}

    def components(self) -> list[set[str]]:
        """Connected components of the undirected related graph, largest first."""
        seen: set[str] = set()
        parts: list[set[str]] = []
        for start in self._terms:
            if start in seen:
                continue
            part, stack = set(), [start]
            while stack:
                slug = stack.pop()
                if slug in part:
                    continue
                part.add(slug)
                stack.extend(self.neighbours(slug) - part)
            seen |= part
            parts.append(part)
        return sorted(parts, key=len, reverse=True)


# --------------------------------------------------------------------------- front matter schema


def _shown(value: object, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters, so one error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _RefusedCharacter(ValueError):
    """A value holds a character the rule refuses; `char` lets the caller find its line."""

    def __init__(self, char: str, message: str) -> None:
        super().__init__(message)
        self.char = char


def _visible_text(value: str, *, one_line: bool) -> str:
    """Refuse what would break a mail header or the MJML, or hide text: the characters the
    rule refuses (and in one-line fields line breaks and tabs), and values with nothing visible
    in them (a lone zero-width space)."""
    char = first_refused(value, one_line=one_line)
    if char is not None:
        if one_line and unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise _RefusedCharacter(
                char,
                "must be one line: line breaks, tabs and control characters are not allowed "
                f"(found U+{ord(char):04X}); remove it",
            )
        raise _RefusedCharacter(char, refusal(char))
    if value and not value[0].isspace() and unicodedata.category(value[0]) != "Cf":
        return value  # the common case: visible from the start
    if all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in value):
        raise ValueError("must contain visible text")
    return value


def _one_line(value: str) -> str:
    return _visible_text(value, one_line=True)


def _paragraph(value: str) -> str:
    return _visible_text(value, one_line=False)


_Line = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_one_line)
]


class _AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: _Line
    lang: str | None = None

    @field_validator("lang")
    @classmethod
    def _lang(cls, value: str | None) -> str | None:
        if value is not None and not _LANG_RE.fullmatch(value):
            raise ValueError(
                f"must be a 2- or 3-letter language code like 'nl' (got {_shown(value)})"
            )
        return value


class _SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    title: _Line
    url: _Line

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not re.match(r"^https://[^\s/$.?#][^\s]*$", value):
            raise ValueError(f"must be an https:// URL (got {_shown(value)})")
        return value


class _FrontMatter(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    title: Annotated[_Line, StringConstraints(max_length=120)]
    slug: str | None = None
    summary: Annotated[_Line, StringConstraints(max_length=200)]
    definition: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=600),
        AfterValidator(_paragraph),
    ]
    aliases: list[_AliasIn] = []
    category: Annotated[_Line, StringConstraints(max_length=60)]
    difficulty: Difficulty
    added: str
    related: list[_Line]
    sources: Annotated[list[_SourceIn], "sources"]

    @field_validator("aliases", mode="before")
    @classmethod
    def _plain_aliases(cls, value: Any) -> Any:
        # A bare string is shorthand for {name: ...}; anything else is checked as a mapping.
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("added")
    @classmethod
    def _week(cls, value: str) -> str:
        parse_week(value)
        return value

    @field_validator("sources")
    @classmethod
    def _some_sources(cls, value: list[_SourceIn]) -> list[_SourceIn]:
        if not value:
            raise ValueError("needs at least one source")
        return value


def _pydantic_message(err: Any) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "model_type" and "_AliasIn" in str(err.get("msg")):
        return f"must be a name or a mapping {{name, lang}} (got {type(err.get('input')).__name__})"
    if kind == "model_type":
        return f"must be a mapping (got {type(err.get('input')).__name__})"
    if kind == "literal_error":
        got = err.get("input")
        return f"must be one of beginner, intermediate, advanced (got {_shown(got)})"
    message = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind.endswith("_type") or kind in {"model_type", "list_type", "string_type"}:
        message = f"{message} (got {type(err.get('input')).__name__})"
    return message


# --------------------------------------------------------------------------- reading


def _split_front_matter(text: str) -> tuple[str, str, int] | None:
    """(front matter, body, line number of the body's first line) or None without `---` fences."""
    lines = text.split("\n")
    if not lines or lines[0].rstrip() != "---":
        return None
    for i in range(1, len(lines)):
        if lines[i].rstrip() in ("---", "..."):
            # A file ending at the closing fence has no line i + 2; point at the fence instead.
            return "\n".join(lines[1:i]), "\n".join(lines[i + 1 :]), min(i + 2, len(lines))
    return None


def _yaml_problem(exc: yaml.YAMLError, front: str) -> tuple[int, str]:
    """(file line, one-line reason) of a YAML error; the front matter starts on line 2."""
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.reader.ReaderError):
        # Raised for characters YAML forbids; it has a position, not a mark or a problem.
        line = front.count("\n", 0, max(exc.position, 0)) + 2
        char = exc.character
        code = ord(char) if isinstance(char, str) and len(char) == 1 else char
        if isinstance(code, int):
            return line, f"character U+{code:04X} is not allowed in YAML"
        return line, str(exc.reason)
    line = _line_at(front, mark, 2) if mark is not None else 2
    problem = getattr(exc, "problem", None) or str(exc).split("\n", 1)[0]
    problem = " ".join(str(problem).split())
    return line, problem if len(problem) <= 200 else problem[:199] + "…"


def _line_at(text: str, mark: Any, first_line: int) -> int:
    """The file line of a YAML mark. Not `mark.line`: YAML also breaks lines at U+2028, U+0085
    and a lone CR, which editors show inside one line, so its count drifts from the file's."""
    return text.count("\n", 0, mark.index) + first_line


def _key_name(key: object) -> str:
    """A key as an error's field shows it: as written when it is a plain name, else quoted with
    its escapes visible and cut short, so a key holding a line break cannot split the line."""
    text = str(key)
    if text and text.isprintable() and text.strip() == text and len(text) <= 40:
        return text
    return _shown(key, 40)


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
                    yield where, _key_name(key), key_node.start_mark
                keys.add(key)
                yield from _duplicate_keys(value_node, f"{where}{_key_name(key)}.", seen)
            else:
                yield from _duplicate_keys(value_node, where, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{where.rstrip('.')}[{i}].", seen)


_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"


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


def _char_line(root: yaml.Node | None, loc: tuple[Any, ...], text: str, char: str) -> int | None:
    """The file line holding `char` within the YAML value at `loc`: a folded `definition` spans
    lines, and the error must name the one the character is on. None when it is not there as
    written (a YAML escape such as `\\e` produced it); the field's line then stands."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            break  # e.g. `name` of an alias written as a bare string: the scalar itself
    if not isinstance(node, yaml.ScalarNode):
        return None
    at = text.find(char, node.start_mark.index, node.end_mark.index)
    return None if at < 0 else text.count("\n", 0, at) + 2


def _item_lines(root: yaml.Node | None, key: str, text: str) -> list[int]:
    """`_node_line(root, (key, i), 2, text)` for every item i of the top-level sequence `key`,
    in one pass instead of one walk from the root per item ([] when `key` is no sequence)."""
    if not isinstance(root, yaml.MappingNode):
        return []
    match = next((kv for kv in root.value if kv[0].value == key), None)
    if match is None or not isinstance(match[1], yaml.SequenceNode):
        return []
    return [_line_at(text, item.start_mark, 2) for item in match[1].value]


def _heading_lines(body: str) -> list[re.Match[str]]:
    """Every `## ` heading line of `body`, visiting only lines that start with `##`."""
    heads: list[re.Match[str]] = []
    if body.startswith("##"):
        start = 0
    else:
        start = body.find("\n##") + 1
        if start == 0:
            return heads
    while True:
        end = body.find("\n", start)
        end = len(body) if end < 0 else end
        head = _HEADING_LINE_RE.match(body, start, end)
        if head is not None:
            heads.append(head)
        start = body.find("\n##", end) + 1
        if start == 0:
            return heads


def _section_parts(body: str) -> tuple[list[tuple[str, str]], int | None]:
    """((title, markdown) of each `## ` section, offset of the first line of text before the
    first heading or None). Without code fences (nearly every term) the headings are found by one
    regex over the whole body; with fences, line by line, as a `## ` inside one is no heading."""
    if "```" not in body and "~~~" not in body:
        heads = _heading_lines(body)
        lead = body[: heads[0].start()] if heads else body
        if lead.strip():
            return [], lead.count("\n", 0, len(lead) - len(lead.lstrip()))
        if not heads:
            return [], None
        ends = [head.start() for head in heads[1:]] + [len(body)]
        return [
            (head.group(1).strip(), body[head.end() : end].strip())
            for head, end in zip(heads, ends, strict=True)
        ], None
    parts: list[tuple[str, str]] = []
    title: str | None = None
    buf: list[str] = []
    in_fence = False
    for offset, raw in enumerate(body.split("\n")):
        if _FENCE_RE.match(raw.lstrip()):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING_RE.match(raw)
        if heading:
            if title is not None:
                parts.append((title, "\n".join(buf).strip()))
            title, buf = heading.group(1).strip(), []
        elif title is None:
            if raw.strip():
                return parts, offset
        else:
            buf.append(raw)
    if title is not None:
        parts.append((title, "\n".join(buf).strip()))
    return parts, None


def _split_sections(
    body: str, body_line: int, path: Path
) -> tuple[list[Section], list[GlossaryError]]:
    parts, stray = _section_parts(body)
    sections = [Section(title, markdown) for title, markdown in parts]
    errors: list[GlossaryError] = []
    if stray is not None:
        message = "text before the first '## ' section (the definition belongs in the front matter)"
        errors.append(GlossaryError(path, body_line + stray, "body", message))
        return sections, errors
    present = {s.title.casefold() for s in sections}
    missing = [name for name in REQUIRED_SECTIONS if name.casefold() not in present]
    if missing:
        errors.append(
            GlossaryError(
                path,
                body_line,
                "body",
                "missing section"
                + "s" * (len(missing) > 1)
                + ": "
                + ", ".join(f"'## {m}'" for m in missing),
            )
        )
    for section in sections:
        if not section.markdown:
            errors.append(
                GlossaryError(path, body_line, "body", f"section '## {section.title}' is empty")
            )
    return sections, errors


# A numeric character reference, as CommonMark reads one: markdown-it decodes it, so `&#12;`
# reaches the mail as a raw form feed. (No named entity stands for a refused character.)
_CHAR_REF_RE = re.compile(r"&#(?:[xX]([0-9a-fA-F]{1,6})|([0-9]{1,7}));")


def _lines_of(text: str, first_line: int, offsets: Iterable[int]) -> Iterator[int]:
    """The file line of each offset into `text` (ascending), counting each stretch once: a body
    with a bad character on every line must not cost a scan from the start per character."""
    line, done = first_line, 0
    for offset in offsets:
        line += text.count("\n", done, offset)
        done = offset
        yield line


def _body_character_errors(body: str, body_line: int, path: Path) -> list[GlossaryError]:
    """Every body line holding a character the rule refuses, one error per line naming the
    first such character on it."""
    errors: list[GlossaryError] = []
    found = list(refused(CANDIDATE_RE.finditer(body)))
    lines = _lines_of(body, body_line, (m.start() for m in found))
    for bad, line in zip(found, lines, strict=True):
        if not errors or errors[-1].line != line:
            errors.append(GlossaryError(path, line, "body", refusal(bad[0])))
    return errors


def _reference_errors(body: str, body_line: int, path: Path) -> list[GlossaryError]:
    """Numeric references that the rendered body decodes to a refused character. Only those
    that reach the HTML count: inside code a reference is shown as written, and markdown-it
    itself turns the invalid ones (NUL, surrogates, noncharacters, C1) into U+FFFD. Rendering
    is paid only by the rare body that holds such a reference."""
    refused: list[tuple[re.Match[str], str]] = []
    for ref in _CHAR_REF_RE.finditer(body):
        code = int(ref[1], 16) if ref[1] else int(ref[2])
        if code <= 0x10FFFF and is_refused(chr(code)):
            refused.append((ref, chr(code)))
    if not refused:
        return []
    shown = render_markdown(body)
    lines = _lines_of(body, body_line, (ref.start() for ref, _char in refused))
    return [
        GlossaryError(path, line, "body", refusal(char, ref[0]))
        for (ref, char), line in zip(refused, lines, strict=True)
        if char in shown
    ]


@dataclass
class _Parsed:
    """What one file yielded: the Term when valid, and the names and links it declares.

    Names and links are kept even when the file has other errors, so the folder-wide checks
    (unknown related slug, alias clash) still report on it in the same run.
    """

    path: Path
    slug: str
    term: Term | None
    names: list[tuple[str, str, int | None]]  # (kind, value, line): kind is slug/title/alias
    related: list[tuple[str, int | None]]


_FILE_KINDS = (
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "named pipe"),
    (stat.S_ISCHR, "device"),
    (stat.S_ISBLK, "device"),
    (stat.S_ISSOCK, "socket"),
)
# Never follow a link, never wait on a pipe swapped in between the lstat and the open.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def _not_regular(path: Path, mode: int) -> GlossaryError:
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "special file")
    if kind == "symlink":
        # Every link, not only those leading out: where a link leads can change between the
        # check and the open, and a link to /dev/zero or a pipe would hang or exhaust us.
        advice = (
            "links are not followed, so a term cannot come from outside the folder: "
            "replace the link with the file itself"
        )
    else:
        advice = (
            "only regular files are read as terms: remove it, or rename it so its name does "
            "not end in .md"
        )
    return GlossaryError(path, None, "file", f"not a regular file ({kind}); {advice}")


def _too_big(path: Path, size: int) -> GlossaryError:
    message = (
        f"is {size:,} bytes, over the {MAX_TERM_BYTES:,}-byte ({MAX_TERM_BYTES // 1024} KB) "
        "limit for a term file; shorten it"
    )
    return GlossaryError(path, None, "file", message)


def _term_bytes(path: Path) -> bytes | GlossaryError:
    """The bytes of `path` when it is a regular file of at most MAX_TERM_BYTES, else the error.

    Judged from `lstat` before anything is opened: opening a named pipe blocks until a writer
    comes, a device such as /dev/zero reads until memory runs out, a symlink may lead out of
    the folder, and a huge file would pass only to cost the build minutes. The open then refuses
    links and never blocks, and what was opened is checked again, so an entry swapped in
    between (an editor replaces files as it saves) is judged as what it is by then.
    """
    try:
        info = os.lstat(path)
    except OSError as exc:
        return GlossaryError(path, None, "file", f"cannot read: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return _not_regular(path, info.st_mode)
    if info.st_size > MAX_TERM_BYTES:
        return _too_big(path, info.st_size)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link made since the lstat
            return _not_regular(path, stat.S_IFLNK)
        return GlossaryError(path, None, "file", f"cannot read: {exc.strerror}")
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            return _not_regular(path, opened.st_mode)
        if opened.st_size > MAX_TERM_BYTES:
            return _too_big(path, opened.st_size)
        # The size and a byte more, then on to the end, bounded: a file still growing is read
        # no further than the limit. (Not MAX_TERM_BYTES at once: that allocates 256 KB a file.)
        data = os.read(fd, opened.st_size + 1)
        while len(data) <= MAX_TERM_BYTES and (more := os.read(fd, 65536)):
            data += more
    except OSError as exc:
        return GlossaryError(path, None, "file", f"cannot read: {exc.strerror}")
    finally:
        os.close(fd)
    return data if len(data) <= MAX_TERM_BYTES else _too_big(path, len(data))


def _read_term(path: Path) -> tuple[_Parsed | None, list[GlossaryError]]:
    """Read one file: what it declares, and every error found in it."""
    slug = path.stem
    raw = _term_bytes(path)
    if isinstance(raw, GlossaryError):
        return None, [raw]
    try:
        # Bytes, then text: what read_text does, without its slower newline-translating reader.
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        return None, [GlossaryError(path, None, "file", f"not valid UTF-8 ({exc.reason})")]
    text = text.replace("\r\n", "\n").removeprefix("\ufeff")
    split = _split_front_matter(text)
    if split is None:
        message = "file must start with YAML front matter between '---' lines"
        return None, [GlossaryError(path, 1, "front matter", message)]
    front, body, body_line = split
    errors: list[GlossaryError] = []
    if not _SLUG_RE.fullmatch(slug):
        message = f"file name {_shown(path.name)} is not a slug (lower-case a-z, 0-9 and '-')"
        errors.append(GlossaryError(path, None, "slug", message))
    line: int | None
    try:
        loader = _Loader(front)
        try:
            node = loader.get_single_node()
            try:
                data, repeated = _plain_data(loader, node) if node is not None else (None, False)
            except _NotPlain:
                data, repeated = loader.construct_document(node), True
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        line, problem = _yaml_problem(exc, front)
        return None, [
            *errors,
            GlossaryError(path, line, "front matter", f"invalid YAML: {problem}"),
        ]
    if not isinstance(data, dict):
        return None, [
            *errors,
            GlossaryError(path, 2, "front matter", "must be a mapping of fields"),
        ]

    def line_of(*loc: Any) -> int | None:
        return _node_line(node, loc, 2, front)

    # YAML keeps the last of two equal keys without a word; an editor who wrote `title:` twice
    # must hear which one would be lost.
    for where, key, mark in _duplicate_keys(node) if repeated else ():
        message = "listed twice; the later value would silently replace the earlier one"
        errors.append(GlossaryError(path, _line_at(front, mark, 2), where + key, message))

    parsed = _Parsed(path, slug, None, [("slug", slug, None)], [])
    if isinstance(data.get("title"), str):
        parsed.names.append(("title", data["title"].strip(), line_of("title")))
    raw_aliases = data.get("aliases")
    lines = _item_lines(node, "aliases", front)
    for i, alias in enumerate(raw_aliases if isinstance(raw_aliases, list) else []):
        name = alias.get("name") if isinstance(alias, dict) else alias
        if isinstance(name, str) and name.strip():
            line = lines[i] if i < len(lines) else line_of("aliases", i)
            parsed.names.append(("alias", name.strip(), line))
    raw_related = data.get("related")
    lines = _item_lines(node, "related", front)
    seen: set[str] = set()
    for i, other in enumerate(raw_related if isinstance(raw_related, list) else []):
        if not isinstance(other, str):
            continue
        other = other.strip()
        line = lines[i] if i < len(lines) else line_of("related", i)
        if other == slug:
            errors.append(GlossaryError(path, line, "related", "a term cannot relate to itself"))
        elif other in seen:
            errors.append(GlossaryError(path, line, "related", f"{_shown(other)} is listed twice"))
        else:
            parsed.related.append((other, line))
        seen.add(other)

    sections, body_errors = _split_sections(body, body_line, path)
    errors.extend(body_errors)
    if holds_refused(raw):  # rare: only then is the body searched line by line
        errors.extend(_body_character_errors(body, body_line, path))
    if "&#" in body:
        errors.extend(_reference_errors(body, body_line, path))
    try:
        meta = _FrontMatter.model_validate(data)
    except ValidationError as exc:
        for detail in exc.errors():
            loc = tuple(detail["loc"])
            name = "".join(f"[{p}]" if isinstance(p, int) else f".{_key_name(p)}" for p in loc)
            name = name.lstrip(".")
            message = _pydantic_message(detail)
            line = line_of(*loc)
            cause = detail.get("ctx", {}).get("error")
            if isinstance(cause, _RefusedCharacter):
                line = _char_line(node, loc, front, cause.char) or line
            errors.append(GlossaryError(path, line, name or "front matter", message))
        return parsed, errors
    if meta.slug is not None and meta.slug != slug:
        message = f"{_shown(meta.slug)} does not match the file name {slug!r}"
        errors.append(GlossaryError(path, line_of("slug"), "slug", message))
    if errors:
        return parsed, errors
    parsed.term = Term(
        slug=slug,
        title=meta.title,
        summary=meta.summary,
        definition=" ".join(meta.definition.split()),
        category=meta.category,
        difficulty=meta.difficulty,
        added=parse_week(meta.added),
        related=tuple(meta.related),
        sources=tuple(Source(s.title, s.url) for s in meta.sources),
        aliases=tuple(Alias(a.name, a.lang) for a in meta.aliases),
        sections=tuple(sections),
        path=path,
    )
    return parsed, []


def _cross_check(parsed: list[_Parsed]) -> list[GlossaryError]:
    """Checks that need the whole folder: related slugs exist, names are unique."""
    errors: list[GlossaryError] = []
    slugs = {p.slug for p in parsed}
    # Slugs claim their names first (file names are unique), then titles, then aliases: an
    # alias never steals a title, and two terms never answer to one name in `Glossary.lookup`.
    owners: dict[str, str] = {p.slug.casefold(): p.slug for p in parsed}
    for p in parsed:
        for kind, value, line in p.names:
            if kind != "title":
                continue
            owner = owners.setdefault(value.casefold(), p.slug)
            if owner != p.slug:
                message = f"{_shown(value)} is already used by term {owner!r}"
                errors.append(GlossaryError(p.path, line, "title", message))
    for p in parsed:
        for other, line in p.related:
            if other not in slugs:
                message = f"unknown term {_shown(other)}"
                errors.append(GlossaryError(p.path, line, "related", message))
        own: set[str] = set()
        for kind, value, line in p.names:
            if kind != "alias":
                continue
            key = value.casefold()
            holder = owners.get(key)
            if key in own:
                message = f"{_shown(value)} is listed twice"
                errors.append(GlossaryError(p.path, line, "aliases", message))
            elif holder is not None and holder != p.slug:
                message = f"{_shown(value)} is already used by term {holder!r}"
                errors.append(GlossaryError(p.path, line, "aliases", message))
            else:
                owners[key] = p.slug
            own.add(key)
    return errors


def read_glossary(directory: Path | str) -> tuple[Glossary, list[GlossaryError]]:
    """Read every `*.md` in `directory`; return the valid terms and all errors found.

    Terms with errors are left out of the glossary, so a caller that can live with a partial
    glossary (e.g. `terms list`) still works while an editor fixes a file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return Glossary([]), [GlossaryError(directory, None, "terms", "folder does not exist")]
    parsed: list[_Parsed] = []
    errors: list[GlossaryError] = []
    for path in sorted(directory.glob("*.md")):
        if path.name.lower() == "readme.md":
            continue
        item, problems = _read_term(path)
        errors.extend(problems)
        if item is not None:
            parsed.append(item)
    errors.extend(_cross_check(parsed))
    bad = {e.path for e in errors}
    glossary = Glossary(p.term for p in parsed if p.term is not None and p.path not in bad)
    errors.sort(key=lambda e: (str(e.path), e.line or 0))
    return glossary, errors


def load_glossary(directory: Path | str) -> Glossary:
    """The whole glossary, or `InvalidGlossary` carrying every error in the folder."""
    glossary, errors = read_glossary(directory)
    if errors:
        raise InvalidGlossary(errors)
    return glossary
