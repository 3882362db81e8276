"""Click tracking: off by default, every tracked link a reader's own /r/<token> when on, a
redirect that only ever goes to a link the issue contained, machines counted apart."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update

from digest.campaign.build import build_issue as build_real_issue
from digest.config import Settings
from digest.core.mails import fill_markers
from digest.core.tracking import (
    is_scanner,
    make_click_token,
    mark_links,
    read_click_token,
    tracked_links,
    tracking_key,
    tracking_keys,
)
from digest.delivery.outbox import OutboxTransport
from digest.delivery.runner import send_issue
from digest.model.glossary import Glossary
from digest.model.issue import IssueRecord
from digest.store.db import engagement, issues, subscribers, utcnow
from digest.store.issues import get_issue, save_built
from digest.web import create_app
from tests.sending import HTML, NOW, TEXT, WEEK, seed_subscribers

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari"
_HREF = re.compile(r"""href=(["'])(.*?)\1""")
_URL = re.compile(r"""https?://[^\s<>"']+""")


# --------------------------------------------------------------------------- helpers


def _parts(path: Path) -> tuple[EmailMessage, str, str]:
    with open(path, "rb") as fh:
        mail = email.message_from_binary_file(fh, policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    text, html = mail.iter_parts()
    return mail, text.get_content(), html.get_content()


def _send(engine: Engine, settings: Settings, outbox: Path) -> list[Path]:
    send_issue(engine, settings, OutboxTransport(outbox, clock=utcnow), WEEK, now=NOW)
    return sorted(outbox.glob("*.eml"))


def _small_issue(engine: Engine) -> IssueRecord:
    """tests.sending's issue, with its tracked links stored as a build stores them."""
    return save_built(
        engine,
        week=WEEK,
        featured_slug="attention",
        related_slugs=[],
        pick_source="queue",
        subject="Attention",
        preheader="The term of the week",
        html=HTML,
        text=TEXT,
        archive_html="<!doctype html><html lang='en'><body><p>Attention</p></body></html>",
        snapshot={},
        now=NOW - timedelta(hours=1),
        links=tracked_links(HTML, TEXT),
    )


def _tokens(paths: list[Path]) -> list[str]:
    found: list[str] = []
    for path in paths:
        _mail, text, html = _parts(path)
        found += re.findall(r"/r/([A-Za-z0-9_-]+)", text + html)
    return found


def _rows(engine: Engine) -> list[tuple[int, bool, int, int | None]]:
    with engine.connect() as conn:
        return [
            (r.link_index, r.machine, r.hits, r.subscriber_id)
            for r in conn.execute(
                select(engagement).where(engagement.c.kind == "click").order_by(engagement.c.id)
            )
        ]


def _clicks_unique(engine: Engine, issue_id: int, link_index: int) -> int:
    with engine.connect() as conn:
        keys = conn.execute(
            select(engagement.c.reader_key).where(
                engagement.c.issue_id == issue_id,
                engagement.c.kind == "click",
                engagement.c.link_index == link_index,
                engagement.c.machine.is_(False),
            )
        ).scalars()
        return len(set(keys))


@pytest.fixture
def tracking(settings_env: dict[str, str]) -> Settings:
    return Settings(track_clicks=True)


@pytest.fixture
def web(tracking: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(tracking)) as c:
        yield c


# --------------------------------------------------------------------------- the mail


def test_tracking_is_off_by_default_and_the_weekly_mail_has_no_redirect_and_no_pixel(
    engine: Engine, settings: Settings, starter_glossary: Glossary, tmp_path: Path
) -> None:
    assert settings.track_clicks is False and settings.track_opens is False
    seed_subscribers(engine, 2)
    issue = build_real_issue(engine, settings, starter_glossary, WEEK, now=NOW, news=[])
    assert issue.links and f"{settings.site_url}/{issue.featured_slug}" in issue.links

    files = _send(engine, settings, tmp_path / "outbox")

    assert len(files) == 2
    for path in files:
        _mail, text, html = _parts(path)
        assert "/r/" not in text + html
        assert "<img" not in html  # no pixel (and the issue shows no image at all)
        # Byte for byte the built mail, only the reader's own markers filled in.
        own = re.sub(r"https://digest\.example\.org/(unsubscribe|preferences)/[\w.-]+", "", html)
        built = fill_markers(issue.html or "", {"%%name_html%%": "Reader"})
        assert own.rstrip("\n") == re.sub(r"%%(unsubscribe|preferences)_url%%", "", built)


def test_with_tracking_every_tracked_link_is_the_readers_own_redirect(
    engine: Engine, tracking: Settings, starter_glossary: Glossary, tmp_path: Path
) -> None:
    ids = seed_subscribers(engine, 2)
    issue = build_real_issue(engine, tracking, starter_glossary, WEEK, now=NOW, news=[])
    assert issue.links is not None

    files = _send(engine, tracking, tmp_path / "outbox")

    keys = tracking_keys(tracking)
    readers = set()
    for path in files:
        mail, text, html = _parts(path)
        hrefs = [unquoted for _q, unquoted in _HREF.findall(html)]
        for url in [*hrefs, *_URL.findall(text)]:
            assert url not in issue.links, url
            assert url.startswith(
                (
                    f"{tracking.base_url}/r/",
                    f"{tracking.base_url}/unsubscribe/",
                    f"{tracking.base_url}/preferences/",
                )
            ), url
        assert any("/unsubscribe/" in h for h in hrefs)
        assert any("/preferences/" in h for h in hrefs)
        assert mail["List-Unsubscribe"].startswith(f"<{tracking.base_url}/unsubscribe/")
        tokens = re.findall(r"/r/([A-Za-z0-9_-]+)", text + html)
        clicks = {read_click_token(keys, t) for t in tokens}
        assert None not in clicks
        assert {c.link_index for c in clicks if c} == set(range(len(issue.links)))
        assert {c.issue_id for c in clicks if c} == {issue.id}
        (reader,) = {c.subscriber_id for c in clicks if c}
        readers.add(reader)
    assert readers == set(ids)


def test_an_opted_out_reader_gets_the_plain_links(
    engine: Engine, tracking: Settings, tmp_path: Path
) -> None:
    _ann, bob = seed_subscribers(engine, 2)
    with engine.begin() as conn:
        conn.execute(
            update(subscribers).where(subscribers.c.id == bob).values(tracking_opt_out=True)
        )
    _small_issue(engine)

    files = _send(engine, tracking, tmp_path / "outbox")

    by_reader = {_parts(p)[0]["To"].addresses[0].addr_spec: _parts(p) for p in files}
    _mail, text, html = by_reader["reader1@example.org"]
    assert "/r/" not in text + html
    assert "href='https://glossary.example.org/attention'" in html
    assert "\nhttps://glossary.example.org/attention\n" in text
    _mail, text, html = by_reader["reader0@example.org"]
    assert "glossary.example.org/attention" not in text + html
    assert len(re.findall(r"/r/", text)) == 1 and len(re.findall(r"/r/", html)) == 1


def test_tracked_links_leave_out_unsubscribe_preferences_and_mailto_in_a_stable_order() -> None:
    html = (
        '<a href="https://a.example/x?b=1&amp;c=2">A</a> <a href="mailto:ed@example.org">m</a>'
        ' <a href="%%unsubscribe_url%%">u</a> <a href="https://b.example/">B</a>'
        ' <a href="https://a.example/x?b=1&amp;c=2">A again</a> <a href="#top">top</a>'
    )
    text = "A: https://a.example/x?b=1&c=2\nC: https://c.example/page.\n%%preferences_url%%\n"
    links = tracked_links(html, text)
    assert links == ("https://a.example/x?b=1&c=2", "https://b.example/", "https://c.example/page")
    assert tracked_links(html, text) == links

    marked = mark_links(html, text, links)
    assert "https://" not in marked.html and "https://" not in marked.text
    assert "mailto:ed@example.org" in marked.html and "%%unsubscribe_url%%" in marked.html
    assert marked.text.startswith("A: %%click_0%%\nC: %%click_2%%.\n")
    # An untracked reader's values give the mail back byte for byte, escaping and all.
    plain = {f"%%click_{i}%%": link for i, link in enumerate(links)}
    plain |= {f"%%click_{i}_html%%": form for i, form in marked.html_forms.items()}
    assert fill_markers(marked.html, plain) == html
    assert fill_markers(marked.text, plain) == text


# --------------------------------------------------------------------------- the redirect


def test_a_token_redirects_only_to_its_issues_stored_link(
    engine: Engine, tracking: Settings, web: TestClient, tmp_path: Path
) -> None:
    seed_subscribers(engine, 1)
    issue = _small_issue(engine)
    (token,) = set(_tokens(_send(engine, tracking, tmp_path / "outbox")))
    assert issue.links == ("https://glossary.example.org/attention",)

    for method in ("GET", "HEAD"):
        response = web.request(method, f"/r/{token}", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "https://glossary.example.org/attention"

    key = tracking_key(tracking)
    for wrong in (
        make_click_token(key, issue.id, 1, 1),  # no link 1 in this issue
        make_click_token(key, issue.id + 1, 0, 1),  # no such issue
    ):
        response = web.get(f"/r/{wrong}", follow_redirects=False)
        assert response.status_code == 404
        assert "location" not in response.headers


@hypothesis_settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_tampered_or_garbage_token_is_a_4xx_that_redirects_nowhere(
    engine: Engine, tracking: Settings, web: TestClient, data: st.DataObject
) -> None:
    if get_issue(engine, WEEK) is None:
        seed_subscribers(engine, 1)
        _small_issue(engine)
    issue = get_issue(engine, WEEK)
    assert issue is not None
    good = make_click_token(tracking_key(tracking), issue.id, 0, 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    position = data.draw(st.integers(0, len(good) - 1))
    other = data.draw(st.sampled_from(alphabet).filter(lambda c: c != good[position]))
    candidates = [
        good[:position] + other + good[position + 1 :],
        good[:position],
        good + data.draw(st.text(alphabet, min_size=1, max_size=4)),
        # Not "." or "..": the client would normalise /r/.. to another page before sending.
        quote(data.draw(st.text(min_size=1, max_size=40).filter(lambda t: t.strip("."))), safe=""),
    ]
    for token in candidates:
        if token == good:
            continue
        response = web.get(f"/r/{token}", follow_redirects=False)
        assert 400 <= response.status_code < 500, token
        assert "location" not in response.headers, token
    assert _rows(engine) == []


def test_head_counts_nothing_and_one_browser_get_counts_one_human_click(
    engine: Engine, tracking: Settings, web: TestClient, tmp_path: Path
) -> None:
    seed_subscribers(engine, 1)
    issue = _small_issue(engine)
    (token,) = set(_tokens(_send(engine, tracking, tmp_path / "outbox")))

    head = web.head(f"/r/{token}", headers={"user-agent": BROWSER}, follow_redirects=False)
    assert head.status_code == 303
    assert _rows(engine) == []

    response = web.get(f"/r/{token}", headers={"user-agent": BROWSER}, follow_redirects=False)
    assert response.status_code == 303
    assert _rows(engine) == [(0, False, 1, None)]  # aggregate: no subscriber id kept
    assert _clicks_unique(engine, issue.id, 0) == 1
    # The same reader clicking the same link again is still one reader.
    web.get(f"/r/{token}", headers={"user-agent": BROWSER}, follow_redirects=False)
    assert _rows(engine) == [(0, False, 2, None)]
    assert _clicks_unique(engine, issue.id, 0) == 1


@pytest.mark.parametrize(
    "agent",
    [
        "",
        "Mozilla/5.0 (compatible; BingPreview/1.0b)",
        "Barracuda Sentinel (EE)",
        "python-requests/2.32.3",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    ],
)
def test_a_scanner_or_missing_user_agent_counts_as_a_machine(
    engine: Engine, tracking: Settings, web: TestClient, agent: str
) -> None:
    (reader,) = seed_subscribers(engine, 1)
    issue = _small_issue(engine)
    token = make_click_token(tracking_key(tracking), issue.id, 0, reader)

    response = web.get(f"/r/{token}", headers={"user-agent": agent}, follow_redirects=False)

    assert response.status_code == 303
    assert _rows(engine) == [(0, True, 1, None)]
    assert _clicks_unique(engine, issue.id, 0) == 0


def test_is_scanner_knows_machines_and_lets_browsers_through() -> None:
    assert is_scanner(None) and is_scanner("") and is_scanner("  ")
    assert is_scanner("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
    assert is_scanner("Mimecast URL Protect") and is_scanner("curl/8.5.0")
    assert not is_scanner(BROWSER)
    assert not is_scanner(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36"
    )


def test_a_burst_of_one_readers_links_counts_as_a_machine(
    engine: Engine, tracking: Settings, web: TestClient
) -> None:
    html = HTML.replace(
        "Read the whole entry</a>",
        "Read the whole entry</a> <a href='https://glossary.example.org/transformer'>T</a>",
    )
    (reader,) = seed_subscribers(engine, 1)
    issue = _small_issue(engine)
    with engine.begin() as conn:
        conn.execute(
            update(issues)
            .where(issues.c.id == issue.id)
            .values(html=html, links=list(tracked_links(html, TEXT)))
        )
    key = tracking_key(tracking)
    first, second = (make_click_token(key, issue.id, i, reader) for i in (0, 1))
    agent = {"user-agent": BROWSER}

    web.get(f"/r/{first}", headers=agent, follow_redirects=False)
    web.get(f"/r/{second}", headers=agent, follow_redirects=False)

    # A second link a moment after the first: a gateway opening every link, not the reader.
    assert _rows(engine) == [(0, False, 1, None), (1, True, 1, None)]

    # The same links long apart are the reader's: time alone never makes a machine.
    with engine.begin() as conn:
        conn.execute(engagement.delete())
    web.get(f"/r/{first}", headers=agent, follow_redirects=False)
    with engine.begin() as conn:
        conn.execute(update(engagement).values(last_at=utcnow() - timedelta(seconds=30)))
    web.get(f"/r/{second}", headers=agent, follow_redirects=False)
    assert _rows(engine) == [(0, False, 1, None), (1, False, 1, None)]


def test_per_reader_detail_keeps_the_subscriber_and_off_counts_nothing_but_redirects(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    (reader,) = seed_subscribers(engine, 1)
    issue = _small_issue(engine)
    per_reader = Settings(track_clicks=True, tracking_detail="per-reader")
    token = make_click_token(tracking_key(per_reader), issue.id, 0, reader)

    with TestClient(create_app(per_reader)) as c:
        c.get(f"/r/{token}", headers={"user-agent": BROWSER}, follow_redirects=False)
    assert _rows(engine) == [(0, False, 1, reader)]

    with TestClient(create_app(Settings(track_clicks=False))) as c:
        response = c.get(f"/r/{token}", headers={"user-agent": BROWSER}, follow_redirects=False)
    assert response.status_code == 303
    assert _rows(engine) == [(0, False, 1, reader)]  # redirected, not counted


def test_a_reader_who_opted_out_since_is_redirected_and_not_counted(
    engine: Engine, tracking: Settings, web: TestClient
) -> None:
    (reader,) = seed_subscribers(engine, 1)
    issue = _small_issue(engine)
    token = make_click_token(tracking_key(tracking), issue.id, 0, reader)
    with engine.begin() as conn:
        conn.execute(update(subscribers).values(tracking_opt_out=True))

    response = web.get(f"/r/{token}", headers={"user-agent": BROWSER}, follow_redirects=False)

    assert response.status_code == 303
    assert _rows(engine) == []


def test_a_token_signed_with_a_retired_key_still_redirects(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    (reader,) = seed_subscribers(engine, 1)
    issue = _small_issue(engine)
    old = Settings(secret_key="the-old-secret")
    token = make_click_token(tracking_key(old), issue.id, 0, reader)

    rotated = Settings(secret_key="the-new-secret", old_secret_keys=["the-old-secret"])
    with TestClient(create_app(rotated)) as c:
        response = c.get(f"/r/{token}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "https://glossary.example.org/attention"

    forgotten = Settings(secret_key="the-new-secret")
    with TestClient(create_app(forgotten)) as c:
        assert c.get(f"/r/{token}", follow_redirects=False).status_code == 404
