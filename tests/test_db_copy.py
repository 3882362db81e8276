"""`digest db copy`: a SQLite deployment moved up to PostgreSQL keeps every row of every table
(and its weekly job), and goes on working there; a target that is not empty, the source itself,
or a copy that fails half way leaves the target without a row.

Real SQLite files, real PostgreSQL schemas (the `database_url` fixture is the target), the CLI.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, Engine, Table, Text, cast, func, insert, inspect, select, text
from sqlalchemy import type_coerce as coerce
from typer.testing import CliRunner

from digest.campaign.editors import add_editor
from digest.cli import app
from digest.config import Settings, get_settings
from digest.model.glossary import Glossary
from digest.scheduler import make_scheduler, start_scheduler
from digest.store import audit, db, engagement
from digest.store.db_copy import CopyRefused, copy_database
from digest.store.editors import create_session
from digest.store.events import handle_events
from digest.store.issues import get_issue, save_built
from digest.store.jobs import JOBS_TABLE, make_jobstore
from digest.store.queue import add_to_queue
from digest.store.smtp_journal import Entry, SmtpJournal
from digest.store.subscribers import (
    add_confirmed,
    count_by_status,
    mark_status,
    pause_until,
    set_tracking_opt_out,
    start_opt_in,
    unsubscribe_subscriber,
)
from tests.sending import HTML, NOW, TEXT, WEEK, build_issue, ledger, seed_subscribers

runner = CliRunner()

only_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

# Large, non-ASCII text, as an issue's archive page is: it must come back byte for byte.
BIG = (
    "<!doctype html><html lang='en'><body>"
    + "<p>Ünïcødé — 注意力 🚀 «guillemets» \u2028 tab\tand 'quotes'</p>\n" * 20_000
    + "</body></html>"
)


@pytest.fixture
def source(
    tmp_path: Path, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    """The deployment being moved: a migrated SQLite file that DIGEST_DATABASE_URL names (the
    `database_url` fixture, which settings_env set there first, is the copy's target)."""
    url = f"sqlite:///{tmp_path / 'live' / 'digest.db'}"
    settings_env["DIGEST_DATABASE_URL"] = url
    monkeypatch.setenv("DIGEST_DATABASE_URL", url)
    get_settings.cache_clear()
    eng = db.make_engine(url)
    db.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def target(database_url: str) -> Iterator[Engine]:
    eng = db.make_engine(database_url)
    yield eng
    eng.dispose()


def _fill(engine: Engine, settings: Settings, glossary: Glossary) -> None:
    """A deployment that has run for a while, written through digest's own functions: readers
    in every status, a sent issue with its ledger, events and engagement, a built one, the
    queue, an editor with a session and the audit log, a send crew, the stored weekly job."""
    now = NOW - timedelta(days=2)
    ids = seed_subscribers(engine, 30)
    zoe, _ = add_confirmed(
        engine, "zoe@exämple.org", name="Zoë Ærøskøbing", timezone="Europe/Copenhagen", now=now
    )
    add_confirmed(engine, "li@example.org", name="李雷 🚀", timezone="Asia/Shanghai", now=now)
    start_opt_in(
        engine, settings, "pending@example.org", name="Ōkami", timezone=None, source="web", now=now
    )
    for address, fate in [
        ("gone@example.org", "unsub"),
        ("bad@example.org", "bounced"),
        ("angry@example.org", "complained"),
    ]:
        sub, _ = add_confirmed(engine, address, name=None, now=now)
        if fate == "unsub":
            unsubscribe_subscriber(engine, sub.id, now=now)
        else:
            mark_status(engine, sub.id, fate, now)  # type: ignore[arg-type]
    pause_until(engine, ids[0], NOW + timedelta(days=30), now=now)
    set_tracking_opt_out(engine, zoe.id, True, now=now)

    build_issue(engine, WEEK)
    sent = runner.invoke(app, ["send", "--week", str(WEEK), "--quiet"])
    assert sent.exit_code == 0, sent.output
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "sent"
    for week, snapshot in [
        (WEEK + 1, {}),  # the next issue, built and waiting
        # Later, as a richer snapshot from another digest version: JSON of every kind.
        (WEEK + 9, {"term": {"title": "Tränsformer", "tags": ["ß", None, 1.5, True]}, "e": {}}),
    ]:
        save_built(
            engine,
            week=week,
            featured_slug=f"transformer-{week.week}",
            related_slugs=["attention", "ünïcode"],
            pick_source="pin",
            subject="Transformers, %%name%% — ünïcode",
            preheader=None,
            html=HTML,
            text=TEXT,
            archive_html=BIG,
            snapshot=snapshot,
            now=NOW,
        )
    handle_events(
        engine,
        [
            {
                "email": "reader1@example.org",
                "event": "bounce",
                "timestamp": 1772442000,
                "sg_event_id": "ev-1",
                "sg_message_id": "m.1",
                "issue_week": str(WEEK),
                "reason": "550 mailbox ünknown",
            },
            {
                "email": "reader2@example.org",
                "event": "delivered",
                "timestamp": 1772442001,
                "sg_event_id": "ev-2",
                "sg_message_id": "m.2",
                "issue_week": str(WEEK),
            },
        ],
        NOW,
    )
    for index, (kind, machine, who) in enumerate(
        [("open", False, ids[1]), ("click", True, None), ("click", False, ids[2])]
    ):
        engagement.record(
            engine,
            issue_id=issue.id,
            kind=kind,
            link_index=index - 1,  # type: ignore[arg-type]
            reader_key=f"key-{index}",
            machine=machine,
            subscriber_id=who,
            now=NOW,
        )
    slugs = sorted(glossary.slugs)[:2]
    add_to_queue(engine, glossary, slugs[0], note="für später — ✓", now=NOW)
    add_to_queue(engine, glossary, slugs[1], week=WEEK + 5, force=True, now=NOW)
    editor = add_editor(
        engine,
        "ed@example.org",
        password="correct horse battery staple",
        name="Édith",
        role="admin",
        actor="cli:tester",
        now=NOW,
    )
    create_session(engine, editor.id, now=NOW, max_age=3600)
    # An SMTP relay's answers for a batch, as the SMTP transport journals them.
    SmtpJournal(engine).write(
        f"{WEEK}-1772442000-000001",
        {"reader3@example.org": Entry("accepted", "250 2.0.0 Ok: queued as ✓"),
         "reader4@example.org": Entry("sending", None)},
        NOW,
    )  # fmt: skip
    audit.record(
        engine,
        actor="ed@example.org",
        action="issue.approve",
        target=str(WEEK),
        detail="naïve — ✓",
        now=NOW,
    )
    with engine.begin() as conn:  # nothing writes the crew yet (shared sends come later)
        crew = {"issue_id": issue.id, "joined_at": NOW, "until": NOW}
        owner = {"host": "häst", "pid": 7}
        conn.execute(
            insert(db.send_crew),
            crew | {"token": "a" * 32, "owner": owner, "zones": ["Europe/Berlin", None]},
        )
        conn.execute(insert(db.send_crew), crew | {"token": "b" * 32})  # owner, zones: SQL NULL
        conn.execute(insert(db.send_crew), crew | {"token": "c" * 32, "zones": None})  # JSON null
        # A Dutch rendition, as a build makes one when a reader chose Dutch.
        rendition = {"subject": "Wat is het — ✓", "preheader": "één", "html": "<p>nl</p>"}
        conn.execute(
            insert(db.issue_renditions),
            rendition | {"issue_id": issue.id, "locale": "nl", "text": "nl", "archive_html": None},
        )
    scheduler = make_scheduler(settings)
    start_scheduler(scheduler, settings)
    scheduler.shutdown()


def _tables(engine: Engine) -> list[Table]:
    tables = list(db.metadata.sorted_tables)
    if inspect(engine).has_table(JOBS_TABLE):
        tables.append(make_jobstore(engine).jobs_t)
    return tables


def _rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows as SQLAlchemy reads them, sorted (text keys sort differently per
    backend), and every JSON column once more as its stored text: SQL NULL is not JSON null."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in _tables(engine):
            found[table.name] = sorted(map(tuple, conn.execute(select(table))), key=repr)
            for column in table.columns:
                if isinstance(column.type, JSON):
                    stored = (
                        cast(column, Text)
                        if engine.dialect.name == "postgresql"
                        else coerce(column, Text)
                    )
                    raw = conn.execute(select(*table.primary_key.columns, stored)).all()
                    found[f"{table.name}.{column.name}"] = sorted(map(tuple, raw), key=repr)
    return found


def _copy(*args: str) -> Any:
    return runner.invoke(app, ["db", "copy", *args])


def _row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in _tables(engine)
        }


