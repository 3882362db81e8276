"""The claim's rows, written through the driver: the same values SQLAlchemy itself writes and reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, select, text

from digest.config import Settings
from digest.delivery.audience import audience_page
from digest.delivery.claims import claim_batch
from digest.store.db import deliveries, subscribers
from digest.store.issues import transition
from tests.sending import NOW, WEEK, build_issue, seed_subscribers

CLAIMED_AT = datetime(2026, 3, 2, 9, 0, 7, 123456, tzinfo=UTC)


def test_claimed_rows_hold_what_sqlalchemy_would_have_written(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    ids = seed_subscribers(engine, 6)
    with engine.begin() as conn:
        conn.execute(
            subscribers.update()
            .where(subscribers.c.id == ids[1])
            .values(paused_until=NOW + timedelta(days=3))
        )
    build_issue(engine)
    issue = transition(engine, WEEK, "sending", now=NOW)
    settings = Settings()
    page = audience_page(issue.send_started_at or NOW, 0, 4)

    claimed = claim_batch(engine, settings, issue, 3, page, now=NOW, claimed_at=CLAIMED_AT)

    assert claimed is not None
    assert (claimed.rows, claimed.skipped, claimed.last_id) == (4, 1, ids[3])
    assert [int(r.custom_args["subscriber_id"]) for r in claimed.recipients] == [
        ids[0],
        ids[2],
        ids[3],
    ]
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                deliveries.c.subscriber_id,
                deliveries.c.batch,
                deliveries.c.status,
                deliveries.c.attempts,
                deliveries.c.error,
                deliveries.c.claimed_at,
            ).order_by(deliveries.c.subscriber_id)
        ).all()
    paused = f"paused until {(NOW + timedelta(days=3)).isoformat()}"
    assert [tuple(r) for r in rows] == [
        (ids[0], 3, "claimed", 0, None, CLAIMED_AT),
        (ids[1], 3, "skipped", 0, paused, CLAIMED_AT),
        (ids[2], 3, "claimed", 0, None, CLAIMED_AT),
        (ids[3], 3, "claimed", 0, None, CLAIMED_AT),
    ]
    # Byte for byte the stored form SQLAlchemy writes (SQLite keeps datetimes as text, and
    # comparisons on that text — "claimed before" — must see one format only).
    with engine.begin() as conn:
        conn.execute(
            insert(deliveries).values(
                issue_id=issue.id,
                subscriber_id=ids[5],
                batch=9,
                status="claimed",
                attempts=0,
                claimed_at=CLAIMED_AT,
            )
        )
        stored = conn.execute(
            text("SELECT DISTINCT CAST(claimed_at AS TEXT) FROM deliveries")
        ).all()
    assert len(stored) == 1


def test_a_second_claim_of_the_same_page_passes_over_claimed_readers(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    ids = seed_subscribers(engine, 3)
    build_issue(engine)
    issue = transition(engine, WEEK, "sending", now=NOW)
    page = audience_page(issue.send_started_at or NOW, 0, 2)
    first = claim_batch(engine, Settings(), issue, 1, page, now=NOW, claimed_at=CLAIMED_AT)
    again = claim_batch(engine, Settings(), issue, 2, page, now=NOW, claimed_at=CLAIMED_AT)
    assert first is not None and again is not None
    assert (first.rows, again.rows, again.recipients, again.last_id) == (2, 0, [], ids[1])
