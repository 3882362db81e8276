"""Where the weekly job is stored: APScheduler's SQLAlchemy job store on digest's own database,
and the one read of it that needs no running scheduler (the stored next run time).

One place, so `digest status` reads exactly the table the scheduler writes.
"""

from __future__ import annotations

from datetime import datetime

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import IntegrityError, ProgrammingError

__all__ = ["JOBS_TABLE", "create_jobs_table", "make_jobstore", "next_run_in", "stored_next_run"]

JOBS_TABLE = "apscheduler_jobs"  # digest/store/migrations/env.py leaves this table to APScheduler


def make_jobstore(engine: Engine) -> SQLAlchemyJobStore:
    """The store the weekly job lives in: APScheduler's own table in digest's database.

    Nothing is created until a scheduler starts the store; shutting the store down disposes
    `engine`.
    """
    return SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE)


def stored_next_run(engine: Engine) -> datetime | None:
    """The weekly job's next run time as the scheduler stored it, if a scheduler ever ran.

    Asked of APScheduler's job store, which is not started: starting it would create the table,
    and this only reads. `get_next_run_time` reads just the run-time column, where `lookup_job`
    would unpickle the whole job (trigger, and the function by name) and fail on one stored by
    another APScheduler or digest version. It answers for the earliest job in the table, which
    holds only the weekly job (a `--now` run lives in the scheduler's memory store).
    """
    if not inspect(engine).has_table(JOBS_TABLE):
        return None
    return next_run_in(make_jobstore(engine))


def next_run_in(store: SQLAlchemyJobStore) -> datetime | None:
    """The earliest stored run time in `store`, read without unpickling any job."""
    return store.get_next_run_time()  # type: ignore[no-any-return]


def create_jobs_table(store: SQLAlchemyJobStore) -> None:
    """Create the store's table if it is missing, tolerating another process that creates it
    at the same moment (replicas starting their first scheduler together on a new database).

    APScheduler's own start creates it with a check first, which two sessions can both pass;
    PostgreSQL then refuses the second CREATE TABLE (DuplicateTable, or a unique violation in
    its catalogue). Here that loser looks again and finds the table; APScheduler's check then
    passes quietly.
    """
    try:
        store.jobs_t.create(store.engine, checkfirst=True)
    except (ProgrammingError, IntegrityError):
        if not inspect(store.engine).has_table(JOBS_TABLE):
            raise
