"""`digest terms …`: list, show and validate, as an editor would run them."""

from __future__ import annotations

from typer.testing import CliRunner

from digest.cli import app
from tests.conftest import term_text

runner = CliRunner()


def test_validate_passes_on_the_starter_glossary():
    result = runner.invoke(app, ["terms", "validate", "terms"])
    assert result.exit_code == 0, result.output
    count, _, rest = result.output.strip().splitlines()[0].partition(" ")
    assert int(count) >= 60
    assert rest == "terms, 0 errors"


def test_validate_lists_every_problem_and_exits_1(make_terms):
    folder = make_terms(
        {
            "alpha": term_text("Alpha", difficulty="expert", related=["beta"]),
            "beta": term_text("Beta", related=["ghost"]),
        }
    )
    result = runner.invoke(app, ["terms", "validate", str(folder)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert (
        f"{folder}/alpha.md:7: difficulty: must be one of beginner, intermediate, advanced (got 'expert')"
        in lines
    )
    assert f"{folder}/beta.md:9: related: unknown term 'ghost'" in lines
    assert lines[-1] == "2 errors in 2 files"


def test_list_filters_by_category(make_terms):
    folder = make_terms(
        {
            "alpha": term_text("Alpha", related=["beta"], category="Training"),
            "beta": term_text("Beta", related=["alpha"]),
        }
    )
    result = runner.invoke(app, ["--terms", str(folder), "terms", "list", "--category", "training"])
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output
    assert "beta" not in result.output
    unknown = runner.invoke(app, ["--terms", str(folder), "terms", "list", "--category", "Nope"])
    assert unknown.exit_code == 1
    assert "no category 'Nope'" in unknown.output


def test_show_finds_a_term_by_alias(make_terms):
    folder = make_terms(
        {
            "alpha": term_text("Alpha", related=["beta"], aliases="[{name: alfa, lang: nl}]"),
            "beta": term_text("Beta", related=["alpha"]),
        }
    )
    result = runner.invoke(app, ["--terms", str(folder), "terms", "show", "ALFA"])
    assert result.exit_code == 0, result.output
    assert "Alpha" in result.output
    assert "alfa (nl)" in result.output
    assert "beta: One line about Beta." in result.output


def test_commands_refuse_a_glossary_without_one_valid_term_with_its_errors(make_terms):
    folder = make_terms({"alpha": term_text("Alpha", related=["ghost"])})
    result = runner.invoke(app, ["--terms", str(folder), "terms", "list"])
    assert result.exit_code == 1
    assert "related: unknown term 'ghost'" in result.output
