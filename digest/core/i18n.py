"""The gettext catalogues: every fixed string a reader sees, in the newsletter's or the reader's
language, for templates (Jinja2's i18n extension) and for the code alike.

The catalogues are the `.po` files under digest/locale, compiled in memory the first time a
locale is asked for (Babel): the file a translator edits is the one that runs, with no compiled
`.mo` to forget. `en` is the language the strings are written in, so its catalogue may stay
empty. Code writes `translations(locale).gettext("A whole sentence.")`: `pybabel extract`
finds a string literal passed to `.gettext` / `.ngettext` (docs/translating.md).
"""

from __future__ import annotations

from functools import lru_cache
from io import BytesIO

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from digest.packaged import SOURCE_LOCALE, available_locales, locale_dir

__all__ = [
    "DOMAIN",
    "SOURCE_LOCALE",
    "UnknownLocale",
    "available_locales",
    "catalogue_path",
    "translations",
]

DOMAIN = "messages"


class UnknownLocale(ValueError):
    """A locale digest has no catalogue for; the message lists the ones it has."""


def catalogue_path(locale: str) -> str:
    """Where `locale`'s catalogue lives: digest/locale/<locale>/LC_MESSAGES/messages.po."""
    return str(locale_dir() / locale / "LC_MESSAGES" / f"{DOMAIN}.po")


@lru_cache(maxsize=16)
def translations(locale: str) -> NullTranslations:
    """`locale`'s translations, compiled once per process. Fuzzy and empty entries are left
    out (Babel's `write_mo`), so an unfinished translation shows the English, never a guess."""
    if locale not in available_locales():
        raise UnknownLocale(
            f"no catalogue for locale {locale!r}; available: {', '.join(available_locales())}"
        )
    try:
        with open(catalogue_path(locale), "rb") as po:
            catalogue = read_po(po, locale=locale, domain=DOMAIN)
    except FileNotFoundError:  # the source language needs no catalogue
        return NullTranslations()
    compiled = BytesIO()
    write_mo(compiled, catalogue)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)
