"""Which `digest run` replica leads the scheduler: a lock that one process at a time holds, on
PostgreSQL a session advisory lock, on a SQLite file an OS file lock beside it.

The lock is the whole coordination: there is no heartbeat table to age out. A leader that dies,
or whose database session dies, has lost the lock with it; the next follower to ask gets it.
A leader learns it has lost the lock only by asking (`LeaderLock.held`, a `SELECT 1` on the
lock's own session), so the caller asks every retry interval and stops leading on a False.

On PostgreSQL the lock lives on a connection of its own, outside any pool: a pooled connection
returned, recycled or pre-pinged away would drop the lock behind the leader's back. Its
`application_name` says who it is (`digest-leader <host> pid <pid>` while leading,
`digest-replica …` while waiting), so `pg_stat_activity` shows the leader, as `who_leads` does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from digest.store.db import normalise_url

__all__ = [
    "SCHEDULER_LOCK_SPACE",
    "FileLeaderLock",
    "LeaderLock",
    "PostgresLeaderLock",
    "SoleLeader",
    "leader_lock",
    "replica_name",
    "who_leads",
]

# The advisory lock's first key (pg_locks.classid): "digs", digest's scheduler. The second
# (objid) is a hash of the schema, so two digests in one database (schemas side by side, as the
# tests run) each have their own leader; the same pair is what `who_leads` looks for.
SCHEDULER_LOCK_SPACE = int.from_bytes(b"digs")
_LOCK_KEYS = "CAST(:space AS integer), hashtext(coalesce(current_schema(), ''))"


class LeaderLock(Protocol):
    """One process at a time holds it. Not thread-safe: one thread (the service's) asks."""

    def acquire(self) -> bool:
        """Try once, without waiting: True when this process leads now (or led already)."""
        ...

    def held(self) -> bool:
        """Whether this process still leads; False once the lock is gone, whatever took it."""
        ...

    def release(self) -> None:
        """Stop leading (and waiting): another process may take the lock at once."""
        ...


def replica_name(role: str = "replica") -> str:
    """`digest-<role> <host> pid <pid>`: this process as operators see it in the database."""
    return f"digest-{role} {socket.gethostname()} pid {os.getpid()}"


def leader_lock(url: str, retry_interval: float) -> LeaderLock:
    """The lock for the database at `url`: advisory on PostgreSQL, a file beside a SQLite file,
    and none at all for a database no second process can open (in memory)."""
    parsed = make_url(normalise_url(url))
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return PostgresLeaderLock(url, retry_interval)
    database = parsed.database or ""
    if backend == "sqlite" and database and database != ":memory:" and "mode=memory" not in url:
        return FileLeaderLock(Path(f"{database}.leader"))
    return SoleLeader()


class SoleLeader:
    """The only process there can be (an in-memory database): always the leader."""

    def acquire(self) -> bool:
        return True

    def held(self) -> bool:
        return True

    def release(self) -> None:
        return None


class FileLeaderLock:
    """`flock` on a file beside the SQLite database: SQLite is one host, and the kernel frees
    the lock when the holder's process ends, however it ends. The file names the leader."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return self.held()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{replica_name('leader')}\n".encode())
        self._fd = fd
        return True

    def held(self) -> bool:
        if self._fd is None:
            return False
        # A lock on a file someone deleted (or replaced) would let the next replica lock a new
        # file of the same name: two leaders. Leading means holding the file that is there.
        try:
            same = os.fstat(self._fd).st_ino == self.path.stat().st_ino
        except FileNotFoundError:
            same = False
        if not same:
            self.release()
        return same

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor frees the flock
            self._fd = None


class PostgresLeaderLock:
    """`pg_try_advisory_lock` on a dedicated session, held for as long as that session lives.

    The session bounds how long a vanished leader can keep the lock: `idle_session_timeout`
    makes the server end it when the leader stops asking (a leader asks every retry interval),
    and `tcp_user_timeout` makes the leader's own check fail well before that, so a cut-off
    leader steps down before the server lets a follower in.
    """

    def __init__(self, url: str, retry_interval: float) -> None:
        self._server_timeout_ms = int(max(10.0, 5 * retry_interval) * 1000)
        self._engine: Engine = create_engine(
            normalise_url(url),
            poolclass=NullPool,  # close() really closes: that is what releases the lock
            isolation_level="AUTOCOMMIT",  # never idle in a transaction while leading
            connect_args={
                "application_name": replica_name(),
                "connect_timeout": max(2, int(retry_interval * 2)),
                "tcp_user_timeout": int(max(5.0, 2 * retry_interval) * 1000),
            },
        )
        self._connection: Connection | None = None
        self._leading = False

    @property
    def backend_pid(self) -> int | None:
        """The server process of the lock's session (pg_stat_activity.pid), if connected."""
        if self._connection is None:
            return None
        return int(self._connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())

    def acquire(self) -> bool:
        if self._leading:
            return self.held()
        try:
            connection = self._connect()
            got = bool(
                connection.execute(
                    text(f"SELECT pg_try_advisory_lock({_LOCK_KEYS})"),
                    {"space": SCHEDULER_LOCK_SPACE},
                ).scalar_one()
            )
            if got:
                connection.execute(
                    text("SELECT set_config('application_name', :name, false)"),
                    {"name": replica_name("leader")},
                )
        except DBAPIError:
            self.release()  # a broken session: the next try starts a new one
            raise
        self._leading = got
        return got

    def held(self) -> bool:
        if not self._leading or self._connection is None:
            return False
        try:
            self._connection.exec_driver_sql("SELECT 1")
        except DBAPIError:  # the session is gone, and the lock with it
            self.release()
            return False
        return True

    def release(self) -> None:
        leading, self._leading = self._leading, False
        if self._connection is not None:
            connection, self._connection = self._connection, None
            # A broken session has nothing left to free (SQLAlchemy says so: invalidated).
            with contextlib.suppress(SQLAlchemyError):
                if leading and not connection.invalidated:
                    # At once: a closed session's locks are freed a moment after it closes.
                    connection.execute(
                        text(f"SELECT pg_advisory_unlock({_LOCK_KEYS})"),
                        {"space": SCHEDULER_LOCK_SPACE},
                    )
            with contextlib.suppress(SQLAlchemyError):
                connection.close()  # ends the session, and with it anything it still held

    def _connect(self) -> Connection:
        if self._connection is None:
            connection = self._engine.connect()
            connection.exec_driver_sql(f"SET idle_session_timeout = {self._server_timeout_ms}")
            self._connection = connection
        return self._connection


def who_leads(engine: Engine) -> str | None:
    """The `application_name` of the session holding the scheduler's lock for `engine`'s
    schema (`digest-leader <host> pid <pid>`), or None when no replica leads (PostgreSQL only)."""
    query = text(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid = CAST(:space AS oid)"
        " AND l.objid = CAST(hashtext(coalesce(current_schema(), '')) AS oid)"
    )
    with engine.connect() as connection:
        return connection.execute(query, {"space": SCHEDULER_LOCK_SPACE}).scalar()
