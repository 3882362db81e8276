"""Shared fixtures: real SQLite files, real PostgreSQL schemas, small real glossaries.

Every test that takes `database_url` (or `engine`) runs once on SQLite and once on PostgreSQL
when `DIGEST_TEST_POSTGRES_URL` is set. Under `CI=true` a missing or unreachable PostgreSQL is a
failure, not a skip: CI must prove both backends.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text

from digest import db
from digest.config import Settings, get_settings
from digest.glossary import Glossary, load_glossary
from digest.web import create_app

REPO = Path(__file__).resolve().parent.parent
STARTER_TERMS = REPO / "terms"
POSTGRES_URL = os.environ.get("DIGEST_TEST_POSTGRES_URL")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

BACKENDS = ["sqlite", "postgresql"]


def pytest_sessionstart(session: pytest.Session) -> None:
    if IN_CI and not POSTGRES_URL:
        raise pytest.UsageError("CI=true but DIGEST_TEST_POSTGRES_URL is not set")


def _postgres_schema_url(schema: str) -> str:
    assert POSTGRES_URL
    base = db.normalise_url(POSTGRES_URL)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database: a SQLite file in tmp_path, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'digest.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("DIGEST_TEST_POSTGRES_URL not set")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(db.normalise_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # pragma: no cover - environment problem
        if IN_CI:
            pytest.fail(f"PostgreSQL at DIGEST_TEST_POSTGRES_URL is unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    try:
        yield _postgres_schema_url(schema)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a migrated, empty database."""
    eng = db.make_engine(database_url)
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
def client(settings: Settings) -> Iterator[TestClient]:
    """The web app on those settings, through Starlette's test client."""
    with TestClient(create_app(settings)) as c:
        yield c
