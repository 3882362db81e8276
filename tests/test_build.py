"""Building an issue: pick, freeze, render, gate, store, consume the queue; files, CLI, gates."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from digest.campaign.build import (
    build_issue,
    build_site,
    make_snapshot,
    preview_issue,
    sample_markers,
    write_build,
)
from digest.cli import app
from digest.core.archive import archive_page
from digest.core.checks import GMAIL_CLIP_BYTES, QualityError, check_email, check_page
from digest.core.feed import render_feed
from digest.core.mails import PLACEHOLDERS, fill_markers
from digest.core.selection import Pick
from digest.model.weeks import IsoWeek
from digest.store import db
from digest.store.issues import InvalidTransition, get_issue, list_issues, transition
from digest.store.queue import add_to_queue, list_queue
from digest.store.terms import load_glossary
from tests.conftest import term_text
from tests.test_render import settings_for

W47, W48 = IsoWeek(2026, 47), IsoWeek(2026, 48)
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=3)
runner = CliRunner()

FILES = [
    "email.html",
    "email.txt",
    "email.mjml",
    "feed.xml",
    "feed.atom",
    "feed.json",
    "feed.xsl",
    "issues/2026-W48/index.html",
    "issues/index.html",
    # The glossary site (docs/glossary-site.md): its index and a page per term.
    "glossary/index.html",
    "glossary/alpha/index.html",
    "glossary/beta/index.html",
    "glossary/delta/index.html",
    "glossary/gamma/index.html",
]


def small_terms(**changes: str) -> dict[str, str]:
    """Four related terms; `changes` replaces a term's file text by slug."""
    files = {
        "alpha": term_text("Alpha", related=["beta", "gamma"], definition="Alpha, version one."),
        "beta": term_text("Beta", related=["alpha"]),
        "gamma": term_text("Gamma", related=["alpha", "delta"], definition="Gamma, version one."),
        "delta": term_text("Delta", related=["gamma"]),
    }
    files.update(changes)
    return files


@pytest.fixture
def settings():
    return settings_for()


@pytest.fixture
def glossary(make_terms):
    return load_glossary(make_terms(small_terms()))


def build(engine, settings, glossary, week=W48, **kwargs):
    return build_issue(engine, settings, glossary, week, now=NOW, news=[], **kwargs)


# --------------------------------------------------------------------------- build_issue


def test_build_stores_a_built_issue_rendered_from_its_snapshot(engine, settings, glossary):
    record = build(engine, settings, glossary)
    assert record.status == "built"
    assert record.built_at == NOW
    assert record.pick_source == "rotation"
    stored = get_issue(engine, W48)
    assert stored == record
    assert record.snapshot is not None
    term = record.snapshot["term"]
    assert term["slug"] == record.featured_slug
    assert term["url"] == f"{settings.site_url}/{record.featured_slug}"
    assert [r["slug"] for r in record.snapshot["related"]] == list(record.related_slugs)
    assert record.subject is not None and term["title"] in record.subject
    assert term["definition"] in (record.html or "")
    assert term["definition"] in (record.text or "")
    assert term["definition"] in (record.archive_html or "")


def test_snapshot_is_plain_json_with_markdown_and_html_sections(engine, settings, glossary):
    record = build(engine, settings, glossary)
    assert record.snapshot is not None
    assert json.loads(json.dumps(record.snapshot)) == record.snapshot
    section = record.snapshot["term"]["sections"][0]
    assert set(section) == {"title", "markdown", "html"}
    assert section["html"].startswith("<p>")
    assert record.snapshot["pick"] == {"source": "rotation", "note": None}
    expected = make_snapshot(settings, glossary, Pick(W48, record.featured_slug, "rotation"))
    assert record.snapshot == expected


