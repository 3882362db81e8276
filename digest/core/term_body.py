"""The body of a term file: its `## ` sections, and the characters it may not carry to the mail.

Pure: takes the body text and the file line it starts on, returns sections and `GlossaryError`s
naming those lines, so every problem of a body is reported in one run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from digest.core.characters import CANDIDATE_RE, is_refused, refusal, refused
from digest.model.glossary import REQUIRED_SECTIONS, GlossaryError, Section, render_markdown

__all__ = ["body_character_errors", "reference_errors", "split_sections"]

_HEADING_RE = re.compile(r"^##[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE_RE = re.compile(r"^(```|~~~)")
_HEADING_LINE_RE = re.compile(_HEADING_RE.pattern, re.MULTILINE)  # for a whole body at once


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


def split_sections(
    body: str, body_line: int, path: Path
) -> tuple[list[Section], list[GlossaryError]]:
    """The sections of `body` (which starts on file line `body_line`), and what is wrong with
    them: text before the first heading, a required section missing, a section left empty."""
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


def body_character_errors(body: str, body_line: int, path: Path) -> list[GlossaryError]:
    """Every body line holding a character the rule refuses, one error per line naming the
    first such character on it."""
    errors: list[GlossaryError] = []
    found = list(refused(CANDIDATE_RE.finditer(body)))
    lines = _lines_of(body, body_line, (m.start() for m in found))
    for bad, line in zip(found, lines, strict=True):
        if not errors or errors[-1].line != line:
            errors.append(GlossaryError(path, line, "body", refusal(bad[0])))
    return errors


def reference_errors(body: str, body_line: int, path: Path) -> list[GlossaryError]:
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
