"""Bad input, fuzzed: term files, CSV imports, tokens, ISO weeks and the web forms never crash.

Each property runs a fixed, derandomised number of examples (the "ci" profile in conftest.py);
`HYPOTHESIS_PROFILE=thorough` multiplies every budget for a deeper local run.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, insert

from digest.config import Settings, get_settings
from digest.core.reader_input import normalise_email
from digest.core.tokens import BadToken, make_token, read_token
from digest.model.glossary import InvalidGlossary, render_markdown
from digest.model.subscriber import STATUSES
from digest.model.subscriber import InvalidSubscriber as _InvalidSubscriber
from digest.model.weeks import IsoWeek, parse_week
from digest.store import db
from digest.store.subscriber_csv import export_csv, import_csv
from digest.store.subscribers import list_subscribers
from digest.store.terms import load_glossary, read_glossary
from digest.web import create_app

NOW = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def fuzz_examples(n: int) -> int:
    """`n` examples under the "ci" profile, scaled up with the profile's own budget."""
    return max(1, n * settings.default.max_examples // 200)


PURE = settings(max_examples=fuzz_examples(200))
# DB and web properties share one database and one app across examples (each example clears
# what it touched), so the function-scoped fixtures are intended.
STATEFUL = settings(
    max_examples=fuzz_examples(50), suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# --------------------------------------------------------------------------- term files

# Text an editor could legitimately type on one line: letters, marks, digits, punctuation,
# symbols and spaces — no control characters, line separators or invisible format characters.
_VISIBLE = st.characters(categories=("L", "M", "N", "P", "S", "Zs"))
_BODY_CHARS = st.characters(
    categories=("L", "N", "Zs"), include_characters=".,;:!?()'\"-", exclude_characters="\u3000"
)


def _line(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_VISIBLE, min_size=1, max_size=max_size).filter(lambda s: s.strip())


_slugs = st.from_regex(r"[a-z0-9]{1,8}(-[a-z0-9]{1,8}){0,2}", fullmatch=True)
_weeks = st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)).map(IsoWeek.of)
_urls = st.from_regex(
    r"https://[a-z0-9]{1,10}(\.[a-z0-9]{1,6}){1,2}(/[A-Za-z0-9._~%-]{0,12}){0,3}", fullmatch=True
)
_paragraph = st.lists(
    st.text(_BODY_CHARS, min_size=1, max_size=20).filter(lambda s: s.strip()),
    min_size=1,
    max_size=8,
).map(lambda words: " ".join(w.strip() for w in words))
_section_body = st.lists(_paragraph, min_size=1, max_size=3).map("\n\n".join)


@st.composite
def valid_terms(draw: st.DrawFn) -> tuple[str, dict[str, Any], list[tuple[str, str]]]:
    """(slug, front matter, sections) of a term that must load exactly as written."""
    slug = draw(_slugs)
    title = draw(_line(120))
    aliases: list[dict[str, str | None]] = []
    seen: set[str] = set()
    for name in draw(st.lists(_line(40), max_size=3)):
        if name.strip().casefold() in seen:
            continue
        seen.add(name.strip().casefold())
        lang = draw(st.none() | st.from_regex(r"[a-z]{2,3}", fullmatch=True))
        aliases.append({"name": name, "lang": lang})
    front: dict[str, Any] = {
        "title": title,
        "summary": draw(_line(200)),
        "definition": draw(st.text(_VISIBLE, min_size=1, max_size=600).filter(lambda s: s.strip())),
        "aliases": aliases,
        "category": draw(_line(60)),
        "difficulty": draw(st.sampled_from(["beginner", "intermediate", "advanced"])),
        "added": str(draw(_weeks)),
        "related": [],
        "sources": draw(
            st.lists(
                st.fixed_dictionaries({"title": _line(80), "url": _urls}), min_size=1, max_size=3
            )
        ),
    }
    if draw(st.booleans()):
        front["slug"] = slug
    extra_titles = draw(
        st.lists(st.text(st.characters(categories=("L", "N")), min_size=1, max_size=20), max_size=2)
    )
    titles = draw(st.permutations(["Why it matters", "How it works", "Example", *extra_titles]))
    titles = list(dict.fromkeys(titles))  # a repeated extra title would merge with its twin
    sections = [(t, draw(_section_body)) for t in titles]
    return slug, front, sections


_SECTIONS = [("Why it matters", "x"), ("How it works", "y"), ("Example", "z")]
# Few letters, so names collide often, with a casefold trap: "ß", "ẞ" and "ss" are one name.
_names = st.text("abAB ßẞs-", min_size=1, max_size=6).filter(lambda s: s.strip())


