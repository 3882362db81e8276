"""`digest init DIR`: a new newsletter folder, and a project's templates overriding the theme.

What `digest init` writes (starter terms, digest.toml, templates/, .gitignore) must be enough for
`digest demo` to run in that folder, and a site changes one template without copying the theme.
"""

from __future__ import annotations

import email
import os
import tomllib
from collections.abc import Iterator
from email import policy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from digest.cli import app
from digest.cli.project import DEMO_READERS
from digest.config import Settings, get_settings
from digest.core.render import RenderError, render_template, template_roots
from digest.scaffold import (
    STARTER_TERMS,
    default_theme_dir,
    scaffold,
    settings_toml,
    starter_terms_dir,
)
from digest.store.terms import read_glossary
from digest.web import create_app

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No DIGEST_* setting from the caller's shell or another fixture: only the folder counts."""
    for name in list(os.environ):
        if name.startswith("DIGEST_") or name == "SENDGRID_API_KEY":
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def uncommented(toml_text: str) -> str:
    """digest.toml with every setting that has a default switched on."""
    lines = []
    for line in toml_text.splitlines():
        if line.startswith("#") and not line.startswith("# ") and not line.endswith("="):
            line = line[1:]
        lines.append(line)
    return "\n".join(lines) + "\n"


def html_of(path: Path) -> str:
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    return message.get_body(("html",)).get_content()


# --------------------------------------------------------------------------- digest init


def test_init_writes_starter_terms_settings_an_override_folder_and_a_gitignore(tmp_path):
    site = tmp_path / "site"
    result = runner.invoke(app, ["init", str(site)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (site / "terms").iterdir()) == sorted(
        f"{slug}.md" for slug in STARTER_TERMS
    )
    assert (site / "digest.toml").read_text() == settings_toml()
    assert [p.name for p in (site / "templates").iterdir()] == ["README.md"]
    ignored = (site / ".gitignore").read_text().splitlines()
    assert {"subscribers/", "outbox/", "build/"} <= set(ignored)
    assert f"next: cd {site} && digest demo" in result.output


def test_the_starter_terms_form_a_glossary_that_validates(tmp_path):
    scaffold(tmp_path / "site")
    glossary, errors = read_glossary(tmp_path / "site" / "terms")
    assert errors == []
    assert sorted(t.slug for t in glossary) == sorted(STARTER_TERMS)
    assert len(glossary.components()) == 1  # one related graph, no term left on its own
    result = runner.invoke(app, ["terms", "validate", str(tmp_path / "site" / "terms")])
    assert result.exit_code == 0, result.output
    assert "5 terms, 0 errors" in result.output


def test_starter_terms_keep_their_text_and_lose_only_links_to_terms_not_copied(tmp_path):
    scaffold(tmp_path / "site")
    original = (starter_terms_dir() / "prompting.md").read_text().splitlines()
    copied = (tmp_path / "site" / "terms" / "prompting.md").read_text().splitlines()
    dropped = {"  - system-prompt", "  - large-language-model"}  # not among the starter terms
    assert dropped <= set(original)
    assert copied == [line for line in original if line not in dropped]


def test_digest_toml_lists_every_setting_with_its_environment_variable():
    text = settings_toml()
    for name in Settings.model_fields:
        assert f"\n#{name} =" in text, f"{name} is missing from the generated digest.toml"
    assert "(env DIGEST_BATCH_SIZE; at least 1; at most 1000)" in text
    assert '(env DIGEST_TRANSPORT; one of: "outbox", "sendgrid", "smtp")' in text
    assert "(env SENDGRID_API_KEY or DIGEST_SENDGRID_API_KEY; not set by default)" in text


def test_digest_toml_as_written_changes_nothing(tmp_path, clean_env, monkeypatch):
    (tmp_path / "digest.toml").write_text(settings_toml())
    assert tomllib.loads(settings_toml()) == {}
    monkeypatch.setenv("DIGEST_CONFIG", str(tmp_path / "absent.toml"))
    defaults = Settings().model_dump()
    monkeypatch.setenv("DIGEST_CONFIG", str(tmp_path / "digest.toml"))
    assert Settings().model_dump() == defaults


def test_switching_every_setting_on_gives_exactly_the_defaults(tmp_path, clean_env, monkeypatch):
    # Every default is written as valid TOML that digest reads back to the same value, so
    # removing a "#" never changes behaviour until the value itself is edited.
    switched_on = uncommented(settings_toml())
    data = tomllib.loads(switched_on)
    with_default = {
        name
        for name, info in Settings.model_fields.items()
        if info.get_default(call_default_factory=True) is not None
    }
    assert set(data) == with_default
    (tmp_path / "digest.toml").write_text(switched_on)
    monkeypatch.setenv("DIGEST_CONFIG", str(tmp_path / "absent.toml"))
    defaults = Settings().model_dump()
    monkeypatch.setenv("DIGEST_CONFIG", str(tmp_path / "digest.toml"))
    assert Settings().model_dump() == defaults


def test_init_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["init", str(tmp_path)])
    assert result.exit_code == 1
    assert "is not empty" in result.output and "--force" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_init_refuses_a_path_that_is_a_file(tmp_path):
    (tmp_path / "site").write_text("a file")
    result = runner.invoke(app, ["init", str(tmp_path / "site")])
    assert result.exit_code == 1
    assert "is not a folder" in result.output


