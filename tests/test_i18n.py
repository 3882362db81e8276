"""Two languages: the catalogues load, DIGEST_LOCALE picks one (and refuses one that is not
there), the feed speaks Dutch with `nl`, dates follow the locale, and the catalogues are whole:
every string the code and templates wrap is in the template catalogue, and `nl` translates all.
"""

from __future__ import annotations

import json
import os
import re
from datetime import date
from functools import cache
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from pydantic import ValidationError

from digest.config import Settings
from digest.core.dates import long_date
from digest.core.feed import feed_channel, render_json_feed, render_stylesheet
from digest.core.i18n import UnknownLocale, available_locales, catalogue_path, translations
from digest.core.render import base_context, environment, render_template
from digest.packaged import locale_dir

REPO = Path(__file__).resolve().parent.parent
FEED_TEMPLATES = ("feed.xsl.j2", "feed.xml.j2", "feed.atom.xml.j2")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No DIGEST_* variable and no settings file: each test says the locale it means."""
    for key in [k for k in os.environ if k.startswith("DIGEST_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@cache
def extracted() -> dict[str, set[str]]:
    """What `pybabel extract -F babel.cfg` finds, as {msgid: {files}}, done in-process with the
    same mapping file."""
    with open(REPO / "babel.cfg") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    found: dict[str, set[str]] = {}
    for filename, _line, message, _comments, _context in extract_from_dir(
        str(REPO), method_map, options_map
    ):
        msgid = message if isinstance(message, str) else message[0]
        found.setdefault(msgid, set()).add(filename)
    return found


def catalogue(locale: str | None) -> list[tuple[str, str, set[str]]]:
    """(msgid, msgstr, flags) of a catalogue; None: the template catalogue messages.pot."""
    path = locale_dir() / "messages.pot" if locale is None else Path(catalogue_path(locale))
    with open(path, "rb") as po:
        read = read_po(po, locale=locale)
    return [
        (m.id if isinstance(m.id, str) else m.id[0], m.string if isinstance(m.string, str)
         else m.string[0], set(m.flags))
        for m in read
        if m.id
    ]  # fmt: skip


# --------------------------------------------------------------------------- the catalogues


def test_the_shipped_locales_are_english_and_dutch():
    assert available_locales() == ("en", "nl")


def test_the_dutch_catalogue_translates_and_english_is_the_source():
    assert translations("nl").gettext("Recent issues") == "Recente edities"
    assert translations("en").gettext("Recent issues") == "Recent issues"
    # A string no catalogue has is shown as written, never as an empty string.
    assert translations("nl").gettext("Not a string of digest") == "Not a string of digest"


def test_an_unknown_locale_is_refused_by_the_catalogues():
    with pytest.raises(UnknownLocale, match=r"no catalogue for locale 'fr'; available: en, nl"):
        translations("fr")


def test_a_template_renders_in_the_locale_its_context_names(tmp_path):
    # One environment serves both languages: the same compiled template, looked up per render.
    english = render_template(tmp_path, "feed.xsl.j2", base_context(Settings()))
    dutch = render_template(tmp_path, "feed.xsl.j2", base_context(Settings(), locale="nl"))
    assert "Recent issues" in english and "Recente edities" not in english
    assert "Recente edities" in dutch and "Recent issues" not in dutch
    assert environment(tmp_path) is environment(tmp_path)


def test_render_template_takes_a_locale_that_beats_the_context(tmp_path):
    page = render_template(tmp_path, "feed.xsl.j2", base_context(Settings()), locale="nl")
    assert "Recente edities" in page


# --------------------------------------------------------------------------- DIGEST_LOCALE


def test_the_locale_defaults_to_english(clean_env):
    settings = Settings()
    assert (settings.locale, settings.language) == ("en", "en")


def test_digest_locale_chooses_the_language(clean_env):
    clean_env.setenv("DIGEST_LOCALE", "nl")
    settings = Settings()
    assert (settings.locale, settings.language) == ("nl", "nl")
    assert base_context(settings)["locale"] == "nl"


def test_digest_language_still_works_as_the_old_name(clean_env):
    clean_env.setenv("DIGEST_LANGUAGE", "nl")
    assert Settings().locale == "nl"
    clean_env.setenv("DIGEST_LOCALE", "en")
    assert Settings().locale == "en"  # the new name wins


def test_an_unknown_digest_locale_is_refused_at_start_up(clean_env):
    clean_env.setenv("DIGEST_LOCALE", "fr")
    with pytest.raises(ValidationError, match=r"there is no catalogue for 'fr'; available: en, nl"):
        Settings()


def test_settings_for_another_locale_are_a_copy_in_that_locale():
    settings = Settings()
    dutch = settings.for_locale("nl")
    assert (dutch.locale, dutch.language) == ("nl", "nl")
    assert settings.locale == "en"
    assert settings.for_locale(None) is settings
    with pytest.raises(ValueError, match="no catalogue for 'fr'"):
        settings.for_locale("fr")


# --------------------------------------------------------------------------- the feed in Dutch


def dutch_msgids_of(templates: tuple[str, ...]) -> list[str]:
    found = extracted()
    return [m for m, files in found.items() if any(f"templates/{t}" in files for t in templates)]


def test_the_feed_stylesheet_is_dutch_with_nl(tmp_path):
    settings = Settings(locale="nl", templates_dir=tmp_path)
    page = render_stylesheet(settings)
    assert '<p class="date">Dit is een webfeed</p>' in page
    assert "<strong>Kopieer deze URL naar je feedlezer</strong>" in page
    assert 'Liever per e-mail? <a href="http://localhost:8000/">Abonneer je' in page
    assert 'this.textContent = "Gekopieerd";' in page
    nl = translations("nl")
    wrapped = dutch_msgids_of(FEED_TEMPLATES)
    assert len(wrapped) >= 9
    for msgid in wrapped:
        if nl.gettext(msgid) != msgid:  # "feed" is Dutch as well
            assert msgid.split("%(")[0] not in page, f"English left in the nl feed: {msgid!r}"


def test_the_feeds_describe_the_newsletter_in_dutch_with_nl(tmp_path):
    channel = feed_channel(Settings(locale="nl", templates_dir=tmp_path), [])
    assert channel.description == (
        "AI Term of the Week: elke week één AI-term uitgelegd — wat het betekent, waarom het "
        "ertoe doet, hoe het werkt en verwante begrippen."
    )
    feed = json.loads(render_json_feed(channel))
    assert (feed["language"], feed["description"]) == ("nl", channel.description)


def test_the_english_feed_is_as_before(tmp_path):
    settings = Settings(templates_dir=tmp_path)
    assert feed_channel(settings, []).description.startswith(
        "AI Term of the Week: one AI term explained every week — what it means"
    )
    page = render_stylesheet(settings)
    assert "<strong>Copy this URL into your feed reader</strong> to get every new issue" in page


def test_dates_are_written_in_the_locale():
    day = date(2026, 12, 7)
    assert long_date(day, "nl") == "7 december 2026"
    assert long_date(day, "en") == "December 7, 2026"


def test_the_feed_has_no_clock_or_locale_leak_between_renders(tmp_path):
    # The locale rides on the context, not on the environment: an nl render in between leaves
    # the next English one English.
    english = Settings(templates_dir=tmp_path)
    first = render_stylesheet(english)
    render_stylesheet(english.for_locale("nl"))
    assert render_stylesheet(english) == first


# --------------------------------------------------------------------------- completeness


def test_the_template_catalogue_holds_every_wrapped_string():
    """`pybabel extract` (docs/translating.md) was run after the last string was wrapped."""
    found = set(extracted())
    in_pot = {msgid for msgid, _string, _flags in catalogue(None)}
    assert found, "the extraction found nothing: is babel.cfg's mapping right?"
    assert found - in_pot == set(), "run the extract and update commands of docs/translating.md"
    assert in_pot - found == set(), "messages.pot has strings nothing uses: extract again"


@pytest.mark.parametrize("locale", ["en", "nl"])
def test_each_catalogue_has_every_string_of_the_template(locale):
    in_pot = {msgid for msgid, _string, _flags in catalogue(None)}
    in_catalogue = {msgid for msgid, _string, _flags in catalogue(locale)}
    assert in_pot - in_catalogue == set(), f"run `pybabel update` for {locale}"


def test_the_dutch_catalogue_translates_every_string():
    untranslated = [m for m, string, flags in catalogue("nl") if not string or "fuzzy" in flags]
    assert untranslated == []


def test_the_dutch_translations_keep_their_placeholders():
    with open(catalogue_path("nl"), "rb") as po:
        read = read_po(po, locale="nl")
    problems = [(m.id, [str(e) for e in errors]) for m, errors in read.check() if errors]
    assert problems == []
    for message in read:
        if message.id and "%(" in str(message.id):
            assert sorted(_names(str(message.id))) == sorted(_names(str(message.string)))


def _names(text: str) -> list[str]:
    return re.findall(r"%\((\w+)\)s", text)
