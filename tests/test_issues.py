"""The issue state machine: which moves are allowed, that a move is atomic between processes,
that content freezes once sending starts, and that only one process holds a send at a time.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, insert, text, update

from digest.model.issue import TRANSITIONS
from digest.model.weeks import IsoWeek
from digest.store.db import issues, utcnow
from digest.store.issues import (
    InvalidTransition,
    claim_send,
    featured_history,
    get_issue,
    release_send,
    save_built,
    transition,
)
from tests.sending import wait_for

STATES = ("planned", "built", "sending", "sent", "paused", "failed")

# The life cycle as the spec states it: (from, to).
ALLOWED = {
    ("failed", "planned"),  # a failed issue can be planned again
    ("planned", "built"),
    ("built", "built"),  # rebuilt until sending starts
    ("failed", "built"),
    ("built", "sending"),
    ("paused", "sending"),  # resume
    ("failed", "sending"),  # resume after a provider refused, once fixed
    ("sending", "sending"),  # a second run picking up an interrupted send
    ("sending", "sent"),
    ("sending", "paused"),
    ("planned", "failed"),
    ("built", "failed"),
    ("sending", "failed"),
    ("paused", "failed"),
    ("built", "held"),  # not approved by its send time, or an editor held it
    ("held", "held"),
    ("held", "built"),  # approved (or rebuilt): it may go again
    ("held", "failed"),  # cancelled
}
WEEK = IsoWeek(2026, 17)


def _issue_in(engine, week: IsoWeek, status: str) -> None:
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(issues).values(
                week=str(week),
                featured_slug="retrieval-augmented-generation",
                related_slugs=[],
                pick_source="rotation",
                status=status,
                created_at=now,
                updated_at=now,
            )
        )


def _build(engine, week: IsoWeek = WEEK, *, subject: str = "RAG", slug: str = "rag"):
    return save_built(
        engine,
        week=week,
        featured_slug=slug,
        related_slugs=["embedding"],
        pick_source="rotation",
        subject=subject,
        preheader="pre",
        html="<p>html</p>",
        text="text",
        archive_html="<p>page</p>",
        snapshot={"term": {"slug": slug}},
        now=utcnow(),
    )


def test_the_transition_table_is_the_documented_life_cycle():
    table = {(src, dst) for dst, sources in TRANSITIONS.items() for src in sources}
    assert table == ALLOWED
    # sent is final: nothing leaves it.
    assert not any(src == "sent" for src, _ in table)


def test_every_allowed_move_succeeds_and_records_its_reason(engine):
    weeks = iter(IsoWeek(2026, 1) + n for n in range(len(ALLOWED)))
    for src, dst in sorted(ALLOWED):
        week = next(weeks)
        _issue_in(engine, week, src)
        moved = transition(engine, week, dst, reason=f"{src} to {dst}", now=utcnow())  # type: ignore[arg-type]
        assert (moved.status, moved.status_reason) == (dst, f"{src} to {dst}")
        assert get_issue(engine, week).status == dst


def test_every_other_move_is_refused_and_changes_nothing(engine):
    refused = [p for p in itertools.product(STATES, STATES) if p not in ALLOWED]
    assert ("built", "sent") in refused and ("sent", "failed") in refused  # the telling ones
    weeks = iter(IsoWeek(2026, 1) + n for n in range(len(refused)))
    for src, dst in refused:
        week = next(weeks)
        _issue_in(engine, week, src)
        with pytest.raises(InvalidTransition, match=f"issue {week} cannot go from {src} to {dst}"):
            transition(engine, week, dst, now=utcnow())  # type: ignore[arg-type]
        after = get_issue(engine, week)
        assert (after.status, after.status_reason) == (src, None)


def test_moving_a_missing_issue_says_there_is_none(engine):
    with pytest.raises(InvalidTransition, match="there is no issue for 2026-W17"):
        transition(engine, WEEK, "sending", now=utcnow())


def test_the_send_start_is_set_once_and_sent_at_when_sent(engine):
    _build(engine)
    first = transition(engine, WEEK, "sending", now=utcnow())
    assert first.send_started_at is not None and first.sent_at is None
    transition(engine, WEEK, "paused", reason="rate limited", now=utcnow())
    again = transition(engine, WEEK, "sending", now=utcnow())
    # The start is the subscriber cut-off: a resume must not move it.
    assert again.send_started_at == first.send_started_at
    done = transition(engine, WEEK, "sent", now=utcnow())
    assert done.sent_at is not None and done.status_reason is None


# --------------------------------------------------------------------------- atomic moves


def _blocked_behind_first(engine: Engine, second_pid: int | None) -> Callable[[], bool]:
    """Whether the database itself holds the second move back behind the first's open transaction.

    PostgreSQL says so: its backend waits on a lock. SQLite cannot say which connection waits,
    only that the write lock is taken, so no writer can get through until the first ends.
    """
    if engine.dialect.name == "postgresql":

        def waiting() -> bool:
            with engine.connect() as conn:
                query = text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid")
                return conn.execute(query, {"pid": second_pid}).scalar() == "Lock"

        return waiting

    def write_locked() -> bool:
        probe = sqlite3.connect(str(engine.url.database), timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return False
        except sqlite3.OperationalError as exc:
            return "locked" in str(exc)
        finally:
            probe.close()

    return write_locked


def _race(engine, winner_commits: bool) -> tuple[str, BaseException | None]:
    """Connection A moves sending → sent inside an open transaction while B tries → paused."""
    _build(engine)
    transition(engine, WEEK, "sending", now=utcnow())
    outcome: dict[str, Any] = {"error": None, "done_while_first_open": None}
    second_pid: list[int | None] = []  # B's PostgreSQL backend, read in B's own thread
    reached = threading.Event()  # B's UPDATE is on its way to the database
    first_ended = threading.Event()  # set just before A commits or rolls back

    def second() -> None:
        try:
            transition(engine, WEEK, "paused", reason="second process", now=utcnow())
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            outcome["done_while_first_open"] = not first_ended.is_set()

    def on_execute(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread() is thread and statement.lstrip().startswith("UPDATE"):
            dbapi = conn.connection.dbapi_connection
            info = getattr(dbapi, "info", None)  # psycopg's; sqlite3 has none
            second_pid.append(getattr(info, "backend_pid", None))
            reached.set()

    thread = threading.Thread(target=second)
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        with engine.connect() as first:
            tx = first.begin()
            transition(first, WEEK, "sent", now=utcnow())
            thread.start()
            assert reached.wait(30), "the second move never reached the database"
            # Not a pause: the database is asked whether B is held back, until it says so.
            wait_for(
                _blocked_behind_first(engine, second_pid[0]),
                what="the database to hold the second move behind the first transaction",
            )
            assert thread.is_alive(), "the second move did not wait for the first transaction"
            first_ended.set()
            if winner_commits:
                tx.commit()
            else:
                tx.rollback()
        thread.join(30)
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    assert not thread.is_alive()
    # Whenever B finished, it was not while A's transaction was open.
    assert outcome["done_while_first_open"] is False, (
        "the second move did not wait for the first transaction"
    )
    return get_issue(engine, WEEK).status, outcome["error"]


def test_two_connections_moving_one_issue_cannot_both_win(engine):
    status, error = _race(engine, winner_commits=True)
    assert status == "sent"
    assert isinstance(error, InvalidTransition)
    assert "cannot go from sent to paused" in str(error)


def test_a_rolled_back_move_leaves_the_way_open_for_the_other(engine):
    status, error = _race(engine, winner_commits=False)
    assert (status, error) == ("paused", None)


# --------------------------------------------------------------------------- frozen content


def test_rebuilding_is_allowed_until_sending_starts(engine):
    _build(engine, subject="first")
    assert _build(engine, subject="second").subject == "second"
    transition(engine, WEEK, "failed", reason="bad render", now=utcnow())
    rebuilt = _build(engine, subject="third")
    assert (rebuilt.status, rebuilt.subject, rebuilt.status_reason) == ("built", "third", None)


@pytest.mark.parametrize("state", ["sending", "paused", "sent"])
def test_content_is_frozen_once_sending_started(engine, state):
    _build(engine, subject="what went out")
    transition(engine, WEEK, "sending", now=utcnow())
    if state != "sending":
        transition(engine, WEEK, state, now=utcnow())  # type: ignore[arg-type]
    with pytest.raises(InvalidTransition, match=f"issue {WEEK} is {state}; its content is frozen"):
        _build(engine, subject="something else", slug="other")
    stored = get_issue(engine, WEEK)
    assert (stored.subject, stored.featured_slug, stored.status) == ("what went out", "rag", state)


def test_featured_history_counts_only_issues_that_were_built_or_sent(engine):
    for offset, state in enumerate(STATES):
        _issue_in(engine, WEEK + offset, state)
    with engine.begin() as conn:
        for offset, state in enumerate(STATES):
            conn.execute(
                update(issues)
                .where(issues.c.week == str(WEEK + offset))
                .values(featured_slug=f"term-{state}")
            )
    assert [slug for _, slug in featured_history(engine)] == [
        "term-built",
        "term-sending",
        "term-sent",
        "term-paused",
    ]


# --------------------------------------------------------------------------- the send lease


def test_only_one_owner_holds_the_send_until_it_releases_or_its_lease_lapses(engine):
    _build(engine)
    now = utcnow()
    lease = timedelta(minutes=5)
    assert claim_send(engine, WEEK, "a", lease, now=now)
    assert not claim_send(engine, WEEK, "b", lease, now=now + timedelta(minutes=1))
    assert claim_send(engine, WEEK, "a", lease, now=now + timedelta(minutes=4))  # renewal
    assert not claim_send(engine, WEEK, "b", lease, now=now + timedelta(minutes=8))
    # a died without releasing: once its renewed lease lapses, b takes over.
    assert claim_send(engine, WEEK, "b", lease, now=now + timedelta(minutes=9, seconds=1))
    release_send(engine, WEEK, "a")  # a stale owner cannot release b's claim
    assert get_issue(engine, WEEK).claimed_by == "b"
    release_send(engine, WEEK, "b")
    stored = get_issue(engine, WEEK)
    assert (stored.claimed_by, stored.claimed_until) == (None, None)
    assert claim_send(engine, WEEK, "c", lease, now=utcnow())


def test_racing_claims_have_exactly_one_winner(engine):
    rounds, contenders = 10, 4
    for n in range(rounds):
        _build(engine, WEEK + n)
    for n in range(rounds):
        barrier = threading.Barrier(contenders)
        wins: list[str] = []

        def contend(owner: str, week: IsoWeek = WEEK + n, barrier=barrier, wins=wins) -> None:
            barrier.wait()
            if claim_send(engine, week, owner, timedelta(minutes=5), now=utcnow()):
                wins.append(owner)

        threads = [threading.Thread(target=contend, args=(f"p{i}",)) for i in range(contenders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(wins) == 1, f"round {n}: {wins}"
        assert get_issue(engine, WEEK + n).claimed_by == wins[0]