@st.composite
def simple_terms(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A valid term built cheaply, for properties about structure rather than field content."""
    aliases = draw(st.lists(_names, max_size=2, unique_by=lambda n: n.strip().casefold()))
    front = {
        "title": draw(_names), "summary": "One line.", "definition": "A test term.",
        "aliases": [{"name": name} for name in aliases], "category": "Fundamentals",
        "difficulty": draw(st.sampled_from(["beginner", "advanced"])), "added": "2026-W10",
        "related": [], "sources": [{"title": "A source", "url": "https://example.org/s"}],
    }  # fmt: skip
    return front, list(_SECTIONS)


def term_file(front: dict[str, Any], sections: list[tuple[str, str]]) -> str:
    runs: dict[str, str] = {}
    dumped = yaml.safe_dump(
        _stand_in_for_runs(front, runs, {}), allow_unicode=True, sort_keys=False, width=10_000
    )
    if any(dumped.count(stand_in) != 1 for stand_in in runs):  # never seen; but be exact
        dumped = yaml.safe_dump(front, allow_unicode=True, sort_keys=False, width=10_000)
    for stand_in, run in runs.items():
        dumped = dumped.replace(stand_in, run)
    body = "\n\n".join(f"## {title}\n\n{text}" for title, text in sections)
    return f"---\n{dumped}---\n\n{body}\n"


# PyYAML's pure-Python emitter looks at a scalar one character at a time, twice: the runs of up
# to 200,000 "x" that `_odd_strings` makes cost it most of this module's time. A run of one
# letter is dumped exactly as a short one is (a plain scalar, never folded: it has no spaces),
# so `term_file` dumps a short stand-in of letters in its place and puts the run back after.
_LONG_RUN = 1000


def _stand_in_for_runs(value: Any, runs: dict[str, str], done: dict[int, Any]) -> Any:
    """`value` with each long run of "x" among its values (not keys) replaced by a stand-in
    recorded in `runs`; containers without one are returned as they are, and a container met
    twice is replaced by one copy, so the dumper's anchors and aliases come out the same."""
    if isinstance(value, str):
        if len(value) <= _LONG_RUN or value.strip("x"):
            return value
        stand_in = "xstandin" + "".join("abcdefghij"[int(d)] for d in str(len(runs))) + "zx"
        runs[stand_in] = value
        return stand_in
    if not isinstance(value, list | dict) or id(value) in done:
        return done.get(id(value), value)
    if isinstance(value, list):
        items = [_stand_in_for_runs(v, runs, done) for v in value]
        changed = any(a is not b for a, b in zip(items, value, strict=True))
        done[id(value)] = items if changed else value
    else:
        pairs = {k: _stand_in_for_runs(v, runs, done) for k, v in value.items()}
        changed = any(pairs[k] is not v for k, v in value.items())
        done[id(value)] = pairs if changed else value
    return done[id(value)]


def _read_one(content: str | bytes, slug: str = "term") -> tuple[Path, Any, list[Any]]:
    folder = Path(tempfile.mkdtemp(prefix="fuzz-terms-"))
    path = folder / f"{slug}.md"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    glossary, errors = read_glossary(folder)
    return path, glossary, errors


def check_loaded_or_reported(content: str | bytes) -> None:
    """The validator's contract: the term loads cleanly, or every problem names this file, its
    line (one that exists) and a one-line message of readable length — and nothing raises."""
    path, glossary, errors = _read_one(content)
    lines = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
    # Lines as the loader reads them (universal newlines: a lone CR ends a line too).
    line_count = len(re.split(r"\r\n|\r|\n", lines))
    note(f"errors: {[str(e) for e in errors]}")
    if errors:
        assert len(glossary) == 0
    else:
        assert len(glossary) == 1
    for error in errors:
        assert error.path == path
        assert error.line is None or 1 <= error.line <= line_count
        shown = str(error)
        assert shown.startswith(f"{path}:")
        assert "\n" not in shown and "\r" not in shown
        assert len(shown) - len(str(path)) <= 400, shown
    if errors:
        with pytest.raises(InvalidGlossary):
            load_glossary(path.parent)


@PURE
@given(valid_terms())
def test_a_valid_generated_term_always_loads_as_written(term):
    slug, front, sections = term
    path, glossary, errors = _read_one(term_file(front, sections), slug)
    assert [str(e) for e in errors] == []
    loaded = glossary[slug]
    assert loaded.title == front["title"].strip()
    assert loaded.summary == front["summary"].strip()
    assert loaded.definition == " ".join(front["definition"].split())
    assert loaded.category == front["category"].strip()
    assert str(loaded.added) == front["added"]
    assert [(a.name, a.lang) for a in loaded.aliases] == [
        (a["name"].strip(), a["lang"]) for a in front["aliases"]
    ]
    assert [(s.title, s.url) for s in loaded.sources] == [
        (s["title"].strip(), s["url"]) for s in front["sources"]
    ]
    assert [(s.title, s.markdown) for s in loaded.sections] == sections
    assert loaded.path == path


_yaml_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.dates()
    | st.binary(max_size=10)
)
_yaml_values = st.recursive(
    _yaml_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Values that are nearly right: the awkward corners of strings a loader must still refuse well.
_odd_strings = st.one_of(
    st.text(max_size=50),  # any unicode: controls, separators, format characters, emoji
    st.text(st.characters(categories=("Cc", "Cf", "Zl", "Zp", "Zs")), max_size=10),
    st.integers(1, 200_000).map(lambda n: "x" * n),  # huge
    st.sampled_from(
        ["", " ", "\u200b", "\u202eevil", "A\r\nBcc: x@evil.example", "2026-W53", "2026-W00",
         "javascript:alert(1)", "https://", "https://a b", "JAVASCRIPT:alert(1)", "nl\n",
         "beginner ", "2026-W1", "２０２６-W10", "https://example.org/\n", "\ufeff"]
    ),
)  # fmt: skip
_FIELDS = ["title", "slug", "summary", "definition", "aliases", "category", "difficulty",
           "added", "related", "sources"]  # fmt: skip
# Raw YAML spliced into the front matter: anchors and aliases (recursive ones too), tags,
# merge keys, duplicate keys, flow collections left open, and a top level that is no mapping.
_YAML_TRICKS = [
    "title: Twice\n",
    "summary: again\nsummary: and again\n",
    "anchor: &a [1, 2, 3]\nrelated: *a\n",
    "related: &r [*r]\n",
    "aliases: &s [*s, *s]\n",
    "sources: &q {title: *q, url: *q}\n",
    "base: &b {title: merged, summary: merged}\n<<: *b\n",
    "title: !!binary aGVsbG8=\n",
    "title: !!python/object/apply:os.system [echo hacked]\n",
    "title: !custom tagged\n",
    "added: !!timestamp 2001-12-14\n",
    "difficulty: !!set {beginner, advanced}\n",
    "related: !!omap [{a: 1}, {b: 2}]\n",
    "definition: !!float .nan\n",
    "? [complex, key]\n: value\n",
    "1: numbered key\n",
    "null: null key\n",
    "title: [unclosed\n",
    "title: 'unclosed\n",
    "\ttabbed: key\n",
    "- a list item at the top\n",
    "aliases: [{name: a, lang: xx}, {name: a, lang: yy}]\n",
    "sources: [{title: t, url: 'javascript:alert(1)'}]\n",
    "...\n",
    "---\nsecond: document\n",
    "%YAML 1.1\n",
    "&x title: anchored\n",
]


@st.composite
def wrong_front_matter(draw: st.DrawFn) -> str:
    """A term file whose front matter is structured but wrong in one or more ways."""
    if draw(st.integers(0, 3)) == 0:  # now and then a rich base; mostly a cheap one
        _slug, front, sections = draw(valid_terms())
    else:
        front, sections = draw(simple_terms())
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["drop", "retype", "odd", "extra", "nest"]))
        key = draw(st.sampled_from(_FIELDS))
        if action == "drop":
            front.pop(key, None)
        elif action == "retype":
            front[key] = draw(_yaml_values)
        elif action == "odd":
            front[key] = draw(_odd_strings)
        elif action == "extra":
            front[draw(st.text(min_size=1, max_size=12))] = draw(_yaml_values)
        else:
            front[key] = draw(st.lists(st.dictionaries(st.sampled_from(_FIELDS), _odd_strings)))
    text = term_file(front, sections)
    tricks = draw(st.lists(st.sampled_from(_YAML_TRICKS), max_size=3))
    if tricks:
        head, rest = text.split("---\n", 2)[1:]
        text = "---\n" + head + "".join(tricks) + "---\n" + rest
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    return text


