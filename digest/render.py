"""Rendering: Jinja2 templates in `templates/` → MJML → responsive HTML, plus plain text.

Pure functions: they take data and return strings (no database, no clock), so the same inputs
always give byte-identical output.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2
from mjml import mjml2html

__all__ = ["RenderError", "environment", "mjml_to_html", "render_mail"]


class RenderError(Exception):
    """A template or its MJML is broken; the message names the template."""


@lru_cache(maxsize=8)
def environment(templates_dir: Path) -> jinja2.Environment:
    """The Jinja2 environment for a templates folder.

    Autoescape is on for every markup template (.html, .mjml, .xml and their .j2 forms) so any
    text a term file carries is escaped; `.txt.j2` templates are plain text and not escaped.
    StrictUndefined turns a typo in a template into an error instead of an empty string.
    """
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "mjml", "xml", "html.j2", "mjml.j2", "xml.j2"),
            default_for_string=True,
        ),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def mjml_to_html(mjml: str, template: str) -> str:
    """Compile MJML to HTML with mjml-python; errors name the template they came from."""
    try:
        return mjml2html(mjml, disable_comments=True)
    except (ValueError, RuntimeError) as exc:
        raise RenderError(f"{template}: invalid MJML: {exc}") from exc


def render_template(templates_dir: Path, name: str, context: dict[str, object]) -> str:
    try:
        return environment(templates_dir).get_template(name).render(**context)
    except jinja2.TemplateError as exc:
        where = f"{name}:{exc.lineno}" if getattr(exc, "lineno", None) else name
        raise RenderError(f"{where}: {exc}") from exc


def render_mail(templates_dir: Path, name: str, context: dict[str, object]) -> tuple[str, str, str]:
    """(mjml, html, text) of the mail `name`: `<name>.mjml.j2` and `<name>.txt.j2`."""
    mjml = render_template(templates_dir, f"{name}.mjml.j2", context)
    html = mjml_to_html(mjml, f"{name}.mjml.j2")
    text = render_template(templates_dir, f"{name}.txt.j2", context)
    return mjml, html, text
