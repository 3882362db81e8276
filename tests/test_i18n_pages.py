"""The reader's pages in two languages: with DIGEST_LOCALE=nl no English is left on any of them.

Each page is fetched from the app once in English and once in Dutch, on the same database; every
visible text (a text node, and the alt, title, aria-label, placeholder, label and button value
attributes) that is the same in both is either content (the glossary's own words, the newsletter's
name and postal address, addresses, zone names, language names, numbers) or a fixed string left
untranslated, which fails the test by name. Then: a page reached from a reader's link speaks
that reader's language on a newsletter in another, and the zone picker's regions are Dutch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from digest.config import Settings
from digest.core.i18n import locale_choices
from digest.core.section_names import section_title
from digest.core.tokens import make_token
from digest.core.zones import canonical_zones, zone_groups
from digest.model.glossary import REQUIRED_SECTIONS, Glossary
from digest.model.subscriber import Subscriber
from digest.model.weeks import IsoWeek
from digest.store import db
from digest.store.reader_language import set_language
from digest.store.subscribers import add_confirmed, start_opt_in, unsubscribe_subscriber
from digest.web import create_app
from tests.test_feed_http import send

# The pages are the same on either backend; one real SQLite file is enough to read them.
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

OLDER, LATEST = IsoWeek(2026, 18), IsoWeek(2026, 19)
SENT = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

# What a page shows but no catalogue translates: the feed format's own name ("RSS" in the
# footer), and ISO weeks and times.
_NAMES = ("RSS", "UTC")
# Translations that are the English word, as Dutch writes it: said here, one by one, so that a
# string left untranslated never passes for one.
_SAME_IN_DUTCH = frozenset({"1 week"})
_NOT_WORDS = re.compile(r"https?://\S+|\S*@\S+|\d{4}-W\d{2}|\d{1,2}:\d{2}")


class _Segments(HTMLParser):
    """The texts a reader sees on a page, one per text node and per shown attribute."""

    _SHOWN = ("alt", "title", "aria-label", "placeholder", "data-none", "data-one", "data-many")

    def __init__(self, fragment: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._skip = 0
        self._in_title = False
        self._in_body = fragment  # a fragment is all body

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        self._in_title = tag == "title"
        self._in_body = self._in_body or tag == "body"
        if not self._in_body:
            return
        given = dict(attrs)
        shown = [given.get(name) for name in self._SHOWN]
        if tag == "optgroup":
            shown.append(given.get("label"))
        if tag in ("button", "input") and given.get("type") in ("submit", "button", None):
            shown.append(given.get("value") if tag == "button" else None)
        self.found.extend(_one_line(v) for v in shown if v and _one_line(v))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._skip or not (self._in_body or self._in_title):
            return
        text = _one_line(data)
        if text:
            self.found.append(text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def segments(html: str, *, fragment: bool = False) -> list[str]:
    parser = _Segments(fragment)
    parser.feed(html)
    return parser.found


def content_words(glossary: Glossary, settings: Settings) -> list[str]:
    """Every text a page may show as written, whatever its language: the glossary's own words,
    the newsletter's, zone and language names. Longest first, so a title goes before a word in it."""
    words = {settings.newsletter_name, settings.postal_address, *_NAMES}
    for term in glossary:
        words.update((term.title, term.summary, term.definition, term.category, term.slug))
        words.update(alias.name for alias in term.aliases)
        words.update(alias.lang for alias in term.aliases if alias.lang)
        words.update(source.title for source in term.sources)
        words.update(s.title for s in term.sections if s.title not in REQUIRED_SECTIONS)
        for section in term.sections:  # the text nodes of its Markdown, as a page splits them
            words.update(segments(section.html, fragment=True))
        words.update(w for w in (term.pronunciation, term.did_you_know) if w)
    words.update(canonical_zones())
    words.update(name for _code, name in locale_choices())
    # A place whose name is the same in both languages ("Paramaribo (Suriname)").
    labels = {
        locale: {z.label for g in zone_groups(locale) for z in g.zones} for locale in ("en", "nl")
    }
    words.update(labels["en"] & labels["nl"])
    return sorted((_one_line(w) for w in words if w and len(w.strip()) > 1), key=len, reverse=True)


