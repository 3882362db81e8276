"""An issue's life in one place: `prepare` builds a week's issue only when it has no content yet
(and then says so), keeps any issue that has content without reading the glossary, survives a
concurrent build, and lets the build's own errors through for the caller to word.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from digest.campaign import lifecycle
from digest.campaign.lifecycle import Prepared, prepare, resumable
from digest.model.glossary import Glossary
from digest.store import db
from digest.store.issues import get_issue, transition
from tests.sending import NOW, WEEK, build_issue


def _no_glossary() -> Glossary:
    raise AssertionError("the glossary was read for an issue that has content")


def _plan(engine, week=WEEK) -> None:
    """A planned issue: a row without content (as a queue pick reserves one)."""
    with engine.begin() as conn:
        conn.execute(
            insert(db.issues).values(
                week=str(week),
                featured_slug="attention",
                related_slugs=[],
                pick_source="queue",
                status="planned",
                created_at=NOW,
                updated_at=NOW,
            )
        )


def test_prepare_builds_an_issue_the_week_does_not_have_yet_and_says_so(engine, settings):
    prepared = prepare(engine, settings, WEEK, now=NOW)
    assert isinstance(prepared, Prepared)
    assert prepared.built
    assert prepared.issue.status == "built" and prepared.issue.html
    assert prepared.issue.built_at == NOW
    assert get_issue(engine, WEEK) == prepared.issue


def test_prepare_builds_a_planned_issue(engine, settings):
    _plan(engine)
    prepared = prepare(engine, settings, WEEK, now=NOW)
    assert prepared.built and prepared.issue.status == "built" and prepared.issue.html


def test_prepare_builds_an_issue_cancelled_before_it_had_content(engine, settings):
    # As `digest send` always did: the operator asked for this week, so it is built.
    _plan(engine)
    transition(engine, WEEK, "failed", "cancelled", now=NOW)
    prepared = prepare(engine, settings, WEEK, now=NOW)
    assert prepared.built and prepared.issue.status == "built"


@pytest.mark.parametrize("path", [(), ("sending",), ("sending", "paused"), ("sending", "sent")])
def test_prepare_keeps_an_issue_with_content_as_it_is_without_reading_the_glossary(
    engine, settings, path
):
    build_issue(engine)
    for status in path:
        transition(engine, WEEK, status, now=NOW)
    before = get_issue(engine, WEEK)
    prepared = prepare(engine, settings, WEEK, now=NOW, glossary=_no_glossary)
    assert prepared == Prepared(before, built=False)


def test_prepare_keeps_an_issue_cancelled_after_it_was_built(engine, settings):
    build_issue(engine)
    transition(engine, WEEK, "failed", "wrong term", now=NOW)
    prepared = prepare(engine, settings, WEEK, now=NOW, glossary=_no_glossary)
    assert not prepared.built
    assert (prepared.issue.status, prepared.issue.status_reason) == ("failed", "wrong term")


def test_prepare_uses_the_issue_another_process_built_while_it_was_building(
    engine, settings, monkeypatch
):
    def loses_the_race(*args, **kwargs):
        build_issue(engine)  # the other process's build lands first
        raise IntegrityError("INSERT INTO issues", {}, Exception("UNIQUE constraint failed"))

    monkeypatch.setattr(lifecycle, "build_issue", loses_the_race)
    prepared = prepare(engine, settings, WEEK, now=NOW)
    assert not prepared.built
    assert prepared.issue == get_issue(engine, WEEK)
    assert prepared.issue.built_at == NOW - timedelta(hours=1)  # theirs


def test_prepare_lets_the_builds_own_error_through(engine, settings, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("the template is broken")

    monkeypatch.setattr(lifecycle, "build_issue", broken)
    with pytest.raises(ValueError) as raised:
        prepare(engine, settings, WEEK, now=NOW)
    assert str(raised.value) == "the template is broken"  # unwrapped: the caller words it
    assert get_issue(engine, WEEK) is None


def test_prepare_lets_the_glossary_loaders_error_through_before_building(
    engine, settings, monkeypatch
):
    class Refused(Exception):  # the CLI's loader exits with every glossary error printed
        pass

    def refuse() -> Glossary:
        raise Refused

    monkeypatch.setattr(lifecycle, "build_issue", _no_glossary)  # never reached
    with pytest.raises(Refused):
        prepare(engine, settings, WEEK, now=NOW, glossary=refuse)


def test_only_a_send_that_started_is_resumable(engine):
    assert not resumable(None)
    _plan(engine)
    assert not resumable(get_issue(engine, WEEK))
    build_issue(engine)
    assert not resumable(get_issue(engine, WEEK))
    transition(engine, WEEK, "sending", now=NOW)
    assert resumable(get_issue(engine, WEEK))
    transition(engine, WEEK, "paused", now=NOW)
    assert resumable(get_issue(engine, WEEK))
    transition(engine, WEEK, "failed", "cancelled", now=NOW)
    assert not resumable(get_issue(engine, WEEK))