def test_queued_term_is_featured_and_taken_off_the_queue(engine, settings, glossary):
    add_to_queue(engine, glossary, "gamma", note="editor's choice", now=db.utcnow())
    record = build(engine, settings, glossary)
    assert (record.featured_slug, record.pick_source) == ("gamma", "queue")
    assert record.snapshot is not None
    assert record.snapshot["pick"] == {"source": "queue", "note": "editor's choice"}
    assert list_queue(engine) == []


def test_pinned_term_is_featured_in_its_week_and_consumed(engine, settings, glossary):
    add_to_queue(engine, glossary, "delta", week=W48, now=db.utcnow())
    add_to_queue(engine, glossary, "beta", now=db.utcnow())
    record = build(engine, settings, glossary)
    assert (record.featured_slug, record.pick_source) == ("delta", "pin")
    assert [e.slug for e in list_queue(engine)] == ["beta"]


def test_a_built_week_is_returned_unchanged(engine, settings, glossary, make_terms):
    first = build(engine, settings, glossary)
    edited = load_glossary(make_terms(small_terms(alpha=term_text("Alpha", related=["beta"]))))
    again = build_issue(engine, settings, edited, W48, now=LATER, news=[])
    assert again == first


def test_rebuild_keeps_the_term_and_takes_glossary_edits(engine, settings, glossary, make_terms):
    add_to_queue(engine, glossary, "gamma", now=db.utcnow())
    build(engine, settings, glossary)
    edited = load_glossary(
        make_terms(
            small_terms(
                gamma=term_text(
                    "Gamma", related=["alpha", "delta"], definition="Gamma, typo fixed."
                )
            )
        )
    )
    record = build_issue(engine, settings, edited, W48, now=LATER, news=[], rebuild=True)
    # The queue entry was used up by the first build; the rebuild must not move on to another.
    assert (record.featured_slug, record.pick_source) == ("gamma", "queue")
    assert "Gamma, typo fixed." in (record.html or "")
    assert record.built_at == LATER


def test_rebuild_takes_a_pin_made_since(engine, settings, glossary):
    first = build(engine, settings, glossary)
    other = next(s for s in ("alpha", "beta", "gamma", "delta") if s != first.featured_slug)
    add_to_queue(engine, glossary, other, week=W48, now=db.utcnow())
    record = build(engine, settings, glossary, rebuild=True)
    assert (record.featured_slug, record.pick_source) == (other, "pin")
    assert list_queue(engine) == []


def test_rebuild_is_refused_once_sending_started(engine, settings, glossary):
    first = build(engine, settings, glossary)
    transition(engine, W48, "sending", now=NOW)
    with pytest.raises(InvalidTransition, match="2026-W48 is sending; its content is frozen"):
        build(engine, settings, glossary, rebuild=True)
    assert get_issue(engine, W48).html == first.html  # type: ignore[union-attr]


def test_an_issue_failing_its_gates_is_not_stored_and_stays_queued(engine, settings, make_terms):
    body = textwrap.dedent(
        """\
        ## Why it matters

        See [our page](/relative/page) and ![](https://example.org/chart.png).

        ## How it works

        It works.

        ## Example

        An example.
        """
    )
    glossary = load_glossary(make_terms(small_terms(delta=term_text("Delta", body=body))))
    add_to_queue(engine, glossary, "delta", now=db.utcnow())
    with pytest.raises(QualityError) as caught:
        build(engine, settings, glossary)
    assert "<a href='/relative/page'> is not an absolute http(s) URL" in str(caught.value)
    assert "<img src='https://example.org/chart.png'> has no alt text" in str(caught.value)
    assert str(caught.value).startswith("issue 2026-W48 (delta) failed")
    assert get_issue(engine, W48) is None
    assert [e.slug for e in list_queue(engine)] == ["delta"]


# --------------------------------------------------------------------------- what went out


