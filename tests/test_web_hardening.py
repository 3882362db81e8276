"""The web edge under hostile requests: body limits, HEAD and 405, text that cannot be stored.

Every route answers 413 to a body over its limit before reading it, whether the length is
declared or the body is chunked, and the real server (uvicorn in a subprocess) stays within a few
tens of MB while someone streams 200 MB at it. Every GET page answers HEAD the same way without a
body and without changing anything, and every 405 names the methods the path does serve. A lone
surrogate or invalid UTF-8 in any field is a 422 naming the field, never a 500 at the INSERT.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine

from digest.campaign.build import build_issue
from digest.config import Settings, get_settings
from digest.core.tokens import make_token
from digest.core.tracking import make_click_token, tracking_key
from digest.model.subscriber import Subscriber
from digest.model.weeks import IsoWeek
from digest.readers.signup import subscribe
from digest.store import db
from digest.store.issues import get_issue, transition
from digest.store.subscribers import add_confirmed, get_subscriber
from digest.web import create_app
from tests.test_scanner_safety import snapshot

REPO = Path(__file__).resolve().parent.parent
LIMIT = 16 * 1024  # the default `max_request_bytes`
WEBHOOK = "/webhooks/sendgrid"
TOO_LARGE = {"error": "The request body is too large: this address accepts at most 16,384 bytes."}


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    # `engine`: migrated beforehand, as conftest's client is (see there).
    app = create_app(settings.model_copy(update={"subscribe_rate_limit": 0}))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def ann(engine: Engine) -> Subscriber:
    """An active subscriber, so the token routes have someone to act on."""
    return add_confirmed(engine, "ann@example.org", name="Ann", now=db.utcnow())[0]


@pytest.fixture
def bob(engine: Engine, settings: Settings) -> Subscriber:
    """A pending subscriber, whose confirm link a POST would activate."""
    return subscribe(engine, settings, "bob@example.org", now=db.utcnow()).subscriber


def token(settings: Settings, purpose: str, who: Subscriber) -> str:
    return make_token(settings, purpose, who.id, who.email)


def assert_too_large(response: httpx.Response, limit: int = LIMIT) -> None:
    """The one shape of every 413: JSON with the limit, and the connection closed after it."""
    assert response.status_code == 413, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    assert response.headers["connection"] == "close"
    assert response.json() == {
        "error": f"The request body is too large: this address accepts at most {limit:,} bytes."
    }


def chunks(total: int, head: bytes = b"", block: int = 64 * 1024) -> Iterator[bytes]:
    """`head`, then filler up to `total` bytes, as a chunked body with no Content-Length."""
    yield head
    for _ in range(max(0, total - len(head)) // block):
        yield b"a" * block


def multipart(fields: dict[str, bytes], boundary: str = "zzz") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
        for name, value in fields.items()
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


FORM = {"content-type": "application/x-www-form-urlencoded"}
JSON = {"content-type": "application/json"}
MULTIPART = {"content-type": "multipart/form-data; boundary=zzz"}


# --------------------------------------------------------------------------- body limits


def post_routes(settings: Settings, ann: Subscriber, bob: Subscriber) -> list[tuple[str, dict]]:
    """Every POST route with a content type it takes (the body-less ones read nothing at all)."""
    prefs = f"/preferences/{token(settings, 'preferences', ann)}"
    return [
        ("/subscribe", FORM),
        ("/subscribe", JSON),
        ("/subscribe", MULTIPART),
        (f"/confirm/{token(settings, 'confirm', bob)}", FORM),
        (f"/unsubscribe/{token(settings, 'unsubscribe', ann)}", FORM),
        (prefs, FORM),
        (prefs, MULTIPART),
        (f"{prefs}/pause", FORM),
        (f"{prefs}/resume", FORM),
        (f"{prefs}/unsubscribe", FORM),
        (f"{prefs}/export", FORM),
        (f"{prefs}/erase", FORM),
    ]


def test_a_declared_body_over_the_limit_is_refused_before_any_route_runs(
    client, engine, settings, ann, bob
):
    before = snapshot(engine)
    body = b"email=ann%40example.org&confirm=yes&name=" + b"a" * LIMIT
    for path, headers in post_routes(settings, ann, bob):
        assert_too_large(client.post(path, content=body, headers=headers))
    # confirm, unsubscribe, resume and export read no body: they must not act and then say 413.
    assert snapshot(engine) == before
    assert get_subscriber(engine, ann.id).status == "active"
    assert get_subscriber(engine, bob.id).status == "pending"


def test_a_false_huge_content_length_is_refused_without_reading_a_byte(client, ann, settings):
    # The length alone decides: the app answers before asking for the (here tiny) body.
    path = f"/unsubscribe/{token(settings, 'unsubscribe', ann)}"
    answer = client.post(path, content=b"x", headers={**FORM, "content-length": str(300 << 20)})
    assert_too_large(answer)


@pytest.mark.parametrize("method, path", [("GET", "/"), ("PUT", "/subscribe"), ("POST", "/no")])
def test_pages_and_errors_refuse_a_declared_body_over_the_limit_the_same_way(client, method, path):
    assert_too_large(client.request(method, path, content=b"a" * (LIMIT + 1), headers=FORM))


def test_a_chunked_body_is_counted_as_it_arrives_and_refused_past_the_limit(
    client, engine, settings, ann, bob
):
    before = snapshot(engine)
    head = b'{"email": "carol@example.org", "name": "'
    for path, headers in post_routes(settings, ann, bob):
        if "unsubscribe" in path or "confirm" in path or path.endswith(("resume", "export")):
            continue  # these read no body: a chunked one never reaches a limit, nor memory
        answer = client.post(path, content=chunks(LIMIT + 70_000, head), headers=headers)
        assert "content-length" not in answer.request.headers
        assert_too_large(answer)
    assert snapshot(engine) == before


def test_a_body_at_the_limit_is_still_read(client, engine):
    padding = b"&x=" + b"a" * (LIMIT - 200)
    answer = client.post("/subscribe", content=b"email=carol%40example.org" + padding, headers=FORM)
    assert answer.status_code == 200
    assert get_subscriber(engine, "carol@example.org").status == "pending"


def test_deeply_nested_json_under_the_limit_is_still_a_clear_422(client):
    # 10,000 levels is past json's recursion limit and under 16 KB (test_fuzz's 100 KB is a 413).
    answer = client.post("/subscribe", content=b"[" * 10_000, headers=JSON)
    assert answer.status_code == 422
    assert answer.json() == {"error": "the body is not valid JSON"}


def test_a_file_in_a_form_is_refused_at_its_header_never_spooled(client, engine, settings, ann):
    prefs = f"/preferences/{token(settings, 'preferences', ann)}"
    for path in ("/subscribe", prefs):
        answer = client.post(
            path, data={"email": "carol@example.org"}, files={"f": ("a.txt", b"x" * 100)}
        )
        assert answer.status_code == 400
        assert answer.json() == {"error": "Too many files. Maximum number of files is 0."}
    assert get_subscriber(engine, "carol@example.org") is None


def sendgrid_batch(size: int) -> bytes:
    """A JSON array of `processed` events (acted on by nobody) of about `size` bytes."""
    event = {"event": "processed", "email": "ann@example.org", "timestamp": 1_700_000_000}
    one = json.dumps(event).encode()
    return b"[" + b",".join([one] * (size // (len(one) + 1))) + b"]"


def test_the_webhook_takes_a_batch_as_large_as_sendgrid_sends_but_not_more(client):
    # SendGrid posts a batch when it reaches 768 KB: far over the pages' 16 KB, under 1 MiB.
    batch = sendgrid_batch(760 * 1024)
    answer = client.post(WEBHOOK, content=batch, headers=JSON)
    assert answer.status_code == 200, answer.text
    assert answer.json()["received"] > 10_000
    mib = 1024 * 1024
    assert_too_large(client.post(WEBHOOK, content=sendgrid_batch(mib + 100), headers=JSON), mib)
    streamed = client.post(WEBHOOK, content=chunks(mib + 70_000, b"["), headers=JSON)
    assert_too_large(streamed, mib)


def test_the_limits_are_settings_with_a_floor_that_keeps_the_forms_working(
    monkeypatch, settings_env
):
    monkeypatch.setenv("DIGEST_MAX_REQUEST_BYTES", "8192")
    monkeypatch.setenv("DIGEST_MAX_WEBHOOK_REQUEST_BYTES", str(2 << 20))
    get_settings.cache_clear()
    settings = get_settings()
    assert (settings.max_request_bytes, settings.max_webhook_request_bytes) == (8192, 2 << 20)
    with TestClient(create_app(settings)) as small:
        assert_too_large(small.post("/subscribe", content=b"a" * 9000, headers=FORM), 8192)
    with pytest.raises(ValidationError, match="max_request_bytes"):
        Settings(max_request_bytes=100)
    with pytest.raises(ValidationError, match="max_webhook_request_bytes"):
        Settings(max_webhook_request_bytes=100_000)  # under SendGrid's 768 KB batches


# --------------------------------------------------------------------------- the real server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _memory(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak so far) of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


class Server:
    """`uvicorn --factory digest.web:create_app` on a free loopback port, as `digest run` serves."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
            "DIGEST_TERMS_DIR": str(REPO / "terms"),
            "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"),
            "DIGEST_SECRET_KEY": "test-secret-key-not-for-production",
            "DIGEST_CONFIG": str(tmp_path / "absent.toml"),
            "DIGEST_SUBSCRIBE_RATE_LIMIT": "0",
        }
        self._log = (tmp_path / "uvicorn.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "digest.web:create_app",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (tmp_path / "uvicorn.log").read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("uvicorn did not start: " + (tmp_path / "uvicorn.log").read_text())

    def memory(self) -> dict[str, int]:
        return _memory(self.proc.pid)

    def reset_peak(self) -> dict[str, int]:
        """Start VmHWM afresh (Linux's clear_refs "5"), so each test measures its own peak."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return self.memory()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("server"))
    try:
        # Warm up every code path the streams touch, so what is measured is the request alone.
        for headers, body in [(JSON, b'{"email": "warm@example.org"}'), (FORM, b"email=a"),
                              (MULTIPART, multipart({"email": b"a"}))]:  # fmt: skip
            httpx.post(f"{running.url}/subscribe", content=body, headers=headers, timeout=10)
        httpx.post(f"{running.url}{WEBHOOK}", content=b"[]", headers=JSON, timeout=10)
        yield running
    finally:
        running.stop()


MB = 1 << 20
HUGE = 200 * MB
MEMORY_SLACK = 30 * MB


class Counted:
    """A chunked body generator that remembers how much of it was taken."""

    def __init__(self, head: bytes, total: int = HUGE) -> None:
        self.head, self.total, self.sent = head, total, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in chunks(self.total, self.head):
            self.sent += len(chunk)
            yield chunk


@pytest.mark.slow
@pytest.mark.parametrize(
    "path, headers, head",
    [
        ("/subscribe", JSON, b'{"email": "eve@example.org", "name": "'),
        ("/subscribe", MULTIPART, b'--zzz\r\nContent-Disposition: form-data; name="name"\r\n\r\n'),
        ("/subscribe", FORM, b"email=eve%40example.org&name="),
        (WEBHOOK, JSON, b'[{"event": "bounce", "email": "'),
    ],
    ids=["json", "multipart", "form", "webhook"],
)
def test_200_mb_streamed_without_a_length_is_refused_and_never_held(server, path, headers, head):
    before = server.reset_peak()
    body = Counted(head)
    answer = httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=60)
    assert_too_large(answer, MB if path == WEBHOOK else LIMIT)
    after = server.memory()
    # The client stopped when the server answered and closed, long before the 200 MB.
    assert body.sent < 50 * MB, body.sent
    assert after["VmHWM"] - before["VmRSS"] < MEMORY_SLACK, (before, after)
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def _stream_raw(port: int, head: bytes, total: int) -> tuple[bytes, int]:
    """Send `head`, then filler, until the server answers or closes; return what it said."""
    sent = 0
    block = b"a" * (64 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # an answer (or the close) is waiting: stop sending
            try:
                sock.sendall(block)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(block)
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
    return answer, sent


@pytest.mark.slow
def test_200_mb_behind_a_false_small_content_length_is_never_read(server):
    # The server reads the declared 100 bytes (truncated JSON: 422) and then finds no request in
    # what follows: uvicorn answers 400 and closes. Nothing past the declared length is held.
    before = server.reset_peak()
    head = (
        b"POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"email": "eve@example.org", "name": "'
    )
    answer, sent = _stream_raw(server.port, head, HUGE)
    after = server.memory()
    assert answer.startswith(b"HTTP/1.1 422 "), answer[:300]
    assert sent < 50 * MB, sent
    assert after["VmHWM"] - before["VmRSS"] < MEMORY_SLACK, (before, after)
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


# --------------------------------------------------------------------------- HEAD and 405


def get_routes(app: Any) -> dict[str, APIRoute]:
    """Every route of the app that serves GET, by path, inside included routers too."""
    found: dict[str, APIRoute] = {}
    pending = list(app.routes)
    while pending:
        route = pending.pop()
        if hasattr(route, "original_router"):  # FastAPI's wrapper for an included router
            pending.extend(route.original_router.routes)
        elif isinstance(route, APIRoute) and "GET" in route.methods:
            found[route.path] = route
    return found


@pytest.fixture
def sent_week(engine: Engine, settings: Settings, starter_glossary: Any) -> IsoWeek:
    now = db.utcnow()
    week = IsoWeek(2026, 18)
    build_issue(engine, settings, starter_glossary, week, now=now - timedelta(days=1))
    transition(engine, week, "sending", now=now)
    transition(engine, week, "sent", now=now)
    return week


def without_nonce(headers: httpx.Headers) -> dict[str, str]:
    kept = dict(headers)
    kept.pop("content-security-policy")  # a fresh nonce each response, by design
    return kept


def test_every_get_route_answers_head_with_the_same_status_and_headers_and_no_body(
    client, engine, settings, ann, bob, sent_week
):
    urls = {
        "/": "/",
        "/confirm/{token}": f"/confirm/{token(settings, 'confirm', bob)}",
        "/unsubscribe/{token}": f"/unsubscribe/{token(settings, 'unsubscribe', ann)}",
        "/preferences/{token}": f"/preferences/{token(settings, 'preferences', ann)}",
        "/issues/": "/issues/",
        "/issues/{week}": f"/issues/{sent_week}",
        "/feed.xml": "/feed.xml",
        "/feed.atom": "/feed.atom",
        "/feed.json": "/feed.json",
        "/feed.xsl": "/feed.xsl",
        "/glossary/": "/glossary/",
        "/glossary/{slug}": "/glossary/transformer",
        "/healthz": "/healthz",
        "/readyz": "/readyz",
    }
    # The editors' desk: without a session every page answers 303 to its login page
    # (tests/test_desk_pages.py checks HEAD on each page with a session).
    desk = {
        "/admin/login": "/admin/login",
        "/admin/": "/admin/",
        "/admin/queue": "/admin/queue",
        "/admin/issues": "/admin/issues",
        "/admin/issues/{week}": f"/admin/issues/{sent_week}",
        "/admin/terms": "/admin/terms",
        "/admin/terms/{slug}": "/admin/terms/transformer",
        "/admin/subscribers": "/admin/subscribers",
        "/admin/subscribers/export.csv": "/admin/subscribers/export.csv",
        "/admin/stats": "/admin/stats",
    }
    # A tracked link of the sent issue: a 303 to its stored target, for HEAD as for GET.
    issue = get_issue(engine, sent_week)
    assert issue is not None and issue.links
    click = f"/r/{make_click_token(tracking_key(settings), issue.id, 0, ann.id)}"
    routes = set(get_routes(client.app))
    assert routes == set(urls) | set(desk) | {"/r/{token}"}, (
        "a new GET route: add a URL for it here"
    )
    for url in desk.values():
        get = client.get(url, follow_redirects=False)
        head = client.head(url, follow_redirects=False)
        assert get.status_code == (200 if url == "/admin/login" else 303), url
        assert head.status_code == get.status_code, url
        assert head.content == b"", url
    before = snapshot(engine)
    for url in urls.values():
        get, head = client.get(url), client.head(url)
        assert get.status_code == 200, (url, get.status_code)
        assert head.status_code == get.status_code, url
        assert without_nonce(head.headers) == without_nonce(get.headers), url
        assert head.content == b"", url
    get = client.get(click, follow_redirects=False)
    head = client.head(click, follow_redirects=False)
    assert (get.status_code, head.status_code) == (303, 303)
    assert without_nonce(head.headers) == without_nonce(get.headers)
    assert head.headers["location"] == issue.links[0] and head.content == b""
    for url in ("/issues/2026-W30", "/confirm/forged"):  # a 404 and a 400 page alike
        assert client.head(url).status_code == client.get(url).status_code
    assert snapshot(engine) == before  # HEAD, like GET, changes nothing
    assert get_subscriber(engine, bob.id).status == "pending"


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("PUT", "/confirm/x", "GET, HEAD, POST"),
        ("DELETE", "/unsubscribe/x", "GET, HEAD, POST"),
        ("PATCH", "/preferences/x", "GET, HEAD, POST"),
        ("GET", "/preferences/x/pause", "POST"),
        ("HEAD", "/subscribe", "POST"),
        ("GET", "/subscribe", "POST"),
        ("POST", "/", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("POST", "/issues/2026-W18", "GET, HEAD"),
        ("GET", WEBHOOK, "POST"),
    ],
)
def test_a_405_names_every_method_the_path_serves_in_allow(client, method, path, allow):
    answer = client.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize("field", ["email", "name", "timezone"])
def test_a_lone_surrogate_in_a_json_field_is_a_422_naming_the_field(client, engine, field):
    fields = {"email": '"carol@example.org"', "name": '"Carol"', "timezone": '"UTC"'}
    fields[field] = '"Carol \\udc00"'  # the JSON escape text, as a client would send it
    body = "{" + ", ".join(f'"{key}": {value}' for key, value in fields.items()) + "}"
    answer = client.post("/subscribe", content=body.encode(), headers=JSON)
    assert answer.status_code == 422
    subject = "That email address" if field == "email" else f"The {field}"
    assert answer.json() == {
        "error": f"{subject} is not valid: it holds a lone surrogate code point (such as "
        "\\udc00); send valid Unicode text",
        "field": field,
    }
    assert get_subscriber(engine, "carol@example.org") is None


UTF8_REFUSED = (
    "it holds U+FFFD, the mark of bytes that were not valid UTF-8; send the text as UTF-8"
)


@pytest.mark.parametrize("field", ["email", "name"])
def test_invalid_utf8_in_a_form_field_is_a_422_and_nothing_is_stored(client, engine, field):
    fields = {"email": "carol%40example.org", "name": "Carol"}
    fields[field] = "Carol%ED%B0%80"  # the UTF-8 bytes of a surrogate, which UTF-8 forbids
    body = "&".join(f"{key}={value}" for key, value in fields.items())
    answer = client.post("/subscribe", content=body.encode(), headers=FORM)
    assert answer.status_code == 422
    assert UTF8_REFUSED in answer.text
    assert get_subscriber(engine, "carol@example.org") is None


def test_a_multipart_form_in_a_codec_that_makes_surrogates_is_a_422(client, engine):
    # Starlette decodes parts in the charset the request names; unicode_escape turns "\udc00"
    # into a lone surrogate, which used to reach the INSERT.
    body = multipart({"email": b"carol@example.org", "name": b"Carol \\udc00"})
    headers = {"content-type": "multipart/form-data; boundary=zzz; charset=unicode_escape"}
    answer = client.post("/subscribe", content=body, headers=headers)
    assert answer.status_code == 422
    assert "it holds a lone surrogate code point" in answer.text
    assert get_subscriber(engine, "carol@example.org") is None


def test_invalid_utf8_in_the_preferences_form_is_a_422_and_the_name_is_kept(
    client, engine, settings, ann
):
    path = f"/preferences/{token(settings, 'preferences', ann)}"
    answer = client.post(path, content=b"name=Ann%ED%B0%80&timezone=UTC", headers=FORM)
    assert answer.status_code == 422
    assert UTF8_REFUSED in answer.text
    assert get_subscriber(engine, ann.id).name == "Ann"
