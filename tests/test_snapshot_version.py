"""A stored issue's snapshot carries the version of its shape (SNAPSHOT_VERSION). Version 1 is
rendered as always; a snapshot from a newer digest (say, after a downgrade) is refused with what
to do, rather than rendered into something wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update
from typer.testing import CliRunner

from digest.campaign.build import build_issue, build_site, preview_issue, sample_markers
from digest.campaign.preflight import check_issue
from digest.cli import app
from digest.core.checks import check_feed
from digest.core.feed import render_feed
from digest.core.mails import fill_markers
from digest.model.glossary import Glossary
from digest.model.snapshot import SNAPSHOT_VERSION, SnapshotVersionError
from digest.model.weeks import IsoWeek
from digest.store import db
from digest.store.issues import get_issue, list_issues, transition
from digest.store.terms import load_glossary
from tests.test_build import small_terms
from tests.test_render import settings_for

W47, W48 = IsoWeek(2026, 47), IsoWeek(2026, 48)
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
NEWER = (
    "issue 2026-W48 was built by a newer digest (snapshot version 2); "
    "upgrade digest or rebuild it with `digest build --week 2026-W48 --rebuild`"
)


@pytest.fixture
def settings():
    return settings_for()


@pytest.fixture
def glossary(make_terms) -> Glossary:
    return load_glossary(make_terms(small_terms()))


def build(engine: Engine, settings, glossary: Glossary, week: IsoWeek = W48):
    return build_issue(engine, settings, glossary, week, now=NOW, news=[])


def send(engine: Engine, week: IsoWeek) -> None:
    transition(engine, week, "sending", now=NOW)
    transition(engine, week, "sent", now=NOW)


def store_version(engine: Engine, week: IsoWeek, version: Any) -> None:
    """As if another digest had stored `week`'s snapshot with `version`."""
    record = get_issue(engine, week)
    assert record is not None and record.snapshot is not None
    with engine.begin() as conn:
        conn.execute(
            update(db.issues)
            .where(db.issues.c.id == record.id)
            .values(snapshot={**record.snapshot, "version": version})
        )


def test_a_built_issue_stores_snapshot_version_1_and_its_files_are_written_from_it(
    engine, settings, glossary, tmp_path
):
    assert SNAPSHOT_VERSION == 1
    record = build(engine, settings, glossary)
    assert record.snapshot is not None and record.snapshot["version"] == 1
    out = build_site(engine, settings, glossary, W48, tmp_path, now=NOW)  # reuses the stored one
    assert out.record == record
    assert (tmp_path / "email.html").read_text() == fill_markers(
        record.html or "", sample_markers(settings)
    )


def test_an_issue_built_by_a_newer_digest_is_refused_with_what_to_do(
    engine, settings, glossary, tmp_path
):
    build(engine, settings, glossary)
    store_version(engine, W48, 2)
    with pytest.raises(SnapshotVersionError) as caught:
        build_site(engine, settings, glossary, W48, tmp_path / "out", now=NOW)
    assert str(caught.value) == NEWER
    assert not (tmp_path / "out").exists()
    with pytest.raises(SnapshotVersionError, match="newer digest"):
        preview_issue(engine, settings, glossary, W48, now=NOW, news=[])


def test_rebuilding_an_issue_built_by_a_newer_digest_makes_it_readable_again(
    engine, settings, glossary, tmp_path
):
    first = build(engine, settings, glossary)
    store_version(engine, W48, 2)
    out = build_site(engine, settings, glossary, W48, tmp_path, now=NOW, rebuild=True)
    assert out.record.snapshot is not None and out.record.snapshot["version"] == 1
    assert out.record.featured_slug == first.featured_slug
    assert (tmp_path / "email.html").is_file()


def test_a_sent_issue_from_a_newer_digest_stops_the_build_before_anything_is_stored(
    engine, settings, glossary, tmp_path
):
    build(engine, settings, glossary, week=W47)
    send(engine, W47)
    store_version(engine, W47, 2)
    with pytest.raises(SnapshotVersionError) as caught:
        build_site(engine, settings, glossary, W48, tmp_path, now=NOW)
    assert str(caught.value) == (
        "issue 2026-W47 was built by a newer digest (snapshot version 2); "
        "upgrade digest; a sent issue cannot be rebuilt"
    )
    assert get_issue(engine, W48) is None


@pytest.mark.parametrize("version", [0, "1", True, None])
def test_a_snapshot_version_digest_never_wrote_is_refused(
    engine, settings, glossary, tmp_path, version
):
    build(engine, settings, glossary)
    store_version(engine, W48, version)
    with pytest.raises(SnapshotVersionError) as caught:
        build_site(engine, settings, glossary, W48, tmp_path, now=NOW)
    assert str(caught.value) == (
        f"issue 2026-W48 has a snapshot of unknown version {version!r}; "
        "rebuild it with `digest build --week 2026-W48 --rebuild`"
    )


def test_cli_build_says_an_issue_was_built_by_a_newer_digest(
    settings_env, monkeypatch, make_terms, tmp_path: Path
):
    monkeypatch.setenv("DIGEST_TERMS_DIR", str(make_terms(small_terms())))
    runner = CliRunner()
    out = str(tmp_path / "site")
    assert runner.invoke(app, ["build", "--week", "2026-W48", "--out", out]).exit_code == 0
    engine = db.make_engine(settings_env["DIGEST_DATABASE_URL"])
    try:
        store_version(engine, W48, 2)
    finally:
        engine.dispose()
    result = runner.invoke(app, ["build", "--week", "2026-W48", "--out", out])
    assert result.exit_code == 1
    assert NEWER in " ".join(result.output.split())


def test_the_feed_leaves_out_an_issue_it_cannot_read_and_stays_valid(
    engine: Engine, settings, glossary: Glossary
) -> None:
    build(engine, settings, glossary, W47)
    send(engine, W47)
    build(engine, settings, glossary, W48)
    send(engine, W48)
    store_version(engine, W48, SNAPSHOT_VERSION + 1)

    records = list_issues(engine, statuses=["sent"])
    xml = render_feed(settings, records, NOW)

    assert check_feed(xml) == []
    assert "/issues/2026-W47" in xml
    assert "/issues/2026-W48" not in xml


def test_digest_check_refuses_an_issue_it_cannot_read_and_notes_the_feed_gap(
    engine: Engine, settings, glossary: Glossary
) -> None:
    build(engine, settings, glossary, W47)
    send(engine, W47)
    store_version(engine, W47, SNAPSHOT_VERSION + 1)
    build(engine, settings, glossary, W48)

    notes: list[str] = []
    assert check_issue(engine, settings, W48, now=NOW, notes=notes) == []
    assert notes == [
        "the feed leaves out 2026-W47: issue 2026-W47 was built by a newer digest (snapshot "
        "version 2); upgrade digest; a sent issue cannot be rebuilt"
    ]

    store_version(engine, W48, SNAPSHOT_VERSION + 1)
    assert check_issue(engine, settings, W48, now=NOW) == [NEWER]
