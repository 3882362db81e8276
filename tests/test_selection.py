"""Selection: pins, the queue head, the rotation's rules, planning and related concepts."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from digest.cli import app
from digest.core.selection import (
    Pick,
    first_open_week,
    pick_featured,
    plan,
    related_concepts,
)
from digest.model.glossary import Glossary, Section, Source, Term
from digest.model.queue import QueueEntry
from digest.model.weeks import IsoWeek
from digest.store import db
from digest.store.issues import featured_history, list_issues
from digest.store.queue import add_to_queue, list_queue
from digest.store.terms import load_glossary
from tests.conftest import REPO, term_text

W = IsoWeek(2026, 10)
MakeTerms = Callable[[dict[str, str]], Path]
runner = CliRunner()


def sections(how: str) -> str:
    return f"## Why it matters\n\nIt matters.\n\n## How it works\n\n{how}\n\n## Example\n\nSee above.\n"


def glossary_of(make_terms: MakeTerms, spec: dict[str, tuple[str, str, list[str]]]) -> Glossary:
    """A real glossary from {slug: (category, difficulty, related)}; titles come from slugs."""
    files = {
        slug: term_text(
            slug.replace("-", " ").title(),
            category=category,
            difficulty=difficulty,
            related=related,
            body=sections("Plain words only."),
        )
        for slug, (category, difficulty, related) in spec.items()
    }
    return load_glossary(make_terms(files))


def slugs(picks: Sequence[Pick]) -> list[str]:
    return [p.slug for p in picks]


def back_to_back(glossary: Glossary, picks: Sequence[Pick]) -> int:
    cats = [glossary[p.slug].category for p in picks]
    return sum(a == b for a, b in itertools.pairwise(cats))


@pytest.fixture
def five(make_terms: MakeTerms) -> Glossary:
    return glossary_of(
        make_terms,
        {
            "apple": ("Fruit", "beginner", []),
            "banana": ("Fruit", "beginner", []),
            "carrot": ("Vegetable", "beginner", []),
            "daikon": ("Vegetable", "intermediate", []),
            "endive": ("Leaf", "advanced", []),
        },
    )


# --------------------------------------------------------------------------- pins and the queue


def test_pin_for_the_week_wins_over_the_queue_head(five):
    queue = [
        QueueEntry("apple", None, "head of the queue", 1),
        QueueEntry("carrot", W, "launch week", 2),
    ]
    assert pick_featured(five, [], queue, W) == Pick(W, "carrot", "pin", "launch week")


def test_pin_for_a_later_week_is_neither_used_now_nor_taken_early_by_the_rotation(five):
    queue = [QueueEntry("endive", W + 3, None, 1)]
    picks = plan(five, [], queue, W, 5)
    assert [p.slug for p in picks[:3]].count("endive") == 0
    assert picks[3] == Pick(W + 3, "endive", "pin")
    assert sorted(slugs(picks)) == sorted(five.slugs)


def test_queue_head_is_the_lowest_position_not_the_order_given(five):
    queue = [QueueEntry("banana", None, None, 2), QueueEntry("daikon", None, "first", 1)]
    assert pick_featured(five, [], queue, W) == Pick(W, "daikon", "queue", "first")


def test_a_missed_pin_waits_its_turn_in_queue_order(five):
    queue = [
        QueueEntry("banana", None, None, 1),
        QueueEntry("carrot", W - 2, "was for an earlier week", 2),
    ]
    picks = plan(five, [], queue, W, 2)
    assert picks == [
        Pick(W, "banana", "queue"),
        Pick(W + 1, "carrot", "queue", "was for an earlier week"),
    ]


def test_queue_entries_for_terms_no_longer_in_the_glossary_are_skipped(five):
    queue = [QueueEntry("removed-term", W, None, 1), QueueEntry("gone", None, None, 2)]
    pick = pick_featured(five, [], queue, W)
    assert pick.source == "rotation"
    assert pick.slug in five


def test_an_empty_glossary_is_a_clear_error():
    with pytest.raises(ValueError, match="the glossary is empty"):
        pick_featured(Glossary([]), [], [], W)


# --------------------------------------------------------------------------- rotation


def test_every_term_is_featured_once_before_any_repeats_then_a_new_cycle_starts(five):
    picks = slugs(plan(five, [], [], W, 15))
    for start in (0, 5, 10):
        assert sorted(picks[start : start + 5]) == five.slugs
    assert picks[5] != picks[4]


def test_across_cycles_a_term_never_returns_within_half_a_glossary_of_weeks(make_terms):
    spec = {f"term-{c}{i}": (f"Cat {c}", "beginner", []) for c in "abc" for i in range(4)}
    glossary = glossary_of(make_terms, spec)
    picks = slugs(plan(glossary, [], [], W, 12 * 4))
    last_seen: dict[str, int] = {}
    for week, slug in enumerate(picks):
        if slug in last_seen:
            assert week - last_seen[slug] > 12 // 2, (slug, last_seen[slug], week)
        last_seen[slug] = week


def test_history_counts_toward_the_cycle(five):
    history = [(W - 3, "apple"), (W - 2, "carrot"), (W - 1, "endive")]
    picks = slugs(plan(five, history, [], W, 2))
    assert sorted(picks) == ["banana", "daikon"]


def test_featured_terms_since_removed_from_the_glossary_do_not_block_a_new_cycle(five):
    history = [(W - 6 + i, s) for i, s in enumerate(["apple", "old-term", *five.slugs[1:]])]
    pick = pick_featured(five, history, [], W)
    assert pick.slug != "endive"  # a new cycle started; it does not reopen with the last term
    assert sorted(slugs(plan(five, history, [], W, 5))) == five.slugs


def test_the_same_category_never_runs_two_weeks_when_another_is_available(make_terms):
    spec = {
        f"term-{c}{i}": (f"Cat {c}", "beginner", [])
        for c, n in zip("abcd", (5, 4, 3, 2), strict=True)
        for i in range(n)
    }
    glossary = glossary_of(make_terms, spec)
    picks = plan(glossary, [], [], W, 14 * 3)
    assert back_to_back(glossary, picks) == 0


def test_the_rotation_avoids_the_category_of_next_weeks_pin(five):
    for pinned in five:
        for history in ([], [(W - 1, "endive")], [(W - 2, "apple"), (W - 1, "carrot")]):
            queue = [QueueEntry(pinned.slug, W + 1, None, 1)]
            pick = pick_featured(five, history, queue, W)
            assert five[pick.slug].category != pinned.category, (pinned.slug, history)


def test_the_rotation_looks_ahead_so_a_cycle_does_not_end_in_a_forced_repeat(make_terms):
    # A greedy rotation starts with the beginner (cat B) terms and is then left with A, A, A.
    glossary = glossary_of(
        make_terms,
        {
            "a-one": ("A", "advanced", []),
            "a-two": ("A", "advanced", []),
            "a-three": ("A", "advanced", []),
            "b-one": ("B", "beginner", []),
            "b-two": ("B", "beginner", []),
        },
    )
    picks = plan(glossary, [], [], W, 5)
    assert [glossary[p.slug].category for p in picks] == ["A", "B", "A", "B", "A"]


def test_the_same_category_repeats_only_as_often_as_it_must(make_terms):
    spec = {f"a-{i}": ("A", "beginner", []) for i in range(4)} | {"b-0": ("B", "beginner", [])}
    glossary = glossary_of(make_terms, spec)
    picks = plan(glossary, [], [], W, 5)
    assert back_to_back(glossary, picks) == 2  # A B A A A: four A's, one B to separate them


def test_basics_come_before_the_advanced_terms_built_on_them(make_terms):
    # Only the advanced terms name their prerequisites; the link counts in either direction.
    # One category each, so the (stronger) category rule does not get in the way.
    glossary = glossary_of(
        make_terms,
        {
            "attention": ("Architecture", "advanced", ["embedding"]),
            "embedding": ("Representation", "intermediate", ["tokens"]),
            "tokens": ("Text", "beginner", []),
            "transformer": ("Models", "advanced", ["attention", "embedding"]),
            "dataset": ("Data", "beginner", []),
            "overfitting": ("Training", "intermediate", ["dataset"]),
            "regularization": ("Optimisation", "advanced", ["overfitting"]),
            "benchmark": ("Evaluation", "intermediate", []),
        },
    )
    for cycle in range(3):
        order = slugs(plan(glossary, [], [], W, 8 * (cycle + 1)))[8 * cycle :]
        assert order.index("tokens") < order.index("embedding") < order.index("attention")
        assert order.index("embedding") < order.index("transformer")
        assert order.index("dataset") < order.index("overfitting") < order.index("regularization")


def test_difficulty_is_balanced_across_the_cycle(make_terms):
    levels = ("beginner", "intermediate", "advanced")
    spec = {f"t-{lvl}-{c}": (f"Cat {c}", lvl, []) for lvl in levels for c in "abcd"}
    glossary = glossary_of(make_terms, spec)
    picks = plan(glossary, [], [], W, 12)
    for n in range(1, 13):
        counts = Counter(glossary[p.slug].difficulty for p in picks[:n])
        assert max(counts[lvl] for lvl in levels) - min(counts[lvl] for lvl in levels) <= 1, n


def test_the_pick_is_the_same_for_the_same_glossary_history_and_week(make_terms):
    spec = {f"term-{c}{i}": (f"Cat {c}", "beginner", []) for c in "abc" for i in range(5)}
    glossary = glossary_of(make_terms, spec)
    folder = glossary["term-a0"].path.parent  # type: ignore[union-attr]
    history = [(W - 2, "term-b3"), (W - 1, "term-c1")]
    first = plan(glossary, history, [], W, 30)
    assert plan(load_glossary(folder), history, [], W, 30) == first
    # …and in a fresh interpreter with a different string-hash seed.
    script = (
        "import sys; from digest.store.terms import load_glossary; from digest.model.weeks import IsoWeek;"
        "from digest.core.selection import plan;"
        "h=[(IsoWeek(2026,8),'term-b3'),(IsoWeek(2026,9),'term-c1')];"
        "print(' '.join(p.slug for p in plan(load_glossary(sys.argv[1]), h, [], IsoWeek(2026,10), 30)))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", script, str(folder)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        ).stdout.split()
        assert out == slugs(first)


def test_rebuilding_a_week_ignores_history_from_that_week_on(five):
    history = [(W - 1, "apple")]
    pick = pick_featured(five, history, [], W)
    rebuilt = pick_featured(five, [*history, (W, pick.slug), (W + 1, "banana")], [], W)
    assert rebuilt == pick


# --------------------------------------------------------------------------- plan


def test_plan_consumes_the_queue_and_places_pins_on_their_week(five):
    queue = [
        QueueEntry("endive", W + 2, "pinned", 1),
        QueueEntry("carrot", None, None, 2),
        QueueEntry("apple", None, "second", 3),
    ]
    picks = plan(five, [], queue, W, 6)
    assert picks[:3] == [
        Pick(W, "carrot", "queue"),
        Pick(W + 1, "apple", "queue", "second"),
        Pick(W + 2, "endive", "pin", "pinned"),
    ]
    assert [p.source for p in picks[3:]] == ["rotation"] * 3
    assert sorted(slugs(picks[:5])) == five.slugs


def test_plan_changes_none_of_its_inputs(five):
    history = [(W - 1, "apple")]
    queue = [QueueEntry("carrot", None, None, 1)]
    plan(five, history, queue, W, 10)
    assert history == [(W - 1, "apple")]
    assert queue == [QueueEntry("carrot", None, None, 1)]


def test_a_plan_starts_at_the_first_week_without_an_issue():
    assert first_open_week([], W) == W
    assert first_open_week([(W - 1, "a")], W) == W
    assert first_open_week([(W - 1, "a"), (W, "b")], W) == W + 1
    assert first_open_week([(W + 2, "c")], W) == W + 3


def test_sixty_weeks_over_the_starter_glossary_never_repeat_or_run_a_category_twice(
    starter_glossary,
):
    glossary = starter_glossary
    n = len(glossary)
    assert n >= 60
    picks = plan(glossary, [], [], IsoWeek(2026, 1), 60)
    assert len(set(slugs(picks))) == 60
    counts = Counter(t.category for t in glossary)
    assert max(counts.values()) <= (n + 1) // 2  # so back-to-back is avoidable…
    assert back_to_back(glossary, picks) == 0  # …and avoided
    three_cycles = plan(glossary, [], [], IsoWeek(2026, 1), 3 * n)
    for start in (0, n, 2 * n):
        cycle = slugs(three_cycles[start : start + n])
        assert sorted(cycle) == glossary.slugs
        for i, slug in enumerate(cycle):  # and basics first: no term before its prerequisites
            term = glossary[slug]
            basics = {s for s in glossary.neighbours(slug) if glossary[s].level < term.level}
            assert basics <= set(cycle[:i]), (slug, basics - set(cycle[:i]))
    assert back_to_back(glossary, three_cycles) == 0


# --------------------------------------------------------------------------- related concepts


def related_glossary(make_terms: MakeTerms, how: str, *, related: list[str] | None = None):
    files = {
        "retrieval-augmented-generation": term_text(
            "Retrieval-Augmented Generation",
            aliases="[RAG]",
            related=related or [],
            category="Applications",
            difficulty="intermediate",
            body=sections(how),
        ),
        "large-language-model": term_text(
            "Large Language Model", aliases="[LLM]", category="Models", body=sections("Big.")
        ),
        "language-model": term_text("Language Model", category="Models", body=sections("Words.")),
        "embedding": term_text("Embedding", category="Representation", body=sections("Vectors.")),
        "transformer": term_text("Transformer", category="Architecture", body=sections("Layers.")),
        "vector-database": term_text(
            "Vector Database",
            category="Applications",
            related=["retrieval-augmented-generation"],
            body=sections("Stores."),
        ),
        "chatbot": term_text(
            "Chatbot", category="Applications", difficulty="advanced", body=sections("Talks.")
        ),
        "semantic-search": term_text(
            "Semantic Search",
            category="Applications",
            difficulty="intermediate",
            body=sections("Finds."),
        ),
        "agent": term_text(
            "Agent", category="Applications", difficulty="beginner", body=sections("Acts.")
        ),
    }
    glossary = load_glossary(make_terms(files))
    return glossary, glossary["retrieval-augmented-generation"]


def test_related_starts_with_the_terms_own_list_in_its_order(make_terms):
    glossary, rag = related_glossary(
        make_terms, "It uses an Embedding.", related=["transformer", "chatbot"]
    )
    assert [t.slug for t in related_concepts(glossary, rag, 3)] == [
        "transformer",
        "chatbot",
        "embedding",
    ]


def test_related_infers_mentions_by_whole_word_ignoring_case(make_terms):
    how = "A TRANSFORMER reads the embeddings. Not a transformerish thing, nor an embeddingness."
    glossary, rag = related_glossary(make_terms, how)
    mentioned = [t.slug for t in related_concepts(glossary, rag, 2)]
    assert mentioned == ["transformer", "embedding"]

    glossary, rag = related_glossary(make_terms, "A transformerish embeddingness.")
    assert {"transformer", "embedding"}.isdisjoint(t.slug for t in related_concepts(glossary, rag))


def test_related_matches_aliases_and_prefers_the_longest_name(make_terms):
    glossary, rag = related_glossary(make_terms, "An llm, that is a large language model, helps.")
    # "large language model" is one mention, not also "language model"; the alias LLM counts.
    found = [t.slug for t in related_concepts(glossary, rag, 2)]
    assert found == ["large-language-model", "vector-database"]


def test_related_ignores_names_inside_link_addresses(make_terms):
    how = "See [the paper](https://example.org/transformer) and https://example.org/embedding."
    glossary, rag = related_glossary(make_terms, how)
    assert {"transformer", "embedding"}.isdisjoint(t.slug for t in related_concepts(glossary, rag))


def test_related_adds_backlinks_then_its_category_nearest_difficulty_first(make_terms):
    glossary, rag = related_glossary(make_terms, "Nothing named here.")
    assert [t.slug for t in related_concepts(glossary, rag, 4)] == [
        "vector-database",  # names RAG in its own `related`
        "semantic-search",  # same category, same difficulty
        "agent",  # same category, one level apart (ties broken by slug)
        "chatbot",
    ]


def test_related_never_lists_the_term_itself_twice_or_more_than_k(make_terms):
    how = "RAG (retrieval-augmented generation) uses an embedding; the Embedding again."
    glossary, rag = related_glossary(make_terms, how, related=["embedding"])
    # Five candidates: embedding (listed and mentioned twice), vector-database (links back) and
    # the three other Applications terms; RAG's own names in its text do not count.
    for k in range(0, 9):
        found = [t.slug for t in related_concepts(glossary, rag, k)]
        assert len(found) == min(k, 5)
        assert len(set(found)) == len(found)
        assert rag.slug not in found
    assert related_concepts(glossary, rag, 0) == []


def test_related_are_the_same_every_time(make_terms):
    glossary, rag = related_glossary(make_terms, "A transformer and an embedding and an LLM.")
    first = related_concepts(glossary, rag, 8)
    assert related_concepts(glossary, rag, 8) == first
    assert related_concepts(load_glossary(rag.path.parent), rag, 8) == first  # type: ignore[union-attr]


# --------------------------------------------------------------------------- speed


def big_glossary(n: int) -> Glossary:
    categories = [f"Category {i}" for i in range(25)]
    levels = ("beginner", "intermediate", "advanced")
    words = ["the", "model", "reads", "data", "and", "learns", "a", "layer", "of", "weights"]
    terms = []
    for i in range(n):
        text = " ".join(words[(i * 7 + j) % len(words)] for j in range(250))
        terms.append(
            Term(
                slug=f"term-{i:05d}",
                title=f"Term {i}",
                summary=f"Summary {i}.",
                definition=f"Definition of term {i}, which uses Term {(i * 31) % n}.",
                category=categories[i % 25],
                difficulty=levels[(i // 25) % 3],  # type: ignore[arg-type]
                added=IsoWeek(2026, 1),
                related=tuple(f"term-{(i * k + 1) % n:05d}" for k in (3, 7, 11)),
                sources=(Source("A source", "https://example.org"),),
                sections=(Section("How it works", text),),
            )
        )
    return Glossary(terms)


def test_a_pick_over_10000_terms_and_5000_past_issues_is_stable():
    # Speed is measured in benchmarks/, not asserted here; this checks the indexes that make
    # large glossaries fast give the same answers on the cold and the warm path.
    glossary = big_glossary(10_000)
    history = [(IsoWeek(1930, 1) + i, f"term-{(i * 7919) % 10_000:05d}") for i in range(5000)]
    week = IsoWeek(1930, 1) + 5000
    pick = pick_featured(glossary, history, [], week)
    related = related_concepts(glossary, glossary[pick.slug])
    assert len(related) == 4
    assert pick.slug not in {slug for _, slug in history[-5000 // 2 :]}
    assert pick_featured(glossary, history, [], week) == pick
    assert related_concepts(glossary, glossary[pick.slug]) == related


# --------------------------------------------------------------------------- digest plan


def test_plan_command_prints_the_coming_weeks_and_changes_nothing(settings_env, five):
    folder = str(five["apple"].path.parent)  # type: ignore[union-attr]
    engine = db.make_engine(settings_env["DIGEST_DATABASE_URL"])
    db.upgrade(engine)
    add_to_queue(engine, five, "daikon", note="for the launch", history=[], now=db.utcnow())
    add_to_queue(engine, five, "endive", week=IsoWeek(2030, 3), history=[], now=db.utcnow())
    before = list_queue(engine)

    result = runner.invoke(app, ["--terms", folder, "plan", "--weeks", "6", "--from", "2030-W01"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[1:]]
    assert rows[0][:5] == ["2030-W01", "daikon", "Vegetable", "intermediate", "queue"]
    assert rows[0][5] == "pick"  # nothing built yet: a pick, not an issue
    assert " ".join(rows[0][6:]) == "for the launch"
    assert rows[2][:5] == ["2030-W03", "endive", "Leaf", "advanced", "pin"]
    assert [r[4] for r in rows] == ["queue", "rotation", "pin", "rotation", "rotation", "rotation"]
    assert list_queue(engine) == before
    assert list_issues(engine) == [] and featured_history(engine) == []
    engine.dispose()


def test_plan_command_rejects_a_bad_week(settings_env):
    result = runner.invoke(app, ["plan", "--from", "2026-W99"])
    assert result.exit_code == 1
    assert "--from 2026-W99 does not exist: 2026 has no week 99" in result.output


def test_plan_command_over_the_starter_glossary_shows_the_library_plan(
    settings_env, starter_glossary
):
    result = runner.invoke(app, ["plan", "--weeks", "60", "--from", "2026-W01"])
    assert result.exit_code == 0, result.output
    # One line per week (long categories wrap onto lines of their own, without a week).
    shown = re.findall(r"^ ?\d{4}-W\d{2} +(\S+)", result.output, flags=re.MULTILINE)
    assert shown == slugs(plan(starter_glossary, [], [], IsoWeek(2026, 1), 60))
    assert len(set(shown)) == 60
