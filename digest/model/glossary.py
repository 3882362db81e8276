"""The glossary's data: `Term`, `Glossary` and the `GlossaryError` that names a file's problem.

Plain types with no knowledge of files or YAML, so selection, rendering and checks can take a
glossary built anywhere (the loader in `digest.store.terms`, or a test by hand).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from digest.model.weeks import IsoWeek

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

__all__ = [
    "DIFFICULTY_RANK",
    "REQUIRED_SECTIONS",
    "Alias",
    "Difficulty",
    "Glossary",
    "GlossaryError",
    "InvalidGlossary",
    "Section",
    "Source",
    "Term",
    "render_markdown",
]

Difficulty = Literal["beginner", "intermediate", "advanced"]
DIFFICULTY_RANK: dict[str, int] = {"beginner": 0, "intermediate": 1, "advanced": 2}
REQUIRED_SECTIONS = ("Why it matters", "How it works", "Example")


@cache
def _markdown() -> MarkdownIt:
    """The one renderer, made on first use: importing markdown-it is tens of milliseconds that
    every command paid at start-up, and loading a glossary renders nothing."""
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    return renderer.enable("table")


def render_markdown(text: str) -> str:
    """Markdown → HTML with raw HTML disabled, so a term file cannot inject markup."""
    return str(_markdown().render(text))


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
    # The term file's own subject line and inbox preview; None: the built-in default.
    subject: str | None = None
    preheader: str | None = None
    # The Word-of-the-Day extras, shown only when the file has them: how to say the term (an
    # acronym's "RAG — rhymes with bag") and a short "Did you know?" note.
    pronunciation: str | None = None
    did_you_know: str | None = None

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


def _slug_of(term: Term) -> str:
    return term.slug


class Glossary:
    """All terms of a folder, indexed by slug and by alias, with the related-concept graph.

    `left_out` names the files read but left out for their errors (slug → errors): selection
    must say why it passed over a queued term, not act as if the editor never queued it.
    """

    def __init__(
        self,
        terms: Iterable[Term],
        left_out: Mapping[str, Sequence[GlossaryError]] | None = None,
        *,
        names: dict[str, str] | None = None,
    ) -> None:
        """`names`: the casefolded-name → slug index of exactly these terms, when the caller
        has built it already (the loader does, checking that no two terms share a name)."""
        self._terms: dict[str, Term] = {t.slug: t for t in sorted(terms, key=_slug_of)}
        self.left_out: dict[str, tuple[GlossaryError, ...]] = {
            slug: tuple(errors) for slug, errors in (left_out or {}).items()
        }
        if names is not None:
            self._names: dict[str, str] = names
            return
        self._names = {}
        claim = self._names.setdefault
        for term in self._terms.values():
            slug = term.slug
            claim(slug.casefold(), slug)
            claim(term.title.casefold(), slug)
            for alias in term.aliases:
                claim(alias.name.casefold(), slug)

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
