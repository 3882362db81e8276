"""Shared fixtures: real SQLite files, real PostgreSQL schemas, small real glossaries.

Every test that takes `database_url` (or `engine`) runs once on SQLite and once on PostgreSQL:
the one at `DIGEST_TEST_POSTGRES_URL`, else the local default (`DEFAULT_POSTGRES_URL`, what a
fresh machine of ours runs). Without a reachable PostgreSQL the PostgreSQL half is skipped with
the reason, and the session's last line says so; under `CI=true` it is a failure instead: CI must
prove both backends. The browser tests (marker `browser`) are handled the same way when
Debian's Chromium is missing.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import textwrap
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ProgrammingError

import tests.browser
from digest.config import Settings, get_settings
from digest.model.glossary import Glossary
from digest.store import db
from digest.store.terms import load_glossary
from digest.web import create_app

REPO = Path(__file__).resolve().parent.parent
STARTER_TERMS = REPO / "terms"
ENV_VAR = "DIGEST_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CONNECT_TIMEOUT = 2  # seconds; libpq's minimum. Refused connections fail at once anyway.

BACKENDS = ["sqlite", "postgresql"]
_BACKEND = "digest_backend"  # the user property that names a test's backend in its reports


# --------------------------------------------------------------------------- what can run


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """The PostgreSQL the suite runs on, or why there is none."""

    url: str
    origin: str  # where `url` came from, for messages
    problem: str | None = None  # None: reachable

    @property
    def shown(self) -> str:
        """The URL without its password, for the terminal."""
        return make_url(self.url).render_as_string(hide_password=True)

    def not_tested(self) -> str:
        """Why the PostgreSQL half does not run, saying what to do about it."""
        fix = "correct it" if self.origin == ENV_VAR else f"set {ENV_VAR} to one that runs"
        return (
            f"PostgreSQL not tested: {self.shown} ({self.origin}) is unreachable: {self.problem}."
            f" Start PostgreSQL there or {fix}"
        )


def find_postgres(
    env_url: str | None, default: str = DEFAULT_POSTGRES_URL, timeout: int = CONNECT_TIMEOUT
) -> PostgresTarget:
    """`env_url` if given, else `default`; connected to once so a missing server is known now."""
    url, origin = (env_url, ENV_VAR) if env_url else (default, "the local default")
    engine = create_engine(db.normalise_url(url), connect_args={"connect_timeout": timeout})
    try:
        with engine.connect():
            pass
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return PostgresTarget(url, origin, reason[0] if reason else type(exc).__name__)
    finally:
        engine.dispose()
    return PostgresTarget(url, origin)


@functools.cache
def postgres() -> PostgresTarget:
    """This process's PostgreSQL (each xdist worker looks once, on first use)."""
    return find_postgres(os.environ.get(ENV_VAR))


def chromium_problem(path: str | None = None) -> str | None:
    """Why the browser tests cannot drive Chromium at `path` (theirs), or None when they can."""
    path = path or tests.browser.CHROMIUM
    if not os.access(path, os.X_OK):
        return (
            f"{path} is missing; install Debian's chromium"
            " (`apt-get install chromium`, which `bash tests/run` does as root)"
        )
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed; install the test extra: pip install -e '.[test]'"
    return None


