"""The mail's reader-side gates: every text readable against its background (WCAG AA), images with
alt text, `lang`, the size Gmail clips at; as `digest check` reports them, and on the real mails
digest renders (the weekly issue, the confirmation and the welcome mail).

Contrast is read as the plainest client shows a mail (inline styles and colour attributes only,
see digest.core.mail_contrast); the full CSS and dark mode are checked in Chromium by
tests/test_layout_browser.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from digest.cli import app
from digest.core.checks import GMAIL_CLIP_BYTES, check_email, email_warnings
from digest.core.mail_contrast import shortfalls, shown_texts
from digest.core.reader_mails import render_confirmation, welcome_message
from digest.core.render import render_issue
from digest.delivery.personalise import subscriber_recipient
from digest.model.glossary import Glossary
from digest.model.subscriber import Subscriber
from digest.store.issues import save_built
from tests.sending import NOW as SEND_NOW
from tests.sending import TEXT, WEEK, seed_subscribers
from tests.test_render import settings_for, snapshot_of

runner = CliRunner()
OK_TEXT = TEXT  # a text part that passes its own gates

# A hand-made mail with one of each fault: grey on grey (4.39:1, a warning), a white-on-white
# unsubscribe link (an error), and around them what must not be reported.
BAD = """<!doctype html><html lang="en"><body style="background-color:#f3f4f6">
<div style="display:none;max-height:0;overflow:hidden;color:#f3f4f6">A hidden preheader</div>
<table role="presentation" bgcolor="#111827"><tr><td style="font-size:0px">
  <div style="font-size:14px;color:#ffffff">The newsletter's name</div></td></tr></table>
<div style="background:#ffffff"><p style="color:#1f2933">Plenty of contrast here.</p>
  <h1 style="font-size:28px;color:#e8590c">Large orange heading</h1>
  <p style="font-size:16px;color:#e8590c">Small orange text</p></div>
<div style="color:#6b7280;font-size:12px">You get this mail because you subscribed.
  <a href="%%unsubscribe_url%%" style="color:#f3f4f6">Unsubscribe</a></div>
