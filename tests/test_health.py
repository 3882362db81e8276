"""/healthz (the process is up, nothing else asked) and /readyz (database, schema at head, Redis
when configured), on both backends, with real dead and hanging servers for the failures."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, text

from digest.store import db
from digest.web import create_app
from digest.web.health import CHECK_TIMEOUT
from tests.test_run import free_port

READY = {"database": "ok", "migrations": "ok", "redis": "not configured"}


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers on them."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_healthz_is_up_without_asking_the_database(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    client.app.state.engine = db.make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    answer = client.get("/healthz")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    assert answer.headers["cache-control"] == "no-store"
    assert client.get("/readyz").status_code == 503  # the same dead database, asked


def test_readyz_is_ready_on_a_migrated_database(client):
    answer = client.get("/readyz")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "ready", "checks": READY}
    assert answer.headers["cache-control"] == "no-store"


def test_healthz_and_readyz_answer_head_alike_with_no_body(client):
    for path in ("/healthz", "/readyz"):
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"", path
        assert head.headers["cache-control"] == "no-store", path
        assert head.headers["content-length"] == get.headers["content-length"], path


def test_readyz_is_not_ready_while_the_schema_is_behind_this_code(client, engine: Engine):
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0005'"))
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {
        "status": "not ready",
        "checks": {
            "database": "ok",
            "migrations": f"at 0005, this code needs {db.HEAD_REVISION}",
            "redis": "not configured",
        },
    }
    assert client.get("/healthz").status_code == 200  # up, only not ready
    with engine.begin() as conn:  # back at head: ready again, nothing cached
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": db.HEAD_REVISION})
    assert client.get("/readyz").json() == {"status": "ready", "checks": READY}


def test_readyz_is_not_ready_on_a_database_never_migrated(client, engine: Engine):
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["migrations"] == f"at none, this code needs {db.HEAD_REVISION}"


def test_readyz_says_which_check_failed_and_no_address_when_redis_is_down(settings, engine):
    port = free_port()  # nothing listens there
    url = f"redis://:hunter2-secret@127.0.0.1:{port}/0"
    with TestClient(create_app(settings.model_copy(update={"redis_url": SecretStr(url)}))) as c:
        answer = c.get("/readyz")
        head = c.head("/readyz")
    assert answer.status_code == head.status_code == 503
    assert answer.json() == {
        "status": "not ready",
        "checks": {"database": "ok", "migrations": "ok", "redis": "unreachable"},
    }
    for secret in ("hunter2", str(port), "127.0.0.1", "redis://"):
        assert secret not in answer.text


def test_readyz_is_ready_when_redis_answers_ping(settings, engine):
    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"the shared Redis at 127.0.0.1:6379 is not answering: {exc}")
    with TestClient(create_app(settings.model_copy(update={"redis_url": SecretStr(url)}))) as c:
        answer = c.get("/readyz")
    assert answer.status_code == 200, answer.text
    assert answer.json()["checks"] == {**READY, "redis": "ok"}


def test_a_database_that_never_answers_costs_readyz_its_timeout_not_more(client, hanging_port):
    client.app.state.engine = db.make_engine(f"postgresql://postgres@127.0.0.1:{hanging_port}/x")
    started = time.monotonic()
    answer = client.get("/readyz")
    first = time.monotonic() - started
    assert answer.status_code == 503
    assert answer.json()["checks"] == {
        "database": "timeout",
        "migrations": "timeout",
        "redis": "not configured",
    }
    assert CHECK_TIMEOUT <= first < CHECK_TIMEOUT + 1.5
    # The hung check is still running: the next probe waits on it, again no longer than that.
    started = time.monotonic()
    assert client.get("/readyz").json()["checks"]["database"] == "timeout"
    assert time.monotonic() - started < CHECK_TIMEOUT + 1.5
    assert client.get("/healthz").status_code == 200
