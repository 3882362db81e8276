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
