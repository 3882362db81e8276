"""The glossary site's pages: `/glossary/` (every term by category, with search) and one page per
term, rendered from the glossary itself, for `digest serve` and `digest build` alike.

Pure: a glossary and settings in, HTML out, so the served page and the built file are the same
bytes. The pages link to each other under `{base_url}/glossary` whatever `site_url` says: the
mail may send readers to another glossary site, but these pages must stand on their own.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError

from digest.config import GLOSSARY_PATH, Settings
from digest.core.i18n import N_, translations
from digest.core.render import base_context, render_template
from digest.core.section_names import section_title
from digest.core.selection import related_concepts
from digest.core.urls import Urls
from digest.model.glossary import Glossary, Term

__all__ = [
    "GLOSSARY_TITLE",
    "SEARCH_SCRIPT",
    "category_anchors",
    "glossary_title",
    "language_name",
    "ordered_terms",
    "render_index",
    "render_site",
    "render_term_page",
    "search_script",
    "site_urls",
]

# What the pages call the glossary: the index's heading, the breadcrumb and the structured data
# (in the page's language: `glossary_title`).
GLOSSARY_TITLE = N_("Glossary")
# The index's one script, a template of its own so that its exact bytes can be hashed for the
# Content-Security-Policy (digest.web.glossary): the page and the hash come from one source.
SEARCH_SCRIPT = "glossary/search.js.j2"
_NOT_ANCHOR = re.compile(r"[^a-z0-9]+")


def site_urls(settings: Settings) -> Urls:
    """The addresses of digest's own glossary pages: `Urls` with `site_url` at `/glossary`."""
    return replace(Urls.from_settings(settings), site_url=f"{settings.base_url}{GLOSSARY_PATH}")


def ordered_terms(glossary: Glossary) -> list[Term]:
    """Every term in the site's reading order, by title (ignoring case) and then slug: what
    the index lists within a category and what "previous" and "next" follow."""
    return sorted(glossary, key=lambda t: (t.title.casefold(), t.slug))


def category_anchors(categories: Iterable[str]) -> dict[str, str]:
    """An HTML id for each category ("Models & Architecture" → "models-architecture"), unique
    even when two names fold to the same letters or to none ("category-2")."""
    anchors: dict[str, str] = {}
    taken: set[str] = set()
    for number, name in enumerate(sorted(set(categories), key=str.casefold), start=1):
        folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
        anchor = _NOT_ANCHOR.sub("-", folded.lower()).strip("-") or f"category-{number}"
        candidate, n = anchor, 2
        while candidate in taken:
            candidate, n = f"{anchor}-{n}", n + 1
        taken.add(candidate)
        anchors[name] = candidate
    return anchors


@lru_cache(maxsize=256)
def language_name(code: str, locale: str) -> str:
    """The language `code` names ("nl"), written in `locale` ("Dutch" in en, "Nederlands" in
    nl); the code itself for a language Babel does not know."""
    try:
        return str(Locale.parse(code.replace("-", "_")).get_display_name(locale) or code)
    except (UnknownLocaleError, ValueError, TypeError):
        return code


def glossary_title(settings: Settings) -> str:
    """`GLOSSARY_TITLE` in the site's language."""
    return translations(settings.locale).gettext(GLOSSARY_TITLE)


def search_script(settings: Settings) -> str:
    """The index's inline script, as the page carries it between `<script>` and `</script>`."""
    return render_template(settings.templates_dir, SEARCH_SCRIPT, {})


# --------------------------------------------------------------------------- the index


def _index_context(settings: Settings, terms: Sequence[Term]) -> dict[str, Any]:
    urls = site_urls(settings)
    anchors = category_anchors(t.category for t in terms)
    groups: dict[str, list[dict[str, str]]] = {name: [] for name in anchors}
    for term in terms:
        groups[term.category].append(
            {
                "title": term.title,
                "url": urls.term(term.slug),
                "summary": term.summary,
                "difficulty": term.difficulty,
                # What the search matches besides the visible text.
                "names": " ".join([term.slug, *(a.name for a in term.aliases)]),
            }
        )
    index_url = urls.glossary_index()
    title = glossary_title(settings)
    name = f"{settings.newsletter_name}: {title}"
    return {
        **base_context(settings),
        "glossary_title": title,
        "index_url": index_url,
        "groups": [
            {"name": category, "anchor": anchors[category], "terms": entries}
            for category, entries in groups.items()
        ],
        "term_count": len(terms),
        "search_script": SEARCH_SCRIPT,
        "jsonld": {
            "@context": "https://schema.org",
            "@type": "DefinedTermSet",
            "@id": f"{index_url}#glossary",
            "name": name,
            "url": index_url,
            "inLanguage": settings.language,
            "hasDefinedTerm": [
                {
                    "@type": "DefinedTerm",
                    "@id": f"{urls.term(t.slug)}#term",
                    "name": t.title,
                    "description": t.summary,
                    "url": urls.term(t.slug),
                }
                for t in terms
            ],
        },
    }


