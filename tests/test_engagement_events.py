"""SendGrid's deliveries and opens become honest numbers: machines apart, re-posts count nothing,
tracking off keeps deliveries only, and unsigned posts are refused where they could be anyone's.

Batches are signed as SendGrid signs them (`tests.test_webhook.Signer`); the issue really went
out through the outbox, so `recipients` comes from a real ledger.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update

from digest.config import Settings
from digest.core.mails import Message
from digest.core.tracking import reader_key, tracking_key
from digest.delivery.outbox import OutboxTransport
from digest.delivery.runner import send_issue
from digest.delivery.sendgrid import SendGridTransport, build_payload
from digest.model.issue import IssueRecord
from digest.store import engagement as engagement_store
from digest.store.db import engagement, events, subscribers, utcnow
from digest.store.events import handle_events
from digest.store.subscribers import erase
from digest.web import create_app
from digest.web.webhooks import NO_KEY_IN_PRODUCTION
from tests.sendgrid_server import SendGridTestServer, check_mail_send
from tests.sending import NOW, WEEK, build_issue, seed_subscribers
from tests.test_webhook import Signer


def _event(kind: str, n: int, sg_event_id: str, ids: list[int], **extra: object) -> dict[str, Any]:
    return {
        "email": f"reader{n}@example.org",
        "event": kind,
        "timestamp": 1772442000,
        "sg_event_id": sg_event_id,
        "issue_week": str(WEEK),
        "subscriber_id": str(ids[n]),
        **extra,
    }


def _sent_issue(engine: Engine, tmp_path: Path, readers: int = 3) -> tuple[IssueRecord, list[int]]:
    ids = seed_subscribers(engine, readers)
    build_issue(engine)
    summary = send_issue(
        engine, Settings(), OutboxTransport(tmp_path / "out", clock=utcnow), WEEK, now=NOW
    )
    assert summary.sent == readers
    from digest.store.issues import get_issue

    issue = get_issue(engine, WEEK)
    assert issue is not None
    return issue, ids


def _the_batch(ids: list[int]) -> list[dict[str, Any]]:
    """The "Done when" batch: three deliveries, reader 0 opening twice, a machine open of 1."""
    return [
        _event("delivered", 0, "d0", ids),
        _event("delivered", 1, "d1", ids),
        _event("delivered", 2, "d2", ids),
        _event("open", 0, "o0a", ids, sg_machine_open=False),
        _event("open", 0, "o0b", ids, sg_machine_open=False, timestamp=1772445600),
        _event("open", 1, "o1", ids, sg_machine_open=True),
    ]


def _post(client: TestClient, signer: Signer, batch: list[dict[str, Any]]) -> Any:
    body = json.dumps(batch).encode()
    return client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body))


def _rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(
                    engagement.c.kind,
                    engagement.c.link_index,
                    engagement.c.machine,
                    engagement.c.hits,
                    engagement.c.subscriber_id,
                ).order_by(engagement.c.machine, engagement.c.id)
            )
        ]


def _tracked(signer: Signer | None = None, **overrides: Any) -> Settings:
    key = signer.public if signer is not None else None
    return Settings(sendgrid_webhook_public_key=key, track_opens=True, **overrides)


# --------------------------------------------------------------------------- the "Done when"


def test_three_deliveries_a_double_human_open_and_a_machine_open_and_the_same_batch_again(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    issue, ids = _sent_issue(engine, tmp_path)
    signer = Signer()
    with TestClient(create_app(_tracked(signer))) as client:
        first = _post(client, signer, _the_batch(ids))
        numbers = engagement_store.issue_numbers(engine, issue.id)
        rows = _rows(engine)
        again = _post(client, signer, _the_batch(ids))

    assert first.status_code == 200
    assert first.json() == {"received": 6, "stored": 6, "duplicates": 0, "suppressed": 0}
    assert (numbers["recipients"], numbers["delivered"]) == (3, 3)
    assert (numbers["opens_unique"], numbers["opens_machine"]) == (1, 1)
    assert numbers["open_rate"] == round(1 / 3, 4) and numbers["rate_base"] == "delivered"
    # one human row with two hits, one machine row; no subscriber named (aggregate detail)
    assert rows == [("open", -1, False, 2, None), ("open", -1, True, 1, None)]
    assert again.json() == {"received": 6, "stored": 0, "duplicates": 6, "suppressed": 0}
    assert engagement_store.issue_numbers(engine, issue.id) == numbers
    assert _rows(engine) == rows


def test_the_reader_key_is_the_keyed_hash_of_issue_and_reader(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    issue, ids = _sent_issue(engine, tmp_path, readers=1)
    settings = _tracked()

    handle_events(engine, [_event("open", 0, "o", ids)], NOW, settings=settings)

    with engine.connect() as conn:
        stored = conn.execute(select(engagement.c.reader_key)).scalar_one()
    assert stored == reader_key(tracking_key(settings), issue.id, ids[0])
    assert stored != reader_key(tracking_key(settings), issue.id + 1, ids[0])
    assert len(stored) == 64 and int(stored, 16) >= 0


# --------------------------------------------------------------------------- tracking off / opt-out


def test_with_tracking_off_deliveries_are_kept_and_opens_are_not(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    issue, ids = _sent_issue(engine, tmp_path)

    result = handle_events(engine, _the_batch(ids), NOW, settings=Settings())

    assert (result.stored, result.ignored, result.counted) == (3, 3, 0)
    with engine.connect() as conn:
        kinds = sorted(conn.execute(select(events.c.kind)).scalars())
    assert kinds == ["delivered"] * 3
    assert _rows(engine) == []
    numbers = engagement_store.issue_numbers(engine, issue.id)
    assert (numbers["recipients"], numbers["delivered"], numbers["opens_unique"]) == (3, 3, 0)


def test_deferred_is_kept_and_a_sendgrid_click_only_when_click_tracking_is_on(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    _issue, ids = _sent_issue(engine, tmp_path, readers=1)
    batch = [
        _event("deferred", 0, "f0", ids, response="421 try later"),
        _event("click", 0, "c0", ids, url="https://glossary.example.org/attention"),
    ]

    off = handle_events(engine, batch, NOW, settings=Settings())
    on = handle_events(engine, batch, NOW, settings=Settings(track_clicks=True))

    assert (off.stored, off.ignored) == (1, 1)
    assert (on.stored, on.duplicates) == (1, 1)
    with engine.connect() as conn:
        kept = dict(conn.execute(select(events.c.kind, events.c.subscriber_id)).all())
    # the click names no reader (aggregate detail) and counts nothing: digest counts its own
    # /r/ redirects, SendGrid's click tracking is off in every payload
    assert kept == {"deferred": ids[0], "click": None}
    assert _rows(engine) == []


def test_an_opted_out_readers_open_is_kept_as_an_event_but_never_counted(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    issue, ids = _sent_issue(engine, tmp_path, readers=2)
    with engine.begin() as conn:
        conn.execute(
            update(subscribers).where(subscribers.c.id == ids[0]).values(tracking_opt_out=True)
        )

    result = handle_events(
        engine,
        [_event("open", 0, "o0", ids), _event("open", 1, "o1", ids)],
        NOW,
        settings=_tracked(),
    )

    assert (result.stored, result.counted) == (2, 1)
    assert engagement_store.issue_numbers(engine, issue.id)["opens_unique"] == 1


# --------------------------------------------------------------------------- per-reader detail, erase


def test_per_reader_rows_go_with_the_reader_and_aggregate_rows_stay(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    issue, ids = _sent_issue(engine, tmp_path, readers=2)
    handle_events(
        engine, [_event("open", 0, "a0", ids)], NOW, settings=_tracked(tracking_detail="aggregate")
    )
    handle_events(
        engine,
        [_event("open", 0, "p0", ids, sg_machine_open=True), _event("open", 1, "p1", ids)],
        NOW,
        settings=_tracked(tracking_detail="per-reader"),
    )
    with engine.connect() as conn:
        named = conn.execute(
            select(func.count()).where(engagement.c.subscriber_id == ids[0])
        ).scalar_one()
    assert named == 1  # the per-reader machine open of reader 0

    assert erase(engine, ids[0])

    assert sorted(_rows(engine), key=repr) == sorted(
        [("open", -1, False, 1, None), ("open", -1, False, 1, ids[1])], key=repr
    )
    numbers = engagement_store.issue_numbers(engine, issue.id)
    assert (numbers["opens_unique"], numbers["opens_machine"]) == (2, 0)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("environment", "with_key", "signed", "status"),
    [
        ("production", False, False, 403),  # no key in production: refused outright
        ("production", True, False, 403),
        ("production", True, True, 200),
        ("development", True, False, 403),
        ("development", False, False, 200),  # a local test of the webhook
    ],
)
def test_who_may_post_events(
    settings_env: dict[str, str],
    engine: Engine,
    tmp_path: Path,
    environment: str,
    with_key: bool,
    signed: bool,
    status: int,
) -> None:
    _issue, ids = _sent_issue(engine, tmp_path, readers=1)
    signer = Signer()
    settings = Settings(
        environment=environment,
        sendgrid_webhook_public_key=signer.public if with_key else None,
        track_opens=True,
    )
    body = json.dumps([_event("open", 0, "o", ids), _event("spamreport", 0, "s", ids)]).encode()
    headers = signer.headers(body) if signed else {"Content-Type": "application/json"}

    with TestClient(create_app(settings)) as client:
        response = client.post("/webhooks/sendgrid", content=body, headers=headers)

    assert response.status_code == status
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(events)).scalar_one()
        reader = conn.execute(select(subscribers.c.status)).scalar_one()
    if status == 200:
        assert (stored, reader, len(_rows(engine))) == (2, "complained", 1)
    else:
        assert (stored, reader, _rows(engine)) == (0, "active", [])
    if environment == "production" and not with_key:
        assert response.json() == {"error": NO_KEY_IN_PRODUCTION}
        assert "DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY" in NO_KEY_IN_PRODUCTION


# --------------------------------------------------------------------------- the store contract


def test_record_is_new_once_then_counts_hits_and_last_click_at_follows(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    issue, ids = _sent_issue(engine, tmp_path, readers=1)
    key = reader_key(b"k" * 32, issue.id, ids[0])
    later = NOW + timedelta(seconds=5)

    def click(index: int, machine: bool, at: Any) -> bool:
        return engagement_store.record(
            engine,
            issue_id=issue.id,
            kind="click",
            link_index=index,
            reader_key=key,
            machine=machine,
            subscriber_id=None,
            now=at,
        )

    assert engagement_store.last_click_at(engine, issue.id, key) is None
    assert click(0, False, NOW) is True
    assert click(0, False, later) is False
    assert click(0, True, NOW) is True  # a machine is a row of its own
    assert click(1, False, NOW) is True
    assert engagement_store.last_click_at(engine, issue.id, key) == later
    assert _rows(engine) == [
        ("click", 0, False, 2, None),
        ("click", 1, False, 1, None),
        ("click", 0, True, 1, None),
    ]
    with pytest.raises(ValueError, match="open or click"):
        engagement_store.record(
            engine,
            issue_id=issue.id,
            kind="view",  # type: ignore[arg-type]
            link_index=0,
            reader_key=key,
            machine=False,
            subscriber_id=None,
            now=NOW,
        )


# --------------------------------------------------------------------------- SendGrid's own tracking


def _sendgrid_message(opted_out: set[int]) -> Message:
    from tests.test_sendgrid import _message, _recipient

    recipients = [replace(_recipient(i), tracking_opt_out=i in opted_out) for i in range(3)]
    return replace(_message(3), recipients=recipients)


@pytest.mark.parametrize(
    ("track_opens", "opted_out", "pixel"),
    [(False, set(), False), (True, set(), True), (True, {1}, False), (False, {1}, False)],
)
def test_sendgrid_tracks_only_what_digest_says_and_never_an_opted_out_reader(
    track_opens: bool, opted_out: set[int], pixel: bool
) -> None:
    with SendGridTestServer() as server:
        transport = SendGridTransport(
            server.api_key, host=server.url, timeout=2, track_opens=track_opens
        )
        transport.send(_sendgrid_message(opted_out))
        (payload,) = server.state.payloads

    assert check_mail_send(payload) == []
    assert payload["tracking_settings"] == {
        # digest rewrites its own links (DIGEST_TRACK_CLICKS); SendGrid never does
        "click_tracking": {"enable": False, "enable_text": False},
        "open_tracking": {"enable": pixel},
        "subscription_tracking": {"enable": False},
    }


def test_the_transport_from_settings_follows_digest_track_opens(
    settings_env: dict[str, str],
) -> None:
    on = Settings(sendgrid_api_key="SG.x", transport="sendgrid", track_opens=True)
    off = Settings(sendgrid_api_key="SG.x", transport="sendgrid")

    assert SendGridTransport.from_settings(on).track_opens is True
    assert SendGridTransport.from_settings(off).track_opens is False


def test_the_fake_sendgrid_refuses_a_malformed_tracking_setting() -> None:
    payload = build_payload(_sendgrid_message(set()))
    payload["tracking_settings"]["open_tracking"] = {"enable": "yes"}

    assert check_mail_send(payload) == [
        ("tracking_settings.open_tracking", "The enable field must be a boolean.")
    ]


@pytest.mark.parametrize(
    ("track_opens", "pixels"), [(True, [False, True]), (False, [False, False])]
)
def test_a_weekly_batch_holding_an_opted_out_reader_goes_without_the_pixel(
    settings_env: dict[str, str], engine: Engine, track_opens: bool, pixels: list[bool]
) -> None:
    """End to end: the reader's opt-out travels from the subscriber row through the audience
    and the ledger to the Recipient, so the request that holds them asks SendGrid for no pixel
    while the next batch, without them, keeps it (when DIGEST_TRACK_OPENS)."""
    from digest.store.subscribers import set_tracking_opt_out

    ids = seed_subscribers(engine, 4)
    set_tracking_opt_out(engine, ids[1], True, now=NOW)
    build_issue(engine)
    settings = Settings(batch_size=2, track_opens=track_opens)
    with SendGridTestServer() as server:
        transport = SendGridTransport(
            server.api_key, host=server.url, timeout=2, track_opens=track_opens
        )
        summary = send_issue(engine, settings, transport, WEEK, now=NOW)
        payloads = list(server.state.payloads)

    assert summary.sent == 4 and len(payloads) == 2
    # Each batch's readers with its pixel, whichever of the two (in flight together) SendGrid
    # answered first.
    pixel_of = {
        frozenset(p["custom_args"]["subscriber_id"] for p in payload["personalizations"]): (
            payload["tracking_settings"]["open_tracking"]["enable"]
        )
        for payload in payloads
    }
    assert pixel_of == {
        frozenset({str(ids[0]), str(ids[1])}): pixels[0],
        frozenset({str(ids[2]), str(ids[3])}): pixels[1],
    }
