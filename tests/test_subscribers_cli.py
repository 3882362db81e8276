"""`digest subscribers …` and `digest serve`, as an operator runs them, on both backends."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from digest.store import db
from digest.store.subscribers import get_subscriber, list_subscribers, mark_status
from tests.conftest import REPO
from tests.forked_python import ForkedPython

runner = CliRunner()


def digest(*args: str):  # type: ignore[no-untyped-def]
    from digest.cli import app

    return runner.invoke(app, list(args))


def outbox(settings_env: dict[str, str]) -> list[Path]:
    folder = Path(settings_env["DIGEST_OUTBOX_DIR"])
    return sorted(folder.glob("*.eml")) if folder.exists() else []


def test_add_sends_a_confirmation_mail_and_leaves_the_subscriber_pending(settings_env, engine):
    result = digest("subscribers", "add", "Ann@Example.org", "--name", "Ann")
    assert result.exit_code == 0, result.output
    assert result.output == "ann@example.org: pending; confirmation mail sent\n"
    sub = get_subscriber(engine, "ann@example.org")
    assert (sub.status, sub.name, sub.source) == ("pending", "Ann", "cli")
    assert len(outbox(settings_env)) == 1
    again = digest("subscribers", "add", "ann@example.org")
    assert "none was sent now" in again.output
    assert len(outbox(settings_env)) == 1


def test_add_confirmed_adds_an_active_subscriber_without_mail(settings_env, engine):
    result = digest("subscribers", "add", "bob@example.org", "--confirmed")
    assert result.exit_code == 0, result.output
    assert result.output == "bob@example.org: added as active\n"
    assert get_subscriber(engine, "bob@example.org").status == "active"
    assert outbox(settings_env) == []
    assert "already active" in digest("subscribers", "add", "bob@example.org").output


def test_add_refuses_a_bad_address_and_an_unsubscribed_one(settings_env, engine):
    bad = digest("subscribers", "add", "bob@")
    assert bad.exit_code == 1
    assert "error: email: There must be something after the @-sign." in bad.output
    digest("subscribers", "add", "gone@example.org", "--confirmed")
    mark_status(engine, get_subscriber(engine, "gone@example.org").id, "unsubscribed", db.utcnow())
    refused = digest("subscribers", "add", "gone@example.org", "--confirmed")
    assert refused.exit_code == 1
    assert "gone@example.org is unsubscribed; only its owner can subscribe it again" in (
        refused.output
    )


def test_import_lists_bad_rows_by_line_imports_the_rest_and_is_idempotent(
    settings_env, engine, tmp_path
):
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(
        "email,name\nann@example.org,Ann\nnope,Bob\ncy@example.org,Cy\n", encoding="utf-8"
    )
    first = digest("subscribers", "import", str(csv_file), "--confirmed")
    assert first.exit_code == 1
    lines = first.output.splitlines()
    assert lines[0].startswith(f"{csv_file}:3: email: ")
    assert lines[-1] == (
        "added 2, updated 0, unchanged 0, kept unsubscribed/bounced/complained 0, 1 error"
    )
    assert [s.status for s in list_subscribers(engine)] == ["active", "active"]
    before = list_subscribers(engine)
    second = digest("subscribers", "import", str(csv_file), "--confirmed")
    assert "added 0, updated 0, unchanged 2," in second.output
    assert list_subscribers(engine) == before


def test_import_of_a_file_that_is_not_utf8_imports_nothing(settings_env, engine, tmp_path):
    csv_file = tmp_path / "latin1.csv"
    csv_file.write_bytes("email,name\nann@example.org,Zoë\n".encode("latin-1"))
    result = digest("subscribers", "import", str(csv_file))
    assert result.exit_code == 1
    assert "not UTF-8 text" in result.output
    assert list_subscribers(engine) == []


def test_export_writes_csv_that_import_reads_back(settings_env, engine, tmp_path):
    digest("subscribers", "add", "ann@example.org", "--confirmed", "--name", "Ann, Jr.")
    digest("subscribers", "add", "bob@example.org")
    exported = digest("subscribers", "export")
    assert exported.exit_code == 0
    assert exported.stdout == (
        "email,name,status,timezone,language\n"
        'ann@example.org,"Ann, Jr.",active,,\n'
        "bob@example.org,,pending,,\n"
    )
    only_pending = digest("subscribers", "export", "--status", "pending")
    assert only_pending.stdout.splitlines()[1:] == ["bob@example.org,,pending,,"]
    before = [(s.email, s.name, s.status, s.timezone) for s in list_subscribers(engine)]
    csv_file = tmp_path / "backup.csv"
    csv_file.write_text(exported.stdout, encoding="utf-8")
    for address in ("ann@example.org", "bob@example.org"):
        assert digest("subscribers", "remove", address).exit_code == 0
    back = digest("subscribers", "import", str(csv_file), "--confirmed")
    assert back.exit_code == 0, back.output
    after = [(s.email, s.name, s.status, s.timezone) for s in list_subscribers(engine)]
    assert after == before


def test_list_and_count_by_status(settings_env, engine):
    digest("subscribers", "add", "ann@example.org", "--confirmed")
    digest("subscribers", "add", "bob@example.org")
    listed = digest("subscribers", "list", "--status", "active")
    assert "ann@example.org" in listed.output
    assert "bob@example.org" not in listed.output
    assert listed.output.splitlines()[-1] == "1 subscriber"
    counted = digest("subscribers", "count").output.splitlines()
    assert [line.split() for line in counted] == [
        ["pending", "1"],
        ["active", "1"],
        ["unsubscribed", "0"],
        ["bounced", "0"],
        ["complained", "0"],
        ["total", "2"],
    ]
    wrong = digest("subscribers", "list", "--status", "happy")
    assert wrong.exit_code == 1
    assert "no status 'happy'" in wrong.output


def test_remove_erases_the_subscriber_and_says_so(settings_env, engine):
    digest("subscribers", "add", "ann@example.org", "--confirmed")
    removed = digest("subscribers", "remove", "ANN@example.org")
    assert removed.exit_code == 0
    assert removed.output.startswith("removed ANN@example.org;")
    assert get_subscriber(engine, "ann@example.org") is None
    missing = digest("subscribers", "remove", "ann@example.org")
    assert missing.exit_code == 1
    assert "no subscriber 'ann@example.org'" in missing.output


@pytest.mark.slow
def test_serve_runs_the_web_service(settings_env, engine):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, **settings_env}
    proc = ForkedPython(["-m", "digest.cli", "serve", "--port", str(port)], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    output = proc.communicate(10)[0].decode()
                    pytest.fail(f"digest serve did not come up:\n{output}")
                time.sleep(0.1)
        assert answer.json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert (ready.status_code, ready.json()["status"]) == (200, "ready"), ready.text
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert '<form method="post" action="subscribe"' in page.text
    finally:
        proc.terminate()
        proc.wait(10)
