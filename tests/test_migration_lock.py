"""Replicas starting together on a fresh PostgreSQL schema migrate it once: `db.upgrade` takes an
advisory lock, the others wait for it and then find the schema at head."""

from __future__ import annotations

import os
import threading

import pytest
from sqlalchemy import text

from digest.store import db
from tests.forked_python import ForkedPython
from tests.test_run import wait_until

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

_MIGRATION_KEYS = "CAST(:space AS integer), hashtext(coalesce(current_schema(), ''))"
_SPACE = int.from_bytes(b"digm")  # db.upgrade's lock


def test_replicas_upgrading_a_fresh_schema_at_once_all_succeed_on_one_head(
    settings_env, database_url, tmp_path
):
    engine = db.make_engine(database_url)
    outputs = [tmp_path / f"upgrade-{n}.log" for n in range(4)]
    try:
        # Hold the migration lock ourselves, so that all four are inside upgrade() and waiting
        # for it at once: then they race for real the moment it is free.
        with engine.connect() as holder:
            holder.execute(
                text(f"SELECT pg_advisory_xact_lock({_MIGRATION_KEYS})"), {"space": _SPACE}
            )
            procs = [
                ForkedPython(["-m", "digest.cli", "db", "upgrade"], env=dict(os.environ), output=o)
                for o in outputs
            ]
            waiting = text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND classid = CAST(:space AS oid)"
                " AND objid = CAST(hashtext(coalesce(current_schema(), '')) AS oid)"
            )
            with engine.connect() as probe:
                assert wait_until(
                    lambda: probe.execute(waiting, {"space": _SPACE}).scalar_one() == 4,
                    timeout=20,
                ), [o.read_text() for o in outputs]
            holder.rollback()  # the lock is freed with the transaction

        codes = [proc.wait(60) for proc in procs]
        logs = [o.read_text() for o in outputs]
        assert codes == [0, 0, 0, 0], logs
        for log in logs:
            assert f"database at revision {db.HEAD_REVISION}" in log
            assert "Traceback" not in log and "error" not in log.lower(), log
        assert db.stored_revisions(engine) == [db.HEAD_REVISION]
        with engine.connect() as conn:
            tables = conn.execute(
                text(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
                )
            ).scalar_one()
        assert tables == len(db.metadata.tables) + 1  # and alembic_version; nothing twice
    finally:
        engine.dispose()


def test_an_upgrade_of_a_schema_at_head_does_not_wait_for_the_lock(engine):
    # Every command upgrades on start: one that finds the schema at head answers from its one
    # SELECT, and does not queue behind a replica that holds the lock.
    with engine.connect() as holder:
        holder.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_KEYS})"), {"space": _SPACE})
        upgrading = threading.Thread(target=db.upgrade, args=(engine,))
        upgrading.start()
        upgrading.join(10)
        done = not upgrading.is_alive()
        holder.rollback()
    upgrading.join(10)
    assert done
