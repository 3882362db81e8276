"""A project's templates/ overrides the default theme file by file."""

from __future__ import annotations

import email
import os
from collections.abc import Iterator
from email import policy
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from digest.cli import app
from digest.config import Settings, get_settings
from digest.render import RenderError, render_template, template_roots
from digest.scaffold import default_theme_dir, starter_terms_dir
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


def html_of(path: Path) -> str:
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    return message.get_body(("html",)).get_content()


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
    (overrides / "page.html.j2").write_text(page.replace("Archive</a>", "Past issues</a>"))
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
