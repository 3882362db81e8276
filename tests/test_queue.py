"""The editors' queue, stored for real (SQLite file and PostgreSQL), and `digest queue …`."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select, update
from typer.testing import CliRunner

from digest.cli import app
from digest.core.selection import Pick, pick_featured, plan
from digest.model.glossary import Glossary
from digest.model.queue import QueueEntry
from digest.model.weeks import IsoWeek
from digest.store import db
from digest.store.issues import save_built
from digest.store.queue import (
    AlreadyFeatured,
    QueueError,
    add_to_queue,
    consume,
    list_queue,
    move_in_queue,
    remove_from_queue,
)
from digest.store.terms import load_glossary
from tests.conftest import term_text

W = IsoWeek(2026, 10)
runner = CliRunner()


@pytest.fixture
def glossary(make_terms) -> Glossary:
    return load_glossary(
        make_terms(
            {
                "attention": term_text("Attention", related=["embedding"]),
                "embedding": term_text("Embedding", aliases="[{name: inbedding, lang: nl}]"),
                "tokenization": term_text("Tokenization", category="Text"),
                "transformer": term_text("Transformer", related=["attention"]),
                "dataset": term_text("Dataset", category="Data"),
            }
        )
    )


def queued(engine: Engine) -> list[tuple[int, str]]:
    return [(e.position, e.slug) for e in list_queue(engine)]


def fill(engine: Engine, glossary: Glossary, *slugs: str) -> None:
    for slug in slugs:
        add_to_queue(engine, glossary, slug, history=[], now=db.utcnow())


def built_issue(engine: Engine, week: IsoWeek, slug: str) -> None:
    save_built(
        engine,
        week=week,
        featured_slug=slug,
        related_slugs=[],
        pick_source="rotation",
        subject=f"Term of the week: {slug}",
        preheader="",
        html="<p>x</p>",
        text="x",
        archive_html="<p>x</p>",
        snapshot={},
        now=db.utcnow(),
    )


# --------------------------------------------------------------------------- adding


def test_terms_are_queued_in_the_order_added(engine, glossary):
    first = add_to_queue(
        engine, glossary, "attention", note="for the launch", history=[], now=db.utcnow()
    )
    assert first == QueueEntry("attention", None, "for the launch", 1)
    fill(engine, glossary, "dataset", "embedding")
    assert queued(engine) == [(1, "attention"), (2, "dataset"), (3, "embedding")]


def test_a_title_or_alias_is_accepted_and_stored_as_the_slug(engine, glossary):
    assert (
        add_to_queue(engine, glossary, "Inbedding", history=[], now=db.utcnow()).slug == "embedding"
    )
    assert (
        add_to_queue(engine, glossary, "TRANSFORMER", history=[], now=db.utcnow()).slug
        == "transformer"
    )


def test_an_unknown_term_is_refused_with_a_suggestion(engine, glossary):
    with pytest.raises(
        QueueError, match=r"^no term 'atention' in the glossary; did you mean 'attention'\?$"
    ):
        add_to_queue(engine, glossary, "atention", history=[], now=db.utcnow())
    with pytest.raises(QueueError, match=r"^no term 'quantum' in the glossary$"):
        add_to_queue(engine, glossary, "quantum", history=[], now=db.utcnow())
    assert list_queue(engine) == []


def test_a_term_already_featured_needs_force(engine, glossary):
    history = [(W - 5, "dataset"), (W - 1, "attention")]
    with pytest.raises(
        AlreadyFeatured, match=r"'attention' was already featured in 2026-W09"
    ) as exc:
        add_to_queue(engine, glossary, "attention", history=history, now=db.utcnow())
    assert isinstance(exc.value, QueueError)
    assert list_queue(engine) == []
    entry = add_to_queue(
        engine, glossary, "attention", history=history, force=True, now=db.utcnow()
    )
    assert entry.position == 1


def test_featured_terms_are_read_from_the_issues_table_when_history_is_not_given(engine, glossary):
    built_issue(engine, W, "embedding")
    with pytest.raises(AlreadyFeatured, match="already featured in 2026-W10"):
        add_to_queue(engine, glossary, "embedding", now=db.utcnow())
    assert add_to_queue(engine, glossary, "dataset", now=db.utcnow()).slug == "dataset"


def test_a_term_cannot_be_queued_twice(engine, glossary):
    fill(engine, glossary, "dataset", "attention")
    with pytest.raises(QueueError, match="'attention' is already in the queue at position 2"):
        add_to_queue(engine, glossary, "Attention", history=[], now=db.utcnow())
    assert queued(engine) == [(1, "dataset"), (2, "attention")]


def test_two_pins_for_the_same_week_are_refused(engine, glossary):
    add_to_queue(engine, glossary, "attention", week=W, history=[], now=db.utcnow())
    with pytest.raises(QueueError, match="2026-W10 is already pinned to 'attention'"):
        add_to_queue(engine, glossary, "dataset", week=W, history=[], now=db.utcnow())
    pinned = add_to_queue(engine, glossary, "dataset", week=W + 1, history=[], now=db.utcnow())
    assert pinned == QueueEntry("dataset", W + 1, None, 2)


def test_a_pin_to_a_week_already_past_is_refused(engine, glossary):
    with pytest.raises(QueueError, match=r"2026-W09 is in the past \(this week is 2026-W10\)"):
        add_to_queue(
            engine, glossary, "dataset", week=W - 1, this_week=W, history=[], now=db.utcnow()
        )
    assert (
        add_to_queue(
            engine, glossary, "dataset", week=W, this_week=W, history=[], now=db.utcnow()
        ).week
        == W
    )


def test_a_note_is_kept_on_one_line_and_limited_in_length(engine, glossary):
    entry = add_to_queue(
        engine, glossary, "dataset", note="  two\n lines\tof  it ", history=[], now=db.utcnow()
    )
    assert entry.note == "two lines of it"
    assert (
        add_to_queue(engine, glossary, "attention", note="   ", history=[], now=db.utcnow()).note
        is None
    )
    with pytest.raises(QueueError, match="note is 501 characters; keep it under 500"):
        add_to_queue(engine, glossary, "embedding", note="x" * 501, history=[], now=db.utcnow())


# --------------------------------------------------------------------------- remove, move, consume


def test_removing_an_entry_closes_the_gap(engine, glossary):
    fill(engine, glossary, "attention", "dataset", "embedding", "transformer")
    removed = remove_from_queue(engine, "dataset")
    assert removed == QueueEntry("dataset", None, None, 2)
    assert queued(engine) == [(1, "attention"), (2, "embedding"), (3, "transformer")]


def test_removing_a_term_not_queued_says_so(engine, glossary):
    fill(engine, glossary, "embedding")
    with pytest.raises(
        QueueError, match=r"'embeding' is not in the queue; did you mean 'embedding'\?"
    ):
        remove_from_queue(engine, "embeding")


def test_an_entry_for_a_term_since_deleted_from_the_glossary_can_still_be_removed(
    engine, glossary, make_terms
):
    fill(engine, glossary, "attention", "dataset")
    smaller = load_glossary(make_terms({"attention": term_text("Attention")}))
    assert pick_featured(smaller, [], list_queue(engine), W) == Pick(W, "attention", "queue")
    remove_from_queue(engine, "attention")
    assert pick_featured(smaller, [], list_queue(engine), W).source == "rotation"
    remove_from_queue(engine, "dataset")
    assert list_queue(engine) == []


@pytest.mark.parametrize(
    ("slug", "to", "order"),
    [
        ("transformer", 1, ["transformer", "attention", "dataset", "embedding"]),
        ("attention", 3, ["dataset", "embedding", "attention", "transformer"]),
        ("dataset", 2, ["attention", "dataset", "embedding", "transformer"]),
        ("attention", 4, ["dataset", "embedding", "transformer", "attention"]),
    ],
)
def test_moving_an_entry_shifts_the_ones_in_between(engine, glossary, slug, to, order):
    fill(engine, glossary, "attention", "dataset", "embedding", "transformer")
    assert move_in_queue(engine, slug, to).position == to
    assert queued(engine) == list(enumerate(order, start=1))


def test_moving_outside_the_queue_is_refused(engine, glossary):
    fill(engine, glossary, "attention", "dataset")
    for to in (0, 3, -1):
        with pytest.raises(QueueError, match=rf"position must be between 1 and 2 \(got {to}\)"):
            move_in_queue(engine, "dataset", to)
    with pytest.raises(QueueError, match="'embedding' is not in the queue"):
        move_in_queue(engine, "embedding", 1)
    assert queued(engine) == [(1, "attention"), (2, "dataset")]


def test_consume_removes_a_used_entry_and_is_safe_to_repeat(engine, glossary):
    fill(engine, glossary, "attention", "dataset", "embedding")
    assert consume(engine, "dataset") is True
    assert consume(engine, "dataset") is False
    assert queued(engine) == [(1, "attention"), (2, "embedding")]


def test_consume_on_the_builds_connection_rolls_back_with_it(engine, glossary):
    fill(engine, glossary, "attention", "dataset")
    with pytest.raises(RuntimeError), engine.begin() as conn:
        assert consume(conn, "attention") is True
        assert [e.slug for e in list_queue(conn)] == ["dataset"]
        raise RuntimeError("the build failed after picking")
    assert queued(engine) == [(1, "attention"), (2, "dataset")]


def test_positions_left_out_of_order_are_made_dense_by_the_next_change(engine, glossary):
    # Two editors adding at the same moment can both take the same next position.
    fill(engine, glossary, "attention", "dataset", "embedding")
    with engine.begin() as conn:
        conn.execute(update(db.queue).where(db.queue.c.slug == "embedding").values(position=2))
    assert [e.slug for e in list_queue(engine)] == ["attention", "dataset", "embedding"]
    add_to_queue(engine, glossary, "transformer", history=[], now=db.utcnow())
    assert queued(engine) == [
        (1, "attention"),
        (2, "dataset"),
        (3, "embedding"),
        (4, "transformer"),
    ]
    with engine.connect() as conn:
        assert sorted(conn.execute(select(db.queue.c.position)).scalars()) == [1, 2, 3, 4]


# --------------------------------------------------------------------------- selection reads it


def test_the_stored_queue_drives_the_picks(engine, glossary):
    add_to_queue(
        engine, glossary, "embedding", week=W + 1, note="pinned", history=[], now=db.utcnow()
    )
    fill(engine, glossary, "dataset", "transformer")
    move_in_queue(engine, "transformer", 1)
    picks = plan(glossary, [], list_queue(engine), W, 3)
    assert picks == [
        Pick(W, "transformer", "queue"),
        Pick(W + 1, "embedding", "pin", "pinned"),
        Pick(W + 2, "dataset", "queue"),
    ]


# --------------------------------------------------------------------------- digest queue …


def run(*args: str):
    return runner.invoke(app, list(args))


def test_queue_commands_as_an_editor_uses_them(settings_env):
    assert run("queue", "list").output == "the queue is empty\n"
    result = run("queue", "add", "attention", "--note", "[b]for the launch[/b]")
    assert result.exit_code == 0, result.output
    assert result.output == "queued attention at position 1\n"
    result = run("queue", "add", "rag", "--week", "2099-W05")
    assert result.output == "queued rag at position 2, pinned to 2099-W05\n"
    assert run("queue", "add", "tokenization").exit_code == 0

    assert run("queue", "move", "tokenization", "--to", "1").output == (
        "moved tokenization to position 1\n"
    )
    lines = run("queue", "list").output.splitlines()
    assert lines[0].split() == ["#", "slug", "title", "pinned", "note"]
    assert lines[1].split()[:2] == ["1", "tokenization"]
    assert lines[2].split()[:2] == ["2", "attention"]
    assert lines[2].rstrip().endswith("[b]for the launch[/b]")  # shown as typed, not as markup
    assert lines[3].split()[:2] == ["3", "rag"] and "2099-W05" in lines[3]

    assert run("queue", "remove", "attention").output == "removed attention from the queue\n"
    assert [line.split()[1] for line in run("queue", "list").output.splitlines()[1:]] == [
        "tokenization",
        "rag",
    ]


def test_queue_add_explains_what_is_wrong(settings_env):
    result = run("queue", "add", "atention")
    assert result.exit_code == 1
    assert "error: no term 'atention' in the glossary; did you mean 'attention'?" in result.stderr
    result = run("queue", "add", "attention", "--week", "2026-W99")
    assert result.exit_code == 1
    assert "--week 2026-W99 does not exist: 2026 has no week 99" in result.stderr
    result = run("queue", "add", "attention", "--week", "2001-W01")
    assert result.exit_code == 1
    assert "2001-W01 is in the past (this week is " in result.stderr
    assert run("queue", "list").output == "the queue is empty\n"


def test_queueing_a_term_featured_before_warns_and_needs_force(settings_env):
    engine = db.make_engine(settings_env["DIGEST_DATABASE_URL"])
    db.upgrade(engine)
    built_issue(engine, W, "attention")
    engine.dispose()
    result = run("queue", "add", "attention")
    assert result.exit_code == 1
    assert result.stderr == (
        "warning: 'attention' was already featured in 2026-W10; add --force to queue it again\n"
    )
    assert run("queue", "list").output == "the queue is empty\n"
    result = run("queue", "add", "attention", "--force")
    assert result.exit_code == 0, result.output
    assert result.output == "queued attention at position 1\n"


def test_queue_remove_and_move_refuse_what_they_cannot_do(settings_env):
    run("queue", "add", "attention")
    result = run("queue", "remove", "atention")
    assert result.exit_code == 1
    assert "error: 'atention' is not in the queue; did you mean 'attention'?" in result.stderr
    result = run("queue", "move", "attention", "--to", "2")
    assert result.exit_code == 1
    assert "error: position must be between 1 and 1 (got 2)" in result.stderr


def test_queue_list_flags_missed_pins_and_terms_gone_from_the_glossary(settings_env):
    engine = db.make_engine(settings_env["DIGEST_DATABASE_URL"])
    db.upgrade(engine)
    with engine.begin() as conn:  # written directly: the CLI refuses both on the way in
        conn.execute(
            db.queue.insert(),
            [
                {"slug": "retired-term", "week": None, "position": 1, "created_at": db.utcnow()},
                {"slug": "rag", "week": "2001-W01", "position": 2, "created_at": db.utcnow()},
            ],
        )
    engine.dispose()
    lines = run("queue", "list").output.splitlines()
    assert lines[0].split() == ["#", "slug", "title", "pinned"]
    assert " ".join(lines[1].split()) == "1 retired-term (gone from the glossary: skipped)"
    assert (
        " ".join(lines[2].split()) == "2 rag Retrieval-Augmented Generation (RAG) 2001-W01 (missed)"
    )
