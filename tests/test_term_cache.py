"""The glossary's parse cache: a warm load gives what a cold one gives, and never hides an error."""

from __future__ import annotations

import logging
import marshal
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from digest.store import term_cache, terms
from digest.store.term_cache import CACHE_DIR_NAME, TermCache
from digest.store.terms import load_glossary, read_glossary
from tests.conftest import STARTER_TERMS, term_text

REPO = Path(__file__).resolve().parent.parent


def _cache_file(folder: Path) -> Path:
    file = TermCache(folder).file
    assert file is not None
    return file


def _read(folder: Path) -> list[object]:
    """The cache file's (format, version, folder, entries), its header checked."""
    raw = _cache_file(folder).read_bytes()
    head = len(term_cache._MAGIC) + 16
    assert (
        raw.startswith(term_cache._MAGIC)
        and int.from_bytes(raw[head - 16 : head - 8], "little") == len(raw) - head
    )
    return list(marshal.loads(raw[head:]))


def _write(folder: Path, data: list[object]) -> None:
    """Write a cache file as TermCache does, with a header that matches what it holds."""
    payload = marshal.dumps(tuple(data))
    size, crc = len(payload).to_bytes(8, "little"), zlib.crc32(payload).to_bytes(8, "little")
    _cache_file(folder).write_bytes(term_cache._MAGIC + size + crc + payload)


def _entries(folder: Path) -> dict[str, list[object]]:
    entries: dict[str, list[object]] = {
        name: [*entry[0], *entry[1:]] for name, entry in _read(folder)[3].items()
    }
    return entries


def _two_terms(make_terms):  # type: ignore[no-untyped-def]
    return make_terms(
        {
            "alpha": term_text("Alpha", related=["beta"], aliases="[A1, {name: alfa, lang: nl}]"),
            "beta": term_text("Beta", related=["alpha"], difficulty="advanced"),
        }
    )


def _same(a: object, b: object) -> bool:
    """Two glossaries hold equal terms, down to the path each term was read from."""
    left, right = list(a), list(b)  # type: ignore[call-overload]
    return left == right and [t.path for t in left] == [t.path for t in right]


def test_a_warm_load_gives_what_a_cold_load_gives(make_terms):
    folder = _two_terms(make_terms)
    cold = load_glossary(folder, cache=False)
    assert not _cache_file(folder).exists()  # cache=False neither reads nor writes one
    first = load_glossary(folder)
    assert _cache_file(folder).exists()
    warm = load_glossary(folder)
    assert _same(cold, first) and _same(cold, warm)
    assert warm.lookup("ALFA") is warm["alpha"]
    assert "<p>" in warm["alpha"].section("how it works").html
    assert set(_entries(folder)) == {"alpha.md", "beta.md"}


def test_the_starter_terms_decode_to_equal_terms(tmp_path):
    folder = tmp_path / "terms"
    folder.mkdir()
    for source in STARTER_TERMS.glob("*.md"):
        (folder / source.name).write_bytes(source.read_bytes())
    cold = load_glossary(folder, cache=False)
    load_glossary(folder)
    assert _same(cold, load_glossary(folder))


