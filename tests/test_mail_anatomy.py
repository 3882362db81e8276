"""The weekly mail's anatomy: its date, the archive and the last issues, "forward to a friend",
logo and brand colour, a visible preheader, inline styles, dark mode, contrast, and the
Word-of-the-Day extras (pronunciation, "Did you know?") where a term has them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest
from pydantic import ValidationError

from digest.campaign.build import build_issue, make_snapshot
from digest.config import Settings
from digest.core.checks import GMAIL_CLIP_BYTES, check_email
from digest.core.mails import PLACEHOLDERS
from digest.core.reader_mails import render_confirmation
from digest.core.render import base_context, render_issue, render_mail
from digest.core.selection import Pick
from digest.model.colour import luminance_ratio, relative_luminance
from digest.model.glossary import Glossary
from digest.model.weeks import IsoWeek
from digest.store.issues import get_issue, transition
from digest.store.queue import add_to_queue
from digest.store.terms import load_glossary
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import STARTER_TERMS, term_text
from tests.test_render import read_html, record_of, settings_for

W50 = IsoWeek(2026, 50)
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
PRONUNCIATION = '<b>RAG</b> — rhymes with "bag" & tag'
NOTE = "Coined in 2020 <script>alert(1)</script> & still used — één."


def anatomy_terms(make_terms: Any, **extra: str) -> Glossary:
    """Three related terms; `extra` adds front matter lines to a term by slug."""
    return load_glossary(
        make_terms(
            {
                "rag": term_text("RAG", related=["embedding"], extra=extra.get("rag", "")),
                "embedding": term_text("Embedding", related=["rag", "vector"]),
                "vector": term_text("Vector", related=["embedding"]),
            }
        )
    )


def with_extras() -> str:
    # YAML double-quoted, so the markup and the quotes reach the term as written.
    pronunciation = PRONUNCIATION.replace('"', '\\"')
    return f'pronunciation: "{pronunciation}"\ndid_you_know: >-\n  Coined in 2020\n  <script>alert(1)</script> & still used — één.\n'


def issue(
    glossary: Glossary, slug: str = "rag", settings: Settings | None = None
) -> tuple[Settings, dict[str, Any], Any]:
    """(settings, snapshot, rendered issue) of `slug` featured in week 50."""
    settings = settings or settings_for()
    frozen = dict(make_snapshot(settings, glossary, Pick(W50, slug, "rotation")))
    return settings, frozen, render_issue(frozen, settings)  # type: ignore[arg-type]


_VOID = frozenset({"area", "base", "br", "col", "hr", "img", "input", "link", "meta", "wbr"})


class _Body(HTMLParser):
    """The body's text nodes in order, the inline styles around each, and every element's."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, str]] = []  # (tag, style) of the elements around the text
        self.texts: list[str] = []
        self.around: list[list[str]] = []  # the styles of each text's elements
        self.styles: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        style = next((v or "" for k, v in attrs if k == "style"), "")
        if tag not in _VOID:
            self.open.append((tag, style))
        if any(t == "body" for t, _s in self.open):
            self.styles.append((tag, style))

    def handle_endtag(self, tag: str) -> None:
        while self.open:
            if self.open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        tags = [t for t, _s in self.open]
        if "body" in tags and not {"style", "title", "script"} & set(tags) and data.strip():
            self.texts.append(" ".join(data.split()))
            self.around.append([s for _t, s in self.open])


def body_of(html: str) -> _Body:
    parser = _Body()
    parser.feed(html)
    parser.close()
    return parser


# --------------------------------------------------------------------------- date, links


def test_the_mail_carries_its_calendar_date_and_week(make_terms):
    _settings, _snapshot, rendered = issue(anatomy_terms(make_terms))
    # settings' schedule is Mondays: week 50 of 2026 goes out on Monday 7 December.
    assert '<time datetime="2026-12-07">December 7, 2026</time> · Week 50' in rendered.html
    assert rendered.text.startswith("AI Term of the Week · December 7, 2026 · Week 50\n")


def test_the_date_is_written_in_the_newsletters_language(make_terms):
    settings = settings_for(language="nl", schedule="wed 07:00")
    _settings, _snapshot, rendered = issue(anatomy_terms(make_terms), settings=settings)
    assert '<time datetime="2026-12-09">9 december 2026</time>' in rendered.html
    assert "9 december 2026" in rendered.text.splitlines()[0]