def test_init_where_a_folder_cannot_be_made_says_which_path(tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    result = runner.invoke(app, ["init", str(tmp_path / "notes.txt" / "site")])
    assert result.exit_code == 1
    assert f"cannot write {tmp_path / 'notes.txt' / 'site'}" in result.output


def test_init_force_adds_what_is_missing_and_overwrites_nothing(tmp_path):
    site = tmp_path / "site"
    (site / "terms").mkdir(parents=True)
    (site / "terms" / "my-term.md").write_text("my own term")
    (site / "digest.toml").write_text('newsletter_name = "Mine"\n')
    result = runner.invoke(app, ["init", str(site), "--force"])
    assert result.exit_code == 0, result.output
    assert (site / "digest.toml").read_text() == 'newsletter_name = "Mine"\n'
    assert [p.name for p in (site / "terms").iterdir()] == ["my-term.md"]
    assert (site / ".gitignore").is_file() and (site / "templates" / "README.md").is_file()
    assert f"kept {site / 'digest.toml'} (already there)" in result.output
    assert f"kept {site / 'terms'} (already there)" in result.output


def test_init_then_demo_in_the_new_folder_sends_from_its_starter_terms(
    tmp_path, clean_env, monkeypatch
):
    assert runner.invoke(app, ["init", str(tmp_path / "site")]).exit_code == 0
    monkeypatch.chdir(tmp_path / "site")
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "issue sent" in result.output
    assert len(list(Path("outbox").glob("*.eml"))) == len(DEMO_READERS)
    assert Path("subscribers/digest.db").is_file()


def test_demo_in_a_folder_without_terms_says_to_run_digest_init(tmp_path, clean_env, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 1
    assert "digest init" in result.output
    assert "terms" in result.output
    assert list(tmp_path.iterdir()) == []  # no database or outbox left in the wrong folder


# --------------------------------------------------------------------------- overrides


def test_a_site_template_overrides_the_theme_file_by_file(tmp_path, clean_env, monkeypatch):
    """A changed mail frame (the footer lives in base.mjml.j2) in ./templates shows up in the
    sent mail, while the issue itself, from the theme's email.mjml.j2, is unchanged."""
    base = (default_theme_dir() / "base.mjml.j2").read_text()
    assert "{{ postal_address }}" in base
    (tmp_path / "templates").mkdir()
    changed = base.replace("{{ postal_address }}", "Sent with care by the override test")
    (tmp_path / "templates" / "base.mjml.j2").write_text(changed)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIGEST_TERMS_DIR", str(starter_terms_dir()))
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    html = html_of(sorted(Path("outbox").glob("*.eml"))[0])
    assert "Sent with care by the override test" in html
    assert "Example Street 1" not in html  # the theme's footer address is gone
    assert "View in browser" in html  # the theme's email.mjml.j2 still fills the frame


def test_a_site_web_page_template_overrides_the_theme(settings, tmp_path):
    overrides = tmp_path / "templates"
    overrides.mkdir()
    page = (default_theme_dir() / "page.html.j2").read_text()
    (overrides / "page.html.j2").write_text(
        page.replace('{{ _("Archive") }}</a>', "Past issues</a>")
    )
    conf = settings.model_copy(update={"templates_dir": overrides})
    with TestClient(create_app(conf)) as client:
        html = client.get("/").text
    assert "Past issues</a>" in html
    assert 'name="email"' in html  # web/subscribe.html.j2 still comes from the theme


def test_an_error_in_a_theme_template_names_it_and_its_line_when_overrides_are_elsewhere(
    tmp_path,
):
    (tmp_path / "templates" / "web").mkdir(parents=True)
    (tmp_path / "templates" / "web" / "message.html.j2").write_text(
        '{% extends "page.html.j2" %}{% block content %}{{ message }}{% endblock %}'
    )
    # page.html.j2 (from the theme) needs `newsletter_name`; the override does not pass it.
    with pytest.raises(RenderError, match=r"^page\.html\.j2:\d+: .*newsletter_name"):
        render_template(tmp_path / "templates", "web/message.html.j2", {"message": "hi"})


def test_at_a_checkout_root_the_override_folder_is_the_theme_itself(clean_env, monkeypatch):
    monkeypatch.chdir(REPO)
    assert template_roots(Settings().templates_dir) == (default_theme_dir(),)
    assert default_theme_dir() == REPO / "templates"
