"""`digest demo`: the README's main job, on a fresh database and outbox."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

from typer.testing import CliRunner

from digest.cli import app
from digest.cli.project import DEMO_READERS

runner = CliRunner()


def test_demo_sends_this_weeks_issue_to_the_demo_readers_once(settings_env, starter_glossary):
    # The default subject: a starter term's title and the newsletter's name, or the title alone.
    subjects = {f"{t.title} — AI Term of the Week" for t in starter_glossary}
    subjects |= {t.title for t in starter_glossary}
    outbox = Path(settings_env["DIGEST_OUTBOX_DIR"])
    first = runner.invoke(app, ["demo"])
    assert first.exit_code == 0, first.output
    assert "issue sent" in first.output
    files = sorted(outbox.glob("*.eml"))
    assert len(files) == len(DEMO_READERS)
    recipients = set()
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        recipients.add(message["To"].addresses[0].addr_spec)
        assert message["Subject"] in subjects
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert recipients == {address for address, _name in DEMO_READERS}

    again = runner.invoke(app, ["demo"])
    assert again.exit_code == 0, again.output
    assert len(list(outbox.glob("*.eml"))) == len(DEMO_READERS)