def test_the_mail_links_the_archive_and_asks_to_forward_the_issues_page(make_terms):
    settings, _snapshot, rendered = issue(anatomy_terms(make_terms))
    archive, page = f"{settings.base_url}/issues/", f"{settings.base_url}/issues/2026-W50"
    assert f'href="{archive}"' in rendered.html
    assert f"Every issue in the archive: {archive}\n" in rendered.text
    forward = rendered.html[rendered.html.index("Forward to a friend") :]
    assert f'href="{page}"' in forward and f">{page}</a>" in forward
    text_forward = rendered.text[rendered.text.index("Forward to a friend") :]
    assert f"\n{page}\n" in text_forward
    assert "mailto:" not in rendered.html  # only http(s) links pass the gate and the tracker
    assert check_email(rendered.html, rendered.text) == []


def build(engine, settings, glossary, week: IsoWeek, slug: str):  # type: ignore[no-untyped-def]
    """`slug`'s issue for `week`, built (the term queued first, so the test knows which)."""
    add_to_queue(engine, glossary, slug, note=None, now=NOW)
    return build_issue(engine, settings, glossary, week, now=NOW, news=[])


def publish(engine, settings, glossary, week: IsoWeek, slug: str) -> None:  # type: ignore[no-untyped-def]
    """`slug`'s issue for `week`, built and moved to sent as the sender would."""
    build(engine, settings, glossary, week, slug)
    transition(engine, week, "sending", now=NOW)
    transition(engine, week, "sent", now=NOW)


def test_the_mail_lists_the_last_three_sent_issues_newest_first(engine, make_terms):
    settings = settings_for()
    terms = {
        slug: term_text(slug.title(), related=["hub"])
        for slug in ("one", "two", "three", "four", "five", "six")
    }
    terms["hub"] = term_text("Hub", related=list(terms))
    glossary = load_glossary(make_terms(terms))
    for week, slug in zip(range(44, 48), ("one", "two", "three", "four"), strict=True):
        publish(engine, settings, glossary, IsoWeek(2026, week), slug)
    # Built but never sent, and a later sent week: neither is "before this one" in the archive.
    build(engine, settings, glossary, IsoWeek(2026, 48), "five")
    publish(engine, settings, glossary, IsoWeek(2026, 51), "six")

    record = build(engine, settings, glossary, IsoWeek(2026, 49), "hub")
    assert record.snapshot is not None
    previous = record.snapshot["previous"]
    assert [p["week"] for p in previous] == ["2026-W47", "2026-W46", "2026-W45"]
    assert previous[0] == {
        "week": "2026-W47",
        "title": "Four",
        "date": "2026-11-16",
        "url": f"{settings.base_url}/issues/2026-W47",
    }
    html, text = record.html or "", record.text or ""
    listed = html[html.index("Previous issues") :]
    assert listed.index("Four") < listed.index("Three") < listed.index("Two")
    assert "One" not in listed.split("Forward to a friend")[0]
    assert f'href="{settings.base_url}/issues/2026-W47"' in listed
    assert '<time datetime="2026-11-16">November 16, 2026</time>' in listed
    assert (
        f"- November 16, 2026: Four\n  {settings.base_url}/issues/2026-W47\n"
        f"- November 9, 2026: Three\n  {settings.base_url}/issues/2026-W46\n"
        f"- November 2, 2026: Two\n  {settings.base_url}/issues/2026-W45\n"
    ) in text
    # Frozen: what the list said when the issue was built, whatever is sent afterwards.
    stored = get_issue(engine, IsoWeek(2026, 49))
    assert stored is not None and stored.snapshot == record.snapshot


def test_the_first_issue_and_an_old_snapshot_show_no_list_but_the_archive_link(make_terms):
    glossary = anatomy_terms(make_terms)
    settings, snapshot, first = issue(glossary)
    assert snapshot["previous"] == []
    old = {k: v for k, v in snapshot.items() if k != "previous"}  # built before the list
    rendered = render_issue(old, settings)  # type: ignore[arg-type]
    for mail in (first, rendered):
        assert "Previous issues" not in mail.html and "Previous issues" not in mail.text
        assert f'href="{settings.base_url}/issues/"' in mail.html
        assert check_email(mail.html, mail.text) == []


# --------------------------------------------------------------------------- logo, brand


def test_the_logo_is_an_image_with_alt_text_and_a_width(make_terms):
    glossary = anatomy_terms(make_terms)
    logo = "https://cdn.example.org/logo.png"
    _s, _snap, plain = issue(glossary)
    assert "<img" not in plain.html
    _s, _snap, named = issue(glossary, settings=settings_for(logo_url=logo))
    assert re.search(rf'<img alt="AI Term of the Week" [^>]*src="{re.escape(logo)}"', named.html)
    assert 'width="160"' in named.html
    settings = settings_for(logo_url=logo, logo_alt="Digest <logo> & co", logo_width=120)
    _s, _snap, custom = issue(glossary, settings=settings)
    assert 'alt="Digest &lt;logo&gt; &amp; co"' in custom.html and 'width="120"' in custom.html
    assert check_email(custom.html, custom.text) == []


