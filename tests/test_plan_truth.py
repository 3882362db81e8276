"""The coming weeks as one truth: `coming_weeks` (plan, queue list, status) against real builds,
and `queue pin`."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select, update
from typer.testing import CliRunner

from digest.campaign.build import build_issue
from digest.campaign.plan import coming_weeks, next_issue_week
from digest.campaign.status import gather_status
from digest.cli import app
from digest.config import Settings
from digest.model.glossary import Glossary
from digest.model.weeks import IsoWeek, current_week
from digest.store import db
from digest.store.issues import get_issue, transition
from digest.store.queue import AlreadyFeatured, QueueError, add_to_queue, list_queue, pin
from digest.store.terms import load_glossary
from tests.conftest import term_text
from tests.test_render import settings_for

W49 = IsoWeek(2026, 49)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # a Tuesday in 2026-W49
runner = CliRunner()

_SPEC = {  # slug: (category, related)
    "attention": ("Architecture", ["transformer"]),
    "transformer": ("Architecture", ["attention", "encoder-decoder"]),
    "encoder-decoder": ("Architecture", ["transformer"]),
    "embedding": ("Representation", ["semantic-search"]),
    "semantic-search": ("Applications", ["embedding", "fine-tuning"]),
    "fine-tuning": ("Training", ["semantic-search", "dataset"]),
    "dataset": ("Data", ["fine-tuning"]),
    "tokenization": ("Text", ["embedding"]),
}


@pytest.fixture
def settings() -> Settings:
    return settings_for()


@pytest.fixture
def glossary(make_terms) -> Glossary:
    files = {
        slug: term_text(slug.replace("-", " ").title(), category=cat, related=rel)
        for slug, (cat, rel) in _SPEC.items()
    }
    return load_glossary(make_terms(files))


def build(engine: Engine, settings: Settings, glossary: Glossary, week: IsoWeek):
    return build_issue(engine, settings, glossary, week, now=NOW, news=[])


def send_by_hand(engine: Engine, week: IsoWeek) -> None:
    transition(engine, week, "sending", now=NOW)
    transition(engine, week, "sent", now=NOW)


def plan_of(engine, settings, glossary, start, weeks):
    rows = coming_weeks(engine, settings, glossary, start=start, weeks=weeks, now=NOW)
    return [(r.week, r.slug, r.source, r.state) for r in rows]


# --------------------------------------------------------------------------- the reported bug


def test_plan_from_a_sent_week_shows_the_built_issue_and_agrees_with_the_build(
    engine, settings, glossary
):
    build(engine, settings, glossary, W49)
    send_by_hand(engine, W49)
    add_to_queue(engine, glossary, "semantic-search", history=[], now=NOW)
    built = build(engine, settings, glossary, W49 + 1)
    assert (built.featured_slug, built.pick_source) == ("semantic-search", "queue")
    assert list_queue(engine) == []  # consumed by the build

    from_w49 = plan_of(engine, settings, glossary, W49, 3)
    plain = plan_of(engine, settings, glossary, None, 2)
    assert from_w49[0][1:] == (get_issue(engine, W49).featured_slug, "rotation", "sent")
    assert from_w49[1] == (W49 + 1, "semantic-search", "queue", "built")
    assert plain == from_w49[1:]  # plain plan starts at the next issue: the built one
    next_one = build(engine, settings, glossary, W49 + 2)
    assert from_w49[2][:3] == (W49 + 2, next_one.featured_slug, next_one.pick_source)


# --------------------------------------------------------------------------- property


@pytest.mark.parametrize("seed", range(4))
def test_the_plan_from_any_start_is_what_building_each_week_in_turn_gives(
    engine, settings, glossary, seed
):
    rng = random.Random(seed)
    slugs = sorted(_SPEC)
    start = W49 + rng.randrange(0, 3)
    # Some weeks already built (one ahead of the others, one sent), a queue and a pin.
    for offset in sorted(rng.sample(range(0, 5), 2)):
        build(engine, settings, glossary, W49 + offset)
    if get_issue(engine, W49) is not None:
        send_by_hand(engine, W49)
    featured = {i for w in range(6) if (i := _featured(engine, W49 + w))}
    free = [s for s in slugs if s not in featured]
    rng.shuffle(free)
    add_to_queue(engine, glossary, free[0], history=[], now=NOW, note="from the editors")
    add_to_queue(engine, glossary, free[1], history=[], now=NOW)
    pin_week = W49 + rng.randrange(0, 6)
    if get_issue(engine, pin_week) is None:
        add_to_queue(engine, glossary, free[2], week=pin_week, history=[], now=NOW)

    planned = plan_of(engine, settings, glossary, start, 5)
    got = []
    for offset in range(5):
        issue = build(engine, settings, glossary, start + offset)
        got.append((issue.week, issue.featured_slug, issue.pick_source))
    assert [p[:3] for p in planned] == got
    # …and once built, the plan shows the same weeks as what they now are.
    assert [p[:3] for p in plan_of(engine, settings, glossary, start, 5)] == got


def _featured(engine: Engine, week: IsoWeek) -> str | None:
    issue = get_issue(engine, week)
    return issue.featured_slug if issue else None


# --------------------------------------------------------------------------- states


def test_approved_and_held_issues_are_shown_as_what_they_are(engine, settings, glossary):
    build(engine, settings, glossary, W49)
    build(engine, settings, glossary, W49 + 1)
    with engine.begin() as conn:
        conn.execute(
            update(db.issues)
            .where(db.issues.c.week == str(W49))
            .values(approved_at=NOW, approved_by="ed@example.org")
        )
    transition(engine, W49 + 1, "held", "not approved by its send time", now=NOW)
    states = [r[3] for r in plan_of(engine, settings, glossary, W49, 3)]
    assert states == ["approved", "held", "pick"]


def test_an_issue_that_failed_before_it_was_built_keeps_its_term_unless_the_week_is_pinned_since(
    engine, settings, glossary
):
    build(engine, settings, glossary, W49)
    kept = get_issue(engine, W49).featured_slug
    with engine.begin() as conn:  # as a build that broke leaves it: no content
        conn.execute(
            update(db.issues)
            .where(db.issues.c.week == str(W49))
            .values(status="failed", html=None, text=None, archive_html=None)
        )
    assert plan_of(engine, settings, glossary, W49, 1) == [(W49, kept, "rotation", "failed")]
    other = next(s for s in _SPEC if s != kept)
    add_to_queue(engine, glossary, other, week=W49, history=[], now=NOW)
    assert plan_of(engine, settings, glossary, W49, 1) == [(W49, other, "pin", "failed")]
    rebuilt = build(engine, settings, glossary, W49)
    assert (rebuilt.featured_slug, rebuilt.pick_source) == (other, "pin")


def test_the_next_issue_is_this_weeks_until_it_is_sent(engine, settings, glossary):
    assert next_issue_week(settings, [], NOW) == current_week(NOW, settings.zone) + 1  # Mon passed
    build(engine, settings, glossary, W49)
    issue = get_issue(engine, W49)
    assert next_issue_week(settings, [issue], NOW) == W49
    send_by_hand(engine, W49)
    assert next_issue_week(settings, [get_issue(engine, W49)], NOW) == W49 + 1


def test_status_shows_the_next_issue_not_only_this_weeks_sent_one(engine, settings, glossary):
    settings = settings.model_copy(update={"terms_dir": next(iter(glossary)).path.parent})
    build(engine, settings, glossary, W49)
    send_by_hand(engine, W49)
    add_to_queue(engine, glossary, "dataset", history=[], now=NOW)
    build(engine, settings, glossary, W49 + 1)
    report = gather_status(engine, settings, NOW)
    assert report.issue is not None and report.issue.issue.week == W49
    assert report.next_issue is not None
    row = report.next_issue.planned
    assert (row.week, row.slug, row.source, row.state) == (W49 + 1, "dataset", "queue", "built")
    assert report.next_issue.send_at is not None
    assert current_week(report.next_issue.send_at, settings.zone) == W49 + 1
    assert (report.glossary.terms, report.glossary.errors) == (len(_SPEC), [])


# --------------------------------------------------------------------------- queue pin


def test_pinning_a_queued_term_keeps_its_place_and_note(engine, glossary):
    add_to_queue(engine, glossary, "dataset", history=[], now=NOW)
    add_to_queue(engine, glossary, "embedding", note="for the launch", history=[], now=NOW)
    entry = pin(engine, glossary, "Embedding", W49 + 2, this_week=W49)
    assert (entry.slug, entry.week, entry.note, entry.position) == (
        "embedding",
        W49 + 2,
        "for the launch",
        2,
    )
    assert [(e.slug, e.week) for e in list_queue(engine)] == [
        ("dataset", None),
        ("embedding", W49 + 2),
    ]


def test_pinning_a_term_not_queued_adds_it_pinned(engine, glossary):
    entry = pin(engine, glossary, "tokenization", W49 + 1, this_week=W49, now=NOW)
    assert (entry.slug, entry.week, entry.position) == ("tokenization", W49 + 1, 1)


def test_a_pin_is_refused_where_it_could_never_be_used(engine, settings, glossary):
    built = build(engine, settings, glossary, W49 + 1)
    other = next(s for s in _SPEC if s != built.featured_slug)
    with pytest.raises(QueueError, match=r"^2026-W50 already has an issue \(built\) featuring "):
        pin(engine, glossary, other, W49 + 1, this_week=W49)
    with pytest.raises(QueueError, match=r"^2026-W48 is in the past \(this week is 2026-W49\)$"):
        pin(engine, glossary, other, W49 - 1, this_week=W49)
    with pytest.raises(QueueError, match=r"did you mean 'embedding'\?$"):
        pin(engine, glossary, "embeding", W49 + 3, this_week=W49)
    pin(engine, glossary, other, W49 + 3, this_week=W49, now=NOW)
    third = next(s for s in _SPEC if s not in (other, built.featured_slug))
    with pytest.raises(QueueError, match=rf"^2026-W52 is already pinned to '{other}'$"):
        pin(engine, glossary, third, W49 + 3, this_week=W49, now=NOW)
    with pytest.raises(AlreadyFeatured):
        pin(engine, glossary, built.featured_slug, W49 + 4, this_week=W49, now=NOW)
    assert [(e.slug, e.week) for e in list_queue(engine)] == [(other, W49 + 3)]


def run(*args: str):
    return runner.invoke(app, list(args))


def test_queue_pin_and_list_on_the_command_line_are_audited(settings_env):
    this_week = current_week(db.utcnow(), get_settings_zone())
    later = this_week + 3
    assert run("queue", "add", "attention", "--note", "launch").exit_code == 0
    result = run("queue", "pin", "attention", "--week", str(later))
    assert result.exit_code == 0, result.output
    assert result.output == f"pinned attention to {later} (position 1)\n"
    assert run("queue", "pin", "rag", "--week", str(later + 1)).exit_code == 0
    assert run("queue", "move", "rag", "--to", "1").exit_code == 0
    assert run("queue", "remove", "rag").exit_code == 0
    refused = run("queue", "pin", "atention", "--week", str(later))
    assert refused.exit_code == 1
    assert "did you mean 'attention'?" in refused.stderr
    engine = db.make_engine(settings_env["DIGEST_DATABASE_URL"])
    with engine.connect() as conn:
        logged = conn.execute(
            select(db.audit_log.c.action, db.audit_log.c.target, db.audit_log.c.actor).order_by(
                db.audit_log.c.id
            )
        ).all()
    engine.dispose()
    assert [(a, t) for a, t, _ in logged] == [
        ("queue.add", "attention"),
        ("queue.pin", "attention"),
        ("queue.pin", "rag"),
        ("queue.move", "rag"),
        ("queue.remove", "rag"),
    ]
    assert all(actor.startswith("cli:") for _, _, actor in logged)


def test_queue_list_shows_the_coming_built_issues_next_to_the_queue(settings_env):
    from digest.config import get_settings

    conf = get_settings()
    this_week = current_week(db.utcnow(), conf.zone)
    engine = db.make_engine(settings_env["DIGEST_DATABASE_URL"])
    db.upgrade(engine)
    starter = load_glossary(conf.terms_dir)
    add_to_queue(engine, starter, "rag", history=[], now=db.utcnow())
    build_issue(engine, conf, starter, this_week + 1, now=db.utcnow(), news=[])
    add_to_queue(engine, starter, "attention", history=[], now=db.utcnow())
    engine.dispose()
    lines = [" ".join(line.split()) for line in run("queue", "list").output.splitlines()]
    assert lines[0] == "built (coming issues: out of the queue already)"
    assert lines[2].startswith(f"{this_week + 1} rag Retrieval-Augmented Generation (RAG) built")
    assert lines[3] == "queue"
    assert lines[5].startswith("1 attention")
    plan = [" ".join(line.split()) for line in run("plan", "--weeks", "3").output.splitlines()]
    assert any(line.startswith(f"{this_week + 1} rag ") and " built" in line for line in plan)


def get_settings_zone():
    from digest.config import get_settings

    return get_settings().zone
