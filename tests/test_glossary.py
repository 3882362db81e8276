"""The glossary as loaded: typed terms, lookups, the related graph, and the starter glossary."""

from __future__ import annotations

from pathlib import Path

from digest.model.glossary import Alias, Glossary, GlossaryError, InvalidGlossary, Source, Term
from digest.model.weeks import IsoWeek
from digest.store.terms import load_glossary
from tests.conftest import STARTER_TERMS, term_text


def test_valid_folder_loads_typed_terms(make_terms):
    folder = make_terms(
        {
            "alpha": term_text("Alpha", related=["beta"], aliases="[A1, {name: alfa, lang: nl}]"),
            "beta": term_text("Beta", related=["alpha"], difficulty="advanced"),
        }
    )
    glossary = load_glossary(folder)
    alpha = glossary["alpha"]
    assert alpha.title == "Alpha"
    assert alpha.added == IsoWeek(2026, 10)
    assert [a.lang for a in alpha.aliases] == [None, "nl"]
    assert [s.title for s in alpha.sections] == ["Why it matters", "How it works", "Example"]
    assert "<p>" in alpha.section("how it works").html
    assert glossary.lookup("ALFA") is alpha
    assert glossary.lookup("beta").level == 2
    assert glossary.backlinks["alpha"] == ("beta",)
    assert glossary.components() == [{"alpha", "beta"}]


def test_term_html_is_escaped(make_terms):
    body = "## Why it matters\n\n<script>alert(1)</script> & more\n\n## How it works\n\nx\n\n## Example\n\ny\n"
    folder = make_terms({"alpha": term_text("Alpha", body=body)})
    html = load_glossary(folder)["alpha"].section("why it matters").html
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def hand_made(slug: str, related: tuple[str, ...], aliases: tuple[Alias, ...] = ()) -> Term:
    return Term(
        slug=slug,
        title=slug.title(),
        summary=f"About {slug}.",
        definition=f"{slug} is a term.",
        category="Fundamentals" if slug != "delta" else "Models",
        difficulty="beginner",
        added=IsoWeek(2026, 10),
        related=related,
        sources=(Source("A source", "https://example.org/source"),),
        aliases=aliases,
    )


def test_a_glossary_needs_no_files():
    # The model holds no knowledge of files: selection and rendering take a glossary made anywhere.
    glossary = Glossary(
        [
            hand_made("gamma", ("alpha",)),
            hand_made("alpha", ("beta",), (Alias("Alfa", "nl"),)),
            hand_made("beta", ()),
            hand_made("delta", ()),
        ]
    )
    assert glossary.slugs == ["alpha", "beta", "delta", "gamma"]
    assert glossary.lookup(" alfa ") is glossary["alpha"]
    assert [t.slug for t in glossary.related("gamma")] == ["alpha"]
    assert glossary.backlinks["alpha"] == ("gamma",)
    assert glossary.neighbours("alpha") == {"beta", "gamma"}
    assert glossary.components() == [{"alpha", "beta", "gamma"}, {"delta"}]
    assert glossary.categories() == ["Fundamentals", "Models"]
    assert [t.slug for t in glossary.in_category("models")] == ["delta"]


def test_errors_print_as_path_line_field_message():
    one = GlossaryError(Path("terms/alpha.md"), 9, "related", "unknown term 'x'")
    assert str(one) == "terms/alpha.md:9: related: unknown term 'x'"
    assert str(GlossaryError(Path("terms/beta.md"), None, "file", "too big")) == (
        "terms/beta.md: file: too big"
    )
    assert str(InvalidGlossary([one])) == "1 error in 1 file"


# --------------------------------------------------------------------------- the starter glossary


def test_starter_glossary_is_valid_and_large(starter_glossary):
    assert len(starter_glossary) >= 60


def test_starter_glossary_names_every_seed_term(starter_glossary):
    for name in [
        "foundation model", "large language model", "pre-training", "fine-tuning",
        "activation function", "adam optimizer", "agi", "flash attention", "function calling",
        "rlhf", "constitutional ai", "rag", "prompting", "few-shot learning", "chain-of-thought",
        "mixture of experts", "diffusion model", "transformer", "attention", "tokenization",
        "embedding",
    ]:  # fmt: skip
        assert starter_glossary.lookup(name) or starter_glossary.get(name.replace(" ", "-")), name


def test_starter_glossary_links_and_sources(starter_glossary):
    for term in starter_glossary:
        assert len(term.related) >= 2, term.slug
        assert term.sources, term.slug
    assert len(starter_glossary.components()) == 1


def test_foundation_model_matches_the_seed(starter_glossary):
    term = starter_glossary["foundation-model"]
    assert term.category == "Models & Architecture"
    assert term.difficulty == "intermediate"
    assert str(term.added) == "2026-W17"
    assert ("basismodel", "nl") in [(a.name, a.lang) for a in term.aliases]
    assert starter_glossary.lookup("basismodel") is term


def test_starter_glossary_file_count_matches(starter_glossary):
    assert len(list(STARTER_TERMS.glob("*.md"))) == len(starter_glossary)
