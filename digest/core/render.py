"""Rendering: Jinja2 templates → MJML → responsive HTML, plain text, archive pages.

Templates come from a project's own `templates_dir`, file by file, and otherwise from the default
theme shipped in the package (`templates/` of a checkout): a site changes one template without
copying the theme.

Pure functions: they take data (an issue snapshot, settings) and return strings — no database, no
clock — so the same inputs always give byte-identical output.
"""

from __future__ import annotations

import textwrap
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode
from mjml import mjml2html

from digest.config import Settings, language_tag
from digest.core import i18n
from digest.core.dates import issue_date, long_date, week_label
from digest.core.mail_style import DARK, mail_palette, styled_prose
from digest.core.mails import PLACEHOLDERS
from digest.core.section_names import translated_sections
from digest.core.urls import Urls
from digest.model.snapshot import Snapshot, SnapshotTerm
from digest.model.weeks import IsoWeek, parse_week
from digest.packaged import default_theme_dir

__all__ = [
    "RenderError",
    "RenderedIssue",
    "base_context",
    "environment",
    "issue_context",
    "issue_lines",
    "markdown_to_text",
    "mjml_to_html",
    "preheader_text",
    "render_article",
    "render_issue",
    "render_mail",
    "render_template",
    "subject_line",
    "template_roots",
]

TEXT_WIDTH = 72


class RenderError(Exception):
    """A template or its MJML is broken; the message names the template."""


@dataclass(frozen=True, slots=True)
class RenderedIssue:
    """Everything one issue renders to; per-subscriber values are still PLACEHOLDERS markers."""

    week: IsoWeek
    subject: str
    preheader: str
    mjml: str
    html: str
    text: str
    archive_html: str


# --------------------------------------------------------------------------- templates


def template_roots(templates_dir: Path) -> tuple[Path, ...]:
    """Where templates are looked up, first match wins: the project's overrides, then the
    default theme. Absolute, so a later change of working folder cannot mix two projects; one
    root when the overrides folder is the theme itself (`digest` run at a checkout's root)."""
    overrides, theme = templates_dir.resolve(), default_theme_dir().resolve()
    return (theme,) if overrides == theme else (overrides, theme)


def environment(templates_dir: Path) -> jinja2.Environment:
    """The Jinja2 environment for a project whose override templates are in `templates_dir`.

    Every template, mail and web page alike, is loaded through it. The folder need not exist:
    a template not found there comes from the default theme. Jinja checks a loaded template's
    own file for edits, so a running `digest run` sees a changed override, but a new override
    of a template it already loaded from the theme only after a restart.
    Autoescape is on for every markup template (.html, .mjml, .xml and their .j2 forms) so any
    text a term file carries is escaped; `.txt.j2` templates are plain text and not escaped.
    StrictUndefined turns a typo in a template into an error instead of an empty string.
    """
    return _environment(template_roots(templates_dir))


@lru_cache(maxsize=8)
def _environment(roots: tuple[Path, ...]) -> jinja2.Environment:
    env = jinja2.Environment(
        # A FileSystemLoader over several folders is Jinja's ChoiceLoader of one loader per
        # folder: `{% extends %}` and `{% include %}` resolve the same way, so an override of
        # `base.mjml.j2` frames the theme's `email.mjml.j2`.
        loader=jinja2.FileSystemLoader([str(root) for root in roots]),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "mjml", "xml", "html.j2", "mjml.j2", "xml.j2"),
            default_for_string=True,
        ),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    # One environment for every language: `_()` and `{% trans %}` look the locale up in the
    # context being rendered (`base_context` puts it there), so each template is compiled once
    # and a mail in Dutch and one in English share it. Newstyle: `{{ _("%(n)s issues", n=3) }}`
    # formats and autoescapes its values; trimmed: a `{% trans %}` spread over lines is one
    # sentence in the catalogue (babel.cfg extracts with the same policy).
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_callables(  # type: ignore[attr-defined]  # added by the extension
        _context_gettext, _context_ngettext, newstyle=True
    )
    return env


@jinja2.pass_context
def _context_gettext(context: jinja2.runtime.Context, message: str) -> str:
    return i18n.translations(_locale_of(context)).gettext(message)


@jinja2.pass_context
def _context_ngettext(context: jinja2.runtime.Context, singular: str, plural: str, n: int) -> str:
    return i18n.translations(_locale_of(context)).ngettext(singular, plural, n)


