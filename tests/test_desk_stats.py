"""The desk's numbers: the SVG chart builders (pure), the list's weeks from the store, and
/admin/stats showing each chart with its table."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert

from digest.config import get_settings
from digest.model.weeks import IsoWeek, current_week
from digest.store import db
from digest.store.growth import list_weeks
from digest.store.subscribers import add_confirmed, unsubscribe_subscriber
from digest.web.desk.charts import Bar, bars, funnel, trend
from tests.desk_client import desk_client, log_in, make_editor

SVG = "{http://www.w3.org/2000/svg}"
W10 = IsoWeek(2026, 10)
UTC_ZONE = ZoneInfo("UTC")


def parsed(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # well-formed XML, or this raises


# --------------------------------------------------------------------------- charts


def test_bars_are_as_long_as_their_share_of_the_largest_and_escape_their_labels():
    svg = parsed(bars([Bar("<b>RAG</b>", 10, "10"), Bar("Tokens", 5, "5")], title="Clicks"))
    widths = [float(r.get("width", "")) for r in svg.iter(f"{SVG}rect")]
    assert widths[0] == pytest.approx(2 * widths[1]) and widths[0] > 0
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert texts == ["<b>RAG</b>", "10", "Tokens", "5"]  # text, not markup
    assert svg.get("aria-hidden") == "true" and svg.get("width") == "100%"
    assert svg.get("style") is None and bars([], title="none") == ""


def test_the_funnel_narrows_with_each_step_and_never_passes_the_first():
    steps = [Bar("delivered", 100, "100"), Bar("opened", 40, "40 %"), Bar("clicked", 130, "x")]
    svg = parsed(funnel(steps, title="Funnel"))
    widths = [float(r.get("width", "")) for r in svg.iter(f"{SVG}rect")]
    assert widths[1] == pytest.approx(0.4 * widths[0]) and widths[2] == widths[0]
    assert [t.text for t in svg.iter(f"{SVG}text")] == [
        "delivered: 100",
        "opened: 40 %",
        "clicked: x",
    ]
    assert funnel([Bar("delivered", 0, "0"), Bar("opened", 0, "0")], title="empty")  # no ÷0


def test_a_trend_draws_one_line_per_series_with_a_point_per_week():
    svg = parsed(trend(["W1", "W2", "W3"], {"a": [0, 5, 10], "b": [1, 1, 1]}, title="T"))
    lines = list(svg.iter(f"{SVG}polyline"))
    assert len(lines) == 2
    ys = [float(p.split(",")[1]) for p in lines[0].get("points", "").split()]
    assert ys[0] > ys[1] > ys[2]  # up the page as the value grows
    assert len(list(svg.iter(f"{SVG}circle"))) == 6
    with pytest.raises(ValueError, match="'b' has 2 values for 3 weeks"):
        trend(["W1", "W2", "W3"], {"b": [1, 2]}, title="T")


# --------------------------------------------------------------------------- the list's weeks


def _at(week: IsoWeek, days: int = 2) -> datetime:
    return week.starts_at(UTC_ZONE) + timedelta(days=days)


def test_list_weeks_count_who_was_on_the_list_joined_left_and_bounced(engine):
    ann, _ = add_confirmed(engine, "ann@example.org", now=_at(W10 - 1))
    bob, _ = add_confirmed(engine, "bob@example.org", now=_at(W10))
    add_confirmed(engine, "cy@example.org", now=_at(W10 + 1))
    unsubscribe_subscriber(engine, ann.id, now=_at(W10 + 1, 3))
    with engine.begin() as conn:
        conn.execute(
            insert(db.events),
            [
                {"subscriber_id": bob.id, "kind": kind, "occurred_at": when, "received_at": when}
                for kind, when in [
                    ("bounce", _at(W10)),
                    ("spamreport", _at(W10)),
                    ("dropped", _at(W10 + 1)),
                ]
            ],
        )
    got = [
        (str(w.week), w.confirmed, w.joined, w.unsubscribed, w.bounced)
        for w in list_weeks(engine, [W10 - 1, W10, W10 + 1], UTC_ZONE)
    ]
    assert got == [
        ("2026-W09", 1, 1, 0, 0),
        ("2026-W10", 2, 1, 0, 1),
        ("2026-W11", 2, 1, 1, 1),
    ]


def test_the_stats_page_shows_each_chart_with_its_table(settings_env, engine):
    make_editor(engine)
    now = db.utcnow()
    add_confirmed(engine, "ann@example.org", now=now - timedelta(days=1))
    with desk_client() as client:
        assert client.get("/admin/stats").status_code == 303  # a session first
        log_in(client)
        page = client.get("/admin/stats")
    assert page.status_code == 200
    assert 'aria-current="page">Numbers<' in page.text
    assert page.text.count('<svg class="chart"') == 2
    table = re.search(r'<table id="list-table".*?</table>', page.text, re.S)
    assert table is not None
    rows = re.findall(r'<tr><th scope="row">([^<]+)</th><td>(\d+)</td>', table.group(0))
    assert len(rows) == 12
    assert rows[-1] == (str(current_week(now, get_settings().zone)), "1")


# --------------------------------------------------------------------------- engagement


RELATED_URL = "https://glossary.example.org/terms/transformer/"
OTHER_URL = "https://arxiv.org/abs/1706.03762"


def _sent(engine, tmp_path, ids, week, *, category, difficulty, now):
    """`week` built with two tracked links (a related concept's page and a paper) and a
    snapshot naming its term's category and difficulty, then sent to `ids` through the outbox,
    every mail delivered."""
    from sqlalchemy import update

    from digest.config import Settings
    from digest.delivery.outbox import OutboxTransport
    from digest.delivery.runner import send_issue
    from digest.store.events import handle_events
    from digest.store.issues import get_issue
    from tests.sending import build_issue

    build_issue(engine, week)
    snapshot = {
        "week": str(week),
        "term": {
            "slug": "attention",
            "title": "Attention",
            "category": category,
            "difficulty": difficulty,
            "url": "https://glossary.example.org/terms/attention/",
        },
        "related": [{"slug": "transformer", "title": "Transformer", "url": RELATED_URL}],
    }
    with engine.begin() as conn:
        conn.execute(
            update(db.issues)
            .where(db.issues.c.week == str(week))
            .values(links=[RELATED_URL, OTHER_URL], snapshot=snapshot)
        )
    outbox = OutboxTransport(tmp_path / str(week), clock=db.utcnow)
    assert send_issue(engine, Settings(), outbox, week, now=now).sent == len(ids)
    delivered = [
        {
            "email": f"reader{n}@example.org",
            "event": "delivered",
            "timestamp": int(now.timestamp()),
            "sg_event_id": f"{week}-d{n}",
            "issue_week": str(week),
            "subscriber_id": str(sid),
        }
        for n, sid in enumerate(ids)
    ]
    handle_events(engine, delivered, now)
    issue = get_issue(engine, week)
    assert issue is not None
    return issue


def _engaged(engine, issue, ids, rows, now):
    """Count (reader n, kind, link index, machine?) rows as the redirect and webhook do."""
    from digest.config import get_settings
    from digest.core.tracking import reader_key, tracking_key
    from digest.store import engagement as engagement_store

    key = tracking_key(get_settings())
    for n, kind, index, machine in rows:
        engagement_store.record(
            engine,
            issue_id=issue.id,
            kind=kind,
            link_index=index,
            reader_key=reader_key(key, issue.id, ids[n]),
            machine=machine,
            subscriber_id=None,
            now=now,
        )


def _seed_engagement(engine, tmp_path):
    """W10 (architecture, intermediate): 4 delivered, 2 human opens and 1 machine open, human
    clicks by reader 0 (the related concept) and reader 1 (the paper), a scanner on link 0:
    open 50 %, click 50 %. W11 (architecture, basics): 4 delivered, no open, reader 3 clicks
    the paper: open 0 %, click 25 %."""
    from tests.sending import NOW, WEEK, seed_subscribers

    ids = seed_subscribers(engine, 4)
    first = _sent(engine, tmp_path, ids, WEEK, category="architecture",
                  difficulty="intermediate", now=NOW)  # fmt: skip
    later = NOW + timedelta(days=7)
    second = _sent(engine, tmp_path, ids, WEEK + 1, category="architecture",
                   difficulty="basics", now=later)  # fmt: skip
    _engaged(
        engine,
        first,
        ids,
        [(0, "open", -1, False), (1, "open", -1, False), (2, "open", -1, True),
         (0, "click", 0, False), (1, "click", 1, False), (2, "click", 0, True)],
        NOW + timedelta(hours=1),
    )  # fmt: skip
    _engaged(engine, second, ids, [(3, "click", 1, False)], later + timedelta(hours=1))
    return ids


def _rows(page_text, table_id):
    table = re.search(rf'<table id="{table_id}".*?</table>', page_text, re.S)
    assert table is not None, table_id
    found = []
    for head, cells in re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', table.group(0)):
        row = (head, *re.findall(r"<td>(.*?)</td>", cells))
        found.append(tuple(re.sub(r"<[^>]+>", "", cell).strip() for cell in row))
    return found


def test_an_issue_page_shows_its_funnel_and_clicks_per_concept_with_tables(
    settings_env, engine, tmp_path
):
    make_editor(engine)
    _seed_engagement(engine, tmp_path)
    with desk_client(track_opens=True, track_clicks=True) as client:
        log_in(client)
        page = client.get("/admin/issues/2026-W10")
        unsent = client.get("/admin/issues/2026-W12")

    assert page.status_code == 200
    assert _rows(page.text, "funnel-table") == [
        ("delivered", "4"),
        ("opened", "2 (50.0%)"),  # the machine open apart
        ("clicked", "2 (50.0%)"),  # the scanner apart
    ]
    # the related concept by its name, any other target by its URL
    assert _rows(page.text, "links-table") == [("Transformer", "1"), (OTHER_URL, "1")]
    assert page.text.count('<svg class="chart"') == 2  # the funnel and the links
    assert unsent.status_code == 200 and 'id="numbers"' not in unsent.text


def test_the_stats_page_shows_rates_per_issue_and_by_category_and_difficulty(
    settings_env, engine, tmp_path
):
    make_editor(engine)
    _seed_engagement(engine, tmp_path)
    with desk_client(track_opens=True, track_clicks=True) as client:
        log_in(client)
        page = client.get("/admin/stats")

    assert page.status_code == 200
    assert _rows(page.text, "rates-table") == [
        ("2026-W10", "50.0%", "50.0%"),
        ("2026-W11", "0.0%", "25.0%"),
    ]
    assert _rows(page.text, "by-category-table") == [("architecture", "2", "37.5%")]
    assert _rows(page.text, "by-difficulty-table") == [
        ("intermediate", "1", "50.0%"),
        ("basics", "1", "25.0%"),
    ]
    assert page.text.count('<svg class="chart"') == 5


def test_rates_digest_did_not_track_show_as_unknown_not_zero(settings_env, engine, tmp_path):
    make_editor(engine)
    _seed_engagement(engine, tmp_path)
    with desk_client(track_opens=False, track_clicks=False) as client:
        log_in(client)
        stats = client.get("/admin/stats")
        issue = client.get("/admin/issues/2026-W11")

    # W10 has counted opens and clicks (from when tracking was on); W11 counted no open.
    assert _rows(stats.text, "rates-table") == [
        ("2026-W10", "50.0%", "50.0%"),
        ("2026-W11", "—", "25.0%"),
    ]
    assert _rows(issue.text, "funnel-table")[1] == ("opened", "not tracked")