def test_a_logo_url_that_is_not_absolute_is_refused_at_start_up():
    with pytest.raises(ValidationError, match="logo_url"):
        settings_for(logo_url="/static/logo.png")


def test_the_brand_colour_paints_the_kicker_links_and_buttons(make_terms):
    settings = settings_for(brand_color="#7C2D12")
    _s, _snap, rendered = issue(anatomy_terms(make_terms), settings=settings)
    html = rendered.html
    assert "#1d4ed8" not in html  # the default blue is gone everywhere
    assert re.search(r'class="kicker" style="[^"]*color:#7c2d12;', html)
    assert re.search(
        r'<a href="https://glossary\.example\.org/embedding" style="color:#7c2d12;', html
    )
    assert re.search(r'bgcolor="#7c2d12"[^>]*style="[^"]*background:#7c2d12;', html)  # button
    assert "border-top:4px solid #7c2d12" in html


@pytest.mark.parametrize(
    ("colour", "message"),
    [
        ("#facc15", r"#facc15 has 1\.53:1 contrast with white.*at least 4\.5:1"),
        ("#777777", r"#777777 has 4\.48:1 contrast"),  # AA's classic grey is #767676, not this
        ("royalblue", "must be a hex colour"),
        ("#12345", "must be a hex colour"),
    ],
)
def test_a_brand_colour_white_text_cannot_be_read_on_is_refused(colour, message):
    with pytest.raises(ValidationError, match=f"(?s)brand_color.*{message}"):
        settings_for(brand_color=colour)


def test_a_readable_brand_colour_is_kept_in_one_spelling():
    assert settings_for(brand_color="#767676").brand_color == "#767676"  # 4.54:1
    assert settings_for(brand_color=" #A0F ").brand_color == "#aa00ff"
    assert luminance_ratio(relative_luminance(0, 0, 0), 1.0) == pytest.approx(21.0)
    assert luminance_ratio(relative_luminance(1, 1, 1), 1.0) == pytest.approx(1.0)


# --------------------------------------------------------------------------- preheader, styles


def test_the_preheader_is_the_mails_visible_first_text_and_nothing_is_hidden(make_terms):
    _settings, _snapshot, rendered = issue(anatomy_terms(make_terms))
    body = body_of(rendered.html)
    assert body.texts[0] == rendered.preheader
    hiding = ("display:none", "opacity:0", "font-size:1px", "max-height:0", "mso-hide")
    for text, styles in zip(body.texts, body.around, strict=True):
        declarations = ";".join(styles).replace(" ", "").lower()
        assert not [h for h in hiding if h in declarations], (text, styles)
    assert "<mj-preview" not in rendered.mjml


def test_the_confirm_and_welcome_mails_open_with_a_visible_line_too():
    settings = settings_for()
    html, _text = render_confirmation(settings, "Ann", "https://digest.example.org/confirm/t")
    assert body_of(html).texts[0] == "One click to start getting AI Term of the Week."
    _mjml, welcome, _ = render_mail(settings.templates_dir, "welcome", welcome_context(settings))
    assert body_of(welcome).texts[0].startswith("You are subscribed: a new issue arrives")
    for mail in (html, welcome):
        assert "display:none" not in mail.split("<body", 1)[1]


def test_dark_mode_styles_and_both_colour_schemes_are_declared(make_terms):
    _settings, _snapshot, rendered = issue(anatomy_terms(make_terms))
    head = rendered.html.split("<body", 1)[0]
    assert '<meta name="color-scheme" content="light dark"' in head
    assert '<meta name="supported-color-schemes" content="light dark"' in head
    assert "@media (prefers-color-scheme: dark)" in head
    assert ".dm-card, .dm-card > table { background-color: #1f2937 !important; }" in head