@PURE
@given(wrong_front_matter())
@example("---\ntitle: x\n\x00\n---\n")  # a control character YAML refuses: one-line message
@example("---\nadded: " + "9" * 5000 + "-W01\n---\n")  # a huge value: a readable message
@example('---\n"\\n\\n": 1\n---\n')  # a key with line breaks: still a one-line error
def test_structured_but_wrong_front_matter_is_reported_never_raised(text):
    check_loaded_or_reported(text)


@st.composite
def term_folders(draw: st.DrawFn) -> dict[str, str]:
    """2-5 term files that relate to each other, some broken, some sharing names."""
    slugs = draw(st.lists(_slugs, min_size=2, max_size=5, unique=True))
    shared = ["Attention", "attention ", slugs[0], "RAG"]
    files: dict[str, str] = {}
    for slug in slugs:
        front, sections = draw(simple_terms())
        front["related"] = draw(st.lists(st.sampled_from([*slugs, "missing-term"]), max_size=3))
        if draw(st.integers(0, 3)) == 0:
            front["title"] = draw(st.sampled_from(shared))
        if draw(st.integers(0, 3)) == 0:
            front["aliases"] = [{"name": draw(st.sampled_from(shared))}]
        if draw(st.integers(0, 4)) == 0:
            front[draw(st.sampled_from(_FIELDS))] = draw(_yaml_values)
        files[slug] = term_file(front, sections)
    return files


@settings(max_examples=fuzz_examples(100))
@given(term_folders())
def test_a_folder_loads_exactly_its_clean_terms_and_every_name_finds_its_own_term(files):
    folder = Path(tempfile.mkdtemp(prefix="fuzz-folder-"))
    for slug, text in files.items():
        (folder / f"{slug}.md").write_text(text, encoding="utf-8")
    glossary, errors = read_glossary(folder)
    note(f"errors: {[str(e) for e in errors]}")
    broken = {e.path.stem for e in errors}
    assert broken <= set(files)
    assert set(glossary.slugs) == set(files) - broken
    for term in glossary:
        assert set(term.related) <= set(files) - {term.slug}
        for name in (term.slug, *term.names):
            assert glossary.lookup(name) is term, name


_yamlish = st.lists(
    st.sampled_from([*"abc: -[]{}&*!|>'\"%@`#,?\n\t\r\\", "---", "...", "##", "\u2028"]),
    max_size=100,
).map("".join)


@PURE
@given(
    st.one_of(
        st.text(max_size=500),
        st.binary(max_size=500),
        st.tuples(_yamlish, st.text(max_size=200)).map(lambda p: f"---\n{p[0]}\n---\n{p[1]}"),
        st.tuples(st.text(max_size=200), _yamlish).map(lambda p: f"---\n{p[0]}\n---\n## {p[1]}"),
    )
)
@example(b"\xff\xfe---\n")  # not UTF-8
@example("\ufeff---\n---\n")  # a BOM, then an empty document
@example("---\n" + "[" * 5000 + "\n---\n")  # nesting deeper than YAML allows
@example("---\n?\n---")  # no body and no final newline: the line must exist
@example("---\r\r\x1f\n---")  # lone CRs end lines, for the loader as for the count here
def test_random_text_as_a_term_file_is_reported_never_raised(content):
    check_loaded_or_reported(content)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.extend(attrs)


_MARKDOWN_TAGS = {"p", "em", "strong", "a", "code", "pre", "ul", "ol", "li", "blockquote", "hr",
                  "br", "img", "table", "thead", "tbody", "tr", "th", "td",
                  "h1", "h2", "h3", "h4", "h5", "h6"}  # fmt: skip


