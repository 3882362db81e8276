"""The glossary loader, hardened: which characters a term may carry into the mail, and which
entries of the terms folder are read at all.

Two promises. A term that passes `digest terms validate` renders through MJML: a character MJML
(or a reader's screen) cannot take is refused at validation, naming its file and line, instead
of breaking `digest build` later with an error that names no file. And only regular files inside
the folder are read, judged before anything is opened: no symlink out of the folder, no named
pipe that blocks the reader forever, no device read until memory runs out, no file so large the
build would spend minutes on it.

Entries that would hang or exhaust a process on a regression are validated in a child process
with a time and memory limit, so such a regression fails its test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import pytest
from hypothesis import event, example, given, note, settings
from hypothesis import strategies as st
from markdown_it.common.entities import entities
from typer.testing import CliRunner

from digest.campaign.build import make_snapshot
from digest.cli import app
from digest.config import Settings
from digest.core.render import RenderedIssue, render_issue
from digest.core.selection import Pick
from digest.model.glossary import Glossary
from digest.model.weeks import IsoWeek
from digest.store.terms import MAX_TERM_BYTES, read_glossary
from tests.conftest import REPO, term_text
from tests.test_fuzz import fuzz_examples

runner = CliRunner()
SETTINGS = Settings(
    base_url="https://digest.example.org",
    site_url="https://glossary.example.org",
    language="en",
    newsletter_name="AI Term of the Week",
)
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def must_never_reach_the_mail(ch: str) -> bool:
    """The characters no term may carry, written out independently of the loader's own rule:
    control characters but tab and newline, Unicode noncharacters (U+FDD0–U+FDEF and the last
    two code points of every plane), lone surrogates and the bidirectional overrides."""
    code = ord(ch)
    return (
        (unicodedata.category(ch) == "Cc" and ch not in "\t\n")
        or 0xFDD0 <= code <= 0xFDEF
        or code & 0xFFFE == 0xFFFE
        or 0xD800 <= code <= 0xDFFF
        or ch in BIDI_CONTROLS
    )


def errors_of(folder: Path) -> list[str]:
    _glossary, errors = read_glossary(folder)
    return [str(e).removeprefix(str(folder) + "/") for e in errors]


def body_with(text: str) -> str:
    """A valid body whose "Why it matters" paragraph (line 17 of a `term_text` file) ends in
    `text`."""
    return f"## Why it matters\n\nIt matters.{text}\n\n## How it works\n\nx\n\n## Example\n\ny\n"


def rendered_issue(glossary: Glossary, slug: str = "alpha") -> RenderedIssue:
    """What `digest build` renders for `slug`: snapshot, Jinja2, MJML, plain text and archive."""
    return render_issue(
        make_snapshot(SETTINGS, glossary, Pick(IsoWeek(2026, 10), slug, "rotation")), SETTINGS
    )


# =========================================================================== characters

KINDS = {
    "control": "control characters are not allowed",
    "nonchar": "Unicode noncharacters are not allowed",
    "bidi": "bidirectional override characters are not allowed",
}


@pytest.mark.parametrize(
    ("char", "kind"),
    [
        ("\f", "control"),
        ("\v", "control"),
        ("\x1b", "control"),
        ("\x01", "control"),
        ("\x1f", "control"),
        ("\x7f", "control"),
        ("\x85", "control"),
        ("\x9f", "control"),
        ("\ufffe", "nonchar"),
        ("\uffff", "nonchar"),
        ("\ufdd0", "nonchar"),
        ("\ufdef", "nonchar"),
        ("\U0001fffe", "nonchar"),
        ("\U0010ffff", "nonchar"),
        ("\u202e", "bidi"),
        ("\u2066", "bidi"),
    ],
)
def test_a_body_character_that_breaks_or_hides_mail_is_refused_on_its_line_and_its_neighbour_loads(
    make_terms, char, kind
):
    folder = make_terms(
        {"alpha": term_text("Alpha", body=body_with(char)), "beta": term_text("Beta")}
    )
    glossary, _errors = read_glossary(folder)
    assert errors_of(folder) == [
        f"alpha.md:17: body: {KINDS[kind]} (found U+{ord(char):04X}); remove it"
    ]
    assert glossary.slugs == ["beta"]


def test_every_line_holding_such_a_character_is_reported_once_headings_included(make_terms):
    body = (
        "## Why it matters\n\nOne\f two\f.\n\n## How it works\n\nfine\x1b\n\n"
        "## Example\n\nend\ufffe\n\n## Notes\x1b\n\nn\n"
    )
    assert errors_of(make_terms({"alpha": term_text("Alpha", body=body)})) == [
        "alpha.md:17: body: control characters are not allowed (found U+000C); remove it",
        "alpha.md:21: body: control characters are not allowed (found U+001B); remove it",
        "alpha.md:25: body: Unicode noncharacters are not allowed (found U+FFFE); remove it",
        "alpha.md:27: body: control characters are not allowed (found U+001B); remove it",
    ]


def test_lines_are_counted_as_the_editor_shows_them_after_crlf_and_a_bom(make_terms):
    text = "\ufeff" + term_text("Alpha", body=body_with("\n\nmore\x1b")).replace("\n", "\r\n")
    assert errors_of(make_terms({"alpha": text})) == [
        "alpha.md:19: body: control characters are not allowed (found U+001B); remove it"
    ]


def test_tabs_line_separators_and_direction_marks_stay_allowed_in_the_body(make_terms):
    body = body_with("\tTabbed,\u2028separated, \u200emarked\u200f.\n\n    code\twith a tab")
    glossary = read_glossary(make_terms({"alpha": term_text("Alpha", body=body)}))[0]
    assert glossary.slugs == ["alpha"]
    rendered_issue(glossary)  # and MJML takes them


def test_astral_characters_other_than_noncharacters_stay_allowed(make_terms):
    # Emoji, and U+1FFFD (the code point just before a noncharacter), in a field and the body.
    folder = make_terms(
        {
            "alpha": term_text(
                "Alpha \U0001f600", body=body_with(" \U0001f600 \U0001fffd \U0010fffd")
            )
        }
    )
    glossary, errors = read_glossary(folder)
    assert [str(e) for e in errors] == []
    rendered_issue(glossary)


@pytest.mark.parametrize(
    ("reference", "code"),
    [("&#12;", "000C"), ("&#x0c;", "000C"), ("&#X202E;", "202E"), ("&#13;", "000D")],
)
def test_a_character_reference_standing_for_such_a_character_is_refused_too(
    make_terms, reference, code
):
    # markdown-it decodes references: "&#12;" reaches MJML as a raw form feed.
    folder = make_terms({"alpha": term_text("Alpha", body=body_with(f"\n\nsee {reference}"))})
    [error] = errors_of(folder)
    assert error.startswith("alpha.md:19: body: ")
    assert f"(found U+{code}, written {reference!r}); remove it" in error


def test_a_character_reference_shown_as_code_is_text_and_stays_allowed(make_terms):
    body = body_with("\n\nWrite `&#12;` for a form feed.\n\n    &#x202e; in a code block")
    glossary = read_glossary(make_terms({"alpha": term_text("Alpha", body=body)}))[0]
    assert glossary.slugs == ["alpha"]
    assert "&amp;#12;" in rendered_issue(glossary).html


def test_no_named_html_entity_stands_for_a_refused_character():
    # The reference check looks at numeric references only; this is why that is enough.
    assert [
        name for name, value in entities.items() if any(map(must_never_reach_the_mail, value))
    ] == []


def test_a_front_matter_field_uses_the_same_rule_as_the_body(make_terms):
    # A YAML escape smuggled U+FFFE into the mail's subject and preheader: MJML could not parse it.
    folder = make_terms(
        {
            "alpha": term_text("Alpha", summary='"One \\uFFFE line."'),
            "beta": term_text("Beta", definition='"Beta\\e[31m is red."'),
            "gamma": term_text("Gamma"),
        }
    )
    glossary, _errors = read_glossary(folder)
    assert errors_of(folder) == [
        "alpha.md:3: summary: Unicode noncharacters are not allowed (found U+FFFE); remove it",
        "beta.md:4: definition: control characters are not allowed (found U+001B); remove it",
    ]
    assert glossary.slugs == ["gamma"]


def test_a_character_in_a_definition_spanning_lines_is_reported_on_its_own_line(make_terms):
    text = term_text("Alpha").replace(
        "definition: Alpha is a concept used in the tests.\n",
        "definition: >-\n  Alpha is a concept\n  used in \ufdd0 the tests.\n",
    )
    assert errors_of(make_terms({"alpha": text})) == [
        "alpha.md:6: definition: Unicode noncharacters are not allowed (found U+FDD0); remove it"
    ]


def test_validate_on_the_command_line_lists_each_character_and_exits_1(make_terms):
    folder = make_terms(
        {
            "alpha": term_text("Alpha", body=body_with("\f")),
            "beta": term_text("Beta", body=body_with("\ufffe")),
        }
    )
    result = runner.invoke(app, ["terms", "validate", str(folder)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{folder}/alpha.md:17: body: control characters are not allowed (found U+000C); remove it",
        f"{folder}/beta.md:17: body: Unicode noncharacters are not allowed (found U+FFFE); remove it",
        "2 errors in 2 files",
    ]


# ----- properties: what validation lets through, `digest build` renders

_TRICKY = st.sampled_from(
    [
        *"\f\v\x00\x01\x1b\x7f\x85\x9f\t\r\n\u2028\u2029\u200b\u200e\ufeff\ufffd",
        "\ufffe", "\uffff", "\ufdd0", "\U0001fffe", "\U0010ffff", "\ue000",
        *BIDI_CONTROLS,
        "&#12;", "&#x0C;", "&#13;", "&#x202e;", "&#xFFFE;", "&#0;", "&#x85;", "&amp;", "&#9;",
        "`", "```", "    ", "<b>", "*", "_", "\\", '[a](https://e.org/x "t&#12;")', "|",
    ]
)  # fmt: skip
_body_text = st.lists(
    st.one_of(st.characters(exclude_categories=("Cs",)), _TRICKY), min_size=1, max_size=30
).map("".join)


@settings(max_examples=fuzz_examples(150))
@given(_body_text)
@example("\f")
@example("&#12;")
@example("`&#12;` &#x202e;")
def test_body_text_that_passes_validation_renders_through_mjml_and_a_refused_one_names_its_line(
    text,
):
    file_text = term_text("Alpha", body=body_with(text))
    with tempfile.TemporaryDirectory(prefix="hardening-") as name:
        folder = Path(name)
        (folder / "alpha.md").write_text(file_text, encoding="utf-8", newline="")
        glossary, errors = read_glossary(folder)
    note(f"errors: {[str(e) for e in errors]}")
    # The file as the loader reads it: CRLF and lone CR end a line.
    seen = file_text.replace("\r\n", "\n").replace("\r", "\n")
    first = seen.index("It matters.")
    expected_lines = {
        seen.count("\n", 0, first + i) + 1
        for i, ch in enumerate(seen[first:])
        if must_never_reach_the_mail(ch)
    }
    body_lines = {e.line for e in errors if e.field == "body" and "U+" in e.message}
    assert expected_lines <= body_lines
    event("refused" if errors else "loaded")
    if errors:
        assert "alpha" not in glossary
        return
    rendered = rendered_issue(glossary)  # raises RenderError if MJML cannot parse it
    for part in (rendered.mjml, rendered.html, rendered.text, rendered.archive_html):
        assert not any(map(must_never_reach_the_mail, part)), part


def _yaml_quoted(text: str) -> str:
    """`text` as a YAML double-quoted scalar, with every character YAML would refuse raw
    written as an escape, as an editor could: that is how such characters get into a value."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif (
            must_never_reach_the_mail(ch)
            or ch in "\t\n"
            or unicodedata.category(ch) in ("Zl", "Zp")
        ):
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@settings(max_examples=fuzz_examples(100))
@given(
    st.sampled_from(["title", "summary", "definition", "category"]),
    st.lists(
        st.one_of(st.characters(exclude_categories=("Cs",)), _TRICKY), min_size=1, max_size=12
    ).map("".join),
)
@example("summary", "\ufffe")
@example("title", "\ufdd0")
def test_front_matter_text_that_passes_validation_renders_through_mjml(field, text):
    value = _yaml_quoted("Alpha " + text)
    file_text = term_text("Alpha", **{field: value}) if field != "title" else term_text(value)
    with tempfile.TemporaryDirectory(prefix="hardening-") as name:
        folder = Path(name)
        (folder / "alpha.md").write_text(file_text, encoding="utf-8", newline="")
        glossary, errors = read_glossary(folder)
    note(f"errors: {[str(e) for e in errors]}")
    event("refused" if errors else "loaded")
    if errors:
        return
    rendered = rendered_issue(glossary)
    for part in (rendered.mjml, rendered.html, rendered.text, rendered.archive_html):
        assert not any(map(must_never_reach_the_mail, part)), part