def chromium_version() -> str:
    """`Chromium 1xx.…` as the browser reports it (the distribution's suffix dropped)."""
    try:
        out = subprocess.run(
            [tests.browser.CHROMIUM, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"version unknown: {exc}"
    return out.split(" built on ")[0].strip() or "version unknown"


def pytest_sessionstart(session: pytest.Session) -> None:
    if IN_CI and postgres().problem:
        raise pytest.UsageError(f"CI=true needs both backends. {postgres().not_tested()}")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A browser test without a browser: a failure under CI, else a skip that says why."""
    if item.get_closest_marker("browser") is None:
        return
    problem = chromium_problem()
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true needs the browser tests. {problem}", pytrace=False)
    pytest.skip(f"browser not tested: {problem}")


@pytest.fixture(autouse=True)
def _root_log_handlers() -> Iterator[None]:
    """Put the root logger's handlers back after each test. A command run in-process through
    CliRunner (`digest issue resume`, `digest run`) installs digest's handler on the runner's
    captured stderr, which is closed when the command returns: left in place, every later test
    in that worker would see "--- Logging error ---" in its output instead of its own lines."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# --------------------------------------------------------------------------- what did run

# (kind, outcome) -> tests; kind is a backend or "browser", outcome "ran", "skipped" or
# "failed" (in its setup: could not run).
_TALLY: Counter[tuple[str, str]] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Under xdist the workers' reports arrive here, in the controller, with their properties.
    if report.when == "call":
        outcome = "ran"
    elif report.when == "setup" and not report.passed:
        outcome = "skipped" if report.skipped else "failed"
    else:
        return
    kinds = [str(value) for key, value in report.user_properties if key == _BACKEND]
    if "browser" in report.keywords:
        kinds.append("browser")
    for kind in kinds:
        _TALLY[kind, outcome] += 1


def _counted(kind: str) -> str:
    counts = [f"{_TALLY[kind, 'ran']} ran"]
    counts += [f"{_TALLY[kind, o]} {o}" for o in ("skipped", "failed") if _TALLY[kind, o]]
    return ", ".join(counts)


def summary_line() -> tuple[str, bool]:
    """The session's last word on what it covered, and whether anything was left out."""
    target = postgres()
    backends = f"backends sqlite ({_counted('sqlite')})"
    if target.problem:
        backends += (
            f" only, PostgreSQL NOT tested ({_counted('postgresql')}:"
            f" {target.shown} from {target.origin} is unreachable)"
        )
    else:
        backends += f" + postgresql ({_counted('postgresql')}; {target.shown} from {target.origin})"
    problem = chromium_problem()
    if problem:
        browser = f"browser NOT tested ({_counted('browser')}): {problem}"
    else:
        browser = f"browser {tests.browser.CHROMIUM} ({chromium_version()}; {_counted('browser')})"
    return f"digest: {backends}; {browser}", bool(target.problem or problem)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    # Outermost wrapper: written after the short test summary, just above the final counts.
    yield
    line, missing = summary_line()
    terminalreporter.write_line(line, yellow=missing, green=not missing, bold=True)


# --------------------------------------------------------------------------- fixtures


def _postgres_schema_url(base_url: str, schema: str) -> str:
    base = db.normalise_url(base_url)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


@functools.cache
def _postgres_admin(url: str) -> Engine:
    """One autocommit engine per process for creating and dropping the tests' schemas."""
    return create_engine(db.normalise_url(url), isolation_level="AUTOCOMMIT")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database: a SQLite file in tmp_path, or a fresh PostgreSQL schema."""
    request.node.user_properties.append((_BACKEND, request.param))
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'digest.db'}"
        return
    target = postgres()
    if target.problem:
        if IN_CI:
            pytest.fail(target.not_tested(), pytrace=False)
        pytest.skip(target.not_tested())
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = _postgres_admin(target.url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # pragma: no cover - the server went away mid-session
        if IN_CI:
            pytest.fail(f"PostgreSQL at {target.shown} stopped answering: {exc}")
        pytest.skip(f"PostgreSQL at {target.shown} stopped answering: {exc}")
    try:
        yield _postgres_schema_url(target.url, schema)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


# ----- migrated databases, made once per process
#
# Alembic costs ~0.2 s a test on SQLite and ~0.5 s on PostgreSQL, and ~900 tests take a migrated
# database: most of the suite's setup time. Each process migrates one database per backend with
# `db.upgrade`, as before, and hands every test a copy: the SQLite file copied, or, on
# PostgreSQL, the statements that upgrade sent replayed into the test's schema in one round trip
# (checked once against the migrated schema itself; anything it cannot replay exactly, such as
# bound parameters, falls back to running Alembic for each test).


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("migrated")
    path = folder / "digest.db"
    eng = db.make_engine(f"sqlite:///{path}")
    db.upgrade(eng)
    eng.dispose()  # the last connection closed: WAL checkpointed into the file and removed
    leftovers = [p.name for p in folder.iterdir() if p != path]
    assert not leftovers, f"the migrated SQLite template left {leftovers} beside it"
    return path


def _postgres_schema_shape(conn: Connection, schema: str) -> list[tuple[object, ...]]:
    """Tables, columns, constraints, indexes and sequences of `schema`, and its Alembic revision,
    with the schema's own name taken out: equal for two schemas built the same way."""
    queries = [
        "SELECT table_name, column_name, ordinal_position, data_type, character_maximum_length,"
        " is_nullable, column_default FROM information_schema.columns WHERE table_schema = :s",
        "SELECT rel.relname, con.conname, con.contype, pg_get_constraintdef(con.oid)"
        " FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid"
        " JOIN pg_namespace ns ON ns.oid = rel.relnamespace WHERE ns.nspname = :s",
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = :s",
        "SELECT sequence_name, data_type, start_value, increment FROM information_schema.sequences"
        " WHERE sequence_schema = :s",
    ]
    rows = [
        tuple(str(v).replace(schema, "<schema>") for v in row)
        for query in queries
        for row in conn.execute(text(query), {"s": schema})
    ]
    rows += [tuple(r) for r in conn.execute(text(f'SELECT * FROM "{schema}".alembic_version'))]
    return sorted(rows)


@functools.cache
def _postgres_migration(url: str) -> str | None:
    """The SQL `db.upgrade` runs on an empty schema, as one script; None if it cannot be
    replayed exactly (then each test runs Alembic itself)."""
    admin = _postgres_admin(url)
    migrated, replayed = (f"t_{uuid.uuid4().hex[:16]}" for _ in range(2))
    sent: list[tuple[str, object]] = []

    def record(_c: object, _cur: object, statement: str, parameters: object, *_a: object) -> None:
        if not statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{migrated}"; CREATE SCHEMA "{replayed}"'))
    try:
        eng = db.make_engine(_postgres_schema_url(url, migrated))
        event.listen(eng, "before_cursor_execute", record)
        db.upgrade(eng)
        eng.dispose()
        if any(parameters for _statement, parameters in sent):
            return None
        script = ";\n".join(statement for statement, _parameters in sent)
        copy = db.make_engine(_postgres_schema_url(url, replayed))
        with copy.begin() as conn:
            conn.exec_driver_sql(script)
        copy.dispose()
        with admin.connect() as conn:
            same = _postgres_schema_shape(conn, migrated) == _postgres_schema_shape(conn, replayed)
        return script if same else None
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{migrated}", "{replayed}" CASCADE'))


def _replayed(eng: Engine, script: str) -> bool:
    try:
        with eng.begin() as conn:
            conn.exec_driver_sql(script)
    except ProgrammingError:  # another fixture's app or command made the tables first
        return False
    return True


@pytest.fixture
def engine(request: pytest.FixtureRequest, database_url: str) -> Iterator[Engine]:
    """An engine on a migrated, empty database (a copy of one `db.upgrade` migrated)."""
    url = make_url(database_url)
    eng = db.make_engine(database_url)
    if url.get_backend_name() == "sqlite":
        target = Path(str(url.database))
        if target.exists():  # another fixture's app or command made it first: migrate it
            db.upgrade(eng)
        else:
            shutil.copyfile(request.getfixturevalue("_sqlite_template"), target)
    else:
        script = _postgres_migration(postgres().url)
        if script is None or not _replayed(eng, script):
            db.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def settings_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str
) -> Iterator[dict[str, str]]:
    """Point digest's settings at tmp_path and the test database; returns the env it set."""
    env = {
        "DIGEST_DATABASE_URL": database_url,
        "DIGEST_TERMS_DIR": str(STARTER_TERMS),
        "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"),
        "DIGEST_SECRET_KEY": "test-secret-key-not-for-production",
        "DIGEST_BASE_URL": "https://digest.example.org",
        "DIGEST_SITE_URL": "https://glossary.example.org",
        "DIGEST_TRANSPORT": "outbox",
        "DIGEST_CONFIG": str(tmp_path / "absent.toml"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def starter_glossary() -> Glossary:
    return load_glossary(STARTER_TERMS)


def term_text(
    title: str = "Example Term",
    *,
    related: list[str] | None = None,
    category: str = "Fundamentals",
    difficulty: str = "beginner",
    added: str = "2026-W10",
    aliases: str = "[]",
    summary: str | None = None,
    definition: str | None = None,
    body: str | None = None,
    extra: str = "",
) -> str:
    """The text of a valid term file; tests change one thing to make it invalid."""
    related_yaml = "[" + ", ".join(related or []) + "]"
    summary = summary or f"One line about {title}."
    definition = definition or f"{title} is a concept used in the tests."
    body = body or textwrap.dedent(
        f"""\
        ## Why it matters

        {title} matters because tests need it.

        ## How it works

        It works by being written to a file.

        ## Example

        This file is an example of {title}.
        """
    )
    return (
        "---\n"
        f"title: {title}\n"
        f"summary: {summary}\n"
        f"definition: {definition}\n"
        f"aliases: {aliases}\n"
        f"category: {category}\n"
        f"difficulty: {difficulty}\n"
        f"added: {added}\n"
        f"related: {related_yaml}\n"
        "sources:\n"
        "  - title: A source\n"
        "    url: https://example.org/source\n"
        f"{extra}"
        "---\n\n"
        f"{body}"
    )


@pytest.fixture
def make_terms(tmp_path: Path) -> Callable[[dict[str, str]], Path]:
    """Write {slug: file text} into a fresh folder and return it."""

    def write(files: dict[str, str]) -> Path:
        folder = tmp_path / f"terms-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        for slug, content in files.items():
            (folder / f"{slug}.md").write_text(content, encoding="utf-8")
        return folder

    return write


# ----- hypothesis profiles (fuzz tests)


def _load_hypothesis_profile() -> None:
    """Profile "ci" (the default) is reproducible and bounded; "thorough" digs deeper.

    Pick one with HYPOTHESIS_PROFILE=thorough.

    Tests that set their own `max_examples` scale it by `fuzz_examples()` in test_fuzz.py, so
    the thorough profile multiplies every property's budget, not only the unbounded ones.
    """
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci",
        max_examples=200,
        derandomize=True,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "thorough",
        max_examples=4000,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_load_hypothesis_profile()


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    """The settings `settings_env` points at (tmp database, outbox, fixed secret)."""
    return get_settings()


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """The web app on those settings, through Starlette's test client.

    On a database migrated beforehand (`engine`: a copy, not a fresh Alembic run), so the app's
    own upgrade at start finds nothing to do; test_web checks the app migrates an empty one.
    """
    with TestClient(create_app(settings)) as c:
        yield c
