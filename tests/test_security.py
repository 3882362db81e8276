"""Security checks across modules: escaping, header injection, token scope, enumeration, secrets.

Each test drives the real path a hostile value would take — a term file through the build into
mail, archive and feed; a form post into an .eml; a SendGrid failure into logs and the database.
"""

from __future__ import annotations

import logging
import re
import socket
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import feedparser
import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from sqlalchemy import Engine, select

from digest.campaign.build import build_issue
from digest.config import Settings, get_settings
from digest.core.archive import archive_page
from digest.core.feed import render_feed
from digest.core.mails import Message, Recipient
from digest.core.render import subject_line
from digest.core.tokens import make_token
from digest.delivery import make_transport
from digest.delivery.outbox import OutboxTransport
from digest.delivery.runner import send_issue
from digest.delivery.sendgrid import SendGridTransport
from digest.delivery.transport import RetryableError
from digest.model.issue import IssueRecord
from digest.model.subscriber import InvalidSubscriber
from digest.model.weeks import IsoWeek
from digest.readers.signup import subscribe
from digest.store import db
from digest.store.issues import get_issue, transition
from digest.store.queue import add_to_queue
from digest.store.subscribers import add_confirmed, get_subscriber, mark_status
from digest.store.terms import load_glossary, read_glossary
from digest.web import create_app
from tests.sendgrid_server import SendGridTestServer
from tests.test_subscribers import signed_ago

WEEK = IsoWeek(2026, 20)
SCRIPT = "<script>alert(1)</script>"
BREAKOUT = '"><img src=x onerror=alert(1)>'
INJECTED = "Ann\r\nBcc: victim@evil.example"


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    return get_settings().model_copy(update={"subscribe_rate_limit": 0})


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    # `engine`: migrated beforehand, as conftest's client is (see there).
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def outbox_mails(settings: Settings) -> list[EmailMessage]:
    folder = Path(settings.outbox_dir)
    files = sorted(folder.glob("*.eml")) if folder.exists() else []
    return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in files]  # type: ignore[misc]


