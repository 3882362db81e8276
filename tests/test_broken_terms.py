"""A broken term never stops the newsletter: every command and the weekly job use the valid
terms with a warning naming each error; a broken queued or pinned term is passed over, saying
why, and stays queued until it is fixed. `digest terms validate` still fails."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from digest.campaign.lifecycle import prepare
from digest.campaign.plan import coming_weeks, glossary_health, usable_glossary
from digest.campaign.status import gather_status
from digest.cli import app
from digest.config import get_settings
from digest.core.selection import pick_featured
from digest.model.queue import QueueEntry
from digest.model.weeks import IsoWeek
from digest.store import db
from digest.store.queue import add_to_queue, list_queue
from digest.store.terms import read_glossary
from tests.conftest import STARTER_TERMS, term_text
from tests.test_render import settings_for

W = IsoWeek(2026, 50)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
runner = CliRunner()
BROKEN = "summary: String should have at least 1 character"


def break_summary(folder: Path, slug: str) -> str:
    """Empty `slug`'s summary; return the error as the loader words it."""
    path = folder / f"{slug}.md"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("summary:"))
    lines[at] = 'summary: ""\n'
    path.write_text("".join(lines), encoding="utf-8")
    return f"{path}:{at + 1}: {BROKEN}"


@pytest.fixture
def small(make_terms) -> Path:
    return make_terms(
        {
            "alpha": term_text("Alpha", related=["beta"]),
            "beta": term_text("Beta", related=["alpha", "gamma"], category="Data"),
            "gamma": term_text("Gamma", related=["beta"], category="Text"),
        }
    )


# --------------------------------------------------------------------------- selection


def test_a_broken_queued_term_is_passed_over_saying_why(small):
    error = break_summary(small, "alpha")
    glossary, _errors = read_glossary(small)
    queue = [QueueEntry("alpha", None, None, 1), QueueEntry("gamma", None, "editors", 2)]
    pick = pick_featured(glossary, [], queue, W)
    assert (pick.slug, pick.source) == ("gamma", "queue")
    assert pick.note == f"queued term alpha left out: {error}; editors"


def test_a_broken_pinned_term_falls_back_to_the_rotation_saying_why(small):
    error = break_summary(small, "gamma")
    glossary, _errors = read_glossary(small)
    pick = pick_featured(glossary, [], [QueueEntry("gamma", W, None, 1)], W)
    assert pick.source == "rotation" and pick.slug in {"alpha", "beta"}
    assert pick.note == f"pinned term gamma left out: {error}"


def test_the_build_leaves_the_broken_term_queued_so_it_goes_out_once_fixed(engine, small):
    settings = settings_for(terms_dir=small)
    good = (small / "alpha.md").read_text(encoding="utf-8")
    error = break_summary(small, "alpha")
    glossary, _errors = usable_glossary(settings)
    add_to_queue(engine, glossary, "beta", history=[], now=NOW)
    with engine.begin() as conn:  # queued while it was valid
        conn.execute(db.queue.insert().values(slug="alpha", position=0, created_at=NOW))
    issue = prepare(engine, settings, W, now=NOW).issue
    assert (issue.featured_slug, issue.pick_source) == ("beta", "queue")
    assert issue.snapshot is not None
    assert issue.snapshot["pick"]["note"] == f"queued term alpha left out: {error}"
    assert [e.slug for e in list_queue(engine)] == ["alpha"]
    (small / "alpha.md").write_text(good, encoding="utf-8")
    fixed = prepare(engine, settings, W + 1, now=NOW).issue
    assert (fixed.featured_slug, fixed.pick_source) == ("alpha", "queue")
    assert list_queue(engine) == []


def test_the_weekly_jobs_glossary_logs_each_left_out_term(small, caplog):
    error = break_summary(small, "beta")
    caplog.set_level(logging.WARNING, logger="digest")
    glossary, errors = usable_glossary(settings_for(terms_dir=small))
    assert glossary.slugs == ["alpha", "gamma"]
    assert [str(e) for e in errors] == [error]
    logged = [r for r in caplog.records if r.getMessage() == "term_left_out"]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    health = glossary_health(settings_for(terms_dir=small))
    assert (health.terms, [str(e) for e in health.errors], health.ok) == (2, [error], False)


def test_the_plan_and_status_use_the_valid_terms_and_show_the_errors(engine, small):
    error = break_summary(small, "alpha")
    settings = settings_for(terms_dir=small)
    glossary, _errors = usable_glossary(settings)
    rows = coming_weeks(engine, settings, glossary, start=W, weeks=2, now=NOW)
    assert {r.slug for r in rows} == {"beta", "gamma"}
    report = gather_status(engine, settings, NOW)
    assert report.glossary.terms == 2 and [str(e) for e in report.glossary.errors] == [error]
    assert report.next_issue is not None and report.next_issue.planned.slug in {"beta", "gamma"}


# --------------------------------------------------------------------------- the commands


@pytest.fixture
def starter_with_one_broken(settings_env, tmp_path, monkeypatch) -> tuple[Path, str]:
    folder = tmp_path / "terms"
    shutil.copytree(STARTER_TERMS, folder)
    error = break_summary(folder, "rag")
    monkeypatch.setenv("DIGEST_TERMS_DIR", str(folder))
    get_settings.cache_clear()
    return folder, error


def test_every_command_works_with_the_valid_terms_and_warns_of_each_error(
    starter_with_one_broken, tmp_path
):
    _folder, error = starter_with_one_broken
    commands = [
        ["plan", "--weeks", "3"],
        ["terms", "list"],
        ["terms", "show", "attention"],
        ["queue", "list"],
        ["send", "--dry-run"],  # builds this week's issue first: the glossary is read
        ["build", "--week", "2026-W50", "--out", str(tmp_path / "out")],
    ]
    for args in commands:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert f"warning: {error}" in result.stderr, args
    assert "rag" not in runner.invoke(app, ["plan", "--weeks", "60"]).stdout.split()


def test_show_names_the_errors_of_a_term_left_out(starter_with_one_broken):
    _folder, error = starter_with_one_broken
    result = runner.invoke(app, ["terms", "show", "rag"])
    assert result.exit_code == 1
    assert f"'rag' is left out of the glossary: {error}" in " ".join(result.stderr.split("\n"))


def test_validate_still_fails_on_the_broken_term(starter_with_one_broken):
    folder, error = starter_with_one_broken
    result = runner.invoke(app, ["terms", "validate", str(folder)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [error, "1 error in 1 file"]


def test_status_reports_the_glossarys_health(starter_with_one_broken):
    _folder, error = starter_with_one_broken
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    at = next(i for i, line in enumerate(lines) if line.startswith("glossary "))
    assert lines[at].endswith("terms, 1 error")
    assert "".join(lines[at + 1 :]).replace(" ", "") == error.replace(" ", "")
    assert any(line.startswith("next issue ") for line in lines)