def test_what_matters_is_inline_on_each_element(make_terms):
    body = (
        "## Why it matters\n\nSee [the paper](https://example.org/p).\n\n"
        "## How it works\n\n```\ncode that is long\n```\n\n| a | b |\n|---|--:|\n| 1 | 2 |\n\n"
        "## Example\n\n> quoted\n"
    )
    glossary = load_glossary(
        make_terms(
            {
                "rag": term_text("RAG", related=["other"], body=body),
                "other": term_text("Other", related=["rag"]),
            }
        )
    )
    _settings, _snapshot, rendered = issue(glossary)
    body_part = body_of(rendered.html)
    for tag, style in body_part.styles:
        if tag == "a":
            assert "color:" in style, style
    styles = dict(body_part.styles[::-1])  # the first of each tag
    assert "white-space:pre-wrap" in styles["pre"]
    assert "border-left:3px solid" in styles["blockquote"]
    assert any(
        "max-width:100%" in style and "overflow-x:auto" in style
        for tag, style in body_part.styles
        if tag == "table"
    )
    assert 'style="border:1px solid #d1d5db;padding:4px 8px;text-align:left;text-align:right"' in (
        rendered.html
    )  # markdown-it's own column alignment still wins
    assert re.search(r'<h1 style="[^"]*font-size:28px', rendered.html)
    assert re.search(r'class="meta" style="[^"]*color:#4b5563', rendered.html)


def test_every_starter_issue_stays_under_gmails_clipping_size():
    settings = settings_for(logo_url="https://cdn.example.org/logo.png")
    glossary = load_glossary(STARTER_TERMS)
    previous = [
        record_of(dict(make_snapshot(settings, glossary, Pick(IsoWeek(2026, w), s, "rotation"))))
        for w, s in ((47, "rag"), (48, "lora"), (49, "embedding"))
    ]
    news = [
        {"title": f"News item {i} " * 8, "link": f"https://news.example.org/{i}", "source": "W"}
        for i in range(5)
    ]
    largest = 0
    for slug in glossary.slugs:
        snap = make_snapshot(settings, glossary, Pick(W50, slug, "rotation"), news, previous)
        html = render_issue(snap, settings).html
        largest = max(largest, len(html.encode()))
    assert largest < GMAIL_CLIP_BYTES * 0.5, largest  # half, for the links filled in at send


# --------------------------------------------------------------------------- word of the day


def test_pronunciation_and_did_you_know_show_in_mail_and_archive_escaped(make_terms):
    _settings, snapshot, rendered = issue(anatomy_terms(make_terms, rag=with_extras()))
    assert snapshot["term"]["pronunciation"] == PRONUNCIATION
    assert snapshot["term"]["did_you_know"] == NOTE
    # The mail carries no script at all; the archive page only the quiz's own, which reveals
    # the answer on a static host (templates/quiz/_page.html.j2), never one from term text.
    quiz_scripts = 1 if snapshot.get("quiz") else 0
    for html, scripts in ((rendered.html, 0), (rendered.archive_html, quiz_scripts)):
        page = read_html(html)
        assert page.tags.count("script") == scripts
        text = " ".join(" ".join(page.text).split())
        assert f"Pronunciation: {PRONUNCIATION}" in text
        assert f"Did you know? {NOTE}" in text
        assert "&lt;b&gt;RAG&lt;/b&gt; — rhymes with &#34;bag&#34; &amp; tag" in html
    assert f"Pronunciation: {PRONUNCIATION}\n" in rendered.text
    assert f"Did you know?\n-------------\n\n{NOTE}\n" in rendered.text
    # The note comes after the term's sections, before its sources.
    for part in (rendered.html, rendered.text):
        assert part.index("Example") < part.index("Did you know?") < part.index("Sources")
    assert check_email(rendered.html, rendered.text) == []


def test_a_term_without_them_shows_neither(make_terms):
    _settings, snapshot, rendered = issue(anatomy_terms(make_terms))
    assert "pronunciation" not in snapshot["term"] and "did_you_know" not in snapshot["term"]
    for part in (rendered.html, rendered.text, rendered.archive_html):
        assert "Pronunciation" not in part and "Did you know?" not in part


def test_the_starter_glossary_has_them_where_true():
    glossary = load_glossary(STARTER_TERMS)
    assert glossary["rag"].pronunciation == "RAG — rhymes with bag"
    assert glossary["rag"].did_you_know and "Lewis" in glossary["rag"].did_you_know
    assert glossary["lora"].pronunciation == "LoRA — said like the name Laura"


def test_the_term_cache_keeps_them(make_terms):
    folder = make_terms(
        {
            "rag": term_text("RAG", related=["other"], extra=with_extras()),
            "other": term_text("Other", related=["rag"]),
        }
    )
    cold = load_glossary(folder)
    warm = load_glossary(folder)  # read back from .digest-cache
    assert (warm["rag"].pronunciation, warm["rag"].did_you_know) == (PRONUNCIATION, NOTE)
    assert warm["rag"] == cold["rag"] and warm["other"].pronunciation is None


# --------------------------------------------------------------------------- contrast (Chromium)