class _Markup(HTMLParser):
    """Every element and attribute in a document, and the text inside <script> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: list[tuple[str, str, str]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs.extend((tag, name, value or "") for name, value in attrs)
        self._in_script = tag == "script"
        if tag == "script":
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def assert_inert(html: str) -> None:
    """No markup from the term made it through as markup: no handlers, scripts or script URLs."""
    parsed = _Markup()
    parsed.feed(html)
    handlers = [(tag, name) for tag, name, _ in parsed.attrs if name.startswith("on")]
    assert handlers == []
    links = [v for _, name, v in parsed.attrs if name in ("href", "src", "action")]
    assert not [v for v in links if re.sub(r"\s", "", v).lower().startswith("javascript:")]
    assert not [s for s in parsed.scripts if "alert" in s]
    assert "<img src=x" not in html
    assert SCRIPT not in html


# --------------------------------------------------------------------------- escaping


def _term(front: dict[str, Any], sections: dict[str, str]) -> str:
    body = "\n\n".join(f"## {title}\n\n{text}" for title, text in sections.items())
    return f"---\n{yaml.safe_dump(front, allow_unicode=True, sort_keys=False)}---\n\n{body}\n"


@pytest.fixture
def hostile_glossary(make_terms):  # type: ignore[no-untyped-def]
    """Two related terms whose every text field carries markup, quotes and ampersands."""
    evil = {
        "title": f"Evil {SCRIPT} & 'co'",
        "summary": f'Summary {BREAKOUT} & "quoted"',
        "definition": f"Definition {SCRIPT} {BREAKOUT} & more",
        "aliases": [{"name": BREAKOUT}, {"name": "Alias & <b>bold</b>", "lang": "nl"}],
        "category": f"Cat {SCRIPT}",
        "difficulty": "beginner",
        "added": "2026-W10",
        "related": ["other"],
        "sources": [
            {"title": f"Source {SCRIPT} {BREAKOUT}", "url": 'https://example.org/a?b=1&c="><x>'}
        ],
    }
    other = dict(evil, title=f"Other {BREAKOUT}", aliases=[], related=["evil"])
    sections = {
        "Why it matters": f"{SCRIPT}\n\n{BREAKOUT}\n\n[click me](javascript:alert(1)) & "
        '<a href="javascript:alert(1)">raw link</a>',
        "How it works": f"Inline `{SCRIPT}` and *{BREAKOUT}*",
        "Example": "```\n" + SCRIPT + "\n```",
        f"Notes {SCRIPT}": "A heading that carries markup.",
    }
    folder = make_terms({"evil": _term(evil, sections), "other": _term(other, sections)})
    return load_glossary(folder)


@pytest.fixture
def hostile_issue(engine, settings, hostile_glossary) -> IssueRecord:  # type: ignore[no-untyped-def]
    add_to_queue(engine, hostile_glossary, "evil", week=WEEK, this_week=WEEK, now=db.utcnow())
    record = build_issue(engine, settings, hostile_glossary, WEEK, now=db.utcnow(), news=[])
    assert record.featured_slug == "evil"
    return record


def test_markup_in_term_files_is_escaped_in_the_email_html(hostile_issue):
    html = hostile_issue.html
    assert_inert(html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&amp; more" in html and "&amp;amp;" not in html  # escaped once, not twice


def test_the_plain_text_part_shows_term_text_as_written(hostile_issue):
    text = hostile_issue.text
    assert f"Evil {SCRIPT} & 'co'" in text
    assert "&lt;" not in text and "&amp;" not in text


def test_the_subject_carries_the_title_as_text_on_one_line(hostile_issue):
    assert hostile_issue.subject.startswith(f"Evil {SCRIPT} & 'co'")
    assert "\r" not in hostile_issue.subject and "\n" not in hostile_issue.subject
    # Even a title (or a newsletter name) that somehow held a line break could not split the
    # Subject header.
    subject = subject_line("Evil\r\nBcc: x@evil.example", "Name\n\nmore", 70)
    assert "\n" not in subject and "\r" not in subject


def test_markup_in_term_files_is_escaped_on_the_archive_page(client, engine, hostile_issue):
    transition(engine, WEEK, "sending", now=db.utcnow())
    transition(engine, WEEK, "sent", now=db.utcnow())
    page = client.get(f"/issues/{WEEK}")
    assert page.status_code == 200
    assert_inert(page.text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    index = client.get("/issues/")
    assert_inert(index.text)
    assert "Evil &lt;script&gt;" in index.text


def test_markup_in_term_files_stays_text_in_the_feed(client, engine, settings, hostile_issue):
    transition(engine, WEEK, "sending", now=db.utcnow())
    sent = transition(engine, WEEK, "sent", now=db.utcnow())
    xml = client.get("/feed.xml").text
    assert xml == render_feed(settings, [sent], db.utcnow())
    assert "<script" not in xml and "<img" not in xml
    parsed = feedparser.parse(xml)
    assert parsed.bozo == 0
    [entry] = parsed.entries
    assert entry.title == f"Evil {SCRIPT} & 'co'"
    # content:encoded holds the article as HTML text; as HTML it must be inert.
    item = ET.fromstring(xml).find("channel/item")
    assert item is not None
    content = item.findtext("{http://purl.org/rss/1.0/modules/content/}encoded") or ""
    assert_inert(content)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content
    assert_inert(item.findtext("description") or "")


def test_the_archive_page_and_the_stored_one_are_both_inert(settings, hostile_issue):
    # The page is rendered from the snapshot at each request; the stored one is the build's.
    assert_inert(archive_page(settings, hostile_issue))
    assert_inert(hostile_issue.archive_html)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "java\tscript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "vbscript:msgbox(1)",
        "http://example.org/plain-http",
        "//example.org/protocol-relative",
        "https://exa mple.org/space",
    ],
)
def test_a_source_url_that_is_not_plain_https_is_refused_by_the_loader(make_terms, url):
    front = {
        "title": "Alpha", "summary": "One line.", "definition": "Alpha is a test.",
        "category": "Fundamentals", "difficulty": "beginner", "added": "2026-W10",
        "related": [], "sources": [{"title": "Source", "url": url}],
    }  # fmt: skip
    folder = make_terms({"alpha": _term(front, {"Why it matters": "x", "How it works": "y",
                                                "Example": "z"})})  # fmt: skip
    glossary, errors = read_glossary(folder)
    assert len(glossary) == 0
    assert [e.field for e in errors] == ["sources[0].url"]
    assert "must be" in errors[0].message


def test_a_markdown_link_to_a_script_url_is_not_rendered_as_a_link(hostile_issue):
    assert 'href="javascript:' not in hostile_issue.html
    assert "[click me](javascript:alert(1))" in hostile_issue.html  # left as plain text


def test_a_subscriber_name_with_markup_is_escaped_in_the_confirmation_mail(engine, settings):
    name = f"Mallory {SCRIPT} {BREAKOUT}"
    subscribe(engine, settings, "mallory@example.org", name=name, now=db.utcnow())
    [mail] = outbox_mails(settings)
    html = mail.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert_inert(html)
    assert "Mallory &lt;script&gt;" in html
    text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert f"Hi {name}," in text


@pytest.mark.parametrize(
    "name",
    [f"Mallory {SCRIPT}", '"Boss" <boss@example.org>, eve@evil.example', "Ann; Bob", "Zoë «Z»"],
)
def test_a_name_holding_address_syntax_stays_one_display_name_in_the_to_header(
    engine, settings, name
):
    subscribe(engine, settings, "mallory@example.org", name=name, now=db.utcnow())
    [mail] = outbox_mails(settings)
    [to] = mail["To"].addresses
    assert (to.display_name, to.addr_spec) == (name, "mallory@example.org")
    assert mail["Bcc"] is None and mail["Cc"] is None


def test_the_weekly_mail_escapes_a_hostile_name_and_keeps_it_out_of_other_headers(
    engine, settings, hostile_issue, tmp_path
):
    name = f'Eve {SCRIPT} "x" <eve2@evil.example>'
    add_confirmed(engine, "eve@example.org", name=name, now=db.utcnow() - timedelta(days=1))
    outbox = OutboxTransport(tmp_path / "weekly", clock=db.utcnow)
    summary = send_issue(engine, settings, outbox, WEEK, now=db.utcnow())
    assert summary.status == "sent"
    [path] = sorted((tmp_path / "weekly").glob("*.eml"))
    mail = message_from_bytes(path.read_bytes(), policy=policy.default)
    [to] = mail["To"].addresses  # type: ignore[union-attr]
    assert (to.display_name, to.addr_spec) == (name, "eve@example.org")
    assert mail["Bcc"] is None and mail["Cc"] is None
    html = mail.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert_inert(html)


# --------------------------------------------------------------------------- header injection


def test_subscribe_refuses_a_name_with_a_line_break_and_nothing_reaches_the_outbox(
    engine, settings
):
    with pytest.raises(InvalidSubscriber) as refused:
        subscribe(engine, settings, "ann@example.org", name=INJECTED, now=db.utcnow())
    assert refused.value.field == "name"
    assert "line breaks" in str(refused.value)
    assert get_subscriber(engine, "ann@example.org") is None
    assert outbox_mails(settings) == []


@pytest.mark.parametrize(
    "email", ["ann@example.org\r\nBcc: victim@evil.example", "ann@example.org\nX-Evil: 1"]
)
def test_subscribe_refuses_an_address_with_a_line_break(engine, settings, email):
    with pytest.raises(InvalidSubscriber) as refused:
        subscribe(engine, settings, email, now=db.utcnow())
    assert refused.value.field == "email"
    assert outbox_mails(settings) == []


@pytest.mark.parametrize("fmt", ["form", "json"])
@pytest.mark.parametrize("field", ["email", "name"])
def test_the_subscribe_form_answers_422_for_a_line_break_and_sends_nothing(
    client, engine, settings, fmt, field
):
    body = {"email": "ann@example.org", "name": "Ann"}
    body[field] = body[field] + "\r\nBcc: victim@evil.example"
    answer = client.post("/subscribe", **{"data" if fmt == "form" else "json": body})
    assert answer.status_code == 422
    assert "not valid" in answer.text
    assert get_subscriber(engine, "ann@example.org") is None
    assert outbox_mails(settings) == []


@pytest.mark.parametrize(
    ("fields", "header"),
    [
        ({"subject": "Hi\r\nBcc: x@evil.example"}, "subject"),
        ({"from_email": "a@example.org\r\nBcc: x@evil.example"}, "from"),
        ({"from_name": "Digest\nBcc: x@evil.example"}, "from name"),
        ({"reply_to": "r@example.org\rBcc: x@evil.example"}, "reply-to"),
        ({"headers": {"X-Tag": "a\r\nBcc: x@evil.example"}}, "X-Tag"),
    ],
)
def test_a_message_refuses_a_line_break_in_any_header_value(fields, header):
    base: dict[str, Any] = {"subject": "Hi", "html": "<p>x</p>", "text": "x", "recipients": [],
                            "from_email": "digest@example.org"}  # fmt: skip
    with pytest.raises(ValueError, match=f"^{header}: line breaks are not allowed"):
        Message(**{**base, **fields})


@pytest.mark.parametrize(
    "fields",
    [
        {"email": "ann@example.org\r\nBcc: x@evil.example"},
        {"name": INJECTED},
        {"headers": {"List-Unsubscribe": "<https://x>\r\nBcc: x@evil.example"}},
    ],
)
def test_a_recipient_refuses_a_line_break_in_any_header_value(fields):
    with pytest.raises(ValueError, match="line breaks are not allowed"):
        Recipient(**{"email": "ann@example.org", **fields})


@pytest.mark.parametrize(
    "field", ["sender_name", "sender_email", "reply_to", "newsletter_name", "unsubscribe_mailto"]
)
def test_a_header_setting_with_a_line_break_is_refused_at_start_up(field):
    with pytest.raises(ValidationError, match="line breaks are not allowed"):
        Settings(**{field: "digest@example.org\r\nBcc: victim@evil.example"})


def test_a_term_title_with_a_line_break_never_loads(make_terms):
    text = (
        '---\ntitle: "Evil\\r\\nBcc: victim@evil.example"\nsummary: s\ndefinition: d\n'
        "category: c\ndifficulty: beginner\nadded: 2026-W10\nrelated: []\n"
        "sources: [{title: t, url: 'https://example.org/'}]\n---\n\n"
        "## Why it matters\n\nx\n\n## How it works\n\ny\n\n## Example\n\nz\n"
    )
    glossary, errors = read_glossary(make_terms({"evil": text}))
    assert len(glossary) == 0
    assert [(e.line, e.field) for e in errors] == [(2, "title")]
    assert "must be one line" in errors[0].message


# --------------------------------------------------------------------------- tokens


@pytest.fixture
def two_pending(engine, settings):  # type: ignore[no-untyped-def]
    ann = subscribe(engine, settings, "ann@example.org", now=db.utcnow()).subscriber
    bob = subscribe(engine, settings, "bob@example.org", now=db.utcnow()).subscriber
    return ann, bob


def _statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(db.subscribers.c.email, db.subscribers.c.status)).all())


@pytest.mark.parametrize("method", ["get", "post"])
def test_confirm_links_are_bound_to_their_purpose_subscriber_key_and_lifetime(
    client, engine, settings, two_pending, method
):
    ann, bob = two_pending
    other_key = settings.model_copy(
        update={"secret_key": SecretStr("someone-elses-key"), "old_secret_keys": []}
    )
    with signed_ago(settings.confirm_max_age + 1):
        expired = make_token(settings, "confirm", ann.id, ann.email)
    forged = {
        "another subscriber's id": make_token(settings, "confirm", bob.id, ann.email),
        "another address": make_token(settings, "confirm", ann.id, bob.email),
        "the unsubscribe purpose": make_token(settings, "unsubscribe", ann.id, ann.email),
        "the preferences purpose": make_token(settings, "preferences", ann.id, ann.email),
        "another key": make_token(other_key, "confirm", ann.id, ann.email),
        "an expired link": expired,
    }
    before = _statuses(engine)
    for why, token in forged.items():
        answer = getattr(client, method)(f"/confirm/{token}")
        assert answer.status_code == 400, why
        assert "This link does not work" in answer.text, why
    assert "This link has expired." in getattr(client, method)(f"/confirm/{expired}").text
    assert (
        _statuses(engine) == before == {"ann@example.org": "pending", "bob@example.org": "pending"}
    )


def test_unsubscribe_links_are_bound_to_their_purpose_subscriber_and_key(
    client, engine, settings, two_pending
):
    ann, bob = two_pending
    for sub in (ann, bob):
        client.post(f"/confirm/{make_token(settings, 'confirm', sub.id, sub.email)}")
    other_key = settings.model_copy(
        update={"secret_key": SecretStr("someone-elses-key"), "old_secret_keys": []}
    )
    refused = {
        "the confirm purpose": make_token(settings, "confirm", ann.id, ann.email),
        "the preferences purpose": make_token(settings, "preferences", ann.id, ann.email),
        "another key": make_token(other_key, "unsubscribe", ann.id, ann.email),
    }
    for why, token in refused.items():
        assert client.post(f"/unsubscribe/{token}").status_code == 400, why
    # Signed by us but naming a subscriber who does not have that address: nobody to act on
    # (the same "you are unsubscribed" page an erased subscriber's old link gets).
    mismatched = make_token(settings, "unsubscribe", bob.id, ann.email)
    assert client.post(f"/unsubscribe/{mismatched}").status_code == 200
    assert _statuses(engine) == {"ann@example.org": "active", "bob@example.org": "active"}
    real = make_token(settings, "unsubscribe", ann.id, ann.email)
    assert client.post(f"/unsubscribe/{real}").status_code == 200
    assert _statuses(engine) == {"ann@example.org": "unsubscribed", "bob@example.org": "active"}


# --------------------------------------------------------------------------- enumeration


def _comparable(response: Any) -> tuple[Any, ...]:
    nonce = re.search(r"'nonce-([^']+)'", response.headers["content-security-policy"])
    blank = (lambda s: s.replace(nonce.group(1), "NONCE")) if nonce else (lambda s: s)
    headers = sorted((k, blank(v)) for k, v in response.headers.items() if k != "date")
    return response.status_code, blank(response.text), tuple(headers)


@pytest.mark.parametrize("fmt", ["form", "json"])
def test_subscribe_answers_identically_for_new_pending_active_and_suppressed_addresses(
    client, engine, settings, fmt
):
    now = db.utcnow()
    subscribe(engine, settings, "pending@example.org", now=now)
    add_confirmed(engine, "active@example.org", now=now)
    for status in ("unsubscribed", "bounced", "complained"):
        sub, _ = add_confirmed(engine, f"{status}@example.org", now=now)
        mark_status(engine, sub.id, status, now)  # type: ignore[arg-type]
    answers = set()
    for who in ("new", "pending", "active", "unsubscribed", "bounced", "complained"):
        body = {"email": f"{who}@example.org", "name": "Someone", "timezone": "Europe/Amsterdam"}
        answer = client.post("/subscribe", **{"data" if fmt == "form" else "json": body})
        assert answer.status_code == 200
        answers.add(_comparable(answer))
    assert len(answers) == 1


# --------------------------------------------------------------------------- the SendGrid key

KEY = "SG.security-test-key-0123456789.abcdefghijklmnopqrstuvwxyz-0123456789"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _exception_texts(exc: BaseException) -> str:
    """Everything an exception could show: message, repr, traceback, causes, contexts, args."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 20:
        seen.append(str(current))
        seen.append(repr(current))
        seen.append("".join(traceback.format_exception(current)))
        seen.extend(repr(a) for a in current.args)
        seen.extend(repr(v) for v in getattr(current, "__dict__", {}).values())
        current = current.__cause__ or current.__context__
    return "\n".join(seen)