# =========================================================================== which files are read

GUARD_SECONDS = 60
MEMORY_LIMIT = 512 * 2**20
SYMLINK = (
    "file: not a regular file (symlink); links are not followed, so a term cannot come from "
    "outside the folder: replace the link with the file itself"
)


def not_regular(kind: str) -> str:
    return (
        f"file: not a regular file ({kind}); only regular files are read as terms: "
        "remove it, or rename it so its name does not end in .md"
    )


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_guarded(*args: str) -> subprocess.CompletedProcess[str]:
    """`python args…` in a child killed after GUARD_SECONDS and held to 512 MB of address space:
    a regression that opens a named pipe or reads /dev/zero fails the test, never hangs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["PYTHONPATH"] = str(REPO)
    try:
        return subprocess.run(
            [sys.executable, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=GUARD_SECONDS,
            preexec_fn=_limit_memory,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"validation did not finish in {GUARD_SECONDS} s: it blocked on an entry it must not read"
        )


_READ = (
    "import json, sys\n"
    "from digest.store.terms import read_glossary\n"
    "glossary, errors = read_glossary(sys.argv[1])\n"
    "print(json.dumps({'slugs': glossary.slugs, 'errors': [str(e) for e in errors]}))\n"
)


def read_guarded(folder: Path) -> tuple[list[str], list[str]]:
    """(slugs loaded, errors relative to `folder`) of `read_glossary(folder)`, run guarded."""
    result = run_guarded("-c", _READ, str(folder))
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    return out["slugs"], [e.removeprefix(f"{folder}/") for e in out["errors"]]


@pytest.fixture
def folder(make_terms) -> Path:
    """Two valid terms that name each other: they must load whatever sits beside them."""
    return make_terms(
        {
            "alpha": term_text("Alpha", related=["beta"]),
            "beta": term_text("Beta", related=["alpha"]),
        }
    )


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A valid term file outside the terms folder."""
    path = tmp_path / "elsewhere" / "gamma.md"
    path.parent.mkdir()
    path.write_text(term_text("Gamma"), encoding="utf-8")
    return path


