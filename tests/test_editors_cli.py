"""`digest editors add / list / remove`, as an operator creates the desk's accounts."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from typer.testing import CliRunner

from digest.campaign.editors import authenticate
from digest.store import audit
from digest.store.db import editor_sessions, editors
from digest.store.editors import create_session, get_editor, list_editors, session_editor

runner = CliRunner()
NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)
PASSWORD = "correct horse battery"


def digest(*args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    from digest.cli import app

    return runner.invoke(app, list(args), input=stdin)


def test_add_stores_an_argon2id_hash_and_the_editor_can_log_in(settings_env, engine):
    result = digest(
        "editors", "add", "Ann@Example.ORG", "--name", "Ann", "--role", "admin",
        "--password-stdin", stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output == "added admin ann@example.org\n"
    with engine.connect() as conn:
        stored = conn.execute(select(editors.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    ann = authenticate(engine, "ann@example.org", PASSWORD, now=NOW)
    assert ann is not None and (ann.name, ann.role, ann.is_admin) == ("Ann", "admin", True)
    assert get_editor(engine, "ann@example.org").last_login_at == NOW
    entry = audit.recent(engine, limit=1)[0]
    assert (entry.action, entry.target, entry.actor) == (
        "editor.add",
        "ann@example.org",
        audit.cli_actor(),
    )


def test_add_refuses_no_stdin_flag_an_empty_or_short_password_a_bad_role_and_a_duplicate(
    settings_env, engine
):
    no_flag = digest("editors", "add", "ann@example.org")
    assert no_flag.exit_code == 1
    assert "--password-stdin" in no_flag.output
    empty = digest("editors", "add", "ann@example.org", "--password-stdin", stdin="")
    assert empty.exit_code == 1 and "the password is empty" in empty.output
    short = digest("editors", "add", "ann@example.org", "--password-stdin", stdin="short\n")
    assert short.exit_code == 1 and "at least 12 characters" in short.output
    role = digest(
        "editors", "add", "ann@example.org", "--role", "owner", "--password-stdin",
        stdin=PASSWORD,
    )  # fmt: skip
    assert role.exit_code == 1 and "role must be one of editor, admin" in role.output
    bad = digest("editors", "add", "ann@", "--password-stdin", stdin=PASSWORD)
    assert bad.exit_code == 1 and "is not a valid address" in bad.output
    assert list_editors(engine) == []
    assert (
        digest("editors", "add", "ann@example.org", "--password-stdin", stdin=PASSWORD).exit_code
        == 0
    )
    again = digest("editors", "add", "ANN@example.org", "--password-stdin", stdin=PASSWORD)
    assert again.exit_code == 1 and "already an editor" in again.output
    assert [e.email for e in list_editors(engine)] == ["ann@example.org"]


def test_list_shows_every_editor_with_role_and_last_login(settings_env, engine):
    assert "no editors yet" in digest("editors", "list").output
    digest("editors", "add", "bob@example.org", "--name", "[b]Bob[/b]", "--password-stdin",
           stdin=PASSWORD)  # fmt: skip
    digest("editors", "add", "ann@example.org", "--role", "admin", "--password-stdin",
           stdin=PASSWORD)  # fmt: skip
    authenticate(engine, "ann@example.org", PASSWORD, now=NOW)
    listed = digest("editors", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[1].split() == ["ann@example.org", "admin", "2026-12-01", "09:00"]
    assert "[b]Bob[/b]" in lines[2] and lines[2].split()[-2:] == ["editor", "never"]


def test_remove_deletes_the_account_and_ends_its_sessions(settings_env, engine):
    digest("editors", "add", "ann@example.org", "--password-stdin", stdin=PASSWORD)
    ann = get_editor(engine, "ann@example.org")
    session = create_session(engine, ann.id, now=NOW, max_age=3600)
    gone = digest("editors", "remove", "ANN@example.org")
    assert gone.exit_code == 0, gone.output
    assert gone.output == "removed ann@example.org; their sessions are ended\n"
    assert session_editor(engine, session, now=NOW, max_age=3600) is None
    with engine.connect() as conn:
        assert conn.execute(select(editor_sessions)).all() == []
    assert audit.recent(engine, limit=1)[0].action == "editor.remove"
    unknown = digest("editors", "remove", "ann@example.org")
    assert unknown.exit_code == 1 and "no editor 'ann@example.org'" in unknown.output
