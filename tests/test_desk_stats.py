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