def test_a_symlink_to_dev_zero_is_refused_without_being_read(folder):
    os.symlink("/dev/zero", folder / "zero.md")
    assert read_guarded(folder) == (["alpha", "beta"], [f"zero.md: {SYMLINK}"])


def test_a_named_pipe_is_refused_without_being_opened(folder):
    os.mkfifo(folder / "pipe.md")  # opening it to read would wait for a writer forever
    assert read_guarded(folder) == (["alpha", "beta"], [f"pipe.md: {not_regular('named pipe')}"])


def test_a_device_is_refused_without_being_opened(folder):
    try:
        os.mknod(folder / "zero.md", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    assert read_guarded(folder) == (["alpha", "beta"], [f"zero.md: {not_regular('device')}"])


def test_a_symlink_to_a_term_outside_the_folder_is_refused(folder, outside):
    os.symlink(outside, folder / "gamma.md")
    glossary, _errors = read_glossary(folder)
    assert errors_of(folder) == [f"gamma.md: {SYMLINK}"]
    assert glossary.slugs == ["alpha", "beta"]


def test_a_symlink_to_a_term_inside_the_folder_is_refused_too(folder):
    # Every link is refused, not only those leading out: a check of where a link leads can be
    # raced (the link swapped between check and open), and git keeps a term as a file anyway.
    os.symlink("alpha.md", folder / "alias.md")
    assert errors_of(folder) == [f"alias.md: {SYMLINK}"]


def test_a_symlink_to_a_directory_is_refused(folder, tmp_path):
    os.symlink(tmp_path / "elsewhere", folder / "dir.md", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    glossary, _errors = read_glossary(folder)
    assert errors_of(folder) == [f"dir.md: {SYMLINK}"]
    assert glossary.slugs == ["alpha", "beta"]


def test_a_dangling_symlink_such_as_an_editor_lock_file_is_refused_as_a_symlink(folder):
    os.symlink("user@host.4242", folder / ".#alpha.md")  # what Emacs leaves while editing
    assert errors_of(folder) == [f".#alpha.md: {SYMLINK}"]


def test_a_directory_named_like_a_term_is_refused(folder):
    (folder / "notes.md").mkdir()
    assert errors_of(folder) == [f"notes.md: {not_regular('directory')}"]


def oversized(size: int) -> str:
    """A valid term file of exactly `size` bytes (its Example section padded with words)."""
    base = term_text("Big")
    return (
        base
        + "word " * ((size - len(base.encode())) // 5)
        + "x" * ((size - len(base.encode())) % 5)
    )


def test_a_term_over_the_size_limit_is_refused_and_its_neighbours_load(folder):
    (folder / "big.md").write_text(oversized(300 * 1024), encoding="utf-8")
    glossary, _errors = read_glossary(folder)
    assert errors_of(folder) == [
        "big.md: file: is 307,200 bytes, over the 262,144-byte (256 KB) limit for a term file; "
        "shorten it"
    ]
    assert glossary.slugs == ["alpha", "beta"]


def test_a_term_of_exactly_the_size_limit_loads(folder):
    (folder / "big.md").write_text(oversized(MAX_TERM_BYTES), encoding="utf-8")
    assert (folder / "big.md").stat().st_size == MAX_TERM_BYTES == 256 * 1024
    assert read_glossary(folder)[0].slugs == ["alpha", "beta", "big"]


def test_the_size_is_judged_before_reading(folder):
    # 1 GB that takes no disk space: reading it would exceed the child's 512 MB.
    with open(folder / "huge.md", "wb") as f:
        f.truncate(2**30)
    assert read_guarded(folder) == (
        ["alpha", "beta"],
        ["huge.md: file: is 1,073,741,824 bytes, over the 262,144-byte (256 KB) limit for a term "
         "file; shorten it"],
    )  # fmt: skip


def test_hidden_files_are_still_read_and_subfolders_and_readmes_still_skipped(folder):
    # As before: `*.md` directly in the folder is a term, dot-files included (and so reported
    # by name); sub-folders are not searched; a README is never read, whatever it is.
    (folder / ".draft.md").write_text(term_text("Draft"), encoding="utf-8")
    (folder / "drafts").mkdir()
    (folder / "drafts" / "gamma.md").write_text(term_text("Gamma"), encoding="utf-8")
    (folder / "notes.txt").write_text("not a term", encoding="utf-8")
    os.mkfifo(folder / "README.md")
    slugs, errors = read_guarded(folder)
    assert slugs == ["alpha", "beta"]
    assert errors == [
        ".draft.md: slug: file name '.draft.md' is not a slug (lower-case a-z, 0-9 and '-')"
    ]


def test_validate_on_the_command_line_lists_every_entry_it_would_not_read_and_exits_1(
    folder, outside, tmp_path
):
    os.symlink("/dev/zero", folder / "zero.md")
    os.mkfifo(folder / "pipe.md")
    os.symlink(outside, folder / "gamma.md")
    os.symlink(tmp_path, folder / "dir.md", target_is_directory=True)
    (folder / "big.md").write_text(oversized(300 * 1024), encoding="utf-8")
    result = run_guarded("-m", "digest.cli", "terms", "validate", str(folder))
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        f"{folder}/big.md: file: is 307,200 bytes, over the 262,144-byte (256 KB) limit for a "
        "term file; shorten it",
        f"{folder}/dir.md: {SYMLINK}",
        f"{folder}/gamma.md: {SYMLINK}",
        f"{folder}/pipe.md: {not_regular('named pipe')}",
        f"{folder}/zero.md: {SYMLINK}",
        "5 errors in 5 files",
    ]
