"""The scheduler's lead (digest.store.leadership) on real databases: one holder at a time, the
lead lost with the holder's session or process, and taken by the next to ask."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from sqlalchemy import make_url, text

from digest.store import db
from digest.store.leadership import (
    FileLeaderLock,
    PostgresLeaderLock,
    SoleLeader,
    leader_lock,
    replica_name,
    who_leads,
)
from tests.forked_python import ForkedPython
from tests.test_run import wait_until

postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _is_postgres(url: str) -> bool:
    return make_url(db.normalise_url(url)).get_backend_name() == "postgresql"


def test_of_two_locks_on_one_database_exactly_one_leads_until_it_releases(database_url):
    first, second = leader_lock(database_url, 0.3), leader_lock(database_url, 0.3)
    try:
        assert first.acquire() is True
        assert second.acquire() is False
        assert first.held() and not second.held()
        assert first.acquire() is True  # asking again while leading keeps the lead
        assert second.acquire() is False

        first.release()
        assert not first.held()
        assert second.acquire() is True
        assert first.acquire() is False
    finally:
        first.release()
        second.release()


def test_the_lock_fits_the_database(database_url, tmp_path):
    lock = leader_lock(database_url, 0.3)
    if _is_postgres(database_url):
        assert isinstance(lock, PostgresLeaderLock)
    else:
        assert isinstance(lock, FileLeaderLock)
        assert lock.path == tmp_path / "digest.db.leader"
    assert isinstance(leader_lock("sqlite:///:memory:", 0.3), SoleLeader)
    assert isinstance(leader_lock("sqlite://", 0.3), SoleLeader)


_HOLD = """
import sys, time
from digest.store.leadership import leader_lock
lock = leader_lock(sys.argv[1], 0.3)
print("leading" if lock.acquire() else "following", flush=True)
time.sleep(120)
"""


def test_a_leader_killed_with_sigkill_leaves_the_lead_to_the_next_try(database_url, tmp_path):
    output = tmp_path / "holder.log"
    holder = ForkedPython(["-c", _HOLD, database_url], env=dict(os.environ), output=output)
    mine = leader_lock(database_url, 0.3)
    try:
        assert wait_until(lambda: output.read_text().strip(), timeout=20) == "leading"
        assert mine.acquire() is False
        if not _is_postgres(database_url):  # the file names who leads, for operators
            pid = f"pid {holder.pid}"
            assert (tmp_path / "digest.db.leader").read_text().strip().endswith(pid)

        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        assert wait_until(mine.acquire, timeout=5, every=0.3)
    finally:
        holder.kill()
        mine.release()


@postgresql_only
def test_a_leader_whose_session_is_terminated_steps_down_and_the_other_takes_over(
    engine, database_url
):
    leader, follower = PostgresLeaderLock(database_url, 0.3), PostgresLeaderLock(database_url, 0.3)
    try:
        assert leader.acquire() and not follower.acquire()
        # What an operator sees: the session holding the lock, named for its process.
        assert who_leads(engine) == replica_name("leader")
        with engine.connect() as conn:
            names = conn.execute(
                text("SELECT application_name FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": leader.backend_pid},
            ).scalar_one()
            assert names == replica_name("leader")
            assert conn.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": leader.backend_pid}
            ).scalar_one()

        assert wait_until(lambda: not leader.held(), timeout=5)  # the next check notices
        assert wait_until(follower.acquire, timeout=5, every=0.3)
        assert leader.acquire() is False  # a fresh session, and now it waits its turn
        assert follower.held()
    finally:
        leader.release()
        follower.release()
    assert who_leads(engine) is None


@postgresql_only
def test_each_schema_of_one_database_has_a_leader_of_its_own(engine, database_url):
    url = make_url(database_url)
    other = url.query["options"].removeprefix("-csearch_path=") + "_b"
    other_url = url.update_query_dict({"options": f"-csearch_path={other}"})
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{other}"'))
    here, there = (
        leader_lock(database_url, 0.3),
        leader_lock(other_url.render_as_string(hide_password=False), 0.3),
    )
    try:
        assert here.acquire() and there.acquire()
    finally:
        here.release()
        there.release()
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{other}" CASCADE'))


def test_a_file_lock_whose_file_was_removed_no_longer_leads(tmp_path):
    path = tmp_path / "digest.db.leader"
    first, second = FileLeaderLock(path), FileLeaderLock(path)
    try:
        assert first.acquire()
        path.unlink()
        # A second replica now locks a new file of that name: the first must not lead too.
        assert second.acquire()
        assert not first.held()
        assert not first.acquire()
    finally:
        first.release()
        second.release()


@postgresql_only
def test_a_new_leader_whose_job_table_another_process_creates_meanwhile_still_starts(
    database_url: str,
) -> None:
    # Two first schedulers on a new database: both check, both CREATE; the second one waits on
    # the first's catalogue lock and is refused when it commits. It must find the table, not fail.
    from digest.store.jobs import JOBS_TABLE, create_jobs_table, make_jobstore

    engine = db.make_engine(database_url)
    store = make_jobstore(db.make_engine(database_url))
    other = engine.connect()
    creating = other.begin()
    store.jobs_t.create(other)  # created, not yet committed: invisible to the store's check
    failure: list[BaseException] = []

    def start() -> None:
        try:
            create_jobs_table(store)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    time.sleep(0.5)  # it passed the check and waits on the uncommitted CREATE TABLE
    creating.commit()
    thread.join(10)
    other.close()
    assert not thread.is_alive() and failure == []
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {JOBS_TABLE}")).scalar_one() == 0
