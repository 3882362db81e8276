"""The rules of a folder of term files: the names and links each file declares, checked together.

Kept apart from the rules of one file (`digest.core.term_rules`, which needs pydantic and YAML), so
a glossary read from the parse cache runs every folder-wide rule without loading either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from digest.model.glossary import Glossary, GlossaryError, Term

__all__ = ["ParsedTerm", "assemble", "shown"]


def shown(value: object, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters, so one error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ParsedTerm:
    """What one file yielded: the Term when valid, and the names and links it declares.

    Names and links are kept even when the file has other errors, so the folder-wide checks
    (unknown related slug, alias clash) still report on it in the same run. A valid term from
    the parse cache (`of_valid`) keeps only their lines: the folder rules look at its Term, and
    the lists are made only for an error's line.
    """

    __slots__ = ("_lines", "_links", "_names", "_related", "path", "slug", "term")

    def __init__(
        self,
        path: Path,
        slug: str,
        term: Term | None,
        names: list[tuple[str, str, int | None]],  # (kind, value, line): kind is slug/title/alias
        related: list[tuple[str, int | None]],
    ) -> None:
        self.path = path
        self.slug = slug
        self.term = term
        self._names: list[tuple[str, str, int | None]] | None = names
        self._related: list[tuple[str, int | None]] | None = related
        self._lines: Sequence[int | None] = ()
        self._links: Sequence[int | None] = ()

    @classmethod
    def of_valid(
        cls, path: Path, term: Term, lines: Sequence[int | None], links: Sequence[int | None]
    ) -> ParsedTerm:
        """A valid file whose names are its term's slug, title and aliases, on `lines` (the
        title's, then each alias's), and whose links are its `related`, on `links`."""
        parsed = cls.__new__(cls)
        parsed.path, parsed.slug, parsed.term = path, term.slug, term
        parsed._names = parsed._related = None
        parsed._lines, parsed._links = lines, links
        return parsed

    @property
    def names(self) -> list[tuple[str, str, int | None]]:
        if self._names is None:
            term = self.term
            assert term is not None
            lines = self._lines
            self._names = [("slug", term.slug, None), ("title", term.title, lines[0])]
            self._names.extend(
                ("alias", a.name, line) for a, line in zip(term.aliases, lines[1:], strict=True)
            )
        return self._names

    @property
    def related(self) -> list[tuple[str, int | None]]:
        if self._related is None:
            assert self.term is not None
            self._related = list(zip(self.term.related, self._links, strict=True))
        return self._related

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParsedTerm):
            return NotImplemented
        return (self.path, self.slug, self.term, self.names, self.related) == (
            other.path,
            other.slug,
            other.term,
            other.names,
            other.related,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass it replaced

    def __repr__(self) -> str:
        fields = (self.path, self.slug, self.term, self.names, self.related)
        return f"ParsedTerm{fields!r}"


def _name_index(parsed: list[ParsedTerm]) -> dict[str, str] | None:
    """Casefolded name → slug over every file, when no folder-wide rule is broken; else None,
    and `_cross_check` says what is. What the loader meets nearly always: it reads each cached
    term's own fields (no names or links lists, no lines) and claims each name once.

    Equivalent to `_cross_check` finding nothing, in any order: that reports exactly a name
    claimed by two different terms, an alias listed twice in one term and a link to no term.
    """
    owners = {p.slug.casefold(): p.slug for p in parsed}
    if len(owners) != len(parsed):  # two slugs equal but for case: the slow path decides
        return None
    slugs = {p.slug for p in parsed}
    claim = owners.setdefault
    for p in parsed:
        slug, term = p.slug, p.term
        if p._names is None and term is not None:
            if claim(term.title.casefold(), slug) != slug:
                return None
            aliases = [a.name.casefold() for a in term.aliases]
            related: Iterable[str] = term.related
        else:
            aliases = []
            for kind, value, _line in p.names:
                if kind == "title":
                    if claim(value.casefold(), slug) != slug:
                        return None
                elif kind == "alias":
                    aliases.append(value.casefold())
            related = [other for other, _line in p.related]
        if len(set(aliases)) != len(aliases) or not slugs.issuperset(related):
            return None
        for key in aliases:
            if claim(key, slug) != slug:
                return None
    return owners


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
    index = _name_index(parsed)
    if index is not None and not errors and all(p._names is None for p in parsed):
        # Every file valid, from the cache, every name its term's own and claimed once: the
        # index is the one Glossary would build from these very terms, so it is not built twice.
        return Glossary((p.term for p in parsed if p.term is not None), names=index), []
    errors = [*errors, *_cross_check(parsed)] if index is None else list(errors)
    bad = {e.path for e in errors}
    errors.sort(key=lambda e: (str(e.path), e.line or 0))
    left_out: dict[str, list[GlossaryError]] = {}
    for error in errors:
        if error.path.suffix == ".md":  # a term file, named for its slug (not the folder)
            left_out.setdefault(error.path.stem, []).append(error)
    # `bad` is nearly always empty, and hashing a Path is a microsecond a term.
    terms = (p.term for p in parsed if p.term is not None and (not bad or p.path not in bad))
    return Glossary(terms, left_out), errors