def test_archive_and_feed_show_what_went_out_after_the_glossary_changes(
    engine, settings, glossary, make_terms
):
    add_to_queue(engine, glossary, "alpha", now=db.utcnow())
    build(engine, settings, glossary)
    transition(engine, W48, "sending", now=NOW)
    transition(engine, W48, "sent", now=NOW)
    edited = load_glossary(
        make_terms(
            small_terms(alpha=term_text("Alpha", related=["beta"], definition="Alpha, rewritten."))
        )
    )
    assert "Alpha, rewritten." in edited["alpha"].definition
    record = get_issue(engine, W48)
    assert record is not None
    assert "Alpha, version one." in archive_page(settings, record)
    feed = render_feed(settings, list_issues(engine, statuses=["sent"]), NOW)
    assert "Alpha, version one." in feed and "rewritten" not in feed
    # The page is rendered from the snapshot, never from the stored page: an issue without one
    # (say, from an older version) shows the same.
    with engine.begin() as conn:
        conn.execute(update(db.issues).values(archive_html=None))
    bare = get_issue(engine, W48)
    assert bare is not None and bare.archive_html is None
    assert archive_page(settings, bare) == archive_page(settings, record)


# --------------------------------------------------------------------------- files


def test_build_site_writes_mail_archive_and_feed(engine, settings, glossary, tmp_path):
    out = build_site(engine, settings, glossary, W48, tmp_path / "out", now=NOW)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in out.files) == sorted(FILES)
    # The mail as a sample reader gets it, so the file works in a browser.
    sample = sample_markers(settings)
    html, text = (tmp_path / "out/email.html").read_text(), (tmp_path / "out/email.txt").read_text()
    assert html == fill_markers(out.record.html or "", sample)
    assert text == fill_markers(out.record.text or "", sample)
    assert (tmp_path / "out/email.mjml").read_text().startswith('<mjml lang="en">')
    assert "2026-W48" in (tmp_path / "out/issues/index.html").read_text()
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_builds_are_byte_identical_for_the_same_inputs(
    engine, settings, glossary, tmp_path, make_terms
):
    build_site(engine, settings, glossary, W48, tmp_path / "first", now=NOW)
    # Rebuilt days later, from a re-read glossary: the clock must not leak into any file.
    again = load_glossary(make_terms(small_terms()))
    build_site(engine, settings, again, W48, tmp_path / "second", now=LATER, rebuild=True)
    # And in a database of its own.
    other = db.make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    db.upgrade(other)
    build_site(other, settings, glossary, W48, tmp_path / "third", now=LATER)
    other.dispose()
    for name in FILES:
        first = (tmp_path / "first" / name).read_bytes()
        assert (tmp_path / "second" / name).read_bytes() == first, name
        assert (tmp_path / "third" / name).read_bytes() == first, name


def test_static_feed_and_index_list_sent_issues_and_this_one(engine, settings, glossary, tmp_path):
    build(engine, settings, glossary, week=W47)
    transition(engine, W47, "sending", now=NOW)
    transition(engine, W47, "sent", now=NOW)
    build_site(engine, settings, glossary, W48, tmp_path, now=NOW)
    feed = (tmp_path / "feed.xml").read_text()
    assert feed.index("issues/2026-W48</link>") < feed.index("issues/2026-W47</link>")
    index = (tmp_path / "issues/index.html").read_text()
    assert index.index("issues/2026-W48") < index.index("issues/2026-W47")


def test_write_build_without_feed_writes_the_mail_and_page_only(settings, glossary, tmp_path):
    from digest.core.render import render_issue

    rendered = render_issue(
        make_snapshot(settings, glossary, Pick(W48, "beta", "rotation")), settings
    )
    written = write_build(tmp_path, rendered, settings)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "email.html",
        "email.mjml",
        "email.txt",
        "issues/2026-W48/index.html",
    ]


