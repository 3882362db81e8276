"""SendGrid's Event Webhook: signed batches suppress subscribers; unsigned or forged ones do nothing.

Signatures are made the way SendGrid makes them: a real ECDSA P-256 key pair, the signature
over timestamp + raw body with SHA-256, DER-encoded and base64'd.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from digest.config import Settings
from digest.delivery.outbox import OutboxTransport
from digest.delivery.runner import send_issue
from digest.store.db import events, subscribers, utcnow
from digest.store.events import handle_events
from digest.store.issues import get_issue
from digest.web import create_app
from tests.sending import NOW, WEEK, build_issue, seed_subscribers

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


class Signer:
    """A SendGrid-style signing key; `public` is what SendGrid's settings page shows."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: str = "1772442000") -> dict[str, str]:
        signature = self._key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            SIGNATURE: base64.b64encode(signature).decode(),
            TIMESTAMP: timestamp,
            "Content-Type": "application/json",
        }


def _event(kind: str, email: str, sg_event_id: str, **extra: object) -> dict[str, object]:
    return {
        "email": email,
        "event": kind,
        "timestamp": 1772442000,
        "sg_event_id": sg_event_id,
        "sg_message_id": "abc.filter0001.1",
        "issue_week": str(WEEK),
        **extra,
    }


def _statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(subscribers.c.email, subscribers.c.status)).all())


def _events(engine: Engine) -> list[tuple[str | None, str, int | None, int | None]]:
    with engine.connect() as conn:
        return [
            tuple(r)  # type: ignore[misc]
            for r in conn.execute(
                select(
                    events.c.provider_id, events.c.kind, events.c.subscriber_id, events.c.issue_id
                ).order_by(events.c.id)
            )
        ]


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def client(settings_env: dict[str, str], signer: Signer, engine: Engine) -> Iterator[TestClient]:
    settings = Settings(sendgrid_webhook_public_key=signer.public)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


# --------------------------------------------------------------------------- over HTTP


def test_signed_batch_is_accepted_and_suppresses_the_subscribers_it_names(
    client: TestClient, signer: Signer, engine: Engine
) -> None:
    ids = seed_subscribers(engine, 5)
    issue = build_issue(engine)
    batch = [
        _event("bounce", "reader0@example.org", "e0", type="bounce", subscriber_id=str(ids[0])),
        _event("spamreport", "reader1@example.org", "e1", subscriber_id=str(ids[1])),
        _event("unsubscribe", "reader2@example.org", "e2", subscriber_id=str(ids[2])),
        _event("group_unsubscribe", "reader3@example.org", "e3", asm_group_id=1),
        _event("open", "reader4@example.org", "e4"),
        _event("delivered", "reader4@example.org", "e5"),
    ]
    body = json.dumps(batch).encode()

    response = client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body))

    assert response.status_code == 200
    # the delivery is kept (for `digest stats`; not tracking), the open is not (tracking off)
    assert response.json() == {"received": 6, "stored": 5, "duplicates": 0, "suppressed": 4}
    assert _statuses(engine) == {
        "reader0@example.org": "bounced",
        "reader1@example.org": "complained",
        "reader2@example.org": "unsubscribed",
        "reader3@example.org": "unsubscribed",
        "reader4@example.org": "active",
    }
    assert _events(engine) == [
        ("e0", "bounce", ids[0], issue.id),
        ("e1", "spamreport", ids[1], issue.id),
        ("e2", "unsubscribe", ids[2], issue.id),
        ("e3", "group_unsubscribe", ids[3], issue.id),
        ("e5", "delivered", ids[4], issue.id),
    ]


@pytest.mark.parametrize(
    "forge",
    ["tampered body", "missing signature", "other key", "garbage signature", "other timestamp"],
)
def test_unsigned_or_forged_batch_is_rejected_and_changes_nothing(
    client: TestClient, signer: Signer, engine: Engine, forge: str
) -> None:
    seed_subscribers(engine, 1)
    body = json.dumps([_event("spamreport", "reader0@example.org", "e0")]).encode()
    headers = signer.headers(body)
    if forge == "tampered body":
        body = body.replace(b"spamreport", b"unsubscribe")
    elif forge == "missing signature":
        headers = {"Content-Type": "application/json"}
    elif forge == "other key":
        headers = Signer().headers(body)
    elif forge == "garbage signature":
        headers[SIGNATURE] = "not base64 at all!"
    else:
        headers[TIMESTAMP] = "1772442001"

    response = client.post("/webhooks/sendgrid", content=body, headers=headers)

    assert response.status_code == 403
    assert _statuses(engine) == {"reader0@example.org": "active"}
    assert _events(engine) == []


