"""The rules of a term file, on real files and on bare text: path:line: field errors, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.core.term_rules import assemble, parse_term
from digest.model.glossary import InvalidGlossary
from digest.store.terms import load_glossary, read_glossary
from tests.conftest import term_text


def errors_of(folder: Path) -> list[str]:
    _glossary, errors = read_glossary(folder)
    return [str(e).removeprefix(str(folder) + "/") for e in errors]


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


# --------------------------------------------------------------------------- without a file


def test_the_rules_judge_bytes_without_reading_any_file():
    # The path only names the slug and labels errors: nothing is there, and nothing is read.
    path = Path("/nonexistent/alpha.md")
    text = term_text("Alpha", difficulty="expert", related=["alpha"])
    parsed, errors = parse_term(text.encode(), path)
    assert parsed is not None and parsed.term is None
    assert [str(e) for e in errors] == [
        "/nonexistent/alpha.md:9: related: a term cannot relate to itself",
        "/nonexistent/alpha.md:7: difficulty: must be one of beginner, intermediate, advanced "
        "(got 'expert')",
    ]


def test_bytes_that_are_not_utf8_are_refused_by_the_rules():
    parsed, errors = parse_term(b"---\ntitle: \xff\n---\n", Path("alpha.md"))
    assert parsed is None
    assert [str(e) for e in errors] == ["alpha.md: file: not valid UTF-8 (invalid start byte)"]


def test_assemble_cross_checks_and_leaves_out_every_term_of_a_file_with_an_error():
    alpha, alpha_errors = parse_term(
        term_text("Alpha", related=["beta"]).encode(), Path("alpha.md")
    )
    beta, beta_errors = parse_term(term_text("Beta", related=["gone"]).encode(), Path("beta.md"))
    assert alpha is not None and beta is not None and alpha_errors == beta_errors == []
    glossary, errors = assemble([beta, alpha], [])
    assert [str(e) for e in errors] == ["beta.md:9: related: unknown term 'gone'"]
    assert glossary.slugs == ["alpha"]


# --------------------------------------------------------------------------- YAML slips


@pytest.mark.parametrize(
    ("line", "where", "hint"),
    [
        ("summary: A: B", 3, 'hint: quote a value that contains ": " (summary: "A: B")'),
        ("summary: @home", 3, """hint: quote a value that starts with '@' (summary: "@home")"""),
        ('summary: "A" and B', 3, """hint: quote the value as a whole (summary: '"A" and B')"""),
        ("summary: 'It's'", 3, 'hint: quote the value as a whole (summary: "It\'s")'),
        ("\tsummary: x", 3, "hint: indent with spaces; YAML does not allow tabs there"),
    ],
)
def test_a_yaml_slip_gets_a_hint_at_its_line(make_terms, line: str, where: int, hint: str):
    text = term_text("Alpha").replace("summary: One line about Alpha.", line)
    folder = make_terms({"alpha": text})
    [error] = errors_of(folder)
    assert error.startswith(f"alpha.md:{where}: front matter: invalid YAML: ")
    assert error.endswith(f"; {hint}")


def test_an_unclosed_bracket_is_read_as_a_list_and_the_hint_says_quote_it(make_terms):
    folder = make_terms({"alpha": "---\ntitle: Alpha\nsummary: [unclosed\n---\n## Example\nx\n"})
    [error] = errors_of(folder)
    assert error.endswith("""; hint: quote a value that starts with '[' (summary: "[unclosed")""")


# --------------------------------------------------------------------------- word-of-the-day extras


def test_pronunciation_and_did_you_know_are_read_when_present(make_terms):
    extra = (
        "pronunciation: RAG — rhymes with bag\n"
        "did_you_know: >-\n  Coined in 2020,\n    folded over\n  lines.\n"
    )
    folder = make_terms({"alpha": term_text("Alpha", extra=extra)})
    term = load_glossary(folder)["alpha"]
    assert term.pronunciation == "RAG — rhymes with bag"
    assert term.did_you_know == "Coined in 2020, folded over lines."  # one paragraph, spaced once
    plain = load_glossary(make_terms({"alpha": term_text("Alpha")}))["alpha"]
    assert (plain.pronunciation, plain.did_you_know) == (None, None)


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ('pronunciation: "a\\nb"\n', "pronunciation: must be one line: line breaks"),
        ("pronunciation: " + "x" * 81 + "\n", "pronunciation: String should have at most 80"),
        ("pronunciation: 3\n", "pronunciation: Input should be a valid string (got int)"),
        ("did_you_know: " + "y " * 201 + "\n", "did_you_know: String should have at most 400"),
        ("did_you_know: [a]\n", "did_you_know: Input should be a valid string (got list)"),
        ('did_you_know: "\\u200b"\n', "did_you_know: must contain visible text"),
    ],
)
def test_pronunciation_and_did_you_know_follow_the_text_rules(make_terms, extra, error):
    folder = make_terms({"alpha": term_text("Alpha", extra=extra)})
    [found] = errors_of(folder)
    assert found.startswith(f"alpha.md:13: {error}"), found