def test_a_warm_load_imports_no_parser(make_terms):
    # Proof that nothing was parsed: a fresh interpreter served from the cache never loads
    # pydantic, PyYAML or markdown-it, which parsing one file needs.
    folder = _two_terms(make_terms)
    load_glossary(folder)
    code = (
        "import sys\n"
        "from digest.store.terms import load_glossary\n"
        f"assert len(load_glossary({str(folder)!r})) == 2\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'yaml', 'markdown_it')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    assert out.stdout.strip() == "[]"


def test_a_settled_file_is_not_even_opened(make_terms, monkeypatch):
    folder = _two_terms(make_terms)
    # As if the files were written long before: their stamps are beyond the racy window.
    monkeypatch.setattr(term_cache, "_RACY_NS", -(10**15))
    load_glossary(folder)
    assert all(entry[4] for entry in _entries(folder).values())
    opened: list[Path] = []
    real = terms._term_bytes
    monkeypatch.setattr(terms, "_term_bytes", lambda path: opened.append(path) or real(path))
    assert len(load_glossary(folder)) == 2
    assert opened == []


def test_a_file_just_written_is_hashed_until_it_settles(make_terms):
    # Written a moment ago, its stamp could repeat after a same-size edit within the
    # timestamp's resolution: the entry is marked unsettled, so its content is checked.
    folder = _two_terms(make_terms)
    load_glossary(folder)
    assert not any(entry[4] for entry in _entries(folder).values())


def test_an_edit_of_the_same_size_right_after_a_load_is_seen(make_terms):
    folder = _two_terms(make_terms)
    load_glossary(folder)
    path = folder / "beta.md"
    before = os.stat(path)
    text = path.read_text().replace("title: Beta", "title: Bxta")
    path.write_text(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # even the mtime put back
    assert load_glossary(folder)["beta"].title == "Bxta"


def test_a_touched_file_keeps_its_parse_and_a_changed_one_is_parsed_again(make_terms):
    folder = _two_terms(make_terms)
    load_glossary(folder)
    os.utime(folder / "alpha.md", ns=(10**18, 10**18))
    (folder / "beta.md").write_text(term_text("Beta Two", related=["alpha"]))
    glossary = load_glossary(folder)
    assert glossary["beta"].title == "Beta Two"
    assert _entries(folder)["alpha.md"][1] == 10**18  # restamped, not dropped


def test_a_file_with_an_error_is_never_cached_and_always_reported(make_terms):
    folder = _two_terms(make_terms)
    (folder / "gamma.md").write_text(term_text("Gamma", difficulty="expert"))
    cold = read_glossary(folder, cache=False)[1]
    first = read_glossary(folder)[1]
    second = read_glossary(folder)[1]
    assert [str(e) for e in first] == [str(e) for e in second] == [str(e) for e in cold]
    assert any("difficulty" in str(e) for e in cold)
    assert "gamma.md" not in _entries(folder)


def test_a_cached_file_made_invalid_is_reported_and_dropped(make_terms):
    folder = _two_terms(make_terms)
    load_glossary(folder)
    (folder / "alpha.md").write_text(term_text("Alpha", related=["beta"], added="2026-W99"))
    errors = read_glossary(folder)[1]
    assert [str(e) for e in errors] == [str(e) for e in read_glossary(folder, cache=False)[1]]
    assert errors and all(e.path == folder / "alpha.md" for e in errors)
    assert set(_entries(folder)) == {"beta.md"}


def test_folder_rules_run_over_cached_terms(make_terms):
    folder = _two_terms(make_terms)
    load_glossary(folder)
    # alpha.md is unchanged and comes from the cache; its link to beta now leads nowhere,
    # and a new file claims its alias.
    (folder / "beta.md").unlink()
    (folder / "gamma.md").write_text(term_text("Gamma", aliases="[alfa]"))
    warm = read_glossary(folder)[1]
    cold = read_glossary(folder, cache=False)[1]
    assert [str(e) for e in warm] == [str(e) for e in cold]
    shown = "\n".join(map(str, warm))
    assert "unknown term 'beta'" in shown
    assert f"{folder / 'alpha.md'}:" in shown  # with its line, from the cached entry
    assert "already used by term 'alpha'" in shown
    assert set(_entries(folder)) == {"alpha.md", "gamma.md"}


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x80\x00not json at all",
        b'{"format": 1, "version": "x", "directory": "/", "entries": {}',  # truncated
        b"[1, 2, 3]",
        b'{"format": 999, "entries": {}}',
    ],
    ids=["empty", "garbage", "truncated", "a-list", "another-format"],
)
def test_a_corrupt_or_foreign_cache_is_ignored_and_rewritten(make_terms, content):
    folder = _two_terms(make_terms)
    cold = load_glossary(folder, cache=False)
    file = _cache_file(folder)
    file.parent.mkdir(exist_ok=True)
    file.write_bytes(content)
    assert _same(cold, load_glossary(folder))
    assert set(_entries(folder)) == {"alpha.md", "beta.md"}