def test_without_a_configured_key_batches_are_taken_unsigned(
    settings_env: dict[str, str], engine: Engine
) -> None:
    seed_subscribers(engine, 1)
    body = json.dumps([_event("bounce", "reader0@example.org", "e0")]).encode()

    with TestClient(create_app(Settings(sendgrid_webhook_public_key=None))) as client:
        response = client.post(
            "/webhooks/sendgrid", content=body, headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 200
    assert _statuses(engine) == {"reader0@example.org": "bounced"}


@pytest.mark.parametrize(("body", "why"), [(b"{not json", "not JSON"), (b'{"a": 1}', "array")])
def test_a_body_that_is_not_an_event_array_is_a_bad_request(
    client: TestClient, signer: Signer, body: bytes, why: str
) -> None:
    response = client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body))

    assert response.status_code == 400 and why in response.json()["error"]


# --------------------------------------------------------------------------- handle_events


def test_the_same_event_posted_twice_is_stored_once(engine: Engine) -> None:
    seed_subscribers(engine, 1)
    batch = [_event("unsubscribe", "reader0@example.org", "same-id")]

    first = handle_events(engine, batch, NOW)
    again = handle_events(engine, batch + batch, NOW)

    assert (first.stored, first.suppressed) == (1, 1)
    assert (again.stored, again.duplicates, again.suppressed) == (0, 2, 0)
    assert len(_events(engine)) == 1


def test_soft_bounces_and_drops_about_the_message_do_not_suppress(engine: Engine) -> None:
    seed_subscribers(engine, 4)
    batch = [
        _event("bounce", "reader0@example.org", "b0", type="blocked", reason="mailbox full"),
        _event("dropped", "reader1@example.org", "d1", reason="Spam Content (if enabled)"),
        _event("dropped", "reader2@example.org", "d2", reason="Bounced Address"),
        _event("dropped", "reader3@example.org", "d3", reason="Unsubscribed Address"),
    ]

    result = handle_events(engine, batch, NOW)

    assert (result.stored, result.suppressed) == (4, 2)
    assert _statuses(engine) == {
        "reader0@example.org": "active",
        "reader1@example.org": "active",
        "reader2@example.org": "bounced",
        "reader3@example.org": "unsubscribed",
    }


def test_subscriber_is_found_by_address_when_the_custom_arg_is_missing_or_wrong(
    engine: Engine,
) -> None:
    ids = seed_subscribers(engine, 2)
    batch = [
        _event("bounce", "Reader0@Example.org", "x0"),
        # an id that belongs to someone else (reused after an erase): the address wins
        _event("bounce", "reader1@example.org", "x1", subscriber_id=str(ids[0])),
    ]

    handle_events(engine, batch, NOW)

    assert [row[2] for row in _events(engine)] == [ids[0], ids[1]]
    assert set(_statuses(engine).values()) == {"bounced"}


def test_a_complaint_is_final(engine: Engine) -> None:
    seed_subscribers(engine, 1)

    handle_events(engine, [_event("spamreport", "reader0@example.org", "c0")], NOW)
    handle_events(engine, [_event("unsubscribe", "reader0@example.org", "c1")], NOW)

    assert _statuses(engine) == {"reader0@example.org": "complained"}


def test_events_for_unknown_addresses_are_kept_without_a_subscriber(engine: Engine) -> None:
    result = handle_events(engine, [_event("bounce", "stranger@example.org", "u0")], NOW)

    assert (result.stored, result.suppressed) == (1, 0)
    assert _events(engine) == [("u0", "bounce", None, None)]


def test_a_bounced_subscriber_does_not_get_next_weeks_issue(
    engine: Engine, settings_env: dict[str, str], tmp_path: Path
) -> None:
    ids = seed_subscribers(engine, 3)
    build_issue(engine, WEEK)
    settings = Settings()
    send_issue(engine, settings, OutboxTransport(tmp_path / "w10", clock=utcnow), WEEK, now=NOW)
    handle_events(
        engine,
        [_event("bounce", "reader1@example.org", "b1", subscriber_id=str(ids[1]))],
        NOW + timedelta(hours=1),
    )
    build_issue(engine, WEEK + 1)

    summary = send_issue(
        engine,
        settings,
        OutboxTransport(tmp_path / "w11", clock=utcnow),
        WEEK + 1,
        now=NOW + timedelta(days=7),
    )

    assert summary.sent == 2
    assert len(list((tmp_path / "w11").glob("*.eml"))) == 2
    next_issue = get_issue(engine, WEEK + 1)
    assert next_issue is not None and next_issue.status == "sent"


def test_an_event_holding_a_lone_surrogate_is_dropped_and_the_rest_of_the_batch_is_kept(
    engine: Engine,
) -> None:
    seed_subscribers(engine, 2)
    bad = _event("unsubscribe", "reader0@example.org", "bad-id") | {"reason": "\udc00"}
    good = _event("unsubscribe", "reader1@example.org", "good-id")

    result = handle_events(engine, [bad, good], NOW)

    assert (result.received, result.stored, result.suppressed) == (1, 1, 1)
    assert [e[0] for e in _events(engine)] == ["good-id"]
