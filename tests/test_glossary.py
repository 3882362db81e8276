"""The glossary loader: every validation rule, on real files, with path:line: field errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.glossary import InvalidGlossary, load_glossary, read_glossary
from digest.weeks import IsoWeek
from tests.conftest import STARTER_TERMS, term_text


def errors_of(folder: Path) -> list[str]:
    _glossary, errors = read_glossary(folder)
    return [str(e).removeprefix(str(folder) + "/") for e in errors]


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


def test_bad_yaml_names_the_line(make_terms):
    folder = make_terms({"alpha": "---\ntitle: Alpha\nsummary: [unclosed\n---\n## Example\nx\n"})
    [error] = errors_of(folder)
    assert error.startswith("alpha.md:")
    assert ": front matter: invalid YAML" in error


def test_missing_front_matter(make_terms):
    folder = make_terms({"alpha": "# Alpha\n\nno front matter\n"})
    assert errors_of(folder) == [
        "alpha.md:1: front matter: file must start with YAML front matter between '---' lines"
    ]


def test_missing_required_field_is_reported_with_field_name(make_terms):
    text = term_text("Alpha", related=["beta"]).replace("category: Fundamentals\n", "")
    folder = make_terms({"alpha": text, "beta": term_text("Beta", related=["alpha"])})
    assert errors_of(folder) == ["alpha.md:2: category: required field is missing"]


def test_unknown_related_slug_names_its_line(make_terms):
    folder = make_terms({"alpha": term_text("Alpha", related=["transfomer"])})
    assert errors_of(folder) == ["alpha.md:9: related: unknown term 'transfomer'"]


def test_term_relating_to_itself(make_terms):
    folder = make_terms({"alpha": term_text("Alpha", related=["alpha"])})
    assert errors_of(folder) == ["alpha.md:9: related: a term cannot relate to itself"]


def test_duplicate_alias_across_terms(make_terms):
    folder = make_terms(
        {
            "alpha": term_text("Alpha", aliases="[Shared]", related=["beta"]),
            "beta": term_text("Beta", aliases="[shared]", related=["alpha"]),
        }
    )
    assert errors_of(folder) == ["beta.md:5: aliases: 'shared' is already used by term 'alpha'"]


def test_alias_may_not_take_another_terms_title(make_terms):
    folder = make_terms(
        {
            "alpha": term_text("Alpha", aliases="[Beta]", related=["beta"]),
            "beta": term_text("Beta", related=["alpha"]),
        }
    )
    assert errors_of(folder) == ["alpha.md:5: aliases: 'Beta' is already used by term 'beta'"]


def test_duplicate_slug_declared_in_front_matter(make_terms):
    text = term_text("Alpha", extra="slug: beta\n")
    folder = make_terms({"alpha": text})
    assert errors_of(folder) == ["alpha.md:13: slug: 'beta' does not match the file name 'alpha'"]


def test_bad_difficulty(make_terms):
    folder = make_terms({"alpha": term_text("Alpha", difficulty="expert")})
    assert errors_of(folder) == [
        "alpha.md:7: difficulty: must be one of beginner, intermediate, advanced (got 'expert')"
    ]


@pytest.mark.parametrize(
    ("week", "message"),
    [
        ("2026-17", "must be an ISO week like 2026-W17 (got '2026-17')"),
        ("2026-W54", "2026-W54 does not exist: 2026 has no week 54"),
        ("2027-W53", "2027-W53 does not exist: 2027 has no week 53"),
    ],
)
def test_bad_iso_week(make_terms, week, message):
    folder = make_terms({"alpha": term_text("Alpha", added=week)})
    assert errors_of(folder) == [f"alpha.md:8: added: {message}"]


def test_non_https_source(make_terms):
    text = term_text("Alpha").replace("https://example.org/source", "http://example.org/source")
    folder = make_terms({"alpha": text})
    assert errors_of(folder) == [
        "alpha.md:12: sources[0].url: must be an https:// URL (got 'http://example.org/source')"
    ]


def test_unknown_field_is_an_error(make_terms):
    folder = make_terms({"alpha": term_text("Alpha", extra="relatd: [beta]\n")})
    assert errors_of(folder) == ["alpha.md:13: relatd: unknown field"]


def test_bad_alias_language(make_terms):
    folder = make_terms({"alpha": term_text("Alpha", aliases="[{name: alfa, lang: Dutch}]")})
    assert errors_of(folder) == [
        "alpha.md:5: aliases[0].lang: must be a 2- or 3-letter language code like 'nl' (got 'Dutch')"
    ]


def test_missing_body_section(make_terms):
    body = "## Why it matters\n\nx\n\n## Example\n\ny\n"
    folder = make_terms({"alpha": term_text("Alpha", body=body)})
    assert errors_of(folder) == ["alpha.md:14: body: missing section: '## How it works'"]


def test_text_before_first_section(make_terms):
    body = "Stray intro.\n\n## Why it matters\n\nx\n"
    folder = make_terms({"alpha": term_text("Alpha", body=body)})
    assert errors_of(folder)[0] == (
        "alpha.md:15: body: text before the first '## ' section "
        "(the definition belongs in the front matter)"
    )


def test_every_error_of_a_folder_is_reported_in_one_run(make_terms):
    folder = make_terms(
        {
            "alpha": term_text("Alpha", difficulty="expert", related=["nope"]),
            "beta": term_text("Beta", added="2026-W99"),
            "gamma": "not a term file",
            "delta": term_text("Delta", related=["alpha"]),
        }
    )
    glossary, errors = read_glossary(folder)
    assert {e.path.name for e in errors} == {"alpha.md", "beta.md", "gamma.md"}
    assert len(errors) == 4
    # The valid term is still usable beside the broken ones.
    assert glossary.slugs == ["delta"]
    with pytest.raises(InvalidGlossary, match="4 errors in 3 files"):
        load_glossary(folder)


def test_term_html_is_escaped(make_terms):
    body = "## Why it matters\n\n<script>alert(1)</script> & more\n\n## How it works\n\nx\n\n## Example\n\ny\n"
    folder = make_terms({"alpha": term_text("Alpha", body=body)})
    html = load_glossary(folder)["alpha"].section("why it matters").html
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


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
