"""The reader's mails and the feeds in two languages: no English left in the Dutch ones, the
confirmation in the sign-up's language, and a Dutch reader's archive links open Dutch pages.

The leftover check renders each mail and feed once in `en` and once in `nl` for the same issue
and term, and reads what a reader sees: the text of every HTML element and its alt / title /
aria-label, the text part's paragraphs, the feeds' titles and descriptions. A segment that is
the same in both languages must be content (the term's own words, the newsletter's name,
addresses, numbers): anything else is a fixed string the catalogue missed.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from digest.campaign.build import build_issue, make_snapshot
from digest.config import Settings
from digest.core import i18n
from digest.core.feed import (
    feed_channel,
    render_atom,
    render_json_feed,
    render_rss,
    render_stylesheet,
)
from digest.core.reader_mails import confirmation_mail, render_confirmation, welcome_message
from digest.core.render import markdown_to_text, render_issue
from digest.core.section_names import section_title
from digest.core.selection import Pick
from digest.delivery.personalise import subscriber_recipient
from digest.model.glossary import Glossary
from digest.model.subscriber import Subscriber
from digest.model.weeks import IsoWeek
from digest.readers.preferences import choose_language
from digest.readers.signup import subscribe
from digest.store.issues import get_issue, transition
from digest.store.renditions import get_renditions
from digest.store.subscribers import add_confirmed, unsubscribe_subscriber
from digest.store.terms import load_glossary
from tests.conftest import term_text
from tests.test_render import record_of
from tests.test_welcome import mails, parts

WEEK, LAST_WEEK = IsoWeek(2026, 48), IsoWeek(2026, 47)
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
CONFIRM_URL = "https://digest.example.org/confirm/TOKEN"
# Words Dutch writes as English does: a segment that is one of these is translated as itself.
ALIKE = {"Quiz", "feed"}

BODY = """\
## Why it matters

Answers stay close to *the documents* they came from.

## How it works

1. Look the question up.
2. Hand the passages to the model.

## Example

A helpdesk bot that quotes its manual.
"""


# --------------------------------------------------------------------------- what is rendered


def glossary_of(make_terms: Callable[[dict[str, str]], Path]) -> Glossary:
    """A featured term with every optional part (pronunciation, did-you-know, aliases), three
    related concepts in its category (so the quiz has its wrong answers), and last week's."""
    extra = "pronunciation: rag\ndid_you_know: The name dates from a 2020 paper.\n"
    return load_glossary(
        make_terms(
            {
                "rag": term_text(
                    "Retrieval-augmented generation",
                    related=["embedding", "vector-store", "llm"],
                    category="Architecture",
                    aliases="[RAG, {name: opzoekgeneratie, lang: nl}]",
                    body=BODY,
                    extra=extra,
                ),
                "embedding": term_text("Embedding", related=["rag"], category="Architecture"),
                "vector-store": term_text(
                    "Vector store", related=["rag"], category="Architecture", difficulty="advanced"
                ),
                "llm": term_text(
                    "Large language model",
                    related=["rag"],
                    category="Architecture",
                    difficulty="intermediate",
                ),
            }
        )
    )


def settings_for(locale: str = "en", **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "base_url": "https://digest.example.org",
        "site_url": "https://glossary.example.org",
        "newsletter_name": "AI Term of the Week",
        "postal_address": "Oudegracht 1, 3511 AA Utrecht",
        "locale": locale,
        "track_clicks": True,
        "track_opens": True,
    }
    return Settings(**{**values, **changes})


def snapshot_for(settings: Settings, glossary: Glossary) -> dict[str, Any]:
    news = [
        {
            "title": "A lab ships a retriever",
            "link": "https://news.example/1",
            "source": "Example News",
            "published": "2026-11-20",
        }
    ]
    before = make_snapshot(settings, glossary, Pick(LAST_WEEK, "embedding", "rotation"))
    return dict(
        make_snapshot(
            settings,
            glossary,
            Pick(WEEK, "rag", "rotation"),
            news,
            [record_of(before, sent_at=NOW - timedelta(days=7))],
            last_week=(LAST_WEEK, "embedding"),
        )
    )


