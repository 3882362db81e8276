"""The rules of one term file's text, and of a folder of them: what makes a valid `Term`.

Pure: takes a file's bytes (its path only names the slug and labels errors) and returns every
problem at once, each with its file line, so an editor fixes them all in one run.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationError,
    field_validator,
)

from digest.core.characters import first_refused, holds_refused, refusal
from digest.core.term_body import body_character_errors, reference_errors, split_sections
from digest.core.term_folder import ParsedTerm, assemble
from digest.core.term_yaml import YamlProblem, key_name, read_yaml, shown
from digest.model.glossary import Alias, Difficulty, GlossaryError, Source, Term
from digest.model.weeks import parse_week

__all__ = [
    "DID_YOU_KNOW_MAX_LENGTH",
    "PREHEADER_MAX_LENGTH",
    "PRONUNCIATION_MAX_LENGTH",
    "SUBJECT_MAX_LENGTH",
    "ParsedTerm",
    "assemble",
    "mail_line",
    "parse_term",
]

# Longest subject and preheader accepted, from a term file or an editor. Inboxes show about 70
# and 100 characters; beyond these it is a paragraph pasted into the wrong field.
SUBJECT_MAX_LENGTH = 150
PREHEADER_MAX_LENGTH = 250
# "RAG — rhymes with bag" is a line, not a paragraph; a "Did you know?" note is a few sentences.
PRONUNCIATION_MAX_LENGTH = 80
DID_YOU_KNOW_MAX_LENGTH = 400

# Used with fullmatch: `$` alone also matches before a trailing newline ("nl\n").
_SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_LANG_RE = re.compile(r"[a-z]{2,3}")


# --------------------------------------------------------------------------- front matter schema


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


def mail_line(value: str, max_length: int) -> str:
    """`value` stripped, as a subject or preheader may hold it: one line of visible text with
    no refused character, at most `max_length` characters; ValueError says what is wrong.

    The rule the front matter's `subject:` and `preheader:` follow, for an editor's override
    too, so a line the term file would refuse cannot come in through the CLI or the desk.
    """
    value = value.strip()
    if not value:
        raise ValueError("must contain visible text")
    _one_line(value)
    if len(value) > max_length:
        raise ValueError(f"is {len(value)} characters; at most {max_length} are allowed")
    return value


_Line = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_one_line)
]

# `_Line` with a maximum length in one constraint: stacked on `_Line` inside an optional field,
# pydantic counts the length as items ("at most 150 items after validation").
_Subject = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=SUBJECT_MAX_LENGTH),
    AfterValidator(_one_line),
]
_Preheader = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=PREHEADER_MAX_LENGTH),
    AfterValidator(_one_line),
]
_Pronunciation = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=PRONUNCIATION_MAX_LENGTH),
    AfterValidator(_one_line),
]
# A paragraph like `definition`: may be folded over several lines in the file.
_Note = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=DID_YOU_KNOW_MAX_LENGTH),
    AfterValidator(_paragraph),
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
                f"must be a 2- or 3-letter language code like 'nl' (got {shown(value)})"
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
            raise ValueError(f"must be an https:// URL (got {shown(value)})")
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
    subject: _Subject | None = None
    preheader: _Preheader | None = None
    pronunciation: _Pronunciation | None = None
    did_you_know: _Note | None = None

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
        return f"must be one of beginner, intermediate, advanced (got {shown(got)})"
    message = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind.endswith("_type") or kind in {"model_type", "list_type", "string_type"}:
        message = f"{message} (got {type(err.get('input')).__name__})"
    return message


# --------------------------------------------------------------------------- one file


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


def parse_term(raw: bytes, path: Path) -> tuple[ParsedTerm | None, list[GlossaryError]]:
    """What the term file `path` holding `raw` declares, and every error found in it.

    Bytes, not text: a refused character is searched for in the bytes at memory speed, and
    whether the file is UTF-8 at all is the first rule. The slug is the file name's stem.
    """
    slug = path.stem
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
        message = f"file name {shown(path.name)} is not a slug (lower-case a-z, 0-9 and '-')"
        errors.append(GlossaryError(path, None, "slug", message))
    line: int | None
    try:
        doc = read_yaml(front)
    except YamlProblem as exc:
        return None, [
            *errors,
            GlossaryError(path, exc.line, "front matter", f"invalid YAML: {exc.problem}"),
        ]
    data = doc.data
    if not isinstance(data, dict):
        return None, [
            *errors,
            GlossaryError(path, 2, "front matter", "must be a mapping of fields"),
        ]

    line_of = doc.line_of
    # YAML keeps the last of two equal keys without a word; an editor who wrote `title:` twice
    # must hear which one would be lost.
    for where, at in doc.repeated_keys():
        message = "listed twice; the later value would silently replace the earlier one"
        errors.append(GlossaryError(path, at, where, message))

    parsed = ParsedTerm(path, slug, None, [("slug", slug, None)], [])
    if isinstance(data.get("title"), str):
        parsed.names.append(("title", data["title"].strip(), line_of("title")))
    raw_aliases = data.get("aliases")
    lines = doc.item_lines("aliases")
    for i, alias in enumerate(raw_aliases if isinstance(raw_aliases, list) else []):
        name = alias.get("name") if isinstance(alias, dict) else alias
        if isinstance(name, str) and name.strip():
            line = lines[i] if i < len(lines) else line_of("aliases", i)
            parsed.names.append(("alias", name.strip(), line))
    raw_related = data.get("related")
    lines = doc.item_lines("related")
    seen: set[str] = set()
    for i, other in enumerate(raw_related if isinstance(raw_related, list) else []):
        if not isinstance(other, str):
            continue
        other = other.strip()
        line = lines[i] if i < len(lines) else line_of("related", i)
        if other == slug:
            errors.append(GlossaryError(path, line, "related", "a term cannot relate to itself"))
        elif other in seen:
            errors.append(GlossaryError(path, line, "related", f"{shown(other)} is listed twice"))
        else:
            parsed.related.append((other, line))
        seen.add(other)

    sections, body_errors = split_sections(body, body_line, path)
    errors.extend(body_errors)
    if holds_refused(raw):  # rare: only then is the body searched line by line
        errors.extend(body_character_errors(body, body_line, path))
    if "&#" in body:
        errors.extend(reference_errors(body, body_line, path))
    try:
        meta = _FrontMatter.model_validate(data)
    except ValidationError as exc:
        for detail in exc.errors():
            loc = tuple(detail["loc"])
            name = "".join(f"[{p}]" if isinstance(p, int) else f".{key_name(p)}" for p in loc)
            name = name.lstrip(".")
            message = _pydantic_message(detail)
            line = line_of(*loc)
            cause = detail.get("ctx", {}).get("error")
            if isinstance(cause, _RefusedCharacter):
                line = doc.char_line(loc, cause.char) or line
            errors.append(GlossaryError(path, line, name or "front matter", message))
        return parsed, errors
    if meta.slug is not None and meta.slug != slug:
        message = f"{shown(meta.slug)} does not match the file name {slug!r}"
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
        subject=meta.subject,
        preheader=meta.preheader,
        pronunciation=meta.pronunciation,
        did_you_know=None if meta.did_you_know is None else " ".join(meta.did_you_know.split()),
    )
    return parsed, []
