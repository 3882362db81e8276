"""Subject lines and preheaders editors own: the default, a term's own, an issue's override.

Real term files, real builds in SQLite and PostgreSQL, the CLI as an editor types it.
"""

from __future__ import annotations

import json
import webbrowser
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update
from typer.testing import CliRunner

from digest.campaign.build import build_issue, build_site, make_snapshot, sample_markers
from digest.campaign.editing import EditError, set_subject
from digest.campaign.preflight import check_issue
from digest.cli import app
from digest.config import Settings
from digest.core.checks import check_subject
from digest.core.mails import MARKER_RE
from digest.core.render import render_issue, subject_line
from digest.core.selection import Pick
from digest.core.tokens import BadToken, verify_token
from digest.model.glossary import Glossary
from digest.model.weeks import IsoWeek, current_week
from digest.store import audit, db
from digest.store.issues import get_issue, transition
from digest.store.terms import load_glossary, read_glossary
from tests.conftest import term_text
from tests.test_build import NOW, W48, small_terms
from tests.test_render import settings_for

runner = CliRunner()
OWN = 'subject: "Alpha, explained in one mail"\npreheader: "What Alpha is, and why."\n'


@pytest.fixture
def settings() -> Settings:
    return settings_for()


@pytest.fixture
def glossary(make_terms) -> Glossary:
    return load_glossary(make_terms(small_terms()))


def build(engine: Engine, settings: Settings, glossary: Glossary, **kwargs) -> object:
    return build_issue(engine, settings, glossary, W48, now=NOW, news=[], **kwargs)


def approve(engine: Engine, week: IsoWeek = W48) -> None:
    """What the approval part does to the row, without depending on it here."""
    with engine.begin() as conn:
        conn.execute(
            update(db.issues)
            .where(db.issues.c.week == str(week))
            .values(approved_at=NOW, approved_by="ed@example.org")
        )


# --------------------------------------------------------------------------- the default


def test_no_starter_term_gets_a_cut_subject(starter_glossary: Glossary) -> None:
    settings = settings_for()
    assert len(starter_glossary) > 60
    for term in starter_glossary:
        snapshot = make_snapshot(settings, starter_glossary, Pick(W48, term.slug, "rotation"))
        rendered = render_issue(snapshot, settings)
        assert not rendered.subject.endswith("…"), rendered.subject
        assert "…" not in rendered.subject
        assert term.title in rendered.subject, term.slug
        # The title alone when title and name together would pass the warning length.
        named = f"{term.title} — AI Term of the Week"
        assert rendered.subject == (named if len(named) <= 70 else term.title)
        assert len(rendered.subject) <= settings.subject_warn_length
        assert rendered.preheader == term.summary


def test_the_default_uses_the_newsletters_own_name() -> None:
    settings = settings_for(newsletter_name="Weekly Words")
    assert subject_line("RAG", settings.newsletter_name, 70) == "RAG — Weekly Words"


# --------------------------------------------------------------------------- a term's own lines


def test_a_terms_own_subject_and_preheader_win(make_terms, settings: Settings) -> None:
    files = small_terms(alpha=term_text("Alpha", related=["beta", "gamma"], extra=OWN))
    glossary = load_glossary(make_terms(files))
    assert glossary["alpha"].subject == "Alpha, explained in one mail"
    assert glossary["alpha"].preheader == "What Alpha is, and why."
    snapshot = make_snapshot(settings, glossary, Pick(W48, "alpha", "rotation"))
    assert snapshot["term"]["subject"] == "Alpha, explained in one mail"
    rendered = render_issue(snapshot, settings)
    assert rendered.subject == "Alpha, explained in one mail"
    assert rendered.preheader == "What Alpha is, and why."
    assert "What Alpha is, and why." in rendered.html
    # A term without them freezes no such keys: its snapshot is what it always was.
    plain = make_snapshot(settings, glossary, Pick(W48, "beta", "rotation"))
    assert "subject" not in plain["term"] and "preheader" not in plain["term"]


def test_a_snapshot_from_before_the_fields_still_renders(settings: Settings, glossary) -> None:
    snapshot = make_snapshot(settings, glossary, Pick(W48, "beta", "rotation"))
    old = json.loads(json.dumps(snapshot))
    assert old["version"] == 1
    assert render_issue(old, settings).subject == "Beta — AI Term of the Week"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            'subject: "one\\ntwo"\n',
            "alpha.md:13: subject: must be one line: line breaks, tabs and control characters "
            "are not allowed (found U+000A); remove it",
        ),
        (
            f"subject: {'x' * 151}\n",
            "alpha.md:13: subject: String should have at most 150 characters",
        ),
        (
            f"preheader: {'x' * 251}\n",
            "alpha.md:13: preheader: String should have at most 250 characters",
        ),
        ('preheader: "  "\n', "alpha.md:13: preheader: String should have at least 1 character"),
        ("subject: [a, b]\n", "alpha.md:13: subject: Input should be a valid string (got list)"),
    ],
)
def test_bad_subject_and_preheader_fields_name_file_line_and_field(
    make_terms, extra: str, expected: str
) -> None:
    folder = make_terms({"alpha": term_text("Alpha", extra=extra)})
    _glossary, errors = read_glossary(folder)
    assert [str(e).removeprefix(f"{folder}/") for e in errors] == [expected]


