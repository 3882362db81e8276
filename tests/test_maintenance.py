"""What an operator does by hand (docs/operations.md): back up and restore the database, and
rotate DIGEST_SECRET_KEY without breaking the unsubscribe links in mail already sent.

Real databases on both backends, the real CLI, the real web app.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, func, select
from typer.testing import CliRunner

from digest.cli import app
from digest.config import Settings
from digest.core.reader_links import unsubscribe_url
from digest.store import db
from digest.store.backup import BackupError, backup_database
from digest.store.db import subscribers
from digest.store.subscribers import add_confirmed, get_subscriber
from digest.web import create_app
from tests.forked_python import run_forked
from tests.sending import NOW, REPO, build_issue, seed_subscribers

runner = CliRunner()


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(subscribers)).scalar_one())


def _sqlite_only(engine: Engine) -> Path:
    if engine.dialect.name != "sqlite":
        pytest.skip("digest's own backup is for SQLite; PostgreSQL has pg_dump (tested below)")
    assert engine.url.database is not None
    return Path(engine.url.database)


# --------------------------------------------------------------------------- backup and restore


def test_a_backup_taken_during_a_write_holds_only_committed_data(
    engine: Engine, tmp_path: Path
) -> None:
    live = _sqlite_only(engine)
    seed_subscribers(engine, 50)
    build_issue(engine)
    writer = sqlite3.connect(live, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a send or a subscribe mid-transaction
    writer.execute(
        "INSERT INTO subscribers (email, status, source, created_at, updated_at) "
        "VALUES ('late@example.org', 'pending', 'web', '2026-03-01', '2026-03-01')"
    )

    size = backup_database(engine, tmp_path / "backups" / "digest.db")
    writer.execute("COMMIT")
    writer.close()

    copy = tmp_path / "backups" / "digest.db"
    assert size == copy.stat().st_size
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600  # every subscriber's address is in it
    assert [p.name for p in copy.parent.iterdir()] == ["digest.db"]  # no -wal, no temp file
    restored = db.make_engine(f"sqlite:///{copy}")
    db.upgrade(restored)
    assert _count(restored) == 50 and _count(engine) == 51
    restored.dispose()


def test_a_backup_never_replaces_a_file_unless_asked(engine: Engine, tmp_path: Path) -> None:
    live = _sqlite_only(engine)
    target = tmp_path / "digest-backup.db"
    target.write_text("an older backup")

    with pytest.raises(BackupError, match="exists; remove it or choose another path"):
        backup_database(engine, target)
    with pytest.raises(BackupError, match="is the database itself"):
        backup_database(engine, live, overwrite=True)
    assert target.read_text() == "an older backup"

    backup_database(engine, target, overwrite=True)
    assert target.read_bytes().startswith(b"SQLite format 3\x00")


def _digest(settings_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`digest ARGS` in its own process, as an operator runs it (forked warm)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env |= settings_env | {"PYTHONPATH": str(REPO)}
    return run_forked(["-m", "digest.cli", *args], cwd=REPO, env=env, timeout=60)


def test_cli_backup_and_restore_by_copying_the_file_back(
    engine: Engine, settings_env: dict[str, str], tmp_path: Path
) -> None:
    live = _sqlite_only(engine)
    seed_subscribers(engine, 12)
    backup = tmp_path / "backups" / "digest-2026-03-02.db"

    made = _digest(settings_env, "db", "backup", str(backup))

    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"backed up the database to {backup} (")
    # Disaster: the list is wiped. Restore as docs/operations.md says: stop digest (no process
    # may hold the file open), put the copy in place, drop the old -wal and -shm, start again.
    with engine.begin() as conn:
        conn.execute(delete(subscribers))
    engine.dispose()
    for leftover in (Path(f"{live}-wal"), Path(f"{live}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(backup, live)

    counted = _digest(settings_env, "subscribers", "count")

    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.splitlines()[-1].split() == ["total", "12"]


def test_postgresql_backups_are_pointed_to_pg_dump(
    engine: Engine, settings_env: dict[str, str], tmp_path: Path
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")

    result = runner.invoke(app, ["db", "backup", str(tmp_path / "digest.db")])

    assert result.exit_code == 1
    assert "for PostgreSQL use pg_dump" in result.output
    assert not (tmp_path / "digest.db").exists()


# --------------------------------------------------------------------------- key rotation


def test_an_unsubscribe_link_signed_before_the_key_was_rotated_still_works(
    engine: Engine, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = Settings()
    ann, _ = add_confirmed(engine, "ann@example.org", now=NOW - timedelta(days=30))
    old_link = unsubscribe_url(before, ann.id, ann.email)  # in last month's mail
    monkeypatch.setenv("DIGEST_SECRET_KEY", "the-new-key-after-rotation-2026")
    monkeypatch.setenv("DIGEST_OLD_SECRET_KEYS", json.dumps([settings_env["DIGEST_SECRET_KEY"]]))
    after = Settings()
    assert after.signing_key() != before.signing_key()

    with TestClient(create_app(after)) as client:
        page = client.post(old_link.removeprefix(after.base_url))

    assert page.status_code == 200 and "You are unsubscribed" in page.text
    gone = get_subscriber(engine, ann.id)
    assert gone is not None and gone.status == "unsubscribed"


def test_once_the_old_key_is_dropped_its_links_stop_working(
    engine: Engine, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = Settings()
    bob, _ = add_confirmed(engine, "bob@example.org", now=NOW - timedelta(days=30))
    old_link = unsubscribe_url(before, bob.id, bob.email)
    monkeypatch.setenv("DIGEST_SECRET_KEY", "the-new-key-after-rotation-2026")
    after = Settings()  # DIGEST_OLD_SECRET_KEYS left out

    with TestClient(create_app(after)) as client:
        page = client.post(old_link.removeprefix(after.base_url))
        fresh = client.post(unsubscribe_url(after, bob.id, bob.email).removeprefix(after.base_url))

    assert page.status_code == 400 and "This link is not valid." in page.text
    assert "You are unsubscribed" in fresh.text  # links in new mail use the new key
    gone = get_subscriber(engine, bob.id)
    assert gone is not None and gone.status == "unsubscribed"