@PURE
@given(
    st.lists(
        st.sampled_from(
            [
                "<script>alert(1)</script>",
                "<img src=x onerror=alert(1)>",
                "[x](javascript:alert(1))",
                "[x](JaVaScRiPt:alert(1))",
                "![i](javascript:x)",
                "<a href='javascript:x'>a</a>",
                "[x](vbscript:msgbox)",
                "<javascript:alert(1)>",
                "[x]: javascript:y\n\n[x]",
                '[x](https://e.org/"onmouseover="alert(1))',
                "`<b>`",
                "&lt;",
                "&#106;avascript:",
                "[a](data:text/html;base64,PHNjcmlwdD4=)",
                "\n",
                "\n\n",
                "| a |\n|---|\n| <b> |",
                "    <code>",
                "<!-- c -->",
                "<style>x</style>",
            ]
        )
        | st.text(max_size=30),
        max_size=12,
    ).map("".join)
)
def test_markdown_from_term_files_never_renders_script_handlers_or_script_urls(markdown):
    parser = _Tags()
    parser.feed(render_markdown(markdown))
    assert parser.tags <= _MARKDOWN_TAGS
    for name, value in parser.attrs:
        assert not name.startswith("on")
        if name in ("href", "src"):
            scheme = re.sub(r"[\x00-\x20]", "", value or "").lower()
            assert not scheme.startswith(("javascript:", "vbscript:", "data:text"))


# --------------------------------------------------------------------------- ISO weeks


@PURE
@given(
    st.one_of(
        st.text(max_size=20),
        st.from_regex(r"\s*\d{4}-W\d{2}\s*", fullmatch=True),
        st.from_regex(r"[0-9٠-٩０-９]{4}-W[0-9٠-٩]{2}", fullmatch=True),
    )
)
@example("２０２６-W10")  # full-width digits are not an ISO week
def test_parse_week_accepts_exactly_the_printed_form_and_refuses_the_rest_clearly(text):
    try:
        week = parse_week(text)
    except ValueError as exc:
        message = str(exc)
        assert "ISO week" in message or "does not exist" in message
        assert len(message) < 200
        return
    assert str(week) == text.strip()
    assert parse_week(str(week)) == week


@PURE
@given(_weeks, st.integers(-3000, 3000))
def test_week_arithmetic_is_consistent_with_the_calendar(week, n):
    later = week + n
    assert later - n == week
    assert later.weeks_since(week) == n
    assert (later > week) == (n > 0)
    assert IsoWeek.of(later.monday()) == later
    assert parse_week(str(later)) == later


# --------------------------------------------------------------------------- tokens


@pytest.fixture(scope="module")
def token_settings() -> Settings:
    return Settings(secret_key="fuzz-secret-key", old_secret_keys=["fuzz-old-key"])


@st.composite
def tampered(draw: st.DrawFn, token: str) -> str:
    """`token` changed the ways a link gets damaged or attacked."""
    n = len(token)
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "replace", "delete", "insert",
                                 "reencode", "swap", "repayload"]))  # fmt: skip
    if kind == "flip":
        i, bit = draw(st.integers(0, n - 1)), draw(st.integers(0, 7))
        return token[:i] + chr(ord(token[i]) ^ (1 << bit)) + token[i + 1 :]
    if kind == "truncate":
        return token[: draw(st.integers(0, n - 1))]
    if kind == "extend":
        tail = draw(
            st.text(min_size=1, max_size=8)
            | st.sampled_from(["=", "==", ".", "%00", "\n", "\ud800", "A", "."])
        )
        return token + tail
    if kind in ("replace", "insert"):
        i = draw(st.integers(0, n - 1))
        ch = draw(st.characters(codec=None) | st.characters(categories=["Cs"]))
        return token[:i] + ch + token[i + (kind == "replace") :]
    if kind == "delete":
        i = draw(st.integers(0, n - 1))
        return token[:i] + token[i + 1 :]
    if kind == "reencode":
        how = draw(st.sampled_from(["upper", "lower", "std64", "pad", "percent", "nfkc", "strip"]))
        if how == "upper":
            return token.upper()
        if how == "lower":
            return token.lower()
        if how == "std64":
            return token.replace("-", "+").replace("_", "/")
        if how == "pad":
            return ".".join(p + "=" * draw(st.integers(1, 3)) for p in token.split("."))
        if how == "percent":
            return "".join(f"%{ord(c):02X}" for c in token)
        if how == "nfkc":
            return unicodedata.normalize("NFKC", "\uff21" + token)  # a full-width letter in front
        return " " + token + " "
    parts = token.split(".")
    if len(parts) == 1:  # a compact token: one segment, its MAC the last 16 bytes
        return draw(_tampered_compact(token, kind))
    if kind == "swap":
        i, j = draw(st.permutations(range(len(parts))).map(lambda p: p[:2]))
        parts[i], parts[j] = parts[j], parts[i]
        return ".".join(parts)
    # repayload: someone else's (validly encoded) payload under this token's signature
    other = make_token(
        Settings(secret_key="attacker"), "confirm", draw(st.integers(0, 10**9)), "eve@example.org"
    )
    return ".".join([other.split(".")[0], *parts[1:]])


@st.composite
def _tampered_compact(draw: st.DrawFn, token: str, kind: str) -> str:
    """The swap and repayload attacks on a compact token (no "." to split at): two characters
    swapped, or someone else's validly encoded payload under this token's MAC."""
    if kind == "swap":
        i, j = draw(st.permutations(range(len(token))).map(lambda p: sorted(p[:2])))
        return token[:i] + token[j] + token[i + 1 : j] + token[i] + token[j + 1 :]
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    purpose = draw(st.sampled_from(["unsubscribe", "preferences"]))
    other = make_token(
        Settings(secret_key="attacker"), purpose, draw(st.integers(0, 10**9)), "eve@example.org"
    )
    theirs = base64.urlsafe_b64decode(other + "=" * (-len(other) % 4))
    return base64.urlsafe_b64encode(theirs[:-16] + raw[-16:]).rstrip(b"=").decode()


@PURE
@given(
    st.integers(1, 2**53),
    st.emails(),
    st.sampled_from(["confirm", "unsubscribe", "preferences"]),
    st.data(),
)
def test_any_tampering_of_a_valid_token_is_rejected_with_badtoken(
    token_settings, subscriber_id, email, purpose, data
):
    token = make_token(token_settings, purpose, subscriber_id, email)
    assert read_token(token_settings, purpose, token).subscriber_id == subscriber_id
    damaged = data.draw(tampered(token).filter(lambda t: t != token))
    with pytest.raises(BadToken):
        read_token(token_settings, purpose, damaged, max_age=3600)