# Every visible text node: its colour and the first opaque background behind it.
_COLOURS_JS = """
() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.textContent.trim()) continue;
    const el = node.parentElement;
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    let bg = null;
    for (let up = el; up; up = up.parentElement) {
      const colour = getComputedStyle(up).backgroundColor;
      if (colour !== 'rgba(0, 0, 0, 0)' && colour !== 'transparent') { bg = colour; break; }
    }
    bg = bg || getComputedStyle(document.documentElement).backgroundColor;
    out.push([node.textContent.trim().slice(0, 40), getComputedStyle(el).color, bg]);
  }
  return out;
}
"""


def _channels(css: str) -> tuple[float, ...]:
    numbers = [float(n) for n in re.findall(r"[\d.]+", css)]
    assert len(numbers) == 3 or numbers[3] == 1, css  # only opaque colours in the mail
    return tuple(numbers[:3])


def _luminance(css: str) -> float:
    linear = [
        c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
        for c in (v / 255 for v in _channels(css))
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def text_colours(browser: Any, html: str, scheme: str, width: int = 375) -> list[Any]:
    page = browser.new_page(viewport={"width": width, "height": 800}, color_scheme=scheme)
    try:
        page.route("**/*", lambda route: route.abort())
        page.set_content(html, wait_until="load")
        scroll = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert scroll[0] <= scroll[1], scroll
        return page.evaluate(_COLOURS_JS)  # type: ignore[no-any-return]
    finally:
        page.close()


def welcome_context(settings: Settings) -> dict[str, object]:
    return {
        **base_context(settings),
        "name": "Ann",
        "delivery": "every Monday at 09:00 (UTC time)",
        "latest": {"title": "RAG", "summary": "Look it up.", "url": "https://d.example/issues/x"},
        "unsubscribe_url": PLACEHOLDERS["unsubscribe_url"],
        "preferences_url": PLACEHOLDERS["preferences_url"],
    }


@pytest.fixture(scope="module")
def mails(tmp_path_factory) -> dict[str, str]:
    """The weekly mail with every part (news, previous issues, both extras, a code block, a
    quote, a table), the confirmation and the welcome mail, with a dark but valid brand."""
    settings = settings_for(brand_color="#0f766e")
    folder = tmp_path_factory.mktemp("terms")
    body = (
        "## Why it matters\n\nSee [the paper](https://example.org/p) and `code`.\n\n"
        "> A quote.\n\n## How it works\n\n```\nx = 1\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "## Example\n\nAn example.\n"
    )
    (folder / "rag.md").write_text(
        term_text(
            "RAG",
            related=["other"],
            body=body,
            aliases="[{name: rag, lang: nl}]",
            extra=with_extras(),
        )
    )
    (folder / "other.md").write_text(term_text("Other", related=["rag"]))
    glossary = load_glossary(folder)
    previous = [
        record_of(
            dict(make_snapshot(settings, glossary, Pick(IsoWeek(2026, 49), "other", "rotation")))
        )
    ]
    news = [{"title": "Big news", "link": "https://news.example.org/1", "source": "Wire"}]
    snap = make_snapshot(settings, glossary, Pick(W50, "rag", "rotation"), news, previous)
    confirm, _text = render_confirmation(settings, "Ann", "https://d.example/confirm/t")
    _mjml, welcome, _ = render_mail(settings.templates_dir, "welcome", welcome_context(settings))
    return {"issue": render_issue(snap, settings).html, "confirm": confirm, "welcome": welcome}


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("name", ["issue", "confirm", "welcome"])
def test_every_text_reaches_4_5_to_1_in_light_and_dark(browser, mails, name, scheme):
    colours = text_colours(browser, mails[name], scheme)
    assert len(colours) > 10
    low = [(t, c, b, round(contrast(c, b), 2)) for t, c, b in colours if contrast(c, b) < 4.5]
    assert low == []
    if scheme == "dark":  # the dark styles really apply: every background is dark
        assert all(_luminance(b) < 0.2 for _t, _c, b in colours), colours


@pytest.mark.browser
def test_without_head_styles_the_mail_keeps_its_colours_and_fits_a_phone(browser, mails):
    """What a client that drops <head> styles shows: the inline styles alone."""
    stripped = re.sub(r"<style[^>]*>.*?</style>", "", mails["issue"], flags=re.S)
    assert "<style" not in stripped
    colours = text_colours(browser, stripped, "light")
    assert [c for c in colours if contrast(c[1], c[2]) < 4.5] == []
    links = [c for t, c, _b in colours if t.startswith("the paper")]
    assert links == ["rgb(15, 118, 110)"]  # the brand colour, from the link's own style