def reader(language: str | None) -> Subscriber:
    return Subscriber(
        id=7,
        email="ann@example.org",
        name="Ann",
        status="active",
        source="web",
        timezone="Europe/Amsterdam",
        paused_until=None,
        created_at=NOW,
        confirmed_at=NOW,
        unsubscribed_at=None,
        confirm_sent_at=None,
        updated_at=NOW,
        language=language,
    )


LATEST = {
    "title": "Embedding",
    "summary": "One line about Embedding.",
    "url": "https://digest.example.org/issues/2026-W47",
}


def rendered_in(locale: str, glossary: Glossary, settings: Settings) -> dict[str, str]:
    """Every reader mail and feed of the issue in `locale`, by part: the weekly mail as a
    rendition (the newsletter stays English), the confirmation as a sign-up asked for it, the
    welcome to a reader who chose `locale`, the feeds of a newsletter written in it."""
    snapshot = snapshot_for(settings, glossary)
    issue = render_issue(snapshot, settings, locale=locale)  # type: ignore[arg-type]
    confirm = confirmation_mail(settings, reader(None), CONFIRM_URL, locale)
    html, text = render_confirmation(settings, None, CONFIRM_URL, locale)
    ann = reader(locale)
    recipient = subscriber_recipient(settings, ann.id, ann.email, ann.name)
    welcome = welcome_message(settings, ann, recipient, LATEST, NOW)
    quiet = settings.model_copy(update={"track_clicks": False, "track_opens": False})
    untracked = welcome_message(quiet, ann, recipient, None, NOW)
    feeds = settings.for_locale(locale)
    record = record_of(snapshot, sent_at=NOW)  # type: ignore[arg-type]
    channel = feed_channel(feeds, [record])
    return {
        "issue subject": f"{issue.subject}\n\n{issue.preheader}",
        "issue html": issue.html,
        "issue text": issue.text,
        "confirmation subject": confirm.subject,
        "confirmation html": confirm.html,
        "confirmation text": confirm.text,
        "confirmation without a name, html": html,
        "confirmation without a name, text": text,
        "welcome subject": welcome.subject,
        "welcome html": welcome.html,
        "welcome text": welcome.text,
        "untracked welcome html": untracked.html,
        "untracked welcome text": untracked.text,
        "rss": render_rss(channel, NOW),
        "atom": render_atom(channel, NOW),
        "json feed": render_json_feed(channel).decode(),
        "feed stylesheet": render_stylesheet(feeds),
    }


# --------------------------------------------------------------------------- what a reader sees


class _Segments(HTMLParser):
    """The text of each element on its own, and the attributes a reader is shown or read."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in ("style", "script")
        self.found += [v for k, v in attrs if k in ("alt", "title", "aria-label") and v]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.found.append(data)


def _pieces(texts: Iterable[str]) -> set[str]:
    """Each text on one line, cut at the mails' ` · ` separators."""
    out: set[str] = set()
    for text in texts:
        for piece in text.split("·"):
            piece = " ".join(piece.split())
            if piece:
                out.add(piece)
    return out


def html_segments(html: str) -> set[str]:
    parser = _Segments()
    parser.feed(html)
    parser.close()
    return _pieces(parser.found)


def text_segments(text: str) -> set[str]:
    return _pieces(re.split(r"\n\s*\n", text))


def feed_segments(part: str, body: str) -> set[str]:
    """The feeds' own words: titles, descriptions, categories (not the article, which is the
    archive page's), plus the quiz the article carries, whose words are this module's."""
    if part == "json feed":
        feed = json.loads(body)
        items = feed["items"]
        found = [feed["title"], feed["description"]]
        found += [v for item in items for v in (item["title"], item["summary"], *item["tags"])]
        return _pieces(found) | _quiz_segments(item["content_html"] for item in items)
    if part == "feed stylesheet":
        return html_segments(body)
    root = ET.fromstring(body)
    content = {"encoded", "content"}
    texts = [e.text or "" for e in root.iter() if e.tag.rsplit("}", 1)[-1] not in content]
    texts += [e.get("term", "") for e in root.iter() if e.tag.endswith("category")]
    html = [e.text or "" for e in root.iter() if e.tag.rsplit("}", 1)[-1] in content]
    return _pieces(texts) | _quiz_segments(html)


