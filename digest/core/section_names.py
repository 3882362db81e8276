"""The names of a term's required sections ("Why it matters", "How it works", "Example") as a
page in another language shows them.

Every term file carries them under these English headings (digest.model.glossary's
`REQUIRED_SECTIONS`, which `digest check` asks for), so they are fixed words of the pages, not
the editor's: a page looks them up in its catalogue. Any other heading is the editor's own
and shows as written, and so does every heading in English, the language they are written in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from digest.core.i18n import N_, SOURCE_LOCALE, translations

__all__ = ["section_title", "translated_sections"]

# By name folded as `core.term_body` matches them (case aside).
_REQUIRED = {
    name.casefold(): name for name in (N_("Why it matters"), N_("How it works"), N_("Example"))
}


def section_title(title: str, locale: str) -> str:
    """`title` in `locale` when it is a required section's name, else as written."""
    known = _REQUIRED.get(title.strip().casefold())
    if known is None or locale == SOURCE_LOCALE:
        return title
    return translations(locale).gettext(known)


def translated_sections(sections: Sequence[Mapping[str, Any]], locale: str) -> list[dict[str, Any]]:
    """A snapshot's sections (`{"title", "html", …}`) with their titles as `section_title` says."""
    return [{**s, "title": section_title(str(s["title"]), locale)} for s in sections]