@only_postgresql
def test_a_sqlite_deployment_copied_to_postgresql_keeps_every_row_and_goes_on_working(
    source: Engine,
    target: Engine,
    database_url: str,
    settings_env: dict[str, str],
    starter_glossary: Glossary,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fill(source, get_settings(), starter_glossary)
    before = _rows(source)
    assert all(before[t.name] for t in _tables(source)), "every table holds rows"
    source.dispose()

    result = _copy("--to", database_url, "--yes")

    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "copying sqlite:///" in out and "→ postgresql+psycopg://postgres@127.0.0.1" in out
    for table in _tables(source):
        assert f" {table.name} " in f" {out} "
    assert "set DIGEST_DATABASE_URL=postgresql+psycopg://" in out
    assert _rows(target) == before
    assert _rows(source) == before  # the source is only read

    with target.connect() as conn:  # every id sequence hands out ids past the copied ones
        for table in db.metadata.sorted_tables:
            column = table.autoincrement_column
            if column is None:
                continue
            sequence = conn.execute(
                select(func.pg_get_serial_sequence(table.name, column.name))
            ).scalar_one()
            last, called = conn.execute(text(f"SELECT last_value, is_called FROM {sequence}")).one()
            highest = conn.execute(select(func.max(column))).scalar_one()
            assert (last + 1 if called else last) == highest + 1, table.name
    newcomer, _ = add_confirmed(target, "new@example.org", name="Nøw", now=db.utcnow())
    assert newcomer.id == max(row[0] for row in before["subscribers"]) + 1

    # The deployment switched over: status reads the carried schedule, the next issue goes out.
    monkeypatch.setenv("DIGEST_DATABASE_URL", database_url)
    settings_env["DIGEST_DATABASE_URL"] = database_url
    get_settings.cache_clear()
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    assert "next run" in status.output and "(computed" not in status.output
    readers = count_by_status(target)["active"]  # the newcomer too, not the bounced reader1
    sent = runner.invoke(app, ["send", "--week", str(WEEK + 1), "--quiet"])
    assert sent.exit_code == 0, sent.output
    assert ledger(target, WEEK + 1) == {"sent": readers}


@only_postgresql
def test_a_round_trip_sqlite_postgresql_sqlite_gives_identical_rows(
    source: Engine, target: Engine, tmp_path: Path, starter_glossary: Glossary
) -> None:
    _fill(source, get_settings(), starter_glossary)
    before = _rows(source)
    back = db.make_engine(f"sqlite:///{tmp_path / 'back' / 'digest.db'}")
    seen: list[tuple[str, int, int]] = []

    there = copy_database(source, target, chunk=7, progress=lambda *a: seen.append(a))
    home = copy_database(target, back, chunk=5)

    assert _rows(back) == before
    assert [t.rows for t in home.tables] == [t.rows for t in there.tables]
    assert [t.target_sum for t in home.tables] == [t.source_sum for t in there.tables]
    assert seen[-1][1:] == (2 * there.rows, 2 * there.rows)  # written, then read back
    assert [done for _note, done, _total in seen] == sorted(done for _n, done, _t in seen)
    back.dispose()


def test_a_target_holding_rows_is_refused_and_nothing_is_written(
    source: Engine, target: Engine, database_url: str
) -> None:
    seed_subscribers(source, 5)
    db.upgrade(target)
    add_confirmed(target, "already@example.org", name=None, now=NOW)
    with target.begin() as conn:
        conn.execute(insert(db.audit_log).values(at=NOW, actor="x", action="y"))

    result = _copy("--to", database_url, "--yes")

    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "error: nothing copied: the target database is not empty (audit_log: 1 row, "
        "subscribers: 1 row); copy only into an empty database"
    )
    counts = _row_counts(target)
    assert counts.pop("subscribers") == 1 and counts.pop("audit_log") == 1
    assert set(counts.values()) == {0}