# --------------------------------------------------------------------------- an issue's override


def test_set_subject_rerenders_the_stored_mail_and_withdraws_approval(
    engine: Engine, settings: Settings, glossary: Glossary
) -> None:
    before = build(engine, settings, glossary)
    approve(engine)
    after = set_subject(
        engine,
        settings,
        W48,
        subject="  A better subject  ",
        preheader="Read this one",
        actor="ed@example.org",
        now=NOW + timedelta(hours=1),
    )
    assert after.subject == after.subject_override == "A better subject"
    assert after.preheader == after.preheader_override == "Read this one"
    assert "Read this one" in (after.html or "") and "Read this one" not in (before.html or "")
    assert "<title>A better subject</title>" in (after.html or "")
    assert after.approved_at is None and after.approved_by is None
    assert after.status == "built" and after.built_at == before.built_at
    assert get_issue(engine, W48) == after
    [entry] = audit.recent(engine, target=str(W48))
    assert (entry.actor, entry.action) == ("ed@example.org", "issue.subject")
    assert f"subject: {before.subject!r} → 'A better subject'" in (entry.detail or "")
    assert "approval withdrawn" in (entry.detail or "")


def test_none_keeps_a_line_and_empty_goes_back_to_the_default(
    engine: Engine, settings: Settings, glossary: Glossary
) -> None:
    default = build(engine, settings, glossary)
    set_subject(engine, settings, W48, subject="Mine", preheader="Pre", actor="a", now=NOW)
    kept = set_subject(engine, settings, W48, subject=None, preheader="", actor="a", now=NOW)
    assert (kept.subject, kept.preheader_override) == ("Mine", None)
    assert kept.preheader == default.preheader
    back = set_subject(engine, settings, W48, subject="", preheader=None, actor="a", now=NOW)
    assert back.subject == default.subject and back.subject_override is None
    assert back.html == default.html


def test_a_rebuild_keeps_the_override_and_withdraws_approval(
    engine: Engine, settings: Settings, glossary: Glossary
) -> None:
    build(engine, settings, glossary)
    set_subject(engine, settings, W48, subject="Kept", preheader="Also kept", actor="a", now=NOW)
    approve(engine)
    assert get_issue(engine, W48).approved  # type: ignore[union-attr]
    again = build_issue(
        engine, settings, glossary, W48, now=NOW + timedelta(days=1), news=[], rebuild=True
    )
    assert (again.subject, again.preheader) == ("Kept", "Also kept")
    assert "Also kept" in (again.html or "")
    assert again.approved_at is None and again.approved_by is None
    assert again.built_at == NOW + timedelta(days=1)


@pytest.mark.parametrize(
    ("subject", "preheader", "message"),
    [
        ("   ", None, "subject: must contain visible text"),
        ("x" * 151, None, "subject: is 151 characters; at most 150 are allowed"),
        ("one\ntwo", None, "subject: must be one line"),
        (None, "tab\there", "preheader: must be one line"),
        (None, "y" * 251, "preheader: is 251 characters; at most 250 are allowed"),
    ],
)
def test_bad_lines_are_refused_and_nothing_is_stored(
    engine: Engine,
    settings: Settings,
    glossary: Glossary,
    subject: str | None,
    preheader: str | None,
    message: str,
) -> None:
    before = build(engine, settings, glossary)
    with pytest.raises(EditError, match=message):
        set_subject(engine, settings, W48, subject=subject, preheader=preheader, actor="a", now=NOW)
    assert get_issue(engine, W48) == before
    assert audit.recent(engine) == []


def test_unknown_weeks_and_sending_issues_are_refused(
    engine: Engine, settings: Settings, glossary: Glossary
) -> None:
    with pytest.raises(EditError, match="there is no issue for 2026-W48; build it first"):
        set_subject(engine, settings, W48, subject="S", preheader=None, actor="a", now=NOW)
    build(engine, settings, glossary)
    transition(engine, W48, "sending", now=NOW)
    with pytest.raises(EditError, match="is sending; its subject is frozen once sending starts"):
        set_subject(engine, settings, W48, subject="S", preheader=None, actor="a", now=NOW)
    # A failed send that had started stays frozen too, though a failed issue can be rebuilt.
    transition(engine, W48, "failed", "provider down", now=NOW)
    with pytest.raises(EditError, match="frozen once sending starts"):
        set_subject(engine, settings, W48, subject="S", preheader=None, actor="a", now=NOW)