def test_preview_stores_and_consumes_nothing(engine, settings, glossary):
    add_to_queue(engine, glossary, "gamma", now=db.utcnow())
    rendered, problems = preview_issue(engine, settings, glossary, W48, now=NOW, news=[])
    assert problems == []
    assert "Gamma" in rendered.subject
    assert get_issue(engine, W48) is None
    assert [e.slug for e in list_queue(engine)] == ["gamma"]


# --------------------------------------------------------------------------- starter glossary


def test_starter_glossary_issues_pass_every_gate_well_under_the_clip_limit(
    engine, settings, starter_glossary
):
    for offset in range(4):
        record = build_issue(engine, settings, starter_glossary, W48 + offset, now=NOW, news=[])
        html = record.html or ""
        assert len(html.encode()) < GMAIL_CLIP_BYTES / 2
        assert check_email(html, record.text or "") == []
        assert check_page(record.archive_html or "") == []


# --------------------------------------------------------------------------- quality gates

GOOD_TEXT = "word " * 40 + PLACEHOLDERS["unsubscribe_url"]


def page(body: str, lang: str = ' lang="en"') -> str:
    return f"<!doctype html><html{lang}><head><title>t</title></head><body>{body}</body></html>"


UNSUBSCRIBE = f'<a href="{PLACEHOLDERS["unsubscribe_url"]}">Unsubscribe</a>'


def test_gates_pass_a_clean_mail():
    assert (
        check_email(page(f'<a href="https://x.example.org/">x</a>{UNSUBSCRIBE}'), GOOD_TEXT) == []
    )


def test_gates_require_html_lang():
    assert "html: <html> has no lang attribute" in check_email(page(UNSUBSCRIBE, ""), GOOD_TEXT)


@pytest.mark.parametrize(
    "href", ["/relative", "mailto:a@example.org", "javascript:x()", "", "#top"]
)
def test_gates_require_absolute_web_links(href):
    problems = check_email(page(f'<a href="{href}">x</a>{UNSUBSCRIBE}'), GOOD_TEXT)
    assert f"html: <a href={href!r}> is not an absolute http(s) URL" in problems


def test_gates_require_alt_text_on_images():
    problems = check_email(page(f'<img src="https://x.example.org/i.png">{UNSUBSCRIBE}'), GOOD_TEXT)
    assert problems == ["html: <img src='https://x.example.org/i.png'> has no alt text"]


def test_gates_catch_unknown_markers_and_template_leftovers_outside_code():
    html = page(f"<p>Hi %%first_name%% {{{{ name }}}}</p><code>{{{{ ok }}}}</code>{UNSUBSCRIBE}")
    assert check_email(html, GOOD_TEXT) == [
        "html: unknown placeholder %%first_name%%",
        "html: template syntax left in the output ('{{', '{%' or '{#')",
    ]
    assert check_email(page(f"<pre>{{% raw %}}</pre>{UNSUBSCRIBE}"), GOOD_TEXT) == []


def test_gates_measure_size_with_links_filled_in():
    filler = "<p>" + "x" * (GMAIL_CLIP_BYTES - 400) + "</p>"
    problems = check_email(page(filler + UNSUBSCRIBE), GOOD_TEXT)
    assert any("Gmail clips mail over 102 KB" in p for p in problems)


def test_gates_require_a_real_text_part_with_an_unsubscribe_link():
    assert check_email(page(UNSUBSCRIBE), "") == [
        "text: plain-text part is missing or too short (0 words)"
    ]
    assert check_email(page(UNSUBSCRIBE), "word " * 40) == ["text: no unsubscribe link"]
    code = GOOD_TEXT + "\n\n    print('{{ ok in code }}')\n"
    assert check_email(page(UNSUBSCRIBE), code) == []
    assert check_email(page(UNSUBSCRIBE), GOOD_TEXT + " {{ leftover") == [
        "text: template syntax left in the output ('{{', '{%' or '{#')"
    ]


def test_gates_require_an_unsubscribe_link_in_the_mail():
    assert check_email(page(""), GOOD_TEXT) == ["html: no unsubscribe link"]