def english_left(english: list[str], dutch: list[str], content: list[str]) -> list[str]:
    """The texts both pages show alike that are neither content nor free of words."""
    left = []
    for text in sorted(set(english) & set(dutch) - _SAME_IN_DUTCH):
        rest = text
        for word in content:
            if word in rest:  # as a whole word: the alias language "nl" is not in "online"
                rest = re.sub(rf"(?<!\w){re.escape(word)}(?!\w)", " ", rest)
        rest = _NOT_WORDS.sub(" ", rest)
        if re.search(r"[^\W\d_]", rest):
            left.append(text)
    return left


# --------------------------------------------------------------------------- the site


def _token(settings: Settings, purpose: str, reader: Subscriber) -> str:
    return make_token(settings, purpose, reader.id, reader.email)  # type: ignore[arg-type]


@pytest.fixture
def site(settings: Settings, engine: Engine, starter_glossary: Glossary) -> dict[str, str]:
    """Two sent issues and a reader in each state; the paths of every page a reader meets."""
    send(engine, settings, starter_glossary, OLDER, SENT - timedelta(weeks=1))
    send(engine, settings, starter_glossary, LATEST, SENT)
    now = db.utcnow()
    pat = start_opt_in(
        engine, settings, "pat@example.org", name="Pat", timezone=None, source="web", now=now
    ).subscriber
    ann, _ = add_confirmed(engine, "ann@example.org", name="Ann", timezone="Asia/Tokyo", now=now)
    bob, _ = add_confirmed(engine, "bob@example.org", name="Bob", now=now)
    unsubscribe_subscriber(engine, bob.id, now=now)
    term = next(t for t in starter_glossary if t.aliases and t.related)
    return {
        "home": "/",
        "confirm": f"/confirm/{_token(settings, 'confirm', pat)}",
        "subscribed": f"/confirm/{_token(settings, 'confirm', ann)}",
        "unsubscribe": f"/unsubscribe/{_token(settings, 'unsubscribe', ann)}",
        "unsubscribed": f"/unsubscribe/{_token(settings, 'unsubscribe', bob)}",
        "preferences": f"/preferences/{_token(settings, 'preferences', ann)}",
        "preferences of the unsubscribed": f"/preferences/{_token(settings, 'preferences', bob)}",
        "bad link": "/preferences/not-a-token",
        "not found": "/no-such-page",
        "glossary index": "/glossary/",
        "glossary term": f"/glossary/{term.slug}",
        "archive index": "/issues/",
        "archive issue": f"/issues/{LATEST}",
        "archive issue answered": f"/issues/{LATEST}?answer=1",
        "older archive issue": f"/issues/{OLDER}",
    }