def _locale_of(context: jinja2.runtime.Context) -> str:
    """The locale a template renders in: its context's `locale`; the source language for a
    context that names none (a template rendered outside `base_context`)."""
    locale = context.get("locale")
    return locale if isinstance(locale, str) and locale else i18n.SOURCE_LOCALE


def mjml_to_html(mjml: str, template: str) -> str:
    """Compile MJML to HTML with mjml-python; errors name the template they came from.

    `fonts={}` stops MJML adding Google Fonts imports: the mail uses system fonts, and a font
    request would tell a third party when each subscriber opened it.
    """
    try:
        return mjml2html(mjml, disable_comments=True, fonts={})
    except (ValueError, RuntimeError) as exc:
        raise RenderError(f"{template}: invalid MJML: {exc}") from exc


def render_template(
    templates_dir: Path,
    name: str,
    context: Mapping[str, object],
    *,
    locale: str | None = None,
) -> str:
    """Render `name`; any template error becomes a RenderError naming the template and line.

    Its fixed strings are in the context's `locale` (`base_context`'s), or in `locale` when
    given, which also sets the context's `language` to match."""
    if locale is not None:
        context = {**context, "locale": locale, "language": language_tag(locale)}
    try:
        return environment(templates_dir).get_template(name).render(**context)
    except jinja2.TemplateError as exc:
        raise RenderError(f"{_where(exc, templates_dir, name)}: {exc}") from exc


def _where(exc: jinja2.TemplateError, templates_dir: Path, name: str) -> str:
    """`template:line` of an error. Syntax errors carry it; for errors while rendering (an
    undefined name, say) Jinja puts the template's own line into the traceback, which may be
    in a parent or included template rather than `name`."""
    lineno = getattr(exc, "lineno", None)
    if lineno:
        return f"{getattr(exc, 'name', None) or name}:{lineno}"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not frame.filename.endswith(".j2"):
            continue
        for root in template_roots(templates_dir):
            if Path(frame.filename).is_relative_to(root):
                return f"{Path(frame.filename).relative_to(root).as_posix()}:{frame.lineno}"
    return name


def render_mail(
    templates_dir: Path,
    name: str,
    context: Mapping[str, object],
    *,
    locale: str | None = None,
) -> tuple[str, str, str]:
    """(mjml, html, text) of the mail `name`: `<name>.mjml.j2` and `<name>.txt.j2`, in the
    context's locale or `locale` (as `render_template`)."""
    mjml = render_template(templates_dir, f"{name}.mjml.j2", context, locale=locale)
    html = mjml_to_html(mjml, f"{name}.mjml.j2")
    text = render_template(templates_dir, f"{name}.txt.j2", context, locale=locale)
    return mjml, html, text


# --------------------------------------------------------------------------- context and lines


def base_context(settings: Settings, locale: str | None = None) -> dict[str, Any]:
    """What every page and mail template sees, whatever else it shows: the site's name, its
    `locale` (the catalogue its strings come from: `locale`, else the setting) and `language`
    (that locale's tag, for `lang=`) and postal address, its addresses (`urls`, and the common
    ones by name), what it counts about readers (`tracking`), which every reader-facing page
    must say, and the mails' look (`palette`, `palette_dark`, `logo`: digest.core.mail_style)."""
    urls = Urls.from_settings(settings, locale)  # before the copy: it knows the own locale
    settings = settings.for_locale(locale)
    logo = None
    if settings.logo_url:
        logo = {
            "url": settings.logo_url,
            "alt": settings.logo_alt or settings.newsletter_name,
            "width": settings.logo_width,
        }
    return {
        "locale": settings.locale,
        "language": settings.language,
        "newsletter_name": settings.newsletter_name,
        "postal_address": settings.postal_address,
        "base_url": settings.base_url,
        "site_url": settings.site_url,
        "urls": urls,
        "subscribe_url": urls.home(),
        "archive_index_url": urls.archive_index(),
        "feed_url": urls.feed(),
        # What readers are told about counting (templates/tracking.j2, docs/engagement.md).
        "tracking": {
            "on": settings.track_clicks or settings.track_opens,
            "clicks": settings.track_clicks,
            "opens": settings.track_opens,
            "per_reader": settings.tracking_detail == "per-reader",
        },
        "palette": mail_palette(settings.brand_color),
        "palette_dark": DARK,
        "logo": logo,
    }