def test_public_pages_may_carry_no_per_subscriber_marker():
    problems = check_page(page(f"{UNSUBSCRIBE}<p>Hello %%name_html%%</p>"))
    assert problems == [
        "unknown placeholder %%name_html%%",
        "link to marker %%unsubscribe_url%%, which nothing fills in here",
    ]


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(settings_env, monkeypatch, make_terms):
    monkeypatch.setenv("DIGEST_TERMS_DIR", str(make_terms(small_terms())))
    return settings_env


def test_cli_build_writes_the_files_and_says_where(cli_env, tmp_path):
    out = tmp_path / "site"
    result = runner.invoke(app, ["build", "--week", "2026-W48", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "2026-W48: built" in result.output
    assert f"{out}/email.html" in result.output
    for name in FILES:
        assert (out / name).is_file(), name
    again = runner.invoke(app, ["build", "--week", "2026-W48", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "2026-W48: already built" in again.output


def test_cli_build_rejects_a_bad_week(cli_env, tmp_path):
    result = runner.invoke(app, ["build", "--week", "2026-W60", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "2026-W60 does not exist" in result.output


def test_cli_preview_opens_the_mail_in_a_browser(cli_env, monkeypatch):
    monkeypatch.setenv("BROWSER", "firefox")
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url) or True)
    result = runner.invoke(app, ["preview", "--week", "2026-W48"])
    assert result.exit_code == 0, result.output
    [url] = opened
    assert url.startswith("file://") and url.endswith("/email.html")
    assert Path(url.removeprefix("file://")).read_text().startswith("<!doctype html>")


def test_cli_preview_prints_the_path_without_a_browser(cli_env, monkeypatch):
    for name in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url) or False)
    result = runner.invoke(app, ["preview", "--week", "2026-W48"])
    assert result.exit_code == 0, result.output
    assert opened == []  # no display: a console browser would take over the terminal
    path = next(line for line in result.output.splitlines() if line.endswith("email.html"))
    assert Path(path.split()[-1]).is_file()


# --------------------------------------------------------------------------- speed


def test_a_week_renders_from_a_10000_term_glossary(settings):
    """Pick + snapshot + email + text + archive page + a 20-item feed, warm. Rendering touches
    only the featured term and its neighbours, so the glossary's size must not show."""
    import random

    from digest.core.render import render_issue
    from digest.core.selection import pick_featured
    from digest.model.glossary import Glossary, Section, Source, Term
    from tests.test_render import record_of

    rng = random.Random(7)
    body = "Words about the term and how it relates to others. " * 30
    glossary = Glossary(
        Term(
            slug=f"term-{i}",
            title=f"Term {i}",
            summary=f"Summary of term {i}.",
            definition=f"Term {i} is defined here.",
            category=f"Category {i % 12}",
            difficulty=("beginner", "intermediate", "advanced")[i % 3],
            added=IsoWeek(2026, 1 + i % 50),
            related=tuple(f"term-{j}" for j in rng.sample(range(10_000), 3) if j != i),
            sources=(Source("A source", "https://example.org/source"),),
            sections=tuple(Section(t, body) for t in ("Why it matters", "How it works", "Example")),
        )
        for i in range(10_000)
    )
    history = [(W48 - k, f"term-{k * 37}") for k in range(1, 60)]

    def one_week() -> None:
        pick = pick_featured(glossary, history, [], W48)
        snapshot = make_snapshot(settings, glossary, pick)
        rendered = render_issue(snapshot, settings)
        assert rendered.archive_html
        records = [record_of(snapshot, week=W48 - k) for k in range(settings.feed_items)]
        assert render_feed(settings, records, NOW).count("<item>") == settings.feed_items

    # Timing lives in benchmarks/ (build benchmark); here: the warm path gives the same result.
    one_week()  # cold: indexes built once per glossary, templates compiled
    one_week()