def pages(client: TestClient, paths: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(name, html) of every reader page: the GETs of `paths`, and the answers of the forms
    that change nothing lasting (a sign-up's "check your inbox", a refused address, the erase
    page's question, a pause)."""
    for name, path in paths.items():
        answer = client.get(path)
        assert answer.status_code in (200, 400, 404), (name, answer.status_code)
        yield name, answer.text
    subscribed = client.post("/subscribe", data={"email": "new@example.org"})
    yield "check your inbox", subscribed.text
    refused = client.post("/subscribe", data={"email": "not an address"})
    assert refused.status_code == 422
    yield "refused address", refused.text
    preferences = paths["preferences"]
    yield "erase?", client.post(f"{preferences}/erase").text
    yield "paused", client.post(f"{preferences}/pause", data={"weeks": "2"}).text
    yield "paused again", client.post(f"{preferences}/pause", data={"weeks": "99"}).text
    yield "resumed", client.post(f"{preferences}/resume").text


def both(settings: Settings, **changes: object) -> tuple[Settings, Settings]:
    english = settings.model_copy(update=changes)
    return english, english.for_locale("nl")


@on_sqlite
@pytest.mark.parametrize("tracking", [False, True], ids=["untracked", "tracked"])
def test_no_english_is_left_on_the_dutch_pages(settings, engine, starter_glossary, site, tracking):
    english, dutch = both(settings, track_clicks=tracking, track_opens=tracking)
    seen: dict[str, dict[str, str]] = {}
    for name, app_settings in (("en", english), ("nl", dutch)):
        with TestClient(create_app(app_settings)) as client:
            seen[name] = dict(pages(client, site))
    assert seen["en"].keys() == seen["nl"].keys()
    content = content_words(starter_glossary, settings)
    left = {
        page: found
        for page in seen["en"]
        if (found := english_left(segments(seen["en"][page]), segments(seen["nl"][page]), content))
    }
    assert not left, "English left on the Dutch pages:\n" + "\n".join(
        f"  {page}: {found}" for page, found in left.items()
    )
    for page, html in seen["nl"].items():
        assert '<html lang="nl">' in html, page
        assert '<html lang="en">' in seen["en"][page], page


@on_sqlite
def test_the_check_finds_an_english_text_on_a_dutch_page(starter_glossary, settings):
    page = "<html><body><h2>Take a break</h2><p>{name} · <a href='x'>RSS</a></p></body></html>"
    english = dutch = page.format(name=settings.newsletter_name)
    content = content_words(starter_glossary, settings)
    assert english_left(segments(english), segments(dutch), content) == ["Take a break"]
    assert english_left(segments(english), segments(dutch.replace("Take a break", "Even pauze")),
                        content) == []  # fmt: skip


def test_the_required_section_names_are_the_catalogues():
    assert {section_title(name, "en") for name in REQUIRED_SECTIONS} == set(REQUIRED_SECTIONS)
    dutch = {section_title(name.upper(), "nl") for name in REQUIRED_SECTIONS}
    assert dutch == {"Waarom het ertoe doet", "Hoe het werkt", "Voorbeeld"}
    assert section_title("Een eigen kop", "nl") == "Een eigen kop"


# --------------------------------------------------------------------------- a reader's own


@on_sqlite
def test_a_reader_who_chose_dutch_gets_dutch_pages_from_an_english_newsletter(
    settings, engine, client
):
    assert settings.locale == "en"
    ann, _ = add_confirmed(engine, "ann@example.org", name="Ann", timezone="Europe/Paris",
                           now=db.utcnow())  # fmt: skip
    set_language(engine, ann.id, "nl", now=db.utcnow())
    preferences = client.get(f"/preferences/{_token(settings, 'preferences', ann)}")
    assert '<html lang="nl">' in preferences.text
    said = " ".join(segments(preferences.text))
    assert "Je voorkeuren" in said and "Naam en tijdzone" in said
    assert "Your preferences" not in said
    # The picker: its regions and places in Dutch, the newsletter's own language by its name.
    groups = re.findall(r'<optgroup label="([^"]+)"', preferences.text)
    assert {"Europa", "Amerika", "Azië", "Stille Oceaan"} <= set(groups)
    assert "Europe" not in groups and "Americas" not in groups
    assert ">Parijs (Frankrijk)</option>" in preferences.text
    assert "De taal van de nieuwsbrief (English)" in said
    # Its other token pages too; the public ones stay the newsletter's.
    unsubscribe = client.get(f"/unsubscribe/{_token(settings, 'unsubscribe', ann)}")
    assert '<html lang="nl">' in unsubscribe.text and ">Afmelden</button>" in unsubscribe.text
    confirmed = client.get(f"/confirm/{_token(settings, 'confirm', ann)}")
    assert "Je abonnement is bevestigd." in confirmed.text
    said = " ".join(segments(confirmed.text))
    assert re.search(
        r"Er komt elke maandag om \d\d:00 \(tijd in Europe/Paris\) een nieuwe editie", said
    )
    home = client.get("/")
    assert '<html lang="en">' in home.text and "Subscribe" in home.text
    # Choosing English again: the notice and the page are English at once.
    back = client.post(
        f"/preferences/{_token(settings, 'preferences', ann)}/language", data={"language": "en"}
    )
    assert '<html lang="en">' in back.text
    assert "Saved: the next issues come in English." in back.text


@on_sqlite
def test_choosing_dutch_says_so_in_dutch(settings, engine, client):
    ann, _ = add_confirmed(engine, "ann@example.org", now=db.utcnow())
    chosen = client.post(
        f"/preferences/{_token(settings, 'preferences', ann)}/language", data={"language": "nl"}
    )
    assert '<html lang="nl">' in chosen.text
    assert "Opgeslagen: de volgende edities komen in het Nederlands." in chosen.text


@on_sqlite
def test_the_message_page_is_cached_per_language(settings, engine):
    english, dutch = both(settings)
    for app_settings, said in ((english, "Not found"), (dutch, "Niet gevonden"),
                               (english, "Not found")):  # fmt: skip
        with TestClient(create_app(app_settings)) as client:
            answer = client.get("/nowhere")
        assert answer.status_code == 404 and f"<h1>{said}</h1>" in answer.text
