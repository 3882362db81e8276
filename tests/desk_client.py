"""What the desk's tests share: an app under the TestClient on https, editors, and logging in."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from digest.campaign.editors import add_editor
from digest.config import get_settings
from digest.web import create_app

PASSWORD = "a long enough password"
NOW = datetime(2026, 12, 1, 8, tzinfo=UTC)
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def desk_client(**overrides: object) -> TestClient:
    """The real app on https (so the Secure cookies travel), settings from the test env."""
    settings = get_settings().model_copy(update=overrides)
    return TestClient(create_app(settings), base_url="https://testserver", follow_redirects=False)


def make_editor(engine: Engine, email: str = "ann@example.org", role: str = "editor") -> None:
    add_editor(engine, email, password=PASSWORD, role=role, actor="test", now=NOW)


def csrf(page: httpx.Response) -> str:
    found = _TOKEN.search(page.text)
    assert found, page.text
    return found.group(1)


def login_form(client: TestClient, email: str, password: str) -> httpx.Response:
    token = csrf(client.get("/admin/login"))
    return client.post(
        "/admin/login", data={"email": email, "password": password, "csrf_token": token}
    )


def log_in(client: TestClient, email: str = "ann@example.org") -> str:
    """Log in; returns the CSRF token of the session's pages."""
    answer = login_form(client, email, PASSWORD)
    assert answer.status_code == 303, answer.text
    return csrf(client.get("/admin/"))