# --------------------------------------------------------------------------- digest check


def test_a_long_subject_is_a_warning_not_a_problem(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    settings = Settings(unsubscribe_mailto="unsubscribe@digest.example.org")
    starter = load_glossary(Path(settings_env["DIGEST_TERMS_DIR"]))
    build_issue(engine, settings, starter, W48, now=NOW, news=[])
    long = "A subject line that goes on and on well past what any inbox will show you"
    set_subject(engine, settings, W48, subject=long, preheader=None, actor="a", now=NOW)
    notes: list[str] = []
    assert check_issue(engine, settings, W48, now=NOW, notes=notes) == []
    assert f"the subject is {len(long)} characters" in "\n".join(notes)
    assert check_subject("Short", 70, "2026-W48") == []
    result = runner.invoke(app, ["check", "--week", "2026-W48"])
    assert result.exit_code == 0, result.output
    assert f"note: the subject is {len(long)} characters" in result.output
    assert 'digest issue subject 2026-W48 "…"' in result.output


# --------------------------------------------------------------------------- the built files


def test_built_mail_files_have_sample_links_that_no_reader_can_use(
    engine: Engine, settings: Settings, glossary: Glossary, tmp_path: Path
) -> None:
    out = build_site(engine, settings, glossary, W48, tmp_path, now=NOW)
    html = (tmp_path / "email.html").read_text()
    text = (tmp_path / "email.txt").read_text()
    assert MARKER_RE.search(html) is None and MARKER_RE.search(text) is None
    assert MARKER_RE.search(out.record.html or "") is not None  # the stored mail keeps them
    for link in sample_markers(settings).values():
        if link.startswith("https://"):
            assert f'href="{link}"' in html and link in text
            token = link.rsplit("/", 1)[1]
            assert "sample" in token
            with pytest.raises(BadToken):
                verify_token(settings.verification_keys(), "unsubscribe", token)


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(settings_env, monkeypatch, make_terms):
    monkeypatch.setenv("DIGEST_TERMS_DIR", str(make_terms(small_terms())))
    return settings_env


def test_cli_issue_subject_prints_old_and_new_and_is_audited(
    cli_env, engine: Engine, tmp_path: Path
) -> None:
    missing = runner.invoke(app, ["issue", "subject", "2026-W48", "Too early"])
    assert missing.exit_code == 1 and "there is no issue for 2026-W48" in missing.output
    built = runner.invoke(app, ["build", "--week", "2026-W48", "--out", str(tmp_path / "site")])
    assert built.exit_code == 0, built.output
    old = get_issue(engine, W48)
    assert old is not None
    result = runner.invoke(
        app, ["issue", "subject", "2026-W48", "Fresh subject", "--preheader", "Fresh preview"]
    )
    assert result.exit_code == 0, result.output
    assert f"old subject: {old.subject}" in result.output
    assert "new subject: Fresh subject" in result.output
    assert "preheader: Fresh preview" in result.output
    [entry] = audit.recent(engine, action_prefix="issue.subject")
    assert entry.actor.startswith("cli:")
    shown = runner.invoke(app, ["issue", "subject", "2026-W48"])
    assert shown.exit_code == 0 and "subject: Fresh subject" in shown.output
    reset = runner.invoke(app, ["issue", "subject", "2026-W48", "--reset"])
    assert reset.exit_code == 0, reset.output
    assert f"new subject: {old.subject}" in reset.output
    bad = runner.invoke(app, ["issue", "subject", "2026-W48", "x" * 151])
    assert bad.exit_code == 1
    assert "subject: is 151 characters; at most 150 are allowed" in bad.output
    both = runner.invoke(app, ["issue", "subject", "2026-W48", "S", "--reset"])
    assert both.exit_code == 1 and "--reset" in both.output


def test_cli_preview_without_a_week_shows_the_next_issue_not_a_sent_one(
    cli_env, engine: Engine, monkeypatch
) -> None:
    settings = Settings()
    this = current_week(db.utcnow(), settings.zone)
    glossary = load_glossary(Path(cli_env["DIGEST_TERMS_DIR"]))
    opened: list[str] = []
    monkeypatch.setenv("BROWSER", "firefox")
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    first = runner.invoke(app, ["preview"])
    assert first.exit_code == 0, first.output
    assert f"previewing {this} (this week's issue)" in first.output
    for week in (this, this + 1):
        build_issue(engine, settings, glossary, week, now=NOW, news=[])
        transition(engine, week, "sending", now=NOW)
        transition(engine, week, "sent", now=NOW)
    result = runner.invoke(app, ["preview"])
    assert result.exit_code == 0, result.output
    assert f"previewing {this + 2} (the next issue; {this} was sent)" in result.output
    assert f"{this + 2}: " in result.output
    assert f"digest-preview-{this + 2}-" in opened[-1]
    assert MARKER_RE.search(Path(opened[-1].removeprefix("file://")).read_text()) is None