</body></html>"""


def messages(html: str) -> list[str]:
    return [str(s) for s in shortfalls(html)]


# --------------------------------------------------------------------------- contrast


def test_a_bad_mail_is_caught_with_the_text_colours_and_ratio():
    assert messages(BAD) == [
        "#f3f4f6 on #f3f4f6 is 1.00:1, under the 4.5:1 WCAG AA asks for 12px text: "
        '"Unsubscribe" (colour from <a style>, background from <body style>, in body > div > a)',
        "#e8590c on #ffffff is 3.58:1, under the 4.5:1 WCAG AA asks for 16px text: "
        '"Small orange text" (colour from <p style>, background from <div style>, in body > '
        "div > p)",
        "#6b7280 on #f3f4f6 is 4.39:1, under the 4.5:1 WCAG AA asks for 12px text: "
        '"You get this mail because you subscribed." (colour from <div style>, background '
        "from <body style>, in html > body > div)",
    ]


def test_unreadable_text_stops_the_mail_and_weak_text_is_a_warning():
    problems = check_email(BAD, OK_TEXT)
    warnings = email_warnings(BAD)

    assert [p for p in problems if "WCAG" in p] == [f"html: {messages(BAD)[0]}"]
    assert warnings == [f"html: {m}" for m in messages(BAD)[1:]]


def test_large_text_needs_3_to_1():
    large = [t for t in shown_texts(BAD) if t.text == "Large orange heading"]
    assert len(large) == 1 and large[0].required == 3.0 and large[0].ratio > 3.0
    assert not any("Large orange" in m for m in messages(BAD))


def test_hidden_text_and_whitespace_are_not_texts():
    texts = [t.text for t in shown_texts(BAD)]
    assert "A hidden preheader" not in texts
    # The cell's font-size:0 swallows only its own whitespace; its child sets a size again.
    assert "The newsletter's name" in texts
    assert all(t.strip() for t in texts)


def test_colours_are_inherited_and_backgrounds_come_from_the_nearest_ancestor():
    html = (
        '<html lang="en"><body><table bgcolor="#111827"><tr><td><font color="#9ca3af">'
        "<b>grey on navy</b></font></td></tr></table>"
        '<div style="background:url(x.png) #000"><span>black on black</span></div>'
        '<div style="color:#fff"><p style="color:inherit">white on white</p></div></body></html>'
    )
    shown = {t.text: t for t in shown_texts(html)}

    navy = shown["grey on navy"]
    assert (navy.colour.hex, navy.background.hex, navy.weight) == ("#9ca3af", "#111827", 700)
    assert (navy.colour_from, navy.background_from) == ("<font color>", "<table bgcolor>")
    # A background image is off in many clients: its fallback colour is what shows.
    black = shown["black on black"]
    assert (black.colour.hex, black.background.hex) == ("#000000", "#000000")
    assert black.colour_from == "no colour set (the client's black)"
    white = shown["white on white"]
    assert (white.colour.hex, white.background.hex) == ("#ffffff", "#ffffff")
    assert white.background_from == "no background set (the client's white)"


def test_translucency_and_opacity_are_laid_over_the_background():
    html = (
        '<html lang="en"><body style="background-color:#000">'
        '<div style="background-color:rgba(255,255,255,0.5)"><p>on grey</p></div>'
        '<p style="color:#fff;opacity:0.5">faded white</p></body></html>'
    )
    shown = {t.text: t for t in shown_texts(html)}

    assert shown["on grey"].background.hex == "#808080"
    faded = shown["faded white"]
    assert faded.colour.alpha == 0.5 and faded.background.hex == "#000000"
    assert faded.ratio == pytest.approx(5.28, abs=0.01)  # mid grey on black


def test_a_link_without_a_colour_of_its_own_is_the_browsers_blue():
    html = '<html lang="en"><body style="color:#fff;background:#000"><a href="x">here</a></body>'
    [link] = shown_texts(html)
    assert link.colour.hex == "#0000ee" and link.ratio < 3
    assert "is 2.23:1" in messages(html)[0] and "the link blue" in messages(html)[0]


def test_style_blocks_do_not_count_as_every_client_keeps_them():
    html = (
        '<html lang="en"><head><style>.foot { color: #111 }</style></head>'
        '<body><p class="foot" style="color:#ccc">light grey</p></body></html>'
    )
    assert "is 1.60:1" in messages(html)[0]


# --------------------------------------------------------------------------- alt, lang, size


def test_images_need_alt_text_unless_they_say_they_are_decoration():
    html = (
        '<html lang="en"><body><img src="https://cdn.example.org/a.png">'
        '<img src="https://cdn.example.org/b.png" alt="  ">'
        '<img src="https://cdn.example.org/logo.png" alt="AI Term of the Week">'
        '<img src="https://cdn.example.org/rule.png" alt="" role="presentation">'
        '<img src="https://cdn.example.org/dot.png" alt="" aria-hidden="true">'
        '<a href="%%unsubscribe_url%%">Unsubscribe</a></body></html>'
    )
    alt = [p for p in check_email(html, OK_TEXT) if "alt" in p]
    assert alt == [
        "html: <img src='https://cdn.example.org/a.png'> has no alt text",
        "html: <img src='https://cdn.example.org/b.png'> has no alt text (its alt is empty; an "
        'image that is only decoration says so with role="presentation")',
    ]


def test_the_html_element_needs_a_lang():
    html = '<html><body><a href="%%unsubscribe_url%%">Unsubscribe</a></body></html>'
    assert "html: <html> has no lang attribute" in check_email(html, OK_TEXT)


def test_a_mail_near_gmails_clip_is_a_warning_and_over_it_a_problem():
    def mail(padding: int) -> str:
        return (
            '<html lang="en"><body><a href="%%unsubscribe_url%%">Unsubscribe</a>'
            f"<p>{'x' * padding}</p></body></html>"
        )

    near = mail(int(GMAIL_CLIP_BYTES * 0.95))
    assert not [p for p in check_email(near, OK_TEXT) if "KB" in p]
    [warning] = email_warnings(near)
    assert warning.startswith("html: 97.") and "close to the 102 KB past which Gmail" in warning
    over = mail(GMAIL_CLIP_BYTES)
    assert [p for p in check_email(over, OK_TEXT) if "Gmail clips" in p]
    assert not [w for w in email_warnings(over) if "KB" in w]
    assert email_warnings(mail(1000)) == []


# --------------------------------------------------------------------------- digest check


def store(engine: Engine, html: str) -> None:
    save_built(
        engine,
        week=WEEK,
        featured_slug="attention",
        related_slugs=[],
        pick_source="queue",
        preheader="The term of the week",
        archive_html="<!doctype html><html lang='en'><body><p>Attention</p></body></html>",
        snapshot={},
        now=SEND_NOW,
        subject="Attention",
        html=html,
        text=OK_TEXT,
    )


def test_digest_check_notes_weak_contrast_and_still_passes(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    seed_subscribers(engine, 1)
    weak = BAD.replace('style="color:#f3f4f6"', "")  # the link readable again
    store(engine, weak)

    result = runner.invoke(app, ["check", "--week", str(WEEK)])

    assert result.exit_code == 0, result.output
    assert f"note: html: {messages(weak)[0]}" in result.output
    assert "note: html: #6b7280 on #f3f4f6 is 4.39:1" in result.output
    assert result.output.endswith(f"{WEEK}: no problems found\n")


def test_digest_check_fails_on_unreadable_text(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    seed_subscribers(engine, 1)
    store(engine, BAD)

    result = runner.invoke(app, ["check", "--week", str(WEEK)])

    assert result.exit_code == 1
    assert f"- html: {messages(BAD)[0]}" in result.output
    assert f"{WEEK}: 1 problem" in result.output


# --------------------------------------------------------------------------- digest's own mails
#
# These hold the shipped theme to WCAG AA: any text under its minimum fails, warnings included.


def weekly_mails(glossary: Glossary) -> list[tuple[str, str]]:
    settings = settings_for()
    return [
        (slug, render_issue(snapshot_of(glossary, slug, settings), settings).html)
        for slug in glossary.slugs[:3]
    ]


def test_the_weekly_mail_has_every_text_at_wcag_aa(starter_glossary: Glossary) -> None:
    found = [
        f"{slug}: {m}" for slug, html in weekly_mails(starter_glossary) for m in messages(html)
    ]
    assert not found, "\n".join(found)


def test_the_weekly_mail_has_lang_alt_texts_and_fits_gmail(starter_glossary: Glossary) -> None:
    for slug, html in weekly_mails(starter_glossary):
        problems = check_email(html, OK_TEXT)
        assert problems == [], (slug, problems)
        assert not [w for w in email_warnings(html) if "KB" in w], slug


def test_the_confirmation_mail_has_every_text_at_wcag_aa() -> None:
    html, _text = render_confirmation(settings_for(), "Ann", "https://digest.example.org/confirm/x")
    assert messages(html) == [], "\n".join(messages(html))


def test_the_welcome_mail_has_every_text_at_wcag_aa() -> None:
    settings = settings_for(secret_key="test-secret-key-not-for-production")
    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    ann = Subscriber(
        id=7, email="ann@example.org", name="Ann", status="active", source="web",
        timezone="Europe/Amsterdam", paused_until=None, created_at=now, confirmed_at=now,
        unsubscribed_at=None, confirm_sent_at=now, updated_at=now,
    )  # fmt: skip
    recipient = subscriber_recipient(settings, ann.id, ann.email, ann.name)
    latest = {"title": "Attention", "summary": "How a model weighs words.", "url": "https://x"}
    mail = welcome_message(settings, ann, recipient, latest, now)
    assert messages(mail.html) == [], "\n".join(messages(mail.html))