def _database_text(engine: Engine) -> str:
    with engine.connect() as conn:
        return "\n".join(
            repr(row) for table in db.metadata.sorted_tables for row in conn.execute(select(table))
        )


@pytest.fixture
def sendgrid_settings(settings, monkeypatch) -> Settings:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    return Settings(
        transport="sendgrid", max_retries=0, retry_base_delay=0, sendgrid_timeout=2.0,
        subscribe_rate_limit=0,
    )  # fmt: skip


@pytest.mark.parametrize("failure", ["401", "connection refused"])
def test_the_sendgrid_key_never_shows_in_errors_logs_or_the_database(
    engine, settings, sendgrid_settings, hostile_issue, caplog, failure
):
    caplog.set_level(logging.DEBUG)
    add_confirmed(engine, "ann@example.org", now=db.utcnow() - timedelta(days=1))
    with SendGridTestServer(api_key="SG.the-right-key.0123456789") as server:
        host = server.url if failure == "401" else f"http://127.0.0.1:{_closed_port()}"
        conf = sendgrid_settings.model_copy(update={"sendgrid_host": host})
        transport = make_transport(conf)
        assert isinstance(transport, SendGridTransport)
        summary = send_issue(engine, conf, transport, WEEK, now=db.utcnow(), sleep=lambda s: None)
        with pytest.raises(Exception) as direct:
            transport.send(
                Message(subject="s", html="h", text="t", from_email="d@example.org",
                        recipients=[Recipient(email="ann@example.org")])
            )  # fmt: skip
    assert summary.status == ("failed" if failure == "401" else "paused")
    assert summary.api_calls >= 1
    if failure == "401":  # the library's DEBUG lines (headers included) went through the filter
        assert "python_http_client" in {r.name.split(".")[0] for r in caplog.records}
    if failure == "connection refused":
        assert isinstance(direct.value, RetryableError)
    issue = get_issue(engine, WEEK)
    assert issue is not None
    shown = [
        caplog.text,
        "\n".join(r.getMessage() for r in caplog.records),
        summary.reason or "",
        _exception_texts(direct.value),
        _database_text(engine),
        repr(conf),
        str(conf),
        repr(transport),
    ]
    assert all(KEY not in text for text in shown)
    assert KEY.split(".")[1] not in "\n".join(shown)  # not even the middle part