@PURE
@given(
    st.one_of(
        st.text(),
        st.text(st.characters(codec=None) | st.characters(categories=["Cs"])),
        st.from_regex(
            r"[A-Za-z0-9_-]{1,40}\.[A-Za-z0-9_-]{1,10}\.[A-Za-z0-9_-]{1,40}", fullmatch=True
        ),
    ),
    st.sampled_from(["confirm", "unsubscribe", "preferences"]),
)
def test_arbitrary_text_is_never_a_token(token_settings, junk, purpose):
    with pytest.raises(BadToken):
        read_token(token_settings, purpose, junk)


@PURE
@given(st.integers(1, 2**31), st.emails(), st.data())
def test_a_token_only_opens_its_own_purpose(token_settings, subscriber_id, email, data):
    made, used = data.draw(
        st.permutations(["confirm", "unsubscribe", "preferences"]).map(lambda p: p[:2])
    )
    token = make_token(token_settings, made, subscriber_id, email)
    with pytest.raises(BadToken):
        read_token(token_settings, used, token)


# --------------------------------------------------------------------------- CSV import


def _clear(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(delete(db.subscribers))


_GOOD_NAMES = st.text(
    st.characters(categories=("L", "N", "Zs"), include_characters=".,-&<>\"'=+@;"), max_size=60
).filter(lambda s: not s.lstrip().startswith("'"))
_TIMEZONES = st.sampled_from(["", "UTC", "Europe/Amsterdam", "Asia/Tokyo", "America/New_York"])
_BAD_EMAILS = st.sampled_from(["", "not-an-address", "a@b@example.org", "ann@", "@example.org",
                               "ann@example", "ann @example.org", "ann@exa mple.org",
                               "ann@example.org\r\nBcc: x@evil.example", "x" * 300 + "@e.org"])  # fmt: skip
_BAD_NAMES = st.sampled_from(["Ann\r\nBcc: x@evil.example", "Ann\x00", "\x1b[31mred", "a\u2028b",
                              "x" * 201, "tab\there"])  # fmt: skip
_BAD_STATUSES = st.sampled_from(["subscribed", "ACTIVE!", "deleted", "pend ing", "1"])
_BAD_ZONES = st.sampled_from(["Mars/Olympus", "UTC+5", "../../etc/passwd", "Europe/", "x" * 65])


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, bool, list[str], list[dict[str, Any]]]:
    """(CSV text, confirmed flag, what each record is) with good, bad and garbage rows mixed."""
    confirmed = draw(st.booleans())
    optional = draw(st.lists(st.sampled_from(["name", "status", "timezone"]), unique=True))
    header = draw(st.permutations(["email", *optional]))
    statuses = [s for s in STATUSES if confirmed or s != "active"]
    rows: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 12))):
        local = draw(st.from_regex(r"[a-z][a-z0-9]{0,3}(\.[a-z0-9]{1,3})?", fullmatch=True))
        domain = draw(st.sampled_from(["example.org", "Example.COM", "mail.example.net"]))
        email = f"{local}@{domain}"
        if draw(st.booleans()):
            email = email.upper() if draw(st.booleans()) else f"  {email} "
        cells = {
            "email": email,
            "name": draw(_GOOD_NAMES),
            "status": draw(st.sampled_from(statuses)) if "status" in header else "",
            "timezone": draw(_TIMEZONES),
        }
        kind = draw(st.sampled_from(["good"] * 4 + ["email", "name", "status", "timezone",
                                                    "columns", "garbage", "blank"]))  # fmt: skip
        row: dict[str, Any] = {"kind": kind, "key": email.strip().lower(), "cells": cells}
        if kind == "email":
            cells["email"] = draw(_BAD_EMAILS)
        elif kind == "name" and "name" in header:
            cells["name"] = draw(_BAD_NAMES)
        elif kind == "status" and "status" in header:
            cells["status"] = draw(
                _BAD_STATUSES if confirmed else _BAD_STATUSES | st.just("active")
            )
        elif kind == "timezone" and "timezone" in header:
            cells["timezone"] = draw(_BAD_ZONES)
        elif kind in ("name", "status", "timezone"):
            row["kind"] = "good"  # the column is not in the file, so the defect is not either
        values = [cells[h] for h in header]
        if kind == "columns":
            values = [*values, "extra"] if draw(st.booleans()) or len(values) == 1 else values[:-1]
        elif kind == "garbage":
            # No bare CR: csv.writer leaves it unquoted, and it would end the row early.
            cell = st.text(st.characters(exclude_characters="\r"), max_size=20)
            values = draw(st.lists(cell, min_size=1, max_size=5))
        elif kind == "blank":
            values = [" "] * len(header)
        if not any(v.strip() for v in values):
            row["kind"] = "blank"  # nothing but spaces: not a row at all
        row["values"] = values
        rows.append(row)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    out = io.StringIO(newline="")
    out.write(",".join(draw(st.sampled_from([h, h.upper(), f" {h} "])) for h in header) + newline)
    line = 2
    for row in rows:
        start = out.tell()
        csv.writer(out, lineterminator=newline).writerow(row["values"])
        written = out.getvalue()[start:]
        breaks = len(re.findall(r"\r\n|\r|\n", written))
        row["lines"] = (line, line + breaks - 1)
        line += breaks
    return out.getvalue(), confirmed, header, rows


def _expected(rows: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], set[int]]:
    """The rows that must be imported (by address) and the lines that must be reported."""
    keep: dict[str, dict[str, Any]] = {}
    bad: set[int] = set()
    for row in rows:
        if row["kind"] == "good":
            if row["key"] in keep:
                bad.add(row["lines"][0])
            else:
                keep[row["key"]] = row
        elif row["kind"] not in ("garbage", "blank"):
            bad.add(row["lines"][0])  # where the row starts, though a quoted cell spans lines
    return keep, bad


