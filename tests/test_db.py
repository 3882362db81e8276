"""The schema: migrations create exactly what digest/store/db.py describes, on every backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from digest.store import db


def test_migrations_match_the_table_definitions(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_object": lambda o, n, t, r, c: n != "apscheduler_jobs"}
        )
        assert compare_metadata(context, db.metadata) == []


def test_upgrade_is_idempotent(engine):
    db.upgrade(engine)
    assert db.current_revision(engine) is not None
    assert {"subscribers", "issues", "queue", "deliveries", "events"} <= set(
        inspect(engine).get_table_names()
    )


def test_sqlite_url_creates_its_folder(tmp_path):
    eng = db.make_engine(f"sqlite:///{tmp_path / 'a' / 'b' / 'digest.db'}")
    assert db.ping(eng)
    assert (tmp_path / "a" / "b").is_dir()


def test_postgres_urls_use_psycopg3():
    assert db.normalise_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalise_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert db.normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_head_revision_is_the_newest_migration():
    # `upgrade` skips Alembic when the database holds HEAD_REVISION: a new migration that
    # does not move it would never run on an existing database.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_heads() == [db.HEAD_REVISION]


def test_upgrade_from_an_older_revision_still_runs_alembic(engine):
    from alembic import command

    cfg = db._alembic_config(engine)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "0004")
    assert db.stored_revisions(engine) == ["0004"]
    db.upgrade(engine)
    assert db.stored_revisions(engine) == [db.HEAD_REVISION]
    assert db.current_revision(engine) == db.HEAD_REVISION


def test_stored_revisions_of_a_new_database_is_empty(tmp_path):
    eng = db.make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    assert db.stored_revisions(eng) == []
    db.upgrade(eng)
    assert db.stored_revisions(eng) == [db.HEAD_REVISION]