def test_a_cache_of_other_code_or_another_shape_is_not_trusted(make_terms):
    folder = _two_terms(make_terms)
    load_glossary(folder)
    data = _read(folder)
    # A lie the old code would have believed: only a matching code version is trusted.
    stamp, settled, digest, record = data[3]["alpha.md"]
    data[3]["alpha.md"] = (stamp, settled, digest, ("Not What The File Says", *record[1:]))
    data[1] = "0" * 64
    _write(folder, data)
    assert load_glossary(folder)["alpha"].title == "Alpha"
    data = _read(folder)
    data[3]["alpha.md"] = {"not": "a tuple"}
    _write(folder, data)
    assert load_glossary(folder)["alpha"].title == "Alpha"
    data = _read(folder)
    stamp, settled, digest, record = data[3]["alpha.md"]
    # The right header, an entry that does not decode.
    data[3]["alpha.md"] = (stamp, settled, digest, (1, 2))
    _write(folder, data)
    assert load_glossary(folder)["alpha"].title == "Alpha"
    assert len(_entries(folder)["alpha.md"][6]) > 2  # rewritten whole
    # A file changed after it was written (one byte of a term's text): its checksum no longer
    # matches, so nothing of it is unmarshalled, and it is rewritten.
    raw = bytearray(_cache_file(folder).read_bytes())
    raw[raw.index(b"Alpha")] = ord("X")
    _cache_file(folder).write_bytes(bytes(raw))
    assert load_glossary(folder)["alpha"].title == "Alpha"
    assert _read(folder)[3]["alpha.md"][3][0] == "Alpha"


def test_a_decoded_term_is_built_as_its_init_would_build_it():
    # The cache fills Term and Section in directly: only safe while their __init__ does
    # nothing but assign the fields.
    from digest.model.glossary import Section, Term

    for cls in (Term, Section):
        assert not hasattr(cls, "__post_init__")
        assert cls.__init__.__qualname__ == f"{cls.__name__}.__init__"
        assert "__setattr__" in vars(cls)  # frozen: the dataclass's own guard


def test_an_unwritable_project_still_loads(make_terms, caplog):
    folder = _two_terms(make_terms)
    # A file where the cache folder would go: mkdir fails even for root, unlike a chmod.
    (folder.parent / CACHE_DIR_NAME).write_text("in the way")
    with caplog.at_level(logging.DEBUG, logger="digest.store.term_cache"):
        assert len(load_glossary(folder)) == 2
        assert len(load_glossary(folder)) == 2
    assert "not written" in caplog.text
    assert (folder.parent / CACHE_DIR_NAME).read_text() == "in the way"


def test_the_cache_folder_ignores_itself_and_leaves_no_temporary_file(make_terms):
    folder = _two_terms(make_terms)
    load_glossary(folder)
    (folder / "beta.md").write_text(term_text("Beta Two", related=["alpha"]))
    load_glossary(folder)
    cache_dir = folder.parent / CACHE_DIR_NAME
    assert (cache_dir / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (cache_dir / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172")
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(
        [".gitignore", "CACHEDIR.TAG", _cache_file(folder).name]
    )


def test_processes_loading_at_once_never_tear_the_cache(make_terms):
    folder = make_terms(
        {f"term-{i}": term_text(f"Term {i}", related=[f"term-{(i + 1) % 40}"]) for i in range(40)}
    )
    code = (
        "import sys\n"
        "from digest.store.terms import load_glossary\n"
        "for _ in range(5):\n"
        "    assert len(load_glossary(sys.argv[1])) == 40\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(folder)], env=env) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    assert len(_entries(folder)) == 40
    assert len(load_glossary(folder)) == 40


def test_the_code_version_covers_every_module_that_parses_a_term():
    # A module added to the parse and missing here would let a cache outlive a rule change.
    code = (
        "import sys\n"
        "import digest.core.term_rules, digest.store.terms\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('digest.'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    ).stdout.split()
    packages = {"digest.core", "digest.model", "digest.store"}
    loaded = {m.removeprefix("digest.").replace(".", "/") + ".py" for m in out} - {
        p.removeprefix("digest.") + ".py" for p in packages
    }
    assert loaded == set(term_cache._PARSING_SOURCES)
    assert term_cache.code_version() is not None


def test_digest_init_and_the_repository_ignore_the_cache_folder():
    from digest.scaffold import GITIGNORE

    assert f"{CACHE_DIR_NAME}/" in GITIGNORE.splitlines()
    assert f"{CACHE_DIR_NAME}/" in (REPO / ".gitignore").read_text().splitlines()
