"""The database: SQLAlchemy engine, the table definitions, and Alembic upgrades.

SQLite by default (one file under `subscribers/`), PostgreSQL via `DIGEST_DATABASE_URL`; the
schema is written once here in SQLAlchemy Core and migrated with Alembic (`digest/migrations`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "audit_log",
    "deliveries",
    "editor_sessions",
    "editors",
    "engagement",
    "events",
    "issue_renditions",
    "issues",
    "make_engine",
    "metadata",
    "queue",
    "send_crew",
    "subscribers",
    "upgrade",
    "utcnow",
]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# BIGINT on PostgreSQL, but INTEGER on SQLite so it stays an auto-incrementing ROWID alias.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use digest.store.db.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # Stored normalised (lower-cased domain and local part), so uniqueness is case-insensitive.
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200)),
    # pending | active | unsubscribed | bounced | complained
    Column("status", String(16), nullable=False, index=True),
    Column("source", String(50), nullable=False, default="web"),
    Column("timezone", String(64)),
    Column("paused_until", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("confirmed_at", UTCDateTime()),
    Column("unsubscribed_at", UTCDateTime()),
    Column("confirm_sent_at", UTCDateTime()),
    # The reader said no to click and open tracking in the preference centre (DIGEST_TRACK_*):
    # their mails carry no rewritten link and no pixel.
    Column("tracking_opt_out", Boolean, nullable=False, default=False, server_default=false()),
    Column("updated_at", UTCDateTime(), nullable=False),
    # The language the reader chose (a locale of digest/locale); NULL: the newsletter's own.
    Column("language", String(16)),
)

issues = Table(
    "issues",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("week", String(8), nullable=False, unique=True),
    Column("featured_slug", String(120), nullable=False),
    Column("related_slugs", JSON, nullable=False, default=list),
    Column("pick_source", String(16), nullable=False),  # pin | queue | rotation
    # planned | built | sending | sent | paused | failed
    Column("status", String(16), nullable=False, index=True),
    Column("status_reason", Text),
    Column("subject", Text),
    Column("preheader", Text),
    Column("html", Text),
    Column("text", Text),
    Column("archive_html", Text),
    Column("snapshot", JSON),  # the frozen term + related data the issue was rendered from
    # Who holds the send: a unique token per sender process, with a lease that expires.
    Column("claimed_by", String(64)),
    Column("claimed_until", UTCDateTime()),
    # The holder's process as digest.owner records it (host, boot id, pid namespace, pid, start
    # time), so a claimant on that host can tell a dead holder from a slow one. NULL: unknown.
    Column("claimed_owner", JSON),
    # Approval (DIGEST_REQUIRE_APPROVAL): who approved this content, when. A rebuild or an edit
    # of the subject withdraws it, since what was approved is no longer what would go out.
    Column("approved_at", UTCDateTime()),
    Column("approved_by", String(320)),
    # An editor's own subject / preheader for this issue; wins over the term's and the default.
    Column("subject_override", Text),
    Column("preheader_override", Text),
    # The weekly mail's tracked link targets, in the order they appear (a click token names the
    # index): the only places /r/<token> ever redirects to. Kept forever, as old mails are.
    Column("links", JSON),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("built_at", UTCDateTime()),
    Column("send_started_at", UTCDateTime()),
    Column("sent_at", UTCDateTime()),
    Column("updated_at", UTCDateTime(), nullable=False),
)

queue = Table(
    "queue",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("slug", String(120), nullable=False, unique=True),
    Column("week", String(8)),  # pinned to this ISO week, or NULL for "next free week"
    Column("note", Text),
    Column("position", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("issue_id", Id, ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
    # SET NULL on erase: the ledger keeps its counts, but no personal data.
    Column("subscriber_id", Id, ForeignKey("subscribers.id", ondelete="SET NULL")),
    Column("batch", Integer, nullable=False),
    # claimed | sent | failed | skipped
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("message_id", String(200)),
    Column("claimed_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
    # The sender that claimed the row (a `send_crew` token): whose batch it is while in flight.
    Column("claimed_by", String(64)),
    # The rendition the reader was claimed for (`issue_renditions.locale`); NULL: the issue's
    # own. One batch is one language: a resumed batch sends what it was claimed with.
    Column("locale", String(16)),
    UniqueConstraint("issue_id", "subscriber_id"),
    Index(None, "issue_id", "status"),
    # Recording a batch as sent updates by (issue, batch): without this index SQLite's planner
    # may pick a full scan once statistics exist (after an ANALYZE).
    Index(None, "issue_id", "batch"),
    Index(None, "subscriber_id"),
)

# An issue's mail in each other language its readers chose (the issue row holds the
# newsletter's own), built and rebuilt with it; frozen, like the issue, once sending starts.
issue_renditions = Table(
    "issue_renditions",
    metadata,
    Column("issue_id", Id, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("locale", String(16), primary_key=True),
    Column("subject", Text, nullable=False),
    Column("preheader", Text, nullable=False),
    Column("html", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("archive_html", Text),
)

# The processes sending an issue together (shared sends on PostgreSQL; one at a time on
# SQLite): each renews its own lease here, and a row whose lease has ended (or whose process is
# provably gone) marks that sender's claimed batches for another to take over.
send_crew = Table(
    "send_crew",
    metadata,
    Column("issue_id", Id, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("token", String(64), primary_key=True),
    Column("owner", JSON),  # digest.model.owner.Owner.to_json(); NULL: a bare token
    Column("zones", JSON),  # the stored time zones it sends to (local-time delivery); NULL: all
    Column("joined_at", UTCDateTime(), nullable=False),
    Column("until", UTCDateTime(), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("provider_id", String(200), unique=True),  # e.g. SendGrid's sg_event_id, for dedup
    Column("subscriber_id", Id, ForeignKey("subscribers.id", ondelete="SET NULL")),
    Column("issue_id", Id, ForeignKey("issues.id", ondelete="SET NULL")),
    Column("kind", String(32), nullable=False),  # bounce | dropped | spamreport | unsubscribe …
    Column("detail", Text),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
)

editors = Table(
    # The people who run the desk (/admin/). A password is stored only as its Argon2id hash.
    "editors",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200)),
    Column("role", String(16), nullable=False),  # editor | admin
    Column("password_hash", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("last_login_at", UTCDateTime()),
)

editor_sessions = Table(
    # One row per desk login. The cookie carries a random id; only its SHA-256 is stored, so a
    # leaked database cannot be replayed as a session. Logging out or removing the editor ends it.
    "editor_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column(
        "editor_id", Id, ForeignKey("editors.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
)

audit_log = Table(
    # Who did what, when: every editor action from the desk or the CLI (approve, hold, subject,
    # test send, queue changes, imports, erasures). Actors are addresses or "cli:<user>".
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False, index=True),
    Column("actor", String(320), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(200)),
    Column("detail", Text),
)

engagement = Table(
    # What readers (and machines) did with an issue: one row per (issue, kind, link, reader key,
    # machine?). `reader_key` is a keyed hash of (issue, subscriber), so uniques are counted
    # without a per-reader history; `subscriber_id` is set only with DIGEST_TRACKING_DETAIL=
    # per-reader (and erased with the reader). link_index -1 is an open.
    "engagement",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("issue_id", Id, ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),  # open | click
    Column("link_index", Integer, nullable=False),
    Column("reader_key", String(64), nullable=False),
    Column("machine", Boolean, nullable=False),
    Column("subscriber_id", Id, ForeignKey("subscribers.id", ondelete="SET NULL")),
    Column("hits", Integer, nullable=False, default=1),
    Column("first_at", UTCDateTime(), nullable=False),
    Column("last_at", UTCDateTime(), nullable=False),
    UniqueConstraint("issue_id", "kind", "link_index", "reader_key", "machine"),
)


# What an SMTP relay answered each recipient of a batch (digest.delivery.smtp): SMTP takes one
# message per reader, so a batch cut short by a crash is settled reader by reader from here.
# "sending" is written before a message's DATA ends: left so, nobody can say whether the relay
# took it (the ambiguous case). `recipient` is a hash of the address, never the address.
smtp_journal = Table(
    "smtp_journal",
    metadata,
    Column("batch_key", String(160), primary_key=True),
    Column("recipient", String(32), primary_key=True),
    Column("state", String(16), nullable=False),  # sending | accepted | refused | deferred
    Column("reply", Text),  # the relay's own words (code and text), for the ledger's error
    Column("at", UTCDateTime(), nullable=False),
    Index(None, "at"),
)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL lets the web app read while a send writes; busy_timeout waits out short locks
    # instead of failing; foreign keys make erase cascade as it does on PostgreSQL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def normalise_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` as psycopg 3 URLs (the driver digest ships)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def make_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite it creates the file's folder and sets the pragmas."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # configparser treats "%" as interpolation; URLs carry %-escapes (e.g. search_path options).
    url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


# The newest migration's revision. Every command upgrades on start; when the database already
# says it is here, `upgrade` answers from one SELECT instead of importing Alembic and reading
# its scripts (~0.2 s of every command). tests/test_db.py fails when a migration is added and
# this is not moved with it.
HEAD_REVISION = "0008"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` (idempotent; every command calls it on start)."""
    if revision == "head" and stored_revisions(engine) == [HEAD_REVISION]:
        return
    from alembic import command

    cfg = _alembic_config(engine)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Replicas starting together migrate once: the first takes this lock (freed when
            # its migration commits), the others wait for it, then find the schema at head.
            # Keyed "digm" and by schema, like the scheduler's lead (store.leadership).
            connection.execute(
                text(
                    "SELECT pg_advisory_xact_lock(CAST(:space AS integer),"
                    " hashtext(coalesce(current_schema(), '')))"
                ),
                {"space": int.from_bytes(b"digm")},
            )
            migrated = connection.execute(text("SELECT to_regclass('alembic_version')")).scalar()
            if revision == "head" and migrated is not None:
                rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
                if [str(row[0]) for row in rows] == [HEAD_REVISION]:
                    return
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def stored_revisions(engine: Engine) -> list[str]:
    """The revisions `alembic_version` holds, without Alembic; [] before the first upgrade."""
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:  # no such table yet: a new database
        return []
    return [str(row[0]) for row in rows]


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def ping(engine: Engine) -> bool:
    with engine.connect() as connection:
        return connection.execute(text("SELECT 1")).scalar() == 1
