"""The folders that ship inside digest: the default theme, the starter glossary, the catalogues.

A leaf module (it imports nothing of digest), so the renderer and `digest init` both find them
without one depending on the other. In a wheel they are `digest/theme` and `digest/starter`;
in a source checkout (editable installs, PYTHONPATH runs) the top-level `templates/` and
`terms/` beside the package.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

__all__ = ["available_locales", "default_theme_dir", "locale_dir", "starter_terms_dir"]

_PACKAGE = Path(__file__).resolve().parent


def _packaged(installed: str, checkout: str, what: str) -> Path:
    """A folder shipped with digest: `digest/<installed>` in a wheel, `<checkout>` beside the
    package in a source checkout (editable installs and PYTHONPATH runs both import from it)."""
    for candidate in (_PACKAGE / installed, _PACKAGE.parent / checkout):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"digest's {what} is missing: neither {_PACKAGE / installed} nor "
        f"{_PACKAGE.parent / checkout} exists; reinstall digest (pip install --force-reinstall)"
    )


@lru_cache(maxsize=1)
def default_theme_dir() -> Path:
    """The default theme: every template digest renders, each overridable by a project's own."""
    return _packaged("theme", "templates", "default theme")


@lru_cache(maxsize=1)
def starter_terms_dir() -> Path:
    """The starter glossary `digest init` copies its first terms from."""
    return _packaged("starter", "terms", "starter glossary")


# The language the templates and code are written in: it needs no catalogue to be available.
SOURCE_LOCALE = "en"


def locale_dir() -> Path:
    """The gettext catalogues, `<locale>/LC_MESSAGES/messages.po` (docs/translating.md)."""
    return _PACKAGE / "locale"


@lru_cache(maxsize=1)
def available_locales() -> tuple[str, ...]:
    """Every locale digest can write in: the source language and each shipped catalogue, sorted.
    Here, below the settings, so `DIGEST_LOCALE` is checked against it when settings are read."""
    found = {p.parent.parent.name for p in locale_dir().glob("*/LC_MESSAGES/messages.po")}
    return tuple(sorted(found | {SOURCE_LOCALE}))