def subject_line(title: str, newsletter_name: str, limit: int) -> str:
    """The default subject: `<title> — <newsletter name>` (`RAG — AI Term of the Week`).

    Never cut and never an ellipsis: a subject trimmed mid-thought reads as a mistake in every
    inbox. When title and name together pass `limit` (the length `digest check` warns at), the
    title stands alone; a title longer than that is the editor's to shorten (`subject:`).
    """
    title = " ".join(title.split())
    name = " ".join(newsletter_name.split())
    both = f"{title} — {name}" if name else title
    return both if len(both) <= limit else title


def preheader_text(summary: str) -> str:
    """The inbox preview line: the term's summary, on one line (the subject names the term)."""
    return " ".join(summary.split())


def issue_lines(
    term: SnapshotTerm,
    settings: Settings,
    *,
    subject: str | None = None,
    preheader: str | None = None,
) -> tuple[str, str]:
    """(subject, preheader) of an issue: an editor's per-issue override first, then the term
    file's own `subject:` / `preheader:`, then the defaults. Snapshots from before terms could
    carry their own lines simply lack the keys."""
    chosen_subject = (
        subject
        or term.get("subject")
        or subject_line(term["title"], settings.newsletter_name, settings.subject_warn_length)
    )
    chosen_preheader = preheader or term.get("preheader") or preheader_text(term["summary"])
    return chosen_subject, chosen_preheader


# --------------------------------------------------------------------------- plain text

_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")


def markdown_to_text(markdown: str, width: int = TEXT_WIDTH) -> str:
    """Markdown as plain text that reads well on its own.

    Paragraphs and list items are wrapped at `width`, links become `label <url>`, code blocks are
    kept verbatim and indented four spaces, tables become `a | b` rows. URLs are never broken.
    """
    root = SyntaxTreeNode(_markdown.parse(markdown))
    return "\n".join(_blocks(root.children, width))


def _blocks(nodes: Sequence[SyntaxTreeNode], width: int, gap: bool = True) -> list[str]:
    out: list[str] = []
    for node in nodes:
        lines = _block(node, width)
        if not lines:
            continue
        if out and gap:
            out.append("")
        out.extend(lines)
    return out


def _block(node: SyntaxTreeNode, width: int) -> list[str]:
    kind = node.type
    if kind == "paragraph":
        return _wrap(_inline(node.children[0]) if node.children else "", width)
    if kind == "heading":
        title = _inline(node.children[0]) if node.children else ""
        return [title, "~" * len(title)]
    if kind in ("bullet_list", "ordered_list"):
        return _list(node, width)
    if kind == "blockquote":
        return [f"> {line}".rstrip() for line in _blocks(node.children, max(width - 2, 20))]
    if kind in ("fence", "code_block"):
        return [f"    {line}" if line else "" for line in node.content.rstrip("\n").split("\n")]
    if kind == "hr":
        return ["* * *"]
    if kind == "table":
        return _table(node)
    return _blocks(node.children, width)


def _list(node: SyntaxTreeNode, width: int) -> list[str]:
    items = node.children
    if node.type == "ordered_list":
        start = int(node.attrs.get("start", 1))
        markers = [f"{start + i}." for i in range(len(items))]
    else:
        markers = ["-"] * len(items)
    pad = max(len(m) for m in markers) + 1
    # markdown-it hides the paragraphs of a tight list: no blank lines between its items.
    tight = all(p.hidden for item in items for p in item.children if p.type == "paragraph")
    out: list[str] = []
    for marker, item in zip(markers, items, strict=True):
        if out and not tight:
            out.append("")
        body = _blocks(item.children, max(width - pad, 20), gap=not tight) or [""]
        for i, line in enumerate(body):
            prefix = marker.ljust(pad) if i == 0 else " " * pad
            out.append(f"{prefix}{line}".rstrip())
    return out


def _table(node: SyntaxTreeNode) -> list[str]:
    out: list[str] = []
    for part in node.children:  # thead, tbody
        for row in part.children:
            cells = [_inline(cell.children[0]) if cell.children else "" for cell in row.children]
            out.append(" | ".join(cells))
            if part.type == "thead":
                out.append("-" * len(out[-1]))
    return out