def _snapshot(engine: Engine) -> list[tuple[Any, ...]]:
    return [
        (s.email, s.name, s.status, s.timezone, s.confirmed_at, s.unsubscribed_at, s.updated_at)
        for s in list_subscribers(engine)
    ]


@STATEFUL
@given(csv_files())
def test_csv_import_keeps_good_rows_reports_bad_ones_by_line_and_is_idempotent(engine, csv_file):
    text, confirmed, header, rows = csv_file
    _clear(engine)
    report = import_csv(engine, io.StringIO(text, newline=""), confirmed=confirmed, now=NOW)
    note(f"report: {report}")
    keep, bad = _expected(rows)
    reported = {e.line for e in report.errors}
    assert bad <= reported
    # Garbage rows land on one side or the other, never both and never nowhere.
    data_rows = [r for r in rows if r["kind"] != "blank"]
    garbage_lines = {r["lines"][0] for r in data_rows if r["kind"] == "garbage"}
    assert reported - bad <= garbage_lines
    assert len(report.errors) == len(reported)  # one error per bad row
    counted = report.added + report.updated + report.unchanged + report.kept_suppressed
    assert counted + len(report.errors) == len(data_rows)
    stored = {s.email: s for s in list_subscribers(engine)}
    for key, row in keep.items():
        got = stored[key]
        cells = {h: row["cells"][h] for h in header}
        default = "active" if confirmed else "pending"
        assert got.status == (cells.get("status", "").strip().lower() or default)
        assert got.name == ((cells.get("name") or "").strip() or None)
        assert got.timezone == (cells.get("timezone") or None)
    before = _snapshot(engine)
    again = import_csv(engine, io.StringIO(text, newline=""), confirmed=confirmed, now=NOW)
    assert (again.added, again.updated) == (0, 0)
    assert [e.line for e in again.errors] == [e.line for e in report.errors]
    assert _snapshot(engine) == before


@STATEFUL
@given(st.lists(st.text(max_size=40), max_size=6), st.booleans())
@example(["email,name", 'ann@example.org,"unclosed'], False)  # a quote left open at the end
@example(["\x00email"], True)
def test_any_csv_lines_are_imported_or_reported_never_raised(engine, lines, confirmed):
    _clear(engine)
    report = import_csv(engine, [line + "\n" for line in lines], confirmed=confirmed, now=NOW)
    for error in report.errors:
        assert 1 <= error.line <= max(1, len(lines) + 1)
        assert str(error).startswith(f"line {error.line}: ")


@STATEFUL
@given(st.dictionaries(st.integers(0, 10**6), _GOOD_NAMES, max_size=6))
def test_export_then_import_round_trips_whatever_the_names(engine, people):
    _clear(engine)
    with engine.begin() as conn:
        for number, name in people.items():
            conn.execute(
                insert(db.subscribers).values(
                    email=f"p{number}@example.org", name=name.strip() or None, status="active",
                    source="test", created_at=NOW, updated_at=NOW,
                )
            )  # fmt: skip
    before = _snapshot(engine)
    out = io.StringIO()
    export_csv(engine, out)
    again = import_csv(engine, io.StringIO(out.getvalue(), newline=""), confirmed=True, now=NOW)
    assert (again.errors, again.added, again.updated) == ([], 0, 0)
    assert again.unchanged == len(people)
    assert _snapshot(engine) == before


@PURE
@given(st.emails() | st.text(max_size=40))
def test_a_normalised_address_normalises_to_itself(raw):
    try:
        address = normalise_email(raw)
    except _InvalidSubscriber:
        return
    assert normalise_email(address) == address
    assert address == address.strip().lower()


# --------------------------------------------------------------------------- the subscribe form


@pytest.fixture
def web(settings_env: dict[str, str]) -> Iterator[TestClient]:
    settings = get_settings().model_copy(update={"subscribe_rate_limit": 0})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_field_values = st.one_of(
    st.emails(),
    st.text(max_size=60),
    st.sampled_from(["ann@example.org", "ANN@Example.org ", "Ann\r\nBcc: x@evil.example",
                     "<script>alert(1)</script>", "x" * 5000, "Europe/Amsterdam", "\x00"]),
)  # fmt: skip
_CONTENT_TYPES = ["application/x-www-form-urlencoded", "multipart/form-data",
                  "multipart/form-data; boundary=zzz", "application/json",
                  "application/json; charset=utf-16", "text/plain", "application/xml", "",
                  "application/x-www-form-urlencoded; charset=latin-1", "*/*", "json"]  # fmt: skip


