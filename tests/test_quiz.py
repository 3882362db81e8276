"""The weekly quiz, pure: what it asks, its answers, that it stands still per week, and reading
an answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from digest.core.quiz import make_quiz, read_answer
from digest.core.selection import related_concepts
from digest.core.urls import Urls
from digest.model.glossary import Glossary
from digest.model.weeks import IsoWeek
from digest.store.terms import load_glossary
from tests.conftest import term_text

W49, W50 = IsoWeek(2026, 49), IsoWeek(2026, 50)
URLS = Urls("https://digest.example.org", "https://glossary.example.org")
REPO = Path(__file__).resolve().parent.parent

MakeTerms = Callable[[dict[str, str]], Path]


def term(title: str, category: str, difficulty: str = "beginner", **kw: object) -> str:
    return term_text(title, category=category, difficulty=difficulty, **kw)  # type: ignore[arg-type]


def glossary_of(make_terms: MakeTerms) -> Glossary:
    """Two categories: Training (five terms) and Safety (four)."""
    return load_glossary(
        make_terms(
            {
                "lora": term("LoRA", "Training", "intermediate", related=["fine-tuning"]),
                "fine-tuning": term("Fine-tuning", "Training", related=["lora"]),
                "dropout": term("Dropout", "Training", "intermediate"),
                "adam": term("Adam", "Training", "intermediate"),
                "distillation": term("Distillation", "Training", "advanced"),
                "alignment": term("Alignment", "Safety", related=["jailbreak", "red-teaming"]),
                "jailbreak": term("Jailbreak", "Safety", related=["alignment"]),
                "red-teaming": term("Red teaming", "Safety", related=["alignment"]),
                "guardrails": term("Guardrails", "Safety"),
            }
        )
    )


@pytest.fixture
def glossary(make_terms: MakeTerms) -> Glossary:
    return glossary_of(make_terms)


def quiz_for(glossary: Glossary, week: IsoWeek, featured: str, last: str | None):  # type: ignore[no-untyped-def]
    term = glossary[featured]
    related = related_concepts(glossary, term, 4)
    last_week = (week - 1, last) if last is not None else None
    return make_quiz(glossary, week, term, related, last_week, URLS)


def test_the_right_answer_is_last_weeks_terms_one_liner(glossary):
    quiz = quiz_for(glossary, W50, "alignment", last="lora")
    assert quiz is not None
    assert quiz["kind"] == "last_week" and quiz["from_week"] == str(W49)
    assert quiz["term"] == {
        "slug": "lora",
        "title": "LoRA",
        "definition": glossary["lora"].definition,
        "url": "https://glossary.example.org/lora",
    }
    right = quiz["choices"][quiz["right"] - 1]
    assert right["slug"] == "lora" and right["summary"] == glossary["lora"].summary


def test_the_two_wrong_answers_are_other_terms_of_the_same_category(glossary):
    quiz = quiz_for(glossary, W50, "alignment", last="lora")
    assert quiz is not None
    assert len(quiz["choices"]) == 3
    wrong = [c for n, c in enumerate(quiz["choices"], 1) if n != quiz["right"]]
    assert len(wrong) == 2
    assert all(glossary[c["slug"]].category == "Training" for c in wrong)
    summaries = [c["summary"] for c in quiz["choices"]]
    assert len(set(summaries)) == 3
    assert all(c["summary"] == glossary[c["slug"]].summary for c in quiz["choices"])
    assert all(c["url"] == f"https://glossary.example.org/{c['slug']}" for c in quiz["choices"])


def test_wrong_answers_are_nearest_in_difficulty(glossary):
    # LoRA is intermediate: Dropout and Adam are too; the beginner and advanced ones wait.
    for week in range(1, 30):
        quiz = quiz_for(glossary, IsoWeek(2026, week), "alignment", last="lora")
        assert quiz is not None
        wrong = {c["slug"] for c in quiz["choices"]} - {"lora"}
        assert wrong == {"dropout", "adam"}


def test_the_quiz_stands_still_for_a_week_and_moves_between_weeks(glossary, make_terms):
    again = glossary_of(make_terms)  # re-read from other files: same terms
    first = quiz_for(glossary, W50, "alignment", last="jailbreak")
    assert first == quiz_for(again, W50, "alignment", last="jailbreak")
    positions = {
        quiz["right"]
        for week in range(1, 40)
        if (quiz := quiz_for(glossary, IsoWeek(2026, week), "lora", last="jailbreak"))
    }
    assert positions == {1, 2, 3}


def test_the_order_does_not_depend_on_pythons_hash_seed(tmp_path, make_terms):
    folder = make_terms({slug: text for slug, text in _files().items()})
    script = (
        "import json, sys\n"
        "from digest.core.quiz import make_quiz\n"
        "from digest.core.urls import Urls\n"
        "from digest.model.weeks import IsoWeek\n"
        "from digest.store.terms import load_glossary\n"
        "g = load_glossary(sys.argv[1])\n"
        "q = make_quiz(g, IsoWeek(2026, 50), g['alignment'], [], (IsoWeek(2026, 49), 'lora'),"
        " Urls('https://d.example', 'https://g.example'))\n"
        "print(json.dumps(q))\n"
    )
    outputs = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-c", script, str(folder)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        outputs.append(json.loads(done.stdout))
    assert outputs[0] is not None and outputs[0] == outputs[1] == outputs[2]


def _files() -> dict[str, str]:
    # Six one-category terms at one difficulty: only the week's order can choose among them.
    names = ["lora", "a", "b", "c", "d", "e"]
    files = {n: term(n.title(), "Training") for n in names}
    files["alignment"] = term("Alignment", "Safety")
    return files


def test_the_first_issue_asks_about_a_related_concept(glossary):
    quiz = quiz_for(glossary, W50, "alignment", last=None)
    assert quiz is not None
    related = related_concepts(glossary, glossary["alignment"], 4)
    assert quiz["kind"] == "related" and quiz["from_week"] is None
    assert quiz["term"]["slug"] == related[0].slug == "jailbreak"
    assert quiz["choices"][quiz["right"] - 1]["slug"] == "jailbreak"
    # Wrong answers: the other Safety terms, never this week's own term.
    wrong = {c["slug"] for c in quiz["choices"]} - {"jailbreak"}
    assert wrong == {"red-teaming", "guardrails"}


def test_a_term_gone_from_the_glossary_or_featured_again_falls_back_to_a_related_concept(
    glossary,
):
    for last in ("no-longer-here", "alignment"):
        quiz = quiz_for(glossary, W50, "alignment", last=last)
        assert quiz is not None
        assert (quiz["kind"], quiz["term"]["slug"]) == ("related", "jailbreak")


def test_a_small_category_is_filled_from_the_terms_neighbours_then_any(make_terms):
    glossary = load_glossary(
        make_terms(
            {
                "rag": term("RAG", "Retrieval", related=["vector-db", "prompting"]),
                "vector-db": term("Vector DB", "Retrieval", related=["rag"]),
                "prompting": term("Prompting", "Prompts", related=["rag"]),
                "lora": term("LoRA", "Training"),
                "adam": term("Adam", "Training"),
            }
        )
    )
    quiz = quiz_for(glossary, W50, "lora", last="rag")
    assert quiz is not None
    wrong = [c["slug"] for c in quiz["choices"] if c["slug"] != "rag"]
    # The one other Retrieval term, then RAG's neighbour in the related graph.
    assert sorted(wrong) == ["prompting", "vector-db"]


def test_this_weeks_own_term_is_a_wrong_answer_only_when_nothing_else_is_left(make_terms):
    glossary = load_glossary(
        make_terms(
            {
                "rag": term("RAG", "Retrieval", related=["lora"]),
                "lora": term("LoRA", "Training", related=["rag"]),
                "adam": term("Adam", "Training"),
            }
        )
    )
    quiz = quiz_for(glossary, W50, "lora", last="rag")
    assert quiz is not None
    assert {c["slug"] for c in quiz["choices"]} == {"rag", "adam", "lora"}


def test_no_quiz_without_three_different_one_liners(make_terms):
    same = "The same line for two terms."
    glossary = load_glossary(
        make_terms(
            {
                "rag": term("RAG", "Retrieval", related=["lora"]),
                "lora": term("LoRA", "Retrieval", related=["rag"], summary=same),
                "adam": term("Adam", "Retrieval", summary=same),
            }
        )
    )
    assert quiz_for(glossary, W50, "rag", last="lora") is None
    two = load_glossary(make_terms({"a": term("A", "X", related=["b"]), "b": term("B", "X")}))
    assert quiz_for(two, W50, "a", last="b") is None
    lonely = load_glossary(make_terms({"a": term("A", "X"), "b": term("B", "X")}))
    assert quiz_for(lonely, W50, "a", last=None) is None  # no related concept to ask about


def test_duplicate_one_liners_never_show_twice(make_terms):
    same = "A line two terms share."
    glossary = load_glossary(
        make_terms(
            {
                "rag": term("RAG", "Retrieval"),
                "a": term("A", "Retrieval", summary=same),
                "b": term("B", "Retrieval", summary=same),
                "c": term("C", "Retrieval"),
                "x": term("X", "Other"),
            }
        )
    )
    for week in range(1, 20):
        quiz = quiz_for(glossary, IsoWeek(2026, week), "x", last="rag")
        assert quiz is not None
        summaries = [" ".join(c["summary"].split()) for c in quiz["choices"]]
        assert len(set(summaries)) == 3


# --------------------------------------------------------------------------- answers


def test_an_answer_is_right_only_for_the_right_number(glossary):
    quiz = quiz_for(glossary, W50, "alignment", last="lora")
    assert quiz is not None
    for number in (1, 2, 3):
        verdict = read_answer(quiz, str(number))
        assert verdict is not None
        assert verdict.number == number
        assert verdict.right is (number == quiz["right"])
        assert verdict.choice == quiz["choices"][number - 1]


@pytest.mark.parametrize("answer", [None, "", "0", "4", "02", " 2", "2 ", "two", "-1", "1.0", "²"])
def test_anything_but_a_choice_number_is_no_answer(glossary, answer):
    quiz = quiz_for(glossary, W50, "alignment", last="lora")
    assert read_answer(quiz, answer) is None


def test_no_quiz_means_no_answer():
    assert read_answer(None, "1") is None