def _inline(node: SyntaxTreeNode) -> str:
    parts: list[str] = []
    for child in node.children:
        kind = child.type
        if kind in ("text", "code_inline"):
            parts.append(child.content)
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind == "link":
            label, href = _inline(child), str(child.attrs.get("href", ""))
            parts.append(label if href in (label, f"mailto:{label}") else f"{label} <{href}>")
        elif kind == "image":
            parts.append(f"[{_inline(child) or 'image'}]")
        else:  # emphasis, strong, strikethrough: the words are what matter in plain text
            parts.append(_inline(child))
    return "".join(parts)


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for line in text.split("\n"):
        lines.extend(
            textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False) or [""]
        )
    return lines


# --------------------------------------------------------------------------- issues


def _context(
    snapshot: Snapshot,
    settings: Settings,
    *,
    subject: str | None = None,
    preheader: str | None = None,
    locale: str | None = None,
) -> dict[str, Any]:
    """What every issue template sees: the frozen snapshot plus the site's addresses, and the
    issue's calendar date and those of the earlier issues it links, in `locale` (None: the
    newsletter's own; `settings` are the newsletter's, so the addresses know to add `lang=`)."""
    week = parse_week(snapshot["week"])
    term = snapshot["term"]
    context = base_context(settings, locale)
    urls: Urls = context["urls"]
    settings = settings.for_locale(locale)
    subject, preheader = issue_lines(term, settings, subject=subject, preheader=preheader)
    day = issue_date(week, settings.schedule, settings.timezone)
    return {
        **context,
        "week": str(week),
        "week_label": week_label(week, settings.locale),
        "week_number": week.week,
        "issue_date": long_date(day, settings.locale),
        "issue_date_iso": day.isoformat(),
        "term": {**term, "sections": translated_sections(term["sections"], settings.locale)},
        "related": snapshot.get("related") or [],
        "news": snapshot.get("news") or [],
        "previous_issues": [
            {
                **p,
                "url": urls.in_language(p["url"]),
                "date_label": long_date(date.fromisoformat(p["date"]), settings.locale),
            }
            for p in snapshot.get("previous") or []
        ],
        "subject": subject,
        "preheader": preheader,
        "quiz": snapshot.get("quiz"),
        "archive_url": context["urls"].archive_page(week),
        "unsubscribe_url": PLACEHOLDERS["unsubscribe_url"],
        "preferences_url": PLACEHOLDERS["preferences_url"],
    }


def render_issue(
    snapshot: Snapshot,
    settings: Settings,
    *,
    subject: str | None = None,
    preheader: str | None = None,
    locale: str | None = None,
) -> RenderedIssue:
    """Render one issue from its snapshot: email (MJML and HTML), plain text and archive page.

    `subject` / `preheader` are an editor's overrides for this issue (`issue_lines`); the
    preheader is part of the HTML, so an override means a new render, not a new column value.
    `locale`: the rendition's language (None: the newsletter's, `settings.locale`); everything
    below renders with settings in that locale, so every date and string follows it.
    """
    context = _context(snapshot, settings, subject=subject, preheader=preheader, locale=locale)
    settings = settings.for_locale(locale)
    context["text_sections"] = [
        {"title": s["title"], "text": markdown_to_text(s["markdown"])}
        for s in context["term"]["sections"]
    ]
    # The frozen HTML with the mail's styles on every element (some clients drop <head> styles).
    context["mail_sections"] = [
        {"title": s["title"], "html": styled_prose(s["html"], context["palette"])}
        for s in context["term"]["sections"]
    ]
    mjml, html, text = render_mail(settings.templates_dir, "email", context)
    archive_html = render_template(settings.templates_dir, "archive/issue.html.j2", context)
    return RenderedIssue(
        week=parse_week(snapshot["week"]),
        subject=context["subject"],
        preheader=context["preheader"],
        mjml=mjml,
        html=html,
        text=text,
        archive_html=archive_html,
    )


def render_article(snapshot: Snapshot, settings: Settings, *, with_title: bool = True) -> str:
    """The issue's content as an HTML fragment: the archive page's body, and the feed's content.

    The feeds pass `with_title=False`: a reader shows the item's own title above its content,
    so an `<h1>` of the same title would show it twice."""
    context = {**_context(snapshot, settings), "with_title": with_title}
    return render_template(settings.templates_dir, "archive/_article.html.j2", context)


def issue_context(
    snapshot: Snapshot, settings: Settings, locale: str | None = None
) -> dict[str, Any]:
    """What an issue's templates see, for a page rendered on its own from the frozen snapshot
    (the archive's, `digest.core.archive`), without an editor's mail-only overrides, in
    `locale` (None: the newsletter's own)."""
    return _context(snapshot, settings, locale=locale)