def _quiz_segments(articles: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for article in articles:
        quiz = re.search(r'<section id="quiz".*?</section>', article, re.S)
        assert quiz is not None, "the feed's article has no quiz"
        found |= html_segments(quiz[0])
    return found


def segments(part: str, body: str) -> set[str]:
    if part in ("rss", "atom", "json feed", "feed stylesheet"):
        return feed_segments(part, body)
    return html_segments(body) if part.endswith("html") else text_segments(body)


# --------------------------------------------------------------------------- what is content


def content_of(glossary: Glossary, settings: Settings) -> tuple[list[str], set[str]]:
    """(every value the issue's content and the settings put in, longest first; the text of
    each element of the term's sections, which inline markup cuts into pieces)."""
    snapshot = snapshot_for(settings, glossary)
    term = snapshot["term"]
    values = [
        settings.newsletter_name,
        settings.postal_address,
        settings.sender_name,
        "Ann",
        "Europe/Amsterdam",
        *(term[k] for k in ("title", "summary", "definition", "category")),
        term["pronunciation"],
        term["did_you_know"],
        *(a["name"] for a in term["aliases"]),
        *(a["lang"] for a in term["aliases"] if a["lang"]),
        *(s["title"] for s in term["sources"]),
        # A heading the editor chose is content; the required ones are fixed words (Dutch in nl).
        *(s["title"] for s in term["sections"] if section_title(s["title"], "nl") == s["title"]),
        *(" ".join(markdown_to_text(s["markdown"]).split()) for s in term["sections"]),
        *(v for r in snapshot["related"] for v in (r["title"], r["summary"])),
        *(v for n in snapshot["news"] for v in (n["title"], n["source"])),
        *(p["title"] for p in snapshot["previous"]),
        snapshot["quiz"]["term"]["title"],
        snapshot["quiz"]["term"]["definition"],
        *(v for c in snapshot["quiz"]["choices"] for v in (c["title"], c["summary"])),
        *LATEST.values(),
        *ALIKE,
    ]
    sections = set().union(*(html_segments(s["html"]) for s in term["sections"]))
    return sorted(set(values), key=len, reverse=True), sections


# Addresses, markers, and the feeds' dates, which RFC 822 and RFC 3339 write in English.
_ADDRESS = re.compile(
    r"(https?://|mailto:)\S+|[\w.+-]+@[\w-]+(\.[\w-]+)+|%%[\w.-]+%%"
    r"|\w{3}, \d\d \w{3} \d{4} [\d:]{8} GMT|\d{4}-\d\d-\d\dT[\d:]{8}Z"
)


def is_content(segment: str, values: list[str], sections: set[str]) -> bool:
    """Whether `segment` is made only of content, addresses, numbers and punctuation."""
    if segment in sections:
        return True
    rest = _ADDRESS.sub(" ", segment)
    for value in values:
        rest = rest.replace(value, " ")
    return not re.search(r"[^\W\d_]", rest)


def english_left(glossary: Glossary, settings: Settings) -> dict[str, list[str]]:
    """Per part, the segments the nl rendering shares with the en one that are not content."""
    values, sections = content_of(glossary, settings)
    english, dutch = rendered_in("en", glossary, settings), rendered_in("nl", glossary, settings)
    left: dict[str, list[str]] = {}
    for part, body in english.items():
        # The default subject and preheader are the term's own lines and the name: no words.
        assert part == "issue subject" or dutch[part] != body, f"{part}: nl is the en one"
        same = segments(part, body) & segments(part, dutch[part])
        found = sorted(s for s in same if not is_content(s, values, sections))
        if found:
            left[part] = found
    return left


# --------------------------------------------------------------------------- no English left


def test_no_english_is_left_in_the_dutch_mails_and_feeds(make_terms):
    glossary, settings = glossary_of(make_terms), settings_for()
    assert english_left(glossary, settings) == {}


def test_the_check_finds_a_string_the_catalogue_does_not_translate(make_terms, monkeypatch):
    # The check itself: one string un-translated (as if its Dutch entry were gone) is named,
    # in every part that shows it, and nothing else is.
    real = i18n.translations

    class OneMissing:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def gettext(self, message: str) -> str:
            return message if message == "Sources" else self.inner.gettext(message)

        def ngettext(self, singular: str, plural: str, n: int) -> str:
            return self.inner.ngettext(singular, plural, n)

    monkeypatch.setattr(i18n, "translations", lambda locale: OneMissing(real(locale)))
    left = english_left(glossary_of(make_terms), settings_for())
    assert left == {"issue html": ["Sources"], "issue text": ["Sources -------"]}


def test_the_dutch_mail_reads_dutch(make_terms):
    glossary, settings = glossary_of(make_terms), settings_for()
    parts_nl = rendered_in("nl", glossary, settings)
    assert parts_nl["issue html"].startswith('<!doctype html><html lang="nl"')
    assert "Term van de week" in parts_nl["issue html"]
    assert "TERM VAN DE WEEK" in parts_nl["issue text"]
    # The required sections' headings are the catalogue's, in the HTML and the text part.
    for part in ("issue html", "issue text"):
        assert "Waarom het ertoe doet" in parts_nl[part] and "Hoe het werkt" in parts_nl[part]
        assert "Why it matters" not in parts_nl[part]
    assert "Architecture · basis" in parts_nl["issue text"]  # the level, not the category
    assert parts_nl["confirmation subject"] == "Bevestig je aanmelding voor AI Term of the Week"
    assert parts_nl["welcome subject"] == "Welkom bij AI Term of the Week"
    # The reader's schedule in their language and zone, day names by Babel.
    assert "elke maandag om 10:00 (tijd in Europe/Amsterdam)" in parts_nl["welcome text"]


# --------------------------------------------------------------------------- the sign-up's language


def test_the_confirmation_mail_follows_the_browsers_language(client, engine, settings):
    client.post(
        "/subscribe",
        data={"email": "bea@example.org"},
        headers={"Accept-Language": "nl-BE,nl;q=0.9,en;q=0.5"},
    )
    client.post(
        "/subscribe", data={"email": "cas@example.org"}, headers={"Accept-Language": "en-GB"}
    )
    sent = {str(m["To"]): m for m in mails(settings)}
    assert set(sent) == {"bea@example.org", "cas@example.org"}
    dutch, english = sent["bea@example.org"], sent["cas@example.org"]
    assert dutch["Subject"] == f"Bevestig je aanmelding voor {settings.newsletter_name}"
    text, html = parts(dutch)
    assert text.startswith("Hoi,\r\n") and "Bevestig je aanmelding door deze link" in text
    assert '<html lang="nl"' in html and "Mijn aanmelding bevestigen" in html
    assert english["Subject"] == f"Confirm your subscription to {settings.newsletter_name}"
    assert "Confirm my subscription" in parts(english)[1]


def test_a_resent_confirmation_keeps_the_readers_language(engine, settings):
    first = subscribe(engine, settings, "bea@example.org", now=NOW, send=False, language="nl")
    assert first.mail is not None and first.mail.subject.startswith("Bevestig je aanmelding")
    later = NOW + timedelta(seconds=settings.confirm_resend_interval + 1)
    again = subscribe(engine, settings, "bea@example.org", now=later, send=False)  # no header
    assert again.mail is not None and again.mail.subject.startswith("Bevestig je aanmelding")
    assert "Mijn aanmelding bevestigen" in again.mail.html


def test_a_readers_choice_beats_the_browser_for_the_confirmation(engine, settings):
    bea, _ = add_confirmed(engine, "bea@example.org", now=NOW - timedelta(days=9))
    choose_language(engine, bea.id, "en", now=NOW)
    unsubscribe_subscriber(engine, bea.id, now=NOW - timedelta(days=3))
    done = subscribe(engine, settings, "bea@example.org", now=NOW, send=False, language="nl")
    assert done.mail is not None and done.mail.subject.startswith("Confirm your subscription")


# --------------------------------------------------------------------------- the archive in Dutch


W48, W49 = IsoWeek(2026, 48), IsoWeek(2026, 49)
ARCHIVE_LINK = re.compile(r'href="(https://digest\.example\.org/issues/[^"]*)"')


@pytest.fixture
def dutch_issue(engine, settings, starter_glossary):  # type: ignore[no-untyped-def]
    """W48 and W49 sent, built while a Dutch reader was subscribed: W49 has an nl rendition."""
    bea, _ = add_confirmed(engine, "bea@example.org", now=NOW - timedelta(days=9))
    choose_language(engine, bea.id, "nl", now=NOW - timedelta(days=9))
    for week in (W48, W49):
        build_issue(engine, settings, starter_glossary, week, now=NOW, news=[])
        transition(engine, week, "sending", now=NOW)
        transition(engine, week, "sent", now=NOW)
    record = get_issue(engine, W49)
    assert record is not None and record.html is not None
    return record, get_renditions(engine, record.id)["nl"]


def test_a_dutch_readers_archive_links_ask_for_dutch(dutch_issue):
    own, nl = dutch_issue
    dutch_links = set(ARCHIVE_LINK.findall(nl.html))
    assert "https://digest.example.org/issues/2026-W49?lang=nl" in dutch_links
    assert "https://digest.example.org/issues/?lang=nl" in dutch_links
    assert "https://digest.example.org/issues/2026-W48?lang=nl" in dutch_links  # previous issue
    answers = {link for link in dutch_links if "answer=" in link}
    assert answers == {
        f"https://digest.example.org/issues/2026-W49?answer={n}&amp;lang=nl#quiz" for n in (1, 2, 3)
    }
    assert all("lang=nl" in link for link in dutch_links)
    assert "https://digest.example.org/issues/2026-W49?answer=1&lang=nl#quiz" in nl.text
    # The newsletter's own mail is as it always was: no language in its addresses.
    assert all("lang=" not in link for link in ARCHIVE_LINK.findall(own.html))


def test_the_page_a_dutch_link_opens_is_dutch(client, dutch_issue):
    own, _nl = dutch_issue
    right = own.snapshot["quiz"]["right"]
    page = client.get(f"/issues/2026-W49?answer={right}&lang=nl").text
    assert '<html lang="nl"' in page
    assert "<strong>Goed!</strong> Die regel beschrijft" in page
    assert "De term van vorige week was" in page
    assert (
        f'href="https://digest.example.org/issues/2026-W49?answer={right}&amp;lang=nl#quiz"' in page
    )
    index = client.get("/issues/?lang=nl").text
    assert '<html lang="nl"' in index
    assert "https://digest.example.org/issues/2026-W49?lang=nl" in index


def _without_nonce(page: str) -> str:
    return re.sub(r'nonce="[^"]*"', "", page)


@pytest.mark.parametrize("lang", ["fr", "", "nl-NL", "<b>nl</b>", "en"])
def test_an_unknown_or_own_lang_is_the_newsletters_page(client, dutch_issue, lang):
    # Never an error and never written into the page: the page without `lang` at all.
    page = client.get("/issues/2026-W49", params={"lang": lang})
    assert page.status_code == 200 and '<html lang="en"' in page.text
    assert _without_nonce(page.text) == _without_nonce(client.get("/issues/2026-W49").text)
    assert client.get("/issues/", params={"lang": lang}).text == client.get("/issues/").text


def test_a_welcome_to_a_dutch_reader_links_the_latest_issue_in_dutch(make_terms):
    settings = settings_for()
    ann = reader("nl")
    recipient = subscriber_recipient(settings, ann.id, ann.email, ann.name)
    welcome = welcome_message(settings, ann, recipient, LATEST, NOW)
    assert 'href="https://digest.example.org/issues/2026-W47?lang=nl"' in welcome.html
    assert "https://digest.example.org/issues/?lang=nl" in welcome.text
    english = welcome_message(settings, reader(None), recipient, LATEST, NOW)
    assert "lang=" not in english.text
