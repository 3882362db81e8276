"""The gettext catalogues: every fixed string a reader sees, in the newsletter's or the reader's
language, for templates (Jinja2's i18n extension) and for the code alike.

The catalogues are the `.po` files under digest/locale, compiled in memory the first time a
locale is asked for (Babel): the file a translator edits is the one that runs, with no compiled
`.mo` to forget. `en` is the language the strings are written in: its catalogue is the
identity, kept for the tools, and never read. Code writes `translations(locale).gettext("A whole sentence.")`: `pybabel extract`
finds a string literal passed to `.gettext` / `.ngettext` (docs/translating.md).
"""

from __future__ import annotations

from functools import lru_cache
from gettext import GNUTranslations, NullTranslations
from io import BytesIO

from digest.packaged import SOURCE_LOCALE, available_locales, locale_dir

__all__ = [
    "DOMAIN",
    "N_",
    "SOURCE_LOCALE",
    "UnknownLocale",
    "accepted_locale",
    "available_locales",
    "catalogue_path",
    "locale_choices",
    "reader_locale",
    "translations",
]

DOMAIN = "messages"


def N_(message: str) -> str:
    """Marks `message` for the catalogue without translating it (gettext's `gettext_noop`):
    for a string written where no locale is known yet (an exception's reason), which the
    page that shows it later looks up with `translations(locale).gettext(reason)`."""
    return message


class UnknownLocale(ValueError):
    """A locale digest has no catalogue for; the message lists the ones it has."""


def catalogue_path(locale: str) -> str:
    """Where `locale`'s catalogue lives: digest/locale/<locale>/LC_MESSAGES/messages.po."""
    return str(locale_dir() / locale / "LC_MESSAGES" / f"{DOMAIN}.po")


@lru_cache(maxsize=16)
def translations(locale: str) -> NullTranslations:
    """`locale`'s translations, compiled once per process. Fuzzy and empty entries are left
    out (Babel's `write_mo`), so an unfinished translation shows the English, never a guess.
    Babel's catalogue modules load here, in the first process that renders another language,
    not on every command's start."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    if locale not in available_locales():
        raise UnknownLocale(
            f"no catalogue for locale {locale!r}; available: {', '.join(available_locales())}"
        )
    if locale == SOURCE_LOCALE:  # the strings as written: its catalogue is the identity
        return NullTranslations()
    try:
        with open(catalogue_path(locale), "rb") as po:
            catalogue = read_po(po, locale=locale, domain=DOMAIN)
    except FileNotFoundError:  # listed a moment ago: removed while running
        return NullTranslations()
    compiled = BytesIO()
    write_mo(compiled, catalogue)
    compiled.seek(0)
    return GNUTranslations(compiled)


def reader_locale(value: str | None) -> str | None:
    """A reader's stored language as a locale digest can write in; None for none, or for one
    whose catalogue is gone (that reader then reads the newsletter's own language)."""
    return value if value in available_locales() else None


def locale_choices() -> list[tuple[str, str]]:
    """(locale, its name in its own language) for each available locale: what a language
    picker lists, so a reader finds theirs whatever language the page is in."""
    return [(code, _own_name(code)) for code in available_locales()]


@lru_cache(maxsize=16)
def _own_name(code: str) -> str:
    from babel import Locale

    name = Locale.parse(code).get_display_name(code) or code
    return name[:1].upper() + name[1:]


def accepted_locale(header: str | None) -> str | None:
    """The available locale a browser's Accept-Language prefers (RFC 9110 q-values; `nl-BE`
    is taken as `nl`), or None when it names none of them."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        if tag and tag != "*" and quality > 0:
            ranked.append((-quality, position, tag.strip()))
    preferred = [tag for _q, _p, tag in sorted(ranked)]
    from babel import negotiate_locale

    return negotiate_locale(preferred, list(available_locales()), sep="-")
