"""The rules of a folder of term files: the names and links each file declares, checked together.

Kept apart from the rules of one file (`digest.core.term_rules`, which needs pydantic and YAML), so
a glossary read from the parse cache runs every folder-wide rule without loading either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from digest.model.glossary import Glossary, GlossaryError, Term

__all__ = ["ParsedTerm", "assemble", "shown"]


def shown(value: object, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters, so one error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class ParsedTerm:
    """What one file yielded: the Term when valid, and the names and links it declares.

    Names and links are kept even when the file has other errors, so the folder-wide checks
    (unknown related slug, alias clash) still report on it in the same run.
    """

    path: Path
    slug: str
    term: Term | None
    names: list[tuple[str, str, int | None]]  # (kind, value, line): kind is slug/title/alias
    related: list[tuple[str, int | None]]


def _cross_check(parsed: list[ParsedTerm]) -> list[GlossaryError]:
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
                message = f"{shown(value)} is already used by term {owner!r}"
                errors.append(GlossaryError(p.path, line, "title", message))
    for p in parsed:
        for other, line in p.related:
            if other not in slugs:
                message = f"unknown term {shown(other)}"
                errors.append(GlossaryError(p.path, line, "related", message))
        own: set[str] = set()
        for kind, value, line in p.names:
            if kind != "alias":
                continue
            key = value.casefold()
            holder = owners.get(key)
            if key in own:
                message = f"{shown(value)} is listed twice"
                errors.append(GlossaryError(p.path, line, "aliases", message))
            elif holder is not None and holder != p.slug:
                message = f"{shown(value)} is already used by term {holder!r}"
                errors.append(GlossaryError(p.path, line, "aliases", message))
            else:
                owners[key] = p.slug
            own.add(key)
    return errors


def assemble(
    parsed: list[ParsedTerm], errors: list[GlossaryError]
) -> tuple[Glossary, list[GlossaryError]]:
    """The glossary of a folder's parsed files, given the errors found reading them: the
    folder-wide checks added, every term of a file with an error left out, errors in file and
    line order."""
    errors = [*errors, *_cross_check(parsed)]
    bad = {e.path for e in errors}
    errors.sort(key=lambda e: (str(e.path), e.line or 0))
    left_out: dict[str, list[GlossaryError]] = {}
    for error in errors:
        if error.path.suffix == ".md":  # a term file, named for its slug (not the folder)
            left_out.setdefault(error.path.stem, []).append(error)
    # `bad` is nearly always empty, and hashing a Path is a microsecond a term.
    terms = (p.term for p in parsed if p.term is not None and (not bad or p.path not in bad))
    return Glossary(terms, left_out), errors
