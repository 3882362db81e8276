"""`digest stats`: the per-issue numbers worked out by hand from a seeded event set, the JSON
other tools read (exact key names), and the table of the last issues.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, update
from typer.testing import CliRunner

from digest.config import Settings
from digest.core.tracking import reader_key, tracking_key
from digest.delivery.outbox import OutboxTransport
from digest.delivery.runner import send_issue
from digest.store import engagement as engagement_store
from digest.store.db import issues, utcnow
from digest.store.events import handle_events
from digest.store.issues import get_issue
from digest.store.subscribers import unsubscribe_subscriber
from tests.sending import NOW, WEEK, build_issue, seed_subscribers

runner = CliRunner()
LINKS = ["https://glossary.example.org/attention", "https://glossary.example.org/transformer"]
KEYS = [
    "week",
    "recipients",
    "delivered",
    "bounced",
    "opens_unique",
    "opens_machine",
    "clicks_unique",
    "clicks_machine",
    "unsubscribed",
    "complaints",
    "clicks_by_link",
    "rate_base",
    "open_rate",
    "click_rate",
    "bounce_rate",
    "unsubscribe_rate",
    "complaint_rate",
]


def _digest(*args: str) -> Any:
    from digest.cli import app

    return runner.invoke(app, list(args))


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


def _seed(engine: Engine, tmp_path: Path, settings: Settings) -> list[int]:
    """Ten readers get week 10 (tracked links stored); eight deliveries, one hard and one soft
    bounce, opens (3 readers, 2 machine), clicks (2 readers on link 0, 1 on both, 1 machine),
    one complaint and two unsubscribes after the issue (one through SendGrid)."""
    ids = seed_subscribers(engine, 10)
    build_issue(engine)
    with engine.begin() as conn:
        conn.execute(update(issues).where(issues.c.week == str(WEEK)).values(links=LINKS))
    send_issue(engine, settings, OutboxTransport(tmp_path / "out", clock=utcnow), WEEK, now=NOW)
    issue = get_issue(engine, WEEK)
    assert issue is not None
    batch = [_event("delivered", n, f"d{n}", ids) for n in range(8)]
    batch += [
        _event("bounce", 8, "b8", ids, type="bounce"),
        _event("bounce", 9, "b9", ids, type="blocked"),
        _event("open", 0, "o0", ids),
        _event("open", 0, "o0-again", ids),
        _event("open", 1, "o1", ids),
        _event("open", 2, "o2", ids, sg_machine_open=True),
        _event("open", 2, "o2-human", ids, sg_machine_open=False),
        _event("open", 3, "o3", ids, sg_machine_open=True),
        _event("spamreport", 4, "s4", ids),
        _event("unsubscribe", 5, "u5", ids),
    ]
    handle_events(engine, batch, NOW + timedelta(hours=1), settings=settings)
    unsubscribe_subscriber(engine, ids[6], now=NOW + timedelta(hours=2))
    key = tracking_key(settings)
    for n, index, machine in [
        (0, 0, False),
        (1, 0, False),
        (1, 1, False),
        (1, 1, False),
        (7, 0, True),
    ]:
        engagement_store.record(
            engine,
            issue_id=issue.id,
            kind="click",
            link_index=index,
            reader_key=reader_key(key, issue.id, ids[n]),
            machine=machine,
            subscriber_id=None,
            now=NOW + timedelta(hours=3),
        )
    return ids


def test_stats_arithmetic_on_a_seeded_event_set(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("DIGEST_TRACK_OPENS", "true")
    monkeypatch.setenv("DIGEST_TRACK_CLICKS", "true")
    _seed(engine, tmp_path, Settings())

    result = _digest("stats", "--week", str(WEEK), "--json")

    assert result.exit_code == 0, result.output
    numbers = json.loads(result.output)
    assert list(numbers) == KEYS
    assert numbers == {
        "week": str(WEEK),
        "recipients": 10,
        "delivered": 8,
        # as `digest deliveries` counts them: every bounce event, the "blocked" one too
        "bounced": 2,
        "opens_unique": 3,  # readers 0 (twice), 1 and 2 (by hand, after the machine)
        "opens_machine": 2,  # readers 2 and 3
        "clicks_unique": 2,
        "clicks_machine": 1,
        "unsubscribed": 2,  # reader 5 through SendGrid, reader 6 by the link
        "complaints": 1,
        "clicks_by_link": {LINKS[0]: 2, LINKS[1]: 1},
        "rate_base": "delivered",
        "open_rate": 0.375,
        "click_rate": 0.25,
        "bounce_rate": 0.2,
        "unsubscribe_rate": 0.25,
        "complaint_rate": 0.125,
    }


def test_with_tracking_off_stats_still_report_recipients_and_delivered(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    ids = seed_subscribers(engine, 3)
    build_issue(engine)
    send_issue(engine, Settings(), OutboxTransport(tmp_path / "out", clock=utcnow), WEEK, now=NOW)
    handle_events(engine, [_event("delivered", n, f"d{n}", ids) for n in range(3)], NOW)

    (numbers,) = json.loads(_digest("stats", "--json").output)

    assert (numbers["recipients"], numbers["delivered"]) == (3, 3)
    assert (numbers["opens_unique"], numbers["clicks_unique"]) == (0, 0)
    # not tracked: unknown, not 0 %
    assert (numbers["open_rate"], numbers["click_rate"]) == (None, None)
    assert numbers["clicks_by_link"] == {}


def test_without_delivery_events_rates_are_per_recipient(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    ids = seed_subscribers(engine, 4)
    build_issue(engine)
    send_issue(engine, Settings(), OutboxTransport(tmp_path / "out", clock=utcnow), WEEK, now=NOW)
    handle_events(engine, [_event("spamreport", 0, "s0", ids)], NOW)

    (numbers,) = json.loads(_digest("stats", "--json").output)

    assert (numbers["delivered"], numbers["rate_base"], numbers["complaint_rate"]) == (
        0,
        "recipients",
        0.25,
    )


def test_the_table_lists_the_issues_that_went_out_newest_first(
    settings_env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    seed_subscribers(engine, 2)
    for offset in range(2):
        build_issue(engine, WEEK + offset)
        send_issue(
            engine,
            Settings(),
            OutboxTransport(tmp_path / f"out{offset}", clock=utcnow),
            WEEK + offset,
            now=NOW + timedelta(days=7 * offset),
        )
    build_issue(engine, WEEK + 2)  # built, not sent: no numbers

    result = _digest("stats")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "week", "sent", "deliv", "bnc", "open", "m.open", "click", "m.clk", "unsub", "spam",
        "open%", "click%",
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:3]] == [str(WEEK + 1), str(WEEK)]
    assert lines[1].split()[1:3] == ["2", "0"]  # sent to 2, no delivery event yet
    assert "m.open/m.clk: machines" in result.output
    assert "—" in lines[1]  # open rate: not tracked


def test_stats_for_an_issue_not_sent_or_unknown_fails_saying_why(
    settings_env: dict[str, str], engine: Engine
) -> None:
    build_issue(engine)

    built = _digest("stats", "--week", str(WEEK))
    unknown = _digest("stats", "--week", str(WEEK + 5))
    bad = _digest("stats", "--week", "soon")

    assert built.exit_code == 1 and "no numbers until it is sent" in built.output
    assert unknown.exit_code == 1 and f"no issue for {WEEK + 5}" in unknown.output
    assert bad.exit_code == 1 and "--week" in bad.output