def test_a_failed_confirmation_mail_logs_no_key(engine, sendgrid_settings, caplog):
    caplog.set_level(logging.DEBUG)
    conf = sendgrid_settings.model_copy(
        update={"sendgrid_host": f"http://127.0.0.1:{_closed_port()}"}
    )
    with TestClient(create_app(conf), raise_server_exceptions=False) as web:
        answer = web.post("/subscribe", data={"email": "ann@example.org"})
    assert answer.status_code == 200
    assert "confirmation mail not sent" in caplog.text
    assert KEY not in caplog.text
    assert KEY not in _database_text(engine)


@pytest.mark.parametrize("action", ["", "/pause", "/unsubscribe", "/export", "/erase"])
def test_preference_links_are_bound_to_their_purpose_subscriber_and_key(
    client, engine, settings, two_pending, action
):
    ann, bob = two_pending
    other_key = settings.model_copy(
        update={"secret_key": SecretStr("someone-elses-key"), "old_secret_keys": []}
    )
    refused = {
        "the confirm purpose": make_token(settings, "confirm", ann.id, ann.email),
        "the unsubscribe purpose": make_token(settings, "unsubscribe", ann.id, ann.email),
        "another subscriber's id": make_token(settings, "preferences", bob.id, ann.email),
        "another key": make_token(other_key, "preferences", ann.id, ann.email),
    }
    for why, token in refused.items():
        answer = client.post(f"/preferences/{token}{action}", data={"weeks": "2", "confirm": "yes"})
        assert answer.status_code == 400, why
        assert "ann@" not in answer.text and "a…@example.org" not in answer.text, why
    assert _statuses(engine) == {"ann@example.org": "pending", "bob@example.org": "pending"}
