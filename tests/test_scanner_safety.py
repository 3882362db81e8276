"""Mail scanners open every link in a mail, with GET and HEAD. None of them may change anything.

A real weekly issue, a confirmation mail and a welcome mail are sent to the outbox; every link in
their text and HTML parts and List-Unsubscribe headers (with the readers' real tokens) is fetched
from the app as a scanner would, and the database must be unchanged, row for row. The RFC 8058
one-click POST must keep working afterwards.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import Engine, select

from digest.campaign.build import build_issue
from digest.core.tokens import make_token
from digest.delivery import make_transport
from digest.delivery.runner import send_issue
from digest.readers.signup import subscribe
from digest.store.db import deliveries, events, issues, queue, subscribers, utcnow
from digest.store.events import handle_events
from digest.store.queue import add_to_queue
from digest.store.subscribers import add_confirmed, get_subscriber
from tests.sending import JOINED, NOW, WEEK

TABLES = (subscribers, deliveries, events, queue, issues)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(v for k, v in attrs if k in ("href", "src", "action") and v)


def links_in(mail: EmailMessage) -> set[str]:
    """Every URL a scanner would find: both parts and the List-Unsubscribe header."""
    text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    html = mail.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    parser = _Links()
    parser.feed(html)
    found = set(re.findall(r"https?://[^\s<>\"]+", text)) | set(parser.urls)
    found |= set(re.findall(r"<(https?://[^>]+)>", mail.get("List-Unsubscribe", "")))
    return found


def snapshot(engine: Engine) -> str:
    """Every row of every table a click could touch, in a stable order, as text."""
    with engine.connect() as conn:
        dump = {
            table.name: [
                [str(value) for value in row]
                for row in conn.execute(select(table).order_by(table.c.id)).all()
            ]
            for table in TABLES
        }
    return json.dumps(dump, sort_keys=True)


def test_fetching_every_link_of_every_mail_changes_nothing(
    settings, engine, client, starter_glossary
):
    # A reader who gets the weekly issue, with an event on file and a term queued.
    carol, _ = add_confirmed(engine, "carol@example.org", name="Carol", now=JOINED)
    build_issue(engine, settings, starter_glossary, WEEK, now=NOW, news=[])
    assert send_issue(engine, settings, make_transport(settings), WEEK, now=NOW).status == "sent"
    handle_events(
        engine,
        [{"event": "dropped", "email": carol.email, "reason": "Spam Content", "sg_event_id": "d1"}],
        NOW + timedelta(minutes=5),
    )
    add_to_queue(engine, starter_glossary, "tokenization", now=utcnow())
    # A reader who just confirmed (the welcome mail) and one who has not yet (the confirmation).
    bob = subscribe(engine, settings, "bob@example.org", timezone="Asia/Tokyo", now=NOW).subscriber
    assert client.post(f"/confirm/{make_token(settings, 'confirm', bob.id, bob.email)}").is_success
    subscribe(engine, settings, "ann@example.org", now=NOW)

    mails = {
        path.name: message_from_bytes(path.read_bytes(), policy=policy.default)
        for path in Path(settings.outbox_dir).glob("*.eml")
    }
    subjects = sorted(str(m["Subject"]).split(":")[0].split(" to ")[0] for m in mails.values())
    assert subjects == [
        "Confirm your subscription",
        "Confirm your subscription",
        "Large Language Model — AI Term of the Week",  # the issue: title — newsletter name
        "Welcome",
    ]
    ours = sorted(
        {
            url
            for mail in mails.values()
            for url in links_in(mail)
            if url.startswith(settings.base_url)
        }
    )
    routes = {urlsplit(url).path.split("/")[1] for url in ours}
    assert {"confirm", "unsubscribe", "preferences", "issues"} <= routes  # nothing was missed
    assert any(url.endswith("/issues/") for url in ours) and any(
        "/issues/2026-W" in u for u in ours
    )
    assert "%%" not in "".join(ours)

    before = snapshot(engine)
    for url in ours:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        for method in ("GET", "HEAD"):
            answer = client.request(method, path, follow_redirects=False)
            assert answer.status_code in (200, 405), (method, url, answer.status_code)
    assert snapshot(engine) == before
    assert get_subscriber(engine, "ann@example.org").status == "pending"
    assert get_subscriber(engine, "carol@example.org").status == "active"

    # A mail client's RFC 8058 one-click unsubscribe is a POST, and still works.
    (weekly,) = [m for m in mails.values() if " — AI Term of the Week" in m["Subject"]]
    (one_click,) = re.findall(r"<(https?://[^>]+)>", weekly["List-Unsubscribe"])
    answer = client.post(
        urlsplit(one_click).path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    assert get_subscriber(engine, "carol@example.org").status == "unsubscribed"
    assert snapshot(engine) != before