def test_a_copy_failing_in_a_late_table_leaves_the_target_without_a_row(
    source: Engine, target: Engine, database_url: str, starter_glossary: Glossary
) -> None:
    _fill(source, get_settings(), starter_glossary)
    db.upgrade(target)
    last = db.metadata.sorted_tables[-1].name  # everything before it is written by then
    with target.begin() as conn:
        if target.dialect.name == "postgresql":
            conn.execute(text(f"ALTER TABLE {last} ADD CONSTRAINT refused CHECK (false)"))
        else:
            conn.execute(
                text(
                    f"CREATE TRIGGER refused BEFORE INSERT ON {last} "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )

    result = _copy("--to", database_url, "--yes")

    assert result.exit_code == 1
    line = " ".join(result.output.split())
    assert "error: the copy failed and was rolled back, the target holds no row:" in line
    assert "refused" in line
    counts = _row_counts(target)
    assert counts and set(counts.values()) == {0}, counts


def test_copying_a_database_onto_itself_is_refused(source: Engine, tmp_path: Path) -> None:
    seed_subscribers(source, 3)
    same = f"sqlite:///{tmp_path / 'live' / '..' / 'live' / 'digest.db'}"  # another spelling

    result = _copy("--to", same, "--yes")

    assert result.exit_code == 1
    assert "nothing copied: the target is the source database itself" in " ".join(
        result.output.split()
    )
    assert _row_counts(source)["subscribers"] == 3


@only_postgresql
def test_a_postgresql_schema_is_the_same_database_under_another_url(
    target: Engine, database_url: str
) -> None:
    db.upgrade(target)
    with pytest.raises(CopyRefused, match="the target is the source database itself"):
        copy_database(target, db.make_engine(f"{database_url}&application_name=other"))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_unreachable_target_or_an_unmigrated_source_is_refused_in_one_line(
    source: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings_env: dict[str, str]
) -> None:
    unreachable = _copy("--to", "postgresql://digest:s3cret@127.0.0.1:1/digest", "--yes")
    assert unreachable.exit_code == 1
    assert (
        unreachable.output.strip()
        .splitlines()[-1]
        .startswith(
            "error: nothing copied: cannot reach the target database "
            "postgresql+psycopg://digest:***@127.0.0.1:1/digest: "
        )
    )
    assert "s3cret" not in unreachable.output

    bare = tmp_path / "bare.db"
    db.make_engine(f"sqlite:///{bare}").connect().close()  # a file, but no schema in it
    monkeypatch.setenv("DIGEST_DATABASE_URL", f"sqlite:///{bare}")
    get_settings.cache_clear()
    unmigrated = _copy("--to", f"sqlite:///{tmp_path / 'new.db'}", "--yes")
    assert unmigrated.exit_code == 1
    assert "holds no digest schema" in unmigrated.output
    assert not inspect(db.make_engine(f"sqlite:///{tmp_path / 'new.db'}")).get_table_names()


def _resident() -> int:
    """This process's resident memory in bytes (Linux)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@only_postgresql
def test_100k_subscribers_copy_in_flat_memory(source: Engine, target: Engine) -> None:
    seed_subscribers(source, 100_000)
    gc.collect()
    baseline = peak = _resident()
    copying = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not copying.wait(0.02):
            peak = max(peak, _resident())

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        report = copy_database(source, target)
    finally:
        took = time.monotonic() - started
        copying.set()
        watcher.join()

    assert report.rows == 100_000 and all(t.verified for t in report.tables)
    # Read all at once, 100k rows are ~100 MB as Python objects; in chunks, a few MB.
    grown = peak - baseline
    assert grown < 40 * 1024 * 1024, f"resident memory grew by {grown / 1e6:.1f} MB"
    assert took < 120, f"{took:.0f} s"
    print(f"100k subscribers copied in {took:.1f} s, resident memory +{grown / 1e6:.1f} MB")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_without_yes_the_copy_asks_and_a_no_writes_nothing(
    source: Engine, database_url: str, target: Engine
) -> None:
    seed_subscribers(source, 2)

    result = runner.invoke(app, ["db", "copy", "--to", database_url], input="n\n")

    assert result.exit_code == 1
    assert "copy now? [y/N]" in result.output and "Aborted" in result.output
    assert not inspect(target).get_table_names()