@st.composite
def subscribe_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for `TestClient.post("/subscribe", ...)`: any body, any type."""
    fields = draw(
        st.dictionaries(
            st.sampled_from(["email", "name", "timezone"]) | st.text(max_size=6),
            _field_values,
            max_size=4,
        )
    )
    if draw(st.booleans()):  # half the requests carry a good address, to reach the success path
        fields["email"] = draw(st.sampled_from(["ann@example.org", "Bob@Example.COM", "z@e.nl"]))
    kind = draw(st.sampled_from(["form", "json", "json-any", "multipart", "raw"]))
    if kind == "form":
        return {"data": fields}
    if kind == "json":
        body = {k: draw(st.sampled_from([v, v]) | _json_values) for k, v in fields.items()}
        return {"json": body}
    if kind == "json-any":
        return {"content": json.dumps(draw(_json_values)).encode(),
                "headers": {"content-type": "application/json"}}  # fmt: skip
    if kind == "multipart":
        files = {k: (k + ".txt", v.encode("utf-8", "replace")) for k, v in fields.items()}
        return {"files": files or {"file": ("f", b"x")}, "data": draw(st.dictionaries(
            st.sampled_from(["email", "name"]), _field_values, max_size=2))}  # fmt: skip
    content_type = draw(st.sampled_from(_CONTENT_TYPES))
    return {"content": draw(st.binary(max_size=300)), "headers": {"content-type": content_type}}


def _answer_ok(response: Any) -> None:
    event(f"status {response.status_code}")
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text[:300]
    assert response.text.strip()
    assert "Traceback" not in response.text
    if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
        assert response.json()["error"]


@STATEFUL
@given(subscribe_requests())
@example({"content": b"[" * 100_000, "headers": {"content-type": "application/json"}})
@example(
    {"content": b'{"email": "' + b"a" * 100_000, "headers": {"content-type": "application/json"}}
)
@example({"content": b"--zzz\r\nContent-Disposition: form-data\r\n\r\n",
          "headers": {"content-type": "multipart/form-data; boundary=zzz"}})  # fmt: skip
@example({"content": b"email=a%40b.org&name=%E9",
          "headers": {"content-type": "application/x-www-form-urlencoded"}})  # fmt: skip
def test_any_subscribe_request_gets_a_4xx_with_a_message_or_the_usual_answer(web, request_kwargs):
    _answer_ok(web.post("/subscribe", **request_kwargs))


_addresses = st.from_regex(
    r"[a-z][a-z0-9._+-]{0,10}[a-z0-9]@[a-z]{1,8}\.(org|com|nl)", fullmatch=True
)


def _set_status(engine: Engine, address: str, status: str | None) -> None:
    _clear(engine)
    if status is None:
        return
    with engine.begin() as conn:
        conn.execute(
            insert(db.subscribers).values(
                email=address, name="Known", status=status, source="test",
                timezone="Europe/Amsterdam", created_at=NOW, updated_at=NOW,
                confirm_sent_at=NOW if status == "pending" else None,
            )
        )  # fmt: skip


def _comparable(response: Any) -> tuple[int, str, str]:
    """Status, type and body, with the per-response CSP nonce (random by design) blanked."""
    nonce = re.search(r"'nonce-([^']+)'", response.headers["content-security-policy"])
    text = response.text.replace(nonce.group(1), "NONCE") if nonce else response.text
    return response.status_code, response.headers.get("content-type", ""), text


@STATEFUL
@given(
    _addresses,
    st.sampled_from(["", "Ann", "Ann\r\nBcc: x@evil.example", "<b>Ann</b>", "x" * 201])
    | st.text(max_size=30),
    st.sampled_from(["", "UTC", "Mars/Olympus"]),
    st.sampled_from(["form", "json"]),
)
def test_the_answer_is_the_same_whether_or_not_the_address_is_known(web, address, name, zone, fmt):
    engine = web.app.state.engine
    body = {"email": address, "name": name, "timezone": zone}
    send: Callable[[], Any] = (
        (lambda: web.post("/subscribe", data=body)) if fmt == "form"
        else (lambda: web.post("/subscribe", json=body))
    )  # fmt: skip
    answers = set()
    for status in (None, "pending", "active", "unsubscribed", "bounced", "complained"):
        _set_status(engine, address, status)
        answers.add(_comparable(send()))
    assert len(answers) == 1, answers


@STATEFUL
@given(
    st.sampled_from(["get", "post"]),
    st.sampled_from(["/confirm/*", "/unsubscribe/*", "/issues/*", "/preferences/*",
                     "/preferences/*/pause", "/preferences/*/erase", "/preferences/*/export"]),
    st.text(min_size=1, max_size=80)
    | st.binary(min_size=1, max_size=40).map(lambda b: b.decode("latin-1")),
)  # fmt: skip
@example("get", "/issues/*", "9999-W99")
@example("post", "/confirm/*", "a.b.c")
def test_links_with_any_token_or_week_answer_a_page_not_a_server_error(web, method, route, junk):
    response = getattr(web, method)(route.replace("*", quote(junk, safe="")))
    assert response.status_code in (200, 400, 404, 405), response.text[:300]
    if response.status_code != 405:
        assert "Traceback" not in response.text and response.text.strip()


# --------------------------------------------------------------------------- found by fuzzing
# Each of these was a failing example above; kept as plain tests so the reason stays readable.


def _errors(text: str) -> list[str]:
    path, _glossary, errors = _read_one(text)
    return [str(e).removeprefix(f"{path}:") for e in errors]


def _valid_front(**changes: Any) -> str:
    front: dict[str, Any] = {
        "title": "Alpha", "summary": "One line.", "definition": "Alpha is a test.",
        "aliases": [], "category": "Fundamentals", "difficulty": "beginner", "added": "2026-W10",
        "related": [], "sources": [{"title": "A source", "url": "https://example.org/s"}],
    }  # fmt: skip
    front.update(changes)
    return term_file(front, [("Why it matters", "x"), ("How it works", "y"), ("Example", "z")])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Alpha\r\nBcc: x@evil.example", "must be one line"),
        ("Alpha\x00", "must be one line"),
        ("Alpha\x1b[31m", "must be one line"),
        ("Alpha\u2028Beta", "must be one line"),
        ("Alpha\tBeta", "must be one line"),
        ("\u202eahplA", "bidirectional override"),
        ("\u200b", "must contain visible text"),
    ],
)
def test_one_line_fields_refuse_controls_separators_and_invisible_text(value, reason):
    for field in ("title", "summary", "category"):
        [error] = _errors(_valid_front(**{field: value}))
        assert f"{field}: " in error and reason in error


def test_a_definition_may_wrap_but_not_carry_control_characters():
    assert _errors(_valid_front(definition="Alpha is\n  a test\u2028that wraps.")) == []
    [error] = _errors(_valid_front(definition="Alpha\x00 is a test."))
    assert "definition: control characters are not allowed (found U+0000)" in error


def test_an_alias_language_with_a_trailing_newline_is_not_a_language_code():
    [error] = _errors(_valid_front(aliases=[{"name": "alfa", "lang": "nl\n"}]))
    assert "aliases[0].lang: must be a 2- or 3-letter language code" in error


def test_a_key_written_twice_is_reported_not_silently_overwritten():
    text = _valid_front().replace("summary: One line.\n", "summary: One line.\ntitle: Beta\n")
    assert _errors(text) == [
        "4: title: listed twice; the later value would silently replace the earlier one"
    ]


def test_a_character_yaml_refuses_is_one_line_naming_its_line():
    assert _errors("---\ntitle: x\nsummary: \x07\n---\n") == [
        "3: front matter: invalid YAML: character U+0007 is not allowed in YAML"
    ]


def test_yaml_line_separators_do_not_shift_the_reported_line():
    # YAML counts U+2028 as a line break; editors do not, and the error must match the editor.
    text = _valid_front(summary="One\u2028line.").replace("category: Fundamentals", "category: [")
    [error] = _errors(text)  # the "[" opens on line 7; YAML notices on line 8
    assert error.startswith("8: front matter: invalid YAML: did not find expected ',' or ']'")


def test_a_huge_value_gives_a_short_message():
    [error] = _errors(_valid_front(added="9" * 10_000 + "-W01"))
    assert error.startswith("8: added: must be an ISO week like 2026-W17 (got '999")
    assert len(error) < 100


def test_full_width_digits_are_not_an_iso_week():
    with pytest.raises(ValueError, match="ISO week"):
        parse_week("２０２６-W10")


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t + "\x80",  # itsdangerous drops non-ASCII before decoding
        lambda t: t + "==",  # and accepts padding
        lambda t: t + "\ud800",  # a lone surrogate raised UnicodeEncodeError
        lambda t: t[:-1] + chr(ord(t[-1]) ^ 1) if t[-1] in "AEIMQUYcgkosw048" else t + "=",
    ],
)
def test_only_the_exact_token_string_verifies(token_settings, change):
    token = make_token(token_settings, "confirm", 7, "ann@example.org")
    with pytest.raises(BadToken):
        read_token(token_settings, "confirm", change(token))


def test_deeply_nested_json_is_a_clear_422_not_a_server_error(web):
    # json.loads raises RecursionError (not ValueError) past ~1000 levels; it was a 500.
    # 10,000 levels: well past the recursion limit, and under the request-body limit (a
    # larger body is refused earlier, with 413: tests/test_web_hardening.py).
    answer = web.post(
        "/subscribe", content=b"[" * 10_000, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json() == {"error": "the body is not valid JSON"}


def test_a_line_break_in_the_sender_name_setting_is_refused_before_any_subscribe():
    # It used to load, and every subscribe then failed building the confirmation Message (500).
    with pytest.raises(ValueError, match="line breaks are not allowed"):
        Settings(sender_name="Digest\r\nBcc: victim@evil.example")


def test_a_title_already_used_as_another_terms_slug_or_title_is_reported(make_terms):
    def term(title: str) -> str:
        return _valid_front(title=title)

    folder = make_terms({"alpha": term("Alpha"), "beta": term("ALPHA"), "gamma": term("beta")})
    glossary, errors = read_glossary(folder)
    assert [str(e).removeprefix(f"{folder}/") for e in errors] == [
        "beta.md:2: title: 'ALPHA' is already used by term 'alpha'",
        "gamma.md:2: title: 'beta' is already used by term 'beta'",
    ]
    assert glossary.slugs == ["alpha"]


def test_an_unknown_key_with_a_line_break_is_shown_quoted_on_one_line():
    text = _valid_front().replace("related: []\n", 'related: []\n"note\\nBcc": 1\n')
    assert _errors(text) == ["10: 'note\\nBcc': unknown field"]


def test_a_file_that_ends_at_the_closing_fence_reports_the_missing_sections_on_a_real_line():
    errors = _errors(_valid_front().split("\n---\n")[0] + "\n---")
    assert errors == [
        "13: body: missing sections: '## Why it matters', '## How it works', '## Example'"
    ]


def test_a_bad_row_spanning_lines_is_reported_where_it_starts(engine):
    _clear(engine)
    text = (
        'email,name\nann@example.org,Ann\nbob@example.org,"Bob\nBcc: x@evil.example"\nc@x.org,C\n'
    )
    report = import_csv(engine, io.StringIO(text, newline=""), now=NOW)
    assert [str(e) for e in report.errors] == [
        "line 3: name: line breaks and control characters are not allowed"
    ]
    assert report.added == 2


_form_text = st.text(max_size=40) | st.sampled_from(
    ["²", "9" * 5000, "12", "13", "0", "-1", " 3 ", "Europe/Amsterdam", "localtime", "Ann\r\nBcc: x",
     "yes", "\x00", "x" * 300]
)  # fmt: skip


@STATEFUL
@given(
    st.sampled_from(["", "/pause", "/resume", "/unsubscribe", "/export", "/erase"]),
    st.dictionaries(st.sampled_from(["name", "timezone", "weeks", "confirm"]), _form_text),
)
@example("/pause", {"weeks": "²"})  # isdigit() but not int(): was a 500
@example("/pause", {"weeks": "9" * 5000})  # past int()'s digit limit: was a 500
def test_any_preferences_form_gets_a_page_not_a_server_error(web, action, form):
    engine = web.app.state.engine
    _set_status(engine, "ann@example.org", "active")
    [ann] = list_subscribers(engine)
    token = make_token(web.app.state.settings, "preferences", ann.id, ann.email)
    response = web.post(f"/preferences/{token}{action}", data=form)
    event(f"{action or '/'} {response.status_code}")
    assert response.status_code in (200, 422), response.text[:300]
    assert "Traceback" not in response.text and response.text.strip()