def render_index(settings: Settings, glossary: Glossary) -> str:
    """`/glossary/`: every term under its category's heading, with its one-liner and level."""
    context = _index_context(settings, ordered_terms(glossary))
    return render_template(settings.templates_dir, "glossary/index.html.j2", context)


# --------------------------------------------------------------------------- a term


def _term_context(
    settings: Settings,
    glossary: Glossary,
    term: Term,
    neighbours: tuple[Term | None, Term | None],
    anchors: dict[str, str],
) -> dict[str, Any]:
    urls = site_urls(settings)
    index_url, page_url = urls.glossary_index(), urls.term(term.slug)
    category_url = f"{index_url}#{anchors[term.category]}"
    # The editor's whole `related` list, topped up to the mail's count as the mail chooses.
    related = related_concepts(glossary, term, max(len(term.related), settings.related_count))
    previous, following = neighbours
    aliases = [
        {
            "name": a.name,
            "lang": a.lang,
            "language": language_name(a.lang, settings.locale) if a.lang else None,
        }
        for a in term.aliases
    ]
    home = urls.home()
    title = glossary_title(settings)
    return {
        **base_context(settings),
        "glossary_title": title,
        "term": term,
        # The required sections' headings in the page's language, the editor's own as written.
        "sections": [
            {"title": section_title(s.title, settings.locale), "html": s.html}
            for s in term.sections
        ],
        "aliases": aliases,
        "index_url": index_url,
        "page_url": page_url,
        "category_url": category_url,
        "related": [
            {"title": o.title, "summary": o.summary, "url": urls.term(o.slug)} for o in related
        ],
        "previous": _link(urls, previous),
        "next": _link(urls, following),
        "jsonld": {
            "@context": "https://schema.org",
            "@graph": [
                {
                    "@type": "DefinedTerm",
                    "@id": f"{page_url}#term",
                    "url": page_url,
                    "name": term.title,
                    "description": term.definition,
                    "termCode": term.slug,
                    "inLanguage": settings.language,
                    **({"alternateName": [_alias_value(a) for a in aliases]} if aliases else {}),
                    "inDefinedTermSet": {
                        "@type": "DefinedTermSet",
                        "@id": f"{index_url}#glossary",
                        "name": f"{settings.newsletter_name}: {title}",
                        "url": index_url,
                    },
                },
                {
                    "@type": "BreadcrumbList",
                    "itemListElement": [
                        _crumb(1, settings.newsletter_name, home),
                        _crumb(2, title, index_url),
                        _crumb(3, term.category, category_url),
                        _crumb(4, term.title, page_url),
                    ],
                },
            ],
        },
    }


def _link(urls: Urls, term: Term | None) -> dict[str, str] | None:
    return {"title": term.title, "url": urls.term(term.slug)} if term else None


def _alias_value(alias: dict[str, Any]) -> object:
    """An alias in JSON-LD: a plain name, or a language-tagged value ("basismodel"@nl)."""
    if alias["lang"]:
        return {"@value": alias["name"], "@language": alias["lang"]}
    return alias["name"]


def _crumb(position: int, name: str, url: str) -> dict[str, object]:
    return {"@type": "ListItem", "position": position, "name": name, "item": url}


def _neighbours(terms: Sequence[Term], at: int) -> tuple[Term | None, Term | None]:
    return (terms[at - 1] if at > 0 else None, terms[at + 1] if at + 1 < len(terms) else None)


def render_term_page(settings: Settings, glossary: Glossary, slug: str) -> str | None:
    """`/glossary/<slug>`, in the shape of the seed page; None when the glossary has no `slug`."""
    term = glossary.get(slug)
    if term is None:
        return None
    terms = ordered_terms(glossary)
    at = next(i for i, t in enumerate(terms) if t.slug == slug)
    anchors = category_anchors(t.category for t in terms)
    context = _term_context(settings, glossary, term, _neighbours(terms, at), anchors)
    return render_template(settings.templates_dir, "glossary/term.html.j2", context)


# --------------------------------------------------------------------------- the whole site


def render_site(settings: Settings, glossary: Glossary) -> dict[str, str]:
    """Every page of the glossary site by its path in a static build: `glossary/index.html`
    and `glossary/<slug>/index.html`, which a web server answers at the served addresses."""
    terms = ordered_terms(glossary)
    anchors = category_anchors(t.category for t in terms)
    prefix = GLOSSARY_PATH.strip("/")
    pages = {
        f"{prefix}/index.html": render_template(
            settings.templates_dir,
            "glossary/index.html.j2",
            _index_context(settings, terms),
        )
    }
    for at, term in enumerate(terms):
        context = _term_context(settings, glossary, term, _neighbours(terms, at), anchors)
        pages[f"{prefix}/{term.slug}/index.html"] = render_template(
            settings.templates_dir, "glossary/term.html.j2", context
        )
    return pages
